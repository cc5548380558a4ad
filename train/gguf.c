// gguf.c: see gguf.h for the format and the rules every file must satisfy.
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/half.h"

#define MAX_ARRAY_DEPTH 8  // arrays of arrays nest at most this deep

static const struct {
    const char *name;
    size_t size;  // bytes of a scalar (0: not fixed-size)
} value_types[GGUF_NUM_VALUE_TYPES] = {
    [GGUF_U8] = {"UINT8", 1},   [GGUF_I8] = {"INT8", 1},       [GGUF_U16] = {"UINT16", 2},
    [GGUF_I16] = {"INT16", 2},  [GGUF_U32] = {"UINT32", 4},    [GGUF_I32] = {"INT32", 4},
    [GGUF_F32] = {"FLOAT32", 4}, [GGUF_BOOL] = {"BOOL", 1},    [GGUF_STRING] = {"STRING", 0},
    [GGUF_ARRAY] = {"ARRAY", 0}, [GGUF_U64] = {"UINT64", 8},   [GGUF_I64] = {"INT64", 8},
    [GGUF_F64] = {"FLOAT64", 8},
};

// The tensor types we read: values per block, bytes per block (ggml-common.h).
static const struct {
    GgmlType type;
    const char *name;
    int64_t block;
    size_t size;
} tensor_types[] = {
    {GGML_F32, "F32", 1, 4},      {GGML_F16, "F16", 1, 2},       {GGML_BF16, "BF16", 1, 2},
    {GGML_Q8_0, "Q8_0", 32, 34},  {GGML_Q4_0, "Q4_0", 32, 18},   {GGML_Q4_1, "Q4_1", 32, 20},
    {GGML_Q4_K, "Q4_K", 256, 144}, {GGML_Q5_K, "Q5_K", 256, 176}, {GGML_Q6_K, "Q6_K", 256, 210},
};
#define N_TENSOR_TYPES (sizeof(tensor_types) / sizeof(tensor_types[0]))

// Names of the ggml types we do not read, for the message that refuses them.
static const char *const other_type_names[] = {
    [4] = "Q4_2 (removed)", [5] = "Q4_3 (removed)", [6] = "Q5_0", [7] = "Q5_1", [9] = "Q8_1",
    [10] = "Q2_K", [11] = "Q3_K", [15] = "Q8_K", [16] = "IQ2_XXS", [17] = "IQ2_XS", [18] = "IQ3_XXS",
    [19] = "IQ1_S", [20] = "IQ4_NL", [21] = "IQ3_S", [22] = "IQ2_S", [23] = "IQ4_XS", [24] = "I8",
    [25] = "I16", [26] = "I32", [27] = "I64", [28] = "F64", [29] = "IQ1_M", [34] = "TQ1_0",
    [35] = "TQ2_0", [39] = "MXFP4",
};

static int tensor_type_index(uint32_t t) {
    for (size_t i = 0; i < N_TENSOR_TYPES; i++)
        if ((uint32_t)tensor_types[i].type == t) return (int)i;
    return -1;
}

const char *gguf_type_name(GgufType t) { return (unsigned)t < GGUF_NUM_VALUE_TYPES ? value_types[t].name : "?"; }

const char *ggml_type_name(GgmlType t) {
    int i = tensor_type_index((uint32_t)t);
    return i >= 0 ? tensor_types[i].name : "?";
}

int64_t ggml_block_size(GgmlType t) { return tensor_types[tensor_type_index((uint32_t)t)].block; }
size_t ggml_type_size(GgmlType t) { return tensor_types[tensor_type_index((uint32_t)t)].size; }

// ---------------------------------------------------------------------------------------
// a cursor over the mapping: every read is checked against the bytes that remain

typedef struct {
    const uint8_t *base;
    uint64_t pos, len;
    const char *path;
    char *err;
} Cursor;

static uint64_t remaining(const Cursor *c) { return c->len - c->pos; }

// Reads n bytes (a little-endian integer of that size) into *v. `what` names the field.
static int read_uint(Cursor *c, int n, uint64_t *v, const char *what) {
    *v = 0;
    if (remaining(c) < (uint64_t)n)
        return set_error(c->err, "%s: %s at offset %llu: the file ends (truncated)", c->path, what,
                         (unsigned long long)c->pos);
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--) x = x << 8 | c->base[c->pos + (uint64_t)i];
    c->pos += (uint64_t)n;
    *v = x;
    return 0;
}

// A string: its length, then checks that the bytes are in the file. Returns the offset of
// the bytes in *at and the length in *n.
static int read_string(Cursor *c, uint64_t *at, uint64_t *n, const char *what) {
    uint64_t start = c->pos;
    if (read_uint(c, 8, n, what)) return -1;
    if (*n > remaining(c))
        return set_error(c->err, "%s: %s at offset %llu: a string of %llu bytes runs past the end of the file",
                         c->path, what, (unsigned long long)start, (unsigned long long)*n);
    *at = c->pos;
    c->pos += *n;
    return 0;
}

// A copy of a name (key or tensor name) as a C string. Names with a control byte (NUL,
// newline, ...) are refused: no model names a key so, and they could not be printed in a
// one-line message.
static char *name_copy(Cursor *c, uint64_t at, uint64_t n, const char *what) {
    for (uint64_t i = 0; i < n; i++)
        if (c->base[at + i] < 0x20 || c->base[at + i] == 0x7f) {
            set_error(c->err, "%s: %s at offset %llu contains the control byte 0x%02x", c->path, what,
                      (unsigned long long)at, c->base[at + i]);
            return NULL;
        }
    char *s = xmalloc(n + 1);
    memcpy(s, c->base + at, n);
    s[n] = '\0';
    return s;
}

// Skips over one value of type t (checking it), recursing into arrays. For an array of
// strings at depth 0, records each element's offset in *str_at.
static int skip_value(Cursor *c, uint32_t t, int depth, const char *key, GgufKV *kv) {
    if (t >= GGUF_NUM_VALUE_TYPES)
        return set_error(c->err, "%s: metadata '%s': unknown value type %u", c->path, key, t);
    if (t == GGUF_STRING) {
        uint64_t at, n;
        return read_string(c, &at, &n, "metadata string");
    }
    if (t != GGUF_ARRAY) {
        if (remaining(c) < value_types[t].size)
            return set_error(c->err, "%s: metadata '%s': the value at offset %llu runs past the end of the file",
                             c->path, key, (unsigned long long)c->pos);
        if (t == GGUF_BOOL && c->base[c->pos] > 1)
            return set_error(c->err, "%s: metadata '%s': bool value %u is neither 0 nor 1", c->path, key,
                             c->base[c->pos]);
        c->pos += value_types[t].size;
        return 0;
    }
    if (depth >= MAX_ARRAY_DEPTH)
        return set_error(c->err, "%s: metadata '%s': arrays nested more than %d deep", c->path, key, MAX_ARRAY_DEPTH);
    uint64_t elem, count;
    if (read_uint(c, 4, &elem, "array type") || read_uint(c, 8, &count, "array count")) return -1;
    if (elem >= GGUF_NUM_VALUE_TYPES)
        return set_error(c->err, "%s: metadata '%s': unknown array element type %llu", c->path, key,
                         (unsigned long long)elem);
    // every element takes at least this many bytes, so the count is bounded by the file
    uint64_t least = elem == GGUF_STRING ? 8 : elem == GGUF_ARRAY ? 12 : value_types[elem].size;
    if (count > remaining(c) / least)
        return set_error(c->err, "%s: metadata '%s': an array of %llu %s elements does not fit in the %llu bytes "
                         "left in the file", c->path, key, (unsigned long long)count,
                         value_types[elem].name, (unsigned long long)remaining(c));
    if (kv && depth == 0) {
        kv->elem = (GgufType)elem;
        kv->count = count;
        kv->data = c->base + c->pos;
    }
    if (elem != GGUF_STRING && elem != GGUF_ARRAY && elem != GGUF_BOOL) {
        c->pos += count * least;
        return 0;
    }
    if (kv && depth == 0 && elem == GGUF_STRING) kv->str_at = xmalloc((count + 1) * sizeof(uint64_t));
    uint64_t first = c->pos;
    for (uint64_t i = 0; i < count; i++) {
        if (kv && depth == 0 && elem == GGUF_STRING) kv->str_at[i] = c->pos - first;
        if (skip_value(c, (uint32_t)elem, depth + 1, key, NULL)) return -1;
    }
    return 0;
}

static int read_kv(Gguf *g, Cursor *c, GgufKV *kv, int64_t index) {
    char what[64];
    snprintf(what, sizeof(what), "metadata key %lld", (long long)index);
    uint64_t at, n, type;
    if (read_string(c, &at, &n, what)) return -1;
    if (!(kv->key = name_copy(c, at, n, what))) return -1;
    if (read_uint(c, 4, &type, "value type")) return -1;
    kv->type = (GgufType)type;
    kv->offset = c->pos;
    kv->count = 1;
    kv->data = c->base + c->pos;
    if (type == GGUF_STRING) {
        uint64_t sat, sn;
        char value[96];
        snprintf(value, sizeof(value), "metadata '%.64s'", kv->key);
        if (read_string(c, &sat, &sn, value)) return -1;
        kv->data = c->base + sat;
        kv->count = sn;
    } else if (skip_value(c, (uint32_t)type, 0, kv->key, kv)) {
        return -1;
    }
    if (strmap_put(&g->kv_index, kv->key, strlen(kv->key), (int32_t)index))
        return set_error(c->err, "%s: metadata '%s' appears twice", c->path, kv->key);
    return 0;
}

static int read_tensor_info(Gguf *g, Cursor *c, GgufTensor *t, int64_t index) {
    char what[64];
    snprintf(what, sizeof(what), "tensor %lld's name", (long long)index);
    uint64_t at, n, ndim, type;
    if (read_string(c, &at, &n, what)) return -1;
    if (!(t->name = name_copy(c, at, n, what))) return -1;
    if (read_uint(c, 4, &ndim, "tensor n_dims")) return -1;
    if (ndim < 1 || ndim > GGUF_MAX_DIMS)
        return set_error(c->err, "%s: tensor '%s': %llu dimensions (1 to %d)", c->path, t->name,
                         (unsigned long long)ndim, GGUF_MAX_DIMS);
    t->ndim = (int)ndim;
    uint64_t numel = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        uint64_t v = 1;
        if (d < t->ndim && read_uint(c, 8, &v, "tensor dimension")) return -1;
        // a product beyond 2^53 elements is no tensor anyone can hold
        if (v > (1ull << 53) || (v && numel > (1ull << 53) / v))
            return set_error(c->err, "%s: tensor '%s': dimensions overflow (ne[%d] = %llu)", c->path, t->name, d,
                             (unsigned long long)v);
        numel *= v;
        t->ne[d] = (int64_t)v;
    }
    t->numel = (int64_t)numel;
    if (read_uint(c, 4, &type, "tensor type")) return -1;
    int ti = tensor_type_index((uint32_t)type);
    if (ti < 0) {
        const char *known = type < sizeof(other_type_names) / sizeof(other_type_names[0]) ? other_type_names[type] : NULL;
        return set_error(c->err, "%s: tensor '%s': ggml type %llu%s%s%s is not supported (F32, F16, BF16, Q8_0, "
                         "Q4_0, Q4_1, Q4_K, Q5_K, Q6_K are)", c->path, t->name, (unsigned long long)type,
                         known ? " (" : " (unknown", known ? known : "", ")");
    }
    t->type = (GgmlType)type;
    if (t->ne[0] % tensor_types[ti].block)
        return set_error(c->err, "%s: tensor '%s': ne[0] = %lld is not a multiple of %s's block of %lld", c->path,
                         t->name, (long long)t->ne[0], tensor_types[ti].name, (long long)tensor_types[ti].block);
    t->nbytes = (size_t)(numel / (uint64_t)tensor_types[ti].block) * tensor_types[ti].size;
    if (read_uint(c, 8, &t->offset, "tensor offset")) return -1;
    if (strmap_put(&g->tensor_index, t->name, strlen(t->name), (int32_t)index))
        return set_error(c->err, "%s: tensor '%s' appears twice", c->path, t->name);
    return 0;
}

typedef struct {
    uint64_t begin, end;
    int64_t index;
} Span;

static int span_cmp(const void *a, const void *b) {
    const Span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

// Offsets aligned, data inside the file, no two tensors sharing a byte.
static int check_layout(Gguf *g, char *err) {
    uint64_t data_len = g->map_len - g->data_offset;
    Span *spans = xcalloc((size_t)g->n_tensors + 1, sizeof(Span));
    int rc = 0;
    for (int64_t i = 0; i < g->n_tensors && rc == 0; i++) {
        GgufTensor *t = &g->tensors[i];
        if (t->offset % g->alignment)
            rc = set_error(err, "%s: tensor '%s': offset %llu is not a multiple of the alignment %u", g->path, t->name,
                           (unsigned long long)t->offset, g->alignment);
        else if (t->offset > data_len || t->nbytes > data_len - t->offset)
            rc = set_error(err, "%s: tensor '%s': its %zu bytes at data offset %llu run past the end of the file "
                           "(%llu bytes of data)", g->path, t->name, t->nbytes, (unsigned long long)t->offset,
                           (unsigned long long)data_len);
        else
            t->data = (const uint8_t *)g->map + g->data_offset + t->offset;
        spans[i] = (Span){t->offset, t->offset + t->nbytes, i};
    }
    if (rc == 0) qsort(spans, (size_t)g->n_tensors, sizeof(Span), span_cmp);
    int64_t last = -1;  // the tensor reaching furthest so far (empty tensors take no bytes)
    for (int64_t i = 0; i < g->n_tensors && rc == 0; i++) {
        if (spans[i].end == spans[i].begin) continue;
        if (last >= 0 && spans[i].begin < spans[last].end)
            rc = set_error(err, "%s: tensor '%s': its bytes overlap those of tensor '%s'", g->path,
                           g->tensors[spans[i].index].name, g->tensors[spans[last].index].name);
        if (last < 0 || spans[i].end > spans[last].end) last = i;
    }
    free(spans);
    return rc;
}

static int parse(Gguf *g, char *err) {
    Cursor c = {g->map, 0, g->map_len, g->path, err};
    uint64_t magic, version = 0, n_tensors = 0, n_kv = 0;
    if (read_uint(&c, 4, &magic, "magic")) return -1;
    if (memcmp(g->map, "GGUF", 4) != 0) return set_error(err, "%s: magic: not a GGUF file", g->path);
    if (read_uint(&c, 4, &version, "version")) return -1;
    if (version == 1) return set_error(err, "%s: version: GGUF version 1 is not supported (2 and 3 are)", g->path);
    if (version == 0x02000000 || version == 0x03000000)
        return set_error(err, "%s: version: a big-endian GGUF file is not supported", g->path);
    if (version != 2 && version != 3)
        return set_error(err, "%s: version: %llu is not a GGUF version this reader knows (2, 3)", g->path,
                         (unsigned long long)version);
    g->version = (uint32_t)version;
    if (read_uint(&c, 8, &n_tensors, "tensor_count") || read_uint(&c, 8, &n_kv, "metadata_kv_count")) return -1;
    // each entry takes at least 13 (key/value) or 24 (tensor info) bytes
    if (n_kv > remaining(&c) / 13)
        return set_error(err, "%s: metadata_kv_count: %llu entries cannot fit in the file", g->path,
                         (unsigned long long)n_kv);
    if (n_tensors > remaining(&c) / 24)
        return set_error(err, "%s: tensor_count: %llu tensors cannot fit in the file", g->path,
                         (unsigned long long)n_tensors);
    g->kv = xcalloc(n_kv + 1, sizeof(GgufKV));
    g->tensors = xcalloc(n_tensors + 1, sizeof(GgufTensor));
    strmap_init(&g->kv_index, n_kv);
    strmap_init(&g->tensor_index, n_tensors);
    for (uint64_t i = 0; i < n_kv; i++) {
        g->n_kv++;
        if (read_kv(g, &c, &g->kv[i], (int64_t)i)) return -1;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        g->n_tensors++;
        if (read_tensor_info(g, &c, &g->tensors[i], (int64_t)i)) return -1;
    }
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const GgufKV *al = gguf_find(g, "general.alignment");
    if (al) {
        uint32_t a = 0;
        if (al->type == GGUF_U32) memcpy(&a, al->data, 4);
        if (al->type != GGUF_U32 || a == 0 || (a & (a - 1)))
            return set_error(err, "%s: metadata 'general.alignment': must be a UINT32 power of two", g->path);
        g->alignment = a;
    }
    uint64_t start = (c.pos + g->alignment - 1) / g->alignment * g->alignment;
    if (g->n_tensors && start > g->map_len)
        return set_error(err, "%s: the data section (offset %llu) starts past the end of the file (truncated)",
                         g->path, (unsigned long long)start);
    g->data_offset = start > g->map_len ? g->map_len : start;
    return check_layout(g, err);
}

int gguf_is_gguf(const char *path) {
    FILE *f = fopen(path, "rb");
    char magic[4] = {0};
    int yes = f && fread(magic, 1, 4, f) == 4 && memcmp(magic, "GGUF", 4) == 0;
    if (f) fclose(f);
    return yes;
}

int gguf_open(Gguf *g, const char *path, char *err) {
    memset(g, 0, sizeof(*g));
    g->path = xstrdup(path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        set_error(err, "%s: cannot open: %s", path, strerror(errno));
        gguf_close(g);
        return -1;
    }
    struct stat sb;
    int rc = 0;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        rc = set_error(err, "%s: not a regular file", path);
    } else if (sb.st_size == 0) {
        rc = set_error(err, "%s: magic: the file is empty", path);
    } else {
        g->map_len = (size_t)sb.st_size;
        g->map = mmap(NULL, g->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (g->map == MAP_FAILED) {
            g->map = NULL;
            rc = set_error(err, "%s: cannot map: %s", path, strerror(errno));
        }
    }
    close(fd);
    if (rc == 0) rc = parse(g, err);
    if (rc) gguf_close(g);
    return rc;
}

void gguf_close(Gguf *g) {
    for (int64_t i = 0; i < g->n_kv; i++) free(g->kv[i].key), free(g->kv[i].str_at);
    for (int64_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    if (g->kv_index.slots) strmap_free(&g->kv_index);
    if (g->tensor_index.slots) strmap_free(&g->tensor_index);
    if (g->map) munmap(g->map, g->map_len);
    free(g->path);
    memset(g, 0, sizeof(*g));
}

// ---------------------------------------------------------------------------------------
// metadata access

const GgufKV *gguf_find(const Gguf *g, const char *key) {
    int32_t i = strmap_get(&g->kv_index, key, strlen(key));
    return i < 0 ? NULL : &g->kv[i];
}

const GgufTensor *gguf_tensor(const Gguf *g, const char *name) {
    int32_t i = strmap_get(&g->tensor_index, name, strlen(name));
    return i < 0 ? NULL : &g->tensors[i];
}

static int is_int_type(GgufType t) {
    return t == GGUF_U8 || t == GGUF_I8 || t == GGUF_U16 || t == GGUF_I16 || t == GGUF_U32 || t == GGUF_I32 ||
           t == GGUF_U64 || t == GGUF_I64;
}

// The integer of type t at p (a U64 above INT64_MAX is reported through *big).
static int64_t int_at(GgufType t, const uint8_t *p, int *big) {
    uint64_t u = 0;
    size_t n = value_types[t].size;
    for (size_t i = n; i-- > 0;) u = u << 8 | p[i];
    if (big) *big = t == GGUF_U64 && u > (uint64_t)INT64_MAX;
    if (t == GGUF_I8) return (int8_t)u;
    if (t == GGUF_I16) return (int16_t)u;
    if (t == GGUF_I32) return (int32_t)u;
    return (int64_t)u;
}

static double float_at(GgufType t, const uint8_t *p) {
    if (t == GGUF_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    if (t == GGUF_F64) {
        double d;
        memcpy(&d, p, 8);
        return d;
    }
    if (t == GGUF_BOOL) return p[0];
    return (double)int_at(t, p, NULL);
}

static const GgufKV *find_or_err(const Gguf *g, const char *key, char *err) {
    const GgufKV *kv = gguf_find(g, key);
    if (!kv) set_error(err, "%s: metadata '%s': missing", g->path, key);
    return kv;
}

static int wrong_type(const Gguf *g, const GgufKV *kv, const char *want, char *err) {
    return set_error(err, "%s: metadata '%s': is %s, expected %s", g->path, kv->key, gguf_type_name(kv->type), want);
}

int gguf_get_int(const Gguf *g, const char *key, int64_t *v, char *err) {
    const GgufKV *kv = find_or_err(g, key, err);
    if (!kv) return -1;
    if (!is_int_type(kv->type)) return wrong_type(g, kv, "an integer", err);
    int big;
    *v = int_at(kv->type, kv->data, &big);
    if (big) return set_error(err, "%s: metadata '%s': %llu is too large", g->path, key, (unsigned long long)*v);
    return 0;
}

int gguf_get_float(const Gguf *g, const char *key, double *v, char *err) {
    const GgufKV *kv = find_or_err(g, key, err);
    if (!kv) return -1;
    if (kv->type != GGUF_F32 && kv->type != GGUF_F64) return wrong_type(g, kv, "FLOAT32 or FLOAT64", err);
    *v = float_at(kv->type, kv->data);
    return 0;
}

int gguf_get_bool(const Gguf *g, const char *key, int *v, char *err) {
    const GgufKV *kv = find_or_err(g, key, err);
    if (!kv) return -1;
    if (kv->type != GGUF_BOOL) return wrong_type(g, kv, "BOOL", err);
    *v = kv->data[0];
    return 0;
}

int gguf_get_string(const Gguf *g, const char *key, const char **s, size_t *len, char *err) {
    const GgufKV *kv = find_or_err(g, key, err);
    if (!kv) return -1;
    if (kv->type != GGUF_STRING) return wrong_type(g, kv, "STRING", err);
    *s = (const char *)kv->data;
    *len = (size_t)kv->count;
    return 0;
}

const GgufKV *gguf_get_array(const Gguf *g, const char *key, int elem, uint64_t *n, char *err) {
    const GgufKV *kv = find_or_err(g, key, err);
    if (!kv) return NULL;
    if (kv->type != GGUF_ARRAY || (elem >= 0 && kv->elem != (GgufType)elem)) {
        char want[48];
        snprintf(want, sizeof(want), "an ARRAY of %s", elem >= 0 ? gguf_type_name((GgufType)elem) : "values");
        if (kv->type == GGUF_ARRAY)
            set_error(err, "%s: metadata '%s': is an ARRAY of %s, expected %s", g->path, key,
                      gguf_type_name(kv->elem), want);
        else
            wrong_type(g, kv, want, err);
        return NULL;
    }
    *n = kv->count;
    return kv;
}

void gguf_array_string(const GgufKV *kv, uint64_t i, const char **s, size_t *len) {
    const uint8_t *p = kv->data + kv->str_at[i];
    uint64_t n = 0;
    for (int k = 7; k >= 0; k--) n = n << 8 | p[k];
    *s = (const char *)p + 8;
    *len = (size_t)n;
}

int64_t gguf_array_int(const GgufKV *kv, uint64_t i) {
    const uint8_t *p = kv->data + i * value_types[kv->elem].size;
    return kv->elem == GGUF_F32 || kv->elem == GGUF_F64 ? (int64_t)float_at(kv->elem, p) : int_at(kv->elem, p, NULL);
}

double gguf_array_float(const GgufKV *kv, uint64_t i) {
    return float_at(kv->elem, kv->data + i * value_types[kv->elem].size);
}

double gguf_scalar(const GgufKV *kv) { return float_at(kv->type, kv->data); }

// ---------------------------------------------------------------------------------------
// dequantization (ggml-common.h block layouts; quants.py's float32 arithmetic)

static float half_at(const uint8_t *p) { return f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

// The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block (ggml's get_scale_min_k4).
static void scale_min_k4(int j, const uint8_t *q, float *sc, float *m) {
    if (j < 4) {
        *sc = (float)(q[j] & 63);
        *m = (float)(q[j + 4] & 63);
    } else {
        *sc = (float)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// Q4_K and Q5_K: {f16 d, f16 dmin, u8 scales[12], [u8 qh[32],] u8 qs[128]}; 8 sub-blocks
// of 32; value = (d * scale) * q - (dmin * min), q the 4 low bits (+ 16 x the high bit).
static void dequant_k(const uint8_t *b, float *y, int five) {
    float d = half_at(b), dmin = half_at(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *qs = b + 16 + (five ? 32 : 0);
    for (int s = 0; s < 8; s++) {
        float sc, m;
        scale_min_k4(s, scales, &sc, &m);
        float ds = d * sc, dm = dmin * m;
        const uint8_t *q = qs + 32 * (s / 2);
        int shift = 4 * (s % 2);
        for (int i = 0; i < 32; i++) {
            int v = (q[i] >> shift) & 0xF;
            if (five) v |= ((qh[i] >> s) & 1) << 4;
            y[32 * s + i] = ds * (float)v - dm;
        }
    }
}

// Q6_K: {u8 ql[128], u8 qh[64], i8 scales[16], f16 d}; value = (d * scale) * (q - 32) with
// q = 4 bits of ql | 2 bits of qh << 4, in two halves of 128 (ggml's dequantize_row_q6_K).
static void dequant_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *scales = (const int8_t *)(b + 192);
    float d = half_at(b + 208);
    for (int h = 0; h < 2; h++)
        for (int pos = 0; pos < 128; pos++) {
            int l = pos % 32, quarter = pos / 32;  // quarter k takes ql >> 4*(k/2), qh >> 2k
            int low = (ql[64 * h + l + 32 * (quarter % 2)] >> (4 * (quarter / 2))) & 0xF;
            int high = (qh[32 * h + l] >> (2 * quarter)) & 3;
            float ds = d * (float)scales[8 * h + pos / 16];
            y[128 * h + pos] = ds * (float)((low | high << 4) - 32);
        }
}

void ggml_dequantize(GgmlType type, const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    int64_t block = ggml_block_size(type);
    size_t size = ggml_type_size(type);
    for (int64_t at = 0; at < n; at += block, p += size) {
        float *y = dst + at;
        switch (type) {
        case GGML_F32: memcpy(y, p, 4); break;
        case GGML_F16: y[0] = half_at(p); break;
        case GGML_BF16: y[0] = bf16_to_f32((uint16_t)(p[0] | p[1] << 8)); break;
        case GGML_Q8_0: {  // {f16 d, i8 q[32]}: q * d
            float d = half_at(p);
            for (int i = 0; i < 32; i++) y[i] = (float)(int8_t)p[2 + i] * d;
            break;
        }
        case GGML_Q4_0: {  // {f16 d, u8 qs[16]}: d * (q - 8), low nibbles first
            float d = half_at(p);
            for (int i = 0; i < 16; i++) {
                y[i] = d * (float)((p[2 + i] & 0xF) - 8);
                y[i + 16] = d * (float)((p[2 + i] >> 4) - 8);
            }
            break;
        }
        case GGML_Q4_1: {  // {f16 d, f16 m, u8 qs[16]}: d * q + m
            float d = half_at(p), m = half_at(p + 2);
            for (int i = 0; i < 16; i++) {
                y[i] = d * (float)(p[4 + i] & 0xF) + m;
                y[i + 16] = d * (float)(p[4 + i] >> 4) + m;
            }
            break;
        }
        case GGML_Q4_K: dequant_k(p, y, 0); break;
        case GGML_Q5_K: dequant_k(p, y, 1); break;
        case GGML_Q6_K: dequant_q6_k(p, y); break;
        }
    }
}

float *gguf_tensor_f32(const GgufTensor *t) {
    float *out = xmalloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    ggml_dequantize(t->type, t->data, out, t->numel);
    return out;
}
