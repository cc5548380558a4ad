/*
 * runtime.h: the runtime state that the launcher and the PTX emulation share with the
 * runtime API (internal to test/cuda_host/; the API itself is in cuda_host_api.h).
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
// Whether the stream handle is 0 or one that cudaStreamCreate returned and not destroyed.
bool valid_stream(cudaStream_t stream);

}  // namespace cuda_host

#endif
