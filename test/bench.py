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
     counted exactly from the exported file's entry table;
  4. runs `run MODEL --bench` for each format, load mode and thread count: decode tok/s over
     64 tokens after a short prompt, prefill tok/s for 64- and 512-token prompts, load time,
     peak RSS (from wait4), repeated (default 3 times): medians, with the spread;
  5. when llama.cpp's llama-bench is available, writes the same weights as GGUF (BF16, Q8_0,
     Q4_0) with the `gguf` package and measures llama.cpp the same way;
  6. prints one table and writes it as markdown (--out, default bench/results.md).

Cache layout ($LUCIE_BENCH_DIR, default ~/.cache/lucie-bench):
  checkpoints/KEY/     the random HF checkpoint (KEY names the shape, e.g. lucie-7b)
  models/KEY/FMT.bin   exported lucie files, FMT.json beside each: export time, export.py hash
  gguf/KEY/TYPE.gguf   the same weights for llama.cpp
  bin/bandwidth        test/bandwidth.c compiled with -O3 -march=native -fopenmp
  llama.cpp-src/, llama.cpp-build/bin/llama-bench   from --setup-llama-cpp
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

FORMATS = ("bf16", "q8", "q4")
LOAD_MODES = ("mmap", "madvise", "read")
# The llama.cpp type each of our formats is compared with.
GGUF_TYPE = {"bf16": "BF16", "q8": "Q8_0", "q4": "Q4_0"}
# A scaled-down model for smoke runs (--small): real vocabulary and tokenizer, small matrices.
SMALL_SHAPE = {"hidden": 512, "ffn": 1536, "layers": 4, "heads": 8, "kv-heads": 2}
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
    def __init__(self, launcher, exe):
        self.launcher, self.exe = launcher, exe
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

    def bench(self, model, threads, prompt, n_gen, load_args):
        cmd = [self.exe, model, "--bench", "-t", str(threads), "--bench-prompt", str(prompt),
               "-n", str(n_gen)] + load_args
        m = self.launcher.run(cmd)
        if m.returncode != 0:
            raise RuntimeError("run --bench failed: " + m.last_error_line())
        lines = [l for l in m.stdout.splitlines() if l.strip().startswith("{")]
        if not lines:
            raise RuntimeError("run --bench printed no JSON line")
        result = json.loads(lines[-1])
        result["peak_rss_bytes"] = m.peak_rss_bytes
        return result


def measure_ours(runner, model, threads, load_args, plan):
    """plan: repeats, decode_prompt, decode_tokens, prefills. Runs are interleaved so that
    any drift of the machine spreads over every metric alike."""
    samples = {"load_s": [], "decode": [], "rss": []}
    for p in plan["prefills"]:
        samples["pp%d" % p] = []
    runner.bench(model, threads, 8, 2, load_args)  # warm-up: page cache, CPU frequency
    for _ in range(plan["repeats"]):
        r = runner.bench(model, threads, plan["decode_prompt"], plan["decode_tokens"], load_args)
        samples["decode"].append(r["decode_tok_s"])
        samples["load_s"].append(r["load_s"])
        samples["rss"].append(r["peak_rss_bytes"])
        for p in plan["prefills"]:
            r = runner.bench(model, threads, p, 0, load_args)
            samples["pp%d" % p].append(r["prefill_tok_s"])
            samples["load_s"].append(r["load_s"])
            samples["rss"].append(r["peak_rss_bytes"])
    return samples


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
    log("building llama-bench (%s jobs, niced; about half an hour on 2 cores)" % jobs)
    subprocess.run(["nice", "-n", "19", "cmake", "--build", build, "--target", "llama-bench", "-j", jobs],
                   check=True)
    exe = os.path.join(build, "bin", "llama-bench")
    log("built %s" % exe)
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


def measure_llama_cpp(launcher, exe, gguf_path, threads, plan, mmap):
    """One llama-bench process runs every test (pp64, pp512, tg64) `repeats` times after its
    own warm-up; its JSON output keeps each sample, of which we take the median."""
    prompts = ",".join(str(p) for p in plan["prefills"])
    cmd = [exe, "-m", gguf_path, "-t", str(threads), "-p", prompts, "-n", str(plan["decode_tokens"]),
           "-r", str(plan["repeats"]), "-o", "json"] + llama_bench_mmap_args(exe, mmap)
    m = launcher.run(cmd)
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
        elif rec.get("n_prompt", 0) > 0 and rec.get("n_gen", 0) == 0:
            samples["pp%d" % rec["n_prompt"]] = list(values)
    return samples, build


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
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+changes" if dirty else "") if rev else "unknown"
    except OSError:
        return "unknown"


def build_table(rows, prefills):
    head = (["engine", "format", "load", "threads", "file GB", "export s", "load s", "peak RSS GB"]
            + ["prefill %d tok/s" % p for p in prefills]
            + ["decode tok/s", "roofline tok/s", "% of roofline", "vs llama.cpp: decode"]
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
                      fmt_num(r.get("percent"), "%.0f%%"), fmt_num(r.get("vs_decode"), "%.2fx")]
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
                    help="1 repeat, 16 decoded tokens, prefill 64 only, mmap only")
    ap.add_argument("--small", action="store_true",
                    help="a scaled-down model (real vocabulary, %s) for smoke runs" %
                    ", ".join("%s %d" % kv for kv in SMALL_SHAPE.items()))
    ap.add_argument("--config", default=os.path.join(LUCIE_BASE, "config.json"),
                    help="config.json whose shapes the random checkpoint has")
    ap.add_argument("--shards", type=int, default=4, help="safetensors shards of the checkpoint")
    ap.add_argument("--cache", default=os.environ.get("LUCIE_BENCH_DIR") or
                    os.path.join(os.path.expanduser("~"), ".cache", "lucie-bench"),
                    help="cache directory (default $LUCIE_BENCH_DIR or ~/.cache/lucie-bench)")
    ap.add_argument("--out", default=None, help="markdown output (default bench/results.md; "
                    "quick/small runs default to the cache directory)")
    ap.add_argument("--run", default=os.path.join(REPO, "run"), help="the run binary")
    ap.add_argument("--keep", action="store_true",
                    help="keep exported models and GGUFs in the cache and reuse them next time")
    ap.add_argument("--decode-tokens", type=int, default=None, help="tokens decoded (default 64)")
    ap.add_argument("--decode-prompt", type=int, default=16, help="prompt before decoding (default 16)")
    ap.add_argument("--prefill", default=None, help="prefill prompt lengths (default 64,512)")
    ap.add_argument("--bandwidth-mb", type=int, default=2048, help="bandwidth buffer size in MB")
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
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ap.error("--threads wants integers")
    if args.load_modes is None:
        args.load_modes = "mmap" if args.quick else ",".join(LOAD_MODES)
    args.load_modes = [m for m in args.load_modes.split(",") if m]
    bad = [m for m in args.load_modes if m not in LOAD_MODES]
    if bad:
        ap.error("unknown load mode(s): %s" % ",".join(bad))
    if args.quick:
        args.repeats = 1
    if args.decode_tokens is None:
        args.decode_tokens = 16 if args.quick else 64
    if args.prefill is None:
        args.prefill = "64" if args.quick else "64,512"
    args.prefill = [int(p) for p in args.prefill.split(",") if p]
    if args.repeats < 1 or min(args.threads) < 1 or args.decode_tokens < 1 or min(args.prefill) < 1:
        ap.error("repeats, threads, token counts must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    launcher = Launcher()  # first, while this process is small (see Launcher)
    args.load_before = load_average()
    try:
        return benchmark(args, launcher)
    finally:
        launcher.close()


def benchmark(args, launcher):
    cache = os.path.abspath(args.cache)
    os.makedirs(cache, exist_ok=True)
    if args.setup_llama_cpp:
        setup_llama_cpp(cache)
        return 0
    if not os.path.exists(args.config):
        print("bench: no config %s (test/data/lucie is part of the repository)" % args.config, file=sys.stderr)
        return 2
    if not os.access(args.run, os.X_OK):
        print("bench: no %s binary: build it first (make)" % args.run, file=sys.stderr)
        return 2
    with open(args.config) as f:
        config = json.load(f)
    key = checkpoint_key(config, args.small)
    quick = args.quick or args.small
    out_path = args.out or (os.path.join(cache, "results-%s%s.md" % (key, "-quick" if args.quick else ""))
                            if quick else os.path.join(REPO, "bench", "results.md"))
    plan = {"repeats": args.repeats, "decode_prompt": args.decode_prompt,
            "decode_tokens": args.decode_tokens, "prefills": args.prefill}
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

    ckpt, ckpt_info = ensure_checkpoint(launcher, cache, key, args.config, args.small, args.shards)
    notes.append("Random checkpoint `%s` (%.1f GB bf16 safetensors, %d shards): created once in %.0f s, cached."
                 % (key, ckpt_info["bytes"] / 1e9, args.shards, ckpt_info["seconds"]))

    bw_exe = build_bandwidth(cache)
    bandwidth = {}
    for t in sorted(set(args.threads)):
        variants = [(name, measure_bandwidth(bw_exe, t, args.bandwidth_mb, 10, huge, prefetch))
                    for name, huge, prefetch in BANDWIDTH_VARIANTS]
        bandwidth[t] = {"variants": variants, "best": max(v["best_gbs"] for _, v in variants)}
        log("bandwidth %d thread(s): best %.1f GB/s (%s)" % (t, bandwidth[t]["best"], ", ".join(
            "%s %.1f" % (name, v["best_gbs"]) for name, v in variants)))

    runner = Runner(launcher, args.run)
    rows = []
    for fmt in args.formats:
        try:
            model, export_info = ensure_export(launcher, cache, key, ckpt, fmt, args.keep)
        except RuntimeError as e:
            log(str(e))
            for t in args.threads:
                rows.append({"engine": "lucie.c", "format": fmt, "load": "—", "threads": t, "error": str(e)})
            continue
        file_bytes = os.path.getsize(model)
        per_token = lucie_bytes_per_token(model)
        notes.append("lucie.c %s: %.3f GB of weights read per decoded token; export %s %.0f s, peak RSS %.1f GB."
                     % (fmt, per_token / 1e9, "(cached, recorded)" if export_info.get("reused") else "took",
                        export_info["seconds"], export_info["peak_rss_bytes"] / 1e9))
        for t in args.threads:
            for mode in args.load_modes:
                row = {"engine": "lucie.c", "format": fmt, "key": fmt, "load": mode, "threads": t,
                       "file_bytes": file_bytes, "export_s": export_info["seconds"]}
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
                row["roofline"] = bandwidth[t]["best"] * 1e9 / per_token
                row["percent"] = 100 * statistics.median(s["decode"]) / row["roofline"]
                rows.append(row)
        if not args.keep:
            remove_quietly(model, os.path.join(cache, "models", key, fmt + ".json"))

        if llama_bench:
            try:
                gguf_path, gguf_info = ensure_gguf(cache, key, ckpt, fmt)
            except Exception as e:  # a gguf package too old/new for this writer, disk full...
                notes.append("llama.cpp %s: GGUF writing failed: %s" % (GGUF_TYPE[fmt], e))
                continue
            gguf_bytes = os.path.getsize(gguf_path)
            gguf_per_token = gguf_bytes_per_token(gguf_path)
            notes.append("llama.cpp %s: %.3f GB of weights read per decoded token (GGUF written in %.0f s)."
                         % (GGUF_TYPE[fmt], gguf_per_token / 1e9, gguf_info["seconds"]))
            llama_modes = []
            if any(m in ("mmap", "madvise") for m in args.load_modes):
                llama_modes.append(("mmap", True))
            if "read" in args.load_modes:
                llama_modes.append(("no-mmap", False))
            for t in args.threads:
                for mode, mmap in llama_modes:
                    row = {"engine": "llama.cpp", "format": GGUF_TYPE[fmt], "key": fmt, "load": mode,
                           "threads": t, "file_bytes": gguf_bytes}
                    log("llama.cpp %s, %s, %d thread(s)" % (GGUF_TYPE[fmt], mode, t))
                    try:
                        s, build = measure_llama_cpp(launcher, llama_bench, gguf_path, t, plan, mmap)
                    except (RuntimeError, ValueError) as e:
                        row["error"] = str(e)
                        rows.append(row)
                        continue
                    row.update(samples=s, rss=max(s["rss"]), llama_build=build)
                    row["roofline"] = bandwidth[t]["best"] * 1e9 / gguf_per_token
                    if s["decode"]:
                        row["percent"] = 100 * statistics.median(s["decode"]) / row["roofline"]
                    rows.append(row)
            if not args.keep:
                remove_quietly(gguf_path, gguf_path + ".json")

    add_ratios(rows, args.prefill)
    builds = sorted({r["llama_build"] for r in rows if r.get("llama_build")})
    if builds:
        notes.append("llama.cpp: llama-bench %s%s." % (", ".join(builds), llama_cpp_origin(llama_bench, cache)))

    notes.append("Peak RSS is read from wait4(); it cannot be below the RSS of the launcher process "
                 "that starts each program (%.0f MB here)." % (launcher.baseline_bytes / 1e6))
    table = build_table(rows, args.prefill)
    bw_lines = ["- memory read bandwidth, %d thread(s): **%.1f GB/s** (best of 10 passes of each variant; %s)"
                % (t, b["best"], "; ".join("%s: best %.1f, median %.1f" % (name, v["best_gbs"], v["median_gbs"])
                                           for name, v in b["variants"])) for t, b in sorted(bandwidth.items())]
    doc = "\n".join([
        "# lucie.c benchmark (%s)" % key,
        "",
        "- %s" % datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "- machine: %s; load average %s before the run, %s after (other work skews every number)"
        % (machine_description(), args.load_before, load_average()),
        "- lucie.c revision: %s" % repo_revision(),
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
        ] + bw_lines + [
        "",
        table,
        "",
        "Roofline = best read bandwidth / bytes of weights read per token (every matrix of the file as "
        "stored, one embedding row; the KV cache and activations are not counted). Load time is until "
        "the model is opened (mapped pages are then read during the first tokens); peak RSS is the "
        "process maximum, page cache of mapped files included. vs llama.cpp = lucie.c / llama.cpp's "
        "best load mode at the same precision and thread count.",
        "",
        ] + ["- " + n for n in notes]) + "\n"
    print(doc)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        f.write(doc)
    log("wrote %s" % out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
