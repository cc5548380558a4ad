/*
 * random.cuh: seeded normal random values generated on the device, for train_gpu
 * --random-weights (a model of a config.json's shape, measured on a machine that has no
 * checkpoint) and for nothing that must match another implementation's bits.
 *
 * Counter-based, so any slice of a tensor can be generated on its own (the loader fills a
 * projection a chunk at a time) and gives the same values as the whole:
 *   key    = mix(seed + 0x9E3779B97F4A7C15·(stream + 1))      one key per tensor (`stream`)
 *   x_i    = mix(key + 0x9E3779B97F4A7C15·(i + 1))            64 random bits for element i
 *   u1     = ((x_i >> 40) + 0.5) / 2^24 in (0, 1);   u2 = (x_i & 0xffffff) / 2^24 in [0, 1)
 *   out_i  = std · sqrt(-2 ln u1) · cos(2π u2)                 (Box–Muller, fp32, with the
 *                                                               fast __logf and __cosf)
 * mix is SplitMix64's output function (Steele, Lea, Flood, "Fast splittable pseudorandom
 * number generators", OOPSLA 2014; common/util.h's generator uses the same), whose outputs
 * for consecutive inputs are independent for any practical purpose. 24 bits per uniform
 * limit the normal's tail to |z| <= sqrt(2·24·ln 2) ≈ 5.8σ, irrelevant for initial weights.
 * The fast intrinsics differ in the last bits between a GPU and the harness (a CPU); the
 * same GPU gives the same bits every run.
 *
 * Memory: one thread per element, written once (4 or 2 bytes): far below any bandwidth
 * concern for a one-off initialisation.
 */
#ifndef PERSONA_RANDOM_CUH
#define PERSONA_RANDOM_CUH

#include <math.h>
#include <stdint.h>

#include "common.cuh"

#define RANDOM_THREADS 256

__host__ __device__ __forceinline__ uint64_t random_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Element i of the stream whose key is given, as the top comment defines it (std = 1).
// cos(2π u2) = -cos(2π u2 - π), an argument in [-π, π) where the fast __cosf is accurate
// (cosf would carry a slow path for huge arguments, in local memory).
__device__ __forceinline__ float random_normal_value(uint64_t key, uint64_t i) {
    uint64_t x = random_mix(key + 0x9E3779B97F4A7C15ull * (i + 1));
    float u1 = ((float)(x >> 40) + 0.5f) * 0x1p-24f, u2 = (float)(x & 0xffffffu) * 0x1p-24f;
    return -sqrtf(-2.0f * __logf(u1)) * __cosf(6.2831853071795865f * u2 - 3.14159265358979f);
}

static inline uint64_t random_key(uint64_t seed, uint64_t stream) {
    return random_mix(seed + 0x9E3779B97F4A7C15ull * (stream + 1));
}

__device__ __forceinline__ void random_store(float *p, float v) { *p = v; }
__device__ __forceinline__ void random_store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16(v); }

template <typename T>
__global__ void __launch_bounds__(RANDOM_THREADS)
    random_normal_kernel(T *out, size_t n, uint64_t key, uint64_t first, float std) {
    size_t i = (size_t)blockIdx.x * RANDOM_THREADS + threadIdx.x;
    if (i < n) random_store(out + i, std * random_normal_value(key, first + i));
}

// out[0..n) = std · (elements first .. first + n of stream `stream` under seed), fp32 or bf16.
template <typename T>
inline void random_normal(T *out, size_t n, uint64_t seed, uint64_t stream, uint64_t first, float std,
                          cudaStream_t s) {
    if (n == 0) return;
    LAUNCH(random_normal_kernel<T>, (unsigned)CEIL_DIV(n, (size_t)RANDOM_THREADS), RANDOM_THREADS, 0, s, out, n,
           random_key(seed, stream), first, std);
}

#endif
