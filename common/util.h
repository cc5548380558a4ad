/*
 * util.h: the few helpers every host program shares.
 *
 * Allocation that cannot fail silently (out of memory is a runtime failure, exit 2, as
 * DESIGN.md §8 says), reading a whole file into memory, and an error buffer convention:
 * library functions return 0 on success and non-zero on failure, after writing a one-line
 * message that names the file, the offset or line, and the reason into `err`.
 */
#ifndef PERSONA_UTIL_H
#define PERSONA_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define ERR_LEN 512

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

// Formats a message into err (if err is not NULL) and returns -1, so that a failing
// function can end with `return set_error(err, "%s: offset %zu: bad tag", path, off);`.
// Control characters in the message (quoted from the input) are written as \n or \xNN, so
// that it is always one line.
int set_error(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Reads a whole file (or standard input when path is "-") into a NUL-terminated buffer.
// On failure returns NULL with the reason in err.
char *read_file(const char *path, size_t *len, char *err);

// max |got - ref| / max |ref| over n elements: how far a result is from a reference tensor,
// relative to the reference's scale (so that near-zero elements do not dominate); the
// measure of check_fixture and of the tests that compare with reference outputs. NaN in
// got gives NaN.
double max_rel_error(const float *got, const float *ref, size_t n);

// Removes a file or a directory tree (like rm -rf, without a shell). Returns 0 or -1.
int remove_tree(const char *path);

// Writes data to path through a temporary file beside it (PATH.tmp.XXXXXX, mode 0644):
// written, fsynced, renamed into place, and the directory fsynced, so a crash or a kill at
// any moment leaves the old file or the new one, never a mix, and at worst a stale
// temporary. Returns 0 or -1 with err.
int write_file_atomically(const char *path, const void *data, size_t len, char *err);
// fsyncs the directory that holds path, so that a rename into it survives a crash.
// Returns 0 or -1 (errno set).
int sync_parent_dir(const char *path);

// The index of the first NaN or infinity among x[0..n), or -1 when every value is finite.
int64_t find_non_finite(const float *x, size_t n);

// A growable byte buffer: decoded text, file output, masks.
typedef struct {
    char *data;
    size_t len, cap;
} ByteBuf;

void bytebuf_append(ByteBuf *b, const void *src, size_t n);
void bytebuf_push(ByteBuf *b, char c);
void bytebuf_free(ByteBuf *b);

// A seeded pseudo-random generator: SplitMix64 (Steele, Lea, Flood, "Fast splittable
// pseudorandom number generators", 2014). The whole state is one uint64_t, so saving and
// restoring it (a resumable data order) is copying a number; any seed, 0 included, is good.
uint64_t rng_next(uint64_t *state);
// Uniform in [0, n) for n > 0, by rejection, so no value is favoured.
uint64_t rng_below(uint64_t *state, uint64_t n);
// Uniform in [0, 1), from the top 53 bits.
double rng_uniform(uint64_t *state);

#endif
