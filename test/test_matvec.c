// test_matvec.c: the decoding products (train/matvec.h) against double precision, for
// float32, bf16 and NF4 weights (the NF4 grouped register path and the per-element one),
// with every kernel this CPU runs; and the property the batch decoder relies on: a row's
// result is the same bits whatever M and whatever its place among the M rows.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/half.h"
#include "../common/util.h"
#include "../train/matvec.h"
#include "../train/nf4.h"
#include "test.h"

enum { F32, BF16, NF4 };
static const char *kinds[] = {"f32", "bf16", "nf4"};

typedef struct {
    int kind, out, in;
    float *w;  // the float32 values the weight stands for
    uint16_t *w16;
    Nf4Weight q;
} Weight;

static void make_weight(Weight *W, int kind, int out, int in, uint64_t *rng) {
    memset(W, 0, sizeof(*W));
    W->kind = kind, W->out = out, W->in = in;
    size_t n = (size_t)out * in;
    W->w = malloc(n * 4);
    for (size_t i = 0; i < n; i++) W->w[i] = (float)(rng_uniform(rng) * 2 - 1);
    if (kind == BF16) {
        W->w16 = malloc(n * 2);
        for (size_t i = 0; i < n; i++) W->w16[i] = f32_to_bf16(W->w[i]), W->w[i] = bf16_to_f32(W->w16[i]);
    }
    if (kind == NF4) {
        nf4_weight_quantize(&W->q, W->w, out, in, 64, 1);
        nf4_weight_dequantize(&W->q, W->w);
    }
}

static void free_weight(Weight *W) {
    free(W->w), free(W->w16);
    if (W->kind == NF4) nf4_weight_free(&W->q);
}

static void run(const Weight *W, float *y, const float *x, int M, float alpha, int acc) {
    if (W->kind == F32) matvec_f32(y, x, W->w, M, W->out, W->in, alpha, acc);
    if (W->kind == BF16) matvec_bf16(y, x, W->w16, M, W->out, W->in, alpha, acc);
    if (W->kind == NF4) matvec_nf4(y, x, &W->q, M, alpha, acc);
}

// y = 0.5 * x W^T + y0 against double sums, each element within 1e-6 of sum |x w|; then
// every row of the M-row product against the same row computed alone, bit for bit.
static int check_shape(int kind, int M, int out, int in, uint64_t *rng) {
    Weight W;
    make_weight(&W, kind, out, in, rng);
    float *x = malloc((size_t)M * in * 4), *y = malloc((size_t)M * out * 4), *y0 = malloc((size_t)M * out * 4),
          *one = malloc((size_t)out * 4);
    for (size_t i = 0; i < (size_t)M * in; i++) x[i] = (float)(rng_uniform(rng) * 2 - 1);
    for (size_t i = 0; i < (size_t)M * out; i++) y[i] = y0[i] = (float)rng_uniform(rng);
    run(&W, y, x, M, 0.5f, 1);
    int bad = 0;
    for (int m = 0; m < M; m++)
        for (int o = 0; o < out; o++) {
            double s = 0, mag = 0;
            for (int k = 0; k < in; k++) {
                s += (double)x[(size_t)m * in + k] * W.w[(size_t)o * in + k];
                mag += fabs((double)x[(size_t)m * in + k] * W.w[(size_t)o * in + k]);
            }
            double want = 0.5 * s + y0[(size_t)m * out + o];
            if (fabs(y[(size_t)m * out + o] - want) > 1e-6 * (mag + 1)) bad++;
        }
    run(&W, y, x, M, 1.0f, 0);
    for (int m = 0; m < M; m++) {
        run(&W, one, x + (size_t)m * in, 1, 1.0f, 0);
        if (memcmp(one, y + (size_t)m * out, (size_t)out * 4)) bad += 1000;
    }
    if (bad) printf("  %s M %d out %d in %d (%s kernel): %d wrong\n", kinds[kind], M, out, in, matvec_kernel_name(), bad);
    free(x), free(y), free(y0), free(one);
    free_weight(&W);
    return bad;
}

static void check_all(const char *kernel) {
    CHECK_INT(matvec_select(kernel), 0);
    uint64_t rng = 5;
    static const int Ms[] = {1, 3, 16, 17, 33}, outs[] = {1, 7, 70}, ins[] = {48, 64, 80, 96, 256};
    int bad = 0;
    for (int kind = 0; kind < 3; kind++)
        for (size_t a = 0; a < 5; a++)
            for (size_t b = 0; b < 3; b++)
                for (size_t c = 0; c < 5; c++) bad += check_shape(kind, Ms[a], outs[b], ins[c], &rng);
    CHECK_INT(bad, 0);
    matvec_select("auto");
}

TEST(matvec_generic_kernels_against_double) { check_all("generic"); }

// AVX-512 where the CPU has it (the NF4 grouped path at in 64, 96 and 256: rows that start in
// the middle of a block at 96); elsewhere this runs
// the generic kernels again and says so.
TEST(matvec_fastest_kernels_against_double) {
    printf("  kernel: %s\n", matvec_kernel_name());
    check_all("auto");
}

TEST(matvec_unknown_kernel_refused) {
    const char *before = matvec_kernel_name();
    CHECK_INT(matvec_select("sse9"), -1);
    CHECK_STR(matvec_kernel_name(), before);
}

int main(void) {
    RUN(matvec_generic_kernels_against_double);
    RUN(matvec_fastest_kernels_against_double);
    RUN(matvec_unknown_kernel_refused);
    return test_summary();
}
