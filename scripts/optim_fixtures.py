#!/usr/bin/env python3
"""Writes test/fixtures/optim.safetensors: AdamW steps, gradient clipping and learning-rate
schedules computed by PyTorch and transformers, which train/adamw.c and train/schedule.c must
reproduce.

  adamw.p0 / adamw.grads / adamw.params   a parameter vector, 10 gradients, and the parameter
                                           after each of 10 torch.optim.AdamW steps
                                           (lr 1e-3 with the lr of step t multiplied by
                                           adamw.lr_scale[t], betas (0.9, 0.999), eps 1e-8,
                                           weight_decay 0.1)
  clip.grads / clip.clipped / clip.norm   three gradient tensors (concatenated, sizes in
                                           clip.sizes) before and after
                                           torch.nn.utils.clip_grad_norm_(max_norm=1.0), and the
                                           total norm it returned
  sched.{constant,linear,cosine}           the lr multiplier at steps 0..99 of transformers'
                                           get_{constant_schedule_with_warmup, linear_schedule_
                                           with_warmup, cosine_schedule_with_warmup}, warmup 10,
                                           100 training steps

  pip install torch==2.15.0 transformers==5.24.0 safetensors==0.8.0
  python scripts/optim_fixtures.py test/fixtures/optim.safetensors
"""
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                          get_linear_schedule_with_warmup)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/optim.safetensors"
    g = torch.Generator().manual_seed(99)
    t = {}
    p = torch.nn.Parameter(torch.randn(37, generator=g))
    t["adamw.p0"] = p.detach().clone()
    opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    scales = torch.linspace(1.0, 0.5, 10)
    grads, params = [], []
    for step in range(10):
        for group in opt.param_groups:
            group["lr"] = 1e-3 * float(scales[step])
        grad = torch.randn(37, generator=g) * (10.0 if step == 3 else 1.0)
        p.grad = grad.clone()
        opt.step()
        grads.append(grad)
        params.append(p.detach().clone())
    t["adamw.lr_scale"] = scales
    t["adamw.grads"] = torch.stack(grads)
    t["adamw.params"] = torch.stack(params)

    sizes = [5, 17, 3]
    ps = [torch.nn.Parameter(torch.zeros(n)) for n in sizes]
    for q in ps:
        q.grad = torch.randn(q.shape, generator=g) * 2.0
    t["clip.grads"] = torch.cat([q.grad.clone() for q in ps])
    norm = torch.nn.utils.clip_grad_norm_(ps, max_norm=1.0)
    t["clip.clipped"] = torch.cat([q.grad for q in ps])
    t["clip.norm"] = norm.reshape(1).float()
    t["clip.sizes"] = torch.tensor(sizes, dtype=torch.int32)

    for name, make in [("constant", lambda o: get_constant_schedule_with_warmup(o, 10)),
                       ("linear", lambda o: get_linear_schedule_with_warmup(o, 10, 100)),
                       ("cosine", lambda o: get_cosine_schedule_with_warmup(o, 10, 100))]:
        o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        s = make(o)
        lrs = []
        for _ in range(100):
            lrs.append(o.param_groups[0]["lr"])
            o.step()
            s.step()
        t["sched." + name] = torch.tensor(lrs, dtype=torch.float64)
    save_file({k: v.contiguous() for k, v in t.items()}, out,
              metadata={"torch": torch.__version__, "transformers": transformers.__version__})


if __name__ == "__main__":
    main()
