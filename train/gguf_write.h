/*
 * gguf_write.h: writing GGUF files (version 3, the layout gguf.h describes), streamed.
 *
 * A file is planned first and written in one pass, so a model never has to be held twice:
 *   1. gguf_writer_open creates a temporary file beside the destination (so an output that
 *      cannot be written is found before any work is done);
 *   2. gguf_add_* collect the metadata, gguf_add_tensor_info each tensor's name, type and
 *      shape (ne[0] innermost: a weight [out, in] is ne = {in, out});
 *   3. gguf_write_header writes the magic, version 3, the counts, every key/value and tensor
 *      info (offsets computed from the planned sizes), then pads to the alignment (32,
 *      ggml's default; general.alignment is not written);
 *   4. gguf_write_tensor is called once per tensor in the planned order with its bytes; each
 *      is followed by zero padding to the alignment;
 *   5. gguf_writer_finish flushes, fsyncs and renames the file into place; on any failure
 *      gguf_writer_abort removes the temporary file, so the destination is either complete
 *      or untouched.
 * Integers and floats are written little-endian. Every value of a key and tensor name is
 * the caller's; a key or tensor added twice is a programming error (the reader refuses
 * such files).
 *
 * ggml_quantize converts float32 values to a tensor type with ggml's arithmetic, so the
 * bytes equal those of the `gguf` package's quants.quantize (tested): F32 as is, F16 and
 * BF16 rounded to nearest even, Q8_0 per block of 32: d = max|x| / 127, q = round-half-away
 * (x / d) as int8 (0 when d is 0), stored as {f16 d, int8 q[32]}.
 */
#ifndef PERSONA_GGUF_WRITE_H
#define PERSONA_GGUF_WRITE_H

#include <stdio.h>

#include "gguf.h"

typedef struct {
    char *path, *tmp;
    FILE *f;
    ByteBuf kv, info;      // the encoded metadata and tensor infos
    uint64_t n_kv, n_tensors;
    uint64_t data_size;    // planned bytes of the data section (padding included)
    size_t *sizes;         // each planned tensor's bytes, in order
    uint64_t next;         // the next tensor to write
} GgufWriter;

// Creates PATH.tmp.XXXXXX. Returns 0, or -1 with "PATH: cannot create ...: reason" in err.
int gguf_writer_open(GgufWriter *w, const char *path, char *err);

void gguf_add_string(GgufWriter *w, const char *key, const char *s, size_t len);
void gguf_add_u32(GgufWriter *w, const char *key, uint32_t v);
void gguf_add_f32(GgufWriter *w, const char *key, float v);
void gguf_add_bool(GgufWriter *w, const char *key, int v);
// An array of n numbers of type elem (U32, I32 or F32), from a host array of that type.
void gguf_add_array(GgufWriter *w, const char *key, GgufType elem, const void *values, uint64_t n);
// An array of n strings: this call, then exactly n calls of gguf_add_array_string.
void gguf_add_string_array(GgufWriter *w, const char *key, uint64_t n);
void gguf_add_array_string(GgufWriter *w, const char *s, size_t len);

// Plans one tensor (ne[0] innermost; ne[0] a multiple of the type's block size).
void gguf_add_tensor_info(GgufWriter *w, const char *name, GgmlType type, int ndim, const int64_t *ne);

int gguf_write_header(GgufWriter *w, char *err);
// The next planned tensor's bytes (nbytes must be its planned size).
int gguf_write_tensor(GgufWriter *w, const void *data, size_t nbytes, char *err);
// Every planned tensor written: flush, fsync, rename into place. Frees w (call abort on failure).
int gguf_writer_finish(GgufWriter *w, char *err);
// Removes the temporary file and frees w (after a failure, or to give up).
void gguf_writer_abort(GgufWriter *w);

// n float32 values (a multiple of the type's block size) as F32, F16, BF16 or Q8_0 bytes
// (n / block x type size of them).
void ggml_quantize(GgmlType type, const float *src, void *dst, int64_t n);

#endif
