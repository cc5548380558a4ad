// utf8.c: see utf8.h for the well-formedness table this implements.
#include "utf8.h"

size_t utf8_char_len(const unsigned char *s, size_t n, size_t *maximal) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;  // no overlong 3-byte forms
        if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;  // no overlong 4-byte forms
        if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
        if (maximal) *maximal = 1;  // 80..C1, F5..FF never start a character
        return 0;
    }
    size_t i = 1;
    for (; i < need && i < n; i++) {
        unsigned b = s[i];
        unsigned l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (b < l || b > h) break;
    }
    if (i == need) return need;
    if (maximal) *maximal = i;
    return 0;
}

int utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (p[i] < 0x80) { i++; continue; }
        size_t len = utf8_char_len(p + i, n - i, NULL);
        if (!len) return 0;
        i += len;
    }
    return 1;
}

size_t utf8_replace_invalid(const char *s, size_t n, ByteBuf *out) {
    const unsigned char *p = (const unsigned char *)s;
    size_t replaced = 0, run = 0;  // run = start of the pending well-formed stretch
    for (size_t i = 0; i < n;) {
        if (p[i] < 0x80) { i++; continue; }
        size_t bad = 0, len = utf8_char_len(p + i, n - i, &bad);
        if (len) { i += len; continue; }
        bytebuf_append(out, s + run, i - run);
        bytebuf_append(out, UTF8_REPLACEMENT, 3);
        replaced++;
        i += bad;
        run = i;
    }
    bytebuf_append(out, s + run, n - run);
    return replaced;
}
