"""The tokenizer's Unicode tables (the generated appendix of lucie.c) are exactly what
tools/gen_unicode.py derives today from the reference implementation itself (HF
`tokenizers`, probed live over every code point): regenerating changes nothing."""
import os
import subprocess
import sys

import pytest

from conftest import REPO, require

MARK = "/* ========================================================================\n * APPENDIX: Unicode tables"


def test_appendix_is_what_the_generator_derives_from_the_reference(tmp_path):
    require("tokenizers")
    out = tmp_path / "tables.c"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "gen_unicode.py"), str(out)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert proc.returncode == 0, proc.stdout
    generated = out.read_text(encoding="utf-8")
    with open(os.path.join(REPO, "lucie.c"), encoding="utf-8") as f:
        source = f.read()
    assert MARK in source, "lucie.c has lost its generated appendix"
    committed = source[source.index(MARK):]
    assert generated == committed, "tables differ from the reference: run python3 tools/gen_unicode.py"
