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
 * bf16(train/nf4.c's nf4_weight_dequantize). The small-M product that reads the codes
 * directly is kernels/nf4_matmul.cuh.
 *
 * The arithmetic must be IEEE: no --use_fast_math (nvcc's defaults: IEEE division, no
 * flush of denormals).
 *
 * Memory: quantization reads the weight once (2 or 4 bytes a value) and writes half a
 * byte a value, plus 8 bytes per 64 values of absmax scratch; a warp issues the loads of
 * its 4 blocks (8 per lane) before any arithmetic. At the DRAM peak that is ~1.2e12
 * values a second from bf16, which an H100's ~33e12 thread instructions a second allow
 * ~27 instructions each: hence the 4-step search of a shared midpoint tree rather than 15
 * comparisons per value. Dequantization: a warp takes 1024 values; each lane reads 32
 * codes with one 16-byte load, the warp exchanges 4-byte words of codes (and their absmax)
 * with four shuffles so that lane l holds the codes of values 256k + 8l .. 256k + 8l + 7
 * (k = 0..3), and each of the warp's four 16-byte stores then writes 512 contiguous bytes
 * (a lane writing its own 32 values as 64 contiguous bytes would leave every store
 * instruction of the warp touching twice the sectors it fills); 2.52 bytes a value at
 * blocksize 64.
 *
 * Dequantize-ahead (Nf4Ahead, for the training GEMMs): two bf16 buffers and a side stream.
 * While the caller's stream multiplies with one weight, the side stream dequantizes the
 * next one into the other buffer, ordered by events only (no host synchronisation):
 *   ready[b]     recorded on the side stream after buffer b is written; the caller's stream
 *                waits on it before using b;
 *   released[b]  recorded on the caller's stream after its last use of b; the side stream
 *                waits on it before writing b again.
 * The calling pattern, for weights w_0, w_1, ... in the order the GEMMs need them:
 *     Nf4Ahead a;  nf4_ahead_init(&a, memory, capacity);   (memory: 2·capacity bf16)
 *     for (i = 0; i < n; i++) {
 *         const __nv_bfloat16 *W = nf4_ahead_get(&a, &w[i], i + 1 < n ? &w[i + 1] : NULL, stream);
 *         ... the GEMMs that use W, enqueued on `stream` ...
 *         nf4_ahead_release(&a, stream);
 *     }
 *     nf4_ahead_destroy(&a);
 * A weight is known by its packed pointer; asking for one that is not the prefetched one
 * is correct (it is dequantized then, without overlap). `stream` must be a created stream
 * (the legacy stream 0 waits for every other stream, which would serialise the two).
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
#define NF4_DEQUANT_WARP 1024 // values a dequantizing warp takes (32 per lane)

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
        UNROLL
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
        UNROLL
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
    UNROLL
    for (int k = 0; k < NF4_WARP_BLOCKS; k++) {
        int64_t i = (first + k) * NF4_BLOCKSIZE + 2 * lane;
        a[k] = i < n ? nf4_load_float(w + i) : 0.0f;
        b[k] = i + 1 < n ? nf4_load_float(w + i + 1) : 0.0f;
    }
    UNROLL
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

// The 8 values of one 4-byte word of codes (byte j, low first: values 2j in the high
// nibble, 2j + 1 in the low one), dequantized and rounded to bf16, as one 16-byte pack.
__device__ __forceinline__ uint4 nf4_dequantize_word(unsigned word, float absmax, const float *lut) {
    unsigned pairs[4];
    UNROLL
    for (int j = 0; j < 4; j++) {
        unsigned byte = word >> (8 * j) & 0xffu;
        pairs[j] = pack_bf16x2(__fmul_rn(lut[byte >> 4], absmax), __fmul_rn(lut[byte & 15u], absmax));
    }
    return uint4{pairs[0], pairs[1], pairs[2], pairs[3]};
}

// Warp w of the grid writes values [1024w, 1024w + 1024). `vector`: packed and out are
// 16-byte aligned; a warp whose values all exist then moves them in 16-byte packs (see the
// top of the file), any other warp value by value (lane l takes l, l + 32, ...).
__global__ void __launch_bounds__(NF4_THREADS)
    nf4_dequantize_kernel(__nv_bfloat16 *out, Nf4Device q, int log2_blocksize, bool vector) {
    __shared__ float lut[16];
    nf4_fill_table(lut);
    int lane = threadIdx.x % 32;
    int64_t n = q.rows * q.cols, start = ((int64_t)blockIdx.x * (NF4_THREADS / 32) + threadIdx.x / 32) * NF4_DEQUANT_WARP;
    if (start >= n) return;  // the whole warp
    float offset = *q.offset;
    if (vector && start + NF4_DEQUANT_WARP <= n) {
        // Lane l loaded the codes of values 32l..32l+31 (one absmax: blocksize >= 32), word
        // w of them values 32l + 8w..; it stores values 256k + 8l.. (k = 0..3), which are
        // word l % 4 of lane 8k + l / 4. Round r: lane l reads lane 8((l % 4 + r) % 4) + l / 4,
        // which sends its word (lane / 8 - r) % 4: each lane is read once a round, and
        // receives the word for its store k = (l % 4 + r) % 4.
        uint4 loaded = ((const uint4 *)q.packed)[(start >> 5) + lane];
        unsigned words[4] = {loaded.x, loaded.y, loaded.z, loaded.w}, mine[4] = {0, 0, 0, 0};
        float absmax = nf4_absmax(q, (start + 32 * lane) >> log2_blocksize, offset), mine_absmax[4] = {0, 0, 0, 0};
        UNROLL
        for (int r = 0; r < 4; r++) {
            int src = 8 * ((lane % 4 + r) % 4) + lane / 4, send = (lane / 8 - r) & 3, k = (lane % 4 + r) % 4;
            unsigned sent = words[0];
            UNROLL
            for (int w = 1; w < 4; w++) sent = send == w ? words[w] : sent;
            unsigned got = __shfl_sync(0xffffffffu, sent, src);
            float got_absmax = __shfl_sync(0xffffffffu, absmax, src);
            UNROLL
            for (int w = 0; w < 4; w++) {
                mine[w] = k == w ? got : mine[w];
                mine_absmax[w] = k == w ? got_absmax : mine_absmax[w];
            }
        }
        UNROLL
        for (int k = 0; k < 4; k++)
            ((uint4 *)(out + start))[32 * k + lane] = nf4_dequantize_word(mine[k], mine_absmax[k], lut);
    } else {
        int64_t end = start + NF4_DEQUANT_WARP < n ? start + NF4_DEQUANT_WARP : n;
        for (int64_t i = start + lane; i < end; i += 32) {
            unsigned byte = q.packed[i / 2];
            out[i] = __float2bfloat16(__fmul_rn(lut[i % 2 ? byte & 15u : byte >> 4], nf4_absmax(q, i >> log2_blocksize, offset)));
        }
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
    LAUNCH(nf4_dequantize_kernel, (unsigned)CEIL_DIV(n, (int64_t)NF4_DEQUANT_WARP * (NF4_THREADS / 32)), NF4_THREADS,
           0, stream, out, q, log2, aligned16(out) && aligned16(q.packed));
}

// ---------------------------------------------------------------------------------------
// Dequantize-ahead (see the top of the file)

typedef struct {
    __nv_bfloat16 *buffer[2];  // each `capacity` values
    size_t capacity;
    const uint8_t *holds[2];   // the packed codes of the weight each buffer holds (or will)
    cudaStream_t side;         // the stream that dequantizes
    cudaEvent_t ready[2], released[2];
    int current;               // the buffer nf4_ahead_get handed out and not yet released, or -1
} Nf4Ahead;

// memory: 2·capacity bf16 of device memory, capacity >= rows·cols of the largest weight.
static inline void nf4_ahead_init(Nf4Ahead *a, __nv_bfloat16 *memory, size_t capacity) {
    a->capacity = capacity;
    a->current = -1;
    cuda_check(cudaStreamCreate(&a->side));
    for (int b = 0; b < 2; b++) {
        a->buffer[b] = memory + (size_t)b * capacity;
        a->holds[b] = NULL;
        cuda_check(cudaEventCreateWithFlags(&a->ready[b], cudaEventDisableTiming));
        cuda_check(cudaEventCreateWithFlags(&a->released[b], cudaEventDisableTiming));
        cuda_check(cudaEventRecord(a->released[b], a->side));  // nothing to wait for yet
    }
}

static inline void nf4_ahead_destroy(Nf4Ahead *a) {
    cuda_check(cudaStreamSynchronize(a->side));
    for (int b = 0; b < 2; b++) {
        cuda_check(cudaEventDestroy(a->ready[b]));
        cuda_check(cudaEventDestroy(a->released[b]));
    }
    cuda_check(cudaStreamDestroy(a->side));
}

// Buffer b gets weight w on the side stream, once the caller's stream has released it.
static inline void nf4_ahead_fill(Nf4Ahead *a, int b, const Nf4Device *w) {
    nf4_require((size_t)(w->rows * w->cols) <= a->capacity, "nf4_ahead: a weight is larger than the buffers");
    cuda_check(cudaStreamWaitEvent(a->side, a->released[b], 0));
    nf4_dequantize(a->buffer[b], *w, a->side);
    cuda_check(cudaEventRecord(a->ready[b], a->side));
    a->holds[b] = w->packed;
}

// The bf16 weight `now`, ready for the work that `stream` enqueues next; `next` (or NULL)
// starts dequantizing into the other buffer behind it.
static inline const __nv_bfloat16 *nf4_ahead_get(Nf4Ahead *a, const Nf4Device *now, const Nf4Device *next,
                                                 cudaStream_t stream) {
    nf4_require(a->current < 0, "nf4_ahead_get: the previous weight was not released");
    int b = a->holds[0] == now->packed ? 0 : a->holds[1] == now->packed ? 1 : -1;
    if (b < 0) {  // not prefetched: into the buffer that does not hold `next`
        b = next && a->holds[0] == next->packed ? 1 : 0;
        nf4_ahead_fill(a, b, now);
    }
    cuda_check(cudaStreamWaitEvent(stream, a->ready[b], 0));
    if (next && a->holds[1 - b] != next->packed) nf4_ahead_fill(a, 1 - b, next);
    a->current = b;
    return a->buffer[b];
}

// The caller's stream has enqueued every use of the weight nf4_ahead_get returned.
static inline void nf4_ahead_release(Nf4Ahead *a, cudaStream_t stream) {
    nf4_require(a->current >= 0, "nf4_ahead_release: no weight to release");
    cuda_check(cudaEventRecord(a->released[a->current], stream));
    a->current = -1;
}

#endif
