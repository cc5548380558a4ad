// tiny_gpu_model.h: the tiny Mistral the GPU model tests build their runs on, written as a
// Hugging Face directory (model.safetensors + config.json) into a fresh temporary directory.
// head_dim 64 (what the attention kernels take), the other sizes from the caller; weights
// normal(mean, std) from a seeded generator, large enough that attention is far from
// uniform, so positions, the window and a KV cache change the result. Test-only (included by
// test_cuda_model_gpu.cpp and test_cuda_decode_gpu.cpp, after model_gpu.cuh).
#ifndef TINY_GPU_MODEL_H
#define TINY_GPU_MODEL_H

extern "C" {
#include "../train/safetensors.h"
}

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    int hidden, intermediate, layers, heads, kv_heads, vocab, window;
} TinyGpuModel;

// A standard normal draw (Box-Muller) from rng.
static float tiny_normal(uint64_t *rng) {
    double u1 = rng_uniform(rng), u2 = rng_uniform(rng);
    return (float)(sqrt(-2.0 * log(u1 + 1e-300)) * cos(6.283185307179586 * u2));
}

// A [rows, cols] matrix of normal(mean, std) values (cols 0: a vector) into the list.
static void tiny_add_tensor(StList *t, const char *name, int rows, int cols, float mean, float std, uint64_t *rng) {
    size_t n = (size_t)rows * (cols ? cols : 1);
    float *x = (float *)xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = mean + std * tiny_normal(rng);
    int64_t shape[2] = {rows, cols};
    st_list_add(t, name, x, cols ? 2 : 1, shape, ST_F32);
    free(x);
}

// Writes the model into a new directory made from dir (a mkdtemp template, rewritten in
// place); exits 2 when it cannot.
static void tiny_gpu_model_write(char *dir, const TinyGpuModel *s, uint64_t seed) {
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(2);
    }
    StList t = {};
    uint64_t rng = seed;
    int H = s->hidden, I = s->intermediate, Q = s->heads * 64, KV = s->kv_heads * 64;
    char name[128], err[ERR_LEN], path[512];
    tiny_add_tensor(&t, "model.embed_tokens.weight", s->vocab, H, 0.0f, 1.0f, &rng);
    for (int l = 0; l < s->layers; l++) {
        snprintf(name, sizeof(name), "model.layers.%d.input_layernorm.weight", l);
        tiny_add_tensor(&t, name, H, 0, 1.0f, 0.1f, &rng);
        snprintf(name, sizeof(name), "model.layers.%d.post_attention_layernorm.weight", l);
        tiny_add_tensor(&t, name, H, 0, 1.0f, 0.1f, &rng);
        int rows[N_PROJ] = {Q, KV, KV, H, I, I, H};
        int cols[N_PROJ] = {H, H, H, Q, H, H, I};
        float std[N_PROJ] = {0.125f, 0.125f, 0.1f, 0.1f, 0.08f, 0.08f, 0.06f};
        for (int p = 0; p < N_PROJ; p++) {
            snprintf(name, sizeof(name), "model.layers.%d.%s.weight", l, proj_names[p]);
            tiny_add_tensor(&t, name, rows[p], cols[p], 0.0f, std[p], &rng);
        }
    }
    tiny_add_tensor(&t, "model.norm.weight", H, 0, 1.0f, 0.1f, &rng);
    tiny_add_tensor(&t, "lm_head.weight", s->vocab, H, 0.0f, 0.1f, &rng);
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    if (st_list_write(&t, path, err)) {
        printf("%s\n", err);
        exit(2);
    }
    st_list_free(&t);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fprintf(f,
            "{\"model_type\": \"mistral\", \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d,"
            " \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": 64, \"vocab_size\": %d,"
            " \"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-05, \"sliding_window\": %d}\n",
            H, I, s->layers, s->heads, s->kv_heads, s->vocab, s->window);
    fclose(f);
}

#endif
