// persona_build.c: `persona build`, the whole method in one command (see persona_build.h).
#include "persona_build.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/util.h"
#include "persona_extract.h"
#include "persona_ingest.h"
#include "persona_jsonl.h"
#include "persona_mix.h"
#include "persona_probes.h"
#include "persona_prompts.h"

enum { F_DIALOGUE, F_TURNS, F_REQUESTS, F_ANSWERS, F_NARRATIVE, F_QA, F_REJECTS, F_TRAIN, F_VAL, F_REPORT, F_PROBES, F_COUNT };
static const char *const FILE_NAMES[F_COUNT] = {"dialogue.jsonl", "turns.tsv", "requests.jsonl", "answers.jsonl",
                                                "narrative.jsonl", "qa.jsonl", "rejects.jsonl", "train.jsonl",
                                                "val.jsonl", "report.txt", "probes.txt"};

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// The report: what every step prints goes into a memory stream, and is shown on standard
// output as it comes (show()); report.txt is the whole of it, and more.
typedef struct {
    FILE *f;
    char *data;
    size_t len, shown;
} Log;

static void show(Log *log) {
    fflush(log->f);
    fwrite(log->data + log->shown, 1, log->len - log->shown, stdout);
    fflush(stdout);
    log->shown = log->len;
}

// ---------------------------------------------------------------------------------------
// The teacher

// s in single quotes for the shell ('it'\''s').
static void shell_quote(ByteBuf *b, const char *s) {
    bytebuf_push(b, '\'');
    for (; *s; s++) {
        if (*s == '\'') bytebuf_append(b, "'\\''", 4);
        else bytebuf_push(b, *s);
    }
    bytebuf_push(b, '\'');
}

// Runs the teacher command: with {requests} and {answers} replaced by the (quoted) paths, or
// with the requests on its standard input and its standard output into the answers file.
// Returns 0, or -1 with the reason in err.
static int run_teacher(const char *command, const char *requests, OutFile *answers, char *err) {
    ByteBuf cmd = {0};
    int named = strstr(command, "{requests}") || strstr(command, "{answers}");
    for (const char *s = command; *s;) {
        if (!strncmp(s, "{requests}", 10)) shell_quote(&cmd, requests), s += 10;
        else if (!strncmp(s, "{answers}", 9)) shell_quote(&cmd, answers->tmp), s += 9;
        else bytebuf_push(&cmd, *s++);
    }
    bytebuf_push(&cmd, '\0');
    int in = named ? -1 : open(requests, O_RDONLY);
    if (!named && in < 0) {
        bytebuf_free(&cmd);
        return set_error(err, "%s: cannot open: %s", requests, strerror(errno));
    }
    fflush(stdout);
    fflush(answers->f);
    // A signal between the fork and outfile_set_child would leave the teacher running: the
    // signals wait until the handler knows its pid.
    sigset_t stop, old;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGHUP);
    sigprocmask(SIG_BLOCK, &stop, &old);
    pid_t pid = fork();
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        if (!named && (dup2(in, 0) < 0 || dup2(fileno(answers->f), 1) < 0)) _exit(127);
        execl("/bin/sh", "sh", "-c", cmd.data, (char *)NULL);
        _exit(127);
    }
    if (pid > 0) outfile_set_child((long)pid);
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (in >= 0) close(in);
    bytebuf_free(&cmd);
    if (pid < 0) return set_error(err, "teacher: cannot start the command: %s", strerror(errno));
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    outfile_set_child(0);
    if (WIFSIGNALED(status))
        return set_error(err, "teacher: the command was killed by signal %d: %s", WTERMSIG(status), command);
    if (WEXITSTATUS(status) != 0)
        return set_error(err, "teacher: the command exited with status %d: %s", WEXITSTATUS(status), command);
    return 0;
}

// ---------------------------------------------------------------------------------------
// The report's own parts

// How sure the attribution is of the lines attributed to the character, in tenths.
static void confidence_histogram(const Dialogue *d, double min_confidence, FILE *f) {
    int bins[10] = {0}, most = 0;
    for (size_t k = 0; k < d->n; k++) {
        if (d->turns[k].speaker != ENTITY_CHARACTER) continue;
        int b = (int)(d->turns[k].confidence * 10.0f + 1e-4f);
        b = b < 0 ? 0 : b > 9 ? 9 : b;
        bins[b]++;
    }
    for (int b = 0; b < 10; b++) most = bins[b] > most ? bins[b] : most;
    fprintf(f, "confidence of the lines attributed to the character (written from %.2f):\n", min_confidence);
    for (int b = 9; b >= 0; b--) {
        if (!bins[b]) continue;
        fprintf(f, "  %.1f-%.1f %5d ", b / 10.0, (b + 1) / 10.0, bins[b]);
        int bar = most ? (bins[b] * 50 + most - 1) / most : 0;
        for (int i = 0; i < bar; i++) fputc('#', f);
        fputc('\n', f);
    }
}

static void excerpt(FILE *f, const char *s, size_t n, size_t max) {
    for (size_t i = 0; i < n && i < max; i++) fputc(s[i] == '\n' ? ' ' : s[i], f);
    if (n > max) fputs(" ...", f);
}

// Ten of the character's lines, drawn at random (seeded), with the turn before each.
static void samples(const Dialogue *d, double min_confidence, uint64_t seed, FILE *f) {
    size_t *lines = xmalloc((d->n ? d->n : 1) * sizeof(size_t)), n = 0;
    for (size_t k = 0; k < d->n; k++)
        if (extract_is_line(d, k, min_confidence)) lines[n++] = k;
    size_t want = n < 10 ? n : 10;
    uint64_t rng = seed;
    for (size_t i = 0; i < want; i++) {  // a partial Fisher-Yates shuffle, then in book order
        size_t j = i + (size_t)rng_below(&rng, n - i), t = lines[i];
        lines[i] = lines[j], lines[j] = t;
    }
    for (size_t i = 1; i < want; i++)
        for (size_t j = i; j > 0 && lines[j - 1] > lines[j]; j--) {
            size_t t = lines[j];
            lines[j] = lines[j - 1], lines[j - 1] = t;
        }
    fprintf(f, "%zu of the character's lines, drawn at random, to read (line of the book, method, confidence):\n", want);
    for (size_t i = 0; i < want; i++) {
        const Turn *t = &d->turns[lines[i]];
        if (lines[i] > 0 && dialogue_adjacent(d, lines[i])) {
            const Turn *u = &d->turns[lines[i] - 1];
            fprintf(f, "  before, %s: ", u->speaker >= 0 ? d->cast.entities[u->speaker].name : "(unknown)");
            excerpt(f, u->text, u->len, 200);
            fputc('\n', f);
        }
        fprintf(f, "  %d (%s, %.2f): ", t->line, attr_method_name(t->method), t->confidence);
        excerpt(f, t->text, t->len, 400);
        fputs("\n\n", f);
    }
    free(lines);
}

// ---------------------------------------------------------------------------------------

int build_run(const BuildOptions *o) {
    double t0 = seconds_now();
    const char *name = o->dialogue.character;
    char err[ERR_LEN];
    char *paths[F_COUNT];
    size_t dir_len = strlen(o->out_dir);
    while (dir_len > 1 && o->out_dir[dir_len - 1] == '/') dir_len--;
    for (int k = 0; k < F_COUNT; k++) {
        size_t cap = dir_len + strlen(FILE_NAMES[k]) + 2;
        paths[k] = xmalloc(cap);
        snprintf(paths[k], cap, "%.*s/%s", (int)dir_len, o->out_dir, FILE_NAMES[k]);
    }
    int rc = 0;
    for (int k = 0; k < F_COUNT && rc == 0; k++)
        if (same_file(paths[k], o->book)) {
            fprintf(stderr, "error: --out %s would replace the book (--book %s) with %s: an output never replaces an input\n",
                    o->out_dir, o->book, paths[k]);
            rc = 1;
        }
    PromptTools tools = {0};
    if (rc == 0 && o->teacher && prompt_tools_load(&tools, o->tokenizer, o->template_rewrite, o->template_qa, err)) {
        fprintf(stderr, "error: %s\n", err);
        rc = 1;
    }
    if (rc == 0 && mkdir(o->out_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "error: %s: cannot create the directory: %s\n", o->out_dir, strerror(errno));
        rc = 2;
    }
    if (rc) {
        for (int k = 0; k < F_COUNT; k++) free(paths[k]);
        prompt_tools_free(&tools);
        return rc;
    }
    Log log = {0};
    log.f = open_memstream(&log.data, &log.len);
    if (!log.f) {
        fprintf(stderr, "error: out of memory for the report\n");
        exit(2);
    }
    Book book;
    Dialogue d;
    int loaded = dialogue_load(&d, &book, o->book, &o->parse, &o->dialogue, err) == 0;
    if (!loaded) {
        fprintf(stderr, "error: %s\n", err);
        rc = 1;
    }

    // (A) the character's own lines
    ExtractStats est;
    if (rc == 0) {
        dialogue_describe(&d, log.f);
        ExtractOptions eo = {o->min_confidence, o->context_words};
        OutFile files[2] = {{0}};
        size_t below;
        if (outfile_open(&files[0], paths[F_DIALOGUE], err) || outfile_open(&files[1], paths[F_TURNS], err)) {
            fprintf(stderr, "error: %s\n", err);
            rc = 2;
        } else {
            extract_conversations(&d, &eo, files[0].f, &est);
            extract_write_turns(&d, &eo, files[1].f);
            if (extract_written(&est, &below) == 0) {
                extract_say_nothing(&est, o->book, name, o->min_confidence, book.layout_unclear, stderr);
                rc = 1;
            }
        }
        rc = outfiles_finish(files, 2, rc);
        if (rc == 0) {
            fprintf(log.f, "\n(A) the character's own lines: %s\n", paths[F_DIALOGUE]);
            extract_report(&d, &est, name, log.f);
        }
        show(&log);
    }

    // (B), (C): requests, the teacher's answers, their conversations
    int taught = 0;
    if (rc == 0 && !o->teacher) {
        fprintf(log.f, "\n(B, C) no --teacher given: the training set is the character's own lines only (strategy A);\n"
                       "       give a teacher command to add first-person rewrites (B) and Q&A pairs (C)\n");
        show(&log);
    } else if (rc == 0) {
        PromptOptions po = {name, o->dialogue.aliases, o->dialogue.n_aliases, o->min_confidence, tools.tokenizer,
                            o->chunk_tokens, o->overlap_tokens, o->pairs, tools.rewrite, tools.qa, o->model};
        OutFile req = {0}, ans = {0};
        PromptStats pst;
        if (outfile_open(&req, paths[F_REQUESTS], err)) {
            fprintf(stderr, "error: %s\n", err);
            rc = 2;
        } else {
            prompts_write(&d, &po, req.f, &pst);
            if (pst.kept == 0) {
                outfile_abort(&req);
                fprintf(stderr, "error: %s: \"%s\" is in none of the %zu chunks (never named, never speaking)\n", o->book,
                        name, pst.chunks);
                rc = 1;
            } else if (outfile_commit(&req, err)) {
                fprintf(stderr, "error: %s\n", err);
                rc = 2;
            }
        }
        if (rc == 0) {
            fprintf(log.f, "\n(B, C) requests for the teacher: %s\n", paths[F_REQUESTS]);
            prompts_report(&pst, name, log.f);
            fprintf(log.f, "requests: %zu; the teacher answers them: %s\n", pst.requests, o->teacher);
            show(&log);
            if (outfile_open(&ans, paths[F_ANSWERS], err) || run_teacher(o->teacher, paths[F_REQUESTS], &ans, err)) {
                fprintf(stderr, "error: %s\n", err);
                outfile_abort(&ans);
                rc = 2;
            } else if (outfile_commit(&ans, err)) {
                fprintf(stderr, "error: %s\n", err);
                rc = 2;
            }
        }
        if (rc == 0) {
            const char *outs[3] = {paths[F_NARRATIVE], paths[F_QA], paths[F_REJECTS]};
            IngestStats ist;
            fprintf(log.f, "answers: %s\n", paths[F_ANSWERS]);
            show(&log);
            rc = ingest_files(paths[F_REQUESTS], paths[F_ANSWERS], outs, &ist);  // prints to stdout
            if (rc == 0) {
                ingest_report(&ist, log.f);
                fprintf(log.f, "conversations: %zu narrative (%s), %zu qa (%s)\n", ist.conversations[0],
                        paths[F_NARRATIVE], ist.conversations[1], paths[F_QA]);
                fflush(log.f);
                log.shown = log.len;  // ingest printed its report already
                taught = 1;
            }
        }
    }

    // The training set
    if (rc == 0) {
        char system[512];
        snprintf(system, sizeof system, "You are %s.", name);
        MixSource sources[3] = {{.path = paths[F_DIALOGUE], .weight = 1},
                                {.path = paths[F_NARRATIVE], .weight = o->weight_narrative},
                                {.path = paths[F_QA], .weight = o->weight_qa}};
        size_t n_sources = 1;
        if (taught) {
            struct stat sb;
            for (int k = 1; k < 3; k++)  // a task that was not asked for has no file
                if (stat(sources[k].path, &sb) == 0 && (k == 1 ? o->template_rewrite : o->template_qa))
                    sources[n_sources++] = sources[k];
        }
        fprintf(log.f, "\nthe training set (system prompt \"%s\"):\n", o->system ? o->system : system);
        MixOptions mo = {sources, n_sources, o->val_fraction, o->seed, o->system ? o->system : system};
        rc = mix_to_dir(&mo, o->out_dir, log.f);
        show(&log);
    }

    // report.txt, probes.txt
    if (rc == 0) {
        fputc('\n', log.f);
        confidence_histogram(&d, o->min_confidence, log.f);
        fputc('\n', log.f);
        samples(&d, o->min_confidence, o->seed, log.f);
        fflush(log.f);
        OutFile files[2] = {{0}};
        size_t probes = 0;
        if (outfile_open(&files[0], paths[F_REPORT], err) || outfile_open(&files[1], paths[F_PROBES], err)) {
            fprintf(stderr, "error: %s\n", err);
            outfile_abort(&files[0]);
            rc = 2;
        } else {
            fprintf(files[0].f, "persona build: %s, from %s\n\n", name, o->book);
            fwrite(log.data, 1, log.len, files[0].f);
            probes = probes_write(&d, name, files[1].f);
            if (outfiles_commit(files, 2, err)) {
                fprintf(stderr, "error: %s\n", err);
                rc = 2;
            }
        }
        if (rc == 0)
            printf("\nbuild: %s and %s are ready for prep; %s (with the samples to read), %s (%zu questions)\n"
                   "       %s; %.2f s\n",
                   paths[F_TRAIN], paths[F_VAL], paths[F_REPORT], paths[F_PROBES], probes,
                   taught ? "strategies A, B and C" : "strategy A only (no teacher)", seconds_now() - t0);
    }
    fclose(log.f);
    free(log.data);
    if (loaded) {
        dialogue_free(&d);
        book_free(&book);
    }
    prompt_tools_free(&tools);
    for (int k = 0; k < F_COUNT; k++) free(paths[k]);
    return rc;
}
