/*
 * rmsnorm.cuh: RMSNorm with the residual add fused in front, bf16 in and out, fp32
 * statistics. The CPU reference is train/rmsnorm.c (the norm alone, fp32) after r + x; the
 * error bounds of this kernel against it are at the end of this file.
 *
 * Forward, per row of C (one block per row: 256 threads, fewer for a short row):
 *   h = bf16(r + x)                     the residual stream, rounded as transformers' bf16 add
 *   rstd = rsqrt(mean(float(h)²) + eps) fp32, stored for the backward pass
 *   y = bf16(bf16(h · rstd) · w)        transformers' cast order (reference/mistral.md §4.2,
 *                                       §9 item 4): back to bf16 first, then times the weight
 * x may be NULL (no residual add: the norm of r; h is then not written and may be NULL).
 * h may be r (the residual stream updated in place).
 *
 * Backward, per row: dh = bf16(dh_in + rstd·g − h·rstd³·(Σ g·h)/C) with g = dy·w, all in
 * fp32 and rounded once. dh_in may be NULL; dh may be dh_in or dy (in place). No dw: the
 * weight is frozen in QLoRA.
 *
 * Memory: each thread works on 16-byte packs of 8 bf16 when C is a multiple of 8 and every
 * pointer is 16-byte aligned, else on single elements. A row is read twice (the second pass
 * re-reads what the same thread read or wrote in the first, from L1/L2), and the row sum
 * goes through block_sum, whose order depends only on the block size (set by C), so the
 * results are the same bits on every run.
 */
#ifndef PERSONA_RMSNORM_CUH
#define PERSONA_RMSNORM_CUH

#include <math.h>

#include "common.cuh"

#define RMSNORM_THREADS 256

template <int V>
__global__ void __launch_bounds__(RMSNORM_THREADS)
    rmsnorm_forward_kernel(__nv_bfloat16 *h, __nv_bfloat16 *y, float *rstd, const __nv_bfloat16 *r,
                           const __nv_bfloat16 *x, const __nv_bfloat16 *w, int C, float eps) {
    typedef Bf16Pack<V> Pack;
    size_t base = (size_t)blockIdx.x * C;
    int packs = C / V;
    const Pack *rp = (const Pack *)(r + base), *xp = x ? (const Pack *)(x + base) : NULL;
    Pack *hp = x ? (Pack *)(h + base) : NULL;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < packs; i += blockDim.x) {
        Pack a = rp[i];
        if (xp) {
            Pack b = xp[i];
            for (int k = 0; k < V; k++) a.v[k] = __float2bfloat16((float)a.v[k] + (float)b.v[k]);
            hp[i] = a;
        }
        for (int k = 0; k < V; k++) sum += (float)a.v[k] * (float)a.v[k];
    }
    float s = rsqrtf(block_sum(sum) / (float)C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = s;
    // The second pass reads back what this same thread wrote (or read) above.
    const Pack *src = xp ? hp : rp, *wp = (const Pack *)w;
    Pack *yp = (Pack *)(y + base);
    for (int i = threadIdx.x; i < packs; i += blockDim.x) {
        Pack a = src[i], wv = wp[i], out;
        for (int k = 0; k < V; k++) {
            __nv_bfloat16 normed = __float2bfloat16((float)a.v[k] * s);
            out.v[k] = __float2bfloat16((float)normed * (float)wv.v[k]);
        }
        yp[i] = out;
    }
}

template <int V>
__global__ void __launch_bounds__(RMSNORM_THREADS)
    rmsnorm_backward_kernel(__nv_bfloat16 *dh, const __nv_bfloat16 *dy, const __nv_bfloat16 *dh_in,
                            const __nv_bfloat16 *h, const __nv_bfloat16 *w, const float *rstd, int C) {
    typedef Bf16Pack<V> Pack;
    size_t base = (size_t)blockIdx.x * C;
    int packs = C / V;
    const Pack *dyp = (const Pack *)(dy + base), *hp = (const Pack *)(h + base), *wp = (const Pack *)w;
    const Pack *dip = dh_in ? (const Pack *)(dh_in + base) : NULL;
    Pack *dhp = (Pack *)(dh + base);
    float s = rstd[blockIdx.x], dot = 0.0f;
    for (int i = threadIdx.x; i < packs; i += blockDim.x) {
        Pack g = dyp[i], wv = wp[i], hv = hp[i];
        for (int k = 0; k < V; k++) dot += (float)g.v[k] * (float)wv.v[k] * (float)hv.v[k];
    }
    float coef = s * s * s * block_sum(dot) / (float)C;
    for (int i = threadIdx.x; i < packs; i += blockDim.x) {
        Pack g = dyp[i], wv = wp[i], hv = hp[i], out, in = dip ? dip[i] : g;  // (in unused without dh_in)
        for (int k = 0; k < V; k++) {
            float d = s * ((float)g.v[k] * (float)wv.v[k]) - (float)hv.v[k] * coef;
            out.v[k] = __float2bfloat16(dip ? (float)in.v[k] + d : d);
        }
        dhp[i] = out;
    }
}

// The block for a row of `units` packs: RMSNORM_THREADS, or for a shorter row the fewest
// whole warps that give every thread a pack (idle threads would only wait at the barriers).
static inline int rmsnorm_threads(int units) {
    int warps = CEIL_DIV(units, 32);
    return warps * 32 < RMSNORM_THREADS ? (warps > 0 ? warps : 1) * 32 : RMSNORM_THREADS;
}

// h: (N, C) or NULL with x NULL; y: (N, C); rstd: (N); r, x: (N, C); w: (C).
inline void rmsnorm_forward(__nv_bfloat16 *h, __nv_bfloat16 *y, float *rstd, const __nv_bfloat16 *r,
                            const __nv_bfloat16 *x, const __nv_bfloat16 *w, int N, int C, float eps,
                            cudaStream_t stream) {
    if (N == 0) return;
    bool packed = C % 8 == 0 && aligned16(h) && aligned16(y) && aligned16(r) && aligned16(x) && aligned16(w);
    if (packed)
        LAUNCH(rmsnorm_forward_kernel<8>, N, rmsnorm_threads(C / 8), 0, stream, h, y, rstd, r, x, w, C, eps);
    else
        LAUNCH(rmsnorm_forward_kernel<1>, N, rmsnorm_threads(C), 0, stream, h, y, rstd, r, x, w, C, eps);
}

// dh, dy, dh_in (or NULL), h: (N, C); w: (C); rstd: (N), from the forward pass.
inline void rmsnorm_backward(__nv_bfloat16 *dh, const __nv_bfloat16 *dy, const __nv_bfloat16 *dh_in,
                             const __nv_bfloat16 *h, const __nv_bfloat16 *w, const float *rstd, int N, int C,
                             cudaStream_t stream) {
    if (N == 0) return;
    bool packed = C % 8 == 0 && aligned16(dh) && aligned16(dy) && aligned16(dh_in) && aligned16(h) && aligned16(w);
    if (packed)
        LAUNCH(rmsnorm_backward_kernel<8>, N, rmsnorm_threads(C / 8), 0, stream, dh, dy, dh_in, h, w, rstd, C);
    else
        LAUNCH(rmsnorm_backward_kernel<1>, N, rmsnorm_threads(C), 0, stream, dh, dy, dh_in, h, w, rstd, C);
}

// ---------------------------------------------------------------------------------------
// How far this kernel may be from the fp32 reference (train/rmsnorm.c after h = r + x, or
// before dh = dh_in + dx), both given the same bf16 inputs; the tests and the bench check
// every element against these. u = 2^-8 is bf16's unit roundoff (8 significant bits,
// round to nearest: half an ulp is at most 2^-8 of the value). A sum of C fp32 terms in
// any order is off by at most (C - 1)·2^-24 of the sum of their magnitudes (Higham,
// Accuracy and Stability of Numerical Algorithms, §4.2); slack = (C + 16)·2^-24 covers that
// plus the few single fp32 roundings and the GPU's rsqrtf (2 ulp), on either side.

static const float kRmsnormU = 1.0f / 256.0f;
static inline float rmsnorm_slack(int C) { return (float)(C + 16) * 0x1p-24f; }

// y: the kernel rounds h = bf16(r + x), then h·rstd, then (h·rstd)·w, each by at most u,
// and its rstd, computed from the rounded h, is off by at most u (each h_c² by 2u, the
// square root halves that): (1 + u)^4 - 1 < 4u + 7u².
static inline float rmsnorm_forward_tolerance(float y_ref, int C) {
    return (4 * kRmsnormU + 7 * kRmsnormU * kRmsnormU + rmsnorm_slack(C)) * fabsf(y_ref);
}
static inline float rmsnorm_rstd_tolerance(float rstd_ref, int C) {
    return (kRmsnormU + kRmsnormU * kRmsnormU + rmsnorm_slack(C)) * rstd_ref;
}
// h: one rounding of r + x (which fp32 holds exactly for bf16 inputs of similar size).
static inline float rmsnorm_h_tolerance(float h_ref) { return (kRmsnormU + 0x1p-24f) * fabsf(h_ref); }

// dh: fp32 from the same bf16 inputs, rounded once at the end. The fp32 difference is at
// most 2·slack times the magnitudes of the terms, S = |dh_in| + rstd·|g| + rstd³·|h|·
// Σ_c|g_c·h_c| / C with g = dy·w, and the final rounding adds u of the result:
// |kernel - ref| <= u·|ref| + (1 + u)·2·slack·S. row_abs_dot is Σ_c |dy_c·w_c·h_c|.
static inline float rmsnorm_backward_tolerance(float dh_ref, float dy, float dh_in, float h, float w, float rstd,
                                               float row_abs_dot, int C) {
    float S = fabsf(dh_in) + rstd * fabsf(dy * w) + rstd * rstd * rstd * fabsf(h) * row_abs_dot / (float)C;
    return kRmsnormU * fabsf(dh_ref) + (1 + kRmsnormU) * 2 * rmsnorm_slack(C) * S;
}

#endif
