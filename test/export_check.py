#!/usr/bin/env python3
"""export_check.py: the GGUF files `merge --gguf` writes, read by the `gguf` package (0.19.0,
requirements.txt), and checked against references computed here with numpy and that package.
Prints one PASS/FAIL line per check, for test/test_export.sh.

  quant FILE
      FILE from `test_export --quant-cases`: float32 inputs and our F16, BF16 and Q8_0 bytes;
      each must equal gguf.quants.quantize of the same inputs (numpy's float16 for F16).
  tensors LABEL GGUF MERGED_DIR TYPE
      GGUF written by `merge --gguf --type TYPE` and MERGED_DIR by `merge --dtype f32 --out` from
      the same base and adapter (our merged float32 weights). Metadata: every llama.* key
      llama.cpp reads, as the config implies (see train/export_gguf.h); tensors: llama.cpp's
      names, shapes ne = {in, out}, types (norms F32; Q8_0 matrices with rows not a multiple
      of 32 as F16), 32-byte aligned offsets, and bytes equal to gguf.quants.quantize of the
      merged weights with llama.cpp's Q/K row permutation applied (written out here from
      convert_hf_to_gguf.py's LlamaModel.permute), so what the package dequantizes equals our
      merged weights as rounded to the type.
"""
import json
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, quants
from safetensors.numpy import load_file

TYPES = {"f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}
FILE_TYPES = {"f16": 1, "bf16": 32, "q8_0": 7}


def report(name, problems):
    print(("PASS " if not problems else "FAIL ") + name)
    for p in problems[:6]:
        print("  " + p)


def quant(path):
    np.seterr(over="ignore")  # values past 65504 become infinities, as they should
    t = load_file(path)
    x = t["x"]
    finite = np.where(np.isinf(x), np.float32(0), x)
    want = {"f16": x.astype(np.float16).view(np.uint16), "bf16": quants.quantize(x, Q.BF16).view(np.uint16),
            "q8_0": quants.quantize(finite.reshape(-1, 32), Q.Q8_0).reshape(-1)}
    for k, w in want.items():
        bad = np.flatnonzero(t[k] != w)
        report(f"export_quantize_{k}_equals_gguf_package",
               [f"{len(bad)} of {w.size} differ, first at {bad[0]}: ours {t[k][bad[0]]:#x}, gguf {w[bad[0]]:#x}"]
               if len(bad) else [])


def field(r, key):
    f = r.fields.get(key)
    if f is None:
        return None
    if f.types[0] == 8:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]][0].item()


def permute(w, heads):  # convert_hf_to_gguf.py LlamaModel.permute
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensors(label, gguf_path, merged_dir, type_name):
    r = GGUFReader(gguf_path)
    cfg = json.load(open(f"{merged_dir}/config.json"))
    H, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or H // heads
    theta = cfg.get("rope_parameters", {}).get("rope_theta", cfg.get("rope_theta", 10000.0))
    window = cfg.get("sliding_window") if cfg.get("model_type") == "mistral" else None
    want = {"general.architecture": "llama", "general.file_type": FILE_TYPES[type_name],
            "general.quantization_version": 2, "llama.vocab_size": cfg["vocab_size"],
            "llama.context_length": min(cfg["max_position_embeddings"], window or 1 << 40),
            "llama.embedding_length": H, "llama.block_count": cfg["num_hidden_layers"],
            "llama.feed_forward_length": cfg["intermediate_size"], "llama.attention.head_count": heads,
            "llama.attention.head_count_kv": kv, "llama.rope.dimension_count": D,
            "llama.attention.layer_norm_rms_epsilon": float(np.float32(cfg["rms_norm_eps"])),
            "llama.rope.freq_base": float(np.float32(theta)),
            "llama.attention.key_length": D if D * heads != H else None,
            "llama.attention.value_length": D if D * heads != H else None,
            "llama.attention.sliding_window": window}
    problems = [f"{k}: {field(r, k)!r}, expected {v!r}" for k, v in want.items() if field(r, k) != v]
    report(f"export_{label}_metadata", problems)

    merged = load_file(f"{merged_dir}/model.safetensors")
    hf = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    if not cfg.get("tie_word_embeddings"):
        hf["output.weight"] = "lm_head.weight"
    parts = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
             "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    for i in range(cfg["num_hidden_layers"]):
        for g, h in parts.items():
            hf[f"blk.{i}.{g}.weight"] = f"model.layers.{i}.{h}.weight"
    problems = []
    names = {t.name for t in r.tensors}
    if names != set(hf):
        problems.append(f"tensor names differ: {sorted(names ^ set(hf))}")
    for t in r.tensors:
        if t.name not in hf:
            continue
        w = merged[hf[t.name]]
        if ".attn_q." in t.name:
            w = permute(w, heads)
        elif ".attn_k." in t.name:
            w = permute(w, kv)
        qtype = Q.F32 if w.ndim == 1 else TYPES[type_name]
        if qtype == Q.Q8_0 and w.shape[-1] % 32:
            qtype = Q.F16  # what llama.cpp's converter falls back to
        ref = np.ascontiguousarray(quants.quantize(w, qtype)).view(np.uint8).reshape(-1)
        got = np.asarray(t.data).view(np.uint8).reshape(-1)
        if t.tensor_type != qtype:
            problems.append(f"{t.name}: type {t.tensor_type.name}, expected {qtype.name}")
        elif list(t.shape) != list(reversed(w.shape)):
            problems.append(f"{t.name}: ne {list(t.shape)}, expected {list(reversed(w.shape))}")
        elif (t.data_offset - r.data_offset) % 32:
            problems.append(f"{t.name}: data offset {t.data_offset} not 32-byte aligned")
        elif not np.array_equal(got, ref):
            problems.append(f"{t.name}: {int((got != ref).sum())} of {ref.size} bytes differ from gguf.quants.quantize")
    report(f"export_{label}_tensors_equal_merged_weights_rounded_by_gguf", problems)


def main():
    cmd = sys.argv[1]
    if cmd == "quant":
        quant(sys.argv[2])
    elif cmd == "tensors":
        tensors(*sys.argv[2:6])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
