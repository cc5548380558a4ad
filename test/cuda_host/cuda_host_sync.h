/*
 * cuda_host_sync.h: block barriers and warp intrinsics for kernels in the CUDA-on-CPU
 * harness. Each is a meeting of fibers (scheduler.h says how they wait and what is a
 * fault); the macros pass the call's source line along for the fault messages.
 *
 * Semantics, as the GPU defines them (PTX ISA, shfl.sync / vote.sync / bar.sync):
 *   - __syncthreads(): every thread of the block, at the same barrier. _count/_and/_or
 *     return the count of threads with a non-zero predicate / all / any.
 *   - __shfl*_sync(mask, var, b, width = 32): every lane in mask must call the same
 *     shuffle; the source lane is computed exactly as shfl.sync does it, with the clamp
 *     value CUDA's headers pass for `width`: idx reads lane (b mod width) of the caller's
 *     width-segment, up/down read lane -/+ b unless that leaves the segment (then the
 *     caller's own value), xor reads lane ^ b unless that lies in a later segment. Reading
 *     a lane outside mask gives undefined data on a GPU; here it gives all-ones bits (NaN,
 *     -1), so a program that uses it computes garbage instead of a plausible value.
 *   - __ballot_sync/__any_sync/__all_sync(mask, pred): over the lanes in mask.
 *   - __syncwarp(mask = all): the lanes in mask meet.
 *   - __activemask(): only the calling lane. A GPU may split a warp's lanes apart at any
 *     point (independent thread scheduling), so this is a legal answer, and the least
 *     forgiving one for code that hopes the warp is still together.
 * Widths other than powers of two in [1, 32] are faults.
 */
#ifndef CUDA_HOST_SYNC_H
#define CUDA_HOST_SYNC_H

#include <stdint.h>
#include <string.h>

#include <type_traits>

namespace cuda_host {

enum BarrierOp { BAR_SYNC, BAR_COUNT, BAR_AND, BAR_OR };
int block_barrier(int op, const char *name, int pred, const char *file, int line);

enum ShflMode { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_BFLY };
uint64_t warp_shfl(int mode, const char *name, const char *file, int line, unsigned mask, uint64_t bits, int b,
                   int width);
enum VoteKind { VOTE_BALLOT, VOTE_ANY, VOTE_ALL };
unsigned warp_vote(int kind, const char *name, const char *file, int line, unsigned mask, int pred);
void warp_sync(const char *file, int line, unsigned mask);
unsigned active_mask();

// The call objects behind the warp-intrinsic macros: `__shfl_xor_sync(m, v, 16)` becomes
// `Shfl{SHFL_BFLY, "__shfl_xor_sync", __FILE__, __LINE__}(m, v, 16)`.
struct Shfl {
    int mode;
    const char *name, *file;
    int line;
    template <typename T>
    T operator()(unsigned mask, T var, int b, int width = 32) const {
        static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffles move up to 8 bytes");
        uint64_t bits = 0;
        memcpy(&bits, &var, sizeof(T));
        bits = warp_shfl(mode, name, file, line, mask, bits, b, width);
        memcpy(&var, &bits, sizeof(T));
        return var;
    }
};
struct Vote {
    int kind;
    const char *name, *file;
    int line;
    unsigned operator()(unsigned mask, int pred) const { return warp_vote(kind, name, file, line, mask, pred); }
};
struct SyncWarp {
    const char *file;
    int line;
    void operator()(unsigned mask = 0xffffffffu) const { warp_sync(file, line, mask); }
};

}  // namespace cuda_host

#define __syncthreads() cuda_host::block_barrier(cuda_host::BAR_SYNC, "__syncthreads", 1, __FILE__, __LINE__)
#define __syncthreads_count(pred) \
    cuda_host::block_barrier(cuda_host::BAR_COUNT, "__syncthreads_count", (pred) != 0, __FILE__, __LINE__)
#define __syncthreads_and(pred) \
    cuda_host::block_barrier(cuda_host::BAR_AND, "__syncthreads_and", (pred) != 0, __FILE__, __LINE__)
#define __syncthreads_or(pred) \
    cuda_host::block_barrier(cuda_host::BAR_OR, "__syncthreads_or", (pred) != 0, __FILE__, __LINE__)
#define __shfl_sync (cuda_host::Shfl{cuda_host::SHFL_IDX, "__shfl_sync", __FILE__, __LINE__})
#define __shfl_up_sync (cuda_host::Shfl{cuda_host::SHFL_UP, "__shfl_up_sync", __FILE__, __LINE__})
#define __shfl_down_sync (cuda_host::Shfl{cuda_host::SHFL_DOWN, "__shfl_down_sync", __FILE__, __LINE__})
#define __shfl_xor_sync (cuda_host::Shfl{cuda_host::SHFL_BFLY, "__shfl_xor_sync", __FILE__, __LINE__})
#define __ballot_sync (cuda_host::Vote{cuda_host::VOTE_BALLOT, "__ballot_sync", __FILE__, __LINE__})
#define __any_sync(mask, pred) ((int)(cuda_host::Vote{cuda_host::VOTE_ANY, "__any_sync", __FILE__, __LINE__}(mask, pred)))
#define __all_sync(mask, pred) ((int)(cuda_host::Vote{cuda_host::VOTE_ALL, "__all_sync", __FILE__, __LINE__}(mask, pred)))
#define __syncwarp (cuda_host::SyncWarp{__FILE__, __LINE__})
#define __activemask() cuda_host::active_mask()

#endif
