#!/usr/bin/env bash
# test/test_nccl_mpi.sh: the data-parallel path on 2 MPI ranks: test_cuda_allreduce
# (kernels/comm.cuh and the NCCL calls under it, with NCCL stood in by MPI,
# test/cuda_host/nccl.h) run by `mpirun -np 2`. Rank 0 prints the PASS/FAIL lines; a test
# fails if it failed on either rank. Needs Open MPI (apt-get install openmpi-bin
# libopenmpi-dev); without it this prints one FAIL line saying so.
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
exit "$rc"
