// rope.c: see rope.h. Angles follow transformers: inv_freq and position * inv_freq in
// float32, then cos and sin. Positions are independent, so they are shared among threads.
#include "rope.h"

#include <math.h>
#include <stdlib.h>

#include "../common/util.h"

void rope_inv_freq(float *inv_freq, int D, double theta) {
    for (int j = 0; j < D / 2; j++) inv_freq[j] = 1.0f / powf((float)theta, (float)(2 * j) / (float)D);
}

void rope_apply(float *x, const int32_t *positions, int T, int heads, int D, double theta, int dir) {
    int half = D / 2;
    float *inv_freq = xmalloc((size_t)half * sizeof(float));
    rope_inv_freq(inv_freq, D, theta);
#pragma omp parallel for schedule(static) if ((long)T * heads * D > 65536)
    for (int t = 0; t < T; t++)
        for (int j = 0; j < half; j++) {
            float a = (float)positions[t] * inv_freq[j];
            float c = cosf(a), s = (float)dir * sinf(a);
            for (int h = 0; h < heads; h++) {
                float *v = x + ((size_t)t * heads + h) * D;
                float x1 = v[j], x2 = v[j + half];
                v[j] = x1 * c - x2 * s;
                v[j + half] = x2 * c + x1 * s;
            }
        }
    free(inv_freq);
}
