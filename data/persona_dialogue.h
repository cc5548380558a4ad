/*
 * persona_dialogue.h: who says what in a book.
 *
 * A book becomes a list of turns: one speaker's words, in order. Each turn records the
 * person it is attributed to, how, and a confidence; nothing is attributed silently.
 *
 * Prose. Quotations are found as persona_quotes.h says. A paragraph's quotations are one
 * turn (a new speaker starts a new paragraph, the convention of printed dialogue), unless its
 * tags name two different speakers ("Yes," said Holmes. "No," said I.), when each quotation
 * goes with its own tag and untagged ones with the tag before them. A paragraph that starts
 * with an opening mark right after one left open continues the same turn. The fragments of
 * a turn are joined as they read: "Wedlock suits you," he remarked. "I think..." gives
 * "Wedlock suits you. I think..." (the comma that the tag needed becomes a full stop before
 * a capital, and at the end of the speech); paragraphs are joined with a blank line.
 *
 * Attribution, in this order:
 *   script      a play's speaker name                                       0.99
 *   tag         a speech tag that names the speaker (persona_speakers.h):
 *               after or before the quotation, or inside it ("...," said
 *               Holmes, "...")                                              0.95
 *               or in the narrative paragraph before it, which announces
 *               it: ending with a colon or a dash after a speech verb ("and
 *               he said:", "She directly replied,--"), or with narrative
 *               after its own last quotation                                0.90
 *   beat        no speech tag, but the paragraph's narrative has a person
 *               as the subject of a sentence ("Holmes laughed. "...")      0.85
 *               or the one who acts in the short last sentence (at most 15
 *               words, no negation) of the narrative paragraph just before
 *               ("Lady Catherine seemed resigned.")                         0.75
 *   pronoun     "he"/"she" in a tag, resolved from the scene, first rule that applies:
 *               a. the last person who is the subject of a sentence earlier in the
 *                  same paragraph ("The Count shrugged. "...," said he.")   0.90
 *               x. in an exchange where people of both sexes speak (8 turns
 *                  either way), the one speaker of the pronoun's sex          0.85
 *               b. the only person who acts (a sentence's subject, or
 *                  someone new: "A man entered") in the narrative paragraph
 *                  just before                                              0.85
 *               c. the only person who acts earlier in the paragraph        0.85
 *               d. in an exchange, right after each other, the speaker two
 *                  turns back (the one before is someone else)              0.85
 *               e. the only person named or speaking in the last 6
 *                  paragraphs                                               0.80
 *                  several: the latest, with                                0.50
 *               Never the narrator, the speaker of the turn just before (when the two
 *               are next to each other), the one a tag names in the turn right after, a
 *               person the quotation addresses by name or names in the third person ("Mr.
 *               Darcy is all politeness"; not inside the speech's own quotations: "she
 *               said, 'Ah! Mrs. Bennet, ...'"), a person the tag's own sentence names after
 *               the pronoun ("he cried, grasping Holmes"), or a person of the other gender. Several quotations of one paragraph, one tagged with a
 *               name and another with a pronoun, are that person's ("...," said Jones.
 *               "...!" he added.).
 *   alternation untagged turns of an exchange (turns in consecutive paragraphs) take the
 *               speaker of the nearest confidently attributed turn (an anchor, 0.75 or
 *               more, not itself counted) an even number of turns away, on either side; a
 *               turn an odd number away is someone else, and two sides that disagree leave
 *               the turn unattributed, unless the disagreeing anchor is far (8 turns or
 *               more and three times the agreeing one: one miscounted turn must not
 *               silence a long exchange). Counting from an anchor before the turn: 0.90 at
 *               2 turns, 0.03 less per turn further (0.01 where no third person speaks
 *               in the exchange: a change of speaker is what printed dialogue marks
 *               best, a newcomer is what it tags); from an anchor after it (the anchor may
 *               be someone who has just joined in): 0.85, 0.04 less per turn (0.01 where
 *               exactly two people speak in the exchange and the sex of both is known: their
 *               "he" and "she" tags would show a third one who joined in untagged). When the other
 *               side agrees, a missed change of speaker would have broken the count, so
 *               distance matters little: 0.92, 0.005 less per turn, at least 0.80. A short
 *               turn (one paragraph, under 60 words) that calls one person by name is
 *               answered by that person ("Another time, Lizzy." -> Elizabeth), and so is a
 *               turn whose tag says to whom it is said ("said she to Charlotte"), unless the
 *               count says otherwise: 0.90 when the count agrees, else 0.80. With no anchor
 *               an even number away, a turn that is "not x" (next to x, or addressing x) in
 *               a conversation where only x and one other person speak (12 turns before it
 *               and its exchange after) is that other person: 0.80; when x is the only
 *               anchor there, the turns of its exchange already counted (0.80 or more) say
 *               who the other is (Jane, then "Lizzy"'s answer, then "not Jane": Elizabeth).
 *               An exchange ends at a
 *               story (a speech of three paragraphs or more) and where a paragraph has more
 *               than 15 words of narrative after its last quotation or before its first; a
 *               paragraph that only announces the next speaker does not end it.
 *   second pass weak and unresolved pronouns are resolved again with the alternation's
 *               speakers known, and the alternation is counted afresh from the new anchors.
 * A turn whose quotation addresses its attributed speaker by name ("..., Mr. Holmes?")
 * drops to 0.30. A quotation after a narrative paragraph ending with a colon but no speech
 * verb ("I took the paper and read as follows:", "wrote", "read"), or tagged "it said", is a
 * text being read, not a turn; "we"/"they" tags make a turn with no single speaker. A
 * thought ("thought she", "wondered Elizabeth", "said she to herself") is no turn (the
 * report counts them).
 *
 * Stories. When someone tells a story inside a speech, its own dialogue is quoted inside the
 * speech, and a reader of the page cannot count turns through it: "I" is the teller, "he"
 * someone in the story. In a book quoted with double marks, a paragraph is part of such a
 * story when its narrative holds single quotation marks, a quotation ends with a single mark
 * ("Ten to two.'"), or a damaged mark is followed by a tag (`,"said he`). Its turn, and the
 * turns right after it until one is tagged with a name, are left unattributed.
 *
 * Scripts. A line that starts with a speaker ("HAMLET.", "HAMLET:", "First Witch<TAB>", or a
 * name alone on its line: persona_book.h) starts a turn; the lines after it, to the end of
 * the paragraph or the next speaker, are the speech (line breaks kept: verse). Bracketed
 * stage directions are removed from speech, and so are the braces of a line said together
 * ("MACBETH |" over "| What's the matter."); lines that are stage directions ("[Exit.]",
 * "Enter Ghost.") are narrative. A speech that a direction interrupts goes on after it: a
 * paragraph that starts with neither a speaker nor a direction continues the last speech of
 * its scene, and so does one that opens with a direction and goes on with words ("[Aside]
 * This supernatural soliciting"). Speakers are told apart by the whole name: LADY MACBETH
 * is not MACBETH.
 */
#ifndef PERSONA_DIALOGUE_H
#define PERSONA_DIALOGUE_H

#include <stddef.h>
#include <stdio.h>

#include "persona_book.h"
#include "persona_quotes.h"
#include "persona_speakers.h"

typedef enum {
    ATTR_NONE = 0,  // no speaker found (ambiguous)
    ATTR_TAG,
    ATTR_BEAT,
    ATTR_PRONOUN,
    ATTR_ALTERNATION,
    ATTR_SCRIPT,
    ATTR_COUNT
} AttrMethod;

typedef struct {
    size_t first_para, last_para;  // the paragraphs it spans (a speech can run over several)
    int line;                      // book line of its first paragraph
    char *text;                    // the spoken words
    size_t len;
    int speaker;                   // entity, or -1 when unknown
    AttrMethod method;
    float confidence;
    int group;                     // a "we" or "they" tag: nobody in particular
    int nested;                    // a story's dialogue inside someone's speech: not attributed
    // what the text said about the speaker, for the resolution steps
    Subject tag;
    size_t tag_para;
    int addressed[4];  // entities the quotation addresses by name
    int n_addressed;
    int named[4];      // entities it names otherwise, in the third person: not its speaker
    int n_named;
} Turn;

typedef struct {
    const char *character;
    const char *const *aliases;
    size_t n_aliases;
    int narrator;        // the character is the book's "I"
    QuoteFamily quotes;  // QUOTES_AUTO to detect
} DialogueOptions;

typedef struct {
    const Book *book;
    Cast cast;
    QuoteFamily family;
    char **prose;        // per paragraph: the one-line text (NULL for headings)
    size_t *prose_len;
    QuoteScan *scans;    // per paragraph: its quotations (prose)
    Mentions *mentions;  // per paragraph: people named in its narrative
    int *leading;        // per paragraph: words of narrative before its first quotation
    int *trailing;       // per paragraph: words of narrative after its last quotation
    char *announces;     // per paragraph: a narrative paragraph whose speech tag belongs to
                         // the next paragraph's quotation ("and then replied,--")
    Turn *turns;
    size_t n, cap;
    size_t quotations;   // quotations found
    size_t documents;    // quotations that are texts being read
    size_t thoughts;     // quotations that are thoughts ("thought she"), never turns
} Dialogue;

void dialogue_build(Dialogue *d, const Book *b, const DialogueOptions *o);
// Loads and cleans the book at path into b, then finds its dialogue. Returns 0, or -1 with
// the book's error in err (nothing to free then).
int dialogue_load(Dialogue *d, Book *b, const char *path, const BookParseOptions *po, const DialogueOptions *o,
                  char *err);
// Prints, as "book: ..." lines, what the cleaning found (book_describe), the quotation marks,
// the character's pronoun, the other people found and the names learned for the character.
void dialogue_describe(const Dialogue *d, FILE *f);
void dialogue_free(Dialogue *d);
const char *attr_method_name(AttrMethod m);
// 1 when turn k answers turn k-1: in the same paragraph, or in the next one, in the same
// scene, with no more than a short tag or action after turn k-1's last quotation and
// before turn k's first (after a long passage of narrative, the speaker may well speak
// again).
int dialogue_adjacent(const Dialogue *d, size_t k);

#endif
