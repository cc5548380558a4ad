// test_sentencepiece.c: loading Mistral's tokenizer.model files, known encodings, and
// corrupt or truncated models (which must fail cleanly or load, never crash).
//
// argv[1] is the directory of the tokenizer files shipped in the mistral-common package.
// Expected ids are either published facts (reference/mistral.md §5.3, §5.5, §8) or were
// produced by the Python `sentencepiece` package 0.2.3 (`SentencePieceProcessor.encode`)
// on the same model file, as noted at each case.
#include <stdint.h>
#include <fcntl.h>
#include <unistd.h>

#include "../tokenizer/sentencepiece.h"
#include "../tokenizer/tokenizer.h"
#include "test.h"

static const char *data_dir;

static void path_of(char *buf, size_t n, const char *file) { snprintf(buf, n, "%s/%s", data_dir, file); }

static int load(Tokenizer *t, const char *file) {
    char path[4096], err[ERR_LEN];
    path_of(path, sizeof(path), file);
    if (tokenizer_load(t, path, err)) {
        printf("  load %s: %s\n", file, err);
        return -1;
    }
    return 0;
}

static void check_encode(Tokenizer *t, const char *text, size_t len, const int32_t *want, size_t n) {
    TokenVec v = {0};
    tokenizer_encode(t, text, len, &v);
    CHECK_IDS(v.ids, v.len, want, n);
    tokvec_free(&v);
}
#define ENCODES(t, text, ...)                                                          \
    do {                                                                               \
        static const int32_t want_[] = {__VA_ARGS__};                                  \
        check_encode(t, text, sizeof(text) - 1, want_, sizeof(want_) / sizeof(int32_t)); \
    } while (0)

// reference/mistral.md §5.3 (id layouts) and §5.5 (the worked encode example).
TEST(v1_layout_and_golden_encode) {
    Tokenizer t;
    if (load(&t, "tokenizer.model.v1")) { CHECK(0); return; }
    CHECK_INT(t.kind, TOKENIZER_SENTENCEPIECE);
    CHECK_INT(t.version, 1);
    CHECK_INT(t.vocab_size, 32000);
    CHECK_INT(t.bos_id, 1);
    CHECK_INT(t.eos_id, 2);
    CHECK_INT(t.unk_id, 0);
    CHECK_INT(tokenizer_special_id(&t, "<s>"), 1);
    CHECK_INT(tokenizer_special_id(&t, "[INST]"), -1);  // plain text in v1
    ENCODES(&t, "h\xC3\xA9llo \xF0\x9F\x98\x80  \xE4\xB8\x96\xE7\x95\x8C\n\tend",
            295, 28797, 584, 28709, 28705, 30575, 259, 30050, 29822, 13, 12, 416);
    ENCODES(&t, " ", 259);        // sentencepiece 0.2.3: "▁▁" is one piece
    ENCODES(&t, "  a", 259, 264); // sentencepiece 0.2.3
    check_encode(&t, "", 0, NULL, 0);  // empty text: no dummy prefix, no ids
    tokenizer_free(&t);
}

TEST(v3_v7_layout_and_user_defined_pieces) {
    Tokenizer t3, t7;
    if (load(&t3, "mistral_instruct_tokenizer_240323.model.v3") ||
        load(&t7, "mistral_instruct_tokenizer_241114.model.v7")) { CHECK(0); return; }
    CHECK_INT(t3.version, 3);
    CHECK_INT(t7.version, 7);
    CHECK_INT(t3.vocab_size, 32768);
    CHECK_INT(tokenizer_special_id(&t3, "[INST]"), 3);
    CHECK_INT(tokenizer_special_id(&t3, "[/INST]"), 4);
    CHECK_INT(tokenizer_special_id(&t3, "[SYSTEM_PROMPT]"), -1);
    CHECK_INT(tokenizer_special_id(&t7, "[SYSTEM_PROMPT]"), 16);
    CHECK_INT(tokenizer_special_id(&t7, "[/SYSTEM_PROMPT]"), 17);
    // "\n" is <0x0A> = 781 and "▁" is 29473 in v3 (§5.3)
    ENCODES(&t3, "\n", 29473, 781);
    // user-defined pieces are matched whole: [REFERENCE_DOC_0] = 770 in v3 and v7, [REF] =
    // 750 only in v7 (sentencepiece 0.2.3)
    ENCODES(&t3, "[REFERENCE_DOC_0] x[REF]y", 29473, 770, 2086, 29560, 15097, 29561, 29492);
    ENCODES(&t7, "[REFERENCE_DOC_0] x[REF]y", 29473, 770, 2086, 750, 29492);
    // control strings in text stay text
    TokenVec v = {0};
    tokenizer_encode(&t3, "[INST]", 6, &v);
    for (size_t i = 0; i < v.len; i++) CHECK(v.ids[i] != 3);
    tokvec_free(&v);
    tokenizer_free(&t3);
    tokenizer_free(&t7);
}

// SentencePiece replaces each malformed byte by U+FFFD (sentencepiece 0.2.3 on raw bytes).
TEST(malformed_utf8_follows_sentencepiece) {
    Tokenizer t;
    if (load(&t, "tokenizer.model.v1")) { CHECK(0); return; }
    ENCODES(&t, "\xFF\xC3(", 28705, 29137, 29137, 28732);
    ENCODES(&t, "\xE2\x96\x81" "a b", 28705, 264, 287);  // a literal "▁" acts as a space
    tokenizer_free(&t);
}

TEST(decode_drops_control_and_checks_range) {
    Tokenizer t;
    if (load(&t, "mistral_instruct_tokenizer_240323.model.v3")) { CHECK(0); return; }
    const char *text = "  Hello,\tworld \xE2\x80\x94 caf\xC3\xA9\n";
    TokenVec v = {0};
    tokvec_push(&v, t.bos_id);
    tokenizer_encode(&t, text, strlen(text), &v);
    tokvec_push(&v, 3);  // [INST]
    tokvec_push(&v, t.eos_id);
    ByteBuf out = {0};
    char err[ERR_LEN];
    CHECK_INT(tokenizer_decode(&t, v.ids, v.len, &out, err), 0);
    CHECK_STR(out.data, text);
    int32_t bad[] = {5, 40000};
    out.len = 0;
    CHECK_INT(tokenizer_decode(&t, bad, 2, &out, err), -1);
    CHECK_CONTAINS(err, "token 1: id 40000 outside the vocabulary");
    bytebuf_free(&out);
    tokvec_free(&v);
    tokenizer_free(&t);
}

// Without a ".vN" suffix the version comes from the control tokens the file defines.
TEST(version_from_content_when_name_has_none) {
    static const struct { const char *file; int version; } cases[] = {
        {"tokenizer.model.v1", 1},
        {"mistral_instruct_tokenizer_240216.model.v2", 2},
        {"mistral_instruct_tokenizer_240323.model.v3", 3},
        {"mistral_instruct_tokenizer_241114.model.v7", 7},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char path[4096], err[ERR_LEN], tmpdir[] = "/tmp/spm_test_XXXXXX", copy[4200];
        path_of(path, sizeof(path), cases[i].file);
        size_t len;
        char *data = read_file(path, &len, err);
        CHECK(data != NULL);
        if (!data || !mkdtemp(tmpdir)) continue;
        snprintf(copy, sizeof(copy), "%s/tokenizer.model", tmpdir);
        FILE *f = fopen(copy, "wb");
        fwrite(data, 1, len, f);
        fclose(f);
        Tokenizer t;
        CHECK_INT(tokenizer_load(&t, copy, err), 0);
        CHECK_INT(t.version, cases[i].version);
        tokenizer_free(&t);
        unlink(copy);
        rmdir(tmpdir);
        free(data);
    }
}

// Writes data[0..len) to a temporary file and tries to load it: it must either fail with
// a message naming the file, or load and then encode and decode without incident.
static int try_corrupt(const char *data, size_t len, int *loaded) {
    char path[] = "/tmp/spm_corrupt_XXXXXX", err[ERR_LEN] = "";
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    if (len && write(fd, data, len) != (ssize_t)len) { close(fd); unlink(path); return -1; }
    close(fd);
    Tokenizer t;
    int ok = 0;
    if (tokenizer_load(&t, path, err) == 0) {
        (*loaded)++;
        const char *s = "Holmes said, \"It is a capital mistake to theorize.\"\n\t\xC3\xA9\xFF";
        TokenVec v = {0};
        tokenizer_encode(&t, s, strlen(s), &v);
        ByteBuf out = {0};
        tokenizer_decode(&t, v.ids, v.len, &out, err);  // may refuse ids of a damaged model
        bytebuf_free(&out);
        tokvec_free(&v);
        tokenizer_free(&t);
    } else {
        ok = strstr(err, path) != NULL && strchr(err, '\n') == NULL ? 0 : -1;
        if (ok) printf("  unclear error for %zu bytes: %s\n", len, err);
    }
    unlink(path);
    return ok;
}

TEST(truncated_and_corrupt_models_fail_cleanly) {
    char path[4096], err[ERR_LEN];
    path_of(path, sizeof(path), "mistral_instruct_tokenizer_240323.model.v3");
    size_t len;
    char *data = read_file(path, &len, err);
    if (!data) { CHECK(0); return; }
    int loaded = 0, bad = 0;
    // every length in the first 64 bytes, then 200 cut points across the file
    for (size_t n = 0; n < 64; n++) bad += try_corrupt(data, n, &loaded) != 0;
    for (size_t k = 1; k <= 200; k++) bad += try_corrupt(data, len * k / 201, &loaded) != 0;
    // random byte changes (a fixed-seed xorshift so failures reproduce)
    uint64_t x = 0x9E3779B97F4A7C15ull;
    char *copy = xmalloc(len);
    for (int round = 0; round < 150; round++) {
        memcpy(copy, data, len);
        for (int k = 0; k < 4; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t at = round < 75 ? x % 4096 : x % len;  // half near the start, where the
            copy[at] = (char)(x >> 32);                    // trainer spec and first pieces are
        }
        bad += try_corrupt(copy, len, &loaded) != 0;
    }
    CHECK_INT(bad, 0);
    CHECK(loaded > 0);  // some damage (e.g. in a score) leaves a loadable model
    free(copy);
    free(data);
}

TEST(clear_errors_for_bad_files) {
    char err[ERR_LEN];
    Tokenizer t;
    CHECK_INT(tokenizer_load(&t, "/nonexistent/tokenizer.model", err), -1);
    CHECK_CONTAINS(err, "/nonexistent/tokenizer.model: cannot open");
    char path[] = "/tmp/spm_bad_XXXXXX";
    int fd = mkstemp(path);
    // field 1 (pieces) claims 100 bytes but the file ends: a precise offset and reason
    CHECK_INT(write(fd, "\x0a\x64\x0a\x01", 4), 4);
    close(fd);
    CHECK_INT(tokenizer_load(&t, path, err), -1);
    CHECK_CONTAINS(err, "offset 0: field 1 claims 100 bytes, 2 remain");
    fd = open(path, O_WRONLY | O_TRUNC);
    CHECK_INT(write(fd, "", 0), 0);
    close(fd);
    CHECK_INT(tokenizer_load(&t, path, err), -1);
    CHECK_CONTAINS(err, "no pieces");
    unlink(path);
}

int main(int argc, char **argv) {
    data_dir = test_tokenizer_dir(argc, argv);
    RUN(v1_layout_and_golden_encode);
    RUN(v3_v7_layout_and_user_defined_pieces);
    RUN(malformed_utf8_follows_sentencepiece);
    RUN(decode_drops_control_and_checks_range);
    RUN(version_from_content_when_name_has_none);
    RUN(truncated_and_corrupt_models_fail_cleanly);
    RUN(clear_errors_for_bad_files);
    return test_summary();
}
