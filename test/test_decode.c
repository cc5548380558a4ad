// test_decode.c: KV-cached decoding (train/decode.h, train/generate.h) against the full
// forward pass.
//
// The reference is model_step with logits over the whole sequence (positions 0..T-1, one
// conversation), the forward pass that test_check_fixture.sh compares with transformers.
// A conversation is played as chat plays it: a prompt read in chunks, answers generated
// greedily one token at a time, further turns read on top of the cache, a turn whose
// history changed (re-encoded) rewinding the cache or, when the rolling buffer has
// overwritten what it needs, reading everything again. At every generated position, and at
// every position of every prompt chunk, the cached logits must equal the full forward's
// within 1e-5 of the largest logit (fp32 against fp32, sums in other orders). Models: the
// committed fixtures (window 5 with GQA 4/2 and its PEFT adapter, GQA 6/2 without window,
// Llama 4/4), in float32, bf16 and NF4, and a random model built here with GQA 8/2,
// window 7 and dimensions that take matvec's grouped NF4 path. The conversations run to
// ~110 positions, so a window of 5 or 7 wraps the rolling buffer more than ten times.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/half.h"
#include "../train/decode.h"
#include "../train/generate.h"
#include "../train/model.h"
#include "../train/peft_adapter.h"
#include "test.h"

#define TOL 1e-5

// The logits of the full forward pass over ids[0..T) [T, V].
static float *full_logits(Model *m, const int32_t *ids, int T) {
    int32_t *pos = malloc((size_t)T * 4), *seg = calloc((size_t)T, 4), *tgt = calloc((size_t)T, 4);
    float *w = calloc((size_t)T, 4), *logits = malloc((size_t)T * m->c.vocab_size * 4);
    for (int t = 0; t < T; t++) pos[t] = t;
    ModelInput in = {T, ids, pos, seg, tgt, w};
    model_step(m, &in, 1.0f, 0, logits);
    free(pos), free(seg), free(tgt), free(w);
    return logits;
}

static double worst;  // the largest relative difference seen in the current test

// Cached logits of positions [T - n, T) of ids against the full forward's.
static void check_rows(Model *m, const int32_t *ids, int T, const float *got, int n, const char *what) {
    int V = m->c.vocab_size;
    float *ref = full_logits(m, ids, T);
    for (int r = 0; r < n; r++) {
        double e = max_rel_error(got + (size_t)r * V, ref + (size_t)(T - n + r) * V, (size_t)V);
        worst = e > worst || isnan(e) ? e : worst;
        if (!(e <= TOL)) {
            printf("  %s: position %d of %d: relative difference %.3g\n", what, T - n + r, T, e);
            CHECK(e <= TOL);
            break;
        }
    }
    free(ref);
}

static uint64_t seed = 7;

static int32_t random_token(const Model *m) { return (int32_t)rng_below(&seed, (uint64_t)m->c.vocab_size); }

// Reads `n` new random tokens in chunks of `chunk`, every position's logits checked.
static void read_tokens(Model *m, KvCache *c, int n, int chunk) {
    int V = m->c.vocab_size;
    int32_t *t = malloc((size_t)n * 4);
    float *logits = malloc((size_t)chunk * V * 4);
    for (int i = 0; i < n; i++) t[i] = random_token(m);
    for (int i = 0; i < n; i += chunk) {
        int k = n - i < chunk ? n - i : chunk;
        DecodeSeq s = {c, t + i, k};
        CHECK_INT(decode_forward(m, &s, 1, logits, 1), 0);
        check_rows(m, c->tokens.ids, (int)c->tokens.len, logits, k, "prompt chunk");
    }
    free(t), free(logits);
}

// Greedy answer of n tokens, each step's logits checked.
static void answer(Model *m, KvCache *c, int n) {
    int V = m->c.vocab_size;
    float *logits = malloc((size_t)V * 4);
    DecodeSeq s = {c, NULL, 1};
    for (int i = 0; i < n; i++) {
        int32_t next = i == 0 ? random_token(m) : sample_token(logits, V, &(SampleConfig){0, 1, 0, 0}, &seed);
        s.tokens = &next;
        CHECK_INT(decode_forward(m, &s, 1, logits, 0), 0);
        check_rows(m, c->tokens.ids, (int)c->tokens.len, logits, 1, "generated");
    }
    free(logits);
}

// A conversation of several turns, as chat runs it.
static void conversation(Model *m) {
    KvCache c;
    kv_cache_init(&c, &m->c, 256);
    read_tokens(m, &c, 23, 17);  // system prompt and first user turn: a chunk of matrix products, then 6 rows
    answer(m, &c, 9);
    read_tokens(m, &c, 18, 18);  // the next user turn in one chunk, on top of the cache
    answer(m, &c, 12);
    read_tokens(m, &c, 7, 1);  // one token at a time
    answer(m, &c, 6);
    // the history re-encoded differently 10 tokens back: decode_prompt rewinds (no window)
    // or starts over (the rolling buffer holds less than that), and must give the same logits
    TokenVec ids = {0};
    for (size_t i = 0; i < c.tokens.len; i++) tokvec_push(&ids, c.tokens.ids[i]);
    ids.ids[ids.len - 10] = (ids.ids[ids.len - 10] + 1) % m->c.vocab_size;
    for (int i = 0; i < 9; i++) tokvec_push(&ids, random_token(m));
    float *logits = malloc((size_t)m->c.vocab_size * 4);
    Decoder d = decoder_cpu(m);
    CHECK_INT(decode_prompt(&d, &c, ids.ids, ids.len, logits), 0);
    CHECK_INT(c.tokens.len, ids.len);
    check_rows(m, ids.ids, (int)ids.len, logits, 1, "after a changed history");
    answer(m, &c, 8);
    free(logits);
    tokvec_free(&ids);
    kv_cache_free(&c);
}

static int load(Model *m, const char *dir, int frozen, const char *adapter) {
    char err[ERR_LEN];
    if (model_load(m, dir, frozen, err) || (adapter && peft_adapter_load(m, adapter, err))) {
        printf("  %s\n", err);
        return -1;
    }
    return 0;
}

static void fixture_conversation(const char *dir, int frozen, const char *adapter, int head_bf16) {
    Model m;
    worst = 0;
    if (load(&m, dir, frozen, adapter)) {
        CHECK(0);
        return;
    }
    if (head_bf16) model_head_to_bf16(&m);
    conversation(&m);
    printf("  %s%s%s: largest relative difference %.2g\n", dir, adapter ? " + adapter" : "",
           frozen == FROZEN_NF4 ? " (NF4)" : frozen == FROZEN_BF16 ? " (bf16)" : "", worst);
    model_free(&m);
}

#define FX "test/fixtures/tiny/"

TEST(window_gqa_cached_logits_equal_full_forward) { fixture_conversation(FX "mistral_window", FROZEN_F32, NULL, 0); }
TEST(window_gqa_adapter_cached_logits_equal_full_forward) {
    fixture_conversation(FX "mistral_window", FROZEN_F32, FX "mistral_window/adapter", 0);
}
TEST(window_nf4_adapter_cached_logits_equal_full_forward) {
    fixture_conversation(FX "mistral_window", FROZEN_NF4, FX "mistral_window/adapter", 1);
}
TEST(window_bf16_cached_logits_equal_full_forward) { fixture_conversation(FX "mistral_window", FROZEN_BF16, NULL, 1); }
TEST(no_window_gqa_adapter_cached_logits_equal_full_forward) {
    fixture_conversation(FX "mistral_gqa", FROZEN_F32, FX "mistral_gqa/adapter", 0);
}
TEST(llama_cached_logits_equal_full_forward) { fixture_conversation(FX "llama", FROZEN_NF4, FX "llama/adapter", 0); }

// ---------------------------------------------------------------------------------------
// a random model with GQA 8/2, window 7, head_dim 16 and dimensions in multiples of 32

static float normal(uint64_t *rng, float sd) {
    double u1 = rng_uniform(rng), u2 = rng_uniform(rng);
    return (float)(sqrt(-2.0 * log(u1 + 1e-300)) * cos(6.283185307179586 * u2)) * sd;
}

static float *random_matrix(size_t n, float sd, uint64_t *rng) {
    float *x = malloc(n * 4);
    for (size_t i = 0; i < n; i++) x[i] = normal(rng, sd);
    return x;
}

static void random_model(Model *m, int frozen, int window) {
    memset(m, 0, sizeof(*m));
    ModelConfig *c = &m->c;
    snprintf(c->model_type, sizeof(c->model_type), "mistral");
    c->hidden_size = 128, c->intermediate_size = 256, c->num_hidden_layers = 2, c->num_attention_heads = 8;
    c->num_key_value_heads = 2, c->head_dim = 16, c->vocab_size = 96, c->sliding_window = window;
    c->rms_norm_eps = 1e-5f, c->rope_theta = 10000.0;
    uint64_t rng = 11;
    int H = 128, sizes[N_PROJ][2] = {{128, 128}, {32, 128}, {32, 128}, {128, 128}, {256, 128}, {256, 128}, {128, 256}};
    m->embed = random_matrix((size_t)96 * H, 1.0f, &rng);
    m->head = random_matrix((size_t)96 * H, 0.1f, &rng);
    m->norm = random_matrix(H, 0.1f, &rng);
    for (int i = 0; i < H; i++) m->norm[i] += 1.0f;
    m->layers = calloc(2, sizeof(Layer));
    for (int l = 0; l < 2; l++) {
        Layer *L = &m->layers[l];
        L->ln1 = random_matrix(H, 0.1f, &rng), L->ln2 = random_matrix(H, 0.1f, &rng);
        for (int i = 0; i < H; i++) L->ln1[i] += 1.0f, L->ln2[i] += 1.0f;
        for (int p = 0; p < N_PROJ; p++) {  // large enough that attention is far from uniform
            Linear *x = &L->proj[p];
            x->out = sizes[p][0], x->in = sizes[p][1];
            float *w = random_matrix((size_t)x->out * x->in, 0.25f, &rng);
            if (frozen == FROZEN_NF4) nf4_weight_quantize(&x->q, w, x->out, x->in, 64, 1);
            if (frozen == FROZEN_NF4) free(w);
            else x->w = w;
        }
    }
    model_lora_init(m, (1u << PROJ_Q) | (1u << PROJ_V) | (1u << PROJ_DOWN), 4, 8.0f, 0, 3);
    for (int l = 0; l < 2; l++)
        for (int p = 0; p < N_PROJ; p++) {
            Linear *x = &m->layers[l].proj[p];
            for (int i = 0; x->B && i < x->out * 4; i++) x->B[i] = normal(&rng, 0.1f);
        }
}

static void random_conversation(int frozen, int window) {
    Model m;
    random_model(&m, frozen, window);
    worst = 0;
    conversation(&m);
    printf("  random GQA 8/2, window %d, %s + LoRA: largest relative difference %.2g\n", window,
           frozen == FROZEN_NF4 ? "NF4" : "f32", worst);
    model_free(&m);
}

TEST(gqa_8_2_window_7_nf4_cached_logits_equal_full_forward) { random_conversation(FROZEN_NF4, 7); }
TEST(gqa_8_2_no_window_cached_logits_equal_full_forward) { random_conversation(FROZEN_F32, 0); }

// ---------------------------------------------------------------------------------------
// batching, rewinding, a full context, generate()

// Three sequences stepped together (prompt chunks, long and short, and single tokens mixed
// in one step) get the same bits as each stepped alone: what makes batch answers
// independent of the batch.
TEST(sequences_batched_or_alone_decode_to_the_same_bits) {
    Model m;
    random_model(&m, FROZEN_NF4, 7);
    int V = m.c.vocab_size, lens[3] = {1, 20, 4};  // 20: matrix products, the others matvec
    KvCache together[3], alone[3];
    float *lt = malloc((size_t)3 * V * 4), *la = malloc((size_t)V * 4);
    int32_t toks[3][20];
    for (int s = 0; s < 3; s++) kv_cache_init(&together[s], &m.c, 64), kv_cache_init(&alone[s], &m.c, 64);
    int same = 1;
    for (int step = 0; step < 6; step++) {
        DecodeSeq ds[3];
        for (int s = 0; s < 3; s++) {
            int n = step == 0 ? lens[s] : step == 3 && s == 0 ? 17 : 1 + (step + s) % 2;
            for (int i = 0; i < n; i++) toks[s][i] = random_token(&m);
            ds[s] = (DecodeSeq){&together[s], toks[s], n};
        }
        CHECK_INT(decode_forward(&m, ds, 3, lt, 0), 0);
        for (int s = 0; s < 3; s++) {
            DecodeSeq one = {&alone[s], toks[s], ds[s].n};
            CHECK_INT(decode_forward(&m, &one, 1, la, 0), 0);
            same &= memcmp(la, lt + (size_t)s * V, (size_t)V * 4) == 0;
        }
    }
    CHECK(same);
    for (int s = 0; s < 3; s++) kv_cache_free(&together[s]), kv_cache_free(&alone[s]);
    free(lt), free(la);
    model_free(&m);
}

// The rolling buffer can only step back as far as it still holds what the next query needs.
TEST(rolling_buffer_rewinds_only_what_it_holds) {
    Model m;
    random_model(&m, FROZEN_F32, 7);
    KvCache c;
    kv_cache_init(&c, &m.c, 0);
    read_tokens(&m, &c, 6, 6);
    CHECK_INT(kv_cache_rewind(&c, 2), 0);  // nothing overwritten yet (6 <= 7 positions)
    read_tokens(&m, &c, 20, 4);            // 22 positions: slots hold 15..21
    CHECK_INT(c.allocated, 7);
    CHECK_INT(kv_cache_rewind(&c, 21), 0);   // needs 15..20: still there
    CHECK_INT(kv_cache_rewind(&c, 20), -1);  // needs 14..19: 14 was overwritten by 21
    CHECK_INT(c.tokens.len, 21);
    CHECK_INT(kv_cache_rewind(&c, 0), 0);
    kv_cache_free(&c);
    model_free(&m);
}

// Without a window the context is a hard limit: a step that does not fit computes nothing.
TEST(full_context_refuses_the_step) {
    Model m;
    random_model(&m, FROZEN_F32, 0);
    KvCache c;
    kv_cache_init(&c, &m.c, 10);
    float *logits = malloc((size_t)3 * m.c.vocab_size * 4);
    int32_t t[3] = {1, 2, 3};
    DecodeSeq s = {&c, t, 3};
    for (int i = 0; i < 3; i++) CHECK_INT(decode_forward(&m, &s, 1, logits, 0), 0);
    CHECK_INT(kv_cache_room(&c), 1);
    CHECK_INT(decode_forward(&m, &s, 1, logits, 0), -1);
    CHECK_INT(c.tokens.len, 9);
    s.n = 1;
    CHECK_INT(decode_forward(&m, &s, 1, logits, 0), 0);
    SampleConfig greedy = {0, 1, 0, 0};
    TokenVec answer = {0}, prompt = {0};
    for (size_t i = 0; i < c.tokens.len; i++) tokvec_push(&prompt, c.tokens.ids[i]);
    Decoder d = decoder_cpu(&m);
    CHECK_INT(generate_with_cache(&d, &c, prompt.ids, prompt.len, 5, -1, &greedy, &seed, &answer, NULL, NULL),
              STOP_CONTEXT);
    CHECK_INT(answer.len, 1);
    tokvec_free(&answer), tokvec_free(&prompt);
    kv_cache_free(&c);
    free(logits);
    model_free(&m);
}

// generate(): greedy text equals the argmax of the full forward at every step, and stops
// after the end-of-sequence token.
TEST(generate_greedy_follows_the_full_forward) {
    Model m;
    random_model(&m, FROZEN_NF4, 7);
    int V = m.c.vocab_size;
    TokenVec ids = {0};
    for (int i = 0; i < 12; i++) tokvec_push(&ids, random_token(&m));
    uint64_t rng = 1;
    generate(&m, &ids, 30, -1, 0.0f, 1.0f, &rng, NULL, NULL);
    CHECK_INT(ids.len, 42);
    float *ref = full_logits(&m, ids.ids, (int)ids.len);
    int agree = 1;
    for (int t = 12; t < 42; t++) {
        int32_t best = 0;
        for (int v = 1; v < V; v++)
            if (ref[(size_t)(t - 1) * V + v] > ref[(size_t)(t - 1) * V + best]) best = v;
        agree &= best == ids.ids[t];
    }
    CHECK(agree);
    int32_t eos = ids.ids[20];  // make the 9th generated token the end of sequence
    ids.len = 12;
    generate(&m, &ids, 30, eos, 0.0f, 1.0f, &rng, NULL, NULL);
    CHECK(ids.len <= 21 && ids.ids[ids.len - 1] == eos);
    free(ref);
    tokvec_free(&ids);
    model_free(&m);
}

int main(void) {
    RUN(window_gqa_cached_logits_equal_full_forward);
    RUN(window_gqa_adapter_cached_logits_equal_full_forward);
    RUN(window_nf4_adapter_cached_logits_equal_full_forward);
    RUN(window_bf16_cached_logits_equal_full_forward);
    RUN(no_window_gqa_adapter_cached_logits_equal_full_forward);
    RUN(llama_cached_logits_equal_full_forward);
    RUN(gqa_8_2_window_7_nf4_cached_logits_equal_full_forward);
    RUN(gqa_8_2_no_window_cached_logits_equal_full_forward);
    RUN(sequences_batched_or_alone_decode_to_the_same_bits);
    RUN(rolling_buffer_rewinds_only_what_it_holds);
    RUN(full_context_refuses_the_step);
    RUN(generate_greedy_follows_the_full_forward);
    return test_summary();
}
