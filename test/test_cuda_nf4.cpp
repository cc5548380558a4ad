// test_cuda_nf4.cpp: the NF4 kernels (kernels/nf4.cuh) in the CUDA-on-CPU harness.
//
// References: train/nf4.c (bit-exact with bitsandbytes 0.50.2, test_nf4.c) and the
// bitsandbytes fixtures in test/fixtures/nf4/ themselves (written by scripts/nf4_fixtures.py).
// 1. Quantization, bf16 and float32 weights, against train/nf4.c bit for bit (codes,
//    first-stage absmax, offset, qabsmax, absmax2) at awkward sizes (1 value, odd counts,
//    short last blocks, a second absmax2 block of one value) with zeros, negative zeros,
//    denormals and values near FLT_MAX among them; a matrix whose absmax mean depends on
//    the order of its double additions (checked here: a tree sum gives another float),
//    where the kernel must add in index order as the reference does; and values for which
//    x / absmax (short last block) and x·(1/absmax) (whole blocks) give different codes.
// 2. Quantization and dequantization against the bitsandbytes fixtures: the codes and
//    absmax of quantize_4bit, the offset within one ulp of torch's mean (and equal to
//    train/nf4.c's), the double-quantized statistics given bitsandbytes' offset, and
//    dequantize_4bit's output rounded to bf16 (for the float16 fixture, whose output
//    cannot show bf16's rounding, train/nf4.c's dequantization of bitsandbytes' arrays).
// 3. Dequantization of train/nf4.c's quantization: bit for bit bf16(nf4_weight_dequantize),
//    blocksizes 32 to 256, aligned output (whole warps exchange codes and store 16-byte
//    packs; a partial last warp goes value by value) and misaligned output.
// 4. Dequantize-ahead (Nf4Ahead): a sequence of weights of several shapes, each multiplied
//    (cuBLASLt stand-in) on the caller's stream right after nf4_ahead_get, gives the same
//    bits as dequantizing and multiplying one after another, with the next weight
//    prefetched, not prefetched, repeated, and none; misuse is refused.
// 5. Every kernel gives the same bits under other thread schedules.
#include "../kernels/matmul.cuh"
#include "../kernels/nf4.cuh"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

extern "C" {
#include "../common/half.h"
#include "../common/util.h"
#include "../train/nf4.h"
#include "../train/safetensors.h"
}

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *kFixtures = "test/fixtures/nf4";

template <typename T>
static T *device_copy(const T *host, size_t count) {
    T *dev;
    cuda_check(cudaMalloc(&dev, count * sizeof(T) + (count == 0)));
    if (count) cuda_check(cudaMemcpy(dev, host, count * sizeof(T), cudaMemcpyHostToDevice));
    return dev;
}

template <typename T>
static T *host_copy(const T *dev, size_t count) {
    T *host = (T *)xmalloc(count * sizeof(T) + 1);
    if (count) cuda_check(cudaMemcpy(host, dev, count * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
}

// An NF4 weight on the device (n >= 1 values), left as cudaMalloc leaves it (0xff bytes)
// until written, each array exactly its size so that AddressSanitizer sees any overrun.
static Nf4Device nf4_alloc(int64_t rows, int64_t cols, int blocksize) {
    Nf4Device q;
    q.rows = rows, q.cols = cols, q.blocksize = blocksize;
    size_t n = (size_t)(rows * cols), nb = CEIL_DIV(n, (size_t)blocksize);
    cuda_check(cudaMalloc(&q.packed, (n + 1) / 2));
    cuda_check(cudaMalloc(&q.qabsmax, nb));
    cuda_check(cudaMalloc(&q.absmax2, CEIL_DIV(nb, (size_t)NF4_DQ_BLOCK) * sizeof(float)));
    cuda_check(cudaMalloc(&q.offset, sizeof(float)));
    float code[256];
    nf4_dynamic_map(code);
    q.code = device_copy(code, 256);
    return q;
}

// The device copy of a weight quantized by train/nf4.c.
static Nf4Device nf4_upload(const Nf4Weight *w) {
    Nf4Device q = nf4_alloc(w->rows, w->cols, w->blocksize);
    size_t n = (size_t)(w->rows * w->cols), nb = CEIL_DIV(n, (size_t)w->blocksize);
    cuda_check(cudaMemcpy(q.packed, w->packed, (n + 1) / 2, cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(q.qabsmax, w->qabsmax, nb, cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(q.absmax2, w->absmax2, CEIL_DIV(nb, (size_t)NF4_DQ_BLOCK) * sizeof(float), cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(q.offset, &w->offset, sizeof(float), cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(q.code, w->code, sizeof(w->code), cudaMemcpyHostToDevice));
    return q;
}

// The partial sums of the absmax mean: one scratch buffer serves every test.
static Nf4MeanPartial *mean_scratch(void) {
    static Nf4MeanPartial *partials;
    if (!partials) cuda_check(cudaMalloc(&partials, NF4_MEAN_PARTIALS * sizeof(Nf4MeanPartial)));
    return partials;
}

static void nf4_free(Nf4Device *q) {
    cuda_check(cudaFree(q->packed)), cuda_check(cudaFree(q->qabsmax)), cuda_check(cudaFree(q->absmax2));
    cuda_check(cudaFree(q->offset)), cuda_check(cudaFree(q->code));
}

// Reports the first difference; 1 if the n bytes are equal.
static int same_bytes(const char *what, const void *got, const void *want, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (((const uint8_t *)got)[i] != ((const uint8_t *)want)[i]) {
            printf("  %s: first difference at byte %zu of %zu (kernel 0x%02x, reference 0x%02x)\n", what, i, n,
                   ((const uint8_t *)got)[i], ((const uint8_t *)want)[i]);
            return 0;
        }
    return 1;
}

// Weights with what quantization must get right: mostly uniform values of varying scale,
// and sprinkled in, zeros, negative zeros, denormals, values near FLT_MAX, whole blocks of
// zeros, of negative zeros and of denormals.
static void fill_weights(float *w, size_t n, uint64_t *rng, int specials) {
    for (size_t i = 0; i < n; i++) {
        double scale = (i / 64) % 5 == 4 ? 40.0 : 0.02 + 0.001 * (double)((i / 64) % 7);
        w[i] = (float)(scale * (2 * rng_uniform(rng) - 1));
        if (!specials) continue;
        switch (rng_below(rng, 40)) {
            case 0: w[i] = 0.0f; break;
            case 1: w[i] = -0.0f; break;
            case 2: w[i] = (float)(rng_uniform(rng) - 0.5) * 1e-39f; break;  // a denormal
            case 3: w[i] = rng_below(rng, 8) ? w[i] : (float)(2 * rng_uniform(rng) - 1) * 3e38f; break;
        }
    }
    if (!specials) return;
    size_t nb = n / 64;
    for (size_t b = 0; b < nb; b++) {
        int kind = (int)((b * 7 + 3) % 11);
        for (size_t i = b * 64; i < b * 64 + 64 && kind < 3; i++)
            w[i] = kind == 0 ? 0.0f : kind == 1 ? -0.0f : (float)(rng_uniform(rng) - 0.5) * 2e-40f;
    }
}

// The CPU reference of the whole quantization, its parts kept apart.
struct Reference {
    uint8_t *packed, *qabsmax;
    float *absmax, *absmax2, offset;
};

static Reference reference_quantize(const float *w, size_t n) {
    size_t nb = CEIL_DIV(n, (size_t)NF4_BLOCKSIZE);
    Reference r;
    float code[256];
    nf4_dynamic_map(code);
    r.packed = (uint8_t *)xmalloc((n + 1) / 2 + 1);
    r.absmax = (float *)xmalloc(nb * sizeof(float) + 1);
    r.qabsmax = (uint8_t *)xmalloc(nb + 1);
    r.absmax2 = (float *)xmalloc(CEIL_DIV(nb, (size_t)NF4_DQ_BLOCK) * sizeof(float) + 1);
    nf4_quantize(w, n, NF4_BLOCKSIZE, r.packed, r.absmax);
    r.offset = nf4_absmax_mean(r.absmax, nb);
    nf4_quantize_absmax(r.absmax, nb, r.offset, code, r.qabsmax, r.absmax2);
    return r;
}

static void reference_free(Reference *r) { free(r->packed), free(r->absmax), free(r->qabsmax), free(r->absmax2); }

// Quantizes w (as bf16 when `bf16`, then w holds the bf16 values) on the device and
// compares every output with the reference. Returns the number of mismatching arrays.
static int quantize_check(float *w, int64_t rows, int64_t cols, bool bf16) {
    size_t n = (size_t)(rows * cols), nb = CEIL_DIV(n, (size_t)NF4_BLOCKSIZE), nb2 = CEIL_DIV(nb, (size_t)NF4_DQ_BLOCK);
    Nf4Device q = nf4_alloc(rows, cols, NF4_BLOCKSIZE);
    float *absmax;
    cuda_check(cudaMalloc(&absmax, nb * sizeof(float)));
    void *dw;
    if (bf16) {
        uint16_t *bits = (uint16_t *)xmalloc(n * 2);
        for (size_t i = 0; i < n; i++) bits[i] = f32_to_bf16(w[i]), w[i] = bf16_to_f32(bits[i]);
        dw = device_copy(bits, n);
        nf4_quantize(q, absmax, mean_scratch(), (const __nv_bfloat16 *)dw, 0);
        free(bits);
    } else {
        dw = device_copy(w, n);
        nf4_quantize(q, absmax, mean_scratch(), (const float *)dw, 0);
    }
    Reference r = reference_quantize(w, n);
    uint8_t *packed = host_copy(q.packed, (n + 1) / 2), *qabsmax = host_copy(q.qabsmax, nb);
    float *got_absmax = host_copy(absmax, nb), *absmax2 = host_copy(q.absmax2, nb2), offset;
    cuda_check(cudaMemcpy(&offset, q.offset, sizeof(float), cudaMemcpyDeviceToHost));
    int bad = !same_bytes("packed codes", packed, r.packed, (n + 1) / 2);
    bad += !same_bytes("absmax", got_absmax, r.absmax, nb * sizeof(float));
    bad += !same_bytes("offset", &offset, &r.offset, sizeof(float));
    bad += !same_bytes("qabsmax", qabsmax, r.qabsmax, nb);
    bad += !same_bytes("absmax2", absmax2, r.absmax2, nb2 * sizeof(float));
    if (bad) printf("  (%lld x %lld, %s)\n", (long long)rows, (long long)cols, bf16 ? "bf16" : "float32");
    free(packed), free(qabsmax), free(got_absmax), free(absmax2);
    reference_free(&r);
    cuda_check(cudaFree(dw)), cuda_check(cudaFree(absmax));
    nf4_free(&q);
    return bad;
}

// ---------------------------------------------------------------------------------------
// 1. Quantization against train/nf4.c

TEST(device_table_is_bitsandbytes_table) {
    for (int k = 0; k < 16; k++) CHECK(nf4_value(k) == nf4_code[k]);
}

TEST(quantize_matches_reference) {
    // rows x cols: one value, a short single block, exactly one block, one past it, odd
    // counts, 257 blocks (a second absmax2 block holding one value), 514 blocks and odd,
    // 2500 blocks (three blocks add up the mean's partial sums)
    struct { int64_t rows, cols; } shapes[] = {{1, 1}, {1, 63}, {1, 64}, {1, 65}, {3, 37}, {2, 64}, {7, 100},
                                               {257, 64}, {129, 255}, {5, 32000}};
    uint64_t rng = 1;
    for (auto s : shapes)
        for (int specials = 0; specials < 2; specials++)
            for (int bf16 = 0; bf16 < 2; bf16++) {
                size_t n = (size_t)(s.rows * s.cols);
                float *w = (float *)xmalloc(n * sizeof(float));
                fill_weights(w, n, &rng, specials);
                CHECK_INT(quantize_check(w, s.rows, s.cols, bf16), 0);
                free(w);
            }
}

// Block absmax 1, 2^-24, sixty-four of 2^-53 and zeros, 128 blocks: in index order the
// sum is 1 + 2^-24 (each 2^-53 is half an ulp there, a tie, and rounds to the even 1 +
// 2^-24), whose mean over 128 blocks lies exactly halfway between two floats and rounds
// down to 2^-7; adding the small ones together first gives 1 + 2^-24 + 2^-47 and a mean
// that rounds up. The sum, 2^0, is just at the limit 2^(53+q) (q = -53) below which the
// kernel may add in any order.
TEST(offset_adds_in_index_order) {
    const size_t nb = 128, n = nb * 64;
    float *w = (float *)xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) w[i] = 0.0f;
    w[0] = 1.0f;
    w[64 + 5] = -0x1p-24f;
    for (size_t b = 2; b < 66; b++) w[b * 64 + b % 64] = 0x1p-53f;
    Reference r = reference_quantize(w, n);
    double tree = 0.0;  // what an order-insensitive kernel would compute: the small ones first
    for (size_t b = nb; b-- > 0;) tree += r.absmax[b];
    CHECK(r.offset == 0x1p-7f);
    CHECK((float)(tree / (double)nb) != r.offset);  // so the order matters here
    CHECK_INT(quantize_check(w, 1, (int64_t)n, false), 0);
    reference_free(&r);
    free(w);
}

// The short last block divides by absmax where whole blocks multiply by its reciprocal;
// the two round differently now and then. Values x near absmax·midpoint for which they
// land on different sides of the midpoint, each twice (as the high and as the low nibble),
// first in a short block, then in a whole one.
TEST(short_block_divides_whole_block_multiplies) {
    float w[64] = {0}, a = 0.0f;
    int found = 0;
    for (int k = 1; k < 100000 && !found; k++) {
        a = 1.0f + 37.0f * (float)k * 0x1p-23f;
        for (int m = 0; m < 15 && found < 62; m++) {
            float mid = (nf4_code[m] + nf4_code[m + 1]) / 2.0f, x = mid * a;
            for (int step = 0; step < 4 && found < 62; step++, x = nextafterf(x, INFINITY))
                if ((x / a > mid) != (x * (1.0f / a) > mid)) w[1 + found++] = x, w[1 + found++] = x;
        }
    }
    CHECK(found > 0);
    w[0] = a;
    CHECK_INT(quantize_check(w, 1, 1 + found, false), 0);  // one short block
    CHECK_INT(quantize_check(w, 1, 64, false), 0);         // the same values in a whole block
}

// ---------------------------------------------------------------------------------------
// 2. The bitsandbytes fixtures

// The fixture's double-quantized weight on the device, as bitsandbytes stored it.
static Nf4Device fixture_upload(const SafeTensors *st, int64_t n, int blocksize) {
    Nf4Device q = nf4_alloc(1, n, blocksize);
    const StTensor *packed = st_find(st, "dq.packed"), *qabsmax = st_find(st, "dq.qabsmax");
    const StTensor *absmax2 = st_find(st, "dq.absmax2"), *offset = st_find(st, "dq.offset");
    const StTensor *code = st_find(st, "dq.code");
    cuda_check(cudaMemcpy(q.packed, packed->data, packed->nbytes, cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(q.qabsmax, qabsmax->data, qabsmax->nbytes, cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(q.absmax2, absmax2->data, absmax2->nbytes, cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(q.offset, offset->data, 4, cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(q.code, code->data, 256 * 4, cudaMemcpyHostToDevice));
    return q;
}

// Quantization of the fixture's weight (blocksize 64 only) and dequantization of its
// stored codes, both against bitsandbytes' own arrays; dequantization against
// bitsandbytes' output rounded to bf16 when that output is bf16 or float32 (a float16
// output cannot tell bf16's rounding: there it is compared with train/nf4.c given the same
// stored arrays).
static void fixture_check(const char *file, int blocksize) {
    char path[4096], err[ERR_LEN];
    snprintf(path, sizeof(path), "%s/%s", kFixtures, file);
    SafeTensors st;
    if (st_open(&st, path, err)) {
        printf("  %s\n", err);
        CHECK(0);
        return;
    }
    const char *names[] = {"w", "plain.packed", "plain.absmax", "dq.packed", "dq.qabsmax", "dq.absmax2",
                           "dq.offset", "dq.code", "dequant"};
    for (const char *name : names)
        if (!st_find(&st, name)) {
            printf("  %s: no tensor %s\n", path, name);
            CHECK(0);
            st_close(&st);
            return;
        }
    const StTensor *w = st_find(&st, "w");
    size_t n = (size_t)w->numel, nb = CEIL_DIV(n, (size_t)blocksize), nb2 = CEIL_DIV(nb, (size_t)NF4_DQ_BLOCK);
    float *x = st_to_f32(w), bnb_offset;
    memcpy(&bnb_offset, st_find(&st, "dq.offset")->data, 4);

    if (blocksize == NF4_BLOCKSIZE && w->dtype != ST_F16) {
        Nf4Device q = nf4_alloc(1, (int64_t)n, blocksize);
        float *absmax;
        cuda_check(cudaMalloc(&absmax, nb * sizeof(float)));
        void *dw = w->dtype == ST_BF16 ? (void *)device_copy((const uint16_t *)w->data, n) : (void *)device_copy(x, n);
        if (w->dtype == ST_BF16) nf4_quantize(q, absmax, mean_scratch(), (const __nv_bfloat16 *)dw, 0);
        else nf4_quantize(q, absmax, mean_scratch(), (const float *)dw, 0);
        uint8_t *packed = host_copy(q.packed, (n + 1) / 2);
        float *got_absmax = host_copy(absmax, nb), offset;
        cuda_check(cudaMemcpy(&offset, q.offset, 4, cudaMemcpyDeviceToHost));
        CHECK(same_bytes("packed codes", packed, st_find(&st, "plain.packed")->data, (n + 1) / 2));
        CHECK(same_bytes("absmax", got_absmax, st_find(&st, "plain.absmax")->data, nb * 4));
        // torch's mean sums in its own order: one ulp apart at most; train/nf4.c exactly
        CHECK(fabsf(offset - bnb_offset) <= fabsf(nextafterf(bnb_offset, INFINITY) - bnb_offset));
        CHECK(offset == nf4_absmax_mean(got_absmax, nb));
        // the second stage given bitsandbytes' offset
        cuda_check(cudaMemcpy(q.offset, &bnb_offset, 4, cudaMemcpyHostToDevice));
        nf4_quantize_absmax(q, absmax, 0);
        uint8_t *qabsmax = host_copy(q.qabsmax, nb);
        float *absmax2 = host_copy(q.absmax2, nb2);
        CHECK(same_bytes("qabsmax", qabsmax, st_find(&st, "dq.qabsmax")->data, nb));
        CHECK(same_bytes("absmax2", absmax2, st_find(&st, "dq.absmax2")->data, nb2 * 4));
        free(packed), free(got_absmax), free(qabsmax), free(absmax2);
        cuda_check(cudaFree(dw)), cuda_check(cudaFree(absmax));
        nf4_free(&q);
    }

    Nf4Device q = fixture_upload(&st, (int64_t)n, blocksize);
    __nv_bfloat16 *out;
    cuda_check(cudaMalloc(&out, n * 2));
    nf4_dequantize(out, q, 0);
    uint16_t *got = host_copy((const uint16_t *)out, n), *want = (uint16_t *)xmalloc(n * 2);
    float *bnb = st_to_f32(st_find(&st, "dequant"));
    if (w->dtype == ST_F16) {  // train/nf4.c from the same stored arrays
        float *absmax = (float *)xmalloc(nb * 4), code[256], offset;
        memcpy(code, st_find(&st, "dq.code")->data, sizeof(code));
        memcpy(&offset, st_find(&st, "dq.offset")->data, 4);
        nf4_dequantize_absmax((const uint8_t *)st_find(&st, "dq.qabsmax")->data,
                              (const float *)st_find(&st, "dq.absmax2")->data, nb, offset, code, absmax);
        nf4_dequantize((const uint8_t *)st_find(&st, "dq.packed")->data, absmax, n, blocksize, bnb);
        free(absmax);
    }
    for (size_t i = 0; i < n; i++) want[i] = f32_to_bf16(bnb[i]);
    CHECK(same_bytes("dequantized weights", got, want, n * 2));
    free(got), free(want), free(bnb), free(x);
    cuda_check(cudaFree(out));
    nf4_free(&q);
    st_close(&st);
}

TEST(fixture_bf16_96x40) { fixture_check("bf16_96x40.safetensors", 64); }
TEST(fixture_f32_257x64_zero_and_huge_blocks) { fixture_check("f32_257x64.safetensors", 64); }
TEST(fixture_f32_values_on_midpoints) { fixture_check("f32_midpoints.safetensors", 64); }
TEST(fixture_f16_odd_tail_blocksize128) { fixture_check("f16_odd_tail.safetensors", 128); }

// ---------------------------------------------------------------------------------------
// 3. Dequantization against train/nf4.c

TEST(dequantize_matches_reference) {
    struct { int64_t rows, cols; int blocksize, offset; } shapes[] = {
        {1, 1, 64, 0},    {1, 33, 64, 0},   {3, 37, 64, 0},    {257, 64, 64, 0}, {129, 255, 128, 0},
        {64, 300, 32, 0}, {40, 200, 256, 0}, {5, 96, 64, 1},   {33, 65, 64, 3},
    };
    uint64_t rng = 2;
    for (auto s : shapes) {
        size_t n = (size_t)(s.rows * s.cols);
        float *w = (float *)xmalloc(n * sizeof(float)), *ref = (float *)xmalloc(n * sizeof(float));
        fill_weights(w, n, &rng, 1);
        Nf4Weight cpu;
        nf4_weight_quantize(&cpu, w, s.rows, s.cols, s.blocksize, 1);
        nf4_weight_dequantize(&cpu, ref);
        Nf4Device q = nf4_upload(&cpu);
        uint16_t *base, *want = (uint16_t *)xmalloc(n * 2);
        cuda_check(cudaMalloc(&base, (n + (size_t)s.offset) * 2));  // offset: a misaligned output
        nf4_dequantize((__nv_bfloat16 *)(base + s.offset), q, 0);
        uint16_t *got = host_copy(base + s.offset, n);
        for (size_t i = 0; i < n; i++) want[i] = f32_to_bf16(ref[i]);
        int same = same_bytes("dequantized weights", got, want, n * 2);
        if (!same)
            printf("  (%lld x %lld, blocksize %d, output offset %d)\n", (long long)s.rows, (long long)s.cols,
                   s.blocksize, s.offset);
        CHECK(same);
        free(w), free(ref), free(want), free(got);
        cuda_check(cudaFree(base));
        nf4_free(&q);
        nf4_weight_free(&cpu);
    }
}

// ---------------------------------------------------------------------------------------
// 4. Dequantize-ahead

struct AheadWeight {
    Nf4Weight cpu;
    Nf4Device q;
};

TEST(ahead_gives_the_plain_products) {
    // (rows, cols) in use order: reuse of both buffers, a weight used twice in a row, one
    // used again later (no longer prefetched), the largest in the middle
    const int64_t shapes[][2] = {{24, 48}, {96, 48}, {48, 96}, {48, 96}, {24, 48}, {130, 64}, {7, 40}};
    const int order[] = {0, 1, 2, 3, 0, 4, 5, 6};  // indices into shapes; 3 is 2's twin
    const int n = 7, steps = 8, M = 5;
    uint64_t rng = 6;
    AheadWeight w[7];
    size_t capacity = 0;
    for (int i = 0; i < n; i++) {
        if (i == 3) continue;  // 2's twin, below
        size_t count = (size_t)(shapes[i][0] * shapes[i][1]);
        float *f = (float *)xmalloc(count * sizeof(float));
        fill_weights(f, count, &rng, 0);
        nf4_weight_quantize(&w[i].cpu, f, shapes[i][0], shapes[i][1], NF4_BLOCKSIZE, 1);
        w[i].q = nf4_upload(&w[i].cpu);
        capacity = count > capacity ? count : capacity;
        free(f);
    }
    w[3].q = w[2].q;  // the same weight under another Nf4Device
    void *workspace;
    cuda_check(cudaMalloc(&workspace, MATMUL_WORKSPACE_BYTES));
    Matmul mm;
    matmul_create(&mm, workspace, MATMUL_WORKSPACE_BYTES);
    cudaStream_t stream;
    cuda_check(cudaStreamCreate(&stream));
    uint16_t *xbits = (uint16_t *)xmalloc((size_t)M * 130 * 2);
    for (int i = 0; i < M * 130; i++) xbits[i] = f32_to_bf16((float)(2 * rng_uniform(&rng) - 1));
    __nv_bfloat16 *x = (__nv_bfloat16 *)device_copy(xbits, (size_t)M * 130), *memory, *plain, *y[8], *want;
    cuda_check(cudaMalloc(&memory, 2 * capacity * 2));
    cuda_check(cudaMalloc(&plain, capacity * 2));
    cuda_check(cudaMalloc(&want, (size_t)M * 130 * 2));
    for (int k = 0; k < 3; k++) {  // every next prefetched, none prefetched, and prefetching skipped twice
        Nf4Ahead a;
        nf4_ahead_init(&a, memory, capacity);
        for (int s = 0; s < steps; s++) {
            const Nf4Device *now = &w[order[s]].q, *next = s + 1 < steps ? &w[order[s + 1]].q : NULL;
            if (k == 1 || (k == 2 && s % 3 == 0)) next = NULL;
            const __nv_bfloat16 *W = nf4_ahead_get(&a, now, next, stream);
            cuda_check(cudaMalloc(&y[s], (size_t)M * now->rows * 2));
            matmul(&mm, y[s], MATMUL_BF16, x, 0, W, 1, M, (int)now->rows, (int)now->cols, 1.0f, 0.0f, stream);
            nf4_ahead_release(&a, stream);
        }
        nf4_ahead_destroy(&a);
        cuda_check(cudaStreamSynchronize(stream));
        for (int s = 0; s < steps; s++) {
            const Nf4Device *now = &w[order[s]].q;
            size_t bytes = (size_t)M * now->rows * 2;
            nf4_dequantize(plain, *now, 0);
            matmul(&mm, want, MATMUL_BF16, x, 0, plain, 1, M, (int)now->rows, (int)now->cols, 1.0f, 0.0f, 0);
            uint8_t *got = host_copy((const uint8_t *)y[s], bytes), *ref = host_copy((const uint8_t *)want, bytes);
            int same = same_bytes("product", got, ref, bytes);
            if (!same) printf("  (step %d, schedule %d)\n", s, k);
            CHECK(same);
            free(got), free(ref);
            cuda_check(cudaFree(y[s]));
        }
    }
    matmul_destroy(&mm);
    cuda_check(cudaStreamDestroy(stream));
    cuda_check(cudaFree(workspace)), cuda_check(cudaFree(x)), cuda_check(cudaFree(memory)), cuda_check(cudaFree(plain));
    cuda_check(cudaFree(want));
    free(xbits);
    for (int i = 0; i < n; i++) {
        if (i == 3) continue;
        nf4_free(&w[i].q);
        nf4_weight_free(&w[i].cpu);
    }
}

// A misuse of Nf4Ahead, run in a child: a weight of misuse_rows x 64 values into buffers of
// 256, asked for misuse_gets times without a release.
static int misuse_rows, misuse_gets;

static void ahead_misuse(void) {
    static Nf4Ahead a;
    static __nv_bfloat16 *memory;
    static Nf4Device q;
    q = nf4_alloc(misuse_rows, 64, 64);
    cuda_check(cudaMalloc(&memory, 2 * 256 * 2));
    nf4_ahead_init(&a, memory, 256);
    for (int i = 0; i < misuse_gets; i++) nf4_ahead_get(&a, &q, NULL, 0);
}

TEST(ahead_refuses_misuse) {
    // a second get before the release, and a weight larger than the buffers
    char report[512];
    misuse_rows = 4, misuse_gets = 2;
    CHECK_INT(run_in_child(ahead_misuse, report, sizeof(report)), 1);
    CHECK(strstr(report, "was not released") != NULL);
    misuse_rows = 5, misuse_gets = 1;
    CHECK_INT(run_in_child(ahead_misuse, report, sizeof(report)), 1);
    CHECK(strstr(report, "larger than the buffers") != NULL);
}

// ---------------------------------------------------------------------------------------
// 5. The same bits under every schedule

TEST(bits_do_not_depend_on_the_schedule) {
    const uint64_t saved_seed = cuda_host_seed();
    const int64_t rows = 33, cols = 640;  // 21120 values: 20 whole dequantizing warps and a partial one
    size_t n = (size_t)(rows * cols), nb = CEIL_DIV(n, (size_t)NF4_BLOCKSIZE);
    uint64_t rng = 4;
    float *w = (float *)xmalloc(n * sizeof(float));
    fill_weights(w, n, &rng, 1);
    float *dw = device_copy(w, n), *absmax;
    __nv_bfloat16 *out;
    cuda_check(cudaMalloc(&absmax, nb * 4));
    cuda_check(cudaMalloc(&out, n * 2));
    Nf4Device q = nf4_alloc(rows, cols, NF4_BLOCKSIZE);
    size_t bytes = (n + 1) / 2 + nb + n * 2;
    uint8_t *first = (uint8_t *)xmalloc(bytes), *again = (uint8_t *)xmalloc(bytes);
    for (uint64_t seed = 0; seed < 3; seed++) {
        cuda_host_set_seed(seed * 1000003);
        nf4_quantize(q, absmax, mean_scratch(), dw, 0);
        nf4_dequantize(out, q, 0);
        uint8_t *dst = seed ? again : first;
        cuda_check(cudaMemcpy(dst, q.packed, (n + 1) / 2, cudaMemcpyDeviceToHost));
        cuda_check(cudaMemcpy(dst + (n + 1) / 2, q.qabsmax, nb, cudaMemcpyDeviceToHost));
        cuda_check(cudaMemcpy(dst + (n + 1) / 2 + nb, out, n * 2, cudaMemcpyDeviceToHost));
        if (seed) CHECK(memcmp(first, again, bytes) == 0);
    }
    cuda_host_set_seed(saved_seed);
    free(w), free(first), free(again);
    cuda_check(cudaFree(dw)), cuda_check(cudaFree(absmax)), cuda_check(cudaFree(out));
    nf4_free(&q);
}

int main(void) {
    RUN(device_table_is_bitsandbytes_table);
    RUN(quantize_matches_reference);
    RUN(offset_adds_in_index_order);
    RUN(short_block_divides_whole_block_multiplies);
    RUN(fixture_bf16_96x40);
    RUN(fixture_f32_257x64_zero_and_huge_blocks);
    RUN(fixture_f32_values_on_midpoints);
    RUN(fixture_f16_odd_tail_blocksize128);
    RUN(dequantize_matches_reference);
    RUN(ahead_gives_the_plain_products);
    RUN(ahead_refuses_misuse);
    RUN(bits_do_not_depend_on_the_schedule);
    return test_summary();
}
