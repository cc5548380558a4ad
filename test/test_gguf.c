// test_gguf.c: the GGUF reader (train/gguf.h).
//
// Run by test/run.sh: fuzzing. A small valid file is written here byte by byte, then
// thousands of copies with random bytes overwritten, bytes inserted and removed, and every
// truncation, are opened: each must load or be refused with one line that names the file,
// never crash (this runs under AddressSanitizer). The values themselves are checked against
// the `gguf` Python package by test/test_gguf_python.sh, which drives this program:
//   test_gguf --dump FILE    one line per key and tensor, as test/gguf_reference.py prints
//                            what gguf reads (strings in hex, tensors as the CRC32 of their
//                            float32 values after dequantization)
//   test_gguf --check FILE   "ok", or the error on stderr and exit status 1
// and test/test_gguf_model.sh, with the SmolLM2 GGUF that `make venv` installs:
//   test_gguf --model FILE   model_load: "ok" and the config, or the error and exit status 1
//   test_gguf --logits MODEL.gguf FIXTURE   our fp32 logits against transformers' (the
//                            fixture scripts/gguf_model_fixture.py writes): PASS/FAIL lines
#include <stdint.h>
#include <unistd.h>
#include <zlib.h>

#include <math.h>

#include "../train/gguf.h"
#include "../train/model.h"
#include "../train/safetensors.h"
#include "test.h"

static void print_scalar(GgufType t, const GgufKV *kv, uint64_t i) {
    if (t == GGUF_F32 || t == GGUF_F64)
        printf("%.17g", kv->type == GGUF_ARRAY ? gguf_array_float(kv, i) : gguf_scalar(kv));
    else if (t == GGUF_U64)
        printf("%llu", (unsigned long long)(kv->type == GGUF_ARRAY ? gguf_array_int(kv, i) : (int64_t)gguf_scalar(kv)));
    else
        printf("%lld", (long long)(kv->type == GGUF_ARRAY ? gguf_array_int(kv, i) : (int64_t)gguf_scalar(kv)));
}

static void print_hex(const char *s, size_t n) {
    if (!n) printf("-");
    for (size_t i = 0; i < n; i++) printf("%02x", (unsigned char)s[i]);
}

static int dump(const char *path) {
    Gguf g;
    char err[ERR_LEN];
    if (gguf_open(&g, path, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    for (int64_t i = 0; i < g.n_kv; i++) {
        const GgufKV *kv = &g.kv[i];
        printf("kv %s %s ", kv->key, gguf_type_name(kv->type));
        if (kv->type == GGUF_STRING) {
            print_hex((const char *)kv->data, kv->count);
        } else if (kv->type == GGUF_ARRAY) {
            printf("%s %llu", gguf_type_name(kv->elem), (unsigned long long)kv->count);
            for (uint64_t k = 0; kv->elem != GGUF_ARRAY && k < kv->count; k++) {
                printf(" ");
                if (kv->elem == GGUF_STRING) {
                    const char *s;
                    size_t n;
                    gguf_array_string(kv, k, &s, &n);
                    print_hex(s, n);
                } else {
                    print_scalar(kv->elem, kv, k);
                }
            }
        } else if (kv->type == GGUF_U64) {  // beyond int64: print the raw value
            uint64_t u;
            memcpy(&u, kv->data, 8);
            printf("%llu", (unsigned long long)u);
        } else {
            print_scalar(kv->type, kv, 0);
        }
        printf("\n");
    }
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const GgufTensor *t = &g.tensors[i];
        float *x = gguf_tensor_f32(t);
        uLong crc = crc32(crc32(0L, Z_NULL, 0), (const Bytef *)x, (uInt)((size_t)t->numel * sizeof(float)));
        printf("tensor %s %s ", t->name, ggml_type_name(t->type));
        for (int d = 0; d < t->ndim; d++) printf(d ? ",%lld" : "%lld", (long long)t->ne[d]);
        printf(" %lld %08lx\n", (long long)t->numel, (unsigned long)crc);
        free(x);
    }
    gguf_close(&g);
    return 0;
}

static int check(const char *path) {
    Gguf g;
    char err[ERR_LEN];
    if (gguf_open(&g, path, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    gguf_close(&g);
    printf("ok\n");
    return 0;
}

// ---------------------------------------------------------------------------------------
// a small valid file, byte by byte

static void put(ByteBuf *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) bytebuf_push(b, (char)(v >> (8 * i)));
}

static void put_str(ByteBuf *b, const char *s) {
    put(b, strlen(s), 8);
    bytebuf_append(b, s, strlen(s));
}

static void put_tensor(ByteBuf *b, const char *name, int64_t ne0, int64_t ne1, GgmlType type, uint64_t off) {
    put_str(b, name);
    put(b, 2, 4);
    put(b, (uint64_t)ne0, 8);
    put(b, (uint64_t)ne1, 8);
    put(b, type, 4);
    put(b, off, 8);
}

static void small_file(ByteBuf *b) {
    bytebuf_append(b, "GGUF", 4);
    put(b, 3, 4);
    put(b, 3, 8);  // tensors
    put(b, 4, 8);  // keys
    put_str(b, "general.architecture");
    put(b, GGUF_STRING, 4);
    put_str(b, "llama");
    put_str(b, "llama.block_count");
    put(b, GGUF_U32, 4);
    put(b, 2, 4);
    put_str(b, "tokenizer.ggml.tokens");
    put(b, GGUF_ARRAY, 4);
    put(b, GGUF_STRING, 4);
    put(b, 3, 8);
    put_str(b, "a");
    put_str(b, "");
    put_str(b, "Ġthe");
    put_str(b, "nested");
    put(b, GGUF_ARRAY, 4);
    put(b, GGUF_ARRAY, 4);
    put(b, 1, 8);
    put(b, GGUF_F32, 4);
    put(b, 2, 8);
    put(b, 0x3f800000, 4);
    put(b, 0x40000000, 4);
    put_tensor(b, "q8", 32, 2, GGML_Q8_0, 0);     // 68 bytes
    put_tensor(b, "q4k", 256, 1, GGML_Q4_K, 96);  // 144 bytes
    put_tensor(b, "f16", 32, 1, GGML_F16, 256);   // 64 bytes
    while (b->len % 32) bytebuf_push(b, 0);
    for (int i = 0; i < 320; i++) bytebuf_push(b, (char)(i * 37 % 251 & 0x3b));  // finite halves
}

static const char *write_tmp(const ByteBuf *b) {
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/gguf_test_XXXXXX");
    int fd = mkstemp(path);
    int ok = fd >= 0 && write(fd, b->data, b->len) == (ssize_t)b->len;
    if (fd >= 0) close(fd);
    return ok ? path : "";
}

// Opens a file: it must either load (and then every tensor dequantizes) or fail with one
// line naming the file. Returns 1 when it loaded.
static int open_one(const ByteBuf *b) {
    const char *path = write_tmp(b);
    Gguf g;
    char err[ERR_LEN] = "";
    int rc = gguf_open(&g, path, err), loaded = rc == 0;
    if (rc == 0) {
        for (int64_t i = 0; i < g.n_tensors; i++) free(gguf_tensor_f32(&g.tensors[i]));
        gguf_close(&g);
    } else {
        CHECK(strncmp(err, path, strlen(path)) == 0);
        CHECK(strchr(err, '\n') == NULL);
        CHECK(strlen(err) > strlen(path) + 2);
    }
    unlink(path);
    return loaded;
}

TEST(small_file_loads) {
    ByteBuf b = {0};
    small_file(&b);
    const char *path = write_tmp(&b);
    Gguf g;
    char err[ERR_LEN] = "";
    CHECK_INT(gguf_open(&g, path, err), 0);
    if (!g.map) {
        printf("  %s\n", err);
    } else {
        int64_t blocks;
        uint64_t n;
        CHECK_INT(gguf_get_int(&g, "llama.block_count", &blocks, err), 0);
        CHECK_INT(blocks, 2);
        const GgufKV *tok = gguf_get_array(&g, "tokenizer.ggml.tokens", GGUF_STRING, &n, err);
        CHECK(tok != NULL && n == 3);
        const char *s;
        size_t len;
        if (tok) gguf_array_string(tok, 2, &s, &len);
        CHECK(tok && len == 5 && memcmp(s, "Ġthe", 5) == 0);
        CHECK_INT(gguf_get_int(&g, "general.architecture", &blocks, err), -1);
        CHECK_CONTAINS(err, "metadata 'general.architecture': is STRING, expected an integer");
        CHECK(gguf_tensor(&g, "q4k") && gguf_tensor(&g, "q4k")->nbytes == 144);
        gguf_close(&g);
    }
    unlink(path);
    bytebuf_free(&b);
}

TEST(every_truncation_is_refused) {
    ByteBuf b = {0};
    small_file(&b);
    int loaded = 0;
    for (size_t cut = 0; cut < b.len; cut++) {
        ByteBuf t = {0};
        bytebuf_append(&t, b.data, cut);
        loaded += open_one(&t);
        bytebuf_free(&t);
    }
    // only cuts inside the last tensor's slack can load: none here, the data ends the file
    CHECK_INT(loaded, 0);
    bytebuf_free(&b);
}

TEST(fuzzed_files_load_or_are_refused) {
    ByteBuf b = {0};
    small_file(&b);
    uint64_t rng = 16;
    int loaded = 0, runs = 3000;
    for (int k = 0; k < runs; k++) {
        ByteBuf t = {0};
        bytebuf_append(&t, b.data, b.len);
        int edits = 1 + (int)rng_below(&rng, 4);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)rng_below(&rng, t.len);
            uint64_t kind = rng_below(&rng, 4);
            if (kind == 0) {  // a random byte
                t.data[at] = (char)rng_below(&rng, 256);
            } else if (kind == 1) {  // an extreme byte, as in counts and lengths near 2^64
                t.data[at] = (char)(rng_below(&rng, 2) ? 0xff : 0x80);
            } else if (kind == 2 && t.len > 1) {  // a byte removed
                memmove(t.data + at, t.data + at + 1, t.len - at - 1);
                t.len--;
            } else {  // a byte inserted
                bytebuf_push(&t, 0);
                memmove(t.data + at + 1, t.data + at, t.len - at - 1);
                t.data[at] = (char)rng_below(&rng, 256);
            }
        }
        loaded += open_one(&t);
        bytebuf_free(&t);
    }
    printf("  %d of %d fuzzed files loaded, the rest were refused\n", loaded, runs);
    CHECK(loaded > 0 && loaded < runs);
    bytebuf_free(&b);
}

// Our logits for each sequence of the fixture: the sampled columns within tol of transformers'
// (max |ours - ref| / max |ref| over the sequence) and the log-sum-exp over the whole
// vocabulary within tol of its reference (absolute: it is about 10, so relative too). The
// sequences go through the model in one call, packed as training packs conversations
// (positions restarting at 0, attention kept inside each): one pass over the 30 layers
// instead of one per sequence, and the packing itself checked against separate runs.
static int logits(const char *model_path, const char *fixture, double tol) {
    Model m;
    SafeTensors st;
    char err[ERR_LEN];
    if (model_load(&m, model_path, 0, err) || st_open(&st, fixture, err)) {
        printf("FAIL gguf_model_logits_loaded\n  %s\n", err);
        return 1;
    }
    const StTensor *cols = st_find(&st, "columns"), *ids[8], *ref[8], *lse[8];
    int V = m.c.vocab_size, C = cols ? (int)cols->numel : 0, n_seq = 0, T = 0, start[9] = {0};
    for (; cols && n_seq < 8; n_seq++) {
        char name[32];
        snprintf(name, sizeof(name), "ids_%d", n_seq);
        ids[n_seq] = st_find(&st, name);
        snprintf(name, sizeof(name), "logits_%d", n_seq);
        ref[n_seq] = st_find(&st, name);
        snprintf(name, sizeof(name), "lse_%d", n_seq);
        lse[n_seq] = st_find(&st, name);
        if (!ids[n_seq] || !ref[n_seq] || !lse[n_seq]) break;
        start[n_seq + 1] = T += (int)ids[n_seq]->numel;
    }
    int32_t *tok = xmalloc((size_t)(T ? T : 1) * sizeof(int32_t)), *pos = xmalloc((size_t)(T ? T : 1) * sizeof(int32_t)),
            *seg = xmalloc((size_t)(T ? T : 1) * sizeof(int32_t)), *tgt = xcalloc((size_t)(T ? T : 1), sizeof(int32_t));
    float *w = xcalloc((size_t)(T ? T : 1), sizeof(float)), *out = xmalloc((size_t)(T ? T : 1) * V * sizeof(float)),
          *got = xmalloc((size_t)(T ? T : 1) * (C ? C : 1) * sizeof(float));
    for (int n = 0; n < n_seq; n++)
        for (int t = start[n]; t < start[n + 1]; t++) {
            tok[t] = ((const int32_t *)ids[n]->data)[t - start[n]];
            pos[t] = t - start[n];
            seg[t] = n;
        }
    ModelInput in = {T, tok, pos, seg, tgt, w};
    model_step(&m, &in, 1.0f, 0, out);
    const int32_t *c = cols ? cols->data : NULL;
    for (int n = 0; n < n_seq; n++) {
        int S = start[n + 1] - start[n];
        double lse_err = 0;
        for (int t = 0; t < S; t++) {
            const float *row = out + (size_t)(start[n] + t) * V;
            for (int k = 0; k < C; k++) got[(size_t)t * C + k] = row[c[k]];
            double mx = row[0], sum = 0;
            for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
            for (int v = 0; v < V; v++) sum += exp(row[v] - mx);
            double e = fabs(mx + log(sum) - ((const float *)lse[n]->data)[t]);
            lse_err = e > lse_err ? e : lse_err;
        }
        double rel = max_rel_error(got, ref[n]->data, (size_t)S * C);
        printf("%s gguf_model_logits_sequence_%d (%d tokens): logits error %.2e, log-sum-exp error %.2e, tol %.0e\n",
               rel <= tol && lse_err <= tol * 10 ? "PASS" : "FAIL", n, S, rel, lse_err, tol);
    }
    if (n_seq == 0) printf("FAIL gguf_model_logits_fixture (no sequences in %s)\n", fixture);
    free(tok), free(pos), free(seg), free(tgt), free(w), free(out), free(got);
    st_close(&st);
    model_free(&m);
    return 0;
}

static int check_model(const char *path) {
    Model m;
    char err[ERR_LEN], desc[512];
    if (model_load(&m, path, 1, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    config_describe(&m.c, desc, sizeof(desc));
    printf("ok %s, tied %d\n", desc, m.c.tie_word_embeddings);
    model_free(&m);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--model") == 0) return check_model(argv[2]);
    if (argc == 4 && strcmp(argv[1], "--logits") == 0) return logits(argv[2], argv[3], 1e-4);
    if (argc == 3 && strcmp(argv[1], "--dump") == 0) return dump(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--check") == 0) return check(argv[2]);
    RUN(small_file_loads);
    RUN(every_truncation_is_refused);
    RUN(fuzzed_files_load_or_are_refused);
    return test_summary();
}
