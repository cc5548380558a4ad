#!/usr/bin/env python3
"""fuzz_seeds.py: the seed corpora of the fuzz targets in test/fuzz/ (`make fuzz`, test/test_fuzz.sh).

    python scripts/fuzz_seeds.py OUT PREP TOKENIZER_DATA

writes OUT/NAME/ for each target NAME (fuzz_NAME.c), small valid inputs for the fuzzer to
mutate, mostly taken from the test fixtures:
    sentencepiece  tokenizer.model files trained by sentencepiece on the stress text and the start
                   of the novel (BPE with Mistral's settings and control tokens; without byte
                   fallback), small enough to mutate
    tekken         tekken.json files cut from mistral-common's tekken_240718.json (its split
                   pattern and first 600 ranks): v3 without a special-token list, v7 and v13 with one
    bytelevel      tokenizer.json files trained by the tokenizers package: plain ByteLevel, and
                   SmolLM2's Digits-then-ByteLevel with ChatML's special tokens
    gguf           test/gguf_reference.py's files (every value and tensor type, broken files,
                   tiny llama models) and a GGUF holding the byte-level tokenizer
    conversation   each line of the JSONL fixtures, one file a line
    shard          shards written by PREP from test/fixtures/conversations.jsonl with
                   SentencePiece v3 (16-bit ids) and Tekken (32-bit ids)
    safetensors    the *.safetensors fixtures under 64 KiB
    config         every config.json fixture
    book           the stress texts, excerpts of the novels in ../shared/corpus (front matter,
                   dialogue, the licence; CRLF and curly quotes included), a short play
    checkpoint     none here: fuzz_checkpoint writes its own (they must match its run)
Versions: requirements.txt (sentencepiece 0.2.3, tokenizers 0.23.3, gguf 0.19.0).
"""
import glob
import io
import json
import os
import subprocess
import sys
import tempfile

import gguf
import sentencepiece as spm
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "test", "fixtures")
CORPUS = os.path.join(ROOT, "..", "shared", "corpus")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(out, name, data):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def training_text():
    """Lines to train the small tokenizers on: the stress text and the start of the novel."""
    text = read(os.path.join(FIX, "stress.txt")).decode("utf-8")
    novel = os.path.join(CORPUS, "sherlock-holmes.txt")
    if os.path.exists(novel):
        text += read(novel)[:60000].decode("utf-8")
    return [line for line in text.splitlines() if line.strip()]


def sentencepiece_seeds(out, lines):
    # BPE with Mistral's settings (byte fallback, identity normalization, a dummy prefix), and
    # without byte fallback or dummy prefix, digits split
    for name, fallback in (("bpe_bytes.model", True), ("bpe_chars.model", False)):
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=buf, model_type="bpe", vocab_size=700,
            byte_fallback=fallback, character_coverage=0.99 if fallback else 1.0, split_digits=not fallback,
            add_dummy_prefix=fallback, normalization_rule_name="identity", remove_extra_whitespaces=False,
            control_symbols=["[INST]", "[/INST]", "[IMG]", "[SYSTEM_PROMPT]"], minloglevel=2)
        write(out, name, buf.getvalue())


def tekken_seeds(out, data_dir):
    real = json.loads(read(os.path.join(data_dir, "tekken_240718.json")))
    vocab = real["vocab"][:600]
    specials = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
                "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                "[TOOL_CONTENT]"]
    for version, n_special, listed in (("v3", 1000, False), ("v7", 20, True), ("v13", 24, True)):
        config = dict(real["config"], default_vocab_size=n_special + len(vocab),
                      default_num_special_tokens=n_special, num_vocab_tokens=len(vocab), version=version)
        doc = {"config": config, "vocab": vocab}
        if listed:
            doc["special_tokens"] = [{"rank": i, "token_str": s, "is_control": True}
                                     for i, s in enumerate(specials[:n_special])]
        write(out, f"tekken_{version}.json", json.dumps(doc).encode())


def bytelevel_tokenizer(lines, digits):
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if digits else byte_level)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] if digits else ["<|endoftext|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    return tok


def bytelevel_seeds(out, lines):
    toks = {}
    for name, digits in (("plain", False), ("smollm", True)):
        toks[name] = bytelevel_tokenizer(lines, digits)
        write(out, f"{name}.tokenizer.json", toks[name].to_str().encode())
    return toks["smollm"]


def gguf_tokenizer(path, tok):
    """A GGUF holding only a byte-level tokenizer, as llama.cpp lays out SmolLM2's."""
    doc = json.loads(tok.to_str())
    vocab = doc["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    specials = {t["content"] for t in doc["added_tokens"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in doc["model"]["merges"]]
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in specials else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<|im_start|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                        "{% endfor %}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_seeds(out, tok):
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("good", "bad", "models"):
            subprocess.run([sys.executable, os.path.join(ROOT, "test", "gguf_reference.py"), kind, tmp],
                           check=True, stdout=subprocess.DEVNULL)
        for path in glob.glob(os.path.join(tmp, "*.gguf")):
            write(out, os.path.basename(path), read(path))
    gguf_tokenizer(os.path.join(out, "tokenizer.gguf"), tok)


def conversation_seeds(out):
    n = 0
    for path in sorted(glob.glob(os.path.join(FIX, "**", "*.jsonl"), recursive=True)):
        for line in read(path).splitlines()[:100]:
            write(out, f"line{n:04d}.jsonl", line + b"\n")
            n += 1


def shard_seeds(out, prep, data_dir):
    with tempfile.TemporaryDirectory() as tmp:
        for name, tok in (("v3", "mistral_instruct_tokenizer_240323.model.v3"), ("tekken", "tekken_240718.json")):
            subprocess.run([prep, "--tokenizer", os.path.join(data_dir, tok), "--out", os.path.join(tmp, name),
                            "--val-fraction", "0.2", os.path.join(FIX, "conversations.jsonl")],
                           check=True, stdout=subprocess.DEVNULL)
            for path in glob.glob(os.path.join(tmp, name, "*.bin")):
                write(out, f"{name}-{os.path.basename(path)}", read(path))


def file_seeds(out, pattern, limit):
    for path in sorted(glob.glob(os.path.join(FIX, "**", pattern), recursive=True)):
        if os.path.getsize(path) <= limit:
            write(out, os.path.relpath(path, FIX).replace(os.sep, "_"), read(path))


PLAY = """THE TRAGEDY OF THE SPECKLED BAND

ACT I

SCENE I. Baker Street.

HOLMES. Good-morning, madam. My name is Sherlock Holmes.
HELEN. It is fear, Mr. Holmes. It is terror.
WATSON: You must not fear, said he.
HOLMES. You have come in by train this morning, I see.
HELEN. You know me, then?
HOLMES. No, but I observe the second half of a return ticket.
MRS. HUDSON. A lady to see you, sir.
HOLMES. Pray show her in.
WATSON. Holmes!
HOLMES. Quite so, Watson.
HELEN. Sir, I can stand this strain no longer.
FIRST WITCH: When shall we three meet again?
"""


def book_seeds(out):
    for name in ("stress.txt", "stress-invalid.txt"):
        write(out, name, read(os.path.join(FIX, name)))
    write(out, "play.txt", PLAY.encode())
    for path in sorted(glob.glob(os.path.join(CORPUS, "*.txt"))):
        data = read(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        for at, length in ((0, 6000), (len(data) // 3, 6000), (len(data) // 2, 3000), (len(data) - 8000, 8000)):
            start = data.index(b"\n", at) + 1 if at else 0  # whole lines, so whole UTF-8 characters
            write(out, f"{stem}-{at}.txt", data[start:data.rindex(b"\n", 0, at + length) + 1])


def main():
    out, prep, data_dir = sys.argv[1:4]
    lines = training_text()
    sentencepiece_seeds(os.path.join(out, "sentencepiece"), lines)
    tekken_seeds(os.path.join(out, "tekken"), data_dir)
    smollm = bytelevel_seeds(os.path.join(out, "bytelevel"), lines)
    gguf_seeds(os.path.join(out, "gguf"), smollm)
    conversation_seeds(os.path.join(out, "conversation"))
    shard_seeds(os.path.join(out, "shard"), prep, data_dir)
    file_seeds(os.path.join(out, "safetensors"), "*.safetensors", 64 << 10)
    file_seeds(os.path.join(out, "config"), "config.json", 64 << 10)
    book_seeds(os.path.join(out, "book"))
    os.makedirs(os.path.join(out, "checkpoint"), exist_ok=True)


if __name__ == "__main__":
    main()
