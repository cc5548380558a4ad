#!/usr/bin/env python3
"""chat_greedy_fixture.py: transformers' greedy answers of SmolLM2-135M-Instruct (from its GGUF)
in a two-turn ChatML conversation, the reference test/test_chat_cli.sh holds chat's answers to.

transformers reads the GGUF itself (dequantization, llama.cpp's Q/K permutation undone, the
head tied), builds the tokenizer and the ChatML template from the same file, and generates
with the KV cache, greedily, in float32, stopping at <|im_end|>; the second turn's prompt
holds the first turn's answer as transformers produced it. Nothing of ours is involved. The
answers are cut before the first step whose two largest logits are less than 0.05 apart
(none in these answers, so they are whole): there, a float32 sum in another order could pick
the other token, and the comparison would test rounding, not decoding.

  pip install torch==2.15.0 transformers==5.24.0 gguf==0.19.0
  python scripts/chat_greedy_fixture.py GGUF_FILE test/fixtures/chat/smollm2_greedy.json

GGUF_FILE: SmolLM2-135M-Instruct.Q4_1.gguf (`python scripts/smollm2.py` prints where make venv
put it).
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

SYSTEM = "You are a helpful assistant."
TURNS = ["What is the capital of France?", "Name three things a visitor should see there."]
MAX_NEW = 40
MIN_GAP = 0.05


def main(gguf_path, out):
    d, name = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    model.eval()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    messages, answers = [{"role": "system", "content": SYSTEM}], []
    for turn in TURNS:
        messages.append({"role": "user", "content": turn})
        prompt = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)
        ids = torch.tensor([prompt["input_ids"]])
        with torch.no_grad():
            out_ = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW,
                                  do_sample=False, eos_token_id=end, pad_token_id=end, output_scores=True,
                                  return_dict_in_generate=True)
        new = out_.sequences[0, ids.shape[1]:].tolist()
        keep = len(new)
        for i, scores in enumerate(out_.scores):
            top = torch.topk(scores[0].float(), 2).values
            if float(top[0] - top[1]) < MIN_GAP:
                keep = min(keep, i)
                break
        stopped = keep == len(new) and bool(new) and new[-1] == end
        answer_ids = [t for t in new[:keep] if t != end]
        text = tok.decode(answer_ids, skip_special_tokens=True)
        answers.append({"user": turn, "answer": text, "tokens": len(answer_ids), "ended": stopped})
        messages.append({"role": "assistant", "content": text})
    fixture = {"system": SYSTEM, "max_new_tokens": MAX_NEW, "turns": answers,
               "gguf": name, "gguf_bytes": os.path.getsize(gguf_path),
               "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(json.dumps(fixture, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
