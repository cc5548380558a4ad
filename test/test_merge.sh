#!/usr/bin/env bash
# test/test_merge.sh: ./merge against PEFT's merge_and_unload.
#
# test/fixtures/tiny/mistral_window has a base model, a PEFT adapter and PEFT's merged
# projection weights (scripts/model_fixtures.py). Our merge must give the same weights:
# to 1e-6 relative in float32 output, and within one bf16 rounding step in bf16 output;
# the other tensors must be the base's, config.json must describe the output dtype, and
# bad invocations must fail with one clear line.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${PYTHON:?}" "${SAN_BIN:?}"
MERGE="$SAN_BIN/merge"
FX=test/fixtures/tiny/mistral_window
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

compare() {  # name dir dtype
    "$PYTHON" - "$2" "$3" "$FX" "$1" <<'PY'
import json, struct, sys
import numpy as np
from safetensors.numpy import load_file
out, dtype, fx, name = sys.argv[1:]

def read(path):  # our own small reader: numpy has no bfloat16
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = np.frombuffer(data[b:e], dtype=np.uint16 if info["dtype"] == "BF16" else np.float32)
        if info["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        tensors[key] = (info["dtype"], raw.reshape(info["shape"]))
    return tensors

ours = read(out + "/model.safetensors")
peft = load_file(fx + "/merged_projections.safetensors")
base = load_file(fx + "/model.safetensors")
want_dtype = "BF16" if dtype == "bf16" else "F32"
problems = []
if set(ours) != set(base):
    problems.append(f"tensor names differ: {sorted(set(ours) ^ set(base))}")
for key, (dt, x) in ours.items():
    if dt != want_dtype:
        problems.append(f"{key}: dtype {dt}")
        continue
    ref = peft[key] if key in peft else base[key]
    if dtype == "bf16":  # one bf16 step: 2^-8 relative to the value
        bad = np.abs(x - ref) > np.abs(ref) * 2.0 ** -8 + 1e-30
    else:
        bad = np.abs(x - ref) > 1e-6 * np.abs(ref).max()
    if bad.any():
        problems.append(f"{key}: {int(bad.sum())} elements differ")
cfg = json.load(open(out + "/config.json"))
if cfg.get("torch_dtype") != ("bfloat16" if dtype == "bf16" else "float32") or "quantization_config" in cfg:
    problems.append(f"config.json dtype {cfg.get('torch_dtype')}")
print(("PASS " if not problems else "FAIL ") + name)
for p in problems[:5]:
    print("  " + p)
PY
}

"$MERGE" --model "$FX" --adapter "$FX/adapter" --out "$tmp/f32" --dtype f32 >/dev/null && compare merge_f32_equals_peft "$tmp/f32" f32
"$MERGE" --model "$FX" --adapter "$FX/adapter" --out "$tmp/bf16" >/dev/null && compare merge_bf16_equals_peft "$tmp/bf16" bf16
expect_fail merge_refuses_existing_output "exists; pass --force" "$MERGE" --model "$FX" --adapter "$FX/adapter" --out "$tmp/bf16"
"$MERGE" --model "$FX" --adapter "$FX/adapter" --out "$tmp/bf16" --dtype f32 --force >/dev/null && compare merge_force_replaces "$tmp/bf16" f32
expect_fail merge_missing_adapter "adapter_config.json: cannot open" "$MERGE" --model "$FX" --adapter "$tmp/none" --out "$tmp/x"
expect_fail merge_bad_dtype "--dtype 'f8'" "$MERGE" --model "$FX" --adapter "$FX/adapter" --out "$tmp/x" --dtype f8
if ls "$tmp" | grep -q tmp; then echo "FAIL merge_leaves_no_temporary_files"; ls "$tmp"; else echo "PASS merge_leaves_no_temporary_files"; fi
