#!/usr/bin/env python3
"""Writes Mistral/Llama models and what transformers + PEFT (+ bitsandbytes) compute with
them in float64 and in float32: the reference that train/check_fixture.c holds train/model.c
to. Every comparison check_fixture makes is against the float64 truth, and the fixture
carries torch float32's own error against that truth so that ours is printed next to it.

  pip install torch==2.15.0 transformers==5.24.0 peft==0.21.2 bitsandbytes==0.50.2 \\
      safetensors==0.8.0 numpy==2.3.5
  python scripts/model_fixtures.py tiny   [test/fixtures/tiny]     the committed tiny models
  python scripts/model_fixtures.py models [test/fixtures/models] [NAME...]   the wider ones
  python scripts/model_fixtures.py one OUT_DIR [options]           any configuration (--help)
  python scripts/model_fixtures.py bf16 [test/fixtures/tiny]       only the bf16 copies below

Weights. Every weight is drawn from a counter-based hash (written out again in
train/check_fixture.c, which must reproduce it bit for bit): element i of the tensor NAME is
  z = mix(seed XOR fnv1a64(NAME) + (i + 1) * 0x9E3779B97F4A7C15)      (SplitMix64's mix)
  u = float32(((z >> 41) + 0.5) * 2^-22 - 1)                           (exact, in (-1, 1))
  w = u * float32(bound)                                                (one float32 rounding)
Frozen matrices (embeddings, projections, head) are uniform with standard deviation
init_std = 1/sqrt(hidden_size), written into config.json as initializer_range (bound
sqrt(3) * init_std): attention scores and logits start with unit variance at any width, so
the reference is well conditioned (the former std 0.2 saturated attention from hidden 512
on). Norm weights are 1 + u/8. LoRA A is uniform in +-1/sqrt(in) (PEFT's kaiming bound),
LoRA B uniform in +-lora_b_bound (0.1; PEFT's B = 0 would give A no gradient). The
frozen weights use weights_seed, LoRA uses lora_seed.

For each configuration NAME the script writes a directory holding config.json and
expected.safetensors, the fixture. In test/fixtures/tiny/NAME/ also the weights
(model.safetensors, frozen_weights "model_dir": check_fixture loads them as a user's model)
and adapter/ (the initial LoRA in PEFT's format); in test/fixtures/models/NAME/ the weights
are not written (frozen_weights "generated": check_fixture generates them from the formula;
a Mistral-7B layer is ~0.9 GB), so the directory stays a few hundred kB.

expected.safetensors:
  input_ids, labels [steps, R, S]      int32: each optimizer step's own R rows of S tokens;
                                       labels -100 = no loss. Position s is trained on label
                                       s+1 (transformers shifts them). Each conversation opens
                                       with an unlabelled "user turn" of random length
  position_ids, segment_ids            (packed rows only) [steps, R, S] int32: each row holds
                                       several conversations: positions restart at 0, segment
                                       ids 0, 1, ... The reference model gets the equivalent
                                       4-D attention mask (block-diagonal, causal, sliding
                                       window), checked against each conversation run alone
  lora_dropout_keep.model.layers.L.P   (lora_dropout > 0) uint8 [steps, R*S, in/8]: the
                                       dropout masks of projection P of layer L, one bit per
                                       input element (1 = kept, bit j%8 of byte j/8), the masks
                                       PEFT's dropout applied (module replaced, x * keep / (1-p))
  bnb4bit.<weight>.offset [1] float32, (frozen_dtype "nf4") what bitsandbytes stored for each
  bnb4bit.<weight>.crc32 [2] uint32    projection: its double-quantization offset, and the
                                       CRC-32 of its packed codes and of its statistics (the
                                       qabsmax bytes, then the absmax2 floats)
  logits [R, S, V] float32             of step 1's forward pass
  <PEFT key>.grad float32              the gradient of step 1's loss for every LoRA A and B
                                       (before clipping), e.g.
                                       base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight.grad
  adamw_losses, adamw_grad_norms,      [steps] float64: per optimizer step, its loss (the sum
  adamw_lrs                            of the cross-entropies of every labelled token of the
                                       step, all its micro-batches, divided by their number)
                                       before the update, the global gradient norm before
                                       clipping, the learning rate of the schedule
  X.torch_fp32_error float64           for each of logits, the gradients and the three above:
                                       torch float32's error against the float64 truth, as
                                       check_fixture measures ours (a tensor: [1],
                                       max |f32 - f64| / max |f64|; numbers: one each,
                                       |f32 - f64| / |f64|)
Tensors are the float64 truth rounded to float32 (at most 6e-8 relative per element);
numbers are float64. An optimizer step: grad_accum micro-batches of R / grad_accum rows,
each backward of (its summed cross-entropy / the step's labelled tokens);
torch.nn.utils.clip_grad_norm_ when max_grad_norm > 0; torch.optim.AdamW at the learning
rate of transformers' get_{constant,linear,cosine}_schedule_with_warmup. Metadata (strings):
the package versions; frozen_weights, weights_seed, init_std, frozen_dtype ("float32", or
"nf4": bitsandbytes Linear4bit, blocksize 64, double quantization); lora_r, lora_alpha,
use_rslora, target_modules, lora_dropout, lora_seed, lora_b_bound; adamw_lr, adamw_beta1,
adamw_beta2, adamw_eps, adamw_weight_decay, adamw_steps; grad_accum, max_grad_norm,
warmup_steps, schedule.

The float64 truth is the same model with every weight converted to float64 and computed in
float64 throughout (transformers itself keeps RMSNorm, the attention softmax and RoPE's
cos/sin in float32 even then: see float64_throughout). For NF4 its frozen projections are
what bitsandbytes' dequantize_4bit gives for its own quantization of them; the float32
reference runs bitsandbytes' Linear4bit itself on the CPU (in training mode: see nf4_model).
The AdamW learning rates (1e-3 to 5e-3) keep the steps well conditioned: torch float32's
losses and gradient norms stay within 3e-7 of float64's over them.

tiny: "mistral_window" (sliding window 5 < 12 positions, 4 query heads on 2 KV heads,
head_dim 12), "mistral_gqa" (no window, 6 heads on 2, explicit head_dim 8), "llama" (no
window, no GQA); hidden 48, 2 layers, LoRA r 4 alpha 8 on all seven projections, 2 x 12
tokens, 5 AdamW steps at lr 1e-3. For mistral_window also merged_projections.safetensors
(PEFT's merge_and_unload of adapter/, for test_merge.sh), mistral_window_bnb4bit/ (the
model loaded with BitsAndBytesConfig(load_in_4bit, nf4, double quantization) and saved in
bitsandbytes' layout), mistral_window_bf16/ (cast to bfloat16) and
mistral_window_bf16_bnb4bit/ (that loaded in bfloat16 with load_in_4bit, compute dtype
bfloat16: only recorded in the config; persona.c dequantizes to float32).

models: see MODELS below (the Mistral-7B geometry slice, hidden 1024 with 8 x 128 heads on
2, 12 heads of 64 on 4 with rsLoRA, NF4, packed rows, LoRA dropout 0.1, accumulation with
clipping and warmup).

And, to check that PEFT loads an adapter we write (the result is committed):
  make build/test/test_model && build/test/test_model --export-adapter runs/our-adapter
  python scripts/model_fixtures.py check-adapter runs/our-adapter test/fixtures/tiny/peft_loads_our_adapter.json
"""
import math
import os
import sys
import tempfile
import types
import zlib

import numpy as np
import torch

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ATTN = {"q_proj", "k_proj", "v_proj", "o_proj"}

# ---------------------------------------------------------------------------------------
# the weight formula (train/check_fixture.c has its twin)

GOLDEN, MIX1, MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def hash_uniform(seed, name, shape, bound):
    """The tensor NAME: float32 uniform in +-bound (see the top), in chunks to bound memory."""
    n = int(np.prod(shape))
    key = np.uint64(seed ^ fnv1a64(name))
    scale = np.float32(bound)
    out = np.empty(n, dtype=np.float32)
    step = 1 << 22
    with np.errstate(over="ignore"):
        for start in range(0, n, step):
            z = key + np.arange(start + 1, min(n, start + step) + 1, dtype=np.uint64) * GOLDEN
            z = (z ^ (z >> np.uint64(30))) * MIX1
            z = (z ^ (z >> np.uint64(27))) * MIX2
            z ^= z >> np.uint64(31)
            u = ((z >> np.uint64(41)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0 ** -22) - np.float32(1)
            out[start:start + len(u)] = u * scale
    return out.reshape(shape)


def linear_shapes(cfg):
    """[out, in] of each projection."""
    H, I = cfg.hidden_size, cfg.intermediate_size
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    return {"q_proj": (q, H), "k_proj": (kv, H), "v_proj": (kv, H), "o_proj": (H, q),
            "gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}


def module_of(p):
    return ("self_attn." if p in ATTN else "mlp.") + p


def frozen_weights(cfg, seed):
    """Every frozen tensor, by its name in transformers' state dict."""
    H, V, std = cfg.hidden_size, cfg.vocab_size, cfg.initializer_range
    bound = std * math.sqrt(3.0)
    w = {"model.embed_tokens.weight": hash_uniform(seed, "model.embed_tokens.weight", (V, H), bound)}
    norm = lambda name: np.float32(1) + hash_uniform(seed, name, (H,), 1.0) * np.float32(0.125)  # noqa: E731
    for i in range(cfg.num_hidden_layers):
        for n in ["input_layernorm", "post_attention_layernorm"]:
            name = f"model.layers.{i}.{n}.weight"
            w[name] = norm(name)
        for p, shape in linear_shapes(cfg).items():
            name = f"model.layers.{i}.{module_of(p)}.weight"
            w[name] = hash_uniform(seed, name, shape, bound)
    w["model.norm.weight"] = norm("model.norm.weight")
    if not cfg.tie_word_embeddings:
        w["lm_head.weight"] = hash_uniform(seed, "lm_head.weight", (V, H), bound)
    return w


def lora_key(i, p, ab):
    return f"base_model.model.model.layers.{i}.{module_of(p)}.lora_{ab}.weight"


def lora_weights(cfg, run):
    """The initial LoRA A and B of every targeted projection, keyed as in PEFT's adapter file."""
    w = {}
    for i in range(cfg.num_hidden_layers):
        for p in run["targets"]:
            out, inp = linear_shapes(cfg)[p]
            w[lora_key(i, p, "A")] = hash_uniform(run["lora_seed"], lora_key(i, p, "A"), (run["lora_r"], inp),
                                                  1.0 / math.sqrt(inp))
            w[lora_key(i, p, "B")] = hash_uniform(run["lora_seed"], lora_key(i, p, "B"), (out, run["lora_r"]),
                                                  run["lora_b_bound"])
    return w


# ---------------------------------------------------------------------------------------
# configurations

# The committed tiny models (weights written): model config fields and the seed.
TINY_COMMON = dict(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                   max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False)
TINY = {
    "mistral_window": dict(arch="mistral", seed=100, num_attention_heads=4, num_key_value_heads=2,
                           sliding_window=5, rope_theta=10000.0),
    "mistral_gqa": dict(arch="mistral", seed=101, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                        sliding_window=None, rope_theta=1e6),
    "llama": dict(arch="llama", seed=102, num_attention_heads=4, num_key_value_heads=4, rope_theta=10000.0),
}
# What is done with a model (recorded in the fixture). segments: per row, the lengths of
# its conversations (None: one per row).
RUN = dict(lora_r=4, lora_alpha=8.0, use_rslora=False, targets=TARGETS, lora_dropout=0.0, lora_b_bound=0.1,
           rows=2, seq_len=12, segments=None, grad_accum=1, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
           weight_decay=0.01, steps=5, max_grad_norm=0.0, warmup=0, schedule="constant", frozen="float32")

# The wider models (weights generated at test time): (model fields, run fields).
SMALL = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0)
MODELS = {
    # Mistral-7B's layer: hidden 4096, 32 heads of 128 on 8 KV heads, MLP 14336 (one layer,
    # vocabulary 256), a window shorter than the 80 positions (which span two of the
    # attention's 64-row query blocks)
    "mistral7b_slice": (dict(arch="mistral", seed=200, vocab_size=256, hidden_size=4096, intermediate_size=14336,
                             num_hidden_layers=1, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                             sliding_window=48, rms_norm_eps=1e-5, rope_theta=1e6),
                        dict(lora_r=2, lora_alpha=4.0, rows=1, seq_len=80, steps=3)),
    "hidden1024_gqa": (dict(arch="mistral", seed=201, vocab_size=128, hidden_size=1024, intermediate_size=2048,
                            num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, head_dim=128,
                            sliding_window=40, rms_norm_eps=1e-5, rope_theta=1e6),
                       dict(lora_r=2, lora_alpha=4.0, rows=1, seq_len=72, steps=3)),
    # head_dim 64 set explicitly: q is 768 wide on a 384-wide residual (o_proj [384, 768])
    "rslora_12x64": (dict(arch="mistral", seed=202, vocab_size=128, hidden_size=384, intermediate_size=1024,
                          num_hidden_layers=2, num_attention_heads=12, num_key_value_heads=4, head_dim=64,
                          sliding_window=None, rms_norm_eps=1e-6, rope_theta=10000.0),
                     dict(lora_r=4, lora_alpha=16.0, use_rslora=True, rows=2, seq_len=32, steps=3)),
    "nf4": (dict(arch="mistral", seed=203, vocab_size=128, hidden_size=128, intermediate_size=384,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, sliding_window=16,
                 rms_norm_eps=1e-5, rope_theta=10000.0),
            dict(frozen="nf4", rows=2, seq_len=24, steps=3)),
    # 2 rows x 192 positions, ~290 tokens trained per step (beyond the loss's 256-token
    # chunks), conversations of 10 to 100 tokens (some beyond a 64-row query block), a
    # window of 7
    "packed": (dict(SMALL, arch="mistral", seed=204, sliding_window=7),
               dict(rows=2, seq_len=192, segments=[[70, 40, 50, 32], [30, 100, 20, 10, 32]], steps=3)),
    "dropout": (dict(SMALL, arch="mistral", seed=205, sliding_window=None),
                dict(lora_dropout=0.1, rows=2, seq_len=24, steps=3)),
    # 6 optimizer steps of 3 micro-batches of 2 rows each, 2 warmup steps of a cosine
    # schedule, the gradient clipped to norm 1 (its norms are 0.93 to 1.15: step 6 is not
    # clipped; AdamW does not see a clip that scales every step alike, so only the unequal
    # factors show, ~5e-4 of the later losses and norms)
    "accum_clip_warmup": (dict(SMALL, arch="llama", seed=206),
                          dict(rows=6, seq_len=24, grad_accum=3, steps=6, max_grad_norm=1.0, warmup=2,
                               schedule="cosine", lr=5e-3)),
}


def model_config(spec):
    from transformers import LlamaConfig, MistralConfig
    spec = dict(spec)
    arch = spec.pop("arch")
    spec.pop("seed")
    spec.setdefault("tie_word_embeddings", False)
    spec.setdefault("max_position_embeddings", 4096)
    spec["initializer_range"] = 1.0 / math.sqrt(spec["hidden_size"])
    cls = MistralConfig if arch == "mistral" else LlamaConfig
    return cls(**spec, attn_implementation="eager")


# ---------------------------------------------------------------------------------------
# the batch

def make_batch(cfg, run, seed):
    """input_ids and labels [steps, R, S], each optimizer step its own rows; with segments
    also position_ids and segment_ids. Each conversation opens with a "user turn" without
    loss of random length (1 to half the conversation), so that micro-batches hold
    different numbers of labelled tokens."""
    rng = np.random.default_rng(seed)
    shape = (run["steps"], run["rows"], run["seq_len"])
    ids = rng.integers(0, cfg.vocab_size, size=shape).astype(np.int32)
    labels = ids.copy()
    pos = np.zeros(shape, np.int32)
    seg = np.zeros(shape, np.int32)
    for step in range(shape[0]):
        for r in range(shape[1]):
            lengths = run["segments"][r] if run["segments"] else [shape[2]]
            assert sum(lengths) == shape[2], "segment lengths must add up to seq_len"
            start = 0
            for k, n in enumerate(lengths):
                pos[step, r, start:start + n] = np.arange(n)
                seg[step, r, start:start + n] = k
                labels[step, r, start:start + rng.integers(1, max(1, n // 2) + 1)] = -100
                start += n
    b = {"input_ids": ids, "labels": labels}
    if run["segments"]:
        b["position_ids"], b["segment_ids"] = pos, seg
    return b


def attention_mask(segment_ids, window, dtype):
    """The 4-D additive mask of packed rows [R, S]: query i sees key j iff same segment,
    j <= i, and i - j < window (when set)."""
    seg = torch.from_numpy(segment_ids).long()
    S = seg.shape[1]
    i = torch.arange(S).view(S, 1)
    j = torch.arange(S).view(1, S)
    ok = (seg[:, :, None] == seg[:, None, :]) & (j <= i)
    if window:
        ok &= i - j < window
    mask = torch.zeros(ok.shape, dtype=dtype).masked_fill(~ok, torch.finfo(dtype).min)
    return mask[:, None]


def dropout_masks(cfg, run, seed):
    """Keep masks (bool) per (layer, projection): [steps, R*S, in]."""
    rng = np.random.default_rng(seed + 1)
    T = run["rows"] * run["seq_len"]
    return {(i, p): rng.random((run["steps"], T, linear_shapes(cfg)[p][1])) >= run["lora_dropout"]
            for i in range(cfg.num_hidden_layers) for p in run["targets"]}


class GivenDropout(torch.nn.Module):
    """PEFT's LoRA dropout with the mask given: x * keep / (1 - p), keep from the fixture's
    masks at the current step and micro-batch (state["step"], state["rows"])."""

    def __init__(self, keep, p, state, seq_len):
        super().__init__()
        self.keep, self.p, self.state, self.S = keep, p, state, seq_len

    def forward(self, x):
        r0, r1 = self.state["rows"]
        m = torch.from_numpy(self.keep[self.state["step"], r0 * self.S:r1 * self.S]).reshape(x.shape)
        return x * m.to(x.dtype) * (1.0 / (1.0 - self.p))


# ---------------------------------------------------------------------------------------
# the reference runs

def plain_model(cfg, weights, dtype):
    from transformers import LlamaForCausalLM, MistralForCausalLM
    cls = MistralForCausalLM if cfg.model_type == "mistral" else LlamaForCausalLM
    model = cls(cfg)
    state = {k: torch.from_numpy(v) for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k == "lm_head.weight" and cfg.tie_word_embeddings for k in missing), (missing, unexpected)
    model = model.to(dtype).eval()
    if dtype == torch.float64:
        float64_throughout(model)
    return model


# transformers computes RMSNorm, the attention softmax and RoPE's cosine and sine in float32
# even in a float64 model (their last bits then depend on vectorisation: a packed row and
# the same conversation alone differed by 5e-7). For the truth they are computed in float64
# here, by the same formulas.

def float64_throughout(model):
    from transformers.models.llama import modeling_llama
    from transformers.models.mistral import modeling_mistral
    for module in (modeling_llama, modeling_mistral):
        if not getattr(module.eager_attention_forward, "dispatches_float64", False):
            module.eager_attention_forward = attention_by_dtype(module.eager_attention_forward)
    for m in model.modules():
        if type(m).__name__.endswith("RMSNorm"):
            m.forward = types.MethodType(rmsnorm_float64, m)
    model.model.rotary_emb.forward = types.MethodType(rope_float64, model.model.rotary_emb)


def rmsnorm_float64(self, x):
    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


def rope_float64(self, x, position_ids):
    """The angles as transformers computes them (inv_freq and position * inv_freq in
    float32: they define the model, and ours are the same floats), cos and sin in float64."""
    freqs = position_ids[..., None].float() * self.inv_freq.float()
    emb = torch.cat((freqs, freqs), dim=-1).double()
    return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def attention_by_dtype(eager):
    """transformers' eager attention, with the softmax in float64 for float64 queries."""
    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        if query.dtype != torch.float64:
            return eager(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        k = key.repeat_interleave(module.num_key_value_groups, dim=1)  # query head h reads KV head h // groups
        v = value.repeat_interleave(module.num_key_value_groups, dim=1)
        w = torch.matmul(query, k.transpose(2, 3)) * scaling
        if attention_mask is not None:
            w = w + attention_mask
        w = torch.softmax(w, dim=-1)
        return torch.matmul(w, v).transpose(1, 2).contiguous(), w
    attention.dispatches_float64 = True
    return attention


def nf4_model(cfg, weights, tmp):
    """The float32 model with every projection a bitsandbytes Linear4bit (NF4, blocksize
    64, double quantization), as transformers loads a checkpoint for QLoRA; and the weights
    its projections stand for (bitsandbytes' dequantize_4bit of its own codes), and what it
    stored per weight: the double-quantization offset and the CRC-32s of the packed codes and
    of the statistics (qabsmax bytes, then absmax2). It must run
    in training mode: in eval mode bitsandbytes' CPU backend repacks the weights for its
    inference kernel with the absmax statistics rounded to bfloat16 (~0.4%), which is not
    the format's arithmetic (nor what its GPU kernels or QLoRA training compute)."""
    import bitsandbytes.functional as bnbf
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    plain_model(cfg, weights, torch.float32).save_pretrained(tmp, safe_serialization=True)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=q, device_map="cpu", dtype=torch.float32,
                                                 attn_implementation="eager").train()
    dequantized, stored = dict(weights), {}
    for i in range(cfg.num_hidden_layers):
        for p in TARGETS:
            name = f"model.layers.{i}.{module_of(p)}.weight"
            lin = model.get_submodule(name[:-len(".weight")])
            assert type(lin).__name__ == "Linear4bit", type(lin)
            qs = lin.weight.quant_state
            w = bnbf.dequantize_4bit(lin.weight.data, qs).float()
            if not np.array_equal(w.reshape(-1).numpy(), nf4_dequantized(lin.weight.data, qs)):
                sys.exit(f"{name} {list(linear_shapes(cfg)[p])}: bitsandbytes' CPU dequantize_4bit (and with it "
                         "Linear4bit) misreads weights whose rows are not a multiple of 64 long; no NF4 reference")
            dequantized[name] = w.reshape(linear_shapes(cfg)[p]).numpy()
            x = torch.from_numpy(hash_uniform(7, "x", (5, lin.in_features), 1.0))
            with torch.no_grad():
                assert torch.equal(lin(x), x @ w.T), "Linear4bit does not compute with its dequantized weights"
            codes = zlib.crc32(lin.weight.data.numpy().tobytes())
            stats = zlib.crc32(qs.state2.absmax.numpy().tobytes(), zlib.crc32(qs.absmax.numpy().tobytes()))
            stored[f"bnb4bit.{name}.offset"] = qs.offset.reshape(1).numpy().astype(np.float32)
            stored[f"bnb4bit.{name}.crc32"] = np.array([codes, stats], dtype=np.uint32)
    return model, dequantized, stored


def nf4_dequantized(packed, qs):
    """bitsandbytes' stored NF4 weight (codes two per byte, element 2j in the high nibble;
    block absmax = code2[qabsmax] * absmax2[block / 256] + offset, in float32) dequantized
    here, flat: the check of its own dequantize_4bit."""
    packed = packed.numpy().reshape(-1)
    codes = np.empty(packed.size * 2, np.uint8)
    codes[0::2], codes[1::2] = packed >> 4, packed & 15
    nb = qs.absmax.numel()
    absmax = (qs.state2.code.numpy()[qs.absmax.numpy()] * np.repeat(qs.state2.absmax.numpy(), 256)[:nb]
              + qs.offset.numpy()).astype(np.float32)
    n = int(np.prod(qs.shape))
    return qs.code.numpy()[codes[:n]] * np.repeat(absmax, qs.blocksize)[:n]


def with_lora(model, dtype, run, lora, masks, state):
    from peft import LoraConfig, get_peft_model
    lcfg = LoraConfig(r=run["lora_r"], lora_alpha=run["lora_alpha"], use_rslora=run["use_rslora"],
                      lora_dropout=run["lora_dropout"], target_modules=run["targets"], task_type="CAUSAL_LM")
    pm = get_peft_model(model, lcfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if p.requires_grad:
                p.data = torch.tensor(lora[n.replace(".default", "")], dtype=dtype)  # a copy
    for (i, p), keep in (masks or {}).items():
        mod = pm.get_submodule(f"base_model.model.model.layers.{i}.{module_of(p)}")
        mod.lora_dropout["default"] = GivenDropout(keep, run["lora_dropout"], state, run["seq_len"])
    return pm


def schedule(opt, run):
    import transformers
    kind = run["schedule"]
    if kind == "constant":
        return transformers.get_constant_schedule_with_warmup(opt, run["warmup"])
    fn = transformers.get_linear_schedule_with_warmup if kind == "linear" else transformers.get_cosine_schedule_with_warmup
    return fn(opt, run["warmup"], run["steps"])


def train(pm, batch, run, state, dtype):
    """Step 1's logits, loss and gradients, and per step the loss, the gradient norm before
    clipping and the learning rate (see the top)."""
    import torch.nn.functional as F
    pm.train()  # (no dropout but ours: attention_dropout is 0)
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=run["lr"], betas=run["betas"], eps=run["eps"], weight_decay=run["weight_decay"])
    sched = schedule(opt, run)
    R, A = run["rows"], run["grad_accum"]
    assert R % A == 0, "rows must be a multiple of grad_accum"
    out = {"adamw_losses": [], "adamw_grad_norms": [], "adamw_lrs": []}
    for step in range(run["steps"]):
        ids = torch.from_numpy(batch["input_ids"][step]).long()
        labels = torch.from_numpy(batch["labels"][step]).long()
        kwargs = {}
        if "segment_ids" in batch:
            kwargs = {"attention_mask": attention_mask(batch["segment_ids"][step], pm.config.sliding_window, dtype),
                      "position_ids": torch.from_numpy(batch["position_ids"][step]).long()}
        total = int((labels[:, 1:] != -100).sum())
        opt.zero_grad()
        state["step"] = step
        loss, logits = 0.0, []
        for a in range(A):
            r0, r1 = a * R // A, (a + 1) * R // A
            state["rows"] = (r0, r1)
            lg = pm(input_ids=ids[r0:r1], **{k: v[r0:r1] for k, v in kwargs.items()}).logits
            ce = F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), labels[r0:r1, 1:].reshape(-1),
                                 ignore_index=-100, reduction="sum") / total
            ce.backward()
            loss += ce.item()
            logits.append(lg.detach())
        if step == 0:
            out["logits"] = torch.cat(logits).double().numpy()
            for n, p in pm.named_parameters():
                if p.requires_grad:
                    out[n.replace(".default", "") + ".grad"] = p.grad.double().numpy().copy()
        norm = torch.nn.utils.clip_grad_norm_(params, run["max_grad_norm"] if run["max_grad_norm"] > 0 else math.inf)
        out["adamw_losses"].append(loss)
        out["adamw_grad_norms"].append(norm.item())
        out["adamw_lrs"].append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


NUMBERS = ["adamw_losses", "adamw_grad_norms", "adamw_lrs"]


def error(f32, f64, numbers):
    """torch float32's error against the truth, as check_fixture measures ours: per number
    (exact equality is no error, a zero truth any other value is an infinite one), or one
    for a whole tensor."""
    if numbers:
        return np.array([0.0 if a == b else abs(a - b) / abs(b) if b else math.inf for a, b in zip(f32, f64)])
    return np.array([np.abs(f32 - f64).max() / max(np.abs(f64).max(), 1e-30)])


def versions():
    import bitsandbytes
    import peft
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "bitsandbytes": bitsandbytes.__version__, "numpy": np.__version__}


def build(out, spec, run, write_weights):
    """Writes the directory out (see the top) for one configuration."""
    from safetensors.numpy import save_file
    run = {**RUN, **run}
    cfg = model_config(spec)
    seed = spec["seed"]
    run["lora_seed"] = seed + 1000
    weights = frozen_weights(cfg, seed)
    lora = lora_weights(cfg, run)
    batch = make_batch(cfg, run, seed)
    masks = dropout_masks(cfg, run, seed) if run["lora_dropout"] > 0 else None
    os.makedirs(out, exist_ok=True)
    state = {"step": 0, "rows": (0, run["rows"])}
    with tempfile.TemporaryDirectory() as tmp:
        if run["frozen"] == "nf4":
            assert not write_weights, "an NF4 fixture generates its weights"
            model32, weights64, stored = nf4_model(cfg, weights, tmp)
        else:
            model32, weights64, stored = plain_model(cfg, weights, torch.float32), weights, {}
        model64 = plain_model(cfg, weights64, torch.float64)
        if "segment_ids" in batch:
            check_packing(model64, batch)
        if write_weights:
            model32.save_pretrained(out, safe_serialization=True)
        else:
            cfg.save_pretrained(out)
        pm32 = with_lora(model32, torch.float32, run, lora, masks, state)
        pm64 = with_lora(model64, torch.float64, run, lora, masks, state)
        if write_weights:
            pm32.save_pretrained(os.path.join(out, "adapter"))
            if os.path.basename(out) == "mistral_window":
                merged_projections(out)
        f32 = train(pm32, batch, run, state, torch.float32)
        f64 = train(pm64, batch, run, state, torch.float64)
    t = {**batch, **stored}
    for k, v in f64.items():
        t[k] = v if k in NUMBERS else v.astype(np.float32)
        t[k + ".torch_fp32_error"] = error(f32[k], v, k in NUMBERS)
    for (i, p), keep in (masks or {}).items():
        t[f"lora_dropout_keep.model.layers.{i}.{module_of(p)}"] = np.packbits(keep, axis=-1, bitorder="little")
    meta = {**versions(), "frozen_weights": "model_dir" if write_weights else "generated", "weights_seed": str(seed),
            "init_std": repr(cfg.initializer_range), "frozen_dtype": run["frozen"],
            "lora_r": str(run["lora_r"]), "lora_alpha": repr(float(run["lora_alpha"])),
            "use_rslora": "true" if run["use_rslora"] else "false", "target_modules": ",".join(run["targets"]),
            "lora_dropout": repr(float(run["lora_dropout"])), "lora_seed": str(run["lora_seed"]),
            "lora_b_bound": repr(float(run["lora_b_bound"])),
            "adamw_lr": repr(run["lr"]), "adamw_beta1": repr(run["betas"][0]), "adamw_beta2": repr(run["betas"][1]),
            "adamw_eps": repr(run["eps"]), "adamw_weight_decay": repr(run["weight_decay"]),
            "adamw_steps": str(run["steps"]), "grad_accum": str(run["grad_accum"]),
            "max_grad_norm": repr(float(run["max_grad_norm"])), "warmup_steps": str(run["warmup"]),
            "schedule": run["schedule"]}
    save_file({k: np.ascontiguousarray(v) for k, v in t.items()}, os.path.join(out, "expected.safetensors"),
              metadata=meta)
    drop_extras(out)
    worst = max((k for k in t if k.endswith(".torch_fp32_error")), key=lambda k: t[k].max())
    print(f"{out}: loss {f64['adamw_losses'][0]:.6f}, torch fp32 worst error {t[worst].max():.2e} ({worst})")


def check_packing(model64, batch):
    """The 4-D mask is the equivalent of running each conversation on its own: the packed
    rows' logits (step 1's) equal the separate runs' (float64, no LoRA)."""
    ids = torch.from_numpy(batch["input_ids"][0]).long()
    seg = batch["segment_ids"][0]
    with torch.no_grad():
        packed = model64(input_ids=ids, attention_mask=attention_mask(seg, model64.config.sliding_window, torch.float64),
                         position_ids=torch.from_numpy(batch["position_ids"][0]).long()).logits
        for r in range(ids.shape[0]):
            for k in np.unique(seg[r]):
                cols = np.nonzero(seg[r] == k)[0]
                alone = model64(input_ids=ids[r:r + 1, cols[0]:cols[-1] + 1]).logits[0]
                assert torch.allclose(packed[r, cols[0]:cols[-1] + 1], alone, rtol=0, atol=1e-12), "packing mask"


def merged_projections(out):
    """PEFT's merge_and_unload of the saved adapter: every projection weight (test_merge.sh)."""
    from peft import PeftModel
    from safetensors.torch import save_file
    from transformers import MistralForCausalLM
    base = MistralForCausalLM.from_pretrained(out, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, os.path.join(out, "adapter")).merge_and_unload()
    save_file({k: v.contiguous() for k, v in merged.state_dict().items() if "_proj" in k},
              os.path.join(out, "merged_projections.safetensors"))


# ---------------------------------------------------------------------------------------
# bitsandbytes and bf16 copies of mistral_window, PEFT loading our adapter

def drop_extras(out):
    """save_pretrained's files that no test reads (a generation config, PEFT's model card)."""
    for extra in ["generation_config.json", "adapter/README.md"]:
        if os.path.exists(os.path.join(out, extra)):
            os.remove(os.path.join(out, extra))


def bnb_copy(out_root, name, dtype=torch.float32):
    """Writes NAME_bnb4bit/: the checkpoint NAME loaded in dtype (its own) with load_in_4bit
    and saved; the compute dtype is the same dtype (it is only recorded in the config: the
    stored codes and statistics do not depend on it)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    src = os.path.join(out_root, name)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=q, device_map="cpu",
                                                 dtype=dtype, attn_implementation="eager")
    model.save_pretrained(src + "_bnb4bit")
    drop_extras(src + "_bnb4bit")


def bf16_copies(out_root, name):
    """Writes NAME_bf16/ (the fp32 checkpoint NAME cast to bfloat16 and saved) and
    NAME_bf16_bnb4bit/ (that bf16 checkpoint loaded in bfloat16 with load_in_4bit)."""
    from transformers import MistralForCausalLM
    src = os.path.join(out_root, name)
    model = MistralForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager")
    model.to(torch.bfloat16).save_pretrained(src + "_bf16", safe_serialization=True)
    drop_extras(src + "_bf16")
    bnb_copy(out_root, name + "_bf16", dtype=torch.bfloat16)


def check_adapter(adapter_dir, result_path):
    """Loads an adapter written by persona.c (test_model --export-adapter DIR) into PEFT on
    the mistral_window base model and records whether every key loaded and whether PEFT's
    logits equal ours (DIR/our_logits.safetensors)."""
    import json
    import warnings
    import peft
    import transformers
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import MistralForCausalLM
    base_dir = "test/fixtures/tiny/mistral_window"
    base = MistralForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager").eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(base, adapter_dir)
    messages = [str(w.message) for w in caught if "adapter keys" in str(w.message) or "missing" in str(w.message).lower()]
    ids = load_file(os.path.join(base_dir, "expected.safetensors"))["input_ids"][0].long()  # step 1's rows
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    ours = load_file(os.path.join(adapter_dir, "our_logits.safetensors"))["logits"]
    rel = ((logits - ours).abs().max() / logits.abs().max()).item()
    lora_params = sum(1 for n, _ in model.named_parameters() if "lora_" in n)
    result = {"peft": peft.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
              "missing_or_unexpected_key_warnings": messages, "lora_tensors_loaded": lora_params,
              "max_relative_logits_difference": rel, "ok": not messages and rel < 1e-4 and lora_params == 28}
    with open(result_path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------
# command line

MODEL_FIELDS = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "sliding_window", "max_position_embeddings"]


def one(argv):
    """model_fixtures.py one OUT_DIR [options]: one configuration of your choosing, weights
    generated (check with ./check_fixture OUT_DIR OUT_DIR/expected.safetensors)."""
    import argparse
    ap = argparse.ArgumentParser(prog="model_fixtures.py one", description=one.__doc__)
    ap.add_argument("out")
    ap.add_argument("--arch", choices=["mistral", "llama"], default="mistral")
    ap.add_argument("--seed", type=int, default=0)
    for key in MODEL_FIELDS:
        ap.add_argument("--" + key.replace("_", "-"), type=int)
    ap.add_argument("--rms-norm-eps", type=float, default=1e-5)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--tie-word-embeddings", action="store_true")
    ap.add_argument("--write-weights", action="store_true", help="write model.safetensors and adapter/ too")
    ap.add_argument("--nf4", action="store_true", help="frozen projections in bitsandbytes NF4 (not with --write-weights)")
    ap.add_argument("--lora-r", type=int, default=RUN["lora_r"])
    ap.add_argument("--lora-alpha", type=float, default=RUN["lora_alpha"])
    ap.add_argument("--rslora", action="store_true")
    ap.add_argument("--lora-dropout", type=float, default=0.0)
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated projections")
    ap.add_argument("--rows", type=int, default=RUN["rows"])
    ap.add_argument("--seq-len", type=int, default=RUN["seq_len"])
    ap.add_argument("--segments", help="packed rows: lengths per row, rows separated by '/', e.g. 5,7/12")
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--lr", type=float, default=RUN["lr"])
    ap.add_argument("--weight-decay", type=float, default=RUN["weight_decay"])
    ap.add_argument("--steps", type=int, default=RUN["steps"])
    ap.add_argument("--max-grad-norm", type=float, default=0.0)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--schedule", choices=["constant", "linear", "cosine"], default="constant")
    a = ap.parse_args(argv)
    spec = {**TINY_COMMON, "arch": a.arch, "seed": a.seed, "rope_theta": a.rope_theta, "rms_norm_eps": a.rms_norm_eps,
            "tie_word_embeddings": a.tie_word_embeddings}
    for key in MODEL_FIELDS:
        if getattr(a, key) is not None:
            spec[key] = getattr(a, key)
    if a.arch == "mistral" and "sliding_window" not in spec:
        spec["sliding_window"] = None
    segments = [[int(n) for n in row.split(",")] for row in a.segments.split("/")] if a.segments else None
    run = {"lora_r": a.lora_r, "lora_alpha": a.lora_alpha, "use_rslora": a.rslora, "lora_dropout": a.lora_dropout,
           "targets": a.targets.split(","), "rows": a.rows, "seq_len": a.seq_len, "segments": segments,
           "grad_accum": a.grad_accum, "lr": a.lr, "weight_decay": a.weight_decay, "steps": a.steps,
           "max_grad_norm": a.max_grad_norm, "warmup": a.warmup, "schedule": a.schedule,
           "frozen": "nf4" if a.nf4 else "float32"}
    build(a.out, spec, run, a.write_weights)


def main():
    import transformers
    transformers.utils.logging.disable_progress_bar()
    cmd = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    if cmd == "check-adapter":
        check_adapter(sys.argv[2], sys.argv[3])
    elif cmd == "one":
        one(sys.argv[2:])
    elif cmd == "bf16":
        bf16_copies(sys.argv[2] if len(sys.argv) > 2 else "test/fixtures/tiny", "mistral_window")
    elif cmd == "tiny":
        root = sys.argv[2] if len(sys.argv) > 2 else "test/fixtures/tiny"
        for name, spec in TINY.items():
            build(os.path.join(root, name), {**TINY_COMMON, **spec}, {}, True)
        bnb_copy(root, "mistral_window")
        bf16_copies(root, "mistral_window")
    elif cmd == "models":
        root = sys.argv[2] if len(sys.argv) > 2 else "test/fixtures/models"
        for name in sys.argv[3:] or MODELS:
            spec, run = MODELS[name]
            build(os.path.join(root, name), spec, run, False)
    else:
        sys.exit(f"usage: {sys.argv[0]} tiny|models|one|bf16|check-adapter ... (see the top of the file)")


if __name__ == "__main__":
    main()
