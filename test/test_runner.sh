#!/usr/bin/env bash
# test/test_runner.sh: make test's runner (test/run.sh) on small stand-in tests (issue 18:
# make test ran one test at a time and said nothing while a long one ran):
#   - two tests run at a time: two stand-ins that each wait for the other to start can only
#     both pass when they run together (each gives up after 20 s);
#   - every start is announced when it happens; each test's output is printed whole between
#     `== NAME` and `-- NAME: ...`, never interleaved with another's;
#   - the slowest tests of the previous run (TEST_TIMES) start first;
#   - a test that exits non-zero without a FAIL line is a failure; the summary names the
#     failed tests and the skipped checks, counts the skips apart, and the exit status is 1.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# meet ME OTHER: a stand-in that says it started, then waits for OTHER to start
cat >"$tmp/meet.sh" <<'SH'
touch "$DIR/$1.started"
for _ in $(seq 200); do
    [ -e "$DIR/$2.started" ] && { echo "PASS $1_met_$2"; echo "PASS $1_done"; exit 0; }
    echo "$1 waiting"
    sleep 0.1
done
echo "FAIL $1_met_$2 (gave up after 20 s)"
SH
printf 'bash %q a b\n' "$tmp/meet.sh" >"$tmp/a.sh"
printf 'bash %q b a\n' "$tmp/meet.sh" >"$tmp/b.sh"
printf 'echo "PASS quick"\n' >"$tmp/quick.sh"
printf 'echo "PASS f1"; echo "FAIL f2"\n' >"$tmp/fail.sh"
printf 'echo "PASS c1"; exit 3\n' >"$tmp/crash.sh"
printf 'echo "SKIP s1 (no reference here)"; echo "PASS s2"\n' >"$tmp/skip.sh"
# the previous run: quick.sh was the slowest, then fail.sh (a test it did not time would come
# first of all)
for t in quick:100 fail:50 a:10 b:9 crash:1 skip:1; do printf '%s\t%s\n' "$tmp/${t%:*}.sh" "${t#*:}"; done >"$tmp/times"

DIR=$tmp TEST_JOBS=2 TEST_TIMES=$tmp/times TOKENIZER_DATA=$tmp PYTHON=false \
    bash test/run.sh "$tmp/a.sh" "$tmp/crash.sh" "$tmp/skip.sh" "$tmp/fail.sh" "$tmp/b.sh" "$tmp/quick.sh" \
    >"$tmp/out" 2>&1
rc=$?
export DIR=$tmp

check() {  # check NAME CONDITION...: PASS when the condition (a command) succeeds
    local name=$1
    shift
    if "$@"; then echo "PASS $name"; else echo "FAIL $name"; sed 's/^/  /' "$tmp/out" | head -40; fi
}
has() { grep -qxF -- "$1" "$tmp/out"; }

check runner_runs_two_at_a_time grep -q "PASS a_met_b" "$tmp/out"
check runner_runs_two_at_a_time_both grep -q "PASS b_met_a" "$tmp/out"
# the starts are announced as they happen: a's start before its result, and b's start (which
# a's waiting needs) before a's result too
before() { [ "$(grep -nF -- "$1" "$tmp/out" | head -1 | cut -d: -f1)" -lt "$(grep -nF -- "$2" "$tmp/out" | head -1 | cut -d: -f1)" ]; }
check runner_announces_each_start before ".. $tmp/b.sh started" "-- $tmp/a.sh:"
# each block holds its own test's lines only, and nothing is printed outside the blocks but the
# start lines and the summary
blocks_whole() {
    awk '/^== /{ cur = $2; next } /^-- /{ cur = ""; next }
         cur == "" { if (!/^\.\. .* started$|^failed: |^skipped: |^[0-9]+ passed, /) bad = 1; next }
         /waiting$/ { if (index(cur, "/" $1 ".sh") == 0) bad = 1 }
         /^PASS [ab]_/ { split($2, w, "_"); if (index(cur, "/" w[1] ".sh") == 0) bad = 1 }
         END { exit bad }' "$tmp/out"
}
check runner_outputs_never_interleave blocks_whole
order=$(grep ' started$' "$tmp/out" | sed "s|^\.\. $tmp/||; s|\.sh started$||" | tr '\n' ' ')
check runner_slowest_of_last_run_first [ "$order" = "quick fail a b crash skip " ]
check runner_crash_without_fail_line_is_a_failure has "FAIL $tmp/crash.sh exited with status 3 without reporting a failure"
check runner_summary_names_failed_tests grep -qE "^failed: .*(fail|crash)\.sh \(1\) .*(fail|crash)\.sh \(1\)$" "$tmp/out"
check runner_summary_names_skipped_checks has "skipped: s1 (no reference here)"
check runner_summary_counts has "8 passed, 2 failed, 1 skipped"
check runner_exit_status_1_on_failure [ "$rc" -eq 1 ]
