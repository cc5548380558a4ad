// bench_matmul.c: GFLOP/s of matmul (train/matmul.h) on the LM head's two products, per
// micro-kernel, as train/cross_entropy.c runs them (CE_ROWS = 256 trained tokens at a time)
// in scripts/bench_train_cpu.py's model (hidden 256, vocabulary 32,768):
//
//   logits = x W^T     M 256, N 32768, K 256   (W [vocab, hidden], b_t)
//   dx = dlogits W     M 256, N 256,   K 32768 (plain)
//
// FLOPs counted: 2 M N K per product (one multiply and one add per term). Each product runs
// --repeat times and the fastest counts (other work on the machine only slows a run down).
// Correctness is test_matmul's business; this only times.
//
//   ./bench_matmul [--threads N] [--repeat R] [KERNEL ...]    (default: every kernel this CPU runs)
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "cross_entropy.h"
#include "matmul.h"

enum { TOKENS = CE_ROWS, HIDDEN = 256, VOCAB = 32768 };

static double best_seconds(int repeat, float *C, int ldc, const float *A, int lda, const float *B, int ldb, int b_t,
                           int M, int N, int K) {
    double best = 1e30;
    for (int r = 0; r < repeat; r++) {
        double t0 = omp_get_wtime();
        matmul(C, ldc, A, lda, 0, B, ldb, b_t, M, N, K, 1.0f, 0);
        double t = omp_get_wtime() - t0;
        if (t < best) best = t;
    }
    return best;
}

// A whole positive number, or -1 (refused by the caller).
static int positive(const char *s) {
    char *end;
    long v = strtol(s, &end, 10);
    return *s && !*end && v > 0 && v <= 1 << 20 ? (int)v : -1;
}

int main(int argc, char **argv) {
    static const char *const all[] = {"avx512", "avx2", "generic"};
    const char *names[16];
    int n_names = 0, threads = 0, repeat = 5;
    const char *usage = "usage: bench_matmul [--threads N] [--repeat R] [avx512|avx2|generic ...]\n";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = positive(argv[++i]);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = positive(argv[++i]);
        else if (argv[i][0] != '-' && n_names < 16) names[n_names++] = argv[i];
        else {
            fprintf(stderr, "error: unknown option or missing value: %s (see --help)\n", argv[i]);
            return 1;
        }
    }
    if (threads < 0 || repeat < 1) {
        fprintf(stderr, "error: --threads must be positive and --repeat at least 1\n");
        return 1;
    }
    if (threads) omp_set_num_threads(threads);
    for (int i = 0; i < n_names; i++)
        if (matmul_select(names[i]) != 0) {
            fprintf(stderr, "error: matrix kernel '%s' is unknown or this CPU cannot run it\n", names[i]);
            return 1;
        }
    if (!n_names)
        for (int i = 0; i < 3; i++)
            if (matmul_select(all[i]) == 0) names[n_names++] = all[i];

    size_t nx = (size_t)TOKENS * HIDDEN, nw = (size_t)VOCAB * HIDDEN, nl = (size_t)TOKENS * VOCAB;
    float *x = xmalloc(nx * sizeof(float)), *W = xmalloc(nw * sizeof(float)), *logits = xmalloc(nl * sizeof(float));
    float *dx = xmalloc(nx * sizeof(float));
    uint64_t rng = 1;
    for (size_t i = 0; i < nx; i++) x[i] = (float)(2 * rng_uniform(&rng) - 1);
    for (size_t i = 0; i < nw; i++) W[i] = (float)(2 * rng_uniform(&rng) - 1);
    double gflop = 2.0 * TOKENS * VOCAB * HIDDEN / 1e9;  // the same for both products
    printf("LM head, %d tokens x hidden %d x vocabulary %d, %d thread(s), best of %d:\n", TOKENS, HIDDEN, VOCAB,
           omp_get_max_threads(), repeat);
    for (int i = 0; i < n_names; i++) {
        matmul_select(names[i]);
        double fwd = best_seconds(repeat, logits, VOCAB, x, HIDDEN, W, HIDDEN, 1, TOKENS, VOCAB, HIDDEN);
        double bwd = best_seconds(repeat, dx, HIDDEN, logits, VOCAB, W, HIDDEN, 0, TOKENS, HIDDEN, VOCAB);
        printf("  %-8s logits = x W^T %6.1f GFLOP/s   dx = dlogits W %6.1f GFLOP/s\n", matmul_kernel_name(),
               gflop / fwd, gflop / bwd);
    }
    free(x), free(W), free(logits), free(dx);
    return 0;
}
