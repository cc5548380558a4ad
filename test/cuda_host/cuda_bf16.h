/*
 * cuda_bf16.h (CUDA-on-CPU harness): __nv_bfloat16 and __nv_bfloat162 for kernels compiled
 * by the host compiler, standing in for the toolkit's header of the same name.
 *
 * bf16 is the top half of a float32 (1 sign, 8 exponent, 7 fraction bits). float -> bf16
 * rounds to nearest, ties to even, NaN becomes the canonical 0x7fff, exactly as the
 * toolkit's __float2bfloat16 (cvt.rn.bf16.f32 on the GPU; test_cuda_types compares every
 * tie and neighbour bit for bit with the toolkit's own host code). double -> bf16 rounds
 * once, correctly: round to float with "round to odd" (an inexact result gets its last bit
 * set), then to bf16; float keeps 16 more bits than bf16, so the second rounding sees the
 * true side of every tie.
 *
 * Arithmetic (+ - * /) computes in float and rounds once to bf16. That equals the
 * correctly rounded bf16 operation the GPU does (add.rn.bf16 / fma.rn.bf16): float's 24-bit
 * significand is at least 2·8 + 2 bits, and for + - * / that makes the double rounding
 * innocuous (Figueroa, "When is double rounding innocuous?", SIGNUM 1995). As in the
 * toolkit's header, there are no mixed bf16/float operators: `bf16 * float` is ambiguous
 * there and here, so kernels convert explicitly.
 */
#ifndef CUDA_HOST_BF16_H
#define CUDA_HOST_BF16_H

#include <stdint.h>
#include <string.h>

struct __nv_bfloat16;
static inline __nv_bfloat16 __float2bfloat16(float f);
static inline __nv_bfloat16 __double2bfloat16(double d);
static inline float __bfloat162float(__nv_bfloat16 h);

struct alignas(2) __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;  // uninitialised, as on the GPU
    __nv_bfloat16(float f) { *this = __float2bfloat16(f); }
    __nv_bfloat16(double d) { *this = __double2bfloat16(d); }
    operator float() const { return __bfloat162float(*this); }
};

struct alignas(4) __nv_bfloat162 {
    __nv_bfloat16 x, y;
};

namespace cuda_host {
static inline uint32_t float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
}  // namespace cuda_host

static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) {
    __nv_bfloat16 h;
    h.__x = u;
    return h;
}
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
static inline short __bfloat16_as_short(__nv_bfloat16 h) { return (short)h.__x; }

static inline float __bfloat162float(__nv_bfloat16 h) { return cuda_host::bits_float((uint32_t)h.__x << 16); }

static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u = cuda_host::float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __ushort_as_bfloat16(0x7fff);  // NaN
    // Adding 0x7fff rounds a remainder above one half up; adding the kept part's lowest
    // bit as well makes an exact half round up only when that bit is 1 (ties to even).
    u += 0x7fffu + ((u >> 16) & 1u);
    return __ushort_as_bfloat16((unsigned short)(u >> 16));
}
static inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
static inline __nv_bfloat16 __float2bfloat16_rz(float f) {
    uint32_t u = cuda_host::float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __ushort_as_bfloat16(0x7fff);
    return __ushort_as_bfloat16((unsigned short)(u >> 16));
}
static inline __nv_bfloat16 __double2bfloat16(double d) {
    if (d != d) return __ushort_as_bfloat16(0x7fff);
    float f = (float)d;  // round to nearest, then make it "round to odd":
    if ((double)f != d) {
        uint32_t u = cuda_host::float_bits(f);
        if (d > 0 ? (double)f > d : (double)f < d) u--;  // the float toward zero from d
        f = cuda_host::bits_float(u | 1u);                // its odd neighbour marks "inexact"
    }
    return __float2bfloat16_rn(f);
}

static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162{__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}
static inline __nv_bfloat162 __float2bfloat162_rn(float a) { return __floats2bfloat162_rn(a, a); }
static inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
static inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }

// ---- arithmetic: in float, one rounding (see the header comment) ---------------------
static inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) { return __float2bfloat16_rn((float)a + (float)b); }
static inline __nv_bfloat16 __hsub(__nv_bfloat16 a, __nv_bfloat16 b) { return __float2bfloat16_rn((float)a - (float)b); }
static inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) { return __float2bfloat16_rn((float)a * (float)b); }
static inline __nv_bfloat16 __hdiv(__nv_bfloat16 a, __nv_bfloat16 b) { return __float2bfloat16_rn((float)a / (float)b); }
static inline __nv_bfloat16 __hneg(__nv_bfloat16 a) { return __ushort_as_bfloat16((unsigned short)(a.__x ^ 0x8000u)); }
static inline __nv_bfloat16 operator+(const __nv_bfloat16 &a, const __nv_bfloat16 &b) { return __hadd(a, b); }
static inline __nv_bfloat16 operator-(const __nv_bfloat16 &a, const __nv_bfloat16 &b) { return __hsub(a, b); }
static inline __nv_bfloat16 operator*(const __nv_bfloat16 &a, const __nv_bfloat16 &b) { return __hmul(a, b); }
static inline __nv_bfloat16 operator/(const __nv_bfloat16 &a, const __nv_bfloat16 &b) { return __hdiv(a, b); }
static inline __nv_bfloat16 &operator+=(__nv_bfloat16 &a, const __nv_bfloat16 &b) { return a = __hadd(a, b); }
static inline __nv_bfloat16 &operator-=(__nv_bfloat16 &a, const __nv_bfloat16 &b) { return a = __hsub(a, b); }
static inline __nv_bfloat16 &operator*=(__nv_bfloat16 &a, const __nv_bfloat16 &b) { return a = __hmul(a, b); }
static inline __nv_bfloat16 &operator/=(__nv_bfloat16 &a, const __nv_bfloat16 &b) { return a = __hdiv(a, b); }
static inline __nv_bfloat16 operator-(const __nv_bfloat16 &a) { return __hneg(a); }
static inline __nv_bfloat16 operator+(const __nv_bfloat16 &a) { return a; }
static inline bool operator==(const __nv_bfloat16 &a, const __nv_bfloat16 &b) { return (float)a == (float)b; }
static inline bool operator!=(const __nv_bfloat16 &a, const __nv_bfloat16 &b) { return (float)a != (float)b; }
static inline bool operator<(const __nv_bfloat16 &a, const __nv_bfloat16 &b) { return (float)a < (float)b; }
static inline bool operator>(const __nv_bfloat16 &a, const __nv_bfloat16 &b) { return (float)a > (float)b; }
static inline bool operator<=(const __nv_bfloat16 &a, const __nv_bfloat16 &b) { return (float)a <= (float)b; }
static inline bool operator>=(const __nv_bfloat16 &a, const __nv_bfloat16 &b) { return (float)a >= (float)b; }

#endif
