#!/usr/bin/env bash
# test/test_cuda_build.sh: the CUDA code compiles with nvcc for sm_80 and sm_90, warnings as
# errors, and ptxas reports no local memory (no register spills, no stack frames): every
# program in kernels/bench/ and the GPU programs (train_gpu, chat_gpu, bench_decode_gpu),
# every kernel-only test file test/test_cuda_*_kernels.cu (the kernels the CUDA-on-CPU
# harness also runs, so what the harness checks is what ptxas accepts), and the 2-rank
# collective test against the real NCCL and Open MPI. The PTX must also contain the
# instructions the code exists for, so that a change that silently falls off them fails
# here: each wrapper of kernels/ptx.cuh, and the 16-byte packed loads and stores of the
# memory-bound kernels. Every kernel of the programs declares __launch_bounds__ (what makes
# the harness's launch check cover the register file too). Compiling is not running: this
# checks the build only (see README, "What is verified where").
#
# The build is the test: the Makefile's nvcc rules keep ptxas's report (build/cuda/NAME.ptxas)
# and the PTX (build/cuda/NAME/) of what `make` built, and this reads them; it compiles only
# what is not built yet (make), so after `make test`'s build it compiles nothing.
# Without nvcc (the CUDA toolkit is not a Debian package) there is nothing to check: one
# SKIP line says so, and the CUDA programs are not built (`make` says so too).
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
NVCC="${NVCC:-nvcc}"
if ! command -v "$NVCC" >/dev/null 2>&1; then
    echo "SKIP nvcc_build (nvcc is not on PATH: the CUDA programs are not built and their build is not checked; install NVIDIA's CUDA toolkit to check it)"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# nvcc_build NAME TARGET: make builds TARGET (nothing to do when it is up to date), leaving
# build/cuda/NAME.ptxas and build/cuda/NAME/; a build from before the Makefile kept them is
# made again.
nvcc_build() {
    local name=$1 target=$2 force=
    [ -s "build/cuda/$name.ptxas" ] && [ -d "build/cuda/$name" ] || force=-B
    if make -s $force "$target" >"$tmp/log" 2>&1 && [ -s "build/cuda/$name.ptxas" ]; then
        echo "PASS nvcc_build_${name}_sm80_sm90"
    else
        echo "FAIL nvcc_build_${name}_sm80_sm90"
        sed 's/^/  /' "$tmp/log" | head -20
        return 1
    fi
}

# no_local_memory NAME: ptxas reported on NAME (build/cuda/NAME.ptxas) for sm_80 and sm_90,
# and no kernel uses local memory: no spills, and no stack frame either (a register array
# that the compiler could not keep in registers, e.g. indexed in a loop it did not unroll,
# lives in local memory: slow, yet no spill). A program with no kernels of its own (a bench
# of a library call) has nothing to report.
no_local_memory() {
    local report=build/cuda/$1.ptxas
    grep -q "Compiling entry function" "$report" || return 0
    for arch in 80 90; do
        # each "Function properties" line belongs to the architecture being compiled
        local bad
        bad=$(awk -v want="sm_$arch" '
            /Compiling entry function/ { arch = $0; sub(/.* for .sm_/, "sm_", arch); sub(/.$/, "", arch) }
            arch == want && /[1-9][0-9]* bytes (stack frame|spill)/ { print prev; print }
            { prev = $0 }' "$report")
        if grep -q "for 'sm_$arch'" "$report" && [ -z "$bad" ]; then
            echo "PASS ptxas_${1}_sm${arch}_no_local_memory"
        else
            echo "FAIL ptxas_${1}_sm${arch}_no_local_memory"
            if [ -n "$bad" ]; then printf '%s\n' "$bad" | head -20 | sed 's/^/  /'
            else echo "  no ptxas report for sm_$arch in $report (built with another GENCODE? make -B)"; fi
        fi
    done
}

# sm_90_ptx NAME SRC: $tmp/NAME.ptx, the sm_90 PTX nvcc made of SRC (build/cuda/BASE/, BASE
# the name of SRC without .cu), or a FAIL line and status 1.
sm_90_ptx() {
    local base
    base=$(basename "$2" .cu)
    if ! cat "build/cuda/$base"/*.compute_90.ptx >"$tmp/$1.ptx" 2>/dev/null; then
        echo "FAIL ptx_${1}"
        echo "  no sm_90 PTX of $2 in build/cuda/$base/"
        return 1
    fi
}

# ptx_contains NAME SRC INSTRUCTION...: the sm_90 PTX of SRC has each instruction.
ptx_contains() {
    local name=$1 src=$2
    shift 2
    sm_90_ptx "$name" "$src" || return
    local missing=()
    for insn in "$@"; do grep -qF -- "$insn" "$tmp/$name.ptx" || missing+=("$insn"); done
    if [ ${#missing[@]} -eq 0 ]; then echo "PASS ptx_${name}"; else
        echo "FAIL ptx_${name}"; printf '  missing from the PTX: %s\n' "${missing[@]}"; fi
}

# ptx_kernels_lack NAME SRC KERNELS INSTRUCTION...: no kernel of the sm_90 PTX of SRC whose
# (mangled) name contains one of KERNELS (a space-separated list) has any of the
# instructions (substrings of a PTX line), and each of KERNELS names at least one kernel.
ptx_kernels_lack() {
    local name=$1 src=$2 kernels=$3
    shift 3
    sm_90_ptx "$name" "$src" || return
    local found
    found=$(awk -v kernels="$kernels" -v insns="$(printf '%s\n' "$@")" '
        BEGIN { nk = split(kernels, k, " "); ni = split(insns, bad, "\n") }
        /^[.a-z ]*\.(entry|func) / {
            fn = ""
            for (i = 1; i <= nk; i++) if (index($0, k[i])) { fn = k[i]; seen[fn] = 1 }
            next
        }
        fn != "" { for (i = 1; i <= ni; i++) if (bad[i] != "" && index($0, bad[i])) print fn ":" $0 }
        END { for (i = 1; i <= nk; i++) if (!seen[k[i]]) print k[i] ": no such kernel in the PTX" }
    ' "$tmp/$name.ptx")
    if [ -z "$found" ]; then echo "PASS ptx_${name}"; else
        echo "FAIL ptx_${name}"; printf '%s\n' "$found" | head -10 | sed 's/^/  /'; fi
}

# every_kernel_bounded NAME SRC: every kernel of the sm_90 PTX of SRC declares its
# __launch_bounds__ (.maxntid). ptxas then keeps registers x threads within the register
# file for any block up to that size, and the harness refuses bigger blocks at launch
# (test/cuda_host/README.md), so no launch the harness allows can fail for registers.
every_kernel_bounded() {
    sm_90_ptx "$1" "$2" || return
    local unbounded
    unbounded=$(awk '
        /^[.a-z ]*\.entry / { fn = $0; sub(/.*\.entry[ \t]+/, "", fn); sub(/\(.*/, "", fn); bounded = 0; next }
        fn != "" && /\.maxntid/ { bounded = 1 }
        fn != "" && /^[ \t]*\{/ { if (!bounded) print fn; fn = "" }
    ' "$tmp/$1.ptx")
    if [ -z "$unbounded" ]; then echo "PASS ptx_${1}_kernels_have_launch_bounds"; else
        echo "FAIL ptx_${1}_kernels_have_launch_bounds"; printf '  no __launch_bounds__: %s\n' $unbounded | head -10; fi
}

for src in kernels/bench/*.cu; do
    name=$(basename "$src" .cu)
    nvcc_build "$name" "$name" && { no_local_memory "$name"; every_kernel_bounded "$name" "$src"; }
done
# the GPU programs: train_gpu, the trainer, chat_gpu and bench_decode_gpu (their kernels come
# in through train/model_gpu.cuh and train/decode_gpu.cuh; the harness runs the same sources
# in test_train_gpu.sh and test_chat_gpu.sh); bench_decode_gpu's kernels are chat_gpu's
for name in train_gpu chat_gpu bench_decode_gpu; do
    nvcc_build "$name" "$name" && { [ "$name" = bench_decode_gpu ] || no_local_memory "$name"; }
done
# with Open MPI and NCCL installed (as here), train_gpu is built for mpirun: kernels/comm.cuh
# with USE_MPI, linked with NCCL and MPI
if command -v mpicxx >/dev/null 2>&1; then
    if ldd train_gpu 2>/dev/null | grep -q libnccl && ldd train_gpu | grep -q libmpi; then
        echo "PASS train_gpu_built_for_mpirun"
    else echo "FAIL train_gpu_built_for_mpirun: not linked with NCCL and MPI"; fi
fi
# kernels/comm.cuh against the real NCCL (shipped with the toolkit) and Open MPI: the 2-rank
# collective test built by nvcc (the harness runs the same source with NCCL stood in by MPI)
if ! command -v mpicxx >/dev/null 2>&1; then
    echo "FAIL nvcc_build_test_cuda_allreduce: needs Open MPI's mpicxx (apt-get install openmpi-bin libopenmpi-dev)"
else
    nvcc_build test_cuda_allreduce build/gpu/test_cuda_allreduce
fi
for src in test/test_cuda_*_kernels.cu; do
    name=$(basename "$src" .cu)
    nvcc_build "$name" "build/cuda/$name.o" && no_local_memory "$name"
done

ptx_contains ptx_cuh_wrappers test/test_cuda_ptx_kernels.cu \
    "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" \
    "ldmatrix.sync.aligned.m8n8.x1.shared.b16" "ldmatrix.sync.aligned.m8n8.x2.shared.b16" \
    "ldmatrix.sync.aligned.m8n8.x4.shared.b16" "ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16" \
    "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16" "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16" \
    "cp.async.ca.shared.global" "cp.async.cg.shared.global" "cp.async.commit_group" \
    "cp.async.wait_group 0" "cp.async.wait_group 1"
ptx_contains rmsnorm_packed_loads kernels/bench/rmsnorm.cu "ld.global.v4.u32" "st.global.v4.u32"
ptx_contains cross_entropy_packed_copies kernels/bench/cross_entropy.cu "ld.global.v4.u32" "st.global.v4.u32"
ptx_contains adamw_packed_loads kernels/bench/adamw.cu "ld.global.v4.f32" "st.global.v4.f32"
# AdamW's error bound (kernels/adamw.cuh) assumes sqrtf and '/' correctly rounded, as on the
# CPU: no approximate instruction, no flush of denormals (FMA contraction is in the bound).
ptx_kernels_lack adamw_ieee_arithmetic kernels/bench/adamw.cu adamw_kernel ".approx" ".ftz"
ptx_contains embedding_packed_loads kernels/bench/embedding.cu "ld.global.v4.u32" "st.global.v4.u32"
ptx_contains swiglu_packed_loads kernels/bench/swiglu.cu "ld.global.v4.u32" "st.global.v4.u32"
ptx_contains rope_packed_loads kernels/bench/rope.cu "ld.global.v4.u32" "st.global.v4.u32"
# NF4 dequantization: 16-byte loads of 32 codes, the warp's word exchange (shuffles) and
# 16-byte stores of 8 bf16; the double-quantized absmax code·absmax2 + offset rounded twice
# as in train/nf4.c, not fused into an FMA (the harness cannot see a fusion; this can)
ptx_contains nf4_packed_loads kernels/bench/nf4.cu "ld.global.v4.u32" "st.global.v4.u32" "shfl.sync.idx.b32" \
    "mul.rn.f32" "add.rn.f32"
# NF4 quantization and dequantization are bit-exact with train/nf4.c on the GPU too
# (kernels/bench/nf4.cu checks the bits): no fused multiply-add (nvcc contracts a·b + c
# unless written with __fmul_rn/__fadd_rn, whose PTX .rn forms are never fused), no
# approximate division, square root or exponential, no flush of denormals (the absmax
# clamp 1e-38 is one). The harness, compiled by the host compiler, cannot see any of these.
# (ptxas could still fuse a plain mul.f32 with a plain add.f32 that uses its result; these
# kernels have no such pair, read off their PTX by hand: this check does not automate it.)
ptx_kernels_lack nf4_bit_exact_kernels kernels/bench/nf4.cu \
    "nf4_quantize_blocks_kernel nf4_absmax_partial_kernel nf4_absmax_mean_kernel nf4_quantize_absmax_kernel nf4_dequantize_kernel" \
    "fma." ".approx" ".ftz"
# decode attention: its tiles copied with cp.async; the split combine and the warp merge in a
# fixed order, no atomics (the same bits on every run)
ptx_contains attention_decode_async_copies kernels/bench/attention_decode.cu "cp.async.cg.shared.global" \
    "cp.async.wait_group 0"
ptx_kernels_lack attention_decode_no_atomics kernels/bench/attention_decode.cu \
    "attention_decode_kernel attention_decode_combine_kernel" $'\tatom.' $'\tred.'
ptx_contains attention_tensor_cores kernels/bench/attention.cu \
    "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" "ldmatrix.sync.aligned.m8n8.x4.shared.b16" \
    "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16" "cp.async.cg.shared.global" "cp.async.wait_group 1"
# The small-M NF4 product: tensor cores, 16-byte code (and X) loads, the byte table's 8-byte
# shared loads, NF4·absmax rounded on its own (mul.rn, no FMA) so that its bf16 weights are
# nf4_dequantize's bits; no atomics (the split-K sum is a second kernel, in order).
ptx_contains nf4_matmul_tensor_cores kernels/bench/nf4_matmul.cu \
    "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" "ld.global.v4.u32" "ld.shared.v2.f32" "mul.rn.f32"
ptx_kernels_lack nf4_matmul_ieee_no_atomics kernels/bench/nf4_matmul.cu "nf4_matmul_kernel nf4_matmul_reduce_kernel" \
    "fma.rn.f32" ".approx" ".ftz" "atom." "red.global."
# LoRA: tensor cores, ldmatrix (plain and transposed), cp.async double buffering, 16-byte
# read-modify-write of Y and dX, the cast's float4 loads; and no atomics anywhere (the
# split reductions are deterministic by construction).
ptx_contains lora_tensor_cores kernels/bench/lora.cu \
    "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" "ldmatrix.sync.aligned.m8n8.x4.shared.b16" \
    "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16" "cp.async.cg.shared.global" "cp.async.wait_group 1" \
    "ld.global.v4.u32" "st.global.v4.u32" "ld.global.v4.f32"
ptx_kernels_lack lora_no_atomics kernels/bench/lora.cu \
    "lora_down_kernel lora_up_kernel lora_g_kernel lora_db_kernel lora_da_kernel lora_dx_kernel lora_reduce_kernel lora_cast_kernel" \
    "atom." "red.global." "red.shared."
