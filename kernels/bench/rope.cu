/*
 * rope.cu: RoPE forward and backward (kernels/rope.cuh), checked against the CPU reference
 * (train/rope.c) and timed, in the manner of llm.c's dev/cuda.
 *
 *   make rope
 *   ./rope                                    the default shapes (below), theta 1e6
 *   ./rope [--repeat R] N H KV D [N H KV D ...]   tokens, query heads, key heads, head_dim
 *   ./rope --check [N H KV D ...]             validation only, no timing (what `make test-gpu` runs)
 *
 * For each shape: random bf16 Q and K; positions of packed conversations (lengths 1 to
 * 1000, each restarting at 0) with the last token at 32767, a large angle; the forward on
 * the GPU checked against the reference on the same inputs, then the backward applied to
 * the GPU's result and checked against the reference's backward of that, every element
 * within the bf16 bound of kernels/rope.cuh (the one the harness test uses). Then each pass
 * timed over R runs, each after writing an L2-sized buffer (cold L2), and reported as time,
 * GB/s and % of the DRAM peak (bench.cuh).
 *
 * Bytes counted are the compulsory DRAM traffic: every element of Q and K read and written
 * once in place (2 + 2 = 4 bytes per element), plus the 4-byte position per token; the
 * same for the backward.
 */
#include <string.h>

#include "../rope.cuh"
#include "bench.cuh"

static const double kTheta = 1e6;

// Rotates (forward or backward) the device tensor dev, whose values before are in host, and
// checks it against the reference; host then holds the GPU's result. Returns mismatches.
static size_t check_tensor(const char *what, const __nv_bfloat16 *dev, float *host, const int32_t *positions, int N,
                           int heads, int D, int direction, double *worst) {
    size_t n = (size_t)N * heads * D;
    float *ref = (float *)bench_malloc(n * sizeof(float)), *tol = (float *)bench_malloc(n * sizeof(float));
    memcpy(ref, host, n * sizeof(float));
    rope_apply(ref, positions, N, heads, D, kTheta, direction);
    rope_tolerances(tol, host, ref, positions, N, heads, D, kTheta);
    float *got = to_host(dev, n);
    size_t bad = report(what, got, ref, tol, n, worst);
    memcpy(host, got, n * sizeof(float));
    free(ref), free(tol), free(got);
    return bad;
}

static int run_shape(const int *shape, int repeat, ColdL2 cold) {
    int N = shape[0], H = shape[1], KV = shape[2], D = shape[3];
    size_t nq = (size_t)N * H * D, nk = (size_t)N * KV * D;
    unsigned seed = 99u + (unsigned)N * 31u + (unsigned)(H * D);
    __nv_bfloat16 *q, *k;
    float *hq = random_bf16(&q, nq, -4, 4, &seed), *hk = random_bf16(&k, nk, -4, 4, &seed);
    int32_t *positions = (int32_t *)bench_malloc((size_t)N * sizeof(int32_t)), *dpos;
    for (int t = 0, start = 0, len = 1; t < N; t++) {
        if (t - start == len) {  // the next conversation
            start = t;
            seed = seed * 1664525u + 1013904223u;
            len = 1 + (int)(seed % 1000u);
        }
        positions[t] = t - start;
    }
    positions[N - 1] = 32767;
    cuda_check(cudaMalloc(&dpos, (size_t)N * sizeof(int32_t)));
    cuda_check(cudaMemcpy(dpos, positions, (size_t)N * sizeof(int32_t), cudaMemcpyHostToDevice));

    double worst_fwd = 0, worst_bwd = 0;
    size_t bad = 0;
    rope_forward(q, k, dpos, N, H, KV, D, kTheta, 0);
    cuda_check(cudaDeviceSynchronize());
    bad += check_tensor("q", q, hq, positions, N, H, D, 1, &worst_fwd);
    bad += check_tensor("k", k, hk, positions, N, KV, D, 1, &worst_fwd);
    rope_backward(q, k, dpos, N, H, KV, D, kTheta, 0);  // on the forward's result
    cuda_check(cudaDeviceSynchronize());
    bad += check_tensor("dq", q, hq, positions, N, H, D, -1, &worst_bwd);
    bad += check_tensor("dk", k, hk, positions, N, KV, D, -1, &worst_bwd);
    printf("N %d heads %d/%d D %d: worst error / tolerance: forward %.3f, backward %.3f -> %s\n", N, H, KV, D,
           worst_fwd, worst_bwd, bad ? "MISMATCH" : "all results match");

    if (repeat > 0) {  // then speed (not with --check)
        double bytes = 4.0 * (double)(nq + nk) + 4.0 * N;
        print_bandwidth("forward", time_cold([&] { rope_forward(q, k, dpos, N, H, KV, D, kTheta, 0); }, repeat, cold),
                        bytes);
        print_bandwidth("backward", time_cold([&] { rope_backward(q, k, dpos, N, H, KV, D, kTheta, 0); }, repeat, cold),
                        bytes);
    }

    free(hq), free(hk), free(positions);
    cuda_check(cudaFree(q)), cuda_check(cudaFree(k)), cuda_check(cudaFree(dpos));
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    BenchArgs a =
        bench_args(argc, argv, 4, 50, "rope [--repeat R | --check] [N H KV D ...]   (tokens, heads, kv heads, head_dim)");
    // with --check, awkward shapes: one token, element path (D/2 not a multiple of 8), 96, 256, MHA
    const int awkward[] = {1, 1, 1, 64, 3, 2, 1, 6, 17, 4, 2, 96, 5, 3, 5, 256, 2051, 32, 8, 128, 7, 40, 24, 256};
    // Mistral-7B (32/8 heads of 128) at 4k and 16k tokens, one token
    const int timed[] = {4096, 32, 8, 128, 16384, 32, 8, 128, 1, 32, 8, 128};
    default_shapes(&a, awkward, timed);
    return run_shapes(&a, run_shape);
}
