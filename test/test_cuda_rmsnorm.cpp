// test_cuda_rmsnorm.cpp: RMSNorm (residual add + norm), the CPU reference and the kernel.
//
// The reference of the fused op is h = r + x in fp32, then train/rmsnorm.c (the norm alone,
// fp32); backward, train/rmsnorm.c's dx, then dh = dh_in + dx.
// 1. That reference against an independent double-precision forward written here, and its
//    backward against central finite differences (in double) of that forward.
// 2. The kernel (kernels/rmsnorm.cuh), run in the CUDA-on-CPU harness, against the reference
//    at awkward shapes (one row, C = 1, C not a multiple of the 8-element pack, C = 5120,
//    misaligned pointers, in place), within the bf16 error bounds of kernels/rmsnorm.cuh:
//      y:    (4u + 7u² + s)·|y_ref|          u = 2^-8 (bf16), s = (C + 16)·2^-24 (fp32 sums)
//      rstd: (u + u² + s)·rstd_ref
//      h:    u·|h_ref|
//      dh:   u·|dh_ref| + (1 + u)·2s·(|dh_in| + rstd|g| + rstd³|h|·Σ|g h|/C)
// 3. The kernel's rounding order against a model of transformers' bf16 cast order, where it
//    must agree bit for bit except where fp32 and double statistics round differently.
#include "../kernels/rmsnorm.cuh"
#include "cuda_host/cuda_buffers.h"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

extern "C" {
#include "../train/rmsnorm.h"
}

#include <math.h>
#include <stdlib.h>

static const float kEps = 1e-5f;

// The fused op's reference: h = r + x (when x is given), then the norm.
static void reference_forward(float *h, float *y, float *rstd, const float *r, const float *x, const float *w, int N,
                              int C) {
    const float *in = r;
    if (x) {
        for (size_t i = 0; i < (size_t)N * C; i++) h[i] = r[i] + x[i];
        in = h;
    }
    rmsnorm_forward(in, w, y, rstd, N, C, kEps);
}

// dh = dh_in + the norm's input gradient (dh_in may be NULL).
static void reference_backward(float *dh, const float *dy, const float *dh_in, const float *h, const float *w,
                               const float *rstd, int N, int C) {
    rmsnorm_backward(h, w, rstd, dy, dh, N, C);
    if (dh_in)
        for (size_t i = 0; i < (size_t)N * C; i++) dh[i] += dh_in[i];
}

// ---------------------------------------------------------------------------------------
// 1. The reference

// The forward pass again, in double, written from the formulas (not from rmsnorm.c).
static void forward_double(const double *r, const double *x, const double *w, double *h, double *y, int N, int C) {
    for (int n = 0; n < N; n++) {
        double ms = 0;
        for (int c = 0; c < C; c++) {
            h[n * C + c] = r[n * C + c] + (x ? x[n * C + c] : 0.0);
            ms += h[n * C + c] * h[n * C + c] / C;
        }
        double s = 1.0 / sqrt(ms + (double)kEps);
        for (int c = 0; c < C; c++) y[n * C + c] = h[n * C + c] * s * w[c];
    }
}

// L = Σ R·y + Σ S·h, so ∂L/∂y = R and ∂L/∂h (from the residual stream) = S.
static double loss_double(const double *r, const double *x, const double *w, const double *R, const double *S, int N,
                          int C) {
    double h[64], y[64], L = 0;
    forward_double(r, x, w, h, y, N, C);
    for (int i = 0; i < N * C; i++) L += R[i] * y[i] + (S ? S[i] * h[i] : 0.0);
    return L;
}

static void reference_check(int N, int C, int with_x, uint64_t seed) {
    uint64_t rng = seed;
    double r[64], x[64], w[16], R[64], S[64];
    float rf[64], xf[64], wf[16], Rf[64], Sf[64], h[64], y[64], rstd[8], dh[64];
    for (int i = 0; i < N * C; i++) {
        rf[i] = (float)(2 * rng_uniform(&rng) - 1), xf[i] = (float)(2 * rng_uniform(&rng) - 1);
        Rf[i] = (float)(2 * rng_uniform(&rng) - 1), Sf[i] = (float)(2 * rng_uniform(&rng) - 1);
        r[i] = rf[i], x[i] = xf[i], R[i] = Rf[i], S[i] = Sf[i];
    }
    for (int c = 0; c < C; c++) w[c] = wf[c] = (float)(0.5 + rng_uniform(&rng));
    const double *xd = with_x ? x : NULL, *Sd = with_x ? S : NULL;

    // forward: fp32 reference against the double one
    double hd[64], yd[64];
    forward_double(r, xd, w, hd, yd, N, C);
    reference_forward(h, y, rstd, rf, with_x ? xf : NULL, wf, N, C);
    int bad = 0;
    for (int i = 0; i < N * C; i++) bad += fabs(y[i] - yd[i]) > 1e-5 * fabs(yd[i]) + 1e-7;
    CHECK_INT(bad, 0);

    // backward: dh against (L(r + step) - L(r - step)) / 2step; with x, dh is also ∂L/∂x
    reference_backward(dh, Rf, with_x ? Sf : NULL, with_x ? h : rf, wf, rstd, N, C);
    bad = 0;
    for (int i = 0; i < N * C; i++) {
        double keep = r[i], step = 1e-4;
        r[i] = keep + step;
        double up = loss_double(r, xd, w, R, Sd, N, C);
        r[i] = keep - step;
        double down = loss_double(r, xd, w, R, Sd, N, C);
        r[i] = keep;
        double fd = (up - down) / (2 * step);
        if (fabs(dh[i] - fd) > 1e-4 * fabs(fd) + 1e-5) {
            if (bad < 3) printf("  N=%d C=%d [%d]: dh %.7g, finite difference %.7g\n", N, C, i, dh[i], fd);
            bad++;
        }
    }
    CHECK_INT(bad, 0);
}

TEST(reference_matches_double_and_finite_differences) {
    reference_check(3, 7, 1, 1);
    reference_check(3, 7, 0, 2);
    reference_check(2, 1, 1, 3);  // C = 1: y = ±w (up to eps), dh nearly 0
    reference_check(1, 16, 1, 4);
    reference_check(4, 13, 0, 5);
}

// ---------------------------------------------------------------------------------------
// 2. The kernel against the reference

struct Shape {
    int N, C, with_x, in_place, offset;
};

static const Shape kShapes[] = {
    {1, 1, 1, 0, 0},    {1, 5, 1, 0, 0},     {3, 37, 1, 0, 0},    {1, 8, 1, 0, 0},   {4, 64, 0, 0, 0},
    {2, 64, 1, 0, 1},   {2, 300, 1, 1, 0},   {1, 2050, 1, 0, 0},  {5, 4104, 1, 0, 0}, {2, 4096, 1, 1, 0},
    {3, 5120, 1, 0, 0}, {1, 5120, 0, 0, 0}, {2, 5120, 1, 1, 1},
};

// The worst error / tolerance over all shapes, printed for the record.
static double worst_y, worst_rstd, worst_h, worst_dh;

static void forward_check(const Shape &s, uint64_t seed) {
    uint64_t rng = seed;
    size_t n = (size_t)s.N * s.C;
    Buf r = buf_random(&rng, n, s.offset, -2, 2), x = buf_random(&rng, n, s.offset, -2, 2);
    Buf w = buf_random(&rng, (size_t)s.C, s.offset, -1.5f, 1.5f), y = buf_output(n, s.offset);
    Buf h = buf_output(n, s.offset);
    float *drstd;
    cuda_check(cudaMalloc(&drstd, (size_t)s.N * sizeof(float)));
    __nv_bfloat16 *hdev = s.with_x ? (s.in_place ? r.dev : h.dev) : NULL;
    rmsnorm_forward(hdev, y.dev, drstd, r.dev, s.with_x ? x.dev : NULL, w.dev, s.N, s.C, kEps, 0);

    float *href = (float *)xmalloc(n * sizeof(float)), *yref = (float *)xmalloc(n * sizeof(float));
    float *rref = (float *)xmalloc((size_t)s.N * sizeof(float)), *got = (float *)xmalloc(n * sizeof(float));
    float *grstd = (float *)xmalloc((size_t)s.N * sizeof(float));
    reference_forward(href, yref, rref, r.host, s.with_x ? x.host : NULL, w.host, s.N, s.C);
    int bad = 0;
    buf_read(got, y.dev, n);
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - yref[i]), tol = rmsnorm_forward_tolerance(yref[i], s.C);
        if (tol > 0 && e / tol > worst_y) worst_y = e / tol;
        if (!(e <= tol) && bad++ < 3)
            printf("  N=%d C=%d y[%zu]: kernel %.7g, reference %.7g, tolerance %.3g\n", s.N, s.C, i, got[i], yref[i], tol);
    }
    cuda_check(cudaMemcpy(grstd, drstd, (size_t)s.N * sizeof(float), cudaMemcpyDeviceToHost));
    for (int i = 0; i < s.N; i++) {
        double e = fabs(grstd[i] - rref[i]), tol = rmsnorm_rstd_tolerance(rref[i], s.C);
        if (e / tol > worst_rstd) worst_rstd = e / tol;
        if (!(e <= tol) && bad++ < 3) printf("  N=%d C=%d rstd[%d]: kernel %.9g, reference %.9g\n", s.N, s.C, i, grstd[i], rref[i]);
    }
    if (s.with_x) {
        buf_read(got, hdev, n);
        for (size_t i = 0; i < n; i++) {
            double e = fabs(got[i] - href[i]), tol = rmsnorm_h_tolerance(href[i]);
            if (tol > 0 && e / tol > worst_h) worst_h = e / tol;
            if (!(e <= tol) && bad++ < 3) printf("  N=%d C=%d h[%zu]: kernel %.7g, reference %.7g\n", s.N, s.C, i, got[i], href[i]);
        }
    }
    CHECK_INT(bad, 0);
    free(href), free(yref), free(rref), free(got), free(grstd);
    cuda_check(cudaFree(drstd));
    buf_free(&r), buf_free(&x), buf_free(&w), buf_free(&y), buf_free(&h);
}

TEST(kernel_forward_matches_reference) {
    uint64_t seed = 100;
    for (const Shape &s : kShapes) forward_check(s, seed++);
    printf("  forward, worst error / tolerance: y %.3f, rstd %.3f, h %.3f\n", worst_y, worst_rstd, worst_h);
}

static void backward_check(const Shape &s, uint64_t seed) {
    uint64_t rng = seed;
    size_t n = (size_t)s.N * s.C;
    Buf dy = buf_random(&rng, n, s.offset, -1, 1), din = buf_random(&rng, n, s.offset, -1, 1);
    Buf h = buf_random(&rng, n, s.offset, -2, 2), w = buf_random(&rng, (size_t)s.C, s.offset, -1.5f, 1.5f);
    Buf dh = buf_output(n, s.offset);
    float *rstd = (float *)xmalloc((size_t)s.N * sizeof(float)), *scratch = (float *)xmalloc(n * sizeof(float));
    float *ref = (float *)xmalloc(n * sizeof(float)), *got = (float *)xmalloc(n * sizeof(float)), *drstd;
    rmsnorm_forward(h.host, w.host, scratch, rstd, s.N, s.C, kEps);  // the rstd both use
    cuda_check(cudaMalloc(&drstd, (size_t)s.N * sizeof(float)));
    cuda_check(cudaMemcpy(drstd, rstd, (size_t)s.N * sizeof(float), cudaMemcpyHostToDevice));
    // with_x stands for "with dh_in" here; in_place writes dh over dh_in
    const __nv_bfloat16 *dh_in = s.with_x ? din.dev : NULL;
    __nv_bfloat16 *out = s.in_place ? din.dev : dh.dev;
    rmsnorm_backward(out, dy.dev, dh_in, h.dev, w.dev, drstd, s.N, s.C, 0);
    reference_backward(ref, dy.host, s.with_x ? din.host : NULL, h.host, w.host, rstd, s.N, s.C);
    buf_read(got, out, n);
    int bad = 0;
    for (int row = 0; row < s.N; row++) {
        double abs_dot = 0;
        for (int c = 0; c < s.C; c++) {
            size_t i = (size_t)row * s.C + c;
            abs_dot += fabs((double)dy.host[i] * w.host[c] * h.host[i]);
        }
        for (int c = 0; c < s.C; c++) {
            size_t i = (size_t)row * s.C + c;
            double e = fabs(got[i] - ref[i]);
            double tol = rmsnorm_backward_tolerance(ref[i], dy.host[i], s.with_x ? din.host[i] : 0, h.host[i],
                                                    w.host[c], rstd[row], (float)abs_dot, s.C);
            if (tol > 0 && e / tol > worst_dh) worst_dh = e / tol;
            if (!(e <= tol) && bad++ < 3)
                printf("  N=%d C=%d dh[%zu]: kernel %.7g, reference %.7g, tolerance %.3g\n", s.N, s.C, i, got[i], ref[i], tol);
        }
    }
    CHECK_INT(bad, 0);
    free(rstd), free(scratch), free(ref), free(got);
    cuda_check(cudaFree(drstd));
    buf_free(&dy), buf_free(&din), buf_free(&h), buf_free(&w), buf_free(&dh);
}

TEST(kernel_backward_matches_reference) {
    uint64_t seed = 200;
    for (const Shape &s : kShapes) backward_check(s, seed++);
    printf("  backward, worst error / tolerance: dh %.3f\n", worst_dh);
}

// ---------------------------------------------------------------------------------------
// 3. transformers' cast order, and the same bits under every schedule

// transformers in bf16: h = bf16(r + x); y = bf16(bf16(h · rstd) · w), with rstd here from
// a double-precision mean (the kernel's is fp32, so a product can land on the other side
// of a rounding boundary now and then).
TEST(kernel_follows_transformers_cast_order) {
    const int N = 4, C = 4096;
    uint64_t rng = 300;
    size_t n = (size_t)N * C;
    Buf r = buf_random(&rng, n, 0, -2, 2), x = buf_random(&rng, n, 0, -2, 2), w = buf_random(&rng, C, 0, -1.5f, 1.5f);
    Buf h = buf_output(n, 0), y = buf_output(n, 0);
    float *drstd, *got = (float *)xmalloc(n * sizeof(float));
    cuda_check(cudaMalloc(&drstd, N * sizeof(float)));
    rmsnorm_forward(h.dev, y.dev, drstd, r.dev, x.dev, w.dev, N, C, kEps, 0);
    buf_read(got, y.dev, n);
    size_t same = 0, within_ulp = 0;
    for (int row = 0; row < N; row++) {
        float hb[C];
        double ms = 0;
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)row * C + c;
            hb[c] = bf16_to_f32(f32_to_bf16(r.host[i] + x.host[i]));
            ms += (double)hb[c] * hb[c] / C;
        }
        float s = (float)(1.0 / sqrt(ms + (double)kEps));
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)row * C + c;
            float normed = bf16_to_f32(f32_to_bf16(hb[c] * s));
            float want = bf16_to_f32(f32_to_bf16(normed * w.host[c]));
            same += got[i] == want;
            within_ulp += fabsf(got[i] - want) <= fabsf(want) / 128;  // one bf16 ulp at most
        }
    }
    printf("  identical to the transformers-order model: %zu of %zu\n", same, n);
    CHECK(same >= n * 99 / 100);
    CHECK_INT(within_ulp, n);
    free(got);
    cuda_check(cudaFree(drstd));
    buf_free(&r), buf_free(&x), buf_free(&w), buf_free(&h), buf_free(&y);
}

TEST(kernel_bits_do_not_depend_on_the_schedule) {
    const uint64_t saved_seed = cuda_host_seed();
    const int N = 2, C = 5120;
    uint64_t rng = 400;
    size_t n = (size_t)N * C;
    Buf r = buf_random(&rng, n, 0, -2, 2), x = buf_random(&rng, n, 0, -2, 2), w = buf_random(&rng, C, 0, -1, 1);
    Buf h = buf_output(n, 0), y = buf_output(n, 0), dh = buf_output(n, 0);
    float *drstd, *first = (float *)xmalloc(2 * n * sizeof(float)), *again = (float *)xmalloc(2 * n * sizeof(float));
    cuda_check(cudaMalloc(&drstd, N * sizeof(float)));
    for (uint64_t seed = 0; seed < 4; seed++) {
        cuda_host_set_seed(seed * 1000003);
        rmsnorm_forward(h.dev, y.dev, drstd, r.dev, x.dev, w.dev, N, C, kEps, 0);
        rmsnorm_backward(dh.dev, y.dev, r.dev, h.dev, w.dev, drstd, N, C, 0);  // any inputs will do
        float *out = seed ? again : first;
        buf_read(out, y.dev, n);
        buf_read(out + n, dh.dev, n);
        if (seed) CHECK(memcmp(first, again, 2 * n * sizeof(float)) == 0);
    }
    cuda_host_set_seed(saved_seed);
    free(first), free(again);
    cuda_check(cudaFree(drstd));
    buf_free(&r), buf_free(&x), buf_free(&w), buf_free(&h), buf_free(&y), buf_free(&dh);
}

int main(void) {
    RUN(reference_matches_double_and_finite_differences);
    RUN(kernel_forward_matches_reference);
    RUN(kernel_backward_matches_reference);
    RUN(kernel_follows_transformers_cast_order);
    RUN(kernel_bits_do_not_depend_on_the_schedule);
    return test_summary();
}
