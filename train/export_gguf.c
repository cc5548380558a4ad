// export_gguf.c: a model as a llama-architecture GGUF file (see export_gguf.h).
#include "export_gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tokenizer/chat_template.h"
#include "../tokenizer/gguf_vocab.h"

static const char *const gguf_proj[N_PROJ] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                              "ffn_gate", "ffn_up", "ffn_down"};

// One tensor to write: rows x cols float32 (rows 0: a vector of cols), its Q/K head count
// (0: no permutation) and the type it is written in.
typedef struct {
    char name[64];
    const float *x;
    int64_t rows, cols;
    int heads;
    GgmlType type;
} Entry;

static void entry(Entry *e, int *n, const char *name, const float *x, int64_t rows, int64_t cols, int heads,
                  GgmlType matrix_type, int *fallback) {
    Entry *t = &e[(*n)++];
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->x = x, t->rows = rows, t->cols = cols, t->heads = heads;
    t->type = rows == 0 ? GGML_F32 : matrix_type;
    if (t->type == GGML_Q8_0 && cols % 32) {
        t->type = GGML_F16;
        (*fallback)++;
    }
}

// The rows of one projection in llama.cpp's order: HF row h*D + i*D/2 + j goes to h*D + 2j + i.
static void permute_rows(const float *src, float *dst, int heads, int64_t rows, int64_t cols) {
    int64_t D = rows / heads;
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < 2; i++)
            for (int64_t j = 0; j < D / 2; j++)
                memcpy(dst + (h * D + 2 * j + i) * cols, src + (h * D + i * D / 2 + j) * cols, (size_t)cols * sizeof(float));
}

int export_gguf_check(const Model *m, const GgufExport *o, char *err) {
    const Tokenizer *t = o->tok;
    if (!t) return 0;
    if (gguf_vocab_check(t, o->tokenizer_path, m->c.vocab_size, err)) return -1;
    static const char *const needs[][2] = {[CHAT_V2] = {"[INST]", "[/INST]"}, [CHAT_V3] = {"[INST]", "[/INST]"},
                                           [CHAT_V7] = {"[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"}};
    ChatFormat f = o->chat_format;
    const char *need[4] = {0};
    if (f == CHAT_CHATML) need[0] = "<|im_start|>", need[1] = "<|im_end|>";
    else if (f != CHAT_V1) need[0] = needs[f][0], need[1] = needs[f][1];
    if (f == CHAT_V7) need[2] = "[INST]", need[3] = "[/INST]";
    for (int k = 0; k < 4; k++)
        if (need[k] && tokenizer_special_id(t, need[k]) < 0)
            return set_error(err, "%s: chat format %s needs the special token %s, which this tokenizer does not define",
                             o->tokenizer_path, chat_format_name(f), need[k]);
    if (f != CHAT_CHATML && (t->bos_id < 0 || t->eos_id < 0))
        return set_error(err, "%s: chat format %s needs BOS and EOS tokens, which this tokenizer does not define",
                         o->tokenizer_path, chat_format_name(f));
    if (f == CHAT_V1 && t->kind != TOKENIZER_SENTENCEPIECE)
        return set_error(err, "%s: chat format v1 is SentencePiece's (its template relies on the dummy prefix)",
                         o->tokenizer_path);
    return 0;
}

static void put_u32(GgufWriter *w, const char *key, int64_t v) { gguf_add_u32(w, key, (uint32_t)v); }

static int put_metadata(const Model *m, const GgufExport *o, GgufWriter *w, char *err) {
    const ModelConfig *c = &m->c;
    gguf_add_string(w, "general.architecture", "llama", 5);
    gguf_add_string(w, "general.name", o->name, strlen(o->name));
    put_u32(w, "general.file_type", o->type == GGML_Q8_0 ? 7 : o->type == GGML_BF16 ? 32 : 1);
    put_u32(w, "general.quantization_version", 2);
    put_u32(w, "llama.vocab_size", c->vocab_size);
    int context = c->max_position_embeddings;
    if (c->sliding_window && c->sliding_window < context) context = c->sliding_window;
    put_u32(w, "llama.context_length", context);
    put_u32(w, "llama.embedding_length", c->hidden_size);
    put_u32(w, "llama.block_count", c->num_hidden_layers);
    put_u32(w, "llama.feed_forward_length", c->intermediate_size);
    put_u32(w, "llama.attention.head_count", c->num_attention_heads);
    put_u32(w, "llama.attention.head_count_kv", c->num_key_value_heads);
    gguf_add_f32(w, "llama.attention.layer_norm_rms_epsilon", c->rms_norm_eps);
    gguf_add_f32(w, "llama.rope.freq_base", (float)c->rope_theta);
    put_u32(w, "llama.rope.dimension_count", c->head_dim);
    if (c->head_dim * c->num_attention_heads != c->hidden_size) {
        put_u32(w, "llama.attention.key_length", c->head_dim);
        put_u32(w, "llama.attention.value_length", c->head_dim);
    }
    if (c->sliding_window) put_u32(w, "llama.attention.sliding_window", c->sliding_window);
    if (!o->tok) {
        gguf_add_string(w, "tokenizer.ggml.model", "no_vocab", 8);
        return 0;
    }
    if (gguf_vocab_write(w, o->tok, o->tokenizer_path, c->vocab_size, o->chat_format != CHAT_CHATML, err)) return -1;
    char *tpl = chat_template_jinja(o->chat_format, o->system, o->system_len);
    gguf_add_string(w, "tokenizer.chat_template", tpl, strlen(tpl));
    free(tpl);
    return 0;
}

int export_gguf(const Model *m, GgufExport *o, GgufWriter *w, char *err) {
    for (int i = 0; i < m->c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            const Linear *l = &m->layers[i].proj[p];
            if (!l->w || l->A)
                return set_error(err, "export_gguf: layer %d %s is not a plain float32 weight", i, proj_short[p]);
        }
    if (export_gguf_check(m, o, err) || put_metadata(m, o, w, err)) return -1;
    const ModelConfig *c = &m->c;
    int64_t H = c->hidden_size, V = c->vocab_size, L = c->num_hidden_layers;
    Entry *e = xcalloc((size_t)(L * (N_PROJ + 2) + 4), sizeof(Entry));
    int n = 0;
    char name[64];
    o->n_fallback = 0;
    entry(e, &n, "token_embd.weight", m->embed, V, H, 0, o->type, &o->n_fallback);
    for (int i = 0; i < L; i++) {
        const Layer *layer = &m->layers[i];
        snprintf(name, sizeof(name), "blk.%d.attn_norm.weight", i);
        entry(e, &n, name, layer->ln1, 0, H, 0, o->type, &o->n_fallback);
        for (int p = 0; p < N_PROJ; p++) {
            if (p == PROJ_GATE) {
                snprintf(name, sizeof(name), "blk.%d.ffn_norm.weight", i);
                entry(e, &n, name, layer->ln2, 0, H, 0, o->type, &o->n_fallback);
            }
            const Linear *l = &layer->proj[p];
            int heads = p == PROJ_Q ? c->num_attention_heads : p == PROJ_K ? c->num_key_value_heads : 0;
            snprintf(name, sizeof(name), "blk.%d.%s.weight", i, gguf_proj[p]);
            entry(e, &n, name, l->w, l->out, l->in, heads, o->type, &o->n_fallback);
        }
    }
    entry(e, &n, "output_norm.weight", m->norm, 0, H, 0, o->type, &o->n_fallback);
    if (!c->tie_word_embeddings) entry(e, &n, "output.weight", m->head, V, H, 0, o->type, &o->n_fallback);
    for (int k = 0; k < n; k++) {
        int64_t ne[2] = {e[k].cols, e[k].rows};
        gguf_add_tensor_info(w, e[k].name, e[k].type, e[k].rows ? 2 : 1, ne);
    }
    int rc = gguf_write_header(w, err);
    float *permuted = NULL;
    void *bytes = NULL;
    for (int k = 0; k < n && rc == 0; k++) {
        int64_t numel = (e[k].rows ? e[k].rows : 1) * e[k].cols;
        const float *x = e[k].x;
        if (e[k].heads) {
            permuted = xrealloc(permuted, (size_t)numel * sizeof(float));
            permute_rows(x, permuted, e[k].heads, e[k].rows, e[k].cols);
            x = permuted;
        }
        size_t nbytes = (size_t)(numel / ggml_block_size(e[k].type)) * ggml_type_size(e[k].type);
        bytes = xrealloc(bytes, nbytes);
        ggml_quantize(e[k].type, x, bytes, numel);
        rc = gguf_write_tensor(w, bytes, nbytes, err);
    }
    free(permuted);
    free(bytes);
    free(e);
    return rc;
}
