/*
 * cross_entropy.cuh: the LM head fused with the cross-entropy loss, forward and backward,
 * over trained tokens only, a chunk of tokens at a time, so the [tokens, vocab] logits never
 * exist. The CPU reference is train/cross_entropy.c (its conventions are the ones here); the
 * error bounds against it are at the end of this file.
 *
 * Inputs, as train/model.h's ModelInput and the reference: X [T, H] bf16 (the final normed
 * hidden states), the frozen head W [V, H] bf16, targets [T] and weights [T] (fp32). Token t
 * is trained iff weights[t] != 0 (the reference skips weight 0; the dataloader's weights are
 * the 0/1 assistant mask); its target must then be in [0, V) (else its loss is NaN, so the
 * mistake shows). For each trained token, with z = W x_t (fp32):
 *   loss_t  = weights[t]·(logsumexp(z) − z[target_t])
 *   dz      = grad_scale·weights[t]·(softmax(z) − onehot(target_t))
 *   dX[t]   = dz W
 * and dX[t] = 0 for untrained tokens. grad_scale is the caller's: the loss is normalised by
 * the trained tokens of the whole optimizer step, which one micro-batch does not know.
 * Outputs: *loss (device, double) = Σ_t loss_t, the count of trained tokens (returned), dX
 * (bf16; NULL for the forward only, e.g. evaluation). The head is frozen: no dW.
 *
 * The pass (cross_entropy_forward_backward), on one stream:
 *   1. gather: one block scans weights and writes the trained token indices in order, and
 *      their count; the count is copied to the host (one synchronisation per call: the GEMM
 *      sizes depend on it). Untrained tokens then cost nothing but zeroing their dX rows.
 *   2. per chunk of up to `chunk` trained tokens:
 *      - copy their X rows into a packed [c, H] buffer (16-byte moves when H % 8 == 0);
 *      - logits [c, V] fp32 = Xc · Wᵀ                       (matmul.cuh, fp32 out);
 *      - per row (one block): max and Σexp in one online pass, lse = max + log Σ, the loss
 *        (into a per-token array), then dz overwrites the logits in place as bf16: row r's
 *        bf16 values start where its fp32 values started, a bf16 matrix with leading
 *        dimension 2V. Within a row the writes trail the reads (element j's bf16 lands in the
 *        bytes of fp32 element j/2), so one barrier per tile of blockDim elements, between
 *        reading a tile and writing it, keeps every fp32 value read before it is overwritten;
 *      - dXc [c, H] = dz · W                               (matmul.cuh, bf16 out, lda 2V)
 *        into the packed buffer, whose rows are then copied to their tokens' rows of dX.
 *   3. one block sums the per-token losses in double in a fixed order, so the sum adds no
 *      run-to-run variation of its own (the harness test checks the same bits under
 *      different thread schedules).
 *
 * Scratch (cross_entropy_scratch_bytes): indices and losses for T tokens, the packed [chunk, H]
 * bf16 buffer and the [chunk, V] fp32 logits (chunk = 1024, V = 131072: 512 MiB).
 * FLOPs: 2·H·V per trained token for the logits and 2·H·V for dX.
 */
#ifndef PERSONA_CROSS_ENTROPY_CUH
#define PERSONA_CROSS_ENTROPY_CUH

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "matmul.cuh"

#define CROSS_ENTROPY_SCAN_THREADS 1024
#define CROSS_ENTROPY_ROW_THREADS 512
#define CROSS_ENTROPY_COPY_THREADS 256

// rows[0..count) = the indices t with weights[t] != 0, in order; *count = how many. One block.
__global__ void __launch_bounds__(CROSS_ENTROPY_SCAN_THREADS)
    cross_entropy_gather_kernel(int *rows, int *count, const float *weights, int T) {
    __shared__ int ends[CROSS_ENTROPY_SCAN_THREADS];
    int per = CEIL_DIV(T, (int)blockDim.x), begin = threadIdx.x * per, end = min(begin + per, T);
    int mine = 0;
    for (int t = begin; t < end; t++) mine += weights[t] != 0.0f;
    ends[threadIdx.x] = mine;
    __syncthreads();
    for (int d = 1; d < (int)blockDim.x; d *= 2) {  // inclusive prefix sum (Hillis-Steele)
        int before = (int)threadIdx.x >= d ? ends[threadIdx.x - d] : 0;
        __syncthreads();
        ends[threadIdx.x] += before;
        __syncthreads();
    }
    int at = ends[threadIdx.x] - mine;
    for (int t = begin; t < end; t++)
        if (weights[t] != 0.0f) rows[at++] = t;
    if (threadIdx.x == blockDim.x - 1) *count = ends[threadIdx.x];
}

// dst[dst_rows ? dst_rows[b] : b] = src[src_rows ? src_rows[b] : b] for block b: rows of H
// bf16, moved as Pack: float4 (16 bytes as they are; H % 8 == 0, both bases 16-byte
// aligned) or __nv_bfloat16.
template <typename Pack>
__global__ void __launch_bounds__(CROSS_ENTROPY_COPY_THREADS)
    cross_entropy_copy_rows_kernel(__nv_bfloat16 *dst, const int *dst_rows, const __nv_bfloat16 *src,
                                   const int *src_rows, int H) {
    size_t d = dst_rows ? dst_rows[blockIdx.x] : blockIdx.x, s = src_rows ? src_rows[blockIdx.x] : blockIdx.x;
    Pack *to = (Pack *)(dst + d * H);
    const Pack *from = (const Pack *)(src + s * H);
    int packs = H / (int)(sizeof(Pack) / sizeof(__nv_bfloat16));
    for (int i = threadIdx.x; i < packs; i += blockDim.x) to[i] = from[i];
}

// The running (max, Σ exp(z − max)) of a set of logits, merged with another set's.
__device__ __forceinline__ void softmax_merge(float *m, float *s, float m2, float s2) {
    float top = fmaxf(*m, m2);
    if (top == -INFINITY) return;  // both sets empty
    *s = (*m == -INFINITY ? 0.0f : *s * expf(*m - top)) + (m2 == -INFINITY ? 0.0f : s2 * expf(m2 - top));
    *m = top;
}

// One block per trained row of the chunk: row_loss[i] = its loss; with write_grad, dz
// (bf16, leading dimension 2V) over the row's logits. rows, row_loss: this chunk's slice.
__global__ void __launch_bounds__(CROSS_ENTROPY_ROW_THREADS)
    cross_entropy_softmax_kernel(float *logits, float *row_loss, const int *rows, const int32_t *targets,
                                 const float *weights, int V, float grad_scale, int write_grad) {
    __shared__ float warp_m[32], warp_s[32];
    float *z = logits + (size_t)blockIdx.x * V;
    int row = rows[blockIdx.x], target = targets[row];
    float weight = weights[row];
    bool valid = target >= 0 && target < V;
    float target_logit = valid && threadIdx.x == 0 ? z[target] : 0.0f;  // read before any overwrite

    float m = -INFINITY, s = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float v = z[j];
        if (v > m) {
            s = (m == -INFINITY ? 0.0f : s * expf(m - v)) + 1.0f;
            m = v;
        } else {
            s += expf(v - m);
        }
    }
    for (int offset = 16; offset > 0; offset /= 2)
        softmax_merge(&m, &s, __shfl_xor_sync(0xffffffffu, m, offset), __shfl_xor_sync(0xffffffffu, s, offset));
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    if (lane == 0) warp_m[warp] = m, warp_s[warp] = s;
    __syncthreads();
    m = lane < warps ? warp_m[lane] : -INFINITY, s = lane < warps ? warp_s[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2)
        softmax_merge(&m, &s, __shfl_xor_sync(0xffffffffu, m, offset), __shfl_xor_sync(0xffffffffu, s, offset));
    float lse = m + logf(s);
    if (threadIdx.x == 0) row_loss[blockIdx.x] = valid ? weight * (lse - target_logit) : NAN;
    if (!write_grad) return;

    __nv_bfloat16 *dz = (__nv_bfloat16 *)z;  // row blockIdx.x of the bf16 matrix with ld 2V
    float scale = grad_scale * weight;
    for (int base = 0; base < V; base += blockDim.x) {
        int j = base + threadIdx.x;
        float v = j < V ? z[j] : 0.0f;
        __syncthreads();  // the whole tile is read before any of it is overwritten
        if (j < V) dz[j] = __float2bfloat16((expf(v - lse) - (j == target ? 1.0f : 0.0f)) * scale);
    }
}

// *loss = Σ row_loss[0..n), in double, in a fixed order. One block.
__global__ void __launch_bounds__(CROSS_ENTROPY_SCAN_THREADS)
    cross_entropy_sum_kernel(double *loss, const float *row_loss, int n) {
    __shared__ double partial[CROSS_ENTROPY_SCAN_THREADS];
    double sum = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) sum += row_loss[i];
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) *loss = partial[0];
}

// The scratch layout, each piece 256-byte aligned; base NULL only measures.
typedef struct {
    int *rows, *count;
    float *row_loss, *logits;
    __nv_bfloat16 *packed;
    size_t bytes;
} CrossEntropyScratch;

static inline void *cross_entropy_piece(char *base, size_t *at, size_t bytes) {
    void *p = base ? base + *at : NULL;
    *at += (bytes + 255) / 256 * 256;
    return p;
}

static inline CrossEntropyScratch cross_entropy_scratch(void *base, int T, int H, int V, int chunk) {
    CrossEntropyScratch s;
    size_t at = 0;
    char *b = (char *)base;
    s.rows = (int *)cross_entropy_piece(b, &at, (size_t)T * sizeof(int));
    s.count = (int *)cross_entropy_piece(b, &at, sizeof(int));
    s.row_loss = (float *)cross_entropy_piece(b, &at, (size_t)T * sizeof(float));
    s.packed = (__nv_bfloat16 *)cross_entropy_piece(b, &at, (size_t)chunk * H * sizeof(__nv_bfloat16));
    s.logits = (float *)cross_entropy_piece(b, &at, (size_t)chunk * V * sizeof(float));
    s.bytes = at;
    return s;
}

static inline size_t cross_entropy_scratch_bytes(int T, int H, int V, int chunk) {
    return cross_entropy_scratch(NULL, T, H, V, chunk).bytes;
}

// loss: one double (device); dX: [T, H] or NULL; X: [T, H]; W: [V, H]; targets, weights: [T]
// (device); scratch: cross_entropy_scratch_bytes(T, H, V, chunk) bytes of device memory,
// 16-byte aligned (as cudaMalloc's are).
// Returns the number of trained tokens. Synchronises with the stream once (see above).
static inline int cross_entropy_forward_backward(const Matmul *mm, double *loss, __nv_bfloat16 *dX,
                                                 const __nv_bfloat16 *X, const __nv_bfloat16 *W,
                                                 const int32_t *targets, const float *weights, int T, int H, int V,
                                                 int chunk, float grad_scale, void *scratch, cudaStream_t stream) {
    if (T < 1 || H < 1 || V < 1 || chunk < 1) {
        fprintf(stderr, "error: cross_entropy: bad shape T %d H %d V %d chunk %d\n", T, H, V, chunk);
        exit(2);
    }
    if (!aligned16(scratch)) {  // its packed rows move as 16-byte loads and stores
        fprintf(stderr, "error: cross_entropy: the scratch buffer %p is not 16-byte aligned\n", scratch);
        exit(2);
    }
    CrossEntropyScratch s = cross_entropy_scratch(scratch, T, H, V, chunk);
    int n = 0;
    LAUNCH(cross_entropy_gather_kernel, 1, CROSS_ENTROPY_SCAN_THREADS, 0, stream, s.rows, s.count, weights, T);
    cuda_check(cudaMemcpyAsync(&n, s.count, sizeof(int), cudaMemcpyDeviceToHost, stream));
    if (dX) cuda_check(cudaMemsetAsync(dX, 0, (size_t)T * H * sizeof(__nv_bfloat16), stream));
    cuda_check(cudaStreamSynchronize(stream));

    bool packed16 = H % 8 == 0 && (uintptr_t)X % 16 == 0 && (uintptr_t)dX % 16 == 0;
    for (int first = 0; first < n; first += chunk) {
        int c = min(chunk, n - first);
        const int *rows = s.rows + first;
        if (packed16)
            LAUNCH(cross_entropy_copy_rows_kernel<float4>, c, CROSS_ENTROPY_COPY_THREADS, 0, stream, s.packed,
                   (const int *)NULL, X, rows, H);
        else
            LAUNCH(cross_entropy_copy_rows_kernel<__nv_bfloat16>, c, CROSS_ENTROPY_COPY_THREADS, 0, stream, s.packed,
                   (const int *)NULL, X, rows, H);
        matmul(mm, s.logits, MATMUL_F32, s.packed, 0, W, 1, c, V, H, 1.0f, 0.0f, stream);
        LAUNCH(cross_entropy_softmax_kernel, c, CROSS_ENTROPY_ROW_THREADS, 0, stream, s.logits, s.row_loss + first,
               rows, targets, weights, V, grad_scale, dX != NULL);
        if (!dX) continue;
        matmul_strided(mm, s.packed, MATMUL_BF16, H, (const __nv_bfloat16 *)s.logits, 0, 2 * (int64_t)V, W, 0, H, c,
                       H, V, 1.0f, 0.0f, stream);
        if (packed16)
            LAUNCH(cross_entropy_copy_rows_kernel<float4>, c, CROSS_ENTROPY_COPY_THREADS, 0, stream, dX, rows,
                   (const __nv_bfloat16 *)s.packed, (const int *)NULL, H);
        else
            LAUNCH(cross_entropy_copy_rows_kernel<__nv_bfloat16>, c, CROSS_ENTROPY_COPY_THREADS, 0, stream, dX, rows,
                   (const __nv_bfloat16 *)s.packed, (const int *)NULL, H);
    }
    LAUNCH(cross_entropy_sum_kernel, 1, CROSS_ENTROPY_SCAN_THREADS, 0, stream, loss, s.row_loss, n);
    return n;
}

// ---------------------------------------------------------------------------------------
// How far the result may be from the fp32 reference (train/cross_entropy.c given the same
// bf16 X and W as floats); the test and the bench check against these. Both compute the
// logits as fp32 sums of exact products: the reference within (H + 2)·2^-24·Σ_i|x_i·w_ci| of
// the exact value, the GPU within matmul_sum_error(H) of the same sum (tensor cores, see
// matmul.cuh), so
//   E = max_c (matmul_sum_error(H) + (H + 2)·2^-24)·Σ_i|x_i·w_ci|   bounds |z_gpu − z_ref|
// for every logit of the row.
// lse moves by at most E with the logits, plus the GPU's fp32 Σexp (V terms, each within
// 2 ulp: (V + 4)·2^-24 relative, the same absolute after the log) and the rounding of m + log
// (2^-23·(|lse| + 1)): dl = E + (V + 4)·2^-24 + 2^-23·(|lse| + 1).
//   loss_t:  weights[t]·(E + dl) (target logit and lse), plus 2^-23·|loss_t| (the subtraction
//            and the product by the weight, each rounded to fp32);
//   dz_c:    p_c·(e^(E + dl) − 1 + 2^-22) from the exponent, then the bf16 rounding, 2^-8·|dz_c|;
//   dX_i:    Σ_c |Δdz_c|·|W_ci| plus both sides' fp32 sums over V, (matmul_sum_error(V) +
//            (V + 2)·2^-24)·Σ_c|dz_c·W_ci|,
//            plus the final bf16 rounding, 2^-8·|dX_i|.

static inline double cross_entropy_lse_error(double E, int V, double lse) {
    return E + (V + 4) * 0x1p-24 + 0x1p-23 * (fabs(lse) + 1);
}
static inline double cross_entropy_loss_tolerance(double weight, double E, int V, double lse, double loss) {
    return fabs(weight) * (E + cross_entropy_lse_error(E, V, lse)) + 0x1p-23 * fabs(loss);
}
// The bound on |dz_gpu − dz_exact| for one logit with softmax probability p and exact dz.
static inline double cross_entropy_dz_error(double p, double dz, double E, int V, double lse, double scale) {
    double exponent = p * (expm1(E + cross_entropy_lse_error(E, V, lse)) + 0x1p-22) * fabs(scale);
    return exponent + (0x1p-8 + 0x1p-22) * (fabs(dz) + exponent);  // + the fp32 and bf16 roundings
}
// dX_i given Σ_c |Δdz_c|·|W_ci| (dz_errors) and Σ_c |dz_c·W_ci| (abs_products).
static inline double cross_entropy_dx_tolerance(double ref, double dz_errors, double abs_products, int V) {
    double sums = (matmul_sum_error(V) + (V + 2) * 0x1p-24) * abs_products;
    return 0x1p-8 * fabs(ref) + (1 + 0x1p-8) * (dz_errors + sums);
}

// cross_entropy_tolerances evaluates these for a whole input, with z, p and dz from a
// double-precision softmax of the same bf16 values (given as floats): it returns the bound
// on the loss sum and, when dx_tol is given, writes the bound of every dX element ([T, H];
// 0 for untrained tokens, whose dX must be exactly 0). Host code, O(trained · V · H).
static inline double cross_entropy_tolerances(const float *X, const float *W, const int32_t *targets,
                                              const float *weights, int T, int H, int V, float grad_scale,
                                              float *dx_tol) {
    double *z = (double *)malloc((size_t)V * sizeof(double)), *dz = (double *)malloc((size_t)V * sizeof(double));
    double *dz_err = (double *)malloc((size_t)V * sizeof(double));
    if (!z || !dz || !dz_err) {
        fprintf(stderr, "error: out of host memory for the cross-entropy tolerances\n");
        exit(2);
    }
    double loss_tol = 0;
    for (int t = 0; t < T; t++) {
        if (dx_tol) memset(dx_tol + (size_t)t * H, 0, (size_t)H * sizeof(float));
        if (weights[t] == 0.0f) continue;
        const float *x = X + (size_t)t * H;
        double E = 0, top = -INFINITY, sum = 0;
        for (int c = 0; c < V; c++) {
            double acc = 0, abs_acc = 0;
            for (int i = 0; i < H; i++) acc += (double)x[i] * W[(size_t)c * H + i], abs_acc += fabs((double)x[i] * W[(size_t)c * H + i]);
            z[c] = acc;
            E = fmax(E, (matmul_sum_error(H) + (H + 2) * 0x1p-24) * abs_acc);
            top = fmax(top, acc);
        }
        for (int c = 0; c < V; c++) sum += exp(z[c] - top);
        double lse = top + log(sum), scale = (double)grad_scale * weights[t];
        loss_tol += cross_entropy_loss_tolerance(weights[t], E, V, lse, weights[t] * (lse - z[targets[t]]));
        if (!dx_tol) continue;
        for (int c = 0; c < V; c++) {
            double p = exp(z[c] - lse);
            dz[c] = (p - (c == targets[t])) * scale;
            dz_err[c] = cross_entropy_dz_error(p, dz[c], E, V, lse, scale);
        }
        for (int i = 0; i < H; i++) {
            double ref = 0, errors = 0, abs_products = 0;
            for (int c = 0; c < V; c++) {
                double w = W[(size_t)c * H + i];
                ref += dz[c] * w, errors += dz_err[c] * fabs(w), abs_products += fabs(dz[c] * w);
            }
            dx_tol[(size_t)t * H + i] = (float)cross_entropy_dx_tolerance(ref, errors, abs_products, V);
        }
    }
    free(z), free(dz), free(dz_err);
    return loss_tol;
}

#endif
