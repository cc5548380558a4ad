#!/usr/bin/env bash
# test/test_train_cpu.sh: train_cpu end to end on a tiny random model and Mistral's real v3
# tokenizer: the loss falls; a run stopped by SIGINT and resumed writes exactly the log and
# adapter of an uninterrupted run; 1 and 3 threads write the same bits, and so does the AVX2
# matrix kernel forced (--matmul-kernel) where auto is the AVX-512 one; damaged or
# mismatched checkpoints and shards of another vocabulary are refused with one clear line;
# --steps 0 only evaluates and samples the model as it starts (the base model), once.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${SAN_BIN:?}" "${TOKENIZER_DATA:?}"
TOK="$TOKENIZER_DATA/mistral_instruct_tokenizer_240323.model.v3"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$SAN_BIN/init_model" --out "$tmp/model" --vocab 32768 --hidden 32 --intermediate 64 --layers 2 --heads 4 --kv-heads 2 \
    --window 16 >/dev/null || { echo "FAIL init_model"; exit 1; }
"$SAN_BIN/prep" --tokenizer "$TOK" --out "$tmp/shards" --val-fraction 0.2 test/fixtures/conversations.jsonl \
    >/dev/null 2>&1 || { echo "FAIL prep_for_training"; exit 1; }
ARGS=(--model "$tmp/model" --train "$tmp/shards/train-conversations.bin" --val "$tmp/shards/val-conversations.bin"
      --tokenizer "$TOK" --seq-len 48 --batch 2 --grad-accum 2 --steps 16 --lr 1e-2 --warmup 2 --lora-r 4 --lora-dropout 0.1
      --checkpoint-every 3 --eval-every 8)

"$SAN_BIN/train_cpu" "${ARGS[@]}" --threads 1 --out "$tmp/a" >"$tmp/a.out" 2>&1
if [ $? -eq 0 ] && [ -f "$tmp/a/adapter/adapter_model.safetensors" ] && [ -f "$tmp/a/adapter/adapter_config.json" ]; then
    echo "PASS train_cpu_runs_and_exports_adapter"
else
    echo "FAIL train_cpu_runs_and_exports_adapter"; tail -5 "$tmp/a.out" | sed 's/^/  /'
fi
first=$(grep -m1 '"loss"' "$tmp/a/log.jsonl" | sed 's/.*"loss": \([0-9.]*\).*/\1/')
last=$(grep '"loss"' "$tmp/a/log.jsonl" | tail -1 | sed 's/.*"loss": \([0-9.]*\).*/\1/')
if awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.05) }'; then echo "PASS loss_falls ($first -> $last)"
else echo "FAIL loss_falls ($first -> $last)"; fi
grep -q '"val_loss"' "$tmp/a/log.jsonl" && echo "PASS evaluation_logged" || echo "FAIL evaluation_logged"

# the same run on 3 threads: every sum is taken in the same order, so the same bits
"$SAN_BIN/train_cpu" "${ARGS[@]}" --threads 3 --out "$tmp/t" >"$tmp/t.out" 2>&1
grep -q "3 thread(s)" "$tmp/t.out" && echo "PASS threads_flag_reported" || echo "FAIL threads_flag_reported"
same_output log_same_for_1_and_3_threads <(strip_timing "$tmp/a/log.jsonl") <(strip_timing "$tmp/t/log.jsonl")
same_output adapter_same_for_1_and_3_threads "$tmp/a/adapter/adapter_model.safetensors" "$tmp/t/adapter/adapter_model.safetensors"

# the AVX2 kernel forced: the same bits as the AVX-512 one (matmul.h), so the same run as
# above where auto chose either; on a CPU without AVX2 and FMA the flag must be refused
"$SAN_BIN/train_cpu" "${ARGS[@]}" --threads 2 --matmul-kernel avx2 --out "$tmp/x" >"$tmp/x.out" 2>&1
if grep -qE "(avx512|avx2) matrix kernel" "$tmp/a.out"; then
    same_output avx2_kernel_same_log_as_auto <(strip_timing "$tmp/a/log.jsonl") <(strip_timing "$tmp/x/log.jsonl")
    same_output avx2_kernel_same_adapter_as_auto "$tmp/a/adapter/adapter_model.safetensors" \
        "$tmp/x/adapter/adapter_model.safetensors"
else
    grep -q "this CPU cannot run it" "$tmp/x.out" && echo "PASS avx2_kernel_refused_without_avx2" ||
        echo "FAIL avx2_kernel_refused_without_avx2"
fi

# stop a second run with SIGINT once a few steps are logged, then resume it
"$SAN_BIN/train_cpu" "${ARGS[@]}" --out "$tmp/b" >"$tmp/b1.out" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    [ "$(grep -c '"loss"' "$tmp/b/log.jsonl" 2>/dev/null)" -ge 4 ] 2>/dev/null && break
    sleep 0.05
done
kill -INT "$pid" 2>/dev/null
wait "$pid"
"$SAN_BIN/train_cpu" "${ARGS[@]}" --out "$tmp/b" >"$tmp/b2.out" 2>&1
if grep -q "resuming" "$tmp/b2.out" && grep -q "stopped by signal" "$tmp/b1.out"; then echo "PASS run_was_stopped_and_resumed"
else echo "FAIL run_was_stopped_and_resumed"; tail -3 "$tmp/b1.out" "$tmp/b2.out" | sed 's/^/  /'; fi
same_output resumed_log_equals_uninterrupted <(strip_timing "$tmp/a/log.jsonl") <(strip_timing "$tmp/b/log.jsonl")
same_output resumed_adapter_equals_uninterrupted "$tmp/a/adapter/adapter_model.safetensors" "$tmp/b/adapter/adapter_model.safetensors"

# damaged checkpoints
cp -r "$tmp/a" "$tmp/c"
python3 - "$tmp/c/checkpoint.safetensors" <<'PY'
import sys
p = sys.argv[1]
data = bytearray(open(p, "rb").read())
data[-100] ^= 0x40  # a byte of the last tensor's data
open(p, "wb").write(data)
PY
expect_fail damaged_checkpoint_refused "CRC32 mismatch" "$SAN_BIN/train_cpu" "${ARGS[@]}" --steps 20 --out "$tmp/c"
cp -r "$tmp/a" "$tmp/d"
head -c 3000 "$tmp/a/checkpoint.safetensors" >"$tmp/d/checkpoint.safetensors"
expect_fail truncated_checkpoint_refused "checkpoint.safetensors" "$SAN_BIN/train_cpu" "${ARGS[@]}" --steps 20 --out "$tmp/d"
expect_fail other_settings_refused "--lora-r was '4' for this run and is '8' now" "$SAN_BIN/train_cpu" "${ARGS[@]}" --lora-r 8 --out "$tmp/a"

# shards of a larger vocabulary than the model's embeddings
"$SAN_BIN/init_model" --out "$tmp/small" --vocab 100 --hidden 16 --intermediate 32 --layers 1 --heads 2 --kv-heads 1 >/dev/null
expect_fail vocabulary_mismatch_refused "32768-token vocabulary" "$SAN_BIN/train_cpu" --model "$tmp/small" \
    --train "$tmp/shards/train-conversations.bin" --out "$tmp/e"
expect_fail unknown_matmul_kernel_refused "--matmul-kernel 'sse9'" "$SAN_BIN/train_cpu" "${ARGS[@]}" \
    --matmul-kernel sse9 --out "$tmp/g"
# the portable kernel, which every CPU runs, forced (as the benchmark forces a kernel)
"$SAN_BIN/train_cpu" "${ARGS[@]}" --steps 2 --matmul-kernel generic --out "$tmp/h" >"$tmp/h.out" 2>&1
grep -q "generic matrix kernel" "$tmp/h.out" && [ -f "$tmp/h/adapter/adapter_model.safetensors" ] &&
    echo "PASS matmul_kernel_flag_forces_kernel" || echo "FAIL matmul_kernel_flag_forces_kernel"
expect_fail missing_train_refused "at least one --train shard" "$SAN_BIN/train_cpu" --model "$tmp/model" --out "$tmp/f"

# --steps 0: no step, only the evaluation and the samples of the model as it starts; the
# adapter is LoRA's initialisation (every B zero: the base model). Run again in the same
# directory, it writes the same lines once, not twice.
printf 'Who are you?\nWhat do you make of Dr. Watson?\n' >"$tmp/probes.txt"
ZERO=(--model "$tmp/model" --train "$tmp/shards/train-conversations.bin" --val "$tmp/shards/val-conversations.bin"
      --tokenizer "$TOK" --seq-len 48 --batch 2 --lora-r 4 --steps 0 --prompts "$tmp/probes.txt" --sample-tokens 4
      --out "$tmp/z")
"$SAN_BIN/train_cpu" "${ZERO[@]}" >"$tmp/z.out" 2>&1
zrc=$?
cp "$tmp/z/log.jsonl" "$tmp/z_log1" 2>/dev/null
cp "$tmp/z/samples.jsonl" "$tmp/z_samples1" 2>/dev/null
"$SAN_BIN/train_cpu" "${ZERO[@]}" >"$tmp/z2.out" 2>&1
zrc2=$?
if [ "$zrc" -eq 0 ] && [ "$zrc2" -eq 0 ] && [ -f "$tmp/z/DONE" ] && [ "$(wc -l <"$tmp/z/log.jsonl")" -eq 1 ] &&
    grep -q '^{"step": 0, "val_loss": ' "$tmp/z/log.jsonl" && [ "$(grep -c '^{"step":0,' "$tmp/z/samples.jsonl")" -eq 2 ] &&
    [ "$(wc -l <"$tmp/z/samples.jsonl")" -eq 2 ] && ! grep -q '"loss"' "$tmp/z/log.jsonl"; then
    echo "PASS steps_0_evaluates_and_samples_only"
else
    echo "FAIL steps_0_evaluates_and_samples_only"; tail -n 3 "$tmp/z.out" "$tmp/z2.out" | sed 's/^/  /'
fi
same_output steps_0_again_same_log "$tmp/z_log1" "$tmp/z/log.jsonl"
same_output steps_0_again_same_samples "$tmp/z_samples1" "$tmp/z/samples.jsonl"
python3 - "$tmp/z/adapter/adapter_model.safetensors" <<'PY' && echo "PASS steps_0_adapter_is_the_base_model" || echo "FAIL steps_0_adapter_is_the_base_model"
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
bs = [v for k, v in header.items() if "lora_B" in k]
ok = bs and all(not any(data[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]) for v in bs)
sys.exit(0 if ok else 1)
PY
expect_fail negative_steps_refused "--steps must not be negative" "$SAN_BIN/train_cpu" "${ZERO[@]}" --steps -1
