/*
 * cuda_buffers.h: bf16 device buffers with a float copy on the host, for the harness tests
 * of kernels (test/test_cuda_*.cpp, after the kernel header and cuda_host_testing.h).
 *
 * - buf_random(rng, n, offset, lo, hi): n bf16 values drawn uniformly from [lo, hi) and
 *   rounded to bf16, on the device `offset` elements past a cudaMalloc'd base (offset 1
 *   makes the buffer misaligned for 16-byte packs); host holds the same values as floats.
 * - buf_output(n, offset): a buffer left as cudaMalloc leaves it in the harness (0xff bytes,
 *   NaN), so an element a kernel fails to write shows.
 * - buf_read(out, dev, n): n bf16 from the device, as floats.
 * - buf_free(b).
 */
#ifndef PERSONA_CUDA_BUFFERS_H
#define PERSONA_CUDA_BUFFERS_H

#include <stdint.h>
#include <stdlib.h>

extern "C" {
#include "../../common/half.h"
#include "../../common/util.h"
}

struct Buf {
    uint16_t *base;
    __nv_bfloat16 *dev;
    float *host;
    size_t n;
};

static inline Buf buf_random(uint64_t *rng, size_t n, int offset, float lo, float hi) {
    Buf b;
    b.n = n;
    cuda_check(cudaMalloc(&b.base, (n + (size_t)offset) * sizeof(uint16_t)));
    b.dev = (__nv_bfloat16 *)(b.base + offset);
    b.host = (float *)xmalloc(n * sizeof(float) + 1);  // (+ 1: n may be 0)
    uint16_t *bits = (uint16_t *)xmalloc(n * sizeof(uint16_t) + 1);
    for (size_t i = 0; i < n; i++) {
        bits[i] = f32_to_bf16((float)(lo + (hi - lo) * rng_uniform(rng)));
        b.host[i] = bf16_to_f32(bits[i]);
    }
    cuda_check(cudaMemcpy(b.dev, bits, n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    free(bits);
    return b;
}

static inline Buf buf_output(size_t n, int offset) {
    Buf b;
    b.n = n;
    cuda_check(cudaMalloc(&b.base, (n + (size_t)offset) * sizeof(uint16_t)));
    b.dev = (__nv_bfloat16 *)(b.base + offset);
    b.host = NULL;
    return b;
}

static inline void buf_read(float *out, const __nv_bfloat16 *dev, size_t n) {
    uint16_t *bits = (uint16_t *)xmalloc(n * sizeof(uint16_t) + 1);
    cuda_check(cudaMemcpy(bits, dev, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) out[i] = bf16_to_f32(bits[i]);
    free(bits);
}

static inline void buf_free(Buf *b) {
    cuda_check(cudaFree(b->base));
    free(b->host);
}

#endif
