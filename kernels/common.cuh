/*
 * common.cuh: what every CUDA file of persona.c shares.
 *
 * - cuda_check(call): every CUDA runtime call is checked; a failure names the call, the
 *   file and the line, and exits with status 2 (a runtime failure, DESIGN.md §8).
 * - LAUNCH(kernel, grid, block, smem, stream, args...): the one way kernels are launched,
 *   so that the CUDA-on-CPU test harness can run the same source by redefining it.
 * - CEIL_DIV for grid sizes.
 */
#ifndef PERSONA_COMMON_CUH
#define PERSONA_COMMON_CUH

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

static inline void cuda_check_at(cudaError_t e, const char *call, const char *file, int line) {
    if (e == cudaSuccess) return;
    fprintf(stderr, "error: %s:%d: %s failed: %s (%s)\n", file, line, call, cudaGetErrorString(e),
            cudaGetErrorName(e));
    exit(2);
}
#define cuda_check(call) cuda_check_at((call), #call, __FILE__, __LINE__)

#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

#define LAUNCH(kernel, grid, block, smem, stream, ...)                         \
    do {                                                                       \
        kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__);            \
        cuda_check_at(cudaGetLastError(), "launch of " #kernel, __FILE__, __LINE__); \
    } while (0)

#endif
