/*
 * decode.h: the model run one step at a time with a KV cache, for generating text on the
 * CPU (chat, and train_cpu's samples). fp32, the same operations as model_step.
 *
 * A KvCache is one sequence's state: the tokens read so far and, for every layer, the keys
 * (after RoPE) and values of their positions. A step takes a few new tokens of one or more
 * sequences (a prompt chunk, or the token sampled last), computes their queries, keys and
 * values, lets each new token attend to its sequence's cached keys and to the new ones up
 * to itself, then appends the new keys and values to the cache.
 *
 * The cache's slots: a model with a sliding window W keeps W slots and the key of position
 * p in slot p mod W (Mistral's rolling buffer, reference/mistral.md): a query at p sees
 * positions p - W + 1 .. p, so position p - W, the one slot p overwrites, is never needed
 * again, and a conversation runs past the window in constant memory. A model without a
 * window keeps every position, up to the `context` given when the cache is made; the caller
 * decides what to drop when it is full. Slots are allocated as positions arrive, so a short
 * conversation costs little whatever the window or context.
 *
 * What a sequence gets never depends on the other sequences of the step: attention is per
 * sequence; a sequence with DECODE_MATMUL_MIN or more new tokens (a prompt chunk) has its
 * projections computed as matrix products (matmul.h, the weights dequantized once for the
 * step), the others through matvec.h, and neither's sums depend on the other rows.
 */
#ifndef PERSONA_DECODE_H
#define PERSONA_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "../tokenizer/tokenizer.h"
#include "model.h"

typedef struct {
    int layers, kv_dim;  // Hkv * D values per position and layer, for K and for V
    int window;          // the model's sliding window (0: none)
    int64_t slots;       // the most positions held: W with a window, else the context
    int64_t allocated;   // slots allocated so far (grows to `slots`)
    float **k, **v;      // per layer [allocated, kv_dim]; position p in slot p mod slots
    TokenVec tokens;     // the tokens read so far; tokens.len is the next position
    int64_t written;     // the most positions it held since it was empty (after a rewind,
                         // slots may still hold positions beyond tokens.len)
} KvCache;

// A cache for the model; context is the most positions a model without a window may hold
// (ignored with a window).
void kv_cache_init(KvCache *c, const ModelConfig *cfg, int64_t context);
void kv_cache_free(KvCache *c);

// How many more positions the cache can take (INT64_MAX with a window: it rolls).
int64_t kv_cache_room(const KvCache *c);

// Keeps the first n tokens (n <= tokens.len) when the cache still holds what a query after
// them needs; returns 0, or -1 (nothing changed) when the rolling buffer has overwritten it.
int kv_cache_rewind(KvCache *c, size_t n);

// Prepares the cache to read `ids`: keeps the longest prefix it shares with them that it can
// rewind to, leaving at least the last id to read (its logits are the ones wanted). Returns
// how many ids are already in the cache; the caller reads ids from there on.
size_t kv_cache_reuse(KvCache *c, const int32_t *ids, size_t n);

// New tokens of one sequence for a step.
typedef struct {
    KvCache *cache;
    const int32_t *tokens;
    int n;  // >= 1
} DecodeSeq;

// One step: reads the new tokens of every sequence into its cache. logits gets [nseq, V],
// each sequence's last new token's logits, or with all_logits set [sum of n, V], every new
// token's, in order. Returns 0, or -1 (nothing computed) when a sequence has less room than
// it has new tokens (a model without a window, its context full).
int decode_forward(const Model *m, DecodeSeq *seqs, int nseq, float *logits, int all_logits);

// The most tokens decode_forward should get for one sequence in one step: a longer prompt
// is read in chunks of this many (bounding the step's activations).
#define DECODE_CHUNK 512
// New tokens of a sequence from which its projections are matrix products.
#define DECODE_MATMUL_MIN 16

// What runs a step: the CPU model (decoder_cpu: decode_forward) or another with the same
// contract (chat_gpu's device model), so the generation loop and the batch driver serve both.
typedef struct {
    int (*step)(void *ctx, DecodeSeq *seqs, int nseq, float *logits, int all_logits);
    void *ctx;
    const ModelConfig *config;
} Decoder;

Decoder decoder_cpu(const Model *m);

// Reads ids[0..n) into the cache in chunks (after kv_cache_reuse), leaving the last id's
// logits [V] in logits. Returns 0 or -1 when the context is full.
int decode_prompt(const Decoder *d, KvCache *c, const int32_t *ids, size_t n, float *logits);

#endif
