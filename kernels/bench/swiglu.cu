/*
 * swiglu.cu: SwiGLU forward and backward (kernels/swiglu.cuh), checked against the CPU
 * reference (train/swiglu.c) and timed, in the manner of llm.c's dev/cuda.
 *
 *   make swiglu
 *   ./swiglu                           the default shapes (below)
 *   ./swiglu [--repeat R] N I [N I ...]    tokens and intermediate size of each shape
 *   ./swiglu --check [N I ...]         validation only, no timing (what `make test-gpu` runs)
 *
 * For each shape: random bf16 g, u and dh; the forward and the backward on the GPU; every
 * output element checked against the fp32 reference within the bf16 error bounds derived
 * in kernels/swiglu.cuh (the same bounds the harness test uses); then each pass timed over
 * R runs, each after writing an L2-sized buffer (cold L2), and reported as time, GB/s and %
 * of the DRAM peak (bench.cuh).
 *
 * Bytes counted are the compulsory DRAM traffic per element: forward reads g and u and
 * writes h (2 + 2 + 2 = 6 bytes); backward reads dh, g and u and writes dg and du (10 bytes).
 */
#include <string.h>

#include "../swiglu.cuh"
#include "bench.cuh"
extern "C" {
#include "../../train/swiglu.h"
}

static int run_shape(const int *shape, int repeat, ColdL2 cold) {
    int N = shape[0], I = shape[1];
    size_t n = (size_t)N * I;
    unsigned seed = 777u + (unsigned)N * 31u + (unsigned)I;
    __nv_bfloat16 *g, *u, *dh, *h, *dg, *du;
    float *hg = random_bf16(&g, n, -12, 12, &seed), *hu = random_bf16(&u, n, -4, 4, &seed);
    float *hdh = random_bf16(&dh, n, -2, 2, &seed);
    cuda_check(cudaMalloc(&h, n * sizeof(__nv_bfloat16)));
    cuda_check(cudaMalloc(&dg, n * sizeof(__nv_bfloat16)));
    cuda_check(cudaMalloc(&du, n * sizeof(__nv_bfloat16)));

    // correctness first
    swiglu_forward(h, g, u, n, 0);
    swiglu_backward(dg, du, dh, g, u, n, 0);
    cuda_check(cudaDeviceSynchronize());
    float *ref_h = (float *)bench_malloc(n * sizeof(float)), *ref_dg = (float *)bench_malloc(n * sizeof(float));
    float *ref_du = (float *)bench_malloc(n * sizeof(float)), *tol = (float *)bench_malloc(n * sizeof(float));
    swiglu_forward(hg, hu, ref_h, n);
    swiglu_backward(hg, hu, hdh, ref_dg, ref_du, n);
    float *got_h = to_host(h, n), *got_dg = to_host(dg, n), *got_du = to_host(du, n);
    double worst_h = 0, worst_dg = 0, worst_du = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) tol[i] = swiglu_forward_tolerance(ref_h[i]);
    bad += report("h", got_h, ref_h, tol, n, &worst_h);
    for (size_t i = 0; i < n; i++) tol[i] = swiglu_forward_tolerance(ref_du[i]);
    bad += report("du", got_du, ref_du, tol, n, &worst_du);
    for (size_t i = 0; i < n; i++) tol[i] = swiglu_dg_tolerance(ref_dg[i], hdh[i], hg[i], hu[i]);
    bad += report("dg", got_dg, ref_dg, tol, n, &worst_dg);
    printf("N %d I %d: worst error / tolerance: h %.3f, du %.3f, dg %.3f -> %s\n", N, I, worst_h, worst_du, worst_dg,
           bad ? "MISMATCH" : "all results match");

    if (repeat > 0) {  // then speed (not with --check)
        print_bandwidth("forward", time_cold([&] { swiglu_forward(h, g, u, n, 0); }, repeat, cold), 6.0 * n);
        print_bandwidth("backward", time_cold([&] { swiglu_backward(dg, du, dh, g, u, n, 0); }, repeat, cold),
                        10.0 * n);
    }

    free(hg), free(hu), free(hdh), free(ref_h), free(ref_dg), free(ref_du), free(tol);
    free(got_h), free(got_dg), free(got_du);
    cuda_check(cudaFree(g)), cuda_check(cudaFree(u)), cuda_check(cudaFree(dh)), cuda_check(cudaFree(h));
    cuda_check(cudaFree(dg)), cuda_check(cudaFree(du));
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    BenchArgs a = bench_args(argc, argv, 2, 50, "swiglu [--repeat R | --check] [N I ...]   (tokens, intermediate size)");
    // with --check, awkward sizes: one element, a tail after the packs
    const int awkward[] = {1, 1, 1, 7, 3, 9, 5, 4100, 17, 14336, 1, 12288};
    // Mistral-7B's MLP at 4k and 16k tokens, Ministral-8B's at 8k, one token
    const int timed[] = {4096, 14336, 16384, 14336, 8192, 12288, 1, 14336};
    default_shapes(&a, awkward, timed);
    return run_shapes(&a, run_shape);
}
