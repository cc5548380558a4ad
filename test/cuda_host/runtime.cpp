// runtime.cpp: errors, the device's description and kernel attributes of cuda_host_api.h
// (memory is in memory.cpp, streams and events in streams.cpp).
#include "runtime.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <map>

#include "scheduler.h"

namespace cuda_host {

static cudaError_t last_error = cudaSuccess;
static bool sticky = false;
static std::map<const void *, size_t> dynamic_shared_limit;

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

}  // namespace cuda_host

using namespace cuda_host;

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
        case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
        case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
        case cudaErrorNotSupported: return "cudaErrorNotSupported";
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
        case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
        case cudaErrorLaunchFailure: return "unspecified launch failure";
        case cudaErrorNotSupported: return "operation not supported";
    }
    return "unknown error";
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = last_error;
    if (!sticky) last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return last_error; }

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

const char *cuda_host_fault(void) { return fault_message()[0] ? fault_message() : nullptr; }

void cuda_host_clear_fault(void) {
    sticky = false;
    last_error = cudaSuccess;
    clear_fault_message();
}
