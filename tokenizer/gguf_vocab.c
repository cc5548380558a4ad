// gguf_vocab.c: a tokenizer as GGUF tokenizer.ggml.* metadata (see gguf_vocab.h).
#include "gguf_vocab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytelevel.h"
#include "sentencepiece.h"
#include "tekken.h"

enum { TYPE_NORMAL = 1, TYPE_CONTROL = 3, TYPE_UNUSED = 5 };  // GGUF token types

// The tokens: for id < n the family's own (text in *tok, type in types[id]), then padding.
static void put_tokens(GgufWriter *w, const Tokenizer *t, int n, int n_vocab, int32_t *types) {
    gguf_add_string_array(w, "tokenizer.ggml.tokens", (uint64_t)n_vocab);
    ByteBuf b = {0};
    for (int id = 0; id < n_vocab; id++) {
        const char *s = "";
        size_t len = 0;
        b.len = 0;
        if (id >= n) {  // the converter's padding of a vocabulary smaller than the embedding
            char pad[32];
            len = (size_t)snprintf(pad, sizeof(pad), "[PAD%d]", id);
            bytebuf_append(&b, pad, len);
            types[id] = TYPE_UNUSED;
        } else if (t->kind == TOKENIZER_SENTENCEPIECE) {
            len = spm_piece(t->spm, id, &s);
            bytebuf_append(&b, s, len);
            types[id] = spm_piece_type(t->spm, id);
        } else if (t->kind == TOKENIZER_TEKKEN) {
            len = tekken_piece(t->tekken, id, &s);
            if (id < tekken_num_special(t->tekken)) {
                bytebuf_append(&b, s, len);
                types[id] = TYPE_CONTROL;
            } else {
                bytelevel_spell(s, len, &b);
                types[id] = TYPE_NORMAL;
            }
        } else {
            types[id] = bytelevel_token(t->bytelevel, id, &s, &len);
            bytebuf_append(&b, s, len);
        }
        gguf_add_array_string(w, b.data ? b.data : "", b.len);
    }
    bytebuf_free(&b);
}

// Merge rules "LEFT RIGHT" in rank order, each side spelled as its token is.
static void put_merges(GgufWriter *w, const int32_t *left, const int32_t *right, size_t n, int id_offset,
                       const Tokenizer *t) {
    gguf_add_string_array(w, "tokenizer.ggml.merges", n);
    ByteBuf b = {0};
    for (size_t r = 0; r < n; r++) {
        b.len = 0;
        for (int side = 0; side < 2; side++) {
            int32_t id = (side ? right[r] : left[r]) + id_offset;
            const char *s;
            size_t len;
            if (side) bytebuf_push(&b, ' ');
            if (t->kind == TOKENIZER_TEKKEN) {
                len = tekken_piece(t->tekken, id, &s);
                bytelevel_spell(s, len, &b);
            } else {
                bytelevel_token(t->bytelevel, id, &s, &len);
                bytebuf_append(&b, s, len);
            }
        }
        gguf_add_array_string(w, b.data, b.len);
    }
    bytebuf_free(&b);
}

// Tekken's merges: tekken_merges' rules, those of tokens nothing encodes into left out.
static void put_tekken_merges(GgufWriter *w, const Tokenizer *t) {
    int inner = tekken_vocab_size(t->tekken) - tekken_num_special(t->tekken);
    int32_t *left = xmalloc((size_t)inner * sizeof(int32_t)), *right = xmalloc((size_t)inner * sizeof(int32_t));
    tekken_merges(t->tekken, left, right);
    size_t n = 0;
    for (int r = 0; r < inner; r++)
        if (left[r] >= 0) left[n] = left[r], right[n] = right[r], n++;
    put_merges(w, left, right, n, tekken_num_special(t->tekken), t);
    free(left), free(right);
}

// llama.cpp's name of the tokenizer's pre-tokenizer ("default" for SentencePiece), or NULL.
static const char *pre_name(const Tokenizer *t) {
    if (t->kind == TOKENIZER_SENTENCEPIECE) return "default";
    if (t->kind == TOKENIZER_BYTELEVEL) return bytelevel_pre_name(t->bytelevel);
    const char *pattern = tekken_pattern(t->tekken), *name = bytelevel_pre_name_of(&pattern, 1, 1);
    return name && !strcmp(name, "tekken") ? name : NULL;
}

int gguf_vocab_check(const Tokenizer *t, const char *path, int n_vocab, char *err) {
    if (t->vocab_size > n_vocab)
        return set_error(err, "%s: the tokenizer has %d ids, more than the model's %d embedding rows (the tokenizer of "
                         "another model?)", path, t->vocab_size, n_vocab);
    if (!pre_name(t))
        return set_error(err, "%s: %s is not one of llama.cpp's pre-tokenizers (smollm, gpt-2, tekken and their "
                         "aliases); llama.cpp would split text differently", path,
                         t->kind == TOKENIZER_TEKKEN ? "config.pattern" : "the pre_tokenizer");
    return 0;
}

int gguf_vocab_write(GgufWriter *w, const Tokenizer *t, const char *path, int n_vocab, int add_bos, char *err) {
    if (gguf_vocab_check(t, path, n_vocab, err)) return -1;
    int n = t->vocab_size;
    const char *pre = pre_name(t);
    int spm = t->kind == TOKENIZER_SENTENCEPIECE;
    gguf_add_string(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2", spm ? 5 : 4);
    gguf_add_string(w, "tokenizer.ggml.pre", pre, strlen(pre));
    int32_t *types = xmalloc((size_t)n_vocab * sizeof(int32_t));
    put_tokens(w, t, n, n_vocab, types);
    if (spm) {
        float *scores = xmalloc((size_t)n_vocab * sizeof(float));
        for (int id = 0; id < n_vocab; id++) scores[id] = id < n ? spm_piece_score(t->spm, id) : -1000.0f;
        gguf_add_array(w, "tokenizer.ggml.scores", GGUF_F32, scores, (uint64_t)n_vocab);
        free(scores);
    }
    gguf_add_array(w, "tokenizer.ggml.token_type", GGUF_I32, types, (uint64_t)n_vocab);
    free(types);
    if (t->kind == TOKENIZER_TEKKEN) {
        put_tekken_merges(w, t);
    } else if (t->kind == TOKENIZER_BYTELEVEL) {
        int32_t *left, *right;
        size_t count = bytelevel_merges(t->bytelevel, &left, &right);
        put_merges(w, left, right, count, 0, t);
        free(left), free(right);
    }
    static const char *const keys[4] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"};
    const int32_t ids[4] = {t->bos_id, t->eos_id, t->unk_id, t->pad_id};
    for (int k = 0; k < 4; k++)
        if (ids[k] >= 0) gguf_add_u32(w, keys[k], (uint32_t)ids[k]);
    gguf_add_bool(w, "tokenizer.ggml.add_bos_token", add_bos);
    gguf_add_bool(w, "tokenizer.ggml.add_eos_token", 0);
    if (spm) gguf_add_bool(w, "tokenizer.ggml.add_space_prefix", spm_add_dummy_prefix(t->spm));
    return 0;
}
