#!/usr/bin/env python3
"""persona_stub_teacher.py: a deterministic stand-in for a teacher model, for tests.

usage: persona_stub_teacher.py REQUESTS.jsonl ANSWERS.jsonl

Answers every request that `persona prompts` wrote, the way a teacher would but without a
model, and, on purpose, badly now and then, so that `persona ingest` can be tested on every
kind of bad answer. Request number i (0-based, in file order) gets:

  rewrite  i % 9 == 4: an empty answer                       -> rejected "empty"
           i % 9 == 7: a third-person account                -> rejected "not first person"
           i % 9 == 8: an answer four times the passage      -> rejected "too long"
           otherwise: a first-person retelling (the passage's first 60 words, the
           character's names replaced by "I", after "I remember it well. I was there.")
  qa       i % 9 == 3: prose instead of JSON                 -> rejected "not JSON"
           i % 9 == 5: a pair without an answer              -> rejected "bad pairs"
           i % 9 == 6: good pairs inside a ```json fence      -> accepted
           otherwise: good pairs, {"pairs": [...]}

The last request gets a teacher error in OpenAI's batch output form ("teacher error"); then
come an answer to an id nobody asked for ("unknown id"), a second answer to the first
request ("duplicate"), and a line that is not JSON ("invalid line"). Even-numbered answers use OpenAI's
batch output form, odd ones the plain {"custom_id", "content"} form.

It prints what it injected as `expected REASON COUNT` lines, for the test to compare with
the ingest report. Only the standard library is used.
"""
import json
import re
import sys
from collections import Counter


def first_person(text, names, words):
    for name in sorted(names, key=len, reverse=True):
        text = re.sub(r"\b%s\b" % re.escape(name), "I", text)
    return " ".join(text.split()[:words])


def rewrite_answer(i, req, expected):
    meta = req["persona"]
    name, passage = meta["character"], meta["passage"]
    if i % 9 == 4:
        expected["empty"] += 1
        return ""
    if i % 9 == 7:
        expected["not first person"] += 1
        return f"{name} saw it all. {name} said nothing, and {name} went home."
    if i % 9 == 8:
        expected["too long"] += 1
        return " ".join(["I remember it."] * (2 * len(passage.split())))
    return "I remember it well. I was there. " + first_person(passage, meta["names"], 60)


def qa_answer(i, req, expected):
    meta = req["persona"]
    if i % 9 == 3:
        expected["not JSON"] += 1
        return "Here are some questions: what happened? I do not know."
    if i % 9 == 5:
        expected["bad pairs"] += 1
        return json.dumps({"pairs": [{"question": "What happened?"}]})
    said = first_person(meta["passage"], meta["names"], 8)
    pairs = [{"question": f"What do you recall, part {k + 1}?", "answer": f"I recall this: {said}"}
             for k in range(meta["pairs"])]
    text = json.dumps({"pairs": pairs})
    return f"```json\n{text}\n```" if i % 9 == 6 else text


def answer_line(i, custom_id, content):
    if i % 2 == 0:
        return {"id": f"batch_req_{i}", "custom_id": custom_id,
                "response": {"status_code": 200, "request_id": f"req_{i}",
                             "body": {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}},
                "error": None}
    return {"custom_id": custom_id, "content": content}


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: persona_stub_teacher.py REQUESTS.jsonl ANSWERS.jsonl")
    with open(sys.argv[1], encoding="utf-8") as f:
        requests = [json.loads(line) for line in f if line.strip()]
    expected = Counter()
    lines = []
    for i, req in enumerate(requests[:-1]):
        make = qa_answer if req["persona"]["task"] == "qa" else rewrite_answer
        lines.append(json.dumps(answer_line(i, req["custom_id"], make(i, req, expected)), ensure_ascii=False))
    lines.append(json.dumps({"custom_id": "c99999-00000000:rewrite", "content": "I was never asked this."}))
    lines.append(lines[0])
    lines.append(json.dumps({"id": "batch_req_x", "custom_id": requests[-1]["custom_id"], "response": None,
                             "error": {"code": "rate_limit_exceeded", "message": "Rate limit reached"}}))
    lines.append("this line is not JSON")
    expected.update({"unknown id": 1, "duplicate": 1, "teacher error": 1, "invalid line": 1})
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    for reason, count in sorted(expected.items()):
        print(f"expected {reason} {count}")


if __name__ == "__main__":
    main()
