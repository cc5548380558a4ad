#!/usr/bin/env python3
"""Writes the tokenizer stress texts in test/fixtures/ (text written for this project).

stress.txt              valid UTF-8: accents, CJK, emoji sequences, RTL scripts, control
                        characters, Unicode spaces, runs of spaces/tabs/newlines, CRLF,
                        digits, code, a word longer than any cache limit. Used for
                        encode comparisons and for decode(encode(x)) == x.
stress-invalid.txt      the same kinds of text plus malformed UTF-8 (stray continuation
                        bytes, truncated sequences, overlong forms, surrogates, bytes
                        F5..FF) and a literal U+2581, which SentencePiece itself cannot
                        round-trip. Used for encode comparisons only.
"""
import os

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures")

LINES = [
    "Plain English, with punctuation: \"quotes\", 'apostrophes', (parens) [brackets] {braces}!?",
    "Accents: café, naïve, coöperate, Ångström, Škoda, Dvořák, Łódź, São Paulo, façade, résumé.",
    "Combining: e\u0301 a\u0308 o\u0302\u0323 n\u0303 — precomposed é ä ộ ñ.",
    "CJK: 日本語のテキストと漢字、中文句子，한국어 문장입니다。全角　スペース。",
    "Emoji: 😀 🕵️‍♂️ 👩🏽‍🔬 🇬🇧🇫🇷 ❤️‍🔥 👍🏿 1️⃣ 🏳️‍🌈 and text after.",
    "RTL: עברית עם ניקוד שָׁלוֹם, العربية مع التشكيل مَرْحَبًا, فارسی, اردو.",
    "Mixed: Hello שלום مرحبا 你好 Привет Γειά σου नमस्ते สวัสดี ሰላም.",
    "Digits: 0 1 12 123 1234 12345 3.14159 -42 1e10 0x1F 1,000,000 ١٢٣ ٤٥٦ ０１２.",
    "Spaces:  two   three    four     five      six       seven        eight.",
    "\tTabs\t\tand\t\t\ttabs \t mixed\t \t.",
    "Trailing spaces   ",
    "   Leading spaces.",
    "Unicode spaces: a\u00a0b\u2000c\u2003d\u2009e\u202ff\u205fg\u3000h\u180ei\u200bj\ufeffk.",
    "Line and paragraph separators: a\u2028b\u2029c\u0085d\u000be\u000cf.",
    "Control: \u0001\u0002\u0007\u001b[31mred\u001b[0m \u007f DEL, NUL here:\u0000.",
    "CRLF line\r",
    "Code: def f(x):\n    return {\"k\": [x ** 2 for x in range(10)]}  # comment",
    "C: for (int i = 0; i < n; ++i) { a[i] += b[i] * 2; } // done",
    "URL: https://example.com/path?query=1&x=%20#frag and email a.b@c.org",
    "Symbols: ∀x∈ℝ: x² ≥ 0, ∑ᵢ aᵢ, ∫₀¹ f, α→β, ≠ ≈ ∞ ⊕ ⊗, 𝔸𝔹ℂ, 𝐀𝐁𝐂, ♔♕♖, ©®™, «guillemets», „Anführungszeichen“.",
    "Private use and specials: \ue000\uf8ff \ufffd \U000F0000.",
    "Long word: " + "Supercalifragilisticexpialidocious" * 12 + ".",
    "Long CJK run: " + "天地玄黃宇宙洪荒日月盈昃辰宿列張" * 20,
    "Special strings: <s> </s> [INST] [/INST] [SYSTEM_PROMPT] [TOOL_CALLS] <unk> <0x0A> [REFERENCE_DOC_0] [REF] <pad>",
    "",
    "",
    "After blank lines.\n\n\n\nAfter four newlines.",
    "    ",
    "\t",
    "End without newline",
]


def main():
    text = "\n".join(LINES)
    with open(os.path.join(HERE, "stress.txt"), "wb") as f:
        f.write(text.encode("utf-8"))
    bad = [
        b"Stray continuation: a\x80b\xbfc",
        b"Truncated 2-byte: \xc3 then 3-byte: \xe2\x82 then 4-byte: \xf0\x9f\x98 end",
        b"Overlong: \xc0\xaf \xe0\x80\xaf \xf0\x80\x80\xaf",
        b"Surrogates: \xed\xa0\x80 \xed\xbf\xbf",
        b"Out of range: \xf4\x90\x80\x80 \xf5\x80 \xff\xfe",
        b"Truncated at end of line \xe6\x97",
        "Literal U+2581: a\u2581b \u2581\u2581x".encode("utf-8"),
        b"Valid after invalid: caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac",
        b"\xe2\x82\xac\x80\x80 \xf0\x9f\x98\x80\xf0",
    ]
    with open(os.path.join(HERE, "stress-invalid.txt"), "wb") as f:
        f.write(b"\n".join(bad) + b"\n")


if __name__ == "__main__":
    main()
