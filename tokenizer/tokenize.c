/*
 * tokenize.c: the `tokenize` command line tool.
 *
 *   ./tokenize --tokenizer FILE [--file IN]        encode the whole input as one string
 *   ./tokenize --tokenizer FILE --lines            encode each line separately
 *   ./tokenize --tokenizer FILE --decode [--lines] ids -> text
 *   ./tokenize --tokenizer FILE --chat CONV.jsonl  ids and loss mask per conversation
 *   ./tokenize --tokenizer FILE --bench            encode throughput, single thread
 *
 * Encoding is mistral-common's `encode(text, bos=False, eos=False)`; ids are printed
 * separated by single spaces, one line per encoded string. Lines are split at "\n" only
 * ("\r" stays part of its line); a final "\n" does not start another line.
 * --chat reads mistral-finetune JSONL (`{"messages": [{"role", "content", "weight"}]}`) and
 * prints one JSON object per conversation: {"ids": [...], "mask": [...]}.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/util.h"
#include "../data/conversation.h"
#include "chat.h"
#include "tokenizer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: tokenize --tokenizer FILE [options]\n"
            "\n"
            "Encodes text with a Mistral tokenizer (SentencePiece tokenizer.model or Tekken\n"
            "tekken.json), token-exact with mistral-common. Reads the input from --file or stdin.\n"
            "\n"
            "  --tokenizer FILE     tokenizer.model[.vN] or tekken.json (required)\n"
            "  --file IN            input file (default: standard input)\n"
            "  --lines              encode (or decode) each line separately, one output line each\n"
            "  --bos, --eos         add the BOS / EOS id around each encoded string\n"
            "  --decode             input is ids separated by whitespace; print the text\n"
            "                       (special tokens dropped, bytes exactly as encoded)\n"
            "  --chat CONV.jsonl    encode conversations with the instruct format; prints one\n"
            "                       {\"ids\": [...], \"mask\": [...]} line per conversation\n"
            "                       (mask 1 = trained token: assistant answers and their EOS)\n"
            "  --chat-format V      v1, v2, v3, v7 or chatml (default: the tokenizer's own)\n"
            "  --bench              time encoding of the input (single thread) and print\n"
            "                       MB/s and tokens/s instead of the ids\n"
            "  --repeat N           repetitions for --bench, each with a fresh tokenizer (default 5)\n"
            "  --info               print what was loaded (family, version, vocab, special ids)\n"
            "  --help               this text\n");
}

typedef struct {
    const char *tokenizer, *file, *chat, *chat_format;
    int lines, bos, eos, decode, bench, info, repeat;
} Options;

static void print_ids(const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
}

static void encode_one(Tokenizer *t, const Options *o, const char *s, size_t n, TokenVec *v) {
    v->len = 0;
    if (o->bos) tokvec_push(v, t->bos_id);
    tokenizer_encode(t, s, n, v);
    if (o->eos) tokvec_push(v, t->eos_id);
}

// Calls fn for each line of text (split at "\n", no empty line after a final "\n").
// With whole == 1 the text is one piece.
typedef int (*LineFn)(void *ctx, const char *s, size_t n, size_t line_no);
static int for_each_line(const char *text, size_t len, int whole, LineFn fn, void *ctx) {
    if (whole) return fn(ctx, text, len, 1);
    size_t line_no = 1;
    for (const char *p = text, *end = text + len; p < end; line_no++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (fn(ctx, p, n, line_no)) return -1;
        p += n + 1;
    }
    return 0;
}

typedef struct {
    Tokenizer *t;
    const Options *o;
    TokenVec ids;
    ByteBuf out;
} EncodeCtx;

static int encode_line(void *ctx, const char *s, size_t n, size_t line_no) {
    (void)line_no;
    EncodeCtx *c = ctx;
    encode_one(c->t, c->o, s, n, &c->ids);
    print_ids(c->ids.ids, c->ids.len);
    return 0;
}

static int decode_line(void *ctx, const char *s, size_t n, size_t line_no) {
    EncodeCtx *c = ctx;
    char err[ERR_LEN];
    c->ids.len = 0;
    for (size_t i = 0; i < n;) {
        while (i < n && strchr(" \t\r\n", s[i])) i++;
        if (i == n) break;
        size_t start = i;
        while (i < n && !strchr(" \t\r\n", s[i])) i++;
        char word[32];
        size_t wl = i - start;
        if (wl >= sizeof(word)) wl = sizeof(word) - 1;
        memcpy(word, s + start, wl);
        word[wl] = '\0';
        char *end;
        errno = 0;
        long id = strtol(word, &end, 10);
        if (*end || errno || i - start >= sizeof(word) || id < INT32_MIN || id > INT32_MAX) {
            fprintf(stderr, "error: %s:%zu: '%s' is not a token id\n", c->o->file, line_no, word);
            return -1;
        }
        tokvec_push(&c->ids, (int32_t)id);
    }
    c->out.len = 0;
    if (tokenizer_decode(c->t, c->ids.ids, c->ids.len, &c->out, err)) {
        fprintf(stderr, "error: %s:%zu: %s\n", c->o->file, line_no, err);
        return -1;
    }
    if (c->out.len) fwrite(c->out.data, 1, c->out.len, stdout);
    if (c->o->lines) putchar('\n');
    return 0;
}

// One conversation line of --chat. Returns -1 after printing file:line: reason.
static int chat_line(Tokenizer *t, ChatFormat f, const char *path, size_t line_no, const char *s,
                     size_t n, Conversation *conv, TokenVec *ids, ByteBuf *mask) {
    char err[ERR_LEN];
    if (conversation_parse(conv, s, n, err)) {
        fprintf(stderr, "error: %s:%zu: %s\n", path, line_no, err);
        return -1;
    }
    if (conv->kind != CONV_CHAT) {
        fprintf(stderr, "error: %s:%zu: no \"messages\" array (a \"text\" line is not a conversation)\n", path, line_no);
        return -1;
    }
    ids->len = mask->len = 0;
    if (chat_encode(t, f, conv->msgs, conv->n, ids, mask, err)) {
        fprintf(stderr, "error: %s:%zu: %s\n", path, line_no, err);
        return -1;
    }
    printf("{\"ids\": [");
    for (size_t i = 0; i < ids->len; i++) printf(i ? ", %d" : "%d", ids->ids[i]);
    printf("], \"mask\": [");
    for (size_t i = 0; i < mask->len; i++) printf(i ? ", %d" : "%d", mask->data[i]);
    printf("]}\n");
    return 0;
}

static int run_chat(Tokenizer *t, const Options *o) {
    ChatFormat f = chat_format_for(t);
    if (o->chat_format && chat_format_parse(o->chat_format, &f)) {
        fprintf(stderr, "error: --chat-format '%s': expected v1, v2, v3, v7 or chatml\n", o->chat_format);
        return 1;
    }
    char err[ERR_LEN];
    size_t len;
    char *text = read_file(o->chat, &len, err);
    if (!text) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    Conversation conv = {0};
    TokenVec ids = {0};
    ByteBuf mask = {0};
    int rc = 0;
    size_t line_no = 1;
    for (const char *p = text, *end = text + len; p < end && rc == 0; line_no++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        size_t blank = 0;
        while (blank < n && strchr(" \t\r", p[blank])) blank++;
        if (blank < n) rc = chat_line(t, f, o->chat, line_no, p, n, &conv, &ids, &mask);
        p += n + 1;
    }
    conversation_free(&conv);
    tokvec_free(&ids);
    bytebuf_free(&mask);
    free(text);
    return rc ? 1 : 0;
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Times encoding of the input. Each repetition loads a fresh tokenizer (untimed), so the
// word cache starts cold every time and the numbers are those of a single pass.
static int run_bench(const Options *o, const char *text, size_t len) {
    char err[ERR_LEN];
    int reps = o->repeat > 0 ? o->repeat : 5;
    double *secs = xmalloc((size_t)reps * sizeof(double));
    size_t tokens = 0;
    Tokenizer t;
    for (int r = 0; r < reps; r++) {
        if (tokenizer_load(&t, o->tokenizer, err)) {
            fprintf(stderr, "error: %s\n", err);
            free(secs);
            return 2;
        }
        EncodeCtx c = {&t, o, {0}, {0}};
        size_t total = 0;
        double t0 = seconds_now();
        if (o->lines) {
            for (const char *p = text, *end = text + len; p < end;) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
                encode_one(&t, o, p, n, &c.ids);
                total += c.ids.len;
                p += n + 1;
            }
        } else {
            encode_one(&t, o, text, len, &c.ids);
            total = c.ids.len;
        }
        secs[r] = seconds_now() - t0;
        tokens = total;
        tokvec_free(&c.ids);
        tokenizer_free(&t);
    }
    qsort(secs, (size_t)reps, sizeof(double), cmp_double);
    double med = secs[reps / 2];
    printf("bench: %s, %zu bytes, %zu tokens, %s, %d runs (cold cache each)\n", o->tokenizer,
           len, tokens, o->lines ? "line by line" : "whole input as one string", reps);
    printf("bench: median %.4f s  %.2f MB/s  %.0f tokens/s  (best %.2f MB/s)\n", med,
           (double)len / med / 1e6, (double)tokens / med, (double)len / secs[0] / 1e6);
    free(secs);
    return 0;
}

static int parse_args(int argc, char **argv, Options *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); exit(0); }
        else if (!strcmp(a, "--lines")) o->lines = 1;
        else if (!strcmp(a, "--bos")) o->bos = 1;
        else if (!strcmp(a, "--eos")) o->eos = 1;
        else if (!strcmp(a, "--decode")) o->decode = 1;
        else if (!strcmp(a, "--bench")) o->bench = 1;
        else if (!strcmp(a, "--info")) o->info = 1;
        else if (!strcmp(a, "--tokenizer") && has_value) o->tokenizer = argv[++i];
        else if (!strcmp(a, "--file") && has_value) o->file = argv[++i];
        else if (!strcmp(a, "--chat") && has_value) o->chat = argv[++i];
        else if (!strcmp(a, "--chat-format") && has_value) o->chat_format = argv[++i];
        else if (!strcmp(a, "--repeat") && has_value) o->repeat = atoi(argv[++i]);
        else {
            fprintf(stderr, "error: unknown option or missing value: %s (see --help)\n", a);
            return -1;
        }
    }
    if (!o->tokenizer) {
        fprintf(stderr, "error: --tokenizer FILE is required (see --help)\n");
        return -1;
    }
    if (o->decode + o->bench + (o->chat != NULL) > 1) {
        fprintf(stderr, "error: --decode, --bench and --chat exclude each other\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    Options o = {.file = "-"};
    if (parse_args(argc, argv, &o)) return 1;
    char err[ERR_LEN];
    Tokenizer t;
    if (tokenizer_load(&t, o.tokenizer, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (o.info) {
        printf("%s: %s v%d, %d ids, bos %d, eos %d, unk %d, pad %d, chat format %s\n", o.tokenizer,
               t.kind == TOKENIZER_TEKKEN ? "tekken" : t.kind == TOKENIZER_BYTELEVEL ? "byte-level BPE" : "sentencepiece", t.version, t.vocab_size,
               t.bos_id, t.eos_id, t.unk_id, t.pad_id, chat_format_name(chat_format_for(&t)));
    } else if (o.chat) {
        rc = run_chat(&t, &o);
    } else {
        size_t len;
        char *text = read_file(o.file, &len, err);
        if (!text) {
            fprintf(stderr, "error: %s\n", err);
            rc = 1;
        } else if (o.bench) {
            rc = run_bench(&o, text, len);
        } else {
            EncodeCtx c = {&t, &o, {0}, {0}};
            rc = for_each_line(text, len, !o.lines, o.decode ? decode_line : encode_line, &c) ? 1 : 0;
            tokvec_free(&c.ids);
            bytebuf_free(&c.out);
        }
        free(text);
    }
    tokenizer_free(&t);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "error: writing output: %s\n", strerror(errno));
        rc = 2;
    }
    return rc;
}
