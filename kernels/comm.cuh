/*
 * comm.cuh: data-parallel training across GPUs: one process per GPU, started by mpirun,
 * each with a full copy of the LoRA parameters; after every backward pass the ranks
 * average their gradients, so every rank takes the same optimizer step.
 *
 *   MPI_Init(&argc, &argv);      (the driver, first)
 *   Comm c; comm_init(&c);       rank and size from MPI_COMM_WORLD; the GPU is the rank's
 *                                index among the ranks of its node (modulo the GPUs there);
 *                                rank 0 makes the NCCL unique id and MPI_Bcast gives it to
 *                                the others (as llm.c does); then ncclCommInitRank
 *   comm_all_reduce_mean(&c, grads, n, stream)
 *                                grads <- the mean over the ranks of grads: one in-place
 *                                ncclAllReduce with ncclAvg of a contiguous fp32 buffer (the
 *                                LoRA gradients are one allocation), queued on stream
 *   comm_free(&c);  MPI_Finalize();
 *
 * The mean is NCCL's: for fp32 each rank's gradient times fp32(1/nranks), summed, and the
 * same bits on every rank. Every NCCL and MPI call is checked; a failure names the call,
 * the file and the line, and exits with status 2 (DESIGN.md §5, §8).
 *
 * The same source builds with nvcc against NCCL and under the CUDA-on-CPU harness against
 * its MPI stand-in (test/cuda_host/nccl.h), which is how test_cuda_allreduce runs it on 2
 * CPU processes.
 */
#ifndef PERSONA_COMM_CUH
#define PERSONA_COMM_CUH

#include <mpi.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.cuh"

static inline void nccl_check_at(ncclResult_t r, const char *call, const char *file, int line) {
    if (r != ncclSuccess) check_failed(call, file, line, ncclGetErrorString(r), NULL);
}
#define nccl_check(call) nccl_check_at((call), #call, __FILE__, __LINE__)

static inline void mpi_check_at(int e, const char *call, const char *file, int line) {
    if (e == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(e, msg, &len);
    check_failed(call, file, line, msg, NULL);
}
#define mpi_check(call) mpi_check_at((call), #call, __FILE__, __LINE__)

typedef struct {
    int rank, nranks;  // in MPI_COMM_WORLD, the same in the NCCL communicator
    int device;        // the CUDA device this rank uses
    ncclComm_t nccl;
} Comm;

// MPI must be initialised. Selects the rank's GPU and makes the NCCL communicator of all ranks.
static inline void comm_init(Comm *c) {
    mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &c->rank));
    mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &c->nranks));
    // the rank's index among the ranks sharing its node picks the GPU
    MPI_Comm node;
    int local_rank = 0, devices = 0;
    mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node));
    mpi_check(MPI_Comm_rank(node, &local_rank));
    mpi_check(MPI_Comm_free(&node));
    cuda_check(cudaGetDeviceCount(&devices));
    c->device = local_rank % devices;
    cuda_check(cudaSetDevice(c->device));
    ncclUniqueId id;
    if (c->rank == 0) nccl_check(ncclGetUniqueId(&id));
    mpi_check(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD));
    nccl_check(ncclCommInitRank(&c->nccl, c->nranks, id, c->rank));
}

// grads (n fp32 values on the device) <- their mean over all ranks, queued on stream.
static inline void comm_all_reduce_mean(Comm *c, float *grads, size_t n, cudaStream_t stream) {
    nccl_check(ncclAllReduce(grads, grads, n, ncclFloat32, ncclAvg, c->nccl, stream));
}

static inline void comm_free(Comm *c) { nccl_check(ncclCommDestroy(c->nccl)); }

#endif
