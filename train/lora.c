// lora.c: LoRA forward and backward (see lora.h for the math and the orientation).
#include "lora.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "matmul.h"

float lora_scaling(float alpha, int r, int rslora) { return rslora ? alpha / sqrtf((float)r) : alpha / (float)r; }

void lora_init(float *A, float *B, int r, int in, int out, uint64_t *rng) {
    float bound = 1.0f / sqrtf((float)in);
    for (size_t i = 0; i < (size_t)r * in; i++) A[i] = (float)((2.0 * rng_uniform(rng) - 1.0) * bound);
    memset(B, 0, (size_t)out * r * sizeof(float));
}

void lora_dropout_mask(float *mask, size_t n, float p, uint64_t *rng) {
    float keep = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) mask[i] = rng_uniform(rng) < p ? 0.0f : keep;
}

void lora_forward(const float *x, const float *mask, const float *A, const float *B, float *y, float *u,
                  float *xd_out, int M, int in, int r, int out, float s) {
    if (mask) {  // apply dropout once, keep the result for the backward
        size_t n = (size_t)M * in;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t i = 0; i < n; i++) xd_out[i] = x[i] * mask[i];
        x = xd_out;
    }
    matmul(u, r, x, in, 0, A, in, 1, M, r, in, 1.0f, 0);     // u = xd A^T
    matmul(y, out, u, r, 0, B, r, 1, M, out, r, s, 1);       // y += s u B^T
}

void lora_backward(const float *dy, const float *xd, const float *u, const float *mask, const float *A,
                   const float *B, float *dA, float *dB, float *dx, int M, int in, int r, int out, float s) {
    float *g = xmalloc((size_t)M * r * sizeof(float));  // g = s dY B
    matmul(dB, r, dy, out, 1, u, r, 0, out, r, M, s, 1);     // dB += s dY^T u
    matmul(g, r, dy, out, 0, B, r, 0, M, r, out, s, 0);
    matmul(dA, in, g, r, 1, xd, in, 0, r, in, M, 1.0f, 1);  // dA += g^T xd
    if (dx && !mask) matmul(dx, in, g, r, 0, A, in, 0, M, in, r, 1.0f, 1);  // dx += g A
    if (dx && mask) {  // dx += (g A) * mask
        size_t n = (size_t)M * in;
        float *ga = xmalloc(n * sizeof(float));
        matmul(ga, in, g, r, 0, A, in, 0, M, in, r, 1.0f, 0);
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t i = 0; i < n; i++) dx[i] += ga[i] * mask[i];
        free(ga);
    }
    free(g);
}
