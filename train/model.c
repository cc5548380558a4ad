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

void model_linear_set(Linear *l, float *w, int nf4) {
    if (!nf4) {
        l->w = w;
        return;
    }
    nf4_weight_quantize(&l->q, w, l->out, l->in, 64, 1);
    free(w);
}

void model_init_empty(Model *m, const ModelConfig *c) {
    memset(m, 0, sizeof(*m));
    m->c = *c;
    m->layers = xcalloc((size_t)c->num_hidden_layers, sizeof(Layer));
    for (int i = 0; i < c->num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) model_linear_shape(&m->layers[i].proj[p], c, p);
}

static int load_linear(Linear *l, const ModelFiles *f, const ModelConfig *c, int layer, int p, int nf4, char *err) {
    model_linear_shape(l, c, p);
    char prefix[128], name[160];
    snprintf(prefix, sizeof(prefix), "model.layers.%d.%s", layer, proj_names[p]);
    if (c->bnb_4bit) return bnb4bit_load_linear(&l->q, f, prefix, l->out, l->in, err);
    snprintf(name, sizeof(name), "%s.weight", prefix);
    float *w = load_float(f, name, l->out, l->in, err);
    if (!w) return -1;
    model_linear_set(l, w, nf4);
    return 0;
}

int model_config_load(ModelConfig *c, const char *dir, char *err) {
    if (gguf_is_gguf(dir)) return gguf_model_config(c, dir, err);
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    return config_load(c, path, err);
}

int model_load(Model *m, const char *dir, int nf4, char *err) {
    memset(m, 0, sizeof(*m));
    if (gguf_is_gguf(dir)) return gguf_model_load(m, dir, nf4, err);
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
        for (int p = 0; p < N_PROJ && rc == 0; p++) rc = load_linear(&L->proj[p], &f, c, i, p, nf4, err);
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
            nf4_weight_free(&l->q);
            free(l->A), free(l->B), free(l->dA), free(l->dB);
        }
    }
    free(m->layers);
    if (m->head != m->embed) free(m->head);  // tied embeddings: one array
    free(m->embed);
    free(m->norm);
    memset(m, 0, sizeof(*m));
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

// The frozen weight as float32: itself, or dequantized into scratch.
static const float *frozen_weight(const Linear *l, float *scratch) {
    if (l->w) return l->w;
    nf4_weight_dequantize(&l->q, scratch);
    return scratch;
}

// Projection p of a layer: y = x W^T (+ s (d(x) A^T) B^T), keeping in a what the
// backward pass needs (u = d(x) A^T, and with dropout d(x) itself).
static void linear_forward(const Model *m, const Layer *ly, const LayerActs *a, int p, const float *x, int T, float *y,
                           float *scratch) {
    const Linear *l = &ly->proj[p];
    matmul(y, l->out, x, l->in, 0, frozen_weight(l, scratch), l->in, 1, T, l->out, l->in, 1.0f, 0);
    if (l->A) lora_forward(x, a->mask[p], l->A, l->B, y, a->u[p], a->xd[p], T, l->in, m->lora_r, l->out, m->lora_scale);
}

// dx = dy W (+ the LoRA branch's part), and dA, dB accumulated.
static void linear_backward(const Model *m, Layer *ly, const LayerActs *a, int p, const float *x, const float *dy, int T,
                            float *dx, float *scratch) {
    Linear *l = &ly->proj[p];
    matmul(dx, l->in, dy, l->out, 0, frozen_weight(l, scratch), l->in, 0, T, l->in, l->out, 1.0f, 0);
    if (l->A)
        lora_backward(dy, a->mask[p] ? a->xd[p] : x, a->u[p], a->mask[p], l->A, l->B, l->dA, l->dB, dx, T, l->in,
                      m->lora_r, l->out, m->lora_scale);
}

// ---------------------------------------------------------------------------------------
// the step


static float *zalloc(size_t n) { return xcalloc(n ? n : 1, sizeof(float)); }

// The activations of layer i; with dropout, each adapted projection gets a fresh mask.
static void acts_alloc(LayerActs *a, Model *m, int i, int T, int dropout) {
    const Layer *ly = &m->layers[i];
    const ModelConfig *c = &m->c;
    size_t H = (size_t)c->hidden_size, Q = (size_t)c->num_attention_heads * c->head_dim,
           KV = (size_t)c->num_key_value_heads * c->head_dim, I = (size_t)c->intermediate_size;
    a->x_in = zalloc(T * H), a->h1 = zalloc(T * H), a->rstd1 = zalloc(T), a->q = zalloc(T * Q);
    a->k = zalloc(T * KV), a->v = zalloc(T * KV), a->att = zalloc(T * Q), a->lse = zalloc(T * (size_t)c->num_attention_heads);
    a->x_mid = zalloc(T * H), a->h2 = zalloc(T * H), a->rstd2 = zalloc(T), a->g = zalloc(T * I), a->up = zalloc(T * I);
    a->act = zalloc(T * I);
    for (int p = 0; p < N_PROJ; p++) {
        a->u[p] = zalloc((size_t)T * (m->lora_r ? m->lora_r : 1));
        a->mask[p] = a->xd[p] = NULL;
        if (!dropout || !ly->proj[p].A) continue;
        size_t n = (size_t)T * ly->proj[p].in;
        a->mask[p] = zalloc(n);
        a->xd[p] = zalloc(n);
        if (m->dropout_masks) m->dropout_masks(m->dropout_masks_ctx, i, p, a->mask[p], T, ly->proj[p].in);
        else lora_dropout_mask(a->mask[p], n, m->lora_dropout, &m->dropout_rng);
    }
}

static void acts_free(LayerActs *a) {
    float **all[] = {&a->x_in, &a->h1, &a->rstd1, &a->q, &a->k, &a->v, &a->att, &a->lse, &a->x_mid,
                     &a->h2, &a->rstd2, &a->g, &a->up, &a->act};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) free(*all[i]);
    for (int p = 0; p < N_PROJ; p++) free(a->u[p]), free(a->mask[p]), free(a->xd[p]);
}

double model_step(Model *m, const ModelInput *b, float grad_scale, int backward, float *logits) {
    const ModelConfig *c = &m->c;
    int T = b->T, H = c->hidden_size, L = c->num_hidden_layers, D = c->head_dim, Hq = c->num_attention_heads,
        Hkv = c->num_key_value_heads, I = c->intermediate_size, V = c->vocab_size;
    size_t biggest = (size_t)(I > H ? I : H) * (size_t)(I > Hq * D ? I : Hq * D);
    float *scratch = zalloc(biggest), *x = zalloc((size_t)T * H), *tmp = zalloc((size_t)T * (I > H ? I : H));
    LayerActs *acts = xcalloc((size_t)L, sizeof(LayerActs));
    for (int t = 0; t < T; t++) memcpy(x + (size_t)t * H, m->embed + (size_t)b->tokens[t] * H, (size_t)H * sizeof(float));

    for (int i = 0; i < L; i++) {
        Layer *ly = &m->layers[i];
        LayerActs *a = &acts[i];
        acts_alloc(a, m, i, T, backward && m->lora_dropout > 0.0f);
        memcpy(a->x_in, x, (size_t)T * H * sizeof(float));
        rmsnorm_forward(x, ly->ln1, a->h1, a->rstd1, T, H, c->rms_norm_eps);
        linear_forward(m, ly, a, PROJ_Q, a->h1, T, a->q, scratch);
        linear_forward(m, ly, a, PROJ_K, a->h1, T, a->k, scratch);
        linear_forward(m, ly, a, PROJ_V, a->h1, T, a->v, scratch);
        rope_apply(a->q, b->positions, T, Hq, D, c->rope_theta, 1);
        rope_apply(a->k, b->positions, T, Hkv, D, c->rope_theta, 1);
        attention_forward(a->q, a->k, a->v, b->seg, T, Hq, Hkv, D, c->sliding_window, a->att, a->lse);
        linear_forward(m, ly, a, PROJ_O, a->att, T, tmp, scratch);
        for (size_t j = 0; j < (size_t)T * H; j++) x[j] += tmp[j];
        memcpy(a->x_mid, x, (size_t)T * H * sizeof(float));
        rmsnorm_forward(x, ly->ln2, a->h2, a->rstd2, T, H, c->rms_norm_eps);
        linear_forward(m, ly, a, PROJ_GATE, a->h2, T, a->g, scratch);
        linear_forward(m, ly, a, PROJ_UP, a->h2, T, a->up, scratch);
        swiglu_forward(a->g, a->up, a->act, (size_t)T * I);
        linear_forward(m, ly, a, PROJ_DOWN, a->act, T, tmp, scratch);
        for (size_t j = 0; j < (size_t)T * H; j++) x[j] += tmp[j];
    }

    float *hf = zalloc((size_t)T * H), *rstdf = zalloc(T), *dh = backward ? zalloc((size_t)T * H) : NULL;
    rmsnorm_forward(x, m->norm, hf, rstdf, T, H, c->rms_norm_eps);
    double loss = cross_entropy(hf, m->head, b->targets, b->weights, T, H, V, grad_scale, dh);
    if (logits) matmul(logits, V, hf, H, 0, m->head, H, 1, T, V, H, 1.0f, 0);

    if (backward) {
        // dx: the gradient flowing along the residual stream
        int wide = I > H ? I : H;
        if (Hq * D > wide) wide = Hq * D;
        float *dx = zalloc((size_t)T * H), *d1 = zalloc((size_t)T * wide), *d2 = zalloc((size_t)T * wide);
        float *dq = zalloc((size_t)T * Hq * D), *dk = zalloc((size_t)T * Hkv * D), *dv = zalloc((size_t)T * Hkv * D);
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
            for (size_t j = 0; j < (size_t)T * H; j++) dh2[j] += d1[j];
            rmsnorm_backward(a->x_mid, ly->ln2, a->rstd2, dh2, d1, T, H);
            for (size_t j = 0; j < (size_t)T * H; j++) dx[j] += d1[j];
            // attention: x_mid = x_in + o(attention(rope(q(h1)), rope(k(h1)), v(h1)))
            linear_backward(m, ly, a, PROJ_O, a->att, dx, T, d2, scratch);
            attention_backward(a->q, a->k, a->v, a->att, d2, a->lse, b->seg, T, Hq, Hkv, D, c->sliding_window, dq, dk, dv);
            rope_apply(dq, b->positions, T, Hq, D, c->rope_theta, -1);
            rope_apply(dk, b->positions, T, Hkv, D, c->rope_theta, -1);
            float *dh1 = tmp;
            linear_backward(m, ly, a, PROJ_Q, a->h1, dq, T, dh1, scratch);
            linear_backward(m, ly, a, PROJ_K, a->h1, dk, T, d1, scratch);
            for (size_t j = 0; j < (size_t)T * H; j++) dh1[j] += d1[j];
            linear_backward(m, ly, a, PROJ_V, a->h1, dv, T, d1, scratch);
            for (size_t j = 0; j < (size_t)T * H; j++) dh1[j] += d1[j];
            rmsnorm_backward(a->x_in, ly->ln1, a->rstd1, dh1, d1, T, H);
            for (size_t j = 0; j < (size_t)T * H; j++) dx[j] += d1[j];
        }
        free(dx), free(d1), free(d2), free(dq), free(dk), free(dv);
    }
    for (int i = 0; i < L; i++) acts_free(&acts[i]);
    free(acts), free(scratch), free(x), free(tmp), free(hf), free(rstdf), free(dh);
    return loss;
}
