/*
 * race.h: the harness's race detector (internal to test/cuda_host/).
 *
 * What it records. Every 4-byte word of shared memory (the __shared__ section and each
 * block's dynamic shared memory) and of the memory the harness hands out (cudaMalloc and
 * cudaMallocHost, both carved from one reserved range, see memory.cpp) has a shadow record:
 * the last write and up to two reads that no later access has ordered, each as
 *   agent     who: a block of a kernel launch, or one other operation (a copy, a memset, a
 *             cuBLASLt product, a collective); agents map back to the stream operation
 *             they belong to (streams.h)
 *   interval  the block's barrier interval (incremented at every __syncthreads release)
 *   clock     the lane's __syncwarp clock at the access (see below)
 *   tid       the thread within the block, site the code that made the access, the bytes
 *             of the word it touched, and whether it was a write, an atomic, or a cp.async
 *             whose data has not landed yet.
 * Records are never cleared: a record whose agent or interval is not the accessor's is
 * simply older, so a barrier costs one increment, not a sweep of shared memory.
 *
 * When two accesses to overlapping bytes conflict (at least one writes) they must be
 * ordered; otherwise the detector reports both, with their sites, and the launch faults:
 *   - same thread: program order;
 *   - same block, another barrier interval: the __syncthreads between them;
 *   - same block and interval, same warp, other lane: only a __syncwarp both lanes took
 *     part in after the first access orders them. Each lane keeps a vector clock of its
 *     warp's 32 lanes; a __syncwarp joins the clocks of the lanes in its mask. Shuffles,
 *     votes, ldmatrix and mma do not order memory (the PTX ISA promises nothing);
 *   - same block and interval, another warp: never ordered (named barriers and
 *     flag-based warp specialisation are not modelled);
 *   - global memory, another block of the same launch: never ordered;
 *   - another stream operation: ordered iff CUDA orders the two operations (stream order,
 *     events, the legacy default stream, host synchronisation), by the operations' vector
 *     clocks (streams.cpp).
 * Atomics do not conflict with atomics. An atomic against a plain write conflicts; against
 * a plain read it does not (the compare-and-swap loop every CUDA text shows starts with a
 * plain read of the word it then CASes).
 *
 * How accesses reach it. Kernel code is compiled with AddressSanitizer's instrumentation
 * in its "call" form (Makefile: CUDA_HOST_KERNEL_FLAGS), so every load and store of the
 * kernel's translation unit calls __asan_loadN/__asan_storeN, which race.cpp defines: it
 * does AddressSanitizer's own check (sanitizer build) and, when the address is shared or
 * harness memory, the record above. The compiler checks an address once per basic block,
 * so the store of `x = x + 1` makes no call after its load's; hence each thread also
 * remembers the last words it loaded with their values (LoadMemo, scheduler.h), and a
 * word whose value changed before the thread's next synchronisation point (or before the
 * memo is pushed out by newer loads) is recorded as stored by it then, at the load's site
 * (nobody else runs in between). A store of the value already there goes unseen. The harness's own emulation (ldmatrix, cp.async,
 * copies, the cuBLASLt and NCCL stand-ins) records its accesses explicitly. Host code of
 * an instrumented translation unit that touches device memory, or pinned memory that a
 * queued copy has not finished with, is reported too.
 */
#ifndef CUDA_HOST_RACE_H
#define CUDA_HOST_RACE_H

#include <stddef.h>
#include <stdint.h>

#include "cuda_host_device.h"

namespace cuda_host {

struct Thread;
enum AccessKind { ACCESS_READ, ACCESS_WRITE, ACCESS_ATOMIC };

// A site: a code address (kernel code; symbolized when reported) or a named harness
// operation with its caller's file and line.
uint32_t site_of_pc(uintptr_t pc);
uint32_t site_named(const char *what, const char *file, int line);
// "file:line (function)" of a code address, for messages.
void describe_pc(uintptr_t pc, char *buf, size_t n);

// The memory the detector covers. The harness's allocations live in [lo, lo + bytes),
// reserved once (memory.cpp); the shadow of that range is reserved here.
void race_reserve_arena(uintptr_t lo, size_t bytes);
// The shadow of [p, p + bytes) of the arena is forgotten (memory freed).
void race_forget(const void *p, size_t bytes);
// The dynamic shared memory of the block about to run, and its records (the static
// __shared__ section's records are kept here).
void race_set_dynamic_shared(const void *p, size_t bytes, void *shadow);
// The records for `bytes` of dynamic shared memory of block slot `slot` (launch.cpp's),
// kept from launch to launch: those of earlier blocks are stale by their agent.
static const int kMaxSlots = 2;
void *race_dynamic_shadow(int slot, size_t bytes);

// One access of the running kernel thread, or (no thread running) of the running stream
// operation, or else of the host. Reports and faults on a conflict.
void race_access(const void *p, size_t bytes, int kind, uint32_t site);
// The same on behalf of thread t of the running block (ldmatrix: the lane that gave a row).
void race_access_by(const Thread *t, const void *p, size_t bytes, int kind, uint32_t site);
// cp.async: from the issue to the wait that lands it, the copy's write of dst and its read
// of src are pending: a read of dst or a store to src by anyone (the issuer too) is
// reported. Both come after the harness has written dst (poison, then the data).
void race_async_issue(const void *dst, const void *src, size_t bytes, uint32_t site);
void race_async_land(const void *dst, const void *src, size_t bytes, uint32_t site);

// At each synchronisation point of thread t (before it takes effect): the words t loaded
// since the last one and has changed since were stored by t (race.h, "read-modify-write").
void race_settle(Thread *t);

// Agents: a launch takes one per block (block linear index order; grid and block are its
// dimensions, for reports), any other operation one (dimensions 0). Returns the first.
uint32_t race_new_agents(uint64_t op, uint64_t count, dim3 grid, dim3 block);
// A queued operation that will read (or write) pinned host memory [p, p + bytes): host
// code that touches it before the host is ordered after the operation is reported.
void race_note_pinned(uint64_t op, const void *p, size_t bytes, bool write);

// Whether the detector is on (CUDA_HOST_RACECHECK=0 turns it off; tests may switch it).
extern bool race_enabled;

}  // namespace cuda_host

#endif
