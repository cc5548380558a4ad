/*
 * merge.c: the `merge` program: a base model plus a LoRA adapter, written out as one
 * ordinary Hugging Face model directory, or as a GGUF file for llama.cpp and Ollama, or both.
 *
 *   ./merge --model BASE --adapter ADAPTER_DIR --out OUT_DIR [--dtype bf16|f32] [--force]
 *   ./merge --model BASE --adapter ADAPTER_DIR --gguf OUT.gguf [--type f16|bf16|q8_0]
 *           [--tokenizer FILE] [--chat-format V] [--system TEXT | --system-file FILE] [--force]
 *
 * For every adapted projection W' = W + s * B A (PEFT's merge, reference/qlora.md §B.4),
 * computed in float32, then rounded to the output's type (round to nearest even). A
 * bitsandbytes-4bit base is dequantized first, so the result is a plain model, not a
 * re-quantized one (PEFT re-quantizes and warns about rounding; a plain model is what other
 * tools load). BASE is a Hugging Face directory or a GGUF file.
 *
 * --out: every tensor in the output dtype (bf16 by default); config.json is copied with its
 * dtype set and any quantization_config removed; the tokenizer and generation files beside the
 * base model are copied too. The output is assembled in a temporary directory beside OUT_DIR
 * and renamed into place, so OUT_DIR either appears complete or not at all.
 * --gguf: export_gguf.h's file (architecture llama, llama.cpp's tensor names and Q/K
 * permutation, matrices in --type, f16 by default), with the tokenizer the adapter was trained
 * with (--tokenizer, by default the one beside the base model or in the base GGUF) and a chat
 * template reproducing the chat format it was trained in (--chat-format, by default the
 * tokenizer's own, as prep chooses), with the persona system prompt as its default when
 * --system gives one. Written to a temporary file beside OUT.gguf (created first, so an output
 * that cannot be written is reported before any work) and renamed into place.
 * Without --adapter the base model alone is written. An existing output is refused without
 * --force, and refused always when it is, or holds, the base model or the adapter (replacing
 * it would delete the inputs).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../tokenizer/bytelevel.h"
#include "../tokenizer/chat.h"
#include "../tokenizer/utf8.h"
#include "export_gguf.h"
#include "model.h"
#include "peft_adapter.h"
#include "safetensors.h"

typedef struct {
    const char *model, *adapter, *out, *dtype;
    const char *gguf, *type, *tokenizer, *chat_format, *system, *system_file;
    int force, no_vocab;
} Options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: merge --model BASE [--adapter ADAPTER_DIR] --out OUT_DIR [options]\n"
            "       merge --model BASE [--adapter ADAPTER_DIR] --gguf OUT.gguf [options]\n"
            "\n"
            "Writes base + LoRA (W' = W + scale * B A) as a Hugging Face model directory (--out) and/or\n"
            "as a GGUF file that llama.cpp, Ollama and transformers load (--gguf).\n"
            "\n"
            "  --model BASE        the base model: a directory (config.json + safetensors; bf16, f16, f32 or\n"
            "                      bitsandbytes 4-bit) or a GGUF file (Llama architecture)\n"
            "  --adapter DIR       a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors);\n"
            "                      without it the base model alone is written\n"
            "  --out DIR           the merged Hugging Face model directory to create\n"
            "  --dtype T           its tensors: bf16 (default) or f32\n"
            "  --gguf FILE         the merged model as a GGUF file (architecture llama)\n"
            "  --type T            its matrices: f16 (default), bf16 or q8_0 (norms stay f32)\n"
            "  --tokenizer FILE    the tokenizer the adapter was trained with: tokenizer.model[.vN],\n"
            "                      tekken.json, tokenizer.json or a GGUF file (default: beside BASE:\n"
            "                      tekken.json, tokenizer.model.v7/v3/v2/v1, tokenizer.model,\n"
            "                      tokenizer.json; or BASE itself when it is a GGUF file)\n"
            "  --chat-format V     the chat template's format: v1, v2, v3, v7 or chatml (default: the\n"
            "                      tokenizer's own, as prep chooses; give what prep was given)\n"
            "  --system TEXT       the persona system prompt the character was trained with: the chat\n"
            "                      template uses it when a conversation has none\n"
            "  --system-file FILE  the same, read from FILE (its final newline dropped, as prep does)\n"
            "  --no-vocab          write the GGUF without a tokenizer (weights only)\n"
            "  --force             replace an output that exists\n"
            "\n"
            "Exit status: 0 success, 1 bad input or usage, 2 a failure while writing.\n");
}

// Adds a [rows, cols] matrix (cols 0: a vector of rows) in the output dtype.
static void add(StList *t, const char *name, const float *x, int64_t rows, int64_t cols, StDtype dtype) {
    int64_t shape[2] = {rows, cols};
    st_list_add(t, name, x, cols ? 2 : 1, shape, dtype);
}

// W + s B A for one projection, as float32.
static float *merged_weight(const Model *m, const Linear *l) {
    size_t n = (size_t)l->out * l->in;
    float *w = xmalloc(n * sizeof(float));
    linear_frozen_f32(l, w);
    if (!l->A) return w;
    for (int o = 0; o < l->out; o++)
        for (int k = 0; k < m->lora_r; k++) {
            float b = m->lora_scale * l->B[(size_t)o * m->lora_r + k];
            const float *a = l->A + (size_t)k * l->in;
            float *row = w + (size_t)o * l->in;
            for (int i = 0; i < l->in; i++) row[i] += b * a[i];
        }
    return w;
}

// Folds every adapter into its frozen weight, which becomes plain float32 (no NF4, no LoRA).
static void merge_adapters(Model *m) {
    for (int i = 0; i < m->c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            Linear *l = &m->layers[i].proj[p];
            float *w = merged_weight(m, l);
            free(l->w), free(l->A), free(l->B), free(l->dA), free(l->dB);
            nf4_weight_free(&l->q);
            l->A = l->B = l->dA = l->dB = NULL;
            l->w = w;
        }
}

static void collect(const Model *m, StList *t, StDtype dt) {
    const ModelConfig *c = &m->c;
    char name[128];
    add(t, "model.embed_tokens.weight", m->embed, c->vocab_size, c->hidden_size, dt);
    add(t, "model.norm.weight", m->norm, c->hidden_size, 0, dt);
    if (!c->tie_word_embeddings) add(t, "lm_head.weight", m->head, c->vocab_size, c->hidden_size, dt);
    for (int i = 0; i < c->num_hidden_layers; i++) {
        const Layer *L = &m->layers[i];
        snprintf(name, sizeof(name), "model.layers.%d.input_layernorm.weight", i);
        add(t, name, L->ln1, c->hidden_size, 0, dt);
        snprintf(name, sizeof(name), "model.layers.%d.post_attention_layernorm.weight", i);
        add(t, name, L->ln2, c->hidden_size, 0, dt);
        for (int p = 0; p < N_PROJ; p++) {
            snprintf(name, sizeof(name), "model.layers.%d.%s.weight", i, proj_names[p]);
            add(t, name, L->proj[p].w, L->proj[p].out, L->proj[p].in, dt);
        }
    }
}

// config.json with the output dtype and without quantization_config.
static int write_config(const char *src_dir, const char *dst_dir, const char *dtype, char *err) {
    char src[4096], dst[4096];
    snprintf(src, sizeof(src), "%s/config.json", src_dir);
    snprintf(dst, sizeof(dst), "%s/config.json", dst_dir);
    size_t len;
    char *text = read_file(src, &len, err);
    if (!text) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return set_error(err, "%s: not valid JSON", src);
    cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization_config");
    cJSON_DeleteItemFromObjectCaseSensitive(root, "torch_dtype");
    cJSON_DeleteItemFromObjectCaseSensitive(root, "dtype");
    cJSON_AddStringToObject(root, "torch_dtype", strcmp(dtype, "bf16") == 0 ? "bfloat16" : "float32");
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    FILE *f = fopen(dst, "w");
    int rc = !f || fputs(out, f) < 0 || fputc('\n', f) < 0;
    if (f && fclose(f)) rc = 1;
    free(out);
    return rc ? set_error(err, "%s: cannot write: %s", dst, strerror(errno)) : 0;
}

// Copies the tokenizer and generation files that sit beside the base model, if any.
static int copy_side_files(const char *src_dir, const char *dst_dir, char *err) {
    static const char *files[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                  "tekken.json", "generation_config.json", "params.json"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char src[4096], dst[4096];
        snprintf(src, sizeof(src), "%s/%s", src_dir, files[i]);
        if (access(src, F_OK) != 0) continue;
        snprintf(dst, sizeof(dst), "%s/%s", dst_dir, files[i]);
        size_t len;
        char *data = read_file(src, &len, err);
        if (!data) return -1;
        FILE *f = fopen(dst, "wb");
        int bad = !f || fwrite(data, 1, len, f) != len;
        if (f && fclose(f)) bad = 1;
        free(data);
        if (bad) return set_error(err, "%s: cannot write: %s", dst, strerror(errno));
    }
    return 0;
}

static int parse_args(int argc, char **argv, Options *o) {
    struct {
        const char *name, **value;
    } flags[] = {{"--model", &o->model},         {"--adapter", &o->adapter},         {"--out", &o->out},
                 {"--dtype", &o->dtype},         {"--gguf", &o->gguf},               {"--type", &o->type},
                 {"--tokenizer", &o->tokenizer}, {"--chat-format", &o->chat_format}, {"--system", &o->system},
                 {"--system-file", &o->system_file}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int known = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--force")) o->force = known = 1;
        if (!strcmp(a, "--no-vocab")) o->no_vocab = known = 1;
        for (size_t k = 0; k < sizeof(flags) / sizeof(flags[0]) && !known; k++)
            if (!strcmp(a, flags[k].name) && i + 1 < argc) *flags[k].value = argv[++i], known = 1;
        if (!known) {
            fprintf(stderr, "error: unknown option or missing value: %s (see --help)\n", a);
            return -1;
        }
    }
    if (strcmp(o->dtype, "bf16") && strcmp(o->dtype, "f32")) {
        fprintf(stderr, "error: --dtype '%s': expected bf16 or f32\n", o->dtype);
        return -1;
    }
    if (strcmp(o->type, "f16") && strcmp(o->type, "bf16") && strcmp(o->type, "q8_0")) {
        fprintf(stderr, "error: --type '%s': expected f16, bf16 or q8_0 (llama.cpp's llama-quantize makes the smaller "
                "types from an f16 file)\n", o->type);
        return -1;
    }
    int vocab_flags = o->tokenizer || o->chat_format || o->system || o->system_file;
    const char *why = !o->model                      ? "--model is required"
                      : !o->out && !o->gguf          ? "--out DIR or --gguf FILE is required"
                      : o->system && o->system_file  ? "--system and --system-file exclude each other"
                      : o->no_vocab && vocab_flags   ? "--no-vocab writes no tokenizer and no chat template: drop "
                                                       "--tokenizer, --chat-format and --system"
                      : !o->gguf && (vocab_flags || o->no_vocab) ? "--tokenizer, --chat-format, --system and --no-vocab "
                                                                   "are for --gguf"
                                                                 : NULL;
    if (why) {
        fprintf(stderr, "error: %s (see --help)\n", why);
        return -1;
    }
    return 0;
}

// The tokenizer to write: --tokenizer, or the first file of a model directory's that exists,
// or the base GGUF itself. NULL when there is none.
static const char *find_tokenizer(const Options *o, char *buf, size_t n) {
    if (o->tokenizer) return o->tokenizer;
    if (gguf_is_gguf(o->model)) return o->model;
    static const char *const files[] = {"tekken.json", "tokenizer.model.v7", "tokenizer.model.v3", "tokenizer.model.v2",
                                        "tokenizer.model.v1", "tokenizer.model", "tokenizer.json"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(buf, n, "%s/%s", o->model, files[i]);
        if (access(buf, F_OK) == 0) return buf;
    }
    return NULL;
}

// --system or --system-file's text (the file without its final line break), checked UTF-8.
static int read_system(const Options *o, char **owned, const char **text, size_t *len, char *err) {
    *text = o->system;
    *len = o->system ? strlen(o->system) : 0;
    if (o->system_file) {
        if (!(*owned = read_file(o->system_file, len, err))) return -1;
        if (strlen(*owned) != *len) return set_error(err, "%s: contains a NUL byte", o->system_file);
        while (*len && strchr("\r\n", (*owned)[*len - 1])) (*owned)[--*len] = '\0';
        *text = *owned;
    }
    if (*text && !utf8_valid(*text, *len))
        return set_error(err, "%s: the system prompt is not valid UTF-8", o->system_file ? o->system_file : "--system");
    return 0;
}

// Everything the GGUF needs besides the weights, checked before the merge.
typedef struct {
    Tokenizer tok;
    int has_tok;
    char *system_owned;
    GgufExport ex;
    GgmlType type;
    char name[256];
    const char *system_from;  // where the template's default system prompt comes from
} GgufPlan;

static int plan_gguf(const Options *o, const Model *m, GgufPlan *g, char *err) {
    g->type = !strcmp(o->type, "bf16") ? GGML_BF16 : !strcmp(o->type, "q8_0") ? GGML_Q8_0 : GGML_F16;
    const char *base = strrchr(o->gguf, '/') ? strrchr(o->gguf, '/') + 1 : o->gguf;
    snprintf(g->name, sizeof(g->name), "%.*s", (int)(strlen(base) > 5 && !strcmp(base + strlen(base) - 5, ".gguf") ?
                                                     strlen(base) - 5 : strlen(base)), base);
    g->ex = (GgufExport){.type = g->type, .name = g->name};
    if (o->no_vocab) return export_gguf_check(m, &g->ex, err);
    static char found[4096];
    const char *path = find_tokenizer(o, found, sizeof(found));
    if (!path)
        return set_error(err, "%s: no tokenizer beside the model (tekken.json, tokenizer.model, tokenizer.json); pass "
                         "--tokenizer FILE, the one the adapter was trained with (or --no-vocab for weights only)",
                         o->model);
    if (tokenizer_load(&g->tok, path, err)) return -1;
    g->has_tok = 1;
    ChatFormat f = chat_format_for(&g->tok);
    if (o->chat_format && chat_format_parse(o->chat_format, &f))
        return set_error(err, "--chat-format '%s': expected v1, v2, v3, v7 or chatml", o->chat_format);
    g->ex.tok = &g->tok;
    g->ex.tokenizer_path = path;
    g->ex.chat_format = f;
    if (read_system(o, &g->system_owned, &g->ex.system, &g->ex.system_len, err)) return -1;
    g->system_from = o->system ? "--system" : o->system_file ? o->system_file : "none";
    if (!g->ex.system && f == CHAT_CHATML && g->tok.kind == TOKENIZER_BYTELEVEL) {  // chat.c's: the template's
        g->ex.system = bytelevel_default_system(g->tok.bytelevel, &g->ex.system_len);
        if (g->ex.system) g->system_from = "the tokenizer's chat template's";
    }
    return export_gguf_check(m, &g->ex, err);
}

static void plan_free(GgufPlan *g) {
    if (g->has_tok) tokenizer_free(&g->tok);
    free(g->system_owned);
}

static int write_gguf(const Model *m, GgufPlan *g, GgufWriter *w, const char *path, char *err) {
    const ModelConfig *c = &m->c;
    printf("  gguf %s: %s matrices, ", path, g->type == GGML_F16 ? "f16" : g->type == GGML_BF16 ? "bf16" : "q8_0");
    if (g->ex.tok)
        printf("tokenizer %s, chat format %s, default system prompt: %s\n", g->ex.tokenizer_path, chat_format_name(g->ex.chat_format),
               g->system_from);
    else
        printf("no tokenizer\n");
    if (c->sliding_window && c->sliding_window < c->max_position_embeddings)
        printf("note: llama.cpp has no sliding window for this architecture; context_length is written as the window, "
               "%d, within which full attention equals it\n", c->sliding_window);
    if (export_gguf(m, &g->ex, w, err) || gguf_writer_finish(w, err)) return -1;
    if (g->ex.n_fallback)
        printf("note: %d matrices have rows that are not a multiple of 32 and are f16 (q8_0 needs whole blocks of "
               "32), as llama.cpp's converter does\n", g->ex.n_fallback);
    printf("merge: wrote %s\n", path);
    return 0;
}

// The Hugging Face directory: assembled in a temporary directory, renamed into place.
static int write_dir(const Model *m, const Options *o, char *err) {
    StList t = {0};
    collect(m, &t, strcmp(o->dtype, "bf16") == 0 ? ST_BF16 : ST_F32);
    size_t n = strlen(o->out) + 16;
    char *tmp = xmalloc(n), path[4096];
    snprintf(tmp, n, "%s.tmp.XXXXXX", o->out);
    struct stat sb;
    int rc = mkdtemp(tmp) ? 0 : set_error(err, "%s: cannot create a temporary directory: %s", tmp, strerror(errno));
    snprintf(path, sizeof(path), "%s/model.safetensors", tmp);
    if (rc == 0) rc = st_list_write(&t, path, err);
    if (rc == 0) rc = write_config(o->model, tmp, o->dtype, err);
    if (rc == 0) rc = copy_side_files(o->model, tmp, err);
    if (rc == 0 && chmod(tmp, 0755)) rc = set_error(err, "%s: %s", tmp, strerror(errno));
    if (rc == 0 && o->force && stat(o->out, &sb) == 0) {  // replace: move the old one aside first
        char old[4200];
        snprintf(old, sizeof(old), "%s.old.%ld", o->out, (long)getpid());
        if (rename(o->out, old)) rc = set_error(err, "%s: cannot move aside: %s", o->out, strerror(errno));
        else if (rename(tmp, o->out)) rc = set_error(err, "%s: cannot rename into place: %s", o->out, strerror(errno));
        else if (remove_tree(old))
            fprintf(stderr, "warning: could not remove %s\n", old);
    } else if (rc == 0 && rename(tmp, o->out)) {
        rc = set_error(err, "%s: cannot rename into place: %s", o->out, strerror(errno));
    }
    if (rc && remove_tree(tmp)) fprintf(stderr, "warning: could not remove %s\n", tmp);
    if (rc == 0) printf("merge: wrote %d tensors to %s\n", t.n, o->out);
    st_list_free(&t);
    free(tmp);
    return rc;
}

// Whether directory or file `outer` is `inner` or one of its parents (compared by device and
// inode, so any spelling of the paths, links included, is seen through).
static int dir_holds(const char *outer, const char *inner) {
    struct stat o, d, up;
    if (!outer || !inner || stat(outer, &o) || stat(inner, &d)) return 0;
    char path[4096];
    snprintf(path, sizeof(path), "%s", inner);
    for (int depth = 0; depth < 256; depth++) {
        if (d.st_dev == o.st_dev && d.st_ino == o.st_ino) return 1;
        size_t n = strlen(path);
        if (n + 4 >= sizeof(path)) return 0;
        memcpy(path + n, "/..", 4);
        if (stat(path, &up) || (up.st_dev == d.st_dev && up.st_ino == d.st_ino)) return 0;  // the root
        d = up;
    }
    return 0;
}

int main(int argc, char **argv) {
    Options o = {.dtype = "bf16", .type = "f16"};
    if (parse_args(argc, argv, &o)) return 1;
    const char *outputs[2] = {o.out, o.gguf}, *flags[2] = {"--out", "--gguf"};
    for (int k = 0; k < 2; k++) {
        const char *input = dir_holds(outputs[k], o.model) ? o.model : dir_holds(outputs[k], o.adapter) ? o.adapter : NULL;
        if (input) {
            fprintf(stderr, "error: %s %s is or holds %s, an input: write the merged model elsewhere\n", flags[k],
                    outputs[k], input);
            return 1;
        }
    }
    struct stat sb;
    for (int k = 0; k < 2; k++)
        if (outputs[k] && stat(outputs[k], &sb) == 0 && !o.force) {
            fprintf(stderr, "error: %s exists; pass --force to replace it\n", outputs[k]);
            return 1;
        }
    char err[ERR_LEN], desc[512];
    GgufWriter w = {0};
    GgufPlan plan = {0};
    Model m = {0};
    int rc = o.gguf ? gguf_writer_open(&w, o.gguf, err) : 0;  // first: an unwritable output fails fast
    if (rc == 0) rc = model_load(&m, o.model, 0, err);
    if (rc == 0 && o.adapter) rc = peft_adapter_load(&m, o.adapter, err);
    if (rc == 0 && o.gguf) rc = plan_gguf(&o, &m, &plan, err);
    if (rc) {
        fprintf(stderr, "error: %s\n", err);
        if (o.gguf) gguf_writer_abort(&w);
        plan_free(&plan);
        model_free(&m);
        return 1;
    }
    config_describe(&m.c, desc, sizeof(desc));
    printf("merge: %s\n  base %s\n", desc, o.model);
    if (o.adapter)
        printf("  adapter %s (r %d, alpha %g, scale %g)\n", o.adapter, m.lora_r, (double)m.lora_alpha, (double)m.lora_scale);
    else
        printf("  no adapter: the base model alone\n");
    if (o.out) printf("  out %s (%s)\n", o.out, o.dtype);
    merge_adapters(&m);
    if (o.gguf && write_gguf(&m, &plan, &w, o.gguf, err)) {
        gguf_writer_abort(&w);
        rc = 2;
    }
    if (rc == 0 && o.out && write_dir(&m, &o, err)) rc = 2;
    if (rc) fprintf(stderr, "error: %s\n", err);
    plan_free(&plan);
    model_free(&m);
    return rc;
}
