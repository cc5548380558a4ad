// persona_dialogue.c: turns and their speakers (see persona_dialogue.h).
#include "persona_dialogue.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"

#define CONF_SCRIPT 0.99f
#define CONF_TAG 0.95f
#define CONF_COLON_TAG 0.90f
#define CONF_BEAT 0.85f
#define CONF_PREVIOUS_BEAT 0.75f
#define CONF_ANCHOR 0.75f  // a turn this sure is evidence for its neighbours
#define CONF_WEAK 0.50f
#define CONF_ADDRESSED 0.30f
#define WINDOW_PARAGRAPHS 6
#define WINDOW_TURNS 64  // the most turns that counting or a pronoun looks back or ahead

const char *attr_method_name(AttrMethod m) {
    static const char *const names[ATTR_COUNT] = {"none", "tag", "beat", "pronoun", "alternation", "script"};
    return m < ATTR_COUNT ? names[m] : "?";
}

static Turn *new_turn(Dialogue *d, size_t para) {
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 256;
        d->turns = xrealloc(d->turns, d->cap * sizeof(Turn));
    }
    Turn *t = &d->turns[d->n++];
    memset(t, 0, sizeof *t);
    t->first_para = t->last_para = t->tag_para = para;
    t->line = d->book->paras[para].line;
    t->speaker = -1;
    return t;
}

// Appends a fragment of speech to a turn: trimmed; after a comma that a tag interrupted,
// a capital starts a new sentence, so the comma becomes a full stop.
static void append_fragment(ByteBuf *b, const char *s, size_t n, const char *sep) {
    while (n && (s[0] == ' ' || s[0] == '\n')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\n')) n--;
    if (n == 0) return;
    if (b->len) {
        if (b->data[b->len - 1] == ',' && isupper((unsigned char)s[0]) && !strcmp(sep, " "))
            b->data[b->len - 1] = '.';
        bytebuf_append(b, sep, strlen(sep));
    }
    bytebuf_append(b, s, n);
}

static void add_text(Turn *t, const char *s, size_t n, const char *sep) {
    ByteBuf b = {t->text, t->len, t->text ? t->len + 1 : 0};
    append_fragment(&b, s, n, sep);
    t->text = b.data;
    t->len = b.len;
}

static int same_subject(const Subject *a, const Subject *b) {
    if (a->kind != b->kind || a->thought != b->thought) return 0;
    if (a->kind == SUBJ_ENTITY) return a->entity == b->entity;
    if (a->kind == SUBJ_PRONOUN) return a->gender == b->gender;
    return 1;
}

static int known(const Turn *t) { return t->speaker >= 0 && t->confidence >= CONF_ANCHOR; }

static int compatible(const Dialogue *d, int entity, Gender g) {
    Gender e = d->cast.entities[entity].gender;
    return e == GENDER_UNKNOWN || g == GENDER_UNKNOWN || e == g;
}

static int is_narrative_paragraph(const Dialogue *d, size_t p) {
    return d->prose[p] && d->scans[p].n == 0;
}

// ---------------------------------------------------------------------------------------
// Prose: quotations and tags into turns

typedef struct {
    Subject after, before;
} QuoteTags;

static int quote_ends_sentence(const char *s, const Span *q) {
    size_t e = q->end;
    while (e > q->start && (s[e - 1] == ' ' || s[e - 1] == '"')) e--;
    return e > q->start && strchr(".!?", s[e - 1]) != NULL;
}

static void add_unique(int *list, int *n, int entity) {
    for (int k = 0; k < *n; k++)
        if (list[k] == entity) return;
    if (*n < 4) list[(*n)++] = entity;
}

// Whether byte at of a paragraph is inside one of the quotations of inner, found in the
// paragraph's text from byte offset on.
static int inside(const QuoteScan *inner, size_t offset, size_t at) {
    for (size_t j = 0; j < inner->n; j++)
        if (at >= offset + inner->quotes[j].start && at < offset + inner->quotes[j].end) return 1;
    return 0;
}

// The people quotation q of paragraph p addresses and names (quotation_names).
static void add_names(Dialogue *d, Turn *t, size_t p, const Span *q) {
    Mentions addressed = {0}, named = {0};
    quotation_names(&d->cast, d->prose[p], q->start, q->end, &addressed, &named);
    // a name inside the speech's own quotations ("And what do you think she said? 'Ah! Mrs.
    // Bennet, we shall have her at last!'") is called or named by someone else
    QuoteScan inner = {0};
    quotes_scan(d->family == QUOTES_SINGLE ? QUOTES_DOUBLE : QUOTES_SINGLE, d->prose[p] + q->start, q->end - q->start,
                &inner);
    for (size_t i = 0; i < addressed.n; i++)
        if (!inside(&inner, q->start, addressed.m[i].at))
            add_unique(t->addressed, &t->n_addressed, addressed.m[i].entity);
    for (size_t i = 0; i < named.n; i++)
        if (!inside(&inner, q->start, named.m[i].at)) add_unique(t->named, &t->n_named, named.m[i].entity);
    quotes_free(&inner);
    free(addressed.m);
    free(named.m);
}

static int is_addressed(const Turn *t, int entity) {
    for (int k = 0; k < t->n_addressed; k++)
        if (t->addressed[k] == entity) return 1;
    return 0;
}

// Whether turn t names entity in the third person: a speaker does not, so t is not theirs
// (for the rules that guess; a tag that names the speaker wins).
static int names_in_third_person(const Turn *t, int entity) {
    for (int k = 0; k < t->n_named; k++)
        if (t->named[k] == entity) return 1;
    return 0;
}

// Whether paragraph p is part of a story told inside someone's speech, with dialogue of its
// own: in a book quoted with double marks, single quotation marks in its narrative, or a
// quotation that ends with a single mark ("Ten to two.'"), as when a client tells what was
// said to him.
static int nested_paragraph(Dialogue *d, size_t p) {
    if (d->family != QUOTES_DOUBLE) return 0;
    const char *s = d->prose[p];
    const QuoteScan *q = &d->scans[p];
    QuoteScan inner = {0};
    int nested = 0;
    size_t from = 0;
    for (size_t j = 0; j <= q->n && !nested; j++) {
        size_t to = j < q->n ? q->quotes[j].start : d->prose_len[p];
        if (to > from) {
            quotes_scan(QUOTES_SINGLE, s + from, to - from, &inner);
            for (size_t i = 0; i < inner.n; i++)
                if (memchr(s + from + inner.quotes[i].start, ' ', inner.quotes[i].end - inner.quotes[i].start))
                    nested = 1;
        }
        if (j < q->n) {
            // a damaged closing mark followed by a tag: `'Tell me,"said I`
            for (size_t i = q->quotes[j].start; i + 1 < q->quotes[j].end && !nested; i++)
                if (s[i] == '"' && i > 0 && strchr(",.!?", s[i - 1]) &&
                    tag_after(&d->cast, s, i + 1, q->quotes[j].end, 0).speech)
                    nested = 1;
            size_t e = q->quotes[j].end;
            while (e > q->quotes[j].start && s[e - 1] == ' ') e--;
            size_t mark = e >= 1 && s[e - 1] == '\''                        ? 1
                          : e >= 3 && !memcmp(s + e - 3, "\xE2\x80\x99", 3) ? 3
                                                                            : 0;
            if (mark && e - mark > q->quotes[j].start && strchr(".,!?", s[e - mark - 1])) nested = 1;
            from = q->quotes[j].end;
        }
    }
    quotes_free(&inner);
    return nested;
}

// The turns of paragraph p. tags[j] are its quotations' tags; colon is the tag that the
// narrative paragraph before it ended with (kind SUBJ_THING when it announced a text).
static void paragraph_turns(Dialogue *d, size_t p, const QuoteTags *tags, Subject colon) {
    const char *s = d->prose[p];
    const QuoteScan *q = &d->scans[p];
    size_t n = q->n;
    Subject *subj = xcalloc(n, sizeof(Subject));
    int distinct = 0, from_colon = 0, nested = nested_paragraph(d, p);
    Subject first = {0};
    for (size_t j = 0; j < n; j++) {
        const Subject *a = &tags[j].after, *b = &tags[j].before;
        subj[j] = a->speech ? *a : b->speech ? *b : (Subject){0};
        if (subj[j].kind == SUBJ_NONE) continue;
        // "...," said Mr. Merryweather. "...!" he remarked: the pronoun is the name.
        if (subj[j].kind == SUBJ_PRONOUN && first.kind == SUBJ_ENTITY &&
            compatible(d, first.entity, subj[j].gender))
            subj[j] = first;
        if (distinct == 0) first = subj[j], distinct = 1;
        else if (!same_subject(&first, &subj[j])) distinct = 2;
    }
    if (distinct < 2) {
        // One speaker: the tag, else the first beat, else the colon before the paragraph.
        Subject one = first;
        for (size_t j = 0; j < n && one.kind == SUBJ_NONE; j++) {
            if (tags[j].before.kind == SUBJ_ENTITY || tags[j].before.kind == SUBJ_PRONOUN) one = tags[j].before;
            else if (tags[j].after.kind == SUBJ_ENTITY || tags[j].after.kind == SUBJ_PRONOUN)
                one = tags[j].after;
        }
        if (one.kind == SUBJ_NONE && colon.kind != SUBJ_NONE) one = colon, from_colon = 1;
        for (size_t j = 0; j < n; j++) subj[j] = one;
    } else {
        for (size_t j = 1; j < n; j++)
            if (subj[j].kind == SUBJ_NONE) subj[j] = subj[j - 1];
        for (size_t j = n; j-- > 1;)
            if (subj[j - 1].kind == SUBJ_NONE) subj[j - 1] = subj[j];
    }

    // A speech continued from the paragraph before joins that turn.
    Turn *t = NULL;
    int continued = p > 0 && !d->book->paras[p].scene && d->scans[p - 1].open_at_end && q->starts_open &&
                    d->n && d->turns[d->n - 1].last_para == p - 1;
    if (continued) {
        Turn *last = &d->turns[d->n - 1];
        if (subj[0].kind == SUBJ_NONE || last->tag.kind == SUBJ_NONE || same_subject(&subj[0], &last->tag)) {
            t = last;
            t->last_para = p;
            if (t->tag.kind == SUBJ_NONE && subj[0].kind != SUBJ_NONE) t->tag = subj[0], t->tag_para = p;
        }
    }
    for (size_t j = 0; j < n; j++) {
        if (subj[j].kind == SUBJ_THING || subj[j].thought) {  // "it said": a text being read; a thought
            if (subj[j].thought) d->thoughts++;
            else d->documents++;
            t = NULL;
            continue;
        }
        const char *sep = " ";
        if (t && t->last_para == p && t->first_para != p && j == 0) sep = "\n\n";
        if (!t || (j > 0 && !same_subject(&subj[j], &subj[j - 1]))) {
            t = new_turn(d, p);
            t->tag = subj[j];
            t->tag_para = from_colon ? p - 1 : p;
            t->group = subj[j].kind == SUBJ_GROUP;
        }
        add_text(t, s + q->quotes[j].start, q->quotes[j].end - q->quotes[j].start, sep);
        t->nested |= nested;
        add_names(d, t, p, &q->quotes[j]);
    }
    // a turn whose quotations were all empty is no turn
    while (d->n && d->turns[d->n - 1].len == 0) {
        free(d->turns[d->n - 1].text);
        d->n--;
    }
    free(subj);
}

// Calls fn on every stretch of narrative (the text between quotations) of the book.
typedef void (*NarrativeFn)(Dialogue *d, size_t p, size_t from, size_t to);

static void each_narrative(Dialogue *d, NarrativeFn fn) {
    for (size_t p = 0; p < d->book->n; p++) {
        if (!d->prose[p]) continue;
        const QuoteScan *q = &d->scans[p];
        size_t from = 0;
        for (size_t j = 0; j <= q->n; j++) {
            size_t to = j < q->n ? q->quotes[j].start : d->prose_len[p];
            if (to > from) fn(d, p, from, to);
            if (j < q->n) from = q->quotes[j].end;
        }
    }
}

static void learn_appositions(Dialogue *d, size_t p, size_t from, size_t to) {
    cast_learn_appositions(&d->cast, d->prose[p], from, to);
}

static void scan_mentions(Dialogue *d, size_t p, size_t from, size_t to) {
    mentions_scan(&d->cast, d->prose[p], from, to, &d->mentions[p]);
}

// Whether s[0..n) contains word.
static int has_text(const char *s, size_t n, const char *word) {
    size_t k = strlen(word);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(s + i, word, k)) return 1;
    return 0;
}

// The tag that the narrative at the end of paragraph p gives the quotation of the next
// paragraph, announcing it with a colon or a dash: "and he said:", "said with some
// discomposure to Sir William,--". A narrative paragraph that ends with a colon but has no
// speech verb announces a text being read ("read as follows:"): SUBJ_THING.
static Subject announcement(Dialogue *d, size_t p) {
    const char *s = d->prose[p];
    size_t n = d->prose_len[p];
    if (!s || n == 0) return (Subject){0};
    const QuoteScan *q = &d->scans[p];
    size_t from = q->n ? q->quotes[q->n - 1].end : 0;
    int colon = s[n - 1] == ':';
    int dash = (n >= 2 && !memcmp(s + n - 2, "--", 2)) || (n >= 3 && !memcmp(s + n - 3, "\xE2\x80\x94", 3));
    if (from >= n || q->open_at_end || (!colon && !dash)) return (Subject){0};
    // "... and immediately wrote as follows:--": a letter, not a turn
    size_t last = from;
    for (size_t i = from; i + 1 < n; i++)
        if (strchr(".!?", s[i]) && s[i + 1] == ' ') last = i + 2;
    static const char *const writing[] = {" wrote", " writes", " read ", " reads ", " as follows", NULL};
    for (int k = 0; writing[k]; k++)
        if (has_text(s + last, n - last, writing[k]) && !has_text(s + last, n - last, " said"))
            return (Subject){.kind = SUBJ_THING, .speech = 1};
    Subject tag = tag_before(&d->cast, s, from, n);
    if (tag.speech) return tag;
    return colon && q->n == 0 ? (Subject){.kind = SUBJ_THING, .speech = 1} : (Subject){0};
}

// The one who acts in the short last sentence of the narrative paragraph p, when the next
// paragraph's quotation has no tag of its own: "Lady Catherine seemed pleased." / "And will
// you promise me ...", "...: Charlotte tried to console her." / "I dare say ...". Not when
// that sentence says they do not speak ("Elizabeth made no answer.", "he was silent"), and
// not after a long one, which tells of more than who speaks next.
#define PREVIOUS_BEAT_WORDS 15
static Subject previous_beat(Dialogue *d, size_t p) {
    static const char *const silent[] = {" no ", " not ", "n't ", " nothing", " never", " silent", " silence",
                                         " without ", NULL};
    const char *s = d->prose[p];
    if (!is_narrative_paragraph(d, p)) return (Subject){0};
    size_t last = 0;  // where the last sentence (or clause after a colon) starts
    for (size_t i = 0; i + 1 < d->prose_len[p]; i++)
        if (strchr(".!?:;", s[i]) && s[i + 1] == ' ') last = i + 2;
    int words = 1;
    for (size_t i = last; i < d->prose_len[p]; i++) words += s[i] == ' ';
    if (words > PREVIOUS_BEAT_WORDS) return (Subject){0};
    for (int k = 0; silent[k]; k++) {
        const char *hit = strstr(s + last, silent[k]);
        if (hit) return (Subject){0};
    }
    Subject beat = tag_before(&d->cast, s, last, d->prose_len[p]);
    return !beat.speech && (beat.kind == SUBJ_ENTITY || beat.kind == SUBJ_PRONOUN) ? beat : (Subject){0};
}

static void prose_turns(Dialogue *d) {
    const Book *b = d->book;
    // Phrases that are the character's names, then the tags of every quotation: they name
    // the cast that beats and mentions look for.
    each_narrative(d, learn_appositions);
    size_t total = 0;
    for (size_t p = 0; p < b->n; p++) total += d->prose[p] ? d->scans[p].n : 0;
    d->quotations = total;
    QuoteTags *tags = xcalloc(total ? total : 1, sizeof(QuoteTags));
    size_t at = 0;
    for (size_t p = 0; p < b->n; p++) {
        if (!d->prose[p]) continue;
        const char *s = d->prose[p];
        const QuoteScan *q = &d->scans[p];
        for (size_t j = 0; j < q->n; j++, at++) {
            size_t prev_end = j ? q->quotes[j - 1].end : 0;
            size_t next = j + 1 < q->n ? q->quotes[j + 1].start : d->prose_len[p];
            tags[at].after =
                tag_after(&d->cast, s, q->quotes[j].end, next, quote_ends_sentence(s, &q->quotes[j]));
            tags[at].before = tag_before(&d->cast, s, prev_end, q->quotes[j].start);
        }
    }
    // People named in the narrative, and from them the cast's genders.
    each_narrative(d, scan_mentions);
    cast_decide_genders(&d->cast);
    // Turns, paragraph by paragraph.
    at = 0;
    for (size_t p = 0; p < b->n; p++) {
        if (!d->prose[p] || d->scans[p].n == 0) continue;
        Subject colon = p > 0 && !b->paras[p].scene ? announcement(d, p - 1) : (Subject){0};
        // (not "she added": then the one who spoke before may be going on)
        if (colon.speech && !colon.goes_on && colon.kind != SUBJ_THING && is_narrative_paragraph(d, p - 1))
            d->announces[p - 1] = 1;
        if (colon.kind == SUBJ_NONE && p > 0 && !b->paras[p].scene) colon = previous_beat(d, p - 1);
        size_t first_turn = d->n;
        paragraph_turns(d, p, tags + at, colon);
        for (size_t k = first_turn; k < d->n; k++) {
            Turn *t = &d->turns[k];
            if (t->tag.kind != SUBJ_ENTITY || t->speaker >= 0 || t->nested) continue;
            t->speaker = t->tag.entity;
            t->method = t->tag.speech ? ATTR_TAG : ATTR_BEAT;
            t->confidence = !t->tag.speech   ? (t->tag_para < p ? CONF_PREVIOUS_BEAT : CONF_BEAT)
                            : t->tag_para < p ? CONF_COLON_TAG
                                              : CONF_TAG;
            // A quotation that calls its speaker by name was misread.
            if (is_addressed(t, t->speaker)) t->confidence = CONF_ADDRESSED;
        }
        at += d->scans[p].n;
    }
    free(tags);
    // A story goes on in the turns right after it, unless one names its speaker: its
    // "I" is the teller, its "he" someone in the story.
    for (size_t k = 1; k < d->n; k++) {
        Turn *t = &d->turns[k];
        int named = t->tag.kind == SUBJ_ENTITY && t->tag.speech && t->tag.entity != cast_narrator(&d->cast);
        if (d->turns[k - 1].nested && dialogue_adjacent(d, k) && !named && !t->nested) {
            t->nested = 1;
            t->speaker = -1;
            t->method = ATTR_NONE;
            t->confidence = 0;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scripts

static int is_stage_direction(const char *s, size_t n) {
    static const char *const starts[] = {"Enter ", "Exit", "Exeunt", "Re-enter", "Manet", NULL};
    if (n && (s[0] == '[' || s[0] == '(' || s[0] == '_')) return 1;
    for (int i = 0; starts[i]; i++)
        if (n >= strlen(starts[i]) && !strncmp(s, starts[i], strlen(starts[i]))) return 1;
    return 0;
}

// Speech text without bracketed stage directions ("[Aside.]", "(rising)"), without the
// braces of a speech said together ("MACBETH |" over "| What's the matter."), tabs made
// spaces, trimmed; *depth carries a bracket left open to the next line.
static void add_speech_line(Turn *t, const char *s, size_t n, int *depth) {
    ByteBuf clean = {0};
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '[' || s[i] == '(') (*depth)++;
        else if ((s[i] == ']' || s[i] == ')') && *depth) (*depth)--;
        else if (!*depth && s[i] != '|') bytebuf_push(&clean, s[i] == '\t' ? ' ' : s[i]);
    }
    size_t a = 0, z = clean.len;
    while (a < z && (clean.data[a] == ' ' || clean.data[a] == '\r')) a++;
    while (z > a && (clean.data[z - 1] == ' ' || clean.data[z - 1] == '\r')) z--;
    if (z > a) add_text(t, clean.data + a, z - a, "\n");
    bytebuf_free(&clean);
}

// A line that opens with a bracketed direction and goes on with words ("[Aside]  This
// supernatural soliciting"): speech, not a direction.
static int direction_then_speech(const char *s, size_t n) {
    if (!n || s[0] != '[') return 0;
    const char *close = memchr(s, ']', n);
    if (!close) return 0;
    for (const char *c = close + 1; c < s + n; c++)
        if (!isspace((unsigned char)*c) && *c != '|') return 1;
    return 0;
}

// A play: every line that starts with a speaker starts a turn; the lines after it are the
// speech, to the next speaker, stage direction, heading or the end of the paragraph. A
// speech that a stage direction interrupts goes on after it: a paragraph that starts with
// neither a speaker nor a direction, after paragraphs of directions only, continues the
// turn before them (the Moby layout's "[Embracing]" inside a speech).
static void script_turns(Dialogue *d) {
    const Book *b = d->book;
    Turn *speaking = NULL;  // the latest speech, which a continuation joins
    for (size_t p = 0; p < b->n; p++) {
        const Paragraph *para = &b->paras[p];
        if (para->heading || para->scene) speaking = NULL;
        if (para->heading) continue;
        Turn *t = NULL;
        int depth = 0;
        for (const char *s = para->text, *end = para->text + para->len; s < end;) {
            const char *nl = memchr(s, '\n', (size_t)(end - s));
            size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s), rest = 0;
            size_t name = depth ? 0 : book_script_speaker(b, s, n, &rest);
            if (name) {
                t = speaking = new_turn(d, p);
                t->speaker = cast_person(&d->cast, s, name);
                t->method = ATTR_SCRIPT;
                t->confidence = CONF_SCRIPT;
                add_speech_line(t, s + rest, n - rest, &depth);
            } else if (!depth && direction_then_speech(s, n)) {
                if (!t && s == para->text && speaking) t = speaking;
                if (t) {
                    add_speech_line(t, s, n, &depth);
                    t->last_para = p;
                }
            } else if (depth || is_stage_direction(s, n)) {
                t = NULL;
                int k = 0;  // a bracket opened here may close lines later
                for (size_t i = 0; i < n; i++) k += (s[i] == '[') - (s[i] == ']');
                depth = depth + k > 0 ? depth + k : 0;
            } else {
                if (!t && s == para->text && speaking) t = speaking;
                if (t) {
                    add_speech_line(t, s, n, &depth);
                    t->last_para = p;
                }
            }
            s += n + 1;
        }
    }
    // A speaker line with nothing after it is no turn.
    size_t keep = 0;
    for (size_t k = 0; k < d->n; k++) {
        if (d->turns[k].len) d->turns[keep++] = d->turns[k];
        else free(d->turns[k].text);
    }
    d->n = keep;
}

// ---------------------------------------------------------------------------------------
// Resolution: pronouns, then alternation

#define ACTION_WORDS 15  // narrative between two turns that still lets the second answer the first


int dialogue_adjacent(const Dialogue *d, size_t k) {
    if (k == 0) return 0;
    size_t p = d->turns[k].first_para, prev = d->turns[k - 1].last_para;
    if (p == prev) return 1;
    if (d->book->paras[p].scene || d->trailing[prev] > ACTION_WORDS || d->leading[p] > ACTION_WORDS) return 0;
    // next to each other, or a paragraph between that only announces the next speaker
    return p == prev + 1 || (p == prev + 2 && d->announces[prev + 1] && !d->book->paras[prev + 1].scene);
}


// Who turn k's "he"/"she" can be, whatever the rule: not the narrator, not someone it
// addresses, not the speaker of the turn just before in the exchange nor the one a tag names
// in the turn right after, and the right gender.
static int can_be(const Dialogue *d, size_t k, int entity, Gender g) {
    const Turn *t = &d->turns[k];
    if (entity == cast_narrator(&d->cast)) return 0;
    if (is_addressed(t, entity) || names_in_third_person(t, entity) || !compatible(d, entity, g)) return 0;
    // (not across a paragraph that announces the speaker: "Lady Catherine talked on till ...
    // she added,--" may go on with the one who just spoke)
    if (dialogue_adjacent(d, k) && d->turns[k].first_para <= d->turns[k - 1].last_para + 1 &&
        known(&d->turns[k - 1]) && d->turns[k - 1].speaker == entity)
        return 0;
    // nor the one whose own tag names them in the turn right after ("I often think," said she.
    // / "This is the consequence," said Elizabeth.: she is not Elizabeth)
    if (k + 1 < d->n && dialogue_adjacent(d, k + 1) && d->turns[k + 1].first_para == d->turns[k].last_para + 1 &&
        d->turns[k + 1].method == ATTR_TAG && d->turns[k + 1].speaker == entity)
        return 0;
    // "...," he cried, grasping Sherlock Holmes by the shoulder: not Holmes.
    if (t->tag.kind == SUBJ_PRONOUN && d->prose[t->tag_para]) {
        const Mentions *m = &d->mentions[t->tag_para];
        size_t end = sentence_end(d->prose[t->tag_para], t->tag.at, d->prose_len[t->tag_para]);
        for (size_t i = 0; i < m->n; i++)
            if (m->m[i].entity == entity && m->m[i].at > t->tag.at && m->m[i].at < end) return 0;
    }
    return 1;
}

// The first of the mentions m that is at most NEAR_BYTES before byte `at` of its paragraph
// (they are in text order): the part of a long paragraph that can still be about a tag.
#define NEAR_BYTES 3000
static size_t near_mentions(const Mentions *m, size_t at) {
    size_t from = at > NEAR_BYTES ? at - NEAR_BYTES : 0, lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->m[mid].at < from) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

// The turns that make turn k's conversation, for telling who takes part in it: the 12 turns
// before it (a talk goes on after an interruption) and those after it in its exchange, at
// most 8; the caller keeps those of its scene.
static void conversation(const Dialogue *d, size_t k, size_t *from, size_t *to) {
    *from = k > 12 ? k - 12 : 0;
    *to = k;
    while (*to + 1 < d->n && *to - k < 8 && dialogue_adjacent(d, *to + 1)) (*to)++;
}

static int same_scene(const Dialogue *d, size_t j, size_t k) {
    size_t a = j < k ? d->turns[j].last_para : d->turns[k].last_para;
    size_t b = j < k ? d->turns[k].first_para : d->turns[j].first_para;
    for (size_t p = a + 1; p <= b; p++)
        if (d->book->paras[p].scene) return 0;
    return 1;
}

// The one person who can be turn k's "he" or "she" (can_be) among those who speak, known,
// in the turns from..to of its scene, when someone of the other sex speaks there too.
// -1 when there is not exactly one, or nobody of the other sex.
static int gender_speaker(const Dialogue *d, size_t k, Gender g, size_t from, size_t to) {
    int found = -1, other_sex = 0;
    for (size_t j = from; j <= to; j++) {
        const Turn *u = &d->turns[j];
        if (j == k || !known(u) || !same_scene(d, j, k)) continue;
        Gender sex = d->cast.entities[u->speaker].gender;
        other_sex |= sex != GENDER_UNKNOWN && sex != g;
        if (sex != g || !can_be(d, k, u->speaker, g)) continue;
        if (found >= 0 && found != u->speaker) return -1;
        found = u->speaker;
    }
    return other_sex ? found : -1;
}

// In a conversation between a man and a woman, "she" is the woman, whoever the narrative
// named last: the one speaker of the pronoun's sex in turn k's exchange (at most 8 turns
// either way). -1 if none. (Not farther: a talk resumed after an interruption would be
// found, but so would the mother who has just come in.)
static int exchange_speaker(const Dialogue *d, size_t k, Gender g) {
    if (g == GENDER_UNKNOWN) return -1;
    size_t from = k, to = k;
    while (from > 0 && k - from < 8 && dialogue_adjacent(d, from)) from--;
    while (to + 1 < d->n && to - k < 8 && dialogue_adjacent(d, to + 1)) to++;
    int found = gender_speaker(d, k, g, from, to);
    return found >= 0 ? found : -1;
}

// Rules b to e of resolve_pronoun. Returns 1 when a rule decided, with *who and *conf set.
static int pronoun_rules(Dialogue *d, size_t k, size_t near, int *who, float *conf) {
    Turn *t = &d->turns[k];
    Gender g = t->tag.gender;
    size_t p = t->tag_para;
    const Mentions *m = &d->mentions[p];
    // b. the last person who is the subject of a sentence in the narrative paragraph just
    // before ("A man entered ..."; not "reading Jane's letter": "she" there is whoever the
    // narrative follows)
    if (t->first_para > 0 && !d->book->paras[t->first_para].scene && is_narrative_paragraph(d, t->first_para - 1)) {
        const Mentions *prev = &d->mentions[t->first_para - 1];
        int last = -1, others = 0;
        for (size_t i = prev->n; i-- > 0;) {
            if (!can_be(d, k, prev->m[i].entity, g) || !prev->m[i].initial) continue;
            if (last < 0) last = prev->m[i].entity;
            else others |= prev->m[i].entity != last;
        }
        if (last >= 0 && !others) return *who = last, *conf = 0.85f, 1;
    }
    // c. the only person named earlier in the paragraph, as someone who does something (the
    // subject of a sentence, or someone new: "hauling after him a companion")
    int only = -1, several = 0;
    for (size_t i = near; i < m->n && m->m[i].at < t->tag.at; i++) {
        if (!can_be(d, k, m->m[i].entity, g) || !(m->m[i].initial || m->m[i].someone)) continue;
        if (only >= 0 && only != m->m[i].entity) several = 1;
        only = m->m[i].entity;
    }
    if (only >= 0 && !several) return *who = only, *conf = 0.85f, 1;
    // d. the speaker two turns back in an exchange (right after each other: a paragraph that
    // announces the speaker may say that the one before goes on)
    if (k >= 2 && dialogue_adjacent(d, k) && dialogue_adjacent(d, k - 1) &&
        d->turns[k].first_para <= d->turns[k - 1].last_para + 1 && known(&d->turns[k - 2]) &&
        known(&d->turns[k - 1]) && d->turns[k - 2].speaker != d->turns[k - 1].speaker &&
        can_be(d, k, d->turns[k - 2].speaker, g))
        return *who = d->turns[k - 2].speaker, *conf = 0.85f, 1;
    // e. the people of the last paragraphs: named in the narrative, or speaking
    size_t from = t->first_para > WINDOW_PARAGRAPHS ? t->first_para - WINDOW_PARAGRAPHS : 0;
    for (size_t q = t->first_para + 1; q > from; q--)
        if (d->book->paras[q - 1].scene) {  // the scene starts there
            from = q - 1;
            break;
        }
    int latest = -1, candidates = 0, seen[8];
    for (size_t q = from; q <= p; q++) {
        for (size_t i = q == p ? near : 0; i < d->mentions[q].n; i++) {
            const Mention *mm = &d->mentions[q].m[i];
            if (q == p && mm->at >= t->tag.at) break;
            if (!can_be(d, k, mm->entity, g)) continue;
            latest = mm->entity;
            int dup = 0;
            for (int c = 0; c < candidates && c < 8; c++) dup |= seen[c] == mm->entity;
            if (!dup && candidates < 8) seen[candidates++] = mm->entity;
        }
    }
    for (size_t j = k; j-- > 0 && j + WINDOW_TURNS > k && d->turns[j].last_para >= from;) {
        int e = d->turns[j].speaker;
        if (e < 0 || !known(&d->turns[j]) || !can_be(d, k, e, g)) continue;
        if (latest < 0) latest = e;
        int dup = 0;
        for (int c = 0; c < candidates && c < 8; c++) dup |= seen[c] == e;
        if (!dup && candidates < 8) seen[candidates++] = e;
    }
    if (latest < 0) return 0;
    *who = candidates == 1 ? seen[0] : latest;
    *conf = candidates == 1 ? 0.80f : CONF_WEAK;
    return 1;
}

static void resolve_pronoun(Dialogue *d, size_t k) {
    Turn *t = &d->turns[k];
    Gender g = t->tag.gender;
    size_t p = t->tag_para;
    const Mentions *m = &d->mentions[p];
    size_t near = near_mentions(m, t->tag.at);
    // a. the last subject earlier in the paragraph
    int subject = -1;
    for (size_t i = near; i < m->n && m->m[i].at < t->tag.at; i++)
        if (m->m[i].initial && can_be(d, k, m->m[i].entity, g)) subject = m->m[i].entity;
    if (subject >= 0) {
        t->speaker = subject, t->confidence = 0.90f;
        return;
    }
    // the exchange: the one person of the pronoun's gender who speaks near it, tagged
    int speaker = exchange_speaker(d, k, g);
    if (speaker >= 0) {
        t->speaker = speaker, t->confidence = 0.85f;
        return;
    }
    int who;
    float conf;
    if (pronoun_rules(d, k, near, &who, &conf)) t->speaker = who, t->confidence = conf;
}

// What the nearest anchors on one side of turn k say: the speaker (pos) of the nearest
// anchor an even number of turns away, and who the turn is not (neg) from the nearest
// anchor an odd number away. When those two anchors are the same person, the exchange did
// not alternate between them, and only the nearer one is believed.
typedef struct {
    int pos, neg;     // entities, -1 for none
    size_t dist;      // turns from k to the pos anchor
    size_t neg_dist;  // turns from k to the neg anchor
} SideView;

static SideView side_view(const int *anchor, size_t k, size_t lo, size_t hi, int dir) {
    SideView v = {-1, -1, 0, 0};
    size_t even = 0, odd = 0;
    for (size_t step = 1; step <= WINDOW_TURNS; step++) {
        if (dir < 0 ? step > k - lo : k + step > hi) break;
        size_t j = dir < 0 ? k - step : k + step;
        if (anchor[j] < 0) continue;
        if (step % 2 == 0 && v.pos < 0) v.pos = anchor[j], even = step;
        if (step % 2 == 1 && v.neg < 0) v.neg = anchor[j], odd = step;
        if (v.pos >= 0 && v.neg >= 0) break;
    }
    if (v.pos >= 0 && v.pos == v.neg) {
        if (even < odd) v.neg = -1;
        else v.pos = -1;
    }
    v.dist = even;
    v.neg_dist = odd;
    return v;
}

// Evidence against the count (an anchor that says otherwise) that is far away, at least 8
// turns and three times as far as the nearest anchor that agrees, is not believed: over a
// long untagged exchange one miscounted turn (a letter read out, someone new) would
// otherwise silence all of it. Returns the side view without it.
static SideView without_far_dissent(SideView v, int who, size_t agree) {
    size_t far = agree * 3 > 8 ? agree * 3 : 8;
    if (v.pos >= 0 && v.pos != who && v.dist >= far) v.pos = -1;
    if (v.neg == who && v.neg_dist >= far) v.neg = -1;
    return v;
}

// The one person besides x who speaks (confidently) in turn k's conversation, or -1 when
// that is not exactly one person: an exchange between two people.
static int the_other_one(const Dialogue *d, const int *anchor, size_t lo, size_t k, int x) {
    size_t from, to;
    conversation(d, k, &from, &to);
    // the anchors first; when x is the only one of them, also the turns of k's exchange
    // (from lo) before it, with what this count found for them (turns are counted in order)
    // where it was sure ("Another time, Lizzy." made the next turn Elizabeth's)
    for (int counted = 0; counted < 2; counted++) {
        int people[2] = {-1, -1}, n = 0, has_x = 0;
        for (size_t j = from; j <= to; j++) {
            int who = anchor[j];
            if (who < 0 && counted && j >= lo && j < k && d->turns[j].confidence >= 0.80f) who = d->turns[j].speaker;
            if (who < 0 || !same_scene(d, j, k)) continue;
            if (who == x) {
                has_x = 1;
                continue;
            }
            if (n == 1 && people[0] == who) continue;
            if (n == 1) return -1;
            people[n++] = who;
        }
        if (n || !has_x) return has_x && n == 1 ? people[0] : -1;
    }
    return -1;
}

// The one whom turn t's own speech tag says it is spoken to: "said she to Charlotte", the
// person named right after "to" in the tag's sentence. -1 if none.
static int spoken_to(const Dialogue *d, const Turn *t) {
    if (!t->tag.speech || t->tag.thought || (t->tag.kind != SUBJ_ENTITY && t->tag.kind != SUBJ_PRONOUN) ||
        !d->prose[t->tag_para])
        return -1;
    const char *s = d->prose[t->tag_para];
    const Mentions *m = &d->mentions[t->tag_para];
    size_t end = sentence_end(s, t->tag.at, d->prose_len[t->tag_para]);
    for (size_t i = near_mentions(m, t->tag.at); i < m->n && m->m[i].at < end; i++) {
        size_t at = m->m[i].at;
        if (at <= t->tag.at) continue;
        return at >= 3 && !memcmp(s + at - 3, "to ", 3) && at - t->tag.at < 40 ? m->m[i].entity : -1;
    }
    return -1;
}

// The one person whom turn k-1, right before turn k in an exchange and attributed with 0.8
// or more (by now: turns are counted in order), speaks to, when turn k is untagged: the one
// who answers. That is the one its tag says it is said to ("said she to Charlotte"), or the
// one it calls by name ("Another time, Lizzy."), where only a short turn (one paragraph, at
// most 60 words) counts: a long speech or a letter read aloud names people in passing. -1
// if none.
static int addressee_of(const Dialogue *d, size_t k) {
    if (k == 0) return -1;
    const Turn *t = &d->turns[k], *before = &d->turns[k - 1];
    if (before->speaker < 0 || before->confidence < 0.80f || t->tag.kind != SUBJ_NONE || !dialogue_adjacent(d, k))
        return -1;
    int y = spoken_to(d, before);
    if (y < 0) {
        if (before->n_addressed != 1 || before->first_para != before->last_para) return -1;
        int words = 0;
        for (size_t i = 0; i < before->len; i++) words += before->text[i] == ' ';
        if (words >= 60) return -1;
        y = before->addressed[0];
    }
    return y != before->speaker && y != cast_narrator(&d->cast) && !names_in_third_person(t, y) ? y : -1;
}

// Turn k continues the exchange of turn k-1 for counting turns: it answers it, and k-1 is
// not a story of three paragraphs or more, after which nobody can count on the order.
static int in_exchange(const Dialogue *d, size_t k) {
    return dialogue_adjacent(d, k) && d->turns[k - 1].last_para < d->turns[k - 1].first_para + 2;
}

// How many people speak among the anchors of turns lo..hi, an exchange: 0, 1, 2, or 3 for
// more than two or a turn of a group ("said they"). *sexed: whether the sex of each is known
// (when it is not, a "she asked" may have been given to the wrong one of them, and the two
// may be three).
static int exchange_speakers(const Dialogue *d, const int *anchor, size_t lo, size_t hi, int *sexed) {
    int a = -1, b = -1;
    *sexed = 1;
    for (size_t j = lo; j <= hi; j++) {
        if (d->turns[j].group) return 3;
        if (anchor[j] < 0 || anchor[j] == a || anchor[j] == b) continue;
        *sexed &= d->cast.entities[anchor[j]].gender != GENDER_UNKNOWN;
        if (a < 0) a = anchor[j];
        else if (b < 0) b = anchor[j];
        else return 3;
    }
    return (a >= 0) + (b >= 0);
}

static void alternation(Dialogue *d) {
    int *anchor = xmalloc((d->n ? d->n : 1) * sizeof(int));
    // anchors: what the text says (tags, beats, pronouns), not what an earlier count guessed
    for (size_t k = 0; k < d->n; k++)
        anchor[k] = known(&d->turns[k]) && d->turns[k].method != ATTR_ALTERNATION ? d->turns[k].speaker : -1;
    int *scene = xmalloc((d->book->n ? d->book->n : 1) * sizeof(int));
    for (size_t p = 0, scenes = 0; p < d->book->n; p++) scene[p] = (int)(scenes += d->book->paras[p].scene);
    // the last turn of the exchange that each turn is in
    size_t *last = xmalloc((d->n ? d->n : 1) * sizeof(size_t));
    for (size_t k = d->n; k-- > 0;) last[k] = k + 1 < d->n && in_exchange(d, k + 1) ? last[k + 1] : k;
    size_t lo = 0;
    for (size_t k = 0; k < d->n; k++) {
        if (!in_exchange(d, k)) lo = k;
        Turn *t = &d->turns[k];
        if (anchor[k] >= 0 || t->group || t->nested) continue;
        size_t hi = last[k];
        SideView left = side_view(anchor, k, lo, hi, -1), right = side_view(anchor, k, lo, hi, +1);
        int who, addressee = addressee_of(d, k);
        float conf;
        if (addressee >= 0 && (left.pos < 0 || left.pos == addressee || (right.pos >= 0 && right.pos != left.pos))) {
            // the one called by name answers, unless the count of turns says who else does
            who = addressee;
            conf = left.pos == addressee ? 0.90f : 0.80f;
        } else if (left.pos >= 0 || right.pos >= 0) {
            who = left.pos >= 0 ? left.pos : right.pos;
            size_t agree = left.pos == who && (right.pos != who || left.dist <= right.dist) ? left.dist : right.dist;
            left = without_far_dissent(left, who, agree);
            right = without_far_dissent(right, who, agree);
            if ((right.pos >= 0 && right.pos != who) || left.neg == who || right.neg == who)
                continue;  // the two sides disagree: a third person, or a broken exchange
            size_t dist = left.pos >= 0 && (right.pos < 0 || left.dist <= right.dist) ? left.dist : right.dist;
            const SideView *other = dist == left.dist && left.pos >= 0 ? &right : &left;
            int sexed, speakers = exchange_speakers(d, anchor, lo, hi, &sexed);
            // Confirmed from the other side, the count of turns between two anchors has the
            // right parity: one missed speaker change would break it, so distance matters little.
            if (other->pos == who || (other->neg >= 0 && other->neg != who)) {
                conf = 0.92f - 0.005f * (float)(dist - 2);
                if (conf < 0.80f) conf = 0.80f;
            } else if (other == &right) {  // counted forward, from an exchange under way
                // (slowly where no third person speaks in the exchange: a change of speaker
                // is what printed dialogue marks best, a newcomer is what it tags)
                conf = 0.90f - (speakers <= 2 ? 0.01f : 0.03f) * (float)(dist - 2);
            } else {  // counted backward: the anchor may be someone who has just joined in,
                // unless the exchange is known to be between two people who both speak in it
                conf = 0.85f - (speakers == 2 && sexed ? 0.01f : 0.04f) * (float)(dist - 2);
            }
            if (conf < CONF_WEAK) conf = CONF_WEAK;
        } else {
            // Only "not x" is known (the turn next to it, or the person it addresses). The
            // turn before, x's, called someone by name: that one answers. Otherwise, in an
            // exchange between x and one other person, the other.
            int x = left.neg >= 0    ? left.neg
                    : right.neg >= 0 ? right.neg
                    : t->n_addressed ? t->addressed[0]
                                     : -1;
            if (x < 0 || (left.neg >= 0 && right.neg >= 0 && left.neg != right.neg)) continue;
            who = the_other_one(d, anchor, lo, k, x);
            if (who < 0 || who == left.neg || who == right.neg) continue;
            conf = 0.80f;
        }
        if (is_addressed(t, who) || names_in_third_person(t, who)) continue;
        if (t->tag.kind == SUBJ_PRONOUN &&
            (!compatible(d, who, t->tag.gender) || who == cast_narrator(&d->cast)))
            continue;
        if (conf <= t->confidence) continue;
        t->speaker = who;
        t->confidence = conf;
        t->method = t->tag.kind == SUBJ_PRONOUN ? ATTR_PRONOUN : ATTR_ALTERNATION;
    }
    free(last);
    free(scene);
    free(anchor);
}

// Pronouns, then the count of turns; then once more the pronouns left unresolved or weak,
// now that the count has found their neighbours, and the count again, afresh, from the
// anchors they make.
static void resolve(Dialogue *d) {
    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < d->n; k++) {
            Turn *t = &d->turns[k];
            if (t->tag.kind != SUBJ_PRONOUN || t->nested || (t->speaker >= 0 && t->confidence > CONF_WEAK)) continue;
            int before = t->speaker;
            float conf = t->confidence;
            AttrMethod method = t->method;
            t->speaker = -1;
            resolve_pronoun(d, k);
            if (t->speaker >= 0 && t->confidence > conf) t->method = ATTR_PRONOUN;
            else t->speaker = before, t->confidence = conf, t->method = method;
        }
        if (pass == 1)
            for (size_t k = 0; k < d->n; k++)
                if (d->turns[k].method == ATTR_ALTERNATION) {
                    d->turns[k].speaker = -1;
                    d->turns[k].confidence = 0;
                    d->turns[k].method = ATTR_NONE;
                }
        alternation(d);
    }
}

void dialogue_build(Dialogue *d, const Book *b, const DialogueOptions *o) {
    memset(d, 0, sizeof *d);
    d->book = b;
    cast_init(&d->cast, o->character, o->aliases, o->n_aliases, o->narrator);
    d->prose = xcalloc(b->n, sizeof(char *));
    d->prose_len = xcalloc(b->n, sizeof(size_t));
    d->scans = xcalloc(b->n, sizeof(QuoteScan));
    d->mentions = xcalloc(b->n, sizeof(Mentions));
    d->leading = xcalloc(b->n, sizeof(int));
    d->trailing = xcalloc(b->n, sizeof(int));
    d->announces = xcalloc(b->n ? b->n : 1, 1);
    for (size_t p = 0; p < b->n; p++)
        if (!b->paras[p].heading)
            d->prose[p] = book_unwrap(b->paras[p].text, b->paras[p].len, &d->prose_len[p]);
    if (b->format == BOOK_SCRIPT) {
        script_turns(d);
        return;
    }
    d->family = o->quotes ? o->quotes : quotes_detect(d->prose, d->prose_len, b->n);
    for (size_t p = 0; p < b->n; p++) {
        if (!d->prose[p]) continue;
        quotes_scan(d->family, d->prose[p], d->prose_len[p], &d->scans[p]);
        const QuoteScan *q = &d->scans[p];
        for (size_t i = q->n ? q->quotes[q->n - 1].end : d->prose_len[p]; i < d->prose_len[p]; i++)
            d->trailing[p] += d->prose[p][i] == ' ';
        for (size_t i = 0; q->n && i < q->quotes[0].start; i++) d->leading[p] += d->prose[p][i] == ' ';
    }
    prose_turns(d);
    // A speech that ends where its tag began ends with the tag's comma: it was a full stop.
    for (size_t k = 0; k < d->n; k++)
        if (d->turns[k].len && d->turns[k].text[d->turns[k].len - 1] == ',')
            d->turns[k].text[d->turns[k].len - 1] = '.';
    resolve(d);
}

int dialogue_load(Dialogue *d, Book *b, const char *path, const BookParseOptions *po, const DialogueOptions *o,
                  char *err) {
    memset(d, 0, sizeof *d);
    if (book_load(b, path, po, err)) return -1;
    dialogue_build(d, b, o);
    return 0;
}

void dialogue_describe(const Dialogue *d, FILE *f) {
    book_describe(d->book, f);
    if (d->book->format == BOOK_PROSE) fprintf(f, "book: quotation marks %s\n", quotes_family_name(d->family));
    fprintf(f, "book: character's pronoun: %s; %zu other people found\n",
            gender_name(d->cast.entities[ENTITY_CHARACTER].gender), d->cast.n - 2);
    if (d->cast.learned.len) fprintf(f, "book: also names of the character, by apposition: %s\n", d->cast.learned.data);
}

void dialogue_free(Dialogue *d) {
    for (size_t k = 0; k < d->n; k++) free(d->turns[k].text);
    free(d->turns);
    for (size_t p = 0; d->book && p < d->book->n; p++) {
        free(d->prose[p]);
        quotes_free(&d->scans[p]);
        free(d->mentions[p].m);
    }
    free(d->prose);
    free(d->prose_len);
    free(d->scans);
    free(d->mentions);
    free(d->leading);
    free(d->trailing);
    free(d->announces);
    cast_free(&d->cast);
    memset(d, 0, sizeof *d);
}
