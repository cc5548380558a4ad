// runtime.cpp: the CUDA runtime API subset of cuda_host_api.h.
#include "runtime.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <map>
#include <set>

#include "scheduler.h"

namespace cuda_host {

static cudaError_t last_error = cudaSuccess;
static bool sticky = false;
static std::map<uintptr_t, size_t> allocations;  // base -> bytes
static std::map<const void *, size_t> dynamic_shared_limit;
static std::set<cudaStream_t> streams;

cudaError_t refuse(cudaError_t e, const char *fmt, ...) {
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    set_fault_message("%s", msg);
    last_error = e;
    return e;
}

void set_sticky_fault() {
    sticky = true;
    last_error = cudaErrorLaunchFailure;
}
cudaError_t sticky_error() { return sticky ? cudaErrorLaunchFailure : cudaSuccess; }

size_t max_dynamic_shared(const void *kernel) {
    auto it = dynamic_shared_limit.find(kernel);
    return it == dynamic_shared_limit.end() ? kDefaultDynamicShared : it->second;
}

cudaError_t set_func_attribute(const void *kernel, cudaFuncAttribute attr, int value) {
    if (sticky) return cudaErrorLaunchFailure;
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
        return refuse(cudaErrorInvalidValue, "cudaFuncSetAttribute: attribute %d is not emulated", (int)attr);
    if (value < 0 || (size_t)value > kOptinDynamicShared)
        return refuse(cudaErrorInvalidValue,
                      "cudaFuncSetAttribute: %d bytes of dynamic shared memory is more than the %zu an sm_90 block "
                      "can have",
                      value, kOptinDynamicShared);
    dynamic_shared_limit[kernel] = (size_t)value;
    return cudaSuccess;
}

bool valid_stream(cudaStream_t stream) { return stream == nullptr || streams.count(stream); }

// The allocation holding [p, p + bytes), or allocations.end().
static std::map<uintptr_t, size_t>::const_iterator find_allocation(const void *p, size_t bytes) {
    uintptr_t a = (uintptr_t)p;
    auto it = allocations.upper_bound(a);
    if (it == allocations.begin()) return allocations.end();
    --it;
    if (a - it->first > it->second || bytes > it->second - (a - it->first)) return allocations.end();
    return it;
}

}  // namespace cuda_host

using namespace cuda_host;

bool cuda_host_is_device(const void *p, size_t bytes) { return find_allocation(p, bytes) != allocations.end(); }

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
        case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
        case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
        case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
        case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
        case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
        case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorInvalidDevicePointer: return "invalid device pointer";
        case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
        case cudaErrorInvalidDevice: return "invalid device ordinal";
        case cudaErrorInvalidResourceHandle: return "invalid resource handle";
        case cudaErrorLaunchFailure: return "unspecified launch failure";
    }
    return "unknown error";
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = last_error;
    if (!sticky) last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return last_error; }

cudaError_t cudaMalloc(void **p, size_t bytes) {
    if (sticky) return cudaErrorLaunchFailure;
    if (!p) return refuse(cudaErrorInvalidValue, "cudaMalloc: null result pointer");
    void *mem = nullptr;
    // Exactly `bytes` (AddressSanitizer's redzone starts at the end), at least 1 so every
    // allocation has its own address.
    if (posix_memalign(&mem, 256, bytes ? bytes : 1) != 0)
        return refuse(cudaErrorMemoryAllocation, "cudaMalloc: out of memory for %zu bytes", bytes);
    memset(mem, 0xff, bytes);
    allocations[(uintptr_t)mem] = bytes;
    *p = mem;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    if (sticky) return cudaErrorLaunchFailure;
    if (!p) return cudaSuccess;
    auto it = allocations.find((uintptr_t)p);
    if (it == allocations.end())
        return refuse(cudaErrorInvalidDevicePointer, "cudaFree(%p): not a pointer cudaMalloc returned", p);
    allocations.erase(it);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (sticky) return cudaErrorLaunchFailure;
    if (bytes == 0) return cudaSuccess;
    bool dst_dev = cuda_host_is_device(dst, bytes), src_dev = cuda_host_is_device(src, bytes);
    bool dst_want = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool src_want = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault)
        return refuse(cudaErrorInvalidMemcpyDirection, "cudaMemcpy: kind %d", (int)kind);
    // A host pointer that lies partly in an allocation is an overrun, not host memory.
    bool dst_partly = !dst_dev && find_allocation(dst, 1) != allocations.end();
    bool src_partly = !src_dev && find_allocation(src, 1) != allocations.end();
    if (dst_partly || src_partly)
        return refuse(cudaErrorInvalidValue, "cudaMemcpy of %zu bytes runs past the end of the %s allocation", bytes,
                      dst_partly ? "destination" : "source");
    if (kind != cudaMemcpyDefault && (dst_dev != dst_want || src_dev != src_want))
        return refuse(cudaErrorInvalidValue, "cudaMemcpy %s: destination %p is %s memory, source %p is %s memory",
                      kind == cudaMemcpyHostToDevice   ? "HostToDevice"
                      : kind == cudaMemcpyDeviceToHost ? "DeviceToHost"
                      : kind == cudaMemcpyDeviceToDevice ? "DeviceToDevice"
                                                       : "HostToHost",
                      dst, dst_dev ? "device" : "host", src, src_dev ? "device" : "host");
    memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
    if (!valid_stream(stream)) return refuse(cudaErrorInvalidResourceHandle, "cudaMemcpyAsync: unknown stream");
    return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemset(void *p, int value, size_t bytes) {
    if (sticky) return cudaErrorLaunchFailure;
    if (bytes && !cuda_host_is_device(p, bytes))
        return refuse(cudaErrorInvalidValue, "cudaMemset(%p, %zu bytes): not inside one device allocation", p, bytes);
    memset(p, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t stream) {
    if (!valid_stream(stream)) return refuse(cudaErrorInvalidResourceHandle, "cudaMemsetAsync: unknown stream");
    return cudaMemset(p, value, bytes);
}

cudaError_t cudaStreamCreate(cudaStream_t *stream) {
    if (sticky) return cudaErrorLaunchFailure;
    // A handle is just a unique address; nothing is ever queued on it.
    *stream = (cudaStream_t)malloc(1);
    streams.insert(*stream);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    if (sticky) return cudaErrorLaunchFailure;
    if (!stream || !streams.erase(stream))
        return refuse(cudaErrorInvalidResourceHandle, "cudaStreamDestroy: unknown stream");
    free(stream);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    if (!valid_stream(stream)) return refuse(cudaErrorInvalidResourceHandle, "cudaStreamSynchronize: unknown stream");
    return sticky_error();
}
cudaError_t cudaDeviceSynchronize(void) { return sticky_error(); }

cudaError_t cudaGetDeviceCount(int *count) {
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *device) {
    *device = 0;
    return sticky_error();
}
cudaError_t cudaSetDevice(int device) {
    if (device != 0) return refuse(cudaErrorInvalidDevice, "cudaSetDevice(%d): the harness has one device, 0", device);
    return sticky_error();
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device) {
    if (device != 0) return refuse(cudaErrorInvalidDevice, "cudaDeviceGetAttribute: device %d", device);
    switch (attr) {
        case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
        case cudaDevAttrMultiProcessorCount: *value = 132; break;
        case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
        case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
        case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)kOptinDynamicShared; break;
        default: return refuse(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute %d is not emulated", (int)attr);
    }
    return sticky_error();
}

const char *cuda_host_fault(void) { return fault_message()[0] ? fault_message() : nullptr; }

void cuda_host_clear_fault(void) {
    sticky = false;
    last_error = cudaSuccess;
    clear_fault_message();
}
