// model_files.c: a model directory's safetensors, single or sharded (see model_files.h).
#include "model_files.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *join(const char *dir, const char *file) {
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, file);
    return p;
}

static int open_shard(ModelFiles *m, const char *file, char *err) {
    char *path = join(m->dir, file);
    m->shards = xrealloc(m->shards, (size_t)(m->n_shards + 1) * sizeof(SafeTensors));
    int rc = st_open(&m->shards[m->n_shards], path, err);
    if (rc == 0) m->n_shards++;
    free(path);
    return rc;
}

// The shard files the index names, each once, in order of first mention.
static int open_indexed(ModelFiles *m, const char *index_path, char *err) {
    size_t len;
    char *text = read_file(index_path, &len, err);
    if (!text) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *map = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    int rc = 0;
    if (!root) rc = set_error(err, "%s: not valid JSON", index_path);
    else if (!cJSON_IsObject(map)) rc = set_error(err, "%s: no \"weight_map\" object", index_path);
    StrMap files;
    strmap_init(&files, 16);
    for (const cJSON *e = map ? map->child : NULL; e && rc == 0; e = e->next) {
        if (!cJSON_IsString(e)) {
            rc = set_error(err, "%s: weight_map[\"%s\"] is not a file name", index_path, e->string);
            break;
        }
        if (strchr(e->valuestring, '/')) {  // the index may only name files beside it
            rc = set_error(err, "%s: shard name \"%s\" is not a plain file name", index_path, e->valuestring);
            break;
        }
        if (strmap_put(&files, e->valuestring, strlen(e->valuestring), m->n_shards) == 0) {
            char *shard = join(m->dir, e->valuestring);
            if (access(shard, F_OK) != 0)
                rc = set_error(err, "%s: tensor '%s' is in shard %s, which does not exist", index_path, e->string, shard);
            free(shard);
            if (rc == 0) rc = open_shard(m, e->valuestring, err);
        }
    }
    // every mapped tensor must be where the index says
    for (const cJSON *e = map ? map->child : NULL; e && rc == 0; e = e->next) {
        int s = strmap_get(&files, e->valuestring, strlen(e->valuestring));
        if (!st_find(&m->shards[s], e->string))
            rc = set_error(err, "%s: tensor '%s' is mapped to %s, which does not contain it", index_path, e->string,
                           e->valuestring);
    }
    strmap_free(&files);
    cJSON_Delete(root);
    return rc;
}

static int index_tensors(ModelFiles *m, char *err) {
    int total = 0;
    for (int s = 0; s < m->n_shards; s++) total += m->shards[s].n_tensors;
    m->all = xcalloc((size_t)total + 1, sizeof(StTensor *));
    m->shard_of = xcalloc((size_t)total + 1, sizeof(int));
    strmap_init(&m->where, (size_t)total);
    for (int s = 0; s < m->n_shards; s++)
        for (int i = 0; i < m->shards[s].n_tensors; i++) {
            const StTensor *t = &m->shards[s].tensors[i];
            if (strmap_put(&m->where, t->name, strlen(t->name), m->n_tensors)) {
                int first = m->shard_of[strmap_get(&m->where, t->name, strlen(t->name))];
                return set_error(err, "%s: tensor '%s' is in two shards, %s and %s", m->source, t->name,
                                 m->shards[first].path, m->shards[s].path);
            }
            m->shard_of[m->n_tensors] = s;
            m->all[m->n_tensors++] = t;
        }
    return 0;
}

int model_files_open(ModelFiles *m, const char *dir, char *err) {
    memset(m, 0, sizeof(*m));
    m->dir = xstrdup(dir);
    char *index = join(dir, "model.safetensors.index.json"), *single = join(dir, "model.safetensors");
    int rc;
    if (access(index, F_OK) == 0) {
        m->source = index, index = NULL;
        rc = open_indexed(m, m->source, err);
    } else if (access(single, F_OK) == 0) {
        m->source = single, single = NULL;
        rc = open_shard(m, "model.safetensors", err);
    } else {
        rc = set_error(err, "%s: neither model.safetensors nor model.safetensors.index.json is there", dir);
    }
    if (rc == 0) rc = index_tensors(m, err);
    free(index);
    free(single);
    if (rc) model_files_close(m);
    return rc;
}

void model_files_close(ModelFiles *m) {
    for (int s = 0; s < m->n_shards; s++) st_close(&m->shards[s]);
    free(m->shards);
    free(m->all);
    free(m->shard_of);
    if (m->where.slots) strmap_free(&m->where);
    free(m->dir);
    free(m->source);
    memset(m, 0, sizeof(*m));
}

const StTensor *model_files_find(const ModelFiles *m, const char *name) {
    int32_t i = strmap_get(&m->where, name, strlen(name));
    return i < 0 ? NULL : m->all[i];
}

const char *model_files_path(const ModelFiles *m, const char *name) {
    int32_t i = strmap_get(&m->where, name, strlen(name));
    return i < 0 ? m->source : m->shards[m->shard_of[i]].path;
}

const StTensor *model_files_expect(const ModelFiles *m, const char *name, int dtype, int ndim,
                                   const int64_t *shape, char *err) {
    const StTensor *t = model_files_find(m, name);
    if (!t) {
        set_error(err, "%s: tensor '%s' is missing", m->source, name);
        return NULL;
    }
    int is_float = t->dtype == ST_F32 || t->dtype == ST_BF16 || t->dtype == ST_F16;
    if (dtype < 0 ? !is_float : t->dtype != (StDtype)dtype) {
        set_error(err, "%s: tensor '%s' has dtype %s, expected %s", model_files_path(m, name), name, st_dtype_name(t->dtype),
                  dtype < 0 ? "F32, BF16 or F16" : st_dtype_name((StDtype)dtype));
        return NULL;
    }
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char got[96] = "", want[96] = "";
        for (int d = 0; d < t->ndim; d++)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), d ? ", %lld" : "%lld", (long long)t->shape[d]);
        for (int d = 0; d < ndim; d++)
            snprintf(want + strlen(want), sizeof(want) - strlen(want), d ? ", %lld" : "%lld", (long long)shape[d]);
        set_error(err, "%s: tensor '%s' has shape [%s], the config implies [%s]", model_files_path(m, name), name, got,
                  want);
        return NULL;
    }
    return t;
}
