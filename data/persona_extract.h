/*
 * persona_extract.h: the character's own lines as conversations (strategy A).
 *
 * Every turn attributed to the character with at least --min-confidence is an assistant
 * message, verbatim. Turns that follow each other in an exchange (no more than one
 * narrative paragraph between them, no scene break) make one conversation: the other
 * speakers' turns are the user messages, the character's the assistant messages;
 * consecutive turns of one side are joined with a blank line. The first user message is
 * what was said to the character just before, when the turn before is someone else's (or
 * nobody's in particular, in the paragraph right before); otherwise it is a compact
 * narrative context: the narrative before the line in its paragraph and up to three
 * narrative paragraphs before it, cut to the last --context-words words at a sentence
 * start; a line with neither is left out (and counted). A conversation always ends with
 * the character. A turn attributed to the character below the threshold ends a
 * conversation (it cannot be told who said it, so it is neither side).
 *
 * Each line is
 *   {"messages": [...], "meta": {"source": "extract", "turns": [{"line": L, "method": M,
 *    "confidence": C}, ...]}}
 * with one "turns" entry per character turn: its line in the book file, how it was
 * attributed (tag, beat, pronoun, alternation, script) and the confidence.
 *
 * The turns file (--turns FILE.tsv) lists every turn of the book, whoever speaks, for
 * auditing: line, speaker, method, confidence, emitted (1 for the character's lines at the
 * threshold), text (tab, newline and backslash escaped as \t, \n, \\).
 */
#ifndef PERSONA_EXTRACT_H
#define PERSONA_EXTRACT_H

#include <stdio.h>

#include "persona_dialogue.h"

typedef struct {
    double min_confidence;
    int context_words;
} ExtractOptions;

typedef struct {
    size_t turns;                  // turns in the book
    size_t unattributed;           // turns with no speaker (ambiguous), groups and stories excluded
    size_t groups;                 // "we" / "they" turns
    size_t nested;                 // dialogue of a story told inside a speech
    size_t lines[ATTR_COUNT];      // the character's lines written, by method
    size_t below[ATTR_COUNT];      // the character's lines under --min-confidence, by method
    size_t no_context;             // lines dropped: nothing said before and no narrative
    size_t conversations, user_speech, user_context;
} ExtractStats;

// 1 when turn k is one of the character's lines at the threshold.
int extract_is_line(const Dialogue *d, size_t k, double min_confidence);
void extract_conversations(const Dialogue *d, const ExtractOptions *o, FILE *out, ExtractStats *st);
void extract_write_turns(const Dialogue *d, const ExtractOptions *o, FILE *out);
// The lines of the character written and skipped, by method: 0 when none was written.
size_t extract_written(const ExtractStats *st, size_t *below);
// The error when nothing was written, on one line to f: the character never speaks, or
// speaks only below --min-confidence (layout_unclear: the book's paragraphs were not found).
void extract_say_nothing(const ExtractStats *st, const char *book, const char *character, double min_confidence,
                         int layout_unclear, FILE *f);
// Prints what was found and written: "dialogue: ...", "lines of NAME: ...", "skipped: ...",
// "conversations: ..." lines.
void extract_report(const Dialogue *d, const ExtractStats *st, const char *character, FILE *f);

#endif
