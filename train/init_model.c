/*
 * init_model.c: the `init_model` program: a small Mistral-architecture model with seeded
 * random weights, written as a Hugging Face directory (config.json + model.safetensors)
 * by our own safetensors writer. It lets the whole pipeline (prep, train_cpu, merge) run
 * anywhere without downloading a checkpoint; it is not a pretrained model.
 *
 *   ./init_model --out DIR [--vocab 32768] [--hidden 64] [--intermediate 192] [--layers 2]
 *                [--heads 4] [--kv-heads 2] [--window 0] [--rope-theta 1e6] [--seed 1] [--dtype f32|bf16]
 *
 * Weights follow transformers' initialisation: normal(0, 0.02) for every matrix, ones for
 * the norms. The vocabulary size must match the tokenizer the data is prepared with. The
 * directory is assembled under a temporary name beside DIR and renamed into place, so DIR
 * appears complete or not at all (a full disk leaves nothing to clean up).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/util.h"
#include "model.h"
#include "safetensors.h"

typedef struct {
    const char *out, *dtype;
    int vocab, hidden, intermediate, layers, heads, kv_heads, window;
    double rope_theta;
    uint64_t seed;
} Options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: init_model --out DIR [options]\n"
            "\n"
            "Writes a small random Mistral-architecture model (config.json + model.safetensors).\n"
            "\n"
            "  --out DIR           the model directory to create (must not exist)\n"
            "  --vocab N           vocabulary size; match the tokenizer (default 32768, Mistral v3)\n"
            "  --hidden N          hidden size (default 64)\n"
            "  --intermediate N    MLP size (default 192)\n"
            "  --layers N          decoder layers (default 2)\n"
            "  --heads N           attention heads (default 4)\n"
            "  --kv-heads N        key/value heads, dividing --heads (default 2)\n"
            "  --window N          sliding window; 0 = none (default 0)\n"
            "  --rope-theta X      RoPE base (default 1e6)\n"
            "  --seed N            (default 1)\n"
            "  --dtype T           f32 (default) or bf16\n");
}

// Standard normal from the seeded generator (Box-Muller).
static float normal(uint64_t *rng) {
    double u1 = rng_uniform(rng), u2 = rng_uniform(rng);
    return (float)(sqrt(-2.0 * log(u1 + 1e-300)) * cos(6.283185307179586 * u2));
}

// A [rows, cols] matrix of normal(0, 0.02) values, or (cols 0) a norm weight of ones.
static void add_random(StList *t, const char *name, int rows, int cols, StDtype dt, uint64_t *rng) {
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    float *x = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = cols ? 0.02f * normal(rng) : 1.0f;
    int64_t shape[2] = {rows, cols};
    st_list_add(t, name, x, cols ? 2 : 1, shape, dt);
    free(x);
}

int main(int argc, char **argv) {
    Options o = {.dtype = "f32", .vocab = 32768, .hidden = 64, .intermediate = 192, .layers = 2, .heads = 4,
                 .kv_heads = 2, .rope_theta = 1e6, .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (!v) { fprintf(stderr, "error: unknown option or missing value: %s (see --help)\n", a); return 1; }
        i++;
        if (!strcmp(a, "--out")) o.out = v;
        else if (!strcmp(a, "--dtype")) o.dtype = v;
        else if (!strcmp(a, "--vocab")) o.vocab = atoi(v);
        else if (!strcmp(a, "--hidden")) o.hidden = atoi(v);
        else if (!strcmp(a, "--intermediate")) o.intermediate = atoi(v);
        else if (!strcmp(a, "--layers")) o.layers = atoi(v);
        else if (!strcmp(a, "--heads")) o.heads = atoi(v);
        else if (!strcmp(a, "--kv-heads")) o.kv_heads = atoi(v);
        else if (!strcmp(a, "--window")) o.window = atoi(v);
        else if (!strcmp(a, "--rope-theta")) o.rope_theta = atof(v);
        else if (!strcmp(a, "--seed")) o.seed = strtoull(v, NULL, 10);
        else { fprintf(stderr, "error: unknown option: %s (see --help)\n", a); return 1; }
    }
    const char *bad = !o.out ? "--out is required"
                      : o.vocab < 1 || o.hidden < 1 || o.intermediate < 1 || o.layers < 1 || o.heads < 1 || o.kv_heads < 1
                          ? "sizes must be positive"
                      : o.hidden % o.heads || (o.hidden / o.heads) % 2 ? "--hidden must be an even multiple of --heads"
                      : o.heads % o.kv_heads ? "--kv-heads must divide --heads"
                      : strcmp(o.dtype, "f32") && strcmp(o.dtype, "bf16") ? "--dtype must be f32 or bf16"
                      : NULL;
    if (bad) { fprintf(stderr, "error: %s (see --help)\n", bad); return 1; }
    struct stat sb;
    if (stat(o.out, &sb) == 0) { fprintf(stderr, "error: %s: cannot create: %s\n", o.out, strerror(EEXIST)); return 1; }
    size_t tmp_len = strlen(o.out) + 16;
    char *dir = xmalloc(tmp_len);
    snprintf(dir, tmp_len, "%s.tmp.XXXXXX", o.out);
    if (!mkdtemp(dir) || chmod(dir, 0755)) {
        fprintf(stderr, "error: %s: cannot create: %s\n", dir, strerror(errno));
        free(dir);
        return 1;
    }

    int H = o.hidden, D = o.hidden / o.heads, I = o.intermediate;
    StDtype dt = strcmp(o.dtype, "bf16") == 0 ? ST_BF16 : ST_F32;
    StList t = {0};
    uint64_t rng = o.seed;
    char name[96];
    add_random(&t, "model.embed_tokens.weight", o.vocab, H, dt, &rng);
    for (int l = 0; l < o.layers; l++) {
        int rows[N_PROJ] = {o.heads * D, o.kv_heads * D, o.kv_heads * D, H, I, I, H};
        int cols[N_PROJ] = {H, H, H, o.heads * D, H, H, I};
        snprintf(name, sizeof(name), "model.layers.%d.input_layernorm.weight", l);
        add_random(&t, name, H, 0, dt, &rng);
        snprintf(name, sizeof(name), "model.layers.%d.post_attention_layernorm.weight", l);
        add_random(&t, name, H, 0, dt, &rng);
        for (int p = 0; p < N_PROJ; p++) {
            snprintf(name, sizeof(name), "model.layers.%d.%s.weight", l, proj_names[p]);
            add_random(&t, name, rows[p], cols[p], dt, &rng);
        }
    }
    add_random(&t, "model.norm.weight", H, 0, dt, &rng);
    add_random(&t, "lm_head.weight", o.vocab, H, dt, &rng);

    char path[4096], err[ERR_LEN];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    int rc = st_list_write(&t, path, err);
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/config.json", dir);
        FILE *f = fopen(path, "w");
        char window[32] = "null";
        if (o.window) snprintf(window, sizeof(window), "%d", o.window);
        rc = !f || fprintf(f,
                           "{\n  \"architectures\": [\"MistralForCausalLM\"],\n  \"model_type\": \"mistral\",\n"
                           "  \"hidden_act\": \"silu\",\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
                           "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n"
                           "  \"head_dim\": %d,\n  \"vocab_size\": %d,\n  \"max_position_embeddings\": 32768,\n"
                           "  \"rope_theta\": %g,\n  \"rms_norm_eps\": 1e-05,\n  \"sliding_window\": %s,\n"
                           "  \"tie_word_embeddings\": false,\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n"
                           "  \"torch_dtype\": \"%s\"\n}\n",
                           H, I, o.layers, o.heads, o.kv_heads, D, o.vocab, o.rope_theta, window,
                           dt == ST_BF16 ? "bfloat16" : "float32") < 0;
        if (f && (fflush(f) || fsync(fileno(f)))) rc = 1;
        if (f && fclose(f)) rc = 1;
        if (rc) set_error(err, "%s: cannot write: %s", path, strerror(errno));
    }
    st_list_free(&t);
    if (rc == 0 && rename(dir, o.out)) rc = set_error(err, "%s: cannot rename into place: %s", o.out, strerror(errno));
    if (rc) {
        fprintf(stderr, "error: %s\n", err);
        if (remove_tree(dir)) fprintf(stderr, "warning: could not remove %s\n", dir);
        free(dir);
        return 2;
    }
    free(dir);
    printf("init_model: wrote %s (%d layers, hidden %d, vocab %d, %s)\n", o.out, o.layers, H, o.vocab, o.dtype);
    return 0;
}
