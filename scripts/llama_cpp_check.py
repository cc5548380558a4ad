#!/usr/bin/env python3
"""llama_cpp_check.py: llama.cpp itself loads the GGUF files `merge --gguf` writes, and computes
and tokenizes what we do. A manual check, not part of `make test`: it needs llama.cpp, built from
the llama-cpp-python package's source (about ten minutes on two cores), which CI does not install:

  python3 -m venv /tmp/llama && CMAKE_ARGS=-DGGML_OPENMP=OFF /tmp/llama/bin/pip install \\
      llama-cpp-python==0.3.36 jinja2 numpy
  make merge tokenize init_model build/test/test_export
  /tmp/llama/bin/python scripts/llama_cpp_check.py [--llama-server PATH]

The mistral-common tokenizer files and SmolLM2's GGUF are found through `make venv`'s .venv
(--tokenizers DIR and --smollm2 FILE give them otherwise). Checks, one line each, with numbers:

 1. Logits. llama.cpp's (Llama(..., logits_all=True).eval, every position) against ours
    (test_export --logits-of), on the files test/test_export.sh writes: the tiny Mistral (GQA,
    and the sliding-window one over 5 tokens), Llama and tied/head_dim models with their
    adapters in f16, bf16 and q8_0, and SmolLM2-135M with a random rank-4 adapter on all seven
    projections written here; against our reading of the same file, and against our unrounded
    base + adapter (max |difference| / max |ours|). llama.cpp's CPU matrix products round the
    activations to the weights' type (f16, bf16, or 8-bit blocks for quantized weights), so it
    agrees with us to that rounding, not to float32's: the tolerances are 1e-2 (f16), 3e-2
    (bf16) and, for q8_0, twice the error llama.cpp shows against our reading of a Q8_0 file
    of the same model that llama.cpp quantized itself (llama_model_quantize of our f16 file,
    measured first: on SmolLM2's 30 layers its 8-bit activations alone move the logits by
    6e-2 to 9e-2, more than they move them on SmolLM2's own Q4_1 file, also printed). How
    often the top token is the same is printed too (random tiny models have near ties).
 2. Tokenization. llama.cpp's tokenizer (tokenize(text, add_bos=False, special=False)) of the
    novel, whole and line by line, from our SentencePiece v3, Tekken and SmolLM2 files, against
    ./tokenize with the original tokenizer files.
 3. Chat templates. Each file's tokenizer.chat_template rendered by Jinja2 as llama-cpp-python
    renders chat templates (sandboxed, trim_blocks, lstrip_blocks), tokenized by llama.cpp with
    special tokens parsed (tokenize(prompt, add_bos=False, special=True)), against ./tokenize
    --chat (chat.c, itself tested against mistral-common and transformers) on the test
    conversations, for V1, V3, V7 (SentencePiece), V3 (Tekken) and ChatML (SmolLM2), with and
    without a default system prompt. With --llama-server (a llama-server binary of the same
    llama.cpp), the same conversations rendered by llama.cpp's own Jinja engine (its
    /apply-template endpoint, on 127.0.0.1) must give the same text.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TARGETS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj"]
SYSTEM = "You are Sherlock Holmes, of 221B Baker Street. Answer as Holmes would; don't say 'perhaps'."
EXTRA_CONVERSATIONS = [
    [{"role": "user", "content": "Who are you?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "One"},
     {"role": "assistant", "content": "Two"}, {"role": "user", "content": "Three?"}],
    [{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Hm."}],
    [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c  "},
     {"role": "user", "content": " d "}],
]
failures = 0


def report(ok, name, detail):
    global failures
    failures += not ok
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True, **kw).stdout


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header, data = json.loads(f.read(n)), f.read()
    info = header["logits"]
    b, e = info["data_offsets"]
    return np.frombuffer(data[b:e], dtype=np.float32).reshape(info["shape"])


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        blob = np.ascontiguousarray(a, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def ours(model, ids, tmp):
    out = os.path.join(tmp, "ours.safetensors")
    run("build/test/test_export", "--logits-of", model, ",".join(map(str, ids)), out)
    return read_safetensors(out)


def llama(path, **kw):
    import llama_cpp
    return llama_cpp.Llama(model_path=path, n_ctx=512, verbose=False, **kw)


def llama_logits(path, ids):
    m = llama(path, logits_all=True, n_threads=2)
    m.eval(ids)
    return np.array(m.scores[:len(ids)], dtype=np.float32)


def compare_logits(name, gguf, model_specs, ids, tol, tmp):
    got = llama_logits(gguf, ids)
    for what, spec in model_specs:
        want = ours(spec, ids, tmp)
        err = float(np.abs(got - want).max() / np.abs(want).max())
        top = float((got.argmax(1) == want.argmax(1)).mean())
        report(err <= tol, f"llama_cpp_{name}_logits_vs_ours_{what}",
               f"max relative error {err:.2e} (tol {tol:.1e}), top token the same at {100 * top:.0f}% of {len(ids)} positions")
    return err


def own_q8_0_baseline(name, f16_gguf, ids, tmp):
    """llama.cpp's own Q8_0 quantization of our f16 file, run by llama.cpp against our reading of
    it: what llama.cpp's 8-bit arithmetic costs on a file we did not quantize."""
    import ctypes
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr
    out = os.path.join(tmp, f"{name}_q8_0_by_llama_cpp.gguf")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    with suppress_stdout_stderr(disable=False):
        rc = llama_cpp.llama_model_quantize(f16_gguf.encode(), out.encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize {f16_gguf}: status {rc}")
    return compare_logits(f"{name}_q8_0_by_llama_cpp_baseline", out, [("same_file", out)], ids, 1.0, tmp)


def smollm2_adapter(path, out):
    """A PEFT adapter for SmolLM2-135M: rank 4 on every projection, A uniform in +-1/sqrt(in),
    B normal(0, 0.02), so the merge moves every weight."""
    rng = np.random.default_rng(19)
    H, kv, inter = 576, 192, 1536
    shapes = {"self_attn.q_proj": (H, H), "self_attn.k_proj": (kv, H), "self_attn.v_proj": (kv, H),
              "self_attn.o_proj": (H, H), "mlp.gate_proj": (inter, H), "mlp.up_proj": (inter, H),
              "mlp.down_proj": (H, inter)}
    tensors = {}
    for layer in range(30):
        for t in TARGETS:
            o, i = shapes[t]
            key = f"base_model.model.model.layers.{layer}.{t}"
            tensors[f"{key}.lora_A.weight"] = rng.uniform(-1, 1, (4, i)) / np.sqrt(i)
            tensors[f"{key}.lora_B.weight"] = rng.normal(0, 0.02, (o, 4))
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "adapter_model.safetensors"), tensors)
    json.dump({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": False, "task_type": "CAUSAL_LM",
               "target_modules": [t.split(".")[1] for t in TARGETS]}, open(os.path.join(out, "adapter_config.json"), "w"))


def check_logits(tmp, smol):
    tiny = os.path.join(ROOT, "test/fixtures/tiny")
    rng = np.random.default_rng(5)
    conv = os.path.join(tmp, "prompt.jsonl")
    json.dump({"messages": [{"role": "user", "content": "What do you make of Dr. Watson?"}]}, open(conv, "w"))
    smol_ids = json.loads(run("./tokenize", "--tokenizer", smol, "--chat", conv))["ids"]
    # for comparison: llama.cpp on a file nobody here wrote, SmolLM2's own Q4_1 GGUF, against
    # our reading of it
    compare_logits("smollm2_original_q4_1_baseline", smol, [("same_file", smol)], smol_ids, 1.0, tmp)
    tols = {"f16": 1e-2, "bf16": 3e-2}
    models = [(m, f"{tiny}/{m}") for m in ("mistral_gqa", "llama", "mistral_window")]
    models.append(("tied_headdim", os.path.join(ROOT, "test/fixtures/export/tied_headdim")))
    for name, d in models:
        T = 5 if name == "mistral_window" else 16
        vocab = json.load(open(f"{d}/config.json"))["vocab_size"]
        ids = [int(i) for i in rng.integers(0, vocab, T)]
        for type_name in ("f16", "bf16", "q8_0"):
            gguf = os.path.join(tmp, f"{name}_{type_name}.gguf")
            run("./merge", "--model", d, "--adapter", f"{d}/adapter", "--gguf", gguf, "--type", type_name, "--no-vocab")
            tol = tols.get(type_name) or 2 * own_q8_0_baseline(name, os.path.join(tmp, f"{name}_f16.gguf"), ids, tmp)
            compare_logits(f"{name}_{type_name}", gguf, [("read_back", gguf), ("merged_model", f"{d}:{d}/adapter")],
                           ids, tol, tmp)
    adapter = os.path.join(tmp, "smollm2_adapter")
    smollm2_adapter(smol, adapter)
    for type_name in ("f16", "q8_0"):
        gguf = os.path.join(tmp, f"smollm2_{type_name}.gguf")
        run("./merge", "--model", smol, "--adapter", adapter, "--gguf", gguf, "--type", type_name)
        tol = tols.get(type_name) or 2 * own_q8_0_baseline("smollm2_adapter", os.path.join(tmp, "smollm2_f16.gguf"),
                                                           smol_ids, tmp)
        compare_logits(f"smollm2_adapter_{type_name}", gguf,
                       [("read_back", gguf), ("merged_model", f"{smol}:{adapter}")], smol_ids, tol, tmp)


def export(tmp, name, tokenizer, vocab, *flags):
    model = os.path.join(tmp, f"model{vocab}")
    if not os.path.isdir(model):
        run("./init_model", "--out", model, "--vocab", str(vocab), "--hidden", "32", "--intermediate", "64",
            "--layers", "1", "--heads", "2", "--kv-heads", "1")
    gguf = os.path.join(tmp, f"{name}.gguf")
    run("./merge", "--model", model, "--gguf", gguf, "--tokenizer", tokenizer, *flags)
    return gguf


def check_tokenization(tmp, tok_dir, smol, novel):
    text = open(novel, "rb").read()
    cases = [("spm_v3", f"{tok_dir}/mistral_instruct_tokenizer_240323.model.v3", 32768),
             ("tekken", f"{tok_dir}/tekken_240718.json", 131072), ("smollm2", smol, 49152)]
    for name, tokenizer, vocab in cases:
        m = llama(export(tmp, name, tokenizer, vocab), vocab_only=True)
        want = [int(x) for x in run("./tokenize", "--tokenizer", tokenizer, "--file", novel).split()]
        got = m.tokenize(text, add_bos=False, special=False)
        report(got == want, f"llama_cpp_{name}_tokenizes_the_novel_as_ours", f"{len(got)} tokens, ours {len(want)}")
        lines = run("./tokenize", "--tokenizer", tokenizer, "--file", novel, "--lines").split("\n")
        bad = sum(m.tokenize(line, add_bos=False, special=False) != [int(x) for x in want_line.split()]
                  for line, want_line in zip(text.split(b"\n"), lines))
        report(bad == 0, f"llama_cpp_{name}_tokenizes_the_novel_line_by_line_as_ours", f"{bad} lines differ")


def render(template, messages, bos, eos, generation):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ValueError(message)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, bos_token=bos, eos_token=eos,
                                            add_generation_prompt=generation)


class Server:
    """llama-server on 127.0.0.1 with one model, for its /apply-template (llama.cpp's Jinja)."""

    def __init__(self, binary, gguf, port=18731):
        self.url = f"http://127.0.0.1:{port}"
        self.p = subprocess.Popen([binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-c", "256",
                                   "--no-webui"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("llama-server did not start")

    def apply(self, messages, generation):
        body = json.dumps({"messages": messages, "add_generation_prompt": generation}).encode()
        req = urllib.request.Request(self.url + "/apply-template", body, {"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=30).read())["prompt"]

    def close(self):
        self.p.terminate()
        self.p.wait()


def check_chat(tmp, tok_dir, smol, server_binary):
    convs = [json.loads(line)["messages"] for line in open(os.path.join(ROOT, "test/fixtures/conversations.jsonl"))]
    convs = [[{"role": m["role"], "content": m["content"]} for m in c] for c in convs] + EXTRA_CONVERSATIONS
    cases = [("spm_v1", f"{tok_dir}/tokenizer.model.v1", 32000), ("spm_v3", f"{tok_dir}/mistral_instruct_tokenizer_240323.model.v3", 32768),
             ("spm_v7", f"{tok_dir}/mistral_instruct_tokenizer_241114.model.v7", 32768),
             ("tekken_v3", f"{tok_dir}/tekken_240718.json", 131072), ("smollm2", smol, 49152)]
    for name, tokenizer, vocab in cases:
        for system in (None, SYSTEM):
            label = f"{name}{'_system' if system else ''}"
            gguf = export(tmp, f"chat_{label}", tokenizer, vocab, *(["--system", system] if system else []))
            m = llama(gguf, vocab_only=True)
            template = m.metadata["tokenizer.chat_template"]
            bos = m.detokenize([m.token_bos()], special=True).decode() if m.token_bos() >= 0 else ""
            eos = m.detokenize([m.token_eos()], special=True).decode()
            specials = [m.detokenize([i], special=True).decode("utf-8", "replace") for i in range(m.n_vocab())
                        if m.detokenize([i], special=False) == b"" and m.detokenize([i], special=True)]
            kept = [c for c in convs if not any(s and s in msg["content"] for msg in c for s in specials)]
            chatml = name == "smollm2"
            refs = []  # the conversations chat.c encodes: with the default system prompt where it applies
            for c in kept:
                if system and (c[0]["role"] != "system" if chatml else not any(x["role"] == "system" for x in c)):
                    c = [{"role": "system", "content": system}] + c
                refs.append({"messages": c})
            conv_file = os.path.join(tmp, f"{label}.jsonl")
            with open(conv_file, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in refs)
            want = [json.loads(line)["ids"] for line in run("./tokenize", "--tokenizer", tokenizer, "--chat", conv_file).splitlines()]
            server = Server(server_binary, gguf) if server_binary else None
            bad, bad_render = [], 0
            for c, w in zip(kept, want):
                generation = c[-1]["role"] == "user"
                prompt = render(template, c, bos, eos, generation)
                if server and server.apply(c, generation) != prompt:
                    bad_render += 1
                got = m.tokenize(prompt.encode(), add_bos=False, special=True)
                if got != w:
                    bad.append(c)
            if server:
                server.close()
                report(bad_render == 0, f"llama_cpp_{label}_jinja_engine_renders_as_jinja2",
                       f"{bad_render} of {len(kept)} conversations differ")
            report(not bad, f"llama_cpp_{label}_chat_template_tokenizes_as_chat_c",
                   f"{len(kept) - len(bad)} of {len(kept)} conversations equal"
                   f" ({len(convs) - len(kept)} with special-token text left out)" + (f"; first bad: {bad[0]}" if bad else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizers")
    ap.add_argument("--smollm2")
    ap.add_argument("--llama-server")
    ap.add_argument("--novel", default=os.path.join(ROOT, "../shared/corpus/sherlock-holmes.txt"))
    a = ap.parse_args()
    venv = os.path.join(ROOT, ".venv/bin/python")
    tok_dir = a.tokenizers or run(venv, "scripts/tokenizer_reference.py", "data-dir").strip()
    smol = a.smollm2 or run(venv, "scripts/smollm2.py").strip()
    import llama_cpp
    print(f"llama-cpp-python {llama_cpp.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        check_logits(tmp, smol)
        check_tokenization(tmp, tok_dir, smol, a.novel)
        check_chat(tmp, tok_dir, smol, a.llama_server)
    print(f"{failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
