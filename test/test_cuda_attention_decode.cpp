// test_cuda_attention_decode.cpp: decode attention against a KV cache
// (kernels/attention_decode.cuh) in the CUDA-on-CPU harness.
//
// Each case is a batch of sequences with different numbers of cached positions; each
// sequence gets random bf16 queries, keys and values for all its positions. The reference
// is train/attention.c over each whole sequence (fp32, causal, window), the rows of the new
// tokens; the kernel gets those rows' queries, keys and values as the new tokens and the
// earlier keys and values in a cache laid out as decoding leaves it: position j in slot
// j mod slots, written in order, so with a window (slots = W) later positions overwrite
// earlier ones, and slots never written hold NaN (a read of one would poison the output).
// Every output element must be within the bound stated at the end of the kernel's header,
// and the reference within 1e-4 of that bound's scale (plus 1e-5 relative) of the exact
// double-precision value (attention_decode_bounds).
//   - cached lengths 1, W - 1, W and 3W + 5 in one batch, W = 40 (one split) and W = 300
//     (two splits), GQA 4/1 and 8/2, head_dim 64 and 128 (96 once), 1, 2 and 3 new tokens;
//     no window with 600 cached positions (three splits);
//   - the same bits under different thread schedules (no atomics, a fixed combine order);
//   - attention_decode_append puts the new keys and values in their slots, nothing else;
//   - shapes the kernel does not take: one line, exit status 1.
#include "../kernels/attention_decode.cuh"
#include "cuda_host/cuda_host_testing.h"
#include "test.h"

extern "C" {
#include "../common/half.h"
#include "../common/util.h"
#include "../train/attention.h"
}

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct Case {
    int W, Hq, Hkv, D, nq, B, cached[4], slots;  // slots 0: W (or, without a window, enough for all)
};

// Host floats of bf16 values, and the bits.
static float random_bf16(uint64_t *rng, float lo, float hi, uint16_t *bits) {
    *bits = f32_to_bf16((float)(lo + (hi - lo) * rng_uniform(rng)));
    return bf16_to_f32(*bits);
}

static __nv_bfloat16 *device_copy(const uint16_t *bits, size_t n) {
    __nv_bfloat16 *d;
    cuda_check(cudaMalloc(&d, n * sizeof(uint16_t) + 16));
    cuda_check(cudaMemcpy(d, bits, n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    return d;
}

// One case's inputs on the host (each sequence's whole q, k, v) and the device.
struct Problem {
    Case c;
    int slots, max_keys;
    float *q[4], *k[4], *v[4];  // per sequence [T_b, H, D] floats
    uint16_t *qn, *kn, *vn, *kc, *vc;  // bits: new rows [B, nq, H, D], caches [B, slots, Hkv, D]
    __nv_bfloat16 *dq, *dkn, *dvn, *dkc, *dvc, *dout;
    int32_t *dpos;
    float *work;
};

static Problem problem_create(const Case &c, uint64_t seed) {
    Problem p;
    memset(&p, 0, sizeof(p));
    p.c = c;
    uint64_t rng = seed;
    int longest = 0;
    for (int b = 0; b < c.B; b++) longest = c.cached[b] > longest ? c.cached[b] : longest;
    p.slots = c.slots ? c.slots : c.W > 0 ? c.W : longest + c.nq;
    size_t nq = (size_t)c.B * c.nq, qd = (size_t)c.Hq * c.D, kd = (size_t)c.Hkv * c.D;
    p.qn = (uint16_t *)xmalloc(nq * qd * 2), p.kn = (uint16_t *)xmalloc(nq * kd * 2), p.vn = (uint16_t *)xmalloc(nq * kd * 2);
    p.kc = (uint16_t *)xmalloc((size_t)c.B * p.slots * kd * 2), p.vc = (uint16_t *)xmalloc((size_t)c.B * p.slots * kd * 2);
    for (size_t x = 0; x < (size_t)c.B * p.slots * kd; x++) p.kc[x] = p.vc[x] = 0x7FC0;  // NaN: never written
    for (int b = 0; b < c.B; b++) {
        int T = c.cached[b] + c.nq;
        p.q[b] = (float *)xmalloc((size_t)T * qd * 4), p.k[b] = (float *)xmalloc((size_t)T * kd * 4);
        p.v[b] = (float *)xmalloc((size_t)T * kd * 4);
        for (int t = 0; t < T; t++) {
            int i = t - c.cached[b];  // new token i, or cached when < 0
            for (size_t x = 0; x < qd; x++) {
                uint16_t bits;
                p.q[b][t * qd + x] = random_bf16(&rng, -2, 2, &bits);
                if (i >= 0) p.qn[((size_t)b * c.nq + i) * qd + x] = bits;
            }
            for (size_t x = 0; x < kd; x++) {
                uint16_t kb, vb;
                p.k[b][t * kd + x] = random_bf16(&rng, -2, 2, &kb);
                p.v[b][t * kd + x] = random_bf16(&rng, -1, 1, &vb);
                size_t at = i >= 0 ? ((size_t)b * c.nq + i) * kd + x : ((size_t)b * p.slots + t % p.slots) * kd + x;
                (i >= 0 ? p.kn : p.kc)[at] = kb;
                (i >= 0 ? p.vn : p.vc)[at] = vb;
            }
        }
        int keys = c.W > 0 && c.W - 1 + c.nq < T ? c.W - 1 + c.nq : T;  // what its queries see together
        p.max_keys = keys > p.max_keys ? keys : p.max_keys;
    }
    p.dq = device_copy(p.qn, nq * qd), p.dkn = device_copy(p.kn, nq * kd), p.dvn = device_copy(p.vn, nq * kd);
    p.dkc = device_copy(p.kc, (size_t)c.B * p.slots * kd), p.dvc = device_copy(p.vc, (size_t)c.B * p.slots * kd);
    cuda_check(cudaMalloc(&p.dout, nq * qd * 2 + 16));
    cuda_check(cudaMalloc(&p.dpos, (size_t)c.B * sizeof(int32_t)));
    cuda_check(cudaMemcpy(p.dpos, c.cached, (size_t)c.B * sizeof(int32_t), cudaMemcpyHostToDevice));
    cuda_check(cudaMalloc(&p.work, attention_decode_workspace(c.B, c.nq, c.Hq, c.D, p.max_keys) * sizeof(float) + 16));
    return p;
}

static void problem_free(Problem *p) {
    for (int b = 0; b < p->c.B; b++) free(p->q[b]), free(p->k[b]), free(p->v[b]);
    free(p->qn), free(p->kn), free(p->vn), free(p->kc), free(p->vc);
    __nv_bfloat16 *dev[] = {p->dq, p->dkn, p->dvn, p->dkc, p->dvc, p->dout};
    for (__nv_bfloat16 *d : dev) cuda_check(cudaFree(d));
    cuda_check(cudaFree(p->dpos));
    cuda_check(cudaFree(p->work));
}

static void run(Problem *p) {
    const Case &c = p->c;
    attention_decode(p->dout, p->dq, p->dkn, p->dvn, p->dkc, p->dvc, NULL, p->dpos, c.B, c.nq, c.Hq, c.Hkv, c.D,
                     p->slots, c.W, p->max_keys, p->work, 0);
}

// The kernel's output as floats [B, nq, Hq, D].
static float *output(const Problem *p) {
    size_t n = (size_t)p->c.B * p->c.nq * p->c.Hq * p->c.D;
    uint16_t *bits = (uint16_t *)xmalloc(n * 2);
    float *out = (float *)xmalloc(n * 4);
    cuda_check(cudaMemcpy(bits, p->dout, n * 2, cudaMemcpyDeviceToHost));
    for (size_t x = 0; x < n; x++) out[x] = bf16_to_f32(bits[x]);
    free(bits);
    return out;
}

// Mismatches of one case: the kernel against the reference within the bound, the
// reference against the exact values.
static int check_case(const Case &c, uint64_t seed) {
    Problem p = problem_create(c, seed);
    run(&p);
    float *got = output(&p);
    int bad = 0, ref_bad = 0;
    double worst = 0, *exact = (double *)xmalloc((size_t)c.D * 8), *tol = (double *)xmalloc((size_t)c.D * 8);
    for (int b = 0; b < c.B; b++) {
        int T = c.cached[b] + c.nq;
        float *ref = (float *)xmalloc((size_t)T * c.Hq * c.D * 4), *lse = (float *)xmalloc((size_t)T * c.Hq * 4);
        int32_t *seg = (int32_t *)xcalloc((size_t)T, 4);
        attention_forward(p.q[b], p.k[b], p.v[b], seg, T, c.Hq, c.Hkv, c.D, c.W, ref, lse);
        for (int i = 0; i < c.nq; i++)
            for (int h = 0; h < c.Hq; h++) {
                int t = c.cached[b] + i;
                attention_decode_bounds(exact, tol, p.q[b], p.k[b], p.v[b], t, h, c.Hq, c.Hkv, c.D, c.W);
                for (int d = 0; d < c.D; d++) {
                    float g = got[(((size_t)b * c.nq + i) * c.Hq + h) * c.D + d], r = ref[((size_t)t * c.Hq + h) * c.D + d];
                    double e = fabs((double)g - r);
                    worst = tol[d] > 0 && e / tol[d] > worst ? e / tol[d] : worst;
                    if (!(e <= tol[d]) && bad++ < 3)
                        printf("  W %d %d/%d D %d nq %d, cached %d: token %d head %d [%d]: kernel %.7g, reference %.7g, "
                               "tolerance %.3g\n", c.W, c.Hq, c.Hkv, c.D, c.nq, c.cached[b], i, h, d, g, r, tol[d]);
                    if (!(fabs(r - exact[d]) <= 1e-4 * tol[d] / kAttnU + 1e-5 * fabs(exact[d]) + 1e-6) && ref_bad++ < 3)
                        printf("  reference %.7g, exact %.7g\n", r, exact[d]);
                }
            }
        free(ref), free(lse), free(seg);
    }
    if (getenv("ATTN_VERBOSE")) printf("  W %d %d/%d D %d nq %d: worst error / tolerance %.3f\n", c.W, c.Hq, c.Hkv, c.D, c.nq, worst);
    free(got), free(exact), free(tol);
    problem_free(&p);
    return bad + ref_bad;
}

static const Case kCases[] = {
    {40, 4, 1, 64, 1, 4, {1, 39, 40, 125}, 0},
    {40, 4, 1, 128, 3, 4, {1, 39, 40, 125}, 0},
    {40, 8, 2, 64, 2, 4, {1, 39, 40, 125}, 0},
    {40, 8, 2, 128, 1, 4, {1, 39, 40, 125}, 0},
    {300, 8, 2, 128, 1, 4, {1, 299, 300, 905}, 0},  // two splits per sequence
    {300, 4, 1, 64, 2, 4, {1, 299, 300, 905}, 0},
    {0, 4, 1, 64, 1, 3, {1, 37, 600}, 0},           // no window: three splits for the longest
    {0, 8, 2, 96, 2, 2, {5, 260}, 0},
    {16, 2, 2, 64, 3, 2, {2, 50}, 24},              // more slots than the window
};

TEST(decode_attention_matches_the_full_sequence) {
    uint64_t seed = 500;
    for (const Case &c : kCases) CHECK_INT(check_case(c, seed++), 0);
}

TEST(bits_do_not_depend_on_the_schedule) {
    const uint64_t saved = cuda_host_seed();
    Case c = {300, 8, 2, 64, 1, 2, {40, 905}, 0};
    Problem p = problem_create(c, 9);
    size_t n = (size_t)c.B * c.nq * c.Hq * c.D;
    float *first = NULL;
    for (uint64_t s = 0; s < 3; s++) {
        cuda_host_set_seed(s * 1000003 + 7);
        run(&p);
        float *o = output(&p);
        if (!first) {
            first = o;
            continue;
        }
        CHECK(memcmp(first, o, n * 4) == 0);
        free(o);
    }
    cuda_host_set_seed(saved);
    free(first);
    problem_free(&p);
}

// cache_index: the same caches stored in reverse order, each sequence told where its own is,
// give the same bits; append writes into the indexed cache.
TEST(cache_index_picks_each_sequence_cache) {
    Case c = {40, 8, 2, 64, 2, 4, {1, 39, 40, 125}, 0};
    Problem p = problem_create(c, 21);
    run(&p);
    float *want = output(&p);
    size_t per = (size_t)p.slots * c.Hkv * c.D, n = (size_t)c.B * per;
    uint16_t *rk = (uint16_t *)xmalloc(n * 2), *rv = (uint16_t *)xmalloc(n * 2);
    int32_t index[4];
    for (int b = 0; b < c.B; b++) {
        index[b] = c.B - 1 - b;
        memcpy(rk + (size_t)index[b] * per, p.kc + (size_t)b * per, per * 2);
        memcpy(rv + (size_t)index[b] * per, p.vc + (size_t)b * per, per * 2);
    }
    __nv_bfloat16 *dk = device_copy(rk, n), *dv = device_copy(rv, n);
    int32_t *dindex;
    cuda_check(cudaMalloc(&dindex, sizeof(index)));
    cuda_check(cudaMemcpy(dindex, index, sizeof(index), cudaMemcpyHostToDevice));
    attention_decode(p.dout, p.dq, p.dkn, p.dvn, dk, dv, dindex, p.dpos, c.B, c.nq, c.Hq, c.Hkv, c.D, p.slots, c.W,
                     p.max_keys, p.work, 0);
    float *got = output(&p);
    CHECK(memcmp(got, want, (size_t)c.B * c.nq * c.Hq * c.D * 4) == 0);
    attention_decode_append(dk, dv, p.dkn, p.dvn, dindex, p.dpos, c.B, c.nq, c.Hkv * c.D, p.slots, 0);
    cuda_check(cudaMemcpy(rk, dk, n * 2, cudaMemcpyDeviceToHost));
    int wrong = 0;  // sequence 3's new token 1 (position 126, slot 6) lands in cache 0
    wrong += memcmp(rk + 6 * (size_t)c.Hkv * c.D, p.kn + ((size_t)3 * c.nq + 1) * c.Hkv * c.D, (size_t)c.Hkv * c.D * 2) != 0;
    CHECK_INT(wrong, 0);
    free(want), free(got), free(rk), free(rv);
    cuda_check(cudaFree(dk)), cuda_check(cudaFree(dv)), cuda_check(cudaFree(dindex));
    problem_free(&p);
}

// attention_decode_append writes (b, i) to slot (pos0 + i) mod slots and nothing else.
TEST(append_writes_the_new_slots) {
    Case c = {8, 4, 2, 64, 3, 2, {6, 13}, 0};  // 6 + 0..2 wraps to slot 0; 13 + 0..2 is slots 5..7
    Problem p = problem_create(c, 3);
    attention_decode_append(p.dkc, p.dvc, p.dkn, p.dvn, NULL, p.dpos, c.B, c.nq, c.Hkv * c.D, p.slots, 0);
    size_t kd = (size_t)c.Hkv * c.D, n = (size_t)c.B * p.slots * kd;
    uint16_t *k = (uint16_t *)xmalloc(n * 2), *v = (uint16_t *)xmalloc(n * 2);
    cuda_check(cudaMemcpy(k, p.dkc, n * 2, cudaMemcpyDeviceToHost));
    cuda_check(cudaMemcpy(v, p.dvc, n * 2, cudaMemcpyDeviceToHost));
    int wrong = 0;
    for (int b = 0; b < c.B; b++)
        for (int s = 0; s < p.slots; s++) {
            int i = -1;  // the new token written here, if any
            for (int x = 0; x < c.nq; x++)
                if ((c.cached[b] + x) % p.slots == s) i = x;
            const uint16_t *wk = i >= 0 ? p.kn + ((size_t)b * c.nq + i) * kd : p.kc + ((size_t)b * p.slots + s) * kd;
            const uint16_t *wv = i >= 0 ? p.vn + ((size_t)b * c.nq + i) * kd : p.vc + ((size_t)b * p.slots + s) * kd;
            wrong += memcmp(k + ((size_t)b * p.slots + s) * kd, wk, kd * 2) != 0;
            wrong += memcmp(v + ((size_t)b * p.slots + s) * kd, wv, kd * 2) != 0;
        }
    CHECK_INT(wrong, 0);
    free(k), free(v);
    problem_free(&p);
}

// Bad shapes: a one-line error and exit status 1.
static void with(int Hq, int Hkv, int D, int nq, int window, int slots) {
    __nv_bfloat16 *x;
    float *w;
    int32_t *pos;
    cuda_check(cudaMalloc(&x, 1 << 16));
    cuda_check(cudaMalloc(&w, 1 << 16));
    cuda_check(cudaMalloc(&pos, 16));
    attention_decode(x, x, x, x, x, x, NULL, pos, 1, nq, Hq, Hkv, D, slots, window, 1, w, 0);
}
static void head_dim_80(void) { with(2, 1, 80, 1, 0, 8); }
static void too_many_rows(void) { with(8, 1, 64, 3, 0, 8); }
static void kv_heads_not_dividing(void) { with(6, 4, 64, 1, 0, 8); }
static void window_over_slots(void) { with(4, 1, 64, 1, 16, 8); }

TEST(bad_shapes_are_refused) {
    void (*calls[])(void) = {head_dim_80, too_many_rows, kv_heads_not_dividing, window_over_slots};
    const char *want[] = {"head_dim must be 64, 96 or 128", "must be at most 16", "KV heads must divide",
                          "a rolling cache needs window slots"};
    for (int c = 0; c < 4; c++) {
        char report[4096];
        int status = run_in_child(calls[c], report, sizeof(report));
        CHECK_INT(status, 1);
        if (!strstr(report, want[c])) printf("  stderr was: %s\n", report);
        CHECK(strstr(report, want[c]) != NULL);
    }
}

int main() {
    RUN(decode_attention_matches_the_full_sequence);
    RUN(bits_do_not_depend_on_the_schedule);
    RUN(cache_index_picks_each_sequence_cache);
    RUN(append_writes_the_new_slots);
    RUN(bad_shapes_are_refused);
    return test_summary();
}
