// memory.cpp: device and pinned host memory, and the copies and fills between them
// (cuda_host_api.h states the rules; streams.h how the asynchronous ones are ordered).
//
// Both kinds come from one range of address space reserved at the first allocation
// (16 GiB for device memory, then 4 GiB for pinned host memory), so that "is this harness
// memory?" is one comparison for the race detector, whose shadow of the range race.cpp
// reserves alongside. An allocation gets whole pages and one more page left unmapped after
// them, so running off its end faults (and, under AddressSanitizer, the bytes between its
// end and the page end are poisoned: an overrun is reported at the first byte). Freed
// pages are unmapped (their contents and shadow dropped) and their addresses are not
// handed out again until the range has been used up, so a use after free faults too.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <map>
#include <memory>
#include <vector>

#include "race.h"
#include "runtime.h"
#include "streams.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace cuda_host {

namespace {

const size_t kPage = 4096;
const size_t kDeviceRange = (size_t)16 << 30, kPinnedRange = (size_t)4 << 30;
const unsigned char kPoison = 0xff;  // what fresh memory holds: NaN as float or bf16, -1 as an integer

char *arena;  // [device part | pinned part]

struct Part {
    const char *name;
    size_t base, size, next;             // offsets in the arena; next: never used before it
    std::map<size_t, size_t> free_spans;  // offset -> bytes, reused once `next` reaches the end
    size_t live, peak, live_count;
    uint64_t total_count;
};
Part device_part = {"device", 0, kDeviceRange, 0, {}, 0, 0, 0, 0};
Part pinned_part = {"pinned host", kDeviceRange, kPinnedRange, 0, {}, 0, 0, 0, 0};

struct Allocation {
    size_t bytes, span;  // asked for; pages taken (the guard page included)
    Part *part;
    uint64_t serial;
    uintptr_t caller;
};
std::map<uintptr_t, Allocation> allocations;  // by base address
uint64_t serials = 0;

bool reserve_arena() {
    if (arena) return true;
    void *p = mmap(nullptr, kDeviceRange + kPinnedRange, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return false;
    arena = (char *)p;
    race_reserve_arena((uintptr_t)arena, kDeviceRange + kPinnedRange);
    return true;
}

// `span` bytes (whole pages) of the part, or SIZE_MAX.
size_t take_span(Part &part, size_t span) {
    if (part.next + span <= part.size) {
        size_t at = part.base + part.next;
        part.next += span;
        return at;
    }
    for (auto it = part.free_spans.begin(); it != part.free_spans.end(); ++it)
        if (it->second >= span) {
            size_t at = it->first, rest = it->second - span;
            part.free_spans.erase(it);
            if (rest) part.free_spans[at + span] = rest;
            return at;
        }
    return SIZE_MAX;
}

void give_span(Part &part, size_t at, size_t span) {
    auto next = part.free_spans.find(at + span);
    if (next != part.free_spans.end()) {
        span += next->second;
        part.free_spans.erase(next);
    }
    auto prev = part.free_spans.lower_bound(at);
    if (prev != part.free_spans.begin() && (--prev)->first + prev->second == at) {
        prev->second += span;
    } else {
        part.free_spans[at] = span;
    }
}

cudaError_t allocate(Part &part, const char *call, void **p, size_t bytes, uintptr_t caller) {
    if (!p) return refuse(cudaErrorInvalidValue, "%s: null result pointer", call);
    if (!reserve_arena()) return refuse(cudaErrorMemoryAllocation, "%s: cannot reserve the harness's memory range", call);
    size_t pages = bytes / kPage + 1;  // (+1: at least one, and room for the end)
    if (bytes > part.size) return refuse(cudaErrorMemoryAllocation, "%s: %zu bytes is more than the harness has", call, bytes);
    size_t span = (pages + 1) * kPage, at = take_span(part, span);
    if (at == SIZE_MAX)
        return refuse(cudaErrorMemoryAllocation, "%s: out of %s memory for %zu bytes (%zu bytes live in the harness's %zu GiB)",
                      call, part.name, bytes, part.live, part.size >> 30);
    char *mem = arena + at;
    if (mprotect(mem, pages * kPage, PROT_READ | PROT_WRITE) != 0)
        return refuse(cudaErrorMemoryAllocation, "%s: cannot map %zu bytes", call, bytes);
#if defined(__SANITIZE_ADDRESS__)
    __asan_unpoison_memory_region(mem, pages * kPage);
    __asan_poison_memory_region(mem + bytes, pages * kPage - bytes);
#endif
    memset(mem, kPoison, bytes);
    allocations[(uintptr_t)mem] = Allocation{bytes, span, &part, ++serials, caller};
    part.live += bytes;
    part.live_count++;
    part.total_count++;
    if (part.live > part.peak) part.peak = part.live;
    *p = mem;
    return cudaSuccess;
}

cudaError_t release(Part &part, const char *call, void *p) {
    auto it = allocations.find((uintptr_t)p);
    if (it == allocations.end() || it->second.part != &part) {
        bool device = &part == &device_part;
        return refuse(device ? cudaErrorInvalidDevicePointer : cudaErrorInvalidValue, "%s(%p): not a pointer %s returned",
                      call, p, device ? "cudaMalloc" : "cudaMallocHost or cudaHostAlloc");
    }
    host_wait_all();  // freeing synchronises the device, as CUDA's does
    const Allocation a = it->second;
    allocations.erase(it);
    char *mem = (char *)p;
    size_t mapped = a.span - kPage;
    mprotect(mem, mapped, PROT_NONE);
    madvise(mem, mapped, MADV_DONTNEED);
    race_forget(mem, mapped);
    give_span(part, (size_t)(mem - arena), a.span);
    part.live -= a.bytes;
    part.live_count--;
    return sticky_error();
}

// The live allocation holding [p, p + bytes) (of either kind), or null.
const Allocation *find_allocation(const void *p, size_t bytes) {
    uintptr_t a = (uintptr_t)p;
    auto it = allocations.upper_bound(a);
    if (it == allocations.begin()) return nullptr;
    --it;
    if (a - it->first > it->second.bytes || bytes > it->second.bytes - (a - it->first)) return nullptr;
    return &it->second;
}

// Whether p is inside an allocation's pages but [p, p + bytes) is not inside its bytes: an
// overrun rather than unrelated host memory.
bool overruns(const void *p, size_t bytes) {
    if (find_allocation(p, bytes)) return false;
    return find_allocation(p, 1) != nullptr;
}

}  // namespace

bool is_pinned(const void *p, size_t bytes) {
    const Allocation *a = find_allocation(p, bytes);
    return a && a->part == &pinned_part;
}

bool is_kernel_accessible(const void *p) { return find_allocation(p, 0) != nullptr; }

void describe_address(const void *p, char *buf, size_t n) {
    auto it = allocations.upper_bound((uintptr_t)p);
    if (it == allocations.begin() || !find_allocation(p, 1)) {
        snprintf(buf, n, "memory at %p", p);
        return;
    }
    --it;
    snprintf(buf, n, "%s allocation #%llu (%zu bytes) at offset %zu", it->second.part->name,
             (unsigned long long)it->second.serial, it->second.bytes, (size_t)((uintptr_t)p - it->first));
}

}  // namespace cuda_host

using namespace cuda_host;

bool cuda_host_is_device(const void *p, size_t bytes) {
    const Allocation *a = find_allocation(p, bytes);
    return a && a->part == &device_part;
}

// The device's memory: an H100 80GB's 81559 MiB unless CUDA_HOST_MEMORY sets a smaller
// device (so that tests can run programs out of memory).
static size_t device_memory() {
    const char *env = getenv("CUDA_HOST_MEMORY");
    return env && atoll(env) > 0 ? (size_t)atoll(env) : (size_t)81559 << 20;
}

// With CUDA_HOST_REPORT_PEAK set, the program says at exit how much it had allocated at most.
static void report_peak() { fprintf(stderr, "cuda_host: peak cudaMalloc total %zu bytes\n", device_part.peak); }

cudaError_t cudaMalloc(void **p, size_t bytes) {
    if (sticky_error()) return sticky_error();
    static bool registered = false;
    if (!registered && getenv("CUDA_HOST_REPORT_PEAK")) atexit(report_peak);
    registered = true;
    if (bytes > device_memory() - device_part.live)
        return refuse(cudaErrorMemoryAllocation, "cudaMalloc: out of memory for %zu bytes (%zu of %zu in use)", bytes,
                      device_part.live, device_memory());
    return allocate(device_part, "cudaMalloc", p, bytes, (uintptr_t)__builtin_return_address(0));
}

cudaError_t cudaFree(void *p) {
    if (sticky_error()) return sticky_error();
    if (!p) return cudaSuccess;
    return release(device_part, "cudaFree", p);
}

cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned int flags) {
    if (sticky_error()) return sticky_error();
    const unsigned known = cudaHostAllocPortable | cudaHostAllocMapped | cudaHostAllocWriteCombined;
    if (flags & ~known) return refuse(cudaErrorInvalidValue, "cudaHostAlloc: flags 0x%x are not emulated", flags);
    return allocate(pinned_part, "cudaHostAlloc", p, bytes, (uintptr_t)__builtin_return_address(0));
}

cudaError_t cudaMallocHost(void **p, size_t bytes) {
    if (sticky_error()) return sticky_error();
    return allocate(pinned_part, "cudaMallocHost", p, bytes, (uintptr_t)__builtin_return_address(0));
}

cudaError_t cudaFreeHost(void *p) {
    if (sticky_error()) return sticky_error();
    if (!p) return cudaSuccess;
    return release(pinned_part, "cudaFreeHost", p);
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    if (sticky_error()) return sticky_error();
    if (!free_bytes || !total_bytes) return refuse(cudaErrorInvalidValue, "cudaMemGetInfo: null result pointer");
    *total_bytes = device_memory();
    *free_bytes = *total_bytes > device_part.live ? *total_bytes - device_part.live : 0;
    return cudaSuccess;
}

void cuda_host_memory_stats(CudaHostMemoryStats *s) {
    s->device_live_bytes = device_part.live;
    s->device_peak_bytes = device_part.peak;
    s->device_live_allocations = device_part.live_count;
    s->device_allocations = device_part.total_count;
    s->pinned_live_bytes = pinned_part.live;
    s->pinned_peak_bytes = pinned_part.peak;
}

size_t cuda_host_peak_allocated(void) { return device_part.peak; }

void cuda_host_reset_peak_memory(void) {
    device_part.peak = device_part.live;
    pinned_part.peak = pinned_part.live;
}

void cuda_host_print_allocations(void) {
    for (const auto &it : allocations) {
        char where[512];
        describe_pc(it.second.caller, where, sizeof(where));
        fprintf(stderr, "cuda_host: %s allocation #%llu: %zu bytes at %p, from %s\n", it.second.part->name,
                (unsigned long long)it.second.serial, it.second.bytes, (void *)it.first, where);
    }
}

// ---- copies and fills -------------------------------------------------------------------

namespace {

const char *kind_name(cudaMemcpyKind kind) {
    switch (kind) {
        case cudaMemcpyHostToHost: return "HostToHost";
        case cudaMemcpyHostToDevice: return "HostToDevice";
        case cudaMemcpyDeviceToHost: return "DeviceToHost";
        case cudaMemcpyDeviceToDevice: return "DeviceToDevice";
        default: return "Default";
    }
}

// The checks of a copy; *dst_dev, *src_dev: which side is device memory.
cudaError_t check_copy(const char *call, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, bool *dst_dev,
                       bool *src_dev) {
    if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault)
        return refuse(cudaErrorInvalidMemcpyDirection, "%s: kind %d", call, (int)kind);
    *dst_dev = cuda_host_is_device(dst, bytes), *src_dev = cuda_host_is_device(src, bytes);
    bool dst_want = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool src_want = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    // A pointer that lies partly in an allocation is an overrun, not host memory.
    if (overruns(dst, bytes) || overruns(src, bytes))
        return refuse(cudaErrorInvalidValue, "%s of %zu bytes runs past the end of the %s allocation", call, bytes,
                      overruns(dst, bytes) ? "destination" : "source");
    if (kind != cudaMemcpyDefault && (*dst_dev != dst_want || *src_dev != src_want))
        return refuse(cudaErrorInvalidValue, "%s %s: destination %p is %s memory, source %p is %s memory", call,
                      kind_name(kind), dst, *dst_dev ? "device" : "host", src, *src_dev ? "device" : "host");
    return cudaSuccess;
}

cudaError_t copy(const char *call, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream,
                 bool async, uintptr_t caller) {
    if (sticky_error()) return sticky_error();
    if (async && !valid_stream(stream)) return refuse_stream(call, stream);
    if (bytes == 0) return cudaSuccess;
    bool dst_dev = false, src_dev = false;
    cudaError_t e = check_copy(call, dst, src, bytes, kind, &dst_dev, &src_dev);
    if (e != cudaSuccess) return e;
    bool dst_pinned = is_pinned(dst, bytes), src_pinned = is_pinned(src, bytes);
    if (!dst_dev && !src_dev && !dst_pinned && !src_pinned) {  // host to host: at once
        memmove(dst, src, bytes);
        return cudaSuccess;
    }
    // When the host waits, by CUDA's "API synchronization behavior": a pageable source is
    // staged at the call (cudaMemcpy first synchronises its stream), and the copy itself
    // runs later; a pageable destination, or any cudaMemcpy but from pageable memory or
    // between device buffers, makes the call wait for the copy. Pinned memory is read and
    // written when the copy runs. The operation records its accesses for the race detector,
    // then copies.
    bool src_pageable = !src_dev && !src_pinned, dst_pageable = !dst_dev && !dst_pinned;
    bool wait = dst_pageable || (!async && !src_pageable && !(src_dev && dst_dev));
    std::shared_ptr<std::vector<unsigned char>> staged;
    if (src_pageable) {
        if (!async) host_wait_stream(nullptr);
        staged = std::make_shared<std::vector<unsigned char>>((const unsigned char *)src, (const unsigned char *)src + bytes);
    }
    uint64_t id = enqueue(async ? stream : nullptr, call, caller, [staged, dst, src, bytes, caller]() {
        uint32_t site = site_of_pc(caller);
        const void *from = staged ? staged->data() : src;
        race_access(from, bytes, ACCESS_READ, site);
        race_access(dst, bytes, ACCESS_WRITE, site);
        memmove(dst, from, bytes);
    });
    if (src_pinned) race_note_pinned(id, src, bytes, false);
    if (dst_pinned) race_note_pinned(id, dst, bytes, true);
    if (wait) host_wait(id);
    return sticky_error();
}

cudaError_t fill(const char *call, void *p, int value, size_t bytes, cudaStream_t stream, uintptr_t caller) {
    if (sticky_error()) return sticky_error();
    if (!valid_stream(stream)) return refuse_stream(call, stream);
    if (bytes && !cuda_host_is_device(p, bytes))
        return refuse(cudaErrorInvalidValue, "%s(%p, %zu bytes): not inside one device allocation", call, p, bytes);
    if (bytes == 0) return cudaSuccess;
    enqueue(stream, call, caller, [p, value, bytes, caller]() {
        race_access(p, bytes, ACCESS_WRITE, site_of_pc(caller));
        memset(p, value, bytes);
    });
    return cudaSuccess;
}

}  // namespace

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    return copy("cudaMemcpy", dst, src, bytes, kind, nullptr, false, (uintptr_t)__builtin_return_address(0));
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
    return copy("cudaMemcpyAsync", dst, src, bytes, kind, stream, true, (uintptr_t)__builtin_return_address(0));
}

cudaError_t cudaMemset(void *p, int value, size_t bytes) {
    return fill("cudaMemset", p, value, bytes, nullptr, (uintptr_t)__builtin_return_address(0));
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t stream) {
    return fill("cudaMemsetAsync", p, value, bytes, stream, (uintptr_t)__builtin_return_address(0));
}
