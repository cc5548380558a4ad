// test_model.c: the CPU model's checks beyond the fixture comparison.
//
// The comparison with transformers + PEFT (logits, loss, every LoRA gradient, AdamW steps)
// is the program check_fixture, run on every committed fixture by
// test/test_check_fixture.sh. Here: adapters we save load back bit for bit; the LoRA
// gradients against central finite differences of the whole model's loss, with and
// without dropout; and the bitsandbytes-4bit checkpoints of test/fixtures/tiny/
// mistral_window and of its bf16 copy mistral_window_bf16 (saved by transformers 5.24 +
// bitsandbytes 0.50.2) against our NF4 of the fp32 and the bf16 model: the same codes and
// statistics and the same logits.
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "../train/adamw.h"
#include "../train/model.h"
#include "../train/peft_adapter.h"
#include "../train/safetensors.h"
#include "test.h"

// An adapter we save loads back bit for bit (PEFT's own loading of it is checked by
// scripts/model_fixtures.py when it regenerates the fixtures).
TEST(adapter_save_load_round_trip) {
    Model a, b;
    char err[ERR_LEN], dir[] = "/tmp/adapter_XXXXXX";
    if (model_load(&a, "test/fixtures/tiny/mistral_gqa", 0, err) || model_load(&b, "test/fixtures/tiny/mistral_gqa", 0, err) ||
        !mkdtemp(dir)) {
        printf("  %s\n", err);
        CHECK(0);
        return;
    }
    model_lora_init(&a, (1u << PROJ_Q) | (1u << PROJ_V) | (1u << PROJ_DOWN), 3, 6.0f, 1, 5);
    for (int i = 0; i < a.c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++)
            if (a.layers[i].proj[p].B)
                for (int j = 0; j < a.layers[i].proj[p].out * 3; j++) a.layers[i].proj[p].B[j] = 0.01f * (float)(j % 7);
    CHECK_INT(peft_adapter_save(&a, dir, "tiny", 0.05f, err), 0);
    CHECK_INT(peft_adapter_load(&b, dir, err), 0);
    CHECK(b.lora_r == 3 && b.lora_alpha == 6.0f && b.lora_rslora == 1);
    for (int i = 0; i < a.c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            const Linear *x = &a.layers[i].proj[p], *y = &b.layers[i].proj[p];
            CHECK((x->A == NULL) == (y->A == NULL));
            if (x->A && y->A) {
                CHECK(memcmp(x->A, y->A, (size_t)3 * x->in * 4) == 0);
                CHECK(memcmp(x->B, y->B, (size_t)3 * x->out * 4) == 0);
            }
        }
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK_INT(system(cmd), 0);
    model_free(&a);
    model_free(&b);
}

// Central finite differences of the whole model's loss for LoRA weights of every target
// module (a few elements of each A and B in every layer), against model_step's gradients:
// an independent check of the backward pass through attention, RoPE, norms and SwiGLU.
static void finite_differences(float dropout) {
    Model m;
    char err[ERR_LEN];
    if (model_load(&m, "test/fixtures/tiny/mistral_gqa", 0, err) ||
        peft_adapter_load(&m, "test/fixtures/tiny/mistral_gqa/adapter", err)) {
        printf("  %s\n", err);
        CHECK(0);
        return;
    }
    enum { T = 10 };
    int32_t tok[T] = {3, 17, 42, 5, 9, 60, 1, 33, 8, 21}, pos[T], seg[T], tgt[T];
    float w[T];
    for (int t = 0; t < T; t++) pos[t] = t < 6 ? t : t - 6, seg[t] = t < 6 ? 0 : 1, tgt[t] = (tok[t] * 7 + 3) % 64, w[t] = t % 3 != 0;
    ModelInput in = {T, tok, pos, seg, tgt, w};
    // With dropout, every evaluation restarts the mask generator, so the differences see
    // the same masks as the gradient (the masks are drawn when backward is set).
    m.lora_dropout = dropout;
    m.dropout_rng = 77;
    model_step(&m, &in, 1.0f, 1, NULL);  // gradients of the summed loss
    int checked = 0, bad = 0;
    for (int i = 0; i < m.c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            Linear *l = &m.layers[i].proj[p];
            for (int k = 0; k < 2; k++) {
                float *x = k ? l->B : l->A, *g = k ? l->dB : l->dA;
                size_t n = k ? (size_t)l->out * m.lora_r : (size_t)m.lora_r * l->in;
                for (size_t e = 0; e < n; e += n / 3 + 1) {  // three elements spread over the tensor
                    float keep = x[e], h = 1e-2f;
                    // (with dropout the masks are drawn only when backward is set; a gradient
                    // scale of 0 leaves the gradients being checked untouched)
                    x[e] = keep + h;
                    m.dropout_rng = 77;
                    double up = model_step(&m, &in, 0.0f, dropout > 0, NULL);
                    x[e] = keep - h;
                    m.dropout_rng = 77;
                    double down = model_step(&m, &in, 0.0f, dropout > 0, NULL);
                    x[e] = keep;
                    double fd = (up - down) / (2.0 * h);
                    checked++;
                    if (fabs(fd - g[e]) > 2e-2 * fabs(fd) + 1e-3) {
                        if (bad++ < 3) printf("  layer %d %s lora_%c[%zu]: analytic %.6g, finite difference %.6g\n", i,
                                              proj_short[p], k ? 'B' : 'A', e, g[e], fd);
                    }
                }
            }
        }
    printf("  %d LoRA weights in every target module checked (dropout %g)\n", checked, (double)dropout);
    CHECK_INT(bad, 0);
    CHECK(checked >= 2 * N_PROJ * 2 * 3);
    model_free(&m);
}

TEST(lora_gradients_match_finite_differences) { finite_differences(0.0f); }
TEST(lora_gradients_with_dropout_match_finite_differences) { finite_differences(0.3f); }

// QLoRA's frozen weights: a bitsandbytes-4bit checkpoint that transformers saved loads as
// stored and gives the same logits as our own NF4 quantization of the checkpoint it was made
// from. Both models run the same float32 code on float32 dequantized weights; our loader
// ignores bnb_4bit_compute_dtype and the quant_state's "dtype" (bitsandbytes would
// dequantize to that dtype and multiply in the compute dtype), so the logits can differ only
// through the stored codes and statistics, which are compared first.
static void logits_of(Model *m, const StTensor *ids, float *logits) {
    int B = (int)ids->shape[1], S = (int)ids->shape[2], T = B * S;  // [steps, B, S]: step 1's rows
    int32_t *pos = malloc(T * sizeof(int32_t)), *seg = malloc(T * sizeof(int32_t)), *tgt = calloc(T, sizeof(int32_t));
    float *w = calloc(T, sizeof(float));
    for (int t = 0; t < T; t++) pos[t] = t % S, seg[t] = t / S;
    ModelInput in = {T, ids->data, pos, seg, tgt, w};
    model_step(m, &in, 1.0f, 0, logits);
    free(pos), free(seg), free(tgt), free(w);
}

// Returns the largest relative difference of the logits (on the mistral_window fixture's
// batch) between bnb_dir loaded as stored and source_dir quantized by us. Checks that every
// projection's packed codes, absmax codes and 8-bit map are the same bytes, and with
// exact_scales also its double-quantization offset and second-level scales (absmax2).
static double bnb_against_our_nf4(const char *bnb_dir, const char *source_dir, int exact_scales) {
    Model bnb, ours;
    SafeTensors ex;
    char err[ERR_LEN];
    if (model_load(&bnb, bnb_dir, 0, err) || model_load(&ours, source_dir, 1, err) ||
        st_open(&ex, "test/fixtures/tiny/mistral_window/expected.safetensors", err)) {
        printf("  %s\n", err);
        CHECK(0);
        return INFINITY;
    }
    CHECK(bnb.c.bnb_4bit && bnb.layers[0].proj[PROJ_Q].w == NULL && bnb.layers[0].proj[PROJ_Q].q.double_quant);
    int codes = 0, scales = 0;  // differing bytes of codes; weights whose offset or absmax2 differ
    for (int i = 0; i < ours.c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            const Nf4Weight *x = &ours.layers[i].proj[p].q, *y = &bnb.layers[i].proj[p].q;
            size_t n = (size_t)x->rows * x->cols, nb = (n + 63) / 64, nb2 = (nb + NF4_DQ_BLOCKSIZE - 1) / NF4_DQ_BLOCKSIZE;
            CHECK(x->blocksize == 64 && y->blocksize == 64 && y->double_quant);
            for (size_t j = 0; j < (n + 1) / 2; j++) codes += x->packed[j] != y->packed[j];
            for (size_t j = 0; j < nb; j++) codes += x->qabsmax[j] != y->qabsmax[j];
            codes += memcmp(x->code, y->code, sizeof(x->code)) != 0;
            scales += memcmp(&x->offset, &y->offset, 4) != 0 || memcmp(x->absmax2, y->absmax2, nb2 * 4) != 0;
        }
    printf("  %s against our NF4 of %s: %d code bytes differ, offset/absmax2 of %d weights differ\n", bnb_dir,
           source_dir, codes, scales);
    CHECK_INT(codes, 0);
    if (exact_scales) CHECK_INT(scales, 0);
    const StTensor *ids = st_find(&ex, "input_ids");
    size_t n = (size_t)ids->shape[1] * ids->shape[2] * bnb.c.vocab_size;
    float *a = malloc(n * 4), *b = malloc(n * 4);
    logits_of(&bnb, ids, a);
    logits_of(&ours, ids, b);
    double r = max_rel_error(b, a, n);
    printf("  logits: largest relative difference %.2g\n", r);
    free(a), free(b);
    st_close(&ex);
    model_free(&bnb);
    model_free(&ours);
    return r;
}

// The fp32 checkpoint: the logits agree to 1e-5. The double-quantization offset is the
// float32 mean of the absmax values; torch sums float32 values in float32 and we round the
// exact mean once, so the offset (and with it absmax2) of some weights differs by one ulp
// (7 of the 14 here), every code being the same here; elsewhere the shifted offset can move
// a statistic to the next code (test/fixtures/models/nf4 and check_fixture).
TEST(bitsandbytes_checkpoint_and_our_nf4_agree) {
    CHECK(bnb_against_our_nf4("test/fixtures/tiny/mistral_window_bnb4bit", "test/fixtures/tiny/mistral_window", 0) < 1e-5);
}

// The same model saved in bf16 (test/fixtures/tiny/mistral_window_bf16) and quantized by
// bitsandbytes from the bf16 weights: the absmax values are bf16 numbers (8-bit
// significands), whose float32 sum over a weight's 36 or 72 blocks here is exact, so torch's mean is
// ours too; every code and statistic is the same bytes and the logits are the same floats.
TEST(bitsandbytes_checkpoint_of_bf16_and_our_nf4_agree) {
    CHECK(bnb_against_our_nf4("test/fixtures/tiny/mistral_window_bf16_bnb4bit", "test/fixtures/tiny/mistral_window_bf16",
                              1) == 0.0);
}

// --export-adapter DIR: the mistral_window fixture's adapter after 3 AdamW steps on its
// batch, saved by us to DIR with our logits (DIR/our_logits.safetensors), for
// scripts/model_fixtures.py check-adapter to load into PEFT (reference/qlora.md §B.2).
static int export_adapter(const char *dir) {
    Model m;
    SafeTensors ex;
    char err[ERR_LEN];
    if (model_load(&m, "test/fixtures/tiny/mistral_window", 0, err) ||
        peft_adapter_load(&m, "test/fixtures/tiny/mistral_window/adapter", err) ||
        st_open(&ex, "test/fixtures/tiny/mistral_window/expected.safetensors", err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    const StTensor *ids = st_find(&ex, "input_ids");
    int S = (int)ids->shape[2], T = (int)(ids->shape[1] * S), V = m.c.vocab_size;  // step 1's rows
    int32_t *pos = malloc(T * sizeof(int32_t)), *seg = malloc(T * sizeof(int32_t)), *tgt = malloc(T * sizeof(int32_t));
    float *w = malloc(T * sizeof(float)), *logits = malloc((size_t)T * V * sizeof(float));
    const int32_t *id = ids->data;
    for (int t = 0; t < T; t++) pos[t] = t % S, seg[t] = t / S, tgt[t] = t % S + 1 < S ? id[t + 1] : 0, w[t] = t % S + 1 < S;
    ModelInput in = {T, id, pos, seg, tgt, w};
    AdamWConfig opt = {0.9f, 0.999f, 1e-8f, 0.0f};
    for (int step = 1; step <= 3; step++) {
        model_step(&m, &in, 1.0f / (float)(T - 2), 1, NULL);
        for (int i = 0; i < m.c.num_hidden_layers; i++)
            for (int p = 0; p < N_PROJ; p++) {
                Linear *l = &m.layers[i].proj[p];
                size_t na = (size_t)m.lora_r * l->in, nb = (size_t)l->out * m.lora_r;
                float *z = calloc(2 * (na + nb), 4);
                // a fresh optimizer state each step keeps this short: the point is new weights
                adamw_step(l->A, l->dA, z, z + na, na, 1, 1e-2f, &opt);
                adamw_step(l->B, l->dB, z + 2 * na, z + 2 * na + nb, nb, 1, 1e-2f, &opt);
                memset(l->dA, 0, na * 4);
                memset(l->dB, 0, nb * 4);
                free(z);
            }
    }
    model_step(&m, &in, 1.0f, 0, logits);
    char path[4096];
    int rc = peft_adapter_save(&m, dir, NULL, 0.0f, err);
    StWrite lw = {"logits", ST_F32, 3, {ids->shape[1], S, V}, logits};
    snprintf(path, sizeof(path), "%s/our_logits.safetensors", dir);
    if (rc == 0) rc = st_write(path, &lw, 1, NULL, NULL, 0, err);
    if (rc) fprintf(stderr, "error: %s\n", err);
    free(pos), free(seg), free(tgt), free(w), free(logits);
    st_close(&ex);
    model_free(&m);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--export-adapter") == 0) return export_adapter(argv[2]);
    RUN(adapter_save_load_round_trip);
    RUN(bitsandbytes_checkpoint_and_our_nf4_agree);
    RUN(bitsandbytes_checkpoint_of_bf16_and_our_nf4_agree);
    RUN(lora_gradients_match_finite_differences);
    RUN(lora_gradients_with_dropout_match_finite_differences);
    return test_summary();
}
