/*
 * cuda_fp16.h (CUDA-on-CPU harness): __half and __half2 for kernels compiled by the host
 * compiler, standing in for the toolkit's header of the same name.
 *
 * IEEE binary16: 1 sign, 5 exponent (bias 15), 10 fraction bits; largest finite 65504,
 * subnormals down to 2^-24. float -> half rounds to nearest, ties to even, subnormals
 * included; values from 65520 up become infinity; NaN becomes 0x7fff, as the toolkit's
 * __float2half (test_cuda_types compares with the toolkit's host code bit for bit).
 * half -> float is exact, except that a NaN becomes the canonical 0x7fffffff. Arithmetic computes in float and rounds once, which is the
 * correctly rounded half operation: 24 >= 2·11 + 2 (see cuda_bf16.h).
 */
#ifndef CUDA_HOST_FP16_H
#define CUDA_HOST_FP16_H

#include <stdint.h>
#include <string.h>

struct __half;
static inline __half __float2half(float f);
static inline float __half2float(__half h);

struct alignas(2) __half {
    unsigned short __x;
    __half() = default;  // uninitialised, as on the GPU
    __half(float f) { *this = __float2half(f); }
    operator float() const { return __half2float(*this); }
};

struct alignas(4) __half2 {
    __half x, y;
};

static inline __half __ushort_as_half(unsigned short u) {
    __half h;
    h.__x = u;
    return h;
}
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }

static inline float __half2float(__half h) {
    uint32_t sign = (uint32_t)(h.__x & 0x8000u) << 16, exp = (h.__x >> 10) & 0x1fu, frac = h.__x & 0x3ffu, u;
    if (exp == 0x1f) {
        u = frac ? 0x7fffffffu : sign | 0x7f800000u;  // NaN becomes the canonical float NaN, as the toolkit's
    } else if (exp != 0) {
        u = sign | ((exp + 127 - 15) << 23) | (frac << 13);
    } else if (frac != 0) {
        // subnormal: frac · 2^-24 is exact in float; let the FPU normalise it
        float f = (float)frac * (1.0f / 16777216.0f);
        memcpy(&u, &f, 4);
        u |= sign;
    } else {
        u = sign;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline __half __float2half_rn(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return __ushort_as_half(0x7fff);                    // NaN
    if (ax >= 0x477ff000u) return __ushort_as_half((unsigned short)(sign | 0x7c00u));  // >= 65520: infinity
    if (ax >= 0x38800000u) {  // normal half (>= 2^-14): drop 13 fraction bits, ties to even
        uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);  // a carry may step into the next binade
        return __ushort_as_half((unsigned short)(sign | ((r - 0x38000000u) >> 13)));  // rebias 127 -> 15
    }
    if (ax <= 0x33000000u) return __ushort_as_half((unsigned short)sign);  // <= 2^-25 (a tie) -> 0
    // subnormal half: the value in units of 2^-24, rounded to nearest, ties to even
    uint32_t exp = ax >> 23, mant = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - exp;  // value = mant · 2^(exp-150) = (mant >> shift) units of 2^-24
    uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return __ushort_as_half((unsigned short)(sign | q));
}
static inline __half __float2half(float f) { return __float2half_rn(f); }

static inline __half __hadd(__half a, __half b) { return __float2half_rn((float)a + (float)b); }
static inline __half __hsub(__half a, __half b) { return __float2half_rn((float)a - (float)b); }
static inline __half __hmul(__half a, __half b) { return __float2half_rn((float)a * (float)b); }
static inline __half __hdiv(__half a, __half b) { return __float2half_rn((float)a / (float)b); }
static inline __half __hneg(__half a) { return __ushort_as_half((unsigned short)(a.__x ^ 0x8000u)); }
static inline __half operator+(const __half &a, const __half &b) { return __hadd(a, b); }
static inline __half operator-(const __half &a, const __half &b) { return __hsub(a, b); }
static inline __half operator*(const __half &a, const __half &b) { return __hmul(a, b); }
static inline __half operator/(const __half &a, const __half &b) { return __hdiv(a, b); }
static inline __half &operator+=(__half &a, const __half &b) { return a = __hadd(a, b); }
static inline __half &operator-=(__half &a, const __half &b) { return a = __hsub(a, b); }
static inline __half &operator*=(__half &a, const __half &b) { return a = __hmul(a, b); }
static inline __half &operator/=(__half &a, const __half &b) { return a = __hdiv(a, b); }
static inline __half operator-(const __half &a) { return __hneg(a); }
static inline bool operator==(const __half &a, const __half &b) { return (float)a == (float)b; }
static inline bool operator!=(const __half &a, const __half &b) { return (float)a != (float)b; }
static inline bool operator<(const __half &a, const __half &b) { return (float)a < (float)b; }
static inline bool operator>(const __half &a, const __half &b) { return (float)a > (float)b; }
static inline bool operator<=(const __half &a, const __half &b) { return (float)a <= (float)b; }
static inline bool operator>=(const __half &a, const __half &b) { return (float)a >= (float)b; }

#endif
