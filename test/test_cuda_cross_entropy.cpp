// test_cuda_cross_entropy.cpp: the fused LM head + cross-entropy (kernels/cross_entropy.cuh),
// run in the CUDA-on-CPU harness with the cuBLASLt stand-in, against the CPU reference
// train/cross_entropy.c (itself checked against finite differences in test_ops) given the
// same bf16 X and W as floats.
//
// Compared: the loss sum, the trained-token count (exactly) and every element of dX, at
// awkward shapes: vocabularies of 3 (fewer logits than threads), 517, 1000 and 32768 + 3,
// hidden sizes that are and are not multiples of the 8-element pack, chunk sizes that do not
// divide the trained tokens, a single token, all tokens untrained (loss 0, count 0, dX all
// zero over a NaN-filled buffer), weights other than 0 and 1, targets 0 and V - 1, the
// forward only (dX NULL). Tolerances: cross_entropy_tolerances of the header, per element,
// from bf16 rounding of dz and dX and fp32 accumulation in both the GEMMs and the reference
// (derived there); untrained rows of dX must be exactly 0. The loss is also the same bits
// under different thread schedules. A scratch buffer that is not 16-byte aligned: one line
// on stderr and exit status 2 (a GPU would fault on its 16-byte moves).
#include "../kernels/cross_entropy.cuh"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

extern "C" {
#include "../common/half.h"
#include "../common/util.h"
#include "../train/cross_entropy.h"
}

#include <math.h>
#include <stdlib.h>

enum Pattern { MIXED, ALL, NONE, WEIGHTED };

struct Case {
    int T, H, V, chunk;
    Pattern pattern;
    int with_dx;
};

static const Case kCases[] = {
    {37, 64, 1000, 8, MIXED, 1}, {1, 16, 1000, 4, ALL, 1},   {9, 24, 1000, 4, NONE, 1},  {23, 20, 517, 5, WEIGHTED, 1},
    {12, 32, 32771, 5, MIXED, 1}, {37, 64, 1000, 16, MIXED, 0}, {40, 8, 3, 7, MIXED, 1}, {19, 40, 1000, 64, ALL, 1},
};

static Matmul mm;
static double worst_loss, worst_dx;

// bf16 values on the device, their float copy on the host.
static __nv_bfloat16 *upload_random(uint64_t *rng, size_t n, float lo, float hi, float *host) {
    uint16_t *bits = (uint16_t *)xmalloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) {
        bits[i] = f32_to_bf16((float)(lo + (hi - lo) * rng_uniform(rng)));
        host[i] = bf16_to_f32(bits[i]);
    }
    __nv_bfloat16 *dev;
    cuda_check(cudaMalloc(&dev, n * sizeof(uint16_t)));
    cuda_check(cudaMemcpy(dev, bits, n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    free(bits);
    return dev;
}

struct Run {
    double loss;
    int count;
};

// The op on the device; dX (when with_dx) read back into dx.
static Run run_device(const Case &c, const __nv_bfloat16 *X, const __nv_bfloat16 *W, const int32_t *targets,
                      const float *weights, float grad_scale, float *dx) {
    int32_t *dt;
    float *dw;
    double *dloss;
    __nv_bfloat16 *ddx = NULL;
    void *scratch;
    cuda_check(cudaMalloc(&dt, c.T * sizeof(int32_t)));
    cuda_check(cudaMalloc(&dw, c.T * sizeof(float)));
    cuda_check(cudaMalloc(&dloss, sizeof(double)));
    cuda_check(cudaMalloc(&scratch, cross_entropy_scratch_bytes(c.T, c.H, c.V, c.chunk)));
    if (c.with_dx) cuda_check(cudaMalloc(&ddx, (size_t)c.T * c.H * sizeof(__nv_bfloat16)));  // NaN until written
    cuda_check(cudaMemcpy(dt, targets, c.T * sizeof(int32_t), cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(dw, weights, c.T * sizeof(float), cudaMemcpyHostToDevice));
    Run r;
    r.count = cross_entropy_forward_backward(&mm, dloss, ddx, X, W, dt, dw, c.T, c.H, c.V, c.chunk, grad_scale, scratch, 0);
    cuda_check(cudaMemcpy(&r.loss, dloss, sizeof(double), cudaMemcpyDeviceToHost));
    if (c.with_dx) {
        size_t n = (size_t)c.T * c.H;
        uint16_t *bits = (uint16_t *)xmalloc(n * sizeof(uint16_t));
        cuda_check(cudaMemcpy(bits, ddx, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < n; i++) dx[i] = bf16_to_f32(bits[i]);
        free(bits);
        cuda_check(cudaFree(ddx));
    }
    cuda_check(cudaFree(dt)), cuda_check(cudaFree(dw)), cuda_check(cudaFree(dloss)), cuda_check(cudaFree(scratch));
    return r;
}

// Targets and weights for a pattern; some trained targets are 0 and V - 1.
static void make_targets(const Case &c, uint64_t *rng, int32_t *targets, float *weights) {
    static const float kWeights[] = {0.5f, 1.0f, 2.0f, 0.0f};
    for (int t = 0; t < c.T; t++) {
        double u = rng_uniform(rng);
        targets[t] = t % 5 == 1 ? 0 : t % 5 == 2 ? c.V - 1 : (int32_t)(rng_uniform(rng) * c.V);
        switch (c.pattern) {
            case MIXED: weights[t] = u < 0.6 ? 1.0f : 0.0f; break;
            case ALL: weights[t] = 1.0f; break;
            case NONE: weights[t] = 0.0f; break;
            case WEIGHTED: weights[t] = kWeights[(int)(u * 4)]; break;
        }
    }
}

static int check_case(const Case &c, uint64_t seed) {
    uint64_t rng = seed;
    size_t xn = (size_t)c.T * c.H, wn = (size_t)c.V * c.H;
    float *hX = (float *)xmalloc(xn * sizeof(float)), *hW = (float *)xmalloc(wn * sizeof(float));
    __nv_bfloat16 *X = upload_random(&rng, xn, -2, 2, hX), *W = upload_random(&rng, wn, -1, 1, hW);
    int32_t *targets = (int32_t *)xmalloc(c.T * sizeof(int32_t));
    float *weights = (float *)xmalloc(c.T * sizeof(float));
    make_targets(c, &rng, targets, weights);
    const float grad_scale = 1.0f / 37;
    float *ref_dx = (float *)xmalloc(xn * sizeof(float)), *got_dx = (float *)xmalloc(xn * sizeof(float));
    float *tol = (float *)xmalloc(xn * sizeof(float));

    double ref_loss = cross_entropy(hX, hW, targets, weights, c.T, c.H, c.V, grad_scale, ref_dx);
    int ref_count = 0;
    for (int t = 0; t < c.T; t++) ref_count += weights[t] != 0.0f;
    double loss_tol = cross_entropy_tolerances(hX, hW, targets, weights, c.T, c.H, c.V, grad_scale, tol);
    Run got = run_device(c, X, W, targets, weights, grad_scale, got_dx);

    int bad = 0;
    const char *what = c.with_dx ? "" : " (forward only)";
    if (got.count != ref_count && bad++ < 3)
        printf("  T=%d V=%d%s: count %d, reference %d\n", c.T, c.V, what, got.count, ref_count);
    double e = fabs(got.loss - ref_loss);
    if (loss_tol > 0 && e / loss_tol > worst_loss) worst_loss = e / loss_tol;
    if (!(e <= loss_tol) && bad++ < 3)
        printf("  T=%d H=%d V=%d%s: loss %.10g, reference %.10g, tolerance %.3g\n", c.T, c.H, c.V, what, got.loss,
               ref_loss, loss_tol);
    for (size_t i = 0; c.with_dx && i < xn; i++) {
        double d = fabs((double)got_dx[i] - ref_dx[i]);
        if (tol[i] > 0 && d / tol[i] > worst_dx) worst_dx = d / tol[i];
        if (!(d <= tol[i]) && bad++ < 3)
            printf("  T=%d H=%d V=%d chunk %d: dX[%zu][%zu] = %.8g, reference %.8g, tolerance %.3g\n", c.T, c.H, c.V,
                   c.chunk, i / c.H, i % c.H, got_dx[i], ref_dx[i], tol[i]);
    }
    free(hX), free(hW), free(targets), free(weights), free(ref_dx), free(got_dx), free(tol);
    cuda_check(cudaFree(X)), cuda_check(cudaFree(W));
    return bad;
}

TEST(fused_head_matches_reference) {
    uint64_t seed = 10;
    int bad = 0;
    for (const Case &c : kCases) bad += check_case(c, seed++);
    printf("  worst error / tolerance: loss %.3f, dX %.3f\n", worst_loss, worst_dx);
    CHECK_INT(bad, 0);
}

// An untrained row's target is never looked at (the dataloader's padding has target 0, but
// any value must do), and a trained row with a target outside [0, V) gives a NaN loss.
TEST(targets_of_untrained_rows_are_ignored_and_bad_ones_show) {
    const Case c = {6, 16, 50, 4, MIXED, 1};
    uint64_t rng = 99;
    float *hX = (float *)xmalloc(6 * 16 * sizeof(float)), *hW = (float *)xmalloc(50 * 16 * sizeof(float));
    float dx[6 * 16];
    __nv_bfloat16 *X = upload_random(&rng, 6 * 16, -2, 2, hX), *W = upload_random(&rng, 50 * 16, -1, 1, hW);
    int32_t targets[6] = {3, -7, 49, 1000, 0, 12};
    float weights[6] = {1, 0, 1, 0, 1, 1};
    Run ok = run_device(c, X, W, targets, weights, 1.0f, dx);
    double ref = cross_entropy(hX, hW, targets, weights, 6, 16, 50, 1.0f, NULL);
    CHECK_INT(ok.count, 4);
    CHECK(fabs(ok.loss - ref) <= cross_entropy_tolerances(hX, hW, targets, weights, 6, 16, 50, 1.0f, NULL));
    for (int i = 16; i < 32; i++) CHECK(dx[i] == 0.0f);  // row 1, untrained
    targets[4] = 50;  // trained, one past the vocabulary
    Run bad = run_device(c, X, W, targets, weights, 1.0f, dx);
    CHECK(isnan(bad.loss));
    free(hX), free(hW);
    cuda_check(cudaFree(X)), cuda_check(cudaFree(W));
}

TEST(loss_bits_do_not_depend_on_the_schedule) {
    const uint64_t saved = cuda_host_seed();
    const Case c = {29, 24, 700, 6, MIXED, 1};
    uint64_t rng = 5;
    size_t xn = (size_t)c.T * c.H, wn = (size_t)c.V * c.H;
    float *hX = (float *)xmalloc(xn * sizeof(float)), *hW = (float *)xmalloc(wn * sizeof(float));
    float *first = (float *)xmalloc(xn * sizeof(float)), *again = (float *)xmalloc(xn * sizeof(float));
    __nv_bfloat16 *X = upload_random(&rng, xn, -2, 2, hX), *W = upload_random(&rng, wn, -1, 1, hW);
    int32_t targets[29];
    float weights[29];
    make_targets(c, &rng, targets, weights);
    double loss0 = 0;
    for (uint64_t seed = 0; seed < 3; seed++) {
        cuda_host_set_seed(seed * 7919 + 1);
        Run r = run_device(c, X, W, targets, weights, 0.25f, seed ? again : first);
        if (seed == 0) loss0 = r.loss;
        if (seed) {
            CHECK(memcmp(&r.loss, &loss0, sizeof(double)) == 0);
            CHECK(memcmp(first, again, xn * sizeof(float)) == 0);
        }
    }
    cuda_host_set_seed(saved);
    free(hX), free(hW), free(first), free(again);
    cuda_check(cudaFree(X)), cuda_check(cudaFree(W));
}

// The scratch must be 16-byte aligned, as cudaMalloc's 256 is: its packed rows move as
// 16-byte loads and stores, which a GPU refuses at other addresses (a misaligned-address
// fault that ends the process's CUDA context). Anything else: one line, exit status 2.
static void cross_entropy_with_misaligned_scratch(void) {
    const int T = 2, H = 16, V = 8;
    uint64_t rng = 3;
    float hX[T * H], hW[V * H], weights[T] = {1, 1};
    int32_t targets[T] = {0, 5}, *dt;
    __nv_bfloat16 *X = upload_random(&rng, T * H, -1, 1, hX), *W = upload_random(&rng, V * H, -1, 1, hW), *dX;
    float *dw;
    double *loss;
    char *scratch;
    cuda_check(cudaMalloc(&dt, sizeof(targets))), cuda_check(cudaMalloc(&dw, sizeof(weights)));
    cuda_check(cudaMalloc(&loss, sizeof(double))), cuda_check(cudaMalloc(&dX, (size_t)T * H * 2));
    cuda_check(cudaMalloc(&scratch, cross_entropy_scratch_bytes(T, H, V, 4) + 8));
    cuda_check(cudaMemcpy(dt, targets, sizeof(targets), cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(dw, weights, sizeof(weights), cudaMemcpyHostToDevice));
    cross_entropy_forward_backward(&mm, loss, dX, X, W, dt, dw, T, H, V, 4, 1.0f, scratch + 8, 0);
}

TEST(misaligned_scratch_is_one_line_and_exit_2) {
    char report[512];
    CHECK_INT(run_in_child(cross_entropy_with_misaligned_scratch, report, sizeof(report)), 2);
    CHECK(strstr(report, "error: cross_entropy: the scratch buffer") != NULL);
}

int main(void) {
    void *workspace;
    cuda_check(cudaMalloc(&workspace, MATMUL_WORKSPACE_BYTES));
    matmul_create(&mm, workspace, MATMUL_WORKSPACE_BYTES);
    RUN(fused_head_matches_reference);
    RUN(targets_of_untrained_rows_are_ignored_and_bad_ones_show);
    RUN(loss_bits_do_not_depend_on_the_schedule);
    RUN(misaligned_scratch_is_one_line_and_exit_2);
    matmul_destroy(&mm);
    cuda_check(cudaFree(workspace));
    return test_summary();
}
