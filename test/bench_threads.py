#!/usr/bin/env python3
"""bench_threads.py - does a second thread pay, and does it still pay on a busy machine?

    python3 test/bench_threads.py MODEL.bin [MODEL.bin ...] [--threads 1,2] [--repeats 5]
    python3 test/bench_threads.py q4.bin --gguf Q4_0.gguf --prefill 128 --median   # beside llama.cpp

For each model, runs `run MODEL --bench` (decode after a short prompt, and a prefill)
with each thread count, first alone, then with a CPU hog beside it: a busy-loop process
pinned nowhere, as a laptop's other work would be. Prints the best of --repeats runs
(the least disturbed one) of each, or with --median their median (what a user gets
typically; beside a hog single runs scatter widely), and the ratio of N threads to 1 thread in each
condition. A thread count that collapses on a busy machine shows here as a ratio far
below 1 in the "hog" rows. --no-pin passes --no-pin to run (threads where the OS puts them).

With --gguf (one lucie model, the same weights as GGUF), llama.cpp's llama-bench runs in
the same rounds, right after lucie.c at each thread count (`llama-bench -p PREFILL -n
DECODE_TOKENS -t T -r 1`), and the last lines say what the hog cost each engine at the
largest thread count: 1 - (beside the hog) / (idle).

Nothing here asserts a speed: this is a measurement, not a test.
"""

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import find_llama_bench  # noqa: E402  (test/bench.py: the same llama-bench lookup)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HOG = "while True: pass"


def bench(run, model, threads, prompt, n_gen, extra=()):
    cmd = [run, model, "--bench", "-t", str(threads), "--bench-prompt", str(prompt), "-n", str(n_gen)] + list(extra)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if proc.returncode != 0:
        raise SystemExit("bench_threads: %s failed: %s" % (" ".join(cmd), proc.stderr.strip()))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def lucie_run(args, model, threads):
    """(decode tok/s, prefill tok/s) of one pair of lucie.c runs."""
    extra = ["--no-pin"] if args.no_pin else []
    decode = bench(args.run, model, threads, args.decode_prompt, args.decode_tokens, extra)["decode_tok_s"]
    prefill = bench(args.run, model, threads, args.prefill, 0, extra)["prefill_tok_s"]
    return decode, prefill


def llama_run(args, threads):
    """(decode tok/s, prefill tok/s) of one llama-bench run (its own warm-up first)."""
    cmd = [args.llama_bench, "-m", args.gguf, "-p", str(args.prefill), "-n", str(args.decode_tokens),
           "-t", str(threads), "-r", "1", "-o", "csv"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if proc.returncode != 0:
        raise SystemExit("bench_threads: %s failed: %s" % (" ".join(cmd), proc.stderr.strip()[-500:]))
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    speed = {}
    for row in rows:
        kind = "prefill" if int(row["n_prompt"]) > 0 else "decode"
        speed[kind] = float(row["avg_ts"])
    if set(speed) != {"prefill", "decode"}:
        raise SystemExit("bench_threads: llama-bench printed no prefill and decode rows: %s" % proc.stdout[-500:])
    return speed["decode"], speed["prefill"]


def measure(args, model, thread_counts):
    """{(engine, threads): (decode tok/s, prefill tok/s)}, the best (or median) over the
    repeats; engines and thread counts take turns, so that a change of the machine's load
    spreads over all of them alike."""
    engines = ["lucie.c"] + (["llama.cpp"] if args.gguf else [])
    runs = {(e, t): [] for e in engines for t in thread_counts}
    for _ in range(args.repeats):
        for t in thread_counts:
            runs[("lucie.c", t)].append(lucie_run(args, model, t))
            if args.gguf:
                runs[("llama.cpp", t)].append(llama_run(args, t))
    pick = statistics.median if args.median else max
    return {key: (pick(r[0] for r in rs), pick(r[1] for r in rs)) for key, rs in runs.items()}


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
    ap.add_argument("--gguf", help="the same weights as GGUF: llama.cpp runs in the same rounds")
    ap.add_argument("--llama-bench", help="llama-bench (default: $LLAMA_BENCH, PATH, or the one test/bench.py "
                    "--setup-llama-cpp built in $LUCIE_BENCH_DIR or ~/.cache/lucie-bench)")
    args = ap.parse_args(argv)
    thread_counts = [int(t) for t in args.threads.split(",")]
    if args.gguf:
        if len(args.models) != 1:
            ap.error("--gguf goes with exactly one lucie model")
        if not os.path.isfile(args.gguf):
            ap.error("--gguf %s: no such file" % args.gguf)
        cache = os.environ.get("LUCIE_BENCH_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "lucie-bench")
        args.llama_bench = find_llama_bench(cache, args.llama_bench)
        if not args.llama_bench:
            ap.error("--gguf needs llama-bench: --llama-bench PATH, or python3 test/bench.py --setup-llama-cpp")
        for path in args.models + [args.gguf]:  # page both engines' files in before timing
            with open(path, "rb") as f:
                while f.read(1 << 24):
                    pass
    print("| model | engine | condition | threads | decode tok/s | vs %d thread(s) | prefill %d tok/s | vs %d thread(s) |"
          % (thread_counts[0], args.prefill, thread_counts[0]))
    print("|---|---|---|---:|---:|---:|---:|---:|")
    if hasattr(os, "getloadavg"):
        print("load average before: %.2f %.2f %.2f" % os.getloadavg(), file=sys.stderr)
    for model in args.models:
        by_condition = {}
        for condition in ("idle", "hog"):
            hogs = []
            if condition == "hog":
                hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
            try:
                results = by_condition[condition] = measure(args, model, thread_counts)
                for engine in sorted({e for e, _ in results}, key=lambda e: e != "lucie.c"):
                    base = results[(engine, thread_counts[0])]
                    for t in thread_counts:
                        d, p = results[(engine, t)]
                        print("| %s | %s | %s | %d | %.2f | %.2f | %.2f | %.2f |" % (
                            os.path.basename(model), engine, condition if condition == "idle" else "%d hog(s)" % args.hogs,
                            t, d, d / base[0], p, p / base[1]), flush=True)
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()
        top = thread_counts[-1]
        for engine in sorted({e for e, _ in by_condition["idle"]}, key=lambda e: e != "lucie.c"):
            idle, hog = by_condition["idle"][(engine, top)], by_condition["hog"][(engine, top)]
            print("%s, %s, %d threads: the hog cost prefill %.0f%%, decode %.0f%%" % (
                os.path.basename(model), engine, top, 100 * (1 - hog[1] / idle[1]), 100 * (1 - hog[0] / idle[0])))
    if hasattr(os, "getloadavg"):
        print("load average after: %.2f %.2f %.2f" % os.getloadavg(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
