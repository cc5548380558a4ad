/*
 * persona_mix.h: the final training set, train.jsonl and val.jsonl, from several sources.
 *
 * Each source is a JSONL file of conversations (what extract and ingest write, or any
 * mistral-finetune file); every line is checked as `prep` checks it (data/conversation.h,
 * finetuning rules), and a bad line stops the run with `file:line: reason`. Then:
 *   1. duplicates go, the first occurrence staying (in the order the sources are given):
 *      exact (the same messages) and near (the same text once lower-cased, with everything
 *      but letters and digits dropped: "Quite so!" and "quite so" are one), both by a 64-bit
 *      FNV-1a hash of that text;
 *   2. the persona system prompt, when given, is put first in every conversation without a
 *      system message;
 *   3. the unique conversations are shuffled (SplitMix64 seeded with --seed, Fisher-Yates)
 *      and round(--val-fraction x n) of them, at least one when the fraction is not 0 and at
 *      most n - 1, are the validation set, each once;
 *   4. every other conversation goes to training as many times as its source's weight says:
 *      floor(w) copies, and one more with probability w - floor(w) (weight 0.5 keeps half a
 *      source, 2 doubles it, 0 leaves it out of both sets); the training set is shuffled again.
 * Only "messages" is written: the "meta" that extract and ingest add stays behind.
 */
#ifndef PERSONA_MIX_H
#define PERSONA_MIX_H

#include <stdint.h>
#include <stdio.h>

typedef struct {
    const char *path;
    double weight;
    // filled in by mix_run
    size_t lines, exact, near, train, val;
} MixSource;

typedef struct {
    MixSource *sources;
    size_t n;
    double val_fraction;
    uint64_t seed;
    const char *system;  // NULL: no system prompt
} MixOptions;

// Returns 0, or -1 with `file:line: reason` in err (bad input; nothing was written).
int mix_run(MixOptions *o, FILE *train, FILE *val, char *err);

// All of `persona mix` into the directory dir: refuses a source that is one of the outputs
// (DIR/train.jsonl or DIR/val.jsonl, under any name), creates dir when missing, writes both
// files together (or neither), and prints one line per source and a summary to report
// (errors to stderr). Returns the exit status: 0, 1 bad input, 2 a failed write.
int mix_to_dir(MixOptions *o, const char *dir, FILE *report);

#endif
