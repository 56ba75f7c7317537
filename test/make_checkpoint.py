#!/usr/bin/env python3
"""make_checkpoint.py - write a random Hugging Face Llama checkpoint directory.

    python3 test/make_checkpoint.py OUT_DIR [--config config.json] [--tokenizer-dir DIR]
        [--hidden 64 --ffn 192 --layers 2 --heads 4 --kv-heads 2 --vocab N --tied]
        [--dtype f32|bf16] [--shards N] [--seed S] [--max-position N] [--std 0.02]

The directory gets config.json, generation_config.json, the tokenizer files of
--tokenizer-dir, and the weights as safetensors written by hand (one file, or N shards
plus model.safetensors.index.json), so that transformers' LlamaForCausalLM loads it.

Weights are N(0, std^2); norm weights are 1 + N(0, 0.1^2) so that a loader which
ignores them gives visibly wrong results. Every tensor gets its own random stream
(seeded by --seed and its position), so the values do not depend on --shards.

Tensors are generated and written a chunk at a time, so even the full Lucie-7B shape
(15 GB in bf16) is written with bounded memory. numpy is used when available; the
standard library `random` fallback is only fast enough for tiny models.

Also importable: make_checkpoint(out_dir, ...) returns out_dir.
"""

import argparse
import json
import os
import random
import shutil
import struct
import sys

try:
    import numpy as np
except ImportError:  # small models still work without numpy
    np = None

DTYPE_INFO = {"f32": ("F32", 4, "float32"), "bf16": ("BF16", 2, "bfloat16")}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
CHUNK_ELEMENTS = 1 << 22  # elements generated at once (16 MB of f32)

# What LlamaConfig would use if no --config is given.
DEFAULT_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
    "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "rope_scaling": None, "attention_bias": False, "mlp_bias": False,
    "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
}


def tensor_specs(config):
    """(name, shape, is_norm) for every tensor of a Llama checkpoint with this config."""
    dim, ffn = config["hidden_size"], config["intermediate_size"]
    n_heads = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_heads
    head_dim = config.get("head_dim") or dim // n_heads
    vocab = config["vocab_size"]
    specs = [("model.embed_tokens.weight", [vocab, dim], False)]
    for l in range(config["num_hidden_layers"]):
        p = "model.layers.%d." % l
        specs += [
            (p + "input_layernorm.weight", [dim], True),
            (p + "self_attn.q_proj.weight", [n_heads * head_dim, dim], False),
            (p + "self_attn.k_proj.weight", [n_kv * head_dim, dim], False),
            (p + "self_attn.v_proj.weight", [n_kv * head_dim, dim], False),
            (p + "self_attn.o_proj.weight", [dim, n_heads * head_dim], False),
            (p + "post_attention_layernorm.weight", [dim], True),
            (p + "mlp.gate_proj.weight", [ffn, dim], False),
            (p + "mlp.up_proj.weight", [ffn, dim], False),
            (p + "mlp.down_proj.weight", [dim, ffn], False),
        ]
    specs.append(("model.norm.weight", [dim], True))
    if not config.get("tie_word_embeddings", False):
        specs.append(("lm_head.weight", [vocab, dim], False))
    return specs


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


# ---- random values, in chunks of raw little-endian bytes -------------------

def _bf16_bits_numpy(x):
    """float32 array -> uint16 bf16 bits, round to nearest even (no NaNs here)."""
    u = x.view(np.uint32)
    lsb = (u >> 16) & 1
    u += np.uint32(0x7FFF)  # no overflow: finite values are < 0xff800000
    u += lsb
    u >>= 16
    return u.astype("<u2")


def random_chunks(seed, index, count, is_norm, std, dtype):
    """Yields the bytes of `count` random values, a chunk at a time."""
    if np is not None:
        rng = np.random.default_rng([seed, index])
        done = 0
        while done < count:
            n = min(CHUNK_ELEMENTS, count - done)
            x = rng.standard_normal(n, dtype=np.float32)
            x *= np.float32(0.1 if is_norm else std)
            if is_norm:
                x += np.float32(1.0)
            yield (x.astype("<f4") if dtype == "f32" else _bf16_bits_numpy(x)).tobytes()
            done += n
        return
    rng = random.Random(seed * 1000003 + index)
    done = 0
    while done < count:
        n = min(1 << 16, count - done)
        x = [rng.gauss(1.0 if is_norm else 0.0, 0.1 if is_norm else std) for _ in range(n)]
        raw = struct.pack("<%df" % n, *x)
        if dtype == "bf16":
            words = struct.unpack("<%dI" % n, raw)
            raw = struct.pack("<%dH" % n, *[(w + 0x7FFF + ((w >> 16) & 1)) >> 16 for w in words])
        yield raw
        done += n


# ---- safetensors, written by hand -------------------------------------------

def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, dtype ("F32"/"BF16"/...), shape, chunks) where chunks is a
    callable returning an iterable of bytes. The header is padded to 8 bytes as
    the safetensors library does."""
    sizes = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I8": 1, "U8": 1, "I32": 4, "I64": 8}
    header = {"__metadata__": metadata if metadata is not None else {"format": "pt"}}
    offset = 0
    for name, dtype, shape, _ in tensors:
        size = numel(shape) * sizes[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, dtype, shape, chunks in tensors:
            want = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            written = 0
            for chunk in chunks():
                f.write(chunk)
                written += len(chunk)
            if written != want:
                raise ValueError("%s: wrote %d bytes, expected %d" % (name, written, want))
    return offset


def read_safetensors_header(path):
    """(header dict, data start offset) of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


# ---- the checkpoint directory ------------------------------------------------

def build_config(config=None, hidden=None, ffn=None, layers=None, heads=None, kv_heads=None,
                 vocab=None, tied=None, max_position=None, rope_theta=None, head_dim=None,
                 dtype="f32", tokenizer_vocab=None):
    if config is None:
        cfg = dict(DEFAULT_CONFIG)
    elif isinstance(config, dict):
        cfg = dict(config)
    else:
        with open(config, "r", encoding="utf-8") as f:
            cfg = json.load(f)
    overrides = {"hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
                 "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
                 "tie_word_embeddings": tied, "max_position_embeddings": max_position,
                 "rope_theta": rope_theta}
    for key, value in overrides.items():
        if value is not None:
            cfg[key] = value
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    elif "head_dim" in cfg:  # keep it consistent with the (possibly overridden) sizes
        cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
    if tokenizer_vocab is not None:
        if vocab is None and cfg["vocab_size"] < tokenizer_vocab:
            cfg["vocab_size"] = tokenizer_vocab
        if cfg["vocab_size"] < tokenizer_vocab:
            raise ValueError("vocab %d is smaller than the tokenizer's %d tokens"
                             % (cfg["vocab_size"], tokenizer_vocab))
    cfg["torch_dtype"] = DTYPE_INFO[dtype][2]
    return cfg


def tokenizer_size(tokenizer_dir):
    with open(os.path.join(tokenizer_dir, "tokenizer.json"), "r", encoding="utf-8") as f:
        tok = json.load(f)
    ids = list(tok["model"]["vocab"].values()) + [a["id"] for a in tok.get("added_tokens", [])]
    return max(ids) + 1


def make_checkpoint(out_dir, config=None, tokenizer_dir=None, hidden=None, ffn=None, layers=None,
                    heads=None, kv_heads=None, vocab=None, tied=None, dtype="f32", shards=1, seed=0,
                    max_position=None, rope_theta=None, head_dim=None, std=0.02,
                    generation_config=None, quiet=True):
    """Writes a random checkpoint into out_dir (created) and returns out_dir.

    config: a config.json path or dict to start from (default: a tiny Llama).
    generation_config: dict or path; default: the generation_config.json next to the
    config file if there is one, else bos/eos from the config."""
    if dtype not in DTYPE_INFO:
        raise ValueError("dtype must be f32 or bf16")
    os.makedirs(out_dir, exist_ok=True)
    tok_vocab = tokenizer_size(tokenizer_dir) if tokenizer_dir else None
    cfg = build_config(config, hidden, ffn, layers, heads, kv_heads, vocab, tied, max_position,
                       rope_theta, head_dim, dtype, tok_vocab)
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)

    if generation_config is None and isinstance(config, str):
        candidate = os.path.join(os.path.dirname(config), "generation_config.json")
        if os.path.exists(candidate):
            generation_config = candidate
    if isinstance(generation_config, str):
        with open(generation_config, "r", encoding="utf-8") as f:
            generation_config = json.load(f)
    if generation_config is None:
        generation_config = {"bos_token_id": cfg.get("bos_token_id"), "eos_token_id": cfg.get("eos_token_id")}
    with open(os.path.join(out_dir, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump(generation_config, f, indent=2)

    if tokenizer_dir:
        for name in TOKENIZER_FILES:
            src = os.path.join(tokenizer_dir, name)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(out_dir, name))

    st_dtype, elem_size, _ = DTYPE_INFO[dtype]
    specs = tensor_specs(cfg)
    entries = []
    for index, (name, shape, is_norm) in enumerate(specs):
        def chunks(index=index, shape=shape, is_norm=is_norm):
            return random_chunks(seed, index, numel(shape), is_norm, std, dtype)
        entries.append((name, st_dtype, shape, chunks, numel(shape) * elem_size))

    # Split into `shards` files of roughly equal size, keeping tensor order; by tensor
    # count instead if one huge tensor would leave a shard empty.
    total = sum(e[4] for e in entries)
    if not 1 <= shards <= len(entries):
        raise ValueError("shards must be between 1 and %d" % len(entries))
    shard_of, before = [], 0
    for e in entries:
        shard_of.append(min(shards - 1, int((before + e[4] / 2) * shards // total)))
        before += e[4]
    if len(set(shard_of)) != shards:
        shard_of = [i * shards // len(entries) for i in range(len(entries))]
    groups = [[e for e, s in zip(entries, shard_of) if s == i] for i in range(shards)]

    weight_map = {}
    for i, group in enumerate(groups):
        fname = "model.safetensors" if shards == 1 else "model-%05d-of-%05d.safetensors" % (i + 1, shards)
        if not quiet:
            sys.stderr.write("writing %s (%d tensors)\n" % (fname, len(group)))
        write_safetensors(os.path.join(out_dir, fname), [e[:4] for e in group])
        for e in group:
            weight_map[e[0]] = fname
    if shards > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2)
    return out_dir


def main(argv=None):
    p = argparse.ArgumentParser(description="Write a random Hugging Face Llama checkpoint.")
    p.add_argument("out_dir")
    p.add_argument("--config", help="config.json to start from")
    p.add_argument("--tokenizer-dir", help="directory with tokenizer.json etc. to copy")
    p.add_argument("--generation-config", help="generation_config.json to copy")
    p.add_argument("--hidden", type=int)
    p.add_argument("--ffn", type=int)
    p.add_argument("--layers", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--kv-heads", type=int)
    p.add_argument("--head-dim", type=int)
    p.add_argument("--vocab", type=int)
    p.add_argument("--tied", action="store_true", default=None)
    p.add_argument("--max-position", type=int)
    p.add_argument("--rope-theta", type=float)
    p.add_argument("--dtype", choices=sorted(DTYPE_INFO), default="f32")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--std", type=float, default=0.02)
    a = p.parse_args(argv)
    make_checkpoint(a.out_dir, config=a.config, tokenizer_dir=a.tokenizer_dir, hidden=a.hidden, ffn=a.ffn,
                    layers=a.layers, heads=a.heads, kv_heads=a.kv_heads, vocab=a.vocab, tied=a.tied,
                    dtype=a.dtype, shards=a.shards, seed=a.seed, max_position=a.max_position,
                    rope_theta=a.rope_theta, head_dim=a.head_dim, std=a.std,
                    generation_config=a.generation_config, quiet=False)
    print(a.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
