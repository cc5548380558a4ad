/*
 * nf4_matmul.cuh: Y[M, N] = X[M, K]·Wᵀ with the frozen weight W [N, K] in NF4 (Nf4Device of
 * kernels/nf4.cuh: bitsandbytes' layout, double-quantized absmax), read as 4-bit codes, for
 * the small M of decoding, batched generation and short evaluation batches (M <= 64); and
 * nf4_linear, which takes this kernel up to NF4_LINEAR_FUSED_MAX_M rows and dequantize +
 * cuBLASLt (kernels/matmul.cuh) above.
 *
 * Math: Y[m][n] = bf16(Σ_k w[n][k]·X[m][k]) with w = bf16(NF4[code]·absmax) rounded once
 * from float32, i.e. exactly the bf16 weight nf4_dequantize writes; the products are exact
 * in fp32 (tensor cores, bf16 x bf16) and summed in fp32. So it is the same product that
 * dequantize + cuBLASLt computes, up to the order of the fp32 additions, and its error
 * bound against the exact sum over those bf16 weights is matmul.cuh's matmul_tolerance with
 * the same K (the split-K partials add fewer than K/128 more terms, inside that bound).
 *
 * The mma: W is the A operand (16 rows of N by 16 of K), Xᵀ the B operand (16 of K by 8
 * tokens), so that M = 1..8 fits one n8 tile and M <= 64 eight (MT tiles: M <= 8, 16, 32,
 * 64 -> MT = 1, 2, 4, 8). A warp owns 16 rows of W and walks K in segments of 128: lane
 * (g = lane / 4, t = lane % 4) loads the 32 codes k0..k0+31 (k0 = 128·segment + 32t) of rows
 * g and g + 8 with one 16-byte load each. mma.sync wants lane t to hold columns 2t, 2t+1,
 * 2t+8, 2t+9 of each 16-wide k step, which are spread over 64 bytes of a row; but the sum
 * over k does not care which k a step calls "column 2t": in step s (0..7) lane t's logical
 * columns 2t, 2t+1 are k0 + 4s, k0 + 4s + 1 and 2t+8, 2t+9 are k0 + 4s + 2, k0 + 4s + 3. The
 * B operand follows the same map: its two registers for step s are X[m][k0 + 4s .. k0 + 4s
 * + 3], 8 contiguous bytes, so a lane reads its 32 values of X (per token) as four 16-byte
 * loads too. Codes are dequantized in registers: one byte (two codes) is one 8-byte load
 * of (NF4[high], NF4[low]) from a shared table kept in 16 copies (entry b of copy c at
 * 16b + c; lane l reads copy l % 16, in banks 2(l % 16) and 2(l % 16) + 1: no conflicts
 * whatever the codes), two fp32 multiplies by the chunk's absmax (one per 32 codes:
 * blocksize >= 32 and the chunk starts at a multiple of 32 of the flat index) and one
 * conversion to a bf16 pair. A lane issues the loads of its next segment's codes before it
 * dequantizes the current ones.
 *
 * Work split: a block is 4 warps on 64 consecutive rows of W and one range of segments
 * (they share X's segment through L1). Where N gives fewer blocks than
 * NF4_MATMUL_BLOCKS_PER_SM per multiprocessor, K is split over blockIdx.y: each split
 * writes fp32 partials of its rows, and a second kernel adds them up in split order and
 * rounds once (no atomics, no communication between the blocks of a launch): the same
 * bits on every run of a given shape on a given GPU (the number of splits depends on the
 * SM count). That second launch costs a few microseconds at M = 1, where the product itself
 * takes ~3 us at Mistral's 4096 x 4096: a last-block reduction in the same launch would
 * save it, but its correctness rests on fences between blocks that the CUDA-on-CPU harness
 * does not model (it reports the partials' reads as a race), so it is left for when a GPU
 * can measure what it gains. Splits are capped so that splits·M <= NF4_MATMUL_SPLIT_ROWS
 * (the partials, written and read in fp32, at most 8·64·N bytes: a quarter of the codes'
 * N·K/2 at K = 4096) and so that each split has at least NF4_MATMUL_MIN_SEGMENTS segments
 * (the table fill and the reduction amortise).
 *
 * Shapes: any M in 1..64, N >= 1, K >= 1 and blocksize (nf4.cuh). The fast path needs K a
 * multiple of 32 and X, the codes 16-byte aligned; otherwise (K = 48 of tiny models, where
 * NF4 blocks and 32-code chunks cross rows) the same kernel reads codes and X value by
 * value (`vector` = false): correct, not fast.
 *
 * Speed (not yet measured on a GPU): at M = 1 the product is bound by the weight's bytes,
 * 0.516 per weight at blocksize 64 (codes, qabsmax, absmax2) against 2 for bf16, so the
 * goal is >= 3.5x a bf16 GEMV (the bound is 2/0.516 = 3.88x with double-quantized
 * statistics, 4.13 bits a weight; 3.76x with 4.25 bits); the dequantization costs about 3
 * instructions a weight (byte extract, table load, two multiplies and a pack per two
 * weights), ~70% of an H100's issue rate at its DRAM peak: the kernel can only just keep
 * up, hence the conflict-free byte table rather than a nibble at a time.
 *
 * nf4_linear's threshold, NF4_LINEAR_FUSED_MAX_M = 64: this kernel reads 0.52 bytes a
 * weight once; dequantize + cuBLASLt moves ~4.5 (codes in, bf16 out, bf16 in again), so
 * the fused kernel wins while its tensor-core work stays under its memory time: 2M FLOPs
 * per 0.52 bytes reaches an H100's mma.sync ridge (~600 TFLOP/s / 3.35 TB/s = 180 FLOP/B)
 * near M = 48-64, and 64 is also where published fused 4-bit kernels hand over to a dense
 * GEMM on Hopper (bitsandbytes 0.50 up to M = 16..64 on sm90, vLLM 50, exllamav2 32;
 * reference/qlora.md §G). Above it the dense GEMM's tensor cores (wgmma) win and the
 * dequantization is amortised over M rows.
 */
#ifndef PERSONA_NF4_MATMUL_CUH
#define PERSONA_NF4_MATMUL_CUH

#include <stdint.h>

#include "common.cuh"
#include "matmul.cuh"
#include "nf4.cuh"
#include "ptx.cuh"

#define NF4_MATMUL_MAX_M 64          // 8 n8 tiles of accumulators in registers
#define NF4_LINEAR_FUSED_MAX_M 64    // nf4_linear: this kernel up to here (see the top)
#define NF4_MATMUL_WARPS 4           // per block, each on 16 rows of W
#define NF4_MATMUL_THREADS (NF4_MATMUL_WARPS * 32)
#define NF4_MATMUL_BLOCK_ROWS (NF4_MATMUL_WARPS * 16)
#define NF4_MATMUL_SEGMENT 128       // k per segment: 32 per lane of a quad
#define NF4_MATMUL_BLOCKS_PER_SM 4   // the split-K target: 16 warps an SM
#define NF4_MATMUL_SPLIT_ROWS 64     // splits·M at most this
#define NF4_MATMUL_MIN_SEGMENTS 4    // segments per split at least this
#define NF4_PAIR_COPIES 16           // the byte table's copies (128 bytes per entry)

static_assert(NF4_LINEAR_FUSED_MAX_M <= NF4_MATMUL_MAX_M, "the fused kernel's limit");

// The split-K scratch: partials of NF4_MATMUL_SPLIT_ROWS rows of Y in fp32. One scratch
// serves one stream at a time.
typedef struct {
    float *partials;  // NF4_MATMUL_SPLIT_ROWS · max_n
    int64_t max_n;
    int sms;          // the device's multiprocessors (the split heuristic)
} Nf4MatmulScratch;

// ---------------------------------------------------------------------------------------
// Device side

// The lane's codes of one segment, rows g and g + 8: 32 codes and their absmax each (zero
// past the end of K or of N, which the arithmetic then turns into zero weights). Such a
// lane loads chunk 0 and discards it, so that no lane branches (the mma after this needs
// the warp converged).
typedef struct {
    uint4 codes[2];
    float absmax[2];
} Nf4Chunk;

__device__ __forceinline__ void nf4_chunk_load(Nf4Chunk &c, const Nf4Device &q, const int64_t row[2], int64_t k0,
                                               float offset, int log2_blocksize) {
    UNROLL
    for (int h = 0; h < 2; h++) {
        bool valid = row[h] < q.rows && k0 < q.cols;
        int64_t e = valid ? row[h] * q.cols + k0 : 0;
        uint4 codes = ((const uint4 *)q.packed)[e / 32];
        float absmax = nf4_absmax(q, e >> log2_blocksize, offset);
        c.codes[h] = valid ? codes : uint4{0, 0, 0, 0};
        c.absmax[h] = valid ? absmax : 0.0f;
    }
}

// w[i] = the bf16 pair (value 2i, value 2i + 1) of a chunk of 32 codes (byte i, low byte
// first, high nibble first), each NF4·absmax rounded once. table: the byte table,
// copy_offset = 8·(lane % 16) bytes.
__device__ __forceinline__ void nf4_chunk_dequantize(unsigned w[16], const uint4 &codes, float absmax,
                                                     const float2 *table, unsigned copy_offset) {
    unsigned words[4] = {codes.x, codes.y, codes.z, codes.w};
    UNROLL
    for (int i = 0; i < 16; i++) {
        unsigned offset = (words[i / 4] >> (8 * (i % 4)) & 0xffu) << 7 | copy_offset;
        float2 pair = *(const float2 *)((const char *)table + offset);
        w[i] = pack_bf16x2(__fmul_rn(pair.x, absmax), __fmul_rn(pair.y, absmax));
    }
}

// The same for any K and alignment, value by value. The chunk's values lie in one row and
// in at most two NF4 blocks (blocksize >= 32), whose absmax are looked up once; values
// past the row or the matrix are zero (their reads clamped to the chunk's first value).
__device__ inline void nf4_chunk_dequantize_scalar(unsigned w[16], const Nf4Device &q, int64_t row, int64_t k0,
                                                   float offset, int log2_blocksize, const float *lut) {
    int64_t left = row < q.rows ? q.cols - k0 : 0;
    int valid = left <= 0 ? 0 : left > 32 ? 32 : (int)left;  // values of the chunk that exist
    int64_t first = valid ? row * q.cols + k0 : 0;
    int64_t b_first = first >> log2_blocksize, b_last = (first + (valid ? valid - 1 : 0)) >> log2_blocksize;
    float absmax_first = nf4_absmax(q, b_first, offset), absmax_last = nf4_absmax(q, b_last, offset);
    const uint8_t *bytes = q.packed + first / 2;
    int odd = (int)(first % 2), split = (int)(((b_first + 1) << log2_blocksize) - first);  // first value of b_last
    UNROLL
    for (int i = 0; i < 32; i++) {
        int at = odd + (i < valid ? i : 0);
        unsigned byte = bytes[at / 2];
        float v = __fmul_rn(lut[at % 2 ? byte & 15u : byte >> 4], i < split ? absmax_first : absmax_last);
        unsigned bits = i < valid ? __bfloat16_as_ushort(__float2bfloat16(v)) : 0u;
        if (i % 2 == 0) w[i / 2] = bits;
        else w[i / 2] |= bits << 16;
    }
}

// X[m][k0 .. k0 + 31] as four 16-byte packs (zeros past M or K, their reads clamped to
// X's first value, as above).
template <bool VEC>
__device__ __forceinline__ void nf4_x_load(uint4 xb[4], const __nv_bfloat16 *x, int M, int64_t K, int m, int64_t k0) {
    int64_t left = m < M ? K - k0 : 0;
    int valid = left <= 0 ? 0 : left > 32 ? 32 : (int)left;
    const __nv_bfloat16 *p = x + (valid ? (int64_t)m * K + k0 : 0);
    if (VEC) {  // whole chunks: valid is 0 or 32
        UNROLL
        for (int i = 0; i < 4; i++) {
            uint4 v = ((const uint4 *)p)[i];
            xb[i] = valid ? v : uint4{0, 0, 0, 0};
        }
    } else {
        // volatile: the loads stay where they are written (after the previous tile's mma,
        // which is volatile too) instead of all being hoisted, which would spill on sm_80
        const volatile unsigned short *v = (const volatile unsigned short *)p;
        unsigned w[16];
        UNROLL
        for (int i = 0; i < 32; i++) {
            unsigned bits = v[i < valid ? i : 0];
            bits = i < valid ? bits : 0u;
            if (i % 2 == 0) w[i / 2] = bits;
            else w[i / 2] |= bits << 16;
        }
        UNROLL
        for (int i = 0; i < 4; i++) xb[i] = uint4{w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]};
    }
}

// The block's shared memory: the NF4 values and the byte table. Declared in a non-template
// function: the CUDA-on-CPU harness's compiler drops the section of a template's statics,
// so the harness refuses __shared__ in one.
typedef struct {
    float lut[16];
    float2 table[256 * NF4_PAIR_COPIES];
} Nf4MatmulShared;

__device__ __forceinline__ Nf4MatmulShared *nf4_matmul_shared() {
    __shared__ Nf4MatmulShared shared;
    return &shared;
}

// Grid: (ceil(N / 64), splits); block: NF4_MATMUL_THREADS. Split blockIdx.y takes segments
// [blockIdx.y·per_split, +per_split). With one split Y is written directly; otherwise its
// partials[split][M][N] (fp32), which nf4_matmul_reduce_kernel adds up.
template <int MT, bool VEC>
__global__ void __launch_bounds__(NF4_MATMUL_THREADS)
    nf4_matmul_kernel(__nv_bfloat16 *y, float *partials, const __nv_bfloat16 *x, Nf4Device q,
                      int M, int log2_blocksize, int per_split) {
    Nf4MatmulShared *sh = nf4_matmul_shared();
    float *lut = sh->lut;
    float2 *table = sh->table;
    nf4_fill_table(lut);
    for (int i = threadIdx.x; i < 256 * NF4_PAIR_COPIES; i += NF4_MATMUL_THREADS) {
        int byte = i / NF4_PAIR_COPIES;
        table[i] = make_float2(lut[byte >> 4], lut[byte & 15]);
    }
    __syncthreads();
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const unsigned copy_offset = (unsigned)(lane % NF4_PAIR_COPIES) * sizeof(float2);
    const int64_t N = q.rows, K = q.cols, n0 = (int64_t)blockIdx.x * NF4_MATMUL_BLOCK_ROWS + threadIdx.x / 32 * 16;
    const int64_t row[2] = {n0 + g, n0 + g + 8};
    const int segments = (int)CEIL_DIV(K, (int64_t)NF4_MATMUL_SEGMENT), s_begin = (int)blockIdx.y * per_split;
    const int s_end = s_begin + per_split < segments ? s_begin + per_split : segments;
    const float offset = *q.offset;
    float acc[MT][4];
    UNROLL
    for (int j = 0; j < MT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

    if (n0 < N) {  // the whole warp
        Nf4Chunk now = {}, next = {};
        if (VEC) nf4_chunk_load(now, q, row, (int64_t)s_begin * NF4_MATMUL_SEGMENT + 32 * t, offset, log2_blocksize);
        for (int s = s_begin; s < s_end; s++) {
            const int64_t k0 = (int64_t)s * NF4_MATMUL_SEGMENT + 32 * t;
            unsigned w[2][16];  // rows g and g + 8, bf16 pairs of the chunk
            if (VEC) {
                if (s + 1 < s_end) nf4_chunk_load(next, q, row, k0 + NF4_MATMUL_SEGMENT, offset, log2_blocksize);
                UNROLL
                for (int h = 0; h < 2; h++) nf4_chunk_dequantize(w[h], now.codes[h], now.absmax[h], table, copy_offset);
                now = next;
            } else {
                UNROLL
                for (int h = 0; h < 2; h++) nf4_chunk_dequantize_scalar(w[h], q, row[h], k0, offset, log2_blocksize, lut);
            }
            UNROLL
            for (int j = 0; j < MT; j++) {
                uint4 xb[4];
                nf4_x_load<VEC>(xb, x, M, K, 8 * j + g, k0);
                UNROLL
                for (int st = 0; st < 8; st++) {  // logical columns 2t.. = k0 + 4st.., 2t+8.. = k0 + 4st + 2..
                    const unsigned a[4] = {w[0][2 * st], w[1][2 * st], w[0][2 * st + 1], w[1][2 * st + 1]};
                    const uint4 &v = xb[st / 2];
                    const unsigned b[2] = {st % 2 ? v.z : v.x, st % 2 ? v.w : v.y};
                    mma_m16n8k16_bf16(acc[j], a, b, acc[j]);
                }
            }
        }
    }

    // acc[j][2h + c] = Y[token 8j + 2t + c][row g + 8h]
    float *out = gridDim.y == 1 ? NULL : partials + (size_t)blockIdx.y * M * N;
    UNROLL
    for (int j = 0; j < MT; j++)
        UNROLL
        for (int i = 0; i < 4; i++) {
            int m = 8 * j + 2 * t + i % 2;
            int64_t n = row[i / 2];
            if (m >= M || n >= N) continue;
            if (out) out[m * N + n] = acc[j][i];
            else y[m * N + n] = __float2bfloat16(acc[j][i]);
        }
}

// y[i] = bf16(Σ_split partials[split][i]) over the M·N outputs, in split order.
__global__ void __launch_bounds__(NF4_MATMUL_THREADS)
    nf4_matmul_reduce_kernel(__nv_bfloat16 *y, const float *partials, int splits, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * NF4_MATMUL_THREADS + threadIdx.x;
    if (i >= n) return;
    float sum = partials[i];
    for (int sp = 1; sp < splits; sp++) sum += partials[sp * n + i];
    y[i] = __float2bfloat16(sum);
}

// ---------------------------------------------------------------------------------------
// Host side

static inline size_t nf4_matmul_scratch_bytes(int64_t max_n) {
    return (size_t)NF4_MATMUL_SPLIT_ROWS * max_n * sizeof(float);
}

// The scratch in `memory` (nf4_matmul_scratch_bytes(max_n) bytes of device memory) for
// weights of up to max_n rows.
static inline void nf4_matmul_scratch_init(Nf4MatmulScratch *s, void *memory, int64_t max_n) {
    int dev = 0;
    s->partials = (float *)memory;
    s->max_n = max_n;
    cuda_check(cudaGetDevice(&dev));
    cuda_check(cudaDeviceGetAttribute(&s->sms, cudaDevAttrMultiProcessorCount, dev));
}

// The number of K splits for an M x N x K product on `sms` multiprocessors (see the top).
static inline int nf4_matmul_splits(int M, int64_t N, int64_t K, int sms) {
    int64_t columns = CEIL_DIV(N, (int64_t)NF4_MATMUL_BLOCK_ROWS), segments = CEIL_DIV(K, (int64_t)NF4_MATMUL_SEGMENT);
    int64_t splits = CEIL_DIV((int64_t)NF4_MATMUL_BLOCKS_PER_SM * sms, columns);
    if (splits > NF4_MATMUL_SPLIT_ROWS / M) splits = NF4_MATMUL_SPLIT_ROWS / M;
    if (splits > segments / NF4_MATMUL_MIN_SEGMENTS) splits = segments / NF4_MATMUL_MIN_SEGMENTS;
    return splits < 1 ? 1 : (int)splits;
}

template <int MT>
inline void nf4_matmul_launch_mt(__nv_bfloat16 *y, const __nv_bfloat16 *x, const Nf4Device &q, int M, int splits,
                                 const Nf4MatmulScratch *scratch, bool vec, cudaStream_t stream) {
    int segments = (int)CEIL_DIV(q.cols, (int64_t)NF4_MATMUL_SEGMENT), per_split = CEIL_DIV(segments, splits);
    splits = CEIL_DIV(segments, per_split);  // no split without segments
    dim3 grid((unsigned)CEIL_DIV(q.rows, (int64_t)NF4_MATMUL_BLOCK_ROWS), (unsigned)splits);
    float *partials = splits > 1 ? scratch->partials : NULL;
    int log2 = nf4_log2_blocksize(q.blocksize);
    if (vec)
        LAUNCH((nf4_matmul_kernel<MT, true>), grid, NF4_MATMUL_THREADS, 0, stream, y, partials, x, q, M, log2, per_split);
    else
        LAUNCH((nf4_matmul_kernel<MT, false>), grid, NF4_MATMUL_THREADS, 0, stream, y, partials, x, q, M, log2, per_split);
    if (splits > 1) {
        int64_t n = (int64_t)M * q.rows;
        LAUNCH(nf4_matmul_reduce_kernel, (unsigned)CEIL_DIV(n, (int64_t)NF4_MATMUL_THREADS), NF4_MATMUL_THREADS, 0, stream,
               y, (const float *)partials, splits, n);
    }
}

// Y[M, N] = X[M, K]·Wᵀ in `splits` K ranges (1: no scratch needed). For tests and the
// bench; nf4_matmul picks the splits.
inline void nf4_matmul_splits_launch(__nv_bfloat16 *y, const __nv_bfloat16 *x, const Nf4Device &q, int M, int splits,
                                     const Nf4MatmulScratch *scratch, cudaStream_t stream) {
    nf4_require(M >= 1 && M <= NF4_MATMUL_MAX_M, "nf4_matmul: M must be 1..64 (nf4_linear takes any M)");
    nf4_require(q.cols >= 1, "nf4_matmul: K must be at least 1");
    nf4_require(splits == 1 || (scratch && (int64_t)splits * M <= NF4_MATMUL_SPLIT_ROWS && q.rows <= scratch->max_n),
                "nf4_matmul: the split-K scratch is missing or too small");
    if (q.rows == 0) return;
    bool vec = q.cols % 32 == 0 && aligned16(x) && aligned16(q.packed);
    if (M <= 8) nf4_matmul_launch_mt<1>(y, x, q, M, splits, scratch, vec, stream);
    else if (M <= 16) nf4_matmul_launch_mt<2>(y, x, q, M, splits, scratch, vec, stream);
    else if (M <= 32) nf4_matmul_launch_mt<4>(y, x, q, M, splits, scratch, vec, stream);
    else nf4_matmul_launch_mt<8>(y, x, q, M, splits, scratch, vec, stream);
}

// Y[M, N] = X[M, K]·Wᵀ, M <= NF4_MATMUL_MAX_M; scratch NULL: no K split.
inline void nf4_matmul(__nv_bfloat16 *y, const __nv_bfloat16 *x, const Nf4Device &q, int M,
                       const Nf4MatmulScratch *scratch, cudaStream_t stream) {
    int splits = scratch && M >= 1 ? nf4_matmul_splits(M, q.rows, q.cols, scratch->sms) : 1;
    nf4_matmul_splits_launch(y, x, q, M, splits, scratch, stream);
}

// What nf4_linear needs: cuBLASLt and a bf16 buffer of the largest weight for M above the
// threshold, the split-K scratch below it.
typedef struct {
    const Matmul *mm;
    __nv_bfloat16 *weight;  // weight_capacity values
    size_t weight_capacity;
    Nf4MatmulScratch split;
} Nf4Linear;

// Y[M, N] = X[M, K]·Wᵀ for any M >= 1: the fused kernel up to NF4_LINEAR_FUSED_MAX_M rows,
// else W dequantized into l->weight and multiplied by cuBLASLt.
inline void nf4_linear(const Nf4Linear *l, __nv_bfloat16 *y, const __nv_bfloat16 *x, const Nf4Device &w, int M,
                       cudaStream_t stream) {
    if (M <= NF4_LINEAR_FUSED_MAX_M) {
        nf4_matmul(y, x, w, M, &l->split, stream);
        return;
    }
    nf4_require((size_t)(w.rows * w.cols) <= l->weight_capacity, "nf4_linear: the weight buffer is too small");
    nf4_dequantize(l->weight, w, stream);
    matmul(l->mm, y, MATMUL_BF16, x, 0, l->weight, 1, M, (int)w.rows, (int)w.cols, 1.0f, 0.0f, stream);
}

#endif
