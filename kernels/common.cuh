/*
 * common.cuh: what every CUDA file of persona.c shares.
 *
 * - cuda_check(call): every CUDA runtime call is checked; a failure names the call, the
 *   file and the line, and exits with status 2 (a runtime failure, DESIGN.md §8), through
 *   check_failed, which the checks of other libraries' calls share.
 * - LAUNCH(kernel, grid, block, smem, stream, args...): the one way kernels are launched.
 * - DYNAMIC_SHARED(T, name): declares `T *name`, the block's dynamic shared memory (the
 *   launch's smem bytes), 16-byte aligned; the one way kernels get dynamic shared memory.
 * - UNROLL: nvcc's `#pragma unroll`, for loops whose arrays must stay in registers (ptxas
 *   puts an array indexed by a loop counter in local memory unless the loop is unrolled);
 *   the harness's host compiler has no such pragma and needs none.
 * - CEIL_DIV for grid sizes; warp_sum and block_sum, the reductions kernels share.
 * - pack_bf16x2(lo, hi): two floats rounded to bf16 in one 32-bit word, lo in the low half
 *   (the lower address, and the lower index of an mma fragment pair).
 * - device_attribute(a): an attribute of the current device; bf16_peak(): its dense BF16
 *   tensor-core peak in FLOP/s, SMs x SM clock x FLOPs per clock per SM (4096 on sm_90,
 *   2048 on sm_80; reference/gpu-targets-and-emulation.md §1.1), 0 where the FLOPs per
 *   clock are not tabulated: the denominator of the benches' "% of BF16 peak" and of
 *   train_gpu's MFU.
 * - Bf16Pack<V>: V consecutive bf16 moved as one aligned load or store (V = 8: 16 bytes, the
 *   widest a thread can move at once, which memory-bound kernels need to reach the DRAM
 *   peak); aligned16(p) says whether p may be accessed in such packs.
 *
 * The same source compiles under nvcc and under the CUDA-on-CPU test harness
 * (test/cuda_host/), whose <cuda_runtime.h> defines CUDA_HOST_HARNESS. LAUNCH and
 * DYNAMIC_SHARED are the two places that differ: under the harness a launch runs the grid
 * on CPU fibers, and dynamic shared memory is a buffer the harness allocates per launch.
 */
#ifndef PERSONA_COMMON_CUH
#define PERSONA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// The message and exit of every failed check (cuda_check here, cublas_check in matmul.cuh,
// nccl_check and mpi_check in comm.cuh): what failed, the library's description and the
// status's name where the library has one (NULL: none).
static inline void check_failed(const char *call, const char *file, int line, const char *message, const char *name) {
    if (name)
        fprintf(stderr, "error: %s:%d: %s failed: %s (%s)\n", file, line, call, message, name);
    else
        fprintf(stderr, "error: %s:%d: %s failed: %s\n", file, line, call, message);
    exit(2);
}

static inline void cuda_check_at(cudaError_t e, const char *call, const char *file, int line) {
    if (e != cudaSuccess) check_failed(call, file, line, cudaGetErrorString(e), cudaGetErrorName(e));
}
#define cuda_check(call) cuda_check_at((call), #call, __FILE__, __LINE__)

#ifdef CUDA_HOST_HARNESS
#define UNROLL
#else
#define UNROLL _Pragma("unroll")
#endif

#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

#ifdef CUDA_HOST_HARNESS
#define LAUNCH(kernel, grid, block, smem, stream, ...)                                             \
    do {                                                                                           \
        cuda_host::launch(#kernel, kernel, dim3(grid), dim3(block), (smem), (stream), __VA_ARGS__); \
        cuda_check_at(cudaGetLastError(), "launch of " #kernel, __FILE__, __LINE__);               \
    } while (0)
#define DYNAMIC_SHARED(T, name) T *name = (T *)cuda_host::dynamic_shared()
#else
#define LAUNCH(kernel, grid, block, smem, stream, ...)                         \
    do {                                                                       \
        kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__);            \
        cuda_check_at(cudaGetLastError(), "launch of " #kernel, __FILE__, __LINE__); \
    } while (0)
#define DYNAMIC_SHARED(T, name)                                          \
    extern __shared__ __align__(16) unsigned char name##_dynamic_shared_[]; \
    T *name = (T *)name##_dynamic_shared_
#endif

static inline int device_attribute(cudaDeviceAttr a) {
    int dev = 0, v = 0;
    cuda_check(cudaGetDevice(&dev));
    cuda_check(cudaDeviceGetAttribute(&v, a, dev));
    return v;
}

static inline double bf16_peak(void) {
    int major = device_attribute(cudaDevAttrComputeCapabilityMajor);
    int minor = device_attribute(cudaDevAttrComputeCapabilityMinor);
    int flops_per_clk = major >= 9 ? 4096 : major == 8 && minor == 0 ? 2048 : 0;
    return (double)device_attribute(cudaDevAttrMultiProcessorCount) * device_attribute(cudaDevAttrClockRate) * 1e3 *
           flops_per_clk;
}

template <int V>
struct alignas(2 * V) Bf16Pack {
    __nv_bfloat16 v[V];
};

__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    return (unsigned)__bfloat16_as_ushort(__float2bfloat16(lo)) | (unsigned)__bfloat16_as_ushort(__float2bfloat16(hi)) << 16;
}

static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

// The sum of v over the 32 lanes of a warp, in every lane (all 32 lanes must call it).
__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// The sum of v over a one-dimensional block whose size is a multiple of 32, in every
// thread; every thread must call it. The order of the additions depends only on the block
// size, so the result is the same on every run.
__device__ inline float block_sum(float v) {
    __shared__ float partial[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = warp_sum(lane < warps ? partial[lane] : 0.0f);  // every warp adds up the partials itself
    __syncthreads();  // before a next call overwrites partial
    return v;
}

#endif
