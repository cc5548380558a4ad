// chat_cli.c: the chat programs' command line, interactive loop and batch mode (see
// chat_cli.h), whatever runs the model.
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/util.h"
#include "chat_batch.h"
#include "chat_cli.h"
#include "chat_session.h"
#include "decode.h"
#include "generate.h"
#include "gguf.h"
#include "model.h"
#include "token_stream.h"

typedef struct {
    const char *model, *adapter, *tokenizer, *weights, *system, *system_file, *batch, *out;
    float temperature, top_p;
    int top_k, max_tokens, threads, slots, seed_given;
    int given_temperature, given_top_p, given_max_tokens;
    long long context;
    uint64_t seed;
} Options;

static void usage(FILE *f, const ChatBackend *b) {
    fprintf(f,
            "usage: %s --model DIR [options]\n"
            "       %s --model DIR --batch REQUESTS.jsonl --out ANSWERS.jsonl [options]\n"
            "\n"
            "Talk to the model (and its adapter) %s; or answer a file of requests.\n"
            "\n"
            "  --model DIR          Hugging Face model directory (base, merged, or bitsandbytes 4-bit),\n"
            "                       or a GGUF file (its tokenizer too)\n"
            "  --adapter DIR        LoRA adapter, applied unmerged: a PEFT adapter directory or a\n"
            "                       train_cpu run directory (its adapter/)\n"
            "  --tokenizer FILE     tokenizer.model or tekken.json (default: the one in --model)\n"
            "  --weights W          how frozen weights are held: nf4, bf16 or f32 (default: nf4 with\n"
            "                       --adapter, as QLoRA trained it; bf16 without)\n"
            "  --system TEXT        the system prompt: who the character is\n"
            "  --system-file FILE   the system prompt, from a file\n"
            "  --temperature T      sampling temperature; 0 = greedy (default 0.7)\n"
            "  --top-p P            nucleus sampling mass (default 0.9)\n"
            "  --top-k K            sample among the K most probable tokens; 0 = off (default 0)\n"
            "  --max-tokens N       most tokens in an answer (default 512)\n"
            "  --seed N             random seed (default: from the clock; printed)\n"
            "  --context N          positions a model without a sliding window holds; the oldest turns\n"
            "                       are dropped beyond it (default: max_position_embeddings, at most 8192)\n"
            "  --threads N          OpenMP threads (default: OMP_NUM_THREADS, else every core)\n"
            "  --batch FILE         answer the requests of FILE (OpenAI batch lines, as `persona prompts`\n"
            "                       writes them); a request's max_tokens, temperature and top_p are used\n"
            "                       unless the flag is given\n"
            "  --out FILE           the answers of --batch, appended; ids already in it are skipped\n"
            "  --slots N            sequences decoded together with --batch (default 16)\n"
            "\n"
            "Commands while chatting: /system TEXT, /reset, /save FILE, /quit, /help.\n"
            "Ctrl-C stops an answer; Ctrl-D leaves.\n",
            b->program, b->program, b->where);
}

static int parse_number(const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi)) return -1;
    *out = x;
    return 0;
}

static int parse_args(int argc, char **argv, Options *o, const ChatBackend *b) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout, b);
            exit(0);
        }
        if (!v) {
            fprintf(stderr, "error: unknown option or missing value: %s (see --help)\n", a);
            return -1;
        }
        i++;
        double x = 0;
        int bad = 0;
        if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--adapter")) o->adapter = v;
        else if (!strcmp(a, "--tokenizer")) o->tokenizer = v;
        else if (!strcmp(a, "--weights")) o->weights = v;
        else if (!strcmp(a, "--system")) o->system = v;
        else if (!strcmp(a, "--system-file")) o->system_file = v;
        else if (!strcmp(a, "--batch")) o->batch = v;
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--temperature")) bad = parse_number(v, 0, 100, &x), o->temperature = (float)x, o->given_temperature = 1;
        else if (!strcmp(a, "--top-p")) bad = parse_number(v, 1e-9, 1, &x), o->top_p = (float)x, o->given_top_p = 1;
        else if (!strcmp(a, "--top-k")) bad = parse_number(v, 0, 1e9, &x), o->top_k = (int)x;
        else if (!strcmp(a, "--max-tokens")) bad = parse_number(v, 1, 1e9, &x), o->max_tokens = (int)x, o->given_max_tokens = 1;
        else if (!strcmp(a, "--seed")) bad = parse_number(v, 0, 1.8e19, &x), o->seed = strtoull(v, NULL, 10), o->seed_given = 1;
        else if (!strcmp(a, "--context")) bad = parse_number(v, 2, 1e9, &x), o->context = (long long)x;
        else if (!strcmp(a, "--threads")) bad = parse_number(v, 1, 4096, &x), o->threads = (int)x;
        else if (!strcmp(a, "--slots")) bad = parse_number(v, 1, 4096, &x), o->slots = (int)x;
        else {
            fprintf(stderr, "error: unknown option: %s (see --help)\n", a);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "error: %s '%s': not a number in the allowed range (see --help)\n", a, v);
            return -1;
        }
    }
    const char *bad = !o->model                     ? "--model is required"
                      : o->system && o->system_file ? "--system and --system-file exclude each other"
                      : !o->batch != !o->out        ? "--batch and --out go together"
                      : o->weights && strcmp(o->weights, "nf4") && strcmp(o->weights, "bf16") && strcmp(o->weights, "f32")
                          ? "--weights must be nf4, bf16 or f32"
                          : NULL;
    if (bad) {
        fprintf(stderr, "error: %s (see --help)\n", bad);
        return -1;
    }
    return 0;
}

static int exists(const char *dir, const char *name) {
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return stat(path, &sb) == 0;
}

// The PEFT adapter directory that --adapter names: itself, or a train_cpu run's adapter/.
static int resolve_adapter(const char *path, char *dir, size_t n, char *err) {
    if (exists(path, "adapter_config.json")) return snprintf(dir, n, "%s", path), 0;
    if (exists(path, "adapter/adapter_config.json")) return snprintf(dir, n, "%s/adapter", path), 0;
    if (exists(path, "checkpoint.safetensors"))
        return set_error(err, "%s: this training run has not written adapter/ yet (it does at its last step); "
                              "finish the run or pass a PEFT adapter directory", path);
    return set_error(err, "%s: neither a PEFT adapter directory (adapter_config.json) nor a train_cpu run directory "
                          "(adapter/)", path);
}

// --tokenizer, or the tokenizer file that sits in the model directory, or the GGUF model
// itself (which holds its tokenizer).
static int find_tokenizer(const Options *o, char *path, size_t n, char *err) {
    static const char *names[] = {"tekken.json",        "tokenizer.model.v7", "tokenizer.model.v3", "tokenizer.model.v2",
                                  "tokenizer.model.v1", "tokenizer.model",    "tokenizer.json"};
    if (o->tokenizer) return snprintf(path, n, "%s", o->tokenizer), 0;
    if (gguf_is_gguf(o->model)) return snprintf(path, n, "%s", o->model), 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (exists(o->model, names[i])) return snprintf(path, n, "%s/%s", o->model, names[i]), 0;
    return set_error(err, "%s: no tokenizer file in it (tekken.json, tokenizer.model[.vN], tokenizer.json); pass "
                          "--tokenizer FILE", o->model);
}

// ---------------------------------------------------------------------------------------
// interactive

static volatile sig_atomic_t interrupted;
static void on_interrupt(int sig) {
    (void)sig;
    interrupted = 1;
}

typedef struct {
    TokenStream stream;
    TokenVec *answer;
} Streaming;

static int on_token(void *ctx, int32_t id) {
    (void)id;
    Streaming *s = ctx;
    token_stream_update(&s->stream, s->answer->ids, s->answer->len);
    return interrupted != 0;
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    const Decoder *d;
    Tokenizer *tok;
    ChatSession session;
    KvCache cache;
    SampleConfig sample;
    uint64_t rng;
    int max_tokens, tty;
    int64_t context;
} Chat;

static void notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void notice(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

// One user turn: the prompt (dropping the oldest turns while a model without a window has
// no room for it and an answer), the answer streamed, kept in the conversation.
static void user_turn(Chat *c, const char *text, size_t len) {
    char err[ERR_LEN];
    TokenVec ids = {0}, answer = {0};
    session_add(&c->session, ROLE_USER, text, len);
    if (session_prompt(&c->session, &ids, err)) {
        notice("(not sent: %s)", err);
        session_pop(&c->session);
        tokvec_free(&ids);
        return;
    }
    if (c->cache.window == 0) {
        int64_t reserve = c->max_tokens < c->context / 2 ? c->max_tokens : c->context / 2;
        while ((int64_t)ids.len + reserve > c->context && session_drop_oldest(&c->session) == 0) {
            session_prompt(&c->session, &ids, err);
            notice("(context full: the oldest turn is dropped; %zu tokens now)", ids.len);
        }
        if ((int64_t)ids.len >= c->context) {
            notice("(not sent: %zu tokens do not fit the context of %lld; /reset or a shorter message)", ids.len,
                   (long long)c->context);
            session_pop(&c->session);
            tokvec_free(&ids);
            return;
        }
    }
    Streaming st = {{0}, &answer};
    token_stream_init(&st.stream, c->tok, stdout);
    interrupted = 0;
    double t0 = seconds_now();
    StopReason why = generate_with_cache(c->d, &c->cache, ids.ids, ids.len, c->max_tokens,
                                         chat_stop_token(c->tok, c->session.fmt), &c->sample, &c->rng, &answer, on_token,
                                         &st);
    double dt = seconds_now() - t0;
    token_stream_finish(&st.stream);
    fputc('\n', stdout);
    fflush(stdout);
    interrupted = 0;
    notice("[%s: %zu tokens, %.1f tok/s]", why == STOP_MAX_TOKENS ? "stopped at --max-tokens" : stop_reason_text(why),
           answer.len, dt > 0 ? (double)answer.len / dt : 0.0);
    if (st.stream.text.len) {
        session_add(&c->session, ROLE_ASSISTANT, st.stream.text.data, st.stream.text.len);
    } else {  // nothing to keep: an empty answer is no turn (chat formats refuse it)
        notice("(empty answer: the turn is not kept)");
        session_pop(&c->session);
    }
    token_stream_free(&st.stream);
    tokvec_free(&ids), tokvec_free(&answer);
}

static const char *command_help =
    "/system TEXT   set the system prompt (/system alone shows it; /system - removes it)\n"
    "/reset         forget the conversation (the system prompt stays)\n"
    "/save FILE     append the conversation to FILE as one mistral-finetune JSONL line\n"
    "/quit          leave (so does Ctrl-D); Ctrl-C stops an answer\n"
    "//TEXT         send TEXT beginning with '/'";

// A line starting with '/'. Returns 1 to quit.
static int command(Chat *c, char *line) {
    char *arg = line + strcspn(line, " \t");
    if (*arg) *arg++ = '\0';
    arg += strspn(arg, " \t");
    char err[ERR_LEN];
    if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) return 1;
    if (!strcmp(line, "/help")) notice("%s", command_help);
    else if (!strcmp(line, "/reset")) {
        session_reset(&c->session);
        notice("(conversation forgotten)");
    } else if (!strcmp(line, "/system")) {
        if (*arg) session_set_system(&c->session, strcmp(arg, "-") ? arg : NULL);
        notice("(system prompt: %s)", c->session.system ? c->session.system : "none");
    } else if (!strcmp(line, "/save")) {
        if (!*arg) notice("(usage: /save FILE)");
        else if (c->session.n == 0) notice("(nothing to save yet)");
        else if (session_save(&c->session, arg, err)) notice("(not saved: %s)", err);
        else notice("(saved %zu messages to %s)", c->session.n + (c->session.system != NULL), arg);
    } else {
        notice("(unknown command %s; /help lists them)", line);
    }
    return 0;
}

// Shows the prompt and waits until the terminal has a line to read (1) or Ctrl-C was
// pressed (0). A plain getline() after the prompt would lose a Ctrl-C that lands between the
// prompt and the read() inside getline: the handler runs, read() then blocks for a line, and
// the user's Ctrl-C seems ignored. So SIGINT stays blocked from before the prompt until
// pselect() unblocks it atomically for the wait: a Ctrl-C pending by then ends the wait at
// once. (A terminal in canonical mode hands over one line per read(), so stdin's buffer is
// empty here and waiting on the descriptor is waiting for the next line.)
static int prompt_and_wait(void) {
    sigset_t sigint, unblocked;
    sigemptyset(&sigint);
    sigaddset(&sigint, SIGINT);
    sigprocmask(SIG_BLOCK, &sigint, &unblocked);
    sigdelset(&unblocked, SIGINT);
    fputs("> ", stderr);
    fflush(stderr);
    int ready = 0;
    while (!interrupted) {
        fd_set in;
        FD_ZERO(&in);
        FD_SET(STDIN_FILENO, &in);
        ready = pselect(STDIN_FILENO + 1, &in, NULL, NULL, NULL, &unblocked);
        if (ready > 0 || (ready < 0 && errno != EINTR)) break;  // a line, or an error getline will report
    }
    sigprocmask(SIG_UNBLOCK, &sigint, NULL);
    if (!interrupted) return 1;
    interrupted = 0;
    fputs("\n(Ctrl-D or /quit leaves)\n", stderr);
    return 0;
}

static int interactive(Chat *c) {
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        if (c->tty && !prompt_and_wait()) continue;  // Ctrl-C at the prompt
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        if (n == 0) continue;
        if (line[0] == '/' && line[1] != '/') {
            if (command(c, line)) break;
            continue;
        }
        size_t skip = line[0] == '/' ? 1 : 0;  // "//text" sends "/text"
        user_turn(c, line + skip, (size_t)n - skip);
    }
    if (c->tty) fputc('\n', stderr);
    free(line);
    return 0;
}

// ---------------------------------------------------------------------------------------
// the program

// Frees what main holds (NULL or zero: nothing).
static void release(Tokenizer *tok, char *system, BatchJob *job, const ChatBackend *b, Decoder *d) {
    if (job) batch_job_free(job);
    if (d && d->ctx) b->free(d);
    if (tok->kind) tokenizer_free(tok);
    free(system);
}

int chat_main(int argc, char **argv, const ChatBackend *b) {
    Options o = {.temperature = 0.7f, .top_p = 0.9f, .max_tokens = 512, .slots = 16};
    if (parse_args(argc, argv, &o, b)) return 1;
    char err[ERR_LEN], tok_path[4096], adapter_dir[4096], desc[512], info[512] = "";
    char *system = NULL;
    size_t len;
    Tokenizer tok = {0};
    ModelConfig cfg;
    if (o.system_file && !(system = read_file(o.system_file, &len, err))) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    if (system)  // a file's final newlines are not part of the prompt
        while (len && (system[len - 1] == '\n' || system[len - 1] == '\r')) system[--len] = '\0';
    if (find_tokenizer(&o, tok_path, sizeof(tok_path), err) || tokenizer_load(&tok, tok_path, err) ||
        (o.adapter && resolve_adapter(o.adapter, adapter_dir, sizeof(adapter_dir), err)) ||
        model_config_load(&cfg, o.model, err)) {
        fprintf(stderr, "error: %s\n", err);
        release(&tok, system, NULL, b, NULL);
        return 1;
    }
    if (tok.vocab_size > cfg.vocab_size) {
        fprintf(stderr, "error: %s: %d tokens, but %s has %d embeddings: not this model's tokenizer\n", tok_path,
                tok.vocab_size, o.model, cfg.vocab_size);
        release(&tok, system, NULL, b, NULL);
        return 1;
    }
    if (!o.seed_given) o.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    int64_t context = o.context ? o.context : cfg.max_position_embeddings > 0 && cfg.max_position_embeddings < 8192
                                                  ? cfg.max_position_embeddings
                                                  : 8192;
    ChatFormat fmt = chat_format_for(&tok);
    SampleConfig sample = {o.temperature, o.top_p, o.top_k, tok.vocab_size};
    BatchOptions bo = {o.batch, o.out, o.slots, o.max_tokens, sample, o.given_max_tokens, o.given_temperature,
                       o.given_top_p, o.seed, context};
    BatchJob *job = NULL;
    if (o.batch && !(job = batch_job_prepare(&bo, &tok, fmt, err))) {  // bad requests: before anything else
        fprintf(stderr, "error: %s\n", err);
        release(&tok, system, NULL, b, NULL);
        return 1;
    }
    const char *weights = o.weights           ? o.weights
                          : b->default_weights ? b->default_weights
                          : o.adapter          ? "nf4"
                                               : "bf16";
    ChatLoad load = {o.model, o.adapter ? adapter_dir : NULL,
                     !strcmp(weights, "nf4") ? FROZEN_NF4 : !strcmp(weights, "bf16") ? FROZEN_BF16 : FROZEN_F32,
                     o.threads, job ? o.slots : 1, context};
    Decoder d = {0};
    int rc = b->load(&load, &d, info, sizeof(info), err);
    if (rc) {
        fprintf(stderr, "error: %s\n", err);
        release(&tok, system, job, b, NULL);
        return rc;
    }
    config_describe(d.config, desc, sizeof(desc));
    fprintf(stderr, "%s: %s\n  weights %s, %s\n", b->program, desc,
            cfg.bnb_4bit ? "nf4 (bitsandbytes checkpoint)" : weights, info);
    fprintf(stderr, "  tokenizer %s (v%d), chat format %s\n", tok_path, tok.version, chat_format_name(fmt));
    fprintf(stderr, "  temperature %g, top-p %g, top-k %d, max %d tokens, seed %llu, %s %lld\n", (double)o.temperature,
            (double)o.top_p, o.top_k, o.max_tokens, (unsigned long long)o.seed,
            cfg.sliding_window ? "sliding window" : "context",
            (long long)(cfg.sliding_window ? cfg.sliding_window : context));
    if (job) {
        rc = batch_job_run(job, &d);
    } else {
        Chat c = {&d, &tok, {0}, {0}, sample, o.seed, o.max_tokens, isatty(0), context};
        session_init(&c.session, &tok, fmt, o.system ? o.system : system);
        kv_cache_init(&c.cache, d.config, context);
        if (c.tty) {  // Ctrl-C interrupts the answer (or the prompt's read), not the program
            struct sigaction sa;
            memset(&sa, 0, sizeof(sa));
            sa.sa_handler = on_interrupt;
            sigaction(SIGINT, &sa, NULL);
            fprintf(stderr, "  /help for commands; Ctrl-C stops an answer, Ctrl-D or /quit leaves\n");
        }
        rc = interactive(&c);
        session_free(&c.session);
        kv_cache_free(&c.cache);
    }
    release(&tok, system, job, b, &d);
    return rc;
}
