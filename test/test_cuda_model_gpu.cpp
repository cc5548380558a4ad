// test_cuda_model_gpu.cpp: the GPU decoder with LoRA (train/model_gpu.cuh) in the CUDA-on-CPU
// harness against the CPU reference (train/model.c, which test_model checks against
// transformers and PEFT), on one packed micro-batch of a tiny Mistral whose every feature
// the kernels must get right: head_dim 64 (2 query heads, 1 KV head: GQA), a sliding window
// (24) shorter than the conversations, two rows of packed conversations with positions
// restarting at 0, untrained targets and padding, LoRA on all seven projections with B
// nonzero (so that dA and the LoRA part of every input gradient are exercised, not only dB).
// The weights are large enough that attention is far from uniform (scores of a few units),
// so RoPE, the window and the segments change the result.
//
// What is compared, and why these bounds (u = 2^-8, bf16's unit roundoff):
// - the loss: the GPU rounds every activation to bf16 (about 20 roundings on a path through
//   one layer, 45 through the whole model) and its frozen weights to bf16 after NF4
//   (the CPU keeps them in fp32). Independent roundings of relative size <= u add up like a
//   random walk: sqrt(45)·u ≈ 2.6% of the activations' scale, which the logits inherit
//   (their spread here is σ_z ≈ 1.1). A token's loss, lse(z) - z_target, moves by about
//   sqrt(2)·2.6%·σ_z ≈ 0.04, and the mean over the 75 trained tokens, independent errors,
//   by 0.04 / sqrt(75) ≈ 0.005, 9e-4 of the loss (5.4). The bound is 2e-3 of the loss; no
//   RoPE at all moves it by 6.6e-3 (the gradients below catch every such mistake anyway,
//   by far more).
// - each LoRA gradient tensor (dA, dB of each projection of each layer): the relative L2
//   error ||g - ref|| / ||ref|| <= 0.05 and the cosine >= 0.995. The backward adds its own
//   ~45 roundings to the forward's, so sqrt(90)·u ≈ 3.7% per element in the worst
//   direction; the L2 norm over thousands of elements averages to about that, and the
//   cosine of two vectors that differ by a relative error e is at least 1 - e²/2 ≈ 0.9993
//   at e = 0.037. A gradient that misses a term (the LoRA dx, a residual branch, RoPE's
//   backward) is off by far more than 5%.
// - the recompute levels 0, 1, 2: the same bits (the recomputed activations are the stored
//   ones' bits, the MLP in three chunks at each), and two runs under different harness
//   schedules: the same bits.
// - the LoRA products by kernels/lora.cuh (train_gpu's default) at every level, and by
//   cuBLASLt calls (--lora-impl cublas) at level 1: both against the CPU, with the bounds
//   above.
// - LoRA dropout 0.1 (the kernels regenerate train/model.c's masks from the generator's
//   state): loss and gradients against the CPU's with the same masks, with the bounds above
//   (a mask off by one draw, or one MLP chunk's masks taken from the wrong rows, moves a
//   dropped tenth of the inputs: far more), at levels 0 and 1 (the forward, its recompute
//   and the backward regenerate the same masks: the same bits), and the generator's state
//   after the step equal to the CPU's.
#define GPU_MLP_CHUNK 48    // the 128 tokens in three MLP chunks (48, 48, 32): slices at every level
#define GPU_OPT_CHUNK 1024  // the optimizer state on the host (recompute 2) in 32 chunks
#define GPU_LOAD_CHUNK 512  // frozen weights quantized a few rows at a time
#include "../train/model_gpu.cuh"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

extern "C" {
#include "../train/safetensors.h"
}

#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const int kH = 128, kI = 256, kL = 2, kHeads = 2, kKv = 1, kV = 96, kWindow = 24, kB = 2, kT = 64, kR = 8;
static char model_dir[256];

static float normal(uint64_t *rng) {
    double u1 = rng_uniform(rng), u2 = rng_uniform(rng);
    return (float)(sqrt(-2.0 * log(u1 + 1e-300)) * cos(6.283185307179586 * u2));
}

// A [rows, cols] matrix of normal(mean, std) values (cols 0: a vector) into the list.
static void add_tensor(StList *t, const char *name, int rows, int cols, float mean, float std, uint64_t *rng) {
    size_t n = (size_t)rows * (cols ? cols : 1);
    float *x = (float *)xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = mean + std * normal(rng);
    int64_t shape[2] = {rows, cols};
    st_list_add(t, name, x, cols ? 2 : 1, shape, ST_F32);
    free(x);
}

// The tiny model (sizes above) as a Hugging Face directory in a temporary directory.
static void write_model(void) {
    snprintf(model_dir, sizeof(model_dir), "/tmp/test_cuda_model_gpu_XXXXXX");
    if (!mkdtemp(model_dir)) {
        perror("mkdtemp");
        exit(2);
    }
    StList t = {};
    uint64_t rng = 7;
    char name[128], err[ERR_LEN];
    add_tensor(&t, "model.embed_tokens.weight", kV, kH, 0.0f, 1.0f, &rng);
    for (int l = 0; l < kL; l++) {
        snprintf(name, sizeof(name), "model.layers.%d.input_layernorm.weight", l);
        add_tensor(&t, name, kH, 0, 1.0f, 0.1f, &rng);
        snprintf(name, sizeof(name), "model.layers.%d.post_attention_layernorm.weight", l);
        add_tensor(&t, name, kH, 0, 1.0f, 0.1f, &rng);
        int rows[N_PROJ] = {kHeads * 64, kKv * 64, kKv * 64, kH, kI, kI, kH};
        int cols[N_PROJ] = {kH, kH, kH, kHeads * 64, kH, kH, kI};
        float std[N_PROJ] = {0.125f, 0.125f, 0.1f, 0.1f, 0.08f, 0.08f, 0.06f};
        for (int p = 0; p < N_PROJ; p++) {
            snprintf(name, sizeof(name), "model.layers.%d.%s.weight", l, proj_names[p]);
            add_tensor(&t, name, rows[p], cols[p], 0.0f, std[p], &rng);
        }
    }
    add_tensor(&t, "model.norm.weight", kH, 0, 1.0f, 0.1f, &rng);
    add_tensor(&t, "lm_head.weight", kV, kH, 0.0f, 0.1f, &rng);
    char path[512];
    snprintf(path, sizeof(path), "%s/model.safetensors", model_dir);
    if (st_list_write(&t, path, err)) {
        printf("%s\n", err);
        exit(2);
    }
    st_list_free(&t);
    snprintf(path, sizeof(path), "%s/config.json", model_dir);
    FILE *f = fopen(path, "w");
    fprintf(f,
            "{\"model_type\": \"mistral\", \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d,"
            " \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": 64, \"vocab_size\": %d,"
            " \"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-05, \"sliding_window\": %d}\n",
            kH, kI, kL, kHeads, kKv, kV, kWindow);
    fclose(f);
}

static void remove_model(void) { remove_tree(model_dir); }

// One packed micro-batch as the dataloader makes it (data/dataloader.h): row 0 holds a
// conversation of 30 pairs and one of 34, row 1 one of 50 and 14 positions of padding;
// segment ids distinct across the rows (padding -1 - row), positions restarting at 0,
// about a third of the targets untrained.
typedef struct {
    int32_t tokens[kB * kT], targets[kB * kT], positions[kB * kT], seg[kB * kT];
    float weights[kB * kT];
    int64_t trained;
} TestBatch;

static void make_batch(TestBatch *b) {
    uint64_t rng = 11;
    int ends[kB][3] = {{30, 64, 64}, {50, 50, 64}};  // segment ends per row (the last: padding)
    b->trained = 0;
    for (int r = 0; r < kB; r++)
        for (int t = 0, s = 0, start = 0; t < kT; t++) {
            while (t >= ends[r][s]) start = ends[r][s++];
            int i = r * kT + t, padding = r == 1 && s == 2;
            b->tokens[i] = padding ? 0 : (int32_t)rng_below(&rng, kV);
            b->targets[i] = padding ? 0 : (int32_t)rng_below(&rng, kV);
            b->positions[i] = padding ? 0 : t - start;
            b->seg[i] = padding ? -1 - r : r * kT + s;
            b->weights[i] = !padding && rng_below(&rng, 3) != 0 ? 1.0f : 0.0f;
            b->trained += b->weights[i] != 0;
        }
}

// The CPU reference: NF4 frozen weights (as the GPU), LoRA on everything, B made nonzero.
static void cpu_model(Model *m) {
    char err[ERR_LEN];
    if (model_load(m, model_dir, 1, err)) {
        printf("%s\n", err);
        exit(2);
    }
    model_lora_init(m, (1u << N_PROJ) - 1, kR, 16.0f, 0, 3);
    uint64_t rng = 5;
    for (int l = 0; l < kL; l++)
        for (int p = 0; p < N_PROJ; p++) {
            Linear *lin = &m->layers[l].proj[p];
            for (int i = 0; i < lin->out * kR; i++) lin->B[i] = 0.05f * normal(&rng);
        }
}

// The GPU model of the same directory with the CPU model's LoRA weights.
static void gpu_model(GpuModel *g, const Model *cpu, int recompute, int training, int impl = LORA_KERNELS) {
    GpuSettings s = {kB, kT, recompute, kR, (1u << N_PROJ) - 1, cpu->lora_scale, training, impl, cpu->lora_dropout};
    char err[ERR_LEN];
    gpu_model_init(g, &cpu->c, &s);
    gpu_model_allocate(g);
    if (gpu_model_load(g, model_dir, err)) {
        printf("%s\n", err);
        exit(2);
    }
    for (int l = 0; l < kL; l++)
        for (int p = 0; p < N_PROJ; p++)
            for (int k = 0; k < 2; k++) {
                const Linear *lin = &cpu->layers[l].proj[p];
                gpu_lora_set(g, l, p, k, k ? lin->B : lin->A, NULL, NULL);
            }
}

// The GPU's loss and LoRA gradients (one host buffer of lora_n floats) for the batch.
static double gpu_run(GpuModel *g, const TestBatch *b, float *grads) {
    gpu_set_batch(g, b->tokens, b->targets, b->weights, b->positions, b->seg, kB * kT);
    cuda_check(cudaMemset(g->lora_grads, 0, g->lora_n * sizeof(float)));
    double loss = gpu_model_step(g, kB * kT, 1.0f / (float)b->trained, 1);
    cuda_check(cudaMemcpy(grads, g->lora_grads, g->lora_n * sizeof(float), cudaMemcpyDeviceToHost));
    return loss;
}

static Model cpu, cpu_dropout;  // without and with LoRA dropout (kDropout from kDropoutState)
static const float kDropout = 0.1f;
static const uint64_t kDropoutState = 0x1234567;
static TestBatch batch;
static double cpu_loss, cpu_dropout_loss;
static GpuModel layout;    // a model's layout (each gradient's place in the LoRA buffer)
static double loss_at[3];  // the GPU's loss and gradients at --recompute 0, 1, 2
static float *grads_at[3];
static double loss_cublas;  // and at 1 with the LoRA products by cuBLASLt
static float *grads_cublas;
static float *state_at[3];  // and every LoRA weight, m and v after two optimizer steps
static double loss_dropout[2];  // with dropout at levels 0 and 1, and the generator's state after
static float *grads_dropout[2];
static uint64_t dropout_rng_after[2];

// ||got - ref|| / ||ref|| and the cosine of the two, over n values.
static void compare(const float *got, const float *ref, size_t n, double *rel, double *cosine) {
    double d = 0, r = 0, g = 0, dot = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
        r += (double)ref[i] * ref[i], g += (double)got[i] * got[i], dot += (double)got[i] * ref[i];
    }
    *rel = sqrt(d / r);
    *cosine = dot / sqrt(r * g);
}

static void loss_check(double loss, double ref) {
    double rel = fabs(loss - ref) / ref;
    printf("  loss: GPU %.6f, CPU %.6f (mean over %lld trained tokens), relative difference %.2e (bound 2e-3)\n",
           loss / batch.trained, ref / batch.trained, (long long)batch.trained, rel);
    CHECK(rel <= 2e-3);
}

static void gradients_check(const float *grads, const Model *cpu) {
    double worst_rel = 0, worst_cos = 1;
    for (int l = 0; l < kL; l++)
        for (int p = 0; p < N_PROJ; p++) {
            const GpuLinear *lin = &layout.layers[l].proj[p];
            const Linear *ref = &cpu->layers[l].proj[p];
            for (int k = 0; k < 2; k++) {
                size_t n = k ? (size_t)lin->out * kR : (size_t)kR * lin->in;
                const float *got = grads + gpu_lora_index(&layout, l, p, k);
                double rel, cosine;
                compare(got, k ? ref->dB : ref->dA, n, &rel, &cosine);
                if (rel > worst_rel) worst_rel = rel;
                if (cosine < worst_cos) worst_cos = cosine;
                if (!(rel <= 0.05 && cosine >= 0.995)) {
                    printf("  layer %d %s d%c: relative L2 error %.3e, cosine %.6f\n", l, proj_short[p], k ? 'B' : 'A',
                           rel, cosine);
                    test_failed_checks++;
                }
            }
        }
    printf("  28 gradient tensors: worst relative L2 error %.3e (bound 0.05), worst cosine %.6f (bound 0.995)\n",
           worst_rel, worst_cos);
}

TEST(loss_matches_cpu) { loss_check(loss_at[1], cpu_loss); }
TEST(lora_gradients_match_cpu) { gradients_check(grads_at[1], &cpu); }
TEST(cublas_lora_loss_matches_cpu) { loss_check(loss_cublas, cpu_loss); }
TEST(cublas_lora_gradients_match_cpu) { gradients_check(grads_cublas, &cpu); }
TEST(dropout_loss_matches_cpu) { loss_check(loss_dropout[1], cpu_dropout_loss); }
TEST(dropout_gradients_match_cpu) { gradients_check(grads_dropout[1], &cpu_dropout); }

// Levels 0 and 1 draw the same masks (1 regenerates them in the recompute), and the step
// leaves the generator where train/model.c's leaves it.
TEST(dropout_same_bits_and_generator_state) {
    CHECK(memcmp(&loss_dropout[0], &loss_dropout[1], sizeof(double)) == 0);
    CHECK(memcmp(grads_dropout[0], grads_dropout[1], layout.lora_n * sizeof(float)) == 0);
    CHECK(dropout_rng_after[0] == cpu_dropout.dropout_rng && dropout_rng_after[1] == cpu_dropout.dropout_rng);
    CHECK(cpu_dropout.dropout_rng != kDropoutState);
}

// The levels give the same loss and gradients, and their optimizer steps (the state on the
// device at 0 and 1, on the host in chunks at 2) the same weights and moments.
TEST(recompute_levels_same_bits) {
    for (int level = 1; level < 3; level++) {
        CHECK(memcmp(&loss_at[level], &loss_at[0], sizeof(double)) == 0);
        CHECK(memcmp(grads_at[level], grads_at[0], layout.lora_n * sizeof(float)) == 0);
        CHECK(memcmp(state_at[level], state_at[0], 3 * layout.lora_n * sizeof(float)) == 0);
    }
}

// Another harness schedule (threads and blocks in another order) gives the same bits.
TEST(same_bits_under_another_schedule) {
    uint64_t seed = cuda_host_seed();
    cuda_host_set_seed(seed + 12345);
    GpuModel g;
    gpu_model(&g, &cpu, 1, 1);
    float *grads = (float *)xmalloc(g.lora_n * sizeof(float));
    double loss = gpu_run(&g, &batch, grads);
    cuda_host_set_seed(seed);
    CHECK(memcmp(&loss, &loss_at[1], sizeof(double)) == 0);
    CHECK(memcmp(grads, grads_at[1], g.lora_n * sizeof(float)) == 0);
    free(grads);
    gpu_model_free(&g);
}

// A model made for the forward alone (evaluation, chat) plans less and computes the same loss.
TEST(forward_only_model_same_loss) {
    GpuModel eval;
    gpu_model(&eval, &cpu, 0, 0);
    CHECK(eval.lora_grads == NULL && eval.dx == NULL);
    CHECK(plan_total(&eval.plan) < plan_total(&layout.plan));
    gpu_set_batch(&eval, batch.tokens, batch.targets, batch.weights, batch.positions, batch.seg, kB * kT);
    double loss = gpu_model_step(&eval, kB * kT, 1.0f, 0);
    CHECK(memcmp(&loss, &loss_at[1], sizeof(double)) == 0);
    gpu_model_free(&eval);
}

// The next-token logits of a prefix (what sampling uses) against the CPU's logits of its
// last token: max |got - ref| within 4% of max |ref|. Each logit carries the activations'
// random-walk error of the loss bound above, sqrt(45)·u ≈ 2.6% of the logits' scale (here
// 1.2% measured on the worst of 96); 4% is 1.5 times the estimate.
TEST(last_token_logits_match_cpu) {
    const int n = 30;  // row 0's first conversation
    GpuModel eval;
    gpu_model(&eval, &cpu, 0, 0);
    gpu_set_batch(&eval, batch.tokens, batch.targets, batch.weights, batch.positions, batch.seg, n);
    float *got = (float *)xmalloc(kV * sizeof(float)), *ref = (float *)xmalloc((size_t)n * kV * sizeof(float));
    gpu_model_last_logits(&eval, n, got);
    ModelInput in = {n, batch.tokens, batch.positions, batch.seg, batch.targets, batch.weights};
    model_step(&cpu, &in, 1.0f, 0, ref);
    double err = max_rel_error(got, ref + (size_t)(n - 1) * kV, kV);
    printf("  logits of token %d: max |GPU - CPU| / max |CPU| = %.2e (bound 4e-2)\n", n - 1, err);
    CHECK(err <= 4e-2);
    free(got), free(ref);
    gpu_model_free(&eval);
}

// Loading: every projection's NF4 codes and statistics on the device are the CPU loader's
// bytes (train/nf4.c, bitsandbytes-exact): quantized on the GPU from fp32 (this test's
// model) and bf16 weights (a committed fixture), a few rows at a time (GPU_LOAD_CHUNK 512:
// 4 rows of 128 or 96, 8 of 48 columns, chunks that end on NF4 block boundaries), or
// copied as stored from bitsandbytes-4bit checkpoints; embeddings, head and norms are the
// CPU's values rounded to bf16.
static int same_bytes(const void *dev, const void *host, size_t bytes) {
    void *h = xmalloc(bytes ? bytes : 1);
    cuda_check(cudaMemcpy(h, dev, bytes, cudaMemcpyDeviceToHost));
    int same = memcmp(h, host, bytes) == 0;
    free(h);
    return same;
}

static int same_bf16(const bf16 *dev, const float *host, size_t n) {
    uint16_t *bits = (uint16_t *)xmalloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) bits[i] = f32_to_bf16(host[i]);
    int same = same_bytes(dev, bits, n * sizeof(uint16_t));
    free(bits);
    return same;
}

TEST(loading_matches_cpu_nf4) {
    const char *dirs[] = {model_dir, "test/fixtures/tiny/mistral_window_bf16", "test/fixtures/tiny/mistral_window_bnb4bit",
                          "test/fixtures/tiny/mistral_window_bf16_bnb4bit"};
    char err[ERR_LEN];
    for (int d = 0; d < 4; d++) {
        Model ref;
        if (model_load(&ref, dirs[d], 1, err)) {
            printf("  %s\n", err);
            test_failed_checks++;
            continue;
        }
        const ModelConfig *c = &ref.c;
        GpuSettings s = {1, 8, 0, 0, 0, 1.0f, 0, LORA_KERNELS, 0.0f};
        GpuModel g;
        gpu_model_init(&g, c, &s);
        gpu_model_allocate(&g);
        if (gpu_model_load(&g, dirs[d], err)) {
            printf("  %s\n", err);
            test_failed_checks++;
        }
        size_t H = c->hidden_size, V = c->vocab_size;
        int bad = !same_bf16(g.embed, ref.embed, V * H) + !same_bf16(g.head, ref.head, V * H) +
                  !same_bf16(g.norm, ref.norm, H);
        for (int l = 0; l < c->num_hidden_layers; l++) {
            bad += !same_bf16(g.layers[l].ln1, ref.layers[l].ln1, H) + !same_bf16(g.layers[l].ln2, ref.layers[l].ln2, H);
            for (int p = 0; p < N_PROJ; p++) {
                const Nf4Device *q = &g.layers[l].proj[p].w;
                const Nf4Weight *w = &ref.layers[l].proj[p].q;
                size_t n = (size_t)(w->rows * w->cols), nb = CEIL_DIV(n, (size_t)w->blocksize);
                int ok = w->double_quant && w->blocksize == q->blocksize && same_bytes(q->packed, w->packed, (n + 1) / 2) &&
                         same_bytes(q->qabsmax, w->qabsmax, nb) &&
                         same_bytes(q->absmax2, w->absmax2, CEIL_DIV(nb, (size_t)NF4_DQ_BLOCK) * sizeof(float)) &&
                         same_bytes(q->offset, &w->offset, sizeof(float)) && same_bytes(q->code, w->code, sizeof(w->code));
                if (!ok) printf("  %s: layer %d %s: NF4 bytes differ from the CPU loader's\n", dirs[d], l, proj_short[p]);
                bad += !ok;
            }
        }
        CHECK_INT(bad, 0);
        gpu_model_free(&g);
        model_free(&ref);
    }
}

int main(void) {
    write_model();
    make_batch(&batch);
    cpu_model(&cpu);
    ModelInput in = {kB * kT, batch.tokens, batch.positions, batch.seg, batch.targets, batch.weights};
    cpu_loss = model_step(&cpu, &in, 1.0f / (float)batch.trained, 1, NULL);
    cpu_model(&cpu_dropout);
    cpu_dropout.lora_dropout = kDropout, cpu_dropout.dropout_rng = kDropoutState;
    cpu_dropout_loss = model_step(&cpu_dropout, &in, 1.0f / (float)batch.trained, 1, NULL);
    for (int level = 0; level < 3; level++) {
        GpuModel g;
        gpu_model(&g, &cpu, level, 1);
        grads_at[level] = (float *)xmalloc(g.lora_n * sizeof(float));
        loss_at[level] = gpu_run(&g, &batch, grads_at[level]);
        gpu_lora_update(&g, 1, 1e-2f, 0.1f, 0.5f);
        gpu_lora_update(&g, 2, 1e-2f, 0.1f, 1.0f);
        state_at[level] = (float *)xcalloc(3 * g.lora_n, sizeof(float));
        for (int l = 0; l < kL; l++)
            for (int p = 0; p < N_PROJ; p++)
                for (int k = 0; k < 2; k++) {
                    float *at = state_at[level] + gpu_lora_index(&g, l, p, k);
                    gpu_lora_get(&g, l, p, k, at, at + g.lora_n, at + 2 * g.lora_n, NULL);
                }
        gpu_model_free(&g);
    }
    GpuModel g;
    gpu_model(&g, &cpu, 1, 1, LORA_CUBLAS);
    grads_cublas = (float *)xmalloc(g.lora_n * sizeof(float));
    loss_cublas = gpu_run(&g, &batch, grads_cublas);
    gpu_model_free(&g);
    for (int level = 0; level < 2; level++) {
        gpu_model(&g, &cpu_dropout, level, 1);
        g.dropout_rng = kDropoutState;
        grads_dropout[level] = (float *)xmalloc(g.lora_n * sizeof(float));
        loss_dropout[level] = gpu_run(&g, &batch, grads_dropout[level]);
        dropout_rng_after[level] = g.dropout_rng;
        gpu_model_free(&g);
    }
    GpuSettings s = {kB, kT, 1, kR, (1u << N_PROJ) - 1, cpu.lora_scale, 1, LORA_KERNELS, 0.0f};
    gpu_model_init(&layout, &cpu.c, &s);
    RUN(loss_matches_cpu);
    RUN(lora_gradients_match_cpu);
    RUN(cublas_lora_loss_matches_cpu);
    RUN(cublas_lora_gradients_match_cpu);
    RUN(dropout_loss_matches_cpu);
    RUN(dropout_gradients_match_cpu);
    RUN(dropout_same_bits_and_generator_state);
    RUN(recompute_levels_same_bits);
    RUN(same_bits_under_another_schedule);
    RUN(forward_only_model_same_loss);
    RUN(last_token_logits_match_cpu);
    RUN(loading_matches_cpu_nf4);
    for (int level = 0; level < 3; level++) free(grads_at[level]), free(state_at[level]);
    free(grads_cublas), free(grads_dropout[0]), free(grads_dropout[1]);
    gpu_model_free(&layout);
    model_free(&cpu), model_free(&cpu_dropout);
    remove_model();
    return test_summary();
}
