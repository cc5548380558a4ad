// model.c: the decoder's forward and backward passes on the CPU (see model.h).
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/half.h"
#include "attention.h"
#include "bnb4bit.h"
#include "cross_entropy.h"
#include "gguf.h"
#include "lora.h"
#include "matmul.h"
#include "model_files.h"
#include "rmsnorm.h"
#include "rope.h"
#include "swiglu.h"

const char *const proj_names[N_PROJ] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                        "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
const char *const proj_short[N_PROJ] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

// ---------------------------------------------------------------------------------------
// loading

float *model_weight_finite(float *x, int64_t n, const char *file, const char *name, char *err) {
    int64_t bad = x ? find_non_finite(x, (size_t)n) : -1;
    if (bad < 0) return x;
    set_error(err, "%s: tensor '%s' holds %g at element %lld: a model's weights must be finite", file, name,
              (double)x[bad], (long long)bad);
    free(x);
    return NULL;
}

// A float tensor of the expected shape, converted to float32, finite.
static float *load_float(const ModelFiles *f, const char *name, int64_t rows, int64_t cols, char *err) {
    int64_t shape[2] = {rows, cols};
    const StTensor *t = model_files_expect(f, name, -1, cols ? 2 : 1, shape, err);
    return t ? model_weight_finite(st_to_f32(t), t->numel, model_files_path(f, name), name, err) : NULL;
}

void model_linear_shape(Linear *l, const ModelConfig *c, int p) {
    int H = c->hidden_size, I = c->intermediate_size, q = c->num_attention_heads * c->head_dim,
        kv = c->num_key_value_heads * c->head_dim;
    static const int sizes_in[N_PROJ] = {0, 0, 0, 1, 0, 0, 2}, sizes_out[N_PROJ] = {1, 3, 3, 0, 2, 2, 0};
    int dims[4] = {H, q, I, kv};  // indices used by the two tables above
    l->in = dims[sizes_in[p]];
    l->out = dims[sizes_out[p]];
}

void model_linear_set(Linear *l, float *w, int frozen) {
    if (frozen == FROZEN_F32) {
        l->w = w;
        return;
    }
    size_t n = (size_t)l->out * l->in;
    if (frozen == FROZEN_BF16) {
        l->w_bf16 = xmalloc(n * sizeof(uint16_t));
        for (size_t i = 0; i < n; i++) l->w_bf16[i] = f32_to_bf16(w[i]);
    } else {
        nf4_weight_quantize(&l->q, w, l->out, l->in, 64, 1);
    }
    free(w);
}

void model_init_empty(Model *m, const ModelConfig *c) {
    memset(m, 0, sizeof(*m));
    m->c = *c;
    m->layers = xcalloc((size_t)c->num_hidden_layers, sizeof(Layer));
    for (int i = 0; i < c->num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) model_linear_shape(&m->layers[i].proj[p], c, p);
}

static int load_linear(Linear *l, const ModelFiles *f, const ModelConfig *c, int layer, int p, int frozen, char *err) {
    model_linear_shape(l, c, p);
    char prefix[128], name[160];
    snprintf(prefix, sizeof(prefix), "model.layers.%d.%s", layer, proj_names[p]);
    if (c->bnb_4bit) return bnb4bit_load_linear(&l->q, f, prefix, l->out, l->in, err);
    snprintf(name, sizeof(name), "%s.weight", prefix);
    float *w = load_float(f, name, l->out, l->in, err);
    if (!w) return -1;
    model_linear_set(l, w, frozen);
    return 0;
}

int model_config_load(ModelConfig *c, const char *dir, char *err) {
    if (gguf_is_gguf(dir)) return gguf_model_config(c, dir, err);
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    return config_load(c, path, err);
}

int model_load(Model *m, const char *dir, int frozen, char *err) {
    memset(m, 0, sizeof(*m));
    if (gguf_is_gguf(dir)) return gguf_model_load(m, dir, frozen, err);
    if (model_config_load(&m->c, dir, err)) return -1;
    ModelFiles f;
    if (model_files_open(&f, dir, err)) return -1;
    const ModelConfig *c = &m->c;
    int H = c->hidden_size, V = c->vocab_size, rc = 0;
    // every layer the config counts must be in the files before the layers are allocated
    // (an absurd num_hidden_layers is refused, not attempted)
    for (int i = 0; i < c->num_hidden_layers && rc == 0; i++) {
        char name[128];
        snprintf(name, sizeof(name), "model.layers.%d.input_layernorm.weight", i);
        if (!model_files_find(&f, name)) rc = set_error(err, "%s: tensor '%s' is missing", model_files_path(&f, name), name);
    }
    if (rc) {
        model_files_close(&f);
        return -1;
    }
    m->layers = xcalloc((size_t)c->num_hidden_layers, sizeof(Layer));
    m->embed = load_float(&f, "model.embed_tokens.weight", V, H, err);
    m->norm = m->embed ? load_float(&f, "model.norm.weight", H, 0, err) : NULL;
    m->head = !m->norm ? NULL : c->tie_word_embeddings ? m->embed : load_float(&f, "lm_head.weight", V, H, err);
    if (!m->head) rc = -1;
    for (int i = 0; i < c->num_hidden_layers && rc == 0; i++) {
        Layer *L = &m->layers[i];
        char name[128];
        snprintf(name, sizeof(name), "model.layers.%d.input_layernorm.weight", i);
        L->ln1 = load_float(&f, name, H, 0, err);
        snprintf(name, sizeof(name), "model.layers.%d.post_attention_layernorm.weight", i);
        L->ln2 = L->ln1 ? load_float(&f, name, H, 0, err) : NULL;
        if (!L->ln2) rc = -1;
        for (int p = 0; p < N_PROJ && rc == 0; p++) rc = load_linear(&L->proj[p], &f, c, i, p, frozen, err);
    }
    model_files_close(&f);
    if (rc) model_free(m);
    return rc;
}

void model_free(Model *m) {
    for (int i = 0; m->layers && i < m->c.num_hidden_layers; i++) {
        Layer *L = &m->layers[i];
        free(L->ln1);
        free(L->ln2);
        for (int p = 0; p < N_PROJ; p++) {
            Linear *l = &L->proj[p];
            free(l->w);
            free(l->w_bf16);
            nf4_weight_free(&l->q);
            free(l->A), free(l->B), free(l->dA), free(l->dB);
        }
    }
    free(m->layers);
    if (m->head != m->embed) free(m->head);  // tied embeddings: one array
    free(m->embed);
    free(m->norm);
    free(m->head_bf16);
    free(m->work);
    memset(m, 0, sizeof(*m));
}

void model_head_to_bf16(Model *m) {
    if (!m->head) return;
    size_t n = (size_t)m->c.vocab_size * m->c.hidden_size;
    m->head_bf16 = xmalloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) m->head_bf16[i] = f32_to_bf16(m->head[i]);
    if (m->head != m->embed) free(m->head);  // (tied: the embedding stays)
    m->head = NULL;
}

void linear_frozen_f32(const Linear *l, float *w) {
    size_t n = (size_t)l->out * l->in;
    if (l->w) memcpy(w, l->w, n * sizeof(float));
    else if (l->w_bf16)
        for (size_t i = 0; i < n; i++) w[i] = bf16_to_f32(l->w_bf16[i]);
    else nf4_weight_dequantize(&l->q, w);
}

int model_parse_targets(const char *list, unsigned *mask) {
    static const char *names[N_PROJ] = {"q", "k", "v", "o", "gate", "up", "down"};
    *mask = 0;
    if (strcmp(list, "all") == 0) {
        *mask = (1u << N_PROJ) - 1;
        return 0;
    }
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", list);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int found = 0;
        for (int p = 0; p < N_PROJ; p++)
            if (strcmp(tok, names[p]) == 0 || strcmp(tok, proj_short[p]) == 0) *mask |= 1u << p, found = 1;
        if (!found) return -1;
    }
    return *mask ? 0 : -1;
}

void model_lora_init(Model *m, unsigned targets, int r, float alpha, int rslora, uint64_t seed) {
    m->lora_r = r;
    m->lora_alpha = alpha;
    m->lora_rslora = rslora;
    m->lora_scale = lora_scaling(alpha, r, rslora);
    uint64_t rng = seed;
    for (int i = 0; i < m->c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            if (!(targets & (1u << p))) continue;
            Linear *l = &m->layers[i].proj[p];
            l->A = xmalloc((size_t)r * l->in * sizeof(float));
            l->B = xmalloc((size_t)l->out * r * sizeof(float));
            l->dA = xcalloc((size_t)r * l->in, sizeof(float));
            l->dB = xcalloc((size_t)l->out * r, sizeof(float));
            lora_init(l->A, l->B, r, l->in, l->out, &rng);
        }
}

// What one layer's backward pass needs from its forward pass.
typedef struct {
    float *x_in, *h1, *rstd1, *q, *k, *v, *att, *lse, *x_mid, *h2, *rstd2, *g, *up, *act;
    float *u[N_PROJ];  // LoRA's x A^T per projection
    float *mask[N_PROJ], *xd[N_PROJ];  // LoRA dropout: the mask and the dropped input (or NULL)
} LayerActs;

// ---------------------------------------------------------------------------------------
// projections: y = x W^T (+ LoRA), and their backward

// A frozen weight stored in NF4 or bf16 as matmul_rows' source: its rows dequantized or
// widened a block at a time as the product packs them, so the float32 matrix is never
// written out whole (that pass, and reading it back, cost more than the dequantization
// itself).
typedef struct {
    const Linear *l;
    const float *absmax;  // NF4's per-block scales (nf4_weight_absmax)
} FrozenRows;

static void nf4_rows(const void *ctx, int r, int c0, int n, float *out) {
    const FrozenRows *s = ctx;
    nf4_weight_row(&s->l->q, s->absmax, r, c0, n, out);
}

static void bf16_rows(const void *ctx, int r, int c0, int n, float *out) {
    const FrozenRows *s = ctx;
    const uint16_t *row = s->l->w_bf16 + (size_t)r * s->l->in + c0;
    for (int i = 0; i < n; i++) out[i] = bf16_to_f32(row[i]);
}

// C = A op(W), W the frozen weight [out, in] (b_t: its transpose), float32, bf16 or NF4
// (absmax: room for NF4's per-block scales).
static void frozen_matmul(float *C, int ldc, const float *A, int lda, const Linear *l, int b_t, int M, int N, int K,
                          float *absmax) {
    if (l->w) {
        matmul(C, ldc, A, lda, 0, l->w, l->in, b_t, M, N, K, 1.0f, 0);
        return;
    }
    FrozenRows src = {l, absmax};
    MatmulRows rows = {bf16_rows, &src};
    if (!l->w_bf16) {
        nf4_weight_absmax(&l->q, absmax);
        rows.row = nf4_rows;
    }
    matmul_rows(C, ldc, A, lda, 0, &rows, b_t, M, N, K, 1.0f, 0);
}

// Projection p of a layer: y = x W^T (+ s (d(x) A^T) B^T), keeping in a what the
// backward pass needs (u = d(x) A^T, and with dropout d(x) itself).
static void linear_forward(const Model *m, const Layer *ly, const LayerActs *a, int p, const float *x, int T, float *y,
                           float *scratch) {
    const Linear *l = &ly->proj[p];
    frozen_matmul(y, l->out, x, l->in, l, 1, T, l->out, l->in, scratch);
    if (l->A) lora_forward(x, a->mask[p], l->A, l->B, y, a->u[p], a->xd[p], T, l->in, m->lora_r, l->out, m->lora_scale);
}

// dx = dy W (+ the LoRA branch's part), and dA, dB accumulated. dx NULL: dA and dB only.
static void linear_backward(const Model *m, Layer *ly, const LayerActs *a, int p, const float *x, const float *dy, int T,
                            float *dx, float *scratch) {
    Linear *l = &ly->proj[p];
    if (dx) frozen_matmul(dx, l->in, dy, l->out, l, 0, T, l->in, l->out, scratch);
    if (l->A)
        lora_backward(dy, a->mask[p] ? a->xd[p] : x, a->u[p], a->mask[p], l->A, l->B, l->dA, l->dB, dx, T, l->in,
                      m->lora_r, l->out, m->lora_scale);
}

// ---------------------------------------------------------------------------------------
// the step


// The buffers of a step are carved out of m->work: counted first (base NULL), then handed
// out. Every buffer is written before it is read, so none needs clearing. Each starts on a
// 64-byte line.
typedef struct {
    float *base;
    size_t used;
} Carve;

static float *carve(Carve *cv, size_t n) {
    float *p = cv->base ? cv->base + cv->used : NULL;
    cv->used += (n + 15) / 16 * 16;
    return p;
}

// The activations of one layer; with dropout, each adapted projection gets room for a mask
// and the dropped input.
static void acts_carve(Carve *cv, LayerActs *a, const Model *m, const Layer *ly, int T, int dropout) {
    const ModelConfig *c = &m->c;
    size_t H = (size_t)c->hidden_size, Q = (size_t)c->num_attention_heads * c->head_dim,
           KV = (size_t)c->num_key_value_heads * c->head_dim, I = (size_t)c->intermediate_size;
    a->x_in = carve(cv, T * H), a->h1 = carve(cv, T * H), a->rstd1 = carve(cv, T), a->q = carve(cv, T * Q);
    a->k = carve(cv, T * KV), a->v = carve(cv, T * KV), a->att = carve(cv, T * Q);
    a->lse = carve(cv, T * (size_t)c->num_attention_heads);
    a->x_mid = carve(cv, T * H), a->h2 = carve(cv, T * H), a->rstd2 = carve(cv, T), a->g = carve(cv, T * I);
    a->up = carve(cv, T * I), a->act = carve(cv, T * I);
    for (int p = 0; p < N_PROJ; p++) {
        a->u[p] = carve(cv, (size_t)T * (m->lora_r ? m->lora_r : 1));
        a->mask[p] = a->xd[p] = NULL;
        if (!dropout || !ly->proj[p].A) continue;
        size_t n = (size_t)T * ly->proj[p].in;
        a->mask[p] = carve(cv, n);
        a->xd[p] = carve(cv, n);
    }
}

// Everything else a step uses besides the layers' activations.
typedef struct {
    float *scratch, *x, *tmp, *hf, *rstdf, *dh;  // scratch: NF4 scales; dh and below: backward only
    float *dx, *d1, *d2, *dq, *dk, *dv;
} StepBuffers;

static void buffers_carve(Carve *cv, StepBuffers *s, LayerActs *acts, const Model *m, int T, int backward) {
    const ModelConfig *c = &m->c;
    size_t H = (size_t)c->hidden_size, I = (size_t)c->intermediate_size, Q = (size_t)c->num_attention_heads * c->head_dim,
           KV = (size_t)c->num_key_value_heads * c->head_dim, wide = I > H ? I : H;
    size_t scales = 1;  // the most per-block scales of a frozen NF4 weight
    for (int i = 0; i < c->num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            const Nf4Weight *q = &m->layers[i].proj[p].q;
            size_t nb = q->packed ? ((size_t)(q->rows * q->cols) + (size_t)q->blocksize - 1) / (size_t)q->blocksize : 0;
            scales = nb > scales ? nb : scales;
        }
    s->scratch = carve(cv, scales);
    s->x = carve(cv, T * H), s->tmp = carve(cv, T * wide), s->hf = carve(cv, T * H), s->rstdf = carve(cv, T);
    for (int i = 0; i < c->num_hidden_layers; i++)
        acts_carve(cv, &acts[i], m, &m->layers[i], T, backward && m->lora_dropout > 0.0f);
    s->dh = s->dx = s->d1 = s->d2 = s->dq = s->dk = s->dv = NULL;
    if (!backward) return;
    if (Q > wide) wide = Q;
    s->dh = carve(cv, T * H), s->dx = carve(cv, T * H), s->d1 = carve(cv, T * wide), s->d2 = carve(cv, T * wide);
    s->dq = carve(cv, T * Q), s->dk = carve(cv, T * KV), s->dv = carve(cv, T * KV);
}

// Carves a step's buffers out of m->work, growing it first when this step needs more.
static void step_buffers(Model *m, StepBuffers *s, LayerActs *acts, int T, int backward) {
    Carve count = {NULL, 0};
    buffers_carve(&count, s, acts, m, T, backward);
    if (count.used > m->work_floats) {
        free(m->work);
        m->work = xmalloc(count.used * sizeof(float));
        m->work_floats = count.used;
    }
    Carve cv = {m->work, 0};
    buffers_carve(&cv, s, acts, m, T, backward);
}

// out = a + b over n floats (out may be a): the residual stream's additions.
static void add(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t j = 0; j < n; j++) out[j] = a[j] + b[j];
}

double model_step(Model *m, const ModelInput *b, float grad_scale, int backward, float *logits) {
    const ModelConfig *c = &m->c;
    int T = b->T, H = c->hidden_size, L = c->num_hidden_layers, D = c->head_dim, Hq = c->num_attention_heads,
        Hkv = c->num_key_value_heads, I = c->intermediate_size, V = c->vocab_size;
    LayerActs *acts = xcalloc((size_t)L, sizeof(LayerActs));
    StepBuffers s;
    step_buffers(m, &s, acts, T, backward);
    // the residual stream: layer i reads acts[i].x_in, writes acts[i].x_mid and the next
    // layer's x_in (after the last layer, x)
    float *scratch = s.scratch, *x = s.x, *tmp = s.tmp, *x0 = L ? acts[0].x_in : x;
    size_t TH = (size_t)T * H;
    for (int t = 0; t < T; t++) memcpy(x0 + (size_t)t * H, m->embed + (size_t)b->tokens[t] * H, (size_t)H * sizeof(float));

    for (int i = 0; i < L; i++) {
        Layer *ly = &m->layers[i];
        LayerActs *a = &acts[i];
        for (int p = 0; p < N_PROJ; p++) {  // with dropout: each adapted projection draws a fresh mask
            if (!a->mask[p]) continue;
            if (m->dropout_masks) m->dropout_masks(m->dropout_masks_ctx, i, p, a->mask[p], T, ly->proj[p].in);
            else lora_dropout_mask(a->mask[p], (size_t)T * ly->proj[p].in, m->lora_dropout, &m->dropout_rng);
        }
        rmsnorm_forward(a->x_in, ly->ln1, a->h1, a->rstd1, T, H, c->rms_norm_eps);
        linear_forward(m, ly, a, PROJ_Q, a->h1, T, a->q, scratch);
        linear_forward(m, ly, a, PROJ_K, a->h1, T, a->k, scratch);
        linear_forward(m, ly, a, PROJ_V, a->h1, T, a->v, scratch);
        rope_apply(a->q, b->positions, T, Hq, D, c->rope_theta, 1);
        rope_apply(a->k, b->positions, T, Hkv, D, c->rope_theta, 1);
        attention_forward(a->q, a->k, a->v, b->seg, T, Hq, Hkv, D, c->sliding_window, a->att, a->lse);
        linear_forward(m, ly, a, PROJ_O, a->att, T, tmp, scratch);
        add(a->x_mid, a->x_in, tmp, TH);
        rmsnorm_forward(a->x_mid, ly->ln2, a->h2, a->rstd2, T, H, c->rms_norm_eps);
        linear_forward(m, ly, a, PROJ_GATE, a->h2, T, a->g, scratch);
        linear_forward(m, ly, a, PROJ_UP, a->h2, T, a->up, scratch);
        swiglu_forward(a->g, a->up, a->act, (size_t)T * I);
        linear_forward(m, ly, a, PROJ_DOWN, a->act, T, tmp, scratch);
        add(i + 1 < L ? acts[i + 1].x_in : x, a->x_mid, tmp, TH);
    }

    float *hf = s.hf, *rstdf = s.rstdf, *dh = s.dh;
    rmsnorm_forward(x, m->norm, hf, rstdf, T, H, c->rms_norm_eps);
    float *head = m->head, *widened = NULL;
    if (!head) {  // a bf16 head (model_head_to_bf16), widened for this step
        head = widened = xmalloc((size_t)V * H * sizeof(float));
        for (size_t j = 0; j < (size_t)V * H; j++) widened[j] = bf16_to_f32(m->head_bf16[j]);
    }
    double loss = cross_entropy(hf, head, b->targets, b->weights, T, H, V, grad_scale, dh);
    if (logits) matmul(logits, V, hf, H, 0, head, H, 1, T, V, H, 1.0f, 0);
    free(widened);

    if (backward) {
        // dx: the gradient flowing along the residual stream
        float *dx = s.dx, *d1 = s.d1, *d2 = s.d2, *dq = s.dq, *dk = s.dk, *dv = s.dv;
        rmsnorm_backward(x, m->norm, rstdf, dh, dx, T, H);
        for (int i = L - 1; i >= 0; i--) {
            Layer *ly = &m->layers[i];
            LayerActs *a = &acts[i];
            // MLP: x_out = x_mid + down(silu(gate(h2)) * up(h2))
            linear_backward(m, ly, a, PROJ_DOWN, a->act, dx, T, d1, scratch);
            swiglu_backward(a->g, a->up, d1, d2, d1, (size_t)T * I);  // d2 = d gate, d1 = d up
            float *dh2 = tmp;
            linear_backward(m, ly, a, PROJ_UP, a->h2, d1, T, dh2, scratch);
            linear_backward(m, ly, a, PROJ_GATE, a->h2, d2, T, d1, scratch);
            add(dh2, dh2, d1, TH);
            rmsnorm_backward(a->x_mid, ly->ln2, a->rstd2, dh2, d1, T, H);
            add(dx, dx, d1, TH);
            // attention: x_mid = x_in + o(attention(rope(q(h1)), rope(k(h1)), v(h1)))
            linear_backward(m, ly, a, PROJ_O, a->att, dx, T, d2, scratch);
            attention_backward(a->q, a->k, a->v, a->att, d2, a->lse, b->seg, T, Hq, Hkv, D, c->sliding_window, dq, dk, dv);
            rope_apply(dq, b->positions, T, Hq, D, c->rope_theta, -1);
            rope_apply(dk, b->positions, T, Hkv, D, c->rope_theta, -1);
            if (i == 0) {  // the embeddings are frozen: below here only LoRA's gradients are wanted
                linear_backward(m, ly, a, PROJ_Q, a->h1, dq, T, NULL, scratch);
                linear_backward(m, ly, a, PROJ_K, a->h1, dk, T, NULL, scratch);
                linear_backward(m, ly, a, PROJ_V, a->h1, dv, T, NULL, scratch);
                break;
            }
            float *dh1 = tmp;
            linear_backward(m, ly, a, PROJ_Q, a->h1, dq, T, dh1, scratch);
            linear_backward(m, ly, a, PROJ_K, a->h1, dk, T, d1, scratch);
            add(dh1, dh1, d1, TH);
            linear_backward(m, ly, a, PROJ_V, a->h1, dv, T, d1, scratch);
            add(dh1, dh1, d1, TH);
            rmsnorm_backward(a->x_in, ly->ln1, a->rstd1, dh1, d1, T, H);
            add(dx, dx, d1, TH);
        }
    }
    free(acts);
    return loss;
}
