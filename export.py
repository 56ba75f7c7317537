#!/usr/bin/env python3
"""export.py - turn a Hugging Face Llama checkpoint directory into one lucie model file.

    python3 export.py HF_DIR OUT.bin [--dtype f32|bf16|q8|q4]

HF_DIR holds config.json, model.safetensors (or sharded model-XXXXX-of-YYYYY.safetensors
plus model.safetensors.index.json), tokenizer.json, and optionally tokenizer_config.json
(for the chat template) and generation_config.json (for sampling defaults).

The output layout (header, entry table, 64-byte aligned sections, the "tokenizer"
section) is defined once, in lucie.h ("FILE FORMAT"); this script follows it.

Only the Python standard library is used, and the weights are streamed a few MB at a
time, so a 15 GB bf16 checkpoint is exported with a small, constant amount of memory.
Anything the C side could not run exactly as transformers does is refused with a
one-line error instead of being exported approximately.
"""

import argparse
import glob
import json
import os
import re
import struct
import sys
import time

# ---------------------------------------------------------------------------
# File format constants (mirroring lucie.h; a test pins the two together)
# ---------------------------------------------------------------------------

MAGIC = b"LUCIEBIN"
VERSION = 1
HEADER_SIZE = 256
ENTRY_SIZE = 128
NAME_SIZE = 96
ALIGN = 64
MAX_EOS = 8

DT_BYTES, DT_F32, DT_BF16 = 0, 1, 2

# The weight formats, as lucie.c's descriptor table holds them (test_export compiles a
# program printing lucie_dtype() and checks this copy against it):
# name -> (dtype, weights per unit, bytes per unit, rows per block, quantized).
# This script writes the float ones; the quantized ones are made by `run quantize`.
WEIGHT_FORMATS = {
    "f32": (DT_F32, 1, 4, 1, False),
    "bf16": (DT_BF16, 1, 2, 1, False),
    "q8": (3, 32, 34, 16, True),
    "q4": (4, 32, 18, 16, True),
}
DTYPE_NAMES = dict((f[0], name) for name, f in WEIGHT_FORMATS.items())
QUANTIZED = [name for name, f in WEIGHT_FORMATS.items() if f[4]]


def tensor_bytes(dtype, rows, cols):
    """Bytes of a [rows, cols] tensor of dtype (lucie.h's formula)."""
    _, group, unit, block, _ = WEIGHT_FORMATS[DTYPE_NAMES[dtype]]
    return -(-rows // block) * block * -(-cols // group) * unit

# Source dtypes we can read from safetensors, and their element sizes.
SOURCE_DTYPES = {"F32": 4, "BF16": 2, "F16": 2}

CHUNK_BYTES = 4 << 20  # bytes of source data read at once (multiple of 4)


class ExportError(Exception):
    """Something in the checkpoint cannot be represented; the message is one line."""


def align_up(n, a=ALIGN):
    return (n + a - 1) // a * a


# ---------------------------------------------------------------------------
# Reading config.json / generation_config.json
# ---------------------------------------------------------------------------

def load_json(path, what):
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ExportError("missing %s (%s)" % (os.path.basename(path), what))
    except (OSError, ValueError) as e:
        raise ExportError("cannot read %s: %s" % (path, str(e).splitlines()[0]))


def as_id_list(value, what):
    """eos_token_id may be an int, a list of ints or null."""
    if value is None:
        return []
    if isinstance(value, bool):
        raise ExportError("%s must be an integer or a list of integers" % what)
    if isinstance(value, int):
        return [value]
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    raise ExportError("%s must be an integer or a list of integers, not %r" % (what, value))


def optional_id(value, what):
    if value is None:
        return -1
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ExportError("%s must be a non-negative integer or null, not %r" % (what, value))
    return value


def read_model_config(config, gen_config):
    """Checks that config.json describes a plain Llama and returns the header fields.

    Missing keys take transformers' LlamaConfig defaults, because that is what
    LlamaForCausalLM would run with."""
    model_type = config.get("model_type")
    if model_type != "llama":
        raise ExportError("unsupported model_type: %r (only 'llama' is supported)" % (model_type,))
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key, False):
            raise ExportError("unsupported %s: true (Llama without biases only)" % key)
    rope_scaling = config.get("rope_scaling")
    if rope_scaling is not None:
        kind = rope_scaling.get("rope_type", rope_scaling.get("type")) if isinstance(rope_scaling, dict) else None
        # {"rope_type": "default"} is what newer transformers write for "no scaling".
        if not (kind == "default" and set(rope_scaling) <= {"rope_type", "type"}):
            raise ExportError("unsupported rope_scaling: %s (only plain RoPE)" % json.dumps(rope_scaling))
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise ExportError("unsupported hidden_act: %r (only silu)" % (act,))

    def dim(key, default=None):
        value = config.get(key, default)
        if value is None:
            raise ExportError("config.json has no %s" % key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2 ** 31:
            raise ExportError("config.json %s must be a positive integer, not %r" % (key, value))
        return value

    hidden = dim("hidden_size")
    ffn = dim("intermediate_size")
    n_layers = dim("num_hidden_layers")
    n_heads = dim("num_attention_heads")
    n_kv_heads = dim("num_key_value_heads", n_heads)
    vocab = dim("vocab_size")
    max_seq = dim("max_position_embeddings", 2048)
    if config.get("head_dim") is not None:
        head_dim = dim("head_dim")
    else:
        if hidden % n_heads:
            raise ExportError("hidden_size %d is not a multiple of num_attention_heads %d" % (hidden, n_heads))
        head_dim = hidden // n_heads
    if n_heads % n_kv_heads:
        raise ExportError("num_attention_heads %d is not a multiple of num_key_value_heads %d"
                          % (n_heads, n_kv_heads))
    if head_dim % 2:
        raise ExportError("head_dim %d is odd (RoPE rotates pairs)" % head_dim)

    def number(key, default):
        value = config.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ExportError("config.json %s must be a positive number, not %r" % (key, value))
        return float(value)

    rope_theta = number("rope_theta", 10000.0)
    eps = number("rms_norm_eps", 1e-6)
    tied = config.get("tie_word_embeddings", False)
    if not isinstance(tied, bool):
        raise ExportError("config.json tie_word_embeddings must be true or false")

    bos = config.get("bos_token_id", 1) if "bos_token_id" in config else gen_config.get("bos_token_id", 1)
    bos_id = optional_id(bos, "bos_token_id")
    pad = config.get("pad_token_id") if config.get("pad_token_id") is not None else gen_config.get("pad_token_id")
    pad_id = optional_id(pad, "pad_token_id")
    # Generation stops at any of them: the union, config.json's first.
    eos_ids = []
    for v in as_id_list(config.get("eos_token_id", 2), "eos_token_id") + \
            as_id_list(gen_config.get("eos_token_id"), "generation_config eos_token_id"):
        if v < 0:
            raise ExportError("eos_token_id %d is negative" % v)
        if v not in eos_ids:
            eos_ids.append(v)
    if len(eos_ids) > MAX_EOS:
        raise ExportError("%d eos ids; at most %d are supported" % (len(eos_ids), MAX_EOS))

    for name, value in [("bos_token_id", bos_id), ("pad_token_id", pad_id)] + [("eos_token_id", v) for v in eos_ids]:
        if value >= vocab:
            raise ExportError("%s %d is outside the vocabulary (vocab_size %d)" % (name, value, vocab))

    return {
        "dim": hidden, "hidden_dim": ffn, "n_layers": n_layers, "n_heads": n_heads,
        "n_kv_heads": n_kv_heads, "head_dim": head_dim, "vocab_size": vocab, "max_seq_len": max_seq,
        "rope_theta": rope_theta, "rms_norm_eps": eps, "tie_word_embeddings": int(tied),
        "bos_id": bos_id, "eos_ids": eos_ids, "pad_id": pad_id,
    }


def read_sampling_defaults(gen_config):
    """Sampling defaults, with transformers' GenerationConfig defaults for missing keys
    (notably top_k = 50, which HF applies whenever it samples)."""
    def get(key, default, kind):
        value = gen_config.get(key)
        if value is None:
            return default
        if isinstance(value, bool) and kind is not bool:
            raise ExportError("generation_config.json %s has a bad value %r" % (key, value))
        if kind is bool and not isinstance(value, bool):
            raise ExportError("generation_config.json %s must be true or false" % key)
        if kind is not bool and not isinstance(value, (int, float)):
            raise ExportError("generation_config.json %s has a bad value %r" % (key, value))
        return kind(value)

    s = {
        "temperature": get("temperature", 1.0, float),
        "top_p": get("top_p", 1.0, float),
        "top_k": get("top_k", 50, int),
        "repetition_penalty": get("repetition_penalty", 1.0, float),
        "do_sample": int(get("do_sample", False, bool)),
    }
    if s["temperature"] < 0 or not 0 < s["top_p"] <= 1 or s["top_k"] < 0 or s["repetition_penalty"] <= 0:
        raise ExportError("generation_config.json has out-of-range sampling values: %r" % s)
    return s


# ---------------------------------------------------------------------------
# Reading safetensors headers (the data is streamed later)
# ---------------------------------------------------------------------------

class SourceTensor:
    """Where one tensor's raw bytes are: file, byte range, dtype, shape."""

    def __init__(self, name, path, dtype, shape, begin, end):
        self.name, self.path, self.dtype, self.shape = name, path, dtype, shape
        self.begin, self.end = begin, end


def read_safetensors_header(path):
    """Parses a safetensors file's header: u64 length, JSON, then raw data."""
    fname = os.path.basename(path)
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ExportError("bad safetensors header in %s: file too short" % fname)
            (n,) = struct.unpack("<Q", head)
            if n > min(file_size - 8, 100 << 20):
                raise ExportError("bad safetensors header in %s: header length %d" % (fname, n))
            raw = f.read(n)
    except OSError as e:
        raise ExportError("cannot read %s: %s" % (path, e.strerror or e))
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        raise ExportError("bad safetensors header in %s: %s" % (fname, str(e).splitlines()[0]))
    data_start = 8 + n
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            if not all(isinstance(d, int) and d >= 0 for d in shape + [begin, end]):
                raise ValueError
        except (TypeError, KeyError, ValueError):
            raise ExportError("bad safetensors header in %s: bad entry for %s" % (fname, name))
        if dtype not in SOURCE_DTYPES:
            raise ExportError("unsupported dtype %s for tensor %s (only F32, BF16, F16)" % (dtype, name))
        count = 1
        for d in shape:
            count *= d
        if end - begin != count * SOURCE_DTYPES[dtype]:
            raise ExportError("bad safetensors header in %s: data range of %s does not match its shape"
                              % (fname, name))
        if data_start + end > file_size:
            raise ExportError("%s is truncated: tensor %s ends past the end of the file" % (fname, name))
        tensors[name] = SourceTensor(name, path, dtype, list(shape), data_start + begin, data_start + end)
    return tensors


def find_tensors(hf_dir):
    """All tensors of the checkpoint, single file or sharded, by name."""
    single = os.path.join(hf_dir, "model.safetensors")
    index_path = os.path.join(hf_dir, "model.safetensors.index.json")
    if os.path.exists(single):
        return read_safetensors_header(single)
    if os.path.exists(index_path):
        index = load_json(index_path, "shard index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ExportError("model.safetensors.index.json has no weight_map")
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            path = os.path.join(hf_dir, shard)
            if not os.path.exists(path):
                raise ExportError("missing shard %s (listed in model.safetensors.index.json)" % shard)
            for name, t in read_safetensors_header(path).items():
                if name in tensors:
                    raise ExportError("tensor %s appears in two shards" % name)
                tensors[name] = t
        for name, shard in weight_map.items():
            if name not in tensors or os.path.basename(tensors[name].path) != shard:
                raise ExportError("tensor %s is not in shard %s as the index says" % (name, shard))
        return tensors
    shards = sorted(glob.glob(os.path.join(hf_dir, "model-*-of-*.safetensors")))
    if shards:
        raise ExportError("sharded safetensors without model.safetensors.index.json")
    if glob.glob(os.path.join(hf_dir, "*.bin")):
        raise ExportError("no safetensors weights in %s (PyTorch .bin checkpoints are not supported)" % hf_dir)
    raise ExportError("no model.safetensors or model.safetensors.index.json in %s" % hf_dir)


def expected_tensors(cfg):
    """(name, shape, is_norm) in file order, as lucie.h lists them."""
    dim, q_dim = cfg["dim"], cfg["n_heads"] * cfg["head_dim"]
    kv_dim, ffn = cfg["n_kv_heads"] * cfg["head_dim"], cfg["hidden_dim"]
    out = []
    for l in range(cfg["n_layers"]):
        p = "model.layers.%d." % l
        out += [
            (p + "input_layernorm.weight", [dim], True),
            (p + "post_attention_layernorm.weight", [dim], True),
            (p + "self_attn.q_proj.weight", [q_dim, dim], False),
            (p + "self_attn.k_proj.weight", [kv_dim, dim], False),
            (p + "self_attn.v_proj.weight", [kv_dim, dim], False),
            (p + "self_attn.o_proj.weight", [dim, q_dim], False),
            (p + "mlp.gate_proj.weight", [ffn, dim], False),
            (p + "mlp.up_proj.weight", [ffn, dim], False),
            (p + "mlp.down_proj.weight", [dim, ffn], False),
        ]
    out.append(("model.embed_tokens.weight", [cfg["vocab_size"], dim], False))
    out.append(("model.norm.weight", [dim], True))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", [cfg["vocab_size"], dim], False))
    return out


def match_tensors(cfg, tensors):
    """Pairs every expected tensor with its source; refuses missing, mis-shaped or extra ones."""
    wanted = expected_tensors(cfg)
    names = set(n for n, _, _ in wanted)
    for name in sorted(tensors):
        if name in names or name.endswith("rotary_emb.inv_freq"):
            continue  # inv_freq is recomputed from rope_theta
        if name == "lm_head.weight" and cfg["tie_word_embeddings"]:
            continue  # some tied checkpoints also store the (identical) lm_head; it is not used
        raise ExportError("unexpected tensor %s" % name)
    out = []
    for name, shape, is_norm in wanted:
        if name not in tensors:
            raise ExportError("missing tensor %s" % name)
        t = tensors[name]
        if t.shape != shape:
            raise ExportError("tensor %s has shape %s, expected %s" % (name, t.shape, shape))
        out.append((t, is_norm))
    return out


# ---------------------------------------------------------------------------
# dtype conversion, on chunks of raw little-endian bytes (standard library only)
# ---------------------------------------------------------------------------
# Python has no vectorised float arithmetic in its standard library, so the f32 ->
# bf16 rounding is done on one big integer holding the whole chunk: element i lives
# in bits [32i, 32i+32), and masks with one bit pattern per element let a single
# big-int addition round every element at once, in C speed.

_mask_cache = {}


def _repeat_mask(pattern, n):
    """The 32-bit pattern repeated n times, as one big integer (cached: chunks repeat)."""
    key = (pattern, n)
    if key not in _mask_cache:
        if len(_mask_cache) > 16:
            _mask_cache.clear()
        _mask_cache[key] = int.from_bytes(struct.pack("<I", pattern) * n, "little")
    return _mask_cache[key]


def f32_to_bf16(chunk):
    """Round-to-nearest-even f32 -> bf16 (what torch's .to(torch.bfloat16) does)."""
    n = len(chunk) // 4
    x = int.from_bytes(chunk, "little")
    # NaN test per element: (x & 0x7fffffff) + 0x007fffff sets bit 31 iff x is NaN.
    if ((x & _repeat_mask(0x7FFFFFFF, n)) + _repeat_mask(0x007FFFFF, n)) & _repeat_mask(0x80000000, n):
        return _f32_to_bf16_with_nans(chunk)
    # x + 0x7fff + (bit 16 of x): never carries out of an element for non-NaN x.
    lsb = (x >> 16) & _repeat_mask(1, n)
    y = (x + _repeat_mask(0x7FFF, n) + lsb).to_bytes(4 * n, "little")
    out = bytearray(2 * n)
    out[0::2] = y[2::4]
    out[1::2] = y[3::4]
    return bytes(out)


def _f32_to_bf16_with_nans(chunk):
    """Slow path, element by element: NaN stays a quiet NaN of the same sign."""
    words = struct.unpack("<%dI" % (len(chunk) // 4), chunk)
    out = []
    for w in words:
        if (w & 0x7FFFFFFF) > 0x7F800000:
            out.append((w >> 16) | 0x0040)
        else:
            out.append((w + 0x7FFF + ((w >> 16) & 1)) >> 16)
    return struct.pack("<%dH" % len(out), *out)


def bf16_to_f32(chunk):
    """Exact: bf16 is the top half of an f32."""
    n = len(chunk) // 2
    out = bytearray(4 * n)
    out[2::4] = chunk[0::2]
    out[3::4] = chunk[1::2]
    return bytes(out)


def f16_to_f32(chunk):
    """Exact, through struct's IEEE half-precision 'e' format."""
    n = len(chunk) // 2
    return struct.pack("<%df" % n, *struct.unpack("<%de" % n, chunk))


def converter(src_dtype, dst_dtype):
    """A function bytes -> bytes converting chunks of src_dtype into dst_dtype."""
    if dst_dtype == DT_F32:
        return {"F32": lambda c: c, "BF16": bf16_to_f32, "F16": f16_to_f32}[src_dtype]
    return {"F32": f32_to_bf16, "BF16": lambda c: c,
            "F16": lambda c: f32_to_bf16(f16_to_f32(c))}[src_dtype]


# ---------------------------------------------------------------------------
# The "tokenizer" section (layout in lucie.h)
# ---------------------------------------------------------------------------

NORM_NFC, NORM_REPLACE_STRING, NORM_REPLACE_CHARSET, NORM_SPACE_AFTER, NORM_PREPEND = 1, 2, 3, 4, 5
DEC_REPLACE_STRING, DEC_BYTE_FALLBACK, DEC_METASPACE, DEC_FUSE, DEC_STRIP = 16, 17, 18, 19, 20
KIND_NORMAL, KIND_BYTE, KIND_ADDED = 0, 1, 2
METASPACE_SCHEMES = {"always": 0, "first": 1, "never": 2}


def tokenizer_section(tokenizer_json, tokenizer_config):
    """Serialises a HF tokenizer.json (parsed) into lucie's "tokenizer" section bytes.

    Only the constructs lucie.c implements are accepted; anything else raises
    ExportError naming it, so a model never runs with a silently different tokenizer.
    tokenizer_config (parsed tokenizer_config.json, may be None) is accepted for
    future use; the encoding is fully described by tokenizer.json."""
    tok = tokenizer_json
    model = tok.get("model") or {}
    if model.get("type", "BPE") != "BPE":
        raise ExportError("unsupported tokenizer model: %s (only BPE)" % model.get("type"))
    if model.get("dropout") not in (None, 0, 0.0):
        raise ExportError("unsupported tokenizer: BPE dropout")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise ExportError("unsupported tokenizer: BPE %s" % key)
    if model.get("ignore_merges"):
        raise ExportError("unsupported tokenizer: BPE ignore_merges")
    if tok.get("pre_tokenizer") is not None:
        raise ExportError("unsupported pre_tokenizer: %s" % tok["pre_tokenizer"].get("type"))
    byte_fallback = bool(model.get("byte_fallback", False))
    fuse_unk = bool(model.get("fuse_unk", False))

    # Vocabulary: model vocab, overridden/extended by added tokens.
    strings = {}
    for s, i in model.get("vocab", {}).items():
        if not isinstance(i, int) or i < 0 or i in strings:
            raise ExportError("tokenizer vocab has a bad or duplicate id for %r" % s)
        strings[i] = s
    token_to_id = dict((s, i) for i, s in strings.items())
    model_ids = set(strings)
    added = tok.get("added_tokens") or []
    added_ids = set()
    for a in added:
        if a["id"] in model_ids and strings[a["id"]] != a["content"]:
            raise ExportError("added token %r has the id of model token %r" % (a["content"], strings[a["id"]]))
        strings[a["id"]] = a["content"]
        added_ids.add(a["id"])
    vocab_size = max(strings) + 1 if strings else 0
    missing = [i for i in range(vocab_size) if i not in strings]
    if missing:
        raise ExportError("tokenizer vocab has no token for id %d" % missing[0])
    byte_token = re.compile(r"<0x[0-9A-F]{2}>\Z")

    def pack_str(s):
        b = s.encode("utf-8")
        return struct.pack("<I", len(b)) + b

    vocab_parts = []
    for i in range(vocab_size):
        s = strings[i]
        if i in added_ids and i not in model_ids:  # BPE never produces these
            kind = KIND_ADDED
        elif byte_fallback and byte_token.match(s):
            kind = KIND_BYTE
        else:
            kind = KIND_NORMAL
        vocab_parts.append(struct.pack("<I", kind) + pack_str(s))

    # Merges in rank order, as ids.
    # A pair listed twice keeps its last rank, as in the reference's merge map.
    merges = model.get("merges", [])
    last_rank = dict((tuple(m.split(" ")) if isinstance(m, str) else tuple(m), r) for r, m in enumerate(merges))
    merge_parts = []
    for r, m in enumerate(merges):
        if last_rank.get(tuple(m.split(" ")) if isinstance(m, str) else tuple(m)) != r:
            continue
        if isinstance(m, str):
            pair = m.split(" ")
        else:
            pair = list(m)
        if len(pair) != 2:
            raise ExportError("bad tokenizer merge %r" % (m,))
        left, right = pair
        try:
            ids = (token_to_id[left], token_to_id[right], token_to_id[left + right])
        except KeyError as e:
            raise ExportError("tokenizer merge %r uses a token not in the vocab: %r" % (m, e.args[0]))
        merge_parts.append(struct.pack("<3I", *ids))

    added_parts = []
    for a in added:
        if a.get("single_word"):
            raise ExportError("unsupported added token option: single_word (%r)" % a["content"])
        if not a["content"]:
            raise ExportError("unsupported added token: empty content")
        flags = (a.get("special", False) << 0 | a.get("normalized", False) << 1 | a.get("lstrip", False) << 2
                 | a.get("rstrip", False) << 3 | a.get("single_word", False) << 4)
        added_parts.append(struct.pack("<2I", a["id"], flags))

    unk = model.get("unk_token")
    if unk is not None and unk not in token_to_id:
        raise ExportError("tokenizer unk_token %r is not in the vocab" % unk)
    unk_id = token_to_id[unk] if unk is not None else -1

    def op(kind, a="", b="", p1=0, p2=0):
        return struct.pack("<I", kind) + pack_str(a) + pack_str(b) + struct.pack("<2i", p1, p2)

    def flatten(node, list_key):
        if node is None:
            return []
        if node.get("type") == "Sequence":
            out = []
            for child in node[list_key]:
                out += flatten(child, list_key)
            return out
        return [node]

    # Regex patterns are understood only in the few shapes lucie.c implements.
    escapes = {"r": "\r", "n": "\n", "t": "\t", "f": "\f", "v": "\v", "0": "\0", "a": "\a", "e": "\x1b"}

    def regex_literal_chars(pattern, inside_class):
        """Literal code points of a regex fragment made only of plain chars and
        escapes, or None if it uses any regex construct."""
        special = "\\[]^-" if inside_class else "\\^$.|?*+()[]{}"
        chars, i = [], 0
        while i < len(pattern):
            c = pattern[i]
            if c != "\\":
                if c in special:
                    return None
                chars.append(c)
                i += 1
                continue
            if i + 1 >= len(pattern):
                return None
            e = pattern[i + 1]
            if e in escapes:
                chars.append(escapes[e])
                i += 2
            elif e == "x" and re.match(r"[0-9A-Fa-f]{2}", pattern[i + 2:i + 4]):
                chars.append(chr(int(pattern[i + 2:i + 4], 16)))
                i += 4
            elif e == "u" and re.match(r"[0-9A-Fa-f]{4}", pattern[i + 2:i + 6]):
                chars.append(chr(int(pattern[i + 2:i + 6], 16)))
                i += 6
            elif e.isalnum():
                return None  # \w, \d, \s, \b ... are classes/assertions, not literals
            else:
                chars.append(e)  # escaped punctuation or an escaped literal newline
                i += 2
        return chars

    lookahead = "(?=[ \\w])"

    def normalizer_op(n):
        kind = n.get("type")
        if kind == "NFC":
            return op(NORM_NFC)
        if kind == "Prepend":
            return op(NORM_PREPEND, n["prepend"])
        if kind == "Replace":
            pattern, content = n["pattern"], n["content"]
            if "String" in pattern:
                return op(NORM_REPLACE_STRING, pattern["String"], content)
            regex = pattern.get("Regex", "")
            if regex.startswith("[") and regex.endswith("]") and len(regex) > 2:
                chars = regex_literal_chars(regex[1:-1], True)
                if chars:
                    return op(NORM_REPLACE_CHARSET, "".join(chars), content)
            if regex.endswith(lookahead):
                chars = regex_literal_chars(regex[:-len(lookahead)], False)
                if chars and len(chars) == 1 and content.startswith(chars[0]):
                    return op(NORM_SPACE_AFTER, chars[0], content[1:])
            chars = regex_literal_chars(regex, False)
            if chars:
                return op(NORM_REPLACE_STRING, "".join(chars), content)
            raise ExportError("unsupported normalizer: Replace with regex %s" % json.dumps(regex))
        raise ExportError("unsupported normalizer: %s" % kind)

    def decoder_op(d):
        kind = d.get("type")
        if kind == "Replace":
            pattern = d["pattern"]
            if "String" in pattern:
                return op(DEC_REPLACE_STRING, pattern["String"], d["content"])
            chars = regex_literal_chars(pattern.get("Regex", ""), False)
            if chars:
                return op(DEC_REPLACE_STRING, "".join(chars), d["content"])
            raise ExportError("unsupported decoder: Replace with regex %s" % json.dumps(pattern.get("Regex")))
        if kind == "ByteFallback":
            return op(DEC_BYTE_FALLBACK)
        if kind == "Metaspace":
            scheme = d.get("prepend_scheme")
            if scheme is None:  # older files: add_prefix_space only
                scheme = "always" if d.get("add_prefix_space", True) else "never"
            if scheme not in METASPACE_SCHEMES:
                raise ExportError("unsupported decoder: Metaspace prepend_scheme %r" % scheme)
            return op(DEC_METASPACE, d.get("replacement", "\u2581"), "", METASPACE_SCHEMES[scheme])
        if kind == "Fuse":
            return op(DEC_FUSE)
        if kind == "Strip":
            return op(DEC_STRIP, d["content"], "", d.get("start", 0), d.get("stop", 0))
        raise ExportError("unsupported decoder: %s" % kind)

    norm_ops = [normalizer_op(n) for n in flatten(tok.get("normalizer"), "normalizers")]
    dec_ops = [decoder_op(d) for d in flatten(tok.get("decoder"), "decoders")]

    # Post-processor: [SpecialToken bos]? Sequence A [SpecialToken eos]?
    bos_id = eos_id = -1
    post = tok.get("post_processor")
    if post is not None:
        if post.get("type") != "TemplateProcessing":
            raise ExportError("unsupported post_processor: %s" % post.get("type"))
        special = post.get("special_tokens", {})

        def special_id(piece):
            ids = special.get(piece["SpecialToken"]["id"], {}).get("ids", [])
            if len(ids) != 1:
                raise ExportError("unsupported post_processor: special token %r" % piece["SpecialToken"]["id"])
            return ids[0]

        single = list(post.get("single", []))
        if single and "SpecialToken" in single[0]:
            bos_id = special_id(single.pop(0))
        if single and "SpecialToken" in single[-1]:
            eos_id = special_id(single.pop())
        if len(single) != 1 or single[0].get("Sequence", {}).get("id") != "A":
            raise ExportError("unsupported post_processor: TemplateProcessing single %s"
                              % json.dumps(post.get("single")))

    flags = (1 if byte_fallback else 0) | (2 if fuse_unk else 0)
    head = b"LTOK" + struct.pack("<6I3iI", 1, vocab_size, len(merge_parts), len(added_parts),
                                 len(norm_ops), len(dec_ops), unk_id, bos_id, eos_id, flags)
    return b"".join([head] + vocab_parts + merge_parts + added_parts + norm_ops + dec_ops)


# ---------------------------------------------------------------------------
# Writing the model file
# ---------------------------------------------------------------------------

def chat_template_of(hf_dir, tokenizer_config):
    """The chat template text, or None. Newer checkpoints keep it in chat_template.jinja."""
    jinja = os.path.join(hf_dir, "chat_template.jinja")
    if os.path.exists(jinja):
        with open(jinja, "r", encoding="utf-8") as f:
            return f.read()
    template = (tokenizer_config or {}).get("chat_template")
    if isinstance(template, list):  # several named templates: keep the default one
        named = dict((t.get("name"), t.get("template")) for t in template if isinstance(t, dict))
        template = named.get("default")
    return template if isinstance(template, str) else None


def pack_header(cfg, sampling, weight_type, n_entries, file_size):
    eos = cfg["eos_ids"] + [-1] * (MAX_EOS - len(cfg["eos_ids"]))
    header = MAGIC + struct.pack(
        "<IIQII8IdfIiI8iiffifII",
        VERSION, HEADER_SIZE, file_size, n_entries, weight_type,
        cfg["dim"], cfg["hidden_dim"], cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"],
        cfg["head_dim"], cfg["vocab_size"], cfg["max_seq_len"],
        cfg["rope_theta"], cfg["rms_norm_eps"], cfg["tie_word_embeddings"],
        cfg["bos_id"], len(cfg["eos_ids"]), *eos, cfg["pad_id"],
        sampling["temperature"], sampling["top_p"], sampling["top_k"],
        sampling["repetition_penalty"], sampling["do_sample"], 0)
    assert len(header) == 148, len(header)
    return header + bytes(HEADER_SIZE - len(header))


def pack_entry(name, dtype, rows, cols, offset, size):
    raw = name.encode("utf-8")
    if len(raw) >= NAME_SIZE:
        raise ExportError("name too long for the entry table: %s" % name)
    return raw + bytes(NAME_SIZE - len(raw)) + struct.pack("<4IQQ", dtype, rows, cols, 0, offset, size)


class Section:
    """One entry of the output: a tensor streamed from a source, or bytes in memory."""

    def __init__(self, name, dtype, rows, cols, size, source=None, data=None):
        self.name, self.dtype, self.rows, self.cols, self.size = name, dtype, rows, cols, size
        self.source, self.data = source, data
        self.offset = 0


def plan_sections(cfg, matched, weight_type, tok_bytes, template):
    sections = []
    for t, is_norm in matched:
        dtype = DT_F32 if is_norm else weight_type  # norm weights are tiny and kept exact
        rows, cols = (1, t.shape[0]) if len(t.shape) == 1 else t.shape
        sections.append(Section(t.name, dtype, rows, cols, tensor_bytes(dtype, rows, cols), source=t))
    sections.append(Section("tokenizer", DT_BYTES, 0, 0, len(tok_bytes), data=tok_bytes))
    if template is not None:
        data = template.encode("utf-8")
        sections.append(Section("chat_template", DT_BYTES, 0, 0, len(data), data=data))
    offset = align_up(HEADER_SIZE + ENTRY_SIZE * len(sections))
    for s in sections:
        s.offset = offset
        offset = align_up(offset + s.size)
    file_size = sections[-1].offset + sections[-1].size
    return sections, file_size


def human(n):
    return "%.1f MB" % (n / 1e6) if n < 1e9 else "%.2f GB" % (n / 1e9)


class OutputFile:
    """The file being written. A failed write (disk full, quota, file-size limit) names the file;
    Python's own error would not say which file, or that it was a write."""

    def __init__(self, path):
        self.path = path
        self.f = open(path, "wb")

    def failed(self, e):
        return ExportError("cannot write %s: %s" % (self.path, e.strerror or e))

    def write(self, data):
        try:
            self.f.write(data)
        except OSError as e:
            raise self.failed(e)

    def tell(self):
        return self.f.tell()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.f.close()  # flushes: a full disk often shows only here
        except OSError as e:
            if exc[0] is None:
                raise self.failed(e)


def stream_tensor(out, section, progress):
    """Copies/converts one tensor from its safetensors file, CHUNK_BYTES at a time."""
    t = section.source
    convert = converter(t.dtype, section.dtype)
    written = 0
    with open(t.path, "rb") as f:
        f.seek(t.begin)
        remaining = t.end - t.begin
        while remaining:
            chunk = f.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                raise ExportError("%s is truncated (tensor %s)" % (os.path.basename(t.path), t.name))
            remaining -= len(chunk)
            data = convert(chunk)
            out.write(data)
            written += len(data)
            progress(len(data))
    if written != section.size:
        raise ExportError("internal error: wrote %d bytes for %s, expected %d" % (written, t.name, section.size))


def export(hf_dir, out_path, dtype=None, quiet=False, summary=True):
    """Exports hf_dir to out_path (written as out_path.tmp, renamed at the end); unless
    quiet, shows progress and (summary) ends with one line saying what was written."""
    config = load_json(os.path.join(hf_dir, "config.json"), "the model configuration")
    gen_path = os.path.join(hf_dir, "generation_config.json")
    gen_config = load_json(gen_path, "generation settings") if os.path.exists(gen_path) else {}
    cfg = read_model_config(config, gen_config)
    sampling = read_sampling_defaults(gen_config)

    tensors = find_tensors(hf_dir)
    matched = match_tensors(cfg, tensors)
    if dtype is None:
        matrices = [t for t, is_norm in matched if not is_norm]
        dtype = "bf16" if all(t.dtype == "BF16" for t in matrices) else "f32"
    if WEIGHT_FORMATS[dtype][4]:
        raise ExportError("internal error: %s is written by `run quantize` (export_quantized)" % dtype)
    weight_type = WEIGHT_FORMATS[dtype][0]

    tokenizer = load_json(os.path.join(hf_dir, "tokenizer.json"), "a fast tokenizer is required")
    tc_path = os.path.join(hf_dir, "tokenizer_config.json")
    tokenizer_config = load_json(tc_path, "tokenizer settings") if os.path.exists(tc_path) else {}
    try:
        tok_bytes = tokenizer_section(tokenizer, tokenizer_config)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ExportError("malformed tokenizer.json (%s: %s)" % (type(e).__name__, e))
    (tok_vocab,) = struct.unpack_from("<I", tok_bytes, 8)
    if tok_vocab > cfg["vocab_size"]:
        raise ExportError("tokenizer has %d tokens but vocab_size is %d" % (tok_vocab, cfg["vocab_size"]))
    template = chat_template_of(hf_dir, tokenizer_config)

    sections, file_size = plan_sections(cfg, matched, weight_type, tok_bytes, template)
    total_weights = sum(s.size for s in sections if s.source is not None)
    progress = Progress(total_weights, quiet)

    tmp_path = out_path + ".tmp"
    try:
        with OutputFile(tmp_path) as out:
            out.write(pack_header(cfg, sampling, weight_type, len(sections), file_size))
            for s in sections:
                out.write(pack_entry(s.name, s.dtype, s.rows, s.cols, s.offset, s.size))
            for i, s in enumerate(sections):
                out.write(bytes(s.offset - out.tell()))
                if s.source is None:
                    out.write(s.data)
                    continue
                stream_tensor(out, s, progress.advance)
            if out.tell() != file_size:
                raise ExportError("internal error: file is %d bytes, header says %d" % (out.tell(), file_size))
        os.replace(tmp_path, out_path)
    except BaseException:
        try:
            os.remove(tmp_path)
        except OSError:
            pass
        raise
    progress.finish()
    if summary and not quiet:
        sys.stderr.write("wrote %s: %s, %d tensors, weights %s, tokenizer %d tokens%s (%.1f s)\n" % (
            out_path, human(file_size), len(matched), dtype, tok_vocab,
            ", chat template" if template is not None else "", time.time() - progress.start))


class Progress:
    """Bytes of weights written so far: on a terminal one line that updates itself
    (bytes, rate, time left); in a pipe or log a plain line every LINE_SECONDS at most,
    so that a short export prints nothing but its summary."""

    LINE_SECONDS = 10.0

    def __init__(self, total, quiet):
        self.total, self.quiet, self.done = total, quiet, 0
        self.terminal = not quiet and sys.stderr.isatty()
        self.start = self.last = time.time()

    def advance(self, n):
        self.done += n
        now = time.time()
        if self.quiet or now - self.last < (0.2 if self.terminal else self.LINE_SECONDS):
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        line = "export: %5.1f%%  %s / %s  %s/s  ETA %.0f s" % (
            100.0 * self.done / max(self.total, 1), human(self.done), human(self.total), human(rate),
            (self.total - self.done) / max(rate, 1e-9))
        sys.stderr.write("\r%s   " % line if self.terminal else line + "\n")
        sys.stderr.flush()

    def finish(self):
        if self.terminal and self.last != self.start:
            sys.stderr.write("\n")


# ---------------------------------------------------------------------------
# Quantized exports (q8, q4)
# ---------------------------------------------------------------------------

def quantizer_program():
    """The built `run` program next to this script: its `quantize` mode holds the q8/q4
    arithmetic, which is defined once, in C, next to the kernels that read it."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run")
    if os.name == "nt" and not os.path.exists(path):
        path += ".exe"
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise ExportError("--dtype q8/q4 needs the compiled program %s (build it with make)" % path)
    return path


def export_quantized(hf_dir, out_path, dtype, quiet=False):
    """Exports at full precision to a temporary file, then runs `run quantize` on it."""
    import subprocess
    program = quantizer_program()
    tmp_path = out_path + ".unquantized.tmp"
    try:
        export(hf_dir, tmp_path, None, quiet, summary=False)  # `run quantize` says what it wrote
        proc = subprocess.run([program, "quantize", tmp_path, out_path, dtype],
                              stderr=subprocess.PIPE if quiet else None, universal_newlines=True)
        if proc.returncode != 0:
            message = (proc.stderr or "").strip().splitlines()
            raise ExportError("quantizing failed: %s" % (message[-1] if message else "exit status %d" % proc.returncode))
    finally:
        try:
            os.remove(tmp_path)
        except OSError:
            pass


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def resolve_source(source, revision):
    """A local directory, or a hub repo id downloaded with huggingface_hub if available."""
    if os.path.isdir(source):
        return source
    if re.match(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$", source) and not os.path.exists(source):
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise ExportError("%s is not a directory; download it first: huggingface-cli download %s%s "
                              "--local-dir DIR (pip install huggingface_hub)"
                              % (source, source, " --revision " + revision if revision else ""))
        sys.stderr.write("downloading %s from the Hugging Face hub...\n" % source)
        try:
            return snapshot_download(repo_id=source, revision=revision,
                                     allow_patterns=["*.json", "*.safetensors", "*.jinja"])
        except Exception as e:  # network, authentication, unknown repo...
            raise ExportError("cannot download %s: %s: %s" % (source, type(e).__name__, e))
    raise ExportError("%s is not a directory" % source)


def one_line(message):
    return " ".join(message.split())


def main(argv=None):
    parser = argparse.ArgumentParser(description="Export a Hugging Face Llama checkpoint to a lucie model file.")
    parser.add_argument("hf_dir", help="checkpoint directory (or a hub repo id, with huggingface_hub)")
    parser.add_argument("out", help="output model file")
    parser.add_argument("--dtype", choices=list(WEIGHT_FORMATS), default=None,
                        help="type of the weight matrices (default: bf16 if the checkpoint is bf16, else f32); "
                             "q8/q4 quantize with the compiled ./run (embedding and lm_head stay q8)")
    parser.add_argument("--revision", default=None, help="hub revision when downloading")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    try:
        if args.dtype in QUANTIZED:
            quantizer_program()  # fail before the long export, not after
            export_quantized(resolve_source(args.hf_dir, args.revision), args.out, args.dtype, args.quiet)
        else:
            export(resolve_source(args.hf_dir, args.revision), args.out, args.dtype, args.quiet)
    except ExportError as e:
        sys.stderr.write("export.py: error: %s\n" % one_line(str(e)))
        return 1
    except OSError as e:
        where = "%s: " % e.filename if e.filename else ""
        sys.stderr.write("export.py: error: %s%s\n" % (where, one_line(e.strerror or str(e))))
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("export.py: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
