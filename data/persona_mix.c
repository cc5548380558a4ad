// persona_mix.c: dedupe, split, weight, shuffle (see persona_mix.h).
#include "persona_mix.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>

#include "../common/strmap.h"
#include "../common/util.h"
#include "conversation.h"
#include "persona_jsonl.h"

typedef struct {
    char *json;  // the line to write
    size_t source;
} Item;

// The near-duplicate key: roles and contents, lower-cased, letters and digits only (bytes
// of non-ASCII characters kept), one space between words.
static uint64_t near_key(const Conversation *c) {
    uint64_t h = FNV1A64_INIT;
    for (size_t k = 0; k < c->n; k++) {
        char role = (char)('0' + c->msgs[k].role);
        h = fnv1a64(&role, 1, h);
        int words = 0, gap = 0;  // a space goes between words, never at either end
        for (size_t i = 0; i < c->msgs[k].len; i++) {
            unsigned char ch = (unsigned char)c->msgs[k].content[i];
            if (isalnum(ch) || ch >= 0x80) {
                if (gap && words) h = fnv1a64(" ", 1, h);
                char low = (char)tolower(ch);
                h = fnv1a64(&low, 1, h);
                words = 1, gap = 0;
            } else {
                gap = 1;
            }
        }
    }
    return h;
}

static int seen(StrMap *m, uint64_t key) { return strmap_put(m, &key, sizeof key, 0); }

static void shuffle(size_t *a, size_t n, uint64_t *rng) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rng_below(rng, i);
        size_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

// The conversation's messages as the line to write, with the system prompt put first
// when it has none.
static char *output_line(const Conversation *c, const char *system) {
    cJSON *out = cJSON_CreateObject();
    cJSON *messages = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(c->json, "messages"), 1);
    int has_system = 0;
    for (size_t k = 0; k < c->n; k++) has_system |= c->msgs[k].role == ROLE_SYSTEM;
    if (system && !has_system) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", system);
        cJSON_InsertItemInArray(messages, 0, m);
    }
    cJSON_AddItemToObject(out, "messages", messages);
    char *s = jsonl_print(out);
    cJSON_Delete(out);
    return s;
}

int mix_run(MixOptions *o, FILE *train, FILE *val, char *err) {
    Item *items = NULL;
    size_t n = 0, cap = 0;
    StrMap exact, near;
    strmap_init(&exact, 1024);
    strmap_init(&near, 1024);
    Conversation conv = {0};
    char why[ERR_LEN];
    int rc = 0;
    for (size_t s = 0; s < o->n && rc == 0; s++) {
        MixSource *src = &o->sources[s];
        LineReader lr;
        if (lines_open(&lr, src->path, err)) {
            rc = -1;
            break;
        }
        const char *line;
        size_t len;
        while (rc == 0 && lines_next(&lr, &line, &len)) {
            src->lines++;
            if (conversation_parse(&conv, line, len, why) || conversation_check_finetuning(&conv, why) ||
                (conv.kind != CONV_CHAT && set_error(why, "a {\"text\"} line is not a conversation"))) {
                rc = set_error(err, "%s:%zu: %s", src->path, lr.line, why);
                break;
            }
            char *json = output_line(&conv, o->system);
            if (seen(&exact, fnv1a64(json, strlen(json), FNV1A64_INIT))) {
                src->exact++;
                free(json);
            } else if (seen(&near, near_key(&conv))) {
                src->near++;
                free(json);
            } else {
                if (n == cap) items = xrealloc(items, (cap = cap ? cap * 2 : 1024) * sizeof(Item));
                items[n++] = (Item){json, s};
            }
        }
        if (rc == 0 && src->lines == 0) rc = set_error(err, "%s: no conversations in the file", src->path);
        lines_close(&lr);
    }
    conversation_free(&conv);
    strmap_free(&exact);
    strmap_free(&near);

    if (rc == 0) {
        uint64_t rng = o->seed;
        size_t *order = xmalloc((n ? n : 1) * sizeof(size_t));
        for (size_t i = 0; i < n; i++) order[i] = i;
        shuffle(order, n, &rng);
        size_t n_val = (size_t)llround(o->val_fraction * (double)n);
        if (o->val_fraction > 0 && n_val == 0) n_val = 1;
        if (n_val >= n) n_val = n ? n - 1 : 0;
        size_t *train_order = NULL, n_train = 0, train_cap = 0;
        for (size_t i = 0; i < n; i++) {
            Item *it = &items[order[i]];
            MixSource *src = &o->sources[it->source];
            if (src->weight == 0) continue;
            if (i < n_val) {
                jsonl_write_line(val, it->json);
                src->val++;
                continue;
            }
            double whole = floor(src->weight);
            size_t copies = (size_t)whole + (rng_uniform(&rng) < src->weight - whole);
            for (size_t c = 0; c < copies; c++) {
                if (n_train == train_cap)
                    train_order = xrealloc(train_order,
                                           (train_cap = train_cap ? train_cap * 2 : 1024) * sizeof(size_t));
                train_order[n_train++] = order[i];
            }
            src->train += copies;
        }
        shuffle(train_order, n_train, &rng);
        for (size_t i = 0; i < n_train; i++) jsonl_write_line(train, items[train_order[i]].json);
        free(train_order);
        free(order);
    }
    for (size_t i = 0; i < n; i++) free(items[i].json);
    free(items);
    return rc;
}

// dir + "/" + name, without doubling a slash that dir ends with.
static char *join_path(const char *dir, const char *name) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t cap = n + strlen(name) + 2;
    char *path = xmalloc(cap);
    snprintf(path, cap, "%.*s/%s", (int)n, dir, name);
    return path;
}

int mix_to_dir(MixOptions *o, const char *dir, FILE *report) {
    char *paths[2] = {join_path(dir, "train.jsonl"), join_path(dir, "val.jsonl")};
    char err[ERR_LEN];
    int rc = 0;
    for (size_t s = 0; s < o->n && rc == 0; s++)
        for (int k = 0; k < 2 && rc == 0; k++)
            if (same_file(paths[k], o->sources[s].path)) {
                fprintf(stderr, "error: source %s is the output %s: an output never replaces an input (choose another --out-dir)\n",
                        o->sources[s].path, paths[k]);
                rc = 1;
            }
    if (rc == 0 && mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "error: %s: cannot create the directory: %s\n", dir, strerror(errno));
        rc = 2;
    }
    OutFile files[2] = {{0}};
    if (rc == 0 && (outfile_open(&files[0], paths[0], err) || outfile_open(&files[1], paths[1], err))) {
        fprintf(stderr, "error: %s\n", err);
        rc = 2;
    }
    if (rc == 0 && mix_run(o, files[0].f, files[1].f, err)) {
        fprintf(stderr, "error: %s\n", err);
        rc = 1;
    }
    rc = outfiles_finish(files, 2, rc);
    if (rc == 0) {
        size_t lines = 0, dup = 0, tr = 0, va = 0;
        for (size_t s = 0; s < o->n; s++) {
            const MixSource *x = &o->sources[s];
            fprintf(report, "%s: %zu conversations, %zu exact and %zu near duplicates removed, %zu to train, %zu to val\n",
                    x->path, x->lines, x->exact, x->near, x->train, x->val);
            lines += x->lines, dup += x->exact + x->near, tr += x->train, va += x->val;
        }
        fprintf(report, "mix: %zu conversations read, %zu duplicates removed; %s: %zu, %s: %zu\n", lines, dup, paths[0],
                tr, paths[1], va);
    }
    free(paths[0]);
    free(paths[1]);
    return rc;
}
