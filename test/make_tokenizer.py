#!/usr/bin/env python3
"""make_tokenizer.py - write small tokenizer.json files for the tokenizer tests.

    python3 test/make_tokenizer.py OUT_DIR --kind lucie|llama|bytes [--normalizer nfc|space_after|lucie]

Kinds:
  lucie  Lucie-7B's exact pipeline (the normalizer Sequence: NFC, removal of \\r and
         \\x00, "space after" Replace rules, Prepend " ", [ \\u00A0] -> "▁"; its decoder;
         its BOS post-processor), with a small BPE vocabulary learned here, byte
         fallback, Lucie's special tokens and chat tokens, plus two non-special added
         tokens that exercise the generic paths (one with lstrip/rstrip, one matched
         after normalization).
  llama  a plain Llama-2 style tokenizer: Prepend "▁", " " -> "▁", BPE with byte
         fallback, decoder Replace/ByteFallback/Fuse/Strip.
  generic-a, generic-b
         Llama-like, with the less common constructs lucie.c also supports: unk
         (missing byte tokens) with and without fuse_unk, BOS+EOS, a multi-character
         normalizer Replace, decoder steps on either side of Fuse (Replace patterns
         that span tokens, Metaspace schemes "never"/"first", Strip at both ends).
  bytes  no merges: every character becomes its UTF-8 byte tokens, so encoding shows
         exactly what the normalizer produced. --normalizer picks the normalizer
         (only NFC; only Lucie's "space after" rules; Lucie's whole sequence).

Only the standard library is used; the BPE merges are learned by a small
deterministic trainer (most frequent adjacent pair, ties broken by the pair's
text), on text normalized the way the tokenizer will normalize it.

Also importable: make_tokenizer(out_dir, kind, normalizer="nfc") returns out_dir.
"""

import argparse
import json
import os
import unicodedata

SPACE_AFTER_CHARS = "\n\t([{/<'\u2019\"\u00ab\u201c\u2018\u201a\u2039\u2014\u2013\u2015"

# Training text, written for these tests.
CORPUS = """
Le petit village se réveillait lentement sous une pluie fine. Les enfants couraient vers l'école,
tandis que les anciens discutaient du prix du pain et de la météo. « Il fera beau demain », disait
toujours le boulanger, même quand l'orage grondait au loin. Personne ne le croyait vraiment, mais
tout le monde l'écoutait avec plaisir. C'était ainsi depuis des années : une habitude, presque un rite.
Où êtes-vous allés cet été ? Nous avons visité la Bretagne, puis nous sommes descendus jusqu'à Nice.
The small village woke up slowly under a light rain. Children ran towards the school while the
elders talked about the weather and the price of bread. "It will be sunny tomorrow," the baker said.
Das kleine Dorf erwachte langsam unter einem leichten Regen. Die Kinder liefen zur Schule, während
die Älteren über das Wetter sprachen. Müller und Schäfer tranken gemütlich ihren Kaffee.
El pequeño pueblo despertaba lentamente bajo una lluvia fina. ¿Mañana hará sol? Los niños corrían.
Il piccolo villaggio si svegliava lentamente sotto una pioggia leggera. Perché no? Città e più.
def main(argv):
    for i in range(10):
        print("value", i, {"key": [1, 2, 3]})
    return 0
int main(void) { return printf("%d\\n", 42) < 0; }
"""

LUCIE_SPECIALS = ["<s>", "</s>", "<unk>", "<pad>"]
CHAT_SPECIALS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def escape_regex_char(c):
    return "\\" + c if c in "\\^$.|?*+()[]{}\n\t" else c


def lucie_normalizer_steps():
    """Lucie-7B's normalizer Sequence, step by step (as in its tokenizer.json)."""
    steps = [{"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": "[\\r\\x00]"}, "content": ""}]
    steps += space_after_steps()
    steps += [{"type": "Prepend", "prepend": " "},
              {"type": "Replace", "pattern": {"Regex": "[ \\u00A0]"}, "content": "\u2581"}]
    return steps


def space_after_steps():
    return [{"type": "Replace", "pattern": {"Regex": escape_regex_char(c) + "(?=[ \\w])"}, "content": c + " "}
            for c in SPACE_AFTER_CHARS]


def lucie_decoder(chat_tokens):
    steps = [{"type": "ByteFallback"},
             {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": False},
             {"type": "Fuse"}]
    steps += [{"type": "Replace", "pattern": {"String": t + " "}, "content": t} for t in chat_tokens]
    steps += [{"type": "Replace", "pattern": {"String": c + " "}, "content": c} for c in SPACE_AFTER_CHARS]
    return {"type": "Sequence", "decoders": steps}


def llama_normalizer_steps():
    return [{"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]


def llama_decoder():
    return {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}


def simple_normalize(text, kind):
    """What the tokenizer's normalizer does to plain training text (enough for training)."""
    if kind == "llama":
        return "\u2581" + text.replace(" ", "\u2581")
    text = unicodedata.normalize("NFC", text).replace("\r", "")
    out = []
    for i, c in enumerate(text):
        out.append(c)
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if c in SPACE_AFTER_CHARS and nxt and (nxt == " " or nxt.isalnum() or nxt == "_"):
            out.append(" ")
    return (" " + "".join(out)).replace(" ", "\u2581").replace("\u00a0", "\u2581")


def train_merges(text, n_merges, alphabet):
    """Greedy BPE: merge the most frequent adjacent pair, n_merges times."""
    seq = [c if c in alphabet else None for c in text]
    merges, vocab = [], list(alphabet)
    for _ in range(n_merges):
        counts = {}
        for a, b in zip(seq, seq[1:]):
            if a is not None and b is not None:
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < 2:
            break
        merged, out, i = best[0] + best[1], [], 0
        while i < len(seq):
            if i + 1 < len(seq) and seq[i] == best[0] and seq[i + 1] == best[1]:
                out.append(merged)
                i += 2
            else:
                out.append(seq[i])
                i += 1
        seq = out
        merges.append(best)
        if merged not in vocab:
            vocab.append(merged)
    return merges, vocab


def added(content, id_, special=True, normalized=False, lstrip=False, rstrip=False):
    return {"id": id_, "content": content, "single_word": False, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": normalized, "special": special}


def template(bos, bos_id):
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}


def byte_tokens():
    return ["<0x%02X>" % b for b in range(256)]


def build(kind, normalizer="nfc"):
    """The tokenizer.json dict of a kind."""
    if kind == "bytes":
        specials = ["<unk>", "<s>", "</s>"]
        vocab = specials + byte_tokens()
        steps = {"nfc": [{"type": "NFC"}], "space_after": space_after_steps(),
                 "lucie": lucie_normalizer_steps()}[normalizer]
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [added(s, i) for i, s in enumerate(specials)],
            "normalizer": {"type": "Sequence", "normalizers": steps},
            "pre_tokenizer": None, "post_processor": template("<s>", 1),
            "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]},
            "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                      "vocab": dict((s, i) for i, s in enumerate(vocab)), "merges": []},
        }
    text = simple_normalize(CORPUS, "llama" if kind.startswith("generic") else kind)
    counts = {}
    for c in text:
        counts[c] = counts.get(c, 0) + 1
    alphabet = sorted(c for c, n in counts.items() if n >= 3)  # rarer characters: byte fallback
    merges, learned = train_merges(text, 400, alphabet)
    if kind == "lucie":
        specials = LUCIE_SPECIALS
        vocab = specials + byte_tokens() + learned
        extra = [added(t, len(vocab) + i) for i, t in enumerate(CHAT_SPECIALS)]
        extra.append(added("<mask>", len(vocab) + 3, special=False, lstrip=True, rstrip=True))
        extra.append(added("Lucie", len(vocab) + 4, special=False, normalized=True))
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [added(s, i) for i, s in enumerate(specials)] + extra,
            "normalizer": {"type": "Sequence", "normalizers": lucie_normalizer_steps()},
            "pre_tokenizer": None, "post_processor": template("<s>", 0),
            "decoder": lucie_decoder(CHAT_SPECIALS),
            "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                      "vocab": dict((s, i) for i, s in enumerate(vocab)),
                      "merges": ["%s %s" % m for m in merges]},
        }
    if kind == "llama":
        specials = ["<unk>", "<s>", "</s>"]
        vocab = specials + byte_tokens() + learned
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [added(s, i) for i, s in enumerate(specials)],
            "normalizer": {"type": "Sequence", "normalizers": llama_normalizer_steps()},
            "pre_tokenizer": None, "post_processor": template("<s>", 1),
            "decoder": llama_decoder(),
            "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                      "vocab": dict((s, i) for i, s in enumerate(vocab)),
                      "merges": ["%s %s" % m for m in merges]},
        }
    if kind in ("generic-a", "generic-b"):
        # Less common constructs: no byte tokens for 4-byte UTF-8 lead bytes (emoji
        # fall back to unk), fuse_unk off (a) / on (b), a multi-character normalizer
        # Replace, BOS and EOS, and decoder steps in other places and shapes.
        specials = ["<unk>", "<s>", "</s>"]
        vocab = specials + [b for b in byte_tokens() if not "<0xF0>" <= b <= "<0xF4>"] + learned
        if kind == "generic-a":
            decoder = [{"type": "Replace", "pattern": {"String": "\u2581\u2581"}, "content": "\u2581_"},
                       {"type": "ByteFallback"},
                       {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never", "split": True},
                       {"type": "Fuse"},
                       {"type": "Replace", "pattern": {"String": "  "}, "content": " "},
                       {"type": "Replace", "pattern": {"String": "e d"}, "content": "E-D"},
                       {"type": "Strip", "content": " ", "start": 1, "stop": 1}]
        else:
            decoder = [{"type": "ByteFallback"}, {"type": "Fuse"},
                       {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True},
                       {"type": "Strip", "content": "e", "start": 2, "stop": 0}]
        post = template("<s>", 1)
        post["single"].append({"SpecialToken": {"id": "</s>", "type_id": 0}})
        post["special_tokens"]["</s>"] = {"id": "</s>", "ids": [2], "tokens": ["</s>"]}
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [added(s, i) for i, s in enumerate(specials)],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"}, {"type": "Replace", "pattern": {"String": "oe"}, "content": "\u0153"}]
                + llama_normalizer_steps()},
            "pre_tokenizer": None, "post_processor": post,
            "decoder": {"type": "Sequence", "decoders": decoder},
            "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": kind == "generic-b", "byte_fallback": True,
                      "vocab": dict((s, i) for i, s in enumerate(vocab)),
                      "merges": ["%s %s" % m for m in merges]},
        }
    raise ValueError("unknown tokenizer kind %r" % kind)


def make_tokenizer(out_dir, kind, normalizer="nfc"):
    """Writes tokenizer.json and tokenizer_config.json into out_dir; returns out_dir."""
    tok = build(kind, normalizer)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
    bos = tok["post_processor"]["single"][0]["SpecialToken"]["id"]
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": "</s>",
              "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
    return out_dir


def main(argv=None):
    p = argparse.ArgumentParser(description="Write a small tokenizer.json for the tests.")
    p.add_argument("out_dir")
    p.add_argument("--kind", choices=("lucie", "llama", "bytes", "generic-a", "generic-b"), required=True)
    p.add_argument("--normalizer", choices=("nfc", "space_after", "lucie"), default="nfc")
    args = p.parse_args(argv)
    make_tokenizer(args.out_dir, args.kind, args.normalizer)


if __name__ == "__main__":
    main()
