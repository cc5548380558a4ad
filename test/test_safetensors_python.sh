#!/usr/bin/env bash
# test/test_safetensors_python.sh: our safetensors reader and writer against the reference
# implementation, the `safetensors` Python package (requirements.txt).
#   1. Python writes a file (several dtypes, a scalar, an empty tensor, metadata); our
#      reader must list the same names, dtypes, shapes and bytes.
#   2. Our writer writes a known file; Python must load it and find the same values.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${PYTHON:?}" "${SAN_BIN:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$PYTHON" - "$tmp/py.safetensors" >"$tmp/want" <<'PY'
import sys
import numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(7)
tensors = {
    "model.embed_tokens.weight": rng.standard_normal((5, 3)).astype(np.float32),
    "model.norm.weight": rng.standard_normal(7).astype(np.float16),
    "quant": rng.integers(0, 255, size=(4, 1), dtype=np.uint8),
    "ids": np.array([-3, 0, 1 << 40], dtype=np.int64),
    "flags": np.array([True, False, True]),
    "scalar": np.array(2.5, dtype=np.float64),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "small": np.arange(6, dtype=np.int32).reshape(1, 2, 3),
}
save_file(tensors, sys.argv[1], metadata={"format": "pt"})
names = {np.float32: "F32", np.float16: "F16", np.uint8: "U8", np.int64: "I64", np.bool_: "BOOL",
         np.float64: "F64", np.int32: "I32"}
for name in sorted(tensors):
    a = tensors[name]
    h = 1469598103934665603
    for byte in a.tobytes():
        h = ((h ^ byte) * 1099511628211) % (1 << 64)
    print(f"{name} {names[a.dtype.type]} [{', '.join(map(str, a.shape))}] {h:016x}")
PY
"$SAN_BIN/test_safetensors" --dump "$tmp/py.safetensors" | sort >"$tmp/ours"
same_output read_file_written_by_python_safetensors "$tmp/ours" "$tmp/want"

"$SAN_BIN/test_safetensors" --write "$tmp/c.safetensors"
"$PYTHON" - "$tmp/c.safetensors" <<'PY'
import sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file
try:
    t = load_file(sys.argv[1])
    with safe_open(sys.argv[1], framework="np") as f:
        meta = f.metadata()
    ok = (meta == {"format": "pt", "written_by": "persona.c"}
          and np.array_equal(t["model.layers.0.mlp.up_proj.weight"],
                             (np.arange(12, dtype=np.float32) * 0.5 - 2).reshape(3, 4))
          and np.array_equal(t["ints"], np.array([-1, 0, 1 << 40], dtype=np.int64))
          and t["halves"].dtype == np.float16
          and t["halves"].ravel().tolist() == [1.0, -1.0, 65504.0, float(np.float16(2.0 ** -24))])
    print("PASS python_safetensors_reads_our_file" if ok else f"FAIL python_safetensors_reads_our_file\n  {meta} {t}")
except Exception as e:
    print(f"FAIL python_safetensors_reads_our_file\n  {e}")
PY
