// fuzz_tekken.c: tekken.json files (tokenizer/tekken.c), then the tokenizer they describe in
// use (its split regex, merges and special tokens). Seeds: small tekken.json files cut from
// mistral-common's (scripts/fuzz_seeds.py).
#include "../../tokenizer/tekken.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[ERR_LEN] = "";
    char *copy = fuzz_exact_copy(data, size);
    Tekken *t = tekken_load("fuzz.json", copy, size, err);
    free(copy);
    if (!t) {
        fuzz_check_message(err);
        return 0;
    }
    tekken_free(t);
    fuzz_use_tokenizer(fuzz_file("tekken.json", data, size));
    return 0;
}
