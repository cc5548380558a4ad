/*
 * rmsnorm.cu: RMSNorm with the fused residual add (kernels/rmsnorm.cuh), checked against
 * the CPU reference (r + x, then train/rmsnorm.c) and timed, in the manner of llm.c's
 * dev/cuda.
 *
 *   make rmsnorm
 *   ./rmsnorm                          the default shapes (below)
 *   ./rmsnorm [--repeat R] N C [N C ...]   rows and columns of each shape
 *   ./rmsnorm --check [N C ...]        validation only, no timing (what `make test-gpu` runs)
 *
 * For each shape: random bf16 inputs; the forward (r + x, then the norm) and the backward
 * (with a residual gradient dh_in) on the GPU; every output element checked against the fp32
 * reference within the bf16 error bounds derived in kernels/rmsnorm.cuh (the same bounds
 * the harness test uses); then each pass timed over R runs, each after writing an L2-sized
 * buffer so that the inputs come from DRAM (cold L2), and reported as time, GB/s and % of
 * the DRAM peak (2 · memory clock · bus width, bench.cuh).
 *
 * Bytes counted are the compulsory DRAM traffic, 8 bytes per element each way: forward
 * reads r and x and writes h and y (bf16: 2 + 2 + 2 + 2); backward reads dy, h and dh_in
 * and writes dh; plus the weight (2·C) and rstd (4·N) once. The kernels' second pass over a
 * row (re-reading what the first pass touched) is meant to hit L1/L2 and is not counted.
 */
#include "../rmsnorm.cuh"
#include "bench.cuh"
extern "C" {
#include "../../train/rmsnorm.h"
}

static const float kEps = 1e-5f;

static int run_shape(const int *shape, int repeat, ColdL2 cold) {
    int N = shape[0], C = shape[1];
    size_t n = (size_t)N * C;
    unsigned seed = 1234u + (unsigned)N * 31u + (unsigned)C;
    __nv_bfloat16 *r, *x, *w, *dy, *din, *h, *y, *dh;
    float *rstd;
    float *hr = random_bf16(&r, n, -2, 2, &seed), *hx = random_bf16(&x, n, -2, 2, &seed);
    float *hw = random_bf16(&w, (size_t)C, -1.5f, 1.5f, &seed);
    float *hdy = random_bf16(&dy, n, -1, 1, &seed), *hdin = random_bf16(&din, n, -1, 1, &seed);
    cuda_check(cudaMalloc(&h, n * sizeof(__nv_bfloat16)));
    cuda_check(cudaMalloc(&y, n * sizeof(__nv_bfloat16)));
    cuda_check(cudaMalloc(&dh, n * sizeof(__nv_bfloat16)));
    cuda_check(cudaMalloc(&rstd, (size_t)N * sizeof(float)));

    // correctness first
    rmsnorm_forward(h, y, rstd, r, x, w, N, C, kEps, 0);
    rmsnorm_backward(dh, dy, din, h, w, rstd, N, C, 0);
    cuda_check(cudaDeviceSynchronize());
    float *ref_h = (float *)malloc(n * sizeof(float)), *ref_y = (float *)malloc(n * sizeof(float));
    float *ref_rstd = (float *)malloc((size_t)N * sizeof(float)), *ref_dh = (float *)malloc(n * sizeof(float));
    float *tol = (float *)malloc(n * sizeof(float)), *got_rstd = (float *)malloc((size_t)N * sizeof(float));
    for (size_t i = 0; i < n; i++) ref_h[i] = hr[i] + hx[i];
    rmsnorm_forward(ref_h, hw, ref_y, ref_rstd, N, C, kEps);
    float *got_y = to_host(y, n), *got_h = to_host(h, n), *got_dh = to_host(dh, n);
    cuda_check(cudaMemcpy(got_rstd, rstd, (size_t)N * sizeof(float), cudaMemcpyDeviceToHost));
    double worst_y = 0, worst_rstd = 0, worst_h = 0, worst_dh = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) tol[i] = rmsnorm_forward_tolerance(ref_y[i], C);
    bad += report("y", got_y, ref_y, tol, n, &worst_y);
    for (size_t i = 0; i < n; i++) tol[i] = rmsnorm_h_tolerance(ref_h[i]);
    bad += report("h", got_h, ref_h, tol, n, &worst_h);
    for (int i = 0; i < N; i++) tol[i] = rmsnorm_rstd_tolerance(ref_rstd[i], C);
    bad += report("rstd", got_rstd, ref_rstd, tol, (size_t)N, &worst_rstd);
    // The backward takes the GPU's h and rstd as its inputs, so both sides see the same.
    rmsnorm_backward(got_h, hw, got_rstd, hdy, ref_dh, N, C);
    for (size_t i = 0; i < n; i++) ref_dh[i] += hdin[i];
    for (int row = 0; row < N; row++) {
        double abs_dot = 0;
        for (int c = 0; c < C; c++) abs_dot += fabs((double)hdy[(size_t)row * C + c] * hw[c] * got_h[(size_t)row * C + c]);
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)row * C + c;
            tol[i] = rmsnorm_backward_tolerance(ref_dh[i], hdy[i], hdin[i], got_h[i], hw[c], got_rstd[row],
                                                (float)abs_dot, C);
        }
    }
    bad += report("dh", got_dh, ref_dh, tol, n, &worst_dh);
    printf("N %d C %d: worst error / tolerance: y %.3f, h %.3f, rstd %.3f, dh %.3f -> %s\n", N, C, worst_y, worst_h,
           worst_rstd, worst_dh, bad ? "MISMATCH" : "all results match");

    if (repeat > 0) {  // then speed (not with --check)
        double bytes = 8.0 * n + 2.0 * C + 4.0 * N;  // the same for both passes
        print_bandwidth("forward", time_cold([&] { rmsnorm_forward(h, y, rstd, r, x, w, N, C, kEps, 0); }, repeat, cold),
                        bytes);
        print_bandwidth("backward", time_cold([&] { rmsnorm_backward(dh, dy, din, h, w, rstd, N, C, 0); }, repeat, cold),
                        bytes);
    }

    free(hr), free(hx), free(hw), free(hdy), free(hdin), free(ref_h), free(ref_y), free(ref_rstd), free(ref_dh);
    free(tol), free(got_rstd), free(got_y), free(got_h), free(got_dh);
    cuda_check(cudaFree(r)), cuda_check(cudaFree(x)), cuda_check(cudaFree(w)), cuda_check(cudaFree(dy));
    cuda_check(cudaFree(din)), cuda_check(cudaFree(h)), cuda_check(cudaFree(y)), cuda_check(cudaFree(dh));
    cuda_check(cudaFree(rstd));
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    BenchArgs a = bench_args(argc, argv, 2, 50, "rmsnorm [--repeat R | --check] [N C ...]   (rows, columns)");
    // with --check, awkward shapes: one row, odd widths, misaligned packs
    const int awkward[] = {1, 1, 3, 7, 5, 4100, 17, 4096, 1, 5120, 64, 131};
    // Mistral-7B's hidden size at 4k and 16k tokens, Nemo's at 8k, one row
    const int timed[] = {4096, 4096, 16384, 4096, 8192, 5120, 1, 5120};
    default_shapes(&a, awkward, timed);
    return run_shapes(&a, run_shape);
}
