/*
 * nf4.cu: the NF4 kernels (kernels/nf4.cuh) checked against the CPU reference train/nf4.c
 * and timed, in the manner of llm.c's dev/cuda.
 *
 *   make nf4
 *   ./nf4                                  the default shapes: Mistral-7B's q/o (4096 x 4096),
 *                                          gate/up (14336 x 4096) and down (4096 x 14336)
 *   ./nf4 [--repeat R] ROWS COLS [ROWS COLS ...]   shapes of W [out, in] (the GEMV needs
 *                                          COLS a multiple of 32 and is skipped otherwise)
 *   ./nf4 --check [ROWS COLS ...]          validation only, no timing (what `make test-gpu`
 *                                          runs): awkward shapes and the defaults
 *
 * For each shape: random weights, rounded to bf16 as a checkpoint stores them, quantized on
 * the GPU from bf16 and from float32 (the same values), and every byte of the codes,
 * qabsmax, absmax2 and the offset compared with train/nf4.c's nf4_weight_quantize (the
 * bf16 input converts exactly, so both must agree bit for bit); the dequantized bf16
 * weight compared with bf16(nf4_weight_dequantize) bit for bit; the GEMV y = W x for a
 * random bf16 x against Σ W·x in double within nf4_gemv_tolerance. Then each kernel timed
 * over R runs, each after writing an L2-sized buffer (cold L2), and reported as time, GB/s
 * and % of the DRAM peak (2 · memory clock · bus width, as device_info computes it).
 *
 * Bytes counted per weight (the compulsory DRAM traffic, blocksize 64):
 *   quantize (from bf16): 2 in, 0.5 of codes out, the 4-byte absmax of each 64 written
 *     once and read twice (mean, then double quantization) and its 1-byte code written:
 *     2 + 0.5 + 13/64 = 2.70 B. (Stage times are printed too: the mean is one block.)
 *   dequantize: 0.5 of codes + 1/64 of qabsmax + 4/16384 of absmax2 in, 2 of bf16 out:
 *     2.516 B.
 *   GEMV: 0.5 + 1/64 + 4/16384 = 0.516 B, plus x (2·cols) and y (2·rows) once.
 */
#include <math.h>
#include <string.h>

#include "../nf4.cuh"
extern "C" {
#include "../../common/half.h"
#include "../../train/nf4.h"
}

static int attribute(cudaDeviceAttr a) {
    int dev = 0, v = 0;
    cuda_check(cudaGetDevice(&dev));
    cuda_check(cudaDeviceGetAttribute(&v, a, dev));
    return v;
}

static void *host_alloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "error: out of host memory for %zu bytes\n", bytes);
        exit(2);
    }
    return p;
}

template <typename T>
static T *device_alloc(size_t count) {
    T *p;
    cuda_check(cudaMalloc(&p, count * sizeof(T) + 16));
    return p;
}

// Times `run` over `repeat` calls, each after a write of `flush` (cold L2); milliseconds.
template <typename F>
static float time_cold(F run, int repeat, void *flush, size_t flush_bytes) {
    cudaEvent_t start, stop;
    cuda_check(cudaEventCreate(&start));
    cuda_check(cudaEventCreate(&stop));
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
    return total / repeat;
}

// 0 if the device's n bytes equal want, else 1 after printing the first difference.
static int compare(const char *what, const void *dev, const void *want, size_t n) {
    uint8_t *got = (uint8_t *)host_alloc(n);
    cuda_check(cudaMemcpy(got, dev, n, cudaMemcpyDeviceToHost));
    size_t i = 0;
    while (i < n && got[i] == ((const uint8_t *)want)[i]) i++;
    if (i < n)
        printf("  MISMATCH %s: first difference at byte %zu of %zu (gpu 0x%02x, cpu 0x%02x)\n", what, i, n, got[i],
               ((const uint8_t *)want)[i]);
    free(got);
    return i < n;
}

static void report_time(const char *what, float ms, double bytes, double dram_peak) {
    printf("  %-22s %8.4f ms  %7.1f GB/s  %5.1f%% of DRAM peak\n", what, ms, bytes / ms / 1e6,
           100.0 * bytes / (ms / 1e3) / dram_peak);
}

static int run_shape(int rows, int cols, int repeat, double dram_peak, void *flush, size_t flush_bytes) {
    size_t n = (size_t)rows * cols, nb = CEIL_DIV(n, (size_t)NF4_BLOCKSIZE), nb2 = CEIL_DIV(nb, (size_t)NF4_DQ_BLOCK);
    unsigned seed = 1234u + (unsigned)rows * 31u + (unsigned)cols;
    float *w = (float *)host_alloc(n * sizeof(float)), *wq = (float *)host_alloc(n * sizeof(float));
    uint16_t *wbits = (uint16_t *)host_alloc(n * 2), *xbits = (uint16_t *)host_alloc((size_t)cols * 2);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;  // a simple LCG is plenty for test data
        float u = (float)(seed >> 8) / 16777216.0f - 0.5f, scale = i % 4099 == 0 ? 1.0f : 0.03f;  // rare outliers
        wbits[i] = f32_to_bf16(u * scale);
        w[i] = bf16_to_f32(wbits[i]);
    }
    for (int c = 0; c < cols; c++) {
        seed = seed * 1664525u + 1013904223u;
        xbits[c] = f32_to_bf16(4.0f * (float)(seed >> 8) / 16777216.0f - 2.0f);
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
    __nv_bfloat16 *x = device_alloc<__nv_bfloat16>((size_t)cols), *y = device_alloc<__nv_bfloat16>((size_t)rows);
    cuda_check(cudaMemcpy(dw, w, n * sizeof(float), cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(dwb, wbits, n * 2, cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(x, xbits, (size_t)cols * 2, cudaMemcpyHostToDevice));

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
    bool gemv = cols % 32 == 0;
    nf4_dequantize(out, q, 0);
    if (gemv) nf4_gemv(y, x, q, 0);
    cuda_check(cudaDeviceSynchronize());
    for (size_t i = 0; i < n; i++) wbits[i] = f32_to_bf16(wq[i]);
    bad += compare("dequantized weight", out, wbits, n * 2);
    uint16_t *ybits = (uint16_t *)host_alloc((size_t)rows * 2);
    cuda_check(cudaMemcpy(ybits, y, (size_t)rows * 2, cudaMemcpyDeviceToHost));
    double worst = 0;
    int bad_y = 0;
    for (int r = 0; r < rows && gemv; r++) {
        double sum = 0, abs_sum = 0;
        for (int c = 0; c < cols; c++) {
            double p = (double)wq[(size_t)r * cols + c] * bf16_to_f32(xbits[c]);
            sum += p, abs_sum += fabs(p);
        }
        double e = fabs(bf16_to_f32(ybits[r]) - sum), tol = nf4_gemv_tolerance(sum, abs_sum, cols);
        if (tol > 0 && e / tol > worst) worst = e / tol;
        if (!(e <= tol) && bad_y++ < 5)
            printf("  MISMATCH y[%d]: gpu %.7g, exact %.7g, tolerance %.3g\n", r, bf16_to_f32(ybits[r]), sum, tol);
    }
    bad += bad_y;
    if (gemv)
        printf("%d x %d: quantize and dequantize bit-exact %s, GEMV worst error / tolerance %.3f -> %s\n", rows, cols,
               bad > bad_y ? "NO" : "yes", worst, bad ? "MISMATCH" : "all results match");
    else
        printf("%d x %d: quantize and dequantize bit-exact %s (no GEMV: cols not a multiple of 32) -> %s\n", rows,
               cols, bad ? "NO" : "yes", bad ? "MISMATCH" : "all results match");

    if (repeat > 0) {  // then speed (not with --check)
        double per = (double)n;
        report_time("quantize (4 launches)", time_cold([&] { nf4_quantize(q, absmax, partials, dwb, 0); }, repeat, flush, flush_bytes),
                    per * (2 + 0.5 + 13.0 / 64), dram_peak);
        report_time("  codes + absmax",
                    time_cold([&] { nf4_quantize_blocks(q, absmax, dwb, 0); }, repeat, flush, flush_bytes),
                    per * (2 + 0.5 + 4.0 / 64), dram_peak);
        report_time("  absmax mean", time_cold([&] { nf4_absmax_mean(q, partials, absmax, 0); }, repeat, flush, flush_bytes),
                    4.0 * nb, dram_peak);
        report_time("  double quantization",
                    time_cold([&] { nf4_quantize_absmax(q, absmax, 0); }, repeat, flush, flush_bytes), 5.0 * nb,
                    dram_peak);
        report_time("dequantize", time_cold([&] { nf4_dequantize(out, q, 0); }, repeat, flush, flush_bytes),
                    per * (0.5 + 1.0 / 64 + 4.0 / 16384 + 2), dram_peak);
        if (gemv)
            report_time("gemv", time_cold([&] { nf4_gemv(y, x, q, 0); }, repeat, flush, flush_bytes),
                        per * (0.5 + 1.0 / 64 + 4.0 / 16384) + 2.0 * cols + 2.0 * rows, dram_peak);
    }

    free(w), free(wq), free(wbits), free(xbits), free(ybits);
    nf4_weight_free(&cpu);
    cuda_check(cudaFree(q.packed)), cuda_check(cudaFree(q.qabsmax)), cuda_check(cudaFree(q.absmax2));
    cuda_check(cudaFree(q.offset)), cuda_check(cudaFree(q.code)), cuda_check(cudaFree(absmax));
    cuda_check(cudaFree(partials));
    cuda_check(cudaFree(dw)), cuda_check(cudaFree(dwb)), cuda_check(cudaFree(out)), cuda_check(cudaFree(x));
    cuda_check(cudaFree(y));
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    int repeat = 20, check = 0, shapes[64], nshapes = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--repeat") && i + 1 < argc) {
            repeat = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--check")) {
            check = 1;
        } else if (nshapes < 64 && atoi(argv[i]) > 0) {
            shapes[nshapes++] = atoi(argv[i]);
        } else {
            fprintf(stderr, "usage: nf4 [--repeat R | --check] [ROWS COLS ...]\n");
            return 1;
        }
    }
    if (nshapes % 2 || repeat < 1) {
        fprintf(stderr, "usage: nf4 [--repeat R] [ROWS COLS ...]   (shapes come in pairs: rows, columns)\n");
        return 1;
    }
    const int defaults[] = {4096, 4096, 14336, 4096, 4096, 14336};
    if (nshapes == 0 && check) {
        // awkward shapes: odd counts and short last blocks (no GEMV), 257 blocks; one GEMV
        // chunk, odd rows, partial rounds of chunks; then the defaults
        const int awkward[] = {1, 1, 3, 37, 7, 4129, 257, 64, 1, 32, 3, 96, 7, 4128, 33, 14336};
        memcpy(shapes, awkward, sizeof(awkward));
        memcpy(shapes + 16, defaults, sizeof(defaults));
        nshapes = 22;
    } else if (nshapes == 0) {
        memcpy(shapes, defaults, sizeof(defaults));
        nshapes = 6;
    }
    if (check) repeat = 0;
    double dram_peak = 2.0 * attribute(cudaDevAttrMemoryClockRate) * 1e3 * attribute(cudaDevAttrGlobalMemoryBusWidth) / 8;
    size_t flush_bytes = (size_t)attribute(cudaDevAttrL2CacheSize) * 2;
    void *flush;
    cuda_check(cudaMalloc(&flush, flush_bytes));
    printf("DRAM peak %.0f GB/s; L2 flushed with %zu MiB before every timed run; %d runs each\n", dram_peak / 1e9,
           flush_bytes >> 20, repeat);
    int failed = 0;
    for (int i = 0; i < nshapes; i += 2) failed |= run_shape(shapes[i], shapes[i + 1], repeat, dram_peak, flush, flush_bytes);
    cuda_check(cudaFree(flush));
    return failed ? 2 : 0;
}
