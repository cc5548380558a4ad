/*
 * half.h: bfloat16 and IEEE half precision <-> float32, bit-exact with CUDA and PyTorch.
 *
 * bf16 is the top 16 bits of a float32; float32 -> bf16 rounds to nearest, ties to even
 * (NaN stays a quiet NaN). fp16 (1 sign, 5 exponent, 10 mantissa bits, bias 15) -> float32
 * is exact, subnormals included.
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

#endif
