# scripts/out_dir.sh: the output directory of the quick-start scripts (sourced by them), so
# that a script never deletes what it did not make. A directory a quick-start script made
# holds the marker file .made-by-quickstart.
#
#   out_dir ARG     sets OUT to ARG, made absolute (relative to where the script was called),
#                   and checks it: it may be new, an empty directory, or one a quick-start
#                   script made; anything else is refused (one line on stderr, status 1).
#   out_dir_make    after out_dir: our own earlier OUT is replaced; a new or empty one is
#                   used as it is. OUT then holds the marker.
OUT_MARK=.made-by-quickstart

out_dir() {
    case $1 in /*) OUT=$1 ;; *) OUT=$PWD/$1 ;; esac
    if [ -e "$OUT" ] && [ ! -f "$OUT/$OUT_MARK" ] && [ -n "$(ls -A "$OUT" 2>/dev/null || echo file)" ]; then
        echo "error: $OUT exists and this script did not make it; give a new directory (nothing was deleted)" >&2
        return 1
    fi
}

out_dir_make() {
    if [ -f "$OUT/$OUT_MARK" ]; then rm -rf "$OUT"; fi  # our own earlier output (out_dir said so)
    mkdir -p "$OUT"
    touch "$OUT/$OUT_MARK"
}
