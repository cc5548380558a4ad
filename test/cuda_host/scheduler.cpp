// scheduler.cpp: see scheduler.h.
#include "scheduler.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "race.h"

namespace cuda_host {

const Builtins *builtins = nullptr;
Thread *current_thread = nullptr;
static char fault_text[2048];
static bool print_faults = true;

const char *fault_message() { return fault_text; }
void clear_fault_message() { fault_text[0] = 0; }

void set_fault_message(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fault_text, sizeof(fault_text), fmt, ap);
    va_end(ap);
    if (print_faults) fprintf(stderr, "cuda_host: %s\n", fault_text);
}

}  // namespace cuda_host

void cuda_host_print_faults(bool print) { cuda_host::print_faults = print; }

namespace cuda_host {

Thread *self(const char *what) {
    if (!current_thread) {
        fprintf(stderr, "cuda_host: %s called outside a kernel\n", what);
        abort();
    }
    return current_thread;
}

// "kernel k, block (x,y,z)" and "thread (x,y,z)", the prefixes of every fault message.
static void where_block(char *buf, size_t n, const Block *b) {
    snprintf(buf, n, "kernel %s, block (%u,%u,%u)", b->kernel, b->idx.x, b->idx.y, b->idx.z);
}
static const char *thread_name(char *buf, size_t n, const Thread *t) {
    snprintf(buf, n, "thread (%u,%u,%u)", t->builtins.thread_idx.x, t->builtins.thread_idx.y,
             t->builtins.thread_idx.z);
    return buf;
}

static void block_fault(Block *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void block_fault(Block *b, const char *fmt, ...) {
    char where[256], what[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    where_block(where, sizeof(where), b);
    set_fault_message("%s: %s", where, what);
    b->failed = true;
}

void thread_fault(const char *fmt, ...) {
    Thread *t = self("a fault report");
    char where[256], name[64], what[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    where_block(where, sizeof(where), t->block);
    set_fault_message("%s, %s: %s", where, thread_name(name, sizeof(name), t), what);
    t->block->failed = true;
    t->fiber->dirty = true;  // abandoned with live frames on its stack
    fiber_exit(t->fiber);
}

// Where a thread is stopped, for a deadlock report.
static void describe_wait(char *buf, size_t n, const Thread *t) {
    switch (t->state) {
        case AT_BARRIER: snprintf(buf, n, "at %s (%s:%d)", t->bar_name, t->bar_file, t->bar_line); break;
        case AT_WARP:
            snprintf(buf, n, "at %s (%s:%d) with mask 0x%08x", t->op.name, t->op.file, t->op.line, t->op.mask);
            break;
        case RETURNED: snprintf(buf, n, "returned from the kernel"); break;
        case RUNNABLE: snprintf(buf, n, "running"); break;
    }
}

// ---- a thread's life ------------------------------------------------------------------

static void thread_returned(Thread *t) {
    Block *b = t->block;
    race_settle(t);
    size_t pending = t->async_open.size();
    for (const auto &g : t->async_groups) pending += g.size();
    if (pending)
        thread_fault("returned with %zu cp.async copies never waited for (cp.async.wait_group/wait_all)", pending);
    // A warp operation that names this lane can never complete now.
    Thread *warp = b->threads + t->warp * 32;
    int lanes = b->nthreads - t->warp * 32 < 32 ? b->nthreads - t->warp * 32 : 32;
    for (int l = 0; l < lanes; l++) {
        const Thread *o = &warp[l];
        if (o->state == AT_WARP && (o->op.mask >> t->lane & 1u))
            thread_fault("returned while lane %d of its warp waits for it at %s (%s:%d) with mask 0x%08x", l,
                         o->op.name, o->op.file, o->op.line, o->op.mask);
    }
    // Nor can a block barrier that others already wait at.
    for (int i = 0; i < b->nthreads; i++) {
        const Thread *o = &b->threads[i];
        if (o->state == AT_BARRIER) {
            char name[64];
            thread_fault("returned while %s waits at %s (%s:%d): a barrier that not every thread reaches",
                         thread_name(name, sizeof(name), o), o->bar_name, o->bar_file, o->bar_line);
        }
    }
    t->state = RETURNED;
    b->gone[t->warp] |= 1u << t->lane;
    b->returned++;
}

static void thread_main(void *arg) {
    Thread *t = (Thread *)arg;
    (*t->block->body)();
    thread_returned(t);
}

int block_barrier(int op, const char *name, int pred, const char *file, int line) {
    Thread *t = self(name);
    race_settle(t);
    if (t->block->returned) {
        const Thread *gone = t->block->threads;
        while (gone->state != RETURNED) gone++;
        char who[64];
        thread_fault("reached %s (%s:%d) after %s returned from the kernel: a barrier that not every thread "
                     "reaches",
                     name, file, line, thread_name(who, sizeof(who), gone));
    }
    t->state = AT_BARRIER;
    t->bar_op = op;
    t->bar_name = name;
    t->bar_file = file;
    t->bar_line = line;
    t->bar_pred = pred != 0;
    fiber_yield(t->fiber);
    return t->bar_result;
}

void warp_meet(Thread *t) {
    Block *b = t->block;
    race_settle(t);
    WarpOp *op = &t->op;
    unsigned mask = op->mask, bit = 1u << t->lane;
    if (!(mask & bit))
        thread_fault("%s (%s:%d): mask 0x%08x does not name the calling lane %d", op->name, op->file, op->line, mask,
                     t->lane);
    int base = t->warp * 32, size = b->nthreads - base < 32 ? b->nthreads - base : 32;
    uint32_t exists = size == 32 ? 0xffffffffu : (1u << size) - 1;
    if (mask & ~exists)
        thread_fault("%s (%s:%d): mask 0x%08x names lane %d, but warp %d has %d threads (blockDim (%u,%u,%u))",
                     op->name, op->file, op->line, mask, __builtin_ctz(mask & ~exists), t->warp, size, b->dim.x,
                     b->dim.y, b->dim.z);
    if (mask & b->gone[t->warp])
        thread_fault("%s (%s:%d): mask 0x%08x names lane %d, which has returned from the kernel", op->name, op->file,
                     op->line, mask, __builtin_ctz(mask & b->gone[t->warp]));
    t->state = AT_WARP;
    uint32_t &waiting = b->waiting[t->warp];
    waiting |= bit;
    if ((waiting & mask) == mask) {  // every lane of the mask waits: at this operation?
        Thread *lanes[32] = {};
        bool all_here = true;
        for (int l = 0; l < 32; l++)
            if (mask >> l & 1u) {
                lanes[l] = &b->threads[base + l];
                all_here = all_here && lanes[l]->op.mask == mask;
            }
        if (all_here) {
            bool aligned = op->kind == WARP_LDMATRIX || op->kind == WARP_MMA;
            for (int l = 0; l < 32; l++) {
                const WarpOp *o = lanes[l] ? &lanes[l]->op : nullptr;
                if (o && (o->kind != op->kind || o->qual != op->qual))
                    thread_fault("lanes %d and %d of warp %d meet with mask 0x%08x at different operations: %s (%s:%d) "
                                 "and %s (%s:%d)",
                                 t->lane, l, t->warp, mask, op->name, op->file, op->line, o->name, o->file, o->line);
                if (o && aligned && (o->line != op->line || strcmp(o->file, op->file)))
                    thread_fault("lanes %d and %d of warp %d execute %s at different call sites, %s:%d and %s:%d: "
                                 ".aligned requires every lane of the warp to execute the same instruction (a warp "
                                 "diverged around it)",
                                 t->lane, l, t->warp, op->name, op->file, op->line, o->file, o->line);
            }
            op->complete(lanes, mask);
            for (int l = 0; l < 32; l++)
                if (lanes[l]) lanes[l]->state = RUNNABLE;
            waiting &= ~mask;
        }
    }
    // Parked until the set is complete; the completing lane also yields, so that the order
    // in which the lanes go on is the scheduler's to choose.
    fiber_yield(t->fiber);
}

// ---- the block's run loop --------------------------------------------------------------

// Nothing can run: either every live thread waits at one barrier (release them), or the
// block is finished, or it can never go on (a fault). Returns whether to keep running.
static bool resolve(Block *b) {
    const Thread *first = nullptr;
    int alive = 0, waiting = 0, count = 0;
    for (int i = 0; i < b->nthreads; i++) {
        const Thread *t = &b->threads[i];
        if (t->state == RETURNED) continue;
        alive++;
        if (t->state != AT_BARRIER) continue;
        waiting++;
        count += t->bar_pred;
        if (!first) {
            first = t;
        } else if (t->bar_op != first->bar_op || t->bar_line != first->bar_line || strcmp(t->bar_file, first->bar_file)) {
            char a[64], c[64];
            block_fault(b, "threads wait at different barriers: %s at %s (%s:%d), %s at %s (%s:%d)",
                        thread_name(a, sizeof(a), first), first->bar_name, first->bar_file, first->bar_line,
                        thread_name(c, sizeof(c), t), t->bar_name, t->bar_file, t->bar_line);
            return false;
        }
    }
    if (alive == 0) return false;
    if (waiting == alive) {
        if (b->returned) {  // (block_barrier and thread_returned report this as it happens)
            block_fault(b, "%d threads wait at %s (%s:%d), which the %d threads that returned never reach", waiting,
                        first->bar_name, first->bar_file, first->bar_line, b->returned);
            return false;
        }
        int value = first->bar_op == BAR_COUNT ? count
                    : first->bar_op == BAR_AND ? count == alive
                    : first->bar_op == BAR_OR  ? count > 0
                                               : 0;
        for (int i = 0; i < b->nthreads; i++) {
            b->threads[i].state = RUNNABLE;
            b->threads[i].bar_result = value;
        }
        return true;
    }
    // A deadlock: some lane waits at a warp operation for a lane that is elsewhere.
    for (int i = 0; i < b->nthreads; i++) {
        const Thread *t = &b->threads[i];
        if (t->state != AT_WARP) continue;
        const Thread *warp = b->threads + t->warp * 32;
        for (int l = 0; l < 32; l++) {
            if (!(t->op.mask >> l & 1u)) continue;
            const Thread *o = &warp[l];
            if (o->state == AT_WARP && o->op.mask == t->op.mask) continue;
            char a[64], wait[256];
            describe_wait(wait, sizeof(wait), o);
            block_fault(b, "deadlock: %s (lane %d of warp %d) waits at %s (%s:%d) with mask 0x%08x for lane %d, "
                           "which is %s",
                        thread_name(a, sizeof(a), t), t->lane, t->warp, t->op.name, t->op.file, t->op.line,
                        t->op.mask, l, wait);
            return false;
        }
    }
    block_fault(b, "the block can make no progress (harness error: no waiting thread explains it)");
    return false;
}

void block_start(Block *b) {
    for (int i = 0; i < b->nthreads; i++) {
        Thread *t = &b->threads[i];
        t->block = b;
        t->fiber = &b->fibers[i];
        t->tid = i;
        t->warp = i / 32;
        t->lane = i % 32;
        t->builtins.thread_idx = uint3{i % b->dim.x, i / b->dim.x % b->dim.y, i / (b->dim.x * b->dim.y)};
        t->builtins.block_idx = b->idx;
        t->builtins.block_dim = b->dim;
        t->builtins.grid_dim = b->grid;
        t->state = RUNNABLE;
        for (int l = 0; l < 32; l++) t->clock[l] = 0;
        t->clock[t->lane] = 1;
        t->memo_first = t->memo_count = 0;
        t->async_open.clear();
        t->async_groups.clear();
        fiber_start(t->fiber, thread_main, t);
    }
    for (int w = 0; w < 32; w++) b->waiting[w] = b->gone[w] = 0;
    b->interval = 0;
    b->returned = 0;
    b->failed = false;
}

// Runs the runnable threads of the warps in `warps` (bit w: warp w) in rounds until none of
// them can run; rng null: in thread order.
static void run_rounds(Block *b, uint64_t *rng, uint32_t warps) {
    std::vector<Thread *> order;
    order.reserve((size_t)b->nthreads);
    while (!b->failed) {
        order.clear();
        for (int i = 0; i < b->nthreads; i++)
            if (b->threads[i].state == RUNNABLE && (warps >> (i / 32) & 1u)) order.push_back(&b->threads[i]);
        if (order.empty()) return;
        if (rng)
            for (size_t i = order.size() - 1; i > 0; i--) {  // Fisher-Yates
                size_t j = (size_t)(rng_next(rng) % (i + 1));
                Thread *swap = order[i];
                order[i] = order[j];
                order[j] = swap;
            }
        for (Thread *t : order) {
            if (t->state != RUNNABLE) continue;
            current_thread = t;
            builtins = &t->builtins;
            fiber_resume(t->fiber);
            current_thread = nullptr;
            builtins = nullptr;
            if (b->failed) return;
        }
    }
}

bool block_run_interval(Block *b, uint64_t *rng) {
    int warps = (b->nthreads + 31) / 32;
    uint32_t all = warps == 32 ? 0xffffffffu : (1u << warps) - 1;
    if (rng) {
        uint64_t pick = rng_next(rng);
        switch (pick % 8) {
            case 4:
            case 5:  // run-ahead: one warp alone to the barrier
                run_rounds(b, rng, 1u << (pick / 8 % (uint64_t)warps));
                break;
            case 6:  // a few ahead: each warp with probability 1/2
                run_rounds(b, rng, (uint32_t)(pick >> 8) & all);
                break;
            case 7: {  // one by one, in a random order
                int order[32];
                for (int w = 0; w < warps; w++) order[w] = w;
                for (int w = warps - 1; w > 0; w--) {
                    int j = (int)(rng_next(rng) % (uint64_t)(w + 1)), swap = order[w];
                    order[w] = order[j];
                    order[j] = swap;
                }
                for (int w = 0; w < warps && !b->failed; w++) run_rounds(b, rng, 1u << order[w]);
                break;
            }
            default: break;  // rounds
        }
    }
    run_rounds(b, rng, all);
    bool more = !b->failed && resolve(b);
    if (more) b->interval++;
    if (b->failed)  // the others stay parked for ever: their stacks must be cleaned before reuse
        for (int i = 0; i < b->nthreads; i++)
            if (b->threads[i].state != RETURNED) b->threads[i].fiber->dirty = true;
    return more;
}

}  // namespace cuda_host
