// tokenizer.c: loading and dispatch for the two tokenizer families (see tokenizer.h).
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "bytelevel.h"
#include "sentencepiece.h"
#include "tekken.h"

void tokvec_push(TokenVec *v, int32_t id) {
    if (v->len == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 256;
        v->ids = xrealloc(v->ids, v->cap * sizeof(int32_t));
    }
    v->ids[v->len++] = id;
}

void tokvec_free(TokenVec *v) {
    free(v->ids);
    v->ids = NULL;
    v->len = v->cap = 0;
}

// mistral-common's get_spm_version: "tokenizer.model.v3" -> 3, "…model.v7m1" -> 7.
// Returns 0 when the name carries no version.
static int spm_version_from_name(const char *path) {
    const char *dot = strrchr(path, '.');
    if (!dot || dot[1] != 'v' || dot[2] < '0' || dot[2] > '9') return 0;
    return atoi(dot + 2);
}

// Without a version in the file name (Hugging Face repositories ship v0.3's tokenizer as
// plain `tokenizer.model`), the control tokens tell the versions apart: v7 added
// [SYSTEM_PROMPT], v3 added [IMG] to v2's [INST], v1 has neither. mistral-common would
// call any bare `tokenizer.model` v1; this reads what the file actually contains.
static int spm_version_from_pieces(const SentencePiece *m) {
    int sys = spm_piece_type(m, spm_piece_id(m, "[SYSTEM_PROMPT]", 15)) == SPM_CONTROL;
    int inst = spm_piece_type(m, spm_piece_id(m, "[INST]", 6)) == SPM_CONTROL;
    int img = spm_piece_type(m, spm_piece_id(m, "[IMG]", 5)) == SPM_CONTROL;
    return sys ? 7 : inst && img ? 3 : inst ? 2 : 1;
}

// A GGUF model's tokenizer, or a Hugging Face tokenizer.json (root, parsed).
static int load_bytelevel(Tokenizer *t, const char *path, const cJSON *root, char *err) {
    t->kind = TOKENIZER_BYTELEVEL;
    if (root) {
        t->bytelevel = bytelevel_from_json(path, root, err);
    } else {
        Gguf g;
        if (gguf_open(&g, path, err)) return -1;
        t->bytelevel = bytelevel_from_gguf(&g, err);
        gguf_close(&g);
    }
    if (!t->bytelevel) return -1;
    t->vocab_size = bytelevel_vocab_size(t->bytelevel);
    bytelevel_ids(t->bytelevel, &t->bos_id, &t->eos_id, &t->unk_id, &t->pad_id);
    if (t->eos_id < 0) t->eos_id = bytelevel_special_id(t->bytelevel, "<|im_end|>");
    if (t->eos_id < 0) {
        tokenizer_free(t);
        return set_error(err, "%s: the tokenizer names no end-of-sequence token", path);
    }
    return 0;
}

int tokenizer_load(Tokenizer *t, const char *path, char *err) {
    memset(t, 0, sizeof(*t));
    if (gguf_is_gguf(path)) return load_bytelevel(t, path, NULL, err);
    size_t len;
    char *data = read_file(path, &len, err);
    if (!data) return -1;
    size_t i = 0;
    while (i < len && strchr(" \t\r\n", data[i])) i++;
    if (i < len && data[i] == '{') {  // a JSON object: tokenizer.json (it has "model") or tekken.json
        cJSON *root = cJSON_ParseWithLength(data, len);
        if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "model"))) {
            free(data);
            int rc = load_bytelevel(t, path, root, err);
            cJSON_Delete(root);
            return rc;
        }
        cJSON_Delete(root);
        t->kind = TOKENIZER_TEKKEN;
        t->tekken = tekken_load(path, data, len, err);
        free(data);
        if (!t->tekken) return -1;
        t->version = tekken_version(t->tekken);
        t->vocab_size = tekken_vocab_size(t->tekken);
        t->bos_id = tekken_special_id(t->tekken, "<s>");
        t->eos_id = tekken_special_id(t->tekken, "</s>");
        t->unk_id = tekken_special_id(t->tekken, "<unk>");
        t->pad_id = tekken_special_id(t->tekken, "<pad>");
    } else {
        t->kind = TOKENIZER_SENTENCEPIECE;
        t->spm = spm_load(path, data, len, err);
        free(data);
        if (!t->spm) return -1;
        t->version = spm_version_from_name(path);
        if (!t->version) t->version = spm_version_from_pieces(t->spm);
        t->vocab_size = spm_vocab_size(t->spm);
        t->bos_id = spm_bos_id(t->spm);
        t->eos_id = spm_eos_id(t->spm);
        t->unk_id = spm_unk_id(t->spm);
        t->pad_id = spm_pad_id(t->spm);
    }
    if (t->bos_id < 0 || t->eos_id < 0) {
        tokenizer_free(t);
        return set_error(err, "%s: the file defines no BOS (<s>) or EOS (</s>) token", path);
    }
    return 0;
}

void tokenizer_free(Tokenizer *t) {
    spm_free(t->spm);
    tekken_free(t->tekken);
    bytelevel_free(t->bytelevel);
    memset(t, 0, sizeof(*t));
}

void tokenizer_encode(Tokenizer *t, const char *text, size_t len, TokenVec *out) {
    if (t->kind == TOKENIZER_BYTELEVEL)
        bytelevel_encode(t->bytelevel, text, len, out);
    else if (t->kind == TOKENIZER_TEKKEN)
        tekken_encode(t->tekken, text, len, out);
    else
        spm_encode(t->spm, text, len, out);
}

int tokenizer_decode(const Tokenizer *t, const int32_t *ids, size_t n, ByteBuf *out, char *err) {
    if (t->kind == TOKENIZER_BYTELEVEL) return bytelevel_decode(t->bytelevel, ids, n, out, err);
    return t->kind == TOKENIZER_TEKKEN ? tekken_decode(t->tekken, ids, n, out, err)
                                       : spm_decode(t->spm, ids, n, out, err);
}

int32_t tokenizer_special_id(const Tokenizer *t, const char *piece) {
    if (t->kind == TOKENIZER_BYTELEVEL) return bytelevel_special_id(t->bytelevel, piece);
    if (t->kind == TOKENIZER_TEKKEN) return tekken_special_id(t->tekken, piece);
    int32_t id = spm_piece_id(t->spm, piece, strlen(piece));
    int type = spm_piece_type(t->spm, id);
    return type == SPM_CONTROL || type == SPM_UNKNOWN ? id : -1;
}

size_t tokenizer_piece(const Tokenizer *t, int32_t id, const char **s) {
    if (t->kind == TOKENIZER_BYTELEVEL) return bytelevel_piece(t->bytelevel, id, s);
    return t->kind == TOKENIZER_TEKKEN ? tekken_piece(t->tekken, id, s) : spm_piece(t->spm, id, s);
}
