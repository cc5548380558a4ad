// ptx_emu.cpp: mma.sync, ldmatrix and cp.async, lane by lane (ptx_emu.h).
//
// Fragment layouts, from the PTX ISA ("Matrix Fragments for mma.m16n8k16 with floating
// point type"; ldmatrix), with groupID g = laneid >> 2 and threadID_in_group t = laneid % 4;
// element i of a fragment sits in register i / 2, bits [15:0] for even i, [31:16] for odd:
//   A (16x16, 8 elements a0..a7):
//     row = g for i in {0, 1, 4, 5}, else g + 8;  col = 2t + (i & 1) + (i >= 4 ? 8 : 0)
//   B (16x8, 4 elements b0..b3):
//     row = 2t + (i & 1) + (i >= 2 ? 8 : 0);      col = g
//   C, D (16x8 f32, 4 elements c0..c3, one per register):
//     row = g + (i >= 2 ? 8 : 0);                 col = 2t + (i & 1)
//   ldmatrix m8n8 .b16: matrix j's row r starts at the address lane 8j + r supplies; lane l
//     receives in register j: without .trans Mj[l / 4][2(l % 4)] (low) and
//     Mj[l / 4][2(l % 4) + 1] (high); with .trans Mj[2(l % 4)][l / 4] and Mj[2(l % 4) + 1][l / 4].
// Tensor-core rounding is not documented; products of bf16 are exact in float, and the
// emulation adds them to C in k order in float (so integer-valued tests are exact, and
// others need the usual fp32 tolerance).
#include "ptx_emu.h"

#include <string.h>

#include "cuda_bf16.h"
#include "cuda_host_api.h"
#include "race.h"
#include "scheduler.h"

extern "C" char __start_cuda_host_shared[] __attribute__((weak));
extern "C" char __stop_cuda_host_shared[] __attribute__((weak));

namespace cuda_host {

// Whether [p, p + n) is shared memory of the running block: its dynamic shared memory or
// a __shared__ variable.
static bool in_shared(const Thread *t, const void *p, size_t n) {
    const unsigned char *c = (const unsigned char *)p, *dyn = t->block->dynamic_shared;
    size_t dyn_size = t->block->dynamic_shared_size;
    if (c >= dyn && c <= dyn + dyn_size && n <= (size_t)(dyn + dyn_size - c)) return true;
    const char *lo = __start_cuda_host_shared, *hi = __stop_cuda_host_shared;
    return lo && (const char *)c >= lo && (const char *)c + n <= hi;
}

static float bf16_low(uint64_t reg) { return __bfloat162float(__ushort_as_bfloat16((unsigned short)(reg & 0xffff))); }
static float bf16_high(uint64_t reg) { return __bfloat162float(__ushort_as_bfloat16((unsigned short)(reg >> 16 & 0xffff))); }
static float fragment_bf16(uint64_t reg, int i) { return i & 1 ? bf16_high(reg) : bf16_low(reg); }

// ---- mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 --------------------------------

static void mma_complete(Thread *const lanes[32], unsigned) {
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; l++) {
        const uint64_t *in = lanes[l]->op.in;  // a0..a3 in[0..3], b0..b1 in[4..5], c0..c3 in[6..9]
        int g = l >> 2, t = l % 4;
        for (int i = 0; i < 8; i++) {
            int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
            int col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
            A[row][col] = fragment_bf16(in[i / 2], i);
        }
        for (int i = 0; i < 4; i++) {
            int row = 2 * t + (i & 1) + (i >= 2 ? 8 : 0);
            B[row][g] = fragment_bf16(in[4 + i / 2], i);
        }
        for (int i = 0; i < 4; i++) {
            uint32_t bits = (uint32_t)in[6 + i];
            memcpy(&C[g + (i >= 2 ? 8 : 0)][2 * t + (i & 1)], &bits, 4);
        }
    }
    for (int l = 0; l < 32; l++) {
        int g = l >> 2, t = l % 4;
        for (int i = 0; i < 4; i++) {
            int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
            float acc = C[row][col];
            for (int k = 0; k < 16; k++) acc += A[row][k] * B[k][col];
            uint32_t bits;
            memcpy(&bits, &acc, 4);
            lanes[l]->op.out[i] = bits;
        }
    }
}

void mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4], const char *file,
                       int line) {
    Thread *t = self("mma.sync");
    // .aligned: the whole warp executes the same mma (the same call site, scheduler.cpp)
    WarpOp *op = warp_op_begin(t, WARP_MMA, 0, "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", file, line,
                               0xffffffffu, mma_complete);
    for (int i = 0; i < 4; i++) op->in[i] = a[i];
    for (int i = 0; i < 2; i++) op->in[4 + i] = b[i];
    for (int i = 0; i < 4; i++) {
        uint32_t bits;
        memcpy(&bits, &c[i], 4);
        op->in[6 + i] = bits;
    }
    warp_meet(t);
    for (int i = 0; i < 4; i++) {
        uint32_t bits = (uint32_t)op->out[i];
        memcpy(&d[i], &bits, 4);
    }
}

// ---- ldmatrix.sync.aligned.m8n8.x{1,2,4}{.trans}.shared.b16 ------------------------------

// Each row is read by the lane that gave its address (so another lane's stores to it need a
// __syncwarp first: the race detector's rule).
static void ldmatrix_complete(Thread *const lanes[32], unsigned) {
    int num = lanes[0]->op.qual >> 1, trans = lanes[0]->op.qual & 1;
    uint32_t site = site_named(lanes[0]->op.name, lanes[0]->op.file, lanes[0]->op.line);
    unsigned short M[4][8][8];
    for (int j = 0; j < num; j++)
        for (int r = 0; r < 8; r++) {
            const Thread *giver = lanes[8 * j + r];
            const void *row = giver->op.ptr;
            if ((uintptr_t)row % 16)
                thread_fault("ldmatrix: lane %d's row address %p is not 16-byte aligned", giver->lane, row);
            if (!in_shared(giver, row, 16))
                thread_fault("ldmatrix: lane %d's row address %p is not 16 bytes of the block's shared memory",
                             giver->lane, row);
            race_access_by(giver, row, 16, ACCESS_READ, site);
            memcpy(M[j][r], row, 16);
        }
    for (int l = 0; l < 32; l++)
        for (int j = 0; j < num; j++) {
            int r = l / 4, c = 2 * (l % 4);
            unsigned lo = trans ? M[j][c][r] : M[j][r][c], hi = trans ? M[j][c + 1][r] : M[j][r][c + 1];
            lanes[l]->op.out[j] = lo | hi << 16;
        }
}

void ldmatrix(int num, bool trans, unsigned *r, const void *row, const char *file, int line) {
    Thread *t = self("ldmatrix");
    const char *name = num == 1   ? (trans ? "ldmatrix.x1.trans" : "ldmatrix.x1")
                       : num == 2 ? (trans ? "ldmatrix.x2.trans" : "ldmatrix.x2")
                                  : (trans ? "ldmatrix.x4.trans" : "ldmatrix.x4");
    WarpOp *op = warp_op_begin(t, WARP_LDMATRIX, num << 1 | (trans ? 1 : 0), name, file, line, 0xffffffffu,
                               ldmatrix_complete);
    op->ptr = row;
    warp_meet(t);
    for (int j = 0; j < num; j++) r[j] = (unsigned)op->out[j];
}

// ---- cp.async ----------------------------------------------------------------------------
// The source is read at the issue (into the copy's own buffer: a later store to the source
// does not change what lands); the destination is poisoned and written only at the wait
// that completes the copy's group, so a read before the wait (or by another thread before
// the wait and a barrier) sees 0xff bytes, and the race detector reports it (race.h).
// Groups are per thread, as in the ISA.

void cp_async(const char *name, void *dst, const void *src, int bytes, const char *file, int line) {
    Thread *t = self(name);
    if ((uintptr_t)dst % bytes || (uintptr_t)src % bytes)
        thread_fault("%s: addresses %p <- %p are not %d-byte aligned", name, dst, src, bytes);
    if (!in_shared(t, dst, (size_t)bytes))
        thread_fault("%s: destination %p is not %d bytes of the block's shared memory", name, dst, bytes);
    if (!cuda_host_is_device(src, (size_t)bytes))
        thread_fault("%s: source %p is not %d bytes of global (cudaMalloc) memory", name, src, bytes);
    AsyncCopy copy{dst, src, {}, bytes, site_named(name, file, line)};
    memcpy(copy.data, src, (size_t)bytes);
    memset(dst, 0xff, (size_t)bytes);
    race_async_issue(dst, src, (size_t)bytes, copy.site);
    t->async_open.push_back(copy);
}

void cp_async_commit() {
    Thread *t = self("cp.async.commit_group");
    t->async_groups.push_back(t->async_open);  // an empty group is legal and trivially complete
    t->async_open.clear();
}

void cp_async_wait(int n) {
    Thread *t = self("cp.async.wait_group");
    while (t->async_groups.size() > (size_t)n) {
        for (const AsyncCopy &c : t->async_groups.front()) {
            memcpy(c.dst, c.data, (size_t)c.bytes);
            race_async_land(c.dst, c.src, (size_t)c.bytes, c.site);
        }
        t->async_groups.erase(t->async_groups.begin());
    }
}

}  // namespace cuda_host
