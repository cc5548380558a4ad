/*
 * cuda_host_api.h: the subset of the CUDA runtime API that the CUDA-on-CPU harness provides,
 * and the harness's own controls for tests.
 *
 * The "device" is the host: cudaMalloc is malloc (256-byte aligned like the GPU's, filled
 * with the poison byte 0xff because device memory starts as garbage, and sized exactly so
 * AddressSanitizer catches a kernel running off the end). The runtime knows every
 * allocation, so it refuses what a GPU would fault on: a cudaMemcpy whose direction does
 * not match its pointers or that leaves an allocation, cudaFree of a pointer it never
 * returned, a kernel argument of pointer type that is not device memory.
 *
 * Everything runs synchronously on the calling thread: a launch runs the whole grid before
 * it returns, and streams only order work, which is already in order. (So a missing
 * cudaStreamSynchronize is invisible here.) Events are synchronous too: cudaEventRecord
 * takes the host's monotonic clock at the call, so an elapsed time is the wall time the
 * CPU spent on the work between two records; cudaEventSynchronize and cudaStreamWaitEvent
 * have nothing to wait for and only check their handles. The device it describes, in
 * cudaGetDeviceProperties and cudaDeviceGetAttribute, is an H100 SXM5 80GB (sm_90, 132
 * SMs, 1024 threads per block, 227 KiB of opt-in shared memory per block, 50 MiB of L2,
 * a 5120-bit HBM3 bus at 2619 MHz: 3.35 TB/s).
 *
 * Errors: a refused call returns its error and remembers it for cudaGetLastError, which
 * returns and clears it. A fault inside a kernel (scheduler.h) is sticky, as a GPU's is:
 * every later call returns cudaErrorLaunchFailure until cuda_host_clear_fault().
 */
#ifndef CUDA_HOST_API_H
#define CUDA_HOST_API_H

#include <stddef.h>
#include <stdint.h>

// Values as in the toolkit's driver_types.h.
enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorLaunchFailure = 719,
};
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrClockRate = 13,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrMemoryClockRate = 36,
    cudaDevAttrGlobalMemoryBusWidth = 37,
    cudaDevAttrL2CacheSize = 38,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;
#define cudaEventDefault 0x00
#define cudaEventDisableTiming 0x02

// The fields of the toolkit's cudaDeviceProp (same names and types) that our code reads.
struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem, sharedMemPerBlock;
    int regsPerBlock, warpSize, maxThreadsPerBlock, maxThreadsDim[3], maxGridSize[3];
    size_t totalConstMem;
    int major, minor, multiProcessorCount, memoryBusWidth, l2CacheSize, maxThreadsPerMultiProcessor;
    size_t sharedMemPerMultiprocessor;
    int regsPerMultiprocessor;
    size_t sharedMemPerBlockOptin;
};

const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);

cudaError_t cudaMalloc(void **p, size_t bytes);
template <typename T>
static inline cudaError_t cudaMalloc(T **p, size_t bytes) { return cudaMalloc((void **)p, bytes); }
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = 0);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMallocHost(void **p, size_t bytes);
template <typename T>
static inline cudaError_t cudaMallocHost(T **p, size_t bytes) { return cudaMallocHost((void **)p, bytes); }
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemset(void *p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t stream = 0);

cudaError_t cudaStreamCreate(cudaStream_t *stream);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags = 0);

cudaError_t cudaEventCreate(cudaEvent_t *event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaEventDestroy(cudaEvent_t event);

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device);

namespace cuda_host {
cudaError_t set_func_attribute(const void *kernel, cudaFuncAttribute attr, int value);
}
template <typename... P>
static inline cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
    return cuda_host::set_func_attribute(reinterpret_cast<const void *>(kernel), attr, value);
}

// ---- harness controls (tests only) ------------------------------------------------------

// The schedule: seed 0 runs threads and blocks in order (thread 0 first, like the order a
// reader imagines); any other seed shuffles them, differently for every launch but the
// same for the same seed. The default comes from the environment variable CUDA_HOST_SEED,
// else 1.
void cuda_host_set_seed(uint64_t seed);
uint64_t cuda_host_seed(void);
// The message of the fault (or refused launch) that the last failing call reported, or
// NULL; and forgetting a sticky fault, as resetting a GPU would.
const char *cuda_host_fault(void);
void cuda_host_clear_fault(void);
// Whether fault messages are also printed on stderr as they happen (the default; tests
// that provoke faults on purpose turn it off around them, see cuda_host_testing.h).
void cuda_host_print_faults(bool print);
// Whether [p, p + bytes) lies inside one cudaMalloc allocation.
bool cuda_host_is_device(const void *p, size_t bytes);
// The most bytes cudaMalloc had handed out at once (live allocations summed). A program run
// with the environment variable CUDA_HOST_REPORT_PEAK set prints it on stderr at exit
// ("cuda_host: peak cudaMalloc total N bytes"). CUDA_HOST_MEMORY makes the device that many
// bytes (default 81559 MiB, an H100 80GB): cudaMalloc refuses beyond it, cudaMemGetInfo
// reports it. cudaMallocHost is malloc (pinned memory is ordinary memory here). With
// CUDA_HOST_NO_DEVICE set, cudaGetDeviceCount finds no device (cudaErrorNoDevice).
size_t cuda_host_peak_allocated(void);

#endif
