#!/usr/bin/env bash
# test/test_check_fixture.sh: the CPU model against transformers + PEFT + torch through
# ./check_fixture (the sanitizer build), on every committed tiny model.
#
#   agreement     test/fixtures/tiny/NAME/ (scripts/model_fixtures.py: torch 2.15.0,
#                 transformers 5.24.0, peft 0.21.2): logits, loss, all 28 LoRA gradients and
#                 the losses of 10 AdamW steps within 1e-4 relative (fp32 vs fp32; measured
#                 ~2e-6), for a Mistral with a sliding window shorter than the sequence, a
#                 Mistral with GQA and an explicit head_dim, and a Llama;
#   disagreement  a copy of a fixture with one element changed (a logit; a LoRA gradient;
#                 one AdamW loss) must FAIL that comparison with exit status 2, and a
#                 tolerance below the measured error must FAIL too: the program can fail;
#   bad input     a fixture without a tensor it needs, without its metadata, or for another
#                 model: one line naming the file and the tensor or field, exit status 1.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
: "${SAN_BIN:?}" "${PYTHON:?}"
CHECK="$SAN_BIN/check_fixture"
FX=test/fixtures/tiny
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# agrees NAME MODEL FIXTURE [options]: every comparison passes (exit 0, no FAIL line).
agrees() {
    local name=$1
    shift
    "$CHECK" "$@" >"$tmp/out" 2>&1
    local rc=$?
    if [ "$rc" -eq 0 ] && ! grep -q 'FAIL' "$tmp/out" && grep -q '^check_fixture: PASS, 40 comparisons, 0 failed$' "$tmp/out"; then
        echo "PASS $name ($(grep -c ' PASS$' "$tmp/out") comparisons, worst error $(sed -n 's/.* error \([^ ]*\)  PASS$/\1/p' "$tmp/out" | sort -g | tail -1))"
    else
        echo "FAIL $name: exit status $rc"
        grep -E 'FAIL|error' "$tmp/out" | head -5 | sed 's/^/  /'
    fi
}

# disagrees NAME WANT MODEL FIXTURE [options]: exit status 2, and the failing comparison is
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
    agrees "check_fixture_$name" "$FX/$name" "$FX/$name/expected.safetensors"
done

# Copies of the mistral_gqa fixture with one thing changed.
"$PYTHON" - "$FX/mistral_gqa/expected.safetensors" "$tmp" <<'PY'
import sys
from safetensors import safe_open
from safetensors.numpy import save_file
src, out = sys.argv[1:]
with safe_open(src, "np") as f:
    meta = f.metadata()
    t = {k: f.get_tensor(k) for k in f.keys()}

def variant(name, key=None, index=None, factor=1.0, drop=None, metadata=meta):
    v = {k: x.copy() for k, x in t.items() if k != drop}
    if key:
        v[key].reshape(-1)[index] *= factor
    save_file(v, f"{out}/{name}.safetensors", metadata=metadata)

G = "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight.grad"
variant("logit", "logits", 100, 1.01)      # one logit of 1,536 off by 1%
variant("gradient", G, 7, 1.05)            # one gradient element off by 5%
variant("adamw", "adamw_losses", 6, 1.001)  # the 7th step's loss off by 0.1%
variant("no_gradient", drop=G)
variant("no_metadata", metadata={"torch": meta["torch"]})
variant("bad_targets", metadata={**meta, "target_modules": "q_proj,lm_head"})
PY
M=$FX/mistral_gqa
G=base_model.model.model.layers.1.mlp.down_proj.lora_B.weight.grad
disagrees perturbed_logit_fails "logits " "$M" "$tmp/logit.safetensors"
disagrees perturbed_gradient_fails "grad layers.1.mlp.down_proj.lora_B " "$M" "$tmp/gradient.safetensors"
disagrees perturbed_adamw_loss_fails "AdamW: loss before step 7 " "$M" "$tmp/adamw.safetensors"
"$CHECK" "$M" "$M/expected.safetensors" --tol 1e-7 >"$tmp/out" 2>&1
rc=$?
if [ "$rc" -eq 2 ] && grep -q '^check_fixture: FAIL, 40 comparisons' "$tmp/out"; then
    echo "PASS tolerance_below_the_error_fails"
else
    echo "FAIL tolerance_below_the_error_fails: exit status $rc"
fi

expect_fail fixture_without_a_gradient "$tmp/no_gradient.safetensors: tensor '${G}' is missing" \
    "$CHECK" "$M" "$tmp/no_gradient.safetensors"
expect_fail fixture_without_metadata "$tmp/no_metadata.safetensors: metadata \"lora_r\": missing" \
    "$CHECK" "$M" "$tmp/no_metadata.safetensors"
expect_fail fixture_target_modules_unknown "$tmp/bad_targets.safetensors: metadata \"target_modules\"" \
    "$CHECK" "$M" "$tmp/bad_targets.safetensors"
expect_fail fixture_of_another_model "$FX/mistral_window/expected.safetensors: tensor 'base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight' is not F32 [16, 4]" \
    "$CHECK" "$FX/mistral_gqa" "$FX/mistral_window/expected.safetensors"
expect_fail fixture_not_there "$tmp/none.safetensors: cannot open" "$CHECK" "$M" "$tmp/none.safetensors"
expect_fail model_not_there "$tmp/none/config.json: cannot open" "$CHECK" "$tmp/none" "$M/expected.safetensors"
expect_fail missing_fixture_argument "MODEL_DIR and FIXTURE are required" "$CHECK" "$M"
expect_fail bad_tolerance "--tol needs a positive number" "$CHECK" "$M" "$M/expected.safetensors" --tol -1
