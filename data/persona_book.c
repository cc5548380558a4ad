// persona_book.c: cleaning a book into paragraphs (see persona_book.h).
#include "persona_book.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/util.h"
#include "../tokenizer/utf8.h"

typedef struct {
    const char *s;
    size_t n;
} Line;

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\f' || c == '\v'; }

static Line trim(Line l) {
    while (l.n && is_space(l.s[0])) l.s++, l.n--;
    while (l.n && is_space(l.s[l.n - 1])) l.n--;
    return l;
}

static int starts_with_nocase(Line l, const char *prefix) {
    size_t k = strlen(prefix);
    return l.n >= k && strncasecmp(l.s, prefix, k) == 0;
}

static int contains_nocase(Line l, const char *word) {
    size_t k = strlen(word);
    for (size_t i = 0; i + k <= l.n; i++)
        if (strncasecmp(l.s + i, word, k) == 0) return 1;
    return 0;
}

static int count_words(Line l) {
    int words = 0;
    for (size_t i = 0; i < l.n; i++)
        if (!is_space(l.s[i]) && (i == 0 || is_space(l.s[i - 1]))) words++;
    return words;
}

// Project Gutenberg's markers have changed over the years ("*** START OF THIS PROJECT
// GUTENBERG EBOOK", "***START OF THE PROJECT GUTENBERG EBOOK", "End of the Project
// Gutenberg EBook of", "End of Project Gutenberg's"), so they are recognised by their
// words rather than by one exact spelling.
static int gutenberg_start(Line l) {
    return starts_with_nocase(l, "***") && contains_nocase(l, "START OF") &&
           contains_nocase(l, "PROJECT GUTENBERG");
}

static int gutenberg_end(Line l) {
    return (starts_with_nocase(l, "***") && contains_nocase(l, "END OF") &&
            contains_nocase(l, "PROJECT GUTENBERG")) ||
           starts_with_nocase(l, "End of the Project Gutenberg") ||
           starts_with_nocase(l, "End of Project Gutenberg");
}

static int is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static int is_lower(char c) { return c >= 'a' && c <= 'z'; }

static const char *const HEADING_WORDS[] = {
    "chapter", "book", "part", "volume", "adventure", "act", "scene", "stave", "canto",
    "section", "prologue", "epilogue", "preface", "contents", "introduction", "appendix",
    "interlude", "afterword", "foreword", "finis", NULL};

// The first word of l (letters only), lower-cased into buf.
static void first_word(Line l, char *buf, size_t cap) {
    size_t k = 0;
    while (k < l.n && k + 1 < cap && isalpha((unsigned char)l.s[k])) {
        buf[k] = (char)tolower((unsigned char)l.s[k]);
        k++;
    }
    buf[k] = '\0';
}

static int is_heading_keyword(const char *word) {
    for (int i = 0; HEADING_WORDS[i]; i++)
        if (!strcmp(word, HEADING_WORDS[i])) return 1;
    return 0;
}

static int is_roman(const char *s, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("IVXLCDM", s[i])) return 0;
    return 1;
}

// "I.", "XII. THE ADVENTURE OF THE COPPER BEECHES", "3", "4) A title": a number alone, or
// followed by "." or ")" and a short title. A bare "I went home." is not one: after the
// number there must be the end of the line or the punctuation.
static int is_numbered_heading(Line l) {
    size_t k = 0;
    if (k < l.n && isdigit((unsigned char)l.s[k]))
        while (k < l.n && isdigit((unsigned char)l.s[k])) k++;
    else
        while (k < l.n && strchr("IVXLCDM", l.s[k])) k++;
    if (k == 0) return 0;
    if (k == l.n) return 1;
    if (l.s[k] != '.' && l.s[k] != ')') return 0;
    Line title = trim((Line){l.s + k + 1, l.n - k - 1});
    return count_words(title) <= 10;
}

static int has_double_quote(Line l) {
    for (size_t i = 0; i < l.n; i++) {
        if (l.s[i] == '"') return 1;
        if (i + 2 < l.n && (unsigned char)l.s[i] == 0xE2 && (unsigned char)l.s[i + 1] == 0x80 &&
            ((unsigned char)l.s[i + 2] == 0x9C || (unsigned char)l.s[i + 2] == 0x9D))
            return 1;  // “ or ”
    }
    return 0;
}

static int is_heading_line(Line l, BookFormat format) {
    char word[16];
    first_word(l, word, sizeof word);
    if (is_heading_keyword(word) && count_words(l) <= 12) return 1;
    if (!strcmp(word, "the") && starts_with_nocase(l, "the end")) return count_words(l) <= 3;
    if (is_numbered_heading(l)) return 1;
    if (format == BOOK_SCRIPT) return 0;  // a script's capitals are its speakers
    int upper = 0;
    for (size_t i = 0; i < l.n; i++) {
        if (is_lower(l.s[i])) return 0;
        upper += is_upper(l.s[i]);
    }
    return upper > 0 && count_words(l) <= 10 && !has_double_quote(l) && l.s[l.n - 1] != ',';
}

size_t book_script_speaker(const char *line, size_t n, size_t *rest) {
    // Collect the run of all-capital words at the start of the line, then take the longest
    // prefix of them whose last word ends with "." or ":" ("MRS. HUDSON. I am" -> MRS. HUDSON).
    size_t best = 0, pos = 0;
    int words = 0, letters = 0;
    while (pos < n && words < 4) {
        size_t w = pos;
        int word_letters = 0;
        while (w < n && (is_upper(line[w]) || strchr("'-.&:", line[w]))) word_letters += is_upper(line[w++]);
        if (w == pos || word_letters == 0 || (w < n && !is_space(line[w]))) break;
        letters += word_letters;
        words++;
        char last = line[w - 1];
        if ((last == '.' || last == ':') && letters >= 2) {
            size_t name_len = w - 1;
            while (name_len > 0 && (line[name_len - 1] == '.' || line[name_len - 1] == ':')) name_len--;
            char word[16];
            first_word((Line){line, name_len}, word, sizeof word);
            if (!is_heading_keyword(word) && !(name_len <= 6 && is_roman(line, name_len))) {
                best = name_len;
                *rest = w;
                while (*rest < n && is_space(line[*rest])) (*rest)++;
            }
        }
        pos = w;
        while (pos < n && is_space(line[pos])) pos++;
    }
    return best;
}

char *book_unwrap(const char *text, size_t len, size_t *out_len) {
    char *out = xmalloc(len + 1);
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        int space = is_space(text[i]) || text[i] == '\n';
        if (space) {
            if (k && out[k - 1] != ' ') out[k++] = ' ';
        } else {
            out[k++] = text[i];
        }
    }
    while (k && out[k - 1] == ' ') k--;
    out[k] = '\0';
    if (out_len) *out_len = k;
    return out;
}

static void add_paragraph(Book *b, size_t *cap, ByteBuf *text, int line, int blank_lines) {
    if (b->n == *cap) {
        *cap = *cap ? *cap * 2 : 256;
        b->paras = xrealloc(b->paras, *cap * sizeof(Paragraph));
    }
    Paragraph *p = &b->paras[b->n++];
    p->text = xmalloc(text->len + 1);
    memcpy(p->text, text->data, text->len);
    p->text[text->len] = '\0';
    p->len = text->len;
    p->line = line;
    p->heading = 0;
    p->scene = blank_lines >= 2;
    text->len = 0;
}

static int paragraph_words(const Paragraph *p) { return count_words((Line){p->text, p->len}); }

// Calls the heading test on every line of p: a heading paragraph is headings throughout
// (a table of contents is one paragraph of numbered titles).
static int paragraph_is_heading(const Paragraph *p, BookFormat format) {
    for (const char *s = p->text, *end = p->text + p->len; s < end;) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);
        if (!is_heading_line((Line){s, n}, format)) return 0;
        s += n + 1;
    }
    return 1;
}

static int count_speaker_lines(const Book *b) {
    int count = 0;
    for (size_t i = 0; i < b->n; i++) {
        const Paragraph *p = &b->paras[i];
        for (const char *s = p->text, *end = p->text + p->len; s < end;) {
            const char *nl = memchr(s, '\n', (size_t)(end - s));
            size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s), rest;
            count += book_script_speaker(s, n, &rest) > 0;
            s += n + 1;
        }
    }
    return count;
}

// Finds the first problem that makes data not a UTF-8 text: a NUL byte (binary data) or
// an invalid UTF-8 sequence. Returns -1 with the message, 0 for a text.
static int check_text(const char *name, const char *data, size_t len, char *err) {
    if (len == 0) return set_error(err, "%s: empty file, not a book", name);
    const char *nul = memchr(data, '\0', len);
    size_t checked = nul ? (size_t)(nul - data) : len;
    int line = 1;
    for (size_t i = 0; i < checked;) {
        size_t k = utf8_char_len((const unsigned char *)data + i, checked - i, NULL);
        if (k == 0)
            return set_error(err, "%s:%d: invalid UTF-8 at byte offset %zu (the book must be UTF-8 text)",
                             name, line, i);
        line += data[i] == '\n';
        i += k;
    }
    if (nul)
        return set_error(err, "%s:%d: NUL byte at offset %zu: a binary file, not a text book", name,
                         line, checked);
    return 0;
}

int book_parse(Book *b, const char *name, const char *data, size_t len, BookFormat format,
               char *err) {
    memset(b, 0, sizeof *b);
    if (check_text(name, data, len, err)) return -1;
    if (len >= 3 && !memcmp(data, "\xEF\xBB\xBF", 3)) data += 3, len -= 3;

    // Lines (LF, CRLF or CR ends), then the Gutenberg markers.
    size_t nlines = 0, cap_lines = 1024;
    Line *lines = xmalloc(cap_lines * sizeof(Line));
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && data[j] != '\n' && data[j] != '\r') j++;
        if (nlines == cap_lines) lines = xrealloc(lines, (cap_lines *= 2) * sizeof(Line));
        lines[nlines++] = (Line){data + i, j - i};
        if (j < len && data[j] == '\r' && j + 1 < len && data[j + 1] == '\n') j++;
        i = j + 1;
    }
    b->lines = (int)nlines;
    size_t first = 0, last = nlines;
    for (size_t i = 0; i < nlines; i++)
        if (gutenberg_start(lines[i])) {
            first = i + 1;
            b->gutenberg = 1;
            break;
        }
    for (size_t i = first; i < nlines; i++)
        if (gutenberg_end(lines[i])) {
            last = i;
            b->gutenberg = 1;
            break;
        }
    b->front_lines = (int)first;
    b->back_lines = (int)(nlines - last);

    // Paragraphs.
    size_t cap = 0;
    ByteBuf text = {0};
    int para_line = 0, blank = 0, blank_before = 0;
    for (size_t i = first; i <= last; i++) {
        Line l = i < last ? trim(lines[i]) : (Line){"", 0};
        if (l.n == 0) {
            if (text.len) add_paragraph(b, &cap, &text, para_line, blank_before);
            blank++;
            continue;
        }
        if (text.len == 0) para_line = (int)i + 1, blank_before = blank;
        else bytebuf_push(&text, '\n');
        blank = 0;
        bytebuf_append(&text, l.s, l.n);
    }
    bytebuf_free(&text);
    free(lines);

    // Gutenberg's "Produced by ..." credit, among the first few paragraphs.
    for (size_t i = 0; b->gutenberg && i < b->n && i < 5; i++)
        if (!strncmp(b->paras[i].text, "Produced by", 11)) {
            free(b->paras[i].text);
            memmove(&b->paras[i], &b->paras[i + 1], (b->n - i - 1) * sizeof(Paragraph));
            b->n--;
            break;
        }

    if (format == BOOK_AUTO) {
        int speakers = count_speaker_lines(b);
        format = speakers >= 10 && speakers * 5 >= (int)b->n ? BOOK_SCRIPT : BOOK_PROSE;
    }
    b->format = format;
    for (size_t i = 0; i < b->n; i++) {
        b->paras[i].heading = paragraph_is_heading(&b->paras[i], format);
        b->headings += b->paras[i].heading;
        if (i > 0 && b->paras[i - 1].heading) b->paras[i].scene = 1;
    }

    // The title page: short paragraphs before the first paragraph of real text.
    size_t keep = 0;
    int in_title_page = 1;
    for (size_t i = 0; i < b->n; i++) {
        Paragraph *p = &b->paras[i];
        Line all = {p->text, p->len};
        if (in_title_page && !p->heading && (paragraph_words(p) >= 8 || has_double_quote(all)))
            in_title_page = 0;
        if (in_title_page && !p->heading) {
            free(p->text);
            b->title_paragraphs++;
            continue;
        }
        b->paras[keep++] = *p;
    }
    b->n = keep;
    if (b->n == (size_t)b->headings) {
        book_free(b);
        return set_error(err, "%s: no text left after removing front and back matter and headings", name);
    }
    return 0;
}

int book_load(Book *b, const char *path, BookFormat format, char *err) {
    size_t len;
    char *data = read_file(path, &len, err);
    if (!data) {
        memset(b, 0, sizeof *b);
        return -1;
    }
    int rc = book_parse(b, path, data, len, format, err);
    free(data);
    return rc;
}

void book_free(Book *b) {
    for (size_t i = 0; i < b->n; i++) free(b->paras[i].text);
    free(b->paras);
    memset(b, 0, sizeof *b);
}
