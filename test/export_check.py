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
  chat LABEL GGUF TOKENIZER CONV.jsonl [SYSTEM]
      GGUF written with TOKENIZER (SentencePiece or Tekken) and a Mistral chat format: every
      conversation rendered by transformers' Jinja renderer with the file's chat template, then
      tokenized the way llama.cpp tokenizes a rendered prompt (llama-vocab.cpp: the text is cut
      at every special-token string, longest tokens first; each stretch of text between them
      is encoded alone, SentencePiece giving each its dummy-prefix space; encoding by the
      sentencepiece package or mistral-common's Tekkenizer) must give the ids of mistral-common's
      own encode_chat_completion of the conversation. With SYSTEM, the file's default system
      prompt: mistral-common gets it as a system message when the conversation has none.
      "weight" keys are dropped (inference has none); conversations whose text holds a special
      token's string are left out (llama.cpp would parse it as the token; mistral-common reads
      it as text) and counted.
  chatml LABEL GGUF BASE_GGUF CONV.jsonl [SYSTEM]
      GGUF written with the byte-level tokenizer of BASE_GGUF in ChatML: our template renders
      every conversation (with and without the generation prompt) as the base model's own
      template does; with SYSTEM, as the base template renders the conversation with a system
      message SYSTEM first when it has none there.
"""
import hashlib
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


def digest(path):
    """sha256 of what decides a file's logits: general.architecture, the llama.* keys, and every
    tensor's name, type, shape and bytes (not the tokenizer, template or name)."""
    r = GGUFReader(path)
    h = hashlib.sha256()
    for k in sorted(r.fields):
        if k.startswith("llama.") or k == "general.architecture":
            h.update(f"{k}={field(r, k)!r};".encode())
    for t in r.tensors:
        h.update(f"{t.name}:{t.tensor_type.name}:{[int(n) for n in t.shape]};".encode())
        h.update(np.asarray(t.data).tobytes())
    return h.hexdigest()


def check_digest(label, path, fixture):
    from safetensors import safe_open
    with safe_open(fixture, "np") as f:
        want = (f.metadata() or {}).get(f"{label}.digest")
    got = digest(path)
    report(f"export_{label}_file_is_the_one_transformers_read",
           [] if got == want else [f"digest {got}, the fixture's {want}: the file changed since "
                                   "scripts/export_fixtures.py ran (rerun it if that is intended)"])


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


def chat_parts(r):
    """The template, the tokens and the special-token strings of a GGUF we wrote."""
    tokens = [bytes(r.fields["tokenizer.ggml.tokens"].parts[i]).decode("utf-8") for i in r.fields["tokenizer.ggml.tokens"].data]
    types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
    specials = sorted({t for t, ty in zip(tokens, types) if ty in (3, 4) and t}, key=len, reverse=True)
    return field(r, "tokenizer.chat_template"), tokens, specials


def render(tpl, tokens, r, msgs, generation):
    from transformers.utils.chat_template_utils import render_jinja_template
    bos, eos = field(r, "tokenizer.ggml.bos_token_id"), field(r, "tokenizer.ggml.eos_token_id")
    out, _ = render_jinja_template(conversations=[msgs], chat_template=tpl, add_generation_prompt=generation,
                                   bos_token=tokens[bos] if bos is not None else "",
                                   eos_token=tokens[eos] if eos is not None else "")
    return out[0]


def llama_cpp_tokenize(text, specials, ids_of, encode):
    """llama.cpp's tokenizer_st_partition, then each text fragment encoded by itself."""
    parts = [text]  # str: text, int: a special token
    for s in specials:  # longest first, as llama.cpp orders its special-token cache
        out = []
        for p in parts:
            if isinstance(p, int):
                out.append(p)
                continue
            pieces = p.split(s)
            for k, piece in enumerate(pieces):
                if piece:
                    out.append(piece)
                if k + 1 < len(pieces):
                    out.append(ids_of[s])
        parts = out
    ids = []
    for p in parts:
        ids += [p] if isinstance(p, int) else encode(p)
    return ids


def conversations(path):
    convs = [json.loads(line)["messages"] for line in open(path, encoding="utf-8") if line.strip()]
    return [[{"role": m["role"], "content": m["content"]} for m in c] for c in convs]


def chat(label, gguf_path, tokenizer, conv_path, system=None):
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
    sys.path.insert(0, "scripts")
    from tokenizer_reference import build_messages
    r = GGUFReader(gguf_path)
    tpl, tokens, specials = chat_parts(r)
    ids_of = {t: i for i, t in enumerate(tokens) if t in specials}
    if field(r, "tokenizer.ggml.model") == "llama":
        import sentencepiece
        sp = sentencepiece.SentencePieceProcessor(model_file=tokenizer)
        encode = sp.encode
    else:
        raw = MistralTokenizer.from_file(tokenizer).instruct_tokenizer.tokenizer
        encode = lambda s: raw.encode(s, bos=False, eos=False)  # noqa: E731
    problems, skipped, n = [], 0, 0
    by_mode = {mode: MistralTokenizer.from_file(tokenizer, mode=mode)
               for mode in (ValidationMode.test, ValidationMode.finetuning)}
    for msgs in conversations(conv_path):
        if any(sp_ in m["content"] for m in msgs for sp_ in specials):
            skipped += 1
            continue
        ref_msgs = msgs
        if system and not any(m["role"] == "system" for m in msgs):
            ref_msgs = [{"role": "system", "content": system}] + msgs
        generation = msgs[-1]["role"] == "user"
        mt = by_mode[ValidationMode.test if generation else ValidationMode.finetuning]
        want = mt.encode_chat_completion(ChatCompletionRequest(messages=build_messages(ref_msgs))).tokens
        text = render(tpl, tokens, r, msgs, generation)
        got = llama_cpp_tokenize(text, specials, ids_of, encode)
        n += 1
        if got != want:
            at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            problems.append(f"{msgs!r:.120}: rendered {text!r:.200}; ids differ at {at}: "
                            f"{got[max(0, at - 3):at + 4]} vs mistral-common {want[max(0, at - 3):at + 4]}")
    report(f"export_{label}_chat_template_equals_mistral_common ({n} conversations, {skipped} with special-token "
           f"text left out)", problems if n else ["no conversation was compared"])


def chatml(label, gguf_path, base_path, conv_path, system=None):
    r, base = GGUFReader(gguf_path), GGUFReader(base_path)
    tpl, tokens, _ = chat_parts(r)
    base_tpl, base_tokens, _ = chat_parts(base)
    problems, n = [], 0
    for msgs in conversations(conv_path):
        ref_msgs = msgs
        if system and msgs[0]["role"] != "system":
            ref_msgs = [{"role": "system", "content": system}] + msgs
        for generation in (False, True):
            got, want = render(tpl, tokens, r, msgs, generation), render(base_tpl, base_tokens, base, ref_msgs, generation)
            n += 1
            if got != want:
                problems.append(f"{msgs!r:.100}: {got!r:.300} vs the base template's {want!r:.300}")
    report(f"export_{label}_chatml_template_renders_as_the_base_template ({n} renderings)", problems)


def main():
    cmd = sys.argv[1]
    if cmd == "quant":
        quant(sys.argv[2])
    elif cmd == "tensors":
        tensors(*sys.argv[2:6])
    elif cmd == "digest":
        check_digest(*sys.argv[2:5])
    elif cmd == "chat":
        chat(*sys.argv[2:7])
    elif cmd == "chatml":
        chatml(*sys.argv[2:7])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
