// test_export.c: the GGUF writer (train/gguf_write.h) and the float conversions it uses.
//
// Run by test/run.sh: the writer's contract (a file our reader opens with every key, type and
// tensor as written, data aligned; a wrong tensor size or a missing tensor refused; abort
// leaves nothing behind), and fp16 rounding checked exhaustively against its definition:
// every one of the 63,488 finite halfs converts back to itself, every midpoint between two
// neighbours goes to the even one, the first value past 65504's midpoint to infinity. The
// bytes are checked against the `gguf` package by test/test_export.sh, which drives:
//   test_export --quant-cases OUT   awkward float32 values and what ggml_quantize makes of
//                                   them as F16, BF16 and Q8_0 (test/export_check.py quant
//                                   compares them with gguf.quants.quantize)
//   test_export --logits LABEL MODEL[:ADAPTER] FIXTURE NAME TOL
//                                   our float32 logits (model_load, + the PEFT adapter) of
//                                   the fixture's NAME.ids against NAME.logits (what
//                                   transformers computed from a GGUF file we wrote; only the
//                                   vocabulary ids NAME.columns when it has them); TOL is
//                                   a number, or rounding*K: K times NAME.rounding (how far
//                                   the rounding of the file's type moved torch's own logits)
//                                   plus 1e-5. Prints PASS/FAIL LABEL with the error.
//   test_export --roundtrip LABEL MODEL_A MODEL_B T TOL
//                                   our logits of two models (MODEL[:ADAPTER]: a directory, a
//                                   GGUF file) on the same T random tokens, within TOL
//   test_export --logits-of MODEL[:ADAPTER] ID,ID,... OUT
//                                   our logits of those tokens, "logits" [T, V] in OUT (for
//                                   scripts/llama_cpp_check.py)
#include <math.h>
#include <unistd.h>

#include "../common/half.h"
#include "../train/gguf.h"
#include "../train/gguf_write.h"
#include "../train/model.h"
#include "../train/peft_adapter.h"
#include "../train/safetensors.h"
#include "test.h"

static char dir[] = "/tmp/test_export.XXXXXX";

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

TEST(f16_round_trips_every_finite_half) {
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;  // inf, NaN
        if (f32_to_f16(f16_to_f32((uint16_t)h)) != h) bad++;
    }
    CHECK_INT(bad, 0);
}

TEST(f16_midpoints_go_to_even_and_overflow_to_inf) {
    int bad = 0;
    for (uint32_t h = 0; h < 0x7bff; h++) {  // each pair of neighbouring positive halfs
        double lo = f16_to_f32((uint16_t)h), hi = f16_to_f32((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2);  // exact in float32
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (f32_to_f16(mid) != even || f32_to_f16(-mid) != (even | 0x8000)) bad++;
        // a float32 ulp either side of the midpoint rounds to the nearer neighbour
        uint32_t u;
        memcpy(&u, &mid, 4);
        if (f32_to_f16(from_bits(u - 1)) != h || f32_to_f16(from_bits(u + 1)) != h + 1) bad++;
    }
    CHECK_INT(bad, 0);
    CHECK_INT(f32_to_f16(65519.996f), 0x7bff);
    CHECK_INT(f32_to_f16(65520.0f), 0x7c00);  // the midpoint to 2^16 rounds to even: infinity
    CHECK_INT(f32_to_f16(INFINITY), 0x7c00);
    CHECK_INT(f32_to_f16(-1e30f), 0xfc00);
    CHECK_INT(f32_to_f16(0x1p-25f), 0);        // half of the smallest subnormal: to even 0
    CHECK_INT(f32_to_f16(0x1.000002p-25f), 1);
    CHECK((f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (f32_to_f16(NAN) & 0x3ff));
}

// A file with one key of each written type and three tensors, read back by gguf.c.
TEST(written_file_reads_back) {
    char path[256], err[ERR_LEN];
    snprintf(path, sizeof(path), "%s/a.gguf", dir);
    GgufWriter w;
    CHECK(gguf_writer_open(&w, path, err) == 0);
    gguf_add_string(&w, "s", "llama", 5);
    gguf_add_u32(&w, "u", 4000000000u);
    gguf_add_f32(&w, "f", 1e-5f);
    gguf_add_bool(&w, "b", 1);
    int32_t ints[3] = {-1, 0, 7};
    float floats[2] = {-1000.0f, 0.5f};
    gguf_add_array(&w, "ai", GGUF_I32, ints, 3);
    gguf_add_array(&w, "af", GGUF_F32, floats, 2);
    gguf_add_string_array(&w, "as", 2);
    gguf_add_array_string(&w, "a b", 3);
    gguf_add_array_string(&w, "", 0);
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = (float)(i - 20) / 7.0f;
    int64_t ne1[1] = {3}, ne2[2] = {32, 2}, ne3[2] = {2, 5};
    gguf_add_tensor_info(&w, "v", GGML_F32, 1, ne1);
    gguf_add_tensor_info(&w, "q", GGML_Q8_0, 2, ne2);
    gguf_add_tensor_info(&w, "h", GGML_F16, 2, ne3);
    uint8_t q[68], h[20];
    ggml_quantize(GGML_Q8_0, x, q, 64);
    ggml_quantize(GGML_F16, x, h, 10);
    CHECK(gguf_write_header(&w, err) == 0);
    CHECK(gguf_write_tensor(&w, x, 12, err) == 0);
    CHECK(gguf_write_tensor(&w, q, 68, err) == 0);
    CHECK(gguf_write_tensor(&w, h, 20, err) == 0);
    CHECK(gguf_writer_finish(&w, err) == 0);
    Gguf g;
    if (gguf_open(&g, path, err)) {
        printf("  %s\n", err);
        CHECK(0);
        return;
    }
    const char *s;
    size_t n;
    int64_t v;
    double d;
    int b;
    uint64_t count;
    CHECK(gguf_get_string(&g, "s", &s, &n, err) == 0 && n == 5 && !memcmp(s, "llama", 5));
    CHECK(gguf_get_int(&g, "u", &v, err) == 0 && v == 4000000000LL && gguf_find(&g, "u")->type == GGUF_U32);
    CHECK(gguf_get_float(&g, "f", &d, err) == 0 && d == (double)1e-5f);
    CHECK(gguf_get_bool(&g, "b", &b, err) == 0 && b == 1);
    const GgufKV *ai = gguf_get_array(&g, "ai", GGUF_I32, &count, err);
    CHECK(ai && count == 3 && gguf_array_int(ai, 0) == -1 && gguf_array_int(ai, 2) == 7);
    const GgufKV *af = gguf_get_array(&g, "af", GGUF_F32, &count, err);
    CHECK(af && count == 2 && gguf_array_float(af, 0) == -1000.0 && gguf_array_float(af, 1) == 0.5);
    const GgufKV *as = gguf_get_array(&g, "as", GGUF_STRING, &count, err);
    CHECK(as && count == 2);
    if (as) {
        gguf_array_string(as, 0, &s, &n);
        CHECK(n == 3 && !memcmp(s, "a b", 3));
        gguf_array_string(as, 1, &s, &n);
        CHECK(n == 0);
    }
    CHECK_INT(g.n_tensors, 3);
    CHECK_INT(g.data_offset % 32, 0);
    for (int64_t i = 0; i < g.n_tensors; i++) CHECK_INT(g.tensors[i].offset % 32, 0);
    const GgufTensor *tv = gguf_tensor(&g, "v"), *tq = gguf_tensor(&g, "q"), *th = gguf_tensor(&g, "h");
    CHECK(tv && tq && th && tq->type == GGML_Q8_0 && tq->ne[0] == 32 && tq->ne[1] == 2 && th->ne[1] == 5);
    if (tv && tq && th) {
        float *fv = gguf_tensor_f32(tv), *fq = gguf_tensor_f32(tq), *fh = gguf_tensor_f32(th);
        CHECK(!memcmp(fv, x, 12));
        double worst = 0;  // Q8_0: within half a step (d/2 = max|x|/254) of each value
        for (int i = 0; i < 64; i++) worst = fmax(worst, fabs(fq[i] - x[i]));
        CHECK(worst <= (44.0 / 7.0) / 254.0 * 1.01);
        for (int i = 0; i < 10; i++) CHECK(fh[i] == f16_to_f32(f32_to_f16(x[i])));
        free(fv), free(fq), free(fh);
    }
    gguf_close(&g);
    unlink(path);
}

TEST(wrong_sizes_and_missing_tensors_are_refused_and_abort_cleans_up) {
    char path[256], err[ERR_LEN];
    snprintf(path, sizeof(path), "%s/b.gguf", dir);
    GgufWriter w;
    CHECK(gguf_writer_open(&w, path, err) == 0);
    char tmp[300];
    snprintf(tmp, sizeof(tmp), "%s", w.tmp);
    CHECK(access(tmp, F_OK) == 0 && access(path, F_OK) != 0);
    int64_t ne[1] = {4};
    float x[4] = {0};
    gguf_add_tensor_info(&w, "a", GGML_F32, 1, ne);
    gguf_add_tensor_info(&w, "b", GGML_F32, 1, ne);
    CHECK(gguf_write_header(&w, err) == 0);
    CHECK(gguf_write_tensor(&w, x, 8, err) != 0 && strstr(err, "8 bytes where the plan says 16"));
    CHECK(gguf_write_tensor(&w, x, 16, err) == 0);
    CHECK(gguf_writer_finish(&w, err) != 0 && strstr(err, "1 of 2 tensors written"));
    gguf_writer_abort(&w);
    CHECK(access(tmp, F_OK) != 0 && access(path, F_OK) != 0);
    snprintf(path, sizeof(path), "%s/no/such/dir/c.gguf", dir);
    CHECK(gguf_writer_open(&w, path, err) != 0 && strstr(err, "cannot create a temporary file beside it"));
}

// ---------------------------------------------------------------------------------------
// the modes test/test_export.sh drives

static int quant_cases(const char *out) {
    enum { N = 32 * 40 };
    static float x[N];
    static uint16_t h[N], b16[N];
    static uint8_t q[N / 32 * 34];
    uint64_t rng = 7;
    int n = 0;
    // f16 and bf16: midpoints and their neighbours across the exponent range, the
    // subnormal and overflow edges, zeros and infinities
    for (uint32_t hh = 0x0001; hh < 0x7c00 && n < 32 * 20; hh += 0x0199) {
        float a = f16_to_f32((uint16_t)hh), c = f16_to_f32((uint16_t)(hh + 1));
        float mid = (float)(((double)a + c) / 2);
        uint32_t u;
        memcpy(&u, &mid, 4);
        x[n++] = mid, x[n++] = from_bits(u + 1), x[n++] = -from_bits(u - 1);
    }
    const float edges[] = {65504.0f, 65519.996f, 65520.0f, 1e9f, -INFINITY, INFINITY, 0.0f, -0.0f, 0x1p-24f,
                           0x1p-25f, 0x1.8p-25f, 0x1p-14f, 0x1.ffcp-15f, 1.00390625f, 1.01171875f, -3.0e-41f};
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) x[n++] = edges[i];
    while (n % 32) x[n++] = 1.0f;
    // Q8_0: an all-zero block, blocks whose scaled values hit .5 exactly, mixed signs, a
    // negative maximum, tiny and huge scales, then random normal-ish blocks
    n += 32;  // zeros
    for (int i = 0; i < 32; i++) x[n + i] = (float)(i - 16) * 0.5f;           // d = 8/127: x*id not exact
    n += 32;
    for (int i = 0; i < 32; i++) x[n + i] = i == 5 ? -127.0f : (float)i + 0.5f;  // d = 1: exact .5 ties
    n += 32;
    for (int i = 0; i < 32; i++) x[n + i] = (i % 2 ? -1e-30f : 1e-30f) * (float)(i + 1);
    n += 32;
    for (int i = 0; i < 32; i++) x[n + i] = (i % 3 ? 3e4f : -6e4f) / (float)(i + 1);
    n += 32;
    while (n < N) x[n++] = (float)((rng_uniform(&rng) - 0.5) * exp2(rng_uniform(&rng) * 20 - 10));
    ggml_quantize(GGML_F16, x, h, N);
    ggml_quantize(GGML_BF16, x, b16, N);
    // infinities have no Q8_0 form: those blocks are quantized from finite copies
    static float finite[N];
    for (int i = 0; i < N; i++) finite[i] = isinf(x[i]) ? 0.0f : x[i];
    ggml_quantize(GGML_Q8_0, finite, q, N);
    StWrite w[4] = {{"x", ST_F32, 1, {N}, x},
                    {"f16", ST_U16, 1, {N}, h},
                    {"bf16", ST_U16, 1, {N}, b16},
                    {"q8_0", ST_U8, 1, {N / 32 * 34}, q}};
    char err[ERR_LEN];
    if (st_write(out, w, 4, NULL, NULL, 0, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    return 0;
}

// MODEL[:ADAPTER]: a model directory or GGUF file, and optionally a PEFT adapter on it.
static int load(Model *m, const char *spec, char *err) {
    char path[4096];
    snprintf(path, sizeof(path), "%s", spec);
    char *adapter = strchr(path, ':');
    if (adapter) *adapter++ = '\0';
    if (model_load(m, path, 0, err)) return -1;
    if (adapter && peft_adapter_load(m, adapter, err)) {
        model_free(m);
        return -1;
    }
    return 0;
}

// The [T, V] logits of one sequence starting at position 0 (a new array).
static float *forward(Model *m, const int32_t *ids, int T) {
    int32_t *pos = xmalloc((size_t)T * sizeof(int32_t)), *zero = xcalloc((size_t)T, sizeof(int32_t));
    float *w = xcalloc((size_t)T, sizeof(float)), *out = xmalloc((size_t)T * m->c.vocab_size * sizeof(float));
    for (int t = 0; t < T; t++) pos[t] = t;
    ModelInput in = {T, ids, pos, zero, zero, w};
    model_step(m, &in, 1.0f, 0, out);
    free(pos), free(zero), free(w);
    return out;
}

// The fixture's tensor NAME.WHAT (NULL when it has none).
static const StTensor *fixture_tensor(const SafeTensors *st, const char *name, const char *what) {
    char key[160];
    snprintf(key, sizeof(key), "%s.%s", name, what);
    return st_find(st, key);
}

static int logits(const char *label, const char *model, const char *fixture, const char *name, const char *tol_spec) {
    char err[ERR_LEN];
    Model m;
    SafeTensors st;
    if (load(&m, model, err)) {
        printf("FAIL %s\n  %s\n", label, err);
        return 0;
    }
    if (st_open(&st, fixture, err)) {
        printf("FAIL %s\n  %s\n", label, err);
        model_free(&m);
        return 0;
    }
    const StTensor *ids = fixture_tensor(&st, name, "ids"), *ref = fixture_tensor(&st, name, "logits"),
                   *rounding = fixture_tensor(&st, name, "rounding"), *columns = fixture_tensor(&st, name, "columns");
    int V = m.c.vocab_size, T = ids ? (int)ids->numel : 0, C = columns ? (int)columns->numel : V;
    double tol = strncmp(tol_spec, "rounding*", 9) == 0 && rounding
                     ? atof(tol_spec + 9) * ((const float *)rounding->data)[0] + 1e-5
                     : atof(tol_spec);
    int bad_column = 0;
    for (int k = 0; columns && k < C; k++) bad_column |= ((const int32_t *)columns->data)[k] >= V;
    if (!ids || !ref || ref->numel != (int64_t)T * C || bad_column || !(tol > 0)) {
        printf("FAIL %s\n  %s: no %s.ids/.logits of %d columns of a vocabulary of %d, or a bad tolerance %s\n", label,
               fixture, name, C, V, tol_spec);
    } else {
        float *out = forward(&m, ids->data, T);
        for (int t = 0; columns && t < T; t++)  // the fixture's columns, packed in place
            for (int k = 0; k < C; k++) out[(size_t)t * C + k] = out[(size_t)t * V + ((const int32_t *)columns->data)[k]];
        double e = max_rel_error(out, ref->data, (size_t)T * C);
        printf("%s %s: logits max relative error %.2e (tol %.1e)\n", e <= tol ? "PASS" : "FAIL", label, e, tol);
        free(out);
    }
    st_close(&st);
    model_free(&m);
    return 0;
}

// Our logits of two models on the same T seeded random tokens.
static int roundtrip(const char *label, const char *a, const char *b, int T, double tol) {
    char err[ERR_LEN];
    Model m[2];
    if (load(&m[0], a, err) || (load(&m[1], b, err) && (model_free(&m[0]), 1))) {
        printf("FAIL %s\n  %s\n", label, err);
        return 0;
    }
    int V = m[0].c.vocab_size;
    int32_t *ids = xmalloc((size_t)T * sizeof(int32_t));
    uint64_t rng = 19;
    for (int t = 0; t < T; t++) ids[t] = (int32_t)rng_below(&rng, (uint64_t)V);
    float *out[2] = {forward(&m[0], ids, T), m[1].c.vocab_size == V ? forward(&m[1], ids, T) : NULL};
    double e = out[1] ? max_rel_error(out[1], out[0], (size_t)T * V) : INFINITY;
    printf("%s %s: logits max relative error %.2e over %d tokens (tol %.1e)\n", e <= tol ? "PASS" : "FAIL", label, e, T, tol);
    for (int k = 0; k < 2; k++) free(out[k]), model_free(&m[k]);
    free(ids);
    return 0;
}

// Our logits of a comma-separated list of ids, written to OUT as "logits" [T, V] (for
// scripts/llama_cpp_check.py, which compares them with llama.cpp's).
static int logits_of(const char *model, const char *list, const char *out_path) {
    char err[ERR_LEN];
    Model m;
    if (load(&m, model, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    int T = 0;
    int32_t *ids = xmalloc((strlen(list) / 2 + 2) * sizeof(int32_t));
    for (const char *p = list; *p; p += *p == ',') ids[T++] = (int32_t)strtol(p, (char **)&p, 10);
    float *out = forward(&m, ids, T);
    StWrite w = {"logits", ST_F32, 2, {T, m.c.vocab_size}, out};
    int rc = st_write(out_path, &w, 1, NULL, NULL, 0, err);
    if (rc) fprintf(stderr, "error: %s\n", err);
    free(out), free(ids);
    model_free(&m);
    return rc ? 2 : 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--quant-cases")) return quant_cases(argv[2]);
    if (argc == 7 && !strcmp(argv[1], "--logits")) return logits(argv[2], argv[3], argv[4], argv[5], argv[6]);
    if (argc == 7 && !strcmp(argv[1], "--roundtrip")) return roundtrip(argv[2], argv[3], argv[4], atoi(argv[5]), atof(argv[6]));
    if (argc == 5 && !strcmp(argv[1], "--logits-of")) return logits_of(argv[2], argv[3], argv[4]);
    if (!mkdtemp(dir)) return 2;
    RUN(f16_round_trips_every_finite_half);
    RUN(f16_midpoints_go_to_even_and_overflow_to_inf);
    RUN(written_file_reads_back);
    RUN(wrong_sizes_and_missing_tensors_are_refused_and_abort_cleans_up);
    rmdir(dir);
    return test_summary();
}
