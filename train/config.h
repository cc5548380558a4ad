/*
 * config.h: a Hugging Face `config.json` for a Mistral- or Llama-architecture model.
 *
 * Fields are read with transformers' semantics (configuration_mistral.py,
 * configuration_llama.py; reference/mistral.md §1):
 *   - the architecture sizes (hidden_size, intermediate_size, num_hidden_layers,
 *     num_attention_heads, vocab_size) must be present: a config without them describes no
 *     model we could check the weights against;
 *   - head_dim: when present it wins (Mistral-Nemo: 128 while hidden/heads = 160), otherwise
 *     hidden_size / num_attention_heads;
 *   - num_key_value_heads: absent means num_attention_heads (Llama) or 8 (Mistral's default);
 *   - sliding_window (Mistral only): ABSENT means 4096 (transformers' default), null means no
 *     window; Llama has none;
 *   - rms_norm_eps absent 1e-6, rope_theta absent 10000, tie_word_embeddings absent false,
 *     bos/eos token ids absent 1/2, as transformers defaults them.
 * Anything we do not implement is refused rather than ignored: a hidden_act other than
 * silu, rope_scaling, attention or MLP biases, a head count that the KV heads do not
 * divide. quantization_config, when present, must be bitsandbytes 4-bit NF4.
 */
#ifndef PERSONA_CONFIG_H
#define PERSONA_CONFIG_H

#include "../common/util.h"

typedef struct {
    char model_type[16];  // "mistral" or "llama"
    int hidden_size, intermediate_size, num_hidden_layers;
    int num_attention_heads, num_key_value_heads, head_dim;
    int vocab_size, max_position_embeddings;
    int sliding_window;  // keys visible to a query, self included; 0 = no window
    float rms_norm_eps;
    double rope_theta;
    int tie_word_embeddings;
    int bos_token_id, eos_token_id;
    char torch_dtype[16];  // "bfloat16", "float16", "float32" ("" when absent)
    // bitsandbytes 4-bit checkpoint (quantization_config.load_in_4bit)
    int bnb_4bit, bnb_double_quant;
} ModelConfig;

// Reads path (a config.json). Returns 0, or -1 with "path: field: reason" in err.
int config_load(ModelConfig *c, const char *path, char *err);

// The checks every source of a config makes on the attention sizes: the KV heads divide
// the heads, head_dim is even, heads x head_dim is at most 1e9. The names are the fields as
// the source calls them, for the message. Returns 0, or -1 with "path: field ..." in err.
int config_check_heads(const ModelConfig *c, const char *path, const char *kv_name, const char *heads_name,
                       const char *dim_name, char *err);

// One line describing the model, for programs' resolved-configuration output.
void config_describe(const ModelConfig *c, char *out, size_t n);

#endif
