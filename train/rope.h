/*
 * rope.h: rotary position embeddings, Hugging Face layout (rotate_half), CPU reference.
 *
 * For a head vector x of size D (even) at position p, with inv_freq_j = 1 / theta^(2j/D)
 * and angle a_j = p * inv_freq_j for j < D/2, dimensions j and j + D/2 form a pair:
 *   x'_j       = x_j cos a_j - x_{j+D/2} sin a_j
 *   x'_{j+D/2} = x_{j+D/2} cos a_j + x_j sin a_j
 * (transformers' q*cos + rotate_half(q)*sin, reference/mistral.md §4.3). The backward pass
 * is the rotation by -a. Positions are given per token, so packed conversations can
 * restart at 0.
 */
#ifndef PERSONA_ROPE_H
#define PERSONA_ROPE_H

#include <stdint.h>

// inv_freq[j] = 1 / theta^(2j/D) for j < D/2, in float32 as transformers computes it
// (`1.0 / theta ** (arange(0, D, 2).float() / D)`); the GPU kernels take these same values.
void rope_inv_freq(float *inv_freq, int D, double theta);

// In place on x [T, heads, D]; dir = +1 forward, -1 backward (rotating gradients back).
void rope_apply(float *x, const int32_t *positions, int T, int heads, int D, double theta, int dir);

#endif
