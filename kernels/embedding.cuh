/*
 * embedding.cuh: the token embedding lookup, forward only (the embedding table is frozen in
 * QLoRA, so there is no backward). A copy, so the result is the table's bits exactly.
 *
 *   out[n, :] = table[ids[n], :]      table (V, C) bf16, ids (N) int32, out (N, C) bf16
 *
 * Ids outside [0, V): the host validates token ids before they reach the GPU (the shard
 * reader and the tokenizer only produce ids below the vocabulary size), so this is a safety
 * net, not a feature. The kernel never reads the table for such an id; it fills that row of
 * out with NaN (bf16 0x7fff), so the mistake cannot pass silently: the loss becomes NaN
 * instead of training on a wrong row. (The CPU reference, train/model.c, indexes the table
 * without a check, so there is nothing to match there.)
 *
 * Memory: one block of EMBEDDING_THREADS threads per token. When C is a multiple of 8 and
 * table and out are 16-byte aligned (then every row is), each thread moves 16-byte packs of
 * 8 bf16, EMBEDDING_UNROLL of them loaded before any is stored so that a thread has 64
 * bytes in flight (with 2048 threads per SM that is far more than the ~20 KiB per SM an H100
 * needs to cover its DRAM latency); otherwise single elements. The traffic is 2 bytes read
 * and 2 written per element, plus 4 bytes of id per token.
 */
#ifndef PERSONA_EMBEDDING_CUH
#define PERSONA_EMBEDDING_CUH

#include <stdint.h>

#include "common.cuh"

#define EMBEDDING_THREADS 128
#define EMBEDDING_UNROLL 4

template <int V>
__global__ void __launch_bounds__(EMBEDDING_THREADS)
    embedding_forward_kernel(__nv_bfloat16 *out, const __nv_bfloat16 *table, const int32_t *ids, int vocab, int C) {
    typedef Bf16Pack<V> Pack;
    int packs = C / V, id = ids[blockIdx.x];
    Pack *dst = (Pack *)(out + (size_t)blockIdx.x * C);
    if (id < 0 || id >= vocab) {
        Pack nan;
        for (int k = 0; k < V; k++) nan.v[k] = __ushort_as_bfloat16(0x7fff);
        for (int i = threadIdx.x; i < packs; i += blockDim.x) dst[i] = nan;
        return;
    }
    const Pack *src = (const Pack *)(table + (size_t)id * C);
    for (int first = threadIdx.x; first < packs; first += EMBEDDING_UNROLL * blockDim.x) {
        Pack p[EMBEDDING_UNROLL];
        for (int u = 0; u < EMBEDDING_UNROLL; u++) {
            int i = first + u * blockDim.x;
            if (i < packs) p[u] = src[i];
        }
        for (int u = 0; u < EMBEDDING_UNROLL; u++) {
            int i = first + u * blockDim.x;
            if (i < packs) dst[i] = p[u];
        }
    }
}

// out: (N, C); table: (vocab, C); ids: (N), on the device.
inline void embedding_forward(__nv_bfloat16 *out, const __nv_bfloat16 *table, const int32_t *ids, int N, int vocab,
                              int C, cudaStream_t stream) {
    if (N == 0 || C == 0) return;
    if (C % 8 == 0 && aligned16(out) && aligned16(table))
        LAUNCH(embedding_forward_kernel<8>, N, EMBEDDING_THREADS, 0, stream, out, table, ids, vocab, C);
    else
        LAUNCH(embedding_forward_kernel<1>, N, EMBEDDING_THREADS, 0, stream, out, table, ids, vocab, C);
}

#endif
