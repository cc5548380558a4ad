#!/usr/bin/env bash
# test/test_persona_build.sh: `persona build`, the whole method in one command, on the novel.
#   - with a teacher (scripts/persona_stub_teacher.py, named as {requests} {answers}, and
#     again reading standard input): train.jsonl and val.jsonl that `prep --check` accepts,
#     report.txt (counts, confidence histogram, samples) and probes.txt;
#   - without one: the strategy-A training set, and the report says so;
#   - a teacher that fails: exit status 2 naming the command, no answers file left;
#   - SIGTERM while the teacher works: status 143, the teacher stopped, no temporary file;
#   - an --out directory that holds the book is refused, the book untouched.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${SAN_BIN:?}" "${PYTHON:?}" "${TOKENIZER_DATA:?}"
PERSONA="$SAN_BIN/persona"
BOOK=../shared/corpus/sherlock-holmes.txt
V3="$TOKENIZER_DATA/mistral_instruct_tokenizer_240323.model.v3"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
who=(--book "$BOOK" --character "Sherlock Holmes" --alias Holmes)

# check NAME CMD...: PASS when the command succeeds.
check() {
    local name=$1
    shift
    if "$@" >"$tmp/check.out" 2>&1; then
        echo "PASS $name"
    else
        echo "FAIL $name"
        head -5 "$tmp/check.out" | sed 's/^/  /'
    fi
}
has() { grep -qF -- "$2" "$1" || { echo "missing in $1: $2"; return 1; }; }
prep_accepts() {
    if [ -x "$SAN_BIN/prep" ]; then
        check "$1" "$SAN_BIN/prep" --tokenizer "$V3" --check "$2/train.jsonl" --val "$2/val.jsonl"
    fi
}

# with a teacher, files named
check build_with_teacher "$PERSONA" build "${who[@]}" --out "$tmp/b" \
    --teacher "$PYTHON scripts/persona_stub_teacher.py {requests} {answers}"
cp "$tmp/check.out" "$tmp/b.out"
sed 's/^/# /' "$tmp/b.out"
for f in dialogue.jsonl turns.tsv requests.jsonl answers.jsonl narrative.jsonl qa.jsonl rejects.jsonl \
    train.jsonl val.jsonl report.txt probes.txt; do
    [ -s "$tmp/b/$f" ] || echo "  missing or empty: $f"
done >"$tmp/missing"
check build_writes_every_file test ! -s "$tmp/missing"
cat "$tmp/missing"
prep_accepts prep_check_accepts_the_build "$tmp/b"
check build_report_has_the_strategies has "$tmp/b.out" "strategies A, B and C"
report_parts() {
    has "$1" "lines of Sherlock Holmes:" && has "$1" "confidence of the lines attributed to the character" &&
        has "$1" "requests:" && has "$1" "of the character's lines, drawn at random, to read"
}
check report_has_counts_histogram_and_samples report_parts "$tmp/b/report.txt"
check probes_are_questions sh -c "[ \$(grep -c '?' '$tmp/b/probes.txt') -ge 10 ]"
check no_temporary_file_left sh -c "! ls '$tmp/b' | grep -q '\\.tmp\$'"

# with a teacher on standard input and output: the same training set
# (the stub prints what it injected on its standard output: its answers go to a file, then out)
check build_teacher_on_stdin "$PERSONA" build "${who[@]}" --out "$tmp/s" \
    --teacher "$PYTHON scripts/persona_stub_teacher.py /dev/stdin $tmp/stdout-answers.jsonl >/dev/null && cat $tmp/stdout-answers.jsonl"
same_output teacher_on_stdin_same_train "$tmp/b/train.jsonl" "$tmp/s/train.jsonl"

# without a teacher: strategy A, and the report says so
check build_without_teacher "$PERSONA" build "${who[@]}" --out "$tmp/a"
cp "$tmp/check.out" "$tmp/a.out"
check says_no_teacher has "$tmp/a.out" "no --teacher given: the training set is the character's own lines only (strategy A)"
check says_strategy_a has "$tmp/a.out" "strategy A only (no teacher)"
check no_requests_without_teacher test ! -e "$tmp/a/requests.jsonl"
prep_accepts prep_check_accepts_strategy_a "$tmp/a"

# a teacher that fails
err=$("$PERSONA" build "${who[@]}" --out "$tmp/f" --teacher "exit 3" 2>&1 >/dev/null)
rc=$?
if [ "$rc" -eq 2 ] && [[ "$err" == *"teacher: the command exited with status 3: exit 3"* ]] &&
    [ ! -e "$tmp/f/answers.jsonl" ] && [ ! -e "$tmp/f/answers.jsonl.tmp" ] && [ ! -e "$tmp/f/train.jsonl" ]; then
    echo "PASS failing_teacher_is_an_error"
else
    echo "FAIL failing_teacher_is_an_error"
    echo "  exit status $rc, stderr: $err"
    ls "$tmp/f" | sed 's/^/  /'
fi

# SIGTERM while the teacher works (its process writes its pid, then sleeps)
"$PERSONA" build "${who[@]}" --out "$tmp/t" --teacher "echo \$\$ > $tmp/teacher.pid; exec sleep 60" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 600); do
    [ -s "$tmp/teacher.pid" ] && break
    sleep 0.05
done
kill -TERM "$pid"
wait "$pid"
rc=$?
teacher=$(cat "$tmp/teacher.pid" 2>/dev/null)
# (killed, it may stay a zombie a while: its new parent reaps it when it will)
state=""
for _ in $(seq 40); do
    state=$(proc_state "$teacher")
    [ -z "$state" ] || [[ "$state" == Z* ]] && break
    sleep 0.05
done
if [ "$rc" -eq 143 ] && [ -n "$teacher" ] && { [ -z "$state" ] || [[ "$state" == Z* ]]; } &&
    ! ls "$tmp/t" | grep -q '\.tmp$' && [ ! -e "$tmp/t/answers.jsonl" ]; then
    echo "PASS sigterm_stops_the_teacher_and_leaves_nothing"
else
    echo "FAIL sigterm_stops_the_teacher_and_leaves_nothing"
    echo "  exit status $rc (wanted 143), teacher pid '$teacher' in state '$state', left: $(ls "$tmp/t" | tr '\n' ' ')"
    [ -n "$teacher" ] && kill "$teacher" 2>/dev/null
fi

# an --out directory that holds the book
mkdir -p "$tmp/o"
cp "$BOOK" "$tmp/o/report.txt"
expect_fail build_out_holds_the_book "would replace the book" \
    "$PERSONA" build --book "$tmp/o/report.txt" --character "Sherlock Holmes" --alias Holmes --out "$tmp/o"
same_output build_book_untouched "$BOOK" "$tmp/o/report.txt"
