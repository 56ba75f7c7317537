"""Several sequences from one model: forked sessions, batched evaluation, `run --variants`.

test/batch (test/batch.c) checks inside one process that sessions evaluated together by
lucie_eval_batch, and sessions forked with lucie_session_fork, give bit for bit what each
session gives alone (the single-session path is itself checked against transformers by
test_forward.py and test_kv_cache.py). It runs here on each weight type, thread count and KV
cache type. `run --variants N` must print, for variant i, exactly what a separate run with
--seed S+i-1 prints.
"""

import os
import re
import subprocess

import pytest

from conftest import (LUCIE_INSTRUCT, RUN, STORIES_UNTIED, TEST_DIR, export_model, need_binary, need_dir)

BATCH = os.path.join(TEST_DIR, "batch")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> exported model path, made on first use: "stories-FMT" (the trained
    stories260K) and "lucie-FMT" (a random checkpoint with Lucie-Instruct's tokenizer,
    config and grouped-query shape)."""
    made = {}

    def get(name):
        if name not in made:
            kind, fmt = name.split("-")
            out = str(tmp_path_factory.mktemp("batch") / (name + ".bin"))
            if kind == "stories":
                export_model(need_dir(STORIES_UNTIED), out, fmt)
            else:
                import make_checkpoint
                hf_dir = make_checkpoint.make_checkpoint(
                    str(tmp_path_factory.mktemp("lucie")), config=os.path.join(need_dir(LUCIE_INSTRUCT), "config.json"),
                    tokenizer_dir=LUCIE_INSTRUCT, hidden=128, ffn=256, layers=2, heads=8, kv_heads=2, std=0.1, seed=5)
                export_model(hf_dir, out, fmt)
            made[name] = out
        return made[name]
    return get


def run_batch(model, *args):
    proc = subprocess.run([need_binary(BATCH), model] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=600)
    assert proc.returncode == 0, "test/batch %s: %s" % (" ".join(args), proc.stderr.strip())
    checks = [l for l in proc.stdout.splitlines() if l.startswith("ok ")]
    assert [c.split()[1] for c in checks] == ["fork", "decode", "mixed", "refused"], proc.stdout


@pytest.mark.parametrize("fmt", ["f32", "bf16", "q8", "q4"])
@pytest.mark.parametrize("threads", ["1", "2"])
def test_batch_equals_alone_random_lucie(models, fmt, threads):
    run_batch(models("lucie-" + fmt), "--threads", threads, "--sessions", "5", "--steps", "4")


@pytest.mark.parametrize("kv", ["f32", "f16", "q8"])
def test_batch_equals_alone_each_kv_type(models, kv):
    run_batch(models("stories-q8"), "--threads", "2", "--kv", kv, "--sessions", "8", "--steps", "3")


def test_batch_of_sixteen_sessions(models):
    run_batch(models("stories-f32"), "--sessions", "16", "--steps", "8")


PROMPT = "Once upon a time, Lily found a box in the garden."


def run_cli(args, timeout=300):
    proc = subprocess.run([need_binary(RUN)] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def split_variants(out, n, seed):
    parts = re.split(r"(?:^|\n)--- variant (\d+) of (\d+) \(seed (\d+)\) ---\n", out)
    assert parts[0] == ""
    found = []
    for i in range(n):
        number, total, s, text = parts[1 + 4 * i: 5 + 4 * i]
        assert (int(number), int(total), int(s)) == (i + 1, n, seed + i)
        found.append(text)
    assert len(parts) == 1 + 4 * n
    assert found[-1].endswith("\n")
    found[-1] = found[-1][:-1]
    return found


@pytest.mark.parametrize("sampler", [["--temp", "0.9"], ["--temp", "1.2", "--top-k", "10", "--repeat-penalty", "1.3"],
                                     ["--temp", "0.8", "--stop", "."]])
def test_variants_equal_separate_runs(models, sampler):
    model = models("stories-f32")
    seed = 41
    rc, out, err = run_cli([model, "-p", PROMPT, "-n", "40", "--seed", str(seed), "--variants", "4"] + sampler)
    assert rc == 0, err
    variants = split_variants(out, 4, seed)
    for i, text in enumerate(variants):
        rc, alone, err = run_cli([model, "-p", PROMPT, "-n", "40", "--seed", str(seed + i)] + sampler)
        assert rc == 0, err
        assert text == alone, "variant %d differs from the run with --seed %d" % (i + 1, seed + i)
    assert len(set(variants)) > 1, "four sampled variants are all the same text"
    assert "generated:" in err


def test_variants_with_prompt_cache(models, tmp_path):
    model = models("stories-q8")
    cache = str(tmp_path / "prompt.session")
    expected = [run_cli([model, "-p", PROMPT, "-n", "24", "--temp", "1", "--seed", str(s)])[1] for s in (3, 4)]
    for attempt in range(2):  # the second run reuses the cache
        rc, out, err = run_cli([model, "-p", PROMPT, "-n", "24", "--temp", "1", "--seed", "3", "--variants", "2",
                                "--prompt-cache", cache])
        assert rc == 0, err
        assert split_variants(out, 2, 3) == expected
    assert "prompt cache: " in err and " of " in err


def test_variants_print_the_clock_seed(models):
    rc, out, err = run_cli([models("stories-f32"), "-p", PROMPT, "-n", "8", "--temp", "1", "--variants", "2"])
    assert rc == 0, err
    seed = int(re.search(r"seed: (\d+) \(use --seed", err).group(1))
    split_variants(out, 2, seed)


@pytest.mark.parametrize("args,message", [(["--variants", "0"], "--variants wants an integer in 1..1000"),
                                          (["--variants", "x"], "--variants wants an integer in 1..1000"),
                                          (["--chat", "--variants", "2"], "--variants does not apply to --chat")])
def test_variants_bad_usage(models, args, message):
    rc, out, err = run_cli([models("stories-f32")] + args)
    assert rc == 2 and message in err and err.count("\n") == 1, err
