/*
 * persona.c: the `persona` program, a novel -> a conversational dataset in one character's
 * voice. One command for the whole method, and one subcommand per step of it for those who
 * want the pieces (data/PERSONA.md is the manual):
 *
 *   persona build    all of it: extract, prompts, a teacher, ingest, mix, a report, probes
 *   persona extract  the character's own lines, with what was said to them (strategy A)
 *   persona prompts  chunks of narrative where the character is present -> chat requests for
 *                    a teacher model: first-person rewrites (B) and question/answer pairs (C)
 *   persona ingest   the teacher's answers -> conversations, malformed answers rejected
 *   persona mix      sources -> weighted, deduplicated, shuffled train.jsonl and val.jsonl
 *
 * Each prints its resolved configuration, then a report. Exit status: 0 success, 1 bad
 * input or usage (one line: `file:line: reason`), 2 a runtime failure (writing output); a
 * run stopped by SIGINT or SIGTERM dies of it (130, 143) and leaves no temporary file. An
 * output is never one of the inputs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../common/util.h"
#include "../tokenizer/tokenizer.h"
#include "persona_book.h"
#include "persona_build.h"
#include "persona_dialogue.h"
#include "persona_extract.h"
#include "persona_ingest.h"
#include "persona_jsonl.h"
#include "persona_mix.h"
#include "persona_prompts.h"

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see --help)\n");
    return 1;
}

// Parses a number in [lo, hi] for option name. Returns -1 (after the message) if invalid.
static int parse_number(const char *name, const char *s, double lo, double hi, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "error: %s '%s': expected a number from %g to %g\n", name, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_count(const char *name, const char *s, int lo, int hi, int *out) {
    double v;
    if (parse_number(name, s, lo, hi, &v)) return -1;
    *out = (int)v;
    return 0;
}

// Refuses to write output `out` (given as out_flag) when it is the input `in` (in_flag) under
// any name: one line, exit status 1. Returns 1 when refused.
static int refuse_same(const char *out_flag, const char *out, const char *in_flag, const char *what, const char *in) {
    if (!out || !in || !same_file(out, in)) return 0;
    fprintf(stderr, "error: %s %s is the %s (%s %s): an output never replaces an input\n", out_flag, out, what,
            in_flag, in);
    return 1;
}

// ---------------------------------------------------------------------------------------
// The book and the character: options that build, extract and prompts share

typedef struct {
    const char *book, *character;
    const char *aliases[BUILD_MAX_ALIASES];
    size_t n_aliases;
    int narrator;
    QuoteFamily quotes;
    BookParseOptions parse;
    double min_confidence;
} BookOptions;

#define BOOK_HELP                                                                                  \
    "  --book FILE            the book, UTF-8 text (required)\n"                                    \
    "  --character NAME       the character, as the book names them (required)\n"                  \
    "  --alias NAME           another name for the character (repeatable): a surname, a title\n"   \
    "  --narrator             the character is the book's narrator (\"I\")\n"                      \
    "  --quotes STYLE         auto, double (\"...\" and curly) or single ('...', curly, `...')\n"   \
    "                         (default auto: the style that finds more quotations)\n"              \
    "  --format F             auto, prose or script (a play) (default auto)\n"                     \
    "  --layout L             how paragraphs are marked: auto, blank (blank lines between them),\n" \
    "                         lines (one per line) or indented (indented first lines)\n"          \
    "                         (default auto)\n"                                                    \
    "  --start-line N         the text starts at this line of the file (default: after the\n"      \
    "                         Project Gutenberg header and the front matter, at the first chapter)\n" \
    "  --end-line N           the text ends at this line (default: before the licence, at THE END)\n" \
    "  --min-confidence C     lowest attribution confidence that counts as the character's\n"      \
    "                         line, 0..1 (default 0.7)\n"

// Consumes argv[*i] (and its value) if it is a book option. Returns 1 if consumed, 0 if
// not a book option, -1 on a bad value (message printed).
static int book_option(BookOptions *o, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    int has_value = *i + 1 < argc;
    if (!strcmp(a, "--narrator")) return o->narrator = 1;
    if (!has_value) return 0;
    const char *v = argv[*i + 1];
    if (!strcmp(a, "--book")) o->book = v;
    else if (!strcmp(a, "--character")) o->character = v;
    else if (!strcmp(a, "--alias")) {
        if (o->n_aliases == BUILD_MAX_ALIASES) return usage_error("more than %s aliases", "32"), -1;
        o->aliases[o->n_aliases++] = v;
    } else if (!strcmp(a, "--quotes")) {
        if (!strcmp(v, "auto")) o->quotes = QUOTES_AUTO;
        else if (!strcmp(v, "double")) o->quotes = QUOTES_DOUBLE;
        else if (!strcmp(v, "single")) o->quotes = QUOTES_SINGLE;
        else return usage_error("--quotes '%s': expected auto, double or single", v), -1;
    } else if (!strcmp(a, "--format")) {
        if (!strcmp(v, "auto")) o->parse.format = BOOK_AUTO;
        else if (!strcmp(v, "prose")) o->parse.format = BOOK_PROSE;
        else if (!strcmp(v, "script")) o->parse.format = BOOK_SCRIPT;
        else return usage_error("--format '%s': expected auto, prose or script", v), -1;
    } else if (!strcmp(a, "--layout")) {
        if (!strcmp(v, "auto")) o->parse.layout = LAYOUT_AUTO;
        else if (!strcmp(v, "blank")) o->parse.layout = LAYOUT_BLANK;
        else if (!strcmp(v, "lines")) o->parse.layout = LAYOUT_LINES;
        else if (!strcmp(v, "indented")) o->parse.layout = LAYOUT_INDENTED;
        else return usage_error("--layout '%s': expected auto, blank, lines or indented", v), -1;
    } else if (!strcmp(a, "--start-line")) {
        if (parse_count(a, v, 1, 1000000000, &o->parse.start_line)) return -1;
    } else if (!strcmp(a, "--end-line")) {
        if (parse_count(a, v, 1, 1000000000, &o->parse.end_line)) return -1;
    } else if (!strcmp(a, "--min-confidence")) {
        if (parse_number("--min-confidence", v, 0, 1, &o->min_confidence)) return -1;
    } else {
        return 0;
    }
    (*i)++;
    return 1;
}

static int check_book_options(const BookOptions *o) {
    if (!o->book) return usage_error("%s is required", "--book FILE");
    if (!o->character || !o->character[0]) return usage_error("%s is required", "--character NAME");
    return 0;
}

static void print_book_config(const BookOptions *o) {
    printf("  book             %s", o->book);
    if (o->parse.start_line || o->parse.end_line) {
        printf(" (lines %d to ", o->parse.start_line ? o->parse.start_line : 1);
        if (o->parse.end_line) printf("%d)", o->parse.end_line);
        else printf("the end)");
    }
    printf("\n  character        %s", o->character);
    for (size_t i = 0; i < o->n_aliases; i++) printf("%s%s", i ? ", " : " (aliases: ", o->aliases[i]);
    printf("%s%s\n", o->n_aliases ? ")" : "", o->narrator ? ", the narrator" : "");
    printf("  min confidence   %.2f\n", o->min_confidence);
}

static DialogueOptions dialogue_options(const BookOptions *o) {
    return (DialogueOptions){o->character, o->aliases, o->n_aliases, o->narrator, o->quotes};
}

// Loads and cleans the book, finds its dialogue, and prints what was found.
static int load_dialogue(const BookOptions *o, Book *book, Dialogue *d) {
    char err[ERR_LEN];
    DialogueOptions dopt = dialogue_options(o);
    if (dialogue_load(d, book, o->book, &o->parse, &dopt, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    dialogue_describe(d, stdout);
    return 0;
}

// ---------------------------------------------------------------------------------------
// extract

static void extract_usage(FILE *f) {
    fprintf(f,
            "usage: persona extract --book FILE --character NAME [--alias NAME ...] --out FILE.jsonl\n"
            "\n"
            "Finds the character's spoken lines and writes them as conversations: the user turn is\n"
            "what was said to the character just before (or a short narrative context), the\n"
            "assistant turn the character's line, verbatim.\n"
            "\n" BOOK_HELP
            "  --out FILE.jsonl       the conversations (required)\n"
            "  --turns FILE.tsv       also write every turn of the book with its speaker, method and\n"
            "                         confidence (for checking the attribution)\n"
            "  --context-words N      length of a narrative context, in words (default 60)\n"
            "  --help                 this text\n");
}

static int cmd_extract(int argc, char **argv) {
    BookOptions bo = {.min_confidence = 0.7};
    const char *out = NULL, *turns = NULL;
    int context_words = 60;
    for (int i = 2; i < argc; i++) {
        int r = book_option(&bo, argc, argv, &i);
        if (r < 0) return 1;
        if (r) continue;
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            extract_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) return usage_error("unknown option or missing value: %s", a);
        if (!strcmp(a, "--out")) out = argv[++i];
        else if (!strcmp(a, "--turns")) turns = argv[++i];
        else if (!strcmp(a, "--context-words")) {
            if (parse_count("--context-words", argv[++i], 1, 10000, &context_words)) return 1;
        } else return usage_error("unknown option or missing value: %s", a);
    }
    if (check_book_options(&bo)) return 1;
    if (!out) return usage_error("%s is required", "--out FILE.jsonl");
    if (refuse_same("--out", out, "--book", "book", bo.book) || refuse_same("--turns", turns, "--book", "book", bo.book) ||
        refuse_same("--turns", turns, "--out", "output", out))
        return 1;
    printf("persona extract\n");
    print_book_config(&bo);
    printf("  out              %s\n", out);
    printf("  context words    %d\n", context_words);

    double t0 = seconds_now();
    Book book;
    Dialogue d;
    if (load_dialogue(&bo, &book, &d)) return 1;
    ExtractOptions eo = {bo.min_confidence, context_words};
    char err[ERR_LEN];
    OutFile files[2] = {{0}};
    int rc = 0;
    if (outfile_open(&files[0], out, err) || (turns && outfile_open(&files[1], turns, err))) {
        fprintf(stderr, "error: %s\n", err);
        rc = 2;
    }
    ExtractStats st;
    size_t below = 0, written = 0;
    if (rc == 0) {
        extract_conversations(&d, &eo, files[0].f, &st);
        if (turns) extract_write_turns(&d, &eo, files[1].f);
        written = extract_written(&st, &below);
    }
    if (rc == 0 && written == 0) {
        extract_say_nothing(&st, bo.book, bo.character, bo.min_confidence, book.layout_unclear, stderr);
        rc = 1;
    }
    rc = outfiles_finish(files, 2, rc);
    if (rc == 0) {
        extract_report(&d, &st, bo.character, stdout);
        printf("written: %s%s%s\n", out, turns ? ", " : "", turns ? turns : "");
        printf("time: %.3f s for reading, cleaning, attributing and writing\n", seconds_now() - t0);
    }
    dialogue_free(&d);
    book_free(&book);
    return rc;
}

// ---------------------------------------------------------------------------------------
// prompts

#define PROMPTS_HELP                                                                              \
    "  --tasks LIST           rewrite, qa, or rewrite,qa (default rewrite,qa)\n"                  \
    "  --pairs N              question/answer pairs asked per chunk (default 3)\n"                \
    "  --chunk-tokens N       most tokens in a chunk (default 512)\n"                             \
    "  --overlap-tokens N     tokens a chunk repeats from the one before (default 64)\n"          \
    "  --tokenizer FILE       count tokens with this tokenizer.model or tekken.json\n"            \
    "                         (default: estimate 1.3 tokens per word)\n"                          \
    "  --template-rewrite F   the rewrite prompt (default data/templates/rewrite.txt)\n"          \
    "  --template-qa F        the Q&A prompt (default data/templates/qa.txt)\n"                   \
    "  --model NAME           \"model\" in each request (default teacher)\n"

typedef struct {
    const char *tasks, *tokenizer, *rewrite, *qa, *model;
    int pairs, chunk_tokens, overlap_tokens;
    int want_rewrite, want_qa;
} PromptArgs;

static PromptArgs prompt_defaults(void) {
    return (PromptArgs){"rewrite,qa", NULL, "data/templates/rewrite.txt", "data/templates/qa.txt", "teacher", 3, 512, 64,
                        1, 1};
}

// Consumes argv[*i] and its value if it is a prompts option: 1 if consumed, 0 if not, -1 bad.
static int prompt_option(PromptArgs *p, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (*i + 1 >= argc) return 0;
    const char *v = argv[*i + 1];
    if (!strcmp(a, "--tasks")) p->tasks = v;
    else if (!strcmp(a, "--tokenizer")) p->tokenizer = v;
    else if (!strcmp(a, "--template-rewrite")) p->rewrite = v;
    else if (!strcmp(a, "--template-qa")) p->qa = v;
    else if (!strcmp(a, "--model")) p->model = v;
    else if (!strcmp(a, "--pairs")) {
        if (parse_count(a, v, 1, 20, &p->pairs)) return -1;
    } else if (!strcmp(a, "--chunk-tokens")) {
        if (parse_count(a, v, 32, 100000, &p->chunk_tokens)) return -1;
    } else if (!strcmp(a, "--overlap-tokens")) {
        if (parse_count(a, v, 0, 100000, &p->overlap_tokens)) return -1;
    } else {
        return 0;
    }
    (*i)++;
    return 1;
}

static int check_prompt_args(PromptArgs *p) {
    int both = !strcmp(p->tasks, "rewrite,qa") || !strcmp(p->tasks, "qa,rewrite");
    p->want_rewrite = both || !strcmp(p->tasks, "rewrite");
    p->want_qa = both || !strcmp(p->tasks, "qa");
    if (!p->want_rewrite && !p->want_qa) return usage_error("--tasks '%s': expected rewrite, qa or rewrite,qa", p->tasks);
    if (p->overlap_tokens >= p->chunk_tokens)
        return usage_error("%s must be smaller than --chunk-tokens", "--overlap-tokens");
    return 0;
}

static void print_prompt_config(const PromptArgs *p) {
    printf("  tasks            %s%s%s (%d pairs per Q&A request)\n", p->want_rewrite ? "rewrite" : "",
           p->want_rewrite && p->want_qa ? ", " : "", p->want_qa ? "qa" : "", p->pairs);
    printf("  chunks           %d tokens, %d overlapping, counted %s%s\n", p->chunk_tokens, p->overlap_tokens,
           p->tokenizer ? "with " : "as 1.3 per word", p->tokenizer ? p->tokenizer : "");
    if (p->want_rewrite) printf("  template         %s\n", p->rewrite);
    if (p->want_qa) printf("  template         %s\n", p->qa);
    printf("  model            %s\n", p->model);
}

static void prompts_usage(FILE *f) {
    fprintf(f,
            "usage: persona prompts --book FILE --character NAME [--alias NAME ...] --out FILE.jsonl\n"
            "\n"
            "Cuts the narrative into chunks, keeps those where the character is present, and writes\n"
            "chat requests for a teacher model (OpenAI batch input format, see data/PERSONA.md):\n"
            "rewrite the chunk in the character's first person, and question/answer pairs in the\n"
            "character's voice.\n"
            "\n" BOOK_HELP "  --out FILE.jsonl       the requests (required)\n" PROMPTS_HELP
            "  --help                 this text\n");
}

static int cmd_prompts(int argc, char **argv) {
    BookOptions bo = {.min_confidence = 0.7};
    PromptArgs pa = prompt_defaults();
    const char *out = NULL;
    for (int i = 2; i < argc; i++) {
        int r = book_option(&bo, argc, argv, &i);
        if (r == 0) r = prompt_option(&pa, argc, argv, &i);
        if (r < 0) return 1;
        if (r) continue;
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            prompts_usage(stdout);
            return 0;
        }
        if (i + 1 < argc && !strcmp(a, "--out")) out = argv[++i];
        else return usage_error("unknown option or missing value: %s", a);
    }
    if (check_book_options(&bo)) return 1;
    if (!out) return usage_error("%s is required", "--out FILE.jsonl");
    if (check_prompt_args(&pa)) return 1;
    if (refuse_same("--out", out, "--book", "book", bo.book) || refuse_same("--out", out, "--tokenizer", "tokenizer", pa.tokenizer) ||
        refuse_same("--out", out, "--template-rewrite", "template", pa.rewrite) ||
        refuse_same("--out", out, "--template-qa", "template", pa.qa))
        return 1;

    printf("persona prompts\n");
    print_book_config(&bo);
    printf("  out              %s\n", out);
    print_prompt_config(&pa);

    char err[ERR_LEN];
    PromptTools tools;
    if (prompt_tools_load(&tools, pa.tokenizer, pa.want_rewrite ? pa.rewrite : NULL, pa.want_qa ? pa.qa : NULL, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    Book book;
    Dialogue d;
    int rc = 0;
    if (load_dialogue(&bo, &book, &d)) {
        prompt_tools_free(&tools);
        return 1;
    }
    PromptOptions po = {bo.character, bo.aliases, bo.n_aliases, bo.min_confidence, tools.tokenizer,
                        pa.chunk_tokens, pa.overlap_tokens, pa.pairs, tools.rewrite, tools.qa, pa.model};
    OutFile f = {0};
    PromptStats st;
    if (outfile_open(&f, out, err)) {
        fprintf(stderr, "error: %s\n", err);
        rc = 2;
    } else {
        prompts_write(&d, &po, f.f, &st);
        if (st.kept == 0) {
            outfile_abort(&f);
            fprintf(stderr, "error: %s: \"%s\" is in none of the %zu chunks (never named, never speaking)\n", bo.book,
                    bo.character, st.chunks);
            rc = 1;
        } else if (outfile_commit(&f, err)) {
            fprintf(stderr, "error: %s\n", err);
            rc = 2;
        } else {
            prompts_report(&st, bo.character, stdout);
            printf("requests: %zu written to %s\n", st.requests, out);
        }
    }
    dialogue_free(&d);
    book_free(&book);
    prompt_tools_free(&tools);
    return rc;
}

// ---------------------------------------------------------------------------------------
// ingest

static void ingest_usage(FILE *f) {
    fprintf(f,
            "usage: persona ingest --requests FILE.jsonl --answers FILE.jsonl --out-narrative FILE.jsonl\n"
            "                      --out-qa FILE.jsonl [--rejects FILE.jsonl]\n"
            "\n"
            "Joins a teacher's answers to the requests of `persona prompts` and writes conversations:\n"
            "rewrites as first-person recollections, Q&A pairs as question/answer turns. Malformed\n"
            "answers are rejected whole, each with a counted reason.\n"
            "\n"
            "  --requests FILE        the requests that `persona prompts` wrote (required)\n"
            "  --answers FILE         the teacher's answers: OpenAI batch output lines or\n"
            "                         {\"custom_id\", \"content\"} lines (required)\n"
            "  --out-narrative FILE   conversations from rewrites (required when there are rewrite\n"
            "                         requests)\n"
            "  --out-qa FILE          conversations from Q&A pairs (required when there are qa\n"
            "                         requests)\n"
            "  --rejects FILE         also write each rejected answer's line, id and reason\n"
            "  --help                 this text\n");
}

static int cmd_ingest(int argc, char **argv) {
    const char *requests = NULL, *answers = NULL, *outs[3] = {NULL, NULL, NULL};
    static const char *const out_flags[3] = {"--out-narrative", "--out-qa", "--rejects"};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            ingest_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) return usage_error("unknown option or missing value: %s", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--requests")) requests = v;
        else if (!strcmp(a, "--answers")) answers = v;
        else if (!strcmp(a, out_flags[0])) outs[0] = v;
        else if (!strcmp(a, out_flags[1])) outs[1] = v;
        else if (!strcmp(a, out_flags[2])) outs[2] = v;
        else return usage_error("unknown option or missing value: %s", a);
    }
    if (!requests) return usage_error("%s is required", "--requests FILE");
    if (!answers) return usage_error("%s is required", "--answers FILE");
    for (int k = 0; k < 3; k++) {
        if (refuse_same(out_flags[k], outs[k], "--requests", "requests", requests) ||
            refuse_same(out_flags[k], outs[k], "--answers", "answers", answers))
            return 1;
        for (int j = 0; j < k; j++)
            if (refuse_same(out_flags[k], outs[k], out_flags[j], "output", outs[j])) return 1;
    }
    printf("persona ingest\n");
    printf("  requests         %s\n  answers          %s\n", requests, answers);
    for (int k = 0; k < 3; k++)
        if (outs[k]) printf("  %-16s %s\n", out_flags[k] + 2, outs[k]);
    IngestStats st;
    int rc = ingest_files(requests, answers, outs, &st);
    if (rc == 0) printf("conversations: %zu narrative, %zu qa\n", st.conversations[0], st.conversations[1]);
    return rc;
}

// ---------------------------------------------------------------------------------------
// mix

static void mix_usage(FILE *f) {
    fprintf(f,
            "usage: persona mix --out-dir DIR [options] SOURCE[:WEIGHT] ...\n"
            "\n"
            "Combines conversation files into DIR/train.jsonl and DIR/val.jsonl: exact and near\n"
            "duplicates removed, a seeded shuffle, a validation split, each source's conversations\n"
            "repeated or sampled by its WEIGHT (default 1; 0.5 keeps half, 2 doubles) in training.\n"
            "\n"
            "  --out-dir DIR          where train.jsonl and val.jsonl go (required; created if missing)\n"
            "  --val-fraction F       share of the conversations for validation, 0..0.9 (default 0.1)\n"
            "  --seed N               seed of the shuffles and of fractional weights (default 1)\n"
            "  --system TEXT          persona system prompt for conversations that have none\n"
            "  --system-file FILE     the same, read from FILE\n"
            "  --help                 this text\n");
}

// "file.jsonl:0.5" -> path (a new string) and weight; a suffix that is not a number is part
// of the path.
static int parse_source(const char *arg, MixSource *src) {
    memset(src, 0, sizeof *src);
    src->weight = 1;
    const char *colon = strrchr(arg, ':');
    char *end = NULL;
    double w = colon ? strtod(colon + 1, &end) : 0;
    if (!colon || end == colon + 1 || *end) {
        src->path = xstrdup(arg);
        return 0;
    }
    src->path = strndup(arg, (size_t)(colon - arg));
    src->weight = w;
    if (!(w >= 0 && w <= 100)) {
        fprintf(stderr, "error: %s: the weight must be from 0 to 100\n", arg);
        return -1;
    }
    return 0;
}

static int cmd_mix(int argc, char **argv) {
    const char *out_dir = NULL, *system = NULL, *system_file = NULL;
    double val_fraction = 0.1, seed = 1;
    MixSource *sources = xcalloc((size_t)argc, sizeof(MixSource));
    size_t n = 0;
    int rc = 0;
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            mix_usage(stdout);
            free(sources);
            return 0;
        }
    for (int i = 2; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) {
            rc = -parse_source(a, &sources[n++]);
            continue;
        }
        if (i + 1 >= argc) {
            rc = usage_error("unknown option or missing value: %s", a);
            break;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--out-dir")) out_dir = v;
        else if (!strcmp(a, "--system")) system = v;
        else if (!strcmp(a, "--system-file")) system_file = v;
        else if (!strcmp(a, "--val-fraction")) rc = -parse_number(a, v, 0, 0.9, &val_fraction);
        else if (!strcmp(a, "--seed")) rc = -parse_number(a, v, 0, 1e15, &seed);
        else rc = usage_error("unknown option or missing value: %s", a);
    }
    if (rc == 0 && !out_dir) rc = usage_error("%s is required", "--out-dir DIR");
    if (rc == 0 && n == 0) rc = usage_error("%s", "no SOURCE file given");
    if (rc == 0 && system && system_file)
        rc = usage_error("%s", "--system and --system-file exclude each other");
    char err[ERR_LEN];
    char *system_text = NULL;
    if (rc == 0 && system_file) {
        size_t len;
        system_text = read_file(system_file, &len, err);
        if (!system_text) {
            fprintf(stderr, "error: %s\n", err);
            rc = 1;
        } else {
            while (len && (system_text[len - 1] == '\n' || system_text[len - 1] == ' ')) system_text[--len] = '\0';
            system = system_text;
        }
    }
    if (rc == 0) {
        printf("persona mix\n");
        for (size_t s = 0; s < n; s++) printf("  source           %s (weight %g)\n", sources[s].path, sources[s].weight);
        printf("  out dir          %s\n  val fraction     %g\n  seed             %.0f\n", out_dir, val_fraction, seed);
        printf("  system prompt    %s\n", system ? system : "(none)");
        MixOptions mo = {sources, n, val_fraction, (uint64_t)seed, system};
        rc = mix_to_dir(&mo, out_dir, stdout);
    }
    for (size_t i = 0; i < n; i++) free((char *)sources[i].path);
    free(system_text);
    free(sources);
    return rc;
}

// ---------------------------------------------------------------------------------------
// build

static void build_usage(FILE *f) {
    fprintf(f,
            "usage: persona build --book FILE --character NAME [--alias NAME ...] --out DIR\n"
            "                     [--teacher COMMAND]\n"
            "\n"
            "The whole method in one command: the character's own lines (extract), requests for a\n"
            "teacher model (prompts), the teacher's answers, their conversations (ingest), and the\n"
            "training set (mix). Writes DIR/train.jsonl and DIR/val.jsonl (for prep), DIR/report.txt\n"
            "(what was found, counts, a confidence histogram, what was dropped, samples to read),\n"
            "DIR/probes.txt (questions to ask the trained character), and every step's file.\n"
            "Without --teacher the training set is the character's own lines only (strategy A).\n"
            "\n" BOOK_HELP
            "  --out DIR              where everything goes (required; created if missing)\n"
            "  --teacher COMMAND      a shell command that answers the requests: it reads requests\n"
            "                         JSONL on standard input and writes answers JSONL on standard\n"
            "                         output, or names the files as {requests} and {answers}\n"
            "                         (default: none, strategy A only)\n" PROMPTS_HELP
            "  --context-words N      length of a narrative context, in words (default 60)\n"
            "  --system TEXT          system prompt (default \"You are NAME.\")\n"
            "  --weight-narrative W   weight of the rewrites in training (default 0.5)\n"
            "  --weight-qa W          weight of the Q&A pairs in training (default 1)\n"
            "  --val-fraction F       share of the conversations for validation (default 0.1)\n"
            "  --seed N               seed of the shuffles and samples (default 1)\n"
            "  --help                 this text\n");
}

static int cmd_build(int argc, char **argv) {
    BookOptions bo = {.min_confidence = 0.7};
    PromptArgs pa = prompt_defaults();
    BuildOptions o = {.context_words = 60, .weight_narrative = 0.5, .weight_qa = 1, .val_fraction = 0.1, .seed = 1};
    double seed = 1;
    for (int i = 2; i < argc; i++) {
        int r = book_option(&bo, argc, argv, &i);
        if (r == 0) r = prompt_option(&pa, argc, argv, &i);
        if (r < 0) return 1;
        if (r) continue;
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            build_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) return usage_error("unknown option or missing value: %s", a);
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--out")) o.out_dir = v;
        else if (!strcmp(a, "--teacher")) o.teacher = v;
        else if (!strcmp(a, "--system")) o.system = v;
        else if (!strcmp(a, "--context-words")) bad = parse_count(a, v, 1, 10000, &o.context_words);
        else if (!strcmp(a, "--weight-narrative")) bad = parse_number(a, v, 0, 100, &o.weight_narrative);
        else if (!strcmp(a, "--weight-qa")) bad = parse_number(a, v, 0, 100, &o.weight_qa);
        else if (!strcmp(a, "--val-fraction")) bad = parse_number(a, v, 0, 0.9, &o.val_fraction);
        else if (!strcmp(a, "--seed")) bad = parse_number(a, v, 0, 1e15, &seed);
        else return usage_error("unknown option or missing value: %s", a);
        if (bad) return 1;
    }
    if (check_book_options(&bo)) return 1;
    if (!o.out_dir) return usage_error("%s is required", "--out DIR");
    if (check_prompt_args(&pa)) return 1;
    o.book = bo.book;
    o.parse = bo.parse;
    o.dialogue = dialogue_options(&bo);
    o.min_confidence = bo.min_confidence;
    o.tokenizer = pa.tokenizer;
    o.template_rewrite = pa.want_rewrite ? pa.rewrite : NULL;
    o.template_qa = pa.want_qa ? pa.qa : NULL;
    o.model = pa.model;
    o.pairs = pa.pairs;
    o.chunk_tokens = pa.chunk_tokens;
    o.overlap_tokens = pa.overlap_tokens;
    o.seed = (uint64_t)seed;
    printf("persona build\n");
    print_book_config(&bo);
    printf("  out              %s\n", o.out_dir);
    printf("  teacher          %s\n", o.teacher ? o.teacher : "(none: the character's own lines only)");
    if (o.teacher) print_prompt_config(&pa);
    return build_run(&o);
}

// ---------------------------------------------------------------------------------------

static void usage(FILE *f) {
    fprintf(f,
            "usage: persona COMMAND [options]   (persona COMMAND --help for its options)\n"
            "\n"
            "Turns a novel into a conversational dataset in one character's voice.\n"
            "\n"
            "  build     all of it, in one command: the training set, a report and probes\n"
            "  extract   the character's own lines, with what was said to them\n"
            "  prompts   chat requests for a teacher model: first-person rewrites, Q&A pairs\n"
            "  ingest    the teacher's answers -> conversations\n"
            "  mix       sources -> train.jsonl and val.jsonl (weights, dedupe, shuffle, split)\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "error: no command: expected build, extract, prompts, ingest or mix (see persona --help)\n");
        return 1;
    }
    outfile_catch_signals();
    const char *cmd = argv[1];
    int rc;
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    } else if (!strcmp(cmd, "build")) {
        rc = cmd_build(argc, argv);
    } else if (!strcmp(cmd, "extract")) {
        rc = cmd_extract(argc, argv);
    } else if (!strcmp(cmd, "prompts")) {
        rc = cmd_prompts(argc, argv);
    } else if (!strcmp(cmd, "ingest")) {
        rc = cmd_ingest(argc, argv);
    } else if (!strcmp(cmd, "mix")) {
        rc = cmd_mix(argc, argv);
    } else {
        fprintf(stderr, "error: unknown command '%s' (expected build, extract, prompts, ingest or mix)\n", cmd);
        return 1;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "error: writing the report failed\n");
        rc = 2;
    }
    return rc;
}
