#!/usr/bin/env python3
"""Writes test/fixtures/nf4/*.safetensors: NF4 quantization by bitsandbytes, the reference
that train/nf4.c must match bit for bit.

Each file holds one weight matrix `w` (as given to bitsandbytes: bf16, f16 or f32) and what
`bitsandbytes.functional.quantize_4bit(w, blocksize, quant_type="nf4", ...)` returns:
  plain.packed, plain.absmax       compress_statistics=False: packed codes (uint8, two per
                                   byte, first element in the high nibble) and float absmax
  dq.packed, dq.qabsmax,           compress_statistics=True (double quantization): the
  dq.absmax2, dq.offset,           absmax quantized to 8 bits in blocks of 256 around
  dq.code                          their mean `offset`, with the dynamic map `code`
  dequant                          dequantize_4bit of the double-quantized state (float32)

It also writes a tiny bitsandbytes-4bit checkpoint, bnb_checkpoint/model.safetensors, laid out
exactly as `Linear4bit` serializes itself inside a transformers checkpoint (P.weight,
P.weight.absmax, P.weight.quant_map, [P.weight.nested_absmax, P.weight.nested_quant_map,]
P.weight.quant_state.bitsandbytes__nf4), with one double-quantized and one plain linear, and
bnb_expected.safetensors with each linear's source weights (`P.source`, bf16) and
bitsandbytes' dequantization of it (`P.dequant`, float32).

Run with torch and bitsandbytes installed (not needed by CI, which only reads the files):
  pip install torch==2.15.0 bitsandbytes==0.50.2 safetensors==0.8.0
  python scripts/nf4_fixtures.py test/fixtures/nf4
The shapes are small on purpose; the cases cover a tail block, an all-zero block, values
exactly on NF4 midpoints, huge and tiny magnitudes, and the three input dtypes. This ran on
the CPU backend of bitsandbytes (the GPU kernel multiplies by 1/absmax the same way).
"""
import os
import sys

import bitsandbytes
import bitsandbytes.functional as F
import torch
from safetensors.torch import save_file

NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0]


def case(name, w, blocksize, out_dir):
    packed, plain = F.quantize_4bit(w, blocksize=blocksize, quant_type="nf4", compress_statistics=False)
    dq_packed, dq = F.quantize_4bit(w, blocksize=blocksize, quant_type="nf4", compress_statistics=True)
    tensors = {
        "w": w.contiguous(),
        "plain.packed": packed.reshape(-1).contiguous(),
        "plain.absmax": plain.absmax.float().contiguous(),
        "dq.packed": dq_packed.reshape(-1).contiguous(),
        "dq.qabsmax": dq.absmax.reshape(-1).contiguous(),
        "dq.absmax2": dq.state2.absmax.float().contiguous(),
        "dq.offset": dq.offset.float().reshape(1).contiguous(),
        "dq.code": dq.state2.code.float().contiguous(),
        "dequant": F.dequantize_4bit(dq_packed, dq).float().contiguous(),
    }
    meta = {"blocksize": str(blocksize), "shape": ",".join(map(str, w.shape)),
            "torch": torch.__version__, "bitsandbytes": bitsandbytes.__version__}
    save_file(tensors, os.path.join(out_dir, name + ".safetensors"), metadata=meta)


def bnb_checkpoint(out_dir, g):
    ckpt, expected = {}, {}
    for prefix, (rows, cols), dq in [("model.layers.0.self_attn.q_proj", (96, 40), True),
                                     ("model.layers.0.mlp.down_proj", (40, 72), False)]:
        w = (torch.randn(rows, cols, generator=g) * 0.02).to(torch.bfloat16)
        lin = bitsandbytes.nn.Linear4bit(cols, rows, bias=False, compute_dtype=torch.bfloat16,
                                         quant_type="nf4", compress_statistics=dq)
        lin.weight = bitsandbytes.nn.Params4bit(w, requires_grad=False, quant_type="nf4",
                                                compress_statistics=dq)
        lin = lin.to("cpu")  # quantizes
        for key, value in lin.state_dict().items():
            ckpt[prefix + "." + key] = value.contiguous()
        expected[prefix + ".source"] = w
        expected[prefix + ".dequant"] = F.dequantize_4bit(lin.weight.data, lin.weight.quant_state).float()
    os.makedirs(os.path.join(out_dir, "bnb_checkpoint"), exist_ok=True)
    save_file(ckpt, os.path.join(out_dir, "bnb_checkpoint", "model.safetensors"), metadata={"format": "pt"})
    save_file(expected, os.path.join(out_dir, "bnb_expected.safetensors"))


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/nf4"
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(1234)
    # a bf16 weight like a real checkpoint's, with a tail (96*40 = 3840 = 60 blocks of 64)
    case("bf16_96x40", (torch.randn(96, 40, generator=g) * 0.02).to(torch.bfloat16), 64, out_dir)
    # f32 with a block that is all zeros, a block with one huge value, and 257 blocks so the
    # double quantization has a partial second block of 256
    w = torch.randn(257, 64, generator=g)
    w[3] = 0.0
    w[7, 5] = 1e4
    w[9] *= 1e-30
    case("f32_257x64", w, 64, out_dir)
    # values placed exactly on the midpoints between NF4 codes (the tie rule), block of 64
    mids = [(a + b) / 2 for a, b in zip(NF4[:-1], NF4[1:])]
    w = torch.tensor((mids + [1.0]) * 4, dtype=torch.float32).reshape(4, 16)
    case("f32_midpoints", w, 64, out_dir)
    # f16 input, n not a multiple of the blocksize (the tail block), blocksize 128
    case("f16_odd_tail", torch.randn(7, 45, generator=g).to(torch.float16), 128, out_dir)
    bnb_checkpoint(out_dir, g)


if __name__ == "__main__":
    main()
