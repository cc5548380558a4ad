// util.c: see util.h.
#define _XOPEN_SOURCE 700  // nftw
#include "util.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void out_of_memory(size_t n) {
    fprintf(stderr, "error: out of memory allocating %zu bytes\n", n);
    exit(2);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) out_of_memory(n);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) out_of_memory(count * size);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) out_of_memory(n);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

int set_error(char *err, const char *fmt, ...) {
    if (err) {
        char raw[ERR_LEN];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(raw, sizeof(raw), fmt, ap);
        va_end(ap);
        // A message quotes what the input holds (a role, a key, a file name); a control
        // character there is written as an escape, so that the message stays one line.
        size_t n = 0;
        for (const unsigned char *p = (const unsigned char *)raw; *p && n + 5 < ERR_LEN; p++) {
            if (*p >= 0x20 && *p != 0x7f) err[n++] = (char)*p;
            else if (*p == '\n') n += (size_t)snprintf(err + n, 3, "\\n");
            else n += (size_t)snprintf(err + n, 5, "\\x%02x", *p);
        }
        err[n] = 0;
    }
    return -1;
}

char *read_file(const char *path, size_t *len, char *err) {
    int is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        set_error(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    // Read in growing chunks rather than trusting fseek/ftell, so pipes work too.
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) buf = xrealloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (got == 0) break;
    }
    int failed = ferror(f);
    if (!is_stdin) fclose(f);
    if (failed) {
        free(buf);
        set_error(err, "%s: read error at offset %zu", path, n);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

int remove_tree(const char *path) { return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

int sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? xstrdup(path) : xstrdup(".");
    if (slash) dir[slash == path ? 1 : slash - path] = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY), rc = fd < 0 || fsync(fd) ? -1 : 0;
    if (fd >= 0) close(fd);
    free(dir);
    return rc;
}

int write_file_atomically(const char *path, const void *data, size_t len, char *err) {
    size_t n = strlen(path) + 16;
    char *tmp = xmalloc(n);
    snprintf(tmp, n, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp), rc = 0;
    const char *p = data;
    // mkstemp makes the file private (0600); what we write is ordinary data
    if (fd < 0 || fchmod(fd, 0644)) rc = -1;
    for (size_t done = 0; rc == 0 && done < len;) {
        ssize_t w = write(fd, p + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) rc = -1;
        else done += (size_t)w;
    }
    if (rc == 0 && fsync(fd)) rc = -1;
    if (fd >= 0 && close(fd) && rc == 0) rc = -1;
    if (rc) set_error(err, "%s: cannot write: %s", path, strerror(errno ? errno : EIO));
    else if (rename(tmp, path)) rc = set_error(err, "%s: cannot rename into place: %s", path, strerror(errno));
    else if (sync_parent_dir(path)) rc = set_error(err, "%s: cannot sync its directory: %s", path, strerror(errno));
    if (rc && fd >= 0) unlink(tmp);
    free(tmp);
    return rc;
}

int64_t find_non_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return (int64_t)i;
    return -1;
}

void bytebuf_append(ByteBuf *b, const void *src, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap) cap *= 2;
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, src, n);
    b->len += n;
    b->data[b->len] = '\0';  // always NUL-terminated so text can be printed directly
}

void bytebuf_push(ByteBuf *b, char c) { bytebuf_append(b, &c, 1); }

void bytebuf_free(ByteBuf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

uint64_t rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

uint64_t rng_below(uint64_t *state, uint64_t n) {
    // Reject the top (2^64 mod n) values so that every residue is equally likely.
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do x = rng_next(state);
    while (x >= limit);
    return x % n;
}

double rng_uniform(uint64_t *state) { return (double)(rng_next(state) >> 11) * 0x1.0p-53; }

double max_rel_error(const float *got, const float *ref, size_t n) {
    double diff = 0, mag = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        diff = d > diff || d != d ? d : diff;  // a NaN stays
        mag = fmax(mag, fabs((double)ref[i]));
    }
    return diff / mag;
}
