// test_cuda_swiglu.cpp: SwiGLU (h = silu(g) · u), the CPU reference and the kernel.
//
// 1. The reference (train/swiglu.c, fp32) against the formula in double written here, and
//    its backward (also with dg or du written over dh) against central finite differences
//    in double of L = Σ R·h.
// 2. The kernel (kernels/swiglu.cuh), run in the CUDA-on-CPU harness, against the reference
//    at awkward sizes (one element, fewer than a pack, n not a multiple of 8 so that the
//    last thread takes a tail, misaligned pointers, in place), within the bf16 error bounds
//    of kernels/swiglu.cuh:
//      h, du: (2u + u² + s)·|ref|                              u = 2^-8, s = 32·2^-24
//      dg:    (u·|ref| + (u + s)·|dh·u|·σ(g)·(1 + |g|)) / (1 − u)
// 3. The kernel's rounding order against a model of torch's bf16 computation (silu rounded,
//    then the product; autograd's da = bf16(dh·u) into silu_backward), bit for bit: the
//    harness computes expf with the same libm as the model.
#include "../kernels/swiglu.cuh"
#include "cuda_host/cuda_buffers.h"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

extern "C" {
#include "../train/swiglu.h"
}

// ---------------------------------------------------------------------------------------
// 1. The reference

static double silu_double(double g) { return g / (1 + exp(-g)); }

// L = Σ R·silu(g)·u in double.
static double loss_double(const double *g, const double *u, const double *R, int n) {
    double L = 0;
    for (int i = 0; i < n; i++) L += R[i] * silu_double(g[i]) * u[i];
    return L;
}

TEST(reference_matches_double_and_finite_differences) {
    enum { n = 64 };
    uint64_t rng = 1;
    double g[n], u[n], R[n];
    float gf[n], uf[n], Rf[n], h[n], dg[n], du[n], inplace[n], dg2[n];
    for (int i = 0; i < n; i++) {
        gf[i] = (float)(24 * rng_uniform(&rng) - 12), uf[i] = (float)(4 * rng_uniform(&rng) - 2);
        Rf[i] = (float)(2 * rng_uniform(&rng) - 1);
        g[i] = gf[i], u[i] = uf[i], R[i] = Rf[i];
    }
    swiglu_forward(gf, uf, h, n);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        double want = silu_double(g[i]) * u[i];
        if (fabs(h[i] - want) > 1e-6 * fabs(want) + 1e-30) {
            if (bad++ < 3) printf("  h[%d] = %.9g, double %.9g\n", i, h[i], want);
        }
    }
    CHECK_INT(bad, 0);

    swiglu_backward(gf, uf, Rf, dg, du, n);
    bad = 0;
    for (int i = 0; i < n; i++) {
        double step = 1e-4, keep = g[i];
        g[i] = keep + step;
        double up = loss_double(g, u, R, n);
        g[i] = keep - step;
        double fd_g = (up - loss_double(g, u, R, n)) / (2 * step);
        g[i] = keep, keep = u[i];
        u[i] = keep + step;
        up = loss_double(g, u, R, n);
        u[i] = keep - step;
        double fd_u = (up - loss_double(g, u, R, n)) / (2 * step);
        u[i] = keep;
        // fp32 gradient against a double difference: 1e-5 relative, 1e-6 absolute for
        // gradients that cancel to near zero (dg crosses 0 near g = -1.28)
        if (fabs(dg[i] - fd_g) > 1e-5 * fabs(fd_g) + 1e-6 || fabs(du[i] - fd_u) > 1e-5 * fabs(fd_u) + 1e-6) {
            if (bad++ < 3)
                printf("  [%d] g %.4g: dg %.9g (fd %.9g), du %.9g (fd %.9g)\n", i, g[i], dg[i], fd_g, du[i], fd_u);
        }
    }
    CHECK_INT(bad, 0);

    // in place, as train/model.c calls it: du over dh, and dg over dh
    memcpy(inplace, Rf, sizeof(Rf));
    swiglu_backward(gf, uf, inplace, dg2, inplace, n);
    CHECK(memcmp(inplace, du, sizeof(du)) == 0 && memcmp(dg2, dg, sizeof(dg)) == 0);
    memcpy(inplace, Rf, sizeof(Rf));
    swiglu_backward(gf, uf, inplace, inplace, dg2, n);
    CHECK(memcmp(inplace, dg, sizeof(dg)) == 0 && memcmp(dg2, du, sizeof(du)) == 0);
}

// ---------------------------------------------------------------------------------------
// 2. The kernel against the reference

// offset: elements past a 16-byte boundary for each of the five buffers (dh, g, u, and the
// outputs); in_place: h over g, dg over dh and du over u.
struct Shape {
    size_t n;
    int offset[3], in_place;
};

static const Shape kShapes[] = {
    {1, {0, 0, 0}, 0},     {7, {0, 0, 0}, 0},     {8, {0, 0, 0}, 0},    {9, {0, 0, 0}, 0},
    {2053, {0, 0, 0}, 0},  {2053, {0, 0, 0}, 1},  {4096, {1, 1, 1}, 0}, {4096, {0, 0, 3}, 0},
    {14343, {0, 0, 0}, 0}, {3 * 4096, {0, 0, 0}, 1},
};

static double worst_h, worst_du, worst_dg;

// Counts elements with |got − ref| > tol[i], printing the first few; raises *worst.
static int count_bad(const char *what, const Shape &s, const float *got, const float *ref, const float *tol,
                     double *worst) {
    int bad = 0;
    for (size_t i = 0; i < s.n; i++) {
        double e = fabs(got[i] - ref[i]);
        if (tol[i] > 0 && e / tol[i] > *worst) *worst = e / tol[i];
        if (!(e <= tol[i]) && bad++ < 3)
            printf("  n=%zu %s[%zu]: kernel %.7g, reference %.7g, tolerance %.3g\n", s.n, what, i, got[i], ref[i],
                   tol[i]);
    }
    return bad;
}

static void kernel_check(const Shape &s, uint64_t seed) {
    uint64_t rng = seed;
    size_t n = s.n;
    Buf g = buf_random(&rng, n, s.offset[0], -12, 12), u = buf_random(&rng, n, s.offset[1], -4, 4);
    Buf dh = buf_random(&rng, n, s.offset[2], -2, 2), h = buf_output(n, s.offset[2]);
    Buf dg = buf_output(n, s.offset[1]), du = buf_output(n, s.offset[0]);
    float *ref = (float *)xmalloc(n * sizeof(float)), *ref2 = (float *)xmalloc(n * sizeof(float));
    float *got = (float *)xmalloc(n * sizeof(float)), *tol = (float *)xmalloc(n * sizeof(float));
    int bad = 0;

    // backward first, since the in-place forward overwrites g
    __nv_bfloat16 *dg_out = s.in_place ? dh.dev : dg.dev, *du_out = s.in_place ? u.dev : du.dev;
    swiglu_backward(dg_out, du_out, dh.dev, g.dev, u.dev, n, 0);
    swiglu_backward(g.host, u.host, dh.host, ref, ref2, n);  // ref = dg, ref2 = du
    buf_read(got, dg_out, n);
    for (size_t i = 0; i < n; i++) tol[i] = swiglu_dg_tolerance(ref[i], dh.host[i], g.host[i], u.host[i]);
    bad += count_bad("dg", s, got, ref, tol, &worst_dg);
    buf_read(got, du_out, n);
    for (size_t i = 0; i < n; i++) tol[i] = swiglu_forward_tolerance(ref2[i]);
    bad += count_bad("du", s, got, ref2, tol, &worst_du);

    if (s.in_place) buf_read(u.host, u.dev, n);  // u was overwritten by du: the forward's u
    __nv_bfloat16 *h_out = s.in_place ? g.dev : h.dev;
    swiglu_forward(h_out, g.dev, u.dev, n, 0);
    swiglu_forward(g.host, u.host, ref, n);
    buf_read(got, h_out, n);
    for (size_t i = 0; i < n; i++) tol[i] = swiglu_forward_tolerance(ref[i]);
    bad += count_bad("h", s, got, ref, tol, &worst_h);
    CHECK_INT(bad, 0);
    free(ref), free(ref2), free(got), free(tol);
    buf_free(&g), buf_free(&u), buf_free(&dh), buf_free(&h), buf_free(&dg), buf_free(&du);
}

TEST(kernel_matches_reference) {
    uint64_t seed = 100;
    for (const Shape &s : kShapes) kernel_check(s, seed++);
    printf("  worst error / tolerance: h %.3f, du %.3f, dg %.3f\n", worst_h, worst_du, worst_dg);
}

// ---------------------------------------------------------------------------------------
// 3. torch's bf16 computation, bit for bit

static float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

TEST(kernel_follows_torch_cast_order) {
    const size_t n = 8 * 1000 + 5;
    uint64_t rng = 300;
    Buf g = buf_random(&rng, n, 0, -20, 20), u = buf_random(&rng, n, 0, -4, 4), dh = buf_random(&rng, n, 0, -2, 2);
    Buf h = buf_output(n, 0), dg = buf_output(n, 0), du = buf_output(n, 0);
    float *got_h = (float *)xmalloc(n * sizeof(float)), *got_dg = (float *)xmalloc(n * sizeof(float));
    float *got_du = (float *)xmalloc(n * sizeof(float));
    swiglu_forward(h.dev, g.dev, u.dev, n, 0);
    swiglu_backward(dg.dev, du.dev, dh.dev, g.dev, u.dev, n, 0);
    buf_read(got_h, h.dev, n), buf_read(got_dg, dg.dev, n), buf_read(got_du, du.dev, n);
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) {
        float x = g.host[i], y = u.host[i], d = dh.host[i];
        float a = round_bf16(x / (1.0f + expf(-x)));  // torch's silu_kernel, then the bf16 result
        float s = 1.0f / (1.0f + expf(-x)), da = round_bf16(d * y);
        float want_h = round_bf16(a * y), want_du = round_bf16(d * a);
        float want_dg = round_bf16(da * s * (1.0f + x * (1.0f - s)));  // silu_backward_kernel
        differ += got_h[i] != want_h || got_du[i] != want_du || got_dg[i] != want_dg;
    }
    CHECK_INT(differ, 0);
    free(got_h), free(got_dg), free(got_du);
    buf_free(&g), buf_free(&u), buf_free(&dh), buf_free(&h), buf_free(&dg), buf_free(&du);
}

int main(void) {
    RUN(reference_matches_double_and_finite_differences);
    RUN(kernel_matches_reference);
    RUN(kernel_follows_torch_cast_order);
    return test_summary();
}
