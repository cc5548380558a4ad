/*
 * safetensors.h: reading and writing Hugging Face safetensors files.
 *
 * The format (huggingface/safetensors README, "Format"):
 *   8 bytes     N, the header length, unsigned 64-bit little-endian
 *   N bytes     a UTF-8 JSON object, possibly padded with trailing spaces:
 *               {"NAME": {"dtype": "BF16", "shape": [d0, d1, ...], "data_offsets": [BEGIN, END]},
 *                ..., "__metadata__": {"key": "value", ...}}      (metadata optional)
 *   the rest    the byte buffer; tensor bytes are buffer[BEGIN, END), little-endian, row-major
 * The buffer is fully covered by the tensors with no holes and no overlaps, END - BEGIN is
 * exactly numel x dtype size, and N is at most 100,000,000 (the reference reader's limit).
 *
 * The reader memory-maps the file and checks every one of those rules before handing out a
 * pointer, so a lying header (offsets past the end, overlapping ranges, a shape that does
 * not match the byte count, a huge header length) is refused with a message naming the file
 * and the tensor. The writer lays out tensors in the order given, pads the header to a
 * multiple of 8 with spaces as the reference writer does, and writes to a temporary file
 * that is renamed into place.
 */
#ifndef PERSONA_SAFETENSORS_H
#define PERSONA_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "../common/util.h"

#define ST_MAX_DIMS 8

typedef enum {
    ST_BOOL, ST_U8, ST_I8, ST_I16, ST_U16, ST_F16, ST_BF16, ST_I32, ST_U32, ST_F32,
    ST_I64, ST_U64, ST_F64, ST_NUM_DTYPES
} StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    size_t nbytes;
    const void *data;  // inside the mapping; valid until st_close
} StTensor;

typedef struct {
    char *path;
    void *map;
    size_t map_len;
    StTensor *tensors;  // in file order of their data
    int n_tensors;
    char *metadata_json;  // the "__metadata__" object as JSON text, or NULL
} SafeTensors;

const char *st_dtype_name(StDtype d);
size_t st_dtype_size(StDtype d);
// "BF16" -> ST_BF16; returns -1 for names we do not handle (F8 and sub-byte types).
int st_dtype_parse(const char *name, StDtype *d);

// Opens and validates path. Returns 0, or -1 with "path: tensor 'x': reason" in err.
int st_open(SafeTensors *st, const char *path, char *err);
void st_close(SafeTensors *st);
// The tensor with this name, or NULL.
const StTensor *st_find(const SafeTensors *st, const char *name);
// The values of a float tensor (F32, BF16 or F16; the caller checked) as float32, in a new
// array (free it).
float *st_to_f32(const StTensor *t);

// A tensor to write: data holds numel(shape) x dtype size bytes.
typedef struct {
    const char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
} StWrite;

// Writes tensors (in this order) and an optional flat metadata map (n_meta key/value
// pairs, may be 0) to path via a temporary file and rename. Returns 0 or -1 with err.
int st_write(const char *path, const StWrite *tensors, int n, const char *const *meta_keys,
             const char *const *meta_values, int n_meta, char *err);

// A list of float32 tensors to write in a chosen dtype (F32, or BF16 rounded to nearest
// even): the programs that produce model files (merge, init_model) build one of these.
typedef struct {
    StWrite *w;
    char **names;
    void **bufs;
    int n, cap;
} StList;

// Copies x (numel of the shape) into the list, converted to dtype (ST_F32 or ST_BF16).
void st_list_add(StList *l, const char *name, const float *x, int ndim, const int64_t *shape, StDtype dtype);
// st_write with PyTorch's {"format": "pt"} metadata.
int st_list_write(const StList *l, const char *path, char *err);
void st_list_free(StList *l);

#endif
