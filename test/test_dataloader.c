// test_dataloader.c: packing, epochs, ranks, source weights, resume and evaluation
// (data/dataloader.h), checked as properties of the batches.
//
// The shards are synthetic and every token says where it comes from: token k of
// conversation j of source s is id s * SOURCE_IDS + j * 64 + k + 1. So from any batch
// position the test knows the conversation and the offset of the input and the target,
// and checks, without repeating the loader's logic:
//   - a segment never crosses a conversation: all its pairs belong to one conversation,
//     are consecutive, target = the next token of that conversation, weight = its mask;
//   - positions restart at 0 in every segment and count up; segment ids count up in a row;
//   - no segment without a trained target; training rows have no padding;
//   - each fetched conversation is delivered whole (its pairs 0..L-2 in order, across
//     rows), except that pieces without a target are skipped;
//   - for R = 1, 2, 3 ranks the first epoch's conversations of the ranks are disjoint and
//     cover the source exactly, and so does the second epoch's, in another order;
//   - sources are sampled in the ratio of their weights (binomial tolerance);
//   - a state saved mid-epoch and mid-conversation, restored into a fresh loader, gives
//     the same batches bit for bit; a state of another configuration is refused;
//   - evaluation walks every conversation once, in order, split across ranks, and pads.
#include <math.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "../data/dataloader.h"
#include "test.h"

#define SOURCE_IDS 4096  // ids per source: 64 conversations x 64 tokens
#define VOCAB (4 * SOURCE_IDS)
#define FINGERPRINT 0xfeedULL

static char dir[256];

typedef enum { ALL_TRAINED, SOME_UNTRAINED } MaskKind;

static int conv_len(int j) { return 2 + (j * 7) % 19; }  // 2..20 tokens

// mask of token k of conversation j: BOS never; with SOME_UNTRAINED, every 4th
// conversation is not trained at all and every 3rd only on its odd tokens.
static int conv_mask(MaskKind kind, int j, int k) {
    if (k == 0) return 0;
    if (kind == ALL_TRAINED) return 1;
    if (j % 4 == 1) return 0;
    if (j % 3 == 0) return k % 2;
    return 1;
}

static char *shard_name(int source) {
    static char path[4][512];
    snprintf(path[source], sizeof(path[source]), "%s/src%d.bin", dir, source);
    return path[source];
}

static void write_source(int source, int n_conv, MaskKind kind, double weight) {
    ShardWriter w;
    char err[ERR_LEN];
    ShardHeader h = {.vocab_size = VOCAB, .fingerprint = FINGERPRINT, .chat_format = 3, .weight = weight};
    snprintf(h.source, sizeof(h.source), "src%d", source);
    if (shard_writer_open(&w, shard_name(source), &h, err)) { printf("  %s\n", err); exit(1); }
    for (int j = 0; j < n_conv; j++) {
        int32_t ids[64];
        uint8_t mask[64];
        for (int k = 0; k < conv_len(j); k++) {
            ids[k] = source * SOURCE_IDS + j * 64 + k + 1;
            mask[k] = (uint8_t)conv_mask(kind, j, k);
        }
        if (shard_writer_add(&w, ids, mask, (size_t)conv_len(j), err)) { printf("  %s\n", err); exit(1); }
    }
    if (shard_writer_finish(&w, err) || shard_writer_commit(&w, err)) { printf("  %s\n", err); exit(1); }
    shard_writer_close(&w);
}

typedef struct {
    int source, conv, k;  // k: the input token's offset in its conversation
} Where;

static Where where(int32_t id) {
    id -= 1;
    return (Where){id / SOURCE_IDS, (id % SOURCE_IDS) / 64, id % 64};
}

// A piece of one conversation as it appeared in a batch.
typedef struct {
    int source, conv, first, n;  // pairs [first, first + n)
} Piece;

typedef struct {
    Piece *p;
    size_t n, cap;
} Pieces;

static void pieces_push(Pieces *ps, Piece p) {
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 256;
        ps->p = xrealloc(ps->p, ps->cap * sizeof(Piece));
    }
    ps->p[ps->n++] = p;
}

// Checks every per-position property of a batch and appends its segments to out.
// kinds[s]: the mask kind of source s. Returns the number of failed checks.
static int check_batch(const Batch *b, const MaskKind *kinds, int allow_padding, Pieces *out) {
    int bad = 0;
    int64_t trained = 0;
    for (int r = 0; r < b->B; r++) {
        int32_t next_segment = r * b->T;  // segment ids are distinct across the rows
        for (int t = 0; t < b->T;) {
            size_t at = (size_t)r * (size_t)b->T + (size_t)t;
            if (b->segments[at] < 0) {  // padding: to the end of the row
                if (!allow_padding) { printf("  row %d: padding at %d in a training batch\n", r, t); return bad + 1; }
                for (; t < b->T; t++) {
                    at = (size_t)r * (size_t)b->T + (size_t)t;
                    if (b->segments[at] != -1 - r || b->weights[at] != 0 || b->inputs[at] || b->targets[at] || b->positions[at]) {
                        printf("  row %d position %d: padding is not zero\n", r, t);
                        return bad + 1;
                    }
                }
                break;
            }
            if (b->segments[at] != next_segment) { printf("  row %d: segment %d, expected %d\n", r, b->segments[at], next_segment); return bad + 1; }
            Where w0 = where(b->inputs[at]);
            int n = 0, any = 0;
            for (; t < b->T && b->segments[(size_t)r * b->T + t] == next_segment; t++, n++) {
                at = (size_t)r * (size_t)b->T + (size_t)t;
                Where wi = where(b->inputs[at]), wt = where(b->targets[at]);
                int ok = wi.source == w0.source && wi.conv == w0.conv && wi.k == w0.k + n &&
                         wt.source == wi.source && wt.conv == wi.conv && wt.k == wi.k + 1 &&
                         wt.k < conv_len(wi.conv) && b->positions[at] == n &&
                         b->weights[at] == (float)conv_mask(kinds[wi.source], wi.conv, wt.k);
                if (!ok) {
                    printf("  row %d position %d: input %d target %d position %d weight %g breaks segment %d (conversation %d.%d from %d)\n",
                           r, t, b->inputs[at], b->targets[at], b->positions[at], b->weights[at], next_segment, w0.source, w0.conv, w0.k);
                    return bad + 1;
                }
                any |= b->weights[at] > 0;
                trained += b->weights[at] > 0;
            }
            if (!any) { printf("  row %d: segment %d has no trained target\n", r, next_segment); bad++; }
            if (out) pieces_push(out, (Piece){w0.source, w0.conv, w0.k, n});
            next_segment++;
        }
    }
    if (trained != b->n_trained) { printf("  n_trained %lld, counted %lld\n", (long long)b->n_trained, (long long)trained); bad++; }
    return bad;
}

// Turns the pieces into the sequence of fetched conversations, checking that each is
// delivered whole and in order (ALL_TRAINED sources: no piece is ever skipped).
static int fetched_conversations(const Pieces *ps, int *order, int max) {
    int n = 0, bad = 0;
    for (size_t i = 0; i < ps->n && n < max; i++) {
        const Piece *p = &ps->p[i];
        if (p->first == 0) {  // a new conversation starts
            if (i > 0 && ps->p[i - 1].first + ps->p[i - 1].n != conv_len(ps->p[i - 1].conv) - 1) bad++;
            order[n++] = p->source * 64 + p->conv;
        } else if (i == 0 || ps->p[i - 1].source != p->source || ps->p[i - 1].conv != p->conv ||
                   ps->p[i - 1].first + ps->p[i - 1].n != p->first) {
            bad++;
        }
    }
    if (bad) printf("  %d conversations not delivered whole and in order\n", bad);
    return bad ? -1 : n;
}

static LoaderConfig config(int B, int T, int rank, int world) {
    return (LoaderConfig){.batch = B, .seq_len = T, .seed = 1234, .rank = rank, .world = world, .fingerprint = FINGERPRINT};
}

TEST(packing_properties) {
    const MaskKind kinds[] = {SOME_UNTRAINED};
    write_source(0, 40, SOME_UNTRAINED, 1.0);
    const char *paths[] = {shard_name(0)};
    LoaderConfig cfg = config(3, 16, 0, 1);
    char err[ERR_LEN];
    Dataloader *dl = dataloader_open(paths, 1, &cfg, err);
    if (!dl) { printf("  %s\n", err); CHECK(0); return; }
    Batch b;
    batch_init(&b, 3, 16);
    Pieces ps = {0};
    for (int i = 0; i < 60; i++) {
        CHECK_INT(dataloader_next(dl, &b, err), 0);
        CHECK_INT(check_batch(&b, kinds, 0, &ps), 0);
        CHECK_INT(b.rows, 3);
    }
    // never a conversation without a target; pieces of a conversation follow each other
    int untrained_seen = 0, long_split = 0;
    for (size_t i = 0; i < ps.n; i++) {
        untrained_seen += ps.p[i].conv % 4 == 1;
        long_split += i > 0 && ps.p[i].conv == ps.p[i - 1].conv && ps.p[i].first > ps.p[i - 1].first;
        if (i > 0 && ps.p[i].conv == ps.p[i - 1].conv && ps.p[i].first > ps.p[i - 1].first)
            CHECK(ps.p[i].first >= ps.p[i - 1].first + ps.p[i - 1].n);
    }
    CHECK_INT(untrained_seen, 0);
    CHECK(long_split > 0);  // conversations did cross rows
    free(ps.p);
    batch_free(&b);
    dataloader_close(dl);
}

// Runs a rank until it has fetched `want` conversations; returns them in order.
static int run_rank(const char *const *paths, int n_paths, const MaskKind *kinds, int rank, int world, int *order, int want) {
    LoaderConfig cfg = config(2, 16, rank, world);
    char err[ERR_LEN];
    Dataloader *dl = dataloader_open(paths, n_paths, &cfg, err);
    if (!dl) { printf("  %s\n", err); return -1; }
    Batch b;
    batch_init(&b, 2, 16);
    Pieces ps = {0};
    int got = 0, bad = 0;
    while (got >= 0 && got < want + 1 && !bad) {  // + 1: the last wanted one is complete
        dataloader_next(dl, &b, err);
        bad = check_batch(&b, kinds, 0, &ps);
        got = fetched_conversations(&ps, order, want + 1);
    }
    free(ps.p);
    batch_free(&b);
    dataloader_close(dl);
    return bad ? -1 : got;
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

TEST(ranks_partition_each_epoch) {
    const int N = 23;  // divisible by none of the rank counts
    const MaskKind kinds[] = {ALL_TRAINED};
    write_source(0, N, ALL_TRAINED, 1.0);
    const char *paths[] = {shard_name(0)};
    int first_epoch_r1[64];
    for (int R = 1; R <= 3; R++) {
        int seen[2][64] = {{0}};
        for (int r = 0; r < R; r++) {
            int share = (N - r + R - 1) / R;  // positions r, r + R, ... below N
            int order[200];
            int got = run_rank(paths, 1, kinds, r, R, order, 2 * share);
            CHECK(got >= 2 * share);
            if (got < 2 * share) return;
            for (int e = 0; e < 2; e++)
                for (int i = 0; i < share; i++) seen[e][order[e * share + i]]++;
            if (R == 1) memcpy(first_epoch_r1, order, sizeof(int) * (size_t)N);
            if (R == 1) {  // the second epoch is another permutation
                CHECK(memcmp(order, order + N, sizeof(int) * (size_t)N) != 0);
                int sorted[64];
                memcpy(sorted, order, sizeof(int) * (size_t)N);
                qsort(sorted, (size_t)N, sizeof(int), cmp_int);
                CHECK(memcmp(sorted, order, sizeof(int) * (size_t)N) != 0);  // and shuffled at all
            }
        }
        for (int e = 0; e < 2; e++)
            for (int j = 0; j < N; j++)
                if (seen[e][j] != 1) {
                    printf("  R=%d epoch %d: conversation %d fetched %d times\n", R, e, j, seen[e][j]);
                    CHECK(0);
                }
    }
}

TEST(sources_sampled_by_weight) {
    const MaskKind kinds[] = {ALL_TRAINED, ALL_TRAINED};
    write_source(0, 30, ALL_TRAINED, 3.0);
    write_source(1, 50, ALL_TRAINED, 1.0);
    const char *paths[] = {shard_name(0), shard_name(1)};
    enum { WANT = 2000 };
    int *order = xmalloc(sizeof(int) * (WANT + 1));
    int got = run_rank(paths, 2, kinds, 0, 1, order, WANT);
    CHECK(got >= WANT);
    int from0 = 0;
    for (int i = 0; i < WANT; i++) from0 += order[i] < 64;
    // binomial(2000, 0.75): standard deviation 19.4, so +-5 sd is +-97
    double expect = 0.75 * WANT;
    if (fabs(from0 - expect) > 97) {
        printf("  %d of %d conversations from the weight-3 source, expected about %.0f\n", from0, WANT, expect);
        CHECK(0);
    }
    free(order);
}

static int batch_equal(const Batch *a, const Batch *b) {
    size_t n = (size_t)a->B * (size_t)a->T * 4;
    return !memcmp(a->inputs, b->inputs, n) && !memcmp(a->targets, b->targets, n) && !memcmp(a->weights, b->weights, n) &&
           !memcmp(a->positions, b->positions, n) && !memcmp(a->segments, b->segments, n) && a->n_trained == b->n_trained;
}

TEST(resume_is_bit_exact) {
    write_source(0, 30, SOME_UNTRAINED, 2.0);
    write_source(1, 7, ALL_TRAINED, 1.0);
    const char *paths[] = {shard_name(0), shard_name(1)};
    enum { TOTAL = 40 };
    for (int save_at = 1; save_at < TOTAL; save_at += 6) {
        LoaderConfig cfg = config(2, 12, 1, 2);
        char err[ERR_LEN];
        Dataloader *a = dataloader_open(paths, 2, &cfg, err), *b = dataloader_open(paths, 2, &cfg, err);
        if (!a || !b) { printf("  %s\n", err); CHECK(0); return; }
        Batch ref[TOTAL], x;
        batch_init(&x, 2, 12);
        uint8_t *state = xmalloc(dataloader_state_size(a));
        for (int i = 0; i < TOTAL; i++) {
            if (i == save_at) dataloader_state_save(a, state);
            batch_init(&ref[i], 2, 12);
            dataloader_next(a, &ref[i], err);
        }
        // b has run ahead on its own before the restore: the state replaces everything
        for (int i = 0; i < 5; i++) dataloader_next(b, &x, err);
        CHECK_INT(dataloader_state_restore(b, state, dataloader_state_size(a), err), 0);
        for (int i = save_at; i < TOTAL; i++) {
            dataloader_next(b, &x, err);
            if (!batch_equal(&x, &ref[i])) {
                printf("  saved before batch %d: batch %d differs after the restore\n", save_at, i);
                CHECK(0);
                break;
            }
        }
        for (int i = 0; i < TOTAL; i++) batch_free(&ref[i]);
        batch_free(&x);
        free(state);
        dataloader_close(a);
        dataloader_close(b);
    }
}

TEST(resume_refuses_other_states) {
    write_source(0, 30, ALL_TRAINED, 1.0);
    write_source(1, 7, ALL_TRAINED, 1.0);
    const char *paths[] = {shard_name(0), shard_name(1)};
    LoaderConfig cfg = config(2, 12, 0, 1), other_rank = config(2, 12, 1, 2), other_t = config(2, 16, 0, 1);
    char err[ERR_LEN];
    Dataloader *a = dataloader_open(paths, 2, &cfg, err), *b = dataloader_open(paths, 2, &other_rank, err),
               *c = dataloader_open(paths, 2, &other_t, err), *d = dataloader_open(paths, 1, &cfg, err);
    if (!a || !b || !c || !d) { printf("  %s\n", err); CHECK(0); return; }
    size_t n = dataloader_state_size(a);
    uint8_t *state = xmalloc(n);
    dataloader_state_save(a, state);
    CHECK_INT(dataloader_state_restore(b, state, n, err), -1);
    CHECK_CONTAINS(err, "rank 0 of 1");
    CHECK_INT(dataloader_state_restore(c, state, n, err), -1);
    CHECK_CONTAINS(err, "batch 2 x 12");
    CHECK_INT(dataloader_state_restore(d, state, n, err), -1);
    CHECK_CONTAINS(err, "saved with 2 shards, 1 are open");
    state[40] ^= 1;
    CHECK_INT(dataloader_state_restore(a, state, n, err), -1);
    CHECK_CONTAINS(err, "CRC32 mismatch");
    CHECK_INT(dataloader_state_restore(a, state, n - 1, err), -1);
    free(state);
    // a shard of another size under the same name
    write_source(1, 9, ALL_TRAINED, 1.0);
    Dataloader *e = dataloader_open(paths, 2, &cfg, err);
    n = dataloader_state_size(a);
    state = xmalloc(n);
    dataloader_state_save(a, state);
    CHECK_INT(dataloader_state_restore(e, state, n, err), -1);
    CHECK_CONTAINS(err, "had 7 conversations");
    free(state);
    dataloader_close(a);
    dataloader_close(b);
    dataloader_close(c);
    dataloader_close(d);
    dataloader_close(e);
}

TEST(open_refusals) {
    write_source(0, 2, ALL_TRAINED, 1.0);
    write_source(1, 6, SOME_UNTRAINED, 1.0);
    char err[ERR_LEN];
    const char *paths[] = {shard_name(0)};
    LoaderConfig three = config(2, 8, 0, 3);
    CHECK(dataloader_open(paths, 1, &three, err) == NULL);  // 2 conversations for 3 ranks
    CHECK_CONTAINS(err, "fewer than the 3 ranks");
    LoaderConfig wrong = config(2, 8, 0, 1);
    wrong.fingerprint = 0xbeef;
    CHECK(dataloader_open(paths, 1, &wrong, err) == NULL);
    CHECK_CONTAINS(err, "made with a different tokenizer");
    CHECK_CONTAINS(err, shard_name(0));
    // conversation 1 of 2: only conversation 1 (untrained) and 0 (BOS only, 2 tokens) ...
    ShardWriter w;
    ShardHeader h = {.vocab_size = VOCAB, .fingerprint = FINGERPRINT, .chat_format = 3, .weight = 1};
    char path[512];
    snprintf(path, sizeof(path), "%s/untrained.bin", dir);
    shard_writer_open(&w, path, &h, err);
    int32_t ids[] = {1, 2, 3};
    uint8_t mask[] = {1, 0, 0};  // a mask on the first token trains nothing: it is never a target
    shard_writer_add(&w, ids, mask, 3, err);
    shard_writer_finish(&w, err);
    shard_writer_commit(&w, err);
    shard_writer_close(&w);
    const char *untrained[] = {path};
    LoaderConfig one = config(2, 8, 0, 1);
    CHECK(dataloader_open(untrained, 1, &one, err) == NULL);
    CHECK_CONTAINS(err, "no trained target");
}

TEST(evaluation_walks_in_order_once) {
    const MaskKind kinds[] = {ALL_TRAINED, SOME_UNTRAINED};
    write_source(0, 9, ALL_TRAINED, 1.0);
    write_source(1, 13, SOME_UNTRAINED, 1.0);
    const char *paths[] = {shard_name(0), shard_name(1)};
    for (int R = 1; R <= 3; R++) {
        int seen[2][64] = {{0}};
        for (int r = 0; r < R; r++) {
            LoaderConfig cfg = config(2, 10, r, R);
            char err[ERR_LEN];
            EvalLoader *ev = evalloader_open(paths, 2, &cfg, err);
            if (!ev) { printf("  %s\n", err); CHECK(0); return; }
            Batch b;
            batch_init(&b, 2, 10);
            for (int pass = 0; pass < 2; pass++) {  // the second pass, after a rewind, is the same
                Pieces ps = {0};
                int batches = 0, last_rows = 2;
                while (evalloader_next(ev, &b)) {
                    CHECK_INT(last_rows, 2);  // only the last batch may be short
                    CHECK_INT(check_batch(&b, kinds, 1, &ps), 0);
                    last_rows = b.rows;
                    batches++;
                }
                CHECK_INT(b.rows, 0);
                CHECK_INT(evalloader_next(ev, &b), 0);  // stays done
                // every piece in order: conversation numbers only go up, pairs only forward
                int prev = -1, prev_end = 0;
                for (size_t i = 0; i < ps.n; i++) {
                    int number = ps.p[i].source * 9 + ps.p[i].conv;
                    CHECK(number > prev || (number == prev && ps.p[i].first >= prev_end));
                    if (number != prev && pass == 0) seen[ps.p[i].source][ps.p[i].conv]++;
                    CHECK_INT(number % R, r);
                    prev = number;
                    prev_end = ps.p[i].first + ps.p[i].n;
                }
                CHECK(batches > 0);
                free(ps.p);
                evalloader_rewind(ev);
            }
            batch_free(&b);
            evalloader_close(ev);
        }
        // every conversation with a target was evaluated exactly once, over all ranks
        for (int s = 0; s < 2; s++)
            for (int j = 0; j < (s ? 13 : 9); j++) {
                int want = kinds[s] == ALL_TRAINED || j % 4 != 1;
                if (seen[s][j] != want) {
                    printf("  R=%d: conversation %d.%d evaluated %d times, want %d\n", R, s, j, seen[s][j], want);
                    CHECK(0);
                }
            }
    }
}

// Not a test: `build/test/test_dataloader --bench` measures the loader's speed on a shard
// of realistic conversation lengths (the sanitizer build is several times slower).
static void throughput(void) {
    char path[512];
    snprintf(path, sizeof(path), "%s/big.bin", dir);
    ShardWriter w;
    char err[ERR_LEN];
    ShardHeader h = {.vocab_size = 32768, .fingerprint = FINGERPRINT, .chat_format = 3, .weight = 1};
    CHECK_INT(shard_writer_open(&w, path, &h, err), 0);
    int32_t *ids = xmalloc(4096 * sizeof(int32_t));
    uint8_t *mask = xmalloc(4096);
    uint64_t rng = 7;
    for (int j = 0; j < 2000; j++) {
        size_t n = 50 + rng_below(&rng, 2000);
        for (size_t i = 0; i < n; i++) {
            ids[i] = (int32_t)rng_below(&rng, 32768);
            mask[i] = i > n / 3;
        }
        shard_writer_add(&w, ids, mask, n, err);
    }
    shard_writer_finish(&w, err);
    shard_writer_commit(&w, err);
    shard_writer_close(&w);
    free(ids);
    free(mask);
    const char *paths[] = {path};
    LoaderConfig cfg = config(8, 2048, 0, 1);
    Dataloader *dl = dataloader_open(paths, 1, &cfg, err);
    if (!dl) { printf("  %s\n", err); CHECK(0); return; }
    Batch b;
    batch_init(&b, 8, 2048);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int n = 150;
    for (int i = 0; i < n; i++) dataloader_next(dl, &b, err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("# dataloader: %d batches of 8 x 2048 in %.3f s: %.1fM tokens/s\n", n, secs, n * 8 * 2048 / secs / 1e6);
    batch_free(&b);
    dataloader_close(dl);
}

int main(int argc, char **argv) {
    int bench = argc > 1 && strcmp(argv[1], "--bench") == 0;
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/test_dataloader.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        printf("FAIL mkdtemp %s\n", dir);
        return 1;
    }
    if (bench) {
        throughput();
    } else {
        RUN(packing_properties);
        RUN(ranks_partition_each_epoch);
        RUN(sources_sampled_by_weight);
        RUN(resume_is_bit_exact);
        RUN(resume_refuses_other_states);
        RUN(open_refusals);
        RUN(evaluation_walks_in_order_once);
    }
    if (remove_tree(dir)) printf("  could not remove %s\n", dir);
    return bench ? 0 : test_summary();
}
