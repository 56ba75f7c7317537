"""Shared paths and helpers for the Python tests.

The tests compare lucie against live references (Hugging Face transformers and
tokenizers) on checkpoints they build themselves, from the data in test/data (real
Lucie tokenizers/configs and the trained stories260K model), and drive the C
programs built by `make`. Anything missing (a reference module, a data directory,
a program) is a test failure with a message saying what to do, never a skip: a run
that checked nothing must not look green. The one exception is a reduced run asked
for explicitly (`make test-quick`, LUCIE_TEST_QUICK=1), which skips what needs the
Python references and says so at the start and at the end.
"""

import importlib
import os
import re
import struct
import subprocess
import sys

import pytest

TEST_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TEST_DIR)
DATA = os.path.join(TEST_DIR, "data")
LUCIE_BASE = os.path.join(DATA, "lucie", "base")
LUCIE_INSTRUCT = os.path.join(DATA, "lucie", "instruct")
STORIES_UNTIED = os.path.join(DATA, "stories260K", "hf-untied")
STORIES_TIED = os.path.join(DATA, "stories260K", "hf-tied")
RUN = os.path.join(REPO, "run")
LOGITS = os.path.join(REPO, "test", "logits")
EXPORT = os.path.join(REPO, "export.py")
LUCIE_H = os.path.join(REPO, "lucie.h")

for path in (REPO, TEST_DIR):
    if path not in sys.path:
        sys.path.insert(0, path)


# What a reduced run (make test-quick) does not check: the reference modules.
QUICK = os.environ.get("LUCIE_TEST_QUICK") == "1"
REFERENCE_MODULES = ("torch", "transformers", "tokenizers", "numpy", "safetensors", "jinja2", "openai")
HOW_TO_INSTALL = "run `make test` (it installs test/requirements.txt into .venv) or pip install -r test/requirements.txt"


def require(module):
    """Imports a reference module; its absence fails the test. A quick run (make test-quick)
    skips every test that needs one, present or not: it checks what needs no reference."""
    if QUICK:
        pytest.skip("quick run: needs %s" % module, allow_module_level=True)
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.fail("reference module %s cannot be imported (%s): %s" % (module, e, HOW_TO_INSTALL), pytrace=False)


def need_dir(path):
    """A test data directory; its absence fails the test (the data ships in test/data)."""
    if not os.path.isdir(path):
        pytest.fail("test data not found: %s (it is part of the repository: is the clone complete?)"
                    % os.path.relpath(path, REPO), pytrace=False)
    return path


def need_binary(path):
    """A C program built by make; its absence fails the test."""
    if not os.access(path, os.X_OK):
        pytest.fail("%s not built: run `make test` (it builds every test program first)"
                    % os.path.relpath(path, REPO), pytrace=False)
    return path


def need_torch():
    """(torch, transformers); their absence fails the test."""
    return require("torch"), require("transformers")


def pytest_report_header(config):
    if QUICK:
        return quick_banner()


def pytest_terminal_summary(terminalreporter):
    if QUICK:
        terminalreporter.write_line(quick_banner(), red=True, bold=True)


def quick_banner():
    return ("QUICK RUN (make test-quick): every comparison against %s is NOT checked; "
            "run `make test` for the real suite" % ", ".join(REFERENCE_MODULES))


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
    tokenizers = require("tokenizers")
    return tokenizers.Tokenizer.from_file(os.path.join(need_dir(STORIES_UNTIED), "tokenizer.json"))


@pytest.fixture(scope="session")
def instruct_bin(tmp_path_factory):
    """A tiny random checkpoint with Lucie-7B-Instruct's tokenizer and chat template."""
    need_dir(LUCIE_INSTRUCT)
    import make_checkpoint
    hf_dir = make_checkpoint.make_checkpoint(
        str(tmp_path_factory.mktemp("instruct")), config=os.path.join(LUCIE_INSTRUCT, "config.json"),
        tokenizer_dir=LUCIE_INSTRUCT, hidden=32, ffn=64, layers=1, heads=2, kv_heads=1, seed=3)
    out = str(tmp_path_factory.mktemp("bin") / "instruct.bin")
    export_model(hf_dir, out, "f32")
    return out
