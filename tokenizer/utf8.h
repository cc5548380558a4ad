/*
 * utf8.h: the UTF-8 facts both tokenizers need.
 *
 * A well-formed UTF-8 character (RFC 3629 / Unicode Table 3-7) is one of
 *   00..7F | C2..DF 80..BF | E0 A0..BF 80..BF | E1..EC 80..BF 80..BF | ED 80..9F 80..BF
 *   | EE..EF 80..BF 80..BF | F0 90..BF 80..BF 80..BF | F1..F3 80..BF 80..BF 80..BF
 *   | F4 80..8F 80..BF 80..BF
 * (no overlong forms, no surrogates, nothing above U+10FFFF).
 *
 * Malformed input is handled the way each reference does it:
 * - SentencePiece replaces a malformed byte by U+FFFD and moves on by one byte;
 * - Python's bytes.decode("utf-8", errors="replace") (what a Python pipeline feeding
 *   mistral-common's Tekken encoder would do) replaces each *maximal subpart* of an
 *   ill-formed sequence by one U+FFFD (Unicode §3.9, "U+FFFD substitution of maximal
 *   subparts"), so a truncated 3-byte character costs one U+FFFD, not two.
 */
#ifndef PERSONA_UTF8_H
#define PERSONA_UTF8_H

#include <stddef.h>

#include "../common/util.h"

#define UTF8_REPLACEMENT "\xEF\xBF\xBD"  // U+FFFD

// Length (1..4) of the well-formed character at s[0..n), or 0 if s starts a malformed
// sequence. When it returns 0 and `maximal` is not NULL, *maximal receives the length of
// the maximal subpart (>= 1) that a U+FFFD replaces.
size_t utf8_char_len(const unsigned char *s, size_t n, size_t *maximal);

// 1 if s[0..n) is entirely well-formed UTF-8.
int utf8_valid(const char *s, size_t n);

// Appends s[0..n) to out with every maximal ill-formed subpart replaced by U+FFFD
// (Python's errors="replace"). Returns the number of replacements made.
size_t utf8_replace_invalid(const char *s, size_t n, ByteBuf *out);

#endif
