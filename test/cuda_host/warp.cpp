// warp.cpp: shuffles, votes and __syncwarp as warp meetings (cuda_host_sync.h states the
// semantics; scheduler.cpp does the meeting; race.h says what __syncwarp orders).
#include <string.h>

#include "scheduler.h"

namespace cuda_host {

static const uint64_t kUndefined = ~0ull;  // what a read of a lane outside the mask returns

// Every lane's result, computed as the PTX ISA's pseudocode for shfl.sync does, with
// c = ((32 - width) << 8) | 0x1f for idx/down/bfly and (32 - width) << 8 for up, the
// values CUDA's __shfl*_sync pass.
static void shfl_complete(Thread *const lanes[32], unsigned mask) {
    for (int lane = 0; lane < 32; lane++) {
        if (!lanes[lane]) continue;
        WarpOp *op = &lanes[lane]->op;
        int mode = op->qual >> 8, width = op->qual & 0xff;
        int c = mode == SHFL_UP ? (32 - width) << 8 : ((32 - width) << 8) | 0x1f;
        int segmask = (c >> 8) & 0x1f, cval = c & 0x1f, bval = (int)(op->in[1] & 0x1f);
        int max_lane = (lane & segmask) | (cval & ~segmask), min_lane = lane & segmask;
        int j = lane;
        bool in_range = false;
        switch (mode) {
            case SHFL_UP: j = lane - bval; in_range = j >= max_lane; break;
            case SHFL_DOWN: j = lane + bval; in_range = j <= max_lane; break;
            case SHFL_BFLY: j = lane ^ bval; in_range = j <= max_lane; break;
            case SHFL_IDX: j = min_lane | (bval & ~segmask); in_range = j <= max_lane; break;
        }
        if (!in_range) j = lane;
        op->out[0] = (mask >> j & 1u) ? lanes[j]->op.in[0] : kUndefined;
    }
}

uint64_t warp_shfl(int mode, const char *name, const char *file, int line, unsigned mask, uint64_t bits, int b,
                   int width) {
    Thread *t = self(name);
    if (width < 1 || width > 32 || (width & (width - 1)))
        thread_fault("%s (%s:%d): width %d is not a power of two between 1 and 32", name, file, line, width);
    WarpOp *op = warp_op_begin(t, WARP_SHFL, mode << 8 | width, name, file, line, mask, shfl_complete);
    op->in[0] = bits;
    op->in[1] = (uint32_t)b;
    warp_meet(t);
    return op->out[0];
}

static void vote_complete(Thread *const lanes[32], unsigned mask) {
    unsigned ballot = 0;
    for (int l = 0; l < 32; l++)
        if (lanes[l] && lanes[l]->op.in[0]) ballot |= 1u << l;
    for (int l = 0; l < 32; l++) {
        if (!lanes[l]) continue;
        WarpOp *op = &lanes[l]->op;
        op->out[0] = op->qual == VOTE_BALLOT ? ballot : op->qual == VOTE_ANY ? ballot != 0 : ballot == mask;
    }
}

unsigned warp_vote(int kind, const char *name, const char *file, int line, unsigned mask, int pred) {
    Thread *t = self(name);
    WarpOp *op = warp_op_begin(t, WARP_VOTE, kind, name, file, line, mask, vote_complete);
    op->in[0] = pred != 0;
    warp_meet(t);
    return (unsigned)op->out[0];
}

// The lanes' memory accesses before the __syncwarp are ordered before everyone's after it:
// their race-detector clocks are joined, and each lane's own entry then moves on (race.h).
static void sync_complete(Thread *const lanes[32], unsigned mask) {
    uint32_t joined[32] = {};
    for (int l = 0; l < 32; l++)
        if (mask >> l & 1u)
            for (int k = 0; k < 32; k++)
                if (lanes[l]->clock[k] > joined[k]) joined[k] = lanes[l]->clock[k];
    for (int l = 0; l < 32; l++)
        if (mask >> l & 1u) {
            memcpy(lanes[l]->clock, joined, sizeof(joined));
            lanes[l]->clock[l]++;
        }
}

void warp_sync(const char *file, int line, unsigned mask) {
    Thread *t = self("__syncwarp");
    warp_op_begin(t, WARP_SYNC, 0, "__syncwarp", file, line, mask, sync_complete);
    warp_meet(t);
}

unsigned active_mask() { return 1u << self("__activemask")->lane; }

}  // namespace cuda_host
