#!/usr/bin/env python3
"""export_check.py: the GGUF files `merge --gguf` writes, read by the `gguf` package (0.19.0,
requirements.txt), and checked against references computed here with numpy and that package.
Prints one PASS/FAIL line per check, for test/test_export.sh and test_export_tokenizers.sh.
Several commands may be given, separated by "--": they share one reading of each file.

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
  digest LABEL GGUF FIXTURE
      the file's digest (see digest()) must be the one scripts/export_fixtures.py recorded in
      FIXTURE's metadata as LABEL.digest: the file the test writes is the one transformers read.
  vocab LABEL GGUF TOKENIZER
      the tokenizer.ggml.* keys as llama.cpp's converter derives them from TOKENIZER:
      SentencePiece (model "llama", pre "default"): every piece and score as the sentencepiece
      package reports them (convert_hf_to_gguf.py _create_vocab_sentencepiece), each type as
      the file declares it (the converter writes user-defined pieces, which that package does
      not report, as normal; as user-defined, llama.cpp matches them whole in text as
      SentencePiece does), its bos/eos/unk ids, add_space_prefix; Tekken (model "gpt2", pre "tekken", read from the
      JSON here): the special tokens' strings as control tokens, then every ordinary token's
      bytes in GPT-2's byte-to-unicode spelling (gguf-py vocab.py MistralVocab), and one merge
      rule for each token of the inner vocabulary past the 256 bytes, joining two tokens into
      it, in rank order; a byte-level GGUF (model "gpt2"): the same tokens, types, merges,
      pre-tokenizer and special ids as that file. add_bos_token: true for the Mistral
      tokenizers, false for the byte-level (ChatML) one; add_eos_token false.
  encode LABEL GGUF TEXT IDS [WHOSE]
      transformers' tokenizer built from GGUF (transformers' own GGUF tokenizer code, without
      torch: scripts/bytelevel_reference.py) encodes TEXT into IDS: ./tokenize's output, or
      WHOSE names where IDS come from otherwise (the test name says so).
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
_readers = {}


def reader(path):
    """The gguf package's reader of path, one per file in a run (reading a vocabulary of 131,072
    tokens and their merges takes it seconds)."""
    if path not in _readers:
        _readers[path] = GGUFReader(path)
    return _readers[path]
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


def array(r, key):
    f = r.fields.get(key)
    if f is None:
        return None
    if f.types[1] == 8:
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
    return [f.parts[i][0].item() for i in f.data]


def bytes_to_unicode():  # GPT-2's byte alphabet (openai/gpt-2 encoder.py)
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix")
ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores", "tokenizer.ggml.merges")


def tekken_vocab(tokenizer, merges, problems):
    import base64
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
    t = json.load(open(tokenizer, encoding="utf-8"))
    n_special, n = t["config"]["default_num_special_tokens"], t["config"]["default_vocab_size"]
    mt = MistralTokenizer.from_file(tokenizer).instruct_tokenizer.tokenizer
    spell = bytes_to_unicode()
    inner = ["".join(spell[b] for b in base64.b64decode(v["token_bytes"])) for v in t["vocab"][:n - n_special]]
    rank = {tok: i for i, tok in enumerate(inner)}
    formed = [rank.get(m.replace(" ", ""), -1) for m in merges or []]
    if formed != list(range(256, n - n_special)):
        problems.append(f"{len(merges or [])} merges: they should form the tokens of rank 256..{n - n_special - 1}, "
                        "each once, in rank order")
    bad = [m for m in merges or [] if m.count(" ") != 1 or any(part not in rank for part in m.split(" "))]
    if bad:
        problems.append(f"{len(bad)} merges do not join two tokens, e.g. {bad[0]!r}")
    return {"tokenizer.ggml.tokens": [mt.id_to_piece(i) for i in range(n_special)] + inner,
            "tokenizer.ggml.token_type": [3] * n_special + [1] * (n - n_special),
            "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "tekken", "tokenizer.ggml.bos_token_id": mt.bos_id,
            "tokenizer.ggml.eos_token_id": mt.eos_id, "tokenizer.ggml.unknown_token_id": mt.unk_id,
            "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False}


def declared_types(path):
    """Each piece's type as the tokenizer.model protobuf declares it (ModelProto field 1, the
    pieces; SentencePiece field 3, the type, 1 when absent): the sentencepiece package reports
    user-defined pieces (type 4) as ordinary ones."""
    data = open(path, "rb").read()

    def varint(p):
        x = shift = 0
        while True:
            b = data[p]
            x |= (b & 0x7F) << shift
            p, shift = p + 1, shift + 7
            if not b & 0x80:
                return x, p

    def fields(p, end):
        while p < end:
            tag, p = varint(p)
            wire = tag & 7
            if wire == 0:
                v, p = varint(p)
                yield tag >> 3, v, None
            elif wire == 2:
                n, p = varint(p)
                yield tag >> 3, None, (p, p + n)
                p += n
            else:  # fixed32 / fixed64
                p += 4 if wire == 5 else 8
    types = []
    for f, _, span in fields(0, len(data)):
        if f == 1:
            types.append(next((v for g, v, _ in fields(*span) if g == 3), 1))
    return types


def sentencepiece_vocab(tokenizer):
    import sentencepiece
    sp = sentencepiece.SentencePieceProcessor(model_file=tokenizer)
    n = sp.vocab_size()
    return {"tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(n)],
            "tokenizer.ggml.scores": [float(np.float32(sp.get_score(i))) for i in range(n)],
            "tokenizer.ggml.token_type": declared_types(tokenizer),
            "tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default", "tokenizer.ggml.bos_token_id": sp.bos_id(),
            "tokenizer.ggml.eos_token_id": sp.eos_id(), "tokenizer.ggml.unknown_token_id": sp.unk_id(),
            "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False,
            "tokenizer.ggml.add_space_prefix": True}


def vocab(label, gguf_path, tokenizer):
    r = reader(gguf_path)
    got = {**{k: array(r, k) for k in ARRAYS}, **{k: field(r, k) for k in KEYS}}
    problems = []
    if tokenizer.endswith(".gguf"):
        base = reader(tokenizer)
        want = {k: array(base, k) for k in ARRAYS if k != "tokenizer.ggml.scores"}
        want.update({k: field(base, k) for k in KEYS[:6]})
        want.update({"tokenizer.ggml.add_bos_token": False, "tokenizer.ggml.add_eos_token": False})
    elif tokenizer.endswith(".json"):
        want = tekken_vocab(tokenizer, got["tokenizer.ggml.merges"], problems)
    else:
        want = sentencepiece_vocab(tokenizer)
    for k, v in want.items():
        g = got.get(k)
        if g == v:
            continue
        if isinstance(v, list) and isinstance(g, list):
            at = next((i for i, (a, b) in enumerate(zip(g, v)) if a != b), min(len(g), len(v)))
            problems.append(f"{k}: {len(g)} values, expected {len(v)}; first difference at {at}: "
                            f"{g[at] if at < len(g) else None!r} vs {v[at] if at < len(v) else None!r}")
        else:
            problems.append(f"{k}: {g!r:.80}, expected {v!r:.80}")
    report(f"export_{label}_vocabulary_as_llama_cpp_converts_it", problems)


def digest(path):
    """sha256 of what decides a file's logits: general.architecture, the llama.* keys, and every
    tensor's name, type, shape and bytes (not the tokenizer, template or name)."""
    r = reader(path)
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
    r = reader(gguf_path)
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
    r = reader(gguf_path)
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
    r, base = reader(gguf_path), reader(base_path)
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


def encode(label, gguf_path, text_path, ids_path, whose="ours"):
    """transformers' tokenizer built from the file (scripts/bytelevel_reference.py hf_from_gguf,
    its GGUF tokenizer code without torch) encodes the text into the ids of ids_path (one
    line of ids: by default what ./tokenize printed for the same text with the original
    tokenizer; `whose` names another source)."""
    sys.path.insert(0, "scripts")
    from bytelevel_reference import gguf_metadata, hf_from_gguf
    tok = hf_from_gguf(gguf_metadata(gguf_path, reader(gguf_path)))
    text = open(text_path, "rb").read().decode("utf-8", errors="replace")
    got = tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    want = [int(x) for x in open(ids_path).read().split()]
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    report(f"export_{label}_transformers_tokenizer_from_gguf_encodes_as_{whose} ({len(want)} tokens)",
           [] if got == want else [f"{len(got)} ids, {whose} {len(want)}; first difference at {at}: "
                                   f"{got[at:at + 5]} vs {want[at:at + 5]}"])


COMMANDS = {"quant": quant, "tensors": tensors, "digest": check_digest, "vocab": vocab, "chat": chat, "chatml": chatml,
            "encode": encode}


def main():
    """Several commands in one run, separated by "--" (the files are read once)."""
    args = sys.argv[1:]
    while args:
        cut = args.index("--") if "--" in args else len(args)
        cmd, rest, args = args[0], args[1:cut], args[cut + 1:]
        if cmd not in COMMANDS:
            sys.exit(f"unknown command {cmd}")
        COMMANDS[cmd](*rest)


if __name__ == "__main__":
    main()
