/*
 * nf4.h: 4-bit NormalFloat quantization with double quantization, as bitsandbytes does it
 * (`quantize_4bit(w, blocksize, quant_type="nf4", compress_statistics=True)`), the storage
 * of QLoRA's frozen weights. The algorithm and its exact rounding rules are at the top of
 * nf4.c; reference/qlora.md §A has the sources.
 *
 * Layout (bitsandbytes' own, so a bnb-4bit checkpoint loads as is):
 *   packed[n/2]     two 4-bit codes per byte, element 2j in the HIGH nibble
 *   absmax[nb]      per block of `blocksize` elements (nb = ceil(n / blocksize)), float32;
 *                   with double quantization it is stored as
 *   qabsmax[nb]     uint8 codes into the 256-entry dynamic map `code`,
 *   absmax2[nb2]    float32 per block of 256 absmax values (nb2 = ceil(nb / 256)),
 *   offset          float32, the mean of absmax, subtracted before quantizing it.
 */
#ifndef PERSONA_NF4_H
#define PERSONA_NF4_H

#include <stddef.h>
#include <stdint.h>

#define NF4_DQ_BLOCKSIZE 256  // bitsandbytes' block size for quantizing the absmax

extern const float nf4_code[16];

// bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): the
// 256-entry code the absmax statistics are quantized with.
void nf4_dynamic_map(float code[256]);

// First stage: packed codes and float absmax for n values of w.
void nf4_quantize(const float *w, size_t n, int blocksize, uint8_t *packed, float *absmax);
// w[i] = nf4_code[q_i] * absmax[i / blocksize], in float32.
void nf4_dequantize(const uint8_t *packed, const float *absmax, size_t n, int blocksize, float *w);

// Second stage: qabsmax/absmax2 for the nb absmax values around a given offset (see
// nf4_absmax_mean), using the 256-entry code.
void nf4_quantize_absmax(const float *absmax, size_t nb, float offset, const float code[256],
                         uint8_t *qabsmax, float *absmax2);
// absmax[b] = code[qabsmax[b]] * absmax2[b / 256] + offset.
void nf4_dequantize_absmax(const uint8_t *qabsmax, const float *absmax2, size_t nb, float offset,
                           const float code[256], float *absmax);
// The float32 mean of the absmax values that double quantization centres them on,
// computed in double and rounded once.
float nf4_absmax_mean(const float *absmax, size_t nb);

// A frozen linear weight [rows, cols] in NF4, always with double-quantized statistics or
// always without, as its source had it.
typedef struct {
    int64_t rows, cols;
    int blocksize;
    int double_quant;
    uint8_t *packed;   // rows * cols / 2 (rounded up)
    float *absmax;     // without double quantization: one per block
    uint8_t *qabsmax;  // with it: one code per block,
    float *absmax2;    //   one float per 256 blocks,
    float offset;      //   the mean they are centred on,
    float code[256];   //   and the 8-bit map
} Nf4Weight;

// Quantizes a float32 matrix as bitsandbytes' Linear4bit does (blocksize 64 and double
// quantization are its defaults).
void nf4_weight_quantize(Nf4Weight *q, const float *w, int64_t rows, int64_t cols, int blocksize, int double_quant);
// The float32 matrix it stands for.
void nf4_weight_dequantize(const Nf4Weight *q, float *w);
// Its per-block scales as float32 (ceil(rows * cols / blocksize) of them): absmax as stored,
// or dequantized from the double-quantized statistics.
void nf4_weight_absmax(const Nf4Weight *q, float *absmax);
// Elements [c0, c0 + n) of row r of the matrix it stands for, given nf4_weight_absmax's
// scales: the same values nf4_weight_dequantize gives there.
void nf4_weight_row(const Nf4Weight *q, const float *absmax, int64_t r, int64_t c0, int n, float *out);
void nf4_weight_free(Nf4Weight *q);

#endif
