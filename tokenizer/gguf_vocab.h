/*
 * gguf_vocab.h: a tokenizer as the tokenizer.ggml.* metadata of a GGUF file, written the way
 * llama.cpp's converter (convert_hf_to_gguf.py, gguf-py's vocab.py) writes each family, so
 * that llama.cpp, Ollama and transformers rebuild the tokenizer we trained with:
 *
 *   SentencePiece   model "llama", pre "default"; tokens = the pieces ("▁the", "<0x0A>",
 *                   "[INST]"), scores = their scores, token_type = their types (SentencePiece's
 *                   numbering is GGUF's: 1 normal, 2 unknown, 3 control, 4 user-defined,
 *                   5 unused, 6 byte); add_space_prefix = the model's add_dummy_prefix.
 *                   User-defined pieces (v3's [REFERENCE_DOC_0..19]) stay type 4, so llama.cpp
 *                   and transformers match them whole in text, as SentencePiece does; the
 *                   converter, reading types through the sentencepiece package (which does not
 *                   report that one), writes them as normal pieces
 *   Tekken          model "gpt2", pre "tekken" (the file's pre-split regex must be the one
 *                   llama.cpp calls "tekken", which also looks whole pieces up first, as
 *                   tiktoken does); tokens = the special tokens' strings (type 3) then every
 *                   ordinary token's bytes in GPT-2's byte-to-unicode spelling (type 1), ids
 *                   unchanged; merges = the rules tekken_merges finds from the ranks
 *   byte-level BPE  model "gpt2", pre = llama.cpp's name of its pre-tokenizer (refused when
 *                   llama.cpp has none); tokens, token types and merges as the source spells them
 *
 * and for all: the bos/eos/unknown/padding ids the tokenizer defines, add_bos_token as
 * asked (the chat format decides: Mistral's formats start with BOS, ChatML does not),
 * add_eos_token false. A vocabulary smaller than the model's embedding matrix is padded to
 * its size with "[PAD{id}]" tokens of type 5 (unused), as the converter does; a larger one
 * is refused.
 */
#ifndef PERSONA_GGUF_VOCAB_H
#define PERSONA_GGUF_VOCAB_H

#include "../train/gguf_write.h"
#include "tokenizer.h"

// Whether the tokenizer can be written for a model of n_vocab embedding rows: 0, or -1 with
// the reason in err (the vocabulary does not fit, a pre-tokenizer llama.cpp does not have).
// path names the tokenizer in messages.
int gguf_vocab_check(const Tokenizer *t, const char *path, int n_vocab, char *err);
// Adds the keys to w (after the same checks).
int gguf_vocab_write(GgufWriter *w, const Tokenizer *t, const char *path, int n_vocab, int add_bos, char *err);

#endif
