/*
 * scheduler.h: how the harness runs one thread block (internal to test/cuda_host/).
 *
 * Every CUDA thread of the block is a fiber (fiber.h). The scheduler runs them in rounds:
 * each round takes the threads that can run, puts them in an order drawn from the seeded
 * generator, and runs each one until it stops at a synchronisation point or returns. A
 * thread therefore runs uninterrupted from one synchronisation point to the next, and
 * which thread gets there first changes with the seed, so code that reads another
 * thread's data without a barrier in between sees it missing (or poison) under some order.
 *
 * Synchronisation points, and how a thread waits at them:
 *   - __syncthreads and friends (block barrier): the thread parks with the barrier's source
 *     line. When nothing can run any more, every thread that has not returned must be
 *     parked at the same barrier; then all are released. Anything else is a fault: threads
 *     at different barriers, or a barrier some threads will never reach because they
 *     returned (bar.sync counts the whole block; CUDA calls a barrier in divergent code
 *     undefined).
 *   - warp operations (shuffles, votes, __syncwarp, ldmatrix, mma): the thread posts its
 *     operands and parks. The lane that completes the set of lanes named in the mask
 *     computes every lane's result at once and releases them; all of them must be at the
 *     same operation (kind and qualifiers). A mask without the calling lane, a mask naming a
 *     lane that does not exist or has returned, and lanes that can never meet (one at a
 *     barrier, another at a shuffle waiting for it) are faults.
 * A fault stops the launch: the message names the kernel, block, thread and source line.
 *
 * What this cannot show: there is no race detector (no per-byte record of who wrote shared
 * memory when, as compute-sanitizer's racecheck keeps), so a race shows only through wrong
 * results under some schedule; a thread is never interrupted between synchronisation
 * points, so interleavings inside such a stretch (another thread's write landing between a
 * thread's non-atomic read and write of the same word) never happen; and a thread that
 * spins on a value another thread of its block will set never ends.
 */
#ifndef CUDA_HOST_SCHEDULER_H
#define CUDA_HOST_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include <vector>

#include "cuda_host_device.h"
#include "cuda_host_sync.h"
#include "fiber.h"

namespace cuda_host {

struct Block;
struct Thread;

// A warp operation's kinds. Lanes meeting in one operation must agree on kind and qual.
enum WarpKind { WARP_SHFL, WARP_VOTE, WARP_SYNC, WARP_LDMATRIX, WARP_MMA };

// One lane's part in a warp operation: posted by the lane, read and answered by the lane
// that completes the set.
struct WarpOp {
    int kind;
    int qual;             // shuffle mode and width, vote kind, ldmatrix shape, ...
    const char *name;     // the intrinsic, for messages
    const char *file;
    int line;
    unsigned mask;
    uint64_t in[10];      // the lane's operands
    const void *ptr;      // the lane's address operand (ldmatrix)
    uint64_t out[4];      // the lane's results
    // Computes the results of every lane in mask from their operands (set by the lanes).
    void (*complete)(Thread *const lanes[32], unsigned mask);
};

// A cp.async issued by a thread: done at the thread's matching wait.
struct AsyncCopy {
    void *dst;
    const void *src;
    int bytes;
};

enum ThreadState { RUNNABLE, AT_BARRIER, AT_WARP, RETURNED };

struct Thread {
    Builtins builtins;  // threadIdx and friends, as the kernel reads them
    Block *block;
    Fiber *fiber;
    int warp, lane;  // of the linear index x + y·bx + z·bx·by: warps are 32 consecutive threads
    ThreadState state;
    // at a block barrier:
    int bar_op;
    const char *bar_name, *bar_file;
    int bar_line, bar_pred, bar_result;
    WarpOp op;  // at a warp operation
    std::vector<AsyncCopy> async_open;                  // cp.async not yet committed
    std::vector<std::vector<AsyncCopy>> async_groups;   // committed groups, oldest first
};

struct Block {
    const char *kernel;
    uint3 idx;
    dim3 dim, grid;
    int nthreads;
    Thread *threads;
    unsigned char *dynamic_shared;  // exactly the launch's dynamic shared memory bytes
    size_t dynamic_shared_size;
    void (*body)(void *);  // the kernel call every thread makes
    void *body_arg;
    int returned;  // threads that have returned from the kernel
    bool failed;
};

// The thread running now; a fault if called on the host (outside a kernel).
Thread *self(const char *what);

// Runs every thread of b to completion or to a fault (b->failed, message in fault_message).
// rng null: threads in order (thread 0 first) every round; otherwise a seeded shuffle.
void run_block(Block *b, uint64_t *rng);

// Reports a fault in the running thread's kernel and abandons the launch: does not return.
[[noreturn]] void thread_fault(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// The running thread's part in a warp operation: t->op must be filled in (warp_op_begin,
// then the operands). Returns when the operation is complete, with the results in t->op.out.
void warp_meet(Thread *t);

// Starts the running thread's next warp operation: the fields every kind has. The caller
// sets the lane's operands (in, ptr) and calls warp_meet.
static inline WarpOp *warp_op_begin(Thread *t, int kind, int qual, const char *name, const char *file, int line,
                                    unsigned mask, void (*complete)(Thread *const lanes[32], unsigned mask)) {
    WarpOp *op = &t->op;
    op->kind = kind, op->qual = qual, op->name = name, op->file = file, op->line = line, op->mask = mask;
    op->complete = complete;
    return op;
}

// The last fault's message ("" if none); setting it also prints it on stderr.
const char *fault_message();
void clear_fault_message();
void set_fault_message(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// SplitMix64 (Steele, Lea, Flood 2014): the seeded generator behind every schedule.
static inline uint64_t rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

}  // namespace cuda_host

#endif
