#!/usr/bin/env bash
# test/test_chat_cli.sh: the chat program driven from a pipe, as a script uses it.
#
# A tiny random model (init_model: vocabulary 32768 for the v3 tokenizer, window 8) and a
# random LoRA adapter written here (r 4 on q, v, down, B not zero so it changes the answers):
#   - on a pipe each input line is a user turn and only the answers reach stdout, one line
#     each; the reason each answer stopped goes to stderr;
#   - greedy text is the same on every run; sampling with a seed repeats, another seed differs;
#   - base + adapter (unmerged) and `merge`'s model give the same greedy text over several
#     turns (float32 weights: the same model, summed in another order), and it differs from
#     the base's; a train_cpu run directory works as the adapter;
#   - an adapter of another base (shapes differ), a damaged one, a run that has no adapter
#     yet, a tokenizer of another vocabulary: refused in one line, exit 1;
#   - /system, /reset, /save (the line passes `prep --check`); a model without a window drops
#     its oldest turns when --context is full, with a notice, and keeps answering;
#   - the model of scripts/chat_chain_model.py stops at its end-of-sequence token and says so;
#   - SmolLM2-135M-Instruct (the GGUF make venv installs) answers two ChatML turns as
#     transformers does, token for token, each ended at <|im_end|>.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${SAN_BIN:?}" "${PYTHON:?}" "${TOKENIZER_DATA:?}"
CHAT="$SAN_BIN/chat"
V3="$TOKENIZER_DATA/mistral_instruct_tokenizer_240323.model.v3"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1  # the machine may be shared; threading is covered by test_decode

"$SAN_BIN/init_model" --out "$tmp/base" --vocab 32768 --hidden 64 --intermediate 128 --layers 2 --heads 4 \
    --kv-heads 2 --window 8 >/dev/null
"$SAN_BIN/init_model" --out "$tmp/nowindow" --vocab 32768 --hidden 64 --intermediate 128 --layers 2 --heads 4 \
    --kv-heads 2 --seed 2 >/dev/null
"$PYTHON" - "$tmp/adapter" <<'PY'
import json, os, sys
import numpy as np
from safetensors.numpy import save_file
out = sys.argv[1]
os.makedirs(out)
rng = np.random.default_rng(0)
shapes = {"self_attn.q_proj": (64, 64), "self_attn.v_proj": (32, 64), "mlp.down_proj": (64, 128)}
t = {}
for layer in range(2):
    for name, (o, i) in shapes.items():
        key = f"base_model.model.model.layers.{layer}.{name}"
        t[key + ".lora_A.weight"] = rng.normal(0, 0.5, (4, i)).astype(np.float32)
        t[key + ".lora_B.weight"] = rng.normal(0, 0.5, (o, 4)).astype(np.float32)
save_file(t, os.path.join(out, "adapter_model.safetensors"), metadata={"format": "pt"})
json.dump({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"],
           "task_type": "CAUSAL_LM", "use_rslora": False}, open(os.path.join(out, "adapter_config.json"), "w"))
PY
turns=$'Who are you?\nWhere were you last night?\nAnd the dog?'
chat() { printf '%s\n' "$turns" | "$CHAT" --tokenizer "$V3" --max-tokens 12 "$@"; }
differ() { ! cmp -s "$1" "$2"; }

# --help names every flag; bad invocations are one line and exit 1
"$CHAT" --help >"$tmp/help"
missing=""
for f in --model --adapter --tokenizer --weights --system --system-file --temperature --top-p --top-k --max-tokens \
    --seed --context --threads --batch --out --slots; do
    grep -q -- "$f" "$tmp/help" || missing="$missing $f"
done
passes help_lists_every_flag test -z "$missing"
expect_fail chat_needs_model "--model is required" "$CHAT" --tokenizer "$V3"
expect_fail chat_unknown_flag "unknown option" "$CHAT" --model "$tmp/base" --frobnicate 1
expect_fail chat_bad_top_p "--top-p '2'" "$CHAT" --model "$tmp/base" --top-p 2
expect_fail chat_bad_weights "--weights must be" "$CHAT" --model "$tmp/base" --weights fp8
expect_fail chat_batch_needs_out "--batch and --out go together" "$CHAT" --model "$tmp/base" --batch x.jsonl
expect_fail chat_no_tokenizer "no tokenizer file in it" "$CHAT" --model "$tmp/base"

# a pipe: one answer line per input line on stdout, the stop reasons on stderr
chat --model "$tmp/base" --temperature 0 >"$tmp/greedy1" 2>"$tmp/greedy1.err"
chat --model "$tmp/base" --temperature 0 --seed 99 >"$tmp/greedy2" 2>/dev/null
passes pipe_gives_one_answer_line_per_turn test "$(wc -l <"$tmp/greedy1")" -eq 3
passes pipe_reports_why_each_answer_stopped test "$(grep -c 'stopped at --max-tokens: 12 tokens' "$tmp/greedy1.err")" -eq 3
same_output greedy_is_deterministic "$tmp/greedy1" "$tmp/greedy2"
chat --model "$tmp/base" --seed 5 >"$tmp/s5a" 2>/dev/null
chat --model "$tmp/base" --seed 5 >"$tmp/s5b" 2>/dev/null
chat --model "$tmp/base" --seed 6 >"$tmp/s6" 2>/dev/null
same_output seeded_sampling_repeats "$tmp/s5a" "$tmp/s5b"
passes other_seed_samples_otherwise differ "$tmp/s5a" "$tmp/s6"

# base + adapter unmerged against the merged model, float32 weights
"$SAN_BIN/merge" --model "$tmp/base" --adapter "$tmp/adapter" --out "$tmp/merged" --dtype f32 >/dev/null
chat --model "$tmp/base" --adapter "$tmp/adapter" --weights f32 --temperature 0 >"$tmp/unmerged" 2>/dev/null
chat --model "$tmp/merged" --weights f32 --temperature 0 >"$tmp/merged.out" 2>/dev/null
chat --model "$tmp/base" --weights f32 --temperature 0 >"$tmp/base.out" 2>/dev/null
same_output adapter_unmerged_equals_merged_model "$tmp/unmerged" "$tmp/merged.out"
passes adapter_changes_the_answers differ "$tmp/unmerged" "$tmp/base.out"
mkdir -p "$tmp/run" && cp -r "$tmp/adapter" "$tmp/run/adapter" && touch "$tmp/run/log.jsonl"
chat --model "$tmp/base" --adapter "$tmp/run" --weights f32 --temperature 0 >"$tmp/run.out" 2>/dev/null
same_output train_run_directory_as_adapter "$tmp/unmerged" "$tmp/run.out"

# adapters and tokenizers that do not belong are refused
expect_fail adapter_of_another_base_refused "is not F32 [4, 64]" \
    "$CHAT" --model "$tmp/base" --tokenizer "$V3" --adapter test/fixtures/tiny/mistral_window/adapter
mkdir -p "$tmp/damaged" && cp "$tmp/adapter/adapter_config.json" "$tmp/damaged/"
head -c 3000 "$tmp/adapter/adapter_model.safetensors" >"$tmp/damaged/adapter_model.safetensors"
expect_fail damaged_adapter_refused "adapter_model.safetensors" "$CHAT" --model "$tmp/base" --tokenizer "$V3" --adapter "$tmp/damaged"
mkdir -p "$tmp/unfinished" && touch "$tmp/unfinished/checkpoint.safetensors"
expect_fail unfinished_run_refused "has not written adapter/ yet" "$CHAT" --model "$tmp/base" --tokenizer "$V3" --adapter "$tmp/unfinished"
expect_fail not_an_adapter_refused "neither a PEFT adapter directory" "$CHAT" --model "$tmp/base" --tokenizer "$V3" --adapter "$tmp/base"
expect_fail tokenizer_of_another_model_refused "not this model's tokenizer" "$CHAT" --model test/fixtures/tiny/llama --tokenizer "$V3"

# commands on a pipe: /system, /save (then checked by prep), /reset
printf '%s\n' "Hello" "/system You are Sherlock Holmes." "/system" "How do you do?" "/save $tmp/saved.jsonl" "/reset" \
    "/save $tmp/saved.jsonl" "/bogus" "//slash first" "/quit" "never read" |
    "$CHAT" --model "$tmp/base" --tokenizer "$V3" --max-tokens 6 --temperature 0 >"$tmp/cmd.out" 2>"$tmp/cmd.err"
passes commands_answer_only_user_turns test "$(wc -l <"$tmp/cmd.out")" -eq 3
passes system_command_sets_the_prompt grep -q "(system prompt: You are Sherlock Holmes.)" "$tmp/cmd.err"
passes save_after_reset_has_nothing grep -q "(nothing to save yet)" "$tmp/cmd.err"
passes unknown_command_is_named grep -q "unknown command /bogus" "$tmp/cmd.err"
passes save_writes_one_line test "$(wc -l <"$tmp/saved.jsonl")" -eq 1
passes saved_line_has_the_conversation "$PYTHON" -c "
import json, sys
m = json.loads(open(sys.argv[1]).read())['messages']
assert [x['role'] for x in m] == ['system', 'user', 'assistant', 'user', 'assistant'], m
assert m[0]['content'] == 'You are Sherlock Holmes.' and m[1]['content'] == 'Hello', m" "$tmp/saved.jsonl"
passes saved_line_passes_prep_check "$SAN_BIN/prep" --tokenizer "$V3" --check "$tmp/saved.jsonl"

# a model without a window and a small context: the oldest turns go, the answers continue
printf '%s\n' "one two three four five six seven" "eight nine ten eleven" "twelve thirteen fourteen" "fifteen" |
    "$CHAT" --model "$tmp/nowindow" --tokenizer "$V3" --max-tokens 10 --context 48 --temperature 0 \
        --system "You are Holmes." >"$tmp/ctx.out" 2>"$tmp/ctx.err"
passes full_context_drops_oldest_turns grep -q "context full: the oldest turn is dropped" "$tmp/ctx.err"
passes full_context_keeps_answering test "$(wc -l <"$tmp/ctx.out")" -eq 4
printf 'word %.0s' $(seq 60) >"$tmp/long"
echo >>"$tmp/long"
"$CHAT" --model "$tmp/nowindow" --tokenizer "$V3" --max-tokens 4 --context 48 <"$tmp/long" >/dev/null 2>"$tmp/long.err"
passes message_longer_than_context_not_sent grep -q "do not fit the context of 48" "$tmp/long.err"

# the chain model ends its answer with its end-of-sequence token
ids=$(printf '%s' "I remember it well." | "$SAN_BIN/tokenize" --tokenizer "$V3")
# shellcheck disable=SC2086
"$PYTHON" scripts/chat_chain_model.py "$tmp/chain" 4 $ids 2
echo "Tell me." | "$CHAT" --model "$tmp/chain" --tokenizer "$V3" --seed 1 >"$tmp/chain.out" 2>"$tmp/chain.err"
passes answer_stops_at_end_of_sequence grep -q "end of sequence: 5 tokens" "$tmp/chain.err"
passes chain_model_answers_its_text test "$(cat "$tmp/chain.out")" = "I remember it well."

# a real model: SmolLM2-135M-Instruct from its GGUF (its own tokenizer, ChatML), two turns,
# greedy, float32 weights: the answers transformers generates from the same file
# (test/fixtures/chat/smollm2_greedy.json, written by scripts/chat_greedy_fixture.py), each
# ended at <|im_end|>
FX_CHAT=test/fixtures/chat/smollm2_greedy.json
if gguf=$("$PYTHON" scripts/smollm2.py 2>&1); then
    "$PYTHON" -c "import json,sys; [print(t['user']) for t in json.load(open(sys.argv[1]))['turns']]" "$FX_CHAT" |
        "$CHAT" --model "$gguf" --weights f32 --temperature 0 --max-tokens 40 --system "You are a helpful assistant." \
            >"$tmp/smol.out" 2>"$tmp/smol.err"
    "$PYTHON" -c "import json,sys; [print(t['answer']) for t in json.load(open(sys.argv[1]))['turns']]" "$FX_CHAT" \
        >"$tmp/smol.want"
    passes smollm2_uses_chatml grep -q "chat format chatml" "$tmp/smol.err"
    same_output smollm2_greedy_answers_equal_transformers "$tmp/smol.out" "$tmp/smol.want"
    passes smollm2_answers_end_at_im_end test "$(grep -c "end of sequence" "$tmp/smol.err")" -eq 2
else
    echo "FAIL smollm2_installed: $gguf"
fi
