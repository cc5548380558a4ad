/*
 * lora.h: a LoRA adapter on a frozen linear layer, PEFT's definition (reference/qlora.md §B).
 *
 *   y = x W^T + s * (d(x) A^T) B^T        A [r, in], B [out, r], s = alpha / r
 *                                         (alpha / sqrt(r) with rsLoRA)
 * where d is dropout on the LoRA branch input only (keep with probability 1 - p, scale kept
 * values by 1 / (1 - p)). PEFT's initialisation: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming
 * uniform with a = sqrt(5)), B = 0, so training starts from the base model exactly.
 *
 * Gradients, with u = d(x) A^T [M, r] saved from the forward pass and dY [M, out]:
 *   dB += s * dY^T u                      [out, r]
 *   dA += s * (dY B)^T d(x)               [r, in]
 *   dX += s * ((dY B) A) * dropout mask   (the frozen path's dY W is the caller's)
 * Matrices are row-major float32; M is the number of tokens.
 */
#ifndef PERSONA_LORA_H
#define PERSONA_LORA_H

#include <stddef.h>
#include <stdint.h>

float lora_scaling(float alpha, int r, int rslora);
// PEFT's init: A uniform in +-1/sqrt(in) from the seeded generator, B zero.
void lora_init(float *A, float *B, int r, int in, int out, uint64_t *rng);

// The dropout mask for M x in inputs: each entry 0 or 1 / (1 - p). p = 0 needs no mask.
void lora_dropout_mask(float *mask, size_t n, float p, uint64_t *rng);

// y[M, out] += s * (xd A^T) B^T, where xd = x * mask (mask NULL: no dropout). Saves
// u = xd A^T in u[M, r] and xd in xd_out[M, in] (NULL when mask is NULL) for the backward.
void lora_forward(const float *x, const float *mask, const float *A, const float *B, float *y, float *u,
                  float *xd_out, int M, int in, int r, int out, float s);
// Accumulates dA, dB and (if dx is not NULL) the LoRA branch's part of dx. xd is the branch
// input after dropout (x itself when mask is NULL).
void lora_backward(const float *dy, const float *xd, const float *u, const float *mask, const float *A,
                   const float *B, float *dA, float *dB, float *dx, int M, int in, int r, int out, float s);

#endif
