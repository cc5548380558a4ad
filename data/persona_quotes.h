/*
 * persona_quotes.h: where the speech is in a paragraph of prose.
 *
 * Books mark speech with one of two families of quotation marks:
 *   double  straight "..." (in a paragraph each mark opens or closes in turn) and curly
 *           “...” (and „...“); a straight " after a non-space and before a lower-case
 *           letter is damage, not a quotation mark: an apostrophe or a single quote that
 *           lost its space (a Gutenberg text has `Holmes"quick eye` and `'Tell me,"said I`).
 *   single  '...' and curly ‘...’ (British style), and `...' or ``...'' (old Gutenberg
 *           texts). ' and ’ are also apostrophes, so: between two letters (don't, o'clock)
 *           a mark is an apostrophe; an opening ' follows the start, a space or an opening
 *           bracket or dash and precedes a non-space, and is not an elision ('tis, 'em); a
 *           closing ' or ’ follows a non-space and precedes a space, punctuation or the end,
 *           except after a letter and before a space and a lower-case word, which is a plural
 *           possessive ("the boys' hats"). ’ never opens.
 * The family is the one that finds more quotations in the whole book (or the one forced with
 * --quotes); the other family's marks are then quotations nested in the speech, part of
 * its text.
 *
 * An opening mark inside an open quotation closes it and opens another (a closing mark
 * forgotten by the typesetter costs one quotation, not the rest of the paragraph); one with
 * nothing after it in its paragraph opens nothing. A
 * quotation still open at the end of its paragraph continues when the next paragraph starts
 * with an opening mark, the convention for a speech of several paragraphs; otherwise it ends
 * with its paragraph.
 */
#ifndef PERSONA_QUOTES_H
#define PERSONA_QUOTES_H

#include <stddef.h>

typedef enum { QUOTES_AUTO = 0, QUOTES_DOUBLE = 1, QUOTES_SINGLE = 2 } QuoteFamily;

// A quotation's text: bytes [start, end) of the paragraph, the marks excluded.
typedef struct {
    size_t start, end;
} Span;

typedef struct {
    Span *quotes;
    size_t n, cap;
    int open_at_end;  // the last quotation is still open at the end of the paragraph
    int starts_open;  // the paragraph's first character is an opening mark
} QuoteScan;

// Appends the quotations of text[0..len) to out (out->n reset first).
void quotes_scan(QuoteFamily family, const char *text, size_t len, QuoteScan *out);
// The family that finds more quotations in the n texts (double on a tie).
QuoteFamily quotes_detect(char *const *texts, const size_t *lens, size_t n);
const char *quotes_family_name(QuoteFamily family);
void quotes_free(QuoteScan *q);

#endif
