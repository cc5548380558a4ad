#!/usr/bin/env bash
# scripts/quickstart_cpu.sh [OUT_DIR]: the whole pipeline on the CPU in a few minutes, with
# nothing to download beyond the package registries.
#
# Builds the programs, writes a tiny random Mistral-architecture model (init_model), takes
# Mistral's real v3 tokenizer from the mistral-common package, tokenizes the sample
# conversations in data/samples/ into shards (prep), fine-tunes LoRA adapters with NF4
# frozen weights (train_cpu) while the loss falls, evaluates on the held-out conversations,
# answers the probe prompts, and exports the adapter in PEFT's format.
#
# What it shows: that every stage works end to end and the training loss falls as the
# adapter fits the samples. What it does not show: a useful character. The base model is
# random, so its answers are not English; a real run starts from a pretrained checkpoint.
#
# OUT_DIR (default runs/quickstart in the repository) is taken relative to where you call the
# script. It is replaced on a rerun only if this script made it (it leaves a marker file
# there); any other existing path but an empty directory is refused, and nothing is deleted.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/out_dir.sh"
out_dir "${1:-$ROOT/runs/quickstart}" || exit 1
cd "$ROOT"
make -s tokenize prep init_model train_cpu
make -s venv
TOK="$(.venv/bin/python scripts/tokenizer_reference.py data-dir)/mistral_instruct_tokenizer_240323.model.v3"
out_dir_make
./init_model --out "$OUT/model" --vocab 32768 --hidden 64 --intermediate 192 --layers 2 --heads 4 --kv-heads 2
./prep --tokenizer "$TOK" --out "$OUT/shards" --val-fraction 0.1 data/samples/holmes_sample.jsonl
./train_cpu --model "$OUT/model" --tokenizer "$TOK" --out "$OUT/run" \
    --train "$OUT/shards/train-holmes_sample.bin" --val "$OUT/shards/val-holmes_sample.bin" \
    --seq-len 128 --batch 4 --steps 60 --lr 1e-2 --warmup 5 --lora-r 8 --lora-alpha 16 \
    --eval-every 20 --prompts data/samples/probe_prompts.txt --sample-tokens 16
echo
echo "first and last training loss:"
grep '"loss"' "$OUT/run/log.jsonl" | sed -n '1p;$p'
echo "run directory: $OUT/run (log.jsonl, samples.jsonl, checkpoint.safetensors, adapter/)"
