"""Shared paths and helpers for the Python tests.

The tests compare lucie against live references (Hugging Face transformers and
tokenizers) on checkpoints they build themselves. They need the reference data in
../shared next to the repository (real Lucie tokenizers/configs, and the trained
stories260K model) and the C programs built by `make`; when something is missing
they skip with a message instead of failing.
"""

import os
import re
import struct
import subprocess
import sys

import pytest

TEST_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TEST_DIR)
SHARED = os.path.join(REPO, "..", "shared")
LUCIE_BASE = os.path.join(SHARED, "lucie", "base")
LUCIE_INSTRUCT = os.path.join(SHARED, "lucie", "instruct")
STORIES_UNTIED = os.path.join(SHARED, "stories260K", "hf-untied")
STORIES_TIED = os.path.join(SHARED, "stories260K", "hf-tied")
RUN = os.path.join(REPO, "run")
LOGITS = os.path.join(REPO, "test", "logits")
EXPORT = os.path.join(REPO, "export.py")
LUCIE_H = os.path.join(REPO, "lucie.h")

for path in (REPO, TEST_DIR):
    if path not in sys.path:
        sys.path.insert(0, path)


def need_dir(path):
    """Skips the test when a reference directory is absent."""
    if not os.path.isdir(path):
        pytest.skip("reference data not found: %s" % os.path.normpath(path))
    return path


def need_binary(path):
    """Skips the test when a C program has not been built (run `make`)."""
    if not os.access(path, os.X_OK):
        pytest.skip("%s not built (run make)" % os.path.relpath(path, REPO))
    return path


def need_torch():
    """(torch, transformers), or skips."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    return torch, transformers


def export_model(hf_dir, out_path, dtype=None, check=True):
    """Runs export.py as a user would; returns the CompletedProcess."""
    cmd = [sys.executable, EXPORT, hf_dir, out_path, "--quiet"]
    if dtype:
        cmd += ["--dtype", dtype]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if check and proc.returncode != 0:
        raise AssertionError("export.py failed: %s" % proc.stderr.strip())
    return proc


def load_hf_model(hf_dir, round_to_bf16=False):
    """LlamaForCausalLM in float32, eager attention, eval mode.

    round_to_bf16: round every weight matrix (not the norm vectors) to bf16 and back,
    which gives exactly the values a bf16 export of an f32 checkpoint stores, so the
    comparison measures lucie's arithmetic rather than the rounding of the weights."""
    torch, transformers = need_torch()
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    dtype_arg = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    model = transformers.LlamaForCausalLM.from_pretrained(
        hf_dir, attn_implementation="eager", **{dtype_arg: torch.float32})
    model.eval()
    if round_to_bf16:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.endswith("norm.weight"):
                    p.copy_(p.to(torch.bfloat16).to(torch.float32))
    return model


# ---- reading a lucie model file, field positions taken from lucie.h ---------
# The header layout is parsed from the FILE FORMAT table in lucie.h rather than
# restated here, so these tests pin export.py (which packs the header with its own
# struct format) to the one definition in the C header.

_FIELD_FORMATS = {"u32": "I", "i32": "i", "u64": "Q", "f32": "f", "f64": "d"}


def _table(start_marker, end_marker):
    """[(offset, size, type, name, count)] of the typed rows of a table in lucie.h."""
    with open(LUCIE_H, "r", encoding="utf-8") as f:
        text = f.read()
    begin = text.index(start_marker)
    text = text[begin:text.index(end_marker, begin)]
    rows = []
    for m in re.finditer(r"^ \*\s+(\d+)\s+(\d+)\s+(u32|i32|u64|f32|f64|magic)\s+\"?(\w+)\"?(?:\[(\d+)\])?",
                         text, re.M):
        count = int(m.group(5)) if m.group(5) else None
        rows.append((int(m.group(1)), int(m.group(2)), m.group(3), m.group(4), count))
    if not rows:
        raise AssertionError("cannot find the table after %r in lucie.h" % start_marker)
    return rows


def header_spec():
    """The header fields, from lucie.h's FILE FORMAT table."""
    return _table("offset  size  field", "Entry (128 bytes)")


def entry_spec():
    """The typed fields of an entry-table row, from lucie.h."""
    return _table("Entry (128 bytes)", "Sections never overlap")


def _unpack_fields(spec, data, base):
    fields = {}
    for offset, size, kind, name, count in spec:
        if kind == "magic":
            fields["magic"] = bytes(data[base + offset:base + offset + size])
        elif count:
            fields[name] = list(struct.unpack_from("<%d%s" % (count, _FIELD_FORMATS[kind]), data, base + offset))
        else:
            (fields[name],) = struct.unpack_from("<" + _FIELD_FORMATS[kind], data, base + offset)
    return fields


def read_header(data):
    """Header fields of a lucie model file (bytes) by lucie.h's names."""
    return _unpack_fields(header_spec(), data, 0)


def read_entries(data):
    """{name: {dtype, rows, cols, reserved, offset, size}} of the entry table; the name
    field is the 96 bytes before the first typed field."""
    header = read_header(data)
    spec = entry_spec()
    name_size = spec[0][0]
    entries = {}
    for i in range(header["n_entries"]):
        base = header["header_size"] + 128 * i
        name = bytes(data[base:base + name_size]).split(b"\0", 1)[0].decode("utf-8")
        entries[name] = _unpack_fields(spec, data, base)
    return entries


def read_logits(path, n, vocab):
    import numpy as np
    logits = np.fromfile(path, dtype="<f4")
    assert logits.size == n * vocab, "logits file has %d floats, expected %d" % (logits.size, n * vocab)
    return logits.reshape(n, vocab)


# ---- fixtures shared by the CLI, example and sampling tests -----------------

@pytest.fixture(scope="session")
def stories_bin(tmp_path_factory):
    """The trained stories260K (untied) exported as f32, once per test run."""
    out = str(tmp_path_factory.mktemp("stories") / "stories.bin")
    export_model(need_dir(STORIES_UNTIED), out, "f32")
    return out


@pytest.fixture(scope="session")
def stories_tokenizer():
    """HF tokenizers' reference for stories260K's tokenizer.json."""
    tokenizers = pytest.importorskip("tokenizers")
    return tokenizers.Tokenizer.from_file(os.path.join(need_dir(STORIES_UNTIED), "tokenizer.json"))
