#!/usr/bin/env bash
# test/fuzz/run.sh SECONDS NAME...: runs each fuzz target build/fuzz/fuzz_NAME (or NAME given
# as fuzz_NAME) for SECONDS, one after the other, and prints one PASS or FAIL line per target
# (test/lib.sh's form) with what it did: executions, coverage (cov: edges, ft: features, as
# libFuzzer counts them) and corpus size.
#
# First each input in test/fixtures/fuzz/NAME/ (inputs that once failed, kept with their fix)
# is replayed; then the target fuzzes its corpus directory, FUZZ_CORPUS/NAME (default
# build/fuzz/corpus/NAME, kept between runs so that coverage accumulates), with the seeds
# (build/fuzz/seeds/NAME, scripts/fuzz_seeds.py) and the regression inputs as further corpora.
# A crash, a sanitizer report, a leak, a timeout (FUZZ_TIMEOUT seconds for one input,
# default 25) or memory over 2 GiB fails the target; libFuzzer saves the input as
# build/fuzz/crashes/NAME-crash-..., and the first lines of its report are printed.
set -u
cd "$(dirname "$0")/../.."
seconds=$1
shift
corpus_root=${FUZZ_CORPUS:-build/fuzz/corpus}
timeout=${FUZZ_TIMEOUT:-25}
# fuzz_conversation encodes with Mistral's v3 tokenizer
data=${TOKENIZER_DATA:-$(.venv/bin/python scripts/tokenizer_reference.py data-dir)}
export FUZZ_TOKENIZER="${FUZZ_TOKENIZER:-$data/mistral_instruct_tokenizer_240323.model.v3}"
mkdir -p build/fuzz/crashes
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
for t in "$@"; do
    name=${t#fuzz_}
    bin=build/fuzz/fuzz_$name
    regress=test/fixtures/fuzz/$name
    if [ ! -x "$bin" ]; then
        echo "FAIL fuzz_$name: $bin is not built (make fuzz-build; it needs clang)"
        status=1
        continue
    fi
    inputs=()
    [ -d "$regress" ] && inputs=("$regress"/*)
    if [ ${#inputs[@]} -gt 0 ] && ! "$bin" -timeout="$timeout" "${inputs[@]}" >"$log" 2>&1; then
        echo "FAIL fuzz_${name}_regressions: an input of $regress fails again"
        grep -E "ERROR|SUMMARY|Running: |abort|fuzz" "$log" | head -8 | sed 's/^/  /'
        status=1
        continue
    fi
    mkdir -p "$corpus_root/$name"
    dirs=("$corpus_root/$name" "build/fuzz/seeds/$name")
    [ -d "$regress" ] && dirs+=("$regress")
    start=$(date +%s)
    nice "$bin" -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="build/fuzz/crashes/$name-" "${dirs[@]}" >"$log" 2>&1
    rc=$?
    took=$(($(date +%s) - start))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
    what="${took}s, ${runs:-?} executions, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}"
    if [ $rc -eq 0 ]; then
        echo "PASS fuzz_$name ($what)"
    else
        echo "FAIL fuzz_$name ($what): exit status $rc"
        grep -E "ERROR:|SUMMARY:|^fuzz|Test unit written|#0 |#1 |#2 |#3 " "$log" | head -12 | sed 's/^/  /'
        status=1
    fi
done
exit $status
