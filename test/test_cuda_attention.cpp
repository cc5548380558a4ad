// test_cuda_attention.cpp: sliding-window GQA flash attention (kernels/attention.cuh),
// forward and backward, in the CUDA-on-CPU harness.
//
// 1. The CPU reference (train/attention.c, fp32) against the exact values computed in double
//    from the formulas (attention_forward_bounds / attention_backward_bounds): out, lse, dq,
//    dk, dv within 1e-4 of the error bound's scale plus 1e-5 relative (fp32 against double).
// 2. The kernels against that reference, every output element within the bf16 error bounds
//    stated at the end of kernels/attention.cuh, over a covering set of shapes (below; not
//    the full cross product, which the emulated mma makes too slow under ASan): T = 1, 17,
//    64, 129, 300; W none, 1, 5, 64, = T, > T; heads 4/4, 8/2, 6/1 (and 2/1, 2/2, 1/1 at
//    T = 300); head_dim 64, 128 and 96 once; packed batches of 1, 2 and 5 conversations of
//    uneven lengths. Every row is checked, so the first token of each conversation (which
//    sees only itself) is too, and once more on its own: its output must be its own value
//    row. The backward gets the same lse on both sides (the reference's) and the kernel's out.
//    With one conversation the kernels get seg = NULL (the reference all-equal ids); the
//    packed ids are not in increasing order (only neighbours must differ).
// 3. Tile skipping: the kernels' debug counters equal the exact number of tile pairs that
//    hold a visible (query, key) pair, counted here by brute force, and with W = 32 the
//    forward's count grows linearly in T (T = 256, 512, 1024).
// 4. The same bits under different thread schedules (the backward has no atomics).
// 5. Shapes the kernels do not take (head_dim 80, KV heads not dividing the heads, a
//    misaligned tensor): a one-line error and exit status 1.
//
//   build/san/test_cuda_attention                 the tests
//   build/san/test_cuda_attention --shape T W Hq Hkv D [len ...]   one shape (W 0 = none; the
//       conversation lengths must add up to T, default one conversation)
#include "../kernels/attention.cuh"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

extern "C" {
#include "../common/half.h"
#include "../common/util.h"
#include "../train/attention.h"
}

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct Shape {
    int T, W, Hq, Hkv, D;
    int n_seg, seg_len[8];  // n_seg 0: one conversation
};

// bf16 data on the device with its float values on the host.
struct Tensor {
    __nv_bfloat16 *dev;
    float *host;
    size_t n;
};

static Tensor tensor_random(uint64_t *rng, size_t n, float lo, float hi) {
    Tensor x = {NULL, (float *)xmalloc(n * sizeof(float) + 1), n};
    uint16_t *bits = (uint16_t *)xmalloc(n * sizeof(uint16_t) + 1);
    for (size_t i = 0; i < n; i++) {
        bits[i] = f32_to_bf16((float)(lo + (hi - lo) * rng_uniform(rng)));
        x.host[i] = bf16_to_f32(bits[i]);
    }
    cuda_check(cudaMalloc(&x.dev, n * sizeof(uint16_t) + 16));
    cuda_check(cudaMemcpy(x.dev, bits, n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    free(bits);
    return x;
}

static Tensor tensor_output(size_t n) {  // left as cudaMalloc leaves it (NaN bytes)
    Tensor x = {NULL, (float *)xmalloc(n * sizeof(float) + 1), n};
    cuda_check(cudaMalloc(&x.dev, n * sizeof(uint16_t) + 16));
    return x;
}

static void tensor_read(Tensor *x) {
    uint16_t *bits = (uint16_t *)xmalloc(x->n * sizeof(uint16_t) + 1);
    cuda_check(cudaMemcpy(bits, x->dev, x->n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < x->n; i++) x->host[i] = bf16_to_f32(bits[i]);
    free(bits);
}

static void tensor_free(Tensor *x) {
    cuda_check(cudaFree(x->dev));
    free(x->host);
}

// Conversation ids per token: any ids will do as long as neighbours differ (not sorted here).
static int32_t *make_seg(const Shape &s) {
    static const int32_t ids[8] = {5, 2, 9, 0, 7, 1, 8, 3};
    int32_t *seg = (int32_t *)xmalloc((size_t)s.T * sizeof(int32_t) + 4);
    int t = 0;
    for (int c = 0; c < (s.n_seg ? s.n_seg : 1); c++)
        for (int i = 0; i < (s.n_seg ? s.seg_len[c] : s.T); i++) seg[t++] = ids[c];
    return seg;
}

// One shape's random inputs and the kernels' outputs (left as cudaMalloc leaves them), on
// the device and the host; seg the conversation ids, dseg their device copy, dlse and
// ddelta the row statistics on the device.
struct Problem {
    size_t nq, nk, nr;
    Tensor q, k, v, dout, out, dq, dk, dv;
    int32_t *seg, *dseg;
    float *dlse, *ddelta;
};

static Problem problem_create(const Shape &s, uint64_t seed) {
    Problem p;
    uint64_t rng = seed;
    p.nq = (size_t)s.T * s.Hq * s.D, p.nk = (size_t)s.T * s.Hkv * s.D, p.nr = (size_t)s.T * s.Hq;
    p.q = tensor_random(&rng, p.nq, -2, 2), p.k = tensor_random(&rng, p.nk, -2, 2);
    p.v = tensor_random(&rng, p.nk, -1, 1), p.dout = tensor_random(&rng, p.nq, -1, 1);
    p.out = tensor_output(p.nq), p.dq = tensor_output(p.nq), p.dk = tensor_output(p.nk), p.dv = tensor_output(p.nk);
    p.seg = make_seg(s);
    cuda_check(cudaMalloc(&p.dseg, (size_t)s.T * sizeof(int32_t)));
    cuda_check(cudaMalloc(&p.dlse, p.nr * sizeof(float)));
    cuda_check(cudaMalloc(&p.ddelta, p.nr * sizeof(float)));
    cuda_check(cudaMemcpy(p.dseg, p.seg, (size_t)s.T * sizeof(int32_t), cudaMemcpyHostToDevice));
    return p;
}

static void problem_free(Problem *p) {
    free(p->seg);
    cuda_check(cudaFree(p->dseg));
    cuda_check(cudaFree(p->dlse));
    cuda_check(cudaFree(p->ddelta));
    tensor_free(&p->q), tensor_free(&p->k), tensor_free(&p->v), tensor_free(&p->dout), tensor_free(&p->out);
    tensor_free(&p->dq), tensor_free(&p->dk), tensor_free(&p->dv);
}

// Counts elements of got outside |got - ref| <= tol; prints the first few and the worst
// error / tolerance. Also checks ref (fp32) against the exact value (double), within 1e-4 of
// the magnitude the bound scales with (tol / u) plus 1e-5 relative (fp32 against double,
// section 1).
static int compare(const char *what, const Shape &s, const float *got, const float *ref, const double *exact,
                   const double *tol, size_t n) {
    int bad = 0, ref_bad = 0;
    double worst = 0;
    for (size_t x = 0; x < n; x++) {
        double e = fabs((double)got[x] - ref[x]);
        if (tol[x] > 0 && e / tol[x] > worst) worst = e / tol[x];
        if (!(e <= tol[x]) && bad++ < 3)
            printf("  T %d W %d %d/%d D %d %s[%zu]: kernel %.7g, reference %.7g, tolerance %.3g\n", s.T, s.W, s.Hq,
                   s.Hkv, s.D, what, x, got[x], ref[x], tol[x]);
        if (!(fabs(ref[x] - exact[x]) <= 1e-4 * tol[x] / kAttnU + 1e-5 * fabs(exact[x]) + 1e-6) && ref_bad++ < 3)
            printf("  %s[%zu]: reference %.7g, exact %.7g\n", what, x, ref[x], exact[x]);
    }
    if (getenv("ATTN_VERBOSE")) printf("  T %d W %d %d/%d D %d %s: worst error / tolerance %.3f\n", s.T, s.W, s.Hq, s.Hkv, s.D, what, worst);
    return bad + ref_bad;
}

static double *dalloc(size_t n) { return (double *)xmalloc(n * sizeof(double) + 8); }
static float *falloc(size_t n) { return (float *)xmalloc(n * sizeof(float) + 4); }

// Forward and backward of one shape against the reference; returns the number of mismatches.
static int check_shape(const Shape &s, uint64_t seed) {
    Problem p = problem_create(s, seed);
    const int32_t *kseg = s.n_seg ? p.dseg : NULL;  // one conversation: the kernels get no ids at all

    // forward
    attention_forward(p.out.dev, p.dlse, p.q.dev, p.k.dev, p.v.dev, kseg, s.T, s.Hq, s.Hkv, s.D, s.W, NULL, 0);
    tensor_read(&p.out);
    float *lse = falloc(p.nr), *ref_out = falloc(p.nq), *ref_lse = falloc(p.nr);
    cuda_check(cudaMemcpy(lse, p.dlse, p.nr * sizeof(float), cudaMemcpyDeviceToHost));
    attention_forward(p.q.host, p.k.host, p.v.host, p.seg, s.T, s.Hq, s.Hkv, s.D, s.W, ref_out, ref_lse);
    double *ex_out = dalloc(p.nq), *ex_lse = dalloc(p.nr), *tol_out = dalloc(p.nq), *tol_lse = dalloc(p.nr);
    attention_forward_bounds(ex_out, ex_lse, tol_out, tol_lse, p.q.host, p.k.host, p.v.host, p.seg, s.T, s.Hq, s.Hkv,
                             s.D, s.W, 0);
    int bad = compare("out", s, p.out.host, ref_out, ex_out, tol_out, p.nq);
    bad += compare("lse", s, lse, ref_lse, ex_lse, tol_lse, p.nr);
    // The first token of each conversation sees only itself: its output is its value row.
    int first_bad = 0;
    for (int i = 0; i < s.T; i++)
        if (i == 0 || p.seg[i] != p.seg[i - 1])
            for (int h = 0; h < s.Hq; h++)
                for (int d = 0; d < s.D; d++)
                    first_bad += p.out.host[((size_t)i * s.Hq + h) * s.D + d] !=
                                 p.v.host[((size_t)i * s.Hkv + h / (s.Hq / s.Hkv)) * s.D + d];
    if (first_bad) printf("  T %d: %d outputs of first tokens differ from their value rows\n", s.T, first_bad);
    bad += first_bad;

    // backward, from the kernel's out and the reference's lse on both sides
    cuda_check(cudaMemcpy(p.dlse, ref_lse, p.nr * sizeof(float), cudaMemcpyHostToDevice));
    attention_backward(p.dq.dev, p.dk.dev, p.dv.dev, p.ddelta, p.q.dev, p.k.dev, p.v.dev, p.out.dev, p.dout.dev,
                       p.dlse, kseg, s.T, s.Hq, s.Hkv, s.D, s.W, NULL, 0);
    tensor_read(&p.dq), tensor_read(&p.dk), tensor_read(&p.dv);
    float *ref_dq = falloc(p.nq), *ref_dk = falloc(p.nk), *ref_dv = falloc(p.nk);
    attention_backward(p.q.host, p.k.host, p.v.host, p.out.host, p.dout.host, ref_lse, p.seg, s.T, s.Hq, s.Hkv, s.D,
                       s.W, ref_dq, ref_dk, ref_dv);
    double *ex_dq = dalloc(p.nq), *ex_dk = dalloc(p.nk), *ex_dv = dalloc(p.nk);
    double *tol_dq = dalloc(p.nq), *tol_dk = dalloc(p.nk), *tol_dv = dalloc(p.nk);
    attention_backward_bounds(ex_dq, ex_dk, ex_dv, tol_dq, tol_dk, tol_dv, p.q.host, p.k.host, p.v.host, p.out.host,
                              p.dout.host, ref_lse, p.seg, s.T, s.Hq, s.Hkv, s.D, s.W, 0);
    bad += compare("dq", s, p.dq.host, ref_dq, ex_dq, tol_dq, p.nq);
    bad += compare("dk", s, p.dk.host, ref_dk, ex_dk, tol_dk, p.nk);
    bad += compare("dv", s, p.dv.host, ref_dv, ex_dv, tol_dv, p.nk);

    free(lse), free(ref_out), free(ref_lse), free(ref_dq), free(ref_dk), free(ref_dv);
    free(ex_out), free(ex_lse), free(tol_out), free(tol_lse), free(ex_dq), free(ex_dk), free(ex_dv);
    free(tol_dq), free(tol_dk), free(tol_dv);
    problem_free(&p);
    return bad;
}

// The covering set: each T, each window kind, each GQA ratio, each head_dim and each packing
// appears, with the large T at few heads (the emulated mma is slow under ASan).
static const Shape kShapes[] = {
    {1, 0, 4, 4, 64, 0, {0}},
    {1, 1, 8, 2, 128, 0, {0}},
    {17, 0, 8, 2, 128, 0, {0}},
    {17, 5, 6, 1, 64, 2, {9, 8}},
    {17, 64, 4, 4, 96, 0, {0}},  // W > T
    {64, 1, 4, 4, 64, 0, {0}},
    {64, 0, 6, 1, 128, 5, {1, 20, 3, 33, 7}},
    {64, 64, 8, 2, 64, 2, {40, 24}},
    {129, 5, 4, 4, 128, 0, {0}},
    {129, 0, 8, 2, 64, 5, {50, 1, 30, 2, 46}},
    {129, 64, 6, 1, 128, 2, {65, 64}},
    {129, 200, 4, 4, 64, 0, {0}},  // W > T
    {300, 0, 2, 1, 64, 2, {170, 130}},
    {300, 64, 2, 2, 128, 5, {64, 1, 100, 35, 100}},
    {300, 1, 1, 1, 64, 0, {0}},
    {300, 5, 2, 1, 128, 0, {0}},
    {300, 300, 8, 2, 64, 5, {30, 100, 7, 150, 13}},  // W = T
    {300, 0, 6, 1, 64, 0, {0}},
};

TEST(kernels_match_reference) {
    uint64_t seed = 1000;
    for (const Shape &s : kShapes) CHECK_INT(check_shape(s, seed++), 0);
}

// ---------------------------------------------------------------------------------------
// Tile skipping

// The number of (query tile of bq, key tile of bk) pairs with a visible pair, by brute force.
static long tiles_touched(const int32_t *seg, int T, int W, int bq, int bk) {
    int nq = CEIL_DIV(T, bq), nk = CEIL_DIV(T, bk);
    char *touched = (char *)calloc((size_t)nq * nk, 1);
    for (int i = 0; i < T; i++)
        for (int j = attention_first_key(seg, i, W); j <= i; j++) touched[(size_t)(i / bq) * nk + j / bk] = 1;
    long n = 0;
    for (size_t x = 0; x < (size_t)nq * nk; x++) n += touched[x];
    free(touched);
    return n;
}

// The forward's and the dK/dV kernel's tile counts for one shape (heads 1, D 64).
static void count_tiles(const Shape &s, int *fwd, int *dkdv) {
    uint64_t rng = 77;
    size_t n = (size_t)s.T * s.D;
    Tensor q = tensor_random(&rng, n, -1, 1), k = tensor_random(&rng, n, -1, 1), v = tensor_random(&rng, n, -1, 1);
    Tensor out = tensor_output(n), dq = tensor_output(n), dk = tensor_output(n), dv = tensor_output(n);
    int32_t *seg = make_seg(s), *dseg;
    float *dlse, *ddelta;
    int *dcount;
    cuda_check(cudaMalloc(&dseg, (size_t)s.T * sizeof(int32_t)));
    cuda_check(cudaMalloc(&dlse, (size_t)s.T * sizeof(float)));
    cuda_check(cudaMalloc(&ddelta, (size_t)s.T * sizeof(float)));
    cuda_check(cudaMalloc(&dcount, 2 * sizeof(int)));
    cuda_check(cudaMemset(dcount, 0, 2 * sizeof(int)));
    cuda_check(cudaMemcpy(dseg, seg, (size_t)s.T * sizeof(int32_t), cudaMemcpyHostToDevice));
    attention_forward(out.dev, dlse, q.dev, k.dev, v.dev, dseg, s.T, 1, 1, s.D, s.W, dcount, 0);
    attention_backward(dq.dev, dk.dev, dv.dev, ddelta, q.dev, k.dev, v.dev, out.dev, out.dev, dlse, dseg, s.T, 1, 1,
                       s.D, s.W, dcount + 1, 0);
    int counts[2];
    cuda_check(cudaMemcpy(counts, dcount, sizeof(counts), cudaMemcpyDeviceToHost));
    *fwd = counts[0], *dkdv = counts[1];
    long want_fwd = tiles_touched(seg, s.T, s.W, ATTN_BQ_FWD, ATTN_BK_FWD), want_dkdv = tiles_touched(seg, s.T, s.W, ATTN_BQ_DKDV, ATTN_BK);
    if (*fwd != want_fwd || *dkdv != want_dkdv)
        printf("  T %d W %d: tiles computed %d (forward), %d (dK/dV); touched by the mask %ld, %ld\n", s.T, s.W, *fwd,
               *dkdv, want_fwd, want_dkdv);
    CHECK_INT(*fwd, want_fwd);
    CHECK_INT(*dkdv, want_dkdv);
    free(seg);
    cuda_check(cudaFree(dseg));
    cuda_check(cudaFree(dlse));
    cuda_check(cudaFree(ddelta));
    cuda_check(cudaFree(dcount));
    tensor_free(&q), tensor_free(&k), tensor_free(&v), tensor_free(&out);
    tensor_free(&dq), tensor_free(&dk), tensor_free(&dv);
}

TEST(masked_tiles_are_skipped) {
    int fwd[3], dkdv[3];
    for (int x = 0; x < 3; x++) {
        Shape s = {256 << x, 32, 1, 1, 64, 0, {0}};
        count_tiles(s, &fwd[x], &dkdv[x]);
    }
    // W = 32 <= BK: each query tile needs the BQ/BK key tiles on its diagonal and the one
    // below (but the first), so doubling T doubles the count (plus one): linear in T, not
    // quadratic.
    CHECK_INT(fwd[1], 2 * fwd[0] + 1);
    CHECK_INT(fwd[2], 2 * fwd[1] + 1);
    CHECK_INT(fwd[2], (1024 / ATTN_BQ_FWD) * (ATTN_BQ_FWD / ATTN_BK_FWD + 1) - 1);
    CHECK_INT(dkdv[2] - dkdv[1], 2 * (dkdv[1] - dkdv[0]));
    // Conversations and windows that end mid-tile.
    const Shape packed[] = {
        {300, 0, 1, 1, 64, 5, {64, 1, 100, 35, 100}},
        {300, 5, 1, 1, 64, 3, {130, 70, 100}},
        {257, 100, 1, 1, 64, 2, {129, 128}},
    };
    for (const Shape &s : packed) count_tiles(s, &fwd[0], &dkdv[0]);
}

// ---------------------------------------------------------------------------------------

TEST(bits_do_not_depend_on_the_schedule) {
    const uint64_t saved_seed = cuda_host_seed();
    const Shape s = {70, 0, 4, 2, 64, 2, {33, 37}};
    Problem p = problem_create(s, 5);
    size_t total = 2 * p.nq + 2 * p.nk;
    float *first = falloc(total), *again = falloc(total);
    for (uint64_t seed = 0; seed < 3; seed++) {
        cuda_host_set_seed(seed * 1000003 + 1);
        attention_forward(p.out.dev, p.dlse, p.q.dev, p.k.dev, p.v.dev, p.dseg, s.T, s.Hq, s.Hkv, s.D, s.W, NULL, 0);
        attention_backward(p.dq.dev, p.dk.dev, p.dv.dev, p.ddelta, p.q.dev, p.k.dev, p.v.dev, p.out.dev, p.dout.dev,
                           p.dlse, p.dseg, s.T, s.Hq, s.Hkv, s.D, s.W, NULL, 0);
        tensor_read(&p.out), tensor_read(&p.dq), tensor_read(&p.dk), tensor_read(&p.dv);
        float *o = seed ? again : first;
        memcpy(o, p.out.host, p.nq * sizeof(float));
        memcpy(o + p.nq, p.dq.host, p.nq * sizeof(float));
        memcpy(o + 2 * p.nq, p.dk.host, p.nk * sizeof(float));
        memcpy(o + 2 * p.nq + p.nk, p.dv.host, p.nk * sizeof(float));
        if (seed) CHECK(memcmp(first, again, total * sizeof(float)) == 0);
    }
    cuda_host_set_seed(saved_seed);
    free(first), free(again);
    problem_free(&p);
}

// ---------------------------------------------------------------------------------------
// Bad shapes: a one-line error and exit status 1, never a fault.

static void forward_with(int Hq, int Hkv, int D, int misalign) {
    __nv_bfloat16 *x;
    float *lse;
    cuda_check(cudaMalloc(&x, 4 * 8 * 128 * sizeof(__nv_bfloat16) + 16));
    cuda_check(cudaMalloc(&lse, 64 * sizeof(float)));
    attention_forward(x + misalign, lse, x, x, x, NULL, 4, Hq, Hkv, D, 0, NULL, 0);
}
static void head_dim_80(void) { forward_with(2, 1, 80, 0); }
static void kv_heads_not_dividing(void) { forward_with(6, 4, 64, 0); }
static void misaligned_output(void) { forward_with(2, 1, 64, 1); }

TEST(bad_shapes_are_refused) {
    void (*calls[])(void) = {head_dim_80, kv_heads_not_dividing, misaligned_output};
    const char *want[] = {"needs head_dim 64, 96 or 128", "needs T >= 0 and a KV head count dividing",
                          "needs 16-byte aligned tensors"};
    for (int c = 0; c < 3; c++) {
        char report[4096];
        int status = run_in_child(calls[c], report, sizeof(report));
        CHECK_INT(status, 1);
        if (!strstr(report, want[c])) printf("  stderr was: %s\n", report);
        CHECK(strstr(report, want[c]) != NULL);
    }
}

// One shape from the command line: --shape T W Hq Hkv D [conversation lengths] (argv here
// starts at --shape).
static int parse_int(const char *s, int lo, int hi, const char *what) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0 || v < lo || v > hi) {
        fprintf(stderr, "error: %s must be an integer in [%d, %d], got '%s'\n", what, lo, hi, s);
        exit(1);
    }
    return (int)v;
}

static int run_one_shape(int argc, char **argv) {
    if (argc < 6 || argc > 6 + 8) {
        fprintf(stderr, "usage: test_cuda_attention [--shape T W Hq Hkv D [conversation lengths, up to 8, adding up to T]]\n");
        return 1;
    }
    Shape s = {parse_int(argv[1], 1, 1 << 20, "T"), parse_int(argv[2], 0, 1 << 30, "W"),
               parse_int(argv[3], 1, 1024, "Hq"), parse_int(argv[4], 1, 1024, "Hkv"), parse_int(argv[5], 64, 128, "D"),
               argc - 6, {0}};
    int sum = 0;
    for (int c = 0; c < s.n_seg; c++) sum += s.seg_len[c] = parse_int(argv[6 + c], 1, s.T, "a conversation length");
    if (s.n_seg && sum != s.T) {
        fprintf(stderr, "error: the conversation lengths add up to %d, not T = %d\n", sum, s.T);
        return 1;
    }
    if (s.Hq % s.Hkv != 0 || (s.D != 64 && s.D != 96 && s.D != 128)) {
        fprintf(stderr, "error: Hkv must divide Hq and D be 64, 96 or 128\n");
        return 1;
    }
    int bad = check_shape(s, 1);
    printf("%s shape T %d W %d heads %d/%d D %d\n", bad ? "FAIL" : "PASS", s.T, s.W, s.Hq, s.Hkv, s.D);
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    // test/run.sh passes every test program the tokenizer data directory; only --shape matters here
    if (argc > 1 && strcmp(argv[1], "--shape") == 0) return run_one_shape(argc - 1, argv + 1);
    RUN(kernels_match_reference);
    RUN(masked_tiles_are_skipped);
    RUN(bits_do_not_depend_on_the_schedule);
    RUN(bad_shapes_are_refused);
    return test_summary();
}
