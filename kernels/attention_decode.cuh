/*
 * attention_decode.cuh: attention of a few new query tokens per sequence against each
 * sequence's KV cache (decoding: chat, batch generation), split over the cache length for
 * long contexts, with a deterministic combine. The CPU counterpart is train/decode.c; the
 * tests compare with train/attention.c over the whole sequence.
 *
 * Shapes (bf16 unless said; b a sequence, i < nq its new tokens, h < Hq, kh < Hkv):
 *   q, out          [B, nq, Hq, D]   the new tokens' queries (after RoPE) and the output
 *   k_new, v_new    [B, nq, Hkv, D]  their keys (after RoPE) and values
 *   k_cache, v_cache [S, slots, Hkv, D]  what the sequences read before: position p in slot
 *                   p mod slots (Mistral's rolling buffer when slots is the window W;
 *                   otherwise slots must exceed every cached position)
 *   cache_index     [B] int32        sequence b's cache is k_cache[cache_index[b]] (NULL: b),
 *                   so the sequences of a step can be any of the S caches
 *   pos0            [B] int32        positions already cached: new token i is at pos0 + i
 * Query (b, i, h) at p = pos0[b] + i sees key positions j with j <= p and, with a window,
 * p - j <= W - 1; key j is k_new row j - pos0 when j >= pos0, else cache slot j mod slots.
 * The new keys are read from k_new, not from the cache, so that with a rolling buffer the
 * later new tokens' slots may be written (attention_decode_append, after this) over
 * positions the earlier new tokens still see. Query head h reads KV head h / (Hq / Hkv) in
 * place: nothing is copied per query head (GQA).
 *
 * Work: one block of 4 warps per (sequence, KV head, split of ATTD_SPLIT keys); its rows are
 * the G·nq queries of the KV head's G = Hq / Hkv query heads (at most ATTD_MAX_ROWS), so each
 * key and value is read from memory once for all of them. A warp takes 32-key tiles of the
 * split (keys and values copied to shared memory with cp.async, 16 bytes a copy): lane l
 * scores key l against every row (q pre-scaled by log2(e)/sqrt(D), fp32 fused
 * multiply-adds), then per row, with the warp's max and sum,
 *   m' = max(m, max_j s_j);  l = l·2^(m - m') + Σ_j 2^(s_j - m');  O = O·2^(m - m') + Σ_j 2^(s_j - m') v_j
 * (lane l holds D/32 consecutive elements of each row's O; p_j broadcast by shuffle; P is
 * never rounded to bf16). The 4 warps' (m, l, O) are merged in warp order in shared memory,
 * and the split's unnormalised partial goes to a float workspace. The combine kernel then
 * adds the splits of each row in split order, O = Σ_s 2^(m_s - M) O_s / Σ_s 2^(m_s - M) l_s
 * (M the largest m_s), and rounds to bf16: no atomics, the same bits on every run.
 * Splits: enough that ATTD_SPLIT·splits covers the most keys any sequence sees (max_keys,
 * the caller's bound); a split with no visible key leaves (−inf, 0, 0).
 *
 * Memory: a decoding step reads each visible key and value once (2·D·2 bytes each), the
 * queries and the workspace (4·(D + 2) bytes per row and split) being small beside them.
 * Shared memory: the scaled queries (ATTD_MAX_ROWS·D floats) and the warps' tiles (2·32
 * rows of D + 8 bf16 each: 16 bytes of padding put the 16-byte rows of a lane's reads in
 * distinct banks); at D = 128, 8 KiB + 68 KiB. The error bound against the fp32 reference
 * is at the end of this file. Not yet measured on a GPU (kernels/bench/attention_decode.cu).
 */
#ifndef PERSONA_ATTENTION_DECODE_CUH
#define PERSONA_ATTENTION_DECODE_CUH

#include <math.h>
#include <stdint.h>

#include "attention.cuh"
#include "common.cuh"
#include "ptx.cuh"

#define ATTD_THREADS 128   // 4 warps
#define ATTD_WARPS 4
#define ATTD_TILE 32       // keys a warp takes at a time (one a lane when scoring)
#define ATTD_SPLIT 256     // keys per block: 2 tiles per warp
#define ATTD_MAX_ROWS 16   // query rows per (sequence, KV head): (Hq / Hkv) · nq
#define ATTD_COMBINE_THREADS 128
#define ATTD_APPEND_THREADS 256

#ifdef CUDA_HOST_HARNESS
#define ATTD_UNROLL
#else
#define ATTD_UNROLL _Pragma("unroll")
#endif

__host__ __device__ constexpr int attd_row_stride(int D) { return D + 8; }  // bf16 elements of a tile row

__host__ __device__ constexpr size_t attd_smem(int D) {
    return (size_t)ATTD_MAX_ROWS * D * sizeof(float) + (size_t)ATTD_WARPS * 2 * ATTD_TILE * attd_row_stride(D) * 2;
}

// The first key position the queries of a sequence see (its first new token's window).
__device__ __forceinline__ int attd_first_key(int p0, int window) { return window > 0 && p0 - window + 1 > 0 ? p0 - window + 1 : 0; }

// (at least 1 block an SM, not ptxas's default target: at D = 96 that capped it at 128
// registers and spilled, where 143 hold everything; the shared memory allows 2 or 3 anyway)
template <int D>
__global__ void __launch_bounds__(ATTD_THREADS, 1)
    attention_decode_kernel(float *part_o, float *part_ml, const __nv_bfloat16 *q, const __nv_bfloat16 *k_new,
                            const __nv_bfloat16 *v_new, const __nv_bfloat16 *k_cache, const __nv_bfloat16 *v_cache,
                            const int32_t *cache_index, const int32_t *pos0, int nq, int Hq, int Hkv, int slots,
                            int window, int splits) {
    constexpr int E = D / 32, RS = attd_row_stride(D), CHUNKS = D / 8;  // O elements a lane; 16-byte chunks a row
    DYNAMIC_SHARED(unsigned char, smem);
    float *qs = (float *)smem;  // [rows][D]
    __nv_bfloat16 *tiles = (__nv_bfloat16 *)(qs + ATTD_MAX_ROWS * D);
    int b = blockIdx.x / Hkv, kh = blockIdx.x % Hkv, split = blockIdx.y, G = Hq / Hkv, rows = G * nq;
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, p0 = pos0[b], cb = cache_index ? cache_index[b] : b;
    int lo = attd_first_key(p0, window), hi = p0 + nq - 1;  // the keys any row of the block sees
    int k0 = lo + split * ATTD_SPLIT, k1 = min(hi + 1, k0 + ATTD_SPLIT);  // this split's keys [k0, k1)

    // rows: r = i·G + g is new token i of query head kh·G + g
    const float scale = kAttnLog2e / sqrtf((float)D);
    for (int e = threadIdx.x; e < rows * D; e += ATTD_THREADS) {
        int r = e / D, d = e % D, i = r / G, h = kh * G + r % G;
        qs[e] = __bfloat162float(q[(((size_t)b * nq + i) * Hq + h) * D + d]) * scale;
    }
    __syncthreads();

    float m[ATTD_MAX_ROWS], l[ATTD_MAX_ROWS], o[ATTD_MAX_ROWS][E];
    ATTD_UNROLL
    for (int r = 0; r < ATTD_MAX_ROWS; r++) {
        m[r] = -INFINITY, l[r] = 0.0f;
        ATTD_UNROLL
        for (int e = 0; e < E; e++) o[r][e] = 0.0f;
    }
    __nv_bfloat16 *kt = tiles + (size_t)warp * 2 * ATTD_TILE * RS, *vt = kt + ATTD_TILE * RS;
    for (int t0 = k0 + warp * ATTD_TILE; t0 < k1; t0 += ATTD_WARPS * ATTD_TILE) {
        // the tile's keys and values into shared memory (zeros past the split's end)
        for (int c = lane; c < ATTD_TILE * CHUNKS; c += 32) {
            int key = c / CHUNKS, part = c % CHUNKS, j = t0 + key;
            __nv_bfloat16 *kd = kt + key * RS + part * 8, *vd = vt + key * RS + part * 8;
            if (j < k1) {
                size_t row = j >= p0 ? ((size_t)b * nq + (j - p0)) * Hkv + kh : ((size_t)cb * slots + j % slots) * Hkv + kh;
                const __nv_bfloat16 *ks = (j >= p0 ? k_new : k_cache) + row * D + part * 8;
                const __nv_bfloat16 *vs = (j >= p0 ? v_new : v_cache) + row * D + part * 8;
                cp_async16_cg(kd, ks);
                cp_async16_cg(vd, vs);
            } else {
                *(uint4 *)kd = uint4{0, 0, 0, 0};
                *(uint4 *)vd = uint4{0, 0, 0, 0};
            }
        }
        cp_async_commit();
        cp_async_wait<0>();
        __syncwarp();
        // lane's key: its scores against every row
        int j = t0 + lane;
        float s[ATTD_MAX_ROWS];
        ATTD_UNROLL
        for (int r = 0; r < ATTD_MAX_ROWS; r++) s[r] = 0.0f;
        for (int part = 0; part < CHUNKS; part++) {
            Bf16Pack<8> kp = *(const Bf16Pack<8> *)(kt + lane * RS + part * 8);
            float kf[8];
            ATTD_UNROLL
            for (int x = 0; x < 8; x++) kf[x] = __bfloat162float(kp.v[x]);
            ATTD_UNROLL
            for (int r = 0; r < ATTD_MAX_ROWS; r++)
                if (r < rows) {
                    const float *qr = qs + r * D + part * 8;
                    ATTD_UNROLL
                    for (int x = 0; x < 8; x++) s[r] = fmaf(qr[x], kf[x], s[r]);
                }
        }
        // per row: mask, online softmax, O += P V
        ATTD_UNROLL
        for (int r = 0; r < ATTD_MAX_ROWS; r++) {
            if (r >= rows) continue;  // (the same for the whole warp)
            int p = p0 + r / G;
            bool visible = j < k1 && j <= p && (window <= 0 || p - j <= window - 1);
            float sr = visible ? s[r] : -INFINITY, mx = sr;
            for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            float m_new = fmaxf(m[r], mx);
            if (m_new == -INFINITY) continue;  // nothing visible to this row yet
            float alpha = exp2f(m[r] - m_new), pr = visible ? exp2f(sr - m_new) : 0.0f;
            l[r] = l[r] * alpha + warp_sum(pr);
            m[r] = m_new;
            ATTD_UNROLL
            for (int e = 0; e < E; e++) o[r][e] *= alpha;
            for (int key = 0; key < ATTD_TILE; key++) {
                float pk = __shfl_sync(0xffffffffu, pr, key);
                const __nv_bfloat16 *vk = vt + key * RS + lane * E;
                ATTD_UNROLL
                for (int e = 0; e < E; e++) o[r][e] = fmaf(pk, __bfloat162float(vk[e]), o[r][e]);
            }
        }
        __syncwarp();  // before the next tile overwrites this one
    }

    // the warps' states into shared memory (over the tiles, no longer needed), merged in warp order
    __syncthreads();
    float *ml = (float *)tiles, *os = ml + ATTD_WARPS * ATTD_MAX_ROWS * 2;  // [warp][row][2], [warp][row][D]
    ATTD_UNROLL
    for (int r = 0; r < ATTD_MAX_ROWS; r++) {
        if (r >= rows) continue;
        if (lane == 0) ml[(warp * ATTD_MAX_ROWS + r) * 2] = m[r], ml[(warp * ATTD_MAX_ROWS + r) * 2 + 1] = l[r];
        ATTD_UNROLL
        for (int e = 0; e < E; e++) os[((size_t)warp * ATTD_MAX_ROWS + r) * D + lane * E + e] = o[r][e];
    }
    __syncthreads();
    size_t part = ((size_t)blockIdx.x * splits + split) * rows;  // this split's first row in the workspace
    for (int x = threadIdx.x; x < rows * D; x += ATTD_THREADS) {
        int r = x / D, d = x % D;
        float M = -INFINITY, L = 0.0f, O = 0.0f;
        for (int w = 0; w < ATTD_WARPS; w++) M = fmaxf(M, ml[(w * ATTD_MAX_ROWS + r) * 2]);
        if (M != -INFINITY)
            for (int w = 0; w < ATTD_WARPS; w++) {
                float c = exp2f(ml[(w * ATTD_MAX_ROWS + r) * 2] - M);  // 0 for a warp that saw nothing
                L += c * ml[(w * ATTD_MAX_ROWS + r) * 2 + 1];
                O += c * os[((size_t)w * ATTD_MAX_ROWS + r) * D + d];
            }
        part_o[(part + r) * D + d] = O;
        if (d == 0) part_ml[(part + r) * 2] = M, part_ml[(part + r) * 2 + 1] = L;
    }
}

// out = Σ_s 2^(m_s - M) O_s / Σ_s 2^(m_s - M) l_s over the splits, in order; one block per
// (sequence, KV head), threads over its rows' elements.
__global__ void __launch_bounds__(ATTD_COMBINE_THREADS)
    attention_decode_combine_kernel(__nv_bfloat16 *out, const float *part_o, const float *part_ml, int nq, int Hq,
                                    int Hkv, int D, int splits) {
    int b = blockIdx.x / Hkv, kh = blockIdx.x % Hkv, G = Hq / Hkv, rows = G * nq;
    for (int x = threadIdx.x; x < rows * D; x += ATTD_COMBINE_THREADS) {
        int r = x / D, d = x % D, i = r / G, h = kh * G + r % G;
        float M = -INFINITY, L = 0.0f, O = 0.0f;
        for (int s = 0; s < splits; s++) M = fmaxf(M, part_ml[(((size_t)blockIdx.x * splits + s) * rows + r) * 2]);
        for (int s = 0; s < splits; s++) {
            size_t pr = ((size_t)blockIdx.x * splits + s) * rows + r;
            float c = exp2f(part_ml[pr * 2] - M);
            L += c * part_ml[pr * 2 + 1];
            O += c * part_o[pr * D + d];
        }
        out[(((size_t)b * nq + i) * Hq + h) * D + d] = __float2bfloat16(O / L);
    }
}

// The new tokens' keys and values into their cache slots: (b, i) to slot (pos0[b] + i) mod
// slots of cache cache_index[b] (NULL: b). One thread per 8 elements (16 bytes).
__global__ void __launch_bounds__(ATTD_APPEND_THREADS)
    attention_decode_append_kernel(__nv_bfloat16 *k_cache, __nv_bfloat16 *v_cache, const __nv_bfloat16 *k_new,
                                   const __nv_bfloat16 *v_new, const int32_t *cache_index, const int32_t *pos0, int B,
                                   int nq, int kv_dim, int slots) {
    size_t packs = (size_t)B * nq * kv_dim / 8, x = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (x >= packs) return;
    size_t e = x * 8, row = e / kv_dim;  // row = b·nq + i
    int b = (int)(row / nq), i = (int)(row % nq);
    size_t cb = cache_index ? (size_t)cache_index[b] : (size_t)b;
    size_t dst = (cb * slots + (pos0[b] + i) % slots) * kv_dim + e % kv_dim;
    *(Bf16Pack<8> *)(k_cache + dst) = *(const Bf16Pack<8> *)(k_new + e);
    *(Bf16Pack<8> *)(v_cache + dst) = *(const Bf16Pack<8> *)(v_new + e);
}

// ---------------------------------------------------------------------------------------
// host launchers

static inline void attention_decode_require(bool ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "error: attention_decode: %s\n", what);
        exit(1);
    }
}

static inline int attention_decode_splits(int max_keys) { return CEIL_DIV(max_keys > 0 ? max_keys : 1, ATTD_SPLIT); }

// Floats of workspace attention_decode needs for B sequences whose queries see at most
// max_keys keys each.
static inline size_t attention_decode_workspace(int B, int nq, int Hq, int D, int max_keys) {
    return (size_t)B * Hq * nq * attention_decode_splits(max_keys) * (D + 2);
}

template <int D>
inline void attention_decode_d(__nv_bfloat16 *out, const __nv_bfloat16 *q, const __nv_bfloat16 *k_new,
                               const __nv_bfloat16 *v_new, const __nv_bfloat16 *k_cache,
                               const __nv_bfloat16 *v_cache, const int32_t *cache_index, const int32_t *pos0, int B,
                               int nq, int Hq, int Hkv, int slots, int window, int max_keys, float *workspace,
                               cudaStream_t stream) {
    int splits = attention_decode_splits(max_keys), rows = Hq / Hkv * nq;
    float *part_o = workspace, *part_ml = workspace + (size_t)B * Hkv * splits * rows * D;
    size_t smem = attd_smem(D);
    cuda_check(cudaFuncSetAttribute(attention_decode_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    LAUNCH(attention_decode_kernel<D>, dim3(B * Hkv, splits), ATTD_THREADS, smem, stream, part_o, part_ml, q, k_new,
           v_new, k_cache, v_cache, cache_index, pos0, nq, Hq, Hkv, slots, window, splits);
    LAUNCH(attention_decode_combine_kernel, B * Hkv, ATTD_COMBINE_THREADS, 0, stream, out, part_o, part_ml, nq, Hq, Hkv,
           D, splits);
}

// out = attention of the new queries against their sequences' caches and new keys (see the
// top of the file). max_keys bounds the keys any sequence's queries see together
// (pos0 + nq, or W + nq - 1 with a window); workspace holds attention_decode_workspace
// floats. Every pointer 16-byte aligned; D 64, 96 or 128; (Hq / Hkv)·nq at most 16.
inline void attention_decode(__nv_bfloat16 *out, const __nv_bfloat16 *q, const __nv_bfloat16 *k_new,
                             const __nv_bfloat16 *v_new, const __nv_bfloat16 *k_cache, const __nv_bfloat16 *v_cache,
                             const int32_t *cache_index, const int32_t *pos0, int B, int nq, int Hq, int Hkv, int D,
                             int slots, int window, int max_keys, float *workspace, cudaStream_t stream) {
    attention_decode_require(D == 64 || D == 96 || D == 128, "head_dim must be 64, 96 or 128");
    attention_decode_require(Hkv > 0 && Hq % Hkv == 0, "the KV heads must divide the query heads");
    attention_decode_require(nq >= 1 && Hq / Hkv * nq <= ATTD_MAX_ROWS,
                             "(query heads / KV heads) x new tokens must be at most 16");
    attention_decode_require(slots >= 1 && (window <= 0 || slots >= window), "a rolling cache needs window slots");
    const void *ptrs[] = {out, q, k_new, v_new, k_cache, v_cache, workspace};
    for (const void *p : ptrs) attention_decode_require(aligned16(p), "every tensor must be 16-byte aligned");
    if (B == 0) return;
#define ATTD_CALL(d)                                                                                               \
    attention_decode_d<d>(out, q, k_new, v_new, k_cache, v_cache, cache_index, pos0, B, nq, Hq, Hkv, slots, window, \
                          max_keys, workspace, stream)
    if (D == 64) ATTD_CALL(64);
    if (D == 96) ATTD_CALL(96);
    if (D == 128) ATTD_CALL(128);
#undef ATTD_CALL
}

// The new keys and values into their slots (after attention_decode of the same step). Two
// new tokens of one sequence must not share a slot (nq <= slots).
inline void attention_decode_append(__nv_bfloat16 *k_cache, __nv_bfloat16 *v_cache, const __nv_bfloat16 *k_new,
                                    const __nv_bfloat16 *v_new, const int32_t *cache_index, const int32_t *pos0,
                                    int B, int nq, int kv_dim, int slots, cudaStream_t stream) {
    attention_decode_require(kv_dim % 8 == 0, "KV heads x head_dim must be a multiple of 8");
    attention_decode_require(nq <= slots, "more new tokens than cache slots");
    const void *ptrs[] = {k_cache, v_cache, k_new, v_new};
    for (const void *p : ptrs) attention_decode_require(aligned16(p), "every tensor must be 16-byte aligned");
    size_t packs = (size_t)B * nq * kv_dim / 8;
    if (packs == 0) return;
    LAUNCH(attention_decode_append_kernel, (unsigned)CEIL_DIV(packs, (size_t)ATTD_APPEND_THREADS), ATTD_APPEND_THREADS,
           0, stream, k_cache, v_cache, k_new, v_new, cache_index, pos0, B, nq, kv_dim, slots);
}

// ---------------------------------------------------------------------------------------
// How far the kernel may be from the fp32 reference (train/attention.c over the whole
// sequence), given the same bf16 inputs; the sources of difference are those of
// kernels/attention.cuh's forward bound, less the bf16 rounding of P (never rounded here):
// a score differs by δ <= 2D·2^-23·Σ|q_d k_d|/sqrt(D) (both sums in fp32; the scaling of q
// by log2(e)/sqrt(D) adds 2^-24 relative, inside that), a probability by 2.02·δmax·p; the
// exp2f, the rescalings of the online softmax and of the two merges (warps, splits), and
// summing n terms in any order: (n + 16)·2^-22 of the magnitudes; the output's bf16
// rounding: u = 2^-8 of it. Per output element, A_d = Σ_j p_j |v_jd|:
//   |out - ref| <= u·|ref| + (1 + u)·(2.02·δmax + (n + 16)·2^-22)·A_d
// attention_decode_bounds gives the exact (double) output of row (i, h) of a whole sequence
// [T, H, D] and that tolerance.
static inline void attention_decode_bounds(double *out, double *tol, const float *q, const float *k, const float *v, int i,
                                    int h, int Hq, int Hkv, int D, int window) {
    double *s = (double *)malloc((size_t)(i + 1) * sizeof(double)), *abs_s = (double *)malloc((size_t)(i + 1) * sizeof(double));
    double *A = (double *)calloc((size_t)D, sizeof(double));
    int j0, n = attention_row_scores(s, abs_s, q, k, NULL, i, h, Hq, Hkv, D, window, &j0), kh = h / (Hq / Hkv);
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < n; j++) mx = fmax(mx, s[j]);
    for (int j = 0; j < n; j++) sum += exp(s[j] - mx);
    for (int d = 0; d < D; d++) out[d] = 0;
    for (int j = 0; j < n; j++) {
        double p = exp(s[j] - mx) / sum;
        const float *vj = v + ((size_t)(j0 + j) * Hkv + kh) * D;
        for (int d = 0; d < D; d++) out[d] += p * vj[d], A[d] += p * fabs((double)vj[d]);
    }
    double slack = 2.02 * attention_delta_max(abs_s, n, D) + (n + 16) * 0x1p-22;
    for (int d = 0; d < D; d++) tol[d] = kAttnU * fabs(out[d]) + (1 + kAttnU) * slack * A[d];
    free(s), free(abs_s), free(A);
}

#endif
