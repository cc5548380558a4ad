#!/usr/bin/env bash
# test/run.sh: runs every test program and test script given on the command line and
# prints the closing summary `N passed, N failed`.
#
# Each test prints `PASS name` or `FAIL name` lines (test/test.h for C programs,
# test/lib.sh for scripts), or `SKIP name (reason)` for a check whose optional input is not
# installed; skips are counted and listed in the summary, never as passes. A program that exits non-zero without reporting a failure
# (a crash, a sanitizer report) counts as one more failure, so nothing fails silently.
# C programs receive the directory of mistral-common's tokenizer files as argv[1]; the
# scripts find everything through the environment set here.
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

passed=0
failed=0
skipped=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "$@"; do
    echo "== $t"
    start=$(date +%s)
    case "$t" in
        *.sh) bash "$t" >"$log" 2>&1 ;;
        *) "$t" "$TOKENIZER_DATA" >"$log" 2>&1 ;;
    esac
    rc=$?
    cat "$log"
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    s=$(grep -c '^SKIP ' "$log")
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
    echo "-- $t: $p passed, $f failed$([ "$s" -gt 0 ] && echo ", $s skipped") ($(( $(date +%s) - start ))s)"
done
echo "$passed passed, $failed failed$([ "$skipped" -gt 0 ] && echo ", $skipped skipped")"
[ "$failed" -eq 0 ]
