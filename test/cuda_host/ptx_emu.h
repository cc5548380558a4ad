/*
 * ptx_emu.h: the CUDA-on-CPU harness's versions of the PTX instructions that
 * kernels/ptx.cuh wraps, emulated lane by lane from the PTX ISA (the layouts are in
 * ptx_emu.cpp, quoted from the ISA's fragment tables). Kernels never call these directly:
 * they call the wrappers in kernels/ptx.cuh, which are inline asm under nvcc and these
 * functions here.
 */
#ifndef CUDA_HOST_PTX_EMU_H
#define CUDA_HOST_PTX_EMU_H

namespace cuda_host {

// Each takes the file and line of the wrapper's caller (the call site: .aligned is checked
// per site, and race reports name it).
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 d, a, b, c (all 32 lanes).
void mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4], const char *file,
                       int line);
// ldmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16 r, [row] (all 32 lanes).
void ldmatrix(int num, bool trans, unsigned *r, const void *row, const char *file, int line);
// cp.async.{ca,cg}.shared.global [dst], [src], bytes; commit_group; wait_group n.
void cp_async(const char *name, void *dst, const void *src, int bytes, const char *file, int line);
void cp_async_commit();
void cp_async_wait(int n);

}  // namespace cuda_host

#endif
