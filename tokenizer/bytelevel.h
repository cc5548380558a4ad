/*
 * bytelevel.h: GPT-2-style byte-level BPE (SmolLM2, GPT-2, StarCoder, ...), token-exact with
 * Hugging Face tokenizers and llama.cpp for the pre-tokenizers it accepts, read from either of
 * the two places such a tokenizer is published:
 *   - a GGUF file's metadata (llama.cpp's keys): tokenizer.ggml.model "gpt2", .pre (the
 *     pre-tokenizer's name), .tokens, .token_type, .merges, .bos/eos/unknown/padding_token_id,
 *     and tokenizer.chat_template;
 *   - a Hugging Face tokenizer.json (model.type "BPE"), with bos/eos and the chat template
 *     from a tokenizer_config.json beside it when there is one.
 * The format and the algorithm are described at the top of bytelevel.c; the pre-split regex
 * and the merge loop are bpe.h's, shared with Tekken.
 *
 * encode() is Hugging Face's `encode(text, add_special_tokens=False)` with special-token
 * strings in the text encoded as ordinary text (split_special_tokens=True), as the other
 * tokenizers here do; decode() drops special (control) tokens.
 */
#ifndef PERSONA_BYTELEVEL_H
#define PERSONA_BYTELEVEL_H

#include "../train/gguf.h"
#include "tokenizer.h"

typedef struct ByteLevel ByteLevel;

// From an open GGUF file (everything needed is copied; the file may be closed after).
ByteLevel *bytelevel_from_gguf(const Gguf *g, char *err);
// From tokenizer.json text (data[0..len), a parsed cJSON root in root); path for messages.
ByteLevel *bytelevel_from_json(const char *path, const void *root, char *err);
void bytelevel_free(ByteLevel *t);

void bytelevel_encode(ByteLevel *t, const char *text, size_t len, TokenVec *out);
int bytelevel_decode(const ByteLevel *t, const int32_t *ids, size_t n, ByteBuf *out, char *err);
// The id of a special token (control or user-defined) by its string, or -1.
int32_t bytelevel_special_id(const ByteLevel *t, const char *str);
size_t bytelevel_piece(const ByteLevel *t, int32_t id, const char **s);
int bytelevel_vocab_size(const ByteLevel *t);
// bos/eos/unk/pad ids the source names (-1 when it names none).
void bytelevel_ids(const ByteLevel *t, int32_t *bos, int32_t *eos, int32_t *unk, int32_t *pad);
// The chat template's default system prompt (ChatML templates that write one when the
// conversation has none), or NULL; its length in *len.
const char *bytelevel_default_system(const ByteLevel *t, size_t *len);

// For writing the tokenizer into a GGUF file:
// llama.cpp's name of the pre-tokenizer ("smollm", "gpt-2", "tekken"), or NULL when its
// stages are none llama.cpp has (a tokenizer.json with another pre-tokenizer).
const char *bytelevel_pre_name(const ByteLevel *t);
// The same for a list of regex stages (Rust/Oniguruma syntax, in order) and whether a piece
// that is itself a token skips the merges (llama.cpp's ignore_merges).
const char *bytelevel_pre_name_of(const char *const *patterns, int n, int ignore_merges);
// Token id as its source spells it (GPT-2's byte alphabet; special tokens as themselves),
// and its GGUF token type (1 normal, 2 unknown, 3 control, 4 user-defined).
int bytelevel_token(const ByteLevel *t, int32_t id, const char **spelled, size_t *len);
// Appends bytes[0..n) in GPT-2's byte-to-unicode spelling (a space is "Ġ").
void bytelevel_spell(const char *bytes, size_t n, ByteBuf *out);
// The merge rules in rank order: (*left)[r] and (*right)[r] are the ids joined by rule r
// (new arrays; free them). Returns the number of rules.
size_t bytelevel_merges(const ByteLevel *t, int32_t **left, int32_t **right);

#endif
