/*
 * rope.cuh: rotary position embeddings, forward and backward, in place on bf16 Q and K, as
 * transformers computes them for a bf16 model (reference/mistral.md §4.3 and §9 item 5).
 * The CPU reference is train/rope.c (fp32); the error bound of this kernel against it is
 * at the end of this file.
 *
 * Q is [N, n_heads, D] and K [N, n_kv_heads, D] (any head counts, GQA or not; K may be NULL
 * with n_kv_heads 0), D even and at most ROPE_MAX_HEAD_DIM. Token t is at positions[t]
 * (int32; packed conversations restart at 0). For j < D/2 the pair (j, j + D/2) of every
 * head of the token is rotated by the angle a_j (Hugging Face's rotate_half layout):
 *   inv_freq_j = 1 / theta^(2j/D)      fp32, computed once on the host by train/rope.c's
 *                                      rope_inv_freq (transformers computes this buffer once
 *                                      at model creation, on the CPU), passed by value
 *   a_j = fp32(position · inv_freq_j)  one fp32 product, as transformers' K = 1 matmul
 *   c = bf16(cos a_j), s = bf16(sin a_j)   fp32 cosf/sinf, then `.to(x.dtype)`
 *   x'_j       = bf16(bf16(x_j · c) − bf16(x_{j+D/2} · s))    q·cos + rotate_half(q)·sin,
 *   x'_{j+D/2} = bf16(bf16(x_{j+D/2} · c) + bf16(x_j · s))    each bf16 op rounded
 * Backward: the gradient of that, as autograd computes it on those bf16 tensors, is the same
 * expression with s replaced by −s (the rotation by −a): dx_j = bf16(bf16(g_j·c) + bf16(g_{j+D/2}·s))
 * and dx_{j+D/2} = bf16(bf16(g_{j+D/2}·c) − bf16(g_j·s)), in place on dQ and dK.
 *
 * Memory: one block per token. Its first D/2 threads compute c and s into shared memory
 * (the trigonometry is shared by all n_heads + n_kv_heads heads of the token); then each
 * thread rotates 8 pairs of one head: a 16-byte pack from each half of the head (32 bytes
 * in flight per thread, some 50 KB per SM with Mistral's 320-thread blocks), when D/2 is a
 * multiple of 8 and Q and K are 16-byte aligned; otherwise one pair. DRAM traffic: every
 * element of Q and K read and written once (4 bytes per element), plus the 4-byte position
 * per token.
 */
#ifndef PERSONA_ROPE_CUH
#define PERSONA_ROPE_CUH

#include <math.h>
#include <stdint.h>

#include "common.cuh"
extern "C" {
#include "../train/rope.h"
}

#define ROPE_MAX_HEAD_DIM 256
#define ROPE_MAX_THREADS 512

struct RopeFreqs {
    float inv_freq[ROPE_MAX_HEAD_DIM / 2];
};

__device__ __forceinline__ float rope_round(float x) { return __bfloat162float(__float2bfloat16(x)); }

// The block's cos and sin tables, in a non-template function: the CUDA-on-CPU harness's
// compiler drops the section of a template's statics, so it refuses __shared__ in one.
__device__ __forceinline__ float *rope_tables() {
    __shared__ float tables[ROPE_MAX_HEAD_DIM];  // cos of the half dims, then sin
    return tables;
}

// direction: +1 forward, −1 backward (sin negated).
template <int V>
__global__ void __launch_bounds__(ROPE_MAX_THREADS)
    rope_kernel(__nv_bfloat16 *q, __nv_bfloat16 *k, const int32_t *positions, RopeFreqs freqs, int n_heads,
                int n_kv_heads, int head_dim, float direction) {
    typedef Bf16Pack<V> Pack;
    float *cos_b = rope_tables(), *sin_b = cos_b + ROPE_MAX_HEAD_DIM / 2;
    int t = blockIdx.x, half = head_dim / 2;
    float position = (float)positions[t];
    for (int j = threadIdx.x; j < half; j += blockDim.x) {
        float a = position * freqs.inv_freq[j];
        cos_b[j] = rope_round(cosf(a));
        sin_b[j] = direction * rope_round(sinf(a));
    }
    __syncthreads();
    int per_head = half / V, units = (n_heads + n_kv_heads) * per_head;
    for (int w = threadIdx.x; w < units; w += blockDim.x) {
        int head = w / per_head, j = (w % per_head) * V;
        __nv_bfloat16 *x = head < n_heads ? q + ((size_t)t * n_heads + head) * head_dim
                                          : k + ((size_t)t * n_kv_heads + (head - n_heads)) * head_dim;
        Pack lo = *(const Pack *)(x + j), hi = *(const Pack *)(x + j + half), out_lo, out_hi;
        for (int i = 0; i < V; i++) {
            float x1 = (float)lo.v[i], x2 = (float)hi.v[i], c = cos_b[j + i], s = sin_b[j + i];
            out_lo.v[i] = __float2bfloat16(rope_round(x1 * c) - rope_round(x2 * s));
            out_hi.v[i] = __float2bfloat16(rope_round(x2 * c) + rope_round(x1 * s));
        }
        *(Pack *)(x + j) = out_lo;
        *(Pack *)(x + j + half) = out_hi;
    }
}

// Both directions. A head_dim the kernel cannot take is a bad model configuration: one line
// and exit status 1 (the drivers check the configuration before they get here).
static inline void rope_launch(__nv_bfloat16 *q, __nv_bfloat16 *k, const int32_t *positions, int N, int n_heads,
                               int n_kv_heads, int head_dim, double theta, float direction, cudaStream_t stream) {
    if (head_dim < 2 || head_dim > ROPE_MAX_HEAD_DIM || head_dim % 2) {
        fprintf(stderr, "error: rope: head_dim %d is not an even number from 2 to %d\n", head_dim, ROPE_MAX_HEAD_DIM);
        exit(1);
    }
    if (N == 0 || n_heads + n_kv_heads == 0) return;
    RopeFreqs freqs;
    rope_inv_freq(freqs.inv_freq, head_dim, theta);
    int half = head_dim / 2;
    bool packed = half % 8 == 0 && aligned16(q) && aligned16(k);
    int units = (n_heads + n_kv_heads) * (packed ? half / 8 : half);
    int threads = units < ROPE_MAX_THREADS ? CEIL_DIV(units, 32) * 32 : ROPE_MAX_THREADS;
    if (packed)
        LAUNCH(rope_kernel<8>, N, threads, 0, stream, q, k, positions, freqs, n_heads, n_kv_heads, head_dim, direction);
    else
        LAUNCH(rope_kernel<1>, N, threads, 0, stream, q, k, positions, freqs, n_heads, n_kv_heads, head_dim, direction);
}

// q: (N, n_heads, head_dim), k: (N, n_kv_heads, head_dim) or NULL with n_kv_heads 0,
// positions: (N), all on the device; rotated in place.
inline void rope_forward(__nv_bfloat16 *q, __nv_bfloat16 *k, const int32_t *positions, int N, int n_heads,
                         int n_kv_heads, int head_dim, double theta, cudaStream_t stream) {
    rope_launch(q, k, positions, N, n_heads, n_kv_heads, head_dim, theta, 1.0f, stream);
}

// dq, dk: the gradients at the rotated q and k, turned in place into those at q and k.
inline void rope_backward(__nv_bfloat16 *dq, __nv_bfloat16 *dk, const int32_t *positions, int N, int n_heads,
                          int n_kv_heads, int head_dim, double theta, cudaStream_t stream) {
    rope_launch(dq, dk, positions, N, n_heads, n_kv_heads, head_dim, theta, -1.0f, stream);
}

// ---------------------------------------------------------------------------------------
// How far this kernel may be from the fp32 reference (train/rope.c, either direction) given
// the same bf16 input; the tests and the bench check every element against this. Both use
// the same inv_freq and the same fp32 angle. u = 2^-8 is bf16's unit roundoff. The kernel
// rounds c (its cosf within 2 ulp on a GPU) and x1·c to bf16, so |bf16(x1·c) − x1·c| ≤
// (2u + u² + ε)|x1·c|, the same for x2·s, and the final rounding adds u of the result; the
// reference's own fp32 error and the cos/sin ulps are within slack = 16·2^-24 of
// m = |x1·c| + |x2·s| (c, s the fp32 cosine and sine):
//   |kernel − ref| ≤ u·|ref| + (1 + u)(2u + u² + slack)·m
static const float kRopeU = 1.0f / 256.0f;

static inline float rope_tolerance(float ref, float m) {
    return kRopeU * fabsf(ref) + (1 + kRopeU) * (2 * kRopeU + kRopeU * kRopeU + 16 * 0x1p-24f) * m;
}

// The bound for every element of one tensor x (N, heads, head_dim) rotated into ref by the
// reference; x is the input both were given. On the host.
static inline void rope_tolerances(float *tol, const float *x, const float *ref, const int32_t *positions, int N,
                                   int heads, int head_dim, double theta) {
    float inv_freq[ROPE_MAX_HEAD_DIM / 2];
    rope_inv_freq(inv_freq, head_dim, theta);
    int half = head_dim / 2;
    size_t n = (size_t)N * heads * head_dim;
    for (size_t i = 0; i < n; i++) {
        int t = (int)(i / ((size_t)heads * head_dim)), d = (int)(i % head_dim);
        float a = (float)positions[t] * inv_freq[d % half];
        float partner = x[d < half ? i + half : i - half];
        tol[i] = rope_tolerance(ref[i], fabsf(x[i]) * fabsf(cosf(a)) + fabsf(partner) * fabsf(sinf(a)));
    }
}

#endif
