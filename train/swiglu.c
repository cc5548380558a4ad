// swiglu.c: see swiglu.h. Elementwise, shared among OpenMP threads.
//
// sigmoid(g) = 1 / (1 + e^-g) with exp_approx.h's e^x: libm's expf is a call per element,
// which made this the largest part of the MLP's non-matrix time. The work goes in chunks of
// CHUNK elements, e^-g of a chunk into a buffer of its own first, because gcc vectorises
// exp_approx only in a loop of its own (exp_approx.h).
#include "swiglu.h"

#include "exp_approx.h"

enum { CHUNK = 256 };

// s[i] = sigmoid(g[i]) for i < n <= CHUNK.
static inline void sigmoid_chunk(const float *g, float *s, int n) {
    for (int i = 0; i < n; i++) s[i] = -g[i];
    exp_shifted(s, n, 0.0f);
    for (int i = 0; i < n; i++) s[i] = 1.0f / (1.0f + s[i]);
}

VECTOR_CLONES static void forward_chunk(const float *g, const float *u, float *h, int n) {
    float s[CHUNK];
    sigmoid_chunk(g, s, n);
    for (int i = 0; i < n; i++) h[i] = g[i] * s[i] * u[i];
}

VECTOR_CLONES static void backward_chunk(const float *g, const float *u, const float *dh, float *dg, float *du, int n) {
    float s[CHUNK];
    sigmoid_chunk(g, s, n);
    for (int i = 0; i < n; i++) {  // read everything first: du or dg may alias dh
        float d = dh[i], gi = g[i], ui = u[i];
        du[i] = d * gi * s[i];
        dg[i] = d * ui * s[i] * (1.0f + gi * (1.0f - s[i]));
    }
}

void swiglu_forward(const float *g, const float *u, float *h, size_t n) {
    long chunks = (long)((n + CHUNK - 1) / CHUNK);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (long c = 0; c < chunks; c++) {
        size_t i = (size_t)c * CHUNK;
        forward_chunk(g + i, u + i, h + i, n - i < CHUNK ? (int)(n - i) : CHUNK);
    }
}

void swiglu_backward(const float *g, const float *u, const float *dh, float *dg, float *du, size_t n) {
    long chunks = (long)((n + CHUNK - 1) / CHUNK);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (long c = 0; c < chunks; c++) {
        size_t i = (size_t)c * CHUNK;
        backward_chunk(g + i, u + i, dh + i, dg + i, du + i, n - i < CHUNK ? (int)(n - i) : CHUNK);
    }
}
