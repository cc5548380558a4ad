// test_cuda_random.cpp: the device's seeded normal values (kernels/random.cuh, train_gpu
// --random-weights) in the CUDA-on-CPU harness.
//
// 1. Counter-based: a tensor generated in three chunks (the loader's way) is the same bits
//    as in one launch; the bf16 output is the fp32 one rounded to nearest-even.
// 2. Seeds and streams: the same (seed, stream) gives the same bits, another seed or stream
//    other values.
// 3. The distribution, over 2^18 values: mean within 5 standard errors of 0 (σ/sqrt(n)),
//    variance within 5 standard errors of σ² (σ²·sqrt(2/n)), and the fractions within 1σ
//    and 2σ of the mean within 5 standard errors of the normal's 0.6827 and 0.9545
//    (sqrt(p(1-p)/n)). A wrong transform (a uniform, a halved spread, a biased one) fails.
#include "../kernels/random.cuh"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

extern "C" {
#include "../common/half.h"
#include "../common/util.h"
}

#include <math.h>

static const size_t kN = 1 << 18;

static float *generate(size_t n, uint64_t seed, uint64_t stream, float std, int chunks) {
    float *d, *h = (float *)xmalloc(n * sizeof(float));
    cuda_check(cudaMalloc(&d, n * sizeof(float)));
    for (int c = 0; c < chunks; c++) {
        size_t a = n * c / chunks, b = n * (c + 1) / chunks;
        random_normal(d + a, b - a, seed, stream, a, std, 0);
    }
    cuda_check(cudaMemcpy(h, d, n * sizeof(float), cudaMemcpyDeviceToHost));
    cuda_check(cudaFree(d));
    return h;
}

TEST(chunks_give_the_same_bits) {
    float *whole = generate(10007, 5, 3, 0.02f, 1), *parts = generate(10007, 5, 3, 0.02f, 3);
    CHECK(memcmp(whole, parts, 10007 * sizeof(float)) == 0);
    __nv_bfloat16 *d;
    uint16_t *bits = (uint16_t *)xmalloc(10007 * sizeof(uint16_t));
    cuda_check(cudaMalloc(&d, 10007 * sizeof(__nv_bfloat16)));
    random_normal(d, 10007, 5, 3, 0, 0.02f, 0);
    cuda_check(cudaMemcpy(bits, d, 10007 * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (size_t i = 0; i < 10007; i++) bad += bits[i] != f32_to_bf16(whole[i]);
    CHECK_INT(bad, 0);
    cuda_check(cudaFree(d));
    free(whole), free(parts), free(bits);
}

TEST(seeds_and_streams) {
    float *a = generate(4096, 1, 0, 1.0f, 1), *b = generate(4096, 1, 0, 1.0f, 1);
    float *c = generate(4096, 2, 0, 1.0f, 1), *d = generate(4096, 1, 1, 1.0f, 1);
    CHECK(memcmp(a, b, 4096 * sizeof(float)) == 0);
    size_t same_c = 0, same_d = 0;
    for (int i = 0; i < 4096; i++) same_c += a[i] == c[i], same_d += a[i] == d[i];
    CHECK(same_c < 4 && same_d < 4);
    free(a), free(b), free(c), free(d);
}

TEST(normal_distribution) {
    const float std = 0.02f;
    float *x = generate(kN, 42, 7, std, 1);
    double sum = 0, sq = 0;
    for (size_t i = 0; i < kN; i++) sum += x[i];
    double mean = sum / kN;
    size_t in1 = 0, in2 = 0;
    for (size_t i = 0; i < kN; i++) {
        double d = x[i] - mean;
        sq += d * d;
        in1 += fabs(d) <= std, in2 += fabs(d) <= 2 * std;
    }
    double var = sq / (kN - 1), s2 = (double)std * std, n = (double)kN;
    double f1 = in1 / n, f2 = in2 / n;
    printf("  mean %.3g (5 se %.3g), variance / σ² %.5f (5 se %.5f), within 1σ %.4f, 2σ %.4f\n", mean,
           5 * std / sqrt(n), var / s2, 5 * sqrt(2 / n), f1, f2);
    CHECK(fabs(mean) <= 5 * std / sqrt(n));
    CHECK(fabs(var / s2 - 1) <= 5 * sqrt(2 / n));
    CHECK(fabs(f1 - 0.682689) <= 5 * sqrt(0.682689 * (1 - 0.682689) / n));
    CHECK(fabs(f2 - 0.954500) <= 5 * sqrt(0.954500 * (1 - 0.954500) / n));
    free(x);
}

int main(void) {
    RUN(chunks_give_the_same_bits);
    RUN(seeds_and_streams);
    RUN(normal_distribution);
    return test_summary();
}
