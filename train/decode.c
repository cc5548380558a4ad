// decode.c: the KV cache and the cached forward step (see decode.h).
#include "decode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "attention.h"
#include "exp_approx.h"
#include "lora.h"
#include "matmul.h"
#include "matvec.h"
#include "rmsnorm.h"
#include "rope.h"
#include "swiglu.h"

// ---------------------------------------------------------------------------------------
// the cache

void kv_cache_init(KvCache *c, const ModelConfig *cfg, int64_t context) {
    memset(c, 0, sizeof(*c));
    c->layers = cfg->num_hidden_layers;
    c->kv_dim = cfg->num_key_value_heads * cfg->head_dim;
    c->window = cfg->sliding_window;
    c->slots = c->window > 0 ? c->window : context;
    c->k = xcalloc((size_t)c->layers, sizeof(float *));
    c->v = xcalloc((size_t)c->layers, sizeof(float *));
}

void kv_cache_free(KvCache *c) {
    for (int l = 0; l < c->layers; l++) free(c->k[l]), free(c->v[l]);
    free(c->k), free(c->v);
    tokvec_free(&c->tokens);
    memset(c, 0, sizeof(*c));
}

int64_t kv_cache_room(const KvCache *c) { return c->window > 0 ? INT64_MAX : c->slots - (int64_t)c->tokens.len; }

// Allocates the slots positions up to `len` need (doubling, up to c->slots). Slots keep
// their index when the arrays grow: positions below the old allocation sit at their own
// index, since a cache only rolls once all its slots exist.
static void reserve(KvCache *c, int64_t len) {
    int64_t need = len < c->slots ? len : c->slots;
    if (need <= c->allocated) return;
    int64_t grown = c->allocated * 2 > need ? c->allocated * 2 : need;
    if (grown > c->slots) grown = c->slots;
    for (int l = 0; l < c->layers; l++) {
        c->k[l] = xrealloc(c->k[l], (size_t)grown * c->kv_dim * sizeof(float));
        c->v[l] = xrealloc(c->v[l], (size_t)grown * c->kv_dim * sizeof(float));
    }
    c->allocated = grown;
}

int kv_cache_rewind(KvCache *c, size_t n) {
    int64_t len = (int64_t)c->tokens.len;
    if ((int64_t)n > len) return -1;
    // a query after the first n tokens needs positions lo .. n-1; position j is still in
    // its slot unless a position j + slots < written has been written since
    int64_t lo = c->window > 0 && (int64_t)n - c->window + 1 > 0 ? (int64_t)n - c->window + 1 : 0;
    if ((int64_t)n > lo && lo < c->written - c->slots) return -1;
    c->tokens.len = n;
    if (n == 0) c->written = 0;
    return 0;
}

size_t kv_cache_reuse(KvCache *c, const int32_t *ids, size_t n) {
    size_t same = 0;
    while (same < c->tokens.len && same + 1 < n && c->tokens.ids[same] == ids[same]) same++;
    if (kv_cache_rewind(c, same)) kv_cache_rewind(c, 0);
    return c->tokens.len;
}

// ---------------------------------------------------------------------------------------
// the step

// y = x W^T (+ s (x A^T) B^T) for M rows, the first Mm of them (the rows of prompt chunks)
// as one matrix product over the float32 weight (dequantized into w32 when it is not
// float32), the others through matvec. u [M, r] is scratch for the LoRA branch.
static void project(const Model *m, const Linear *l, const float *x, int Mm, int M, float *y, float *u, float *w32) {
    if (Mm > 0) {
        const float *w = l->w;
        if (!w) linear_frozen_f32(l, w32), w = w32;
        matmul(y, l->out, x, l->in, 0, w, l->in, 1, Mm, l->out, l->in, 1.0f, 0);
        if (l->A) lora_forward(x, NULL, l->A, l->B, y, u, NULL, Mm, l->in, m->lora_r, l->out, m->lora_scale);
    }
    x += (size_t)Mm * l->in, y += (size_t)Mm * l->out, M -= Mm;
    if (M == 0) return;
    if (l->w) matvec_f32(y, x, l->w, M, l->out, l->in, 1.0f, 0);
    else if (l->w_bf16) matvec_bf16(y, x, l->w_bf16, M, l->out, l->in, 1.0f, 0);
    else matvec_nf4(y, x, &l->q, M, 1.0f, 0);
    if (!l->A) return;
    matvec_f32(u, x, l->A, M, m->lora_r, l->in, 1.0f, 0);
    matvec_f32(y, u, l->B, M, l->out, m->lora_r, m->lora_scale, 1);
}

static float dot(const float *a, const float *b, int n) {
    float acc[8] = {0};  // 8 lanes, so the compiler vectorises the sum
    int d = 0;
    for (; d + 8 <= n; d += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[d + l] * b[d + l];
    for (; d < n; d++) acc[0] += a[d] * b[d];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// Query row q (head h, position p) of a sequence whose new tokens start at p0: softmax over
// the keys it sees (positions lo .. p: cached below p0, new from p0 on) of q.k / sqrt(D),
// times the values, into out [D]. s is scratch for p - lo + 1 scores.
static void attend(const KvCache *c, int layer, const float *q, const float *knew, const float *vnew, int64_t p0,
                   int64_t p, int h, int Hq, int D, float *out, float *s) {
    int Hkv = c->kv_dim / D, kh = h / (Hq / Hkv);
    int64_t lo = c->window > 0 && p - c->window + 1 > 0 ? p - c->window + 1 : 0;
    int nk = (int)(p - lo + 1);
    float scale = 1.0f / sqrtf((float)D), mx = -INFINITY, sum = 0.0f;
    for (int64_t j = lo; j <= p; j++) {
        const float *key = j >= p0 ? knew + ((size_t)(j - p0) * Hkv + kh) * D
                                   : c->k[layer] + (size_t)(j % c->slots) * c->kv_dim + (size_t)kh * D;
        s[j - lo] = dot(q, key, D) * scale;
        mx = s[j - lo] > mx ? s[j - lo] : mx;
    }
    exp_shifted(s, nk, mx);
    for (int i = 0; i < nk; i++) sum += s[i];
    memset(out, 0, (size_t)D * sizeof(float));
    for (int64_t j = lo; j <= p; j++) {
        const float *val = j >= p0 ? vnew + ((size_t)(j - p0) * Hkv + kh) * D
                                   : c->v[layer] + (size_t)(j % c->slots) * c->kv_dim + (size_t)kh * D;
        float pj = s[j - lo] / sum;
        for (int d = 0; d < D; d++) out[d] += pj * val[d];
    }
}

// Every sequence's new tokens attend to what they see; then their keys and values enter
// the cache. A sequence read from its start (an empty cache) goes through
// attention_forward, the full forward's own attention, which is faster for long prompts.
static void attention_step(DecodeSeq *seqs, int nseq, const int *first, int layer, const float *q, const float *k,
                           const float *v, int N, int Hq, int D, float *att) {
    const KvCache *c0 = seqs[0].cache;
    int Hkv = c0->kv_dim / D;
    int *seq_of = xmalloc((size_t)N * sizeof(int));
    int64_t longest = 1;
    for (int s = 0; s < nseq; s++) {
        int64_t p_end = (int64_t)seqs[s].cache->tokens.len + seqs[s].n;
        int64_t span = seqs[s].cache->window > 0 && seqs[s].cache->window < p_end ? seqs[s].cache->window : p_end;
        longest = span > longest ? span : longest;
        for (int i = 0; i < seqs[s].n; i++) seq_of[first[s] + i] = s;
        if (seqs[s].cache->tokens.len == 0 && seqs[s].n > 1) {
            int n = seqs[s].n;
            int32_t *seg = xcalloc((size_t)n, sizeof(int32_t));
            float *lse = xmalloc((size_t)n * Hq * sizeof(float));
            size_t r = (size_t)first[s];
            attention_forward(q + r * Hq * D, k + r * Hkv * D, v + r * Hkv * D, seg, n, Hq, Hkv, D,
                              seqs[s].cache->window, att + r * Hq * D, lse);
            free(seg), free(lse);
        }
    }
#pragma omp parallel
    {
        float *scores = xmalloc((size_t)longest * sizeof(float));
#pragma omp for schedule(dynamic)
        for (int item = 0; item < N * Hq; item++) {
            int t = item / Hq, h = item % Hq, s = seq_of[t];
            const KvCache *c = seqs[s].cache;
            if (c->tokens.len == 0 && seqs[s].n > 1) continue;  // done above
            int64_t p0 = (int64_t)c->tokens.len;
            size_t r = (size_t)first[s];
            attend(c, layer, q + ((size_t)t * Hq + h) * D, k + r * Hkv * D, v + r * Hkv * D, p0, p0 + (t - first[s]),
                   h, Hq, D, att + ((size_t)t * Hq + h) * D, scores);
        }
        free(scores);
    }
    for (int s = 0; s < nseq; s++) {  // the new keys and values into their slots
        KvCache *c = seqs[s].cache;
        int64_t p0 = (int64_t)c->tokens.len;
        for (int i = seqs[s].n > c->slots ? seqs[s].n - (int)c->slots : 0; i < seqs[s].n; i++) {
            size_t slot = (size_t)((p0 + i) % c->slots), r = (size_t)(first[s] + i);
            memcpy(c->k[layer] + slot * c->kv_dim, k + r * c->kv_dim, (size_t)c->kv_dim * sizeof(float));
            memcpy(c->v[layer] + slot * c->kv_dim, v + r * c->kv_dim, (size_t)c->kv_dim * sizeof(float));
        }
    }
    free(seq_of);
}

int decode_forward(const Model *m, DecodeSeq *seqs, int nseq, float *logits, int all_logits) {
    const ModelConfig *c = &m->c;
    int H = c->hidden_size, D = c->head_dim, Hq = c->num_attention_heads, Hkv = c->num_key_value_heads,
        I = c->intermediate_size, V = c->vocab_size, Q = Hq * D, KV = Hkv * D, N = 0, Nm = 0;
    for (int s = 0; s < nseq; s++)
        if (seqs[s].n > kv_cache_room(seqs[s].cache)) return -1;
    // rows: the tokens of prompt chunks (DECODE_MATMUL_MIN or more new tokens) first, for
    // matrix products; then the others, for matvec. A sequence's rows are contiguous.
    int *first = xmalloc((size_t)nseq * sizeof(int));
    for (int pass = 0; pass < 2; pass++)
        for (int s = 0; s < nseq; s++)
            if ((seqs[s].n >= DECODE_MATMUL_MIN) == (pass == 0)) {
                first[s] = N;
                N += seqs[s].n;
                Nm += pass == 0 ? seqs[s].n : 0;
                reserve(seqs[s].cache, (int64_t)seqs[s].cache->tokens.len + seqs[s].n);
            }
    int32_t *pos = xmalloc((size_t)N * sizeof(int32_t));
    size_t biggest = 0;  // the largest frozen weight, dequantized for the matrix products
    for (int p = 0; Nm && p < N_PROJ; p++) {
        size_t n = (size_t)m->layers[0].proj[p].in * m->layers[0].proj[p].out;
        biggest = n > biggest ? n : biggest;
    }
    float *x = xmalloc((size_t)N * H * sizeof(float)), *h = xmalloc((size_t)N * H * sizeof(float)),
          *rstd = xmalloc((size_t)N * sizeof(float)), *q = xmalloc((size_t)N * Q * sizeof(float)),
          *k = xmalloc((size_t)N * KV * sizeof(float)), *v = xmalloc((size_t)N * KV * sizeof(float)),
          *att = xmalloc((size_t)N * Q * sizeof(float)), *tmp = xmalloc((size_t)N * H * sizeof(float)),
          *g = xmalloc((size_t)N * I * sizeof(float)), *up = xmalloc((size_t)N * I * sizeof(float)),
          *u = xmalloc((size_t)N * (m->lora_r > 0 ? m->lora_r : 1) * sizeof(float)),
          *w32 = biggest ? xmalloc(biggest * sizeof(float)) : NULL;
    for (int s = 0; s < nseq; s++)
        for (int i = 0; i < seqs[s].n; i++) {
            int t = first[s] + i;
            pos[t] = (int32_t)(seqs[s].cache->tokens.len + (size_t)i);
            memcpy(x + (size_t)t * H, m->embed + (size_t)seqs[s].tokens[i] * H, (size_t)H * sizeof(float));
        }
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const Layer *ly = &m->layers[l];
        rmsnorm_forward(x, ly->ln1, h, rstd, N, H, c->rms_norm_eps);
        project(m, &ly->proj[PROJ_Q], h, Nm, N, q, u, w32);
        project(m, &ly->proj[PROJ_K], h, Nm, N, k, u, w32);
        project(m, &ly->proj[PROJ_V], h, Nm, N, v, u, w32);
        rope_apply(q, pos, N, Hq, D, c->rope_theta, 1);
        rope_apply(k, pos, N, Hkv, D, c->rope_theta, 1);
        attention_step(seqs, nseq, first, l, q, k, v, N, Hq, D, att);
        project(m, &ly->proj[PROJ_O], att, Nm, N, tmp, u, w32);
        for (size_t j = 0; j < (size_t)N * H; j++) x[j] += tmp[j];
        rmsnorm_forward(x, ly->ln2, h, rstd, N, H, c->rms_norm_eps);
        project(m, &ly->proj[PROJ_GATE], h, Nm, N, g, u, w32);
        project(m, &ly->proj[PROJ_UP], h, Nm, N, up, u, w32);
        swiglu_forward(g, up, g, (size_t)N * I);
        project(m, &ly->proj[PROJ_DOWN], g, Nm, N, tmp, u, w32);
        for (size_t j = 0; j < (size_t)N * H; j++) x[j] += tmp[j];
    }
    // the rows whose logits are wanted, in the caller's order, gathered into tmp; the head
    // always through matvec (one row's logits never depend on the others)
    int R = 0;
    for (int s = 0; s < nseq; s++)
        for (int i = all_logits ? 0 : seqs[s].n - 1; i < seqs[s].n; i++)
            memcpy(tmp + (size_t)R++ * H, x + (size_t)(first[s] + i) * H, (size_t)H * sizeof(float));
    rmsnorm_forward(tmp, m->norm, h, rstd, R, H, c->rms_norm_eps);
    if (m->head) matvec_f32(logits, h, m->head, R, V, H, 1.0f, 0);
    else matvec_bf16(logits, h, m->head_bf16, R, V, H, 1.0f, 0);
    for (int s = 0; s < nseq; s++) {
        KvCache *kc = seqs[s].cache;
        for (int i = 0; i < seqs[s].n; i++) tokvec_push(&kc->tokens, seqs[s].tokens[i]);
        if ((int64_t)kc->tokens.len > kc->written) kc->written = (int64_t)kc->tokens.len;
    }
    free(first), free(pos), free(x), free(h), free(rstd), free(q), free(k), free(v), free(att), free(tmp), free(g);
    free(up), free(u), free(w32);
    return 0;
}

static int cpu_step(void *ctx, DecodeSeq *seqs, int nseq, float *logits, int all_logits) {
    return decode_forward((const Model *)ctx, seqs, nseq, logits, all_logits);
}

Decoder decoder_cpu(const Model *m) { return (Decoder){cpu_step, (void *)m, &m->c}; }

int decode_prompt(const Decoder *d, KvCache *c, const int32_t *ids, size_t n, float *logits) {
    size_t done = kv_cache_reuse(c, ids, n);
    if ((int64_t)(n - done) > kv_cache_room(c)) return -1;
    while (done < n) {
        int chunk = n - done < DECODE_CHUNK ? (int)(n - done) : DECODE_CHUNK;
        DecodeSeq s = {c, ids + done, chunk};
        if (d->step(d->ctx, &s, 1, logits, 0)) return -1;
        done += (size_t)chunk;
    }
    return 0;
}
