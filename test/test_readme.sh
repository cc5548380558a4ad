#!/usr/bin/env bash
# test/test_readme.sh: README.md's lists against the tree, so that the README describes what
# exists: every test program and script (test/test_*) is in the test table (by name or by a
# glob there, e.g. `test/test_cuda_*.cpp`); every program the Makefile builds, every kernel
# header, every script in scripts/ and every source file of common/, tokenizer/, data/ and
# train/ is named (or matched by a glob such as persona_*.c); the packages the set-up names
# are exactly those scripts/setup_debian.sh installs; the "Not yet" line names no program
# that is built; every flag README.md and data/PERSONA.md give one of our programs is in
# that program's --help, and no command they quote runs a program that does not exist.
# The numbers in the prose are the tests' and benches' to check, not this.
# Each failure lists what is missing or wrong, file by file, so that whoever adds a file
# or a flag sees what to write where.
set -u
cd "$(dirname "$0")/.."
. test/lib.sh
bin=${SAN_BIN:-.}  # the programs whose --help is read (make test's sanitizer builds, else make's)

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
# the programs: the Makefile's C programs, its GPU programs (train/NAME.cu) and the kernel benches
programs="$(sed -n 's/^PROGRAM_MAINS *+*= *//p' Makefile | xargs -n1 basename | sed 's/\.c$//') $(sed -n 's/^GPU_PROGRAMS *= *//p' Makefile)
$(basename -s .cu kernels/bench/*.cu)"
check_named readme_names_every_program "program" $programs
check_named readme_names_every_kernel_header "kernel header" $(basename -a kernels/*.cuh kernels/bench/*.cuh)
check_named readme_names_every_script "script" $(find scripts -maxdepth 1 -type f -printf "%f\n")  # (not __pycache__/)
check_named readme_names_every_source_file "source file" $(cd common && ls *.c) $(cd tokenizer && ls *.c) $(cd data && ls *.c) \
    $(cd train && ls *.c *.cu *.cuh 2>/dev/null)

# the set-up: the packages README lists are the script's
script=$(sed -n '/^packages=(/,/)/p' scripts/setup_debian.sh | tr -d '()' | sed 's/packages=//' | tr ' ' '\n' | grep . | sort)
readme=$(sed -n '/setup_debian.sh` installs, where they are/,/its header/p' README.md | sed 's/.*where they are//; s/(its header.*//' |
    grep -o '`[a-z0-9.+-]*`' | tr -d '`' | sort)
if [ -n "$script" ] && [ "$script" = "$readme" ]; then echo "PASS readme_setup_packages_are_the_scripts"; else
    echo "FAIL readme_setup_packages_are_the_scripts"
    diff <(echo "$script") <(echo "$readme") | sed 's/^</  only in the script:/; s/^>/  only in README:/' | grep only
fi

# The opening (before the first section) names every kernel: kernels/NAME.cuh as NAME, with
# - or a space for _, in any case, or by what it computes where the name says less (matmul is
# the GEMM, comm the all-reduce); common.cuh and ptx.cuh hold no kernel.
opening=$(sed '/^## /,$d' README.md)
declare -A kernel_alias=([matmul]=GEMM [comm]=all-reduce)
unnamed=()
for h in kernels/*.cuh; do
    k=$(basename "$h" .cuh)
    case $k in common | ptx) continue ;; esac
    grep -qiE -- "${kernel_alias[$k]:-${k//_/[- ]}}" <<<"$opening" || unnamed+=("$k")
done
if [ ${#unnamed[@]} -eq 0 ]; then echo "PASS readme_opening_names_every_kernel"; else
    echo "FAIL readme_opening_names_every_kernel"; printf '  README'"'"'s opening does not name the kernel of kernels/%s.cuh\n' "${unnamed[@]}"; fi

# "Not yet: ..." names no program that exists
built=" $(echo $programs) "
stale=()
for w in $(grep '^Not yet:' README.md | grep -o '`[a-z_0-9]*`' | tr -d '`'); do
    [[ $built == *" $w "* ]] && stale+=("$w")
done
if [ ${#stale[@]} -eq 0 ]; then echo "PASS readme_not_yet_names_nothing_built"; else
    echo "FAIL readme_not_yet_names_nothing_built"; printf '  README says "Not yet" of %s, which is built\n' "${stale[@]}"; fi

# The flags the documents give our programs are theirs. From the command lines that run
# ./PROG (a line ending in \ goes on on the next; a # comment is left out) and from quoted
# commands in the prose (`PROG [COMMAND] --flag ...`): PROG is one of our programs, or one of
# persona's commands (quoted alone as `mix --out-dir`), or a command of the system; each
# --flag of ours is in `PROG [COMMAND] --help`.
run_help() {  # run_help PROG [COMMAND]: PROG's --help, from $bin or the repository root
    local p=$bin/$1
    [ -x "$p" ] || p=./$1
    [ -x "$p" ] || { echo "($1 is not built)"; return; }
    "$p" ${2:+"$2"} --help 2>&1
}
persona_commands=" $(run_help persona 2>/dev/null | awk '/^  [a-z]+  /{print $1}' | tr '\n' ' ') "
commands() {  # commands FILE: "PROG ARGS..." per command, with the file's name first
    awk -v f="$1" '/^ *\.\/[a-z_]/ || cont { line = cont ? line " " $0 : $0; cont = /\\$/
            if (!cont) { sub(/#.*/, "", line); sub(/^ *\.\//, "", line); print f "\t" line } }' "$1"
    grep -o '`[^`]*`' "$1" | tr -d '`' | grep -E '^(\./)?[a-z_0-9]+( [a-z]+)? --[a-z]' |
        sed 's|^\./||; s|^|'"$1"'\t|'
}
wrong=()
ncmd=0 nflag=0
declare -A help
while IFS=$'\t' read -r doc cmd; do
    read -r -a w <<<"$cmd"
    prog=${w[0]} sub=
    if [[ $persona_commands == *" $prog "* ]]; then sub=$prog prog=persona; fi
    [ "$prog" = persona ] && [ -z "$sub" ] && [[ $persona_commands == *" ${w[1]:-} "* ]] && sub=${w[1]}
    if [[ $built != *" $prog "* ]]; then
        command -v "$prog" >/dev/null 2>&1 || wrong+=("$doc: \`$cmd\` runs $prog, which is not a program here")
        continue
    fi
    key="$prog $sub"
    ncmd=$((ncmd + 1))
    [ -n "${help[$key]+x}" ] || help[$key]=$(run_help "$prog" "$sub")
    # (the flags after "but" are the ones a program does not take: `[every train_cpu option but --threads]`)
    for flag in $(sed 's/ but [^]]*//' <<<"$cmd" | grep -oE -- '(^| )--[a-z0-9][a-z0-9-]*' | tr -d ' '); do
        nflag=$((nflag + 1))
        grep -qE -- "(^|[^a-z0-9-])$flag([^a-z0-9-]|\$)" <<<"${help[$key]}" ||
            wrong+=("$doc: $flag is not in \`$key--help\` (\`$cmd\`)")
    done
done < <(commands README.md; commands data/PERSONA.md)
if [ ${#wrong[@]} -eq 0 ] && [ $nflag -gt 0 ]; then echo "PASS docs_flags_are_the_programs ($nflag flags in $ncmd commands)"; else
    echo "FAIL docs_flags_are_the_programs"; printf '  %s\n' "${wrong[@]}"; fi
