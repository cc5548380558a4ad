/*
 * bench.cuh: what the programs of kernels/bench/ share (each bench is one program that
 * checks a kernel against its CPU reference and times it, in llm.c's dev/cuda manner).
 *
 * - dram_peak(): the DRAM bandwidth peak in bytes/s, 2 · memory clock · bus width (double
 *   data rate): the denominator of every "% of DRAM peak" (device_attribute and bf16_peak,
 *   the denominator of every "% of BF16 peak", are common.cuh's: train_gpu's MFU uses it).
 * - bench_malloc(bytes): host memory, or exit 2 with a message.
 * - random_bf16(&dev, n, lo, hi, &seed): n bf16 uniform in [lo, hi) on the device; returns
 *   the same values as floats on the host (free them).
 * - to_host(dev, n): n bf16 from the device as floats on the host (free them).
 * - ColdL2: a buffer twice the L2 size (cold_l2_create, which prints the DRAM peak and the
 *   timing plan); time_cold(run, repeat, cold) times `run` in milliseconds, averaged over
 *   `repeat` calls, each after writing that buffer so that the kernel's inputs come from DRAM.
 *   time_warm(run, repeat) is the same without the flush, for compute-bound kernels that
 *   re-read their inputs from L2 by design. Both make one untimed warm-up call first: the
 *   first call of a program pays one-time costs that are not the kernel's (loading the
 *   module, lazily, on its first launch; cuBLASLt's algorithm search and plan caching).
 * - report(what, got, ref, tol, n, &worst): counts the elements with |got - ref| > tol,
 *   prints the first few, and raises worst to the largest |got - ref| / tol.
 * - print_bandwidth(what, ms, bytes): one line of time, GB/s and % of the DRAM peak.
 * - print_flops(what, ms, flops): one line of time, TFLOP/s and % of the BF16 peak.
 * - bench_args(argc, argv, per_shape, repeat, usage, options): the command line every bench
 *   takes, [--repeat R | --check] [shape ...] with each shape `per_shape` positive integers
 *   and R `repeat` by default, plus the bench's own options that take a value (a NULL-ended
 *   list of names, e.g. "--chunk"; a.option[i] is the value given to options[i], or NULL);
 *   anything else prints `usage` and exits with status 1. default_shapes(&a, check, timed)
 *   fills in the bench's shapes when none are given: `check` with --check, else `timed`.
 * - run_shapes(&a, run_shape): runs run_shape(shape, repeat, cold) on each shape with one
 *   cold-L2 buffer; the bench's exit status (2 when any shape disagreed with the CPU).
 */
#ifndef PERSONA_BENCH_CUH
#define PERSONA_BENCH_CUH

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common.cuh"

static inline double dram_peak(void) {
    return 2.0 * device_attribute(cudaDevAttrMemoryClockRate) * 1e3 *
           device_attribute(cudaDevAttrGlobalMemoryBusWidth) / 8;
}

static inline void *bench_malloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "error: out of host memory for %zu bytes\n", bytes);
        exit(2);
    }
    return p;
}

static inline float *random_bf16(__nv_bfloat16 **dev, size_t n, float lo, float hi, unsigned *seed) {
    float *host = (float *)bench_malloc(n * sizeof(float));
    __nv_bfloat16 *bits = (__nv_bfloat16 *)bench_malloc(n * sizeof(__nv_bfloat16));
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;  // a simple LCG is plenty for test data
        bits[i] = __float2bfloat16(lo + (hi - lo) * (float)(*seed >> 8) / 16777216.0f);
        host[i] = __bfloat162float(bits[i]);
    }
    cuda_check(cudaMalloc(dev, n * sizeof(__nv_bfloat16)));
    cuda_check(cudaMemcpy(*dev, bits, n * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice));
    free(bits);
    return host;
}

static inline float *to_host(const __nv_bfloat16 *dev, size_t n) {
    __nv_bfloat16 *bits = (__nv_bfloat16 *)bench_malloc(n * sizeof(__nv_bfloat16));
    float *host = (float *)bench_malloc(n * sizeof(float));
    cuda_check(cudaMemcpy(bits, dev, n * sizeof(__nv_bfloat16), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) host[i] = __bfloat162float(bits[i]);
    free(bits);
    return host;
}

struct ColdL2 {
    void *flush;
    size_t bytes;
};

static inline ColdL2 cold_l2_create(int repeat) {
    ColdL2 c;
    c.bytes = (size_t)device_attribute(cudaDevAttrL2CacheSize) * 2;
    cuda_check(cudaMalloc(&c.flush, c.bytes));
    printf("DRAM peak %.0f GB/s; L2 flushed with %zu MiB before every timed run; %d runs each\n", dram_peak() / 1e9,
           c.bytes >> 20, repeat);
    return c;
}

// The mean milliseconds of `run` over `repeat` calls after one warm-up call (see the top
// comment), each call after a write of cold->flush when cold is not NULL.
template <typename F>
static inline float time_runs(F run, int repeat, const ColdL2 *cold) {
    cudaEvent_t start, stop;
    cuda_check(cudaEventCreate(&start));
    cuda_check(cudaEventCreate(&stop));
    run();
    float total = 0;
    for (int i = 0; i < repeat; i++) {
        if (cold) cuda_check(cudaMemset(cold->flush, i & 0xff, cold->bytes));
        cuda_check(cudaEventRecord(start));
        run();
        cuda_check(cudaEventRecord(stop));
        cuda_check(cudaEventSynchronize(stop));
        float ms = 0;
        cuda_check(cudaEventElapsedTime(&ms, start, stop));
        total += ms;
    }
    cuda_check(cudaEventDestroy(start));
    cuda_check(cudaEventDestroy(stop));
    return total / repeat;
}

template <typename F>
static inline float time_cold(F run, int repeat, ColdL2 cold) {
    return time_runs(run, repeat, &cold);
}

template <typename F>
static inline float time_warm(F run, int repeat) {
    return time_runs(run, repeat, (const ColdL2 *)NULL);
}

static inline size_t report(const char *what, const float *got, const float *ref, const float *tol, size_t n,
                            double *worst) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        if (tol[i] > 0 && e / tol[i] > *worst) *worst = e / tol[i];
        if (!(e <= tol[i]) && bad++ < 5)
            printf("  MISMATCH %s[%zu]: gpu %.7g, cpu %.7g, tolerance %.3g\n", what, i, got[i], ref[i], tol[i]);
    }
    return bad;
}

static inline void print_bandwidth(const char *what, float ms, double bytes) {
    printf("  %-9s %8.4f ms  %7.1f GB/s  %5.1f%% of DRAM peak\n", what, ms, bytes / ms / 1e6,
           100.0 * bytes / (ms / 1e3) / dram_peak());
}

static inline void print_flops(const char *what, float ms, double flops) {
    double peak = bf16_peak();
    printf("  %-9s %9.4f ms  %7.1f TFLOP/s  %5.1f%% of BF16 peak\n", what, ms, flops / ms / 1e9,
           peak > 0 ? 100.0 * flops / (ms / 1e3) / peak : 0.0);
}

#define BENCH_MAX_OPTIONS 4

struct BenchArgs {
    int repeat, check, n, per_shape;  // n numbers in shape[], per_shape of them per shape
    int shape[96];
    const char *option[BENCH_MAX_OPTIONS];
};

static inline BenchArgs bench_args(int argc, char **argv, int per_shape, int repeat, const char *usage,
                                   const char *const *options = NULL) {
    BenchArgs a;
    memset(&a, 0, sizeof(a));
    a.repeat = repeat, a.per_shape = per_shape;
    int n_options = 0;
    while (options && options[n_options]) n_options++;
    if (n_options > BENCH_MAX_OPTIONS) {
        fprintf(stderr, "error: a bench takes at most %d options of its own\n", BENCH_MAX_OPTIONS);
        exit(1);
    }
    for (int i = 1; i < argc; i++) {
        int o = 0;
        while (o < n_options && strcmp(argv[i], options[o])) o++;
        if (o < n_options && i + 1 < argc) {
            a.option[o] = argv[++i];
        } else if (!strcmp(argv[i], "--repeat") && i + 1 < argc && atoi(argv[i + 1]) > 0) {
            a.repeat = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--check")) {
            a.check = 1;
        } else if (a.n < 96 && atoi(argv[i]) > 0) {
            a.shape[a.n++] = atoi(argv[i]);
        } else {
            fprintf(stderr, "usage: %s\n", usage);
            exit(1);
        }
    }
    if (a.n % per_shape) {
        fprintf(stderr, "usage: %s   (each shape is %d numbers)\n", usage, per_shape);
        exit(1);
    }
    if (a.check) a.repeat = 0;
    return a;
}

template <int C, int T>
static inline void default_shapes(BenchArgs *a, const int (&check)[C], const int (&timed)[T]) {
    static_assert(C <= 96 && T <= 96, "BenchArgs holds 96 numbers");
    if (a->n) return;
    a->n = a->check ? C : T;
    memcpy(a->shape, a->check ? check : timed, (size_t)a->n * sizeof(int));
}

// Runs `run` on each shape of the command line (or the defaults) with one cold-L2 buffer,
// and returns a bench's exit status: 2 when any shape disagreed with the CPU reference.
static inline int run_shapes(const BenchArgs *a, int (*run)(const int *shape, int repeat, ColdL2 cold)) {
    ColdL2 cold = cold_l2_create(a->repeat);
    int failed = 0;
    for (int i = 0; i < a->n; i += a->per_shape) failed |= run(a->shape + i, a->repeat, cold);
    cuda_check(cudaFree(cold.flush));
    return failed ? 2 : 0;
}

#endif
