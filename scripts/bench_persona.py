#!/usr/bin/env python3
"""bench_persona.py: how `persona` scales with the book, in seconds.

    python3 scripts/bench_persona.py [--persona ./persona] [--repeat 3]

Makes, in a temporary directory, books of the same words in different shapes, and times:
  prompts  on a 4 MB book of normal paragraphs (the novel's text repeated), on the same
           4 MB as one single paragraph (every line end a space), and on 1, 2 and 4 MB of
           one paragraph without a sentence end (which prompts must cut between words):
           the time must grow with the size, not with its square;
  build    (no teacher, strategy A) on ../shared/corpus/pride-and-prejudice.txt and on a
           1 MB novel (that text followed by its first chapters again).
Each run is repeated --repeat times and the best one counts (other work on the machine
only ever slows a run down); both wall-clock time and CPU time (user + system) are shown, the
second being what to compare on a busy machine. Only the standard library is used.
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus")
MB = 1000 * 1000


def best_time(cmd, repeat):
    """The best wall-clock time and the best CPU time (user + system) of repeat runs."""
    wall = cpu = None
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        dt = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if r.returncode != 0:
            sys.exit("failed: %s\n%s" % (" ".join(cmd), r.stderr))
        c = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        wall = dt if wall is None else min(wall, dt)
        cpu = c if cpu is None else min(cpu, c)
    return "%6.2f s wall %6.2f s CPU" % (wall, cpu)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--persona", default="./persona")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    holmes = open(os.path.join(CORPUS, "sherlock-holmes.txt"), encoding="utf-8").read()
    # the stories without Project Gutenberg's header and licence, which would cut the copies
    holmes = holmes[holmes.find("\n", holmes.find("*** START OF")) + 1 : holmes.find("*** END OF")]
    holmes = holmes[: holmes.rfind("End of the Project Gutenberg")] + "\n\n"
    pride = os.path.join(CORPUS, "pride-and-prejudice.txt")
    who = ["--character", "Sherlock Holmes", "--alias", "Holmes"]
    with tempfile.TemporaryDirectory() as tmp:
        def write(name, text):
            path = os.path.join(tmp, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            return path

        book = (holmes * (4 * MB // len(holmes) + 1))[: 4 * MB]
        book = book[: book.rfind("\n\n")] + "\n"
        normal = write("book4.txt", book)
        single = write("para4.txt", " ".join(book.split("\n")) + "\n")
        unit = "Holmes walked down the long street and looked at the houses "
        nosent = {}
        for mb in (1, 2, 4):
            t = (unit * (mb * MB // len(unit) + 1))[: mb * MB]
            nosent[mb] = write("nosent%d.txt" % mb, t[: t.rfind(" ")] + "\n")

        out = os.path.join(tmp, "out.jsonl")
        print("persona prompts (best of %d):" % a.repeat)
        for label, path in (("4 MB book, normal paragraphs", normal), ("4 MB book, one paragraph", single)):
            print("  %-40s %s" % (label, best_time([a.persona, "prompts", "--book", path] + who + ["--out", out], a.repeat)))
        for mb in (1, 2, 4):
            print("  %-40s %s" % ("%d MB paragraph, no sentence end" % mb,
                                       best_time([a.persona, "prompts", "--book", nosent[mb]] + who + ["--out", out], a.repeat)))

        text = open(pride, encoding="utf-8").read()
        start = text.find("Chapter I.]")
        novel = write("novel1.txt", text + text[start:][: MB - len(text.encode("utf-8"))])
        eliz = ["--character", "Elizabeth Bennet", "--alias", "Elizabeth", "--alias", "Lizzy"]
        print("persona build, no teacher (best of %d):" % a.repeat)
        for label, path in (("Pride and Prejudice (%.2f MB)" % (os.path.getsize(pride) / MB), pride),
                            ("a 1 MB novel (%.2f MB)" % (os.path.getsize(novel) / MB), novel)):
            d = os.path.join(tmp, "build")
            print("  %-40s %s" % (label, best_time([a.persona, "build", "--book", path] + eliz + ["--out", d], a.repeat)))


if __name__ == "__main__":
    main()
