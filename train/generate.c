// generate.c: the generation loop over the KV cache (see generate.h).
#include "generate.h"

#include <stdlib.h>

#include "../common/util.h"

const char *stop_reason_text(StopReason r) {
    switch (r) {
    case STOP_EOS: return "end of sequence";
    case STOP_MAX_TOKENS: return "token limit";
    case STOP_CONTEXT: return "context full";
    default: return "interrupted";
    }
}

StopReason generate_with_cache(const Decoder *d, KvCache *cache, const int32_t *prompt, size_t n, int max_new,
                               int32_t eos, const SampleConfig *sc, uint64_t *rng, TokenVec *answer, TokenCallback cb,
                               void *ctx) {
    int V = d->config->vocab_size;
    float *logits = xmalloc((size_t)V * sizeof(float));
    StopReason why = STOP_MAX_TOKENS;
    if (decode_prompt(d, cache, prompt, n, logits)) {
        free(logits);
        return STOP_CONTEXT;
    }
    for (int made = 0; made < max_new; made++) {
        int32_t next = sample_token(logits, V, sc, rng);
        if (next == eos) {
            why = STOP_EOS;
            break;
        }
        tokvec_push(answer, next);
        if (cb && cb(ctx, next)) {
            why = STOP_INTERRUPTED;
            break;
        }
        if (made + 1 == max_new) break;
        DecodeSeq s = {cache, &next, 1};
        if (d->step(d->ctx, &s, 1, logits, 0)) {
            why = STOP_CONTEXT;
            break;
        }
    }
    free(logits);
    return why;
}

StopReason generate(const Model *m, TokenVec *ids, int max_new, int32_t eos_id, float temperature, float top_p,
                    uint64_t *rng, TokenCallback cb, void *ctx) {
    KvCache cache;
    kv_cache_init(&cache, &m->c, (int64_t)ids->len + max_new);
    SampleConfig sc = {temperature, top_p, 0, 0};
    TokenVec answer = {0};
    Decoder d = decoder_cpu(m);
    StopReason why = generate_with_cache(&d, &cache, ids->ids, ids->len, max_new, eos_id, &sc, rng, &answer, cb, ctx);
    if (why == STOP_EOS) tokvec_push(&answer, eos_id);
    for (size_t i = 0; i < answer.len; i++) tokvec_push(ids, answer.ids[i]);
    tokvec_free(&answer);
    kv_cache_free(&cache);
    return why;
}
