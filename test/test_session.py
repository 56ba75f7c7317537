"""Session save/restore (prompt caching).

A session that evaluated a prompt is saved; a fresh session restores the file and
evaluates more tokens: its logits must be bit-identical to those of a session that
never stopped, and sampling must go on exactly as it would have (RNG state and the
repetition-penalty history are part of the saved state). Damaged files, files of
another model and files too long for the session are refused with an error and leave
the session as it was.
"""

import os
import subprocess
import sys

import pytest

from conftest import (LUCIE_INSTRUCT, STORIES_TIED, STORIES_UNTIED, TEST_DIR, export_model, need_binary, need_dir,
                      require)

np = require("numpy")

SESSION = os.path.join(TEST_DIR, "session")

# 40 prompt tokens and 12 continuation tokens of real stories260K text.
TEXT = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park "
        "with her big red ball. One day, she saw a big dog near the tree. The dog was sad because it "
        "could not find its home.")
N_PROMPT = 40
N_MORE = 12
HEADER = 48  # bytes before the token ids (lucie.c, "saving and restoring a session")
V1_HEADER = 40  # the same in version 1 files, which have no KV cache type field

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Exported models by name, built on first use."""
    made = {}

    def get(name):
        if name not in made:
            out = str(tmp_path_factory.mktemp("session") / (name + ".bin"))
            if name == "stories":
                export_model(need_dir(STORIES_UNTIED), out, "f32")
            elif name == "stories-tied":
                export_model(need_dir(STORIES_TIED), out, "f32")
            elif name == "wide":  # head_dim 64: q8 groups of 32 never span two heads, whatever the layout
                import make_checkpoint
                hf_dir = make_checkpoint.make_checkpoint(
                    str(tmp_path_factory.mktemp(name)), config=os.path.join(need_dir(LUCIE_INSTRUCT), "config.json"),
                    tokenizer_dir=LUCIE_INSTRUCT, hidden=128, ffn=256, layers=2, heads=4, kv_heads=2, head_dim=64,
                    std=0.1, seed=3)
                export_model(hf_dir, out, "f32")
            else:  # "random-1", "random-2": same Lucie-like shape, different weights
                import make_checkpoint
                seed = int(name.split("-")[1])
                hf_dir = make_checkpoint.make_checkpoint(
                    str(tmp_path_factory.mktemp(name)), config=os.path.join(need_dir(LUCIE_INSTRUCT), "config.json"),
                    tokenizer_dir=LUCIE_INSTRUCT, hidden=64, ffn=128, layers=2, heads=4, kv_heads=2, std=0.1,
                    seed=seed)
                export_model(hf_dir, out, "f32")
            made[name] = out
        return made[name]
    return get


@pytest.fixture(scope="module")
def token_ids():
    tokenizers = require("tokenizers")
    tok = tokenizers.Tokenizer.from_file(os.path.join(need_dir(STORIES_UNTIED), "tokenizer.json"))
    ids = tok.encode(TEXT).ids
    assert len(ids) >= N_PROMPT + N_MORE
    return ids[:N_PROMPT], ids[N_PROMPT:N_PROMPT + N_MORE]


def ids_arg(ids):
    return ",".join(str(i) for i in ids)


def run(model_bin, options, commands, tmp_path, name="logits"):
    """Runs test/session with --logits; returns (stdout lines, logits array, raw bytes)."""
    need_binary(SESSION)
    path = str(tmp_path / (name + ".f32"))
    proc = subprocess.run([SESSION, model_bin, "--threads", "1", "--logits", path] + options + commands,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0, "test/session failed: %s" % proc.stderr.strip()
    with open(path, "rb") as f:
        raw = f.read()
    return proc.stdout.splitlines(), raw


def line(lines, key):
    found = [l for l in lines if l.startswith(key + ":")]
    assert len(found) == 1, "no single %r line in %r" % (key, lines)
    return found[0][len(key) + 1:].strip()


SAMPLER = ["--temp", "0.9", "--top-k", "50", "--penalty", "1.2"]


@pytest.mark.parametrize("kv", ["f32", "f16", "q8"])
def test_restore_is_bit_identical(kv, models, token_ids, tmp_path):
    model = models("stories")
    prompt, more = token_ids
    saved = str(tmp_path / "prompt.session")
    # The session that never stops: prompt, save, more tokens one at a time, sampling.
    ref_lines, ref = run(model, ["--ctx", "128", "--seed", "1", "--kv", kv] + SAMPLER,
                         ["eval", ids_arg(prompt), "save", saved, "step", ids_arg(more), "sample", "30"],
                         tmp_path, "ref")
    assert len(ref) == N_MORE * 512 * 4
    # Fresh sessions restoring the file: same context, a longer one, and one that had
    # already evaluated other tokens (the restore replaces them). Another seed: the
    # saved RNG state wins, as it must for the samples to continue identically.
    for i, (ctx, before) in enumerate([(128, []), (256, []), (128, ["eval", ids_arg(more[::-1])])]):
        lines, got = run(model, ["--ctx", str(ctx), "--seed", "777", "--kv", kv] + SAMPLER,
                         before + ["load", saved, "pos", "step", ids_arg(more), "sample", "30"], tmp_path, "got%d" % i)
        assert line(lines, "load") == "ok"
        assert line(lines, "pos") == str(N_PROMPT)
        assert got == ref, "restored session (context %d) gives different logits" % ctx
        assert line(lines, "sample") == line(ref_lines, "sample")
    assert len(line(ref_lines, "sample").split()) > 5


def test_restored_prompt_matches_fresh_evaluation(models, token_ids, tmp_path):
    """The restored cache is the prompt's: continuing from it gives the logits a
    session computing the whole text gets (same calls, hence bit-identical)."""
    model = models("stories")
    prompt, more = token_ids
    saved = str(tmp_path / "a.session")
    run(model, ["--ctx", "64"], ["eval", ids_arg(prompt), "save", saved], tmp_path, "unused")
    _, fresh = run(model, ["--ctx", "64"], ["eval", ids_arg(prompt), "step", ids_arg(more)], tmp_path, "fresh")
    _, restored = run(model, ["--ctx", "64"], ["load", saved, "step", ids_arg(more)], tmp_path, "restored")
    assert restored == fresh
    # ... and differs from evaluating the continuation without the prompt.
    _, alone = run(model, ["--ctx", "64"], ["step", ids_arg(more)], tmp_path, "alone")
    assert alone != fresh


def damaged_files(good, tmp_path, other_model_files):
    """(description, path) of files a session must refuse."""
    with open(good, "rb") as f:
        data = f.read()
    cases = []

    def add(desc, content):
        path = str(tmp_path / ("bad-%d.session" % len(cases)))
        with open(path, "wb") as f:
            f.write(content)
        cases.append((desc, path))

    add("empty file", b"")
    add("truncated header", data[:20])
    add("truncated by one byte", data[:-1])
    add("truncated to half", data[:len(data) // 2])
    add("trailing byte", data + b"\0")
    add("bad magic", b"X" + data[1:])
    add("a model file, not a session", b"LUCIEBIN" + data[8:])
    version = bytearray(data)
    version[8] ^= 0x7F
    add("unknown version", bytes(version))
    # The header fields, found by their values: kv_dim (64/8*4 = 32), n_layers (5),
    # position (40), each written as a little-endian u32 after magic and version.
    for desc, value, new in (("kv_dim changed", 32, 64), ("n_layers changed", 5, 4),
                             ("position one more", N_PROMPT, N_PROMPT + 1),
                             ("position one less", N_PROMPT, N_PROMPT - 1)):
        header = bytearray(data)
        at = data.index(np.uint32(value).tobytes(), 12, 24)
        header[at:at + 4] = np.uint32(new).tobytes()
        add(desc, bytes(header))
    # A token id of the history outside the vocabulary (the history is read back
    # for the repetition penalty): the first id, right after the header as lucie.c
    # documents the layout.
    bad_token = bytearray(data)
    bad_token[HEADER:HEADER + 4] = np.int32(100000).tobytes()
    add("token id out of range", bytes(bad_token))
    negative_token = bytearray(data)
    negative_token[HEADER + 4 * 7:HEADER + 4 * 8] = np.int32(-5).tobytes()
    add("negative token id", bytes(negative_token))
    for desc, value in (("KV cache type unknown", 9), ("KV cache type f16 in an f32 file", 2)):
        kv_type = bytearray(data)
        kv_type[40:44] = np.uint32(value).tobytes()
        add(desc, bytes(kv_type))
    for desc, value in (("n_kv_heads changed", 2), ("n_kv_heads zero", 0)):  # stories260K has 4
        heads = bytearray(data)
        assert data[44:48] == np.uint32(4).tobytes()
        heads[44:48] = np.uint32(value).tobytes()
        add(desc, bytes(heads))
    # NaN / infinity in the KV cache (after the header and the ids): the first key of
    # the first layer, and the last value of the last layer.
    kv_start = HEADER + 4 * N_PROMPT
    for desc, at, value in (("NaN in the first cached key", kv_start, np.float32("nan")),
                            ("inf in the last cached value", len(data) - 4, np.float32("inf"))):
        poisoned = bytearray(data)
        poisoned[at:at + 4] = value.tobytes()
        add(desc, bytes(poisoned))
    for desc, path in other_model_files:
        cases.append((desc, path))
    return cases


def test_bad_files_are_refused_and_change_nothing(models, token_ids, tmp_path):
    model = models("stories")
    prompt, more = token_ids
    good = str(tmp_path / "good.session")
    _, ref = run(model, ["--ctx", "64"], ["eval", ids_arg(prompt), "save", good, "step", ids_arg(more)], tmp_path, "ref")

    # Sessions of other models: a different architecture (tied stories260K: no
    # lm_head), and the same architecture with other weights.
    tied = str(tmp_path / "tied.session")
    run(models("stories-tied"), ["--ctx", "64"], ["eval", ids_arg(prompt), "save", tied], tmp_path, "unused")
    others = [("saved with the tied model", tied)]

    for desc, path in damaged_files(good, tmp_path, others):
        lines, got = run(model, ["--ctx", "64"], ["eval", ids_arg(prompt), "load", path, "pos", "step", ids_arg(more)],
                         tmp_path, "after")
        status = line(lines, "load")
        assert status != "ok", "%s: accepted" % desc
        code, _, message = status.partition(" ")
        assert int(code) < 0 and message, "%s: %r" % (desc, status)
        assert "\n" not in message
        assert int(code) == -2, "%s: status %s, expected LUCIE_EFORMAT" % (desc, code)
        print("%s -> %s" % (desc, status))
        # The session is unchanged: same position, and it continues exactly as if
        # the load had never been tried.
        assert line(lines, "pos") == str(N_PROMPT), "%s: position changed" % desc
        assert got == ref, "%s: the failed load changed the session" % desc


def test_session_of_other_weights_is_refused(models, tmp_path):
    """Two models of identical shape and tokenizer that differ only in their weights:
    a cache computed with one is meaningless for the other."""
    one, two = models("random-1"), models("random-2")
    ids = "0,1000,2000,3000,4000,5000,6000,7000"
    saved = str(tmp_path / "one.session")
    run(one, ["--ctx", "32"], ["eval", ids, "save", saved], tmp_path, "unused")
    lines, _ = run(one, ["--ctx", "32"], ["load", saved, "pos"], tmp_path, "same")
    assert line(lines, "load") == "ok"
    lines, _ = run(two, ["--ctx", "32"], ["load", saved, "pos"], tmp_path, "other")
    assert line(lines, "load").startswith("-2 "), "a session of other weights was accepted"
    assert line(lines, "pos") == "0"


def test_context_too_small_is_refused(models, token_ids, tmp_path):
    model = models("stories")
    prompt, more = token_ids
    saved = str(tmp_path / "long.session")
    run(model, ["--ctx", "64"], ["eval", ids_arg(prompt), "save", saved], tmp_path, "unused")
    lines, small = run(model, ["--ctx", "32"], ["eval", ids_arg(more), "load", saved, "pos", "step", "5"], tmp_path,
                       "small")
    code = int(line(lines, "load").split()[0])
    assert code == -5  # LUCIE_ECONTEXT
    assert line(lines, "pos") == str(N_MORE)
    _, expected = run(model, ["--ctx", "32"], ["eval", ids_arg(more), "step", "5"], tmp_path, "expected")
    assert small == expected


def test_missing_file(models, tmp_path):
    lines, _ = run(models("stories"), ["--ctx", "16"], ["load", str(tmp_path / "nope.session")], tmp_path, "x")
    assert line(lines, "load").startswith("-1 ")  # LUCIE_EIO


def test_empty_session_round_trip(models, token_ids, tmp_path):
    """A session saved before any token restores to position 0."""
    model = models("stories")
    prompt, _ = token_ids
    saved = str(tmp_path / "empty.session")
    run(model, ["--ctx", "16"], ["save", saved], tmp_path, "unused")
    lines, got = run(model, ["--ctx", "64"], ["eval", "1,2,3", "load", saved, "pos", "step", ids_arg(prompt[:5])],
                     tmp_path, "got")
    assert line(lines, "load") == "ok" and line(lines, "pos") == "0"
    _, expected = run(model, ["--ctx", "64"], ["step", ids_arg(prompt[:5])], tmp_path, "expected")
    assert got == expected


def _interrupt_writes_at(limit):
    """preexec_fn: files may not grow past `limit` bytes, the way a full disk (or a crash)
    stops a write halfway; SIGXFSZ ignored so that the write fails with an error."""
    def apply():
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.skipif(sys.platform == "win32", reason="needs RLIMIT_FSIZE")
def test_interrupted_save_keeps_the_previous_file(models, token_ids, tmp_path):
    """A save that cannot finish fails with one line and leaves the previous save as it
    was (written aside, then renamed over it), with nothing half-written left behind."""
    model = models("stories")
    prompt, more = token_ids
    saves = tmp_path / "saves"
    saves.mkdir()
    saved = str(saves / "prompt.session")
    run(model, ["--ctx", "64"], ["eval", ids_arg(prompt), "save", saved], tmp_path, "unused")
    with open(saved, "rb") as f:
        before = f.read()
    need_binary(SESSION)
    proc = subprocess.run([SESSION, model, "--ctx", "64", "--threads", "1", "eval", ids_arg(prompt + more),
                           "save", saved], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          preexec_fn=_interrupt_writes_at(len(before) // 2))
    message = proc.stderr.strip()
    assert proc.returncode == 1 and "\n" not in message and "write error" in message, message
    with open(saved, "rb") as f:
        assert f.read() == before, "the interrupted save damaged the previous file"
    assert os.listdir(str(saves)) == ["prompt.session"]
    lines, _ = run(model, ["--ctx", "64"], ["load", saved, "pos"], tmp_path, "after")
    assert line(lines, "load") == "ok" and line(lines, "pos") == str(N_PROMPT)


def position_major(data, version):
    """A version-3 session file (data) rewritten as `version` (1 or 2) wrote it: the same
    tokens and values, but per layer the key rows and the value rows position by position,
    one row holding every KV head's values of its position (version 3: KV head by KV head,
    each head's rows in position order). A version-3 q8 row is its head's scales (one per
    32 values) then its codes; a version-2 row had all the position's scales, then all its
    codes. Version 1 has no KV type field (a 40-byte header)."""
    kv_dim, n_layers, pos = (int(v) for v in np.frombuffer(data[12:24], "<u4"))
    kv_type, n_kv_heads = (int(v) for v in np.frombuffer(data[40:48], "<u4"))
    assert data[8:12] == np.uint32(3).tobytes() and n_kv_heads > 0 and kv_dim % n_kv_heads == 0
    head_dim = kv_dim // n_kv_heads
    body = np.frombuffer(data[HEADER + 4 * pos:], np.uint8)
    row = body.size // (n_layers * 2 * n_kv_heads * pos)
    assert body.size == n_layers * 2 * n_kv_heads * pos * row
    scale_bytes = 4 * -(-head_dim // 32) if kv_type == 3 else 0  # LUCIE_KV_Q8
    assert row == scale_bytes + head_dim * {1: 4, 2: 2, 3: 1}[kv_type]
    rows = body.reshape(n_layers, 2, n_kv_heads, pos, row).transpose(0, 1, 3, 2, 4)  # [layer][k/v][pos][head]
    scales = rows[..., :scale_bytes].reshape(n_layers, 2, pos, n_kv_heads * scale_bytes)
    values = rows[..., scale_bytes:].reshape(n_layers, 2, pos, n_kv_heads * (row - scale_bytes))
    header = data[:8] + np.uint32(version).tobytes() + data[12:V1_HEADER]
    if version == 2:
        header += data[V1_HEADER:44] + np.uint32(0).tobytes()
    return header + data[HEADER:HEADER + 4 * pos] + np.concatenate([scales, values], axis=-1).tobytes()


@pytest.mark.parametrize("version,kv,name", [(1, "f32", "stories"), (2, "f32", "stories"), (2, "f16", "stories"),
                                             (2, "q8", "wide")])
def test_position_major_files_load(version, kv, name, models, token_ids, tmp_path):
    """Files written before the head-major cache (version 2: per position, one row of all
    the heads' values; version 1: the same without a KV type, f32) restore exactly: the
    loader cuts their rows into head rows (q8: when head_dim is a multiple of 32, so that
    no group spans two heads). A version-1 file refuses to load into other cache types
    with a message naming both."""
    model = models(name)
    prompt, more = token_ids
    saved = str(tmp_path / "v3.session")
    _, ref = run(model, ["--ctx", "64", "--kv", kv], ["eval", ids_arg(prompt), "save", saved, "step",
                 ids_arg(more)], tmp_path, "ref")
    with open(saved, "rb") as f:
        data = f.read()
    assert data[40:44] == np.uint32({"f32": 1, "f16": 2, "q8": 3}[kv]).tobytes()
    old = str(tmp_path / ("v%d.session" % version))
    with open(old, "wb") as f:
        f.write(position_major(data, version))
    lines, got = run(model, ["--ctx", "64", "--kv", kv], ["load", old, "pos", "step", ids_arg(more)], tmp_path, "old")
    assert line(lines, "load") == "ok" and line(lines, "pos") == str(N_PROMPT)
    assert got == ref
    if version == 1:
        for other in ("f16", "q8"):
            lines, _ = run(model, ["--ctx", "64", "--kv", other], ["load", old, "pos"], tmp_path, "v1-" + other)
            status = line(lines, "load")
            assert status.startswith("-2 ") and "holds a f32 KV cache" in status and other in status, status
            assert line(lines, "pos") == "0"


def test_version_2_q8_file_is_refused(models, token_ids, tmp_path):
    """Version 2's q8 rows grouped a whole position's values by 32: with stories260K's
    head_dim 8 a group spans 4 heads, which no head row can hold exactly, so such a file
    is refused with a message saying so, and the session is left as it was."""
    model = models("stories")
    prompt, _ = token_ids
    saved = str(tmp_path / "v3.session")
    run(model, ["--ctx", "64", "--kv", "q8"], ["eval", ids_arg(prompt), "save", saved], tmp_path, "ref")
    with open(saved, "rb") as f:
        data = f.read()
    old = str(tmp_path / "v2.session")
    with open(old, "wb") as f:
        f.write(position_major(data, 2))
    lines, _ = run(model, ["--ctx", "64", "--kv", "q8"], ["eval", ids_arg(prompt[:3]), "load", old, "pos"], tmp_path,
                   "v2-q8")
    status = line(lines, "load")
    assert status.startswith("-2 ") and "q8" in status and "version 2" in status and "head_dim 8" in status, status
    assert line(lines, "pos") == "3"


@pytest.mark.parametrize("kv", ["f16", "q8"])
def test_poisoned_cache_of_each_type_is_refused(kv, models, token_ids, tmp_path):
    """A non-finite value in a saved f16 cache (an inf/NaN half) or q8 cache (a NaN
    scale) is refused like one in an f32 cache, and leaves the session as it was."""
    model = models("stories")
    prompt, more = token_ids
    good = str(tmp_path / "good.session")
    _, ref = run(model, ["--ctx", "64", "--kv", kv], ["eval", ids_arg(prompt), "save", good, "step", ids_arg(more)],
                 tmp_path, "ref")
    with open(good, "rb") as f:
        data = bytearray(f.read())
    first_row = HEADER + 4 * N_PROMPT
    if kv == "f16":
        data[first_row + 6:first_row + 8] = np.uint16(0x7c00).tobytes()  # +inf, 4th key of the first row
    else:
        data[first_row:first_row + 4] = np.float32("nan").tobytes()  # the first row's first scale
    bad = str(tmp_path / "bad.session")
    with open(bad, "wb") as f:
        f.write(bytes(data))
    lines, got = run(model, ["--ctx", "64", "--kv", kv], ["eval", ids_arg(prompt), "load", bad, "pos", "step",
                     ids_arg(more)], tmp_path, "after")
    assert line(lines, "load").startswith("-2 ") and "NaN or infinite" in line(lines, "load")
    assert line(lines, "pos") == str(N_PROMPT) and got == ref
