#!/usr/bin/env bash
# test/run.sh: runs every test program and test script given on the command line and
# prints the closing summary `N passed, N failed`.
#
# Each test prints `PASS name` or `FAIL name` lines (test/test.h for C programs,
# test/lib.sh for scripts), or `SKIP name (reason)` for a check whose optional input is not
# installed; skips are counted and listed in the summary, never as passes. A program that
# exits non-zero without reporting a failure (a crash, a sanitizer report) counts as one
# more failure, so nothing fails silently.
# C programs receive the directory of mistral-common's tokenizer files as argv[1]; the
# scripts find everything through the environment set here.
#
# TEST_JOBS tests (default 2) run at a time, each into its own buffer: a line says when a
# test starts, and its whole output, framed by `== NAME` and `-- NAME: counts (time)`, is
# printed when it ends, so outputs never interleave. The slowest tests of the last run
# (build/test-times) start first, so that no long test is left to run alone at the end; a
# fresh clone (CI's case) has no last run and takes the order of test/test-times, the times
# of a whole run on 2 cores kept in the repository (refresh it by copying build/test-times).
set -u
cd "$(dirname "$0")/.."
export PYTHON="${PYTHON:-$PWD/.venv/bin/python}"
# the sanitizer builds of the programs, which the test scripts drive
export SAN_BIN="${SAN_BIN:-$PWD/build/san}"
export TOKENIZE="${TOKENIZE:-$SAN_BIN/tokenize}"
export TOKENIZER_DATA="${TOKENIZER_DATA:-$("$PYTHON" scripts/tokenizer_reference.py data-dir)}"
# Sanitizer findings exit with their own statuses, never with the 1 that means "bad input".
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:exitcode=86}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:exitcode=87}"
jobs=${TEST_JOBS:-2}
times=${TEST_TIMES:-build/test-times}  # each test's seconds in the last run
order=$times
[ -f "$order" ] || order=test/test-times

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
trap 'kill $(jobs -p) 2>/dev/null; wait; exit 130' INT
trap 'kill $(jobs -p) 2>/dev/null; wait; exit 143' TERM

# The order: by the last run's time, longest first; tests it did not time first of all.
tests=()
while IFS=$'\t' read -r _ t; do tests+=("$t"); done < <(
    i=0
    for t in "$@"; do
        s=$(awk -F'\t' -v t="$t" '$1 == t { s = $2 } END { print s == "" ? 1e9 : s }' "$order" 2>/dev/null || echo 1e9)
        printf '%s\t%06d\t%s\n' "$s" "$i" "$t"
        i=$((i + 1))
    done | sort -t$'\t' -k1,1gr -k2,2n | cut -f1,3)

# run_one I TEST: runs TEST into $out/I.log; its exit status and seconds go to $out/I.done
# (written last, whole, by a rename).
run_one() {
    local start rc
    start=$(date +%s)
    case "$2" in
        *.sh) bash "$2" >"$out/$1.log" 2>&1 ;;
        *) "$2" "$TOKENIZER_DATA" >"$out/$1.log" 2>&1 ;;
    esac
    rc=$?
    echo "$rc $(($(date +%s) - start))" >"$out/$1.tmp" && mv "$out/$1.tmp" "$out/$1.done"
}

passed=0
failed=0
skipped=0
failed_tests=()
skipped_checks=()
: >"$out/times"
# report I: prints test I's output and counts it.
report() {
    local i=$1 t=${tests[$1]} rc secs p f s
    read -r rc secs <"$out/$i.done"
    echo "== $t"
    cat "$out/$i.log"
    p=$(grep -c '^PASS ' "$out/$i.log")
    f=$(grep -c '^FAIL ' "$out/$i.log")
    s=$(grep -c '^SKIP ' "$out/$i.log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $t exited with status $rc without reporting a failure"
        f=1
    fi
    if [ "$p" -eq 0 ] && [ "$f" -eq 0 ] && [ "$s" -eq 0 ]; then
        echo "FAIL $t ran no test"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))
    [ "$f" -gt 0 ] && failed_tests+=("$t ($f)")
    while IFS= read -r line; do skipped_checks+=("${line#SKIP }"); done < <(grep '^SKIP ' "$out/$i.log")
    echo "-- $t: $p passed, $f failed$([ "$s" -gt 0 ] && echo ", $s skipped") (${secs}s)"
    printf '%s\t%s\n' "$t" "$secs" >>"$out/times"
}

next=0
running=()
while [ $next -lt ${#tests[@]} ] || [ ${#running[@]} -gt 0 ]; do
    while [ $next -lt ${#tests[@]} ] && [ ${#running[@]} -lt "$jobs" ]; do
        echo ".. ${tests[$next]} started"
        run_one "$next" "${tests[$next]}" &
        running+=("$next")
        next=$((next + 1))
    done
    wait -n
    still=()
    for i in "${running[@]}"; do
        if [ -f "$out/$i.done" ]; then report "$i"; else still+=("$i"); fi
    done
    running=("${still[@]+"${still[@]}"}")
done

# the times of this run, for the next one's order (kept for tests not run this time)
mkdir -p "$(dirname "$times")"
cp "$out/times" "$out/times.new"
[ -f "$times" ] && awk -F'\t' 'NR == FNR { seen[$1] = 1; next } !($1 in seen)' "$out/times" "$times" >>"$out/times.new"
mv "$out/times.new" "$times"

[ ${#failed_tests[@]} -gt 0 ] && echo "failed: ${failed_tests[*]}"
[ ${#skipped_checks[@]} -gt 0 ] && printf 'skipped: %s\n' "${skipped_checks[@]}"
echo "$passed passed, $failed failed$([ "$skipped" -gt 0 ] && echo ", $skipped skipped")"
[ "$failed" -eq 0 ]
