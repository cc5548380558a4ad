// persona_extract.c: conversations from the character's lines (see persona_extract.h).
#include "persona_extract.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "persona_jsonl.h"

int extract_is_line(const Dialogue *d, size_t k, double min_confidence) {
    return d->turns[k].speaker == ENTITY_CHARACTER && d->turns[k].confidence >= min_confidence;
}

// Turns j < k are in one exchange when no more than one paragraph lies between them and
// no scene break (a heading, or blank lines) does.
static int close_turns(const Dialogue *d, size_t j, size_t k) {
    size_t a = d->turns[j].last_para, b = d->turns[k].first_para;
    const Paragraph *paras = d->book->paras;
    if (b > a + 2 || (b > a && paras[b].scene)) return 0;
    return b <= a + 1 || !paras[a + 1].scene;
}

// Whether turn j can be the user side before the character's turn k: someone else's line,
// or nobody's in particular right before it (a new paragraph is a new speaker).
static int user_side(const Dialogue *d, size_t j, size_t k, double min_confidence) {
    const Turn *t = &d->turns[j];
    if (t->speaker == ENTITY_CHARACTER) return 0;
    if (t->speaker >= 0 && t->confidence >= min_confidence) return close_turns(d, j, k);
    return k == j + 1 && dialogue_adjacent(d, k);
}

// Appends up to max_words of the words of s[0..n) that end it, starting at a sentence
// start when there is one in the first half of what is kept.
static void last_words(ByteBuf *out, const char *s, size_t n, int max_words) {
    size_t start = n;
    int words = 0;
    while (start > 0 && words < max_words) {
        while (start > 0 && s[start - 1] == ' ') start--;
        while (start > 0 && s[start - 1] != ' ') start--;
        words++;
    }
    if (start > 0) {
        for (size_t i = start; i + 2 < n && i < start + (n - start) / 2; i++)
            if (strchr(".!?", s[i]) && s[i + 1] == ' ') {
                start = i + 2;
                break;
            }
    }
    while (start < n && s[start] == ' ') start++;
    bytebuf_append(out, s + start, n - start);
}

// The narrative before turn k: the start of its paragraph before the first quotation, and
// the narrative paragraphs just before (at most 3, not across a scene break or a turn).
static void narrative_context(const Dialogue *d, size_t k, const char *has_turn, int max_words, ByteBuf *out) {
    size_t p = d->turns[k].first_para;
    ByteBuf text = {0};
    size_t from = p;
    while (from > 0 && p - from < 3 && !d->book->paras[from].scene && !has_turn[from - 1]) from--;
    for (size_t q = from; q < p; q++) {
        if (text.len) bytebuf_push(&text, ' ');
        bytebuf_append(&text, d->prose[q], d->prose_len[q]);
    }
    if (d->scans[p].n) {
        size_t n = d->scans[p].quotes[0].start;
        while (n > 0 && d->prose[p][n - 1] != ' ') n--;  // the opening mark
        while (n > 0 && d->prose[p][n - 1] == ' ') n--;
        if (n) {
            if (text.len) bytebuf_push(&text, ' ');
            bytebuf_append(&text, d->prose[p], n);
        }
    }
    if (text.len) last_words(out, text.data, text.len, max_words);
    bytebuf_free(&text);
}

typedef struct {
    cJSON *conv, *turns;
    ByteBuf pending;  // the message being built
    int pending_role; // 0 none, 1 user, 2 assistant
} Builder;

static void flush_message(Builder *b) {
    if (b->pending_role)
        jsonl_add_message(b->conv, b->pending_role == 1 ? "user" : "assistant", b->pending.data);
    b->pending.len = 0;
    b->pending_role = 0;
}

static void add_message(Builder *b, int role, const char *text, size_t n) {
    if (b->pending_role && b->pending_role != role) flush_message(b);
    if (b->pending.len) bytebuf_append(&b->pending, "\n\n", 2);
    bytebuf_append(&b->pending, text, n);
    b->pending_role = role;
}

static void add_line(Builder *b, const Turn *t) {
    add_message(b, 2, t->text, t->len);
    cJSON *m = cJSON_CreateObject();
    cJSON_AddNumberToObject(m, "line", t->line);
    cJSON_AddStringToObject(m, "method", attr_method_name(t->method));
    cJSON_AddNumberToObject(m, "confidence", round(t->confidence * 100.0) / 100.0);
    cJSON_AddItemToArray(b->turns, m);
}

void extract_conversations(const Dialogue *d, const ExtractOptions *o, FILE *out, ExtractStats *st) {
    memset(st, 0, sizeof *st);
    char *has_turn = xcalloc(d->book->n ? d->book->n : 1, 1);
    for (size_t k = 0; k < d->n; k++) {
        const Turn *t = &d->turns[k];
        for (size_t p = t->first_para; p <= t->last_para; p++) has_turn[p] = 1;
        st->turns++;
        if (t->group) st->groups++;
        else if (t->nested) st->nested++;
        else if (t->speaker < 0) st->unattributed++;
        if (t->speaker == ENTITY_CHARACTER) {
            if (t->confidence >= o->min_confidence) st->lines[t->method]++;
            else st->below[t->method]++;
        }
    }
    Builder b = {0};
    for (size_t k = 0; k < d->n;) {
        if (!extract_is_line(d, k, o->min_confidence)) {
            k++;
            continue;
        }
        b.conv = jsonl_conversation();
        b.turns = cJSON_CreateArray();
        if (k > 0 && user_side(d, k - 1, k, o->min_confidence)) {
            add_message(&b, 1, d->turns[k - 1].text, d->turns[k - 1].len);
            st->user_speech++;
        } else {
            ByteBuf context = {0};
            narrative_context(d, k, has_turn, o->context_words, &context);
            if (context.len == 0) {
                st->no_context++;
                st->lines[d->turns[k].method]--;
                cJSON_Delete(b.conv);
                cJSON_Delete(b.turns);
                k++;
                continue;
            }
            add_message(&b, 1, context.data, context.len);
            bytebuf_free(&context);
            st->user_context++;
        }
        add_line(&b, &d->turns[k]);
        size_t j = k + 1;
        for (; j < d->n && close_turns(d, j - 1, j); j++) {
            if (extract_is_line(d, j, o->min_confidence)) {
                add_line(&b, &d->turns[j]);
            } else if (j + 1 < d->n && extract_is_line(d, j + 1, o->min_confidence) &&
                       close_turns(d, j, j + 1) && user_side(d, j, j + 1, o->min_confidence)) {
                add_message(&b, 1, d->turns[j].text, d->turns[j].len);
            } else {
                break;
            }
        }
        flush_message(&b);
        cJSON *meta = cJSON_CreateObject();
        cJSON_AddStringToObject(meta, "source", "extract");
        cJSON_AddItemToObject(meta, "turns", b.turns);
        cJSON_AddItemToObject(b.conv, "meta", meta);
        jsonl_write(out, b.conv);
        cJSON_Delete(b.conv);
        st->conversations++;
        k = j;
    }
    bytebuf_free(&b.pending);
    free(has_turn);
}

static void write_escaped(FILE *f, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\t') fputs("\\t", f);
        else if (s[i] == '\n') fputs("\\n", f);
        else if (s[i] == '\\') fputs("\\\\", f);
        else fputc(s[i], f);
    }
}

void extract_write_turns(const Dialogue *d, const ExtractOptions *o, FILE *out) {
    fputs("line\tspeaker\tmethod\tconfidence\temitted\ttext\n", out);
    for (size_t k = 0; k < d->n; k++) {
        const Turn *t = &d->turns[k];
        const char *who = t->group          ? "(group)"
                          : t->nested       ? "(story)"
                          : t->speaker >= 0 ? d->cast.entities[t->speaker].name
                                            : "(unknown)";
        fprintf(out, "%d\t", t->line);
        write_escaped(out, who, strlen(who));
        fprintf(out, "\t%s\t%.2f\t%d\t", attr_method_name(t->method), t->confidence,
                extract_is_line(d, k, o->min_confidence));
        write_escaped(out, t->text, t->len);
        fputc('\n', out);
    }
}

size_t extract_written(const ExtractStats *st, size_t *below) {
    size_t written = 0;
    *below = 0;
    for (int m = 0; m < ATTR_COUNT; m++) written += st->lines[m], *below += st->below[m];
    return written;
}

void extract_say_nothing(const ExtractStats *st, const char *book, const char *character, double min_confidence,
                         int layout_unclear, FILE *f) {
    size_t below = 0;
    extract_written(st, &below);
    if (below == 0)
        fprintf(f, "error: %s: \"%s\" never speaks: none of the %zu turns found is attributed to them%s\n", book,
                character, st->turns,
                layout_unclear ? " (the book's paragraphs could not be told apart: see --layout)" : "");
    else
        fprintf(f, "error: %s: none of the %zu lines attributed to \"%s\" reaches --min-confidence %.2f\n", book,
                below, character, min_confidence);
}

void extract_report(const Dialogue *d, const ExtractStats *st, const char *character, FILE *f) {
    size_t below, written = extract_written(st, &below);
    fprintf(f,
            "dialogue: %zu quotations, %zu turns (%zu unattributed, %zu by groups, %zu in stories told by a\n"
            "          speaker), %zu texts read aloud, %zu thoughts\n",
            d->quotations, st->turns, st->unattributed, st->groups, st->nested, d->documents, d->thoughts);
    fprintf(f, "lines of %s: %zu written", character, written);
    for (int m = 1; m < ATTR_COUNT; m++)
        if (st->lines[m]) fprintf(f, ", %s %zu", attr_method_name((AttrMethod)m), st->lines[m]);
    fprintf(f, "\nskipped: %zu below --min-confidence", below);
    for (int m = 1; m < ATTR_COUNT; m++)
        if (st->below[m]) fprintf(f, ", %s %zu", attr_method_name((AttrMethod)m), st->below[m]);
    fprintf(f, "; %zu ambiguous turns (no speaker); %zu without any context\n", st->unattributed, st->no_context);
    fprintf(f, "conversations: %zu (first user turn: %zu what was said, %zu narrative)\n", st->conversations,
            st->user_speech, st->user_context);
}
