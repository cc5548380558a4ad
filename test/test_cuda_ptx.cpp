// test_cuda_ptx.cpp: kernels/ptx.cuh under the CUDA-on-CPU harness: mma.sync m16n8k16,
// ldmatrix and cp.async, run through real kernels (test_cuda_ptx_kernels.cu, which nvcc
// also compiles).
//
// Expected values never come from the harness's emulation code. The fragment tests build
// and read per-lane registers with the PTX ISA's register-view tables, typed out again
// below (reference/gpu-targets-and-emulation.md §2.1), against products computed with a
// plain triple loop. All inputs are small integers, which bf16 holds exactly and whose
// products and sums float holds exactly, so every correct implementation, GPU or CPU,
// gives these exact bits. The GEMM test needs no table at all: ldmatrix + mma must
// reproduce the triple loop.
#include "test_cuda_ptx_kernels.cu"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

extern "C" {
#include "../common/util.h"
}

static uint32_t float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

// The bf16 bits of a small integer: the top half of its float bits (exact, no rounding).
static unsigned short bf16_of_int(int v) {
    uint32_t u = float_bits((float)v);
    if (u & 0xffff) printf("  %d is not exact in bf16\n", v);
    return (unsigned short)(u >> 16);
}
static unsigned pack(int lo, int hi) { return bf16_of_int(lo) | (unsigned)bf16_of_int(hi) << 16; }

static int random_int(uint64_t *rng, int lo, int hi) { return lo + (int)rng_below(rng, (uint64_t)(hi - lo + 1)); }

// ---------------------------------------------------------------------------------------

TEST(mma_fragments_match_the_isa_table) {
    unsigned *da, *db;
    float *dc, *dd;
    cuda_check(cudaMalloc(&da, 32 * 4 * sizeof(unsigned)));
    cuda_check(cudaMalloc(&db, 32 * 2 * sizeof(unsigned)));
    cuda_check(cudaMalloc(&dc, 32 * 4 * sizeof(float)));
    cuda_check(cudaMalloc(&dd, 32 * 4 * sizeof(float)));
    uint64_t rng = 7;
    for (int trial = 0; trial < 3; trial++) {
        int A[16][16], B[16][8], C[16][8], D[16][8];
        for (int i = 0; i < 16; i++)
            for (int k = 0; k < 16; k++) A[i][k] = random_int(&rng, -8, 8);
        for (int k = 0; k < 16; k++)
            for (int j = 0; j < 8; j++) B[k][j] = random_int(&rng, -8, 8);
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 8; j++) C[i][j] = random_int(&rng, -100, 100);
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 8; j++) {
                D[i][j] = C[i][j];
                for (int k = 0; k < 16; k++) D[i][j] += A[i][k] * B[k][j];
            }
        // PTX ISA, mma.m16n8k16 with .bf16 A/B and .f32 C/D, register view
        // (g = lane / 4, t = lane % 4; {lo, hi} = bits [15:0], [31:16]):
        //   a0 = {A[g][2t],   A[g][2t+1]}     a1 = {A[g+8][2t],   A[g+8][2t+1]}
        //   a2 = {A[g][2t+8], A[g][2t+9]}     a3 = {A[g+8][2t+8], A[g+8][2t+9]}
        //   b0 = {B[2t][g],   B[2t+1][g]}     b1 = {B[2t+8][g],   B[2t+9][g]}
        //   c0, c1, c2, c3 = C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1] (same for d)
        unsigned ha[32 * 4], hb[32 * 2];
        float hc[32 * 4], hd[32 * 4];
        for (int lane = 0; lane < 32; lane++) {
            int g = lane / 4, t = lane % 4;
            ha[4 * lane + 0] = pack(A[g][2 * t], A[g][2 * t + 1]);
            ha[4 * lane + 1] = pack(A[g + 8][2 * t], A[g + 8][2 * t + 1]);
            ha[4 * lane + 2] = pack(A[g][2 * t + 8], A[g][2 * t + 9]);
            ha[4 * lane + 3] = pack(A[g + 8][2 * t + 8], A[g + 8][2 * t + 9]);
            hb[2 * lane + 0] = pack(B[2 * t][g], B[2 * t + 1][g]);
            hb[2 * lane + 1] = pack(B[2 * t + 8][g], B[2 * t + 9][g]);
            hc[4 * lane + 0] = (float)C[g][2 * t];
            hc[4 * lane + 1] = (float)C[g][2 * t + 1];
            hc[4 * lane + 2] = (float)C[g + 8][2 * t];
            hc[4 * lane + 3] = (float)C[g + 8][2 * t + 1];
        }
        cuda_check(cudaMemcpy(da, ha, sizeof(ha), cudaMemcpyHostToDevice));
        cuda_check(cudaMemcpy(db, hb, sizeof(hb), cudaMemcpyHostToDevice));
        cuda_check(cudaMemcpy(dc, hc, sizeof(hc), cudaMemcpyHostToDevice));
        LAUNCH(mma_fragments_kernel, 1, 32, 0, 0, da, db, dc, dd);
        cuda_check(cudaMemcpy(hd, dd, sizeof(hd), cudaMemcpyDeviceToHost));
        int bad = 0;
        for (int lane = 0; lane < 32; lane++) {
            int g = lane / 4, t = lane % 4;
            float want[4] = {(float)D[g][2 * t], (float)D[g][2 * t + 1], (float)D[g + 8][2 * t],
                             (float)D[g + 8][2 * t + 1]};
            for (int i = 0; i < 4; i++) bad += float_bits(hd[4 * lane + i]) != float_bits(want[i]);
        }
        CHECK_INT(bad, 0);
        // The reference's spot values: lane 5 holds D[1][2..3] and D[9][2..3]; lane 31
        // holds D[7][6..7] and D[15][6..7].
        CHECK(hd[4 * 5 + 0] == (float)D[1][2] && hd[4 * 5 + 3] == (float)D[9][3]);
        CHECK(hd[4 * 31 + 1] == (float)D[7][7] && hd[4 * 31 + 2] == (float)D[15][6]);
    }
    cuda_check(cudaFree(da));
    cuda_check(cudaFree(db));
    cuda_check(cudaFree(dc));
    cuda_check(cudaFree(dd));
}

TEST(ldmatrix_matches_the_isa) {
    // m[j][r][c] = 64j + 8r + c + 1: every element different.
    unsigned short hm[256];
    for (int i = 0; i < 256; i++) hm[i] = (unsigned short)(i + 1);
    unsigned short *dm;
    unsigned *dout, out[128];
    cuda_check(cudaMalloc(&dm, sizeof(hm)));
    cuda_check(cudaMalloc(&dout, sizeof(out)));
    cuda_check(cudaMemcpy(dm, hm, sizeof(hm), cudaMemcpyHostToDevice));
    for (int num = 1; num <= 4; num *= 2)
        for (int trans = 0; trans < 2; trans++) {
            LAUNCH(ldmatrix_kernel, 1, 32, 0, 0, dm, dout, num, trans);
            cuda_check(cudaMemcpy(out, dout, sizeof(out), cudaMemcpyDeviceToHost));
            int bad = 0;
            for (int l = 0; l < 32; l++)
                for (int j = 0; j < 4; j++) {
                    // PTX ISA ldmatrix: "each thread receives fragments of a row": lane l
                    // gets row l / 4, elements 2(l % 4) and 2(l % 4) + 1 of matrix j; with
                    // .trans the matrix is read column-major: column l / 4, rows 2(l % 4)
                    // and 2(l % 4) + 1. Registers beyond .num stay as they were (0).
                    int row = l / 4, col = 2 * (l % 4);
                    unsigned lo = trans ? hm[64 * j + 8 * col + row] : hm[64 * j + 8 * row + col];
                    unsigned hi = trans ? hm[64 * j + 8 * (col + 1) + row] : hm[64 * j + 8 * row + col + 1];
                    unsigned want = j < num ? lo | hi << 16 : 0;
                    if (out[4 * l + j] != want) {
                        if (bad < 4)
                            printf("  x%d%s lane %d reg %d: got 0x%08x, want 0x%08x\n", num, trans ? ".trans" : "", l,
                                   j, out[4 * l + j], want);
                        bad++;
                    }
                }
            CHECK_INT(bad, 0);
        }
    cuda_check(cudaFree(dm));
    cuda_check(cudaFree(dout));
}

TEST(ldmatrix_mma_gemm_equals_a_triple_loop) {
    const uint64_t saved_seed = cuda_host_seed();
    __nv_bfloat16 *dA, *dB;
    float *dD;
    cuda_check(cudaMalloc(&dA, 256 * sizeof(__nv_bfloat16)));
    cuda_check(cudaMalloc(&dB, 128 * sizeof(__nv_bfloat16)));
    cuda_check(cudaMalloc(&dD, 128 * sizeof(float)));
    uint64_t rng = 11;
    for (int b_trans = 0; b_trans < 2; b_trans++)
        for (uint64_t seed = 1; seed <= 3; seed++) {
            cuda_host_set_seed(seed);
            int A[16][16], B[16][8];
            unsigned short hA[256], hB[128];
            for (int i = 0; i < 16; i++)
                for (int k = 0; k < 16; k++) hA[16 * i + k] = bf16_of_int(A[i][k] = random_int(&rng, -16, 16));
            for (int k = 0; k < 16; k++)
                for (int j = 0; j < 8; j++) {
                    B[k][j] = random_int(&rng, -16, 16);
                    if (b_trans)
                        hB[8 * k + j] = bf16_of_int(B[k][j]);   // B, 16x8 row-major
                    else
                        hB[16 * j + k] = bf16_of_int(B[k][j]);  // Bᵀ, 8x16 row-major
                }
            cuda_check(cudaMemcpy(dA, hA, sizeof(hA), cudaMemcpyHostToDevice));
            cuda_check(cudaMemcpy(dB, hB, sizeof(hB), cudaMemcpyHostToDevice));
            LAUNCH(gemm_16x8x16_kernel, 1, 32, 0, 0, dA, dB, dD, b_trans);
            float D[128];
            cuda_check(cudaMemcpy(D, dD, sizeof(D), cudaMemcpyDeviceToHost));
            int bad = 0;
            for (int i = 0; i < 16; i++)
                for (int j = 0; j < 8; j++) {
                    int want = 0;
                    for (int k = 0; k < 16; k++) want += A[i][k] * B[k][j];
                    bad += D[8 * i + j] != (float)want;
                }
            CHECK_INT(bad, 0);
        }
    cuda_host_set_seed(saved_seed);
    cuda_check(cudaFree(dA));
    cuda_check(cudaFree(dB));
    cuda_check(cudaFree(dD));
}

TEST(cp_async_targets_are_poisoned_until_the_wait) {
    const uint64_t saved_seed = cuda_host_seed();
    float src[12], out[20], *dsrc, *dout;
    for (int i = 0; i < 12; i++) src[i] = (float)(i + 1);
    cuda_check(cudaMalloc(&dsrc, sizeof(src)));
    cuda_check(cudaMalloc(&dout, sizeof(out)));
    cuda_check(cudaMemcpy(dsrc, src, sizeof(src), cudaMemcpyHostToDevice));
    for (uint64_t seed = 0; seed < 3; seed++) {
        cuda_host_set_seed(seed);
        // The race detector stops the first read of a target before its wait...
        CHECK_INT(expect_fault(TRY_LAUNCH(cp_async_kernel, 1, 5, 0, dsrc, dout), cudaErrorLaunchFailure,
                               "the cp.async has not landed"),
                  0);
        // ...and without it the reads see the poison.
        cuda_host_set_racecheck(false);
        LAUNCH(cp_async_kernel, 1, 5, 0, 0, dsrc, dout);
        cuda_check(cudaMemcpy(out, dout, sizeof(out), cudaMemcpyDeviceToHost));
        cuda_host_set_racecheck(true);
        const uint32_t poison = 0xffffffffu;
        int bad = 0;
        for (int i = 0; i < 4; i++) bad += float_bits(out[i]) != poison;       // before any wait
        for (int i = 0; i < 4; i++) bad += out[4 + i] != (float)(i + 1);       // group 1 done
        for (int i = 0; i < 4; i++) bad += float_bits(out[8 + i]) != poison;   // group 2 pending
        for (int i = 0; i < 4; i++) bad += out[12 + i] != (float)(i + 5);      // group 2 done
        for (int i = 0; i < 4; i++) bad += float_bits(out[16 + i]) != poison;  // barrier without wait
        CHECK_INT(bad, 0);
    }
    cuda_host_set_seed(saved_seed);
    cuda_check(cudaFree(dsrc));
    cuda_check(cudaFree(dout));
}

TEST(ptx_misuse_is_reported) {
    float *dsrc, *dout;
    cuda_check(cudaMalloc(&dsrc, 16 * sizeof(float)));
    cuda_check(cudaMalloc(&dout, 32 * sizeof(float)));
    const char *want[] = {
        "addresses",                                  // misaligned cp.async destination
        "is not 16 bytes of the block's shared memory",  // cp.async into global memory
        "is not 16 bytes of global (cudaMalloc) memory",  // cp.async from shared memory
        "never waited for",                           // a pending cp.async at exit
        "is not 16-byte aligned",                     // ldmatrix row address
        "returned",                                   // ldmatrix in half a warp
        "at different operations",                    // ldmatrix.x1 and .x2 in one warp
    };
    for (int which = 0; which < 7; which++)
        CHECK_INT(expect_fault(TRY_LAUNCH(ptx_misuse_kernel, 1, 32, 0, dsrc, dout, which), cudaErrorLaunchFailure,
                               want[which]),
                  0);
    cuda_check(cudaFree(dsrc));
    cuda_check(cudaFree(dout));
}

int main(void) {
    RUN(mma_fragments_match_the_isa_table);
    RUN(ldmatrix_matches_the_isa);
    RUN(ldmatrix_mma_gemm_equals_a_triple_loop);
    RUN(cp_async_targets_are_poisoned_until_the_wait);
    RUN(ptx_misuse_is_reported);
    return test_summary();
}
