// fuzz_gguf.c: GGUF files (train/gguf.c), and what the programs read from one: every
// metadata value through the typed getters, every tensor dequantized to float32, the
// byte-level BPE tokenizer (tokenizer/bytelevel.c, then in use), the model's config and the
// model itself (train/gguf_model.c). Seeds: the files the gguf package writes for the tests
// (test/gguf_reference.py: every value and tensor type, broken files, tiny llama models) and
// a small GGUF tokenizer (scripts/fuzz_seeds.py).
#include "../../tokenizer/bytelevel.h"
#include "../../train/gguf.h"
#include "../../train/model.h"
#include "fuzz.h"

// Tensors larger than this are not dequantized (the time goes to small inputs instead).
#define MAX_DEQUANT (1 << 20)

static volatile double sink;  // what is read goes somewhere, so that it is read

static void read_metadata(const Gguf *g) {
    for (int64_t i = 0; i < g->n_kv; i++) {
        const GgufKV *kv = &g->kv[i];
        if (gguf_find(g, kv->key) != kv) abort();
        if (kv->type == GGUF_ARRAY) {
            for (uint64_t j = 0; j < kv->count && j < 4096; j++) {
                if (kv->elem == GGUF_STRING) {
                    const char *s;
                    size_t n;
                    gguf_array_string(kv, j, &s, &n);
                    if (n) sink += (unsigned char)s[n - 1];
                } else if (kv->elem == GGUF_F32 || kv->elem == GGUF_F64) {
                    sink += gguf_array_float(kv, j);
                } else if (kv->elem != GGUF_ARRAY) {
                    sink += (double)gguf_array_int(kv, j);
                }
            }
        } else if (kv->type != GGUF_STRING) {
            sink += gguf_scalar(kv);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[ERR_LEN] = "";
    const char *path = fuzz_file("model.gguf", data, size);
    Gguf g;
    if (gguf_open(&g, path, err)) {
        fuzz_check_message(err);
        return 0;
    }
    read_metadata(&g);
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const GgufTensor *t = &g.tensors[i];
        if (gguf_tensor(&g, t->name) != t) abort();
        if (t->numel <= MAX_DEQUANT) free(gguf_tensor_f32(t));
    }
    ByteLevel *b = bytelevel_from_gguf(&g, err);
    gguf_close(&g);
    if (b) {
        bytelevel_free(b);
        fuzz_use_tokenizer(path);
    } else {
        fuzz_check_message(err);
    }
    ModelConfig c;
    if (gguf_model_config(&c, path, err)) {
        fuzz_check_message(err);
        return 0;
    }
    Model m;
    if (gguf_model_load(&m, path, 0, err)) fuzz_check_message(err);
    else model_free(&m);
    return 0;
}
