/*
 * matvec.h: the products of decoding, y = alpha * x W^T (+ y), for a few rows of x.
 *
 *   x [M, in], W [out, in], y [M, out], all row-major; W in float32, bf16 or NF4 (nf4.h).
 *
 * When a model generates text, each new token's activations meet every weight once, so the
 * time of a step is the time to read the weights from memory. These products read W once
 * for all M rows (the sequences of a batch, or a short prompt chunk) straight from its
 * storage, widening bf16 and decoding NF4 on the fly in registers, instead of packing or
 * dequantizing whole matrices as the training path (matmul.h) does.
 *
 * The sum: element (m, o) is one thread's sum over k in 16 lanes (lane l takes the k with
 * k mod 16 = l, in increasing k; NF4 weights are read as groups of 32 where lane l takes
 * elements 2l and 2l + 1 of the group, in four partial sums: even and odd elements of even
 * and odd groups, added at the end), the lanes then added in a fixed tree. Nothing in it
 * depends on M, on a row's place among the M, or on the number of threads: a sequence
 * decodes to the same bits alone or batched with any others (what makes `chat --batch`
 * resumable to identical answers). An NF4 weight is nf4_code[c] * absmax, the same float as
 * nf4_weight_dequantize gives. As in matmul.h the AVX-512 kernels fuse each multiply-add
 * and the portable ones (any other CPU) do not, so the bits differ between such CPUs.
 */
#ifndef PERSONA_MATVEC_H
#define PERSONA_MATVEC_H

#include <stdint.h>

#include "nf4.h"

void matvec_f32(float *y, const float *x, const float *W, int M, int out, int in, float alpha, int accumulate);
void matvec_bf16(float *y, const float *x, const uint16_t *W, int M, int out, int in, float alpha, int accumulate);
// W->rows outputs, W->cols inputs.
void matvec_nf4(float *y, const float *x, const Nf4Weight *W, int M, float alpha, int accumulate);

// Which kernels run: "auto" (AVX-512 where the CPU has it, the default) or "generic".
// Returns 0, or -1 when the CPU cannot run it. For tests and benchmarks.
int matvec_select(const char *kernel);
const char *matvec_kernel_name(void);

#endif
