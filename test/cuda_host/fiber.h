/*
 * fiber.h: the execution contexts the CUDA-on-CPU harness runs CUDA threads on.
 *
 * A fiber is a function running on its own stack that can stop in the middle (yield) and be
 * continued later (resume), all on the one host thread. The harness gives every CUDA thread
 * of a block a fiber; a thread yields wherever a GPU thread could wait for others
 * (__syncthreads, a warp shuffle, ...), and the scheduler (scheduler.cpp) decides who runs
 * next. Switching is a hand-written x86-64 routine that saves the callee-saved registers and
 * swaps stack pointers, for two reasons:
 *   - speed: glibc's swapcontext makes a sigprocmask system call on every switch;
 *   - AddressSanitizer: ASan intercepts swapcontext, prints a warning that it "doesn't fully
 *     support" it, and clears the shadow of the whole target stack on every switch, which
 *     would erase the redzones of a suspended kernel's local arrays (missed overflows).
 *     With our own switch, ASan sees only the documented fiber annotations
 *     (__sanitizer_start_switch_fiber / __sanitizer_finish_switch_fiber) around each switch,
 *     so it always knows which stack is current and keeps every redzone.
 * Threads-per-lane (one OS thread per CUDA thread) was the alternative; it gives the OS the
 * schedule, so a seeded, reproducible interleaving would need a baton passed between
 * threads anyway, at 1024 OS threads per block.
 *
 * Stacks are mmap'd once (with a PROT_NONE guard page below, so an overflow faults instead
 * of corrupting a neighbour) and reused for the life of the process.
 */
#ifndef CUDA_HOST_FIBER_H
#define CUDA_HOST_FIBER_H

#include <stddef.h>

namespace cuda_host {

struct Fiber {
    void *sp;                // saved stack pointer while switched out
    char *stack;             // lowest usable byte of the stack (the guard page is below)
    size_t stack_size;
    void (*entry)(void *);   // what the fiber runs, with arg
    void *arg;
    void *asan_fake_stack;   // ASan's state for this stack while switched out
    bool dirty;              // stopped mid-run: its stack still holds live frames
};

// The fibers [0, n) (n <= 2048), each with its own stack, mapped on first use and kept.
Fiber *fiber_pool(int n);
// Prepares f to run entry(arg) from the top of its stack at the next fiber_resume.
void fiber_start(Fiber *f, void (*entry)(void *), void *arg);
// From the host thread's own stack: runs f until it yields or exits.
void fiber_resume(Fiber *f);
// From inside the running fiber f: back to whoever resumed it; returns when resumed again.
void fiber_yield(Fiber *f);
// From inside the running fiber f: back for good (its stack can be reused). A fiber that
// is abandoned mid-run (a kernel fault) is made reusable by fiber_start, which clears the
// sanitizer state of the frames it left behind.
[[noreturn]] void fiber_exit(Fiber *f);

}  // namespace cuda_host

#endif
