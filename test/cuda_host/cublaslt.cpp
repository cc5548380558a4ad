// cublaslt.cpp: the CPU stand-in for the cuBLASLt calls of kernels/matmul.cuh; what it
// accepts and computes is in cublasLt.h.
#include "cublasLt.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <set>
#include <vector>

#include "cuda_bf16.h"
#include "race.h"
#include "runtime.h"
#include "scheduler.h"
#include "streams.h"

struct cublasLtContext {
    int unused;
};
struct cublasLtMatmulDescOpaque_t {
    cublasOperation_t trans_a, trans_b;
};
struct cublasLtMatrixLayoutOpaque_t {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
};
struct cublasLtMatmulPreferenceOpaque_t {
    uint64_t max_workspace;
    uint32_t align[4];  // A, B, C, D; 256 (cuBLASLt's default) until set
};

namespace {

// Every object created and not yet destroyed, so a stale or foreign handle is refused.
std::set<const void *> live;

// An algorithm is a record of the query that produced it, checked again by cublasLtMatmul.
const uint64_t kAlgoMagic = 0x5354414e44494e00ull;  // "STANDIN"
const uint64_t kMaxWorkspaceUsed = 1 << 20;           // what the stand-in says it needs, at most

cublasStatus_t refuse(cublasStatus_t s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
cublasStatus_t refuse(cublasStatus_t s, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cuda_host::set_fault_message("cublasLt stand-in: %s", msg);
    return s;
}

bool is_live(const void *p) { return p && live.count(p); }

template <typename T>
cublasStatus_t create(T **out) {
    if (!out) return refuse(CUBLAS_STATUS_INVALID_VALUE, "null result pointer");
    *out = (T *)calloc(1, sizeof(T));
    live.insert(*out);
    return CUBLAS_STATUS_SUCCESS;
}

template <typename T>
cublasStatus_t destroy(T *p, const char *what) {
    if (!live.erase(p)) return refuse(CUBLAS_STATUS_INVALID_VALUE, "%s(%p): not a live object", what, (void *)p);
    free(p);
    return CUBLAS_STATUS_SUCCESS;
}

size_t element_bytes(cudaDataType_t t) { return t == CUDA_R_16BF ? 2 : 4; }
const char *type_name(cudaDataType_t t) { return t == CUDA_R_16BF ? "bf16" : "fp32"; }

// Bytes a column-major layout spans from its first element.
size_t extent_bytes(const cublasLtMatrixLayoutOpaque_t *l) {
    return ((size_t)(l->cols - 1) * (size_t)l->ld + (size_t)l->rows) * element_bytes(l->type);
}

// The shape checks shared by the heuristic query and the product; m, n, k out.
cublasStatus_t check_problem(const char *call, cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                             cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                             cublasLtMatrixLayout_t d, uint64_t *m, uint64_t *n, uint64_t *k) {
    if (!is_live(handle)) return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "%s: not a live handle", call);
    if (!is_live(desc) || !is_live(a) || !is_live(b) || !is_live(c) || !is_live(d))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "%s: a descriptor or layout that is not live", call);
    if (c != d) return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "%s: C and D must be the same layout here", call);
    if (a->type != CUDA_R_16BF || b->type != CUDA_R_16BF)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "%s: A and B must be bf16 (got %s, %s)", call, type_name(a->type),
                      type_name(b->type));
    bool ta = desc->trans_a == CUBLAS_OP_T, tb = desc->trans_b == CUBLAS_OP_T;
    *m = ta ? a->cols : a->rows;
    *k = ta ? a->rows : a->cols;
    uint64_t kb = tb ? b->cols : b->rows;
    *n = tb ? b->rows : b->cols;
    if (kb != *k || d->rows != *m || d->cols != *n)
        return refuse(CUBLAS_STATUS_INVALID_VALUE,
                      "%s: shapes disagree: op(A) %llu x %llu, op(B) %llu x %llu, D %llu x %llu", call,
                      (unsigned long long)*m, (unsigned long long)*k, (unsigned long long)kb, (unsigned long long)*n,
                      (unsigned long long)d->rows, (unsigned long long)d->cols);
    return CUBLAS_STATUS_SUCCESS;
}

// The device buffer of a layout, checked: inside one allocation and as aligned as promised.
cublasStatus_t check_buffer(const char *name, const void *p, const cublasLtMatrixLayoutOpaque_t *l, uint64_t align) {
    size_t bytes = extent_bytes(l);
    if (!p || !cuda_host_is_device(p, bytes))
        return refuse(CUBLAS_STATUS_INVALID_VALUE,
                      "cublasLtMatmul: %s (%p, %llu x %llu %s, ld %lld: %zu bytes) is not inside one device allocation",
                      name, p, (unsigned long long)l->rows, (unsigned long long)l->cols, type_name(l->type),
                      (long long)l->ld, bytes);
    if ((uintptr_t)p % align)
        return refuse(CUBLAS_STATUS_INVALID_VALUE,
                      "cublasLtMatmul: %s (%p) is not %llu-byte aligned as the heuristic query was told", name, p,
                      (unsigned long long)align);
    return CUBLAS_STATUS_SUCCESS;
}

// Tells the race detector about the columns of a layout (not the gaps between them).
void record(const void *p, const cublasLtMatrixLayoutOpaque_t *l, int kind, uint32_t site) {
    size_t column = (size_t)l->rows * element_bytes(l->type), stride = (size_t)l->ld * element_bytes(l->type);
    for (uint64_t c = 0; c < l->cols; c++) cuda_host::race_access((const char *)p + c * stride, column, kind, site);
}

float load(const void *base, cudaDataType_t type, size_t i) {
    if (type == CUDA_R_16BF) return __bfloat162float(((const __nv_bfloat16 *)base)[i]);
    return ((const float *)base)[i];
}

// op(X) of a column-major layout as a float matrix: row-major [outer][inner], where the
// element (o, i) is op(X)[o][i] when rows_outer, else op(X)[i][o].
std::vector<float> unpack(const void *x, const cublasLtMatrixLayoutOpaque_t *l, bool trans, bool rows_outer) {
    uint64_t r = trans ? l->cols : l->rows, c = trans ? l->rows : l->cols;  // op(X) is r x c
    uint64_t outer = rows_outer ? r : c, inner = rows_outer ? c : r;
    std::vector<float> out(outer * inner);
    for (uint64_t o = 0; o < outer; o++)
        for (uint64_t i = 0; i < inner; i++) {
            uint64_t row = rows_outer ? o : i, col = rows_outer ? i : o;  // in op(X)
            size_t at = trans ? (size_t)(col + row * (uint64_t)l->ld) : (size_t)(row + col * (uint64_t)l->ld);
            out[o * inner + i] = load(x, l->type, at);
        }
    return out;
}

}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle) { return create(handle); }
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) { return destroy(handle, "cublasLtDestroy"); }

const char *cublasLtGetStatusName(cublasStatus_t status) {
    switch (status) {
        case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
        case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

const char *cublasLtGetStatusString(cublasStatus_t status) {
    switch (status) {
        case CUBLAS_STATUS_SUCCESS: return "success";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
        case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
        case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
        case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    }
    return "unknown status";
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute, cudaDataType_t scale) {
    if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                      "cublasLtMatmulDescCreate: compute type %d, scale type %d (only CUBLAS_COMPUTE_32F with "
                      "CUDA_R_32F is emulated)",
                      (int)compute, (int)scale);
    cublasStatus_t s = create(desc);
    if (s == CUBLAS_STATUS_SUCCESS) (*desc)->trans_a = (*desc)->trans_b = CUBLAS_OP_N;
    return s;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) { return destroy(desc, "cublasLtMatmulDescDestroy"); }

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t bytes) {
    if (!is_live(desc)) return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulDescSetAttribute: not a live descriptor");
    if (attr != CUBLASLT_MATMUL_DESC_TRANSA && attr != CUBLASLT_MATMUL_DESC_TRANSB)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                      "cublasLtMatmulDescSetAttribute: attribute %d is not emulated (only TRANSA and TRANSB)", (int)attr);
    int32_t op;
    if (!buf || bytes != sizeof(op))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulDescSetAttribute: %zu bytes for a 4-byte attribute", bytes);
    memcpy(&op, buf, sizeof(op));
    if (op != CUBLAS_OP_N && op != CUBLAS_OP_T)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmulDescSetAttribute: operation %d is not emulated", op);
    (attr == CUBLASLT_MATMUL_DESC_TRANSA ? desc->trans_a : desc->trans_b) = (cublasOperation_t)op;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
    if (type != CUDA_R_16BF && type != CUDA_R_32F)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatrixLayoutCreate: data type %d is not emulated", (int)type);
    if (rows < 1 || cols < 1 || ld < 1 || (uint64_t)ld < rows)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatrixLayoutCreate: %llu x %llu with ld %lld",
                      (unsigned long long)rows, (unsigned long long)cols, (long long)ld);
    cublasStatus_t s = create(layout);
    if (s == CUBLAS_STATUS_SUCCESS) **layout = {type, rows, cols, ld};
    return s;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
    return destroy(layout, "cublasLtMatrixLayoutDestroy");
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref) {
    cublasStatus_t s = create(pref);
    if (s == CUBLAS_STATUS_SUCCESS) **pref = {0, {256, 256, 256, 256}};
    return s;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
    return destroy(pref, "cublasLtMatmulPreferenceDestroy");
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t bytes) {
    if (!is_live(pref))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulPreferenceSetAttribute: not a live preference");
    if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
        if (!buf || bytes != sizeof(uint64_t))
            return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulPreferenceSetAttribute: workspace size in %zu bytes",
                          bytes);
        memcpy(&pref->max_workspace, buf, sizeof(uint64_t));
        return CUBLAS_STATUS_SUCCESS;
    }
    if (attr < CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES || attr > CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmulPreferenceSetAttribute: attribute %d is not emulated",
                      (int)attr);
    uint32_t align;
    if (!buf || bytes != sizeof(align))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulPreferenceSetAttribute: alignment in %zu bytes", bytes);
    memcpy(&align, buf, sizeof(align));
    if (align < 1 || align > 256 || (align & (align - 1)))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulPreferenceSetAttribute: alignment %u", align);
    pref->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES] = align;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int *returned) {
    uint64_t m, n, k;
    cublasStatus_t s = check_problem("cublasLtMatmulAlgoGetHeuristic", handle, desc, a, b, c, d, &m, &n, &k);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (!is_live(pref)) return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulAlgoGetHeuristic: not a live preference");
    if (requested != 1 || !results || !returned)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmulAlgoGetHeuristic: %d algorithms wanted (emulated: 1)",
                      requested);
    if (pref->align[2] != pref->align[3])
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                      "cublasLtMatmulAlgoGetHeuristic: C and D are one buffer here, yet aligned %u and %u",
                      pref->align[2], pref->align[3]);
    // The alignments the caller claimed must at least be those of the element types.
    if (pref->align[0] < 2 || pref->align[1] < 2 || pref->align[3] < element_bytes(d->type))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulAlgoGetHeuristic: alignments %u %u %u below the element size",
                      pref->align[0], pref->align[1], pref->align[3]);
    memset(&results[0], 0, sizeof(results[0]));
    uint64_t *data = results[0].algo.data;
    data[0] = kAlgoMagic;
    data[1] = (uint64_t)(uintptr_t)desc, data[2] = (uint64_t)(uintptr_t)a, data[3] = (uint64_t)(uintptr_t)b;
    data[4] = (uint64_t)(uintptr_t)d;
    data[5] = pref->align[0], data[6] = pref->align[1], data[7] = pref->align[3];
    results[0].workspaceSize = pref->max_workspace < kMaxWorkspaceUsed ? pref->max_workspace : kMaxWorkspaceUsed;
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t a_layout, const void *B, cublasLtMatrixLayout_t b_layout,
                              const void *beta, const void *C, cublasLtMatrixLayout_t c_layout, void *D,
                              cublasLtMatrixLayout_t d_layout, const cublasLtMatmulAlgo_t *algo, void *workspace,
                              size_t workspace_bytes, cudaStream_t stream) {
    uint64_t m, n, k;
    cublasStatus_t s = check_problem("cublasLtMatmul", handle, desc, a_layout, b_layout, c_layout, d_layout, &m, &n, &k);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (cuda_host::sticky_error() != cudaSuccess)
        return refuse(CUBLAS_STATUS_EXECUTION_FAILED, "cublasLtMatmul: the device has faulted");
    if (!cuda_host::valid_stream(stream)) return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmul: unknown stream");
    const uint64_t *data = algo ? algo->data : NULL;
    if (!data || data[0] != kAlgoMagic || data[1] != (uint64_t)(uintptr_t)desc ||
        data[2] != (uint64_t)(uintptr_t)a_layout || data[3] != (uint64_t)(uintptr_t)b_layout ||
        data[4] != (uint64_t)(uintptr_t)d_layout)
        return refuse(CUBLAS_STATUS_INVALID_VALUE,
                      "cublasLtMatmul: the algorithm does not come from a heuristic query for this descriptor and "
                      "these layouts");
    // Pointer mode host (the descriptor's default): alpha and beta are fp32 in host memory.
    if (!alpha || !beta || cuda_host_is_device(alpha, 1) || cuda_host_is_device(beta, 1))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmul: alpha and beta must be host pointers");
    if (C != D) return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmul: C and D must be the same buffer here");
    if ((s = check_buffer("A", A, a_layout, data[5])) != CUBLAS_STATUS_SUCCESS ||
        (s = check_buffer("B", B, b_layout, data[6])) != CUBLAS_STATUS_SUCCESS ||
        (s = check_buffer("D", D, d_layout, data[7])) != CUBLAS_STATUS_SUCCESS)
        return s;
    // The workspace the heuristic asked for, which the GEMM may scribble over: so it does here.
    size_t needed = kMaxWorkspaceUsed;
    if (workspace_bytes < needed) needed = workspace_bytes;
    if (workspace_bytes && (!workspace || !cuda_host_is_device(workspace, workspace_bytes)))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmul: workspace (%p, %zu bytes) is not device memory",
                      workspace, workspace_bytes);

    // Queued on the stream (streams.h): the product reads A, B (and C) and writes D and the
    // workspace when it runs. The layouts are copied: the caller may destroy them at once.
    float a, b;
    memcpy(&a, alpha, sizeof(a));
    memcpy(&b, beta, sizeof(b));
    cublasLtMatrixLayoutOpaque_t la = *a_layout, lb = *b_layout, lc = *c_layout, ld = *d_layout;
    bool ta = desc->trans_a == CUBLAS_OP_T, tb = desc->trans_b == CUBLAS_OP_T;
    uintptr_t caller = (uintptr_t)__builtin_return_address(0);
    cuda_host::enqueue(stream, "cublasLtMatmul", caller, [=]() {
        uint32_t site = cuda_host::site_of_pc(caller);
        record(A, &la, cuda_host::ACCESS_READ, site);
        record(B, &lb, cuda_host::ACCESS_READ, site);
        if (b != 0.0f) record(C, &lc, cuda_host::ACCESS_READ, site);
        record(D, &ld, cuda_host::ACCESS_WRITE, site);
        // (one word per page of the workspace: another stream's product using the same
        // workspace writes those words too, and the scribbled megabyte costs no time)
        for (size_t at = 0; at < needed; at += 4096)
            cuda_host::race_access((char *)workspace + at, 4, cuda_host::ACCESS_WRITE, site);
        if (needed) memset(workspace, 0xa5, needed);
        std::vector<float> rows = unpack(A, &la, ta, true);   // op(A): [m][k]
        std::vector<float> cols = unpack(B, &lb, tb, false);  // op(B)ᵀ: [n][k]
        for (uint64_t j = 0; j < n; j++)
            for (uint64_t i = 0; i < m; i++) {
                float acc = 0.0f;
                const float *x = &rows[i * k], *y = &cols[j * k];
                for (uint64_t l = 0; l < k; l++) acc += x[l] * y[l];  // exact products, fp32 sum
                size_t at = (size_t)(i + j * (uint64_t)ld.ld);
                float value = a * acc;
                if (b != 0.0f) value += b * load(C, lc.type, at);
                if (ld.type == CUDA_R_16BF)
                    ((__nv_bfloat16 *)D)[at] = __float2bfloat16(value);
                else
                    ((float *)D)[at] = value;
            }
    });
    return CUBLAS_STATUS_SUCCESS;
}
}
