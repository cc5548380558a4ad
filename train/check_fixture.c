/*
 * check_fixture.c: the `check_fixture` program, the CPU model (model.h) and the optimizer
 * (adamw.h, schedule.h) against what transformers + PEFT (+ bitsandbytes) + torch computed
 * for the same model in float64, with torch float32's own error printed beside ours.
 *
 *   ./check_fixture MODEL_DIR FIXTURE [--tol T] [--max-steps N]
 *
 * FIXTURE is an expected.safetensors written by scripts/model_fixtures.py for MODEL_DIR
 * (the committed ones in test/fixtures/tiny/ and test/fixtures/models/, or any configuration
 * the script makes with `one`); the script's top describes every tensor and metadata key.
 * The program
 *   1. takes the frozen weights from MODEL_DIR's files (frozen_weights "model_dir") or
 *      generates them from config.json and the formula below ("generated"), as float32 or
 *      quantized to NF4 by nf4.h (frozen_dtype "nf4": the reference ran bitsandbytes'
 *      Linear4bit; our codes and statistics must be bit-identical to its, see
 *      quantize_as_bitsandbytes), and the initial LoRA A and B from the same formula;
 *   2. takes adamw_steps optimizer steps, each on its own rows of the fixture and as
 *      train_cpu takes one: grad_accum micro-batches (the step's rows split evenly, in
 *      order), every labelled token of the step weighing the same (transformers' shift:
 *      position s is trained on label s+1), LoRA dropout with the fixture's masks (fed
 *      through Model.dropout_masks), the global gradient norm clipped to max_grad_norm,
 *      AdamW at the learning rate of the schedule (warmup_steps, then constant, linear or
 *      cosine);
 *   3. compares step 1's logits and every LoRA gradient (before clipping), and each step's
 *      loss, gradient norm (before clipping) and learning rate with the fixture's float64
 *      truth.
 * Packed rows (position_ids and segment_ids in the fixture): a token attends only within
 * its own conversation, at positions restarting from 0.
 *
 * Every comparison prints one line: its error, torch float32's error against the same truth
 * (from the fixture), and PASS or FAIL by the tolerance (1e-4 unless --tol says otherwise).
 * The error of a tensor is max |ours - truth| / max |truth| (relative to its scale, so that
 * near-zero elements do not dominate); of a number, |ours - truth| / |truth|.
 *
 * The weight formula, shared with the script (which is the reference for it): element i of
 * the tensor NAME is u * bound with
 *   z = SplitMix64 output for state seed ^ fnv1a64(NAME) + i * 0x9E3779B97F4A7C15
 *   u = ((z >> 41) + 0.5) * 2^-22 - 1        (exact in float32: uniform in (-1, 1))
 * and bound = float32(sqrt(3) * init_std) for embeddings, projections and head, 1 for norms
 * (whose weights are 1 + u/8), 1/sqrt(in) for LoRA A, lora_b_bound for LoRA B. A
 * Mistral-7B layer is ~0.9 GB of float32: generating it costs less than reading it.
 *
 * Exit status: 0 when every comparison passes, 2 when one fails, 1 for bad input (a model
 * or fixture that cannot be read, or a fixture that does not fit the model), with one line
 * naming the file and the tensor or field.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "adamw.h"
#include "model.h"
#include "peft_adapter.h"
#include "safetensors.h"
#include "schedule.h"

static void usage(FILE *f) {
    fprintf(f, "usage: ./check_fixture MODEL_DIR FIXTURE [--tol T] [--max-steps N]\n"
               "Compares the CPU model and optimizer on MODEL_DIR with a fixture written by\n"
               "scripts/model_fixtures.py: step 1's logits and LoRA gradients, and every optimizer\n"
               "step's loss, gradient norm and learning rate, against the float64 truth, torch float32's\n"
               "error beside ours; one line per comparison.\n"
               "  --tol T         relative tolerance of every comparison (default 1e-4)\n"
               "  --max-steps N   check only the first N optimizer steps (default: all of the fixture's)\n"
               "Exit status 0: all pass; 2: a comparison fails; 1: bad input.\n");
}

// ---------------------------------------------------------------------------------------
// the recipe: the fixture's metadata

typedef struct {
    int generated, nf4;  // frozen weights from the formula (else MODEL_DIR's files); NF4
    double init_std;
    uint64_t weights_seed, lora_seed;
    int lora_r, rslora;
    float lora_alpha, lora_dropout, lora_b_bound;
    unsigned targets;
    float lr, max_grad_norm;
    AdamWConfig opt;
    int steps, grad_accum, warmup;
    ScheduleKind schedule;
    char schedule_name[16];
} Recipe;

// A metadata value as a number (within [lo, hi], a whole number when whole is set).
// Returns 0, or -1 with err.
static int meta_number(const cJSON *meta, const char *key, double lo, double hi, int whole, double *v, const char *path,
                       char *err) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(meta, key);
    char *end = NULL;
    if (cJSON_IsString(f)) *v = strtod(f->valuestring, &end);
    if (!end || end == f->valuestring || *end || !isfinite(*v))
        return set_error(err, "%s: metadata \"%s\": missing or not a number", path, key);
    if (*v < lo || *v > hi || (whole && *v != floor(*v)))
        return set_error(err, "%s: metadata \"%s\": %s is not %s in [%g, %g]", path, key, f->valuestring,
                         whole ? "a whole number" : "a number", lo, hi);
    return 0;
}

// A metadata value that must be one of the '|'-separated choices; returns its index or -1.
static int meta_choice(const cJSON *meta, const char *key, const char *choices, const char *path, char *err) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(meta, key);
    int i = 0;
    for (const char *c = choices; cJSON_IsString(f); i++) {
        size_t n = strcspn(c, "|");
        if (strlen(f->valuestring) == n && strncmp(f->valuestring, c, n) == 0) return i;
        if (!c[n]) break;
        c += n + 1;
    }
    return set_error(err, "%s: metadata \"%s\": missing or not one of %s", path, key, choices);
}

static int read_recipe(const SafeTensors *fx, Recipe *r, char *err) {
    cJSON *meta = fx->metadata_json ? cJSON_Parse(fx->metadata_json) : NULL;
    const char *p = fx->path;
    double rank, alpha, dropout, b_bound, lr, b1, b2, eps, wd, steps, accum, clip, warmup, wseed = 0, lseed;
    int schedule;
    int rc = (r->generated = meta_choice(meta, "frozen_weights", "model_dir|generated", p, err)) < 0 ||
                     (r->nf4 = meta_choice(meta, "frozen_dtype", "float32|nf4", p, err)) < 0 ||
                     (r->rslora = meta_choice(meta, "use_rslora", "false|true", p, err)) < 0 ||
                     (schedule = meta_choice(meta, "schedule", "constant|linear|cosine", p, err)) < 0 ||
                     meta_number(meta, "init_std", 1e-6, 10, 0, &r->init_std, p, err) ||
                     (r->generated && meta_number(meta, "weights_seed", 0, 9007199254740992.0, 1, &wseed, p, err)) ||
                     meta_number(meta, "lora_seed", 0, 9007199254740992.0, 1, &lseed, p, err) ||
                     meta_number(meta, "lora_r", 1, 4096, 1, &rank, p, err) ||
                     meta_number(meta, "lora_alpha", 1e-6, 1e6, 0, &alpha, p, err) ||
                     meta_number(meta, "lora_dropout", 0, 0.99, 0, &dropout, p, err) ||
                     meta_number(meta, "lora_b_bound", 0, 100, 0, &b_bound, p, err) ||
                     meta_number(meta, "adamw_lr", 0, 100, 0, &lr, p, err) ||
                     meta_number(meta, "adamw_beta1", 0, 0.999999, 0, &b1, p, err) ||
                     meta_number(meta, "adamw_beta2", 0, 0.999999, 0, &b2, p, err) ||
                     meta_number(meta, "adamw_eps", 0, 1, 0, &eps, p, err) ||
                     meta_number(meta, "adamw_weight_decay", 0, 100, 0, &wd, p, err) ||
                     meta_number(meta, "adamw_steps", 1, 1000, 1, &steps, p, err) ||
                     meta_number(meta, "grad_accum", 1, 4096, 1, &accum, p, err) ||
                     meta_number(meta, "max_grad_norm", 0, 1e9, 0, &clip, p, err) ||
                     meta_number(meta, "warmup_steps", 0, 1000, 1, &warmup, p, err)
                 ? -1
                 : 0;
    const cJSON *targets = cJSON_GetObjectItemCaseSensitive(meta, "target_modules");
    if (rc == 0 && (!cJSON_IsString(targets) || model_parse_targets(targets->valuestring, &r->targets)))
        rc = set_error(err, "%s: metadata \"target_modules\": not a list of projections", p);
    else if (rc == 0 && r->nf4 && !r->generated)
        rc = set_error(err, "%s: metadata \"frozen_dtype\": nf4 is for generated frozen weights", p);
    if (rc == 0) {
        static const char *names[] = {"constant", "linear", "cosine"};
        snprintf(r->schedule_name, sizeof(r->schedule_name), "%s", names[schedule]);
        schedule_parse(names[schedule], &r->schedule);
        r->weights_seed = (uint64_t)wseed, r->lora_seed = (uint64_t)lseed;
        r->lora_r = (int)rank, r->lora_alpha = (float)alpha, r->lora_dropout = (float)dropout;
        r->lora_b_bound = (float)b_bound;
        r->lr = (float)lr, r->max_grad_norm = (float)clip;
        r->opt = (AdamWConfig){(float)b1, (float)b2, (float)eps, (float)wd};
        r->steps = (int)steps, r->grad_accum = (int)accum, r->warmup = (int)warmup;
    }
    cJSON_Delete(meta);
    return rc;
}

// ---------------------------------------------------------------------------------------
// the fixture's tensors

// The fixture's tensor NAME, checked to be DTYPE with ndim dimensions of these sizes
// (a size of -1 takes any). Returns NULL with err.
static const StTensor *expect(const SafeTensors *fx, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                              char *err) {
    const StTensor *t = st_find(fx, name);
    int ok = t && t->dtype == dtype && t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = shape[d] < 0 || t->shape[d] == shape[d];
    if (ok) return t;
    char want[96] = "";
    for (int d = 0; d < ndim; d++)
        snprintf(want + strlen(want), sizeof(want) - strlen(want), shape[d] < 0 ? "%s_" : "%s%lld", d ? ", " : "",
                 (long long)shape[d]);
    set_error(err, "%s: tensor '%s' %s (expected %s [%s])", fx->path, name, t ? "has another dtype or shape" : "is missing",
              st_dtype_name(dtype), want);
    return NULL;
}

// ---------------------------------------------------------------------------------------
// the weights: the formula (see the top) and the models made from it

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xCBF29CE484222325ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001B3ULL;
    return h;
}

static void hash_uniform(float *w, size_t n, uint64_t seed, const char *name, float bound) {
    uint64_t key = seed ^ fnv1a64(name);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        uint64_t state = key + i * 0x9E3779B97F4A7C15ULL;  // rng_next steps it once more: (i + 1) x
        uint64_t z = rng_next(&state);
        w[i] = (((float)(z >> 41) + 0.5f) * 0x1p-22f - 1.0f) * bound;
    }
}

static float *generated(size_t n, uint64_t seed, const char *name, float bound) {
    float *w = xmalloc(n * sizeof(float));
    hash_uniform(w, n, seed, name, bound);
    return w;
}

static float *generated_norm(int n, uint64_t seed, const char *name) {
    float *w = generated((size_t)n, seed, name, 1.0f);
    for (int i = 0; i < n; i++) w[i] = 1.0f + w[i] * 0.125f;
    return w;
}

// How our NF4 of the generated weights compares with bitsandbytes' (frozen_dtype "nf4").
typedef struct {
    int weights, offsets_differ, mismatches;
} Nf4Agreement;

// Quantizes w into l as bitsandbytes' Linear4bit does, checked against what it stored
// (bnb4bit.NAME.offset, bnb4bit.NAME.crc32: codes, statistics). The double-quantization
// offset is the mean of the block absmax values: ours is the exact mean rounded once,
// torch's a float32 sum whose rounding depends on its vectorisation, so they may be an ulp
// apart, and that can move a statistic to the next code (~1e-3 of one block's scale). The
// statistics are then recomputed around bitsandbytes' offset, so that the model is the
// reference's and the comparison sees the rest of the arithmetic. Returns 0 or -1 with err.
static int quantize_as_bitsandbytes(Linear *l, const float *w, const SafeTensors *fx, const char *name, Nf4Agreement *agree,
                                    char *err) {
    char key[200];
    int64_t one[1] = {1}, two[1] = {2};
    snprintf(key, sizeof(key), "bnb4bit.%s.offset", name);
    const StTensor *offset = expect(fx, key, ST_F32, 1, one, err);
    snprintf(key, sizeof(key), "bnb4bit.%s.crc32", name);
    const StTensor *crc = offset ? expect(fx, key, ST_U32, 1, two, err) : NULL;
    if (!crc) return -1;
    Nf4Weight *q = &l->q;
    nf4_weight_quantize(q, w, l->out, l->in, 64, 1);  // Linear4bit's blocksize 64, double quantization
    size_t n = (size_t)l->out * l->in, nb = (n + 63) / 64, nb2 = (nb + NF4_DQ_BLOCKSIZE - 1) / NF4_DQ_BLOCKSIZE;
    if (memcmp(&q->offset, offset->data, sizeof(float))) {
        uint8_t *packed = xmalloc(n / 2 + 1);
        float *absmax = xmalloc(nb * sizeof(float));
        nf4_quantize(w, n, 64, packed, absmax);
        memcpy(&q->offset, offset->data, sizeof(float));
        nf4_quantize_absmax(absmax, nb, q->offset, q->code, q->qabsmax, q->absmax2);
        free(packed), free(absmax);
        agree->offsets_differ++;
    }
    uint32_t want[2];
    memcpy(want, crc->data, sizeof(want));
    uLong codes = crc32(0L, q->packed, (uInt)((n + 1) / 2));
    uLong stats = crc32(crc32(0L, q->qabsmax, (uInt)nb), (const Bytef *)q->absmax2, (uInt)(nb2 * sizeof(float)));
    agree->weights++;
    agree->mismatches += codes != want[0] || stats != want[1];
    return 0;
}

// The model of MODEL_DIR/config.json with the formula's frozen weights (NF4 when asked,
// checked against bitsandbytes' into agree).
static int generate_model(Model *m, const char *dir, const Recipe *r, const SafeTensors *fx, Nf4Agreement *agree,
                          char *err) {
    memset(m, 0, sizeof(*m));
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    if (model_config_load(&m->c, dir, err)) return -1;
    if (m->c.bnb_4bit) return set_error(err, "%s: a quantized checkpoint's config; generated weights need a float one", path);
    const ModelConfig *c = &m->c;
    int H = c->hidden_size, V = c->vocab_size;
    uint64_t seed = r->weights_seed;
    float bound = (float)(r->init_std * sqrt(3.0));
    m->embed = generated((size_t)V * H, seed, "model.embed_tokens.weight", bound);
    m->norm = generated_norm(H, seed, "model.norm.weight");
    m->head = c->tie_word_embeddings ? memcpy(xmalloc((size_t)V * H * sizeof(float)), m->embed, (size_t)V * H * sizeof(float))
                                     : generated((size_t)V * H, seed, "lm_head.weight", bound);
    m->layers = xcalloc((size_t)c->num_hidden_layers, sizeof(Layer));
    for (int i = 0; i < c->num_hidden_layers; i++) {
        Layer *L = &m->layers[i];
        char name[160];
        snprintf(name, sizeof(name), "model.layers.%d.input_layernorm.weight", i);
        L->ln1 = generated_norm(H, seed, name);
        snprintf(name, sizeof(name), "model.layers.%d.post_attention_layernorm.weight", i);
        L->ln2 = generated_norm(H, seed, name);
        for (int p = 0; p < N_PROJ; p++) {
            Linear *l = &L->proj[p];
            model_linear_shape(l, c, p);
            snprintf(name, sizeof(name), "model.layers.%d.%s.weight", i, proj_names[p]);
            l->w = generated((size_t)l->out * l->in, seed, name, bound);
            if (!r->nf4) continue;
            int rc = quantize_as_bitsandbytes(l, l->w, fx, name, agree, err);
            free(l->w);
            l->w = NULL;
            if (rc) return -1;
        }
    }
    return 0;
}

// LoRA on the recipe's targets, A and B from the formula.
static void lora_from_formula(Model *m, const Recipe *r) {
    model_lora_init(m, r->targets, r->lora_r, r->lora_alpha, r->rslora, 0);
    for (int i = 0; i < m->c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            Linear *l = &m->layers[i].proj[p];
            if (!l->A) continue;
            char key[200];
            peft_lora_key(key, sizeof(key), i, p, 0);
            hash_uniform(l->A, (size_t)r->lora_r * l->in, r->lora_seed, key, (float)(1.0 / sqrt((double)l->in)));
            peft_lora_key(key, sizeof(key), i, p, 1);
            hash_uniform(l->B, (size_t)l->out * r->lora_r, r->lora_seed, key, r->lora_b_bound);
        }
}

// ---------------------------------------------------------------------------------------
// the batch

// The batches as the model takes them: per optimizer step R rows of S tokens, each row one
// conversation at positions 0..S-1 or (packed) several, each with positions from 0;
// position s is trained on label s+1 when that is not -100. Micro-batch a of a step is rows
// [a R/A, (a+1) R/A).
typedef struct {
    int steps, R, S, A, T;  // steps, rows, positions per row, micro-batches, tokens per micro-batch
    const int32_t *ids;
    int32_t *pos, *seg, *targets;
    float *weights;
    double *n;  // labelled tokens per step
    int conversations;  // in step 1
} Batch;

static int read_batch(const SafeTensors *fx, int V, int steps, int A, Batch *b, char *err) {
    int64_t want[3] = {steps, -1, -1};
    const StTensor *ids = expect(fx, "input_ids", ST_I32, 3, want, err);
    const StTensor *labels = ids ? expect(fx, "labels", ST_I32, 3, ids->shape, err) : NULL;
    if (!labels) return -1;
    if (ids->numel < 1 || ids->numel > 1 << 24)
        return set_error(err, "%s: tensor 'input_ids': %lld tokens", fx->path, (long long)ids->numel);
    b->steps = steps, b->R = (int)ids->shape[1], b->S = (int)ids->shape[2], b->A = A;
    if (b->R % A) return set_error(err, "%s: tensor 'input_ids': %d rows do not split into %d micro-batches", fx->path, b->R, A);
    b->T = b->R / A * b->S;
    const StTensor *pos = st_find(fx, "position_ids"), *seg = st_find(fx, "segment_ids");
    if ((pos || seg) && (!(pos = expect(fx, "position_ids", ST_I32, 3, ids->shape, err)) ||
                         !(seg = expect(fx, "segment_ids", ST_I32, 3, ids->shape, err))))
        return -1;
    int n = (int)ids->numel, per_step = b->R * b->S;
    const int32_t *id = ids->data, *lab = labels->data, *p = pos ? pos->data : NULL, *s = seg ? seg->data : NULL;
    b->ids = id;
    b->pos = xmalloc((size_t)n * sizeof(int32_t));
    b->seg = xmalloc((size_t)n * sizeof(int32_t));
    b->targets = xmalloc((size_t)n * sizeof(int32_t));
    b->weights = xmalloc((size_t)n * sizeof(float));
    b->n = xcalloc((size_t)steps, sizeof(double));
    b->conversations = 0;
    for (int t = 0; t < n; t++) {
        int col = t % b->S, next = col + 1 < b->S ? lab[t + 1] : -100;
        if (id[t] < 0 || id[t] >= V)
            return set_error(err, "%s: tensor 'input_ids': id %d at %d is outside the model's vocabulary (%d)", fx->path,
                             id[t], t, V);
        if (lab[t] != -100 && (lab[t] < 0 || lab[t] >= V))
            return set_error(err, "%s: tensor 'labels': %d at %d is neither -100 nor an id", fx->path, lab[t], t);
        // a conversation's tokens are contiguous: ids 0, 1, ... along the row
        if (s && (col ? s[t] != s[t - 1] && s[t] != s[t - 1] + 1 : s[t] != 0))
            return set_error(err, "%s: tensor 'segment_ids': %d at %d does not continue the row's 0, 1, ...", fx->path,
                             s[t], t);
        if (p && p[t] < 0) return set_error(err, "%s: tensor 'position_ids': %d at %d is negative", fx->path, p[t], t);
        b->pos[t] = p ? p[t] : col;
        b->seg[t] = (t / b->S) * b->S + (s ? s[t] : 0);  // distinct across rows
        if (t < per_step) b->conversations += !col || b->seg[t] != b->seg[t - 1];
        b->targets[t] = next >= 0 ? next : 0;
        b->weights[t] = next >= 0 ? 1.0f : 0.0f;
        b->n[t / per_step] += b->weights[t];
    }
    for (int step = 0; step < steps; step++)
        if (b->n[step] == 0)
            return set_error(err, "%s: tensor 'labels': no position of step %d has a label to predict", fx->path, step + 1);
    return 0;
}

static ModelInput micro_batch(const Batch *b, int step, int a) {
    size_t o = (size_t)step * b->R * b->S + (size_t)a * b->T;
    return (ModelInput){b->T, b->ids + o, b->pos + o, b->seg + o, b->targets + o, b->weights + o};
}

static void batch_free(Batch *b) { free(b->pos), free(b->seg), free(b->targets), free(b->weights), free(b->n); }

// The fixture's dropout masks, fed to the model: for step `step`, micro-batch starting at
// token tok0, projection p of layer i, token t, input j: bit j of keep[i][p] at
// [step, tok0 + t]; a kept input is scaled by 1 / (1 - p).
typedef struct {
    const uint8_t **keep;  // [layers * N_PROJ], NULL where no adapter
    int tokens;            // R x S: one step's masks
    int step, tok0;
    float scale;
} GivenMasks;

static void given_masks(void *ctx, int layer, int proj, float *mask, int T, int in) {
    const GivenMasks *g = ctx;
    const uint8_t *k = g->keep[layer * N_PROJ + proj];
    size_t row = (size_t)(in + 7) / 8;
    for (int t = 0; t < T; t++) {
        const uint8_t *bits = k + ((size_t)g->step * g->tokens + g->tok0 + t) * row;
        for (int j = 0; j < in; j++) mask[(size_t)t * in + j] = bits[j / 8] >> (j % 8) & 1 ? g->scale : 0.0f;
    }
}

static int read_masks(const SafeTensors *fx, const Model *m, const Recipe *r, const Batch *b, GivenMasks *g, char *err) {
    g->keep = xcalloc((size_t)m->c.num_hidden_layers * N_PROJ, sizeof(*g->keep));
    g->tokens = b->R * b->S;
    g->scale = 1.0f / (1.0f - r->lora_dropout);
    for (int i = 0; i < m->c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            const Linear *l = &m->layers[i].proj[p];
            if (!l->A) continue;
            char name[160];
            snprintf(name, sizeof(name), "lora_dropout_keep.model.layers.%d.%s", i, proj_names[p]);
            int64_t shape[3] = {r->steps, g->tokens, (l->in + 7) / 8};
            const StTensor *t = expect(fx, name, ST_U8, 3, shape, err);
            if (!t) return -1;
            g->keep[i * N_PROJ + p] = t->data;
        }
    return 0;
}

// ---------------------------------------------------------------------------------------
// the comparisons

typedef struct {
    const SafeTensors *fx;
    double tol;
    int dry;  // only check that the fixture holds the tensors (before any work)
    int compared, failed;
} Checker;

// torch float32's error for comparison `index` of the fixture's tensor NAME; -1 with err
// when the fixture lacks it.
static int torch_error(const Checker *k, const char *name, int index, int count, double *e, char *err) {
    char key[256];
    snprintf(key, sizeof(key), "%s.torch_fp32_error", name);
    int64_t shape[1] = {count};
    const StTensor *t = expect(k->fx, key, ST_F64, 1, shape, err);
    if (t) memcpy(e, (const double *)t->data + index, sizeof(double));
    return t ? 0 : -1;
}

// (torch NaN: a comparison torch float32 has no part in)
static void report(Checker *k, const char *what, const char *detail, double error, double torch) {
    int fail = !(error <= k->tol);  // a NaN fails
    char t[16] = "-";
    if (!isnan(torch)) snprintf(t, sizeof(t), "%.2e", torch);
    printf("  %-40s %-26s error %.2e  torch fp32 %-8s  %s\n", what, detail, error, t, fail ? "FAIL" : "PASS");
    k->compared++;
    k->failed += fail;
}

// Ours against the truth NAME [count] (float64): comparison `index`.
static int check_number(Checker *k, const char *name, int index, int count, const char *what, double ours, char *err) {
    int64_t shape[1] = {count};
    const StTensor *t = expect(k->fx, name, ST_F64, 1, shape, err);
    double truth, torch;
    if (!t || torch_error(k, name, index, count, &torch, err)) return -1;
    if (k->dry) return 0;
    memcpy(&truth, (const double *)t->data + index, sizeof(double));
    char detail[64];
    snprintf(detail, sizeof(detail), "%.8g vs %.8g", ours, truth);
    report(k, what, detail, ours == truth ? 0.0 : fabs(ours - truth) / fabs(truth), torch);
    return 0;
}

// Ours against the truth NAME (float32, of this shape).
static int check_tensor(Checker *k, const char *name, int ndim, const int64_t *shape, const char *what, const float *ours,
                        char *err) {
    const StTensor *t = expect(k->fx, name, ST_F32, ndim, shape, err);
    double torch;
    if (!t || torch_error(k, name, 0, 1, &torch, err)) return -1;
    if (k->dry) return 0;
    char detail[64] = "[";
    for (int d = 0; d < ndim; d++) snprintf(detail + strlen(detail), sizeof(detail) - strlen(detail), "%s%lld", d ? ", " : "", (long long)shape[d]);
    strcat(detail, "]");
    report(k, what, detail, max_rel_error(ours, t->data, (size_t)t->numel), torch);
    return 0;
}

static int check_gradients(Checker *k, const Model *m, char *err) {
    for (int i = 0; i < m->c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            const Linear *l = &m->layers[i].proj[p];
            if (!l->A) continue;
            for (int is_b = 0; is_b < 2; is_b++) {
                char key[200], name[220], what[96];
                peft_lora_key(key, sizeof(key), i, p, is_b);
                snprintf(name, sizeof(name), "%s.grad", key);
                snprintf(what, sizeof(what), "grad layers.%d.%s.lora_%c", i, proj_names[p], is_b ? 'B' : 'A');
                int64_t shape[2] = {is_b ? l->out : m->lora_r, is_b ? m->lora_r : l->in};
                if (check_tensor(k, name, 2, shape, what, is_b ? l->dB : l->dA, err)) return -1;
            }
        }
    return 0;
}

// Before any work: the fixture holds every tensor the comparisons read, of its shape.
static int fixture_complete(Checker *k, const Model *m, const Batch *b, const Recipe *r, char *err) {
    int64_t shape[3] = {b->R, b->S, m->c.vocab_size};
    k->dry = 1;
    int rc = check_tensor(k, "logits", 3, shape, "", NULL, err) || check_gradients(k, m, err);
    for (int i = 0; i < r->steps && rc == 0; i++)
        rc = check_number(k, "adamw_losses", i, r->steps, "", 0, err) ||
             check_number(k, "adamw_grad_norms", i, r->steps, "", 0, err) ||
             check_number(k, "adamw_lrs", i, r->steps, "", 0, err);
    k->dry = 0;
    return rc;
}

// ---------------------------------------------------------------------------------------
// the optimizer steps

// The LoRA parameters in one list: value, gradient, AdamW moments, size.
typedef struct {
    int n;
    float **p, **g, **m, **v;
    size_t *size;
} Params;

static void params_init(Params *ps, Model *m) {
    int cap = 2 * m->c.num_hidden_layers * N_PROJ;
    ps->n = 0;
    ps->p = xmalloc(cap * sizeof(float *)), ps->g = xmalloc(cap * sizeof(float *));
    ps->m = xmalloc(cap * sizeof(float *)), ps->v = xmalloc(cap * sizeof(float *));
    ps->size = xmalloc(cap * sizeof(size_t));
    for (int i = 0; i < m->c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            Linear *l = &m->layers[i].proj[p];
            if (!l->A) continue;
            float *vals[2] = {l->A, l->B}, *grads[2] = {l->dA, l->dB};
            size_t sizes[2] = {(size_t)m->lora_r * l->in, (size_t)l->out * m->lora_r};
            for (int k = 0; k < 2; k++, ps->n++) {
                ps->p[ps->n] = vals[k], ps->g[ps->n] = grads[k], ps->size[ps->n] = sizes[k];
                ps->m[ps->n] = xcalloc(sizes[k], sizeof(float)), ps->v[ps->n] = xcalloc(sizes[k], sizeof(float));
            }
        }
}

static void params_free(Params *ps) {
    for (int i = 0; i < ps->n; i++) free(ps->m[i]), free(ps->v[i]);
    free(ps->p), free(ps->g), free(ps->m), free(ps->v), free(ps->size);
}

// Takes the recipe's optimizer steps (at most max_steps), comparing as it goes. Returns 0,
// or -1 with err when the fixture lacks a tensor.
static int check_steps(Checker *k, Model *m, const Batch *b, const Recipe *r, GivenMasks *masks, int max_steps, char *err) {
    int V = m->c.vocab_size, steps = r->steps < max_steps ? r->steps : max_steps, rc = 0;
    Params ps;
    params_init(&ps, m);
    float *logits = xmalloc((size_t)b->R * b->S * V * sizeof(float));
    for (int step = 1; step <= steps && rc == 0; step++) {
        for (int i = 0; i < ps.n; i++) memset(ps.g[i], 0, ps.size[i] * sizeof(float));
        double loss = 0.0, n = b->n[step - 1];
        masks->step = step - 1;
        for (int a = 0; a < b->A; a++) {
            ModelInput in = micro_batch(b, step - 1, a);
            masks->tok0 = a * b->T;
            loss += model_step(m, &in, (float)(1.0 / n), 1, step == 1 ? logits + (size_t)a * b->T * V : NULL);
        }
        loss /= n;
        if (step == 1) {
            int64_t shape[3] = {b->R, b->S, V};
            rc = check_tensor(k, "logits", 3, shape, "step 1: logits", logits, err) || check_gradients(k, m, err);
        }
        double norm = r->max_grad_norm > 0 ? grad_clip(ps.g, ps.size, ps.n, r->max_grad_norm)
                                            : grad_global_norm(ps.g, ps.size, ps.n);
        float lr = (float)(r->lr * schedule_multiplier(r->schedule, step - 1, r->warmup, r->steps));
        char what[3][64];
        snprintf(what[0], sizeof(what[0]), "step %d: loss", step);
        snprintf(what[1], sizeof(what[1]), "step %d: gradient norm", step);
        snprintf(what[2], sizeof(what[2]), "step %d: learning rate", step);
        rc = rc || check_number(k, "adamw_losses", step - 1, r->steps, what[0], loss, err) ||
             check_number(k, "adamw_grad_norms", step - 1, r->steps, what[1], norm, err) ||
             check_number(k, "adamw_lrs", step - 1, r->steps, what[2], lr, err);
        for (int i = 0; i < ps.n; i++) adamw_step(ps.p[i], ps.g[i], ps.m[i], ps.v[i], ps.size[i], step, lr, &r->opt);
    }
    free(logits);
    params_free(&ps);
    return rc;
}

// ---------------------------------------------------------------------------------------

static int parse_args(int argc, char **argv, const char **dir, const char **path, double *tol, int *max_steps) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(argv[i], "--tol") || !strcmp(argv[i], "--max-steps")) {
            char *end = NULL;
            double v = i + 1 < argc ? strtod(argv[i + 1], &end) : 0;
            if (!strcmp(argv[i], "--tol")) {
                if (!end || *end || !(v > 0)) return fprintf(stderr, "error: --tol needs a positive number (see --help)\n"), 1;
                *tol = v;
            } else {
                if (!end || *end || !(v >= 1 && v <= 1e6) || v != floor(v))
                    return fprintf(stderr, "error: --max-steps needs a whole number >= 1 (see --help)\n"), 1;
                *max_steps = (int)v;
            }
            i++;
        } else if (argv[i][0] == '-') {
            return fprintf(stderr, "error: unknown option %s (see --help)\n", argv[i]), 1;
        } else if (!*dir) {
            *dir = argv[i];
        } else if (!*path) {
            *path = argv[i];
        } else {
            return fprintf(stderr, "error: one MODEL_DIR and one FIXTURE expected (see --help)\n"), 1;
        }
    }
    if (!*path) return fprintf(stderr, "error: MODEL_DIR and FIXTURE are required (see --help)\n"), 1;
    return 0;
}

static void describe(const Model *m, const Recipe *r, const Batch *b, const char *dir, const char *path, double tol) {
    char desc[512];
    config_describe(&m->c, desc, sizeof(desc));
    printf("check_fixture: %s\n  model %s, fixture %s\n", desc, dir, path);
    printf("  frozen weights %s%s; LoRA r %d, alpha %g%s, dropout %g on %d projections per layer\n",
           r->generated ? "generated" : "from the model files", r->nf4 ? ", quantized to NF4" : " (float32)", r->lora_r,
           (double)r->lora_alpha, r->rslora ? ", rsLoRA" : "", (double)r->lora_dropout, __builtin_popcount(r->targets));
    double lo = b->n[0], hi = b->n[0];
    for (int s = 1; s < b->steps; s++) lo = fmin(lo, b->n[s]), hi = fmax(hi, b->n[s]);
    printf("  per step %d x %d tokens in %d micro-batch%s (step 1: %d conversations), %g to %g trained\n", b->R, b->S, b->A,
           b->A > 1 ? "es" : "", b->conversations, lo, hi);
    printf("  %d AdamW steps: lr %g, %s schedule, warmup %d, betas (%g, %g), eps %g, weight decay %g, clip %g; "
           "tolerance %g against float64\n",
           r->steps, (double)r->lr, r->schedule_name, r->warmup, (double)r->opt.beta1, (double)r->opt.beta2,
           (double)r->opt.eps, (double)r->opt.weight_decay, (double)r->max_grad_norm, tol);
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *dir = NULL, *path = NULL;
    double tol = 1e-4;
    int max_steps = 1000000;
    if (parse_args(argc, argv, &dir, &path, &tol, &max_steps)) return 1;
    char err[ERR_LEN];
    SafeTensors fx = {0};
    Recipe r;
    Model m = {0};
    Batch b = {0};
    GivenMasks masks = {0};
    Checker k = {&fx, tol, 0, 0, 0};
    Nf4Agreement agree = {0};
    int rc = st_open(&fx, path, err) || read_recipe(&fx, &r, err) ||
                     (r.generated ? generate_model(&m, dir, &r, &fx, &agree, err) : model_load(&m, dir, 0, err))
                 ? -1
                 : 0;
    if (rc == 0) {
        lora_from_formula(&m, &r);
        rc = read_batch(&fx, m.c.vocab_size, r.steps, r.grad_accum, &b, err) ||
                     (r.lora_dropout > 0 && read_masks(&fx, &m, &r, &b, &masks, err))
                 ? -1
                 : 0;
    }
    if (rc == 0 && fixture_complete(&k, &m, &b, &r, err)) rc = -1;
    if (rc == 0) {
        m.lora_dropout = r.lora_dropout;
        m.dropout_masks = given_masks, m.dropout_masks_ctx = &masks;
        describe(&m, &r, &b, dir, path, tol);
        if (r.nf4) {
            char detail[64];
            snprintf(detail, sizeof(detail), "%d of %d differ", agree.mismatches, agree.weights);
            printf("  NF4: %d of %d double-quantization offsets an ulp from bitsandbytes' (its offsets used)\n",
                   agree.offsets_differ, agree.weights);
            report(&k, "NF4 codes and statistics = bitsandbytes'", detail, agree.mismatches ? INFINITY : 0.0, NAN);
        }
        rc = check_steps(&k, &m, &b, &r, &masks, max_steps, err);
    }
    if (rc) fprintf(stderr, "error: %s\n", err);
    else printf("check_fixture: %s, %d comparisons, %d failed\n", k.failed ? "FAIL" : "PASS", k.compared, k.failed);
    free(masks.keep);
    batch_free(&b);
    if (fx.path) st_close(&fx);
    model_free(&m);
    return rc ? 1 : k.failed ? 2 : 0;
}
