// test_cuda_allreduce.cpp: the data-parallel collectives on 2 ranks: kernels/comm.cuh and
// the NCCL calls it stands on, run as `mpirun -np 2` (test/test_nccl_mpi.sh).
//
// Built two ways from this one source: under the CUDA-on-CPU harness against the MPI
// stand-in for NCCL (test/cuda_host/nccl.h; what `make test` runs), and by nvcc against the
// real NCCL (build/gpu/test_cuda_allreduce, for a machine with 2 GPUs; test_cuda_build.sh
// checks that it builds).
//
// Each rank fills its buffers with its own values; the expected results are written here
// from the definitions, for two ranks a and b:
//   sum:  round(a + b)                  (one rounding to the type: the exact sum of two
//                                        fp32, or two bf16 in [-4, 4], is a double/fp32)
//   avg:  round((a + b) / 2)            (NCCL's a·½ + b·½: the halvings are exact)
// checked bit for bit on both ranks, for fp32 and bf16, in place and out of place, at
// lengths 1, 7, 1001 (odd) and 0 (nothing may be touched), plus broadcast from rank 1,
// calls grouped between ncclGroupStart/End, and comm.cuh as the trainer uses it: the sum of
// a gradient buffer on a stream of its own, comm_wait, and the host collectives (sums,
// maxima, broadcast, gather) against values each rank computes for both. Under the
// harness, also the stand-in's refusals (host buffers, an unknown data type, ranks given
// different unique ids, a stray ncclGroupEnd) and its asynchronous error (none). Only rank 0
// prints PASS/FAIL lines; a test fails if it failed on either rank.
//
// `test_cuda_allreduce --stuck-rank-1` is a fault instead: rank 1 stops answering (it sleeps
// 60 s) and rank 0, with a timeout of 1 s, must end the job from its comm_sum, saying so on
// stderr (test_nccl_mpi.sh checks the line, the status and the time).
#include "../kernels/comm.cuh"
#include "test.h"

extern "C" {
#include "../common/half.h"
}

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static Comm comm;

// Rank r's value at index i of buffer `salt`: a spread of signs and magnitudes in [-4, 4]
// that differs by rank, so most sums must round.
static float value(int rank, size_t i, unsigned salt) {
    uint32_t h = (uint32_t)i * 2654435761u ^ (uint32_t)(rank + 1) * 40503u ^ salt * 97u;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    return 4.0f * ((float)(h >> 8) / 8388608.0f - 1.0f);
}

// The expected reduction of the two ranks' values, in the type.
static float expected(float a, float b, ncclRedOp_t op, ncclDataType_t type) {
    double exact = op == ncclSum ? (double)a + b : ((double)a + b) / 2;
    return type == ncclFloat32 ? (float)exact : bf16_to_f32(f32_to_bf16((float)exact));
}

// A device buffer of n elements of the type holding rank `rank`'s values, or the sentinel
// bits 0x7f7f... when rank < 0.
static void *device_fill(size_t n, ncclDataType_t type, int rank, unsigned salt) {
    size_t size = type == ncclFloat32 ? 4 : 2;
    unsigned char *host = (unsigned char *)malloc(n * size + 1);
    for (size_t i = 0; i < n; i++) {
        if (rank < 0) {
            memset(host + i * size, 0x7f, size);
        } else if (type == ncclFloat32) {
            float v = value(rank, i, salt);
            memcpy(host + i * size, &v, 4);
        } else {
            uint16_t v = f32_to_bf16(value(rank, i, salt));
            memcpy(host + i * size, &v, 2);
        }
    }
    void *dev;
    cuda_check(cudaMalloc(&dev, n * size + 1));
    cuda_check(cudaMemcpy(dev, host, n * size, cudaMemcpyHostToDevice));
    free(host);
    return dev;
}

// Element i of a device buffer read back (as a float), the whole buffer at once.
static float *device_read(const void *dev, size_t n, ncclDataType_t type) {
    size_t size = type == ncclFloat32 ? 4 : 2;
    unsigned char *raw = (unsigned char *)malloc(n * size + 1);
    float *out = (float *)malloc(n * sizeof(float) + 1);
    cuda_check(cudaMemcpy(raw, dev, n * size, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) {
        if (type == ncclFloat32) {
            memcpy(&out[i], raw + i * 4, 4);
        } else {
            uint16_t v;
            memcpy(&v, raw + i * 2, 2);
            out[i] = bf16_to_f32(v);
        }
    }
    free(raw);
    return out;
}

// Counts the elements whose bits differ from want(i), printing the first few.
template <typename F>
static int count_wrong(const char *what, const float *got, size_t n, F want) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float w = want(i);
        if (memcmp(&got[i], &w, 4) != 0 && bad++ < 3)
            printf("  rank %d, %s [%zu]: %.9g, expected %.9g\n", comm.rank, what, i, got[i], w);
    }
    return bad;
}

// ---------------------------------------------------------------------------------------

static void all_reduce_case(size_t n, ncclDataType_t type, ncclRedOp_t op, bool in_place, unsigned salt) {
    void *send = device_fill(n, type, comm.rank, salt);
    void *recv = in_place ? send : device_fill(n, type, -1, 0);
    nccl_check(ncclAllReduce(send, recv, n, type, op, comm.nccl, 0));
    cuda_check(cudaDeviceSynchronize());
    float *got = device_read(recv, n, type);
    char what[64];
    snprintf(what, sizeof(what), "%s %s n=%zu%s", type == ncclFloat32 ? "fp32" : "bf16", op == ncclSum ? "sum" : "avg",
             n, in_place ? " in place" : "");
    auto want = [&](size_t i) {
        float a = value(0, i, salt), b = value(1, i, salt);
        if (type == ncclBfloat16) a = bf16_to_f32(f32_to_bf16(a)), b = bf16_to_f32(f32_to_bf16(b));
        return expected(a, b, op, type);
    };
    CHECK_INT(count_wrong(what, got, n, want), 0);
    free(got);
    cuda_check(cudaFree(send));
    if (!in_place) cuda_check(cudaFree(recv));
}

TEST(all_reduce_sum_and_avg_fp32_bf16) {
    static const size_t lengths[] = {1, 7, 1001};
    unsigned salt = 1;
    for (ncclDataType_t type : {ncclFloat32, ncclBfloat16})
        for (ncclRedOp_t op : {ncclSum, ncclAvg})
            for (size_t n : lengths) {
                all_reduce_case(n, type, op, false, salt++);
                all_reduce_case(n, type, op, true, salt++);
            }
}

// Length 0: success, and neither buffer changes (both keep the sentinel bytes).
TEST(all_reduce_of_nothing_touches_nothing) {
    for (ncclDataType_t type : {ncclFloat32, ncclBfloat16}) {
        void *send = device_fill(4, type, -1, 0), *recv = device_fill(4, type, -1, 0);
        CHECK_INT(ncclAllReduce(send, recv, 0, type, ncclSum, comm.nccl, 0), ncclSuccess);
        CHECK_INT(ncclAllReduce(send, send, 0, type, ncclAvg, comm.nccl, 0), ncclSuccess);
        CHECK_INT(ncclBroadcast(send, recv, 0, type, 0, comm.nccl, 0), ncclSuccess);
        cuda_check(cudaDeviceSynchronize());
        unsigned char bytes[2][16], sentinel[16];
        memset(sentinel, 0x7f, sizeof(sentinel));
        size_t size = type == ncclFloat32 ? 16 : 8;
        cuda_check(cudaMemcpy(bytes[0], send, size, cudaMemcpyDeviceToHost));
        cuda_check(cudaMemcpy(bytes[1], recv, size, cudaMemcpyDeviceToHost));
        CHECK(memcmp(bytes[0], sentinel, size) == 0 && memcmp(bytes[1], sentinel, size) == 0);
        cuda_check(cudaFree(send)), cuda_check(cudaFree(recv));
    }
}

TEST(broadcast_from_rank_1) {
    const size_t n = 1001;
    // fp32 out of place (the non-root's sendbuff is never read: it holds the sentinel)
    void *send = device_fill(n, ncclFloat32, comm.rank == 1 ? 1 : -1, 77), *recv = device_fill(n, ncclFloat32, -1, 0);
    nccl_check(ncclBroadcast(send, recv, n, ncclFloat32, 1, comm.nccl, 0));
    cuda_check(cudaDeviceSynchronize());
    float *got = device_read(recv, n, ncclFloat32);
    CHECK_INT(count_wrong("broadcast fp32", got, n, [](size_t i) { return value(1, i, 77); }), 0);
    free(got);
    cuda_check(cudaFree(send)), cuda_check(cudaFree(recv));
    // bf16 in place
    void *buf = device_fill(n, ncclBfloat16, comm.rank, 78);
    nccl_check(ncclBroadcast(buf, buf, n, ncclBfloat16, 1, comm.nccl, 0));
    cuda_check(cudaDeviceSynchronize());
    got = device_read(buf, n, ncclBfloat16);
    CHECK_INT(count_wrong("broadcast bf16", got, n, [](size_t i) { return bf16_to_f32(f32_to_bf16(value(1, i, 78))); }),
              0);
    free(got);
    cuda_check(cudaFree(buf));
}

TEST(grouped_calls) {
    const size_t n = 33;
    void *x = device_fill(n, ncclFloat32, comm.rank, 90), *y = device_fill(n, ncclBfloat16, comm.rank, 91);
    nccl_check(ncclGroupStart());
    nccl_check(ncclAllReduce(x, x, n, ncclFloat32, ncclSum, comm.nccl, 0));
    nccl_check(ncclAllReduce(y, y, n, ncclBfloat16, ncclAvg, comm.nccl, 0));
    nccl_check(ncclGroupEnd());
    cuda_check(cudaDeviceSynchronize());
    float *gx = device_read(x, n, ncclFloat32), *gy = device_read(y, n, ncclBfloat16);
    CHECK_INT(count_wrong("grouped fp32 sum", gx, n,
                          [](size_t i) { return expected(value(0, i, 90), value(1, i, 90), ncclSum, ncclFloat32); }),
              0);
    CHECK_INT(count_wrong("grouped bf16 avg", gy, n,
                          [](size_t i) {
                              float a = bf16_to_f32(f32_to_bf16(value(0, i, 91)));
                              float b = bf16_to_f32(f32_to_bf16(value(1, i, 91)));
                              return expected(a, b, ncclAvg, ncclBfloat16);
                          }),
              0);
    free(gx), free(gy);
    cuda_check(cudaFree(x)), cuda_check(cudaFree(y));
}

// comm.cuh as the trainer uses it: ranks from MPI, the sum of an fp32 gradient buffer on a
// stream of its own, waited for by comm_wait.
TEST(comm_gradient_sum) {
    int rank = -1, size = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECK_INT(comm.rank, rank);
    CHECK_INT(comm.nranks, size);
    CHECK_INT(comm.node_ranks, 2);  // mpirun -np 2 on one machine
    int devices = 0;
    cuda_check(cudaGetDeviceCount(&devices));
    CHECK(comm.device >= 0 && comm.device < devices);
    const size_t n = 12345;
    cudaStream_t stream;
    cuda_check(cudaStreamCreate(&stream));
    float *grads = (float *)device_fill(n, ncclFloat32, comm.rank, 100);
    comm_all_reduce_sum(&comm, grads, n, stream);
    comm_wait(&comm, stream);
    float *got = device_read(grads, n, ncclFloat32);
    CHECK_INT(count_wrong("gradient sum", got, n,
                          [](size_t i) { return expected(value(0, i, 100), value(1, i, 100), ncclSum, ncclFloat32); }),
              0);
    free(got);
    cuda_check(cudaFree(grads));
    cuda_check(cudaStreamDestroy(stream));
}

// The host collectives: every rank computes what both contribute, so each checks the result.
TEST(comm_host_collectives) {
    double x[3] = {1.5 + comm.rank, -2.0 * comm.rank, 1e15 + comm.rank};
    comm_sum(&comm, x, 3);
    CHECK(x[0] == 4.0 && x[1] == -2.0 && x[2] == 2e15 + 1);
    int y[2] = {comm.rank == 0 ? 7 : -1, comm.rank == 1 ? 130 : 0};
    comm_max(&comm, y, 2);
    CHECK_INT(y[0], 7);
    CHECK_INT(y[1], 130);
    char text[32];
    snprintf(text, sizeof(text), "from rank %d", comm.rank);
    comm_broadcast(&comm, text, sizeof(text));
    CHECK_STR(text, "from rank 0");
    uint32_t mine[2] = {0xA0u + (uint32_t)comm.rank, 0xB0u + (uint32_t)comm.rank}, all[4] = {0, 0, 0, 0};
    comm_gather(&comm, mine, all, sizeof(mine));
    if (comm.rank == 0) CHECK(all[0] == 0xA0u && all[1] == 0xB0u && all[2] == 0xA1u && all[3] == 0xB1u);
    else CHECK(all[0] == 0 && all[3] == 0);  // only rank 0's buffer is written
}

#ifdef CUDA_HOST_HARNESS
// What the stand-in refuses (real NCCL would fault or hang on these, so GPU builds skip it).
TEST(stand_in_refuses_misuse) {
    float host[4] = {0};
    void *dev = device_fill(4, ncclFloat32, comm.rank, 5);
    CHECK_INT(ncclAllReduce(host, host, 4, ncclFloat32, ncclSum, comm.nccl, 0), ncclInvalidArgument);
    CHECK_INT(ncclAllReduce(dev, dev, 4, (ncclDataType_t)2 /* ncclInt32 */, ncclSum, comm.nccl, 0), ncclInvalidArgument);
    CHECK_INT(ncclAllReduce(dev, dev, 4, ncclFloat32, (ncclRedOp_t)2 /* ncclMax */, comm.nccl, 0), ncclInvalidArgument);
    CHECK_INT(ncclAllReduce(dev, dev, 5, ncclFloat32, ncclSum, comm.nccl, 0), ncclInvalidArgument);  // past the end
    CHECK_INT(ncclBroadcast(dev, dev, 4, ncclFloat32, 2, comm.nccl, 0), ncclInvalidArgument);       // no rank 2
    CHECK_INT(ncclGroupEnd(), ncclInvalidUsage);
    cuda_check(cudaFree(dev));
    // every rank makes its own id instead of receiving rank 0's: every rank is told
    ncclUniqueId own;
    ncclComm_t other = NULL;
    nccl_check(ncclGetUniqueId(&own));
    CHECK_INT(ncclCommInitRank(&other, comm.nranks, own, comm.rank), ncclInvalidUsage);
    CHECK(other == NULL);
    CHECK_INT(ncclCommInitRank(&other, comm.nranks + 1, own, comm.rank), ncclInvalidArgument);
    ncclResult_t async = ncclInternalError;
    CHECK_INT(ncclCommGetAsyncError(comm.nccl, &async), ncclSuccess);
    CHECK_INT(async, ncclSuccess);
    CHECK_INT(ncclCommGetAsyncError(NULL, &async), ncclInvalidArgument);
    CHECK_STR(ncclGetErrorString(ncclSuccess), "no error");
    CHECK_STR(ncclGetErrorString(ncclInvalidArgument), "invalid argument");
    CHECK_STR(ncclGetErrorString(ncclInvalidUsage), "invalid usage");
}
#endif

// Runs a test on every rank; rank 0 reports it, failed if it failed anywhere.
static int failed_tests = 0;
#define RUN_ON_ALL_RANKS(name)                                                          \
    do {                                                                                \
        test_failed_checks = 0;                                                         \
        name();                                                                         \
        fflush(stdout);                                                                 \
        int mine = test_failed_checks, all = 0;                                         \
        mpi_check(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));     \
        if (all) failed_tests++;                                                        \
        if (comm.rank == 0) printf("%s %s\n", all ? "FAIL" : "PASS", #name), fflush(stdout); \
    } while (0)

int main(int argc, char **argv) {
    mpi_check(MPI_Init(&argc, &argv));
    int stuck = argc > 1 && !strcmp(argv[1], "--stuck-rank-1");
    comm_init(&comm, stuck ? 1.0 : 60.0);
    if (comm.nranks != 2) {
        if (comm.rank == 0) printf("FAIL allreduce_two_ranks: run with mpirun -np 2 (got %d ranks)\n", comm.nranks);
        comm_free(&comm);
        MPI_Finalize();
        return 1;
    }
    if (stuck) {
        if (comm.rank == 1) sleep(60);  // mpirun ends it once rank 0 aborts
        double x = 1.0;
        comm_sum(&comm, &x, 1);  // rank 0: gives up after 1 s
        printf("FAIL comm_sum_returned_on_rank_%d\n", comm.rank);
        return 1;
    }
    RUN_ON_ALL_RANKS(all_reduce_sum_and_avg_fp32_bf16);
    RUN_ON_ALL_RANKS(all_reduce_of_nothing_touches_nothing);
    RUN_ON_ALL_RANKS(broadcast_from_rank_1);
    RUN_ON_ALL_RANKS(grouped_calls);
    RUN_ON_ALL_RANKS(comm_gradient_sum);
    RUN_ON_ALL_RANKS(comm_host_collectives);
#ifdef CUDA_HOST_HARNESS
    RUN_ON_ALL_RANKS(stand_in_refuses_misuse);
#endif
    comm_free(&comm);
    mpi_check(MPI_Finalize());
    return failed_tests ? 1 : 0;
}
