/*
 * prep.c: the `prep` program, conversation JSONL -> token shards (data/shard.h).
 *
 *   ./prep --tokenizer FILE --out DIR [options] SOURCE[:WEIGHT] ...   write shards
 *   ./prep --tokenizer FILE --check [options] SOURCE[:WEIGHT] ...     validate, write nothing
 *   ./prep --info [--tokenizer FILE] SHARD ...                        check shards, print headers
 *   ./prep --dump [--tokenizer FILE] SHARD                            ids and masks, one line each
 *
 * Two passes over the input, so that bad input stops the run before anything is written:
 *   1. every line is parsed and checked (data/conversation.h); bad lines are reported as
 *      `file:line: reason`; without --skip-bad any bad line ends the run here (exit 1);
 *   2. the good lines are read again, tokenized with the chat format (tokenizer/chat.h),
 *      put through the length policy and appended to the source's train or val shard.
 * Reading twice costs a JSON parse per line, little next to tokenizing it, and keeps the
 * memory flat whatever the input size.
 *
 * Threads: the main thread reads a source in blocks of whole lines (about 1 MB), hands a
 * round of blocks to the workers (one per --threads, each with its own Conversation and,
 * since a Tokenizer's cache is not shared, its own Tokenizer), and consumes the results
 * in input order: counting, reporting bad lines, choosing train or val, writing. Every
 * decision that depends on order is taken there, so the shards are the same bytes for any
 * number of threads.
 *
 * Validation split: with --val-fraction F each source sends exactly round(F x good lines)
 * of its lines to validation, chosen by selection sampling (Knuth, TAOCP vol. 2, 3.4.2,
 * Algorithm S) with an RNG seeded by --seed and the source's position: every subset of
 * that size is equally likely, as with a seeded shuffle, without holding the lines. Whole
 * lines go one way or the other, so a conversation never straddles the split. With --val
 * FILE those files are the validation set and every good line of the sources is trained
 * on (the two options exclude each other).
 *
 * Length policy (--max-len N, --long): a conversation of more than N tokens is
 *   split     cut between exchanges (an exchange ends with the assistant messages before
 *             the next user or system message) into pieces of <= N tokens, each as long as
 *             it can be, each re-encoded as a conversation of its own that starts with the
 *             conversation's earlier system messages (so every piece keeps its persona);
 *             an exchange longer than N on its own is truncated to N. A long {"text"} line
 *             is cut into chunks of N tokens that overlap by one, so every token is a
 *             target exactly once;
 *   truncate  the first N tokens are kept;
 *   drop      left out.
 * Every case is counted in the report. Without --max-len nothing is cut: the dataloader
 * splits long conversations across rows as mistral-finetune does.
 *
 * Output: DIR/train-NAME.bin and DIR/val-NAME.bin per source (NAME from the file name),
 * each written under a temporary name and all renamed into place once every shard is
 * complete; SIGINT, SIGTERM and SIGHUP remove the temporary files. Progress (bytes,
 * lines/s, ETA) goes to stderr when it is a terminal or the input is over 64 MB; the
 * report goes to stdout.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "../common/util.h"
#include "../tokenizer/chat.h"
#include "../tokenizer/tokenizer.h"
#include "../tokenizer/utf8.h"
#include "conversation.h"
#include "shard.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: prep --tokenizer FILE --out DIR [options] SOURCE[:WEIGHT] ...\n"
            "       prep --tokenizer FILE --check [options] SOURCE[:WEIGHT] ...\n"
            "       prep --info [--tokenizer FILE] SHARD ...\n"
            "       prep --dump [--tokenizer FILE] SHARD\n"
            "\n"
            "Tokenizes mistral-finetune JSONL ({\"messages\": [...]} conversations and {\"text\": ...}\n"
            "lines; .jsonl or .jsonl.gz) into token shards for the trainers: DIR/train-NAME.bin and\n"
            "DIR/val-NAME.bin per source, NAME from the file name. WEIGHT (default 1) sets how often\n"
            "the trainer samples the source, relative to the others.\n"
            "\n"
            "  --tokenizer FILE     tokenizer.model[.vN] or tekken.json (required to build or check)\n"
            "  --out DIR            output directory (created if missing; other files in it are kept)\n"
            "  --check              validate and count everything, write nothing (like\n"
            "                       mistral-finetune's validate_data); exit 1 if a line is bad\n"
            "  --val FILE           validation conversations from FILE (repeatable); with it every\n"
            "                       line of the SOURCEs is trained on, without it --val-fraction\n"
            "                       of each source is held out\n"
            "  --val-fraction F     share of each source's lines held out for validation (default 0.1;\n"
            "                       not with --val)\n"
            "  --seed N             seed of the validation split (default 0)\n"
            "  --chat-format V      v1, v2, v3, v7 or chatml (default: the tokenizer's own)\n"
            "  --system TEXT        default system prompt for conversations that have none\n"
            "  --system-file FILE   the same, read from FILE\n"
            "  --max-len N          longest conversation in tokens (default 0: no limit; the\n"
            "                       dataloader then splits long ones across rows)\n"
            "  --long POLICY        for conversations over --max-len: split (at turn boundaries,\n"
            "                       default), truncate or drop\n"
            "  --skip-bad           leave bad lines out (each is still reported) instead of stopping\n"
            "  --force              replace shards that already exist in DIR\n"
            "  --threads N          tokenizing threads (default: the number of CPUs, at most 8)\n"
            "  --batch B            for --check's estimate of steps per epoch (default 8)\n"
            "  --seq-len T          the same (default 2048)\n"
            "  --info               check shards fully (with --tokenizer: that they were made\n"
            "                       with it) and print their headers\n"
            "  --dump               print a shard's conversations, {\"ids\": [...], \"mask\": [...]}\n"
            "                       per line, as `tokenize --chat` does\n"
            "  --help               this text\n"
            "\n"
            "Bad lines are reported as FILE:LINE: reason. Exit status: 0 success, 1 bad input\n"
            "or usage, 2 runtime failure.\n");
}

enum { LONG_SPLIT, LONG_TRUNCATE, LONG_DROP };
static const char *long_names[] = {"split", "truncate", "drop"};

#define MAX_REASONS 24     // distinct reasons counted per source; the rest are "other"
#define MAX_SHOWN_BAD 100  // bad lines printed in full
#define BLOCK_BYTES (1 << 20)
#define MAX_THREADS 8

// What the length policy did (per block, then summed per source).
typedef struct {
    uint64_t over, split, pieces, truncated, dropped, tokens_cut;
    uint64_t longest, longest_line;  // the longest conversation before the policy
} LengthStats;

typedef struct {
    uint64_t conversations, tokens, trained, pairs;  // pairs: what --check's estimate counts
} SplitStats;

typedef struct {
    const char *path;
    char *path_owned;  // path when it was cut from "path:weight"
    double weight;
    int is_val;        // a --val file: everything goes to validation
    char name[SHARD_NAME_BYTES];
    // pass 1
    uint64_t lines, blank, good, bad, texts;
    char *reason[MAX_REASONS];
    uint64_t reason_count[MAX_REASONS + 1];  // the last: all other reasons
    // pass 2
    uint64_t rng, wanted, seen, taken;  // the validation split (selection sampling)
    SplitStats split[2];                // 0 train, 1 val
    LengthStats length;
    ShardWriter writer[2];
    int has_writer[2];
} Source;

typedef struct {
    const char *tokenizer, *out, *chat_format, *system, *system_file;
    int check, info, dump, skip_bad, force, long_policy, batch, seq_len, threads;
    int val_fraction_given, val_files;
    double val_fraction;
    uint64_t seed;
    long max_len;
    Source *src;
    int n_src;
} Options;

// ---- interrupted runs ------------------------------------------------------------------

// The temporary shard names, so that a signal can remove them before the process dies.
#define MAX_TMP 4096
static char *tmp_paths[MAX_TMP];
static volatile sig_atomic_t n_tmp;

static void on_signal(int sig) {
    for (sig_atomic_t i = 0; i < n_tmp; i++) unlink(tmp_paths[i]);
    signal(sig, SIG_DFL);
    raise(sig);
}

// ---- input lines -----------------------------------------------------------------------

// Lines of a .jsonl or .jsonl.gz file (zlib reads plain files through unchanged).
typedef struct {
    const char *path;
    gzFile gz;
    char *chunk;
    size_t len, pos;
    ByteBuf carry;  // a line that spans chunks
    uint64_t line_no, size;
} LineReader;

#define CHUNK (1 << 20)

static int reader_open(LineReader *r, const char *path, char *err) {
    memset(r, 0, sizeof(*r));
    r->path = path;
    struct stat st;
    if (stat(path, &st)) return set_error(err, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return set_error(err, "%s: not a regular file (input is read twice)", path);
    r->size = (uint64_t)st.st_size;
    r->gz = gzopen(path, "rb");
    if (!r->gz) return set_error(err, "%s: cannot open: %s", path, strerror(errno));
    gzbuffer(r->gz, 1 << 18);
    r->chunk = xmalloc(CHUNK);
    return 0;
}

static void reader_close(LineReader *r) {
    if (r->gz) gzclose(r->gz);
    free(r->chunk);
    bytebuf_free(&r->carry);
    memset(r, 0, sizeof(*r));
}

static uint64_t reader_offset(LineReader *r) { return (uint64_t)gzoffset(r->gz); }

// Sets *s, *n to the next line without its "\n" and returns 1; 0 at the end; -1 on a read
// error (a corrupt or truncated .gz), with err.
static int reader_next(LineReader *r, const char **s, size_t *n, char *err) {
    r->carry.len = 0;
    for (;;) {
        if (r->pos == r->len) {
            int got = gzread(r->gz, r->chunk, CHUNK);
            int errnum = Z_OK;
            const char *msg = gzerror(r->gz, &errnum);
            if (got < 0 || (errnum != Z_OK && errnum != Z_STREAM_END))
                return set_error(err, "%s: read error after line %llu: %s", r->path, (unsigned long long)r->line_no, msg);
            r->len = (size_t)got;
            r->pos = 0;
            if (got == 0) {  // the end; a last line without "\n" is still a line
                if (r->carry.len == 0) return 0;
                r->line_no++;
                *s = r->carry.data;
                *n = r->carry.len;
                return 1;
            }
        }
        char *start = r->chunk + r->pos;
        char *nl = memchr(start, '\n', r->len - r->pos);
        size_t take = nl ? (size_t)(nl - start) : r->len - r->pos;
        r->pos += take + (nl != NULL);
        if (nl && r->carry.len == 0) {  // the common case: the whole line is in the chunk
            r->line_no++;
            *s = start;
            *n = take;
            return 1;
        }
        bytebuf_append(&r->carry, start, take);
        if (nl) {
            r->line_no++;
            *s = r->carry.data;
            *n = r->carry.len;
            return 1;
        }
    }
}

// ---- progress --------------------------------------------------------------------------

typedef struct {
    const char *phase;
    int enabled, tty;
    uint64_t total, done_before, lines;  // done_before: bytes of the files already finished
    double start, last;
} Progress;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void progress_start(Progress *p, const char *phase, uint64_t total) {
    p->phase = phase;
    p->tty = isatty(2);
    p->enabled = p->tty || total > (64u << 20);
    p->total = total;
    p->done_before = p->lines = 0;
    p->start = p->last = now();
}

static void progress_show(Progress *p, uint64_t done, int final) {
    double t = now();
    if (!p->enabled || (!final && t - p->last < (p->tty ? 0.5 : 10.0))) return;
    p->last = t;
    double secs = t - p->start, frac = p->total ? (double)done / (double)p->total : 1.0;
    double eta = frac > 0 ? secs / frac - secs : 0;
    fprintf(stderr, "%sprep: %s %.1f/%.1f MB (%.0f%%), %.0f lines/s, %s %.0fs%s", p->tty ? "\r" : "", p->phase,
            (double)done / 1e6, (double)p->total / 1e6, 100 * frac, secs > 0 ? (double)p->lines / secs : 0.0,
            final ? "took" : "ETA", final ? secs : eta, !p->tty ? "\n" : final ? "\033[K\n" : "\033[K");
}

// ---- blocks of lines and the workers that process them ---------------------------------

enum { LINE_BLANK, LINE_BAD, LINE_CHAT, LINE_TEXT };

// A run of whole lines of one source, and what a worker made of them.
typedef struct {
    ByteBuf text;        // the lines, each followed by '\n'
    uint64_t first_line; // number of the first line in its file
    size_t n_lines;
    uint8_t *status;     // LINE_* per line
    size_t status_cap;
    ByteBuf reasons;     // the bad lines' reasons, each NUL-terminated, in order
    // pass 2: the pieces of the good lines, in order, and their lines (index in the block)
    TokenVec ids;
    ByteBuf mask;
    size_t *piece_len, *piece_line, n_pieces, piece_cap;
    LengthStats length;  // longest_line: index in the block
    int failed;
    uint64_t failed_line;  // 0: the tokenizer failed to load
    char error[ERR_LEN];
} Block;

typedef struct {
    const Options *o;
    int encode;  // pass 2: tokenize the good lines
    Tokenizer tok;
    int tok_loaded;
    ChatFormat format;
    Conversation conv;
    TokenVec ids, best_ids;  // a conversation, and the longest piece that fits (split)
    ByteBuf mask, best_mask;
    ChatMessage *scratch;    // the messages of a piece
    size_t scratch_cap;
    Block block;
    pthread_t thread;
} Worker;

// Appends a piece of the current line to the block.
static void add_piece(Block *b, size_t line, const int32_t *ids, const char *mask, size_t n) {
    if (b->n_pieces == b->piece_cap) {
        b->piece_cap = b->piece_cap ? 2 * b->piece_cap : 256;
        b->piece_len = xrealloc(b->piece_len, b->piece_cap * sizeof(size_t));
        b->piece_line = xrealloc(b->piece_line, b->piece_cap * sizeof(size_t));
    }
    b->piece_len[b->n_pieces] = n;
    b->piece_line[b->n_pieces++] = line;
    if (b->ids.len + n > b->ids.cap) {
        while (b->ids.len + n > b->ids.cap) b->ids.cap = b->ids.cap ? 2 * b->ids.cap : 1 << 16;
        b->ids.ids = xrealloc(b->ids.ids, b->ids.cap * sizeof(int32_t));
    }
    memcpy(b->ids.ids + b->ids.len, ids, n * sizeof(int32_t));
    b->ids.len += n;
    bytebuf_append(&b->mask, mask, n);
}

static int encode_chat(Worker *w, const ChatMessage *msgs, size_t n, TokenVec *ids, ByteBuf *mask, char *err) {
    ids->len = mask->len = 0;
    return chat_encode(&w->tok, w->format, msgs, n, ids, mask, err);
}

// Encodes the messages of exchanges [a, b) of the conversation (starts[k]: index of the
// first message of exchange k, starts[K] = n), after the system messages before exchange a.
static int encode_exchanges(Worker *w, const size_t *starts, size_t a, size_t b, TokenVec *ids, ByteBuf *mask, char *err) {
    const ChatMessage *m = w->conv.msgs;
    size_t n = 0;
    for (size_t k = 0; k < starts[a]; k++)
        if (m[k].role == ROLE_SYSTEM) w->scratch[n++] = m[k];
    for (size_t k = starts[a]; k < starts[b]; k++) w->scratch[n++] = m[k];
    return encode_chat(w, w->scratch, n, ids, mask, err);
}

static void swap_best(Worker *w) {
    TokenVec ids = w->best_ids;
    w->best_ids = w->ids;
    w->ids = ids;
    ByteBuf mask = w->best_mask;
    w->best_mask = w->mask;
    w->mask = mask;
}

// The split policy for a chat conversation (see the header comment): greedy, each piece
// grown by whole exchanges while its encoding fits.
static int split_chat(Worker *w, size_t line, char *err) {
    const Conversation *c = &w->conv;
    Block *b = &w->block;
    if (c->n + 1 > w->scratch_cap) {
        w->scratch_cap = c->n + 1;
        w->scratch = xrealloc(w->scratch, w->scratch_cap * sizeof(ChatMessage));
    }
    size_t *starts = xmalloc((c->n + 1) * sizeof(size_t)), K = 0;
    starts[K++] = 0;
    for (size_t k = 1; k < c->n; k++)
        if (c->msgs[k - 1].role == ROLE_ASSISTANT && c->msgs[k].role != ROLE_ASSISTANT) starts[K++] = k;
    starts[K] = c->n;
    size_t max = (size_t)w->o->max_len;
    int rc = 0;
    for (size_t a = 0, e; a < K && rc == 0; a = e) {
        rc = encode_exchanges(w, starts, a, a + 1, &w->best_ids, &w->best_mask, err);
        for (e = a + 1; e < K && rc == 0; e++) {
            rc = encode_exchanges(w, starts, a, e + 1, &w->ids, &w->mask, err);
            if (w->ids.len > max) break;
            swap_best(w);
        }
        if (rc) break;
        size_t len = w->best_ids.len;
        if (len > max) {  // one exchange alone is too long
            b->length.truncated++;
            b->length.tokens_cut += len - max;
            len = max;
        }
        b->length.pieces++;
        add_piece(b, line, w->best_ids.ids, w->best_mask.data, len);
    }
    free(starts);
    return rc;
}

// A long text line: chunks of max tokens that overlap by one; a chunk's first token is
// not a target in it (it was the target of the chunk before).
static void split_text(Worker *w, size_t line) {
    size_t max = (size_t)w->o->max_len, len = w->ids.len;
    for (size_t from = 0;; from += max - 1) {
        size_t n = len - from < max ? len - from : max;
        char first = w->mask.data[from];
        w->mask.data[from] = 0;
        w->block.length.pieces++;
        add_piece(&w->block, line, w->ids.ids + from, w->mask.data + from, n);
        w->mask.data[from] = first;
        if (from + n == len) return;
    }
}

// Tokenizes the good line `line` of the block (in w->conv) into pieces.
static int encode_line(Worker *w, size_t line, char *err) {
    Conversation *c = &w->conv;
    Block *b = &w->block;
    if (c->kind == CONV_CHAT) {
        if (w->o->system) conversation_default_system(c, w->o->system, strlen(w->o->system));
        if (encode_chat(w, c->msgs, c->n, &w->ids, &w->mask, err)) return -1;
    } else {  // mistral-finetune: encode(text, bos=True, eos=True), every token but BOS trained
        w->ids.len = w->mask.len = 0;
        tokvec_push(&w->ids, w->tok.bos_id);
        tokenizer_encode(&w->tok, c->text, c->text_len, &w->ids);
        tokvec_push(&w->ids, w->tok.eos_id);
        bytebuf_push(&w->mask, 0);
        while (w->mask.len < w->ids.len) bytebuf_push(&w->mask, 1);
    }
    size_t len = w->ids.len, max = (size_t)w->o->max_len;
    if (len > b->length.longest) {
        b->length.longest = len;
        b->length.longest_line = line;
    }
    if (max == 0 || len <= max) {
        add_piece(b, line, w->ids.ids, w->mask.data, len);
        return 0;
    }
    b->length.over++;
    if (w->o->long_policy == LONG_DROP) {
        b->length.dropped++;
        b->length.tokens_cut += len;
    } else if (w->o->long_policy == LONG_TRUNCATE) {
        b->length.truncated++;
        b->length.tokens_cut += len - max;
        add_piece(b, line, w->ids.ids, w->mask.data, max);
    } else {
        b->length.split++;
        if (c->kind == CONV_TEXT) split_text(w, line);
        else return split_chat(w, line, err);
    }
    return 0;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strchr(" \t\r", s[i])) return 0;
    return 1;
}

// Checks (and in pass 2 tokenizes) every line of the worker's block.
static void *process_block(void *arg) {
    Worker *w = arg;
    Block *b = &w->block;
    b->reasons.len = b->ids.len = b->mask.len = b->n_pieces = 0;
    memset(&b->length, 0, sizeof(b->length));
    b->failed = 0;
    b->failed_line = 0;
    if (w->encode && !w->tok_loaded) {  // each worker loads its own, in its own thread
        if (tokenizer_load(&w->tok, w->o->tokenizer, b->error)) {
            b->failed = 1;
            return NULL;
        }
        w->tok_loaded = 1;
    }
    char why[ERR_LEN];
    const char *p = b->text.data;
    for (size_t i = 0; i < b->n_lines; i++) {
        const char *nl = memchr(p, '\n', (size_t)(b->text.data + b->text.len - p));
        size_t n = (size_t)(nl - p);
        if (is_blank(p, n)) {
            b->status[i] = LINE_BLANK;
        } else if (conversation_parse(&w->conv, p, n, why) || conversation_check_finetuning(&w->conv, why)) {
            b->status[i] = LINE_BAD;
            bytebuf_append(&b->reasons, why, strlen(why) + 1);
        } else {
            b->status[i] = w->conv.kind == CONV_TEXT ? LINE_TEXT : LINE_CHAT;
            if (w->encode && encode_line(w, i, b->error)) {  // cannot happen for a checked line
                b->failed = 1;
                b->failed_line = b->first_line + i;
                return NULL;
            }
        }
        p = nl + 1;
    }
    return NULL;
}

// Reads the next block of whole lines (at least one, about BLOCK_BYTES) from r. Returns
// 1, 0 at the end of the file, or -1 with err.
static int read_block(LineReader *r, Block *b, char *err) {
    b->text.len = b->n_lines = 0;
    b->first_line = r->line_no + 1;
    const char *line = NULL;
    size_t n = 0;
    while (b->text.len < BLOCK_BYTES) {
        int rc = reader_next(r, &line, &n, err);
        if (rc < 0) return -1;
        if (rc == 0) break;
        bytebuf_append(&b->text, line, n);
        bytebuf_push(&b->text, '\n');
        if (++b->n_lines > b->status_cap) {
            b->status_cap = 2 * b->n_lines;
            b->status = xrealloc(b->status, b->status_cap);
        }
    }
    return b->n_lines > 0;
}

static void worker_free(Worker *w) {
    if (w->tok_loaded) tokenizer_free(&w->tok);
    conversation_free(&w->conv);
    tokvec_free(&w->ids);
    tokvec_free(&w->best_ids);
    bytebuf_free(&w->mask);
    bytebuf_free(&w->best_mask);
    free(w->scratch);
    Block *b = &w->block;
    bytebuf_free(&b->text);
    bytebuf_free(&b->reasons);
    tokvec_free(&b->ids);
    bytebuf_free(&b->mask);
    free(b->status);
    free(b->piece_len);
    free(b->piece_line);
}

// What the main thread does with a processed block, in input order.
typedef int (*ConsumeFn)(const Options *o, Source *s, const Block *b, uint64_t *shown, char *err);

// Runs one pass over source s: rounds of one block per worker, processed in parallel,
// consumed in order. Returns 0 or -1 with err.
static int run_pass(const Options *o, Source *s, Worker *w, int n_workers, ConsumeFn consume, uint64_t *shown,
                    Progress *pg, char *err) {
    LineReader r;
    if (reader_open(&r, s->path, err)) return -1;
    int rc = 0, more = 1;
    while (more && rc == 0) {
        int k = 0;
        while (k < n_workers && (more = read_block(&r, &w[k].block, err)) == 1) k++;
        if (more < 0) rc = -1;
        // workers 1.. in threads (or here, if no thread can be had), worker 0 here
        int threaded[MAX_THREADS] = {0};
        for (int i = 1; i < k; i++) threaded[i] = pthread_create(&w[i].thread, NULL, process_block, &w[i]) == 0;
        for (int i = 0; i < k; i++)
            if (!threaded[i]) process_block(&w[i]);
        for (int i = 1; i < k; i++)
            if (threaded[i]) pthread_join(w[i].thread, NULL);
        for (int i = 0; i < k && rc == 0; i++) {
            const Block *b = &w[i].block;
            if (b->failed && b->failed_line) rc = set_error(err, "%s:%llu: %s", s->path, (unsigned long long)b->failed_line, b->error);
            else if (b->failed) rc = set_error(err, "%s", b->error);
            else rc = consume(o, s, &w[i].block, shown, err);
            pg->lines += w[i].block.n_lines;
        }
        progress_show(pg, pg->done_before + reader_offset(&r), 0);
    }
    pg->done_before += r.size;
    reader_close(&r);
    return rc;
}

// ---- pass 1: checking ------------------------------------------------------------------

// The reason without its variable parts ("messages[3]: ", " at byte 17", "(...)"), so
// that alike reasons are counted together.
static void reason_key(const char *why, char *key) {
    if (!strncmp(why, "messages[", 9) && strstr(why, "]: ")) why = strstr(why, "]: ") + 3;
    snprintf(key, ERR_LEN, "%s", why);
    static const char *cuts[] = {" at byte ", " (", ": ", "; "};
    for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
        char *cut = strstr(key, cuts[k]);
        if (cut) *cut = '\0';
    }
}

static void count_reason(Source *s, const char *why) {
    char key[ERR_LEN];
    reason_key(why, key);
    int k = 0;
    while (k < MAX_REASONS && s->reason[k] && strcmp(s->reason[k], key)) k++;
    if (k < MAX_REASONS && !s->reason[k]) s->reason[k] = xstrdup(key);
    s->reason_count[k]++;
}

static int consume_checked(const Options *o, Source *s, const Block *b, uint64_t *shown, char *err) {
    (void)o;
    (void)err;
    const char *why = b->reasons.data;
    for (size_t i = 0; i < b->n_lines; i++) {
        s->lines++;
        switch (b->status[i]) {
        case LINE_BLANK: s->blank++; break;
        case LINE_BAD:
            s->bad++;
            count_reason(s, why);
            if ((*shown)++ < MAX_SHOWN_BAD) fprintf(stderr, "%s:%llu: %s\n", s->path, (unsigned long long)(b->first_line + i), why);
            why += strlen(why) + 1;
            break;
        default: s->good++; s->texts += b->status[i] == LINE_TEXT;
        }
    }
    return 0;
}

// ---- pass 2: writing -------------------------------------------------------------------

// Sends each good line's pieces to the train or val shard (selection sampling: the next
// good line goes to validation with probability (wanted - taken) / (good - seen), which
// takes exactly `wanted` lines) and counts them.
static int consume_tokenized(const Options *o, Source *s, const Block *b, uint64_t *shown, char *err) {
    (void)o;
    (void)shown;
    size_t piece = 0, at = 0;
    for (size_t i = 0; i < b->n_lines; i++) {
        if (b->status[i] != LINE_CHAT && b->status[i] != LINE_TEXT) continue;
        int val = s->is_val || (double)(s->wanted - s->taken) > rng_uniform(&s->rng) * (double)(s->good - s->seen);
        s->seen++;
        s->taken += (uint64_t)val;
        for (; piece < b->n_pieces && b->piece_line[piece] == i; at += b->piece_len[piece++]) {
            const int32_t *ids = b->ids.ids + at;
            const char *mask = b->mask.data + at;
            size_t n = b->piece_len[piece];
            SplitStats *st = &s->split[val];
            uint64_t trained = 0;
            for (size_t k = 0; k < n; k++) trained += (uint64_t)mask[k];
            st->conversations++;
            st->tokens += n;
            st->trained += trained;
            if (trained) st->pairs += n - 1;  // the dataloader skips a piece without a target
            if (s->has_writer[val] && shard_writer_add(&s->writer[val], ids, (const uint8_t *)mask, n, err)) return -1;
        }
    }
    LengthStats *l = &s->length;
    if (b->length.longest > l->longest) {
        l->longest = b->length.longest;
        l->longest_line = b->first_line + b->length.longest_line;
    }
    l->over += b->length.over;
    l->split += b->length.split;
    l->pieces += b->length.pieces;
    l->truncated += b->length.truncated;
    l->dropped += b->length.dropped;
    l->tokens_cut += b->length.tokens_cut;
    return 0;
}

// ---- the report ------------------------------------------------------------------------

// Which shards a source gets: train unless it is a --val file; val if it is one, or if a
// fraction of each source is held out (never with --val files: parse_args zeroes it).
static int has_split(const Options *o, const Source *s, int split) {
    return split ? s->is_val || o->val_fraction > 0 : !s->is_val;
}

static void print_split(const char *label, const SplitStats *st) {
    printf("  %-5s %llu conversations, %llu tokens, %llu trained (%.1f%%)\n", label,
           (unsigned long long)st->conversations, (unsigned long long)st->tokens, (unsigned long long)st->trained,
           st->tokens ? 100.0 * (double)st->trained / (double)st->tokens : 0.0);
}

static void add_split(SplitStats *to, const SplitStats *from) {
    to->conversations += from->conversations;
    to->tokens += from->tokens;
    to->trained += from->trained;
    to->pairs += from->pairs;
}

static void print_report(const Options *o, double seconds, uint64_t bytes) {
    SplitStats total[2] = {{0}};
    uint64_t bad = 0, good = 0;
    const Source *longest = NULL;
    for (int i = 0; i < o->n_src; i++) {
        const Source *s = &o->src[i];
        const LengthStats *l = &s->length;
        printf("%s %s (%s, weight %g): %llu lines: %llu good (%llu conversations, %llu text), %llu bad, %llu blank\n",
               s->is_val ? "val" : "source", s->name, s->path, s->weight, (unsigned long long)s->lines,
               (unsigned long long)s->good, (unsigned long long)(s->good - s->texts), (unsigned long long)s->texts,
               (unsigned long long)s->bad, (unsigned long long)s->blank);
        if (s->bad) {
            printf("  bad lines:");
            for (int k = 0; k <= MAX_REASONS; k++)
                if (s->reason_count[k])
                    printf(" %llu %s;", (unsigned long long)s->reason_count[k], k < MAX_REASONS ? s->reason[k] : "other");
            printf("\n");
        }
        for (int split = 0; split < 2; split++)
            if (has_split(o, s, split)) {
                print_split(split ? "val" : "train", &s->split[split]);
                add_split(&total[split], &s->split[split]);
            }
        if (s->good) printf("  longest %llu tokens (%s:%llu)\n", (unsigned long long)l->longest, s->path, (unsigned long long)l->longest_line);
        if (o->max_len)
            printf("  over --max-len %ld: %llu (%llu split into %llu pieces, %llu truncated, %llu dropped; %llu tokens cut)\n",
                   o->max_len, (unsigned long long)l->over, (unsigned long long)l->split, (unsigned long long)l->pieces,
                   (unsigned long long)l->truncated, (unsigned long long)l->dropped, (unsigned long long)l->tokens_cut);
        bad += s->bad;
        good += s->good;
        if (s->good && (!longest || l->longest > longest->length.longest)) longest = s;
    }
    printf("total: %llu good lines, %llu bad\n", (unsigned long long)good, (unsigned long long)bad);
    print_split("train", &total[0]);
    if (total[1].conversations) print_split("val", &total[1]);
    if (longest)
        printf("  longest %llu tokens (%s:%llu)\n", (unsigned long long)longest->length.longest, longest->path,
               (unsigned long long)longest->length.longest_line);
    uint64_t per_step = (uint64_t)o->batch * (uint64_t)o->seq_len;
    printf("steps per epoch: about %llu at --batch %d --seq-len %d (%llu train positions with a target / B x T, for one rank)\n",
           (unsigned long long)((total[0].pairs + per_step - 1) / per_step), o->batch, o->seq_len, (unsigned long long)total[0].pairs);
    if (seconds > 0)
        printf("speed: %.2f s, %.2f MB/s of JSONL, %.0f tokens/s, %d thread%s\n", seconds, (double)bytes / seconds / 1e6,
               (double)(total[0].tokens + total[1].tokens) / seconds, o->threads, o->threads == 1 ? "" : "s");
}

// ---- outputs ---------------------------------------------------------------------------

static void source_name(const char *path, char *name) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    static const char *ext[] = {".jsonl.gz", ".json.gz", ".gz", ".jsonl", ".json"};
    for (size_t k = 0; k < sizeof(ext) / sizeof(ext[0]); k++) {
        size_t e = strlen(ext[k]);
        if (n > e && !strcmp(base + n - e, ext[k])) {
            n -= e;
            break;
        }
    }
    if (n > SHARD_NAME_BYTES - 1) n = SHARD_NAME_BYTES - 1;
    // a file name, so keep it to characters that need no quoting
    for (size_t i = 0; i < n; i++) name[i] = strchr("-_.", base[i]) || (base[i] >= '0' && base[i] <= '9') ||
                                                     ((base[i] | 32) >= 'a' && (base[i] | 32) <= 'z') ? base[i] : '_';
    name[n] = '\0';
}

static char *shard_path(const char *dir, int split, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 16;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s-%s.bin", dir, split ? "val" : "train", name);
    return p;
}

static int open_writers(const Options *o, Source *s, const ShardHeader *meta, char *err) {
    for (int split = 0; split < 2; split++) {
        if (!has_split(o, s, split)) continue;
        ShardHeader h = *meta;
        h.weight = s->weight;
        memcpy(h.source, s->name, SHARD_NAME_BYTES);
        char *path = shard_path(o->out, split, s->name);
        int rc = shard_writer_open(&s->writer[split], path, &h, err);
        free(path);
        if (rc) return -1;
        s->has_writer[split] = 1;
        if (n_tmp < MAX_TMP) {
            tmp_paths[n_tmp] = xstrdup(s->writer[split].tmp_path);
            n_tmp = n_tmp + 1;
        }
    }
    return 0;
}

static void close_writers(Options *o) {
    for (int i = 0; i < o->n_src; i++)
        for (int split = 0; split < 2; split++)
            if (o->src[i].has_writer[split]) shard_writer_close(&o->src[i].writer[split]);
}

// Checks the options that involve files before any work: the output directory and the
// shards that would be replaced, and source names that would collide.
static int check_outputs(const Options *o, char *err) {
    for (int i = 0; i < o->n_src; i++)
        for (int j = 0; j < i; j++)
            if (o->src[i].is_val == o->src[j].is_val && !strcmp(o->src[i].name, o->src[j].name))
                return set_error(err, "%s and %s would both be shard \"%s\" (rename one file)", o->src[j].path, o->src[i].path, o->src[i].name);
    struct stat st;
    if (o->check || (stat(o->out, &st) && errno == ENOENT)) return 0;  // created when there is something to write
    if (stat(o->out, &st) || !S_ISDIR(st.st_mode)) return set_error(err, "%s: not a directory", o->out);
    for (int i = 0; i < o->n_src && !o->force; i++)
        for (int split = 0; split < 2; split++) {
            if (!has_split(o, &o->src[i], split)) continue;
            char *path = shard_path(o->out, split, o->src[i].name);
            int exists = access(path, F_OK) == 0;
            if (exists) set_error(err, "%s exists (--force replaces it)", path);
            free(path);
            if (exists) return -1;
        }
    return 0;
}

static int read_system_prompt(Options *o, char **owned, char *err) {
    if (o->system && o->system_file) return set_error(err, "--system and --system-file exclude each other");
    if (o->system_file) {
        size_t len;
        *owned = read_file(o->system_file, &len, err);
        if (!*owned) return -1;
        if (strlen(*owned) != len) return set_error(err, "%s: contains a NUL byte", o->system_file);
        while (len && strchr("\r\n", (*owned)[len - 1])) (*owned)[--len] = '\0';  // the file's final newline
        o->system = *owned;
    }
    if (o->system && !utf8_valid(o->system, strlen(o->system))) return set_error(err, "default system prompt: invalid UTF-8");
    return 0;
}

// Pass 1 over every source. Returns 0, 1 if lines are bad (or a source has nothing to
// train on), or -1 if a file cannot be read.
static int check_all(Options *o, Worker *w, uint64_t total, uint64_t *bad) {
    char err[ERR_LEN];
    uint64_t shown = 0;
    Progress pg;
    progress_start(&pg, "checking", total);
    for (int i = 0; i < o->n_src; i++)
        if (run_pass(o, &o->src[i], w, o->threads, consume_checked, &shown, &pg, err)) {
            fprintf(stderr, "error: %s\n", err);
            return -1;
        }
    progress_show(&pg, total, 1);
    if (shown > MAX_SHOWN_BAD) fprintf(stderr, "(%llu more bad lines not shown)\n", (unsigned long long)(shown - MAX_SHOWN_BAD));
    int status = 0;
    for (int i = 0; i < o->n_src; i++) {
        *bad += o->src[i].bad;
        if (o->src[i].good == 0 && !o->src[i].is_val) {
            fprintf(stderr, "error: %s: no good line to train on\n", o->src[i].path);
            status = 1;
        }
    }
    return *bad && !o->skip_bad ? 1 : status;
}

// Pass 2: tokenizes every source into its shards (none with --check), then renames the
// shards into place. Returns 0, or 2 after printing the error.
static int tokenize_all(Options *o, Worker *w, const ShardHeader *meta, uint64_t total) {
    char err[ERR_LEN];
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    Progress pg;
    progress_start(&pg, "tokenizing", total);
    for (int i = 0; i < o->threads; i++) w[i].encode = 1;
    int failed = 0;
    if (!o->check && mkdir(o->out, 0755) && errno != EEXIST) failed = set_error(err, "%s: cannot create: %s", o->out, strerror(errno));
    for (int i = 0; i < o->n_src && !failed; i++) {
        Source *s = &o->src[i];
        s->rng = o->seed ^ (0xD1B54A32D192ED03ULL * (uint64_t)(i + 1));
        s->wanted = s->is_val ? s->good : (uint64_t)llround(o->val_fraction * (double)s->good);
        if (!s->is_val && s->wanted == s->good && s->good > 0) s->wanted--;  // keep one line to train on
        failed = (!o->check && open_writers(o, s, meta, err)) || run_pass(o, s, w, o->threads, consume_tokenized, NULL, &pg, err);
        for (int split = 0; split < 2 && !failed; split++)
            if (s->has_writer[split]) failed = shard_writer_finish(&s->writer[split], err);
    }
    progress_show(&pg, total, 1);
    // every shard is complete: only now do they take their real names
    for (int i = 0; i < o->n_src && !failed && !o->check; i++)
        for (int split = 0; split < 2 && !failed; split++)
            if (o->src[i].has_writer[split]) failed = shard_writer_commit(&o->src[i].writer[split], err);
    if (failed) {  // the input passed pass 1, so this is the system's doing (disk, a changed file)
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    return 0;
}

// The configuration, before any work. Returns 0 or -1 after printing the error.
static int print_config(const Options *o, Worker *w0, uint64_t *fingerprint) {
    char err[ERR_LEN];
    ChatMessage probe[] = {{ROLE_USER, "a", 1, -1}, {ROLE_ASSISTANT, "b", 1, -1}};
    if (o->chat_format && chat_format_parse(o->chat_format, &w0->format)) {
        fprintf(stderr, "error: --chat-format '%s': expected v1, v2, v3, v7 or chatml\n", o->chat_format);
        return -1;
    }
    if (shard_fingerprint_file(o->tokenizer, fingerprint, err) ||
        encode_chat(w0, probe, 2, &w0->ids, &w0->mask, err)) {  // does the tokenizer have the format's tokens?
        fprintf(stderr, "error: %s\n", err);
        return -1;
    }
    const Tokenizer *t = &w0->tok;
    printf("prep: %s (%s v%d, %d ids, fingerprint %016llx), chat format %s\n", o->tokenizer,
           t->kind == TOKENIZER_TEKKEN ? "tekken" : t->kind == TOKENIZER_BYTELEVEL ? "byte-level BPE" : "sentencepiece", t->version, t->vocab_size,
           (unsigned long long)*fingerprint, chat_format_name(w0->format));
    printf("prep: %s, max-len %ld%s%s, ", o->check ? "--check (nothing is written)" : o->out, o->max_len,
           o->max_len ? ", long conversations: " : "", o->max_len ? long_names[o->long_policy] : "");
    if (o->val_files) printf("validation from --val files");
    else printf("validation fraction %g, seed %llu", o->val_fraction, (unsigned long long)o->seed);
    printf("%s, %d thread%s\n", o->system ? ", default system prompt set" : "", o->threads, o->threads == 1 ? "" : "s");
    fflush(stdout);
    return 0;
}

// Returns the exit status.
static int run_prep(Options *o) {
    char err[ERR_LEN], *system_owned = NULL;
    Worker *w = xcalloc((size_t)o->threads, sizeof(Worker));
    for (int i = 0; i < o->threads; i++) w[i].o = o;
    if (read_system_prompt(o, &system_owned, err) || check_outputs(o, err) || tokenizer_load(&w[0].tok, o->tokenizer, err)) {
        fprintf(stderr, "error: %s\n", err);
        free(system_owned);
        free(w);
        return 1;
    }
    w[0].tok_loaded = 1;
    w[0].format = chat_format_for(&w[0].tok);
    uint64_t fingerprint = 0, total = 0, bad = 0;
    int status = print_config(o, &w[0], &fingerprint) ? 1 : 0;
    double t0 = now();
    if (status == 0) {
        for (int i = 1; i < o->threads; i++) w[i].format = w[0].format;
        for (int i = 0; i < o->n_src; i++) {
            struct stat st;
            total += stat(o->src[i].path, &st) == 0 ? (uint64_t)st.st_size : 0;
        }
        status = check_all(o, w, total, &bad);
        if (status < 0) status = 1;
        else if (status == 0 || o->check) {  // --check reports on the good lines even if some are bad
            ShardHeader meta = {.vocab_size = (uint32_t)w[0].tok.vocab_size, .fingerprint = fingerprint,
                                .chat_format = (uint32_t)w[0].format};
            int rc = tokenize_all(o, w, &meta, total);
            if (rc) status = rc;
            else print_report(o, now() - t0, total);
        }
        if (status == 0 && !o->check)
            for (int i = 0; i < o->n_src; i++)
                for (int split = 0; split < 2; split++)
                    if (o->src[i].has_writer[split]) printf("wrote %s\n", o->src[i].writer[split].path);
        fflush(stdout);
        if (bad && !o->skip_bad)
            fprintf(stderr, "error: %llu bad line%s; %s (fix them, or --skip-bad leaves them out)\n", (unsigned long long)bad,
                    bad == 1 ? "" : "s", o->check ? "a run would stop before writing" : "nothing written");
        else if (bad)
            fprintf(stderr, "prep: --skip-bad: left out %llu bad line%s\n", (unsigned long long)bad, bad == 1 ? "" : "s");
    }
    close_writers(o);
    for (int i = 0; i < o->threads; i++) worker_free(&w[i]);
    free(w);
    free(system_owned);
    return status;
}

// ---- --info and --dump -----------------------------------------------------------------

static int run_info(const Options *o, char **paths, int n) {
    char err[ERR_LEN];
    uint64_t fingerprint = 0;
    if (o->tokenizer && shard_fingerprint_file(o->tokenizer, &fingerprint, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    int status = 0;
    for (int i = 0; i < n; i++) {
        Shard s;
        if (shard_open(&s, paths[i], fingerprint, err)) {
            fprintf(stderr, "error: %s\n", err);
            status = 1;
            continue;
        }
        const ShardHeader *h = &s.h;
        printf("%s: ok: shard v%u, source \"%s\" weight %g, %llu conversations, %llu tokens, %llu trained, "
               "vocab %u (uint%u), chat format %s, tokenizer fingerprint %016llx%s\n",
               paths[i], h->version, h->source, h->weight, (unsigned long long)h->n_conversations,
               (unsigned long long)h->n_tokens, (unsigned long long)h->n_trained, h->vocab_size, 8 * h->token_bytes,
               chat_format_name((ChatFormat)h->chat_format), (unsigned long long)h->fingerprint,
               fingerprint ? " (matches --tokenizer)" : "");
        shard_close(&s);
    }
    return status;
}

static int run_dump(const Options *o, const char *path) {
    char err[ERR_LEN];
    uint64_t fingerprint = 0;
    Shard s;
    if ((o->tokenizer && shard_fingerprint_file(o->tokenizer, &fingerprint, err)) || shard_open(&s, path, fingerprint, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    for (uint64_t j = 0; j < s.h.n_conversations; j++) {
        printf("{\"ids\": [");
        for (uint64_t i = s.index[j]; i < s.index[j + 1]; i++) printf(i > s.index[j] ? ", %u" : "%u", shard_token(&s, i));
        printf("], \"mask\": [");
        for (uint64_t i = s.index[j]; i < s.index[j + 1]; i++) printf(i > s.index[j] ? ", %u" : "%u", s.mask[i]);
        printf("]}\n");
    }
    shard_close(&s);
    return 0;
}

// ---- command line ----------------------------------------------------------------------

// "path[:weight]": the part after the last ':' is a weight when it reads as a number.
static int parse_source(const char *arg, int is_val, Source *s, char *err) {
    memset(s, 0, sizeof(*s));
    s->weight = 1.0;
    s->is_val = is_val;
    s->path = arg;
    const char *colon = strrchr(arg, ':');
    char *end;
    if (!is_val && colon && colon[1]) {
        double w = strtod(colon + 1, &end);
        if (*end == '\0') {
            if (!(w > 0) || !isfinite(w)) return set_error(err, "%s: the weight must be a number > 0", arg);
            s->weight = w;
            s->path = s->path_owned = strndup(arg, (size_t)(colon - arg));
        }
    }
    source_name(s->path, s->name);
    if (!s->name[0]) return set_error(err, "%s: no file name to call the shard by", arg);
    return 0;
}

static int parse_number(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (*end || errno || !(x >= lo && x <= hi)) {
        fprintf(stderr, "error: %s '%s': expected a number from %g to %g\n", flag, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

// Reads the option at argv[*i] (and its value) into o, a positional argument into pos
// and a --val file into vals. Returns -1 after printing the error.
static int parse_option(char **argv, int argc, int *i, Options *o, char **pos, int *n_pos, char **vals, int *n_vals) {
    const char *a = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    double x;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); exit(0); }
    if (!strcmp(a, "--check")) o->check = 1;
    else if (!strcmp(a, "--info")) o->info = 1;
    else if (!strcmp(a, "--dump")) o->dump = 1;
    else if (!strcmp(a, "--skip-bad")) o->skip_bad = 1;
    else if (!strcmp(a, "--force")) o->force = 1;
    else if (a[0] != '-' || a[1] != '-') pos[(*n_pos)++] = argv[*i];
    else if (!v) {
        fprintf(stderr, "error: unknown option or missing value: %s (see --help)\n", a);
        return -1;
    } else {
        ++*i;  // every option below takes the value v
        if (!strcmp(a, "--tokenizer")) o->tokenizer = v;
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--val")) vals[(*n_vals)++] = argv[*i];
        else if (!strcmp(a, "--chat-format")) o->chat_format = v;
        else if (!strcmp(a, "--system")) o->system = v;
        else if (!strcmp(a, "--system-file")) o->system_file = v;
        else if (!strcmp(a, "--threads")) {
            if (parse_number(a, v, 1, MAX_THREADS, &x)) return -1;
            o->threads = (int)x;
        } else if (!strcmp(a, "--val-fraction")) {
            if (parse_number(a, v, 0, 0.99, &o->val_fraction)) return -1;
            o->val_fraction_given = 1;
        } else if (!strcmp(a, "--seed")) {
            if (parse_number(a, v, 0, 9007199254740992.0, &x)) return -1;
            o->seed = (uint64_t)x;
        } else if (!strcmp(a, "--max-len")) {
            if (parse_number(a, v, 0, 1e12, &x)) return -1;
            if ((x > 0 && x < 2) || x != floor(x)) {
                fprintf(stderr, "error: --max-len '%s': expected 0 (no limit) or a whole number >= 2\n", v);
                return -1;
            }
            o->max_len = (long)x;
        } else if (!strcmp(a, "--batch") || !strcmp(a, "--seq-len")) {
            if (parse_number(a, v, 1, 1 << 24, &x)) return -1;
            *(a[2] == 'b' ? &o->batch : &o->seq_len) = (int)x;
        } else if (!strcmp(a, "--long")) {
            o->long_policy = -1;
            for (int k = 0; k < 3; k++)
                if (!strcmp(v, long_names[k])) o->long_policy = k;
            if (o->long_policy < 0) {
                fprintf(stderr, "error: --long '%s': expected split, truncate or drop\n", v);
                return -1;
            }
        } else {
            fprintf(stderr, "error: unknown option or missing value: %s (see --help)\n", a);
            return -1;
        }
    }
    return 0;
}

// The options that go together. Returns -1 after printing the error.
static int check_modes(const Options *o, int n_pos, int n_vals) {
    const char *why = NULL;
    if (o->info + o->dump + o->check > 1 || ((o->info || o->dump) && o->out)) why = "--check, --info, --dump and --out exclude each other";
    else if (o->info && n_pos < 1) why = "--info needs shard files";
    else if (o->dump && n_pos != 1) why = "--dump needs one shard file";
    else if (o->info || o->dump) return 0;
    else if (!o->tokenizer) why = "--tokenizer FILE is required";
    else if (!o->out && !o->check) why = "--out DIR (or --check) is required";
    else if (n_pos < 1) why = "at least one SOURCE.jsonl is required";
    else if (n_vals && o->val_fraction_given) why = "--val and --val-fraction exclude each other";
    if (!why) return 0;
    fprintf(stderr, "error: %s (see --help)\n", why);
    return -1;
}

// Fills o (and its sources); the positional arguments go to *pos. Returns -1 after
// printing the error.
static int parse_args(int argc, char **argv, Options *o, char ***pos, int *n_pos) {
    *pos = xcalloc((size_t)argc, sizeof(char *));
    char **vals = xcalloc((size_t)argc, sizeof(char *));
    int n_vals = 0, rc = 0;
    for (int i = 1; i < argc && rc == 0; i++) rc = parse_option(argv, argc, &i, o, *pos, n_pos, vals, &n_vals);
    if (rc == 0) rc = check_modes(o, *n_pos, n_vals);
    if (rc == 0 && !o->info && !o->dump) {
        char err[ERR_LEN];
        o->val_files = n_vals > 0;
        if (o->val_files) o->val_fraction = 0;  // the --val files are the whole validation set
        o->n_src = *n_pos + n_vals;
        o->src = xcalloc((size_t)o->n_src, sizeof(Source));
        for (int k = 0; k < o->n_src && rc == 0; k++)
            if (parse_source(k < *n_pos ? (*pos)[k] : vals[k - *n_pos], k >= *n_pos, &o->src[k], err)) {
                fprintf(stderr, "error: %s\n", err);
                rc = -1;
            }
    }
    free(vals);
    return rc;
}

int main(int argc, char **argv) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    Options o = {.val_fraction = 0.1, .batch = 8, .seq_len = 2048, .long_policy = LONG_SPLIT,
                 .threads = cpus < 1 ? 1 : cpus > MAX_THREADS ? MAX_THREADS : (int)cpus};
    char **pos = NULL;
    int n_pos = 0, status;
    if (parse_args(argc, argv, &o, &pos, &n_pos)) status = 1;
    else if (o.info) status = run_info(&o, pos, n_pos);
    else if (o.dump) status = run_dump(&o, pos[0]);
    else status = run_prep(&o);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "error: writing output: %s\n", strerror(errno));
        status = 2;
    }
    for (int i = 0; i < o.n_src; i++) {
        free(o.src[i].path_owned);
        for (int k = 0; k < MAX_REASONS; k++) free(o.src[i].reason[k]);
    }
    for (sig_atomic_t i = 0; i < n_tmp; i++) free(tmp_paths[i]);
    free(o.src);
    free(pos);
    return status;
}
