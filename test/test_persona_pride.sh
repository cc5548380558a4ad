#!/usr/bin/env bash
# test/test_persona_pride.sh: `persona extract` on Pride and Prejudice against a human reading.
#
# test/fixtures/persona/pride_recall_lines.tsv lists, by reading, every line Elizabeth Bennet
# speaks in six chapters (two used while writing the rules, four held out);
# pride_precision_sample.tsv and pride_precision_check.tsv hold two draws of extracted lines
# from the rest of the book, each labelled correct or wrong by reading the text around it.
# The goals: precision >= 95% in the chapters and on the two draws together (at least 150 of
# the labelled lines still emitted), and recall >= 85% in the six chapters.
set -u
cd "$(dirname "$0")/.."
: "${SAN_BIN:?}" "${PYTHON:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
F=test/fixtures/persona

if "$SAN_BIN/persona" extract --book ../shared/corpus/pride-and-prejudice.txt --character "Elizabeth Bennet" \
    --alias Elizabeth --alias Lizzy --alias Eliza --alias "Miss Elizabeth Bennet" \
    --out "$tmp/dialogue.jsonl" --turns "$tmp/turns.tsv" >"$tmp/report" 2>&1; then
    echo "PASS pride_extract_runs"
else
    echo "FAIL pride_extract_runs"
fi
sed 's/^/# /' "$tmp/report"
"$PYTHON" scripts/persona_score.py --name pride --turns "$tmp/turns.tsv" --recall "$F/pride_recall_lines.tsv" \
    --sample "$F/pride_precision_sample.tsv" --sample "$F/pride_precision_check.tsv" \
    --min-recall 0.85 --min-sample 150
