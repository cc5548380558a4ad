#!/usr/bin/env bash
# test/test_reference_tokenizers.sh: ./tokenize against Mistral's own libraries, token for token.
#
# For every tokenizer file mistral-common ships (SentencePiece v1, v2, v3, v7; Tekken
# 240718 and 240911) plus a v7 Tekken file derived from 240718, on the novel in
# ../shared/corpus, the stress texts in test/fixtures, whole and line by line:
#   - ids equal mistral-common's `encode` (and, for SentencePiece, the sentencepiece
#     package's C++ encoder on the raw bytes, malformed UTF-8 included);
#   - decode(encode(x)) == x for valid UTF-8;
#   - the chat formats (ids and loss masks) on test/fixtures/conversations.jsonl equal
#     mistral-common's instruct tokenizers with mistral-finetune's masking.
# References come from scripts/tokenizer_reference.py; the binary is $TOKENIZE (the
# sanitizer build when run by `make test`).
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${TOKENIZE:?}" "${PYTHON:?}" "${TOKENIZER_DATA:?}"
REF="$PYTHON scripts/tokenizer_reference.py"
CORPUS=../shared/corpus/sherlock-holmes.txt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -f "$CORPUS" ]; then
    echo "FAIL corpus_present: $CORPUS is missing (../shared must sit beside the repository)"
    exit 1
fi
$REF tekken-v7 "$tmp/tekken-v7.json"

SPM="tokenizer.model.v1 mistral_instruct_tokenizer_240216.model.v2 mistral_instruct_tokenizer_240323.model.v3 mistral_instruct_tokenizer_241114.model.v7"
TEKKEN="tekken_240718.json tekken_240911.json"

path_of() { case "$1" in tekken-v7.json) echo "$tmp/tekken-v7.json" ;; *) echo "$TOKENIZER_DATA/$1" ;; esac; }

compare_encode() {  # name tokenizer input mode lib
    local tok; tok=$(path_of "$2")
    "$TOKENIZE" --tokenizer "$tok" --file "$3" $4 >"$tmp/ours" 2>"$tmp/err" || cat "$tmp/err"
    $REF encode --tokenizer "$tok" --file "$3" $4 --lib "$5" >"$tmp/ref"
    same_output "$1" "$tmp/ours" "$tmp/ref"
}

round_trip() {  # name tokenizer input mode
    local tok; tok=$(path_of "$2")
    "$TOKENIZE" --tokenizer "$tok" --file "$3" $4 | "$TOKENIZE" --tokenizer "$tok" --decode $4 >"$tmp/back"
    cp "$3" "$tmp/want"
    # --lines ends every output line with "\n", even the last
    if [ -n "$4" ] && [ -n "$(tail -c1 "$3")" ]; then echo >>"$tmp/want"; fi
    same_output "$1" "$tmp/back" "$tmp/want"
}

for t in $SPM $TEKKEN tekken-v7.json; do
    for input in "$CORPUS" test/fixtures/stress.txt test/fixtures/stress-invalid.txt; do
        in=$(basename "$input" .txt)
        for mode in "" --lines; do
            m=${mode:+lines}; m=${m:-whole}
            case "$t" in
                *tekken*) compare_encode "encode_${t}_${in}_${m}_vs_mistral_common" "$t" "$input" "$mode" mistral-common ;;
                *)
                    compare_encode "encode_${t}_${in}_${m}_vs_sentencepiece" "$t" "$input" "$mode" sentencepiece
                    # mistral-common takes a str: only valid UTF-8 is comparable byte for byte
                    [ "$in" = stress-invalid ] || \
                        compare_encode "encode_${t}_${in}_${m}_vs_mistral_common" "$t" "$input" "$mode" mistral-common ;;
            esac
            [ "$in" = stress-invalid ] || round_trip "roundtrip_${t}_${in}_${m}" "$t" "$input" "$mode"
        done
    done
    tok=$(path_of "$t")
    "$TOKENIZE" --tokenizer "$tok" --chat test/fixtures/conversations.jsonl >"$tmp/ours" 2>"$tmp/err" || cat "$tmp/err"
    $REF chat --tokenizer "$tok" --chat test/fixtures/conversations.jsonl >"$tmp/ref"
    same_output "chat_${t}_ids_and_masks_vs_mistral_common" "$tmp/ours" "$tmp/ref"
done
