/*
 * bpe.h: the engine both byte-level BPE tokenizers share: Tekken (tekken.c, tiktoken's
 * rules) and GPT-2-style byte-level BPE (bytelevel.c, Hugging Face's and llama.cpp's rules).
 * The two differ only in their vocabulary files and in what may join, so each passes the
 * engine a join function; the splitting and the merge loop are this one code.
 *
 * 1. Pre-splitting (BpeSplitter): the text is cut into pieces by a regex, every match left to
 *    right (PCRE2 in UTF + UCP mode, JIT when available). The patterns come from Rust's regex
 *    crate (tiktoken) and Oniguruma (Hugging Face tokenizers), where `\s` is exactly Unicode's
 *    White_Space; PCRE2's `\s` also matches U+180E, so `\s`/`\S` are rewritten into explicit
 *    White_Space classes first (Rust/Oniguruma syntax with no PCRE2 equivalent that would
 *    silently change meaning is refused).
 * 2. Byte-pair merging (BpeMerger) of one piece: start from one part per byte (the byte's
 *    token; a byte with no token is dropped, as Hugging Face's BPE drops a character that is
 *    not in its vocabulary when there is no unknown token), then repeatedly join the adjacent
 *    pair with the lowest join rank, the leftmost on ties, until no adjacent pair joins.
 *    join(left, right) gives the rank and the joined token: for Tekken the rank of the joined
 *    bytes as a token (tiktoken), for GPT-2 BPE the rank of the merge rule "left right"
 *    (the merges list). Short pieces use tiktoken's O(n^2) scan, long ones a heap with the
 *    same choice order (a megabyte of spaces is one piece); results are cached by piece.
 *
 * A BpeSplitter or BpeMerger holds match state and a cache: one thread at a time.
 */
#ifndef PERSONA_BPE_H
#define PERSONA_BPE_H

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "../common/strmap.h"
#include "tokenizer.h"

#define BPE_NONE UINT32_MAX  // "no token" / "these two parts do not join"
#define BPE_MERGE_SMALL_MAX 128

typedef struct {
    pcre2_code *re;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    int jit;
} BpeSplitter;

// Compiles a pattern (Rust/Oniguruma syntax, see above). field names it in messages
// ("config.pattern"). Returns 0, or -1 with "path: field ..." in err.
int bpe_splitter_compile(BpeSplitter *s, const char *pattern, const char *path, const char *field, char *err);
void bpe_splitter_free(BpeSplitter *s);
// The next match in text[0..n) at or after pos: 1 with [*ms, *me), or 0 when none.
int bpe_splitter_next(BpeSplitter *s, const char *text, size_t n, size_t pos, size_t *ms, size_t *me);

// The join rank of the part text[a..b) (token left) with the part text[b..c) (token right),
// and the joined token in *joined; BPE_NONE when they do not join.
typedef uint32_t (*BpeJoinFn)(const void *ctx, const char *text, size_t a, size_t b, size_t c, uint32_t left,
                              uint32_t right, uint32_t *joined);

typedef struct {
    int start;        // offset of its first byte in the piece
    uint32_t token;   // its token
    uint32_t rank;    // join rank with the next part, BPE_NONE if they do not join
    uint32_t joined;  // the token they join into
} BpePart;

typedef struct {
    BpeJoinFn join;
    const void *ctx;
    uint32_t byte_token[256];  // each byte's token, BPE_NONE for none (the byte is dropped)
    int32_t id_offset;         // output id = token + id_offset
    // cache: piece bytes -> index i into cache_ids, where cache_ids[i] is the number of ids
    StrMap cache;
    int32_t *cache_ids;
    size_t cache_len, cache_cap;
    BpePart parts[BPE_MERGE_SMALL_MAX + 1];  // scratch of the short-piece merge
} BpeMerger;

// byte_token and join must be filled/set by the caller after init.
void bpe_merger_init(BpeMerger *m, BpeJoinFn join, const void *ctx, int32_t id_offset);
void bpe_merger_free(BpeMerger *m);
// Appends the ids of one piece (1 or more bytes): from the cache, or merged and cached.
void bpe_merge(BpeMerger *m, const char *p, size_t n, TokenVec *out);
// The same merge without the cache (for a join function whose answers change between calls).
void bpe_merge_uncached(BpeMerger *m, const char *p, size_t n, TokenVec *out);

#endif
