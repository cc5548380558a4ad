# test/lib.sh: helpers for the shell tests (sourced). Each check prints one
# `PASS name` or `FAIL name` line; test/run.sh counts them.

# same_output NAME FILE_A FILE_B: passes when the two files are byte-identical,
# otherwise prints where they first differ.
same_output() {
    if cmp -s "$2" "$3"; then
        echo "PASS $1"
    else
        echo "FAIL $1"
        cmp "$2" "$3" 2>&1 | head -1 | sed 's/^/  /'
        diff <(tr ' ' '\n' <"$2") <(tr ' ' '\n' <"$3") 2>/dev/null | head -6 | sed 's/^/  /'
    fi
}

# expect_fail NAME EXPECTED_SUBSTRING CMD...: passes when CMD exits with status 1 and its
# stderr contains the expected text (a clear error, not a crash: a sanitizer report or a
# signal gives another status).
expect_fail() {
    local name=$1 want=$2
    shift 2
    local err rc
    err=$("$@" 2>&1 >/dev/null)
    rc=$?
    if [ "$rc" -eq 1 ] && [[ "$err" == *"$want"* ]] && [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ]; then
        echo "PASS $name"
    else
        echo "FAIL $name"
        echo "  exit status $rc, stderr: $(printf '%s' "$err" | head -3)"
        echo "  wanted exit status 1 and one line containing: $want"
    fi
}

# passes NAME CMD...: passes when CMD succeeds; otherwise prints the start of its output.
passes() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "PASS $name"
    else
        echo "FAIL $name"
        printf '%s\n' "$out" | head -5 | sed 's/^/  /'
    fi
}

# tiny_run_setup: for the trainer tests, $tmp (removed at exit) holding a one-layer random
# model ($tmp/model, Mistral v3's vocabulary) and the fixture conversations as shards
# ($tmp/shards/{train,val}-conversations.bin) made with Mistral's v3 tokenizer ($TOK), and
# TINY_ARGS, the train_cpu flags for them. Needs SAN_BIN and TOKENIZER_DATA.
tiny_run_setup() {
    : "${SAN_BIN:?}" "${TOKENIZER_DATA:?}"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    TOK="$TOKENIZER_DATA/mistral_instruct_tokenizer_240323.model.v3"
    "$SAN_BIN/init_model" --out "$tmp/model" --vocab 32768 --hidden 16 --intermediate 32 --layers 1 --heads 2 \
        --kv-heads 1 --dtype f32 >/dev/null &&
        "$SAN_BIN/prep" --tokenizer "$TOK" --out "$tmp/shards" --val-fraction 0.2 test/fixtures/conversations.jsonl \
            >/dev/null 2>&1 || { echo "FAIL tiny_run_setup"; exit 1; }
    TINY_ARGS=(--model "$tmp/model" --train "$tmp/shards/train-conversations.bin" --val "$tmp/shards/val-conversations.bin"
               --tokenizer "$TOK" --seq-len 32 --batch 1 --lora-r 2 --threads 1)
}

# strip_timing FILE: a log.jsonl without its one measured field, for byte comparisons.
strip_timing() { sed 's/, "tokens_per_s": [0-9.e+-]*//; s/, "tokens_per_s": null//' "$1"; }

# no_temporaries NAME DIR: passes when nothing named *.tmp.* is left under DIR.
no_temporaries() {
    local left
    left=$(find "$2" -name '*.tmp.*' 2>/dev/null)
    if [ -z "$left" ]; then echo "PASS $1"; else echo "FAIL $1"; printf '  left: %s\n' $left; fi
}

# same_run NAME REF DIR: passes when run directory DIR holds exactly what REF holds (the log
# without its timing field) and no temporary file.
same_run() {
    local f ok=1
    cmp -s <(strip_timing "$2/log.jsonl") <(strip_timing "$3/log.jsonl") || { ok=0; echo "  log.jsonl differs"; }
    for f in samples.jsonl checkpoint.safetensors adapter/adapter_model.safetensors adapter/adapter_config.json DONE; do
        cmp -s "$2/$f" "$3/$f" || { ok=0; echo "  $f differs"; }
    done
    [ -z "$(find "$3" -name '*.tmp.*')" ] || { ok=0; echo "  temporaries left: $(find "$3" -name '*.tmp.*')"; }
    [ $ok = 1 ] && echo "PASS $1" || echo "FAIL $1"
}

# stop_when SIGNAL FILE PATTERN OUT CMD...: runs CMD in the background (its stdout and stderr
# into OUT), sends it SIGNAL once FILE holds a line matching PATTERN (or after 24 s), waits
# for it; sets rc (its exit status) and took (seconds from the signal to its end).
stop_when() {
    local sig=$1 file=$2 pattern=$3 out=$4 pid start
    shift 4
    "$@" >"$out" 2>&1 &
    pid=$!
    for _ in $(seq 1 1200); do grep -q "$pattern" "$file" 2>/dev/null && break; sleep 0.02; done
    start=$(date +%s.%N)
    kill -"$sig" "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rc=$?
    took=$(echo "$(date +%s.%N) - $start" | bc)
}

# Processes, read from /proc (so that the tests need no procps: a minimal Debian has none,
# and a missing pgrep or ps would make a check about processes pass without looking).
# proc_state PID: its state letter (R, S, Z, ...), nothing when there is no such process.
proc_state() {
    local line
    { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 0
    line=${line##*) }  # after the command name, which may hold spaces and parentheses
    echo "${line%% *}"
}

# proc_children PID: the pids of PID's children.
proc_children() {
    local parent=$1 f line
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        line=${line##*) }
        set -- $line
        [ "$2" = "$parent" ] && { f=${f#/proc/}; echo "${f%/stat}"; }
    done
    return 0
}

# proc_with_arg TEXT: the pids of the processes whose command line holds TEXT.
proc_with_arg() {
    local f
    for f in /proc/[0-9]*/cmdline; do
        tr '\0' ' ' 2>/dev/null <"$f" | grep -qF -- "$1" && { f=${f#/proc/}; echo "${f%/cmdline}"; }
    done
    return 0
}
