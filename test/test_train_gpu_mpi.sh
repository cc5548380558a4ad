#!/usr/bin/env bash
# test/test_train_gpu_mpi.sh: train_gpu data-parallel on 2 ranks: `mpirun -np 2` of the
# harness build made for MPI (build/test/train_gpu_mpi: -DUSE_MPI, NCCL stood in by MPI,
# test/cuda_host/nccl.h), against one rank, on the tiny Mistral of test_train_gpu.sh.
#
# The data make the two comparable: every conversation of make_shards' with PROMPT 4 is 10
# tokens (9 trained pairs and a row of --seq-len 18 holds exactly two), and each epoch's
# permutation gives rank r of 2 the conversations r, r + 2, ..., so that 2 ranks of --batch 2
# train, micro-batch by micro-batch, the very conversations one rank of --batch 4 does, only
# packed in other rows. Checked:
# - the step's trained targets, summed over the ranks, equal the one rank's, every step;
# - step 1, the same weights on the same tokens: the loss within 1e-5 relative of the one
#   rank's (measured 1.6e-7), the gradient norm within 1e-3 (measured 1.8e-4). Not bit for
#   bit: the gradient sums run in another order, and a conversation packed at another offset
#   falls across another boundary of the attention kernel's tiles, so its online softmax
#   rounds otherwise and a few bf16 activations differ by a unit. A rank normalising by its
#   own trained targets doubles the gradient norm, averaging the ranks' gradients instead of
#   summing them halves it;
# - every step's loss within 1e-3 (measured 7.2e-5 worst over 8 steps at lr 1e-2), gradient
#   norm within 5e-3 (measured 1.5e-3), and the evaluations (each rank its share, the sums
#   reduced) within 1e-3 (measured 1.4e-5): after step 1 the runs drift apart as AdamW moves
#   every weight by about lr whatever its gradient's size, so an element whose gradient is
#   within rounding of 0 may step the other way;
# - the ranks' LoRA weights and moments are bit-identical at every checkpoint, the last one
#   (the adapter's) included: rank 0 compares every rank's CRC32 there and stops the run
#   naming a rank that differs, which a rank started with another --lr (Open MPI's MPMD
#   launch) makes happen;
# - a plain launch and `mpirun -np 1` of the MPI build train the bits of the build without
#   MPI (a plain run stopped by SIGINT and resumed under mpirun -np 1);
# - faults: SIGINT to mpirun (Open MPI sends every rank SIGTERM, then SIGKILL), SIGINT to
#   rank 1 alone (both ranks stop after the same step, which rank 0 saves, status 130), and
#   SIGKILL of rank 1 in the middle of a step (the job ends within 30 s naming rank 1), each
#   resumed: the finished run equals the uninterrupted one bit for bit (log, checkpoint,
#   adapter); resuming with one rank is refused, saying both numbers.
# - the stream order of the gradients' sums: every run above is watched by the harness's
#   race detector (streams asynchronous), and two mutants of model_gpu.cuh (the Makefile's
#   COMM_MUTANTS), each without one of the two waits, are stopped by it at their first step
#   with a report naming ncclAllReduce and the unordered streams.
# Needs Open MPI (apt-get install openmpi-bin libopenmpi-dev); without it one FAIL line.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${SAN_BIN:?}"
FAST_BIN="${FAST_BIN:-$PWD/build/test}"
if ! command -v mpirun >/dev/null 2>&1; then
    echo "FAIL train_gpu_mpi_needs_open_mpi: mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"
    exit 1
fi
MUTANTS=("$FAST_BIN/train_gpu_mpi_no_grads_ready_wait" "$FAST_BIN/train_gpu_mpi_no_grads_reduced_wait")
for b in "$FAST_BIN/train_gpu_mpi" "$FAST_BIN/train_gpu" "$SAN_BIN/train_gpu_mpi" "${MUTANTS[@]}"; do
    [ -x "$b" ] || { echo "FAIL train_gpu_mpi_built: $b is missing (make test-build)"; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Open MPI refuses to run as root without these; 2 ranks may exceed the cores (slots).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# (leak detection off for the sanitizer build: see test_nccl_mpi.sh)
export ASAN_OPTIONS="${ASAN_OPTIONS:-exitcode=86}:detect_leaks=0"
MPIRUN=(mpirun -np 2 --oversubscribe)
ONE="$FAST_BIN/train_gpu" TWO="$FAST_BIN/train_gpu_mpi"

"$SAN_BIN/init_model" --out "$tmp/model" --vocab 512 --hidden 128 --intermediate 256 --layers 2 --heads 2 --kv-heads 1 \
    --window 16 >/dev/null && "$SAN_BIN/make_shards" "$tmp/shards" 512 1 4 || { echo "FAIL tiny_model_and_shards"; exit 1; }
ARGS=(--model "$tmp/model" --train "$tmp/shards/train.bin" --val "$tmp/shards/val.bin" --seq-len 18 --grad-accum 2
      --steps 8 --lr 1e-2 --warmup 2 --lora-r 4 --checkpoint-every 2 --eval-every 4)
numbers() { sed -E 's/, "(tokens_per_s|ms|mfu|peak_memory_gb)": [0-9.e+-]+//g' "$1"; }
field() { grep "\"$2\"" "$1" | sed -E "s/.*\"$2\": ([0-9.e+-]+).*/\\1/"; }
steps_logged() {
    local n
    n=$(grep -c '"loss"' "$1/log.jsonl" 2>/dev/null)
    echo "${n:-0}"
}
# within_rel NAME FILE_A FILE_B TOL: the numbers line by line within TOL relative
within_rel() {
    local worst
    worst=$(paste "$2" "$3" | awk 'NF != 2 { print "missing"; exit } { d = ($1 - $2) / $2; d = d < 0 ? -d : d;
        if (d > w) w = d } END { if (NR == 0) print "missing"; else printf "%.2e", w }')
    if [ "$worst" != missing ] && awk -v w="$worst" -v t="$4" 'BEGIN { exit !(w <= t) }'; then
        echo "PASS $1 (worst relative difference $worst, bound $4)"
    else
        echo "FAIL $1 (worst relative difference $worst, bound $4)"
        paste "$2" "$3" | head -12 | sed 's/^/  /'
    fi
}
# rank_pid MPIRUN_PID RANK: the process of that rank (a child of mpirun)
rank_pid() {
    local p
    for p in $(proc_children "$1"); do
        tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && { echo "$p"; return; }
    done
}
# start_until STEPS DIR OUT CMD...: CMD in the background (pid), until DIR's log holds STEPS steps
# and CMD has made a step itself (a resumed run's log may already hold STEPS steps from the
# run before: without the second condition the caller would signal ranks not yet started)
start_until() {
    local steps=$1 dir=$2 out=$3
    shift 3
    "$@" --out "$dir" >"$out" 2>&1 &
    pid=$!
    for _ in $(seq 1 2400); do
        [ "$(steps_logged "$dir")" -ge "$steps" ] && grep -q '^step ' "$out" && return
        kill -0 "$pid" 2>/dev/null || return
        sleep 0.1
    done
}
# finish PID: waits for it; sets rc and took (seconds since this call)
finish() {
    local start
    start=$(date +%s.%N)
    wait "$1"
    rc=$?
    took=$(echo "$(date +%s.%N) - $start" | bc)
}

# 1. two ranks of --batch 2 against one of --batch 4, on the same conversations
"$ONE" "${ARGS[@]}" --batch 4 --out "$tmp/one" >"$tmp/one.out" 2>&1 || { echo "FAIL one_rank_run"; tail -3 "$tmp/one.out"; }
"${MPIRUN[@]}" "$TWO" "${ARGS[@]}" --batch 2 --out "$tmp/two" >"$tmp/two.out" 2>&1
rc=$?
if [ $rc -eq 0 ] && [ -f "$tmp/two/adapter/adapter_model.safetensors" ] && [ -f "$tmp/two/DONE" ] &&
    grep -q "2 ranks, each with its own share of the data: a step trains 2 x 2 x 2 = 8 rows" "$tmp/two.out"; then
    echo "PASS two_ranks_run_and_agree_at_every_checkpoint"
else
    echo "FAIL two_ranks_run_and_agree_at_every_checkpoint (status $rc)"; grep -v '^ ' "$tmp/two.out" | tail -5 | sed 's/^/  /'
fi
for f in trained loss grad_norm val_loss; do
    field "$tmp/one/log.jsonl" $f >"$tmp/one.$f"
    field "$tmp/two/log.jsonl" $f >"$tmp/two.$f"
done
[ "$(wc -l <"$tmp/one.trained")" = 8 ] && same_output trained_targets_summed_over_ranks_every_step "$tmp/one.trained" \
    "$tmp/two.trained" || echo "FAIL trained_targets_summed_over_ranks_every_step (no 8 steps)"
within_rel step_1_loss_same_tokens_same_weights <(head -1 "$tmp/two.loss") <(head -1 "$tmp/one.loss") 1e-5
within_rel step_1_grad_norm_same_tokens_same_weights <(head -1 "$tmp/two.grad_norm") <(head -1 "$tmp/one.grad_norm") 1e-3
within_rel losses_track_one_rank_of_twice_the_batch "$tmp/two.loss" "$tmp/one.loss" 1e-3
within_rel grad_norms_track_one_rank "$tmp/two.grad_norm" "$tmp/one.grad_norm" 5e-3
[ "$(wc -l <"$tmp/one.val_loss")" = 2 ] && within_rel evaluation_split_across_ranks_tracks_one_rank \
    "$tmp/two.val_loss" "$tmp/one.val_loss" 1e-3 || echo "FAIL evaluation_split_across_ranks_tracks_one_rank (no 2 evaluations)"
[ "$(field "$tmp/two/log.jsonl" val_trained | sort -u)" = "$(field "$tmp/one/log.jsonl" val_trained | sort -u)" ] &&
    echo "PASS evaluation_covers_every_target_once" || echo "FAIL evaluation_covers_every_target_once"

# 2. ranks that diverge (rank 1 started with another --lr) are stopped at the first
# checkpoint, naming the rank (the sanitizer build: AddressSanitizer over the MPI paths)
mpirun --oversubscribe -np 1 "$SAN_BIN/train_gpu_mpi" "${ARGS[@]}" --batch 2 --steps 2 --out "$tmp/apart" : \
    -np 1 "$SAN_BIN/train_gpu_mpi" "${ARGS[@]}" --batch 2 --steps 2 --lr 2e-2 --out "$tmp/apart" >"$tmp/apart.out" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "^error: step 2: rank 1's LoRA weights and AdamW moments differ from rank 0's" "$tmp/apart.out" &&
    [ ! -f "$tmp/apart/checkpoint.safetensors" ] && ! grep -q "ERROR: AddressSanitizer" "$tmp/apart.out"; then
    echo "PASS diverged_ranks_stopped_naming_the_rank"
else
    echo "FAIL diverged_ranks_stopped_naming_the_rank (status $rc)"; grep -v '^ ' "$tmp/apart.out" | tail -5 | sed 's/^/  /'
fi

# 3. one rank, MPI built in: a plain launch, stopped, resumed by mpirun -np 1: the bits of the
# build without MPI
start_until 3 "$tmp/plain" "$tmp/plain.out" "$TWO" "${ARGS[@]}" --batch 4
kill -INT "$pid" 2>/dev/null
finish "$pid"
[ $rc -eq 130 ] && echo "PASS plain_launch_stops_on_sigint" || echo "FAIL plain_launch_stops_on_sigint (status $rc)"
mpirun -np 1 "$TWO" "${ARGS[@]}" --batch 4 --out "$tmp/plain" >"$tmp/plain.2.out" 2>&1 ||
    { echo "FAIL np1_resume_runs"; tail -3 "$tmp/plain.2.out"; }
same_output plain_and_np1_log_equal_build_without_mpi <(numbers "$tmp/one/log.jsonl") <(numbers "$tmp/plain/log.jsonl")
for f in checkpoint.safetensors adapter/adapter_model.safetensors; do
    g=${f##*/}
    same_output "plain_and_np1_${g%%.*}_equal_build_without_mpi" "$tmp/one/$f" "$tmp/plain/$f"
done

# 4. faults, one after the other in one run directory, each resumed
# 4a. SIGINT to mpirun: it sends every rank SIGTERM, and SIGKILL a second later
start_until 2 "$tmp/f" "$tmp/f1.out" "${MPIRUN[@]}" "$TWO" "${ARGS[@]}" --batch 2
kill -INT "$pid" 2>/dev/null
finish "$pid"
if [ $rc -ne 0 ] && awk -v t="$took" 'BEGIN { exit !(t < 30) }' && [ -z "$(proc_with_arg "$tmp/f")" ]; then
    echo "PASS sigint_to_mpirun_ends_the_job (status $rc after ${took}s)"
else
    echo "FAIL sigint_to_mpirun_ends_the_job (status $rc after ${took}s)"
fi
# resuming with one rank: refused, saying what was saved and what is asked
expect_fail np1_resume_of_two_ranks_refused "mpirun -np was '2' for this run and is '1' now" \
    "$TWO" "${ARGS[@]}" --batch 2 --out "$tmp/f"
mpirun -np 1 "$TWO" "${ARGS[@]}" --batch 2 --out "$tmp/f" >"$tmp/f.np1.out" 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q "mpirun -np was '2' for this run and is '1' now" "$tmp/f.np1.out" &&
    echo "PASS mpirun_np1_resume_refused" || echo "FAIL mpirun_np1_resume_refused (status $rc)"
# LoRA dropout on several ranks: refused in one line, nothing written (each rank would draw
# the same masks on its own data)
"${MPIRUN[@]}" "$TWO" "${ARGS[@]}" --batch 2 --lora-dropout 0.1 --out "$tmp/drop" >"$tmp/drop.out" 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q -- "--lora-dropout under mpirun with 2 ranks: not supported yet" "$tmp/drop.out" &&
    [ ! -e "$tmp/drop/log.jsonl" ] && echo "PASS dropout_on_two_ranks_refused" ||
    { echo "FAIL dropout_on_two_ranks_refused (status $rc)"; tail -3 "$tmp/drop.out"; }
# 4b. SIGINT to rank 1 alone: both ranks stop after the same step, rank 0 saves it, 130
start_until 4 "$tmp/f" "$tmp/f2.out" "${MPIRUN[@]}" "$TWO" "${ARGS[@]}" --batch 2
kill -INT "$(rank_pid "$pid" 1)" 2>/dev/null
finish "$pid"
last=$(steps_logged "$tmp/f")
if [ $rc -ne 0 ] && grep -q "^stopped by signal 2 at step $last; the checkpoint is written" "$tmp/f2.out"; then
    echo "PASS sigint_to_one_rank_stops_both_after_a_saved_step (step $last)"
else
    echo "FAIL sigint_to_one_rank_stops_both_after_a_saved_step (status $rc)"; grep -v '^ ' "$tmp/f2.out" | tail -4
fi
# 4c. SIGKILL of rank 1 in the middle of a step: the job ends, naming it
start_until $((last + 1)) "$tmp/f" "$tmp/f3.out" "${MPIRUN[@]}" "$TWO" "${ARGS[@]}" --batch 2
kill -KILL "$(rank_pid "$pid" 1)" 2>/dev/null
finish "$pid"
if [ $rc -ne 0 ] && awk -v t="$took" 'BEGIN { exit !(t < 30) }' && grep -q "rank 1 .*exited on signal 9" "$tmp/f3.out" &&
    grep -q "^resuming .* from step $last" "$tmp/f3.out"; then
    echo "PASS killed_rank_ends_the_job_naming_it (status $rc after ${took}s)"
else
    echo "FAIL killed_rank_ends_the_job_naming_it (status $rc after ${took}s)"; grep -v '^ ' "$tmp/f3.out" | tail -4
fi
# 4d. the last checkpoint loads, and the run finishes as the uninterrupted one
"${MPIRUN[@]}" "$TWO" "${ARGS[@]}" --batch 2 --out "$tmp/f" >"$tmp/f4.out" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q "^resuming " "$tmp/f4.out" && echo "PASS resumed_after_the_faults" ||
    { echo "FAIL resumed_after_the_faults (status $rc)"; grep -v '^ ' "$tmp/f4.out" | tail -4; }
same_output interrupted_two_ranks_log_equals_uninterrupted <(numbers "$tmp/two/log.jsonl") <(numbers "$tmp/f/log.jsonl")
for f in checkpoint.safetensors adapter/adapter_model.safetensors; do
    g=${f##*/}
    same_output "interrupted_two_ranks_${g%%.*}_equals_uninterrupted" "$tmp/two/$f" "$tmp/f/$f"
done

# 5. the waits that order the sums: without the comm stream's wait for a layer's backward,
# its sum reads gradients a matmul of the main stream writes; without the main stream's wait
# for the sums, the gradient norm reads what a sum writes. The race detector stops both.
for b in "${MUTANTS[@]}"; do
    name=${b##*/}
    "${MPIRUN[@]}" "$b" "${ARGS[@]}" --batch 2 --steps 1 --out "$tmp/$name" >"$tmp/$name.out" 2>&1
    rc=$?
    if [ $rc -ne 0 ] && grep -q "race: .*ncclAllReduce (stream [0-9]*) .*streams [0-9]* and [0-9]* with no event" \
        "$tmp/$name.out"; then
        echo "PASS ${name#train_gpu_mpi_}_found_by_the_race_detector"
    else
        echo "FAIL ${name#train_gpu_mpi_}_found_by_the_race_detector (status $rc)"
        grep -v '^ ' "$tmp/$name.out" | tail -4 | sed 's/^/  /'
    fi
done
