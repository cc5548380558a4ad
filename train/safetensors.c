// safetensors.c: see safetensors.h for the format and the rules every file must satisfy.
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/half.h"
#include "../common/strmap.h"

#define ST_MAX_HEADER 100000000ull  // the reference reader's MAX_HEADER_SIZE

static const struct {
    const char *name;
    size_t size;
} dtypes[ST_NUM_DTYPES] = {
    [ST_BOOL] = {"BOOL", 1}, [ST_U8] = {"U8", 1},   [ST_I8] = {"I8", 1},
    [ST_I16] = {"I16", 2},   [ST_U16] = {"U16", 2}, [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2}, [ST_I32] = {"I32", 4}, [ST_U32] = {"U32", 4},
    [ST_F32] = {"F32", 4},   [ST_I64] = {"I64", 8}, [ST_U64] = {"U64", 8},
    [ST_F64] = {"F64", 8},
};

const char *st_dtype_name(StDtype d) { return dtypes[d].name; }
size_t st_dtype_size(StDtype d) { return dtypes[d].size; }

int st_dtype_parse(const char *name, StDtype *d) {
    for (int i = 0; i < ST_NUM_DTYPES; i++)
        if (strcmp(name, dtypes[i].name) == 0) {
            *d = (StDtype)i;
            return 0;
        }
    return -1;
}

// A JSON number that is a whole number in [0, 2^53] (beyond that a double is not exact).
static int json_index(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (d < 0 || d > 9007199254740992.0 || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

// Fills t from one header entry; offsets are returned for the layout check.
static int parse_entry(const char *path, const cJSON *e, StTensor *t, uint64_t *begin, uint64_t *end,
                       char *err) {
    const char *name = e->string;
    if (!cJSON_IsObject(e)) return set_error(err, "%s: tensor '%s': header entry is not an object", path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dtype)) return set_error(err, "%s: tensor '%s': no string \"dtype\"", path, name);
    if (st_dtype_parse(dtype->valuestring, &t->dtype))
        return set_error(err, "%s: tensor '%s': unsupported dtype \"%s\"", path, name, dtype->valuestring);
    if (!cJSON_IsArray(shape)) return set_error(err, "%s: tensor '%s': no \"shape\" list", path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS)
        return set_error(err, "%s: tensor '%s': %d dimensions (at most %d)", path, name, ndim, ST_MAX_DIMS);
    t->ndim = ndim;
    uint64_t numel = 1;
    int k = 0;
    for (const cJSON *d = shape->child; d; d = d->next, k++) {
        uint64_t v;
        if (json_index(d, &v)) return set_error(err, "%s: tensor '%s': shape[%d] is not a size", path, name, k);
        if (v && numel > UINT64_MAX / v)
            return set_error(err, "%s: tensor '%s': shape overflows", path, name);
        numel *= v;
        t->shape[k] = (int64_t)v;
    }
    if (numel > (uint64_t)INT64_MAX / 8) return set_error(err, "%s: tensor '%s': shape overflows", path, name);
    t->numel = (int64_t)numel;
    t->nbytes = (size_t)numel * st_dtype_size(t->dtype);
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || json_index(offs->child, begin) ||
        json_index(offs->child->next, end))
        return set_error(err, "%s: tensor '%s': \"data_offsets\" is not [BEGIN, END]", path, name);
    if (*end < *begin) return set_error(err, "%s: tensor '%s': data_offsets end before they begin", path, name);
    if (*end - *begin != t->nbytes)
        return set_error(err, "%s: tensor '%s': data_offsets span %llu bytes but %s %s needs %zu", path, name,
                         (unsigned long long)(*end - *begin), dtype->valuestring,
                         ndim ? "of this shape" : "scalar", t->nbytes);
    return 0;
}

typedef struct {
    uint64_t begin, end;
    int index;
} Span;

static int span_cmp(const void *a, const void *b) {
    const Span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

// Every byte of the buffer belongs to exactly one tensor (empty tensors take no bytes).
static int check_layout(const char *path, Span *spans, int n, const StTensor *t, uint64_t buffer, char *err) {
    qsort(spans, (size_t)n, sizeof(Span), span_cmp);
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        const char *name = t[spans[i].index].name;
        if (spans[i].end > buffer)
            return set_error(err, "%s: tensor '%s': data_offsets end at %llu, past the %llu-byte buffer", path,
                             name, (unsigned long long)spans[i].end, (unsigned long long)buffer);
        if (spans[i].begin < at)
            return set_error(err, "%s: tensor '%s': bytes %llu.. overlap the previous tensor", path, name,
                             (unsigned long long)spans[i].begin);
        if (spans[i].begin > at)
            return set_error(err, "%s: tensor '%s': a hole of %llu unused bytes before it", path, name,
                             (unsigned long long)(spans[i].begin - at));
        at = spans[i].end;
    }
    if (at != buffer)
        return set_error(err, "%s: %llu bytes after the last tensor belong to none", path,
                         (unsigned long long)(buffer - at));
    return 0;
}

static int parse_header(SafeTensors *st, const char *json, size_t n, uint64_t buffer, char *err) {
    const char *path = st->path;
    if (n == 0 || json[0] != '{') return set_error(err, "%s: header does not start with '{'", path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, n, &end, 0);
    if (!root) {
        size_t at = end && end >= json && end <= json + n ? (size_t)(end - json) : 0;
        return set_error(err, "%s: header is not valid JSON (near header byte %zu)", path, at);
    }
    for (const char *p = end; p < json + n; p++)
        if (*p != ' ') {
            cJSON_Delete(root);
            return set_error(err, "%s: header has bytes other than space padding after the JSON", path);
        }
    int count = cJSON_GetArraySize(root), rc = 0;
    st->tensors = xcalloc((size_t)count + 1, sizeof(StTensor));
    Span *spans = xcalloc((size_t)count + 1, sizeof(Span));
    StrMap names;
    strmap_init(&names, (size_t)count);
    for (const cJSON *e = root->child; e && rc == 0; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                rc = set_error(err, "%s: __metadata__ is not an object", path);
                break;
            }
            for (const cJSON *m = e->child; m; m = m->next)
                if (!cJSON_IsString(m)) rc = set_error(err, "%s: __metadata__ value '%s' is not a string", path, m->string);
            if (rc == 0 && !st->metadata_json) st->metadata_json = cJSON_PrintUnformatted(e);
            continue;
        }
        StTensor *t = &st->tensors[st->n_tensors];
        t->name = xstrdup(e->string);
        if (strmap_put(&names, t->name, strlen(t->name), st->n_tensors)) {
            rc = set_error(err, "%s: tensor '%s' appears twice in the header", path, t->name);
            free(t->name);
            break;
        }
        Span *s = &spans[st->n_tensors];
        s->index = st->n_tensors++;
        rc = parse_entry(path, e, t, &s->begin, &s->end, err);
    }
    if (rc == 0) rc = check_layout(path, spans, st->n_tensors, st->tensors, buffer, err);
    if (rc == 0) {
        const char *base = (const char *)st->map + 8 + n;
        for (int i = 0; i < st->n_tensors; i++) st->tensors[spans[i].index].data = base + spans[i].begin;
    }
    strmap_free(&names);
    free(spans);
    cJSON_Delete(root);
    return rc;
}

int st_open(SafeTensors *st, const char *path, char *err) {
    memset(st, 0, sizeof(*st));
    st->path = xstrdup(path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        set_error(err, "%s: cannot open: %s", path, strerror(errno));
        st_close(st);
        return -1;
    }
    struct stat sb;
    int rc = fstat(fd, &sb) ? set_error(err, "%s: cannot stat: %s", path, strerror(errno)) : 0;
    if (rc == 0 && sb.st_size < 8) rc = set_error(err, "%s: %lld bytes, too short for a safetensors file", path, (long long)sb.st_size);
    if (rc == 0) {
        st->map_len = (size_t)sb.st_size;
        st->map = mmap(NULL, st->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (st->map == MAP_FAILED) {
            st->map = NULL;
            rc = set_error(err, "%s: cannot map: %s", path, strerror(errno));
        }
    }
    close(fd);
    if (rc == 0) {
        const unsigned char *p = st->map;
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--) n = n << 8 | p[i];
        if (n > ST_MAX_HEADER)
            rc = set_error(err, "%s: header length %llu exceeds the format's limit of %llu", path,
                           (unsigned long long)n, ST_MAX_HEADER);
        else if (n > st->map_len - 8)
            rc = set_error(err, "%s: header length %llu runs past the end of the %zu-byte file", path,
                           (unsigned long long)n, st->map_len);
        else
            rc = parse_header(st, (const char *)st->map + 8, (size_t)n, st->map_len - 8 - n, err);
    }
    if (rc) st_close(st);
    return rc;
}

void st_close(SafeTensors *st) {
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    free(st->metadata_json);
    if (st->map) munmap(st->map, st->map_len);
    free(st->path);
    memset(st, 0, sizeof(*st));
}

const StTensor *st_find(const SafeTensors *st, const char *name) {
    for (int i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

float *st_to_f32(const StTensor *t) {
    float *out = xmalloc((size_t)t->numel * sizeof(float));
    const uint8_t *p = t->data;
    for (int64_t i = 0; i < t->numel; i++) {
        uint16_t h;
        if (t->dtype == ST_F32) {
            memcpy(&out[i], p + 4 * i, 4);
            continue;
        }
        memcpy(&h, p + 2 * i, 2);
        out[i] = t->dtype == ST_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
    return out;
}

// ---------------------------------------------------------------------------------------
// writing

static void json_string(ByteBuf *b, const char *s) {
    bytebuf_push(b, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            bytebuf_push(b, '\\');
            bytebuf_push(b, (char)c);
        } else if (c < 0x20) {
            char esc[8];
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            bytebuf_append(b, esc, 6);
        } else {
            bytebuf_push(b, (char)c);
        }
    }
    bytebuf_push(b, '"');
}

static void json_u64(ByteBuf *b, uint64_t v) {
    char num[24];
    int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
    bytebuf_append(b, num, (size_t)n);
}

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int st_write(const char *path, const StWrite *tensors, int n, const char *const *meta_keys,
             const char *const *meta_values, int n_meta, char *err) {
    ByteBuf h = {0};
    bytebuf_push(&h, '{');
    if (n_meta > 0) {
        bytebuf_append(&h, "\"__metadata__\":{", 16);
        for (int i = 0; i < n_meta; i++) {
            if (i) bytebuf_push(&h, ',');
            json_string(&h, meta_keys[i]);
            bytebuf_push(&h, ':');
            json_string(&h, meta_values[i]);
        }
        bytebuf_push(&h, '}');
    }
    uint64_t offset = 0;
    size_t *sizes = xcalloc((size_t)n + 1, sizeof(size_t));
    for (int i = 0; i < n; i++) {
        const StWrite *t = &tensors[i];
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (uint64_t)t->shape[d];
        sizes[i] = (size_t)numel * st_dtype_size(t->dtype);
        if (i || n_meta > 0) bytebuf_push(&h, ',');
        json_string(&h, t->name);
        bytebuf_append(&h, ":{\"dtype\":", 10);
        json_string(&h, st_dtype_name(t->dtype));
        bytebuf_append(&h, ",\"shape\":[", 10);
        for (int d = 0; d < t->ndim; d++) {
            if (d) bytebuf_push(&h, ',');
            json_u64(&h, (uint64_t)t->shape[d]);
        }
        bytebuf_append(&h, "],\"data_offsets\":[", 18);
        json_u64(&h, offset);
        bytebuf_push(&h, ',');
        json_u64(&h, offset + sizes[i]);
        bytebuf_append(&h, "]}", 2);
        offset += sizes[i];
    }
    bytebuf_push(&h, '}');
    while (h.len % 8) bytebuf_push(&h, ' ');  // the reference writer's alignment padding

    size_t plen = strlen(path);
    char *tmp = xmalloc(plen + 16);
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp), rc = 0;
    if (fd < 0) {
        rc = set_error(err, "%s: cannot create a temporary file beside it: %s", path, strerror(errno));
    } else {
        unsigned char len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
        // mkstemp creates the file private (0600); a model file is ordinary data
        int bad = fchmod(fd, 0644) || write_all(fd, len8, 8) || write_all(fd, h.data, h.len);
        for (int i = 0; i < n && !bad; i++) bad = write_all(fd, tensors[i].data, sizes[i]);
        if (bad || fsync(fd)) rc = set_error(err, "%s: write failed: %s", tmp, strerror(errno));
        if (close(fd) && rc == 0) rc = set_error(err, "%s: close failed: %s", tmp, strerror(errno));
        if (rc == 0 && rename(tmp, path)) rc = set_error(err, "%s: cannot rename into place: %s", path, strerror(errno));
        // and the directory entry, so the renamed file survives a crash too
        if (rc == 0 && sync_parent_dir(path)) rc = set_error(err, "%s: cannot sync its directory: %s", path, strerror(errno));
        if (rc) unlink(tmp);
    }
    free(tmp);
    free(sizes);
    bytebuf_free(&h);
    return rc;
}

// ---------------------------------------------------------------------------------------
// lists of float tensors to write

void st_list_add(StList *l, const char *name, const float *x, int ndim, const int64_t *shape, StDtype dtype) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->w = xrealloc(l->w, (size_t)l->cap * sizeof(StWrite));
        l->names = xrealloc(l->names, (size_t)l->cap * sizeof(char *));
        l->bufs = xrealloc(l->bufs, (size_t)l->cap * sizeof(void *));
    }
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (size_t)shape[d];
    void *buf = xmalloc(n * st_dtype_size(dtype));
    if (dtype == ST_BF16)
        for (size_t i = 0; i < n; i++) ((uint16_t *)buf)[i] = f32_to_bf16(x[i]);
    else
        memcpy(buf, x, n * sizeof(float));
    StWrite *w = &l->w[l->n];
    l->names[l->n] = xstrdup(name);
    l->bufs[l->n] = buf;
    *w = (StWrite){l->names[l->n], dtype, ndim, {0}, buf};
    memcpy(w->shape, shape, (size_t)ndim * sizeof(int64_t));
    l->n++;
}

int st_list_write(const StList *l, const char *path, char *err) {
    const char *keys[] = {"format"}, *values[] = {"pt"};
    return st_write(path, l->w, l->n, keys, values, 1, err);
}

void st_list_free(StList *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]), free(l->bufs[i]);
    free(l->w), free(l->names), free(l->bufs);
    memset(l, 0, sizeof(*l));
}
