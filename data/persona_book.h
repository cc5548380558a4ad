/*
 * persona_book.h: a book as clean paragraphs, the input of every `persona` subcommand.
 *
 * The input is a plain-text book in UTF-8: a Project Gutenberg .txt, a manuscript, a play.
 * Cleaning, in order:
 *   1. What is not a text book is refused: an empty file, a NUL byte (a binary file),
 *      invalid UTF-8. A UTF-8 byte-order mark is skipped; CRLF and CR line ends become LF.
 *   2. Project Gutenberg's header and licence: everything up to and including the
 *      "*** START OF ..." line, and from the "End of the Project Gutenberg ..." or
 *      "*** END OF ..." line on. --start-line and --end-line (BookParseOptions) replace this
 *      and step 8: the book is those file lines, as given.
 *   3. Bracketed blocks that are not the text: "[Illustration: ...]", "[Footnote 3: ...]",
 *      "[Transcriber's Note: ...]", on one line or several, are removed as if absent (the
 *      blank lines around one do not add up to a scene break). A chapter heading inside an
 *      illustration (the picture that opens a chapter, "[Illustration: ... Chapter I.]")
 *      stays, as a heading.
 *   4. Format: a play (BOOK_SCRIPT) when at least 10 lines, and a fifth as many as there are
 *      blocks of lines, start with a speaker: "HAMLET. To be", "HAMLET: To be" (a name in
 *      capitals and "." or ":"), "First Witch<TAB>When shall we three meet again" (a short
 *      capitalised name and a tab, the Moby layout), or a name alone on its line with the
 *      speech on the lines after it ("Ber." / "MACBETH"), a name being such only when the
 *      same one stands alone on a line at least three times; otherwise prose.
 *   5. Layout, how prose paragraphs are marked (BookLayout), found from the lines:
 *        blank     paragraphs separated by blank lines (a run of lines is at most 12
 *                  lines on average);
 *        lines     one paragraph per line, no blank lines between them (long lines: at
 *                  least 3 in 10 of them longer than 200 bytes);
 *        indented  hard-wrapped lines, a paragraph starting at an indented line (at least
 *                  1 line in 40, and 5, is indented after a line of text);
 *      and, when none fits, blank (the book then reads as long paragraphs: the report says
 *      so). A play is read as blank (its speakers start its turns). In the lines and
 *      indented layouts a blank line is a scene break; in blank, two or more are.
 *   6. Markup (book_clean_markup): _italics_ and *emphasis* marks, inline [Illustration]
 *      and footnote marks ("[12]", "word[A]") are removed; a paragraph of nothing but
 *      asterisks, dashes or dots ("*     *     *") is a scene break, not text.
 *   7. Headings: a paragraph whose every line is a heading (a CHAPTER / ACT / SCENE / ...
 *      keyword line, a roman or arabic number alone or followed by "." or ")" and a title,
 *      or, in prose, a short line with no lower-case letter and no double quotation mark) is
 *      kept but marked. Headings are scene breaks for the dialogue and chunk limits for the
 *      prompts; they are never dialogue or narrative. A heading, or the blank lines of
 *      step 5, starts a new scene (Paragraph.scene).
 *   8. Front and back matter, by structure: the text starts at the first heading of a first
 *      chapter (a CHAPTER / BOOK / PART / ACT / SCENE / STAVE ... heading numbered 1, I,
 *      ONE or "the First", or a numbered heading "I.") that is followed by text before the
 *      next chapter heading (so a table of contents is not it), together with the one-line headings just before it
 *      ("ADVENTURE I. A SCANDAL IN BOHEMIA" above "I."); what comes before it (title page,
 *      preface, introduction, contents, list of illustrations, a play's dramatis personae)
 *      is dropped. The text ends at the last "THE END"; what follows is dropped. A book
 *      without chapter headings keeps everything.
 *   9. Title page: the short paragraphs (under 8 words, no quotation mark) before the first
 *      real one ("by", the author's name) are dropped; in a play, before its first speech
 *      however short.
 * Every step's removals are counted and their line ranges kept, for the report.
 */
#ifndef PERSONA_BOOK_H
#define PERSONA_BOOK_H

#include <stddef.h>
#include <stdio.h>

typedef enum { BOOK_AUTO = 0, BOOK_PROSE = 1, BOOK_SCRIPT = 2 } BookFormat;
typedef enum { LAYOUT_AUTO = 0, LAYOUT_BLANK = 1, LAYOUT_LINES = 2, LAYOUT_INDENTED = 3 } BookLayout;

typedef struct {
    BookFormat format;  // BOOK_AUTO: detect
    BookLayout layout;  // LAYOUT_AUTO: detect
    int start_line;     // first file line of the text (1-based); 0: found by steps 2 and 8
    int end_line;       // last file line of the text; 0: found by steps 2 and 8
} BookParseOptions;

typedef struct {
    char *text;   // the paragraph's lines, trimmed and cleaned, joined with "\n"
    size_t len;
    int line;     // 1-based line number of its first line in the file
    int heading;  // 1 for a heading (chapter title, act, scene)
    int scene;    // 1 when a new scene starts here (after a heading or blank lines)
} Paragraph;

// File lines first..last (1-based, inclusive); first == 0 when there are none.
typedef struct {
    int first, last;
} LineRange;

typedef struct {
    Paragraph *paras;
    size_t n;
    BookFormat format;
    BookLayout layout;
    int layout_unclear;   // no layout fitted: read as blank-separated paragraphs
    int gutenberg;        // 1 when Project Gutenberg markers were found and cut
    int lines;            // lines in the file
    LineRange header;     // Gutenberg's header, cut
    LineRange licence;    // Gutenberg's licence, cut
    LineRange front;      // front matter before the first chapter, dropped
    LineRange back;       // back matter after THE END, dropped
    int front_paragraphs, back_paragraphs;
    int title_paragraphs; // short title-page paragraphs dropped
    int headings;
    int blocks;           // bracketed blocks removed (illustrations, footnotes, notes)
    int marks;            // inline marks removed (italics, emphasis, footnote marks)
    char **speakers;      // a play's names that stand alone on a line (step 4)
    size_t n_speakers;
} Book;

// Cleans data[0..len) (the file `name`, for messages); o may be NULL (all automatic).
// Returns 0, or -1 with "name:line: reason" (or "name: reason") in err.
int book_parse(Book *b, const char *name, const char *data, size_t len, const BookParseOptions *o,
               char *err);
// Reads the file at path and cleans it as book_parse does.
int book_load(Book *b, const char *path, const BookParseOptions *o, char *err);
void book_free(Book *b);
const char *book_layout_name(BookLayout layout);
// Prints, as "book: ..." lines, what the cleaning found and removed, with the file lines.
void book_describe(const Book *b, FILE *f);

// The one-line form of a paragraph: lines joined with single spaces, every run of white
// space collapsed to one space, no leading or trailing space. Returns a new string.
char *book_unwrap(const char *text, size_t len, size_t *out_len);

// If line[0..n) (trimmed) starts with a play's speaker ("HAMLET.", "FIRST WITCH:",
// "First Witch<TAB>", or, for a book b whose speakers stand alone on their lines, the whole
// line "Ber."), returns the length of the name (without its "." or ":") and sets *rest to
// the offset of the speech that follows on the line; otherwise returns 0. b may be NULL.
size_t book_script_speaker(const Book *b, const char *line, size_t n, size_t *rest);

// Removes markup from text[0..len) in place (step 6): _italic_ and *emphasis* marks,
// "[Illustration...]" and footnote marks ("[12]", "[*]", "word[A]"). Returns the new length
// and adds the marks removed to *removed.
size_t book_clean_markup(char *text, size_t len, int *removed);

// 1 when line[0..n) is a chapter heading (step 8): a heading keyword (CHAPTER, BOOK, PART,
// VOLUME, ADVENTURE, ACT, SCENE, STAVE, CANTO, SECTION) and a number ("XVIII", "3", "ONE",
// "the First"), or a numbered heading ("I.", "XII. THE COPPER BEECHES").
int book_chapter_heading(const char *line, size_t n);

#endif
