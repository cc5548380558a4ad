// runtime.cpp: the CUDA runtime API subset of cuda_host_api.h.
#include "runtime.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <map>
#include <set>

#include "scheduler.h"

namespace cuda_host {

static cudaError_t last_error = cudaSuccess;
static bool sticky = false;
static std::map<uintptr_t, size_t> allocations;  // base -> bytes
static std::set<void *> host_allocations;         // cudaMallocHost's
static size_t allocated, peak_allocated;          // bytes of the live allocations; their most ever
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
        case cudaErrorNoDevice: return "cudaErrorNoDevice";
        case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
        case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
        case cudaErrorNotReady: return "cudaErrorNotReady";
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
        case cudaErrorNoDevice: return "no CUDA-capable device is detected";
        case cudaErrorInvalidDevice: return "invalid device ordinal";
        case cudaErrorInvalidResourceHandle: return "invalid resource handle";
        case cudaErrorNotReady: return "device not ready";
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

// The device memory, 80 GB unless CUDA_HOST_MEMORY sets a smaller device, in bytes (so
// tests can run programs out of memory); cudaMalloc refuses what goes beyond it.
static size_t device_memory() {
    const char *env = getenv("CUDA_HOST_MEMORY");
    return env && atoll(env) > 0 ? (size_t)atoll(env) : (size_t)81559 << 20;
}

// With CUDA_HOST_REPORT_PEAK set, the program says at exit how much it had allocated at most.
static void report_peak() { fprintf(stderr, "cuda_host: peak cudaMalloc total %zu bytes\n", peak_allocated); }

size_t cuda_host_peak_allocated(void) { return peak_allocated; }

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    if (sticky) return cudaErrorLaunchFailure;
    if (!free_bytes || !total_bytes) return refuse(cudaErrorInvalidValue, "cudaMemGetInfo: null result pointer");
    *total_bytes = device_memory();
    *free_bytes = *total_bytes > allocated ? *total_bytes - allocated : 0;
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t bytes) {
    if (sticky) return cudaErrorLaunchFailure;
    if (!p) return refuse(cudaErrorInvalidValue, "cudaMallocHost: null result pointer");
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return refuse(cudaErrorMemoryAllocation, "cudaMallocHost: out of memory for %zu bytes", bytes);
    host_allocations.insert(*p);
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p) {
    if (sticky) return cudaErrorLaunchFailure;
    if (!host_allocations.erase(p))
        return refuse(cudaErrorInvalidValue, "cudaFreeHost(%p): not a pointer cudaMallocHost returned", p);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
    if (sticky) return cudaErrorLaunchFailure;
    if (!p) return refuse(cudaErrorInvalidValue, "cudaMalloc: null result pointer");
    static bool registered = false;
    if (!registered && getenv("CUDA_HOST_REPORT_PEAK")) atexit(report_peak);
    registered = true;
    if (bytes > device_memory() - allocated)
        return refuse(cudaErrorMemoryAllocation, "cudaMalloc: out of memory for %zu bytes (%zu of %zu in use)", bytes,
                      allocated, device_memory());
    void *mem = nullptr;
    // Exactly `bytes` (AddressSanitizer's redzone starts at the end), at least 1 so every
    // allocation has its own address.
    if (posix_memalign(&mem, 256, bytes ? bytes : 1) != 0)
        return refuse(cudaErrorMemoryAllocation, "cudaMalloc: out of memory for %zu bytes", bytes);
    memset(mem, 0xff, bytes);
    allocations[(uintptr_t)mem] = bytes;
    allocated += bytes;
    if (allocated > peak_allocated) peak_allocated = allocated;
    *p = mem;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    if (sticky) return cudaErrorLaunchFailure;
    if (!p) return cudaSuccess;
    auto it = allocations.find((uintptr_t)p);
    if (it == allocations.end())
        return refuse(cudaErrorInvalidDevicePointer, "cudaFree(%p): not a pointer cudaMalloc returned", p);
    allocated -= it->second;
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

// CUDA_HOST_NO_DEVICE set: a machine without a GPU, as the runtime reports it there (an
// error status, not a fault: nothing is printed).
cudaError_t cudaGetDeviceCount(int *count) {
    *count = getenv("CUDA_HOST_NO_DEVICE") ? 0 : 1;
    if (*count == 0) last_error = cudaErrorNoDevice;
    return *count ? cudaSuccess : cudaErrorNoDevice;
}
cudaError_t cudaGetDevice(int *device) {
    *device = 0;
    return sticky_error();
}
cudaError_t cudaSetDevice(int device) {
    if (device != 0) return refuse(cudaErrorInvalidDevice, "cudaSetDevice(%d): the harness has one device, 0", device);
    return sticky_error();
}

// The device: an H100 SXM5 80GB. SMs, L2, bus width and the 3.35 TB/s it gives with the
// memory clock are NVIDIA's datasheet figures; the block and SM limits are sm_90's (CUDA
// programming guide, compute capability 9.0); the memory size is the 81559 MiB
// nvidia-smi shows for the 80 GB part and the clocks are its boost clocks (1980 MHz SM,
// 2619 MHz memory), as recalled, not read from a GPU here.
static const int kClockRateKHz = 1980000, kMemoryClockRateKHz = 2619000;

static cudaDeviceProp h100_properties() {
    cudaDeviceProp p;
    memset(&p, 0, sizeof(p));
    snprintf(p.name, sizeof(p.name), "NVIDIA H100 80GB HBM3");
    p.totalGlobalMem = (size_t)81559 << 20;
    p.sharedMemPerBlock = kDefaultDynamicShared;
    p.regsPerBlock = 65536, p.warpSize = 32, p.maxThreadsPerBlock = 1024;
    p.maxThreadsDim[0] = 1024, p.maxThreadsDim[1] = 1024, p.maxThreadsDim[2] = 64;
    p.maxGridSize[0] = 2147483647, p.maxGridSize[1] = 65535, p.maxGridSize[2] = 65535;
    p.totalConstMem = 65536;
    p.major = 9, p.minor = 0, p.multiProcessorCount = 132;
    p.memoryBusWidth = 5120, p.l2CacheSize = 50 << 20, p.maxThreadsPerMultiProcessor = 2048;
    p.sharedMemPerMultiprocessor = 228 * 1024, p.regsPerMultiprocessor = 65536;
    p.sharedMemPerBlockOptin = kOptinDynamicShared;
    return p;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
    if (!prop) return refuse(cudaErrorInvalidValue, "cudaGetDeviceProperties: null result pointer");
    if (device != 0) return refuse(cudaErrorInvalidDevice, "cudaGetDeviceProperties: device %d", device);
    *prop = h100_properties();
    return sticky_error();
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device) {
    if (device != 0) return refuse(cudaErrorInvalidDevice, "cudaDeviceGetAttribute: device %d", device);
    const cudaDeviceProp p = h100_properties();
    switch (attr) {
        case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
        case cudaDevAttrClockRate: *value = kClockRateKHz; break;
        case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
        case cudaDevAttrMemoryClockRate: *value = kMemoryClockRateKHz; break;
        case cudaDevAttrGlobalMemoryBusWidth: *value = p.memoryBusWidth; break;
        case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; break;
        case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
        case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
        case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)p.sharedMemPerBlockOptin; break;
        default: return refuse(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute %d is not emulated", (int)attr);
    }
    return sticky_error();
}

// ---- events: recorded at the call (everything before it has already run) --------------

struct CUevent_st {
    unsigned int flags;
    bool recorded;
    double ms;  // the host's monotonic clock at the last record
};
static std::set<cudaEvent_t> events;

static bool valid_event(cudaEvent_t e) { return e && events.count(e); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags) {
    if (sticky) return cudaErrorLaunchFailure;
    if (!event) return refuse(cudaErrorInvalidValue, "cudaEventCreate: null result pointer");
    if (flags & ~(unsigned)(cudaEventDefault | cudaEventDisableTiming))
        return refuse(cudaErrorInvalidValue, "cudaEventCreateWithFlags: flags 0x%x are not emulated", flags);
    *event = new CUevent_st{flags, false, 0.0};
    events.insert(*event);
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    if (sticky) return cudaErrorLaunchFailure;
    if (!valid_event(event)) return refuse(cudaErrorInvalidResourceHandle, "cudaEventRecord: unknown event");
    if (!valid_stream(stream)) return refuse(cudaErrorInvalidResourceHandle, "cudaEventRecord: unknown stream");
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    event->recorded = true;
    event->ms = (double)now.tv_sec * 1e3 + (double)now.tv_nsec / 1e6;
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    if (!valid_event(event)) return refuse(cudaErrorInvalidResourceHandle, "cudaEventSynchronize: unknown event");
    return sticky_error();
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (sticky) return cudaErrorLaunchFailure;
    if (!ms) return refuse(cudaErrorInvalidValue, "cudaEventElapsedTime: null result pointer");
    if (!valid_event(start) || !valid_event(end))
        return refuse(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: unknown event");
    if (!start->recorded || !end->recorded)
        return refuse(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event was never recorded");
    if ((start->flags | end->flags) & cudaEventDisableTiming)
        return refuse(cudaErrorInvalidResourceHandle,
                      "cudaEventElapsedTime: an event was created with cudaEventDisableTiming");
    *ms = (float)(end->ms - start->ms);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    if (sticky) return cudaErrorLaunchFailure;
    if (!valid_event(event)) return refuse(cudaErrorInvalidResourceHandle, "cudaEventDestroy: unknown event");
    events.erase(event);
    delete event;
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
    if (!valid_stream(stream)) return refuse(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: unknown stream");
    if (!valid_event(event)) return refuse(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: unknown event");
    if (flags != 0) return refuse(cudaErrorInvalidValue, "cudaStreamWaitEvent: flags 0x%x are not emulated", flags);
    return sticky_error();
}

const char *cuda_host_fault(void) { return fault_message()[0] ? fault_message() : nullptr; }

void cuda_host_clear_fault(void) {
    sticky = false;
    last_error = cudaSuccess;
    clear_fault_message();
}
