#!/usr/bin/env bash
# test/test_persona_cli.sh: bad input to `persona` gives one clear line on stderr and exit
# status 1, never a crash and never an empty "success" (this runs the sanitizer build, so a
# memory error or undefined behaviour would change the exit status and fail the check);
# nothing is left behind under the output's name. And every subcommand's --help names every
# flag with its default.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${SAN_BIN:?}"
PERSONA="$SAN_BIN/persona"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
who=(--character "Sherlock Holmes" --alias Holmes)

# no output file under the name asked for, and no temporary one either
no_output() {
    if [ -e "$2" ] || [ -e "$2.tmp" ]; then echo "FAIL $1"; echo "  $2 was written"; else echo "PASS $1"; fi
}

expect_fail no_command "no command: expected build, extract, prompts, ingest or mix" "$PERSONA"
expect_fail unknown_command "unknown command 'extrakt'" "$PERSONA" extrakt
expect_fail unknown_option "unknown option or missing value: --frobnicate" "$PERSONA" extract --frobnicate 1
expect_fail book_required "--book FILE is required" "$PERSONA" extract "${who[@]}" --out "$tmp/x.jsonl"
expect_fail bad_min_confidence "--min-confidence '2': expected a number from 0 to 1" \
    "$PERSONA" extract --book x "${who[@]}" --out "$tmp/x.jsonl" --min-confidence 2

# the book
expect_fail missing_book "$tmp/none.txt: cannot open: No such file or directory" \
    "$PERSONA" extract --book "$tmp/none.txt" "${who[@]}" --out "$tmp/out.jsonl"
no_output missing_book_writes_nothing "$tmp/out.jsonl"
head -c 4000 "$SAN_BIN/persona" >"$tmp/binary.txt"
expect_fail binary_book "$tmp/binary.txt:1: NUL byte at offset" \
    "$PERSONA" extract --book "$tmp/binary.txt" "${who[@]}" --out "$tmp/out.jsonl"
printf 'caf\xe9 au lait\n' >"$tmp/latin1.txt"
expect_fail latin1_book "$tmp/latin1.txt:1: invalid UTF-8 at byte offset 3" \
    "$PERSONA" extract --book "$tmp/latin1.txt" "${who[@]}" --out "$tmp/out.jsonl"
: >"$tmp/empty.txt"
expect_fail empty_book "$tmp/empty.txt: empty file, not a book" \
    "$PERSONA" extract --book "$tmp/empty.txt" "${who[@]}" --out "$tmp/out.jsonl"
cat >"$tmp/silent.txt" <<'EOF'
It was a quiet evening in Baker Street, and the fog lay thick upon the windows.

"Will you have more tea?" asked Mrs. Hudson.

"No, thank you," said I, and she went away.

Holmes, for his part, sat in silence by the fire and never spoke a word all evening.
EOF
expect_fail character_never_speaks "\"Sherlock Holmes\" never speaks: none of the 2 turns found is attributed to them" \
    "$PERSONA" extract --book "$tmp/silent.txt" "${who[@]}" --out "$tmp/out.jsonl"
no_output never_speaks_writes_nothing "$tmp/out.jsonl"
expect_fail character_absent_from_prompts "\"Nobody\" is in none of the" \
    "$PERSONA" prompts --book "$tmp/silent.txt" --character Nobody --out "$tmp/req.jsonl"
no_output absent_writes_no_requests "$tmp/req.jsonl"
expect_fail template_missing "$tmp/none.txt: cannot open" \
    "$PERSONA" prompts --book "$tmp/silent.txt" "${who[@]}" --out "$tmp/req.jsonl" --template-rewrite "$tmp/none.txt"
expect_fail bad_tasks "--tasks 'summary'" "$PERSONA" prompts --book "$tmp/silent.txt" "${who[@]}" --out "$tmp/req.jsonl" --tasks summary

# ingest
"$PERSONA" prompts --book "$tmp/silent.txt" "${who[@]}" --out "$tmp/requests.jsonl" >/dev/null
: >"$tmp/empty.jsonl"
expect_fail empty_answers "$tmp/empty.jsonl: no answers in the file" "$PERSONA" ingest --requests "$tmp/requests.jsonl" \
    --answers "$tmp/empty.jsonl" --out-narrative "$tmp/n.jsonl" --out-qa "$tmp/q.jsonl"
no_output empty_answers_write_nothing "$tmp/n.jsonl"
id=$(sed -n '1s/.*"custom_id":"\([^"]*\)".*/\1/p' "$tmp/requests.jsonl")
printf '{"custom_id": "%s", "content": ""}\n' "$id" >"$tmp/bad-answers.jsonl"
expect_fail all_answers_rejected "no usable answer: all 1 answers were rejected" "$PERSONA" ingest \
    --requests "$tmp/requests.jsonl" --answers "$tmp/bad-answers.jsonl" --out-narrative "$tmp/n.jsonl" --out-qa "$tmp/q.jsonl"
no_output rejected_answers_write_nothing "$tmp/q.jsonl"
expect_fail ingest_needs_outputs "--out-narrative FILE is required" "$PERSONA" ingest \
    --requests "$tmp/requests.jsonl" --answers "$tmp/bad-answers.jsonl" --out-qa "$tmp/q.jsonl"
printf '{"custom_id": "x"}\n' >"$tmp/not-requests.jsonl"
expect_fail malformed_requests "$tmp/not-requests.jsonl:1: not a persona request" "$PERSONA" ingest \
    --requests "$tmp/not-requests.jsonl" --answers "$tmp/bad-answers.jsonl" --out-narrative "$tmp/n.jsonl" --out-qa "$tmp/q.jsonl"

# mix
printf '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n{"messages": [{"role": "user", "content": "and?"}]}\n' >"$tmp/conv.jsonl"
expect_fail mix_bad_line "$tmp/conv.jsonl:2: no assistant message" \
    "$PERSONA" mix --out-dir "$tmp/mix" "$tmp/conv.jsonl"
no_output mix_bad_line_writes_nothing "$tmp/mix/train.jsonl"
expect_fail mix_bad_weight "the weight must be from 0 to 100" "$PERSONA" mix --out-dir "$tmp/mix" "$tmp/conv.jsonl:-1"
expect_fail mix_no_source "no SOURCE file given" "$PERSONA" mix --out-dir "$tmp/mix"

# the book's layout and lines, build's own
expect_fail bad_layout "--layout 'foo': expected auto, blank, lines or indented" \
    "$PERSONA" extract --book "$tmp/silent.txt" "${who[@]}" --out "$tmp/out.jsonl" --layout foo
expect_fail lines_leave_no_text "$tmp/silent.txt: lines 50 to 7 leave no text (--start-line, --end-line; the file has 7 lines)" \
    "$PERSONA" extract --book "$tmp/silent.txt" "${who[@]}" --out "$tmp/out.jsonl" --start-line 50
no_output lines_leave_no_text_writes_nothing "$tmp/out.jsonl"
expect_fail build_needs_out "--out DIR is required" "$PERSONA" build --book "$tmp/silent.txt" "${who[@]}"
expect_fail build_character_never_speaks "\"Sherlock Holmes\" never speaks" \
    "$PERSONA" build --book "$tmp/silent.txt" "${who[@]}" --out "$tmp/b"
no_output build_never_speaks_writes_no_train "$tmp/b/train.jsonl"

# --help: every flag, with its default
help_lists() {  # name command flag...
    local name=$1 cmd=$2 missing=""
    shift 2
    local text
    text=$("$PERSONA" "$cmd" --help)
    for flag in "$@"; do [[ "$text" == *"$flag"* ]] || missing+=" $flag"; done
    if [ -z "$missing" ]; then echo "PASS $name"; else echo "FAIL $name"; echo "  --help lacks:$missing"; fi
}
help_lists help_extract extract --book --character --alias --narrator --quotes --format --layout --start-line \
    --end-line --min-confidence "(default 0.7)" --out --turns --context-words "(default 60)"
help_lists help_build build --book --character --alias --narrator --quotes --format --layout --start-line --end-line \
    --min-confidence --out --teacher "{requests}" "{answers}" --tasks --pairs --chunk-tokens --overlap-tokens \
    --tokenizer --template-rewrite --template-qa --model --context-words --system --weight-narrative \
    "(default 0.5)" --weight-qa --val-fraction --seed
help_lists help_prompts prompts --book --character --out --tasks --pairs "(default 3)" --chunk-tokens "(default 512)" \
    --overlap-tokens "(default 64)" --tokenizer --template-rewrite --template-qa --model
help_lists help_ingest ingest --requests --answers --out-narrative --out-qa --rejects
help_lists help_mix mix --out-dir --val-fraction "(default 0.1)" --seed "(default 1)" --system --system-file
