/*
 * matmul.cu: the cuBLASLt wrapper (kernels/matmul.cuh) checked against a CPU reference and
 * timed, in the manner of llm.c's dev/cuda.
 *
 *   make matmul
 *   ./matmul                              the default shapes (Mistral-7B QLoRA, below)
 *   ./matmul [--repeat R] [--f32] SHAPE...  SHAPE = MxNxK:XY, X and Y each N (as stored) or
 *                                         T (transposed) for A and B, e.g. 4096x1024x4096:NT
 *   ./matmul --check [SHAPE...]           validation only, no timing (what `make test-gpu` runs)
 *
 * out[M, N] = op(A)·op(B) with A, B bf16 row-major as matmul.cuh describes; out is bf16
 * (--f32: fp32). Validation: every element of the awkward shapes (M, N, K of 1, 7, 129, 257,
 * each transpose combination, bf16 and fp32 out, beta 0 and 1), and 512 sampled elements of
 * each large shape (beta 0 and 1), against a double-precision product of the same bf16
 * inputs, within matmul_tolerance (the same bound as the harness test). Then each shape is
 * timed over R runs with a cold L2 (beta 0) and reported as TFLOP/s, counting 2·M·N·K FLOPs,
 * and as % of the dense BF16 tensor peak (SMs x clock x FLOPs/clk/SM, bench.cuh).
 *
 * Default shapes: tokens T = 4096 of Mistral-7B (hidden 4096, k/v 1024, MLP 14336, LoRA rank
 * 16). Forward x·Wᵀ (NT) for q/o, k/v, gate/up and down; the input gradients dy·W (NN); the
 * LoRA products x·Aᵀ and (x·Aᵀ)·Bᵀ (NT), dy·B (NN) and the weight gradients dyᵀ·… (TN).
 */
#include "../matmul.cuh"
#include "bench.cuh"

struct Shape {
    int M, N, K, trans_a, trans_b;
};

static const Shape kAwkward[] = {{1, 1, 1, 0, 0}, {7, 1, 129, 0, 0}, {1, 7, 7, 0, 0}, {129, 7, 1, 0, 0},
                                 {7, 129, 129, 0, 0}, {33, 17, 257, 0, 0}, {129, 257, 7, 0, 0}};
static const Shape kMistral[] = {
    {4096, 4096, 4096, 0, 1},  {4096, 1024, 4096, 0, 1}, {4096, 14336, 4096, 0, 1}, {4096, 4096, 14336, 0, 1},
    {4096, 4096, 4096, 0, 0},  {4096, 4096, 1024, 0, 0}, {4096, 4096, 14336, 0, 0}, {4096, 14336, 4096, 0, 0},
    {4096, 16, 4096, 0, 1},    {4096, 4096, 16, 0, 1},   {4096, 14336, 16, 0, 1},   {4096, 16, 4096, 0, 0},
    {16, 4096, 4096, 1, 0},    {4096, 16, 4096, 1, 0},   {14336, 16, 4096, 1, 0},
};

static Matmul mm;

static float read_out(const void *host, MatmulType type, size_t i) {
    return type == MATMUL_BF16 ? __bfloat162float(((const __nv_bfloat16 *)host)[i]) : ((const float *)host)[i];
}

// Runs one product and checks `samples` elements of it (0: all); returns the mismatches.
static size_t validate(const Shape &s, MatmulType type, float beta, size_t samples, const __nv_bfloat16 *A,
                       const float *hA, const __nv_bfloat16 *B, const float *hB, void *out, unsigned *seed) {
    size_t n = (size_t)s.M * s.N, esize = type == MATMUL_BF16 ? 2 : 4;
    unsigned char *before = (unsigned char *)bench_malloc(n * esize), *after = (unsigned char *)bench_malloc(n * esize);
    for (size_t i = 0; i < n; i++) {  // what beta multiplies (or, with beta 0, must be ignored: NaN)
        *seed = *seed * 1664525u + 1013904223u;
        float v = beta != 0 ? (float)(*seed >> 8) / 8388608.0f - 1.0f : NAN;
        if (type == MATMUL_BF16)
            ((__nv_bfloat16 *)before)[i] = __float2bfloat16(v);
        else
            ((float *)before)[i] = v;
    }
    cuda_check(cudaMemcpy(out, before, n * esize, cudaMemcpyHostToDevice));
    const float alpha = 1.0f;
    matmul(&mm, out, type, A, s.trans_a, B, s.trans_b, s.M, s.N, s.K, alpha, beta, 0);
    cuda_check(cudaMemcpy(after, out, n * esize, cudaMemcpyDeviceToHost));
    size_t bad = 0, count = samples ? samples : n;
    double worst = 0;
    for (size_t t = 0; t < count; t++) {
        size_t at = t;
        if (samples) {
            *seed = *seed * 1664525u + 1013904223u;
            at = ((size_t)*seed * 2654435761u) % n;
        }
        size_t i = at / s.N, j = at % s.N;
        double ref = 0, abs_products = 0;
        for (int l = 0; l < s.K; l++) {
            double a = s.trans_a ? hA[(size_t)l * s.M + i] : hA[i * s.K + l];
            double b = s.trans_b ? hB[j * s.K + l] : hB[(size_t)l * s.N + j];
            ref += a * b, abs_products += fabs(a * b);
        }
        double was = beta != 0 ? read_out(before, type, at) : 0, got = read_out(after, type, at);
        ref = alpha * ref + beta * was;
        double tol = matmul_tolerance(ref, abs_products, was, s.K, alpha, beta, type), e = fabs(got - ref);
        if (tol > 0 && e / tol > worst) worst = e / tol;
        if (!(e <= tol) && bad++ < 5)
            printf("  MISMATCH out[%zu][%zu]: gpu %.8g, cpu %.8g, tolerance %.3g\n", i, j, got, ref, tol);
    }
    printf("%6d x %5d x %5d  %c%c  %s out, beta %g: %zu elements checked, worst error / tolerance %.3f -> %s\n", s.M,
           s.N, s.K, s.trans_a ? 'T' : 'N', s.trans_b ? 'T' : 'N', type == MATMUL_BF16 ? "bf16" : "fp32", beta, count,
           worst, bad ? "MISMATCH" : "ok");
    free(before), free(after);
    return bad;
}

// Validates a shape (both beta values; both output types when awkward), then times it.
static size_t run_shape(const Shape &s, int awkward, MatmulType timed_type, int repeat, ColdL2 cold) {
    unsigned seed = 1234u + (unsigned)s.M * 31u + (unsigned)s.N * 7u + (unsigned)s.K;
    size_t a_n = (size_t)s.M * s.K, b_n = (size_t)s.K * s.N;
    __nv_bfloat16 *A, *B;
    float *hA = random_bf16(&A, a_n, -1, 1, &seed), *hB = random_bf16(&B, b_n, -1, 1, &seed);
    void *out;
    cuda_check(cudaMalloc(&out, (size_t)s.M * s.N * sizeof(float)));
    size_t bad = 0;
    for (int t = 0; t < 2; t++) {
        MatmulType type = awkward ? (MatmulType)t : timed_type;
        if (!awkward && t) break;
        bad += validate(s, type, 0.0f, awkward ? 0 : 512, A, hA, B, hB, out, &seed);
        bad += validate(s, type, 1.0f, awkward ? 0 : 512, A, hA, B, hB, out, &seed);
    }
    if (repeat > 0) {
        float ms = time_cold([&] { matmul(&mm, out, timed_type, A, s.trans_a, B, s.trans_b, s.M, s.N, s.K, 1, 0, 0); },
                             repeat, cold);
        print_flops("matmul", ms, 2.0 * s.M * s.N * s.K);
    }
    free(hA), free(hB);
    cuda_check(cudaFree(A)), cuda_check(cudaFree(B)), cuda_check(cudaFree(out));
    return bad;
}

static int parse_shape(const char *arg, Shape *s) {
    char ta, tb, end;
    if (sscanf(arg, "%dx%dx%d:%c%c%c", &s->M, &s->N, &s->K, &ta, &tb, &end) != 5) return -1;
    if (s->M < 1 || s->N < 1 || s->K < 1 || (ta != 'N' && ta != 'T') || (tb != 'N' && tb != 'T')) return -1;
    s->trans_a = ta == 'T', s->trans_b = tb == 'T';
    return 0;
}

int main(int argc, char **argv) {
    int repeat = 20, check = 0, nshapes = 0;
    MatmulType type = MATMUL_BF16;
    Shape shapes[64];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--repeat") && i + 1 < argc) {
            repeat = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--check")) {
            check = 1;
        } else if (!strcmp(argv[i], "--f32")) {
            type = MATMUL_F32;
        } else if (nshapes < 64 && parse_shape(argv[i], &shapes[nshapes]) == 0) {
            nshapes++;
        } else {
            fprintf(stderr, "usage: matmul [--repeat R | --check] [--f32] [MxNxK:XY ...]   (X, Y: N or T)\n");
            return 1;
        }
    }
    if (repeat < 1) {
        fprintf(stderr, "error: --repeat must be at least 1\n");
        return 1;
    }
    void *workspace;
    cuda_check(cudaMalloc(&workspace, MATMUL_WORKSPACE_BYTES));
    matmul_create(&mm, workspace, MATMUL_WORKSPACE_BYTES);
    printf("dense BF16 peak %.1f TFLOP/s; %s\n", bf16_peak() / 1e12,
           check ? "validation only" : "timed with a cold L2 (beta 0)");
    ColdL2 cold = cold_l2_create(check ? 0 : repeat);
    size_t bad = 0;
    if (nshapes == 0) {
        if (check)
            for (const Shape &s : kAwkward)
                for (int t = 0; t < 4; t++) bad += run_shape({s.M, s.N, s.K, t >> 1, t & 1}, 1, type, 0, cold);
        for (const Shape &s : kMistral) bad += run_shape(s, 0, type, check ? 0 : repeat, cold);
    } else {
        for (int i = 0; i < nshapes; i++) bad += run_shape(shapes[i], 0, type, check ? 0 : repeat, cold);
    }
    matmul_destroy(&mm);
    cuda_check(cudaFree(workspace)), cuda_check(cudaFree(cold.flush));
    if (bad) printf("%zu mismatches\n", bad);
    return bad ? 2 : 0;
}
