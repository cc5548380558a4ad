/*
 * train_cpu.c: QLoRA fine-tuning of a Mistral/Llama model on the CPU, the readable
 * reference of what train_gpu computes (llm.c's train_gpt2.c in spirit).
 *
 *   ./train_cpu --model DIR --train SHARD... [--val SHARD...] --out RUN_DIR [options]
 *
 * One optimizer step: grad_accum micro-batches of B rows x T positions from the dataloader
 * (packed conversations, data/dataloader.h); the loss is the sum of cross-entropies of the
 * trained targets of the whole step divided by their number (so every trained token of the
 * step weighs the same, however the micro-batches split them); LoRA gradients, clipping by
 * global norm, AdamW with the learning rate of the schedule. Frozen weights are NF4 (or
 * float with --no-nf4).
 *
 * The run directory:
 *   log.jsonl                 {"step", "loss", "lr", "grad_norm", "trained", "tokens_per_s"} per
 *                             step, {"step", "val_loss", "val_trained"} per evaluation
 *   samples.jsonl             {"step", "prompt", "text"} for each probe prompt
 *   checkpoint.safetensors    LoRA weights, AdamW moments, the step, the dataloader's and the
 *                             sampler's state, the settings that must not change, a CRC32
 *   adapter/                  the adapter in PEFT's format, written at the end
 * A run directory with a checkpoint is resumed: the log is cut back to the checkpoint's step
 * and training continues exactly as if it had never stopped (same batches, same numbers).
 * SIGINT and SIGTERM finish the current step, write a checkpoint and exit.
 */
#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

#include <cjson/cJSON.h>
#include <omp.h>

#include "../common/util.h"
#include "../data/dataloader.h"
#include "../tokenizer/chat.h"
#include "adamw.h"
#include "generate.h"
#include "matmul.h"
#include "model.h"
#include "peft_adapter.h"
#include "safetensors.h"
#include "schedule.h"

#define MAX_SHARDS 256

typedef struct {
    const char *model, *out, *tokenizer, *targets, *schedule, *prompts, *matmul_kernel;
    const char *train[MAX_SHARDS], *val[MAX_SHARDS];
    int n_train, n_val;
    int seq_len, batch, grad_accum, steps, warmup, lora_r, rslora, no_nf4, threads;
    int eval_every, sample_every, sample_tokens, checkpoint_every;
    float lr, weight_decay, clip, lora_alpha, lora_dropout, temperature, top_p;
    uint64_t seed;
} Options;

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { stop_requested = sig; }

static void usage(FILE *f) {
    fprintf(f,
            "usage: train_cpu --model DIR --train SHARD [--train SHARD ...] --out RUN_DIR [options]\n"
            "\n"
            "QLoRA fine-tuning on the CPU (the reference implementation).\n"
            "\n"
            "  --model DIR|FILE       Hugging Face model directory (safetensors, or bitsandbytes 4-bit),\n"
            "                         or a GGUF file (Llama architecture)\n"
            "  --train SHARD          a training shard written by prep (repeatable: each is a source)\n"
            "  --val SHARD            a validation shard (repeatable)\n"
            "  --out DIR              run directory; resumed if it holds a checkpoint\n"
            "  --tokenizer FILE       the tokenizer the shards were made with (checks their\n"
            "                         fingerprint; needed for --prompts)\n"
            "  --seq-len T            positions per row (default 512)\n"
            "  --batch B              rows per micro-batch (default 4)\n"
            "  --grad-accum N         micro-batches per optimizer step (default 1)\n"
            "  --steps N              optimizer steps (default 100)\n"
            "  --lr LR                peak learning rate (default 2e-4)\n"
            "  --schedule S           constant, linear or cosine (default cosine)\n"
            "  --warmup N             warmup steps (default 10)\n"
            "  --weight-decay W       AdamW decoupled weight decay (default 0)\n"
            "  --clip C               clip gradients to this global norm; 0 = off (default 1.0)\n"
            "  --lora-r R             LoRA rank (default 16)\n"
            "  --lora-alpha A         LoRA alpha; scale = alpha / r (default 32)\n"
            "  --rslora               scale = alpha / sqrt(r)\n"
            "  --lora-dropout P       dropout on the LoRA input while training (default 0)\n"
            "  --lora-targets LIST    comma list of q,k,v,o,gate,up,down or \"all\" (default all)\n"
            "  --no-nf4               keep frozen weights in float32 (plain LoRA, not QLoRA)\n"
            "  --seed N               data order and LoRA init (default 1)\n"
            "  --threads N            OpenMP threads (default: OMP_NUM_THREADS, else every core);\n"
            "                         the numbers are the same for any N\n"
            "  --matmul-kernel K      auto, avx512, avx2 or generic (default auto: the fastest this\n"
            "                         CPU runs); to measure or test a slower one\n"
            "  --eval-every N         evaluate on --val every N steps and at the end; 0 = only at the end\n"
            "  --checkpoint-every N   write a checkpoint every N steps (default 50; always at the end)\n"
            "  --prompts FILE         persona probe prompts, one per line, answered every\n"
            "                         --sample-every steps into samples.jsonl\n"
            "  --sample-every N       (default 0: only at the end when --prompts is given)\n"
            "  --sample-tokens N      tokens per answer (default 64)\n"
            "  --temperature T        0 = greedy (default 0)\n"
            "  --top-p P              nucleus sampling mass (default 1.0)\n");
}

// ---------------------------------------------------------------------------------------
// arguments

static int parse_args(int argc, char **argv, Options *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); exit(0); }
        if (!strcmp(a, "--rslora")) { o->rslora = 1; continue; }
        if (!strcmp(a, "--no-nf4")) { o->no_nf4 = 1; continue; }
        if (!v) {
            fprintf(stderr, "error: unknown option or missing value: %s (see --help)\n", a);
            return -1;
        }
        i++;
        if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--tokenizer")) o->tokenizer = v;
        else if (!strcmp(a, "--train") && o->n_train < MAX_SHARDS) o->train[o->n_train++] = v;
        else if (!strcmp(a, "--val") && o->n_val < MAX_SHARDS) o->val[o->n_val++] = v;
        else if (!strcmp(a, "--seq-len")) o->seq_len = atoi(v);
        else if (!strcmp(a, "--batch")) o->batch = atoi(v);
        else if (!strcmp(a, "--grad-accum")) o->grad_accum = atoi(v);
        else if (!strcmp(a, "--steps")) o->steps = atoi(v);
        else if (!strcmp(a, "--lr")) o->lr = strtof(v, NULL);
        else if (!strcmp(a, "--schedule")) o->schedule = v;
        else if (!strcmp(a, "--warmup")) o->warmup = atoi(v);
        else if (!strcmp(a, "--weight-decay")) o->weight_decay = strtof(v, NULL);
        else if (!strcmp(a, "--clip")) o->clip = strtof(v, NULL);
        else if (!strcmp(a, "--lora-r")) o->lora_r = atoi(v);
        else if (!strcmp(a, "--lora-alpha")) o->lora_alpha = strtof(v, NULL);
        else if (!strcmp(a, "--lora-dropout")) o->lora_dropout = strtof(v, NULL);
        else if (!strcmp(a, "--lora-targets")) o->targets = v;
        else if (!strcmp(a, "--seed")) o->seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--matmul-kernel")) o->matmul_kernel = v;
        else if (!strcmp(a, "--threads")) o->threads = atoi(v) > 0 ? atoi(v) : -1;  // -1: refused below
        else if (!strcmp(a, "--eval-every")) o->eval_every = atoi(v);
        else if (!strcmp(a, "--checkpoint-every")) o->checkpoint_every = atoi(v);
        else if (!strcmp(a, "--prompts")) o->prompts = v;
        else if (!strcmp(a, "--sample-every")) o->sample_every = atoi(v);
        else if (!strcmp(a, "--sample-tokens")) o->sample_tokens = atoi(v);
        else if (!strcmp(a, "--temperature")) o->temperature = strtof(v, NULL);
        else if (!strcmp(a, "--top-p")) o->top_p = strtof(v, NULL);
        else {
            fprintf(stderr, "error: unknown option: %s (see --help)\n", a);
            return -1;
        }
    }
    const char *bad = !o->model ? "--model is required"
                      : !o->n_train ? "at least one --train shard is required"
                      : !o->out ? "--out is required"
                      : o->seq_len < 2 ? "--seq-len must be at least 2"
                      : o->batch < 1 || o->grad_accum < 1 || o->steps < 1 ? "--batch, --grad-accum and --steps must be positive"
                      : !(o->lr > 0) ? "--lr must be positive"
                      : o->lora_r < 1 || !(o->lora_alpha > 0) ? "--lora-r and --lora-alpha must be positive"
                      : !(o->lora_dropout >= 0 && o->lora_dropout < 1) ? "--lora-dropout must be in [0, 1)"
                      : o->prompts && !o->tokenizer ? "--prompts needs --tokenizer"
                      : !(o->top_p > 0 && o->top_p <= 1) ? "--top-p must be in (0, 1]"
                      : o->threads < 0 ? "--threads must be positive"
                      : NULL;
    if (bad) {
        fprintf(stderr, "error: %s (see --help)\n", bad);
        return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------
// the trainable state: LoRA weights and AdamW moments, as one flat list of tensors

typedef struct {
    float *p, *g, *m, *v;
    size_t n;
    char name[96];
} Param;

static int collect_params(Model *m, Param **out) {
    int n = 0;
    *out = xcalloc((size_t)m->c.num_hidden_layers * N_PROJ * 2 + 1, sizeof(Param));
    for (int i = 0; i < m->c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            Linear *l = &m->layers[i].proj[p];
            if (!l->A) continue;
            for (int k = 0; k < 2; k++) {
                Param *q = &(*out)[n++];
                q->n = k ? (size_t)l->out * m->lora_r : (size_t)m->lora_r * l->in;
                q->p = k ? l->B : l->A;
                q->g = k ? l->dB : l->dA;
                q->m = xcalloc(q->n, sizeof(float));
                q->v = xcalloc(q->n, sizeof(float));
                snprintf(q->name, sizeof(q->name), "layers.%d.%s.lora_%c", i, proj_short[p], k ? 'B' : 'A');
            }
        }
    return n;
}

// What a checkpoint must agree on with the run that resumes it.
static void settings_json(const Options *o, unsigned targets, char *out, size_t n) {
    snprintf(out, n,
             "{\"seq_len\": %d, \"batch\": %d, \"grad_accum\": %d, \"lora_r\": %d, \"lora_alpha\": %.9g, "
             "\"lora_dropout\": %.9g, \"rslora\": %d, \"targets\": %u, \"seed\": %llu, \"nf4\": %d, \"n_train\": %d}",
             o->seq_len, o->batch, o->grad_accum, o->lora_r, (double)o->lora_alpha, (double)o->lora_dropout, o->rslora,
             targets, (unsigned long long)o->seed, !o->no_nf4, o->n_train);
}

// ---------------------------------------------------------------------------------------
// checkpoints

typedef struct {
    int64_t step;
    uint64_t sample_rng, dropout_rng;
} RunState;

static uint32_t crc_of(const StWrite *w, int n) {
    uLong crc = crc32(0L, Z_NULL, 0);
    for (int i = 0; i < n; i++) {
        size_t bytes = st_dtype_size(w[i].dtype);
        for (int d = 0; d < w[i].ndim; d++) bytes *= (size_t)w[i].shape[d];
        crc = crc32(crc, w[i].data, (uInt)bytes);
    }
    return (uint32_t)crc;
}

static int checkpoint_save(const char *path, const Param *ps, int n, const Dataloader *dl, const RunState *rs,
                           const char *settings, char *err) {
    StWrite *w = xcalloc((size_t)n * 3 + 2, sizeof(StWrite));
    char (*names)[112] = xcalloc((size_t)n * 3 + 2, sizeof(*names));
    int k = 0;
    for (int i = 0; i < n; i++) {
        const float *bufs[3] = {ps[i].p, ps[i].m, ps[i].v};
        static const char *what[3] = {"", ".adam_m", ".adam_v"};
        for (int j = 0; j < 3; j++) {
            snprintf(names[k], sizeof(names[k]), "%s%s", ps[i].name, what[j]);
            w[k] = (StWrite){names[k], ST_F32, 1, {(int64_t)ps[i].n}, bufs[j]};
            k++;
        }
    }
    size_t ds = dataloader_state_size(dl);
    uint8_t *dstate = xmalloc(ds);
    dataloader_state_save(dl, dstate);
    int64_t scalars[3] = {rs->step, (int64_t)rs->sample_rng, (int64_t)rs->dropout_rng};
    w[k++] = (StWrite){"run.dataloader", ST_U8, 1, {(int64_t)ds}, dstate};
    w[k++] = (StWrite){"run.scalars", ST_I64, 1, {3}, scalars};
    char crc[16];
    snprintf(crc, sizeof(crc), "%08x", crc_of(w, k));
    const char *keys[] = {"format", "settings", "crc32"}, *values[] = {"persona.c checkpoint v1", settings, crc};
    int rc = st_write(path, w, k, keys, values, 3, err);
    free(w), free(names), free(dstate);
    return rc;
}

// A string value of the checkpoint's metadata (NULL if absent); free() it.
static char *metadata_string(const SafeTensors *st, const char *key) {
    cJSON *meta = st->metadata_json ? cJSON_Parse(st->metadata_json) : NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, key);
    char *out = cJSON_IsString(v) ? xstrdup(v->valuestring) : NULL;
    cJSON_Delete(meta);
    return out;
}

static int checkpoint_load(const char *path, Param *ps, int n, Dataloader *dl, RunState *rs, const char *settings,
                           char *err) {
    SafeTensors st;
    if (st_open(&st, path, err)) return -1;
    int rc = 0;
    char *saved_settings = metadata_string(&st, "settings"), *saved_crc = metadata_string(&st, "crc32");
    if (!saved_settings || !saved_crc)
        rc = set_error(err, "%s: not a persona.c checkpoint (no settings or crc32 metadata)", path);
    else if (strcmp(saved_settings, settings) != 0)
        rc = set_error(err, "%s: made with other settings (%s); resume with the same --seq-len, --batch, "
                            "--grad-accum, LoRA and data options, or use another --out", path, saved_settings);
    StWrite *w = xcalloc((size_t)n * 3 + 2, sizeof(StWrite));
    int k = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        static const char *what[3] = {"", ".adam_m", ".adam_v"};
        for (int j = 0; j < 3 && rc == 0; j++) {
            char name[112];
            snprintf(name, sizeof(name), "%s%s", ps[i].name, what[j]);
            const StTensor *t = st_find(&st, name);
            if (!t || t->dtype != ST_F32 || (size_t)t->numel != ps[i].n) {
                rc = set_error(err, "%s: tensor '%s' is missing or of the wrong size", path, name);
                break;
            }
            w[k++] = (StWrite){t->name, ST_F32, 1, {t->numel}, t->data};
        }
    }
    const StTensor *dstate = st_find(&st, "run.dataloader"), *scal = st_find(&st, "run.scalars");
    if (rc == 0 && (!dstate || dstate->dtype != ST_U8 || !scal || scal->dtype != ST_I64 || scal->numel != 3))
        rc = set_error(err, "%s: the run state is missing", path);
    if (rc == 0) {
        w[k++] = (StWrite){dstate->name, ST_U8, 1, {dstate->numel}, dstate->data};
        w[k++] = (StWrite){scal->name, ST_I64, 1, {3}, scal->data};
        char crc[16];
        snprintf(crc, sizeof(crc), "%08x", crc_of(w, k));
        if (strcmp(crc, saved_crc) != 0) rc = set_error(err, "%s: CRC32 mismatch: the checkpoint is damaged", path);
    }
    if (rc == 0 && dataloader_state_restore(dl, dstate->data, dstate->nbytes, err)) rc = -1;
    if (rc == 0) {  // only now, when everything checked out, touch the model
        for (int i = 0, j = 0; i < n; i++, j += 3) {
            memcpy(ps[i].p, w[j].data, ps[i].n * sizeof(float));
            memcpy(ps[i].m, w[j + 1].data, ps[i].n * sizeof(float));
            memcpy(ps[i].v, w[j + 2].data, ps[i].n * sizeof(float));
        }
        int64_t scalars[3];
        memcpy(scalars, scal->data, sizeof(scalars));
        rs->step = scalars[0];
        rs->sample_rng = (uint64_t)scalars[1];
        rs->dropout_rng = (uint64_t)scalars[2];
    }
    free(saved_settings), free(saved_crc), free(w);
    st_close(&st);
    return rc;
}

// ---------------------------------------------------------------------------------------
// the run directory's log

// Keeps the lines of log.jsonl whose "step" is at most `step` (a resumed run rewrites
// what came after its checkpoint, so the log reads as one uninterrupted run).
static int log_truncate(const char *path, int64_t step, char *err) {
    size_t len;
    char e2[ERR_LEN];
    char *text = read_file(path, &len, e2);
    if (!text) return 0;  // no log yet
    ByteBuf keep = {0};
    for (char *line = text, *end = text + len; line < end;) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t n = nl ? (size_t)(nl - line) + 1 : (size_t)(end - line);
        cJSON *j = cJSON_ParseWithLength(line, n);
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "step");
        if (cJSON_IsNumber(s) && s->valuedouble <= (double)step) bytebuf_append(&keep, line, n);
        cJSON_Delete(j);
        line += n;
    }
    FILE *f = fopen(path, "w");
    int rc = !f || (keep.len && fwrite(keep.data, 1, keep.len, f) != keep.len);
    if (f && fclose(f)) rc = 1;
    free(text);
    bytebuf_free(&keep);
    return rc ? set_error(err, "%s: cannot rewrite: %s", path, strerror(errno)) : 0;
}

static void log_line(FILE *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(FILE *log, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(log, fmt, ap);
    va_end(ap);
    fputc('\n', log);
    fflush(log);
}

// ---------------------------------------------------------------------------------------
// batches into the model

// The rows of a batch that hold data, as one model input: the rows one after the other,
// their segment ids made distinct across rows (padding too), so attention stays inside each
// row exactly as if the rows ran one by one (positions are row-local already). One call
// for the whole batch lets every matrix product work on all its tokens at once.
static double run_batch(Model *m, const Batch *b, float grad_scale, int backward) {
    int n = b->rows * b->T;
    int32_t *seg = xmalloc((size_t)(n ? n : 1) * sizeof(int32_t));
    for (int r = 0; r < b->rows; r++)
        for (int t = 0; t < b->T; t++) {
            int32_t s = b->segments[(size_t)r * b->T + t];  // 0, 1, ... < T in the row; -1 on padding
            seg[(size_t)r * b->T + t] = s < 0 ? -1 - r : s + r * b->T;
        }
    ModelInput in = {n, b->inputs, b->positions, seg, b->targets, b->weights};
    double loss = model_step(m, &in, grad_scale, backward, NULL);
    free(seg);
    return loss;
}

// Mean validation loss over every trained target of the validation shards.
static double evaluate(Model *m, EvalLoader *ev, Batch *b, int64_t *trained) {
    double sum = 0.0;
    *trained = 0;
    evalloader_rewind(ev);
    while (evalloader_next(ev, b)) {
        sum += run_batch(m, b, 1.0f, 0);
        *trained += b->n_trained;
    }
    return *trained ? sum / (double)*trained : 0.0;
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Answers each probe prompt (one per line of the file) as the character would.
static void write_samples(Model *m, Tokenizer *tok, const Options *o, int64_t step, uint64_t *rng, const char *path) {
    char err[ERR_LEN];
    size_t len;
    char *text = read_file(o->prompts, &len, err);
    if (!text) {
        fprintf(stderr, "warning: %s\n", err);
        return;
    }
    FILE *f = fopen(path, "a");
    if (!f) {
        fprintf(stderr, "warning: %s: %s\n", path, strerror(errno));
        free(text);
        return;
    }
    ChatFormat fmt = chat_format_for(tok);
    for (char *line = text, *end = text + len; line < end;) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t n = nl ? (size_t)(nl - line) : (size_t)(end - line);
        if (n) {
            ChatMessage msg = {ROLE_USER, line, n, -1.0};
            TokenVec ids = {0};
            ByteBuf mask = {0}, answer = {0};
            if (chat_encode(tok, fmt, &msg, 1, &ids, &mask, err) == 0) {
                size_t prompt_len = ids.len;
                generate(m, &ids, o->sample_tokens, tok->eos_id, o->temperature, o->top_p, rng);
                tokenizer_decode(tok, ids.ids + prompt_len, ids.len - prompt_len, &answer, err);
                cJSON *j = cJSON_CreateObject();
                cJSON_AddNumberToObject(j, "step", (double)step);
                char *prompt = xmalloc(n + 1);
                memcpy(prompt, line, n);
                prompt[n] = '\0';
                cJSON_AddStringToObject(j, "prompt", prompt);
                cJSON_AddStringToObject(j, "text", answer.data ? answer.data : "");
                char *s = cJSON_PrintUnformatted(j);
                fprintf(f, "%s\n", s);
                printf("sample: %s\n", s);
                free(s), free(prompt);
                cJSON_Delete(j);
            }
            tokvec_free(&ids), bytebuf_free(&mask), bytebuf_free(&answer);
        }
        line += n + 1;
    }
    fclose(f);
    free(text);
}

// ---------------------------------------------------------------------------------------
// main

// Everything a run holds; run_close frees whatever was opened.
typedef struct {
    Tokenizer tok;
    uint64_t fingerprint;
    Model m;
    Param *ps;
    int n_params;
    Dataloader *dl;
    EvalLoader *ev;
    FILE *log;
    RunState rs;
    char settings[512], ckpt[4096], logpath[4096], samples[4096];
} Run;

static void run_close(Run *r, const Options *o) {
    if (r->log) fclose(r->log);
    for (int i = 0; i < r->n_params; i++) free(r->ps[i].m), free(r->ps[i].v);
    free(r->ps);
    if (r->ev) evalloader_close(r->ev);
    if (r->dl) dataloader_close(r->dl);
    if (r->m.layers) model_free(&r->m);
    if (o->tokenizer && r->tok.kind) tokenizer_free(&r->tok);
}

// Loads the model, checks the shards against it, opens the data and the run directory,
// and resumes from a checkpoint when there is one. Returns 0, or 1 (bad input) / 2 with
// the reason printed.
static int run_open(Run *r, const Options *o, unsigned targets) {
    char err[ERR_LEN];
    if (o->tokenizer && (tokenizer_load(&r->tok, o->tokenizer, err) ||
                         shard_fingerprint_file(o->tokenizer, &r->fingerprint, err)))
        goto bad;
    if (model_load(&r->m, o->model, !o->no_nf4, err)) goto bad;
    model_lora_init(&r->m, targets, o->lora_r, o->lora_alpha, o->rslora, o->seed);
    r->n_params = collect_params(&r->m, &r->ps);
    for (int i = 0; i < o->n_train + o->n_val; i++) {  // every id must have an embedding row
        Shard sh;
        const char *p = i < o->n_train ? o->train[i] : o->val[i - o->n_train];
        if (shard_open(&sh, p, r->fingerprint, err)) goto bad;
        uint32_t v = sh.h.vocab_size;
        shard_close(&sh);
        if (v > (uint32_t)r->m.c.vocab_size) {
            set_error(err, "%s: made with a %u-token vocabulary, but %s has %d embeddings", p, v, o->model,
                      r->m.c.vocab_size);
            goto bad;
        }
    }
    LoaderConfig lc = {o->batch, o->seq_len, o->seed, 0, 1, r->fingerprint};
    if (!(r->dl = dataloader_open(o->train, o->n_train, &lc, err))) goto bad;
    if (o->n_val && !(r->ev = evalloader_open(o->val, o->n_val, &lc, err))) goto bad;
    if (mkdir(o->out, 0755) && errno != EEXIST) {
        set_error(err, "%s: cannot create: %s", o->out, strerror(errno));
        goto bad;
    }
    settings_json(o, targets, r->settings, sizeof(r->settings));
    snprintf(r->ckpt, sizeof(r->ckpt), "%s/checkpoint.safetensors", o->out);
    snprintf(r->logpath, sizeof(r->logpath), "%s/log.jsonl", o->out);
    snprintf(r->samples, sizeof(r->samples), "%s/samples.jsonl", o->out);
    r->rs = (RunState){0, o->seed ^ 0x5A17ull, o->seed ^ 0xD120ull};
    struct stat sb;
    if (stat(r->ckpt, &sb) == 0) {
        if (checkpoint_load(r->ckpt, r->ps, r->n_params, r->dl, &r->rs, r->settings, err) ||
            log_truncate(r->logpath, r->rs.step, err))
            goto bad;
        printf("resuming %s from step %lld\n", o->out, (long long)r->rs.step);
    }
    if (!(r->log = fopen(r->logpath, "a"))) {
        fprintf(stderr, "error: %s: %s\n", r->logpath, strerror(errno));
        return 2;
    }
    return 0;
bad:
    fprintf(stderr, "error: %s\n", err);
    return 1;
}

int main(int argc, char **argv) {
    Options o = {.seq_len = 512, .batch = 4, .grad_accum = 1, .steps = 100, .warmup = 10, .lora_r = 16,
                 .eval_every = 0, .sample_tokens = 64, .checkpoint_every = 50, .lr = 2e-4f, .clip = 1.0f,
                 .lora_alpha = 32.0f, .top_p = 1.0f, .seed = 1, .targets = "all", .schedule = "cosine"};
    if (parse_args(argc, argv, &o)) return 1;
    unsigned targets;
    ScheduleKind sched;
    if (model_parse_targets(o.targets, &targets) || schedule_parse(o.schedule, &sched)) {
        fprintf(stderr, "error: --lora-targets '%s' or --schedule '%s' not understood (see --help)\n", o.targets,
                o.schedule);
        return 1;
    }
    if (o.threads) omp_set_num_threads(o.threads);
    if (o.matmul_kernel && matmul_select(o.matmul_kernel) != 0) {
        fprintf(stderr, "error: --matmul-kernel '%s' is unknown or this CPU cannot run it (see --help)\n",
                o.matmul_kernel);
        return 1;
    }
    char err[ERR_LEN], desc[512], path[4096];
    Run run = {0};
    int rc = run_open(&run, &o, targets);
    if (rc) {
        run_close(&run, &o);
        return rc;
    }
    Model *mp = &run.m;
    Param *ps = run.ps;
    int n_params = run.n_params;
    RunState *rsp = &run.rs;
    config_describe(&mp->c, desc, sizeof(desc));
    size_t trainable = 0;
    for (int i = 0; i < n_params; i++) trainable += ps[i].n;
    printf("train_cpu: %s\n  frozen weights %s, LoRA r %d alpha %g%s dropout %g on %s: %zu trainable parameters\n"
           "  %d train shard(s), %d val shard(s); batch %d x %d, grad accum %d; %d steps, lr %g %s, warmup %d\n"
           "  %d thread(s), %s matrix kernel\n",
           desc, o.no_nf4 ? "float32" : "NF4", o.lora_r, (double)o.lora_alpha, o.rslora ? " (rsLoRA)" : "",
           (double)o.lora_dropout, o.targets,
           trainable, o.n_train, o.n_val, o.batch, o.seq_len, o.grad_accum, o.steps, (double)o.lr, o.schedule, o.warmup,
           omp_get_max_threads(), matmul_kernel_name());
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    Batch *micro = xcalloc((size_t)o.grad_accum, sizeof(Batch));
    for (int a = 0; a < o.grad_accum; a++) batch_init(&micro[a], o.batch, o.seq_len);
    AdamWConfig opt = {0.9f, 0.999f, 1e-8f, o.weight_decay};
    float **grads = xmalloc((size_t)n_params * sizeof(float *));
    size_t *sizes = xmalloc((size_t)n_params * sizeof(size_t));
    for (int i = 0; i < n_params; i++) grads[i] = ps[i].g, sizes[i] = ps[i].n;
    mp->lora_dropout = o.lora_dropout;
    mp->dropout_rng = rsp->dropout_rng;  // the model draws its masks from the run's generator
    while (rsp->step < o.steps && !stop_requested) {
        double t0 = seconds_now();
        int64_t trained = 0;
        for (int a = 0; a < o.grad_accum && rc == 0; a++) {
            if (dataloader_next(run.dl, &micro[a], err)) rc = 2;
            trained += micro[a].n_trained;
        }
        if (rc) {
            fprintf(stderr, "error: %s\n", err);
            break;
        }
        for (int i = 0; i < n_params; i++) memset(ps[i].g, 0, ps[i].n * sizeof(float));
        double loss = 0.0;  // the step's loss: every trained target of all micro-batches weighs the same
        for (int a = 0; a < o.grad_accum; a++) loss += run_batch(mp, &micro[a], 1.0f / (float)trained, 1);
        loss /= (double)trained;
        double norm = o.clip > 0 ? grad_clip(grads, sizes, n_params, o.clip) : grad_global_norm(grads, sizes, n_params);
        float lr = (float)(o.lr * schedule_multiplier(sched, rsp->step, o.warmup, o.steps));
        rsp->step++;
        for (int i = 0; i < n_params; i++) adamw_step(ps[i].p, ps[i].g, ps[i].m, ps[i].v, ps[i].n, (int)rsp->step, lr, &opt);
        double dt = seconds_now() - t0;
        double tokens = (double)o.grad_accum * o.batch * o.seq_len;
        log_line(run.log, "{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, \"trained\": %lld, "
                      "\"tokens_per_s\": %.1f}",
                 (long long)rsp->step, loss, (double)lr, norm, (long long)trained, tokens / dt);
        printf("step %5lld/%d | loss %.4f | lr %.3e | grad norm %.3f | %lld trained | %.0f tok/s\n", (long long)rsp->step,
               o.steps, loss, (double)lr, norm, (long long)trained, tokens / dt);
        fflush(stdout);
        // A run stopped by a signal only writes its checkpoint: evaluating or sampling here
        // would put lines in the log that an uninterrupted run does not have.
        int finished = rsp->step == o.steps;
        if (run.ev && ((o.eval_every && rsp->step % o.eval_every == 0) || finished)) {
            int64_t vt;
            double vl = evaluate(mp, run.ev, &micro[0], &vt);
            log_line(run.log, "{\"step\": %lld, \"val_loss\": %.6f, \"val_trained\": %lld}", (long long)rsp->step, vl,
                     (long long)vt);
            printf("step %5lld | val loss %.4f over %lld trained tokens\n", (long long)rsp->step, vl, (long long)vt);
        }
        if (o.prompts && ((o.sample_every && rsp->step % o.sample_every == 0) || rsp->step == o.steps))
            write_samples(mp, &run.tok, &o, rsp->step, &rsp->sample_rng, run.samples);
        rsp->dropout_rng = mp->dropout_rng;
        if (finished || stop_requested || (o.checkpoint_every && rsp->step % o.checkpoint_every == 0)) {
            if (checkpoint_save(run.ckpt, ps, n_params, run.dl, rsp, run.settings, err)) {
                fprintf(stderr, "error: %s\n", err);
                rc = 2;
                break;
            }
        }
    }
    if (rc == 0 && stop_requested) printf("stopped by signal %d at step %lld; checkpoint written\n", (int)stop_requested,
                                          (long long)rsp->step);
    if (rc == 0 && rsp->step >= o.steps) {
        snprintf(path, sizeof(path), "%s/adapter", o.out);
        if (peft_adapter_save(mp, path, o.model, o.lora_dropout, err)) {
            fprintf(stderr, "error: %s\n", err);
            rc = 2;
        } else {
            printf("adapter written to %s (PEFT format)\n", path);
        }
    }
    for (int a = 0; a < o.grad_accum; a++) batch_free(&micro[a]);
    free(micro), free(grads), free(sizes);
    run_close(&run, &o);
    return rc;
}
