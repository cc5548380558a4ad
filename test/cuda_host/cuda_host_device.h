/*
 * cuda_host_device.h: what a kernel body sees in the CUDA-on-CPU harness, apart from the
 * synchronisation (cuda_host_sync.h): the function and memory-space qualifiers, the vector
 * and dimension types, the built-in variables, the math intrinsics and the atomics.
 *
 * - __global__/__device__/__host__ vanish: a kernel is an ordinary C++ function that every
 *   fiber (CUDA thread) calls.
 * - __shared__ is `static` storage in the section "cuda_host_shared". One copy serves every
 *   block: the blocks alive at once take turns with it (the launcher saves and restores the
 *   section's bytes when it switches blocks) and it is filled with the poison pattern before
 *   each block (shared memory starts as garbage on a GPU too). The
 *   sanitizer build passes -fsanitize-sections=cuda_host_shared, so AddressSanitizer puts
 *   redzones around each __shared__ variable (gcc leaves variables in named sections
 *   unprotected without it) and reports an index past the end. gcc refuses a section that
 *   holds both ordinary statics and the COMDAT statics of inline functions, so kernel code
 *   is compiled with -fno-weak (Makefile), which makes none of them COMDAT. gcc also drops
 *   the section of a function template's statics (they would land in .bss, shared by the
 *   blocks alive at once, never poisoned nor checked), so __shared__ inside a template is
 *   a compile error here: such a kernel declares its shared memory in a non-template
 *   function or uses DYNAMIC_SHARED.
 * - threadIdx, blockIdx, blockDim, gridDim read the running fiber's values.
 * - Math intrinsics compute the exact (libm) function; the GPU's fast versions (rsqrtf,
 *   __expf, __fdividef: a few ulp) differ in the last bits, which kernel tests cover with
 *   their tolerances. nvcc also contracts a*b+c into one FMA; the host compiler does not.
 * - Atomics are read-modify-writes through the harness (atomic_read/atomic_write, not
 *   instrumented), which tell the race detector (race.h) the access is atomic: atomics do
 *   not conflict with each other, a plain write does. Fibers switch only at
 *   synchronisation points, so nothing interleaves inside one.
 * - __launch_bounds__(max_threads[, min_blocks]) is kept: it asks the compiler for a run of
 *   max_threads single-byte NOPs at the kernel's entry (patchable_function_entry, which
 *   takes a constant expression and, unlike a section, survives template instantiation),
 *   and the launcher counts them to refuse a bigger block as a GPU does (launch.cpp). The
 *   NOPs cost nothing worth measuring; min_blocks only steers ptxas' register budget and is
 *   not used here.
 */
#ifndef CUDA_HOST_DEVICE_H
#define CUDA_HOST_DEVICE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

// The C++ headers the harness's own headers use, before the macros below: libstdc++ names
// the attribute __noinline__, which CUDA defines as a macro.
#include <functional>
#include <memory>
#include <tuple>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...) __attribute__((patchable_function_entry(cuda_host::launch_bound(__VA_ARGS__), 0)))
namespace cuda_host {
constexpr int launch_bound(int max_threads, int min_blocks = 0) { return (void)min_blocks, max_threads; }
}
#define __align__(n) __attribute__((aligned(n)))
#define __shared__                                                                                           \
    ;                                                                                                    \
    static_assert(!cuda_host::in_template(__PRETTY_FUNCTION__),                                          \
                  "__shared__ inside a template: gcc drops the section of a template's statics, so the " \
                  "harness could not give each block its own copy; declare it in a non-template function " \
                  "(as common.cuh's block_sum does) or use DYNAMIC_SHARED");                               \
    static __attribute__((section("cuda_host_shared")))
namespace cuda_host {
// Whether a __PRETTY_FUNCTION__ is a template's ("... [with T = ...]").
constexpr bool in_template(const char *f) {
    for (; *f; f++)
        if (f[0] == '[' && f[1] == 'w' && f[2] == 'i' && f[3] == 't' && f[4] == 'h' && f[5] == ' ') return true;
    return false;
}
}  // namespace cuda_host
// `extern __shared__` (dynamic shared memory) does not compile here on purpose: kernels
// declare it with DYNAMIC_SHARED from kernels/common.cuh.

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
struct alignas(8) uint2 { unsigned int x, y; };
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

namespace cuda_host {
// The built-in variables of the CUDA thread running now (set by the scheduler before it
// resumes a fiber; null on the host).
struct Builtins {
    uint3 thread_idx, block_idx;
    dim3 block_dim, grid_dim;
};
extern const Builtins *builtins;
}  // namespace cuda_host

#define threadIdx (cuda_host::builtins->thread_idx)
#define blockIdx (cuda_host::builtins->block_idx)
#define blockDim (cuda_host::builtins->block_dim)
#define gridDim (cuda_host::builtins->grid_dim)
static const int warpSize = 32;

// ---- math intrinsics ----------------------------------------------------------------
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
// glibc declares functions of these names itself, hence macros into our namespace.
namespace cuda_host {
static inline float fast_expf(float x) { return expf(x); }
static inline float fast_logf(float x) { return logf(x); }
static inline float fast_sinf(float x) { return sinf(x); }
static inline float fast_cosf(float x) { return cosf(x); }
static inline float fast_powf(float x, float y) { return powf(x, y); }
}  // namespace cuda_host
#define __expf(x) cuda_host::fast_expf(x)
#define __logf(x) cuda_host::fast_logf(x)
#define __sinf(x) cuda_host::fast_sinf(x)
#define __cosf(x) cuda_host::fast_cosf(x)
#define __powf(x, y) cuda_host::fast_powf(x, y)
static inline float __fdividef(float x, float y) { return x / y; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
// The rounded product and sum that nvcc never fuses into an FMA (the host compiler does
// not fuse a*b + c either: ISO C++ mode turns floating-point contraction off).
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : x > 0.0f ? x : 0.0f; }  // NaN -> 0
static inline int __float_as_int(float x) { int i; memcpy(&i, &x, 4); return i; }
static inline unsigned int __float_as_uint(float x) { unsigned int u; memcpy(&u, &x, 4); return u; }
static inline float __int_as_float(int i) { float x; memcpy(&x, &i, 4); return x; }
static inline float __uint_as_float(unsigned int u) { float x; memcpy(&x, &u, 4); return x; }
static inline int __popc(unsigned int x) { return __builtin_popcount(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline unsigned int __brev(unsigned int x) {
    unsigned int r = 0;
    for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
// CUDA's device code has overloaded min/max for integers and floats.
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
static inline long min(long a, long b) { return a < b ? a : b; }
static inline long max(long a, long b) { return a > b ? a : b; }
static inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
static inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }

// Memory fences order a thread's own accesses; with one host thread running everything
// in program order, a compiler barrier is all they need to be.
static inline void __threadfence() { __asm__ __volatile__("" ::: "memory"); }
static inline void __threadfence_block() { __asm__ __volatile__("" ::: "memory"); }

// ---- atomics (return the old value, as CUDA's do) -------------------------------------
namespace cuda_host {
template <typename T> struct Same { typedef T type; };  // v converts to *p's type, as with CUDA's overloads
void atomic_read(void *out, const void *p, size_t bytes);   // records an atomic access (race.h)
void atomic_write(void *p, const void *in, size_t bytes);
template <typename T> static inline T atomic_old(T *p) { T old; atomic_read(&old, p, sizeof(T)); return old; }
template <typename T> static inline void atomic_set(T *p, T v) { atomic_write(p, &v, sizeof(T)); }
}  // namespace cuda_host
#define CUDA_HOST_ATOMIC(name, update)                                                                    \
    template <typename T> static inline T name(T *p, typename cuda_host::Same<T>::type v) {              \
        T old = cuda_host::atomic_old(p);                                                                 \
        cuda_host::atomic_set(p, (T)(update));                                                            \
        return old;                                                                                       \
    }
CUDA_HOST_ATOMIC(atomicAdd, old + v)
CUDA_HOST_ATOMIC(atomicSub, old - v)
CUDA_HOST_ATOMIC(atomicExch, v)
CUDA_HOST_ATOMIC(atomicMin, v < old ? v : old)
CUDA_HOST_ATOMIC(atomicMax, v > old ? v : old)
CUDA_HOST_ATOMIC(atomicAnd, old & v)
CUDA_HOST_ATOMIC(atomicOr, old | v)
CUDA_HOST_ATOMIC(atomicXor, old ^ v)
#undef CUDA_HOST_ATOMIC
template <typename T>
static inline T atomicCAS(T *p, typename cuda_host::Same<T>::type compare, typename cuda_host::Same<T>::type v) {
    T old = cuda_host::atomic_old(p);
    cuda_host::atomic_set(p, old == compare ? (T)v : old);
    return old;
}
// ((old >= limit) ? 0 : old + 1) and ((old == 0 || old > limit) ? limit : old - 1), as CUDA.
static inline unsigned int atomicInc(unsigned int *p, unsigned int limit) {
    unsigned int old = cuda_host::atomic_old(p);
    cuda_host::atomic_set(p, old >= limit ? 0u : old + 1);
    return old;
}
static inline unsigned int atomicDec(unsigned int *p, unsigned int limit) {
    unsigned int old = cuda_host::atomic_old(p);
    cuda_host::atomic_set(p, (old == 0 || old > limit) ? limit : old - 1);
    return old;
}

#endif
