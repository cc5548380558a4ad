// fuzz_checkpoint.c: training checkpoints (train/run.c's checkpoint_read: a safetensors file
// with the run's settings, LoRA weights and AdamW moments, the data loader's state and the
// step, under a CRC32) against a small run made at start: one shard, two LoRA matrices,
// --steps 10. A checkpoint it accepts must leave a data loader that draws batches. Two
// CRC32s guard a checkpoint (the data loader's state has its own, and the checkpoint's covers
// every tensor), which a mutation almost never keeps right; so each input is tried as it is
// (the CRC checks themselves), then with both CRCs recomputed as the writer would, which lets
// mutations reach the step's bounds and the loader state's checks. Seeds: written at start
// by checkpoint_write for that run (steps 3 and 10) into the first corpus directory on the
// command line, so that they always match the format being fuzzed.
#include <sys/stat.h>
#include <zlib.h>

#include "../../data/dataloader.h"
#include "../../data/shard.h"
#include "../../train/run.h"
#include "../../train/safetensors.h"
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
            size_t ds = dataloader_state_size(dl);
            uint8_t *loader_state = xmalloc(ds);  // one rank's
            dataloader_state_save(dl, loader_state);
            int rc = checkpoint_write(path, params, 2, loader_state, ds, &state, settings, crc, err);
            free(loader_state);
            if (rc) {
                fprintf(stderr, "fuzz_checkpoint: %s\n", err);
                exit(1);
            }
        }
        break;
    }
    return 0;
}

static void read_checkpoint(const uint8_t *data, size_t size) {
    char err[ERR_LEN] = "", crc[16] = "";
    RunState state = {0, 0};
    if (checkpoint_read(fuzz_file("checkpoint.safetensors", data, size), params, 2, settings, STEPS, 1, dl, &state, NULL,
                        crc, err)) {
        fuzz_check_message(err);
        return;
    }
    if (state.step < 1 || state.step > STEPS || strlen(crc) != 8) abort();
    for (int i = 0; i < 3; i++)
        if (dataloader_next(dl, &batch, err)) {
            fprintf(stderr, "fuzz_checkpoint: a restored loader fails: %s\n", err);
            abort();
        }
}

// Recomputes copy's CRCs in place (copy holds the same bytes as the file st maps): the
// loader state's last 4 bytes, then the checkpoint's "crc32" metadata over the tensors in
// checkpoint_write's order. Leaves copy as it is where a tensor is missing.
static void fix_crcs(uint8_t *copy, const SafeTensors *st) {
    const StTensor *ds = st_find(st, "run.dataloader");
    if (!ds || ds->nbytes < 4) return;
    size_t at = (size_t)((const uint8_t *)ds->data - (const uint8_t *)st->map) + ds->nbytes - 4;
    uint32_t loader_crc = (uint32_t)crc32(0L, copy + at - (ds->nbytes - 4), (uInt)(ds->nbytes - 4));
    memcpy(copy + at, &loader_crc, 4);
    uLong c = crc32(0L, Z_NULL, 0);
    for (int k = 0; k < 8; k++) {
        static const char *const suffix[3] = {"", ".adam_m", ".adam_v"};
        char name[112];
        if (k < 6) snprintf(name, sizeof(name), "%s%s", params[k / 3].name, suffix[k % 3]);
        else snprintf(name, sizeof(name), k == 6 ? "run.dataloader" : "run.scalars");
        const StTensor *t = st_find(st, name);
        if (!t) return;
        c = crc32(c, copy + ((const uint8_t *)t->data - (const uint8_t *)st->map), (uInt)t->nbytes);
    }
    uint64_t header;
    memcpy(&header, copy, 8);
    char hex[9];
    snprintf(hex, sizeof(hex), "%08x", (unsigned)c);
    static const char key[] = "\"crc32\":\"";
    for (size_t i = 8; i + sizeof(key) - 1 + 8 <= 8 + header; i++)
        if (!memcmp(copy + i, key, sizeof(key) - 1)) {
            memcpy(copy + i + sizeof(key) - 1, hex, 8);
            break;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    read_checkpoint(data, size);
    char err[ERR_LEN];
    SafeTensors st;
    if (st_open(&st, fuzz_file("checkpoint.safetensors", data, size), err)) return 0;
    uint8_t *fixed = (uint8_t *)fuzz_exact_copy(data, size);
    fix_crcs(fixed, &st);
    st_close(&st);
    if (memcmp(fixed, data, size)) read_checkpoint(fixed, size);
    free(fixed);
    return 0;
}
