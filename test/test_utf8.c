// test_utf8.c: UTF-8 well-formedness and U+FFFD substitution against the Unicode Standard.
#include <stdint.h>

#include "../tokenizer/utf8.h"
#include "test.h"

// Unicode Standard §3.9, Table 3-8 ("U+FFFD for maximal subparts"): the byte sequence
// 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 decodes to
// a FFFD FFFD FFFD b FFFD c FFFD FFFD d. Python's errors="replace" agrees.
TEST(maximal_subparts_table_3_8) {
    const char in[] = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
    ByteBuf out = {0};
    size_t n = utf8_replace_invalid(in, sizeof(in) - 1, &out);
    CHECK_INT(n, 6);
    CHECK_STR(out.data, "a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "b\xEF\xBF\xBD" "c\xEF\xBF\xBD\xEF\xBF\xBD" "d");
    bytebuf_free(&out);
}

// Table 3-7 boundaries: the first and last well-formed sequences of each row, and the
// ill-formed neighbours just outside them.
TEST(table_3_7_boundaries) {
    static const struct { const char *s; size_t len, want; } cases[] = {
        {"\x7F", 1, 1},           {"\xC2\x80", 2, 2},         {"\xDF\xBF", 2, 2},
        {"\xC1\xBF", 2, 0},       {"\xE0\xA0\x80", 3, 3},     {"\xE0\x9F\xBF", 3, 0},
        {"\xED\x9F\xBF", 3, 3},   {"\xED\xA0\x80", 3, 0},     {"\xEF\xBF\xBF", 3, 3},
        {"\xF0\x90\x80\x80", 4, 4}, {"\xF0\x8F\xBF\xBF", 4, 0}, {"\xF4\x8F\xBF\xBF", 4, 4},
        {"\xF4\x90\x80\x80", 4, 0}, {"\xF5\x80\x80\x80", 4, 0}, {"\x80", 1, 0},
        {"\xE2\x82", 2, 0},       {"\xF0\x9F\x98", 3, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t got = utf8_char_len((const unsigned char *)cases[i].s, cases[i].len, NULL);
        if (got != cases[i].want) printf("  case %zu\n", i);
        CHECK_INT(got, cases[i].want);
    }
    CHECK(utf8_valid("caf\xC3\xA9 \xF0\x9F\x98\x80", 10));
    CHECK(!utf8_valid("caf\xC3", 4));
}

TEST(valid_text_unchanged) {
    const char *s = "plain \xE6\x97\xA5\xE6\x9C\xAC ok";
    ByteBuf out = {0};
    CHECK_INT(utf8_replace_invalid(s, strlen(s), &out), 0);
    CHECK_STR(out.data, s);
    bytebuf_free(&out);
}

int main(void) {
    RUN(maximal_subparts_table_3_8);
    RUN(table_3_7_boundaries);
    RUN(valid_text_unchanged);
    return test_summary();
}
