/*
 * tekken.h: Mistral's Tekken tokenizer (`tekken.json`: Nemo, Ministral, Pixtral, ...), a
 * tiktoken-style byte-level BPE, token-exact with mistral-common's `Tekkenizer`.
 *
 * Ids: special tokens take ids 0..num_special-1 (their rank in the file); an ordinary
 * token of tiktoken rank r has id r + num_special. encode() is mistral-common's
 * `Tekkenizer.encode(s, bos=False, eos=False)`; the file format and the algorithm are
 * described at the top of tekken.c.
 *
 * A Tekken keeps an encode cache and regex match state, so one Tekken is used by one
 * thread at a time.
 */
#ifndef PERSONA_TEKKEN_H
#define PERSONA_TEKKEN_H

#include "tokenizer.h"  // the Tekken typedef, TokenVec, ByteBuf

// Parses a tekken.json held in data[0..len); path is used in messages only.
// Returns NULL with a one-line reason (the file and what is wrong) in err.
Tekken *tekken_load(const char *path, const char *data, size_t len, char *err);
void tekken_free(Tekken *t);

// Appends the ids of text[0..len) to out: no BOS/EOS, special-token strings in the text
// encoded as ordinary text. Malformed UTF-8 is first replaced the way Python's
// bytes.decode("utf-8", errors="replace") does (see utf8.h).
void tekken_encode(Tekken *t, const char *text, size_t len, TokenVec *out);

// Appends the bytes of ids to out, special tokens dropped (mistral-common's
// SpecialTokenPolicy.IGNORE). Returns 0, or -1 with the bad id and its position in err.
int tekken_decode(const Tekken *t, const int32_t *ids, size_t n, ByteBuf *out, char *err);

// Id of the special token with this string (e.g. "[INST]"), or -1 if there is none.
int32_t tekken_special_id(const Tekken *t, const char *str);

// The token bytes of an ordinary id or the string of a special id; returns the length
// and sets *s (not NUL-terminated). Out of range: returns 0 with *s = "".
size_t tekken_piece(const Tekken *t, int32_t id, const char **s);

int tekken_vocab_size(const Tekken *t);   // config.default_vocab_size: ids 0..vocab_size-1
int tekken_num_special(const Tekken *t);  // config.default_num_special_tokens
int tekken_version(const Tekken *t);      // config.version: "v3" -> 3, "v11" -> 11
const char *tekken_pattern(const Tekken *t);  // config.pattern, the pre-split regex

// The vocabulary as GPT-2-style merge rules (what a GGUF "gpt2" tokenizer needs), found as
// llama.cpp's converter finds them for tiktoken vocabularies (convert_hf_to_gguf.py,
// QwenModel.bpe): for each ordinary token of rank r >= 256, merge its own bytes the tiktoken
// way using only ranks below r; the two parts left are the rule that forms it, ranked r.
// This gives exactly tiktoken's encoding: the parts tiktoken joins into a token are always
// the ones its own bytes merge into (the joins inside a token's span happen in the same
// order whatever surrounds it), so every join it makes is a rule here with the same rank,
// and ties go to the leftmost pair in both. left[r], right[r] (arrays of the inner
// vocabulary's size, by rank) receive the parts' ranks, -1 for the 256 single bytes and for a
// token its bytes never merge into (no text encodes to it). Returns the number of those.
int tekken_merges(const Tekken *t, int32_t *left, int32_t *right);

#endif
