// chat_batch.c: answering a requests file with continuous batching (see chat_batch.h).
#include "chat_batch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/strmap.h"
#include "../data/conversation.h"
#include "../data/persona_jsonl.h"
#include "../tokenizer/utf8.h"
#include "chat_session.h"
#include "decode.h"

typedef struct {
    char *id, *model;  // custom_id; body.model (NULL: none)
    TokenVec prompt;
    int max_tokens;
    SampleConfig sample;
} Request;

typedef struct {
    Request *r;
    size_t n;
    StrMap ids;  // custom_id -> index
} Requests;

static void requests_free(Requests *q) {
    for (size_t i = 0; i < q->n; i++) free(q->r[i].id), free(q->r[i].model), tokvec_free(&q->r[i].prompt);
    free(q->r);
    strmap_free(&q->ids);
}

static const char *string_of(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

// One request line into r: its id, its prompt's tokens, its limits. Returns 0 or -1 with
// the reason in why.
static int parse_request(const char *line, size_t len, Tokenizer *tok, ChatFormat fmt, const BatchOptions *o,
                         Request *r, char *why) {
    cJSON *json = cJSON_ParseWithLength(line, len);
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(json, "body");
    const char *id = string_of(json, "custom_id");
    int rc = 0;
    memset(r, 0, sizeof(*r));
    if (!cJSON_IsObject(json)) rc = set_error(why, "not a JSON object");
    else if (!id || !*id) rc = set_error(why, "no \"custom_id\" string");
    else if (!cJSON_IsObject(body)) rc = set_error(why, "no \"body\" object");
    if (rc == 0) {  // the messages, checked as prep checks a conversation
        char *text = jsonl_print(body), reason[ERR_LEN];
        Conversation conv = {0};
        if (conversation_parse(&conv, text, strlen(text), reason) || conv.kind != CONV_CHAT)
            rc = set_error(why, "body: %s", conv.kind == CONV_TEXT ? "no \"messages\"" : reason);
        else if (chat_prompt(tok, fmt, conv.msgs, conv.n, &r->prompt, reason))
            rc = set_error(why, "body: %s", reason);
        conversation_free(&conv);
        free(text);
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(body, "max_tokens"),
                *t = cJSON_GetObjectItemCaseSensitive(body, "temperature"),
                *p = cJSON_GetObjectItemCaseSensitive(body, "top_p");
    r->max_tokens = o->max_tokens;
    r->sample = o->sample;
    if (rc == 0 && mt && !cJSON_IsNull(mt)) {
        if (!cJSON_IsNumber(mt) || mt->valuedouble < 1 || mt->valuedouble > 1e9 || mt->valuedouble != floor(mt->valuedouble))
            rc = set_error(why, "body: max_tokens is not a positive whole number");
        else if (!o->force_max_tokens) r->max_tokens = (int)mt->valuedouble;
    }
    if (rc == 0 && t && !cJSON_IsNull(t)) {
        if (!cJSON_IsNumber(t) || !(t->valuedouble >= 0 && t->valuedouble <= 100))
            rc = set_error(why, "body: temperature is not a number in [0, 100]");
        else if (!o->force_temperature) r->sample.temperature = (float)t->valuedouble;
    }
    if (rc == 0 && p && !cJSON_IsNull(p)) {
        if (!cJSON_IsNumber(p) || !(p->valuedouble > 0 && p->valuedouble <= 1))
            rc = set_error(why, "body: top_p is not a number in (0, 1]");
        else if (!o->force_top_p) r->sample.top_p = (float)p->valuedouble;
    }
    if (rc == 0) {
        const char *model = string_of(body, "model");
        r->id = xstrdup(id);
        r->model = model ? xstrdup(model) : NULL;
    } else {
        tokvec_free(&r->prompt);
    }
    cJSON_Delete(json);
    return rc;
}

static int load_requests(const BatchOptions *o, Tokenizer *tok, ChatFormat fmt, Requests *q, char *err) {
    LineReader lr;
    memset(q, 0, sizeof(*q));
    strmap_init(&q->ids, 1024);
    if (lines_open(&lr, o->requests, err)) return -1;
    const char *s;
    size_t len, cap = 0;
    char why[ERR_LEN];
    int rc = 0;
    while (rc == 0 && lines_next(&lr, &s, &len)) {
        if (q->n == cap) q->r = xrealloc(q->r, (cap = cap ? 2 * cap : 256) * sizeof(Request));
        if (parse_request(s, len, tok, fmt, o, &q->r[q->n], why)) {
            rc = set_error(err, "%s:%zu: %s", o->requests, lr.line, why);
        } else if (strmap_put(&q->ids, q->r[q->n].id, strlen(q->r[q->n].id), (int32_t)q->n)) {
            rc = set_error(err, "%s:%zu: custom_id \"%s\" appears twice", o->requests, lr.line, q->r[q->n].id);
            q->n++;  // (freed with the others)
        } else {
            q->n++;
        }
    }
    if (rc == 0 && q->n == 0) rc = set_error(err, "%s: no requests", o->requests);
    lines_close(&lr);
    return rc;
}

// The answers already in the output: their ids are marked done. A last line without its
// newline (a run killed while writing it) is cut off. Returns how many requests are done,
// or -1 with the reason in err.
static long answers_done(const char *path, const Requests *q, char *done, char *err) {
    struct stat sb;
    if (stat(path, &sb) != 0) return 0;  // no output yet
    size_t len;
    char *text = read_file(path, &len, err);
    if (!text) return -1;
    long count = 0, line = 0;
    size_t whole = 0;  // bytes of complete lines
    for (size_t pos = 0; pos < len;) {
        char *nl = memchr(text + pos, '\n', len - pos);
        if (!nl) break;
        size_t n = (size_t)(nl - (text + pos));
        line++;
        cJSON *json = cJSON_ParseWithLength(text + pos, n);
        const char *id = string_of(json, "custom_id");
        int32_t k = id ? strmap_get(&q->ids, id, strlen(id)) : -1;
        if (n && !id) {
            cJSON_Delete(json);
            free(text);
            return set_error(err, "%s:%ld: not an answer line (no \"custom_id\"); is this the output of another run?",
                             path, line);
        }
        if (k >= 0 && !done[k]) done[k] = 1, count++;
        cJSON_Delete(json);
        pos += n + 1;
        whole = pos;
    }
    free(text);
    if (whole < len) {
        fprintf(stderr, "batch: %s: removing an unfinished last line (%zu bytes) left by an interrupted run\n", path,
                len - whole);
        if (truncate(path, (off_t)whole)) return set_error(err, "%s: cannot truncate: %s", path, strerror(errno));
    }
    return count;
}

// The answer line of a request.
static char *answer_line(const Request *r, const char *text, const char *finish, size_t completion, const char *error) {
    cJSON *j = cJSON_CreateObject();
    char id[512];
    snprintf(id, sizeof(id), "chat-%s", r->id);
    cJSON_AddStringToObject(j, "id", id);
    cJSON_AddStringToObject(j, "custom_id", r->id);
    if (error) {
        cJSON_AddNullToObject(j, "response");
        cJSON *e = cJSON_AddObjectToObject(j, "error");
        cJSON_AddStringToObject(e, "code", "context_length_exceeded");
        cJSON_AddStringToObject(e, "message", error);
    } else {
        cJSON *resp = cJSON_AddObjectToObject(j, "response"), *body;
        cJSON_AddNumberToObject(resp, "status_code", 200);
        body = cJSON_AddObjectToObject(resp, "body");
        cJSON_AddStringToObject(body, "object", "chat.completion");
        cJSON_AddStringToObject(body, "model", r->model ? r->model : "persona.c");
        cJSON *choice = cJSON_CreateObject(), *msg = cJSON_AddObjectToObject(choice, "message");
        cJSON_AddNumberToObject(choice, "index", 0);
        cJSON_AddStringToObject(msg, "role", "assistant");
        cJSON_AddStringToObject(msg, "content", text);
        cJSON_AddStringToObject(choice, "finish_reason", finish);
        cJSON_AddItemToArray(cJSON_AddArrayToObject(body, "choices"), choice);
        cJSON *usage = cJSON_AddObjectToObject(body, "usage");
        cJSON_AddNumberToObject(usage, "prompt_tokens", (double)r->prompt.len);
        cJSON_AddNumberToObject(usage, "completion_tokens", (double)completion);
        cJSON_AddNumberToObject(usage, "total_tokens", (double)(r->prompt.len + completion));
        cJSON_AddNullToObject(j, "error");
    }
    char *s = jsonl_print(j);
    cJSON_Delete(j);
    return s;
}

// A sequence being answered.
typedef struct {
    const Request *r;  // NULL: the slot is free
    KvCache cache;
    size_t read;     // prompt tokens read so far
    TokenVec answer;
    int32_t next;    // the token to read next (the last sampled)
    uint64_t rng;
} Slot;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void format_duration(double s, char *out, size_t n) {
    if (s < 90) snprintf(out, n, "%.0fs", s);
    else if (s < 5400) snprintf(out, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(out, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
}

typedef struct {
    size_t total, answered, skipped, tokens;
    double start, last;
} Progress;

// A line every 2 seconds: answered so far, generation speed, time left at the rate so far.
static void progress(Progress *p, int active, int final) {
    double t = now();
    if (!final && t - p->last < 2.0) return;
    p->last = t;
    double elapsed = t - p->start, tps = elapsed > 0 ? (double)p->tokens / elapsed : 0.0;
    char when[32] = "?";
    if (final) {
        format_duration(elapsed, when, sizeof(when));
        fprintf(stderr, "batch: done: %zu answered in %s (%zu tokens, %.1f tok/s), %zu by an earlier run\n",
                p->answered, when, p->tokens, tps, p->skipped);
        return;
    }
    if (p->answered) format_duration(elapsed / (double)p->answered * (double)(p->total - p->skipped - p->answered), when,
                                     sizeof(when));
    fprintf(stderr, "batch: %zu/%zu answered, %d in progress, %.1f tok/s, ETA %s\n", p->answered + p->skipped,
            p->total, active, tps, when);
}

// Writes a finished slot's answer and frees the slot. Returns 0, or -1 when writing failed.
static int finish(Slot *s, Tokenizer *tok, FILE *out, const char *why, const char *error) {
    ByteBuf text = {0};
    char err[ERR_LEN];
    if (!error && tokenizer_decode(tok, s->answer.ids, s->answer.len, &text, err)) error = err;
    bytebuf_push(&text, '\0');
    ByteBuf clean = {0};
    utf8_replace_invalid(text.data, strlen(text.data), &clean);  // cJSON needs valid UTF-8 to round-trip
    bytebuf_push(&clean, '\0');
    char *line = answer_line(s->r, clean.data, why, s->answer.len, error);
    int rc = fputs(line, out) < 0 || fputc('\n', out) < 0 || fflush(out) ? -1 : 0;
    free(line), bytebuf_free(&text), bytebuf_free(&clean);
    s->r = NULL;
    return rc;
}

struct BatchJob {
    BatchOptions o;
    Tokenizer *tok;
    int32_t stop;  // the token that ends an answer
    Requests q;
    char *done;  // per request: answered already
    long skipped;
};

BatchJob *batch_job_prepare(const BatchOptions *o, Tokenizer *tok, ChatFormat fmt, char *err) {
    BatchJob *job = xcalloc(1, sizeof(BatchJob));
    job->o = *o;
    job->tok = tok;
    job->stop = chat_stop_token(tok, fmt);
    if (load_requests(o, tok, fmt, &job->q, err) == 0) {
        job->done = xcalloc(job->q.n, 1);
        job->skipped = answers_done(o->out, &job->q, job->done, err);
        if (job->skipped >= 0) return job;
    }
    batch_job_free(job);
    return NULL;
}

void batch_job_free(BatchJob *job) {
    requests_free(&job->q);
    free(job->done);
    free(job);
}

int batch_job_run(BatchJob *job, const Decoder *d) {
    const BatchOptions *o = &job->o;
    Tokenizer *tok = job->tok;
    Requests q = job->q;
    char *done = job->done;
    long skipped = job->skipped;
    FILE *out = fopen(o->out, "a");
    if (!out) {
        fprintf(stderr, "error: %s: %s\n", o->out, strerror(errno));
        return 2;
    }
    fprintf(stderr, "batch: %zu requests in %s, %ld already answered in %s; %d sequences at a time\n", q.n, o->requests,
            skipped, o->out, o->slots);
    int V = d->config->vocab_size, S = o->slots, rc = 0;
    Slot *slots = xcalloc((size_t)S, sizeof(Slot));
    DecodeSeq *seqs = xmalloc((size_t)S * sizeof(DecodeSeq));
    int *of = xmalloc((size_t)S * sizeof(int));  // the slot of each sequence of the step
    float *logits = xmalloc((size_t)S * V * sizeof(float));
    Progress pr = {q.n, 0, (size_t)skipped, 0, now(), now()};
    size_t next = 0;
    for (;;) {
        int active = 0;
        for (int s = 0; s < S && rc == 0; s++) {  // free slots take the next requests
            while (!slots[s].r && next < q.n) {
                const Request *r = &q.r[next++];
                if (done[r - q.r]) continue;
                Slot *sl = &slots[s];
                if (!sl->cache.k) kv_cache_init(&sl->cache, d->config, o->context);
                kv_cache_rewind(&sl->cache, 0);
                sl->r = r, sl->read = 0, sl->answer.len = 0;
                sl->rng = o->seed ^ fnv1a64(r->id, strlen(r->id), FNV1A64_INIT);
                if ((int64_t)r->prompt.len + 1 > kv_cache_room(&sl->cache)) {  // it cannot even start
                    char msg[160];
                    snprintf(msg, sizeof(msg), "the prompt's %zu tokens leave no room in the context of %lld",
                             r->prompt.len, (long long)o->context);
                    if (finish(sl, tok, out, "length", msg)) rc = 2;
                    pr.answered++;
                }
            }
        }
        int n = 0;
        for (int s = 0; s < S; s++) {
            Slot *sl = &slots[s];
            if (!sl->r) continue;
            if (sl->read < sl->r->prompt.len) {  // the next prompt chunk
                size_t left = sl->r->prompt.len - sl->read;
                int chunk = left < DECODE_CHUNK ? (int)left : DECODE_CHUNK;
                seqs[n] = (DecodeSeq){&sl->cache, sl->r->prompt.ids + sl->read, chunk};
                sl->read += (size_t)chunk;
            } else {
                seqs[n] = (DecodeSeq){&sl->cache, &sl->next, 1};
            }
            of[n++] = s;
        }
        if (n == 0 || rc) break;
        d->step(d->ctx, seqs, n, logits, 0);  // (room was checked: every step fits)
        for (int i = 0; i < n && rc == 0; i++) {
            Slot *sl = &slots[of[i]];
            if (sl->read < sl->r->prompt.len) continue;  // more prompt to read first
            SampleConfig sc = sl->r->sample;
            int32_t t = sample_token(logits + (size_t)i * V, V, &sc, &sl->rng);
            const char *why = NULL;
            if (t == job->stop) why = "stop";
            else {
                tokvec_push(&sl->answer, t);
                pr.tokens++;
                if ((int)sl->answer.len >= sl->r->max_tokens || kv_cache_room(&sl->cache) < 1) why = "length";
            }
            sl->next = t;
            if (why) {
                if (finish(sl, tok, out, why, NULL)) rc = 2;
                pr.answered++;
            }
        }
        for (int s = 0; s < S; s++) active += slots[s].r != NULL;
        progress(&pr, active, 0);
    }
    if (rc) fprintf(stderr, "error: %s: cannot write: %s\n", o->out, strerror(errno));
    else progress(&pr, 0, 1);
    if (fclose(out) && rc == 0) {
        fprintf(stderr, "error: %s: cannot write: %s\n", o->out, strerror(errno));
        rc = 2;
    }
    for (int s = 0; s < S; s++) {
        if (slots[s].cache.k) kv_cache_free(&slots[s].cache);
        tokvec_free(&slots[s].answer);
    }
    free(slots), free(seqs), free(of), free(logits);
    return rc;
}
