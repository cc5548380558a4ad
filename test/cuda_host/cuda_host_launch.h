/*
 * cuda_host_launch.h: launching a kernel in the CUDA-on-CPU harness.
 *
 * cuda_host::launch(name, kernel, grid, block, dynamic_shared_bytes, stream, args...) is what
 * LAUNCH (kernels/common.cuh) becomes here. Like a GPU launch it converts the arguments to
 * the kernel's parameter types once, at the call, and every CUDA thread calls the kernel
 * with its own copy. Before queueing anything it refuses, with the error a GPU gives and a
 * message, what a GPU would refuse:
 *   - blockDim beyond (1024, 1024, 64) or more than 1024 threads, gridDim beyond
 *     (2^31 - 1, 65535, 65535), any dimension 0: cudaErrorInvalidConfiguration;
 *   - more threads than the kernel's __launch_bounds__ (kept by cuda_host_device.h):
 *     cudaErrorLaunchOutOfResources;
 *   - dynamic shared memory above 48 KiB unless cudaFuncSetAttribute(kernel,
 *     cudaFuncAttributeMaxDynamicSharedMemorySize, n) allowed it (at most 227 KiB on
 *     sm_90): cudaErrorInvalidValue. (Static __shared__ sizes are ptxas's to check: nvcc
 *     fails the build above 48 KiB.);
 *   - an unknown stream: cudaErrorInvalidResourceHandle;
 *   - a pointer argument that is neither null, nor device memory, nor pinned host memory: a
 *     fault, since the kernel would fault on its first access.
 * Then the grid is queued on the stream (streams.h) with its schedule fixed from the seed
 * (cuda_host_set_seed) and the launch's number. When it runs, its blocks start in a seeded
 * order, two alive at a time, switching at barriers; each runs as scheduler.h describes,
 * with its dynamic shared memory in a buffer of exactly the launch's size, and all shared
 * memory filled with 0xff bytes first. A fault (or a race, race.h) stops the grid and is
 * sticky: the call that waited for the grid, and every later one, fails.
 */
#ifndef CUDA_HOST_LAUNCH_H
#define CUDA_HOST_LAUNCH_H

#include <stddef.h>

#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda_host_api.h"
#include "cuda_host_device.h"

namespace cuda_host {

// Queues the grid: every thread of every block will call body(arg). Takes arg, which
// destroy(arg) frees once the grid has run or been refused. (Plain function pointers: the
// kernel's translation unit is built with -fno-weak, where std::shared_ptr does not link.)
cudaError_t launch_grid(const char *name, const void *kernel, dim3 grid, dim3 block, size_t dynamic_shared,
                        cudaStream_t stream, void (*body)(void *), void *arg, void (*destroy)(void *));
// False (and the launch refused) when a pointer argument is not device memory.
bool check_pointer_argument(const char *name, int index, const void *p);
// The running block's dynamic shared memory (DYNAMIC_SHARED in kernels/common.cuh).
void *dynamic_shared();

template <typename T>
static inline bool check_argument(const char *name, int index, const T &value) {
    if constexpr (std::is_pointer<T>::value)
        return check_pointer_argument(name, index, (const void *)value);
    else
        return true;
}

template <typename Tuple, size_t... I>
static inline bool check_arguments(const char *name, const Tuple &args, std::index_sequence<I...>) {
    bool ok = true;
    ((ok = ok && check_argument(name, (int)I, std::get<I>(args))), ...);
    return ok;
}

template <typename... P, typename... A>
static inline cudaError_t launch(const char *name, void (*kernel)(P...), dim3 grid, dim3 block, size_t dynamic_shared,
                                 cudaStream_t stream, A &&...args) {
    static_assert(sizeof...(P) == sizeof...(A), "the kernel takes a different number of arguments");
    struct Call {
        void (*kernel)(P...);
        std::tuple<typename std::decay<P>::type...> args;
    };
    Call *call = new Call{kernel, {std::forward<A>(args)...}};
    if (!check_arguments(name, call->args, std::index_sequence_for<P...>{})) {
        delete call;
        return cudaErrorLaunchFailure;
    }
    return launch_grid(
        name, reinterpret_cast<const void *>(kernel), grid, block, dynamic_shared, stream,
        [](void *c) { std::apply(((Call *)c)->kernel, ((Call *)c)->args); }, call, [](void *c) { delete (Call *)c; });
}

}  // namespace cuda_host

#endif
