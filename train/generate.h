/*
 * generate.h: text generation with the CPU model and a KV cache (decode.h), for chat and
 * for the persona probes a training run prints. The prompt is read into the cache (reusing
 * what the cache already holds of it, so a conversation's next turn reads only what is new),
 * then one token at a time is sampled (sample.h) and read back, until the end-of-sequence
 * token, a token limit, a full context or the caller says stop.
 */
#ifndef PERSONA_GENERATE_H
#define PERSONA_GENERATE_H

#include <stdint.h>

#include "../tokenizer/tokenizer.h"
#include "decode.h"
#include "model.h"
#include "sample.h"

typedef enum { STOP_EOS = 1, STOP_MAX_TOKENS, STOP_CONTEXT, STOP_INTERRUPTED } StopReason;

// "end of sequence", "token limit", "context full", "interrupted".
const char *stop_reason_text(StopReason r);

// Called with each new token; a non-zero return stops generation (STOP_INTERRUPTED).
typedef int (*TokenCallback)(void *ctx, int32_t id);

// Reads prompt[0..n) into the cache and generates at most max_new tokens after it,
// appending them to answer (the end-of-sequence token eos is not appended). The cache then
// holds the prompt and every generated token but the last. Returns why it stopped.
StopReason generate_with_cache(const Decoder *d, KvCache *cache, const int32_t *prompt, size_t n, int max_new,
                               int32_t eos, const SampleConfig *sc, uint64_t *rng, TokenVec *answer, TokenCallback cb,
                               void *ctx);

// Appends up to max_new tokens to ids (which holds the prompt), stopping after eos_id
// (appended) or when cb (may be NULL) returns non-zero; top-p sampling at the temperature,
// greedy at 0. Returns why it stopped.
StopReason generate(const Model *m, TokenVec *ids, int max_new, int32_t eos_id, float temperature, float top_p,
                    uint64_t *rng, TokenCallback cb, void *ctx);

#endif
