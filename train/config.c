// config.c: reading config.json with transformers' defaults (see config.h).
#include "config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// An integer field: 0 and *v set when present and a positive whole number, 1 when absent
// (and absent_ok), -1 with err otherwise.
static int int_field(const cJSON *root, const char *key, int *v, int absent_ok, const char *path, char *err) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!f || cJSON_IsNull(f)) {
        if (absent_ok) return 1;
        return set_error(err, "%s: %s: missing (it fixes the shape of the weights)", path, key);
    }
    double d = f->valuedouble;
    if (!cJSON_IsNumber(f) || d < 1 || d > 1e9 || d != floor(d))
        return set_error(err, "%s: %s: not a positive integer", path, key);
    *v = (int)d;
    return 0;
}

static int number_field(const cJSON *root, const char *key, double *v, const char *path, char *err) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!f) return 1;
    if (!cJSON_IsNumber(f) || !(f->valuedouble > 0)) return set_error(err, "%s: %s: not a positive number", path, key);
    *v = f->valuedouble;
    return 0;
}

static int is_true(const cJSON *root, const char *key) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, key)); }

static int read_quantization(ModelConfig *c, const cJSON *q, const char *path, char *err) {
    if (!q || cJSON_IsNull(q)) return 0;
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(q, "quant_method");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(q, "bnb_4bit_quant_type");
    if (!cJSON_IsString(method) || strcmp(method->valuestring, "bitsandbytes") != 0 || !is_true(q, "load_in_4bit"))
        return set_error(err, "%s: quantization_config: only bitsandbytes 4-bit checkpoints are supported", path);
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "nf4") != 0)
        return set_error(err, "%s: quantization_config.bnb_4bit_quant_type: only nf4 is supported", path);
    c->bnb_4bit = 1;
    c->bnb_double_quant = is_true(q, "bnb_4bit_use_double_quant");
    return 0;
}

int config_check_heads(const ModelConfig *c, const char *path, const char *kv_name, const char *heads_name,
                       const char *dim_name, char *err) {
    if (c->num_attention_heads % c->num_key_value_heads)
        return set_error(err, "%s: %s %d does not divide %s %d", path, kv_name, c->num_key_value_heads, heads_name,
                         c->num_attention_heads);
    if (c->head_dim % 2) return set_error(err, "%s: %s %d is odd (RoPE rotates pairs)", path, dim_name, c->head_dim);
    // the projections' widths are ints like the sizes themselves (at most 1e9 each)
    if ((int64_t)c->num_attention_heads * c->head_dim > 1000000000)
        return set_error(err, "%s: %s x %s = %lld is beyond any model", path, heads_name, dim_name,
                         (long long)c->num_attention_heads * c->head_dim);
    return 0;
}

static int read_config(ModelConfig *c, const cJSON *root, const char *path, char *err) {
    if (!cJSON_IsObject(root)) return set_error(err, "%s: not a JSON object", path);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt)) return set_error(err, "%s: model_type: missing", path);
    int mistral = strcmp(mt->valuestring, "mistral") == 0, llama = strcmp(mt->valuestring, "llama") == 0;
    if (!mistral && !llama)
        return set_error(err, "%s: model_type: \"%.40s\" is not a Mistral or Llama architecture", path, mt->valuestring);
    snprintf(c->model_type, sizeof(c->model_type), "%s", mt->valuestring);

    if (int_field(root, "hidden_size", &c->hidden_size, 0, path, err) < 0 ||
        int_field(root, "intermediate_size", &c->intermediate_size, 0, path, err) < 0 ||
        int_field(root, "num_hidden_layers", &c->num_hidden_layers, 0, path, err) < 0 ||
        int_field(root, "num_attention_heads", &c->num_attention_heads, 0, path, err) < 0 ||
        int_field(root, "vocab_size", &c->vocab_size, 0, path, err) < 0)
        return -1;
    c->num_key_value_heads = mistral ? 8 : c->num_attention_heads;
    c->head_dim = c->hidden_size / c->num_attention_heads;
    c->max_position_embeddings = mistral ? 4096 * 32 : 2048;
    c->bos_token_id = 1;
    c->eos_token_id = 2;
    if (int_field(root, "num_key_value_heads", &c->num_key_value_heads, 1, path, err) < 0 ||
        int_field(root, "head_dim", &c->head_dim, 1, path, err) < 0 ||
        int_field(root, "max_position_embeddings", &c->max_position_embeddings, 1, path, err) < 0 ||
        int_field(root, "bos_token_id", &c->bos_token_id, 1, path, err) < 0 ||
        int_field(root, "eos_token_id", &c->eos_token_id, 1, path, err) < 0)
        return -1;
    if (!cJSON_GetObjectItemCaseSensitive(root, "head_dim") && c->hidden_size % c->num_attention_heads)
        return set_error(err, "%s: hidden_size %d is not a multiple of num_attention_heads %d and head_dim is not given",
                         path, c->hidden_size, c->num_attention_heads);
    if (config_check_heads(c, path, "num_key_value_heads", "num_attention_heads", "head_dim", err)) return -1;

    c->sliding_window = 0;
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
    if (mistral && !sw) {
        c->sliding_window = 4096;  // transformers' MistralConfig default when the key is absent
    } else if (sw && !cJSON_IsNull(sw)) {
        if (!mistral) return set_error(err, "%s: sliding_window: a %s model has no sliding window", path, c->model_type);
        if (int_field(root, "sliding_window", &c->sliding_window, 0, path, err) < 0) return -1;
    }

    double eps = 1e-6, theta = 10000.0;
    if (number_field(root, "rms_norm_eps", &eps, path, err) < 0 || number_field(root, "rope_theta", &theta, path, err) < 0)
        return -1;
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");  // newer transformers
    if (rp && !cJSON_IsNull(rp)) {
        const cJSON *rt = cJSON_GetObjectItemCaseSensitive(rp, "rope_type");
        if (cJSON_IsString(rt) && strcmp(rt->valuestring, "default") != 0)
            return set_error(err, "%s: rope_parameters.rope_type \"%.40s\" is not supported (only default RoPE)", path,
                             rt->valuestring);
        if (number_field(rp, "rope_theta", &theta, path, err) < 0) return -1;
    }
    c->rms_norm_eps = (float)eps;
    c->rope_theta = theta;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) return set_error(err, "%s: rope_scaling: not supported (only default RoPE)", path);
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0))
        return set_error(err, "%s: hidden_act: only silu (SwiGLU) is supported", path);
    if (is_true(root, "attention_bias") || is_true(root, "mlp_bias"))
        return set_error(err, "%s: attention_bias/mlp_bias: biases are not supported", path);
    c->tie_word_embeddings = is_true(root, "tie_word_embeddings");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype");
    if (!dt) dt = cJSON_GetObjectItemCaseSensitive(root, "dtype");  // the newer name
    if (cJSON_IsString(dt)) snprintf(c->torch_dtype, sizeof(c->torch_dtype), "%s", dt->valuestring);
    return read_quantization(c, cJSON_GetObjectItemCaseSensitive(root, "quantization_config"), path, err);
}

int config_load(ModelConfig *c, const char *path, char *err) {
    memset(c, 0, sizeof(*c));
    size_t len;
    char *text = read_file(path, &len, err);
    if (!text) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    int rc = root ? read_config(c, root, path, err) : set_error(err, "%s: not valid JSON", path);
    cJSON_Delete(root);
    free(text);
    return rc;
}

void config_describe(const ModelConfig *c, char *out, size_t n) {
    char window[32] = "none";
    if (c->sliding_window) snprintf(window, sizeof(window), "%d", c->sliding_window);
    snprintf(out, n,
             "%s: %d layers, hidden %d, intermediate %d, heads %d (kv %d, head_dim %d), vocab %d, "
             "window %s, rope_theta %g, rms_eps %g%s",
             c->model_type, c->num_hidden_layers, c->hidden_size, c->intermediate_size, c->num_attention_heads,
             c->num_key_value_heads, c->head_dim, c->vocab_size, window, c->rope_theta, (double)c->rms_norm_eps,
             c->bnb_4bit ? ", bitsandbytes nf4" : "");
}
