/*
 * matmul.cuh: the one GEMM entry point of the CUDA code, a thin wrapper over cuBLASLt.
 *
 *   out[M, N] = alpha · op(A) · op(B) + beta · out
 *
 * A and B are bf16, products are accumulated in fp32 (CUBLAS_COMPUTE_32F, fp32 alpha and
 * beta), out is bf16 or fp32 (MATMUL_BF16 / MATMUL_F32). beta = 0 overwrites out (it is not
 * read, so it may hold NaN); beta = 1 accumulates into it. All matrices are row-major, as the
 * engine stores them:
 *   A is [M, K] (trans_a = 0, op(A) = A) or [K, M] (trans_a = 1, op(A) = Aᵀ),
 *   B is [K, N] (trans_b = 0, op(B) = B) or [N, K] (trans_b = 1, op(B) = Bᵀ),
 * with leading dimensions (elements between consecutive rows) lda, ldb, ldo that are at least
 * the row lengths; matmul() is matmul_strided() with packed rows. The usual cases: a linear
 * layer y = x Wᵀ is (x, 0, W, 1); its input gradient dx = dy W is (dy, 0, W, 0); a weight
 * gradient dW = dyᵀ x is (dy, 1, x, 0).
 *
 * Row-major to cuBLAS (column-major): a row-major [r, c] matrix with leading dimension ld is,
 * read column-major, the c × r matrix with the same ld, i.e. its transpose. So out (row-major
 * [M, N]) is outᵀ, N × M column-major, and out = op(A) op(B) is outᵀ = op(B)ᵀ op(A)ᵀ: cuBLAS
 * is called with the operands swapped, m = N, n = M, k = K:
 *   cuBLAS "A" = our B: trans_b = 0: B's memory is the N × K column-major matrix op(B)ᵀ
 *                       (CUBLAS_OP_N, rows N, cols K, ld ldb); trans_b = 1: it is the K × N
 *                       matrix op(B), which cuBLAS transposes (CUBLAS_OP_T, rows K, cols N);
 *   cuBLAS "B" = our A: trans_a = 0: K × M column-major = op(A)ᵀ (CUBLAS_OP_N, rows K, cols M,
 *                       ld lda); trans_a = 1: M × K = op(A), transposed (CUBLAS_OP_T);
 *   C = D = out:        N × M column-major, ld ldo.
 *
 * The cuBLASLt calls, and only these (the CPU stand-in of the test harness,
 * test/cuda_host/cublaslt.cpp, implements exactly them and refuses anything else):
 * cublasLtCreate/Destroy once per Matmul; per call cublasLtMatmulDescCreate(COMPUTE_32F,
 * R_32F) with TRANSA/TRANSB, three cublasLtMatrixLayoutCreate (bf16, bf16, bf16 or fp32;
 * C and D share one), a preference with MAX_WORKSPACE_BYTES and MIN_ALIGNMENT_{A,B,C,D}_BYTES
 * (the true alignment of each pointer, up to 256, so the heuristic never picks a kernel that
 * needs more), cublasLtMatmulAlgoGetHeuristic for one algorithm, and cublasLtMatmul with
 * C = D. The heuristic query costs a few microseconds of host time per call (no caching yet).
 *
 * The workspace is device memory the caller plans (32 MiB is what cuBLAS asks for on
 * Hopper, MATMUL_WORKSPACE_BYTES); it is used in stream order, so one Matmul serves one
 * stream at a time. Every call is checked: a failure names the call, file and line and exits
 * with status 2 (cublas_check, like cuda_check). M = 0 or N = 0 does nothing; K must be at
 * least 1 (cuBLAS has no K = 0 product).
 *
 * Error bound (matmul_tolerance, used by the tests and the bench): bf16 × bf16 products are
 * exact in fp32 (8 + 8 significant bits), so the only errors are the K-term fp32 sum, at most
 * (K - 1)·2^-24·Σ|a·b| in any order with IEEE rounding (Higham §4.2), then alpha, the
 * beta·out term and the final rounding to the output type (2^-8 for bf16, 2^-24 for fp32, of
 * the result). Tensor cores are reported to align the addends of a block to the largest and
 * truncate instead of rounding (Fasi, Higham, Mikaitis, Pranesh, "Numerical behavior of
 * NVIDIA tensor cores", PeerJ CS 2021), which costs up to a full ulp per term instead of
 * half of one; matmul_sum_error allows twice that again: 4(K + 2)·2^-24 of Σ|terms|.
 */
#ifndef PERSONA_MATMUL_CUH
#define PERSONA_MATMUL_CUH

#include <cublasLt.h>
#include <math.h>
#include <stdint.h>

#include "common.cuh"

static inline void cublas_check_at(cublasStatus_t s, const char *call, const char *file, int line) {
    if (s != CUBLAS_STATUS_SUCCESS) check_failed(call, file, line, cublasLtGetStatusString(s), cublasLtGetStatusName(s));
}
#define cublas_check(call) cublas_check_at((call), #call, __FILE__, __LINE__)

#define MATMUL_WORKSPACE_BYTES ((size_t)32 << 20)

typedef enum { MATMUL_BF16, MATMUL_F32 } MatmulType;

typedef struct {
    cublasLtHandle_t handle;
    void *workspace;  // device memory, workspace_bytes long
    size_t workspace_bytes;
} Matmul;

static inline void matmul_create(Matmul *mm, void *workspace, size_t workspace_bytes) {
    cublas_check(cublasLtCreate(&mm->handle));
    mm->workspace = workspace;
    mm->workspace_bytes = workspace_bytes;
}

static inline void matmul_destroy(Matmul *mm) {
    cublas_check(cublasLtDestroy(mm->handle));
    mm->handle = NULL;
}

// The largest power of two up to 256 that divides the address: what the heuristic may assume.
static inline uint32_t matmul_alignment(const void *p) {
    uint32_t a = 256;
    while (a > 1 && (uintptr_t)p % a) a /= 2;
    return a;
}

static inline void matmul_strided(const Matmul *mm, void *out, MatmulType out_type, int64_t ldo, const __nv_bfloat16 *A,
                                  int trans_a, int64_t lda, const __nv_bfloat16 *B, int trans_b, int64_t ldb, int M,
                                  int N, int K, float alpha, float beta, cudaStream_t stream) {
    if (M == 0 || N == 0) return;
    if (M < 0 || N < 0 || K < 1 || lda < (trans_a ? M : K) || ldb < (trans_b ? K : N) || ldo < N) {
        fprintf(stderr, "error: matmul: bad shape M %d N %d K %d (lda %lld, ldb %lld, ldo %lld)\n", M, N, K,
                (long long)lda, (long long)ldb, (long long)ldo);
        exit(2);
    }
    cudaDataType_t out_cuda = out_type == MATMUL_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasOperation_t op_a = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a_layout, b_layout, out_layout;
    cublasLtMatmulPreference_t pref;
    cublas_check(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublas_check(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
    cublas_check(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
    // cuBLAS A = our B, cuBLAS B = our A, D = outᵀ (see the header comment)
    cublas_check(cublasLtMatrixLayoutCreate(&a_layout, CUDA_R_16BF, trans_b ? K : N, trans_b ? N : K, ldb));
    cublas_check(cublasLtMatrixLayoutCreate(&b_layout, CUDA_R_16BF, trans_a ? M : K, trans_a ? K : M, lda));
    cublas_check(cublasLtMatrixLayoutCreate(&out_layout, out_cuda, N, M, ldo));

    uint64_t workspace_bytes = mm->workspace_bytes;
    uint32_t align_a = matmul_alignment(B), align_b = matmul_alignment(A), align_out = matmul_alignment(out);
    cublas_check(cublasLtMatmulPreferenceCreate(&pref));
    cublas_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                                      sizeof(workspace_bytes)));
    cublas_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                                      sizeof(align_a)));
    cublas_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                                      sizeof(align_b)));
    cublas_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_out,
                                                      sizeof(align_out)));
    cublas_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_out,
                                                      sizeof(align_out)));
    cublasLtMatmulHeuristicResult_t heuristic;
    int found = 0;
    cublas_check(cublasLtMatmulAlgoGetHeuristic(mm->handle, desc, a_layout, b_layout, out_layout, out_layout, pref, 1,
                                                &heuristic, &found));
    if (found == 0) {
        fprintf(stderr, "error: matmul: cuBLASLt has no algorithm for M %d N %d K %d, trans %d %d, %s out\n", M, N, K,
                trans_a, trans_b, out_type == MATMUL_BF16 ? "bf16" : "fp32");
        exit(2);
    }
    cublas_check(cublasLtMatmul(mm->handle, desc, &alpha, B, a_layout, A, b_layout, &beta, out, out_layout, out,
                                out_layout, &heuristic.algo, mm->workspace, mm->workspace_bytes, stream));
    cublas_check(cublasLtMatmulPreferenceDestroy(pref));
    cublas_check(cublasLtMatrixLayoutDestroy(a_layout));
    cublas_check(cublasLtMatrixLayoutDestroy(b_layout));
    cublas_check(cublasLtMatrixLayoutDestroy(out_layout));
    cublas_check(cublasLtMatmulDescDestroy(desc));
}

// The packed case: lda, ldb and ldo are the row lengths.
static inline void matmul(const Matmul *mm, void *out, MatmulType out_type, const __nv_bfloat16 *A, int trans_a,
                          const __nv_bfloat16 *B, int trans_b, int M, int N, int K, float alpha, float beta,
                          cudaStream_t stream) {
    matmul_strided(mm, out, out_type, N, A, trans_a, trans_a ? M : K, B, trans_b, trans_b ? K : N, M, N, K, alpha,
                   beta, stream);
}

// How far an output element may be from the exact result ref (computed in double from the
// same bf16 inputs): abs_products = Σ_k |op(A)[m,k]·op(B)[k,n]|, out_before = the element's
// value before the call (what beta multiplies). See the header comment.
// The GPU's fp32 sum of K exact products and two more terms, relative to Σ|terms|.
static inline double matmul_sum_error(int K) { return 4.0 * (K + 2) * 0x1p-24; }

static inline double matmul_tolerance(double ref, double abs_products, double out_before, int K, float alpha,
                                      float beta, MatmulType out_type) {
    double round_out = out_type == MATMUL_BF16 ? 0x1p-8 : 0x1p-24;
    double sums = matmul_sum_error(K) * (fabs((double)alpha) * abs_products + fabs((double)beta * out_before));
    return round_out * fabs(ref) + (1 + round_out) * sums;
}

#endif
