// fuzz_checkpoint.c: training checkpoints (train/run.c's checkpoint_read: a safetensors file
// with the run's settings, LoRA weights and AdamW moments, the data loader's state and the
// step, under a CRC32) against a small run made at start: one shard, two LoRA matrices,
// --steps 10. A checkpoint it accepts must leave a data loader that draws batches. Seeds:
// written at start by checkpoint_write for that run (steps 3 and 10) into the first corpus
// directory on the command line, so that they always match the format being fuzzed.
#include <sys/stat.h>

#include "../../data/dataloader.h"
#include "../../data/shard.h"
#include "../../train/run.h"
#include "fuzz.h"

#define STEPS 10
static const char settings[] = "{\"--lr\":\"0.0002\",\"--lora-r\":\"2\",\"--seed\":\"42\"}";
static float weights[2][3][16];
static RunParam params[2];
static Dataloader *dl;
static Batch batch;

// A shard of 12 conversations of 5 to 16 tokens (vocabulary 100, answers trained).
static void write_shard(const char *path) {
    char err[ERR_LEN];
    ShardHeader meta = {.vocab_size = 100, .chat_format = 3, .weight = 1.0};
    snprintf(meta.source, sizeof(meta.source), "fuzz");
    ShardWriter w;
    int rc = shard_writer_open(&w, path, &meta, err);
    for (int c = 0; c < 12 && rc == 0; c++) {
        int32_t ids[16];
        uint8_t mask[16];
        int n = 5 + c % 12;
        for (int i = 0; i < n; i++) ids[i] = (c * 7 + i * 3) % 100, mask[i] = i >= n / 2;
        rc = shard_writer_add(&w, ids, mask, (size_t)n, err);
    }
    if (rc || shard_writer_finish(&w, err) || shard_writer_commit(&w, err)) {
        fprintf(stderr, "fuzz_checkpoint: %s\n", err);
        exit(1);
    }
    shard_writer_close(&w);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    char err[ERR_LEN], shard[4200];
    snprintf(shard, sizeof(shard), "%s/train.bin", fuzz_scratch());
    write_shard(shard);
    LoaderConfig cfg = {.batch = 2, .seq_len = 8, .seed = 42, .rank = 0, .world = 1};
    const char *paths[1] = {shard};
    if (!(dl = dataloader_open(paths, 1, &cfg, err))) {
        fprintf(stderr, "fuzz_checkpoint: %s\n", err);
        exit(1);
    }
    batch_init(&batch, cfg.batch, cfg.seq_len);
    for (int k = 0; k < 2; k++)  // q_proj's LoRA A [2, 8] and B [8, 2]
        params[k] = run_lora_param(0, 0, k, 2, 8, 8, weights[k][0], weights[k][1], weights[k][2]);
    // the seeds, into the first directory given (libFuzzer's corpus)
    for (int i = 1; i < *argc; i++) {
        struct stat sb;
        if ((*argv)[i][0] == '-' || stat((*argv)[i], &sb) || !S_ISDIR(sb.st_mode)) continue;
        for (int step = 3; step <= STEPS; step += STEPS - 3) {
            char path[4200], crc[16];
            snprintf(path, sizeof(path), "%s/seed-step%d.safetensors", (*argv)[i], step);
            RunState state = {step, 0x1234};
            dataloader_next(dl, &batch, err);
            if (checkpoint_write(path, params, 2, dl, &state, settings, crc, err)) {
                fprintf(stderr, "fuzz_checkpoint: %s\n", err);
                exit(1);
            }
        }
        break;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[ERR_LEN] = "", crc[16] = "";
    RunState state = {0, 0};
    if (checkpoint_read(fuzz_file("checkpoint.safetensors", data, size), params, 2, settings, STEPS, dl, &state, crc,
                        err)) {
        fuzz_check_message(err);
        return 0;
    }
    if (state.step < 1 || state.step > STEPS || strlen(crc) != 8) abort();
    for (int i = 0; i < 3; i++)
        if (dataloader_next(dl, &batch, err)) {
            fprintf(stderr, "fuzz_checkpoint: a restored loader fails: %s\n", err);
            abort();
        }
    return 0;
}
