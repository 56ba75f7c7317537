"""The benchmark's own arithmetic: what it reads from a model file and from test/bandwidth.

test/bench.py turns bandwidth into a decode roofline by dividing it by the bytes of
weights one token reads, which it counts from the exported file's entry table. These
tests pin that count to the shapes of the checkpoint (computed here independently, from
config.json) and check that the bandwidth probe runs and reports consistent numbers.
Nothing here times anything against a threshold.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import LUCIE_BASE, REPO, export_model, need_dir

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
