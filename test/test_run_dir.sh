#!/usr/bin/env bash
# test/test_run_dir.sh: the run directory survives a kill at its most fragile moments, and a
# run refuses data of mixed tokenizers (issue 20), through the sanitizer build of train_cpu.
#   - strace kills the resumed run at its first write to log.jsonl (where an in-place
#     rewrite of the log used to leave it empty): no line the checkpoint covers is lost;
#   - strace kills it at the rename of the rewritten log; then at each rename of a whole run
#     (checkpoints, adapter files, DONE), one kill per run: every rerun ends with the log,
#     samples, checkpoint, adapter and DONE of an uninterrupted run, and no temporary left;
#   - stale temporaries of our naming are removed and named, others kept; a second trainer
#     on the same directory is refused; DONE names the final checkpoint;
#   - shards of two tokenizers, a shard or --tokenizer that is not the model directory's own
#     tokenizer: refused in one line naming both files; an input that is an output refused.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
command -v strace >/dev/null || { echo "FAIL strace_is_installed (.ci/run installs it)"; exit 1; }
tiny_run_setup
printf 'Who are you?\nWhat do you see?\n' >"$tmp/prompts.txt"
ARGS=("${TINY_ARGS[@]}" --lora-dropout 0.1 --lr 1e-2 --warmup 1 --prompts "$tmp/prompts.txt" --sample-tokens 3
      --temperature 0.8)
TRAIN="$SAN_BIN/train_cpu"
# strace's fault injection: the signal is delivered as the traced process enters the call
# (LeakSanitizer cannot run under ptrace, so leak checking is off for the traced runs)
KILL_AT=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -o /dev/null -e signal=none)

# ---- the resumed run killed at its first write to log.jsonl
A=(--steps 8 --checkpoint-every 3 --eval-every 4 --sample-every 4)
"$TRAIN" "${ARGS[@]}" "${A[@]}" --out "$tmp/ref8" >/dev/null 2>&1
# a first run killed at its second rename (the checkpoint of step 6): the checkpoint is of
# step 3, the log goes on to step 6
"${KILL_AT[@]}" -e inject=rename:signal=KILL:when=2 "$TRAIN" "${ARGS[@]}" "${A[@]}" --out "$tmp/b" >/dev/null 2>&1
[ "$(grep -c '"loss"' "$tmp/b/log.jsonl")" -eq 6 ] && echo "PASS setup_log_ahead_of_checkpoint" ||
    echo "FAIL setup_log_ahead_of_checkpoint ($(grep -c '"loss"' "$tmp/b/log.jsonl") step lines)"
cp -r "$tmp/b" "$tmp/b2"
"${KILL_AT[@]}" -P "$tmp/b/log.jsonl" -e inject=write:signal=KILL:when=1 "$TRAIN" "${ARGS[@]}" "${A[@]}" \
    --out "$tmp/b" >/dev/null 2>&1
rc=$?
kept=$(grep -c '"loss"' "$tmp/b/log.jsonl")
[ "$rc" -ne 0 ] && [ "$kept" -eq 3 ] && echo "PASS kill_at_first_log_write_keeps_the_checkpoints_lines" ||
    echo "FAIL kill_at_first_log_write_keeps_the_checkpoints_lines (status $rc, $kept step lines, $(wc -c <"$tmp/b/log.jsonl") bytes)"
"$TRAIN" "${ARGS[@]}" "${A[@]}" --out "$tmp/b" >/dev/null 2>&1
same_run after_kill_at_first_log_write_same_as_uninterrupted "$tmp/ref8" "$tmp/b"

# ---- killed at the rename of the cut-back log: the old log stays whole
"${KILL_AT[@]}" -e inject=rename:signal=KILL:when=1 "$TRAIN" "${ARGS[@]}" "${A[@]}" --out "$tmp/b2" >"$tmp/b2.out" 2>&1
[ "$(grep -c '"loss"' "$tmp/b2/log.jsonl")" -eq 6 ] && [ -n "$(ls "$tmp"/b2/log.jsonl.tmp.* 2>/dev/null)" ] &&
    echo "PASS kill_at_log_rename_leaves_old_log" || echo "FAIL kill_at_log_rename_leaves_old_log"
"$TRAIN" "${ARGS[@]}" "${A[@]}" --out "$tmp/b2" >>"$tmp/b2.out" 2>&1
grep -q "removed $tmp/b2/checkpoint.safetensors.tmp." "$tmp/b2.out" && grep -q "removed $tmp/b2/log.jsonl.tmp." "$tmp/b2.out" &&
    echo "PASS stale_temporaries_removed_and_named" || echo "FAIL stale_temporaries_removed_and_named"
same_run after_kill_at_log_rename_same_as_uninterrupted "$tmp/ref8" "$tmp/b2"

# ---- a kill at each rename of a whole run, then a rerun
R=(--steps 5 --checkpoint-every 2 --eval-every 3 --sample-every 3)
"$TRAIN" "${ARGS[@]}" "${R[@]}" --out "$tmp/ref5" >/dev/null 2>&1
k=1
while [ $k -le 12 ]; do
    rm -rf "$tmp/r"
    "${KILL_AT[@]}" -e inject=rename:signal=KILL:when=$k "$TRAIN" "${ARGS[@]}" "${R[@]}" --out "$tmp/r" >/dev/null 2>&1
    [ $? -eq 0 ] && break  # the run has fewer renames than k
    "$TRAIN" "${ARGS[@]}" "${R[@]}" --out "$tmp/r" >/dev/null 2>&1
    same_run "killed_at_rename_${k}_then_rerun_same_as_uninterrupted" "$tmp/ref5" "$tmp/r"
    k=$((k + 1))
done
# three checkpoints, two adapter files, DONE
[ $k -eq 7 ] && echo "PASS every_rename_of_the_run_killed ($((k - 1)))" ||
    echo "FAIL every_rename_of_the_run_killed ($((k - 1)) kills; expected 6)"

# ---- DONE, temporaries that are not ours, one trainer per directory
python3 - "$tmp/ref5" <<'PY' && echo "PASS done_names_the_final_checkpoint" || echo "FAIL done_names_the_final_checkpoint"
import json, struct, sys
d = sys.argv[1]
done = json.load(open(f"{d}/DONE"))
data = open(f"{d}/checkpoint.safetensors", "rb").read()
n = struct.unpack("<Q", data[:8])[0]
meta = json.loads(data[8:8 + n])["__metadata__"]
sys.exit(0 if done == {"step": 5, "checkpoint_crc32": meta["crc32"]} else 1)
PY
mkdir -p "$tmp/f/adapter"
touch "$tmp/f/notes.tmp.AbC123" "$tmp/f/checkpoint.safetensors.tmp.toolong1" "$tmp/f/adapter/adapter_config.json.tmp.Qq1Qq1"
"$TRAIN" "${ARGS[@]}" --steps 1 --out "$tmp/f" >"$tmp/f.out" 2>&1
[ -f "$tmp/f/notes.tmp.AbC123" ] && [ -f "$tmp/f/checkpoint.safetensors.tmp.toolong1" ] &&
    [ ! -e "$tmp/f/adapter/adapter_config.json.tmp.Qq1Qq1" ] && [ "$(grep -c '^removed' "$tmp/f.out")" -eq 1 ] &&
    echo "PASS only_our_temporaries_removed" || echo "FAIL only_our_temporaries_removed"
"$TRAIN" "${ARGS[@]}" --steps 400 --out "$tmp/lock" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 600); do [ -s "$tmp/lock/log.jsonl" ] && break; sleep 0.02; done
expect_fail second_trainer_on_a_run_refused "another trainer is using this run directory" "$TRAIN" "${ARGS[@]}" \
    --steps 400 --out "$tmp/lock"
kill -9 "$pid"
wait "$pid" 2>/dev/null

# ---- tokenizers
TOK1="$TOKENIZER_DATA/tokenizer.model.v1"
"$SAN_BIN/prep" --tokenizer "$TOK1" --out "$tmp/shards1" --val-fraction 0.2 test/fixtures/conversations.jsonl >/dev/null 2>&1
V3="$tmp/shards/train-conversations.bin" V1="$tmp/shards1/train-conversations.bin"
expect_fail mixed_tokenizer_shards_refused "$V3 and $V1 were made with different tokenizers" "$TRAIN" --model "$tmp/model" \
    --train "$V3" --train "$V1" --out "$tmp/t1"
expect_fail mixed_tokenizer_val_shard_refused "$V3 and $tmp/shards1/val-conversations.bin were made with different" \
    "$TRAIN" --model "$tmp/model" --train "$V3" --val "$tmp/shards1/val-conversations.bin" --out "$tmp/t2"
expect_fail shard_of_another_tokenizer_than_given_refused "$V1 was made with another tokenizer than $TOK" \
    "$TRAIN" --model "$tmp/model" --train "$V1" --tokenizer "$TOK" --out "$tmp/t3"
cp -r "$tmp/model" "$tmp/model1"
cp "$TOK1" "$tmp/model1/tokenizer.model"
expect_fail tokenizer_not_the_models_own_refused "--tokenizer $TOK is not the model's own tokenizer $tmp/model1/tokenizer.model" \
    "$TRAIN" --model "$tmp/model1" --train "$V3" --tokenizer "$TOK" --out "$tmp/t4"
expect_fail shard_not_of_the_models_tokenizer_refused "$V3 was made with another tokenizer than the model's own $tmp/model1/tokenizer.model" \
    "$TRAIN" --model "$tmp/model1" --train "$V3" --out "$tmp/t5"
cp "$TOK" "$tmp/model1/tokenizer.model"
"$TRAIN" --model "$tmp/model1" --train "$V3" --tokenizer "$TOK" --seq-len 32 --batch 1 --steps 1 --out "$tmp/t6" >/dev/null 2>&1 &&
    echo "PASS the_models_own_tokenizer_accepted" || echo "FAIL the_models_own_tokenizer_accepted"

# ---- an input is never an output
expect_fail out_is_the_model_refused "is the model directory" "$TRAIN" "${ARGS[@]}" --out "$tmp/model"
expect_fail prompts_are_the_runs_samples_refused "is the run's own samples.jsonl" "$TRAIN" "${ARGS[@]}" --steps 5 \
    --prompts "$tmp/ref5/samples.jsonl" --out "$tmp/ref5"
