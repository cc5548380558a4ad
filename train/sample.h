/*
 * sample.h: choosing the next token from the logits, as transformers' generate does with
 * do_sample: temperature, then top-k, then top-p (nucleus), then one draw.
 *
 *   temperature T = 0: greedy, the token of the largest logit (the lowest id among equals),
 *                      no random number drawn;
 *   otherwise          p_v proportional to exp(logit_v / T);
 *   top_k K > 0:       only the K most probable tokens stay (0: all);
 *   top_p P < 1:       of those, the fewest most probable whose probability, renormalised
 *                      over what top-k kept, reaches P (the token that crosses P is kept);
 *   the draw:          u uniform in [0, 1) from the seeded generator (one number per token),
 *                      the first kept token, in order of decreasing probability (lower id
 *                      first among equals; in order of id when nothing is cut), at which the
 *                      kept mass so far exceeds u * the kept mass.
 * The same logits, settings and generator state always give the same token.
 */
#ifndef PERSONA_SAMPLE_H
#define PERSONA_SAMPLE_H

#include <stdint.h>

typedef struct {
    float temperature;  // 0: greedy
    float top_p;        // in (0, 1]; 1: off
    int top_k;          // 0: off
    int vocab;          // sample among ids below this (a tokenizer smaller than the model's
                        // embedding table); 0: all
} SampleConfig;

// The next token among the V logits (c->vocab, when set, limits V further).
int32_t sample_token(const float *logits, int V, const SampleConfig *c, uint64_t *rng);

#endif
