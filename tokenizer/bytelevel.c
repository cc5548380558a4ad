/*
 * bytelevel.c: GPT-2-style byte-level BPE (see bytelevel.h), as Hugging Face tokenizers'
 * BPE model with a ByteLevel pre-tokenizer and decoder computes it.
 *
 * Vocabulary. Tokens are written in GPT-2's byte-to-unicode spelling: the printable bytes
 * '!'..'~', '¡'..'¬', '®'..'ÿ' stand for themselves, every other byte b for the character
 * U+0100 + (its index among those others), so a space is 'Ġ' and a newline 'Ċ'. Each token is
 * stored here as the bytes it spells. A token that is not in that alphabet (a special token
 * such as "<|im_start|>" is, since it is printable ASCII) stands for its own UTF-8 bytes.
 * Merges are "LEFT RIGHT" (one space) in rank order; LEFT, RIGHT and LEFT+RIGHT must be
 * tokens. Special tokens: GGUF token_type 3 (control) or 2 (unknown), tokenizer.json
 * added_tokens with "special": true; they are never produced from text and decode to nothing.
 * User-defined tokens (type 4, "special": false) are looked up by name but are text otherwise.
 *
 * Pre-tokenization: one or more regex stages, each splitting every piece of the previous
 * stage into its matches and the text between them (Hugging Face's "Isolated" behaviour),
 * each stage seeing only its piece. The stages come from
 *   - GGUF tokenizer.ggml.pre (llama.cpp's names): "smollm" (and the other names llama.cpp
 *     gives the same splits: "starcoder", "refact", "command-r", "codeshell", "exaone",
 *     "minerva") -> \p{N} then the GPT-2 pattern; "gpt-2" -> the GPT-2 pattern; "tekken" ->
 *     Tekken's pattern, with llama.cpp's ignore_merges (a piece that is a token is that token,
 *     as tiktoken looks whole pieces up first);
 *   - tokenizer.json pre_tokenizer: ByteLevel (add_prefix_space false; use_regex -> the GPT-2
 *     pattern), Digits (individual_digits -> \p{N}, else \p{N}+), Split (a Regex or String
 *     pattern, behavior Isolated, not inverted), or a Sequence of those;
 * anything else is refused by name rather than tokenized differently. bytelevel_pre_name
 * gives the llama.cpp name back for the stages a tokenizer.json describes (for writing a GGUF).
 * The GPT-2 pattern:
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * Merging: bpe.h's engine; two parts join when "LEFT RIGHT" is a merge, ranked by its index.
 * A byte with no token (SmolLM2 has none for 21 bytes: most C0 controls, 0xC0, 0xC1, 0xF5..0xFF)
 * is dropped, as Hugging Face's BPE drops a character it cannot spell when the model has no
 * unknown token, so decode(encode(x)) == x only for text without those bytes. With
 * tokenizer.json's "ignore_merges": true a piece that is itself a token is that token.
 */
#include "bytelevel.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/strmap.h"
#include "bpe.h"
#include "utf8.h"

#define MAX_STAGES 4
#define GPT2_PATTERN "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
// Tekken's pattern (tekken.json config.pattern), which llama.cpp calls "tekken"
#define TEKKEN_PATTERN                                                                               \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"                   \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|"                   \
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

// llama.cpp's pre-tokenizer names (llama-vocab.cpp) whose splits we implement: the regex
// stages of each and llama.cpp's ignore_merges. The first name of a set of stages is the one
// bytelevel_pre_name gives.
static const struct {
    const char *name;
    int ignore_merges, n_stages;
    const char *stages[2];
} pre_types[] = {
    {"smollm", 0, 2, {"\\p{N}", GPT2_PATTERN}},     {"starcoder", 0, 2, {"\\p{N}", GPT2_PATTERN}},
    {"refact", 0, 2, {"\\p{N}", GPT2_PATTERN}},     {"command-r", 0, 2, {"\\p{N}", GPT2_PATTERN}},
    {"codeshell", 0, 2, {"\\p{N}", GPT2_PATTERN}},  {"exaone", 0, 2, {"\\p{N}", GPT2_PATTERN}},
    {"minerva", 0, 2, {"\\p{N}", GPT2_PATTERN}},    {"gpt-2", 0, 1, {GPT2_PATTERN}},
    {"tekken", 1, 1, {TEKKEN_PATTERN}},
};
#define N_PRE_TYPES (sizeof(pre_types) / sizeof(pre_types[0]))

enum { TYPE_NORMAL = 1, TYPE_UNKNOWN = 2, TYPE_CONTROL = 3, TYPE_USER = 4 };  // GGUF token_type

struct ByteLevel {
    int vocab_size;
    char *tok_bytes;   // id i spells tok_bytes[tok_off[i] .. tok_off[i + 1])
    size_t *tok_off;
    char *spelled;     // id i as the source wrote it: spelled[spell_off[i] .. spell_off[i + 1])
    size_t *spell_off;
    uint8_t *type;     // GGUF token type of each id
    uint8_t *special;  // 1: a special token (dropped by decode)
    StrMap names;      // special and user-defined token strings -> id
    // merges: (left << 32 | right) -> rank and joined token, open addressing
    uint64_t *mkey;
    uint32_t *mrank, *mjoined;
    size_t mmask;
    int ignore_merges;
    StrMap whole;      // with ignore_merges: token bytes -> id
    BpeSplitter stage[MAX_STAGES];
    int n_stages;
    BpeMerger merge;
    int32_t bos, eos, unk, pad;
    char *system;      // the chat template's default system prompt, or NULL
    size_t system_len;
    const char *pre;   // the llama.cpp pre-tokenizer name of the stages (pre_types), or NULL
};

// One token as the source spells it.
typedef struct {
    const char *s;
    size_t n;
    int type;
} TokenText;

// ---------------------------------------------------------------------------------------
// GPT-2's byte-to-unicode spelling

static int byte_printable(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

// The code point that spells byte b.
static uint32_t byte_to_cp(int b) {
    if (byte_printable(b)) return (uint32_t)b;
    int k = 0;
    for (int x = 0; x < b; x++) k += !byte_printable(x);
    return 256u + (uint32_t)k;
}

// The byte a code point spells, or -1.
static int cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_printable((int)cp) ? (int)cp : -1;
    for (int b = 0, k = 0; b < 256; b++)
        if (!byte_printable(b) && 256u + (uint32_t)k++ == cp) return b;
    return -1;
}

// Decodes one UTF-8 character at s[0..n) into *cp; returns its length (0 if malformed).
static size_t next_cp(const char *s, size_t n, uint32_t *cp) {
    size_t len = utf8_char_len((const unsigned char *)s, n, NULL);
    if (!len) return 0;
    const unsigned char *u = (const unsigned char *)s;
    *cp = len == 1 ? u[0] : len == 2 ? (u[0] & 0x1Fu) << 6 | (u[1] & 0x3F)
        : len == 3 ? (u[0] & 0x0Fu) << 12 | (u[1] & 0x3Fu) << 6 | (u[2] & 0x3F)
                   : (u[0] & 0x07u) << 18 | (u[1] & 0x3Fu) << 12 | (u[2] & 0x3Fu) << 6 | (u[3] & 0x3F);
    return len;
}

void bytelevel_spell(const char *bytes, size_t n, ByteBuf *out) {
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = byte_to_cp((unsigned char)bytes[i]);
        if (cp < 0x80) bytebuf_push(out, (char)cp);
        else bytebuf_push(out, (char)(0xC0 | cp >> 6)), bytebuf_push(out, (char)(0x80 | (cp & 0x3F)));
    }
}

// Appends the bytes a token spells (its own bytes when it is not in the byte alphabet).
static void spell_to_bytes(const char *s, size_t n, ByteBuf *out) {
    size_t start = out->len;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = next_cp(s + i, n - i, &cp);
        int b = len && cp < 512 ? cp_to_byte(cp) : -1;
        if (b < 0) {  // not byte-level text: the token is its own UTF-8
            out->len = start;
            bytebuf_append(out, s, n);
            return;
        }
        bytebuf_push(out, (char)b);
        i += len;
    }
}

// ---------------------------------------------------------------------------------------
// merges

static size_t merge_slot(const ByteLevel *t, uint64_t key) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(h >> 20) & t->mmask;
    while (t->mkey[i] != UINT64_MAX && t->mkey[i] != key) i = (i + 1) & t->mmask;
    return i;
}

static uint32_t join_merge(const void *ctx, const char *p, size_t a, size_t b, size_t c, uint32_t left,
                           uint32_t right, uint32_t *joined) {
    (void)p, (void)a, (void)b, (void)c;
    const ByteLevel *t = ctx;
    size_t i = merge_slot(t, (uint64_t)left << 32 | right);
    if (t->mkey[i] == UINT64_MAX) return BPE_NONE;
    *joined = t->mjoined[i];
    return t->mrank[i];
}

// ---------------------------------------------------------------------------------------
// building from either source

typedef struct {
    const char *path;
    TokenText *tok;      // by id
    int n_tok;
    const char **merge;  // "LEFT RIGHT" strings, or NULL entries with left/right given
    size_t *merge_len;
    const char **left, **right;  // tokenizer.json's [LEFT, RIGHT] pairs (NULL when strings)
    size_t n_merges;
    const char *patterns[MAX_STAGES];
    int n_patterns;
} Source;

static int build(ByteLevel *t, const Source *src, char *err) {
    const char *path = src->path;
    t->vocab_size = src->n_tok;
    t->tok_off = xmalloc(((size_t)src->n_tok + 1) * sizeof(size_t));
    t->spell_off = xmalloc(((size_t)src->n_tok + 1) * sizeof(size_t));
    t->type = xcalloc((size_t)src->n_tok + 1, 1);
    t->special = xcalloc((size_t)src->n_tok + 1, 1);
    StrMap spelled;  // token as spelled in the source -> id
    strmap_init(&spelled, (size_t)src->n_tok);
    strmap_init(&t->names, 64);
    ByteBuf bytes = {0}, spellings = {0};
    int rc = 0;
    for (int i = 0; i < src->n_tok && rc == 0; i++) {
        const TokenText *k = &src->tok[i];
        t->tok_off[i] = bytes.len;
        t->spell_off[i] = spellings.len;
        if (!k->s) {
            rc = set_error(err, "%s: token id %d is not defined (ids must be 0..%d without holes)", path, i,
                           src->n_tok - 1);
            break;
        }
        spell_to_bytes(k->s, k->n, &bytes);
        bytebuf_append(&spellings, k->s, k->n);
        t->type[i] = (uint8_t)k->type;
        if (strmap_put(&spelled, k->s, k->n, i) && k->type == TYPE_NORMAL)
            rc = set_error(err, "%s: token %d \"%.*s\" is defined twice", path, i, (int)(k->n < 40 ? k->n : 40), k->s);
        if (k->type == TYPE_CONTROL || k->type == TYPE_UNKNOWN || k->type == TYPE_USER) {
            t->special[i] = k->type != TYPE_USER;
            strmap_put(&t->names, k->s, k->n, i);
        }
    }
    t->tok_off[src->n_tok] = bytes.len;
    t->tok_bytes = bytes.data;
    t->spell_off[src->n_tok] = spellings.len;
    t->spelled = spellings.data;
    // each byte's token: the one spelling that byte's character
    bpe_merger_init(&t->merge, join_merge, t, 0);
    ByteBuf u = {0};
    for (int b = 0; b < 256 && rc == 0; b++) {
        char byte = (char)b;
        u.len = 0;
        bytelevel_spell(&byte, 1, &u);
        int32_t id = strmap_get(&spelled, u.data, u.len);
        t->merge.byte_token[b] = id >= 0 && !t->special[id] ? (uint32_t)id : BPE_NONE;
    }
    bytebuf_free(&u);
    size_t cap = 16;
    while (cap < 2 * src->n_merges + 16) cap *= 2;
    t->mmask = cap - 1;
    t->mkey = xmalloc(cap * sizeof(uint64_t));
    t->mrank = xmalloc(cap * sizeof(uint32_t));
    t->mjoined = xmalloc(cap * sizeof(uint32_t));
    memset(t->mkey, 0xff, cap * sizeof(uint64_t));
    ByteBuf both = {0};
    for (size_t r = 0; r < src->n_merges && rc == 0; r++) {
        const char *l, *rr;
        size_t ln, rn;
        if (src->merge) {
            const char *s = src->merge[r], *sp = memchr(s, ' ', src->merge_len[r]);
            if (!sp || memchr(sp + 1, ' ', src->merge_len[r] - (size_t)(sp - s) - 1)) {
                rc = set_error(err, "%s: merges[%zu] \"%.*s\" is not two tokens separated by one space", path, r,
                               (int)(src->merge_len[r] < 60 ? src->merge_len[r] : 60), s);
                break;
            }
            l = s, ln = (size_t)(sp - s), rr = sp + 1, rn = src->merge_len[r] - ln - 1;
        } else {
            l = src->left[r], ln = strlen(l), rr = src->right[r], rn = strlen(rr);
        }
        both.len = 0;
        bytebuf_append(&both, l, ln);
        bytebuf_append(&both, rr, rn);
        int32_t a = strmap_get(&spelled, l, ln), b = strmap_get(&spelled, rr, rn),
                j = strmap_get(&spelled, both.data, both.len);
        if (a < 0 || b < 0 || j < 0) {
            rc = set_error(err, "%s: merges[%zu] \"%.*s %.*s\": %s is not a token", path, r, (int)(ln < 40 ? ln : 40), l,
                           (int)(rn < 40 ? rn : 40), rr, a < 0 ? "the left part" : b < 0 ? "the right part" : "the merged pair");
            break;
        }
        uint64_t key = (uint64_t)a << 32 | (uint32_t)b;
        size_t slot = merge_slot(t, key);
        if (t->mkey[slot] == key) {
            rc = set_error(err, "%s: merges[%zu] repeats merges[%u]", path, r, t->mrank[slot]);
            break;
        }
        t->mkey[slot] = key, t->mrank[slot] = (uint32_t)r, t->mjoined[slot] = (uint32_t)j;
    }
    bytebuf_free(&both);
    strmap_free(&spelled);
    if (rc == 0 && t->ignore_merges) {
        strmap_init(&t->whole, (size_t)t->vocab_size);
        for (int i = 0; i < t->vocab_size; i++)
            if (!t->special[i]) strmap_put(&t->whole, t->tok_bytes + t->tok_off[i], t->tok_off[i + 1] - t->tok_off[i], i);
    }
    if (!t->pre) t->pre = bytelevel_pre_name_of(src->patterns, src->n_patterns, t->ignore_merges);
    for (int s = 0; s < src->n_patterns && rc == 0; s++) {
        char field[48];
        snprintf(field, sizeof(field), "pre-tokenizer stage %d", s + 1);
        rc = bpe_splitter_compile(&t->stage[s], src->patterns[s], path, field, err);
        if (rc == 0) t->n_stages++;
    }
    return rc;
}

// The first occurrence of needle[0..m) in s[0..n), or NULL.
static const char *find(const char *s, size_t n, const char *needle, size_t m) {
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (!memcmp(s + i, needle, m)) return s + i;
    return NULL;
}

// A chat template's default system prompt: the literal text between "<|im_start|>system"
// plus a newline and "<|im_end|>" inside a quoted string (ChatML templates write it so when
// the conversation has no system message).
static void find_default_system(ByteLevel *t, const char *tpl, size_t n) {
    static const char open[] = "<|im_start|>system";
    for (const char *p = tpl, *end = tpl + n; (p = find(p, (size_t)(end - p), open, sizeof(open) - 1)); p++) {
        const char *s = p + sizeof(open) - 1;
        if (s < end && *s == '\n') s++;
        else if (s + 1 < end && s[0] == '\\' && s[1] == 'n') s += 2;
        else continue;
        const char *e = find(s, (size_t)(end - s), "<|im_end|>", 10);
        if (!e || e == s) continue;
        int literal = 1;
        for (const char *q = s; q < e; q++) literal &= *q != '\'' && *q != '"' && *q != '{' && *q != '}' && *q != '\\';
        if (!literal) continue;
        t->system_len = (size_t)(e - s);
        t->system = xmalloc(t->system_len + 1);
        memcpy(t->system, s, t->system_len);
        t->system[t->system_len] = '\0';
        return;
    }
}

static ByteLevel *finish(ByteLevel *t, const Source *src, const char *tpl, size_t tpl_len, char *err) {
    if (build(t, src, err)) {
        bytelevel_free(t);
        return NULL;
    }
    if (tpl) find_default_system(t, tpl, tpl_len);
    return t;
}

// ---------------------------------------------------------------------------------------
// GGUF

const char *bytelevel_pre_name_of(const char *const *patterns, int n, int ignore_merges) {
    for (size_t i = 0; i < N_PRE_TYPES; i++) {
        int same = pre_types[i].n_stages == n && pre_types[i].ignore_merges == !!ignore_merges;
        for (int k = 0; same && k < n; k++) same = !strcmp(patterns[k], pre_types[i].stages[k]);
        if (same) return pre_types[i].name;
    }
    return NULL;
}

// The index in pre_types of a llama.cpp pre-tokenizer name (its stages added to src), or -1
// when it is not one we implement.
static int pre_stages(const char *pre, size_t n, Source *src) {
    for (size_t i = 0; i < N_PRE_TYPES; i++)
        if (strlen(pre_types[i].name) == n && !memcmp(pre, pre_types[i].name, n)) {
            for (int k = 0; k < pre_types[i].n_stages; k++) src->patterns[src->n_patterns++] = pre_types[i].stages[k];
            return (int)i;
        }
    return -1;
}

static int gguf_id(const Gguf *g, const char *key, int32_t *id, int n, char *err) {
    *id = -1;
    if (!gguf_find(g, key)) return 0;
    int64_t v;
    if (gguf_get_int(g, key, &v, err)) return -1;
    if (v < 0 || v >= n) return set_error(err, "%s: metadata '%s': %lld is not a token id (0..%d)", g->path, key, (long long)v, n - 1);
    *id = (int32_t)v;
    return 0;
}

ByteLevel *bytelevel_from_gguf(const Gguf *g, char *err) {
    const char *model, *pre;
    size_t model_n, pre_n;
    if (gguf_get_string(g, "tokenizer.ggml.model", &model, &model_n, err)) return NULL;
    if (model_n != 4 || memcmp(model, "gpt2", 4)) {
        set_error(err, "%s: metadata 'tokenizer.ggml.model': \"%.*s\" is not a byte-level BPE (gpt2) tokenizer, the "
                  "one GGUF tokenizer we read", g->path, (int)(model_n < 40 ? model_n : 40), model);
        return NULL;
    }
    if (gguf_get_string(g, "tokenizer.ggml.pre", &pre, &pre_n, err)) return NULL;
    Source src = {.path = g->path};
    int pre_index = pre_stages(pre, pre_n, &src);
    if (pre_index < 0) {
        set_error(err, "%s: metadata 'tokenizer.ggml.pre': pre-tokenizer \"%.*s\" is not supported (smollm, starcoder, "
                  "refact, command-r, codeshell, exaone, minerva, gpt-2, tekken are)", g->path,
                  (int)(pre_n < 40 ? pre_n : 40), pre);
        return NULL;
    }
    uint64_t n_tok, n_types = 0, n_merges;
    const GgufKV *tokens = gguf_get_array(g, "tokenizer.ggml.tokens", GGUF_STRING, &n_tok, err);
    if (!tokens) return NULL;
    const GgufKV *types = gguf_find(g, "tokenizer.ggml.token_type") ?
        gguf_get_array(g, "tokenizer.ggml.token_type", GGUF_I32, &n_types, err) : NULL;
    if (gguf_find(g, "tokenizer.ggml.token_type") && !types) return NULL;
    const GgufKV *merges = gguf_get_array(g, "tokenizer.ggml.merges", GGUF_STRING, &n_merges, err);
    if (!merges) return NULL;
    if (n_tok == 0 || n_tok > (1u << 30) || (types && n_types != n_tok)) {
        set_error(err, "%s: metadata 'tokenizer.ggml.token_type': %llu types for %llu tokens", g->path,
                  (unsigned long long)n_types, (unsigned long long)n_tok);
        return NULL;
    }
    ByteLevel *t = xcalloc(1, sizeof(ByteLevel));
    t->ignore_merges = pre_types[pre_index].ignore_merges;
    t->pre = pre_types[pre_index].name;
    src.n_tok = (int)n_tok;
    src.tok = xcalloc(n_tok, sizeof(TokenText));
    for (uint64_t i = 0; i < n_tok; i++) {
        gguf_array_string(tokens, i, &src.tok[i].s, &src.tok[i].n);
        src.tok[i].type = types ? (int)gguf_array_int(types, i) : TYPE_NORMAL;
    }
    src.n_merges = (size_t)n_merges;
    src.merge = xcalloc(n_merges + 1, sizeof(char *));
    src.merge_len = xcalloc(n_merges + 1, sizeof(size_t));
    for (uint64_t i = 0; i < n_merges; i++) gguf_array_string(merges, i, &src.merge[i], &src.merge_len[i]);
    const char *tpl = NULL;
    size_t tpl_n = 0;
    int bad = gguf_find(g, "tokenizer.chat_template") && gguf_get_string(g, "tokenizer.chat_template", &tpl, &tpl_n, err);
    if (bad || gguf_id(g, "tokenizer.ggml.bos_token_id", &t->bos, (int)n_tok, err) ||
        gguf_id(g, "tokenizer.ggml.eos_token_id", &t->eos, (int)n_tok, err) ||
        gguf_id(g, "tokenizer.ggml.unknown_token_id", &t->unk, (int)n_tok, err) ||
        gguf_id(g, "tokenizer.ggml.padding_token_id", &t->pad, (int)n_tok, err)) {
        bytelevel_free(t);
        t = NULL;
    } else {
        t = finish(t, &src, tpl, tpl_n, err);
    }
    free(src.tok), free(src.merge), free(src.merge_len);
    return t;
}

// ---------------------------------------------------------------------------------------
// tokenizer.json

static int json_stage(const cJSON *p, Source *src, const char *path, char *err, ByteBuf *quoted) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
    const char *ty = cJSON_IsString(type) ? type->valuestring : "";
    if (src->n_patterns >= MAX_STAGES)
        return set_error(err, "%s: pre_tokenizer: more than %d splitting stages", path, MAX_STAGES);
    if (!strcmp(ty, "ByteLevel")) {
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "add_prefix_space")))
            return set_error(err, "%s: pre_tokenizer: ByteLevel with add_prefix_space is not supported", path);
        if (!cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(p, "use_regex"))) src->patterns[src->n_patterns++] = GPT2_PATTERN;
        return 0;
    }
    if (!strcmp(ty, "Digits")) {
        src->patterns[src->n_patterns++] =
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "individual_digits")) ? "\\p{N}" : "\\p{N}+";
        return 0;
    }
    if (!strcmp(ty, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex"), *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
        if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "invert")))
            return set_error(err, "%s: pre_tokenizer: Split is supported with behavior Isolated, not inverted", path);
        if (cJSON_IsString(re)) {
            src->patterns[src->n_patterns++] = re->valuestring;
        } else if (cJSON_IsString(str)) {  // a literal: quoted, kept alive in `quoted`
            ByteBuf *q = &quoted[src->n_patterns];
            q->len = 0;
            bytebuf_append(q, "\\Q", 2);
            bytebuf_append(q, str->valuestring, strlen(str->valuestring));
            bytebuf_append(q, "\\E", 3);  // with its NUL
            src->patterns[src->n_patterns] = q->data;
            src->n_patterns++;
        } else {
            return set_error(err, "%s: pre_tokenizer: Split has no Regex or String pattern", path);
        }
        return 0;
    }
    return set_error(err, "%s: pre_tokenizer: \"%.40s\" is not supported (ByteLevel, Digits, Split, Sequence are)", path, ty);
}

// bos/eos and the chat template from tokenizer_config.json beside the tokenizer.json.
static void read_config(ByteLevel *t, const char *path) {
    const char *slash = strrchr(path, '/');
    size_t dir = slash ? (size_t)(slash - path) + 1 : 0;
    char *cfg = xmalloc(dir + 32);
    memcpy(cfg, path, dir);
    strcpy(cfg + dir, "tokenizer_config.json");
    char err[ERR_LEN];
    size_t len;
    char *text = read_file(cfg, &len, err);
    cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
    static const char *const keys[2] = {"bos_token", "eos_token"};
    int32_t *ids[2] = {&t->bos, &t->eos};
    for (int k = 0; k < 2 && root; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, keys[k]);
        if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(v)) *ids[k] = bytelevel_special_id(t, v->valuestring);
    }
    const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
    if (cJSON_IsString(tpl)) find_default_system(t, tpl->valuestring, strlen(tpl->valuestring));
    cJSON_Delete(root);
    free(text);
    free(cfg);
}

ByteLevel *bytelevel_from_json(const char *path, const void *root_, char *err) {
    const cJSON *root = root_, *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab"), *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "BPE")) {
        set_error(err, "%s: model.type: only BPE tokenizer.json files are supported", path);
        return NULL;
    }
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
        set_error(err, "%s: model: no \"vocab\" object or \"merges\" list", path);
        return NULL;
    }
    static const char *const unsupported[] = {"continuing_subword_prefix", "end_of_word_suffix", "dropout", "unk_token"};
    for (size_t k = 0; k < 4; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, unsupported[k]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !v->valuestring[0])) {
            set_error(err, "%s: model.%s is set, which is not supported", path, unsupported[k]);
            return NULL;
        }
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"))) {
        set_error(err, "%s: model.byte_fallback is not supported (a byte-level vocabulary needs none)", path);
        return NULL;
    }
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm)) {
        set_error(err, "%s: normalizer: not supported (only tokenizers without one)", path);
        return NULL;
    }
    Source src = {.path = path};
    ByteBuf quoted[MAX_STAGES] = {{0}};
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *pre_type = cJSON_GetObjectItemCaseSensitive(pre, "type");
    int rc = 0;
    if (cJSON_IsString(pre_type) && !strcmp(pre_type->valuestring, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
        for (const cJSON *p = cJSON_IsArray(list) ? list->child : NULL; p && rc == 0; p = p->next)
            rc = json_stage(p, &src, path, err, quoted);
    } else if (pre && !cJSON_IsNull(pre)) {
        rc = json_stage(pre, &src, path, err, quoted);
    }
    ByteLevel *t = xcalloc(1, sizeof(ByteLevel));
    t->bos = t->eos = t->unk = t->pad = -1;
    t->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    // ids: the vocabulary's and the added tokens'
    int n = 0, entries = 0;
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    for (const cJSON *e = vocab->child; e && rc == 0; e = e->next, entries++)
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (1 << 30)) rc = set_error(err, "%s: model.vocab[\"%.40s\"] is not a token id", path, e->string);
        else if ((int)e->valuedouble + 1 > n) n = (int)e->valuedouble + 1;
    for (const cJSON *e = cJSON_IsArray(added) ? added->child : NULL; e && rc == 0; e = e->next, entries++) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id"), *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= (1 << 30) || !cJSON_IsString(c))
            rc = set_error(err, "%s: added_tokens: an entry without a valid id and content", path);
        else if ((int)id->valuedouble + 1 > n) n = (int)id->valuedouble + 1;
    }
    // ids run 0..n-1 without holes (finish checks each), so n is at most the entries: a
    // larger id is refused here, before the table of n tokens is allocated
    if (rc == 0 && n > entries)
        rc = set_error(err, "%s: token id %d with only %d tokens defined (ids must be 0..%d without holes)", path, n - 1,
                       entries, entries - 1);
    src.n_tok = rc ? 0 : n;
    src.tok = xcalloc((size_t)src.n_tok + 1, sizeof(TokenText));
    for (const cJSON *e = vocab->child; e && rc == 0; e = e->next)
        src.tok[(int)e->valuedouble] = (TokenText){e->string, strlen(e->string), TYPE_NORMAL};
    for (const cJSON *e = cJSON_IsArray(added) ? added->child : NULL; e && rc == 0; e = e->next) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        int special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"));
        src.tok[(int)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble] =
            (TokenText){c->valuestring, strlen(c->valuestring), special ? TYPE_CONTROL : TYPE_USER};
    }
    src.n_merges = (size_t)cJSON_GetArraySize(merges);
    if (merges->child && cJSON_IsArray(merges->child)) {  // the newer [LEFT, RIGHT] form
        src.left = xcalloc(src.n_merges + 1, sizeof(char *));
        src.right = xcalloc(src.n_merges + 1, sizeof(char *));
    } else {
        src.merge = xcalloc(src.n_merges + 1, sizeof(char *));
        src.merge_len = xcalloc(src.n_merges + 1, sizeof(size_t));
    }
    size_t r = 0;
    for (const cJSON *e = merges->child; e && rc == 0; e = e->next, r++) {
        if (src.merge && cJSON_IsString(e)) {
            src.merge[r] = e->valuestring, src.merge_len[r] = strlen(e->valuestring);
        } else if (src.left && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) && cJSON_IsString(e->child->next)) {
            src.left[r] = e->child->valuestring, src.right[r] = e->child->next->valuestring;
        } else {
            rc = set_error(err, "%s: model.merges[%zu] is neither \"LEFT RIGHT\" nor [LEFT, RIGHT]", path, r);
        }
    }
    if (rc) {
        bytelevel_free(t);
        t = NULL;
    } else {
        t = finish(t, &src, NULL, 0, err);
        if (t) read_config(t, path);
    }
    for (int k = 0; k < MAX_STAGES; k++) bytebuf_free(&quoted[k]);
    free(src.tok), free(src.merge), free(src.merge_len), free(src.left), free(src.right);
    return t;
}

void bytelevel_free(ByteLevel *t) {
    if (!t) return;
    free(t->tok_bytes), free(t->tok_off), free(t->special), free(t->spelled), free(t->spell_off), free(t->type);
    if (t->names.slots) strmap_free(&t->names);
    if (t->whole.slots) strmap_free(&t->whole);
    free(t->mkey), free(t->mrank), free(t->mjoined);
    for (int s = 0; s < t->n_stages; s++) bpe_splitter_free(&t->stage[s]);
    bpe_merger_free(&t->merge);
    free(t->system);
    free(t);
}

// ---------------------------------------------------------------------------------------
// encoding and decoding

static void encode_piece(ByteLevel *t, const char *p, size_t n, TokenVec *out) {
    if (t->ignore_merges) {
        int32_t id = strmap_get(&t->whole, p, n);
        if (id >= 0) {
            tokvec_push(out, id);
            return;
        }
    }
    bpe_merge(&t->merge, p, n, out);
}

// Splits s[0..n) with stage k into its matches and the text between them, each passed on to
// the next stage (the last stage's pieces are merged).
static void split(ByteLevel *t, int k, const char *s, size_t n, TokenVec *out) {
    if (n == 0) return;
    if (k == t->n_stages) {
        encode_piece(t, s, n, out);
        return;
    }
    size_t gap = 0, pos = 0, ms, me;
    while (pos < n && bpe_splitter_next(&t->stage[k], s, n, pos, &ms, &me)) {
        if (me == ms) {  // an empty match splits nothing: search on from the next character
            if (ms >= n) break;
            pos = ms + utf8_char_len((const unsigned char *)s + ms, n - ms, NULL);
            continue;
        }
        split(t, k + 1, s + gap, ms - gap, out);
        split(t, k + 1, s + ms, me - ms, out);
        gap = pos = me;
    }
    split(t, k + 1, s + gap, n - gap, out);
}

void bytelevel_encode(ByteLevel *t, const char *text, size_t len, TokenVec *out) {
    ByteBuf fixed = {0};
    if (!utf8_valid(text, len)) {  // as a Python caller would: bytes.decode("utf-8", "replace")
        utf8_replace_invalid(text, len, &fixed);
        text = fixed.data;
        len = fixed.len;
    }
    split(t, 0, text, len, out);
    bytebuf_free(&fixed);
}

int bytelevel_decode(const ByteLevel *t, const int32_t *ids, size_t n, ByteBuf *out, char *err) {
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->vocab_size)
            return set_error(err, "token %zu: id %d outside the vocabulary (0..%d)", i, (int)id, t->vocab_size - 1);
        if (t->special[id]) continue;
        bytebuf_append(out, t->tok_bytes + t->tok_off[id], t->tok_off[id + 1] - t->tok_off[id]);
    }
    return 0;
}

int32_t bytelevel_special_id(const ByteLevel *t, const char *str) { return strmap_get(&t->names, str, strlen(str)); }

size_t bytelevel_piece(const ByteLevel *t, int32_t id, const char **s) {
    if (id < 0 || id >= t->vocab_size) {
        *s = "";
        return 0;
    }
    *s = t->tok_bytes + t->tok_off[id];
    return t->tok_off[id + 1] - t->tok_off[id];
}

int bytelevel_vocab_size(const ByteLevel *t) { return t->vocab_size; }

void bytelevel_ids(const ByteLevel *t, int32_t *bos, int32_t *eos, int32_t *unk, int32_t *pad) {
    *bos = t->bos, *eos = t->eos, *unk = t->unk, *pad = t->pad;
}

const char *bytelevel_default_system(const ByteLevel *t, size_t *len) {
    *len = t->system_len;
    return t->system;
}

const char *bytelevel_pre_name(const ByteLevel *t) { return t->pre; }

int bytelevel_token(const ByteLevel *t, int32_t id, const char **spelled, size_t *len) {
    *spelled = t->spelled + t->spell_off[id];
    *len = t->spell_off[id + 1] - t->spell_off[id];
    return t->type[id];
}

size_t bytelevel_merges(const ByteLevel *t, int32_t **left, int32_t **right) {
    size_t n = 0;
    for (size_t i = 0; i <= t->mmask; i++) n += t->mkey[i] != UINT64_MAX;
    *left = xmalloc((n + 1) * sizeof(int32_t));
    *right = xmalloc((n + 1) * sizeof(int32_t));
    for (size_t i = 0; i <= t->mmask; i++)  // ranks are 0..n-1, each once
        if (t->mkey[i] != UINT64_MAX) {
            (*left)[t->mrank[i]] = (int32_t)(t->mkey[i] >> 32);
            (*right)[t->mrank[i]] = (int32_t)(uint32_t)t->mkey[i];
        }
    return n;
}
