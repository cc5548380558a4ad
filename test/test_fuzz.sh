#!/usr/bin/env bash
# test/test_fuzz.sh: CI's short fuzzing run. Every fuzz target (test/fuzz/fuzz_NAME.c, one per
# parser) first replays test/fixtures/fuzz/NAME/ (inputs that once crashed it or broke a
# rule, each kept with its fix), then fuzzes for FUZZ_CI_SECONDS (default 5) from its seeds
# into a scratch corpus: no crash, no sanitizer report, no leak, no hang, every refusal one
# line. `make fuzz` is the long run (FUZZ_SECONDS per target, the corpus kept).
set -u
cd "$(dirname "$0")/.."
if ! command -v "${FUZZ_CC:-clang}" >/dev/null 2>&1; then
    echo "FAIL fuzz_clang: the fuzz targets need clang and libFuzzer (README's install line: clang libclang-rt-dev libomp-dev)"
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
names=()
for f in test/fuzz/fuzz_*.c; do names+=("$(basename "$f" .c)"); done
FUZZ_CORPUS=$tmp bash test/fuzz/run.sh "${FUZZ_CI_SECONDS:-5}" "${names[@]}"
