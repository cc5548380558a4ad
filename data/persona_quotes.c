// persona_quotes.c: finding quotations in a paragraph (see persona_quotes.h).
#include "persona_quotes.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/util.h"

enum { MARK_NONE, MARK_OPEN, MARK_CLOSE, MARK_TOGGLE };

// A letter for the apostrophe rules: ASCII letters and digits, and any byte of a non-ASCII
// character (accented letters; punctuation such as ’ itself is checked before this is used).
static int is_wordish(unsigned char c) { return isalnum(c) || c >= 0x80; }

static int is_curly(const char *s, size_t i, size_t len, unsigned char third) {
    return i + 2 < len && (unsigned char)s[i] == 0xE2 && (unsigned char)s[i + 1] == 0x80 &&
           (unsigned char)s[i + 2] == third;
}

// The byte before position i, or ' ' at the start; the byte after a mark of k bytes at i,
// or ' ' at the end.
static unsigned char before(const char *s, size_t i) { return i ? (unsigned char)s[i - 1] : ' '; }
static unsigned char after(const char *s, size_t len, size_t i, size_t k) {
    return i + k < len ? (unsigned char)s[i + k] : ' ';
}

static int opens_after(unsigned char c) { return c == ' ' || strchr("([{-\xE2", c) != NULL; }
static int closes_before(unsigned char c) { return c == ' ' || ispunct(c) || c == 0xE2; }

// 'tis, 'twas, 'em: elisions that start with an apostrophe and open nothing.
static int is_elision(const char *s, size_t len) {
    static const char *const words[] = {"tis", "twas", "twere", "twill", "em",    "im", "er", "ere",
                                        "ow",  "e",    "ave",   "alf",   "cause", "n",  NULL};
    for (int i = 0; words[i]; i++) {
        size_t k = strlen(words[i]);
        if (k <= len && !strncasecmp(s, words[i], k) && (k == len || !isalpha((unsigned char)s[k])))
            return 1;
    }
    return 0;
}

// What the mark at text[i] is, and its length in *k (0 when there is no mark there).
static int classify(QuoteFamily f, const char *s, size_t len, size_t i, int inside, size_t *k) {
    unsigned char c = (unsigned char)s[i];
    *k = 1;
    if (f == QUOTES_DOUBLE) {
        if (c == '"') {
            // Damage, not a quotation mark: an apostrophe or single quote whose space was
            // lost ("Holmes"quick eye", "'Tell me,"said I").
            unsigned char b = before(s, i);
            if (b != ' ' && islower(after(s, len, i, 1))) return MARK_NONE;
            return MARK_TOGGLE;
        }
        *k = 3;
        if (is_curly(s, i, len, 0x9C) || is_curly(s, i, len, 0x9E)) return MARK_OPEN;  // “ „
        if (is_curly(s, i, len, 0x9D)) return MARK_CLOSE;                               // ”
        *k = 0;
        return MARK_NONE;
    }
    if (c == '`') {
        *k = i + 1 < len && s[i + 1] == '`' ? 2 : 1;
        return MARK_OPEN;
    }
    int straight = c == '\'';
    if (!straight && !is_curly(s, i, len, 0x98) && !is_curly(s, i, len, 0x99)) {
        *k = 0;
        return MARK_NONE;
    }
    if (!straight) *k = 3;
    if (is_curly(s, i, len, 0x98)) return inside ? MARK_NONE : MARK_OPEN;  // ‘
    if (straight && i + 1 < len && s[i + 1] == '\'') *k = 2;                // '' closes ``
    unsigned char b = before(s, i), a = after(s, len, i, *k);
    if (is_wordish(b) && is_wordish(a) && a != 0xE2) return MARK_NONE;    // don't, o'clock
    if (inside && b != ' ' && closes_before(a)) {
        size_t next = i + *k;
        if (isalpha(b) && a == ' ' && next + 1 < len && islower((unsigned char)s[next + 1]))
            return MARK_NONE;  // plural possessive: the boys' hats
        return MARK_CLOSE;
    }
    if (!inside && straight && opens_after(b) && a != ' ' && !is_elision(s + i + 1, len - i - 1))
        return MARK_OPEN;
    return MARK_NONE;
}

static void push_span(QuoteScan *q, size_t start, size_t end) {
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 8;
        q->quotes = xrealloc(q->quotes, q->cap * sizeof(Span));
    }
    q->quotes[q->n++] = (Span){start, end};
}

void quotes_scan(QuoteFamily family, const char *text, size_t len, QuoteScan *out) {
    out->n = 0;
    out->open_at_end = out->starts_open = 0;
    int inside = 0;
    size_t start = 0;
    for (size_t i = 0; i < len;) {
        size_t k;
        int mark = classify(family, text, len, i, inside, &k);
        if (mark == MARK_TOGGLE) mark = inside ? MARK_CLOSE : MARK_OPEN;
        if (mark == MARK_OPEN) {
            if (inside) push_span(out, start, i);
            if (i == 0) out->starts_open = 1;
            inside = 1;
            start = i + k;
        } else if (mark == MARK_CLOSE && inside) {
            push_span(out, start, i);
            inside = 0;
        }
        i += k ? k : 1;
    }
    // A mark that opens nothing but the end of the paragraph is a stray one.
    size_t rest = start;
    while (inside && rest < len && text[rest] == ' ') rest++;
    if (inside && rest < len) {
        push_span(out, start, len);
        out->open_at_end = 1;
    }
}

QuoteFamily quotes_detect(char *const *texts, const size_t *lens, size_t n) {
    QuoteScan q = {0};
    size_t found[3] = {0};
    for (QuoteFamily f = QUOTES_DOUBLE; f <= QUOTES_SINGLE; f++)
        for (size_t i = 0; i < n; i++) {
            quotes_scan(f, texts[i], lens[i], &q);
            found[f] += q.n;
        }
    quotes_free(&q);
    return found[QUOTES_SINGLE] > found[QUOTES_DOUBLE] ? QUOTES_SINGLE : QUOTES_DOUBLE;
}

const char *quotes_family_name(QuoteFamily family) {
    return family == QUOTES_SINGLE ? "single ('...', ‘...’, `...')" : "double (\"...\", “...”)";
}

void quotes_free(QuoteScan *q) {
    free(q->quotes);
    q->quotes = NULL;
    q->n = q->cap = 0;
}
