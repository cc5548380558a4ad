/*
 * test_persona.c: `persona`'s book cleaning, dialogue attribution, conversations and chunks,
 * on short texts written for the tests, one per quoting style and per way of attributing a
 * line (data/persona_dialogue.h lists them). Every expectation is what a reader of the text
 * would say: who speaks, and how the extractor should know it.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "../data/persona_book.h"
#include "../data/persona_dialogue.h"
#include "../data/persona_extract.h"
#include "../data/persona_prompts.h"
#include "test.h"

static Book book;
static Dialogue dlg;
static const char *const ALIASES[] = {"Holmes"};

// Cleans text as a book and finds its dialogue, the character being Sherlock Holmes.
static void build(const char *text, BookFormat format, QuoteFamily quotes) {
    char err[ERR_LEN];
    dialogue_free(&dlg);
    book_free(&book);
    if (book_parse(&book, "test.txt", text, strlen(text), &(BookParseOptions){.format = format}, err)) {
        printf("  book_parse failed: %s\n", err);
        test_failed_checks++;
        return;
    }
    DialogueOptions o = {"Sherlock Holmes", ALIASES, 1, 0, quotes};
    dialogue_build(&dlg, &book, &o);
}

// Cleans text as a book (with options o) and finds its dialogue for character.
static void build_for(const char *text, const BookParseOptions *bo, const char *character,
                      const char *const *aliases, size_t n_aliases) {
    char err[ERR_LEN];
    dialogue_free(&dlg);
    book_free(&book);
    if (book_parse(&book, "test.txt", text, strlen(text), bo, err)) {
        printf("  book_parse failed: %s\n", err);
        test_failed_checks++;
        return;
    }
    DialogueOptions o = {character, aliases, n_aliases, 0, QUOTES_AUTO};
    dialogue_build(&dlg, &book, &o);
}

// 1 when some turn starts with prefix.
static int has_turn(const char *prefix) {
    for (size_t k = 0; k < dlg.n; k++)
        if (!strncmp(dlg.turns[k].text, prefix, strlen(prefix))) return 1;
    return 0;
}

// The turn whose text starts with prefix, or NULL (reported).
static const Turn *turn(const char *prefix) {
    for (size_t k = 0; k < dlg.n; k++)
        if (!strncmp(dlg.turns[k].text, prefix, strlen(prefix))) return &dlg.turns[k];
    printf("  no turn starts with \"%s\"; turns:\n", prefix);
    for (size_t k = 0; k < dlg.n; k++) printf("    [%s]\n", dlg.turns[k].text);
    test_failed_checks++;
    return NULL;
}

// Who speaks the turn that starts with prefix: the entity's name, "(none)" if nobody.
static const char *speaker(const char *prefix) {
    const Turn *t = turn(prefix);
    if (!t) return "(no turn)";
    if (t->speaker < 0) return "(none)";
    return dlg.cast.entities[t->speaker].name;
}

static AttrMethod method(const char *prefix) {
    const Turn *t = turn(prefix);
    return t ? t->method : ATTR_NONE;
}

#define HOLMES "Sherlock Holmes"
#define NARRATOR "I (the narrator)"

// ---------------------------------------------------------------------------------------
// Books

TEST(gutenberg_front_and_back_matter_are_cut) {
    build("The Project Gutenberg EBook of Tests, by Nobody\n"
          "\n"
          "*** START OF THIS PROJECT GUTENBERG EBOOK TESTS ***\n"
          "\n"
          "Produced by a volunteer\n"
          "\n"
          "TESTS\n"
          "\n"
          "by\n"
          "\n"
          "NOBODY\n"
          "\n"
          "CHAPTER I. THE FIRST\n"
          "\n"
          "It was a dark and stormy night, and the rain fell in torrents over\n"
          "the whole of the city.\n"
          "\n"
          "   I. The First\n"
          "  II. The Second\n"
          "\n"
          "\"Come in!\" said Holmes.\r\n"
          "\n"
          "End of the Project Gutenberg EBook of Tests\n"
          "\n"
          "*** END OF THIS PROJECT GUTENBERG EBOOK TESTS ***\n"
          "This license text must go.\n",
          BOOK_AUTO, QUOTES_AUTO);
    CHECK_INT(book.gutenberg, 1);
    CHECK_INT(book.format, BOOK_PROSE);
    CHECK_INT(book.header.first, 1);
    CHECK_INT(book.header.last, 3);
    CHECK_INT(book.licence.first, 23);  // from the "End of" line to the file's last line
    CHECK_INT(book.licence.last, 26);
    // before the first chapter: the title and "by" (the author's name, a one-line heading
    // right above the chapter heading, stays with it)
    CHECK_INT(book.front.first, 7);
    CHECK_INT(book.front.last, 10);
    CHECK_INT(book.front_paragraphs, 2);
    // NOBODY, the chapter heading and the contents are headings, kept as scene breaks
    CHECK_INT(book.headings, 3);
    CHECK_INT(book.n, 5);
    CHECK_STR(book.paras[2].text,
              "It was a dark and stormy night, and the rain fell in torrents over\nthe whole of the city.");
    CHECK_INT(book.paras[2].line, 15);
    CHECK_STR(book.paras[4].text, "\"Come in!\" said Holmes.");  // CRLF read as LF
    for (size_t p = 0; p < book.n; p++)
        CHECK(!strstr(book.paras[p].text, "Produced") && !strstr(book.paras[p].text, "license"));
}

TEST(scene_breaks_from_headings_and_blank_lines) {
    build("One paragraph of narrative that is long enough to count as text.\n\n"
          "Another one.\n\n\n"
          "After two blank lines, a new scene.\n\n"
          "CHAPTER II\n\n"
          "And after a heading.\n",
          BOOK_AUTO, QUOTES_AUTO);
    CHECK_INT(book.n, 5);
    CHECK_INT(book.paras[1].scene, 0);
    CHECK_INT(book.paras[2].scene, 1);
    CHECK_INT(book.paras[3].heading, 1);
    CHECK_INT(book.paras[4].scene, 1);
}

TEST(what_is_not_a_text_book_is_refused) {
    char err[ERR_LEN];
    Book b;
    CHECK_INT(book_parse(&b, "empty.txt", "", 0, NULL, err), -1);
    CHECK_CONTAINS(err, "empty.txt: empty file");
    CHECK_INT(book_parse(&b, "bin.dat", "line one\nab\0cd", 14, NULL, err), -1);
    CHECK_CONTAINS(err, "bin.dat:2: NUL byte at offset 11: a binary file");
    CHECK_INT(book_parse(&b, "latin1.txt", "caf\xe9 au lait\n", 13, NULL, err), -1);
    CHECK_CONTAINS(err, "latin1.txt:1: invalid UTF-8 at byte offset 3");
    CHECK_INT(book_parse(&b, "headings.txt", "CHAPTER I\n\nCHAPTER II\n", 22, NULL, err), -1);
    CHECK_CONTAINS(err, "no text left");
}

TEST(script_speakers) {
    size_t rest;
    CHECK_INT(book_script_speaker(NULL, "HAMLET. To be", 13, &rest), 6);
    CHECK_INT(rest, 8);
    CHECK_INT(book_script_speaker(NULL, "MRS. HUDSON. I am", 17, &rest), 11);
    CHECK_INT(book_script_speaker(NULL, "FIRST WITCH:", 12, &rest), 11);
    CHECK_INT(book_script_speaker(NULL, "HAMLET.", 7, &rest), 6);
    CHECK_INT(book_script_speaker(NULL, "I. A Scandal", 12, &rest), 0);      // a numbered heading
    CHECK_INT(book_script_speaker(NULL, "ACT I.", 6, &rest), 0);             // a heading keyword
    CHECK_INT(book_script_speaker(NULL, "Holmes. Then", 12, &rest), 0);      // not capitals
    CHECK_INT(book_script_speaker(NULL, "A cold night.", 13, &rest), 0);
}

// ---------------------------------------------------------------------------------------
// Quoting styles and tag placement

// The same scene in each quoting style: a tag after the quotation, before it, inside it,
// the narrator's "I", and an action beat.
static void check_scene(const char *apostrophe) {
    CHECK_STR(speaker("You are late, Watson."), HOLMES);
    CHECK_INT(method("You are late, Watson."), ATTR_TAG);
    CHECK_STR(speaker("The fog was thick."), NARRATOR);
    CHECK_STR(speaker("It always is in November."), HOLMES);
    CHECK_INT(method("It always is in November."), ATTR_BEAT);
    CHECK_STR(speaker("I have a case for you."), "Lestrade");
    CHECK_INT(method("I have a case for you."), ATTR_TAG);
    // a tag inside a quotation: both halves, joined as they read
    CHECK_STR(speaker("Pray tell it"), HOLMES);
    const Turn *t = turn("Pray tell it");
    char want[128];
    snprintf(want, sizeof want, "Pray tell it, and leave nothing out. Lestrade%ss cases are rarely dull.",
             apostrophe);
    if (t) CHECK_STR(t->text, want);
}

TEST(straight_double_quotes) {
    build("Holmes was standing by the fire when I came in, and Lestrade sat in the corner.\n\n"
          "\"You are late, Watson,\" said Holmes.\n\n"
          "\"The fog was thick,\" I answered.\n\n"
          "Holmes nodded. \"It always is in November.\"\n\n"
          "Lestrade said, \"I have a case for you.\"\n\n"
          "\"Pray tell it,\" said Holmes, \"and leave nothing out. Lestrade's cases are rarely dull.\"\n",
          BOOK_AUTO, QUOTES_AUTO);
    CHECK_INT(dlg.family, QUOTES_DOUBLE);
    check_scene("'");
}

TEST(curly_double_quotes) {
    build("Holmes was standing by the fire when I came in, and Lestrade sat in the corner.\n\n"
          "“You are late, Watson,” said Holmes.\n\n"
          "“The fog was thick,” I answered.\n\n"
          "Holmes nodded. “It always is in November.”\n\n"
          "Lestrade said, “I have a case for you.”\n\n"
          "“Pray tell it,” said Holmes, “and leave nothing out. Lestrade’s cases are rarely dull.”\n",
          BOOK_AUTO, QUOTES_AUTO);
    CHECK_INT(dlg.family, QUOTES_DOUBLE);
    check_scene("’");
}

TEST(straight_single_quotes) {
    // apostrophes everywhere: don't, o'clock, a plural possessive inside speech
    build("Holmes was standing by the fire when I came in, and Lestrade sat in the corner.\n\n"
          "'You are late, Watson,' said Holmes. 'The boys' boots are wet, so it's past six o'clock.'\n\n"
          "'The fog was thick,' I answered.\n\n"
          "Holmes nodded. 'It always is in November.'\n\n"
          "Lestrade said, 'I have a case for you.'\n\n"
          "'Pray tell it,' said Holmes, 'and leave nothing out. Lestrade's cases are rarely dull.'\n",
          BOOK_AUTO, QUOTES_AUTO);
    CHECK_INT(dlg.family, QUOTES_SINGLE);
    check_scene("'");
    const Turn *t = turn("You are late");
    if (t) CHECK_STR(t->text, "You are late, Watson. The boys' boots are wet, so it's past six o'clock.");
}

TEST(curly_single_quotes) {
    build("Holmes was standing by the fire when I came in, and Lestrade sat in the corner.\n\n"
          "‘You are late, Watson,’ said Holmes.\n\n"
          "‘The fog was thick,’ I answered.\n\n"
          "Holmes nodded. ‘It always is in November.’\n\n"
          "Lestrade said, ‘I have a case for you.’\n\n"
          "‘Pray tell it,’ said Holmes, ‘and leave nothing out. Lestrade’s cases are rarely dull.’\n",
          BOOK_AUTO, QUOTES_AUTO);
    CHECK_INT(dlg.family, QUOTES_SINGLE);
    check_scene("’");
}

TEST(backtick_apostrophe_quotes) {
    build("Holmes was standing by the fire when I came in, and Lestrade sat in the corner.\n\n"
          "`You are late, Watson,' said Holmes.\n\n"
          "`The fog was thick,' I answered.\n\n"
          "Holmes nodded. `It always is in November.'\n\n"
          "Lestrade said, `I have a case for you.'\n\n"
          "`Pray tell it,' said Holmes, `and leave nothing out. Lestrade's cases are rarely dull.'\n",
          BOOK_AUTO, QUOTES_AUTO);
    CHECK_INT(dlg.family, QUOTES_SINGLE);
    check_scene("'");
}

TEST(quotes_forced_and_nested) {
    // With --quotes double, single marks are quotations inside the speech.
    build("\"He said 'never' to me,\" said Holmes.\n", BOOK_PROSE, QUOTES_DOUBLE);
    CHECK_STR(speaker("He said 'never' to me."), HOLMES);
    // A damaged apostrophe is not a quotation mark: `Holmes"quick eye`.
    build("Sherlock Holmes\"quick eye took in my occupation. \"You have been in China,\" said he.\n",
          BOOK_PROSE, QUOTES_AUTO);
    CHECK_STR(speaker("You have been in China."), HOLMES);
}

// ---------------------------------------------------------------------------------------
// Pronouns, alternation, paragraphs

TEST(pronoun_tags) {
    build("\"Good evening,\" said Lestrade, and he sat down beside Holmes in the hall.\n\n"
          "Mrs. Hudson stood at the door with the lamp, waiting for orders from us all.\n\n"
          "Holmes laughed. \"You see, but you do not observe,\" said he.\n\n"
          "\"I observe enough,\" I answered.\n\n"
          "Mrs. Hudson came in and set it down upon the table.\n\n"
          "\"Will you want supper?\" she asked.\n\n"
          "Lestrade took up the paper and read it through twice.\n\n"
          "\"It is signed,\" he said.\n\n"
          "\"Then it is genuine,\" he cried, grasping Holmes by the arm.\n",
          BOOK_AUTO, QUOTES_AUTO);
    CHECK_STR(speaker("You see, but you do not observe."), HOLMES);  // the subject earlier in the paragraph
    CHECK_INT(method("You see, but you do not observe."), ATTR_PRONOUN);
    CHECK_STR(speaker("Will you want supper?"), "Mrs. Hudson");      // "she": the only woman
    CHECK_STR(speaker("It is signed."), "Lestrade");                 // the paragraph before
    // "he" is not Holmes, whom the tag's own sentence names: Lestrade again
    CHECK(strcmp(speaker("Then it is genuine."), HOLMES) != 0);
    // the subject of a clause opened by "when" is someone who acts, as a sentence's is
    build("Lestrade looked sadly at my companion, and hurried away.\n\n"
          "He had hardly shut the door behind him when Holmes rose to put on his overcoat. \"There is "
          "something in what the fellow says,\" he remarked.\n",
          BOOK_AUTO, QUOTES_AUTO);
    CHECK_STR(speaker("There is something in what"), HOLMES);
    const Turn *t = turn("There is something in what");
    if (t) CHECK(t->confidence >= 0.85f);  // not the latest of several people named (0.50)
}

TEST(alternation_in_a_two_person_exchange) {
    build("The visitor sat down heavily in the armchair by the window.\n\n"
          "\"What do you make of it?\" asked Holmes.\n\n"
          "\"Nothing at all.\"\n\n"
          "\"Then look again.\"\n\n"
          "\"I see a stain.\"\n\n"
          "\"Precisely.\"\n\n"
          "The clock struck ten, and for a long while neither of us said anything at all to the other.\n\n"
          "\"Another cup?\"\n",
          BOOK_AUTO, QUOTES_AUTO);
    CHECK_STR(speaker("Then look again."), HOLMES);
    CHECK_INT(method("Then look again."), ATTR_ALTERNATION);
    CHECK_STR(speaker("Precisely."), HOLMES);
    const Turn *a = turn("Then look again."), *b = turn("Precisely.");
    if (a && b) CHECK(a->confidence > b->confidence);  // further from the anchor, less sure
    CHECK(strcmp(speaker("Nothing at all."), HOLMES) != 0);
    CHECK(strcmp(speaker("I see a stain."), HOLMES) != 0);
    // after a long passage of narrative the count stops: nobody can tell who speaks
    CHECK_STR(speaker("Another cup?"), "(none)");
}

TEST(a_name_called_in_a_quotation_inside_the_speech_is_not_addressed) {
    // the boy calls Mrs. Hudson by name, inside her own speech: she is still its speaker
    build("Mrs. Hudson came up the stairs with the tray and the letters.\n\n"
          "\"Well,\" said she, \"the boy at the door said to me, 'Ah! Mrs. Hudson, here is a letter,' "
          "and off he ran.\"\n",
          BOOK_AUTO, QUOTES_AUTO);
    CHECK_STR(speaker("Well, the boy at the door"), "Mrs. Hudson");
}

TEST(a_line_that_addresses_the_character_is_not_theirs) {
    build("\"Sit down,\" said Holmes.\n\n"
          "\"Thank you.\"\n\n"
          "\"Now tell me everything.\"\n\n"
          "\"Really, Mr. Holmes, I hardly know where to begin.\"\n",
          BOOK_AUTO, QUOTES_AUTO);
    CHECK_STR(speaker("Now tell me everything."), HOLMES);
    CHECK(strcmp(speaker("Really, Mr. Holmes"), HOLMES) != 0);
}

TEST(speech_over_several_paragraphs) {
    build("\"It began in May,\" said Holmes. \"The house was empty.\n\n"
          "\"Nobody came for a week.\n\n"
          "\"Then the letter arrived.\"\n\n"
          "\"What letter?\" I asked.\n",
          BOOK_AUTO, QUOTES_AUTO);
    const Turn *t = turn("It began in May.");
    if (t) {
        CHECK_STR(
            t->text,
            "It began in May. The house was empty.\n\nNobody came for a week.\n\nThen the letter arrived.");
        CHECK_INT(t->last_para - t->first_para, 2);
        CHECK_STR(speaker("It began in May."), HOLMES);
    }
    CHECK_STR(speaker("What letter?"), NARRATOR);
}

TEST(a_story_inside_a_speech_is_not_attributed) {
    // The client tells what was said to him, with single marks inside double ones: those
    // turns are his story, not an exchange in the room.
    build("\"It was like this,\" said Mr. Wilson. \"I went to the office.\n\n"
          "\"'Are you married?' he asked. 'No,' said I.\n\n"
          "\"'Then you will do,' said he.\"\n\n"
          "\"Most singular,\" said Holmes.\n",
          BOOK_AUTO, QUOTES_AUTO);
    CHECK_STR(speaker("It was like this."), "Mr. Wilson");
    CHECK_STR(speaker("Most singular."), HOLMES);
    // the story's "he" and "I" attribute nothing
    for (size_t k = 0; k < dlg.n; k++) CHECK(dlg.turns[k].speaker != ENTITY_NARRATOR);
}

TEST(a_text_read_aloud_is_not_a_turn) {
    build("I took the paper from him and read as follows:\n\n"
          "\"To the Red-Headed League: there is now another vacancy open.\"\n\n"
          "\"What on earth does this mean?\" I asked.\n",
          BOOK_AUTO, QUOTES_AUTO);
    CHECK_INT(dlg.documents, 1);
    CHECK_INT(dlg.n, 1);
    CHECK_STR(speaker("What on earth"), NARRATOR);
}

TEST(script_format) {
    const char *play =
        "ACT I\n\nSCENE I. Elsinore.\n\n"
        "HAMLET. To be, or not to be, that is the question.\n"
        "OPHELIA. Good my lord,\n"
        "How does your honour for this many a day?\n"
        "HAMLET.\n"
        "I humbly thank you; well, well, well. [Aside.] Words, words.\n\n"
        "[Exit Ophelia.]\n\n"
        "Enter Polonius.\n\n"
        "POLONIUS: My lord, the queen would speak with you.\n";
    build(play, BOOK_SCRIPT, QUOTES_AUTO);
    dialogue_free(&dlg);
    DialogueOptions o = {"Hamlet", NULL, 0, 0, QUOTES_AUTO};
    dialogue_build(&dlg, &book, &o);
    CHECK_INT(dlg.n, 4);
    CHECK_STR(speaker("To be, or not to be"), "Hamlet");
    CHECK_INT(method("To be, or not to be"), ATTR_SCRIPT);
    CHECK_STR(speaker("Good my lord,\nHow does"), "OPHELIA");
    CHECK_STR(speaker("I humbly thank you"), "Hamlet");
    const Turn *t = turn("I humbly thank you");
    if (t) CHECK_STR(t->text, "I humbly thank you; well, well, well.  Words, words.");
    CHECK_STR(speaker("My lord, the queen"), "POLONIUS");
}

TEST(script_detected) {
    ByteBuf text = {0};
    for (int i = 0; i < 6; i++) {
        char line[128];
        snprintf(line, sizeof line, "HOLMES. Line %d of mine.\nWATSON: Line %d of his.\n\n", i, i);
        bytebuf_append(&text, line, strlen(line));
    }
    char err[ERR_LEN];
    Book b;
    CHECK_INT(book_parse(&b, "play.txt", text.data, text.len, NULL, err), 0);
    CHECK_INT(b.format, BOOK_SCRIPT);
    book_free(&b);
    bytebuf_free(&text);
}

// ---------------------------------------------------------------------------------------
// Layouts, plays, front and back matter, markup

// The same four paragraphs in each layout: where a paragraph starts, and who speaks.
static void check_layout(BookLayout want) {
    CHECK_INT(book.layout, want);
    CHECK_STR(speaker("You are late, Watson."), HOLMES);
    CHECK_STR(speaker("The fog was thick."), NARRATOR);
    CHECK_STR(speaker("I have a case for you."), "Lestrade");
}

TEST(layout_blank_lines_between_paragraphs) {
    build("Holmes was standing by the fire when I came in,\nand Lestrade sat in the corner.\n\n"
          "\"You are late, Watson,\" said Holmes, without turning\nround from the fire.\n\n"
          "\"The fog was thick,\" I answered.\n\n"
          "Lestrade said, \"I have a case for you.\"\n",
          BOOK_AUTO, QUOTES_AUTO);
    check_layout(LAYOUT_BLANK);
    CHECK_INT(book.n, 4);
}

TEST(layout_one_paragraph_a_line) {
    // long lines, no blank line between paragraphs (blocks of more than 12 lines); a blank
    // line is a scene break
    ByteBuf text = {0};
    const char *pad = " The room was warm and the lamp was lit, and the papers of the week lay"
                      " scattered over the table where he had thrown them the night before, as"
                      " was his habit when a case had gone badly.\n";
    const char *lines[] = {"Holmes was standing by the fire when I came in, and Lestrade sat in the corner.",
                           "\"You are late, Watson,\" said Holmes.", "\"The fog was thick,\" I answered.",
                           "Lestrade said, \"I have a case for you.\""};
    for (int i = 0; i < 4; i++) {
        bytebuf_append(&text, lines[i], strlen(lines[i]));
        bytebuf_append(&text, i == 2 ? "\n" : pad, i == 2 ? 1 : strlen(pad));
    }
    for (int i = 0; i < 10; i++) {
        bytebuf_append(&text, "We waited.", 10);
        bytebuf_append(&text, pad, strlen(pad));
    }
    bytebuf_append(&text, "\n", 1);
    for (int i = 0; i < 14; i++) {
        bytebuf_append(&text, "The next morning was bright and clear.", 38);
        bytebuf_append(&text, pad, strlen(pad));
    }
    bytebuf_push(&text, 0);
    build(text.data, BOOK_AUTO, QUOTES_AUTO);
    bytebuf_free(&text);
    check_layout(LAYOUT_LINES);
    CHECK_INT(book.n, 28);
    if (book.n == 28) {
        CHECK_INT(book.paras[13].scene, 0);
        CHECK_INT(book.paras[14].scene, 1);
    }
}

TEST(layout_indented_first_lines) {
    // hard-wrapped lines and no blank lines: a paragraph starts where a line is indented
    build("    Holmes was standing by the fire when I came in, and\n"
          "Lestrade sat in the corner with his hat upon his knees.\n"
          "    \"You are late, Watson,\" said Holmes, without turning\n"
          "round from the fire.\n"
          "    \"The fog was thick,\" I answered.\n"
          "    Lestrade said, \"I have a case for you. It came in this\n"
          "morning.\"\n"
          "    We waited, and the clock on the mantelpiece struck the\n"
          "hour, and then the quarter, and still nobody came up the\n"
          "stairs to tell us what we wanted to know.\n"
          "    The lamp burned low.\n"
          "    Holmes lit his pipe again and sat down in the basket\n"
          "chair with his long legs stretched out before him.\n"
          "    The rain beat upon the windows.\n",
          BOOK_AUTO, QUOTES_AUTO);
    check_layout(LAYOUT_INDENTED);
    CHECK_INT(book.n, 8);
    if (book.n == 8)
        CHECK_STR(book.paras[1].text, "\"You are late, Watson,\" said Holmes, without turning\nround from the fire.");
    // the layout can be named instead of found
    char err[ERR_LEN];
    Book b;
    const char *two = "One line of the text that is long enough\nand its wrap.\n  A second line of the text, as long\nas the first one.\n";
    CHECK_INT(book_parse(&b, "t.txt", two, strlen(two), &(BookParseOptions){.layout = LAYOUT_LINES}, err), 0);
    CHECK_INT(b.n, 4);
    book_free(&b);
    CHECK_INT(book_parse(&b, "t.txt", two, strlen(two), &(BookParseOptions){.layout = LAYOUT_INDENTED}, err), 0);
    CHECK_INT(b.n, 2);
    book_free(&b);
}

TEST(play_names_with_a_tab_and_on_their_own_line) {
    // the Moby layout: name, tab, speech; a stage direction inside a speech; an aside that
    // goes on after its direction; two speaking together ("|")
    static const char *const none[] = {NULL};
    BookParseOptions script = {.format = BOOK_SCRIPT};
    build_for("ACT I\n\nSCENE I\tA heath.\n\n"
              "MACBETH\tSo foul and fair a day I have not seen.\n\n"
              "BANQUO\tHow far is't call'd to Forres?\n\n"
              "MACBETH\t[Aside]\tTwo truths are told.\n\n"
              "\t[Aside]  This supernatural soliciting\n\tCannot be ill.\n\n"
              "\t[Exit BANQUO]\n\n"
              "\tWho comes here?\n\n"
              "LADY MACBETH\tGlamis thou art.\n\n"
              "MACBETH\t|\n\t|\tWhat's the matter.\nLENNOX\t|\n",
              &script, "Macbeth", none, 0);
    CHECK_STR(speaker("So foul and fair"), "Macbeth");
    CHECK_STR(speaker("How far"), "BANQUO");
    const Turn *t = turn("Two truths");
    if (t) CHECK_STR(t->text, "Two truths are told.\nThis supernatural soliciting\nCannot be ill.\nWho comes here?");
    CHECK_STR(speaker("Two truths"), "Macbeth");
    CHECK_STR(speaker("Glamis thou art."), "LADY MACBETH");  // not Macbeth
    CHECK_STR(speaker("What's the matter."), "Macbeth");
    // names alone on their lines, the speech under them
    const char *own = "ACT I\n\nSCENE I. Elsinore.\n\n"
                      "BERNARDO\nWho's there?\n\nFRANCISCO\nNay, answer me.\n\n"
                      "BERNARDO\nLong live the king!\n\nFRANCISCO\nBernardo?\n\n"
                      "BERNARDO\nHe.\n\nFRANCISCO\nYou come most carefully upon your hour.\n\n"
                      "BERNARDO\n'Tis now struck twelve.\n\nFRANCISCO\nFor this relief much thanks.\n\n"
                      "BERNARDO\nHave you had quiet guard?\n\nFRANCISCO\nNot a mouse stirring.\n";
    build_for(own, NULL, "Bernardo", none, 0);
    CHECK_INT(book.format, BOOK_SCRIPT);
    CHECK_INT(dlg.n, 10);
    CHECK_STR(speaker("Who's there?"), "Bernardo");
    CHECK_STR(speaker("Nay, answer me."), "FRANCISCO");
    CHECK_STR(speaker("He."), "Bernardo");
}

TEST(front_matter_preface_contents_and_the_end) {
    // no Gutenberg markers: the title page, a preface with a quotation in it and a table of
    // contents go; the text starts at the first chapter followed by text; after THE END,
    // the publisher's list goes
    build("THE CASE BOOK\n\n"
          "PREFACE\n\n"
          "\"Write what you know,\" my editor said to me, and so I have done.\n\n"
          "CONTENTS\n\n"
          "CHAPTER I. THE VISITOR\n"
          "CHAPTER II. THE LETTER\n\n"
          "CHAPTER I. THE VISITOR\n\n"
          "\"You are late, Watson,\" said Holmes.\n\n"
          "CHAPTER II. THE LETTER\n\n"
          "\"It is signed,\" said Lestrade.\n\n"
          "THE END\n\n"
          "Other books from the same publisher: \"The Red Circle,\" a novel.\n",
          BOOK_AUTO, QUOTES_AUTO);
    CHECK_INT(book.front.first, 1);
    CHECK_INT(book.front.last, 11);
    CHECK_INT(book.back.first, 22);  // the paragraph after THE END
    CHECK_INT(book.back.last, 22);
    CHECK_INT(dlg.n, 2);  // not the editor's words, not the publisher's
    CHECK_STR(speaker("You are late, Watson."), HOLMES);
    CHECK(!has_turn("Write what you know"));
    // --start-line and --end-line: the book is those lines, as given
    char err[ERR_LEN];
    Book b;
    const char *text = "PREFACE\n\n\"Write what you know,\" my editor said.\n\nCHAPTER I\n\nText.\n";
    CHECK_INT(book_parse(&b, "t.txt", text, strlen(text), &(BookParseOptions){.start_line = 3, .end_line = 3}, err), 0);
    CHECK_INT(b.n, 1);
    CHECK_INT(b.paras[0].line, 3);
    book_free(&b);
}

TEST(illustrations_markup_and_separators) {
    build("CHAPTER I.\n\n"
          "Holmes was standing by the fire when I came in from the street.\n\n"
          "[Illustration: \"You are late,\"\n"
          "said Holmes.]\n\n"
          "\"You are _very_ late, Watson,\" said Holmes.[12]\n\n"
          "\"The fog[A] was *thick*,\" I answered.\n\n"
          "*       *       *       *       *\n\n"
          "[Illustration: CHAPTER II.]\n\n"
          "[Footnote 12: An old joke of his.]\n\n"
          "The next morning was bright and clear.\n",
          BOOK_AUTO, QUOTES_AUTO);
    // the picture's caption is no quotation; the chapter in a picture stays a heading
    CHECK_INT(dlg.n, 2);
    CHECK_STR(speaker("You are very late, Watson."), HOLMES);
    CHECK_STR(speaker("The fog was thick."), NARRATOR);
    CHECK_INT(book.blocks, 3);  // two pictures and the footnote
    size_t headings = 0;
    for (size_t p = 0; p < book.n; p++) headings += book.paras[p].heading;
    CHECK_INT(headings, 2);
    CHECK_INT(book.paras[book.n - 1].scene, 1);
    // the cleaner alone
    char text[] = "\"_You_ did it,\" said *he*.[3] Look[B] at [Illustration] this.";
    int removed = 0;
    size_t n = book_clean_markup(text, strlen(text), &removed);
    text[n] = 0;
    CHECK_STR(text, "\"You did it,\" said he. Look at this.");
    CHECK(removed >= 5);
    // a word with an underscore inside it, an asterisk alone, a year in brackets stay
    char keep[] = "snake_case * [1887] (sic)";
    removed = 0;
    n = book_clean_markup(keep, strlen(keep), &removed);
    keep[n] = 0;
    CHECK_STR(keep, "snake_case * [1887] (sic)");
}

// ---------------------------------------------------------------------------------------
// Attribution: people of one sex, thoughts, titles, who is addressed

// Cleans text as a book and finds its dialogue, the character being Elizabeth Bennet.
static void build_elizabeth(const char *text) {
    static const char *const lizzy[] = {"Elizabeth"};
    build_for(text, NULL, "Elizabeth Bennet", lizzy, 1);
}

TEST(she_between_two_women_and_in_a_mixed_exchange) {
    // two women: "she" is not the one who has just spoken, but the other
    build_elizabeth("Lady Catherine sat down opposite Elizabeth in the little parlour.\n\n"
              "\"You are a very obstinate girl,\" said Lady Catherine.\n\n"
              "\"I am only resolved to act as I think best,\" replied Elizabeth.\n\n"
              "\"And this is your final answer?\" she cried.\n\n"
              "\"It is.\"\n");
    CHECK_STR(speaker("And this is your final answer?"), "Lady Catherine");
    CHECK_STR(speaker("It is."), "Elizabeth Bennet");
    // a man and a woman: "she" is the woman of the exchange
    build_elizabeth("Mr. Darcy came up to Elizabeth at the end of the room.\n\n"
              "\"Do you dance?\" said Mr. Darcy.\n\n"
              "\"Not to-night,\" said Elizabeth.\n\n"
              "\"Then I shall not ask you.\"\n\n"
              "\"You are very kind,\" she said, laughing.\n");
    CHECK_STR(speaker("Then I shall not ask you."), "Mr. Darcy");
    CHECK_STR(speaker("You are very kind."), "Elizabeth Bennet");
    CHECK_INT(method("You are very kind."), ATTR_PRONOUN);
    // "she" is not the woman whose own tag names her in the turn right after: the one woman
    // of the exchange is Elizabeth, but she answers this line
    build_elizabeth("Elizabeth was tired, and she said little. Elizabeth knew that she could not help it.\n\n"
              "The loss of her daughter made Mrs. Bennet very dull for several days.\n\n"
              "\"I often think,\" said she, \"that there is nothing so bad as parting with friends.\"\n\n"
              "\"This is the consequence, you see, madam,\" said Elizabeth.\n\n"
              "\"Nonsense,\" said Mr. Bennet.\n");
    CHECK_STR(speaker("I often think"), "Mrs. Bennet");
    // the subject of a clause after a semicolon acts as a sentence's does: "she" is the one
    // who was determined, not the woman she would not talk to
    build_elizabeth("They proceeded in silence along the gravel walk; Elizabeth was determined to make no effort "
              "for conversation with a woman so insolent.\n\n"
              "\"How could I ever think her like her nephew?\" said she, as she looked in her face.\n");
    CHECK_STR(speaker("How could I ever think"), "Elizabeth Bennet");
}

TEST(a_thought_is_not_a_turn) {
    build_elizabeth("Elizabeth walked on alone, and Lady Catherine's carriage drove away.\n\n"
              "\"Insolent woman!\" thought Elizabeth.\n\n"
              "\"I shall not be so easily frightened,\" said she to herself.\n\n"
              "Jane met her at the door of the house.\n\n"
              "\"You look tired, Lizzy,\" said Jane.\n\n"
              "\"I am perfectly well,\" said Elizabeth.\n");
    CHECK_INT(dlg.thoughts, 2);
    CHECK(!has_turn("Insolent woman!"));
    CHECK(!has_turn("I shall not be so easily frightened."));
    CHECK_STR(speaker("I am perfectly well."), "Elizabeth Bennet");
    CHECK_STR(speaker("You look tired, Lizzy."), "Jane");
}

TEST(titles_tell_one_family_apart) {
    build_elizabeth("The family were at breakfast in the morning room at Longbourn.\n\n"
              "\"My dear Mr. Bennet,\" said his lady to him one day, \"have you heard the news?\"\n\n"
              "\"I have not,\" said Mr. Bennet.\n\n"
              "\"It is true,\" said Mrs. Bennet.\n\n"
              "\"Is it indeed?\" said Miss Bennet.\n\n"
              "\"Very likely,\" said Bennet, folding his paper.\n");
    CHECK_STR(speaker("I have not."), "Mr. Bennet");
    CHECK_STR(speaker("It is true."), "Mrs. Bennet");
    CHECK_STR(speaker("Is it indeed?"), "Miss Bennet");
    CHECK_STR(speaker("Very likely."), "Mr. Bennet");  // a surname alone is a man's
    // none of them is the character, Elizabeth Bennet
    for (size_t k = 0; k < dlg.n; k++) CHECK(dlg.turns[k].speaker != 0);
}

// The fire-side scene of the tests below, with dialogue after it.
static void by_the_fire(const char *dialogue) {
    char text[1024];
    snprintf(text, sizeof text, "Lestrade and I sat together by the fire, and Holmes stood at the window.\n\n%s",
             dialogue);
    build(text, BOOK_AUTO, QUOTES_AUTO);
}

TEST(the_one_called_by_name_answers) {
    by_the_fire("\"What do you make of it, Holmes?\" asked Lestrade.\n\n"
                "\"That it was done by a left-handed man.\"\n");
    // no count of turns can tell (one speaker so far, three people in the room): the
    // question named Holmes
    CHECK_STR(speaker("That it was done"), HOLMES);
    CHECK_INT(method("That it was done"), ATTR_ALTERNATION);
    // but a count of turns that says otherwise wins: the narrator spoke two turns before
    by_the_fire("\"A dreadful business,\" said I.\n\n"
                "\"What do you make of it, Holmes?\" asked Lestrade.\n\n"
                "\"That it was done by a left-handed man.\"\n");
    CHECK_STR(speaker("That it was done"), NARRATOR);
    // the one a tag says the line is said to answers it, named or not in the line
    by_the_fire("\"What does it mean?\" said Lestrade to Holmes.\n\n"
                "\"That the man is lying.\"\n");
    CHECK_STR(speaker("That the man is lying"), HOLMES);
    CHECK_INT(method("That the man is lying"), ATTR_ALTERNATION);
}

// An exchange between a man and a woman, its first turns untagged, counted backward from the
// tags at its end: with both of them known to speak there and their sexes known, nobody can
// have joined in untagged, and the count holds as far as it does forward.
static const char *counted_back(const char *other_tag) {
    static char text[1024];
    snprintf(text, sizeof text,
             "Mr. Darcy and Miss Bennet walked on in silence for a long while, neither of them saying "
             "anything of the weather or of the ball that was to come.\n\n"
             "\"I do not think we were speaking at all.\"\n\n"
             "\"Then let us speak of books.\"\n\n"
             "\"Books? Oh no!\"\n\n"
             "\"I am sorry for it.\"\n\n"
             "\"I cannot talk of books in a ball-room.\"\n\n"
             "\"Then what?\" %s.\n\n"
             "\"Nothing at all,\" said Miss Bennet.\n",
             other_tag);
    return text;
}

TEST(counted_back_in_an_exchange_of_two_known_people) {
    static const char *const miss[] = {"Miss Bennet"};
    build_for(counted_back("said Mr. Darcy"), &(BookParseOptions){0}, "Elizabeth Bennet", miss, 1);
    CHECK_STR(speaker("I do not think we were"), "Elizabeth Bennet");
    const Turn *t = turn("I do not think we were");
    if (t) CHECK(t->confidence >= 0.75f);  // six turns back: 0.81, above the default 0.7
    // the other speaker's sex unknown ("the visitor"), a "she" may hide a third person: the
    // count backward stays as doubtful as before
    build_for(counted_back("said the visitor"), &(BookParseOptions){0}, "Elizabeth Bennet", miss, 1);
    t = turn("I do not think we were");
    if (t) CHECK(t->confidence < 0.70f);
}

TEST(the_other_one_from_the_turns_already_counted) {
    // Elizabeth is never named in a tag: Jane's "Lizzy" makes the next turn hers, and then
    // that turn is what tells who "not Jane" is, three turns after Jane's tag
    static const char *const lizzy[] = {"Lizzy"};
    build_for("Miss Bennet still looked all amazement, and her sister again, and more seriously, "
              "assured her of its truth.\n\n"
              "\"Good heaven! can it be really so?\" cried Jane. \"My dear Lizzy, are you certain?\"\n\n"
              "\"There can be no doubt of that.\"\n\n"
              "\"And do you really love him quite well enough?\"\n\n"
              "\"Oh, yes! You will only think I feel more than I ought.\"\n",
              &(BookParseOptions){0}, "Elizabeth Bennet", lizzy, 1);
    CHECK_STR(speaker("There can be no doubt"), "Elizabeth Bennet");
    CHECK_STR(speaker("And do you really love him"), "Jane");
    CHECK_STR(speaker("Oh, yes!"), "Elizabeth Bennet");
    CHECK_INT(method("Oh, yes!"), ATTR_ALTERNATION);
}

// ---------------------------------------------------------------------------------------
// Conversations

TEST(conversations_from_an_exchange) {
    build("Holmes was standing by the fire when I came in out of the fog and rain.\n\n"
          "\"You are late, Watson,\" said Holmes.\n\n"
          "\"The fog was thick,\" I answered.\n\n"
          "\"It always is in November,\" said Holmes.\n",
          BOOK_AUTO, QUOTES_AUTO);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    ExtractOptions eo = {0.7, 60};
    ExtractStats st;
    extract_conversations(&dlg, &eo, f, &st);
    fclose(f);
    CHECK_INT(st.conversations, 1);
    CHECK_INT(st.lines[ATTR_TAG], 2);
    cJSON *j = cJSON_Parse(out);
    const cJSON *m = cJSON_GetObjectItem(j, "messages");
    CHECK_INT(cJSON_GetArraySize(m), 4);
    // no one spoke before the first line: the narrative before it is the user turn
    CHECK_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 0), "content")->valuestring,
              "Holmes was standing by the fire when I came in out of the fog and rain.");
    CHECK_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 1), "role")->valuestring, "assistant");
    CHECK_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 2), "content")->valuestring, "The fog was thick.");
    CHECK_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 3), "content")->valuestring,
              "It always is in November.");
    const cJSON *turns = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "meta"), "turns");
    CHECK_INT(cJSON_GetArraySize(turns), 2);
    CHECK_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(turns, 0), "method")->valuestring, "tag");
    CHECK_INT(cJSON_GetObjectItem(cJSON_GetArrayItem(turns, 0), "line")->valueint, 3);
    cJSON_Delete(j);
    free(out);
}

// ---------------------------------------------------------------------------------------
// Chunks

TEST(chunks_keep_budget_overlap_and_presence) {
    ByteBuf text = {0};
    for (int i = 0; i < 12; i++) {
        char para[256];
        snprintf(para, sizeof para,
                 "%s walked %d miles along the river that morning and saw nothing of note at all.\n\n",
                 i < 6 ? "Holmes" : "The postman", i);
        bytebuf_append(&text, para, strlen(para));
    }
    build(text.data, BOOK_AUTO, QUOTES_AUTO);
    bytebuf_free(&text);
    Template rewrite = {"Rewrite as {{character}}, from {{story}}:\n{{passage}}", "inline"};
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    // 16 words a paragraph, 1.3 tokens a word: 21 tokens; 50 per chunk, 25 overlapping
    PromptOptions po = {"Sherlock Holmes", ALIASES, 1, 0.7, NULL, 50, 25, 3, &rewrite, NULL, "teacher"};
    PromptStats st;
    prompts_write(&dlg, &po, f, &st);
    fclose(f);
    CHECK_INT(st.chunks, 11);  // two paragraphs each, one of them repeated from the chunk before
    CHECK_INT(st.kept, 6);     // the postman's own chunks do not have Holmes in them
    CHECK_INT(st.tokens_max, 44);  // "The postman walked ..." is 17 words: 23 tokens
    cJSON *j = cJSON_Parse(out);  // the first line
    const char *id = cJSON_GetObjectItem(j, "custom_id")->valuestring;
    CHECK(!strncmp(id, "c00001-", 7) && strlen(id) == strlen("c00001-12345678:rewrite") &&
          strstr(id, ":rewrite"));
    const cJSON *meta = cJSON_GetObjectItem(j, "persona");
    CHECK_STR(cJSON_GetObjectItem(meta, "passage")->valuestring,
              "Holmes walked 0 miles along the river that morning and saw nothing of note at all.\n\n"
              "Holmes walked 1 miles along the river that morning and saw nothing of note at all.");
    const cJSON *msg = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "body"), "messages"), 0);
    CHECK(!strncmp(cJSON_GetObjectItem(msg, "content")->valuestring,
                   "Rewrite as Sherlock Holmes, from the book:\nHolmes walked 0", 57));
    cJSON_Delete(j);
    free(out);
}

TEST(templates_are_checked) {
    char err[ERR_LEN];
    Template t;
    FILE *f = fopen("persona_test_template.txt", "w");
    fputs("Rewrite as {{character}}.\nNow {{passge}} please.\n", f);
    fclose(f);
    CHECK_INT(template_load(&t, "persona_test_template.txt", err), -1);
    CHECK_CONTAINS(err, "persona_test_template.txt:2: unknown placeholder");
    f = fopen("persona_test_template.txt", "w");
    fputs("Rewrite as {{character}}.\n", f);
    fclose(f);
    CHECK_INT(template_load(&t, "persona_test_template.txt", err), -1);
    CHECK_CONTAINS(err, "has no {{passage}}");
    remove("persona_test_template.txt");
}

int main(void) {
    RUN(gutenberg_front_and_back_matter_are_cut);
    RUN(scene_breaks_from_headings_and_blank_lines);
    RUN(what_is_not_a_text_book_is_refused);
    RUN(script_speakers);
    RUN(straight_double_quotes);
    RUN(curly_double_quotes);
    RUN(straight_single_quotes);
    RUN(curly_single_quotes);
    RUN(backtick_apostrophe_quotes);
    RUN(quotes_forced_and_nested);
    RUN(pronoun_tags);
    RUN(alternation_in_a_two_person_exchange);
    RUN(a_line_that_addresses_the_character_is_not_theirs);
    RUN(a_name_called_in_a_quotation_inside_the_speech_is_not_addressed);
    RUN(speech_over_several_paragraphs);
    RUN(a_story_inside_a_speech_is_not_attributed);
    RUN(a_text_read_aloud_is_not_a_turn);
    RUN(script_format);
    RUN(script_detected);
    RUN(layout_blank_lines_between_paragraphs);
    RUN(layout_one_paragraph_a_line);
    RUN(layout_indented_first_lines);
    RUN(play_names_with_a_tab_and_on_their_own_line);
    RUN(front_matter_preface_contents_and_the_end);
    RUN(illustrations_markup_and_separators);
    RUN(she_between_two_women_and_in_a_mixed_exchange);
    RUN(a_thought_is_not_a_turn);
    RUN(titles_tell_one_family_apart);
    RUN(the_one_called_by_name_answers);
    RUN(counted_back_in_an_exchange_of_two_known_people);
    RUN(the_other_one_from_the_turns_already_counted);
    RUN(conversations_from_an_exchange);
    RUN(chunks_keep_budget_overlap_and_presence);
    RUN(templates_are_checked);
    dialogue_free(&dlg);
    book_free(&book);
    return test_summary();
}
