#!/usr/bin/env python3
"""persona_score.py: precision and recall of `persona extract` against a human reading.

Reads the turns file that `persona extract --turns FILE.tsv` writes (every turn of the book:
line, speaker, method, confidence, emitted, text) and two hand-made fixtures:

  --recall FILE   every line the character speaks in some stories or chapters (test/fixtures/
                  persona/*_recall_lines.tsv): `range` rows give each one's first and last
                  file line, the other rows `story, line, opening words` and, for words of the
                  character's that are not a spoken line (a letter), a fourth column `optional`.
  --sample FILE   emitted lines labelled by reading the book (*_precision_sample.tsv):
                  `line, method, confidence, label (correct|wrong), text, drawn, note`; it may
                  be given more than once (two draws), the goals then count them together.
  --name NAME     the prefix of the goals' names (default holmes: holmes_recall, ...).

An emitted line matches a listed one when both start on the same file line and the emitted
text starts with the listed opening words (white space normalised). It prints, as the test
harness wants them, one `PASS name` or `FAIL name` line per goal:
  recall      listed lines found / listed lines              >= --min-recall
  precision   in the listed stories, emitted lines that are listed / emitted lines
                                                             >= --min-precision
  sample      over the sampled lines still emitted, correct / labelled
                                                             >= --min-precision
              (and at least --min-sample of the sample must still be emitted, or the
              labels no longer describe the extractor and must be redone)
Only the Python standard library is used.
"""
import argparse
import sys


def norm(s):
    return " ".join(s.split())


def unescape(s):
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            out.append({"t": "\t", "n": "\n", "\\": "\\"}.get(s[i + 1], s[i + 1]))
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def rows(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line and not line.startswith("#"):
                yield line.split("\t")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", required=True)
    ap.add_argument("--recall", required=True)
    ap.add_argument("--sample", required=True, action="append")
    ap.add_argument("--min-recall", type=float, default=0.80)
    ap.add_argument("--min-precision", type=float, default=0.95)
    ap.add_argument("--min-sample", type=int, default=100)
    ap.add_argument("--name", default="holmes")
    a = ap.parse_args()

    turns = list(rows(a.turns))[1:]  # the header
    emitted = [(int(t[0]), norm(unescape(t[5])), t[2]) for t in turns if t[4] == "1"]

    ranges, listed, optional = [], [], []
    for r in rows(a.recall):
        if r[0] == "range":
            ranges.append((r[1], int(r[2]), int(r[3])))
        elif r[0] != "story":
            # an "optional" row is the character's words but not a spoken line (a letter she
            # writes): right when emitted, not missed when not
            (optional if len(r) > 3 and r[3] == "optional" else listed).append((r[0], int(r[1]), norm(r[2])))

    def is_listed(line, text):
        return any(line == l and text.startswith(o) for _, l, o in listed + optional)

    found = [x for x in listed if any(l == x[1] and t.startswith(x[2]) for l, t, _ in emitted)]
    in_stories = [(l, t, m) for l, t, m in emitted if any(a0 <= l <= b0 for _, a0, b0 in ranges)]
    right = [x for x in in_stories if is_listed(x[0], x[1])]
    recall = len(found) / len(listed)
    precision = len(right) / max(1, len(in_stories))
    for story, a0, b0 in ranges:
        n = sum(1 for s, _, _ in listed if s == story)
        f = sum(1 for s, _, _ in found if s == story)
        e = sum(1 for l, _, _ in in_stories if a0 <= l <= b0)
        r = sum(1 for l, _, _ in right if a0 <= l <= b0)
        print(f"# {story} (lines {a0}-{b0}): {f}/{n} of the character's lines found, {r}/{e} emitted lines right")
    for part in sorted({s.split(":")[0] for s, _, _ in ranges if ":" in s}):
        n = sum(1 for s, _, _ in listed if s.startswith(part + ":"))
        f = sum(1 for s, _, _ in found if s.startswith(part + ":"))
        print(f"# {part}: {f}/{n} = {100 * f / max(1, n):.1f}% of the character's lines found")
    for l, t, m in in_stories:
        if not is_listed(l, t):
            print(f"#   wrong ({m}): {l} {t[:70]}")
    for s, l, o in listed:
        if (s, l, o) not in found:
            print(f"#   missed: {l} {o}")

    current = {(l, t) for l, t, _ in emitted}
    sample, labelled = [], []
    for path in a.sample:
        part = [(int(r[0]), r[1], r[3], norm(unescape(r[4])), r[5]) for r in rows(path) if r[0] != "line"]
        still = [s for s in part if (s[0], s[3]) in current]
        if len(a.sample) > 1:
            ok = sum(1 for s in still if s[2] == "correct")
            print(f"# {path}: {ok}/{len(still)} correct of the {len(part)} labelled lines, {len(still)} still emitted")
        sample += part
        labelled += still
    correct = sum(1 for s in labelled if s[2] == "correct")
    md5 = [s for s in labelled if s[4] == "md5"]
    if md5:
        print(f"# md5-drawn part of the sample: {sum(1 for s in md5 if s[2] == 'correct')}/{len(md5)} correct")
    sample_precision = correct / max(1, len(labelled))
    by_method = {}
    for s in labelled:
        c = by_method.setdefault(s[1], [0, 0])
        c[0] += s[2] == "correct"
        c[1] += 1
    print("# sample by method: " + ", ".join(f"{m} {c}/{n}" for m, (c, n) in sorted(by_method.items())))

    def verdict(name, ok, what):
        print(f"{'PASS' if ok else 'FAIL'} {name}: {what}")

    verdict(f"{a.name}_recall", recall >= a.min_recall,
            f"{len(found)}/{len(listed)} = {100 * recall:.1f}% (goal {100 * a.min_recall:.0f}%)")
    verdict(f"{a.name}_precision_in_stories", precision >= a.min_precision,
            f"{len(right)}/{len(in_stories)} = {100 * precision:.1f}% (goal {100 * a.min_precision:.0f}%)")
    verdict(f"{a.name}_sample_still_emitted", len(labelled) >= a.min_sample,
            f"{len(labelled)} of the {len(sample)} labelled lines are emitted (need {a.min_sample})")
    verdict(f"{a.name}_precision_sample", sample_precision >= a.min_precision,
            f"{correct}/{len(labelled)} = {100 * sample_precision:.1f}% (goal {100 * a.min_precision:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
