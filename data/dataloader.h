/*
 * dataloader.h: packed B x T training batches streamed from token shards.
 *
 * Packing (mistral-finetune's sequence_iterator, finetune/data/dataset.py). A row of T
 * positions is filled with conversations one after the other. A conversation of L tokens
 * contributes its L-1 (input, target) pairs: input tokens[i], target tokens[i+1], loss
 * weight mask[i+1], never a pair that crosses into another conversation. A conversation
 * that does not fit in what is left of the row is cut there; its remainder starts the next
 * row (and so on, for conversations longer than T). Every piece is one *segment*: the
 * positions restart at 0 and the segment id (numbered in order within the row) tells attention
 * to stay inside it. Restarting the positions of a remainder, as mistral-finetune does,
 * changes nothing a model computes: RoPE scores depend only on position differences, and
 * the remainder cannot attend to the piece before it anyway. Segment ids are distinct
 * across the rows of a batch (row r numbers its segments from r·T, and its padding is
 * -1 - r), so a model may run the B rows as one sequence of B·T tokens, every product over
 * all of them at once, and attention (which never crosses a segment) still stays inside
 * each row, as if the rows ran one by one. A piece none of whose targets
 * is trained is skipped without taking room (mistral-finetune skips such pieces too), so
 * every row carries at least one trained target and no compute goes to rows without loss.
 *
 * Sources and epochs. Each training shard is one source with the weight prep recorded in
 * it. For every conversation the loader picks a source at random with probability
 * weight / sum(weights) (mistral-finetune's interleave_iterators; equal weights mean equal
 * numbers of conversations from each source, whatever their sizes), then takes that
 * source's next conversation. A source's epoch is a permutation of its conversations
 * drawn from (seed, source, epoch); rank r of R takes the permutation's entries r, r+R,
 * r+2R, ..., so the R ranks' shares are disjoint and together cover every conversation
 * exactly once per epoch of that source. Sources start new epochs independently, and the
 * stream is endless.
 *
 * The shards are memory-mapped, never read into allocated memory; the loader holds one
 * permutation (4 bytes per conversation) per source.
 *
 * Resume. The state (each source's epoch and position in its permutation, the source
 * sampler's RNG, the conversation being packed and how far) is a few bytes per source; the
 * permutation is recomputed from the seed. Restoring it into a loader opened on the same
 * shards with the same configuration continues the exact batch sequence, bit for bit.
 *
 * Evaluation. EvalLoader packs the validation shards the same way, in order (shard by
 * shard, conversation by conversation), once, without shuffling or sampling; rank r takes
 * the conversations whose overall number is r mod R. The last batch is padded.
 */
#ifndef PERSONA_DATALOADER_H
#define PERSONA_DATALOADER_H

#include <stddef.h>
#include <stdint.h>

#include "shard.h"

// One batch, B rows of T positions, row-major ([b * T + t]).
typedef struct {
    int B, T;
    int32_t *inputs;     // input token id; 0 on padding
    int32_t *targets;    // the next token of the same conversation; 0 on padding
    float *weights;      // loss weight of the target: its mask (0 or 1); 0 on padding
    int32_t *positions;  // RoPE position, 0 at the start of each segment; 0 on padding
    int32_t *segments;   // segment id: row r's are r·T, r·T + 1, ...; its padding -1 - r
    int64_t n_trained;   // number of positions with weight > 0
    int rows;            // rows holding data (B, except for the last evaluation batches)
} Batch;

void batch_init(Batch *b, int B, int T);
void batch_free(Batch *b);

typedef struct {
    int batch, seq_len;    // B, T
    uint64_t seed;         // shuffling and source sampling
    int rank, world;       // this process's rank among world (1 for a single process)
    uint64_t fingerprint;  // of the tokenizer in use (shard_fingerprint_file); 0 = any
} LoaderConfig;

typedef struct Dataloader Dataloader;

// Opens the training shards (each a source). Refuses, with err: a shard shard_open refuses,
// a bad configuration, a source with fewer conversations than ranks (some rank would have
// none), or shards without a single trained token. Returns NULL on failure.
Dataloader *dataloader_open(const char *const *paths, int n_paths, const LoaderConfig *cfg, char *err);
// Fills b (made with batch_init for cfg's B, T) with the next batch. Returns 0 (never runs
// out) or -1 with err.
int dataloader_next(Dataloader *dl, Batch *b, char *err);
void dataloader_close(Dataloader *dl);

// The state between two batches, as bytes (little-endian, versioned, CRC-checked).
size_t dataloader_state_size(const Dataloader *dl);
void dataloader_state_save(const Dataloader *dl, uint8_t *buf);
// Refuses (err) a state of another size, version or configuration, or of other shards.
int dataloader_state_restore(Dataloader *dl, const uint8_t *buf, size_t n, char *err);

typedef struct EvalLoader EvalLoader;

EvalLoader *evalloader_open(const char *const *paths, int n_paths, const LoaderConfig *cfg, char *err);
// Fills b with the next batch: returns 1, or 0 when this rank's share is done (b then has
// rows == 0). Rows after the last conversation are padding.
int evalloader_next(EvalLoader *ev, Batch *b);
// Starts over from the first conversation, for the next evaluation.
void evalloader_rewind(EvalLoader *ev);
void evalloader_close(EvalLoader *ev);

#endif
