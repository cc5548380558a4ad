// fiber.cpp: see fiber.h.
#include "fiber.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#if !defined(__x86_64__)
#error "the CUDA-on-CPU harness switches fibers with x86-64 code (fiber.cpp); port cuda_host_switch first"
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUDA_HOST_ASAN 1
#else
#define CUDA_HOST_ASAN 0
#endif

// cuda_host_switch(save, load): pushes the callee-saved registers of the System V ABI
// (rbp, rbx, r12-r15) on the current stack, stores the stack pointer in *save, loads
// `load` as the stack pointer, pops the registers saved there and returns into that
// context. Caller-saved registers need no saving: the C++ call to this function already
// treats them as clobbered. The floating-point control words (MXCSR, x87) are shared by
// all fibers; no kernel changes them.
//
// cuda_host_fiber_trampoline is where a new fiber's first switch "returns" to: fiber_start
// leaves the Fiber pointer in the r12 slot, and the trampoline passes it on as the first
// argument of cuda_host_fiber_main, with the stack 16-byte aligned at the call as the ABI
// requires.
extern "C" void cuda_host_switch(void **save, void *load);
extern "C" void cuda_host_fiber_trampoline();
asm(R"(
    .text
    .globl cuda_host_switch
    .type cuda_host_switch, @function
cuda_host_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cuda_host_switch, .-cuda_host_switch

    .globl cuda_host_fiber_trampoline
    .type cuda_host_fiber_trampoline, @function
cuda_host_fiber_trampoline:
    movq %r12, %rdi
    call cuda_host_fiber_main
    ud2
    .size cuda_host_fiber_trampoline, .-cuda_host_fiber_trampoline
)");

namespace cuda_host {

// 256 KiB per CUDA thread: kernels keep small local arrays, but a kernel may call printf,
// and AddressSanitizer puts redzones around every local. Pages are only committed when
// touched, so 2048 stacks cost 512 MiB of address space and a few MiB of memory.
static const size_t kStackSize = 256 * 1024;
static const int kMaxFibers = 2048;  // two blocks of 1024 threads (launch.cpp)

static void *host_sp;  // the host thread's stack pointer while a fiber runs
#if CUDA_HOST_ASAN
static const void *host_stack_bottom;  // the host thread's stack, learned at the first switch
static size_t host_stack_size;
#endif

Fiber *fiber_pool(int n) {
    // A block has at most 1024 threads (launch.cpp refuses more) and two blocks are alive at
    // once, so one fixed array.
    static Fiber fibers[kMaxFibers];
    static int mapped = 0;
    if (n > kMaxFibers) {
        fprintf(stderr, "cuda_host: %d fibers asked for, at most %d exist\n", n, kMaxFibers);
        exit(2);
    }
    long page = sysconf(_SC_PAGESIZE);
    for (; mapped < n; mapped++) {
        size_t total = kStackSize + (size_t)page;
        char *base = (char *)mmap(nullptr, total, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (base == MAP_FAILED || mprotect(base, (size_t)page, PROT_NONE) != 0) {
            fprintf(stderr, "cuda_host: cannot map a %zu KiB fiber stack\n", kStackSize / 1024);
            exit(2);
        }
        fibers[mapped].stack = base + page;
        fibers[mapped].stack_size = kStackSize;
    }
    return fibers;
}

void fiber_start(Fiber *f, void (*entry)(void *), void *arg) {
#if CUDA_HOST_ASAN
    // A fiber abandoned mid-run left the redzones of its live frames poisoned; a new run
    // on the same stack would trip over them.
    if (f->dirty) __asan_unpoison_memory_region(f->stack, f->stack_size);
#endif
    f->dirty = false;
    f->entry = entry;
    f->arg = arg;
    f->asan_fake_stack = nullptr;
    // The initial frame, as cuda_host_switch will pop it: r15 r14 r13 r12 rbx rbp, then the
    // return address. After the `ret` the stack pointer is 16-byte aligned, so the call in
    // the trampoline sees the alignment the ABI wants.
    uintptr_t top = ((uintptr_t)(f->stack + f->stack_size) & ~(uintptr_t)15) - 16;
    void **frame = (void **)top - 7;
    for (int i = 0; i < 7; i++) frame[i] = nullptr;
    frame[3] = f;                                   // r12
    frame[6] = (void *)cuda_host_fiber_trampoline;  // return address
    f->sp = frame;
}

void fiber_resume(Fiber *f) {
#if CUDA_HOST_ASAN
    void *host_fake = nullptr;
    __sanitizer_start_switch_fiber(&host_fake, f->stack, f->stack_size);
    cuda_host_switch(&host_sp, f->sp);
    __sanitizer_finish_switch_fiber(host_fake, nullptr, nullptr);
#else
    cuda_host_switch(&host_sp, f->sp);
#endif
}

void fiber_yield(Fiber *f) {
#if CUDA_HOST_ASAN
    __sanitizer_start_switch_fiber(&f->asan_fake_stack, host_stack_bottom, host_stack_size);
    cuda_host_switch(&f->sp, host_sp);
    __sanitizer_finish_switch_fiber(f->asan_fake_stack, nullptr, nullptr);
#else
    cuda_host_switch(&f->sp, host_sp);
#endif
}

// Not instrumented: this frame never returns, so its redzones would stay poisoned.
__attribute__((no_sanitize_address)) void fiber_exit(Fiber *f) {
    (void)f;  // the fiber's context is not saved: it will never run again
#if CUDA_HOST_ASAN
    // nullptr: this stack's fake frames (detect_stack_use_after_return) can be dropped.
    __sanitizer_start_switch_fiber(nullptr, host_stack_bottom, host_stack_size);
#endif
    void *discard;
    cuda_host_switch(&discard, host_sp);
    __builtin_unreachable();
}

}  // namespace cuda_host

// The first code a fiber runs (called from the trampoline on the fresh stack).
extern "C" __attribute__((no_sanitize_address, used)) void cuda_host_fiber_main(cuda_host::Fiber *f) {
#if CUDA_HOST_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &cuda_host::host_stack_bottom, &cuda_host::host_stack_size);
#endif
    f->entry(f->arg);
    cuda_host::fiber_exit(f);
}
