/*
 * nf4.cuh: NF4 weights with double-quantized statistics on the GPU: quantization,
 * dequantization to bf16, and the batch-1 matrix-vector product of decoding. Quantization
 * and dequantization are bit-exact with the CPU reference train/nf4.c, which is bit-exact
 * with bitsandbytes 0.50.2 (reference/qlora.md §A; the format is in train/nf4.h).
 *
 * Quantization (nf4_quantize = four launches; the weight is float32 or bf16, the same
 * numbers train/nf4.c's nf4_quantize takes as float):
 *   1. blocks of 64 values (a warp takes 4 blocks, one at a time, two values per lane, so
 *      each lane writes one byte: element 2j in the high nibble). absmax = max|x| (exact
 *      in any order), clamped to >= 1e-38 for the short last block; s = clamp(x·(1/absmax),
 *      -1, 1), or x / absmax in the short last block; the code is the number of NF4
 *      midpoints (a+b)/2 strictly below s (a binary search), so a value on a midpoint takes
 *      the lower code and NaN takes code 0. An odd count pads the last byte with the code
 *      of 0.0 (7).
 *   2. offset = the mean of the absmax: train/nf4.c adds them up in double, in index
 *      order, and rounds sum / nb to float once. Sequential double additions round, and
 *      only their own order reproduces that rounding; but when no addition rounds, every
 *      order gives the same exact sum. Up to 256 blocks add up slices in parallel, one
 *      block adds up their totals, and they also find 2^q, the lowest set bit among all
 *      absmax: every absmax, and so every partial sum in any order, is a multiple of 2^q,
 *      and a multiple of 2^q below 2^(53+q) is a double. If the parallel sum came out below
 *      2^(53+q), no partial sum reached 2^(53+q) (they only grow: all terms are >= 0, and
 *      rounding is monotone), so none rounded, in the parallel order or in index order: the
 *      sum is exact and equal to the reference's. Otherwise one thread adds them in index
 *      order, as the reference does (a chain of nb dependent double additions:
 *      milliseconds for a million blocks). The sum stays below 2^(53+q) while the absmax
 *      span fewer than about 52 - s - log2(nb) binades, s their significant bits: for a
 *      million blocks, 24 binades for weights stored in bf16 (s = 8), 8 for float32 (s = 24).
 *   3. blocks of 256 absmax (one thread each): v = absmax - offset, a = max|v| (absmax2),
 *      x = clamp(v / a, -1, 1) goes to grid point g = trunc((x + 1)·0.5·65535 + 0.5), and
 *      the code is the nearest dynamic-map value to g/65535·2 - 1 (ties to the lower
 *      index): bitsandbytes' 65536-entry lookup table, evaluated per value by a binary
 *      search instead of being stored.
 * Dequantization, one launch: absmax_b = code[qabsmax_b]·absmax2[b/256] + offset and
 * w = NF4[nibble]·absmax_b, both in float32 with the products and sums rounded separately
 * (__fmul_rn/__fadd_rn: nvcc would otherwise fuse them into one FMA and the bits would
 * differ from the reference's), then rounded once to bf16. So the output is exactly
 * bf16(train/nf4.c's nf4_weight_dequantize).
 * GEMV: y[r] = Σ_c W[r][c]·x[c] with W as dequantization gives it in float32 (not rounded
 * to bf16), bf16 x and y, fp32 accumulation. Each 32-value chunk shares one absmax, so it
 * is Σ over chunks of absmax·(Σ NF4[nibble]·x), which saves a multiply per weight; the
 * error bound against the exact sum is at the end of this file.
 *
 * The arithmetic must be IEEE: no --use_fast_math (nvcc's defaults: IEEE division, no
 * flush of denormals).
 *
 * Memory: quantization reads the weight once (2 or 4 bytes a value) and writes half a
 * byte a value, plus 8 bytes per 64 values of absmax scratch; a warp issues the loads of
 * its 4 blocks (8 per lane) before any arithmetic. At the DRAM peak that is ~1.2e12
 * values a second from bf16, which an H100's ~33e12 thread instructions a second allow
 * ~27 instructions each: hence the 4-step search of a shared midpoint tree rather than 15
 * comparisons per value. Dequantization reads each
 * thread's 32 codes with one 16-byte load and writes 32 bf16 with four 16-byte stores
 * (one absmax per thread: blocksize >= 32); 2.52 bytes a value at blocksize 64. The GEMV
 * gives each warp two rows, so that each 16-byte load of x (L1/L2-resident) serves both;
 * a lane issues the loads of its next round (4 chunks of 32 codes per row, 16 bytes each)
 * before computing the current one, so that codes keep streaming (64 KiB in flight per
 * SM at two blocks of 256 threads, 128 registers); the codes are read once, 0.52 bytes a
 * weight. The 16 NF4 values sit in shared memory (16 banks: no conflicts).
 * The GEMV's arithmetic is what limits it: an H100 issues about 33e12 thread instructions
 * a second and reads about 6.5e12 weights a second at its DRAM peak, so a weight may cost
 * 5 instructions at most. A nibble at a time (extract, address, load, FMA, and x's
 * conversion) takes about that many; so the GEMV looks up both weights of a code byte
 * with one 8-byte load from a conflict-free table (below), about 3 instructions a weight.
 */
#ifndef PERSONA_NF4_CUH
#define PERSONA_NF4_CUH

#include <math.h>
#include <stdint.h>

#include "common.cuh"

#define NF4_BLOCKSIZE 64      // what nf4_quantize produces (bitsandbytes' Linear4bit default)
#define NF4_DQ_BLOCK 256      // absmax values per absmax2 (NF4_DQ_BLOCKSIZE in train/nf4.h)
#define NF4_THREADS 256       // quantize, double-quantize and dequantize blocks
#define NF4_WARP_BLOCKS 4     // blocks of 64 values each quantizing warp takes
#define NF4_MEAN_THREADS 1024 // the blocks that add up the absmax
#define NF4_MEAN_PARTIALS 256 // at most this many of them (then the one that finishes)
#define NF4_GEMV_WARPS 8      // per block (sharing one 32 KiB byte table)
#define NF4_GEMV_ROWS 2       // per warp, sharing each load of x
#define NF4_GEMV_UNROLL 4     // 16-byte code loads per row and lane in a round

// nvcc's `#pragma unroll`, for the loops whose arrays must stay in registers (ptxas puts
// an array indexed by a loop counter in local memory unless the loop is unrolled). The
// harness's host compiler has no such pragma and needs none.
#ifdef CUDA_HOST_HARNESS
#define NF4_UNROLL
#else
#define NF4_UNROLL _Pragma("unroll")
#endif

// A weight of rows x cols values in NF4 with double-quantized statistics, on the device.
// n = rows·cols values in row-major order, nb = ceil(n / blocksize) blocks.
typedef struct {
    uint8_t *packed;   // (n + 1) / 2 bytes, element 2j in the high nibble
    uint8_t *qabsmax;  // nb codes into `code`
    float *absmax2;    // ceil(nb / 256)
    float *offset;     // one float: the mean of the first-stage absmax
    float *code;       // 256 floats: the dynamic map (train/nf4.c's nf4_dynamic_map)
    int64_t rows, cols;
    int blocksize;     // a power of two >= 32
} Nf4Device;

// bitsandbytes' 16 NF4 values, the table of train/nf4.c (test_cuda_nf4 checks they agree).
__host__ __device__ constexpr float nf4_value(int code) {
    constexpr float values[16] = {
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    };
    return values[code];
}

// The 16 values into the block's shared memory (by one thread, from constants: a table
// indexed by threadIdx would live in local memory).
__device__ __forceinline__ void nf4_fill_table(float *lut) {
    if (threadIdx.x == 0) {
        NF4_UNROLL
        for (int k = 0; k < 16; k++) lut[k] = nf4_value(k);
    }
    __syncthreads();
}

// The 15 midpoints m_k = (NF4[k] + NF4[k+1]) / 2 in float (folded by the compiler with
// IEEE float arithmetic, as train/nf4.c computes them at run time), as an implicit binary
// search tree in shared memory: node i (1..15) at depth d (2^d <= i < 2^(d+1)) holds m_k
// with k = (2(i - 2^d) + 1)·2^(3-d) - 1, so node 1 is m_7, nodes 2 and 3 are m_3 and m_11.
// Filled by the block (every thread calls it). The array is declared here, not in the
// kernel template: the CUDA-on-CPU harness's compiler drops the section of a template's
// statics, so the harness refuses __shared__ in one.
__device__ __forceinline__ const float *nf4_midpoint_tree() {
    __shared__ float tree[16];
    if (threadIdx.x == 0) {
        NF4_UNROLL
        for (int i = 1; i < 16; i++) {
            int depth = i >= 8 ? 3 : i >= 4 ? 2 : i >= 2 ? 1 : 0;
            int k = (2 * (i - (1 << depth)) + 1) * (1 << (3 - depth)) - 1;
            tree[i] = (nf4_value(k) + nf4_value(k + 1)) / 2.0f;
        }
    }
    __syncthreads();
    return tree;
}

// The number of midpoints strictly below s (so a value on a midpoint takes the lower code,
// and NaN, below nothing, code 0): four steps down the tree, right when the node is < s.
__device__ __forceinline__ unsigned nf4_bucket(float s, const float *tree) {
    unsigned i = 1;
    for (int depth = 0; depth < 4; depth++) i = 2 * i + (tree[i] < s);
    return i - 16;
}

__device__ __forceinline__ float nf4_load_float(const float *p) { return *p; }
__device__ __forceinline__ float nf4_load_float(const __nv_bfloat16 *p) { return __bfloat162float(*p); }

// ---------------------------------------------------------------------------------------
// Quantization

// Stage 1: each warp quantizes NF4_WARP_BLOCKS consecutive blocks of 64 values, all its
// loads issued before any arithmetic (more bytes in flight).
template <typename T>
__global__ void __launch_bounds__(NF4_THREADS)
    nf4_quantize_blocks_kernel(uint8_t *packed, float *absmax, const T *w, int64_t n) {
    const float *tree = nf4_midpoint_tree();
    int lane = threadIdx.x % 32;
    int64_t first = ((int64_t)blockIdx.x * (NF4_THREADS / 32) + threadIdx.x / 32) * NF4_WARP_BLOCKS;
    float a[NF4_WARP_BLOCKS], b[NF4_WARP_BLOCKS];
    NF4_UNROLL
    for (int k = 0; k < NF4_WARP_BLOCKS; k++) {
        int64_t i = (first + k) * NF4_BLOCKSIZE + 2 * lane;
        a[k] = i < n ? nf4_load_float(w + i) : 0.0f;
        b[k] = i + 1 < n ? nf4_load_float(w + i + 1) : 0.0f;
    }
    NF4_UNROLL
    for (int k = 0; k < NF4_WARP_BLOCKS; k++) {
        int64_t block = first + k, start = block * NF4_BLOCKSIZE, i = start + 2 * lane;
        if (start >= n) break;  // the whole warp
        float m = fmaxf(fabsf(a[k]), fabsf(b[k]));
        for (int offset = 16; offset > 0; offset /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
        float clamped = fmaxf(m, 1e-38f), inv = 1.0f / clamped;
        bool tail = n - start < NF4_BLOCKSIZE;
        if (lane == 0) absmax[block] = tail ? clamped : m;
        if (i >= n) continue;
        float sa = fminf(fmaxf(tail ? a[k] / clamped : a[k] * inv, -1.0f), 1.0f);
        float sb = fminf(fmaxf(tail ? b[k] / clamped : b[k] * inv, -1.0f), 1.0f);  // b = 0 past the end: code 7
        packed[i / 2] = (uint8_t)(nf4_bucket(sa, tree) << 4 | nf4_bucket(sb, tree));
    }
}

// The exponent of the lowest set bit of a finite float a > 0.
__device__ __forceinline__ int nf4_lowest_bit_exponent(float a) {
    unsigned u = __float_as_uint(a), e = u >> 23, m = u & 0x7fffffu;
    return e ? (int)e - 150 + __ffs((int)(m | 0x800000u)) - 1 : -149 + __ffs((int)m) - 1;
}

// A slice of the absmax: its sum in double and the exponent of its lowest set bit (1000,
// above any float's, for a slice of zeros: 2^(53+1000) is infinite, so zeros always pass).
typedef struct {
    double sum;
    int lowest;
} Nf4MeanPartial;

// The block's total of every thread's partial, in every thread (all NF4_MEAN_THREADS call
// it); the order of the additions depends only on the block size.
__device__ inline Nf4MeanPartial nf4_block_total(Nf4MeanPartial p) {
    __shared__ Nf4MeanPartial warp_totals[NF4_MEAN_THREADS / 32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int round = 0; round < 2; round++) {  // within each warp, then over the warps' totals
        for (int o = 16; o > 0; o /= 2) {
            p.sum += __shfl_xor_sync(0xffffffffu, p.sum, o);
            p.lowest = min(p.lowest, __shfl_xor_sync(0xffffffffu, p.lowest, o));
        }
        if (round == 1) break;
        if (lane == 0) warp_totals[warp] = p;
        __syncthreads();
        p = warp_totals[lane];
    }
    return p;
}

// Stage 2a: block b adds up absmax[i] for i ≡ b·NF4_MEAN_THREADS + t (mod the grid's
// threads), into partials[b].
__global__ void __launch_bounds__(NF4_MEAN_THREADS)
    nf4_absmax_partial_kernel(Nf4MeanPartial *partials, const float *absmax, int64_t nb) {
    Nf4MeanPartial p = {0.0, 1000};
    for (int64_t i = (int64_t)blockIdx.x * NF4_MEAN_THREADS + threadIdx.x; i < nb;
         i += (int64_t)gridDim.x * NF4_MEAN_THREADS) {
        float a = absmax[i];
        p.sum += a;
        if (a > 0.0f) p.lowest = min(p.lowest, nf4_lowest_bit_exponent(a));
    }
    p = nf4_block_total(p);
    if (threadIdx.x == 0) partials[blockIdx.x] = p;
}

// Stage 2b: *offset = the float mean of absmax[0..nb), as train/nf4.c's nf4_absmax_mean
// (see the top of the file), from the `count` partials. One block of NF4_MEAN_THREADS.
__global__ void __launch_bounds__(NF4_MEAN_THREADS)
    nf4_absmax_mean_kernel(float *offset, const Nf4MeanPartial *partials, int count, const float *absmax,
                           int64_t nb) {
    static_assert(NF4_MEAN_PARTIALS <= NF4_MEAN_THREADS, "one partial per thread");
    __shared__ float staged[NF4_MEAN_THREADS];
    Nf4MeanPartial p = {0.0, 1000};
    if ((int)threadIdx.x < count) p = partials[threadIdx.x];
    p = nf4_block_total(p);
    double sum = p.sum;
    if (!(sum < ldexp(1.0, 53 + p.lowest))) {  // some addition may have rounded: index order
        sum = 0.0;
        for (int64_t base = 0; base < nb; base += NF4_MEAN_THREADS) {
            __syncthreads();  // the previous chunk has been added
            if (base + threadIdx.x < nb) staged[threadIdx.x] = absmax[base + threadIdx.x];
            __syncthreads();
            if (threadIdx.x == 0)
                for (int k = 0; k < NF4_MEAN_THREADS && base + k < nb; k++) sum += staged[k];
        }
    }
    if (threadIdx.x == 0) *offset = nb ? (float)(sum / (double)nb) : 0.0f;
}

// Stage 3: one block per 256 absmax values.
__global__ void __launch_bounds__(NF4_THREADS)
    nf4_quantize_absmax_kernel(uint8_t *qabsmax, float *absmax2, const float *absmax, const float *offset_ptr,
                               const float *code, int64_t nb) {
    static_assert(NF4_THREADS == NF4_DQ_BLOCK, "one thread per absmax value of a block");
    __shared__ float map[NF4_DQ_BLOCK];
    __shared__ unsigned block_max;  // max |v| as float bits: non-negative floats order as integers
    int64_t i = (int64_t)blockIdx.x * NF4_DQ_BLOCK + threadIdx.x;
    map[threadIdx.x] = code[threadIdx.x];
    if (threadIdx.x == 0) block_max = 0;
    __syncthreads();
    float v = i < nb ? absmax[i] - *offset_ptr : 0.0f;
    atomicMax(&block_max, __float_as_uint(fabsf(v)));
    __syncthreads();
    float a = __uint_as_float(block_max);
    if (threadIdx.x == 0) absmax2[blockIdx.x] = a;
    if (i >= nb) return;
    float x = fminf(fmaxf(v / a, -1.0f), 1.0f);  // a = 0: NaN, which fmaxf turns into -1
    unsigned g = (unsigned)__fadd_rn(__fmul_rn((x + 1.0f) * 0.5f, 65535.0f), 0.5f);
    float point = __fadd_rn(__fmul_rn((float)g / 65535.0f, 2.0f), -1.0f);
    int right = 0;  // the number of map values below point (the map is sorted), capped at 255
    for (int step = NF4_DQ_BLOCK / 2; step > 0; step /= 2)
        if (map[right + step - 1] < point) right += step;
    if (map[right] < point) right++;  // all 256 are below
    int q = right;  // then the nearer of map[right - 1] and map[right], as train/nf4.c decides
    if (right == NF4_DQ_BLOCK) q = NF4_DQ_BLOCK - 1;
    else if (right > 0 && !(fabsf(map[right] - point) < fabsf(point - map[right - 1]))) q = right - 1;
    qabsmax[i] = (uint8_t)q;
}

// ---------------------------------------------------------------------------------------
// Dequantization

// absmax_b from the double-quantized statistics (offset already read).
__device__ __forceinline__ float nf4_absmax(const Nf4Device &q, int64_t b, float offset) {
    return __fadd_rn(__fmul_rn(q.code[q.qabsmax[b]], q.absmax2[b / NF4_DQ_BLOCK]), offset);
}

// Thread t writes values [32t, 32t + 32) (one absmax: blocksize >= 32). `vector`: packed
// and out are 16-byte aligned, so whole chunks move as 16-byte loads and stores.
__global__ void __launch_bounds__(NF4_THREADS)
    nf4_dequantize_kernel(__nv_bfloat16 *out, Nf4Device q, int log2_blocksize, bool vector) {
    __shared__ float lut[16];
    nf4_fill_table(lut);
    int64_t n = q.rows * q.cols, chunk = (int64_t)blockIdx.x * NF4_THREADS + threadIdx.x, start = chunk * 32;
    if (start >= n) return;
    float absmax = nf4_absmax(q, start >> log2_blocksize, *q.offset);
    if (vector && start + 32 <= n) {
        uint4 codes = ((const uint4 *)q.packed)[chunk];
        unsigned words[4] = {codes.x, codes.y, codes.z, codes.w};
        uint4 *dst = (uint4 *)(out + start);
        NF4_UNROLL
        for (int k = 0; k < 4; k++) {  // word k holds values 8k..8k+7, byte j (low first) values 2j, 2j + 1
            unsigned pairs[4];
            NF4_UNROLL
            for (int j = 0; j < 4; j++) {
                unsigned byte = words[k] >> (8 * j) & 0xffu;
                __nv_bfloat162 pair = __floats2bfloat162_rn(lut[byte >> 4] * absmax, lut[byte & 15u] * absmax);
                pairs[j] = __bfloat16_as_ushort(pair.x) | (unsigned)__bfloat16_as_ushort(pair.y) << 16;
            }
            dst[k] = uint4{pairs[0], pairs[1], pairs[2], pairs[3]};
        }
    } else {
        int64_t end = start + 32 < n ? start + 32 : n;
        for (int64_t i = start; i < end; i++) {
            unsigned byte = q.packed[i / 2];
            out[i] = __float2bfloat16(lut[i % 2 ? byte & 15u : byte >> 4] * absmax);
        }
    }
}

// ---------------------------------------------------------------------------------------
// GEMV

// The GEMV's byte table: for each code byte, (NF4[high nibble], NF4[low nibble]), one
// 8-byte load for two weights. A warp's 8-byte shared loads go 16 lanes at a time over the
// 32 banks, and random bytes would collide in them; so the table is kept in 16 copies,
// entry b of copy l at index 16b + l, and lane l reads copy l % 16, which lies in banks
// 2(l % 16) and 2(l % 16) + 1 only: no conflicts whatever the bytes (32 KiB).
#define NF4_PAIR_COPIES 16  // (128 bytes per entry: the shift by 7 below)

// Σ_k NF4[nibble k]·x[k] over one chunk of 32 codes (word w, byte j low first: values
// 8w + 2j in the high nibble and 8w + 2j + 1 in the low one). The entry's byte offset is
// 128·byte | 8·(lane % 16) (copy_offset): a shift and one logic operation.
__device__ __forceinline__ float nf4_chunk_dot(const uint4 &codes, const float x[32], const float2 *table,
                                               unsigned copy_offset) {
    unsigned words[4] = {codes.x, codes.y, codes.z, codes.w};
    float dot = 0.0f;
    NF4_UNROLL
    for (int w = 0; w < 4; w++)
        NF4_UNROLL
        for (int j = 0; j < 4; j++) {
            unsigned offset = (words[w] >> (8 * j) & 0xffu) << 7 | copy_offset;
            float2 pair = *(const float2 *)((const char *)table + offset);
            dot += pair.x * x[8 * w + 2 * j];
            dot += pair.y * x[8 * w + 2 * j + 1];
        }
    return dot;
}

// One round of a lane's codes: NF4_GEMV_UNROLL chunks of each of its rows, with their
// absmax (zeros past the end of the row, which the arithmetic then skips).
typedef struct {
    uint4 codes[NF4_GEMV_ROWS][NF4_GEMV_UNROLL];
    float absmax[NF4_GEMV_ROWS][NF4_GEMV_UNROLL];
} Nf4GemvRound;

__device__ __forceinline__ void nf4_gemv_load(Nf4GemvRound &round, const Nf4Device &q, const int64_t *row, int base,
                                              int chunks, float offset, int log2_blocksize) {
    int lane = threadIdx.x % 32;
    NF4_UNROLL
    for (int u = 0; u < NF4_GEMV_UNROLL; u++) {
        int c = base + 32 * u + lane;
        NF4_UNROLL
        for (int r = 0; r < NF4_GEMV_ROWS; r++) {
            int64_t start = row[r] * q.cols + 32 * (int64_t)c;
            round.codes[r][u] = uint4{0, 0, 0, 0};
            round.absmax[r][u] = 0.0f;
            if (c < chunks) {
                round.codes[r][u] = ((const uint4 *)q.packed)[start / 32];
                round.absmax[r][u] = nf4_absmax(q, start >> log2_blocksize, offset);
            }
        }
    }
}

// Warp w of the grid computes rows 2w and 2w + 1 (a single row at an odd end: the second
// is then a copy of the first, computed and not written). Each round's loads are issued
// before the previous round's arithmetic, so the codes keep streaming while it computes.
__global__ void __launch_bounds__(NF4_GEMV_WARPS * 32)
    nf4_gemv_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, Nf4Device q, int log2_blocksize) {
    __shared__ float lut[16];
    __shared__ float2 pair_table[256 * NF4_PAIR_COPIES];
    nf4_fill_table(lut);
    for (int i = threadIdx.x; i < 256 * NF4_PAIR_COPIES; i += blockDim.x) {
        int byte = i / NF4_PAIR_COPIES;
        pair_table[i] = make_float2(lut[byte >> 4], lut[byte & 15]);
    }
    __syncthreads();
    int lane = threadIdx.x % 32;
    unsigned copy_offset = (unsigned)(lane % NF4_PAIR_COPIES) * sizeof(float2);
    int64_t first = ((int64_t)blockIdx.x * NF4_GEMV_WARPS + threadIdx.x / 32) * NF4_GEMV_ROWS;
    if (first >= q.rows) return;  // the whole warp
    int chunks = (int)(q.cols / 32);
    float offset = *q.offset, acc[NF4_GEMV_ROWS];
    int64_t row[NF4_GEMV_ROWS];
    for (int r = 0; r < NF4_GEMV_ROWS; r++) {
        row[r] = first + r < q.rows ? first + r : q.rows - 1;
        acc[r] = 0.0f;
    }
    const uint4 *xv = (const uint4 *)x;
    Nf4GemvRound now, next;
    nf4_gemv_load(now, q, row, 0, chunks, offset, log2_blocksize);
    for (int base = 0; base < chunks; base += 32 * NF4_GEMV_UNROLL) {
        nf4_gemv_load(next, q, row, base + 32 * NF4_GEMV_UNROLL, chunks, offset, log2_blocksize);
        NF4_UNROLL
        for (int u = 0; u < NF4_GEMV_UNROLL; u++) {
            int c = base + 32 * u + lane;
            if (c >= chunks) continue;
            float xf[32];
            NF4_UNROLL
            for (int k = 0; k < 4; k++) {
                uint4 p = xv[4 * c + k];
                unsigned words[4] = {p.x, p.y, p.z, p.w};
                NF4_UNROLL
                for (int j = 0; j < 4; j++) {  // bf16 pairs, the lower address in the low half
                    xf[8 * k + 2 * j] = __uint_as_float(words[j] << 16);
                    xf[8 * k + 2 * j + 1] = __uint_as_float(words[j] & 0xffff0000u);
                }
            }
            NF4_UNROLL
            for (int r = 0; r < NF4_GEMV_ROWS; r++)
                acc[r] += now.absmax[r][u] * nf4_chunk_dot(now.codes[r][u], xf, pair_table, copy_offset);
        }
        now = next;
    }
    for (int r = 0; r < NF4_GEMV_ROWS; r++) {
        float total = warp_sum(acc[r]);
        if (lane == 0 && first + r < q.rows) y[first + r] = __float2bfloat16(total);
    }
}

// ---------------------------------------------------------------------------------------
// Host launchers. Preconditions that a caller can get wrong are checked; a violation is a
// programming error, reported on one line, exit status 1.

static inline void nf4_require(bool ok, const char *what) {
    if (ok) return;
    fprintf(stderr, "error: %s\n", what);
    exit(1);
}

static inline int nf4_log2_blocksize(int blocksize) {
    int log2 = 0;
    while ((1 << log2) < blocksize) log2++;
    nf4_require(blocksize >= 32 && (1 << log2) == blocksize, "nf4: the blocksize must be a power of two >= 32");
    return log2;
}

static inline int64_t nf4_blocks(const Nf4Device &q) { return CEIL_DIV(q.rows * q.cols, (int64_t)q.blocksize); }

// Stage 1 alone: packed codes and float absmax[nb] for the q.rows·q.cols values of w.
template <typename T>
inline void nf4_quantize_blocks(Nf4Device &q, float *absmax, const T *w, cudaStream_t stream) {
    nf4_require(q.blocksize == NF4_BLOCKSIZE, "nf4_quantize: the GPU quantizes with blocksize 64 only");
    int64_t n = q.rows * q.cols;
    if (n == 0) return;
    LAUNCH(nf4_quantize_blocks_kernel<T>, (unsigned)CEIL_DIV(nf4_blocks(q), NF4_THREADS / 32 * NF4_WARP_BLOCKS),
           NF4_THREADS, 0, stream, q.packed, absmax, w, n);
}

// Stage 2, *q.offset from the first-stage absmax, with partials[NF4_MEAN_PARTIALS] as
// scratch; then stage 3, q.qabsmax and q.absmax2.
inline void nf4_absmax_mean(Nf4Device &q, Nf4MeanPartial *partials, const float *absmax, cudaStream_t stream) {
    int64_t nb = nf4_blocks(q);
    int count = (int)(nb < (int64_t)NF4_MEAN_PARTIALS * NF4_MEAN_THREADS ? CEIL_DIV(nb, NF4_MEAN_THREADS)
                                                                          : NF4_MEAN_PARTIALS);
    if (count > 0) LAUNCH(nf4_absmax_partial_kernel, count, NF4_MEAN_THREADS, 0, stream, partials, absmax, nb);
    LAUNCH(nf4_absmax_mean_kernel, 1, NF4_MEAN_THREADS, 0, stream, q.offset, partials, count, absmax, nb);
}
inline void nf4_quantize_absmax(Nf4Device &q, const float *absmax, cudaStream_t stream) {
    int64_t nb = nf4_blocks(q);
    if (nb == 0) return;
    LAUNCH(nf4_quantize_absmax_kernel, (unsigned)CEIL_DIV(nb, NF4_DQ_BLOCK), NF4_THREADS, 0, stream, q.qabsmax,
           q.absmax2, absmax, q.offset, q.code, nb);
}

// The whole of bitsandbytes' quantize_4bit(nf4, blocksize 64, compress_statistics): every
// array of q written (q.code must already hold the dynamic map); absmax[nb] and
// partials[NF4_MEAN_PARTIALS] are scratch (absmax keeps the first-stage absmax).
template <typename T>
inline void nf4_quantize(Nf4Device &q, float *absmax, Nf4MeanPartial *partials, const T *w, cudaStream_t stream) {
    nf4_quantize_blocks(q, absmax, w, stream);
    nf4_absmax_mean(q, partials, absmax, stream);
    nf4_quantize_absmax(q, absmax, stream);
}

// out[rows·cols] = bf16 of the float32 dequantized weight.
inline void nf4_dequantize(__nv_bfloat16 *out, const Nf4Device &q, cudaStream_t stream) {
    int log2 = nf4_log2_blocksize(q.blocksize);
    int64_t n = q.rows * q.cols;
    if (n == 0) return;
    bool vector = ((uintptr_t)out & 15) == 0 && ((uintptr_t)q.packed & 15) == 0;
    LAUNCH(nf4_dequantize_kernel, (unsigned)CEIL_DIV(CEIL_DIV(n, (int64_t)32), NF4_THREADS), NF4_THREADS, 0, stream,
           out, q, log2, vector);
}

// y[rows] = W x[cols]; cols a multiple of 32, x and q.packed 16-byte aligned.
inline void nf4_gemv(__nv_bfloat16 *y, const __nv_bfloat16 *x, const Nf4Device &q, cudaStream_t stream) {
    int log2 = nf4_log2_blocksize(q.blocksize);
    nf4_require(q.cols % 32 == 0, "nf4_gemv: the number of columns must be a multiple of 32");
    nf4_require(((uintptr_t)x & 15) == 0 && ((uintptr_t)q.packed & 15) == 0,
                "nf4_gemv: x and the packed codes must be 16-byte aligned");
    if (q.rows == 0) return;
    int64_t rows_per_block = NF4_GEMV_WARPS * NF4_GEMV_ROWS;
    LAUNCH(nf4_gemv_kernel, (unsigned)CEIL_DIV(q.rows, rows_per_block), NF4_GEMV_WARPS * 32, 0, stream, y, x, q, log2);
}

// ---------------------------------------------------------------------------------------
// How far the GEMV may be from the exact Σ_c W[r][c]·x[c] (W the float32 dequantized
// weight), which the tests and the bench compute in double. Each product passes through
// at most cols/1024 + 40 fp32 roundings: its own, the ≤ 31 additions of its chunk, the
// absmax multiply, the ≤ ceil(cols/1024) additions of its lane, the 5 of the warp sum,
// and the difference between the kernel's exact NF4·absmax and the reference's rounded W.
// So the fp32 result is within (cols/1024 + 48)·2^-24·Σ|W·x| of the exact sum (Higham
// §4.2; the 48 leaves room for γ_n's second-order term), and the final bf16 rounding adds
// at most u = 2^-8 of the result.
static inline float nf4_gemv_tolerance(double y_ref, double abs_sum, int64_t cols) {
    double fp32 = (double)(cols / 1024 + 48) * 0x1p-24 * abs_sum;
    return (float)(0x1p-8 * fabs(y_ref) + (1 + 0x1p-8) * fp32);
}

#endif
