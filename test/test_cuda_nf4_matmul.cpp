// test_cuda_nf4_matmul.cpp: the NF4 matrix product for small M (kernels/nf4_matmul.cuh) and
// its dispatcher nf4_linear, in the CUDA-on-CPU harness.
//
// Reference: train/nf4.c quantizes random weights (bit-exact with bitsandbytes 0.50.2,
// test_nf4.c) and dequantizes them to float32; each weight rounded to bf16 (as the GPU
// computes with it, and as nf4_dequantize writes it) and the bf16 X are multiplied by the
// CPU model's SGEMM (train/matmul.c), and once more with |X| and |W| for Σ|x·w|.
// Tolerance per output, from bf16 rounding: the kernel sums exact bf16 products in fp32, so
// its bound against the exact sum is matmul.cuh's matmul_tolerance (2^-8·|y| for the bf16
// output plus 4(K + 2)·2^-24·Σ|x·w| for the fp32 sums, truncating tensor cores included);
// the SGEMM's own fp32 sum adds at most K·2^-24·Σ|x·w| (Higham §4.2), so the test allows
// both. A weight off by one bf16 ulp, a wrong code, a wrong absmax or a permuted k shows as
// an error of the size of the terms, far outside.
// 1. M = 1, 3, 16, 17, 64 (each n8-tile count, partial tiles) over N, K with N = 1, odd N,
//    K = 48 (tiny models: not a multiple of 32, 64-value NF4 blocks and 32-code chunks that
//    cross rows: the value-by-value path), K = 96 (blocks cross rows, 16-byte path), K with
//    a partial last segment, blocksizes 32..256, one K split and several (the partials and
//    their ordered sum), X misaligned by 2 bytes (the value-by-value path again).
// 2. Nearly every output equals the exact sum rounded to bf16 (the fp32 error is ~1e-6 of
//    the sum; a bias far below the bound above, e.g. weights rounded toward zero, fails it).
// 3. nf4_linear: the fused kernel up to NF4_LINEAR_FUSED_MAX_M rows (its weight buffer is
//    left alone), dequantize + cuBLASLt above (the buffer then holds the bf16 weight).
// 4. The same bits on every run and thread schedule; bad M and a missing scratch are
//    refused with one line.
#include "../kernels/nf4_matmul.cuh"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

extern "C" {
#include "../common/half.h"
#include "../common/util.h"
#include "../train/matmul.h"
#include "../train/nf4.h"
}

#include <math.h>
#include <stdlib.h>
#include <string.h>

template <typename T>
static T *device_copy(const T *host, size_t count, size_t offset = 0) {
    T *dev;
    cuda_check(cudaMalloc(&dev, (count + offset) * sizeof(T)));
    cuda_check(cudaMemcpy(dev + offset, host, count * sizeof(T), cudaMemcpyHostToDevice));
    return dev;
}

// The device copy of a weight quantized by train/nf4.c (each array exactly its size).
static Nf4Device nf4_upload(const Nf4Weight *w) {
    Nf4Device q;
    q.rows = w->rows, q.cols = w->cols, q.blocksize = w->blocksize;
    size_t n = (size_t)(w->rows * w->cols), nb = CEIL_DIV(n, (size_t)w->blocksize);
    q.packed = device_copy(w->packed, (n + 1) / 2);
    q.qabsmax = device_copy(w->qabsmax, nb);
    q.absmax2 = device_copy(w->absmax2, CEIL_DIV(nb, (size_t)NF4_DQ_BLOCK));
    q.offset = device_copy(&w->offset, 1);
    q.code = device_copy(w->code, 256);
    return q;
}

static void nf4_free(Nf4Device *q) {
    cuda_check(cudaFree(q->packed)), cuda_check(cudaFree(q->qabsmax)), cuda_check(cudaFree(q->absmax2));
    cuda_check(cudaFree(q->offset)), cuda_check(cudaFree(q->code));
}

// A problem: W [N, K] quantized by train/nf4.c, its bf16 weights as floats, X [M, K] bf16.
struct Problem {
    int M;
    int64_t N, K;
    Nf4Weight cpu;
    float *w, *x;     // bf16 values as floats
    uint16_t *xbits;  // X as bf16
    Nf4Device q;
};

static Problem problem_make(int M, int64_t N, int64_t K, int blocksize, uint64_t *rng) {
    Problem p;
    p.M = M, p.N = N, p.K = K;
    size_t n = (size_t)(N * K);
    float *w = (float *)xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {  // weights of varying scale per row, as a model's
        double scale = 0.02 + 0.01 * (double)((i / (size_t)K) % 5);
        w[i] = (float)(scale * (2 * rng_uniform(rng) - 1));
    }
    nf4_weight_quantize(&p.cpu, w, N, K, blocksize, 1);
    nf4_weight_dequantize(&p.cpu, w);
    for (size_t i = 0; i < n; i++) w[i] = bf16_to_f32(f32_to_bf16(w[i]));
    p.w = w;
    p.x = (float *)xmalloc((size_t)M * K * sizeof(float));
    p.xbits = (uint16_t *)xmalloc((size_t)M * K * sizeof(uint16_t));
    for (size_t i = 0; i < (size_t)M * K; i++) {
        p.xbits[i] = f32_to_bf16((float)(4 * rng_uniform(rng) - 2));
        p.x[i] = bf16_to_f32(p.xbits[i]);
    }
    p.q = nf4_upload(&p.cpu);
    return p;
}

static void problem_free(Problem *p) {
    nf4_weight_free(&p->cpu);
    nf4_free(&p->q);
    free(p->w), free(p->x), free(p->xbits);
}

// The reference: y = X·Wᵀ and Σ|x·w| by the CPU SGEMM.
static void reference(const Problem &p, float *y, float *abs_sum) {
    size_t nx = (size_t)p.M * p.K, nw = (size_t)(p.N * p.K);
    float *ax = (float *)xmalloc(nx * sizeof(float)), *aw = (float *)xmalloc(nw * sizeof(float));
    for (size_t i = 0; i < nx; i++) ax[i] = fabsf(p.x[i]);
    for (size_t i = 0; i < nw; i++) aw[i] = fabsf(p.w[i]);
    matmul(y, (int)p.N, p.x, (int)p.K, 0, p.w, (int)p.K, 1, p.M, (int)p.N, (int)p.K, 1.0f, 0);
    matmul(abs_sum, (int)p.N, ax, (int)p.K, 0, aw, (int)p.K, 1, p.M, (int)p.N, (int)p.K, 1.0f, 0);
    free(ax), free(aw);
}

static double worst;  // the largest error / tolerance seen
static size_t outputs, rounded_alike;

// Compares y (bf16 on the device) with the reference; returns the number of outputs
// outside the tolerance and counts those equal to the exact sum rounded to bf16.
static int compare(const Problem &p, const __nv_bfloat16 *y_dev, const char *what) {
    size_t n = (size_t)p.M * p.N;
    float *ref = (float *)xmalloc(n * sizeof(float)), *abs_sum = (float *)xmalloc(n * sizeof(float));
    uint16_t *got = (uint16_t *)xmalloc(n * sizeof(uint16_t));
    reference(p, ref, abs_sum);
    cuda_check(cudaMemcpy(got, y_dev, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double sgemm_error = (double)p.K * 0x1p-24 * abs_sum[i];
        double tol = matmul_tolerance(ref[i], abs_sum[i], 0, (int)p.K, 1.0f, 0.0f, MATMUL_BF16) + sgemm_error;
        double e = fabs((double)bf16_to_f32(got[i]) - ref[i]);
        outputs++;
        rounded_alike += got[i] == f32_to_bf16(ref[i]);
        if (tol > 0 && e / tol > worst) worst = e / tol;
        if (!(e <= tol) && bad++ < 3)
            printf("  %s, M %d N %lld K %lld: y[%zu][%zu] = %.7g, reference %.7g, tolerance %.3g\n", what, p.M,
                   (long long)p.N, (long long)p.K, i / (size_t)p.N, i % (size_t)p.N, bf16_to_f32(got[i]), ref[i], tol);
    }
    free(ref), free(abs_sum), free(got);
    return bad;
}

static Nf4MatmulScratch scratch_for(int64_t max_n) {
    Nf4MatmulScratch s;
    void *memory;
    cuda_check(cudaMalloc(&memory, nf4_matmul_scratch_bytes(max_n)));
    nf4_matmul_scratch_init(&s, memory, max_n);
    return s;
}

// ---------------------------------------------------------------------------------------
// 1. Against the CPU reference

struct Shape {
    int64_t N, K;
    int blocksize;
};

TEST(matmul_matches_cpu_reference) {
    const Shape shapes[] = {{48, 48, 64},  {24, 48, 64},  {96, 48, 64}, {48, 96, 64}, {1, 256, 64},
                            {33, 160, 32}, {67, 1056, 64}, {5, 544, 256}, {70, 128, 128}};
    const int Ms[] = {1, 3, 16, 17, 64};
    Nf4MatmulScratch scratch = scratch_for(128);
    uint64_t rng = 1;
    worst = 0;
    for (const Shape &s : shapes)
        for (int M : Ms) {
            Problem p = problem_make(M, s.N, s.K, s.blocksize, &rng);
            __nv_bfloat16 *x = (__nv_bfloat16 *)device_copy(p.xbits, (size_t)M * s.K), *y;
            cuda_check(cudaMalloc(&y, (size_t)M * s.N * sizeof(uint16_t)));
            int segments = (int)CEIL_DIV(s.K, (int64_t)NF4_MATMUL_SEGMENT), most = NF4_MATMUL_SPLIT_ROWS / M;
            // no split, every segment its own split (as far as the scratch allows), and the default
            int splits[] = {1, segments < most ? segments : most};
            for (int sp : splits) {
                nf4_matmul_splits_launch(y, x, p.q, M, sp, &scratch, 0);
                char what[64];
                snprintf(what, sizeof(what), "%d split(s)", sp);
                CHECK_INT(compare(p, y, what), 0);
            }
            nf4_matmul(y, x, p.q, M, &scratch, 0);
            CHECK_INT(compare(p, y, "default splits"), 0);
            cuda_check(cudaFree(x)), cuda_check(cudaFree(y));
            problem_free(&p);
        }
    // (near 1 by design: an output just above a power of two rounds to bf16 with an error
    // of almost 2^-8 of itself, which is what the bound allows)
    printf("  worst error / tolerance %.3f\n", worst);
    cuda_check(cudaFree(scratch.partials));
}

// X 2 bytes off 16-byte alignment: the value-by-value path at a K that has the fast one.
TEST(matmul_misaligned_x) {
    uint64_t rng = 2;
    Nf4MatmulScratch scratch = scratch_for(64);
    for (int M : {1, 17}) {
        Problem p = problem_make(M, 40, 320, 64, &rng);
        uint16_t *base = device_copy(p.xbits, (size_t)M * 320, 1);
        __nv_bfloat16 *y;
        cuda_check(cudaMalloc(&y, (size_t)M * 40 * sizeof(uint16_t)));
        nf4_matmul(y, (const __nv_bfloat16 *)(base + 1), p.q, M, &scratch, 0);
        CHECK_INT(compare(p, y, "misaligned X"), 0);
        cuda_check(cudaFree(base)), cuda_check(cudaFree(y));
        problem_free(&p);
    }
    cuda_check(cudaFree(scratch.partials));
}

// ---------------------------------------------------------------------------------------
// 2. Rounding like the exact sum

TEST(matmul_rounds_like_the_exact_sum) {
    uint64_t rng = 3;
    outputs = rounded_alike = 0;
    Nf4MatmulScratch scratch = scratch_for(256);
    for (int M : {1, 16}) {
        Problem p = problem_make(M, 256, 512, 64, &rng);
        __nv_bfloat16 *x = (__nv_bfloat16 *)device_copy(p.xbits, (size_t)M * 512), *y;
        cuda_check(cudaMalloc(&y, (size_t)M * 256 * sizeof(uint16_t)));
        nf4_matmul(y, x, p.q, M, &scratch, 0);
        CHECK_INT(compare(p, y, "rounding"), 0);
        cuda_check(cudaFree(x)), cuda_check(cudaFree(y));
        problem_free(&p);
    }
    printf("  %zu of %zu outputs equal the exact sum rounded to bf16\n", rounded_alike, outputs);
    CHECK(rounded_alike >= outputs * 98 / 100);
    cuda_check(cudaFree(scratch.partials));
}

// ---------------------------------------------------------------------------------------
// 3. The dispatcher

TEST(linear_dispatches_on_m) {
    uint64_t rng = 4;
    const int64_t N = 40, K = 96;
    Matmul mm;
    void *workspace;
    cuda_check(cudaMalloc(&workspace, MATMUL_WORKSPACE_BYTES));
    matmul_create(&mm, workspace, MATMUL_WORKSPACE_BYTES);
    Nf4Linear l;
    l.mm = &mm;
    l.weight_capacity = (size_t)(N * K);
    cuda_check(cudaMalloc(&l.weight, l.weight_capacity * sizeof(uint16_t)));
    void *memory;
    cuda_check(cudaMalloc(&memory, nf4_matmul_scratch_bytes(N)));
    nf4_matmul_scratch_init(&l.split, memory, N);
    uint16_t *wbits = (uint16_t *)xmalloc((size_t)(N * K) * sizeof(uint16_t));
    for (int M : {NF4_LINEAR_FUSED_MAX_M, NF4_LINEAR_FUSED_MAX_M + 1, 200}) {
        Problem p = problem_make(M, N, K, 64, &rng);
        __nv_bfloat16 *x = (__nv_bfloat16 *)device_copy(p.xbits, (size_t)M * K), *y;
        cuda_check(cudaMalloc(&y, (size_t)M * N * sizeof(uint16_t)));
        cuda_check(cudaMemset(l.weight, 0x7f, l.weight_capacity * sizeof(uint16_t)));
        nf4_linear(&l, y, x, p.q, M, 0);
        CHECK_INT(compare(p, y, M <= NF4_LINEAR_FUSED_MAX_M ? "fused" : "dequantize + cuBLASLt"), 0);
        cuda_check(cudaMemcpy(wbits, l.weight, l.weight_capacity * sizeof(uint16_t), cudaMemcpyDeviceToHost));
        int untouched = 1, dequantized = 1;
        for (size_t i = 0; i < (size_t)(N * K); i++) {
            untouched &= wbits[i] == 0x7f7f;
            dequantized &= wbits[i] == f32_to_bf16(p.w[i]);
        }
        CHECK(M <= NF4_LINEAR_FUSED_MAX_M ? untouched : dequantized);
        cuda_check(cudaFree(x)), cuda_check(cudaFree(y));
        problem_free(&p);
    }
    free(wbits);
    matmul_destroy(&mm);
    cuda_check(cudaFree(workspace)), cuda_check(cudaFree(l.weight)), cuda_check(cudaFree(memory));
}

// ---------------------------------------------------------------------------------------
// 4. Determinism and refusals

TEST(bits_do_not_depend_on_the_run_or_schedule) {
    const uint64_t saved_seed = cuda_host_seed();
    uint64_t rng = 5;
    Nf4MatmulScratch scratch = scratch_for(70);
    for (int M : {1, 17}) {
        Problem p = problem_make(M, 70, 1056, 64, &rng);
        size_t n = (size_t)M * 70;
        __nv_bfloat16 *x = (__nv_bfloat16 *)device_copy(p.xbits, (size_t)M * 1056), *y;
        cuda_check(cudaMalloc(&y, n * sizeof(uint16_t)));
        uint16_t *first = (uint16_t *)xmalloc(n * 2), *again = (uint16_t *)xmalloc(n * 2);
        int splits = NF4_MATMUL_SPLIT_ROWS / M < 9 ? NF4_MATMUL_SPLIT_ROWS / M : 9;
        for (uint64_t seed = 0; seed < 3; seed++) {
            cuda_host_set_seed(seed * 7919 + 1);
            nf4_matmul_splits_launch(y, x, p.q, M, splits, &scratch, 0);
            cuda_check(cudaMemcpy(seed ? again : first, y, n * 2, cudaMemcpyDeviceToHost));
            if (seed) CHECK(memcmp(first, again, n * 2) == 0);
        }
        free(first), free(again);
        cuda_check(cudaFree(x)), cuda_check(cudaFree(y));
        problem_free(&p);
    }
    cuda_host_set_seed(saved_seed);
    cuda_check(cudaFree(scratch.partials));
}

TEST(refuses_bad_m_and_missing_scratch) {
    char report[512];
    int status = run_in_child(
        [] {
            static uint64_t rng = 6;
            static Problem p;
            static __nv_bfloat16 *y;
            p = problem_make(1, 8, 64, 64, &rng);
            cuda_check(cudaMalloc(&y, 65 * 8 * 2));
            nf4_matmul(y, (const __nv_bfloat16 *)p.q.packed, p.q, 65, NULL, 0);
        },
        report, sizeof(report));
    CHECK_INT(status, 1);
    CHECK(strstr(report, "M must be 1..64") != NULL);
    status = run_in_child(
        [] {
            static uint64_t rng = 7;
            static Problem p;
            static __nv_bfloat16 *x, *y;
            p = problem_make(2, 8, 1024, 64, &rng);
            x = (__nv_bfloat16 *)device_copy(p.xbits, 2 * 1024);
            cuda_check(cudaMalloc(&y, 2 * 8 * 2));
            nf4_matmul_splits_launch(y, x, p.q, 2, 4, NULL, 0);
        },
        report, sizeof(report));
    CHECK_INT(status, 1);
    CHECK(strstr(report, "scratch is missing") != NULL);
}

int main(void) {
    RUN(matmul_matches_cpu_reference);
    RUN(matmul_misaligned_x);
    RUN(matmul_rounds_like_the_exact_sum);
    RUN(linear_dispatches_on_m);
    RUN(bits_do_not_depend_on_the_run_or_schedule);
    RUN(refuses_bad_m_and_missing_scratch);
    return test_summary();
}
