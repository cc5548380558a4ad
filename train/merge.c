/*
 * merge.c: the `merge` program: a base model plus a LoRA adapter, written out as one
 * ordinary Hugging Face model directory.
 *
 *   ./merge --model BASE_DIR --adapter ADAPTER_DIR --out OUT_DIR [--dtype bf16|f32] [--force]
 *
 * For every adapted projection W' = W + s * B A (PEFT's merge, reference/qlora.md §B.4),
 * computed in float32 and then rounded to the output dtype (bf16 by default, round to
 * nearest even); every other tensor is copied in that dtype. A bitsandbytes-4bit base is
 * dequantized first, so the result is a plain bf16 model, not a re-quantized one (PEFT
 * re-quantizes and warns about rounding; a bf16 model is what other tools load).
 * config.json is copied with its dtype set and any quantization_config removed; the
 * tokenizer and generation files beside the base model are copied too. The output is
 * assembled in a temporary directory beside OUT_DIR and renamed into place, so OUT_DIR
 * either appears complete or not at all; an existing OUT_DIR is refused without --force,
 * and refused always when it is, or holds, the base model or the adapter (replacing it
 * would delete the inputs).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model.h"
#include "peft_adapter.h"
#include "safetensors.h"

typedef struct {
    const char *model, *adapter, *out, *dtype;
    int force;
} Options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: merge --model BASE_DIR --adapter ADAPTER_DIR --out OUT_DIR [options]\n"
            "\n"
            "Writes base + LoRA (W' = W + scale * B A) as a Hugging Face model directory.\n"
            "\n"
            "  --model DIR     the base model (config.json + safetensors; bf16, f16, f32 or bitsandbytes 4-bit)\n"
            "  --adapter DIR   a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors)\n"
            "  --out DIR       the merged model directory to create\n"
            "  --dtype T       bf16 (default) or f32\n"
            "  --force         replace OUT_DIR if it exists\n");
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
    if (l->w) memcpy(w, l->w, n * sizeof(float));
    else nf4_weight_dequantize(&l->q, w);
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
            float *w = merged_weight(m, &L->proj[p]);
            snprintf(name, sizeof(name), "model.layers.%d.%s.weight", i, proj_names[p]);
            add(t, name, w, L->proj[p].out, L->proj[p].in, dt);
            free(w);
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
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); exit(0); }
        else if (!strcmp(a, "--model") && more) o->model = argv[++i];
        else if (!strcmp(a, "--adapter") && more) o->adapter = argv[++i];
        else if (!strcmp(a, "--out") && more) o->out = argv[++i];
        else if (!strcmp(a, "--dtype") && more) o->dtype = argv[++i];
        else if (!strcmp(a, "--force")) o->force = 1;
        else {
            fprintf(stderr, "error: unknown option or missing value: %s (see --help)\n", a);
            return -1;
        }
    }
    if (!o->model || !o->adapter || !o->out) {
        fprintf(stderr, "error: --model, --adapter and --out are required (see --help)\n");
        return -1;
    }
    if (strcmp(o->dtype, "bf16") && strcmp(o->dtype, "f32")) {
        fprintf(stderr, "error: --dtype '%s': expected bf16 or f32\n", o->dtype);
        return -1;
    }
    return 0;
}

// Whether directory `outer` is `inner` or one of its parents (compared by device and
// inode, so any spelling of the paths, links included, is seen through).
static int dir_holds(const char *outer, const char *inner) {
    struct stat o, d, up;
    if (stat(outer, &o) || stat(inner, &d)) return 0;
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
    Options o = {.dtype = "bf16"};
    if (parse_args(argc, argv, &o)) return 1;
    const char *input = dir_holds(o.out, o.model) ? o.model : dir_holds(o.out, o.adapter) ? o.adapter : NULL;
    if (input) {
        fprintf(stderr, "error: --out %s is or holds %s, an input: write the merged model elsewhere\n", o.out, input);
        return 1;
    }
    struct stat sb;
    if (stat(o.out, &sb) == 0 && !o.force) {
        fprintf(stderr, "error: %s exists; pass --force to replace it\n", o.out);
        return 1;
    }
    char err[ERR_LEN], desc[512];
    Model m;
    if (model_load(&m, o.model, 0, err) || (peft_adapter_load(&m, o.adapter, err) && (model_free(&m), 1))) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    config_describe(&m.c, desc, sizeof(desc));
    printf("merge: %s\n  base %s\n  adapter %s (r %d, alpha %g, scale %g)\n  out %s (%s)\n", desc, o.model, o.adapter,
           m.lora_r, (double)m.lora_alpha, (double)m.lora_scale, o.out, o.dtype);
    StList t = {0};
    collect(&m, &t, strcmp(o.dtype, "bf16") == 0 ? ST_BF16 : ST_F32);
    model_free(&m);

    size_t n = strlen(o.out) + 16;
    char *tmp = xmalloc(n), path[4096];
    snprintf(tmp, n, "%s.tmp.XXXXXX", o.out);
    int rc = mkdtemp(tmp) ? 0 : set_error(err, "%s: cannot create a temporary directory: %s", tmp, strerror(errno));
    snprintf(path, sizeof(path), "%s/model.safetensors", tmp);
    if (rc == 0) rc = st_list_write(&t, path, err);
    if (rc == 0) rc = write_config(o.model, tmp, o.dtype, err);
    if (rc == 0) rc = copy_side_files(o.model, tmp, err);
    if (rc == 0 && chmod(tmp, 0755)) rc = set_error(err, "%s: %s", tmp, strerror(errno));
    if (rc == 0 && o.force && stat(o.out, &sb) == 0) {  // replace: move the old one aside first
        char old[4200];
        snprintf(old, sizeof(old), "%s.old.%ld", o.out, (long)getpid());
        if (rename(o.out, old)) rc = set_error(err, "%s: cannot move aside: %s", o.out, strerror(errno));
        else if (rename(tmp, o.out)) rc = set_error(err, "%s: cannot rename into place: %s", o.out, strerror(errno));
        else if (remove_tree(old))
            fprintf(stderr, "warning: could not remove %s\n", old);
    } else if (rc == 0 && rename(tmp, o.out)) {
        rc = set_error(err, "%s: cannot rename into place: %s", o.out, strerror(errno));
    }
    if (rc) {
        fprintf(stderr, "error: %s\n", err);
        if (remove_tree(tmp)) fprintf(stderr, "warning: could not remove %s\n", tmp);
    } else {
        printf("merge: wrote %d tensors to %s\n", t.n, o.out);
    }
    st_list_free(&t);
    free(tmp);
    return rc ? 2 : 0;
}
