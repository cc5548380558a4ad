// fuzz_conversation.c: JSONL conversations (data/conversation.c), line by line as prep reads
// them. A line the checks accept must then encode in Mistral's v3 chat format with a system
// prompt added, as prep encodes it; prep treats a failure there as impossible, so here it
// aborts. Seeds: the JSONL fixtures (test/fixtures/*.jsonl, prep/, persona/), a line a file.
// The tokenizer comes from FUZZ_TOKENIZER (the Makefile points it at mistral-common's v3
// tokenizer.model).
#include "../../data/conversation.h"
#include "fuzz.h"

static Tokenizer tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *path = getenv("FUZZ_TOKENIZER");
    char err[ERR_LEN];
    if (!path || tokenizer_load(&tok, path, err)) {
        fprintf(stderr, "fuzz_conversation: FUZZ_TOKENIZER must name a tokenizer.model (%s)\n",
                path ? err : "not set");
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *copy = fuzz_exact_copy(data, size);
    Conversation c = {0};
    TokenVec ids = {0};
    ByteBuf mask = {0};
    for (size_t start = 0; start < size;) {
        const char *nl = memchr(copy + start, '\n', size - start);
        size_t n = nl ? (size_t)(nl - (copy + start)) : size - start;
        char why[ERR_LEN] = "";
        if (conversation_parse(&c, copy + start, n, why) || conversation_check_finetuning(&c, why)) {
            fuzz_check_message(why);
        } else if (c.kind == CONV_CHAT) {
            conversation_default_system(&c, "You are Sherlock Holmes.", 24);
            ids.len = mask.len = 0;
            if (chat_encode(&tok, CHAT_V3, c.msgs, c.n, &ids, &mask, why)) {
                fprintf(stderr, "fuzz_conversation: a checked line does not encode: %s\n", why);
                abort();
            }
        } else {
            ids.len = 0;
            tokenizer_encode(&tok, c.text, c.text_len, &ids);
        }
        start += n + 1;
    }
    conversation_free(&c);
    tokvec_free(&ids);
    bytebuf_free(&mask);
    free(copy);
    return 0;
}
