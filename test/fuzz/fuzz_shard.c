// fuzz_shard.c: token shards (data/shard.c). A shard it accepts is then read as the
// trainers read it: every token and mask byte, the data loader drawing batches from it
// (several epochs' worth for a small shard), its state saved and restored, and the
// evaluation loader going through it once. Seeds: shards that prep writes from the JSONL
// fixtures with a SentencePiece (16-bit ids) and a Tekken (32-bit ids) tokenizer
// (scripts/fuzz_seeds.py).
#include "../../data/dataloader.h"
#include "../../data/shard.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[ERR_LEN] = "";
    const char *path = fuzz_file("shard.bin", data, size);
    Shard s;
    if (shard_open(&s, path, 0, err)) {
        fuzz_check_message(err);
        return 0;
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
    return 0;
}
