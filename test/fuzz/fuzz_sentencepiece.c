// fuzz_sentencepiece.c: tokenizer.model files (tokenizer/sentencepiece.c's protobuf reader),
// then the tokenizer they describe in use. Seeds: small SentencePiece BPE models trained by
// the sentencepiece package (scripts/fuzz_seeds.py).
#include "../../tokenizer/sentencepiece.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[ERR_LEN] = "";
    char *copy = fuzz_exact_copy(data, size);
    SentencePiece *m = spm_load("fuzz.model", copy, size, err);
    free(copy);
    if (!m) {
        fuzz_check_message(err);
        return 0;
    }
    spm_free(m);
    fuzz_use_tokenizer(fuzz_file("tokenizer.model", data, size));
    return 0;
}
