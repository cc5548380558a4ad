/*
 * cross_entropy.h: the LM head and cross-entropy over trained tokens, one token at a time,
 * so the [tokens, vocab] logits matrix never exists (CPU reference).
 *
 * For token t with loss weight w_t > 0: logits = W h_t ([V] = [V, H] x [H]), loss_t =
 * logsumexp(logits) - logits[target_t]. Returns sum_t w_t * loss_t; the caller divides by
 * the number of trained tokens of the whole optimizer step. When dh is given it receives
 * grad_scale * w_t * (softmax(logits) - onehot(target_t)) W for every trained token and 0
 * elsewhere. The head is frozen: there is no dW. Tokens with weight 0 cost nothing.
 */
#ifndef PERSONA_CROSS_ENTROPY_H
#define PERSONA_CROSS_ENTROPY_H

#include <stdint.h>

double cross_entropy(const float *h, const float *W, const int32_t *targets, const float *weights, int T, int H, int V,
                     float grad_scale, float *dh);

#endif
