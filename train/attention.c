// attention.c: see attention.h for the mask and the gradient formulas.
//
// Computed by blocks of ATT_QB query rows with matmul.h: a block's scores against the
// keys any of its rows may see ([first key of the block, last row]) are one matrix product,
// masked entries get probability exactly 0 (so they add exact zeros to every later sum),
// and the products with V (and in the backward pass dP, dQ, dK, dV) are matrix products
// too. The forward pass is parallel over (head, block) pairs; the backward pass over (KV
// head, conversation) pairs, since the queries of one KV head add into its dK and dV (in a
// fixed order) but never across conversations.
#include "attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "exp_approx.h"
#include "matmul.h"

#define ATT_QB 64

// The first key query i may see: the start of its conversation (a conversation's tokens
// are contiguous), or of its window.
static void first_keys(const int32_t *seg, int T, int window, int *first) {
    for (int i = 0; i < T; i++) {
        first[i] = i > 0 && seg[i - 1] == seg[i] ? first[i - 1] : i;
        if (window > 0 && first[i] < i - window + 1) first[i] = i - window + 1;
    }
}

// Query rows [i0, i1) see keys [*lo, i1): the lowest first key among them.
static void block_keys(const int *first, int i0, int i1, int *lo) {
    *lo = i0;
    for (int i = i0; i < i1; i++) *lo = first[i] < *lo ? first[i] : *lo;
}

// Scores of query rows [i0, i1) of head h against keys [lo, i1): s[r, c] = q_i . k_j / sqrt(D).
static void scores(float *s, const float *q, const float *k, int h, int kh, int i0, int i1, int lo, int Hq, int Hkv,
                   int D) {
    matmul(s, i1 - lo, q + ((size_t)i0 * Hq + h) * D, Hq * D, 0, k + ((size_t)lo * Hkv + kh) * D, Hkv * D, 1, i1 - i0,
           i1 - lo, D, 1.0f / sqrtf((float)D), 0);
}

// One query's row of scores p[0 .. nk) into its probabilities: the softmax over the keys it
// sees, [c0, c1], exactly 0 elsewhere. Returns the log of the softmax's denominator, max +
// log(sum) (the backward pass recomputes the probabilities from it).
VECTOR_CLONES static float softmax_row(float *p, int nk, int c0, int c1) {
    int n = c1 - c0 + 1;
    float m = row_max(p + c0, n);
    exp_shifted(p + c0, n, m);
    double sum = row_sum(p + c0, n);
    float inv = (float)(1.0 / sum);
    for (int c = 0; c < nk; c++) p[c] = c >= c0 && c <= c1 ? p[c] * inv : 0.0f;
    return m + (float)log(sum);
}

// The backward of softmax_row for one query: p (the scores again) becomes the probabilities
// e^(s - lse) on [c0, c1] and 0 elsewhere; ds (dP = dO V^T on entry) becomes
// dS = P * (dP - rowsum(dO * O)) * scale.
VECTOR_CLONES static void softmax_row_backward(float *p, float *ds, int nk, int c0, int c1, float lse,
                                               const float *dout, const float *out, int D, float scale) {
    float delta[SOFTMAX_LANES] = {0}, dsum = 0.0f;
    int d = 0;
    for (; d + SOFTMAX_LANES <= D; d += SOFTMAX_LANES)
        for (int l = 0; l < SOFTMAX_LANES; l++) delta[l] += dout[d + l] * out[d + l];
    for (int l = 0; l < SOFTMAX_LANES; l++) dsum += delta[l];
    for (; d < D; d++) dsum += dout[d] * out[d];
    exp_shifted(p + c0, c1 - c0 + 1, lse);
    for (int c = 0; c < nk; c++) {
        p[c] = c >= c0 && c <= c1 ? p[c] : 0.0f;
        ds[c] = p[c] * (ds[c] - dsum) * scale;
    }
}

void attention_forward(const float *q, const float *k, const float *v, const int32_t *seg, int T, int Hq, int Hkv,
                       int D, int window, float *out, float *lse) {
    int *first = xmalloc((size_t)(T ? T : 1) * sizeof(int));
    first_keys(seg, T, window, first);
    int blocks = (T + ATT_QB - 1) / ATT_QB;
#pragma omp parallel
    {
        float *p = xmalloc((size_t)ATT_QB * (T ? T : 1) * sizeof(float));
#pragma omp for schedule(dynamic)
        for (int hb = 0; hb < Hq * blocks; hb++) {
            int h = hb / blocks, kh = h / (Hq / Hkv), i0 = (hb % blocks) * ATT_QB;
            int i1 = i0 + ATT_QB < T ? i0 + ATT_QB : T, lo, nk;
            block_keys(first, i0, i1, &lo);
            nk = i1 - lo;
            scores(p, q, k, h, kh, i0, i1, lo, Hq, Hkv, D);
            for (int i = i0; i < i1; i++)
                lse[(size_t)i * Hq + h] = softmax_row(p + (size_t)(i - i0) * nk, nk, first[i] - lo, i - lo);
            matmul(out + ((size_t)i0 * Hq + h) * D, Hq * D, p, nk, 0, v + ((size_t)lo * Hkv + kh) * D, Hkv * D, 0,
                   i1 - i0, D, nk, 1.0f, 0);
        }
        free(p);
    }
    free(first);
}

void attention_backward(const float *q, const float *k, const float *v, const float *out, const float *dout,
                        const float *lse, const int32_t *seg, int T, int Hq, int Hkv, int D, int window, float *dq,
                        float *dk, float *dv) {
    float scale = 1.0f / sqrtf((float)D);
    int *first = xmalloc((size_t)(T ? T : 1) * sizeof(int));
    first_keys(seg, T, window, first);
    memset(dk, 0, (size_t)T * Hkv * D * sizeof(float));
    memset(dv, 0, (size_t)T * Hkv * D * sizeof(float));
    // Conversations, [start[c], start[c + 1]): no query sees a key of another, so their dK and
    // dV are separate sums, and (KV head, conversation) pairs are independent pieces of work.
    // A conversation starts where a query's first key is itself (first[] never decreases).
    int *start = xmalloc((size_t)(T + 1) * sizeof(int)), convs = 0;
    for (int i = 0; i < T; i++)
        if (first[i] == i) start[convs++] = i;
    start[convs] = T;
    int group = Hq / Hkv;
#pragma omp parallel
    {
        float *p = xmalloc((size_t)ATT_QB * (T ? T : 1) * sizeof(float));
        float *ds = xmalloc((size_t)ATT_QB * (T ? T : 1) * sizeof(float));
#pragma omp for schedule(dynamic)
        for (int u = 0; u < Hkv * convs; u++) {
            int kh = u / convs, c = u % convs;
            for (int h = kh * group; h < (kh + 1) * group; h++)
                for (int i0 = start[c]; i0 < start[c + 1]; i0 += ATT_QB) {
                    int i1 = i0 + ATT_QB < start[c + 1] ? i0 + ATT_QB : start[c + 1], lo, nk;
                    block_keys(first, i0, i1, &lo);
                    nk = i1 - lo;
                    const float *qb = q + ((size_t)i0 * Hq + h) * D, *dob = dout + ((size_t)i0 * Hq + h) * D;
                    const float *kb = k + ((size_t)lo * Hkv + kh) * D, *vb = v + ((size_t)lo * Hkv + kh) * D;
                    scores(p, q, k, h, kh, i0, i1, lo, Hq, Hkv, D);
                    matmul(ds, nk, dob, Hq * D, 0, vb, Hkv * D, 1, i1 - i0, nk, D, 1.0f, 0);  // dP = dO V^T
                    for (int i = i0; i < i1; i++) {
                        size_t row = (size_t)i * Hq + h;
                        softmax_row_backward(p + (size_t)(i - i0) * nk, ds + (size_t)(i - i0) * nk, nk, first[i] - lo,
                                             i - lo, lse[row], dout + row * D, out + row * D, D, scale);
                    }
                    matmul(dq + ((size_t)i0 * Hq + h) * D, Hq * D, ds, nk, 0, kb, Hkv * D, 0, i1 - i0, D, nk, 1.0f, 0);
                    matmul(dk + ((size_t)lo * Hkv + kh) * D, Hkv * D, ds, nk, 1, qb, Hq * D, 0, nk, D, i1 - i0, 1.0f, 1);
                    matmul(dv + ((size_t)lo * Hkv + kh) * D, Hkv * D, p, nk, 1, dob, Hq * D, 0, nk, D, i1 - i0, 1.0f, 1);
                }
        }
        free(p);
        free(ds);
    }
    free(start);
    free(first);
}
