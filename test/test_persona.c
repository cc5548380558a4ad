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
    RUN(speech_over_several_paragraphs);
    RUN(a_story_inside_a_speech_is_not_attributed);
    RUN(a_text_read_aloud_is_not_a_turn);
    RUN(script_format);
    RUN(script_detected);
    RUN(conversations_from_an_exchange);
    RUN(chunks_keep_budget_overlap_and_presence);
    RUN(templates_are_checked);
    dialogue_free(&dlg);
    book_free(&book);
    return test_summary();
}
