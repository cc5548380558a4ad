// run.c: the host side both trainers share (see run.h).
#define _DEFAULT_SOURCE  // flock
#include "run.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cjson/cJSON.h>

#include "../common/util.h"
#include "../tokenizer/chat.h"
#include "model.h"
#include "peft_adapter.h"
#include "safetensors.h"

#define CHECKPOINT_FORMAT "persona.c checkpoint v2"

// ---------------------------------------------------------------------------------------
// the ranks (run.h: "Several ranks")

static const RunComm single_rank = {0, 1, NULL, NULL, NULL, NULL, NULL};

static volatile sig_atomic_t stop_requested;  // the signal this process received (on_signal)

static int is_lead(const Run *r) { return r->comm->rank == 0; }

static void ranks_sum(const Run *r, double *x, int n) {
    if (r->comm->world > 1) r->comm->sum(r->comm->ctx, x, n);
}

static void ranks_max(const Run *r, int *x, int n) {
    if (r->comm->world > 1) r->comm->max(r->comm->ctx, x, n);
}

static void ranks_broadcast(const Run *r, void *buf, size_t n) {
    if (r->comm->world > 1) r->comm->broadcast(r->comm->ctx, buf, n);
}

static void ranks_gather(const Run *r, const void *mine, void *all, size_t n) {
    if (r->comm->world > 1) r->comm->gather(r->comm->ctx, mine, all, n);
    else memcpy(all, mine, n);
}

// What the ranks decide together: returns the worst status any rank had (so that a failure
// of what rank 0 alone does, writing the log say, stops them all), and sets r->stop to the
// signal any rank received, if one did.
static int agree(Run *r, int status) {
    int v[2] = {status, (int)stop_requested};
    ranks_max(r, v, 2);
    if (v[1]) r->stop = v[1];
    return v[0];
}

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
        {"--steps", "N", FLAG_INT, &o->steps,
         "optimizer steps (default 100); may grow on resume; 0: no\nstep, only the evaluation and samples of the model as\nit starts (LoRA's B is 0: the base model)"},
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
         "persona probe prompts, one per line, answered every\n--sample-every steps into samples.jsonl (each prompt and\n"
         "its answer must fit in --seq-len)"},
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
    fprintf(f, "\nA run directory with a checkpoint is resumed (run the same command again); --steps and\n"
               "the evaluation, sampling and checkpoint flags may change then, the rest may not.\n"
               "Exit status: 0 finished, 130/143 stopped by SIGINT/SIGTERM (resumable), 1 bad input,\n"
               "2 runtime failure (a loss that is not finite included).\n");
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
    // progress is read as it comes (tee, a log file), and must not die in a buffer with a
    // killed process
    setvbuf(stdout, NULL, _IOLBF, 0);
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
                      : !o->train.n && !(p->plans_only && *p->plans_only) ? "at least one --train shard is required"
                      : !o->out && !(p->plans_only && *p->plans_only) ? "--out is required"
                      : o->seq_len < 2 ? "--seq-len must be at least 2"
                      : o->batch < 1 || o->grad_accum < 1 ? "--batch and --grad-accum must be positive"
                      : o->steps < 0 ? "--steps must not be negative"
                      : !(o->lr > 0) ? "--lr must be positive"
                      : o->warmup < 0 ? "--warmup must not be negative"
                      : !(o->weight_decay >= 0) || !(o->clip >= 0) ? "--weight-decay and --clip must not be negative"
                      : o->lora_r < 1 || !(o->lora_alpha > 0) ? "--lora-r and --lora-alpha must be positive"
                      : !(o->lora_dropout >= 0 && o->lora_dropout < 1) ? "--lora-dropout must be in [0, 1)"
                      : o->eval_every < 0 || o->checkpoint_every < 0 || o->sample_every < 0
                          ? "--eval-every, --checkpoint-every and --sample-every must not be negative"
                      : o->eval_every && !o->val.n ? "--eval-every needs --val shards to evaluate on"
                      : o->sample_every && !o->prompts ? "--sample-every needs --prompts"
                      : o->prompts && !o->tokenizer ? "--prompts needs --tokenizer"
                      : o->sample_tokens < 1 ? "--sample-tokens must be positive"
                      : o->prompts && o->sample_tokens >= o->seq_len ? "--sample-tokens must be below --seq-len, to leave room for a prompt"
                      : !(o->temperature >= 0) ? "--temperature must not be negative"
                      : !(o->top_p > 0 && o->top_p <= 1) ? "--top-p must be in (0, 1]"
                      : NULL;
    if (bad) {
        fprintf(stderr, "error: %s (see --help)\n", bad);
        return -1;
    }
    if (model_parse_targets(o->targets, &o->target_mask)) {
        fprintf(stderr, "error: --lora-targets '%s': expected a comma list of q,k,v,o,gate,up,down or \"all\"\n",
                o->targets);
        return -1;
    }
    if (schedule_parse(o->schedule, &o->schedule_kind)) {
        fprintf(stderr, "error: --schedule '%s': expected constant, linear or cosine\n", o->schedule);
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

// What a checkpoint must agree on with the run that resumes it, flag -> value: every flag
// that changes the numbers a step computes. The values are strings, compared as strings.
static void settings_json(Run *r, const char *train_ids) {
    const RunOptions *o = r->o;
    char desc[512], v[160], targets[128] = "";
    cJSON *j = cJSON_CreateObject();
    config_describe(&r->config, desc, sizeof(desc));
    cJSON_AddStringToObject(j, "--model", desc);
    cJSON_AddStringToObject(j, "--train", train_ids);
#define SETTING(flag, fmt, value) (snprintf(v, sizeof(v), fmt, value), cJSON_AddStringToObject(j, flag, v))
    SETTING("--seq-len", "%d", o->seq_len);
    SETTING("--batch", "%d", o->batch);
    SETTING("--grad-accum", "%d", o->grad_accum);
    SETTING("--lr", "%.9g", (double)o->lr);
    SETTING("--schedule", "%s", o->schedule);
    SETTING("--warmup", "%d", o->warmup);
    SETTING("--weight-decay", "%.9g", (double)o->weight_decay);
    SETTING("--clip", "%.9g", (double)o->clip);
    SETTING("--lora-r", "%d", o->lora_r);
    SETTING("--lora-alpha", "%.9g", (double)o->lora_alpha);
    SETTING("--rslora", "%s", o->rslora ? "on" : "off");
    SETTING("--lora-dropout", "%.9g", (double)o->lora_dropout);
    for (int p = 0; p < N_PROJ; p++)
        if (o->target_mask & (1u << p))
            snprintf(targets + strlen(targets), sizeof(targets) - strlen(targets), "%s%s", *targets ? "," : "",
                     proj_short[p]);
    SETTING("--lora-targets", "%s", targets);
    SETTING("--seed", "%llu", (unsigned long long)o->seed);
    SETTING("--no-nf4", "%s", o->no_nf4 ? "on" : "off");
    SETTING("mpirun -np", "%d", r->comm->world);  // each rank's data, and the global batch, depend on it
#undef SETTING
    r->settings = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
}

// Compares the checkpoint's settings with this run's (settings); on a difference names the
// flag and both values.
static int settings_check(const char *settings, const char *saved, const char *path, char *err) {
    cJSON *a = cJSON_Parse(saved), *b = cJSON_Parse(settings);
    int rc = 0;
    if (!cJSON_IsObject(a)) rc = set_error(err, "%s: the settings in its metadata are not a JSON object", path);
    for (const cJSON *now = b ? b->child : NULL; now && rc == 0; now = now->next) {
        const cJSON *then = cJSON_GetObjectItemCaseSensitive(a, now->string);
        if (!cJSON_IsString(then) || strcmp(then->valuestring, now->valuestring) != 0)
            rc = set_error(err, "%s: %s was '%s' for this run and is '%s' now; it cannot change on resume (--steps and "
                                "the evaluation, sampling and checkpoint flags can): use the same value, or another --out",
                           path, now->string, cJSON_IsString(then) ? then->valuestring : "(not recorded)",
                           now->valuestring);
    }
    cJSON_Delete(a), cJSON_Delete(b);
    return rc;
}

// ---------------------------------------------------------------------------------------
// JSON lines

// ', "key": value' (or '{"key": value' to start a line): printf's format of v, or null when
// v is not finite, so that every line stays JSON.
static void json_field(ByteBuf *b, const char *key, const char *fmt, double v) {
    char num[64];
    if (isfinite(v)) snprintf(num, sizeof(num), fmt, v);
    else snprintf(num, sizeof(num), "null");
    bytebuf_append(b, b->len ? ", \"" : "{\"", b->len ? 3 : 2);
    bytebuf_append(b, key, strlen(key));
    bytebuf_append(b, "\": ", 3);
    bytebuf_append(b, num, strlen(num));
}

// Appends a line to an append-only file with one write (so a kill leaves whole lines).
static int append_line(int fd, const char *path, ByteBuf *line, char *err) {
    bytebuf_push(line, '\n');
    ssize_t w;
    do w = write(fd, line->data, line->len);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)line->len) return set_error(err, "%s: cannot append: %s", path, w < 0 ? strerror(errno) : "short write");
    return 0;
}

static int log_append(Run *r, ByteBuf *line) {
    char err[ERR_LEN];
    bytebuf_push(line, '}');
    int rc = append_line(r->log_fd, r->log_path, line, err);
    if (rc) fprintf(stderr, "error: %s\n", err);
    bytebuf_free(line);
    return rc;
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

int checkpoint_write(const char *path, const RunParam *params, int n, const uint8_t *loader_states, size_t loader_bytes,
                     const RunState *state, const char *settings, char crc[16], char *err) {
    StWrite *w = xcalloc((size_t)n * 3 + 2, sizeof(StWrite));
    char (*names)[112] = xcalloc((size_t)n * 3 + 2, sizeof(*names));
    int k = 0;
    for (int i = 0; i < n; i++) {
        const RunParam *q = &params[i];
        const float *bufs[3] = {q->p, q->m, q->v};
        for (int j = 0; j < 3; j++) {
            snprintf(names[k], sizeof(names[k]), "%s%s", q->name, moment_suffix[j]);
            w[k] = (StWrite){names[k], ST_F32, 1, {(int64_t)q->n}, bufs[j]};
            k++;
        }
    }
    int64_t scalars[2] = {state->step, (int64_t)state->dropout_rng};
    w[k++] = (StWrite){"run.dataloader", ST_U8, 1, {(int64_t)loader_bytes}, loader_states};
    w[k++] = (StWrite){"run.scalars", ST_I64, 1, {2}, scalars};
    snprintf(crc, 16, "%08x", crc_of(w, k));
    const char *keys[] = {"format", "settings", "crc32"}, *values[] = {CHECKPOINT_FORMAT, settings, crc};
    int rc = st_write(path, w, k, keys, values, 3, err);
    free(w), free(names);
    return rc;
}

// For a run stopped by a failure: what it keeps on disk.
static const char *what_is_kept(const Run *r, char *buf, size_t n) {
    if (r->saved_step > 0) snprintf(buf, n, "the checkpoint of step %lld is kept", (long long)r->saved_step);
    else snprintf(buf, n, "no checkpoint was written yet");
    return buf;
}

// The CRC32 of this rank's LoRA weights and AdamW moments (in the host mirrors).
static uint32_t params_crc(const Run *r) {
    uLong crc = crc32(0L, Z_NULL, 0);
    for (int i = 0; i < r->n_params; i++) {
        const RunParam *q = &r->params[i];
        crc = crc32(crc, (const Bytef *)q->p, (uInt)(q->n * sizeof(float)));
        crc = crc32(crc, (const Bytef *)q->m, (uInt)(q->n * sizeof(float)));
        crc = crc32(crc, (const Bytef *)q->v, (uInt)(q->n * sizeof(float)));
    }
    return (uint32_t)crc;
}

// Writes the checkpoint of state.step; every rank calls it. The log is synced first, so that
// the log on disk always covers every step a checkpoint holds. Rank 0 gathers every rank's
// loader state (the checkpoint holds them all, in rank order) and the CRC32 of its LoRA
// state, which must equal its own; that gather is also the barrier: rank 0 writes (and
// st_write renames into place) only what every rank has reached.
static int checkpoint_save(Run *r) {
    char err[ERR_LEN];
    int rc = 0, world = r->comm->world;
    if (is_lead(r) && fsync(r->log_fd)) {
        fprintf(stderr, "error: %s: cannot sync: %s\n", r->log_path, strerror(errno));
        rc = 2;
    }
    if (rc == 0 && r->hooks.to_host && r->hooks.to_host(r->hooks.ctx, err)) {
        fprintf(stderr, "error: %s\n", err);
        rc = 2;
    }
    size_t ds = dataloader_state_size(r->dl);
    uint8_t *mine = xmalloc(ds), *dstate = xmalloc(ds * (size_t)world);
    dataloader_state_save(r->dl, mine);
    ranks_gather(r, mine, dstate, ds);
    uint32_t crc = world > 1 ? params_crc(r) : 0, *crcs = xcalloc((size_t)world, sizeof(uint32_t));
    ranks_gather(r, &crc, crcs, sizeof(crc));
    for (int k = 1; k < world && rc == 0 && is_lead(r); k++)
        if (crcs[k] != crcs[0]) {
            char kept[96];
            fprintf(stderr, "error: step %lld: rank %d's LoRA weights and AdamW moments differ from rank 0's (CRC32 %08x "
                            "and %08x): the ranks have diverged; stopped (%s)\n",
                    (long long)r->state.step, k, crcs[k], crcs[0], what_is_kept(r, kept, sizeof(kept)));
            rc = 2;
        }
    if (is_lead(r) && rc == 0 &&
        checkpoint_write(r->ckpt_path, r->params, r->n_params, dstate, ds * (size_t)world, &r->state, r->settings,
                         r->saved_crc, err)) {
        fprintf(stderr, "error: %s (the checkpoint of step %lld is still the last one)\n", err, (long long)r->saved_step);
        rc = 2;
    }
    free(mine), free(dstate), free(crcs);
    rc = agree(r, rc);
    if (rc == 0) r->saved_step = r->state.step;
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

int checkpoint_read(const char *path, const RunParam *params, int n, const char *settings, int steps, int world,
                    Dataloader *dl, RunState *state, uint8_t **loader_states, char crc[16], char *err) {
    SafeTensors st;
    if (st_open(&st, path, err)) return -1;
    int rc = 0;
    char *format = metadata_string(&st, "format"), *saved_settings = metadata_string(&st, "settings"),
         *saved_crc = metadata_string(&st, "crc32");
    if (!format || !saved_settings || !saved_crc)
        rc = set_error(err, "%s: not a persona.c checkpoint (no format, settings or crc32 metadata)", path);
    else if (strcmp(format, CHECKPOINT_FORMAT) != 0)
        rc = set_error(err, "%s: a checkpoint of another persona.c version (\"%s\"; this one reads \"%s\"); use another --out",
                       path, format, CHECKPOINT_FORMAT);
    else
        rc = settings_check(settings, saved_settings, path, err);
    StWrite *w = xcalloc((size_t)n * 3 + 2, sizeof(StWrite));
    int k = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        for (int j = 0; j < 3 && rc == 0; j++) {
            char name[112];
            snprintf(name, sizeof(name), "%s%s", params[i].name, moment_suffix[j]);
            const StTensor *t = st_find(&st, name);
            if (!t || t->dtype != ST_F32 || (size_t)t->numel != params[i].n) {
                rc = set_error(err, "%s: tensor '%s' is missing or of the wrong size", path, name);
                break;
            }
            w[k++] = (StWrite){t->name, ST_F32, 1, {t->numel}, t->data};
        }
    }
    const StTensor *dstate = st_find(&st, "run.dataloader"), *scal = st_find(&st, "run.scalars");
    if (rc == 0 && (!dstate || dstate->dtype != ST_U8 || !scal || scal->dtype != ST_I64 || scal->numel != 2))
        rc = set_error(err, "%s: the run state is missing", path);
    if (rc == 0) {
        w[k++] = (StWrite){dstate->name, ST_U8, 1, {dstate->numel}, dstate->data};
        w[k++] = (StWrite){scal->name, ST_I64, 1, {2}, scal->data};
        char now[16];
        snprintf(now, sizeof(now), "%08x", crc_of(w, k));
        if (strcmp(now, saved_crc) != 0) rc = set_error(err, "%s: CRC32 mismatch: the checkpoint is damaged", path);
    }
    int64_t scalars[2] = {0, 0};
    if (rc == 0) memcpy(scalars, scal->data, sizeof(scalars));
    if (rc == 0 && (scalars[0] < 1 || scalars[0] > steps))
        rc = set_error(err, "%s: a checkpoint of step %lld, %s --steps %d; give --steps %lld or more to go on", path,
                       (long long)scalars[0], scalars[0] < 1 ? "outside" : "beyond", steps, (long long)scalars[0]);
    size_t ds = dataloader_state_size(dl), all = ds * (size_t)world;
    if (rc == 0 && dstate->nbytes != all)
        rc = set_error(err, "%s: the loader states are %zu bytes, %d rank(s) need %zu", path, dstate->nbytes, world, all);
    if (rc == 0 && dataloader_state_restore(dl, dstate->data, ds, err)) rc = -1;  // rank 0's
    if (rc == 0) {  // only now, when everything checked out, touch the parameters
        for (int i = 0, j = 0; i < n; i++, j += 3) {
            const RunParam *q = &params[i];
            memcpy(q->p, w[j].data, q->n * sizeof(float));
            memcpy(q->m, w[j + 1].data, q->n * sizeof(float));
            memcpy(q->v, w[j + 2].data, q->n * sizeof(float));
        }
        state->step = scalars[0];
        state->dropout_rng = (uint64_t)scalars[1];
        snprintf(crc, 16, "%s", saved_crc);
        if (loader_states) {  // the other ranks' get sent to them (share_run_state)
            *loader_states = xmalloc(all);
            memcpy(*loader_states, dstate->data, all);
        }
    }
    free(format), free(saved_settings), free(saved_crc), free(w);
    st_close(&st);
    return rc;
}

// Restores parameters, moments, the data loader and the run state from the checkpoint,
// touching nothing unless all of it checks out.
static int checkpoint_load(Run *r, char *err) {
    if (checkpoint_read(r->ckpt_path, r->params, r->n_params, r->settings, r->o->steps, r->comm->world, r->dl, &r->state,
                        &r->loader_states, r->saved_crc, err))
        return -1;
    r->saved_step = r->state.step;
    return 0;
}

// ---------------------------------------------------------------------------------------
// the run directory

// The files we write in a run directory (and its adapter/), whose temporaries
// (NAME.tmp.XXXXXX, util.h's write_file_atomically and st_write) a killed run leaves.
static const char *const run_files[] = {"checkpoint.safetensors", "log.jsonl", "samples.jsonl", "DONE", NULL};
static const char *const adapter_files[] = {"adapter_model.safetensors", "adapter_config.json", NULL};

// Removes dir/NAME.tmp.XXXXXX for each of names, saying so. Returns the number removed.
static int remove_stale_temporaries(const char *dir, const char *const *names) {
    DIR *d = opendir(dir);
    int removed = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        for (int i = 0; names[i]; i++) {
            size_t n = strlen(names[i]);
            const char *tail = e->d_name + n;
            if (strncmp(e->d_name, names[i], n) || strncmp(tail, ".tmp.", 5) || strlen(tail + 5) != 6) continue;
            char path[4200];
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            if (unlink(path) == 0) {
                printf("removed %s, a temporary file left by a run that was killed\n", path);
                removed++;
            }
        }
    }
    if (d) closedir(d);
    return removed;
}

// What a resumed run keeps of its log: the step lines up to the checkpoint's step and the
// evaluations before it (the evaluation of that step comes after the checkpoint and is
// done again), and of samples.jsonl: the samples before it.
static int keep_log_line(const cJSON *j, int64_t step) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "step");
    if (!cJSON_IsNumber(s)) return 0;
    return s->valuedouble < (double)step || (s->valuedouble == (double)step && cJSON_HasObjectItem(j, "loss"));
}
static int keep_sample_line(const cJSON *j, int64_t step) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "step");
    return cJSON_IsNumber(s) && s->valuedouble < (double)step;
}

// Rewrites path (when it exists) with the whole lines keep() accepts, atomically; *dropped
// counts the others (a partial last line included). Returns 0 or -1 with err.
static int cut_back(const char *path, int64_t step, int (*keep)(const cJSON *, int64_t), int *dropped, char *err) {
    size_t len;
    char e2[ERR_LEN];
    struct stat sb;
    *dropped = 0;
    if (stat(path, &sb)) return 0;  // nothing written yet
    char *text = read_file(path, &len, e2);
    if (!text) return set_error(err, "%s", e2);
    ByteBuf keep_buf = {0};
    for (char *line = text, *end = text + len; line < end;) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t n = nl ? (size_t)(nl - line) + 1 : (size_t)(end - line);
        cJSON *j = nl ? cJSON_ParseWithLength(line, n) : NULL;
        if (j && keep(j, step)) bytebuf_append(&keep_buf, line, n);
        else (*dropped)++;
        cJSON_Delete(j);
        line += n;
    }
    int rc = *dropped ? write_file_atomically(path, keep_buf.data ? keep_buf.data : "", keep_buf.len, err) : 0;
    free(text);
    bytebuf_free(&keep_buf);
    return rc;
}

// Refuses --out when it is an input, or a file.
static int check_out_dir(const RunOptions *o, char *err) {
    struct stat out, in;
    if (stat(o->out, &out)) return 0;  // created in run_start
    if (!S_ISDIR(out.st_mode)) return set_error(err, "--out %s exists and is not a directory", o->out);
    if (stat(o->model, &in) == 0 && in.st_dev == out.st_dev && in.st_ino == out.st_ino)
        return set_error(err, "--out %s is the model directory: the run directory must be another one", o->out);
    return 0;
}

// Refuses an input file that is one of the run directory's outputs.
static int check_not_output(const RunOptions *o, const char *flag, const char *path, char *err) {
    struct stat in, out;
    if (!path || stat(path, &in)) return 0;
    for (int i = 0; run_files[i]; i++) {
        char p[4200];
        snprintf(p, sizeof(p), "%s/%s", o->out, run_files[i]);
        if (stat(p, &out) == 0 && in.st_dev == out.st_dev && in.st_ino == out.st_ino)
            return set_error(err, "%s %s is the run's own %s: an input is never an output", flag, path, run_files[i]);
    }
    return 0;
}

// ---------------------------------------------------------------------------------------
// the inputs

// The model directory's own tokenizer files and their fingerprints (up to 8).
typedef struct {
    char path[8][4200];
    uint64_t fingerprint[8];
    int n;
} ModelTokenizers;

static int model_tokenizers(const char *dir, ModelTokenizers *t, char *err) {
    t->n = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d)) && t->n < 8;) {
        const char *s = e->d_name;
        if (strcmp(s, "tokenizer.model") && strncmp(s, "tokenizer.model.v", 17) && strcmp(s, "tekken.json") &&
            strcmp(s, "tokenizer.json"))
            continue;
        snprintf(t->path[t->n], sizeof(t->path[0]), "%s/%s", dir, s);
        if (shard_fingerprint_file(t->path[t->n], &t->fingerprint[t->n], err)) {
            closedir(d);
            return -1;
        }
        t->n++;
    }
    if (d) closedir(d);
    return 0;
}

// The model's tokenizer file whose fingerprint is f, or NULL.
static const char *model_tokenizer_matching(const ModelTokenizers *t, uint64_t f) {
    for (int i = 0; i < t->n; i++)
        if (t->fingerprint[i] == f) return t->path[i];
    return NULL;
}

// Every shard: made with one tokenizer (each compared with the first), the one of
// --tokenizer and of the model directory, a vocabulary the model's embeddings cover. The
// training shards' identities (source name and the CRC32 of their tokens) go into *ids.
static int check_shards(Run *r, ByteBuf *ids, char *err) {
    const RunOptions *o = r->o;
    ModelTokenizers mt;
    if (model_tokenizers(o->model, &mt, err)) return -1;
    if (o->tokenizer && mt.n && !model_tokenizer_matching(&mt, r->fingerprint))
        return set_error(err, "--tokenizer %s is not the model's own tokenizer %s (fingerprints %016llx and %016llx): "
                              "use the model's, and make the shards with it",
                         o->tokenizer, mt.path[0], (unsigned long long)r->fingerprint,
                         (unsigned long long)mt.fingerprint[0]);
    const char *first = NULL;
    uint64_t first_fp = 0;
    for (int i = 0; i < o->train.n + o->val.n; i++) {
        Shard sh;
        const char *p = i < o->train.n ? o->train.path[i] : o->val.path[i - o->train.n];
        if (shard_open(&sh, p, 0, err)) return -1;
        ShardHeader h = sh.h;
        shard_close(&sh);
        if (!first) first = p, first_fp = h.fingerprint;
        if (h.fingerprint != first_fp)
            return set_error(err, "%s and %s were made with different tokenizers (fingerprints %016llx and %016llx): "
                                  "make every shard with the same one",
                             first, p, (unsigned long long)first_fp, (unsigned long long)h.fingerprint);
        if (o->tokenizer && h.fingerprint != r->fingerprint)
            return set_error(err, "%s was made with another tokenizer than %s (fingerprints %016llx and %016llx): "
                                  "re-run prep with it",
                             p, o->tokenizer, (unsigned long long)h.fingerprint, (unsigned long long)r->fingerprint);
        if (!o->tokenizer && mt.n && !model_tokenizer_matching(&mt, h.fingerprint))
            return set_error(err, "%s was made with another tokenizer than the model's own %s (fingerprints %016llx and "
                                  "%016llx): re-run prep with it",
                             p, mt.path[0], (unsigned long long)h.fingerprint, (unsigned long long)mt.fingerprint[0]);
        if (h.vocab_size > (uint32_t)r->config.vocab_size)
            return set_error(err, "%s: made with a %u-token vocabulary, but %s has %d embeddings", p, h.vocab_size,
                             o->model, r->config.vocab_size);
        if (i < o->train.n) {
            char id[128];
            snprintf(id, sizeof(id), "%s%s:%08x", i ? "," : "", h.source, h.section[SHARD_TOKENS].crc32);
            bytebuf_append(ids, id, strlen(id));
        }
    }
    r->fingerprint = first_fp;  // so the loaders check it once more
    return 0;
}

// Reads and encodes --prompts: one prompt a line (empty lines skipped, a final CR
// dropped); each with its answer must fit in --seq-len, the longest the run trains, so a
// stray huge line cannot make generation allocate without bound.
static int read_prompts(Run *r, char *err) {
    const RunOptions *o = r->o;
    size_t len;
    char *text = read_file(o->prompts, &len, err);
    if (!text) return -1;
    ChatFormat fmt = chat_format_for(&r->tok);
    int rc = 0, line_no = 0;
    for (char *line = text, *end = text + len; line < end && rc == 0;) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t n = nl ? (size_t)(nl - line) : (size_t)(end - line);
        char *next = line + n + 1;
        line_no++;
        if (n && line[n - 1] == '\r') n--;
        if (memchr(line, '\0', n)) {
            rc = set_error(err, "%s:%d: a NUL byte in the prompt", o->prompts, line_no);
        } else if (n) {
            RunPrompt p = {0};
            ByteBuf mask = {0};
            ChatMessage msg = {ROLE_USER, line, n, -1.0};
            if (chat_encode(&r->tok, fmt, &msg, 1, &p.ids, &mask, err)) rc = -1;
            else if (p.ids.len + (size_t)o->sample_tokens > (size_t)o->seq_len)
                rc = set_error(err, "%s:%d: the prompt is %zu tokens; with --sample-tokens %d it does not fit in "
                                    "--seq-len %d, the longest the run trains (at most %d tokens)",
                               o->prompts, line_no, p.ids.len, o->sample_tokens, o->seq_len,
                               o->seq_len - o->sample_tokens);
            bytebuf_free(&mask);
            if (rc) {
                tokvec_free(&p.ids);
                break;
            }
            p.text = xmalloc(n + 1);
            memcpy(p.text, line, n);
            p.text[n] = '\0';
            r->prompts = xrealloc(r->prompts, (size_t)(r->n_prompts + 1) * sizeof(RunPrompt));
            r->prompts[r->n_prompts++] = p;
        }
        line = next;
    }
    free(text);
    if (rc == 0 && !r->n_prompts) rc = set_error(err, "%s: no prompts in it (one per line)", o->prompts);
    return rc;
}

// ---------------------------------------------------------------------------------------
// opening and resuming

// The first signal asks the run to stop at the next safe point; a second ends it at once
// (every file is written atomically, so nothing is left half-written either way).
static void on_signal(int sig) {
    if (stop_requested) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_requested = sig;
    static const char msg[] = "\nstopping: the step in progress finishes and is saved (signal again to stop at once)\n";
    ssize_t ignored = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)ignored;
}

int run_stop_signal(void) { return stop_requested; }

int run_agree(Run *r, int status, const char *err) {
    int v[2] = {status, is_lead(r) ? status : 0};  // the worst status, rank 0's
    ranks_max(r, v, 2);
    if (status && is_lead(r)) fprintf(stderr, "error: %s\n", err);
    else if (status && !v[1]) fprintf(stderr, "error: rank %d: %s\n", r->comm->rank, err);
    return v[0];
}

int run_open(Run *r, const RunOptions *o, const RunComm *comm) {
    memset(r, 0, sizeof(*r));
    r->o = o;
    r->comm = comm ? comm : &single_rank;
    r->lock_fd = r->log_fd = -1;
    r->saved_step = -1;
    char err[ERR_LEN];
    ByteBuf train_ids = {0};
    if (model_config_load(&r->config, o->model, err) || check_out_dir(o, err)) goto bad;
    if (o->tokenizer) {
        if (tokenizer_load(&r->tok, o->tokenizer, err) || shard_fingerprint_file(o->tokenizer, &r->fingerprint, err))
            goto bad;
        if (r->tok.vocab_size > r->config.vocab_size) {
            set_error(err, "--tokenizer %s has %d tokens, but %s has %d embeddings", o->tokenizer, r->tok.vocab_size,
                      o->model, r->config.vocab_size);
            goto bad;
        }
    }
    if (check_shards(r, &train_ids, err)) goto bad;
    if (check_not_output(o, "--model", o->model, err) || check_not_output(o, "--tokenizer", o->tokenizer, err) ||
        check_not_output(o, "--prompts", o->prompts, err))
        goto bad;
    for (int i = 0; i < o->train.n + o->val.n; i++)
        if (check_not_output(o, "--train/--val", i < o->train.n ? o->train.path[i] : o->val.path[i - o->train.n], err))
            goto bad;
    if (o->prompts && read_prompts(r, err)) goto bad;
    LoaderConfig lc = {o->batch, o->seq_len, o->seed, r->comm->rank, r->comm->world, r->fingerprint};
    if (!(r->dl = dataloader_open(o->train.path, o->train.n, &lc, err))) goto bad;
    if (o->val.n && !(r->ev = evalloader_open(o->val.path, o->val.n, &lc, err))) goto bad;
    settings_json(r, train_ids.data);
    bytebuf_free(&train_ids);
    return run_agree(r, 0, err);
bad:
    bytebuf_free(&train_ids);
    return run_agree(r, 1, err);
}

// Whether DONE says the run finished at the checkpoint's step.
static int done_matches(const Run *r) {
    size_t len;
    char e[ERR_LEN];
    char *text = read_file(r->done_path, &len, e);
    cJSON *j = text ? cJSON_ParseWithLength(text, len) : NULL;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "step"), *c = cJSON_GetObjectItemCaseSensitive(j, "checkpoint_crc32");
    int ok = cJSON_IsNumber(s) && s->valuedouble == (double)r->state.step && cJSON_IsString(c) &&
             strcmp(c->valuestring, r->saved_crc) == 0;
    cJSON_Delete(j);
    free(text);
    return ok;
}

// run_start's work on the run directory, rank 0's alone.
static int open_run_dir(Run *r) {
    const RunOptions *o = r->o;
    char err[ERR_LEN];
    if (mkdir(o->out, 0755) && errno != EEXIST) {
        fprintf(stderr, "error: %s: cannot create: %s\n", o->out, strerror(errno));
        return 1;
    }
    // one trainer per run directory: a second would interleave its steps with ours
    r->lock_fd = open(o->out, O_RDONLY | O_DIRECTORY);
    if (r->lock_fd < 0 || flock(r->lock_fd, LOCK_EX | LOCK_NB)) {
        fprintf(stderr, "error: %s: %s\n", o->out,
                errno == EWOULDBLOCK ? "another trainer is using this run directory" : strerror(errno));
        return 1;
    }
    remove_stale_temporaries(o->out, run_files);
    remove_stale_temporaries(r->adapter_path, adapter_files);
    struct stat sb;
    if (stat(r->ckpt_path, &sb) == 0) {
        if (checkpoint_load(r, err)) {
            fprintf(stderr, "error: %s\n", err);
            return 1;
        }
        char adapter_file[4200];
        snprintf(adapter_file, sizeof(adapter_file), "%s/adapter_model.safetensors", r->adapter_path);
        r->done = r->state.step == o->steps && done_matches(r) && stat(adapter_file, &sb) == 0;
    }
    if (!r->done && unlink(r->done_path) == 0 && sync_parent_dir(r->done_path)) {
        fprintf(stderr, "error: %s: cannot sync: %s\n", o->out, strerror(errno));
        return 2;
    }
    int cut_log = 0, cut_samples = 0;
    int64_t keep = r->saved_step < 0 ? 0 : r->saved_step;
    if (!r->done && (cut_back(r->log_path, keep, keep_log_line, &cut_log, err) ||
                     cut_back(r->samples_path, keep, keep_sample_line, &cut_samples, err))) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    if (r->saved_step > 0)
        printf("resuming %s from step %lld%s\n", o->out, (long long)r->state.step,
               cut_log || cut_samples ? " (the log lines after its checkpoint removed)" : "");
    else if (cut_log || cut_samples)
        printf("%s: no checkpoint yet: starting over (the %d log line(s) of the earlier try removed)\n", o->out, cut_log);
    r->post_pending = r->saved_step > 0;
    if ((r->log_fd = open(r->log_path, O_WRONLY | O_APPEND | O_CREAT, 0644)) < 0) {
        fprintf(stderr, "error: %s: %s\n", r->log_path, strerror(errno));
        return 2;
    }
    return 0;
}

// What rank 0 found in the run directory, to the other ranks: the run state and, for a
// resumed run, the parameters and moments, and each rank's loader state (which it restores).
// A fresh run's parameters are the same on every rank already (the same initialisation from
// the same seed), and the first checkpoint's CRC32 comparison would say if not.
static int share_run_state(Run *r) {
    int64_t v[4] = {r->state.step, (int64_t)r->state.dropout_rng, r->saved_step, r->done};
    ranks_broadcast(r, v, sizeof(v));
    r->state.step = v[0], r->state.dropout_rng = (uint64_t)v[1], r->saved_step = v[2], r->done = (int)v[3];
    r->post_pending = r->saved_step > 0;
    int rc = 0;
    if (r->saved_step > 0) {
        for (int i = 0; i < r->n_params; i++) {
            RunParam *q = &r->params[i];
            ranks_broadcast(r, q->p, q->n * sizeof(float));
            ranks_broadcast(r, q->m, q->n * sizeof(float));
            ranks_broadcast(r, q->v, q->n * sizeof(float));
        }
        size_t ds = dataloader_state_size(r->dl);
        if (!is_lead(r)) r->loader_states = xmalloc(ds * (size_t)r->comm->world);
        ranks_broadcast(r, r->loader_states, ds * (size_t)r->comm->world);
        char err[ERR_LEN];
        if (!is_lead(r) && dataloader_state_restore(r->dl, r->loader_states + ds * (size_t)r->comm->rank, ds, err)) {
            fprintf(stderr, "error: rank %d: %s: %s\n", r->comm->rank, r->ckpt_path, err);
            rc = 1;
        }
        free(r->loader_states);
        r->loader_states = NULL;
    }
    ranks_max(r, &rc, 1);
    return rc;
}

int run_start(Run *r, RunParam *params, int n_params, const RunHooks *hooks) {
    const RunOptions *o = r->o;
    r->params = params;
    r->n_params = n_params;
    r->hooks = *hooks;
    r->state = (RunState){0, o->seed ^ 0xD120ull};
    snprintf(r->ckpt_path, sizeof(r->ckpt_path), "%s/checkpoint.safetensors", o->out);
    snprintf(r->log_path, sizeof(r->log_path), "%s/log.jsonl", o->out);
    snprintf(r->samples_path, sizeof(r->samples_path), "%s/samples.jsonl", o->out);
    snprintf(r->adapter_path, sizeof(r->adapter_path), "%s/adapter", o->out);
    snprintf(r->done_path, sizeof(r->done_path), "%s/DONE", o->out);
    int rc = is_lead(r) ? open_run_dir(r) : 0;
    ranks_max(r, &rc, 1);  // rank 0's status (it printed the reason)
    if (rc == 0 && r->comm->world > 1) rc = share_run_state(r);
    if (rc) return rc;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
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
    if (r->comm->world > 1)
        printf("  %d ranks, each with its own share of the data: a step trains %d x %d x %d = %d rows of %d\n",
               r->comm->world, r->comm->world, o->batch, o->grad_accum, r->comm->world * o->batch * o->grad_accum,
               o->seq_len);
}

// ---------------------------------------------------------------------------------------
// evaluation and samples

// Every `every` steps (0: never) and at the last step.
static int due(const Run *r, int every) {
    return (every && r->state.step % every == 0) || r->state.step == r->o->steps;
}

// Evaluates (every rank its share, the sums reduced) and logs. Returns 0 (done, or stopped
// by a signal on some rank: done again on resume), or 2.
static int evaluate(Run *r) {
    double sum = 0.0;
    int64_t mine = 0;
    int stopped = r->hooks.evaluate(r->hooks.ctx, r->ev, &sum, &mine) != 0;
    double v[3] = {sum, (double)mine, stopped};  // counts are exact in a double up to 2^53
    ranks_sum(r, v, 3);
    if (v[2] > 0 || !is_lead(r)) return 0;
    int64_t vt = (int64_t)v[1];
    double vl = vt ? v[0] / (double)vt : 0.0;
    ByteBuf line = {0};
    json_field(&line, "step", "%.0f", (double)r->state.step);
    json_field(&line, "val_loss", "%.6f", vl);
    json_field(&line, "val_trained", "%.0f", (double)vt);
    printf("step %5lld | val loss %.4f over %lld trained tokens\n", (long long)r->state.step, vl, (long long)vt);
    return log_append(r, &line) ? 2 : 0;
}

// Answers each probe prompt as the character would, into samples.jsonl. The generator is
// seeded from the step alone, so that answers done again after a resume are the same.
// Returns 0 (done or stopped by a signal), or 2.
static int write_samples(Run *r) {
    const RunOptions *o = r->o;
    char err[ERR_LEN];
    int fd = open(r->samples_path, O_WRONLY | O_APPEND | O_CREAT, 0644), rc = 0;
    if (fd < 0) {
        fprintf(stderr, "error: %s: %s\n", r->samples_path, strerror(errno));
        return 2;
    }
    uint64_t rng = (o->seed ^ 0x5A17ull) + (uint64_t)r->state.step * 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < r->n_prompts && rc == 0; i++) {
        TokenVec ids = {0};
        ByteBuf answer = {0};
        for (size_t k = 0; k < r->prompts[i].ids.len; k++) tokvec_push(&ids, r->prompts[i].ids.ids[k]);
        size_t prompt_len = ids.len;
        if (r->hooks.generate(r->hooks.ctx, &ids, o->sample_tokens, r->tok.eos_id, o->temperature, o->top_p, &rng)) {
            printf("samples of step %lld stopped by the signal (they are answered again on resume)\n",
                   (long long)r->state.step);
            tokvec_free(&ids);
            break;
        }
        if (tokenizer_decode(&r->tok, ids.ids + prompt_len, ids.len - prompt_len, &answer, err)) {
            fprintf(stderr, "error: %s\n", err);
            rc = 2;
        } else {
            cJSON *j = cJSON_CreateObject();
            cJSON_AddNumberToObject(j, "step", (double)r->state.step);
            cJSON_AddStringToObject(j, "prompt", r->prompts[i].text);
            cJSON_AddStringToObject(j, "text", answer.data ? answer.data : "");
            char *s = cJSON_PrintUnformatted(j);
            ByteBuf line = {0};
            bytebuf_append(&line, s, strlen(s));
            printf("sample: %s\n", s);
            if (append_line(fd, r->samples_path, &line, err)) {
                fprintf(stderr, "error: %s\n", err);
                rc = 2;
            }
            bytebuf_free(&line);
            free(s);
            cJSON_Delete(j);
        }
        tokvec_free(&ids), bytebuf_free(&answer);
    }
    if (fsync(fd) && rc == 0) {  // before the next checkpoint, which covers these lines
        fprintf(stderr, "error: %s: cannot sync: %s\n", r->samples_path, strerror(errno));
        rc = 2;
    }
    close(fd);
    return rc;
}

// The evaluation and the samples (rank 0's alone) of step state.step, when due: the next
// step's, or the last one's (in run_finish, after the adapter). Skipped once a signal asked
// to stop: the resumed run does them.
static int evaluate_and_sample(Run *r, int eval, int samples) {
    int rc = eval || samples ? agree(r, 0) : 0;  // a signal that came during the checkpoint
    if (eval && !r->stop) rc = evaluate(r);
    if (rc == 0 && samples && is_lead(r) && !stop_requested) rc = write_samples(r);
    return rc;
}

static int after_step(Run *r) {
    return evaluate_and_sample(r, r->ev && due(r, r->o->eval_every), r->n_prompts && due(r, r->o->sample_every));
}

// ---------------------------------------------------------------------------------------
// the steps

int run_next(Run *r) {
    if (r->post_pending && r->state.step < r->o->steps) r->failed = after_step(r);
    r->post_pending = 0;
    r->failed = agree(r, r->failed);
    return !r->failed && !r->done && r->state.step < r->o->steps && !r->stop;
}

// The step's log line (rank 0). Returns 0 or 2.
static int log_step(Run *r, const RunStep *s) {
    const RunOptions *o = r->o;
    int64_t step = r->state.step;
    double tps = s->tokens / s->seconds;
    ByteBuf line = {0}, console = {0};
    json_field(&line, "step", "%.0f", (double)step);
    json_field(&line, "loss", "%.6f", s->loss);
    json_field(&line, "lr", "%.6e", s->lr);
    json_field(&line, "grad_norm", "%.6f", s->grad_norm);
    json_field(&line, "trained", "%.0f", (double)s->trained);
    json_field(&line, "tokens_per_s", "%.1f", tps);
    for (int i = 0; i < s->n_extra; i++) {
        char num[64];
        json_field(&line, s->extra[i].key, s->extra[i].format, s->extra[i].value);
        snprintf(num, sizeof(num), s->extra[i].format, s->extra[i].value);
        bytebuf_append(&console, " | ", 3);
        bytebuf_append(&console, s->extra[i].key, strlen(s->extra[i].key));
        bytebuf_push(&console, ' ');
        bytebuf_append(&console, num, strlen(num));
    }
    printf("step %5lld/%d | loss %.4f | lr %.3e | grad norm %.3f | %lld trained | %.0f tok/s%s\n", (long long)step,
           o->steps, s->loss, s->lr, s->grad_norm, (long long)s->trained, tps, console.data ? console.data : "");
    bytebuf_free(&console);
    return log_append(r, &line) ? 2 : 0;
}

int run_step_done(Run *r, const RunStep *s) {
    const RunOptions *o = r->o;
    int64_t step = ++r->state.step;
    int rc = is_lead(r) ? log_step(r, s) : 0;
    if (rc == 0 && (!isfinite(s->loss) || !isfinite(s->grad_norm))) {  // the same numbers on every rank
        char kept[96];
        if (is_lead(r))
            fprintf(stderr, "error: step %lld: the loss is %g and the gradient norm %g: training diverged; stopped "
                            "without saving this step (%s); a lower --lr or a --clip may help\n",
                    (long long)step, s->loss, s->grad_norm, what_is_kept(r, kept, sizeof(kept)));
        rc = 2;
    }
    rc = agree(r, rc);
    if (rc == 0 && (step == o->steps || r->stop || (o->checkpoint_every && step % o->checkpoint_every == 0)))
        rc = checkpoint_save(r);
    return rc == 0 && step < o->steps ? after_step(r) : rc;
}

static int adapter_export(Run *r) {
    char err[ERR_LEN];
    if (r->hooks.to_host && r->hooks.to_host(r->hooks.ctx, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    PeftMatrix *mats = xcalloc((size_t)r->n_params + 1, sizeof(PeftMatrix));
    for (int i = 0; i < r->n_params; i++) {
        const RunParam *q = &r->params[i];
        mats[i] = (PeftMatrix){q->layer, q->proj, q->is_b, q->rows, q->cols, q->p};
    }
    const RunOptions *o = r->o;
    PeftSettings s = {o->lora_r, o->rslora, o->lora_alpha, o->lora_dropout, o->model};
    int rc = peft_adapter_write(r->adapter_path, mats, r->n_params, &s, err);
    free(mats);
    if (rc) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    printf("adapter written to %s (PEFT format)\n", r->adapter_path);
    return 0;
}

int run_finish(Run *r) {
    const RunOptions *o = r->o;
    if (r->failed) return r->failed;
    if (r->done) {
        printf("%s finished at step %lld already (DONE): nothing to do; give a larger --steps to go on\n", o->out,
               (long long)r->state.step);
        return 0;
    }
    int rc = 0;
    if (r->state.step == o->steps) {  // the checkpoint of the last step is written
        if ((rc = agree(r, is_lead(r) ? adapter_export(r) : 0))) return rc;
        if ((rc = agree(r, evaluate_and_sample(r, r->ev != NULL, r->n_prompts > 0)))) return rc;
        if (!r->stop) {
            char text[96], err[ERR_LEN];
            snprintf(text, sizeof(text), "{\"step\": %lld, \"checkpoint_crc32\": \"%s\"}\n", (long long)r->state.step,
                     r->saved_crc);
            if (is_lead(r) && write_file_atomically(r->done_path, text, strlen(text), err)) {
                fprintf(stderr, "error: %s\n", err);
                rc = 2;
            }
            if ((rc = agree(r, rc))) return rc;
            printf("finished: %s/DONE written\n", o->out);
            return 0;
        }
    }
    if (r->saved_step != r->state.step && (rc = checkpoint_save(r))) return rc;
    printf("stopped by signal %d at step %lld; the checkpoint is written: run the same command to go on\n", r->stop,
           (long long)r->state.step);
    return 128 + r->stop;
}

void run_close(Run *r) {
    if (!r->o) return;  // never opened
    if (r->log_fd >= 0) close(r->log_fd);
    if (r->lock_fd >= 0) close(r->lock_fd);
    for (int i = 0; i < r->n_prompts; i++) free(r->prompts[i].text), tokvec_free(&r->prompts[i].ids);
    free(r->prompts);
    free(r->settings);
    free(r->loader_states);
    if (r->ev) evalloader_close(r->ev);
    if (r->dl) dataloader_close(r->dl);
    if (r->tok.kind) tokenizer_free(&r->tok);
    memset(r, 0, sizeof(*r));
}
