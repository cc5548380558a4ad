// test_cuda_matmul.cpp: the cuBLASLt wrapper (kernels/matmul.cuh) through the harness's CPU
// stand-in for cuBLASLt (test/cuda_host/cublaslt.cpp).
//
// 1. The wrapper against a double-precision GEMM written here, at awkward shapes (M, N, K of
//    1, 7, 129, 257, a rank-16 product with K = 1000), every transpose combination, beta 0
//    (over an output that is NaN, so reading it would show) and beta 1 (accumulating),
//    bf16 and fp32 outputs, packed and with padded leading dimensions (the padding must stay
//    untouched), pointers 2 bytes off alignment. Tolerance: matmul_tolerance of matmul.cuh,
//    2^-8·|ref| (bf16 out) or 2^-24·|ref| (fp32 out) plus 4(K + 2)·2^-24 of the sum of the
//    magnitudes |alpha|·Σ|a·b| + |beta·out| (bf16 products are exact in fp32; the fp32 sum
//    of K terms, the scaling and the add, with room for tensor cores' truncation). A
//    transposition mix-up or a wrong operand order shows as errors of the size of the values
//    themselves.
// 2. The stand-in refuses what the wrapper does not do (another compute type, an epilogue
//    attribute, fp16 data, C != D, a host pointer, a pointer less aligned than the query was
//    told, an algorithm from another query, a destroyed stream), with an error status and a
//    message.
// 3. A failing call inside the wrapper stops the program with exit status 2 and a message
//    that names the cuBLASLt call, the file and the line.
#include "../kernels/matmul.cuh"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

extern "C" {
#include "../common/half.h"
#include "../common/util.h"
}

#include <math.h>
#include <stdlib.h>

// A bf16 matrix in device memory at `offset` elements past a cudaMalloc'd base, with a
// host copy of its values.
struct Mat {
    uint16_t *base;
    __nv_bfloat16 *dev;
    float *host;
};

static Mat mat_random(uint64_t *rng, size_t n, int offset) {
    Mat m;
    cuda_check(cudaMalloc(&m.base, (n + (size_t)offset) * sizeof(uint16_t)));
    m.dev = (__nv_bfloat16 *)(m.base + offset);
    m.host = (float *)xmalloc(n * sizeof(float));
    uint16_t *bits = (uint16_t *)xmalloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) {
        bits[i] = f32_to_bf16((float)(2 * rng_uniform(rng) - 1));
        m.host[i] = bf16_to_f32(bits[i]);
    }
    cuda_check(cudaMemcpy(m.dev, bits, n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    free(bits);
    return m;
}

static void mat_free(Mat *m) {
    cuda_check(cudaFree(m->base));
    free(m->host);
}

struct Case {
    int M, N, K;
};
static const Case kCases[] = {{1, 1, 1}, {7, 1, 129}, {1, 7, 7}, {129, 7, 1}, {7, 129, 129}, {33, 17, 257}, {40, 16, 1000}};

static Matmul mm;
static cudaStream_t stream;  // a created stream, for half the products (the rest use stream 0)
static double worst[2];  // the worst error / tolerance, bf16 and fp32 outputs

// One product: out = alpha·op(A)·op(B) + beta·out, checked element by element.
static int check_case(const Case &c, int trans_a, int trans_b, MatmulType type, float beta, int padded, int offset,
                      uint64_t seed) {
    uint64_t rng = seed;
    int M = c.M, N = c.N, K = c.K;
    const float alpha = 0.75f;
    int64_t lda = (trans_a ? M : K) + 3 * padded, ldb = (trans_b ? K : N) + 5 * padded, ldo = N + 2 * padded;
    size_t a_rows = trans_a ? K : M, b_rows = trans_b ? N : K, out_n = (size_t)M * ldo;
    Mat A = mat_random(&rng, a_rows * lda, offset), B = mat_random(&rng, b_rows * ldb, offset);
    size_t esize = type == MATMUL_BF16 ? 2 : 4;
    unsigned char *out_base, *before = (unsigned char *)xmalloc(out_n * esize), *after = (unsigned char *)xmalloc(out_n * esize);
    cuda_check(cudaMalloc(&out_base, (out_n + offset) * esize));
    void *out = out_base + offset * esize;
    if (beta != 0) {  // something to accumulate into; beta = 0 leaves the NaN of cudaMalloc
        for (size_t i = 0; i < out_n; i++) {
            float v = (float)(2 * rng_uniform(&rng) - 1);
            if (type == MATMUL_BF16) {
                uint16_t h = f32_to_bf16(v);
                memcpy(before + 2 * i, &h, 2);
            } else {
                memcpy(before + 4 * i, &v, 4);
            }
        }
        cuda_check(cudaMemcpy(out, before, out_n * esize, cudaMemcpyHostToDevice));
    } else {
        cuda_check(cudaMemcpy(before, out, out_n * esize, cudaMemcpyDeviceToHost));
    }
    matmul_strided(&mm, out, type, ldo, A.dev, trans_a, lda, B.dev, trans_b, ldb, M, N, K, alpha, beta,
                   padded ? stream : 0);
    cuda_check(cudaStreamSynchronize(stream));
    cuda_check(cudaMemcpy(after, out, out_n * esize, cudaMemcpyDeviceToHost));

    int bad = 0;
    for (int i = 0; i < M; i++)
        for (size_t j = 0; j < (size_t)ldo; j++) {
            size_t at = (size_t)i * ldo + j;
            if (j >= (size_t)N) {  // padding: untouched, bit for bit
                if (memcmp(before + at * esize, after + at * esize, esize) && bad++ < 3)
                    printf("  %dx%dx%d: padding out[%d][%zu] was written\n", M, N, K, i, j);
                continue;
            }
            double ref = 0, abs_products = 0;
            for (int l = 0; l < K; l++) {
                double a = trans_a ? A.host[(size_t)l * lda + i] : A.host[(size_t)i * lda + l];
                double b = trans_b ? B.host[j * ldb + l] : B.host[(size_t)l * ldb + j];
                ref += a * b;
                abs_products += fabs(a * b);
            }
            float was, got;
            if (type == MATMUL_BF16) {
                uint16_t h;
                memcpy(&h, before + 2 * at, 2), was = bf16_to_f32(h);
                memcpy(&h, after + 2 * at, 2), got = bf16_to_f32(h);
            } else {
                memcpy(&was, before + 4 * at, 4), memcpy(&got, after + 4 * at, 4);
            }
            if (beta == 0) was = 0;
            ref = alpha * ref + beta * (double)was;
            double tol = matmul_tolerance(ref, abs_products, was, K, alpha, beta, type), e = fabs(got - ref);
            if (tol > 0 && e / tol > worst[type]) worst[type] = e / tol;
            if (!(e <= tol) && bad++ < 3)
                printf("  %dx%dx%d trans %d%d %s beta %g: out[%d][%zu] = %.8g, expected %.8g (tolerance %.3g)\n", M, N,
                       K, trans_a, trans_b, type == MATMUL_BF16 ? "bf16" : "fp32", beta, i, j, got, ref, tol);
        }
    mat_free(&A), mat_free(&B);
    cuda_check(cudaFree(out_base));
    free(before), free(after);
    return bad;
}

TEST(matmul_matches_double_gemm) {
    uint64_t seed = 1;
    int bad = 0, runs = 0;
    for (const Case &c : kCases)
        for (int t = 0; t < 4; t++)
            for (int type = 0; type < 2; type++)
                for (int acc = 0; acc < 2; acc++) {
                    // packed and aligned, then padded rows with pointers one element off
                    bad += check_case(c, t >> 1, t & 1, (MatmulType)type, (float)acc, 0, 0, seed++);
                    bad += check_case(c, t >> 1, t & 1, (MatmulType)type, (float)acc, 1, 1, seed++);
                    runs += 2;
                }
    printf("  %d products; worst error / tolerance: bf16 out %.3f, fp32 out %.3f\n", runs, worst[0], worst[1]);
    CHECK_INT(bad, 0);
}

// The tolerance is not so loose that a wrong answer passes: out = A·B with B transposed by
// mistake (a square case, so the shapes still fit) is caught.
TEST(a_transposition_mistake_is_caught) {
    uint64_t rng = 77;
    const int S = 16;
    Mat A = mat_random(&rng, S * S, 0), B = mat_random(&rng, S * S, 0);
    float *out, got[S * S];
    cuda_check(cudaMalloc(&out, sizeof(got)));
    matmul(&mm, out, MATMUL_F32, A.dev, 0, B.dev, 1, S, S, S, 1.0f, 0.0f, 0);  // A·Bᵀ, not A·B
    cuda_check(cudaMemcpy(got, out, sizeof(got), cudaMemcpyDeviceToHost));
    int outside = 0;
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++) {
            double ref = 0, abs_products = 0;
            for (int l = 0; l < S; l++) ref += (double)A.host[i * S + l] * B.host[l * S + j];
            for (int l = 0; l < S; l++) abs_products += fabs((double)A.host[i * S + l] * B.host[l * S + j]);
            outside += fabs(got[i * S + j] - ref) > matmul_tolerance(ref, abs_products, 0, S, 1, 0, MATMUL_F32);
        }
    CHECK(outside > S * S * 9 / 10);
    mat_free(&A), mat_free(&B);
    cuda_check(cudaFree(out));
}

// ---------------------------------------------------------------------------------------
// 2. What the stand-in refuses

static int expect_refusal(cublasStatus_t got, cublasStatus_t want, const char *text) {
    return expect_status_and_fault(got == want, cublasLtGetStatusName(got), cublasLtGetStatusName(want), text);
}

// A valid 4 x 4 x 4 problem built by hand as the wrapper builds it, to break one piece at a time.
struct Problem {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulHeuristicResult_t result;
    __nv_bfloat16 *A, *B;
    float *D;
};

static void problem_create(Problem *p) {
    cublas_check(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublas_check(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, 4, 4, 4));
    cublas_check(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, 4, 4, 4));
    cublas_check(cublasLtMatrixLayoutCreate(&p->d, CUDA_R_32F, 4, 4, 4));
    cublas_check(cublasLtMatmulPreferenceCreate(&p->pref));
    int found = 0;
    cublas_check(cublasLtMatmulAlgoGetHeuristic(mm.handle, p->desc, p->a, p->b, p->d, p->d, p->pref, 1, &p->result, &found));
    cuda_check(cudaMalloc(&p->A, 16 * sizeof(__nv_bfloat16) + 2));
    cuda_check(cudaMalloc(&p->B, 16 * sizeof(__nv_bfloat16)));
    cuda_check(cudaMalloc(&p->D, 16 * sizeof(float)));
    cuda_check(cudaMemset(p->A, 0, 16 * sizeof(__nv_bfloat16) + 2));
    cuda_check(cudaMemset(p->B, 0, 16 * sizeof(__nv_bfloat16)));
}

static cublasStatus_t problem_run(Problem *p, const void *A, void *C, void *D, cudaStream_t on = 0) {
    float alpha = 1, beta = 0;
    return QUIETLY(cublasLtMatmul(mm.handle, p->desc, &alpha, A, p->a, p->B, p->b, &beta, C, p->d, D, p->d,
                                  &p->result.algo, mm.workspace, mm.workspace_bytes, on));
}

static void problem_destroy(Problem *p) {
    cublas_check(cublasLtMatmulPreferenceDestroy(p->pref));
    cublas_check(cublasLtMatrixLayoutDestroy(p->a));
    cublas_check(cublasLtMatrixLayoutDestroy(p->b));
    cublas_check(cublasLtMatrixLayoutDestroy(p->d));
    cublas_check(cublasLtMatmulDescDestroy(p->desc));
    cuda_check(cudaFree(p->A)), cuda_check(cudaFree(p->B)), cuda_check(cudaFree(p->D));
}

TEST(stand_in_refuses_what_the_wrapper_does_not_do) {
    Problem p;
    problem_create(&p);
    CHECK_INT(problem_run(&p, p.A, p.D, p.D), CUBLAS_STATUS_SUCCESS);  // the baseline works

    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t layout;
    CHECK_INT(expect_refusal(QUIETLY(cublasLtMatmulDescCreate(&desc, (cublasComputeType_t)77, CUDA_R_32F)),  // 32F_FAST_TF32
                             CUBLAS_STATUS_NOT_SUPPORTED, "compute type 77"),
              0);
    int32_t epilogue = 2;  // CUBLASLT_EPILOGUE_RELU on attribute 7, CUBLASLT_MATMUL_DESC_EPILOGUE
    CHECK_INT(expect_refusal(QUIETLY(cublasLtMatmulDescSetAttribute(p.desc, (cublasLtMatmulDescAttributes_t)7, &epilogue,
                                                                    sizeof(epilogue))),
                             CUBLAS_STATUS_NOT_SUPPORTED, "attribute 7"),
              0);
    int32_t conj = 2;  // CUBLAS_OP_C
    CHECK_INT(expect_refusal(QUIETLY(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &conj, sizeof(conj))),
                             CUBLAS_STATUS_NOT_SUPPORTED, "operation 2"),
              0);
    CHECK_INT(expect_refusal(QUIETLY(cublasLtMatrixLayoutCreate(&layout, (cudaDataType)2, 4, 4, 4)),  // CUDA_R_16F
                             CUBLAS_STATUS_NOT_SUPPORTED, "data type 2"),
              0);
    CHECK_INT(expect_refusal(QUIETLY(cublasLtMatrixLayoutCreate(&layout, CUDA_R_16BF, 4, 4, 3)), CUBLAS_STATUS_INVALID_VALUE,
                             "ld 3"),
              0);
    uint32_t search = 0;  // attribute 0, CUBLASLT_MATMUL_PREF_SEARCH_MODE
    CHECK_INT(expect_refusal(QUIETLY(cublasLtMatmulPreferenceSetAttribute(p.pref, (cublasLtMatmulPreferenceAttributes_t)0,
                                                                          &search, sizeof(search))),
                             CUBLAS_STATUS_NOT_SUPPORTED, "attribute 0"),
              0);

    // bf16 data is what A and B must be: an fp32 A is refused by the query
    cublasLtMatmulHeuristicResult_t r;
    int found = 0;
    CHECK_INT(expect_refusal(QUIETLY(cublasLtMatmulAlgoGetHeuristic(mm.handle, p.desc, p.d, p.b, p.d, p.d, p.pref, 1, &r,
                                                                    &found)),
                             CUBLAS_STATUS_NOT_SUPPORTED, "must be bf16"),
              0);
    CHECK_INT(expect_refusal(QUIETLY(cublasLtMatmulAlgoGetHeuristic(mm.handle, p.desc, p.a, p.b, p.d, p.a, p.pref, 1, &r,
                                                                    &found)),
                             CUBLAS_STATUS_NOT_SUPPORTED, "C and D must be the same layout"),
              0);

    // the product itself
    float *other;
    cuda_check(cudaMalloc(&other, 16 * sizeof(float)));
    CHECK_INT(expect_refusal(problem_run(&p, p.A, other, p.D), CUBLAS_STATUS_NOT_SUPPORTED, "same buffer"), 0);
    cuda_check(cudaFree(other));
    __nv_bfloat16 host_a[16];
    CHECK_INT(expect_refusal(problem_run(&p, host_a, p.D, p.D), CUBLAS_STATUS_INVALID_VALUE, "A ("), 0);
    // the query was told 256-byte alignment (the default); A one element off is not
    CHECK_INT(expect_refusal(problem_run(&p, p.A + 1, p.D, p.D), CUBLAS_STATUS_INVALID_VALUE, "256-byte aligned"), 0);
    cudaStream_t gone;
    cuda_check(cudaStreamCreate(&gone));
    cuda_check(cudaStreamDestroy(gone));
    CHECK_INT(expect_refusal(problem_run(&p, p.A, p.D, p.D, gone), CUBLAS_STATUS_INVALID_VALUE, "unknown stream"), 0);
    Problem q;  // an algorithm from another query
    problem_create(&q);
    q.result = p.result;
    CHECK_INT(expect_refusal(problem_run(&q, q.A, q.D, q.D), CUBLAS_STATUS_INVALID_VALUE, "heuristic query"), 0);
    problem_destroy(&q);
    problem_destroy(&p);
    // a destroyed object is refused
    CHECK_INT(expect_refusal(QUIETLY(cublasLtMatrixLayoutDestroy(p.a)), CUBLAS_STATUS_INVALID_VALUE, "not a live object"), 0);
}

// ---------------------------------------------------------------------------------------
// 3. A failure inside the wrapper names the call and stops the program

static void matmul_with_a_host_pointer(void) {
    __nv_bfloat16 host[8];
    float *out;
    cuda_check(cudaMalloc(&out, 4 * sizeof(float)));
    const __nv_bfloat16 *B = (const __nv_bfloat16 *)out;  // any device memory of the right size
    matmul(&mm, out, MATMUL_F32, host, 0, B, 0, 2, 2, 4, 1.0f, 0.0f, 0);
}

TEST(wrapper_failure_names_the_call) {
    char report[4096];
    int status = run_in_child(matmul_with_a_host_pointer, report, sizeof(report));
    CHECK_INT(status, 2);
    CHECK(strstr(report, "matmul.cuh:") != NULL);
    CHECK(strstr(report, "cublasLtMatmul(") != NULL);
    CHECK(strstr(report, "CUBLAS_STATUS_INVALID_VALUE") != NULL);
    if (status != 2) printf("  child's stderr: %s\n", report);
}

int main(void) {
    void *workspace;
    cuda_check(cudaMalloc(&workspace, MATMUL_WORKSPACE_BYTES));
    matmul_create(&mm, workspace, MATMUL_WORKSPACE_BYTES);
    cuda_check(cudaStreamCreate(&stream));
    RUN(matmul_matches_double_gemm);
    RUN(a_transposition_mistake_is_caught);
    RUN(stand_in_refuses_what_the_wrapper_does_not_do);
    RUN(wrapper_failure_names_the_call);
    matmul_destroy(&mm);
    cuda_check(cudaStreamDestroy(stream));
    cuda_check(cudaFree(workspace));
    return test_summary();
}
