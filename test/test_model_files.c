// test_model_files.c: model directories, single-file and sharded, and the ways an index can
// disagree with its shards. Files are written with our safetensors writer, whose output
// the Python reference reads (test_safetensors_python.sh).
#include <stdlib.h>
#include <unistd.h>

#include "../train/model_files.h"
#include "test.h"

static char dir[64];
static float data[16];

static void write_shard(const char *file, const char *a, const char *b) {
    char path[128], err[ERR_LEN];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    StWrite w[2] = {{a, ST_F32, 2, {2, 4}, data}, {b, ST_BF16, 1, {8}, data}};
    if (st_write(path, w, b ? 2 : 1, NULL, NULL, 0, err)) printf("  %s\n", err);
}

static void write_text(const char *file, const char *text) {
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void clear_dir(void) {
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -f %s/*", dir);
    if (system(cmd) != 0) printf("  could not clear %s\n", dir);
}

TEST(single_and_sharded) {
    ModelFiles m;
    char err[ERR_LEN];
    write_shard("model.safetensors", "model.norm.weight", "lm_head.weight");
    CHECK_INT(model_files_open(&m, dir, err), 0);
    CHECK_INT(m.n_tensors, 2);
    int64_t shape[2] = {2, 4}, flat[1] = {8};
    CHECK(model_files_expect(&m, "model.norm.weight", ST_F32, 2, shape, err) != NULL);
    CHECK(model_files_expect(&m, "lm_head.weight", -1, 1, flat, err) != NULL);
    CHECK(model_files_expect(&m, "lm_head.weight", -1, 2, shape, err) == NULL);
    CHECK_CONTAINS(err, "tensor 'lm_head.weight' has shape [8], the config implies [2, 4]");
    CHECK(model_files_expect(&m, "lm_head.weight", ST_F32, 1, flat, err) == NULL);
    CHECK_CONTAINS(err, "has dtype BF16, expected F32");
    CHECK(model_files_expect(&m, "model.embed_tokens.weight", -1, 1, flat, err) == NULL);
    CHECK_CONTAINS(err, "tensor 'model.embed_tokens.weight' is missing");
    model_files_close(&m);
    clear_dir();

    write_shard("model-00001-of-00002.safetensors", "a", "b");
    write_shard("model-00002-of-00002.safetensors", "c", NULL);
    write_text("model.safetensors.index.json",
               "{\"metadata\": {\"total_size\": 64}, \"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
               "\"b\": \"model-00001-of-00002.safetensors\", \"c\": \"model-00002-of-00002.safetensors\"}}");
    CHECK_INT(model_files_open(&m, dir, err), 0);
    CHECK_INT(m.n_shards, 2);
    CHECK(model_files_find(&m, "c") != NULL && model_files_find(&m, "a") != NULL);
    model_files_close(&m);
}

static void refused(const char *index, const char *want) {
    ModelFiles m;
    char err[ERR_LEN] = "";
    write_text("model.safetensors.index.json", index);
    CHECK_INT(model_files_open(&m, dir, err), -1);
    CHECK_CONTAINS(err, want);
}

TEST(index_disagreeing_with_shards) {
    // (shards from the previous test: a, b in 00001; c in 00002)
    refused("{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", \"z\": \"model-00003-of-00003.safetensors\"}}",
            "tensor 'z' is in shard");
    refused("{\"weight_map\": {\"c\": \"model-00001-of-00002.safetensors\"}}",
            "tensor 'c' is mapped to model-00001-of-00002.safetensors, which does not contain it");
    refused("{\"weight_map\": {\"a\": \"../model-00001-of-00002.safetensors\"}}", "not a plain file name");
    refused("{\"metadata\": {}}", "no \"weight_map\" object");
    write_shard("model-00002-of-00002.safetensors", "c", "a");  // now "a" is in both shards
    refused("{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", \"c\": \"model-00002-of-00002.safetensors\"}}",
            "tensor 'a' is in two shards");
    clear_dir();
    ModelFiles m;
    char err[ERR_LEN];
    CHECK_INT(model_files_open(&m, dir, err), -1);
    CHECK_CONTAINS(err, "neither model.safetensors nor model.safetensors.index.json");
}

int main(void) {
    snprintf(dir, sizeof(dir), "/tmp/model_files_XXXXXX");
    if (!mkdtemp(dir)) return 1;
    RUN(single_and_sharded);
    RUN(index_disagreeing_with_shards);
    clear_dir();
    rmdir(dir);
    return test_summary();
}
