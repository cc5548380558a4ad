// test_cuda_types.cpp: the harness's __nv_bfloat16 and __half (test/cuda_host/cuda_bf16.h,
// cuda_fp16.h) bit for bit against NVIDIA's own host code for the same operations, from the
// CUDA toolkit's headers (test_cuda_types_nvidia.cpp), and the arithmetic against
// correct rounding computed in double.
//
// Where the cases come from: every bf16/half value and its neighbourhood (the float just
// above and below, the exact midpoint to the next value, a hair off the midpoint, all
// NaN and infinity patterns, subnormals), plus a million float bit patterns spread over
// the whole range. A rounding error can only happen near a midpoint, so that covers the
// cases that matter; the spread catches the rest.
#include <cuda_runtime.h>
#include <math.h>

#include "test.h"

#include "test_cuda_types_nvidia.h"

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bitsf(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint64_t next(uint64_t *s) {  // SplitMix64
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Without the toolkit (nvcc not on PATH when this was built) there is no reference.
#define NO_NVIDIA_REFERENCE "the CUDA toolkit's cuda_bf16.h was not found: nvcc was not on PATH when this was built"

static int mismatches;
static void report(const char *what, uint64_t input, unsigned got, unsigned want) {
    if (mismatches++ < 5) printf("  %s(0x%llx): got 0x%04x, NVIDIA 0x%04x\n", what, (unsigned long long)input, got, want);
}

TEST(float_to_bf16_matches_nvidia) {
    if (!nvidia_reference_available()) SKIP(NO_NVIDIA_REFERENCE);
    mismatches = 0;
    const uint32_t offsets[] = {0, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x4000, 0xc000};
    for (uint32_t hi = 0; hi < 0x10000; hi++)
        for (uint32_t off : offsets) {
            float f = bitsf(hi << 16 | off);
            unsigned got = __bfloat16_as_ushort(__float2bfloat16(f)), want = nvidia_float2bfloat16(f);
            if (got != want) report("__float2bfloat16", hi << 16 | off, got, want);
        }
    uint64_t rng = 1;
    for (int i = 0; i < 1000000; i++) {
        uint32_t u = (uint32_t)next(&rng);
        unsigned got = __bfloat16_as_ushort(__float2bfloat16(bitsf(u))), want = nvidia_float2bfloat16(bitsf(u));
        if (got != want) report("__float2bfloat16", u, got, want);
    }
    CHECK_INT(mismatches, 0);
}

TEST(bf16_to_float_matches_nvidia) {
    if (!nvidia_reference_available()) SKIP(NO_NVIDIA_REFERENCE);
    mismatches = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        uint32_t got = fbits(__bfloat162float(__ushort_as_bfloat16((unsigned short)h)));
        uint32_t want = fbits(nvidia_bfloat162float((unsigned short)h));
        if (got != want) report("__bfloat162float", h, got >> 16, want >> 16);
    }
    CHECK_INT(mismatches, 0);
}

TEST(double_to_bf16_matches_nvidia) {
    if (!nvidia_reference_available()) SKIP(NO_NVIDIA_REFERENCE);
    mismatches = 0;
    uint64_t rng = 2;
    for (uint32_t h = 0; h < 0x10000; h++) {
        // Midpoints to the next bf16 value, exact and off by far less than a float ulp:
        // where rounding through float first would go wrong.
        double a = nvidia_bfloat162float((unsigned short)h), b = nvidia_bfloat162float((unsigned short)(h + 1));
        if (!isfinite(a) || !isfinite(b)) continue;
        double mid = (a + b) / 2, tiny = fabs(mid) * 0x1p-40 + 0x1p-1060;
        double cases[] = {mid, mid + tiny, mid - tiny, a, nextafter(a, b), nextafter(a, -b)};
        for (double d : cases) {
            unsigned got = __bfloat16_as_ushort(__double2bfloat16(d)), want = nvidia_double2bfloat16(d);
            if (got != want) {
                uint64_t u;
                memcpy(&u, &d, 8);
                report("__double2bfloat16", u, got, want);
            }
        }
    }
    for (int i = 0; i < 300000; i++) {
        uint64_t u = next(&rng);
        double d;
        memcpy(&d, &u, 8);
        unsigned got = __bfloat16_as_ushort(__double2bfloat16(d)), want = nvidia_double2bfloat16(d);
        if (got != want) report("__double2bfloat16", u, got, want);
    }
    CHECK_INT(mismatches, 0);
}

TEST(float_half_conversions_match_nvidia) {
    if (!nvidia_reference_available()) SKIP(NO_NVIDIA_REFERENCE);
    mismatches = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        uint32_t got = fbits(__half2float(__ushort_as_half((unsigned short)h)));
        uint32_t want = fbits(nvidia_half2float((unsigned short)h));
        if (got != want) report("__half2float", h, got >> 16, want >> 16);
        float a = nvidia_half2float((unsigned short)h), b = nvidia_half2float((unsigned short)(h + 1));
        float cases[] = {a, nextafterf(a, INFINITY), nextafterf(a, -INFINITY), 0, 0, 0};
        if (isfinite(a) && isfinite(b) && (h & 0x7fff) != 0x7bff && (h & 0x7fff) != 0x7fff) {
            float mid = (float)(((double)a + b) / 2);  // exact: 12 significant bits
            cases[3] = mid, cases[4] = nextafterf(mid, INFINITY), cases[5] = nextafterf(mid, -INFINITY);
        }
        for (float f : cases) {
            unsigned g = __half_as_ushort(__float2half(f)), w = nvidia_float2half(f);
            if (g != w) report("__float2half", fbits(f), g, w);
        }
    }
    // The overflow edge: 65504 is the largest half, 65520 the midpoint to "65536".
    const float edges[] = {65504.0f, 65519.996f, 65520.0f, 1e30f, 0x1p-24f, 0x1p-25f, 0x1.000002p-25f, 0x1p-26f};
    for (float f : edges)
        for (float s : {f, -f}) {
            unsigned g = __half_as_ushort(__float2half(s)), w = nvidia_float2half(s);
            if (g != w) report("__float2half", fbits(s), g, w);
        }
    uint64_t rng = 3;
    for (int i = 0; i < 1000000; i++) {
        uint32_t u = (uint32_t)next(&rng);
        unsigned g = __half_as_ushort(__float2half(bitsf(u))), w = nvidia_float2half(bitsf(u));
        if (g != w) report("__float2half", u, g, w);
    }
    CHECK_INT(mismatches, 0);
}

// + - * / on random pairs: equal to NVIDIA's host arithmetic, and to the exact result
// (in double: exact for + - *, itself correctly rounded for /) rounded once, which is
// what the GPU's bf16/half instructions compute.
TEST(arithmetic_is_correctly_rounded) {
    if (!nvidia_reference_available()) SKIP(NO_NVIDIA_REFERENCE);
    mismatches = 0;
    uint64_t rng = 4;
    const char ops[] = {'+', '-', '*', '/'};
    for (int i = 0; i < 100000; i++) {
        // values within a few binades of each other, so the results are not all overflow
        unsigned short a = (unsigned short)((next(&rng) & 0x83ff) | 0x3c00 | (next(&rng) & 0x0c00));
        unsigned short b = (unsigned short)((next(&rng) & 0x83ff) | 0x3800 | (next(&rng) & 0x0c00));
        unsigned short ab = (unsigned short)(next(&rng) & 0xffff), bb = (unsigned short)(next(&rng) & 0xffff);
        for (char op : ops) {
            __nv_bfloat16 x = __ushort_as_bfloat16(ab), y = __ushort_as_bfloat16(bb);
            __nv_bfloat16 r = op == '+' ? x + y : op == '-' ? x - y : op == '*' ? x * y : x / y;
            double dx = (float)x, dy = (float)y;
            double exact = op == '+' ? dx + dy : op == '-' ? dx - dy : op == '*' ? dx * dy : dx / dy;
            unsigned want = nvidia_bf16_op(op, ab, bb);
            if (isnan(exact)) {  // any NaN is canonical 0x7fff
                if (__bfloat16_as_ushort(r) != 0x7fff || want != 0x7fff) report("bf16 op", ab, __bfloat16_as_ushort(r), want);
                continue;
            }
            if (__bfloat16_as_ushort(r) != want) report("bf16 op vs NVIDIA", (uint64_t)ab << 16 | bb, __bfloat16_as_ushort(r), want);
            if (__bfloat16_as_ushort(r) != nvidia_double2bfloat16(exact))
                report("bf16 op vs exact", (uint64_t)ab << 16 | bb, __bfloat16_as_ushort(r), nvidia_double2bfloat16(exact));

            __half hx = __ushort_as_half(a), hy = __ushort_as_half(b);
            __half hr = op == '+' ? hx + hy : op == '-' ? hx - hy : op == '*' ? hx * hy : hx / hy;
            double hexact = op == '+' ? (double)(float)hx + (float)hy : op == '-' ? (double)(float)hx - (float)hy
                            : op == '*' ? (double)(float)hx * (float)hy : (double)(float)hx / (float)hy;
            if (__half_as_ushort(hr) != nvidia_half_op(op, a, b))
                report("half op vs NVIDIA", (uint64_t)a << 16 | b, __half_as_ushort(hr), nvidia_half_op(op, a, b));
            if (__half_as_ushort(hr) != nvidia_double2half(hexact))
                report("half op vs exact", (uint64_t)a << 16 | b, __half_as_ushort(hr), nvidia_double2half(hexact));
        }
    }
    CHECK_INT(mismatches, 0);
}

int main(void) {
    RUN(float_to_bf16_matches_nvidia);
    RUN(bf16_to_float_matches_nvidia);
    RUN(double_to_bf16_matches_nvidia);
    RUN(float_half_conversions_match_nvidia);
    RUN(arithmetic_is_correctly_rounded);
    return test_summary();
}
