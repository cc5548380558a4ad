/*
 * nf4.c: NF4 quantization and double quantization, bit-exact with bitsandbytes.
 *
 * First stage (bitsandbytes `quantize_4bit`, its CPU reference backend):
 *   for each block of `blocksize` consecutive values (row-major, last block may be short):
 *     absmax = max |x|                         (stored; for the short last block it is
 *                                               clamped to >= 1e-38 before being stored)
 *     s = clamp(x * (1 / max(absmax, 1e-38)), -1, 1)   (the short last block divides: x / am)
 *     code = the number of NF4 midpoints strictly below s   (torch.bucketize, right=False:
 *                                               a value exactly on a midpoint takes the lower code)
 *   codes are packed two per byte, element 2j in the high nibble; an odd count is padded
 *   with the code of 0.0 (7).
 * All of it in float32, including the midpoints (a + b) / 2. An all-zero block gets
 * absmax 0 and code 7 everywhere (bitsandbytes' CUDA kernel computes 0 * inf = NaN there and
 * stores code 0; both dequantize to 0).
 *
 * Second stage, double quantization (`compress_statistics=True`): offset = mean(absmax);
 * v = absmax - offset is quantized in blocks of 256 with the 8-bit dynamic map, as
 * bitsandbytes' native CPU code does it: per block a = max |v|; x = clamp(v / a, -1, 1) is
 * rounded to the nearest of 65536 evenly spaced grid points, g = trunc((x + 1) / 2 * 65535
 * + 0.5), and g's entry in a table of "the nearest code value to grid point g" (ties to the
 * lower index) is the code. This is not always the nearest code to x itself (x = 0.17032
 * sits just above the midpoint of codes 195 and 196 and gets 195); reproducing it is what
 * makes our statistics bit-identical to bitsandbytes'. (Its CUDA kernel uses a binary
 * search with its own rounding; checkpoints made on a GPU are loaded as stored, so they
 * need no re-derivation.)
 *
 * Dequantization: absmax = code[q] * absmax2[b / 256] + offset, then w = nf4[q] * absmax,
 * all in float32.
 */
#include "nf4.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"

// bitsandbytes' NF4 table (functional.py get_4bit_type("nf4"), csrc nf4_dequantization_lut).
const float nf4_code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void nf4_dynamic_map(float code[256]) {
    // For exponent i = 0..6: the 2^i midpoints of linspace(0.1, 1, 2^i + 1) (float32, as
    // torch.linspace computes it: start + step * k with one rounding (a fused multiply-add)
    // for the first half, end - step * (steps - 1 - k) for the second), scaled by 10^(i-6)
    // in float32, with both signs; then 0 and 1; sorted.
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int steps = (1 << i) + 1;
        float step = (1.0f - 0.1f) / (float)(steps - 1);
        float bound[65];
        for (int k = 0; k < steps; k++)
            bound[k] = k < steps / 2 ? fmaf(step, (float)k, 0.1f) : fmaf(-step, (float)(steps - 1 - k), 1.0f);
        float scale = (float)pow(10.0, i - 6);  // torch casts the Python scalar to float32
        for (int k = 0; k + 1 < steps; k++) {
            float mean = (bound[k] + bound[k + 1]) / 2.0f;
            code[n++] = scale * mean;
            code[n++] = -scale * mean;
        }
    }
    code[n++] = 0.0f;
    code[n++] = 1.0f;
    qsort(code, (size_t)n, sizeof(float), cmp_float);
}

// Index of the NF4 code for a scaled value: the number of midpoints strictly below s.
static uint8_t nf4_bucket(float s) {
    uint8_t q = 0;
    for (int k = 0; k < 15; k++)
        if ((nf4_code[k] + nf4_code[k + 1]) / 2.0f < s) q = (uint8_t)(k + 1);
    return q;
}

void nf4_quantize(const float *w, size_t n, int blocksize, uint8_t *packed, float *absmax) {
    size_t bs = (size_t)blocksize, nb = (n + bs - 1) / bs;
    for (size_t b = 0; b < nb; b++) {
        size_t start = b * bs, end = start + bs < n ? start + bs : n;
        float a = 0.0f;
        for (size_t i = start; i < end; i++) a = fmaxf(a, fabsf(w[i]));
        float clamped = fmaxf(a, 1e-38f);
        int tail = end - start < bs;
        absmax[b] = tail ? clamped : a;
        float inv = 1.0f / clamped;
        for (size_t i = start; i < end; i++) {
            float s = tail ? w[i] / clamped : w[i] * inv;
            s = fminf(fmaxf(s, -1.0f), 1.0f);
            uint8_t q = nf4_bucket(s);
            if (i % 2 == 0) packed[i / 2] = (uint8_t)(q << 4);
            else packed[i / 2] |= q;
        }
    }
    if (n % 2) packed[n / 2] |= nf4_bucket(0.0f);
}

// Elements [start, end) of the matrix, all in one block of scale a, into out[0 ..):
// out[i - start] = nf4_code[q_i] * a.
static void dequantize_span_scalar(const uint8_t *packed, float a, size_t start, size_t end, float *out) {
    for (size_t i = start; i < end; i++) out[i - start] = nf4_code[(packed[i / 2] >> (i % 2 ? 0 : 4)) & 0xF] * a;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
// The same products 32 at a time from an even start: 16 packed bytes widened to 16 lanes,
// their high and low nibbles looked up in the 16 codes held in one register (vpermps),
// interleaved back into element order (high nibble first), times a. One rounding per element
// either way, so the same bits as the scalar loop, which takes what is left over.
__attribute__((target("avx512f"))) static void dequantize_span_avx512(const uint8_t *packed, float a, size_t start,
                                                                       size_t end, float *out) {
    const __m512 codes = _mm512_loadu_ps(nf4_code), scale = _mm512_set1_ps(a);
    const __m512i low_half = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23),
                  high_half = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31),
                  nibble = _mm512_set1_epi32(0xF);
    size_t i = start;
    if (i % 2 && i < end) dequantize_span_scalar(packed, a, i, i + 1, out), i++;
    for (; i + 32 <= end; i += 32) {
        __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(packed + i / 2)));
        __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), codes),
               lo = _mm512_permutexvar_ps(_mm512_and_epi32(bytes, nibble), codes);
        _mm512_storeu_ps(out + (i - start), _mm512_mul_ps(_mm512_permutex2var_ps(hi, low_half, lo), scale));
        _mm512_storeu_ps(out + (i - start) + 16, _mm512_mul_ps(_mm512_permutex2var_ps(hi, high_half, lo), scale));
    }
    dequantize_span_scalar(packed, a, i, end, out + (i - start));
}
#endif

// Elements [start, end) into out[0 ..), block by block.
static void dequantize_span(const uint8_t *packed, const float *absmax, int blocksize, size_t start, size_t end,
                            float *out) {
#if defined(__x86_64__) && defined(__GNUC__)
    int wide = __builtin_cpu_supports("avx512f");
#endif
    for (size_t i = start; i < end;) {
        size_t b = i / (size_t)blocksize, stop = (b + 1) * (size_t)blocksize < end ? (b + 1) * (size_t)blocksize : end;
#if defined(__x86_64__) && defined(__GNUC__)
        if (wide) dequantize_span_avx512(packed, absmax[b], i, stop, out + (i - start));
        else
#endif
            dequantize_span_scalar(packed, absmax[b], i, stop, out + (i - start));
        i = stop;
    }
}

void nf4_dequantize(const uint8_t *packed, const float *absmax, size_t n, int blocksize, float *w) {
    size_t nb = (n + (size_t)blocksize - 1) / (size_t)blocksize;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t b = 0; b < nb; b++) {
        size_t start = b * (size_t)blocksize, end = start + (size_t)blocksize < n ? start + (size_t)blocksize : n;
        dequantize_span(packed, absmax, blocksize, start, end, w + start);
    }
}

float nf4_absmax_mean(const float *absmax, size_t nb) {
    double sum = 0.0;
    for (size_t b = 0; b < nb; b++) sum += absmax[b];
    return nb ? (float)(sum / (double)nb) : 0.0f;
}

// The index of the code value nearest to x (ties to the lower index; sorted code).
static uint8_t nearest_code(float x, const float code[256]) {
    int right = 0;  // the first value >= x (std::lower_bound)
    while (right < 256 && code[right] < x) right++;
    if (right == 0) return 0;
    if (right == 256) return 255;
    float dist_left = fabsf(x - code[right - 1]), dist_right = fabsf(code[right] - x);
    return (uint8_t)(dist_right < dist_left ? right : right - 1);
}

void nf4_quantize_absmax(const float *absmax, size_t nb, float offset, const float code[256],
                         uint8_t *qabsmax, float *absmax2) {
    // bitsandbytes' lookup table: the nearest code for each of 65536 points spread evenly
    // over [-1, 1]; a value is rounded to its grid point, then looked up.
    uint8_t *lut = xmalloc(65536);
    for (int g = 0; g < 65536; g++) lut[g] = nearest_code((float)g / 65535.0f * 2.0f - 1.0f, code);
    for (size_t b = 0; b < nb; b += NF4_DQ_BLOCKSIZE) {
        size_t end = b + NF4_DQ_BLOCKSIZE < nb ? b + NF4_DQ_BLOCKSIZE : nb;
        float a = 0.0f;
        for (size_t i = b; i < end; i++) a = fmaxf(a, fabsf(absmax[i] - offset));
        absmax2[b / NF4_DQ_BLOCKSIZE] = a;
        for (size_t i = b; i < end; i++) {
            float x = fminf(fmaxf((absmax[i] - offset) / a, -1.0f), 1.0f);
            qabsmax[i] = lut[(uint32_t)((x + 1.0f) * 0.5f * 65535.0f + 0.5f)];
        }
    }
    free(lut);
}

void nf4_dequantize_absmax(const uint8_t *qabsmax, const float *absmax2, size_t nb, float offset,
                           const float code[256], float *absmax) {
    for (size_t b = 0; b < nb; b++) absmax[b] = code[qabsmax[b]] * absmax2[b / NF4_DQ_BLOCKSIZE] + offset;
}

void nf4_weight_quantize(Nf4Weight *q, const float *w, int64_t rows, int64_t cols, int blocksize, int double_quant) {
    size_t n = (size_t)(rows * cols), nb = (n + (size_t)blocksize - 1) / (size_t)blocksize;
    memset(q, 0, sizeof(*q));
    q->rows = rows;
    q->cols = cols;
    q->blocksize = blocksize;
    q->double_quant = double_quant;
    q->packed = xmalloc(n / 2 + 1);
    q->absmax = xmalloc(nb * sizeof(float));
    nf4_quantize(w, n, blocksize, q->packed, q->absmax);
    if (!double_quant) return;
    q->qabsmax = xmalloc(nb);
    q->absmax2 = xmalloc((nb / NF4_DQ_BLOCKSIZE + 1) * sizeof(float));
    nf4_dynamic_map(q->code);
    q->offset = nf4_absmax_mean(q->absmax, nb);
    nf4_quantize_absmax(q->absmax, nb, q->offset, q->code, q->qabsmax, q->absmax2);
    free(q->absmax);  // from here on only the double-quantized statistics exist, as in bnb
    q->absmax = NULL;
}

void nf4_weight_absmax(const Nf4Weight *q, float *absmax) {
    size_t nb = ((size_t)(q->rows * q->cols) + (size_t)q->blocksize - 1) / (size_t)q->blocksize;
    if (q->double_quant) nf4_dequantize_absmax(q->qabsmax, q->absmax2, nb, q->offset, q->code, absmax);
    else memcpy(absmax, q->absmax, nb * sizeof(float));
}

void nf4_weight_dequantize(const Nf4Weight *q, float *w) {
    size_t n = (size_t)(q->rows * q->cols), nb = (n + (size_t)q->blocksize - 1) / (size_t)q->blocksize;
    float *absmax = xmalloc((nb ? nb : 1) * sizeof(float));
    nf4_weight_absmax(q, absmax);
    nf4_dequantize(q->packed, absmax, n, q->blocksize, w);
    free(absmax);
}

void nf4_weight_row(const Nf4Weight *q, const float *absmax, int64_t r, int64_t c0, int n, float *out) {
    size_t start = (size_t)(r * q->cols + c0);
    dequantize_span(q->packed, absmax, q->blocksize, start, start + (size_t)n, out);
}

void nf4_weight_free(Nf4Weight *q) {
    free(q->packed);
    free(q->absmax);
    free(q->qabsmax);
    free(q->absmax2);
    memset(q, 0, sizeof(*q));
}
