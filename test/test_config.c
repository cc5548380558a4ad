// test_config.c: config.json with transformers' semantics (reference/mistral.md §1, §9).
//
// The configs below are the published ones of Mistral-7B v0.1, v0.3 and Mistral-Nemo (the
// fields that matter, as reference/mistral.md §1 quotes them), a Llama config, and broken
// variants that must be refused with the file and the field named.
#include <unistd.h>

#include "../train/config.h"
#include "test.h"

static int load_text(ModelConfig *c, const char *json, char *err) {
    char path[] = "/tmp/config_test_XXXXXX";
    int fd = mkstemp(path);
    size_t n = strlen(json);
    int ok = write(fd, json, n) == (ssize_t)n;
    close(fd);
    int rc = ok ? config_load(c, path, err) : -1;
    if (rc && !strstr(err, path)) printf("  error does not name the file: %s\n", err);
    unlink(path);
    return rc;
}

#define MISTRAL_7B_V01                                                                          \
    "{\"architectures\": [\"MistralForCausalLM\"], \"model_type\": \"mistral\", \"hidden_act\": \"silu\", " \
    "\"hidden_size\": 4096, \"intermediate_size\": 14336, \"num_hidden_layers\": 32, "                \
    "\"num_attention_heads\": 32, \"num_key_value_heads\": 8, \"max_position_embeddings\": 32768, "  \
    "\"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-05, \"sliding_window\": 4096, "                   \
    "\"vocab_size\": 32000, \"bos_token_id\": 1, \"eos_token_id\": 2, \"tie_word_embeddings\": false, " \
    "\"torch_dtype\": \"bfloat16\"}"

TEST(mistral_7b_v01) {
    ModelConfig c;
    char err[ERR_LEN];
    CHECK_INT(load_text(&c, MISTRAL_7B_V01, err), 0);
    CHECK_STR(c.model_type, "mistral");
    CHECK_INT(c.head_dim, 128);
    CHECK_INT(c.num_key_value_heads, 8);
    CHECK_INT(c.sliding_window, 4096);
    CHECK(c.rms_norm_eps == 1e-5f && c.rope_theta == 10000.0);
    CHECK_STR(c.torch_dtype, "bfloat16");
    CHECK_INT(c.bnb_4bit, 0);
}

TEST(window_null_absent_and_head_dim) {
    ModelConfig c;
    char err[ERR_LEN];
    // v0.3: "sliding_window": null means no window
    CHECK_INT(load_text(&c, "{\"model_type\": \"mistral\", \"hidden_size\": 4096, \"intermediate_size\": 14336, "
                            "\"num_hidden_layers\": 32, \"num_attention_heads\": 32, \"num_key_value_heads\": 8, "
                            "\"rope_theta\": 1000000.0, \"sliding_window\": null, \"vocab_size\": 32768}", err), 0);
    CHECK_INT(c.sliding_window, 0);
    CHECK(c.rope_theta == 1e6);
    // absent: transformers' MistralConfig default of 4096; absent eps: 1e-6
    CHECK_INT(load_text(&c, "{\"model_type\": \"mistral\", \"hidden_size\": 64, \"intermediate_size\": 128, "
                            "\"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"vocab_size\": 100}", err), 0);
    CHECK_INT(c.sliding_window, 4096);
    CHECK(c.rms_norm_eps == 1e-6f);
    CHECK_INT(c.num_key_value_heads, 8);  // MistralConfig.num_key_value_heads defaults to 8
    // Nemo: head_dim 128 although hidden/heads = 160
    CHECK_INT(load_text(&c, "{\"model_type\": \"mistral\", \"hidden_size\": 5120, \"intermediate_size\": 14336, "
                            "\"num_hidden_layers\": 40, \"num_attention_heads\": 32, \"num_key_value_heads\": 8, "
                            "\"head_dim\": 128, \"sliding_window\": null, \"vocab_size\": 131072}", err), 0);
    CHECK_INT(c.head_dim, 128);
}

TEST(llama_and_bnb_4bit) {
    ModelConfig c;
    char err[ERR_LEN];
    // Llama: no num_key_value_heads means one per query head; no window
    CHECK_INT(load_text(&c, "{\"model_type\": \"llama\", \"hidden_size\": 256, \"intermediate_size\": 688, "
                            "\"num_hidden_layers\": 4, \"num_attention_heads\": 8, \"vocab_size\": 32000}", err), 0);
    CHECK_INT(c.num_key_value_heads, 8);
    CHECK_INT(c.sliding_window, 0);
    CHECK_INT(c.head_dim, 32);
    CHECK_INT(load_text(&c, "{\"model_type\": \"mistral\", \"hidden_size\": 4096, \"intermediate_size\": 14336, "
                            "\"num_hidden_layers\": 32, \"num_attention_heads\": 32, \"vocab_size\": 32000, "
                            "\"quantization_config\": {\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": true, "
                            "\"bnb_4bit_quant_type\": \"nf4\", \"bnb_4bit_use_double_quant\": true}}", err), 0);
    CHECK_INT(c.bnb_4bit, 1);
    CHECK_INT(c.bnb_double_quant, 1);
}

static void refused(const char *json, const char *want) {
    ModelConfig c;
    char err[ERR_LEN] = "";
    CHECK_INT(load_text(&c, json, err), -1);
    CHECK_CONTAINS(err, want);
}

#define BASE "\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"vocab_size\": 100, \"num_key_value_heads\": 1"
TEST(bad_configs_are_refused) {
    refused("{\"model_type\": \"mistral\", \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
            "\"num_attention_heads\": 4, \"vocab_size\": 100}", "hidden_size: missing");
    refused("{\"model_type\": \"mistral\", \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
            "\"vocab_size\": 100, \"num_attention_heads\": 4}",
            "num_key_value_heads 8 does not divide num_attention_heads 4");  // Mistral's default of 8
    refused("{\"model_type\": \"mistral\", " BASE ", \"num_attention_heads\": 5}", "not a multiple of num_attention_heads");
    refused("{\"model_type\": \"mistral\", " BASE ", \"num_attention_heads\": 4, \"hidden_act\": \"gelu\"}", "hidden_act");
    refused("{\"model_type\": \"llama\", " BASE ", \"num_attention_heads\": 4, \"rope_scaling\": {\"type\": \"linear\"}}",
            "rope_scaling");
    refused("{\"model_type\": \"llama\", " BASE ", \"num_attention_heads\": 4, \"sliding_window\": 16}", "sliding_window");
    refused("{\"model_type\": \"llama\", " BASE ", \"num_attention_heads\": 4, \"attention_bias\": true}", "bias");
    refused("{\"model_type\": \"gpt2\", " BASE ", \"num_attention_heads\": 4}", "model_type");
    refused("{\"model_type\": \"mistral\", " BASE ", \"num_attention_heads\": -4}", "num_attention_heads: not a positive integer");
    // each size fits an int, their product would not
    refused("{\"model_type\": \"mistral\", " BASE ", \"num_attention_heads\": 4, \"head_dim\": 1000000000}",
            "num_attention_heads x head_dim = 4000000000 is beyond any model");
    refused("{\"model_type\": \"mistral\", " BASE ", \"num_attention_heads\": 4, \"quantization_config\": "
            "{\"quant_method\": \"gptq\"}}", "quantization_config");
    refused("{\"model_type\": ", "not valid JSON");
    ModelConfig c;
    char err[ERR_LEN];
    CHECK_INT(config_load(&c, "/nonexistent/config.json", err), -1);
    CHECK_CONTAINS(err, "cannot open");
}

int main(void) {
    RUN(mistral_7b_v01);
    RUN(window_null_absent_and_head_dim);
    RUN(llama_and_bnb_4bit);
    RUN(bad_configs_are_refused);
    return test_summary();
}
