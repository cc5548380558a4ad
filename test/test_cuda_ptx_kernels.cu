// test_cuda_ptx_kernels.cu: the kernels of test_cuda_ptx.cpp, in a file of their own so
// that the same source is also compiled by nvcc for sm_80 and sm_90 (test_cuda_build.sh),
// where ptx.cuh's wrappers are the real instructions: what the harness runs is what
// ptxas accepts.
#include "../kernels/ptx.cuh"

// One warp: lane l passes its fragments a[4l..4l+3], b[2l..2l+1], c[4l..4l+3] and stores
// its d fragment at d[4l..4l+3].
__global__ void mma_fragments_kernel(const unsigned *a, const unsigned *b, const float *c, float *d) {
    int l = threadIdx.x;
    unsigned ra[4] = {a[4 * l], a[4 * l + 1], a[4 * l + 2], a[4 * l + 3]}, rb[2] = {b[2 * l], b[2 * l + 1]};
    float rc[4] = {c[4 * l], c[4 * l + 1], c[4 * l + 2], c[4 * l + 3]}, rd[4];
    mma_m16n8k16_bf16(rd, ra, rb, rc);
    for (int i = 0; i < 4; i++) d[4 * l + i] = rd[i];
}

// One warp. The four 8x8 matrices of 16-bit elements (m[j][r][c] at m[64j + 8r + c]) go to
// shared memory with their rows interleaved and padded (matrix j, row r at shared row
// 4r + j, 16 elements apart), so only the per-lane row addresses find them. Lane l passes
// the address of row l % 8 of matrix l / 8 and stores its registers at out[4l..4l+3].
__global__ void ldmatrix_kernel(const unsigned short *m, unsigned *out, int num, int trans) {
    __shared__ __align__(16) unsigned short tile[32 * 16];
    int l = threadIdx.x;
    for (int i = l; i < 256; i += 32) tile[(4 * (i / 8 % 8) + i / 64) * 16 + i % 8] = m[i];
    __syncwarp();
    const unsigned short *row = &tile[(4 * (l % 8) + l / 8) * 16];
    unsigned r[4] = {0, 0, 0, 0};
    if (num == 1) {
        if (trans) ldmatrix_x1_trans(r, row); else ldmatrix_x1(r, row);
    } else if (num == 2) {
        if (trans) ldmatrix_x2_trans(r, row); else ldmatrix_x2(r, row);
    } else {
        if (trans) ldmatrix_x4_trans(r, row); else ldmatrix_x4(r, row);
    }
    for (int j = 0; j < 4; j++) out[4 * l + j] = r[j];
}

// D (16x8) = A (16x16) · B (16x8), the way a GEMM kernel does it: A row-major and B either
// as Bᵀ (8x16 row-major, b_trans = 0) or as B (16x8 row-major, b_trans = 1) are copied to
// shared memory with cp.async, then loaded into fragments with ldmatrix (A with x4, B with
// x2 or x2.trans) and multiplied with one mma; D is stored row-major from the C fragments.
__global__ void gemm_16x8x16_kernel(const __nv_bfloat16 *A, const __nv_bfloat16 *B, float *D, int b_trans) {
    __shared__ __align__(16) __nv_bfloat16 sA[16 * 16], sB[16 * 8];
    int l = threadIdx.x;
    cp_async16_cg(&sA[8 * l], &A[8 * l]);  // 32 chunks of 8 elements
    if (l < 16) cp_async16_ca(&sB[8 * l], &B[8 * l]);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    unsigned a[4], b[2];
    ldmatrix_x4(a, &sA[(l % 16) * 16 + (l / 16) * 8]);
    if (b_trans)
        ldmatrix_x2_trans(b, &sB[(l % 16) * 8]);                 // rows k of B
    else
        ldmatrix_x2(b, &sB[(l % 8) * 16 + (l / 8 % 2) * 8]);   // rows n of Bᵀ, two k halves
    float c[4] = {0, 0, 0, 0}, d[4];
    mma_m16n8k16_bf16(d, a, b, c);
    int g = l / 4, t = l % 4;
    D[g * 8 + 2 * t] = d[0];
    D[g * 8 + 2 * t + 1] = d[1];
    D[(g + 8) * 8 + 2 * t] = d[2];
    D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// cp.async completion, in thread 0 (the others only read): out[0..3] before any wait,
// out[4..11] after wait_group 1 (the first group done, the second pending), out[12..15]
// after wait_group 0. Then thread 0 copies again and reaches a barrier without waiting:
// the other threads' reads after it (out[16..19]) must not see the data, which arrives only
// with thread 0's wait after the next barrier.
__global__ void cp_async_kernel(const float *src, float *out) {
    __shared__ __align__(16) float s[12];
    int t = threadIdx.x;
    if (t == 0) {
        cp_async16_ca(&s[0], &src[0]);
        cp_async_commit();
        cp_async16_cg(&s[4], &src[4]);
        cp_async_commit();
        for (int i = 0; i < 4; i++) out[i] = s[i];
        cp_async_wait<1>();
        for (int i = 0; i < 8; i++) out[4 + i] = s[i];
        cp_async_wait<0>();
        for (int i = 0; i < 4; i++) out[12 + i] = s[4 + i];
        cp_async16_ca(&s[8], &src[8]);
        cp_async_commit();
    }
    __syncthreads();  // BUG on purpose: thread 0 has not waited for its last copy
    if (t > 0) out[15 + t] = s[8 + t - 1];
    __syncthreads();
    if (t == 0) cp_async_wait<0>();
}

// Misuses the harness must report (each one undefined or a fault on a GPU).
__global__ void ptx_misuse_kernel(const float *src, float *out, int which) {
    __shared__ __align__(16) float s[8];
    __shared__ __align__(16) unsigned short tile[8 * 8];
    int l = threadIdx.x;
    if (which == 0) cp_async16_ca(&s[1], &src[0]);  // destination not 16-byte aligned
    if (which == 1) cp_async16_ca(out, src);        // destination in global memory
    if (which == 2) cp_async16_ca(&s[0], &s[4]);    // source in shared memory
    if (which == 3 && l == 0) {                     // never waited for
        cp_async16_ca(&s[0], &src[0]);
        cp_async_commit();
    }
    if (which == 4) {  // row address not 16-byte aligned
        unsigned r[1] = {0};
        ldmatrix_x1(r, &tile[(l % 8) * 8 + 1]);
        out[l] = (float)r[0];
    }
    if (which == 5) {  // half the warp
        unsigned r[1] = {0};
        if (l < 16) ldmatrix_x1(r, &tile[(l % 8) * 8]);
        out[l] = (float)r[0];
    }
    if (which == 6) {  // lanes at different instructions
        unsigned r[2] = {0, 0};
        if (l % 2)
            ldmatrix_x1(r, &tile[(l % 8) * 8]);
        else
            ldmatrix_x2(r, &tile[(l % 8) * 8]);
        out[l] = (float)r[0];
    }
}
