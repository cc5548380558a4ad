// nccl_mpi.cpp: the NCCL subset of nccl.h over MPI, for harness programs run with mpirun
// (semantics in nccl.h). Built only where MPI is installed (the Makefile's MPI block), so it
// is not among the harness objects every test links.
#include "nccl.h"

#include <mpi.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <functional>
#include <vector>

#include "race.h"
#include "runtime.h"
#include "streams.h"

struct ncclComm {
    MPI_Comm mpi;  // a duplicate of MPI_COMM_WORLD, so our messages never meet the program's
    int rank, nranks;
};

static int group_depth = 0;
static const char kIdMagic[8] = {'n', 'c', 'c', 'l', '-', 'm', 'p', 'i'};

static ncclResult_t refuse(ncclResult_t r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static ncclResult_t refuse(ncclResult_t r, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "nccl (MPI stand-in): %s\n", msg);  // one write, so ranks' lines do not mix
    return r;
}

const char *ncclGetErrorString(ncclResult_t result) {
    switch (result) {
        case ncclSuccess: return "no error";
        case ncclUnhandledCudaError: return "unhandled cuda error";
        case ncclSystemError: return "unhandled system error";
        case ncclInternalError: return "internal error";
        case ncclInvalidArgument: return "invalid argument";
        case ncclInvalidUsage: return "invalid usage";
        case ncclRemoteError: return "remote process exited or there was a network error";
        case ncclInProgress: return "NCCL operation in progress";
        case ncclNumResults: break;
    }
    return "unknown result code";
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    if (!id) return refuse(ncclInvalidArgument, "ncclGetUniqueId: null id");
    // unique per call: the magic, then this process's id, a clock reading and a counter
    static uint64_t counter = 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    uint64_t fields[4] = {(uint64_t)getpid(), (uint64_t)now.tv_sec, (uint64_t)now.tv_nsec, ++counter};
    memset(id->internal, 0, sizeof(id->internal));
    memcpy(id->internal, kIdMagic, sizeof(kIdMagic));
    memcpy(id->internal + sizeof(kIdMagic), fields, sizeof(fields));
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    int initialized = 0, world_size = 0, world_rank = 0;
    MPI_Initialized(&initialized);
    if (!initialized) return refuse(ncclInvalidUsage, "ncclCommInitRank: MPI_Init has not been called");
    if (!comm) return refuse(ncclInvalidArgument, "ncclCommInitRank: null communicator");
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    if (nranks != world_size || rank != world_rank)
        return refuse(ncclInvalidArgument,
                      "ncclCommInitRank: rank %d of %d, but this process is rank %d of MPI_COMM_WORLD's %d", rank,
                      nranks, world_rank, world_size);
    // every rank must hold the same id (rank 0's); all ranks learn whether any differs
    ncclUniqueId root_id = id;
    MPI_Bcast(root_id.internal, NCCL_UNIQUE_ID_BYTES, MPI_BYTE, 0, MPI_COMM_WORLD);
    int mine_bad = memcmp(id.internal, kIdMagic, sizeof(kIdMagic)) != 0 ||
                   memcmp(id.internal, root_id.internal, NCCL_UNIQUE_ID_BYTES) != 0;
    int any_bad = 0;
    MPI_Allreduce(&mine_bad, &any_bad, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    if (any_bad)
        return refuse(ncclInvalidUsage,
                      "ncclCommInitRank: the ranks were given different unique ids (or none from ncclGetUniqueId)%s",
                      mine_bad ? ", this rank among them" : "");
    ncclComm *c = new ncclComm;
    MPI_Comm_dup(MPI_COMM_WORLD, &c->mpi);
    c->rank = rank, c->nranks = nranks;
    *comm = c;
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (!comm) return refuse(ncclInvalidArgument, "ncclCommDestroy: null communicator");
    MPI_Comm_free(&comm->mpi);
    delete comm;
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
    if (!comm) return refuse(ncclInvalidArgument, "ncclCommAbort: null communicator");
    delete comm;  // its MPI duplicate is left to the process's end: freeing it would wait for the others
    return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *asyncError) {
    if (!comm || !asyncError) return refuse(ncclInvalidArgument, "ncclCommGetAsyncError: null argument");
    *asyncError = ncclSuccess;
    return ncclSuccess;
}

ncclResult_t ncclGroupStart(void) {
    group_depth++;
    return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void) {
    if (group_depth == 0) return refuse(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
    group_depth--;
    return ncclSuccess;
}

static size_t type_size(ncclDataType_t t) { return t == ncclFloat32 ? 4 : t == ncclBfloat16 ? 2 : 0; }

// The checks every collective makes before it communicates (each rank makes them on its
// own arguments; a program that passes bad ones on one rank only would hang real NCCL).
static ncclResult_t check_call(const char *call, const void *send, const void *recv, size_t count,
                               ncclDataType_t type, ncclComm_t comm, cudaStream_t stream, bool need_send) {
    if (!comm) return refuse(ncclInvalidArgument, "%s: null communicator", call);
    size_t size = type_size(type);
    if (!size)
        return refuse(ncclInvalidArgument, "%s: data type %d is not stood in (ncclFloat32, ncclBfloat16 are)", call,
                      (int)type);
    if (!cuda_host::valid_stream(stream)) return refuse(ncclInvalidArgument, "%s: unknown stream", call);
    if (cuda_host::sticky_error()) return refuse(ncclUnhandledCudaError, "%s: the device has faulted", call);
    if (count == 0) return ncclSuccess;
    if (need_send && !cuda_host_is_device(send, count * size))
        return refuse(ncclInvalidArgument, "%s: sendbuff %p is not %zu bytes of device memory", call, send, count * size);
    if (!cuda_host_is_device(recv, count * size))
        return refuse(ncclInvalidArgument, "%s: recvbuff %p is not %zu bytes of device memory", call, recv, count * size);
    return ncclSuccess;
}

// Queues a collective on the stream and runs it at once, after what it depends on (the
// other ranks meet it in MPI; see streams.h), recording that it reads send (if not null)
// and writes recv.
static void run_collective(cudaStream_t stream, const char *what, uintptr_t caller, const void *send, void *recv,
                           size_t bytes, std::function<void()> body) {
    uint64_t id = cuda_host::enqueue(stream, what, caller, [=]() {
        uint32_t site = cuda_host::site_of_pc(caller);
        if (send) cuda_host::race_access(send, bytes, cuda_host::ACCESS_READ, site);
        cuda_host::race_access(recv, bytes, cuda_host::ACCESS_WRITE, site);
        body();
    });
    cuda_host::run_now(id);
}

// Element i of the gathered buffers, as a float, and the store rounded to the type.
static float load(const void *buf, ncclDataType_t type, size_t i) {
    return type == ncclFloat32 ? ((const float *)buf)[i] : __bfloat162float(((const __nv_bfloat16 *)buf)[i]);
}
static float round_to(ncclDataType_t type, float x) {
    return type == ncclFloat32 ? x : __bfloat162float(__float2bfloat16(x));
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
    ncclResult_t r = check_call("ncclAllReduce", send, recv, count, type, comm, stream, true);
    if (r != ncclSuccess) return r;
    if (op != ncclSum && op != ncclAvg)
        return refuse(ncclInvalidArgument, "ncclAllReduce: operation %d is not stood in (ncclSum, ncclAvg are)",
                      (int)op);
    if (count == 0) return ncclSuccess;
    size_t size = type_size(type), bytes = count * size;
    if (bytes > (size_t)INT32_MAX)  // MPI counts are ints
        return refuse(ncclInvalidArgument, "ncclAllReduce: %zu bytes is more than the stand-in moves at once", bytes);
    // every rank gets every rank's buffer, then reduces them in rank order
    float scale = op == ncclAvg ? round_to(type, 1.0f / (float)comm->nranks) : 1.0f;
    run_collective(stream, "ncclAllReduce", (uintptr_t)__builtin_return_address(0), send, recv, bytes, [=]() {
        std::vector<unsigned char> all(bytes * (size_t)comm->nranks);
        MPI_Allgather(send, (int)bytes, MPI_BYTE, all.data(), (int)bytes, MPI_BYTE, comm->mpi);
        for (size_t i = 0; i < count; i++) {
            float acc = 0.0f;
            for (int k = 0; k < comm->nranks; k++) {
                float x = load(all.data() + bytes * (size_t)k, type, i);
                if (op == ncclAvg) x = round_to(type, x * scale);
                acc = k == 0 ? x : round_to(type, acc + x);
            }
            if (type == ncclFloat32) ((float *)recv)[i] = acc;
            else ((__nv_bfloat16 *)recv)[i] = __float2bfloat16(acc);
        }
    });
    return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t type, int root, ncclComm_t comm,
                           cudaStream_t stream) {
    // only the root's sendbuff is read
    ncclResult_t r = check_call("ncclBroadcast", send, recv, count, type, comm, stream, comm && comm->rank == root);
    if (r != ncclSuccess) return r;
    if (root < 0 || root >= comm->nranks)
        return refuse(ncclInvalidArgument, "ncclBroadcast: root %d of %d ranks", root, comm->nranks);
    if (count == 0) return ncclSuccess;
    size_t bytes = count * type_size(type);
    if (bytes > (size_t)INT32_MAX)
        return refuse(ncclInvalidArgument, "ncclBroadcast: %zu bytes is more than the stand-in moves at once", bytes);
    bool from_send = comm->rank == root && send != recv;
    run_collective(stream, "ncclBroadcast", (uintptr_t)__builtin_return_address(0), from_send ? send : nullptr, recv,
                   bytes, [=]() {
                       if (from_send) memmove(recv, send, bytes);
                       MPI_Bcast(recv, (int)bytes, MPI_BYTE, root, comm->mpi);
                   });
    return ncclSuccess;
}
