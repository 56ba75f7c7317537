"""The embedded tokenizer against Hugging Face `tokenizers`, live.

Every tokenizer under test is loaded twice: by the reference (`tokenizers`, from
its tokenizer.json) and by lucie.c (from a model file that export.py wrote, with
a tiny random checkpoint around it). Both encode and decode the same inputs and
must agree exactly:

  * encode with add_special_tokens True/False, with special-token strings in the
    text recognised or not (the reference's encode_special_tokens);
  * decode with skip_special_tokens True/False, of every encoding and of random
    id sequences (odd byte-token runs, specials first, lone "▁"...);
  * streaming decode: every chunk is whole UTF-8 and the chunks, plus the final
    flush, concatenate to the full decode; primed with a prefix (a prompt), the
    stream yields exactly the rest of the full decode;
  * the normalizer's Unicode tables over every code point (NFC; the \\w class of
    the "space after" rules), through tokenizers that encode each output byte;
  * ./run --tokenize / --detokenize on a sample, byte for byte;
  * invalid UTF-8, corrupted tokenizer sections, small buffers: clear errors.

Tokenizers: Lucie-7B base and instruct (test/data/lucie), tokenizers written by
make_tokenizer.py (Lucie's exact pipeline with a small vocabulary, a plain
Llama-2 style one), and stories260K's (test/data/stories260K).

Bulk comparisons call the library in-process (lucie.c compiled as a shared
library, driven through ctypes) because thousands of process launches would
dominate the run time; ./run is checked on a sample.
"""

import ctypes
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import unicodedata

import pytest

from conftest import (LUCIE_BASE, LUCIE_INSTRUCT, REPO, RUN, STORIES_UNTIED, need_binary, need_dir, read_entries,
                      read_header, require)

tokenizers = require("tokenizers")

LUCIE_OK, LUCIE_EFORMAT, LUCIE_EINVAL, LUCIE_ESMALL = 0, -2, -4, -7
ADD_SPECIAL, PARSE_SPECIAL, SKIP_SPECIAL = 1, 2, 1


# ---------------------------------------------------------------------------
# The library through ctypes

class Lib:
    def __init__(self, path):
        lib = ctypes.CDLL(path)
        c_int_p = ctypes.POINTER(ctypes.c_int)
        lib.lucie_open.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
                                   ctypes.c_char_p, ctypes.c_size_t]
        lib.lucie_close.argtypes = [ctypes.c_void_p]
        lib.lucie_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int,
                                       c_int_p, ctypes.c_int, c_int_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.lucie_detokenize.argtypes = [ctypes.c_void_p, c_int_p, ctypes.c_int, ctypes.c_int,
                                         ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
        lib.lucie_detok_stream_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.lucie_detok_stream_new.restype = ctypes.c_void_p
        for name in ("lucie_detok_stream_push", "lucie_detok_stream_flush"):
            fn = getattr(lib, name)
            fn.restype = ctypes.POINTER(ctypes.c_char)
        lib.lucie_detok_stream_push.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_size_t)]
        lib.lucie_detok_stream_flush.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
        lib.lucie_detok_stream_free.argtypes = [ctypes.c_void_p]
        lib.lucie_detok_stream_prime.argtypes = [ctypes.c_void_p, c_int_p, ctypes.c_int]
        self.lib = lib

    def open(self, path):
        model, err = ctypes.c_void_p(), ctypes.create_string_buffer(256)
        rc = self.lib.lucie_open(path.encode(), None, ctypes.byref(model), err, 256)
        return rc, model, err.value.decode("utf-8", "replace")


class Model:
    """One model file opened by the library."""

    def __init__(self, lib, path):
        self.lib = lib.lib
        rc, self.handle, err = lib.open(path)
        assert rc == LUCIE_OK, "lucie_open(%s): %s" % (path, err)

    def encode_raw(self, data, flags, capacity=None, raw=False):
        """(status, ids or None, n_ids, error message) for bytes `data`; raw: the
        ids as the ctypes array itself (fast for millions of ids)."""
        n, err = ctypes.c_int(-1), ctypes.create_string_buffer(256)
        rc = self.lib.lucie_tokenize(self.handle, data, len(data), flags, None, 0, ctypes.byref(n), err, 256)
        if rc not in (LUCIE_OK, LUCIE_ESMALL):
            return rc, None, n.value, err.value.decode("utf-8", "replace")
        cap = n.value if capacity is None else capacity
        buf = (ctypes.c_int * max(cap, 1))()
        rc = self.lib.lucie_tokenize(self.handle, data, len(data), flags, buf, cap, ctypes.byref(n), err, 256)
        count = min(cap, n.value)
        ids = buf if raw else list(buf[:count])
        return rc, ids, n.value, err.value.decode("utf-8", "replace")

    def encode(self, text, flags):
        rc, ids, _, err = self.encode_raw(text.encode("utf-8"), flags)
        assert rc == LUCIE_OK, "lucie_tokenize failed (%d): %s" % (rc, err)
        return ids

    def decode_raw(self, ids, flags, buf_size=None):
        arr = (ctypes.c_int * max(len(ids), 1))(*ids)
        length = ctypes.c_size_t(0)
        rc = self.lib.lucie_detokenize(self.handle, arr, len(ids), flags, None, 0, ctypes.byref(length))
        if rc not in (LUCIE_OK, LUCIE_ESMALL):
            return rc, None, length.value
        size = length.value + 1 if buf_size is None else buf_size
        buf = ctypes.create_string_buffer(max(size, 1))
        rc = self.lib.lucie_detokenize(self.handle, arr, len(ids), flags, buf, size, ctypes.byref(length))
        return rc, buf.raw[:min(length.value, max(size - 1, 0))], length.value

    def decode(self, ids, flags):
        rc, text, _ = self.decode_raw(ids, flags)
        assert rc == LUCIE_OK, "lucie_detokenize failed (%d) on %r" % (rc, ids)
        return text

    def stream(self, ids, flags, context=()):
        """The chunks a streaming decode returns (push for each id, then flush),
        after priming the stream with `context` ids (text the caller has)."""
        st = self.lib.lucie_detok_stream_new(self.handle, flags)
        assert st
        chunks, n = [], ctypes.c_size_t(0)
        try:
            if context:
                arr = (ctypes.c_int * len(context))(*context)
                assert self.lib.lucie_detok_stream_prime(st, arr, len(context)) == LUCIE_OK
            for i in ids:
                p = self.lib.lucie_detok_stream_push(st, i, ctypes.byref(n))
                assert p, "lucie_detok_stream_push failed on %d" % i
                chunks.append(ctypes.string_at(p, n.value))
            p = self.lib.lucie_detok_stream_flush(st, ctypes.byref(n))
            assert p
            chunks.append(ctypes.string_at(p, n.value))
        finally:
            self.lib.lucie_detok_stream_free(st)
        return chunks

    def close(self):
        self.lib.lucie_close(self.handle)


@pytest.fixture(scope="session")
def lib(tmp_path_factory):
    cc = os.environ.get("CC", "cc")
    assert shutil.which(cc), "no C compiler (%s): the library under test cannot be built" % cc
    out = str(tmp_path_factory.mktemp("lib") / "liblucie.so")
    # CFLAGS from the environment, e.g. sanitizers (then LD_PRELOAD the runtime)
    cflags = os.environ.get("CFLAGS", "-O2").split()
    cmd = [cc, "-std=c99"] + cflags + ["-shared", "-fPIC", "-o", out, os.path.join(REPO, "lucie.c"), "-lm"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0, "building lucie.c as a shared library failed:\n" + proc.stderr
    return Lib(out)


# ---------------------------------------------------------------------------
# Tokenizers under test: each gets a tiny random checkpoint and a model file.

def build_model(tok_dir, work_dir, vocab=None):
    import make_checkpoint
    with open(os.path.join(tok_dir, "tokenizer.json"), "r", encoding="utf-8") as f:
        tok = json.load(f)
    bos = tok["post_processor"]["single"][0]["SpecialToken"]["id"]
    bos_id = tok["post_processor"]["special_tokens"][bos]["ids"][0]
    eos_id = tok["model"]["vocab"].get("</s>", bos_id)
    config = dict(make_checkpoint.DEFAULT_CONFIG, bos_token_id=bos_id, eos_token_id=eos_id)
    ckpt = os.path.join(work_dir, "hf")
    make_checkpoint.make_checkpoint(ckpt, config=config, tokenizer_dir=tok_dir, hidden=16, ffn=32, layers=1,
                                    heads=2, kv_heads=1, tied=True, max_position=64, vocab=vocab)
    out = os.path.join(work_dir, "model.bin")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "export.py"), ckpt, out, "--quiet"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0, "export.py failed: " + proc.stderr
    return out


TOKENIZERS = ["lucie-base", "lucie-instruct", "generated-lucie", "generated-llama", "generic-a", "generic-b",
              "stories260K"]


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory):
    import make_tokenizer
    root = tmp_path_factory.mktemp("tokenizers")
    dirs = {"lucie-base": LUCIE_BASE, "lucie-instruct": LUCIE_INSTRUCT, "stories260K": STORIES_UNTIED}
    for kind in ("lucie", "llama"):
        dirs["generated-" + kind] = make_tokenizer.make_tokenizer(str(root / kind), kind)
    for kind in ("generic-a", "generic-b"):
        dirs[kind] = make_tokenizer.make_tokenizer(str(root / kind), kind)
    for norm in ("nfc", "space_after", "lucie"):
        dirs["bytes-" + norm] = make_tokenizer.make_tokenizer(str(root / ("bytes-" + norm)), "bytes", norm)
    return dirs


_cache = {}


def pair(name, tokenizer_dirs, lib, tmp_path_factory):
    """(reference Tokenizer, Model, model path) for a tokenizer name."""
    if name not in _cache:
        tok_dir = need_dir(tokenizer_dirs[name])
        path = build_model(tok_dir, str(tmp_path_factory.mktemp(name)))
        ref = tokenizers.Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
        _cache[name] = (ref, Model(lib, path), path)
    return _cache[name]


@pytest.fixture(params=TOKENIZERS)
def tok(request, tokenizer_dirs, lib, tmp_path_factory):
    return (request.param,) + pair(request.param, tokenizer_dirs, lib, tmp_path_factory)


# ---------------------------------------------------------------------------
# Test strings

PROSE = {
    "fr": ["Le chat dort sur le canapé depuis ce matin.",
           "Après la réunion, nous sommes allés boire un café près de la gare.",
           "« Qu'est-ce que tu fais ? » demanda-t-elle, l'air inquiet.",
           "L'été dernier, j'ai lu trois romans et une dizaine de bandes dessinées.",
           "Les élèves doivent rendre leur devoir avant vendredi à midi.",
           "Il faut environ 45 minutes pour aller de Paris à Versailles en train.",
           "Ça n'a pas d'importance : on recommencera demain, voilà tout.",
           "Où as-tu rangé les clés ? Je les cherche partout depuis une heure !",
           "La cuisine française est réputée pour ses sauces, ses fromages et ses vins.",
           "Je m’appelle Lucie et j’habite à Lyon — enfin, pour l’instant.",
           "Ils se sont rencontrés en 1998, à l’université de Bordeaux.",
           "Cœur, œuvre, sœur, bœuf : des mots avec une ligature.",
           "Noël approche ; les vitrines s’illuminent et les enfants s’impatientent."],
    "en": ["The quick brown fox jumps over the lazy dog.",
           "She said, \"I'll be there by nine o'clock, I promise.\"",
           "Data science combines statistics, programming and domain knowledge.",
           "In 2023, the company reported revenues of $4.5 billion.",
           "Don't count your chickens before they hatch.",
           "The museum (which opened in 1902) attracts thousands of visitors [citation needed].",
           "Well... that's not what I expected — at all."],
    "de": ["Die Straßenbahn fährt alle zehn Minuten zum Hauptbahnhof.",
           "Größere Änderungen müssen vorher mit dem Team besprochen werden.",
           "Ich würde gern ein Glas Wasser bestellen, bitte.",
           "Übermorgen beginnt das Oktoberfest in München.",
           "„Wie geht's dir?“ fragte er leise."],
    "es": ["¿Dónde está la biblioteca? Necesito devolver este libro.",
           "El niño comió una manzana y después se durmió en el sofá.",
           "¡Qué alegría verte de nuevo, después de tantos años!",
           "La señora Muñoz enseña español en una escuela de Sevilla."],
    "it": ["La pizza napoletana è famosa in tutto il mondo.",
           "Perché non vieni con noi al mare questo fine settimana?",
           "L'università di Bologna è una delle più antiche d'Europa.",
           "Però non è così semplice, caro mio."],
}

CODE = [
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; i++) {\n\tsum += x[i];\n}\n",
    "if x == 1:\n\tprint('one')\nelse:\n\tprint(\"other\")",
    "{\"name\": \"Lucie\", \"size\": [7, 0], \"tags\": {\"lang\": \"fr\"}}",
    "<html><body><p class=\"x\">Bonjour</p></body></html>",
    "SELECT * FROM users WHERE name = 'O''Brien';",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); }",
    "x = [i ** 2 for i in range(10) if i % 2 == 0]",
    "path/to/file.txt and C:\\Windows\\System32",
    "https://example.org/a/b?c=d&e=f#frag",
    "a_b_c = __init__(self, *args, **kwargs)",
    "// comment\n/* block */\n<!-- html -->",
]

SPECIAL_STRINGS = [
    "<s>", "</s>", "<unk>", "<pad>", "Hello<s>world", "<s>Bonjour", "Bonjour</s>", "</s></s>", "<s> <s>",
    "a<unk>b", "<pad>\n<pad>", "<s", "s>", "< s>", "<<s>>", "<s><s>",
    "<|start_header_id|>user<|end_header_id|>\n\nSalut !<|eot_id|>",
    "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|><|eot_id|>", "x<|eot_id|>y",
    "<|start_header_id|", "<|eot_id|>\n", "\n<s>\n", " <s> ", "(<s>)",
    "le <mask> chat", "le<mask>chat", "  <mask>  x", "<mask>", "Lucie", "Bonjour Lucie !", "Lucie<s>Lucie",
]

SPACE_AFTER_CHARS = "\n\t([{/<'\u2019\"\u00ab\u201c\u2018\u201a\u2039\u2014\u2013\u2015"
FOLLOWERS = ["a", " ", "1", ".", "", "é", "É", "日", "_", "\u0301", "²", "\u200d", "😀", "\n", "Ω", "\u00a0"]


def parity_strings():
    strings = []
    for sentences in PROSE.values():
        strings += sentences
        strings.append(" ".join(sentences))
    strings += CODE + SPECIAL_STRINGS
    fr = PROSE["fr"]
    # decomposed accents, line endings, tabs, NBSP, runs of spaces
    strings += [unicodedata.normalize("NFD", s) for s in fr[:6]]
    strings += [unicodedata.normalize("NFKD", "FInal ½ ㎏ Å Ω")]
    strings += ["Ligne 1\r\nLigne 2\r\n", "a\rb", "\r\n\r\n", "tab\tsep\tvalues", "\t\tindent",
                "prix\u00a0: 10\u00a0€", "\u00a0\u00a0début", "a  b   c    d", "    ", " ", "  x  ", "x ",
                "", "\n", "\r", "\x00", "a\x00b", "\x00\r\n", "\u2028\u2029", "\u3000全角", "\u202f;"]
    # every "space after" character followed by various things, alone and in text
    for c in SPACE_AFTER_CHARS:
        for f in FOLLOWERS:
            strings.append(c + f)
        strings.append("mot" + c + "suite")
        strings.append(c + c + "x")
    strings += ["\nÉcole", "\nΩmega", "\n日本語", "\nñ", "\n\u0301", "\n２", "\n١٢٣", "«Bonjour»", "« Bonjour »",
                "l'arbre", "l’arbre", "(voir p. 3)", "[1]", "{a}", "1/2", "a<b", "— Oui.", "–x", "―y"]
    # scripts, emoji, rare CJK, byte fallback
    strings += ["Привет, как дела?", "Καλημέρα κόσμε", "שלום עולם", "مرحبا بالعالم", "नमस्ते दुनिया",
                "สวัสดีครับ", "안녕하세요 세계", "각", "日本語のテキストです。", "中文文本测试", "𠀀𠀁𠀂 𪚥",
                "😀", "👍🏽", "🇫🇷🇩🇪", "👩\u200d💻", "I ❤ Paris", "∑ x² ≤ ∞", "€ £ ¥ ₿", "\U0010FFFF",
                "\ufeffBOM", "\ufffd", "\u0301", "\u0301\u0302abc", " \u0308", "e\u0301\u0301\u0301",
                "a" + "\u0316\u0301\u0334" * 5, "\u1100\u1161\u11a8", "ﬀ ﬁ ﬂ", "Å", "Ω K"]
    # long words
    strings += ["a" * 3000, "anticonstitutionnellement" * 40, "é" * 500 + "😀" * 100,
                "x" * 1000 + " " * 100 + "y" * 1000]
    rng = random.Random(1234)
    pool = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 .,;:!?'\"()[]{}<>/\\\n\t\r\x00-_"
            "éèêàçùœÉÀ’«»“”—–…\u00a0\u0301\u0308日本😀Ωß") + SPACE_AFTER_CHARS
    for _ in range(80):
        strings.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 60))))
    for _ in range(20):
        words = [rng.choice(SPECIAL_STRINGS + PROSE["fr"] + ["\n", " ", "\t", "(", "«"]) for _ in range(5)]
        strings.append("".join(words))
    return strings


STRINGS = parity_strings()


def test_enough_strings():
    assert len(STRINGS) >= 300


def hf_encode(ref, text, add_special, parse_special):
    ref.encode_special_tokens = not parse_special
    try:
        return ref.encode(text, add_special_tokens=add_special).ids
    finally:
        ref.encode_special_tokens = False


def hf_decode(ref, ids, skip):
    """The reference's decode as UTF-8 bytes, or None where it panics (its Strip
    decoder indexes out of bounds when the start and end cuts overlap)."""
    try:
        return ref.decode(ids, skip_special_tokens=skip).encode("utf-8")
    except BaseException as e:
        if type(e).__name__ != "PanicException":
            raise
        return None


def report(mismatches, what):
    lines = ["%d %s mismatches; first ones:" % (len(mismatches), what)]
    lines += ["  %r" % (m,) for m in mismatches[:8]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Parity

def test_encode_parity(tok):
    name, ref, model, _ = tok
    mismatches = []
    for text in STRINGS:
        for add_special in (True, False):
            for parse_special in (True, False):
                want = hf_encode(ref, text, add_special, parse_special)
                flags = (ADD_SPECIAL if add_special else 0) | (PARSE_SPECIAL if parse_special else 0)
                got = model.encode(text, flags)
                if got != want:
                    mismatches.append((text, add_special, parse_special, want, got))
    assert not mismatches, report(mismatches, "encode")


def decode_inputs(ref, model):
    """Encodings of the test strings and random id sequences."""
    seqs = [hf_encode(ref, t, True, True) for t in STRINGS]
    vocab = ref.get_vocab(with_added_tokens=True)
    n = max(vocab.values()) + 1
    by_text = sorted(vocab.items(), key=lambda kv: kv[1])
    byte_ids = [i for s, i in by_text if len(s) == 6 and s.startswith("<0x")]
    space_ids = [i for s, i in by_text if s.startswith("\u2581") or s.endswith("\u2581")]
    special_ids = sorted(ref.get_added_tokens_decoder())
    after_ids = [i for s, i in by_text if s and s[-1] in SPACE_AFTER_CHARS]
    rng = random.Random(99)
    for _ in range(300):
        seq = []
        for _ in range(rng.randint(1, 24)):
            pool = rng.choice([byte_ids, byte_ids, space_ids, special_ids, after_ids, range(n)])
            if pool:
                seq.append(rng.choice(list(pool)))
        seqs.append(seq)
    utf8 = "é😀日".encode("utf-8")  # complete and truncated runs of byte tokens
    byte_of = dict((int(s[3:5], 16), i) for s, i in by_text if i in byte_ids)
    if len(byte_of) == 256:
        for cut in range(len(utf8) + 1):
            run = [byte_of[b] for b in utf8[:cut]]
            seqs += [run, run + space_ids[:1], space_ids[:1] + run, special_ids[:1] + run + [byte_of[0x80]]]
    return seqs


def test_decode_and_stream_parity(tok):
    name, ref, model, _ = tok
    mismatches, stream_bad = [], []
    for ids in decode_inputs(ref, model):
        for skip in (False, True):
            want = hf_decode(ref, ids, skip)
            if want is None:
                continue
            got = model.decode(ids, SKIP_SPECIAL if skip else 0)
            if got != want:
                mismatches.append((ids, skip, want, got))
            chunks = model.stream(ids, SKIP_SPECIAL if skip else 0)
            for c in chunks:
                try:
                    c.decode("utf-8")
                except UnicodeDecodeError:
                    stream_bad.append((ids, skip, "chunk not UTF-8", c))
            if b"".join(chunks) != want:
                stream_bad.append((ids, skip, want, chunks))
            # primed with a prefix (a prompt): the rest of the decode follows
            k = len(ids) // 2
            head = hf_decode(ref, ids[:k], skip)
            if k and head is not None and want.startswith(head):
                chunks = model.stream(ids[k:], SKIP_SPECIAL if skip else 0, context=ids[:k])
                if b"".join(chunks) != want[len(head):]:
                    stream_bad.append((ids, skip, "primed with %d ids" % k, want[len(head):], chunks))
    assert not mismatches, report(mismatches, "decode")
    assert not stream_bad, report(stream_bad, "streaming decode")


def test_stream_emits_early(tok):
    """Streaming is not just 'everything at flush': plain words come out at once."""
    name, ref, model, _ = tok
    ids = hf_encode(ref, "Le chat dort sur le canapé depuis ce matin.", False, True)
    chunks = model.stream(ids, 0)
    assert sum(1 for c in chunks[:-1] if c) >= len(ids) // 2, chunks


# ---------------------------------------------------------------------------
# Unicode tables over every code point, through byte-level tokenizers

ALL_CODE_POINTS = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]


def text_of_bytes_tokens(ref, ids):
    """The bytes a 'bytes' tokenizer's ids stand for."""
    out = bytearray()
    for i in ids:
        s = ref.id_to_token(i)
        if len(s) == 6 and s.startswith("<0x"):
            out.append(int(s[3:5], 16))
        else:
            out += b"[%s]" % s.encode("utf-8")
    return bytes(out)


def compare_normalizer(ref, model, texts):
    np = require("numpy")
    """Mismatches between the reference's normalizer output and the bytes lucie's
    encoding stands for, on texts without added tokens."""
    byte_of = {}
    for token, i in ref.get_vocab().items():
        if len(token) == 6 and token.startswith("<0x"):
            byte_of[i] = int(token[3:5], 16)
    table = np.array([byte_of.get(i, 0) for i in range(max(byte_of) + 1)], dtype=np.uint8)
    mismatches = []
    for text in texts:
        want = ref.normalizer.normalize_str(text).encode("utf-8")
        rc, ids, n, err = model.encode_raw(text.encode("utf-8"), 0, raw=True)
        assert rc == LUCIE_OK, err
        got = table[np.frombuffer(ids, dtype=np.int32, count=n)].tobytes()
        if got != want:
            k = next((i for i in range(min(len(want), len(got))) if want[i] != got[i]), min(len(want), len(got)))
            mismatches.append((want[max(0, k - 12):k + 12], got[max(0, k - 12):k + 12]))
    return mismatches


def test_nfc_every_code_point(tokenizer_dirs, lib, tmp_path_factory):
    ref, model, _ = pair("bytes-nfc", tokenizer_dirs, lib, tmp_path_factory)
    chunk = 2048
    singles = ["|".join(chr(c) for c in ALL_CODE_POINTS[i:i + chunk]) for i in range(0, len(ALL_CODE_POINTS), chunk)]
    together = ["".join(chr(c) for c in ALL_CODE_POINTS[i:i + chunk]) for i in range(0, len(ALL_CODE_POINTS), chunk)]
    # decomposed forms (Python's Unicode may be newer than the reference's: still must agree)
    decomposed = ["|".join(unicodedata.normalize("NFD", chr(c)) for c in ALL_CODE_POINTS[i:i + chunk])
                  for i in range(0, len(ALL_CODE_POINTS), chunk)]
    marks = [chr(c) for c in ALL_CODE_POINTS if unicodedata.combining(chr(c))]
    rng = random.Random(7)
    shuffled = []
    for _ in range(300):
        s = []
        for _ in range(40):
            s.append(rng.choice("aeiouAEOUcnsyCNSY\u1100\u1161\u11a8\uac00") if rng.random() < 0.3 else rng.choice(marks))
        shuffled.append("".join(s))
    mismatches = compare_normalizer(ref, model, singles + together + decomposed + shuffled)
    assert not mismatches, report(mismatches, "NFC")


def test_word_class_every_code_point(tokenizer_dirs, lib, tmp_path_factory):
    """The "space after" rules see \\w exactly as the reference's regex engine."""
    ref, model, _ = pair("bytes-space_after", tokenizer_dirs, lib, tmp_path_factory)
    chunk = 4096
    texts = []
    for opener in ("(", "\u2019"):
        for i in range(0, len(ALL_CODE_POINTS), chunk):
            texts.append("".join(opener + chr(c) for c in ALL_CODE_POINTS[i:i + chunk]))
    mismatches = compare_normalizer(ref, model, texts)
    assert not mismatches, report(mismatches, "\\w")


def test_whole_normalizer_on_strings(tokenizer_dirs, lib, tmp_path_factory):
    """Lucie's whole normalizer Sequence, output byte by byte, special tokens split out."""
    ref, model, _ = pair("bytes-lucie", tokenizer_dirs, lib, tmp_path_factory)
    mismatches = []
    for text in STRINGS:
        for parse_special in (True, False):
            want = hf_encode(ref, text, False, parse_special)
            got = model.encode(text, PARSE_SPECIAL if parse_special else 0)
            if got != want:
                mismatches.append((text, parse_special, text_of_bytes_tokens(ref, want), text_of_bytes_tokens(ref, got)))
    assert not mismatches, report(mismatches, "normalizer")


# ---------------------------------------------------------------------------
# The command line, byte for byte

CLI_SAMPLE = [PROSE["fr"][3], "Je m’appelle Lucie.\n(voir ci-dessous)\r\n\ttab", "", "\x00\n\r", "😀 日本",
              "Hello<s>world", "<|start_header_id|>user<|end_header_id|>\n\nSalut<|eot_id|>", "  x  "]


def run_cli(args, stdin=None):
    proc = subprocess.run([RUN] + args, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc


def test_cli_tokenize_detokenize(tok):
    name, ref, model, path = tok
    need_binary(RUN)
    for text in CLI_SAMPLE:
        for no_bos in (False, True):
            proc = run_cli([path, "--tokenize", "-"] + (["--no-bos"] if no_bos else []), text.encode("utf-8"))
            assert proc.returncode == 0, proc.stderr
            got = [int(x) for x in proc.stdout.decode().split()]
            assert proc.stdout.endswith(b"\n") and proc.stdout.count(b"\n") == 1
            assert got == hf_encode(ref, text, not no_bos, True), (text, no_bos)
        ids = hf_encode(ref, text, True, True)
        for skip in (False, True):
            proc = run_cli([path, "--detokenize", " ".join(map(str, ids))] + (["--skip-special"] if skip else []))
            assert proc.returncode == 0, proc.stderr
            want = hf_decode(ref, ids, skip)
            assert want is None or proc.stdout == want, (text, skip)


def test_cli_invalid_utf8(tokenizer_dirs, lib, tmp_path_factory):
    need_binary(RUN)
    _, _, path = pair("generated-lucie", tokenizer_dirs, lib, tmp_path_factory)
    for bad in (b"abc\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"ok\x80ok"):
        proc = run_cli([path, "--tokenize", "-"], bad)
        assert proc.returncode not in (0,) and proc.returncode > 0, (bad, proc.returncode)
        assert b"UTF-8" in proc.stderr and proc.stderr.count(b"\n") == 1, proc.stderr


# ---------------------------------------------------------------------------
# API contract and hostile input

def test_invalid_utf8_and_buffers(tokenizer_dirs, lib, tmp_path_factory):
    ref, model, path = pair("generated-lucie", tokenizer_dirs, lib, tmp_path_factory)
    for bad in (b"\xff", b"a\xc3", b"\xe2\x82", b"\xed\xbf\xbf", b"\xf8\x88\x80\x80\x80", b"\xc1\xbf"):
        rc, ids, n, err = model.encode_raw(bad, ADD_SPECIAL)
        assert rc == LUCIE_EINVAL and "UTF-8" in err, (bad, rc, err)
    text = PROSE["fr"][0]
    want = hf_encode(ref, text, True, True)
    rc, ids, n, err = model.encode_raw(text.encode(), ADD_SPECIAL | PARSE_SPECIAL, capacity=3)
    assert rc == LUCIE_ESMALL and n == len(want) and ids == want[:3]
    rc, ids, n, err = model.encode_raw(b"", ADD_SPECIAL, capacity=0)
    assert rc == LUCIE_ESMALL and n == 1
    rc, ids, n, err = model.encode_raw(b"", 0, capacity=0)
    assert rc == LUCIE_OK and n == 0
    full = ref.decode(want, skip_special_tokens=False).encode("utf-8")
    rc, text_out, length = model.decode_raw(want, 0, buf_size=5)
    assert rc == LUCIE_ESMALL and length == len(full) and text_out == full[:4]
    rc, text_out, length = model.decode_raw(want, 0, buf_size=len(full) + 1)
    assert rc == LUCIE_OK and text_out == full
    with open(path, "rb") as f:  # the model's vocabulary (ids past the tokenizer's are padding, see below)
        vocab_size = read_header(f.read(256))["vocab_size"]
    for bad_id in (-1, vocab_size, 1 << 30):
        rc, _, _ = model.decode_raw([want[1], bad_id], 0)
        assert rc == LUCIE_EINVAL
        st = model.lib.lucie_detok_stream_new(model.handle, 0)
        assert not model.lib.lucie_detok_stream_push(st, bad_id, None)
        model.lib.lucie_detok_stream_free(st)
    # a stream is primed only while fresh, and ends with its flush
    st = model.lib.lucie_detok_stream_new(model.handle, 0)
    one = (ctypes.c_int * 1)(want[1])
    assert model.lib.lucie_detok_stream_push(st, want[1], None)
    assert model.lib.lucie_detok_stream_prime(st, one, 1) == LUCIE_EINVAL
    assert model.lib.lucie_detok_stream_flush(st, None)
    assert not model.lib.lucie_detok_stream_push(st, want[1], None)
    model.lib.lucie_detok_stream_free(st)


def test_padded_vocabulary(lib, tmp_path):
    """A checkpoint with more embedding rows than its tokenizer has tokens (padded, as
    many real checkpoints are): ids without a piece decode to nothing, as in HF decode(),
    in lucie_detokenize, in streams and in generation, which may well sample them."""
    need_dir(STORIES_UNTIED)
    need_binary(RUN)
    ref = tokenizers.Tokenizer.from_file(os.path.join(STORIES_UNTIED, "tokenizer.json"))
    n_pieces = ref.get_vocab_size(with_added_tokens=True)
    vocab = n_pieces + 88
    path = build_model(STORIES_UNTIED, str(tmp_path), vocab=vocab)
    model = Model(lib, path)
    rng = random.Random(13)
    try:
        for _ in range(200):
            ids = [rng.randrange(vocab) for _ in range(rng.randint(1, 12))]
            for flags, skip in ((0, False), (SKIP_SPECIAL, True)):
                want = ref.decode(ids, skip_special_tokens=skip).encode("utf-8")
                assert model.decode(ids, flags) == want, ids
                assert b"".join(model.stream(ids, flags)) == want, ids
        for bad_id in (-1, vocab):  # not ids of this model at all
            assert model.decode_raw([5, bad_id], 0)[0] == LUCIE_EINVAL
    finally:
        model.close()
    # generation at a high temperature samples padded ids; the streamed text is HF's decode
    prompt = ref.encode("Once upon a time").ids
    proc = subprocess.run([os.path.join(REPO, "test", "session"), path, "--temp", "1.5", "--seed", "3",
                           "--threads", "1", "generate", "50", ",".join(map(str, prompt))],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0, proc.stderr
    out = dict(line.partition(":")[::2] for line in proc.stdout.splitlines())
    generated = [int(x) for x in out["generate"].split()]
    assert any(i >= n_pieces for i in generated), "test design: no padded id was sampled"
    whole = ref.decode(prompt + generated, skip_special_tokens=True)
    prompt_text = ref.decode(prompt, skip_special_tokens=True)
    assert whole.startswith(prompt_text)
    assert bytes(int(x) for x in out["text"].split()) == whole[len(prompt_text):].encode("utf-8")
    proc = run_cli([path, "-p", "Once upon a time", "-n", "50", "--temp", "1.5", "--seed", "3"])
    assert proc.returncode == 0, proc.stderr


def tokenizer_section_span(data):
    e = read_entries(data)["tokenizer"]
    return e["offset"], e["size"]


def test_corrupt_tokenizer_sections(tokenizer_dirs, lib, tmp_path_factory):
    """Damaged sections are refused with an error, never a crash (checked in a
    child process so that a crash cannot take the test runner down)."""
    need_binary(RUN)
    _, _, path = pair("generated-lucie", tokenizer_dirs, lib, tmp_path_factory)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    off, size = tokenizer_section_span(data)
    work = str(tmp_path_factory.mktemp("corrupt") / "m.bin")
    rng = random.Random(5)
    cases = []
    for field in range(1, 12):  # header fields: version, counts, ids, flags
        for value in (0, 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)):
            cases.append([(off + 4 * field, struct.pack("<I", value))])
    for _ in range(150):  # random bytes anywhere in the section
        cases.append([(off + rng.randrange(size), bytes([rng.randrange(256)])) for _ in range(rng.randint(1, 4))])
    for _ in range(40):  # a plausible length or id with a wrong value
        at = off + 4 * rng.randrange(size // 4)
        cases.append([(at, struct.pack("<I", rng.choice([0, 0xFF, 0xFFFF, 0x10000, size, 0xFFFFFFFF])))])
    refused = 0
    for patches in cases:
        mutated = bytearray(data)
        for at, b in patches:
            mutated[at:at + len(b)] = b
        with open(work, "wb") as f:
            f.write(mutated)
        proc = run_cli([work, "--tokenize", "-"], "Bonjour <s> le monde ! 😀 (test)".encode())
        assert proc.returncode >= 0, "crash (signal %d) on %r" % (-proc.returncode, patches)
        if proc.returncode != 0:
            refused += 1
            assert proc.stderr.count(b"\n") == 1, proc.stderr
    assert refused > len(cases) // 3  # most damage is detected, and none crashes


def test_export_refuses_unsupported_constructs():
    import export
    import make_tokenizer
    base = make_tokenizer.build("llama")
    cases = {
        "pre_tokenizer": dict(base, pre_tokenizer={"type": "ByteLevel", "add_prefix_space": False}),
        "Replace with regex": dict(base, normalizer={"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}),
        "single_word": dict(base, added_tokens=base["added_tokens"] + [
            make_tokenizer.added("xyz", len(base["model"]["vocab"]), special=False)]),
        "Lowercase": dict(base, normalizer={"type": "Lowercase"}),
    }
    cases["single_word"]["added_tokens"][-1]["single_word"] = True
    for construct, tok in cases.items():
        with pytest.raises(export.ExportError) as e:
            export.tokenizer_section(json.loads(json.dumps(tok)), None)
        assert construct.split()[0] in str(e.value), (construct, str(e.value))
