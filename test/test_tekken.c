/*
 * test_tekken.c: the Tekken tokenizer against mistral-common.
 *
 * argv[1] is mistral-common's data directory (mistral_common/data in the virtual
 * environment), which holds the real tekken_240718.json (Mistral Nemo, v3). Expected ids
 * come from mistral-common itself or from facts in the reference notes; the malformed-file
 * cases write small tekken.json variants to temporary files.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../tokenizer/tekken.h"
#include "test.h"

static const char *data_dir;
static Tekken *nemo;  // tekken_240718.json, loaded once

// The split pattern of the shipped tekken.json files (config.pattern), as a C string.
#define TEKKEN_PATTERN                                                                       \
    "[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?[\\\\p{Lu}\\\\p{Lt}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]*"             \
    "[\\\\p{Ll}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]+|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?"                     \
    "[\\\\p{Lu}\\\\p{Lt}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]+[\\\\p{Ll}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]*|"     \
    "\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n/]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+"

static void encode_str(Tekken *t, const char *s, size_t n, TokenVec *out) {
    out->len = 0;
    tekken_encode(t, s, n, out);
}

#define CHECK_ENCODE(t, str, ...)                                                        \
    do {                                                                                 \
        static const char s_[] = str;                                                    \
        static const int32_t want_[] = {__VA_ARGS__};                                    \
        TokenVec v_ = {0};                                                               \
        encode_str((t), s_, sizeof(s_) - 1, &v_);                                        \
        CHECK_IDS(v_.ids, v_.len, want_, sizeof(want_) / sizeof(want_[0]));              \
        tokvec_free(&v_);                                                                \
    } while (0)

// ---------------------------------------------------------------------------------------
// The real file

TEST(tekken_nemo_header) {
    CHECK_INT(tekken_vocab_size(nemo), 131072);
    CHECK_INT(tekken_num_special(nemo), 1000);
    CHECK_INT(tekken_version(nemo), 3);
    // DEPRECATED_SPECIAL_TOKENS ranks (reference §5.6): the file has no special_tokens list.
    CHECK_INT(tekken_special_id(nemo, "<unk>"), 0);
    CHECK_INT(tekken_special_id(nemo, "<s>"), 1);
    CHECK_INT(tekken_special_id(nemo, "</s>"), 2);
    CHECK_INT(tekken_special_id(nemo, "[INST]"), 3);
    CHECK_INT(tekken_special_id(nemo, "[/INST]"), 4);
    CHECK_INT(tekken_special_id(nemo, "[TOOL_CALLS]"), 9);
    CHECK_INT(tekken_special_id(nemo, "<pad>"), 11);
    CHECK_INT(tekken_special_id(nemo, "[SYSTEM_PROMPT]"), 17);
    CHECK_INT(tekken_special_id(nemo, "[TOOL_CONTENT]"), 19);
    CHECK_INT(tekken_special_id(nemo, "<SPECIAL_20>"), 20);
    CHECK_INT(tekken_special_id(nemo, "<SPECIAL_999>"), 999);
    CHECK_INT(tekken_special_id(nemo, "<SPECIAL_1000>"), -1);
    CHECK_INT(tekken_special_id(nemo, "a"), -1);  // ordinary tokens are not special
    const char *s;
    size_t n = tekken_piece(nemo, 3, &s);
    CHECK(n == 6 && memcmp(s, "[INST]", 6) == 0);
    n = tekken_piece(nemo, 1097, &s);  // byte b has id 1000 + b
    CHECK(n == 1 && s[0] == 'a');
    n = tekken_piece(nemo, 1010, &s);
    CHECK(n == 1 && s[0] == '\n');
    CHECK_INT(tekken_piece(nemo, -1, &s), 0);
    CHECK_STR(s, "");
    CHECK_INT(tekken_piece(nemo, 131072, &s), 0);
}

// mistral-common tests/test_tokenize_v3.py: V3-Tekken "[INST]a[/INST]" = [1, 3, 1097, 4],
// i.e. BOS, [INST], encode("a"), [/INST].
TEST(tekken_golden_inst_a) {
    TokenVec v = {0};
    tokvec_push(&v, tekken_special_id(nemo, "<s>"));
    tokvec_push(&v, tekken_special_id(nemo, "[INST]"));
    tekken_encode(nemo, "a", 1, &v);
    tokvec_push(&v, tekken_special_id(nemo, "[/INST]"));
    static const int32_t want[] = {1, 3, 1097, 4};
    CHECK_IDS(v.ids, v.len, want, 4);
    tokvec_free(&v);
}

// Expected ids produced with mistral-common 1.13.1 (tiktoken 0.14.0):
//   MistralTokenizer.from_file("tekken_240718.json").instruct_tokenizer.tokenizer
//       .encode(s, bos=False, eos=False)
TEST(tekken_nemo_encode_matches_mistral_common) {
    CHECK_ENCODE(nemo, "Hello, world!", 22177, 1044, 4304, 1033);
    CHECK_ENCODE(nemo, "h\xc3\xa9llo caf\xc3\xa9 na\xc3\xafve \xc3\x86r\xc3\xb8sk\xc3\xb8" "bing",
                 67679, 109232, 35858, 98355, 1492, 1134, 1114, 4093, 2728, 4093, 14397);
    CHECK_ENCODE(nemo, "日本語のテキスト、中文文本。",
                 10008, 15199, 2439, 7282, 14742, 13854, 1749, 4392, 11449, 11449, 5296, 1320);
    CHECK_ENCODE(nemo, "emoji 😀👍🏽 family 👨\u200d👩\u200d👧",
                 1356, 26303, 119685, 1152, 1128, 1240, 1159, 1145, 1141, 1240, 1159, 1143, 1189,
                 5135, 119685, 1145, 1168, 29568, 1240, 1159, 1145, 1169, 29568, 1240, 1159, 1145,
                 1167);
    CHECK_ENCODE(nemo, "שלום עולם مرحبا بالعالم",
                 4580, 2627, 14941, 5697, 37814, 58482, 26986, 52373, 6946);
    CHECK_ENCODE(nemo, "line one\r\nline two\r\n\r\nend",
                 2839, 1925, 1013, 1010, 2839, 2295, 1013, 1010, 1013, 1010, 1474);
    CHECK_ENCODE(nemo, "a    b\t\t\tc \t \n  d",
                 1097, 1293, 1289, 1458, 6622, 1032, 17152, 1010, 1032, 1266);
    CHECK_ENCODE(nemo, "year 2024: 3.14159, 1,000,000",
                 26098, 1032, 1050, 1048, 1050, 1052, 1058, 1032, 1051, 1046, 1049, 1052, 1049,
                 1053, 1057, 1044, 1032, 1049, 1044, 1048, 1048, 1048, 1044, 1048, 1048, 1048);
    CHECK_ENCODE(nemo, "def f(x):\n    return x**2  # square\n",
                 3149, 1284, 4790, 3640, 1293, 1850, 2460, 1438, 1050, 1032, 2569, 12333, 1010);
    // Special-token strings in text are plain text.
    CHECK_ENCODE(nemo, "[INST]a[/INST]",
                 1091, 3174, 3074, 1093, 1097, 1091, 1047, 3174, 3074, 1093);
    // Unicode White_Space (U+00A0, U+2028, U+3000, U+0085) vs U+180E, which is not.
    CHECK_ENCODE(nemo, "x\u00a0y\u2028z\u3000w\xc2\x85v\u180eu",
                 1120, 3997, 1121, 1287, 1168, 1122, 114840, 1119, 1194, 1133, 1118, 1225, 1160,
                 1142, 1117);
    CHECK_ENCODE(nemo, "e\xcc\x81 combining a\xcc\x88\xcc\xa3",  // combining marks
                 1101, 1204, 1129, 34881, 1261, 129636, 1204, 1163);
    // Pieces longer than 128 bytes take the heap merge.
    CHECK_ENCODE(nemo, "                                                                      "
                       "                                                                      "
                       "                                                                      "
                       "                                                                      "
                       "                    x",
                 32457, 32457, 32457, 32457, 11977, 2460);
    CHECK_ENCODE(nemo, "SupercalifragilisticexpialidociousSupercalifragilisticexpialidocious"
                       "SupercalifragilisticexpialidociousSupercalifragilisticexpialidocious"
                       "Supercalifragilisticexpialidocious",
                 22361, 4526, 1391, 3185, 1318, 96827, 1120, 1112, 1551, 1327, 2560, 1718,
                 22361, 4526, 1391, 3185, 1318, 96827, 1120, 1112, 1551, 1327, 2560, 1718,
                 22361, 4526, 1391, 3185, 1318, 96827, 1120, 1112, 1551, 1327, 2560, 1718,
                 22361, 4526, 1391, 3185, 1318, 96827, 1120, 1112, 1551, 1327, 2560, 1718,
                 22361, 4526, 1391, 3185, 1318, 96827, 1120, 1112, 1551, 1327, 2560, 1718);
}

TEST(tekken_nemo_empty_input) {
    TokenVec v = {0};
    tekken_encode(nemo, "", 0, &v);
    CHECK_INT(v.len, 0);
    tokvec_free(&v);
}

// Malformed UTF-8 is encoded as Python's bytes.decode("utf-8", errors="replace") gives it:
// expected ids from mistral-common 1.13.1 on that decoded string (one U+FFFD per maximal
// ill-formed subpart: \xff, \xfe, the truncated \xe2\x82, each byte of the surrogate
// \xed\xa0\x80, the truncated \xf0\x9f\x98).
TEST(tekken_invalid_utf8_like_python_replace) {
    CHECK_ENCODE(nemo, "ok \xff\xfe bad \xe2\x82 trunc \xed\xa0\x80 sur \xf0\x9f\x98",
                 1662, 42120, 61690, 66122, 8143, 42120, 61690, 40053, 42120, 61690, 110200,
                 1958, 42120, 61690);
}

TEST(tekken_round_trip) {
    static const char text[] =
        "The quick brown fox — 「速い茶色の狐」 jumps over 13 lazy dogs! 🦊🐕\r\n"
        "\tÜmlaut, ñ, ç, ø; Ελληνικά, русский, עברית, العربية, हिन्दी\n"
        "    if (x != y) { return a[i] * 2.5e-3; }   \n\n\n  trailing   ";
    TokenVec v = {0};
    tekken_encode(nemo, text, sizeof(text) - 1, &v);
    CHECK(v.len > 0);
    // Special ids inside the sequence are dropped (IGNORE).
    tokvec_push(&v, tekken_special_id(nemo, "</s>"));
    ByteBuf out = {0};
    char err[ERR_LEN] = "";
    CHECK_INT(tekken_decode(nemo, v.ids, v.len, &out, err), 0);
    CHECK_INT(out.len, sizeof(text) - 1);
    CHECK(out.data && memcmp(out.data, text, sizeof(text) - 1) == 0);
    bytebuf_free(&out);
    tokvec_free(&v);
}

TEST(tekken_decode_out_of_range) {
    char err[ERR_LEN] = "";
    ByteBuf out = {0};
    int32_t ids[] = {1097, 131072};
    CHECK_INT(tekken_decode(nemo, ids, 2, &out, err), -1);
    CHECK_CONTAINS(err, "token 1: id 131072 outside the vocabulary (0..131071)");
    int32_t neg[] = {-5};
    CHECK_INT(tekken_decode(nemo, neg, 1, &out, err), -1);
    CHECK_CONTAINS(err, "-5");
    bytebuf_free(&out);
}

// ---------------------------------------------------------------------------------------
// Small files

static void base64_append(ByteBuf *b, const unsigned char *s, size_t n) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) |
                     (i + 2 < n ? s[i + 2] : 0);
        char q[4] = {abc[v >> 18 & 63], abc[v >> 12 & 63], i + 1 < n ? abc[v >> 6 & 63] : '=',
                     i + 2 < n ? abc[v & 63] : '='};
        bytebuf_append(b, q, 4);
    }
}

// The extra tokens of the small vocabulary, ranks 256.. after the 256 single bytes.
static const char *const EXTRA[] = {"ab", "abc", " a", "cd"};
#define NUM_EXTRA 4
#define EXTRA_AB ((const unsigned char *)"ab")  // rank 256, repeated by DUP_BYTES

// What to break in a small file.
enum { OK, NO_CONFIG, NO_PATTERN, NO_VOCAB, BAD_BASE64, BAD_RANK, DUP_BYTES, NOT_BYTE };

// A small tekken.json: `vocab` = 256 bytes + EXTRA, with the given config fields and an
// optional special_tokens list (raw JSON text).
static void small_json(ByteBuf *b, int breakage, const char *pattern, int vocab_size,
                       int num_special, const char *version, const char *specials) {
    bytebuf_append(b, "{", 1);
    if (breakage != NO_CONFIG) {
        char head[256];
        snprintf(head, sizeof(head), "\"config\": {\"default_vocab_size\": %d, "
                 "\"default_num_special_tokens\": %d, \"version\": \"%s\"", vocab_size,
                 num_special, version);
        bytebuf_append(b, head, strlen(head));
        if (breakage != NO_PATTERN) {
            bytebuf_append(b, ", \"pattern\": \"", 14);
            bytebuf_append(b, pattern, strlen(pattern));
            bytebuf_append(b, "\"", 1);
        }
        bytebuf_append(b, "}", 1);
    }
    if (breakage != NO_VOCAB) {
        if (breakage != NO_CONFIG) bytebuf_append(b, ", ", 2);
        bytebuf_append(b, "\"vocab\": [", 10);
        for (int r = 0; r < 256 + NUM_EXTRA; r++) {
            char head[64];
            snprintf(head, sizeof(head), "%s{\"rank\": %d, \"token_bytes\": \"", r ? ", " : "",
                     breakage == BAD_RANK && r == 257 ? 300 : r);
            bytebuf_append(b, head, strlen(head));
            unsigned char byte = (unsigned char)r;
            if (breakage == NOT_BYTE && r == 65) byte = 66;
            if (breakage == BAD_BASE64 && r == 258) bytebuf_append(b, "ab$=", 4);
            else if (breakage == DUP_BYTES && r == 259) base64_append(b, EXTRA_AB, 2);
            else if (r < 256) base64_append(b, &byte, 1);
            else base64_append(b, (const unsigned char *)EXTRA[r - 256], strlen(EXTRA[r - 256]));
            bytebuf_append(b, "\", \"token_str\": null}", 21);
        }
        bytebuf_append(b, "]", 1);
    }
    if (specials) {
        bytebuf_append(b, ", \"special_tokens\": ", 20);
        bytebuf_append(b, specials, strlen(specials));
    }
    bytebuf_append(b, "}", 1);
}

// Writes data to a temporary file, loads it, removes the file. Returns the tokenizer (or
// NULL with the reason in err) and the file's path in path.
static Tekken *load_temp(const char *data, size_t len, char *path, char *err) {
    strcpy(path, "/tmp/test_tekken_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) {
        set_error(err, "mkstemp failed");
        return NULL;
    }
    if (len && write(fd, data, len) != (ssize_t)len) set_error(err, "write failed");
    close(fd);
    size_t n;
    char *buf = read_file(path, &n, err);
    Tekken *t = buf ? tekken_load(path, buf, n, err) : NULL;
    free(buf);
    unlink(path);
    return t;
}

// Loads a small file that must fail; checks the message names the file and the reason.
static void expect_failure(const char *data, const char *reason, int line) {
    char path[64], err[ERR_LEN] = "";
    Tekken *t = load_temp(data, strlen(data), path, err);
    if (t) {
        printf("  line %d: loaded, expected failure \"%s\"\n", line, reason);
        test_failed_checks++;
        tekken_free(t);
        return;
    }
    if (!strstr(err, path) || !strstr(err, reason)) {
        printf("  line %d: error \"%s\" should name the file and contain \"%s\"\n", line, err,
               reason);
        test_failed_checks++;
    }
}

#define EXPECT_FAILURE(breakage, pattern, vocab_size, num_special, version, specials, reason) \
    do {                                                                                     \
        ByteBuf b_ = {0};                                                                    \
        small_json(&b_, breakage, pattern, vocab_size, num_special, version, specials);      \
        expect_failure(b_.data, reason, __LINE__);                                   \
        bytebuf_free(&b_);                                                                   \
    } while (0)

#define SMALL_SIZE (3 + 256 + NUM_EXTRA)  // with 3 special tokens

TEST(tekken_bad_files) {
    expect_failure("{\"config\": {\"pattern\": ", "not valid JSON", __LINE__);
    expect_failure("", "empty file", __LINE__);
    expect_failure("[1, 2]", "not a JSON object", __LINE__);
    expect_failure("{} x", "not valid JSON", __LINE__);
    EXPECT_FAILURE(NO_CONFIG, TEKKEN_PATTERN, SMALL_SIZE, 3, "v3", NULL, "no \"config\"");
    EXPECT_FAILURE(NO_PATTERN, TEKKEN_PATTERN, SMALL_SIZE, 3, "v3", NULL,
                   "config has no \"pattern\"");
    EXPECT_FAILURE(NO_VOCAB, TEKKEN_PATTERN, SMALL_SIZE, 3, "v3", NULL, "no \"vocab\"");
    EXPECT_FAILURE(BAD_BASE64, TEKKEN_PATTERN, SMALL_SIZE, 3, "v3", NULL,
                   "vocab[258].token_bytes is not valid base64");
    EXPECT_FAILURE(BAD_RANK, TEKKEN_PATTERN, SMALL_SIZE, 3, "v3", NULL,
                   "vocab[257] has rank 300");
    EXPECT_FAILURE(NOT_BYTE, TEKKEN_PATTERN, SMALL_SIZE, 3, "v3", NULL,
                   "vocab[65] must be the single byte 65");
    EXPECT_FAILURE(DUP_BYTES, TEKKEN_PATTERN, SMALL_SIZE, 3, "v3", NULL,
                   "vocab[259] has the same token bytes as rank 256");
    EXPECT_FAILURE(OK, TEKKEN_PATTERN, SMALL_SIZE + 1, 3, "v3", NULL,
                   "vocab has 260 entries, fewer than");
    EXPECT_FAILURE(OK, TEKKEN_PATTERN, 200, 3, "v3", NULL, "fewer than 256 ordinary tokens");
    EXPECT_FAILURE(OK, "(\\\\p{L}+", SMALL_SIZE, 3, "v3", NULL,
                   "config.pattern does not compile: missing closing parenthesis at offset 7");
    // The offset is in the file's pattern, before \s was expanded.
    EXPECT_FAILURE(OK, "\\\\s+)", SMALL_SIZE, 3, "v3", NULL,
                   "config.pattern does not compile: unmatched closing parenthesis at offset 3");
    EXPECT_FAILURE(OK, "\\\\p{Nope}", SMALL_SIZE, 3, "v3", NULL, "config.pattern does not compile");
    EXPECT_FAILURE(OK, "[\\\\S]", SMALL_SIZE, 3, "v3", NULL, "\\S inside a character class");
    EXPECT_FAILURE(OK, TEKKEN_PATTERN, SMALL_SIZE, 3, "v11", NULL, "no \"special_tokens\"");
    EXPECT_FAILURE(OK, TEKKEN_PATTERN, SMALL_SIZE, 3, "3", NULL, "is not of the form vN");
    EXPECT_FAILURE(OK, TEKKEN_PATTERN, SMALL_SIZE, 3, "v11",
                   "[{\"rank\": 0, \"token_str\": \"<s>\"}, {\"rank\": 1, \"token_str\": \"<s>\"}]",
                   "\"<s>\" (rank 1) is defined twice");
    EXPECT_FAILURE(OK, TEKKEN_PATTERN, SMALL_SIZE, 3, "v11",
                   "[{\"rank\": 7, \"token_str\": \"<s>\"}]", "special_tokens[0] has rank 7");
    EXPECT_FAILURE(OK, TEKKEN_PATTERN, SMALL_SIZE, 3, "v11", "{}",
                   "\"special_tokens\" is not a list");
    expect_failure("{\"config\": {\"default_vocab_size\": 5}}", "config has no \"version\"",
                   __LINE__);
    expect_failure("{\"config\": {\"version\": \"v3\", \"default_vocab_size\": \"x\"}}",
                   "config.default_vocab_size is not a non-negative integer", __LINE__);
    expect_failure("{\"config\": {\"version\": \"v3\", \"default_vocab_size\": 1e300}}",
                   "config.default_vocab_size is not a non-negative integer", __LINE__);
}

TEST(tekken_small_file_with_special_tokens) {
    // Four special tokens, three of them listed (one custom): the fourth is filled in.
    static const char specials[] =
        "[{\"rank\": 0, \"token_str\": \"<unk>\", \"is_control\": true}, "
        "{\"rank\": 1, \"token_str\": \"<s>\", \"is_control\": true}, "
        "{\"rank\": 2, \"token_str\": \"[MY_SPECIAL]\", \"is_control\": true}]";
    ByteBuf b = {0};
    small_json(&b, OK, TEKKEN_PATTERN, 4 + 256 + NUM_EXTRA, 4, "v13", specials);
    char path[64], err[ERR_LEN] = "";
    Tekken *t = load_temp(b.data, b.len, path, err);
    bytebuf_free(&b);
    CHECK(t != NULL);
    if (!t) {
        printf("  %s\n", err);
        return;
    }
    CHECK_INT(tekken_version(t), 13);
    CHECK_INT(tekken_vocab_size(t), 4 + 256 + NUM_EXTRA);
    CHECK_INT(tekken_special_id(t, "<s>"), 1);
    CHECK_INT(tekken_special_id(t, "[MY_SPECIAL]"), 2);
    CHECK_INT(tekken_special_id(t, "<SPECIAL_3>"), 3);
    CHECK_INT(tekken_special_id(t, "[INST]"), -1);  // not the built-in list
    // Ranks: "ab" 256, "abc" 257, " a" 258, "cd" 259; id = rank + 4.
    CHECK_ENCODE(t, "abc", 261);           // a whole-piece token
    CHECK_ENCODE(t, "abab", 260, 260);     // merged from bytes
    // "ab" (256) before "cd" (259); then "abc" (257) outranks "cd", and "abcd" is no token.
    CHECK_ENCODE(t, "abcd", 261, 4 + 'd');
    CHECK_ENCODE(t, "x ab", 4 + 'x', 4 + ' ', 260);  // in " ab", "ab" (256) beats " a" (258)
    CHECK_ENCODE(t, "[MY_SPECIAL]", 4 + '[', 4 + 'M', 4 + 'Y', 4 + '_', 4 + 'S', 4 + 'P',
                 4 + 'E', 4 + 'C', 4 + 'I', 4 + 'A', 4 + 'L', 4 + ']');
    const char *s;
    size_t n = tekken_piece(t, 2, &s);
    CHECK(n == 12 && memcmp(s, "[MY_SPECIAL]", 12) == 0);
    int32_t ids[] = {1, 261, 2, 263};
    ByteBuf out = {0};
    CHECK_INT(tekken_decode(t, ids, 4, &out, err), 0);
    CHECK_STR(out.data, "abccd");
    bytebuf_free(&out);
    tekken_free(t);
}

int main(int argc, char **argv) {
    data_dir = test_tokenizer_dir(argc, argv);
    char path[4096], err[ERR_LEN] = "";
    snprintf(path, sizeof(path), "%s/tekken_240718.json", data_dir);
    size_t len;
    char *data = read_file(path, &len, err);
    nemo = data ? tekken_load(path, data, len, err) : NULL;
    free(data);
    if (!nemo) {
        printf("  %s\nFAIL tekken_load_nemo\n", err);
        return 1;
    }
    RUN(tekken_nemo_header);
    RUN(tekken_golden_inst_a);
    RUN(tekken_nemo_encode_matches_mistral_common);
    RUN(tekken_nemo_empty_input);
    RUN(tekken_invalid_utf8_like_python_replace);
    RUN(tekken_round_trip);
    RUN(tekken_decode_out_of_range);
    RUN(tekken_bad_files);
    RUN(tekken_small_file_with_special_tokens);
    tekken_free(nemo);
    return test_summary();
}
