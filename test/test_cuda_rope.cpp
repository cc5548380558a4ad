// test_cuda_rope.cpp: RoPE, the CPU reference and the kernel.
//
// 1. The reference (train/rope.c, fp32) against the rotation in double written here from
//    the formulas (small positions, where fp32 angles are within 1e-5 of the exact ones),
//    its backward against central finite differences in double of L = Σ R·rope(x), and,
//    at large positions (32767 and beyond, where fp32 angles are what transformers uses,
//    not the exact ones), the transpose property Σ y·F(x) = Σ B(y)·x of the fp32 forward F
//    and backward B.
// 2. The kernel (kernels/rope.cuh), run in the CUDA-on-CPU harness, forward and backward,
//    against the reference at awkward shapes: one token, head_dim 2, 6, 64, 96, 128 and 256,
//    GQA (and more K heads than Q heads), no K, positions restarting mid-batch, positions
//    32767 and 131071, theta 1e4/1e6/1e8, misaligned Q and K (the element-wise path), more
//    pairs than threads. Bound (kernels/rope.cuh): u·|ref| + (1 + u)(2u + u² + 16·2^-24)·m,
//    u = 2^-8, m = |x1·cos| + |x2·sin| of that element.
// 3. The kernel against a model of transformers' bf16 computation (cos and sin rounded to
//    bf16, each product and the sum rounded; autograd's backward), bit for bit: the harness
//    has the same libm cosf/sinf as the model.
// 4. A head_dim the kernel cannot take: one line on stderr and exit status 1.
#include "../kernels/rope.cuh"
#include "cuda_host/cuda_buffers.h"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

// ---------------------------------------------------------------------------------------
// 1. The reference

// The rotation in double, from the formulas of train/rope.h (not from rope.c).
static void rope_double(double *x, const int32_t *pos, int T, int heads, int D, double theta) {
    int half = D / 2;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < heads; h++)
            for (int j = 0; j < half; j++) {
                double a = pos[t] * pow(theta, -2.0 * j / D), *v = x + ((size_t)t * heads + h) * D;
                double x1 = v[j], x2 = v[j + half];
                v[j] = x1 * cos(a) - x2 * sin(a);
                v[j + half] = x2 * cos(a) + x1 * sin(a);
            }
}

enum { RT = 6, RH = 3, RD = 8, RN = RT * RH * RD };
static const int32_t kSmallPositions[RT] = {0, 1, 2, 0, 1, 37};  // a second conversation restarts at 0

static double loss_double(const double *x, const double *R, double theta) {
    double y[RN], L = 0;
    memcpy(y, x, sizeof(y));
    rope_double(y, kSmallPositions, RT, RH, RD, theta);
    for (int i = 0; i < RN; i++) L += R[i] * y[i];
    return L;
}

TEST(reference_matches_double_and_finite_differences) {
    for (double theta : {1e4, 1e6}) {
        uint64_t rng = (uint64_t)theta;
        float xf[RN], Rf[RN];
        double x[RN], R[RN], y[RN];
        for (int i = 0; i < RN; i++) {
            x[i] = xf[i] = (float)(4 * rng_uniform(&rng) - 2);
            R[i] = Rf[i] = (float)(2 * rng_uniform(&rng) - 1);
        }
        memcpy(y, x, sizeof(y));
        rope_double(y, kSmallPositions, RT, RH, RD, theta);
        rope_apply(xf, kSmallPositions, RT, RH, RD, theta, 1);
        rope_apply(Rf, kSmallPositions, RT, RH, RD, theta, -1);  // the backward of L's gradient R
        int bad = 0;
        for (int i = 0; i < RN; i++) {
            int j = i % RD, other = j < RD / 2 ? i + RD / 2 : i - RD / 2;
            // fp32 inv_freq and angles: within ~5e-6 rad of double's at position 37
            double tol = 2e-5 * (fabs(x[i]) + fabs(x[other])) + 1e-7;
            if (fabs(xf[i] - y[i]) > tol && bad++ < 3)
                printf("  theta %g y[%d]: %.9g, double %.9g\n", theta, i, xf[i], y[i]);
            double keep = x[i], step = 1e-3;  // L is linear in x: the difference is exact up to rounding
            x[i] = keep + step;
            double up = loss_double(x, R, theta);
            x[i] = keep - step;
            double fd = (up - loss_double(x, R, theta)) / (2 * step);
            x[i] = keep;
            tol = 2e-5 * (fabs(R[i]) + fabs(R[other])) + 1e-7;
            if (fabs(Rf[i] - fd) > tol && bad++ < 3)
                printf("  theta %g dx[%d]: %.9g, finite difference %.9g\n", theta, i, Rf[i], fd);
        }
        CHECK_INT(bad, 0);
    }
}

// Σ y·F(x) = Σ B(y)·x for the fp32 reference at large positions and a GQA-sized head count.
TEST(reference_backward_is_the_transpose_of_forward) {
    enum { T = 4, H = 5, D = 128, N = T * H * D };
    const int32_t positions[T] = {32767, 0, 32766, 131071};
    static float x[N], y[N], fx[N], by[N];
    uint64_t rng = 7;
    for (int i = 0; i < N; i++) {
        x[i] = fx[i] = (float)(2 * rng_uniform(&rng) - 1);
        y[i] = by[i] = (float)(2 * rng_uniform(&rng) - 1);
    }
    rope_apply(fx, positions, T, H, D, 1e6, 1);
    rope_apply(by, positions, T, H, D, 1e6, -1);
    double lhs = 0, rhs = 0, mag = 0;
    for (int i = 0; i < N; i++) {
        lhs += (double)y[i] * fx[i], rhs += (double)by[i] * x[i];
        mag += fabs((double)x[i] * y[i]);
    }
    // each side's fp32 rotation is within a few 2^-24 of the values it rotates
    CHECK(fabs(lhs - rhs) <= 1e-6 * mag);
    // and B(F(x)) = x: the rotation by −a undoes the one by a
    rope_apply(fx, positions, T, H, D, 1e6, -1);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += fabsf(fx[i] - x[i]) > 1e-6f;
    CHECK_INT(bad, 0);
}

// ---------------------------------------------------------------------------------------
// 2. The kernel against the reference

struct Shape {
    int N, n_heads, n_kv_heads, head_dim;
    double theta;
    int offset;  // elements past 16-byte alignment, for Q and K
    int first;   // the first conversation's first position; the rest restart at 0 every 7 tokens
};

static const Shape kShapes[] = {
    {1, 1, 1, 64, 1e4, 0, 0},      {1, 1, 1, 2, 1e4, 0, 5},       {3, 2, 1, 6, 1e4, 0, 1},
    {9, 4, 1, 64, 1e4, 0, 0},      {7, 3, 2, 96, 1e6, 0, 32763},  {12, 8, 2, 128, 1e6, 0, 32760},
    {4, 2, 4, 256, 1e8, 0, 131068}, {5, 4, 2, 128, 1e6, 1, 100},  {3, 2, 0, 128, 1e6, 0, 0},
    {2, 40, 24, 256, 1e6, 0, 32766}, {6, 3, 1, 96, 1e4, 3, 32765},
};

static int32_t *shape_positions(const Shape &s) {
    int32_t *p = (int32_t *)xmalloc((size_t)s.N * sizeof(int32_t));
    int first_len = 5;
    for (int t = 0; t < s.N; t++) p[t] = t < first_len ? s.first + t : (t - first_len) % 7;
    return p;
}

static double worst_forward, worst_backward;

// Runs the kernel in `direction` on random Q and K and compares with rope_apply; returns the
// number of elements outside the bound.
static int kernel_check(const Shape &s, int direction, uint64_t seed) {
    uint64_t rng = seed;
    size_t nq = (size_t)s.N * s.n_heads * s.head_dim, nk = (size_t)s.N * s.n_kv_heads * s.head_dim;
    Buf q = buf_random(&rng, nq, s.offset, -4, 4), k = buf_random(&rng, nk, s.offset, -4, 4);
    int32_t *positions = shape_positions(s), *dpos;
    cuda_check(cudaMalloc(&dpos, (size_t)s.N * sizeof(int32_t)));
    cuda_check(cudaMemcpy(dpos, positions, (size_t)s.N * sizeof(int32_t), cudaMemcpyHostToDevice));
    __nv_bfloat16 *kdev = s.n_kv_heads ? k.dev : NULL;
    if (direction > 0)
        rope_forward(q.dev, kdev, dpos, s.N, s.n_heads, s.n_kv_heads, s.head_dim, s.theta, 0);
    else
        rope_backward(q.dev, kdev, dpos, s.N, s.n_heads, s.n_kv_heads, s.head_dim, s.theta, 0);

    int bad = 0;
    double *worst = direction > 0 ? &worst_forward : &worst_backward;
    for (int which = 0; which < 2; which++) {
        Buf &b = which ? k : q;
        int heads = which ? s.n_kv_heads : s.n_heads;
        size_t n = which ? nk : nq;
        float *ref = (float *)xmalloc(n * sizeof(float) + 1), *got = (float *)xmalloc(n * sizeof(float) + 1);
        float *tol = (float *)xmalloc(n * sizeof(float) + 1);
        memcpy(ref, b.host, n * sizeof(float));
        rope_apply(ref, positions, s.N, heads, s.head_dim, s.theta, direction);
        rope_tolerances(tol, b.host, ref, positions, s.N, heads, s.head_dim, s.theta);
        buf_read(got, b.dev, n);
        for (size_t i = 0; i < n; i++) {
            double e = fabs(got[i] - ref[i]);
            if (tol[i] > 0 && e / tol[i] > *worst) *worst = e / tol[i];
            if (!(e <= tol[i]) && bad++ < 3)
                printf("  N=%d D=%d %s %s[%zu]: kernel %.7g, reference %.7g, tolerance %.3g\n", s.N, s.head_dim,
                       direction > 0 ? "forward" : "backward", which ? "k" : "q", i, got[i], ref[i], tol[i]);
        }
        free(ref), free(got), free(tol);
    }
    free(positions);
    cuda_check(cudaFree(dpos));
    buf_free(&q), buf_free(&k);
    return bad;
}

TEST(kernel_forward_matches_reference) {
    uint64_t seed = 100;
    for (const Shape &s : kShapes) CHECK_INT(kernel_check(s, 1, seed++), 0);
    printf("  forward, worst error / tolerance %.3f\n", worst_forward);
}

TEST(kernel_backward_matches_reference) {
    uint64_t seed = 200;
    for (const Shape &s : kShapes) CHECK_INT(kernel_check(s, -1, seed++), 0);
    printf("  backward, worst error / tolerance %.3f\n", worst_backward);
}

// ---------------------------------------------------------------------------------------
// 3. transformers' bf16 computation, bit for bit

static float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

TEST(kernel_follows_transformers_cast_order) {
    const Shape s = {12, 8, 2, 128, 1e6, 0, 32760};
    size_t nq = (size_t)s.N * s.n_heads * s.head_dim, nk = (size_t)s.N * s.n_kv_heads * s.head_dim;
    int32_t *positions = shape_positions(s), *dpos;
    cuda_check(cudaMalloc(&dpos, (size_t)s.N * sizeof(int32_t)));
    cuda_check(cudaMemcpy(dpos, positions, (size_t)s.N * sizeof(int32_t), cudaMemcpyHostToDevice));
    float inv_freq[ROPE_MAX_HEAD_DIM / 2], *got = (float *)xmalloc(nq * sizeof(float));
    rope_inv_freq(inv_freq, s.head_dim, s.theta);
    int half = s.head_dim / 2;
    size_t differ = 0;
    for (int direction : {1, -1}) {
        uint64_t rng = 300 + (uint64_t)(direction + 1);
        Buf q = buf_random(&rng, nq, 0, -4, 4), k = buf_random(&rng, nk, 0, -4, 4);
        if (direction > 0)
            rope_forward(q.dev, k.dev, dpos, s.N, s.n_heads, s.n_kv_heads, s.head_dim, s.theta, 0);
        else
            rope_backward(q.dev, k.dev, dpos, s.N, s.n_heads, s.n_kv_heads, s.head_dim, s.theta, 0);
        buf_read(got, q.dev, nq);  // Q only: K is the same code
        for (int t = 0; t < s.N; t++)
            for (int h = 0; h < s.n_heads; h++)
                for (int j = 0; j < half; j++) {
                    size_t i = ((size_t)t * s.n_heads + h) * s.head_dim + j;
                    float a = (float)positions[t] * inv_freq[j];  // cos/sin in fp32, `.to(bf16)`
                    float c = round_bf16(cosf(a)), sn = round_bf16(sinf(a)), x1 = q.host[i], x2 = q.host[i + half];
                    float lo, hi;
                    if (direction > 0) {  // q·cos + rotate_half(q)·sin
                        lo = round_bf16(round_bf16(x1 * c) - round_bf16(x2 * sn));
                        hi = round_bf16(round_bf16(x2 * c) + round_bf16(x1 * sn));
                    } else {  // autograd: g·cos + rotate_half's transpose of (g·sin)
                        lo = round_bf16(round_bf16(x1 * c) + round_bf16(x2 * sn));
                        hi = round_bf16(round_bf16(x2 * c) - round_bf16(x1 * sn));
                    }
                    differ += (got[i] != lo) + (got[i + half] != hi);
                }
        buf_free(&q), buf_free(&k);
    }
    CHECK_INT(differ, 0);
    free(positions), free(got);
    cuda_check(cudaFree(dpos));
}

// ---------------------------------------------------------------------------------------
// 4. Bad head_dim

static int bad_head_dim;
static void rope_with_bad_head_dim(void) { rope_forward(NULL, NULL, NULL, 1, 1, 0, bad_head_dim, 1e4, 0); }

TEST(bad_head_dim_is_one_line_and_exit_1) {
    for (int d : {5, 258, 0}) {
        char report[512], want[64];
        bad_head_dim = d;
        snprintf(want, sizeof(want), "error: rope: head_dim %d is not", d);
        CHECK_INT(run_in_child(rope_with_bad_head_dim, report, sizeof(report)), 1);
        CHECK(strstr(report, want) != NULL);
    }
}

int main(void) {
    RUN(reference_matches_double_and_finite_differences);
    RUN(reference_backward_is_the_transpose_of_forward);
    RUN(kernel_forward_matches_reference);
    RUN(kernel_backward_matches_reference);
    RUN(kernel_follows_transformers_cast_order);
    RUN(bad_head_dim_is_one_line_and_exit_1);
    return test_summary();
}
