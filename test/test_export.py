"""export.py: the file it writes (read back through lucie.h's own tables), the values
it stores, and the checkpoints it must refuse."""

import json
import os
import re
import struct
import subprocess
import sys

import pytest

import export
import make_checkpoint
from conftest import (EXPORT, LUCIE_BASE, LUCIE_H, LUCIE_INSTRUCT, RUN, STORIES_UNTIED, TEST_DIR, export_model,
                      need_binary, need_dir, read_entries, read_header, require)

np = require("numpy")

DTYPES = os.path.join(TEST_DIR, "dtypes")
TINY = dict(hidden=32, ffn=64, layers=2, heads=4, kv_heads=2, vocab=300)


def tiny_tokenizer():
    """A minimal self-contained Llama-style tokenizer.json (byte fallback BPE)."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    for s in ("\u2581", "a", "b", "ab", "\u2581ab"):
        vocab[s] = len(vocab)
    special = lambda i, s: {"id": i, "content": s, "single_word": False, "lstrip": False,
                            "rstrip": False, "normalized": False, "special": True}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                  "vocab": vocab, "merges": ["a b", "\u2581 ab"]},
    }


def tiny_checkpoint(path, **options):
    """A small random checkpoint with the self-contained tokenizer (no test data needed)."""
    os.makedirs(str(path), exist_ok=True)
    tok_dir = os.path.join(str(path), "_tok")
    os.makedirs(tok_dir, exist_ok=True)
    with open(os.path.join(tok_dir, "tokenizer.json"), "w") as f:
        json.dump(tiny_tokenizer(), f)
    with open(os.path.join(tok_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": "{{ messages }}", "bos_token": "<s>"}, f)
    kw = dict(TINY)
    kw.update(options)
    out = make_checkpoint.make_checkpoint(os.path.join(str(path), "ckpt"), tokenizer_dir=tok_dir, **kw)
    return out


# ---- helpers to damage a checkpoint ----------------------------------------

def edit_json(path, **changes):
    with open(path) as f:
        data = json.load(f)
    data.update(changes)
    with open(path, "w") as f:
        json.dump(data, f)


def rewrite_safetensors(path, mutate):
    """Loads a (small) safetensors file, lets mutate() edit its [name, dtype, shape, bytes]
    list, and writes it back."""
    header, start = make_checkpoint.read_safetensors_header(path)
    with open(path, "rb") as f:
        blob = f.read()
    tensors = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        tensors.append([name, info["dtype"], info["shape"], blob[start + b:start + e]])
    tensors.sort(key=lambda t: header[t[0]]["data_offsets"][0])
    mutate(tensors)
    make_checkpoint.write_safetensors(path, [(n, d, s, (lambda raw=raw: [raw])) for n, d, s, raw in tensors])


def run_export(hf_dir, out):
    return subprocess.run([sys.executable, EXPORT, hf_dir, out, "--quiet"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True)


def drop_tensor(name):
    return lambda ts: ts.__delitem__([t[0] for t in ts].index(name))


def to_f64(name):
    def mutate(ts):
        for t in ts:
            if t[0] == name:
                t[1], t[3] = "F64", np.frombuffer(t[3], "<f4").astype("<f8").tobytes()
    return mutate


def corrupt_header(ckpt):
    path = os.path.join(ckpt, "model.safetensors")
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(b"{not json")


def huge_header(ckpt):
    path = os.path.join(ckpt, "model.safetensors")
    with open(path, "r+b") as f:
        f.write(struct.pack("<Q", 1 << 40))


def truncate(ckpt):
    path = os.path.join(ckpt, "model.safetensors")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 100)


def tokenizer_edit(change):
    def edit(ckpt):
        path = os.path.join(ckpt, "tokenizer.json")
        with open(path) as f:
            tok = json.load(f)
        change(tok)
        with open(path, "w") as f:
            json.dump(tok, f)
    return edit


def config(**changes):
    return lambda ckpt: edit_json(os.path.join(ckpt, "config.json"), **changes)


def weights(mutate):
    return lambda ckpt: rewrite_safetensors(os.path.join(ckpt, "model.safetensors"), mutate)


# (id, checkpoint options, damage, words the one-line error must contain)
ERROR_CASES = [
    ("model_type", {}, config(model_type="mistral"), ["model_type", "mistral"]),
    ("attention_bias", {}, config(attention_bias=True), ["attention_bias"]),
    ("mlp_bias", {}, config(mlp_bias=True), ["mlp_bias"]),
    ("rope_scaling", {}, config(rope_scaling={"type": "linear", "factor": 2.0}), ["rope_scaling", "linear"]),
    ("hidden_act", {}, config(hidden_act="gelu"), ["hidden_act", "gelu"]),
    ("missing_shard", {"shards": 2},
     lambda c: os.remove(os.path.join(c, "model-00002-of-00002.safetensors")),
     ["missing shard", "model-00002-of-00002.safetensors"]),
    ("bad_header_json", {}, corrupt_header, ["bad safetensors header", "model.safetensors"]),
    ("bad_header_length", {}, huge_header, ["bad safetensors header", "header length"]),
    ("truncated_data", {}, truncate, ["truncated", "lm_head.weight"]),
    ("shape_mismatch", {}, config(intermediate_size=48), ["model.layers.0.mlp.gate_proj.weight", "shape"]),
    ("unsupported_dtype", {}, weights(to_f64("model.layers.1.self_attn.k_proj.weight")),
     ["unsupported dtype F64", "model.layers.1.self_attn.k_proj.weight"]),
    ("missing_tensor", {}, weights(drop_tensor("model.layers.1.mlp.up_proj.weight")),
     ["missing tensor", "model.layers.1.mlp.up_proj.weight"]),
    ("missing_lm_head", {}, weights(drop_tensor("lm_head.weight")), ["missing tensor", "lm_head.weight"]),
    ("extra_tensor", {}, weights(lambda ts: ts.append(["model.layers.0.self_attn.q_proj.bias", "F32", [32],
                                                       bytes(128)])),
     ["unexpected tensor", "q_proj.bias"]),
    ("no_weights", {}, lambda c: os.remove(os.path.join(c, "model.safetensors")), ["model.safetensors"]),
    ("no_tokenizer", {}, lambda c: os.remove(os.path.join(c, "tokenizer.json")), ["tokenizer.json"]),
    ("unsupported_normalizer", {},
     tokenizer_edit(lambda t: t["normalizer"]["normalizers"].append({"type": "Lowercase"})),
     ["unsupported normalizer: Lowercase"]),
    ("unsupported_pre_tokenizer", {},
     tokenizer_edit(lambda t: t.__setitem__("pre_tokenizer", {"type": "ByteLevel"})),
     ["unsupported pre_tokenizer: ByteLevel"]),
    ("unsupported_decoder", {},
     tokenizer_edit(lambda t: t["decoder"]["decoders"].append({"type": "WordPiece"})),
     ["unsupported decoder: WordPiece"]),
    ("too_many_eos", {}, config(eos_token_id=list(range(2, 11))), ["eos"]),
    ("eos_outside_vocab", {}, config(eos_token_id=5000), ["eos", "5000"]),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_export_refuses(case, tmp_path):
    _, options, damage, words = case
    ckpt = tiny_checkpoint(tmp_path, **options)
    out = str(tmp_path / "out.bin")
    # The undamaged checkpoint exports (so the error below is caused by the damage).
    assert run_export(ckpt, out).returncode == 0
    os.remove(out)
    damage(ckpt)
    proc = run_export(ckpt, out)
    assert proc.returncode != 0
    message = proc.stderr.strip()
    assert message.startswith("export.py: error: ") and "\n" not in message, message
    for w in words:
        assert w in message, "%r not in %r" % (w, message)
    assert not os.path.exists(out) and not os.path.exists(out + ".tmp")


def _file_size_limit(limit):
    """preexec_fn: files this process writes may not grow past `limit` bytes, the way a full
    disk stops them (EFBIG instead of ENOSPC; Python and run ignore SIGXFSZ and see the error)."""
    def apply():
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _one_line_error(proc, prefix, after_progress=False):
    message = proc.stderr.strip()
    if after_progress:  # run quantize's progress line comes first, then the error on a line of its own
        message = message.splitlines()[-1] if message else message
    assert proc.returncode == 1, (proc.returncode, message)
    assert message.startswith(prefix) and "\n" not in message, message
    return message


@pytest.mark.skipif(sys.platform == "win32", reason="needs RLIMIT_FSIZE")
def test_export_disk_full(tmp_path):
    ckpt = tiny_checkpoint(tmp_path)
    out = str(tmp_path / "out.bin")
    assert run_export(ckpt, out).returncode == 0
    size = os.path.getsize(out)
    os.remove(out)
    # export.py itself runs out of room halfway
    proc = subprocess.run([sys.executable, EXPORT, ckpt, out, "--quiet"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, preexec_fn=_file_size_limit(size // 2))
    message = _one_line_error(proc, "export.py: error: ")
    assert "cannot write" in message and "out.bin.tmp" in message and "too large" in message.lower(), message
    assert sorted(os.listdir(str(tmp_path))) == ["_tok", "ckpt"]  # nothing half-written left behind
    # `run quantize` (what export.py --dtype q8/q4 calls) runs out of room halfway
    assert run_export(ckpt, out).returncode == 0
    for dtype in ("q8", "q4"):
        quantized = str(tmp_path / (dtype + ".bin"))
        assert subprocess.run([RUN, "quantize", out, quantized, dtype]).returncode == 0
        limit = os.path.getsize(quantized) // 2
        os.remove(quantized)
        proc = subprocess.run([RUN, "quantize", out, quantized, dtype], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, preexec_fn=_file_size_limit(limit))
        message = _one_line_error(proc, "run: ", after_progress=True)
        assert "write error" in message and "too large" in message.lower(), message
        assert sorted(os.listdir(str(tmp_path))) == ["_tok", "ckpt", "out.bin"]


# ---- what export and quantize print --------------------------------------------

def test_output_in_a_pipe_is_one_summary_line(tmp_path):
    """Not on a terminal (a pipe, a log), a short export prints one line saying what it
    wrote: no line per tensor, no carriage returns. The same for export.py --dtype q8
    (which runs `run quantize`) and `run quantize` itself."""
    ckpt = tiny_checkpoint(tmp_path)
    out = str(tmp_path / "out.bin")
    proc = subprocess.run([sys.executable, EXPORT, ckpt, out], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    assert proc.returncode == 0 and proc.stdout == ""
    assert re.match(r"^wrote .*out\.bin: .*, \d+ tensors, weights f32, tokenizer \d+ tokens.*\n$", proc.stderr), \
        proc.stderr
    need_binary(RUN)
    proc = subprocess.run([sys.executable, EXPORT, ckpt, str(tmp_path / "q8.bin"), "--dtype", "q8"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0 and re.match(r"^wrote .*q8\.bin \(q8, [0-9.]+ s\)\n$", proc.stderr), proc.stderr
    proc = subprocess.run([RUN, "quantize", out, str(tmp_path / "q4.bin"), "q4"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0 and re.match(r"^wrote .*q4\.bin \(q4, [0-9.]+ s\)\n$", proc.stderr), proc.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_quantize_progress_on_a_terminal(tmp_path):
    """On a terminal, `run quantize` shows one self-updating line (carriage returns) with
    the percentage, bytes, rate and time left, then the summary on a line of its own."""
    import pty
    ckpt = tiny_checkpoint(tmp_path)
    out = str(tmp_path / "out.bin")
    assert run_export(ckpt, out).returncode == 0
    need_binary(RUN)
    master, slave = pty.openpty()
    proc = subprocess.Popen([RUN, "quantize", out, str(tmp_path / "q8.bin"), "q8"], stdout=subprocess.PIPE,
                            stderr=slave)
    os.close(slave)
    text = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        text += chunk
    os.close(master)
    assert proc.wait() == 0
    text = text.decode("utf-8")
    assert re.search(r"\rquantize: 100\.0%  .* / .*  \d+ MB/s  ETA \d+ s", text), repr(text)
    assert text.count("\n") <= 2 and text.rstrip().splitlines()[-1].startswith("wrote "), repr(text)


# ---- what a good export contains ---------------------------------------------

def load(path):
    with open(path, "rb") as f:
        return f.read()


def test_constants_match_lucie_h():
    """export.py's copies of the format constants equal lucie.h's definitions."""
    with open(LUCIE_H) as f:
        h = f.read()
    enum = dict((name, int(v)) for name, v in re.findall(r"LUCIE_DT_(\w+) = (\d+)", h))
    assert enum == {"BYTES": export.DT_BYTES, "F32": export.DT_F32, "BF16": export.DT_BF16, "Q8": 3, "Q4": 4}
    assert int(re.search(r"#define LUCIE_MAX_EOS (\d+)", h).group(1)) == export.MAX_EOS
    assert re.search(r"u32 header_size \(= %d;" % export.HEADER_SIZE, h)
    assert re.search(r"Entry \(%d bytes\)" % export.ENTRY_SIZE, h)
    assert re.search(r"0\s+%d\s+name, NUL-padded" % export.NAME_SIZE, h)
    assert re.search(r"multiple of %d bytes" % export.ALIGN, h)
    assert re.search(r'magic "%s"' % export.MAGIC.decode(), h)
    ops = dict((name, int(v)) for v, name in re.findall(r"^ \*\s+(\d+) ([A-Z_]+)\b", h, re.M))
    assert ops["NFC"] == export.NORM_NFC and ops["SPACE_AFTER"] == export.NORM_SPACE_AFTER
    assert ops["REPLACE_CHARSET"] == export.NORM_REPLACE_CHARSET and ops["PREPEND"] == export.NORM_PREPEND
    assert ops["BYTE_FALLBACK"] == export.DEC_BYTE_FALLBACK and ops["METASPACE"] == export.DEC_METASPACE
    assert ops["FUSE"] == export.DEC_FUSE and ops["STRIP"] == export.DEC_STRIP
    # REPLACE_STRING exists twice (normalizer 2, decoder 16).
    assert sorted(int(v) for v in re.findall(r"^ \*\s+(\d+) REPLACE_STRING", h, re.M)) == \
        [export.NORM_REPLACE_STRING, export.DEC_REPLACE_STRING]


def test_weight_formats_match_the_library(tmp_path):
    """export.py's table of weight formats (its --dtype choices, the sizes it writes) is
    the library's descriptor table, as lucie_dtype() shows it (test/dtypes prints it),
    and its size formula gives the sizes the library writes when it quantizes."""
    need_binary(DTYPES)
    need_binary(RUN)
    proc = subprocess.run([DTYPES], stdout=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0
    library = {}
    for line in proc.stdout.splitlines():
        dtype, name, group, unit, block, quantized, from_name = line.split()
        assert from_name == dtype, "lucie_dtype_from_name(%s) = %s" % (name, from_name)
        library[name] = (int(dtype), int(group), int(unit), int(block), quantized == "1")
    assert library == export.WEIGHT_FORMATS
    ckpt = tiny_checkpoint(tmp_path)
    files = dict((name, str(tmp_path / (name + ".bin"))) for name in export.WEIGHT_FORMATS)
    for name in export.WEIGHT_FORMATS:
        if name not in export.QUANTIZED:
            assert export_model(ckpt, files[name], name).returncode == 0
    for name in export.QUANTIZED:
        assert subprocess.run([RUN, "quantize", files["f32"], files[name], name],
                              stderr=subprocess.PIPE).returncode == 0
    seen = set()
    for name, path in files.items():
        for entry_name, e in read_entries(load(path)).items():
            if e["dtype"] != export.DT_BYTES:
                seen.add(e["dtype"])
                assert e["size"] == export.tensor_bytes(e["dtype"], e["rows"], e["cols"]), (name, entry_name)
    assert seen == set(f[0] for f in export.WEIGHT_FORMATS.values())


def check_layout(data):
    """Structural rules of lucie.h: sizes, alignment, no overlap, padding."""
    header = read_header(data)
    entries = read_entries(data)
    assert header["magic"] == b"LUCIEBIN" and header["version"] == 1 and header["header_size"] == 256
    assert header["file_size"] == len(data)
    assert len(entries) == header["n_entries"]
    assert data[148:256] == bytes(108)  # reserved
    spans = []
    for name, e in entries.items():
        assert e["offset"] % 64 == 0 and e["offset"] >= 256 + 128 * header["n_entries"], name
        assert e["offset"] + e["size"] <= len(data) and e["reserved"] == 0, name
        if e["dtype"] == 0:
            assert e["rows"] == 0 and e["cols"] == 0, name
        else:
            assert e["size"] == e["rows"] * e["cols"] * {1: 4, 2: 2}[e["dtype"]], name
        spans.append((e["offset"], e["offset"] + e["size"]))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    return header, entries


@pytest.mark.parametrize("ref", ["base", "instruct"])
def test_header_matches_config(ref, tmp_path):
    ref_dir = need_dir({"base": LUCIE_BASE, "instruct": LUCIE_INSTRUCT}[ref])
    ckpt = make_checkpoint.make_checkpoint(str(tmp_path / "ckpt"), config=os.path.join(ref_dir, "config.json"),
                                           tokenizer_dir=ref_dir, hidden=64, ffn=192, layers=2, heads=4,
                                           kv_heads=2, dtype="bf16")
    out = str(tmp_path / "m.bin")
    export_model(ckpt, out)
    data = load(out)
    header, entries = check_layout(data)
    with open(os.path.join(ckpt, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(ckpt, "generation_config.json")) as f:
        gen = json.load(f)
    expect = {
        "dim": cfg["hidden_size"], "hidden_dim": cfg["intermediate_size"], "n_layers": cfg["num_hidden_layers"],
        "n_heads": cfg["num_attention_heads"], "n_kv_heads": cfg["num_key_value_heads"],
        "head_dim": cfg["hidden_size"] // cfg["num_attention_heads"], "vocab_size": cfg["vocab_size"],
        "max_seq_len": cfg["max_position_embeddings"], "rope_theta": cfg["rope_theta"],
        "tie_word_embeddings": 0, "bos_id": cfg["bos_token_id"], "pad_id": cfg.get("pad_token_id", -1),
        "weight_type": 2, "group_size": 0, "top_p": 1.0, "top_k": 50, "repetition_penalty": 1.0,
        "do_sample": int(gen["do_sample"]), "n_eos": 1,
    }
    for key, value in expect.items():
        assert header[key] == value, key
    assert header["eos_ids"][0] == cfg["eos_token_id"]
    assert header["rms_norm_eps"] == pytest.approx(cfg["rms_norm_eps"], rel=1e-7)
    assert header["temperature"] == pytest.approx(gen["temperature"], rel=1e-7)
    # Entry order and types as lucie.h lists them; norms always f32.
    names = list(entries)
    assert names[:9] == ["model.layers.0." + n for n in (
        "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
        "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
        "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")]
    assert names[-5:] == ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", "tokenizer",
                          "chat_template"]
    for name, e in entries.items():
        if name.endswith("norm.weight"):
            assert (e["dtype"], e["rows"], e["cols"]) == (1, 1, 64), name
    assert entries["self_attn.k_proj.weight".join(["model.layers.1.", ""])]["rows"] == 2 * 16
    with open(os.path.join(ref_dir, "tokenizer_config.json")) as f:
        template = json.load(f)["chat_template"]
    ct = entries["chat_template"]
    assert data[ct["offset"]:ct["offset"] + ct["size"]].decode("utf-8") == template


def test_eos_union_and_sampling_defaults(tmp_path):
    ckpt = tiny_checkpoint(tmp_path, tied=True)
    edit_json(os.path.join(ckpt, "config.json"), eos_token_id=[2, 7], pad_token_id=0)
    with open(os.path.join(ckpt, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [7, 2, 9], "temperature": 0.7, "top_p": 0.9, "top_k": 20,
                   "repetition_penalty": 1.1, "do_sample": True}, f)
    out = str(tmp_path / "m.bin")
    export_model(ckpt, out)
    header, entries = check_layout(load(out))
    assert header["n_eos"] == 3 and header["eos_ids"][:3] == [2, 7, 9]
    assert header["pad_id"] == 0 and header["tie_word_embeddings"] == 1 and "lm_head.weight" not in entries
    assert header["top_k"] == 20 and header["do_sample"] == 1
    for key, value in (("temperature", 0.7), ("top_p", 0.9), ("repetition_penalty", 1.1)):
        assert header[key] == pytest.approx(value, rel=1e-7)


def test_tied_checkpoint_with_redundant_lm_head(tmp_path):
    """Some tied checkpoints also store lm_head.weight; it equals the embedding and is
    left out of the file (tie_word_embeddings=1 tells the loader to reuse it)."""
    ckpt = tiny_checkpoint(tmp_path, tied=True)

    def add_lm_head(ts):
        embed = [t for t in ts if t[0] == "model.embed_tokens.weight"][0]
        ts.append(["lm_head.weight", embed[1], embed[2], embed[3]])
    rewrite_safetensors(os.path.join(ckpt, "model.safetensors"), add_lm_head)
    out = str(tmp_path / "m.bin")
    export_model(ckpt, out)
    header, entries = check_layout(load(out))
    assert header["tie_word_embeddings"] == 1 and "lm_head.weight" not in entries


def source_values(ckpt):
    """{name: float64 array} of every tensor in the checkpoint, decoded with numpy."""
    import glob
    values = {}
    for path in glob.glob(os.path.join(ckpt, "*.safetensors")):
        header, start = make_checkpoint.read_safetensors_header(path)
        blob = load(path)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            raw = blob[start + info["data_offsets"][0]:start + info["data_offsets"][1]]
            values[name] = decode(raw, {"F32": 1, "BF16": 2, "F16": 5}[info["dtype"]])
    return values


def decode(raw, dtype):
    if dtype == 1:
        return np.frombuffer(raw, "<f4").astype(np.float64)
    if dtype == 5:
        return np.frombuffer(raw, "<f2").astype(np.float64)
    bits = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
    return bits.view(np.float32).astype(np.float64)


def bf16_round(x):
    """Round-to-nearest-even to bf16, done independently of export.py (via torch)."""
    torch = require("torch")
    return torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16).to(torch.float32).numpy().astype(np.float64)


@pytest.mark.parametrize("src,dst", [("f32", "f32"), ("f32", "bf16"), ("bf16", "bf16"), ("bf16", "f32"),
                                     ("f16", "f32"), ("f16", "bf16")])
def test_tensor_values_round_trip(src, dst, tmp_path):
    ckpt = tiny_checkpoint(tmp_path, dtype="bf16" if src == "bf16" else "f32", shards=1)
    if src == "f16":
        def to_f16(ts):
            for t in ts:
                t[1], t[3] = "F16", np.frombuffer(t[3], "<f4").astype("<f2").tobytes()
        rewrite_safetensors(os.path.join(ckpt, "model.safetensors"), to_f16)
    src_values = source_values(ckpt)
    out = str(tmp_path / "m.bin")
    export_model(ckpt, out, dtype=dst)
    data = load(out)
    header, entries = check_layout(data)
    assert header["weight_type"] == {"f32": 1, "bf16": 2}[dst]
    tensor_names = [n for n in entries if n not in ("tokenizer", "chat_template")]
    assert sorted(tensor_names) == sorted(src_values)
    for name in tensor_names:
        e = entries[name]
        got = decode(data[e["offset"]:e["offset"] + e["size"]], e["dtype"])
        want = src_values[name]
        if name.endswith("norm.weight"):
            assert e["dtype"] == 1, name  # stored exactly, in f32
        elif dst == "bf16":
            want = bf16_round(want)
        assert np.array_equal(got, want), name


def test_default_dtype_follows_source(tmp_path):
    for src, expected in (("bf16", 2), ("f32", 1)):
        ckpt = tiny_checkpoint(tmp_path / src, dtype=src)
        out = str(tmp_path / (src + ".bin"))
        export_model(ckpt, out)
        assert read_header(load(out))["weight_type"] == expected


def test_f32_to_bf16_rounding_matches_torch():
    """The stdlib big-integer rounding equals torch's, including ties, overflow to
    infinity, subnormals and NaN."""
    torch = require("torch")
    rng = np.random.default_rng(1)
    bits = np.concatenate([
        rng.integers(0, 2 ** 32, 200000, dtype=np.uint64).astype(np.uint32),  # everything, NaNs included
        np.array([0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0x00000001,
                  0x80008000, 0x7FC00000, 0xFFFFFFFF], np.uint32)])
    for chunk in (bits, bits[~np.isnan(bits.view(np.float32))]):  # the slow (NaN) and the fast path
        got = np.frombuffer(export.f32_to_bf16(chunk.astype("<u4").tobytes()), "<u2")
        want = torch.from_numpy(chunk.view(np.float32).copy()).to(torch.bfloat16).view(torch.int16).numpy()
        want = want.view(np.uint16)
        nan = np.isnan(chunk.view(np.float32))
        assert np.array_equal(got[~nan], want[~nan])
        assert np.all((got[nan] & 0x7F80) == 0x7F80) and np.all(got[nan] & 0x7F)  # still NaN
        assert np.array_equal(got[nan] >> 15, (chunk[nan] >> 31).astype(np.uint16))  # same sign


# ---- the tokenizer section, read back per lucie.h and compared with HF tokenizers ----

def parse_tokenizer_section(b):
    def u32(o):
        return struct.unpack_from("<I", b, o)[0]

    def string(o):
        n = u32(o)
        return b[o + 4:o + 4 + n].decode("utf-8"), o + 4 + n

    assert b[:4] == b"LTOK"
    version, vocab_size, n_merges, n_added, n_norm, n_dec, unk, bos, eos, flags = \
        struct.unpack_from("<6I3iI", b, 4)
    o = 44
    vocab = []
    for _ in range(vocab_size):
        kind = u32(o)
        s, o = string(o + 4)
        vocab.append((kind, s))
    merges = [struct.unpack_from("<3I", b, o + 12 * i) for i in range(n_merges)]
    o += 12 * n_merges
    added = [struct.unpack_from("<2I", b, o + 8 * i) for i in range(n_added)]
    o += 8 * n_added
    ops = []
    for _ in range(n_norm + n_dec):
        kind = u32(o)
        a, o = string(o + 4)
        bb, o = string(o)
        p1, p2 = struct.unpack_from("<2i", b, o)
        o += 8
        ops.append((kind, a, bb, p1, p2))
    assert o == len(b)
    return dict(version=version, vocab=vocab, merges=merges, added=added, norm=ops[:n_norm],
                dec=ops[n_norm:], unk=unk, bos=bos, eos=eos, flags=flags)


@pytest.mark.parametrize("ref", ["lucie/base", "lucie/instruct", "stories260K/hf-untied"])
def test_tokenizer_section_matches_hf(ref):
    from conftest import DATA
    tokenizers = require("tokenizers")
    ref_dir = need_dir(os.path.join(DATA, *ref.split("/")))
    with open(os.path.join(ref_dir, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    with open(os.path.join(ref_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        tc = json.load(f)
    t = parse_tokenizer_section(export.tokenizer_section(tj, tc))
    hf = tokenizers.Tokenizer.from_file(os.path.join(ref_dir, "tokenizer.json"))
    assert t["version"] == 1 and len(t["vocab"]) == hf.get_vocab_size(with_added_tokens=True)
    added = hf.get_added_tokens_decoder()
    for i, (kind, s) in enumerate(t["vocab"]):
        assert s == hf.id_to_token(i), i
        assert kind in (0, 1, 2) and (kind != 2 or i in added), i
        assert (kind == 1) == (i not in added and re.match(r"<0x[0-9A-F]{2}>\Z", s) is not None), i
    assert sum(1 for k, _ in t["vocab"] if k == 1) == 256
    # Merges: ids of the pieces, in the source's rank order; merged = left + right.
    ranks = {}
    for r, src in enumerate(tj["model"]["merges"]):
        ranks[tuple(src.split(" ") if isinstance(src, str) else src)] = r
    assert len(t["merges"]) == len(ranks)
    previous = -1
    for l, r, m in t["merges"]:
        left, right = hf.id_to_token(l), hf.id_to_token(r)
        assert hf.id_to_token(m) == left + right
        assert ranks[(left, right)] > previous
        previous = ranks[(left, right)]
    assert [i for i, _ in t["added"]] == sorted(added)
    for i, flags in t["added"]:
        a = added[i]
        assert flags == (a.special | a.normalized << 1 | a.lstrip << 2 | a.rstrip << 3 | a.single_word << 4)
    # Post-processor: what HF puts around a plain encode.
    ids = hf.encode("hello").ids
    plain = hf.encode("hello", add_special_tokens=False).ids
    assert t["bos"] == (ids[0] if len(ids) > len(plain) and ids[0] != plain[0] else -1)
    assert t["eos"] == -1 and ids[-len(plain):] == plain
    assert t["unk"] == hf.token_to_id(tj["model"]["unk_token"])
    assert t["flags"] == 3  # byte_fallback and fuse_unk


def test_lucie_tokenizer_ops():
    """The Lucie normalizer/decoder translate to the op list the spec describes."""
    ref_dir = need_dir(LUCIE_BASE)
    with open(os.path.join(ref_dir, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    t = parse_tokenizer_section(export.tokenizer_section(tj, None))
    norm = t["norm"]
    assert norm[0][0] == 1  # NFC
    assert norm[1][:3] == (3, "\r\x00", "")  # [\r\x00] -> ""
    assert [(k, a, b) for k, a, b, _, _ in norm[2:5]] == [(4, "\n", " "), (4, "\t", " "), (4, "(", " ")]
    assert all(op[0] == 4 and op[2] == " " for op in norm[2:-2])
    assert norm[-2][:2] == (5, " ") and norm[-1][:3] == (3, " \u00a0", "\u2581")
    dec = t["dec"]
    assert dec[0][0] == 17 and dec[1][:2] == (18, "\u2581") and dec[1][3] == 0 and dec[2][0] == 19
    assert dec[3][:3] == (16, "\n ", "\n")


def test_stories_tokenizer_ops():
    ref_dir = need_dir(STORIES_UNTIED)
    with open(os.path.join(ref_dir, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    t = parse_tokenizer_section(export.tokenizer_section(tj, None))
    assert [op[:3] for op in t["norm"]] == [(5, "\u2581", ""), (2, " ", "\u2581")]
    assert [op for op in t["dec"]] == [(16, "\u2581", " ", 0, 0), (17, "", "", 0, 0), (19, "", "", 0, 0),
                                        (20, " ", "", 1, 0)]
