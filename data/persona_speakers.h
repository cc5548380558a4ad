/*
 * persona_speakers.h: who the people of a book are, and what a speech tag says.
 *
 * The cast. Entity 0 is the character (--character NAME and every --alias), entity 1 the
 * narrator ("I"), unless the character narrates the book (--narrator), when "I" is entity 0.
 * Every other entity is created by the speech tags that name it: a name ("said Jabez
 * Wilson", "Mr. Wilson answered"), or a phrase ("said the King", "our visitor continued").
 * Names are matched without their titles (Mr., Mrs., Dr., Lord, ...): "Mr. Sherlock Holmes"
 * is the character when "Sherlock Holmes" is its name; other names are also keyed by their
 * last word, so "Jabez Wilson" and "Mr. Wilson" are one person, unless that word is one of
 * the character's own names ("Mycroft Holmes" is not "Holmes"). A title that says who
 * someone is tells people who share a surname apart: Mr. (Sir, Lord), Mrs. (Lady, Madam)
 * and Miss make three people of "Mr. Bennet", "Mrs. Bennet" and "Miss Bennet" ("Miss
 * Roylott" is not "Dr. Roylott" either), and a full name ("Jane Bennet") is not someone
 * known only by title and surname ("Mr. Bennet"); a name without a title is whoever first
 * had it. Phrases are keyed by their words,
 * lower-cased. A surname alone is the character only when it is given as an alias.
 *
 * Gender, for the pronoun of a tag ("he remarked"): from a title or a phrase's head noun
 * (Mrs., Lady, the King, the young woman), otherwise from the text: the "he" or "she" that
 * most often follows the entity's name within a dozen words of narrative.
 *
 * Speech tags. Text is read as words (an abbreviation's period, an apostrophe or a hyphen
 * inside a word belong to the word) with the punctuation that follows each. A tag is a
 * subject and a speech verb (said, asked, cried, remarked, ... ) with nothing but an adverb
 * between them:
 *   after a quotation   VERB SUBJECT ("said Holmes", "said he", "returned the King")
 *                       SUBJECT VERB ("Holmes said", "he remarked", "I answered")
 *                       and, after a quotation that ends a sentence, a beat:
 *                       SUBJECT ... ("He threw over a sheet of paper.")
 *   before a quotation  in the last sentence of the narrative: the same two orders, or a
 *                       speech verb with the sentence's subject ("Holmes turned to me and
 *                       said,"); without a speech verb, the sentence's subject is a beat.
 * A tag with a verb of thinking (thought, wondered, reflected), or "said" or "cried" with
 * "to herself" after it ("said she to herself"), tells a thought, not speech
 * (Subject.thought).
 * A subject is a pronoun (he, she, I; we and they are groups, it is a thing: a letter
 * being read), a name (capitalised words, titles allowed) or a phrase (a determiner and up
 * to three words: "the King", "my companion", "the young lady"); "my friend Sherlock
 * Holmes" is the name. Tags name new entities; beats and mentions only find known ones,
 * except a name with a title ("Mrs. Hudson came in") and a phrase for a person that is the
 * subject of its sentence ("The stout gentleman rose") or someone new ("a companion").
 */
#ifndef PERSONA_SPEAKERS_H
#define PERSONA_SPEAKERS_H

#include <stddef.h>

#include "../common/strmap.h"
#include "../common/util.h"

typedef enum { GENDER_UNKNOWN = 0, GENDER_MALE = 1, GENDER_FEMALE = 2 } Gender;

enum { ENTITY_CHARACTER = 0, ENTITY_NARRATOR = 1 };

typedef struct {
    char *name;           // as first written: "Holmes", "the King"
    Gender title_gender;  // from a title or a head noun; GENDER_UNKNOWN if none
    char title_class;     // 'm' Mr./Sir, 'w' Mrs./Lady, 'g' Miss, 't' another (Dr.), 0 none
    int votes[3];         // "he" / "she" after a mention, indexed by Gender
    Gender gender;        // decided by cast_decide_genders()
} Entity;

typedef struct {
    Entity *entities;
    size_t n, cap;
    StrMap keys;                // key -> entity index
    int narrator_is_character;  // "I" is the character
    ByteBuf learned;            // phrases learned as the character's names, for the report
} Cast;

void cast_init(Cast *c, const char *character, const char *const *aliases, size_t n_aliases,
               int narrator_is_character);
void cast_free(Cast *c);
// The entity for "I".
int cast_narrator(const Cast *c);
// The entity that a play's speaker label name[0..len) names ("LADY MACBETH"): labels are
// matched whole and case-insensitively, against the character's name and aliases as given
// and the labels seen before (so LADY MACBETH is not MACBETH); a new one is created.
int cast_person(Cast *c, const char *name, size_t len);
// Decides every entity's gender from its title or its votes (call after the votes).
void cast_decide_genders(Cast *c);
const char *gender_name(Gender g);

typedef enum {
    SUBJ_NONE = 0,
    SUBJ_ENTITY,   // a known person (a name, a phrase, or "I")
    SUBJ_PRONOUN,  // he or she: resolved later from the scene
    SUBJ_GROUP,    // we, they
    SUBJ_THING,    // it: a letter or a notice being read, not a person speaking
} SubjectKind;

typedef struct {
    SubjectKind kind;
    int entity;     // SUBJ_ENTITY
    Gender gender;  // SUBJ_PRONOUN
    int speech;     // 1: a speech tag; 0: an action beat
    int thought;    // the tag tells a thought, not speech ("thought she", "said he to himself")
    int goes_on;    // its verb says the speaker goes on: continued, added, resumed, went on
    size_t at;      // where the subject is in the text
} Subject;

// The tag that follows a quotation: text[start, end) is the narrative right after it.
// ends_sentence: the quotation ended with ".", "!" or "?" (a beat may then follow).
Subject tag_after(Cast *c, const char *text, size_t start, size_t end, int ends_sentence);
// The tag or beat that precedes a quotation: text[start, end) is the narrative before it.
Subject tag_before(Cast *c, const char *text, size_t start, size_t end);

// Learns the phrases that the narrative puts in apposition with the character's name
// ("my friend, Mr. Sherlock Holmes", "my friend Sherlock Holmes") as names of the character,
// so that "said my friend" is the character. Call on all the narrative before the tags.
void cast_learn_appositions(Cast *c, const char *text, size_t start, size_t end);

// The end of the sentence that starts at text[from]: just past the word whose punctuation
// ends it (".", "!", "?"; an abbreviation's period does not) and the closing marks after it;
// end when the text runs out first; after the 400th word when none ends it sooner.
size_t sentence_end(const char *text, size_t from, size_t end);

typedef struct {
    int entity;
    size_t at;
    int initial;  // the subject of its sentence, or of a clause after ";" or "when", "while"...
    int someone;  // an indefinite phrase ("a companion"): someone new, not yet named
} Mention;

typedef struct {
    Mention *m;
    size_t n, cap;
} Mentions;

// Appends the known people named in the narrative text[start, end) (names and phrases
// of the cast) and, as gender votes, the "he" or "she" that follows each within 12 words.
void mentions_scan(Cast *c, const char *text, size_t start, size_t end, Mentions *out);
// The people a quotation text[start, end) names: those it addresses by name go to addressed
// (a name after a comma, "dear" or the start and before punctuation: "My dear Holmes,",
// "all that, Mr. Holmes?"; or one that opens a sentence before a comma and "you", "pray",
// ...: "Mr. Darcy, you must"), the others to named ("Lizzy's head").
void quotation_names(Cast *c, const char *text, size_t start, size_t end, Mentions *addressed, Mentions *named);

#endif
