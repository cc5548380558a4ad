#!/usr/bin/env bash
# test/test_chat_gpu.sh: the chat_gpu program, built for the CUDA-on-CPU harness
# (build/san/chat_gpu: the same source as on a GPU, its kernels run by the harness), driven as
# chat is. The model is scripts/chat_chain_model.py's (head_dim 64, window 16), whose answers
# have margins of tens of logits, so the GPU's bf16 arithmetic gives the CPU's text exactly:
#   - on a pipe: two turns, each the chain's text, ended at the end-of-sequence token, the
#     same lines as chat's;
#   - --batch on persona prompts' requests, 3 sequences at a time (prompt chunks one sequence
#     at a time, single tokens together): every answer chat --batch gives, and persona ingest
#     takes them all;
#   - no GPU, and frozen weights other than NF4: refused in one line;
#   - bench_decode_gpu runs its batch sizes.
# (test_cuda_decode_gpu checks the logits themselves against the CPU's.)
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${SAN_BIN:?}" "${PYTHON:?}" "${TOKENIZER_DATA:?}"
# The harness is slow (a fiber per CUDA thread): --batch and the bench run its -O2 build
# (build/test/), the sanitizer build (build/san/) the turns on a pipe and the refusals.
FAST_BIN="${FAST_BIN:-$PWD/build/test}"
CHAT_GPU="$SAN_BIN/chat_gpu"
V3="$TOKENIZER_DATA/mistral_instruct_tokenizer_240323.model.v3"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1

text="I remember that morning well: my friend stood by the window while we waited."
# shellcheck disable=SC2046
"$PYTHON" scripts/chat_chain_model.py "$tmp/chain" 4 $(printf '%s' "$text" | "$SAN_BIN/tokenize" --tokenizer "$V3") 2

printf '%s\n' "Tell me about the case." "And then?" >"$tmp/turns"
"$CHAT_GPU" --model "$tmp/chain" --tokenizer "$V3" --seed 1 <"$tmp/turns" >"$tmp/gpu.out" 2>"$tmp/gpu.err"
"$SAN_BIN/chat" --model "$tmp/chain" --tokenizer "$V3" --seed 1 --weights nf4 <"$tmp/turns" >"$tmp/cpu.out" 2>/dev/null
passes chat_gpu_answers_each_turn test "$(grep -c "^$text\$" "$tmp/gpu.out")" -eq 2
passes chat_gpu_stops_at_end_of_sequence test "$(grep -c "end of sequence: 16 tokens" "$tmp/gpu.err")" -eq 2
same_output chat_gpu_text_equals_chat "$tmp/gpu.out" "$tmp/cpu.out"

head -c 12000 ../shared/corpus/sherlock-holmes.txt >"$tmp/book.txt"
"$SAN_BIN/persona" prompts --book "$tmp/book.txt" --character "Sherlock Holmes" --alias Holmes --tasks rewrite \
    --tokenizer "$V3" --out "$tmp/requests.jsonl" >/dev/null
n=$(wc -l <"$tmp/requests.jsonl")
"$FAST_BIN/chat_gpu" --model "$tmp/chain" --tokenizer "$V3" --batch "$tmp/requests.jsonl" --out "$tmp/gpu.jsonl" --slots 3 \
    --seed 3 >/dev/null 2>"$tmp/batch.err"
"$SAN_BIN/chat" --model "$tmp/chain" --tokenizer "$V3" --batch "$tmp/requests.jsonl" --out "$tmp/cpu.jsonl" --slots 3 \
    --seed 3 --weights nf4 >/dev/null 2>&1
passes chat_gpu_batch_answers_every_request test "$n" -ge 3 -a "$(wc -l <"$tmp/gpu.jsonl")" -eq "$n"
same_output chat_gpu_batch_equals_chat <(sort "$tmp/gpu.jsonl") <(sort "$tmp/cpu.jsonl")
passes chat_gpu_batch_answers_ingested "$SAN_BIN/persona" ingest --requests "$tmp/requests.jsonl" \
    --answers "$tmp/gpu.jsonl" --out-narrative "$tmp/narrative.jsonl"

# bench_decode_gpu (the GPU speed bench; scripts/gpu_check.sh times it) runs its batches in
# the harness: prompts longer than the window, then steps of 1 and of 3 sequences with LoRA
"$FAST_BIN/bench_decode_gpu" --model "$tmp/chain" --batch 1,3 --prompt 20 --tokens 4 --repeat 1 --lora-r 4 \
    >"$tmp/bench.out" 2>&1
passes bench_decode_gpu_times_each_batch test "$(grep -cE '^batch  [13]: decode +[0-9.]+ tokens/s' "$tmp/bench.out")" -eq 2
expect_fail bench_decode_gpu_needs_a_model "model is required" "$SAN_BIN/bench_decode_gpu" --batch 1

expect_fail chat_gpu_needs_a_gpu "no CUDA GPU found" env CUDA_HOST_NO_DEVICE=1 "$CHAT_GPU" --model "$tmp/chain" \
    --tokenizer "$V3"
expect_fail chat_gpu_holds_nf4 "NF4 only" "$CHAT_GPU" --model "$tmp/chain" --tokenizer "$V3" --weights bf16
