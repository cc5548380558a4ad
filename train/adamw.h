/*
 * adamw.h: AdamW with decoupled weight decay, and gradient clipping by global norm, as
 * torch.optim.AdamW and torch.nn.utils.clip_grad_norm_ compute them.
 *
 * One step t (1-based) on parameter p with gradient g, learning rate lr:
 *   p <- p * (1 - lr * weight_decay)                     (decoupled decay, first)
 *   m <- m + (1 - beta1) * (g - m)                       (torch's lerp)
 *   v <- beta2 * v + (1 - beta2) * g^2
 *   p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * State m, v and the parameters are float32; the scalar factors are computed in double and
 * rounded once, as torch does with Python floats.
 *
 * Clipping: norm = sqrt(sum of squares over every gradient, in a fixed order, accumulated in
 * double); if max_norm / (norm + 1e-6) < 1 every gradient is scaled by that factor.
 */
#ifndef PERSONA_ADAMW_H
#define PERSONA_ADAMW_H

#include <stddef.h>

typedef struct {
    float beta1, beta2, eps, weight_decay;
} AdamWConfig;

void adamw_step(float *param, const float *grad, float *m, float *v, size_t n, int step, float lr,
                const AdamWConfig *c);

// The global L2 norm of n_tensors gradients (a fixed order, so every rank and every run
// agrees bit for bit).
double grad_global_norm(float *const *grads, const size_t *sizes, int n_tensors);
// Scales the gradients so their global norm is at most max_norm (torch's rule); returns the
// norm before clipping.
double grad_clip(float *const *grads, const size_t *sizes, int n_tensors, float max_norm);

#endif
