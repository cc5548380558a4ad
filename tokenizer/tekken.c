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
 * The regex engine: tiktoken runs the pattern with Rust's fancy_regex, where `\s` is the
 * Unicode White_Space property and \p{..} are general categories. PCRE2 in UTF+UCP mode
 * agrees on \p{..}, but its `\s` also matches U+180E, which is not White_Space, so
 * `\s`/`\S` are rewritten into explicit White_Space classes before compiling
 * (translate_pattern below). One difference remains: each library carries its own Unicode
 * tables, and characters assigned in a Unicode version newer than PCRE2's (Debian's PCRE2
 * 10.42 has Unicode 14; tiktoken 0.14 has 16: e.g. CJK Extensions H and I, Kawi, Garay)
 * are unassigned to PCRE2, which can move the piece boundaries next to them.
 *
 * Speed: whole-piece lookups and a bounded cache of merged pieces make the merge loop
 * rare; the merge itself is tiktoken's simple O(n^2) scan for short pieces and a heap
 * with the same choice order for long ones (a megabyte of spaces is one piece).
 */
#include "tekken.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>

#include "../common/strmap.h"
#include "utf8.h"

#define NO_RANK UINT32_MAX     // "these bytes are not a token"
#define MERGE_SMALL_MAX 128    // pieces up to this many bytes use the O(n^2) scan
#define CACHE_MAX_PIECE 256    // longer pieces are rare and rarely repeat: not cached
#define CACHE_MAX_ENTRIES (1 << 16)
#define CACHE_MAX_IDS (1 << 20)
#define CACHE_MAX_BYTES (1 << 22)
#define MAX_SPECIAL (1 << 20)

// One part of a piece during the short-piece merge.
typedef struct {
    size_t start;   // offset of its first byte in the piece
    uint32_t token; // its rank
    uint32_t join;  // rank of it joined with the next part, NO_RANK if that is no token
} Part;

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
    // The compiled split pattern and the state reused across matches.
    pcre2_code *re;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    int jit;
    // Encode cache: piece bytes -> index i into cache_ids, where cache_ids[i] is the
    // number of ids and the ids follow.
    StrMap cache;
    int32_t *cache_ids;
    size_t cache_len, cache_cap;
    Part parts[MERGE_SMALL_MAX + 1];  // scratch for merge_small

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
                             char *err) {
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
                return set_error(err, "%s: config.pattern: \\S inside a character class "
                                 "(offset %zu) is not supported", path, i);
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
                return set_error(err, "%s: config.pattern: nested character class at offset "
                                 "%zu is not supported", path, i);
            size_t end = (size_t)(e - pat) + 2;  // a POSIX class [:alpha:] means the same
            emit(tr, pat + i, end - i, i);
            i = end;
            continue;
        }
        if (in_class && (c == '&' || c == '-' || c == '~') && i + 1 < n && pat[i + 1] == c)
            return set_error(err, "%s: config.pattern: character class set operation \"%c%c\" "
                             "at offset %zu is not supported", path, c, c, i);
        if (in_class && c == ']') in_class = 0;
        emit(tr, pat + i, 1, i);
        i++;
    }
    return 0;
}

// Compiles the file's pattern into t->re (JIT when PCRE2 has it) with its match state.
static int compile_pattern(Tekken *t, const char *pat, const char *path, char *err) {
    Translation tr = {0};
    size_t n = strlen(pat);
    int rc = translate_pattern(pat, n, &tr, path, err);
    if (rc == 0) {
        int code;
        PCRE2_SIZE off;
        t->re = pcre2_compile((PCRE2_SPTR)(tr.text.data ? tr.text.data : ""), tr.text.len,
                              PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
        if (!t->re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof(msg));
            rc = set_error(err, "%s: config.pattern does not compile: %s at offset %zu", path,
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
    // cost a failed search per character. With the Tekken patterns the work per match is
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
    if (compile_pattern(t, pattern, path, err)) return -1;
    strmap_init(&t->cache, 1024);
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
    if (t->ranks.slots) strmap_free(&t->ranks);
    if (t->special.slots) strmap_free(&t->special);
    if (t->cache.slots) strmap_free(&t->cache);
    free(t->cache_ids);
    pcre2_match_data_free(t->md);
    pcre2_match_context_free(t->mctx);
    pcre2_jit_stack_free(t->jit_stack);
    pcre2_code_free(t->re);
    free(t);
}

// ---------------------------------------------------------------------------------------
// Encoding

static inline uint32_t rank_of(const Tekken *t, const char *p, size_t n) {
    int32_t r = strmap_get(&t->ranks, p, n);
    return r < 0 ? NO_RANK : (uint32_t)r;
}

static inline uint32_t pair_rank_of(const Tekken *t, const char *p) {
    return t->pair_rank[(unsigned char)p[0] << 8 | (unsigned char)p[1]];
}

// tiktoken's _byte_pair_merge for a piece of 2..MERGE_SMALL_MAX bytes. The parts are an
// array (entry m-1, at offset n, closes the last part); each step scans for the lowest
// join rank (the first one wins ties), joins that pair by deleting the right part's entry
// (the joined part's token is the join's rank), and re-ranks the joins of the joined part
// and its left neighbour. O(n) per merge, but n is small and everything stays in cache.
static void merge_small(Tekken *t, const char *p, size_t n, TokenVec *out) {
    Part *part = t->parts;
    for (size_t i = 0; i < n; i++)  // ranks 0..255 are the bytes
        part[i] = (Part){i, (unsigned char)p[i], i + 1 < n ? pair_rank_of(t, p + i) : NO_RANK};
    part[n] = (Part){n, NO_RANK, NO_RANK};
    size_t m = n + 1;
    for (;;) {
        size_t best = 0;
        uint32_t best_rank = NO_RANK;
        for (size_t k = 0; k + 1 < m; k++)
            if (part[k].join < best_rank) best_rank = part[k].join, best = k;
        if (best_rank == NO_RANK) break;
        memmove(part + best + 1, part + best + 2, (m - best - 2) * sizeof(Part));
        m--;
        // Part k joined with part k+1 spans part[k].start .. part[k+2].start.
        size_t at = part[best].start;
        part[best].token = best_rank;
        part[best].join = best + 2 < m ? rank_of(t, p + at, part[best + 2].start - at) : NO_RANK;
        if (best > 0) {
            size_t left = part[best - 1].start;
            part[best - 1].join = rank_of(t, p + left, part[best + 1].start - left);
        }
    }
    for (size_t k = 0; k + 1 < m; k++) tokvec_push(out, (int32_t)part[k].token + t->num_special);
}

// A candidate join: the part starting at byte pos with its right neighbour, of this rank.
typedef struct {
    uint32_t rank;
    size_t pos;
} Pair;

// Heap order = tiktoken's choice order: lowest rank, then leftmost.
static inline int pair_before(Pair a, Pair b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

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

// The same merge for long pieces in O(n log n): parts form a linked list over byte
// offsets (next[i] = start of the part after the one starting at i, token[i] its token)
// and candidate joins sit in a heap. pair[i] is the current join rank of the part at i; a
// heap entry whose rank no longer equals it is stale (a join only ever grows a part, so a
// part's join rank never returns to an old value) and is skipped. Popping the lowest
// (rank, pos) each time makes exactly the choices of the scan in merge_small.
static void merge_large(const Tekken *t, const char *p, size_t n, TokenVec *out) {
    size_t *next = xmalloc((n + 1) * sizeof(size_t)), *prev = xmalloc(n * sizeof(size_t));
    uint32_t *pair = xmalloc(n * sizeof(uint32_t)), *token = xmalloc(n * sizeof(uint32_t));
    Pair *heap = xmalloc(3 * n * sizeof(Pair));  // n - 1 initial entries + 2 per join
    size_t heap_len = 0;
    for (size_t i = 0; i < n; i++) {
        next[i] = i + 1;
        prev[i] = i - 1;  // unused for i = 0
        token[i] = (unsigned char)p[i];
        pair[i] = i + 1 < n ? pair_rank_of(t, p + i) : NO_RANK;
        if (pair[i] != NO_RANK) heap_push(heap, &heap_len, (Pair){pair[i], i});
    }
    next[n] = n;
    while (heap_len) {
        Pair top = heap_pop(heap, &heap_len);
        size_t i = top.pos;
        if (pair[i] != top.rank) continue;
        size_t r = next[i];
        next[i] = next[r];
        if (next[i] < n) prev[next[i]] = i;
        pair[r] = NO_RANK;
        token[i] = top.rank;
        pair[i] = next[i] < n ? rank_of(t, p + i, next[next[i]] - i) : NO_RANK;
        if (pair[i] != NO_RANK) heap_push(heap, &heap_len, (Pair){pair[i], i});
        if (i > 0) {
            size_t l = prev[i];
            pair[l] = rank_of(t, p + l, next[i] - l);
            if (pair[l] != NO_RANK) heap_push(heap, &heap_len, (Pair){pair[l], l});
        }
    }
    for (size_t i = 0; i < n; i = next[i]) tokvec_push(out, (int32_t)token[i] + t->num_special);
    free(next);
    free(prev);
    free(pair);
    free(token);
    free(heap);
}

// Appends the ids of one regex piece: a whole-token lookup, then the cache, then a merge
// whose result is cached.
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
    int cacheable = n <= CACHE_MAX_PIECE;
    if (cacheable) {
        int32_t at = strmap_get(&t->cache, p, n);
        if (at >= 0) {
            const int32_t *ids = t->cache_ids + at;
            for (int32_t k = 1; k <= ids[0]; k++) tokvec_push(out, ids[k]);
            return;
        }
    }
    size_t before = out->len;
    if (n <= MERGE_SMALL_MAX) merge_small(t, p, n, out);
    else merge_large(t, p, n, out);
    if (!cacheable) return;
    size_t count = out->len - before;
    // Bound the cache: start afresh once it is full, so a huge input of distinct words
    // cannot grow memory without limit (the working set refills it quickly).
    if (t->cache.count >= CACHE_MAX_ENTRIES || t->cache_len + count + 1 > CACHE_MAX_IDS ||
        t->cache.arena_len + n > CACHE_MAX_BYTES) {
        strmap_free(&t->cache);
        strmap_init(&t->cache, 1024);
        t->cache_len = 0;
    }
    if (t->cache_len + count + 1 > t->cache_cap) {
        t->cache_cap = t->cache_cap ? t->cache_cap * 2 : 4096;
        if (t->cache_cap < t->cache_len + count + 1) t->cache_cap = t->cache_len + count + 1;
        t->cache_ids = xrealloc(t->cache_ids, t->cache_cap * sizeof(int32_t));
    }
    strmap_put(&t->cache, p, n, (int32_t)t->cache_len);
    t->cache_ids[t->cache_len] = (int32_t)count;
    memcpy(t->cache_ids + t->cache_len + 1, out->ids + before, count * sizeof(int32_t));
    t->cache_len += count + 1;
}

// Finds the next match of the split pattern in s[0..n) at or after pos. Returns 1 with the
// match in [*ms, *me), or 0 when nothing more matches.
static int next_match(Tekken *t, const char *s, size_t n, size_t pos, size_t *ms, size_t *me) {
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

void tekken_encode(Tekken *t, const char *text, size_t len, TokenVec *out) {
    ByteBuf fixed = {0};
    if (!utf8_valid(text, len)) {  // the copy only when needed: valid text is used in place
        utf8_replace_invalid(text, len, &fixed);
        text = fixed.data;
        len = fixed.len;
    }
    size_t pos = 0, ms, me;
    // Text between matches (none with the shipped patterns) is skipped, as tiktoken does.
    while (pos < len && next_match(t, text, len, pos, &ms, &me)) {
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
