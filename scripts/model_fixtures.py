#!/usr/bin/env python3
"""Writes tiny random Mistral/Llama models and what transformers + PEFT compute with them,
the reference that train/model.c must match (fp32 vs fp32).

For each configuration NAME it writes test/fixtures/tiny/NAME/:
  config.json, model.safetensors    MistralForCausalLM / LlamaForCausalLM, random fp32
                                    weights (save_pretrained)
  adapter/                          PEFT LoRA on all seven projections (r 4, alpha 8), with
                                    lora_B set to small random values so every gradient is
                                    non-zero (PEFT's own init has B = 0)
  expected.safetensors              the fixture: everything `check_fixture MODEL_DIR FILE`
                                    needs besides the model, and what transformers computed:
                                    input_ids [B, S] and labels [B, S] (int32, -100 = no
                                    loss; row b is one sequence, positions 0..S-1); the LoRA
                                    weights before any step, keyed as in the adapter file
                                    ("<module>.lora_A.weight"); logits [B, S, V] (float32);
                                    loss [1] (mean over labelled tokens, transformers'
                                    ForCausalLMLoss); the gradient of that loss for every
                                    LoRA A and B ("<module>.lora_A.weight.grad"); and
                                    adamw_losses [steps]: the loss before each of `steps`
                                    torch.optim.AdamW steps on the LoRA weights, the same
                                    batch every step. Metadata (strings): the torch,
                                    transformers and peft versions; lora_r, lora_alpha,
                                    use_rslora, target_modules (comma-separated); adamw_lr,
                                    adamw_beta1, adamw_beta2, adamw_eps, adamw_weight_decay,
                                    adamw_steps
  merged_projections.safetensors    (mistral_window only) PEFT's merge_and_unload of the
                                    saved adapter: every projection weight, float32

For "mistral_window" it also writes mistral_window_bnb4bit/: the same model loaded by
transformers with BitsAndBytesConfig(load_in_4bit, nf4, double quantization) and saved, in
bitsandbytes' own checkpoint layout. (No logits are computed from it here: bitsandbytes'
CPU backend cannot run matmuls of these tiny shapes, and its CPU dequantize_4bit does not
read a [48, 48] weight in the layout it saved; test_bnb4bit.c checks bitsandbytes'
dequantization on shapes where it does.)

For "mistral_window" it also writes mistral_window_bf16/ (the fp32 model cast to bfloat16
and saved: config dtype bfloat16, BF16 weights) and mistral_window_bf16_bnb4bit/: that bf16
checkpoint loaded in bfloat16 with the same BitsAndBytesConfig and bnb_4bit_compute_dtype
bfloat16, as one would load a bf16 checkpoint for QLoRA. The compute dtype is only recorded
in the config (the saved tensors are the same bytes with float32), and persona.c's loader
ignores it: it dequantizes to float32 and computes in float32. Only these two, without
rewriting the others:
  python scripts/model_fixtures.py bf16 test/fixtures/tiny

Configurations: "mistral_window" (sliding window 5 < sequence length 12, 4 query heads on
2 KV heads, head_dim 12), "mistral_gqa" (no window, 6 heads on 2 KV heads, explicit head_dim
8, as hidden / heads), "llama" (Llama architecture, no window, no GQA); each with LoRA r 4,
alpha 8 on all seven projections, a batch of 2 x 12, 10 AdamW steps at lr 1e-2, weight
decay 0.01.

  pip install torch==2.15.0 transformers==5.24.0 peft==0.21.2 bitsandbytes==0.50.2 safetensors==0.8.0
  python scripts/model_fixtures.py test/fixtures/tiny

Any other configuration, into one directory (model, adapter/, expected.safetensors), for
`./check_fixture DIR DIR/expected.safetensors` (`one --help` lists the options):
  python scripts/model_fixtures.py one OUT_DIR --num-attention-heads 8 --num-key-value-heads 2 \
      --head-dim 4 --sliding-window 3 --lora-r 2 --rslora --targets q_proj,v_proj,down_proj

and, to check that PEFT loads an adapter we write (the result is committed):
  make build/test/test_model && build/test/test_model --export-adapter runs/our-adapter
  python scripts/model_fixtures.py check-adapter runs/our-adapter test/fixtures/tiny/peft_loads_our_adapter.json
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


# The committed configurations: model config fields, and the seed of everything random.
COMMON = dict(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
              max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False)
CONFIGS = {
    "mistral_window": dict(arch="mistral", seed=100, num_attention_heads=4, num_key_value_heads=2,
                           sliding_window=5, rope_theta=10000.0),
    "mistral_gqa": dict(arch="mistral", seed=101, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                        sliding_window=None, rope_theta=1e6),
    "llama": dict(arch="llama", seed=102, num_attention_heads=4, num_key_value_heads=4, rope_theta=10000.0),
}
# What is done with a model: LoRA, the batch, the optimizer (recorded in the fixture).
RUN = dict(lora_r=4, lora_alpha=8, use_rslora=False, targets=TARGETS, batch=2, seq_len=12,
           lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, steps=10)


def build(out, spec, run=RUN):
    """Writes the model, its adapter and the fixture to the directory out (see the top)."""
    spec = dict(spec)
    arch, seed = spec.pop("arch"), spec.pop("seed")
    torch.manual_seed(seed)
    fields = {**COMMON, **spec, "attn_implementation": "eager"}
    if arch == "mistral":
        cfg = MistralConfig(**fields)
        model = MistralForCausalLM(cfg)
    else:
        cfg = LlamaConfig(**fields)
        model = LlamaForCausalLM(cfg)
    model = model.float().eval()
    with torch.no_grad():  # larger weights than the init's 0.02 std, so attention is not uniform
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)

    lcfg = LoraConfig(r=run["lora_r"], lora_alpha=run["lora_alpha"], use_rslora=run["use_rslora"], lora_dropout=0.0,
                      target_modules=run["targets"], task_type="CAUSAL_LM")
    pm = get_peft_model(model, lcfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.1)
    pm.save_pretrained(os.path.join(out, "adapter"))
    # the LoRA weights before any step, keyed as in the adapter file
    t = {n.replace(".default", ""): p.detach().float().clone().contiguous()
         for n, p in pm.named_parameters() if p.requires_grad}

    B, S = run["batch"], run["seq_len"]
    ids = torch.randint(0, cfg.vocab_size, (B, S))
    labels = ids.clone()
    labels[0, :4] = -100  # a "user turn" with no loss
    labels[B - 1, 7:9] = -100
    pm.zero_grad()
    res = pm(input_ids=ids, labels=labels)
    res.loss.backward()
    t.update({"input_ids": ids.to(torch.int32), "labels": labels.to(torch.int32),
              "logits": res.logits.detach().float().contiguous(), "loss": res.loss.detach().reshape(1).float()})
    for n, p in pm.named_parameters():
        if p.grad is not None:
            key = n.replace(".default", "") + ".grad"
            t[key] = p.grad.detach().float().contiguous()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=run["lr"],
                            betas=run["betas"], eps=run["eps"], weight_decay=run["weight_decay"])
    losses = []
    for _ in range(run["steps"]):
        opt.zero_grad()
        loss = pm(input_ids=ids, labels=labels).loss
        loss.backward()
        losses.append(loss.item())
        opt.step()
    t["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)
    if os.path.basename(out) == "mistral_window":  # PEFT's merge of the saved adapter, for test_merge.sh
        from peft import PeftModel
        base = MistralForCausalLM.from_pretrained(out, dtype=torch.float32)
        merged = PeftModel.from_pretrained(base, os.path.join(out, "adapter")).merge_and_unload()
        save_file({k: v.contiguous() for k, v in merged.state_dict().items() if "_proj" in k},
                  os.path.join(out, "merged_projections.safetensors"))
    # everything check_fixture needs besides the model directory (safetensors metadata
    # values are strings; numbers are written with repr, which round-trips)
    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "lora_r": str(run["lora_r"]), "lora_alpha": repr(float(run["lora_alpha"])),
            "use_rslora": "true" if run["use_rslora"] else "false", "target_modules": ",".join(run["targets"]),
            "adamw_lr": repr(run["lr"]), "adamw_beta1": repr(run["betas"][0]), "adamw_beta2": repr(run["betas"][1]),
            "adamw_eps": repr(run["eps"]), "adamw_weight_decay": repr(run["weight_decay"]),
            "adamw_steps": str(run["steps"])}
    save_file(t, os.path.join(out, "expected.safetensors"), metadata=meta)


def bnb_copy(out_root, name, dtype=torch.float32):
    """Writes NAME_bnb4bit/: the checkpoint NAME loaded in dtype (its own) with load_in_4bit
    and saved; the compute dtype is the same dtype (it is only recorded in the config: the
    stored codes and statistics do not depend on it)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    src = os.path.join(out_root, name)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=q, device_map="cpu",
                                                 dtype=dtype, attn_implementation="eager")
    out = src + "_bnb4bit"
    model.save_pretrained(out)


def bf16_copies(out_root, name):
    """Writes NAME_bf16/ (the fp32 checkpoint NAME cast to bfloat16 and saved) and
    NAME_bf16_bnb4bit/ (that bf16 checkpoint loaded in bfloat16 with load_in_4bit)."""
    src = os.path.join(out_root, name)
    model = MistralForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager")
    model.to(torch.bfloat16).save_pretrained(src + "_bf16", safe_serialization=True)
    bnb_copy(out_root, name + "_bf16", dtype=torch.bfloat16)


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


def one(argv):
    """model_fixtures.py one OUT_DIR [options]: one configuration of your choosing (see --help)."""
    import argparse
    ap = argparse.ArgumentParser(prog="model_fixtures.py one", description=one.__doc__)
    ap.add_argument("out")
    ap.add_argument("--arch", choices=["mistral", "llama"], default="mistral")
    ap.add_argument("--seed", type=int, default=0)
    for key in ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "sliding_window", "max_position_embeddings"]:
        ap.add_argument("--" + key.replace("_", "-"), type=int)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--tie-word-embeddings", action="store_true")
    ap.add_argument("--lora-r", type=int, default=RUN["lora_r"])
    ap.add_argument("--lora-alpha", type=float, default=RUN["lora_alpha"])
    ap.add_argument("--rslora", action="store_true")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated projections")
    ap.add_argument("--batch", type=int, default=RUN["batch"])
    ap.add_argument("--seq-len", type=int, default=RUN["seq_len"], help="at least 10 (labels 7..8 of the last row are masked)")
    ap.add_argument("--lr", type=float, default=RUN["lr"])
    ap.add_argument("--weight-decay", type=float, default=RUN["weight_decay"])
    ap.add_argument("--steps", type=int, default=RUN["steps"])
    a = ap.parse_args(argv)
    spec = {"arch": a.arch, "seed": a.seed, "rope_theta": a.rope_theta, "tie_word_embeddings": a.tie_word_embeddings}
    for key in ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "sliding_window", "max_position_embeddings"]:
        if getattr(a, key) is not None:
            spec[key] = getattr(a, key)
    if a.arch == "mistral" and "sliding_window" not in spec:
        spec["sliding_window"] = None
    run = {**RUN, "lora_r": a.lora_r, "lora_alpha": a.lora_alpha, "use_rslora": a.rslora,
           "targets": a.targets.split(","), "batch": a.batch, "seq_len": a.seq_len, "lr": a.lr,
           "weight_decay": a.weight_decay, "steps": a.steps}
    build(a.out, spec, run)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "check-adapter":
        check_adapter(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "one":
        one(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "bf16":
        bf16_copies(sys.argv[2] if len(sys.argv) > 2 else "test/fixtures/tiny", "mistral_window")
        return
    out_root = sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/tiny"
    for name, spec in CONFIGS.items():
        build(os.path.join(out_root, name), spec)
    bnb_copy(out_root, "mistral_window")
    bf16_copies(out_root, "mistral_window")


if __name__ == "__main__":
    main()
