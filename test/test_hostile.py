"""Hostile input: damaged model files, bad command lines, and replayed fuzzer findings.

Every case starts from a valid model exported by export.py (tiny self-made checkpoints from
test/fuzz_models.py, so nothing here needs test/data) and damages it with struct at the
positions lucie.h's FILE FORMAT table gives (read through conftest, not restated here).
Each must be refused by ./run with exactly one line on stderr that names the problem and
the documented exit code (1 runtime error, 2 usage), nothing on stdout, and no crash. When
the suite runs under `make test SANITIZE=1`, AddressSanitizer/UBSan/LeakSanitizer report
to stderr and change the exit code, so the same assertions also mean "no leak, no UB".
"""

import glob
import math
import os
import shutil
import struct
import subprocess

import pytest

from conftest import REPO, RUN, TEST_DIR, entry_spec, header_spec, need_binary

import fuzz_models

CORPUS = os.path.join(TEST_DIR, "fuzz_corpus")
TIMEOUT = 120
SANITIZER_WORDS = ("Sanitizer", "runtime error:", "Segmentation fault", "core dumped")


# ---- building and reading models -------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{'lucie': bytes, 'llama': bytes}: an untied bf16 model with a Lucie-like tokenizer
    (byte fallback, every normalizer/decoder op type) and a tied f32 one with a
    Llama-2-like tokenizer."""
    out = tmp_path_factory.mktemp("hostile_models")
    result = {}
    for key, kind in (("lucie", "lucie-like"), ("llama", "llama-like")):
        path = str(out / (key + ".bin"))
        fuzz_models.make_model(kind, path)
        with open(path, "rb") as f:
            result[key] = f.read()
    return result


def hfield(name):
    """(offset, struct format) of a header field, from lucie.h."""
    fmts = {"u32": "<I", "i32": "<i", "u64": "<Q", "f32": "<f", "f64": "<d"}
    for offset, size, kind, fname, count in header_spec():
        if fname == name:
            return offset, ("<%d%s" % (count, fmts[kind][1]) if count else fmts.get(kind))
    raise KeyError(name)


def efield(name):
    """Offset of a typed field inside a 128-byte entry, from lucie.h."""
    for offset, size, kind, fname, count in entry_spec():
        if fname == name:
            return offset
    raise KeyError(name)


def header_get(data, name):
    offset, fmt = hfield(name)
    return struct.unpack_from(fmt, data, offset)[0]


def header_set(data, name, value):
    data = bytearray(data)
    offset, fmt = hfield(name)
    struct.pack_into(fmt, data, offset, value)
    return data


def entries(data):
    """[(index, name, base, dtype, rows, cols, offset, size)] in table order."""
    out = []
    first = header_get(data, "header_size")
    name_size = efield("dtype")
    for i in range(header_get(data, "n_entries")):
        base = first + 128 * i
        name = bytes(data[base:base + name_size]).split(b"\0", 1)[0].decode("utf-8")
        dtype, rows, cols = struct.unpack_from("<3I", data, base + efield("dtype"))
        offset, size = struct.unpack_from("<2Q", data, base + efield("offset"))
        out.append((i, name, base, dtype, rows, cols, offset, size))
    return out


def entry(data, name):
    for e in entries(data):
        if e[1] == name:
            return e
    raise KeyError(name)


def entry_set(data, name, field, value, fmt="<I"):
    data = bytearray(data)
    struct.pack_into(fmt, data, entry(data, name)[2] + efield(field), value)
    return data


def truncated(data, length, fix_header):
    out = bytearray(data[:length])
    if fix_header and length >= hfield("file_size")[0] + 8:
        out = header_set(out, "file_size", length)
    return out


# ---- running ./run -------------------------------------------------------------------

# LUCIE_TEST_RUN replaces ./run, e.g. by a script running a cross-compiled one under qemu
# (test/cross.sh does this for a 32-bit build, where size_t overflows come much sooner).
RUN_UNDER_TEST = os.environ.get("LUCIE_TEST_RUN") or RUN


def run(args, stdin=None):
    need_binary(RUN_UNDER_TEST)
    cmd = [RUN_UNDER_TEST] + [a if isinstance(a, bytes) else str(a) for a in args]
    return subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)


def write(tmp_path, data, name="hostile.bin"):
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return str(path)


def assert_refused(proc, code, *words):
    """Exit code `code`, exactly one non-empty stderr line naming the problem, no stdout."""
    err = proc.stderr.decode("utf-8", "replace")
    for w in SANITIZER_WORDS:
        assert w not in err, "sanitizer/crash report:\n" + err
    assert proc.returncode >= 0, "killed by signal %d:\n%s" % (-proc.returncode, err)
    lines = [l for l in err.splitlines() if l.strip()]
    assert proc.returncode == code, "exit %d, expected %d: %s" % (proc.returncode, code, err)
    assert len(lines) == 1, "expected a one-line error, got:\n" + err
    assert lines[0].startswith("run: "), lines[0]
    for w in words:
        assert w.lower() in lines[0].lower(), "error %r does not mention %r" % (lines[0], w)
    assert proc.stdout == b"", "stdout is not empty on an error: %r" % proc.stdout[:200]
    return lines[0]


def assert_clean(proc):
    """Success, and no sanitizer report."""
    err = proc.stderr.decode("utf-8", "replace")
    for w in SANITIZER_WORDS:
        assert w not in err, "sanitizer/crash report:\n" + err
    assert proc.returncode == 0, "exit %d: %s" % (proc.returncode, err)


def load(tmp_path, data):
    """Generates one greedy token from a (damaged) model file."""
    return run([write(tmp_path, data), "-n", "1", "--temp", "0", "-p", "ab"])


# ---- sanity: the undamaged models work --------------------------------------------

@pytest.mark.parametrize("key", ["lucie", "llama"])
def test_undamaged_models_run(models, tmp_path, key):
    assert_clean(load(tmp_path, models[key]))
    assert_clean(run([write(tmp_path, models[key]), "--no-mmap", "-n", "2", "--temp", "1", "--seed", "3"]))


# ---- header --------------------------------------------------------------------------

def test_bad_magic(models, tmp_path):
    data = bytearray(models["lucie"])
    data[0:8] = b"LUCIEBIX"
    assert_refused(load(tmp_path, data), 1, "magic")


def test_not_a_model_at_all(tmp_path):
    assert_refused(run([write(tmp_path, b"hello\n"), "-n", "1"]), 1)
    assert_refused(run([write(tmp_path, b""), "-n", "1"]), 1)
    assert_refused(run([str(tmp_path), "-n", "1"]), 1)  # a directory
    assert_refused(run([str(tmp_path / "does-not-exist.bin"), "-n", "1"]), 1, "does-not-exist.bin")


@pytest.mark.parametrize("version", [0, 2, 0xFFFFFFFF])
def test_wrong_version(models, tmp_path, version):
    assert_refused(load(tmp_path, header_set(models["lucie"], "version", version)), 1, "version")


@pytest.mark.parametrize("size", [0, 128, 257, 0xFFFFFFFF])
def test_wrong_header_size(models, tmp_path, size):
    assert_refused(load(tmp_path, header_set(models["lucie"], "header_size", size)), 1, "header")


@pytest.mark.parametrize("delta", [-1, 1, 1 << 40])
def test_declared_file_size_differs(models, tmp_path, delta):
    data = models["lucie"]
    bad = header_set(data, "file_size", len(data) + delta)
    assert_refused(load(tmp_path, bad), 1, "truncated")


def boundaries(data):
    """Every place a file can be cut that separates two structures: inside the fixed
    header, at its end, inside/at the end of the entry table, and the start, middle and
    last byte of every section."""
    table_end = 256 + 128 * header_get(data, "n_entries")
    cuts = {0, 1, 8, 12, 16, 24, 100, 255, 256, 256 + 127, table_end - 1, table_end}
    for e in entries(data):
        offset, size = e[6], e[7]
        cuts |= {offset, offset + size // 2, offset + size - 1}
    return sorted(c for c in cuts if c < len(data))


def test_truncated_at_every_boundary(models, tmp_path):
    data = models["lucie"]
    for cut in boundaries(data):
        line = assert_refused(load(tmp_path, truncated(data, cut, False)), 1)
        if cut >= 8:  # the magic is intact: the message must say the file is short, not "bad magic"
            assert "truncated" in line or "too short" in line, (cut, line)


def test_truncated_with_consistent_header(models, tmp_path):
    """The same cuts with file_size patched to agree, so the loader's range checks (not
    just the size comparison) must find the damage, and name the first entry cut."""
    data = models["lucie"]
    table_end = 256 + 128 * header_get(data, "n_entries")
    for cut in boundaries(data):
        line = assert_refused(load(tmp_path, truncated(data, cut, True)), 1)
        if 256 <= cut < table_end:
            assert "entry table" in line, (cut, line)
        elif cut >= table_end:
            first_cut = next(e for e in entries(data) if e[6] + e[7] > cut)
            assert first_cut[1] in line and "outside the file" in line, (cut, line)


DIMS = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "vocab_size", "max_seq_len"]


@pytest.mark.parametrize("field", DIMS)
@pytest.mark.parametrize("value", [0, 0x80000000, 0xFFFFFFFF])
def test_dimension_zero_or_huge(models, tmp_path, field, value):
    assert_refused(load(tmp_path, header_set(models["lucie"], field, value)), 1, field)


@pytest.mark.parametrize("values", [
    # products that overflow 32 bits (and, times the element size, would wrap a 32-bit size_t)
    {"dim": 1 << 20, "vocab_size": 1 << 24},
    {"hidden_dim": 1 << 20, "dim": 1 << 20},
    {"n_layers": 4096, "max_seq_len": 1 << 24},
    {"n_heads": 1 << 20, "head_dim": 1 << 20},
])
def test_dimensions_whose_products_overflow(models, tmp_path, values):
    data = models["lucie"]
    for field, value in values.items():
        data = header_set(data, field, value)
    assert_refused(load(tmp_path, data), 1)


def test_n_heads_not_dividing_dim(models, tmp_path):
    # dim 4, head_dim 2: 3 heads need q_proj rows 6, but the file has 4.
    data = header_set(header_set(models["lucie"], "n_heads", 3), "n_kv_heads", 1)
    assert_refused(load(tmp_path, data), 1, "q_proj")


@pytest.mark.parametrize("n_kv_heads", [3, 4])
def test_n_kv_heads_not_dividing_n_heads(models, tmp_path, n_kv_heads):
    assert_refused(load(tmp_path, header_set(models["lucie"], "n_kv_heads", n_kv_heads)), 1, "n_kv_heads")


def test_odd_head_dim(models, tmp_path):
    data = header_set(header_set(models["lucie"], "head_dim", 3), "n_heads", 1)
    assert_refused(load(tmp_path, data), 1, "head_dim")


@pytest.mark.parametrize("field,value", [
    ("rope_theta", float("nan")), ("rope_theta", 0.0), ("rope_theta", -1e4), ("rope_theta", float("inf")),
    ("rms_norm_eps", float("nan")), ("rms_norm_eps", 0.0), ("rms_norm_eps", -1e-5), ("rms_norm_eps", 2.0),
])
def test_bad_float_hyperparameters(models, tmp_path, field, value):
    assert_refused(load(tmp_path, header_set(models["lucie"], field, value)), 1, field)


@pytest.mark.parametrize("field,value", [
    ("temperature", float("nan")), ("temperature", -1.0), ("temperature", float("inf")),
    ("top_p", 0.0), ("top_p", float("nan")), ("top_p", 1.5), ("top_p", -0.5),
    ("top_k", -1), ("repetition_penalty", 0.0), ("repetition_penalty", float("nan")),
])
def test_bad_generation_defaults(models, tmp_path, field, value):
    assert_refused(load(tmp_path, header_set(models["lucie"], field, value)), 1, "generation defaults")


def test_bad_special_ids(models, tmp_path):
    data = models["lucie"]
    vocab = header_get(data, "vocab_size")
    assert_refused(load(tmp_path, header_set(data, "n_eos", 9)), 1, "eos")
    assert_refused(load(tmp_path, header_set(data, "n_eos", 0xFFFFFFFF)), 1, "eos")
    eos_offset = hfield("eos_ids")[0]
    bad = bytearray(data)
    struct.pack_into("<i", bad, eos_offset, vocab)
    assert_refused(load(tmp_path, bad), 1, "eos id %d" % vocab)
    for field in ("bos_id", "pad_id"):
        for value in (vocab, -2, -(1 << 31)):
            assert_refused(load(tmp_path, header_set(data, field, value)), 1, field.split("_")[0])


@pytest.mark.parametrize("n", [0, 0xFFFFFFFF, 1 << 20])
def test_entry_count_that_cannot_fit(models, tmp_path, n):
    assert_refused(load(tmp_path, header_set(models["lucie"], "n_entries", n)), 1, "entry table")


def test_entry_count_one_too_many(models, tmp_path):
    # The extra "entry" is the first section's bytes (tensor data or padding).
    data = models["lucie"]
    assert_refused(load(tmp_path, header_set(data, "n_entries", header_get(data, "n_entries") + 1)), 1, "entry")


# ---- entry table ---------------------------------------------------------------------

EMBED = "model.embed_tokens.weight"
GATE = "model.layers.0.mlp.gate_proj.weight"
NORM = "model.norm.weight"


def test_offset_past_the_end(models, tmp_path):
    data = models["lucie"]
    bad = entry_set(data, GATE, "offset", (len(data) + 63) // 64 * 64 + 64, "<Q")
    assert_refused(load(tmp_path, bad), 1, GATE, "outside the file")


def test_offset_plus_size_wraps_around(models, tmp_path):
    data = models["lucie"]
    bad = entry_set(data, GATE, "offset", (len(data) // 64) * 64, "<Q")
    bad = entry_set(bad, GATE, "size", (1 << 64) - 1, "<Q")
    assert_refused(load(tmp_path, bad), 1, GATE)
    bad = entry_set(data, GATE, "offset", (1 << 64) - 64, "<Q")
    assert_refused(load(tmp_path, bad), 1, GATE)


@pytest.mark.parametrize("delta", [1, 4, 32])
def test_misaligned_offset(models, tmp_path, delta):
    data = models["lucie"]
    bad = entry_set(data, GATE, "offset", entry(data, GATE)[6] + delta, "<Q")
    assert_refused(load(tmp_path, bad), 1, GATE, "misaligned")


@pytest.mark.parametrize("where", [0, 64, 256])
def test_offset_inside_header_or_table(models, tmp_path, where):
    bad = entry_set(models["lucie"], "tokenizer", "offset", where, "<Q")
    assert_refused(load(tmp_path, bad), 1, "tokenizer")


def test_overlapping_sections(models, tmp_path):
    data = models["lucie"]
    # a tensor moved into the tokenizer section (it fits inside it)
    tok, gate = entry(data, "tokenizer"), entry(data, GATE)
    assert gate[7] <= tok[7]
    bad = entry_set(data, GATE, "offset", tok[6], "<Q")
    assert_refused(load(tmp_path, bad), 1, "overlap", GATE, "tokenizer")
    # two tensors of the same size at the same place
    up = "model.layers.0.mlp.up_proj.weight"
    bad = entry_set(data, up, "offset", entry(data, GATE)[6], "<Q")
    assert_refused(load(tmp_path, bad), 1, "overlap", GATE, up)


def test_duplicate_entry(models, tmp_path):
    data = bytearray(models["lucie"])
    up = "model.layers.0.mlp.up_proj.weight"
    base = entry(data, up)[2]
    data[base:base + 96] = GATE.encode() + bytes(96 - len(GATE))
    assert_refused(load(tmp_path, data), 1, GATE, "twice")


def test_name_not_nul_terminated(models, tmp_path):
    data = bytearray(models["lucie"])
    base = entry(data, GATE)[2]
    data[base:base + 96] = b"A" * 96
    assert_refused(load(tmp_path, data), 1, "NUL")


@pytest.mark.parametrize("name", [b"model.norm\n.weight", b"\x1b[2Jmodel.norm.weight", b"model\x7fnorm"])
def test_entry_name_with_control_characters(models, tmp_path, name):
    """Names are echoed in error messages: a newline would break the one-line rule and an
    escape sequence would reach the user's terminal."""
    data = entry_set(models["lucie"], NORM, "offset", entry(models["lucie"], NORM)[6] + 1, "<Q")  # to be named
    base = entry(data, NORM)[2]
    data[base:base + 96] = name + bytes(96 - len(name))
    line = assert_refused(load(tmp_path, data), 1)
    assert "\x1b" not in line and "\x7f" not in line


def test_missing_tensor(models, tmp_path):
    data = bytearray(models["lucie"])
    base = entry(data, NORM)[2]
    data[base:base + len(NORM)] = b"model.norX.weight"
    assert_refused(load(tmp_path, data), 1, "missing", NORM)


@pytest.mark.parametrize("dtype", [0, 3, 4, 5, 99, 0xFFFFFFFF])
def test_wrong_or_unknown_dtype(models, tmp_path, dtype):
    assert_refused(load(tmp_path, entry_set(models["lucie"], GATE, "dtype", dtype)), 1, GATE)


@pytest.mark.parametrize("key, said", [("lucie", 1), ("lucie", 3), ("llama", 2), ("llama", 4), ("llama", 9)])
def test_header_weight_type_disagrees_with_the_tensors(models, tmp_path, key, said):
    """The header's weight_type must be the narrowest dtype of the tensors (lucie.h)."""
    assert_refused(load(tmp_path, header_set(models[key], "weight_type", said)), 1, "weight type")


def test_norm_stored_as_bf16(models, tmp_path):
    # a consistent bf16 entry (size halved) where the format demands f32
    data = models["lucie"]
    bad = entry_set(entry_set(data, NORM, "dtype", 2), NORM, "size", entry(data, NORM)[7] // 2, "<Q")
    assert_refused(load(tmp_path, bad), 1, NORM, "f32")


def test_shape_mismatch(models, tmp_path):
    data = models["lucie"]
    _, _, _, _, rows, cols, _, _ = entry(data, GATE)
    bad = entry_set(entry_set(data, GATE, "rows", cols), GATE, "cols", rows)  # same byte size
    assert_refused(load(tmp_path, bad), 1, GATE, "shape")


@pytest.mark.parametrize("rows,cols", [(0xFFFFFFFF, 0xFFFFFFFF), (1 << 31, 1 << 31), (1 << 24, 1 << 20), (0, 8)])
def test_entry_shape_overflow(models, tmp_path, rows, cols):
    """Shapes whose byte size overflows 64 bits (or is huge), with the size field set to
    the wrapped product, as an attacker who knows a naive check would do."""
    data = models["lucie"]
    bad = entry_set(entry_set(data, GATE, "rows", rows), GATE, "cols", cols)
    bad = entry_set(bad, GATE, "size", (rows * cols * 2) % (1 << 64), "<Q")
    assert_refused(load(tmp_path, bad), 1, GATE)


def test_byte_section_with_a_shape(models, tmp_path):
    assert_refused(load(tmp_path, entry_set(models["lucie"], "tokenizer", "rows", 1)), 1, "tokenizer")


def test_tied_flag_disagrees_with_lm_head(models, tmp_path):
    # untied file (has lm_head) marked tied, and a tied file (no lm_head) marked untied
    assert_refused(load(tmp_path, header_set(models["lucie"], "tie_word_embeddings", 1)), 1, "lm_head")
    assert_refused(load(tmp_path, header_set(models["llama"], "tie_word_embeddings", 0)), 1, "lm_head.weight")


def test_no_tokenizer_section(models, tmp_path):
    data = bytearray(models["lucie"])
    base = entry(data, "tokenizer")[2]
    data[base:base + 9] = b"tokenizeR"
    assert_refused(load(tmp_path, data), 1, "tokenizer")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("sampler", [["--temp", "0"], ["--temp", "1", "--top-k", "5", "--top-p", "0.9",
                                                        "--min-p", "0.1", "--seed", "1"]])
def test_non_finite_weights(models, tmp_path, value, sampler):
    """The loader cannot afford to read every weight, so NaN/inf weights reach the
    logits: sampling must refuse them, not return token 0 or read out of bounds."""
    data = bytearray(models["lucie"])
    _, _, _, _, rows, cols, offset, size = entry(data, NORM)
    struct.pack_into("<%df" % cols, data, offset, *([value] * cols))
    assert_refused(run([write(tmp_path, data), "-n", "3", "-p", "ab"] + sampler), 1, "finite")


# ---- the tokenizer section -----------------------------------------------------------

def tokenizer_layout(data):
    """Byte positions (relative to the section) of the tokenizer section's structures,
    following lucie.h: {'counts': offset of vocab_size, 'vocab': [(kind_off, len_off)],
    'merges': offset, 'added': offset, 'norm_ops': offset, 'dec_ops': offset, 'end': size}."""
    _, _, _, _, _, _, off, size = entry(data, "tokenizer")
    sec = bytes(data[off:off + size])
    assert sec[:4] == b"LTOK"
    vocab, n_merges, n_added, n_norm, n_dec = struct.unpack_from("<5I", sec, 8)
    pos = 8 + 5 * 4 + 3 * 4 + 4
    layout = {"counts": 8, "header_end": pos, "vocab": []}
    for _ in range(vocab):
        (n,) = struct.unpack_from("<I", sec, pos + 4)
        layout["vocab"].append((pos, pos + 4))
        pos += 8 + n
    layout["merges"] = pos
    pos += 12 * n_merges
    layout["added"] = pos
    pos += 8 * n_added
    for key, count in (("norm_ops", n_norm), ("dec_ops", n_dec)):
        layout[key] = pos
        layout[key + "_list"] = []
        for _ in range(count):
            layout[key + "_list"].append(pos)
            (la,) = struct.unpack_from("<I", sec, pos + 4)
            (lb,) = struct.unpack_from("<I", sec, pos + 8 + la)
            pos += 4 + 4 + la + 4 + lb + 8
    assert pos == size, "tokenizer section parse does not end at its size (lucie.h vs export.py?)"
    layout["end"] = pos
    return off, layout


def tok_patch(data, rel, fmt, value):
    off, _ = tokenizer_layout(data)
    data = bytearray(data)
    struct.pack_into(fmt, data, off + rel, value)
    return data


def test_tokenizer_layout_matches_lucie_h(models):
    for key in models:
        tokenizer_layout(models[key])


@pytest.mark.parametrize("key", ["lucie", "llama"])
def test_tokenizer_section_truncated_at_every_boundary(models, tmp_path, key):
    """The entry's size cut at each structure boundary of the section (and one byte
    into the next structure): the file is consistent, only the section is short."""
    data = models[key]
    _, lay = tokenizer_layout(data)
    cuts = {0, 3, 4, 8, lay["counts"] + 4, lay["header_end"] - 1, lay["header_end"], lay["header_end"] + 1,
            lay["vocab"][1][0], lay["vocab"][1][1] + 2, lay["vocab"][-1][0], lay["merges"] - 1, lay["merges"],
            lay["merges"] + 5, lay["added"], lay["added"] + 4, lay["norm_ops"], lay["dec_ops"],
            lay["end"] - 1}
    for op in lay["norm_ops_list"] + lay["dec_ops_list"]:
        cuts |= {op + 2, op + 6}
    for cut in sorted(c for c in cuts if c < lay["end"]):
        bad = entry_set(data, "tokenizer", "size", cut, "<Q")
        assert_refused(load(tmp_path, bad), 1, "tokenizer")


def test_tokenizer_trailing_bytes(models, tmp_path):
    """A section longer than its structures: garbage after the decoder ops."""
    data = models["lucie"]
    off, lay = tokenizer_layout(data)
    bad = entry_set(data, "tokenizer", "size", lay["end"] + 8, "<Q")
    nxt = min([e[6] for e in entries(data) if e[6] > off] + [len(data)])
    assert off + lay["end"] + 8 <= nxt, "the test model lost the padding after its tokenizer section"
    assert_refused(load(tmp_path, bad), 1, "tokenizer")


def tok_cases(data):
    """(description, damaged file) for the tokenizer section's fields."""
    _, lay = tokenizer_layout(data)
    vocab = header_get(data, "vocab_size")
    c = lay["counts"]
    cases = [
        ("magic", tok_patch(data, 0, "<4s", b"LTOX")),
        ("version 2", tok_patch(data, 4, "<I", 2)),
        ("vocab_size + 1", tok_patch(data, c, "<I", vocab + 1)),
        ("vocab_size - 1", tok_patch(data, c, "<I", vocab - 1)),
        ("vocab_size huge", tok_patch(data, c, "<I", 0xFFFFFFFF)),
        ("n_merges huge", tok_patch(data, c + 4, "<I", 0xFFFFFFFF)),
        ("n_added huge", tok_patch(data, c + 8, "<I", 0x40000000)),
        ("n_normalizer_ops huge", tok_patch(data, c + 12, "<I", 0x7FFFFFFF)),
        ("n_decoder_ops huge", tok_patch(data, c + 16, "<I", 0xFFFFFFFF)),
        ("unk_id = vocab", tok_patch(data, c + 20, "<i", vocab)),
        ("unk_id = -2", tok_patch(data, c + 20, "<i", -2)),
        ("bos_id = vocab", tok_patch(data, c + 24, "<i", vocab)),
        ("eos_id = -7", tok_patch(data, c + 28, "<i", -7)),
        ("vocab kind 7", tok_patch(data, lay["vocab"][5][0], "<I", 7)),
        ("string length 2^32-1", tok_patch(data, lay["vocab"][0][1], "<I", 0xFFFFFFFF)),
        ("string length 2^31", tok_patch(data, lay["vocab"][3][1], "<I", 0x80000000)),
        ("string length past the section", tok_patch(data, lay["vocab"][-1][1], "<I", lay["end"])),
        ("last string one byte too long", tok_patch(
            data, lay["vocab"][-1][1], "<I",
            struct.unpack_from("<I", data, tokenizer_layout(data)[0] + lay["vocab"][-1][1])[0] + 1)),
    ]
    if lay["added"] > lay["merges"]:
        cases += [("merge left id = vocab", tok_patch(data, lay["merges"], "<I", vocab)),
                  ("merge merged id huge", tok_patch(data, lay["merges"] + 8, "<I", 0xFFFFFFFF))]
    if lay["norm_ops"] > lay["added"]:
        cases += [("added id = vocab", tok_patch(data, lay["added"], "<I", vocab))]
    if lay["norm_ops_list"]:
        cases += [("normalizer op type 99", tok_patch(data, lay["norm_ops_list"][0], "<I", 99)),
                  ("decoder type as normalizer", tok_patch(data, lay["norm_ops_list"][0], "<I", 17)),
                  ("normalizer string a length huge", tok_patch(data, lay["norm_ops_list"][0] + 4, "<I", 1 << 30))]
    if lay["dec_ops_list"]:
        cases += [("decoder op type 0", tok_patch(data, lay["dec_ops_list"][0], "<I", 0)),
                  ("normalizer type as decoder", tok_patch(data, lay["dec_ops_list"][0], "<I", 2))]
    return cases


@pytest.mark.parametrize("key", ["lucie", "llama"])
def test_tokenizer_section_bad_fields(models, tmp_path, key):
    failures = []
    for what, bad in tok_cases(models[key]):
        try:
            assert_refused(load(tmp_path, bad), 1, "tokenizer")
        except AssertionError as e:
            failures.append("%s: %s" % (what, str(e).splitlines()[0]))
    assert not failures, "\n".join(failures)


def test_tokenizer_string_with_invalid_utf8(models, tmp_path):
    """A vocabulary string that is not UTF-8 cannot come from tokenizer.json."""
    data = models["lucie"]
    off, lay = tokenizer_layout(data)
    kind_off, len_off = lay["vocab"][-1]
    (n,) = struct.unpack_from("<I", data, off + len_off)
    assert n >= 1
    bad = bytearray(data)
    bad[off + len_off + 4] = 0xFF
    assert_refused(load(tmp_path, bad), 1, "tokenizer")


# ---- command line --------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_path(models, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "lucie.bin"
    path.write_bytes(models["lucie"])
    return str(path)


@pytest.mark.parametrize("args,words", [
    (["--frobnicate"], ["unknown option", "--frobnicate"]),
    (["-x"], ["unknown option", "-x"]),
    (["--temp"], ["--temp", "needs a value"]),
    (["-n"], ["-n", "needs a value"]),
    (["-c", "0"], ["-c", "'0'"]),
    (["-c", "1000000000"], ["-c", "1000000000"]),
    (["-c", "-5"], ["-c"]),
    (["-c", "12abc"], ["-c"]),
    (["-c", "99999999999999999999"], ["-c"]),
    (["-n", "-1"], ["-n"]),
    (["-n", "ten"], ["-n"]),
    (["-n", ""], ["-n"]),
    (["--temp", "-1"], ["--temp"]),
    (["--temp", "-0.0001"], ["--temp"]),
    (["--temp", "nan"], ["--temp", "nan"]),
    (["--temp", "NaN"], ["--temp"]),
    (["--temp", "-nan"], ["--temp"]),
    (["--temp", "inf"], ["--temp"]),
    (["--temp", "1e39"], ["--temp"]),
    (["--top-p", "-0.5"], ["--top-p"]),
    (["--top-p", "0"], ["--top-p"]),
    (["--top-p", "nan"], ["--top-p"]),
    (["--top-p", "1.5"], ["--top-p"]),
    (["--top-p", "-inf"], ["--top-p"]),
    (["--top-k", "-1"], ["--top-k"]),
    (["--min-p", "2"], ["--min-p"]),
    (["--min-p", "nan"], ["--min-p"]),
    (["--repeat-penalty", "0"], ["--repeat-penalty"]),
    (["--repeat-penalty", "nan"], ["--repeat-penalty"]),
    (["--repeat-window", "-3"], ["--repeat-window"]),
    (["--seed", "-1"], ["--seed"]),
    (["--seed", "18446744073709551616"], ["--seed"]),
    (["-t", "0"], ["-t"]),
    (["-t", "100000"], ["-t"]),
    (["--bench-prompt", "0"], ["--bench-prompt"]),
])
def test_bad_options_are_usage_errors(model_path, args, words):
    assert_refused(run([model_path] + args), 2, *words)


def test_usage_errors_without_model():
    assert_refused(run([]), 2, "missing")
    assert_refused(run(["a.bin", "b.bin"]), 2, "unexpected argument", "b.bin")


def test_help_goes_to_stdout():
    proc = run(["--help"])
    assert_clean(proc)
    assert b"usage:" in proc.stdout and proc.stderr == b""


def test_context_larger_than_the_model(models, model_path):
    max_seq = header_get(models["lucie"], "max_seq_len")
    # bad usage (exit 2), and the message gives the real range
    assert_refused(run([model_path, "-c", max_seq + 1, "-n", "1"]), 2, "context", str(max_seq + 1), "1..%d" % max_seq)


def test_context_at_the_model_maximum(models, model_path):
    max_seq = header_get(models["lucie"], "max_seq_len")
    assert_clean(run([model_path, "-c", max_seq, "-n", "2", "--temp", "0"]))


def test_prompt_longer_than_the_context(model_path):
    assert_refused(run([model_path, "-c", "4", "-n", "1", "-p", "ab ab ab ab ab ab ab ab"]), 1, "tokens", "context")


def test_prompt_file_longer_than_the_context(model_path, tmp_path):
    p = tmp_path / "prompt.txt"
    p.write_bytes(b"ca " * 200)
    assert_refused(run([model_path, "-f", str(p), "-n", "1"]), 1, "tokens", "context")


def test_generation_stops_when_the_context_is_full(model_path):
    """Running out of context before -n tokens is a runtime error (exit 1) that says so,
    after the text that did fit."""
    proc = run([model_path, "-c", "6", "-n", "100", "--temp", "0", "-p", "ab"])
    assert_no_crash(proc)
    assert proc.returncode == 1
    assert b"context full" in proc.stderr


def test_zero_tokens(model_path):
    """-n 0 is a valid request for nothing: no text, and the statistics say 0 tokens."""
    proc = run([model_path, "-n", "0", "-p", "ab"])
    assert_clean(proc)
    assert proc.stdout == b""
    assert b"generated: 0 tokens" in proc.stderr


@pytest.mark.parametrize("temp", ["0", "1e-30", "100"])
def test_extreme_but_valid_temperatures(model_path, temp):
    assert_clean(run([model_path, "-n", "4", "--temp", temp, "--seed", "1"]))


def test_extreme_but_valid_sampler_settings(model_path):
    assert_clean(run([model_path, "-n", "4", "--temp", "1", "--top-p", "1e-6", "--top-k", "1", "--min-p", "1",
                      "--repeat-penalty", "100", "--repeat-window", "1", "--seed", "18446744073709551615"]))
    assert_clean(run([model_path, "-n", "4", "--temp", "1", "--top-k", "16777216", "--top-p", "1",
                      "--repeat-penalty", "0.01"]))


def test_prompt_file_problems(model_path, tmp_path):
    assert_refused(run([model_path, "-f", str(tmp_path / "nope.txt")]), 1, "nope.txt")
    nul = tmp_path / "nul.txt"  # NUL is a character like any other (Lucie's normalizer drops it)
    nul.write_bytes(b"ab\0cd")
    assert_clean(run([model_path, "-f", str(nul), "-n", "1"]))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ab \xff\xfe cd")
    assert_refused(run([model_path, "-f", str(bad), "-n", "1"]), 1, "UTF-8")


@pytest.mark.parametrize("text", [b"\xff", b"ab\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"])
def test_tokenize_invalid_utf8(model_path, text):
    assert_refused(run([model_path, "--tokenize", "-"], stdin=text), 1, "UTF-8")


def test_tokenize_nul_and_controls(model_path):
    proc = run([model_path, "--tokenize", "-"], stdin=b"a\0b\r\n\x01\x7f")
    assert_clean(proc)
    assert proc.stdout.strip()


@pytest.mark.parametrize("ids", ["1 x", "99999", "-1", "1,,2;3", "2147483648", "1e3"])
def test_detokenize_bad_ids(model_path, ids):
    assert_refused(run([model_path, "--detokenize", ids]), 2, "--detokenize")


def test_bench_context_too_small(model_path):
    assert_refused(run([model_path, "--bench", "-c", "8", "--bench-prompt", "16", "-n", "4"]), 2, "context")


# ---- valgrind -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def valgrind_run(tmp_path_factory):
    """./run built for valgrind: valgrind cannot run AddressSanitizer binaries nor decode
    every -march=native instruction (AVX-512), and libgomp's thread pool shows up as
    "possibly lost", so this is a plain -O2 -g build of the same sources."""
    if not shutil.which("valgrind"):
        pytest.skip("valgrind not installed (Debian: apt-get install valgrind; .ci/run installs it)")
    cc = os.environ.get("CC", "cc")
    out = str(tmp_path_factory.mktemp("valgrind") / "run")
    cmd = [cc, "-std=c99", "-O2", "-g", "-o", out, os.path.join(REPO, "run.c"), os.path.join(REPO, "lucie.c"), "-lm"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0, proc.stderr
    return out


def valgrind(binary, args):
    cmd = ["valgrind", "-q", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect,possible",
           "--error-exitcode=99", binary] + [a if isinstance(a, bytes) else str(a) for a in args]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)


def test_valgrind_short_generation(model_path, valgrind_run):
    proc = valgrind(valgrind_run, [model_path, "-n", "5", "--temp", "0", "-p", "ab"])
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")[-3000:]


def test_valgrind_error_paths(models, tmp_path, valgrind_run):
    """The library's error paths free what they allocated (the tokenizer half-built, the
    mapping, the session)."""
    data = models["lucie"]
    _, lay = tokenizer_layout(data)
    cases = {
        "tokenizer cut in the merges": entry_set(data, "tokenizer", "size", lay["merges"] + 5, "<Q"),
        "tokenizer cut in the decoder ops": entry_set(data, "tokenizer", "size", lay["end"] - 1, "<Q"),
        "missing lm_head": header_set(models["llama"], "tie_word_embeddings", 0),
        "overlap": entry_set(data, "model.layers.0.mlp.up_proj.weight", "offset", entry(data, GATE)[6], "<Q"),
    }
    for what, bad in cases.items():
        proc = valgrind(valgrind_run, [write(tmp_path, bad), "-n", "1"])
        assert proc.returncode == 1, "%s: %s" % (what, proc.stderr.decode("utf-8", "replace")[-3000:])
    path = write(tmp_path, data)
    for args in (["-c", "4", "-p", "ab ab ab ab ab ab"], ["--tokenize", b"ab\xff"], ["-c", "100000"]):
        proc = valgrind(valgrind_run, [path] + args)
        assert proc.returncode in (1, 2), "%s: %s" % (args, proc.stderr.decode("utf-8", "replace")[-3000:])


# ---- fuzz corpus and fuzzer findings, replayed ------------------------------------------
# test/replay_TARGET is test/fuzz_TARGET.c linked with test/fuzz_replay.c instead of
# libFuzzer, so any compiler (and SANITIZE=1) runs the fuzz targets' inputs with the same
# checks. The seed corpus must replay clean, and so must every saved finding in
# test/fuzz_corpus/regressions/TARGET[@MODEL]-NAME (MODEL: a fuzz_models.py kind the input
# was found with, when not the default seed model). Findings that are whole model files or
# command lines are also replayed through ./run itself.

TARGETS = ["load", "tokenize", "session", "args", "server"]
REGRESSIONS = sorted(glob.glob(os.path.join(CORPUS, "regressions", "*")))


def replay(target, paths, model=None):
    binary = need_binary(os.path.join(TEST_DIR, "replay_" + target))
    env = dict(os.environ)
    env.pop("LUCIE_FUZZ_MODEL", None)
    if model:
        env["LUCIE_FUZZ_MODEL"] = model
    proc = subprocess.run([binary] + paths, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env,
                          timeout=600)
    err = proc.stderr.decode("utf-8", "replace")
    for w in SANITIZER_WORDS + ("invariant broken",):
        assert w not in err, err[-4000:]
    assert proc.returncode == 0, err[-4000:]


@pytest.mark.parametrize("target", TARGETS)
def test_seed_corpus_replays_clean(target):
    replay(target, sorted(glob.glob(os.path.join(CORPUS, target, "*"))))


@pytest.mark.parametrize("path", REGRESSIONS, ids=[os.path.basename(p) for p in REGRESSIONS])
def test_fuzz_regression(path, model_path, tmp_path):
    name = os.path.basename(path)
    target, _, rest = name.partition("-")
    target, _, kind = target.partition("@")
    assert target in TARGETS, "regression file %s does not start with a fuzz target name" % name
    with open(path, "rb") as f:
        data = f.read()
    if target == "load":
        assert_no_crash(run([path, "-n", "3", "--temp", "0.8", "--top-p", "0.9", "--top-k", "3", "--min-p", "0.05",
                             "--repeat-penalty", "1.3", "--seed", "42", "-c", "6", "-p", "a"]))
    elif target == "args" and not kind:
        args = [a for a in data.split(b"\0")]
        assert_no_crash(run([model_path, "--seed", "7"] + [a for a in args if a not in (b"-h", b"--help")],
                            stdin=b""))
    model = None
    if kind:
        model = str(tmp_path / (kind + ".bin"))
        fuzz_models.make_model(kind, model)
    replay(target, [path], model)


def assert_no_crash(proc):
    err = proc.stderr.decode("utf-8", "replace")
    for w in SANITIZER_WORDS:
        assert w not in err, err[-4000:]
    assert proc.returncode in (0, 1, 2), err[-4000:]
