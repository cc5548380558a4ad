// dataloader.c: packing, source sampling, epochs and resume (see dataloader.h).
#include "dataloader.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

void batch_init(Batch *b, int B, int T) {
    size_t n = (size_t)B * (size_t)T;
    b->B = B;
    b->T = T;
    b->inputs = xcalloc(n, sizeof(int32_t));
    b->targets = xcalloc(n, sizeof(int32_t));
    b->weights = xcalloc(n, sizeof(float));
    b->positions = xcalloc(n, sizeof(int32_t));
    b->segments = xcalloc(n, sizeof(int32_t));
    b->n_trained = 0;
    b->rows = 0;
}

void batch_free(Batch *b) {
    free(b->inputs);
    free(b->targets);
    free(b->weights);
    free(b->positions);
    free(b->segments);
    memset(b, 0, sizeof(*b));
}

// ---- shards and the packer both loaders share ------------------------------------------

// Where packing stands: the conversation being cut into pieces and its next pair.
typedef struct {
    int64_t shard;  // -1: none, take the next conversation
    uint64_t conv, pair;
} Cursor;

// Takes the next conversation for the packer. Returns 0, or 1 when there are no more.
typedef int (*NextConversation)(void *loader, int64_t *shard, uint64_t *conv);

static int open_shards(Shard *shards, const char *const *paths, int n, const LoaderConfig *cfg, char *err) {
    if (n < 1) return set_error(err, "no shards given");
    if (cfg->batch < 1 || cfg->seq_len < 1 || cfg->world < 1 || cfg->rank < 0 || cfg->rank >= cfg->world)
        return set_error(err, "bad loader configuration: batch %d, seq_len %d, rank %d of %d", cfg->batch,
                         cfg->seq_len, cfg->rank, cfg->world);
    for (int i = 0; i < n; i++) {
        if (shard_open(&shards[i], paths[i], cfg->fingerprint, err)) {
            while (i--) shard_close(&shards[i]);
            return -1;
        }
        if (shards[i].h.n_conversations > UINT32_MAX) {  // permutations hold uint32 indices
            set_error(err, "%s: more than 2^32 conversations in one shard", paths[i]);
            while (i >= 0) shard_close(&shards[i--]);
            return -1;
        }
    }
    return 0;
}

// Copies pairs [first, first + n) of a conversation starting at token `start` into row
// positions out[0..n), as one segment.
static void emit(const Shard *s, uint64_t start, uint64_t first, int n, int32_t segment, Batch *b, size_t out) {
    for (int k = 0; k < n; k++) {
        uint64_t i = start + first + (uint64_t)k;
        b->inputs[out + k] = (int32_t)shard_token(s, i);
        b->targets[out + k] = (int32_t)shard_token(s, i + 1);
        b->weights[out + k] = (float)s->mask[i + 1];
        b->positions[out + k] = k;
        b->segments[out + k] = segment;
        b->n_trained += s->mask[i + 1];
    }
}

// Fills b row by row, as dataloader.h describes. Returns 0 when full, or 1 if `next` ran
// out (the rest of b is padding).
static int pack(const Shard *shards, Cursor *cur, Batch *b, NextConversation next, void *loader) {
    b->n_trained = 0;
    b->rows = 0;
    int out_of_data = 0;
    for (int row = 0; row < b->B; row++) {
        size_t base = (size_t)row * (size_t)b->T;
        int t = 0;
        int32_t segment = row * b->T;  // distinct across rows: see dataloader.h
        while (t < b->T && !out_of_data) {
            if (cur->shard < 0) {
                if (next(loader, &cur->shard, &cur->conv)) {
                    out_of_data = 1;
                    break;
                }
                cur->pair = 0;
            }
            const Shard *s = &shards[cur->shard];
            uint64_t start = s->index[cur->conv], pairs = s->index[cur->conv + 1] - start - 1;
            uint64_t left = pairs - cur->pair;
            int n = left < (uint64_t)(b->T - t) ? (int)left : b->T - t;
            const uint8_t *m = s->mask + start + cur->pair + 1;
            int trained = 0;
            for (int k = 0; k < n && !trained; k++) trained = m[k];
            if (trained) {
                emit(s, start, cur->pair, n, segment++, b, base + (size_t)t);
                t += n;
            }
            cur->pair += (uint64_t)n;
            if (cur->pair == pairs) cur->shard = -1;
        }
        if (t > 0) b->rows = row + 1;
        for (; t < b->T; t++) {
            b->inputs[base + t] = b->targets[base + t] = b->positions[base + t] = 0;
            b->weights[base + t] = 0.0f;
            b->segments[base + t] = -1 - row;
        }
    }
    return out_of_data;
}

// ---- training --------------------------------------------------------------------------

typedef struct {
    uint32_t *order;         // this epoch's permutation of the source's conversations
    uint64_t epoch, cursor;  // this rank's next conversation is order[rank + cursor * world]
} SourceState;

struct Dataloader {
    LoaderConfig cfg;
    int n;
    Shard *shards;
    SourceState *src;
    double *cumulative;  // cumulative sampling probabilities; the last is 1
    uint64_t rng;        // source sampling
    Cursor cur;
};

// The permutation of source s for an epoch depends on (seed, s, epoch) only, so every
// rank draws the same one and a restored state recomputes it.
static void shuffle_epoch(Dataloader *dl, int s) {
    SourceState *st = &dl->src[s];
    uint32_t n = (uint32_t)dl->shards[s].h.n_conversations;
    for (uint32_t i = 0; i < n; i++) st->order[i] = i;
    uint64_t rng = dl->cfg.seed ^ (0x5851F42D4C957F2DULL * ((uint64_t)s + 1)) ^ (0x2545F4914F6CDD1DULL * (st->epoch + 1));
    for (uint32_t i = n; i > 1; i--) {  // Fisher-Yates
        uint32_t j = (uint32_t)rng_below(&rng, i);
        uint32_t tmp = st->order[i - 1];
        st->order[i - 1] = st->order[j];
        st->order[j] = tmp;
    }
}

static int train_next(void *loader, int64_t *shard, uint64_t *conv) {
    Dataloader *dl = loader;
    double u = rng_uniform(&dl->rng);
    int s = 0;
    while (s < dl->n - 1 && u >= dl->cumulative[s]) s++;
    SourceState *st = &dl->src[s];
    uint64_t pos = (uint64_t)dl->cfg.rank + st->cursor * (uint64_t)dl->cfg.world;
    if (pos >= dl->shards[s].h.n_conversations) {  // this rank's share of the epoch is done
        st->epoch++;
        st->cursor = 0;
        shuffle_epoch(dl, s);
        pos = (uint64_t)dl->cfg.rank;
    }
    st->cursor++;
    *shard = s;
    *conv = st->order[pos];
    return 0;
}

static uint64_t seed_for_rank(const LoaderConfig *cfg) {
    uint64_t r = cfg->seed ^ (0x9E3779B97F4A7C15ULL * ((uint64_t)cfg->rank + 1));
    rng_next(&r);
    return r;
}

Dataloader *dataloader_open(const char *const *paths, int n_paths, const LoaderConfig *cfg, char *err) {
    Shard *shards = xcalloc((size_t)(n_paths > 0 ? n_paths : 1), sizeof(Shard));
    if (open_shards(shards, paths, n_paths, cfg, err)) {
        free(shards);
        return NULL;
    }
    Dataloader *dl = xcalloc(1, sizeof(Dataloader));
    dl->cfg = *cfg;
    dl->n = n_paths;
    dl->shards = shards;
    dl->src = xcalloc((size_t)n_paths, sizeof(SourceState));
    dl->cumulative = xcalloc((size_t)n_paths, sizeof(double));
    double total = 0;
    uint64_t trained = 0;
    for (int s = 0; s < n_paths; s++) total += shards[s].h.weight;
    for (int s = 0; s < n_paths; s++) {
        const ShardHeader *h = &shards[s].h;
        // a conversation's first token is never a target, whatever its mask says
        trained += h->n_trained;
        for (uint64_t j = 0; j < h->n_conversations; j++) trained -= shards[s].mask[shards[s].index[j]];
        if (h->n_conversations < (uint64_t)cfg->world) {
            set_error(err, "%s: %llu conversations, fewer than the %d ranks (every rank needs a share)",
                      shards[s].path, (unsigned long long)h->n_conversations, cfg->world);
            dataloader_close(dl);
            return NULL;
        }
        dl->cumulative[s] = (s ? dl->cumulative[s - 1] : 0) + h->weight / total;
        dl->src[s].order = xmalloc(h->n_conversations * sizeof(uint32_t));
        shuffle_epoch(dl, s);
    }
    dl->cumulative[n_paths - 1] = 1.0;
    if (trained == 0) {
        set_error(err, "%s%s: no trained target in the training shards (every assistant turn has weight 0?)",
                  shards[0].path, n_paths > 1 ? " and the others" : "");
        dataloader_close(dl);
        return NULL;
    }
    dl->rng = seed_for_rank(cfg);
    dl->cur.shard = -1;
    return dl;
}

int dataloader_next(Dataloader *dl, Batch *b, char *err) {
    if (b->B != dl->cfg.batch || b->T != dl->cfg.seq_len)
        return set_error(err, "batch is %d x %d, the loader was opened for %d x %d", b->B, b->T, dl->cfg.batch, dl->cfg.seq_len);
    // Every source has a share on every rank, and some source has a trained token, so each
    // epoch permutation eventually brings one to this rank: the endless stream never stalls.
    pack(dl->shards, &dl->cur, b, train_next, dl);
    return 0;
}

void dataloader_close(Dataloader *dl) {
    if (!dl) return;
    for (int s = 0; s < dl->n; s++) {
        shard_close(&dl->shards[s]);
        free(dl->src[s].order);
    }
    free(dl->shards);
    free(dl->src);
    free(dl->cumulative);
    free(dl);
}

// ---- state -----------------------------------------------------------------------------
// magic "PRSNLDST", u32 version 1, u32 sources, u64 seed, u32 rank, u32 world, u32 batch,
// u32 seq_len, u64 rng, i64 cursor shard, u64 cursor conversation, u64 cursor pair, then per
// source u64 conversations, u64 tokens, u64 epoch, u64 position; last u32 CRC32 of the rest.

#define STATE_MAGIC "PRSNLDST"
#define STATE_VERSION 1
#define STATE_FIXED (8 + 4 + 4 + 8 + 4 * 4 + 8 + 8 + 8 + 8)

size_t dataloader_state_size(const Dataloader *dl) { return STATE_FIXED + 32 * (size_t)dl->n + 4; }

static void put(uint8_t **p, const void *v, size_t n) {
    memcpy(*p, v, n);
    *p += n;
}

static void get(const uint8_t **p, void *v, size_t n) {
    memcpy(v, *p, n);
    *p += n;
}

void dataloader_state_save(const Dataloader *dl, uint8_t *buf) {
    uint8_t *p = buf;
    uint32_t u32[6] = {STATE_VERSION, (uint32_t)dl->n, (uint32_t)dl->cfg.rank, (uint32_t)dl->cfg.world,
                       (uint32_t)dl->cfg.batch, (uint32_t)dl->cfg.seq_len};
    put(&p, STATE_MAGIC, 8);
    put(&p, &u32[0], 8);
    put(&p, &dl->cfg.seed, 8);
    put(&p, &u32[2], 16);
    put(&p, &dl->rng, 8);
    put(&p, &dl->cur.shard, 8);
    put(&p, &dl->cur.conv, 8);
    put(&p, &dl->cur.pair, 8);
    for (int s = 0; s < dl->n; s++) {
        put(&p, &dl->shards[s].h.n_conversations, 8);
        put(&p, &dl->shards[s].h.n_tokens, 8);
        put(&p, &dl->src[s].epoch, 8);
        put(&p, &dl->src[s].cursor, 8);
    }
    uint32_t crc = (uint32_t)crc32(0L, buf, (uInt)(p - buf));
    put(&p, &crc, 4);
}

int dataloader_state_restore(Dataloader *dl, const uint8_t *buf, size_t n, char *err) {
    size_t want = dataloader_state_size(dl);
    if (n < 16 || memcmp(buf, STATE_MAGIC, 8)) return set_error(err, "loader state: not a loader state (bad magic)");
    const uint8_t *p = buf + 8;
    uint32_t u32[6];
    get(&p, &u32[0], 8);
    if (u32[0] != STATE_VERSION) return set_error(err, "loader state: version %u, this program reads %d", u32[0], STATE_VERSION);
    if (u32[1] != (uint32_t)dl->n) return set_error(err, "loader state: saved with %u shards, %d are open", u32[1], dl->n);
    if (n != want) return set_error(err, "loader state: %zu bytes, expected %zu", n, want);
    uint32_t crc;
    memcpy(&crc, buf + n - 4, 4);
    if (crc != (uint32_t)crc32(0L, buf, (uInt)(n - 4))) return set_error(err, "loader state: CRC32 mismatch (corrupt)");
    uint64_t seed, rng;
    get(&p, &seed, 8);
    get(&p, &u32[2], 16);
    if (seed != dl->cfg.seed || u32[2] != (uint32_t)dl->cfg.rank || u32[3] != (uint32_t)dl->cfg.world ||
        u32[4] != (uint32_t)dl->cfg.batch || u32[5] != (uint32_t)dl->cfg.seq_len)
        return set_error(err, "loader state: saved with seed %llu, rank %u of %u, batch %u x %u; this loader has seed %llu, rank %d of %d, batch %d x %d",
                         (unsigned long long)seed, u32[2], u32[3], u32[4], u32[5], (unsigned long long)dl->cfg.seed,
                         dl->cfg.rank, dl->cfg.world, dl->cfg.batch, dl->cfg.seq_len);
    Cursor cur;
    get(&p, &rng, 8);
    get(&p, &cur.shard, 8);
    get(&p, &cur.conv, 8);
    get(&p, &cur.pair, 8);
    SourceState *saved = xcalloc((size_t)dl->n, sizeof(SourceState));
    int rc = 0;
    for (int s = 0; s < dl->n && rc == 0; s++) {
        uint64_t convs, tokens;
        get(&p, &convs, 8);
        get(&p, &tokens, 8);
        get(&p, &saved[s].epoch, 8);
        get(&p, &saved[s].cursor, 8);
        const ShardHeader *h = &dl->shards[s].h;
        if (convs != h->n_conversations || tokens != h->n_tokens)
            rc = set_error(err, "loader state: shard %d had %llu conversations and %llu tokens, %s has %llu and %llu", s,
                           (unsigned long long)convs, (unsigned long long)tokens, dl->shards[s].path,
                           (unsigned long long)h->n_conversations, (unsigned long long)h->n_tokens);
        else if (saved[s].cursor > h->n_conversations / (uint64_t)dl->cfg.world + 1)
            rc = set_error(err, "loader state: position %llu is past the end of %s", (unsigned long long)saved[s].cursor, dl->shards[s].path);
    }
    if (rc == 0 && cur.shard >= 0 &&
        (cur.shard >= dl->n || cur.conv >= dl->shards[cur.shard].h.n_conversations ||
         cur.pair + 1 >= dl->shards[cur.shard].index[cur.conv + 1] - dl->shards[cur.shard].index[cur.conv]))
        rc = set_error(err, "loader state: the conversation being packed is outside the shards");
    if (rc == 0) {
        dl->rng = rng;
        dl->cur = cur;
        for (int s = 0; s < dl->n; s++) {
            dl->src[s].epoch = saved[s].epoch;
            dl->src[s].cursor = saved[s].cursor;
            shuffle_epoch(dl, s);
        }
    }
    free(saved);
    return rc;
}

// ---- evaluation ------------------------------------------------------------------------

struct EvalLoader {
    LoaderConfig cfg;
    int n;
    Shard *shards;
    int64_t shard;   // next conversation to consider: (shard, conv), overall number `number`
    uint64_t conv, number;
    Cursor cur;
};

static int eval_next(void *loader, int64_t *shard, uint64_t *conv) {
    EvalLoader *ev = loader;
    for (;;) {
        while (ev->shard < ev->n && ev->conv >= ev->shards[ev->shard].h.n_conversations) {
            ev->shard++;
            ev->conv = 0;
        }
        if (ev->shard >= ev->n) return 1;
        uint64_t number = ev->number++;
        uint64_t c = ev->conv++;
        if (number % (uint64_t)ev->cfg.world == (uint64_t)ev->cfg.rank) {
            *shard = ev->shard;
            *conv = c;
            return 0;
        }
    }
}

EvalLoader *evalloader_open(const char *const *paths, int n_paths, const LoaderConfig *cfg, char *err) {
    Shard *shards = xcalloc((size_t)(n_paths > 0 ? n_paths : 1), sizeof(Shard));
    if (open_shards(shards, paths, n_paths, cfg, err)) {
        free(shards);
        return NULL;
    }
    EvalLoader *ev = xcalloc(1, sizeof(EvalLoader));
    ev->cfg = *cfg;
    ev->n = n_paths;
    ev->shards = shards;
    evalloader_rewind(ev);
    return ev;
}

int evalloader_next(EvalLoader *ev, Batch *b) {
    pack(ev->shards, &ev->cur, b, eval_next, ev);
    return b->rows > 0;
}

void evalloader_rewind(EvalLoader *ev) {
    ev->shard = 0;
    ev->conv = ev->number = 0;
    ev->cur.shard = -1;
}

void evalloader_close(EvalLoader *ev) {
    if (!ev) return;
    for (int s = 0; s < ev->n; s++) shard_close(&ev->shards[s]);
    free(ev->shards);
    free(ev);
}
