// persona_jsonl.c: output files, JSONL lines, conversations (see persona_jsonl.h).
#include "persona_jsonl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"

int outfile_open(OutFile *o, const char *path, char *err) {
    o->path = xstrdup(path);
    size_t n = strlen(path);
    o->tmp = xmalloc(n + 5);
    memcpy(o->tmp, path, n);
    memcpy(o->tmp + n, ".tmp", 5);
    o->f = fopen(o->tmp, "wb");
    if (!o->f) {
        set_error(err, "%s: cannot create: %s", o->tmp, strerror(errno));
        free(o->path);
        free(o->tmp);
        return -1;
    }
    return 0;
}

static void outfile_release(OutFile *o) {
    free(o->path);
    free(o->tmp);
    o->path = o->tmp = NULL;
    o->f = NULL;
}

int outfile_commit(OutFile *o, char *err) {
    int failed = fflush(o->f) != 0 || ferror(o->f);
    int saved = errno;
    if (fclose(o->f) != 0 && !failed) failed = 1, saved = errno;
    if (failed) {
        set_error(err, "%s: write failed: %s", o->tmp, strerror(saved));
        remove(o->tmp);
        outfile_release(o);
        return -1;
    }
    if (rename(o->tmp, o->path) != 0) {
        set_error(err, "%s: cannot rename to %s: %s", o->tmp, o->path, strerror(errno));
        remove(o->tmp);
        outfile_release(o);
        return -1;
    }
    outfile_release(o);
    return 0;
}

void outfile_abort(OutFile *o) {
    if (!o->f) return;
    fclose(o->f);
    remove(o->tmp);
    outfile_release(o);
}

char *jsonl_print(const cJSON *json) {
    char *s = cJSON_PrintUnformatted(json);
    if (!s) {
        fprintf(stderr, "error: out of memory printing JSON\n");
        exit(2);
    }
    return s;
}

void jsonl_write(FILE *f, const cJSON *json) {
    char *s = jsonl_print(json);
    jsonl_write_line(f, s);
    free(s);
}

void jsonl_write_line(FILE *f, const char *json) {
    fputs(json, f);
    fputc('\n', f);
}

int lines_open(LineReader *r, const char *path, char *err) {
    memset(r, 0, sizeof *r);
    r->data = read_file(path, &r->len, err);
    return r->data ? 0 : -1;
}

int lines_next(LineReader *r, const char **s, size_t *n) {
    while (r->pos < r->len) {
        const char *p = r->data + r->pos;
        const char *nl = memchr(p, '\n', r->len - r->pos);
        size_t k = nl ? (size_t)(nl - p) : r->len - r->pos;
        r->pos += k + (nl != NULL);
        r->line++;
        size_t blank = 0;
        while (blank < k && strchr(" \t\r", p[blank])) blank++;
        if (blank < k) {
            *s = p;
            *n = k;
            return 1;
        }
    }
    return 0;
}

void lines_close(LineReader *r) {
    free(r->data);
    memset(r, 0, sizeof *r);
}

cJSON *jsonl_conversation(void) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToObject(c, "messages", cJSON_CreateArray());
    return c;
}

void jsonl_add_message(cJSON *conversation, const char *role, const char *content) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddStringToObject(m, "content", content);
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(conversation, "messages"), m);
}

uint64_t fnv1a64(const void *data, size_t n, uint64_t h) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}
