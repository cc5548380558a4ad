// persona_jsonl.c: output files, JSONL lines, conversations (see persona_jsonl.h).
#include "persona_jsonl.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/util.h"

// The temporary files that are open now, for the signal handler: a slot is filled before
// its file is created and emptied before its name is freed, so the handler never sees a
// freed name.
#define MAX_TEMP_FILES 16
static char *volatile temp_files[MAX_TEMP_FILES];
static volatile sig_atomic_t child_pid;

static void on_signal(int sig) {
    for (int i = 0; i < MAX_TEMP_FILES; i++) {
        char *path = temp_files[i];
        if (path) unlink(path);
    }
    if (child_pid > 0) kill((pid_t)child_pid, SIGTERM);
    signal(sig, SIG_DFL);
    raise(sig);
}

void outfile_catch_signals(void) {
    const int signals[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        struct sigaction old, sa;
        if (sigaction(signals[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(signals[i], &sa, NULL);
    }
}

void outfile_set_child(long pid) { child_pid = (sig_atomic_t)pid; }

int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(b, &sb) != 0) return 0;
    if (stat(a, &sa) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino) return 1;
    size_t n = strlen(a);
    char *tmp = xmalloc(n + 5);
    memcpy(tmp, a, n);
    memcpy(tmp + n, ".tmp", 5);
    int same = stat(tmp, &sa) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    free(tmp);
    return same;
}

static void outfile_release(OutFile *o) {
    if (o->slot >= 0) temp_files[o->slot] = NULL;
    free(o->path);
    free(o->tmp);
    o->path = o->tmp = NULL;
    o->f = NULL;
    o->slot = -1;
}

int outfile_open(OutFile *o, const char *path, char *err) {
    o->path = xstrdup(path);
    size_t n = strlen(path);
    o->tmp = xmalloc(n + 5);
    memcpy(o->tmp, path, n);
    memcpy(o->tmp + n, ".tmp", 5);
    o->slot = -1;
    for (int i = 0; i < MAX_TEMP_FILES && o->slot < 0; i++)
        if (!temp_files[i]) o->slot = i, temp_files[i] = o->tmp;
    o->f = fopen(o->tmp, "wb");
    if (!o->f) {
        set_error(err, "%s: cannot create: %s", o->tmp, strerror(errno));
        outfile_release(o);
        return -1;
    }
    return 0;
}

// Flushes and closes o's file. Returns 0, or -1 with the reason in err (if not set yet).
static int outfile_close(OutFile *o, char *err, int *failed) {
    int bad = fflush(o->f) != 0 || ferror(o->f);
    int saved = errno;
    if (fclose(o->f) != 0 && !bad) bad = 1, saved = errno;
    o->f = NULL;
    if (bad && !*failed) set_error(err, "%s: write failed: %s", o->tmp, strerror(saved));
    *failed |= bad;
    return bad ? -1 : 0;
}

int outfiles_commit(OutFile *files, size_t n, char *err) {
    int failed = 0;
    for (size_t i = 0; i < n; i++)
        if (files[i].f) outfile_close(&files[i], err, &failed);
    for (size_t i = 0; i < n; i++) {
        if (!files[i].path) continue;
        if (!failed && rename(files[i].tmp, files[i].path) != 0) {
            set_error(err, "%s: cannot rename to %s: %s", files[i].tmp, files[i].path, strerror(errno));
            failed = 1;
        }
        if (failed) remove(files[i].tmp);
        outfile_release(&files[i]);
    }
    return failed ? -1 : 0;
}

int outfile_commit(OutFile *o, char *err) { return outfiles_commit(o, 1, err); }

int outfiles_finish(OutFile *files, size_t n, int rc) {
    char err[ERR_LEN];
    if (rc) {
        for (size_t i = 0; i < n; i++) outfile_abort(&files[i]);
        return rc;
    }
    if (outfiles_commit(files, n, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    return 0;
}

void outfile_abort(OutFile *o) {
    if (!o->path) return;
    if (o->f) fclose(o->f);
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
