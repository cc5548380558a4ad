#!/usr/bin/env bash
# scripts/setup_debian.sh: installs the Debian packages that persona.c builds and tests with
# (README, "Set-up"; CI's .ci/run runs this first). Debian 12 or later, as root or through
# sudo; packages already installed are left alone.
#
#   build-essential      the C compiler and make
#   libpcre2-dev         PCRE2, Tekken's and byte-level BPE's pre-split regex
#   libcjson-dev         cJSON, every JSON file we read
#   zlib1g-dev           zlib: CRC32s, .jsonl.gz
#   python3-venv         the virtual environment of the Python reference helpers (make venv)
#   openmpi-bin, libopenmpi-dev   the multi-GPU path's test (NCCL stood in by MPI under mpirun)
#   strace               its fault injection kills the trainer at chosen system calls (test_run_dir.sh)
#   bc                   arithmetic on timings in the shell tests
#   clang, libclang-rt-dev, libomp-dev   libFuzzer and its sanitizers, OpenMP for clang (the fuzz targets)
# The CUDA toolkit (nvcc, cuBLAS, NCCL) is not a Debian package: without it `make` builds the
# CPU programs only and `make test` skips the nvcc build checks (README, "Tests").
set -euo pipefail
packages=(build-essential libpcre2-dev libcjson-dev zlib1g-dev python3-venv openmpi-bin libopenmpi-dev strace bc
          clang libclang-rt-dev libomp-dev)
need=()
for pkg in "${packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
    echo "setup: every package is installed"
    exit 0
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: run this as root, or install sudo" >&2; exit 1; }
    sudo=(sudo)
fi
echo "setup: installing ${need[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
