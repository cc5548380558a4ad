// test_safetensors.c: the safetensors reader and writer.
//
// Lying headers are written byte by byte here and must be refused with a message that
// names the file and the tensor. Interoperability with the reference implementation (the
// `safetensors` Python package) is checked by test/test_safetensors_python.sh, which calls
// this program with --dump FILE (print what we read) and --write FILE (write a known file).
#include <stdint.h>
#include <unistd.h>

#include "../train/safetensors.h"
#include "test.h"

static char tmp_path[64];

// Writes an 8-byte length, the header text, and `data_len` bytes of data to a temp file.
static const char *write_raw(uint64_t header_len, const char *header, size_t data_len) {
    snprintf(tmp_path, sizeof(tmp_path), "/tmp/st_test_XXXXXX");
    int fd = mkstemp(tmp_path);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(header_len >> (8 * i));
    size_t hl = strlen(header);
    char *zeros = calloc(data_len + 1, 1);
    int ok = write(fd, len8, 8) == 8 && write(fd, header, hl) == (ssize_t)hl &&
             write(fd, zeros, data_len) == (ssize_t)data_len;
    free(zeros);
    close(fd);
    return ok ? tmp_path : "";
}

static void expect_refused(const char *header, size_t data_len, const char *want) {
    SafeTensors st;
    char err[ERR_LEN] = "";
    const char *path = write_raw(strlen(header), header, data_len);
    CHECK_INT(st_open(&st, path, err), -1);
    CHECK_CONTAINS(err, path);
    CHECK_CONTAINS(err, want);
    unlink(path);
}

TEST(lying_headers_are_refused) {
    // offsets past the end of the buffer
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
                   "tensor 'a': data_offsets end at 16, past the 8-byte buffer");
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16,
                   "tensor 'a': data_offsets span 16 bytes but F32 of this shape needs 8");
    // overlapping ranges
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap");
    // a hole, and bytes that belong to nobody
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "tensor 'a': a hole");
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "4 bytes after the last tensor");
    // dtype and shape that do not match the byte count
    expect_refused("{\"w\":{\"dtype\":\"BF16\",\"shape\":[3,3],\"data_offsets\":[0,36]}}", 36,
                   "tensor 'w': data_offsets span 36 bytes but BF16 of this shape needs 18");
    expect_refused("{\"w\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1, "unsupported dtype \"Q4\"");
    expect_refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0] is not a size");
    expect_refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4, "overflows");
    expect_refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "not [BEGIN, END]");
    expect_refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "tensor 'w' appears twice");
    // not JSON / junk after the JSON / not an object
    expect_refused("{\"w\":", 4, "not valid JSON");
    expect_refused("{}  x   ", 0, "other than space padding");
    expect_refused("[1, 2]", 0, "does not start with '{'");
}

TEST(huge_or_lying_header_length) {
    SafeTensors st;
    char err[ERR_LEN];
    const char *path = write_raw(200000000ull, "{}", 0);  // over the format's 100 MB limit
    CHECK_INT(st_open(&st, path, err), -1);
    CHECK_CONTAINS(err, "exceeds the format's limit");
    unlink(path);
    path = write_raw(1000, "{}", 0);  // claims more header than the file has
    CHECK_INT(st_open(&st, path, err), -1);
    CHECK_CONTAINS(err, "runs past the end");
    unlink(path);
    path = write_raw(0, "", 0);
    CHECK_INT(truncate(path, 5), 0);
    CHECK_INT(st_open(&st, path, err), -1);
    CHECK_CONTAINS(err, "too short");
    unlink(path);
    CHECK_INT(st_open(&st, "/nonexistent/model.safetensors", err), -1);
    CHECK_CONTAINS(err, "cannot open");
}

TEST(write_then_read) {
    float a[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
    uint16_t b[2] = {0x3f80, 0xc000};  // bf16 1.0, -2.0
    uint8_t c[3] = {1, 2, 255};
    StWrite w[] = {
        {"layer.0.weight", ST_F32, 2, {2, 3}, a},
        {"scale", ST_BF16, 1, {2}, b},
        {"codes \"quoted\"", ST_U8, 1, {3}, c},
        {"empty", ST_F32, 2, {0, 4}, a},
        {"scalar", ST_F32, 0, {0}, a},
    };
    const char *keys[] = {"format"}, *vals[] = {"pt"};
    char path[] = "/tmp/st_rt_XXXXXX", err[ERR_LEN];
    close(mkstemp(path));
    CHECK_INT(st_write(path, w, 5, keys, vals, 1, err), 0);
    SafeTensors st;
    CHECK_INT(st_open(&st, path, err), 0);
    CHECK_INT(st.n_tensors, 5);
    CHECK_STR(st.metadata_json, "{\"format\":\"pt\"}");
    const StTensor *t = st_find(&st, "layer.0.weight");
    CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    CHECK(t && memcmp(t->data, a, sizeof(a)) == 0);
    t = st_find(&st, "codes \"quoted\"");
    CHECK(t && t->nbytes == 3 && memcmp(t->data, c, 3) == 0);
    t = st_find(&st, "empty");
    CHECK(t && t->numel == 0 && t->nbytes == 0);
    t = st_find(&st, "scalar");
    CHECK(t && t->ndim == 0 && t->numel == 1 && memcmp(t->data, a, 4) == 0);
    CHECK(st_find(&st, "missing") == NULL);
    st_close(&st);
    unlink(path);
}

// --dump FILE: one line per tensor, "name dtype [shape] fnv1a64-of-bytes", sorted by name by
// the caller; --write FILE: the fixed file the Python side checks.
static int dump(const char *path) {
    SafeTensors st;
    char err[ERR_LEN];
    if (st_open(&st, path, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    for (int i = 0; i < st.n_tensors; i++) {
        const StTensor *t = &st.tensors[i];
        uint64_t h = 1469598103934665603ull;
        for (size_t k = 0; k < t->nbytes; k++) h = (h ^ ((const unsigned char *)t->data)[k]) * 1099511628211ull;
        printf("%s %s [", t->name, st_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) printf(d ? ", %lld" : "%lld", (long long)t->shape[d]);
        printf("] %016llx\n", (unsigned long long)h);
    }
    st_close(&st);
    return 0;
}

static int write_known(const char *path) {
    static float f[12];
    static int64_t q[3] = {-1, 0, 1ll << 40};
    static uint16_t h[4] = {0x3c00, 0xbc00, 0x7bff, 0x0001};  // f16 1, -1, 65504, smallest subnormal
    for (int i = 0; i < 12; i++) f[i] = (float)i * 0.5f - 2.0f;
    StWrite w[] = {
        {"model.layers.0.mlp.up_proj.weight", ST_F32, 2, {3, 4}, f},
        {"ints", ST_I64, 1, {3}, q},
        {"halves", ST_F16, 2, {2, 2}, h},
    };
    const char *keys[] = {"format", "written_by"}, *vals[] = {"pt", "persona.c"};
    char err[ERR_LEN];
    if (st_write(path, w, 3, keys, vals, 2, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--dump") == 0) return dump(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--write") == 0) return write_known(argv[2]);
    RUN(lying_headers_are_refused);
    RUN(huge_or_lying_header_length);
    RUN(write_then_read);
    return test_summary();
}
