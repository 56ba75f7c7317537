#!/usr/bin/env python3
"""fuzz_models.py - tiny, self-contained Llama checkpoints for the hostile-input tests and fuzzers.

    python3 test/fuzz_models.py seeds DIR        the loader seed corpus (a few KB per file)
    python3 test/fuzz_models.py model KIND OUT [DTYPE]   one exported model file (KIND below)
    python3 test/fuzz_models.py checkpoint KIND DIR      just the Hugging Face checkpoint

Kinds:
    lucie-like  a Lucie-shaped tokenizer in miniature (NFC, charset and "space after"
                replacements, byte fallback, Metaspace decoder, 4 added tokens), bf16 weights
    llama-like  a Llama-2-style tokenizer (Prepend + Replace, Strip decoder), tied f32 weights,
                no byte fallback
    lucie-vocab Lucie-7B-Instruct's real tokenizer.json and chat template (from test/data;
                65024 tokens) on a 1-layer, dim-8 random model: what the tokenizer fuzzer runs on
    quant-like  the llama-like tokenizer on a 2-layer dim-64 model, wide enough to quantize
    quant-small the same at dim 32, 1 layer: the q8/q4 seeds of the loader corpus

The checkpoints are written with the standard library only (safetensors is a JSON header
plus raw little-endian data) and then exported with the project's export.py, so every
file here is one the loader must accept; the tests and fuzzers then damage it.
"""

import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATA = os.path.join(HERE, "data")

SPECIALS = ["<s>", "</s>", "<unk>", "<pad>"]


def _added(tokens):
    return [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for i, t in enumerate(tokens)]


def _bos_template(bos, bos_id):
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}


def _bpe(vocab_list, merges, byte_fallback, unk="<unk>"):
    return {"type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": byte_fallback,
            "vocab": dict((t, i) for i, t in enumerate(vocab_list)), "merges": merges}


def lucie_like_tokenizer():
    """Every normalizer and decoder op type lucie.h defines, on a ~290-token vocabulary."""
    vocab = list(SPECIALS) + ["<0x%02X>" % b for b in range(256)]
    pieces = ["\u2581", "a", "b", "c", "e", "\u00e9", "\n", "(", "'", "x",
              "\u2581a", "ab", "\u2581ab", "\u2581(", "ca", "\u2581ca", "\u2581\u2581"]
    vocab += pieces
    merges = ["\u2581 a", "a b", "\u2581a b", "\u2581 (", "c a", "\u2581 ca", "\u2581 \u2581"]
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": _added(SPECIALS),
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "[\\r\\x00]"}, "content": ""},
            {"type": "Replace", "pattern": {"Regex": "\\\n(?=[ \\w])"}, "content": "\n "},
            {"type": "Replace", "pattern": {"Regex": "\\((?=[ \\w])"}, "content": "( "},
            {"type": "Replace", "pattern": {"Regex": "'(?=[ \\w])"}, "content": "' "},
            {"type": "Prepend", "prepend": " "},
            {"type": "Replace", "pattern": {"Regex": "[ \\u00A0]"}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": _bos_template("<s>", 0),
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "ByteFallback"},
            {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True, "prepend_scheme": "always"},
            {"type": "Fuse"},
            {"type": "Replace", "pattern": {"String": "\n "}, "content": "\n"},
            {"type": "Replace", "pattern": {"String": "( "}, "content": "("},
            {"type": "Replace", "pattern": {"String": "' "}, "content": "'"}]},
        "model": _bpe(vocab, merges, True),
    }
    return tok, len(vocab)


def llama_like_tokenizer():
    """stories260K / Llama-2 style, without byte fallback: unknown characters become <unk>."""
    vocab = ["<unk>", "<s>", "</s>", "\u2581", "a", "b", "c", "d", "o", "n", "e", "\u2581a", "on", "\u2581on",
             "ce", "\u2581once"]
    merges = ["\u2581 a", "o n", "\u2581 on", "c e", "\u2581on ce"]
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": _added(["<unk>", "<s>", "</s>"]),
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": _bos_template("<s>", 1),
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": _bpe(vocab, merges, False),
    }
    return tok, len(vocab)


def write_safetensors(path, tensors):
    """tensors: list of (name, shape, list of floats), written as F32."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, shape, values in tensors:
        blob = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def write_checkpoint(out_dir, tokenizer, vocab_size, dim=4, hidden=8, n_layers=1, n_heads=2, n_kv_heads=1,
                     tied=False, max_seq=64, bos=0, eos=1, seed=0):
    rng = random.Random(seed)
    head_dim = dim // n_heads
    kv_dim = n_kv_heads * head_dim

    def rand(rows, cols):
        return [rng.gauss(0.0, 0.5) for _ in range(rows * cols)]

    tensors = []
    for layer in range(n_layers):
        p = "model.layers.%d." % layer
        tensors += [(p + "input_layernorm.weight", [dim], [1.0 + rng.gauss(0, 0.1) for _ in range(dim)]),
                    (p + "post_attention_layernorm.weight", [dim], [1.0 + rng.gauss(0, 0.1) for _ in range(dim)]),
                    (p + "self_attn.q_proj.weight", [dim, dim], rand(dim, dim)),
                    (p + "self_attn.k_proj.weight", [kv_dim, dim], rand(kv_dim, dim)),
                    (p + "self_attn.v_proj.weight", [kv_dim, dim], rand(kv_dim, dim)),
                    (p + "self_attn.o_proj.weight", [dim, dim], rand(dim, dim)),
                    (p + "mlp.gate_proj.weight", [hidden, dim], rand(hidden, dim)),
                    (p + "mlp.up_proj.weight", [hidden, dim], rand(hidden, dim)),
                    (p + "mlp.down_proj.weight", [dim, hidden], rand(dim, hidden))]
    tensors += [("model.embed_tokens.weight", [vocab_size, dim], rand(vocab_size, dim)),
                ("model.norm.weight", [dim], [1.0] * dim)]
    if not tied:
        tensors.append(("lm_head.weight", [vocab_size, dim], rand(vocab_size, dim)))
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
              "hidden_size": dim, "intermediate_size": hidden, "num_hidden_layers": n_layers,
              "num_attention_heads": n_heads, "num_key_value_heads": n_kv_heads, "vocab_size": vocab_size,
              "max_position_embeddings": max_seq, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "tie_word_embeddings": tied, "bos_token_id": bos, "eos_token_id": eos}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": eos, "do_sample": True, "temperature": 0.7,
                   "top_p": 0.9}, f)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}, f)


def export(hf_dir, out_path, dtype):
    cmd = [sys.executable, os.path.join(REPO, "export.py"), hf_dir, out_path, "--dtype", dtype, "--quiet"]
    subprocess.run(cmd, check=True)


def make_checkpoint(kind, out_dir):
    """Writes the Hugging Face checkpoint of a model kind; returns its natural export dtype."""
    if kind == "lucie-like":
        tok, vocab = lucie_like_tokenizer()
        write_checkpoint(out_dir, tok, vocab, bos=0, eos=1)
        return "bf16"
    if kind == "llama-like":
        tok, vocab = llama_like_tokenizer()
        write_checkpoint(out_dir, tok, vocab, tied=True, bos=1, eos=2, dim=4, n_heads=1, n_kv_heads=1)
        return "f32"
    if kind == "lucie-vocab":
        instruct = os.path.join(DATA, "lucie", "instruct")
        with open(os.path.join(instruct, "tokenizer.json"), encoding="utf-8") as f:
            tok = json.load(f)
        write_checkpoint(out_dir, tok, 65024, dim=8, hidden=8, n_heads=2, n_kv_heads=1, tied=True)
        shutil.copy(os.path.join(instruct, "tokenizer_config.json"), out_dir)  # the real chat template
        return "bf16"
    if kind == "quant-like":
        # wide enough for whole quantization groups (dim and FFN multiples of 64)
        tok, vocab = llama_like_tokenizer()
        write_checkpoint(out_dir, tok, vocab, dim=64, hidden=128, n_layers=2, n_heads=4, n_kv_heads=2, bos=1, eos=2)
        return "f32"
    if kind == "quant-small":
        # the smallest shapes that hold whole quantization groups: seeds for the q8/q4 loaders
        tok, vocab = llama_like_tokenizer()
        write_checkpoint(out_dir, tok, vocab, dim=32, hidden=32, n_layers=1, n_heads=2, n_kv_heads=1, bos=1, eos=2)
        return "q8"
    raise SystemExit("unknown model kind %r" % kind)


def make_model(kind, out_path, dtype=None):
    with tempfile.TemporaryDirectory() as tmp:
        natural = make_checkpoint(kind, tmp)
        export(tmp, out_path, dtype or natural)


def main(argv):
    if len(argv) == 3 and argv[1] == "seeds":
        os.makedirs(argv[2], exist_ok=True)
        for kind, dtype in (("lucie-like", None), ("llama-like", None), ("quant-small", "q8"),
                            ("quant-small", "q4")):
            name = kind if dtype is None else "%s-%s" % (kind, dtype)
            make_model(kind, os.path.join(argv[2], name), dtype)  # no .bin: the corpus is committed
    elif len(argv) in (4, 5) and argv[1] == "model":
        make_model(argv[2], argv[3], argv[4] if len(argv) == 5 else None)
    elif len(argv) == 4 and argv[1] == "checkpoint":
        make_checkpoint(argv[2], argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
