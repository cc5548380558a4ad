// test_cuda_mutants.cpp: the harness catches what a GPU would punish in the shipped kernels.
//
// Each of the three tile kernels of kernels/attention.cuh ends its loop with a
// __syncthreads that keeps the next iteration's cp.async from refilling a shared buffer
// that slower warps are still reading. The Makefile makes three copies of the header, each
// without one of those barriers (test/cuda_host/drop_last_barrier.awk; the copies keep the
// header's file name and line numbers), each in a namespace of its own. Every copy must be
// reported as a race under every schedule, naming the kernel and attention.cuh lines, while
// the two kernels each copy leaves intact run clean (the real kernels' tests are in
// test_cuda_attention, under every seed).
#include "../kernels/common.cuh"
#include "../kernels/ptx.cuh"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

#include <math.h>
#include <stdint.h>

extern "C" {
#include "../common/half.h"
#include "../common/util.h"
}

// (each copy brings the header's error-bound helpers, which only test_cuda_attention uses)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "../build/mutants/attention_no_forward_barrier.cuh"
#include "../build/mutants/attention_no_dkdv_barrier.cuh"
#include "../build/mutants/attention_no_dq_barrier.cuh"
#pragma GCC diagnostic pop

// One head of queries over one KV head, T = 128: the forward and dQ kernels walk 4 key
// tiles of 32 and the dK/dV kernel 4 query tiles of 32, so every double buffer is refilled
// while the loop runs (what the removed barriers protect).
static const int kT = 128, kH = 1, kD = 64;

struct Inputs {
    __nv_bfloat16 *q, *k, *v, *dout, *out, *dq, *dk, *dv;
    float *lse, *delta;
};

static __nv_bfloat16 *device_random(uint64_t *rng, size_t n) {
    uint16_t *bits = (uint16_t *)xmalloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) bits[i] = f32_to_bf16((float)(2 * rng_uniform(rng) - 1));
    __nv_bfloat16 *d;
    cuda_check(cudaMalloc(&d, n * sizeof(uint16_t)));
    cuda_check(cudaMemcpy(d, bits, n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    free(bits);
    return d;
}

static Inputs inputs_create(void) {
    Inputs in;
    uint64_t rng = 42;
    size_t n = (size_t)kT * kH * kD;
    in.q = device_random(&rng, n), in.k = device_random(&rng, n), in.v = device_random(&rng, n);
    in.dout = device_random(&rng, n);
    __nv_bfloat16 **outs[] = {&in.out, &in.dq, &in.dk, &in.dv};
    for (__nv_bfloat16 **o : outs) cuda_check(cudaMalloc(o, n * sizeof(uint16_t)));
    cuda_check(cudaMalloc(&in.lse, (size_t)kT * kH * sizeof(float)));
    cuda_check(cudaMalloc(&in.delta, (size_t)kT * kH * sizeof(float)));
    return in;
}

static void inputs_free(Inputs *in) {
    void *all[] = {in->q, in->k, in->v, in->dout, in->out, in->dq, in->dk, in->dv, in->lse, in->delta};
    for (void *p : all) cuda_check(cudaFree(p));
}

// The forward or backward of one copy, waited for: its status.
#define RUN_FORWARD(space, in)                                                                                  \
    (space::attention_forward((in).out, (in).lse, (in).q, (in).k, (in).v, NULL, kT, kH, kH, kD, 0, NULL, 0), \
     QUIETLY(cudaDeviceSynchronize()))
#define RUN_BACKWARD(space, in)                                                                                \
    (space::attention_backward((in).dq, (in).dk, (in).dv, (in).delta, (in).q, (in).k, (in).v, (in).out,     \
                               (in).dout, (in).lse, NULL, kT, kH, kH, kD, 0, NULL, 0),                        \
     QUIETLY(cudaDeviceSynchronize()))

// A race report from `kernel` (the copy's faulting kernel), pointing into attention.cuh.
static int expect_race_in(cudaError_t e, const char *kernel) {
    int bad = 0;
    const char *msg = cuda_host_fault();
    char want[128];
    snprintf(want, sizeof(want), "kernel %s<D>", kernel);
    if (e != cudaErrorLaunchFailure) printf("  returned %s, expected a launch failure\n", cudaGetErrorName(e)), bad++;
    if (!msg || !strstr(msg, "race") || !strstr(msg, want) || !strstr(msg, "kernels/attention.cuh:")) {
        printf("  fault message \"%s\" is not a race in %s at kernels/attention.cuh lines\n", msg ? msg : "(none)",
               kernel);
        bad++;
    }
    cuda_host_clear_fault();
    return bad;
}

TEST(attention_without_an_end_of_loop_barrier_is_reported) {
    const uint64_t saved_seed = cuda_host_seed();
    Inputs in = inputs_create();
    for (uint64_t seed = 0; seed < 3; seed++) {  // the order a reader imagines (0) too
        cuda_host_set_seed(seed);
        CHECK_INT(expect_race_in(RUN_FORWARD(attention_no_forward_barrier, in), "attention_forward_kernel"), 0);
        // the backward copies get a clean forward's lse first (their own forward is intact)
        CHECK_INT(RUN_FORWARD(attention_no_dkdv_barrier, in), cudaSuccess);
        CHECK_INT(expect_race_in(RUN_BACKWARD(attention_no_dkdv_barrier, in), "attention_dkdv_kernel"), 0);
        CHECK_INT(RUN_FORWARD(attention_no_dq_barrier, in), cudaSuccess);
        CHECK_INT(expect_race_in(RUN_BACKWARD(attention_no_dq_barrier, in), "attention_dq_kernel"), 0);
    }
    cuda_host_set_seed(saved_seed);
    inputs_free(&in);
}

// The kernels each copy left intact: no report under any of these schedules, and the same
// bits every time (the kernels have no atomics).
TEST(the_intact_kernels_of_each_copy_run_clean) {
    const uint64_t saved_seed = cuda_host_seed();
    Inputs in = inputs_create();
    size_t n = (size_t)kT * kH * kD;
    uint16_t *first = (uint16_t *)xmalloc(4 * n * sizeof(uint16_t)), *now = (uint16_t *)xmalloc(4 * n * sizeof(uint16_t));
    for (uint64_t seed = 1; seed <= 4; seed++) {
        cuda_host_set_seed(seed * 7919);
        CHECK_INT(RUN_FORWARD(attention_no_dq_barrier, in), cudaSuccess);
        CHECK_INT(RUN_BACKWARD(attention_no_forward_barrier, in), cudaSuccess);
        const __nv_bfloat16 *outs[] = {in.out, in.dq, in.dk, in.dv};
        for (int i = 0; i < 4; i++)
            cuda_check(cudaMemcpy(now + i * n, outs[i], n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
        if (seed == 1) memcpy(first, now, 4 * n * sizeof(uint16_t));
        CHECK(memcmp(first, now, 4 * n * sizeof(uint16_t)) == 0);
    }
    free(first), free(now);
    cuda_host_set_seed(saved_seed);
    inputs_free(&in);
}

int main(void) {
    RUN(attention_without_an_end_of_loop_barrier_is_reported);
    RUN(the_intact_kernels_of_each_copy_run_clean);
    return test_summary();
}
