/*
 * sentencepiece.h: SentencePiece BPE models (`tokenizer.model`), as Mistral ships them.
 *
 * The model file is a protobuf (`sentencepiece_model.proto`, proto2) that we parse
 * directly; encoding reproduces SentencePiece's BPE exactly and decoding returns the
 * original bytes. The algorithm and the model settings it depends on are described at the
 * top of sentencepiece.c.
 */
#ifndef PERSONA_SENTENCEPIECE_H
#define PERSONA_SENTENCEPIECE_H

#include "tokenizer.h"

// SentencePiece::Type values from sentencepiece_model.proto.
enum { SPM_NORMAL = 1, SPM_UNKNOWN = 2, SPM_CONTROL = 3, SPM_USER_DEFINED = 4, SPM_UNUSED = 5,
       SPM_BYTE = 6 };

// Parses a tokenizer.model held in data[0..len); path is used in messages only.
// Returns NULL with a one-line reason (file, offset, what is wrong) in err.
SentencePiece *spm_load(const char *path, const char *data, size_t len, char *err);
void spm_free(SentencePiece *m);

void spm_encode(SentencePiece *m, const char *text, size_t len, TokenVec *out);
int spm_decode(const SentencePiece *m, const int32_t *ids, size_t n, ByteBuf *out, char *err);

int spm_vocab_size(const SentencePiece *m);
// Id of the piece with this exact string, whatever its type, or -1.
int32_t spm_piece_id(const SentencePiece *m, const char *piece, size_t len);
int spm_piece_type(const SentencePiece *m, int32_t id);  // 0 if out of range
size_t spm_piece(const SentencePiece *m, int32_t id, const char **s);
// The ids the trainer spec names (unk_id, bos_id, eos_id, pad_id), -1 when disabled.
int32_t spm_unk_id(const SentencePiece *m);
int32_t spm_bos_id(const SentencePiece *m);
int32_t spm_eos_id(const SentencePiece *m);
int32_t spm_pad_id(const SentencePiece *m);
float spm_piece_score(const SentencePiece *m, int32_t id);  // id in range
int spm_add_dummy_prefix(const SentencePiece *m);            // normalizer_spec.add_dummy_prefix

#endif
