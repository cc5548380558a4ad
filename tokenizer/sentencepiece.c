/*
 * sentencepiece.c: SentencePiece BPE, token-exact with google/sentencepiece.
 *
 * The model file
 * --------------
 * `tokenizer.model` is a protobuf `ModelProto` (sentencepiece_model.proto, proto2). We read
 * the wire format directly: a message is a sequence of (tag = field << 3 | wire type, value)
 * with wire types 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32. What we use:
 *   ModelProto      1 pieces (repeated SentencePiece)  2 trainer_spec  3 normalizer_spec
 *   SentencePiece   1 piece (string)  2 score (float)  3 type (NORMAL=1 UNKNOWN=2 CONTROL=3
 *                   USER_DEFINED=4 UNUSED=5 BYTE=6; absent = NORMAL)
 *   TrainerSpec     3 model_type (BPE=2)  24 treat_whitespace_as_suffix  35 byte_fallback
 *                   40 unk_id 41 bos_id 42 eos_id 43 pad_id  44 unk_surface
 *   NormalizerSpec  1 name  2 precompiled_charsmap  3 add_dummy_prefix (default true)
 *                   4 remove_extra_whitespaces (default true)  5 escape_whitespaces (true)
 * Every other field is skipped by its wire type. Absent fields take their proto defaults.
 * We implement the identity normaliser that all of Mistral's models use (no charsmap, no
 * whitespace collapsing); a model that needs more is refused with a precise message
 * rather than encoded differently.
 *
 * Encoding (what SentencePiece does for a BPE model with these settings)
 * ---------------------------------------------------------------------
 * 1. Normalise: empty text stays empty. Otherwise emit "▁" (U+2581, the dummy prefix),
 *    then for each input character: a user-defined piece matching here (longest first) is
 *    copied as is; a malformed UTF-8 byte becomes U+FFFD (one byte consumed); ' ' becomes
 *    "▁"; anything else is copied (tabs and newlines too).
 * 2. Split the normalised text into characters; a user-defined piece is one frozen symbol.
 * 3. Repeatedly merge the adjacent pair whose concatenation is a NORMAL/USER_DEFINED piece
 *    with the highest score; ties go to the leftmost pair. Control, unknown and byte
 *    pieces are never formed from text.
 * 4. Each final symbol is its piece id; a symbol that is not a piece becomes one <0xXX>
 *    byte piece per UTF-8 byte when byte_fallback is on (else <unk>, consecutive unknowns
 *    merged into one).
 *
 * Speed without changing the result
 * ---------------------------------
 * BPE runs on the whole normalised string, so in general a merge could join any two
 * neighbours. But if no piece contains a non-"▁" character followed by "▁" (true of every
 * Mistral model; checked at load time), no merge can ever cross the point just before a
 * "▁" that follows a non-"▁" character. The text then splits at those points into words
 * ("▁the", "▁▁▁if", "\n\n▁Holmes") whose merges are independent of each other, and whose
 * order of merging within a word is the same as in the global agenda (score, then
 * position). So each distinct word is encoded once and its ids are cached.
 */
#include "sentencepiece.h"

#include <stdlib.h>
#include <string.h>

#include "../common/strmap.h"
#include "utf8.h"

#define SPACE_SYMBOL "\xE2\x96\x81"  // U+2581 "▁"
#define SPACE_LEN 3
#define WORD_CACHE_MAX_BYTES 256      // longer words are rare and not worth caching
#define WORD_CACHE_MAX_IDS (1u << 22) // bound on cached ids before the cache is reset

typedef struct {
    float score;
    int32_t left, right;
    uint32_t size;  // byte length of the merged piece, to recognise stale entries
} MergeCandidate;

struct SentencePiece {
    int n_pieces, cap_pieces;
    char **piece;       // NUL-terminated piece strings
    uint32_t *piece_len;
    float *score;
    uint8_t *type;
    StrMap pieces;      // NORMAL, USER_DEFINED and UNUSED pieces: what text can become
    StrMap reserved;    // CONTROL, UNKNOWN and BYTE pieces: looked up first by string
    int32_t byte_id[256];
    int16_t *byte_of;   // byte value of a BYTE piece, -1 for other pieces
    int32_t unk_id, bos_id, eos_id, pad_id;
    int byte_fallback, add_dummy_prefix, escape_whitespaces;
    char *unk_surface;
    // user-defined pieces, matched by longest prefix during normalisation and splitting
    int n_user;
    int32_t *user_ids;
    uint8_t user_first_byte[256];
    int words_independent;  // the property described at the top holds
    // scratch reused across calls (hence one SentencePiece per thread)
    ByteBuf norm;
    int32_t *sym_start, *sym_len, *sym_prev, *sym_next;
    uint8_t *sym_frozen;
    size_t sym_cap;
    MergeCandidate *heap;
    size_t heap_len, heap_cap;
    // word cache: word bytes -> (offset, count) in cache_ids
    StrMap cache;
    int32_t *cache_ids;
    size_t cache_len, cache_cap;
    uint32_t *cache_off, *cache_cnt;
    size_t cache_entries, cache_entries_cap;
};

// ---------------------------------------------------------------------------------------
// protobuf wire format

typedef struct {
    const uint8_t *buf;  // the whole file, so offsets in messages are file offsets
    size_t pos, end;
    const char *path;
} Pb;

static int pb_varint(Pb *r, uint64_t *v, char *err) {
    uint64_t x = 0;
    size_t start = r->pos;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->pos >= r->end)
            return set_error(err, "%s: offset %zu: truncated varint", r->path, start);
        uint8_t b = r->buf[r->pos++];
        x |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return set_error(err, "%s: offset %zu: varint longer than 10 bytes", r->path, start);
}

// Reads one field header; *sub receives the extent of a length-delimited value.
static int pb_field(Pb *r, uint32_t *field, int *wire, Pb *sub, char *err) {
    size_t at = r->pos;
    uint64_t tag = 0;
    if (pb_varint(r, &tag, err)) return -1;
    *field = (uint32_t)(tag >> 3);
    *wire = (int)(tag & 7);
    if (*field == 0) return set_error(err, "%s: offset %zu: field number 0", r->path, at);
    *sub = *r;
    switch (*wire) {
    case 0: {
        uint64_t v = 0;
        size_t p = r->pos;
        if (pb_varint(r, &v, err)) return -1;
        sub->pos = p;
        sub->end = r->pos;
        return 0;
    }
    case 1:
    case 5: {
        size_t n = *wire == 1 ? 8 : 4;
        if (r->end - r->pos < n)
            return set_error(err, "%s: offset %zu: truncated fixed%zu field %u", r->path, at,
                             n * 8, *field);
        sub->pos = r->pos;
        sub->end = r->pos + n;
        r->pos += n;
        return 0;
    }
    case 2: {
        uint64_t n = 0;
        if (pb_varint(r, &n, err)) return -1;
        if (n > r->end - r->pos)
            return set_error(err, "%s: offset %zu: field %u claims %llu bytes, %zu remain",
                             r->path, at, *field, (unsigned long long)n, r->end - r->pos);
        sub->pos = r->pos;
        sub->end = r->pos + n;
        r->pos += n;
        return 0;
    }
    default:
        return set_error(err, "%s: offset %zu: unsupported wire type %d (field %u)", r->path,
                         at, *wire, *field);
    }
}

static int pb_expect(Pb *sub, int wire, int want, const char *what, char *err) {
    if (wire == want) return 0;
    return set_error(err, "%s: offset %zu: %s has wire type %d, expected %d", sub->path,
                     sub->pos, what, wire, want);
}

static int pb_int(Pb *sub, int wire, const char *what, int64_t *v, char *err) {
    if (pb_expect(sub, wire, 0, what, err)) return -1;
    uint64_t u = 0;
    if (pb_varint(sub, &u, err)) return -1;
    *v = (int64_t)u;  // int32 fields store negatives as 10-byte two's complement varints
    return 0;
}

static int pb_float(Pb *sub, int wire, const char *what, float *v, char *err) {
    if (pb_expect(sub, wire, 5, what, err)) return -1;
    uint32_t u = (uint32_t)sub->buf[sub->pos] | (uint32_t)sub->buf[sub->pos + 1] << 8 |
                 (uint32_t)sub->buf[sub->pos + 2] << 16 | (uint32_t)sub->buf[sub->pos + 3] << 24;
    memcpy(v, &u, 4);
    return 0;
}

static int pb_string(Pb *sub, int wire, const char *what, char **s, char *err) {
    if (pb_expect(sub, wire, 2, what, err)) return -1;
    size_t n = sub->end - sub->pos;
    free(*s);
    *s = xmalloc(n + 1);
    memcpy(*s, sub->buf + sub->pos, n);
    (*s)[n] = '\0';
    if (strlen(*s) != n)
        return set_error(err, "%s: offset %zu: %s contains a NUL byte", sub->path, sub->pos, what);
    return 0;
}

// ---------------------------------------------------------------------------------------
// loading

typedef struct {
    int64_t model_type, unk_id, bos_id, eos_id, pad_id, byte_fallback, whitespace_suffix;
    int64_t add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    size_t charsmap_len;
    char *normalizer_name;
} SpmSettings;

static int parse_piece(SentencePiece *m, Pb *msg, char *err) {
    int i = m->n_pieces;
    if (i == m->cap_pieces) {
        m->cap_pieces = m->cap_pieces ? m->cap_pieces * 2 : 1024;
        m->piece = xrealloc(m->piece, (size_t)m->cap_pieces * sizeof(char *));
        m->score = xrealloc(m->score, (size_t)m->cap_pieces * sizeof(float));
        m->type = xrealloc(m->type, (size_t)m->cap_pieces);
    }
    m->piece[i] = NULL;
    m->score[i] = 0.0f;
    m->type[i] = SPM_NORMAL;
    m->n_pieces++;
    size_t start = msg->pos;
    while (msg->pos < msg->end) {
        uint32_t f;
        int w;
        Pb sub;
        if (pb_field(msg, &f, &w, &sub, err)) return -1;
        int64_t v;
        if (f == 1 && pb_string(&sub, w, "piece", &m->piece[i], err)) return -1;
        if (f == 2 && pb_float(&sub, w, "score", &m->score[i], err)) return -1;
        if (f == 3) {
            if (pb_int(&sub, w, "type", &v, err)) return -1;
            if (v < SPM_NORMAL || v > SPM_BYTE)
                return set_error(err, "%s: offset %zu: piece %d has unknown type %lld", msg->path,
                                 start, i, (long long)v);
            m->type[i] = (uint8_t)v;
        }
    }
    if (!m->piece[i] || !m->piece[i][0])
        return set_error(err, "%s: offset %zu: piece %d has no text", msg->path, start, i);
    return 0;
}

static int parse_trainer_spec(SpmSettings *s, Pb *msg, char *err) {
    while (msg->pos < msg->end) {
        uint32_t f;
        int w;
        Pb sub;
        if (pb_field(msg, &f, &w, &sub, err)) return -1;
        int64_t *dst = f == 3    ? &s->model_type
                       : f == 24 ? &s->whitespace_suffix
                       : f == 35 ? &s->byte_fallback
                       : f == 40 ? &s->unk_id
                       : f == 41 ? &s->bos_id
                       : f == 42 ? &s->eos_id
                       : f == 43 ? &s->pad_id
                                 : NULL;
        if (dst && pb_int(&sub, w, "trainer_spec field", dst, err)) return -1;
    }
    return 0;
}

static int parse_normalizer_spec(SpmSettings *s, Pb *msg, char *err) {
    while (msg->pos < msg->end) {
        uint32_t f;
        int w;
        Pb sub;
        if (pb_field(msg, &f, &w, &sub, err)) return -1;
        if (f == 1 && pb_string(&sub, w, "normalizer name", &s->normalizer_name, err)) return -1;
        if (f == 2) {
            if (pb_expect(&sub, w, 2, "precompiled_charsmap", err)) return -1;
            s->charsmap_len = sub.end - sub.pos;
        }
        int64_t *dst = f == 3   ? &s->add_dummy_prefix
                       : f == 4 ? &s->remove_extra_whitespaces
                       : f == 5 ? &s->escape_whitespaces
                                : NULL;
        if (dst && pb_int(&sub, w, "normalizer_spec field", dst, err)) return -1;
    }
    return 0;
}

static int parse_model(SentencePiece *m, SpmSettings *s, Pb *r, char *err) {
    while (r->pos < r->end) {
        uint32_t f;
        int w;
        Pb sub;
        if (pb_field(r, &f, &w, &sub, err)) return -1;
        if (f >= 1 && f <= 3 && pb_expect(&sub, w, 2, "ModelProto field", err)) return -1;
        if (f == 1 && parse_piece(m, &sub, err)) return -1;
        if (f == 2 && parse_trainer_spec(s, &sub, err)) return -1;
        if (f == 3 && parse_normalizer_spec(s, &sub, err)) return -1;
    }
    return 0;
}

// "<0x0A>" -> 10, or -1 if the piece is not of that form.
static int byte_piece_value(const char *p) {
    if (strlen(p) != 6 || strncmp(p, "<0x", 3) != 0 || p[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

// The load-time check that lets encoding work word by word (see the top of the file).
static int pieces_never_cross_words(const SentencePiece *m) {
    for (int i = 0; i < m->n_pieces; i++) {
        if (m->type[i] != SPM_NORMAL && m->type[i] != SPM_USER_DEFINED) continue;
        const char *p = m->piece[i];
        size_t n = m->piece_len[i];
        int prev_is_space = 1;  // "▁" at the very start is fine
        for (size_t j = 0; j < n; j++) {
            int is_space = j + SPACE_LEN <= n && memcmp(p + j, SPACE_SYMBOL, SPACE_LEN) == 0;
            if (is_space && !prev_is_space) return 0;
            if (is_space) j += SPACE_LEN - 1;
            prev_is_space = is_space;
        }
    }
    return 1;
}

static int spm_index(SentencePiece *m, const SpmSettings *s, const char *path, char *err) {
    if (m->n_pieces == 0) return set_error(err, "%s: no pieces (not a SentencePiece model?)", path);
    if (s->model_type != 2)
        return set_error(err, "%s: model_type %lld is not BPE (2); only BPE models are supported",
                         path, (long long)s->model_type);
    if (s->charsmap_len || s->remove_extra_whitespaces)
        return set_error(err,
                         "%s: normalizer '%s' (charsmap %zu bytes, remove_extra_whitespaces %lld) "
                         "is not supported; only the identity normaliser Mistral uses is",
                         path, s->normalizer_name ? s->normalizer_name : "nmt_nfkc",
                         s->charsmap_len, (long long)s->remove_extra_whitespaces);
    if (s->whitespace_suffix)
        return set_error(err, "%s: treat_whitespace_as_suffix is not supported", path);
    m->byte_fallback = s->byte_fallback != 0;
    m->add_dummy_prefix = s->add_dummy_prefix != 0;
    m->escape_whitespaces = s->escape_whitespaces != 0;
    int64_t ids[4] = {s->unk_id, s->bos_id, s->eos_id, s->pad_id};
    for (int k = 0; k < 4; k++)
        if (ids[k] >= m->n_pieces || ids[k] < -1)
            return set_error(err, "%s: special id %lld outside the %d pieces", path,
                             (long long)ids[k], m->n_pieces);
    m->unk_id = (int32_t)s->unk_id;
    m->bos_id = (int32_t)s->bos_id;
    m->eos_id = (int32_t)s->eos_id;
    m->pad_id = (int32_t)s->pad_id;
    if (m->unk_id < 0 || m->type[m->unk_id] != SPM_UNKNOWN)
        return set_error(err, "%s: unk_id %d is not an UNKNOWN piece", path, m->unk_id);

    m->piece_len = xmalloc((size_t)m->n_pieces * sizeof(uint32_t));
    m->byte_of = xmalloc((size_t)m->n_pieces * sizeof(int16_t));
    m->user_ids = xmalloc((size_t)m->n_pieces * sizeof(int32_t));
    for (int b = 0; b < 256; b++) m->byte_id[b] = -1;
    strmap_init(&m->pieces, (size_t)m->n_pieces);
    strmap_init(&m->reserved, 1024);
    for (int i = 0; i < m->n_pieces; i++) {
        const char *p = m->piece[i];
        size_t n = strlen(p);
        m->piece_len[i] = (uint32_t)n;
        m->byte_of[i] = -1;
        if (!utf8_valid(p, n)) return set_error(err, "%s: piece %d is not valid UTF-8", path, i);
        int t = m->type[i];
        if (t == SPM_UNUSED)
            return set_error(err, "%s: piece %d '%s' is UNUSED; resegmentation of unused pieces "
                                  "is not supported", path, i, p);
        int reserved = t == SPM_CONTROL || t == SPM_UNKNOWN || t == SPM_BYTE;
        if (strmap_put(reserved ? &m->reserved : &m->pieces, p, n, i) ||
            strmap_get(reserved ? &m->pieces : &m->reserved, p, n) >= 0)
            return set_error(err, "%s: piece %d '%s' appears twice", path, i, p);
        if (t == SPM_BYTE) {
            int v = byte_piece_value(p);
            if (v < 0) return set_error(err, "%s: BYTE piece %d '%s' is not <0xXX>", path, i, p);
            m->byte_id[v] = i;
            m->byte_of[i] = (int16_t)v;
        }
        if (t == SPM_USER_DEFINED) {
            m->user_ids[m->n_user++] = i;
            m->user_first_byte[(uint8_t)p[0]] = 1;
        }
    }
    if (m->byte_fallback)
        for (int b = 0; b < 256; b++)
            if (m->byte_id[b] < 0)
                return set_error(err, "%s: byte_fallback is on but piece <0x%02X> is missing", path, b);
    m->words_independent = pieces_never_cross_words(m);
    strmap_init(&m->cache, 1 << 14);
    return 0;
}

SentencePiece *spm_load(const char *path, const char *data, size_t len, char *err) {
    SentencePiece *m = xcalloc(1, sizeof(SentencePiece));
    SpmSettings s = {.model_type = 1, .unk_id = 0, .bos_id = 1, .eos_id = 2, .pad_id = -1,
                     .add_dummy_prefix = 1, .remove_extra_whitespaces = 1,
                     .escape_whitespaces = 1};
    Pb r = {(const uint8_t *)data, 0, len, path};
    m->unk_surface = xstrdup(" \xE2\x81\x87 ");  // TrainerSpec.unk_surface default " ⁇ "
    int rc = parse_model(m, &s, &r, err);
    if (rc == 0) rc = spm_index(m, &s, path, err);
    free(s.normalizer_name);
    if (rc) {
        spm_free(m);
        return NULL;
    }
    return m;
}

void spm_free(SentencePiece *m) {
    if (!m) return;
    for (int i = 0; i < m->n_pieces; i++) free(m->piece[i]);
    free(m->piece);
    free(m->piece_len);
    free(m->score);
    free(m->type);
    free(m->byte_of);
    free(m->user_ids);
    free(m->unk_surface);
    strmap_free(&m->pieces);
    strmap_free(&m->reserved);
    strmap_free(&m->cache);
    bytebuf_free(&m->norm);
    free(m->sym_start);
    free(m->sym_len);
    free(m->sym_prev);
    free(m->sym_next);
    free(m->sym_frozen);
    free(m->heap);
    free(m->cache_ids);
    free(m->cache_off);
    free(m->cache_cnt);
    free(m);
}

// ---------------------------------------------------------------------------------------
// encoding

// Length of the longest user-defined piece that starts at s[0..n), or 0.
static size_t match_user_defined(const SentencePiece *m, const char *s, size_t n) {
    if (!m->n_user || !m->user_first_byte[(uint8_t)s[0]]) return 0;
    size_t best = 0;
    for (int k = 0; k < m->n_user; k++) {
        size_t len = m->piece_len[m->user_ids[k]];
        if (len > best && len <= n && memcmp(s, m->piece[m->user_ids[k]], len) == 0) best = len;
    }
    return best;
}

static void normalize(SentencePiece *m, const char *text, size_t len) {
    ByteBuf *out = &m->norm;
    out->len = 0;
    if (len == 0) return;
    if (m->add_dummy_prefix) bytebuf_append(out, SPACE_SYMBOL, SPACE_LEN);
    const unsigned char *p = (const unsigned char *)text;
    size_t run = 0;  // start of a stretch copied verbatim
    for (size_t i = 0; i < len;) {
        size_t user = match_user_defined(m, text + i, len - i);
        if (user) { i += user; continue; }
        if (p[i] == ' ' && m->escape_whitespaces) {
            bytebuf_append(out, text + run, i - run);
            bytebuf_append(out, SPACE_SYMBOL, SPACE_LEN);
            run = ++i;
            continue;
        }
        if (p[i] < 0x80) { i++; continue; }
        size_t n = utf8_char_len(p + i, len - i, NULL);
        if (n) { i += n; continue; }
        bytebuf_append(out, text + run, i - run);
        bytebuf_append(out, UTF8_REPLACEMENT, 3);  // SentencePiece: one U+FFFD per bad byte
        run = ++i;
    }
    bytebuf_append(out, text + run, len - run);
}

// Max-heap on (score, then smaller left index).
static int candidate_before(const MergeCandidate *a, const MergeCandidate *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(SentencePiece *m, MergeCandidate c) {
    if (m->heap_len == m->heap_cap) {
        m->heap_cap = m->heap_cap ? m->heap_cap * 2 : 256;
        m->heap = xrealloc(m->heap, m->heap_cap * sizeof(MergeCandidate));
    }
    size_t i = m->heap_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!candidate_before(&c, &m->heap[parent])) break;
        m->heap[i] = m->heap[parent];
        i = parent;
    }
    m->heap[i] = c;
}

static MergeCandidate heap_pop(SentencePiece *m) {
    MergeCandidate top = m->heap[0], last = m->heap[--m->heap_len];
    size_t i = 0, n = m->heap_len;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && candidate_before(&m->heap[c + 1], &m->heap[c])) c++;
        if (!candidate_before(&m->heap[c], &last)) break;
        m->heap[i] = m->heap[c];
        i = c;
    }
    m->heap[i] = last;
    return top;
}

static void maybe_add_candidate(SentencePiece *m, const char *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0 || m->sym_frozen[left] || m->sym_frozen[right]) return;
    uint32_t size = (uint32_t)(m->sym_len[left] + m->sym_len[right]);
    int32_t id = strmap_get(&m->pieces, s + m->sym_start[left], size);
    if (id < 0) return;
    heap_push(m, (MergeCandidate){m->score[id], left, right, size});
}

static void ensure_symbols(SentencePiece *m, size_t n) {
    if (n <= m->sym_cap) return;
    size_t cap = m->sym_cap ? m->sym_cap : 256;
    while (cap < n) cap *= 2;
    m->sym_start = xrealloc(m->sym_start, cap * sizeof(int32_t));
    m->sym_len = xrealloc(m->sym_len, cap * sizeof(int32_t));
    m->sym_prev = xrealloc(m->sym_prev, cap * sizeof(int32_t));
    m->sym_next = xrealloc(m->sym_next, cap * sizeof(int32_t));
    m->sym_frozen = xrealloc(m->sym_frozen, cap);
    m->sym_cap = cap;
}

// BPE over one stretch of normalised text s[0..n) (a word, or the whole text).
static void bpe_encode(SentencePiece *m, const char *s, size_t n, TokenVec *out) {
    ensure_symbols(m, n);  // at most one symbol per byte
    int32_t count = 0;
    for (size_t i = 0; i < n; count++) {
        size_t len = match_user_defined(m, s + i, n - i);
        m->sym_frozen[count] = len > 0;
        if (!len) len = utf8_char_len((const unsigned char *)s + i, n - i, NULL);
        if (!len) len = 1;  // cannot happen after normalize(); keeps the loop finite regardless
        m->sym_start[count] = (int32_t)i;
        m->sym_len[count] = (int32_t)len;
        m->sym_prev[count] = count - 1;
        m->sym_next[count] = (size_t)(i + len) < n ? count + 1 : -1;
        i += len;
    }
    m->heap_len = 0;
    for (int32_t i = 1; i < count; i++) maybe_add_candidate(m, s, i - 1, i);
    while (m->heap_len) {
        MergeCandidate c = heap_pop(m);
        int32_t l = c.left, r = c.right;
        if (m->sym_len[l] == 0 || m->sym_len[r] == 0 ||
            (uint32_t)(m->sym_len[l] + m->sym_len[r]) != c.size)
            continue;  // stale: one side was merged into something else meanwhile
        m->sym_len[l] += m->sym_len[r];
        m->sym_len[r] = 0;
        m->sym_next[l] = m->sym_next[r];
        if (m->sym_next[r] >= 0) m->sym_prev[m->sym_next[r]] = l;
        maybe_add_candidate(m, s, m->sym_prev[l], l);
        maybe_add_candidate(m, s, l, m->sym_next[l]);
    }
    int prev_unknown = 0;
    for (int32_t i = 0; count > 0 && i >= 0; i = m->sym_next[i]) {
        const char *p = s + m->sym_start[i];
        size_t len = (size_t)m->sym_len[i];
        int32_t id = strmap_get(&m->pieces, p, len);
        if (id >= 0) {
            tokvec_push(out, id);
            prev_unknown = 0;
        } else if (m->byte_fallback) {
            for (size_t k = 0; k < len; k++) tokvec_push(out, m->byte_id[(uint8_t)p[k]]);
        } else {
            if (!prev_unknown) tokvec_push(out, m->unk_id);
            prev_unknown = 1;
        }
    }
}

static void encode_word_cached(SentencePiece *m, const char *s, size_t n, TokenVec *out) {
    if (n > WORD_CACHE_MAX_BYTES) {
        bpe_encode(m, s, n, out);
        return;
    }
    int32_t e = strmap_get(&m->cache, s, n);
    if (e < 0) {
        if (m->cache_len > WORD_CACHE_MAX_IDS) {  // bound memory on huge, varied inputs
            strmap_free(&m->cache);
            strmap_init(&m->cache, 1 << 14);
            m->cache_len = m->cache_entries = 0;
        }
        size_t before = out->len;
        bpe_encode(m, s, n, out);
        size_t cnt = out->len - before;
        if (m->cache_len + cnt > m->cache_cap) {
            size_t cap = m->cache_cap ? m->cache_cap : 1 << 14;
            while (m->cache_len + cnt > cap) cap *= 2;
            m->cache_ids = xrealloc(m->cache_ids, cap * sizeof(int32_t));
            m->cache_cap = cap;
        }
        if (m->cache_entries == m->cache_entries_cap) {
            m->cache_entries_cap = m->cache_entries_cap ? m->cache_entries_cap * 2 : 1 << 12;
            m->cache_off = xrealloc(m->cache_off, m->cache_entries_cap * sizeof(uint32_t));
            m->cache_cnt = xrealloc(m->cache_cnt, m->cache_entries_cap * sizeof(uint32_t));
        }
        memcpy(m->cache_ids + m->cache_len, out->ids + before, cnt * sizeof(int32_t));
        m->cache_off[m->cache_entries] = (uint32_t)m->cache_len;
        m->cache_cnt[m->cache_entries] = (uint32_t)cnt;
        strmap_put(&m->cache, s, n, (int32_t)m->cache_entries++);
        m->cache_len += cnt;
        return;
    }
    for (uint32_t k = 0; k < m->cache_cnt[e]; k++) tokvec_push(out, m->cache_ids[m->cache_off[e] + k]);
}

void spm_encode(SentencePiece *m, const char *text, size_t len, TokenVec *out) {
    normalize(m, text, len);
    const char *s = m->norm.data;
    size_t n = m->norm.len;
    if (n == 0) return;
    if (!m->words_independent) {
        bpe_encode(m, s, n, out);
        return;
    }
    // Cut before every "▁" that follows a non-"▁" character.
    size_t word = 0;
    int prev_space = 0;
    for (size_t i = 0; i < n;) {
        int space = i + SPACE_LEN <= n && memcmp(s + i, SPACE_SYMBOL, SPACE_LEN) == 0;
        if (space && !prev_space && i > word) {
            encode_word_cached(m, s + word, i - word, out);
            word = i;
        }
        prev_space = space;
        i += space ? SPACE_LEN : 1;
    }
    encode_word_cached(m, s + word, n - word, out);
}

// ---------------------------------------------------------------------------------------
// decoding and lookups

int spm_decode(const SentencePiece *m, const int32_t *ids, size_t n, ByteBuf *out, char *err) {
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= m->n_pieces)
            return set_error(err, "token %zu: id %d outside the vocabulary (0..%d)", i, id,
                             m->n_pieces - 1);
        int t = m->type[id];
        if (t == SPM_CONTROL) continue;  // mistral-common's SpecialTokenPolicy.IGNORE
        if (t == SPM_BYTE) {
            bytebuf_push(out, (char)m->byte_of[id]);
        } else if (t == SPM_UNKNOWN) {
            bytebuf_append(out, m->unk_surface, strlen(m->unk_surface));
        } else {
            const char *p = m->piece[id];
            size_t len = m->piece_len[id], j = 0;
            // the dummy prefix added by encoding is not part of the text
            if (first && m->add_dummy_prefix && len >= SPACE_LEN && memcmp(p, SPACE_SYMBOL, SPACE_LEN) == 0)
                j = SPACE_LEN;
            size_t run = j;
            while (j < len) {
                if (j + SPACE_LEN <= len && memcmp(p + j, SPACE_SYMBOL, SPACE_LEN) == 0) {
                    bytebuf_append(out, p + run, j - run);
                    bytebuf_push(out, ' ');
                    j += SPACE_LEN;
                    run = j;
                } else {
                    j++;
                }
            }
            bytebuf_append(out, p + run, len - run);
        }
        first = 0;
    }
    return 0;
}

int spm_vocab_size(const SentencePiece *m) { return m->n_pieces; }

int32_t spm_piece_id(const SentencePiece *m, const char *piece, size_t len) {
    int32_t id = strmap_get(&m->reserved, piece, len);
    return id >= 0 ? id : strmap_get(&m->pieces, piece, len);
}

int spm_piece_type(const SentencePiece *m, int32_t id) {
    return id >= 0 && id < m->n_pieces ? m->type[id] : 0;
}

size_t spm_piece(const SentencePiece *m, int32_t id, const char **s) {
    if (id < 0 || id >= m->n_pieces) {
        *s = "";
        return 0;
    }
    *s = m->piece[id];
    return m->piece_len[id];
}

int32_t spm_unk_id(const SentencePiece *m) { return m->unk_id; }
int32_t spm_bos_id(const SentencePiece *m) { return m->bos_id; }
int32_t spm_eos_id(const SentencePiece *m) { return m->eos_id; }
int32_t spm_pad_id(const SentencePiece *m) { return m->pad_id; }
float spm_piece_score(const SentencePiece *m, int32_t id) { return m->score[id]; }
int spm_add_dummy_prefix(const SentencePiece *m) { return m->add_dummy_prefix; }
