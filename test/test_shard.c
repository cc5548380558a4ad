// test_shard.c: the token shard format (data/shard.h): round trip, and every kind of
// damage refused with a message naming the file and the check that failed.
//
// Corruption is exhaustive for a small shard: each byte flipped in turn, and the file cut
// at every length, must be refused, and the message must name the part of the file the
// byte belongs to (magic, version, header size, header CRC, or the section whose CRC
// fails). Contents that a buggy writer could have CRC'd correctly (an index going
// backwards, an id outside the vocabulary, a mask byte of 2, a wrong trained count) are
// written with valid CRCs and must be refused by the content checks. The fingerprint is
// FNV-1a 64, checked against the published test vectors of its authors
// (http://www.isthe.com/chongo/tech/comp/fnv/, "FNV test vectors").
#include <stdint.h>
#include <unistd.h>
#include <zlib.h>

#include "../data/shard.h"
#include "test.h"

static char dir[256];

static char *tmp_path(const char *name) {
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return path;
}

static const int32_t conv_ids[3][5] = {{1, 10, 11, 12, 2}, {1, 20, 2}, {1, 30, 31, 32, 33}};
static const uint8_t conv_mask[3][5] = {{0, 0, 1, 1, 1}, {0, 1, 1}, {0, 0, 0, 1, 1}};
static const size_t conv_len[3] = {5, 3, 5};

static ShardHeader meta(uint32_t vocab) {
    ShardHeader h = {.vocab_size = vocab, .fingerprint = 0x1234567890abcdefULL, .chat_format = 3, .weight = 2.5};
    snprintf(h.source, sizeof(h.source), "unit");
    return h;
}

// Writes the three test conversations to path. Returns 0 on success.
static int write_shard(const char *path, uint32_t vocab) {
    ShardWriter w;
    char err[ERR_LEN];
    ShardHeader h = meta(vocab);
    if (shard_writer_open(&w, path, &h, err)) { printf("  %s\n", err); return -1; }
    int rc = 0;
    for (int j = 0; j < 3 && rc == 0; j++) rc = shard_writer_add(&w, conv_ids[j], conv_mask[j], conv_len[j], err);
    if (rc == 0) rc = shard_writer_finish(&w, err);
    if (rc == 0) rc = shard_writer_commit(&w, err);
    if (rc) printf("  %s\n", err);
    shard_writer_close(&w);
    return rc;
}

static uint8_t *slurp(const char *path, size_t *n) {
    char err[ERR_LEN];
    return (uint8_t *)read_file(path, n, err);
}

static void spit(const char *path, const uint8_t *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

// Opens path and expects a refusal whose message names the file and contains want.
static void expect_refused(const char *path, uint64_t fingerprint, const char *want, const char *what) {
    Shard s;
    char err[ERR_LEN] = "";
    if (shard_open(&s, path, fingerprint, err) == 0) {
        printf("  %s: accepted\n", what);
        CHECK(0);
        shard_close(&s);
        return;
    }
    if (!strstr(err, path) || !strstr(err, want)) {
        printf("  %s: message \"%s\" lacks \"%s\"\n", what, err, want);
        CHECK(0);
    }
}

TEST(round_trip) {
    for (int wide = 0; wide < 2; wide++) {
        uint32_t vocab = wide ? 131072 : 32768;
        char *path = tmp_path("rt.bin");
        CHECK_INT(write_shard(path, vocab), 0);
        Shard s;
        char err[ERR_LEN];
        CHECK_INT(shard_open(&s, path, 0x1234567890abcdefULL, err), 0);
        if (!s.map) continue;
        CHECK_INT(s.h.token_bytes, wide ? 4 : 2);
        CHECK_INT(s.h.vocab_size, vocab);
        CHECK_INT(s.h.n_conversations, 3);
        CHECK_INT(s.h.n_tokens, 13);
        CHECK_INT(s.h.n_trained, 7);
        CHECK_INT(s.h.chat_format, 3);
        CHECK(s.h.weight == 2.5);
        CHECK_STR(s.h.source, "unit");
        for (int j = 0; j < 3; j++) {
            CHECK_INT(s.index[j + 1] - s.index[j], conv_len[j]);
            for (size_t i = 0; i < conv_len[j]; i++) {
                CHECK_INT(shard_token(&s, s.index[j] + i), conv_ids[j][i]);
                CHECK_INT(s.mask[s.index[j] + i], conv_mask[j][i]);
            }
        }
        // the file is exactly header + index + tokens + mask
        CHECK_INT(s.map_len, SHARD_HEADER_BYTES + 8 * 4 + (wide ? 4 : 2) * 13 + 13);
        shard_close(&s);
    }
}

TEST(writer_is_atomic) {
    char *path = tmp_path("atomic.bin");
    unlink(path);
    ShardWriter w;
    char err[ERR_LEN];
    ShardHeader h = meta(100);
    CHECK_INT(shard_writer_open(&w, path, &h, err), 0);
    CHECK_INT(shard_writer_add(&w, conv_ids[1], conv_mask[1], 3, err), 0);
    CHECK_INT(shard_writer_finish(&w, err), 0);
    CHECK(access(path, F_OK) != 0);  // not under its name before commit
    CHECK(access(w.tmp_path, F_OK) == 0);
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s", w.tmp_path);
    shard_writer_close(&w);  // abandoned: the temporary file goes too
    CHECK(access(tmp, F_OK) != 0);
    CHECK(access(path, F_OK) != 0);
    // nothing else left in the directory by the scratch files
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A '%s' | grep -v '^rt.bin$')\"", dir);
    CHECK_INT(system(cmd), 0);
}

TEST(writer_refuses_bad_conversations) {
    ShardWriter w;
    char err[ERR_LEN];
    ShardHeader h = meta(100);
    CHECK_INT(shard_writer_open(&w, tmp_path("refuse.bin"), &h, err), 0);
    int32_t big[] = {1, 100};
    uint8_t m[] = {0, 1}, two[] = {0, 2};
    CHECK_INT(shard_writer_add(&w, big, m, 2, err), -1);
    CHECK_CONTAINS(err, "id 100 outside the vocabulary");
    CHECK_INT(shard_writer_add(&w, conv_ids[1], two, 2, err), -1);
    CHECK_CONTAINS(err, "mask value 2");
    CHECK_INT(shard_writer_add(&w, conv_ids[1], m, 0, err), -1);
    CHECK_CONTAINS(err, "empty conversation");
    shard_writer_close(&w);
}

// The part of the file a byte offset belongs to, as the reader's message names it.
static const char *part_of(size_t off, const ShardHeader *h) {
    if (off < 8) return "bad magic";
    if (off < 12) return "shard version";
    if (off < 16) return "header size";
    if (off < SHARD_HEADER_BYTES) return "header CRC32 mismatch";
    if (off < h->section[SHARD_TOKENS].offset) return "index section CRC32 mismatch";
    if (off < h->section[SHARD_MASK].offset) return "tokens section CRC32 mismatch";
    return "mask section CRC32 mismatch";
}

TEST(every_flipped_byte_is_refused) {
    char *good = tmp_path("good.bin");
    CHECK_INT(write_shard(good, 32768), 0);
    Shard s;
    char err[ERR_LEN];
    CHECK_INT(shard_open(&s, good, 0, err), 0);
    ShardHeader h = s.h;
    shard_close(&s);
    size_t n;
    uint8_t *data = slurp(good, &n);
    char *bad = tmp_path("flipped.bin");
    for (size_t off = 0; off < n; off++) {
        for (int bit = 0; bit < 8; bit += 7) {  // the lowest and the highest bit
            data[off] ^= (uint8_t)(1u << bit);
            spit(bad, data, n);
            char what[64];
            snprintf(what, sizeof(what), "byte %zu bit %d", off, bit);
            expect_refused(bad, 0, part_of(off, &h), what);
            data[off] ^= (uint8_t)(1u << bit);
        }
    }
    free(data);
}

TEST(every_truncation_is_refused) {
    char *good = tmp_path("good.bin");
    CHECK_INT(write_shard(good, 32768), 0);
    size_t n;
    uint8_t *data = slurp(good, &n);
    char *bad = tmp_path("cut.bin");
    for (size_t len = 0; len < n; len++) {
        spit(bad, data, len);
        char what[64];
        snprintf(what, sizeof(what), "cut at %zu of %zu", len, n);
        expect_refused(bad, 0, len < 8 ? "not a token shard" : "truncated", what);
    }
    uint8_t *longer = xcalloc(n + 1, 1);
    memcpy(longer, data, n);
    spit(bad, longer, n + 1);
    expect_refused(bad, 0, "extra bytes at the end", "one byte appended");
    free(longer);
    free(data);
}

// Rewrites the header CRC (and the section CRCs) of a shard image after an edit, as a
// writer with a bug would produce it.
static void fix_crcs(uint8_t *d) {
    for (int k = 0; k < SHARD_SECTIONS; k++) {
        uint64_t off, size;
        memcpy(&off, d + 136 + 24 * k, 8);
        memcpy(&size, d + 144 + 24 * k, 8);
        uint32_t crc = (uint32_t)crc32(0, d + off, (uInt)size);
        memcpy(d + 152 + 24 * k, &crc, 4);
    }
    uint32_t crc = (uint32_t)crc32(0, d, 252);
    memcpy(d + 252, &crc, 4);
}

TEST(valid_crcs_wrong_contents_are_refused) {
    char *good = tmp_path("good.bin");
    CHECK_INT(write_shard(good, 32768), 0);
    size_t n;
    uint8_t *orig = slurp(good, &n), *d = xmalloc(n);
    char *bad = tmp_path("edited.bin");
    const size_t index = SHARD_HEADER_BYTES, tokens = index + 8 * 4, mask = tokens + 2 * 13;
    struct {
        const char *what, *want;
        size_t off;
        uint8_t value;
    } cases[] = {
        {"version 2", "shard version 2, this program reads version 1", 8, 2},
        {"index going backwards", "conversation 1 is empty or negative", index + 16, 4},
        {"id outside the vocabulary", "id 32778 outside the vocabulary", tokens + 3, 0x80},
        {"mask byte 2", "mask of token 4 is 2", mask + 4, 2},
        {"trained count", "the mask trains 7 tokens, the header says 9", 56, 9},
        {"chat format", "unknown chat format 4", 32, 4},
        {"token width", "token width 4 bytes does not fit vocab size 32768", 16, 4},
        {"reserved byte", "reserved header bytes are not 0", 36, 1},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        memcpy(d, orig, n);
        d[cases[k].off] = cases[k].value;
        fix_crcs(d);
        spit(bad, d, n);
        expect_refused(bad, 0, cases[k].want, cases[k].what);
    }
    free(orig);
    free(d);
}

TEST(other_tokenizer_is_refused) {
    char *good = tmp_path("good.bin");
    CHECK_INT(write_shard(good, 32768), 0);
    expect_refused(good, 0x1234567890abcdeeULL, "made with a different tokenizer", "other fingerprint");
    Shard s;
    char err[ERR_LEN];
    CHECK_INT(shard_open(&s, good, 0x1234567890abcdefULL, err), 0);  // the same one is fine
    shard_close(&s);
}

TEST(fingerprint_is_fnv1a_64) {
    static const struct {
        const char *text;
        uint64_t want;
    } vectors[] = {{"", 0xcbf29ce484222325ULL}, {"a", 0xaf63dc4c8601ec8cULL}, {"foobar", 0x85944171f73967e8ULL}};
    char *path = tmp_path("fnv.txt");
    for (size_t k = 0; k < 3; k++) {
        spit(path, (const uint8_t *)vectors[k].text, strlen(vectors[k].text));
        uint64_t fp = 0;
        char err[ERR_LEN];
        CHECK_INT(shard_fingerprint_file(path, &fp, err), 0);
        CHECK(fp == vectors[k].want);
    }
}

TEST(not_a_shard) {
    expect_refused(tmp_path("missing.bin"), 0, "cannot open", "missing file");
    char *path = tmp_path("text.bin");
    spit(path, (const uint8_t *)"hello, world", 12);
    expect_refused(path, 0, "not a token shard", "a text file");
}

int main(void) {
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/test_shard.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        printf("FAIL mkdtemp %s\n", dir);
        return 1;
    }
    RUN(round_trip);
    RUN(writer_is_atomic);
    RUN(writer_refuses_bad_conversations);
    RUN(every_flipped_byte_is_refused);
    RUN(every_truncation_is_refused);
    RUN(valid_crcs_wrong_contents_are_refused);
    RUN(other_tokenizer_is_refused);
    RUN(fingerprint_is_fnv1a_64);
    RUN(not_a_shard);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("  could not remove %s\n", dir);
    return test_summary();
}
