/*
 * cuda_host_api.h: the subset of the CUDA runtime API that the CUDA-on-CPU harness provides,
 * and the harness's own controls for tests.
 *
 * Memory (memory.cpp). cudaMalloc and cudaMallocHost/cudaHostAlloc hand out whole pages of
 * one reserved address range, filled with the poison byte 0xff (device memory starts as
 * garbage), each followed by an unmapped page; under AddressSanitizer the bytes between the
 * allocation's end and its last page's end are poisoned, so a kernel running off the end is
 * reported at once. The runtime knows every allocation, so it refuses what a GPU would fault
 * on: a copy whose direction does not match its pointers or that leaves an allocation,
 * cudaFree of a pointer it never returned, a kernel argument of pointer type that is neither
 * device memory nor pinned host memory (which the device may address, as with unified
 * addressing). cudaFree and cudaFreeHost synchronise the device first, as CUDA's do; freed
 * pages are unmapped, so a later use faults. cudaMemGetInfo counts what cudaMalloc has live
 * against the H100's memory; cuda_host_memory_stats gives the live and peak totals.
 *
 * Streams and events (streams.cpp, streams.h): asynchronous. Kernel launches,
 * cudaMemcpyAsync, cudaMemsetAsync, cudaMemset, event records and stream waits are queued and
 * run only when the host waits for them, in a seeded order that keeps only what CUDA
 * promises (stream order, events, the legacy default stream's implicit synchronisation with
 * blocking streams); the per-thread default stream is not emulated (cudaStreamPerThread is
 * refused). cudaMemcpy is queued on the legacy default stream (so it comes after every
 * blocking stream's earlier work, but not after non-blocking streams'); the host waits for
 * it when it copies into host memory or out of pinned memory; from pageable memory it
 * waits for the stream's earlier work and stages the source, and between device buffers it
 * does not wait: CUDA's "API synchronization behavior". cudaMemcpyAsync stages a pageable
 * host source at the call and waits for itself when its destination is pageable host
 * memory, as CUDA does; pinned memory is read and written when the copy runs. cudaEventRecord is stamped with the host's monotonic clock when its
 * marker runs, so an elapsed time is the CPU time the harness spent on the work between
 * two records (and on whatever other stream it interleaved), not a GPU's. The device it
 * describes, in cudaGetDeviceProperties and cudaDeviceGetAttribute, is an H100 SXM5 80GB
 * (sm_90, 132 SMs, 1024 threads per block, 227 KiB of opt-in shared memory per block,
 * 50 MiB of L2, a 5120-bit HBM3 bus at 2619 MHz: 3.35 TB/s).
 *
 * Errors: a refused call returns its error and remembers it for cudaGetLastError, which
 * returns and clears it. A fault inside a kernel (scheduler.h) or a race (race.h) is
 * sticky, as a GPU's fault is: the call that waited for the faulting work and every later
 * call return cudaErrorLaunchFailure until cuda_host_clear_fault().
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
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorLaunchFailure = 719,
    cudaErrorNotSupported = 801,
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
#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamPerThread ((cudaStream_t)0x2)
#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
#define cudaEventDefault 0x00
#define cudaEventDisableTiming 0x02
#define cudaHostAllocDefault 0x00
#define cudaHostAllocPortable 0x01
#define cudaHostAllocMapped 0x02
#define cudaHostAllocWriteCombined 0x04

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
cudaError_t cudaMallocHost(void **p, size_t bytes);
template <typename T>
static inline cudaError_t cudaMallocHost(T **p, size_t bytes) { return cudaMallocHost((void **)p, bytes); }
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned int flags);
template <typename T>
static inline cudaError_t cudaHostAlloc(T **p, size_t bytes, unsigned int flags) {
    return cudaHostAlloc((void **)p, bytes, flags);
}
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = 0);
cudaError_t cudaMemset(void *p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t stream = 0);

cudaError_t cudaStreamCreate(cudaStream_t *stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamQuery(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags = 0);

cudaError_t cudaEventCreate(cudaEvent_t *event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventQuery(cudaEvent_t event);
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

// The schedule: seed 0 runs threads, blocks and streams in order (thread 0 first, one
// block at a time, operations in the order they were queued: the order a reader imagines);
// any other seed shuffles them (scheduler.h, streams.h), differently for every launch but
// the same for the same seed. The default comes from the environment variable
// CUDA_HOST_SEED, else 1.
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
// Device memory as cudaMalloc saw it (what a driver's memory plan can be checked against),
// and pinned host memory: bytes live now and the most live at once since the start (or the
// last cuda_host_reset_peak_memory), and how many device allocations are live and were
// ever made. cuda_host_peak_allocated is device_peak_bytes; a program run with the
// environment variable CUDA_HOST_REPORT_PEAK set prints it on stderr at exit ("cuda_host:
// peak cudaMalloc total N bytes"). cuda_host_print_allocations lists the live allocations
// on stderr, each with its size and the code that made it. CUDA_HOST_MEMORY makes the
// device that many bytes (default 81559 MiB, an H100 80GB; the harness itself holds at most
// 16 GiB): cudaMalloc refuses beyond it, cudaMemGetInfo reports it. With
// CUDA_HOST_NO_DEVICE set, cudaGetDeviceCount finds no device (cudaErrorNoDevice).
struct CudaHostMemoryStats {
    size_t device_live_bytes, device_peak_bytes, device_live_allocations;
    uint64_t device_allocations;
    size_t pinned_live_bytes, pinned_peak_bytes;
};
void cuda_host_memory_stats(CudaHostMemoryStats *stats);
void cuda_host_reset_peak_memory(void);
size_t cuda_host_peak_allocated(void);
void cuda_host_print_allocations(void);
// The race detector (race.h): on unless CUDA_HOST_RACECHECK=0; a test may switch it.
void cuda_host_set_racecheck(bool on);

#endif
