#!/usr/bin/env python3
"""Writes tiny random Mistral/Llama models and what transformers + PEFT compute with them,
the reference that train/model.c must match (fp32 vs fp32).

For each configuration NAME it writes test/fixtures/tiny/NAME/:
  config.json, model.safetensors    MistralForCausalLM / LlamaForCausalLM, random fp32
                                    weights (save_pretrained)
  adapter/                          PEFT LoRA on all seven projections (r 4, alpha 8), with
                                    lora_B set to small random values so every gradient is
                                    non-zero (PEFT's own init has B = 0)
  expected.safetensors              input_ids [B, S] and labels [B, S] (-100 = no loss),
                                    logits [B, S, V] (float32), loss (mean over labelled
                                    tokens, transformers' ForCausalLMLoss), and the gradient
                                    of that loss for every LoRA A and B, keyed like the
                                    adapter file ("<module>.lora_A.weight"), and
                                    adamw_losses [10]: the loss before each of 10
                                    torch.optim.AdamW steps on the LoRA weights (lr 1e-2,
                                    weight decay 0.01, the same batch every step)
  merged_projections.safetensors    (mistral_window only) PEFT's merge_and_unload of the
                                    saved adapter: every projection weight, float32

For "mistral_window" it also writes mistral_window_bnb4bit/: the same model loaded by
transformers with BitsAndBytesConfig(load_in_4bit, nf4, double quantization) and saved, in
bitsandbytes' own checkpoint layout. (No logits are computed from it here: bitsandbytes'
CPU backend cannot run matmuls of these tiny shapes, and its CPU dequantize_4bit does not
read a [48, 48] weight in the layout it saved; test_bnb4bit.c checks bitsandbytes'
dequantization on shapes where it does.)

Configurations: "mistral_window" (sliding window 5 < sequence length 12, 4 query heads on
2 KV heads, head_dim 12), "mistral_gqa" (no window, 6 heads on 2 KV heads, explicit head_dim
8 != hidden / heads), "llama" (Llama architecture, no window, no GQA).

  pip install torch==2.15.0 transformers==5.24.0 peft==0.21.2 bitsandbytes==0.50.2 safetensors==0.8.0
  python scripts/model_fixtures.py test/fixtures/tiny

and, to check that PEFT loads an adapter we write (the result is committed):
  make build/test/test_model && build/test/test_model --export-adapter /tmp/ours
  python scripts/model_fixtures.py check-adapter /tmp/ours test/fixtures/tiny/peft_loads_our_adapter.json
"""
import os
import sys

import bitsandbytes  # noqa: F401  (the 4-bit copy needs it)
import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(name, out_root, seed):
    torch.manual_seed(seed)
    common = dict(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                  max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
                  attn_implementation="eager")
    if name == "mistral_window":
        cfg = MistralConfig(num_attention_heads=4, num_key_value_heads=2, sliding_window=5,
                            rope_theta=10000.0, **common)
        model = MistralForCausalLM(cfg)
    elif name == "mistral_gqa":
        cfg = MistralConfig(num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                            sliding_window=None, rope_theta=1e6, **common)
        model = MistralForCausalLM(cfg)
    else:
        cfg = LlamaConfig(num_attention_heads=4, num_key_value_heads=4, rope_theta=10000.0, **common)
        model = LlamaForCausalLM(cfg)
    model = model.float().eval()
    with torch.no_grad():  # larger weights than the init's 0.02 std, so attention is not uniform
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)

    lcfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    pm = get_peft_model(model, lcfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.1)
    pm.save_pretrained(os.path.join(out, "adapter"))

    B, S = 2, 12
    ids = torch.randint(0, cfg.vocab_size, (B, S))
    labels = ids.clone()
    labels[0, :4] = -100  # a "user turn" with no loss
    labels[1, 7:9] = -100
    pm.zero_grad()
    res = pm(input_ids=ids, labels=labels)
    res.loss.backward()
    t = {"input_ids": ids.to(torch.int32), "labels": labels.to(torch.int32),
         "logits": res.logits.detach().float().contiguous(), "loss": res.loss.detach().reshape(1).float()}
    for n, p in pm.named_parameters():
        if p.grad is not None:
            key = n.replace(".default", "") + ".grad"
            t[key] = p.grad.detach().float().contiguous()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2,
                            betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = pm(input_ids=ids, labels=labels).loss
        loss.backward()
        losses.append(loss.item())
        opt.step()
    t["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)
    if name == "mistral_window":  # PEFT's merge of the saved adapter, for test_merge.sh
        from peft import PeftModel
        base = MistralForCausalLM.from_pretrained(out, dtype=torch.float32)
        merged = PeftModel.from_pretrained(base, os.path.join(out, "adapter")).merge_and_unload()
        save_file({k: v.contiguous() for k, v in merged.state_dict().items() if "_proj" in k},
                  os.path.join(out, "merged_projections.safetensors"))
    save_file(t, os.path.join(out, "expected.safetensors"),
              metadata={"torch": torch.__version__, "transformers": transformers.__version__,
                        "peft": peft.__version__})


def bnb_copy(out_root, name):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    src = os.path.join(out_root, name)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=q, device_map="cpu",
                                                 dtype=torch.float32, attn_implementation="eager")
    out = src + "_bnb4bit"
    model.save_pretrained(out)


def check_adapter(adapter_dir, result_path):
    """Loads an adapter written by persona.c (test_model --export-adapter DIR) into PEFT on
    the mistral_window base model and records whether every key loaded and whether PEFT's
    logits equal ours (DIR/our_logits.safetensors)."""
    import json
    import logging
    import warnings
    from peft import PeftModel
    from safetensors.torch import load_file
    base_dir = "test/fixtures/tiny/mistral_window"
    base = MistralForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager").eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(base, adapter_dir)
    messages = [str(w.message) for w in caught if "adapter keys" in str(w.message) or "missing" in str(w.message).lower()]
    ids = load_file(os.path.join(base_dir, "expected.safetensors"))["input_ids"].long()
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    ours = load_file(os.path.join(adapter_dir, "our_logits.safetensors"))["logits"]
    rel = ((logits - ours).abs().max() / logits.abs().max()).item()
    lora_params = sum(1 for n, _ in model.named_parameters() if "lora_" in n)
    result = {"peft": peft.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
              "missing_or_unexpected_key_warnings": messages, "lora_tensors_loaded": lora_params,
              "max_relative_logits_difference": rel, "ok": not messages and rel < 1e-4 and lora_params == 28}
    with open(result_path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(json.dumps(result))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "check-adapter":
        check_adapter(sys.argv[2], sys.argv[3])
        return
    out_root = sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/tiny"
    for i, name in enumerate(["mistral_window", "mistral_gqa", "llama"]):
        build(name, out_root, 100 + i)
    bnb_copy(out_root, "mistral_window")


if __name__ == "__main__":
    main()
