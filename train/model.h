/*
 * model.h: the Mistral / Llama decoder with LoRA, forward and backward, CPU reference (fp32).
 *
 * transformers' MistralForCausalLM (reference/mistral.md §4), pre-norm:
 *   x = embed[tokens]
 *   per layer:  h = rmsnorm(x, ln1);  q, k, v = h Wq^T, h Wk^T, h Wv^T;  RoPE on q and k
 *               x = x + attention(q, k, v) Wo^T          (GQA, causal, window, conversations)
 *               h = rmsnorm(x, ln2);  x = x + (silu(h Wg^T) * (h Wu^T)) Wd^T
 *   logits = rmsnorm(x, norm) Wlm^T;  loss over trained tokens (cross_entropy.h)
 * Every projection P may carry a LoRA adapter: P(x) = x W^T + s (x A^T) B^T (lora.h). Only
 * A and B get gradients; embeddings, norms, frozen weights and the head do not. Frozen
 * projection weights are kept as float32 or, for QLoRA, in NF4 (nf4.h), dequantized when
 * used (or, for inference, in bf16: half the bytes of float32 to read per token). A batch
 * is a packed sequence of T tokens with, per token, its position (restarting
 * at 0 in each conversation), its conversation id, the target id (the next token) and the
 * target's loss weight (0 = not trained).
 */
#ifndef PERSONA_MODEL_H
#define PERSONA_MODEL_H

#include <stdint.h>

#include "config.h"
#include "nf4.h"

enum { PROJ_Q, PROJ_K, PROJ_V, PROJ_O, PROJ_GATE, PROJ_UP, PROJ_DOWN, N_PROJ };
extern const char *const proj_names[N_PROJ];  // "self_attn.q_proj", ..., "mlp.down_proj"
extern const char *const proj_short[N_PROJ];  // "q_proj", ..., "down_proj"

// How the frozen projection weights are held (model_load's `frozen`).
enum { FROZEN_F32 = 0, FROZEN_NF4 = 1, FROZEN_BF16 = 2 };

typedef struct {
    int in, out;
    float *w;         // frozen weight [out, in] in float32, or NULL when held otherwise:
    uint16_t *w_bf16; //   in bf16 (round to nearest even),
    Nf4Weight q;      //   or in NF4 (q.packed not NULL)
    float *A, *B;     // LoRA [r, in] and [out, r]; NULL when this projection has none
    float *dA, *dB;   // their gradients, accumulated by model_step
} Linear;

typedef struct {
    float *ln1, *ln2;
    Linear proj[N_PROJ];
} Layer;

typedef struct {
    ModelConfig c;
    float *embed, *norm, *head;  // [V, H], [H], [V, H]; head == embed when they are tied,
                                 // NULL after model_head_to_bf16
    uint16_t *head_bf16;         // the head in bf16 after model_head_to_bf16, else NULL
    Layer *layers;
    int lora_r;
    float lora_alpha, lora_scale;
    int lora_rslora;
    float lora_dropout;    // probability of dropping a LoRA input element while training
    uint64_t dropout_rng;  // the generator of the dropout masks (part of a run's state)
    // Where the dropout masks come from: NULL draws them from dropout_rng; check_fixture
    // sets it to feed the masks its reference used. Fills mask [T, in] (0 or 1 / (1 - p))
    // for projection proj of layer `layer`.
    void (*dropout_masks)(void *ctx, int layer, int proj, float *mask, int T, int in);
    void *dropout_masks_ctx;
    float *work;           // model_step's activations and scratch, kept from one call to the next
    size_t work_floats;    //   (the largest any call needed; freed by model_free)
} Model;

typedef struct {
    int T;
    const int32_t *tokens, *positions, *seg, *targets;
    const float *weights;
} ModelInput;

// Loads a model: a Hugging Face directory (config.json and the weights: float32, bf16 or
// fp16, or a bitsandbytes-4bit checkpoint) or a GGUF file (gguf_model.c). frozen says how
// the projection weights are held: FROZEN_F32; FROZEN_NF4, quantized (blocksize 64, double
// quantization) as QLoRA does; FROZEN_BF16, rounded to bf16 (1 = FROZEN_NF4, so a flag
// "nf4" passes as it is). A bitsandbytes-4bit checkpoint stays in NF4 whatever it says.
int model_load(Model *m, const char *dir, int frozen, char *err);
void model_free(Model *m);
// Only the configuration of what model_load would load (config.json, or a GGUF file's
// metadata), without reading weights.
int model_config_load(ModelConfig *c, const char *dir, char *err);
// A GGUF file (architecture llama), see gguf_model.c.
int gguf_model_load(Model *m, const char *path, int frozen, char *err);
int gguf_model_config(ModelConfig *c, const char *path, char *err);
// For loaders: sets a projection's in/out sizes from the config; takes a float32 weight
// [out, in] (malloc'ed) as the frozen weight, kept, or held as `frozen` says (and freed).
void model_linear_shape(Linear *l, const ModelConfig *c, int p);
void model_linear_set(Linear *l, float *w, int frozen);

// Replaces the float32 LM head by its bf16 rounding (decoding reads the head once per token,
// and in NF4 or bf16 models it is the biggest matrix read; exact for a bf16 checkpoint).
void model_head_to_bf16(Model *m);

// The frozen weight of a projection as float32 [out, in], into w.
void linear_frozen_f32(const Linear *l, float *w);

// For loaders: x (n float32 weights of tensor `name` in `file`, malloc'ed) when every value
// is finite; otherwise frees it and returns NULL with "FILE: tensor 'NAME' holds nan at
// element I" in err. A NaN weight would make every loss NaN, or, quantized to NF4, silently
// become a finite number.
float *model_weight_finite(float *x, int64_t n, const char *file, const char *name, char *err);

// A model of this configuration holding no weights: the layers and their projections'
// shapes only, ready for model_lora_init, peft_adapter_save and the checkpoint's tensor
// list (train_gpu keeps the weights themselves on the GPU). model_free frees it.
void model_init_empty(Model *m, const ModelConfig *c);

// "all" or a comma-separated list of projections ("q" or "q_proj", ..., "down" or
// "down_proj") into a mask (bit i = projection i). Returns 0, or -1 when a name is unknown
// or the list is empty.
int model_parse_targets(const char *list, unsigned *mask);

// Adds LoRA to the projections in targets (bit i = projection i) with PEFT's init.
void model_lora_init(Model *m, unsigned targets, int r, float alpha, int rslora, uint64_t seed);

// Forward pass over a batch; returns sum over tokens of weight * cross-entropy. With
// backward set, accumulates grad_scale * d(that sum)/d(A, B) into every dA, dB, and LoRA
// dropout (lora_dropout > 0) is applied, each projection drawing its own mask from
// dropout_rng as PEFT gives every adapted module its own Dropout. When
// logits is not NULL it receives the [T, V] logits (tests; the training path never
// materialises them). Its buffers stay allocated in m->work for the next call, so a step
// does not fault a gigabyte of fresh pages in and out (zeroed by the kernel) each time.
double model_step(Model *m, const ModelInput *b, float grad_scale, int backward, float *logits);

#endif
