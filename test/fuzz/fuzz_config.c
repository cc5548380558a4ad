// fuzz_config.c: Hugging Face config.json files (train/config.c). A config it accepts must
// describe a model the rest of the code can size: positive dimensions, heads that divide.
// Seeds: every config.json under test/fixtures/.
#include "../../train/config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[ERR_LEN] = "";
    ModelConfig c;
    if (config_load(&c, fuzz_file("config.json", data, size), err)) {
        fuzz_check_message(err);
        return 0;
    }
    if (c.hidden_size < 1 || c.intermediate_size < 1 || c.num_hidden_layers < 1 || c.num_attention_heads < 1 ||
        c.num_key_value_heads < 1 || c.head_dim < 1 || c.vocab_size < 1 ||
        c.num_attention_heads % c.num_key_value_heads != 0) {
        fprintf(stderr, "fuzz_config: accepted a config with sizes no model has\n");
        abort();
    }
    char line[512];
    config_describe(&c, line, sizeof(line));
    return 0;
}
