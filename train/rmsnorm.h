/*
 * rmsnorm.h: RMSNorm, CPU reference (fp32). For a row x of C values with weight w:
 *   r = 1 / sqrt(mean(x^2) + eps),   y = w * (x * r)
 * (transformers' MistralRMSNorm, reference/mistral.md §4.2: no mean subtraction, no bias,
 * weight not offset by 1). Backward, for the input only (the weight is frozen in QLoRA):
 *   dx = r * (w * dy) - x * r^3 * mean((w * dy) * x)
 * The row's r is returned by the forward pass so the backward need not recompute it.
 */
#ifndef PERSONA_RMSNORM_H
#define PERSONA_RMSNORM_H

void rmsnorm_forward(const float *x, const float *w, float *y, float *rstd, int rows, int C, float eps);
void rmsnorm_backward(const float *x, const float *w, const float *rstd, const float *dy, float *dx, int rows, int C);

#endif
