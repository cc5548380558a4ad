#!/usr/bin/env python3
"""chat_chain_model.py: a tiny random Mistral model that always answers with one given text.

    python3 scripts/chat_chain_model.py OUT_DIR START_ID ID ID ... EOS_ID

For tests of the programs around a model (`chat --batch` between `persona prompts` and
`persona ingest`, chat_gpu against chat), where a random model's answers would be rejected
or would differ by rounding: the model is random (normal(0, 0.02) weights, sliding window 16,
so attention and the KV cache run as usual; head_dim 64, 2 query heads, 1 KV head: sizes
the GPU kernels take), except that the embedding of the i-th id of the chain START_ID, ID,
..., is 4 times the i-th basis vector, and the LM head row of the (i+1)-th id (the last:
EOS_ID) is 3 times that vector. After RMSNorm an embedding is sqrt(128) = 11.3 times its
basis vector, so after START_ID (the end of the prompt: [/INST]) the next id of the chain
has logit 34 and every other about 0 (the layers add ~0.03 to the residual stream): greedy
decoding, and sampling at temperature 0.7, give the chain and stop at EOS whatever the
prompt, on the CPU and on the GPU alike. The ids of the chain must differ from each other
(a token has one successor) and number at most 128 (the hidden size).

Needs numpy and safetensors (requirements.txt); stated versions: numpy 2.3, safetensors 0.8.
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, VOCAB, WINDOW = 128, 256, 2, 2, 1, 32768, 16


def main():
    out, chain = sys.argv[1], [int(x) for x in sys.argv[2:]]
    if len(set(chain)) != len(chain) or len(chain) > HIDDEN or len(chain) < 2:
        sys.exit(f"error: the chain must be 2..{HIDDEN} different ids: {chain}")
    rng = np.random.default_rng(1)
    head_dim = HIDDEN // HEADS

    def normal(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    t = {"model.embed_tokens.weight": normal(VOCAB, HIDDEN), "lm_head.weight": normal(VOCAB, HIDDEN),
         "model.norm.weight": np.ones(HIDDEN, np.float32)}
    for i, tok in enumerate(chain):
        t["model.embed_tokens.weight"][tok] = 0
        t["model.embed_tokens.weight"][tok, i] = 4
        if i + 1 < len(chain):
            t["lm_head.weight"][chain[i + 1]] = 0
            t["lm_head.weight"][chain[i + 1], i] = 3
    shapes = {"self_attn.q_proj": (HEADS * head_dim, HIDDEN), "self_attn.k_proj": (KV_HEADS * head_dim, HIDDEN),
              "self_attn.v_proj": (KV_HEADS * head_dim, HIDDEN), "self_attn.o_proj": (HIDDEN, HEADS * head_dim),
              "mlp.gate_proj": (INTER, HIDDEN), "mlp.up_proj": (INTER, HIDDEN), "mlp.down_proj": (HIDDEN, INTER)}
    for layer in range(LAYERS):
        p = f"model.layers.{layer}."
        t[p + "input_layernorm.weight"] = np.ones(HIDDEN, np.float32)
        t[p + "post_attention_layernorm.weight"] = np.ones(HIDDEN, np.float32)
        for name, shape in shapes.items():
            t[p + name + ".weight"] = normal(*shape)
    os.makedirs(out, exist_ok=True)
    save_file(t, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    config = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": HIDDEN,
              "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "num_key_value_heads": KV_HEADS, "head_dim": head_dim, "vocab_size": VOCAB,
              "max_position_embeddings": 4096, "sliding_window": WINDOW, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 1,
              "eos_token_id": 2, "torch_dtype": "float32"}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


if __name__ == "__main__":
    main()
