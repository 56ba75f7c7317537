#!/usr/bin/env python3
"""The whole pipeline, offline, in one command (`make demo`):

  1. write a small random checkpoint in Hugging Face format, shaped like
     Lucie-7B but scaled down, with Lucie's real tokenizer and config
     (test/data/lucie/base);
  2. export it with export.py, exactly as you would export the real model;
  3. generate from it with ./run.

The weights are random, so the text is gibberish: the point is to see every
step work on a machine with no network. See the README for the real Lucie-7B.
"""
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LUCIE_BASE = os.path.join(REPO, "test", "data", "lucie", "base")


def step(msg):
    print("\n== " + msg, flush=True)


def main():
    work = tempfile.mkdtemp(prefix="lucie-demo-")
    hf_dir = os.path.join(work, "hf")
    model = os.path.join(work, "demo.bin")
    cmd = [sys.executable, os.path.join(REPO, "test", "make_checkpoint.py"), hf_dir,
           "--hidden", "256", "--ffn", "768", "--layers", "4", "--heads", "8", "--kv-heads", "2",
           "--dtype", "bf16", "--shards", "2",
           "--config", os.path.join(LUCIE_BASE, "config.json"), "--tokenizer-dir", LUCIE_BASE,
           "--generation-config", os.path.join(LUCIE_BASE, "generation_config.json")]
    step("1/3 random Lucie-shaped checkpoint (hidden 256, 4 layers, GQA 8/2) with Lucie's real tokenizer")
    subprocess.run(cmd, check=True)
    step("2/3 export.py %s -> %s" % (hf_dir, model))
    subprocess.run([sys.executable, os.path.join(REPO, "export.py"), hf_dir, model], check=True)
    step("3/3 ./run demo.bin -p 'La capitale de la France est' -n 40 --temp 0")
    print("(random weights: expect gibberish, not French)", flush=True)
    subprocess.run([os.path.join(REPO, "run"), model, "-p", "La capitale de la France est", "-n", "40",
                    "--temp", "0"], check=True)
    print("\nAll steps worked. Files are in %s (delete at will)." % work)


if __name__ == "__main__":
    main()
