#!/usr/bin/env python3
"""A large mixed JSONL corpus from a book, for measuring (and stress-testing) ./prep.

  prep_make_corpus.py BOOK.txt --mb N OUT.jsonl [--text OUT.txt]

Cuts the book into paragraphs and writes, until OUT.jsonl reaches N megabytes, lines of
mistral-finetune JSONL made from consecutive paragraphs: conversations of one to four
exchanges (user = a paragraph, assistant = the next one; every third conversation has a
system prompt, every fifth first answer has "weight": 0) and, every fourth line, a
{"text": paragraph} pretraining line. The book is walked again with a shifting start
until the size is reached, so lines differ from one pass to the next.

--text writes every string that gets tokenized, one per line, so `./tokenize --bench
--lines --file OUT.txt` measures the raw tokenizer on the same text.
Standard library only; deterministic.
"""
import argparse
import json


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("book")
    ap.add_argument("out")
    ap.add_argument("--mb", type=float, default=50)
    ap.add_argument("--text")
    args = ap.parse_args()

    with open(args.book, encoding="utf-8") as f:
        paras = [" ".join(p.split()) for p in f.read().split("\n\n")]
    paras = [p for p in paras if p]
    limit = int(args.mb * 1e6)
    size, line_no, i, shift = 0, 0, 0, 0
    text = open(args.text, "w", encoding="utf-8") if args.text else None
    with open(args.out, "w", encoding="utf-8") as out:
        while size < limit:
            if i + 9 >= len(paras):
                shift += 1
                i = shift % 7
            if line_no % 4 == 3:
                row = {"text": paras[i]}
                strings = [paras[i]]
                i += 1
            else:
                msgs = []
                if line_no % 3 == 0:
                    msgs.append({"role": "system", "content": "You are Sherlock Holmes. Stay in character."})
                for turn in range(1 + line_no % 4):
                    msgs.append({"role": "user", "content": paras[i]})
                    answer = {"role": "assistant", "content": paras[i + 1]}
                    if turn == 0 and line_no % 5 == 0:
                        answer["weight"] = 0
                    msgs.append(answer)
                    i += 2
                row = {"messages": msgs}
                strings = [m["content"] for m in msgs]
            line = json.dumps(row, ensure_ascii=False) + "\n"
            out.write(line)
            if text:
                text.write("".join(s + "\n" for s in strings))
            size += len(line.encode("utf-8"))
            line_no += 1
    if text:
        text.close()


if __name__ == "__main__":
    main()
