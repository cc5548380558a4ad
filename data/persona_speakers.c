// persona_speakers.c: the cast and the speech-tag grammar (see persona_speakers.h).
#include "persona_speakers.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"

// ---------------------------------------------------------------------------------------
// Words

typedef struct {
    size_t start, end;  // the word's bytes; an abbreviation's period is part of the word
    char punct;         // the punctuation between this word and the next, 0 for spaces only
    int cap;            // starts with A-Z
} Word;

typedef struct {
    Word *w;
    size_t n, cap;
} Words;

// The typographic punctuation U+2010..U+203F that books use: dashes, curly quotes, the
// ellipsis. Returns its ASCII stand-in, or 0 when s[i] does not start one.
static char typographic(const char *s, size_t i, size_t end) {
    if (i + 2 >= end || (unsigned char)s[i] != 0xE2 || (unsigned char)s[i + 1] != 0x80) return 0;
    unsigned char c = (unsigned char)s[i + 2];
    if (c >= 0x90 && c <= 0x95) return '-';
    if (c >= 0x98 && c <= 0x9F) return '"';
    if (c == 0xA6) return '.';
    return c >= 0x90 && c <= 0xBF ? '?' : 0;
}

static int word_byte(const char *s, size_t i, size_t end) {
    unsigned char c = (unsigned char)s[i];
    return isalnum(c) || (c >= 0x80 && !typographic(s, i, end));
}

static const char *const ABBREVIATIONS[] = {
    "Mr", "Mrs", "Ms", "Dr", "St", "Messrs", "Mme", "Mlle", "Jr", "Sr", "Rev", "Prof",
    "Col", "Capt", "Gen", "Lt", "Sgt", "Hon", "No", "Mt", NULL};

static int is_abbreviation(const char *s, size_t n) {
    if (n == 1 && isupper((unsigned char)s[0]) && s[0] != 'I') return 1;  // initials: J. H. Watson
    for (int i = 0; ABBREVIATIONS[i]; i++)
        if (strlen(ABBREVIATIONS[i]) == n && !memcmp(ABBREVIATIONS[i], s, n)) return 1;
    return 0;
}

// Moves i past the punctuation at s[i] (a typographic mark is three bytes).
static size_t skip_punct(const char *s, size_t i, size_t end) {
    return i + (typographic(s, i, end) ? 3 : 1);
}

static void words_split(const char *s, size_t start, size_t end, Words *out, size_t max) {
    out->n = 0;
    size_t i = start;
    while (i < end && !word_byte(s, i, end)) i = skip_punct(s, i, end);
    while (i < end && out->n < max) {
        size_t w = i;
        while (i < end) {
            if (word_byte(s, i, end)) i++;
            else if ((s[i] == '\'' || s[i] == '-') && i > w && i + 1 < end &&
                     isalpha((unsigned char)s[i + 1]))
                i++;
            else if (typographic(s, i, end) == '"' && (unsigned char)s[i + 2] == 0x99 && i > w && i + 3 < end &&
                     isalpha((unsigned char)s[i + 3]))
                i += 3;  // ’ inside a word: an apostrophe
            else break;
        }
        if (i < end && s[i] == '.' && is_abbreviation(s + w, i - w)) i++;
        Word word = {w, i, 0, isupper((unsigned char)s[w]) != 0};
        while (i < end && (s[i] == ' ' || s[i] == '\n')) i++;
        if (i < end && !word_byte(s, i, end)) {
            char t = typographic(s, i, end);
            word.punct = t ? t : s[i];
            if (word.punct == '\'' || word.punct == '`') word.punct = '"';
        }
        while (i < end && !word_byte(s, i, end)) i = skip_punct(s, i, end);
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 64;
            out->w = xrealloc(out->w, out->cap * sizeof(Word));
        }
        out->w[out->n++] = word;
    }
}

// The word lower-cased into buf (cut to fit); a trailing period and a possessive 's (or ’s)
// go.
static const char *lower_word(const char *s, const Word *w, char *buf, size_t cap) {
    size_t n = w->end - w->start, k = 0;
    const char *e = s + w->start;
    if (n && e[n - 1] == '.') n--;
    if (n > 2 && e[n - 2] == '\'' && e[n - 1] == 's') n -= 2;
    else if (n > 4 && !memcmp(e + n - 4, "\xE2\x80\x99s", 4)) n -= 4;
    for (; k < n && k + 1 < cap; k++) buf[k] = (char)tolower((unsigned char)s[w->start + k]);
    buf[k] = '\0';
    return buf;
}

static int in_list(const char *word, const char *const *list) {
    for (int i = 0; list[i]; i++)
        if (!strcmp(word, list[i])) return 1;
    return 0;
}

static const char *const SPEECH_VERBS[] = {
    "said", "says", "say", "asked", "asks", "answered", "answers", "replied", "replies",
    "cried", "cries", "remarked", "observed", "exclaimed", "continued", "returned", "added",
    "shouted", "whispered", "murmured", "muttered", "repeated", "responded", "suggested",
    "began", "interrupted", "explained", "groaned", "sighed", "laughed", "chuckled", "called",
    "roared", "growled", "snapped", "thundered", "declared", "insisted", "protested", "urged",
    "pleaded", "stammered", "gasped", "sobbed", "ejaculated", "resumed", "inquired",
    "enquired", "demanded", "retorted", "rejoined", "echoed", "pursued", "ventured",
    "persisted", "conceded", "admitted", "agreed", "grumbled", "whined", "screamed", "yelled",
    "panted", "faltered", "concluded", "commented", "mused", "breathed", "hissed", "wailed",
    "moaned", "sneered", "shrieked", "bellowed", "barked", "mumbled", "announced", "warned",
    "assented", "objected", "corrected", "proceeded", "remonstrated", "stormed", "sang",
    "croaked", "drawled", "lisped", "quavered", "screeched", "snarled", "spluttered", "addressed",
    "accosted", NULL};

// Two-word verbs: "went on", "broke in", "put in".
static const char *const VERB_PAIRS[] = {"went", "on", "broke", "in", "put", "in", "cut", "in", NULL};

static const char *const DETERMINERS[] = {"the", "my", "our", "his", "her", "their", "your",
                                          "a", "an", "this", NULL};

static const char *const PRONOUNS[] = {"he", "she", "i", "we", "they", "it", "him", "her", "me",
                                       "us", "them", "you", "one", NULL};

// Words that end a phrase ("the man in the ulster", "the lady who ...") or never start a name.
static const char *const STOP_WORDS[] = {
    "in", "of", "with", "who", "whom", "which", "that", "as", "to", "at", "and", "but", "or",
    "when", "while", "from", "for", "on", "upon", "into", "after", "before", "by", "was",
    "were", "had", "has", "is", "did", "could", "would", "then", "still", "again", "now",
    "not", "very", "so", NULL};

// Capitalised words that open sentences and are not names.
static const char *const CONNECTORS[] = {
    "then", "and", "but", "so", "now", "when", "while", "as", "at", "here", "there",
    "presently", "suddenly", "still", "yet", "again", "once", "in", "on", "with",
    "after", "before", "for", "if", "though", "although", "yes", "no", "oh", "ah", "well",
    "the", "a", "an", "this", "that", "his", "her", "my", "our", "their", "your", "it",
    "what", "why", "how", "who", "where", "instantly", "finally", "slowly", "quickly", NULL};

static const char *const MALE_TITLES[] = {
    "mr", "sir", "lord", "monsieur", "herr", "signor", "master", "king", "prince", "duke",
    "count", "baron", "father", "brother", "uncle", "mister",
    // ranks that were men's in the books this reads
    "colonel", "col", "captain", "capt", "major", "general", "gen", "lieutenant", "lt", "sergeant",
    "sgt", "inspector", "constable", NULL};
static const char *const FEMALE_TITLES[] = {
    "mrs", "ms", "miss", "lady", "madam", "madame", "mme", "mlle", "mademoiselle", "frau",
    "signora", "mistress", "queen", "princess", "duchess", "countess", "baroness", "mother",
    "sister", "aunt", NULL};
static const char *const OTHER_TITLES[] = {"dr", "doctor", "professor", "prof", "rev", "reverend", "hon", NULL};

static const char *const MALE_NOUNS[] = {
    "man", "gentleman", "fellow", "boy", "lad", "king", "prince", "husband", "father", "son",
    "brother", "uncle", "lord", "duke", "count", "baron", "master", "monk", "priest",
    "butler", "footman", "groom", "landlord", "nobleman", NULL};
static const char *const FEMALE_NOUNS[] = {
    "woman", "lady", "girl", "wife", "mother", "daughter", "sister", "aunt", "queen",
    "princess", "duchess", "countess", "maid", "widow", "mistress", "landlady", "governess",
    NULL};

// Nouns for people that are neither: a sentence whose subject is "the stranger" is about
// someone, even if no tag ever names them.
static const char *const PERSON_NOUNS[] = {
    "person", "visitor", "client", "stranger", "servant", "officer", "inspector", "doctor",
    "clerk", "child", "youth", "prisoner", "driver", "cabman", "constable", "detective",
    "waiter", "porter", "companion", "friend", "guest", "host", "colonel", "captain",
    "banker", "manager", "agent", "sergeant", "coachman", NULL};

static int is_adverb(const char *w) {
    size_t n = strlen(w);
    return n > 4 && !strcmp(w + n - 2, "ly") && strcmp(w, "family") && strcmp(w, "early");
}

static Gender title_gender(const char *w) {
    if (in_list(w, MALE_TITLES)) return GENDER_MALE;
    if (in_list(w, FEMALE_TITLES)) return GENDER_FEMALE;
    return GENDER_UNKNOWN;
}

static int is_title(const char *w) { return title_gender(w) != GENDER_UNKNOWN || in_list(w, OTHER_TITLES); }

// The class of a title that tells people of one surname apart (see the header): 'm', 'w',
// 'g', or 't' for the titles that do not say which of them (Dr., Colonel, King).
static char title_class(const char *w) {
    static const char *const men[] = {"mr", "mister", "sir", "lord", "monsieur", "herr", "signor", NULL};
    static const char *const wives[] = {"mrs", "madam", "madame", "mme", "lady", "frau", "signora", "mistress", NULL};
    static const char *const girls[] = {"miss", "ms", "mlle", "mademoiselle", NULL};
    return in_list(w, men) ? 'm' : in_list(w, wives) ? 'w' : in_list(w, girls) ? 'g' : 't';
}

// ---------------------------------------------------------------------------------------
// The cast

static int add_entity(Cast *c, const char *name, const char *key, Gender g) {
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->entities = xrealloc(c->entities, c->cap * sizeof(Entity));
    }
    Entity *e = &c->entities[c->n];
    memset(e, 0, sizeof *e);
    e->name = xstrdup(name);
    e->title_gender = g;
    if (key) strmap_put(&c->keys, key, strlen(key), (int32_t)c->n);
    return (int)c->n++;
}

// The key of a name written in s (titles and the possessive dropped, lower-cased, one space
// between words), and the gender its titles imply.
static void name_key(const char *s, char *key, size_t cap, Gender *g) {
    Words w = {0};
    words_split(s, 0, strlen(s), &w, 16);
    size_t k = 0, i = 0;
    char buf[64];
    for (; i < w.n && is_title(lower_word(s, &w.w[i], buf, sizeof buf)); i++)
        if (g && title_gender(buf)) *g = title_gender(buf);
    for (; i < w.n; i++) {
        lower_word(s, &w.w[i], buf, sizeof buf);
        size_t n = strlen(buf);
        if (k + n + 2 > cap) break;
        if (k) key[k++] = ' ';
        memcpy(key + k, buf, n);
        k += n;
    }
    key[k] = '\0';
    free(w.w);
}

// A play's speaker label as a key: "\x01", then the label lower-cased with its white space
// collapsed ("LADY  MACBETH" -> "\x01lady macbeth"). Labels are matched whole, so that LADY
// MACBETH is not MACBETH; the mark keeps them apart from the keys of prose names.
static void label_key(const char *s, size_t n, char *key, size_t cap) {
    size_t k = 0;
    key[k++] = '\x01';
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        if (isspace((unsigned char)s[i])) {
            if (key[k - 1] != ' ' && key[k - 1] != '\x01') key[k++] = ' ';
        } else {
            key[k++] = (char)tolower((unsigned char)s[i]);
        }
    }
    while (k > 1 && key[k - 1] == ' ') k--;
    key[k] = '\0';
}

void cast_init(Cast *c, const char *character, const char *const *aliases, size_t n_aliases,
               int narrator_is_character) {
    memset(c, 0, sizeof *c);
    strmap_init(&c->keys, 256);
    c->narrator_is_character = narrator_is_character;
    char key[256];
    Gender g = GENDER_UNKNOWN;
    name_key(character, key, sizeof key, &g);
    add_entity(c, character, key, g);
    label_key(character, strlen(character), key, sizeof key);
    strmap_put(&c->keys, key, strlen(key), ENTITY_CHARACTER);
    for (size_t i = 0; i < n_aliases; i++) {
        name_key(aliases[i], key, sizeof key, &g);
        if (key[0]) strmap_put(&c->keys, key, strlen(key), ENTITY_CHARACTER);
        label_key(aliases[i], strlen(aliases[i]), key, sizeof key);
        strmap_put(&c->keys, key, strlen(key), ENTITY_CHARACTER);
    }
    c->entities[0].title_gender = g;
    add_entity(c, "I (the narrator)", NULL, GENDER_UNKNOWN);
}

void cast_free(Cast *c) {
    for (size_t i = 0; i < c->n; i++) free(c->entities[i].name);
    free(c->entities);
    bytebuf_free(&c->learned);
    strmap_free(&c->keys);
    memset(c, 0, sizeof *c);
}

int cast_narrator(const Cast *c) { return c->narrator_is_character ? ENTITY_CHARACTER : ENTITY_NARRATOR; }

void cast_decide_genders(Cast *c) {
    for (size_t i = 0; i < c->n; i++) {
        Entity *e = &c->entities[i];
        int m = e->votes[GENDER_MALE], f = e->votes[GENDER_FEMALE];
        if (e->title_gender) e->gender = e->title_gender;
        else if (m >= 2 && m >= 2 * f) e->gender = GENDER_MALE;
        else if (f >= 2 && f >= 2 * m) e->gender = GENDER_FEMALE;
        else e->gender = GENDER_UNKNOWN;
    }
}

const char *gender_name(Gender g) {
    return g == GENDER_MALE ? "he" : g == GENDER_FEMALE ? "she" : "unknown";
}

// The words [a, b) of s joined into a string (for keys and display names).
static void join_words(const char *s, const Words *w, size_t a, size_t b, int lower, char *out, size_t cap) {
    size_t k = 0;
    char buf[64];
    for (size_t i = a; i < b; i++) {
        const char *t = buf;
        size_t n;
        if (lower) {
            lower_word(s, &w->w[i], buf, sizeof buf);
            n = strlen(buf);
        } else {
            t = s + w->w[i].start;
            n = w->w[i].end - w->w[i].start;
        }
        if (k + n + 2 > cap) break;
        if (k) out[k++] = ' ';
        memcpy(out + k, t, n);
        k += n;
    }
    out[k] = '\0';
}

// The entity of key (with its title class cls, 0 for none) if it may be the person named so:
// one stored under key and the class, or under the key alone when the classes agree.
static int32_t lookup(const Cast *c, const char *key, char cls) {
    char classed[272];
    if (cls) {
        snprintf(classed, sizeof classed, "%s#%c", key, cls);
        int32_t e = strmap_get(&c->keys, classed, strlen(classed));
        if (e >= 0) return e;
    }
    int32_t e = strmap_get(&c->keys, key, strlen(key));
    if (e < 0) return -1;
    // someone with another title is someone else ("Miss Roylott" is not "Dr. Roylott"); a
    // surname without a title is a man's (Mr. Bingley, not Miss Bingley), unless it is one of
    // the character's names as given
    char other = c->entities[e].title_class;
    if (!other) return !cls || e == ENTITY_CHARACTER || (cls != 'w' && cls != 'g') ? e : -1;
    return !cls || other == cls ? e : -1;
}

// Stores key#cls for entity e, and key alone for a man's or an untitled name (a surname
// alone is not a Miss's or a Mrs.'s), where no one has them yet.
static void store(Cast *c, const char *key, char cls, int e) {
    char classed[272];
    if (cls != 'w' && cls != 'g') strmap_put(&c->keys, key, strlen(key), e);
    if (cls) {
        snprintf(classed, sizeof classed, "%s#%c", key, cls);
        strmap_put(&c->keys, classed, strlen(classed), e);
    }
}

// A name written as the words [a, b): titles dropped, then the whole name looked up, then
// (for a name of several words) its last word, the surname other people's names are also
// stored under, for someone known by title and surname only or of the same title. With
// create, an unknown name becomes a new entity. Returns the entity or -1.
static int resolve_name(Cast *c, const char *s, const Words *w, size_t a, size_t b, int create) {
    char buf[64], key[256], last[64];
    Gender g = GENDER_UNKNOWN;
    char cls = 0;
    size_t first = a;
    for (; first < b && is_title(lower_word(s, &w->w[first], buf, sizeof buf)); first++) {
        if (title_gender(buf)) g = title_gender(buf);
        if (!cls || cls == 't') cls = title_class(buf);
    }
    if (first == b) return -1;
    join_words(s, w, first, b, 1, key, sizeof key);
    int32_t e = lookup(c, key, cls);
    if (e >= 0) {
        // "Bingley", then "Mr. Bingley": now known to be a man, not "Miss Bingley"
        if (!c->entities[e].title_class && cls && e != ENTITY_CHARACTER) c->entities[e].title_class = cls;
        return e;
    }
    int several = b - first > 1;
    if (several) {
        lower_word(s, &w->w[b - 1], last, sizeof last);
        if (strmap_get(&c->keys, last, strlen(last)) != ENTITY_CHARACTER) {
            e = lookup(c, last, cls);
            // "Jane Bennet" is not "Mr. Bennet": a first name meets a title only when both
            // have the same one
            if (e >= 0 && (!c->entities[e].title_class || c->entities[e].title_class == cls)) return e;
        }
    }
    if (!create) return -1;
    char name[256];
    join_words(s, w, a, b, 0, name, sizeof name);
    e = add_entity(c, name, NULL, g);
    c->entities[e].title_class = cls;
    store(c, key, cls, e);
    if (several && strmap_get(&c->keys, last, strlen(last)) != ENTITY_CHARACTER) store(c, last, cls, e);
    return e;
}

int cast_person(Cast *c, const char *name, size_t len) {
    char key[256], shown[128], unused[256];
    label_key(name, len, key, sizeof key);
    int32_t e = strmap_get(&c->keys, key, strlen(key));
    if (e >= 0) return e;
    size_t n = len < sizeof shown - 1 ? len : sizeof shown - 1;
    memcpy(shown, name, n);
    shown[n] = '\0';
    Gender g = GENDER_UNKNOWN;
    name_key(shown, unused, sizeof unused, &g);  // the gender of its title (LADY, KING)
    return add_entity(c, shown, key, g);
}

// ---------------------------------------------------------------------------------------
// Subjects

// Verbs of thinking: a quotation tagged with one ("thought she") is not said aloud.
static const char *const THOUGHT_VERBS[] = {"thought", "thinks", "wondered", "reflected", NULL};
static const char *const SELVES[] = {"herself", "himself", "myself", "themselves", "ourselves", "yourself", NULL};

static int verb_len(const char *s, const Words *w, size_t i) {
    if (i >= w->n) return 0;
    char a[64], b[64];
    lower_word(s, &w->w[i], a, sizeof a);
    if (in_list(a, SPEECH_VERBS) || in_list(a, THOUGHT_VERBS)) return 1;
    if (i + 1 < w->n && w->w[i].punct == 0) {
        lower_word(s, &w->w[i + 1], b, sizeof b);
        for (int k = 0; VERB_PAIRS[k]; k += 2)
            if (!strcmp(a, VERB_PAIRS[k]) && !strcmp(b, VERB_PAIRS[k + 1])) return 2;
    }
    return 0;
}

// A name: up to four capitalised words with no punctuation between them (titles count,
// sentence connectors in front do not). Returns the number of words, the entity in *e
// (-1 when unknown and not created).
static size_t parse_name(Cast *c, const char *s, const Words *w, size_t i, int create, int *e) {
    char buf[64];
    size_t j = i;
    while (j < w->n && j - i < 4 && w->w[j].cap && (j == i || w->w[j - 1].punct == 0)) {
        lower_word(s, &w->w[j], buf, sizeof buf);
        if (j > i && (in_list(buf, CONNECTORS) || !strcmp(buf, "i"))) break;
        j++;
    }
    if (j == i) return 0;
    size_t a = i;
    while (a < j && in_list(lower_word(s, &w->w[a], buf, sizeof buf), CONNECTORS)) a++;
    *e = -1;
    // A name not known as a whole may end in a known one ("Then Holmes"); a title stays with
    // its name ("Mrs. Bennet" is not "Bennet").
    for (size_t k = a; k < j && *e < 0; k++)
        if (k == a || !is_title(lower_word(s, &w->w[k - 1], buf, sizeof buf))) *e = resolve_name(c, s, w, k, j, 0);
    if (*e < 0 && create && a < j) *e = resolve_name(c, s, w, a, j, 1);
    return a < j ? j - i : 0;
}

static int is_person_noun(const char *w) {
    return in_list(w, MALE_NOUNS) || in_list(w, FEMALE_NOUNS) || in_list(w, PERSON_NOUNS);
}

// A phrase: a determiner and up to three words ("the King", "our strange visitor"), or the
// name in apposition after it ("my friend Sherlock Holmes"). The longest known phrase is
// taken; with create (CREATE_ANY) an unknown one becomes an entity as far as it goes (a tag
// ends it with punctuation or the verb), with CREATE_PERSON only up to a noun for people
// ("The stout gentleman half rose" -> the stout gentleman).
enum { CREATE_NONE = 0, CREATE_ANY = 1, CREATE_PERSON = 2 };

static size_t parse_phrase(Cast *c, const char *s, const Words *w, size_t i, int create, int *e) {
    char buf[64], key[256], name[256];
    size_t j = i + 1;
    *e = -1;
    while (j < w->n && j - i <= 3 && w->w[j - 1].punct == 0) {
        lower_word(s, &w->w[j], buf, sizeof buf);
        if (in_list(buf, STOP_WORDS) || is_adverb(buf) || in_list(buf, SPEECH_VERBS) ||
            in_list(buf, DETERMINERS) || in_list(buf, PRONOUNS))
            break;
        if (w->w[j].cap && j > i + 1) {
            int person;
            size_t k = parse_name(c, s, w, j, create == CREATE_ANY, &person);
            if (k && person >= 0) {
                *e = person;
                return j + k - i;
            }
            break;
        }
        j++;
    }
    for (size_t end = j; end > i + 1; end--) {
        join_words(s, w, i, end, 1, key, sizeof key);
        if ((*e = strmap_get(&c->keys, key, strlen(key))) >= 0) return end - i;
    }
    if (j == i + 1) return 0;
    if (create == CREATE_NONE) return j - i;
    if (create == CREATE_PERSON)
        while (j > i + 1 && !is_person_noun(lower_word(s, &w->w[j - 1], buf, sizeof buf))) j--;
    if (j == i + 1) return 0;
    join_words(s, w, i, j, 1, key, sizeof key);
    lower_word(s, &w->w[j - 1], buf, sizeof buf);
    Gender g = in_list(buf, MALE_NOUNS)     ? GENDER_MALE
               : in_list(buf, FEMALE_NOUNS) ? GENDER_FEMALE
                                            : GENDER_UNKNOWN;
    join_words(s, w, i, j, 0, name, sizeof name);
    name[0] = (char)tolower((unsigned char)name[0]);
    *e = add_entity(c, name, key, g);
    return j - i;
}

// The subject at word i. Returns the number of words it takes (0 if none is there); the
// subject is SUBJ_NONE when it is a name or phrase nobody knows and create is 0.
static size_t parse_subject(Cast *c, const char *s, const Words *w, size_t i, int create, Subject *out) {
    memset(out, 0, sizeof *out);
    if (i >= w->n) return 0;
    char buf[64];
    const Word *word = &w->w[i];
    lower_word(s, word, buf, sizeof buf);
    out->at = word->start;
    if (!strcmp(buf, "he") || !strcmp(buf, "she")) {
        out->kind = SUBJ_PRONOUN;
        out->gender = buf[0] == 'h' ? GENDER_MALE : GENDER_FEMALE;
        return 1;
    }
    if (!strcmp(buf, "i") && s[word->start] == 'I') {
        out->kind = SUBJ_ENTITY;
        out->entity = cast_narrator(c);
        return 1;
    }
    if (!strcmp(buf, "we") || !strcmp(buf, "they")) return out->kind = SUBJ_GROUP, 1;
    if (!strcmp(buf, "it")) return out->kind = SUBJ_THING, 1;
    int e = -1;
    size_t k = in_list(buf, DETERMINERS) ? parse_phrase(c, s, w, i, create, &e)
               : word->cap                ? parse_name(c, s, w, i, create, &e)
                                          : 0;
    if (k && e >= 0) {
        out->kind = SUBJ_ENTITY;
        out->entity = e;
    }
    return k;
}

static int person(const Subject *s) { return s->kind == SUBJ_ENTITY || s->kind == SUBJ_PRONOUN; }

// The subject of the sentence that starts at word i: its first words, after a connector
// ("Then Holmes ...") or after an opening clause ("Then, with a gesture of desperation,
// he tore ..."). Only people already known count.
static Subject sentence_subject(Cast *c, const char *s, const Words *w, size_t i) {
    Subject sub;
    char buf[64];
    if (i >= w->n) return (Subject){0};
    parse_subject(c, s, w, i, 0, &sub);
    if (person(&sub)) return sub;
    if (in_list(lower_word(s, &w->w[i], buf, sizeof buf), CONNECTORS) && w->w[i].punct == 0) {
        parse_subject(c, s, w, i + 1, 0, &sub);
        if (person(&sub)) return sub;
    }
    for (size_t k = i; k < w->n && k < i + 12; k++) {
        if (w->w[k].punct == '.' || w->w[k].punct == '!' || w->w[k].punct == '?') break;
        if (w->w[k].punct == ',') {
            parse_subject(c, s, w, k + 1, 0, &sub);
            if (person(&sub)) return sub;
        }
    }
    return (Subject){0};
}

// Whether the tag whose verb is word v tells a thought: a verb of thinking, or "said" (or
// "cried", "exclaimed") with "to herself" or "within himself" among the four words after it
// ("said she to herself"; "he chuckled to himself" is still heard).
static int is_thought(const char *s, const Words *w, size_t v) {
    static const char *const saying[] = {"said", "says", "cried", "exclaimed", NULL};
    char buf[64];
    if (in_list(lower_word(s, &w->w[v], buf, sizeof buf), THOUGHT_VERBS)) return 1;
    if (!in_list(buf, saying)) return 0;
    for (size_t j = v + 1; j + 1 < w->n && j <= v + 4; j++) {
        lower_word(s, &w->w[j], buf, sizeof buf);
        if (strcmp(buf, "to") && strcmp(buf, "within")) continue;
        if (in_list(lower_word(s, &w->w[j + 1], buf, sizeof buf), SELVES)) return 1;
    }
    return 0;
}

// The subject nearest before word v in the sentence that starts at word s0, walking back: he,
// she or I, unless a subordinate clause's ("when she ceased speaking"), or a known person
// named there, unless the object of a preposition ("gave it to Mr. Darcy"). SUBJ_NONE if none.
static Subject nearest_subject(Cast *c, const char *s, const Words *w, size_t s0, size_t v) {
    static const char *const subordinators[] = {"when", "while", "whilst", "as", "if", "after", "before", "till",
                                                "until", "since", "because", "though", "although", "that", "which",
                                                "whom", "whose", "where", NULL};
    static const char *const prepositions[] = {"to", "at", "with", "of", "from", "by", "for", "on", "upon", "towards",
                                               "toward", "into", "than", "like", "about", "between", "near", "beside",
                                               "behind", "over", "round", "around", "against", "among", "through",
                                               "after", "before", NULL};
    char buf[64];
    Subject sub = {0};
    for (size_t j = v; j-- > s0;) {
        lower_word(s, &w->w[j], buf, sizeof buf);
        // "the voice of her companion, who ... said": the subject is the one "who" stands for
        if (!strcmp(buf, "who") && j > s0 && w->w[j - 1].punct == ',') {
            // the antecedent: a name (its capitalised words) or a phrase (back to its determiner)
            size_t start = j - 1;
            if (w->w[start].cap)
                while (start > s0 && w->w[start - 1].cap && w->w[start - 1].punct == 0) start--;
            else
                while (start > s0 && j - start < 4 && w->w[start - 1].punct == 0 &&
                       !in_list(lower_word(s, &w->w[start], buf, sizeof buf), DETERMINERS))
                    start--;
            parse_subject(c, s, w, start, CREATE_PERSON, &sub);
            return person(&sub) ? sub : (Subject){0};
        }
        int pronoun = !strcmp(buf, "he") || !strcmp(buf, "she") || (!strcmp(buf, "i") && s[w->w[j].start] == 'I');
        if (!pronoun && !w->w[j].cap) continue;
        size_t start = j;  // a name's first word: back over its capitalised words and titles
        while (!pronoun && start > s0 && w->w[start - 1].cap && w->w[start - 1].punct == 0 &&
               !in_list(lower_word(s, &w->w[start - 1], buf, sizeof buf), CONNECTORS))
            start--;
        const char *const *blockers = pronoun ? subordinators : prepositions;
        // ("impossible for Darcy to leave her, or to refrain from saying": "for" and "to"
        // around a name make it the subject)
        int infinitive = !pronoun && j + 1 < w->n && !strcmp(lower_word(s, &w->w[j + 1], buf, sizeof buf), "to") &&
                         start > s0 && !strcmp(lower_word(s, &w->w[start - 1], buf, sizeof buf), "for");
        if (start > s0 && !infinitive && in_list(lower_word(s, &w->w[start - 1], buf, sizeof buf), blockers)) {
            j = start;
            continue;
        }
        if (parse_subject(c, s, w, start, 0, &sub) && person(&sub)) return sub;
        sub = (Subject){0};
        j = start;
    }
    return sub;
}

// SUBJECT [adverb] VERB starting at word i: the subject (created if new) or SUBJ_NONE.
static Subject subject_then_verb(Cast *c, const char *s, const Words *w, size_t i, size_t *verb_at) {
    Subject sub;
    size_t k = parse_subject(c, s, w, i, 0, &sub);
    if (!k) return (Subject){0};
    size_t j = i + k;
    char buf[64];
    if (j < w->n && w->w[j - 1].punct == 0 && is_adverb(lower_word(s, &w->w[j], buf, sizeof buf))) j++;
    if (j < w->n && w->w[j - 1].punct == 0 && verb_len(s, w, j)) {
        // a phrase before the verb is someone when it ends with a noun for people ("the
        // stout gentleman said"), not "in a constrained manner said"
        parse_subject(c, s, w, i, CREATE_PERSON, &sub);
        *verb_at = j;
        return sub.kind == SUBJ_NONE ? (Subject){0} : sub;
    }
    return (Subject){0};
}

Subject tag_after(Cast *c, const char *text, size_t start, size_t end, int ends_sentence) {
    Words w = {0};
    words_split(text, start, end, &w, 12);
    Subject sub = {0};
    size_t v = 0;
    int k = verb_len(text, &w, 0);
    if (k && w.w[k - 1].punct == 0) {
        char buf[64];
        size_t at = (size_t)k;
        if (at < w.n && w.w[at].punct == 0 && is_adverb(lower_word(text, &w.w[at], buf, sizeof buf))) at++;
        parse_subject(c, text, &w, at, 1, &sub);
    }
    if (sub.kind != SUBJ_NONE) sub.thought = is_thought(text, &w, 0);
    if (sub.kind == SUBJ_NONE && (sub = subject_then_verb(c, text, &w, 0, &v)).kind != SUBJ_NONE)
        sub.thought = is_thought(text, &w, v);
    if (sub.kind != SUBJ_NONE) {
        sub.speech = 1;
    } else if (ends_sentence) {
        parse_subject(c, text, &w, 0, 0, &sub);
        if (!person(&sub)) sub = (Subject){0};
    }
    free(w.w);
    return sub;
}

Subject tag_before(Cast *c, const char *text, size_t start, size_t end) {
    // The last sentence is all that matters; a window of 600 bytes holds it in practice.
    if (end - start > 600) {
        start = end - 600;
        while (start < end && text[start] != ' ') start++;
    }
    Words w = {0};
    words_split(text, start, end, &w, 200);
    Subject sub = {0};
    char buf[64];
    if (w.n == 0) return free(w.w), sub;
    size_t s0 = 0;
    for (size_t k = w.n - 1; k-- > 0;)
        if (w.w[k].punct == '.' || w.w[k].punct == '!' || w.w[k].punct == '?') {
            s0 = k + 1;
            break;
        }
    size_t v = w.n;
    for (size_t k = w.n; k-- > s0;)
        if (verb_len(text, &w, k)) {
            v = k;
            break;
        }
    if (v < w.n) {
        if (w.w[v].punct == 0 && v + 1 < w.n) {  // said Holmes: (the subject ends the clause)
            size_t k = parse_subject(c, text, &w, v + 1, 0, &sub);
            if (k && (v + 1 + k == w.n || w.w[v + k].punct)) parse_subject(c, text, &w, v + 1, 1, &sub);
            else sub = (Subject){0};
        }
        for (size_t j = v; sub.kind == SUBJ_NONE && j-- > s0;) {                               // Holmes said,
            // the whole name: "Lady Catherine began", not "Catherine began"
            if (j > s0 && w.w[j - 1].cap && w.w[j - 1].punct == 0 &&
                !in_list(lower_word(text, &w.w[j - 1], buf, sizeof buf), CONNECTORS))
                continue;
            size_t at = w.n;
            sub = subject_then_verb(c, text, &w, j, &at);
            if (at != v) sub = (Subject){0};
        }
        // "... when she instantly drew back, and said"; "Darcy spoke, and in a constrained manner said"
        if (sub.kind == SUBJ_NONE) sub = nearest_subject(c, text, &w, s0, v);
        if (sub.kind == SUBJ_NONE) sub = sentence_subject(c, text, &w, s0);  // He turned and said,
        if (sub.kind == SUBJ_GROUP || sub.kind == SUBJ_THING || person(&sub)) sub.speech = 1;
        sub.thought = sub.speech && is_thought(text, &w, v);
        static const char *const going_on[] = {"continued", "added", "resumed", "pursued", "repeated", "went", NULL};
        sub.goes_on = sub.speech && in_list(lower_word(text, &w.w[v], buf, sizeof buf), going_on);
    } else {
        // a beat: the one doing the last thing before the quotation ("... and even Lydia was too
        // much fatigued to utter more than the occasional exclamation of")
        sub = nearest_subject(c, text, &w, s0, w.n);
        if (sub.kind == SUBJ_NONE) sub = sentence_subject(c, text, &w, s0);
    }
    free(w.w);
    return sub;
}

#define MAX_SENTENCE_WORDS 400  // no real sentence is longer

static int ends_sentence(char p) { return p == '.' || p == '!' || p == '?'; }

size_t sentence_end(const char *text, size_t from, size_t end) {
    Words w = {0};
    size_t at = end;
    // most sentences end within 40 words: look that far first
    for (size_t max = 40;; max = MAX_SENTENCE_WORDS) {
        words_split(text, from, end, &w, max);
        for (size_t i = 0; i < w.n && at == end; i++)
            if (ends_sentence(w.w[i].punct)) {
                at = w.w[i].end;
                while (at < end && text[at] != ' ') at++;
            }
        if (at < end || w.n < max || max == MAX_SENTENCE_WORDS) break;
    }
    // no end within the longest sentence: cut after its last word, so that the work of
    // whoever walks a text sentence by sentence stays linear in the text
    if (at == end && w.n == MAX_SENTENCE_WORDS) at = w.w[w.n - 1].end;
    free(w.w);
    return at;
}

// ---------------------------------------------------------------------------------------
// Mentions

static void push_mention(Mentions *out, int entity, size_t at, int initial, int someone) {
    if (out->n == out->cap) {
        out->cap = out->cap ? out->cap * 2 : 16;
        out->m = xrealloc(out->m, out->cap * sizeof(Mention));
    }
    out->m[out->n++] = (Mention){entity, at, initial, someone};
}


// Whether text[start] begins a sentence: the paragraph starts there, or what precedes it
// (spaces and closing quotation marks aside) ends one.
static int starts_sentence(const char *text, size_t start) {
    size_t k = start;
    while (k > 0 && (text[k - 1] == ' ' || text[k - 1] == '"' || text[k - 1] == '\'' ||
                     (unsigned char)text[k - 1] >= 0x80))
        k--;
    return k == 0 || ends_sentence(text[k - 1]);
}

void cast_learn_appositions(Cast *c, const char *text, size_t start, size_t end) {
    Words w = {0};
    words_split(text, start, end, &w, (size_t)-1);
    char buf[64], key[256];
    for (size_t i = 0; i + 2 < w.n; i++) {
        lower_word(text, &w.w[i], buf, sizeof buf);
        if (strcmp(buf, "my") && strcmp(buf, "our") && strcmp(buf, "the")) continue;
        size_t j = i + 1;
        while (j < w.n && j - i <= 2 && !w.w[j].cap && w.w[j - 1].punct == 0 &&
               !in_list(lower_word(text, &w.w[j], buf, sizeof buf), STOP_WORDS) && !in_list(buf, PRONOUNS))
            j++;
        if (j == i + 1 || j >= w.n || !w.w[j].cap || (w.w[j - 1].punct && w.w[j - 1].punct != ',') ||
            !is_person_noun(lower_word(text, &w.w[j - 1], buf, sizeof buf)))
            continue;
        int e;
        if (!parse_name(c, text, &w, j, 0, &e) || e != ENTITY_CHARACTER) continue;
        join_words(text, &w, i, j, 1, key, sizeof key);
        if (strmap_put(&c->keys, key, strlen(key), ENTITY_CHARACTER) == 0) {
            if (c->learned.len) bytebuf_append(&c->learned, ", ", 2);
            bytebuf_append(&c->learned, key, strlen(key));
        }
    }
    free(w.w);
}

void mentions_scan(Cast *c, const char *text, size_t start, size_t end, Mentions *out) {
    Words w = {0};
    words_split(text, start, end, &w, (size_t)-1);
    char buf[64];
    int last = -1;          // the latest mention, for the gender vote
    size_t last_word = 0;
    for (size_t i = 0; i < w.n;) {
        // (a clause after a semicolon has a subject of its own: "They walked on in silence;
        // Elizabeth was determined to say nothing")
        int initial = i == 0 ? starts_sentence(text, start) : ends_sentence(w.w[i - 1].punct) || w.w[i - 1].punct == ';';
        // and so has one that a conjunction of time opens ("He had hardly shut the door when
        // Holmes rose"; "whilst the luckless Kitty continued")
        if (i > 0 && !initial && w.w[i - 1].punct == 0) {
            static const char *const clause[] = {"when", "whilst", "while", "till", "until", "before", NULL};
            char prev[64];
            initial = in_list(lower_word(text, &w.w[i - 1], prev, sizeof prev), clause);
        }
        lower_word(text, &w.w[i], buf, sizeof buf);
        if ((!strcmp(buf, "he") || !strcmp(buf, "she")) && last >= 0 && i - last_word <= 12) {
            c->entities[last].votes[buf[0] == 'h' ? GENDER_MALE : GENDER_FEMALE]++;
            last = -1;
        }
        int e = -1, indefinite = 0;
        size_t k = 0;
        if (in_list(buf, DETERMINERS)) {
            // A phrase counts as the subject of its sentence, where it is somebody doing
            // something ("The stout gentleman half rose"); elsewhere when it is a name ("I
            // looked at my friend", "the bulky Jones", "the King of Bohemia rushed in") or
            // someone new ("hauling after him a companion"), whom a "he" that follows may mean.
            indefinite = !strcmp(buf, "a") || !strcmp(buf, "an");
            k = parse_phrase(c, text, &w, i, initial || indefinite ? CREATE_PERSON : CREATE_NONE, &e);
            int titled = e >= 0 && i + 1 < w.n && w.w[i + 1].cap;  // "the King", not "the other"
            if (!initial && !indefinite && e != ENTITY_CHARACTER && !titled) e = -1, k = 1;
        } else if (w.w[i].cap && strcmp(buf, "i")) {
            // a name with a title is a person even if no tag names them ("Mrs. Hudson came in")
            k = parse_name(c, text, &w, i, is_title(buf), &e);
        }
        if (k && e >= 0) {
            push_mention(out, e, w.w[i].start, initial, indefinite);
            last = e;
            last_word = i;
        }
        i += k ? k : 1;
    }
    free(w.w);
}

void quotation_names(Cast *c, const char *text, size_t start, size_t end, Mentions *addressed, Mentions *named) {
    static const char *const after_call[] = {"you", "your", "i", "we", "pray", "do", "let", "come", "tell",
                                             "what", "how", "why", "is", "are", "will", "shall", "can", NULL};
    Words w = {0};
    words_split(text, start, end, &w, (size_t)-1);
    char buf[64];
    for (size_t i = 0; i < w.n;) {
        int e = -1;
        size_t k = w.w[i].cap ? parse_name(c, text, &w, i, 0, &e) : 0;
        if (k && e >= 0) {
            char after = w.w[i + k - 1].punct;
            int after_ok = i + k == w.n || (after && strchr(",.!?;", after));
            int before_ok = i == 0 || w.w[i - 1].punct == ',' ||
                            !strcmp(lower_word(text, &w.w[i - 1], buf, sizeof buf), "dear");
            // "...dancing? Mr. Darcy, you must": a sentence that starts with the name and a
            // comma, then speaks to them
            int opens = i > 0 && ends_sentence(w.w[i - 1].punct) && after == ',' && i + k < w.n &&
                        in_list(lower_word(text, &w.w[i + k], buf, sizeof buf), after_call);
            // "My name is Sherlock Holmes", "I am Holmes": a speaker naming themselves
            char before[64] = "";
            if (i > 0) lower_word(text, &w.w[i - 1], before, sizeof before);
            int self = !strcmp(before, "am") || (!strcmp(before, "is") && i > 1 &&
                                                  !strcmp(lower_word(text, &w.w[i - 2], buf, sizeof buf), "name"));
            if ((after_ok && before_ok) || opens) push_mention(addressed, e, w.w[i].start, 0, 0);
            else if (!self) push_mention(named, e, w.w[i].start, 0, 0);
        }
        i += k ? k : 1;
    }
    free(w.w);
}
