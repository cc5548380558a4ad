/*
 * model_files.h: the tensors of a Hugging Face model directory, single file or sharded.
 *
 *   DIR/model.safetensors                       one file, or
 *   DIR/model.safetensors.index.json            {"metadata": {...}, "weight_map": {"NAME": "SHARD", ...}}
 *   DIR/model-00001-of-0000N.safetensors ...    the shards it names
 *
 * Every shard is opened (memory-mapped and validated, see safetensors.h). The index must
 * agree with the shards: a tensor it maps must be in that shard, a shard it names must
 * exist, and no tensor may appear in two shards; each disagreement is refused with the
 * file and the tensor named. Tensors are then found by name wherever they live.
 */
#ifndef PERSONA_MODEL_FILES_H
#define PERSONA_MODEL_FILES_H

#include "../common/strmap.h"
#include "safetensors.h"

typedef struct {
    char *dir;
    char *source;  // DIR/model.safetensors or DIR/model.safetensors.index.json
    SafeTensors *shards;
    int n_shards;
    StrMap where;  // tensor name -> index into all
    const StTensor **all;
    int *shard_of;  // all[i] lives in shards[shard_of[i]]
    int n_tensors;
} ModelFiles;

int model_files_open(ModelFiles *m, const char *dir, char *err);
void model_files_close(ModelFiles *m);

// The tensor with this name, or NULL.
const StTensor *model_files_find(const ModelFiles *m, const char *name);

// The file to name in a message about this tensor: the shard that holds it, or, when no
// shard does, m->source (the file that should have listed it).
const char *model_files_path(const ModelFiles *m, const char *name);

// The tensor with this name, checked to have this dtype (any float type when dtype is -1)
// and shape. Returns NULL with "FILE: tensor 'NAME' reason" in err (model_files_path).
const StTensor *model_files_expect(const ModelFiles *m, const char *name, int dtype, int ndim,
                                   const int64_t *shape, char *err);

#endif
