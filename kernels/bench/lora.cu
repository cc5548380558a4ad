/*
 * lora.cu: the LoRA kernels (kernels/lora.cuh) checked against the CPU reference
 * train/lora.c and timed against the same products as cuBLASLt calls, in the manner of
 * llm.c's dev/cuda.
 *
 *   make lora
 *   ./lora                                M = 2048 and 8192, r = 8, 16, 64, each group of
 *                                         Mistral-7B's projections (below)
 *   ./lora [--repeat R] M RANK GROUP [...]   GROUP: 1 = q,k,v (4096 -> 4096, 1024, 1024),
 *                                         2 = o (4096 -> 4096), 3 = gate,up (4096 -> 14336
 *                                         twice), 4 = down (14336 -> 4096); RANK 1..64
 *   ./lora --check [M RANK GROUP ...]     validation only, no timing (what `make test-gpu` runs)
 *
 * For each shape: random bf16 X, base outputs Y0, dY and dX0, fp32 masters A (PEFT's init)
 * and B (random: B = 0 would hide dA), cast to bf16 by lora_cast. Validation, without and
 * with dropout (p = 0.1, the CPU generator's masks): lora_forward + lora_backward and the
 * cuBLASLt sequence against train/lora.c, on 512 sampled elements of each of U, Y, dB, dA and
 * dX (all of them when fewer), within u·|ref| + (5u + 4(K + 2)·2^-24)·mag, u = 2^-8, where
 * mag is the same quantity computed by train/lora.c from |X|, |A|, |B|, |dY|, |Y0|, |dX0|
 * (the magnitude of every term): a loosened form of the per-element bounds at the top of
 * kernels/lora.cuh (each output goes through at most three bf16 roundings of its
 * operands, each within u of the magnitude, and one of itself).
 * Timing (cold L2, R runs), forward + backward of the group:
 *   kernels     lora_forward, lora_backward, lora_backward_dx (6 launches, more with split
 *               reductions)
 *   cublasLt    per projection: U = X·Aᵀ, Y += s·U·Bᵀ, G = s·dY·B, dB += s·dYᵀ·U, dA += Gᵀ·X,
 *               dX += G·A (kernels/matmul.cuh; no dropout: it would need masked copies)
 *   kernels, dropout 0.1
 * each as time and GB/s of the compulsory bytes (X twice, Y read and written, dY once, dX
 * read and written, U written and read, A, B, and dA, dB read and written) with % of the
 * DRAM peak; then the kernels' speedup over cuBLASLt against the goal (>= 1.3x).
 */
#include "../lora.cuh"
#include "../matmul.cuh"
#include "bench.cuh"
extern "C" {
#include "../../common/half.h"
#include "../../common/util.h"
#include "../../train/lora.h"
}

struct Group {
    const char *name;
    int P, in, out[3];
};
static const Group kGroups[] = {{"q,k,v", 3, 4096, {4096, 1024, 1024}},
                                {"o", 1, 4096, {4096}},
                                {"gate,up", 2, 4096, {14336, 14336}},
                                {"down", 1, 14336, {4096}}};

static Matmul mm;

// n random bf16 in [lo, hi): device copy, and floats on the host.
static float *rand_bf16(__nv_bfloat16 **dev, size_t n, float lo, float hi, uint64_t *rng) {
    float *host = (float *)bench_malloc(n * sizeof(float));
    uint16_t *bits = (uint16_t *)bench_malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        bits[i] = f32_to_bf16((float)(lo + (hi - lo) * rng_uniform(rng)));
        host[i] = bf16_to_f32(bits[i]);
    }
    cuda_check(cudaMalloc(dev, n * 2));
    cuda_check(cudaMemcpy(*dev, bits, n * 2, cudaMemcpyHostToDevice));
    free(bits);
    return host;
}

static float *f32_to_host(const float *dev, size_t n) {
    float *h = (float *)bench_malloc(n * sizeof(float));
    cuda_check(cudaMemcpy(h, dev, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}

static float *abs_copy(const float *v, size_t n) {
    float *a = (float *)bench_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) a[i] = fabsf(v[i]);
    return a;
}

// Samples (all when n <= 512) got against ref within u·|ref| + (5u + 4(K + 2)·2^-24)·mag.
static int compare(const char *what, const float *got, const float *ref, const float *mag, size_t n, int K,
                   double *worst, uint64_t *rng) {
    size_t count = n <= 512 ? n : 512;
    int bad = 0;
    for (size_t c = 0; c < count; c++) {
        size_t i = n <= 512 ? c : (size_t)rng_below(rng, n);
        double tol = 0x1p-8 * fabs(ref[i]) + (5 * 0x1p-8 + 4.0 * (K + 2) * 0x1p-24) * mag[i], e = fabs(got[i] - ref[i]);
        if (tol > 0 && e / tol > *worst) *worst = e / tol;
        if (!(e <= tol) && bad++ < 3) printf("  MISMATCH %s[%zu]: gpu %.7g, cpu %.7g, tolerance %.3g\n", what, i, got[i], ref[i], tol);
    }
    return bad;
}

// The problem's device tensors.
struct Tensors {
    __nv_bfloat16 *x, *y[3], *dy[3], *dx, *u[3], *Ab[3], *Bb[3];
    float *A[3], *B[3], *dA[3], *dB[3];
};

// The cuBLASLt sequence of the same products (no dropout); gm: G, [M, r] per projection.
static void cublas_sequence(const Group &gr, const LoraGroup &g, const Tensors &t, int M, __nv_bfloat16 *gm) {
    int r = g.r;
    for (int p = 0; p < gr.P; p++) {
        matmul(&mm, t.u[p], MATMUL_BF16, t.x, 0, t.Ab[p], 1, M, r, gr.in, 1, 0, 0);
        matmul(&mm, t.y[p], MATMUL_BF16, t.u[p], 0, t.Bb[p], 1, M, gr.out[p], r, g.scale, 1, 0);
    }
    for (int p = 0; p < gr.P; p++) {
        __nv_bfloat16 *gp = gm + (size_t)p * M * r;
        matmul(&mm, gp, MATMUL_BF16, t.dy[p], 0, t.Bb[p], 0, M, r, gr.out[p], g.scale, 0, 0);
        matmul(&mm, t.dB[p], MATMUL_F32, t.dy[p], 1, t.u[p], 0, gr.out[p], r, M, g.scale, 1, 0);
        matmul(&mm, t.dA[p], MATMUL_F32, gp, 1, t.x, 0, r, gr.in, M, 1, 1, 0);
        matmul(&mm, t.dx, MATMUL_BF16, gp, 0, t.Ab[p], 0, M, gr.in, r, 1, 1, 0);
    }
}

static int run_shape(const int *shape, int repeat, ColdL2 cold) {
    int M = shape[0], r = shape[1], gi = shape[2];
    if (r > LORA_MAX_R || gi < 1 || gi > 4) {
        printf("M %d, rank %d, group %d: the rank must be 1..64 and the group 1..4: skipped\n", M, r, gi);
        return 1;
    }
    const Group &gr = kGroups[gi - 1];
    int P = gr.P, in = gr.in, R = P * r;
    uint64_t rng = 1000u + (uint64_t)M * 7 + (uint64_t)r * 131 + (uint64_t)gi;
    size_t nx = (size_t)M * in;
    Tensors t;
    float *hx = rand_bf16(&t.x, nx, -1, 1, &rng), *hdx = rand_bf16(&t.dx, nx, -0.5f, 0.5f, &rng);
    float *hy[3] = {NULL, NULL, NULL}, *hdy[3] = {NULL, NULL, NULL}, *hA[3], *hB[3];
    LoraGroup g;
    memset(&g, 0, sizeof(g));
    g.P = P, g.in = in, g.r = r, g.scale = lora_scaling(2.0f * r, r, 0);
    for (int p = 0; p < P; p++) {
        size_t na = (size_t)r * in, nb = (size_t)gr.out[p] * r, ny = (size_t)M * gr.out[p];
        hA[p] = (float *)bench_malloc(na * 4), hB[p] = (float *)bench_malloc(nb * 4);
        lora_init(hA[p], hB[p], r, in, gr.out[p], &rng);
        for (size_t i = 0; i < nb; i++) hB[p][i] = (float)(0.05 * (2 * rng_uniform(&rng) - 1));
        hy[p] = rand_bf16(&t.y[p], ny, -1, 1, &rng), hdy[p] = rand_bf16(&t.dy[p], ny, -1, 1, &rng);
        cuda_check(cudaMalloc(&t.A[p], na * 4)), cuda_check(cudaMalloc(&t.B[p], nb * 4));
        cuda_check(cudaMalloc(&t.Ab[p], na * 2)), cuda_check(cudaMalloc(&t.Bb[p], nb * 2));
        cuda_check(cudaMalloc(&t.dA[p], na * 4)), cuda_check(cudaMalloc(&t.dB[p], nb * 4));
        cuda_check(cudaMemcpy(t.A[p], hA[p], na * 4, cudaMemcpyHostToDevice));
        cuda_check(cudaMemcpy(t.B[p], hB[p], nb * 4, cudaMemcpyHostToDevice));
        lora_cast(t.Ab[p], t.A[p], (int64_t)na, 0);
        lora_cast(t.Bb[p], t.B[p], (int64_t)nb, 0);
        g.out[p] = gr.out[p], g.A[p] = t.Ab[p], g.B[p] = t.Bb[p], g.dA[p] = t.dA[p], g.dB[p] = t.dB[p];
    }
    for (int p = 0; p < P; p++) cuda_check(cudaMalloc(&t.u[p], (size_t)M * r * 2));
    LoraScratch s;
    s.chunk_rows = LORA_CHUNK_ROWS, s.split_cols = LORA_SPLIT_COLS;
    s.g_capacity = (size_t)M * R;
    s.partial_capacity = lora_scratch_floats(&g, M, s.chunk_rows, s.split_cols);
    cuda_check(cudaMalloc(&s.g, s.g_capacity * 2));
    cuda_check(cudaMalloc(&s.partials, (s.partial_capacity ? s.partial_capacity : 1) * 4));
    // working copies of the outputs the runs change (Y, dX), restored before each run
    __nv_bfloat16 *y0[3] = {NULL, NULL, NULL}, *dx0;
    cuda_check(cudaMalloc(&dx0, nx * 2));
    cuda_check(cudaMemcpy(dx0, t.dx, nx * 2, cudaMemcpyDeviceToDevice));
    for (int p = 0; p < P; p++) {
        cuda_check(cudaMalloc(&y0[p], (size_t)M * gr.out[p] * 2));
        cuda_check(cudaMemcpy(y0[p], t.y[p], (size_t)M * gr.out[p] * 2, cudaMemcpyDeviceToDevice));
    }
    auto restore = [&] {
        cuda_check(cudaMemcpyAsync(t.dx, dx0, nx * 2, cudaMemcpyDeviceToDevice, 0));
        for (int p = 0; p < P; p++) {
            cuda_check(cudaMemcpyAsync(t.y[p], y0[p], (size_t)M * gr.out[p] * 2, cudaMemcpyDeviceToDevice, 0));
            cuda_check(cudaMemsetAsync(t.dA[p], 0, (size_t)r * in * 4, 0));
            cuda_check(cudaMemsetAsync(t.dB[p], 0, (size_t)gr.out[p] * r * 4, 0));
        }
    };
    auto kernels = [&] {
        const __nv_bfloat16 *dyc[3] = {t.dy[0], t.dy[1], t.dy[2]}, *uc[3] = {t.u[0], t.u[1], t.u[2]};
        lora_forward(&g, t.x, M, t.u, t.y, &s, 0);
        lora_backward(&g, t.x, uc, dyc, M, &s, 0);
        lora_backward_dx(&g, M, t.dx, &s, 0);
    };

    printf("M %d, rank %d, %s (%d -> %d", M, r, gr.name, in, gr.out[0]);
    for (int p = 1; p < P; p++) printf(", %d", gr.out[p]);
    printf("):\n");
    int bad = 0;
    for (int variant = 0; variant < 3; variant++) {  // kernels, kernels with dropout, cuBLASLt
        float dropout = variant == 1 ? 0.1f : 0.0f;
        const char *what = variant == 0 ? "kernels" : variant == 1 ? "kernels, dropout 0.1" : "cublasLt";
        uint64_t state = 77u + (uint64_t)M;
        float *mask[3] = {NULL, NULL, NULL};
        g.dropout = dropout;
        for (int p = 0; p < P; p++) {
            g.dropout_state[p] = state;
            if (dropout > 0) {
                mask[p] = (float *)bench_malloc(nx * 4);
                lora_dropout_mask(mask[p], nx, dropout, &state);
            }
        }
        restore();
        if (variant < 2) kernels();
        else cublas_sequence(gr, g, t, M, s.g);
        cuda_check(cudaDeviceSynchronize());
        // the reference and the magnitudes (train/lora.c on |·|), projection by projection
        float *xd = (float *)bench_malloc(nx * 4), *dx_ref = (float *)bench_malloc(nx * 4);
        float *dx_mag = abs_copy(hdx, nx), *ax = abs_copy(hx, nx), *axd = (float *)bench_malloc(nx * 4);
        memcpy(dx_ref, hdx, nx * 4);
        float *got_dx = to_host(t.dx, nx);
        double worst = 0;
        for (int p = 0; p < P; p++) {
            int out = gr.out[p];
            size_t na = (size_t)r * in, nb = (size_t)out * r, ny = (size_t)M * out;
            float *yr = (float *)bench_malloc(ny * 4), *ym = abs_copy(hy[p], ny), *ur = (float *)bench_malloc((size_t)M * r * 4);
            float *um = (float *)bench_malloc((size_t)M * r * 4), *dAr = (float *)calloc(na, 4), *dBr = (float *)calloc(nb, 4);
            float *dAm = (float *)calloc(na, 4), *dBm = (float *)calloc(nb, 4), *aA = abs_copy(hA[p], na);
            float *aB = abs_copy(hB[p], nb), *ady = abs_copy(hdy[p], ny);
            memcpy(yr, hy[p], ny * 4);
            lora_forward(hx, mask[p], hA[p], hB[p], yr, ur, xd, M, in, r, out, g.scale);
            lora_backward(hdy[p], mask[p] ? xd : hx, ur, mask[p], hA[p], hB[p], dAr, dBr, dx_ref, M, in, r, out, g.scale);
            lora_forward(ax, mask[p], aA, aB, ym, um, axd, M, in, r, out, g.scale);
            lora_backward(ady, mask[p] ? axd : ax, um, mask[p], aA, aB, dAm, dBm, dx_mag, M, in, r, out, g.scale);
            float *ug = to_host(t.u[p], (size_t)M * r), *yg = to_host(t.y[p], ny), *dAg = f32_to_host(t.dA[p], na), *dBg = f32_to_host(t.dB[p], nb);
            bad += compare("U", ug, ur, um, (size_t)M * r, in, &worst, &rng);
            bad += compare("Y", yg, yr, ym, ny, r, &worst, &rng);
            bad += compare("dB", dBg, dBr, dBm, nb, M, &worst, &rng);
            bad += compare("dA", dAg, dAr, dAm, na, M, &worst, &rng);
            free(yr), free(ym), free(ur), free(um), free(dAr), free(dBr), free(dAm), free(dBm), free(aA), free(aB);
            free(ady), free(ug), free(yg), free(dAg), free(dBg), free(mask[p]);
        }
        bad += compare("dX", got_dx, dx_ref, dx_mag, nx, R, &worst, &rng);
        printf("  %-22s worst error / tolerance %.3f\n", what, worst);
        free(xd), free(dx_ref), free(dx_mag), free(ax), free(axd), free(got_dx);
    }

    if (repeat > 0) {
        double bytes = 2.0 * nx * 2 + 4.0 * nx + 2.0 * 2 * (double)M * R;  // X twice, dX r+w, U w+r
        for (int p = 0; p < P; p++)
            bytes += (double)M * gr.out[p] * (4 + 2) + (double)r * (in + gr.out[p]) * (2 + 8);  // Y r+w, dY; A, B, dA, dB
        float ms[3];
        for (int variant = 0; variant < 3; variant++) {
            g.dropout = variant == 2 ? 0.1f : 0.0f;
            ms[variant] = time_cold(
                [&] {
                    if (variant == 1) cublas_sequence(gr, g, t, M, s.g);
                    else kernels();
                },
                repeat, cold);
        }
        print_bandwidth("kernels", ms[0], bytes);
        print_bandwidth("cublasLt", ms[1], bytes);
        print_bandwidth("kernels, dropout 0.1", ms[2], bytes);
        printf("  kernels: %.2fx the cuBLASLt sequence (goal >= 1.3x: %s)\n", ms[1] / ms[0],
               ms[1] / ms[0] >= 1.3 ? "met" : "NOT met");
    }

    free(hx), free(hdx);
    for (int p = 0; p < P; p++) {
        free(hy[p]), free(hdy[p]), free(hA[p]), free(hB[p]);
        cuda_check(cudaFree(t.y[p])), cuda_check(cudaFree(t.dy[p])), cuda_check(cudaFree(t.A[p]));
        cuda_check(cudaFree(t.B[p])), cuda_check(cudaFree(t.Ab[p])), cuda_check(cudaFree(t.Bb[p]));
        cuda_check(cudaFree(t.dA[p])), cuda_check(cudaFree(t.dB[p])), cuda_check(cudaFree(y0[p]));
        cuda_check(cudaFree(t.u[p]));
    }
    cuda_check(cudaFree(t.x)), cuda_check(cudaFree(t.dx)), cuda_check(cudaFree(dx0));
    cuda_check(cudaFree(s.g)), cuda_check(cudaFree(s.partials));
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    BenchArgs a = bench_args(argc, argv, 3, 10, "lora [--repeat R | --check] [M RANK GROUP ...]   (GROUP 1..4)");
    // with --check: one row, odd M, rank 1, every group and a split-M reduction; then 2048
    const int check[] = {1, 1, 1, 17, 8, 2, 300, 64, 3, 1500, 16, 4, 2048, 16, 1, 2048, 64, 3};
    const int timed[] = {2048, 8, 1,  2048, 8, 2,  2048, 8, 3,  2048, 8, 4,  2048, 16, 1, 2048, 16, 2,
                         2048, 16, 3, 2048, 16, 4, 2048, 64, 1, 2048, 64, 2, 2048, 64, 3, 2048, 64, 4,
                         8192, 8, 1,  8192, 8, 2,  8192, 8, 3,  8192, 8, 4,  8192, 16, 1, 8192, 16, 2,
                         8192, 16, 3, 8192, 16, 4, 8192, 64, 1, 8192, 64, 2, 8192, 64, 3, 8192, 64, 4};
    default_shapes(&a, check, timed);
    void *workspace;
    cuda_check(cudaMalloc(&workspace, MATMUL_WORKSPACE_BYTES));
    matmul_create(&mm, workspace, MATMUL_WORKSPACE_BYTES);
    int status = run_shapes(&a, run_shape);
    matmul_destroy(&mm);
    cuda_check(cudaFree(workspace));
    return status;
}
