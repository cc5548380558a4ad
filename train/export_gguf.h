/*
 * export_gguf.h: a model (the merged character) as a GGUF file that llama.cpp, Ollama and
 * transformers load, written as llama.cpp's own converter (convert_hf_to_gguf.py, class
 * LlamaModel, which also takes MistralForCausalLM) writes a Hugging Face checkpoint.
 *
 * Metadata (gguf-py's key names; integers UINT32, reals FLOAT32):
 *   general.architecture "llama", general.name, general.file_type (1 F16, 32 BF16, 7 Q8_0),
 *   general.quantization_version 2;
 *   llama.vocab_size, .context_length, .embedding_length, .block_count, .feed_forward_length,
 *   .attention.head_count, .attention.head_count_kv, .attention.layer_norm_rms_epsilon,
 *   .rope.freq_base, .rope.dimension_count (= head_dim: no partial rotary), and
 *   .attention.key_length / .value_length when head_dim is not hidden / heads (Mistral-Nemo);
 *   the tokenizer (gguf_vocab.h) and tokenizer.chat_template (chat_template.h).
 * Mistral's sliding window: llama.cpp's llama architecture has none. Its converter drops
 * config.sliding_window and llama.cpp attends to the whole context (it reads
 * {arch}.attention.sliding_window only for architectures built with windowed layers), and
 * transformers' GGUF loader maps no window for "llama" either. Full attention equals the
 * window's for the first W positions, so a windowed model's context_length is written as
 * min(max_position_embeddings, W): within it the file computes what the model was trained to
 * compute. llama.attention.sliding_window = W is written too, for readers that honour it (our
 * gguf_model.c does); llama.cpp and transformers ignore it.
 *
 * Tensors (ne = {in, out} for a weight [out, in]): token_embd, then per layer blk.N.attn_norm,
 * attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down, then
 * output_norm and output (left out when the head is tied to the embeddings: llama.cpp and
 * transformers then use token_embd). Norms are F32 (llama.cpp's ops want them so); every
 * matrix is the chosen type, except that Q8_0 needs rows that are a multiple of 32, and a
 * matrix whose rows are not is written as F16, as the converter falls back.
 * The Q/K permutation: llama.cpp rotates adjacent pairs (x[2j], x[2j+1]) of each head where
 * Hugging Face rotates halves (x[j], x[j + D/2]), so the converter reorders the rows of
 * q_proj (per query head) and k_proj (per KV head): HF row h*D + i*D/2 + j becomes row
 * h*D + 2j + i (LlamaModel.permute; i in {0, 1}, j < D/2). gguf_model.c undoes it.
 */
#ifndef PERSONA_EXPORT_GGUF_H
#define PERSONA_EXPORT_GGUF_H

#include "../tokenizer/chat.h"
#include "gguf_write.h"
#include "model.h"

typedef struct {
    GgmlType type;               // of the matrices: GGML_F16, GGML_BF16 or GGML_Q8_0
    const char *name;            // general.name
    Tokenizer *tok;              // the vocabulary, or NULL for none (tokenizer.ggml.model "no_vocab")
    const char *tokenizer_path;  // for messages
    ChatFormat chat_format;      // of the chat template (with a vocabulary)
    const char *system;          // the template's default system prompt, or NULL
    size_t system_len;
    int n_fallback;              // out: matrices written as F16 because Q8_0 could not hold their rows
} GgufExport;

// Checks that the tokenizer fits the model and the chat format (before anything is written).
// Returns 0, or -1 with the reason in err.
int export_gguf_check(const Model *m, const GgufExport *o, char *err);

// Writes m into w (opened, nothing added yet): metadata, tensor infos, header, every tensor;
// the caller finishes or aborts w. m's projections must be plain float32 weights (LoRA
// merged in, no NF4). Returns 0, or -1 with the reason in err.
int export_gguf(const Model *m, GgufExport *o, GgufWriter *w, char *err);

#endif
