/*
 * lora.cuh: the LoRA branch of the adapted projections on the GPU, forward and backward,
 * and the cast that refreshes the bf16 copies of the fp32 master weights after AdamW. The
 * CPU reference is train/lora.c (PEFT's definition, reference/qlora.md §B).
 *
 * A LoraGroup is the P (1..3) projections of one layer that share an input X [M, in]:
 * q, k, v (P = 3), gate, up (P = 2), o or down (P = 1), each with A_p [r, in] and B_p
 * [out_p, r] (bf16 copies of the masters), scale s, and PEFT's dropout on X (rate p):
 *   lora_forward:      U_p = Xd_p·A_pᵀ [M, r]          kept for the backward (bf16)
 *                      Y_p += s·U_p·B_pᵀ                into the base GEMM's output, in place
 *   lora_backward:     G_p = s·dY_p·B_p [M, r]          computed once (bf16, in the scratch)
 *                      dB_p += s·dY_pᵀ·U_p              fp32
 *                      dA_p += G_pᵀ·Xd_p                fp32
 *   lora_backward_dx:  dX += Σ_p (G_p·A_p) ∘ mask_p     bf16, in place (the base path's dX)
 * (two calls, so that a caller whose X shares its buffer with dX can run the base path's
 * dX = dY·W between them: lora_backward still reads X).
 * Xd_p = X ∘ mask_p with mask_p[m][i] = 0 with probability p, else 1/(1 - p) (float), the
 * kept values rounded to bf16 for the tensor cores. Each projection has its own mask, the
 * one train/lora.c's lora_dropout_mask draws from its generator (common/util.c's splitmix64:
 * draw i of a generator in state S is mix(S + (i + 1)·0x9E3779B97F4A7C15), dropped iff
 * (draw >> 11)·2^-53 < p): dropout_state[p] is the state before projection p's mask, element
 * [m][i] is draw m·in + i, regenerated wherever it is needed (never stored), and
 * lora_dropout_advance moves a state past a mask as the CPU path's draws do.
 *
 * Kernels (4 warps a block, mma.sync m16n8k16 bf16 -> fp32 through kernels/ptx.cuh, tiles
 * staged in shared memory by cp.async with 16-byte rows padding so that ldmatrix is
 * conflict-free; r padded to RP = 16·ceil(r/16) with zeros):
 *   lora_down_kernel  U: 64 rows of X, all P·r columns; X's k-tile is staged once for the P
 *                     projections (one launch over the concatenated A), masked per
 *                     projection in the mma fragments; K (in) split into ranges.
 *   lora_up_kernel    Y_p += s·U_p·B_pᵀ: 64 x 64 tiles of every Y_p in one launch, K = r;
 *                     Y read and written as 16-byte packs through a shared fp32 tile.
 *   lora_g_kernel     G: 64 rows of dY_p, all r columns; K (out_p) split into ranges.
 *   lora_db_kernel    dB_p: 64 rows of dB_p over a range of M (dY_pᵀ from ldmatrix.trans).
 *   lora_da_kernel    dA_p: all r rows x 64 columns of dA_p over a range of M, Xd_p masked in
 *                     the fragments.
 *   lora_dx_kernel    dX: 64 x 64 tiles, the P products with their masks summed in fp32,
 *                     then added into dX as 16-byte packs.
 *   lora_reduce_kernel the ranges' fp32 partials added up in range order.
 * The skinny products (U, G: r columns over a long K; dA, dB: r-wide over a long M) are
 * split into ranges whose partials go to scratch and are added up by lora_reduce_kernel in
 * a fixed order: no atomics anywhere, and the ranges depend only on the shapes and on the
 * scratch's chunk_rows / split_cols (never on the GPU or on timing), so every run gives the
 * same bits. One range needs no scratch pass: the kernel writes (or adds) directly.
 *
 * Error bounds against train/lora.c (fp32 throughout, A and B the fp32 masters), with
 * u = 2^-8 (bf16's unit roundoff), |·| magnitudes propagated through the same products
 * (test_cuda_lora.cpp computes them): a bf16 operand is within u of its fp32 value, bf16
 * products are exact in fp32, an fp32 sum of n terms is within 4(n + 2)·2^-24 of the sum
 * of the magnitudes (matmul.cuh's allowance for tensor cores), and a bf16 result rounds
 * within u of itself:
 *   e_U = u|U| + (1 + u)·(2u + u² + 4(in + 2)·2^-24)·Σ_k |Xd||A|            (Xd and A rounded)
 *   e_G = u|G| + (1 + u)·(u + 4(out + 2)·2^-24)·s·Σ_n |dY||B|                 (B rounded)
 *   Y:  u|Y| + (1 + u)·[s·Σ_j (e_U(1 + u) + u|U|)|B| + 4(r + 2)·2^-24·(|Y0| + s·Σ_j (|U| + e_U)|B|)]
 *   dB: s·Σ_m |dY|·e_U + 4(M + 2)·2^-24·(|dB0| + s·Σ_m |dY|(|U| + e_U))      (fp32 out)
 *   dA: Σ_m (e_G(1 + u) + u|G|)|Xd| + 4(M + 2)·2^-24·(|dA0| + Σ_m (|G| + e_G)|Xd|)
 *   dX: u|dX| + (1 + u)·[Σ_p mask_p·Σ_j (e_G(1 + u) + u|G|)|A|
 *                        + 4(P·r + 2)·2^-24·(|dX0| + Σ_p mask_p·Σ_j (|G| + e_G)|A|)]
 * (e_U, e_G: the GPU's rounded U and G feed the later products); the CPU reference's own
 * fp32 sums add K·2^-24 of the magnitudes (K the sum's length).
 *
 * Memory per group (bf16 unless said): forward reads X once and A, writes U, reads and
 * writes every Y_p; backward reads every dY_p twice (G, dB), X once (dA), U and G, reads and
 * writes dX, plus the partials (fp32, ~2·ranges·r/M of the big tensors' bytes). Shapes: M,
 * in, out_p >= 1, 1 <= r <= 64; rows that are multiples of 8 values on 16-byte aligned
 * pointers move as 16-byte cp.async pieces, anything else value by value (correct, slower).
 * Speed, against the same products as 6·P cuBLASLt calls (kernels/bench/lora.cu, goal
 * >= 1.3x; not yet measured on a GPU): the bytes saved are X read once for the group's U
 * instead of P times, dX read and written once for the group instead of P times, and no
 * masked copies of X for dropout; dY is read twice either way (a G fused into dB's pass
 * would need partial G sums of r/32 of dY's bytes per 64 columns, more than a second read
 * for r >= 32). So the goal is within reach for q,k,v and gate,up; for o and down alone
 * the traffic is the same as cuBLASLt's and only its efficiency on r-wide shapes (split-K
 * heuristics, tiles wasted on N = r) can differ.
 */
#ifndef PERSONA_LORA_CUH
#define PERSONA_LORA_CUH

#include <math.h>
#include <stdint.h>

#include "common.cuh"
#include "ptx.cuh"
#include "random.cuh"

#define LORA_MAX_R 64
#define LORA_MAX_GROUP 3
#define LORA_THREADS 128     // 4 warps
#define LORA_TILE 64         // rows of M (or of out, in) per block
#define LORA_KT_DOWN 32      // k per stage of the U kernel (its A tiles for 3 projections fill the rest)
#define LORA_KT 64           // k per stage of the G, dB and dA kernels
#define LORA_MAX_RANGES 16   // ranges a reduction is split into at most
#define LORA_CHUNK_ROWS 1024 // default rows of M per range of dA, dB
#define LORA_SPLIT_COLS 1024 // default columns of K per range of U (in) and G (out)
#define LORA_CAST_THREADS 256

typedef struct {
    int P;                  // projections sharing the input, 1..3
    int in, r;              // input features; rank, 1..64
    float scale;            // s = alpha / r (or alpha / sqrt(r))
    float dropout;          // PEFT's lora_dropout, in [0, 1); 0: none
    uint64_t dropout_state[LORA_MAX_GROUP];  // the generator state before projection p's mask
    int out[LORA_MAX_GROUP];
    const __nv_bfloat16 *A[LORA_MAX_GROUP];  // [r, in]
    const __nv_bfloat16 *B[LORA_MAX_GROUP];  // [out_p, r]
    float *dA[LORA_MAX_GROUP];               // [r, in], the backward adds into them
    float *dB[LORA_MAX_GROUP];               // [out_p, r]
} LoraGroup;

// U_p, Y_p or dY_p, one pointer per projection (kernel arguments hold them by value).
typedef struct {
    __nv_bfloat16 *p[LORA_MAX_GROUP];
} LoraTensors;

// The backward's G and the partial sums of the split reductions (fp32). chunk_rows and
// split_cols fix the ranges (and so the order of the sums): LORA_CHUNK_ROWS and
// LORA_SPLIT_COLS unless a test wants many small ranges.
typedef struct {
    __nv_bfloat16 *g;    // g_capacity values: G_p [M, r] for each p, one after another
    float *partials;     // partial_capacity floats (lora_scratch_floats)
    size_t g_capacity, partial_capacity;
    int chunk_rows, split_cols;
} LoraScratch;

// ---------------------------------------------------------------------------------------
// Dropout (see the top)

// 1 in 2^53 units: drawn >> 11 below this is dropped.
static inline uint64_t lora_dropout_threshold(float p) { return (uint64_t)ceil((double)p * 0x1p53); }

// The state of a generator after `draws` more draws (rng_next adds the constant per draw).
static inline uint64_t lora_dropout_advance(uint64_t state, uint64_t draws) { return state + draws * 0x9E3779B97F4A7C15ULL; }

// Whether element i of a mask whose generator starts in `state` is kept (random_mix is
// SplitMix64's output function, common/util.c's rng_next's).
__host__ __device__ __forceinline__ bool lora_kept(uint64_t state, int64_t i, uint64_t threshold) {
    return random_mix(state + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ULL) >> 11 >= threshold;
}

// A bf16 pair of X (elements i_lo, i_hi of the [M, in] matrix) through the mask: each kept
// value times keep, rounded to bf16; dropped ones 0.
__device__ __forceinline__ unsigned lora_drop_pair(unsigned v, uint64_t state, int64_t i_lo, int64_t i_hi,
                                                   uint64_t threshold, float keep) {
    float lo = lora_kept(state, i_lo, threshold) ? __uint_as_float(v << 16) * keep : 0.0f;
    float hi = lora_kept(state, i_hi, threshold) ? __uint_as_float(v & 0xffff0000u) * keep : 0.0f;
    return pack_bf16x2(lo, hi);
}

// ---------------------------------------------------------------------------------------
// Tiles and fragments

// Element p of a kernel argument's per-projection array, p known only at run time (an
// indexed load from the argument would copy the array to local memory first).
template <typename T>
__host__ __device__ __forceinline__ T lora_pick(const T (&a)[LORA_MAX_GROUP], int p) {
    return p == 0 ? a[0] : p == 1 ? a[1] : a[2];
}

// The projection of column tile `*tile` of Σ_p ceil(n_p / 64) tiles; *tile becomes the
// tile's index within that projection.
__device__ __forceinline__ int lora_tile_projection(const int (&n)[LORA_MAX_GROUP], int *tile) {
    int t0 = (int)CEIL_DIV(n[0], LORA_TILE), t1 = (int)CEIL_DIV(n[1], LORA_TILE);
    if (*tile < t0) return 0;
    *tile -= t0;
    if (*tile < t1) return 1;
    *tile -= t1;
    return 2;
}

// The offset of projection p's dB (out_q·r values for each q before it) in a range's partials.
__host__ __device__ inline int64_t lora_db_offset(const LoraGroup &g, int p) {
    return ((p > 0 ? (int64_t)g.out[0] : 0) + (p > 1 ? (int64_t)g.out[1] : 0) + (p > 2 ? (int64_t)g.out[2] : 0)) * g.r;
}

// The ROWS x COLS tile at (row0, col0) of a rows x cols bf16 matrix with row stride ld, into
// shared memory with row stride COLS + 8, zeros outside the matrix. `vec` (ld a multiple of
// 8, src 16-byte aligned): whole 8-value pieces by cp.async (the caller commits and waits),
// the rest value by value.
template <int ROWS, int COLS>
__device__ inline void lora_tile_load(__nv_bfloat16 *dst, const __nv_bfloat16 *src, int64_t ld, int64_t rows,
                                      int64_t cols, int64_t row0, int64_t col0, bool vec) {
    constexpr int PIECES = COLS / 8;
    for (int c = threadIdx.x; c < ROWS * PIECES; c += LORA_THREADS) {
        int r = c / PIECES, col = c % PIECES * 8;
        int64_t gr = row0 + r, gc = col0 + col;
        __nv_bfloat16 *d = dst + r * (COLS + 8) + col;
        if (vec && gr < rows && gc + 8 <= cols) {
            cp_async16_cg(d, src + gr * ld + gc);
        } else {
            for (int e = 0; e < 8; e++)
                d[e] = gr < rows && gc + e < cols ? src[gr * ld + gc + e] : __float2bfloat16(0.0f);
        }
    }
}

// Whether rows of a matrix at p with row stride ld move as 16-byte pieces.
__host__ __device__ __forceinline__ bool lora_vec(const void *p, int64_t ld) { return ((uintptr_t)p & 15) == 0 && ld % 8 == 0; }

// The A fragment of the 16 x 16 block at (m0, k0) of a matrix in shared memory (row stride
// ld): stored [m][k], or with TRANS stored [k][m].
template <bool TRANS>
__device__ __forceinline__ void lora_frag_a(unsigned a[4], const __nv_bfloat16 *s, int ld, int m0, int k0) {
    int lane = threadIdx.x % 32, j = lane / 8;
    if (TRANS) ldmatrix_x4_trans(a, s + (k0 + j / 2 * 8 + lane % 8) * ld + m0 + j % 2 * 8);
    else ldmatrix_x4(a, s + (m0 + lane % 16) * ld + k0 + lane / 16 * 8);
}

// The B fragments of the two n8 tiles n0, n0 + 8 over k0..k0 + 15 (b[0..1] and b[2..3]) of a
// matrix in shared memory: stored [n][k], or with TRANS stored [k][n].
template <bool TRANS>
__device__ __forceinline__ void lora_frag_b(unsigned b[4], const __nv_bfloat16 *s, int ld, int n0, int k0) {
    int lane = threadIdx.x % 32, j = lane / 8;
    if (TRANS) ldmatrix_x4_trans(b, s + (k0 + j % 2 * 8 + lane % 8) * ld + n0 + j / 2 * 8);
    else ldmatrix_x4(b, s + (n0 + j / 2 * 8 + lane % 8) * ld + k0 + j % 2 * 8);
}

// A 64 x 64 fp32 tile in shared memory (row stride 68) added into the bf16 matrix y (rows x
// cols, row stride ld) at (row0, col0): 16-byte packs where `vec`, else value by value.
__device__ inline void lora_tile_accumulate(__nv_bfloat16 *y, int64_t ld, int64_t rows, int64_t cols, int64_t row0,
                                            int64_t col0, const float *tile, bool vec) {
    for (int c = threadIdx.x; c < LORA_TILE * LORA_TILE / 8; c += LORA_THREADS) {
        int r = c / 8, col = c % 8 * 8;
        int64_t gr = row0 + r, gc = col0 + col;
        const float *t = tile + r * (LORA_TILE + 4) + col;
        if (gr >= rows) continue;
        if (vec && gc + 8 <= cols) {
            uint4 *p = (uint4 *)(y + gr * ld + gc);
            uint4 v = *p;
            unsigned w[4] = {v.x, v.y, v.z, v.w};
            UNROLL
            for (int i = 0; i < 4; i++)
                w[i] = pack_bf16x2(__uint_as_float(w[i] << 16) + t[2 * i], __uint_as_float(w[i] & 0xffff0000u) + t[2 * i + 1]);
            *p = uint4{w[0], w[1], w[2], w[3]};
        } else {
            for (int e = 0; e < 8 && gc + e < cols; e++)
                y[gr * ld + gc + e] = __float2bfloat16(__bfloat162float(y[gr * ld + gc + e]) + t[e]);
        }
    }
}

// acc (a warp's 16 x 64 C fragments, rows 16·warp.., scaled by s) into the fp32 tile.
__device__ __forceinline__ void lora_stage_tile(float *tile, const float acc[8][4]) {
    int lane = threadIdx.x % 32, row = threadIdx.x / 32 * 16 + lane / 4;
    UNROLL
    for (int nt = 0; nt < 8; nt++)
        UNROLL
        for (int i = 0; i < 4; i++) tile[(row + i / 2 * 8) * (LORA_TILE + 4) + nt * 8 + lane % 4 * 2 + i % 2] = acc[nt][i];
}

// acc (16 rows x 16·NT columns, C fragments of NT pairs of n8 tiles) += the warp's rows
// m0..m0 + 15 of A times B over K = 16·KS: A in shared memory [m][k] (or [k][m] with
// TRANS_A), B [n][k] (or [k][n] with TRANS_B), row strides lda, ldb.
template <bool TRANS_A, bool TRANS_B, int NT, int KS>
__device__ __forceinline__ void lora_mma_rows(float acc[2 * NT][4], const __nv_bfloat16 *a_tile, int lda, int m0,
                                              const __nv_bfloat16 *b_tile, int ldb) {
    UNROLL
    for (int ks = 0; ks < KS; ks++) {
        unsigned a[4];
        lora_frag_a<TRANS_A>(a, a_tile, lda, m0, ks * 16);
        UNROLL
        for (int np = 0; np < NT; np++) {
            unsigned b[4];
            lora_frag_b<TRANS_B>(b, b_tile, ldb, np * 16, ks * 16);
            mma_m16n8k16_bf16(acc[2 * np], a, b, acc[2 * np]);
            mma_m16n8k16_bf16(acc[2 * np + 1], a, b + 2, acc[2 * np + 1]);
        }
    }
}

// store(row, j, value) for each element of a warp's 16 x 16·NT block of C fragments (rows
// row0 + 16·warp.., columns j), those in rows < rows and columns j < cols.
template <int NT, typename Store>
__device__ __forceinline__ void lora_store_rows(const float acc[2 * NT][4], int64_t row0, int64_t rows, int cols,
                                                Store store) {
    int lane = threadIdx.x % 32;
    UNROLL
    for (int nt = 0; nt < 2 * NT; nt++)
        UNROLL
        for (int i = 0; i < 4; i++) {
            int64_t row = row0 + threadIdx.x / 32 * 16 + lane / 4 + i / 2 * 8;
            int j = nt * 8 + lane % 4 * 2 + i % 2;
            if (row < rows && j < cols) store(row, j, acc[nt][i]);
        }
}

// The double-buffered loop of the long reductions: load(t) stages tile t into buffer t % 2
// with cp.async and commits; compute(t) uses it once it has landed, while tile t + 1 lands.
template <typename Load, typename Compute>
__device__ __forceinline__ void lora_pipeline(int tiles, Load load, Compute compute) {
    load(0);
    for (int t = 0; t < tiles; t++) {
        if (t + 1 < tiles) {
            load(t + 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        compute(t);
        __syncthreads();  // before the next load overwrites this buffer
    }
}

// ---------------------------------------------------------------------------------------
// Forward

// U (or its partials): grid (ceil(M / 64), 1, splits of in), per_split columns of in
// (a multiple of LORA_KT_DOWN) per split. One split: U_p = bf16(acc); else partials[split]
// [p][M][r] = acc.
template <int NR>
__global__ void __launch_bounds__(LORA_THREADS)
    lora_down_kernel(LoraGroup g, const __nv_bfloat16 *x, int M, LoraTensors u, float *partials, int per_split,
                     uint64_t threshold, float keep) {
    constexpr int RP = 16 * NR, S = LORA_KT_DOWN + 8;
    DYNAMIC_SHARED(__nv_bfloat16, smem);
    const int stage_elems = (LORA_TILE + g.P * RP) * S, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t m0 = (int64_t)blockIdx.x * LORA_TILE, k_begin = (int64_t)blockIdx.z * per_split;
    const int64_t k_end = k_begin + per_split < g.in ? k_begin + per_split : g.in;
    const int tiles = (int)CEIL_DIV(k_end - k_begin, (int64_t)LORA_KT_DOWN);
    const bool vx = lora_vec(x, g.in);
    float acc[LORA_MAX_GROUP][2 * NR][4] = {};

    auto load = [&](int t) {
        __nv_bfloat16 *st = smem + t % 2 * stage_elems;
        int64_t k0 = k_begin + (int64_t)t * LORA_KT_DOWN;
        lora_tile_load<LORA_TILE, LORA_KT_DOWN>(st, x, g.in, M, k_end, m0, k0, vx);
        UNROLL
        for (int p = 0; p < LORA_MAX_GROUP; p++)
            if (p < g.P)
                lora_tile_load<RP, LORA_KT_DOWN>(st + (LORA_TILE + p * RP) * S, g.A[p], g.in, g.r, k_end, 0, k0,
                                                 lora_vec(g.A[p], g.in));
        cp_async_commit();
    };
    lora_pipeline(tiles, load, [&](int t) {
        const __nv_bfloat16 *st = smem + t % 2 * stage_elems;
        UNROLL
        for (int ks = 0; ks < LORA_KT_DOWN / 16; ks++) {
            unsigned a[4];
            lora_frag_a<false>(a, st, S, warp * 16, ks * 16);
            // this lane's elements of X: rows m, m + 8; columns k, k + 1 and k + 8, k + 9, at
            // linear index at = m·in + k and the offsets 8·in, 8
            int64_t at = (m0 + warp * 16 + lane / 4) * g.in + k_begin + (int64_t)t * LORA_KT_DOWN + ks * 16 + lane % 4 * 2;
            UNROLL
            for (int p = 0; p < LORA_MAX_GROUP; p++) {
                if (p >= g.P) continue;  // (not break: the loop must unroll)
                unsigned ap[4] = {a[0], a[1], a[2], a[3]};
                if (threshold) {
                    uint64_t seed = g.dropout_state[p];
                    UNROLL
                    for (int i = 0; i < 4; i++) {
                        int64_t e = at + (i % 2) * 8 * (int64_t)g.in + i / 2 * 8;
                        ap[i] = lora_drop_pair(a[i], seed, e, e + 1, threshold, keep);
                    }
                }
                UNROLL
                for (int np = 0; np < NR; np++) {
                    unsigned b[4];
                    lora_frag_b<false>(b, st + (LORA_TILE + p * RP) * S, S, np * 16, ks * 16);
                    mma_m16n8k16_bf16(acc[p][2 * np], ap, b, acc[p][2 * np]);
                    mma_m16n8k16_bf16(acc[p][2 * np + 1], ap, b + 2, acc[p][2 * np + 1]);
                }
            }
        }
    });
    UNROLL
    for (int p = 0; p < LORA_MAX_GROUP; p++) {
        if (p >= g.P) continue;  // (not break: the loop must unroll)
        __nv_bfloat16 *up = u.p[p];
        float *part = partials + ((int64_t)blockIdx.z * g.P + p) * M * g.r;
        lora_store_rows<NR>(acc[p], m0, M, g.r, [=](int64_t m, int j, float v) {
            if (gridDim.z == 1) up[m * g.r + j] = __float2bfloat16(v);
            else part[m * g.r + j] = v;
        });
    }
}

// Y_p += s·U_p·B_pᵀ: grid (ceil(M / 64), Σ_p ceil(out_p / 64)); a projection whose Y_p is
// NULL is skipped.
template <int NR>
__global__ void __launch_bounds__(LORA_THREADS)
    lora_up_kernel(LoraGroup g, LoraTensors u, int M, LoraTensors y) {
    constexpr int RP = 16 * NR, S = RP + 8;
    DYNAMIC_SHARED(__nv_bfloat16, smem);
    __nv_bfloat16 *su = smem, *sb = smem + LORA_TILE * S;
    float *tile = (float *)(smem + 2 * LORA_TILE * S);
    const int warp = threadIdx.x / 32;
    int ct = (int)blockIdx.y;
    const int p = lora_tile_projection(g.out, &ct), out = lora_pick(g.out, p);
    const __nv_bfloat16 *B = lora_pick(g.B, p), *up = lora_pick(u.p, p);
    __nv_bfloat16 *yp = lora_pick(y.p, p);
    if (!yp) return;  // the whole block
    const int64_t m0 = (int64_t)blockIdx.x * LORA_TILE, n0 = (int64_t)ct * LORA_TILE;
    lora_tile_load<LORA_TILE, RP>(su, up, g.r, M, g.r, m0, 0, lora_vec(up, g.r));
    lora_tile_load<LORA_TILE, RP>(sb, B, g.r, out, g.r, n0, 0, lora_vec(B, g.r));
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    float acc[8][4] = {};
    lora_mma_rows<false, false, LORA_TILE / 16, NR>(acc, su, S, warp * 16, sb, S);
    UNROLL
    for (int nt = 0; nt < 8; nt++)
        UNROLL
        for (int i = 0; i < 4; i++) acc[nt][i] *= g.scale;
    lora_stage_tile(tile, acc);
    __syncthreads();
    lora_tile_accumulate(yp, out, M, out, m0, n0, tile, lora_vec(yp, out));
}

// ---------------------------------------------------------------------------------------
// Backward

// G (or its partials): grid (ceil(M / 64), P, splits of out), per_split columns of out_p
// per split (a multiple of LORA_KT).
template <int NR>
__global__ void __launch_bounds__(LORA_THREADS)
    lora_g_kernel(LoraGroup g, LoraTensors dy, int M, __nv_bfloat16 *gm, float *partials, int per_split) {
    constexpr int RP = 16 * NR, SY = LORA_KT + 8, SB = RP + 8;
    DYNAMIC_SHARED(__nv_bfloat16, smem);
    const int stage_elems = LORA_TILE * SY + LORA_KT * SB, warp = threadIdx.x / 32;
    const int p = (int)blockIdx.y, out = lora_pick(g.out, p);
    const int64_t m0 = (int64_t)blockIdx.x * LORA_TILE, k_begin = (int64_t)blockIdx.z * per_split;
    const int64_t k_end = k_begin + per_split < out ? k_begin + per_split : out;
    const int tiles = (int)CEIL_DIV(k_end - k_begin, (int64_t)LORA_KT);
    const __nv_bfloat16 *d = lora_pick(dy.p, p), *B = lora_pick(g.B, p);
    float acc[2 * NR][4] = {};
    auto load = [&](int t) {
        __nv_bfloat16 *st = smem + t % 2 * stage_elems;
        int64_t k0 = k_begin + (int64_t)t * LORA_KT;
        lora_tile_load<LORA_TILE, LORA_KT>(st, d, out, M, k_end, m0, k0, lora_vec(d, out));
        lora_tile_load<LORA_KT, RP>(st + LORA_TILE * SY, B, g.r, k_end, g.r, k0, 0, lora_vec(B, g.r));
        cp_async_commit();
    };
    lora_pipeline(tiles, load, [&](int t) {
        const __nv_bfloat16 *st = smem + t % 2 * stage_elems;
        lora_mma_rows<false, true, NR, LORA_KT / 16>(acc, st, SY, warp * 16, st + LORA_TILE * SY, SB);  // dY·B
    });
    lora_store_rows<NR>(acc, m0, M, g.r, [&](int64_t m, int j, float v) {
        if (gridDim.z == 1) gm[((int64_t)p * M + m) * g.r + j] = __float2bfloat16(g.scale * v);
        else partials[(((int64_t)blockIdx.z * g.P + p) * M + m) * g.r + j] = v;
    });
}

// dB (or its partials): grid (Σ_p ceil(out_p / 64), chunks of M), chunk_rows rows each
// (a multiple of LORA_KT). Warp w: rows 16w.. of the tile, all r columns.
template <int NR>
__global__ void __launch_bounds__(LORA_THREADS)
    lora_db_kernel(LoraGroup g, LoraTensors dy, LoraTensors u, int M, float *partials, int chunk_rows) {
    constexpr int RP = 16 * NR, SY = LORA_TILE + 8, SU = RP + 8;
    DYNAMIC_SHARED(__nv_bfloat16, smem);
    const int stage_elems = LORA_KT * SY + LORA_KT * SU, warp = threadIdx.x / 32;
    int ct = (int)blockIdx.x;
    const int p = lora_tile_projection(g.out, &ct), out = lora_pick(g.out, p);
    const int64_t n0 = (int64_t)ct * LORA_TILE, m_begin = (int64_t)blockIdx.y * chunk_rows;
    const int64_t m_end = m_begin + chunk_rows < M ? m_begin + chunk_rows : M;
    const int tiles = (int)CEIL_DIV(m_end - m_begin, (int64_t)LORA_KT);
    const __nv_bfloat16 *d = lora_pick(dy.p, p), *up = lora_pick(u.p, p);
    float *dB = lora_pick(g.dB, p);
    float acc[2 * NR][4] = {};
    auto load = [&](int t) {
        __nv_bfloat16 *st = smem + t % 2 * stage_elems;
        int64_t k0 = m_begin + (int64_t)t * LORA_KT;
        lora_tile_load<LORA_KT, LORA_TILE>(st, d, out, m_end, out, k0, n0, lora_vec(d, out));
        lora_tile_load<LORA_KT, RP>(st + LORA_KT * SY, up, g.r, m_end, g.r, k0, 0, lora_vec(up, g.r));
        cp_async_commit();
    };
    lora_pipeline(tiles, load, [&](int t) {
        const __nv_bfloat16 *st = smem + t % 2 * stage_elems;  // dY tile [m][n]: dYᵀ·U
        lora_mma_rows<true, true, NR, LORA_KT / 16>(acc, st, SY, warp * 16, st + LORA_KT * SY, SU);
    });
    const int64_t total = lora_db_offset(g, g.P), offset = lora_db_offset(g, p);
    lora_store_rows<NR>(acc, n0, out, g.r, [&](int64_t n, int j, float v) {
        if (gridDim.y == 1) dB[n * g.r + j] += g.scale * v;
        else partials[(int64_t)blockIdx.y * total + offset + n * g.r + j] = v;
    });
}

// dA (or its partials): grid (ceil(in / 64), P, chunks of M). Warp w: columns 16w.. of the
// tile, all r rows.
template <int NR>
__global__ void __launch_bounds__(LORA_THREADS)
    lora_da_kernel(LoraGroup g, const __nv_bfloat16 *x, const __nv_bfloat16 *gm, int M, float *partials,
                   int chunk_rows, uint64_t threshold, float keep) {
    constexpr int RP = 16 * NR, SG = RP + 8, SX = LORA_TILE + 8;
    DYNAMIC_SHARED(__nv_bfloat16, smem);
    const int stage_elems = LORA_KT * SG + LORA_KT * SX, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int p = (int)blockIdx.y;
    const __nv_bfloat16 *gp = gm + (int64_t)p * M * g.r;
    const int64_t i0 = (int64_t)blockIdx.x * LORA_TILE, m_begin = (int64_t)blockIdx.z * chunk_rows;
    const int64_t m_end = m_begin + chunk_rows < M ? m_begin + chunk_rows : M;
    const int tiles = (int)CEIL_DIV(m_end - m_begin, (int64_t)LORA_KT);
    const uint64_t seed = lora_pick(g.dropout_state, p);
    float *dA = lora_pick(g.dA, p);
    float acc[NR][2][4] = {};
    auto load = [&](int t) {
        __nv_bfloat16 *st = smem + t % 2 * stage_elems;
        int64_t k0 = m_begin + (int64_t)t * LORA_KT;
        lora_tile_load<LORA_KT, RP>(st, gp, g.r, m_end, g.r, k0, 0, lora_vec(gp, g.r));
        lora_tile_load<LORA_KT, LORA_TILE>(st + LORA_KT * SG, x, g.in, m_end, g.in, k0, i0, lora_vec(x, g.in));
        cp_async_commit();
    };
    lora_pipeline(tiles, load, [&](int t) {
        const __nv_bfloat16 *st = smem + t % 2 * stage_elems;
        UNROLL
        for (int ks = 0; ks < LORA_KT / 16; ks++) {
            unsigned b[4];
            lora_frag_b<true>(b, st + LORA_KT * SG, SX, warp * 16, ks * 16);  // Xd: the tile is [m][i]
            if (threshold) {
                // b[2q + h]: rows m, m + 1 (h = 0) or m + 8, m + 9 (h = 1), column i + 8q
                int64_t m = m_begin + (int64_t)t * LORA_KT + ks * 16 + lane % 4 * 2, i = i0 + warp * 16 + lane / 4;
                UNROLL
                for (int q = 0; q < 4; q++) {
                    int64_t at = (m + q % 2 * 8) * g.in + i + q / 2 * 8;
                    b[q] = lora_drop_pair(b[q], seed, at, at + g.in, threshold, keep);
                }
            }
            UNROLL
            for (int mt = 0; mt < NR; mt++) {
                unsigned a[4];
                lora_frag_a<true>(a, st, SG, mt * 16, ks * 16);  // G_pᵀ: the tile is [m][j]
                mma_m16n8k16_bf16(acc[mt][0], a, b, acc[mt][0]);
                mma_m16n8k16_bf16(acc[mt][1], a, b + 2, acc[mt][1]);
            }
        }
    });
    const int64_t total = (int64_t)g.P * g.r * g.in, offset = (int64_t)p * g.r * g.in;
    UNROLL
    for (int mt = 0; mt < NR; mt++)
        UNROLL
        for (int nt = 0; nt < 2; nt++)
            UNROLL
            for (int i = 0; i < 4; i++) {
                int j = mt * 16 + lane / 4 + i / 2 * 8;
                int64_t col = i0 + warp * 16 + nt * 8 + lane % 4 * 2 + i % 2;
                if (j >= g.r || col >= g.in) continue;
                if (gridDim.z == 1) dA[j * g.in + col] += acc[mt][nt][i];
                else partials[(int64_t)blockIdx.z * total + offset + j * g.in + col] = acc[mt][nt][i];
            }
}

// dX += Σ_p (G_p·A_p) ∘ mask_p: grid (ceil(M / 64), ceil(in / 64)).
template <int NR>
__global__ void __launch_bounds__(LORA_THREADS)
    lora_dx_kernel(LoraGroup g, const __nv_bfloat16 *gm, int M, __nv_bfloat16 *dx, uint64_t threshold, float keep) {
    constexpr int RP = 16 * NR, SG = RP + 8, SA = LORA_TILE + 8;
    DYNAMIC_SHARED(__nv_bfloat16, smem);
    __nv_bfloat16 *sg = smem, *sa = smem + LORA_TILE * SG;
    float *tile = (float *)(sa + RP * SA);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t m0 = (int64_t)blockIdx.x * LORA_TILE, i0 = (int64_t)blockIdx.y * LORA_TILE;
    float total[8][4] = {};
    UNROLL
    for (int p = 0; p < LORA_MAX_GROUP; p++) {
        if (p >= g.P) continue;  // (not break: the loop must unroll)
        const __nv_bfloat16 *gp = gm + (int64_t)p * M * g.r;
        lora_tile_load<LORA_TILE, RP>(sg, gp, g.r, M, g.r, m0, 0, lora_vec(gp, g.r));
        lora_tile_load<RP, LORA_TILE>(sa, g.A[p], g.in, g.r, g.in, 0, i0, lora_vec(g.A[p], g.in));
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
        float acc[8][4] = {};
        lora_mma_rows<false, true, LORA_TILE / 16, NR>(acc, sg, SG, warp * 16, sa, SA);
        UNROLL
        for (int nt = 0; nt < 8; nt++)
            UNROLL
            for (int i = 0; i < 4; i++) {
                int64_t at = (m0 + warp * 16 + lane / 4 + i / 2 * 8) * g.in + i0 + nt * 8 + lane % 4 * 2 + i % 2;
                bool kept = !threshold || lora_kept(g.dropout_state[p], at, threshold);
                total[nt][i] += kept ? (threshold ? acc[nt][i] * keep : acc[nt][i]) : 0.0f;
            }
        __syncthreads();  // before the next projection's tiles
    }
    lora_stage_tile(tile, total);
    __syncthreads();
    lora_tile_accumulate(dx, g.in, M, g.in, m0, i0, tile, lora_vec(dx, g.in));
}

// The partials of `ranges` ranges, each `total` floats, added up in range order; values
// [offset[p], offset[p + 1]) of a range belong to projection p's tensor: the bf16 bf16[p]
// = bf16(scale·Σ) when bf16 is given, else added into the fp32 f32[p] (+= scale·Σ).
typedef struct {
    __nv_bfloat16 *bf16[LORA_MAX_GROUP];
    float *f32[LORA_MAX_GROUP];
    int64_t offset[LORA_MAX_GROUP + 1];
} LoraReduce;

__global__ void __launch_bounds__(LORA_THREADS)
    lora_reduce_kernel(LoraReduce r, const float *partials, int ranges, int64_t total, float scale) {
    int64_t i = (int64_t)blockIdx.x * LORA_THREADS + threadIdx.x;
    if (i >= total) return;
    float sum = partials[i];
    for (int c = 1; c < ranges; c++) sum += partials[(int64_t)c * total + i];
    int p = i >= r.offset[2] ? 2 : i >= r.offset[1] ? 1 : 0;
    int64_t at = i - (p == 2 ? r.offset[2] : p == 1 ? r.offset[1] : 0);
    if (r.bf16[0]) lora_pick(r.bf16, p)[at] = __float2bfloat16(scale * sum);
    else lora_pick(r.f32, p)[at] += scale * sum;
}

// ---------------------------------------------------------------------------------------
// The cast: dst[i] = bf16(src[i]) (round to nearest even), 8 values a thread as two float4
// loads and one 16-byte store where both are 16-byte aligned.
__global__ void __launch_bounds__(LORA_CAST_THREADS) lora_cast_kernel(__nv_bfloat16 *dst, const float *src, int64_t n,
                                                                    bool vec) {
    int64_t i = ((int64_t)blockIdx.x * LORA_CAST_THREADS + threadIdx.x) * 8;
    if (i >= n) return;
    if (vec && i + 8 <= n) {
        float4 a = *(const float4 *)(src + i), b = *(const float4 *)(src + i + 4);
        *(uint4 *)(dst + i) = uint4{pack_bf16x2(a.x, a.y), pack_bf16x2(a.z, a.w), pack_bf16x2(b.x, b.y),
                                    pack_bf16x2(b.z, b.w)};
    } else {
        for (int64_t e = i; e < n && e < i + 8; e++) dst[e] = __float2bfloat16(src[e]);
    }
}

// ---------------------------------------------------------------------------------------
// Host side

static inline void lora_require(bool ok, const char *what) {
    if (ok) return;
    fprintf(stderr, "error: %s\n", what);
    exit(1);
}

static inline void lora_check_group(const LoraGroup *g) {
    lora_require(g->P >= 1 && g->P <= LORA_MAX_GROUP, "lora: a group has 1 to 3 projections");
    lora_require(g->r >= 1 && g->r <= LORA_MAX_R, "lora: the rank must be 1..64");
    lora_require(g->in >= 1, "lora: the input must have at least one feature");
    lora_require(g->dropout >= 0.0f && g->dropout < 1.0f, "lora: the dropout must be in [0, 1)");
    for (int p = 0; p < g->P; p++) lora_require(g->out[p] >= 1, "lora: every projection needs an output");
}

// The number of ranges of `length` in pieces of `piece` (rounded up to a multiple of `unit`),
// at most LORA_MAX_RANGES; *per gets the length of a range.
static inline int lora_ranges(int64_t length, int piece, int unit, int *per) {
    int64_t p = CEIL_DIV((int64_t)(piece > 0 ? piece : 1), (int64_t)unit) * unit;
    if (CEIL_DIV(length, p) > LORA_MAX_RANGES) p = CEIL_DIV(CEIL_DIV(length, (int64_t)LORA_MAX_RANGES), (int64_t)unit) * unit;
    *per = (int)p;
    return (int)CEIL_DIV(length, p);
}

static inline int lora_max_out(const LoraGroup *g) {
    int o = 0;
    for (int p = 0; p < g->P; p++) o = g->out[p] > o ? g->out[p] : o;
    return o;
}

// Scratch floats the forward and backward of group g need at M rows (every range count
// at its shape: the reductions run one after another and share the buffer).
static inline size_t lora_scratch_floats(const LoraGroup *g, int M, int chunk_rows, int split_cols) {
    int per;
    size_t R = (size_t)g->P * g->r, most = 0;
    int down = lora_ranges(g->in, split_cols, LORA_KT_DOWN, &per), gs = lora_ranges(lora_max_out(g), split_cols, LORA_KT, &per);
    int chunks = lora_ranges(M, chunk_rows, LORA_KT, &per);
    size_t need[] = {down > 1 ? (size_t)down * M * R : 0, gs > 1 ? (size_t)gs * M * R : 0,
                     chunks > 1 ? (size_t)chunks * lora_db_offset(*g, g->P) : 0,
                     chunks > 1 ? (size_t)chunks * R * g->in : 0};
    for (size_t n : need) most = n > most ? n : most;
    return most;
}

static inline void lora_reduce(const LoraReduce &r, const float *partials, int ranges, int64_t total, float scale,
                               cudaStream_t stream) {
    LAUNCH(lora_reduce_kernel, (unsigned)CEIL_DIV(total, (int64_t)LORA_THREADS), LORA_THREADS, 0, stream, r, partials,
           ranges, total, scale);
}

// A reduction onto one tensor per projection, projection p's taking `size[p]` values of a
// range: bf16 outputs when bf16 is not NULL, else fp32 ones.
static inline LoraReduce lora_reduce_onto(const LoraGroup *g, __nv_bfloat16 *const *bf16, float *const *f32,
                                          const int64_t *size) {
    LoraReduce r;
    memset(&r, 0, sizeof(r));
    for (int p = 0; p < LORA_MAX_GROUP; p++) {
        if (p < g->P) {
            if (bf16) r.bf16[p] = bf16[p];
            if (f32) r.f32[p] = f32[p];
        }
        r.offset[p + 1] = r.offset[p] + (p < g->P ? size[p] : 0);
    }
    return r;
}

// The projections' pointers for a kernel argument (the kernels only read U and dY).
static inline LoraTensors lora_tensors(const LoraGroup *g, const __nv_bfloat16 *const *t) {
    LoraTensors v = {{NULL, NULL, NULL}};
    for (int p = 0; p < g->P; p++) v.p[p] = (__nv_bfloat16 *)t[p];
    return v;
}

template <int NR>
inline void lora_forward_nr(const LoraGroup *g, const __nv_bfloat16 *x, int M, __nv_bfloat16 *const u[],
                            __nv_bfloat16 *const y[], const LoraScratch *s, cudaStream_t stream) {
    constexpr int RP = 16 * NR;
    uint64_t threshold = g->dropout > 0.0f ? lora_dropout_threshold(g->dropout) : 0;
    float keep = 1.0f / (1.0f - g->dropout);
    int per = (int)CEIL_DIV((int64_t)g->in, (int64_t)LORA_KT_DOWN) * LORA_KT_DOWN, splits = 1;
    if (s) splits = lora_ranges(g->in, s->split_cols, LORA_KT_DOWN, &per);
    int64_t R = (int64_t)g->P * g->r;
    if (splits > 1)
        lora_require((size_t)splits * M * R <= s->partial_capacity, "lora_forward: the scratch is too small");
    size_t smem = 2 * (size_t)(LORA_TILE + g->P * RP) * (LORA_KT_DOWN + 8) * sizeof(__nv_bfloat16);
    LAUNCH(lora_down_kernel<NR>, dim3((unsigned)CEIL_DIV(M, LORA_TILE), 1, (unsigned)splits), LORA_THREADS, smem, stream,
           *g, x, M, lora_tensors(g, (const __nv_bfloat16 *const *)u), splits > 1 ? s->partials : NULL, per, threshold,
           keep);
    if (splits > 1) {
        int64_t size[LORA_MAX_GROUP] = {(int64_t)M * g->r, (int64_t)M * g->r, (int64_t)M * g->r};
        lora_reduce(lora_reduce_onto(g, u, NULL, size), s->partials, splits, M * R, 1.0f, stream);
    }
    int tiles = 0, any = 0;
    for (int p = 0; p < g->P; p++) tiles += (int)CEIL_DIV(g->out[p], LORA_TILE), any |= y[p] != NULL;
    if (!any) return;
    smem = 2 * (size_t)LORA_TILE * (RP + 8) * sizeof(__nv_bfloat16) + (size_t)LORA_TILE * (LORA_TILE + 4) * sizeof(float);
    LAUNCH(lora_up_kernel<NR>, dim3((unsigned)CEIL_DIV(M, LORA_TILE), (unsigned)tiles), LORA_THREADS, smem, stream, *g,
           lora_tensors(g, (const __nv_bfloat16 *const *)u), M, lora_tensors(g, (const __nv_bfloat16 *const *)y));
}

template <int NR>
inline void lora_backward_nr(const LoraGroup *g, const __nv_bfloat16 *x, const __nv_bfloat16 *const u[],
                             const __nv_bfloat16 *const dy[], int M, const LoraScratch *s, cudaStream_t stream) {
    constexpr int RP = 16 * NR;
    uint64_t threshold = g->dropout > 0.0f ? lora_dropout_threshold(g->dropout) : 0;
    float keep = 1.0f / (1.0f - g->dropout);
    int64_t R = (int64_t)g->P * g->r;
    int per_g, splits = lora_ranges(lora_max_out(g), s->split_cols, LORA_KT, &per_g);
    int per_m, chunks = lora_ranges(M, s->chunk_rows, LORA_KT, &per_m);
    size_t smem = 2 * (size_t)(LORA_TILE * (LORA_KT + 8) + LORA_KT * (RP + 8)) * sizeof(__nv_bfloat16);
    int64_t size[LORA_MAX_GROUP];

    // G_p = s·dY_p·B_p
    LAUNCH(lora_g_kernel<NR>, dim3((unsigned)CEIL_DIV(M, LORA_TILE), (unsigned)g->P, (unsigned)splits), LORA_THREADS,
           smem, stream, *g, lora_tensors(g, dy), M, s->g, splits > 1 ? s->partials : NULL, per_g);
    if (splits > 1) {
        __nv_bfloat16 *gp[LORA_MAX_GROUP];
        for (int p = 0; p < g->P; p++) gp[p] = s->g + (size_t)p * M * g->r, size[p] = (int64_t)M * g->r;
        lora_reduce(lora_reduce_onto(g, gp, NULL, size), s->partials, splits, M * R, g->scale, stream);
    }
    // dB_p += s·dY_pᵀ·U_p
    int tiles = 0;
    for (int p = 0; p < g->P; p++) tiles += (int)CEIL_DIV(g->out[p], LORA_TILE), size[p] = (int64_t)g->out[p] * g->r;
    LAUNCH(lora_db_kernel<NR>, dim3((unsigned)tiles, (unsigned)chunks), LORA_THREADS, smem, stream, *g,
           lora_tensors(g, dy), lora_tensors(g, u), M, chunks > 1 ? s->partials : NULL, per_m);
    if (chunks > 1) lora_reduce(lora_reduce_onto(g, NULL, g->dB, size), s->partials, chunks, lora_db_offset(*g, g->P), g->scale, stream);
    // dA_p += G_pᵀ·Xd_p
    for (int p = 0; p < g->P; p++) size[p] = (int64_t)g->r * g->in;
    LAUNCH(lora_da_kernel<NR>, dim3((unsigned)CEIL_DIV(g->in, LORA_TILE), (unsigned)g->P, (unsigned)chunks), LORA_THREADS,
           smem, stream, *g, x, (const __nv_bfloat16 *)s->g, M, chunks > 1 ? s->partials : NULL, per_m, threshold,
           keep);
    if (chunks > 1) lora_reduce(lora_reduce_onto(g, NULL, g->dA, size), s->partials, chunks, R * g->in, 1.0f, stream);
}

template <int NR>
inline void lora_backward_dx_nr(const LoraGroup *g, int M, __nv_bfloat16 *dx, const LoraScratch *s,
                                cudaStream_t stream) {
    constexpr int RP = 16 * NR;
    uint64_t threshold = g->dropout > 0.0f ? lora_dropout_threshold(g->dropout) : 0;
    float keep = 1.0f / (1.0f - g->dropout);
    size_t smem = (size_t)(LORA_TILE * (RP + 8) + RP * (LORA_TILE + 8)) * sizeof(__nv_bfloat16) +
                  (size_t)LORA_TILE * (LORA_TILE + 4) * sizeof(float);
    LAUNCH(lora_dx_kernel<NR>, dim3((unsigned)CEIL_DIV(M, LORA_TILE), (unsigned)CEIL_DIV(g->in, LORA_TILE)),
           LORA_THREADS, smem, stream, *g, (const __nv_bfloat16 *)s->g, M, dx, threshold, keep);
}

// The forward of group g on X [M, in]: every u[p] [M, r] written, every y[p] [M, out_p] +=
// s·U_p·B_pᵀ (y[p] NULL: that projection's U only, as an activation recompute wants). s:
// scratch for the split reduction of U (NULL: in is not split).
inline void lora_forward(const LoraGroup *g, const __nv_bfloat16 *x, int M, __nv_bfloat16 *const u[],
                         __nv_bfloat16 *const y[], const LoraScratch *s, cudaStream_t stream) {
    lora_check_group(g);
    if (M <= 0) return;
    switch ((g->r + 15) / 16) {
        case 1: lora_forward_nr<1>(g, x, M, u, y, s, stream); break;
        case 2: lora_forward_nr<2>(g, x, M, u, y, s, stream); break;
        case 3: lora_forward_nr<3>(g, x, M, u, y, s, stream); break;
        default: lora_forward_nr<4>(g, x, M, u, y, s, stream); break;
    }
}

// The backward's weight gradients: G_p into the scratch (for lora_backward_dx), g->dA[p] and
// g->dB[p] += their gradients. x: the forward's input, u[p]: its U_p, dy[p]: [M, out_p].
inline void lora_backward(const LoraGroup *g, const __nv_bfloat16 *x, const __nv_bfloat16 *const u[],
                          const __nv_bfloat16 *const dy[], int M, const LoraScratch *s, cudaStream_t stream) {
    lora_check_group(g);
    if (M <= 0) return;
    int64_t R = (int64_t)g->P * g->r;
    lora_require(s && s->g && s->g_capacity >= (size_t)M * R, "lora_backward: the scratch's G is too small");
    lora_require(lora_scratch_floats(g, M, s->chunk_rows, s->split_cols) <= s->partial_capacity,
                 "lora_backward: the scratch is too small");
    switch ((g->r + 15) / 16) {
        case 1: lora_backward_nr<1>(g, x, u, dy, M, s, stream); break;
        case 2: lora_backward_nr<2>(g, x, u, dy, M, s, stream); break;
        case 3: lora_backward_nr<3>(g, x, u, dy, M, s, stream); break;
        default: lora_backward_nr<4>(g, x, u, dy, M, s, stream); break;
    }
}

// The backward's input gradient, after lora_backward (whose G it reads from the scratch):
// dx [M, in] += Σ_p (G_p·A_p) ∘ mask_p.
inline void lora_backward_dx(const LoraGroup *g, int M, __nv_bfloat16 *dx, const LoraScratch *s, cudaStream_t stream) {
    lora_check_group(g);
    if (M <= 0) return;
    lora_require(s && s->g && s->g_capacity >= (size_t)M * g->P * g->r, "lora_backward_dx: the scratch's G is too small");
    switch ((g->r + 15) / 16) {
        case 1: lora_backward_dx_nr<1>(g, M, dx, s, stream); break;
        case 2: lora_backward_dx_nr<2>(g, M, dx, s, stream); break;
        case 3: lora_backward_dx_nr<3>(g, M, dx, s, stream); break;
        default: lora_backward_dx_nr<4>(g, M, dx, s, stream); break;
    }
}

// dst[n] = bf16(src[n]): the bf16 copies of the fp32 masters, after each optimizer step.
inline void lora_cast(__nv_bfloat16 *dst, const float *src, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    LAUNCH(lora_cast_kernel, (unsigned)CEIL_DIV(n, (int64_t)LORA_CAST_THREADS * 8), LORA_CAST_THREADS, 0, stream, dst,
           src, n, aligned16(dst) && aligned16(src));
}

#endif
