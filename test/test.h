/*
 * test.h: the project's tiny C test harness.
 *
 * A test file is a program: it defines test functions with TEST(name), runs them from
 * main() with RUN(name), and ends with `return test_summary();`. Every RUN prints one line,
 * `PASS name` or `FAIL name`, after the messages of the checks that failed in it
 * (file:line, the expression, the values). test/run.sh runs every test program and script,
 * counts those lines, and prints the closing `N passed, N failed`.
 *
 * A check that fails does not stop the test (so one run shows every mismatch); CHECK_*
 * evaluate their arguments once. SKIP(reason) ends a test whose reference is not installed
 * on this machine (the CUDA toolkit's headers, ...): RUN prints `SKIP name (reason)`, which
 * test/run.sh counts and lists apart, never as a pass.
 */
#ifndef PERSONA_TEST_H
#define PERSONA_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failed_checks;  // checks failed in the current test
// set by SKIP in the current test (unused in a program with its own RUN: test_cuda_allreduce)
static const char *test_skip_reason __attribute__((unused));
static int test_passed, test_failed, test_skipped;

#define SKIP(reason)                 \
    do {                             \
        test_skip_reason = (reason); \
        return;                      \
    } while (0)

#define TEST(name) static void name(void)

#define RUN(name)                                                   \
    do {                                                            \
        test_failed_checks = 0;                                     \
        test_skip_reason = NULL;                                    \
        name();                                                     \
        if (test_skip_reason && !test_failed_checks) {              \
            test_skipped++;                                         \
            printf("SKIP %s (%s)\n", #name, test_skip_reason);      \
        } else if (test_failed_checks) {                            \
            test_failed++;                                          \
            printf("FAIL %s\n", #name);                             \
        } else {                                                    \
            test_passed++;                                          \
            printf("PASS %s\n", #name);                             \
        }                                                           \
        fflush(stdout);                                             \
    } while (0)

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            printf("  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
            test_failed_checks++;                                                \
        }                                                                        \
    } while (0)

#define CHECK_INT(a, b)                                                                  \
    do {                                                                                 \
        long long a_ = (long long)(a), b_ = (long long)(b);                              \
        if (a_ != b_) {                                                                  \
            printf("  %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b, \
                   a_, b_);                                                              \
            test_failed_checks++;                                                        \
        }                                                                                \
    } while (0)

#define CHECK_STR(a, b)                                                                    \
    do {                                                                                   \
        const char *a_ = (a), *b_ = (b);                                                   \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                           \
            printf("  %s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a, #b, \
                   a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                \
            test_failed_checks++;                                                          \
        }                                                                                  \
    } while (0)

// Checks that the string s contains the substring sub (for error messages).
#define CHECK_CONTAINS(s, sub)                                                              \
    do {                                                                                    \
        const char *s_ = (s), *sub_ = (sub);                                                \
        if (!s_ || !strstr(s_, sub_)) {                                                     \
            printf("  %s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__,           \
                   s_ ? s_ : "(null)", sub_);                                               \
            test_failed_checks++;                                                           \
        }                                                                                   \
    } while (0)

// Compares two int32 arrays and reports the first difference.
#define CHECK_IDS(got, got_n, want, want_n)                                                 \
    do {                                                                                    \
        const int32_t *g_ = (got), *w_ = (want);                                            \
        size_t gn_ = (got_n), wn_ = (want_n), i_ = 0;                                       \
        while (i_ < gn_ && i_ < wn_ && g_[i_] == w_[i_]) i_++;                              \
        if (i_ < gn_ || i_ < wn_) {                                                         \
            printf("  %s:%d: ids differ at %zu (lengths %zu, %zu): got %ld, want %ld\n",      \
                   __FILE__, __LINE__, i_, gn_, wn_, i_ < gn_ ? (long)g_[i_] : -1L,          \
                   i_ < wn_ ? (long)w_[i_] : -1L);                                          \
            test_failed_checks++;                                                           \
        }                                                                                   \
    } while (0)

// The directory of the tokenizer files mistral-common ships, which test/run.sh passes to
// every test program as argv[1]; a program that needs it stops here without it.
static inline const char *test_tokenizer_dir(int argc, char **argv) {
    if (argc < 2) {
        printf("FAIL tokenizer_data_dir_missing (usage: %s MISTRAL_COMMON_DATA_DIR)\n", argv[0]);
        exit(1);
    }
    return argv[1];
}

static inline int test_summary(void) {
    if (test_skipped) printf("# %d passed, %d failed, %d skipped in this program\n", test_passed, test_failed, test_skipped);
    else printf("# %d passed, %d failed in this program\n", test_passed, test_failed);
    return test_failed ? 1 : 0;
}

#endif
