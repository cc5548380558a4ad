/*
 * persona.c: the `persona` program, a novel -> a conversational dataset in one character's
 * voice. Four subcommands, one per step of the method (data/PERSONA.md is the manual):
 *
 *   persona extract  the character's own lines, with what was said to them (strategy A)
 *   persona prompts  chunks of narrative where the character is present -> chat requests for
 *                    a teacher model: first-person rewrites (B) and question/answer pairs (C)
 *   persona ingest   the teacher's answers -> conversations, malformed answers rejected
 *   persona mix      sources -> weighted, deduplicated, shuffled train.jsonl and val.jsonl
 *
 * Each prints its resolved configuration, then a report. Exit status: 0 success, 1 bad
 * input or usage (one line: `file:line: reason`), 2 a runtime failure (writing output).
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
#include "persona_dialogue.h"
#include "persona_extract.h"
#include "persona_ingest.h"
#include "persona_jsonl.h"
#include "persona_mix.h"
#include "persona_prompts.h"

#define MAX_ALIASES 32

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

// ---------------------------------------------------------------------------------------
// The book and the character: options that extract and prompts share

typedef struct {
    const char *book, *character;
    const char *aliases[MAX_ALIASES];
    size_t n_aliases;
    int narrator;
    QuoteFamily quotes;
    BookFormat format;
    double min_confidence;
} BookOptions;

#define BOOK_HELP                                                                                  \
    "  --book FILE            the book, UTF-8 text (required)\n"                                    \
    "  --character NAME       the character, as the book names them (required)\n"                  \
    "  --alias NAME           another name for the character (repeatable): a surname, a title\n"   \
    "  --narrator             the character is the book's narrator (\"I\")\n"                      \
    "  --quotes STYLE         auto, double (\"...\" and curly) or single ('...', curly, `...')\n"   \
    "                         (default auto: the style that finds more quotations)\n"              \
    "  --format F             auto, prose or script (default auto)\n"                              \
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
        if (o->n_aliases == MAX_ALIASES) return usage_error("more than %s aliases", "32"), -1;
        o->aliases[o->n_aliases++] = v;
    } else if (!strcmp(a, "--quotes")) {
        if (!strcmp(v, "auto")) o->quotes = QUOTES_AUTO;
        else if (!strcmp(v, "double")) o->quotes = QUOTES_DOUBLE;
        else if (!strcmp(v, "single")) o->quotes = QUOTES_SINGLE;
        else return usage_error("--quotes '%s': expected auto, double or single", v), -1;
    } else if (!strcmp(a, "--format")) {
        if (!strcmp(v, "auto")) o->format = BOOK_AUTO;
        else if (!strcmp(v, "prose")) o->format = BOOK_PROSE;
        else if (!strcmp(v, "script")) o->format = BOOK_SCRIPT;
        else return usage_error("--format '%s': expected auto, prose or script", v), -1;
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
    printf("  book             %s\n", o->book);
    printf("  character        %s", o->character);
    for (size_t i = 0; i < o->n_aliases; i++) printf("%s%s", i ? ", " : " (aliases: ", o->aliases[i]);
    printf("%s%s\n", o->n_aliases ? ")" : "", o->narrator ? ", the narrator" : "");
    printf("  min confidence   %.2f\n", o->min_confidence);
}

// Loads and cleans the book, finds its dialogue, and prints what was found.
static int load_dialogue(const BookOptions *o, Book *book, Dialogue *d) {
    char err[ERR_LEN];
    if (book_load(book, o->book, o->format, err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    DialogueOptions dopt = {o->character, o->aliases, o->n_aliases, o->narrator, o->quotes};
    dialogue_build(d, book, &dopt);
    if (book->format == BOOK_SCRIPT) printf("  format           script\n");
    else printf("  format           prose, quotation marks %s\n", quotes_family_name(d->family));
    printf("book: %d lines, %zu paragraphs, %d headings", book->lines, book->n, book->headings);
    if (book->gutenberg)
        printf("; Project Gutenberg front matter (%d lines) and licence (%d lines) removed", book->front_lines,
               book->back_lines);
    printf("\n");
    printf("book: character's pronoun: %s; %zu other people found\n",
           gender_name(d->cast.entities[ENTITY_CHARACTER].gender), d->cast.n - 2);
    if (d->cast.learned.len)
        printf("book: also names of the character, by apposition: %s\n", d->cast.learned.data);
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
    double context_words = 60;
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
            if (parse_number("--context-words", argv[++i], 1, 10000, &context_words)) return 1;
        } else return usage_error("unknown option or missing value: %s", a);
    }
    if (check_book_options(&bo)) return 1;
    if (!out) return usage_error("%s is required", "--out FILE.jsonl");
    printf("persona extract\n");
    print_book_config(&bo);
    printf("  out              %s\n", out);
    printf("  context words    %d\n", (int)context_words);

    double t0 = seconds_now();
    Book book;
    Dialogue d;
    if (load_dialogue(&bo, &book, &d)) return 1;
    ExtractOptions eo = {bo.min_confidence, (int)context_words};
    char err[ERR_LEN];
    OutFile f;
    if (outfile_open(&f, out, err)) {
        fprintf(stderr, "error: %s\n", err);
        dialogue_free(&d);
        book_free(&book);
        return 2;
    }
    ExtractStats st;
    extract_conversations(&d, &eo, f.f, &st);
    double elapsed = seconds_now() - t0;
    size_t written = 0, below = 0;
    for (int m = 0; m < ATTR_COUNT; m++) written += st.lines[m], below += st.below[m];
    int rc = 0;
    if (written == 0) {
        outfile_abort(&f);
        if (below == 0)
            fprintf(stderr,
                    "error: %s: \"%s\" never speaks: none of the %zu turns found is attributed to them\n",
                    bo.book, bo.character, st.turns);
        else
            fprintf(stderr,
                    "error: %s: none of the %zu lines attributed to \"%s\" reaches --min-confidence %.2f\n",
                    bo.book, below, bo.character, bo.min_confidence);
        rc = 1;
    } else if (outfile_commit(&f, err)) {
        fprintf(stderr, "error: %s\n", err);
        rc = 2;
    }
    if (rc == 0 && turns) {
        OutFile tf;
        if (outfile_open(&tf, turns, err) == 0) {
            extract_write_turns(&d, &eo, tf.f);
            if (outfile_commit(&tf, err)) rc = 2;
        } else {
            rc = 2;
        }
        if (rc) fprintf(stderr, "error: %s\n", err);
    }
    if (rc == 0) {
        printf(
            "dialogue: %zu quotations, %zu turns (%zu unattributed, %zu by groups, %zu in stories told by a\n"
            "          speaker), %zu texts read aloud\n",
            d.quotations, st.turns, st.unattributed, st.groups, st.nested, d.documents);
        printf("lines of %s: %zu written", bo.character, written);
        for (int m = 1; m < ATTR_COUNT; m++)
            if (st.lines[m]) printf(", %s %zu", attr_method_name((AttrMethod)m), st.lines[m]);
        printf("\nskipped: %zu below --min-confidence", below);
        for (int m = 1; m < ATTR_COUNT; m++)
            if (st.below[m]) printf(", %s %zu", attr_method_name((AttrMethod)m), st.below[m]);
        printf("; %zu ambiguous turns (no speaker); %zu without any context\n", st.unattributed, st.no_context);
        printf("conversations: %zu written to %s (first user turn: %zu what was said, %zu narrative)\n",
               st.conversations, out, st.user_speech, st.user_context);
        printf("time: %.3f s for reading, cleaning, attributing and writing\n", elapsed);
    }
    dialogue_free(&d);
    book_free(&book);
    return rc;
}

// ---------------------------------------------------------------------------------------
// prompts

static void prompts_usage(FILE *f) {
    fprintf(f,
            "usage: persona prompts --book FILE --character NAME [--alias NAME ...] --out FILE.jsonl\n"
            "\n"
            "Cuts the narrative into chunks, keeps those where the character is present, and writes\n"
            "chat requests for a teacher model (OpenAI batch input format, see data/PERSONA.md):\n"
            "rewrite the chunk in the character's first person, and question/answer pairs in the\n"
            "character's voice.\n"
            "\n" BOOK_HELP
            "  --out FILE.jsonl       the requests (required)\n"
            "  --tasks LIST           rewrite, qa, or rewrite,qa (default rewrite,qa)\n"
            "  --pairs N              question/answer pairs asked per chunk (default 3)\n"
            "  --chunk-tokens N       most tokens in a chunk (default 512)\n"
            "  --overlap-tokens N     tokens a chunk repeats from the one before (default 64)\n"
            "  --tokenizer FILE       count tokens with this tokenizer.model or tekken.json\n"
            "                         (default: estimate 1.3 tokens per word)\n"
            "  --template-rewrite F   the rewrite prompt (default data/templates/rewrite.txt)\n"
            "  --template-qa F        the Q&A prompt (default data/templates/qa.txt)\n"
            "  --model NAME           \"model\" in each request (default teacher)\n"
            "  --help                 this text\n");
}

static int parse_count(const char *name, const char *s, int lo, int hi, int *out) {
    double v;
    if (parse_number(name, s, lo, hi, &v)) return -1;
    *out = (int)v;
    return 0;
}

static int cmd_prompts(int argc, char **argv) {
    BookOptions bo = {.min_confidence = 0.7};
    const char *out = NULL, *tokenizer = NULL, *tasks = "rewrite,qa", *model = "teacher";
    const char *rewrite_path = "data/templates/rewrite.txt", *qa_path = "data/templates/qa.txt";
    int pairs = 3, chunk_tokens = 512, overlap_tokens = 64;
    for (int i = 2; i < argc; i++) {
        int r = book_option(&bo, argc, argv, &i);
        if (r < 0) return 1;
        if (r) continue;
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            prompts_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) return usage_error("unknown option or missing value: %s", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--tasks")) tasks = v;
        else if (!strcmp(a, "--tokenizer")) tokenizer = v;
        else if (!strcmp(a, "--template-rewrite")) rewrite_path = v;
        else if (!strcmp(a, "--template-qa")) qa_path = v;
        else if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--pairs")) {
            if (parse_count(a, v, 1, 20, &pairs)) return 1;
        } else if (!strcmp(a, "--chunk-tokens")) {
            if (parse_count(a, v, 32, 100000, &chunk_tokens)) return 1;
        } else if (!strcmp(a, "--overlap-tokens")) {
            if (parse_count(a, v, 0, 100000, &overlap_tokens)) return 1;
        } else return usage_error("unknown option or missing value: %s", a);
    }
    if (check_book_options(&bo)) return 1;
    if (!out) return usage_error("%s is required", "--out FILE.jsonl");
    int both = !strcmp(tasks, "rewrite,qa") || !strcmp(tasks, "qa,rewrite");
    int want_rewrite = both || !strcmp(tasks, "rewrite"), want_qa = both || !strcmp(tasks, "qa");
    if (!want_rewrite && !want_qa)
        return usage_error("--tasks '%s': expected rewrite, qa or rewrite,qa", tasks);
    if (overlap_tokens >= chunk_tokens)
        return usage_error("%s must be smaller than --chunk-tokens", "--overlap-tokens");

    printf("persona prompts\n");
    print_book_config(&bo);
    printf("  out              %s\n", out);
    printf("  tasks            %s%s%s (%d pairs per Q&A request)\n", want_rewrite ? "rewrite" : "",
           want_rewrite && want_qa ? ", " : "", want_qa ? "qa" : "", pairs);
    printf("  chunks           %d tokens, %d overlapping, counted %s%s\n", chunk_tokens, overlap_tokens,
           tokenizer ? "with " : "as 1.3 per word", tokenizer ? tokenizer : "");
    if (want_rewrite) printf("  template         %s\n", rewrite_path);
    if (want_qa) printf("  template         %s\n", qa_path);
    printf("  model            %s\n", model);

    char err[ERR_LEN];
    Template rewrite = {0}, qa = {0};
    Tokenizer tok;
    int have_tok = tokenizer != NULL, rc = 0;
    if ((want_rewrite && template_load(&rewrite, rewrite_path, err)) ||
        (want_qa && template_load(&qa, qa_path, err)) || (have_tok && tokenizer_load(&tok, tokenizer, err))) {
        fprintf(stderr, "error: %s\n", err);
        template_free(&rewrite);
        template_free(&qa);
        return 1;
    }
    Book book;
    Dialogue d;
    if (load_dialogue(&bo, &book, &d)) {
        rc = 1;
    } else {
        PromptOptions po = {bo.character, bo.aliases, bo.n_aliases, bo.min_confidence, have_tok ? &tok : NULL,
                            chunk_tokens, overlap_tokens, pairs, want_rewrite ? &rewrite : NULL,
                            want_qa ? &qa : NULL, model};
        OutFile f;
        PromptStats st;
        if (outfile_open(&f, out, err)) {
            fprintf(stderr, "error: %s\n", err);
            rc = 2;
        } else {
            prompts_write(&d, &po, f.f, &st);
            if (st.kept == 0) {
                outfile_abort(&f);
                fprintf(stderr,
                        "error: %s: \"%s\" is in none of the %zu chunks (never named, never speaking)\n",
                        bo.book, bo.character, st.chunks);
                rc = 1;
            } else if (outfile_commit(&f, err)) {
                fprintf(stderr, "error: %s\n", err);
                rc = 2;
            } else {
                printf("chunks: %zu, %zu with %s present (mean %.0f tokens, longest %d)\n", st.chunks, st.kept,
                       bo.character, (double)st.tokens_total / (double)st.kept, st.tokens_max);
                printf("requests: %zu written to %s\n", st.requests, out);
            }
        }
        dialogue_free(&d);
        book_free(&book);
    }
    if (have_tok) tokenizer_free(&tok);
    template_free(&rewrite);
    template_free(&qa);
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
    const char *requests = NULL, *answers = NULL, *out_narrative = NULL, *out_qa = NULL, *rejects = NULL;
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
        else if (!strcmp(a, "--out-narrative")) out_narrative = v;
        else if (!strcmp(a, "--out-qa")) out_qa = v;
        else if (!strcmp(a, "--rejects")) rejects = v;
        else return usage_error("unknown option or missing value: %s", a);
    }
    if (!requests) return usage_error("%s is required", "--requests FILE");
    if (!answers) return usage_error("%s is required", "--answers FILE");
    printf("persona ingest\n");
    printf("  requests         %s\n  answers          %s\n", requests, answers);
    char err[ERR_LEN];
    Requests *rq = requests_load(requests, err);
    if (!rq) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    size_t n_rewrite = requests_count(rq, 0), n_qa = requests_count(rq, 1);
    if ((n_rewrite && !out_narrative) || (n_qa && !out_qa)) {
        requests_free(rq);
        return usage_error("%s", n_rewrite && !out_narrative
                                     ? "--out-narrative FILE is required: the requests ask for rewrites"
                                     : "--out-qa FILE is required: the requests ask for Q&A pairs");
    }
    if (out_narrative) printf("  out narrative    %s\n", out_narrative);
    if (out_qa) printf("  out qa           %s\n", out_qa);
    OutFile files[3] = {{0}};
    const char *paths[3] = {n_rewrite ? out_narrative : NULL, n_qa ? out_qa : NULL, rejects};
    int rc = 0;
    for (int k = 0; k < 3 && rc == 0; k++)
        if (paths[k] && outfile_open(&files[k], paths[k], err)) {
            fprintf(stderr, "error: %s\n", err);
            rc = 2;
        }
    IngestStats st = {0};
    if (rc == 0) {
        IngestOutputs io = {files[0].f, files[1].f, files[2].f};
        if (ingest_answers(rq, answers, &io, &st, err)) {
            fprintf(stderr, "error: %s\n", err);
            rc = 1;
        } else if (st.conversations[0] + st.conversations[1] == 0) {
            fprintf(stderr, "error: %s: no usable answer: all %zu answers were rejected (see the report)\n",
                    answers, st.answers);
            rc = 1;
        }
    }
    if (rc) {
        for (int k = 0; k < 3; k++) outfile_abort(&files[k]);
    } else {
        for (int k = 0; k < 3 && rc == 0; k++)
            if (files[k].f && outfile_commit(&files[k], err)) {
                fprintf(stderr, "error: %s\n", err);
                rc = 2;
            }
    }
    if (st.answers) {  // what was rejected, even when nothing could be written
        printf("requests: %zu rewrite, %zu qa\n", st.requests[0], st.requests[1]);
        printf(
            "answers: %zu read, %zu rewrites and %zu Q&A answers accepted; %zu requests without a usable "
            "answer\n",
            st.answers, st.accepted[0], st.accepted[1], st.unanswered);
        printf("rejected:");
        size_t total = 0;
        for (int r = 0; r < REJECT_COUNT; r++)
            if (st.rejected[r]) printf(" %s %zu,", reject_name(r), st.rejected[r]), total += st.rejected[r];
        printf(" %zu in all\n", total);
        if (rc == 0)
            printf("conversations: %zu narrative, %zu qa\n", st.conversations[0], st.conversations[1]);
    }
    requests_free(rq);
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
            while (len && (system_text[len - 1] == '\n' || system_text[len - 1] == ' '))
                system_text[--len] = '\0';
            system = system_text;
        }
    }
    if (rc == 0) {
        printf("persona mix\n");
        for (size_t s = 0; s < n; s++)
            printf("  source           %s (weight %g)\n", sources[s].path, sources[s].weight);
        printf("  out dir          %s\n  val fraction     %g\n  seed             %.0f\n", out_dir,
               val_fraction, seed);
        printf("  system prompt    %s\n", system ? system : "(none)");
        if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "error: %s: cannot create the directory: %s\n", out_dir, strerror(errno));
            rc = 2;
        }
    }
    if (rc == 0) {
        size_t k = strlen(out_dir) + 16;
        char *train_path = xmalloc(k), *val_path = xmalloc(k);
        snprintf(train_path, k, "%s/train.jsonl", out_dir);
        snprintf(val_path, k, "%s/val.jsonl", out_dir);
        OutFile train = {0}, val = {0};
        if (outfile_open(&train, train_path, err) || outfile_open(&val, val_path, err)) {
            fprintf(stderr, "error: %s\n", err);
            rc = 2;
        } else {
            MixOptions mo = {sources, n, val_fraction, (uint64_t)seed, system};
            if (mix_run(&mo, train.f, val.f, err)) {
                fprintf(stderr, "error: %s\n", err);
                rc = 1;
            }
        }
        if (rc) {
            outfile_abort(&train);
            outfile_abort(&val);
        } else if (outfile_commit(&train, err) || outfile_commit(&val, err)) {
            fprintf(stderr, "error: %s\n", err);
            rc = 2;
        }
        if (rc == 0) {
            size_t lines = 0, dup = 0, tr = 0, va = 0;
            for (size_t s = 0; s < n; s++) {
                const MixSource *x = &sources[s];
                printf(
                    "%s: %zu conversations, %zu exact and %zu near duplicates removed, %zu to train, %zu to "
                    "val\n",
                    x->path, x->lines, x->exact, x->near, x->train, x->val);
                lines += x->lines, dup += x->exact + x->near, tr += x->train, va += x->val;
            }
            printf("mix: %zu conversations read, %zu duplicates removed; %s: %zu, %s: %zu\n", lines, dup,
                   train_path, tr, val_path, va);
        }
        free(train_path);
        free(val_path);
    }
    for (size_t i = 0; i < n; i++) free((char *)sources[i].path);
    free(system_text);
    free(sources);
    return rc;
}

// ---------------------------------------------------------------------------------------

static void usage(FILE *f) {
    fprintf(f,
            "usage: persona COMMAND [options]   (persona COMMAND --help for its options)\n"
            "\n"
            "Turns a novel into a conversational dataset in one character's voice.\n"
            "\n"
            "  extract   the character's own lines, with what was said to them\n"
            "  prompts   chat requests for a teacher model: first-person rewrites, Q&A pairs\n"
            "  ingest    the teacher's answers -> conversations\n"
            "  mix       sources -> train.jsonl and val.jsonl (weights, dedupe, shuffle, split)\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "error: no command: expected extract, prompts, ingest or mix (see persona --help)\n");
        return 1;
    }
    const char *cmd = argv[1];
    int rc;
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    } else if (!strcmp(cmd, "extract")) {
        rc = cmd_extract(argc, argv);
    } else if (!strcmp(cmd, "prompts")) {
        rc = cmd_prompts(argc, argv);
    } else if (!strcmp(cmd, "ingest")) {
        rc = cmd_ingest(argc, argv);
    } else if (!strcmp(cmd, "mix")) {
        rc = cmd_mix(argc, argv);
    } else {
        fprintf(stderr, "error: unknown command '%s' (expected extract, prompts, ingest or mix)\n", cmd);
        return 1;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "error: writing the report failed\n");
        rc = 2;
    }
    return rc;
}
