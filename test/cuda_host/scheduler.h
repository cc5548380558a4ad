/*
 * scheduler.h: how the harness runs thread blocks (internal to test/cuda_host/).
 *
 * Every CUDA thread of a block is a fiber (fiber.h). A block runs one barrier interval at a
 * time (block_run_interval): from the start, or a __syncthreads release, until every
 * thread that has not returned waits at the next barrier. Inside an interval a thread runs
 * uninterrupted from one synchronisation point to the next, and the scheduler picks, with
 * the seeded generator, one of these schedules for the interval:
 *   - rounds (half the intervals): the runnable threads in a shuffled order, each to its
 *     next synchronisation point, again and again: warps advance in step, finely mixed;
 *   - run-ahead (a quarter): one warp, drawn at random, runs alone until it blocks at the
 *     barrier (or returns), then the others in rounds: a warp far ahead of the rest, as a
 *     GPU's warp scheduler may let happen;
 *   - a few ahead (an eighth): a random subset of the warps runs ahead, in rounds among
 *     themselves, then the rest;
 *   - one by one (an eighth): the warps in a random order, each alone to the barrier.
 * All four are legal on a GPU, so a correct kernel gives the same result under each; a
 * kernel that reads what another warp writes without a barrier between them gets stale
 * data or poison under some of them, and the race detector (race.h) reports it under all.
 * Seed 0: rounds in thread order, the order a reader imagines.
 *
 * Several blocks of one launch are alive at once (launch.cpp): the grid runs its blocks in
 * a few slots, and after each interval of one block the launcher may switch to another,
 * so blocks interleave at their barriers.
 *
 * Synchronisation points, and how a thread waits at them:
 *   - __syncthreads and friends (block barrier): the thread parks with the barrier's source
 *     line. When nothing can run any more, every thread that has not returned must be
 *     parked at the same barrier; then all are released and the block's interval count
 *     goes up. Anything else is a fault: threads at different barriers, or a barrier some
 *     threads will never reach because they returned (bar.sync counts the whole block;
 *     CUDA calls a barrier in divergent code undefined).
 *   - warp operations (shuffles, votes, __syncwarp, ldmatrix, mma): the thread posts its
 *     operands and parks. The lane that completes the set of lanes named in the mask
 *     computes every lane's result at once and releases them; all of them must be at the
 *     same operation (kind and qualifiers), and for the .aligned PTX instructions (ldmatrix,
 *     mma) at the same call site too: .aligned means every lane executes the same
 *     instruction, so two mma.sync in the two sides of a branch do not meet. A mask without
 *     the calling lane, a mask naming a lane that does not exist or has returned, and lanes
 *     that can never meet (one at a barrier, another at a shuffle waiting for it) are
 *     faults. A __syncwarp also joins the lanes' clocks for the race detector; the other
 *     warp operations order no memory.
 * A fault stops the launch: the message names the kernel, block, thread and source line.
 *
 * What this cannot show: a thread is never interrupted between synchronisation points, so
 * interleavings inside such a stretch (another thread's write landing between a thread's
 * non-atomic read and write of one word) never happen in the data (the race detector still
 * reports the conflict); and a thread that spins on a value another thread of its block
 * will set never ends.
 */
#ifndef CUDA_HOST_SCHEDULER_H
#define CUDA_HOST_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include <functional>
#include <vector>

#include "cuda_host_device.h"
#include "cuda_host_sync.h"
#include "fiber.h"

namespace cuda_host {

struct Block;
struct Thread;

// A warp operation's kinds. Lanes meeting in one operation must agree on kind and qual
// (and, for the .aligned ones, on the call site).
enum WarpKind { WARP_SHFL, WARP_VOTE, WARP_SYNC, WARP_LDMATRIX, WARP_MMA };

// One lane's part in a warp operation: posted by the lane, read and answered by the lane
// that completes the set.
struct WarpOp {
    int kind;
    int qual;             // shuffle mode and width, vote kind, ldmatrix shape, ...
    const char *name;     // the intrinsic, for messages
    const char *file;     // the call site
    int line;
    unsigned mask;
    uint64_t in[10];      // the lane's operands
    const void *ptr;      // the lane's address operand (ldmatrix)
    uint64_t out[4];      // the lane's results
    // Computes the results of every lane in mask from their operands (set by the lanes).
    void (*complete)(Thread *const lanes[32], unsigned mask);
};

// A cp.async issued by a thread: the source is read at the issue, the destination written
// at the thread's matching wait.
struct AsyncCopy {
    void *dst;
    const void *src;
    unsigned char data[16];  // the source's bytes at the issue
    int bytes;
    uint32_t site;
};

enum ThreadState { RUNNABLE, AT_BARRIER, AT_WARP, RETURNED };

// A word the thread loaded since its last synchronisation point, with its value then: the
// race detector's way to see the store of a read-modify-write, whose instrumentation the
// compiler drops (race.h).
struct LoadMemo {
    uintptr_t word;
    uint32_t value, site;
};
static const int kLoadMemos = 16;

struct Thread {
    Builtins builtins;  // threadIdx and friends, as the kernel reads them
    Block *block;
    Fiber *fiber;
    int tid, warp, lane;  // tid = x + y·bx + z·bx·by; warps are 32 consecutive tids
    ThreadState state;
    // at a block barrier:
    int bar_op;
    const char *bar_name, *bar_file;
    int bar_line, bar_pred, bar_result;
    WarpOp op;  // at a warp operation
    uint32_t clock[32];  // __syncwarp vector clock over the lanes of its warp (race.h)
    LoadMemo memos[kLoadMemos];  // a ring: memo_count entries, the oldest at memo_first
    int memo_first, memo_count;
    std::vector<AsyncCopy> async_open;                  // cp.async not yet committed
    std::vector<std::vector<AsyncCopy>> async_groups;   // committed groups, oldest first
};

struct Block {
    const char *kernel;
    uint3 idx;
    dim3 dim, grid;
    int nthreads;
    Thread *threads;
    Fiber *fibers;                  // nthreads of them
    unsigned char *dynamic_shared;  // exactly the launch's dynamic shared memory bytes
    size_t dynamic_shared_size;
    void *dynamic_shadow;           // the race detector's records of it
    const std::function<void()> *body;  // the kernel call every thread makes
    uint32_t agent;                 // the race detector's name for this block
    uint32_t interval;              // barrier releases so far
    uint32_t waiting[32], gone[32];  // per warp: lanes at a warp operation, lanes returned
    int returned;                   // threads that have returned from the kernel
    bool failed;
};

// The thread running now (null on the host), and the same as self() does it: a fault if
// called on the host (outside a kernel).
extern Thread *current_thread;
Thread *self(const char *what);

// Prepares every thread of b to run the kernel from its start (b->fibers set).
void block_start(Block *b);
// Runs b for one barrier interval, as the header comment says; rng null: rounds in thread
// order. Returns true when every live thread waits at a barrier (released: the next call
// runs the next interval), false when the block has finished or failed (b->failed, message
// in fault_message).
bool block_run_interval(Block *b, uint64_t *rng);

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
