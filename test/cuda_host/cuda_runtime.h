/*
 * cuda_runtime.h (CUDA-on-CPU harness): the entry point. Kernel sources include
 * <cuda_runtime.h> through kernels/common.cuh; a test compiled with -Itest/cuda_host gets
 * this file instead of the toolkit's, and with it everything a kernel and its host
 * launcher use, so the same kernel source compiles unchanged with the host C++ compiler
 * and runs on the CPU. What that means, file by file (README.md in this directory has the
 * whole picture, and the list of what the harness cannot see):
 *
 *   cuda_host_device.h  qualifiers, __shared__, __launch_bounds__, threadIdx & co, math,
 *                       atomics
 *   cuda_host_sync.h    __syncthreads, shuffles, votes, __syncwarp
 *   cuda_bf16.h, cuda_fp16.h   the 16-bit float types
 *   cuda_host_api.h     the runtime API subset (memory, streams, events, errors, attributes)
 *                       and the harness's controls (seed, faults, memory statistics)
 *   cuda_host_launch.h  launching: the GPU's limits, the grid loop
 *   scheduler.h         how blocks run: a fiber per CUDA thread, seeded schedules between
 *                       synchronisation points (warps running ahead, blocks interleaved),
 *                       barrier and warp meetings, faults
 *   race.h              the race detector
 *   streams.h           asynchronous streams and events
 *   fiber.h             the fibers themselves
 *   ptx_emu.h           mma.sync / ldmatrix / cp.async for kernels/ptx.cuh
 *
 * The harness is strict on purpose, since a kinder one hides bugs: thread, warp, block and
 * stream order change with the seed; shared and device memory start as 0xff bytes (NaN);
 * cp.async targets stay poisoned until the wait; conflicting memory accesses that nothing
 * orders, a barrier not every thread reaches, warp operations whose lanes cannot meet,
 * shuffles that read absent lanes, launch configurations a GPU refuses, and host pointers
 * passed to kernels are all reported; and the sanitizer build lets AddressSanitizer catch
 * accesses out of bounds. Passing here means the logic is right, never that the kernel is
 * fast or has run on a GPU.
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
