"""Long contexts against transformers: accuracy must not decay with the position.

The checkpoint has Lucie-7B-Instruct's config (rope_theta 2e7, 32,000 positions) with
its head_dim of 128 and 4 query heads per KV head, small matrices and the stories260K
tokenizer (512 ids, so that 16,384 positions of logits stay small).

- f32 cache, 16,384 positions: in every window of 2,048 positions, lucie's error against
  transformers run in float64 is no larger than transformers' own float32 error against
  that float64 run (which stays flat), and lucie agrees with transformers float32 within
  the suite's TOLERANCE. Two things used to make lucie's error grow with the position:
  RoPE frequencies computed in double and rounded once (1 ulp from transformers' f32
  `theta ** (2i/d)` for 12 of 64 at theta 2e7: an angle error proportional to the
  position) and attention sums over all keys as one sequential f32 sum.
- each KV cache type, 2,048 positions: against transformers with the same K/V rounding
  (test_kv_cache.py's definition and tolerance), and prefill = chunks of 3, bit for bit.
"""

import os
import subprocess

import pytest

from conftest import (LOGITS, LUCIE_INSTRUCT, STORIES_UNTIED, export_model, load_hf_model, need_binary, need_dir,
                      need_torch, read_logits, require)
from test_kv_cache import TOLERANCE, relative_error, rounded_kv

np = require("numpy")

LONG = 16384
WINDOW = 2048
MEDIUM = 2048


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import make_checkpoint
    hf_dir = make_checkpoint.make_checkpoint(
        str(tmp_path_factory.mktemp("long")), config=os.path.join(need_dir(LUCIE_INSTRUCT), "config.json"),
        tokenizer_dir=need_dir(STORIES_UNTIED), hidden=256, ffn=512, layers=2, heads=4, kv_heads=1, head_dim=128,
        vocab=512, std=0.05, seed=3)
    out = str(tmp_path_factory.mktemp("bin") / "long.bin")
    export_model(hf_dir, out, "f32")
    return hf_dir, out


def token_ids(n):
    return np.random.default_rng(0).integers(3, 512, n).tolist()


def lucie_logits(model_bin, kind, mode, ids, tmp_path):
    out = str(tmp_path / ("logits-%s-%s.f32" % (kind, mode)))
    proc = subprocess.run([need_binary(LOGITS), "--kv", kind, model_bin, mode, out] + [str(i) for i in ids],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=1800)
    assert proc.returncode == 0, "test/logits failed: %s" % proc.stderr.strip()
    return read_logits(out, len(ids), 512)


def hf_logits(hf_dir, ids, dtype, attention="sdpa", kind=None):
    """transformers' logits in dtype (sdpa attention: eager would hold 16k x 16k scores)."""
    torch, transformers = need_torch()
    if kind is not None:
        model = load_hf_model(hf_dir)  # float32, eager: the attention test_kv_cache patches
        with torch.no_grad(), rounded_kv(kind):
            return model(torch.tensor([ids])).logits[0].numpy().astype(np.float64)
    model = transformers.LlamaForCausalLM.from_pretrained(hf_dir, attn_implementation=attention, dtype=dtype).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy().astype(np.float64)


def test_config_is_long_context(model):
    import json
    with open(os.path.join(model[0], "config.json")) as f:
        cfg = json.load(f)
    theta = cfg.get("rope_theta") or cfg.get("rope_parameters", {}).get("rope_theta")
    assert theta == 2e7 and cfg["max_position_embeddings"] >= LONG


def test_f32_error_does_not_grow_with_position(model, tmp_path):
    torch, _ = need_torch()
    hf_dir, model_bin = model
    ids = token_ids(LONG)
    got = lucie_logits(model_bin, "f32", "prefill", ids, tmp_path)
    ref64 = hf_logits(hf_dir, ids, torch.float64)
    ref32 = hf_logits(hf_dir, ids, torch.float32)
    worse = []
    for start in range(0, LONG, WINDOW):
        rows = slice(start, start + WINDOW)
        scale = np.max(np.abs(ref64[rows]))
        ours = np.max(np.abs(got[rows] - ref64[rows])) / scale
        theirs = np.max(np.abs(ref32[rows] - ref64[rows])) / scale
        print("positions %5d-%5d: lucie vs float64 %.2e, transformers float32 vs float64 %.2e"
              % (start, start + WINDOW - 1, ours, theirs))
        if ours > theirs:
            worse.append((start, ours, theirs))
    assert not worse, "lucie less accurate than transformers float32 at positions: %s" % worse
    err = relative_error(got, ref32)
    assert err <= TOLERANCE, "lucie vs transformers float32 over %d positions: %.3g > %g" % (LONG, err, TOLERANCE)


@pytest.mark.parametrize("kind", ["f32", "f16", "q8"])
def test_cache_type_over_2048_positions(kind, model, tmp_path):
    hf_dir, model_bin = model
    ids = token_ids(MEDIUM)
    got = lucie_logits(model_bin, kind, "prefill", ids, tmp_path)
    ref = hf_logits(hf_dir, ids, None, kind=kind)
    flips = 0.0
    if kind != "f32":
        torch, _ = need_torch()
        model_hf = load_hf_model(hf_dir)
        with torch.no_grad(), rounded_kv(kind, flipped=True):
            flipped = model_hf(torch.tensor([ids])).logits[0].numpy().astype(np.float64)
        flips = relative_error(flipped, ref)
    err = relative_error(got, ref)
    print("kv %s over %d positions: vs transformers with the same rounding %.2e (tolerance %.2e + flips %.2e)"
          % (kind, MEDIUM, err, TOLERANCE, flips))
    assert err <= TOLERANCE + flips
    chunked = lucie_logits(model_bin, kind, "chunk", ids, tmp_path)
    assert np.array_equal(got.view(np.uint32), chunked.view(np.uint32)), "kv %s: chunks differ from prefill" % kind
