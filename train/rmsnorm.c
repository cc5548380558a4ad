// rmsnorm.c: see rmsnorm.h. Rows are independent, so they are shared among OpenMP threads.
#include "rmsnorm.h"

#include <math.h>
#include <stddef.h>

void rmsnorm_forward(const float *x, const float *w, float *y, float *rstd, int rows, int C, float eps) {
#pragma omp parallel for schedule(static) if ((long)rows * C > 65536)
    for (int t = 0; t < rows; t++) {
        const float *xt = x + (size_t)t * C;
        float ss = 0.0f;
        for (int i = 0; i < C; i++) ss += xt[i] * xt[i];
        float r = 1.0f / sqrtf(ss / (float)C + eps);
        rstd[t] = r;
        for (int i = 0; i < C; i++) y[(size_t)t * C + i] = w[i] * (xt[i] * r);
    }
}

void rmsnorm_backward(const float *x, const float *w, const float *rstd, const float *dy, float *dx, int rows, int C) {
#pragma omp parallel for schedule(static) if ((long)rows * C > 65536)
    for (int t = 0; t < rows; t++) {
        const float *xt = x + (size_t)t * C, *dyt = dy + (size_t)t * C;
        float r = rstd[t], dot = 0.0f;
        for (int i = 0; i < C; i++) dot += w[i] * dyt[i] * xt[i];
        float c = r * r * r * dot / (float)C;
        for (int i = 0; i < C; i++) dx[(size_t)t * C + i] = r * w[i] * dyt[i] - xt[i] * c;
    }
}
