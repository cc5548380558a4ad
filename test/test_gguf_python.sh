#!/usr/bin/env bash
# test/test_gguf_python.sh: our GGUF reader against the reference, the `gguf` Python package
# (requirements.txt). test/gguf_reference.py writes files with gguf's GGUFWriter holding every
# metadata value type and every tensor type we read, and prints what gguf's GGUFReader reads
# and gguf.quants dequantizes; `test_gguf --dump` must print the same (every key, type and
# value; every tensor's type, shape and the CRC32 of its float32 values, so the dequantized
# values are the same floats bit for bit). Then broken files, each with one lie (truncations,
# offsets past the end, overlapping tensors, counts near 2^64, a string past the end, unknown
# value and tensor types, ...), must each be refused with exit status 1 and one line naming
# the file and the field.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${PYTHON:?}" "${SAN_BIN:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! "$PYTHON" test/gguf_reference.py good "$tmp" || ! "$PYTHON" test/gguf_reference.py bad "$tmp"; then
    echo "FAIL gguf_reference_files_written (the gguf package is in requirements.txt: make venv)"
    exit 0
fi
for name in every_type aligned64_v2; do
    "$SAN_BIN/test_gguf" --dump "$tmp/$name.gguf" >"$tmp/$name.ours" 2>&1
    same_output "gguf_package_file_read_the_same_$name" "$tmp/$name.ours" "$tmp/$name.want"
done
# the dump must cover what the issue asks for: every value type and tensor type
for t in UINT8 INT8 UINT16 INT16 UINT32 INT32 FLOAT32 BOOL STRING UINT64 INT64 FLOAT64 "ARRAY ARRAY"; do
    grep -q " $t " "$tmp/every_type.want" || echo "FAIL gguf_reference_has_type_$t"
done
for t in F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q4_K Q5_K Q6_K; do
    grep -q "^tensor [^ ]* $t " "$tmp/every_type.want" || echo "FAIL gguf_reference_has_tensor_type_$t"
done
expect_ok() {
    if out=$("$SAN_BIN/test_gguf" --check "$2" 2>&1) && [ "$out" = ok ]; then echo "PASS $1"; else echo "FAIL $1"; echo "  $out"; fi
}
expect_ok raw_built_file_loads "$tmp/raw_good.gguf"
while IFS=$'\t' read -r name want; do
    expect_fail "gguf_refuses_$name" "$tmp/$name.gguf: $want" "$SAN_BIN/test_gguf" --check "$tmp/$name.gguf"
done <"$tmp/bad.tsv"
