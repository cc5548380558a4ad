/*
 * bnb4bit.h: linear weights of a bitsandbytes-4bit checkpoint, loaded as they are stored.
 *
 * transformers saves a `Linear4bit` P (reference/qlora.md §A.6) as
 *   P.weight                                U8 [rows*cols/2, 1]  packed NF4 codes
 *   P.weight.absmax                         U8 [blocks] with double quantization, else F32
 *   P.weight.quant_map                      F32 [16]             the NF4 table
 *   P.weight.nested_absmax                  F32 [ceil(blocks/256)]   (double quantization)
 *   P.weight.nested_quant_map               F32 [256]                (double quantization)
 *   P.weight.quant_state.bitsandbytes__nf4  U8 [n]  JSON: {"quant_type": "nf4", "blocksize": 64,
 *       "dtype": "bfloat16", "shape": [rows, cols], "nested_blocksize": 256,
 *       "nested_dtype": "float32", "nested_offset": <float>}
 * Every size is checked against the JSON's shape and blocksize, the quant_map against
 * NF4's table, and the nested block size must be 256; a mismatch names the tensor.
 */
#ifndef PERSONA_BNB4BIT_H
#define PERSONA_BNB4BIT_H

#include "model_files.h"
#include "nf4.h"

// Loads linear `prefix` (e.g. "model.layers.0.self_attn.q_proj"), expecting [rows, cols].
int bnb4bit_load_linear(Nf4Weight *q, const ModelFiles *m, const char *prefix, int64_t rows, int64_t cols, char *err);

#endif
