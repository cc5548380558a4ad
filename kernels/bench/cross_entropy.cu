/*
 * cross_entropy.cu: the fused LM head + cross-entropy (kernels/cross_entropy.cuh) checked
 * against the CPU reference (train/cross_entropy.c) and timed, in the manner of llm.c's
 * dev/cuda.
 *
 *   make cross_entropy
 *   ./cross_entropy                                   the default shapes (below)
 *   ./cross_entropy [--repeat R] [--chunk C] [--trained F] T H V [T H V ...]
 *   ./cross_entropy --check [T H V ...]               validation only (what `make test-gpu` runs)
 *
 * T tokens of hidden size H, vocabulary V, a fraction F of them trained (default 0.5, drawn
 * at random), processed C trained tokens at a time (default: as many as keep the fp32 logits
 * chunk within 512 MiB). Random bf16 X in [-2, 2), W in [-1, 1), random targets.
 *
 * Validation: the small awkward shapes of --check in full (loss sum, trained count and every
 * dX element against the reference). At the large shapes the reference costs H·V per token,
 * so it runs for 4 of the trained tokens: their dX rows from the full run are checked, every
 * untrained row must be exactly 0, the count exactly; and a second run in which only those
 * 4 tokens are trained checks the loss. Tolerances are cross_entropy_tolerances of the header
 * (the same bounds as the harness test).
 *
 * Timing: the whole call (gather, the GEMMs, the softmax kernels, the scatter, the loss sum,
 * and its one host synchronisation), cold L2, R runs. Reported per token and per trained
 * token, and as effective TFLOP/s counting the two GEMMs, 4·H·V FLOPs per trained token, and
 * as % of the dense BF16 tensor peak (SMs x clock x FLOPs/clk/SM, bench.cuh).
 *
 * Default shapes: Mistral-7B v0.3 (H 4096, V 32768) and Mistral-Nemo (H 5120, V 131072) at
 * 4096 and 16384 tokens.
 */
#include "../cross_entropy.cuh"
#include "bench.cuh"
extern "C" {
#include "../../train/cross_entropy.h"
}

static Matmul mm;

struct Shape {
    int T, H, V;
};

static const Shape kAwkward[] = {{37, 64, 1000}, {1, 16, 1000}, {12, 32, 32771}, {40, 8, 3}, {300, 4096, 1003}};
static const Shape kMistral[] = {{4096, 4096, 32768}, {16384, 4096, 32768}, {4096, 5120, 131072}, {16384, 5120, 131072}};

struct Device {
    const __nv_bfloat16 *X, *W;
    int32_t *targets;
    float *weights;
    double *loss;
    __nv_bfloat16 *dX;
    void *scratch;
};

static int run(const Device &d, const Shape &s, int chunk, const float *weights, float grad_scale, double *loss) {
    cuda_check(cudaMemcpy(d.weights, weights, s.T * sizeof(float), cudaMemcpyHostToDevice));
    int n = cross_entropy_forward_backward(&mm, d.loss, d.dX, d.X, d.W, d.targets, d.weights, s.T, s.H, s.V, chunk,
                                           grad_scale, d.scratch, 0);
    cuda_check(cudaMemcpy(loss, d.loss, sizeof(double), cudaMemcpyDeviceToHost));
    return n;
}

static size_t run_shape(const Shape &s, int chunk, double trained, int full, int repeat, ColdL2 cold) {
    unsigned seed = 99u + (unsigned)s.T * 13u + (unsigned)s.H * 7u + (unsigned)s.V;
    size_t xn = (size_t)s.T * s.H, wn = (size_t)s.V * s.H;
    Device d;
    __nv_bfloat16 *X, *W;
    float *hX = random_bf16(&X, xn, -2, 2, &seed), *hW = random_bf16(&W, wn, -1, 1, &seed);
    d.X = X, d.W = W;
    int32_t *targets = (int32_t *)bench_malloc(s.T * sizeof(int32_t));
    float *weights = (float *)bench_malloc(s.T * sizeof(float)), *checked = (float *)bench_malloc(s.T * sizeof(float));
    float *ref_dx = (float *)bench_malloc(xn * sizeof(float)), *tol = (float *)bench_malloc(xn * sizeof(float));
    int n_trained = 0;
    for (int t = 0; t < s.T; t++) {
        seed = seed * 1664525u + 1013904223u;
        targets[t] = (int32_t)((seed >> 8) % (unsigned)s.V);
        seed = seed * 1664525u + 1013904223u;
        weights[t] = (seed >> 8) < trained * 16777216.0 ? 1.0f : 0.0f;
        n_trained += weights[t] != 0.0f;
    }
    // The tokens the reference checks: all, or 4 trained ones spread over the sequence.
    int picked = 0;
    for (int t = 0; t < s.T; t++) {
        checked[t] = weights[t];
        if (!full && weights[t] != 0.0f) checked[t] = picked < 4 && t >= picked * s.T / 4 ? (picked++, 1.0f) : 0.0f;
    }
    const float grad_scale = n_trained ? 1.0f / n_trained : 1.0f;
    cuda_check(cudaMalloc(&d.targets, s.T * sizeof(int32_t)));
    cuda_check(cudaMalloc(&d.weights, s.T * sizeof(float)));
    cuda_check(cudaMalloc(&d.loss, sizeof(double)));
    cuda_check(cudaMalloc(&d.dX, xn * sizeof(__nv_bfloat16)));
    cuda_check(cudaMalloc(&d.scratch, cross_entropy_scratch_bytes(s.T, s.H, s.V, chunk)));
    cuda_check(cudaMemcpy(d.targets, targets, s.T * sizeof(int32_t), cudaMemcpyHostToDevice));

    double loss, checked_loss;
    int count = run(d, s, chunk, weights, grad_scale, &loss);
    float *got_dx = to_host(d.dX, xn);
    int checked_count = full ? count : run(d, s, chunk, checked, grad_scale, &checked_loss);
    if (full) checked_loss = loss;
    double ref_loss = cross_entropy(hX, hW, targets, checked, s.T, s.H, s.V, grad_scale, ref_dx);
    double loss_tol = cross_entropy_tolerances(hX, hW, targets, checked, s.T, s.H, s.V, grad_scale, tol);
    int ref_checked = 0;
    for (int t = 0; t < s.T; t++) ref_checked += checked[t] != 0.0f;

    size_t bad = 0;
    double worst_dx = 0, e = fabs(checked_loss - ref_loss);
    if (count != n_trained || checked_count != ref_checked) {
        printf("  MISMATCH count: gpu %d and %d, expected %d and %d\n", count, checked_count, n_trained, ref_checked);
        bad++;
    }
    if (!(e <= loss_tol)) {
        printf("  MISMATCH loss: gpu %.10g, cpu %.10g, tolerance %.3g\n", checked_loss, ref_loss, loss_tol);
        bad++;
    }
    for (size_t i = 0; i < xn; i++) {
        int t = (int)(i / s.H);
        if (weights[t] != 0.0f && checked[t] == 0.0f) continue;  // trained, not recomputed on the CPU
        double err = fabs((double)got_dx[i] - ref_dx[i]);
        if (tol[i] > 0 && err / tol[i] > worst_dx) worst_dx = err / tol[i];
        if (!(err <= tol[i]) && bad++ < 5)
            printf("  MISMATCH dX[%d][%zu]: gpu %.8g, cpu %.8g, tolerance %.3g\n", t, i % s.H, got_dx[i], ref_dx[i], tol[i]);
    }
    printf("T %d H %d V %d chunk %d, %d trained: loss error / tolerance %.3f, dX worst %.3f (%s) -> %s\n", s.T, s.H,
           s.V, chunk, n_trained, loss_tol > 0 ? e / loss_tol : 0.0, worst_dx, full ? "every row" : "4 trained rows",
           bad ? "MISMATCH" : "all results match");

    if (repeat > 0) {
        cuda_check(cudaMemcpy(d.weights, weights, s.T * sizeof(float), cudaMemcpyHostToDevice));
        float ms = time_cold(
            [&] {
                cross_entropy_forward_backward(&mm, d.loss, d.dX, d.X, d.W, d.targets, d.weights, s.T, s.H, s.V,
                                               chunk, grad_scale, d.scratch, 0);
            },
            repeat, cold);
        print_flops("LM head", ms, 4.0 * s.H * (double)s.V * n_trained);
        printf("  %7.3f us/token  %7.3f us/trained token\n", 1e3 * ms / s.T, n_trained ? 1e3 * ms / n_trained : 0.0);
    }
    free(hX), free(hW), free(targets), free(weights), free(checked), free(ref_dx), free(tol), free(got_dx);
    cuda_check(cudaFree(X)), cuda_check(cudaFree(W)), cuda_check(cudaFree(d.targets)), cuda_check(cudaFree(d.weights));
    cuda_check(cudaFree(d.loss)), cuda_check(cudaFree(d.dX)), cuda_check(cudaFree(d.scratch));
    return bad;
}

// The largest chunk whose fp32 logits fit in 512 MiB, at most T.
static int default_chunk(const Shape &s) {
    long c = (512L << 20) / (4L * s.V);
    return (int)(c < 1 ? 1 : c > s.T ? s.T : c);
}

int main(int argc, char **argv) {
    const char *usage = "cross_entropy [--repeat R | --check] [--chunk C (0: default)] [--trained F in 0..1] [T H V ...]";
    const char *const options[] = {"--chunk", "--trained", NULL};
    BenchArgs a = bench_args(argc, argv, 3, 10, usage, options);
    int chunk = a.option[0] ? atoi(a.option[0]) : 0;
    double trained = a.option[1] ? atof(a.option[1]) : 0.5;
    if (trained < 0 || trained > 1 || chunk < 0) {
        fprintf(stderr, "usage: %s\n", usage);
        return 1;
    }
    void *workspace;
    cuda_check(cudaMalloc(&workspace, MATMUL_WORKSPACE_BYTES));
    matmul_create(&mm, workspace, MATMUL_WORKSPACE_BYTES);
    printf("dense BF16 peak %.1f TFLOP/s; %s\n", bf16_peak() / 1e12, a.check ? "validation only" : "timed with a cold L2");
    ColdL2 cold = cold_l2_create(a.repeat);
    size_t bad = 0;
    if (a.n) {
        for (int i = 0; i < a.n; i += 3) {
            Shape s = {a.shape[i], a.shape[i + 1], a.shape[i + 2]};
            bad += run_shape(s, chunk ? chunk : default_chunk(s), trained, 0, a.repeat, cold);
        }
    } else {
        if (a.check)  // chunks that do not divide the trained tokens; all trained, half, none
            for (const Shape &s : kAwkward)
                for (double f : {1.0, 0.5, 0.0}) bad += run_shape(s, chunk ? chunk : 7, f, 1, 0, cold);
        for (const Shape &s : kMistral)
            bad += run_shape(s, chunk ? chunk : default_chunk(s), trained, 0, a.repeat, cold);
    }
    matmul_destroy(&mm);
    cuda_check(cudaFree(workspace)), cuda_check(cudaFree(cold.flush));
    return bad ? 2 : 0;
}
