# drop_last_barrier.awk: a mutant of a kernel header, for the harness's self-tests
# (test/test_cuda_mutants.cpp): the header with the last `__syncthreads();` line of one
# kernel's body removed, wrapped in a namespace of its own so that it compiles next to
# other mutants of the same header. A #line directive keeps __FILE__ and the line numbers
# of the original, so the harness's reports point into it. Its own #include lines are
# blanked (the test includes what they bring first) and its include guard renamed.
#
#   awk -v kernel=NAME -v space=NAMESPACE -v file=PATH -f drop_last_barrier.awk PATH
#
# Exits with status 1, naming the kernel, when the kernel or a barrier in it is not found,
# so that an edit of the header that moves the barrier fails the build instead of
# quietly testing nothing.
BEGIN { n = 0; start = 0; stop = 0; last = 0; guard = "" }
{ line[++n] = $0 }
guard == "" && $1 == "#ifndef" { guard = $2 }
start == 0 && index($0, kernel "(") && (index($0, "__global__") || index(line[n - 1], "__global__")) { start = n }
start > 0 && stop == 0 && n > start && $0 ~ /^}/ { stop = n }
start > 0 && stop == 0 && $0 ~ /^[ \t]*__syncthreads\(\);/ { last = n }
END {
    if (!start || !stop || !last) {
        printf "drop_last_barrier.awk: no __syncthreads() line in the body of %s in %s\n", kernel, file > "/dev/stderr"
        exit 1
    }
    print "namespace " space " {"
    printf "#line 1 \"%s\"\n", file
    for (i = 1; i <= n; i++) {
        text = line[i]
        if (i == last || text ~ /^#include/) text = ""
        if (guard != "") gsub(guard, guard "_" space, text)
        print text
    }
    print "}  // namespace " space
}
