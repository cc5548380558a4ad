// fuzz.c: what the fuzz targets share (see fuzz.h).
#include "fuzz.h"

#include <unistd.h>

#include "../../tokenizer/chat.h"
#include "../../tokenizer/tokenizer.h"

static char fuzz_dir[4096];

static void fuzz_cleanup(void) {
    if (fuzz_dir[0]) remove_tree(fuzz_dir);
}

const char *fuzz_scratch(void) {
    if (!fuzz_dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/persona-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(fuzz_dir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fuzz_cleanup);
    }
    return fuzz_dir;
}

const char *fuzz_file(const char *name, const uint8_t *data, size_t size) {
    static char path[4200];
    snprintf(path, sizeof(path), "%s/%s", fuzz_scratch(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) {
        perror(path);
        abort();
    }
    return path;
}

void fuzz_check_message(const char *err) {
    if (!err[0] || strchr(err, '\n')) {
        fprintf(stderr, "fuzz: a refusal without a one-line message: \"%s\"\n", err);
        abort();
    }
}

const char fuzz_text[] = "Hello, Mr. Holmes!  It's 1891.\n\t caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac "
                         "\xf0\x9f\x98\x80 [INST] <s></s><|im_end|> \x01 \xff\xc3( end   ";
const size_t fuzz_text_len = sizeof(fuzz_text) - 1;

void fuzz_use_tokenizer(const char *path) {
    char err[ERR_LEN] = "";
    Tokenizer t;
    if (tokenizer_load(&t, path, err)) {
        fuzz_check_message(err);
        return;
    }
    TokenVec ids = {0};
    tokenizer_encode(&t, fuzz_text, fuzz_text_len, &ids);
    ByteBuf text = {0};
    if (tokenizer_decode(&t, ids.ids, ids.len, &text, err)) fuzz_check_message(err);
    for (int32_t id = 0; id < t.vocab_size && id < 4096; id++) {
        const char *s;
        size_t n = tokenizer_piece(&t, id, &s);
        if (n && !s) abort();
    }
    tokenizer_special_id(&t, "[INST]");
    ChatMessage msgs[3] = {{ROLE_SYSTEM, "Be Holmes.", 10, -1}, {ROLE_USER, "Who are you?", 12, -1},
                           {ROLE_ASSISTANT, fuzz_text, fuzz_text_len, 1}};
    TokenVec chat = {0};
    ByteBuf mask = {0};
    if (chat_encode(&t, chat_format_for(&t), msgs, 3, &chat, &mask, err)) fuzz_check_message(err);
    else if (mask.len != chat.len) abort();
    tokvec_free(&ids), tokvec_free(&chat);
    bytebuf_free(&text), bytebuf_free(&mask);
    tokenizer_free(&t);
}

char *fuzz_exact_copy(const uint8_t *data, size_t size) {
    char *copy = malloc(size ? size : 1);
    if (size) memcpy(copy, data, size);
    return copy;
}

