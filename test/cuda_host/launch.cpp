// launch.cpp: the launch checks and the grid loop of cuda_host_launch.h.
#include "cuda_host_launch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "runtime.h"
#include "scheduler.h"

// The linker's bounds of the section that holds every __shared__ variable
// (cuda_host_device.h); weak, because a program may have none.
extern "C" char __start_cuda_host_shared[] __attribute__((weak));
extern "C" char __stop_cuda_host_shared[] __attribute__((weak));

namespace cuda_host {

static const uint8_t kPoison = 0xff;  // NaN as float or bf16, -1 as an integer
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

// Fills the static __shared__ variables with poison. Not instrumented: under
// AddressSanitizer the section also holds the redzones between the variables, which may
// be written (their shadow says "poisoned", not their bytes) but not through checked code.
__attribute__((no_sanitize_address)) static void poison_static_shared() {
    for (volatile char *p = __start_cuda_host_shared; p < __stop_cuda_host_shared; p++) *p = (char)kPoison;
}

bool check_pointer_argument(const char *name, int index, const void *p) {
    if (!p || cuda_host_is_device(p, 0)) return true;
    if (sticky_error() == cudaSuccess) {
        refuse(cudaErrorLaunchFailure,
               "kernel %s: argument %d is %p, which is not device memory (not inside a cudaMalloc allocation); "
               "the kernel would fault on its first access",
               name, index, p);
        set_sticky_fault();
    }
    return false;
}

void *dynamic_shared() {
    Thread *t = self("DYNAMIC_SHARED");
    return t->block->dynamic_shared;
}

cudaError_t launch_grid(const char *name, const void *kernel, dim3 grid, dim3 block, size_t dynamic_shared,
                        cudaStream_t stream, void (*body)(void *), void *arg) {
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
    size_t limit = max_dynamic_shared(kernel);
    if (dynamic_shared > limit)
        return refuse(cudaErrorInvalidValue,
                      "launch of %s refused: %zu bytes of dynamic shared memory, more than the %zu allowed (%s)", name,
                      dynamic_shared, limit,
                      limit == kDefaultDynamicShared
                          ? "48 KiB without cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, n)"
                          : "set by cudaFuncSetAttribute");
    if (!valid_stream(stream))
        return refuse(cudaErrorInvalidResourceHandle, "launch of %s refused: unknown stream", name);

    uint64_t rng = schedule_seed();
    bool shuffle = rng != 0;
    rng ^= ++launches * 0xd1342543de82ef95ull;

    // Blocks in a shuffled order (nothing may depend on it: a GPU runs them in any order).
    unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
    std::vector<unsigned long long> order(nblocks);
    for (unsigned long long i = 0; i < nblocks; i++) order[i] = i;
    if (shuffle)
        for (unsigned long long i = nblocks - 1; i > 0; i--) {
            unsigned long long j = rng_next(&rng) % (i + 1), swap = order[i];
            order[i] = order[j];
            order[j] = swap;
        }

    std::vector<Thread> thread_state((size_t)threads);
    unsigned char *shared = (unsigned char *)malloc(dynamic_shared ? dynamic_shared : 1);
    if (!shared) return refuse(cudaErrorMemoryAllocation, "launch of %s: out of memory for shared memory", name);
    Block b;
    b.kernel = name;
    b.dim = block;
    b.grid = grid;
    b.nthreads = (int)threads;
    b.threads = thread_state.data();
    b.dynamic_shared = shared;
    b.dynamic_shared_size = dynamic_shared;
    b.body = body;
    b.body_arg = arg;
    cudaError_t result = cudaSuccess;
    for (unsigned long long i = 0; i < nblocks; i++) {
        unsigned long long id = order[i];
        b.idx = uint3{(unsigned)(id % grid.x), (unsigned)(id / grid.x % grid.y), (unsigned)(id / grid.x / grid.y)};
        memset(shared, kPoison, dynamic_shared);
        poison_static_shared();
        run_block(&b, shuffle ? &rng : nullptr);
        if (b.failed) {
            set_sticky_fault();
            result = cudaErrorLaunchFailure;
            break;
        }
    }
    free(shared);
    return result;
}

}  // namespace cuda_host

void cuda_host_set_seed(uint64_t s) {
    cuda_host::seed = s;
    cuda_host::seed_set = true;
}
uint64_t cuda_host_seed(void) { return cuda_host::schedule_seed(); }
