/*
 * persona_jsonl.h: the files `persona` reads and writes.
 *
 * - Output files are written under a temporary name (PATH.tmp) and renamed into place once
 *   complete, so a failed run never leaves a half-written file where a finished one is
 *   expected, and never replaces a good one. The outputs of one run are committed together:
 *   when one cannot be written, none is renamed and every temporary file is removed.
 *   SIGINT, SIGTERM and SIGHUP remove the temporary files (and stop a teacher process)
 *   before the process dies of the signal, so the shell sees 130, 143 or 129.
 * - An output is never one of the inputs: the same file under any name (a link, another
 *   spelling of the path) is refused before anything is written.
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
    int slot;  // its place among the temporary files a signal removes
} OutFile;

// Opens PATH.tmp for writing. Returns 0, or -1 with the reason in err.
int outfile_open(OutFile *o, const char *path, char *err);
// Flushes and closes the open files of files[0..n) and, when every one was written,
// renames each into place; otherwise removes every temporary file. Returns 0, or -1 with
// "PATH.tmp: write failed: reason" (or the rename's failure) in err.
int outfiles_commit(OutFile *files, size_t n, char *err);
int outfile_commit(OutFile *o, char *err);
// Ends a step that wrote files[0..n): when rc is 0, commits them (a failure is printed as
// "error: reason" and gives 2); otherwise removes them. Returns the step's status.
int outfiles_finish(OutFile *files, size_t n, int rc);
// Closes and removes the temporary file (a run that failed half-way); nothing if not open.
void outfile_abort(OutFile *o);
// From now on SIGINT, SIGTERM and SIGHUP remove the open temporary files, then kill the
// process with the signal (a signal ignored when the program started stays ignored).
void outfile_catch_signals(void);
// The child process that such a signal also stops (SIGTERM), or 0 for none.
void outfile_set_child(long pid);
// 1 when paths a and b name the same existing file (or a is b's temporary file, b.tmp):
// writing a would replace b.
int same_file(const char *a, const char *b);

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
