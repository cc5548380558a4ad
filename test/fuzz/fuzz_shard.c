// fuzz_shard.c: token shards (data/shard.c). A shard it accepts is then read as the
// trainers read it: every token and mask byte, the data loader drawing batches from it
// (several epochs' worth for a small shard), its state saved and restored, and the
// evaluation loader going through it once. Every byte of a shard is under a CRC32, which a
// mutation almost never keeps right, so each input is tried twice: as it is (the CRC checks
// themselves), then with its CRCs recomputed as the writer would (shard.h's layout), which
// lets mutations of the fields and contents reach the checks after the CRCs. Seeds: shards
// that prep writes from the JSONL fixtures with a SentencePiece (16-bit ids) and a Tekken
// (32-bit ids) tokenizer (scripts/fuzz_seeds.py).
#include <zlib.h>

#include "../../data/dataloader.h"
#include "../../data/shard.h"
#include "fuzz.h"

static void use_shard(const uint8_t *data, size_t size) {
    char err[ERR_LEN] = "";
    const char *path = fuzz_file("shard.bin", data, size);
    Shard s;
    if (shard_open(&s, path, 0, err)) {
        fuzz_check_message(err);
        return;
    }
    uint64_t trained = 0;
    for (uint64_t i = 0; i < s.h.n_tokens; i++) {
        if (shard_token(&s, i) >= s.h.vocab_size) abort();
        trained += s.mask[i];
    }
    if (trained != s.h.n_trained) abort();
    shard_close(&s);

    LoaderConfig cfg = {.batch = 2, .seq_len = 16, .seed = 1, .rank = 0, .world = 1};
    Dataloader *dl = dataloader_open(&path, 1, &cfg, err);
    if (dl) {
        Batch b;
        batch_init(&b, cfg.batch, cfg.seq_len);
        size_t n = dataloader_state_size(dl);
        uint8_t *state = malloc(n);
        for (int i = 0; i < 8; i++) {
            if (dataloader_next(dl, &b, err)) {
                fuzz_check_message(err);
                break;
            }
            if (i == 3) dataloader_state_save(dl, state);
        }
        if (dataloader_state_restore(dl, state, n, err)) {
            fprintf(stderr, "fuzz_shard: the loader refuses its own state: %s\n", err);
            abort();
        }
        free(state);
        batch_free(&b);
        dataloader_close(dl);
    } else {
        fuzz_check_message(err);
    }
    EvalLoader *ev = evalloader_open(&path, 1, &cfg, err);
    if (ev) {
        Batch b;
        batch_init(&b, cfg.batch, cfg.seq_len);
        for (int i = 0; i < 64 && evalloader_next(ev, &b); i++) {}
        batch_free(&b);
        evalloader_close(ev);
    }
}

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    use_shard(data, size);
    if (size < SHARD_HEADER_BYTES) return 0;
    // the section CRCs (the table at 136: offset, size, CRC32, reserved), then the header's
    uint8_t *fixed = (uint8_t *)fuzz_exact_copy(data, size);
    for (int i = 0; i < SHARD_SECTIONS; i++) {
        uint8_t *entry = fixed + 136 + 24 * i;
        uint64_t off = le64(entry), n = le64(entry + 8);
        if (off <= size && n <= size - off && n <= UINT32_MAX) put32(entry + 16, (uint32_t)crc32(0L, fixed + off, (uInt)n));
    }
    put32(fixed + 252, (uint32_t)crc32(0L, fixed, 252));
    if (memcmp(fixed, data, size)) use_shard(fixed, size);
    free(fixed);
    return 0;
}
