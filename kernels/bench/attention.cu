/*
 * attention.cu: sliding-window GQA flash attention (kernels/attention.cuh), forward and
 * backward, checked against exact double-precision values and timed, in the manner of
 * llm.c's dev/cuda.
 *
 *   make attention
 *   ./attention                                  the default shapes (Mistral-7B: 32 query
 *                                                heads, 8 KV heads, head_dim 128; T 4096 and
 *                                                16384; no window and W 4096)
 *   ./attention [--repeat R] T W Hq Hkv D [...]  shapes in groups of five (W 0: no window)
 *   ./attention --check [T W Hq Hkv D ...]       validation only, no timing, at awkward shapes
 *                                                (and packed conversations) plus the defaults
 *
 * For each shape: random bf16 inputs; the forward and the backward on the GPU; then, for the
 * query heads of KV head 0 (a whole GQA group, so dK and dV sum what they should) and the
 * last min(T, 256) token positions (out, lse and dQ rows of those queries, dK and dV rows of
 * those keys: a key is seen only by queries at or after it, so these need no other rows),
 * every element checked against exact values computed in double, within the per-element
 * bf16 error bounds of kernels/attention.cuh (the bounds cover the kernel's distance from the
 * exact value as well as from the fp32 reference the harness test uses). Any mismatch:
 * exit 2.
 *
 * Timing: each pass averaged over R runs after one warm-up (attention is compute-bound and
 * re-reads K/V from L2 by design, so no L2 flush). FLOPs count only the unmasked work, with
 * N = Σ_i (number of keys query i sees) per head:
 *   forward  4 · D · N · Hq           (S = Q Kᵀ and O = P V, 2 FLOPs per multiply-add)
 *   backward 10 · D · N · Hq          (the five products dV, dP, dQ, dK and the S
 *                                      recomputation; the dQ kernel's recomputation of S and
 *                                      dP, two more, is not counted)
 * reported as TFLOP/s and % of the dense BF16 tensor peak (SMs x clock x 4096 FLOP/clk on
 * sm_90, 2048 on sm_80; bench.cuh). The H100 targets this kernel is written for
 * (forward >= 300, backward >= 250 TFLOP/s) have not been measured.
 */
#include "../attention.cuh"
#include "bench.cuh"

struct Shape {
    int T, W, Hq, Hkv, D;
    int n_seg, seg_len[5];  // n_seg 0: one conversation
};

// Heads [h0, h0 + nh) of a [T, H, D] tensor, as a [T, nh, D] one.
static float *heads(const float *x, int T, int H, int D, int h0, int nh) {
    float *out = (float *)bench_malloc((size_t)T * nh * D * sizeof(float));
    for (int t = 0; t < T; t++)
        memcpy(out + (size_t)t * nh * D, x + ((size_t)t * H + h0) * D, (size_t)nh * D * sizeof(float));
    return out;
}

// Checks rows [first_row, T) of the GPU's heads [h0, h0 + nh) of a [T, H, D] tensor (D 1 for
// lse) against exact values within tol; returns the number of mismatches.
static size_t check_heads(const char *what, const float *gpu, const double *exact, const double *tol, int T, int H, int D,
                          int h0, int nh, int first_row, double *worst) {
    size_t bad = 0;
    for (int t = first_row; t < T; t++)
        for (int x = 0; x < nh * D; x++) {
            size_t e_at = (size_t)t * nh * D + x;
            double got = gpu[((size_t)t * H + h0) * D + x], e = fabs(got - exact[e_at]);
            if (tol[e_at] > 0 && e / tol[e_at] > *worst) *worst = e / tol[e_at];
            if (!(e <= tol[e_at]) && bad++ < 5)
                printf("  MISMATCH %s[token %d, %d]: gpu %.7g, exact %.7g, tolerance %.3g\n", what, t, x, got,
                       exact[e_at], tol[e_at]);
        }
    return bad;
}

static int run_shape(const Shape &s, int repeat) {
    int T = s.T, Hq = s.Hq, Hkv = s.Hkv, D = s.D, G = Hq / Hkv;
    size_t nq = (size_t)T * Hq * D, nk = (size_t)T * Hkv * D, nr = (size_t)T * Hq;
    unsigned seed = 1234u + (unsigned)T * 31u + (unsigned)(Hq * 7 + D);
    __nv_bfloat16 *q, *k, *v, *dout, *out, *dq, *dk, *dv;
    float *hq = random_bf16(&q, nq, -2, 2, &seed), *hk = random_bf16(&k, nk, -2, 2, &seed);
    float *hv = random_bf16(&v, nk, -1, 1, &seed), *hdout = random_bf16(&dout, nq, -1, 1, &seed);
    float *lse, *delta;
    int32_t *seg = (int32_t *)bench_malloc((size_t)T * sizeof(int32_t)), *dseg;
    for (int c = 0, t = 0; c < (s.n_seg ? s.n_seg : 1); c++)
        for (int i = 0; i < (s.n_seg ? s.seg_len[c] : T); i++) seg[t++] = c;
    cuda_check(cudaMalloc(&out, nq * sizeof(__nv_bfloat16)));
    cuda_check(cudaMalloc(&dq, nq * sizeof(__nv_bfloat16)));
    cuda_check(cudaMalloc(&dk, nk * sizeof(__nv_bfloat16)));
    cuda_check(cudaMalloc(&dv, nk * sizeof(__nv_bfloat16)));
    cuda_check(cudaMalloc(&lse, nr * sizeof(float)));
    cuda_check(cudaMalloc(&delta, nr * sizeof(float)));
    cuda_check(cudaMalloc(&dseg, (size_t)T * sizeof(int32_t)));
    cuda_check(cudaMemcpy(dseg, seg, (size_t)T * sizeof(int32_t), cudaMemcpyHostToDevice));

    // correctness first
    attention_forward(out, lse, q, k, v, dseg, T, Hq, Hkv, D, s.W, NULL, 0);
    attention_backward(dq, dk, dv, delta, q, k, v, out, dout, lse, dseg, T, Hq, Hkv, D, s.W, NULL, 0);
    cuda_check(cudaDeviceSynchronize());
    float *got_out = to_host(out, nq), *got_dq = to_host(dq, nq), *got_dk = to_host(dk, nk), *got_dv = to_host(dv, nk);
    float *got_lse = (float *)bench_malloc(nr * sizeof(float));
    cuda_check(cudaMemcpy(got_lse, lse, nr * sizeof(float), cudaMemcpyDeviceToHost));
    // KV head 0's group: query heads [0, G), the GPU's out and lse as the backward's inputs
    float *gq = heads(hq, T, Hq, D, 0, G), *gk = heads(hk, T, Hkv, D, 0, 1), *gv = heads(hv, T, Hkv, D, 0, 1);
    float *gdout = heads(hdout, T, Hq, D, 0, G), *gout = heads(got_out, T, Hq, D, 0, G);
    float *glse = heads(got_lse, T, Hq, 1, 0, G);
    size_t gq_n = (size_t)T * G * D, gk_n = (size_t)T * D;
    double *ex_out = (double *)bench_malloc(gq_n * 8), *tol_out = (double *)bench_malloc(gq_n * 8);
    double *ex_lse = (double *)bench_malloc((size_t)T * G * 8), *tol_lse = (double *)bench_malloc((size_t)T * G * 8);
    double *ex_dq = (double *)bench_malloc(gq_n * 8), *tol_dq = (double *)bench_malloc(gq_n * 8);
    double *ex_dk = (double *)bench_malloc(gk_n * 8), *tol_dk = (double *)bench_malloc(gk_n * 8);
    double *ex_dv = (double *)bench_malloc(gk_n * 8), *tol_dv = (double *)bench_malloc(gk_n * 8);
    int first_row = T > 256 ? T - 256 : 0;
    attention_forward_bounds(ex_out, ex_lse, tol_out, tol_lse, gq, gk, gv, seg, T, G, 1, D, s.W, first_row);
    attention_backward_bounds(ex_dq, ex_dk, ex_dv, tol_dq, tol_dk, tol_dv, gq, gk, gv, gout, gdout, glse, seg, T, G, 1,
                              D, s.W, first_row);
    double w_out = 0, w_lse = 0, w_dq = 0, w_dk = 0, w_dv = 0;
    size_t bad = check_heads("out", got_out, ex_out, tol_out, T, Hq, D, 0, G, first_row, &w_out);
    bad += check_heads("lse", got_lse, ex_lse, tol_lse, T, Hq, 1, 0, G, first_row, &w_lse);
    bad += check_heads("dq", got_dq, ex_dq, tol_dq, T, Hq, D, 0, G, first_row, &w_dq);
    bad += check_heads("dk", got_dk, ex_dk, tol_dk, T, Hkv, D, 0, 1, first_row, &w_dk);
    bad += check_heads("dv", got_dv, ex_dv, tol_dv, T, Hkv, D, 0, 1, first_row, &w_dv);
    printf("T %d W %d heads %d/%d D %d, %d conversation(s): worst error / tolerance: out %.3f, lse %.3f, dq %.3f, "
           "dk %.3f, dv %.3f -> %s\n",
           T, s.W, Hq, Hkv, D, s.n_seg ? s.n_seg : 1, w_out, w_lse, w_dq, w_dk, w_dv,
           bad ? "MISMATCH" : "all results match");

    if (repeat > 0) {  // then speed (not with --check)
        double visible = 0;  // (query, key) pairs per head
        for (int i = 0; i < T; i++) visible += i - attention_first_key(seg, i, s.W) + 1;
        print_flops("forward",
                    time_warm([&] { attention_forward(out, lse, q, k, v, dseg, T, Hq, Hkv, D, s.W, NULL, 0); }, repeat),
                    4.0 * D * visible * Hq);
        print_flops("backward", time_warm([&] {
            attention_backward(dq, dk, dv, delta, q, k, v, out, dout, lse, dseg, T, Hq, Hkv, D, s.W, NULL, 0);
        }, repeat), 10.0 * D * visible * Hq);
    }

    free(hq), free(hk), free(hv), free(hdout), free(seg), free(got_out), free(got_dq), free(got_dk), free(got_dv);
    free(got_lse), free(gq), free(gk), free(gv), free(gdout), free(gout), free(glse);
    free(ex_out), free(tol_out), free(ex_lse), free(tol_lse), free(ex_dq), free(tol_dq), free(ex_dk), free(tol_dk);
    free(ex_dv), free(tol_dv);
    cuda_check(cudaFree(q)), cuda_check(cudaFree(k)), cuda_check(cudaFree(v)), cuda_check(cudaFree(dout));
    cuda_check(cudaFree(out)), cuda_check(cudaFree(dq)), cuda_check(cudaFree(dk)), cuda_check(cudaFree(dv));
    cuda_check(cudaFree(lse)), cuda_check(cudaFree(delta)), cuda_check(cudaFree(dseg));
    return bad ? 1 : 0;
}

static const char *kUsage = "usage: attention [--repeat R | --check] [T W Hq Hkv D ...]   (shapes in groups of five; "
                            "W 0: no window; D 64, 96 or 128; Hkv divides Hq)\n";

int main(int argc, char **argv) {
    int repeat = 20, check = 0, values[5 * 16], n_values = 0;
    for (int i = 1; i < argc; i++) {
        char *end;
        long x = strtol(argv[i], &end, 10);
        if (!strcmp(argv[i], "--repeat") && i + 1 < argc) {
            repeat = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--check")) {
            check = 1;
        } else if (n_values < 5 * 16 && *argv[i] && !*end && x >= 0 && x <= (1 << 24)) {
            values[n_values++] = (int)x;
        } else {
            fprintf(stderr, "%s", kUsage);
            return 1;
        }
    }
    Shape shapes[32];
    int n_shapes = 0;
    for (int i = 0; i + 4 < n_values; i += 5) {
        Shape s = {values[i], values[i + 1], values[i + 2], values[i + 3], values[i + 4], 0, {0}};
        if (s.T < 1 || s.Hq < 1 || s.Hkv < 1 || s.Hq % s.Hkv || (s.D != 64 && s.D != 96 && s.D != 128)) {
            fprintf(stderr, "%s", kUsage);
            return 1;
        }
        shapes[n_shapes++] = s;
    }
    if (n_values % 5 || repeat < 1) {
        fprintf(stderr, "%s", kUsage);
        return 1;
    }
    const Shape mistral[] = {
        {4096, 0, 32, 8, 128, 0, {0}},
        {4096, 4096, 32, 8, 128, 0, {0}},
        {16384, 0, 32, 8, 128, 0, {0}},
        {16384, 4096, 32, 8, 128, 0, {0}},
    };
    const Shape awkward[] = {
        {1, 0, 4, 4, 64, 0, {0}},
        {17, 5, 8, 2, 128, 0, {0}},
        {129, 64, 6, 1, 96, 2, {65, 64}},
        {300, 0, 32, 8, 128, 5, {64, 1, 100, 35, 100}},
        {1000, 100, 8, 8, 64, 3, {333, 1, 666}},
        {2049, 1, 4, 2, 128, 0, {0}},
    };
    if (n_shapes == 0) {
        if (check)
            for (const Shape &s : awkward) shapes[n_shapes++] = s;
        for (const Shape &s : mistral) shapes[n_shapes++] = s;
    }
    if (check) repeat = 0;

    int dev = 0;
    cudaDeviceProp p;
    cuda_check(cudaGetDevice(&dev));
    cuda_check(cudaGetDeviceProperties(&p, dev));
    double peak = bf16_peak();
    if (peak > 0)
        printf("%s: dense BF16 tensor peak %.1f TFLOP/s; %d timed runs each\n", p.name, peak / 1e12, repeat);
    else
        printf("%s: dense BF16 peak not tabulated for sm_%d%d; %d timed runs each\n", p.name, p.major, p.minor, repeat);
    int failed = 0;
    for (int i = 0; i < n_shapes; i++) failed |= run_shape(shapes[i], repeat);
    return failed ? 2 : 0;
}
