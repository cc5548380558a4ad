/*
 * cross_entropy.h: the LM head and cross-entropy over trained tokens (CPU reference).
 *
 * For token t with loss weight w_t > 0: logits = W h_t ([V] = [V, H] x [H]), loss_t =
 * logsumexp(logits) - logits[target_t]. Returns sum_t w_t * loss_t; the caller divides by
 * the number of trained tokens of the whole optimizer step. When dh is given it receives
 * grad_scale * w_t * (softmax(logits) - onehot(target_t)) W for every trained token and 0
 * elsewhere. The head is frozen: there is no dW. Tokens with weight 0 cost nothing.
 *
 * The trained tokens are taken CE_ROWS at a time: their logits [CE_ROWS, V] are one matrix
 * product (matmul.h), the softmax runs over the rows in parallel, and dh is a second
 * product, so at most CE_ROWS x V logits exist at once. Per-token losses are summed in
 * token order, so the result does not depend on the number of threads.
 */
#ifndef PERSONA_CROSS_ENTROPY_H
#define PERSONA_CROSS_ENTROPY_H

#include <stdint.h>

#define CE_ROWS 256

double cross_entropy(const float *h, const float *W, const int32_t *targets, const float *weights, int T, int H, int V,
                     float grad_scale, float *dh);

#endif
