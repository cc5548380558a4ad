// attention.c: see attention.h for the mask and the gradient formulas.
#include "attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"

// The first key query i may see: the start of its conversation, or of its window.
static int first_key(const int32_t *seg, int i, int window) {
    int j = i;
    while (j > 0 && seg[j - 1] == seg[i] && (window <= 0 || i - (j - 1) <= window - 1)) j--;
    return j;
}

void attention_forward(const float *q, const float *k, const float *v, const int32_t *seg, int T, int Hq, int Hkv,
                       int D, int window, float *out, float *lse) {
    float scale = 1.0f / sqrtf((float)D);
    float *p = xmalloc((size_t)T * sizeof(float));
    for (int i = 0; i < T; i++) {
        int j0 = first_key(seg, i, window);
        for (int h = 0; h < Hq; h++) {
            int kh = h / (Hq / Hkv);
            const float *qi = q + ((size_t)i * Hq + h) * D;
            float m = -INFINITY;
            for (int j = j0; j <= i; j++) {
                const float *kj = k + ((size_t)j * Hkv + kh) * D;
                float s = 0.0f;
                for (int d = 0; d < D; d++) s += qi[d] * kj[d];
                p[j] = s * scale;
                if (p[j] > m) m = p[j];
            }
            float sum = 0.0f;
            for (int j = j0; j <= i; j++) sum += p[j] = expf(p[j] - m);
            float *oi = out + ((size_t)i * Hq + h) * D;
            memset(oi, 0, (size_t)D * sizeof(float));
            for (int j = j0; j <= i; j++) {
                const float *vj = v + ((size_t)j * Hkv + kh) * D;
                float w = p[j] / sum;
                for (int d = 0; d < D; d++) oi[d] += w * vj[d];
            }
            lse[(size_t)i * Hq + h] = m + logf(sum);
        }
    }
    free(p);
}

void attention_backward(const float *q, const float *k, const float *v, const float *out, const float *dout,
                        const float *lse, const int32_t *seg, int T, int Hq, int Hkv, int D, int window, float *dq,
                        float *dk, float *dv) {
    float scale = 1.0f / sqrtf((float)D);
    memset(dq, 0, (size_t)T * Hq * D * sizeof(float));
    memset(dk, 0, (size_t)T * Hkv * D * sizeof(float));
    memset(dv, 0, (size_t)T * Hkv * D * sizeof(float));
    for (int i = 0; i < T; i++) {
        int j0 = first_key(seg, i, window);
        for (int h = 0; h < Hq; h++) {
            int kh = h / (Hq / Hkv);
            size_t row = (size_t)i * Hq + h;
            const float *qi = q + row * D, *oi = out + row * D, *doi = dout + row * D;
            float *dqi = dq + row * D;
            float delta = 0.0f;  // rowsum(dO * O) = sum_j P_j dP_j
            for (int d = 0; d < D; d++) delta += doi[d] * oi[d];
            for (int j = j0; j <= i; j++) {
                const float *kj = k + ((size_t)j * Hkv + kh) * D, *vj = v + ((size_t)j * Hkv + kh) * D;
                float s = 0.0f, dp = 0.0f;
                for (int d = 0; d < D; d++) {
                    s += qi[d] * kj[d];
                    dp += doi[d] * vj[d];
                }
                float pj = expf(s * scale - lse[row]);
                float ds = pj * (dp - delta) * scale;
                float *dkj = dk + ((size_t)j * Hkv + kh) * D, *dvj = dv + ((size_t)j * Hkv + kh) * D;
                for (int d = 0; d < D; d++) {
                    dqi[d] += ds * kj[d];
                    dkj[d] += ds * qi[d];
                    dvj[d] += pj * doi[d];
                }
            }
        }
    }
}
