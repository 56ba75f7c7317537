"""The benchmark's own arithmetic: what it reads from a model file and from test/bandwidth.

test/bench.py turns bandwidth into a decode roofline by dividing it by the bytes of
weights one token reads, which it counts from the exported file's entry table. These
tests pin that count to the shapes of the checkpoint (computed here independently, from
config.json) and check that the bandwidth probe runs and reports consistent numbers.
The same goes for the newer ratios: multiply-accumulates per token (against the compute
peak), KV cache bytes per token (against the size of the caches the library itself saves),
the rooflines that add them, and the session files tiled to a depth (the library loads them).
Nothing here times anything against a threshold.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import LUCIE_BASE, REPO, RUN, export_model, need_binary, need_dir

import bench

MAKE_CHECKPOINT = os.path.join(REPO, "test", "make_checkpoint.py")


def make_checkpoint(out_dir, tied):
    cmd = [sys.executable, MAKE_CHECKPOINT, "--config", os.path.join(LUCIE_BASE, "config.json"),
           "--tokenizer-dir", LUCIE_BASE, "--hidden", "64", "--ffn", "160", "--layers", "2",
           "--heads", "4", "--kv-heads", "2", "--dtype", "bf16", "--shards", "2", str(out_dir)]
    if tied:
        cmd.append("--tied")
    subprocess.run(cmd, check=True, capture_output=True)
    with open(os.path.join(out_dir, "config.json")) as f:
        return json.load(f)


def expected_bytes_per_token(cfg, element_size):
    """From the shapes alone: every matrix once, one embedding row (all of it when tied,
    for the logits), norm vectors in f32."""
    dim, ffn, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    head_dim = cfg.get("head_dim") or dim // cfg["num_attention_heads"]
    kv_dim = cfg["num_key_value_heads"] * head_dim
    per_layer = dim * dim * 2 + dim * kv_dim * 2 + dim * ffn * 3
    matrices = cfg["num_hidden_layers"] * per_layer + (vocab * dim if cfg["tie_word_embeddings"] else
                                                       dim + vocab * dim)
    norms = 4 * dim * (2 * cfg["num_hidden_layers"] + 1)
    return element_size * matrices + norms


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("dtype,element_size", [("f32", 4), ("bf16", 2)])
def test_bytes_per_token_matches_shapes(tmp_path, tied, dtype, element_size):
    need_dir(LUCIE_BASE)
    cfg = make_checkpoint(tmp_path / "hf", tied)
    assert cfg["tie_word_embeddings"] == tied
    model = str(tmp_path / "model.bin")
    export_model(str(tmp_path / "hf"), model, dtype)
    assert bench.lucie_bytes_per_token(model) == expected_bytes_per_token(cfg, element_size)


def test_entry_table_rejects_a_truncated_file(tmp_path):
    need_dir(LUCIE_BASE)
    make_checkpoint(tmp_path / "hf", False)
    model = tmp_path / "model.bin"
    export_model(str(tmp_path / "hf"), str(model), "bf16")
    data = model.read_bytes()
    model.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError):
        bench.lucie_entries(str(model))


def test_bandwidth_probe(tmp_path):
    exe = bench.build_bandwidth(str(tmp_path))
    for name, huge, prefetch in bench.BANDWIDTH_VARIANTS:
        result = bench.measure_bandwidth(exe, 1, 64, 3, huge, prefetch)  # the sum is checked inside
        assert result["threads"] == 1 and result["repeats"] == 3, name
        assert result["huge_pages"] == huge and result["prefetch"] == prefetch, name
        assert result["bytes"] == 64 << 20
        assert result["best_gbs"] >= result["median_gbs"] >= result["worst_gbs"] > 0
    bad = subprocess.run([exe, "-t", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "bad value" in bad.stderr


# ---- the ratios' arithmetic: compute per token, KV bytes, rooflines ----------

def expected_macs_per_token(cfg):
    """From the shapes alone: every weight matrix once (lm_head is the embedding table when
    tied); the embedding lookup, norms and attention are not multiply-accumulates of weights."""
    dim, ffn, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    head_dim = cfg.get("head_dim") or dim // cfg["num_attention_heads"]
    kv_dim = cfg["num_key_value_heads"] * head_dim
    per_layer = dim * dim * 2 + dim * kv_dim * 2 + dim * ffn * 3
    return cfg["num_hidden_layers"] * per_layer + vocab * dim


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("dtype", ["bf16", "q4"])
def test_macs_per_token_matches_shapes(tmp_path, tied, dtype):
    need_dir(LUCIE_BASE)
    cfg = make_checkpoint(tmp_path / "hf", tied)
    model = str(tmp_path / "model.bin")
    export_model(str(tmp_path / "hf"), model, dtype)
    assert bench.lucie_macs_per_token(model) == expected_macs_per_token(cfg)
    shape = bench.lucie_shape(model)
    assert (shape["dim"], shape["n_layers"], shape["n_kv_heads"], shape["head_dim"]) == (
        cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_key_value_heads"],
        cfg["hidden_size"] // cfg["num_attention_heads"])


def test_attention_macs_are_the_causal_sum():
    shape = {"n_layers": 3, "n_heads": 4, "head_dim": 8}
    for prompt in (1, 2, 7, 512):
        scored = sum(i + 1 for i in range(prompt))  # token i attends to keys 0..i
        per_token = 3 * 4 * 8 * 2 * scored / prompt  # scores + weighted values
        assert bench.attention_macs_per_token(shape, prompt) == pytest.approx(per_token, rel=1e-12)


def test_percent_of_peak_and_rooflines():
    assert bench.percent_of_peak(10.0, 5e9, 100.0) == pytest.approx(50.0)
    assert bench.roofline_tokens_per_s(20.0, 4e9) == pytest.approx(5.0)
    assert bench.roofline_tokens_per_s(20.0, 4e9, 1e9) == pytest.approx(4.0)
    # three steps after 10 cached tokens and a 1-token prompt read 12, 13 and 14 positions
    assert bench.mean_decode_depth(10, 1, 3) == pytest.approx((12 + 13 + 14) / 3)


def test_rooflines_of_the_bandwidth_probed_around_each_run(tmp_path):
    # each run against its own probes: 5 tok/s of 4 GB at 40 GB/s is 50%, 9 at 30 GB/s 120%
    assert bench.percent_of_nearby_roofline([5.0, 9.0, 4.0], [40.0, 30.0, 20.0], 4e9) == pytest.approx(80.0)
    assert bench.percent_of_nearby_roofline([5.0], [], 4e9) is None  # not probed
    rows = [{"engine": "lucie.c", "format": "q4", "load": "mmap", "threads": 2, "bytes_per_token": 4e9,
             "samples": {"decode": [5.0, 6.0], "decode_gbs": [40.0, 30.0]}}]
    depth_rows = [{"format": "q4", "kv": "f16", "depth": 0, "threads": 2, "bytes_per_token": 4e9,
                   "weight_bytes": 3.9e9, "kv_bytes": 1e8,
                   "decode": [3.0], "decode_gbs": [24.0], "load": [1.0]}]
    bench.apply_rooflines(rows, depth_rows, {2: {"best": 80.0}})
    assert rows[0]["percent"] == pytest.approx(27.5) and rows[0]["percent_nearby"] == pytest.approx(65.0)
    assert rows[0]["nearby_gbs"] == pytest.approx(35.0)
    assert depth_rows[0]["percent"] == pytest.approx(15.0) and depth_rows[0]["percent_nearby"] == pytest.approx(50.0)
    assert bench.roofline_percents(rows[0]) == "28% / 65%"
    assert "50%" in bench.depth_table(depth_rows) and "24.0" in bench.depth_table(depth_rows)
    # the probe itself: the better of a probe before and one after the measured call
    probe = bench.NearbyBandwidth(bench.build_bandwidth(str(tmp_path)))
    result, gbs = probe.around(1, lambda: "measured")
    assert result == "measured" and gbs > 0


def test_rows_name_their_load_mode_when_a_run_has_several():
    one = [{"engine": "lucie.c", "format": "q4", "load": "mmap"},
           {"engine": "llama.cpp", "format": "Q4_0", "load": "no-mmap"}]
    assert [bench.row_name(r, one) for r in one[:1]] == ["q4"]
    two = one + [{"engine": "lucie.c", "format": "q4", "load": "read"},
                 {"engine": "lucie.c", "format": "q8", "load": "—", "error": "export failed"}]
    assert [bench.row_name(r, two) for r in (two[0], two[2])] == ["q4 (mmap)", "q4 (read)"]


def make_model_with_kv_dim(tmp_path, hidden, heads, kv_heads):
    hf = tmp_path / "hf"
    subprocess.run([sys.executable, MAKE_CHECKPOINT, "--config", os.path.join(LUCIE_BASE, "config.json"),
                    "--tokenizer-dir", LUCIE_BASE, "--hidden", str(hidden), "--ffn", "96", "--layers", "2",
                    "--heads", str(heads), "--kv-heads", str(kv_heads), "--dtype", "f32", str(hf)],
                   check=True, capture_output=True)
    model = str(tmp_path / "model.bin")
    export_model(str(hf), model, "q8")
    return model


@pytest.mark.parametrize("kv", bench.KV_TYPES)
@pytest.mark.parametrize("hidden,heads,kv_heads", [(128, 2, 2), (80, 4, 2)], ids=["head_dim64", "head_dim20"])
def test_kv_bytes_and_tiled_sessions_match_the_library(tmp_path, kv, hidden, heads, kv_heads):
    """The KV byte count is the size of the cache the library saves (a q8 row holds one
    KV head: head_dim 64 is two whole groups, 20 one short group); a session tiled from it
    to a depth loads and decodes there."""
    need_dir(LUCIE_BASE)
    need_binary(RUN)
    model = make_model_with_kv_dim(tmp_path, hidden, heads, kv_heads)
    shape = bench.lucie_shape(model)
    assert shape["n_kv_heads"] * shape["head_dim"] == kv_heads * hidden // heads
    seed = str(tmp_path / "seed.session")
    runner = bench.Runner(bench.Launcher(), RUN)
    try:
        runner.save_session(model, 1, kv, seed, "Once upon a time, there was a cat.")
        with open(seed, "rb") as f:
            f.seek(bench.SESSION_POS_OFFSET)
            pos = int.from_bytes(f.read(4), "little")
        assert pos > 1
        header = bench.SESSION_HEADER
        assert os.path.getsize(seed) == header + 4 * pos + bench.kv_bytes_per_token(shape, kv, pos)
        depth = 3 * pos + 5  # whole copies and a part
        deep = bench.tile_session(seed, str(tmp_path / "deep.session"), depth)
        assert os.path.getsize(deep) == header + 4 * depth + bench.kv_bytes_per_token(shape, kv, depth)
        r = runner.bench(model, 1, 1, 2, [], ["--kv", kv, "--prompt-cache", deep, "-c", str(depth + 3)])
        assert r["depth"] == depth and r["kv"] == kv and r["decode_tok_s"] > 0
    finally:
        runner.launcher.close()


def test_peak_probe(tmp_path):
    exe = bench.build_peak(str(tmp_path))
    peak = bench.measure_peak(exe, 1, repeats=1)
    assert peak["int8_gmacs"] > 0 and peak["f32_gmacs"] > 0
