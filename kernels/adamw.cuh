/*
 * adamw.cuh: the optimizer step for the fp32 LoRA parameters, and the global gradient L2
 * norm that gradient clipping needs. The CPU reference is train/adamw.c (which matches
 * torch.optim.AdamW and torch.nn.utils.clip_grad_norm_); the error bounds of these kernels
 * against it are at the end of this file.
 *
 * AdamW, one step t (1-based) on every element of one contiguous buffer (the LoRA
 * parameters live in one allocation, and their gradients and moments in the same layout):
 *   g <- grad · grad_scale                                (the clipping factor, 1 if none)
 *   p <- p · decay                     decay = fp32(1 − lr·weight_decay)
 *   m <- m + (1 − beta1)·(g − m)                          (torch's lerp)
 *   v <- v·beta2 + (1 − beta2)·g·g
 *   p <- p − step_size · (m / (sqrt(v) / bc2_sqrt + eps))
 *                                      step_size = fp32(lr / (1 − beta1^t)),
 *                                      bc2_sqrt = fp32(sqrt(1 − beta2^t))
 * The scalar factors are computed on the host in double and rounded once, exactly as
 * train/adamw.c computes them (torch does the same with Python floats), and every per-element
 * operation is the reference's fp32 operation in the reference's order. The clipping factor
 * is an fp32 argument: the reference scales each gradient by fp32(coef) in place, which
 * is the same single rounding as g · grad_scale here.
 *
 * Global norm: sum over n_tensors gradient tensors of g², a fixed-shape two-pass reduction
 * with no atomics, so the same bits on every run (and on every GPU):
 *   pass 1: B = min(GRAD_NORM_BLOCKS, ceil(total / (4·GRAD_NORM_THREADS))) blocks (at
 *           least 4 elements a thread, a number that depends on the total size only);
 *           block b owns the slice [b·chunk, (b+1)·chunk) of the tensors' concatenation
 *           (chunk = ceil(total / B)); each thread sums its elements' squares in double,
 *           the block adds the threads' sums with block_sum (fp32, an order fixed by the
 *           block size) into partial[b];
 *   pass 2: one block adds the B partials the same way into *norm_squared.
 * The order of every addition depends only on the tensor sizes, never on timing.
 *
 * Memory: AdamW reads p, g, m, v and writes p, m, v (28 bytes per parameter, each touched
 * once; 30 with the bf16 copy), as 16-byte float4 packs when the length is a multiple of 4
 * and every pointer is 16-byte aligned, else as single floats. The norm reads each gradient
 * once (4 bytes per parameter) plus the tensor table.
 */
#ifndef PERSONA_ADAMW_CUH
#define PERSONA_ADAMW_CUH

#include <math.h>
#include <stdint.h>

#include "common.cuh"

#define ADAMW_THREADS 256
#define GRAD_NORM_THREADS 256
// At most this many blocks; their number depends on the size, never on the device, so that
// the result's bits do not depend on the GPU: 1024 blocks of 256 threads nearly fill an
// H100 (132 SMs x 2048 threads).
#define GRAD_NORM_BLOCKS 1024

// V consecutive floats, moved as one aligned load or store (16 bytes for V = 4).
template <int V>
struct alignas(4 * V) FloatPack {
    float v[V];
};

// The step's scalars, computed on the host as train/adamw.c computes them.
struct AdamWScalars {
    float decay, step_size, bc2_sqrt, beta1, beta2, w1, w2, eps, grad_scale;
};

template <int V>
__global__ void __launch_bounds__(ADAMW_THREADS)
    adamw_kernel(float *param, const float *grad, float *m, float *v, __nv_bfloat16 *param_bf16, size_t packs,
                 AdamWScalars s) {
    typedef FloatPack<V> Pack;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= packs) return;
    Pack p = ((Pack *)param)[i], g = ((const Pack *)grad)[i], mp = ((Pack *)m)[i], vp = ((Pack *)v)[i];
    for (int k = 0; k < V; k++) {
        float gk = g.v[k] * s.grad_scale;
        p.v[k] *= s.decay;
        mp.v[k] += s.w1 * (gk - mp.v[k]);
        vp.v[k] = vp.v[k] * s.beta2 + s.w2 * gk * gk;
        float denom = sqrtf(vp.v[k]) / s.bc2_sqrt + s.eps;
        p.v[k] -= s.step_size * (mp.v[k] / denom);
    }
    ((Pack *)param)[i] = p, ((Pack *)m)[i] = mp, ((Pack *)v)[i] = vp;
    if (param_bf16)
        for (int k = 0; k < V; k++) param_bf16[i * V + k] = __float2bfloat16(p.v[k]);
}

// One AdamW step (step is 1-based) on n fp32 parameters with their gradients (scaled by
// grad_scale first) and moments m, v, all device buffers of n floats; param, m, v updated.
// param_bf16, when given (n bf16), receives the updated parameters rounded to nearest-even:
// the bf16 copies that mixed-precision products read, refreshed in the same pass.
inline void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, int step, float lr,
                         float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                         cudaStream_t stream, __nv_bfloat16 *param_bf16 = NULL) {
    if (n == 0) return;
    double bc1 = 1.0 - pow(beta1, step), bc2 = 1.0 - pow(beta2, step);
    AdamWScalars s;
    s.decay = (float)(1.0 - (double)lr * weight_decay);
    s.step_size = (float)(lr / bc1), s.bc2_sqrt = (float)sqrt(bc2);
    s.beta1 = beta1, s.beta2 = beta2, s.w1 = 1.0f - beta1, s.w2 = 1.0f - beta2;
    s.eps = eps, s.grad_scale = grad_scale;
    bool packed = n % 4 == 0 && aligned16(param) && aligned16(grad) && aligned16(m) &&
                  aligned16(v);
    size_t packs = packed ? n / 4 : n;
    unsigned blocks = (unsigned)CEIL_DIV(packs, (size_t)ADAMW_THREADS);
    if (packed)
        LAUNCH(adamw_kernel<4>, blocks, ADAMW_THREADS, 0, stream, param, grad, m, v, param_bf16, packs, s);
    else
        LAUNCH(adamw_kernel<1>, blocks, ADAMW_THREADS, 0, stream, param, grad, m, v, param_bf16, packs, s);
}

// Pass 1. tensors[t] is the t-th gradient tensor; offsets[t] its first element's index in
// the concatenation (offsets[0] = 0, offsets[n_tensors] = total), both device arrays.
__global__ void __launch_bounds__(GRAD_NORM_THREADS)
    grad_norm_partial_kernel(float *partial, const float *const *tensors, const size_t *offsets, int n_tensors) {
    size_t total = offsets[n_tensors], chunk = CEIL_DIV(total, (size_t)gridDim.x);
    size_t lo = min((size_t)blockIdx.x * chunk, total), hi = min(lo + chunk, total);
    // the last tensor starting at or before lo (binary search over the offsets)
    int t = 0, end = n_tensors;
    while (end - t > 1) {
        int mid = (t + end) / 2;
        if (offsets[mid] <= lo) t = mid;
        else end = mid;
    }
    double sum = 0.0;
    for (; t < n_tensors && offsets[t] < hi; t++) {
        // this block's part of tensor t, as indices into the tensor
        const float *g = tensors[t];
        size_t first = max(lo, offsets[t]) - offsets[t], last = min(hi, offsets[t + 1]) - offsets[t];
        for (size_t i = first + threadIdx.x; i < last; i += blockDim.x) sum += (double)g[i] * g[i];
    }
    float block = block_sum((float)sum);
    if (threadIdx.x == 0) partial[blockIdx.x] = block;
}

// Pass 2: one block adds the partials.
__global__ void __launch_bounds__(GRAD_NORM_THREADS)
    grad_norm_final_kernel(float *norm_squared, const float *partial, int n_partial) {
    double sum = 0.0;
    for (int i = threadIdx.x; i < n_partial; i += blockDim.x) sum += partial[i];
    float total = block_sum((float)sum);
    if (threadIdx.x == 0) *norm_squared = total;
}

// The squared global L2 norm of n_tensors gradient tensors into *norm_squared (one device
// float). tensors, offsets: device arrays as grad_norm_partial_kernel describes; total: the
// tensors' elements (offsets[n_tensors], which the host knows); partial: device scratch of
// GRAD_NORM_BLOCKS floats.
inline void grad_norm_squared(float *norm_squared, float *partial, const float *const *tensors,
                              const size_t *offsets, int n_tensors, size_t total, cudaStream_t stream) {
    size_t want = CEIL_DIV(total, (size_t)4 * GRAD_NORM_THREADS);
    int blocks = want < 1 ? 1 : want > GRAD_NORM_BLOCKS ? GRAD_NORM_BLOCKS : (int)want;
    LAUNCH(grad_norm_partial_kernel, blocks, GRAD_NORM_THREADS, 0, stream, partial, tensors, offsets, n_tensors);
    LAUNCH(grad_norm_final_kernel, 1, GRAD_NORM_THREADS, 0, stream, norm_squared, partial, blocks);
}

// torch's clipping factor for a global norm: scale the gradients by max_norm / (norm + 1e-6)
// when that is below 1 (train/adamw.c grad_clip), as the fp32 AdamW multiplies them by.
static inline float grad_clip_scale(double norm, float max_norm) {
    double coef = max_norm / (norm + 1e-6);
    return coef < 1.0 ? (float)coef : 1.0f;
}

// ---------------------------------------------------------------------------------------
// How far these kernels may be from train/adamw.c; the harness test and the bench check
// every element against these. u = 2^-24, fp32's unit roundoff.
//
// AdamW: the kernel performs the reference's fp32 operations in the reference's order, and
// nvcc (without --use_fast_math) rounds sqrtf and '/' correctly, as the CPU does. What can
// differ is FMA contraction: nvcc fuses m + w1·(g − m), v·beta2 + w2·g·g and
// p − step_size·ratio into fused multiply-adds, each skipping one rounding (the host
// compilers of the harness and the reference do not contract on x86-64, so there the
// results are normally the same bits). A skipped rounding moves a result by at most u of
// its operands' magnitudes, and the differences carry into later steps through m, v and
// p. Per step that is a few u of |p| (decay, subtraction) plus a few u of the update,
// lr·|m̂| / (sqrt(v̂) + eps), in which the change of m is at most u·(|m| + w1·|g|) and,
// by Cauchy–Schwarz over the moment sums, |m̂| / sqrt(v̂) <= (1 − β1) / sqrt((1 − β2)·
// (1 − β1²/β2)) ≈ 7.3 and w1·|g| / sqrt(v̂) <= w1·sqrt(bc2 / (1 − β2)) ≈ 3.2 for torch's
// default betas. Rounded up generously, after t steps:
//   tol(p, t) = 8·t·u·(|p| + 8·Σ_{s<=t} lr_s)
// (per step about 64u ≈ 4e-6 of the learning rate: a wrong bias correction, decay or
// clipping factor is far outside it).
static inline double adamw_tolerance(double p_ref, int step, double lr_sum) {
    return 8.0 * step * 0x1p-24 * (fabs(p_ref) + 8.0 * lr_sum);
}
// The norm's square: every term is non-negative, so relative bounds add up. Each thread's
// double sum is exact to ~2^-53 relative; then per pass one rounding to fp32 and the 10
// levels of block_sum (5 within a warp, 5 across the warps; additions of zeros are
// exact), each at most u of the running sum: (1 + 10)·u per pass, 22u for both, plus
// the fp32 rounding of each partial read back. 32u relative covers it.
static inline double grad_norm_squared_tolerance(double ref) { return 32.0 * 0x1p-24 * ref; }

#endif
