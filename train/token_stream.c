// token_stream.c: printing an answer as it is generated (see token_stream.h).
#include "token_stream.h"

#include "../tokenizer/utf8.h"

size_t utf8_unfinished_tail(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned c = p[n - back];
        if (c < 0x80) return 0;  // ASCII: a boundary
        if (c >= 0xC0) {         // a lead byte: unfinished if valid so far and cut by the end
            size_t bad = 0;
            return c >= 0xC2 && c <= 0xF4 && utf8_char_len(p + n - back, back, &bad) == 0 && bad == back ? back : 0;
        }
    }
    return 0;
}

void token_stream_init(TokenStream *s, const Tokenizer *tok, FILE *out) {
    *s = (TokenStream){tok, out, {0}, 0};
}

// Prints text[shown..end), invalid bytes as U+FFFD.
static void show(TokenStream *s, size_t end) {
    if (end <= s->shown) return;
    ByteBuf clean = {0};
    utf8_replace_invalid(s->text.data + s->shown, end - s->shown, &clean);
    fwrite(clean.data, 1, clean.len, s->out);
    fflush(s->out);
    bytebuf_free(&clean);
    s->shown = end;
}

void token_stream_update(TokenStream *s, const int32_t *ids, size_t n) {
    char err[ERR_LEN];
    s->text.len = 0;
    if (tokenizer_decode(s->tok, ids, n, &s->text, err)) return;  // (ids come from the model: in range)
    show(s, s->text.len - utf8_unfinished_tail(s->text.data, s->text.len));
}

void token_stream_finish(TokenStream *s) { show(s, s->text.len); }

void token_stream_free(TokenStream *s) { bytebuf_free(&s->text); }
