#!/usr/bin/env python3
"""Generates the appendix of lucie.c: the Unicode data its tokenizer needs.

    python3 tools/gen_unicode.py [OUT]        (default: the appendix at the end of lucie.c)

The tokenizer must reproduce Hugging Face `tokenizers` exactly, so the tables
are taken from that reference implementation itself, probed live through its
Python bindings, not from a Unicode release of our choosing:

  * NFC (the "NFC" normalizer). The Rust crate behind it carries Unicode 9.0
    composition data, older than Python's `unicodedata`. Python supplies the
    one-step canonical decompositions and combining classes (values that
    Unicode guarantees never change once a character is assigned); the
    reference then decides which of them it knows: a character is kept only
    if the reference's NFD decomposes it / reorders it as a combining mark,
    and a pair composes only if the reference's NFC recomposes it.
  * \\w (used by the regex lookahead "(?=[ \\w])" of Lucie's normalizer):
    Oniguruma's Unicode word class, read back from the reference directly by
    deleting every non-word character from a string of all code points.

Every table is then checked against the reference once more (all code points
through NFD and NFC, every composition pair, every combining mark against
every combining class) and the script fails loudly on any disagreement.
Hangul syllables are left out: the C code composes them by formula.

Requires the `tokenizers` package (pip install tokenizers). The output is
deterministic for a given `tokenizers` version; the version used is recorded
in the generated file's header.
"""
import os
import sys
import unicodedata

import tokenizers
from tokenizers import Regex, normalizers

SBASE, SCOUNT = 0xAC00, 11172
ALL = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
SEP = "\x01"  # a starter with no decomposition: NFC/NFD never act across it


def batch(fn, strings):
    """Applies a reference normalizer to many strings in one call."""
    out = fn("".join(s + SEP for s in strings)).split(SEP)
    assert len(out) == len(strings) + 1 and out[-1] == ""
    return out[:-1]


def one_step_decomposition(c):
    d = unicodedata.decomposition(chr(c))
    if not d or d.startswith("<"):
        return None
    return [int(x, 16) for x in d.split()]


APPENDIX_MARK = "/* ========================================================================\n * APPENDIX: Unicode tables"


def write_tables(out_path, text):
    """Replaces the generated appendix at the end of lucie.c (from its marker to the
    end of the file), or writes a stand-alone file when given another path."""
    if os.path.basename(out_path) == "lucie.c":
        with open(out_path, encoding="utf-8") as f:
            source = f.read()
        at = source.find(APPENDIX_MARK)
        if at < 0:
            sys.exit("gen_unicode.py: %s has no appendix marker" % out_path)
        text = source[:at] + text
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(text)


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                 "..", "lucie.c")
    nfd = normalizers.NFD().normalize_str
    nfc = normalizers.NFC().normalize_str

    # ---- combining classes: Python's values, restricted to what the reference knows.
    # A mark of class k > 1 put before U+0334 (class 1) moves after it; a mark of class 1
    # put after U+0301 (class 230) moves before it. Unknown characters stay put.
    candidates = [c for c in ALL if unicodedata.combining(chr(c)) and one_step_decomposition(c) is None]
    probes = []
    for c in candidates:
        k = unicodedata.combining(chr(c))
        probes.append("a" + chr(c) + "\u0334" if k > 1 else "a\u0301" + chr(c))
    ccc = {}
    for c, got in zip(candidates, batch(nfd, probes)):
        k = unicodedata.combining(chr(c))
        moved = got == ("a\u0334" + chr(c) if k > 1 else "a" + chr(c) + "\u0301")
        if moved:
            ccc[c] = k
    unknown_marks = len(candidates) - len(ccc)

    # ---- one-step canonical decompositions the reference knows (its NFD changes them).
    decomp = {}
    dec_candidates = [c for c in ALL if one_step_decomposition(c) and not SBASE <= c < SBASE + SCOUNT]
    for c, got in zip(dec_candidates, batch(nfd, [chr(c) for c in dec_candidates])):
        if got != chr(c):
            decomp[c] = one_step_decomposition(c)
    unknown_decomps = len(dec_candidates) - len(decomp)
    # A decomposable character's own class never matters (it is decomposed first),
    # but its class in Python must then agree with its first component's.
    for c in decomp:
        ccc.pop(c, None)

    # ---- primary composites: two-code-point decompositions the reference recomposes.
    two = sorted(c for c, d in decomp.items() if len(d) == 2)
    comp = {}
    for c, got in zip(two, batch(nfc, [chr(c) for c in two])):
        if got == chr(c):
            comp[tuple(decomp[c])] = c

    # ---- \w: everything the reference's Oniguruma does not delete with [^\w].
    all_text = "".join(chr(c) for c in ALL)
    word_chars = normalizers.Replace(Regex(r"[^\w]"), "").normalize_str(all_text)
    word = sorted(ord(ch) for ch in word_chars)

    check_against_reference(nfd, nfc, ccc, decomp, comp)
    report_differences(word, ccc, decomp, unknown_marks, unknown_decomps)
    check_fast_path_assumptions(ccc, decomp, comp)

    write_tables(out_path, render(ccc, decomp, comp, word))
    print(f"wrote {os.path.normpath(out_path)}: {len(ranges_of(ccc))} class ranges, {len(decomp)} decompositions, "
          f"{len(comp)} compositions, {len(ranges_of(dict.fromkeys(word, 1)))} word ranges")


# ---------------------------------------------------------------------------------------
# A straightforward NFD/NFC over the tables, to check them against the reference.

def full_decompose(c, decomp, outl):
    if SBASE <= c < SBASE + SCOUNT:
        s = c - SBASE
        outl.append(0x1100 + s // 588)
        outl.append(0x1161 + (s % 588) // 28)
        if s % 28:
            outl.append(0x11A7 + s % 28)
    elif c in decomp:
        for d in decomp[c]:
            full_decompose(d, decomp, outl)
    else:
        outl.append(c)


def table_nfd(s, ccc, decomp):
    cps = []
    for ch in s:
        full_decompose(ord(ch), decomp, cps)
    i = 0
    while i < len(cps):  # stable sort of every run of non-starters by class
        if ccc.get(cps[i], 0) == 0:
            i += 1
            continue
        j = i
        while j < len(cps) and ccc.get(cps[j], 0):
            j += 1
        cps[i:j] = sorted(cps[i:j], key=lambda c: ccc[c])
        i = j
    return cps


def compose_pair(a, b, comp):
    if 0x1100 <= a < 0x1113 and 0x1161 <= b < 0x1176:
        return SBASE + ((a - 0x1100) * 21 + (b - 0x1161)) * 28
    if SBASE <= a < SBASE + SCOUNT and (a - SBASE) % 28 == 0 and 0x11A7 < b < 0x11C3:
        return a + (b - 0x11A7)
    return comp.get((a, b))


def table_nfc(s, ccc, decomp, comp):
    out = []
    starter = -1
    last_ccc = 0
    for c in table_nfd(s, ccc, decomp):
        k = ccc.get(c, 0)
        if starter >= 0 and (len(out) - 1 == starter or last_ccc < k):
            p = compose_pair(out[starter], c, comp)
            if p is not None:
                out[starter] = p
                continue
        if k == 0:
            starter = len(out)
        out.append(c)
        last_ccc = k
    return "".join(chr(c) for c in out)


def check_against_reference(nfd, nfc, ccc, decomp, comp):
    singles = [chr(c) for c in ALL if chr(c) != SEP]
    pairs = ["".join(chr(x) for x in p) for p in sorted(comp)]
    # every mark after a base then every class representative, in both orders
    reps = {}
    for c, k in sorted(ccc.items()):
        reps.setdefault(k, c)
    order = []
    for m in sorted(ccc):
        for r in reps.values():
            order.append("a" + chr(m) + chr(r))
            order.append("a" + chr(r) + chr(m))
    # starters followed by a mark, and pairs with a blocking mark in between
    mixed = []
    for (a, b), c in sorted(comp.items()):
        mixed.append(chr(a) + "\u0316" + chr(b))   # class 220 between: blocks only if b's class <= 220
        mixed.append(chr(a) + "\u0334" + chr(b))   # class 1 between
    hangul = [chr(l) + chr(v) + chr(t) for l in (0x1100, 0x1112) for v in (0x1161, 0x1175)
              for t in (0x11A7, 0x11A8, 0x11C2, 0x11C3)]
    tests = singles + pairs + order + mixed + hangul
    bad = 0
    for name, ref, mine in (("NFD", nfd, lambda s: "".join(chr(c) for c in table_nfd(s, ccc, decomp))),
                            ("NFC", nfc, lambda s: table_nfc(s, ccc, decomp, comp))):
        got = batch(ref, tests)
        for s, g in zip(tests, got):
            m = mine(s)
            if m != g:
                bad += 1
                if bad < 10:
                    print(f"{name} mismatch on {[hex(ord(x)) for x in s]}: reference "
                          f"{[hex(ord(x)) for x in g]}, tables {[hex(ord(x)) for x in m]}", file=sys.stderr)
    if bad:
        sys.exit(f"gen_unicode: {bad} disagreements with the reference; tables not written")
    print(f"checked {len(tests)} strings through NFD and NFC against tokenizers {tokenizers.__version__}: 0 mismatches")


def report_differences(word, ccc, decomp, unknown_marks, unknown_decomps):
    py_word = {c for c in ALL
               if unicodedata.category(chr(c))[0] in "LM" or unicodedata.category(chr(c)) in ("Nd", "Pc")}
    ref_word = set(word)
    extra = ref_word - py_word
    cats = {}
    for c in extra:
        cat = unicodedata.category(chr(c))
        cats[cat] = cats.get(cat, 0) + 1
    print(f"\\w: {len(ref_word)} code points; {len(py_word - ref_word)} of Python's L/M/Nd/Pc missing, "
          f"{len(extra)} more (Python categories {dict(sorted(cats.items()))})")
    print(f"NFC: {unknown_marks} combining marks and {unknown_decomps} decompositions of Python's "
          f"Unicode {unicodedata.unidata_version} are unknown to the reference (newer than its data)")


def check_fast_path_assumptions(ccc, decomp, comp):
    """The C code copies runs of code points below U+0300 without looking them up."""
    for c in range(0x300):
        assert ccc.get(c, 0) == 0
        assert c not in decomp or tuple(decomp[c]) in comp and comp[tuple(decomp[c])] == c
    assert all(b >= 0x300 for (a, b) in comp)


# ---------------------------------------------------------------------------------------

def ranges_of(mapping):
    """[(first, last, value)] for runs of consecutive code points with equal values."""
    out = []
    for c in sorted(mapping):
        v = mapping[c]
        if out and out[-1][1] == c - 1 and out[-1][2] == v:
            out[-1][1] = c
        else:
            out.append([c, c, v])
    return out


def rows(items, per_line):
    lines = []
    for i in range(0, len(items), per_line):
        lines.append("    " + " ".join(items[i:i + per_line]))
    return "\n".join(lines)


def render(ccc, decomp, comp, word):
    ccc_rows = [f"{{0x{a:X},0x{b:X},{v}}}," for a, b, v in ranges_of(ccc)]
    dec_rows = [f"{{0x{c:X},0x{d[0]:X},0x{d[1] if len(d) > 1 else 0:X}}}," for c, d in sorted(decomp.items())]
    comp_rows = [f"{{0x{a:X},0x{b:X},0x{c:X}}}," for (a, b), c in sorted(comp.items())]
    word_rows = [f"{{0x{a:X},0x{b:X}}}," for a, b, _ in ranges_of(dict.fromkeys(word, 1))]
    return f"""/* ========================================================================
 * APPENDIX: Unicode tables for the tokenizer (GENERATED - do not edit).
 * Produced by tools/gen_unicode.py from the reference implementation itself
 * (Hugging Face tokenizers {tokenizers.__version__}; Python unicodedata {unicodedata.unidata_version} for
 * the raw values). Regenerate with: python3 tools/gen_unicode.py
 * ======================================================================== */

/* Canonical combining classes != 0, as ranges {{first, last, class}}. */
static const uint32_t uni_ccc_ranges[][3] = {{
{rows(ccc_rows, 5)}
}};

/* One-step canonical decompositions {{code point, first, second or 0}}
 * (Hangul syllables excluded: decomposed by formula). */
static const uint32_t uni_decompositions[][3] = {{
{rows(dec_rows, 4)}
}};

/* Canonical compositions {{first, second, composite}}, sorted by (first, second):
 * the two-code-point decompositions minus the composition exclusions. */
static const uint32_t uni_compositions[][3] = {{
{rows(comp_rows, 4)}
}};

/* The regex class \\w of the reference's regex engine (Oniguruma), as ranges. */
static const uint32_t uni_word_ranges[][2] = {{
{rows(word_rows, 6)}
}};

#define UNI_COUNT(table) (sizeof(table) / sizeof(table[0]))

static int uni_ccc(uint32_t c) {{
    size_t lo = 0, hi = UNI_COUNT(uni_ccc_ranges);
    if (c < 0x300) return 0;
    while (lo < hi) {{
        size_t mid = (lo + hi) / 2;
        if (c < uni_ccc_ranges[mid][0]) hi = mid;
        else if (c > uni_ccc_ranges[mid][1]) lo = mid + 1;
        else return (int)uni_ccc_ranges[mid][2];
    }}
    return 0;
}}

static int uni_decompose1(uint32_t c, uint32_t out[2]) {{
    size_t lo = 0, hi = UNI_COUNT(uni_decompositions);
    while (lo < hi) {{
        size_t mid = (lo + hi) / 2;
        if (c < uni_decompositions[mid][0]) hi = mid;
        else if (c > uni_decompositions[mid][0]) lo = mid + 1;
        else {{
            out[0] = uni_decompositions[mid][1];
            out[1] = uni_decompositions[mid][2];
            return out[1] ? 2 : 1;
        }}
    }}
    return 0;
}}

static uint32_t uni_compose_pair(uint32_t a, uint32_t b) {{
    size_t lo = 0, hi = UNI_COUNT(uni_compositions);
    while (lo < hi) {{
        size_t mid = (lo + hi) / 2;
        const uint32_t *e = uni_compositions[mid];
        if (a < e[0] || (a == e[0] && b < e[1])) hi = mid;
        else if (a > e[0] || b > e[1]) lo = mid + 1;
        else return e[2];
    }}
    return 0;
}}

static int uni_is_word(uint32_t c) {{
    size_t lo = 0, hi = UNI_COUNT(uni_word_ranges);
    while (lo < hi) {{
        size_t mid = (lo + hi) / 2;
        if (c < uni_word_ranges[mid][0]) hi = mid;
        else if (c > uni_word_ranges[mid][1]) lo = mid + 1;
        else return 1;
    }}
    return 0;
}}
"""


if __name__ == "__main__":
    main()
