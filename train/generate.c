// generate.c: greedy and nucleus sampling with the CPU model (see generate.h).
#include "generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"

typedef struct {
    float p;
    int32_t id;
} Candidate;

static int by_probability(const void *a, const void *b) {
    const Candidate *x = a, *y = b;
    return x->p < y->p ? 1 : x->p > y->p ? -1 : (x->id > y->id) - (x->id < y->id);
}

int32_t sample_token(const float *logits, int V, float temperature, float top_p, uint64_t *rng) {
    int32_t best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = v;
    if (temperature <= 0.0f) return best;
    Candidate *c = xmalloc((size_t)V * sizeof(Candidate));
    double sum = 0.0;
    for (int v = 0; v < V; v++) {
        c[v].id = v;
        c[v].p = expf((logits[v] - logits[best]) / temperature);
        sum += c[v].p;
    }
    qsort(c, (size_t)V, sizeof(Candidate), by_probability);
    int keep = 0;
    double mass = 0.0;
    while (keep < V && (keep == 0 || mass < top_p * sum)) mass += c[keep++].p;
    double r = rng_uniform(rng) * mass, acc = 0.0;
    int32_t pick = c[keep - 1].id;
    for (int k = 0; k < keep; k++)
        if ((acc += c[k].p) > r) {
            pick = c[k].id;
            break;
        }
    free(c);
    return pick;
}

void generate(Model *m, TokenVec *ids, int max_new, int32_t eos_id, float temperature, float top_p, uint64_t *rng) {
    int V = m->c.vocab_size;
    for (int n = 0; n < max_new; n++) {
        int T = (int)ids->len;
        int32_t *pos = xmalloc((size_t)T * sizeof(int32_t)), *seg = xcalloc((size_t)T, sizeof(int32_t)),
                *tgt = xcalloc((size_t)T, sizeof(int32_t));
        float *w = xcalloc((size_t)T, sizeof(float)), *logits = xmalloc((size_t)T * V * sizeof(float));
        for (int t = 0; t < T; t++) pos[t] = t;
        ModelInput in = {T, ids->ids, pos, seg, tgt, w};
        model_step(m, &in, 1.0f, 0, logits);
        int32_t next = sample_token(logits + (size_t)(T - 1) * V, V, temperature, top_p, rng);
        free(pos), free(seg), free(tgt), free(w), free(logits);
        tokvec_push(ids, next);
        if (next == eos_id) break;
    }
}
