// bpe.c: the regex pre-splitter and the byte-pair merge engine (see bpe.h).
#include "bpe.h"

#include <stdlib.h>
#include <string.h>

#include "utf8.h"

#define CACHE_MAX_PIECE 256    // longer pieces are rare and rarely repeat: not cached
#define CACHE_MAX_ENTRIES (1 << 16)
#define CACHE_MAX_IDS (1 << 20)
#define CACHE_MAX_BYTES (1 << 22)

// ---------------------------------------------------------------------------------------
// pre-splitting

// The members of Unicode's White_Space property (PropList.txt), the set Rust's regex
// crate matches with \s, as PCRE2 class members. Written with \x{..} so that a space is
// not dropped if the pattern turns on extended mode.
#define WHITE_SPACE_MEMBERS                                                                 \
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"      \
    "\\x{202F}\\x{205F}\\x{3000}"

// A translated pattern, and for each of its bytes the offset in the file's pattern it came
// from (so PCRE2's compile errors can point into the file's pattern).
typedef struct {
    ByteBuf text;
    size_t *from;
    size_t cap;
} Translation;

static void emit(Translation *tr, const char *s, size_t n, size_t from) {
    while (tr->text.len + n > tr->cap) {
        tr->cap = tr->cap ? tr->cap * 2 : 256;
        tr->from = xrealloc(tr->from, tr->cap * sizeof(size_t));
    }
    for (size_t k = 0; k < n; k++) tr->from[tr->text.len + k] = from;
    bytebuf_append(&tr->text, s, n);
}

// Rewrites a Rust-regex pattern into a PCRE2 pattern with the same meaning: `\s` becomes
// [White_Space] outside a class and its members inside one, `\S` becomes [^White_Space].
// Everything else is copied: the Tekken patterns use only syntax the two engines share.
// Rust syntax with no PCRE2 equivalent that would silently change meaning (nested classes,
// class set operations, \S inside a class) is refused. Returns 0, or -1 with the reason.
static int translate_pattern(const char *pat, size_t n, Translation *tr, const char *path,
                             const char *field, char *err) {
    static const char ws_class[] = "[" WHITE_SPACE_MEMBERS "]";
    static const char non_ws_class[] = "[^" WHITE_SPACE_MEMBERS "]";
    int in_class = 0;
    size_t i = 0;
    while (i < n) {
        char c = pat[i];
        if (c == '\\' && i + 1 < n) {
            char d = pat[i + 1];
            if (d == 's' && in_class) {
                emit(tr, WHITE_SPACE_MEMBERS, strlen(WHITE_SPACE_MEMBERS), i);
            } else if (d == 'S' && in_class) {
                return set_error(err, "%s: %s: \\S inside a character class "
                                 "(offset %zu) is not supported", path, field, i);
            } else if (d == 's' || d == 'S') {
                const char *cls = d == 's' ? ws_class : non_ws_class;
                emit(tr, cls, strlen(cls), i);
            } else if (d == 'Q') {  // \Q...\E quotes: copied whole, nothing inside is syntax
                const char *e = strstr(pat + i + 2, "\\E");
                size_t end = e ? (size_t)(e - pat) + 2 : n;
                emit(tr, pat + i, end - i, i);
                i = end;
                continue;
            } else {  // any other escape (\p{L}, \r, \x{..}, \\, \[ ...) is the same in both
                emit(tr, pat + i, 2, i);
            }
            i += 2;
            continue;
        }
        if (c == '[' && !in_class) {
            // A class opens; a ']' right after '[' or '[^' is a literal in both engines.
            size_t j = i + 1;
            if (j < n && pat[j] == '^') j++;
            if (j < n && pat[j] == ']') j++;
            emit(tr, pat + i, j - i, i);
            in_class = 1;
            i = j;
            continue;
        }
        if (in_class && c == '[') {
            const char *e = i + 1 < n && pat[i + 1] == ':' ? strstr(pat + i, ":]") : NULL;
            if (!e)
                return set_error(err, "%s: %s: nested character class at offset "
                                 "%zu is not supported", path, field, i);
            size_t end = (size_t)(e - pat) + 2;  // a POSIX class [:alpha:] means the same
            emit(tr, pat + i, end - i, i);
            i = end;
            continue;
        }
        if (in_class && (c == '&' || c == '-' || c == '~') && i + 1 < n && pat[i + 1] == c)
            return set_error(err, "%s: %s: character class set operation \"%c%c\" "
                             "at offset %zu is not supported", path, field, c, c, i);
        if (in_class && c == ']') in_class = 0;
        emit(tr, pat + i, 1, i);
        i++;
    }
    return 0;
}

int bpe_splitter_compile(BpeSplitter *t, const char *pat, const char *path, const char *field, char *err) {
    memset(t, 0, sizeof(*t));
    Translation tr = {0};
    size_t n = strlen(pat);
    int rc = translate_pattern(pat, n, &tr, path, field, err);
    if (rc == 0) {
        int code;
        PCRE2_SIZE off;
        t->re = pcre2_compile((PCRE2_SPTR)(tr.text.data ? tr.text.data : ""), tr.text.len,
                              PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
        if (!t->re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof(msg));
            rc = set_error(err, "%s: %s does not compile: %s at offset %zu", path, field,
                           (const char *)msg, off < tr.text.len ? tr.from[off] : n);
        }
    }
    bytebuf_free(&tr.text);
    free(tr.from);
    if (rc) return -1;
    // JIT is several times faster than the interpreter; without it (a PCRE2 built without
    // JIT support, or no executable memory) the interpreter gives the same matches.
    t->jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
    t->md = pcre2_match_data_create_from_pattern(t->re, NULL);
    t->mctx = pcre2_match_context_create(NULL);
    if (!t->md || !t->mctx) return set_error(err, "%s: out of memory for the regex", path);
    // PCRE2's default limit of 10 million backtracking steps is reached by ordinary long
    // runs (20 MB of capital letters: `[\p{Lu}..]*` takes the run, then gives it back one
    // character at a time before the next alternative matches), and failing there would
    // cost a failed search per character. With the shipped patterns the work per match is
    // linear in the run, so no limit is needed short of the 32-bit counters.
    pcre2_set_match_limit(t->mctx, UINT32_MAX);
    pcre2_set_depth_limit(t->mctx, UINT32_MAX);
    if (t->jit) {
        // The default 32 KiB JIT stack is enough for these patterns; a larger one keeps a
        // user pattern with nested groups from failing on long pieces.
        t->jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
        if (t->jit_stack) pcre2_jit_stack_assign(t->mctx, NULL, t->jit_stack);
    }
    return 0;
}

int bpe_splitter_next(BpeSplitter *t, const char *s, size_t n, size_t pos, size_t *ms, size_t *me) {
    int rc = 0;
    if (t->jit) rc = pcre2_jit_match(t->re, (PCRE2_SPTR)s, n, pos, 0, t->md, t->mctx);
    // Without JIT, or if the JIT ran out of stack, the interpreter gives the same answer.
    if (!t->jit || (rc < 0 && rc != PCRE2_ERROR_NOMATCH))
        rc = pcre2_match(t->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, t->md,
                         t->mctx);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        // A resource limit even the interpreter hits (out of memory, or the step counters
        // above overflowing on gigabytes of one run): take the next character as a piece
        // of its own rather than lose text.
        *ms = pos;
        *me = pos + utf8_char_len((const unsigned char *)s + pos, n - pos, NULL);
        return 1;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}


void bpe_splitter_free(BpeSplitter *t) {
    pcre2_match_data_free(t->md);
    pcre2_match_context_free(t->mctx);
    pcre2_jit_stack_free(t->jit_stack);
    pcre2_code_free(t->re);
    memset(t, 0, sizeof(*t));
}

// ---------------------------------------------------------------------------------------
// merging

void bpe_merger_init(BpeMerger *m, BpeJoinFn join, const void *ctx, int32_t id_offset) {
    memset(m, 0, sizeof(*m));
    m->join = join;
    m->ctx = ctx;
    m->id_offset = id_offset;
    for (int b = 0; b < 256; b++) m->byte_token[b] = BPE_NONE;
    strmap_init(&m->cache, 1024);
}

void bpe_merger_free(BpeMerger *m) {
    if (m->cache.slots) strmap_free(&m->cache);
    free(m->cache_ids);
    memset(m, 0, sizeof(*m));
}

// The join of part k with part k+1 (k + 2 < m: part k+2, or the end marker, closes k+1).
static inline void rank_join(const BpeMerger *m, const char *p, BpePart *part, size_t k, size_t count) {
    part[k].rank = k + 2 < count ? m->join(m->ctx, p, (size_t)part[k].start, (size_t)part[k + 1].start,
                                            (size_t)part[k + 2].start, part[k].token, part[k + 1].token,
                                            &part[k].joined)
                                 : BPE_NONE;
}

// tiktoken's _byte_pair_merge for a piece of up to BPE_MERGE_SMALL_MAX bytes. The parts are
// an array (the last entry, at offset n, closes the last part); each step scans for the
// lowest join rank (the first one wins ties), joins that pair by deleting the right part's
// entry, and re-ranks the joins of the joined part and its left neighbour. O(n) per merge,
// but n is small and everything stays in cache.
static void merge_small(BpeMerger *m, const char *p, size_t n, TokenVec *out) {
    BpePart *part = m->parts;
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t tok = m->byte_token[(unsigned char)p[i]];
        if (tok != BPE_NONE) part[count++] = (BpePart){(int)i, tok, BPE_NONE, BPE_NONE};
    }
    part[count++] = (BpePart){(int)n, BPE_NONE, BPE_NONE, BPE_NONE};
    for (size_t k = 0; k + 1 < count; k++) rank_join(m, p, part, k, count);
    for (;;) {
        size_t best = 0;
        uint32_t best_rank = BPE_NONE;
        for (size_t k = 0; k + 1 < count; k++)
            if (part[k].rank < best_rank) best_rank = part[k].rank, best = k;
        if (best_rank == BPE_NONE) break;
        part[best].token = part[best].joined;
        memmove(part + best + 1, part + best + 2, (count - best - 2) * sizeof(BpePart));
        count--;
        rank_join(m, p, part, best, count);
        if (best > 0) rank_join(m, p, part, best - 1, count);
    }
    for (size_t k = 0; k + 1 < count; k++) tokvec_push(out, (int32_t)part[k].token + m->id_offset);
}

// A candidate join: the part starting at byte pos with its right neighbour, of this rank.
typedef struct {
    uint32_t rank;
    size_t pos;
} Pair;

// Heap order = the scan's choice order: lowest rank, then leftmost.
static inline int pair_before(Pair a, Pair b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(Pair *h, size_t *len, Pair x) {
    size_t i = (*len)++;
    for (; i > 0 && pair_before(x, h[(i - 1) / 2]); i = (i - 1) / 2) h[i] = h[(i - 1) / 2];
    h[i] = x;
}

static Pair heap_pop(Pair *h, size_t *len) {
    Pair top = h[0], x = h[--*len];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *len) break;
        if (c + 1 < *len && pair_before(h[c + 1], h[c])) c++;
        if (!pair_before(h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    if (*len) h[i] = x;
    return top;
}

// The same merge for long pieces in O(n log n): parts form a linked list over byte offsets
// (next[i] = start of the part after the one starting at i, token[i] its token) and
// candidate joins sit in a heap. rank[i] is the current join rank of the part at i; a heap
// entry whose rank no longer equals it is stale (a join only ever grows a part, and the
// joins of a grown part rank after the joins that made it, so a part's join rank never
// returns to an old value) and is skipped. Popping the lowest (rank, pos) each time makes
// exactly the choices of the scan in merge_small.
static void merge_large(const BpeMerger *m, const char *p, size_t n, TokenVec *out) {
    size_t *next = xmalloc((n + 1) * sizeof(size_t)), *prev = xmalloc((n + 1) * sizeof(size_t));
    uint32_t *rank = xmalloc(n * sizeof(uint32_t)), *token = xmalloc(n * sizeof(uint32_t)),
             *joined = xmalloc(n * sizeof(uint32_t));
    Pair *heap = xmalloc(3 * n * sizeof(Pair));  // n - 1 initial entries + 2 per join
    size_t heap_len = 0, first = n, last = n;
    for (size_t i = 0; i < n; i++) {  // link the bytes that have a token
        token[i] = m->byte_token[(unsigned char)p[i]];
        rank[i] = BPE_NONE;
        if (token[i] == BPE_NONE) continue;
        if (last < n) next[last] = i;
        else first = i;
        prev[i] = last;
        last = i;
    }
    if (last < n) next[last] = n;
    next[n] = n;
#define JOIN(i) m->join(m->ctx, p, (i), next[i], next[next[i]], token[i], token[next[i]], &joined[i])
    for (size_t i = first; i < n && next[i] < n; i = next[i])
        if ((rank[i] = JOIN(i)) != BPE_NONE) heap_push(heap, &heap_len, (Pair){rank[i], i});
    while (heap_len) {
        Pair top = heap_pop(heap, &heap_len);
        size_t i = top.pos;
        if (rank[i] != top.rank) continue;
        size_t r = next[i];
        next[i] = next[r];
        if (next[i] < n) prev[next[i]] = i;
        rank[r] = BPE_NONE;
        token[i] = joined[i];
        rank[i] = next[i] < n ? JOIN(i) : BPE_NONE;
        if (rank[i] != BPE_NONE) heap_push(heap, &heap_len, (Pair){rank[i], i});
        if (i != first) {
            size_t l = prev[i];
            if ((rank[l] = JOIN(l)) != BPE_NONE) heap_push(heap, &heap_len, (Pair){rank[l], l});
        }
    }
#undef JOIN
    for (size_t i = first; i < n; i = next[i]) tokvec_push(out, (int32_t)token[i] + m->id_offset);
    free(next), free(prev), free(rank), free(token), free(joined), free(heap);
}

void bpe_merge_uncached(BpeMerger *m, const char *p, size_t n, TokenVec *out) {
    if (n <= BPE_MERGE_SMALL_MAX) merge_small(m, p, n, out);
    else merge_large(m, p, n, out);
}

void bpe_merge(BpeMerger *m, const char *p, size_t n, TokenVec *out) {
    int cacheable = n <= CACHE_MAX_PIECE;
    if (cacheable) {
        int32_t at = strmap_get(&m->cache, p, n);
        if (at >= 0) {
            const int32_t *ids = m->cache_ids + at;
            for (int32_t k = 1; k <= ids[0]; k++) tokvec_push(out, ids[k]);
            return;
        }
    }
    size_t before = out->len;
    bpe_merge_uncached(m, p, n, out);
    if (!cacheable) return;
    size_t count = out->len - before;
    // Bound the cache: start afresh once it is full, so a huge input of distinct words
    // cannot grow memory without limit (the working set refills it quickly).
    if (m->cache.count >= CACHE_MAX_ENTRIES || m->cache_len + count + 1 > CACHE_MAX_IDS ||
        m->cache.arena_len + n > CACHE_MAX_BYTES) {
        strmap_free(&m->cache);
        strmap_init(&m->cache, 1024);
        m->cache_len = 0;
    }
    if (m->cache_len + count + 1 > m->cache_cap) {
        m->cache_cap = m->cache_cap ? m->cache_cap * 2 : 4096;
        if (m->cache_cap < m->cache_len + count + 1) m->cache_cap = m->cache_len + count + 1;
        m->cache_ids = xrealloc(m->cache_ids, m->cache_cap * sizeof(int32_t));
    }
    strmap_put(&m->cache, p, n, (int32_t)m->cache_len);
    m->cache_ids[m->cache_len] = (int32_t)count;
    memcpy(m->cache_ids + m->cache_len + 1, out->ids + before, count * sizeof(int32_t));
    m->cache_len += count + 1;
}
