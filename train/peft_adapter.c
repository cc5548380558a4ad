// peft_adapter.c: reading and writing PEFT LoRA adapters (see peft_adapter.h).
#include "peft_adapter.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lora.h"
#include "safetensors.h"

void peft_lora_key(char *out, size_t n, int layer, int p, int is_b) {
    snprintf(out, n, "base_model.model.model.layers.%d.%s.lora_%c.weight", layer, proj_names[p], is_b ? 'B' : 'A');
}

// Which projections target_modules names (a list of module names, as PEFT writes it).
static int read_targets(const cJSON *list, unsigned *targets) {
    *targets = 0;
    if (!cJSON_IsArray(list)) return -1;
    for (const cJSON *e = list->child; e; e = e->next) {
        int found = 0;
        for (int p = 0; p < N_PROJ && cJSON_IsString(e); p++)
            if (strcmp(e->valuestring, proj_short[p]) == 0) *targets |= 1u << p, found = 1;
        if (!found) return -1;
    }
    return 0;
}

static int read_config(const char *path, int *r, float *alpha, int *rslora, unsigned *targets, char *err) {
    size_t len;
    char *text = read_file(path, &len, err);
    if (!text) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "peft_type");
    const cJSON *jr = cJSON_GetObjectItemCaseSensitive(root, "r");
    const cJSON *ja = cJSON_GetObjectItemCaseSensitive(root, "lora_alpha");
    int rc = 0;
    if (!root) rc = set_error(err, "%s: not valid JSON", path);
    else if (!cJSON_IsString(type) || strcmp(type->valuestring, "LORA") != 0)
        rc = set_error(err, "%s: peft_type is not \"LORA\"", path);
    else if (!cJSON_IsNumber(jr) || jr->valueint < 1 || jr->valueint > 4096)
        rc = set_error(err, "%s: r is not a rank in 1..4096", path);
    else if (!cJSON_IsNumber(ja) || !(ja->valuedouble > 0))
        rc = set_error(err, "%s: lora_alpha is not a positive number", path);
    else if (read_targets(cJSON_GetObjectItemCaseSensitive(root, "target_modules"), targets))
        rc = set_error(err, "%s: target_modules must list projections among q_proj, k_proj, v_proj, o_proj, "
                            "gate_proj, up_proj, down_proj", path);
    else if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "use_dora")))
        rc = set_error(err, "%s: DoRA adapters are not supported", path);
    if (rc == 0) {
        *r = jr->valueint;
        *alpha = (float)ja->valuedouble;
        *rslora = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "use_rslora"));
    }
    cJSON_Delete(root);
    return rc;
}

int peft_lora_read(Model *m, const SafeTensors *st, char *err) {
    char name[160];
    for (int i = 0; i < m->c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) {
            Linear *l = &m->layers[i].proj[p];
            if (!l->A) continue;
            for (int k = 0; k < 2; k++) {
                peft_lora_key(name, sizeof(name), i, p, k);
                const StTensor *t = st_find(st, name);
                int64_t rows = k ? l->out : m->lora_r, cols = k ? m->lora_r : l->in;
                if (!t) return set_error(err, "%s: tensor '%s' is missing", st->path, name);
                if (t->dtype != ST_F32 || t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
                    return set_error(err, "%s: tensor '%s' is not F32 [%lld, %lld]", st->path, name, (long long)rows,
                                     (long long)cols);
                memcpy(k ? l->B : l->A, t->data, t->nbytes);
            }
        }
    return 0;
}

int peft_adapter_load(Model *m, const char *dir, char *err) {
    char path[4096];
    int r = 0, rslora = 0;
    float alpha = 0.0f;
    unsigned targets = 0;
    snprintf(path, sizeof(path), "%s/adapter_config.json", dir);
    if (read_config(path, &r, &alpha, &rslora, &targets, err)) return -1;
    snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
    SafeTensors st;
    if (st_open(&st, path, err)) return -1;
    model_lora_init(m, targets, r, alpha, rslora, 0);
    int rc = peft_lora_read(m, &st, err), used = 0;
    for (int i = 0; i < m->c.num_hidden_layers; i++)
        for (int p = 0; p < N_PROJ; p++) used += m->layers[i].proj[p].A ? 2 : 0;
    if (rc == 0 && used != st.n_tensors)
        rc = set_error(err, "%s: %d tensors are not LoRA weights of this model's targets", path, st.n_tensors - used);
    st_close(&st);
    return rc;
}

int peft_adapter_write(const char *dir, const PeftMatrix *mats, int n, const PeftSettings *s, char *err) {
    if (mkdir(dir, 0755) && errno != EEXIST) return set_error(err, "%s: cannot create: %s", dir, strerror(errno));
    StWrite *w = xcalloc((size_t)n + 1, sizeof(StWrite));
    char (*names)[160] = xcalloc((size_t)n + 1, sizeof(*names));
    unsigned targets = 0;
    for (int i = 0; i < n; i++) {
        const PeftMatrix *a = &mats[i];
        targets |= 1u << a->proj;
        peft_lora_key(names[i], sizeof(names[i]), a->layer, a->proj, a->is_b);
        w[i] = (StWrite){names[i], ST_F32, 2, {a->rows, a->cols}, a->data};
    }
    char path[4096];
    const char *keys[] = {"format"}, *values[] = {"pt"};
    snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
    int rc = st_write(path, w, n, keys, values, 1, err);
    free(w);
    free(names);
    if (rc) return rc;
    cJSON *c = cJSON_CreateObject(), *list = cJSON_CreateArray();
    for (int p = 0; p < N_PROJ; p++)
        if (targets & (1u << p)) cJSON_AddItemToArray(list, cJSON_CreateString(proj_short[p]));
    if (s->base_model) cJSON_AddStringToObject(c, "base_model_name_or_path", s->base_model);
    else cJSON_AddNullToObject(c, "base_model_name_or_path");
    cJSON_AddStringToObject(c, "bias", "none");
    cJSON_AddFalseToObject(c, "fan_in_fan_out");
    cJSON_AddTrueToObject(c, "inference_mode");
    cJSON_AddTrueToObject(c, "init_lora_weights");
    cJSON_AddNumberToObject(c, "lora_alpha", s->alpha);
    cJSON_AddNumberToObject(c, "lora_dropout", s->dropout);
    cJSON_AddNullToObject(c, "modules_to_save");
    cJSON_AddStringToObject(c, "peft_type", "LORA");
    cJSON_AddNumberToObject(c, "r", s->r);
    cJSON_AddNullToObject(c, "revision");
    cJSON_AddItemToObject(c, "target_modules", list);
    cJSON_AddStringToObject(c, "task_type", "CAUSAL_LM");
    cJSON_AddFalseToObject(c, "use_dora");
    cJSON_AddBoolToObject(c, "use_rslora", s->rslora);
    char *text = cJSON_Print(c);
    snprintf(path, sizeof(path), "%s/adapter_config.json", dir);
    rc = write_file_atomically(path, text, strlen(text), err);
    free(text);
    cJSON_Delete(c);
    return rc;
}

int peft_adapter_save(const Model *m, const char *dir, const char *base_model, float dropout, char *err) {
    int L = m->c.num_hidden_layers, n = 0;
    PeftMatrix *mats = xcalloc((size_t)L * N_PROJ * 2 + 1, sizeof(PeftMatrix));
    for (int i = 0; i < L; i++)
        for (int p = 0; p < N_PROJ; p++) {
            const Linear *l = &m->layers[i].proj[p];
            for (int k = 0; k < 2 && l->A; k++)
                mats[n++] = (PeftMatrix){i, p, k, k ? l->out : m->lora_r, k ? m->lora_r : l->in, k ? l->B : l->A};
        }
    PeftSettings s = {m->lora_r, m->lora_rslora, m->lora_alpha, dropout, base_model};
    int rc = peft_adapter_write(dir, mats, n, &s, err);
    free(mats);
    return rc;
}
