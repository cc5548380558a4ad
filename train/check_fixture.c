/*
 * check_fixture.c: the `check_fixture` program, the CPU model (model.h) against what
 * transformers + PEFT + torch computed for the same model, fp32 vs fp32.
 *
 *   ./check_fixture MODEL_DIR FIXTURE [--tol T]
 *
 * FIXTURE is an expected.safetensors written by scripts/model_fixtures.py for MODEL_DIR
 * (the committed ones in test/fixtures/tiny/, or any configuration the script makes with
 * `one`). It carries everything besides the model: the LoRA settings (metadata lora_r,
 * lora_alpha, use_rslora, target_modules) and initial weights (keyed as in PEFT's adapter
 * file), the batch (input_ids and labels [B, S], -100 = no loss; row b is one sequence at
 * positions 0..S-1), the AdamW settings (adamw_lr, adamw_beta1, adamw_beta2, adamw_eps,
 * adamw_weight_decay, adamw_steps), and the reference results. The program
 *   1. loads MODEL_DIR (float32 frozen weights) and the LoRA weights from the fixture;
 *   2. runs one forward and backward pass over the batch, the loss being transformers'
 *      ForCausalLMLoss: the mean over positions s whose label s+1 is not -100 of the
 *      cross-entropy of label s+1, and compares the logits, the loss and the gradient of
 *      every LoRA A and B with the fixture's;
 *   3. takes adamw_steps steps of torch.optim.AdamW on the LoRA weights, the same batch
 *      each step, and compares the loss before each step with the fixture's adamw_losses.
 * Every comparison prints one line with its error and PASS or FAIL. The error of a tensor
 * is max |ours - ref| / max |ref| over the tensor (relative to its scale, so that
 * near-zero elements do not dominate); of a loss, |ours - ref| / |ref|. The tolerance,
 * 1e-4 unless --tol says otherwise, is for fp32 against fp32 with different summation
 * orders, which lands near 1e-6 on the committed fixtures.
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

#include "adamw.h"
#include "model.h"
#include "peft_adapter.h"
#include "safetensors.h"

static void usage(FILE *f) {
    fprintf(f, "usage: ./check_fixture MODEL_DIR FIXTURE [--tol T]\n"
               "Compares the CPU model on MODEL_DIR with a fixture written by scripts/model_fixtures.py\n"
               "(logits, loss, every LoRA gradient, the losses of AdamW steps); one line per comparison.\n"
               "  --tol T   relative tolerance of every comparison (default 1e-4)\n"
               "Exit status 0: all pass; 2: a comparison fails; 1: bad input.\n");
}

// What the fixture's metadata prescribes.
typedef struct {
    int lora_r, rslora, steps;
    float lora_alpha;
    unsigned targets;
    float lr;
    AdamWConfig opt;
} Recipe;

// A metadata value as a number. Returns 0, or -1 with err.
static int meta_number(const cJSON *meta, const char *key, double *v, const char *path, char *err) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(meta, key);
    char *end = NULL;
    if (cJSON_IsString(f)) *v = strtod(f->valuestring, &end);
    if (!end || end == f->valuestring || *end || !isfinite(*v))
        return set_error(err, "%s: metadata \"%s\": missing or not a number", path, key);
    return 0;
}

static int read_recipe(const SafeTensors *fx, Recipe *r, char *err) {
    cJSON *meta = fx->metadata_json ? cJSON_Parse(fx->metadata_json) : NULL;
    double rank, alpha, lr, b1, b2, eps, wd, steps;
    int rc = meta_number(meta, "lora_r", &rank, fx->path, err) || meta_number(meta, "lora_alpha", &alpha, fx->path, err) ||
             meta_number(meta, "adamw_lr", &lr, fx->path, err) || meta_number(meta, "adamw_beta1", &b1, fx->path, err) ||
             meta_number(meta, "adamw_beta2", &b2, fx->path, err) || meta_number(meta, "adamw_eps", &eps, fx->path, err) ||
             meta_number(meta, "adamw_weight_decay", &wd, fx->path, err) ||
             meta_number(meta, "adamw_steps", &steps, fx->path, err)
                 ? -1
                 : 0;
    const cJSON *targets = cJSON_GetObjectItemCaseSensitive(meta, "target_modules");
    const cJSON *rslora = cJSON_GetObjectItemCaseSensitive(meta, "use_rslora");
    if (rc == 0 && (rank < 1 || rank > 4096 || rank != floor(rank)))
        rc = set_error(err, "%s: metadata \"lora_r\": not a rank in 1..4096", fx->path);
    else if (rc == 0 && (steps < 0 || steps > 1000000 || steps != floor(steps)))
        rc = set_error(err, "%s: metadata \"adamw_steps\": not a step count", fx->path);
    else if (rc == 0 && !(alpha > 0))
        rc = set_error(err, "%s: metadata \"lora_alpha\": not positive", fx->path);
    else if (rc == 0 && (!cJSON_IsString(targets) || model_parse_targets(targets->valuestring, &r->targets)))
        rc = set_error(err, "%s: metadata \"target_modules\": not a list of projections", fx->path);
    else if (rc == 0 && (!cJSON_IsString(rslora) || (strcmp(rslora->valuestring, "true") && strcmp(rslora->valuestring, "false"))))
        rc = set_error(err, "%s: metadata \"use_rslora\": not true or false", fx->path);
    if (rc == 0) {
        r->lora_r = (int)rank;
        r->lora_alpha = (float)alpha;
        r->rslora = strcmp(rslora->valuestring, "true") == 0;
        r->steps = (int)steps;
        r->lr = (float)lr;
        r->opt = (AdamWConfig){(float)b1, (float)b2, (float)eps, (float)wd};
    }
    cJSON_Delete(meta);
    return rc;
}

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

// The batch as the model takes it: B rows of S tokens, each its own sequence; position s
// is trained on label s+1 when that is not -100 (transformers shifts the labels).
typedef struct {
    int B, S, T;
    int32_t *pos, *seg, *targets;
    float *weights;
    float n;  // trained positions
    ModelInput in;
} Batch;

static int read_batch(const SafeTensors *fx, int V, Batch *b, char *err) {
    int64_t any[2] = {-1, -1};
    const StTensor *ids = expect(fx, "input_ids", ST_I32, 2, any, err);
    const StTensor *labels = ids ? expect(fx, "labels", ST_I32, 2, ids->shape, err) : NULL;
    if (!labels) return -1;
    if (ids->numel < 1 || ids->numel > 1 << 24)
        return set_error(err, "%s: tensor 'input_ids': %lld tokens", fx->path, (long long)ids->numel);
    b->B = (int)ids->shape[0], b->S = (int)ids->shape[1], b->T = b->B * b->S;
    const int32_t *id = ids->data, *lab = labels->data;
    for (int t = 0; t < b->T; t++) {
        if (id[t] < 0 || id[t] >= V)
            return set_error(err, "%s: tensor 'input_ids': id %d at %d is outside the model's vocabulary (%d)", fx->path,
                             id[t], t, V);
        if (lab[t] != -100 && (lab[t] < 0 || lab[t] >= V))
            return set_error(err, "%s: tensor 'labels': %d at %d is neither -100 nor an id", fx->path, lab[t], t);
    }
    b->pos = xmalloc((size_t)b->T * sizeof(int32_t));
    b->seg = xmalloc((size_t)b->T * sizeof(int32_t));
    b->targets = xmalloc((size_t)b->T * sizeof(int32_t));
    b->weights = xmalloc((size_t)b->T * sizeof(float));
    b->n = 0;
    for (int t = 0; t < b->T; t++) {
        int s = t % b->S, next = s + 1 < b->S ? lab[t + 1] : -100;
        b->pos[t] = s, b->seg[t] = t / b->S;
        b->targets[t] = next >= 0 ? next : 0;
        b->weights[t] = next >= 0 ? 1.0f : 0.0f;
        b->n += b->weights[t];
    }
    b->in = (ModelInput){b->T, id, b->pos, b->seg, b->targets, b->weights};
    if (b->n == 0) return set_error(err, "%s: tensor 'labels': no position has a label to predict", fx->path);
    return 0;
}

static void batch_free(Batch *b) { free(b->pos), free(b->seg), free(b->targets), free(b->weights); }

static int compared;  // comparisons reported

// Prints one comparison; returns 1 when it fails.
static int report(const char *what, const char *detail, double error, double tol) {
    int fail = !(error <= tol);  // a NaN fails
    printf("  %-38s %-24s error %.2e  %s\n", what, detail, error, fail ? "FAIL" : "PASS");
    compared++;
    return fail;
}

static void zero_grads(Model *m) {
    for (int i = 0; i < m->c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            Linear *l = &m->layers[i].proj[p];
            if (!l->A) continue;
            memset(l->dA, 0, (size_t)m->lora_r * l->in * sizeof(float));
            memset(l->dB, 0, (size_t)l->out * m->lora_r * sizeof(float));
        }
}

// Step 2: logits, loss and every LoRA gradient. Returns the number of failures, or -1
// with err when the fixture lacks a tensor.
static int check_step(Model *m, const SafeTensors *fx, const Batch *b, double tol, char *err) {
    int V = m->c.vocab_size, failed = 0;
    int64_t logits_shape[3] = {b->B, b->S, V}, one[1] = {1};
    const StTensor *want_logits = expect(fx, "logits", ST_F32, 3, logits_shape, err);
    const StTensor *want_loss = want_logits ? expect(fx, "loss", ST_F32, 1, one, err) : NULL;
    if (!want_loss) return -1;
    float *logits = xmalloc((size_t)b->T * V * sizeof(float));
    zero_grads(m);
    double loss = model_step(m, &b->in, 1.0f / b->n, 1, logits) / b->n;
    float wl;
    memcpy(&wl, want_loss->data, sizeof(float));
    char detail[64];
    snprintf(detail, sizeof(detail), "[%d, %d, %d]", b->B, b->S, V);
    failed += report("logits", detail, max_rel_error(logits, want_logits->data, (size_t)b->T * V), tol);
    snprintf(detail, sizeof(detail), "%.7g vs %.7g", loss, (double)wl);
    failed += report("loss", detail, fabs(loss - wl) / fabs((double)wl), tol);
    free(logits);
    for (int i = 0; i < m->c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            const Linear *l = &m->layers[i].proj[p];
            if (!l->A) continue;
            for (int k = 0; k < 2; k++) {
                char key[200], name[220];
                peft_lora_key(key, sizeof(key), i, p, k);
                snprintf(name, sizeof(name), "%s.grad", key);
                int64_t shape[2] = {k ? l->out : m->lora_r, k ? m->lora_r : l->in};
                const StTensor *g = expect(fx, name, ST_F32, 2, shape, err);
                if (!g) return -1;
                snprintf(name, sizeof(name), "grad layers.%d.%s.lora_%c", i, proj_names[p], k ? 'B' : 'A');
                snprintf(detail, sizeof(detail), "[%lld, %lld]", (long long)shape[0], (long long)shape[1]);
                failed += report(name, detail, max_rel_error(k ? l->dB : l->dA, g->data, (size_t)g->numel), tol);
            }
        }
    return failed;
}

// Step 3: AdamW on every LoRA A and B, the loss before each step against torch's.
static int check_adamw(Model *m, const SafeTensors *fx, const Batch *b, const Recipe *r, double tol, char *err) {
    int64_t shape[1] = {r->steps};
    const StTensor *want = expect(fx, "adamw_losses", ST_F32, 1, shape, err);
    if (!want) return -1;
    int n_lin = m->c.num_hidden_layers * N_PROJ, failed = 0;
    float **state = xcalloc((size_t)n_lin * 4, sizeof(float *));  // m and v of A, m and v of B
    for (int step = 1; step <= r->steps; step++) {
        zero_grads(m);
        double loss = model_step(m, &b->in, 1.0f / b->n, 1, NULL) / b->n;
        float w;
        memcpy(&w, (const float *)want->data + step - 1, sizeof(float));
        char what[64], detail[64];
        snprintf(what, sizeof(what), "AdamW: loss before step %d", step);
        snprintf(detail, sizeof(detail), "%.7g vs %.7g", loss, (double)w);
        failed += report(what, detail, fabs(loss - w) / fabs((double)w), tol);
        for (int i = 0; i < n_lin; i++) {
            Linear *l = &m->layers[i / N_PROJ].proj[i % N_PROJ];
            if (!l->A) continue;
            float **s = state + 4 * i;
            size_t na = (size_t)m->lora_r * l->in, nb = (size_t)l->out * m->lora_r;
            if (!s[0]) s[0] = xcalloc(na, 4), s[1] = xcalloc(na, 4), s[2] = xcalloc(nb, 4), s[3] = xcalloc(nb, 4);
            adamw_step(l->A, l->dA, s[0], s[1], na, step, r->lr, &r->opt);
            adamw_step(l->B, l->dB, s[2], s[3], nb, step, r->lr, &r->opt);
        }
    }
    for (int i = 0; i < n_lin * 4; i++) free(state[i]);
    free(state);
    return failed;
}

int main(int argc, char **argv) {
    const char *dir = NULL, *path = NULL;
    double tol = 1e-4;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--tol")) {
            char *end = NULL;
            if (i + 1 < argc) tol = strtod(argv[++i], &end);
            if (!end || *end || !(tol > 0)) {
                fprintf(stderr, "error: --tol needs a positive number (see --help)\n");
                return 1;
            }
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "error: unknown option %s (see --help)\n", argv[i]);
            return 1;
        } else if (!dir) {
            dir = argv[i];
        } else if (!path) {
            path = argv[i];
        } else {
            fprintf(stderr, "error: one MODEL_DIR and one FIXTURE expected (see --help)\n");
            return 1;
        }
    }
    if (!path) {
        fprintf(stderr, "error: MODEL_DIR and FIXTURE are required (see --help)\n");
        return 1;
    }
    char err[ERR_LEN], desc[512];
    Model m;
    SafeTensors fx;
    Recipe r;
    Batch b = {0};
    if (model_load(&m, dir, 0, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    int failed = 0;
    if (st_open(&fx, path, err)) {
        failed = -1;
    } else if (read_recipe(&fx, &r, err)) {
        failed = -1;
    } else {
        model_lora_init(&m, r.targets, r.lora_r, r.lora_alpha, r.rslora, 0);
        failed = peft_lora_read(&m, &fx, err) || read_batch(&fx, m.c.vocab_size, &b, err) ? -1 : 0;
    }
    if (failed == 0) {
        config_describe(&m.c, desc, sizeof(desc));
        printf("check_fixture: %s\n  model %s\n  fixture %s\n", desc, dir, path);
        printf("  batch %d x %d (%g positions trained); LoRA r %d, alpha %g%s; AdamW lr %g, betas (%g, %g), eps %g, "
               "weight decay %g, %d steps; tolerance %g\n",
               b.B, b.S, (double)b.n, r.lora_r, (double)r.lora_alpha, r.rslora ? ", rsLoRA" : "", (double)r.lr,
               (double)r.opt.beta1, (double)r.opt.beta2, (double)r.opt.eps, (double)r.opt.weight_decay, r.steps, tol);
        int f1 = check_step(&m, &fx, &b, tol, err);
        int f2 = f1 < 0 ? -1 : check_adamw(&m, &fx, &b, &r, tol, err);
        failed = f1 < 0 || f2 < 0 ? -1 : f1 + f2;
    }
    if (failed < 0) fprintf(stderr, "error: %s\n", err);
    else printf("check_fixture: %s, %d comparisons, %d failed\n", failed ? "FAIL" : "PASS", compared, failed);
    batch_free(&b);
    if (fx.path) st_close(&fx);
    model_free(&m);
    return failed < 0 ? 1 : failed ? 2 : 0;
}
