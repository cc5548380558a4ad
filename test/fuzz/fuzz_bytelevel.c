// fuzz_bytelevel.c: Hugging Face tokenizer.json files of byte-level BPE
// (tokenizer/bytelevel.c), then the tokenizer they describe in use. Seeds: small
// tokenizer.json files trained by the tokenizers package (scripts/fuzz_seeds.py). The GGUF
// form of the same tokenizer is fuzz_gguf's.
#include <cjson/cJSON.h>

#include "../../tokenizer/bytelevel.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[ERR_LEN] = "";
    char *copy = fuzz_exact_copy(data, size);
    cJSON *root = cJSON_ParseWithLength(copy, size);
    free(copy);
    if (!root) return 0;
    ByteLevel *t = bytelevel_from_json("fuzz.json", root, err);
    cJSON_Delete(root);
    if (!t) {
        fuzz_check_message(err);
        return 0;
    }
    bytelevel_free(t);
    fuzz_use_tokenizer(fuzz_file("tokenizer.json", data, size));
    return 0;
}
