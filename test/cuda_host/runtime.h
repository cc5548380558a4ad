/*
 * runtime.h: the runtime state that the launcher, the PTX emulation and the stand-ins share
 * with the runtime API (internal to test/cuda_host/; the API itself is in cuda_host_api.h,
 * streams in streams.h).
 */
#ifndef CUDA_HOST_RUNTIME_H
#define CUDA_HOST_RUNTIME_H

#include "cuda_host_api.h"

namespace cuda_host {

// Records a refused call: prints the message, keeps it for cuda_host_fault() and the error
// for cudaGetLastError(). Returns e.
cudaError_t refuse(cudaError_t e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// After a fault inside a kernel every call fails with cudaErrorLaunchFailure until
// cuda_host_clear_fault(); sticky_error() says whether that is the case.
void set_sticky_fault();
cudaError_t sticky_error();
// The dynamic shared memory a kernel may launch with (48 KiB unless raised by
// cudaFuncSetAttribute), and the most that attribute may be set to (sm_90: 227 KiB).
size_t max_dynamic_shared(const void *kernel);
static const size_t kDefaultDynamicShared = 48 * 1024;
static const size_t kOptinDynamicShared = 227 * 1024;
// Pinned host memory (cudaMallocHost, cudaHostAlloc) holding [p, p + bytes); and whether a
// kernel may address p: device memory or pinned host memory (unified addressing).
bool is_pinned(const void *p, size_t bytes);
bool is_kernel_accessible(const void *p);
// "device allocation #N of M bytes at +offset" (or pinned), for messages.
void describe_address(const void *p, char *buf, size_t n);

}  // namespace cuda_host

#endif
