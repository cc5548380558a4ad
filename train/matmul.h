/*
 * matmul.h: the one fp32 matrix product of the CPU model (single-precision GEMM).
 *
 *   C[M, N] = alpha * op(A) op(B)            (accumulate 0)
 *   C[M, N] += alpha * op(A) op(B)           (accumulate 1)
 *
 * where op(A) is A [M, K] (row-major, row stride lda) or, with a_t, the transpose of A
 * stored as [K, M]; op(B) is B [K, N] or, with b_t, the transpose of B stored as [N, K].
 * The forms the model uses: y = x W^T (b_t: W is [out, in]), dx = dy W (plain), and
 * dW-like products dB = dy^T u (a_t).
 *
 * How it is computed (the BLIS / GotoBLAS scheme, in plain C plus AVX-512 and AVX2+FMA
 * micro-kernels chosen at run time): C is cut into tiles of about MATMUL_MC x MATMUL_NC;
 * the tiles are shared out among the OpenMP threads; for each tile, K is walked in blocks of
 * MATMUL_KC: the block of op(B) is copied ("packed") into contiguous panels of NR columns,
 * and a register-tiled micro-kernel accumulates an MR x NR piece of C over the block in
 * registers, broadcasting op(A)'s values from where they lie, then adds alpha times it to C.
 *
 * Determinism: every element of C is the sum over k in a fixed order (k-blocks in order,
 * within a block k ascending, one fused or unfused multiply-add per term as the kernel
 * does) computed by one thread, so the result is bit-for-bit the same for any number of
 * threads and any schedule. The kernels differ in rounding: the AVX-512 and AVX2 ones fuse
 * each multiply-add (one rounding) and give the same bits as each other; the generic one
 * rounds the product and the sum. So a run is reproducible on one machine (the same kernel
 * is chosen every time) and between AVX-512 and AVX2 CPUs, but not on a CPU with neither.
 */
#ifndef PERSONA_MATMUL_H
#define PERSONA_MATMUL_H

#define MATMUL_MC 1024  // the largest tile (rows of C, columns); smaller with several threads
#define MATMUL_NC 512
#define MATMUL_PREPACK 1e6  // floats of op(B) (K x N) up to which it is packed once for all tiles
#define MATMUL_KC 256  // fixed: it decides the order of every sum
#define MATMUL_PARALLEL_MIN 8e6  // multiply-adds below which one thread does it all

void matmul(float *C, int ldc, const float *A, int lda, int a_t, const float *B, int ldb, int b_t, int M, int N, int K,
            float alpha, int accumulate);

// B made on demand, for a matrix not held as floats (a frozen weight in NF4): row(ctx, r,
// c0, n, out) writes elements [c0, c0 + n) of row r of B as stored ([N, K] with b_t, else
// [K, N]) into out. matmul_rows is matmul with B from it, a block at a time as it packs
// them: the same blocks and sums, so the same bits as matmul on the matrix it stands for,
// without that matrix ever existing whole.
typedef struct {
    void (*row)(const void *ctx, int r, int c0, int n, float *out);
    const void *ctx;
} MatmulRows;
void matmul_rows(float *C, int ldc, const float *A, int lda, int a_t, const MatmulRows *B, int b_t, int M, int N, int K,
                 float alpha, int accumulate);

// Which micro-kernel matmul uses: "auto" (the fastest this CPU runs, the default),
// "avx512", "avx2" (with FMA) or "generic". Returns 0, or -1 when the CPU cannot run it (nothing changes).
// For tests and benchmarks; not to be called while a matmul runs.
int matmul_select(const char *kernel);
const char *matmul_kernel_name(void);

#endif
