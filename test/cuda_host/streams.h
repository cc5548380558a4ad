/*
 * streams.h: asynchronous streams and events (internal to test/cuda_host/; the API calls
 * are in cuda_host_api.h, implemented in streams.cpp).
 *
 * Every stream-ordered call (a kernel launch, cudaMemcpyAsync, cudaMemsetAsync, cudaMemset,
 * cudaMemcpy, cudaEventRecord, cudaStreamWaitEvent, cublasLtMatmul) checks its arguments at
 * once, as CUDA does, and queues an operation. Nothing runs until the host waits for
 * something: cudaStreamSynchronize, cudaEventSynchronize, cudaDeviceSynchronize, a copy
 * into host memory (cudaMemcpy, or cudaMemcpyAsync into pageable memory), cudaMemcpy from
 * pinned memory, cudaFree (which synchronises the device), a query (which runs one
 * operation per call). cudaMemcpy from pageable memory waits for its stream's earlier work
 * only (then stages the source), and between device buffers not at all, as CUDA's. Then the harness runs queued operations, one
 * at a time, in a seeded random order among those whose predecessors are done, until what
 * the host waits for is done. The orders CUDA promises, and nothing else:
 *   - one stream runs its operations in the order they were queued;
 *   - cudaStreamWaitEvent(s, e): what s queues afterwards waits for e's last record (the
 *     operations queued on its stream before that record); an event never recorded is no
 *     wait at all;
 *   - the legacy default stream (0, cudaStreamLegacy): an operation on it waits for all
 *     earlier work of every blocking stream (cudaStreamCreate, or the flag
 *     cudaStreamDefault), and every later operation of a blocking stream waits for it.
 *     Streams made with cudaStreamNonBlocking do neither. The per-thread default stream
 *     (cudaStreamPerThread, nvcc --default-stream per-thread) is not emulated: refused.
 *   - what the host has waited for is ordered before everything it queues afterwards.
 * Each operation carries a vector clock over streams (the newest operation of each stream
 * that is ordered before it), which the race detector (race.h) asks whether two
 * operations are ordered. So a kernel that reads what another stream writes without an
 * event in between is reported whatever order the two happened to run in, and with a seed
 * the wrong order also shows in the data.
 * NCCL collectives are the one exception to "runs when waited for": the stand-in runs a
 * collective, after everything it depends on, at the call, because other ranks meet it in
 * MPI and a host-side MPI call of this rank in the meantime would deadlock them.
 */
#ifndef CUDA_HOST_STREAMS_H
#define CUDA_HOST_STREAMS_H

#include <stdint.h>

#include <functional>
#include <vector>

#include "cuda_host_api.h"

namespace cuda_host {

// What the race detector and the reports need of an operation.
struct OpInfo {
    uint32_t stream;     // index of its stream (0: the legacy default stream)
    uint64_t seq;        // its position on that stream (1, 2, ...)
    const char *what;    // "kernel NAME", "cudaMemcpyAsync", ...
    uintptr_t caller;    // the code that queued it (0: unknown)
    std::vector<uint64_t> clock;  // by stream index: the newest operation ordered before it (itself included)
};

// Queues run() on stream as operation `what`; caller: the return address of the API call
// (for reports). Returns the operation's id, or 0 (nothing queued) when the handle is not a
// stream of this harness; per_thread is set when it is cudaStreamPerThread.
uint64_t enqueue(cudaStream_t stream, const char *what, uintptr_t caller, std::function<void()> run);
// The stream handle's validity, as the API calls check it (0 and cudaStreamLegacy are the
// legacy default stream); a message names the refusal.
bool valid_stream(cudaStream_t stream);
cudaError_t refuse_stream(const char *call, cudaStream_t stream);
// Runs operation id (and what it depends on) if not done, and orders the host after it;
// host_wait_stream: the same for the newest operation of a stream (a valid handle).
void host_wait(uint64_t id);
void host_wait_stream(cudaStream_t stream);
// Runs everything queued; the host is ordered after all of it.
void host_wait_all();
// Runs operation id (and what it depends on) now, without ordering the host after it (the
// NCCL stand-in's collectives).
void run_now(uint64_t id);
// The operation running now (0: none), its info, and whether operation a is ordered
// before the running one.
uint64_t running_op();
const OpInfo &op_info(uint64_t id);
bool ordered_before_running(uint64_t a);
// Whether operation a is ordered before the host's next call (the host waited for it).
bool ordered_before_host(uint64_t a);
// Re-seeds the interleaving of streams (cuda_host_set_seed).
void seed_streams(uint64_t seed);

}  // namespace cuda_host

#endif
