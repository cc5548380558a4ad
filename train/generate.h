/*
 * generate.h: text generation with the CPU model, for the persona probes a training run
 * prints and for tests. Greedy when temperature is 0; otherwise softmax(logits / T),
 * restricted to the smallest set of tokens whose probability reaches top_p (nucleus
 * sampling), sampled with the given generator. Each new token recomputes the whole
 * sequence (no KV cache): the CPU reference is for correctness and small probes.
 */
#ifndef PERSONA_GENERATE_H
#define PERSONA_GENERATE_H

#include <stdint.h>

#include "../tokenizer/tokenizer.h"
#include "model.h"

// Appends up to max_new tokens to ids (which holds the prompt), stopping after eos_id.
void generate(Model *m, TokenVec *ids, int max_new, int32_t eos_id, float temperature, float top_p, uint64_t *rng);

// The next token from logits [V] (exposed for tests).
int32_t sample_token(const float *logits, int V, float temperature, float top_p, uint64_t *rng);

#endif
