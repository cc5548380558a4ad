// test_bnb4bit.c: loading a bitsandbytes-4bit checkpoint as it is stored.
//
// test/fixtures/nf4/bnb_checkpoint/model.safetensors holds two Linear4bit weights exactly as
// bitsandbytes 0.50.2 serializes them (scripts/nf4_fixtures.py): q_proj with double
// quantization, down_proj without. bnb_expected.safetensors has their bf16 source weights
// and bitsandbytes' dequantization. Loaded and dequantized by us, the weights must equal
// bitsandbytes' bit for bit; quantized by us from the source, the codes must equal the
// checkpoint's. Damaged copies of the checkpoint must be refused naming the tensor.
#include <stdlib.h>
#include <unistd.h>

#include "../common/half.h"
#include "../train/bnb4bit.h"
#include "test.h"

#define FIXTURES "test/fixtures/nf4"

static void check_linear(const ModelFiles *m, const SafeTensors *want, const char *prefix, int64_t rows, int64_t cols) {
    char err[ERR_LEN], name[256];
    Nf4Weight q, ours;
    if (bnb4bit_load_linear(&q, m, prefix, rows, cols, err)) {
        printf("  %s\n", err);
        CHECK(0);
        return;
    }
    size_t n = (size_t)(rows * cols);
    float *w = malloc(n * sizeof(float)), *src = malloc(n * sizeof(float));
    nf4_weight_dequantize(&q, w);
    for (size_t i = 0; i < n; i++) w[i] = bf16_to_f32(f32_to_bf16(w[i]));  // bnb returns the source dtype
    snprintf(name, sizeof(name), "%s.dequant", prefix);
    const StTensor *deq = st_find(want, name);
    CHECK(deq && deq->nbytes == n * 4 && memcmp(deq->data, w, n * 4) == 0);
    snprintf(name, sizeof(name), "%s.source", prefix);
    const StTensor *s = st_find(want, name);
    CHECK(s && s->dtype == ST_BF16 && (size_t)s->numel == n);
    if (s) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, (const char *)s->data + 2 * i, 2);
            src[i] = bf16_to_f32(h);
        }
        nf4_weight_quantize(&ours, src, rows, cols, 64, q.double_quant);
        CHECK(memcmp(ours.packed, q.packed, (n + 1) / 2) == 0);
        nf4_weight_free(&ours);
    }
    free(w);
    free(src);
    nf4_weight_free(&q);
}

TEST(loads_bitsandbytes_checkpoint) {
    ModelFiles m;
    SafeTensors want;
    char err[ERR_LEN];
    if (model_files_open(&m, FIXTURES "/bnb_checkpoint", err) || st_open(&want, FIXTURES "/bnb_expected.safetensors", err)) {
        printf("  %s\n", err);
        CHECK(0);
        return;
    }
    check_linear(&m, &want, "model.layers.0.self_attn.q_proj", 96, 40);
    check_linear(&m, &want, "model.layers.0.mlp.down_proj", 40, 72);
    Nf4Weight q;
    CHECK_INT(bnb4bit_load_linear(&q, &m, "model.layers.0.self_attn.q_proj", 40, 96, err), -1);
    CHECK_CONTAINS(err, "quant_state shape is not [40, 96]");
    CHECK_INT(bnb4bit_load_linear(&q, &m, "model.layers.0.self_attn.k_proj", 96, 40, err), -1);
    CHECK_CONTAINS(err, "tensor 'model.layers.0.self_attn.k_proj.weight.quant_state.bitsandbytes__nf4' is missing");
    st_close(&want);
    model_files_close(&m);
}

// Copies the fixture checkpoint into a temporary directory with one tensor changed (or
// dropped when replacement is NULL and drop is set), then loads q_proj from it.
static void damaged(const char *tensor, const StWrite *replacement, const char *want) {
    ModelFiles src, m;
    char err[ERR_LEN] = "", dir[] = "/tmp/bnb_damaged_XXXXXX", path[128];
    if (model_files_open(&src, FIXTURES "/bnb_checkpoint", err) || !mkdtemp(dir)) { CHECK(0); return; }
    StWrite *w = calloc((size_t)src.n_tensors + 1, sizeof(StWrite));
    int n = 0;
    for (int i = 0; i < src.n_tensors; i++) {
        const StTensor *t = src.all[i];
        if (strcmp(t->name, tensor) == 0) {
            if (replacement) w[n++] = *replacement;
            continue;
        }
        w[n] = (StWrite){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(w[n++].shape, t->shape, sizeof(t->shape));
    }
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    CHECK_INT(st_write(path, w, n, NULL, NULL, 0, err), 0);
    Nf4Weight q;
    CHECK_INT(model_files_open(&m, dir, err), 0);
    CHECK_INT(bnb4bit_load_linear(&q, &m, "model.layers.0.self_attn.q_proj", 96, 40, err), -1);
    CHECK_CONTAINS(err, want);
    model_files_close(&m);
    model_files_close(&src);
    unlink(path);
    rmdir(dir);
    free(w);
}

TEST(damaged_checkpoints_are_refused) {
    const char *P = "model.layers.0.self_attn.q_proj.weight";
    char name[128];
    static const char bad_json[] = "{\"quant_type\": \"fp4\", \"blocksize\": 64, \"shape\": [96, 40]}";
    static float wrong_map[16];
    static uint8_t short_codes[100];
    snprintf(name, sizeof(name), "%s.quant_state.bitsandbytes__nf4", P);
    StWrite fp4 = {name, ST_U8, 1, {sizeof(bad_json) - 1}, bad_json};
    damaged(name, &fp4, "quant_type is not nf4");
    snprintf(name, sizeof(name), "%s.quant_map", P);
    StWrite map = {name, ST_F32, 1, {16}, wrong_map};
    damaged(name, &map, "is not the NF4 table");
    snprintf(name, sizeof(name), "%s", P);
    StWrite codes = {name, ST_U8, 2, {100, 1}, short_codes};
    damaged(name, &codes, "has 100 elements, expected 1920");
    snprintf(name, sizeof(name), "%s.nested_absmax", P);
    damaged(name, NULL, "nested_absmax' is missing");
}

int main(void) {
    RUN(loads_bitsandbytes_checkpoint);
    RUN(damaged_checkpoints_are_refused);
    return test_summary();
}
