/*
 * adamw.cu: the AdamW step and the global gradient norm (kernels/adamw.cuh), checked against
 * the CPU reference (train/adamw.c) and timed, in the manner of llm.c's dev/cuda.
 *
 *   make adamw
 *   ./adamw                       Mistral-7B's LoRA parameters: r 16 on q, k, v, o, gate,
 *                                 up, down of 32 layers = 41,943,040 parameters in 448
 *                                 tensors (below)
 *   ./adamw [--repeat R] N [N ...]    N parameters each, cut into tensors of the same
 *                                 per-layer sizes (the last one shorter)
 *   ./adamw --check [N ...]       validation only, no timing (what `make test-gpu` runs)
 *
 * For each size: random parameters and 3 steps of random gradients (the second step
 * clipped); on the GPU the norm, then AdamW with the norm's clipping factor; every
 * parameter, m and v checked against train/adamw.c's grad_clip + adamw_step within
 * adamw_tolerance, and the squared norm against a double sum within 32u (both bounds
 * derived in kernels/adamw.cuh, the ones the harness test uses); the count of parameters
 * bit-identical to the CPU is printed (FMA contraction may change the last bits). Then
 * each kernel timed over R runs, each after writing an L2-sized buffer (cold L2), as time,
 * GB/s and % of the DRAM peak (2 · memory clock · bus width).
 *
 * Bytes counted, the compulsory DRAM traffic per parameter: AdamW reads p, g, m, v and
 * writes p, m, v: 7 · 4 = 28 bytes. The norm reads g: 4 bytes (plus 16 bytes per tensor
 * for the tables and 4 per block for the partials, counted too).
 */
#include "../adamw.cuh"
#include "bench.cuh"
extern "C" {
#include "../../train/adamw.h"
}

static const AdamWConfig kConfig = {0.9f, 0.999f, 1e-8f, 0.1f};

// Mistral-7B (hidden 4096, 8 KV heads of 128, MLP 14336) with LoRA r 16: per layer, A (r x in)
// and B (out x r) of q, k, v, o, gate, up, down.
static const size_t kRank = 16, kLayers = 32;
static const size_t kLayerSizes[14] = {
    kRank * 4096, 4096 * kRank, kRank * 4096, 1024 * kRank, kRank * 4096,  1024 * kRank,  kRank * 4096,
    4096 * kRank, kRank * 4096, 14336 * kRank, kRank * 4096, 14336 * kRank, kRank * 14336, 4096 * kRank,
};

static void random_fill(float *x, size_t n, unsigned *seed, float scale) {
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;  // a simple LCG is plenty for test data
        x[i] = scale * (2.0f * (float)(*seed >> 8) / 16777216.0f - 1.0f);
    }
}

static int run_size(size_t n, int repeat, ColdL2 cold) {
    // the tensor list: the per-layer sizes, repeated, the last tensor cut at n
    int count = 0;
    for (size_t off = 0; off < n; count++) off += kLayerSizes[count % 14];
    size_t *offsets = (size_t *)bench_malloc((size_t)(count + 1) * sizeof(size_t));
    offsets[0] = 0;
    for (int t = 0; t < count; t++) {
        size_t end = offsets[t] + kLayerSizes[t % 14];
        offsets[t + 1] = end < n ? end : n;
    }

    unsigned seed = 4321u + (unsigned)n;
    float *p = (float *)bench_malloc(n * sizeof(float)), *g = (float *)bench_malloc(n * sizeof(float));
    float *m = (float *)calloc(n ? n : 1, sizeof(float)), *v = (float *)calloc(n ? n : 1, sizeof(float));
    float *got = (float *)bench_malloc(n * sizeof(float));
    float **parts = (float **)bench_malloc((size_t)count * sizeof(float *));
    float **dparts = (float **)bench_malloc((size_t)count * sizeof(float *));
    size_t *sizes = (size_t *)bench_malloc((size_t)count * sizeof(size_t));
    if (!m || !v) {
        fprintf(stderr, "error: out of host memory for %zu parameters\n", n);
        exit(2);
    }
    random_fill(p, n, &seed, 1.0f);
    float *dp, *dg, *dm, *dv, *partial, *norm_sq, **dtable;
    size_t *doffsets;
    cuda_check(cudaMalloc(&dp, n * sizeof(float)));
    cuda_check(cudaMalloc(&dg, n * sizeof(float)));
    cuda_check(cudaMalloc(&dm, n * sizeof(float)));
    cuda_check(cudaMalloc(&dv, n * sizeof(float)));
    cuda_check(cudaMalloc(&partial, GRAD_NORM_BLOCKS * sizeof(float)));
    cuda_check(cudaMalloc(&norm_sq, sizeof(float)));
    cuda_check(cudaMalloc(&dtable, (size_t)count * sizeof(float *)));
    cuda_check(cudaMalloc(&doffsets, (size_t)(count + 1) * sizeof(size_t)));
    for (int t = 0; t < count; t++) {
        parts[t] = g + offsets[t], dparts[t] = dg + offsets[t];
        sizes[t] = offsets[t + 1] - offsets[t];
    }
    cuda_check(cudaMemcpy(dtable, dparts, (size_t)count * sizeof(float *), cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(doffsets, offsets, (size_t)(count + 1) * sizeof(size_t), cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(dp, p, n * sizeof(float), cudaMemcpyHostToDevice));
    cuda_check(cudaMemset(dm, 0, n * sizeof(float)));
    cuda_check(cudaMemset(dv, 0, n * sizeof(float)));

    // correctness first: 3 steps, the second with gradients large enough to be clipped
    size_t bad = 0, same = 0;
    double worst_p = 0, worst_norm = 0, lr_sum = 0;
    const float max_norm = 1.0f;
    for (int step = 1; step <= 3; step++) {
        random_fill(g, n, &seed, step == 2 ? 1.0f : 1e-4f);
        cuda_check(cudaMemcpy(dg, g, n * sizeof(float), cudaMemcpyHostToDevice));
        float lr = 1e-3f / (float)step;
        lr_sum += lr;
        grad_norm_squared(norm_sq, partial, dtable, doffsets, count, n, 0);
        float gpu_sq;
        cuda_check(cudaMemcpy(&gpu_sq, norm_sq, sizeof(float), cudaMemcpyDeviceToHost));
        double want_sq = 0;
        for (size_t i = 0; i < n; i++) want_sq += (double)g[i] * g[i];
        if (want_sq > 0) worst_norm = fmax(worst_norm, fabs(gpu_sq - want_sq) / want_sq);
        if (!(fabs(gpu_sq - want_sq) <= grad_norm_squared_tolerance(want_sq)) && bad++ < 5)
            printf("  MISMATCH squared norm at step %d: gpu %.9g, double %.9g\n", step, gpu_sq, want_sq);
        adamw_update(dp, dg, dm, dv, n, step, lr, kConfig.beta1, kConfig.beta2, kConfig.eps, kConfig.weight_decay,
                     grad_clip_scale(sqrt((double)gpu_sq), max_norm), 0);
        grad_clip(parts, sizes, count, max_norm);
        adamw_step(p, g, m, v, n, step, lr, &kConfig);
        cuda_check(cudaMemcpy(got, dp, n * sizeof(float), cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < n; i++) {
            double e = fabs((double)got[i] - p[i]), tol = adamw_tolerance(p[i], step, lr_sum);
            if (e / tol > worst_p) worst_p = e / tol;
            if (!(e <= tol) && bad++ < 5)
                printf("  MISMATCH p[%zu] at step %d: gpu %.9g, cpu %.9g, tolerance %.3g\n", i, step, got[i], p[i], tol);
            if (step == 3) same += got[i] == p[i];
        }
    }
    // the moments after the last step: 8u per step of their own size (as in
    // test/test_cuda_adamw.cpp; m also of w1·|g| <= 0.1, for when it cancels), plus what
    // the GPU's clipping factor brings (from its fp32 norm, up to 16u from the CPU's):
    // 16u on g, 32u on g². 64u covers both.
    float *gv = (float *)bench_malloc(n * sizeof(float));
    cuda_check(cudaMemcpy(got, dm, n * sizeof(float), cudaMemcpyDeviceToHost));
    cuda_check(cudaMemcpy(gv, dv, n * sizeof(float), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) {
        if (!(fabs((double)got[i] - m[i]) <= 64.0 * 0x1p-24 * (fabs(m[i]) + 0.1)) && bad++ < 5)
            printf("  MISMATCH m[%zu]: gpu %.9g, cpu %.9g\n", i, got[i], m[i]);
        if (!(fabs((double)gv[i] - v[i]) <= 64.0 * 0x1p-24 * fabs(v[i])) && bad++ < 5)
            printf("  MISMATCH v[%zu]: gpu %.9g, cpu %.9g\n", i, gv[i], v[i]);
    }
    printf("%zu parameters in %d tensors: worst error / tolerance p %.3f, squared norm relative error %.3g "
           "(tolerance %.3g); %zu of %zu parameters bit-identical to the CPU -> %s\n",
           n, count, worst_p, worst_norm, grad_norm_squared_tolerance(1.0), same, n, bad ? "MISMATCH" : "all results match");

    if (repeat > 0) {  // then speed (not with --check)
        double adamw_bytes = 28.0 * n, norm_bytes = 4.0 * n + 16.0 * count + 8.0 * GRAD_NORM_BLOCKS;
        float adamw_ms = time_cold([&] {
            adamw_update(dp, dg, dm, dv, n, 10, 1e-4f, kConfig.beta1, kConfig.beta2, kConfig.eps, kConfig.weight_decay,
                         0.5f, 0);
        }, repeat, cold);
        float norm_ms = time_cold([&] { grad_norm_squared(norm_sq, partial, dtable, doffsets, count, n, 0); },
                                        repeat, cold);
        print_bandwidth("adamw", adamw_ms, adamw_bytes);
        print_bandwidth("grad norm", norm_ms, norm_bytes);
    }

    free(p), free(g), free(m), free(v), free(got), free(gv), free(parts), free(dparts), free(sizes), free(offsets);
    cuda_check(cudaFree(dp)), cuda_check(cudaFree(dg)), cuda_check(cudaFree(dm)), cuda_check(cudaFree(dv));
    cuda_check(cudaFree(partial)), cuda_check(cudaFree(norm_sq)), cuda_check(cudaFree(dtable));
    cuda_check(cudaFree(doffsets));
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    int repeat = 50, check = 0, nsizes = 0;
    size_t sizes[64];
    for (int i = 1; i < argc; i++) {
        char *end;
        if (!strcmp(argv[i], "--repeat") && i + 1 < argc) {
            repeat = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--check")) {
            check = 1;
        } else if (nsizes < 64 && (sizes[nsizes] = strtoull(argv[i], &end, 10)) > 0 && *end == 0) {
            nsizes++;
        } else {
            fprintf(stderr, "usage: adamw [--repeat R | --check] [N ...]   (N: parameter counts, > 0)\n");
            return 1;
        }
    }
    if (repeat < 1) {
        fprintf(stderr, "usage: adamw [--repeat R] [N ...]   (R >= 1)\n");
        return 1;
    }
    size_t mistral = 0;
    for (int t = 0; t < 14; t++) mistral += kLayerSizes[t] * kLayers;
    if (nsizes == 0 && check) {  // awkward sizes: one, odd, not a multiple of 4, fewer than the blocks, then Mistral's
        const size_t defaults[] = {1, 3, 4099, 65541, 1000003, mistral};
        memcpy(sizes, defaults, sizeof(defaults));
        nsizes = 6;
    } else if (nsizes == 0) {
        sizes[0] = mistral;
        nsizes = 1;
    }
    if (check) repeat = 0;
    ColdL2 cold = cold_l2_create(repeat);
    int failed = 0;
    for (int i = 0; i < nsizes; i++) failed |= run_size(sizes[i], repeat, cold);
    cuda_check(cudaFree(cold.flush));
    return failed ? 2 : 0;
}
