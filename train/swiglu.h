/*
 * swiglu.h: the Mistral MLP's gate, h = silu(g) * u with silu(g) = g * sigmoid(g), CPU
 * reference. Backward: du = dh * silu(g); dg = dh * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))).
 */
#ifndef PERSONA_SWIGLU_H
#define PERSONA_SWIGLU_H

#include <stddef.h>

void swiglu_forward(const float *g, const float *u, float *h, size_t n);
// dg or du may be the same buffer as dh.
void swiglu_backward(const float *g, const float *u, const float *dh, float *dg, float *du, size_t n);

#endif
