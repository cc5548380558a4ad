/*
 * swiglu.cuh: the Mistral MLP's gate, h = silu(g) · u, forward and backward, elementwise on
 * bf16 tensors with the math in fp32. The CPU reference is train/swiglu.c (fp32 throughout);
 * the error bounds of this kernel against it are at the end of this file.
 *
 * Forward, as transformers computes `act_fn(gate_proj(x)) * up_proj(x)` on bf16 tensors
 * (reference/mistral.md §9 item 8; torch's silu kernel, ATen/native/cuda/ActivationSiluKernel.cu):
 *   a = bf16(g / (1 + exp(−g)))       torch's silu: fp32 math, the result rounded to bf16
 *   h = bf16(a · u)                   the bf16 product (exact in fp32, rounded once)
 * Backward, what autograd does with those bf16 tensors, except that a is recomputed from g
 * (the same bits) instead of being stored:
 *   du = bf16(dh · a)
 *   da = bf16(dh · u)                 the gradient reaching silu, a bf16 tensor in torch
 *   s  = 1 / (1 + exp(−g))
 *   dg = bf16(da · s · (1 + g · (1 − s)))   torch's silu_backward, fp32 math
 * In place: h may be g or u; dg may be dh or g, du may be dh or u (every element is read
 * before it is written, by the same thread), but dg and du must differ.
 *
 * Memory: a flat loop over n = rows · columns elements (the op does not care about rows).
 * When g, u, h (forward) or dh, g, u, dg, du (backward) are all 16-byte aligned, each thread
 * takes one 16-byte pack of 8 elements from every input (32 or 48 bytes in flight per
 * thread) and the last thread also the fewer-than-8 tail; otherwise one element per thread.
 * DRAM traffic per element: forward reads g, u and writes h (6 bytes); backward reads dh,
 * g, u and writes dg, du (10 bytes). The fp32 math is not free: the backward's exp,
 * division and reciprocal come to about 35 PTX instructions per element plus the
 * division's and reciprocal's expansions, by our count roughly half of an H100's
 * instruction issue at its DRAM rate (an estimate; the bench measures).
 */
#ifndef PERSONA_SWIGLU_CUH
#define PERSONA_SWIGLU_CUH

#include <math.h>

#include "common.cuh"

#define SWIGLU_THREADS 256

__device__ __forceinline__ float swiglu_round(float x) { return __bfloat162float(__float2bfloat16(x)); }

// a = silu(g) as torch computes it for a bf16 tensor (fp32, then rounded).
__device__ __forceinline__ float swiglu_silu(float g) { return swiglu_round(g / (1.0f + expf(-g))); }

__device__ __forceinline__ __nv_bfloat16 swiglu_forward_one(__nv_bfloat16 g, __nv_bfloat16 u) {
    return __float2bfloat16(swiglu_silu((float)g) * (float)u);
}

__device__ __forceinline__ void swiglu_backward_one(__nv_bfloat16 *dg, __nv_bfloat16 *du, __nv_bfloat16 dh,
                                                    __nv_bfloat16 g, __nv_bfloat16 u) {
    float d = (float)dh, x = (float)g;
    float da = swiglu_round(d * (float)u), s = 1.0f / (1.0f + expf(-x));
    *du = __float2bfloat16(d * swiglu_silu(x));
    *dg = __float2bfloat16(da * s * (1.0f + x * (1.0f - s)));
}

template <int V>
__global__ void __launch_bounds__(SWIGLU_THREADS)
    swiglu_forward_kernel(__nv_bfloat16 *h, const __nv_bfloat16 *g, const __nv_bfloat16 *u, size_t n) {
    typedef Bf16Pack<V> Pack;
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (i + V <= n) {
        Pack gv = *(const Pack *)(g + i), uv = *(const Pack *)(u + i), hv;
        for (int k = 0; k < V; k++) hv.v[k] = swiglu_forward_one(gv.v[k], uv.v[k]);
        *(Pack *)(h + i) = hv;
    } else {
        for (; i < n; i++) h[i] = swiglu_forward_one(g[i], u[i]);  // the tail (V = 8 only)
    }
}

template <int V>
__global__ void __launch_bounds__(SWIGLU_THREADS)
    swiglu_backward_kernel(__nv_bfloat16 *dg, __nv_bfloat16 *du, const __nv_bfloat16 *dh, const __nv_bfloat16 *g,
                           const __nv_bfloat16 *u, size_t n) {
    typedef Bf16Pack<V> Pack;
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (i + V <= n) {
        Pack dv = *(const Pack *)(dh + i), gv = *(const Pack *)(g + i), uv = *(const Pack *)(u + i), dgv, duv;
        for (int k = 0; k < V; k++) swiglu_backward_one(&dgv.v[k], &duv.v[k], dv.v[k], gv.v[k], uv.v[k]);
        *(Pack *)(dg + i) = dgv;
        *(Pack *)(du + i) = duv;
    } else {
        for (; i < n; i++) {
            __nv_bfloat16 a, b;
            swiglu_backward_one(&a, &b, dh[i], g[i], u[i]);
            dg[i] = a, du[i] = b;
        }
    }
}

// h, g, u: n elements each.
inline void swiglu_forward(__nv_bfloat16 *h, const __nv_bfloat16 *g, const __nv_bfloat16 *u, size_t n,
                           cudaStream_t stream) {
    if (n == 0) return;
    if (aligned16(h) && aligned16(g) && aligned16(u))
        LAUNCH(swiglu_forward_kernel<8>, CEIL_DIV(n, 8 * SWIGLU_THREADS), SWIGLU_THREADS, 0, stream, h, g, u, n);
    else
        LAUNCH(swiglu_forward_kernel<1>, CEIL_DIV(n, SWIGLU_THREADS), SWIGLU_THREADS, 0, stream, h, g, u, n);
}

// dg, du, dh, g, u: n elements each.
inline void swiglu_backward(__nv_bfloat16 *dg, __nv_bfloat16 *du, const __nv_bfloat16 *dh, const __nv_bfloat16 *g,
                            const __nv_bfloat16 *u, size_t n, cudaStream_t stream) {
    if (n == 0) return;
    if (aligned16(dg) && aligned16(du) && aligned16(dh) && aligned16(g) && aligned16(u))
        LAUNCH(swiglu_backward_kernel<8>, CEIL_DIV(n, 8 * SWIGLU_THREADS), SWIGLU_THREADS, 0, stream, dg, du, dh, g,
               u, n);
    else
        LAUNCH(swiglu_backward_kernel<1>, CEIL_DIV(n, SWIGLU_THREADS), SWIGLU_THREADS, 0, stream, dg, du, dh, g, u,
               n);
}

// ---------------------------------------------------------------------------------------
// How far this kernel may be from the fp32 reference (train/swiglu.c) given the same bf16
// inputs; the tests and the bench check every element against these. u = 2^-8 is bf16's
// unit roundoff. Both sides compute sigmoid/silu in fp32 with a few roundings and an exp
// (the GPU's expf is within 2 ulp, and nvcc may fuse a multiply-add): each within
// k·2^-24 of the value for a small k; kSwigluSlack = 32·2^-24 covers both sides.
static const float kSwigluU = 1.0f / 256.0f;
static const float kSwigluSlack = 32 * 0x1p-24f;

// h (and du, the same form: a rounded silu times dh): two bf16 roundings, (1 + u)² − 1 = 2u + u².
static inline float swiglu_forward_tolerance(float h_ref) {
    return (2 * kSwigluU + kSwigluU * kSwigluU + kSwigluSlack) * fabsf(h_ref);
}

// dg: da is rounded (u) and so is dg (u of the result); 1 + g(1 − s) can cancel (it is 0
// near g = −1.28), so the fp32 errors are bounded by the magnitudes, not by dg:
// |kernel − ref| ≤ (u·|ref| + (u + slack)·|dh·u|·s·(1 + |g|)) / (1 − u).
static inline float swiglu_dg_tolerance(float dg_ref, float dh, float g, float u) {
    float s = 1.0f / (1.0f + expf(-g));
    return (kSwigluU * fabsf(dg_ref) + (kSwigluU + kSwigluSlack) * fabsf(dh * u) * s * (1 + fabsf(g))) /
           (1 - kSwigluU);
}

#endif
