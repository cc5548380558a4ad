#!/usr/bin/env bash
# test/test_cuda_build.sh: the CUDA programs compile with nvcc for sm_80 and sm_90, warnings
# as errors, and ptxas reports no register spills. Compiling is not running: this checks
# the build only (see README, "What is verified where").
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
if ! command -v "${NVCC:-nvcc}" >/dev/null 2>&1; then
    echo "FAIL nvcc_on_path: nvcc is required to build the CUDA programs"
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for src in kernels/bench/*.cu; do
    name=$(basename "$src" .cu)
    if make -s -B "$name" >"$tmp/log" 2>&1; then echo "PASS nvcc_build_${name}_sm80_sm90"; else
        echo "FAIL nvcc_build_${name}_sm80_sm90"; sed 's/^/  /' "$tmp/log" | head -20; continue; fi
    for arch in 80 90; do
        "${NVCC:-nvcc}" -std=c++17 -O3 -cubin -arch=sm_$arch -Xptxas -v -Werror all-warnings \
            -o "$tmp/$name.cubin" "$src" >"$tmp/ptxas" 2>&1
        if grep -q "for 'sm_$arch'" "$tmp/ptxas" && ! grep -E "[1-9][0-9]* bytes spill (stores|loads)" "$tmp/ptxas" >/dev/null; then
            echo "PASS ptxas_${name}_sm${arch}_no_spills"
        else
            echo "FAIL ptxas_${name}_sm${arch}_no_spills"
            sed 's/^/  /' "$tmp/ptxas" | head -20
        fi
    done
done
