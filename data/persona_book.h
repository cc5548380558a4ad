/*
 * persona_book.h: a book as clean paragraphs, the input of every `persona` subcommand.
 *
 * The input is a plain-text book in UTF-8: a Project Gutenberg .txt, a manuscript, a play.
 * Cleaning, in order:
 *   1. what is not a text book is refused: an empty file, a NUL byte (a binary file),
 *      invalid UTF-8. A UTF-8 byte-order mark is skipped; CRLF and CR line ends become LF.
 *   2. Project Gutenberg front and back matter: everything up to and including the
 *      "*** START OF ..." line, and from the "End of the Project Gutenberg ..." or
 *      "*** END OF ..." line on (the licence); a "Produced by ..." credit right after the
 *      start marker.
 *   3. Paragraphs: runs of non-blank lines, each line trimmed. A paragraph keeps its line
 *      breaks, so that a script's speaker lines stay visible; book_unwrap() gives the one-line
 *      form that prose work uses.
 *   4. Format: a script (a play) when at least 10 lines, and a fifth as many as there are
 *      paragraphs, start with a speaker name in capitals followed by "." or ":"
 *      ("HAMLET. To be", "MRS. HUDSON:"); otherwise prose.
 *   5. Headings: a paragraph whose every line is a heading (a CHAPTER / ACT / SCENE / ...
 *      keyword line, a roman or arabic number alone or followed by "." or ")" and a title,
 *      or, in prose, a short line with no lower-case letter and no double quotation mark) is
 *      kept but marked. Headings are scene breaks for the dialogue and chunk limits for the
 *      prompts; they are never dialogue or narrative.
 *      A heading, or two or more blank lines, starts a new scene (Paragraph.scene).
 *   6. Title page: the short paragraphs (under 8 words, no quotation mark) before the first
 *      real one ("by", the author's name) are dropped.
 */
#ifndef PERSONA_BOOK_H
#define PERSONA_BOOK_H

#include <stddef.h>

typedef enum { BOOK_AUTO = 0, BOOK_PROSE = 1, BOOK_SCRIPT = 2 } BookFormat;

typedef struct {
    char *text;   // the paragraph's lines, trimmed, joined with "\n"
    size_t len;
    int line;     // 1-based line number of its first line in the file
    int heading;  // 1 for a heading (chapter title, act, scene)
    int scene;    // 1 when a new scene starts here: after a heading, or after two or more
                  // blank lines (how Gutenberg texts mark a break within a chapter)
} Paragraph;

typedef struct {
    Paragraph *paras;
    size_t n;
    BookFormat format;
    int gutenberg;         // 1 when Project Gutenberg markers were found and cut
    int lines;             // lines in the file
    int front_lines;       // lines cut before the start marker
    int back_lines;        // lines cut from the end marker on
    int title_paragraphs;  // short title-page paragraphs dropped
    int headings;
} Book;

// Cleans data[0..len) (the file `name`, for messages). format is BOOK_AUTO to detect it.
// Returns 0, or -1 with "name:line: reason" (or "name: reason") in err.
int book_parse(Book *b, const char *name, const char *data, size_t len, BookFormat format,
               char *err);
// Reads the file at path and cleans it as book_parse does.
int book_load(Book *b, const char *path, BookFormat format, char *err);
void book_free(Book *b);

// The one-line form of a paragraph: lines joined with single spaces, every run of white
// space collapsed to one space, no leading or trailing space. Returns a new string.
char *book_unwrap(const char *text, size_t len, size_t *out_len);

// If line[0..n) starts with a script speaker ("HAMLET.", "FIRST WITCH:", "MRS. HUDSON."),
// returns the length of the name (without its "." or ":") and sets *rest to the offset of
// the speech that follows on the line; otherwise returns 0.
size_t book_script_speaker(const char *line, size_t n, size_t *rest);

#endif
