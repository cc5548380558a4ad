// run.c: the host side both trainers share (see run.h).
#include "run.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cjson/cJSON.h>

#include "../common/util.h"
#include "../tokenizer/chat.h"
#include "model.h"
#include "peft_adapter.h"
#include "safetensors.h"

// ---------------------------------------------------------------------------------------
// the command line

// The shared flags, in --help's order, pointing into o.
static int shared_flags(RunOptions *o, RunFlag *f) {
    RunFlag all[] = {
        {"--model", "DIR|FILE", FLAG_STRING, &o->model,
         "Hugging Face model directory (safetensors, or bitsandbytes 4-bit),\nor a GGUF file (Llama architecture)"},
        {"--train", "SHARD", FLAG_PATHS, &o->train, "a training shard written by prep (repeatable: each is a source)"},
        {"--val", "SHARD", FLAG_PATHS, &o->val, "a validation shard (repeatable)"},
        {"--out", "DIR", FLAG_STRING, &o->out, "run directory; resumed if it holds a checkpoint"},
        {"--tokenizer", "FILE", FLAG_STRING, &o->tokenizer,
         "the tokenizer the shards were made with (checks their\nfingerprint; needed for --prompts)"},
        {"--seq-len", "T", FLAG_INT, &o->seq_len, "positions per row (default 512)"},
        {"--batch", "B", FLAG_INT, &o->batch, "rows per micro-batch (default 4)"},
        {"--grad-accum", "N", FLAG_INT, &o->grad_accum, "micro-batches per optimizer step (default 1)"},
        {"--steps", "N", FLAG_INT, &o->steps, "optimizer steps (default 100)"},
        {"--lr", "LR", FLAG_FLOAT, &o->lr, "peak learning rate (default 2e-4)"},
        {"--schedule", "S", FLAG_STRING, &o->schedule, "constant, linear or cosine (default cosine)"},
        {"--warmup", "N", FLAG_INT, &o->warmup, "warmup steps (default 10)"},
        {"--weight-decay", "W", FLAG_FLOAT, &o->weight_decay, "AdamW decoupled weight decay (default 0)"},
        {"--clip", "C", FLAG_FLOAT, &o->clip, "clip gradients to this global norm; 0 = off (default 1.0)"},
        {"--lora-r", "R", FLAG_INT, &o->lora_r, "LoRA rank (default 16)"},
        {"--lora-alpha", "A", FLAG_FLOAT, &o->lora_alpha, "LoRA alpha; scale = alpha / r (default 32)"},
        {"--rslora", NULL, FLAG_SWITCH, &o->rslora, "scale = alpha / sqrt(r)"},
        {"--lora-dropout", "P", FLAG_FLOAT, &o->lora_dropout, "dropout on the LoRA input while training (default 0)"},
        {"--lora-targets", "LIST", FLAG_STRING, &o->targets,
         "comma list of q,k,v,o,gate,up,down or \"all\" (default all)"},
        {"--no-nf4", NULL, FLAG_SWITCH, &o->no_nf4, "keep frozen weights in float32 (plain LoRA, not QLoRA)"},
        {"--seed", "N", FLAG_U64, &o->seed, "data order and LoRA init (default 1)"},
        {"--eval-every", "N", FLAG_INT, &o->eval_every, "evaluate on --val every N steps and at the end; 0 = only at the end"},
        {"--checkpoint-every", "N", FLAG_INT, &o->checkpoint_every,
         "write a checkpoint every N steps (default 50; always at the end)"},
        {"--prompts", "FILE", FLAG_STRING, &o->prompts,
         "persona probe prompts, one per line, answered every\n--sample-every steps into samples.jsonl"},
        {"--sample-every", "N", FLAG_INT, &o->sample_every, "(default 0: only at the end when --prompts is given)"},
        {"--sample-tokens", "N", FLAG_INT, &o->sample_tokens, "tokens per answer (default 64)"},
        {"--temperature", "T", FLAG_FLOAT, &o->temperature, "0 = greedy (default 0)"},
        {"--top-p", "P", FLAG_FLOAT, &o->top_p, "nucleus sampling mass (default 1.0)"},
    };
    int n = (int)(sizeof(all) / sizeof(all[0]));
    if (f) memcpy(f, all, sizeof(all));
    return n;
}

static void print_flags(FILE *f, const RunFlag *flags, int n) {
    for (int i = 0; i < n; i++) {
        char left[64];
        snprintf(left, sizeof(left), "%s%s%s", flags[i].name, flags[i].metavar ? " " : "",
                 flags[i].metavar ? flags[i].metavar : "");
        fprintf(f, "  %-22s ", left);
        for (const char *h = flags[i].help; *h; h++) {
            fputc(*h, f);
            if (*h == '\n') fprintf(f, "%25s", "");
        }
        fputc('\n', f);
    }
}

static void usage(FILE *f, const RunProgram *p, const RunFlag *shared, int n_shared) {
    fprintf(f, "usage: %s --model DIR --train SHARD [--train SHARD ...] --out RUN_DIR [options]\n\n%s\n\n", p->name,
            p->summary);
    print_flags(f, shared, n_shared);
    if (p->n_flags) {
        fprintf(f, "\n%s only:\n", p->name);
        print_flags(f, p->flags, p->n_flags);
    }
}

// Stores value v of flag f. Returns 0, or -1 with the reason in err.
static int set_flag(const RunFlag *f, const char *v, char *err) {
    char *end;
    errno = 0;
    switch (f->type) {
    case FLAG_SWITCH: *(int *)f->dest = 1; return 0;
    case FLAG_STRING: *(const char **)f->dest = v; return 0;
    case FLAG_PATHS: {
        RunPaths *ps = f->dest;
        if (ps->n == RUN_MAX_SHARDS) return set_error(err, "%s: at most %d shards", f->name, RUN_MAX_SHARDS);
        ps->path[ps->n++] = v;
        return 0;
    }
    case FLAG_INT: {
        long x = strtol(v, &end, 10);
        if (end == v || *end || errno || x < -2147483647L || x > 2147483647L)
            return set_error(err, "%s: '%s' is not a whole number", f->name, v);
        *(int *)f->dest = (int)x;
        return 0;
    }
    case FLAG_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (end == v || *end || errno || v[0] == '-') return set_error(err, "%s: '%s' is not a whole number", f->name, v);
        *(uint64_t *)f->dest = x;
        return 0;
    }
    case FLAG_FLOAT: {
        float x = strtof(v, &end);
        if (end == v || *end || !isfinite(x)) return set_error(err, "%s: '%s' is not a number", f->name, v);
        *(float *)f->dest = x;
        return 0;
    }
    }
    return -1;
}

// The flag called name among the shared ones and the program's, or NULL.
static const RunFlag *find_flag(const char *name, const RunFlag *shared, int n_shared, const RunProgram *p) {
    for (int i = 0; i < n_shared; i++)
        if (!strcmp(name, shared[i].name)) return &shared[i];
    for (int i = 0; i < p->n_flags; i++)
        if (!strcmp(name, p->flags[i].name)) return &p->flags[i];
    return NULL;
}

int run_parse_args(RunOptions *o, const RunProgram *p, int argc, char **argv) {
    *o = (RunOptions){.seq_len = 512, .batch = 4, .grad_accum = 1, .steps = 100, .warmup = 10, .lora_r = 16,
                      .sample_tokens = 64, .checkpoint_every = 50, .lr = 2e-4f, .clip = 1.0f, .lora_alpha = 32.0f,
                      .top_p = 1.0f, .seed = 1, .targets = "all", .schedule = "cosine"};
    RunFlag shared[64];
    int n_shared = shared_flags(o, shared);
    char err[ERR_LEN];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout, p, shared, n_shared);
            exit(0);
        }
        const RunFlag *f = find_flag(a, shared, n_shared, p);
        if (!f) {
            fprintf(stderr, "error: unknown option: %s (see --help)\n", a);
            return -1;
        }
        if (f->type != FLAG_SWITCH && i + 1 == argc) {
            fprintf(stderr, "error: %s needs a value (see --help)\n", a);
            return -1;
        }
        if (set_flag(f, f->type == FLAG_SWITCH ? NULL : argv[++i], err)) {
            fprintf(stderr, "error: %s (see --help)\n", err);
            return -1;
        }
    }
    const char *bad = !o->model ? "--model is required"
                      : !o->train.n ? "at least one --train shard is required"
                      : !o->out ? "--out is required"
                      : o->seq_len < 2 ? "--seq-len must be at least 2"
                      : o->batch < 1 || o->grad_accum < 1 || o->steps < 1 ? "--batch, --grad-accum and --steps must be positive"
                      : !(o->lr > 0) ? "--lr must be positive"
                      : o->lora_r < 1 || !(o->lora_alpha > 0) ? "--lora-r and --lora-alpha must be positive"
                      : !(o->lora_dropout >= 0 && o->lora_dropout < 1) ? "--lora-dropout must be in [0, 1)"
                      : o->prompts && !o->tokenizer ? "--prompts needs --tokenizer"
                      : !(o->top_p > 0 && o->top_p <= 1) ? "--top-p must be in (0, 1]"
                      : NULL;
    if (bad) {
        fprintf(stderr, "error: %s (see --help)\n", bad);
        return -1;
    }
    if (model_parse_targets(o->targets, &o->target_mask) || schedule_parse(o->schedule, &o->schedule_kind)) {
        fprintf(stderr, "error: --lora-targets '%s' or --schedule '%s' not understood (see --help)\n", o->targets,
                o->schedule);
        return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------
// the trainable state

RunParam run_lora_param(int layer, int proj, int is_b, int r, int in, int out, float *p, float *m, float *v) {
    RunParam q = {.layer = layer, .proj = proj, .is_b = is_b, .rows = is_b ? out : r, .cols = is_b ? r : in,
                  .p = p, .m = m, .v = v};
    q.n = (size_t)q.rows * q.cols;
    snprintf(q.name, sizeof(q.name), "layers.%d.%s.lora_%c", layer, proj_short[proj], is_b ? 'B' : 'A');
    return q;
}

// What a checkpoint must agree on with the run that resumes it.
static void settings_json(const RunOptions *o, char *out, size_t n) {
    snprintf(out, n,
             "{\"seq_len\": %d, \"batch\": %d, \"grad_accum\": %d, \"lora_r\": %d, \"lora_alpha\": %.9g, "
             "\"lora_dropout\": %.9g, \"rslora\": %d, \"targets\": %u, \"seed\": %llu, \"nf4\": %d, \"n_train\": %d}",
             o->seq_len, o->batch, o->grad_accum, o->lora_r, (double)o->lora_alpha, (double)o->lora_dropout, o->rslora,
             o->target_mask, (unsigned long long)o->seed, !o->no_nf4, o->train.n);
}

// ---------------------------------------------------------------------------------------
// checkpoints

static uint32_t crc_of(const StWrite *w, int n) {
    uLong crc = crc32(0L, Z_NULL, 0);
    for (int i = 0; i < n; i++) {
        size_t bytes = st_dtype_size(w[i].dtype);
        for (int d = 0; d < w[i].ndim; d++) bytes *= (size_t)w[i].shape[d];
        crc = crc32(crc, w[i].data, (uInt)bytes);
    }
    return (uint32_t)crc;
}

static const char *const moment_suffix[3] = {"", ".adam_m", ".adam_v"};

static int checkpoint_save(Run *r, char *err) {
    if (r->hooks.to_host && r->hooks.to_host(r->hooks.ctx, err)) return -1;
    int n = r->n_params;
    StWrite *w = xcalloc((size_t)n * 3 + 2, sizeof(StWrite));
    char (*names)[112] = xcalloc((size_t)n * 3 + 2, sizeof(*names));
    int k = 0;
    for (int i = 0; i < n; i++) {
        const RunParam *q = &r->params[i];
        const float *bufs[3] = {q->p, q->m, q->v};
        for (int j = 0; j < 3; j++) {
            snprintf(names[k], sizeof(names[k]), "%s%s", q->name, moment_suffix[j]);
            w[k] = (StWrite){names[k], ST_F32, 1, {(int64_t)q->n}, bufs[j]};
            k++;
        }
    }
    size_t ds = dataloader_state_size(r->dl);
    uint8_t *dstate = xmalloc(ds);
    dataloader_state_save(r->dl, dstate);
    const RunState *rs = &r->state;
    int64_t scalars[3] = {rs->step, (int64_t)rs->sample_rng, (int64_t)rs->dropout_rng};
    w[k++] = (StWrite){"run.dataloader", ST_U8, 1, {(int64_t)ds}, dstate};
    w[k++] = (StWrite){"run.scalars", ST_I64, 1, {3}, scalars};
    char crc[16];
    snprintf(crc, sizeof(crc), "%08x", crc_of(w, k));
    const char *keys[] = {"format", "settings", "crc32"}, *values[] = {"persona.c checkpoint v1", r->settings, crc};
    int rc = st_write(r->ckpt_path, w, k, keys, values, 3, err);
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

// Restores parameters, moments, the data loader and the run state from the checkpoint,
// touching nothing unless all of it checks out.
static int checkpoint_load(Run *r, char *err) {
    const char *path = r->ckpt_path;
    SafeTensors st;
    if (st_open(&st, path, err)) return -1;
    int rc = 0, n = r->n_params;
    char *saved_settings = metadata_string(&st, "settings"), *saved_crc = metadata_string(&st, "crc32");
    if (!saved_settings || !saved_crc)
        rc = set_error(err, "%s: not a persona.c checkpoint (no settings or crc32 metadata)", path);
    else if (strcmp(saved_settings, r->settings) != 0)
        rc = set_error(err, "%s: made with other settings (%s); resume with the same --seq-len, --batch, "
                            "--grad-accum, LoRA and data options, or use another --out", path, saved_settings);
    StWrite *w = xcalloc((size_t)n * 3 + 2, sizeof(StWrite));
    int k = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        for (int j = 0; j < 3 && rc == 0; j++) {
            char name[112];
            snprintf(name, sizeof(name), "%s%s", r->params[i].name, moment_suffix[j]);
            const StTensor *t = st_find(&st, name);
            if (!t || t->dtype != ST_F32 || (size_t)t->numel != r->params[i].n) {
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
    if (rc == 0 && dataloader_state_restore(r->dl, dstate->data, dstate->nbytes, err)) rc = -1;
    if (rc == 0) {  // only now, when everything checked out, touch the parameters
        for (int i = 0, j = 0; i < n; i++, j += 3) {
            const RunParam *q = &r->params[i];
            memcpy(q->p, w[j].data, q->n * sizeof(float));
            memcpy(q->m, w[j + 1].data, q->n * sizeof(float));
            memcpy(q->v, w[j + 2].data, q->n * sizeof(float));
        }
        int64_t scalars[3];
        memcpy(scalars, scal->data, sizeof(scalars));
        r->state.step = scalars[0];
        r->state.sample_rng = (uint64_t)scalars[1];
        r->state.dropout_rng = (uint64_t)scalars[2];
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
// opening and resuming

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { stop_requested = sig; }
int run_stop_signal(void) { return stop_requested; }

int run_open(Run *r, const RunOptions *o) {
    memset(r, 0, sizeof(*r));
    r->o = o;
    char err[ERR_LEN];
    if (model_config_load(&r->config, o->model, err)) goto bad;
    if (o->tokenizer &&
        (tokenizer_load(&r->tok, o->tokenizer, err) || shard_fingerprint_file(o->tokenizer, &r->fingerprint, err)))
        goto bad;
    for (int i = 0; i < o->train.n + o->val.n; i++) {  // every id must have an embedding row
        Shard sh;
        const char *p = i < o->train.n ? o->train.path[i] : o->val.path[i - o->train.n];
        if (shard_open(&sh, p, r->fingerprint, err)) goto bad;
        uint32_t v = sh.h.vocab_size;
        shard_close(&sh);
        if (v > (uint32_t)r->config.vocab_size) {
            set_error(err, "%s: made with a %u-token vocabulary, but %s has %d embeddings", p, v, o->model,
                      r->config.vocab_size);
            goto bad;
        }
    }
    LoaderConfig lc = {o->batch, o->seq_len, o->seed, 0, 1, r->fingerprint};
    if (!(r->dl = dataloader_open(o->train.path, o->train.n, &lc, err))) goto bad;
    if (o->val.n && !(r->ev = evalloader_open(o->val.path, o->val.n, &lc, err))) goto bad;
    return 0;
bad:
    fprintf(stderr, "error: %s\n", err);
    return 1;
}

int run_start(Run *r, RunParam *params, int n_params, const RunHooks *hooks) {
    const RunOptions *o = r->o;
    char err[ERR_LEN];
    r->params = params;
    r->n_params = n_params;
    r->hooks = *hooks;
    if (mkdir(o->out, 0755) && errno != EEXIST) {
        fprintf(stderr, "error: %s: cannot create: %s\n", o->out, strerror(errno));
        return 1;
    }
    settings_json(o, r->settings, sizeof(r->settings));
    snprintf(r->ckpt_path, sizeof(r->ckpt_path), "%s/checkpoint.safetensors", o->out);
    snprintf(r->log_path, sizeof(r->log_path), "%s/log.jsonl", o->out);
    snprintf(r->samples_path, sizeof(r->samples_path), "%s/samples.jsonl", o->out);
    snprintf(r->adapter_path, sizeof(r->adapter_path), "%s/adapter", o->out);
    r->state = (RunState){0, o->seed ^ 0x5A17ull, o->seed ^ 0xD120ull};
    struct stat sb;
    if (stat(r->ckpt_path, &sb) == 0) {
        if (checkpoint_load(r, err) || log_truncate(r->log_path, r->state.step, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 1;
        }
        printf("resuming %s from step %lld\n", o->out, (long long)r->state.step);
    }
    if (!(r->log = fopen(r->log_path, "a"))) {
        fprintf(stderr, "error: %s: %s\n", r->log_path, strerror(errno));
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    return 0;
}

void run_print_config(const Run *r, const char *program, const char *frozen) {
    const RunOptions *o = r->o;
    char desc[512];
    config_describe(&r->config, desc, sizeof(desc));
    size_t trainable = 0;
    for (int i = 0; i < r->n_params; i++) trainable += r->params[i].n;
    printf("%s: %s\n  frozen weights %s, LoRA r %d alpha %g%s dropout %g on %s: %zu trainable parameters\n"
           "  %d train shard(s), %d val shard(s); batch %d x %d, grad accum %d; %d steps, lr %g %s, warmup %d\n",
           program, desc, frozen, o->lora_r, (double)o->lora_alpha, o->rslora ? " (rsLoRA)" : "",
           (double)o->lora_dropout, o->targets, trainable, o->train.n, o->val.n, o->batch, o->seq_len, o->grad_accum,
           o->steps, (double)o->lr, o->schedule, o->warmup);
}

// ---------------------------------------------------------------------------------------
// the steps

int run_next(const Run *r) { return r->state.step < r->o->steps && !stop_requested; }

// Every `every` steps (0: never) and at the last step.
static int due(const Run *r, int every) {
    return (every && r->state.step % every == 0) || r->state.step == r->o->steps;
}

static void evaluate(Run *r) {
    double sum;
    int64_t vt;
    r->hooks.evaluate(r->hooks.ctx, r->ev, &sum, &vt);
    double vl = vt ? sum / (double)vt : 0.0;
    log_line(r->log, "{\"step\": %lld, \"val_loss\": %.6f, \"val_trained\": %lld}", (long long)r->state.step, vl,
             (long long)vt);
    printf("step %5lld | val loss %.4f over %lld trained tokens\n", (long long)r->state.step, vl, (long long)vt);
}

// Answers each probe prompt (one per line of the file) as the character would.
static void write_samples(Run *r) {
    const RunOptions *o = r->o;
    char err[ERR_LEN];
    size_t len;
    char *text = read_file(o->prompts, &len, err);
    if (!text) {
        fprintf(stderr, "warning: %s\n", err);
        return;
    }
    FILE *f = fopen(r->samples_path, "a");
    if (!f) {
        fprintf(stderr, "warning: %s: %s\n", r->samples_path, strerror(errno));
        free(text);
        return;
    }
    ChatFormat fmt = chat_format_for(&r->tok);
    for (char *line = text, *end = text + len; line < end;) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t n = nl ? (size_t)(nl - line) : (size_t)(end - line);
        if (n) {
            ChatMessage msg = {ROLE_USER, line, n, -1.0};
            TokenVec ids = {0};
            ByteBuf mask = {0}, answer = {0};
            if (chat_encode(&r->tok, fmt, &msg, 1, &ids, &mask, err) == 0) {
                size_t prompt_len = ids.len;
                r->hooks.generate(r->hooks.ctx, &ids, o->sample_tokens, r->tok.eos_id, o->temperature, o->top_p,
                                  &r->state.sample_rng);
                tokenizer_decode(&r->tok, ids.ids + prompt_len, ids.len - prompt_len, &answer, err);
                cJSON *j = cJSON_CreateObject();
                cJSON_AddNumberToObject(j, "step", (double)r->state.step);
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

int run_step_done(Run *r, const RunStep *s) {
    const RunOptions *o = r->o;
    int64_t step = ++r->state.step;
    double tps = s->tokens / s->seconds;
    ByteBuf json = {0}, console = {0};
    char num[64];
    for (int i = 0; i < s->n_extra; i++) {
        snprintf(num, sizeof(num), s->extra[i].format, s->extra[i].value);
        bytebuf_append(&json, ", \"", 3);
        bytebuf_append(&json, s->extra[i].key, strlen(s->extra[i].key));
        bytebuf_append(&json, "\": ", 3);
        bytebuf_append(&json, num, strlen(num));
        bytebuf_append(&console, " | ", 3);
        bytebuf_append(&console, s->extra[i].key, strlen(s->extra[i].key));
        bytebuf_push(&console, ' ');
        bytebuf_append(&console, num, strlen(num));
    }
    log_line(r->log,
             "{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, \"trained\": %lld, "
             "\"tokens_per_s\": %.1f%s}",
             (long long)step, s->loss, s->lr, s->grad_norm, (long long)s->trained, tps, json.data ? json.data : "");
    printf("step %5lld/%d | loss %.4f | lr %.3e | grad norm %.3f | %lld trained | %.0f tok/s%s\n", (long long)step,
           o->steps, s->loss, s->lr, s->grad_norm, (long long)s->trained, tps, console.data ? console.data : "");
    fflush(stdout);
    bytebuf_free(&json), bytebuf_free(&console);
    // A run stopped by a signal only writes its checkpoint: evaluating or sampling here
    // would put lines in the log that an uninterrupted run does not have.
    if (r->ev && due(r, o->eval_every)) evaluate(r);
    if (o->prompts && due(r, o->sample_every)) write_samples(r);
    if (step == o->steps || stop_requested || (o->checkpoint_every && step % o->checkpoint_every == 0)) {
        char err[ERR_LEN];
        if (checkpoint_save(r, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 2;
        }
    }
    return 0;
}

static int adapter_export(Run *r, char *err) {
    if (r->hooks.to_host && r->hooks.to_host(r->hooks.ctx, err)) return -1;
    PeftMatrix *mats = xcalloc((size_t)r->n_params + 1, sizeof(PeftMatrix));
    for (int i = 0; i < r->n_params; i++) {
        const RunParam *q = &r->params[i];
        mats[i] = (PeftMatrix){q->layer, q->proj, q->is_b, q->rows, q->cols, q->p};
    }
    const RunOptions *o = r->o;
    PeftSettings s = {o->lora_r, o->rslora, o->lora_alpha, o->lora_dropout, o->model};
    int rc = peft_adapter_write(r->adapter_path, mats, r->n_params, &s, err);
    free(mats);
    return rc;
}

int run_finish(Run *r) {
    if (stop_requested)
        printf("stopped by signal %d at step %lld; checkpoint written\n", (int)stop_requested, (long long)r->state.step);
    if (r->state.step < r->o->steps) return 0;
    char err[ERR_LEN];
    if (adapter_export(r, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    printf("adapter written to %s (PEFT format)\n", r->adapter_path);
    return 0;
}

void run_close(Run *r) {
    if (r->log) fclose(r->log);
    if (r->ev) evalloader_close(r->ev);
    if (r->dl) dataloader_close(r->dl);
    if (r->tok.kind) tokenizer_free(&r->tok);
    memset(r, 0, sizeof(*r));
}
