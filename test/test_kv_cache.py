"""KV cache types (LUCIE_KV_F32 / F16 / Q8, lucie.h) against transformers.

The cache stores keys (after RoPE) and values rounded to its type; attention reads
them back as f32. So each type is compared with LlamaForCausalLM (float32, eager
attention) whose attention gets keys and values rounded exactly the way lucie.h
defines the type (the rounding below is written from that definition, in torch).
What remains is the float32 arithmetic difference the f32 tests bound (TOLERANCE),
plus its one consequence: lucie's keys and values differ from transformers' by a few
f32 ulps before rounding, so an element lying that close to a rounding midpoint
rounds to the other neighbour in one of the two. The tolerance therefore adds what
rounding every such element (within FLIP_MARGIN of its row's largest value from a
midpoint) the other way does to the reference's own logits: derived from the
type's rounding grid and this very input, not tuned. The error against the
unrounded model (what the rounding itself costs) is printed; bench/kv_types.md
records it.

Sequences of 150 positions cross several 64-key blocks of attention's online softmax,
several 16-token query blocks and three 64-token prefill batches; prefill, one token
at a time and chunks of 3 must give the same bits for every type.
"""

import contextlib
import os
import subprocess

import pytest

from conftest import (LOGITS, LUCIE_BASE, LUCIE_INSTRUCT, STORIES_UNTIED, export_model, load_hf_model,
                      need_binary, need_dir, need_torch, read_logits, require)

np = require("numpy")

KV_TYPES = ["f32", "f16", "q8"]
Q8_GROUP = 32
# As in test_forward.py: float32 against float32, summation order and libm differences.
TOLERANCE = 1e-4
# How far lucie's pre-rounding keys/values may be from transformers', relative to the
# largest |value| of their row: 2^-17, 16 f32 ulps there (the logits themselves agree
# to ~1e-6 of their scale in the f32 tests).
FLIP_MARGIN = 2.0 ** -17
N_TOKENS = 150
TEXT = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park "
        "with her big red ball. Le chat de Marie s'appelle « Minou » — il dort (souvent) sur le canapé.\n")

# name -> (reference dir for config + tokenizer, make_checkpoint options); None: stories260K.
CASES = {
    "stories260K": None,
    "lucie-base": (LUCIE_BASE, dict(hidden=64, ffn=192, layers=2, heads=4, kv_heads=2)),
    # head_dim 64: a cache row holds two q8 groups of 32 (Lucie's 128: four); the others' rows one short group
    "lucie-instruct-hd64": (LUCIE_INSTRUCT, dict(hidden=128, ffn=256, layers=2, heads=4, kv_heads=2, head_dim=64)),
}


def round_rows(x, kind, nudge=0.0):
    """x [..., head_dim] float32 rounded as the cache type stores it (lucie.h). nudge
    moves each value by nudge x its row's largest |value| before the rounding
    decision (q8: of the codes; the scales stay those of x)."""
    torch, _ = need_torch()
    if kind == "f32":
        return x
    shift = nudge * x.abs().amax(dim=-1, keepdim=True)
    if kind == "f16":
        assert float(x.abs().max()) < 65504  # lucie saturates there, torch would give inf
        return (x + shift).to(torch.float16).to(torch.float32)
    n = x.shape[-1]
    groups = (n + Q8_GROUP - 1) // Q8_GROUP

    def grouped(t):
        return torch.nn.functional.pad(t, (0, groups * Q8_GROUP - n)).reshape(*x.shape[:-1], groups, Q8_GROUP)
    padded = grouped(x)
    scale = padded.abs().amax(dim=-1, keepdim=True) / 127.0
    codes = torch.round(torch.clamp(grouped(x + shift) / scale, -127.0, 127.0))  # ties to even, as lucie
    codes = torch.where(scale > 0, codes, torch.zeros_like(codes))
    return (codes * scale).reshape(*x.shape[:-1], groups * Q8_GROUP)[..., :n]


def round_rows_flipped(x, kind):
    """Like round_rows, but every value within FLIP_MARGIN of a rounding midpoint
    goes to the other neighbour."""
    torch, _ = need_torch()
    nearest, up, down = (round_rows(x, kind, d) for d in (0.0, FLIP_MARGIN, -FLIP_MARGIN))
    return torch.where(up != nearest, up, down)


@contextlib.contextmanager
def rounded_kv(kind, flipped=False):
    """transformers' eager attention, given keys and values rounded like a `kind` cache
    (flipped: with the near-midpoint values rounded the other way)."""
    import transformers.models.llama.modeling_llama as llama
    original = llama.eager_attention_forward

    def as_rows(t):  # [batch, kv_heads, seq, head_dim]: a cache row is one KV head at one position
        return (round_rows_flipped if flipped else round_rows)(t, kind)

    def patched(module, query, key, value, *args, **kwargs):
        return original(module, query, as_rows(key), as_rows(value), *args, **kwargs)

    llama.eager_attention_forward = patched
    try:
        yield
    finally:
        llama.eager_attention_forward = original


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(hf_dir, exported f32 .bin) per case, built on first use."""
    made = {}

    def get(case):
        if case not in made:
            if CASES[case] is None:
                hf_dir = need_dir(STORIES_UNTIED)
            else:
                ref_dir, options = CASES[case]
                need_dir(ref_dir)
                import make_checkpoint
                hf_dir = make_checkpoint.make_checkpoint(
                    str(tmp_path_factory.mktemp(case)), config=os.path.join(ref_dir, "config.json"),
                    tokenizer_dir=ref_dir, std=0.1, seed=11 + len(made), **options)
            out = os.path.join(str(tmp_path_factory.mktemp("bin")), case + ".bin")
            export_model(hf_dir, out, "f32")
            made[case] = (hf_dir, out)
        return made[case]
    return get


def token_ids(hf_dir):
    import json
    tokenizers = require("tokenizers")
    tok = tokenizers.Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
    ids = tok.encode(TEXT * 20).ids[:N_TOKENS]
    assert len(ids) == N_TOKENS
    with open(os.path.join(hf_dir, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    return ids, vocab


def lucie_logits(model_bin, kind, mode, ids, vocab, tmp_path):
    need_binary(LOGITS)
    out = str(tmp_path / ("logits-%s-%s.f32" % (kind, mode)))
    proc = subprocess.run([LOGITS, "--kv", kind, model_bin, mode, out] + [str(i) for i in ids],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0, "test/logits failed: %s" % proc.stderr.strip()
    return read_logits(out, len(ids), vocab)


def hf_logits(hf_dir, ids, kind, flipped=False):
    torch, _ = need_torch()
    model = load_hf_model(hf_dir)
    with torch.no_grad(), rounded_kv(kind, flipped):
        return model(torch.tensor([ids])).logits[0].numpy().astype(np.float64)


def relative_error(got, ref):
    return float(np.max(np.abs(got.astype(np.float64) - ref)) / np.max(np.abs(ref)))


@pytest.mark.parametrize("kind", KV_TYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_cache_type_matches_transformers(case, kind, models, tmp_path):
    hf_dir, model_bin = models(case)
    ids, vocab = token_ids(hf_dir)
    got = lucie_logits(model_bin, kind, "prefill", ids, vocab, tmp_path)
    ref = hf_logits(hf_dir, ids, kind)
    exact = hf_logits(hf_dir, ids, "f32") if kind != "f32" else ref
    flips = relative_error(hf_logits(hf_dir, ids, kind, flipped=True), ref) if kind != "f32" else 0.0
    err, cost = relative_error(got, ref), relative_error(got, exact)
    print("%s kv %s: vs transformers with the same rounding %.2e (tolerance %.2e + near-midpoint flips %.2e), "
          "vs unrounded %.2e" % (case, kind, err, TOLERANCE, flips, cost))
    assert err <= TOLERANCE + flips, "%s kv %s: relative error %.3g > %g" % (case, kind, err, TOLERANCE + flips)
    if kind != "f32":
        # the comparison above is only meaningful if the rounding shows: it does,
        # by more than the tolerance, so the reference rounded the same values
        assert relative_error(got, exact) > TOLERANCE, "%s kv %s: no visible rounding" % (case, kind)


@pytest.mark.parametrize("kind", KV_TYPES)
@pytest.mark.parametrize("case", ["stories260K", "lucie-instruct-hd64"])
def test_prefill_step_chunk_bit_identical(case, kind, models, tmp_path):
    hf_dir, model_bin = models(case)
    ids, vocab = token_ids(hf_dir)
    prefill = lucie_logits(model_bin, kind, "prefill", ids, vocab, tmp_path)
    for mode in ("step", "chunk"):
        other = lucie_logits(model_bin, kind, mode, ids, vocab, tmp_path)
        assert np.array_equal(prefill.view(np.uint32), other.view(np.uint32)), \
            "%s kv %s: %s differs from prefill by %.3g" % (case, kind, mode, relative_error(other, prefill))
