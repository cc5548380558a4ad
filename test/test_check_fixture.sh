#!/usr/bin/env bash
# test/test_check_fixture.sh: the CPU model and optimizer against transformers + PEFT +
# bitsandbytes + torch in float64, through ./check_fixture (scripts/model_fixtures.py:
# torch 2.15.0, transformers 5.24.0, peft 0.21.2, bitsandbytes 0.50.2).
#
#   agreement     every committed fixture: step 1's logits and all LoRA gradients, each step's
#                 loss, gradient norm and learning rate within 1e-4 relative of the float64
#                 truth (measured 1e-9 to 3e-6, torch float32's own error beside ours):
#                 test/fixtures/tiny/NAME (model files: a Mistral with a window shorter than
#                 the sequence, a Mistral with GQA and an explicit head_dim, a Llama) and
#                 test/fixtures/models/NAME (weights generated from the fixture's formula):
#                 Mistral-7B's layer geometry (hidden 4096, 32 heads of 128 on 8, MLP 14336),
#                 hidden 1024 with 8 heads of 128 on 2, 12 heads of 64 on 4 with rsLoRA,
#                 NF4 frozen weights (bitsandbytes' Linear4bit; our codes and statistics
#                 bit-identical to its), packed rows of several conversations, LoRA dropout
#                 0.1 with the reference's masks, 6 steps with accumulation, clipping and a
#                 warmup. All run the sanitizer build but the 7B slice, which runs the -O3
#                 build (~50 s per step under AddressSanitizer).
#   perturbed     a copy of each models/ fixture with one input changed (rms_norm_eps,
#                 rope_theta, the window +-1, lora_alpha, rsLoRA, one label, one dropout mask
#                 bit, a conversation boundary, NF4 vs float32, a CRC of bitsandbytes' codes,
#                 the warmup, the clipping) must FAIL (exit status 2); these run the -O3
#                 build for as many steps as the change needs to show (they check that the
#                 comparisons can fail; the sanitizer runs above cover the code);
#   disagreement  a copy of a fixture with one expected element changed (a logit, a LoRA
#                 gradient, one step's loss) must FAIL that comparison, and a tolerance below
#                 the measured error must FAIL too;
#   bad input     a fixture without a tensor it needs, without its metadata, or for another
#                 model: one line naming the file and the tensor or field, exit status 1.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${SAN_BIN:?}" "${PYTHON:?}"
CHECK="$SAN_BIN/check_fixture"
FAST=./check_fixture
TINY=test/fixtures/tiny
MODELS=test/fixtures/models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ ! -x "$FAST" ]; then
    echo "FAIL check_fixture_built: $FAST is missing (make check_fixture)"
    exit 1
fi

# agrees NAME PROGRAM DIR: every comparison of DIR's fixture passes (exit 0, no FAIL line).
agrees() {
    local name=$1 program=$2 dir=$3
    "$program" "$dir" "$dir/expected.safetensors" >"$tmp/out" 2>&1
    local rc=$?
    if [ "$rc" -eq 0 ] && ! grep -q 'FAIL' "$tmp/out" && grep -q '^check_fixture: PASS, [0-9]* comparisons, 0 failed$' "$tmp/out"; then
        local ours torch
        ours=$(sed -n 's/.* error \([^ ]*\)  torch fp32 .*  PASS$/\1/p' "$tmp/out" | sort -g | tail -1)
        torch=$(sed -n 's/.*  torch fp32 \([^ ]*\)  PASS$/\1/p' "$tmp/out" | sort -g | tail -1)
        echo "PASS $name ($(grep -c ' PASS$' "$tmp/out") comparisons against float64: worst error $ours, torch fp32's $torch)"
    else
        echo "FAIL $name: exit status $rc"
        grep -E 'FAIL|error' "$tmp/out" | head -5 | sed 's/^/  /'
    fi
}

# perturbed NAME DIR STEPS CHANGE...: a copy of DIR with the changes (test/perturb_fixture.py)
# fails within STEPS optimizer steps (exit status 2).
perturbed() {
    local name=$1 dir=$2 steps=$3
    shift 3
    "$PYTHON" test/perturb_fixture.py "$dir" "$tmp/$name" "$@" || {
        echo "FAIL $name: cannot make the perturbed copy"
        return
    }
    "$FAST" "$tmp/$name" "$tmp/$name/expected.safetensors" --max-steps "$steps" >"$tmp/out" 2>&1
    local rc=$?
    if [ "$rc" -eq 2 ]; then
        local worst
        worst=$(grep ' FAIL$' "$tmp/out" | sed 's/^  //; s/  */ /g; s/ torch fp32 [^ ]*//; s/ FAIL$//' |
            sed 's/.* error \([^ ]*\)$/\1 &/' | sort -g | tail -1 | cut -d' ' -f2-)
        echo "PASS $name ($(grep -c ' FAIL$' "$tmp/out") comparisons fail, worst: $worst)"
    else
        echo "FAIL $name: exit status $rc, wanted 2 (a comparison fails)"
        grep -E 'error' "$tmp/out" | head -3 | sed 's/^/  /'
    fi
    rm -rf "${tmp:?}/$name"
}

# disagrees NAME WANT DIR FIXTURE [options]: exit status 2, and the failing comparison is
# the line starting with WANT (and only that one).
disagrees() {
    local name=$1 want=$2
    shift 2
    "$CHECK" "$@" >"$tmp/out" 2>&1
    local rc=$?
    local failing
    failing=$(grep ' FAIL$' "$tmp/out" | sed 's/^  //')
    if [ "$rc" -eq 2 ] && [[ "$failing" == "$want"* ]] && [ "$(printf '%s\n' "$failing" | wc -l)" -eq 1 ]; then
        echo "PASS $name"
    else
        echo "FAIL $name: exit status $rc, failing: ${failing:-none}"
        echo "  wanted exit status 2 and one failing comparison: $want"
    fi
}

for name in mistral_window mistral_gqa llama; do
    agrees "check_fixture_$name" "$CHECK" "$TINY/$name"
done
for name in nf4 packed dropout accum_clip_warmup rslora_12x64 hidden1024_gqa; do
    agrees "check_fixture_$name" "$CHECK" "$MODELS/$name"
done
agrees check_fixture_mistral7b_slice "$FAST" "$MODELS/mistral7b_slice"

# One input changed. eps: Mistral's 1e-5 against Llama's 1e-6; theta and alpha by 1%.
EPS='config:rms_norm_eps*=0.1'
THETA='config:rope_parameters.rope_theta*=1.01'
ALPHA='meta:lora_alpha*=1.01'
for name in mistral7b_slice hidden1024_gqa rslora_12x64 nf4 packed dropout accum_clip_warmup; do
    perturbed "perturbed_${name}_rms_norm_eps" "$MODELS/$name" 1 "$EPS"
    perturbed "perturbed_${name}_rope_theta" "$MODELS/$name" 1 "$THETA"
    perturbed "perturbed_${name}_lora_alpha" "$MODELS/$name" 1 "$ALPHA"
    perturbed "perturbed_${name}_one_label" "$MODELS/$name" 1 label-bit
done
for name in mistral7b_slice hidden1024_gqa nf4 packed; do
    perturbed "perturbed_${name}_window_minus_1" "$MODELS/$name" 1 'config:sliding_window+=-1'
    perturbed "perturbed_${name}_window_plus_1" "$MODELS/$name" 1 'config:sliding_window+=1'
done
perturbed perturbed_rslora_12x64_plain_lora "$MODELS/rslora_12x64" 1 meta:use_rslora=false
perturbed perturbed_nf4_float32_weights "$MODELS/nf4" 1 meta:frozen_dtype=float32
perturbed perturbed_nf4_bitsandbytes_codes "$MODELS/nf4" 1 'tensor:bnb4bit.model.layers.1.mlp.up_proj.weight.crc32[0]+=1'
perturbed perturbed_packed_conversation_boundary "$MODELS/packed" 1 boundary
perturbed perturbed_dropout_mask_bit "$MODELS/dropout" 1 keep-bit
perturbed perturbed_accum_clip_warmup_warmup "$MODELS/accum_clip_warmup" 2 'meta:warmup_steps+=1'
perturbed perturbed_accum_clip_warmup_no_clipping "$MODELS/accum_clip_warmup" 6 'meta:max_grad_norm=0'

# Copies of the mistral_gqa fixture with one expected element changed, or a tensor or
# metadata missing.
M=$TINY/mistral_gqa
G=base_model.model.model.layers.1.mlp.down_proj.lora_B.weight.grad
variant() {  # variant NAME CHANGE...
    "$PYTHON" test/perturb_fixture.py "$M" "$tmp/$1" "${@:2}"
}
variant logit 'tensor:logits[largest]*=1.001'  # the largest of 1,536 logits off by 0.1%
variant gradient "tensor:$G[7]*=1.05"     # one gradient element off by 5%
variant adamw 'tensor:adamw_losses[3]*=1.001'  # the 4th step's loss off by 0.1%
variant no_gradient "drop:$G"
variant no_metadata meta-only:torch
variant bad_targets meta:target_modules=q_proj,lm_head
disagrees perturbed_logit_fails "step 1: logits " "$M" "$tmp/logit/expected.safetensors"
disagrees perturbed_gradient_fails "grad layers.1.mlp.down_proj.lora_B " "$M" "$tmp/gradient/expected.safetensors"
disagrees perturbed_adamw_loss_fails "step 4: loss " "$M" "$tmp/adamw/expected.safetensors"
"$CHECK" "$M" "$M/expected.safetensors" --tol 1e-7 >"$tmp/out" 2>&1
rc=$?
if [ "$rc" -eq 2 ] && grep -q '^check_fixture: FAIL, [0-9]* comparisons' "$tmp/out"; then
    echo "PASS tolerance_below_the_error_fails"
else
    echo "FAIL tolerance_below_the_error_fails: exit status $rc"
fi

expect_fail fixture_without_a_gradient "$tmp/no_gradient/expected.safetensors: tensor '${G}' is missing" \
    "$CHECK" "$M" "$tmp/no_gradient/expected.safetensors"
expect_fail fixture_without_metadata "$tmp/no_metadata/expected.safetensors: metadata \"frozen_weights\": missing" \
    "$CHECK" "$M" "$tmp/no_metadata/expected.safetensors"
expect_fail fixture_target_modules_unknown "$tmp/bad_targets/expected.safetensors: metadata \"target_modules\"" \
    "$CHECK" "$M" "$tmp/bad_targets/expected.safetensors"
expect_fail fixture_of_another_model "$TINY/mistral_window/expected.safetensors: tensor 'base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight.grad' has another dtype or shape (expected F32 [16, 4])" \
    "$CHECK" "$M" "$TINY/mistral_window/expected.safetensors"
expect_fail generated_model_without_config "$tmp/none/config.json: cannot open" \
    "$CHECK" "$tmp/none" "$MODELS/packed/expected.safetensors"
expect_fail fixture_not_there "$tmp/none.safetensors: cannot open" "$CHECK" "$M" "$tmp/none.safetensors"
expect_fail model_not_there "$tmp/none/config.json: cannot open" "$CHECK" "$tmp/none" "$M/expected.safetensors"
expect_fail missing_fixture_argument "MODEL_DIR and FIXTURE are required" "$CHECK" "$M"
expect_fail bad_tolerance "--tol needs a positive number" "$CHECK" "$M" "$M/expected.safetensors" --tol -1
expect_fail bad_max_steps "--max-steps needs a whole number" "$CHECK" "$M" "$M/expected.safetensors" --max-steps 0
