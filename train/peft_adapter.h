/*
 * peft_adapter.h: LoRA adapters in Hugging Face PEFT's format (reference/qlora.md §B.2-B.3).
 *
 *   DIR/adapter_model.safetensors   base_model.model.model.layers.{i}.{self_attn|mlp}.{P}.lora_A.weight [r, in]
 *                                   ... .lora_B.weight [out, r]          (float32)
 *   DIR/adapter_config.json         {"peft_type": "LORA", "r", "lora_alpha", "use_rslora",
 *                                    "target_modules": [...], "task_type": "CAUSAL_LM", ...}
 * Saving writes what PeftModel.from_pretrained needs to load with no missing or unexpected
 * keys; loading accepts what PEFT writes (extra config keys are ignored).
 */
#ifndef PERSONA_PEFT_ADAPTER_H
#define PERSONA_PEFT_ADAPTER_H

#include "model.h"
#include "safetensors.h"

// Reads DIR into the model's LoRA weights (allocating them). Returns 0 or -1 with err.
int peft_adapter_load(Model *m, const char *dir, char *err);
// The adapter file's key of a LoRA weight: base_model.model.model.layers.{layer}.{P}.lora_{A|B}.weight.
void peft_lora_key(char *out, size_t n, int layer, int p, int is_b);
// Fills the model's LoRA weights (model_lora_init made them) from st, where each is stored
// under its adapter key as F32 [r, in] or [out, r]; other tensors in st are ignored.
// Returns 0 or -1 with "FILE: tensor 'KEY' reason" in err.
int peft_lora_read(Model *m, const SafeTensors *st, char *err);
// One LoRA matrix of an adapter: A [r, in] (is_b = 0) or B [out, r] of projection proj of a
// layer, float32.
typedef struct {
    int layer, proj, is_b;
    int64_t rows, cols;
    const float *data;
} PeftMatrix;

// What adapter_config.json says besides the targets (which are those the matrices cover).
typedef struct {
    int r, rslora;
    float alpha, dropout;
    const char *base_model;  // may be NULL
} PeftSettings;

// Writes the matrices (in their order) and the config to DIR (created if needed), each file
// via a temporary name and rename. Returns 0 or -1 with err.
int peft_adapter_write(const char *dir, const PeftMatrix *mats, int n, const PeftSettings *s, char *err);
// The model's LoRA weights through peft_adapter_write. base_model may be NULL.
int peft_adapter_save(const Model *m, const char *dir, const char *base_model, float dropout, char *err);

#endif
