#!/usr/bin/env python3
"""bench/lookup.py - what run --lookup N buys: decode speed with and without it.

    python3 bench/lookup.py MODEL.bin [--lookup 8] [--runs 5] [-n 300] [-t 1] [--prompt-file F]
        [-- extra run options, e.g. --temp 0.8 --seed 3]

Runs ./run alternately without and with --lookup (so a busy machine slows both alike),
prints each run's generated tokens/s and the lookup statistics (drafted, accepted,
forward passes, tokens per pass; they do not vary between runs), then the medians and
their ratio. The output text must be the same with and without lookup: it is checked.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(REPO, "run")


def one_run(model, args, lookup):
    proc = subprocess.run([RUN, model] + args + ["--lookup", str(lookup)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        sys.exit("run failed: " + err.strip())
    speed = float(re.search(r"generated: \d+ tokens, ([\d.]+) tok/s", err).group(1))
    stats = re.search(r"lookup: .*", err)
    return proc.stdout, speed, stats.group(0) if stats else ""


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--lookup", type=int, default=8)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("-n", type=int, default=300)
    p.add_argument("-t", type=int, default=1)
    p.add_argument("--prompt-file", default=os.path.join(REPO, "test", "data", "story.txt"))
    a = p.parse_args(argv)
    args = ["-f", a.prompt_file, "-n", str(a.n), "-t", str(a.t)] + (extra or ["--temp", "0"])
    speeds = {0: [], a.lookup: []}
    texts = set()
    for _ in range(a.runs):
        for lookup in (0, a.lookup):
            text, speed, stats = one_run(a.model, args, lookup)
            texts.add(text)
            speeds[lookup].append(speed)
            print("lookup %2d: %8.2f tok/s  %s" % (lookup, speed, stats))
    if len(texts) != 1:
        sys.exit("the output changed with --lookup")
    plain, spec = statistics.median(speeds[0]), statistics.median(speeds[a.lookup])
    print("median: %.2f tok/s without, %.2f with --lookup %d: x%.3f" % (plain, spec, a.lookup, spec / plain))


if __name__ == "__main__":
    main()
