#!/usr/bin/env bash
# test/test_chat_batch.sh: `chat --batch` between `persona prompts` and `persona ingest`.
#
#   - requests from `persona prompts` (the first stories of the novel, rewrites), answered
#     greedily by a tiny random model (window 8) 3 sequences at a time: every id answered
#     once, in the OpenAI batch output format;
#   - killed with SIGKILL part-way and run again: each id exactly once, every answer equal to
#     the uninterrupted run's; an answers file whose last line was cut short is repaired;
#   - bad request lines refused with file:line and the reason, exit 1;
#   - a prompt that does not fit a model's context gets an error line, not a crash;
#   - end to end: persona prompts -> chat --batch (scripts/chat_chain_model.py, a model that
#     answers every request with one first-person text, at the requests' own temperature
#     0.7) -> persona ingest, which accepts every answer as a rewrite.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${SAN_BIN:?}" "${PYTHON:?}" "${TOKENIZER_DATA:?}"
CHAT="$SAN_BIN/chat"
PERSONA="$SAN_BIN/persona"
V3="$TOKENIZER_DATA/mistral_instruct_tokenizer_240323.model.v3"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1

head -c 20000 ../shared/corpus/sherlock-holmes.txt >"$tmp/book.txt"
"$PERSONA" prompts --book "$tmp/book.txt" --character "Sherlock Holmes" --alias Holmes --tasks rewrite \
    --tokenizer "$V3" --out "$tmp/requests.jsonl" >/dev/null
n=$(wc -l <"$tmp/requests.jsonl")
passes persona_prompts_made_requests test "$n" -ge 8
"$SAN_BIN/init_model" --out "$tmp/model" --vocab 32768 --hidden 64 --intermediate 128 --layers 2 --heads 4 \
    --kv-heads 2 --window 8 >/dev/null
batch=("$CHAT" --model "$tmp/model" --tokenizer "$V3" --batch "$tmp/requests.jsonl" --temperature 0 --max-tokens 16
    --slots 3)

# ids: one custom_id a line, sorted
ids() { "$PYTHON" -c "import json,sys; [print(json.loads(l)['custom_id']) for l in open(sys.argv[1])]" "$1" | sort; }

"${batch[@]}" --out "$tmp/ref.jsonl" >/dev/null 2>"$tmp/ref.err"
passes every_request_answered test "$(ids "$tmp/ref.jsonl" | uniq | wc -l)" -eq "$n" -a "$(wc -l <"$tmp/ref.jsonl")" -eq "$n"
passes progress_on_stderr grep -q "batch: done: $n answered" "$tmp/ref.err"
passes answers_in_openai_batch_format "$PYTHON" -c "
import json, sys
for line in open(sys.argv[1]):
    a = json.loads(line)
    assert a['error'] is None and a['response']['status_code'] == 200, a
    c = a['response']['body']['choices'][0]
    assert c['message']['role'] == 'assistant' and c['finish_reason'] in ('stop', 'length'), c
    assert a['response']['body']['usage']['completion_tokens'] <= 16, a" "$tmp/ref.jsonl"

# SIGKILL part-way, then again to the end
"${batch[@]}" --out "$tmp/killed.jsonl" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 600); do
    [ -f "$tmp/killed.jsonl" ] && [ "$(wc -l <"$tmp/killed.jsonl")" -ge 3 ] && break
    sleep 0.1
done
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
partial=$(wc -l <"$tmp/killed.jsonl")
passes killed_part_way test "$partial" -ge 3 -a "$partial" -lt "$n"
"${batch[@]}" --out "$tmp/killed.jsonl" >/dev/null 2>"$tmp/resume.err"
passes resume_skips_what_was_answered grep -q "$partial already answered" "$tmp/resume.err"
passes resumed_run_answers_each_id_once test "$(ids "$tmp/killed.jsonl" | uniq | wc -l)" -eq "$n" \
    -a "$(wc -l <"$tmp/killed.jsonl")" -eq "$n"
same_output resumed_answers_equal_uninterrupted <(sort "$tmp/ref.jsonl") <(sort "$tmp/killed.jsonl")

# a last line cut short (a kill while it was being written) is removed and answered again
head -n 4 "$tmp/ref.jsonl" >"$tmp/cut.jsonl"
sed -n 5p "$tmp/ref.jsonl" | head -c 40 >>"$tmp/cut.jsonl"
"${batch[@]}" --out "$tmp/cut.jsonl" >/dev/null 2>"$tmp/cut.err"
passes unfinished_line_reported grep -q "removing an unfinished last line" "$tmp/cut.err"
same_output unfinished_line_repaired <(sort "$tmp/ref.jsonl") <(sort "$tmp/cut.jsonl")

# bad requests: file:line and the reason
line1=$(head -n 1 "$tmp/requests.jsonl")
bad() {  # NAME LINE EXPECTED (every message starts with "FILE:2: ")
    printf '%s\n%s\n' "$line1" "$2" >"$tmp/bad.jsonl"
    expect_fail "$1" "$3" "$CHAT" --model "$tmp/model" --tokenizer "$V3" --batch "$tmp/bad.jsonl" \
        --out "$tmp/bad.out"
}
bad batch_refuses_non_json '{"custom_id": ' "bad.jsonl:2: not a JSON object"
bad batch_refuses_missing_id '{"body": {"messages": [{"role": "user", "content": "x"}]}}' 'bad.jsonl:2: no "custom_id" string'
bad batch_refuses_duplicate_id "$line1" "appears twice"
bad batch_refuses_answer_last '{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}}' \
    "the last message must be the user's"
bad batch_refuses_bad_role '{"custom_id": "a", "body": {"messages": [{"role": "robot", "content": "x"}]}}' "unknown role"
bad batch_refuses_bad_max_tokens '{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x"}], "max_tokens": -3}}' \
    "max_tokens is not a positive whole number"
passes bad_requests_write_nothing test ! -e "$tmp/bad.out"

# a prompt longer than a windowless model's context: an error line for it
"$SAN_BIN/init_model" --out "$tmp/short" --vocab 32768 --hidden 64 --intermediate 128 --layers 2 --heads 4 \
    --kv-heads 2 >/dev/null
head -n 2 "$tmp/requests.jsonl" >"$tmp/two.jsonl"
"$CHAT" --model "$tmp/short" --tokenizer "$V3" --batch "$tmp/two.jsonl" --out "$tmp/short.jsonl" --context 100 \
    >/dev/null 2>&1
passes prompt_too_long_gets_an_error_line "$PYTHON" -c "
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
assert len(a) == 2 and all(x['response'] is None and x['error']['code'] == 'context_length_exceeded' for x in a), a" \
    "$tmp/short.jsonl"

# end to end with a model whose answers persona ingest accepts
text="I remember that morning well: my friend stood by the window while we waited."
# shellcheck disable=SC2046
"$PYTHON" scripts/chat_chain_model.py "$tmp/chain" 4 $(printf '%s' "$text" | "$SAN_BIN/tokenize" --tokenizer "$V3") 2
"$CHAT" --model "$tmp/chain" --tokenizer "$V3" --batch "$tmp/requests.jsonl" --out "$tmp/answers.jsonl" --seed 3 \
    >/dev/null 2>&1
passes ingest_accepts_the_batch_answers "$PERSONA" ingest --requests "$tmp/requests.jsonl" --answers "$tmp/answers.jsonl" \
    --out-narrative "$tmp/narrative.jsonl"
passes every_rewrite_became_a_conversation test "$(grep -c "$text" "$tmp/narrative.jsonl")" -eq "$n"
