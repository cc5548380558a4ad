#!/usr/bin/env bash
# test/test_persona_play.sh: `persona extract` on a play against a human reading.
#
# test/fixtures/persona/macbeth_acts_1_3.txt is Macbeth, Acts I-III, in the Moby layout
# (speaker, tab, speech; the source is named at its top). macbeth_recall_lines.tsv lists
# every speech of Macbeth in two scenes, macbeth_precision_lines.tsv every line the extractor
# emits for him, each labelled by reading the play. The goals: recall >= 95% in the two
# scenes, precision >= 95% there and on all the emitted lines (at least 100 still emitted
# with the labelled text, so a speech cut short or run into the next one fails); the cast
# list and the note before Act I are dropped as front matter; Lady Macbeth is not Macbeth.
set -u
cd "$(dirname "$0")/.."
: "${SAN_BIN:?}" "${PYTHON:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
F=test/fixtures/persona

if "$SAN_BIN/persona" extract --book "$F/macbeth_acts_1_3.txt" --character Macbeth \
    --out "$tmp/dialogue.jsonl" --turns "$tmp/turns.tsv" >"$tmp/report" 2>&1; then
    echo "PASS play_extract_runs"
else
    echo "FAIL play_extract_runs"
fi
sed 's/^/# /' "$tmp/report"
if grep -q "a play" "$tmp/report" && grep -q "dropped the front matter before the first chapter: lines 1-92" "$tmp/report"; then
    echo "PASS play_front_matter_dropped"
else
    echo "FAIL play_front_matter_dropped"
fi
# Lady Macbeth's speeches are hers, none of them Macbeth's
lady=$(awk -F'\t' '$2 == "LADY MACBETH"' "$tmp/turns.tsv" | wc -l)
mixed=$(awk -F'\t' '$5 == 1' "$tmp/turns.tsv" | cut -f1 | while read -r l; do sed -n "${l}p" "$F/macbeth_acts_1_3.txt"; done | grep -c '^LADY')
if [ "$lady" -eq 53 ] && [ "$mixed" -eq 0 ]; then
    echo "PASS play_lady_macbeth_apart"
else
    echo "FAIL play_lady_macbeth_apart: $lady turns of LADY MACBETH, $mixed of hers emitted"
fi
"$PYTHON" scripts/persona_score.py --name macbeth --turns "$tmp/turns.tsv" --recall "$F/macbeth_recall_lines.tsv" \
    --sample "$F/macbeth_precision_lines.tsv" --min-recall 0.95 --min-sample 100
