/*
 * nf4.cu: the NF4 kernels (kernels/nf4.cuh) checked against the CPU reference train/nf4.c
 * and timed, in the manner of llm.c's dev/cuda.
 *
 *   make nf4
 *   ./nf4                                  the default shapes: Mistral-7B's q/o (4096 x 4096),
 *                                          gate/up (14336 x 4096) and down (4096 x 14336)
 *   ./nf4 [--repeat R] ROWS COLS [ROWS COLS ...]   shapes of W [out, in]
 *   ./nf4 --check [ROWS COLS ...]          validation only, no timing (what `make test-gpu`
 *                                          runs): awkward shapes and the defaults
 *
 * For each shape: random weights, rounded to bf16 as a checkpoint stores them, quantized on
 * the GPU from bf16 and from float32 (the same values), and every byte of the codes,
 * qabsmax, absmax2 and the offset compared with train/nf4.c's nf4_weight_quantize (the
 * bf16 input converts exactly, so both must agree bit for bit); the dequantized bf16
 * weight compared with bf16(nf4_weight_dequantize) bit for bit. (The product that reads the
 * codes directly is kernels/bench/nf4_matmul.cu.) Then each kernel timed
 * over R runs, each after writing an L2-sized buffer (cold L2), and reported as time, GB/s
 * and % of the DRAM peak (2 · memory clock · bus width, bench.cuh).
 *
 * Bytes counted per weight (the compulsory DRAM traffic, blocksize 64):
 *   quantize (from bf16): 2 in, 0.5 of codes out, the 4-byte absmax of each 64 written
 *     once and read twice (mean, then double quantization) and its 1-byte code written:
 *     2 + 0.5 + 13/64 = 2.70 B. (Stage times are printed too: the mean is one block.)
 *   dequantize: 0.5 of codes + 1/64 of qabsmax + 4/16384 of absmax2 in, 2 of bf16 out:
 *     2.516 B.
 */
#include "../nf4.cuh"
#include "bench.cuh"
extern "C" {
#include "../../common/half.h"
#include "../../train/nf4.h"
}

template <typename T>
static T *device_alloc(size_t count) {
    T *p;
    cuda_check(cudaMalloc(&p, count * sizeof(T) + 16));
    return p;
}

// 0 if the device's n bytes equal want, else 1 after printing the first difference.
static int compare(const char *what, const void *dev, const void *want, size_t n) {
    uint8_t *got = (uint8_t *)bench_malloc(n);
    cuda_check(cudaMemcpy(got, dev, n, cudaMemcpyDeviceToHost));
    size_t i = 0;
    while (i < n && got[i] == ((const uint8_t *)want)[i]) i++;
    if (i < n)
        printf("  MISMATCH %s: first difference at byte %zu of %zu (gpu 0x%02x, cpu 0x%02x)\n", what, i, n, got[i],
               ((const uint8_t *)want)[i]);
    free(got);
    return i < n;
}

static int run_shape(const int *shape, int repeat, ColdL2 cold) {
    int rows = shape[0], cols = shape[1];
    size_t n = (size_t)rows * cols, nb = CEIL_DIV(n, (size_t)NF4_BLOCKSIZE), nb2 = CEIL_DIV(nb, (size_t)NF4_DQ_BLOCK);
    unsigned seed = 1234u + (unsigned)rows * 31u + (unsigned)cols;
    float *w = (float *)bench_malloc(n * sizeof(float)), *wq = (float *)bench_malloc(n * sizeof(float));
    uint16_t *wbits = (uint16_t *)bench_malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;  // a simple LCG is plenty for test data
        float u = (float)(seed >> 8) / 16777216.0f - 0.5f, scale = i % 4099 == 0 ? 1.0f : 0.03f;  // rare outliers
        wbits[i] = f32_to_bf16(u * scale);
        w[i] = bf16_to_f32(wbits[i]);
    }
    Nf4Weight cpu;
    nf4_weight_quantize(&cpu, w, rows, cols, NF4_BLOCKSIZE, 1);
    nf4_weight_dequantize(&cpu, wq);

    Nf4Device q = {device_alloc<uint8_t>((n + 1) / 2), device_alloc<uint8_t>(nb), device_alloc<float>(nb2),
                   device_alloc<float>(1), device_alloc<float>(256), rows, cols, NF4_BLOCKSIZE};
    cuda_check(cudaMemcpy(q.code, cpu.code, sizeof(cpu.code), cudaMemcpyHostToDevice));
    float *absmax = device_alloc<float>(nb), *dw = device_alloc<float>(n);
    Nf4MeanPartial *partials = device_alloc<Nf4MeanPartial>(NF4_MEAN_PARTIALS);
    __nv_bfloat16 *dwb = device_alloc<__nv_bfloat16>(n), *out = device_alloc<__nv_bfloat16>(n);
    cuda_check(cudaMemcpy(dw, w, n * sizeof(float), cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(dwb, wbits, n * 2, cudaMemcpyHostToDevice));

    // correctness first: quantization from float32, then from bf16 (kept for the rest)
    int bad = 0;
    for (int from_bf16 = 0; from_bf16 < 2; from_bf16++) {
        if (from_bf16) nf4_quantize(q, absmax, partials, dwb, 0);
        else nf4_quantize(q, absmax, partials, dw, 0);
        cuda_check(cudaDeviceSynchronize());
        bad += compare(from_bf16 ? "codes (bf16 in)" : "codes (float in)", q.packed, cpu.packed, (n + 1) / 2);
        bad += compare("qabsmax", q.qabsmax, cpu.qabsmax, nb);
        bad += compare("absmax2", q.absmax2, cpu.absmax2, nb2 * sizeof(float));
        bad += compare("offset", q.offset, &cpu.offset, sizeof(float));
    }
    nf4_dequantize(out, q, 0);
    cuda_check(cudaDeviceSynchronize());
    for (size_t i = 0; i < n; i++) wbits[i] = f32_to_bf16(wq[i]);
    bad += compare("dequantized weight", out, wbits, n * 2);
    printf("%d x %d: quantize and dequantize bit-exact %s -> %s\n", rows, cols, bad ? "NO" : "yes",
           bad ? "MISMATCH" : "all results match");

    if (repeat > 0) {  // then speed (not with --check)
        double per = (double)n;
        print_bandwidth("quantize (4 launches)",
                        time_cold([&] { nf4_quantize(q, absmax, partials, dwb, 0); }, repeat, cold),
                        per * (2 + 0.5 + 13.0 / 64));
        print_bandwidth("  codes + absmax", time_cold([&] { nf4_quantize_blocks(q, absmax, dwb, 0); }, repeat, cold),
                        per * (2 + 0.5 + 4.0 / 64));
        print_bandwidth("  absmax mean", time_cold([&] { nf4_absmax_mean(q, partials, absmax, 0); }, repeat, cold),
                        4.0 * nb);
        print_bandwidth("  double quantization", time_cold([&] { nf4_quantize_absmax(q, absmax, 0); }, repeat, cold),
                        5.0 * nb);
        print_bandwidth("dequantize", time_cold([&] { nf4_dequantize(out, q, 0); }, repeat, cold),
                        per * (0.5 + 1.0 / 64 + 4.0 / 16384 + 2));
    }

    free(w), free(wq), free(wbits);
    nf4_weight_free(&cpu);
    cuda_check(cudaFree(q.packed)), cuda_check(cudaFree(q.qabsmax)), cuda_check(cudaFree(q.absmax2));
    cuda_check(cudaFree(q.offset)), cuda_check(cudaFree(q.code)), cuda_check(cudaFree(absmax));
    cuda_check(cudaFree(partials));
    cuda_check(cudaFree(dw)), cuda_check(cudaFree(dwb)), cuda_check(cudaFree(out));
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    BenchArgs a = bench_args(argc, argv, 2, 20, "nf4 [--repeat R | --check] [ROWS COLS ...]   (rows, columns)");
    // with --check, awkward shapes: odd counts and short last blocks, 257 blocks, partial
    // dequantizing warps; then the timed ones
    const int awkward[] = {1, 1, 3, 37, 7, 4129, 257, 64, 1, 32, 3, 96, 7, 4128, 33, 14336,
                           4096, 4096, 14336, 4096, 4096, 14336};
    const int timed[] = {4096, 4096, 14336, 4096, 4096, 14336};
    default_shapes(&a, awkward, timed);
    return run_shapes(&a, run_shape);
}
