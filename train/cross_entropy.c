// cross_entropy.c: see cross_entropy.h.
#include "cross_entropy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "exp_approx.h"
#include "matmul.h"

// softmax_row is compiled twice (VECTOR_CLONES, exp_approx.h); row_max and row_sum take
// their partial results in a fixed order, so both clones give the same bits.

// One token's row of logits: returns w * (logsumexp - logit[target]); with grad set, turns
// the row into grad_scale * w * (softmax - onehot(target)) in place (else it is scratch).
// The maximum and the sum are row_max's and row_sum's (exp_approx.h), so the result does not
// depend on the machine's vectors.
VECTOR_CLONES static double softmax_row(float *x, int V, int32_t target, float w, float grad_scale, int grad) {
    float m = row_max(x, V), xt = x[target];
    exp_shifted(x, V, m);
    double sum = row_sum(x, V), lse = m + log(sum);
    if (grad) {
        float k = grad_scale * w, inv = (float)(1.0 / sum), pt = x[target] * inv;
        for (int c = 0; c < V; c++) x[c] = x[c] * inv * k;
        x[target] = (pt - 1.0f) * k;
    }
    return w * (lse - xt);
}

double cross_entropy(const float *h, const float *W, const int32_t *targets, const float *weights, int T, int H, int V,
                     float grad_scale, float *dh) {
    int *rows = xmalloc((size_t)(T ? T : 1) * sizeof(int));  // the trained tokens
    int n = 0;
    for (int t = 0; t < T; t++)
        if (weights[t] != 0.0f) rows[n++] = t;
    if (dh) memset(dh, 0, (size_t)T * H * sizeof(float));
    int chunk = n < CE_ROWS ? n : CE_ROWS;
    float *hc = xmalloc((size_t)(chunk ? chunk : 1) * H * sizeof(float));
    float *logits = xmalloc((size_t)(chunk ? chunk : 1) * V * sizeof(float));
    double *loss = xmalloc((size_t)(chunk ? chunk : 1) * sizeof(double)), total = 0.0;
    for (int r0 = 0; r0 < n; r0 += CE_ROWS) {
        int nr = n - r0 < CE_ROWS ? n - r0 : CE_ROWS;
        for (int r = 0; r < nr; r++) memcpy(hc + (size_t)r * H, h + (size_t)rows[r0 + r] * H, (size_t)H * sizeof(float));
        matmul(logits, V, hc, H, 0, W, H, 1, nr, V, H, 1.0f, 0);
#pragma omp parallel for schedule(static)
        for (int r = 0; r < nr; r++) {
            int t = rows[r0 + r];
            loss[r] = softmax_row(logits + (size_t)r * V, V, targets[t], weights[t], grad_scale, dh != NULL);
        }
        for (int r = 0; r < nr; r++) total += loss[r];
        if (!dh) continue;
        matmul(hc, H, logits, V, 0, W, H, 0, nr, H, V, 1.0f, 0);  // dh of the chunk's tokens
        for (int r = 0; r < nr; r++) memcpy(dh + (size_t)rows[r0 + r] * H, hc + (size_t)r * H, (size_t)H * sizeof(float));
    }
    free(rows), free(hc), free(logits), free(loss);
    return total;
}
