// swiglu.c: see swiglu.h. Elementwise, shared among OpenMP threads.
#include "swiglu.h"

#include <math.h>

static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

void swiglu_forward(const float *g, const float *u, float *h, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) h[i] = g[i] * sigmoid(g[i]) * u[i];
}

void swiglu_backward(const float *g, const float *u, const float *dh, float *dg, float *du, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {  // read everything first: du or dg may alias dh
        float s = sigmoid(g[i]), d = dh[i], gi = g[i], ui = u[i];
        du[i] = d * gi * s;
        dg[i] = d * ui * s * (1.0f + gi * (1.0f - s));
    }
}
