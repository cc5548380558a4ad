// persona_book.c: cleaning a book into paragraphs (see persona_book.h).
#include "persona_book.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/strmap.h"
#include "../common/util.h"
#include "../tokenizer/utf8.h"

typedef struct {
    const char *s;
    size_t n;
} Line;

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\f' || c == '\v'; }
static int is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static int is_lower(char c) { return c >= 'a' && c <= 'z'; }

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

// ---------------------------------------------------------------------------------------
// Headings

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

static const char *const HEADING_WORDS[] = {
    "chapter", "book", "part", "volume", "adventure", "act", "scene", "stave", "canto",
    "section", "prologue", "epilogue", "preface", "contents", "introduction", "appendix",
    "interlude", "afterword", "foreword", "finis", NULL};
// The keywords of a heading that numbers a chapter (and so can start the text).
static const char *const CHAPTER_WORDS[] = {"chapter", "book", "part",  "volume",  "adventure",
                                            "act",     "scene", "stave", "canto", "section", NULL};
static const char *const NUMBER_WORDS[] = {
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", NULL};

static int in_list(const char *word, const char *const *list) {
    for (int i = 0; list[i]; i++)
        if (!strcmp(word, list[i])) return 1;
    return 0;
}

// The word of l that starts at *at (letters only), lower-cased into buf; *at moves past it
// and the spaces after it. Returns the word's length.
static size_t next_word(Line l, size_t *at, char *buf, size_t cap) {
    size_t k = 0, i = *at;
    while (i < l.n && isalpha((unsigned char)l.s[i])) {
        if (k + 1 < cap) buf[k++] = (char)tolower((unsigned char)l.s[i]);
        i++;
    }
    buf[k] = '\0';
    size_t len = i - *at;
    while (i < l.n && is_space(l.s[i])) i++;
    *at = i;
    return len;
}

static void first_word(Line l, char *buf, size_t cap) {
    size_t at = 0;
    next_word(l, &at, buf, cap);
}

static int is_heading_keyword(const char *word) { return in_list(word, HEADING_WORDS); }

static int is_roman(const char *s, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("IVXLCDM", s[i])) return 0;
    return 1;
}

// The value of the roman numeral s[0..n) (upper or lower case), 0 if it is not one.
static int roman_value(const char *s, size_t n) {
    static const char letters[] = "IVXLCDM";
    static const int values[] = {1, 5, 10, 50, 100, 500, 1000};
    int total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *a = strchr(letters, toupper((unsigned char)s[i]));
        if (!a || !s[i]) return 0;
        const char *b = i + 1 < n && s[i + 1] ? strchr(letters, toupper((unsigned char)s[i + 1])) : NULL;
        int v = values[a - letters];
        total += b && values[b - letters] > v ? -v : v;
    }
    return total > 0 ? total : 0;
}

// "I.", "XII. THE ADVENTURE OF THE COPPER BEECHES", "3", "4) A title": a number alone, or
// followed by "." or ")" and a short title. A bare "I went home." is not one: after the
// number there must be the end of the line or the punctuation. Returns the number, or 0.
static int numbered_heading(Line l) {
    size_t k = 0;
    int value;
    if (k < l.n && isdigit((unsigned char)l.s[k])) {
        while (k < l.n && isdigit((unsigned char)l.s[k])) k++;
        value = k < 6 ? atoi(l.s) : 1000000;
    } else {
        while (k < l.n && strchr("IVXLCDM", l.s[k])) k++;
        value = roman_value(l.s, k);
    }
    if (k == 0 || value == 0) return 0;
    if (k == l.n) return value;
    if (l.s[k] != '.' && l.s[k] != ')') return 0;
    Line title = trim((Line){l.s + k + 1, l.n - k - 1});
    return count_words(title) <= 10 ? value : 0;
}

static int is_numbered_heading(Line l) { return numbered_heading(l) > 0; }

// The number of a chapter heading (step 8), or 0 when line is not one.
static int chapter_number(Line l) {
    l = trim(l);
    int value = numbered_heading(l);
    if (value) return value;
    char word[16];
    size_t at = 0;
    next_word(l, &at, word, sizeof word);
    if (!in_list(word, CHAPTER_WORDS) || count_words(l) > 12) return 0;
    // the number: digits, a roman numeral, a number word, or "the" and an ordinal
    size_t k = at;
    if (k < l.n && isdigit((unsigned char)l.s[k])) return atoi(l.s + k) > 0 ? atoi(l.s + k) : 0;
    while (k < l.n && strchr("IVXLCDMivxlcdm", l.s[k])) k++;
    if (k > at && (k == l.n || !isalpha((unsigned char)l.s[k]))) return roman_value(l.s + at, k - at);
    next_word(l, &at, word, sizeof word);
    if (!strcmp(word, "the")) next_word(l, &at, word, sizeof word);
    for (int i = 0; NUMBER_WORDS[i]; i++)
        if (!strcmp(word, NUMBER_WORDS[i])) return i % 12 + 1;
    return 0;
}

int book_chapter_heading(const char *line, size_t n) { return chapter_number((Line){line, n}) > 0; }

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

// "THE END", "The End.", "FINIS": the last words of a book.
static int is_end_marker(const char *s, size_t n) {
    Line l = trim((Line){s, n});
    while (l.n && strchr(".!", l.s[l.n - 1])) l.n--;
    return (l.n == 7 && !strncasecmp(l.s, "the end", 7)) || (l.n == 5 && !strncasecmp(l.s, "finis", 5));
}

// ---------------------------------------------------------------------------------------
// Speakers of a play

// A name in front of a tab ("First Witch<TAB>When shall we"): one to four words that start
// with a capital, of letters and ' - . &, not a heading keyword ("SCENE I<TAB>A desert").
static size_t tab_speaker(const char *line, size_t n, size_t *rest) {
    const char *tab = memchr(line, '\t', n < 41 ? n : 41);
    if (!tab || tab == line || !is_upper(line[0])) return 0;
    size_t name = (size_t)(tab - line);
    while (name && is_space(line[name - 1])) name--;
    for (size_t i = 0; i < name; i++)
        if (!isalpha((unsigned char)line[i]) && !strchr(" '-.&", line[i])) return 0;
    if (count_words((Line){line, name}) > 4) return 0;
    char word[16];
    first_word((Line){line, name}, word, sizeof word);
    if (is_heading_keyword(word)) return 0;
    size_t r = (size_t)(tab - line);
    while (r < n && is_space(line[r])) r++;
    *rest = r;
    return name;
}

// "HAMLET. To be", "MRS. HUDSON: I am": the run of all-capital words at the start of the
// line, up to the longest prefix of them whose last word ends with "." or ":".
static size_t caps_speaker(const char *line, size_t n, size_t *rest) {
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

// A line that may be a speaker's name standing alone ("Ber.", "First Witch", "MACBETH"):
// one to three words that each start with a capital, at most 30 bytes, an optional "." or
// ":" after them, not a heading. Returns the name's length without the punctuation.
static size_t alone_name(Line l) {
    if (l.n == 0 || l.n > 30 || !is_upper(l.s[0])) return 0;
    size_t n = l.n;
    if (l.s[n - 1] == '.' || l.s[n - 1] == ':') n--;
    int words = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isalpha((unsigned char)l.s[i]) && !strchr(" '-.", l.s[i])) return 0;
        if (!is_space(l.s[i]) && (i == 0 || is_space(l.s[i - 1]))) {
            if (!is_upper(l.s[i])) return 0;
            words++;
        }
    }
    if (words > 3 || is_heading_line(l, BOOK_SCRIPT) || is_roman(l.s, n)) return 0;
    return n;
}

size_t book_script_speaker(const Book *b, const char *line, size_t n, size_t *rest) {
    size_t k = tab_speaker(line, n, rest);
    if (k) return k;
    k = caps_speaker(line, n, rest);
    if (k || !b || !b->n_speakers) return k;
    k = alone_name((Line){line, n});
    for (size_t i = 0; k && i < b->n_speakers; i++)
        if (strlen(b->speakers[i]) == k && !memcmp(b->speakers[i], line, k)) {
            *rest = n;
            return k;
        }
    return 0;
}

// ---------------------------------------------------------------------------------------
// Markup

// Whether the character that ends at text[i - 1] (before) or starts at text[i] (after) is
// a letter or digit: ASCII ones, and non-ASCII ones except the typographic punctuation
// U+2010..U+205F (dashes, curly quotes), which books put right against a mark (“_You_).
static int letter_before(const char *text, size_t i) {
    if (i == 0) return 0;
    unsigned char c = (unsigned char)text[i - 1];
    if (c < 0x80) return isalnum(c) != 0;
    return !(i >= 3 && (unsigned char)text[i - 3] == 0xE2 && ((unsigned char)text[i - 2] & 0xFE) == 0x80);
}

static int letter_after(const char *text, size_t len, size_t i) {
    if (i >= len) return 0;
    unsigned char c = (unsigned char)text[i];
    if (c < 0x80) return isalnum(c) != 0;
    return !(c == 0xE2 && i + 1 < len && ((unsigned char)text[i + 1] & 0xFE) == 0x80);
}

// The footnote mark or inline illustration at text[i] == '[': its length, or 0.
static size_t bracket_markup(const char *text, size_t len, size_t i) {
    const char *close = memchr(text + i, ']', len - i < 200 ? len - i : 200);
    if (!close) return 0;
    size_t n = (size_t)(close - text) - i - 1;  // the inside
    const char *in = text + i + 1;
    if (memchr(in, '[', n)) return 0;
    if (n >= 12 && !strncasecmp(in, "illustration", 12)) return n + 2;
    int attached = i > 0 && text[i - 1] != ' ' && text[i - 1] != '\n';
    int digits = n >= 1 && n <= 3;
    for (size_t k = 0; k < n; k++) digits &= isdigit((unsigned char)in[k]) != 0;
    if (digits || (n == 1 && in[0] == '*') || (attached && n == 1 && isalpha((unsigned char)in[0])))
        return n + 2;
    return 0;
}

size_t book_clean_markup(char *out, size_t len, int *removed) {
    char *text = xmalloc(len + 1);  // the marks are judged by their neighbours in the original
    memcpy(text, out, len);
    text[len] = '\0';
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        char c = text[i];
        unsigned char before = i ? (unsigned char)text[i - 1] : ' ', after = i + 1 < len ? (unsigned char)text[i + 1] : ' ';
        if (c == '_' && !(letter_before(text, i) && letter_after(text, len, i + 1))) {
            (*removed)++, i++;  // _italics_: a mark at the edge of a word
            continue;
        }
        if (c == '*' && !(isspace(before) && isspace(after))) {
            (*removed)++, i++;  // *emphasis*, or a footnote star after a word
            continue;
        }
        size_t m = c == '[' ? bracket_markup(text, len, i) : 0;
        if (m) {
            (*removed)++;
            i += m;
            // the space on one side goes with it
            if (k && out[k - 1] == ' ' && (i == len || text[i] == ' ' || text[i] == '\n')) k--;
            else if (k == 0 && i < len && text[i] == ' ') i++;
            continue;
        }
        out[k++] = c;
        i++;
    }
    free(text);
    while (k && (out[k - 1] == ' ' || out[k - 1] == '\n')) k--;
    size_t start = 0;
    while (start < k && (out[start] == ' ' || out[start] == '\n')) start++;
    memmove(out, out + start, k - start);
    return k - start;
}

// A paragraph of nothing but asterisks, dashes, dots and the like ("*       *       *"):
// a scene break drawn in the text.
static int is_separator(const char *s, size_t n) {
    int marks = 0;
    for (size_t i = 0; i < n; i++) {
        if (strchr("*-.=~#+", s[i])) marks++;
        else if (!is_space(s[i]) && s[i] != '\n') return 0;
    }
    return marks >= 1;
}

// ---------------------------------------------------------------------------------------
// Lines

enum { LINE_TEXT, LINE_BLANK, LINE_GONE };

typedef struct {
    Line text;     // trimmed
    int kind;
    int indented;  // the raw line starts with white space
} SourceLine;

// A bracketed block that is not the text: "[Illustration", "[Footnote", "[Transcriber".
static int block_start(Line l) {
    return starts_with_nocase(l, "[Illustration") || starts_with_nocase(l, "[Footnote") ||
           starts_with_nocase(l, "[Transcriber");
}

// A line of an illustration block reduced to what could be a heading: brackets, the
// "[Illustration:" prefix and underscores at its ends taken off.
static Line caption(Line l) {
    if (starts_with_nocase(l, "[Illustration")) {
        l.s += 13, l.n -= 13;
        if (l.n && l.s[0] == ':') l.s++, l.n--;
    }
    while (l.n && strchr("[]_ \t", l.s[0])) l.s++, l.n--;
    while (l.n && strchr("[]_ \t", l.s[l.n - 1])) l.n--;
    return l;
}

// Step 3: marks the lines of bracketed blocks gone (a chapter heading inside an
// illustration stays, as its own line of text).
static void drop_blocks(SourceLine *lines, size_t first, size_t last, Book *b) {
    for (size_t i = first; i < last; i++) {
        if (lines[i].kind != LINE_TEXT || !block_start(lines[i].text)) continue;
        // the block ends where its brackets balance, at the end of a line
        int depth = 0;
        size_t end = i;
        for (; end < last && end < i + 60; end++) {
            Line l = lines[end].text;
            for (size_t k = 0; k < l.n; k++) depth += (l.s[k] == '[') - (l.s[k] == ']');
            if (depth <= 0) break;
        }
        if (end == last || end == i + 60 || lines[end].text.s[lines[end].text.n - 1] != ']') continue;
        int illustration = starts_with_nocase(lines[i].text, "[Illustration");
        for (size_t k = i; k <= end; k++) {
            Line c = caption(lines[k].text);
            if (illustration && c.n && book_chapter_heading(c.s, c.n)) {
                lines[k].text = c;
                lines[k].kind = LINE_TEXT;
            } else {
                lines[k].kind = LINE_GONE;
            }
        }
        b->blocks++;
        i = end;
    }
}

// Step 4, the names that stand alone on a line with the speech after them, at least three
// times each, after a blank line or a line that ends a sentence.
static void find_alone_speakers(const SourceLine *lines, size_t first, size_t last, Book *b) {
    StrMap names;
    strmap_init(&names, 64);
    int *counts = NULL;
    size_t n = 0;
    for (size_t i = first; i + 1 < last; i++) {
        if (lines[i].kind != LINE_TEXT || lines[i + 1].kind != LINE_TEXT) continue;
        if (i > first && lines[i - 1].kind == LINE_TEXT) {
            Line p = lines[i - 1].text;
            if (!strchr(".!?:;-", p.s[p.n - 1])) continue;
        }
        size_t k = alone_name(lines[i].text);
        size_t rest;
        if (!k || tab_speaker(lines[i].text.s, lines[i].text.n, &rest) ||
            caps_speaker(lines[i].text.s, lines[i].text.n, &rest))
            continue;
        if (strmap_put(&names, lines[i].text.s, k, (int32_t)n) == 0) {
            counts = xrealloc(counts, (n + 1) * sizeof(int));
            counts[n++] = 0;
        }
        counts[strmap_get(&names, lines[i].text.s, k)]++;
    }
    for (size_t s = 0; s < names.mask + 1; s++) {
        const StrMapSlot *slot = &names.slots[s];
        if (!slot->hash || counts[slot->value] < 3) continue;
        b->speakers = xrealloc(b->speakers, (b->n_speakers + 1) * sizeof(char *));
        char *name = xmalloc(slot->len + 1);
        memcpy(name, names.arena + slot->off, slot->len);
        name[slot->len] = '\0';
        b->speakers[b->n_speakers++] = name;
    }
    free(counts);
    strmap_free(&names);
}

static BookFormat detect_format(const SourceLine *lines, size_t first, size_t last, const Book *b) {
    int speakers = 0, blocks = 0;
    for (size_t i = first; i < last; i++) {
        if (lines[i].kind != LINE_TEXT) continue;
        size_t rest;
        speakers += book_script_speaker(b, lines[i].text.s, lines[i].text.n, &rest) > 0;
        blocks += i == first || lines[i - 1].kind != LINE_TEXT;
    }
    return speakers >= 10 && speakers * 5 >= blocks ? BOOK_SCRIPT : BOOK_PROSE;
}

static BookLayout detect_layout(const SourceLine *lines, size_t first, size_t last, int *unclear) {
    size_t text = 0, blocks = 0, lng = 0, indented = 0;
    for (size_t i = first; i < last; i++) {
        if (lines[i].kind != LINE_TEXT) continue;
        text++;
        int after_text = i > first && lines[i - 1].kind == LINE_TEXT;
        blocks += !after_text;
        lng += lines[i].text.n > 200;
        indented += after_text && lines[i].indented;
    }
    *unclear = 0;
    if (text <= 12 * blocks) return LAYOUT_BLANK;
    if (lng * 10 >= text * 3) return LAYOUT_LINES;
    if (indented >= 5 && indented * 40 >= text) return LAYOUT_INDENTED;
    *unclear = 1;
    return LAYOUT_BLANK;
}

const char *book_layout_name(BookLayout layout) {
    switch (layout) {
    case LAYOUT_LINES: return "one paragraph per line";
    case LAYOUT_INDENTED: return "indented paragraph starts";
    default: return "paragraphs separated by blank lines";
    }
}

// ---------------------------------------------------------------------------------------
// Paragraphs

typedef struct {
    ByteBuf text;
    int line;          // the file line of its first line
    int separation;    // blank lines before it
    int pending_scene; // a separator paragraph came before it
    size_t cap;
} Builder;

static void add_paragraph(Book *b, Builder *pb, BookLayout layout) {
    if (pb->text.len == 0) return;
    pb->text.len = book_clean_markup(pb->text.data, pb->text.len, &b->marks);
    int scene = pb->pending_scene || pb->separation >= (layout == LAYOUT_BLANK ? 2 : 1);
    if (is_separator(pb->text.data, pb->text.len) || pb->text.len == 0) {
        pb->pending_scene |= pb->text.len > 0;
        pb->text.len = 0;
        return;
    }
    if (b->n == pb->cap) {
        pb->cap = pb->cap ? pb->cap * 2 : 256;
        b->paras = xrealloc(b->paras, pb->cap * sizeof(Paragraph));
    }
    Paragraph *p = &b->paras[b->n++];
    p->text = xmalloc(pb->text.len + 1);
    memcpy(p->text, pb->text.data, pb->text.len);
    p->text[pb->text.len] = '\0';
    p->len = pb->text.len;
    p->line = pb->line;
    p->heading = 0;
    p->scene = scene;
    pb->text.len = 0;
    pb->pending_scene = 0;
}

// Step 5: the lines into paragraphs, as the layout marks them.
static void build_paragraphs(Book *b, const SourceLine *lines, size_t first, size_t last, BookLayout layout) {
    Builder pb = {0};
    int blank = 0, blank_before_gone = 0;
    for (size_t i = first; i <= last; i++) {
        int kind = i < last ? lines[i].kind : LINE_BLANK;
        if (kind == LINE_GONE) {  // as if absent: the blank lines around it do not add up
            if (blank > blank_before_gone) blank_before_gone = blank;
            blank = 0;
            continue;
        }
        if (kind == LINE_BLANK) {
            add_paragraph(b, &pb, layout);
            blank += i < last;
            continue;
        }
        int starts = pb.text.len == 0 || layout == LAYOUT_LINES || (layout == LAYOUT_INDENTED && lines[i].indented);
        if (starts) {
            add_paragraph(b, &pb, layout);
            pb.line = (int)i + 1;
            pb.separation = blank > blank_before_gone ? blank : blank_before_gone;
            blank = blank_before_gone = 0;
        } else {
            bytebuf_push(&pb.text, '\n');
        }
        bytebuf_append(&pb.text, lines[i].text.s, lines[i].text.n);
    }
    bytebuf_free(&pb.text);
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

// The number of the chapter that heading paragraph p starts, or 0.
static int chapter_paragraph(const Paragraph *p) {
    const char *nl = memchr(p->text, '\n', p->len);
    return p->heading ? chapter_number((Line){p->text, nl ? (size_t)(nl - p->text) : p->len}) : 0;
}

// Removes paragraphs [from, to) of b, adding their lines to range.
static void drop_paragraphs(Book *b, size_t from, size_t to, LineRange *range, int *count, int last_line) {
    if (from >= to) return;
    range->first = b->paras[from].line;
    range->last = to < b->n ? b->paras[to].line - 1 : last_line;
    *count = (int)(to - from);
    for (size_t i = from; i < to; i++) free(b->paras[i].text);
    memmove(&b->paras[from], &b->paras[to], (b->n - to) * sizeof(Paragraph));
    b->n -= to - from;
}

// Step 8: front matter before the first chapter, back matter after the last THE END.
static void drop_front_and_back(Book *b, const BookParseOptions *o, int last_line) {
    size_t start = b->n;
    for (size_t i = 0; i < b->n && start == b->n; i++) {
        if (chapter_paragraph(&b->paras[i]) != 1) continue;
        for (size_t j = i + 1; j < b->n; j++) {
            if (chapter_paragraph(&b->paras[j])) break;
            if (!b->paras[j].heading) {
                start = i;
                break;
            }
        }
    }
    if (start < b->n && !o->start_line) {
        // the one-line headings right above it belong to it ("ADVENTURE I. ..." above "I.")
        for (size_t k = 0; k < 3 && start > 0; k++) {
            const Paragraph *p = &b->paras[start - 1];
            if (!p->heading || memchr(p->text, '\n', p->len) || !strncasecmp(p->text, "the end", 7)) break;
            start--;
        }
        drop_paragraphs(b, 0, start, &b->front, &b->front_paragraphs, last_line);
    }
    if (o->end_line) return;
    size_t text = 0;
    while (text < b->n && b->paras[text].heading) text++;
    for (size_t i = b->n; i-- > text + 1;)
        if (b->paras[i].heading && is_end_marker(b->paras[i].text, b->paras[i].len)) {
            drop_paragraphs(b, i + 1, b->n, &b->back, &b->back_paragraphs, last_line);
            break;
        }
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

int book_parse(Book *b, const char *name, const char *data, size_t len, const BookParseOptions *o,
               char *err) {
    static const BookParseOptions automatic = {0};
    if (!o) o = &automatic;
    memset(b, 0, sizeof *b);
    if (check_text(name, data, len, err)) return -1;
    if (len >= 3 && !memcmp(data, "\xEF\xBB\xBF", 3)) data += 3, len -= 3;

    // Lines (LF, CRLF or CR ends).
    size_t nlines = 0, cap_lines = 1024;
    SourceLine *lines = xmalloc(cap_lines * sizeof(SourceLine));
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && data[j] != '\n' && data[j] != '\r') j++;
        if (nlines == cap_lines) lines = xrealloc(lines, (cap_lines *= 2) * sizeof(SourceLine));
        SourceLine *l = &lines[nlines++];
        l->text = trim((Line){data + i, j - i});
        l->kind = l->text.n ? LINE_TEXT : LINE_BLANK;
        l->indented = j > i && is_space(data[i]);
        if (j < len && data[j] == '\r' && j + 1 < len && data[j + 1] == '\n') j++;
        i = j + 1;
    }
    b->lines = (int)nlines;

    // Step 2: the text's lines, [first, last).
    size_t first = 0, last = nlines;
    if (o->start_line > (int)nlines || (o->end_line && o->end_line < (o->start_line ? o->start_line : 1))) {
        free(lines);
        return set_error(err, "%s: lines %d to %d leave no text (--start-line, --end-line; the file has %zu lines)",
                         name, o->start_line ? o->start_line : 1, o->end_line ? o->end_line : (int)nlines, nlines);
    }
    if (o->start_line) {
        first = (size_t)o->start_line - 1;
    } else {
        for (size_t i = 0; i < nlines; i++)
            if (gutenberg_start(lines[i].text)) {
                first = i + 1;
                b->gutenberg = 1;
                break;
            }
    }
    if (o->end_line) {
        last = (size_t)o->end_line < nlines ? (size_t)o->end_line : nlines;
    } else {
        for (size_t i = first; i < nlines; i++)
            if (gutenberg_end(lines[i].text)) {
                last = i;
                b->gutenberg = 1;
                break;
            }
    }
    if (first > 0) b->header = (LineRange){1, (int)first};
    if (last < nlines && !o->end_line) b->licence = (LineRange){(int)last + 1, (int)nlines};

    // Steps 3 to 6.
    drop_blocks(lines, first, last, b);
    find_alone_speakers(lines, first, last, b);
    b->format = o->format ? o->format : detect_format(lines, first, last, b);
    if (b->format == BOOK_PROSE)
        b->layout = o->layout ? o->layout : detect_layout(lines, first, last, &b->layout_unclear);
    else
        b->layout = LAYOUT_BLANK;
    build_paragraphs(b, lines, first, last, b->layout);
    free(lines);

    // Gutenberg's "Produced by ..." credit, among the first few paragraphs.
    for (size_t i = 0; b->gutenberg && i < b->n && i < 5; i++)
        if (!strncmp(b->paras[i].text, "Produced by", 11)) {
            free(b->paras[i].text);
            memmove(&b->paras[i], &b->paras[i + 1], (b->n - i - 1) * sizeof(Paragraph));
            b->n--;
            break;
        }

    // Step 7: headings.
    for (size_t i = 0; i < b->n; i++) b->paras[i].heading = paragraph_is_heading(&b->paras[i], b->format);
    drop_front_and_back(b, o, (int)last);
    for (size_t i = 0; i < b->n; i++) {
        b->headings += b->paras[i].heading;
        if (i > 0 && b->paras[i - 1].heading) b->paras[i].scene = 1;
    }

    // Step 9: the title page, short paragraphs before the first paragraph of real text.
    size_t keep = 0;
    int in_title_page = 1;
    for (size_t i = 0; i < b->n; i++) {
        Paragraph *p = &b->paras[i];
        Line all = {p->text, p->len};
        size_t rest;  // (in a play, the first speech, however short: "BERNARDO\nWho's there?")
        if (in_title_page && !p->heading &&
            (paragraph_words(p) >= 8 || has_double_quote(all) ||
             (b->format == BOOK_SCRIPT && book_script_speaker(b, p->text, strcspn(p->text, "\n"), &rest))))
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

int book_load(Book *b, const char *path, const BookParseOptions *o, char *err) {
    size_t len;
    char *data = read_file(path, &len, err);
    if (!data) {
        memset(b, 0, sizeof *b);
        return -1;
    }
    int rc = book_parse(b, path, data, len, o, err);
    free(data);
    return rc;
}

void book_free(Book *b) {
    for (size_t i = 0; i < b->n; i++) free(b->paras[i].text);
    free(b->paras);
    for (size_t i = 0; i < b->n_speakers; i++) free(b->speakers[i]);
    free(b->speakers);
    memset(b, 0, sizeof *b);
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

void book_describe(const Book *b, FILE *f) {
    fprintf(f, "book: %d lines, %zu paragraphs, %d headings; %s", b->lines, b->n, b->headings,
            b->format == BOOK_SCRIPT ? "a play" : "prose");
    if (b->format == BOOK_PROSE) fprintf(f, ", %s", book_layout_name(b->layout));
    if (b->layout_unclear) fprintf(f, " (no layout fits: no blank lines, no indentation, wrapped lines; see --layout)");
    fprintf(f, "\n");
    if (b->header.first || b->licence.first) {
        fprintf(f, "book: cut Project Gutenberg's");
        if (b->header.first) fprintf(f, " header (lines %d-%d)", b->header.first, b->header.last);
        if (b->header.first && b->licence.first) fprintf(f, " and");
        if (b->licence.first) fprintf(f, " licence (lines %d-%d)", b->licence.first, b->licence.last);
        fprintf(f, "\n");
    }
    if (b->front.first)
        fprintf(f, "book: dropped the front matter before the first chapter: lines %d-%d (%d paragraphs; --start-line to keep it)\n",
                b->front.first, b->front.last, b->front_paragraphs);
    if (b->back.first)
        fprintf(f, "book: dropped the back matter after THE END: lines %d-%d (%d paragraphs; --end-line to keep it)\n",
                b->back.first, b->back.last, b->back_paragraphs);
    if (b->title_paragraphs) fprintf(f, "book: dropped %d title-page paragraphs\n", b->title_paragraphs);
    if (b->blocks || b->marks)
        fprintf(f, "book: removed %d illustrations, footnotes and notes, and %d marks (italics, emphasis, footnote numbers)\n",
                b->blocks, b->marks);
}
