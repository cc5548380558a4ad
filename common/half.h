/*
 * half.h: bfloat16 and IEEE half precision <-> float32, bit-exact with CUDA and PyTorch.
 *
 * bf16 is the top 16 bits of a float32; float32 -> bf16 rounds to nearest, ties to even
 * (NaN stays a quiet NaN). fp16 (1 sign, 5 exponent, 10 mantissa bits, bias 15) -> float32
 * is exact, subnormals included; float32 -> fp16 rounds to nearest, ties to even.
 */
#ifndef PERSONA_HALF_H
#define PERSONA_HALF_H

#include <stdint.h>
#include <string.h>

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1);  // round to nearest, ties to even
    return (uint16_t)(u >> 16);
}

static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (mant << 13);  // inf / NaN
    } else if (exp) {
        u = sign | ((exp + 112) << 23) | (mant << 13);  // normal: rebias 15 -> 127
    } else if (mant) {  // subnormal: shift the leading 1 into the implicit position
        int e = -1;
        do { mant <<= 1; e++; } while (!(mant & 0x400));
        u = sign | ((uint32_t)(112 - e) << 23) | ((mant & 0x3ff) << 13);
    } else {
        u = sign;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// float32 -> fp16, round to nearest, ties to even (numpy's astype(float16), ggml's
// GGML_FP32_TO_FP16): magnitudes from 65520 up become infinity, those below 2^-14 become
// subnormals (2^-25 and below: zero), NaN stays a quiet NaN with the top payload bits.
static inline uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));  // NaN
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  // 65520 (= 65504 + half an ulp) and up
    if (a >= 0x38800000u) {  // a normal half: rebias the exponent 127 -> 15, round off 13 bits
        uint32_t r = a - 0x38000000u;
        r += 0xfffu + ((r >> 13) & 1);
        return (uint16_t)(sign | (r >> 13));
    }
    if (a <= 0x33000000u) return sign;  // 2^-25 and below: zero (2^-25 is a tie, to the even 0)
    // a subnormal half: the value in units of 2^-24, the 24-bit significand shifted right
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    int shift = 126 - (int)(a >> 23);  // 14..24
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;  // may carry into the smallest normal: right
    return (uint16_t)(sign | q);
}

#endif
