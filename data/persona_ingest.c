// persona_ingest.c: teacher answers -> conversations (see persona_ingest.h).
#include "persona_ingest.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/strmap.h"
#include "../common/util.h"
#include "../tokenizer/utf8.h"

const char *reject_name(int reason) {
    static const char *const names[REJECT_COUNT] = {
        "invalid line", "unknown id", "duplicate", "teacher error", "empty",
        "not JSON",     "bad pairs",  "not first person", "too long"};
    return reason >= 0 && reason < REJECT_COUNT ? names[reason] : "?";
}

typedef struct {
    char *id, *story, *passage;
    char **names;
    size_t n_names;
    int qa, pairs, passage_words;
    int answered;  // an answer was seen (accepted or not)
    int accepted;
} Request;

struct Requests {
    Request *r;
    size_t n, cap;
    StrMap ids;
};

static int count_words(const char *s) {
    int words = 0;
    for (size_t i = 0; s[i]; i++)
        words += !isspace((unsigned char)s[i]) && (i == 0 || isspace((unsigned char)s[i - 1]));
    return words;
}

static const char *string_item(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

// One request line into r; the reason (no file or line) in why on failure.
static int parse_request(const char *s, size_t n, Request *r, char *why) {
    memset(r, 0, sizeof *r);
    cJSON *json = cJSON_ParseWithLength(s, n);
    if (!json) return set_error(why, "invalid JSON");
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(json, "persona");
    const char *id = string_item(json, "custom_id"), *task = string_item(meta, "task");
    const char *passage = string_item(meta, "passage"), *story = string_item(meta, "story");
    const cJSON *names = cJSON_GetObjectItemCaseSensitive(meta, "names");
    const cJSON *pairs = cJSON_GetObjectItemCaseSensitive(meta, "pairs");
    int rc = 0;
    if (!id || !cJSON_IsObject(meta))
        rc = set_error(why, "not a persona request (no \"custom_id\" or \"persona\")");
    else if (!task || (strcmp(task, "rewrite") && strcmp(task, "qa")))
        rc = set_error(why, "persona.task must be \"rewrite\" or \"qa\"");
    else if (!passage || !story || !cJSON_IsArray(names) || cJSON_GetArraySize(names) == 0)
        rc = set_error(why, "persona needs \"passage\", \"story\" and \"names\"");
    else if (!strcmp(task, "qa") && (!cJSON_IsNumber(pairs) || pairs->valueint < 1))
        rc = set_error(why, "persona.pairs must be a positive number for a qa request");
    if (rc == 0) {
        r->id = xstrdup(id);
        r->story = xstrdup(story);
        r->passage = xstrdup(passage);
        r->qa = !strcmp(task, "qa");
        r->pairs = r->qa ? pairs->valueint : 0;
        r->passage_words = count_words(passage);
        r->n_names = (size_t)cJSON_GetArraySize(names);
        r->names = xcalloc(r->n_names, sizeof(char *));
        for (size_t i = 0; i < r->n_names; i++) {
            const cJSON *name = cJSON_GetArrayItem(names, (int)i);
            r->names[i] = xstrdup(cJSON_IsString(name) ? name->valuestring : "");
        }
    }
    cJSON_Delete(json);
    return rc;
}

static void request_free(Request *r) {
    free(r->id);
    free(r->story);
    free(r->passage);
    for (size_t i = 0; i < r->n_names; i++) free(r->names[i]);
    free(r->names);
}

Requests *requests_load(const char *path, char *err) {
    LineReader lr;
    if (lines_open(&lr, path, err)) return NULL;
    Requests *rq = xcalloc(1, sizeof *rq);
    strmap_init(&rq->ids, 256);
    const char *s;
    size_t n;
    char why[ERR_LEN];
    while (lines_next(&lr, &s, &n)) {
        if (rq->n == rq->cap) {
            rq->cap = rq->cap ? rq->cap * 2 : 256;
            rq->r = xrealloc(rq->r, rq->cap * sizeof(Request));
        }
        Request *r = &rq->r[rq->n];
        if (parse_request(s, n, r, why) || (strmap_get(&rq->ids, r->id, strlen(r->id)) >= 0 &&
                                            set_error(why, "duplicate custom_id \"%s\"", r->id))) {
            set_error(err, "%s:%zu: %s", path, lr.line, why);
            if (r->id) request_free(r);
            lines_close(&lr);
            requests_free(rq);
            return NULL;
        }
        strmap_put(&rq->ids, r->id, strlen(r->id), (int32_t)rq->n++);
    }
    lines_close(&lr);
    if (rq->n == 0) {
        requests_free(rq);
        set_error(err, "%s: no requests in the file", path);
        return NULL;
    }
    return rq;
}

size_t requests_count(const Requests *r, int qa) {
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++) k += r->r[i].qa == qa;
    return k;
}

void requests_free(Requests *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) request_free(&r->r[i]);
    free(r->r);
    strmap_free(&r->ids);
    free(r);
}

// ---------------------------------------------------------------------------------------
// Checks of the text

// Words outside quotations: first-person singular pronouns, and names of the character.
static void person_counts(const char *s, const Request *r, int *words, int *first, int *names) {
    *words = *first = *names = 0;
    int inside = 0;
    for (size_t i = 0; s[i];) {
        if (s[i] == '"') {
            inside = !inside;
            i++;
            continue;
        }
        if (!strncmp(s + i, "\xE2\x80\x9C", 3) || !strncmp(s + i, "\xE2\x80\x9D", 3)) {  // “ ”
            inside = s[i + 2] == '\x9C';
            i += 3;
            continue;
        }
        if (!isalpha((unsigned char)s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (isalpha((unsigned char)s[j]) || s[j] == '\'') j++;
        if (!inside) {
            (*words)++;
            size_t k = j - i;
            if ((k == 1 && s[i] == 'I') || (k == 2 && !strncasecmp(s + i, "me", 2)) ||
                (k == 2 && !strncasecmp(s + i, "my", 2)) || (k == 4 && !strncasecmp(s + i, "mine", 4)) ||
                (k == 6 && !strncasecmp(s + i, "myself", 6)) || (k == 3 && !strncmp(s + i, "I'm", 3)))
                (*first)++;
            for (size_t a = 0; a < r->n_names; a++) {
                size_t m = strlen(r->names[a]);
                if (m && !strncmp(s + i, r->names[a], m) && !isalnum((unsigned char)s[i + m])) (*names)++;
            }
        }
        i = j;
    }
}

static int blank(const char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    return *s == '\0';
}

static int check_rewrite(const Request *r, const char *text) {
    int words, first, names;
    person_counts(text, r, &words, &first, &names);
    if (first * 60 < words || names * 4 > first) return REJECT_NOT_FIRST_PERSON;
    if (count_words(text) > 2 * r->passage_words + 50) return REJECT_TOO_LONG;
    return -1;
}

static int check_answer(const Request *r, const char *text) {
    int words, first, names;
    person_counts(text, r, &words, &first, &names);
    if (names > 0 && names * 4 > first) return REJECT_NOT_FIRST_PERSON;
    if (count_words(text) > r->passage_words) return REJECT_TOO_LONG;
    return -1;
}

// The pairs of a Q&A answer: {"pairs": [...]}, or a bare array, possibly inside one ```
// fence. Returns the parsed JSON (to free) and the array in *pairs, or NULL.
static cJSON *parse_pairs(const char *text, const cJSON **pairs) {
    const char *s = text, *e = text + strlen(text);
    while (s < e && isspace((unsigned char)*s)) s++;
    while (e > s && isspace((unsigned char)e[-1])) e--;
    if (e - s >= 6 && !strncmp(s, "```", 3) && !strncmp(e - 3, "```", 3)) {
        const char *nl = memchr(s, '\n', (size_t)(e - s));
        if (!nl) return NULL;
        s = nl + 1;
        e -= 3;
    }
    const char *end;
    cJSON *json = cJSON_ParseWithLengthOpts(s, (size_t)(e - s), &end, 0);
    if (!json) return NULL;
    while (end < e && isspace((unsigned char)*end)) end++;
    if (end != e) {
        cJSON_Delete(json);
        return NULL;
    }
    *pairs = cJSON_IsArray(json) ? json : cJSON_GetObjectItemCaseSensitive(json, "pairs");
    return json;
}

// ---------------------------------------------------------------------------------------
// Answers

static const char *const QUESTIONS[] = {
    "Tell me, in your own words, what happened in %s, from \"%s ...\"",
    "What do you remember of this moment in %s: \"%s ...\"?",
    "Take me through this part of %s as you lived it, from \"%s ...\"",
};

static void write_conversation(FILE *f, const char *source, const char *id, const char *q, const char *a) {
    cJSON *conv = jsonl_conversation();
    jsonl_add_message(conv, "user", q);
    jsonl_add_message(conv, "assistant", a);
    cJSON *meta = cJSON_AddObjectToObject(conv, "meta");
    cJSON_AddStringToObject(meta, "source", source);
    cJSON_AddStringToObject(meta, "id", id);
    jsonl_write(f, conv);
    cJSON_Delete(conv);
}

static void trim_copy(const char *s, ByteBuf *out) {
    while (*s && isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) n--;
    out->len = 0;
    bytebuf_append(out, s, n);
}

// The question that a rewrite answers: the story, and the passage's first ten words.
static char *rewrite_question(const Request *r) {
    ByteBuf opening = {0};
    const char *s = r->passage;
    for (int words = 0; *s && words < 10; words++) {
        while (*s && isspace((unsigned char)*s)) s++;
        const char *w = s;
        while (*s && !isspace((unsigned char)*s)) s++;
        if (opening.len) bytebuf_push(&opening, ' ');
        bytebuf_append(&opening, w, (size_t)(s - w));
    }
    while (opening.len && strchr(",;:.\"", opening.data[opening.len - 1])) opening.data[--opening.len] = '\0';
    const char *form = QUESTIONS[fnv1a64(r->id, strlen(r->id), FNV1A64_INIT) % 3];
    size_t cap = strlen(form) + strlen(r->story) + opening.len + 1;
    char *q = xmalloc(cap);
    snprintf(q, cap, form, r->story, opening.len ? opening.data : "");
    bytebuf_free(&opening);
    return q;
}

// Checks one answer and writes its conversations. Returns -1, or the reject reason.
static int use_answer(Request *r, const char *content, const IngestOutputs *out, IngestStats *st) {
    if (blank(content)) return REJECT_EMPTY;
    ByteBuf text = {0}, question = {0};
    int reason = -1;
    if (!r->qa) {
        trim_copy(content, &text);
        reason = check_rewrite(r, text.data);
        if (reason < 0) {
            char *q = rewrite_question(r);
            write_conversation(out->narrative, "rewrite", r->id, q, text.data);
            free(q);
            st->conversations[0]++;
        }
    } else {
        const cJSON *pairs = NULL;
        cJSON *json = parse_pairs(content, &pairs);
        int n = cJSON_IsArray(pairs) ? cJSON_GetArraySize(pairs) : -1;
        if (!json || !pairs) reason = REJECT_NOT_JSON;
        else if (n < 1 || n > 2 * r->pairs) reason = REJECT_BAD_PAIRS;
        for (int i = 0; reason < 0 && i < n; i++) {
            const cJSON *pair = cJSON_GetArrayItem(pairs, i);
            const char *q = string_item(pair, "question"), *a = string_item(pair, "answer");
            if (!q || !a || blank(q) || blank(a) || !utf8_valid(q, strlen(q)) || !utf8_valid(a, strlen(a)))
                reason = REJECT_BAD_PAIRS;
            else
                reason = check_answer(r, a);
        }
        for (int i = 0; reason < 0 && i < n; i++) {  // all pairs good: write them all
            const cJSON *pair = cJSON_GetArrayItem(pairs, i);
            trim_copy(string_item(pair, "question"), &question);
            trim_copy(string_item(pair, "answer"), &text);
            write_conversation(out->qa, "qa", r->id, question.data, text.data);
            st->conversations[1]++;
        }
        cJSON_Delete(json);
    }
    bytebuf_free(&text);
    bytebuf_free(&question);
    return reason;
}

// The text of an answer line, in either form; NULL (a teacher error) when there is none.
static const char *answer_content(const cJSON *json) {
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(json, "error");
    if (error && !cJSON_IsNull(error)) return NULL;
    const char *plain = string_item(json, "content");
    if (plain) return plain;
    const cJSON *response = cJSON_GetObjectItemCaseSensitive(json, "response");
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(response, "status_code");
    if (status && (!cJSON_IsNumber(status) || status->valueint != 200)) return NULL;
    const cJSON *choices =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(response, "body"), "choices");
    const cJSON *message = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(choices, 0), "message");
    return string_item(message, "content");
}

static void reject(const IngestOutputs *out, IngestStats *st, size_t line, const char *id, int reason) {
    st->rejected[reason]++;
    if (!out->rejects) return;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "line", (double)line);
    if (id) cJSON_AddStringToObject(j, "custom_id", id);
    cJSON_AddStringToObject(j, "reason", reject_name(reason));
    jsonl_write(out->rejects, j);
    cJSON_Delete(j);
}

int ingest_answers(Requests *rq, const char *answers_path, const IngestOutputs *out, IngestStats *st,
                   char *err) {
    memset(st, 0, sizeof *st);
    for (size_t i = 0; i < rq->n; i++) st->requests[rq->r[i].qa]++;
    LineReader lr;
    if (lines_open(&lr, answers_path, err)) return -1;
    const char *s;
    size_t n;
    while (lines_next(&lr, &s, &n)) {
        st->answers++;
        cJSON *json = cJSON_ParseWithLength(s, n);
        const char *id = cJSON_IsObject(json) ? string_item(json, "custom_id") : NULL;
        int32_t k = id ? strmap_get(&rq->ids, id, strlen(id)) : -1;
        int reason = -1;
        if (!id) reason = REJECT_INVALID_LINE;
        else if (k < 0) reason = REJECT_UNKNOWN_ID;
        else if (rq->r[k].answered) reason = REJECT_DUPLICATE;
        else {
            Request *r = &rq->r[k];
            r->answered = 1;
            const char *content = answer_content(json);
            reason = !content                                ? REJECT_TEACHER_ERROR
                     : !utf8_valid(content, strlen(content)) ? REJECT_INVALID_LINE
                                                             : use_answer(r, content, out, st);
            if (reason < 0) {
                r->accepted = 1;
                st->accepted[r->qa]++;
            }
        }
        if (reason >= 0) reject(out, st, lr.line, id, reason);
        cJSON_Delete(json);
    }
    lines_close(&lr);
    if (st->answers == 0) return set_error(err, "%s: no answers in the file", answers_path);
    for (size_t i = 0; i < rq->n; i++) st->unanswered += !rq->r[i].accepted;
    return 0;
}

void ingest_report(const IngestStats *st, FILE *f) {
    fprintf(f, "requests: %zu rewrite, %zu qa\n", st->requests[0], st->requests[1]);
    fprintf(f, "answers: %zu read, %zu rewrites and %zu Q&A answers accepted; %zu requests without a usable answer\n",
            st->answers, st->accepted[0], st->accepted[1], st->unanswered);
    fprintf(f, "rejected:");
    size_t total = 0;
    for (int r = 0; r < REJECT_COUNT; r++)
        if (st->rejected[r]) fprintf(f, " %s %zu,", reject_name(r), st->rejected[r]), total += st->rejected[r];
    fprintf(f, " %zu in all\n", total);
}

int ingest_files(const char *requests, const char *answers, const char *const outs[3], IngestStats *st) {
    memset(st, 0, sizeof *st);
    char err[ERR_LEN];
    Requests *rq = requests_load(requests, err);
    if (!rq) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    size_t n_task[2] = {requests_count(rq, 0), requests_count(rq, 1)};
    for (int k = 0; k < 2; k++)
        if (n_task[k] && !outs[k]) {
            fprintf(stderr, "error: %s FILE is required: the requests ask for %s (see --help)\n",
                    k ? "--out-qa" : "--out-narrative", k ? "Q&A pairs" : "rewrites");
            requests_free(rq);
            return 1;
        }
    OutFile files[3] = {{0}};
    int rc = 0;
    for (int k = 0; k < 3 && rc == 0; k++)
        if (outs[k] && (k == 2 || n_task[k]) && outfile_open(&files[k], outs[k], err)) {
            fprintf(stderr, "error: %s\n", err);
            rc = 2;
        }
    if (rc == 0) {
        IngestOutputs io = {files[0].f, files[1].f, files[2].f};
        if (ingest_answers(rq, answers, &io, st, err)) {
            fprintf(stderr, "error: %s\n", err);
            rc = 1;
        } else if (st->conversations[0] + st->conversations[1] == 0) {
            fprintf(stderr, "error: %s: no usable answer: all %zu answers were rejected (see the report)\n", answers,
                    st->answers);
            rc = 1;
        }
    }
    rc = outfiles_finish(files, 3, rc);
    if (st->answers) ingest_report(st, stdout);  // what was rejected, even when nothing could be written
    requests_free(rq);
    return rc;
}
