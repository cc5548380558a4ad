/*
 * cuda_runtime.h (CUDA-on-CPU harness): the entry point. Kernel sources include
 * <cuda_runtime.h> through kernels/common.cuh; a test compiled with -Itest/cuda_host gets
 * this file instead of the toolkit's, and with it everything a kernel and its host
 * launcher use, so the same kernel source compiles unchanged with the host C++ compiler
 * and runs on the CPU. What that means, file by file:
 *
 *   cuda_host_device.h  qualifiers, __shared__, threadIdx & co, math, atomics
 *   cuda_host_sync.h    __syncthreads, shuffles, votes, __syncwarp
 *   cuda_bf16.h, cuda_fp16.h   the 16-bit float types
 *   cuda_host_api.h     the runtime API subset (memory, streams, errors, attributes) and
 *                       the harness's controls (seed, faults)
 *   cuda_host_launch.h  launching: the GPU's limits, the grid loop
 *   scheduler.h         how one block runs: a fiber per CUDA thread, seeded interleaving
 *                       between synchronisation points, barrier and warp meetings, faults
 *   fiber.h             the fibers themselves
 *   ptx_emu.h           mma.sync / ldmatrix / cp.async for kernels/ptx.cuh
 *
 * The harness is strict on purpose, since a kinder one hides bugs: thread and block order
 * change with the seed; shared and device memory start as 0xff bytes (NaN); cp.async
 * targets stay poisoned until the wait; a barrier not every thread reaches, warp
 * operations whose lanes cannot meet, shuffles that read absent lanes, launch
 * configurations a GPU refuses, and host pointers passed to kernels are all reported; and
 * the sanitizer build lets AddressSanitizer catch shared and global accesses out of
 * bounds. Passing here means the logic is right, never that the kernel is fast or has run
 * on a GPU. Not modelled: concurrency between blocks (they run one after another), memory
 * ordering and asynchrony of streams (everything runs in program order), the GPU's fast
 * math approximations and FMA contraction, and data races that a barrier-to-barrier
 * interleaving cannot expose (two threads writing one address in the same interval).
 */
#ifndef CUDA_HOST_CUDA_RUNTIME_H
#define CUDA_HOST_CUDA_RUNTIME_H

#define CUDA_HOST_HARNESS 1

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cuda_host_device.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_host_sync.h"
#include "cuda_host_api.h"
#include "cuda_host_launch.h"
#include "ptx_emu.h"

#endif
