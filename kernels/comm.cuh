/*
 * comm.cuh: data-parallel training across GPUs, llm.c's way: one process per GPU, started by
 * mpirun on one node or several, each with the whole frozen model and its own copy of the
 * LoRA state. Every rank trains on its own part of the data; the ranks sum their LoRA
 * gradients with NCCL, so every rank holds the same gradients and takes the same optimizer
 * step.
 *
 *   Comm c; comm_init(&c, timeout_s);
 *                        before any other CUDA call. Whether an MPI launcher started this
 *                        process is read from its environment (OMPI_COMM_WORLD_SIZE: Open
 *                        MPI; PMI_SIZE: MPICH, Intel MPI, Slurm's srun; PMIX_RANK: PMIx).
 *                        If so: MPI_Init, rank and size from MPI_COMM_WORLD, the GPU is the
 *                        rank's index among the ranks of its node modulo the node's GPUs
 *                        (cudaSetDevice), and with several ranks the NCCL communicator, from
 *                        a unique id that rank 0 makes and MPI_Bcast gives the others. A
 *                        plain launch is rank 0 of 1 and never touches MPI.
 *   comm_all_reduce_sum(&c, x, n, stream)
 *                        x (n fp32 on the device) <- its sum over the ranks: one in-place
 *                        ncclAllReduce, queued on stream. NCCL computes each element's sum
 *                        once and copies it to every rank (a ring reduce-scatters, then
 *                        all-gathers; a tree reduces, then broadcasts), so every rank gets
 *                        the same bits.
 *   comm_wait(&c, stream)
 *                        cudaStreamSynchronize that cannot hang on a lost rank (Faults).
 *   comm_sum, comm_max, comm_broadcast, comm_gather
 *                        host values between the ranks, over MPI: double sums and int
 *                        maxima on every rank; rank 0's bytes to every rank; every rank's
 *                        bytes, in rank order, to rank 0. Each waits for the others no
 *                        longer than the timeout (Faults).
 *   comm_free(&c);       the communicator, then MPI_Finalize when comm_init called MPI_Init.
 * With one rank each call is a no-op (or a copy), so one GPU runs as if this file were not
 * there.
 *
 * Faults. A rank that dies (killed, out of device memory, any CUDA or NCCL error: every
 * check exits with status 2) is noticed by the launcher: Open MPI's mpirun kills the other
 * ranks within about a second and names the rank ("mpirun noticed that process rank 1 ...
 * exited on signal 9"). A rank that hangs instead (a GPU that stops answering, a network
 * that drops) would leave the others waiting in a collective for ever, so with several ranks
 * comm_wait polls the stream instead of blocking in cudaStreamSynchronize, and with it
 * NCCL's asynchronous error (ncclCommGetAsyncError: the network transports report a peer
 * that went away) and a timeout (the wait's length; train_gpu's --comm-timeout). Either ends
 * the communicator (ncclCommAbort, which releases the kernels waiting in it) and the process,
 * with status 2 and a line naming this rank; mpirun then stops the others. The host
 * collectives (a few numbers a step, where the ranks agree) are MPI's nonblocking ones,
 * polled under the same timeout: a rank that stops answering without dying (stopped, stuck
 * in a file system) makes the others give up there, and MPI_Abort ends the whole job. The
 * timeout also bounds the legitimate waits at those meetings, rank 0 writing a checkpoint
 * or answering the probe prompts while the others wait, so it is minutes, not seconds.
 *
 * Built two ways. With USE_MPI (the Makefile defines it where Open MPI and NCCL are found):
 * as above. Without: a single-GPU program, and comm_init refuses a launch of several ranks.
 * The MPI build also compiles under the CUDA-on-CPU harness against its MPI stand-in for
 * NCCL (test/cuda_host/nccl.h), which is how the tests run several ranks on a CPU.
 */
#ifndef PERSONA_COMM_CUH
#define PERSONA_COMM_CUH

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef USE_MPI
#include <mpi.h>
#include <nccl.h>
#endif

#include "common.cuh"

typedef struct {
    int rank, nranks;  // this process among all (0 and 1 for a single process)
    int device;        // the CUDA device it uses
    int node_ranks;    // ranks on this node
    double timeout_s;  // the longest wait for the device or the other ranks
    int owns_mpi;      // comm_init called MPI_Init (comm_free finalizes)
#ifdef USE_MPI
    ncclComm_t nccl;   // NULL with one rank
#endif
} Comm;

// The number of ranks an MPI launcher says it started (its environment), or 0 for a plain
// launch; -1: launched, the number not said (PMIx alone).
static inline int comm_launched_ranks(void) {
    const char *size = getenv("OMPI_COMM_WORLD_SIZE");
    if (!size) size = getenv("PMI_SIZE");
    if (size) return atoi(size);
    return getenv("PMIX_RANK") ? -1 : 0;
}

static inline double comm_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#ifdef USE_MPI
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

// Waits for a nonblocking host collective no longer than the timeout; past it, ends the job.
static inline void comm_complete(Comm *c, MPI_Request *req, const char *what) {
    double start = comm_seconds();
    for (;;) {
        int done = 0;
        mpi_check(MPI_Test(req, &done, MPI_STATUS_IGNORE));
        if (done) return;
        double waited = comm_seconds() - start;
        if (waited > c->timeout_s) {
            fprintf(stderr, "error: rank %d: %s: the other ranks did not answer for %.0f s (--comm-timeout): a rank is "
                            "lost or stuck; stopping the job\n",
                    c->rank, what, waited);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        struct timespec pause = {0, 200000};  // 0.2 ms
        nanosleep(&pause, NULL);
    }
}
#endif

static inline void comm_init(Comm *c, double timeout_s) {
    memset(c, 0, sizeof(*c));
    c->nranks = c->node_ranks = 1;
    c->timeout_s = timeout_s;
    int launched = comm_launched_ranks();
#ifdef USE_MPI
    if (launched == 0) return;  // a plain launch: one rank, device 0, no MPI
    int initialized = 0;
    mpi_check(MPI_Initialized(&initialized));
    if (!initialized) mpi_check(MPI_Init(NULL, NULL)), c->owns_mpi = 1;
    mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &c->rank));
    mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &c->nranks));
    // the rank's index among the ranks sharing its node picks the GPU
    MPI_Comm node;
    int local_rank = 0, devices = 0;
    mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node));
    mpi_check(MPI_Comm_rank(node, &local_rank));
    mpi_check(MPI_Comm_size(node, &c->node_ranks));
    mpi_check(MPI_Comm_free(&node));
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        (void)cudaGetLastError();  // no GPU: the program says so (and the ranks agree to stop)
        return;
    }
    c->device = local_rank % devices;
    cuda_check(cudaSetDevice(c->device));
    if (c->nranks == 1) return;
    ncclUniqueId id;
    if (c->rank == 0) nccl_check(ncclGetUniqueId(&id));
    mpi_check(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD));
    ncclResult_t r = ncclCommInitRank(&c->nccl, c->nranks, id, c->rank);
    if (r != ncclSuccess) {
        fprintf(stderr, "error: rank %d: ncclCommInitRank: %s%s\n", c->rank, ncclGetErrorString(r),
                c->node_ranks > devices ? " (more ranks on this node than GPUs: start one rank per GPU)" : "");
        exit(2);
    }
#else
    if (launched != 0 && launched != 1) {
        fprintf(stderr, "error: started as one of several ranks by an MPI launcher, but this program was built without "
                        "MPI and NCCL (make found no mpicxx or nccl.h) and runs on one GPU: install Open MPI and NCCL "
                        "and rebuild it for mpirun\n");
        exit(1);
    }
#endif
}

// x (n fp32 values on the device) <- their sum over the ranks, queued on stream.
static inline void comm_all_reduce_sum(Comm *c, float *x, size_t n, cudaStream_t stream) {
#ifdef USE_MPI
    if (c->nranks > 1) nccl_check(ncclAllReduce(x, x, n, ncclFloat32, ncclSum, c->nccl, stream));
#else
    (void)c, (void)x, (void)n, (void)stream;
#endif
}

// Waits until stream has done its work. With several ranks: never for ever (see Faults).
static inline void comm_wait(Comm *c, cudaStream_t stream) {
#ifdef USE_MPI
    if (c->nranks > 1) {
        double start = comm_seconds();
        for (;;) {
            cudaError_t e = cudaStreamQuery(stream);
            if (e == cudaSuccess) return;
            if (e != cudaErrorNotReady) cuda_check(e);
            ncclResult_t async = ncclSuccess;
            nccl_check(ncclCommGetAsyncError(c->nccl, &async));
            double waited = comm_seconds() - start;
            if (async != ncclSuccess || waited > c->timeout_s) {
                if (async != ncclSuccess)
                    fprintf(stderr, "error: rank %d: NCCL: %s: another rank is lost; stopping\n", c->rank,
                            ncclGetErrorString(async));
                else
                    fprintf(stderr, "error: rank %d: the device made no progress for %.0f s (--comm-timeout): a rank is "
                                    "lost or stuck; stopping\n",
                            c->rank, waited);
                ncclCommAbort(c->nccl);
                exit(2);
            }
            struct timespec pause = {0, 50000};  // 50 us: a step takes far longer
            nanosleep(&pause, NULL);
        }
    }
#else
    (void)c;
#endif
    cuda_check(cudaStreamSynchronize(stream));
}

#ifdef USE_MPI
// x[0..n) of type <- op over the ranks, on every rank (what: the caller, for a timeout's line).
static inline void comm_host_reduce(Comm *c, void *x, int n, MPI_Datatype type, MPI_Op op, const char *what) {
    if (c->nranks == 1) return;
    MPI_Request req;
    mpi_check(MPI_Iallreduce(MPI_IN_PLACE, x, n, type, op, MPI_COMM_WORLD, &req));
    comm_complete(c, &req, what);
}
#endif

// x[0..n) <- their sums over the ranks, on every rank.
static inline void comm_sum(Comm *c, double *x, int n) {
#ifdef USE_MPI
    comm_host_reduce(c, x, n, MPI_DOUBLE, MPI_SUM, "comm_sum");
#else
    (void)c, (void)x, (void)n;
#endif
}

// x[0..n) <- their maxima over the ranks, on every rank.
static inline void comm_max(Comm *c, int *x, int n) {
#ifdef USE_MPI
    comm_host_reduce(c, x, n, MPI_INT, MPI_MAX, "comm_max");
#else
    (void)c, (void)x, (void)n;
#endif
}

// Rank 0's bytes [buf, buf + n) into the same place on every rank.
static inline void comm_broadcast(Comm *c, void *buf, size_t n) {
#ifdef USE_MPI
    const size_t piece = (size_t)1 << 30;  // MPI counts are ints
    for (size_t at = 0; c->nranks > 1 && at < n; at += piece) {
        MPI_Request req;
        mpi_check(MPI_Ibcast((char *)buf + at, (int)(n - at < piece ? n - at : piece), MPI_BYTE, 0, MPI_COMM_WORLD, &req));
        comm_complete(c, &req, "comm_broadcast");
    }
#else
    (void)c, (void)buf, (void)n;
#endif
}

// Every rank's n bytes at mine into rank 0's all [nranks * n], in rank order (all is only
// written on rank 0).
static inline void comm_gather(Comm *c, const void *mine, void *all, size_t n) {
    if (c->rank == 0) memcpy(all, mine, n);
#ifdef USE_MPI
    if (c->nranks == 1) return;
    MPI_Request req;
    mpi_check(MPI_Igather(c->rank == 0 ? MPI_IN_PLACE : mine, (int)n, MPI_BYTE, all, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD,
                          &req));
    comm_complete(c, &req, "comm_gather");
#endif
}

static inline void comm_free(Comm *c) {
#ifdef USE_MPI
    if (c->nccl) nccl_check(ncclCommDestroy(c->nccl));
    if (c->owns_mpi) mpi_check(MPI_Finalize());
#endif
    memset(c, 0, sizeof(*c));
}

#endif
