/*
 * tekken.c: Mistral's Tekken tokenizer, token-exact with mistral-common's `Tekkenizer`
 * (tokens/tokenizers/tekken.py), which wraps tiktoken.
 *
 * The file (tekken.json):
 *   {"config": {"pattern": "<regex>", "default_vocab_size": 131072,
 *               "default_num_special_tokens": 1000, "version": "v3", ...},
 *    "vocab": [{"rank": 0, "token_bytes": "AA==", "token_str": "\u0000"}, ...],
 *    "special_tokens": [{"rank": 0, "token_str": "<unk>", "is_control": true}, ...],
 *    "image": {...}, "audio": {...}}
 * `special_tokens` is optional; `image` and `audio` configure other modalities and are not
 * needed to tokenize text.
 *
 * Loading follows Tekkenizer.from_file and _reload_mergeable_ranks:
 * - vocab_size = default_vocab_size, num_special = default_num_special_tokens; only the
 *   first vocab_size - num_special entries of `vocab` are used ("inner" vocabulary). Entry i
 *   must have rank i, its base64 token_bytes are the token, and the first 256 entries are
 *   the single bytes 0..255 (so every byte string can be encoded). Token bytes are unique.
 * - Special tokens come from `special_tokens`. Files without that list (the v3 Nemo files
 *   mistral-common ships) get mistral-common's built-in DEPRECATED_SPECIAL_TOKENS when the
 *   version is v7 or older, and are refused after v7, exactly as mistral-common does.
 *   Ranks not defined are filled with "<SPECIAL_{rank}>" up to num_special.
 * - Ids: special = its rank; ordinary token of rank r = r + num_special.
 *
 * Encoding is tiktoken's encode_ordinary (src/lib.rs):
 * 1. Split the text with the file's regex: every match, left to right, is one "piece"
 *    (Perl semantics: leftmost-first alternation, backtracking, `(?!\S)` lookahead).
 * 2. A piece whose bytes are a token is that token. Otherwise byte-pair merging: start
 *    from single bytes, repeatedly join the adjacent pair whose joined bytes have the lowest
 *    rank (ties: the leftmost), until no adjacent pair joins into a token.
 * There is no normalization and no dummy prefix, and special-token strings in the text are
 * plain text. The input is bytes but mistral-common takes a Python str, so malformed UTF-8
 * is first replaced as bytes.decode("utf-8", errors="replace") would (utf8.h).
 *
 * The pre-split regex and the merge loop are the engine in bpe.h (shared with the GPT-2-style
 * tokenizer); here the join of two parts is tiktoken's: the rank of their joined bytes as a
 * token. One difference from mistral-common remains: each regex library carries its own
 * Unicode tables, and characters assigned in a Unicode version newer than PCRE2's (Debian's
 * PCRE2 10.42 has Unicode 14; tiktoken 0.14 has 16: e.g. CJK Extensions H and I, Kawi, Garay)
 * are unassigned to PCRE2, which can move the piece boundaries next to them.
 *
 * Speed: whole-piece lookups and the engine's cache of merged pieces make the merge loop
 * rare.
 */
#include "tekken.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../common/strmap.h"
#include "bpe.h"
#include "utf8.h"

#define NO_RANK BPE_NONE  // "these bytes are not a token"
#define MAX_SPECIAL (1 << 20)

struct Tekken {
    int version, vocab_size, num_special, inner;  // inner = vocab_size - num_special ranks
    // Ordinary tokens: rank r is tok_bytes[tok_off[r] .. tok_off[r + 1]).
    char *tok_bytes;
    size_t *tok_off;
    StrMap ranks;  // token bytes -> rank
    // The rank of every two-byte token at [first byte << 8 | second byte], NO_RANK where
    // there is none: the first step of every merge looks up all adjacent byte pairs, and
    // this 256 KiB table answers those without hashing.
    uint32_t *pair_rank;
    // Special tokens: rank r is the NUL-terminated string at spec_str + spec_off[r].
    char *spec_str;
    size_t *spec_off;
    StrMap special;  // special string -> rank
    char *pattern;      // config.pattern
    BpeSplitter split;  // the file's pattern
    BpeMerger merge;    // byte-pair merging by the rank of the joined bytes, and its cache
};

// mistral-common's Tekkenizer.DEPRECATED_SPECIAL_TOKENS, ranks 0..19: the special tokens
// of tekken.json files that predate the `special_tokens` list (Nemo-era, version <= v7).
static const char *const DEPRECATED_SPECIAL_TOKENS[] = {
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
    "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
};
#define NUM_DEPRECATED_SPECIAL \
    (sizeof(DEPRECATED_SPECIAL_TOKENS) / sizeof(DEPRECATED_SPECIAL_TOKENS[0]))

// ---------------------------------------------------------------------------------------
// Loading

// Standard base64 (RFC 4648 §4) with '=' padding, the form the files use. Returns the
// decoded length written to out (room for n / 4 * 3 bytes), or -1 if s is not base64.
static long base64_decode(const char *s, size_t n, unsigned char *out) {
    if (n % 4) return -1;
    long len = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t acc = 0;
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = s[i + k];
            int v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26
                  : c >= '0' && c <= '9' ? c - '0' + 52 : c == '+' ? 62 : c == '/' ? 63 : -1;
            if (c == '=' && i + 4 == n && k >= 2) {  // padding: only the last 1 or 2 chars
                pad++;
                v = 0;
            } else if (v < 0 || pad) {
                return -1;
            }
            acc = acc << 6 | (uint32_t)v;
        }
        out[len++] = (unsigned char)(acc >> 16);
        if (pad < 2) out[len++] = (unsigned char)(acc >> 8);
        if (pad < 1) out[len++] = (unsigned char)acc;
    }
    return len;
}

// obj[key] as an integer in [0, INT32_MAX]. Returns 0, or -1 with "path: where.key ..." in err.
static int get_int(const cJSON *obj, const char *key, const char *path, const char *where,
                   int *v, char *err) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!item) return set_error(err, "%s: %s has no \"%s\"", path, where, key);
    double d = item->valuedouble;
    if (!cJSON_IsNumber(item) || d < 0 || d > INT32_MAX || d != (double)(int32_t)d)
        return set_error(err, "%s: %s.%s is not a non-negative integer", path, where, key);
    *v = (int)d;
    return 0;
}

// obj[key] as a string. Returns it, or NULL with the reason in err.
static const char *get_str(const cJSON *obj, const char *key, const char *path,
                           const char *where, char *err) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!item) {
        set_error(err, "%s: %s has no \"%s\"", path, where, key);
        return NULL;
    }
    if (!cJSON_IsString(item)) {
        set_error(err, "%s: %s.%s is not a string", path, where, key);
        return NULL;
    }
    return item->valuestring;
}

// Fills t->spec_str / spec_off / special from the file's `special_tokens` (NULL when the
// file has none) as Tekkenizer.from_file and __init__ do.
static int load_specials(Tekken *t, const cJSON *list, const char *path, char *err) {
    const char **str = xcalloc((size_t)t->num_special + 1, sizeof(char *));  // by rank
    ByteBuf buf = {0};
    int rc = -1;
    if (!list) {
        if (t->version > 7) {
            set_error(err, "%s: no \"special_tokens\" list, which a version v%d file must have "
                      "(only files up to v7 may rely on the built-in list)", path, t->version);
            goto done;
        }
        // mistral-common's documented fallback for old files: DEPRECATED_SPECIAL_TOKENS.
        for (size_t r = 0; r < NUM_DEPRECATED_SPECIAL && r < (size_t)t->num_special; r++)
            str[r] = DEPRECATED_SPECIAL_TOKENS[r];
    } else {
        if (!cJSON_IsArray(list)) {
            set_error(err, "%s: \"special_tokens\" is not a list", path);
            goto done;
        }
        int count = cJSON_GetArraySize(list), i = 0;
        if (count > t->num_special) {
            set_error(err, "%s: %d special tokens but default_num_special_tokens is %d", path,
                      count, t->num_special);
            goto done;
        }
        // Shipped files list ranks 0..k-1 in order; mistral-common assumes that and fills
        // ranks k.. itself. Taking each entry's own rank is the same for those files and
        // keeps "id = rank" true for any file we accept. is_control is not needed: decode
        // drops every special token, control or not (mistral-common's IGNORE policy).
        for (const cJSON *e = list->child; e; e = e->next, i++) {
            char where[64];
            snprintf(where, sizeof(where), "special_tokens[%d]", i);
            int rank = 0;
            if (!cJSON_IsObject(e)) {
                set_error(err, "%s: %s is not an object", path, where);
                goto done;
            }
            if (get_int(e, "rank", path, where, &rank, err)) goto done;
            const char *s = get_str(e, "token_str", path, where, err);
            if (!s) goto done;
            if (rank >= t->num_special) {
                set_error(err, "%s: %s has rank %d, not below default_num_special_tokens %d",
                          path, where, rank, t->num_special);
                goto done;
            }
            if (str[rank]) {
                set_error(err, "%s: %s: rank %d is defined twice", path, where, rank);
                goto done;
            }
            str[rank] = s;
        }
    }
    t->spec_off = xmalloc(((size_t)t->num_special + 1) * sizeof(size_t));
    strmap_init(&t->special, (size_t)t->num_special);
    for (int r = 0; r < t->num_special; r++) {
        char filler[32];
        const char *s = str[r];
        if (!s) {  // mistral-common's SPECIAL_TOKEN_TEMPLATE
            snprintf(filler, sizeof(filler), "<SPECIAL_%d>", r);
            s = filler;
        }
        t->spec_off[r] = buf.len;
        bytebuf_append(&buf, s, strlen(s) + 1);
        if (strmap_put(&t->special, s, strlen(s), r)) {
            set_error(err, "%s: special token \"%s\" (rank %d) is defined twice", path, s, r);
            goto done;
        }
    }
    t->spec_off[t->num_special] = buf.len;
    rc = 0;
done:
    t->spec_str = buf.data;
    free(str);
    return rc;
}

// Reads `vocab` into tok_bytes / tok_off / ranks as _reload_mergeable_ranks does.
static int load_vocab(Tekken *t, const cJSON *vocab, const char *path, char *err) {
    ByteBuf bytes = {0};
    t->tok_off = xmalloc(((size_t)t->inner + 1) * sizeof(size_t));
    strmap_init(&t->ranks, (size_t)t->inner);
    t->pair_rank = xmalloc(65536 * sizeof(uint32_t));
    for (size_t k = 0; k < 65536; k++) t->pair_rank[k] = NO_RANK;
    unsigned char *tmp = NULL;
    size_t tmp_cap = 0;
    int i = 0, rc = -1;
    for (const cJSON *e = vocab->child; i < t->inner; e = e->next, i++) {
        char where[64];
        snprintf(where, sizeof(where), "vocab[%d]", i);
        int rank = 0;
        if (!cJSON_IsObject(e)) {
            set_error(err, "%s: %s is not an object", path, where);
            goto done;
        }
        if (get_int(e, "rank", path, where, &rank, err)) goto done;
        if (rank != i) {
            set_error(err, "%s: %s has rank %d; ranks must equal their index", path, where, rank);
            goto done;
        }
        const char *b64 = get_str(e, "token_bytes", path, where, err);
        if (!b64) goto done;
        size_t n = strlen(b64);
        if (n / 4 * 3 > tmp_cap) tmp = xrealloc(tmp, tmp_cap = n / 4 * 3 + 64);
        long len = base64_decode(b64, n, tmp);
        if (len < 0) {
            set_error(err, "%s: %s.token_bytes is not valid base64", path, where);
            goto done;
        }
        if (len == 0) {
            set_error(err, "%s: %s.token_bytes is empty", path, where);
            goto done;
        }
        if (i < 256 && (len != 1 || tmp[0] != i)) {
            set_error(err, "%s: %s must be the single byte %d (ranks 0..255 are the bytes)",
                      path, where, i);
            goto done;
        }
        t->tok_off[i] = bytes.len;
        bytebuf_append(&bytes, tmp, (size_t)len);
        if (strmap_put(&t->ranks, tmp, (size_t)len, i)) {
            set_error(err, "%s: %s has the same token bytes as rank %d", path, where,
                      strmap_get(&t->ranks, tmp, (size_t)len));
            goto done;
        }
        if (len == 2) t->pair_rank[tmp[0] << 8 | tmp[1]] = (uint32_t)i;
    }
    t->tok_off[t->inner] = bytes.len;
    rc = 0;
done:
    t->tok_bytes = bytes.data;
    free(tmp);
    return rc;
}

static inline uint32_t rank_of(const Tekken *t, const char *p, size_t n) {
    int32_t r = strmap_get(&t->ranks, p, n);
    return r < 0 ? NO_RANK : (uint32_t)r;
}

// tiktoken's join: two parts join when their bytes together are a token, ranked by that
// token's rank (two single bytes through the pair table, without hashing).
static uint32_t join_bytes(const void *ctx, const char *p, size_t a, size_t b, size_t c, uint32_t left, uint32_t right,
                           uint32_t *joined) {
    (void)b, (void)left, (void)right;
    const Tekken *t = ctx;
    *joined = c - a == 2 ? t->pair_rank[(unsigned char)p[a] << 8 | (unsigned char)p[a + 1]] : rank_of(t, p + a, c - a);
    return *joined;
}

static int load(Tekken *t, const char *path, const cJSON *root, char *err) {
    if (!cJSON_IsObject(root)) return set_error(err, "%s: not a JSON object", path);
    const cJSON *config = cJSON_GetObjectItemCaseSensitive(root, "config");
    if (!config) return set_error(err, "%s: no \"config\" object", path);
    if (!cJSON_IsObject(config)) return set_error(err, "%s: \"config\" is not an object", path);
    const char *version = get_str(config, "version", path, "config", err);
    if (!version) return -1;
    char *end = NULL;
    long v = 0;
    if (version[0] == 'v' && version[1] >= '1' && version[1] <= '9')
        v = strtol(version + 1, &end, 10);
    if (!end || *end || v > 1000)
        return set_error(err, "%s: config.version \"%s\" is not of the form vN", path, version);
    t->version = (int)v;
    if (get_int(config, "default_vocab_size", path, "config", &t->vocab_size, err)) return -1;
    if (get_int(config, "default_num_special_tokens", path, "config", &t->num_special, err))
        return -1;
    // mistral-common sets no bound, but a million fillers is a broken file, not a tokenizer.
    if (t->num_special > MAX_SPECIAL)
        return set_error(err, "%s: default_num_special_tokens %d is more than %d", path,
                         t->num_special, MAX_SPECIAL);
    if (t->vocab_size - t->num_special < 256)
        return set_error(err, "%s: default_vocab_size %d leaves fewer than 256 ordinary tokens "
                         "after %d special tokens", path, t->vocab_size, t->num_special);
    t->inner = t->vocab_size - t->num_special;
    const char *pattern = get_str(config, "pattern", path, "config", err);
    if (!pattern) return -1;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(root, "vocab");
    if (!vocab) return set_error(err, "%s: no \"vocab\" list", path);
    if (!cJSON_IsArray(vocab)) return set_error(err, "%s: \"vocab\" is not a list", path);
    int count = cJSON_GetArraySize(vocab);
    if (count < t->inner)
        return set_error(err, "%s: vocab has %d entries, fewer than default_vocab_size - "
                         "default_num_special_tokens = %d", path, count, t->inner);
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(root, "special_tokens");
    if (cJSON_IsNull(specials)) specials = NULL;  // Python reads null like a missing key
    if (load_specials(t, specials, path, err)) return -1;
    if (load_vocab(t, vocab, path, err)) return -1;
    t->pattern = xstrdup(pattern);
    if (bpe_splitter_compile(&t->split, pattern, path, "config.pattern", err)) return -1;
    bpe_merger_init(&t->merge, join_bytes, t, t->num_special);
    for (int b = 0; b < 256; b++) t->merge.byte_token[b] = (uint32_t)b;  // ranks 0..255 are the bytes
    return 0;
}

Tekken *tekken_load(const char *path, const char *data, size_t len, char *err) {
    if (len == 0) {
        set_error(err, "%s: empty file", path);
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    size_t at = end && end >= data && end <= data + len ? (size_t)(end - data) : 0;
    if (!root) {
        set_error(err, "%s: not valid JSON (parse error near byte %zu)", path, at);
        return NULL;
    }
    // cJSON stops after the value; Python's json.load also refuses anything but
    // whitespace after it.
    while (at < len && data[at] && strchr(" \t\r\n", data[at])) at++;
    if (at < len) {
        cJSON_Delete(root);
        set_error(err, "%s: not valid JSON (extra data at byte %zu)", path, at);
        return NULL;
    }
    Tekken *t = xcalloc(1, sizeof(Tekken));
    int rc = load(t, path, root, err);
    cJSON_Delete(root);
    if (rc) {
        tekken_free(t);
        return NULL;
    }
    return t;
}

void tekken_free(Tekken *t) {
    if (!t) return;
    free(t->tok_bytes);
    free(t->tok_off);
    free(t->pair_rank);
    free(t->spec_str);
    free(t->spec_off);
    free(t->pattern);
    if (t->ranks.slots) strmap_free(&t->ranks);
    if (t->special.slots) strmap_free(&t->special);
    bpe_merger_free(&t->merge);
    bpe_splitter_free(&t->split);
    free(t);
}

// ---------------------------------------------------------------------------------------
// Encoding

// Appends the ids of one regex piece: a whole-token lookup (tiktoken's), then the engine.
static void encode_piece(Tekken *t, const char *p, size_t n, TokenVec *out) {
    if (n == 1) {  // ranks 0..255 are the single bytes (checked at load)
        tokvec_push(out, (int32_t)(unsigned char)p[0] + t->num_special);
        return;
    }
    int32_t r = strmap_get(&t->ranks, p, n);
    if (r >= 0) {
        tokvec_push(out, r + t->num_special);
        return;
    }
    bpe_merge(&t->merge, p, n, out);
}

void tekken_encode(Tekken *t, const char *text, size_t len, TokenVec *out) {
    ByteBuf fixed = {0};
    if (!utf8_valid(text, len)) {  // the copy only when needed: valid text is used in place
        utf8_replace_invalid(text, len, &fixed);
        text = fixed.data;
        len = fixed.len;
    }
    size_t pos = 0, ms, me;
    // Text between matches (none with the shipped patterns) is skipped, as tiktoken does.
    while (pos < len && bpe_splitter_next(&t->split, text, len, pos, &ms, &me)) {
        if (me == ms) {  // an empty match carries no bytes: step over one character
            if (ms >= len) break;
            pos = ms + utf8_char_len((const unsigned char *)text + ms, len - ms, NULL);
            continue;
        }
        encode_piece(t, text + ms, me - ms, out);
        pos = me;
    }
    bytebuf_free(&fixed);
}

// ---------------------------------------------------------------------------------------
// Decoding and queries

int tekken_decode(const Tekken *t, const int32_t *ids, size_t n, ByteBuf *out, char *err) {
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->vocab_size)
            return set_error(err, "token %zu: id %d outside the vocabulary (0..%d)", i, (int)id,
                             t->vocab_size - 1);
        if (id < t->num_special) continue;  // SpecialTokenPolicy.IGNORE
        size_t r = (size_t)(id - t->num_special);
        bytebuf_append(out, t->tok_bytes + t->tok_off[r], t->tok_off[r + 1] - t->tok_off[r]);
    }
    return 0;
}

int32_t tekken_special_id(const Tekken *t, const char *str) {
    return strmap_get(&t->special, str, strlen(str));
}

size_t tekken_piece(const Tekken *t, int32_t id, const char **s) {
    if (id < 0 || id >= t->vocab_size) {
        *s = "";
        return 0;
    }
    if (id < t->num_special) {
        *s = t->spec_str + t->spec_off[id];
        return t->spec_off[id + 1] - t->spec_off[id] - 1;  // without the NUL
    }
    size_t r = (size_t)(id - t->num_special);
    *s = t->tok_bytes + t->tok_off[r];
    return t->tok_off[r + 1] - t->tok_off[r];
}

int tekken_vocab_size(const Tekken *t) { return t->vocab_size; }
int tekken_num_special(const Tekken *t) { return t->num_special; }
int tekken_version(const Tekken *t) { return t->version; }

const char *tekken_pattern(const Tekken *t) { return t->pattern; }

// ---------------------------------------------------------------------------------------
// Merges (for writing the vocabulary as a GPT-2-style BPE, see tekken.h)

typedef struct {
    const Tekken *t;
    uint32_t limit;  // joins into ranks from here on are not allowed
} Below;

static uint32_t join_below(const void *ctx, const char *p, size_t a, size_t b, size_t c, uint32_t left,
                           uint32_t right, uint32_t *joined) {
    const Below *x = ctx;
    uint32_t r = join_bytes(x->t, p, a, b, c, left, right, joined);
    return r < x->limit ? r : NO_RANK;
}

int tekken_merges(const Tekken *t, int32_t *left, int32_t *right) {
    Below below = {t, 0};
    BpeMerger m;
    bpe_merger_init(&m, join_below, &below, 0);
    for (int b = 0; b < 256; b++) m.byte_token[b] = (uint32_t)b;
    TokenVec parts = {0};
    int missing = 0;
    for (int r = 0; r < t->inner; r++) {
        left[r] = right[r] = -1;
        if (r < 256) continue;  // the single bytes
        below.limit = (uint32_t)r;
        parts.len = 0;
        bpe_merge_uncached(&m, t->tok_bytes + t->tok_off[r], t->tok_off[r + 1] - t->tok_off[r], &parts);
        if (parts.len == 2) left[r] = parts.ids[0], right[r] = parts.ids[1];
        else missing++;
    }
    tokvec_free(&parts);
    bpe_merger_free(&m);
    return missing;
}
