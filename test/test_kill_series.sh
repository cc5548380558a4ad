#!/usr/bin/env bash
# test/test_kill_series.sh: 100 kill -9s at random moments of training runs (issue 20). A run
# is started, killed after a random delay (start-up, the steps, evaluations, probe answers,
# checkpoint and adapter writes, DONE), started again, killed again, ... until it finishes;
# then the next run directory, until 100 kills have landed.
# Every run directory must end with the log (without its timing field), samples, checkpoint,
# adapter and DONE of an uninterrupted run, byte for byte, and no temporary file.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
tiny_run_setup
printf 'Who are you?\n' >"$tmp/prompts.txt"
ARGS=("${TINY_ARGS[@]}" --lora-dropout 0.1 --lr 1e-2 --warmup 2 --steps 16 --checkpoint-every 2 --eval-every 5
      --prompts "$tmp/prompts.txt" --sample-every 8 --sample-tokens 3 --temperature 0.9)
ms() { echo $(($(date +%s%N) / 1000000)); }
t0=$(ms)
"$SAN_BIN/train_cpu" "${ARGS[@]}" --out "$tmp/ref" >/dev/null 2>&1 || { echo "FAIL uninterrupted_run"; exit 1; }
t1=$(ms)
"$SAN_BIN/train_cpu" "${ARGS[@]}" --out "$tmp/ref" >/dev/null 2>&1  # finished: start-up alone
t2=$(ms)
# kills land up to the start-up time plus a fifth of the training (measured on this machine,
# now): a run then takes about twenty lives, so the 100 kills cover every phase several times
startup=$((t2 - t1)) run=$((t1 - t0))
max_ms=$((startup + (run - startup) / 10))
RANDOM=20
kills=0 runs=0 bad=0
while [ $kills -lt 100 ]; do
    d="$tmp/run$runs"
    while [ $kills -lt 100 ]; do
        "$SAN_BIN/train_cpu" "${ARGS[@]}" --out "$d" >/dev/null 2>&1 &
        pid=$!
        delay=$((20 + RANDOM % max_ms))
        sleep "$((delay / 1000)).$(printf '%03d' $((delay % 1000)))"
        if kill -9 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null
            kills=$((kills + 1))
        else
            wait "$pid"
            rc=$?
            [ $rc -eq 0 ] && [ -f "$d/DONE" ] && break
            echo "  a run of $d exited with status $rc"
            bad=1
            break
        fi
    done
    "$SAN_BIN/train_cpu" "${ARGS[@]}" --out "$d" >/dev/null 2>&1 || { echo "  $d did not finish"; bad=1; }
    same_run "run_${runs}_killed_ends_as_uninterrupted" "$tmp/ref" "$d"
    runs=$((runs + 1))
done
what="$kills kills over $runs run(s), delays up to $max_ms ms"
[ $bad = 0 ] && [ $kills -eq 100 ] && echo "PASS hundred_kills_landed ($what)" || echo "FAIL hundred_kills_landed ($what)"
