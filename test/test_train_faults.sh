#!/usr/bin/env bash
# test/test_train_faults.sh: what a user can lose or be misled by around a training run,
# each reproduced as a user meets it (issue 18), through the sanitizer builds:
#   - --prompts: a missing file, an empty one, a 1 MB line: refused at the start, before a
#     step is run, not at the end; flags that cannot work together refused;
#   - the last step writes its checkpoint and adapter before the probe answers; SIGINT during
#     the answers, or during the evaluation, stops the run at once with status 130; the rerun
#     finishes them, once each;
#   - SIGTERM: status 143, and the resumed run is the uninterrupted one;
#   - NaN or infinite weights refused naming the tensor (float32, NF4, bitsandbytes 4-bit); a
#     diverging run stops with status 2 at the step, its log stays JSON (null), the last good
#     checkpoint is kept and resumes;
#   - kill -9 before the first checkpoint, and a full disk at a checkpoint, then a rerun:
#     no duplicated log line;
#   - resume: --lr, --schedule, --lora-targets changes refused naming the flag and both
#     values; --steps extends a run (same log as an uninterrupted run), below the checkpoint
#     is refused; a finished run rerun does nothing;
#   - scripts/quickstart_cpu.sh and scripts/quickstart.sh never delete a directory they did
#     not make; init_model on a full disk leaves nothing; merge never writes over its inputs.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
tiny_run_setup
ARGS=("${TINY_ARGS[@]}" --lr 1e-2 --warmup 1)
TRAIN="$SAN_BIN/train_cpu"

# ---- inputs checked before the first step
printf 'Who are you?\n' >"$tmp/prompts.txt"
expect_fail missing_prompts_refused_at_start "$tmp/nope.txt" "$TRAIN" "${ARGS[@]}" --steps 2 \
    --prompts "$tmp/nope.txt" --sample-tokens 8 --out "$tmp/p1"
[ ! -e "$tmp/p1" ] && echo "PASS missing_prompts_no_run_started" || echo "FAIL missing_prompts_no_run_started"
: >"$tmp/empty.txt"
expect_fail empty_prompts_refused "no prompts" "$TRAIN" "${ARGS[@]}" --steps 2 --prompts "$tmp/empty.txt" \
    --sample-tokens 8 --out "$tmp/p2"
python3 -c "print('Who are you?'); print('x' * 1000000)" >"$tmp/long.txt"
expect_fail megabyte_prompt_refused_at_start "long.txt:2: the prompt is" timeout 60 "$TRAIN" "${ARGS[@]}" --steps 2 \
    --prompts "$tmp/long.txt" --sample-tokens 8 --out "$tmp/p3"
expect_fail sample_every_needs_prompts "--sample-every needs --prompts" "$TRAIN" "${ARGS[@]}" --sample-every 2 --out "$tmp/p4"
expect_fail eval_every_needs_val "--eval-every needs --val" "$TRAIN" --model "$tmp/model" \
    --train "$tmp/shards/train-conversations.bin" --eval-every 2 --out "$tmp/p5"

# ---- the last step: checkpoint and adapter first; SIGINT during the answers stops at once
for i in $(seq 1 60); do echo "Tell me about case number $i."; done >"$tmp/many.txt"
stop_when INT "$tmp/s.out" '^sample:' "$tmp/s.out" "$TRAIN" "${ARGS[@]}" --steps 2 --prompts "$tmp/many.txt" \
    --sample-tokens 6 --out "$tmp/s"
answered=$(grep -c '^sample:' "$tmp/s.out")
if [ "$rc" -eq 130 ] && awk -v t="$took" 'BEGIN { exit !(t < 5) }' && [ "$answered" -lt 60 ]; then
    echo "PASS sigint_stops_samples_at_once (status 130 after ${took}s, $answered of 60 answered)"
else
    echo "FAIL sigint_stops_samples_at_once (status $rc after ${took}s, $answered of 60 answered)"
fi
# a run that dies while answering (out of memory, kill -9) has lost nothing
stop_when KILL "$tmp/s9.out" '^sample:' "$tmp/s9.out" "$TRAIN" "${ARGS[@]}" --steps 2 --prompts "$tmp/many.txt" \
    --sample-tokens 6 --out "$tmp/s9"
[ -f "$tmp/s9/checkpoint.safetensors" ] && [ -f "$tmp/s9/adapter/adapter_model.safetensors" ] && [ ! -f "$tmp/s9/DONE" ] &&
    echo "PASS checkpoint_and_adapter_before_samples" || echo "FAIL checkpoint_and_adapter_before_samples"
"$TRAIN" "${ARGS[@]}" --steps 2 --prompts "$tmp/many.txt" --sample-tokens 6 --out "$tmp/s" >"$tmp/s2.out" 2>&1
rc=$?
lines=$(wc -l <"$tmp/s/samples.jsonl")
distinct=$(sort -u "$tmp/s/samples.jsonl" | wc -l)
[ "$rc" -eq 0 ] && [ -f "$tmp/s/DONE" ] && [ "$lines" -eq 60 ] && [ "$distinct" -eq 60 ] &&
    echo "PASS rerun_answers_every_prompt_once" || echo "FAIL rerun_answers_every_prompt_once (status $rc, $lines lines, $distinct distinct)"

# ---- SIGINT during the final evaluation (200 validation conversations) stops it at once
python3 -c "
import json
for i in range(250):
    print(json.dumps({'messages': [{'role': 'user', 'content': f'Question {i} about the case?'},
                                   {'role': 'assistant', 'content': f'The answer to {i} is elementary.'}]}))" >"$tmp/val.jsonl"
"$SAN_BIN/prep" --tokenizer "$TOK" --out "$tmp/vshards" --val-fraction 0.8 "$tmp/val.jsonl" >/dev/null 2>&1
V=("${ARGS[@]}" --val "$tmp/vshards/val-val.bin" --steps 1)
stop_when INT "$tmp/e.out" '^adapter written' "$tmp/e.out" "$TRAIN" "${V[@]}" --out "$tmp/e"
if [ "$rc" -eq 130 ] && awk -v t="$took" 'BEGIN { exit !(t < 3) }' && ! grep -q val_loss "$tmp/e/log.jsonl"; then
    echo "PASS sigint_stops_evaluation_at_once (status 130 after ${took}s)"
else
    echo "FAIL sigint_stops_evaluation_at_once (status $rc after ${took}s)"
fi
"$TRAIN" "${V[@]}" --out "$tmp/e" >/dev/null 2>&1
[ $? -eq 0 ] && [ "$(grep -c val_loss "$tmp/e/log.jsonl")" -eq 1 ] && [ -f "$tmp/e/DONE" ] &&
    echo "PASS rerun_evaluates_once" || echo "FAIL rerun_evaluates_once"

# ---- SIGTERM: 143, and the resumed run is the uninterrupted one
"$TRAIN" "${ARGS[@]}" --steps 12 --checkpoint-every 5 --eval-every 4 --out "$tmp/ref" >/dev/null 2>&1
stop_when TERM "$tmp/t/log.jsonl" '"step": 3, "loss"' "$tmp/t.out" "$TRAIN" "${ARGS[@]}" --steps 12 --checkpoint-every 5 \
    --eval-every 4 --out "$tmp/t"
[ "$rc" -eq 143 ] && echo "PASS sigterm_exit_status_143" || echo "FAIL sigterm_exit_status_143 (status $rc)"
"$TRAIN" "${ARGS[@]}" --steps 12 --checkpoint-every 5 --eval-every 4 --out "$tmp/t" >/dev/null 2>&1
same_output sigterm_resumed_log_equals_uninterrupted <(strip_timing "$tmp/ref/log.jsonl") <(strip_timing "$tmp/t/log.jsonl")
same_output sigterm_resumed_checkpoint_equals_uninterrupted "$tmp/ref/checkpoint.safetensors" "$tmp/t/checkpoint.safetensors"

# ---- NaN and infinity
# nan_model SRC DST TENSOR ELEMENT: a copy of SRC with one float32 element of TENSOR set to NaN
nan_model() {
    cp -r "$1" "$2"
    python3 - "$2/model.safetensors" "$3" "$4" <<'PY'
import json, struct, sys
path, name, element = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
t = json.loads(data[8:8 + n])[name]
assert t["dtype"] == "F32"
at = 8 + n + t["data_offsets"][0] + 4 * element
data[at:at + 4] = struct.pack("<f", float("nan"))
open(path, "wb").write(data)
PY
}
nan_model "$tmp/model" "$tmp/nan" model.layers.0.mlp.down_proj.weight 5
expect_fail nan_weight_refused_float32 "tensor 'model.layers.0.mlp.down_proj.weight' holds nan at element 5" \
    "$TRAIN" "${ARGS[@]}" --model "$tmp/nan" --no-nf4 --out "$tmp/n1"
expect_fail nan_weight_refused_nf4 "tensor 'model.layers.0.mlp.down_proj.weight' holds nan" \
    "$TRAIN" "${ARGS[@]}" --model "$tmp/nan" --out "$tmp/n2"
nan_model test/fixtures/tiny/mistral_window_bnb4bit "$tmp/nanbnb" model.layers.1.self_attn.o_proj.weight.nested_absmax 0
expect_fail nan_scale_refused_bitsandbytes "tensor 'model.layers.1.self_attn.o_proj.weight.nested_absmax' holds nan" \
    "$TRAIN" "${ARGS[@]}" --model "$tmp/nanbnb" --out "$tmp/n3"

# a learning rate that blows the adapter up at step 1: the loss of step 2 is NaN
"$TRAIN" "${ARGS[@]}" --steps 6 --lr 1e30 --warmup 0 --clip 0 --checkpoint-every 1 --out "$tmp/d" >"$tmp/d.out" 2>"$tmp/d.err"
rc=$?
[ "$rc" -eq 2 ] && grep -q "step 2: the loss is" "$tmp/d.err" && grep -q "checkpoint of step 1 is kept" "$tmp/d.err" &&
    [ ! -e "$tmp/d/adapter" ] && echo "PASS divergence_stops_the_run" ||
    { echo "FAIL divergence_stops_the_run (status $rc)"; sed 's/^/  /' "$tmp/d.err" | tail -2; }
if python3 - "$tmp/d/log.jsonl" <<'PY'
import json, sys
def refuse(c): raise ValueError(c)
lines = [json.loads(l, parse_constant=refuse) for l in open(sys.argv[1])]
sys.exit(0 if lines and lines[-1]["loss"] is None else 1)
PY
then echo "PASS diverged_log_is_json_with_null"; else echo "FAIL diverged_log_is_json_with_null"; sed 's/^/  /' "$tmp/d/log.jsonl"; fi
"$TRAIN" "${ARGS[@]}" --steps 6 --lr 1e30 --warmup 0 --clip 0 --checkpoint-every 1 --out "$tmp/d" >"$tmp/d2.out" 2>&1
grep -q "resuming .* from step 1" "$tmp/d2.out" && echo "PASS diverged_run_resumes_from_last_good_checkpoint" ||
    echo "FAIL diverged_run_resumes_from_last_good_checkpoint"

# ---- no duplicated log lines after a kill -9 before the first checkpoint, or a full disk
"$TRAIN" "${ARGS[@]}" --steps 8 --eval-every 3 --out "$tmp/k9ref" >/dev/null 2>&1
stop_when KILL "$tmp/k9/log.jsonl" '"step": 4, "loss"' "$tmp/k9.out" "$TRAIN" "${ARGS[@]}" --steps 8 --eval-every 3 \
    --out "$tmp/k9"
"$TRAIN" "${ARGS[@]}" --steps 8 --eval-every 3 --out "$tmp/k9" >/dev/null 2>&1
same_output kill9_before_checkpoint_no_duplicate_lines <(strip_timing "$tmp/k9ref/log.jsonl") <(strip_timing "$tmp/k9/log.jsonl")
# a file-size limit as a full disk: the first checkpoint cannot be written
(trap '' XFSZ; ulimit -f 2; exec "$TRAIN" "${ARGS[@]}" --steps 8 --eval-every 3 --checkpoint-every 4 --out "$tmp/full") \
    >/dev/null 2>"$tmp/full.err"
rc=$?
[ "$rc" -eq 2 ] && grep -q "checkpoint.safetensors" "$tmp/full.err" && echo "PASS full_disk_checkpoint_fails_with_status_2" ||
    { echo "FAIL full_disk_checkpoint_fails_with_status_2 (status $rc)"; sed 's/^/  /' "$tmp/full.err" | tail -2; }
"$TRAIN" "${ARGS[@]}" --steps 8 --eval-every 3 --checkpoint-every 4 --out "$tmp/full" >/dev/null 2>&1
same_output full_disk_then_rerun_no_duplicate_lines <(strip_timing "$tmp/k9ref/log.jsonl") <(strip_timing "$tmp/full/log.jsonl")
no_temporaries full_disk_leaves_no_temporaries "$tmp/full"

# ---- what may change on resume
C=(--steps 4 --schedule constant --checkpoint-every 2)
"$TRAIN" "${ARGS[@]}" "${C[@]}" --out "$tmp/r" >/dev/null 2>&1
expect_fail resume_refuses_other_lr "--lr was '0.00999999978' for this run and is '0.0199999996' now" \
    "$TRAIN" "${ARGS[@]}" "${C[@]}" --steps 6 --lr 2e-2 --out "$tmp/r"
expect_fail resume_refuses_other_schedule "--schedule was 'constant' for this run and is 'linear' now" \
    "$TRAIN" "${ARGS[@]}" "${C[@]}" --steps 6 --schedule linear --out "$tmp/r"
expect_fail resume_refuses_other_targets_by_name \
    "--lora-targets was 'q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj' for this run and is 'q_proj,v_proj' now" \
    "$TRAIN" "${ARGS[@]}" "${C[@]}" --steps 6 --lora-targets q,v --out "$tmp/r"
expect_fail resume_refuses_fewer_steps_than_done "give --steps 4 or more" "$TRAIN" "${ARGS[@]}" "${C[@]}" --steps 3 --out "$tmp/r"
cp "$tmp/r/checkpoint.safetensors" "$tmp/r.ckpt"
"$TRAIN" "${ARGS[@]}" "${C[@]}" --out "$tmp/r" >"$tmp/r2.out" 2>&1
[ $? -eq 0 ] && grep -q "nothing to do" "$tmp/r2.out" && cmp -s "$tmp/r.ckpt" "$tmp/r/checkpoint.safetensors" &&
    echo "PASS finished_run_rerun_does_nothing" || echo "FAIL finished_run_rerun_does_nothing"
"$TRAIN" "${ARGS[@]}" "${C[@]}" --steps 6 --out "$tmp/r" >/dev/null 2>&1
"$TRAIN" "${ARGS[@]}" "${C[@]}" --steps 6 --out "$tmp/r6" >/dev/null 2>&1
same_output steps_extend_a_run_as_if_uninterrupted <(strip_timing "$tmp/r6/log.jsonl") <(strip_timing "$tmp/r/log.jsonl")
same_output extended_adapter_equals_uninterrupted "$tmp/r6/adapter/adapter_model.safetensors" "$tmp/r/adapter/adapter_model.safetensors"

# ---- scripts and programs that must not delete or overwrite what the user has
mkdir -p "$tmp/qs/data"
echo precious >"$tmp/qs/data/keep.txt"
(cd "$tmp/qs" && timeout 60 bash "$OLDPWD/scripts/quickstart_cpu.sh" data >"$tmp/qs.out" 2>&1)
rc=$?
[ "$rc" -eq 1 ] && [ -f "$tmp/qs/data/keep.txt" ] && [ -f data/samples/probe_prompts.txt ] &&
    echo "PASS quickstart_never_deletes_a_directory_it_did_not_make" ||
    echo "FAIL quickstart_never_deletes_a_directory_it_did_not_make (status $rc)"
(cd "$tmp/qs" && timeout 60 bash "$OLDPWD/scripts/quickstart.sh" data >"$tmp/qs2.out" 2>&1)
rc=$?
[ "$rc" -eq 1 ] && [ -f "$tmp/qs/data/keep.txt" ] && grep -q "this script did not make it" "$tmp/qs2.out" &&
    echo "PASS smollm2_quickstart_never_deletes_a_directory_it_did_not_make" ||
    echo "FAIL smollm2_quickstart_never_deletes_a_directory_it_did_not_make (status $rc)"
(trap '' XFSZ; ulimit -f 2; exec "$SAN_BIN/init_model" --out "$tmp/im" --hidden 32 >/dev/null 2>"$tmp/im.err")
rc=$?
[ "$rc" -eq 2 ] && [ ! -e "$tmp/im" ] && [ -z "$(ls -d "$tmp"/im.tmp.* 2>/dev/null)" ] &&
    echo "PASS init_model_full_disk_leaves_nothing" || echo "FAIL init_model_full_disk_leaves_nothing (status $rc)"
"$SAN_BIN/init_model" --out "$tmp/im" --hidden 32 >/dev/null 2>&1 && echo "PASS init_model_rerun_after_full_disk" ||
    echo "FAIL init_model_rerun_after_full_disk"
cp -r test/fixtures/tiny/mistral_gqa "$tmp/base"
sum_before=$(cat "$tmp/base/model.safetensors" "$tmp/base/adapter/adapter_model.safetensors" | cksum)
expect_fail merge_refuses_out_equal_to_model "is or holds" "$SAN_BIN/merge" --model "$tmp/base" --adapter "$tmp/base/adapter" \
    --out "$tmp/base" --force
expect_fail merge_refuses_out_holding_the_adapter "is or holds" "$SAN_BIN/merge" --model "$tmp/base" \
    --adapter "$tmp/base/adapter" --out "$tmp" --force
[ "$(cat "$tmp/base/model.safetensors" "$tmp/base/adapter/adapter_model.safetensors" | cksum)" = "$sum_before" ] &&
    echo "PASS merge_inputs_untouched" || echo "FAIL merge_inputs_untouched"
