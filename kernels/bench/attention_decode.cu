/*
 * attention_decode.cu: decode attention against a KV cache (kernels/attention_decode.cuh),
 * checked against exact double-precision values and timed, in the manner of llm.c's dev/cuda.
 *
 *   make attention_decode
 *   ./attention_decode                                 the default shapes (Mistral-7B: 32
 *                                                      query heads, 8 KV heads, head_dim 128;
 *                                                      batch 1 and 32)
 *   ./attention_decode [--repeat R] B C W Hq Hkv D NQ  shapes in groups of seven: B sequences
 *                                                      with C cached positions each, window W
 *                                                      (0: none), NQ new tokens
 *   ./attention_decode --check [B C W Hq Hkv D NQ ...] validation only, at awkward shapes
 *
 * For each shape: random bf16 queries, new keys and values, and a cache laid out as decoding
 * leaves it (slots = W with a window, else C + NQ); the kernel on the GPU; then for the first
 * and the last sequence, every query head of KV head 0 and every new token, each output
 * element against the exact value computed in double from the keys and values the query
 * sees, within the bf16 bound stated at the end of kernels/attention_decode.cuh. Any
 * mismatch: exit 2.
 *
 * Timing: averaged over R runs after one warm-up, the L2 flushed before each (decoding reads
 * the cache from DRAM). Bytes: the keys and values every query group sees (each read once:
 * 2 x D x 2 bytes per key and KV head), the queries, the output and the workspace written
 * and read back; reported as GB/s and % of the DRAM peak. Not yet measured on a GPU.
 */
#include "../attention_decode.cuh"
#include "bench.cuh"

// Checks sequence b against the exact values; returns the mismatches.
static size_t check_sequence(int b, const int *s, const float *hq, const float *hkn, const float *hvn,
                             const float *hkc, const float *hvc, const float *got, int slots, double *worst) {
    int C = s[1], W = s[2], Hq = s[3], Hkv = s[4], D = s[5], nq = s[6], T = C + nq, G = Hq / Hkv;
    // the whole sequence as attention_decode_bounds reads it: q rows of the new tokens, k and
    // v of every position the new tokens see (from the cache or the new rows), zeros elsewhere
    float *q = (float *)calloc((size_t)T * Hq * D, 4), *k = (float *)calloc((size_t)T * Hkv * D, 4);
    float *v = (float *)calloc((size_t)T * Hkv * D, 4);
    if (!q || !k || !v) {
        fprintf(stderr, "error: out of host memory\n");
        exit(2);
    }
    int lo = W > 0 && C - W + 1 > 0 ? C - W + 1 : 0;
    size_t kd = (size_t)Hkv * D, qd = (size_t)Hq * D;
    for (int j = lo; j < T; j++) {
        const float *ks = j >= C ? hkn + ((size_t)b * nq + j - C) * kd : hkc + ((size_t)b * slots + j % slots) * kd;
        const float *vs = j >= C ? hvn + ((size_t)b * nq + j - C) * kd : hvc + ((size_t)b * slots + j % slots) * kd;
        memcpy(k + (size_t)j * kd, ks, kd * 4), memcpy(v + (size_t)j * kd, vs, kd * 4);
        if (j >= C) memcpy(q + (size_t)j * qd, hq + ((size_t)b * nq + j - C) * qd, qd * 4);
    }
    double *exact = (double *)bench_malloc((size_t)D * 8), *tol = (double *)bench_malloc((size_t)D * 8);
    size_t bad = 0;
    for (int i = 0; i < nq; i++)
        for (int h = 0; h < G; h++) {
            attention_decode_bounds(exact, tol, q, k, v, C + i, h, Hq, Hkv, D, W);
            for (int d = 0; d < D; d++) {
                double g = got[(((size_t)b * nq + i) * Hq + h) * D + d], e = fabs(g - exact[d]);
                if (tol[d] > 0 && e / tol[d] > *worst) *worst = e / tol[d];
                if (!(e <= tol[d]) && bad++ < 5)
                    printf("  MISMATCH sequence %d token %d head %d [%d]: gpu %.7g, exact %.7g, tolerance %.3g\n", b, i,
                           h, d, g, exact[d], tol[d]);
            }
        }
    free(q), free(k), free(v), free(exact), free(tol);
    return bad;
}

static int run_shape(const int *s, int repeat, ColdL2 cold) {
    int B = s[0], C = s[1], W = s[2], Hq = s[3], Hkv = s[4], D = s[5], nq = s[6];
    if (Hq % Hkv || (D != 64 && D != 96 && D != 128) || Hq / Hkv * nq > ATTD_MAX_ROWS) {
        fprintf(stderr, "error: Hkv must divide Hq, D be 64, 96 or 128, (Hq / Hkv) x NQ at most %d\n", ATTD_MAX_ROWS);
        exit(1);
    }
    int slots = W > 0 ? W : C + nq, keys = W > 0 && W - 1 + nq < C + nq ? W - 1 + nq : C + nq;
    size_t nq_e = (size_t)B * nq * Hq * D, nk_e = (size_t)B * nq * Hkv * D, nc_e = (size_t)B * slots * Hkv * D;
    unsigned seed = 4321u + (unsigned)(B * 131 + C * 7 + D);
    __nv_bfloat16 *q, *kn, *vn, *kc, *vc, *out;
    float *hq = random_bf16(&q, nq_e, -2, 2, &seed), *hkn = random_bf16(&kn, nk_e, -2, 2, &seed);
    float *hvn = random_bf16(&vn, nk_e, -1, 1, &seed), *hkc = random_bf16(&kc, nc_e, -2, 2, &seed);
    float *hvc = random_bf16(&vc, nc_e, -1, 1, &seed), *work;
    int32_t *pos = (int32_t *)bench_malloc((size_t)B * sizeof(int32_t)), *dpos;
    for (int b = 0; b < B; b++) pos[b] = C;
    size_t work_n = attention_decode_workspace(B, nq, Hq, D, keys);
    cuda_check(cudaMalloc(&out, nq_e * sizeof(__nv_bfloat16)));
    cuda_check(cudaMalloc(&work, work_n * sizeof(float)));
    cuda_check(cudaMalloc(&dpos, (size_t)B * sizeof(int32_t)));
    cuda_check(cudaMemcpy(dpos, pos, (size_t)B * sizeof(int32_t), cudaMemcpyHostToDevice));
    auto run = [&] { attention_decode(out, q, kn, vn, kc, vc, NULL, dpos, B, nq, Hq, Hkv, D, slots, W, keys, work, 0); };

    run();
    cuda_check(cudaDeviceSynchronize());
    float *got = to_host(out, nq_e);
    double worst = 0;
    size_t bad = check_sequence(0, s, hq, hkn, hvn, hkc, hvc, got, slots, &worst);
    if (B > 1) bad += check_sequence(B - 1, s, hq, hkn, hvn, hkc, hvc, got, slots, &worst);
    printf("B %d cached %d W %d heads %d/%d D %d new %d (%d splits): worst error / tolerance %.3f -> %s\n", B, C, W, Hq,
           Hkv, D, nq, attention_decode_splits(keys), worst, bad ? "MISMATCH" : "all results match");
    if (repeat > 0) {
        double bytes = (double)B * keys * Hkv * D * 2 * 2 + 2.0 * nq_e * 2 + 2.0 * work_n * 4;
        print_bandwidth("decode", time_cold(run, repeat, cold), bytes);
    }
    free(hq), free(hkn), free(hvn), free(hkc), free(hvc), free(pos), free(got);
    __nv_bfloat16 *dev[] = {q, kn, vn, kc, vc, out};
    for (__nv_bfloat16 *d : dev) cuda_check(cudaFree(d));
    cuda_check(cudaFree(work));
    cuda_check(cudaFree(dpos));
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    BenchArgs a = bench_args(argc, argv, 7, 20, "attention_decode [--repeat R | --check] [B C W Hq Hkv D NQ ...]");
    static const int check[] = {
        1, 1, 0, 32, 8, 128, 1,     3, 300, 0, 8, 2, 64, 2,    2, 905, 300, 8, 2, 128, 1,
        4, 39, 40, 4, 1, 64, 3,     2, 600, 0, 32, 8, 96, 1,
    };
    static const int timed[] = {
        1, 4096, 0, 32, 8, 128, 1,   32, 4096, 0, 32, 8, 128, 1,   1, 16384, 0, 32, 8, 128, 1,
        32, 20000, 4096, 32, 8, 128, 1,
    };
    default_shapes(&a, check, timed);
    return run_shapes(&a, run_shape);
}
