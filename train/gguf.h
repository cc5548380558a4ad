/*
 * gguf.h: reading GGUF files (llama.cpp's model format, versions 2 and 3), memory-mapped.
 *
 * The format (ggml's docs/gguf.md; all integers little-endian):
 *   "GGUF"                       magic, 4 bytes
 *   uint32 version               2 or 3 (version 1 had 32-bit counts and is not read)
 *   uint64 tensor_count, uint64 metadata_kv_count
 *   metadata_kv_count times:     string key, uint32 value type, value
 *   tensor_count times:          string name, uint32 n_dims, uint64 ne[n_dims], uint32 ggml type,
 *                                uint64 offset (into the data section)
 *   padding to the alignment     general.alignment (uint32, a power of two) or 32
 *   the data section             each tensor at its offset, a multiple of the alignment
 * A string is a uint64 byte length and that many bytes (no NUL). A value is one of the
 * scalar types below, a string, or an array: uint32 element type, uint64 count, the
 * elements (arrays of arrays are allowed). A tensor's ne[0] is its innermost (contiguous)
 * dimension, so a PyTorch weight [out, in] is stored with ne = {in, out}.
 *
 * gguf_open checks everything against the file before anything is used: the magic and
 * version, every length, count and offset against the bytes that remain (so a count near
 * 2^64 or a string running past the end is refused, never allocated or read), value and
 * tensor types, duplicate keys and names, dimensions and their product, the alignment,
 * each tensor's offset (aligned, inside the file) and size, and that no two tensors
 * overlap. A failure is one line: the file, the field (key or tensor name) and the reason.
 *
 * Tensor types read and dequantized to float32 (ggml's block layouts, ggml-common.h):
 * F32, F16, BF16, Q8_0, Q4_0, Q4_1 (blocks of 32) and Q4_K, Q5_K, Q6_K (super-blocks of
 * 256); the arithmetic is the gguf Python package's (quants.py), so the values are the
 * same floats. Any other type is refused at open with its number and name.
 */
#ifndef PERSONA_GGUF_H
#define PERSONA_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "../common/strmap.h"
#include "../common/util.h"

#define GGUF_MAX_DIMS 4             // ggml's GGML_MAX_DIMS
#define GGUF_DEFAULT_ALIGNMENT 32

typedef enum {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5, GGUF_F32 = 6,
    GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10, GGUF_I64 = 11, GGUF_F64 = 12,
    GGUF_NUM_VALUE_TYPES
} GgufType;

typedef enum {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q8_0 = 8, GGML_Q4_K = 12,
    GGML_Q5_K = 13, GGML_Q6_K = 14, GGML_BF16 = 30
} GgmlType;

// One metadata entry. Scalars: count 1, data points at the value. Strings: data at the
// bytes, count = their length. Arrays: elem is the element type, count the number of
// elements, data the first element's bytes.
typedef struct {
    char *key;
    GgufType type, elem;
    uint64_t count;
    const uint8_t *data;
    uint64_t offset;     // file offset of the value, for messages
    uint64_t *str_at;    // arrays of strings: the offset of element i's length field from data
} GgufKV;

typedef struct {
    char *name;
    GgmlType type;
    int ndim;
    int64_t ne[GGUF_MAX_DIMS];  // ne[0] innermost; unused dimensions are 1
    int64_t numel;
    uint64_t offset;            // in the data section
    size_t nbytes;
    const void *data;           // inside the mapping; valid until gguf_close
} GgufTensor;

typedef struct {
    char *path;
    void *map;
    size_t map_len;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;  // file offset of the data section
    GgufKV *kv;
    int64_t n_kv;
    GgufTensor *tensors;
    int64_t n_tensors;
    StrMap kv_index, tensor_index;
} Gguf;

// 1 if the file at path starts with the GGUF magic (0 if not, or unreadable).
int gguf_is_gguf(const char *path);

int gguf_open(Gguf *g, const char *path, char *err);
void gguf_close(Gguf *g);

const char *gguf_type_name(GgufType t);   // "UINT32", "STRING", ...
const char *ggml_type_name(GgmlType t);   // "Q4_K", ... ("?" when unknown)
// Values per block and bytes per block of a supported tensor type.
int64_t ggml_block_size(GgmlType t);
size_t ggml_type_size(GgmlType t);

// Lookups; NULL when absent.
const GgufKV *gguf_find(const Gguf *g, const char *key);
const GgufTensor *gguf_tensor(const Gguf *g, const char *name);

// Typed reads of a metadata value by key. Each returns 0, or -1 with "FILE: metadata 'KEY':
// reason" in err when the key is missing or its value does not fit (any integer type for
// an int, which must fit in int64; F32 or F64 for a float; a string; a bool).
int gguf_get_int(const Gguf *g, const char *key, int64_t *v, char *err);
int gguf_get_float(const Gguf *g, const char *key, double *v, char *err);
int gguf_get_bool(const Gguf *g, const char *key, int *v, char *err);
int gguf_get_string(const Gguf *g, const char *key, const char **s, size_t *len, char *err);
// An array by key with the given element type (-1: any); its count in *n.
const GgufKV *gguf_get_array(const Gguf *g, const char *key, int elem, uint64_t *n, char *err);

// Element i (< count) of an array of strings / of integers / of floats. The integer and
// float forms convert any integer or float element type.
void gguf_array_string(const GgufKV *kv, uint64_t i, const char **s, size_t *len);
int64_t gguf_array_int(const GgufKV *kv, uint64_t i);
double gguf_array_float(const GgufKV *kv, uint64_t i);
// A scalar value (integer, float or bool) as a double, for dumps and messages.
double gguf_scalar(const GgufKV *kv);

// Dequantizes n values (a multiple of the type's block size) from src to float32.
void ggml_dequantize(GgmlType type, const void *src, float *dst, int64_t n);
// All of a tensor's values as float32 in a new array (free it), in ggml order (ne[0]
// fastest), i.e. row-major [ne[1], ne[0]] for a matrix.
float *gguf_tensor_f32(const GgufTensor *t);

#endif
