#!/usr/bin/env python3
"""bench.py - speed of lucie.c at the real Lucie-7B shapes, next to llama.cpp.

    python3 test/bench.py                      # the full benchmark (make bench)
    python3 test/bench.py --quick --small      # a one-minute smoke run on a scaled-down model
    python3 test/bench.py --setup-llama-cpp    # build llama-bench once, for the comparison

What it does, in one run:
  1. creates once, and caches outside the repository, a random Hugging Face checkpoint with
     the exact shapes of test/data/lucie/base/config.json (bf16 safetensors in 4 shards, the
     real tokenizer files), using test/make_checkpoint.py: speed does not depend on values;
  2. exports it with export.py to each format (bf16, q8, q4), timing the export;
  3. measures this machine's memory read bandwidth (test/bandwidth.c) with the same thread
     count, and from it the decode roofline: bandwidth / bytes of weights read per token,
     counted exactly from the exported file's entry table; and brackets every decode run (ours
     and llama.cpp's) with two short probes, whose roofline each decode is also held against
     (a shared VM's bandwidth moves within a run: NearbyBandwidth);
  4. runs `run MODEL --bench` for each format, load mode and thread count: decode tok/s over
     64 tokens after a short prompt, prefill tok/s for 64- and 512-token prompts, load time,
     peak RSS (from wait4), repeated (default 3 times): medians, with the spread;
  5. measures the compute peak (test/peak.c: int8 and f32 FMA, same thread count) and prints
     each prefill rate as % of it (weight-matrix MACs per token from the entry table), and
     the time to first token of a 4000-token prompt (inside the 4096-token prefill's run);
  6. decodes at depths 0 / 4096 / 16384 for each KV cache type (f32, f16, q8), from session
     files synthesised by repeating the rows of a short real prompt's saved session, with the
     roofline counting weights + KV bytes read per token; depths past the base config's 4096
     positions use a twin checkpoint (symlinks, Lucie-7B-Instruct's positions and rope_theta);
  7. decodes B = 1, 2, 4, 8 sequences together (`run --bench --bench-batch B`, lucie_eval_batch)
     and as B separate processes;
  8. when llama.cpp's llama-bench is available, writes the same weights as GGUF (BF16, Q8_0,
     Q4_0) with the `gguf` package and measures llama.cpp the same way, at depth 4096
     (`llama-bench -d`) and batched (llama-batched-bench);
  9. prints the tables and writes them as markdown (--out, default bench/results.md), each
     figure with the load average of its runs (the machine may be shared).

Cache layout ($LUCIE_BENCH_DIR, default ~/.cache/lucie-bench):
  checkpoints/KEY/     the random HF checkpoint (KEY names the shape, e.g. lucie-7b)
  models/KEY/FMT.bin   exported lucie files, FMT.json beside each: export time, export.py hash
  gguf/KEY/TYPE.gguf   the same weights for llama.cpp
  bin/bandwidth        test/bandwidth.c compiled with -O3 -march=native -fopenmp
  bin/peak             test/peak.c compiled the same way
  work/                session files of the depth runs (deleted after each)
  llama.cpp-src/, llama.cpp-build/bin/llama-bench, llama-batched-bench   from --setup-llama-cpp
Model files are deleted after they are measured (peak disk at 7B: the 13.4 GB checkpoint,
one export and one GGUF, about 41 GB), unless --keep keeps them for the next run. A kept
export is reused while export.py is unchanged (the export time shown is then the one
recorded when it was made); a GGUF found in the cache is always reused.

Nothing here asserts a speed: this is a measurement, not a test.
"""

import argparse
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LUCIE_BASE = os.path.join(REPO, "test", "data", "lucie", "base")
LUCIE_INSTRUCT = os.path.join(REPO, "test", "data", "lucie", "instruct")

FORMATS = ("bf16", "q8", "q4")
LOAD_MODES = ("mmap", "madvise", "read")
# The llama.cpp type each of our formats is compared with.
GGUF_TYPE = {"bf16": "BF16", "q8": "Q8_0", "q4": "Q4_0"}
# A scaled-down model for smoke runs (--small): real vocabulary and tokenizer, small matrices.
SMALL_SHAPE = {"hidden": 512, "ffn": 1536, "layers": 4, "heads": 8, "kv-heads": 2}
# What --setup-llama-cpp builds: single-sequence prefill/decode, and batched decode.
LLAMA_CPP_TARGETS = ("llama-bench", "llama-batched-bench")
GGUF_WRITER_VERSION = 1  # bump when write_gguf() changes what it writes
SUBPROCESS_TIMEOUT = 3600


def log(msg):
    print("[bench] " + msg, file=sys.stderr, flush=True)


def file_sha1(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# Running a program and measuring its peak RSS. On Linux a child's ru_maxrss starts at
# the RSS of the process that forked it (the kernel carries the old address space's high
# water mark across exec, and with vfork that is the parent's own peak). This script grows
# to gigabytes while it writes GGUF files, so commands are started by a small launcher
# process, made at start-up while everything is still small: the floor it leaves in the
# numbers is its own RSS (about 10 MB), which is printed with the table.
# ---------------------------------------------------------------------------

LAUNCHER = r"""
import json, os, subprocess, sys, threading, time
for line in sys.stdin:
    req = json.loads(line)
    with open(req["stdout"], "wb") as out, open(req["stderr"], "wb") as err:
        start = time.monotonic()
        proc = subprocess.Popen(req["cmd"], stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        timer = threading.Timer(req["timeout"], proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    with open("/proc/self/status") as f:
        own = [int(l.split()[1]) for l in f if l.startswith("VmHWM:")]
    print(json.dumps({"returncode": proc.returncode, "seconds": time.monotonic() - start,
                      "maxrss": usage.ru_maxrss, "launcher_kb": own[0] if own else 0}), flush=True)
"""


class Measured:
    def __init__(self, returncode, stdout, stderr, seconds, peak_rss_bytes):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        self.seconds, self.peak_rss_bytes = seconds, peak_rss_bytes

    def last_error_line(self):
        lines = [l for l in self.stderr.splitlines() if l.strip()]
        return lines[-1].strip() if lines else "exit code %d" % self.returncode


class Launcher:
    """Runs commands from the small helper process (see above), one at a time."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-S", "-c", LAUNCHER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.baseline_bytes = 0

    def run(self, cmd, timeout=SUBPROCESS_TIMEOUT):
        with tempfile.NamedTemporaryFile() as out, tempfile.NamedTemporaryFile() as err:
            request = {"cmd": [str(c) for c in cmd], "stdout": out.name, "stderr": err.name,
                       "timeout": timeout}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
            if not reply:
                raise RuntimeError("the launcher process died")
            reply = json.loads(reply)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
        self.baseline_bytes = max(self.baseline_bytes, 1024 * reply["launcher_kb"])
        # ru_maxrss is in kilobytes on Linux (bytes on macOS)
        rss = reply["maxrss"] * (1 if sys.platform == "darwin" else 1024)
        return Measured(reply["returncode"], stdout, stderr, reply["seconds"], rss)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


# ---------------------------------------------------------------------------
# The lucie file: bytes of weights read per decoded token, from the entry table
# (layout in lucie.h: 256-byte header, then 128-byte entries).
# ---------------------------------------------------------------------------

def lucie_entries(path):
    """(entries, tied) from a lucie file's header and entry table. The sizes and magic come
    from export.py; the header offsets are those of the table in lucie.h. The invariants
    checked here make a misread table fail loudly instead of giving a wrong roofline."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    import export  # the Python writer of the format: its constants, not a second copy
    with open(path, "rb") as f:
        header = f.read(256)
        if len(header) < 256 or header[:8] != export.MAGIC:
            raise ValueError("%s is not a lucie model file" % path)
        header_size, = struct.unpack_from("<I", header, 12)
        file_size, = struct.unpack_from("<Q", header, 16)
        n_entries, = struct.unpack_from("<I", header, 24)
        tied, = struct.unpack_from("<I", header, 76)
        f.seek(header_size)
        table = f.read(export.ENTRY_SIZE * n_entries)
    if file_size != os.path.getsize(path) or len(table) != export.ENTRY_SIZE * n_entries:
        raise ValueError("%s: header does not match the file (truncated?)" % path)
    entries = []
    for i in range(n_entries):
        e = table[export.ENTRY_SIZE * i:export.ENTRY_SIZE * (i + 1)]
        name = e[:export.NAME_SIZE].split(b"\0", 1)[0].decode("utf-8")
        dtype, rows, cols = struct.unpack_from("<III", e, export.NAME_SIZE)
        offset, size = struct.unpack_from("<QQ", e, export.NAME_SIZE + 16)
        if offset % export.ALIGN or offset + size > file_size:
            raise ValueError("%s: entry %s lies outside the file" % (path, name))
        entries.append({"name": name, "dtype": dtype, "rows": rows, "cols": cols, "size": size})
    return entries, bool(tied)


def lucie_bytes_per_token(path):
    """Every tensor is read once per decoded token, except the embedding table, of which
    only one row is read (unless it is tied: then lm_head reads all of it)."""
    entries, tied = lucie_entries(path)
    total = 0
    for e in entries:
        if e["dtype"] == 0:  # LUCIE_DT_BYTES: an untyped section (tokenizer, chat template)
            continue
        if e["name"] == "model.embed_tokens.weight" and not tied:
            total += e["size"] // max(e["rows"], 1)
        else:
            total += e["size"]
    return total


def gguf_bytes_per_token(path):
    import gguf
    reader = gguf.GGUFReader(path)
    names = {t.name for t in reader.tensors}
    total = 0
    for t in reader.tensors:
        if t.name == "token_embd.weight" and "output.weight" in names:
            rows = int(t.shape[-1]) if len(t.shape) > 1 else 1  # ggml shapes are [cols, rows]
            total += int(t.n_bytes) // max(rows, 1)
        else:
            total += int(t.n_bytes)
    return total


# ---------------------------------------------------------------------------
# The arithmetic behind the ratios: compute per token, KV cache bytes per token,
# rooflines. Pure functions (test/test_bench.py checks them against the shapes
# and against the files the library writes).
# ---------------------------------------------------------------------------

# lucie.h's session options: the KV cache types `run --kv` names, in enum order.
KV_TYPES = ("f32", "f16", "q8")
KV_Q8_GROUP = 32  # lucie.h: q8 rows are groups of 32 values, an f32 scale each


def lucie_shape(path):
    """The header fields the KV arithmetic needs (offsets of lucie.h's FILE FORMAT table)."""
    with open(path, "rb") as f:
        header = f.read(64)
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab, max_seq = struct.unpack_from("<8I", header, 32)
    return {"dim": dim, "hidden_dim": hidden_dim, "n_layers": n_layers, "n_heads": n_heads,
            "n_kv_heads": n_kv_heads, "head_dim": head_dim, "vocab_size": vocab, "max_seq_len": max_seq}


def lucie_macs_per_token(path):
    """Multiply-accumulates of the weight matrices for one token: the element count of every
    2-D tensor that multiplies the activations (rows x cols as the entry table records them).
    The embedding table is a row lookup, not a product, unless it is tied (then it is the
    output matrix too). Attention (scores and the weighted sum of values) is not included:
    attention_macs_per_token() counts it."""
    entries, tied = lucie_entries(path)
    total = 0
    for e in entries:
        if e["dtype"] == 0 or e["rows"] <= 1:  # byte sections; norm vectors (rows = 1)
            continue
        if e["name"] == "model.embed_tokens.weight" and not tied:
            continue
        total += e["rows"] * e["cols"]
    return total


def attention_macs_per_token(shape, prompt):
    """Mean attention MACs per token of a causal prefill of `prompt` tokens from an empty
    cache: token i scores i + 1 keys and sums as many values, per head and head dimension."""
    mean_keys = (prompt + 1) / 2
    return shape["n_layers"] * shape["n_heads"] * shape["head_dim"] * 2 * mean_keys


def percent_of_peak(tokens_per_s, macs_per_token, peak_gmacs):
    return 100.0 * tokens_per_s * macs_per_token / (peak_gmacs * 1e9)


def kv_row_bytes(kv_type, head_dim):
    """Bytes of one cached key (or value) row, one KV head's head_dim values, as lucie.h
    defines each type: f32 4 bytes a value, f16 2, q8 one code byte a value plus an f32
    scale per group of 32."""
    if kv_type == "f32":
        return 4 * head_dim
    if kv_type == "f16":
        return 2 * head_dim
    if kv_type == "q8":
        return head_dim + 4 * -(-head_dim // KV_Q8_GROUP)
    raise ValueError("unknown KV cache type %r" % kv_type)


def kv_bytes_per_token(shape, kv_type, depth):
    """KV cache bytes one decode step reads at `depth` cached positions: every layer's key
    and value rows (depth x layers x 2 x n_kv_heads rows)."""
    return depth * shape["n_layers"] * 2 * shape["n_kv_heads"] * kv_row_bytes(kv_type, shape["head_dim"])


def mean_decode_depth(depth, prompt, n_gen):
    """Mean positions a timed decode step attends to: after `depth` cached tokens and a
    `prompt`, step i (0-based) adds one row and reads depth + prompt + i + 1."""
    return depth + prompt + (n_gen + 1) / 2


def roofline_tokens_per_s(bandwidth_gbs, weight_bytes, kv_bytes=0):
    """Decode is bound by reading the weights (and the KV cache) once per token."""
    return bandwidth_gbs * 1e9 / (weight_bytes + kv_bytes)


# ---------------------------------------------------------------------------
# The compute peak (test/peak.c, compiled once into the cache like test/bandwidth.c).
# ---------------------------------------------------------------------------

def build_peak(cache):
    src = os.path.join(REPO, "test", "peak.c")
    exe = os.path.join(cache, "bin", "peak")
    newest = max(os.path.getmtime(p) for p in (src, os.path.join(REPO, "lucie.c")))
    if os.path.exists(exe) and os.path.getmtime(exe) >= newest:
        return exe
    os.makedirs(os.path.dirname(exe), exist_ok=True)
    cc = os.environ.get("CC", "cc")
    for extra in (["-march=native", "-pthread", "-fopenmp"], ["-march=native", "-pthread"]):
        r = subprocess.run([cc, "-std=c99", "-O3"] + extra + [src, "-o", exe, "-lm"], capture_output=True, text=True)
        if r.returncode == 0:
            return exe
    raise RuntimeError("cannot compile test/peak.c: " + r.stderr.strip().splitlines()[-1])


def measure_peak(exe, threads, repeats=5):
    """int8 and f32 FMA GMAC/s at `threads` threads: the best of `repeats` (peak.c's own rule)."""
    r = subprocess.run([exe, "-t", str(threads), "-r", str(repeats), "--json"], capture_output=True, text=True,
                       timeout=SUBPROCESS_TIMEOUT)
    if r.returncode != 0:
        raise RuntimeError("peak: " + (r.stderr.strip() or "exit %d" % r.returncode))
    for line in r.stdout.splitlines():
        rec = json.loads(line)
        if rec.get("probe") == "peak" and rec.get("threads") == threads:
            return {"int8_gmacs": rec["int8_gmacs"], "f32_gmacs": rec["f32_gmacs"]}
    raise RuntimeError("peak printed no figure for %d thread(s)" % threads)


# The peak each format's prefill is held against: the quantized kernels multiply int8
# codes; bf16 weights are widened to f32 and multiplied with FMA.
PEAK_OF_FORMAT = {"q8": "int8_gmacs", "q4": "int8_gmacs", "bf16": "f32_gmacs"}


# ---------------------------------------------------------------------------
# Long contexts without a second checkpoint, and KV caches without prefilling them.
# ---------------------------------------------------------------------------

# config.json fields a long-context twin takes from --long-config: the only ones in which
# Lucie-7B-Instruct's config differs from the base model's that change what export.py
# writes for the same weights (head_dim, pad and eos ids differ too but are the same
# shapes or do not matter to speed).
LONG_CONTEXT_FIELDS = ("max_position_embeddings", "rope_theta")


def long_context_checkpoint(cache, key, ckpt, long_config_path):
    """A twin of ckpt allowing long contexts: symlinks to its weights and tokenizer, and its
    config.json with LONG_CONTEXT_FIELDS from long_config_path (32000 positions, theta 2e7
    for Lucie-7B-Instruct). Neither field changes the work per token."""
    with open(long_config_path) as f:
        long_config = json.load(f)
    with open(os.path.join(ckpt, "config.json")) as f:
        config = json.load(f)
    for field in LONG_CONTEXT_FIELDS:
        config[field] = long_config[field]
    out = os.path.join(cache, "checkpoints", key + "-long")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(ckpt):
        link = os.path.join(out, name)
        if name in ("config.json", "bench-created.json") or os.path.lexists(link):
            continue
        os.symlink(os.path.join(os.path.abspath(ckpt), name), link)
    path = os.path.join(out, "config.json")
    old = None
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
    if old != config:
        with open(path, "w") as f:
            json.dump(config, f, indent=2)
    return out, key + "-long", config


SESSION_MAGIC = b"LUCIESES"
SESSION_VERSION = 3
SESSION_HEADER = 48
SESSION_POS_OFFSET = 20


def tile_session(seed_path, out_path, depth):
    """Writes a session file holding `depth` cached tokens by repeating the rows of a real
    one (seed_path, saved by the library after a short prompt) over and over: the same
    model fingerprint, KV type and row layout, finite values of the right type, at a
    fraction of the cost of prefilling `depth` tokens (decode speed does not depend on the
    values). Layout (lucie.c, section 6): a 48-byte header whose u32 at offset 20 is the
    token count and at 44 n_kv_heads, the token ids (i32), then per layer, for each KV head
    its key rows, then for each KV head its value rows (rows in position order)."""
    size = os.path.getsize(seed_path)
    with open(seed_path, "rb") as f:
        header = bytearray(f.read(SESSION_HEADER))
        if header[:8] != SESSION_MAGIC or struct.unpack_from("<I", header, 8)[0] != SESSION_VERSION:
            raise ValueError("%s is not a version-%d session file" % (seed_path, SESSION_VERSION))
        n_layers, pos = struct.unpack_from("<I", header, 16)[0], struct.unpack_from("<I", header, SESSION_POS_OFFSET)[0]
        n_blocks = 2 * n_layers * struct.unpack_from("<I", header, 44)[0]  # (layer, keys or values, KV head)
        row_block = size - SESSION_HEADER - 4 * pos
        if pos == 0 or n_blocks == 0 or row_block % (n_blocks * pos):
            raise ValueError("%s: %d tokens do not divide its cache" % (seed_path, pos))
        rows_bytes = row_block // n_blocks  # one KV head's keys (or values) in one layer
        ids = f.read(4 * pos)
        struct.pack_into("<I", header, SESSION_POS_OFFSET, depth)
        whole, part = divmod(depth, pos)
        tmp = out_path + ".tmp"
        with open(tmp, "wb") as out:
            out.write(header)
            out.write(ids * whole + ids[:4 * part])
            row = rows_bytes // pos
            for _ in range(n_blocks):
                block = f.read(rows_bytes)
                out.write(block * whole + block[:row * part])
    os.replace(tmp, out_path)
    return out_path


# ---------------------------------------------------------------------------
# Memory bandwidth (test/bandwidth.c, compiled once into the cache).
# ---------------------------------------------------------------------------

def build_bandwidth(cache):
    src = os.path.join(REPO, "test", "bandwidth.c")
    exe = os.path.join(cache, "bin", "bandwidth")
    if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(src):
        return exe
    os.makedirs(os.path.dirname(exe), exist_ok=True)
    cc = os.environ.get("CC", "cc")
    base = [cc, "-std=c99", "-O3"]
    # the best build this compiler can do, falling back when a flag is not supported
    for extra in (["-march=native", "-fopenmp"], ["-fopenmp"], ["-march=native"], []):
        r = subprocess.run(base + extra + [src, "-o", exe], capture_output=True, text=True)
        if r.returncode == 0:
            if "-fopenmp" not in extra:
                log("bandwidth built without OpenMP: only 1 thread can be measured")
            return exe
    raise RuntimeError("cannot compile test/bandwidth.c: " + r.stderr.strip().splitlines()[-1])


# The probe's variants: page size x software prefetch. The roofline takes the
# best of them, since decoding may use whichever the machine rewards.
BANDWIDTH_VARIANTS = (("4 KB pages", False, False), ("huge pages", True, False),
                      ("4 KB pages + prefetch", False, True), ("huge pages + prefetch", True, True))


def measure_bandwidth(exe, threads, megabytes, repeats, huge, prefetch=False):
    cmd = [exe, "-t", str(threads), "-m", str(megabytes), "-r", str(repeats), "--json"]
    if huge:
        cmd.append("--huge")
    if prefetch:
        cmd.append("--prefetch")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    if r.returncode != 0:
        raise RuntimeError("bandwidth: " + (r.stderr.strip() or "exit %d" % r.returncode))
    return json.loads(r.stdout)


# A short probe around each decode run. This VM's read bandwidth has moved by almost half
# within one run (37.7 GB/s at its start, 65.3 at its end), so a decode figure held only
# against the run's best probe says as much about the neighbours as about the code. Each
# decode run is bracketed by a short probe (1 GB, 3 passes, 4 KB and huge pages), and its %
# of roofline is also given against the better of the two probes around it.
NEARBY_PROBE_MB, NEARBY_PROBE_PASSES = 1024, 3


class NearbyBandwidth:
    def __init__(self, exe):
        self.exe = exe

    def probe(self, threads):
        return max(measure_bandwidth(self.exe, threads, NEARBY_PROBE_MB, NEARBY_PROBE_PASSES, huge)["best_gbs"]
                   for huge in (False, True))

    def around(self, threads, measure):
        """measure()'s result and the better of the probes just before and just after it."""
        before = self.probe(threads)
        result = measure()
        return result, max(before, self.probe(threads))


def run_probed(launcher, nearby, threads, cmd):
    """launcher.run(cmd), and the bandwidth probed around it (None without a NearbyBandwidth)."""
    if nearby is None:
        return launcher.run(cmd), None
    return nearby.around(threads, lambda: launcher.run(cmd))


def probed_per_run(nearby_gbs, n_runs):
    """The probes around one process that timed n_runs runs, as one value per run ([] if unprobed)."""
    return [] if nearby_gbs is None else [nearby_gbs] * n_runs


def percent_of_nearby_roofline(decode, nearby_gbs, bytes_per_token):
    """The median over a figure's runs of each run's tok/s against the roofline of the bandwidth
    probed around that run; None without probes."""
    if not decode or len(nearby_gbs) != len(decode):
        return None
    return statistics.median(100 * v / roofline_tokens_per_s(g, bytes_per_token) for v, g in zip(decode, nearby_gbs))


# ---------------------------------------------------------------------------
# The random checkpoint and its exports.
# ---------------------------------------------------------------------------

def checkpoint_key(config, small):
    """The cache name of a checkpoint: it changes whenever the shapes do."""
    if config.get("hidden_size") == 4096 and config.get("num_hidden_layers") == 32 \
            and config.get("vocab_size") == 65024:
        return "lucie-small" if small else "lucie-7b"
    shape = json.dumps(config, sort_keys=True).encode()
    return "custom-" + hashlib.sha1(shape).hexdigest()[:10] + ("-small" if small else "")


def ensure_checkpoint(launcher, cache, key, config_path, small, shards):
    out = os.path.join(cache, "checkpoints", key)
    marker = os.path.join(out, "bench-created.json")
    if os.path.exists(marker):
        with open(marker) as f:
            return out, json.load(f)
    if os.path.exists(out):
        shutil.rmtree(out)  # an interrupted creation
    tokenizer_dir = os.path.dirname(os.path.abspath(config_path))
    if not os.path.exists(os.path.join(tokenizer_dir, "tokenizer.json")):
        tokenizer_dir = LUCIE_BASE
    cmd = [sys.executable, os.path.join(REPO, "test", "make_checkpoint.py"), "--config", config_path,
           "--dtype", "bf16", "--shards", str(shards), "--tokenizer-dir", tokenizer_dir]
    gen = os.path.join(tokenizer_dir, "generation_config.json")
    if os.path.exists(gen):
        cmd += ["--generation-config", gen]
    if small:
        for flag, value in SMALL_SHAPE.items():
            cmd += ["--" + flag, str(value)]
    cmd.append(out)
    if not small and importlib.util.find_spec("numpy") is None:
        log("numpy is not importable by %s: make_checkpoint.py falls back to the standard library, which "
            "takes hours at 7B (numpy: minutes); `make bench` runs with the test environment's Python, "
            "which has it" % sys.executable)
    log("creating the random checkpoint %s (once; cached)" % out)
    m = launcher.run(cmd)
    if m.returncode != 0:
        shutil.rmtree(out, ignore_errors=True)
        raise RuntimeError("make_checkpoint.py failed: " + m.last_error_line())
    info = {"seconds": round(m.seconds, 1), "created": datetime.datetime.now().isoformat(timespec="seconds"),
            "bytes": sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))}
    with open(marker, "w") as f:
        json.dump(info, f)
    log("checkpoint created in %.0f s (%.1f GB)" % (m.seconds, info["bytes"] / 1e9))
    return out, info


def ensure_export(launcher, cache, key, ckpt, fmt, reuse):
    """Returns (path, info) where info has export seconds and peak RSS, or raises."""
    out_dir = os.path.join(cache, "models", key)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, fmt + ".bin")
    meta = os.path.join(out_dir, fmt + ".json")
    exporter = os.path.join(REPO, "export.py")
    exporter_hash = file_sha1(exporter)
    if reuse and os.path.exists(path) and os.path.exists(meta):
        with open(meta) as f:
            info = json.load(f)
        if info.get("export_py_sha1") == exporter_hash:
            info["reused"] = True
            return path, info
    for p in (path, meta):
        if os.path.exists(p):
            os.remove(p)
    log("exporting %s" % fmt)
    m = launcher.run([sys.executable, exporter, ckpt, path, "--dtype", fmt, "--quiet"])
    if m.returncode != 0:
        if os.path.exists(path):
            os.remove(path)
        raise RuntimeError("export.py --dtype %s failed: %s" % (fmt, m.last_error_line()))
    info = {"seconds": round(m.seconds, 2), "peak_rss_bytes": m.peak_rss_bytes,
            "export_py_sha1": exporter_hash, "reused": False}
    with open(meta, "w") as f:
        json.dump(info, f)
    log("exported %s in %.1f s (%.2f GB)" % (fmt, m.seconds, os.path.getsize(path) / 1e9))
    return path, info


def remove_quietly(*paths):
    for p in paths:
        if os.path.exists(p):
            os.remove(p)


# ---------------------------------------------------------------------------
# Our decoder: `run MODEL --bench` prints one JSON line.
# ---------------------------------------------------------------------------

class Runner:
    def __init__(self, launcher, exe, nearby=None):
        self.launcher, self.exe, self.nearby = launcher, exe, nearby
        help_text = subprocess.run([exe, "--help"], capture_output=True, text=True)
        text = help_text.stdout + help_text.stderr
        self.has_load = "--load" in text
        self.has_no_mmap = "--no-mmap" in text

    def load_args(self, mode):
        """The command-line flags for a load mode, or None when this run cannot do it."""
        if self.has_load:
            return ["--load", mode]
        if mode == "mmap":
            return []
        if mode == "read" and self.has_no_mmap:
            return ["--no-mmap"]
        return None

    def bench(self, model, threads, prompt, n_gen, load_args, extra=(), probe_around=False):
        """One `run --bench`: its JSON line, with the peak RSS and the load average after it (and with
        probe_around, nearby_gbs: the bandwidth probed around it, see NearbyBandwidth)."""
        cmd = [self.exe, model, "--bench", "-t", str(threads), "--bench-prompt", str(prompt),
               "-n", str(n_gen)] + list(load_args) + list(extra)
        m, nearby_gbs = run_probed(self.launcher, self.nearby if probe_around else None, threads, cmd)
        if m.returncode != 0:
            raise RuntimeError("run --bench failed: " + m.last_error_line())
        lines = [l for l in m.stdout.splitlines() if l.strip().startswith("{")]
        if not lines:
            raise RuntimeError("run --bench printed no JSON line")
        result = json.loads(lines[-1])
        result["peak_rss_bytes"] = m.peak_rss_bytes
        result["load_avg"] = load_average()
        if nearby_gbs is not None:
            result["nearby_gbs"] = nearby_gbs
        return result

    def save_session(self, model, threads, kv, path, prompt_text):
        """The session of prompt_text (KV type kv) saved by the library, via --prompt-cache."""
        remove_quietly(path)
        m = self.launcher.run([self.exe, model, "-p", prompt_text, "-n", "1", "--temp", "0", "--kv", kv,
                               "--prompt-cache", path, "-c", "512", "-t", str(threads)])
        if m.returncode != 0 or not os.path.exists(path):
            raise RuntimeError("run --prompt-cache failed: " + m.last_error_line())
        return path


def measure_ours(runner, model, threads, load_args, plan):
    """plan: repeats, decode_prompt, decode_tokens, prefills, ttft. Runs are interleaved so
    that any drift of the machine spreads over every metric alike. The time to first token
    of a `ttft`-token prompt is taken in the run of the first longer prefill (`run --bench
    --bench-ttft`: that many tokens, a sampled token, then the rest), or in a run of its own.
    samples["load"][metric]: the load average after each run of that metric."""
    samples = {"load_s": [], "decode": [], "decode_gbs": [], "rss": [], "ttft": [], "load": {}}
    for p in plan["prefills"]:
        samples["pp%d" % p] = []

    def run(metric, prompt, n_gen, extra=()):
        r = runner.bench(model, threads, prompt, n_gen, load_args, extra, probe_around=metric == "decode")
        if "nearby_gbs" in r:
            samples["decode_gbs"].append(r["nearby_gbs"])
        samples["load_s"].append(r["load_s"])
        samples["rss"].append(r["peak_rss_bytes"])
        samples["load"].setdefault(metric, []).append(r["load_avg"])
        return r

    ttft = plan.get("ttft") or 0
    ttft_run = next((p for p in plan["prefills"] if p > ttft), None) if ttft else None
    runner.bench(model, threads, 8, 2, load_args)  # warm-up: page cache, CPU frequency
    for _ in range(plan["repeats"]):
        samples["decode"].append(run("decode", plan["decode_prompt"], plan["decode_tokens"])["decode_tok_s"])
        for p in plan["prefills"]:
            extra = ["--bench-ttft", str(ttft)] if p == ttft_run else []
            r = run("pp%d" % p, p, 0, extra)
            samples["pp%d" % p].append(r["prefill_tok_s"])
            if extra:
                samples["ttft"].append(r["ttft_s"])
                samples["load"].setdefault("ttft", []).append(r["load_avg"])
        if ttft and ttft_run is None:
            samples["ttft"].append(run("ttft", ttft + 1, 0, ["--bench-ttft", str(ttft)])["ttft_s"])
    return samples


# A short real prompt whose cached rows are repeated to each depth (short: at 7B its prefill is part of the run).
SEED_PROMPT = "The quick brown fox jumps over the lazy dog, and the dog does not mind at all."


def measure_depths(runner, model, threads, load_args, plan, work_dir):
    """Decode tok/s at each depth of plan["depths"] for each KV cache type. Depth 0 is a plain
    `run --bench`; deeper caches are synthesised: the library saves a short real prompt's
    session of that type (seed), tile_session() repeats its rows to the depth, and
    `run --bench --prompt-cache` decodes from it. Returns a list of records."""
    out = []
    n_gen = plan["decode_tokens"]
    for kv in plan["kv_types"]:
        seed = os.path.join(work_dir, "seed-%s.session" % kv)
        for depth in plan["depths"]:
            rec = {"kv": kv, "depth": depth, "decode": [], "decode_gbs": [], "load": [],
                   "prompt": 1 if depth else plan["decode_prompt"]}
            log("  decode at depth %d, KV %s" % (depth, kv))
            deep = None
            try:
                extra = ["--kv", kv]
                if depth:
                    if not os.path.exists(seed):
                        runner.save_session(model, threads, kv, seed, SEED_PROMPT)
                    deep = tile_session(seed, os.path.join(work_dir, "depth-%s-%d.session" % (kv, depth)), depth)
                    extra += ["--prompt-cache", deep, "-c", str(depth + 1 + n_gen)]
                for _ in range(plan["repeats"]):
                    r = runner.bench(model, threads, rec["prompt"], n_gen, load_args, extra, probe_around=True)
                    if "nearby_gbs" in r:
                        rec["decode_gbs"].append(r["nearby_gbs"])
                    if r.get("depth", 0) != depth:
                        raise RuntimeError("run --bench decoded at depth %s, not %d" % (r.get("depth"), depth))
                    rec["decode"].append(r["decode_tok_s"])
                    rec["load"].append(r["load_avg"])
            except (RuntimeError, ValueError, OSError) as e:
                rec["error"] = str(e)
            finally:
                if deep:
                    remove_quietly(deep)
            out.append(rec)
        remove_quietly(seed)
    return out


def measure_batched(runner, model, threads, load_args, plan):
    """Aggregate decode tok/s of B sequences forked from one prompt and decoded together
    (`run --bench --bench-batch B`: lucie_eval_batch), for each B of plan["batches"]."""
    out = {}
    for b in plan["batches"]:
        rec = {"decode": [], "load": []}
        log("  batched decode, B = %d" % b)
        try:
            for _ in range(plan["repeats"]):
                r = runner.bench(model, threads, plan["decode_prompt"], plan["decode_tokens"], load_args,
                                 ["--bench-batch", str(b)])
                rec["decode"].append(r["decode_tok_s"])
                rec["load"].append(r["load_avg"])
        except RuntimeError as e:
            rec["error"] = str(e)
        out[b] = rec
    return out


def measure_processes(exe, model, threads, load_args, plan, n_proc):
    """n_proc separate `run --bench` processes decoding at once, the threads shared out
    (at least one each): the sum of their decode rates, and the load average after."""
    each = max(1, threads // n_proc)
    cmd = [exe, model, "--bench", "-t", str(each), "--bench-prompt", str(plan["decode_prompt"]),
           "-n", str(plan["decode_tokens"])] + load_args
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n_proc)]
    total = 0.0
    errors = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=SUBPROCESS_TIMEOUT)
        lines = [l for l in stdout.splitlines() if l.strip().startswith("{")]
        if p.returncode != 0 or not lines:
            errors.append(stderr.strip().splitlines()[-1] if stderr.strip() else "exit %d" % p.returncode)
        else:
            total += json.loads(lines[-1])["decode_tok_s"]
    if errors:
        raise RuntimeError("run --bench (%d processes): %s" % (n_proc, errors[0]))
    return {"decode": [total], "load": [load_average()], "threads_each": each}


# ---------------------------------------------------------------------------
# llama.cpp: the same weights as GGUF, measured with llama-bench.
# ---------------------------------------------------------------------------

def find_llama_bench(cache, explicit):
    for candidate in (explicit, os.environ.get("LLAMA_BENCH"), shutil.which("llama-bench"),
                      os.path.join(cache, "llama.cpp-build", "bin", "llama-bench")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def llama_cpp_origin(exe, cache):
    """Where the llama-bench in use came from, when it is the one --setup-llama-cpp built."""
    source = os.path.join(cache, "llama.cpp-src", "SOURCE")
    if os.path.realpath(exe) != os.path.realpath(os.path.join(cache, "llama.cpp-build", "bin", "llama-bench")):
        return ""
    origin = ""
    if os.path.exists(source):
        with open(source) as f:
            origin = " from the sources in " + f.read().strip()
    return origin + ", built with -march=native less AMX (--setup-llama-cpp)"


def setup_llama_cpp(cache):
    """Builds llama-bench from the llama.cpp sources vendored in the PyPI llama-cpp-python
    source distribution (the only place this machine can get them from), for this CPU."""
    src = os.path.join(cache, "llama.cpp-src")
    build = os.path.join(cache, "llama.cpp-build")
    if not os.path.exists(os.path.join(src, "CMakeLists.txt")):
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            spec = "llama-cpp-python" + os.environ.get("LLAMA_CPP_PYTHON_VERSION", "")
            log("downloading the %s source distribution" % spec)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            "-d", tmp, spec], check=True)
            archive = [n for n in os.listdir(tmp) if n.endswith(".tar.gz")][0]
            with tarfile.open(os.path.join(tmp, archive)) as tar:
                tar.extractall(tmp)
            top = os.path.join(tmp, archive[:-len(".tar.gz")])
            shutil.move(os.path.join(top, "vendor", "llama.cpp"), src)
            with open(os.path.join(src, "SOURCE"), "w") as f:  # no .git: say where it came from
                f.write(archive[:-len(".tar.gz")] + "\n")
    cmake = ["cmake", "-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
             "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
             "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
             "-DLLAMA_BUILD_APP=OFF",
             # ggml's AMX kernels die with SIGILL (tilezero) on some machines that advertise
             # AMX, this benchmark's among them; everything else -march=native enables stays
             "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
             "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"]
    if shutil.which("ninja"):
        cmake += ["-G", "Ninja"]
    log("configuring llama.cpp in %s" % build)
    subprocess.run(cmake, check=True)
    jobs = os.environ.get("LLAMA_CPP_JOBS", str(os.cpu_count() or 1))
    log("building %s (%s jobs, niced; about half an hour on 2 cores)" % (" and ".join(LLAMA_CPP_TARGETS), jobs))
    subprocess.run(["nice", "-n", "19", "cmake", "--build", build, "--target"] + list(LLAMA_CPP_TARGETS)
                   + ["-j", jobs], check=True)
    exe = os.path.join(build, "bin", "llama-bench")
    log("built %s" % ", ".join(os.path.join(build, "bin", t) for t in LLAMA_CPP_TARGETS))
    return exe


def safetensors_tensors(ckpt):
    """name -> (file, dtype, shape, begin, end) for every tensor of a checkpoint directory."""
    tensors = {}
    for name in sorted(os.listdir(ckpt)):
        if not name.endswith(".safetensors"):
            continue
        path = os.path.join(ckpt, name)
        with open(path, "rb") as f:
            n, = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for tname, t in header.items():
            if tname == "__metadata__":
                continue
            begin, end = t["data_offsets"]
            tensors[tname] = (path, t["dtype"], t["shape"], 8 + n + begin, 8 + n + end)
    return tensors


def gguf_vocab(tokenizer_path):
    """Tokens, scores and types for a llama (SentencePiece-style) GGUF vocabulary. The Lucie
    tokenizer is a byte-fallback BPE over '▁'-marked pieces, which llama.cpp's SPM tokenizer
    loads; merge rank becomes the score. Speed does not depend on this, only loading does."""
    import gguf
    with open(tokenizer_path, encoding="utf-8") as f:
        tok = json.load(f)
    vocab = tok["model"]["vocab"]
    size = max(max(vocab.values()), max((a["id"] for a in tok.get("added_tokens", [])), default=0)) + 1
    tokens = ["<unused%d>" % i for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    scores = [0.0] * size
    for piece, i in vocab.items():
        tokens[i] = piece
        is_byte = len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")
        types[i] = gguf.TokenType.BYTE if is_byte else gguf.TokenType.NORMAL
    for rank, merge in enumerate(tok["model"].get("merges", [])):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        merged = vocab.get(left + right)
        if merged is not None and scores[merged] == 0.0:
            scores[merged] = -float(rank + 1)
    for a in tok.get("added_tokens", []):
        tokens[a["id"]] = a["content"]
        types[a["id"]] = gguf.TokenType.CONTROL if a.get("special") else gguf.TokenType.USER_DEFINED
    unk = tok["model"].get("unk_token")
    if unk in vocab:
        types[vocab[unk]] = gguf.TokenType.UNKNOWN
    return tokens, scores, types


def write_gguf(ckpt, out_path, qtype_name):
    """Writes the checkpoint as a llama-architecture GGUF: matrices in qtype_name (BF16, Q8_0
    or Q4_0, every matrix including token_embd and output, as a `--pure` llama-quantize
    does), norms in F32. Streams one tensor at a time to bound memory."""
    import numpy as np
    import gguf
    from gguf.quants import quantize

    with open(os.path.join(ckpt, "config.json")) as f:
        cfg = json.load(f)
    dim, n_layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    n_heads = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_heads
    head_dim = cfg.get("head_dim") or dim // n_heads
    qtype = gguf.GGMLQuantizationType[qtype_name]
    file_type = {"BF16": gguf.LlamaFileType.MOSTLY_BF16, "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                 "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[qtype_name]
    tensors = safetensors_tensors(ckpt)
    tied = "lm_head.weight" not in tensors

    def raw_u16(hf_name):  # bf16 bits (or f32) of a tensor, as a 2-D array
        path, dtype, shape, begin, end = tensors[hf_name]
        np_dtype = {"BF16": np.uint16, "F32": np.float32}[dtype]
        arr = np.fromfile(path, dtype=np_dtype, count=(end - begin) // np.dtype(np_dtype).itemsize,
                          offset=begin)
        arr = arr.reshape(shape if len(shape) == 2 else (1, shape[0]))
        if np_dtype == np.float32:  # round to nearest even bf16
            bits = arr.view(np.uint32)
            arr = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        return arr

    def to_f32(u16):
        return (u16.astype(np.uint32) << 16).view(np.float32)

    def permute_rope(w, heads):
        # HF rotates the two halves of each head; llama.cpp's llama graph pairs adjacent
        # values, so q and k rows are reordered exactly as llama.cpp's converter does.
        return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
                .swapaxes(1, 2).reshape(w.shape))

    plan = [("token_embd.weight", "model.embed_tokens.weight", None)]
    for l in range(n_layers):
        p, b = "model.layers.%d." % l, "blk.%d." % l
        plan += [(b + "attn_norm.weight", p + "input_layernorm.weight", "norm"),
                 (b + "attn_q.weight", p + "self_attn.q_proj.weight", n_heads),
                 (b + "attn_k.weight", p + "self_attn.k_proj.weight", n_kv),
                 (b + "attn_v.weight", p + "self_attn.v_proj.weight", None),
                 (b + "attn_output.weight", p + "self_attn.o_proj.weight", None),
                 (b + "ffn_norm.weight", p + "post_attention_layernorm.weight", "norm"),
                 (b + "ffn_gate.weight", p + "mlp.gate_proj.weight", None),
                 (b + "ffn_up.weight", p + "mlp.up_proj.weight", None),
                 (b + "ffn_down.weight", p + "mlp.down_proj.weight", None)]
    plan.append(("output_norm.weight", "model.norm.weight", "norm"))
    if not tied:
        plan.append(("output.weight", "lm_head.weight", None))

    def produce(hf_name, kind):
        w = raw_u16(hf_name)
        if kind == "norm":
            return to_f32(w).reshape(-1)
        if isinstance(kind, int):
            w = permute_rope(w, kind)
        if qtype == gguf.GGMLQuantizationType.BF16:
            return np.ascontiguousarray(w)
        rows_per_chunk = max(1, (1 << 22) // w.shape[1])  # bound the f32 temporaries
        return np.concatenate([quantize(to_f32(w[r:r + rows_per_chunk]), qtype)
                               for r in range(0, w.shape[0], rows_per_chunk)])

    def info(hf_name, kind):
        shape = tensors[hf_name][2]
        if kind == "norm":
            return (shape[-1],), np.float32, 4 * shape[-1], None
        rows, cols = shape
        if qtype == gguf.GGMLQuantizationType.BF16:
            return (rows, cols), np.uint16, 2 * rows * cols, qtype
        byte_shape = gguf.quant_shape_to_byte_shape((rows, cols), qtype)
        return byte_shape, np.uint8, byte_shape[0] * byte_shape[1], qtype

    writer = gguf.GGUFWriter(out_path, "llama")
    writer.add_name("lucie-bench-random")
    writer.add_context_length(cfg.get("max_position_embeddings", 4096))
    writer.add_embedding_length(dim)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(cfg["vocab_size"])
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, scores, types = gguf_vocab(os.path.join(ckpt, "tokenizer.json"))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    for key, setter in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id)):
        value = cfg.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int) and value >= 0:
            setter(value)
    for name, hf_name, kind in plan:
        shape, np_dtype, nbytes, raw = info(hf_name, kind)
        writer.add_tensor_info(name, shape, np.dtype(np_dtype), nbytes, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, hf_name, kind in plan:
        writer.write_tensor_data(produce(hf_name, kind))
    writer.close()


def ensure_gguf(cache, key, ckpt, fmt):
    """The GGUF twin of an export, reused from the cache when present (same weights)."""
    qtype = GGUF_TYPE[fmt]
    out_dir = os.path.join(cache, "gguf", key)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, qtype + ".gguf")
    meta = path + ".json"
    if os.path.exists(path) and os.path.exists(meta):
        with open(meta) as f:
            info = json.load(f)
        if info.get("writer_version") == GGUF_WRITER_VERSION:
            return path, info
    remove_quietly(path, meta)
    log("writing %s GGUF" % qtype)
    start = time.monotonic()
    try:
        write_gguf(ckpt, path, qtype)
    except BaseException:
        remove_quietly(path)
        raise
    info = {"seconds": round(time.monotonic() - start, 1), "writer_version": GGUF_WRITER_VERSION}
    with open(meta, "w") as f:
        json.dump(info, f)
    log("wrote %s in %.0f s (%.2f GB)" % (path, info["seconds"], os.path.getsize(path) / 1e9))
    return path, info


def llama_bench_mmap_args(exe, mmap):
    """llama-bench's flag for mapping the model or reading it into memory: `-lm mmap|none`
    in recent versions, `-mmp 1|0` in older ones."""
    h = subprocess.run([exe, "--help"], capture_output=True, text=True)
    if "--load-mode" in h.stdout + h.stderr:
        return ["-lm", "mmap" if mmap else "none"]
    return ["-mmp", "1" if mmap else "0"]


def measure_llama_cpp(launcher, exe, gguf_path, threads, plan, mmap, nearby=None):
    """One llama-bench process runs every test (pp64, pp512, tg64) `repeats` times after its
    own warm-up; its JSON output keeps each sample, of which we take the median. The bandwidth
    probed around it (nearby) is around the whole process, prefills included."""
    prompts = ",".join(str(p) for p in plan["prefills"])
    cmd = [exe, "-m", gguf_path, "-t", str(threads), "-p", prompts, "-n", str(plan["decode_tokens"]),
           "-r", str(plan["repeats"]), "-o", "json"] + llama_bench_mmap_args(exe, mmap)
    m, nearby_gbs = run_probed(launcher, nearby, threads, cmd)
    if m.returncode != 0:
        raise RuntimeError("llama-bench failed: " + m.last_error_line())
    records = json.loads(m.stdout)
    samples = {"decode": [], "rss": [m.peak_rss_bytes]}
    for p in plan["prefills"]:
        samples["pp%d" % p] = []
    build = ""
    for rec in records:
        commit = rec.get("build_commit", "unknown")
        build = "(version unknown)" if commit == "unknown" else "%s (build %s)" % (commit, rec.get("build_number"))
        values = rec.get("samples_ts") or [rec["avg_ts"]]
        if rec.get("n_gen", 0) > 0 and rec.get("n_prompt", 0) == 0:
            samples["decode"] = list(values)
            samples["decode_gbs"] = probed_per_run(nearby_gbs, len(values))
        elif rec.get("n_prompt", 0) > 0 and rec.get("n_gen", 0) == 0:
            samples["pp%d" % rec["n_prompt"]] = list(values)
    return samples, build


def measure_llama_depth(launcher, exe, gguf_path, threads, depth, n_gen, repeats, mmap, nearby=None):
    """llama-bench's decode after `depth` tokens in its cache (`-d`; its default f16 cache,
    which it fills by a prefill before every repeat: not timed, but inside the bandwidth
    probes around the process)."""
    cmd = [exe, "-m", gguf_path, "-t", str(threads), "-p", "0", "-n", str(n_gen), "-d", str(depth),
           "-r", str(repeats), "-o", "json"] + llama_bench_mmap_args(exe, mmap)
    m, nearby_gbs = run_probed(launcher, nearby, threads, cmd)
    if m.returncode != 0:
        raise RuntimeError("llama-bench -d failed: " + m.last_error_line())
    for rec in json.loads(m.stdout):
        if rec.get("n_gen", 0) > 0 and rec.get("n_prompt", 0) == 0 and rec.get("n_depth") == depth:
            decode = list(rec.get("samples_ts") or [rec["avg_ts"]])
            return {"decode": decode, "load": [load_average()], "type_k": rec.get("type_k", "f16"),
                    "decode_gbs": probed_per_run(nearby_gbs, len(decode))}
    raise RuntimeError("llama-bench -d printed no decode record at depth %d" % depth)


def find_llama_batched_bench(llama_bench):
    exe = os.path.join(os.path.dirname(llama_bench), "llama-batched-bench") if llama_bench else None
    return exe if exe and os.access(exe, os.X_OK) else None


def measure_llama_batched(launcher, exe, gguf_path, threads, plan):
    """llama-batched-bench: one shared prompt (-pps) in a unified cache, then B sequences
    decoded together; speed_tg is their aggregate tok/s. Returns {B: record}."""
    batches = plan["batches"]
    ctx = plan["decode_prompt"] + max(batches) * plan["decode_tokens"] + 64
    cmd = [exe, "-m", gguf_path, "-t", str(threads), "-tb", str(threads), "-c", str(ctx), "-b", "2048",
           "-ub", "512", "-npp", str(plan["decode_prompt"]), "-ntg", str(plan["decode_tokens"]),
           "-npl", ",".join(str(b) for b in batches), "-pps", "-kvu", "--output-format", "jsonl"]
    m = launcher.run(cmd)
    if m.returncode != 0:
        raise RuntimeError("llama-batched-bench failed: " + m.last_error_line())
    out = {}
    for line in (m.stdout + "\n" + m.stderr).splitlines():
        line = line.strip()
        if line.startswith("{") and "speed_tg" in line:
            rec = json.loads(line)
            out[rec["pl"]] = {"decode": [rec["speed_tg"]], "load": [load_average()]}
    if not out:
        raise RuntimeError("llama-batched-bench printed no result")
    return out


# ---------------------------------------------------------------------------
# Statistics and the table.
# ---------------------------------------------------------------------------

def median_spread(values):
    """Median, and the spread as half the range relative to the median (0 for one value)."""
    if not values:
        return None, None
    med = statistics.median(values)
    spread = (max(values) - min(values)) / 2 / med if med else 0.0
    return med, spread


def fmt_rate(values, digits=2):
    med, spread = median_spread(values)
    if med is None:
        return "—"
    if len(values) == 1:
        return "%.*f" % (digits, med)
    return "%.*f ±%.0f%%" % (digits, med, 100 * spread)


def fmt_num(value, pattern):
    return "—" if value is None else pattern % value


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        memory = ", %.0f GiB RAM" % (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30)
    except (ValueError, OSError):
        pass
    thp = ""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp = ", transparent huge pages: " + f.read().split("[", 1)[1].split("]", 1)[0]
    except (OSError, IndexError):
        pass
    return "%s, %d cores%s%s" % (cpu, os.cpu_count() or 1, memory, thp)


def load_average():
    """The 1-minute load average: a benchmark run on a busy machine says so in its header."""
    try:
        return "%.2f" % os.getloadavg()[0]
    except OSError:
        return "unknown"


def repo_revision():
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        # bench/results.md is this program's own output: rewriting it does not change what is measured
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!bench/results.md"], capture_output=True, text=True).stdout.strip()
        return rev + ("+changes" if dirty else "") if rev else "unknown"
    except OSError:
        return "unknown"


def build_table(rows, prefills):
    head = (["engine", "format", "load", "threads", "file GB", "export s", "load s", "peak RSS GB"]
            + ["prefill %d tok/s" % p for p in prefills]
            + ["decode tok/s", "roofline tok/s", "% of roofline", "GB/s probed around", "% of that roofline",
               "vs llama.cpp: decode"]
            + ["vs llama.cpp: pp%d" % p for p in prefills])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["engine"], r["format"], r["load"], str(r["threads"]),
                 fmt_num(r.get("file_bytes") and r["file_bytes"] / 1e9, "%.2f"),
                 fmt_num(r.get("export_s"), "%.0f"),
                 fmt_num(r.get("load_s"), "%.3f"),
                 fmt_num(r.get("rss") and r["rss"] / 1e9, "%.2f")]
        if "error" in r:
            cells += ["error: " + r["error"]] + [""] * (len(head) - len(cells) - 1)
        else:
            cells += [fmt_rate(r["samples"].get("pp%d" % p, [])) for p in prefills]
            cells += [fmt_rate(r["samples"]["decode"]), fmt_num(r.get("roofline"), "%.2f"),
                      fmt_num(r.get("percent"), "%.0f%%"), fmt_num(r.get("nearby_gbs"), "%.1f"),
                      fmt_num(r.get("percent_nearby"), "%.0f%%"), fmt_num(r.get("vs_decode"), "%.2fx")]
            cells += [fmt_num(r.get("vs_pp%d" % p), "%.2fx") for p in prefills]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_ratios(rows, prefills):
    """ours / llama.cpp, against llama.cpp's best load mode for the same precision (row["key"]:
    our format name, which a GGUF row shares with the format it mirrors) and thread count."""
    best = {}
    for r in rows:
        if r["engine"] == "llama.cpp" and "error" not in r:
            k = (r["key"], r["threads"])
            for metric in ["decode"] + ["pp%d" % p for p in prefills]:
                med, _ = median_spread(r["samples"].get(metric, []))
                if med:
                    best[k + (metric,)] = max(best.get(k + (metric,), 0.0), med)
    for r in rows:
        if r["engine"] != "lucie.c" or "error" in r:
            continue
        for metric in ["decode"] + ["pp%d" % p for p in prefills]:
            ref = best.get((r["key"], r["threads"], metric))
            med, _ = median_spread(r["samples"].get(metric, []))
            if ref and med:
                r["vs_" + metric] = med / ref


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description="Benchmark lucie.c at the Lucie-7B shapes (and llama.cpp).")
    ap.add_argument("--formats", default=",".join(FORMATS), help="comma list of bf16,q8,q4")
    ap.add_argument("--threads", default="2", help="thread count, or a comma list (e.g. 1,2)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement (median reported)")
    ap.add_argument("--load-modes", default=None,
                    help="comma list of mmap,madvise,read (default: all; --quick: mmap)")
    ap.add_argument("--quick", action="store_true",
                    help="1 repeat, 16 decoded tokens, prefill 64 only, depths 0/64/256, mmap only")
    ap.add_argument("--small", action="store_true",
                    help="a scaled-down model (real vocabulary, %s) for smoke runs" %
                    ", ".join("%s %d" % kv for kv in SMALL_SHAPE.items()))
    ap.add_argument("--config", default=os.path.join(LUCIE_BASE, "config.json"),
                    help="config.json whose shapes the random checkpoint has")
    ap.add_argument("--long-config", default=os.path.join(LUCIE_INSTRUCT, "config.json"),
                    help="config.json whose %s a checkpoint takes when the depths need more positions "
                    "than --config allows (default: Lucie-7B-Instruct's)" % " and ".join(LONG_CONTEXT_FIELDS))
    ap.add_argument("--shards", type=int, default=4, help="safetensors shards of the checkpoint")
    ap.add_argument("--cache", default=os.environ.get("LUCIE_BENCH_DIR") or
                    os.path.join(os.path.expanduser("~"), ".cache", "lucie-bench"),
                    help="cache directory (default $LUCIE_BENCH_DIR or ~/.cache/lucie-bench)")
    ap.add_argument("--out", default=None, help="markdown output (default bench/results.md; "
                    "quick/small runs default to the cache directory)")
    ap.add_argument("--run", default=os.path.join(REPO, "run"), help="the run binary")
    ap.add_argument("--keep", action="store_true",
                    help="keep exported models and GGUFs in the cache and reuse them next time")
    ap.add_argument("--prepare", action="store_true",
                    help="only create the checkpoint, exports and GGUFs (kept, as --keep) for a later run")
    ap.add_argument("--decode-tokens", type=int, default=None, help="tokens decoded (default 64)")
    ap.add_argument("--decode-prompt", type=int, default=16, help="prompt before decoding (default 16)")
    ap.add_argument("--prefill", default=None, help="prefill prompt lengths (default 64,512,4096)")
    ap.add_argument("--ttft", type=int, default=None,
                    help="time to first token of a prompt this long (default 4000; 0 = not measured)")
    ap.add_argument("--depths", default=None, help="decode depths (cached tokens), comma list "
                    "(default 0,4096,16384; --quick 0,64,256)")
    ap.add_argument("--kv", default=",".join(KV_TYPES), help="KV cache types decoded at each depth")
    ap.add_argument("--batches", default="1,2,4,8", help="sequences decoded together (lucie_eval_batch)")
    ap.add_argument("--processes", default="2,4", help="B separate processes decoding at once")
    ap.add_argument("--llama-prefill", default=None, help="llama.cpp prefill lengths (default 512)")
    ap.add_argument("--llama-depth", type=int, default=4096, help="llama.cpp decode depth (0 = none)")
    ap.add_argument("--depth-formats", default=None, help="formats decoded at --depths (default: all)")
    ap.add_argument("--batch-formats", default=None, help="formats decoded in batches (default: all)")
    ap.add_argument("--deadline", default=None,
                    help="UTC time HH:MM after which no further measurement starts (the report says which)")
    ap.add_argument("--llama-depth-formats", default=None,
                    help="formats measured at --llama-depth (default: all; its prefill of the depth is slow)")
    ap.add_argument("--bandwidth-mb", type=int, default=2048, help="bandwidth buffer size in MB")
    ap.add_argument("--no-nearby-probe", action="store_true",
                    help="no short bandwidth probe around each decode run (see NearbyBandwidth)")
    ap.add_argument("--no-llama-cpp", action="store_true", help="skip the llama.cpp comparison")
    ap.add_argument("--llama-bench", default=None, help="path of llama-bench (else $LLAMA_BENCH, "
                    "PATH, or the one --setup-llama-cpp built in the cache)")
    ap.add_argument("--setup-llama-cpp", action="store_true",
                    help="build llama-bench into the cache from PyPI's llama-cpp-python sources, then exit")
    args = ap.parse_args(argv)
    args.formats = [f for f in args.formats.split(",") if f]
    bad = [f for f in args.formats if f not in FORMATS]
    if bad:
        ap.error("unknown format(s): %s" % ",".join(bad))

    def int_list(text, name):
        try:
            return [int(t) for t in text.split(",") if t]
        except ValueError:
            ap.error("%s wants integers" % name)
    args.threads = int_list(args.threads, "--threads")
    if args.load_modes is None:
        args.load_modes = "mmap" if args.quick else ",".join(LOAD_MODES)
    args.load_modes = [m for m in args.load_modes.split(",") if m]
    bad = [m for m in args.load_modes if m not in LOAD_MODES]
    if bad:
        ap.error("unknown load mode(s): %s" % ",".join(bad))
    args.kv = [k for k in args.kv.split(",") if k]
    if any(k not in KV_TYPES for k in args.kv):
        ap.error("--kv wants a comma list of %s" % ",".join(KV_TYPES))
    if args.quick:
        args.repeats = 1
    if args.decode_tokens is None:
        args.decode_tokens = 16 if args.quick else 64
    if args.prefill is None:
        args.prefill = "64" if args.quick else "64,512,4096"
    args.prefill = int_list(args.prefill, "--prefill")
    if args.ttft is None:
        args.ttft = 48 if args.quick else 4000
    if args.depths is None:
        args.depths = "0,64,256" if args.quick else "0,4096,16384"
    args.depths = int_list(args.depths, "--depths")
    args.batches = int_list(args.batches, "--batches")
    args.processes = int_list(args.processes, "--processes")
    args.depth_formats = [f for f in (args.depth_formats or ",".join(args.formats)).split(",") if f]
    args.batch_formats = [f for f in (args.batch_formats or ",".join(args.formats)).split(",") if f]
    if args.deadline:
        now = datetime.datetime.now(datetime.timezone.utc)
        try:
            hh, mm = (int(x) for x in args.deadline.split(":"))
            cut = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        except ValueError:
            ap.error("--deadline wants HH:MM (UTC)")
        if cut < now - datetime.timedelta(hours=1):
            cut += datetime.timedelta(days=1)
        args.deadline = cut.timestamp()
    args.llama_depth_formats = [f for f in (args.llama_depth_formats or ",".join(args.formats)).split(",") if f]
    args.llama_prefill = int_list(args.llama_prefill or ("64" if args.quick else "512"), "--llama-prefill")
    if args.repeats < 1 or min(args.threads) < 1 or args.decode_tokens < 1 or min(args.prefill) < 1 \
            or min(args.depths + [0]) < 0 or min(args.batches + [1]) < 1 or args.ttft < 0:
        ap.error("repeats, threads, token counts, depths and batches must be >= 1 (depths, --ttft >= 0)")
    if args.prepare:
        args.keep = True
    return args


def main(argv=None):
    args = parse_args(argv)
    launcher = Launcher()  # first, while this process is small (see Launcher)
    args.load_before = load_average()
    args.revision = repo_revision()  # before the run: the report itself is rewritten during it
    try:
        return benchmark(args, launcher)
    finally:
        launcher.close()


def fmt_loads(values):
    """Load averages of a figure's runs: one value, or the range."""
    values = [float(v) for v in values if v not in (None, "unknown")]
    if not values:
        return "—"
    lo, hi = min(values), max(values)
    return "%.1f" % lo if hi - lo < 0.05 else "%.1f–%.1f" % (lo, hi)


def median_of(values):
    return statistics.median(values) if values else None


def row_name(r, rows):
    """A lucie.c row's format, with its load mode when the run measured more than one."""
    modes = {x["load"] for x in rows if x["engine"] == "lucie.c" and "error" not in x}
    return r["format"] if len(modes) < 2 else "%s (%s)" % (r["format"], r["load"])


def prefill_table(rows, prefills, peaks, ttft):
    head = ["format", "threads", "GMAC/token", "peak"] + sum(
        (["pp%d tok/s" % p, "% of peak"] for p in prefills), []) + (["TTFT %d s" % ttft] if ttft else []) + [
        "load avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["engine"] != "lucie.c" or "error" in r or "macs" not in r:
            continue
        peak = peaks[r["threads"]][PEAK_OF_FORMAT[r["format"]]]
        cells = [row_name(r, rows), str(r["threads"]), "%.2f" % (r["macs"] / 1e9),
                 "%s %.0f GMAC/s" % ("int8" if PEAK_OF_FORMAT[r["format"]] == "int8_gmacs" else "f32 FMA", peak)]
        loads = []
        for p in prefills:
            values = r["samples"].get("pp%d" % p, [])
            med = median_of(values)
            cells += [fmt_rate(values), fmt_num(med and percent_of_peak(med, r["macs"], peak), "%.0f%%")]
            loads += r["samples"]["load"].get("pp%d" % p, [])
        if ttft:
            cells.append(fmt_rate(r["samples"]["ttft"], 1))
        cells.append(fmt_loads(loads))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def roofline_percents(r):
    """'41%' against the run's best bandwidth probe, '41% / 78%' with the probes around its runs too."""
    text = fmt_num(r.get("percent"), "%.0f%%")
    return text if r.get("percent_nearby") is None else "%s / %.0f%%" % (text, r["percent_nearby"])


def roofline_heading(rows):
    probed = any(r.get("percent_nearby") is not None for r in rows)
    return "% of roofline" + (": best probe / probes around it" if probed else "")


def cell(values, extra=None, digits=2):
    """'median' (one run) or 'median ±spread', with an optional ' (extra)'."""
    text = fmt_rate(values, digits)
    return text if extra is None or text == "—" else "%s (%s)" % (text, extra)


def summary_tables(rows, depth_rows, batch_rows, prefills, peaks, ttft):
    """The compact tables README.md's speed section copies (one line per format)."""
    out = []
    # the prefill llama.cpp ran (--llama-prefill, 512 by default), else the first
    vs_p = next((p for p in prefills if any(r.get("vs_pp%d" % p) for r in rows)), prefills[0])
    head = (["format", "decode tok/s (%s)" % roofline_heading(rows)]
            + ["pp%d tok/s (%% of peak)" % p for p in prefills]
            + (["TTFT %d s" % ttft] if ttft else []) + ["vs llama.cpp: decode", "vs llama.cpp: pp%d" % vs_p,
                                                        "load avg"])
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["engine"] != "lucie.c" or "error" in r:
            continue
        s = r["samples"]
        peak = peaks[r["threads"]][PEAK_OF_FORMAT[r["format"]]]
        cells = [row_name(r, rows), cell(s["decode"], roofline_percents(r))]
        for p in prefills:
            med = median_of(s.get("pp%d" % p, []))
            cells.append(cell(s.get("pp%d" % p, []), fmt_num(med and percent_of_peak(med, r["macs"], peak), "%.0f%%")))
        if ttft:
            cells.append(fmt_rate(s["ttft"], 1))
        cells += [fmt_num(r.get("vs_decode"), "%.2fx"), fmt_num(r.get("vs_pp%d" % vs_p), "%.2fx"),
                  fmt_loads(sum(s["load"].values(), []))]
        out.append("| " + " | ".join(cells) + " |")
    depths = sorted({d["depth"] for d in depth_rows})
    if depth_rows:
        out += ["", "| format | KV | " + " | ".join("depth %d tok/s (%s)" % (d, roofline_heading(depth_rows))
                                                  for d in depths)
                + " | load avg |", "|" + "---|" * (len(depths) + 3)]
        keys = []
        for d in depth_rows:
            if (d["format"], d["kv"]) not in keys:
                keys.append((d["format"], d["kv"]))
        for fmt, kv in keys:
            mine = {d["depth"]: d for d in depth_rows if (d["format"], d["kv"]) == (fmt, kv)}
            cells = [fmt, kv]
            loads = []
            for depth in depths:
                d = mine.get(depth)
                if not d or "error" in d:
                    cells.append("—")
                    continue
                text = cell(d["decode"], roofline_percents(d))
                if d.get("vs_llama"):
                    text += "; %.2fx llama.cpp" % d["vs_llama"]
                cells.append(text)
                loads += d["load"]
            out.append("| " + " | ".join(cells + [fmt_loads(loads)]) + " |")
    if batch_rows:
        out += ["", "| format | B | lucie.c tok/s, all B (x B=1) | llama.cpp tok/s, all B | B processes tok/s | "
                "load avg |", "|---|---|---|---|---|---|"]
        for b in batch_rows:
            ours, llama, procs = b["ours"], b.get("llama"), b.get("processes")
            cells = [b["format"], str(b["B"]),
                     "error" if "error" in ours else cell(ours["decode"], fmt_num(b.get("vs_b1"), "%.2fx")),
                     fmt_rate(llama["decode"]) if llama else "—",
                     fmt_rate(procs["decode"]) if procs and "error" not in procs else "—",
                     fmt_loads(ours.get("load", []) + (llama or {}).get("load", []) + (procs or {}).get("load", []))]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def depth_table(depth_rows):
    head = ["format", "threads", "KV", "depth", "decode tok/s", "weights GB/token", "KV GB/token", "roofline tok/s",
            "% of roofline", "GB/s probed around", "% of that roofline", "vs llama.cpp (f16 cache)", "load avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in depth_rows:
        cells = [d["format"], str(d["threads"]), d["kv"], str(d["depth"])]
        if "error" in d:
            cells += ["error: " + d["error"]] + [""] * (len(head) - len(cells) - 1)
        else:
            cells += [fmt_rate(d["decode"]), "%.3f" % (d["weight_bytes"] / 1e9), "%.3f" % (d["kv_bytes"] / 1e9),
                      "%.2f" % d["roofline"], fmt_num(d.get("percent"), "%.0f%%"), fmt_num(d.get("nearby_gbs"), "%.1f"),
                      fmt_num(d.get("percent_nearby"), "%.0f%%"), fmt_num(d.get("vs_llama"), "%.2fx"),
                      fmt_loads(d["load"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def batch_table(batch_rows):
    head = ["format", "threads", "B", "lucie.c tok/s (all B)", "x B=1", "llama.cpp tok/s (all B)", "vs llama.cpp",
            "B processes tok/s (all B)", "load avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in batch_rows:
        ours = b["ours"]
        cells = [b["format"], str(b["threads"]), str(b["B"])]
        if "error" in ours:
            cells += ["error: " + ours["error"], "—"]
        else:
            cells += [fmt_rate(ours["decode"]), fmt_num(b.get("vs_b1"), "%.2fx")]
        llama = b.get("llama")
        cells += [fmt_rate(llama["decode"]) if llama else "—", fmt_num(b.get("vs_llama"), "%.2fx")]
        procs = b.get("processes")
        if procs and "error" in procs:
            cells.append("error: " + procs["error"])
        else:
            cells.append("%s (%d thread%s each)" % (fmt_rate(procs["decode"]), procs["threads_each"],
                                                  "" if procs["threads_each"] == 1 else "s") if procs else "—")
        cells.append(fmt_loads(ours.get("load", []) + (llama or {}).get("load", []) + (procs or {}).get("load", [])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def benchmark(args, launcher):
    cache = os.path.abspath(args.cache)
    os.makedirs(cache, exist_ok=True)
    if args.setup_llama_cpp:
        setup_llama_cpp(cache)
        return 0
    if not os.path.exists(args.config):
        print("bench: no config %s (test/data/lucie is part of the repository)" % args.config, file=sys.stderr)
        return 2
    if not args.prepare and not os.access(args.run, os.X_OK):
        print("bench: no %s binary: build it first (make)" % args.run, file=sys.stderr)
        return 2
    with open(args.config) as f:
        config = json.load(f)
    key = checkpoint_key(config, args.small)
    quick = args.quick or args.small
    out_path = args.out or (os.path.join(cache, "results-%s%s.md" % (key, "-quick" if args.quick else ""))
                            if quick else os.path.join(REPO, "bench", "results.md"))
    plan = {"repeats": args.repeats, "decode_prompt": args.decode_prompt, "decode_tokens": args.decode_tokens,
            "prefills": args.prefill, "ttft": args.ttft, "depths": args.depths, "kv_types": args.kv,
            "batches": args.batches}
    llama_plan = dict(plan, prefills=args.llama_prefill)
    notes = []

    # llama.cpp is optional: find it (and the Python packages that write GGUF) up front
    llama_bench = None
    if args.no_llama_cpp:
        notes.append("llama.cpp: not measured (--no-llama-cpp).")
    else:
        llama_bench = find_llama_bench(cache, args.llama_bench)
        if not all(importlib.util.find_spec(m) for m in ("numpy", "gguf")):
            if llama_bench:
                notes.append("llama.cpp: not measured: writing GGUF needs `pip install numpy gguf`.")
            llama_bench = None
        if llama_bench is None and not notes:
            notes.append("llama.cpp: not measured: no llama-bench found (`python3 test/bench.py "
                         "--setup-llama-cpp` builds one into the cache; or set LLAMA_BENCH / PATH).")
    llama_batched = find_llama_batched_bench(llama_bench)

    ckpt, ckpt_info = ensure_checkpoint(launcher, cache, key, args.config, args.small, args.shards)
    notes.append("Random checkpoint `%s` (%.1f GB bf16 safetensors, %d shards): created once in %.0f s, cached."
                 % (key, ckpt_info["bytes"] / 1e9, args.shards, ckpt_info["seconds"]))
    # every measurement uses one export per format: the long-context twin when a depth needs it
    longest = max([max(args.depths) + 1 + args.decode_tokens, max(args.prefill) + args.decode_tokens,
                   args.decode_prompt + args.decode_tokens])
    if longest > config.get("max_position_embeddings", 4096):
        ckpt, key, long_config = long_context_checkpoint(cache, key, ckpt, args.long_config)
        notes.append("Every figure is measured on the export of `%s`: the same safetensors with config.json's %s "
                     "taken from %s (%s), since the depths need more than the %d positions of %s; the work per "
                     "token does not depend on either field." % (
                         key, " and ".join(LONG_CONTEXT_FIELDS), os.path.relpath(args.long_config, REPO),
                         ", ".join("%s %s" % (f, long_config[f]) for f in LONG_CONTEXT_FIELDS),
                         config.get("max_position_embeddings", 4096), os.path.relpath(args.config, REPO)))
    if args.prepare:
        for fmt in args.formats:
            ensure_export(launcher, cache, key, ckpt, fmt, True)
            if not args.no_llama_cpp and all(importlib.util.find_spec(m) for m in ("numpy", "gguf")):
                ensure_gguf(cache, key, ckpt, fmt)  # llama-bench may still be building
        log("prepared %s: %s" % (key, ", ".join(args.formats)))
        return 0

    bw_exe, peak_exe = build_bandwidth(cache), build_peak(cache)
    bandwidth, peaks = {}, {}
    probe_machine(bw_exe, peak_exe, args, bandwidth, peaks, "start")

    runner = Runner(launcher, args.run, None if args.no_nearby_probe else NearbyBandwidth(bw_exe))
    rows, depth_rows, batch_rows = [], [], []
    work_dir = os.path.join(cache, "work")
    os.makedirs(work_dir, exist_ok=True)
    def report(partial):
        """Writes what is measured so far (after each format: a run cut short keeps it)."""
        notes_now = list(notes)
        shape_now = next((st["shape"] for st in state.values() if "shape" in st), None)
        apply_rooflines(rows, depth_rows, bandwidth)
        add_ratios(rows, args.prefill)
        add_depth_ratios(depth_rows)
        add_batch_ratios(batch_rows)
        builds = sorted({r["llama_build"] for r in rows if r.get("llama_build")})
        if builds:
            notes_now.append("llama.cpp: llama-bench %s%s." % (", ".join(builds), llama_cpp_origin(llama_bench, cache)))
        if not llama_batched and llama_bench:
            notes_now.append("llama.cpp: no llama-batched-bench next to llama-bench: batched decoding not compared.")

        notes_now.append("Peak RSS is read from wait4(); it cannot be below the RSS of the launcher process "
                     "that starts each program (%.0f MB here)." % (launcher.baseline_bytes / 1e6))
        table = build_table(rows, args.prefill)
        bw_lines = ["- memory read bandwidth, %d thread(s): **%.1f GB/s**, the best of the probes at the start and "
                    "at the end of the run (each: best of 10 passes of each variant); %s"
                    % (t, b["best"], "; ".join("at the %s: %s, load avg %s" % (when, "; ".join(
                        "%s: best %.1f, median %.1f" % (name, v["best_gbs"], v["median_gbs"])
                        for name, v in probe["variants"]), probe["load"]) for when, probe in b["probes"]))
                    for t, b in sorted(bandwidth.items())]
        peak_lines = ["- compute peak, %d thread(s) (test/peak.c, best of 5): **int8 %.1f GMAC/s**, **f32 FMA %.1f "
                      "GMAC/s**, the best of the probes at the start and at the end of the run (%s)"
                      % (t, p["int8_gmacs"], p["f32_gmacs"], "; ".join(
                          "at the %s: int8 %.1f, f32 FMA %.1f, load avg %s" % (
                              when, probe["int8_gmacs"], probe["f32_gmacs"], probe["load"])
                          for when, probe in p["probes"]))
                      for t, p in sorted(peaks.items())]
        doc = "\n".join([
            "# lucie.c benchmark (%s)%s" % (key, " (partial: the formats measured so far)" if partial else ""),
            "",
            "- %s" % datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "- machine: %s; load average %s before the run, %s after (other work skews every number; "
            "each figure below carries the 1-minute load average at the end of its runs, which counts "
            "this benchmark's own threads too)" % (machine_description(), args.load_before, load_average()),
            "- lucie.c revision: %s" % args.revision,
            "- model shapes: dim %d, hidden %s, %s layers, %s heads, %s KV heads, vocab %d%s" % (
                config["hidden_size"] if not args.small else SMALL_SHAPE["hidden"],
                config["intermediate_size"] if not args.small else SMALL_SHAPE["ffn"],
                config["num_hidden_layers"] if not args.small else SMALL_SHAPE["layers"],
                config["num_attention_heads"] if not args.small else SMALL_SHAPE["heads"],
                config.get("num_key_value_heads") if not args.small else SMALL_SHAPE["kv-heads"],
                config["vocab_size"], " (scaled down: --small)" if args.small else ""),
            "- decode: %d tokens after a %d-token prompt; prefill: one batch of %s tokens; %d run(s) each, "
            "median ±half the range" % (args.decode_tokens, args.decode_prompt,
                                        " / ".join(str(p) for p in args.prefill), args.repeats),
            ] + bw_lines + peak_lines + [
            "",
            "## Summary (the tables README.md shows)",
            "",
            summary_tables(rows, depth_rows, batch_rows, args.prefill, peaks, args.ttft),
            "",
            "## Decode and prefill",
            "",
            table,
            "",
            "Roofline = best read bandwidth / bytes of weights read per token (every matrix of the file as "
            "stored, one embedding row; the KV cache and activations are not counted). Load time is until "
            "the model is opened (mapped pages are then read during the first tokens); peak RSS is the "
            "process maximum, page cache of mapped files included. vs llama.cpp = lucie.c / llama.cpp's "
            "best load mode at the same precision and thread count. GB/s probed around = the better of two "
            "short probes (%d MB, %d passes, 4 KB and huge pages) just before and just after each decode run "
            "(llama.cpp: around its whole llama-bench process), the median over the runs; %% of that roofline "
            "= each run's tok/s against the roofline of its own probes, the median: this VM's bandwidth moves "
            "within a run, and the run's best probe may come from a faster minute than the decode's."
            % (NEARBY_PROBE_MB, NEARBY_PROBE_PASSES),
            "",
            "## Prefill against the compute peak",
            "",
            prefill_table(rows, args.prefill, peaks, args.ttft),
            "",
            "%% of peak = prefill tok/s x multiply-accumulates of the weight matrices per token (rows x cols of "
            "every matrix in the entry table; the embedding lookup and attention not included) / the peak of "
            "the instructions the format computes with: int8 for q8 and q4 (their kernels multiply int8 "
            "codes), f32 FMA for bf16 (widened to f32). Attention adds %s per token on top (mean over a causal "
            "prompt), not counted. TTFT = load + evaluating the first %d tokens of the prompt + sampling one "
            "token, timed inside the longest prefill's run (`run --bench --bench-ttft`)."
            % (", ".join("%.2f G at %d" % (attention_macs_per_token(shape_now, p) / 1e9, p) for p in args.prefill)
               if shape_now else "—", args.ttft),
            "",
            "## Decode at depth, per KV cache type",
            "",
            depth_table(depth_rows),
            "",
            "lucie.c's weights are loaded with `--load %s` here (the first of --load-modes). " % args.load_modes[0]
            + "Depth = tokens already in the cache. Caches deeper than 0 are synthesised: the library saves the "
            "session of a short real prompt (`run --prompt-cache`, with that KV type) and its rows are repeated "
            "to the depth in a session file (same fingerprint, type and layout), from which `run --bench "
            "--prompt-cache FILE --bench-prompt 1` decodes. Roofline = bandwidth / (weights + KV bytes read per "
            "token), KV bytes = positions attended (mean over the timed steps) x layers x 2 x kv_dim x bytes per "
            "value (f32 4, f16 2, q8 1 + an f32 scale per 32 values of a KV head). llama.cpp's row: `llama-bench -d DEPTH -p 0 -n N` "
            "with its default f16 cache, against lucie.c's f16 cache at the same depth (its probes around it also "
            "enclose the prefill that fills its cache before each repeat). GB/s probed around and % of that "
            "roofline: as in the decode table.",
            "",
            "## Batched decoding",
            "",
            batch_table(batch_rows),
            "",
            "lucie.c (weights loaded with `--load %s`): `run --bench --bench-batch B`: one %d-token prompt, the "
            "session forked B-1 times "
            "(lucie_session_fork), then %d steps of lucie_eval_batch over the B sessions; tok/s counts the "
            "tokens of all B. llama.cpp: `llama-batched-bench -npp %d -ntg %d -pps -kvu` (shared prompt, "
            "unified cache), its speed_tg. B processes: B separate `run --bench` processes at once, the "
            "threads shared out (at least one each), the sum of their decode rates: the weights are mapped "
            "once in the page cache (RAM is not the limit) but every process reads all of them per token, so "
            "B processes share one memory bandwidth." % (args.load_modes[0], args.decode_prompt, args.decode_tokens,
                                                         args.decode_prompt, args.decode_tokens),
            "",
            ] + ["- " + n for n in notes_now]) + "\n"
        if not partial:
            print(doc)
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "w") as f:
            f.write(doc)
        log("wrote %s" % out_path)

    # The measurements in order of priority, so that a run cut short (--deadline, or
    # interrupted: the report is rewritten after each step) has the most important ones:
    # lucie.c's decode and prefill for every format, then its depths and batches, then
    # llama.cpp's decode and prefill (and batches), then llama.cpp at depth (slow: its
    # prefill of the depth is not timed but takes as long as ours).
    deadline = args.deadline
    skipped = []
    state = {}  # format -> its export, GGUF and what is counted from them

    def due(what):
        if deadline and time.time() > deadline:
            skipped.append(what)
            log("skipped (past --deadline): " + what)
            return False
        return True

    def ours_classic(fmt):
        try:
            model, export_info = ensure_export(launcher, cache, key, ckpt, fmt, args.keep)
        except RuntimeError as e:
            log(str(e))
            for t in args.threads:
                rows.append({"engine": "lucie.c", "format": fmt, "load": "—", "threads": t, "error": str(e)})
            return
        st = state[fmt] = {"model": model, "per_token": lucie_bytes_per_token(model),
                           "macs": lucie_macs_per_token(model), "shape": lucie_shape(model)}
        notes.append("lucie.c %s: %.3f GB of weights read and %.3f G multiply-accumulates of weight matrices per "
                     "token; export %s %.0f s, peak RSS %.1f GB."
                     % (fmt, st["per_token"] / 1e9, st["macs"] / 1e9, "(cached, recorded)"
                        if export_info.get("reused") else "took", export_info["seconds"],
                        export_info["peak_rss_bytes"] / 1e9))
        for t in args.threads:
            for mode in args.load_modes:
                row = {"engine": "lucie.c", "format": fmt, "key": fmt, "load": mode, "threads": t,
                       "file_bytes": os.path.getsize(model), "export_s": export_info["seconds"], "macs": st["macs"]}
                load_args = runner.load_args(mode)
                if load_args is None:
                    row["error"] = "run has no option for this load mode"
                    rows.append(row)
                    continue
                log("lucie.c %s, load %s, %d thread(s)" % (fmt, mode, t))
                try:
                    s = measure_ours(runner, model, t, load_args, plan)
                except RuntimeError as e:
                    row["error"] = str(e)
                    rows.append(row)
                    continue
                row["samples"] = s
                row["load_s"] = statistics.median(s["load_s"])
                row["rss"] = max(s["rss"])
                row["bytes_per_token"] = st["per_token"]
                rows.append(row)

    def ours_depths(fmt, t):
        st = state[fmt]
        load_args = runner.load_args(args.load_modes[0]) or []
        log("lucie.c %s, decode at depths %s, %d thread(s)" % (fmt, args.depths, t))
        for d in measure_depths(runner, st["model"], t, load_args, plan, work_dir):
            d.update(format=fmt, threads=t, weight_bytes=st["per_token"])
            d["kv_bytes"] = kv_bytes_per_token(st["shape"], d["kv"], mean_decode_depth(d["depth"], d["prompt"],
                                                                                      args.decode_tokens))
            d["bytes_per_token"] = st["per_token"] + d["kv_bytes"]
            depth_rows.append(d)

    def ours_batches(fmt, t):
        st = state[fmt]
        load_args = runner.load_args(args.load_modes[0]) or []
        batched = measure_batched(runner, st["model"], t, load_args, plan)
        for b in args.batches:
            rec = {"format": fmt, "threads": t, "B": b, "ours": batched[b]}
            if b in args.processes:
                log("  %d separate processes" % b)
                try:
                    rec["processes"] = measure_processes(args.run, st["model"], t, load_args, plan, b)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    rec["processes"] = {"error": str(e)}
            batch_rows.append(rec)

    def gguf_of(fmt):
        st = state.setdefault(fmt, {})
        if "gguf" not in st:
            try:
                path, info = ensure_gguf(cache, key, ckpt, fmt)
            except Exception as e:  # a gguf package too old/new for this writer, disk full...
                notes.append("llama.cpp %s: GGUF writing failed: %s" % (GGUF_TYPE[fmt], e))
                st["gguf"] = None
                return None
            st["gguf"], st["gguf_per_token"] = path, gguf_bytes_per_token(path)
            notes.append("llama.cpp %s: %.3f GB of weights read per decoded token (GGUF written in %.0f s)."
                         % (GGUF_TYPE[fmt], st["gguf_per_token"] / 1e9, info["seconds"]))
        return st["gguf"]

    llama_modes = []
    if any(m in ("mmap", "madvise") for m in args.load_modes):
        llama_modes.append(("mmap", True))
    if "read" in args.load_modes:
        llama_modes.append(("no-mmap", False))

    def llama_classic(fmt, t):
        gguf_path = gguf_of(fmt)
        if not gguf_path:
            return
        st = state[fmt]
        for mode, mmap in llama_modes:
            row = {"engine": "llama.cpp", "format": GGUF_TYPE[fmt], "key": fmt, "load": mode, "threads": t,
                   "file_bytes": os.path.getsize(gguf_path)}
            log("llama.cpp %s, %s, %d thread(s)" % (GGUF_TYPE[fmt], mode, t))
            try:
                s, build = measure_llama_cpp(launcher, llama_bench, gguf_path, t, llama_plan, mmap, runner.nearby)
            except (RuntimeError, ValueError) as e:
                row["error"] = str(e)
                rows.append(row)
                continue
            row.update(samples=s, rss=max(s["rss"]), llama_build=build)
            row["bytes_per_token"] = st["gguf_per_token"]
            rows.append(row)

    def llama_batches(fmt, t):
        gguf_path = gguf_of(fmt)
        if not gguf_path:
            return
        log("llama.cpp %s, batched decode %s" % (GGUF_TYPE[fmt], args.batches))
        try:
            lb = measure_llama_batched(launcher, llama_batched, gguf_path, t, plan)
        except (RuntimeError, ValueError) as e:
            lb = {}
            notes.append("llama.cpp %s: llama-batched-bench: %s" % (GGUF_TYPE[fmt], e))
        for rec in batch_rows:
            if rec["format"] == fmt and rec["threads"] == t and rec["B"] in lb:
                rec["llama"] = lb[rec["B"]]

    def llama_depth(fmt, t):
        gguf_path = gguf_of(fmt)
        if not gguf_path:
            return
        st = state[fmt]
        log("llama.cpp %s, decode at depth %d" % (GGUF_TYPE[fmt], args.llama_depth))
        d = {"format": GGUF_TYPE[fmt], "threads": t, "kv": "f16 (llama.cpp)", "depth": args.llama_depth,
             "prompt": 0, "weight_bytes": st["gguf_per_token"], "engine": "llama.cpp", "key": fmt}
        try:
            d.update(measure_llama_depth(launcher, llama_bench, gguf_path, t, args.llama_depth, args.decode_tokens,
                                         args.repeats, llama_modes[0][1] if llama_modes else True, runner.nearby))
            d["kv_bytes"] = kv_bytes_per_token(st["shape"], "f16", mean_decode_depth(args.llama_depth, 0,
                                                                              args.decode_tokens))
            d["bytes_per_token"] = st["gguf_per_token"] + d["kv_bytes"]
        except (RuntimeError, ValueError) as e:
            d["error"] = str(e)
        depth_rows.append(d)

    steps = [("lucie.c %s decode and prefill" % f, ours_classic, (f,)) for f in args.formats]
    for t in args.threads:
        steps += [("lucie.c %s at depths, %d threads" % (f, t), ours_depths, (f, t))
                  for f in args.formats if f in args.depth_formats]
        steps += [("lucie.c %s batched, %d threads" % (f, t), ours_batches, (f, t))
                  for f in args.formats if f in args.batch_formats]
    if llama_bench:
        for t in args.threads:
            for f in args.formats:
                steps.append(("llama.cpp %s decode and prefill, %d threads" % (GGUF_TYPE[f], t), llama_classic, (f, t)))
                if llama_batched and f in args.batch_formats:
                    steps.append(("llama.cpp %s batched, %d threads" % (GGUF_TYPE[f], t), llama_batches, (f, t)))
        if args.llama_depth:
            steps += [("llama.cpp %s at depth %d, %d threads" % (GGUF_TYPE[f], args.llama_depth, t), llama_depth,
                       (f, t)) for t in args.threads for f in args.formats if f in args.llama_depth_formats]
    for what, step, step_args in steps:
        if due(what) and (step is ours_classic or step_args[0] in state):
            step(*step_args)
            report(partial=True)
    probe_machine(bw_exe, peak_exe, args, bandwidth, peaks, "end")
    if skipped:
        notes.append("Not measured, the --deadline having passed: %s." % "; ".join(skipped))
    if not args.keep:
        for fmt, st in state.items():
            if st.get("model"):
                remove_quietly(st["model"], os.path.join(cache, "models", key, fmt + ".json"))
            if st.get("gguf"):
                remove_quietly(st["gguf"], st["gguf"] + ".json")

    report(partial=False)
    return 0


def probe_machine(bw_exe, peak_exe, args, bandwidth, peaks, when):
    """Measures read bandwidth and compute peak at each thread count, at the start and again at the end
    of the run: a probe that a neighbour's burst slows reads low (prefill then shows more than 100% of
    the "peak"), so each figure is the best of the two and the report lists both."""
    for t in sorted(set(args.threads)):
        variants = [(name, measure_bandwidth(bw_exe, t, args.bandwidth_mb, 10, huge, prefetch))
                    for name, huge, prefetch in BANDWIDTH_VARIANTS]
        b = bandwidth.setdefault(t, {"probes": []})
        b["probes"].append((when, {"variants": variants, "load": load_average()}))
        b["best"] = max(v["best_gbs"] for _, probe in b["probes"] for _, v in probe["variants"])
        log("bandwidth %d thread(s), %s of the run: best %.1f GB/s (%s)" % (
            t, when, max(v["best_gbs"] for _, v in variants),
            ", ".join("%s %.1f" % (name, v["best_gbs"]) for name, v in variants)))
    for t in sorted(set(args.threads)):
        probe = measure_peak(peak_exe, t)
        probe["load"] = load_average()
        p = peaks.setdefault(t, {"probes": []})
        p["probes"].append((when, probe))
        for k in ("int8_gmacs", "f32_gmacs"):
            p[k] = max(q[k] for _, q in p["probes"])
        log("compute peak %d thread(s), %s of the run: int8 %.1f GMAC/s, f32 FMA %.1f GMAC/s"
            % (t, when, probe["int8_gmacs"], probe["f32_gmacs"]))


def apply_rooflines(rows, depth_rows, bandwidth):
    """Each decode figure's roofline (bandwidth / bytes read per token) and % of it, against the best
    bandwidth measured so far, and against the bandwidth probed around each of its runs."""
    for r in rows + depth_rows:
        if "bytes_per_token" not in r:
            continue
        r["roofline"] = roofline_tokens_per_s(bandwidth[r["threads"]]["best"], r["bytes_per_token"])
        runs = r["samples"] if "samples" in r else r
        decode = runs.get("decode")
        if decode:
            r["percent"] = 100 * statistics.median(decode) / r["roofline"]
            r["percent_nearby"] = percent_of_nearby_roofline(decode, runs.get("decode_gbs", []),
                                                             r["bytes_per_token"])
            r["nearby_gbs"] = median_of(runs.get("decode_gbs", []))


def add_depth_ratios(depth_rows):
    """lucie.c's f16 cache against llama.cpp's (f16) at the same depth, format and threads."""
    ref = {(d["key"], d["threads"], d["depth"]): median_of(d["decode"]) for d in depth_rows
           if d.get("engine") == "llama.cpp" and "error" not in d}
    for d in depth_rows:
        if d.get("engine") != "llama.cpp" and d["kv"] == "f16" and "error" not in d:
            r = ref.get((d["format"], d["threads"], d["depth"]))
            if r:
                d["vs_llama"] = median_of(d["decode"]) / r


def add_batch_ratios(batch_rows):
    one = {(b["format"], b["threads"]): median_of(b["ours"]["decode"]) for b in batch_rows
           if b["B"] == 1 and "error" not in b["ours"]}
    for b in batch_rows:
        if "error" in b["ours"]:
            continue
        med = median_of(b["ours"]["decode"])
        if one.get((b["format"], b["threads"])):
            b["vs_b1"] = med / one[(b["format"], b["threads"])]
        if b.get("llama") and median_of(b["llama"]["decode"]):
            b["vs_llama"] = med / median_of(b["llama"]["decode"])


if __name__ == "__main__":
    sys.exit(main())
