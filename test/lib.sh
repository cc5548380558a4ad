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
