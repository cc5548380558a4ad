#!/usr/bin/env bash
# test/test_readme.sh: README.md's lists against the tree, so that the README describes what
# exists: every test program and script (test/test_*) is in the test table (by name or by a
# glob there, e.g. `test/test_cuda_*.cpp`); every program the Makefile builds, every kernel
# header, every script in scripts/ and every source file of common/, tokenizer/, data/ and
# train/ is named (or matched by a glob such as persona_*.c); the packages the set-up names
# are exactly those scripts/setup_debian.sh installs. The numbers in the prose are the
# tests' and benches' to check, not this.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh

# the backticked test/... names and globs of the test table's first column
patterns=$(grep '^| `test/' README.md | cut -d'|' -f2 | grep -o '`test/[^`]*`' | tr -d '`')
missing=()
for f in test/test_*.c test/test_*.cpp test/test_*.sh; do
    found=0
    for p in $patterns; do
        # shellcheck disable=SC2053
        [[ $f == $p ]] && { found=1; break; }
    done
    [ $found = 1 ] || missing+=("$f")
done
if [ ${#missing[@]} -eq 0 ]; then echo "PASS readme_test_table_lists_every_test"; else
    echo "FAIL readme_test_table_lists_every_test"; printf '  not in the test table: %s\n' "${missing[@]}"; fi

# names (with a glob anywhere in README matching being enough)
globs=$(grep -o '[A-Za-z0-9_./-]*\*[A-Za-z0-9_.*-]*' README.md | sort -u)
named() {  # named NAME: README has NAME, or a glob that matches it
    grep -qF -- "$1" README.md && return 0
    for g in $globs; do
        # shellcheck disable=SC2053
        [[ $1 == $g || $1 == $(basename "$g") ]] 2>/dev/null && return 0
    done
    return 1
}
check_named() {  # check_named CHECK_NAME WHAT NAME...
    local check=$1 what=$2 miss=()
    shift 2
    for n in "$@"; do named "$n" || miss+=("$n"); done
    if [ ${#miss[@]} -eq 0 ]; then echo "PASS $check"; else
        echo "FAIL $check"; printf "  $what not in README: %s\n" "${miss[@]}"; fi
}
programs=$(sed -n 's/^PROGRAM_MAINS *+*= *//p' Makefile | xargs -n1 basename | sed 's/\.c$//')
check_named readme_names_every_program "program" $programs train_gpu $(basename -s .cu kernels/bench/*.cu)
check_named readme_names_every_kernel_header "kernel header" $(basename -a kernels/*.cuh kernels/bench/*.cuh)
check_named readme_names_every_script "script" $(basename -a scripts/*)
check_named readme_names_every_source_file "source file" $(basename -a common/*.c tokenizer/*.c data/*.c train/*.c train/*.cu train/*.cuh)

# the set-up: the packages README lists are the script's
script=$(sed -n '/^packages=(/,/)/p' scripts/setup_debian.sh | tr -d '()' | sed 's/packages=//' | tr ' ' '\n' | grep . | sort)
readme=$(sed -n '/setup_debian.sh` installs, where they are/,/its header/p' README.md | sed 's/.*where they are//; s/(its header.*//' |
    grep -o '`[a-z0-9.+-]*`' | tr -d '`' | sort)
if [ -n "$script" ] && [ "$script" = "$readme" ]; then echo "PASS readme_setup_packages_are_the_scripts"; else
    echo "FAIL readme_setup_packages_are_the_scripts"
    diff <(echo "$script") <(echo "$readme") | sed 's/^</  only in the script:/; s/^>/  only in README:/' | grep only
fi
