/*
 * token_stream.h: generated tokens printed as they come, as text.
 *
 * A token can end in the middle of a UTF-8 character (byte-fallback tokens, byte-level
 * BPE), and decoding a token alone can differ from decoding it after the others
 * (SentencePiece drops the first token's leading space). So each update decodes the whole
 * answer so far and prints what is new of it, up to the last complete character: no half
 * character is ever printed. Bytes that can never form a character are printed as U+FFFD,
 * as is an unfinished character left at the end.
 */
#ifndef PERSONA_TOKEN_STREAM_H
#define PERSONA_TOKEN_STREAM_H

#include <stdio.h>

#include "../tokenizer/tokenizer.h"

typedef struct {
    const Tokenizer *tok;
    FILE *out;
    ByteBuf text;  // the answer decoded so far
    size_t shown;  // bytes of it printed
} TokenStream;

void token_stream_init(TokenStream *s, const Tokenizer *tok, FILE *out);
// ids[0..n): the whole answer so far. Prints (and flushes) what is new.
void token_stream_update(TokenStream *s, const int32_t *ids, size_t n);
// Prints whatever is left, an unfinished character as U+FFFD.
void token_stream_finish(TokenStream *s);
void token_stream_free(TokenStream *s);

// How many of the last bytes of s[0..n) are the start of a character that more bytes could
// still complete (0 when s ends on a character boundary or in bytes that cannot).
size_t utf8_unfinished_tail(const char *s, size_t n);

#endif
