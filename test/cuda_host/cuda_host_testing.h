/*
 * cuda_host_testing.h: helpers for tests that run kernels in the CUDA-on-CPU harness.
 *
 * A kernel test is one file, test/test_cuda_NAME.cpp, listed in CUDA_HOST_TESTS in the
 * Makefile: it includes the kernel's header (kernels/NAME.cuh, which brings in
 * kernels/common.cuh and, through it, the harness as <cuda_runtime.h>), test.h and this
 * file, and calls the kernel's host launcher like any host code would. C headers of the
 * project (train/, common/) go inside extern "C" { }. Kernel code must all be in that one
 * translation unit (see the Makefile on -fno-weak).
 *
 * - QUIETLY(expr): evaluates expr (a call expected to fail) without the harness printing
 *   the fault on stderr; the message stays available to expect_fault.
 * - TRY_LAUNCH(kernel, grid, block, smem, args...): a launch on stream 0 that is waited for
 *   and returns its cudaError_t (the refusal, or the fault of the run) instead of exiting,
 *   quietly, for tests that expect a launch to be refused or to fault.
 * - expect_fault(err, want, text): checks that a launch failed with `want` and that the
 *   harness's message contains `text`, then clears the fault (a GPU reset) for the next test.
 * - run_in_child(fn, report, size): runs fn in a forked child and returns its exit status
 *   (-1 if it died of a signal), with what it wrote on stderr in report: how a test checks
 *   that AddressSanitizer stops a program (the sanitizer ends the process it reports in).
 * The harness's controls that any program built against it may call (a driver checking its
 * memory plan against cuda_host_memory_stats, a test choosing schedules with
 * cuda_host_set_seed or switching the race detector) are declared in cuda_host_api.h.
 */
#ifndef CUDA_HOST_TESTING_H
#define CUDA_HOST_TESTING_H

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cuda_runtime.h"

template <typename T>
static inline T cuda_host_loud_again(T value) {
    cuda_host_print_faults(true);
    return value;
}
#define QUIETLY(expr) (cuda_host_print_faults(false), cuda_host_loud_again(expr))

static inline cudaError_t cuda_host_wait_launch(cudaError_t launched) {
    return launched == cudaSuccess ? cudaStreamSynchronize(0) : launched;
}
#define TRY_LAUNCH(kernel, grid, block, smem, ...)                                                                \
    QUIETLY(cuda_host_wait_launch(                                                                                \
        cuda_host::launch(#kernel, kernel, dim3(grid), dim3(block), (smem), (cudaStream_t)0, __VA_ARGS__)))

// Returns the number of failed conditions (0 or more), printing each, so a test can
// CHECK_INT(expect_fault(...), 0): the call returned the status named `want` (it returned
// `got`; same: whether they are the same status), and the harness recorded a fault whose
// message contains text; the fault is then cleared. expect_fault: for CUDA runtime calls.
static inline int expect_status_and_fault(bool same, const char *got, const char *want, const char *text) {
    int bad = 0;
    const char *msg = cuda_host_fault();
    if (!same) {
        printf("  returned %s, expected %s\n", got, want);
        bad++;
    }
    if (!msg || !strstr(msg, text)) {
        printf("  fault message \"%s\" does not contain \"%s\"\n", msg ? msg : "(none)", text);
        bad++;
    }
    cuda_host_clear_fault();
    return bad;
}

static inline int expect_fault(cudaError_t err, cudaError_t want, const char *text) {
    return expect_status_and_fault(err == want, cudaGetErrorName(err), cudaGetErrorName(want), text);
}

static inline int run_in_child(void (*fn)(void), char *report, size_t size) {
    int pipefd[2];
    report[0] = 0;
    if (pipe(pipefd) != 0) return -2;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return -2;
    if (pid == 0) {
        close(pipefd[0]);
        dup2(pipefd[1], 2);
        FILE *devnull = freopen("/dev/null", "w", stdout);
        (void)devnull;
        fn();
        _exit(0);
    }
    close(pipefd[1]);
    size_t len = 0;
    ssize_t n;
    while (len < size - 1 && (n = read(pipefd[0], report + len, size - 1 - len)) > 0) len += (size_t)n;
    report[len] = 0;
    char drain[4096];  // the rest of a long report, so the child never blocks on the pipe
    while (read(pipefd[0], drain, sizeof(drain)) > 0) {
    }
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#endif
