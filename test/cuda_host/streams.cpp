// streams.cpp: streams, events and the queue of stream operations (streams.h).
#include "streams.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <deque>
#include <map>
#include <set>
#include <vector>

#include "runtime.h"
#include "scheduler.h"

namespace cuda_host {

// A vector clock over streams: vc[s] = the newest sequence number of stream s ordered
// before (or at) the owner.
typedef std::vector<uint64_t> Clock;

static void join(Clock &into, const Clock &from) {
    if (into.size() < from.size()) into.resize(from.size(), 0);
    for (size_t i = 0; i < from.size(); i++)
        if (from[i] > into[i]) into[i] = from[i];
}

}  // namespace cuda_host

struct CUstream_st {
    uint32_t index;
    unsigned flags;
    uint64_t seq;                  // operations queued so far
    uint64_t last;                 // the newest one's id (0: none)
    cuda_host::Clock last_clock;   // and its clock
    std::deque<uint64_t> queue;    // not yet run, oldest first
};

struct CUevent_st {
    unsigned flags;
    uint64_t op;                   // the marker of the last record (0: never recorded)
    cuda_host::Clock clock;        // its clock
    double ms;                     // the host's monotonic clock when that marker ran
};

namespace cuda_host {

namespace {

struct Op {
    CUstream_st *stream;
    std::vector<uint64_t> after;   // other operations that must be done first
    std::function<void()> run;
};

// Stream and event objects are never freed: a destroyed stream's queued work still runs,
// and a queued record may still stamp a destroyed event. The lists that hold them are
// never freed either, so that the leak checker, which runs after static destructors, still
// sees them.
CUstream_st legacy_stream = {0, cudaStreamDefault, 0, 0, {}, {}};
std::vector<CUstream_st *> &all_streams = *new std::vector<CUstream_st *>{&legacy_stream};  // by index
std::set<cudaStream_t> live_streams;
std::set<cudaEvent_t> live_events;
std::vector<CUevent_st *> &dead_events = *new std::vector<CUevent_st *>;
std::map<uint64_t, Op> pending;         // by id
std::deque<OpInfo> infos(1);            // by id (0 unused); a deque keeps references valid
Clock host_clock;                       // what the host has waited for
uint64_t running = 0;
uint64_t rng_state = 0;
bool rng_seeded = false;

CUstream_st *stream_of(cudaStream_t s) {
    if (s == nullptr || s == cudaStreamLegacy) return &legacy_stream;
    if (s == cudaStreamPerThread || !live_streams.count(s)) return nullptr;
    return s;
}

bool is_done(uint64_t id) { return !pending.count(id); }

bool ready(uint64_t id) {
    const Op &op = pending.at(id);
    if (op.stream->queue.front() != id) return false;
    for (uint64_t a : op.after)
        if (!is_done(a)) return false;
    return true;
}

void run_one(uint64_t id) {
    Op op = std::move(pending.at(id));
    pending.erase(id);
    op.stream->queue.pop_front();
    // after a fault the device runs nothing more, as a GPU's context is lost
    if (sticky_error() != cudaSuccess) return;
    running = id;
    op.run();
    running = 0;
}

// Runs one ready operation, chosen by the seeded generator (seed 0: the oldest).
void run_some() {
    if (!rng_seeded) seed_streams(cuda_host_seed());
    std::vector<uint64_t> candidates;
    for (CUstream_st *s : all_streams)
        if (!s->queue.empty() && ready(s->queue.front())) candidates.push_back(s->queue.front());
    if (candidates.empty()) {  // cannot happen: the oldest queued operation is always ready
        fprintf(stderr, "cuda_host: stream operations wait for each other in a cycle (harness error)\n");
        abort();
    }
    uint64_t pick = candidates[0];
    if (rng_state) {
        pick = candidates[rng_next(&rng_state) % candidates.size()];
    } else {
        for (uint64_t c : candidates)
            if (c < pick) pick = c;
    }
    run_one(pick);
}

double now_ms() {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

}  // namespace

void seed_streams(uint64_t seed) {
    rng_state = seed ? seed ^ 0x5bd1e9955bd1e995ull : 0;
    rng_seeded = true;
}

bool valid_stream(cudaStream_t stream) { return stream_of(stream) != nullptr; }

cudaError_t refuse_stream(const char *call, cudaStream_t stream) {
    if (stream == cudaStreamPerThread)
        return refuse(cudaErrorNotSupported,
                      "%s: cudaStreamPerThread: the harness emulates the legacy default stream only (build without "
                      "--default-stream per-thread and use stream 0 or a stream of your own)",
                      call);
    return refuse(cudaErrorInvalidResourceHandle, "%s: unknown stream %p", call, (void *)stream);
}

uint64_t enqueue(cudaStream_t handle, const char *what, uintptr_t caller, std::function<void()> run) {
    CUstream_st *s = stream_of(handle);
    if (!s) return 0;
    uint64_t id = infos.size();
    Op op;
    op.stream = s;
    Clock clock = host_clock;
    if (s->last) op.after.push_back(s->last);
    join(clock, s->last_clock);
    // the legacy default stream and the blocking streams wait for each other
    bool legacy = s == &legacy_stream, blocking = !(s->flags & cudaStreamNonBlocking);
    if (legacy) {
        for (CUstream_st *o : all_streams)
            if (o != s && !(o->flags & cudaStreamNonBlocking) && o->last) {
                op.after.push_back(o->last);
                join(clock, o->last_clock);
            }
    } else if (blocking && legacy_stream.last) {
        op.after.push_back(legacy_stream.last);
        join(clock, legacy_stream.last_clock);
    }
    s->seq++;
    if (clock.size() <= s->index) clock.resize(s->index + 1, 0);
    clock[s->index] = s->seq;
    op.run = std::move(run);
    s->last = id;
    s->last_clock = clock;
    s->queue.push_back(id);
    infos.push_back(OpInfo{s->index, s->seq, what, caller, std::move(clock)});
    pending.emplace(id, std::move(op));
    return id;
}

// Adds a wait to the operation just queued (cudaStreamWaitEvent's marker).
static void add_wait(uint64_t id, const CUevent_st *e) {
    Op &op = pending.at(id);
    op.after.push_back(e->op);
    join(infos[id].clock, e->clock);
    op.stream->last_clock = infos[id].clock;
}

void run_now(uint64_t id) {
    while (id && !is_done(id)) run_some();
}

void host_wait(uint64_t id) {
    if (!id) return;
    run_now(id);
    join(host_clock, infos[id].clock);  // the operation and everything ordered before it
}

void host_wait_stream(cudaStream_t stream) { host_wait(stream_of(stream)->last); }

void host_wait_all() {
    while (!pending.empty()) run_some();
    for (CUstream_st *s : all_streams) {
        if (host_clock.size() <= s->index) host_clock.resize(s->index + 1, 0);
        host_clock[s->index] = s->seq;
    }
}

uint64_t running_op() { return running; }
const OpInfo &op_info(uint64_t id) { return infos[id]; }

bool ordered_before_running(uint64_t a) {
    if (!running || a == running) return a == running;
    const Clock &c = infos[running].clock;
    const OpInfo &i = infos[a];
    return i.stream < c.size() && c[i.stream] >= i.seq;
}

bool ordered_before_host(uint64_t a) {
    const OpInfo &i = infos[a];
    return i.stream < host_clock.size() && host_clock[i.stream] >= i.seq;
}

}  // namespace cuda_host

using namespace cuda_host;

// ---- streams ----------------------------------------------------------------------------

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags) {
    if (sticky_error()) return sticky_error();
    if (!stream) return refuse(cudaErrorInvalidValue, "cudaStreamCreate: null result pointer");
    if (flags & ~(unsigned)cudaStreamNonBlocking)
        return refuse(cudaErrorInvalidValue, "cudaStreamCreateWithFlags: flags 0x%x are not emulated", flags);
    CUstream_st *s = new CUstream_st{(uint32_t)all_streams.size(), flags, 0, 0, {}, {}};
    all_streams.push_back(s);
    live_streams.insert(s);
    *stream = s;
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    if (sticky_error()) return sticky_error();
    if (!stream || stream == cudaStreamLegacy || !live_streams.erase(stream))
        return refuse_stream("cudaStreamDestroy", stream);
    return cudaSuccess;  // queued work still runs (as CUDA's does); the object stays in all_streams
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    CUstream_st *s = stream_of(stream);
    if (!s) return refuse_stream("cudaStreamSynchronize", stream);
    host_wait(s->last);
    return sticky_error();
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
    CUstream_st *s = stream_of(stream);
    if (!s) return refuse_stream("cudaStreamQuery", stream);
    if (!s->last || is_done(s->last)) {
        host_wait(s->last);
        return sticky_error();
    }
    run_some();  // progress, so that a polling loop ends
    return sticky_error() ? sticky_error() : cudaErrorNotReady;
}

cudaError_t cudaDeviceSynchronize(void) {
    host_wait_all();
    return sticky_error();
}

// ---- events -----------------------------------------------------------------------------

static bool valid_event(cudaEvent_t e) { return e && live_events.count(e); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags) {
    if (sticky_error()) return sticky_error();
    if (!event) return refuse(cudaErrorInvalidValue, "cudaEventCreate: null result pointer");
    if (flags & ~(unsigned)(cudaEventDefault | cudaEventDisableTiming))
        return refuse(cudaErrorInvalidValue, "cudaEventCreateWithFlags: flags 0x%x are not emulated", flags);
    *event = new CUevent_st{flags, 0, {}, 0.0};
    live_events.insert(*event);
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    if (sticky_error()) return sticky_error();
    if (!valid_event(event)) return refuse(cudaErrorInvalidResourceHandle, "cudaEventRecord: unknown event");
    uint64_t id = enqueue(stream, "cudaEventRecord", (uintptr_t)__builtin_return_address(0), nullptr);
    if (!id) return refuse_stream("cudaEventRecord", stream);
    // the marker stamps the time it runs at, if the event still means this record then
    pending.at(id).run = [event, id]() {
        if (event->op == id) event->ms = now_ms();
    };
    event->op = id;
    event->clock = infos[id].clock;
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
    if (sticky_error()) return sticky_error();
    if (!valid_stream(stream)) return refuse_stream("cudaStreamWaitEvent", stream);
    if (!valid_event(event)) return refuse(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: unknown event");
    if (flags != 0) return refuse(cudaErrorInvalidValue, "cudaStreamWaitEvent: flags 0x%x are not emulated", flags);
    if (!event->op) return cudaSuccess;  // never recorded: nothing to wait for (CUDA's rule)
    uint64_t id = enqueue(stream, "cudaStreamWaitEvent", (uintptr_t)__builtin_return_address(0), [] {});
    add_wait(id, event);
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    if (!valid_event(event)) return refuse(cudaErrorInvalidResourceHandle, "cudaEventSynchronize: unknown event");
    host_wait(event->op);
    return sticky_error();
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
    if (!valid_event(event)) return refuse(cudaErrorInvalidResourceHandle, "cudaEventQuery: unknown event");
    if (!event->op || is_done(event->op)) {
        host_wait(event->op);
        return sticky_error();
    }
    run_some();
    return sticky_error() ? sticky_error() : cudaErrorNotReady;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (sticky_error()) return sticky_error();
    if (!ms) return refuse(cudaErrorInvalidValue, "cudaEventElapsedTime: null result pointer");
    if (!valid_event(start) || !valid_event(end))
        return refuse(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: unknown event");
    if (!start->op || !end->op)
        return refuse(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event was never recorded");
    if ((start->flags | end->flags) & cudaEventDisableTiming)
        return refuse(cudaErrorInvalidResourceHandle,
                      "cudaEventElapsedTime: an event was created with cudaEventDisableTiming");
    if (!is_done(start->op) || !is_done(end->op))
        return refuse(cudaErrorNotReady, "cudaEventElapsedTime: an event has not completed (synchronize it first)");
    *ms = (float)(end->ms - start->ms);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    if (sticky_error()) return sticky_error();
    if (!valid_event(event)) return refuse(cudaErrorInvalidResourceHandle, "cudaEventDestroy: unknown event");
    live_events.erase(event);
    dead_events.push_back(event);
    return cudaSuccess;
}
