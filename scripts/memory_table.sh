#!/usr/bin/env bash
# scripts/memory_table.sh: README's table of train_gpu's device memory for Mistral-7B v0.1
# and v0.3 (test/fixtures/configs, the Hugging Face config.json of each), LoRA r 16 on all
# seven projections, batch 1, at each --recompute level, as `train_gpu --dry-run` plans it
# (no GPU needed). test/test_train_gpu.sh checks that README holds exactly this output.
#
#   scripts/memory_table.sh [TRAIN_GPU]     (default ./train_gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-./train_gpu}
echo "| model | --seq-len | --recompute 0 | --recompute 1 | --recompute 2 (+ pinned host) |"
echo "|---|---:|---:|---:|---:|"
longest=()
for v in v0.1 v0.3; do
    for seq in 2048 4096 8192 32768; do
        out=$("$bin" --model "test/fixtures/configs/mistral-7b-$v.json" --dry-run --seq-len "$seq" --batch 1 --lora-r 16 \
            --lora-targets all)
        # "total at --recompute 0, 1, 2: A, B, C GB (2: and P GB of pinned host memory)"
        echo "$out" | sed -nE "s/^  total at --recompute 0, 1, 2: ([0-9.]+), ([0-9.]+), ([0-9.]+) GB \(2: and ([0-9.]+) GB.*/| Mistral-7B $v | $seq | \1 GB | \2 GB | \3 GB (+ \4 GB) |/p"
    done
    longest+=("$(echo "$out" | sed -nE "s/^  longest --seq-len in 80 GB at --batch 1: (.*)/Mistral-7B $v, longest --seq-len in 80 GB: \1/p")")
done
echo
printf '%s\n' "${longest[@]}"
