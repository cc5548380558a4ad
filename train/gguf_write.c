// gguf_write.c: see gguf_write.h for the order of calls and the bytes written.
#include "gguf_write.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/half.h"

static void put_le(ByteBuf *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) bytebuf_push(b, (char)(v >> (8 * i)));
}

static void put_string(ByteBuf *b, const char *s, size_t len) {
    put_le(b, len, 8);
    bytebuf_append(b, s, len);
}

static void put_key(GgufWriter *w, const char *key, GgufType type) {
    put_string(&w->kv, key, strlen(key));
    put_le(&w->kv, (uint64_t)type, 4);
    w->n_kv++;
}

static uint64_t f32_bits(float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
}

int gguf_writer_open(GgufWriter *w, const char *path, char *err) {
    memset(w, 0, sizeof(*w));
    size_t n = strlen(path) + 16;
    w->path = xstrdup(path);
    w->tmp = xmalloc(n);
    snprintf(w->tmp, n, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(w->tmp);
    if (fd < 0) {
        set_error(err, "%s: cannot create a temporary file beside it: %s", path, strerror(errno));
        free(w->path), free(w->tmp);
        memset(w, 0, sizeof(*w));
        return -1;
    }
    // mkstemp creates the file private (0600); a model file is ordinary data
    if (fchmod(fd, 0644) || !(w->f = fdopen(fd, "wb"))) {
        set_error(err, "%s: %s", w->tmp, strerror(errno));
        close(fd);
        gguf_writer_abort(w);
        return -1;
    }
    return 0;
}

void gguf_add_string(GgufWriter *w, const char *key, const char *s, size_t len) {
    put_key(w, key, GGUF_STRING);
    put_string(&w->kv, s, len);
}

void gguf_add_u32(GgufWriter *w, const char *key, uint32_t v) {
    put_key(w, key, GGUF_U32);
    put_le(&w->kv, v, 4);
}

void gguf_add_f32(GgufWriter *w, const char *key, float v) {
    put_key(w, key, GGUF_F32);
    put_le(&w->kv, f32_bits(v), 4);
}

void gguf_add_bool(GgufWriter *w, const char *key, int v) {
    put_key(w, key, GGUF_BOOL);
    bytebuf_push(&w->kv, (char)(v != 0));
}

void gguf_add_array(GgufWriter *w, const char *key, GgufType elem, const void *values, uint64_t n) {
    put_key(w, key, GGUF_ARRAY);
    put_le(&w->kv, (uint64_t)elem, 4);
    put_le(&w->kv, n, 8);
    for (uint64_t i = 0; i < n; i++) {
        uint32_t v;  // U32, I32 and F32 are all four bytes
        memcpy(&v, (const char *)values + 4 * i, 4);
        put_le(&w->kv, v, 4);
    }
}

void gguf_add_string_array(GgufWriter *w, const char *key, uint64_t n) {
    put_key(w, key, GGUF_ARRAY);
    put_le(&w->kv, GGUF_STRING, 4);
    put_le(&w->kv, n, 8);
}

void gguf_add_array_string(GgufWriter *w, const char *s, size_t len) { put_string(&w->kv, s, len); }

static uint64_t aligned(uint64_t x) {
    return (x + GGUF_DEFAULT_ALIGNMENT - 1) / GGUF_DEFAULT_ALIGNMENT * GGUF_DEFAULT_ALIGNMENT;
}

void gguf_add_tensor_info(GgufWriter *w, const char *name, GgmlType type, int ndim, const int64_t *ne) {
    int64_t numel = 1;
    put_string(&w->info, name, strlen(name));
    put_le(&w->info, (uint64_t)ndim, 4);
    for (int d = 0; d < ndim; d++) {
        put_le(&w->info, (uint64_t)ne[d], 8);
        numel *= ne[d];
    }
    put_le(&w->info, (uint64_t)type, 4);
    put_le(&w->info, w->data_size, 8);  // its offset in the data section
    size_t bytes = (size_t)(numel / ggml_block_size(type)) * ggml_type_size(type);
    w->sizes = xrealloc(w->sizes, (size_t)(w->n_tensors + 1) * sizeof(size_t));
    w->sizes[w->n_tensors++] = bytes;
    w->data_size = aligned(w->data_size + bytes);
}

static int write_bytes(GgufWriter *w, const void *p, size_t n, char *err) {
    if (n && fwrite(p, 1, n, w->f) != n) return set_error(err, "%s: write failed: %s", w->tmp, strerror(errno));
    return 0;
}

static int write_padding(GgufWriter *w, uint64_t len, char *err) {
    static const char zeros[GGUF_DEFAULT_ALIGNMENT];
    return write_bytes(w, zeros, (size_t)(aligned(len) - len), err);
}

int gguf_write_header(GgufWriter *w, char *err) {
    ByteBuf h = {0};
    bytebuf_append(&h, "GGUF", 4);
    put_le(&h, 3, 4);
    put_le(&h, w->n_tensors, 8);
    put_le(&h, w->n_kv, 8);
    int rc = write_bytes(w, h.data, h.len, err) || write_bytes(w, w->kv.data, w->kv.len, err) ||
             write_bytes(w, w->info.data, w->info.len, err) ||
             write_padding(w, h.len + w->kv.len + w->info.len, err) ? -1 : 0;
    bytebuf_free(&h);
    return rc;
}

int gguf_write_tensor(GgufWriter *w, const void *data, size_t nbytes, char *err) {
    if (w->next >= w->n_tensors || nbytes != w->sizes[w->next])
        return set_error(err, "%s: tensor %llu: %zu bytes where the plan says %zu", w->tmp,
                         (unsigned long long)w->next, nbytes, w->next < w->n_tensors ? w->sizes[w->next] : 0);
    w->next++;
    return write_bytes(w, data, nbytes, err) || write_padding(w, nbytes, err) ? -1 : 0;
}

static void writer_free(GgufWriter *w) {
    bytebuf_free(&w->kv);
    bytebuf_free(&w->info);
    free(w->sizes);
    free(w->path);
    free(w->tmp);
    memset(w, 0, sizeof(*w));
}

int gguf_writer_finish(GgufWriter *w, char *err) {
    if (w->next != w->n_tensors)
        return set_error(err, "%s: %llu of %llu tensors written", w->tmp, (unsigned long long)w->next,
                         (unsigned long long)w->n_tensors);
    if (fflush(w->f) || fsync(fileno(w->f))) return set_error(err, "%s: write failed: %s", w->tmp, strerror(errno));
    int rc = fclose(w->f);
    w->f = NULL;
    if (rc) return set_error(err, "%s: close failed: %s", w->tmp, strerror(errno));
    if (rename(w->tmp, w->path)) return set_error(err, "%s: cannot rename into place: %s", w->path, strerror(errno));
    writer_free(w);
    return 0;
}

void gguf_writer_abort(GgufWriter *w) {
    if (w->f) fclose(w->f);
    if (w->tmp) unlink(w->tmp);
    writer_free(w);
}

// ---------------------------------------------------------------------------------------
// quantization (ggml-quants.c's reference rows; gguf-py quants.py computes the same)

// Q8_0: {f16 d, int8 q[32]} per block; d = max|x| / 127 and q = round(x * (1 / d)), the
// multiplication by the reciprocal (not a division) and rounding half away from zero as ggml
// does; all in float32.
static void quantize_q8_0(const float *x, uint8_t *y, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++, x += 32, y += 34) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t h = f32_to_f16(d);
        y[0] = (uint8_t)h, y[1] = (uint8_t)(h >> 8);
        for (int i = 0; i < 32; i++) y[2 + i] = (uint8_t)(int8_t)roundf(x[i] * id);
    }
}

void ggml_quantize(GgmlType type, const float *src, void *dst, int64_t n) {
    uint8_t *out = dst;
    switch (type) {
    case GGML_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case GGML_Q8_0: quantize_q8_0(src, out, n); break;
    case GGML_F16:
    case GGML_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = type == GGML_F16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
            out[2 * i] = (uint8_t)h, out[2 * i + 1] = (uint8_t)(h >> 8);
        }
        break;
    default: abort();  // the exporter asks only for the types above
    }
}
