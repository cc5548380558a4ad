/*
 * make_shards.c: token shards of a small vocabulary for the trainer tests, written without a
 * tokenizer (a real tokenizer's vocabulary of 32768 makes the LM head the whole cost of a
 * tiny model's step, and the CUDA-on-CPU harness pays for every logit).
 *
 *   make_shards OUT_DIR VOCAB SEED [PROMPT]   writes OUT_DIR/train.bin (200 conversations)
 *                                             and OUT_DIR/val.bin (20), vocabulary VOCAB
 *                                             (>= 16), prompts of 4 to PROMPT ids (12)
 *
 * Each conversation is a task a model can learn, so that a loss curve means something: BOS
 * (1), a prompt of 4 to PROMPT random ids from [3, VOCAB), then the answer, the prompt's ids
 * each plus one (wrapping within [3, VOCAB)) in the same order, and EOS (2). Long prompts
 * make long conversations, for measuring speed at a sequence length
 * (scripts/gpu_check.sh). The answer and
 * EOS are trained (mask 1), BOS and the prompt are not, as prep masks a user turn. The
 * shards record fingerprint 0 (no tokenizer) and chat format V3.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "../common/util.h"
#include "../data/shard.h"

static int write_shard(const char *path, const char *name, int n_conv, int vocab, int prompt, uint64_t *rng,
                       char *err) {
    ShardWriter w;
    ShardHeader h = {.vocab_size = (uint32_t)vocab, .fingerprint = 0, .chat_format = 3, .weight = 1.0};
    snprintf(h.source, sizeof(h.source), "%s", name);
    if (shard_writer_open(&w, path, &h, err)) return -1;
    int32_t *ids = xmalloc((size_t)(2 * prompt + 2) * sizeof(int32_t));
    uint8_t *mask = xmalloc((size_t)(2 * prompt + 2));
    int rc = 0;
    for (int j = 0; j < n_conv && rc == 0; j++) {
        int p = 4 + (int)rng_below(rng, (uint64_t)prompt - 3), n = 0;
        ids[n] = 1, mask[n++] = 0;
        for (int k = 0; k < p; k++) ids[n] = 3 + (int32_t)rng_below(rng, (uint64_t)vocab - 3), mask[n++] = 0;
        for (int k = 0; k < p; k++) ids[n] = 3 + (ids[1 + k] - 3 + 1) % (vocab - 3), mask[n++] = 1;
        ids[n] = 2, mask[n++] = 1;
        rc = shard_writer_add(&w, ids, mask, (size_t)n, err);
    }
    if (rc == 0) rc = shard_writer_finish(&w, err) || shard_writer_commit(&w, err) ? -1 : 0;
    shard_writer_close(&w);
    free(ids), free(mask);
    return rc;
}

int main(int argc, char **argv) {
    int prompt = argc == 5 ? atoi(argv[4]) : 12;
    if ((argc != 4 && argc != 5) || atoi(argv[2]) < 16 || prompt < 4) {
        fprintf(stderr, "usage: make_shards OUT_DIR VOCAB SEED [PROMPT] (VOCAB >= 16, PROMPT >= 4)\n");
        return 1;
    }
    char err[ERR_LEN], path[4096];
    uint64_t rng = strtoull(argv[3], NULL, 10);
    int vocab = atoi(argv[2]);
    mkdir(argv[1], 0755);
    snprintf(path, sizeof(path), "%s/train.bin", argv[1]);
    int rc = write_shard(path, "train", 200, vocab, prompt, &rng, err);
    snprintf(path, sizeof(path), "%s/val.bin", argv[1]);
    if (rc == 0) rc = write_shard(path, "val", 20, vocab, prompt, &rng, err);
    if (rc) fprintf(stderr, "error: %s\n", err);
    return rc ? 2 : 0;
}
