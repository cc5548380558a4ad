/*
 * fuzz.h: what the libFuzzer targets in test/fuzz/ share (test-only).
 *
 * Each target is one file, fuzz_NAME.c, with LLVMFuzzerTestOneInput: it hands the input to
 * one of our parsers as a user's file would reach it, and, when the parser accepts it, uses
 * the result the way the programs do (encode and decode with a tokenizer, read every tensor,
 * draw batches from a shard), so that a parser that accepts something it should refuse
 * shows up as a sanitizer finding downstream. A refusal is the expected outcome for most
 * inputs and is not checked beyond its message being one line: the tests check the
 * messages. Built with clang -fsanitize=fuzzer,address,undefined (`make fuzz`, Makefile).
 *
 * Most of our readers take a path (they map the file), so the input is written to a file
 * first: fuzz_file() keeps one scratch directory per process, removed at exit. The functions
 * are in fuzz.c.
 */
#ifndef PERSONA_FUZZ_H
#define PERSONA_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/util.h"

// The scratch directory of this process (created on first use, removed at exit).
const char *fuzz_scratch(void);
// Writes data[0..size) to scratch/name (replacing it) and returns its path (static buffer).
const char *fuzz_file(const char *name, const uint8_t *data, size_t size);
// A copy of data[0..size) in a buffer of exactly that size, so that AddressSanitizer sees
// a parser that reads one byte past what it was given (files are read with a NUL after
// them, which would hide it).
char *fuzz_exact_copy(const uint8_t *data, size_t size);
// A refusal must come with a one-line message (the house rule); aborts otherwise.
void fuzz_check_message(const char *err);

// Text the tokenizer targets encode with whatever tokenizer the input describes: ASCII,
// accents, CJK, an emoji, digits, runs of spaces, a control character, malformed UTF-8,
// and special-token strings (which encode as text).
extern const char fuzz_text[];
extern const size_t fuzz_text_len;
// Loads path with tokenizer_load (the programs' entry point) and uses the tokenizer as the
// programs do: encodes fuzz_text, decodes the ids, looks at pieces and special tokens, and
// encodes a conversation in the tokenizer's chat format. A load that fails must say why.
void fuzz_use_tokenizer(const char *path);

#endif
