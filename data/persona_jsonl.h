/*
 * persona_jsonl.h: the files `persona` reads and writes.
 *
 * - Output files are written under a temporary name (PATH.tmp) and renamed into place once
 *   complete, so a failed run never leaves a half-written file where a finished one is
 *   expected, and never replaces a good one.
 * - JSONL: one JSON value per line, written compactly by cJSON (valid JSON, UTF-8 as is,
 *   control characters escaped). Reading skips blank lines and counts every line, so
 *   messages can say `file:line`.
 * - Conversations are mistral-finetune's
 *     {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}]}
 *   with an optional "meta" object that says where the conversation came from
 *   (mistral-finetune and `prep` read "messages" and ignore other keys).
 */
#ifndef PERSONA_JSONL_H
#define PERSONA_JSONL_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    char *path, *tmp;
    FILE *f;
} OutFile;

// Opens PATH.tmp for writing. Returns 0, or -1 with the reason in err.
int outfile_open(OutFile *o, const char *path, char *err);
// Flushes, closes and renames the file into place. Returns 0, or -1 (the temporary file
// removed) with the reason in err.
int outfile_commit(OutFile *o, char *err);
// Closes and removes the temporary file (a run that failed half-way).
void outfile_abort(OutFile *o);

// json printed compactly (out of memory is a runtime failure: exit 2); free() it.
char *jsonl_print(const cJSON *json);
// Writes json as one line.
void jsonl_write(FILE *f, const cJSON *json);
// Writes an already printed JSON value as one line.
void jsonl_write_line(FILE *f, const char *json);

typedef struct {
    char *data;
    size_t len, pos;
    size_t line;  // number of the line last returned (1-based)
} LineReader;

int lines_open(LineReader *r, const char *path, char *err);
// The next non-blank line in *s, *n (not NUL-terminated): 1, or 0 at the end.
int lines_next(LineReader *r, const char **s, size_t *n);
void lines_close(LineReader *r);

// {"messages": []}, and a message appended to it.
cJSON *jsonl_conversation(void);
void jsonl_add_message(cJSON *conversation, const char *role, const char *content);

// FNV-1a, 64 bits: stable ids and duplicate detection (not for security).
uint64_t fnv1a64(const void *data, size_t n, uint64_t h);
#define FNV1A64_INIT 0xcbf29ce484222325ULL

#endif
