// fuzz_book.c: books (data/persona_book.c) and what `persona extract` does with one: the
// dialogue found and attributed (data/persona_dialogue.c, persona_quotes.c,
// persona_speakers.c), then the character's conversations, the turns table and the reports
// written (data/persona_extract.c), to /dev/null. The character is Holmes, once as a third person
// and once as the narrator. Seeds: the stress texts in test/fixtures/ and excerpts of the
// novels in ../shared/corpus/ (scripts/fuzz_seeds.py): Gutenberg front matter, dialogue, a
// play's speaker lines.
#include "../../data/persona_book.h"
#include "../../data/persona_extract.h"
#include "fuzz.h"

static FILE *sink;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    sink = fopen("/dev/null", "w");
    if (!sink) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[ERR_LEN] = "";
    char *copy = fuzz_exact_copy(data, size);
    Book book;
    BookParseOptions bo = {BOOK_AUTO, LAYOUT_AUTO, 0, 0};  // everything detected, as by default
    int rc = book_parse(&book, "book.txt", copy, size, &bo, err);
    free(copy);
    if (rc) {
        fuzz_check_message(err);
        return 0;
    }
    book_describe(&book, sink);
    static const char *const aliases[] = {"Sherlock Holmes", "Mr. Holmes"};
    for (int narrator = 0; narrator < 2; narrator++) {
        DialogueOptions dopt = {"Holmes", aliases, 2, narrator, QUOTES_AUTO};
        Dialogue d;
        dialogue_build(&d, &book, &dopt);
        ExtractOptions eo = {0.7, 60};
        ExtractStats st;
        extract_conversations(&d, &eo, sink, &st);
        extract_write_turns(&d, &eo, sink);
        extract_report(&d, &st, "Holmes", sink);
        dialogue_free(&d);
    }
    book_free(&book);
    return 0;
}
