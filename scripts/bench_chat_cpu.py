#!/usr/bin/env python3
"""bench_chat_cpu.py: CPU decoding speed of chat (bench_decode) against transformers' generate,
on the same model, the same batch and the same number of threads, in tokens per second.

    python3 scripts/bench_chat_cpu.py --torch-python PY [--threads 2] [--batch 1,16] [--prompt 128]
                                      [--tokens 64] [--repeat 3] [--weights f32,bf16,nf4] [--torch-dtypes float32,bfloat16]

PY is a Python interpreter with torch and transformers (or set TORCH_PYTHON). The script
itself needs only the standard library.

What is compared:
  - the model: a random model of SmolLM2-135M's shape written by init_model (30 layers, hidden
    576, intermediate 1536, 9 heads, 3 KV heads, head_dim 64, vocabulary 49152, no window;
    the head untied, which reads the same bytes per token as SmolLM2's tied one);
  - per batch size B: B prompts of --prompt random tokens, then --tokens greedy steps with
    the KV cache. Ours: bench_decode, which times the steps alone (prefill apart), with the
    frozen weights in float32, bf16 or NF4 (the head bf16 but for float32). Theirs:
    model.generate(do_sample=False, min_new_tokens = max_new_tokens) timed for --tokens new
    tokens and for 1 (the prefill and the first token), the difference giving the time of
    the other --tokens - 1 steps: tokens/s = B x (tokens - 1) / (t_tokens - t_1); in float32
    and bfloat16 (torch's CPU kernels);
  - the best of --repeat runs of each, the runs alternating between the sides (other work on
    the machine only ever slows a run down).
Loading is never timed. Each line gives wall-clock tokens/s and tokens per CPU-second of the
process (time.process_time() for transformers, the same difference of two generate calls): on
a machine that other work shares, a one-thread run's CPU time says what a quiet machine would
give better than its wall time (with more threads it also counts their waits at barriers).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_ARGS = ["--vocab", "49152", "--hidden", "576", "--intermediate", "1536", "--layers", "30", "--heads", "9",
              "--kv-heads", "3", "--rope-theta", "100000"]


def torch_worker(model_dir, threads, dtype, batch, prompt, tokens):
    """Runs inside the torch interpreter: prints decode tokens/s."""
    import time

    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    model.eval()
    ids = torch.randint(3, model.config.vocab_size, (batch, prompt))
    mask = torch.ones_like(ids)

    def generate(n):
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, use_cache=True, pad_token_id=0)
        assert out.shape[1] == prompt + n
        return time.perf_counter() - t0

    generate(2)  # warm-up
    c0 = time.process_time()
    t1 = generate(1)
    c1 = time.process_time()
    tn = generate(tokens)
    c2 = time.process_time()
    print(json.dumps({"tokens_per_s": batch * (tokens - 1) / (tn - t1),
                      "tokens_per_cpu_s": batch * (tokens - 1) / ((c2 - c1) - (c1 - c0)), "torch": torch.__version__}))


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, cwd=ROOT, **kw)


def ours(model, weights, threads, batch, prompt, tokens):
    out = run(["./bench_decode", "--model", model, "--weights", weights, "--batch", str(batch), "--prompt", str(prompt),
               "--tokens", str(tokens), "--threads", str(threads), "--repeat", "1"],
              capture_output=True, text=True).stdout
    m = re.search(r"decode\s+([0-9.]+) tokens/s.*?([0-9.]+) tokens per CPU-second", out)
    return (float(m.group(1)), float(m.group(2))), out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON"),
                    help="interpreter with torch and transformers (default: $TORCH_PYTHON)")
    ap.add_argument("--threads", type=int, default=2, help="threads, both sides (default 2)")
    ap.add_argument("--batch", default="1,16", help="comma list of batch sizes (default 1,16)")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens per sequence (default 128)")
    ap.add_argument("--tokens", type=int, default=64, help="decoding steps (default 64)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; the best counts (default 3)")
    ap.add_argument("--weights", default="f32,bf16,nf4", help="our frozen weights (default f32,bf16,nf4)")
    ap.add_argument("--torch-dtypes", default="float32,bfloat16", help="theirs (default float32,bfloat16)")
    ap.add_argument("--model", help="a model directory to use instead of the random SmolLM2-shaped one")
    ap.add_argument("--torch-worker", nargs=6, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_worker:
        m, t, d, b, p, n = a.torch_worker
        torch_worker(m, int(t), d, int(b), int(p), int(n))
        return
    if not a.torch_python:
        sys.exit("error: give --torch-python PY (or set TORCH_PYTHON): an interpreter with torch and transformers")
    if a.tokens < 2 or a.repeat < 1:
        sys.exit("error: --tokens must be at least 2 and --repeat at least 1")
    run(["make", "-s", "init_model", "bench_decode"])
    work = tempfile.mkdtemp(prefix="bench_chat_cpu.")
    try:
        model = a.model
        if not model:
            model = os.path.join(work, "model")
            run(["./init_model", "--out", model] + MODEL_ARGS, stdout=subprocess.DEVNULL)
        head = ours(model, "f32", a.threads, 1, 8, 2)[1].splitlines()
        print("\n".join(head[:3]))
        print(f"prompt {a.prompt} tokens, {a.tokens} decoding steps, {a.threads} threads, best of {a.repeat}")
        for b in [int(x) for x in a.batch.split(",")]:
            res = {}
            for _ in range(a.repeat):  # the sides alternate, so a busy spell hits both
                for w in a.weights.split(","):
                    res.setdefault(f"chat {w}", []).append(ours(model, w, a.threads, b, a.prompt, a.tokens)[0])
                for d in a.torch_dtypes.split(","):
                    out = run([a.torch_python, os.path.abspath(__file__), "--torch-worker", model, str(a.threads), d,
                               str(b), str(a.prompt), str(a.tokens)], capture_output=True, text=True).stdout
                    j = json.loads(out.strip().splitlines()[-1])
                    res.setdefault(f"transformers {d} (torch {j['torch']})", []).append(
                        (j["tokens_per_s"], j["tokens_per_cpu_s"]))
            for name, xs in res.items():
                runs = ", ".join(f"{x[0]:.1f}" for x in xs)
                print(f"batch {b:2d}  {name:40s} {max(x[0] for x in xs):8.1f} tokens/s (runs: {runs}), "
                      f"{max(x[1] for x in xs):8.1f} per CPU-second", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
