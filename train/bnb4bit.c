// bnb4bit.c: reading bitsandbytes' serialized Linear4bit weights (see bnb4bit.h).
#include "bnb4bit.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const StTensor *part(const ModelFiles *m, const char *prefix, const char *suffix, StDtype dtype, int64_t numel,
                            char *err) {
    char name[512];
    snprintf(name, sizeof(name), "%s.%s", prefix, suffix);
    const StTensor *t = model_files_find(m, name);
    const char *file = model_files_path(m, name);
    if (!t) set_error(err, "%s: tensor '%s' is missing (bitsandbytes 4-bit linear)", file, name);
    else if (t->dtype != dtype)
        set_error(err, "%s: tensor '%s' has dtype %s, expected %s", file, name, st_dtype_name(t->dtype), st_dtype_name(dtype));
    else if (numel >= 0 && t->numel != numel)
        set_error(err, "%s: tensor '%s' has %lld elements, expected %lld", file, name, (long long)t->numel, (long long)numel);
    else
        return t;
    return NULL;
}

// The quant_state JSON: checks it describes NF4 of this shape; returns blocksize and offset.
static int read_state(const ModelFiles *m, const StTensor *js, int64_t rows, int64_t cols,
                      int *blocksize, int *nested, float *offset, char *err) {
    cJSON *root = cJSON_ParseWithLength(js->data, js->nbytes);
    const cJSON *type = root ? cJSON_GetObjectItemCaseSensitive(root, "quant_type") : NULL;
    const cJSON *bs = root ? cJSON_GetObjectItemCaseSensitive(root, "blocksize") : NULL;
    const cJSON *shape = root ? cJSON_GetObjectItemCaseSensitive(root, "shape") : NULL;
    const cJSON *nbs = root ? cJSON_GetObjectItemCaseSensitive(root, "nested_blocksize") : NULL;
    const cJSON *noff = root ? cJSON_GetObjectItemCaseSensitive(root, "nested_offset") : NULL;
    const char *file = model_files_path(m, js->name);
    int rc = 0;
    if (!root) rc = set_error(err, "%s: tensor '%s': quant_state is not JSON", file, js->name);
    else if (!cJSON_IsString(type) || strcmp(type->valuestring, "nf4") != 0)
        rc = set_error(err, "%s: tensor '%s': quant_type is not nf4", file, js->name);
    else if (!cJSON_IsNumber(bs) || bs->valueint < 16 || bs->valueint > 4096 || (bs->valueint & (bs->valueint - 1)))
        rc = set_error(err, "%s: tensor '%s': blocksize is not a power of two in 16..4096", file, js->name);
    else if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) != 2 || shape->child->valuedouble != (double)rows ||
             shape->child->next->valuedouble != (double)cols)
        rc = set_error(err, "%s: tensor '%s': quant_state shape is not [%lld, %lld]", file, js->name, (long long)rows, (long long)cols);
    else if (nbs && (!cJSON_IsNumber(nbs) || nbs->valueint != NF4_DQ_BLOCKSIZE))
        rc = set_error(err, "%s: tensor '%s': nested_blocksize is not 256", file, js->name);
    else if (nbs && !cJSON_IsNumber(noff))
        rc = set_error(err, "%s: tensor '%s': nested_offset is missing", file, js->name);
    if (rc == 0) {
        *blocksize = bs->valueint;
        *nested = nbs != NULL;
        *offset = nbs ? (float)noff->valuedouble : 0.0f;
    }
    cJSON_Delete(root);
    return rc;
}

int bnb4bit_load_linear(Nf4Weight *q, const ModelFiles *m, const char *prefix, int64_t rows, int64_t cols, char *err) {
    memset(q, 0, sizeof(*q));
    const StTensor *js = part(m, prefix, "weight.quant_state.bitsandbytes__nf4", ST_U8, -1, err);
    int blocksize, nested;
    float offset;
    if (!js || read_state(m, js, rows, cols, &blocksize, &nested, &offset, err)) return -1;
    int64_t n = rows * cols, nb = (n + blocksize - 1) / blocksize;
    const StTensor *packed = part(m, prefix, "weight", ST_U8, (n + 1) / 2, err);
    const StTensor *qmap = packed ? part(m, prefix, "weight.quant_map", ST_F32, 16, err) : NULL;
    const StTensor *absmax = qmap ? part(m, prefix, "weight.absmax", nested ? ST_U8 : ST_F32, nb, err) : NULL;
    if (!absmax) return -1;
    if (memcmp(qmap->data, nf4_code, sizeof(nf4_code)) != 0)
        return set_error(err, "%s: tensor '%s' is not the NF4 table", model_files_path(m, qmap->name), qmap->name);
    const StTensor *absmax2 = NULL, *code = NULL;
    if (nested) {
        absmax2 = part(m, prefix, "weight.nested_absmax", ST_F32, (nb + NF4_DQ_BLOCKSIZE - 1) / NF4_DQ_BLOCKSIZE, err);
        code = absmax2 ? part(m, prefix, "weight.nested_quant_map", ST_F32, 256, err) : NULL;
        if (!code) return -1;
    }
    // the packed codes index a finite table; the scales are floats and must be finite
    const StTensor *scales[3] = {nested ? absmax2 : absmax, code, NULL};
    for (int i = 0; scales[i]; i++)
        for (int64_t k = 0; k < scales[i]->numel; k++) {
            float x;  // (the data of a safetensors tensor need not be 4-byte aligned)
            memcpy(&x, (const uint8_t *)scales[i]->data + 4 * k, 4);
            if (!isfinite(x))
                return set_error(err, "%s: tensor '%s' holds %g at element %lld: a model's weights must be finite",
                                 model_files_path(m, scales[i]->name), scales[i]->name, (double)x, (long long)k);
        }
    q->rows = rows;
    q->cols = cols;
    q->blocksize = blocksize;
    q->double_quant = nested;
    q->packed = xmalloc(packed->nbytes);
    memcpy(q->packed, packed->data, packed->nbytes);
    if (nested) {
        q->qabsmax = xmalloc(absmax->nbytes);
        memcpy(q->qabsmax, absmax->data, absmax->nbytes);
        q->absmax2 = xmalloc(absmax2->nbytes);
        memcpy(q->absmax2, absmax2->data, absmax2->nbytes);
        memcpy(q->code, code->data, sizeof(q->code));  // the checkpoint's own map, as bnb uses it
        q->offset = offset;
    } else {
        q->absmax = xmalloc(absmax->nbytes);
        memcpy(q->absmax, absmax->data, absmax->nbytes);
    }
    return 0;
}
