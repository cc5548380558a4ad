// adamw.c: see adamw.h for the update and the clipping rule.
#include "adamw.h"

#include <math.h>

void adamw_step(float *param, const float *grad, float *m, float *v, size_t n, int step, float lr,
                const AdamWConfig *c) {
    float decay = (float)(1.0 - (double)lr * c->weight_decay);
    double bc1 = 1.0 - pow(c->beta1, step), bc2 = 1.0 - pow(c->beta2, step);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float w1 = 1.0f - c->beta1, w2 = 1.0f - c->beta2;
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        param[i] *= decay;
        m[i] += w1 * (g - m[i]);
        v[i] = v[i] * c->beta2 + w2 * g * g;
        float denom = sqrtf(v[i]) / bc2_sqrt + c->eps;
        param[i] -= step_size * (m[i] / denom);
    }
}

double grad_global_norm(float *const *grads, const size_t *sizes, int n_tensors) {
    double sum = 0.0;
    for (int t = 0; t < n_tensors; t++)
        for (size_t i = 0; i < sizes[t]; i++) sum += (double)grads[t][i] * grads[t][i];
    return sqrt(sum);
}

double grad_clip(float *const *grads, const size_t *sizes, int n_tensors, float max_norm) {
    double norm = grad_global_norm(grads, sizes, n_tensors);
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
        for (int t = 0; t < n_tensors; t++)
            for (size_t i = 0; i < sizes[t]; i++) grads[t][i] *= (float)coef;
    return norm;
}
