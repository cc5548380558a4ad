/*
 * ptx.cuh: every inline PTX instruction persona.c uses, each wrapped in a __device__
 * function. Under nvcc (device pass, __CUDA_ARCH__) the wrapper is the instruction itself;
 * under the CUDA-on-CPU harness (CUDA_HOST_HARNESS) it calls the harness's lane-by-lane
 * emulation (test/cuda_host/ptx_emu.cpp), so a kernel test on the CPU runs the shipped
 * kernel with the same fragment layouts. All need sm_80 or newer.
 *
 * mma_m16n8k16_bf16(d, a, b, c): mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32,
 *   D (16x8 f32) = A (16x16 bf16) · B (16x8 bf16) + C, for the whole warp (all 32 lanes,
 *   converged). Per lane, with g = lane / 4 and t = lane % 4 (PTX ISA fragment tables;
 *   "lo"/"hi" = bits [15:0]/[31:16] of a register):
 *     a[0] = A[g][2t..2t+1]     a[1] = A[g+8][2t..2t+1]
 *     a[2] = A[g][2t+8..2t+9]   a[3] = A[g+8][2t+8..2t+9]
 *     b[0] = B[2t..2t+1][g]     b[1] = B[2t+8..2t+9][g]
 *     c, d: [0] [1] = C[g][2t], C[g][2t+1];  [2] [3] = C[g+8][2t], C[g+8][2t+1]
 * ldmatrix_x{1,2,4}[_trans](r, row): ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16,
 *   loads 1, 2 or 4 8x8 matrices of 16-bit elements from shared memory. Lane 8j + r passes
 *   the address of row r of matrix j (16 bytes, 16-byte aligned; lanes beyond 8·num pass
 *   anything). Lane l receives in r[j]: Mj[l/4][2(l%4)] (lo) and Mj[l/4][2(l%4)+1] (hi), or
 *   with _trans the transpose, Mj[2(l%4)][l/4] and Mj[2(l%4)+1][l/4]. With lane l pointing
 *   at row l % 16, column (l / 16)·8 of a row-major 16x16 tile, x4 yields the A fragment.
 * cp_async16_ca / cp_async16_cg(dst, src): cp.async.{ca,cg}.shared.global, 16 bytes from
 *   global src to shared dst, both 16-byte aligned; ca caches in L1, cg only in L2.
 *   cp_async_commit(): cp.async.commit_group, closes this thread's group of copies.
 *   cp_async_wait<N>(): cp.async.wait_group N, waits until at most N of this thread's most
 *   recent groups are pending. The data is visible to this thread after the wait, to
 *   others after the wait and a __syncthreads. (The harness reads the source at the issue
 *   and poisons the destination until the wait.)
 *
 * Under the harness each wrapper also takes its caller's file and line, as default
 * arguments (PTX_CALLER), so call sites are the same for both compilers: the harness then
 * checks .aligned per call site (two mma.sync in the two sides of a branch never meet, as
 * on a GPU) and names the line in race reports.
 */
#ifndef PERSONA_PTX_CUH
#define PERSONA_PTX_CUH

#include "common.cuh"

#if defined(CUDA_HOST_HARNESS) && !defined(__CUDA_ARCH__)
#define PTX_CALLER , const char *caller_file = __builtin_FILE(), int caller_line = __builtin_LINE()
#else
#define PTX_CALLER
#endif

__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2],
                                                  const float c[4] PTX_CALLER) {
#if defined(__CUDA_ARCH__)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#elif defined(CUDA_HOST_HARNESS)
    cuda_host::mma_m16n8k16_bf16(d, a, b, c, caller_file, caller_line);
#endif
}

// ldmatrix reads shared memory the compiler does not see, hence the "memory" clobbers:
// earlier stores to the tile must not move after it.
__device__ __forceinline__ void ldmatrix_x1(unsigned r[1], const void *row PTX_CALLER) {
#if defined(__CUDA_ARCH__)
    unsigned addr = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(addr) : "memory");
#elif defined(CUDA_HOST_HARNESS)
    cuda_host::ldmatrix(1, false, r, row, caller_file, caller_line);
#endif
}

__device__ __forceinline__ void ldmatrix_x2(unsigned r[2], const void *row PTX_CALLER) {
#if defined(__CUDA_ARCH__)
    unsigned addr = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(addr)
                 : "memory");
#elif defined(CUDA_HOST_HARNESS)
    cuda_host::ldmatrix(2, false, r, row, caller_file, caller_line);
#endif
}

__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void *row PTX_CALLER) {
#if defined(__CUDA_ARCH__)
    unsigned addr = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
#elif defined(CUDA_HOST_HARNESS)
    cuda_host::ldmatrix(4, false, r, row, caller_file, caller_line);
#endif
}

__device__ __forceinline__ void ldmatrix_x1_trans(unsigned r[1], const void *row PTX_CALLER) {
#if defined(__CUDA_ARCH__)
    unsigned addr = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(addr) : "memory");
#elif defined(CUDA_HOST_HARNESS)
    cuda_host::ldmatrix(1, true, r, row, caller_file, caller_line);
#endif
}

__device__ __forceinline__ void ldmatrix_x2_trans(unsigned r[2], const void *row PTX_CALLER) {
#if defined(__CUDA_ARCH__)
    unsigned addr = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(addr)
                 : "memory");
#elif defined(CUDA_HOST_HARNESS)
    cuda_host::ldmatrix(2, true, r, row, caller_file, caller_line);
#endif
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const void *row PTX_CALLER) {
#if defined(__CUDA_ARCH__)
    unsigned addr = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
#elif defined(CUDA_HOST_HARNESS)
    cuda_host::ldmatrix(4, true, r, row, caller_file, caller_line);
#endif
}

__device__ __forceinline__ void cp_async16_ca(void *dst, const void *src PTX_CALLER) {
#if defined(__CUDA_ARCH__)
    unsigned addr = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16;\n" ::"r"(addr), "l"(src) : "memory");
#elif defined(CUDA_HOST_HARNESS)
    cuda_host::cp_async("cp.async.ca.shared.global", dst, src, 16, caller_file, caller_line);
#endif
}

__device__ __forceinline__ void cp_async16_cg(void *dst, const void *src PTX_CALLER) {
#if defined(__CUDA_ARCH__)
    unsigned addr = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(addr), "l"(src) : "memory");
#elif defined(CUDA_HOST_HARNESS)
    cuda_host::cp_async("cp.async.cg.shared.global", dst, src, 16, caller_file, caller_line);
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#elif defined(CUDA_HOST_HARNESS)
    cuda_host::cp_async_commit();
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#elif defined(CUDA_HOST_HARNESS)
    cuda_host::cp_async_wait(N);
#endif
}

#endif
