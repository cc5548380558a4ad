/*
 * attention.h: causal grouped-query attention with a sliding window and packed
 * conversations, CPU reference (fp32; by blocks of query rows, O(T * (min(T, W) + 64)) per head).
 *
 * q [T, Hq, D], k and v [T, Hkv, D]; query head h reads KV head h / (Hq / Hkv). Query i
 * sees key j iff j <= i, i - j <= W - 1 when a window W is set (W keys, itself included;
 * reference/mistral.md §4.5), and both belong to the same conversation (seg[i] == seg[j];
 * a conversation's tokens are contiguous). Scores are q.k / sqrt(D), softmax in fp32.
 * The forward pass also returns each row's log-sum-exp, from which the backward pass
 * recomputes the probabilities (as FlashAttention does):
 *   P = softmax(S);  dV = P^T dO;  dP = dO V^T;  dS = P * (dP - rowsum(dO * O));
 *   dQ = dS K / sqrt(D);  dK = dS^T Q / sqrt(D)   (dK, dV summed over a KV head's queries)
 */
#ifndef PERSONA_ATTENTION_H
#define PERSONA_ATTENTION_H

#include <stdint.h>

void attention_forward(const float *q, const float *k, const float *v, const int32_t *seg, int T, int Hq, int Hkv,
                       int D, int window, float *out, float *lse);
// dq, dk, dv are overwritten.
void attention_backward(const float *q, const float *k, const float *v, const float *out, const float *dout,
                        const float *lse, const int32_t *seg, int T, int Hq, int Hkv, int D, int window, float *dq,
                        float *dk, float *dv);

#endif
