#!/usr/bin/env bash
# test/test_nccl_mpi.sh: the data-parallel path on 2 MPI ranks: test_cuda_allreduce
# (kernels/comm.cuh and the NCCL calls under it, with NCCL stood in by MPI,
# test/cuda_host/nccl.h) run by `mpirun -np 2`. Rank 0 prints the PASS/FAIL lines; a test
# fails if it failed on either rank. Needs Open MPI (apt-get install openmpi-bin
# libopenmpi-dev); without it this prints one FAIL line saying so. Then a rank that stops
# answering (test_cuda_allreduce --stuck-rank-1): the job must end within 30 s, rank 0 naming
# the collective it gave up in.
#
# The sanitizer build runs with AddressSanitizer and UBSan on, but leak detection off:
# Open MPI's plugins are dlopened and closed again at MPI_Finalize, leaving allocations
# LeakSanitizer can attribute to no library, so no suppression can name them.
set -u
cd "$(dirname "$0")/.."
bin="${SAN_BIN:-$PWD/build/san}/test_cuda_allreduce"
if ! command -v mpirun >/dev/null 2>&1 || ! command -v mpicxx >/dev/null 2>&1; then
    echo "FAIL nccl_mpi_needs_open_mpi: mpirun/mpicxx not found (apt-get install openmpi-bin libopenmpi-dev)"
    exit 1
fi
if [ ! -x "$bin" ]; then
    echo "FAIL nccl_mpi_built: $bin is missing (make $(basename "$(dirname "$bin")")/test_cuda_allreduce)"
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Open MPI refuses to run as root without these; 2 ranks may exceed the cores (slots).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-exitcode=86}:detect_leaks=0"
# stdout (the PASS/FAIL lines) and stderr apart, so the ranks' messages cannot split a line
timeout 300 mpirun -np 2 --oversubscribe "$bin" >"$tmp/out" 2>"$tmp/err"
rc=$?
cat "$tmp/out"
sed 's/^/  (stderr) /' "$tmp/err"
if [ "$rc" -ne 0 ] && ! grep -q '^FAIL ' "$tmp/out"; then
    echo "FAIL nccl_mpi_run: mpirun -np 2 exited with status $rc"
fi
# a rank that stops answering without dying: rank 0's host collective gives up after its
# timeout (1 s here) and MPI_Abort ends the job, rank 1 included (it sleeps 60 s)
start=$(date +%s)
timeout 120 mpirun -np 2 --oversubscribe "$bin" --stuck-rank-1 >"$tmp/stuck.out" 2>"$tmp/stuck.err"
stuck_rc=$? took=$(( $(date +%s) - start ))
if [ $stuck_rc -ne 0 ] && [ $stuck_rc -ne 124 ] && [ $took -lt 30 ] && ! grep -q '^FAIL ' "$tmp/stuck.out" &&
    grep -q "^error: rank 0: comm_sum: the other ranks did not answer for 1 s (--comm-timeout): a rank is lost or stuck" \
        "$tmp/stuck.err"; then
    echo "PASS stuck_rank_ends_the_job_after_the_timeout (status $stuck_rc after ${took}s)"
else
    echo "FAIL stuck_rank_ends_the_job_after_the_timeout (status $stuck_rc after ${took}s)"
    sed 's/^/  /' "$tmp/stuck.out" "$tmp/stuck.err" | head -8
    rc=1
fi
exit "$rc"
