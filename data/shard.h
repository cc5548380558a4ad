/*
 * shard.h: token shards, the binary files `prep` writes and the trainers read.
 *
 * One shard holds the tokenized conversations of one source (one input file) for one
 * split (train or val). Layout, all integers little-endian, no padding anywhere, so every
 * byte of the file is covered by exactly one CRC32:
 *
 *   offset  size  field
 *   0       8     magic "PRSNSHRD"
 *   8       4     version (SHARD_VERSION = 1)
 *   12      4     header size in bytes (SHARD_HEADER_BYTES = 256)
 *   16      4     token width in bytes: 2 (uint16) when vocab_size <= 65536, else 4 (uint32)
 *   20      4     vocab_size of the tokenizer, special tokens included
 *   24      8     tokenizer fingerprint: 64-bit FNV-1a of the tokenizer file's bytes
 *   32      4     chat format the conversations were written in (1, 2, 3 or 7: V1, V2, V3, V7)
 *   36      4     reserved, 0
 *   40      8     n_tokens: tokens in the shard
 *   48      8     n_conversations
 *   56      8     n_trained: tokens whose mask is 1
 *   64      8     source weight (IEEE-754 double, > 0): how often the trainer samples this source
 *   72      64    source name, UTF-8, NUL-padded (at least one NUL)
 *   136     3x24  sections, in file order index, tokens, mask; each:
 *                   offset (8), size in bytes (8), CRC32 of the section's bytes (4), reserved 0 (4)
 *   208     44    reserved, 0
 *   252     4     CRC32 of bytes 0..251 of the header
 *   256           index:  (n_conversations + 1) uint64: conversation j is tokens [index[j], index[j+1]);
 *                         index[0] = 0, strictly increasing, index[n_conversations] = n_tokens
 *   ...           tokens: n_tokens ids, uint16 or uint32 (token width)
 *   ...           mask:   n_tokens bytes, 1 = the token is a training target, else 0
 *   end           the file ends exactly at the end of the mask section
 *
 * The index comes first because it is the only 8-byte field: after a 256-byte header it is
 * aligned, the tokens after it are aligned, and the byte-wide mask needs nothing. So a
 * mapped file gives aligned arrays without padding bytes that no CRC would cover.
 *
 * Token semantics are mistral-finetune's: a conversation is the ids that
 * tokenizer/chat.h's chat_encode writes (BOS first, assistant answers and their EOS
 * masked 1); a pretraining text is [BOS] encode(text) [EOS] with every mask 1 except BOS's.
 * The trainer predicts token i+1 from tokens 0..i of the same conversation, weighted by
 * mask[i+1], so the first token of a conversation is never a target; prep writes its mask
 * as 0, so n_trained is the number of targets.
 *
 * The reader (shard_open) checks, in this order, and refuses with "PATH: what failed":
 * magic, version, that the file holds a header, the header size, the header CRC, each
 * field (reserved bytes 0, token width against vocab_size, chat format, weight > 0, name
 * NUL-terminated, counts consistent), the section table against the counts, the file size
 * against the sections (truncated, or extra bytes), the tokenizer fingerprint against the
 * caller's, each section's CRC, and finally the contents (index starting at 0, strictly
 * increasing, ending at n_tokens; ids below vocab_size; mask bytes 0 or 1 summing to
 * n_trained). Only then is a byte handed out. Writer and reader assume a little-endian
 * host (x86-64, arm64), checked at compile time.
 */
#ifndef PERSONA_SHARD_H
#define PERSONA_SHARD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../common/util.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shards are little-endian and are read by mapping them; this host is not little-endian"
#endif

#define SHARD_MAGIC "PRSNSHRD"
#define SHARD_VERSION 1
#define SHARD_HEADER_BYTES 256
#define SHARD_NAME_BYTES 64

typedef struct {
    uint64_t offset, size;
    uint32_t crc32;
} ShardSection;

enum { SHARD_INDEX, SHARD_TOKENS, SHARD_MASK, SHARD_SECTIONS };

typedef struct {
    uint32_t version, token_bytes, vocab_size, chat_format;
    uint64_t fingerprint;
    uint64_t n_tokens, n_conversations, n_trained;
    double weight;
    char source[SHARD_NAME_BYTES];
    ShardSection section[SHARD_SECTIONS];
} ShardHeader;

// 64-bit FNV-1a of a tokenizer file's bytes: the fingerprint shards record and the reader
// compares. Returns 0 or -1 with err (cannot read the file).
int shard_fingerprint_file(const char *path, uint64_t *fingerprint, char *err);

// ---- reading --------------------------------------------------------------------------

typedef struct {
    char *path;
    ShardHeader h;
    const uint8_t *map;  // the whole file, mapped read-only
    size_t map_len;
    const uint64_t *index;  // n_conversations + 1 entries
    const void *tokens;     // uint16_t or uint32_t, see h.token_bytes
    const uint8_t *mask;
} Shard;

// Opens and checks everything listed above. fingerprint: the fingerprint of the tokenizer
// the caller uses, or 0 to accept any. Returns 0, or -1 with "path: reason" in err.
int shard_open(Shard *s, const char *path, uint64_t fingerprint, char *err);
void shard_close(Shard *s);

static inline uint32_t shard_token(const Shard *s, uint64_t i) {
    return s->h.token_bytes == 2 ? ((const uint16_t *)s->tokens)[i] : ((const uint32_t *)s->tokens)[i];
}

// ---- writing --------------------------------------------------------------------------

// Sections are produced in one pass but laid out one after the other, so the writer stages
// each in an unlinked scratch file next to the output (nothing is left behind even if the
// process is killed) and joins them into `tmp_path` at shard_writer_finish. The shard
// appears under its real name only at shard_writer_commit (rename), so no reader ever sees
// a half-written shard; a caller that catches signals unlinks tmp_path.
typedef struct {
    char *path, *tmp_path;
    ShardHeader h;
    FILE *stage[SHARD_SECTIONS];
    uint32_t crc[SHARD_SECTIONS];
    uint8_t *buf;  // conversion of ids to the token width
    size_t buf_cap;
} ShardWriter;

// Starts a shard. The caller fills vocab_size, fingerprint, chat_format, weight and source
// in meta; the rest is computed. Returns 0 or -1 with err.
int shard_writer_open(ShardWriter *w, const char *path, const ShardHeader *meta, char *err);
// Appends one conversation: ids[0..n) with mask[0..n) (0 or 1), n >= 1, ids < vocab_size.
int shard_writer_add(ShardWriter *w, const int32_t *ids, const uint8_t *mask, size_t n, char *err);
// Writes the complete shard to tmp_path (fsynced). Returns 0 or -1 with err.
int shard_writer_finish(ShardWriter *w, char *err);
// Renames tmp_path to path. Returns 0 or -1 with err.
int shard_writer_commit(ShardWriter *w, char *err);
// Frees the writer and removes tmp_path if it is still there (after commit: nothing to do).
void shard_writer_close(ShardWriter *w);

#endif
