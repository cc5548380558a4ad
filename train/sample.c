// sample.c: temperature, top-k and top-p sampling (see sample.h).
//
// Only the most probable tokens matter, so instead of sorting the whole vocabulary the
// candidates go into a binary max-heap (built in O(V)) and are popped in order of decreasing
// probability for as long as top-k and top-p need: O(V + kept * log V).
#include "sample.h"

#include <stdlib.h>

#include "../common/util.h"
#include "exp_approx.h"

typedef struct {
    float p;
    int32_t id;
} Candidate;

// Does a come before b: more probable, or as probable with a lower id.
static int before(const Candidate *a, const Candidate *b) { return a->p > b->p || (a->p == b->p && a->id < b->id); }

static void sift_down(Candidate *h, int n, int i) {
    for (;;) {
        int best = i, l = 2 * i + 1, r = l + 1;
        if (l < n && before(&h[l], &h[best])) best = l;
        if (r < n && before(&h[r], &h[best])) best = r;
        if (best == i) return;
        Candidate t = h[i];
        h[i] = h[best];
        h[best] = t;
        i = best;
    }
}

// Moves the heap's first candidate to order[*kept] and returns its probability.
static float pop(Candidate *heap, int *n, Candidate *order, int *kept) {
    order[(*kept)++] = heap[0];
    heap[0] = heap[--*n];
    sift_down(heap, *n, 0);
    return order[*kept - 1].p;
}

int32_t sample_token(const float *logits, int V, const SampleConfig *c, uint64_t *rng) {
    if (c->vocab > 0 && c->vocab < V) V = c->vocab;
    int32_t best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = v;
    if (c->temperature <= 0.0f) return best;
    float *p = xmalloc((size_t)V * sizeof(float));  // exp((logit - max) / T), unnormalised
    for (int v = 0; v < V; v++) p[v] = (logits[v] - logits[best]) / c->temperature;
    exp_shifted(p, V, 0.0f);
    double total = 0.0, mass = 0.0;  // the mass top-p is relative to; the mass kept
    for (int v = 0; v < V; v++) total += p[v];
    if (c->top_p >= 1.0f && (c->top_k <= 0 || c->top_k >= V)) {  // nothing cut: no order needed
        double r = rng_uniform(rng) * total;
        int32_t pick = V - 1;
        for (int v = 0; v < V; v++)
            if ((mass += p[v]) > r) {
                pick = v;
                break;
            }
        free(p);
        return pick;
    }
    Candidate *heap = xmalloc((size_t)V * sizeof(Candidate)), *order = xmalloc((size_t)V * sizeof(Candidate));
    for (int v = 0; v < V; v++) heap[v] = (Candidate){p[v], v};
    for (int i = V / 2 - 1; i >= 0; i--) sift_down(heap, V, i);
    int n = V, kept = 0;
    if (c->top_k > 0 && c->top_k < V) {  // top-k: its tokens, then top-p among them
        total = 0.0;
        while (kept < c->top_k) total += pop(heap, &n, order, &kept);
        int nucleus = 0;
        while (nucleus < kept && (nucleus == 0 || mass < (double)c->top_p * total)) mass += order[nucleus++].p;
        kept = nucleus;
    } else {
        while (n > 0 && (kept == 0 || mass < (double)c->top_p * total)) mass += pop(heap, &n, order, &kept);
    }
    double r = rng_uniform(rng) * mass, acc = 0.0;
    int32_t pick = order[kept - 1].id;  // (rounding could leave acc a hair below r)
    for (int i = 0; i < kept; i++)
        if ((acc += order[i].p) > r) {
            pick = order[i].id;
            break;
        }
    free(p), free(heap), free(order);
    return pick;
}
