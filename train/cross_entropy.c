// cross_entropy.c: see cross_entropy.h.
#include "cross_entropy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"

double cross_entropy(const float *h, const float *W, const int32_t *targets, const float *weights, int T, int H, int V,
                     float grad_scale, float *dh) {
    float *logits = xmalloc((size_t)V * sizeof(float));
    double total = 0.0;
    for (int t = 0; t < T; t++) {
        const float *ht = h + (size_t)t * H;
        if (dh) memset(dh + (size_t)t * H, 0, (size_t)H * sizeof(float));
        if (weights[t] == 0.0f) continue;
        float m = -INFINITY;
        for (int c = 0; c < V; c++) {
            const float *w = W + (size_t)c * H;
            float acc = 0.0f;
            for (int i = 0; i < H; i++) acc += w[i] * ht[i];
            logits[c] = acc;
            if (acc > m) m = acc;
        }
        double sum = 0.0;
        for (int c = 0; c < V; c++) sum += exp((double)(logits[c] - m));
        double lse = m + log(sum);
        total += weights[t] * (lse - logits[targets[t]]);
        if (!dh) continue;
        float *dht = dh + (size_t)t * H;
        for (int c = 0; c < V; c++) {
            float g = (float)(exp(logits[c] - lse)) - (c == targets[t] ? 1.0f : 0.0f);
            g *= grad_scale * weights[t];
            const float *w = W + (size_t)c * H;
            for (int i = 0; i < H; i++) dht[i] += g * w[i];
        }
    }
    free(logits);
    return total;
}
