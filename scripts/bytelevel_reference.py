#!/usr/bin/env python3
"""Reference ids for the byte-level BPE tokenizer (tokenizer/bytelevel.c) and ChatML
(tokenizer/chat.c), from code nobody in this project wrote. Prints exactly what `./tokenize`
prints for the same request, so test/test_bytelevel_reference.sh compares byte for byte:

  encode --tokenizer F [--file IN] [--lines] [--llama-cpp]
         one line of space-separated ids per encoded string. F is a GGUF file (transformers
         builds its tokenizer from the GGUF metadata, see hf_from_gguf) or a tokenizer.json
         (the `tokenizers` library loads it). --llama-cpp: llama.cpp's tokenizer instead
         (llama-cpp-python, vocab_only; not in requirements.txt: it builds llama.cpp from
         source, `CMAKE_ARGS=-DGGML_OPENMP=OFF pip install llama-cpp-python==0.3.36`, about
         ten minutes on two cores). Special-token
         strings in the text are text (split_special_tokens=True), as ./tokenize encodes.
  chat   --tokenizer GGUF --chat CONV.jsonl
         one {"ids": [...], "mask": [...]} line per conversation: transformers'
         apply_chat_template with the GGUF's own template (its default system prompt
         included; the generation prompt when the conversation ends with a user message).
         The mask is transformers' return_assistant_tokens_mask, from the same template with
         {% generation %} around each trained assistant message's content and <|im_end|>
         (assistant messages with "weight": 0 are left out of it).
  json   --tokenizer GGUF OUT
         writes OUT, a tokenizer.json of the GGUF's vocabulary and merges with the
         pre-tokenizer of SmolLM2's published tokenizer.json (Digits with individual_digits,
         then ByteLevel without a prefix space), built with the `tokenizers` library, and
         OUT's directory's tokenizer_config.json with the bos/eos tokens and chat template.
  batch  --tokenizer GGUF JOBS
         the jobs listed in the file JOBS, one a line, in one process: the GGUF is read and
         transformers' tokenizer built once (each is most of a single command's time):
           json OUT                        as the json command
           encode json|gguf whole|lines IN OUT
                                           as encode (--lines for `lines`) into the file OUT,
                                           with the tokenizer.json the json job wrote, or
                                           transformers' tokenizer from the GGUF
           chat CONV OUT                   as the chat command, into the file OUT

Input bytes are decoded as a Python pipeline would, bytes.decode("utf-8", errors="replace").
Versions: requirements.txt (transformers 5.24.0, tokenizers 0.23.3, gguf 0.19.0).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokenizer_reference import read_input, split_lines  # the same input rules as ./tokenize


def gguf_metadata(path, reader=None):
    """The GGUF's tokenizer.* metadata and general.architecture as Python values, read by the
    gguf package's reader (reader: one already open on path)."""
    from gguf import GGUFReader
    r = reader or GGUFReader(path)

    def value(key):
        f = r.fields[key]
        if f.types[0] == 9:  # an array
            if f.types[1] == 8:
                return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            return [f.parts[i][0].item() for i in f.data]  # ints, or floats (scores)
        if f.types[0] == 8:
            return bytes(f.parts[f.data[0]]).decode("utf-8")
        return f.parts[f.data[0]][0].item()

    return {k: value(k) for k in r.fields if k.startswith("tokenizer.") or k == "general.architecture"}


def hf_from_gguf(meta):
    """transformers' tokenizer for a GGUF (its metadata from gguf_metadata), built by
    transformers' own GGUF tokenizer code (integrations/gguf/gguf_tokenizer_mapping.py). Its
    from_pretrained(gguf_file=...) wraps the same functions but reads the file through a module
    that needs torch, which CI does not install, so the metadata comes from the gguf package's
    reader here (what that module does)."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf import gguf_tokenizer_mapping as m
    from transformers.utils import logging
    logging.set_verbosity_error()
    grouped = {group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
               for group, renames in m.GGUF_TOKENIZER_MAPPING.items()}
    tokenizer_dict, config = grouped["tokenizer"], grouped["tokenizer_config"]
    backend, _ = m.convert_gguf_tokenizer(meta["general.architecture"], tokenizer_dict)
    tokens = tokenizer_dict["tokens"]
    special = {name: tokens[meta[f"tokenizer.ggml.{key}"]] for name, key in m._SPECIAL_TOKENS.items()
               if f"tokenizer.ggml.{key}" in meta}
    return PreTrainedTokenizerFast(tokenizer_object=backend, chat_template=config.get("chat_template"), **special)


def encoder(path, llama_cpp=False, hf=None):
    """A function from text to ids: llama.cpp's, a tokenizer.json's (the `tokenizers` library),
    or transformers' tokenizer for a GGUF (hf, when it is built already)."""
    if llama_cpp:
        import llama_cpp as lc
        m = lc.Llama(model_path=path, vocab_only=True, verbose=False)
        return lambda s: m.tokenize(s.encode("utf-8"), add_bos=False, special=False)
    if path.endswith(".json"):
        from tokenizers import Tokenizer
        t = Tokenizer.from_file(path)
        return lambda s: t.encode(s, add_special_tokens=False).ids
    tok = hf or hf_from_gguf(gguf_metadata(path))
    return lambda s: tok(s, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def encode(enc, in_path, lines, out):
    data = read_input(in_path)
    for t in split_lines(data) if lines else [data]:
        out.write(" ".join(map(str, enc(t.decode("utf-8", errors="replace")))) + "\n")


GENERATION_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}{{ DEFAULT }}{% endif %}"
    "{% if message['role'] == 'assistant' and message.get('weight', 1) != 0 %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def chat(tok, conv_path, out):
    tpl = tok.chat_template
    start = tpl.index("{{ '<|im_start|>system")
    default = tpl[start + 3:tpl.index("}}", start)].strip()  # the template's own default-system literal
    masked = GENERATION_TEMPLATE.replace("DEFAULT", default)
    for line in open(conv_path, encoding="utf-8"):
        msgs = json.loads(line)["messages"]
        gen = msgs[-1]["role"] == "user"
        ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen, return_dict=True)["input_ids"]
        masked_out = tok.apply_chat_template(msgs, chat_template=masked, tokenize=True, add_generation_prompt=gen,
                                             return_dict=True, return_assistant_tokens_mask=True)
        assert masked_out["input_ids"] == ids, "the masking template renders other text than the model's"
        out.write(json.dumps({"ids": ids, "mask": masked_out["assistant_masks"]}) + "\n")


def write_json(meta, tok, out):
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    tokens, merges, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.merges"], meta["tokenizer.ggml.token_type"]
    t = Tokenizer(BPE(vocab={s: i for i, s in enumerate(tokens)}, merges=[tuple(m.split(" ")) for m in merges]))
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens([AddedToken(s, special=True, normalized=False) for s, ty in zip(tokens, types) if ty == 3])
    t.save(out)
    with open(os.path.join(os.path.dirname(out), "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": tok.bos_token, "eos_token": tok.eos_token, "chat_template": tok.chat_template}, f)


def batch(path, jobs_path):
    meta = gguf_metadata(path)
    tok = hf_from_gguf(meta)
    encoders = {"gguf": encoder(path, hf=tok)}
    for line in open(jobs_path, encoding="utf-8"):
        job = line.split()
        if not job:
            continue
        if job[0] == "json" and len(job) == 2:
            write_json(meta, tok, job[1])
            encoders["json"] = encoder(job[1])
        elif job[0] == "encode" and len(job) == 5 and job[1] in encoders and job[2] in ("whole", "lines"):
            with open(job[4], "w") as out:
                encode(encoders[job[1]], job[3], job[2] == "lines", out)
        elif job[0] == "chat" and len(job) == 3:
            with open(job[2], "w") as out:
                chat(tok, job[1], out)
        else:
            sys.exit(f"{jobs_path}: cannot run job {line.strip()!r} (see --help)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["encode", "chat", "json", "batch"])
    ap.add_argument("out", nargs="?", help="json: the tokenizer.json to write; batch: the file of jobs")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--file")
    ap.add_argument("--lines", action="store_true")
    ap.add_argument("--chat")
    ap.add_argument("--llama-cpp", action="store_true")
    a = ap.parse_intermixed_args()
    if a.cmd == "batch":
        return batch(a.tokenizer, a.out)
    if a.cmd == "chat":
        return chat(hf_from_gguf(gguf_metadata(a.tokenizer)), a.chat, sys.stdout)
    if a.cmd == "json":
        meta = gguf_metadata(a.tokenizer)
        return write_json(meta, hf_from_gguf(meta), a.out)
    encode(encoder(a.tokenizer, a.llama_cpp), a.file, a.lines, sys.stdout)


if __name__ == "__main__":
    main()
