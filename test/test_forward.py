"""Forward pass: lucie's logits against Hugging Face transformers on the same checkpoint.

Each case builds (or uses) a Hugging Face checkpoint directory, exports it with
export.py, runs test/logits on ~20 tokens and compares every position's logits with
LlamaForCausalLM (float32, eager attention) loaded from the same directory.

Checkpoints: tiny Lucie-shaped random models with Lucie's real tokenizer (vocab 65024,
GQA 4 heads / 2 KV heads, both real rope_theta values 5e5 and 2e7), in f32 and bf16
safetensors, single-file and sharded, untied and tied; and the trained stories260K
model (untied and tied). Every checkpoint is exported both as f32 and as bf16.
"""

import os
import subprocess

import pytest

from conftest import (LOGITS, LUCIE_BASE, LUCIE_INSTRUCT, RUN, STORIES_TIED, STORIES_UNTIED, export_model,
                      load_hf_model, need_binary, need_dir, need_torch, read_logits, require)

np = require("numpy")

# f32 export vs transformers in f32: both sides compute in float32 and differ only in
# summation order and in how exp/sqrt/sin/cos are evaluated, errors of ~1e-7 per
# operation that grow to ~1e-6 of the logit scale through these small models. 1e-4 of
# the largest |logit| leaves a wide margin for that while still catching real bugs: on
# these checkpoints changing rope_theta by just 1% moves the logits by ~1e-3 of their
# scale, and rounding the weights to bf16 by ~1e-2.
# For a bf16 export the reference model gets exactly the same bf16-rounded weights
# (norm vectors stay f32, as in the file), so the same tolerance applies.
TOLERANCE = 1e-4
# Prefill (one batch), step (one token at a time) and chunk (batches of 3) run the
# same arithmetic on the same weights in the same program; only the grouping of the
# work may differ, so they must agree an order of magnitude more tightly.
MODE_TOLERANCE = 1e-5

# Random weights are N(0, 0.1^2): with the usual 0.02 initialisation a model this
# narrow has almost uniform attention (max weight 0.052 where uniform is 0.050), which
# would hide position and masking bugs; at 0.1 attention is clearly peaked.
WEIGHT_STD = 0.1

TEXT = ("Le chat de Marie s'appelle « Minou » — il dort (souvent) sur le canapé.\n"
        "The quick brown fox jumps over the lazy dog.")
N_TOKENS = 20

# name -> (reference dir giving config + tokenizer, make_checkpoint options)
RANDOM_CASES = {
    "lucie-base-f32": (LUCIE_BASE, dict(dtype="f32")),
    "lucie-base-bf16-sharded": (LUCIE_BASE, dict(dtype="bf16", shards=3)),
    "lucie-base-f32-sharded-tied": (LUCIE_BASE, dict(dtype="f32", shards=2, tied=True)),
    "lucie-instruct-bf16": (LUCIE_INSTRUCT, dict(dtype="bf16")),
    "lucie-instruct-f32-sharded": (LUCIE_INSTRUCT, dict(dtype="f32", shards=4)),
}
TRAINED_CASES = {"stories260K-untied": STORIES_UNTIED, "stories260K-tied": STORIES_TIED}
ALL_CASES = sorted(RANDOM_CASES) + sorted(TRAINED_CASES)


def source_dtype(hf_dir):
    import json
    with open(os.path.join(hf_dir, "config.json")) as f:
        return "bf16" if json.load(f).get("torch_dtype") == "bfloat16" else "f32"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Checkpoint directories, built on first use."""
    made = {}

    def get(case):
        if case in TRAINED_CASES:
            return need_dir(TRAINED_CASES[case])
        if case not in made:
            ref_dir, options = RANDOM_CASES[case]
            need_dir(ref_dir)
            import make_checkpoint
            out = str(tmp_path_factory.mktemp(case))
            made[case] = make_checkpoint.make_checkpoint(
                out, config=os.path.join(ref_dir, "config.json"), tokenizer_dir=ref_dir,
                hidden=64, ffn=192, layers=2, heads=4, kv_heads=2, std=WEIGHT_STD,
                seed=len(made) + 1, **options)
        return made[case]
    return get


@pytest.fixture(scope="module")
def exports(checkpoints, tmp_path_factory):
    """(checkpoint dir, exported .bin path) per (case, export dtype)."""
    done = {}

    def get(case, dtype):
        if (case, dtype) not in done:
            hf_dir = checkpoints(case)
            out = os.path.join(str(tmp_path_factory.mktemp("bin")), "%s-%s.bin" % (case, dtype))
            export_model(hf_dir, out, dtype)
            done[(case, dtype)] = (hf_dir, out)
        return done[(case, dtype)]
    return get


def token_ids(hf_dir, vocab_size):
    """~20 ids: real text through the checkpoint's own tokenizer (BOS first), then a few
    ids from the far end of the vocabulary."""
    tokenizers = require("tokenizers")
    tok = tokenizers.Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
    ids = tok.encode(TEXT).ids[:N_TOKENS - 3]
    ids += [vocab_size - 1, vocab_size // 2, 5][:N_TOKENS - len(ids)]
    assert len(ids) == N_TOKENS
    return ids


def hf_logits(hf_dir, ids, round_to_bf16):
    torch, _ = need_torch()
    model = load_hf_model(hf_dir, round_to_bf16=round_to_bf16)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy().astype(np.float64)


def lucie_logits(model_bin, mode, ids, vocab_size, tmp_path):
    out = str(tmp_path / ("logits-%s.f32" % mode))
    proc = subprocess.run([LOGITS, model_bin, mode, out] + [str(i) for i in ids],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0, "test/logits %s failed: %s" % (mode, proc.stderr.strip())
    return read_logits(out, len(ids), vocab_size).astype(np.float64)


def relative_error(got, ref):
    """Largest absolute difference, relative to the largest |logit| of the reference."""
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def vocab_of(hf_dir):
    import json
    with open(os.path.join(hf_dir, "config.json")) as f:
        return json.load(f)["vocab_size"]


@pytest.mark.parametrize("export_dtype", ["f32", "bf16"])
@pytest.mark.parametrize("case", ALL_CASES)
def test_logits_match_transformers(case, export_dtype, exports, tmp_path):
    need_binary(LOGITS)
    need_torch()
    hf_dir, model_bin = exports(case, export_dtype)
    vocab = vocab_of(hf_dir)
    ids = token_ids(hf_dir, vocab)
    # A bf16 export of an f32 checkpoint holds bf16-rounded matrices: give the
    # reference the same values. (A bf16 checkpoint is bf16 already.)
    rounded = export_dtype == "bf16" and source_dtype(hf_dir) == "f32"
    ref = hf_logits(hf_dir, ids, rounded)
    got = lucie_logits(model_bin, "prefill", ids, vocab, tmp_path)
    err = relative_error(got, ref)
    print("%s %s: max |lucie - hf| / max |hf| = %.2e" % (case, export_dtype, err))
    assert err <= TOLERANCE, "%s %s: relative error %.3g > %g" % (case, export_dtype, err, TOLERANCE)


@pytest.mark.parametrize("export_dtype", ["f32", "bf16"])
@pytest.mark.parametrize("case", ["lucie-base-bf16-sharded", "lucie-instruct-f32-sharded", "stories260K-untied"])
def test_prefill_step_chunk_agree(case, export_dtype, exports, tmp_path):
    need_binary(LOGITS)
    hf_dir, model_bin = exports(case, export_dtype)
    vocab = vocab_of(hf_dir)
    ids = token_ids(hf_dir, vocab)
    prefill = lucie_logits(model_bin, "prefill", ids, vocab, tmp_path)
    for mode in ("step", "chunk"):
        other = lucie_logits(model_bin, mode, ids, vocab, tmp_path)
        err = relative_error(other, prefill)
        print("%s %s: %s vs prefill %.2e" % (case, export_dtype, mode, err))
        assert err <= MODE_TOLERANCE, "%s %s: %s differs from prefill by %.3g" % (case, export_dtype, mode, err)


@pytest.mark.parametrize("export_dtype", ["f32", "bf16"])
@pytest.mark.parametrize("case", sorted(TRAINED_CASES))
def test_run_greedy_matches_transformers_generate(case, export_dtype, exports):
    """./run's greedy continuation equals HF generate + HF tokenizers decode."""
    need_binary(RUN)
    torch, _ = need_torch()
    tokenizers = require("tokenizers")
    hf_dir, model_bin = exports(case, export_dtype)
    prompt = "Once upon a time"
    n_new = 20
    tok = tokenizers.Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
    prompt_ids = tok.encode(prompt).ids
    model = load_hf_model(hf_dir, round_to_bf16=export_dtype == "bf16" and source_dtype(hf_dir) == "f32")
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids),
                             dtype=torch.long), max_new_tokens=n_new, do_sample=False,
                             output_scores=True, return_dict_in_generate=True,
                             pad_token_id=model.generation_config.eos_token_id)
    new_ids = out.sequences[0, len(prompt_ids):].tolist()
    # Greedy decoding is only a fair comparison when no step is a near tie.
    margins = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores]
    assert min(margins) > 1e-3, "reference generation has a near tie (margin %.2g)" % min(margins)
    full = tok.decode(prompt_ids + new_ids, skip_special_tokens=True)
    assert full.startswith(prompt)
    expected = full[len(prompt):]

    proc = subprocess.run([RUN, model_bin, "-p", prompt, "-n", str(n_new), "--temp", "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.returncode == 0, "run failed: %s" % proc.stderr.decode("utf-8", "replace").strip()
    got = proc.stdout.decode("utf-8")
    print("%s %s: %r" % (case, export_dtype, got))
    assert got == expected


LONG_TOKENS = 300


@pytest.mark.parametrize("case", ["lucie-instruct-bf16", "stories260K-untied"])
def test_long_sequence_matches_transformers(case, exports, tmp_path):
    """300 positions: the prompt crosses several prefill batches (lucie.c runs at
    most 64 tokens per forward call) and RoPE is checked far from position 0."""
    need_binary(LOGITS)
    need_torch()
    tokenizers = require("tokenizers")
    hf_dir, model_bin = exports(case, "f32")
    vocab = vocab_of(hf_dir)
    tok = tokenizers.Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
    ids = tok.encode((TEXT + "\n") * 40).ids[:LONG_TOKENS]
    assert len(ids) == LONG_TOKENS
    ref = hf_logits(hf_dir, ids, round_to_bf16=False)
    got = lucie_logits(model_bin, "prefill", ids, vocab, tmp_path)
    err = relative_error(got, ref)
    print("%s long: max |lucie - hf| / max |hf| = %.2e" % (case, err))
    assert err <= TOLERANCE, "%s: relative error %.3g > %g over %d tokens" % (case, err, TOLERANCE, LONG_TOKENS)
    chunked = lucie_logits(model_bin, "chunk", ids, vocab, tmp_path)
    assert relative_error(chunked, got) <= MODE_TOLERANCE
