#!/usr/bin/env python3
"""test/perturb_fixture.py SRC OUT CHANGE...: a copy of the model fixture directory SRC
(config.json, expected.safetensors; any model files are linked, not copied) in OUT, with
one input changed, for test/test_check_fixture.sh to show that check_fixture then fails.

CHANGE is one of
  config:KEY=VALUE  config:KEY*=F  config:KEY+=N   a config.json field (KEY dotted for a
                                                   nested one: rope_parameters.rope_theta)
  meta:KEY=VALUE    meta:KEY*=F                    a metadata value of expected.safetensors
  meta-only:KEY                                    metadata reduced to that one key
  tensor:NAME[I]*=F  tensor:NAME[I]+=N             element I (flat, or "largest" in magnitude)
                                                   of a tensor scaled or added to
  drop:NAME                                        a tensor removed
  label-bit         the last token of step 1's first user turn (row 0) gets a label
  keep-bit          one LoRA dropout mask bit flipped (step 1, token 5, input 3 of the first
                    projection's mask)
  boundary          step 1, row 0: the second conversation's first token moves to the first
                    (its segment id and position continue the first conversation)
"""
import json
import os
import re
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


def number(old, op, value):
    v = float(value)
    new = old * v if op == "*=" else old + v if op == "+=" else v
    return int(new) if isinstance(old, int) and float(new).is_integer() else new


def main():
    src, out, changes = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.makedirs(out)
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    with safe_open(os.path.join(src, "expected.safetensors"), "np") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}
    for name in os.listdir(src):
        if name not in ("config.json", "expected.safetensors"):
            os.symlink(os.path.abspath(os.path.join(src, name)), os.path.join(out, name))
    for change in changes:
        m = re.fullmatch(r"(config|meta):([\w.]+)(\*=|\+=|=)(.+)", change)
        if m:
            kind, key, op, value = m.groups()
            if kind == "meta":
                meta[key] = value if op == "=" else repr(number(float(meta[key]), op, value))
                continue
            *path, last = key.split(".")
            node = config
            for p in path:
                node = node[p]
            node[last] = json.loads(value) if op == "=" else number(node[last], op, value)
        elif change.startswith("meta-only:"):
            key = change.split(":", 1)[1]
            meta = {key: meta[key]}
        elif m := re.fullmatch(r"tensor:(.+)\[(\d+|largest)\](\*=|\+=)(.+)", change):
            name, index, op, value = m.groups()
            flat = t[name].reshape(-1)
            i = int(np.argmax(np.abs(flat))) if index == "largest" else int(index)
            flat[i] = number(flat[i].item(), op, value)
        elif change.startswith("drop:"):
            del t[change.split(":", 1)[1]]
        elif change == "label-bit":
            labels, ids = t["labels"][0, 0], t["input_ids"][0, 0]
            j = int(np.nonzero(labels == -100)[0][0])
            while labels[j + 1] == -100:
                j += 1
            labels[j] = ids[j]
        elif change == "keep-bit":
            name = sorted(k for k in t if k.startswith("lora_dropout_keep."))[0]
            t[name][0, 5, 0] ^= 1 << 3
        elif change == "boundary":
            seg, pos = t["segment_ids"][0, 0], t["position_ids"][0, 0]
            j = int(np.nonzero(seg == 1)[0][0])
            seg[j], pos[j] = 0, pos[j - 1] + 1
        else:
            sys.exit(f"perturb_fixture.py: unknown change {change}")
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_file(t, os.path.join(out, "expected.safetensors"), metadata=meta)


if __name__ == "__main__":
    main()
