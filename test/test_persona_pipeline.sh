#!/usr/bin/env bash
# test/test_persona_pipeline.sh: the whole data path of `persona` on the novel, end to end:
#   extract -> dialogue.jsonl
#   prompts -> requests.jsonl -> a stub teacher (scripts/persona_stub_teacher.py, which
#              answers deterministically and, on purpose, badly now and then) -> answers.jsonl
#   ingest  -> narrative.jsonl, qa.jsonl (every bad answer rejected with its reason)
#   mix     -> train.jsonl, val.jsonl
# and the result is checked by the programs that read it: `tokenize --chat` (which encodes
# every conversation with the instruct format and refuses a malformed one) and, when it has
# been built, `prep --check`.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${SAN_BIN:?}" "${TOKENIZE:?}" "${PYTHON:?}" "${TOKENIZER_DATA:?}"
PERSONA="$SAN_BIN/persona"
BOOK=../shared/corpus/sherlock-holmes.txt
V3="$TOKENIZER_DATA/mistral_instruct_tokenizer_240323.model.v3"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT


# report_has FILE TEXT: the report line is there.
report_has() { grep -qF -- "$2" "$1" || { echo "missing: $2"; grep -v '^  ' "$1"; return 1; }; }

who=(--book "$BOOK" --character "Sherlock Holmes" --alias Holmes)
passes extract_runs "$PERSONA" extract "${who[@]}" --out "$tmp/dialogue.jsonl"
passes prompts_run "$PERSONA" prompts "${who[@]}" --out "$tmp/requests.jsonl" --tokenizer "$V3"
"$PERSONA" prompts "${who[@]}" --out "$tmp/requests2.jsonl" --tokenizer "$V3" >/dev/null 2>&1
same_output prompts_are_deterministic "$tmp/requests.jsonl" "$tmp/requests2.jsonl"
passes requests_are_openai_batch_lines "$PYTHON" -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    assert r["method"] == "POST" and r["url"] == "/v1/chat/completions", r
    assert r["body"]["messages"][0]["role"] == "user" and r["body"]["max_tokens"] > 0
    assert r["custom_id"] == r["persona"]["chunk"] + ":" + r["persona"]["task"]
    assert r["persona"]["passage"] in r["body"]["messages"][0]["content"]
' "$tmp/requests.jsonl"

passes stub_teacher_answers "$PYTHON" scripts/persona_stub_teacher.py "$tmp/requests.jsonl" "$tmp/answers.jsonl"
"$PYTHON" scripts/persona_stub_teacher.py "$tmp/requests.jsonl" "$tmp/answers.jsonl" >"$tmp/expected"
"$PERSONA" ingest --requests "$tmp/requests.jsonl" --answers "$tmp/answers.jsonl" \
    --out-narrative "$tmp/narrative.jsonl" --out-qa "$tmp/qa.jsonl" --rejects "$tmp/rejects.jsonl" >"$tmp/ingest.out" 2>&1
echo "ingest exit status $?" >>"$tmp/ingest.out"
passes ingest_succeeds report_has "$tmp/ingest.out" "ingest exit status 0"
# every bad answer the stub wrote is rejected, with the reason the stub meant
while read -r _ reason; do
    count=${reason##* }
    reason=${reason% *}
    passes "ingest_rejects_${reason// /_}" report_has "$tmp/ingest.out" "$reason $count,"
done <"$tmp/expected"
passes ingest_rejects_file_lists_them "$PYTHON" -c '
import json, sys
n = sum(int(l.split()[-1]) for l in open(sys.argv[2]))
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == n and all(r["reason"] for r in rows), (len(rows), n)
' "$tmp/rejects.jsonl" "$tmp/expected"
passes ingest_conversations_are_whole "$PYTHON" -c '
import json, sys
for path in sys.argv[1:]:
    for line in open(path):
        c = json.loads(line)
        roles = [m["role"] for m in c["messages"]]
        assert roles == ["user", "assistant"] and all(m["content"].strip() for m in c["messages"]), c
' "$tmp/narrative.jsonl" "$tmp/qa.jsonl"

passes mix_runs "$PERSONA" mix --out-dir "$tmp/mix" --system "You are Sherlock Holmes." --seed 7 \
    "$tmp/dialogue.jsonl" "$tmp/narrative.jsonl:0.5" "$tmp/qa.jsonl:2"
"$PERSONA" mix --out-dir "$tmp/mix2" --system "You are Sherlock Holmes." --seed 7 \
    "$tmp/dialogue.jsonl" "$tmp/narrative.jsonl:0.5" "$tmp/qa.jsonl:2" >/dev/null 2>&1
same_output mix_is_deterministic "$tmp/mix/train.jsonl" "$tmp/mix2/train.jsonl"
passes mix_writes_messages_only "$PYTHON" -c '
import json, sys
for path in sys.argv[1:]:
    for line in open(path):
        c = json.loads(line)
        assert list(c) == ["messages"] and c["messages"][0] == {"role": "system", "content": "You are Sherlock Holmes."}, c
' "$tmp/mix/train.jsonl" "$tmp/mix/val.jsonl"
passes tokenize_chat_reads_train "$TOKENIZE" --tokenizer "$V3" --chat "$tmp/mix/train.jsonl"
passes tokenize_chat_reads_val "$TOKENIZE" --tokenizer "$V3" --chat "$tmp/mix/val.jsonl"
if [ -x "$SAN_BIN/prep" ]; then
    passes prep_check_accepts_the_mix "$SAN_BIN/prep" --tokenizer "$V3" --check "$tmp/mix/train.jsonl" --val "$tmp/mix/val.jsonl"
fi

# mix on small files: exact and near duplicates, the split, weights, the system prompt
F=test/fixtures/persona
"$PERSONA" mix --out-dir "$tmp/small" --val-fraction 0.34 --system "Be Holmes." \
    "$F/conversations_a.jsonl" "$F/conversations_b.jsonl" >"$tmp/mix.out" 2>&1
passes mix_removes_exact_duplicates report_has "$tmp/mix.out" "conversations_a.jsonl: 5 conversations, 1 exact and 0 near duplicates removed"
passes mix_removes_near_duplicates report_has "$tmp/mix.out" "conversations_b.jsonl: 3 conversations, 0 exact and 1 near duplicates removed"
passes mix_splits_validation report_has "$tmp/mix.out" "train.jsonl: 4, $tmp/small/val.jsonl: 2"
passes mix_keeps_an_existing_system_prompt grep -qF '{"role":"system","content":"Be terse."},{"role":"user","content":"Your instrument?"}' "$tmp/small/train.jsonl" "$tmp/small/val.jsonl"
"$PERSONA" mix --out-dir "$tmp/weighted" --val-fraction 0 "$F/conversations_a.jsonl:3" "$F/conversations_b.jsonl:0" >"$tmp/weighted.out" 2>&1
passes mix_weights_repeat_and_drop report_has "$tmp/weighted.out" "train.jsonl: 12, $tmp/weighted/val.jsonl: 0"
