/*
 * persona_build.h: the whole method in one command, `persona build`.
 *
 *   book ─extract─► DIR/dialogue.jsonl, DIR/turns.tsv                      (A) own lines
 *   book ─prompts─► DIR/requests.jsonl ─the teacher─► DIR/answers.jsonl
 *        ─ingest─► DIR/narrative.jsonl, DIR/qa.jsonl, DIR/rejects.jsonl    (B) rewrites, (C) Q&A
 *   ─mix─► DIR/train.jsonl, DIR/val.jsonl                                   for prep
 *   and DIR/report.txt, DIR/probes.txt
 *
 * The book is read and attributed once. The teacher is any shell command that answers the
 * requests: it reads requests JSONL on standard input and writes answers JSONL on standard
 * output, or, when the command names them as {requests} and {answers}, reads and writes
 * those files (the paths are put in single quotes); a failure of the command (a non-zero
 * exit status) stops the build with exit status 2. Without a teacher, the build goes from
 * extract straight to mix: the training set is strategy A alone, and the report says so.
 *
 * DIR/report.txt: everything the steps print (what the cleaning dropped, with file lines;
 * turns and lines by attribution method; chunks; answers accepted and rejected by reason;
 * the mix), a histogram of the attribution confidence of the lines attributed to the
 * character, and ten of the character's lines drawn at random (seeded) with the turn
 * before each, to read. DIR/probes.txt: questions for the trained character, one a line
 * (persona_probes.h).
 *
 * Every file is written under a temporary name and renamed when complete; the book may not
 * be one of them. Mix weights: the character's own lines 1, the rewrites --weight-narrative
 * (0.5), the Q&A --weight-qa (1); the system prompt defaults to "You are NAME.".
 */
#ifndef PERSONA_BUILD_H
#define PERSONA_BUILD_H

#include <stdint.h>

#include "persona_book.h"
#include "persona_dialogue.h"

#define BUILD_MAX_ALIASES 32

typedef struct {
    const char *book;
    BookParseOptions parse;
    DialogueOptions dialogue;
    double min_confidence;
    int context_words;
    const char *out_dir;
    const char *teacher;  // NULL: strategy A only
    // the requests (used only with a teacher)
    const char *tokenizer, *template_rewrite, *template_qa, *model;
    int pairs, chunk_tokens, overlap_tokens;
    // the mix
    const char *system;  // NULL: "You are NAME."
    double weight_narrative, weight_qa, val_fraction;
    uint64_t seed;
} BuildOptions;

// Runs the build, printing its report. Returns the exit status: 0, 1 bad input, 2 a runtime
// failure (a write, the teacher command).
int build_run(const BuildOptions *o);

#endif
