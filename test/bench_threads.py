#!/usr/bin/env python3
"""bench_threads.py - does a second thread pay, and does it still pay on a busy machine?

    python3 test/bench_threads.py MODEL.bin [MODEL.bin ...] [--threads 1,2] [--repeats 5]

For each model, runs `run MODEL --bench` (decode after a short prompt, and a prefill)
with each thread count, first alone, then with a CPU hog beside it: a busy-loop process
pinned nowhere, as a laptop's other work would be. Prints the best of --repeats runs
(the least disturbed one) of each, or with --median their median (what a user gets
typically; beside a hog single runs scatter widely), and the ratio of N threads to 1 thread in each
condition. A thread count that collapses on a busy machine shows here as a ratio far
below 1 in the "hog" rows.

Nothing here asserts a speed: this is a measurement, not a test.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HOG = "while True: pass"


def bench(run, model, threads, prompt, n_gen, extra=()):
    cmd = [run, model, "--bench", "-t", str(threads), "--bench-prompt", str(prompt), "-n", str(n_gen)] + list(extra)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if proc.returncode != 0:
        raise SystemExit("bench_threads: %s failed: %s" % (" ".join(cmd), proc.stderr.strip()))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(args, model, thread_counts):
    """{threads: (decode tok/s, prefill tok/s)}, the best (or median) over the repeats; the
    thread counts take turns, so that a change of the machine's load spreads over all of
    them alike."""
    decode = {t: [] for t in thread_counts}
    prefill = {t: [] for t in thread_counts}
    extra = ["--no-pin"] if args.no_pin else []
    for _ in range(args.repeats):
        for t in thread_counts:
            decode[t].append(bench(args.run, model, t, args.decode_prompt, args.decode_tokens, extra)["decode_tok_s"])
            prefill[t].append(bench(args.run, model, t, args.prefill, 0, extra)["prefill_tok_s"])
    pick = statistics.median if args.median else max
    return {t: (pick(decode[t]), pick(prefill[t])) for t in thread_counts}


def main(argv=None):
    ap = argparse.ArgumentParser(description="1 vs N threads, with and without a CPU hog beside the run.")
    ap.add_argument("models", nargs="+", help="lucie model files")
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts (the first is the baseline)")
    ap.add_argument("--repeats", type=int, default=5, help="runs per figure (the best is kept)")
    ap.add_argument("--median", action="store_true", help="report the median of the runs instead of the best")
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--decode-prompt", type=int, default=16)
    ap.add_argument("--prefill", type=int, default=64, help="prefill prompt length")
    ap.add_argument("--no-pin", action="store_true", help="pass --no-pin to run: threads where the OS puts them")
    ap.add_argument("--hogs", type=int, default=1, help="busy-loop processes in the hog condition")
    ap.add_argument("--run", default=os.path.join(REPO, "run"), help="the run binary")
    args = ap.parse_args(argv)
    thread_counts = [int(t) for t in args.threads.split(",")]
    print("| model | condition | threads | decode tok/s | vs %d thread(s) | prefill %d tok/s | vs %d thread(s) |"
          % (thread_counts[0], args.prefill, thread_counts[0]))
    print("|---|---|---:|---:|---:|---:|---:|")
    if hasattr(os, "getloadavg"):
        print("load average before: %.2f %.2f %.2f" % os.getloadavg(), file=sys.stderr)
    for model in args.models:
        for condition in ("idle", "hog"):
            hogs = []
            if condition == "hog":
                hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
            try:
                results = measure(args, model, thread_counts)
                base = results[thread_counts[0]]
                for t in thread_counts:
                    d, p = results[t]
                    print("| %s | %s | %d | %.1f | %.2f | %.1f | %.2f |" % (
                        os.path.basename(model), condition if condition == "idle" else "%d hog(s)" % args.hogs,
                        t, d, d / base[0], p, p / base[1]), flush=True)
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()
    if hasattr(os, "getloadavg"):
        print("load average after: %.2f %.2f %.2f" % os.getloadavg(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
