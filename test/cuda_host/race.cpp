// race.cpp: the race detector and the instrumentation hooks (race.h).
#include "race.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <tuple>
#include <vector>

#include "runtime.h"
#include "scheduler.h"
#include "streams.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
extern "C" void __asan_report_load_n(uintptr_t addr, uintptr_t size);
extern "C" void __asan_report_store_n(uintptr_t addr, uintptr_t size);
#endif

extern "C" char __start_cuda_host_shared[] __attribute__((weak));
extern "C" char __stop_cuda_host_shared[] __attribute__((weak));
extern "C" char __executable_start[];  // the program's first byte (the linker's)

namespace cuda_host {

static bool racecheck_from_environment() {
    const char *env = getenv("CUDA_HOST_RACECHECK");
    return !(env && strcmp(env, "0") == 0);
}
bool race_enabled = racecheck_from_environment();

namespace {

// ---- records ----------------------------------------------------------------------------

enum { F_WRITE = 1, F_ATOMIC = 2, F_PENDING = 4 };

struct Access {
    uint32_t agent;     // 0: no access recorded
    uint32_t interval;
    uint32_t clock;
    uint32_t site;
    uint16_t tid;
    uint8_t flags;
    uint8_t mask;       // bytes 0-3 of the word
};
struct Word {
    Access w, r1, r2;   // the last write, two reads no later access has ordered
};

// Who is accessing: a kernel thread (t), or a stream operation (agent of its own, tid 0).
struct Cur {
    uint32_t agent, interval, clock;
    uint16_t tid;
    const Thread *t;
    bool shared;        // the memory is shared memory (another block's records are stale)
};

// The covered ranges: harness memory (shadow reserved here), the static __shared__
// section, and the dynamic shared memory of the block running now.
uintptr_t arena_lo, arena_span;
Word *arena_shadow;
uintptr_t static_lo, static_span;
std::vector<Word> static_shadow;
uintptr_t dynamic_lo, dynamic_span;
Word *dynamic_records;

// ---- agents -----------------------------------------------------------------------------

struct AgentRange {
    uint32_t first;
    uint64_t count, op;
    dim3 grid, block;  // a kernel's; (0,0,0) for other operations
};
std::vector<AgentRange> agents;  // by first agent, increasing
uint32_t next_agent = 1;
uint64_t op_agent_op = 0;        // the agent of the running non-kernel operation
uint32_t op_agent = 0;

const AgentRange &agent_range(uint32_t agent) {
    size_t lo = 0, hi = agents.size();
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (agents[mid].first <= agent) lo = mid;
        else hi = mid;
    }
    return agents[lo];
}

// Whether the operation an agent belongs to is ordered before the running one, from a
// few remembered answers (a kernel's words were mostly written by a few operations).
struct Known {
    uint32_t first;
    uint64_t count;
    bool ordered;
};
Known known[4];
uint64_t known_op = 0;  // the running operation the answers are for
unsigned known_next = 0;

bool agent_ordered(uint32_t agent) {
    uint64_t running = running_op();
    if (running != known_op) {
        for (Known &k : known) k = Known{0, 0, false};
        known_op = running;
    }
    for (const Known &k : known)
        if (agent - k.first < k.count) return k.ordered;
    const AgentRange &r = agent_range(agent);
    bool ordered = r.op != running && ordered_before_running(r.op);
    known[known_next++ % 4] = Known{r.first, r.count, ordered};
    return ordered;
}

// ---- ordering ---------------------------------------------------------------------------

// Whether access p happens before the current access (or is the current thread's own).
bool ordered(const Access &p, const Cur &c) {
    if (p.agent == c.agent) {
        if (p.interval != c.interval || p.tid == c.tid) return true;
        if ((p.tid >> 5) != (c.tid >> 5)) return false;  // another warp, no barrier between
        return c.t->clock[p.tid & 31] >= p.clock;        // a __syncwarp of both lanes between
    }
    if (c.shared) return true;  // another block's shared memory: records of a finished block
    return agent_ordered(p.agent);
}

// ---- reports ----------------------------------------------------------------------------

const char *kind_text(int flags, bool present) {
    if (flags & F_ATOMIC) return present ? "atomically updates" : "atomically updated";
    if (flags & F_WRITE) return present ? "writes" : "wrote";
    return present ? "reads" : "read";
}

// "thread (x,y,z) of block (x,y,z) of kernel NAME (stream N)" or "cudaMemcpyAsync (stream N)".
void describe_agent(char *buf, size_t n, uint32_t agent, uint16_t tid) {
    const AgentRange &r = agent_range(agent);
    const OpInfo &op = op_info(r.op);
    if (!r.grid.x) {
        snprintf(buf, n, "%s (stream %u)", op.what, op.stream);
        return;
    }
    uint64_t b = agent - r.first;
    snprintf(buf, n, "thread (%u,%u,%u) of block (%u,%u,%u) of %s (stream %u)", tid % r.block.x,
             tid / r.block.x % r.block.y, tid / (r.block.x * r.block.y), (unsigned)(b % r.grid.x),
             (unsigned)(b / r.grid.x % r.grid.y), (unsigned)(b / r.grid.x / r.grid.y), op.what, op.stream);
}

void describe_site(char *buf, size_t n, uint32_t site);

// Why p and the current access are not ordered.
void describe_why(char *buf, size_t n, const Access &p, const Cur &c) {
    if ((p.flags & F_PENDING) && (p.flags & F_WRITE)) {
        snprintf(buf, n, "the cp.async has not landed: its data are there only after cp.async.wait_group in the issuing "
                         "thread and, for the other threads, a __syncthreads after that");
    } else if (p.flags & F_PENDING) {
        snprintf(buf, n, "a cp.async reads its source until its cp.async.wait_group: a store to the source before "
                         "then races with the copy");
    } else if (p.agent == c.agent && (p.tid >> 5) == (c.tid >> 5)) {
        snprintf(buf, n, "lanes %d and %d of warp %d with no __syncwarp between them (shuffles, votes, ldmatrix and mma "
                         "do not order memory)", p.tid & 31, c.tid & 31, c.tid >> 5);
    } else if (p.agent == c.agent) {
        snprintf(buf, n, "warps %d and %d with no __syncthreads between them", p.tid >> 5, c.tid >> 5);
    } else if (agent_range(p.agent).op == running_op()) {
        snprintf(buf, n, "two blocks of one launch, which nothing orders (an atomic, or a second kernel, would)");
    } else {
        const OpInfo &a = op_info(agent_range(p.agent).op), &b = op_info(running_op());
        snprintf(buf, n, "streams %u and %u with no event (cudaEventRecord, cudaStreamWaitEvent) or synchronisation "
                         "ordering the two operations", a.stream, b.stream);
    }
}

// Reports a conflict between the recorded access p and the current one, and stops.
void report(const Access &p, const Cur &c, int kind, uint32_t site, uintptr_t addr, size_t bytes) {
    char who[256] = "it", where[512], what[256], pwho[256], pwhere[512], why[512];
    if (!c.t) describe_agent(who, sizeof(who), c.agent, c.tid);  // (a thread's fault message names it already)
    describe_site(where, sizeof(where), site);
    if (c.shared) {
        bool dynamic = addr - dynamic_lo < dynamic_span;
        snprintf(what, sizeof(what), "%s shared memory at offset %zu", dynamic ? "dynamic" : "__shared__",
                 (size_t)(addr - (dynamic ? dynamic_lo : static_lo)));
    } else {
        describe_address((const void *)addr, what, sizeof(what));
    }
    describe_agent(pwho, sizeof(pwho), p.agent, p.tid);
    describe_site(pwhere, sizeof(pwhere), p.site);
    describe_why(why, sizeof(why), p, c);
    const char *text = "race: %s %s %zu bytes of %s at %s; %s %s them at %s: %s";
    int k = kind == ACCESS_ATOMIC ? F_ATOMIC : kind == ACCESS_WRITE ? F_WRITE : 0;
    if (c.t) thread_fault(text, who, kind_text(k, true), bytes, what, where, pwho, kind_text(p.flags, false), pwhere, why);
    set_fault_message(text, who, kind_text(k, true), bytes, what, where, pwho, kind_text(p.flags, false), pwhere, why);
    set_sticky_fault();
}

// ---- the check of one word --------------------------------------------------------------

Access make(const Cur &c, uint32_t site, int flags, uint8_t mask) {
    return Access{c.agent, c.interval, c.clock, site, c.tid, (uint8_t)flags, mask};
}

void add_reader(Word *w, const Access &a, const Cur &c) {
    Access *slots[2] = {&w->r1, &w->r2};
    for (Access *r : slots)
        if (!r->agent || (r->agent == c.agent && r->tid == c.tid && r->interval == c.interval)) {
            uint8_t mask = r->agent ? r->mask : 0;
            *r = a;
            r->mask |= mask;
            return;
        }
    for (Access *r : slots)
        if (ordered(*r, c)) {
            *r = a;
            return;
        }
    w->r2 = a;  // three readers nothing orders: keep the first, forget the second
}

// Returns false after a report (the caller stops).
bool check_word(Word *w, uint8_t mask, int kind, const Cur &c, uint32_t site, int extra, uintptr_t addr,
                size_t bytes) {
    Access &last = w->w;
    // (in shared memory, another agent's records are an earlier block's: stale)
    bool overlaps = last.agent && (last.mask & mask) && (!c.shared || last.agent == c.agent);
    if (overlaps && (last.flags & F_PENDING) && !(kind == ACCESS_WRITE && last.agent == c.agent && last.tid == c.tid)) {
        report(last, c, kind, site, addr, bytes);  // (the issuer's own landing is a write of its own)
        return false;
    }
    if (kind == ACCESS_READ) {
        if (overlaps && !(last.flags & F_ATOMIC) && !ordered(last, c)) {
            report(last, c, kind, site, addr, bytes);
            return false;
        }
        add_reader(w, make(c, site, extra, mask), c);
        return true;
    }
    bool atomic = kind == ACCESS_ATOMIC;
    if (overlaps && !(atomic && (last.flags & F_ATOMIC)) && !ordered(last, c)) {
        report(last, c, kind, site, addr, bytes);
        return false;
    }
    if (!atomic) {
        Access *slots[2] = {&w->r1, &w->r2};
        for (Access *r : slots) {
            bool live = r->agent && (r->mask & mask) && (!c.shared || r->agent == c.agent);
            // a cp.async's source read lasts until its wait (or its launch's end)
            bool pending = (r->flags & F_PENDING) && (c.shared || !agent_ordered(r->agent));
            if (live && (pending || !ordered(*r, c))) {
                report(*r, c, kind, site, addr, bytes);
                return false;
            }
            if ((r->mask & ~mask) == 0) r->agent = 0;  // read before this write: ordered or reported
        }
    }
    last = make(c, site, (atomic ? F_WRITE | F_ATOMIC : F_WRITE) | extra, mask);
    return true;
}

void check_range(Word *shadow, uintptr_t lo, uintptr_t addr, size_t bytes, int kind, const Cur &c, uint32_t site,
                 int extra_flags) {
    uintptr_t first = (addr - lo) / 4, last = (addr + bytes - 1 - lo) / 4;
    for (uintptr_t i = first; i <= last; i++) {
        uintptr_t word = lo + i * 4;
        uintptr_t from = addr > word ? addr - word : 0, to = addr + bytes < word + 4 ? addr + bytes - word : 4;
        uint8_t mask = (uint8_t)(((1u << to) - 1) & ~((1u << from) - 1));
        if (!check_word(&shadow[i], mask, kind, c, site, extra_flags, addr, bytes)) return;
    }
}

// ---- host accesses ----------------------------------------------------------------------

struct PinnedUse {
    uint64_t op;
    uintptr_t lo, hi;
    bool write;
};
std::vector<PinnedUse> pinned_uses;  // queued operations' pinned ranges, until the host is ordered after them

void host_access(uintptr_t addr, size_t bytes, int kind, uint32_t site) {
    if (sticky_error()) return;
    char where[512], what[256];
    if (!is_pinned((const void *)addr, bytes)) {
        if (!cuda_host_is_device((const void *)addr, 1)) return;  // freed or past the end: AddressSanitizer's
        describe_site(where, sizeof(where), site);
        describe_address((const void *)addr, what, sizeof(what));
        set_fault_message("host code %s %zu bytes of %s at %s: device memory is not the host's (on a GPU this faults; "
                          "copy it with cudaMemcpy)",
                          kind == ACCESS_READ ? "reads" : "writes", bytes, what, where);
        set_sticky_fault();
        return;
    }
    for (size_t i = 0; i < pinned_uses.size();) {
        const PinnedUse &u = pinned_uses[i];
        if (ordered_before_host(u.op)) {  // the host has waited for it: forget it
            pinned_uses[i] = pinned_uses.back();
            pinned_uses.pop_back();
            continue;
        }
        if (addr < u.hi && u.lo < addr + bytes && (u.write || kind != ACCESS_READ)) {
            const OpInfo &op = op_info(u.op);
            char queued[512];
            describe_site(where, sizeof(where), site);
            describe_site(queued, sizeof(queued), site_of_pc(op.caller));
            describe_address((const void *)addr, what, sizeof(what));
            set_fault_message("race: host code %s %zu bytes of %s at %s, which %s on stream %u (queued at %s) %s, with "
                              "no synchronisation ordering the host after it",
                              kind == ACCESS_READ ? "reads" : "writes", bytes, what, where, op.what, op.stream, queued,
                              u.write ? "writes" : "reads");
            set_sticky_fault();
            return;
        }
        i++;
    }
}

// ---- the access path ----------------------------------------------------------------------

// Whether the detector keeps records of addr for an access by thread t (null: not a kernel
// thread). Inline, without locals and not instrumented: the hooks call it for every load and
// store.
__attribute__((no_sanitize_address)) inline bool covered(const Thread *t, uintptr_t addr) {
    return addr - arena_lo < arena_span || (t && (addr - static_lo < static_span || addr - dynamic_lo < dynamic_span));
}

void remember_load(Thread *t, uintptr_t addr, size_t bytes, uint32_t site);

__attribute__((noinline)) void note_covered(const Thread *t, uintptr_t addr, size_t bytes, int kind, uint32_t site,
                                            int extra_flags) {
    if (t) {
        // a plain load of the running thread's own (the harness's loads on a thread's behalf,
        // ldmatrix and cp.async, are followed by no uninstrumented store)
        if (kind == ACCESS_READ && !extra_flags && t == current_thread) remember_load(current_thread, addr, bytes, site);
        Cur c{t->block->agent, t->block->interval, t->clock[t->lane], (uint16_t)t->tid, t, true};
        if (addr - static_lo < static_span)
            return check_range(static_shadow.data(), static_lo, addr, bytes, kind, c, site, extra_flags);
        if (addr - dynamic_lo < dynamic_span)
            return check_range(dynamic_records, dynamic_lo, addr, bytes, kind, c, site, extra_flags);
        c.shared = false;
        return check_range(arena_shadow, arena_lo, addr, bytes, kind, c, site, extra_flags);
    }
    uint64_t op = running_op();
    if (!op) return host_access(addr, bytes, kind, site);
    if (sticky_error()) return;
    if (op != op_agent_op) {
        op_agent = race_new_agents(op, 1, dim3(0, 0, 0), dim3(0, 0, 0));
        op_agent_op = op;
    }
    check_range(arena_shadow, arena_lo, addr, bytes, kind, Cur{op_agent, 0, 0, 0, nullptr, false}, site, extra_flags);
}

inline void note(const Thread *t, uintptr_t addr, size_t bytes, int kind, uint32_t site, int extra_flags) {
    if (covered(t, addr)) note_covered(t, addr, bytes, kind, site, extra_flags);
}

// ---- loads remembered, for the stores the compiler did not instrument ---------------------
// (Not instrumented: a word may reach past the end of a buffer whose last bytes are loaded.)

__attribute__((no_sanitize_address)) uint32_t word_value(uintptr_t word) { return *(const volatile uint32_t *)word; }

// The memo's word changed since the load: the thread stored the changed bytes.
void settle_memo(Thread *t, const LoadMemo &m) {
    uint32_t now = word_value(m.word), changed = now ^ m.value;
    if (!changed) return;
    int first = __builtin_ctz(changed) / 8, last = (31 - __builtin_clz(changed)) / 8;
    note_covered(t, m.word + first, (size_t)(last - first + 1), ACCESS_WRITE, m.site, 0);
}

// The harness itself wrote [addr, addr + bytes) for the running thread (an atomic, a
// cp.async): not a store to find later.
void refresh_memos(uintptr_t addr, size_t bytes) {
    Thread *t = current_thread;
    if (!t) return;
    for (int i = 0; i < t->memo_count; i++) {
        LoadMemo &m = t->memos[(t->memo_first + i) % kLoadMemos];
        if (m.word + 4 > addr && m.word < addr + bytes) m.value = word_value(m.word);
    }
}

void remember_load(Thread *t, uintptr_t addr, size_t bytes, uint32_t site) {
    for (uintptr_t word = addr & ~(uintptr_t)3; word < addr + bytes; word += 4) {
        if (t->memo_count == kLoadMemos) {  // push the oldest out: settle it first
            settle_memo(t, t->memos[t->memo_first]);
            t->memo_first = (t->memo_first + 1) % kLoadMemos;
            t->memo_count--;
        }
        t->memos[(t->memo_first + t->memo_count++) % kLoadMemos] = LoadMemo{word, word_value(word), site};
    }
}

// ---- sites ------------------------------------------------------------------------------

struct NamedSite {
    const char *what, *file;
    int line;
};
std::vector<NamedSite> named_sites;
std::map<std::tuple<const char *, const char *, int>, uint32_t> named_index;
const uint32_t kNamed = 0x80000000u;

void describe_site(char *buf, size_t n, uint32_t site) {
    if (site & kNamed) {
        const NamedSite &s = named_sites[site & ~kNamed];
        snprintf(buf, n, "%s (%s:%d)", s.what, s.file, s.line);
    } else if (site) {
        describe_pc((uintptr_t)__executable_start + site, buf, n);
    } else {
        snprintf(buf, n, "an unknown place");
    }
}

}  // namespace

uint32_t site_of_pc(uintptr_t pc) {
    uintptr_t offset = pc - (uintptr_t)__executable_start;
    return offset < kNamed ? (uint32_t)offset : 0;
}

uint32_t site_named(const char *what, const char *file, int line) {
    auto key = std::make_tuple(what, file, line);
    auto it = named_index.find(key);
    if (it != named_index.end()) return it->second;
    uint32_t site = kNamed | (uint32_t)named_sites.size();
    named_sites.push_back(NamedSite{what, file, line});
    named_index[key] = site;
    return site;
}

void describe_pc(uintptr_t pc, char *buf, size_t n) {
    if (!pc) {
        snprintf(buf, n, "an unknown place");
        return;
    }
#if defined(__SANITIZE_ADDRESS__)
    // (pc - 1: the call instruction, not the one after it)
    __sanitizer_symbolize_pc((void *)(pc - 1), "%s:%l (%f)", buf, n);
    if (buf[0] && buf[0] != '?') return;
#else
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "addr2line -f -C -e /proc/%d/exe 0x%lx 2>/dev/null", (int)getpid(),
             (unsigned long)(pc - 1 - (uintptr_t)__executable_start));
    FILE *f = popen(cmd, "r");
    char fn[256] = "", line[512] = "";
    if (f) {
        if (fgets(fn, sizeof(fn), f) && fgets(line, sizeof(line), f)) {
            fn[strcspn(fn, "\n")] = 0, line[strcspn(line, "\n")] = 0;
            snprintf(buf, n, "%s (%s)", line, fn);
        }
        pclose(f);
        if (line[0] && line[0] != '?') return;
    }
#endif
    snprintf(buf, n, "code at %p", (void *)pc);
}

void race_reserve_arena(uintptr_t lo, size_t bytes) {
    size_t shadow_bytes = bytes / 4 * sizeof(Word);
    void *p = mmap(nullptr, shadow_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "cuda_host: cannot reserve %zu GiB for the race detector's records\n", shadow_bytes >> 30);
        exit(2);
    }
    arena_shadow = (Word *)p;
    arena_lo = lo;
    arena_span = bytes;
}

void race_forget(const void *p, size_t bytes) {
    if (!arena_shadow) return;
    char *lo = (char *)&arena_shadow[((uintptr_t)p - arena_lo) / 4], *hi = lo + bytes / 4 * sizeof(Word);
    const uintptr_t page = 4096;
    char *inner_lo = (char *)(((uintptr_t)lo + page - 1) & ~(page - 1)), *inner_hi = (char *)((uintptr_t)hi & ~(page - 1));
    if (inner_lo < inner_hi) {
        memset(lo, 0, (size_t)(inner_lo - lo));
        madvise(inner_lo, (size_t)(inner_hi - inner_lo), MADV_DONTNEED);  // zero pages again
        memset(inner_hi, 0, (size_t)(hi - inner_hi));
    } else {
        memset(lo, 0, (size_t)(hi - lo));
    }
}

void *race_dynamic_shadow(int slot, size_t bytes) {
    static std::vector<Word> shadows[kMaxSlots];
    std::vector<Word> &s = shadows[slot];
    if (s.size() < bytes / 4 + 1) s.resize(bytes / 4 + 1);  // new records are empty; old ones belong to old blocks
    return s.data();
}

void race_set_dynamic_shared(const void *p, size_t bytes, void *shadow) {
    dynamic_lo = (uintptr_t)p;
    dynamic_span = bytes;
    dynamic_records = (Word *)shadow;
    if (static_shadow.empty() && __start_cuda_host_shared) {
        static_lo = (uintptr_t)__start_cuda_host_shared;
        static_span = (uintptr_t)(__stop_cuda_host_shared - __start_cuda_host_shared);
        static_shadow.resize(static_span / 4 + 1);
    }
}

uint32_t race_new_agents(uint64_t op, uint64_t count, dim3 grid, dim3 block) {
    uint32_t first = next_agent;
    agents.push_back(AgentRange{first, count, op, grid, block});
    next_agent += (uint32_t)count;
    return first;
}

void race_note_pinned(uint64_t op, const void *p, size_t bytes, bool write) {
    pinned_uses.push_back(PinnedUse{op, (uintptr_t)p, (uintptr_t)p + bytes, write});
}

void race_access(const void *p, size_t bytes, int kind, uint32_t site) {
    if (race_enabled && bytes) note(current_thread, (uintptr_t)p, bytes, kind, site, 0);
}

void race_settle(Thread *t) {
    if (race_enabled)
        for (; t->memo_count; t->memo_count--, t->memo_first = (t->memo_first + 1) % kLoadMemos)
            settle_memo(t, t->memos[t->memo_first]);
    t->memo_count = 0;
}

void race_access_by(const Thread *t, const void *p, size_t bytes, int kind, uint32_t site) {
    if (race_enabled && bytes) note(t, (uintptr_t)p, bytes, kind, site, 0);
}

void race_async_issue(const void *dst, const void *src, size_t bytes, uint32_t site) {
    if (!race_enabled) return;
    refresh_memos((uintptr_t)dst, bytes);
    note(current_thread, (uintptr_t)src, bytes, ACCESS_READ, site, F_PENDING);
    note(current_thread, (uintptr_t)dst, bytes, ACCESS_WRITE, site, F_PENDING);
}

void race_async_land(const void *dst, const void *src, size_t bytes, uint32_t site) {
    if (!race_enabled) return;
    refresh_memos((uintptr_t)dst, bytes);
    note(current_thread, (uintptr_t)src, bytes, ACCESS_READ, site, 0);  // the source is free again
    note(current_thread, (uintptr_t)dst, bytes, ACCESS_WRITE, site, 0);
}

void atomic_read(void *out, const void *p, size_t bytes) {
    if (race_enabled)
        note(current_thread, (uintptr_t)p, bytes, ACCESS_ATOMIC, site_of_pc((uintptr_t)__builtin_return_address(0)), 0);
    memcpy(out, p, bytes);
}

void atomic_write(void *p, const void *in, size_t bytes) {
    memcpy(p, in, bytes);
    refresh_memos((uintptr_t)p, bytes);
}

}  // namespace cuda_host

void cuda_host_set_racecheck(bool on) { cuda_host::race_enabled = on; }

// ---- the instrumentation hooks ----------------------------------------------------------
// Kernel translation units call these for every load and store (Makefile,
// CUDA_HOST_KERNEL_FLAGS). In the sanitizer build they are AddressSanitizer's own entry
// points, so they first do its check, exactly as its inline instrumentation would: the
// shadow byte of each 8-byte granule says how many of its bytes are addressable.

using cuda_host::covered;
using cuda_host::note_covered;
using cuda_host::site_of_pc;

// What every hook does after AddressSanitizer's check: the record, when the address is
// covered (pc: the hook's return address, in the code that made the access).
__attribute__((no_sanitize_address, always_inline)) static inline void hook(uintptr_t a, size_t n, int kind,
                                                                            void *pc) {
    if (cuda_host::race_enabled && n && covered(cuda_host::current_thread, a))
        note_covered(cuda_host::current_thread, a, n, kind, site_of_pc((uintptr_t)pc), 0);
}

#if defined(__SANITIZE_ADDRESS__)
// (Not instrumented itself: AddressSanitizer would check the shadow of the shadow.)
__attribute__((no_sanitize_address)) static inline void asan_check(uintptr_t a, size_t n, bool write) {
    bool bad;
    if ((a & 7) + n <= 8) {
        int8_t k = *(const int8_t *)((a >> 3) + 0x7fff8000);
        bad = k && (int8_t)((a & 7) + n - 1) >= k;
    } else {
        bad = __asan_region_is_poisoned((void *)a, n) != nullptr;
    }
    if (bad) {
        if (write) __asan_report_store_n(a, n);
        else __asan_report_load_n(a, n);
    }
}
#define CUDA_HOST_HOOK(name, n, kind)                                                            \
    extern "C" __attribute__((no_sanitize_address)) void name(uintptr_t a) {                     \
        asan_check(a, n, kind != cuda_host::ACCESS_READ);                                        \
        hook(a, n, kind, __builtin_return_address(0));                                           \
    }
#define CUDA_HOST_HOOK_N(name, kind)                                                             \
    extern "C" __attribute__((no_sanitize_address)) void name(uintptr_t a, uintptr_t n) {        \
        asan_check(a, n, kind != cuda_host::ACCESS_READ);                                        \
        hook(a, n, kind, __builtin_return_address(0));                                           \
    }
#else
// The optimised build has no AddressSanitizer runtime: the kernel translation units are
// compiled with the kernel flavour of the instrumentation, whose hooks are these.
#define CUDA_HOST_HOOK(name, n, kind) \
    extern "C" void name##_noabort(uintptr_t a) { hook(a, n, kind, __builtin_return_address(0)); }
#define CUDA_HOST_HOOK_N(name, kind) \
    extern "C" void name##_noabort(uintptr_t a, uintptr_t n) { hook(a, n, kind, __builtin_return_address(0)); }
extern "C" void __asan_handle_no_return(void) {}
#endif

// __asan_load1 ... __asan_load16, __asan_loadN, and the same for stores.
#define CUDA_HOST_HOOKS(access, kind)                      \
    CUDA_HOST_HOOK(__asan_##access##1, 1, kind)           \
    CUDA_HOST_HOOK(__asan_##access##2, 2, kind)           \
    CUDA_HOST_HOOK(__asan_##access##4, 4, kind)           \
    CUDA_HOST_HOOK(__asan_##access##8, 8, kind)           \
    CUDA_HOST_HOOK(__asan_##access##16, 16, kind)         \
    CUDA_HOST_HOOK_N(__asan_##access##N, kind)
CUDA_HOST_HOOKS(load, cuda_host::ACCESS_READ)
CUDA_HOST_HOOKS(store, cuda_host::ACCESS_WRITE)
