/*
 * tokenizer.h: one interface over the tokenizer families we read.
 *
 * - SentencePiece BPE (`tokenizer.model`, Mistral v1/v2/v3/v7): sentencepiece.h
 * - Tekken, tiktoken-style byte-level BPE (`tekken.json`, Nemo, Ministral): tekken.h
 * - GPT-2-style byte-level BPE from a GGUF model file or a Hugging Face `tokenizer.json`
 *   (SmolLM2 and the like), with the ChatML chat format: bytelevel.h
 *
 * tokenizer_load() tells them apart by content (the GGUF magic, a JSON object with a
 * "model" (tokenizer.json) or without (tekken.json), else a protobuf), so the file name
 * never matters for loading. The *version* (which chat format the model was trained
 * with) is read the way mistral-common reads it: for SentencePiece from the file-name
 * suffix `.model.vN` when there is one, otherwise from the control tokens the file defines
 * (see sentencepiece.c); for Tekken from `config.version`.
 *
 * encode() is mistral-common's `Tokenizer.encode(text, bos=False, eos=False)`: the raw
 * text, no BOS/EOS, special-token strings in the text encoded as ordinary text.
 * decode() drops special/control tokens (mistral-common's SpecialTokenPolicy.IGNORE) and
 * returns the raw bytes of the rest.
 *
 * A Tokenizer keeps an encode cache, so one Tokenizer is used by one thread at a time.
 */
#ifndef PERSONA_TOKENIZER_H
#define PERSONA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "../common/util.h"

typedef struct {
    int32_t *ids;
    size_t len, cap;
} TokenVec;

void tokvec_push(TokenVec *v, int32_t id);
void tokvec_free(TokenVec *v);

typedef enum { TOKENIZER_SENTENCEPIECE = 1, TOKENIZER_TEKKEN = 2, TOKENIZER_BYTELEVEL = 3 } TokenizerKind;

typedef struct SentencePiece SentencePiece;
typedef struct Tekken Tekken;
typedef struct ByteLevel ByteLevel;

typedef struct {
    TokenizerKind kind;
    int version;     // Mistral tokenizer version: 1, 2, 3, 7, 11, 13, ...; 0 for byte-level BPE
    int vocab_size;  // number of ids, special tokens included
    int32_t bos_id, eos_id, unk_id, pad_id;  // looked up by string in the file (byte-level
                                             // BPE: the ids it names); -1 if absent
    SentencePiece *spm;
    Tekken *tekken;
    ByteLevel *bytelevel;
} Tokenizer;

// Loads tokenizer.model, tekken.json, tokenizer.json or a GGUF model's tokenizer. Returns 0,
// or -1 with a one-line reason in err.
int tokenizer_load(Tokenizer *t, const char *path, char *err);
void tokenizer_free(Tokenizer *t);

// Appends the ids of text[0..len) to out. Any bytes are accepted; malformed UTF-8 is
// handled as each family's reference does (see utf8.h).
void tokenizer_encode(Tokenizer *t, const char *text, size_t len, TokenVec *out);

// Appends the bytes of ids to out, special tokens dropped. Returns -1 (reason in err) if
// an id is outside the vocabulary.
int tokenizer_decode(const Tokenizer *t, const int32_t *ids, size_t n, ByteBuf *out, char *err);

// The id of a special/control token by its string (e.g. "[INST]"), or -1 if the file
// defines no such special token. Ordinary vocabulary entries are never returned.
int32_t tokenizer_special_id(const Tokenizer *t, const char *piece);

// The text form of any id, for debugging and `tokenize --pieces`: the SentencePiece piece
// (e.g. "▁the", "<0x0A>") or the Tekken token bytes / special-token string.
// Returns the length and sets *s; the bytes are not NUL-terminated.
size_t tokenizer_piece(const Tokenizer *t, int32_t id, const char **s);

#endif
