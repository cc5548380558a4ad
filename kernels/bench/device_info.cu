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
#include "bench.cuh"

#define COPY_THREADS 256

__global__ void __launch_bounds__(COPY_THREADS) copy_float4(float4 *dst, const float4 *src, size_t n) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] = src[i];
}

// The device's properties and peaks; bench.cuh's helpers ask the current device.
static void describe(int dev, size_t bytes) {
    cuda_check(cudaSetDevice(dev));
    cudaDeviceProp p;
    cuda_check(cudaGetDeviceProperties(&p, dev));
    int sms = p.multiProcessorCount;
    double sm_clock_hz = device_attribute(cudaDevAttrClockRate) * 1e3;  // reported in kHz
    int bus_bits = device_attribute(cudaDevAttrGlobalMemoryBusWidth);
    double bf16 = bf16_peak(), dram = dram_peak();
    printf("device %d: %s, sm_%d%d, %d SMs, %.1f GiB, SM clock %.0f MHz, %d-bit bus\n", dev, p.name,
           p.major, p.minor, sms, (double)p.totalGlobalMem / (1 << 30), sm_clock_hz / 1e6, bus_bits);
    printf("  shared memory per block (opt-in) %zu KiB, per SM %zu KiB, registers per SM %d\n",
           p.sharedMemPerBlockOptin / 1024, p.sharedMemPerMultiprocessor / 1024, p.regsPerMultiprocessor);
    if (bf16 > 0)
        printf("  dense BF16 tensor peak %.1f TFLOP/s (at the reported max SM clock)\n", bf16 / 1e12);
    else
        printf("  dense BF16 tensor peak: not tabulated for sm_%d%d\n", p.major, p.minor);
    printf("  DRAM peak %.0f GB/s\n", dram / 1e9);

    size_t n = bytes / sizeof(float4);
    float4 *a, *b;
    cuda_check(cudaMalloc(&a, n * sizeof(float4)));
    cuda_check(cudaMalloc(&b, n * sizeof(float4)));
    cuda_check(cudaMemset(a, 0x3f, n * sizeof(float4)));
    int blocks = sms * 8, reps = 20;
    float ms = time_warm([&] { LAUNCH(copy_float4, blocks, COPY_THREADS, 0, 0, b, a, n); }, reps);
    float4 first, last;
    cuda_check(cudaMemcpy(&first, b, sizeof(float4), cudaMemcpyDeviceToHost));
    cuda_check(cudaMemcpy(&last, b + n - 1, sizeof(float4), cudaMemcpyDeviceToHost));
    float want;
    memset(&want, 0x3f, sizeof(want));
    int ok = first.x == want && last.w == want;
    double gbps = 2.0 * (double)(n * sizeof(float4)) / (ms / 1e3) / 1e9;  // read + write
    printf("  copy kernel: %.0f GB/s = %.1f%% of DRAM peak (%zu MiB, %d reps), result %s\n", gbps,
           100.0 * gbps * 1e9 / dram, bytes >> 20, reps, ok ? "correct" : "WRONG");
    cuda_check(cudaFree(a));
    cuda_check(cudaFree(b));
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
