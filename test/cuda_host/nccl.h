/*
 * nccl.h (CUDA-on-CPU harness): the subset of NCCL that persona.c's data-parallel training
 * uses (kernels/comm.cuh), stood in by MPI (nccl_mpi.cpp), so that `mpirun -np 2` runs the
 * multi-GPU path on a CPU. A program built with -Itest/cuda_host gets this file instead of
 * NCCL's; names, types, values and signatures are NCCL 2.28's, so the same source compiles
 * against either.
 *
 * Semantics, as NCCL's documentation states them, with every rank a process of
 * MPI_COMM_WORLD (MPI_Init first):
 *   - ncclGetUniqueId: a fresh id; one rank makes it and the others receive it (the engine
 *     broadcasts rank 0's with MPI_Bcast). ncclCommInitRank(comm, nranks, id, rank) is
 *     collective: nranks must be the world's size and rank this process's world rank, and
 *     every rank must pass the same id (if not: ncclInvalidUsage on every rank, where real
 *     NCCL would hang).
 *   - ncclAllReduce: every rank's recvbuff gets the element-wise reduction of all ranks'
 *     sendbuff (in place when they are equal); ncclSum, or ncclAvg, which for floating
 *     types NCCL computes as a sum of the inputs each multiplied by 1/nranks (rounded to
 *     the type). Sums are in rank order, rounded to the type after every addition (bf16
 *     too, as a ring rounds at every hop), so every rank gets the same bits; with two
 *     ranks this is exactly NCCL's result, with more NCCL's order may differ.
 *   - ncclBroadcast: root's sendbuff into every rank's recvbuff.
 *   - ncclGroupStart / ncclGroupEnd: calls between them run at once (every rank issues
 *     the same sequence, so that is equivalent); End without Start is ncclInvalidUsage.
 *   - ncclCommGetAsyncError: always ncclSuccess (a collective is complete when its call
 *     returns, and a rank that dies ends the job through MPI); ncclCommAbort: frees this
 *     rank's communicator without waiting for the others (MPI_Comm_free would be collective).
 *   - count 0 is allowed and touches nothing. Buffers must be device memory (cudaMalloc
 *     of the harness) and the stream 0 or a live stream, else ncclInvalidArgument; data
 *     types other than ncclFloat32 and ncclBfloat16, and operations other than ncclSum and
 *     ncclAvg, are ncclInvalidArgument too. Every refusal also prints one line on stderr
 *     naming the call.
 * A collective is a stream operation (streams.h): it waits for what its stream's earlier
 * work and events order before it, and the race detector sees it read sendbuff and write
 * recvbuff. Unlike the harness's other operations it runs at the call, so it is complete
 * when the call returns (another rank's host-side MPI call could otherwise deadlock with a
 * collective this rank had not run yet); the host is not ordered after it by that, though,
 * so work on another stream still needs an event to see its result.
 */
#ifndef CUDA_HOST_NCCL_H
#define CUDA_HOST_NCCL_H

#include <stddef.h>

#include "cuda_runtime.h"

#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
    char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;
typedef struct ncclComm *ncclComm_t;

typedef enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
    ncclInProgress = 7,
    ncclNumResults = 8
} ncclResult_t;
typedef enum { ncclSum = 0, ncclAvg = 4 } ncclRedOp_t;
typedef enum { ncclFloat32 = 7, ncclBfloat16 = 9 } ncclDataType_t;

ncclResult_t ncclGetUniqueId(ncclUniqueId *uniqueId);
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm);
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *asyncError);
ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclGroupStart(void);
ncclResult_t ncclGroupEnd(void);
const char *ncclGetErrorString(ncclResult_t result);

#endif
