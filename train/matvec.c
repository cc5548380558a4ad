// matvec.c: the decoding products of matvec.h: each output row of W read once, its dot
// products with up to MATVEC_MB rows of x computed together, the rows of W shared out among
// the OpenMP threads.
#include "matvec.h"

#include <stdlib.h>
#include <string.h>

#include "../common/half.h"
#include "../common/util.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512_KERNELS 1
#endif

enum { LANES = 16, MATVEC_MB = 16 };  // lanes of a sum; rows of x per pass over a row of W
enum { NF4_MB = 4 };                  // the same for the NF4 register path (below)
#define MATVEC_PARALLEL_MIN 65536    // multiply-adds below which one thread does it all

static int use_avx512 = -1;  // -1: not decided yet

static int cpu_has_avx512(void) {
#ifdef HAVE_AVX512_KERNELS
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

int matvec_select(const char *kernel) {
    if (strcmp(kernel, "generic") == 0) use_avx512 = 0;
    else if (strcmp(kernel, "auto") == 0) use_avx512 = cpu_has_avx512();
    else if (strcmp(kernel, "avx512") == 0 && cpu_has_avx512()) use_avx512 = 1;
    else return -1;
    return 0;
}

const char *matvec_kernel_name(void) {
    if (use_avx512 < 0) use_avx512 = cpu_has_avx512();
    return use_avx512 ? "avx512" : "generic";
}

// The lanes of a sum added in a fixed tree (8 + 8, 4 + 4, 2 + 2, 1 + 1).
static float lane_sum(float *a) {
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) a[l] += a[l + w];
    return a[0];
}

static void store(float *y, int out, int m0, int mb, int o, const float *sums, float alpha, int accumulate) {
    for (int j = 0; j < mb; j++) {
        float *yo = y + (size_t)(m0 + j) * out + o;
        *yo = accumulate ? *yo + alpha * sums[j] : alpha * sums[j];
    }
}

// ---------------------------------------------------------------------------------------
// portable kernels: plain C in 16 lanes, which gcc vectorises

static void dot_f32_generic(const float *w, const float *x, int in, int mb, float *sums) {
    float acc[MATVEC_MB][LANES] = {{0}};
    for (int k0 = 0; k0 < in; k0 += LANES) {
        int n = in - k0 < LANES ? in - k0 : LANES;
        for (int j = 0; j < mb; j++)
            for (int l = 0; l < n; l++) acc[j][l] += w[k0 + l] * x[(size_t)j * in + k0 + l];
    }
    for (int j = 0; j < mb; j++) sums[j] = lane_sum(acc[j]);
}

// ---------------------------------------------------------------------------------------
// AVX-512 kernels: one fused multiply-add per weight and row, masked at the row's end

#ifdef HAVE_AVX512_KERNELS
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

AVX512 static inline float zmm_sum(__m512 v) {
    float a[LANES];
    _mm512_storeu_ps(a, v);
    return lane_sum(a);
}

// One row of W against mb rows of x. Written for a constant mb (the switch below), so the
// accumulators live in registers; LOAD_W(k, mask) gives the 16 weights from k on.
#define DOT_BODY(LOAD_W)                                                                        \
    __m512 acc[MATVEC_MB];                                                                      \
    for (int j = 0; j < mb; j++) acc[j] = _mm512_setzero_ps();                                  \
    int k = 0;                                                                                  \
    for (; k + LANES <= in; k += LANES) {                                                       \
        __m512 wv = LOAD_W(k, (__mmask16)0xFFFF);                                               \
        for (int j = 0; j < mb; j++) acc[j] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + (size_t)j * in + k), acc[j]); \
    }                                                                                           \
    if (k < in) {                                                                               \
        __mmask16 tail = (__mmask16)((1u << (in - k)) - 1);                                     \
        __m512 wv = LOAD_W(k, tail);                                                            \
        for (int j = 0; j < mb; j++)                                                            \
            acc[j] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(tail, x + (size_t)j * in + k), acc[j]); \
    }                                                                                           \
    for (int j = 0; j < mb; j++) sums[j] = zmm_sum(acc[j]);

#define LOAD_F32(k, mask) _mm512_maskz_loadu_ps(mask, w + (k))
#define LOAD_BF16(k, mask) \
    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, w + (k))), 16))

AVX512 static inline __attribute__((always_inline)) void dot_f32_avx512(const float *w, const float *x, int in, int mb,
                                                                        float *sums) {
    DOT_BODY(LOAD_F32)
}

AVX512 static inline __attribute__((always_inline)) void dot_bf16_avx512(const uint16_t *w, const float *x, int in,
                                                                         int mb, float *sums) {
    DOT_BODY(LOAD_BF16)
}

// NF4 in groups of 32 weights (16 bytes): byte i holds element 2i (high nibble) and 2i + 1
// (low). The 16 bytes widened to 16 lanes give the even elements' codes (>> 4) and the odd
// ones' (& 15); a permute looks the 16 codes up in the NF4 table, held in one register.
// x comes de-interleaved (xd: per group, its 16 even elements, then its 16 odd ones).
// absmax[g] is the absmax of group g's block. Each row has four partial sums (even and odd
// elements of even and odd groups), so that its fused multiply-adds do not wait on each
// other (one sum would make a row a chain of dependent additions, 4 cycles each); hence at
// most NF4_MB rows a pass (4 x 4 accumulators).

#define NF4_GROUP(g, c)                                                                                          \
    do {                                                                                                         \
        __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(packed + (size_t)(g) * 16)));    \
        __m512 scale = _mm512_set1_ps(absmax[g]);                                                                \
        __m512 even = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table), scale);           \
        __m512 odd = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_and_si512(bytes, low4), table), scale);          \
        for (int j = 0; j < mb; j++) {                                                                           \
            const float *xj = xd + (size_t)j * in + (size_t)(g) * 32;                                            \
            acc[j][c] = _mm512_fmadd_ps(even, _mm512_loadu_ps(xj), acc[j][c]);                                   \
            acc[j][(c) + 1] = _mm512_fmadd_ps(odd, _mm512_loadu_ps(xj + 16), acc[j][(c) + 1]);                   \
        }                                                                                                        \
    } while (0)

AVX512 static inline __attribute__((always_inline)) void dot_nf4_avx512(const uint8_t *packed, const float *absmax,
                                                                        const float *xd, int in, int mb, float *sums) {
    __m512 table = _mm512_loadu_ps(nf4_code), acc[NF4_MB][4];
    __m512i low4 = _mm512_set1_epi32(15);
    for (int j = 0; j < mb; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = _mm512_setzero_ps();
    int g = 0, groups = in / 32;
    for (; g + 1 < groups; g += 2) {
        NF4_GROUP(g, 0);
        NF4_GROUP(g + 1, 2);
    }
    if (g < groups) NF4_GROUP(g, 0);
    for (int j = 0; j < mb; j++)
        sums[j] = zmm_sum(_mm512_add_ps(_mm512_add_ps(acc[j][0], acc[j][1]), _mm512_add_ps(acc[j][2], acc[j][3])));
}

// mb as a constant in each case, so each becomes its own fully unrolled function.
#define SWITCH_MB(call)       \
    switch (mb) {             \
    case 1: call(1); break;   \
    case 2: call(2); break;   \
    case 3: call(3); break;   \
    case 4: call(4); break;   \
    case 5: call(5); break;   \
    case 6: call(6); break;   \
    case 7: call(7); break;   \
    case 8: call(8); break;   \
    case 9: call(9); break;   \
    case 10: call(10); break; \
    case 11: call(11); break; \
    case 12: call(12); break; \
    case 13: call(13); break; \
    case 14: call(14); break; \
    case 15: call(15); break; \
    default: call(16); break; \
    }

AVX512 static void rows_f32_avx512(const float *w, const float *x, int in, int mb, float *sums) {
#define CALL(n) dot_f32_avx512(w, x, in, n, sums)
    SWITCH_MB(CALL)
#undef CALL
}
AVX512 static void rows_bf16_avx512(const uint16_t *w, const float *x, int in, int mb, float *sums) {
#define CALL(n) dot_bf16_avx512(w, x, in, n, sums)
    SWITCH_MB(CALL)
#undef CALL
}
AVX512 static void rows_nf4_avx512(const uint8_t *packed, const float *absmax, const float *xd, int in, int mb,
                                   float *sums) {
    switch (mb) {
    case 1: dot_nf4_avx512(packed, absmax, xd, in, 1, sums); break;
    case 2: dot_nf4_avx512(packed, absmax, xd, in, 2, sums); break;
    case 3: dot_nf4_avx512(packed, absmax, xd, in, 3, sums); break;
    default: dot_nf4_avx512(packed, absmax, xd, in, 4, sums); break;
    }
}
#endif

static void rows_f32(const float *w, const float *x, int in, int mb, float *sums) {
#ifdef HAVE_AVX512_KERNELS
    if (use_avx512) return rows_f32_avx512(w, x, in, mb, sums);
#endif
    dot_f32_generic(w, x, in, mb, sums);
}

// ---------------------------------------------------------------------------------------
// the products

static int parallel(int M, int out, int in) { return (double)M * out * in >= MATVEC_PARALLEL_MIN; }

void matvec_f32(float *y, const float *x, const float *W, int M, int out, int in, float alpha, int accumulate) {
    if (use_avx512 < 0) use_avx512 = cpu_has_avx512();
#pragma omp parallel for schedule(static) if (parallel(M, out, in))
    for (int o = 0; o < out; o++) {
        float sums[MATVEC_MB];
        for (int m0 = 0; m0 < M; m0 += MATVEC_MB) {
            int mb = M - m0 < MATVEC_MB ? M - m0 : MATVEC_MB;
            rows_f32(W + (size_t)o * in, x + (size_t)m0 * in, in, mb, sums);
            store(y, out, m0, mb, o, sums, alpha, accumulate);
        }
    }
}

void matvec_bf16(float *y, const float *x, const uint16_t *W, int M, int out, int in, float alpha, int accumulate) {
    if (use_avx512 < 0) use_avx512 = cpu_has_avx512();
#pragma omp parallel if (parallel(M, out, in))
    {
        float *row = use_avx512 ? NULL : xmalloc((size_t)in * sizeof(float));  // the generic kernel widens a row first
#pragma omp for schedule(static)
        for (int o = 0; o < out; o++) {
            const uint16_t *w = W + (size_t)o * in;
            float sums[MATVEC_MB];
            if (row)
                for (int k = 0; k < in; k++) row[k] = bf16_to_f32(w[k]);
            for (int m0 = 0; m0 < M; m0 += MATVEC_MB) {
                int mb = M - m0 < MATVEC_MB ? M - m0 : MATVEC_MB;
#ifdef HAVE_AVX512_KERNELS
                if (!row) rows_bf16_avx512(w, x + (size_t)m0 * in, in, mb, sums);
#endif
                if (row) dot_f32_generic(row, x + (size_t)m0 * in, in, mb, sums);
                store(y, out, m0, mb, o, sums, alpha, accumulate);
            }
        }
        free(row);
    }
}

// The absmax of NF4 block b, as nf4_weight_dequantize computes it.
static float block_absmax(const Nf4Weight *W, size_t b) {
    if (!W->double_quant) return W->absmax[b];
    return W->code[W->qabsmax[b]] * W->absmax2[b / NF4_DQ_BLOCKSIZE] + W->offset;
}

// Row o of W as float32 (what nf4_weight_dequantize gives for it). The block index is kept
// as a running count: a division per weight would cost more than everything else here.
static void nf4_row(const Nf4Weight *W, int o, float *row) {
    size_t e = (size_t)o * (size_t)W->cols, bs = (size_t)W->blocksize, b = e / bs, left = bs - e % bs;
    float a = block_absmax(W, b);
    for (size_t k = 0; k < (size_t)W->cols; k++, e++) {
        uint8_t byte = W->packed[e / 2];
        row[k] = nf4_code[e & 1 ? byte & 15 : byte >> 4] * a;
        // the next block's absmax, unless the row (maybe the matrix) ends with this block
        if (--left == 0 && k + 1 < (size_t)W->cols) left = bs, a = block_absmax(W, ++b);
    }
}

// The absmax of each 32-weight group of row o (in and the block size multiples of 32).
static void nf4_group_absmax(const Nf4Weight *W, int o, float *absmax) {
    size_t e = (size_t)o * (size_t)W->cols, bs = (size_t)W->blocksize, b = e / bs, left = bs - e % bs;
    for (int g = 0; g < (int)W->cols / 32; g++) {
        absmax[g] = block_absmax(W, b);
        if ((left -= 32) == 0) left = bs, b++;
    }
}

void matvec_nf4(float *y, const float *x, const Nf4Weight *W, int M, float alpha, int accumulate) {
    if (use_avx512 < 0) use_avx512 = cpu_has_avx512();
    int out = (int)W->rows, in = (int)W->cols;
    // the register path needs whole groups of 32 in every row and block
    int grouped = use_avx512 && in % 32 == 0 && W->blocksize % 32 == 0;
    float *xd = NULL;
    if (grouped) {  // x de-interleaved once for all rows of W
        xd = xmalloc((size_t)M * in * sizeof(float));
        for (size_t g = 0; g < (size_t)M * in / 32; g++)
            for (int i = 0; i < 16; i++) {
                xd[g * 32 + i] = x[g * 32 + 2 * i];
                xd[g * 32 + 16 + i] = x[g * 32 + 2 * i + 1];
            }
    }
#pragma omp parallel if (parallel(M, out, in))
    {
        float *row = grouped ? xmalloc((size_t)(in / 32 + 1) * sizeof(float)) : xmalloc((size_t)in * sizeof(float));
#pragma omp for schedule(static)
        for (int o = 0; o < out; o++) {
            float sums[MATVEC_MB];
            if (grouped) nf4_group_absmax(W, o, row);  // row holds each group's absmax
            else nf4_row(W, o, row);
            int step = grouped ? NF4_MB : MATVEC_MB;
            for (int m0 = 0; m0 < M; m0 += step) {
                int mb = M - m0 < step ? M - m0 : step;
#ifdef HAVE_AVX512_KERNELS
                if (grouped) rows_nf4_avx512(W->packed + (size_t)o * in / 2, row, xd + (size_t)m0 * in, in, mb, sums);
#endif
                if (!grouped) rows_f32(row, x + (size_t)m0 * in, in, mb, sums);
                store(y, out, m0, mb, o, sums, alpha, accumulate);
            }
        }
        free(row);
    }
    free(xd);
}
