// launch.cpp: the launch checks and the grid loop of cuda_host_launch.h.
#include "cuda_host_launch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "race.h"
#include "runtime.h"
#include "scheduler.h"
#include "streams.h"

// The linker's bounds of the section that holds every __shared__ variable
// (cuda_host_device.h); weak, because a program may have none.
extern "C" char __start_cuda_host_shared[] __attribute__((weak));
extern "C" char __stop_cuda_host_shared[] __attribute__((weak));

namespace cuda_host {

static const uint8_t kPoison = 0xff;  // NaN as float or bf16, -1 as an integer
static const int kSlots = kMaxSlots;  // blocks of one launch alive at once (race.h)
static uint64_t seed;
static bool seed_set;
static uint64_t launches;  // each launch gets its own schedule from (seed, launch number)

static uint64_t schedule_seed() {
    if (!seed_set) {
        const char *env = getenv("CUDA_HOST_SEED");
        seed = env && *env ? strtoull(env, nullptr, 0) : 1;
        seed_set = true;
    }
    return seed;
}

// ---- the static __shared__ section ------------------------------------------------------
// One copy of every __shared__ variable exists, at its link-time address; the blocks alive
// at once take turns with it: the launcher saves the section's bytes into the block's slot
// and loads the next block's before that block runs. Not instrumented: under
// AddressSanitizer the section also holds the redzones between the variables, which may be
// read and written (their shadow says "poisoned", not their bytes) but not through checked
// code; hence word loops instead of memcpy (which AddressSanitizer intercepts).

static size_t static_shared_size() { return (size_t)(__stop_cuda_host_shared - __start_cuda_host_shared); }

__attribute__((no_sanitize_address)) static void copy_bytes(volatile unsigned char *dst,
                                                            const volatile unsigned char *src, size_t n) {
    size_t i = 0;
    if ((uintptr_t)dst % 8 == 0 && (uintptr_t)src % 8 == 0)
        for (; i + 8 <= n; i += 8) *(volatile uint64_t *)(dst + i) = *(const volatile uint64_t *)(src + i);
    for (; i < n; i++) dst[i] = src[i];
}

__attribute__((no_sanitize_address)) static void poison_bytes(volatile unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = kPoison;
}

bool check_pointer_argument(const char *name, int index, const void *p) {
    if (!p || is_kernel_accessible(p)) return true;
    if (sticky_error() == cudaSuccess) {
        refuse(cudaErrorLaunchFailure,
               "kernel %s: argument %d is %p, which is neither device memory (inside a cudaMalloc allocation) nor "
               "pinned host memory; the kernel would fault on its first access",
               name, index, p);
        set_sticky_fault();
    }
    return false;
}

void *dynamic_shared() {
    Thread *t = self("DYNAMIC_SHARED");
    return t->block->dynamic_shared;
}

// The kernel's __launch_bounds__ maximum (0: none), from the run of single-byte NOPs that
// cuda_host_device.h has the compiler put at its entry, after an endbr64 if there is one.
static int launch_bound(const void *kernel) {
    const unsigned char *code = (const unsigned char *)kernel;
    if (code[0] == 0xf3 && code[1] == 0x0f && code[2] == 0x1e && code[3] == 0xfa) code += 4;
    int n = 0;
    while (n <= 1024 && code[n] == 0x90) n++;
    return n;
}

// ---- the grid loop ----------------------------------------------------------------------

namespace {

// A place for one live block: its threads, fibers, dynamic shared memory (and its race
// records), and its copy of the static __shared__ section while another block has it.
struct Slot {
    Block block;
    std::vector<Thread> threads;
    std::vector<unsigned char> dynamic;
    void *shadow = nullptr;
    std::vector<unsigned char> static_copy;
    bool busy = false;
};

struct Grid {
    const char *name;
    dim3 grid, block;
    size_t dynamic_shared;
    std::function<void()> body;
    uint64_t rng;
    bool shuffle;
    std::unique_ptr<void, void (*)(void *)> arg;  // the kernel's arguments, which body reads
};

void run_grid(const Grid &g) {
    unsigned long long nblocks = (unsigned long long)g.grid.x * g.grid.y * g.grid.z;
    int nthreads = (int)(g.block.x * g.block.y * g.block.z);
    uint64_t rng = g.rng;
    uint64_t *schedule = g.shuffle ? &rng : nullptr;
    // Blocks in a shuffled order (nothing may depend on it: a GPU runs them in any order).
    std::vector<unsigned long long> order(nblocks);
    for (unsigned long long i = 0; i < nblocks; i++) order[i] = i;
    if (schedule)
        for (unsigned long long i = nblocks - 1; i > 0; i--) {
            unsigned long long j = rng_next(&rng) % (i + 1), swap = order[i];
            order[i] = order[j];
            order[j] = swap;
        }
    uint32_t first_agent = race_new_agents(running_op(), nblocks, g.grid, g.block);
    Fiber *fibers = fiber_pool(kSlots * nthreads);
    size_t section = static_shared_size();
    unsigned char *section_base = (unsigned char *)__start_cuda_host_shared;
    std::vector<Slot> slots(schedule && nblocks > 1 ? kSlots : 1);
    for (size_t s = 0; s < slots.size(); s++) {
        Slot &slot = slots[s];
        slot.threads.resize((size_t)nthreads);
        slot.dynamic.resize(g.dynamic_shared ? g.dynamic_shared : 1);
        slot.shadow = race_dynamic_shadow((int)s, g.dynamic_shared);
        slot.static_copy.resize(section);
        Block &b = slot.block;
        b.kernel = g.name;
        b.dim = g.block;
        b.grid = g.grid;
        b.nthreads = nthreads;
        b.threads = slot.threads.data();
        b.fibers = fibers + s * (size_t)nthreads;
        b.dynamic_shared = slot.dynamic.data();
        b.dynamic_shared_size = g.dynamic_shared;
        b.dynamic_shadow = slot.shadow;
        b.body = &g.body;
    }
    size_t next = 0, owner = 0;  // the next block of `order` to start; whose bytes the section holds
    int busy = 0;
    bool failed = false;
    while (!failed && (busy || next < nblocks)) {
        // fill the free slots, then pick a busy one (the first one without a schedule)
        for (size_t s = 0; s < slots.size() && next < nblocks; s++) {
            if (slots[s].busy) continue;
            Slot &slot = slots[s];
            unsigned long long id = order[next++];
            slot.block.idx = uint3{(unsigned)(id % g.grid.x), (unsigned)(id / g.grid.x % g.grid.y),
                                   (unsigned)(id / g.grid.x / g.grid.y)};
            slot.block.agent = first_agent + (uint32_t)id;
            memset(slot.dynamic.data(), kPoison, g.dynamic_shared);
            if (owner == s) poison_bytes(section_base, section);
            else poison_bytes(slot.static_copy.data(), section);
            block_start(&slot.block);
            slot.busy = true;
            busy++;
        }
        size_t s = 0;
        if (schedule) {
            size_t k = (size_t)(rng_next(&rng) % (uint64_t)busy);
            while (!slots[s].busy || k--) s++;
        } else {
            while (!slots[s].busy) s++;
        }
        if (s != owner) {
            copy_bytes(slots[owner].static_copy.data(), section_base, section);
            copy_bytes(section_base, slots[s].static_copy.data(), section);
            owner = s;
        }
        Block &b = slots[s].block;
        race_set_dynamic_shared(b.dynamic_shared, b.dynamic_shared_size, b.dynamic_shadow);
        if (!block_run_interval(&b, schedule)) {
            failed = b.failed;
            slots[s].busy = false;
            busy--;
        }
    }
    race_set_dynamic_shared(nullptr, 0, nullptr);
    for (Slot &slot : slots) {
        if (failed && slot.busy)  // abandoned mid-run: their stacks must be cleaned before reuse
            for (int i = 0; i < nthreads; i++)
                if (slot.threads[i].state != RETURNED) slot.threads[i].fiber->dirty = true;
    }
    if (failed) set_sticky_fault();
}

}  // namespace

cudaError_t launch_grid(const char *name, const void *kernel, dim3 grid, dim3 block, size_t dynamic_shared,
                        cudaStream_t stream, void (*body)(void *), void *arg, void (*destroy)(void *)) {
    std::unique_ptr<void, void (*)(void *)> owned(arg, destroy);
    if (sticky_error() != cudaSuccess) return sticky_error();
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (!block.x || !block.y || !block.z || block.x > 1024 || block.y > 1024 || block.z > 64 || threads > 1024)
        return refuse(cudaErrorInvalidConfiguration,
                      "launch of %s refused: blockDim (%u,%u,%u) = %llu threads; a block has at most 1024 threads, "
                      "blockDim at most (1024,1024,64)",
                      name, block.x, block.y, block.z, threads);
    if (!grid.x || !grid.y || !grid.z || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
        return refuse(cudaErrorInvalidConfiguration,
                      "launch of %s refused: gridDim (%u,%u,%u); each dimension must be at least 1 and at most "
                      "(2^31-1, 65535, 65535)",
                      name, grid.x, grid.y, grid.z);
    int bound = launch_bound(kernel);
    if (bound && threads > (unsigned long long)bound)
        return refuse(cudaErrorLaunchOutOfResources,
                      "launch of %s refused: blockDim (%u,%u,%u) = %llu threads, more than its __launch_bounds__ (%d)",
                      name, block.x, block.y, block.z, threads, bound);
    size_t limit = max_dynamic_shared(kernel);
    if (dynamic_shared > limit)
        return refuse(cudaErrorInvalidValue,
                      "launch of %s refused: %zu bytes of dynamic shared memory, more than the %zu allowed (%s)", name,
                      dynamic_shared, limit,
                      limit == kDefaultDynamicShared
                          ? "48 KiB without cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, n)"
                          : "set by cudaFuncSetAttribute");
    if (!valid_stream(stream)) return refuse_stream(name, stream);

    // The schedule is fixed now, from the seed and the launch's number, whenever it runs.
    uint64_t rng = schedule_seed();
    auto queued = std::make_shared<Grid>(Grid{name, grid, block, dynamic_shared, [body, arg]() { body(arg); },
                                              rng ^ ++launches * 0xd1342543de82ef95ull, rng != 0, std::move(owned)});
    static std::set<std::string> what;  // "kernel NAME", for reports about the operation
    const char *op_name = what.insert(std::string("kernel ") + name).first->c_str();
    enqueue(stream, op_name, (uintptr_t)__builtin_return_address(0), [queued]() { run_grid(*queued); });
    return cudaSuccess;
}

}  // namespace cuda_host

void cuda_host_set_seed(uint64_t s) {
    cuda_host::seed = s;
    cuda_host::seed_set = true;
    cuda_host::seed_streams(s);
}
uint64_t cuda_host_seed(void) { return cuda_host::schedule_seed(); }
