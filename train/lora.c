// lora.c: LoRA forward and backward (see lora.h for the math and the orientation).
#include "lora.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"

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
    for (int t = 0; t < M; t++) {
        const float *xt = x + (size_t)t * in;
        if (mask) {  // apply dropout once, keep the result for the backward
            float *xd = xd_out + (size_t)t * in;
            for (int i = 0; i < in; i++) xd[i] = xt[i] * mask[(size_t)t * in + i];
            xt = xd;
        }
        float *ut = u + (size_t)t * r;
        for (int k = 0; k < r; k++) {
            const float *a = A + (size_t)k * in;
            float acc = 0.0f;
            for (int i = 0; i < in; i++) acc += xt[i] * a[i];
            ut[k] = acc;
        }
        float *yt = y + (size_t)t * out;
        for (int o = 0; o < out; o++) {
            const float *b = B + (size_t)o * r;
            float acc = 0.0f;
            for (int k = 0; k < r; k++) acc += ut[k] * b[k];
            yt[o] += s * acc;
        }
    }
}

void lora_backward(const float *dy, const float *xd, const float *u, const float *mask, const float *A,
                   const float *B, float *dA, float *dB, float *dx, int M, int in, int r, int out, float s) {
    float *g = xmalloc((size_t)r * sizeof(float));  // g = s * dY B for one token
    for (int t = 0; t < M; t++) {
        const float *dyt = dy + (size_t)t * out, *ut = u + (size_t)t * r, *xt = xd + (size_t)t * in;
        for (int o = 0; o < out; o++) {
            float d = s * dyt[o];
            float *db = dB + (size_t)o * r;
            for (int k = 0; k < r; k++) db[k] += d * ut[k];
        }
        for (int k = 0; k < r; k++) {
            float acc = 0.0f;
            for (int o = 0; o < out; o++) acc += dyt[o] * B[(size_t)o * r + k];
            g[k] = s * acc;
        }
        for (int k = 0; k < r; k++) {
            float *da = dA + (size_t)k * in;
            for (int i = 0; i < in; i++) da[i] += g[k] * xt[i];
        }
        if (!dx) continue;
        float *dxt = dx + (size_t)t * in;
        for (int i = 0; i < in; i++) {
            float acc = 0.0f;
            for (int k = 0; k < r; k++) acc += g[k] * A[(size_t)k * in + i];
            dxt[i] += mask ? acc * mask[(size_t)t * in + i] : acc;
        }
    }
    free(g);
}
