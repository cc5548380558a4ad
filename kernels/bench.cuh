/*
 * bench.cuh: what the benchmark programs of kernels/bench/ share (host code only, nvcc).
 *
 * - bench_attribute(a): a device attribute of the current device.
 * - bench_bf16_peak(): the dense BF16 tensor-core peak in FLOP/s, SMs x SM clock x FLOPs per
 *   clock per SM (4096 on sm_90, 2048 on sm_80), as device_info prints it; 0 where the
 *   FLOPs per clock are not tabulated.
 * - bench_random_bf16(&dev, n, lo, hi, &seed): n uniform bf16 values in [lo, hi) from a
 *   simple LCG, uploaded to a new device buffer; returns their host copy as floats.
 * - bench_time_cold(run, repeat): mean milliseconds of `run` over `repeat` calls, each after
 *   writing twice the L2 size to a scratch buffer, so that inputs come from DRAM (cold L2).
 */
#ifndef PERSONA_BENCH_CUH
#define PERSONA_BENCH_CUH

#include "common.cuh"

static int bench_attribute(cudaDeviceAttr a) {
    int dev = 0, v = 0;
    cuda_check(cudaGetDevice(&dev));
    cuda_check(cudaDeviceGetAttribute(&v, a, dev));
    return v;
}

static double bench_bf16_peak(void) {
    int major = bench_attribute(cudaDevAttrComputeCapabilityMajor), minor = bench_attribute(cudaDevAttrComputeCapabilityMinor);
    int flops_per_clk = major >= 9 ? 4096 : major == 8 && minor == 0 ? 2048 : 0;
    return (double)bench_attribute(cudaDevAttrMultiProcessorCount) * bench_attribute(cudaDevAttrClockRate) * 1e3 *
           flops_per_clk;
}

static float *bench_random_bf16(__nv_bfloat16 **dev, size_t n, float lo, float hi, unsigned *seed) {
    float *host = (float *)malloc(n * sizeof(float));
    __nv_bfloat16 *bits = (__nv_bfloat16 *)malloc(n * sizeof(__nv_bfloat16));
    if (!host || !bits) {
        fprintf(stderr, "error: out of host memory for %zu elements\n", n);
        exit(2);
    }
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

template <typename F>
static float bench_time_cold(F run, int repeat) {
    size_t flush_bytes = (size_t)bench_attribute(cudaDevAttrL2CacheSize) * 2;
    void *flush;
    cuda_check(cudaMalloc(&flush, flush_bytes));
    cudaEvent_t start, stop;
    cuda_check(cudaEventCreate(&start));
    cuda_check(cudaEventCreate(&stop));
    run();  // warm-up (first-call setup of the library is not what is measured)
    float total = 0;
    for (int i = 0; i < repeat; i++) {
        cuda_check(cudaMemset(flush, i & 0xff, flush_bytes));
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
    cuda_check(cudaFree(flush));
    return total / repeat;
}

#endif
