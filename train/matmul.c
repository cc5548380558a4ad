// matmul.c: the cache-blocked, register-tiled, OpenMP-parallel SGEMM of matmul.h.
#include "matmul.h"

#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "../common/util.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86_KERNELS 1  // the AVX-512 and AVX2 micro-kernels, in intrinsics
#endif

// A micro-kernel: c[mr, nr] (=|+=) alpha * sum_k a(., k) (x) b[k][0..NR), over kb steps,
// writing only the mr x nr part that lies inside C. b is a packed panel (kb x NR,
// zero-padded); A is read where it lies: element (i, k) of op(A) at a[i * a_row + k * a_k]
// (a_row = lda, a_k = 1 for A; a_row = 1, a_k = lda for A stored transposed). Its values are
// only ever broadcast, one at a time, so a packed copy would buy nothing but the copying.
// Rows past mr are not read: their accumulators repeat the last row's and are not stored.
typedef void (*MicroKernel)(int kb, const float *a, size_t a_row, size_t a_k, const float *b, float *c, int ldc, int mr,
                            int nr, float alpha, int accumulate);

typedef struct {
    const char *name;
    int mr, nr;
    MicroKernel run;
    int narrow_nr;  // a kernel narrow_nr columns wide for products that narrow (0: none)
    MicroKernel narrow;
} Kernel;

// The start of each of the MR rows a kernel reads: row i, or the last row there is.
static inline void row_starts(const float **rows, int MR, const float *a, size_t a_row, int mr) {
    for (int i = 0; i < MR; i++) rows[i] = a + (size_t)(i < mr ? i : mr - 1) * a_row;
}

// The portable kernel: plain C the compiler vectorises (4 x 8 accumulators fit the 16
// registers of SSE2, the x86-64 baseline). On x86-64 gcc also compiles it for AVX2, picked
// at load time where the CPU has it: the same multiplies and adds in the same order (no
// fused multiply-adds: ISO C mode does not contract), twice as wide. Chosen only where
// neither vector kernel below runs (or when forced).
enum { GENERIC_MR = 4, GENERIC_NR = 8 };
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void kernel_generic(int kb, const float *a, size_t a_row, size_t a_k, const float *b, float *c, int ldc, int mr,
                           int nr, float alpha, int accumulate) {
    const float *rows[GENERIC_MR];
    row_starts(rows, GENERIC_MR, a, a_row, mr);
    float acc[GENERIC_MR][GENERIC_NR] = {{0}};
    for (int k = 0; k < kb; k++) {
        const float *bk = b + (size_t)k * GENERIC_NR;
        for (int i = 0; i < GENERIC_MR; i++) {
            float ai = rows[i][(size_t)k * a_k];
            for (int j = 0; j < GENERIC_NR; j++) acc[i][j] += ai * bk[j];
        }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            float *cij = c + (size_t)i * ldc + j;
            *cij = accumulate ? *cij + alpha * acc[i][j] : alpha * acc[i][j];
        }
}

#ifdef HAVE_X86_KERNELS
// AVX-512: 8 rows x 32 columns = 16 zmm accumulators (of 32), enough independent fused
// multiply-adds in flight to keep both FMA ports busy; A's values are broadcast from memory.
// Edge tiles use masked loads and stores, so every element gets the same arithmetic. The
// same loop one vector wide (8 x 16, 8 accumulators: still one FMA per port per cycle) is
// the narrow kernel, for products 16 columns wide (LoRA's x A^T, dY B, dY^T u at rank 16),
// where the wide one would spend half its multiply-adds on zero padding.
enum { AVX512_MR = 8, AVX512_NR = 32, AVX512_NARROW_NR = 16 };
__attribute__((target("avx512f,fma"), always_inline)) static inline void avx512_tile(
    int kb, const float *a, size_t a_row, size_t a_k, const float *b, float *c, int ldc, int mr, int nr, float alpha,
    int accumulate, const int halves) {
    const float *rows[AVX512_MR];
    row_starts(rows, AVX512_MR, a, a_row, mr);
    __m512 acc[AVX512_MR][2];
    for (int i = 0; i < AVX512_MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int k = 0; k < kb; k++) {
        __m512 b0 = _mm512_loadu_ps(b + (size_t)k * 16 * halves),
               b1 = halves == 2 ? _mm512_loadu_ps(b + (size_t)k * 32 + 16) : b0;
        for (int i = 0; i < AVX512_MR; i++) {
            __m512 ai = _mm512_set1_ps(rows[i][(size_t)k * a_k]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            if (halves == 2) acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1),
              m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr > 16 ? (1u << (nr - 16)) - 1 : 0);
    __m512 va = _mm512_set1_ps(alpha);
    for (int i = 0; i < mr; i++) {
        float *ci = c + (size_t)i * ldc;
        for (int hf = 0; hf < halves; hf++) {
            __mmask16 m = hf ? m1 : m0;
            __m512 r = _mm512_mul_ps(va, acc[i][hf]);
            if (accumulate) r = _mm512_fmadd_ps(va, acc[i][hf], _mm512_maskz_loadu_ps(m, ci + 16 * hf));
            _mm512_mask_storeu_ps(ci + 16 * hf, m, r);
        }
    }
}

__attribute__((target("avx512f,fma"))) static void kernel_avx512(int kb, const float *a, size_t a_row, size_t a_k,
                                                                  const float *b, float *c, int ldc, int mr, int nr,
                                                                  float alpha, int accumulate) {
    avx512_tile(kb, a, a_row, a_k, b, c, ldc, mr, nr, alpha, accumulate, 2);
}

__attribute__((target("avx512f,fma"))) static void kernel_avx512_narrow(int kb, const float *a, size_t a_row,
                                                                         size_t a_k, const float *b, float *c, int ldc,
                                                                         int mr, int nr, float alpha, int accumulate) {
    avx512_tile(kb, a, a_row, a_k, b, c, ldc, mr, nr, alpha, accumulate, 1);
}

// AVX2 + FMA (16 ymm registers): 6 rows x 16 columns = 12 accumulators, 2 for the row of
// B and 1 for the broadcast value of A. Per step k: 2 loads of B and 6 broadcasts feed 12
// fused multiply-adds, so the two FMA ports (4 cycles of latency, 8 in flight needed) stay
// busy without saturating the two load ports. Edge tiles use masked loads and stores and the
// same operations as the AVX-512 kernel (zero start, one fused multiply-add per term in k
// order, then alpha * acc, fused with C's old value when accumulating), so the two give the
// same bits.
enum { AVX2_MR = 6, AVX2_NR = 16 };
__attribute__((target("avx2,fma"))) static void kernel_avx2(int kb, const float *a, size_t a_row, size_t a_k,
                                                             const float *b, float *c, int ldc, int mr, int nr,
                                                             float alpha, int accumulate) {
    const float *rows[AVX2_MR];
    row_starts(rows, AVX2_MR, a, a_row, mr);
    __m256 acc[AVX2_MR][2];
    for (int i = 0; i < AVX2_MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int k = 0; k < kb; k++) {
        __m256 b0 = _mm256_loadu_ps(b + (size_t)k * AVX2_NR), b1 = _mm256_loadu_ps(b + (size_t)k * AVX2_NR + 8);
        for (int i = 0; i < AVX2_MR; i++) {
            // set1 of a value, not _mm256_broadcast_ss(pointer): gcc takes that builtin for
            // a read of any memory, acc's included, and then stores all 12 accumulators at
            // every step (a third of the speed)
            __m256 ai = _mm256_set1_ps(rows[i][(size_t)k * a_k]);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    // lane j of the masks is all ones (load/store it) when column j (j + 8) lies inside C
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), lane),
            m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8), lane);
    __m256 va = _mm256_set1_ps(alpha);
    for (int i = 0; i < mr; i++) {
        float *ci = c + (size_t)i * ldc;
        __m256 r0 = _mm256_mul_ps(va, acc[i][0]), r1 = _mm256_mul_ps(va, acc[i][1]);
        if (accumulate) {
            r0 = _mm256_fmadd_ps(va, acc[i][0], _mm256_maskload_ps(ci, m0));
            r1 = _mm256_fmadd_ps(va, acc[i][1], _mm256_maskload_ps(ci + 8, m1));
        }
        _mm256_maskstore_ps(ci, m0, r0);
        _mm256_maskstore_ps(ci + 8, m1, r1);
    }
}
#endif

static const Kernel kernels[] = {
#ifdef HAVE_X86_KERNELS
    {"avx512", AVX512_MR, AVX512_NR, kernel_avx512, AVX512_NARROW_NR, kernel_avx512_narrow},
    {"avx2", AVX2_MR, AVX2_NR, kernel_avx2, 0, NULL},
#endif
    {"generic", GENERIC_MR, GENERIC_NR, kernel_generic, 0, NULL},
};
enum { N_KERNELS = sizeof(kernels) / sizeof(kernels[0]) };

static int kernel_runs_here(const Kernel *k) {
#ifdef HAVE_X86_KERNELS
    if (k->run == kernel_avx512) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    if (k->run == kernel_avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    (void)k;
    return 1;
}

static const Kernel *chosen;  // NULL: the first kernel (fastest first) this CPU runs

static const Kernel *current_kernel(void) {
    if (chosen) return chosen;
    for (int i = 0; i < N_KERNELS; i++)
        if (kernel_runs_here(&kernels[i])) return &kernels[i];
    return &kernels[N_KERNELS - 1];
}

int matmul_select(const char *name) {
    if (!strcmp(name, "auto")) {
        chosen = NULL;
        return 0;
    }
    for (int i = 0; i < N_KERNELS; i++)
        if (!strcmp(name, kernels[i].name) && kernel_runs_here(&kernels[i])) {
            chosen = &kernels[i];
            return 0;
        }
    return -1;
}

const char *matmul_kernel_name(void) { return current_kernel()->name; }

// dst[k * stride + i] = src[i * ld + k] for i < rows, k < kb: a transposing copy, by 8 x 8
// blocks the compiler turns into vector shuffles (element by element it is the slowest part
// of packing).
static void copy_transposed(float *dst, int stride, const float *src, int ld, int rows, int kb) {
    int i = 0;
    for (; i + 8 <= rows; i += 8) {
        int k = 0;
        for (; k + 8 <= kb; k += 8) {
            float t[8][8];
            for (int a = 0; a < 8; a++)
                for (int b = 0; b < 8; b++) t[a][b] = src[(size_t)(i + a) * ld + k + b];
            for (int b = 0; b < 8; b++)
                for (int a = 0; a < 8; a++) dst[(size_t)(k + b) * stride + i + a] = t[a][b];
        }
        for (; k < kb; k++)
            for (int a = 0; a < 8; a++) dst[(size_t)k * stride + i + a] = src[(size_t)(i + a) * ld + k];
    }
    for (; i < rows; i++)
        for (int k = 0; k < kb; k++) dst[(size_t)k * stride + i] = src[(size_t)i * ld + k];
}

// Where op(B) comes from: a float matrix, or rows made on demand (matmul_rows).
typedef struct {
    const float *B;
    int ldb, b_t;
    const MatmulRows *rows;
} Source;

// op(B)[k0 .. k0+kb, j0 .. j0+nb) into panels of nr columns: dst[q][k][j], zero-padded.
// Rows made on demand go straight into the panels, or with b_t (stored B is [N, K], its rows
// are the panels' columns) into tmp (nr x kb) first and are transposed from there.
static void pack_b(float *dst, const Source *s, int j0, int nb, int k0, int kb, int nr, float *tmp) {
    for (int q = 0; q < nb; q += nr) {
        int cols = nb - q < nr ? nb - q : nr;
        float *panel = dst + (size_t)q * kb;
        if (s->b_t) {
            const float *src = s->B + (size_t)(j0 + q) * s->ldb + k0;
            int ld = s->ldb;
            if (s->rows) {
                for (int c = 0; c < cols; c++) s->rows->row(s->rows->ctx, j0 + q + c, k0, kb, tmp + (size_t)c * kb);
                src = tmp, ld = kb;
            }
            copy_transposed(panel, nr, src, ld, cols, kb);
        } else
            for (int k = 0; k < kb; k++) {
                if (s->rows) s->rows->row(s->rows->ctx, k0 + k, j0 + q, cols, panel + (size_t)k * nr);
                else memcpy(panel + (size_t)k * nr, s->B + (size_t)(k0 + k) * s->ldb + j0 + q, (size_t)cols * sizeof(float));
            }
        for (int k = 0; cols < nr && k < kb; k++)
            for (int j = cols; j < nr; j++) panel[(size_t)k * nr + j] = 0.0f;
    }
}

// How C is cut into tiles, and whether op(B) is packed once for all of them.
typedef struct {
    int mc, nc;       // a tile's rows and columns (whole register tiles, but for the edges)
    int tiles_m, tiles_n;
    int prepacked;    // op(B) packed whole before the tiles run (else each tile packs its own)
    int parallel;     // shared among the OpenMP threads
} Plan;

// A tile's work: for each block of K, op(B)'s block of the tile's columns (packed), and for
// every MR rows of the tile (their values stay in L1) every panel of those columns (from L2).
// Columns: panels shared out evenly among as few tiles as MATMUL_NC allows. Rows: all of M
// up to MATMUL_MC. With several threads the tiles shrink until each thread has about four to
// take from the shared queue (so one that starts late or loses its core for a while does
// not keep the others waiting at the end): by rows where op(B) is packed once for all tiles
// (up to MATMUL_PREPACK floats), since that costs nothing, else by columns (rows would pack
// B again). Only the work split changes, never a sum's order.
//
// Small products (the LoRA ones: tokens x rank x width) run on the calling thread: a fork
// and join would cost about what it saves, and every join waits for the slowest thread,
// which on a busy machine may be waiting for a core.
static Plan plan_tiles(int M, int N, int K, int mr, int nr) {
    int threads = omp_in_parallel() || (double)M * N * K < MATMUL_PARALLEL_MIN ? 1 : omp_get_max_threads();
    int panels = (N + nr - 1) / nr, panels_max = MATMUL_NC / nr > 0 ? MATMUL_NC / nr : 1, rows = (M + mr - 1) / mr;
    int tm = (M + MATMUL_MC - 1) / MATMUL_MC, tn = (panels + panels_max - 1) / panels_max;
    Plan p = {0};
    p.prepacked = (double)K * panels * nr <= MATMUL_PREPACK && (tm > 1 || threads > 1);
    while (threads > 1 && (long)tm * tn < 4L * threads) {
        if (p.prepacked && tm < rows) tm++;
        else if (tn < panels) tn++;
        else if (tm < rows) tm++;
        else break;
    }
    int per_tile_rows = (rows + tm - 1) / tm, per_tile_panels = (panels + tn - 1) / tn;
    p.mc = per_tile_rows * mr;
    p.nc = per_tile_panels * nr;
    p.tiles_m = (M + p.mc - 1) / p.mc;
    p.tiles_n = (N + p.nc - 1) / p.nc;
    p.parallel = threads > 1;
    return p;
}

static void matmul_source(float *C, int ldc, const float *A, int lda, int a_t, const Source *src, int M, int N, int K,
                          float alpha, int accumulate) {
    if (M <= 0 || N <= 0) return;
    const Kernel *kern = current_kernel();
    MicroKernel run = kern->run;
    int mr = kern->mr, nr = kern->nr;
    if (N <= kern->narrow_nr) run = kern->narrow, nr = kern->narrow_nr;
    Plan p = plan_tiles(M, N, K, mr, nr);
    int tiles = p.tiles_m * p.tiles_n, mc = p.mc, nc = p.nc;
    size_t a_row = a_t ? 1 : (size_t)lda, a_k = a_t ? (size_t)lda : 1;  // op(A)(i, k) = A[i * a_row + k * a_k]
    // op(B) packed whole: block k0 at packed + k0 * n_pad, its panel of column j at + j * kb
    size_t n_pad = (size_t)(N + nr - 1) / nr * nr, kc = (size_t)(K < MATMUL_KC ? (K > 0 ? K : 1) : MATMUL_KC);
    float *packed = p.prepacked ? xmalloc(((size_t)K * n_pad > 0 ? (size_t)K * n_pad : 1) * sizeof(float)) : NULL;
    int k_blocks = (K + MATMUL_KC - 1) / MATMUL_KC;
#pragma omp parallel if (p.parallel)
    {
        float *tmp = src->rows && src->b_t ? xmalloc(kc * (size_t)nr * sizeof(float)) : NULL;
        if (p.prepacked) {
#pragma omp for schedule(static)
            for (int u = 0; u < k_blocks * p.tiles_n; u++) {
                int k0 = (u / p.tiles_n) * MATMUL_KC, j0 = (u % p.tiles_n) * nc;
                int kb = K - k0 < MATMUL_KC ? K - k0 : MATMUL_KC, nb = N - j0 < nc ? N - j0 : nc;
                pack_b(packed + (size_t)k0 * n_pad + (size_t)j0 * kb, src, j0, nb, k0, kb, nr, tmp);
            }
        }
        float *bp = p.prepacked ? NULL : xmalloc(kc * (size_t)nc * sizeof(float));
#pragma omp for schedule(dynamic) nowait
        for (int t = 0; t < tiles; t++) {
            int i0 = (t / p.tiles_n) * mc, j0 = (t % p.tiles_n) * nc;
            int mb = M - i0 < mc ? M - i0 : mc, nb = N - j0 < nc ? N - j0 : nc;
            if (K <= 0 && !accumulate)  // an empty sum
                for (int i = 0; i < mb; i++) memset(C + (size_t)(i0 + i) * ldc + j0, 0, (size_t)nb * sizeof(float));
            for (int k0 = 0; k0 < K; k0 += MATMUL_KC) {
                int kb = K - k0 < MATMUL_KC ? K - k0 : MATMUL_KC;
                const float *b = bp;
                if (p.prepacked) b = packed + (size_t)k0 * n_pad + (size_t)j0 * kb;
                else pack_b(bp, src, j0, nb, k0, kb, nr, tmp);
                for (int i = 0; i < mb; i += mr)
                    for (int j = 0; j < nb; j += nr)
                        run(kb, A + (size_t)(i0 + i) * a_row + (size_t)k0 * a_k, a_row, a_k, b + (size_t)j * kb,
                            C + (size_t)(i0 + i) * ldc + j0 + j, ldc, mb - i < mr ? mb - i : mr, nb - j < nr ? nb - j : nr,
                            alpha, accumulate || k0 > 0);
            }
        }
        free(bp);
        free(tmp);
    }
    free(packed);
}

void matmul(float *C, int ldc, const float *A, int lda, int a_t, const float *B, int ldb, int b_t, int M, int N, int K,
            float alpha, int accumulate) {
    Source src = {B, ldb, b_t, NULL};
    matmul_source(C, ldc, A, lda, a_t, &src, M, N, K, alpha, accumulate);
}

void matmul_rows(float *C, int ldc, const float *A, int lda, int a_t, const MatmulRows *B, int b_t, int M, int N, int K,
                 float alpha, int accumulate) {
    Source src = {NULL, 0, b_t, B};
    matmul_source(C, ldc, A, lda, a_t, &src, M, N, K, alpha, accumulate);
}
