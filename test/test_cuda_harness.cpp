// test_cuda_harness.cpp: the CUDA-on-CPU harness (test/cuda_host/) against known answers,
// and against known bugs it must catch.
//
// Known answers come from the CUDA Programming Guide's definitions, written out again here
// (never by calling the harness's own code): barrier ordering, the built-in variables, the
// four shuffles at every width, votes, atomics. The adversarial half runs kernels with real
// bugs (a missing __syncthreads, barriers in divergent code, warp operations whose lanes
// cannot meet, launch configurations a GPU refuses, out-of-bounds shared memory) and passes
// only if the harness reports each one.
#include "../kernels/common.cuh"
#include "../kernels/ptx.cuh"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

#include <limits.h>
#include <math.h>
#include <time.h>

// Copies n values of type T back from the device.
template <typename T>
static void from_device(T *host, const T *dev, size_t n) {
    cuda_check(cudaMemcpy(host, dev, n * sizeof(T), cudaMemcpyDeviceToHost));
}

// ---------------------------------------------------------------------------------------
// Barriers and built-in variables

// Three phases through shared memory; each needs the barrier before it.
__global__ void rotate_kernel(int *out) {
    DYNAMIC_SHARED(int, s);
    int n = blockDim.x, t = threadIdx.x;
    s[t] = t + 1 + 1000 * blockIdx.x;
    __syncthreads();
    int a = s[(t + 1) % n];
    __syncthreads();
    s[t] = 2 * a;
    __syncthreads();
    out[blockIdx.x * n + t] = s[(t + n - 1) % n];
}

TEST(barriers_order_shared_memory) {
    const uint64_t saved_seed = cuda_host_seed();
    const int n = 96, blocks = 3;
    int *d, h[n * blocks];
    cuda_check(cudaMalloc(&d, sizeof(h)));
    uint64_t seeds[] = {0, 1, 2, 12345};
    for (uint64_t seed : seeds) {
        cuda_host_set_seed(seed);
        LAUNCH(rotate_kernel, blocks, n, n * sizeof(int), 0, d);
        from_device(h, d, n * blocks);
        int bad = 0;
        for (int b = 0; b < blocks; b++)
            for (int t = 0; t < n; t++) bad += h[b * n + t] != 2 * (t + 1 + 1000 * b);
        CHECK_INT(bad, 0);
    }
    cuda_host_set_seed(saved_seed);
    cuda_check(cudaFree(d));
}

__global__ void builtins_kernel(unsigned *out) {
    unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    unsigned thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    unsigned *o = out + 8 * (block * blockDim.x * blockDim.y * blockDim.z + thread);
    o[0] = threadIdx.x, o[1] = threadIdx.y, o[2] = threadIdx.z;
    o[3] = blockIdx.x, o[4] = blockIdx.y, o[5] = blockIdx.z;
    o[6] = blockDim.x * 10000 + blockDim.y * 100 + blockDim.z;
    o[7] = gridDim.x * 10000 + gridDim.y * 100 + gridDim.z;
}

TEST(builtins_cover_a_3d_grid) {
    dim3 grid(3, 2, 2), block(4, 3, 2);
    const int total = 3 * 2 * 2 * 4 * 3 * 2;
    unsigned *d, h[8 * total];
    cuda_check(cudaMalloc(&d, sizeof(h)));
    LAUNCH(builtins_kernel, grid, block, 0, 0, d);
    from_device(h, d, 8 * total);
    int bad = 0, slot = 0;
    for (unsigned bz = 0; bz < 2; bz++)
        for (unsigned by = 0; by < 2; by++)
            for (unsigned bx = 0; bx < 3; bx++)
                for (unsigned tz = 0; tz < 2; tz++)
                    for (unsigned ty = 0; ty < 3; ty++)
                        for (unsigned tx = 0; tx < 4; tx++, slot++) {
                            const unsigned *o = h + 8 * slot;
                            unsigned want[8] = {tx, ty, tz, bx, by, bz, 40302, 30202};
                            for (int k = 0; k < 8; k++) bad += o[k] != want[k];
                        }
    CHECK_INT(bad, 0);
    cuda_check(cudaFree(d));
}

__global__ void barrier_votes_kernel(int *out) {
    int t = threadIdx.x, *o = out + 5 * t;
    o[0] = __syncthreads_count(t % 3 == 0);
    o[1] = __syncthreads_and(t % 3 == 0);
    o[2] = __syncthreads_or(t % 3 == 0);
    o[3] = __syncthreads_and(t >= 0);
    o[4] = __syncthreads_or(t == 1000);
}

TEST(syncthreads_count_and_or) {
    const int n = 100;
    int *d, h[5 * n];
    cuda_check(cudaMalloc(&d, sizeof(h)));
    LAUNCH(barrier_votes_kernel, 1, n, 0, 0, d);
    from_device(h, d, 5 * n);
    int bad = 0;
    for (int t = 0; t < n; t++) {
        const int want[5] = {34, 0, 1, 1, 0};  // 0, 3, ..., 99: 34 multiples of 3
        for (int k = 0; k < 5; k++) bad += h[5 * t + k] != want[k];
    }
    CHECK_INT(bad, 0);
    cuda_check(cudaFree(d));
}

// ---------------------------------------------------------------------------------------
// Shuffles, votes, __syncwarp

__global__ void shfl_kernel(int *out, int mode, int b, int width) {
    int lane = threadIdx.x % 32, v = 100 * (int)threadIdx.x + 7, r = 0;
    switch (mode) {
        case 0: r = __shfl_sync(0xffffffffu, v, b + 5 * lane, width); break;
        case 1: r = __shfl_up_sync(0xffffffffu, v, (unsigned)b, width); break;
        case 2: r = __shfl_down_sync(0xffffffffu, v, (unsigned)b, width); break;
        case 3: r = __shfl_xor_sync(0xffffffffu, v, b, width); break;
    }
    out[threadIdx.x] = r;
}

// The lane whose value a shuffle returns, as the CUDA Programming Guide words it
// ("Warp Shuffle Functions"): each width-wide subsection of the warp is its own group.
static int shfl_source(int mode, int lane, int b, int width) {
    int base = lane - lane % width;
    switch (mode) {
        case 0: return base + (b + 5 * lane) % width;  // "srcLane modulo width"
        case 1: return lane % width < b ? lane : lane - b;  // "the lower delta lanes will be unchanged"
        case 2: return lane % width + b >= width ? lane : lane + b;  // the upper delta lanes likewise
        default: {
            int src = lane ^ b;  // "accessing elements from later groups returns their own value"
            return src - src % width > base ? lane : src;
        }
    }
}

TEST(shuffles_known_answers) {
    int *d, h[64];
    cuda_check(cudaMalloc(&d, sizeof(h)));
    const int widths[] = {32, 16, 8, 4, 2, 1}, bs[] = {0, 1, 3, 5, 17, 31};
    int bad = 0, cases = 0;
    for (int mode = 0; mode < 4; mode++)
        for (int width : widths)
            for (int b : bs) {
                if (mode == 1 || mode == 2) {
                    if (b >= width && b != 0) continue;  // a delta of a whole segment or more: not documented
                }
                LAUNCH(shfl_kernel, 1, 64, 0, 0, d, mode, b, width);
                from_device(h, d, 64);
                cases++;
                for (int t = 0; t < 64; t++) {
                    int want = 100 * (32 * (t / 32) + shfl_source(mode, t % 32, b, width)) + 7;
                    if (h[t] != want) {
                        if (bad < 5) printf("  mode %d width %d b %d lane %d: got %d, want %d\n", mode, width, b, t, h[t], want);
                        bad++;
                    }
                }
            }
    CHECK_INT(bad, 0);
    CHECK(cases > 90);
    cuda_check(cudaFree(d));
}

// 8-byte and 2-byte types travel whole.
__global__ void shfl_types_kernel(double *d, __nv_bfloat16 *h) {
    int lane = threadIdx.x;
    double x = lane * 1.5 + 1e10;
    __nv_bfloat16 y = __float2bfloat16(lane * 0.25f - 3.0f);
    d[lane] = __shfl_xor_sync(0xffffffffu, x, 1);
    h[lane] = __shfl_down_sync(0xffffffffu, y, 2);
}

TEST(shuffles_move_doubles_and_bf16) {
    double *dd, hd[32];
    __nv_bfloat16 *db, hb[32];
    cuda_check(cudaMalloc(&dd, sizeof(hd)));
    cuda_check(cudaMalloc(&db, sizeof(hb)));
    LAUNCH(shfl_types_kernel, 1, 32, 0, 0, dd, db);
    from_device(hd, dd, 32);
    from_device(hb, db, 32);
    int bad = 0;
    for (int l = 0; l < 32; l++) {
        bad += hd[l] != (l ^ 1) * 1.5 + 1e10;
        bad += (float)hb[l] != (l + 2 < 32 ? l + 2 : l) * 0.25f - 3.0f;
    }
    CHECK_INT(bad, 0);
    cuda_check(cudaFree(dd));
    cuda_check(cudaFree(db));
}

// Lanes 0-15 shuffle among themselves; lanes 8-15 read lanes 16-23, outside the mask:
// undefined on a GPU, all-ones bits here.
__global__ void shfl_outside_mask_kernel(int *out) {
    int lane = threadIdx.x, v = lane + 1000;
    if (lane < 16) v = __shfl_down_sync(0x0000ffffu, v, 8);
    out[lane] = v;
}

TEST(shuffle_from_outside_the_mask_is_garbage) {
    int *d, h[32];
    cuda_check(cudaMalloc(&d, sizeof(h)));
    LAUNCH(shfl_outside_mask_kernel, 1, 32, 0, 0, d);
    from_device(h, d, 32);
    int bad = 0;
    for (int l = 0; l < 32; l++) bad += h[l] != (l < 8 ? l + 8 + 1000 : l < 16 ? -1 : l + 1000);
    CHECK_INT(bad, 0);
    cuda_check(cudaFree(d));
}

__global__ void votes_kernel(unsigned *out) {
    int lane = threadIdx.x;
    unsigned *o = out + 6 * lane;
    o[0] = __ballot_sync(0xffffffffu, lane % 3 == 0);
    o[1] = (unsigned)__any_sync(0xffffffffu, lane == 31);
    o[2] = (unsigned)__all_sync(0xffffffffu, lane < 31);
    o[3] = (unsigned)__all_sync(0xffffffffu, lane < 32);
    if (lane < 16)
        o[4] = __ballot_sync(0x0000ffffu, lane % 2);
    else
        o[4] = __ballot_sync(0xffff0000u, 1);
    o[5] = __activemask();
}

TEST(votes_known_answers) {
    unsigned *d, h[6 * 32];
    cuda_check(cudaMalloc(&d, sizeof(h)));
    LAUNCH(votes_kernel, 1, 32, 0, 0, d);
    from_device(h, d, 6 * 32);
    int bad = 0;
    for (int l = 0; l < 32; l++) {
        unsigned want[6] = {0x49249249u, 1, 0, 1, l < 16 ? 0xaaaau : 0xffff0000u, 1u << l};
        for (int k = 0; k < 6; k++) bad += h[6 * l + k] != want[k];
    }
    CHECK_INT(bad, 0);
    cuda_check(cudaFree(d));
}

__global__ void syncwarp_kernel(int *out) {
    __shared__ int s[64];
    int t = threadIdx.x, lane = t % 32, base = t - lane;
    s[t] = 2 * t;
    __syncwarp();
    out[t] = s[base + 31 - lane];
}

TEST(syncwarp_orders_a_warp) {
    int *d, h[64];
    cuda_check(cudaMalloc(&d, sizeof(h)));
    LAUNCH(syncwarp_kernel, 1, 64, 0, 0, d);
    from_device(h, d, 64);
    int bad = 0;
    for (int t = 0; t < 64; t++) bad += h[t] != 2 * (t - t % 32 + 31 - t % 32);
    CHECK_INT(bad, 0);
    cuda_check(cudaFree(d));
}

// ---------------------------------------------------------------------------------------
// Atomics

__global__ void atomics_kernel(int *ci, float *cf, unsigned *cu) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(&ci[0], 1);
    atomicSub(&ci[1], 2);
    atomicMax(&ci[2], t);
    atomicMin(&ci[3], -t);
    int old = ci[4], assumed;
    do {  // the classic compare-and-swap loop
        assumed = old;
        old = atomicCAS(&ci[4], assumed, assumed + 3);
    } while (old != assumed);
    atomicExch(&ci[9], 42);
    atomicAdd(&cf[0], 0.5f);
    atomicInc(&cu[0], 9u);
    atomicOr(&cu[1], 1u << (t % 32));
    atomicXor(&cu[2], (unsigned)t);
    atomicAnd(&cu[3], ~(1u << (t % 20)));
    __shared__ int hist[4];
    if (threadIdx.x < 4) hist[threadIdx.x] = 0;
    __syncthreads();
    atomicAdd(&hist[threadIdx.x % 4], 1);
    __syncthreads();
    if (threadIdx.x < 4) atomicAdd(&ci[5 + threadIdx.x], hist[threadIdx.x]);
}

TEST(atomics_known_answers) {
    int *ci, hi[10] = {0, 0, -1, 1, 0, 0, 0, 0, 0, 0};
    float *cf, hf = 0;
    unsigned *cu, hu[4] = {0, 0, 0, 0xffffffffu};
    cuda_check(cudaMalloc(&ci, sizeof(hi)));
    cuda_check(cudaMalloc(&cf, sizeof(hf)));
    cuda_check(cudaMalloc(&cu, sizeof(hu)));
    cuda_check(cudaMemcpy(ci, hi, sizeof(hi), cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(cf, &hf, sizeof(hf), cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(cu, hu, sizeof(hu), cudaMemcpyHostToDevice));
    LAUNCH(atomics_kernel, 4, 96, 0, 0, ci, cf, cu);  // 384 threads
    from_device(hi, ci, 10);
    from_device(&hf, cf, 1);
    from_device(hu, cu, 4);
    const int want_i[10] = {384, -768, 383, -383, 3 * 384, 96, 96, 96, 96, 42};
    for (int k = 0; k < 10; k++) CHECK_INT(hi[k], want_i[k]);
    CHECK(hf == 192.0f);
    CHECK_INT(hu[0], 384 % 10);     // atomicInc wraps to 0 after 9
    CHECK_INT(hu[1], 0xffffffffu);
    CHECK_INT(hu[2], 0);            // 0 ^ 1 ^ ... ^ 383 = 0 (383 % 4 == 3)
    CHECK_INT(hu[3], 0xfff00000u);  // bits 0-19 cleared
    cuda_check(cudaFree(ci));
    cuda_check(cudaFree(cf));
    cuda_check(cudaFree(cu));
}

// ---------------------------------------------------------------------------------------
// Bugs the harness must catch

// Whether msg names line `line` of this file ("test_cuda_harness.cpp:LINE", not a longer
// number).
static bool names_line(const char *msg, int line) {
    char at[64];
    int n = snprintf(at, sizeof(at), "test_cuda_harness.cpp:%d", line);
    for (const char *p = msg; (p = strstr(p, at)); p++)
        if (p[n] < '0' || p[n] > '9') return true;
    return false;
}

// A fault report: err is `want` and the message contains `text` and names lines line_a and
// line_b of this file (0: not checked). Returns the number of failed conditions, printing
// each, and clears the fault.
static int expect_report(cudaError_t err, cudaError_t want, const char *text, int line_a, int line_b) {
    int bad = 0;
    const char *msg = cuda_host_fault();
    if (err != want) printf("  returned %s, expected %s\n", cudaGetErrorName(err), cudaGetErrorName(want)), bad++;
    if (!msg || !strstr(msg, text) || (line_a && !names_line(msg, line_a)) || (line_b && !names_line(msg, line_b))) {
        printf("  fault message \"%s\" does not contain \"%s\" and lines %d and %d\n", msg ? msg : "(none)", text,
               line_a, line_b);
        bad++;
    }
    cuda_host_clear_fault();
    return bad;
}

// The race detector's report (race.h): a launch failure whose message names a race, both
// accesses' lines and why nothing orders them.
static int expect_race(cudaError_t err, int line_a, int line_b, const char *why) {
    const char *msg = cuda_host_fault();
    int bad = msg && strstr(msg, "race: ") ? 0 : 1;
    if (bad) printf("  not a race report:\n");
    return bad + expect_report(err, cudaErrorLaunchFailure, why, line_a, line_b);
}

// Every thread writes its slot; the last thread sums them all, but nothing makes it wait
// for the others (the __syncthreads() is missing).
static const int missing_sync_write = __LINE__ + 4, missing_sync_read = __LINE__ + 8;
__global__ void missing_sync_kernel(int *out) {
    DYNAMIC_SHARED(int, s);
    int n = blockDim.x, t = threadIdx.x;
    s[t] = t + 1;
    if (t == n - 1) {
        int sum = 0;
        for (int i = 0; i < n; i++)
            sum += s[i];
        out[0] = sum;
    }
}

static int missing_sync_sum(uint64_t seed) {
    int *d, h;
    cuda_check(cudaMalloc(&d, sizeof(int)));
    cuda_host_set_seed(seed);
    LAUNCH(missing_sync_kernel, 1, 64, 64 * sizeof(int), 0, d);
    from_device(&h, d, 1);
    cuda_check(cudaFree(d));
    return h;
}

TEST(missing_syncthreads_is_caught) {
    const uint64_t saved_seed = cuda_host_seed();
    int *d;
    cuda_check(cudaMalloc(&d, sizeof(int)));
    // The race detector reports the read of another warp's slot under every schedule, the
    // order a reader imagines (seed 0) included, with both lines.
    for (uint64_t seed = 0; seed < 4; seed++) {
        cuda_host_set_seed(seed);
        CHECK_INT(expect_race(TRY_LAUNCH(missing_sync_kernel, 1, 64, 64 * sizeof(int), d), missing_sync_read,
                              missing_sync_write, "no __syncthreads between them"),
                  0);
    }
    cuda_check(cudaFree(d));
    // Without it, the schedules alone show the bug in the result.
    cuda_host_set_racecheck(false);
    const int right = 64 * 65 / 2;
    // In thread order the summing thread runs last and the bug hides: the reason the
    // harness shuffles.
    CHECK_INT(missing_sync_sum(0), right);
    // The default seed of `make test` catches it...
    CHECK(missing_sync_sum(1) != right);
    // ...and so does almost every seed: the bug hides only when the summing thread
    // happens to run last.
    int caught = 0;
    for (uint64_t seed = 1; seed <= 32; seed++) caught += missing_sync_sum(seed) != right;
    CHECK(caught >= 28);
    cuda_host_set_racecheck(true);
    cuda_host_set_seed(saved_seed);
}

// block_sum of common.cuh without its first barrier: warps read the other warps'
// partial sums before they are written.
static const int block_sum_write = __LINE__ + 5, block_sum_read = __LINE__ + 6;
__device__ float block_sum_missing_barrier(float v) {
    __shared__ float partial[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    v = warp_sum(lane < warps ? partial[lane] : 0.0f);
    __syncthreads();
    return v;
}

__global__ void block_sum_kernel(float *out, int buggy) {
    float v = 0.5f + (float)threadIdx.x;
    out[threadIdx.x] = buggy ? block_sum_missing_barrier(v) : block_sum(v);
}

TEST(block_sum_without_its_barrier_is_caught) {
    const uint64_t saved_seed = cuda_host_seed();
    float *d, h[128];
    cuda_check(cudaMalloc(&d, sizeof(h)));
    int caught = 0;
    for (uint64_t seed = 0; seed < 8; seed++) {
        cuda_host_set_seed(seed);
        LAUNCH(block_sum_kernel, 1, 128, 0, 0, d, 0);
        from_device(h, d, 128);
        for (int t = 0; t < 128; t++) CHECK(h[t] == 128 * 64.0f);  // sum of 0.5 + t
        CHECK_INT(expect_race(TRY_LAUNCH(block_sum_kernel, 1, 128, 0, d, 1), block_sum_read, block_sum_write,
                              "with no __sync"),  // (__syncthreads, or __syncwarp when two lanes meet first)
                  0);
        cuda_host_set_racecheck(false);  // (the kernel runs when from_device waits for it)
        LAUNCH(block_sum_kernel, 1, 128, 0, 0, d, 1);
        from_device(h, d, 128);
        cuda_host_set_racecheck(true);
        int wrong = 0;
        for (int t = 0; t < 128; t++) wrong += !(h[t] == 128 * 64.0f);
        caught += wrong > 0;
    }
    CHECK_INT(caught, 8);
    cuda_host_set_seed(saved_seed);
    cuda_check(cudaFree(d));
}

// The same correct kernel gives the same bits under every schedule.
TEST(correct_kernel_is_schedule_independent) {
    const uint64_t saved_seed = cuda_host_seed();
    float *d, first[128], h[128];
    cuda_check(cudaMalloc(&d, sizeof(h)));
    for (uint64_t seed = 0; seed < 6; seed++) {
        cuda_host_set_seed(seed * 7919);
        LAUNCH(block_sum_kernel, 1, 128, 0, 0, d, 0);
        from_device(seed ? h : first, d, 128);
        if (seed) CHECK(memcmp(h, first, sizeof(h)) == 0);
    }
    cuda_host_set_seed(saved_seed);
    cuda_check(cudaFree(d));
}

__global__ void divergent_barrier_kernel(int *out) {
    if (threadIdx.x < 16) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}

__global__ void early_return_kernel(int *out, int who) {
    if ((int)threadIdx.x == who) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

TEST(barrier_divergence_is_reported) {
    const uint64_t saved_seed = cuda_host_seed();
    int *d;
    cuda_check(cudaMalloc(&d, 64 * sizeof(int)));
    CHECK_INT(expect_fault(TRY_LAUNCH(divergent_barrier_kernel, 1, 64, 0, d), cudaErrorLaunchFailure,
                           "threads wait at different barriers"),
              0);
    // Whichever comes first, the return or the others' arrival: in thread order, thread 0
    // returns before anyone waits and thread 63 after everyone else does.
    cuda_host_set_seed(0);
    CHECK_INT(expect_fault(TRY_LAUNCH(early_return_kernel, 1, 64, 0, d, 0), cudaErrorLaunchFailure,
                           "after thread (0,0,0) returned"),
              0);
    CHECK_INT(expect_fault(TRY_LAUNCH(early_return_kernel, 1, 64, 0, d, 63), cudaErrorLaunchFailure,
                           "thread (63,0,0): returned while"),
              0);
    for (uint64_t seed = 1; seed < 4; seed++) {
        cuda_host_set_seed(seed);
        CHECK_INT(expect_fault(TRY_LAUNCH(early_return_kernel, 1, 64, 0, d, 5), cudaErrorLaunchFailure,
                               "a barrier that not every thread reaches"),
                  0);
    }
    cuda_host_set_seed(saved_seed);
    cuda_check(cudaFree(d));
}

__global__ void warp_deadlock_kernel(int *out) {
    int v = threadIdx.x;
    if (threadIdx.x == 0)
        __syncthreads();
    else
        v = __shfl_sync(0xffffffffu, v, 0);
    out[threadIdx.x] = v;
}

__global__ void warp_mismatch_kernel(int *out) {
    int v = threadIdx.x;
    if (threadIdx.x % 2)
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    else
        v = (int)__ballot_sync(0xffffffffu, 1);
    out[threadIdx.x] = v;
}

__global__ void warp_case_kernel(int *out, int which) {
    int v = threadIdx.x, lane = threadIdx.x % 32;
    if (which == 0) v = __shfl_sync(0xfffffffeu, v, 1);  // lane 0 calls without its bit
    if (which == 1) v = __shfl_sync(0xffffffffu, v, 0);  // launched with 48 threads: warp 1 has 16
    if (which == 2) {
        if (lane == 3) return;
        v = __shfl_sync(0xffffffffu, v, 0);  // names lane 3, which has returned
    }
    if (which == 3) v = __shfl_sync(0xffffffffu, v, 0, 12);
    out[threadIdx.x] = v;
}

TEST(warp_operations_that_cannot_meet_are_reported) {
    const uint64_t saved_seed = cuda_host_seed();
    int *d;
    cuda_check(cudaMalloc(&d, 64 * sizeof(int)));
    CHECK_INT(expect_fault(TRY_LAUNCH(warp_deadlock_kernel, 1, 32, 0, d), cudaErrorLaunchFailure,
                           "which is at __syncthreads"),
              0);
    CHECK_INT(expect_fault(TRY_LAUNCH(warp_mismatch_kernel, 1, 32, 0, d), cudaErrorLaunchFailure,
                           "at different operations"),
              0);
    CHECK_INT(expect_fault(TRY_LAUNCH(warp_case_kernel, 1, 32, 0, d, 0), cudaErrorLaunchFailure,
                           "does not name the calling lane 0"),
              0);
    CHECK_INT(expect_fault(TRY_LAUNCH(warp_case_kernel, 1, 48, 0, d, 1), cudaErrorLaunchFailure,
                           "but warp 1 has 16 threads"),
              0);
    for (uint64_t seed = 0; seed < 4; seed++) {
        cuda_host_set_seed(seed);
        CHECK_INT(expect_fault(TRY_LAUNCH(warp_case_kernel, 1, 32, 0, d, 2), cudaErrorLaunchFailure, "returned"), 0);
    }
    cuda_host_set_seed(saved_seed);
    CHECK_INT(expect_fault(TRY_LAUNCH(warp_case_kernel, 1, 32, 0, d, 3), cudaErrorLaunchFailure,
                           "width 12 is not a power of two"),
              0);
    cuda_check(cudaFree(d));
}

// ---------------------------------------------------------------------------------------
// What a GPU may break and the harness reports, each with its site

// Write-after-read across warps, far apart: warp 0 reads its slot first thing after the
// barrier, warp 1 overwrites it only after 300 shuffles, and nothing orders the two. Warps
// that advance in step never show it; a warp that runs ahead does.
static const int far_read = __LINE__ + 7, far_write = __LINE__ + 11;
__global__ void far_war_kernel(float *out, int steps) {
    __shared__ float s[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (warp == 0) s[lane] = (float)lane;
    __syncthreads();
    if (warp == 0) {
        out[lane] = s[lane];
    } else {
        float y = (float)lane;
        for (int i = 0; i < steps; i++) y = __shfl_xor_sync(0xffffffffu, y, 1);
        s[lane] = y + 1000.0f;
    }
}

TEST(write_after_read_across_warps_far_apart_is_reported) {
    const uint64_t saved_seed = cuda_host_seed();
    float *d, h[32];
    cuda_check(cudaMalloc(&d, sizeof(h)));
    for (uint64_t seed = 0; seed < 4; seed++) {
        cuda_host_set_seed(seed);
        CHECK_INT(expect_race(TRY_LAUNCH(far_war_kernel, 1, 64, 0, d, 300), far_write, far_read,
                              "warps 0 and 1 with no __syncthreads between them"),
                  0);
    }
    // The schedules alone: warp 1 running ahead overwrites the slots before warp 0 reads
    // them under some seeds (in thread order never).
    cuda_host_set_racecheck(false);
    int wrong = 0;
    for (uint64_t seed = 0; seed < 32; seed++) {
        cuda_host_set_seed(seed);
        LAUNCH(far_war_kernel, 1, 64, 0, 0, d, 300);
        from_device(h, d, 32);
        int bad = 0;
        for (int l = 0; l < 32; l++) bad += h[l] != (float)l;
        if (seed == 0) CHECK_INT(bad, 0);
        wrong += bad > 0;
    }
    cuda_host_set_racecheck(true);
    CHECK(wrong >= 2);
    printf("  seeds whose schedule let warp 1 overwrite first: %d of 32\n", wrong);
    cuda_host_set_seed(saved_seed);
    cuda_check(cudaFree(d));
}

// Lanes store an 8x8 tile (lane l: row l / 4, columns 2(l % 4), +1), then ldmatrix hands each
// lane back what it stored; the rows are read by lanes 0-7 (who give their addresses), so
// each lane's data is read by another lane: only a __syncwarp between orders that.
static const int tile_store = __LINE__ + 5, tile_load = __LINE__ + 8;
__global__ void ldmatrix_tile_kernel(unsigned *out, int sync) {
    __shared__ __align__(16) unsigned short tile[8 * 8];
    int lane = threadIdx.x;
    unsigned short *mine = tile + (lane / 4) * 8 + 2 * (lane % 4);
    mine[0] = (unsigned short)(100 + 2 * lane), mine[1] = (unsigned short)(101 + 2 * lane);
    if (sync) __syncwarp();
    unsigned r[1];
    ldmatrix_x1(r, tile + (lane % 8) * 8);
    out[lane] = r[0];
}

TEST(missing_syncwarp_before_ldmatrix_is_reported) {
    unsigned *d, h[32];
    cuda_check(cudaMalloc(&d, sizeof(h)));
    CHECK_INT(expect_race(TRY_LAUNCH(ldmatrix_tile_kernel, 1, 32, 0, d, 0), tile_load, tile_store,
                          "with no __syncwarp between them"),
              0);
    CHECK_INT(TRY_LAUNCH(ldmatrix_tile_kernel, 1, 32, 0, d, 1), cudaSuccess);
    from_device(h, d, 32);
    int bad = 0;
    for (unsigned l = 0; l < 32; l++) bad += h[l] != ((100 + 2 * l) | (101 + 2 * l) << 16);
    CHECK_INT(bad, 0);
    cuda_check(cudaFree(d));
}

// Half a warp at one mma.sync, half at another: .aligned wants one instruction for all.
static const int mma_site_a = __LINE__ + 7, mma_site_b = __LINE__ + 9;
__global__ void divergent_mma_kernel(float *out, int diverge) {
    unsigned a[4] = {0x3f803f80u, 0x3f803f80u, 0x3f803f80u, 0x3f803f80u}, b[2] = {0x3f803f80u, 0x3f803f80u};
    float c[4] = {0, 0, 0, 0}, d[4];
    int lane = threadIdx.x;
    if (diverge) {
        if (lane < 16)
            mma_m16n8k16_bf16(d, a, b, c);
        else
            mma_m16n8k16_bf16(d, a, b, c);
    } else {
        mma_m16n8k16_bf16(d, a, b, c);
    }
    out[lane] = d[0];
}

TEST(divergent_mma_sync_sites_are_reported) {
    float *d, h[32];
    cuda_check(cudaMalloc(&d, sizeof(h)));
    CHECK_INT(expect_report(TRY_LAUNCH(divergent_mma_kernel, 1, 32, 0, d, 1), cudaErrorLaunchFailure,
                            "at different call sites", mma_site_a, mma_site_b),
              0);
    CHECK_INT(TRY_LAUNCH(divergent_mma_kernel, 1, 32, 0, d, 0), cudaSuccess);
    from_device(h, d, 32);
    int bad = 0;
    for (int l = 0; l < 32; l++) bad += h[l] != 16.0f;  // 16 products of 1 x 1
    CHECK_INT(bad, 0);
    cuda_check(cudaFree(d));
}

__global__ void __launch_bounds__(128) bounded_kernel(int *out) {
    if (threadIdx.x + threadIdx.y == 0) out[0] = (int)(blockDim.x * blockDim.y);
}
template <int N>
__global__ void __launch_bounds__(2 * N, 1) bounded_template_kernel(int *out) {
    if (threadIdx.x == 0) out[0] = N;
}

TEST(launches_over_launch_bounds_are_refused) {
    int *d, h = 0;
    cuda_check(cudaMalloc(&d, sizeof(int)));
    cudaError_t e = TRY_LAUNCH(bounded_kernel, 1, 256, 0, d);
    CHECK(cudaGetLastError() == cudaErrorLaunchOutOfResources);  // reported, and not sticky
    CHECK(cudaGetLastError() == cudaSuccess);
    CHECK_INT(expect_report(e, cudaErrorLaunchOutOfResources,
                            "launch of bounded_kernel refused: blockDim (256,1,1) = 256 threads, more than its "
                            "__launch_bounds__ (128)",
                            0, 0),
              0);
    CHECK_INT(TRY_LAUNCH(bounded_kernel, 1, dim3(32, 4), 0, d), cudaSuccess);
    from_device(&h, d, 1);
    CHECK_INT(h, 128);
    // a template's bound, an expression
    CHECK_INT(expect_report(TRY_LAUNCH(bounded_template_kernel<32>, 1, 96, 0, d), cudaErrorLaunchOutOfResources,
                            "__launch_bounds__ (64)", 0, 0),
              0);
    CHECK_INT(TRY_LAUNCH(bounded_template_kernel<32>, 1, 64, 0, d), cudaSuccess);
    cuda_check(cudaFree(d));
}

// Thread 0 copies src to shared memory with cp.async, then stores to src before waiting:
// the copy may still be reading it.
static const int cp_issue = __LINE__ + 4, cp_store = __LINE__ + 5;
__global__ void cp_async_source_kernel(float *src, float *out) {
    __shared__ __align__(16) float s[4];
    if (threadIdx.x == 0) {
        cp_async16_ca(s, src);
        src[0] = -1.0f;
        cp_async_commit();
        cp_async_wait<0>();
        out[0] = s[0];
    }
}

TEST(cp_async_source_overwritten_before_its_wait_is_reported) {
    float h[4] = {5, 6, 7, 8}, *src, *out, got = 0;
    cuda_check(cudaMalloc(&src, sizeof(h)));
    cuda_check(cudaMalloc(&out, sizeof(float)));
    cuda_check(cudaMemcpy(src, h, sizeof(h), cudaMemcpyHostToDevice));
    CHECK_INT(expect_race(TRY_LAUNCH(cp_async_source_kernel, 1, 32, 0, src, out), cp_store, cp_issue,
                          "a cp.async reads its source until its cp.async.wait_group"),
              0);
    // Without the detector: the copy took its source at the issue.
    cuda_check(cudaMemcpy(src, h, sizeof(h), cudaMemcpyHostToDevice));
    cuda_host_set_racecheck(false);
    LAUNCH(cp_async_source_kernel, 1, 32, 0, 0, src, out);
    from_device(&got, out, 1);
    cuda_host_set_racecheck(true);
    CHECK(got == 5.0f);
    cuda_check(cudaFree(src));
    cuda_check(cudaFree(out));
}

static const int fill_line = __LINE__ + 2, copy_line = __LINE__ + 5;
__global__ void fill_kernel(float *x, int n, float v) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] = v;
}
__global__ void copy_kernel(float *dst, const float *src, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
}

TEST(a_stream_reading_another_streams_writes_without_an_event_is_reported) {
    const uint64_t saved_seed = cuda_host_seed();
    const int n = 256;
    float *buf, *out, h[n];
    cudaStream_t s1, s2;
    cudaEvent_t filled;
    cuda_check(cudaMalloc(&buf, n * sizeof(float)));
    cuda_check(cudaMalloc(&out, n * sizeof(float)));
    cuda_check(cudaStreamCreate(&s1));
    cuda_check(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    cuda_check(cudaEventCreateWithFlags(&filled, cudaEventDisableTiming));
    for (uint64_t seed = 0; seed < 4; seed++) {
        cuda_host_set_seed(seed);
        LAUNCH(fill_kernel, 1, 64, 0, s1, buf, n, 7.0f);
        LAUNCH(copy_kernel, 1, 64, 0, s2, out, buf, n);
        CHECK_INT(expect_race(QUIETLY(cudaDeviceSynchronize()), copy_line, fill_line,
                              "with no event (cudaEventRecord, cudaStreamWaitEvent) or synchronisation"),
                  0);
        // with the event: ordered, under every schedule
        LAUNCH(fill_kernel, 1, 64, 0, s1, buf, n, 7.0f + (float)seed);
        cuda_check(cudaEventRecord(filled, s1));
        cuda_check(cudaStreamWaitEvent(s2, filled, 0));
        LAUNCH(copy_kernel, 1, 64, 0, s2, out, buf, n);
        cuda_check(cudaStreamSynchronize(s2));
        from_device(h, out, n);
        int bad = 0;
        for (int i = 0; i < n; i++) bad += h[i] != 7.0f + (float)seed;
        CHECK_INT(bad, 0);
    }
    // Without the detector, the seeded order of the two streams shows it in the data.
    cuda_host_set_racecheck(false);
    int wrong = 0;
    for (uint64_t seed = 1; seed <= 16; seed++) {
        cuda_host_set_seed(seed);
        LAUNCH(fill_kernel, 1, 64, 0, s1, buf, n, 100.0f + (float)seed);
        LAUNCH(copy_kernel, 1, 64, 0, s2, out, buf, n);
        cuda_check(cudaDeviceSynchronize());
        from_device(h, out, n);
        wrong += h[0] != 100.0f + (float)seed;
    }
    cuda_host_set_racecheck(true);
    CHECK(wrong >= 2 && wrong <= 14);
    cuda_check(cudaEventDestroy(filled));
    cuda_check(cudaStreamDestroy(s1));
    cuda_check(cudaStreamDestroy(s2));
    cuda_check(cudaFree(buf));
    cuda_check(cudaFree(out));
    cuda_host_set_seed(saved_seed);
}

// Thread 0 of every block increments one counter, or atomically.
static const int counter_line = __LINE__ + 4;
__global__ void counter_kernel(int *counter, int atomic) {
    if (threadIdx.x != 0) return;
    if (atomic) atomicAdd(counter, 1);
    else *counter = *counter + 1;
}

TEST(blocks_incrementing_one_counter_without_an_atomic_are_reported) {
    int *d, h = -1;
    cuda_check(cudaMalloc(&d, sizeof(int)));
    cuda_check(cudaMemset(d, 0, sizeof(int)));
    CHECK_INT(expect_race(TRY_LAUNCH(counter_kernel, 2, 32, 0, d, 0), counter_line, counter_line,
                          "two blocks of one launch, which nothing orders"),
              0);
    cuda_check(cudaMemset(d, 0, sizeof(int)));
    CHECK_INT(TRY_LAUNCH(counter_kernel, 7, 32, 0, d, 1), cudaSuccess);
    from_device(&h, d, 1);
    CHECK_INT(h, 7);
    cuda_check(cudaFree(d));
}

// Each block counts itself in, crosses a barrier, notes how many blocks are in, and leaves:
// with blocks switched at barriers, two are in at once under some seeds.
__global__ void alive_kernel(int *alive, int *most) {
    if (threadIdx.x == 0) atomicAdd(alive, 1);
    __syncthreads();
    if (threadIdx.x == 0) atomicMax(most, atomicAdd(alive, 0));
    __syncthreads();
    if (threadIdx.x == 0) atomicSub(alive, 1);
}

TEST(blocks_of_one_launch_interleave_at_barriers) {
    const uint64_t saved_seed = cuda_host_seed();
    int *d, h[2];
    cuda_check(cudaMalloc(&d, sizeof(h)));
    int together = 0;
    for (uint64_t seed = 0; seed < 8; seed++) {
        cuda_host_set_seed(seed);
        cuda_check(cudaMemset(d, 0, sizeof(h)));
        LAUNCH(alive_kernel, 8, 64, 0, 0, d, d + 1);
        from_device(h, d, 2);
        CHECK_INT(h[0], 0);
        CHECK(h[1] == 1 || (seed && h[1] == 2));  // one block at a time in thread order, else at most 2
        together += h[1] == 2;
    }
    CHECK(together >= 4);
    cuda_host_set_seed(saved_seed);
    cuda_check(cudaFree(d));
}

// ---------------------------------------------------------------------------------------
// Launches and memory a GPU refuses

__global__ void touch_kernel(int *out) {
    if (threadIdx.x + threadIdx.y + threadIdx.z + blockIdx.x == 0) out[0] = 1;  // one thread writes
}

__global__ void big_shared_kernel(unsigned char *out, int bytes) {
    DYNAMIC_SHARED(unsigned char, s);
    if (threadIdx.x == 0) {
        s[0] = 1;
        s[bytes - 1] = 2;
        out[0] = (unsigned char)(s[0] + s[bytes - 1]);
    }
}

TEST(launch_configurations_a_gpu_refuses) {
    int *d, h;
    cuda_check(cudaMalloc(&d, sizeof(int)));
    struct {
        dim3 grid, block;
        size_t smem;
        cudaError_t want;
        const char *text;
    } bad[] = {
        {dim3(1), dim3(1025), 0, cudaErrorInvalidConfiguration, "at most 1024 threads"},
        {dim3(1), dim3(32, 32, 2), 0, cudaErrorInvalidConfiguration, "= 2048 threads"},
        {dim3(1), dim3(1, 1, 65), 0, cudaErrorInvalidConfiguration, "blockDim (1,1,65)"},
        {dim3(1), dim3(0), 0, cudaErrorInvalidConfiguration, "blockDim (0,1,1)"},
        {dim3(1, 65536), dim3(32), 0, cudaErrorInvalidConfiguration, "gridDim (1,65536,1)"},
        {dim3(0), dim3(32), 0, cudaErrorInvalidConfiguration, "gridDim (0,1,1)"},
        {dim3(1), dim3(32), 48 * 1024 + 1, cudaErrorInvalidValue, "48 KiB without cudaFuncSetAttribute"},
    };
    for (const auto &c : bad) {
        cudaError_t e = TRY_LAUNCH(touch_kernel, c.grid, c.block, c.smem, d);
        CHECK(cudaGetLastError() == c.want);
        CHECK(cudaGetLastError() == cudaSuccess);  // a refused launch is not sticky
        CHECK_INT(expect_fault(e, c.want, c.text), 0);
    }
    from_device(&h, d, 1);
    CHECK_INT(h, -1);  // no refused launch ran (device memory starts as 0xff bytes)
    CHECK(TRY_LAUNCH(touch_kernel, 1, dim3(16, 16, 4), 48 * 1024, d) == cudaSuccess);  // the limits themselves
    from_device(&h, d, 1);
    CHECK_INT(h, 1);

    // Above 48 KiB with the attribute, up to sm_90's 227 KiB.
    unsigned char *o, ho;
    cuda_check(cudaMalloc(&o, 1));
    int bytes = 200 * 1024;
    CHECK_INT(expect_fault(TRY_LAUNCH(big_shared_kernel, 1, 32, (size_t)bytes, o, bytes), cudaErrorInvalidValue,
                           "more than the 49152 allowed"),
              0);
    CHECK(cudaFuncSetAttribute(big_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) == cudaSuccess);
    CHECK(TRY_LAUNCH(big_shared_kernel, 1, 32, (size_t)bytes, o, bytes) == cudaSuccess);
    from_device(&ho, o, 1);
    CHECK_INT(ho, 3);
    CHECK_INT(expect_fault(QUIETLY(cudaFuncSetAttribute(big_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                        227 * 1024 + 1)),
                           cudaErrorInvalidValue, "more than the 232448"),
              0);
    cuda_check(cudaFree(o));
    cuda_check(cudaFree(d));
}

TEST(host_pointer_kernel_argument_is_a_sticky_fault) {
    int host[4] = {0, 0, 0, 0};
    CHECK_INT(expect_fault(TRY_LAUNCH(touch_kernel, 1, 32, 0, host), cudaErrorLaunchFailure,
                           "neither device memory (inside a cudaMalloc allocation) nor pinned host memory"),
              0);
    CHECK(host[0] == 0);
    // Sticky until cleared, as on a GPU.
    CHECK(TRY_LAUNCH(touch_kernel, 1, 32, 0, host) == cudaErrorLaunchFailure);
    int *d = nullptr;
    CHECK(cudaMalloc(&d, 4) == cudaErrorLaunchFailure);
    CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
    cuda_host_clear_fault();
    CHECK(cudaMalloc(&d, 4) == cudaSuccess);
    cuda_check(cudaFree(d));
}

TEST(memcpy_and_free_are_checked) {
    int *d, h[8] = {0};
    cuda_check(cudaMalloc(&d, 8 * sizeof(int)));
    CHECK_INT(expect_fault(QUIETLY(cudaMemcpy(d, h, sizeof(h), cudaMemcpyDeviceToHost)), cudaErrorInvalidValue,
                           "destination"),
              0);
    CHECK_INT(expect_fault(QUIETLY(cudaMemcpy(h, d, sizeof(h) + 4, cudaMemcpyDeviceToHost)), cudaErrorInvalidValue,
                           "runs past the end of the source allocation"),
              0);
    CHECK_INT(expect_fault(QUIETLY(cudaMemcpy(d + 1, h, sizeof(h), cudaMemcpyHostToDevice)), cudaErrorInvalidValue,
                           "runs past the end of the destination allocation"),
              0);
    CHECK_INT(expect_fault(QUIETLY(cudaFree(h)), cudaErrorInvalidDevicePointer, "not a pointer cudaMalloc returned"), 0);
    cudaStream_t s = nullptr;
    cuda_check(cudaStreamCreate(&s));
    CHECK(cudaMemcpyAsync(d, h, sizeof(h), cudaMemcpyHostToDevice, s) == cudaSuccess);
    cuda_check(cudaStreamSynchronize(s));
    cuda_check(cudaStreamDestroy(s));
    CHECK_INT(expect_fault(QUIETLY(cudaStreamSynchronize(s)), cudaErrorInvalidResourceHandle, "unknown stream"), 0);
    cuda_check(cudaFree(d));
}

// ---------------------------------------------------------------------------------------
// Device memory as a driver plans it, pinned host memory

static const int listed_alloc_line = __LINE__ + 3;
static void list_one_allocation(void) {
    void *p;
    cuda_check(cudaMalloc(&p, 1234));
    cuda_host_print_allocations();
}

TEST(device_memory_is_accounted) {
    CudaHostMemoryStats before, now;
    cuda_host_memory_stats(&before);
    size_t free0, free1, total;
    cuda_check(cudaMemGetInfo(&free0, &total));
    CHECK(total > 79ull << 30 && total <= 80ull << 30);  // the H100's
    CHECK_INT(total - free0, before.device_live_bytes);
    cuda_host_reset_peak_memory();
    void *a, *b;
    cuda_check(cudaMalloc(&a, 1000));
    cuda_check(cudaMalloc(&b, 3000));
    CHECK_INT((uintptr_t)a % 256, 0);  // cudaMalloc's alignment
    cuda_host_memory_stats(&now);
    CHECK_INT(now.device_live_bytes, before.device_live_bytes + 4000);
    CHECK_INT(now.device_live_allocations, before.device_live_allocations + 2);
    CHECK_INT(now.device_allocations, before.device_allocations + 2);
    cuda_check(cudaMemGetInfo(&free1, &total));
    CHECK_INT(free0 - free1, 4000);
    cuda_check(cudaFree(a));
    cuda_host_memory_stats(&now);
    CHECK_INT(now.device_live_bytes, before.device_live_bytes + 3000);
    CHECK_INT(now.device_peak_bytes, before.device_live_bytes + 4000);  // the peak stays
    cuda_host_reset_peak_memory();
    cuda_host_memory_stats(&now);
    CHECK_INT(now.device_peak_bytes, now.device_live_bytes);
    cuda_check(cudaFree(b));
    CHECK_INT(expect_fault(QUIETLY(cudaMemGetInfo(NULL, &total)), cudaErrorInvalidValue, "null result pointer"), 0);
    // the listing gives each live allocation's size and the line that made it
    char report[4096];
    CHECK_INT(run_in_child(list_one_allocation, report, sizeof(report)), 0);
    CHECK(strstr(report, ": 1234 bytes at ") && names_line(report, listed_alloc_line));
}

static const int pinned_read_line = __LINE__ + 1;
static float read_first(const float *p) { return p[0]; }
static const int pinned_write_line = __LINE__ + 1;
static void write_first(float *p, float v) { p[0] = v; }

TEST(pinned_host_memory_is_host_memory_the_device_can_address) {
    const int n = 64;
    float *pinned, *mapped, *dev, h[n];
    CudaHostMemoryStats before, now;
    cuda_host_memory_stats(&before);
    cuda_check(cudaMallocHost(&pinned, n * sizeof(float)));
    cuda_check(cudaHostAlloc(&mapped, n * sizeof(float), cudaHostAllocMapped | cudaHostAllocPortable));
    cuda_host_memory_stats(&now);
    CHECK_INT(now.pinned_live_bytes, before.pinned_live_bytes + 2 * n * sizeof(float));
    CHECK_INT(now.device_live_bytes, before.device_live_bytes);
    CHECK(!cuda_host_is_device(pinned, 4));
    for (int i = 0; i < n; i++) pinned[i] = (float)i;
    cuda_check(cudaMalloc(&dev, n * sizeof(float)));
    cuda_check(cudaMemcpy(dev, pinned, n * sizeof(float), cudaMemcpyHostToDevice));  // pinned memory is host memory
    CHECK_INT(expect_fault(QUIETLY(cudaMemcpy(dev, pinned, n * sizeof(float), cudaMemcpyDeviceToDevice)),
                           cudaErrorInvalidValue, "is host memory"),
              0);
    // a kernel may address it (unified addressing)
    LAUNCH(copy_kernel, 1, 64, 0, 0, mapped, dev, n);
    cuda_check(cudaDeviceSynchronize());
    int bad = 0;
    for (int i = 0; i < n; i++) bad += mapped[i] != (float)i;
    CHECK_INT(bad, 0);
    // each kind is freed by its own call
    CHECK_INT(expect_fault(QUIETLY(cudaFree(pinned)), cudaErrorInvalidDevicePointer, "not a pointer cudaMalloc returned"),
              0);
    CHECK_INT(expect_fault(QUIETLY(cudaFreeHost(dev)), cudaErrorInvalidValue, "not a pointer cudaMallocHost"), 0);
    float *other;
    CHECK_INT(expect_fault(QUIETLY(cudaHostAlloc(&other, 4, 0x40)), cudaErrorInvalidValue, "not emulated"), 0);

    // Copies into and out of pinned memory run when the stream does: the host reading the
    // destination (or writing the source) before it synchronises is reported (this file is
    // instrumented as kernels are).
    cudaStream_t s;
    cuda_check(cudaStreamCreate(&s));
    for (int i = 0; i < n; i++) h[i] = 7.0f;
    cuda_check(cudaMemcpy(dev, h, n * sizeof(float), cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpyAsync(pinned, dev, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    CHECK(QUIETLY(read_first(pinned)) == 0.0f);  // not copied yet
    CHECK_INT(expect_report(QUIETLY(cudaStreamSynchronize(s)), cudaErrorLaunchFailure,
                            "host code reads 4 bytes of pinned host allocation", pinned_read_line, 0),
              0);
    // (the fault dropped the queued work, as a GPU's lost context would: copy again)
    cuda_check(cudaMemcpy(dev, h, n * sizeof(float), cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpyAsync(pinned, dev, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    cuda_check(cudaStreamSynchronize(s));
    CHECK(read_first(pinned) == 7.0f);  // ordered now: no report
    cuda_check(cudaMemcpyAsync(dev, pinned, n * sizeof(float), cudaMemcpyHostToDevice, s));
    QUIETLY((write_first(pinned, 1.0f), 0));
    CHECK_INT(expect_report(QUIETLY(cudaDeviceSynchronize()), cudaErrorLaunchFailure,
                            "host code writes 4 bytes of pinned host allocation", pinned_write_line, 0),
              0);
    // a pageable destination makes the copy wait for itself: no synchronisation needed
    cuda_check(cudaMemcpyAsync(h, dev, sizeof(float), cudaMemcpyDeviceToHost, s));
    CHECK(h[0] == 7.0f);
    cuda_check(cudaStreamDestroy(s));
    cuda_check(cudaFreeHost(pinned));
    cuda_check(cudaFreeHost(mapped));
    cuda_check(cudaFree(dev));
    cuda_host_memory_stats(&now);
    CHECK_INT(now.pinned_live_bytes, before.pinned_live_bytes);
}

// ---------------------------------------------------------------------------------------
// Streams: the orders CUDA promises, and no other

TEST(streams_order_what_cuda_orders) {
    const uint64_t saved_seed = cuda_host_seed();
    const int n = 64;
    float *a, *b, h[n];
    cudaStream_t blocking, nb1, nb2;
    cuda_check(cudaMalloc(&a, n * sizeof(float)));
    cuda_check(cudaMalloc(&b, n * sizeof(float)));
    cuda_check(cudaStreamCreateWithFlags(&blocking, cudaStreamDefault));
    cuda_check(cudaStreamCreateWithFlags(&nb1, cudaStreamNonBlocking));
    cuda_check(cudaStreamCreateWithFlags(&nb2, cudaStreamNonBlocking));
    for (uint64_t seed = 0; seed < 4; seed++) {
        cuda_host_set_seed(seed);
        float v = 10.0f + (float)seed;
        // the legacy default stream (cudaMemcpy's) waits for a blocking stream's work...
        LAUNCH(fill_kernel, 1, 32, 0, blocking, a, n, v);
        from_device(h, a, n);
        CHECK(h[0] == v && h[n - 1] == v);
        // ...and a blocking stream for the legacy stream's
        LAUNCH(fill_kernel, 1, 32, 0, 0, a, n, v + 1);
        LAUNCH(copy_kernel, 1, 32, 0, blocking, b, a, n);
        from_device(h, b, n);
        CHECK(h[0] == v + 1 && h[n - 1] == v + 1);
        // what the host waited for is ordered before what it queues next
        LAUNCH(fill_kernel, 1, 32, 0, nb1, a, n, v + 2);
        cuda_check(cudaStreamSynchronize(nb1));
        LAUNCH(copy_kernel, 1, 32, 0, nb2, b, a, n);
        cuda_check(cudaStreamSynchronize(nb2));
        from_device(h, b, n);
        CHECK(h[0] == v + 2);
        // but nothing waits for a non-blocking stream: cudaMemcpy reads what it writes (the
        // report comes from whichever of the two runs second: at the latest at the end)
        LAUNCH(fill_kernel, 1, 32, 0, nb1, a, n, v + 3);
        QUIETLY(cudaMemcpy(h, a, n * sizeof(float), cudaMemcpyDeviceToHost));
        CHECK_INT(expect_race(QUIETLY(cudaDeviceSynchronize()), fill_line, 0,
                              "no event (cudaEventRecord, cudaStreamWaitEvent) or synchronisation"),
                  0);
        cuda_check(cudaDeviceSynchronize());  // (the host after everything again)
        // cudaMemcpy from pageable memory returns once the source is staged: a non-blocking
        // stream must still wait for the copy before reading its destination
        for (int i = 0; i < n; i++) h[i] = v;
        cuda_check(cudaMemcpy(a, h, n * sizeof(float), cudaMemcpyHostToDevice));
        LAUNCH(copy_kernel, 1, 32, 0, nb1, b, a, n);
        CHECK_INT(expect_race(QUIETLY(cudaDeviceSynchronize()), copy_line, 0, "no event"), 0);
        cuda_check(cudaDeviceSynchronize());
    }
    // a stream destroyed with work queued still runs it
    cudaStream_t gone;
    cuda_check(cudaStreamCreate(&gone));
    LAUNCH(fill_kernel, 1, 32, 0, gone, a, n, 99.0f);
    cuda_check(cudaStreamDestroy(gone));
    from_device(h, a, n);
    CHECK(h[0] == 99.0f);
    // a query runs the stream's work a step at a time until it is done
    for (int k = 0; k < 3; k++) LAUNCH(fill_kernel, 1, 32, 0, nb1, a, n, (float)k);
    int polls = 0;
    cudaError_t q;
    while ((q = cudaStreamQuery(nb1)) == cudaErrorNotReady) polls++;
    CHECK_INT(q, cudaSuccess);
    CHECK(polls >= 2);
    // what is not emulated is refused
    CHECK_INT(expect_fault(QUIETLY(cudaStreamSynchronize(cudaStreamPerThread)), cudaErrorNotSupported,
                           "legacy default stream only"),
              0);
    cudaStream_t bad;
    CHECK_INT(expect_fault(QUIETLY(cudaStreamCreateWithFlags(&bad, 0x4)), cudaErrorInvalidValue, "not emulated"), 0);
    cuda_check(cudaStreamSynchronize(cudaStreamLegacy));
    cuda_host_set_seed(saved_seed);
    cuda_check(cudaStreamDestroy(blocking));
    cuda_check(cudaStreamDestroy(nb1));
    cuda_check(cudaStreamDestroy(nb2));
    cuda_check(cudaFree(a));
    cuda_check(cudaFree(b));
}

// ---------------------------------------------------------------------------------------
// Memory starts as garbage

__global__ void read_uninitialised_kernel(unsigned *out) {
    __shared__ unsigned st[4];
    DYNAMIC_SHARED(unsigned, dyn);
    out[2 * blockIdx.x] = st[1];
    out[2 * blockIdx.x + 1] = dyn[1];
    st[1] = 7;  // the next block must not see these
    dyn[1] = 7;
}

TEST(shared_and_device_memory_start_poisoned) {
    unsigned *d, h[6];
    cuda_check(cudaMalloc(&d, sizeof(h)));
    from_device(h, d, 6);
    for (int k = 0; k < 6; k++) CHECK_INT(h[k], 0xffffffffu);  // cudaMalloc
    LAUNCH(read_uninitialised_kernel, 3, 1, 4 * sizeof(unsigned), 0, d);
    from_device(h, d, 6);
    for (int k = 0; k < 6; k++) CHECK_INT(h[k], 0xffffffffu);  // every block's shared memory
    cuda_check(cudaFree(d));
}

// ---------------------------------------------------------------------------------------
// Out-of-bounds accesses, reported by AddressSanitizer (in a child process: the report
// ends the process)

__global__ void dynamic_shared_overrun_kernel(float *out) {
    DYNAMIC_SHARED(float, s);
    s[threadIdx.x] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x + 1];  // thread 31 reads s[32]: one past the 32 floats
}

// Through pointers the compiler cannot follow, as kernels address tiles: UBSan's bounds
// and object-size checks, which also stop an out-of-range index into a named array, cannot
// see these, so the reports must come from AddressSanitizer's redzones.
__device__ float *opaque(float *p) {
    __asm__ __volatile__("" : "+r"(p));
    return p;
}

__global__ void static_shared_overrun_kernel(float *out) {
    __shared__ float s[32];
    float *p = opaque(s) + threadIdx.x;
    p[1] = 1.0f;  // thread 31 writes s[32]
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x];
}

__global__ void local_array_overrun_kernel(float *out, int extra) {
    float local[4] = {1, 2, 3, 4};
    const float *p = opaque(local) + threadIdx.x % 4;
    __syncthreads();  // the overrun happens after a fiber switch, with other stacks in between
    out[threadIdx.x] = p[extra];  // thread 3 reads local[4]
}

__global__ void global_overrun_kernel(float *out, int n) { out[n + threadIdx.x] = 1.0f; }

static void dynamic_overrun(void) {
    float *d;
    cuda_check(cudaMalloc(&d, 32 * sizeof(float)));
    LAUNCH(dynamic_shared_overrun_kernel, 1, 32, 32 * sizeof(float), 0, d);
    cuda_check(cudaDeviceSynchronize());
}
static void static_overrun(void) {
    float *d;
    cuda_check(cudaMalloc(&d, 32 * sizeof(float)));
    LAUNCH(static_shared_overrun_kernel, 1, 32, 0, 0, d);
    cuda_check(cudaDeviceSynchronize());
}
static void local_overrun(void) {
    float *d;
    cuda_check(cudaMalloc(&d, 32 * sizeof(float)));
    LAUNCH(local_array_overrun_kernel, 1, 32, 0, 0, d, 1);
    cuda_check(cudaDeviceSynchronize());
}
static void global_overrun(void) {
    float *d;
    cuda_check(cudaMalloc(&d, 31 * sizeof(float)));
    LAUNCH(global_overrun_kernel, 1, 1, 0, 0, d, 31);
    cuda_check(cudaDeviceSynchronize());
}

static int sanitizer_reports(void (*fn)(void), const char *kind) {
    char report[8192];
    int status = run_in_child(fn, report, sizeof(report));
    if (status != 0 && strstr(report, kind) && strstr(report, "_kernel")) return 0;
    printf("  child exit status %d, wanted an AddressSanitizer \"%s\" report in a kernel; stderr:\n%.600s\n", status,
           kind, report);
    return 1;
}

// (Only the sanitizer build, build/san/, which `make test` runs, can pass this.)
TEST(out_of_bounds_accesses_are_reported) {
    CHECK_INT(sanitizer_reports(dynamic_overrun, "heap-buffer-overflow"), 0);
    CHECK_INT(sanitizer_reports(static_overrun, "global-buffer-overflow"), 0);
    CHECK_INT(sanitizer_reports(local_overrun, "stack-buffer-overflow"), 0);
    CHECK_INT(sanitizer_reports(global_overrun, "use-after-poison"), 0);  // device memory: the harness's poison
}

// ---------------------------------------------------------------------------------------
// Math intrinsics: the exact functions (the GPU's differ in the last bits)

TEST(math_intrinsics) {
    CHECK(rsqrtf(4.0f) == 0.5f);
    CHECK(__expf(0.0f) == 1.0f);
    CHECK(fabsf(__expf(1.0f) - 2.7182817f) < 1e-6f);
    CHECK(__fdividef(1.0f, 4.0f) == 0.25f);
    // (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24: the rounded product drops 2^-24 (a tie, to even),
    // so the two-step product and sum differ from the fused one
    float a = 1.0f + 0x1p-12f;
    CHECK(__fadd_rn(__fmul_rn(a, a), -1.0f) == 0x1p-11f);
    CHECK(__fmaf_rn(a, a, -1.0f) == 0x1p-11f + 0x1p-24f);
    CHECK(__saturatef(1.5f) == 1.0f && __saturatef(-2.0f) == 0.0f && __saturatef(NAN) == 0.0f);
    CHECK_INT(__float_as_uint(1.0f), 0x3f800000u);
    CHECK(__uint_as_float(0x40490fdbu) == 3.14159274f);
    CHECK_INT(__popc(0xf0f0u), 8);
    CHECK_INT(__brev(1u), 0x80000000u);
    CHECK_INT(__clz(1), 31);
    CHECK_INT(__clz(0), 32);
    CHECK_INT(__ffs(0x50), 5);
    CHECK_INT(min(3, -4), -4);
    CHECK_INT(max(3u, 7u), 7);
    CHECK(min(2.5f, 1.5f) == 1.5f);
}

// ---------------------------------------------------------------------------------------
// Events, stream waits and the device's properties

// 20 ms of "work" (a harness-only kernel: a GPU has no nanosleep of the host's).
__global__ void sleep_kernel(int *out) {
    struct timespec pause = {0, 20 * 1000 * 1000};
    nanosleep(&pause, NULL);
    out[0] = 1;
}

TEST(events_time_the_work_between_records) {
    cudaEvent_t start, stop, untimed;
    int *d;
    cuda_check(cudaMalloc(&d, sizeof(int)));
    cudaStream_t stream;
    cuda_check(cudaEventCreate(&start));
    cuda_check(cudaEventCreate(&stop));
    cuda_check(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming));
    cuda_check(cudaStreamCreate(&stream));
    float ms = -1;
    // never recorded: the toolkit's documented error
    CHECK_INT(expect_fault(QUIETLY(cudaEventElapsedTime(&ms, start, stop)), cudaErrorInvalidResourceHandle,
                           "never recorded"), 0);
    // The records are stamped when they run, so the time between them is the work's, not
    // the host's: the host sleeps 30 ms after queueing, which does not count.
    cuda_check(cudaEventRecord(start));
    LAUNCH(sleep_kernel, 1, 1, 0, 0, d);
    cuda_check(cudaEventRecord(stop, stream));  // (a blocking stream: after the kernel on stream 0)
    CHECK_INT(expect_fault(QUIETLY(cudaEventElapsedTime(&ms, start, stop)), cudaErrorNotReady, "not completed"), 0);
    struct timespec pause = {0, 30 * 1000 * 1000};
    nanosleep(&pause, NULL);
    cuda_check(cudaEventSynchronize(stop));
    CHECK_INT(cudaEventQuery(stop), cudaSuccess);
    cuda_check(cudaEventElapsedTime(&ms, start, stop));
    CHECK(ms >= 20.0f && ms < 30.0f + 20.0f);
    // an event made without timing cannot be timed, but can be waited on
    cuda_check(cudaEventRecord(untimed, stream));
    CHECK_INT(expect_fault(QUIETLY(cudaEventElapsedTime(&ms, start, untimed)), cudaErrorInvalidResourceHandle,
                           "cudaEventDisableTiming"), 0);
    CHECK_INT(cudaStreamWaitEvent(stream, untimed, 0), cudaSuccess);
    CHECK_INT(cudaStreamWaitEvent(0, stop), cudaSuccess);
    cuda_check(cudaEventDestroy(untimed));
    // handles that are gone or were never made
    CHECK_INT(expect_fault(QUIETLY(cudaStreamWaitEvent(stream, untimed, 0)), cudaErrorInvalidResourceHandle,
                           "unknown event"), 0);
    CHECK_INT(expect_fault(QUIETLY(cudaEventDestroy(untimed)), cudaErrorInvalidResourceHandle, "unknown event"), 0);
    CHECK_INT(expect_fault(QUIETLY(cudaEventRecord(start, (cudaStream_t)&ms)), cudaErrorInvalidResourceHandle,
                           "unknown stream"), 0);
    CHECK_INT(expect_fault(QUIETLY(cudaEventCreateWithFlags(&untimed, 0x80)), cudaErrorInvalidValue, "not emulated"),
              0);
    cuda_check(cudaEventDestroy(start));
    cuda_check(cudaEventDestroy(stop));
    cuda_check(cudaStreamDestroy(stream));
    cuda_check(cudaFree(d));
}

// What NVIDIA publishes for the H100 SXM5 80GB and CUDA's sm_90 limits, written out here.
TEST(device_properties_describe_an_h100) {
    cudaDeviceProp p;
    cuda_check(cudaGetDeviceProperties(&p, 0));
    CHECK_STR(p.name, "NVIDIA H100 80GB HBM3");
    CHECK_INT(p.major, 9);
    CHECK_INT(p.minor, 0);
    CHECK_INT(p.multiProcessorCount, 132);
    CHECK_INT(p.warpSize, 32);
    CHECK_INT(p.maxThreadsPerBlock, 1024);
    CHECK_INT(p.maxThreadsPerMultiProcessor, 2048);
    CHECK_INT(p.maxThreadsDim[2], 64);
    CHECK_INT(p.maxGridSize[0], 2147483647);
    CHECK_INT(p.sharedMemPerBlock, 48 * 1024);
    CHECK_INT(p.sharedMemPerBlockOptin, 227 * 1024);
    CHECK_INT(p.sharedMemPerMultiprocessor, 228 * 1024);
    CHECK_INT(p.regsPerMultiprocessor, 65536);
    CHECK_INT(p.l2CacheSize, 50 * 1024 * 1024);
    CHECK(p.totalGlobalMem > 79ull << 30 && p.totalGlobalMem <= 80ull << 30);
    // the attributes say the same, and the DRAM peak the benches compute from them is the
    // datasheet's 3.35 TB/s
    int v = 0, mem_khz = 0, bus = 0;
    cuda_check(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 0));
    CHECK_INT(v, 132);
    cuda_check(cudaDeviceGetAttribute(&v, cudaDevAttrL2CacheSize, 0));
    CHECK_INT(v, 50 * 1024 * 1024);
    cuda_check(cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, 0));
    cuda_check(cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, 0));
    CHECK_INT(bus, 5120);
    double dram_peak = 2.0 * mem_khz * 1e3 * bus / 8;
    CHECK(fabs(dram_peak - 3.35e12) < 0.01 * 3.35e12);
    cuda_check(cudaDeviceGetAttribute(&v, cudaDevAttrClockRate, 0));
    CHECK_INT(v, 1980000);
    CHECK_INT(expect_fault(QUIETLY(cudaGetDeviceProperties(&p, 1)), cudaErrorInvalidDevice, "device 1"), 0);
}

// cudaMemGetInfo sees the allocations, the peak is the most ever live at once, pinned
// host memory is host memory that only cudaFreeHost frees, and CUDA_HOST_NO_DEVICE makes
// a machine without a GPU.
TEST(memory_accounting_and_pinned_memory) {
    size_t free0, total, free1, peak0 = cuda_host_peak_allocated();
    cuda_check(cudaMemGetInfo(&free0, &total));
    CHECK(total > 79ull << 30 && total <= 80ull << 30);
    void *a, *b, *h;
    cuda_check(cudaMalloc(&a, 1000));
    cuda_check(cudaMalloc(&b, 3000));
    cuda_check(cudaMemGetInfo(&free1, &total));
    CHECK_INT(free0 - free1, 4000);
    CHECK(cuda_host_peak_allocated() >= peak0 && cuda_host_peak_allocated() >= total - free1);
    size_t peak_with_both = cuda_host_peak_allocated();
    cuda_check(cudaFree(a));
    cuda_check(cudaMalloc(&a, 500));  // less than before: the peak stays
    CHECK_INT(cuda_host_peak_allocated(), peak_with_both);
    cuda_check(cudaFree(a));
    cuda_check(cudaFree(b));
    cuda_check(cudaMemGetInfo(&free1, &total));
    CHECK_INT(free1, free0);
    CHECK_INT(QUIETLY(cudaMalloc(&a, total + 1)), cudaErrorMemoryAllocation);
    cuda_host_clear_fault();
    cuda_check(cudaMallocHost(&h, 64));
    CHECK(!cuda_host_is_device(h, 64));
    memset(h, 1, 64);
    CHECK_INT(QUIETLY(cudaFreeHost((char *)h + 8)), cudaErrorInvalidValue);
    cuda_host_clear_fault();
    cuda_check(cudaFreeHost(h));
    int count = -1;
    setenv("CUDA_HOST_NO_DEVICE", "1", 1);
    CHECK_INT(cudaGetDeviceCount(&count), cudaErrorNoDevice);
    CHECK_INT(count, 0);
    CHECK_INT(cudaGetLastError(), cudaErrorNoDevice);
    unsetenv("CUDA_HOST_NO_DEVICE");
    cuda_check(cudaGetDeviceCount(&count));
    CHECK_INT(count, 1);
}

int main(void) {
    RUN(barriers_order_shared_memory);
    RUN(builtins_cover_a_3d_grid);
    RUN(syncthreads_count_and_or);
    RUN(shuffles_known_answers);
    RUN(shuffles_move_doubles_and_bf16);
    RUN(shuffle_from_outside_the_mask_is_garbage);
    RUN(votes_known_answers);
    RUN(syncwarp_orders_a_warp);
    RUN(atomics_known_answers);
    RUN(missing_syncthreads_is_caught);
    RUN(block_sum_without_its_barrier_is_caught);
    RUN(correct_kernel_is_schedule_independent);
    RUN(barrier_divergence_is_reported);
    RUN(warp_operations_that_cannot_meet_are_reported);
    RUN(write_after_read_across_warps_far_apart_is_reported);
    RUN(missing_syncwarp_before_ldmatrix_is_reported);
    RUN(divergent_mma_sync_sites_are_reported);
    RUN(launches_over_launch_bounds_are_refused);
    RUN(cp_async_source_overwritten_before_its_wait_is_reported);
    RUN(a_stream_reading_another_streams_writes_without_an_event_is_reported);
    RUN(blocks_incrementing_one_counter_without_an_atomic_are_reported);
    RUN(blocks_of_one_launch_interleave_at_barriers);
    RUN(launch_configurations_a_gpu_refuses);
    RUN(host_pointer_kernel_argument_is_a_sticky_fault);
    RUN(memcpy_and_free_are_checked);
    RUN(device_memory_is_accounted);
    RUN(pinned_host_memory_is_host_memory_the_device_can_address);
    RUN(streams_order_what_cuda_orders);
    RUN(shared_and_device_memory_start_poisoned);
    RUN(out_of_bounds_accesses_are_reported);
    RUN(math_intrinsics);
    RUN(events_time_the_work_between_records);
    RUN(device_properties_describe_an_h100);
    RUN(memory_accounting_and_pinned_memory);
    return test_summary();
}
