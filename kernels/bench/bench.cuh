/*
 * bench.cuh: what the kernel benches (every kernels/bench program) share for timing.
 *
 * - bench_open(repeat): the device's DRAM peak, 2 (double data rate) · memory clock · bus
 *   width, as device_info computes it, and a buffer of twice the L2 size; prints both.
 * - bench_time_cold(run, repeat, b): the mean time of `run` in milliseconds over `repeat`
 *   calls, each after writing that buffer, so the inputs come from DRAM (cold L2), timed
 *   with CUDA events.
 * - bench_print_bandwidth(what, bytes, ms, b): one line, time, GB/s and % of the DRAM peak.
 */
#ifndef PERSONA_BENCH_CUH
#define PERSONA_BENCH_CUH

#include <stdio.h>

#include "../common.cuh"

typedef struct {
    double dram_peak;  // bytes per second
    void *flush;
    size_t flush_bytes;
} Bench;

static int bench_attribute(cudaDeviceAttr a) {
    int dev = 0, v = 0;
    cuda_check(cudaGetDevice(&dev));
    cuda_check(cudaDeviceGetAttribute(&v, a, dev));
    return v;
}

static Bench bench_open(int repeat) {
    Bench b;
    b.dram_peak = 2.0 * bench_attribute(cudaDevAttrMemoryClockRate) * 1e3 *
                  bench_attribute(cudaDevAttrGlobalMemoryBusWidth) / 8;
    b.flush_bytes = (size_t)bench_attribute(cudaDevAttrL2CacheSize) * 2;
    cuda_check(cudaMalloc(&b.flush, b.flush_bytes));
    printf("DRAM peak %.0f GB/s; L2 flushed with %zu MiB before every timed run; %d runs each\n", b.dram_peak / 1e9,
           b.flush_bytes >> 20, repeat);
    return b;
}

static void bench_close(Bench *b) { cuda_check(cudaFree(b->flush)); }

template <typename F>
static float bench_time_cold(F run, int repeat, const Bench *b) {
    cudaEvent_t start, stop;
    cuda_check(cudaEventCreate(&start));
    cuda_check(cudaEventCreate(&stop));
    float total = 0;
    for (int i = 0; i < repeat; i++) {
        cuda_check(cudaMemset(b->flush, i & 0xff, b->flush_bytes));
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

static void bench_print_bandwidth(const char *what, double bytes, float ms, const Bench *b) {
    printf("  %-9s %8.4f ms  %7.1f GB/s  %5.1f%% of DRAM peak\n", what, ms, bytes / ms / 1e6,
           100.0 * bytes / (ms / 1e3) / b->dram_peak);
}

#endif
