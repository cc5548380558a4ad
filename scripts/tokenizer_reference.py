#!/usr/bin/env python3
"""Reference token ids from Mistral's own Python libraries, for the tokenizer tests.

Prints exactly what `./tokenize` prints for the same request, computed by code nobody in
this project wrote, so test/test_reference_tokenizers.sh can compare the two byte for byte:

  encode  --tokenizer F [--file IN] [--lines] --lib mistral-common|sentencepiece
          one line of space-separated ids per encoded string (no BOS/EOS)
  chat    --tokenizer F --chat CONV.jsonl
          one {"ids": [...], "mask": [...]} line per conversation
  data-dir
          the directory of the tokenizer files that mistral-common ships
  tekken-v7 OUT
          writes a v7 Tekken file: tekken_240718.json with config.version "v7" and an
          explicit special_tokens list (mistral-common ships no v7 Tekken file). It loads
          in mistral-common as InstructTokenizerV7, so V7-Tekken chat can be compared.
          OUT must be named *tekken*.json, as mistral-common requires.

Input bytes: `--lib sentencepiece` passes the raw bytes to SentencePiece (so malformed
UTF-8 is handled by its C++ normaliser); `--lib mistral-common` decodes them the way a
Python pipeline would, `bytes.decode("utf-8", errors="replace")`, then encodes the str.

The chat ids are mistral-common's `encode_chat_completion` (ValidationMode.finetuning).
The mask follows mistral-finetune's `tokenize_instruct` (finetune/data/tokenize.py): the
normalised request is re-encoded message by message with the same instruct tokenizer;
BOS, system and user tokens get 0, an assistant message (with its EOS) gets 1 unless it
carries a weight other than 1. The per-message encoding is asserted to equal the
`encode_chat_completion` ids, so both facts come from mistral-common itself.

Versions: see requirements.txt (mistral-common 1.13.1, sentencepiece 0.2.3).
"""
import argparse
import json
import os
import sys

import mistral_common
from mistral_common.protocol.instruct.messages import (AssistantMessage,
                                                       FinetuningAssistantMessage,
                                                       SystemMessage, UserMessage)
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.protocol.instruct.validator import ValidationMode
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer


def read_input(path):
    if path in (None, "-"):
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def split_lines(data):
    # Same rule as ./tokenize --lines: split at b"\n", no extra line after a final "\n".
    if not data:
        return []
    lines = data.split(b"\n")
    return lines[:-1] if data.endswith(b"\n") else lines


def encoder(args):
    if args.lib == "sentencepiece":
        import sentencepiece
        sp = sentencepiece.SentencePieceProcessor(model_file=args.tokenizer)
        return lambda b: sp.encode(b)
    tok = MistralTokenizer.from_file(args.tokenizer).instruct_tokenizer.tokenizer
    return lambda b: tok.encode(b.decode("utf-8", errors="replace"), bos=False, eos=False)


def cmd_encode(args):
    enc = encoder(args)
    data = read_input(args.file)
    pieces = split_lines(data) if args.lines else [data]
    out = sys.stdout
    for p in pieces:
        out.write(" ".join(map(str, enc(p))) + "\n")


def build_messages(raw):
    msgs = []
    for m in raw:
        role, content = m["role"], m["content"]
        if role == "system":
            msgs.append(SystemMessage(content=content))
        elif role == "user":
            msgs.append(UserMessage(content=content))
        elif role == "assistant":
            if "weight" in m:
                msgs.append(FinetuningAssistantMessage(content=content, weight=m["weight"]))
            else:
                msgs.append(AssistantMessage(content=content))
        else:
            raise ValueError(f"unknown role {role}")
    return msgs


def assistant_weights(raw):
    """The weight of each assistant message after mistral-common's normalisation, which
    merges consecutive messages of the same role and weight (normalize.py
    _aggregate_messages) but does not keep the weight on the merged message."""
    weights, prev_role, prev_weight = [], None, None
    for m in raw:
        w = m.get("weight") if m["role"] == "assistant" else None
        if m["role"] == "assistant" and (prev_role != "assistant" or w != prev_weight):
            weights.append(w)
        prev_role, prev_weight = m["role"], w
    return weights


def cmd_chat(args):
    mt = MistralTokenizer.from_file(args.tokenizer, mode=ValidationMode.finetuning)
    it = mt.instruct_tokenizer
    with open(args.chat, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    for line in lines:
        raw = json.loads(line)["messages"]
        request = ChatCompletionRequest(messages=build_messages(raw))
        expected = mt.encode_chat_completion(request).tokens

        instruct = mt._instruct_request_normalizer.from_chat_completion_request(
            mt._chat_completion_request_validator.validate_request(request))
        weights = iter(assistant_weights(raw))
        first_user, last_user = it.find_first_last_user(instruct)
        ids, mask = list(it.start()), [0]
        for i, msg in enumerate(instruct.messages):
            if isinstance(msg, UserMessage):
                toks, _, _ = it.encode_user_message(msg, instruct.available_tools, i == last_user,
                                                    i == first_user, system_prompt=instruct.system_prompt)
                trained = 0
            elif isinstance(msg, SystemMessage):
                toks, _ = it.encode_system_message(msg)
                trained = 0
            else:
                toks = it.encode_assistant_message(msg, is_before_last_user_message=False)
                w = next(weights)
                trained = 1 if w is None or w == 1 else 0
            ids += toks
            mask += [trained] * len(toks)
        assert ids == expected, f"per-message encoding differs from encode_chat_completion: {line}"
        print(json.dumps({"ids": ids, "mask": mask}))


def data_dir():
    return os.path.join(os.path.dirname(mistral_common.__file__), "data")


def cmd_tekken_v7(out):
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    with open(os.path.join(data_dir(), "tekken_240718.json"), encoding="utf-8") as f:
        model = json.load(f)
    model["config"]["version"] = "v7"
    model["special_tokens"] = [dict(rank=t.rank if hasattr(t, "rank") else t["rank"],
                                    token_str=t.token_str if hasattr(t, "token_str") else t["token_str"],
                                    is_control=True)
                               for t in Tekkenizer.DEPRECATED_SPECIAL_TOKENS]
    with open(out, "w", encoding="utf-8") as f:
        json.dump(model, f, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode")
    e.add_argument("--tokenizer", required=True)
    e.add_argument("--file")
    e.add_argument("--lines", action="store_true")
    e.add_argument("--lib", choices=["mistral-common", "sentencepiece"], default="mistral-common")
    c = sub.add_parser("chat")
    c.add_argument("--tokenizer", required=True)
    c.add_argument("--chat", required=True)
    sub.add_parser("data-dir")
    v = sub.add_parser("tekken-v7")
    v.add_argument("out")
    args = ap.parse_args()
    if args.cmd == "encode":
        cmd_encode(args)
    elif args.cmd == "chat":
        cmd_chat(args)
    elif args.cmd == "tekken-v7":
        cmd_tekken_v7(args.out)
    else:
        print(data_dir())


if __name__ == "__main__":
    main()
