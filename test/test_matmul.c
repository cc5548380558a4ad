// test_matmul.c: the SGEMM of train/matmul.h against a direct double-precision formula, for
// every kernel this CPU runs (AVX-512, AVX2+FMA where the CPU has them, and the generic one),
// every transpose combination, overwrite and accumulate, at awkward shapes (1, sizes that
// are not multiples of the register tile, K across more than one MATMUL_KC block, M and N
// across more than one tile, op(B) packed once for all tiles and per tile, row strides
// larger than the row); and the determinism promise: the result is bit for bit the same
// with 1, 2 and 3 threads, for every kernel this CPU runs, and the same with the AVX-512
// and the AVX2 kernel; and matmul_rows (B's rows made on demand) gives matmul's bits.
//
// Tolerance: a float32 dot product of K terms, summed in any order, differs from the exact
// value by at most about K * 2^-24 * sum_k |a_k b_k| (each partial sum rounds once, each
// product at most once); C's own rounding and the alpha scaling add 2^-24 * |C| each. We
// allow 2 * (K + 2) * 2^-24 * (sum_k |a_k b_k| * |alpha| + |C_before|), twice that bound:
// a wrong index or a missed block is off by O(|a b|), far above it.
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "../train/matmul.h"
#include "test.h"

static uint64_t rng = 77;
static void fill(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(2 * rng_uniform(&rng) - 1);
}

typedef struct {
    int M, N, K, a_t, b_t, accumulate;
    float alpha;
} Case;

// Runs one case with the current kernel: returns the number of elements out of tolerance;
// with out set, leaves the result there (for the determinism test).
static int check_case(const Case *c, float *out) {
    int lda = (c->a_t ? c->M : c->K) + 3, ldb = (c->b_t ? c->K : c->N) + 5, ldc = c->N + 2;  // padded strides
    size_t na = (size_t)(c->a_t ? c->K : c->M) * lda, nb = (size_t)(c->b_t ? c->N : c->K) * ldb,
           nc = (size_t)c->M * ldc;
    float *A = xmalloc(na * sizeof(float) + 4), *B = xmalloc(nb * sizeof(float) + 4), *C = xmalloc(nc * sizeof(float));
    float *C0 = xmalloc(nc * sizeof(float));
    fill(A, na), fill(B, nb), fill(C0, nc);
    memcpy(C, C0, nc * sizeof(float));
    matmul(C, ldc, A, lda, c->a_t, B, ldb, c->b_t, c->M, c->N, c->K, c->alpha, c->accumulate);
    int bad = 0;
    for (int i = 0; i < c->M; i++)
        for (int j = 0; j < c->N; j++) {
            double exact = 0.0, mag = 0.0;
            for (int k = 0; k < c->K; k++) {
                double a = c->a_t ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                double b = c->b_t ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                exact += a * b;
                mag += fabs(a * b);
            }
            double before = c->accumulate ? C0[(size_t)i * ldc + j] : 0.0;
            exact = before + c->alpha * exact;
            double tol = 2.0 * (c->K + 2) * ldexp(1.0, -24) * (mag * fabs(c->alpha) + fabs(before));
            if (fabs(C[(size_t)i * ldc + j] - exact) > tol) {
                if (!bad)
                    printf("  %s M %d N %d K %d a_t %d b_t %d acc %d: C[%d][%d] = %.9g, exact %.9g\n",
                           matmul_kernel_name(), c->M, c->N, c->K, c->a_t, c->b_t, c->accumulate, i, j,
                           C[(size_t)i * ldc + j], exact);
                bad++;
            }
        }
    // what lies between the rows (the stride padding) is never written
    for (int i = 0; i < c->M; i++)
        for (int j = c->N; j < ldc; j++) bad += C[(size_t)i * ldc + j] != C0[(size_t)i * ldc + j];
    if (out) memcpy(out, C, nc * sizeof(float));
    free(A), free(B), free(C), free(C0);
    return bad;
}

static const Case cases[] = {
    {1, 1, 1, 0, 0, 0, 1.0f},       {1, 1, 0, 0, 1, 0, 1.0f},      {3, 0, 5, 0, 0, 1, 1.0f},
    {7, 33, 17, 0, 1, 0, 1.0f},     {9, 31, 300, 0, 0, 1, 0.5f},   {17, 65, 513, 1, 0, 1, -2.0f},
    {300, 270, 40, 1, 1, 0, 1.0f},  {260, 9, 257, 0, 1, 1, 1.5f},  {64, 520, 64, 0, 1, 0, 0.125f},
    {33, 48, 600, 1, 1, 1, 1.0f},   {2, 300, 3, 0, 0, 0, 1.0f},    {129, 257, 255, 1, 0, 0, 1.0f},
    {65, 40, 700, 0, 1, 0, 1.0f},   {5, 70, 300, 1, 0, 0, 2.0f},   {254, 17, 40, 1, 0, 1, 1.0f},
    {100, 16, 520, 1, 0, 1, 0.5f},   // 16 columns: AVX-512's narrow kernel
    {1100, 20, 30, 1, 0, 1, 1.0f},   // more rows than one tile: op(B) packed once for both
    {20, 1100, 1000, 0, 1, 0, 1.0f},  // op(B) too large to pack whole: threads split the columns
    {260, 300, 300, 0, 1, 1, 1.0f},  // the last: large enough to be shared among threads
};
enum { N_CASES = sizeof(cases) / sizeof(cases[0]) };

static const char *const kernel_names[] = {"avx512", "avx2", "generic"};  // every kernel matmul has
enum { N_KERNEL_NAMES = sizeof(kernel_names) / sizeof(kernel_names[0]) };

static void all_cases(void) {
    for (int i = 0; i < N_CASES; i++) CHECK_INT(check_case(&cases[i], NULL), 0);
}

TEST(matmul_matches_double_precision_auto_kernel) {
    CHECK_INT(matmul_select("auto"), 0);
    printf("  auto kernel: %s\n", matmul_kernel_name());
    all_cases();
}

TEST(matmul_matches_double_precision_generic_kernel) {
    CHECK_INT(matmul_select("generic"), 0);
    all_cases();
    CHECK_INT(matmul_select("auto"), 0);
}

// The vector kernels this CPU may lack: each is checked where it runs; where it does not, it
// must be refused and auto must have fallen back to a kernel the CPU does run.
static void vector_kernel_cases(const char *name, const char *feature) {
    if (matmul_select(name) != 0) {
        printf("  no %s here (CPU lacks %s); auto is %s\n", name, feature, matmul_kernel_name());
        CHECK(strcmp(matmul_kernel_name(), name) != 0);
        return;
    }
    all_cases();
    CHECK_INT(matmul_select("auto"), 0);
}

TEST(matmul_matches_double_precision_avx512_kernel) { vector_kernel_cases("avx512", "AVX-512F or FMA"); }
TEST(matmul_matches_double_precision_avx2_kernel) { vector_kernel_cases("avx2", "AVX2 or FMA"); }

// matmul.h promises the AVX-512 and AVX2 kernels the same bits (both: one fused multiply-add
// per term in k order, from zero, then alpha). Their tiles differ (8 x 32 against 6 x 16), so
// this also shows no element's arithmetic depends on where it falls in a tile.
TEST(matmul_avx512_and_avx2_same_bits) {
    if (matmul_select("avx512") != 0 || matmul_select("avx2") != 0) {
        printf("  this CPU does not run both; nothing to compare\n");
        CHECK_INT(matmul_select("auto"), 0);
        return;
    }
    for (int i = 0; i < N_CASES; i++) {
        size_t nc = (size_t)cases[i].M * (cases[i].N + 2);
        float *r512 = xmalloc(nc * sizeof(float) + 4), *r2 = xmalloc(nc * sizeof(float) + 4);
        CHECK_INT(matmul_select("avx512"), 0);
        rng = 2000 + (uint64_t)i;
        CHECK_INT(check_case(&cases[i], r512), 0);
        CHECK_INT(matmul_select("avx2"), 0);
        rng = 2000 + (uint64_t)i;
        CHECK_INT(check_case(&cases[i], r2), 0);
        if (memcmp(r512, r2, nc * sizeof(float)) != 0) {
            printf("  case %d: avx2 differs from avx512\n", i);
            CHECK(0);
        }
        free(r512), free(r2);
    }
    CHECK_INT(matmul_select("auto"), 0);
}

TEST(matmul_unknown_kernel_refused) {
    const char *before = matmul_kernel_name();
    CHECK_INT(matmul_select("sse9"), -1);
    CHECK_STR(matmul_kernel_name(), before);
}

// The same inputs (the generator is re-seeded) with 1, 2 and 3 threads: identical bits, for
// each kernel this CPU runs.
TEST(matmul_same_bits_for_any_thread_count) {
    const Case *big = &cases[N_CASES - 1];
    CHECK((double)big->M * big->N * big->K >= MATMUL_PARALLEL_MIN);  // so more than one thread works on it
    int saved = omp_get_max_threads();
    for (int kn = 0; kn < N_KERNEL_NAMES; kn++) {
        if (matmul_select(kernel_names[kn]) != 0) continue;  // the CPU lacks it (reported above)
        for (int i = 0; i < N_CASES; i++) {
            size_t nc = (size_t)cases[i].M * (cases[i].N + 2);
            float *first = xmalloc(nc * sizeof(float) + 4), *again = xmalloc(nc * sizeof(float) + 4);
            for (int threads = 1; threads <= 3; threads++) {
                omp_set_num_threads(threads);
                rng = 1000 + (uint64_t)i;
                CHECK_INT(check_case(&cases[i], threads == 1 ? first : again), 0);
                if (threads > 1 && memcmp(first, again, nc * sizeof(float)) != 0) {
                    printf("  %s case %d: %d threads differ from 1\n", kernel_names[kn], i, threads);
                    CHECK(0);
                }
            }
            free(first), free(again);
        }
    }
    CHECK_INT(matmul_select("auto"), 0);
    omp_set_num_threads(saved);
}

// matmul_rows: B's rows handed over by a function (here from the float matrix itself) must
// give exactly matmul's bits, with and without b_t, on one thread and on two (where op(B)
// is packed whole), for every kernel this CPU runs.
typedef struct {
    const float *B;
    int ldb;
} RowsOf;

static void rows_of(const void *ctx, int r, int c0, int n, float *out) {
    const RowsOf *m = ctx;
    memcpy(out, m->B + (size_t)r * m->ldb + c0, (size_t)n * sizeof(float));
}

TEST(matmul_rows_same_bits_as_matmul) {
    int saved = omp_get_max_threads();
    for (int kn = 0; kn < N_KERNEL_NAMES; kn++) {
        if (matmul_select(kernel_names[kn]) != 0) continue;
        for (int threads = 1; threads <= 2; threads++) {
            omp_set_num_threads(threads);
            for (int i = 0; i < N_CASES; i++) {
                const Case *c = &cases[i];
                int lda = (c->a_t ? c->M : c->K) + 3, ldb = (c->b_t ? c->K : c->N) + 5, ldc = c->N + 2;
                size_t na = (size_t)(c->a_t ? c->K : c->M) * lda, nb = (size_t)(c->b_t ? c->N : c->K) * ldb,
                       nc = (size_t)c->M * ldc;
                float *A = xmalloc(na * sizeof(float) + 4), *B = xmalloc(nb * sizeof(float) + 4);
                float *C1 = xmalloc(nc * sizeof(float) + 4), *C2 = xmalloc(nc * sizeof(float) + 4);
                fill(A, na), fill(B, nb), fill(C1, nc);
                memcpy(C2, C1, nc * sizeof(float));
                RowsOf src = {B, ldb};
                MatmulRows rows = {rows_of, &src};
                matmul(C1, ldc, A, lda, c->a_t, B, ldb, c->b_t, c->M, c->N, c->K, c->alpha, c->accumulate);
                matmul_rows(C2, ldc, A, lda, c->a_t, &rows, c->b_t, c->M, c->N, c->K, c->alpha, c->accumulate);
                if (memcmp(C1, C2, nc * sizeof(float)) != 0) {
                    printf("  %s, %d thread(s), case %d: matmul_rows differs from matmul\n", kernel_names[kn], threads, i);
                    CHECK(0);
                }
                free(A), free(B), free(C1), free(C2);
            }
        }
    }
    CHECK_INT(matmul_select("auto"), 0);
    omp_set_num_threads(saved);
}

int main(void) {
    RUN(matmul_matches_double_precision_auto_kernel);
    RUN(matmul_matches_double_precision_generic_kernel);
    RUN(matmul_matches_double_precision_avx512_kernel);
    RUN(matmul_matches_double_precision_avx2_kernel);
    RUN(matmul_avx512_and_avx2_same_bits);
    RUN(matmul_unknown_kernel_refused);
    RUN(matmul_same_bits_for_any_thread_count);
    RUN(matmul_rows_same_bits_as_matmul);
    return test_summary();
}
