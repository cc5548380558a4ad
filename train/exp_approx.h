/*
 * exp_approx.h: e^x in float32 as straight-line arithmetic the compiler can vectorise
 * (libm's expf is a call, so a loop over it runs one element at a time; the softmaxes of
 * attention and of the 32768-way cross-entropy spend their time here).
 *
 * Cephes' expf: n = round(x / ln 2); r = x - n ln 2 with ln 2 in two parts (Cody-Waite:
 * n * 0.693359375 is exact, the correction -2.12194440e-4 carries the rest), so r is
 * accurate to float precision and |r| <= ln2 / 2; e^r = 1 + r + r^2 p(r) with Cephes'
 * degree-5 minimax p; e^x = 2^n e^r, 2^n built from its exponent bits. Rounding to the
 * nearest integer adds and subtracts 1.5 * 2^23 (no libm call). exp_shifted clamps x to
 * [-87, 88] so 2^n stays a normal float: below, the result stays e^-87 = 1.6e-38, which a
 * softmax next to its maximum's e^0 = 1 cannot tell from 0; e^88 = 1.65e38 is never
 * reached by a softmax's x - max <= 0. test_ops checks the relative error against
 * double-precision exp over the range.
 *
 * With it, the two reductions of a softmax row, row_max and row_sum, taken in SOFTMAX_LANES
 * interleaved partial results combined in a fixed order (the sum in double), which the
 * compiler vectorises without reordering anything: the same bits on any vector width.
 */
#ifndef PERSONA_EXP_APPROX_H
#define PERSONA_EXP_APPROX_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define SOFTMAX_LANES 16  // independent partial maxima and sums in row_max and row_sum

// A function marked VECTOR_CLONES is compiled twice where the compiler can build it, for
// AVX-512 and for the baseline, and the CPU picks at load time. Both do the same operations
// in the same order (C11 mode contracts nothing into fused multiply-adds), so the same bits;
// the AVX-512 one is 16 lanes wide, the baseline (SSE2) 4.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "default")))
#else
#define VECTOR_CLONES
#endif

// e^x for x in [-87, 88] (exp_shifted clamps to it).
static inline float exp_approx(float x) {
    const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    float t = x * 1.44269504088896341f + shifter;
    float n = t - shifter;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float er = p * (r * r) + r + 1.0f;
    uint32_t bits;  // unsigned: a NaN x (a diverged run) must give NaN, not overflow an int
    memcpy(&bits, &t, sizeof(bits));  // t's low mantissa bits hold n (plus 2^22)
    bits = (bits - 0x4B400000u + 127u) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    return er * scale;
}

// x[i] = e^(x[i] - shift) for i < n. The clamp is a loop of its own: gcc does not
// vectorise a loop holding both it and exp_approx.
static inline void exp_shifted(float *x, int n, float shift) {
    for (int i = 0; i < n; i++) {
        float v = x[i] - shift;
        v = v < -87.0f ? -87.0f : v;
        v = v > 88.0f ? 88.0f : v;
        x[i] = v;
    }
    for (int i = 0; i < n; i++) x[i] = exp_approx(x[i]);
}

// max of x[0 .. n)
static inline float row_max(const float *x, int n) {
    float mx[SOFTMAX_LANES], m = -INFINITY;
    int c, tail = n - n % SOFTMAX_LANES;
    for (int l = 0; l < SOFTMAX_LANES; l++) mx[l] = -INFINITY;
    for (c = 0; c < tail; c += SOFTMAX_LANES)
        for (int l = 0; l < SOFTMAX_LANES; l++) mx[l] = mx[l] < x[c + l] ? x[c + l] : mx[l];
    for (int l = 0; l < SOFTMAX_LANES; l++) m = mx[l] > m ? mx[l] : m;
    for (c = tail; c < n; c++) m = x[c] > m ? x[c] : m;
    return m;
}

// sum of x[0 .. n), in double
static inline double row_sum(const float *x, int n) {
    double sl[SOFTMAX_LANES], sum = 0.0;
    int c, tail = n - n % SOFTMAX_LANES;
    for (int l = 0; l < SOFTMAX_LANES; l++) sl[l] = 0.0;
    for (c = 0; c < tail; c += SOFTMAX_LANES)
        for (int l = 0; l < SOFTMAX_LANES; l++) sl[l] += x[c + l];
    for (int l = 0; l < SOFTMAX_LANES; l++) sum += sl[l];
    for (c = tail; c < n; c++) sum += x[c];
    return sum;
}

#endif
