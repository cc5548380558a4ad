/*
 * device_info.cu: what GPU is this, what are its peaks, and does it run our code?
 *
 * Prints, for each visible device, the properties the engine plans with (compute
 * capability, SMs, memory, clocks) and the two peaks every bench reports against:
 *   - dense BF16 tensor-core FLOP/s = SMs x SM clock x FLOPs per clock per SM, with
 *     4096 FLOPs/clk/SM on sm_90 (H100/H200: 132 x 1.83 GHz x 4096 = 989 TFLOP/s) and
 *     2048 on sm_80 (A100: 108 x 1.41 GHz x 2048 = 312 TFLOP/s); NVIDIA's published
 *     numbers, see reference/gpu-targets-and-emulation.md §1.1;
 *   - DRAM bandwidth = 2 (double data rate) x memory clock x bus width.
 * Then it measures device-to-device copy bandwidth with a simple vectorised copy kernel
 * and prints it as a % of the DRAM peak: a quick check that kernels run and memory works.
 *
 *   ./device_info [--mib N]   (copy size, default 1024 MiB)
 *   ./device_info --check     the same (`make test-gpu` passes --check to every program)
 */
#include <string.h>

#include "../common.cuh"

__global__ void copy_float4(float4 *dst, const float4 *src, size_t n) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] = src[i];
}

static int attribute(cudaDeviceAttr a, int dev) {
    int v = 0;
    cuda_check(cudaDeviceGetAttribute(&v, a, dev));
    return v;
}

static void describe(int dev, size_t bytes) {
    cudaDeviceProp p;
    cuda_check(cudaGetDeviceProperties(&p, dev));
    int sms = p.multiProcessorCount;
    double sm_clock_hz = attribute(cudaDevAttrClockRate, dev) * 1e3;       // reported in kHz
    double mem_clock_hz = attribute(cudaDevAttrMemoryClockRate, dev) * 1e3;  // kHz
    int bus_bits = attribute(cudaDevAttrGlobalMemoryBusWidth, dev);
    int flops_per_clk = p.major >= 9 ? 4096 : p.major == 8 && p.minor == 0 ? 2048 : 0;
    double bf16_peak = (double)sms * sm_clock_hz * flops_per_clk;
    double dram_peak = 2.0 * mem_clock_hz * bus_bits / 8.0;
    printf("device %d: %s, sm_%d%d, %d SMs, %.1f GiB, SM clock %.0f MHz, %d-bit bus\n", dev, p.name,
           p.major, p.minor, sms, (double)p.totalGlobalMem / (1 << 30), sm_clock_hz / 1e6, bus_bits);
    printf("  shared memory per block (opt-in) %zu KiB, per SM %zu KiB, registers per SM %d\n",
           p.sharedMemPerBlockOptin / 1024, p.sharedMemPerMultiprocessor / 1024, p.regsPerMultiprocessor);
    if (flops_per_clk)
        printf("  dense BF16 tensor peak %.1f TFLOP/s (at the reported max SM clock)\n", bf16_peak / 1e12);
    else
        printf("  dense BF16 tensor peak: not tabulated for sm_%d%d\n", p.major, p.minor);
    printf("  DRAM peak %.0f GB/s\n", dram_peak / 1e9);

    cuda_check(cudaSetDevice(dev));
    size_t n = bytes / sizeof(float4);
    float4 *a, *b;
    cuda_check(cudaMalloc(&a, n * sizeof(float4)));
    cuda_check(cudaMalloc(&b, n * sizeof(float4)));
    cuda_check(cudaMemset(a, 0x3f, n * sizeof(float4)));
    cudaEvent_t start, stop;
    cuda_check(cudaEventCreate(&start));
    cuda_check(cudaEventCreate(&stop));
    int blocks = sms * 8, threads = 256, reps = 20;
    LAUNCH(copy_float4, blocks, threads, 0, 0, b, a, n);  // warm-up
    cuda_check(cudaEventRecord(start));
    for (int r = 0; r < reps; r++) LAUNCH(copy_float4, blocks, threads, 0, 0, b, a, n);
    cuda_check(cudaEventRecord(stop));
    cuda_check(cudaEventSynchronize(stop));
    float ms = 0;
    cuda_check(cudaEventElapsedTime(&ms, start, stop));
    float4 first, last;
    cuda_check(cudaMemcpy(&first, b, sizeof(float4), cudaMemcpyDeviceToHost));
    cuda_check(cudaMemcpy(&last, b + n - 1, sizeof(float4), cudaMemcpyDeviceToHost));
    float want;
    memset(&want, 0x3f, sizeof(want));
    int ok = first.x == want && last.w == want;
    double gbps = 2.0 * (double)(n * sizeof(float4)) * reps / (ms / 1e3) / 1e9;  // read + write
    printf("  copy kernel: %.0f GB/s = %.1f%% of DRAM peak (%zu MiB, %d reps), result %s\n", gbps,
           100.0 * gbps * 1e9 / dram_peak, bytes >> 20, reps, ok ? "correct" : "WRONG");
    cuda_check(cudaFree(a));
    cuda_check(cudaFree(b));
    cuda_check(cudaEventDestroy(start));
    cuda_check(cudaEventDestroy(stop));
    if (!ok) exit(2);
}

int main(int argc, char **argv) {
    size_t mib = 1024;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mib") && i + 1 < argc) {
            mib = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--check")) {
            // the copy's result is always checked; nothing to switch off
        } else {
            fprintf(stderr, "usage: device_info [--mib N] [--check]\n");
            return 1;
        }
    }
    if (mib == 0) {
        fprintf(stderr, "error: --mib must be positive\n");
        return 1;
    }
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        fprintf(stderr, "error: no CUDA device visible (%s)\n", e == cudaSuccess ? "none found" : cudaGetErrorString(e));
        return 2;
    }
    for (int d = 0; d < count; d++) describe(d, mib << 20);
    return 0;
}
