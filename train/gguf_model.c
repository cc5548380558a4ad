/*
 * gguf_model.c: a Llama-architecture model from a GGUF file (llama.cpp's format), into the
 * same Model a Hugging Face directory gives (model.h).
 *
 * The config comes from the metadata, under the architecture's prefix (general.architecture
 * must be "llama", which is also how llama.cpp's converter stores Mistral models):
 *   {arch}.block_count -> num_hidden_layers      {arch}.embedding_length -> hidden_size
 *   {arch}.feed_forward_length -> intermediate    {arch}.attention.head_count -> heads
 *   {arch}.attention.head_count_kv -> KV heads (absent: = heads)
 *   {arch}.attention.key_length -> head_dim (absent: hidden / heads); value_length and
 *     rope.dimension_count, when present, must equal it (no partial rotary)
 *   {arch}.rope.freq_base -> rope_theta (absent: 10000)
 *   {arch}.attention.layer_norm_rms_epsilon -> rms_norm_eps (absent: 1e-6, Llama's default)
 *   {arch}.context_length -> max_position_embeddings (absent: 2048)
 *   {arch}.attention.sliding_window -> sliding_window (absent or 0: none). llama.cpp reads it
 *     only for architectures with windowed layers, not for llama; our exporter writes it for a
 *     Mistral model with a window (export_gguf.h), and the model it describes has the window.
 *   tokenizer.ggml.bos_token_id / eos_token_id (absent: 1 / 2)
 * vocab_size is token_embd's row count ({arch}.vocab_size must agree when present). RoPE
 * scaling ({arch}.rope.scaling.type other than none, a rope_freqs tensor) and experts are
 * refused, and so is any tensor that is not one of the names below (biases, say), rather
 * than ignored.
 *
 * Tensor names (llama.cpp's, gguf-py's tensor_mapping.py) and shapes, ne = {in, out}:
 *   token_embd -> model.embed_tokens     output_norm -> model.norm
 *   output -> lm_head (absent: tied to token_embd, tie_word_embeddings)
 *   blk.N.attn_norm / ffn_norm -> input_layernorm / post_attention_layernorm
 *   blk.N.attn_q, attn_k, attn_v, attn_output -> self_attn.{q,k,v,o}_proj
 *   blk.N.ffn_gate, ffn_up, ffn_down -> mlp.{gate,up,down}_proj
 *
 * The Q/K permutation. llama.cpp computes RoPE on adjacent pairs (x[2j], x[2j+1]) of each
 * head, Hugging Face on halves (x[j], x[j + D/2]) (rotate_half). Its converter therefore
 * reorders the rows of q_proj (per query head) and k_proj (per KV head) so that HF row
 * h*D + i*D/2 + j lands at GGUF row h*D + 2j + i (convert_hf_to_gguf.py, LlamaModel.permute;
 * i in {0, 1}, j < D/2). We undo it, so our RoPE (HF layout) sees the original rows; the
 * logits then match transformers' own GGUF loader (test_gguf_model.sh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "model.h"

// An integer field {arch}.key in [1, 1e9]: 0 when read, 1 when absent and absent_ok, -1 on error.
static int int_key(const Gguf *g, const char *arch, const char *key, int *v, int absent_ok, char *err) {
    char name[128];
    snprintf(name, sizeof(name), "%s.%s", arch, key);
    if (!gguf_find(g, name) && absent_ok) return 1;
    int64_t x;
    if (gguf_get_int(g, name, &x, err)) return -1;
    if (x < 1 || x > 1000000000) return set_error(err, "%s: metadata '%s': %lld is not a size", g->path, name, (long long)x);
    *v = (int)x;
    return 0;
}

static int float_key(const Gguf *g, const char *arch, const char *key, double *v, char *err) {
    char name[128];
    snprintf(name, sizeof(name), "%s.%s", arch, key);
    if (!gguf_find(g, name)) return 1;
    if (gguf_get_float(g, name, v, err)) return -1;
    if (!(*v > 0)) return set_error(err, "%s: metadata '%s': not a positive number", g->path, name);
    return 0;
}

static int read_config(const Gguf *g, ModelConfig *c, char *err) {
    memset(c, 0, sizeof(*c));
    const char *arch;
    size_t n;
    if (gguf_get_string(g, "general.architecture", &arch, &n, err)) return -1;
    if (n != 5 || memcmp(arch, "llama", 5) != 0)
        return set_error(err, "%s: metadata 'general.architecture': \"%.*s\" is not llama (the one GGUF "
                         "architecture we read)", g->path, (int)(n < 40 ? n : 40), arch);
    arch = "llama";  // the keys' prefix (the metadata's string is not NUL-terminated)
    snprintf(c->model_type, sizeof(c->model_type), "llama");
    if (int_key(g, arch, "block_count", &c->num_hidden_layers, 0, err) ||
        int_key(g, arch, "embedding_length", &c->hidden_size, 0, err) ||
        int_key(g, arch, "feed_forward_length", &c->intermediate_size, 0, err) ||
        int_key(g, arch, "attention.head_count", &c->num_attention_heads, 0, err))
        return -1;
    c->num_key_value_heads = c->num_attention_heads;
    c->max_position_embeddings = 2048;
    int value_length = 0, rope_dims = 0, vocab = 0;
    if (int_key(g, arch, "attention.head_count_kv", &c->num_key_value_heads, 1, err) < 0 ||
        int_key(g, arch, "context_length", &c->max_position_embeddings, 1, err) < 0 ||
        int_key(g, arch, "attention.value_length", &value_length, 1, err) < 0 ||
        int_key(g, arch, "rope.dimension_count", &rope_dims, 1, err) < 0 ||
        int_key(g, arch, "vocab_size", &vocab, 1, err) < 0)
        return -1;
    if (gguf_find(g, "llama.attention.sliding_window")) {
        int64_t w;
        if (gguf_get_int(g, "llama.attention.sliding_window", &w, err)) return -1;
        if (w < 0 || w > 1000000000)
            return set_error(err, "%s: metadata 'llama.attention.sliding_window': %lld is not a window", g->path, (long long)w);
        c->sliding_window = (int)w;
    }
    int rc = int_key(g, arch, "attention.key_length", &c->head_dim, 1, err);
    if (rc < 0) return -1;
    if (rc == 1) {
        if (c->hidden_size % c->num_attention_heads)
            return set_error(err, "%s: metadata 'llama.embedding_length' %d is not a multiple of "
                             "'llama.attention.head_count' %d and no key_length is given", g->path, c->hidden_size,
                             c->num_attention_heads);
        c->head_dim = c->hidden_size / c->num_attention_heads;
    }
    if (value_length && value_length != c->head_dim)
        return set_error(err, "%s: metadata 'llama.attention.value_length' %d differs from the key length %d", g->path,
                         value_length, c->head_dim);
    if (rope_dims && rope_dims != c->head_dim)
        return set_error(err, "%s: metadata 'llama.rope.dimension_count' %d: partial rotary embeddings (head_dim %d) "
                         "are not supported", g->path, rope_dims, c->head_dim);
    if (config_check_heads(c, g->path, "metadata 'llama.attention.head_count_kv'", "'llama.attention.head_count'",
                           "head_dim", err))
        return -1;
    double eps = 1e-6, theta = 10000.0;
    if (float_key(g, arch, "attention.layer_norm_rms_epsilon", &eps, err) < 0 ||
        float_key(g, arch, "rope.freq_base", &theta, err) < 0)
        return -1;
    c->rms_norm_eps = (float)eps;
    c->rope_theta = theta;
    const GgufKV *scaling = gguf_find(g, "llama.rope.scaling.type");
    if (scaling && !(scaling->type == GGUF_STRING && scaling->count == 4 && memcmp(scaling->data, "none", 4) == 0))
        return set_error(err, "%s: metadata 'llama.rope.scaling.type': RoPE scaling is not supported", g->path);
    int64_t experts = 0;
    if (gguf_find(g, "llama.expert_count") && gguf_get_int(g, "llama.expert_count", &experts, err)) return -1;
    if (experts > 0)
        return set_error(err, "%s: metadata 'llama.expert_count': mixture-of-experts models are not supported", g->path);
    int64_t id;
    c->bos_token_id = 1;
    c->eos_token_id = 2;
    if (gguf_find(g, "tokenizer.ggml.bos_token_id")) {
        if (gguf_get_int(g, "tokenizer.ggml.bos_token_id", &id, err)) return -1;
        c->bos_token_id = (int)id;
    }
    if (gguf_find(g, "tokenizer.ggml.eos_token_id")) {
        if (gguf_get_int(g, "tokenizer.ggml.eos_token_id", &id, err)) return -1;
        c->eos_token_id = (int)id;
    }
    const GgufTensor *embd = gguf_tensor(g, "token_embd.weight");
    if (!embd) return set_error(err, "%s: tensor 'token_embd.weight' is missing", g->path);
    if (embd->ndim != 2 || embd->ne[0] != c->hidden_size || embd->ne[1] < 1 || embd->ne[1] > 1000000000)
        return set_error(err, "%s: tensor 'token_embd.weight' has ne [%lld, %lld], expected [%d, vocabulary]", g->path,
                         (long long)embd->ne[0], (long long)embd->ne[1], c->hidden_size);
    c->vocab_size = (int)embd->ne[1];
    if (vocab && vocab != c->vocab_size)
        return set_error(err, "%s: metadata 'llama.vocab_size' %d differs from token_embd's %d rows", g->path, vocab,
                         c->vocab_size);
    c->tie_word_embeddings = gguf_tensor(g, "output.weight") == NULL;
    snprintf(c->torch_dtype, sizeof(c->torch_dtype), "float32");
    return 0;
}

static const char *const gguf_proj[N_PROJ] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

// Every tensor must be one we load: anything else would change the model if ignored.
static int check_names(const Gguf *g, const ModelConfig *c, char *err) {
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const char *name = g->tensors[i].name;
        int layer = -1, end = 0;
        char part[32] = "";
        int known = !strcmp(name, "token_embd.weight") || !strcmp(name, "output_norm.weight") ||
                    !strcmp(name, "output.weight");
        if (!known && sscanf(name, "blk.%d.%31[a-z_].weight%n", &layer, part, &end) == 2 && name[end] == '\0' &&
            layer >= 0 && layer < c->num_hidden_layers) {
            known = !strcmp(part, "attn_norm") || !strcmp(part, "ffn_norm");
            for (int p = 0; p < N_PROJ; p++) known |= !strcmp(part, gguf_proj[p]);
        }
        if (!known)
            return set_error(err, "%s: tensor '%s' is not part of a %d-layer llama model as we read it (biases, RoPE "
                             "scaling factors and other extras are not supported)", g->path, name, c->num_hidden_layers);
    }
    return 0;
}

// A tensor as float32 [rows, cols] (ne = {cols, rows}; rows 0 for a vector of cols).
static float *load(const Gguf *g, const char *name, int64_t rows, int64_t cols, char *err) {
    const GgufTensor *t = gguf_tensor(g, name);
    if (!t) {
        set_error(err, "%s: tensor '%s' is missing", g->path, name);
        return NULL;
    }
    int ndim = rows ? 2 : 1;
    if (t->ndim != ndim || t->ne[0] != cols || (rows && t->ne[1] != rows)) {
        set_error(err, "%s: tensor '%s' has ne [%lld, %lld] (%d dims), the metadata implies [%lld, %lld]", g->path, name,
                  (long long)t->ne[0], (long long)t->ne[1], t->ndim, (long long)cols, (long long)(rows ? rows : 1));
        return NULL;
    }
    return model_weight_finite(gguf_tensor_f32(t), t->numel, g->path, name, err);
}

// Undoes llama.cpp's Q/K row permutation in place (see the top of this file).
static void unpermute_rows(float *w, int heads, int D, int cols) {
    float *tmp = xmalloc((size_t)D * cols * sizeof(float));
    for (int h = 0; h < heads; h++) {
        float *head = w + (size_t)h * D * cols;
        memcpy(tmp, head, (size_t)D * cols * sizeof(float));
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < D / 2; j++)
                memcpy(head + (size_t)(i * D / 2 + j) * cols, tmp + (size_t)(2 * j + i) * cols, (size_t)cols * sizeof(float));
    }
    free(tmp);
}

int gguf_model_config(ModelConfig *c, const char *path, char *err) {
    Gguf g;
    if (gguf_open(&g, path, err)) return -1;
    int rc = read_config(&g, c, err);
    gguf_close(&g);
    return rc;
}

int gguf_model_load(Model *m, const char *path, int nf4, char *err) {
    memset(m, 0, sizeof(*m));
    Gguf g;
    if (gguf_open(&g, path, err)) return -1;
    ModelConfig *c = &m->c;
    int rc = read_config(&g, c, err) || check_names(&g, c, err) ? -1 : 0;
    int H = c->hidden_size, V = c->vocab_size;
    char name[128];
    for (int i = 0; i < c->num_hidden_layers && rc == 0; i++) {  // every layer, before allocating
        snprintf(name, sizeof(name), "blk.%d.attn_norm.weight", i);
        if (!gguf_tensor(&g, name)) rc = set_error(err, "%s: tensor '%s' is missing", path, name);
    }
    if (rc == 0) {
        m->layers = xcalloc((size_t)c->num_hidden_layers, sizeof(Layer));
        m->embed = load(&g, "token_embd.weight", V, H, err);
        m->norm = m->embed ? load(&g, "output_norm.weight", 0, H, err) : NULL;
        m->head = !m->norm ? NULL : c->tie_word_embeddings ? m->embed : load(&g, "output.weight", V, H, err);
        if (!m->head) rc = -1;
    }
    for (int i = 0; i < c->num_hidden_layers && rc == 0; i++) {
        Layer *L = &m->layers[i];
        snprintf(name, sizeof(name), "blk.%d.attn_norm.weight", i);
        L->ln1 = load(&g, name, 0, H, err);
        snprintf(name, sizeof(name), "blk.%d.ffn_norm.weight", i);
        L->ln2 = L->ln1 ? load(&g, name, 0, H, err) : NULL;
        if (!L->ln2) rc = -1;
        for (int p = 0; p < N_PROJ && rc == 0; p++) {
            Linear *l = &L->proj[p];
            model_linear_shape(l, c, p);
            snprintf(name, sizeof(name), "blk.%d.%s.weight", i, gguf_proj[p]);
            float *w = load(&g, name, l->out, l->in, err);
            if (!w) {
                rc = -1;
                break;
            }
            if (p == PROJ_Q || p == PROJ_K)
                unpermute_rows(w, p == PROJ_Q ? c->num_attention_heads : c->num_key_value_heads, c->head_dim, l->in);
            model_linear_set(l, w, nf4);
        }
    }
    gguf_close(&g);
    if (rc) model_free(m);
    return rc;
}
