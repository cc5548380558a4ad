/*
 * attention.cuh: causal grouped-query attention with an optional sliding window over packed
 * conversations, forward and backward, FlashAttention-2 style on tensor cores
 * (mma.sync m16n8k16 bf16 -> fp32, ldmatrix, cp.async double buffering; kernels/ptx.cuh).
 * The CPU reference is train/attention.c (fp32); the error bounds against it are at the end.
 *
 * Shapes (row-major, bf16 unless said): q, out, dout, dq [T, Hq, D]; k, v, dk, dv
 * [T, Hkv, D]; lse, delta [T, Hq] fp32; seg [T] int32, the conversation id of each token
 * (the same convention as train/attention.c: a conversation's tokens are contiguous and two
 * neighbouring conversations have different ids; NULL = one conversation). Query head h
 * reads KV head h / (Hq / Hkv), in place (no copies of K/V). D is 64, 96 or 128.
 * Query i sees key j iff 0 <= i - j <= W - 1 (W = window; W <= 0: no window) and
 * seg[i] == seg[j].
 *
 * Forward (one block of 4 warps per 128 queries of one head; each warp owns 32 query rows,
 * so that each K or V fragment it loads from shared memory feeds two mmas):
 *   for each 32-key tile that the mask touches, from the diagonal down:
 *     S = Q Kᵀ (fp32, mma), x = S · log2(e)/sqrt(D), masked entries -inf
 *     m' = max(m, rowmax x); O ·= 2^(m - m'); l = l·2^(m - m') + rowsum 2^(x - m')
 *     O += bf16(2^(x - m')) V (P rounded to bf16 for the mma, l summed from the fp32 P)
 *   out = bf16(O / l); lse = (m + log2 l) · ln 2 (natural log, as train/attention.c).
 * Backward, from P = exp(S/sqrt(D) - lse) recomputed tile by tile, delta = rowsum(dO ∘ O):
 *   dS = P ∘ (dO Vᵀ - delta);  dV = Pᵀ dO;  dK = dSᵀ Q / sqrt(D);  dQ = dS K / sqrt(D)
 *   - attention_delta_kernel: delta, one warp per (token, head), fp32.
 *   - attention_dkdv_kernel: one block per 64 keys of one KV head; each warp owns 16 keys
 *     and keeps dK, dV for them in registers while it walks every query head of the group
 *     and every 32-query tile the mask touches, so the GQA sum needs no atomics.
 *   - attention_dq_kernel: one block per 128 queries of one head (32 per warp), walking
 *     32-key tiles as the forward does. It recomputes S and dO Vᵀ: 7 matrix products per
 *     tile pair in all instead of FlashAttention-2's 5, in exchange for no atomics at all.
 *   Every output element is written by one thread in a fixed order of additions, so the
 *   backward is deterministic (the same bits on every run); there is no atomic variant.
 *
 * Tile skipping: a block visits exactly the tiles that hold at least one visible (query,
 * key) pair, found from the window and from seg at the tile edges (contiguous conversations:
 * the key tile just below a query tile's first query i0 is still needed iff its last key is
 * in i0's conversation and within the window of i0), so the work is O(T · min(T, W)).
 * tile_count, when not NULL, gets one atomicAdd per (query tile, key tile) pair computed
 * (forward: 128 queries x 32 keys; backward: the dK/dV kernel's 32 queries x 64 keys, once
 * per query head): a debug counter for the tests, NULL in production.
 *
 * Memory: tiles live in shared memory with rows padded by 16 bytes (row stride D + 8
 * elements), so the 8 row addresses of an ldmatrix fall in 8 different bank quads. K/V (or
 * Q/dO) tiles are fetched with cp.async.cg one tile ahead of the one being computed; rows
 * beyond T are zero-filled so that masked products stay finite. All pointers must be
 * 16-byte aligned (checked by the launchers). At D = 128: forward 68 KiB of shared memory
 * a block, dK/dV 69 KiB, dQ 103 KiB; 128 threads of at most 255 registers, no local
 * memory (test_cuda_build.sh checks): 2 blocks an SM on sm_90, and on sm_80 but for dQ (1).
 * Speed: written for H100 targets of >= 300 TFLOP/s forward and >= 250 backward (unmasked
 * work; kernels/bench/attention.cu); not yet measured on a GPU.
 */
#ifndef PERSONA_ATTENTION_CUH
#define PERSONA_ATTENTION_CUH

#include <math.h>
#include <stdint.h>

#include "common.cuh"
#include "ptx.cuh"

#define ATTN_THREADS 128  // 4 warps
#define ATTN_BQ_FWD 128   // queries per forward block (32 per warp: each K/V fragment feeds 2 mmas)
#define ATTN_FWD_MB 2     // 16-row blocks per warp in the forward
#define ATTN_BK_FWD 32    // keys per forward tile (S for 32 rows x 32 keys: 32 registers a lane)
#define ATTN_BQ_DQ 128    // queries per dQ block (32 per warp, as the forward)
#define ATTN_DQ_MB 2      // 16-row blocks per warp in the dQ kernel
#define ATTN_BK_DQ 32     // keys per dQ tile
#define ATTN_BK 64        // keys per dK/dV block (16 per warp)
#define ATTN_BQ_DKDV 32   // queries per tile in the dK/dV kernel

static const float kAttnLog2e = 1.4426950408889634f;

// ---------------------------------------------------------------------------------------
// Shared pieces of the three tile kernels

// Is key j visible from query i (i < T)? seg_i is seg[i].
__device__ __forceinline__ bool attn_visible(int i, int j, int T, int window, const int32_t *seg, int seg_i) {
    return j <= i && j < T && (window <= 0 || i - j <= window - 1) && (!seg || seg[j] == seg_i);
}

__device__ __forceinline__ int attn_seg(const int32_t *seg, int i) { return seg ? seg[i] : 0; }

// Is every (query, key) pair of queries [i0, i_last] and keys [j0, j_last] visible (below
// the diagonal, inside the window, one conversation)? Then the tile needs no mask.
__device__ __forceinline__ bool attn_tile_whole(int i0, int i_last, int j0, int j_last, int window,
                                                const int32_t *seg) {
    return j_last <= i0 && (window <= 0 || i_last - j0 <= window - 1) && attn_seg(seg, j0) == attn_seg(seg, i_last);
}

// The lowest key tile (of BK keys) with a key visible from a query tile starting at i0.
// Tiles from the one holding i0 up to the diagonal always qualify (each holds a key that a
// query of the tile sees: itself); below, the tile whose last key is in i0's conversation
// and window does, and the first one that is not ends the run (contiguous conversations).
template <int BK>
__device__ inline int attn_first_key_tile(int i0, int window, const int32_t *seg) {
    int lo = window > 0 ? max(0, i0 - window + 1) / BK : 0, kt = i0 / BK - 1;
    int s0 = attn_seg(seg, i0);
    while (kt >= lo && attn_seg(seg, kt * BK + BK - 1) == s0) kt--;
    return kt + 1;
}

// The highest query tile (of BQ queries) that sees a key of the tile [j0, j1], mirroring
// attn_first_key_tile: the query tile's first query must be in j1's conversation and
// within the window of j1.
template <int BQ>
__device__ inline int attn_last_query_tile(int j1, int T, int window, const int32_t *seg) {
    int hi = (window > 0 ? min(T - 1, j1 + window - 1) : T - 1) / BQ, qt = j1 / BQ + 1;
    int s1 = attn_seg(seg, j1);
    while (qt <= hi && attn_seg(seg, qt * BQ) == s1) qt++;
    return qt - 1;
}

// Copies rows [t0, t0 + ROWS) of head h of a [T, H, D] tensor into shared memory (row
// stride D + 8) with cp.async (the caller commits); rows at or beyond T are zeroed.
template <int D, int ROWS>
__device__ inline void attn_load_tile(__nv_bfloat16 *dst, const __nv_bfloat16 *src, int t0, int T, int H, int h) {
    constexpr int CHUNKS = D / 8;  // 16-byte pieces per row
    for (int c = threadIdx.x; c < ROWS * CHUNKS; c += ATTN_THREADS) {
        int r = c / CHUNKS, col = (c % CHUNKS) * 8;
        __nv_bfloat16 *d = dst + r * (D + 8) + col;
        if (t0 + r < T)
            cp_async16_cg(d, src + ((size_t)(t0 + r) * H + h) * D + col);
        else
            *(uint4 *)d = uint4{0, 0, 0, 0};
    }
}

// The K/V double buffering of the forward and dQ kernels, which walk the key tiles down
// from the last: waits for tile `it` (at key j0, in buffer it % 2 of sk and sv) while the
// next one down is fetched into the other buffer, then syncs the block.
template <int D, int BK>
__device__ __forceinline__ void attn_kv_tile_ready(__nv_bfloat16 *sk, __nv_bfloat16 *sv, const __nv_bfloat16 *k,
                                                   const __nv_bfloat16 *v, int it, int n_tiles, int j0, int T,
                                                   int Hkv, int kh) {
    if (it + 1 < n_tiles) {
        int next = (1 - it % 2) * BK * (D + 8);
        attn_load_tile<D, BK>(sk + next, k, j0 - BK, T, Hkv, kh);
        attn_load_tile<D, BK>(sv + next, v, j0 - BK, T, Hkv, kh);
        cp_async_commit();
        cp_async_wait<1>();
    } else {
        cp_async_wait<0>();
    }
    __syncthreads();
}

// acc[MB][N/8][4] += A · Bᵀ for one warp: A is 16·MB x D (rows at a), B is N x D (rows at
// b), both bf16 in shared memory with row stride D + 8. acc holds the result as mma C
// fragments of MB blocks of 16 rows: acc[mb][n][0..1] = row 16mb + g, columns 8n + 2t, +1;
// acc[mb][n][2..3] = row 16mb + g + 8. Each B fragment feeds MB mmas.
template <int D, int N, int MB>
__device__ inline void attn_mma_abt(float acc[][N / 8][4], const __nv_bfloat16 *a, const __nv_bfloat16 *b) {
    constexpr int SD = D + 8;
    int lane = threadIdx.x % 32, r = lane % 8, j = lane / 8;
    for (int kk = 0; kk < D / 16; kk++) {
        unsigned af[MB][4];
        for (int mb = 0; mb < MB; mb++) ldmatrix_x4(af[mb], a + (mb * 16 + lane % 16) * SD + kk * 16 + (lane / 16) * 8);
        for (int np = 0; np < N / 16; np++) {
            // matrices: rows 16np..+7 then +8..+15 of B, each at columns kk·16 and +8
            unsigned bf[4];
            ldmatrix_x4(bf, b + (np * 16 + (j / 2) * 8 + r) * SD + kk * 16 + (j % 2) * 8);
            for (int mb = 0; mb < MB; mb++) {
                mma_m16n8k16_bf16(acc[mb][2 * np], af[mb], bf, acc[mb][2 * np]);
                mma_m16n8k16_bf16(acc[mb][2 * np + 1], af[mb], bf + 2, acc[mb][2 * np + 1]);
            }
        }
    }
}

// acc[MB][D/8][4] += bf16(P) · B for one warp: P is 16·MB x N in mma C fragments (as
// attn_mma_abt leaves them, fp32, rounded to bf16 here), B is N x D (rows at b, stride D + 8).
template <int D, int N, int MB>
__device__ inline void attn_mma_pb(float acc[][D / 8][4], const float p[][N / 8][4], const __nv_bfloat16 *b) {
    constexpr int SD = D + 8;
    int lane = threadIdx.x % 32, r = lane % 8, j = lane / 8;
    for (int ks = 0; ks < N / 16; ks++) {
        // The C fragments of columns 16ks..+15 are the A fragment of that k-step.
        unsigned af[MB][4];
        for (int mb = 0; mb < MB; mb++) {
            const float(*c)[4] = p[mb];
            af[mb][0] = pack_bf16x2(c[2 * ks][0], c[2 * ks][1]);
            af[mb][1] = pack_bf16x2(c[2 * ks][2], c[2 * ks][3]);
            af[mb][2] = pack_bf16x2(c[2 * ks + 1][0], c[2 * ks + 1][1]);
            af[mb][3] = pack_bf16x2(c[2 * ks + 1][2], c[2 * ks + 1][3]);
        }
        for (int dp = 0; dp < D / 16; dp++) {
            // transposed matrices: rows 16ks..+7 then +8..+15 of B, at columns 16dp and +8
            unsigned bf[4];
            ldmatrix_x4_trans(bf, b + (ks * 16 + (j % 2) * 8 + r) * SD + dp * 16 + (j / 2) * 8);
            for (int mb = 0; mb < MB; mb++) {
                mma_m16n8k16_bf16(acc[mb][2 * dp], af[mb], bf, acc[mb][2 * dp]);
                mma_m16n8k16_bf16(acc[mb][2 * dp + 1], af[mb], bf + 2, acc[mb][2 * dp + 1]);
            }
        }
    }
}

// The sum of v over the 4 lanes of a quad (the lanes holding one row of a C fragment).
__device__ __forceinline__ float attn_quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ __forceinline__ float attn_quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

// Writes a warp's 16 x D fp32 C fragments as bf16 rows t0..t0+15 (those below T) of head h
// of a [T, H, D] tensor, row t0 + g times scale0 and row t0 + g + 8 times scale1.
template <int D>
__device__ inline void attn_store_rows(__nv_bfloat16 *dst, const float acc[][4], float scale0, float scale1, int t0,
                                       int T, int H, int h) {
    int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    for (int half = 0; half < 2; half++) {
        int row = t0 + g + 8 * half;
        float s = half ? scale1 : scale0;
        if (row >= T) continue;
        __nv_bfloat16 *out = dst + ((size_t)row * H + h) * D + 2 * t;
        for (int n = 0; n < D / 8; n++)
            *(unsigned *)(out + 8 * n) = pack_bf16x2(acc[n][2 * half] * s, acc[n][2 * half + 1] * s);
    }
}

// ---------------------------------------------------------------------------------------
// Forward

template <int D>
__global__ void __launch_bounds__(ATTN_THREADS)
    attention_forward_kernel(__nv_bfloat16 *out, float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                             const __nv_bfloat16 *v, const int32_t *seg, int T, int Hq, int Hkv, int window,
                             int *tile_count) {
    constexpr int SD = D + 8, BQ = ATTN_BQ_FWD, BK = ATTN_BK_FWD, MB = ATTN_FWD_MB;
    DYNAMIC_SHARED(__nv_bfloat16, smem);
    __nv_bfloat16 *sq = smem, *sk = sq + BQ * SD, *sv = sk + 2 * BK * SD;  // K, V: 2 buffers each
    int qt = gridDim.x - 1 - blockIdx.x;  // the longest rows first
    int h = blockIdx.y, kh = h / (Hq / Hkv);
    int i0 = qt * BQ, i_last = min(i0 + BQ, T) - 1;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    int w0 = i0 + warp * 16 * MB;  // the warp's first row; a lane's rows are w0 + 8r + g, r < 2·MB
    int kt_hi = i_last / BK, kt_lo = attn_first_key_tile<BK>(i0, window, seg);
    int n_tiles = kt_hi - kt_lo + 1;
    const float scale_log2 = kAttnLog2e / sqrtf((float)D);

    attn_load_tile<D, BQ>(sq, q, i0, T, Hq, h);
    attn_load_tile<D, BK>(sk, k, kt_hi * BK, T, Hkv, kh);
    attn_load_tile<D, BK>(sv, v, kt_hi * BK, T, Hkv, kh);
    cp_async_commit();

    // Row r of the lane (r = 2mb + half) is C-fragment element (mb, 2·half + e % 2).
    float o[MB][D / 8][4] = {}, m[2 * MB], l[2 * MB];
    for (int r = 0; r < 2 * MB; r++) m[r] = -INFINITY, l[r] = 0.0f;
    for (int it = 0; it < n_tiles; it++) {
        int kt = kt_hi - it, j0 = kt * BK, buf = it % 2;
        // counted before the barrier in attn_kv_tile_ready, so the warp is converged again
        // when the .aligned ldmatrix/mma below run (no divergent branch right before them)
        if (tile_count && threadIdx.x == 0) atomicAdd(tile_count, 1);
        attn_kv_tile_ready<D, BK>(sk, sv, k, v, it, n_tiles, j0, T, Hkv, kh);

        float s[MB][BK / 8][4] = {};
        attn_mma_abt<D, BK, MB>(s, sq + warp * 16 * MB * SD, sk + buf * BK * SD);
        bool whole = attn_tile_whole(i0, i_last, j0, j0 + BK - 1, window, seg);
        float tile_max[2 * MB];
        for (int r = 0; r < 2 * MB; r++) tile_max[r] = -INFINITY;
        for (int c = 0; c < MB * BK / 8; c++)  // (mb, n) as one loop, which nvcc unrolls
            for (int e = 0; e < 4; e++) {
                int mb = c / (BK / 8), n = c % (BK / 8), r = 2 * mb + e / 2;
                int i = w0 + 8 * r + g, j = j0 + 8 * n + 2 * t + e % 2;
                float x = s[mb][n][e] * scale_log2;
                if (!whole && !attn_visible(i, j, T, window, seg, attn_seg(seg, min(i, T - 1)))) x = -INFINITY;
                s[mb][n][e] = x;
                tile_max[r] = fmaxf(tile_max[r], x);
            }
        float base[2 * MB];  // the new running maximum, 0 while a row has seen nothing (no -inf - -inf)
        for (int r = 0; r < 2 * MB; r++) {
            float m_new = fmaxf(m[r], attn_quad_max(tile_max[r]));
            base[r] = m_new == -INFINITY ? 0.0f : m_new;
            float alpha = exp2f(m[r] - base[r]);
            m[r] = m_new;
            l[r] *= alpha;
            for (int n = 0; n < D / 8; n++) o[r / 2][n][2 * (r % 2)] *= alpha, o[r / 2][n][2 * (r % 2) + 1] *= alpha;
        }
        for (int mb = 0; mb < MB; mb++)
            for (int n = 0; n < BK / 8; n++)
                for (int e = 0; e < 4; e++) {
                    int r = 2 * mb + e / 2;
                    s[mb][n][e] = exp2f(s[mb][n][e] - base[r]);
                    l[r] += s[mb][n][e];
                }
        attn_mma_pb<D, BK, MB>(o, s, sv + buf * BK * SD);
        __syncthreads();  // before the next iteration refills this buffer
    }

    float inv[2 * MB];
    for (int r = 0; r < 2 * MB; r++) {
        float sum = attn_quad_sum(l[r]);
        inv[r] = 1.0f / sum;
        int i = w0 + 8 * r + g;
        if (t == 0 && i < T) lse[(size_t)i * Hq + h] = (m[r] + log2f(sum)) / kAttnLog2e;
    }
    for (int mb = 0; mb < MB; mb++) attn_store_rows<D>(out, o[mb], inv[2 * mb], inv[2 * mb + 1], w0 + 16 * mb, T, Hq, h);
}

// ---------------------------------------------------------------------------------------
// Backward

// delta[r] = Σ_d dout[r][d] · out[r][d] in fp32, one warp per row r of [T · Hq, D].
__global__ void __launch_bounds__(ATTN_THREADS)
    attention_delta_kernel(float *delta, const __nv_bfloat16 *out, const __nv_bfloat16 *dout, int rows, int D) {
    int r = blockIdx.x * (ATTN_THREADS / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= rows) return;  // a whole warp leaves together
    float sum = 0.0f;
    for (int d = lane; d < D; d += 32)
        sum += (float)out[(size_t)r * D + d] * (float)dout[(size_t)r * D + d];
    sum = warp_sum(sum);
    if (lane == 0) delta[r] = sum;
}

// P (or 0 where masked) and dS = P ∘ (dP - delta) in place of S and dP, for a warp's
// 16·MB x N tile (C fragments as attn_mma_abt leaves them) of rows row0 + 16mb + g (+8),
// columns col0 + 8n + 2t (+1); which of row / column is the query is given by
// queries_are_rows; whole: no mask needed. lse2 = lse · log2(e) and delta per query,
// indexed by the query's position in its tile (i - q0).
template <int N, int MB>
__device__ inline void attn_probabilities(float s[][N / 8][4], float dp[][N / 8][4], bool queries_are_rows,
                                          bool whole, int row0, int col0, const float *lse2, const float *delta,
                                          int q0, int T, int window, const int32_t *seg, float scale_log2) {
    int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
    for (int c = 0; c < MB * N / 8; c++)  // (mb, n) as one loop, which nvcc unrolls
        for (int e = 0; e < 4; e++) {
            int mb = c / (N / 8), n = c % (N / 8);
            int r = row0 + 16 * mb + g + 8 * (e / 2), col = col0 + 8 * n + 2 * t + e % 2;
            int i = queries_are_rows ? r : col, j = queries_are_rows ? col : r;
            bool vis = whole || (i < T && attn_visible(i, j, T, window, seg, attn_seg(seg, i)));
            float p = vis ? exp2f(s[mb][n][e] * scale_log2 - lse2[i - q0]) : 0.0f;
            s[mb][n][e] = p;
            dp[mb][n][e] = p * (dp[mb][n][e] - delta[i - q0]);
        }
}

// Loads lse · log2(e) and delta of rows [i0, i0 + n) of head h into shared memory (0 past T).
__device__ inline void attn_load_row_stats(float *lse2, float *dl, const float *lse, const float *delta, int i0,
                                           int n, int T, int Hq, int h) {
    for (int r = threadIdx.x; r < n; r += ATTN_THREADS) {
        bool in = i0 + r < T;
        lse2[r] = in ? lse[(size_t)(i0 + r) * Hq + h] * kAttnLog2e : 0.0f;
        dl[r] = in ? delta[(size_t)(i0 + r) * Hq + h] : 0.0f;
    }
}

// The dK/dV kernel's statistics of one step, one value per thread of the first 2·32:
// thread r < 32 fetches lse · log2(e) of row i0 + r of head h, thread 32 + r its delta (0
// past T). The value is fetched into a register at the start of a step and stored into
// shared memory (attn_dkdv_put_stat) at its end, so that the load's latency hides behind
// the step's products instead of stalling a warp.
__device__ inline float attn_dkdv_fetch_stat(const float *lse, const float *delta, int i0, int T, int Hq, int h) {
    constexpr int BQ = ATTN_BQ_DKDV;
    int r = threadIdx.x % BQ;
    if (threadIdx.x >= 2 * BQ || i0 + r >= T) return 0.0f;
    return threadIdx.x < BQ ? lse[(size_t)(i0 + r) * Hq + h] * kAttnLog2e : delta[(size_t)(i0 + r) * Hq + h];
}
__device__ inline void attn_dkdv_put_stat(float *slse, float *sdelta, float x) {
    constexpr int BQ = ATTN_BQ_DKDV;
    if (threadIdx.x < BQ)
        slse[threadIdx.x] = x;
    else if (threadIdx.x < 2 * BQ)
        sdelta[threadIdx.x - BQ] = x;
}

// The dK/dV kernel's Q and dO rows [i0, i0 + 32) of head h, into buffer buf (cp.async).
template <int D>
__device__ inline void attn_dkdv_load_step(__nv_bfloat16 *sq, __nv_bfloat16 *sdo, const __nv_bfloat16 *q,
                                           const __nv_bfloat16 *dout, int buf, int h, int i0, int T, int Hq) {
    constexpr int SD = D + 8, BQ = ATTN_BQ_DKDV;
    attn_load_tile<D, BQ>(sq + buf * BQ * SD, q, i0, T, Hq, h);
    attn_load_tile<D, BQ>(sdo + buf * BQ * SD, dout, i0, T, Hq, h);
}

template <int D>
__global__ void __launch_bounds__(ATTN_THREADS)
    attention_dkdv_kernel(__nv_bfloat16 *dk, __nv_bfloat16 *dv, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                          const __nv_bfloat16 *v, const __nv_bfloat16 *dout, const float *lse, const float *delta,
                          const int32_t *seg, int T, int Hq, int Hkv, int window, int *tile_count) {
    constexpr int SD = D + 8, BQ = ATTN_BQ_DKDV;
    DYNAMIC_SHARED(__nv_bfloat16, smem);
    __nv_bfloat16 *sk = smem, *sv = sk + ATTN_BK * SD;
    __nv_bfloat16 *sq = sv + ATTN_BK * SD, *sdo = sq + 2 * BQ * SD;  // 2 buffers each
    float *slse = (float *)(sdo + 2 * BQ * SD), *sdelta = slse + 2 * BQ;
    int kt = blockIdx.x, kh = blockIdx.y, group = Hq / Hkv;  // the first keys, seen by the most queries, first
    int j0 = kt * ATTN_BK, j1 = min(j0 + ATTN_BK, T) - 1;
    int warp = threadIdx.x / 32;
    int qt_lo = j0 / BQ, qt_hi = attn_last_query_tile<BQ>(j1, T, window, seg);
    int per_head = qt_hi - qt_lo + 1, n_steps = group * per_head;
    const float scale = 1.0f / sqrtf((float)D), scale_log2 = kAttnLog2e * scale;

    attn_load_tile<D, ATTN_BK>(sk, k, j0, T, Hkv, kh);
    attn_load_tile<D, ATTN_BK>(sv, v, j0, T, Hkv, kh);
    // step = (query head of the group, query tile), tiles innermost
    attn_dkdv_load_step<D>(sq, sdo, q, dout, 0, kh * group, qt_lo * BQ, T, Hq);
    cp_async_commit();
    attn_dkdv_put_stat(slse, sdelta, attn_dkdv_fetch_stat(lse, delta, qt_lo * BQ, T, Hq, kh * group));

    float dkacc[1][D / 8][4] = {}, dvacc[1][D / 8][4] = {};
    for (int step = 0; step < n_steps; step++) {
        int buf = step % 2, i0 = (qt_lo + step % per_head) * BQ, i_last = min(i0 + BQ, T) - 1;
        float next_stat = 0.0f;
        if (step + 1 < n_steps) {
            int next_h = kh * group + (step + 1) / per_head, next_i0 = (qt_lo + (step + 1) % per_head) * BQ;
            attn_dkdv_load_step<D>(sq, sdo, q, dout, 1 - buf, next_h, next_i0, T, Hq);
            cp_async_commit();
            next_stat = attn_dkdv_fetch_stat(lse, delta, next_i0, T, Hq, next_h);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        if (tile_count && threadIdx.x == 0) atomicAdd(tile_count, 1);  // before the barrier, as above
        __syncthreads();
        const __nv_bfloat16 *tq = sq + buf * BQ * SD, *tdo = sdo + buf * BQ * SD;

        float s[1][BQ / 8][4] = {}, dp[1][BQ / 8][4] = {};
        attn_mma_abt<D, BQ, 1>(s, sk + warp * 16 * SD, tq);    // Sᵀ = K Qᵀ
        attn_mma_abt<D, BQ, 1>(dp, sv + warp * 16 * SD, tdo);  // dPᵀ = V dOᵀ
        bool whole = attn_tile_whole(i0, i_last, j0, j0 + ATTN_BK - 1, window, seg);
        attn_probabilities<BQ, 1>(s, dp, false, whole, j0 + warp * 16, i0, slse + buf * BQ, sdelta + buf * BQ, i0,
                                  T, window, seg, scale_log2);
        attn_mma_pb<D, BQ, 1>(dvacc, s, tdo);  // dV += Pᵀ dO
        attn_mma_pb<D, BQ, 1>(dkacc, dp, tq);  // dK += dSᵀ Q
        if (step + 1 < n_steps) attn_dkdv_put_stat(slse + (1 - buf) * BQ, sdelta + (1 - buf) * BQ, next_stat);
        __syncthreads();
    }
    attn_store_rows<D>(dk, dkacc[0], scale, scale, j0 + warp * 16, T, Hkv, kh);
    attn_store_rows<D>(dv, dvacc[0], 1.0f, 1.0f, j0 + warp * 16, T, Hkv, kh);
}

template <int D>
__global__ void __launch_bounds__(ATTN_THREADS)
    attention_dq_kernel(__nv_bfloat16 *dq, const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                        const __nv_bfloat16 *dout, const float *lse, const float *delta, const int32_t *seg, int T,
                        int Hq, int Hkv, int window) {
    constexpr int SD = D + 8, BQ = ATTN_BQ_DQ, BK = ATTN_BK_DQ, MB = ATTN_DQ_MB;
    DYNAMIC_SHARED(__nv_bfloat16, smem);
    __nv_bfloat16 *sq = smem, *sdo = sq + BQ * SD, *sk = sdo + BQ * SD, *sv = sk + 2 * BK * SD;
    float *slse = (float *)(sv + 2 * BK * SD), *sdelta = slse + BQ;
    int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, kh = h / (Hq / Hkv);  // the longest rows first
    int i0 = qt * BQ, i_last = min(i0 + BQ, T) - 1;
    int warp = threadIdx.x / 32, w0 = i0 + warp * 16 * MB;  // the warp's first row
    int kt_hi = i_last / BK, kt_lo = attn_first_key_tile<BK>(i0, window, seg);
    int n_tiles = kt_hi - kt_lo + 1;
    const float scale = 1.0f / sqrtf((float)D), scale_log2 = kAttnLog2e * scale;

    attn_load_tile<D, BQ>(sq, q, i0, T, Hq, h);
    attn_load_tile<D, BQ>(sdo, dout, i0, T, Hq, h);
    attn_load_row_stats(slse, sdelta, lse, delta, i0, BQ, T, Hq, h);
    attn_load_tile<D, BK>(sk, k, kt_hi * BK, T, Hkv, kh);
    attn_load_tile<D, BK>(sv, v, kt_hi * BK, T, Hkv, kh);
    cp_async_commit();

    float dqacc[MB][D / 8][4] = {};
    for (int it = 0; it < n_tiles; it++) {
        int kt = kt_hi - it, j0 = kt * BK, buf = it % 2;
        attn_kv_tile_ready<D, BK>(sk, sv, k, v, it, n_tiles, j0, T, Hkv, kh);
        const __nv_bfloat16 *tk = sk + buf * BK * SD;
        float s[MB][BK / 8][4] = {}, dp[MB][BK / 8][4] = {};
        attn_mma_abt<D, BK, MB>(s, sq + (w0 - i0) * SD, tk);                    // S = Q Kᵀ
        attn_mma_abt<D, BK, MB>(dp, sdo + (w0 - i0) * SD, sv + buf * BK * SD);  // dP = dO Vᵀ
        bool whole = attn_tile_whole(i0, i_last, j0, j0 + BK - 1, window, seg);
        attn_probabilities<BK, MB>(s, dp, true, whole, w0, j0, slse, sdelta, i0, T, window, seg, scale_log2);
        attn_mma_pb<D, BK, MB>(dqacc, dp, tk);  // dQ += dS K
        __syncthreads();
    }
    for (int mb = 0; mb < MB; mb++) attn_store_rows<D>(dq, dqacc[mb], scale, scale, w0 + 16 * mb, T, Hq, h);
}

// ---------------------------------------------------------------------------------------
// Host launchers

static inline size_t attention_forward_smem(int D) { return (size_t)(ATTN_BQ_FWD + 4 * ATTN_BK_FWD) * (D + 8) * 2; }
static inline size_t attention_dkdv_smem(int D) {
    return (size_t)(2 * ATTN_BK + 4 * ATTN_BQ_DKDV) * (D + 8) * 2 + 4 * ATTN_BQ_DKDV * sizeof(float);
}
static inline size_t attention_dq_smem(int D) {
    return (size_t)(2 * ATTN_BQ_DQ + 4 * ATTN_BK_DQ) * (D + 8) * 2 + 2 * ATTN_BQ_DQ * sizeof(float);
}


// The shape rules the kernels rely on; a violation is a caller's bug: one line, exit 1.
static inline void attention_check(const char *op, int T, int Hq, int Hkv, int D, const void *const *ptrs, int n) {
    const char *why = NULL;
    if (T < 0 || Hq <= 0 || Hkv <= 0 || Hq % Hkv != 0) why = "T >= 0 and a KV head count dividing the head count";
    else if (D != 64 && D != 96 && D != 128) why = "head_dim 64, 96 or 128";
    for (int i = 0; i < n && !why; i++)
        if (!aligned16(ptrs[i])) why = "16-byte aligned tensors";
    if (why) {
        fprintf(stderr, "error: %s: T %d, heads %d, KV heads %d, head_dim %d: needs %s\n", op, T, Hq, Hkv, D, why);
        exit(1);
    }
}

template <int D>
static void attention_forward_d(__nv_bfloat16 *out, float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                                const __nv_bfloat16 *v, const int32_t *seg, int T, int Hq, int Hkv, int window,
                                int *tile_count, cudaStream_t stream) {
    size_t smem = attention_forward_smem(D);
    cuda_check(cudaFuncSetAttribute(attention_forward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid(CEIL_DIV(T, ATTN_BQ_FWD), Hq);
    LAUNCH(attention_forward_kernel<D>, grid, ATTN_THREADS, smem, stream, out, lse, q, k, v, seg, T, Hq, Hkv, window,
           tile_count);
}

// out [T, Hq, D] bf16, lse [T, Hq] fp32 written; window <= 0: none; seg NULL: one
// conversation; tile_count NULL (production) or a device int the kernel adds to.
inline void attention_forward(__nv_bfloat16 *out, float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                              const __nv_bfloat16 *v, const int32_t *seg, int T, int Hq, int Hkv, int D, int window,
                              int *tile_count, cudaStream_t stream) {
    const void *ptrs[] = {out, q, k, v};
    attention_check("attention_forward", T, Hq, Hkv, D, ptrs, 4);
    if (T == 0) return;
    if (D == 64) attention_forward_d<64>(out, lse, q, k, v, seg, T, Hq, Hkv, window, tile_count, stream);
    if (D == 96) attention_forward_d<96>(out, lse, q, k, v, seg, T, Hq, Hkv, window, tile_count, stream);
    if (D == 128) attention_forward_d<128>(out, lse, q, k, v, seg, T, Hq, Hkv, window, tile_count, stream);
}

template <int D>
static void attention_backward_d(__nv_bfloat16 *dq, __nv_bfloat16 *dk, __nv_bfloat16 *dv, const float *delta,
                                 const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                                 const __nv_bfloat16 *dout, const float *lse, const int32_t *seg, int T, int Hq,
                                 int Hkv, int window, int *tile_count, cudaStream_t stream) {
    size_t smem_kv = attention_dkdv_smem(D), smem_q = attention_dq_smem(D);
    cuda_check(cudaFuncSetAttribute(attention_dkdv_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_kv));
    cuda_check(cudaFuncSetAttribute(attention_dq_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_q));
    LAUNCH(attention_dkdv_kernel<D>, dim3(CEIL_DIV(T, ATTN_BK), Hkv), ATTN_THREADS, smem_kv, stream, dk, dv, q, k, v,
           dout, lse, delta, seg, T, Hq, Hkv, window, tile_count);
    LAUNCH(attention_dq_kernel<D>, dim3(CEIL_DIV(T, ATTN_BQ_DQ), Hq), ATTN_THREADS, smem_q, stream, dq, q, k, v, dout,
           lse, delta, seg, T, Hq, Hkv, window);
}

// dq [T, Hq, D], dk and dv [T, Hkv, D] (bf16) are overwritten; delta is a [T, Hq] fp32
// workspace (rowsum(dout ∘ out), computed here); lse from attention_forward. tile_count,
// when not NULL, counts the (32-query, 64-key) tile pairs of the dK/dV kernel.
inline void attention_backward(__nv_bfloat16 *dq, __nv_bfloat16 *dk, __nv_bfloat16 *dv, float *delta,
                               const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                               const __nv_bfloat16 *out, const __nv_bfloat16 *dout, const float *lse,
                               const int32_t *seg, int T, int Hq, int Hkv, int D, int window, int *tile_count,
                               cudaStream_t stream) {
    const void *ptrs[] = {dq, dk, dv, q, k, v, dout};
    attention_check("attention_backward", T, Hq, Hkv, D, ptrs, 7);
    if (T == 0) return;
    int rows = T * Hq;
    LAUNCH(attention_delta_kernel, CEIL_DIV(rows, ATTN_THREADS / 32), ATTN_THREADS, 0, stream, delta, out, dout, rows,
           D);
    if (D == 64) attention_backward_d<64>(dq, dk, dv, delta, q, k, v, dout, lse, seg, T, Hq, Hkv, window, tile_count, stream);
    if (D == 96) attention_backward_d<96>(dq, dk, dv, delta, q, k, v, dout, lse, seg, T, Hq, Hkv, window, tile_count, stream);
    if (D == 128) attention_backward_d<128>(dq, dk, dv, delta, q, k, v, dout, lse, seg, T, Hq, Hkv, window, tile_count, stream);
}

// ---------------------------------------------------------------------------------------
// How far the kernels may be from the fp32 reference (train/attention.c), both given the
// same bf16 inputs. The bounds are computed per element, in double, on the host (the tests
// and the bench use these functions), from these sources of difference:
// - a score s = (q·k)/sqrt(D): D exact bf16 products summed in fp32 by the reference and by
//   the tensor cores (whose additions we do not assume round to nearest): each off by at
//   most D·2^-23 of Σ|q_d k_d|, so the two differ by δ <= 2D·2^-23·Σ|q_d k_d|/sqrt(D); a
//   probability p = exp(s - lse) (lse from the same scores) then by p·(e^(2δmax) - 1) <=
//   2.02·δmax·p (δmax the largest δ of the row, below 0.01 in any test);
// - exp2f / log2f and the fp32 scalings: a few ulp, 2^-22 each per term (the (n + 16)·2^-22
//   "slack" below also covers summing n terms in fp32 in any order, Higham §4.2);
// - the bf16 roundings of the kernel, u = 2^-8 each: P (or dS) before its mma, so the
//   numerator of O = Σ p v / Σ p is off by at most u·Σ p|v| / Σ p, and the output itself.
// Forward, per row with its n visible keys, A_d = Σ_j p_j |v_jd|:
//   |out - ref| <= u·|ref| + (1 + u)·(u + 2.02δmax + (n + 16)·2^-22)·A_d
//   |lse - ref| <= 2.02δmax + (n + 16)·2^-22·(1 + |lse|)
// Backward (the same lse given to both): with dP_j = dO·v_j, delta = dO·O, each off by at
// most 2D·2^-23 of the sums of the magnitudes of their terms (ρ_j, τ), and
// ε_p = 2.02δmax + 2^-21·(1 + |lse|), each dS_j = p_j (dP_j - delta) is off by at most
//   E_j = (u + 2^-22)·|dS_j| + ε_p·p_j·|dP_j - delta| + p_j·2D·2^-23·(ρ_j + τ),
// and then, each summed over its n terms (u·|ref| for the final bf16 rounding):
//   dQ_d: u·|ref| + scale·Σ_j (E_j + (n + 16)·2^-22·|dS_j|)·|k_jd|
//   dK_d: u·|ref| + scale·Σ_i (E_i + (n + 16)·2^-22·|dS_i|)·|q_id|
//   dV_d: u·|ref| + Σ_i ((u + ε_p + (n + 16)·2^-22)·p_i)·|dO_id|

static const double kAttnU = 1.0 / 256.0;

// The visible keys of query i: [first, i].
static inline int attention_first_key(const int32_t *seg, int i, int window) {
    int j = i;
    while (j > 0 && (!seg || seg[j - 1] == seg[i]) && (window <= 0 || i - (j - 1) <= window - 1)) j--;
    return j;
}

// Row (i, h)'s scores in double: s[j - j0] = q·k_j / sqrt(D), abs[j - j0] = Σ_d |q_d k_jd| /
// sqrt(D), for its visible keys j0..i; returns the number of keys.
static inline int attention_row_scores(double *s, double *abs_s, const float *q, const float *k, const int32_t *seg,
                                       int i, int h, int Hq, int Hkv, int D, int window, int *j0) {
    int kh = h / (Hq / Hkv);
    *j0 = attention_first_key(seg, i, window);
    const float *qi = q + ((size_t)i * Hq + h) * D;
    for (int j = *j0; j <= i; j++) {
        const float *kj = k + ((size_t)j * Hkv + kh) * D;
        double dot = 0, mag = 0;
        for (int d = 0; d < D; d++) dot += (double)qi[d] * kj[d], mag += fabs((double)qi[d] * kj[d]);
        s[j - *j0] = dot / sqrt((double)D), abs_s[j - *j0] = mag / sqrt((double)D);
    }
    return i - *j0 + 1;
}

static inline double attention_delta_max(const double *abs_s, int n, int D) {
    double m = 0;
    for (int j = 0; j < n; j++) m = fmax(m, 2.0 * D * 0x1p-23 * abs_s[j]);
    return m;
}

// Exact (double) out and lse of the fp32 inputs, and the bounds above (all [T, Hq, D] /
// [T, Hq]), for the query rows from first_row on (the others are left as they are).
static inline void attention_forward_bounds(double *out, double *lse, double *tol_out, double *tol_lse, const float *q,
                                     const float *k, const float *v, const int32_t *seg, int T, int Hq, int Hkv,
                                     int D, int window, int first_row) {
    double *s = (double *)malloc((size_t)T * sizeof(double)), *abs_s = (double *)malloc((size_t)T * sizeof(double));
    double *A = (double *)malloc((size_t)D * sizeof(double));
    for (int i = first_row; i < T; i++)
        for (int h = 0; h < Hq; h++) {
            int j0, n = attention_row_scores(s, abs_s, q, k, seg, i, h, Hq, Hkv, D, window, &j0), kh = h / (Hq / Hkv);
            double m = -INFINITY, sum = 0;
            for (int j = 0; j < n; j++) m = fmax(m, s[j]);
            for (int j = 0; j < n; j++) sum += exp(s[j] - m);
            size_t row = (size_t)i * Hq + h;
            lse[row] = m + log(sum);
            double *o = out + row * D;
            for (int d = 0; d < D; d++) o[d] = A[d] = 0;
            for (int j = 0; j < n; j++) {
                double p = exp(s[j] - lse[row]);
                const float *vj = v + ((size_t)(j0 + j) * Hkv + kh) * D;
                for (int d = 0; d < D; d++) o[d] += p * vj[d], A[d] += p * fabs((double)vj[d]);
            }
            double dmax = attention_delta_max(abs_s, n, D), slack = (n + 16) * 0x1p-22;
            for (int d = 0; d < D; d++)
                tol_out[row * D + d] = kAttnU * fabs(o[d]) + (1 + kAttnU) * (kAttnU + 2.02 * dmax + slack) * A[d];
            tol_lse[row] = 2.02 * dmax + slack * (1 + fabs(lse[row]));
        }
    free(s), free(abs_s), free(A);
}

// Exact (double) dq, dk, dv of the fp32 inputs (out, dout and lse as given), and the bounds
// above, from the query rows from first_row on: complete for dq rows and dk, dv rows (keys)
// from first_row on, since key j is seen only by queries i >= j.
static inline void attention_backward_bounds(double *dq, double *dk, double *dv, double *tol_dq, double *tol_dk,
                                      double *tol_dv, const float *q, const float *k, const float *v,
                                      const float *out, const float *dout, const float *lse, const int32_t *seg,
                                      int T, int Hq, int Hkv, int D, int window, int first_row) {
    size_t nq = (size_t)T * Hq * D, nk = (size_t)T * Hkv * D;
    double *s = (double *)malloc((size_t)T * sizeof(double)), *abs_s = (double *)malloc((size_t)T * sizeof(double));
    double *abs_dk = (double *)calloc(nk, sizeof(double)), *abs_dv = (double *)calloc(nk, sizeof(double));
    int *terms = (int *)calloc((size_t)T * Hkv, sizeof(int));  // terms summed into each dK, dV row
    double scale = 1.0 / sqrt((double)D);
    for (size_t x = 0; x < nq; x++) dq[x] = tol_dq[x] = 0;
    for (size_t x = 0; x < nk; x++) dk[x] = dv[x] = tol_dk[x] = tol_dv[x] = 0;
    for (int i = first_row; i < T; i++)
        for (int h = 0; h < Hq; h++) {
            int j0, n = attention_row_scores(s, abs_s, q, k, seg, i, h, Hq, Hkv, D, window, &j0), kh = h / (Hq / Hkv);
            size_t row = (size_t)i * Hq + h;
            const float *qi = q + row * D, *doi = dout + row * D, *oi = out + row * D;
            double delta = 0, tau = 0;
            for (int d = 0; d < D; d++) delta += (double)doi[d] * oi[d], tau += fabs((double)doi[d] * oi[d]);
            double eps_p = 2.02 * attention_delta_max(abs_s, n, D) + 0x1p-21 * (1 + fabs((double)lse[row]));
            double slack = (n + 16) * 0x1p-22;
            for (int jj = 0; jj < n; jj++) {
                int j = j0 + jj;
                size_t kr = (size_t)j * Hkv + kh;
                const float *kj = k + kr * D, *vj = v + kr * D;
                double dp = 0, rho = 0;
                for (int d = 0; d < D; d++) dp += (double)doi[d] * vj[d], rho += fabs((double)doi[d] * vj[d]);
                double p = exp(s[jj] - lse[row]), ds = p * (dp - delta);
                double E = (kAttnU + 0x1p-22) * fabs(ds) + eps_p * p * fabs(dp - delta) + p * 2.0 * D * 0x1p-23 * (rho + tau);
                terms[kr]++;
                for (int d = 0; d < D; d++) {
                    dq[row * D + d] += scale * ds * kj[d];
                    tol_dq[row * D + d] += scale * (E + slack * fabs(ds)) * fabs((double)kj[d]);
                    dk[kr * D + d] += scale * ds * qi[d];
                    tol_dk[kr * D + d] += scale * E * fabs((double)qi[d]);
                    abs_dk[kr * D + d] += scale * fabs(ds * qi[d]);
                    dv[kr * D + d] += p * doi[d];
                    tol_dv[kr * D + d] += (kAttnU + eps_p) * p * fabs((double)doi[d]);
                    abs_dv[kr * D + d] += p * fabs((double)doi[d]);
                }
            }
        }
    for (size_t x = 0; x < nq; x++) tol_dq[x] += kAttnU * fabs(dq[x]);
    for (size_t x = 0; x < nk; x++) {
        double slack = (terms[x / D] + 16) * 0x1p-22;
        tol_dk[x] += kAttnU * fabs(dk[x]) + slack * abs_dk[x];
        tol_dv[x] += kAttnU * fabs(dv[x]) + slack * abs_dv[x];
    }
    free(s), free(abs_s), free(abs_dk), free(abs_dv), free(terms);
}

#endif
