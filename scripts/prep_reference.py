#!/usr/bin/env python3
"""Reference token ids and loss masks for a mixed JSONL corpus, for test/test_prep.sh.

  prep_reference.py --tokenizer F --jsonl IN [--system TEXT]

Prints what `./prep --dump` prints for a shard made from IN with no validation split and
no length limit: one {"ids": [...], "mask": [...]} line per non-blank input line, in order.

- {"messages": [...]} lines: scripts/tokenizer_reference.py's `chat` command, i.e.
  mistral-common's encode_chat_completion (ValidationMode.finetuning) with
  mistral-finetune's tokenize_instruct masking. With --system, a conversation that has no
  system message first gets {"role": "system", "content": TEXT} (prep's --system).
- {"text": ...} lines: mistral-finetune's pretraining sample,
  tokenizer.encode(text, bos=True, eos=True), every token trained except the BOS.

Versions: see requirements.txt (mistral-common 1.13.1).
"""
import argparse
import contextlib
import io
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer_reference  # noqa: E402
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--jsonl", required=True)
    ap.add_argument("--system")
    args = ap.parse_args()

    with open(args.jsonl, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]

    chats = [r for r in rows if "messages" in r]
    if args.system is not None:
        for r in chats:
            if not any(m["role"] == "system" for m in r["messages"]):
                r["messages"].insert(0, {"role": "system", "content": args.system})
    chat_out = []
    if chats:
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", encoding="utf-8", delete=False) as tmp:
            for r in chats:
                tmp.write(json.dumps({"messages": r["messages"]}, ensure_ascii=False) + "\n")
        try:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                tokenizer_reference.cmd_chat(argparse.Namespace(tokenizer=args.tokenizer, chat=tmp.name))
            chat_out = out.getvalue().splitlines()
        finally:
            os.unlink(tmp.name)

    tok = MistralTokenizer.from_file(args.tokenizer).instruct_tokenizer.tokenizer
    chat_lines = iter(chat_out)
    for r in rows:
        if "messages" in r:
            print(next(chat_lines))
        else:
            ids = tok.encode(r["text"], bos=True, eos=True)
            print(json.dumps({"ids": ids, "mask": [0] + [1] * (len(ids) - 1)}))


if __name__ == "__main__":
    main()
