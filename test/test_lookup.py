"""Speculative decoding by prompt lookup (lucie_generate_options.lookup, run --lookup N).

Lookup only changes how many forward passes generation takes, never what it produces:
every test runs the same generation with and without it and requires exact equality of
- the tokens and the text the callback receives, the stop reason, n_prompt/n_generated;
- the session afterwards: its cached tokens (test/session's `tokens`), and what a
  further generation from the session's own last prediction gives (its logits, cache
  and random state must be those plain decoding left);
for the trained stories260K model and a random Lucie-shaped checkpoint, greedy and
sampled (several seeds, top-k / top-p / min-p, repetition penalty, windowed), long
outputs, every max_tokens up to a few drafts, a context that fills up mid-draft, stop
strings, an eos and a callback that stops. A copy-heavy prompt must also accept drafts.
"""

import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import LUCIE_INSTRUCT, REPO, RUN, TEST_DIR, export_model, need_binary, need_dir

SESSION = os.path.join(TEST_DIR, "session")

with open(os.path.join(TEST_DIR, "data", "story.txt"), encoding="utf-8") as _f:
    STORY = _f.read()[:700]
# Text that never says the same thing twice (so drafts are rare).
PLAIN_PROMPT = "Lily and Tom went to the park. They saw"

COMMA = 432  # stories260K's token ","

SAMPLERS = [
    [],  # greedy
    ["--penalty", "1.3"],
    ["--temp", "0.8", "--seed", "1"],
    ["--temp", "1.0", "--seed", "7", "--top-k", "40", "--top-p", "0.9"],
    ["--temp", "0.7", "--seed", "123", "--min-p", "0.05", "--penalty", "1.2", "--window", "16"],
    ["--temp", "1.2", "--seed", "99", "--penalty", "1.1"],
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Exported models by name, built on first use: "stories" (trained) and
    "random" (random weights in Lucie's shape, with its tokenizer)."""
    made = {}

    def get(name):
        if name not in made:
            out = str(tmp_path_factory.mktemp("lookup") / (name + ".bin"))
            stories = need_dir(os.path.join(TEST_DIR, "data", "stories260K", "hf-untied"))
            if name == "stories":
                export_model(stories, out, "f32")
            elif name == "stories-comma-eos":
                # stories260K never ends a text; with "," (id 432) as its eos it ends one often
                hf_dir = str(tmp_path_factory.mktemp(name))
                for f in os.listdir(stories):
                    shutil.copy(os.path.join(stories, f), hf_dir)
                for f in ("config.json", "generation_config.json"):
                    with open(os.path.join(hf_dir, f)) as fp:
                        config = json.load(fp)
                    config["eos_token_id"] = COMMA
                    with open(os.path.join(hf_dir, f), "w") as fp:
                        json.dump(config, fp)
                export_model(hf_dir, out, "f32")
            else:
                import make_checkpoint
                hf_dir = make_checkpoint.make_checkpoint(
                    str(tmp_path_factory.mktemp(name)), config=os.path.join(need_dir(LUCIE_INSTRUCT), "config.json"),
                    tokenizer_dir=LUCIE_INSTRUCT, hidden=64, ffn=128, layers=2, heads=4, kv_heads=2, std=0.1, seed=3)
                export_model(hf_dir, out, "f32")
            made[name] = out
        return made[name]
    return get


def tokenize(model_bin, text):
    need_binary(RUN)
    proc = subprocess.run([RUN, model_bin, "--tokenize", text], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    assert proc.returncode == 0, proc.stderr
    return [int(x) for x in proc.stdout.split()]


def session(model_bin, options, commands):
    """test/session's output lines as {key: [lines' values]} (a key may repeat)."""
    need_binary(SESSION)
    proc = subprocess.run([SESSION, model_bin, "--threads", "1"] + options + commands, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0, "test/session failed: %s" % proc.stderr.strip()
    out = {}
    for line in proc.stdout.splitlines():
        key, _, rest = line.partition(":")
        out.setdefault(key, []).append(rest.split())
    return out


def compare(model_bin, options, commands, lookups=(1, 3, 8)):
    """Runs the commands with each lookup and without; everything but the lookup
    statistics must be equal. Returns the plain run and the lookup runs'
    statistics (n_forward, n_drafted, n_accepted per generate)."""
    plain = session(model_bin, options, ["lookup", "0"] + commands)
    stats = {}
    for n in lookups:
        got = session(model_bin, options, ["lookup", str(n)] + commands)
        stats[n] = [[int(x) for x in line] for line in got.pop("lookup")]
        reference = dict(plain)
        reference.pop("lookup")
        assert got == reference, "lookup %d changed the output (options %s)" % (n, options)
        for forward, drafted, accepted in stats[n]:
            assert 0 <= accepted <= drafted
    return plain, stats


def ids_arg(ids):
    return ",".join(str(i) for i in ids)


@pytest.mark.parametrize("model", ["stories", "random"])
@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: " ".join(s) or "greedy")
def test_long_generation_is_unchanged(model, sampler, models):
    """Hundreds of tokens from a copy-heavy and a plain prompt, then a continuation
    from the session's own prediction: tokens, text, stop reasons, cache."""
    model_bin = models(model)
    for prompt in (STORY, PLAIN_PROMPT):
        ids = tokenize(model_bin, prompt)
        plain, stats = compare(model_bin, sampler, ["generate", "300", ids_arg(ids), "tokens", "pos",
                                                     "generate", "40", "-", "tokens"])
        assert len(plain["generate"][0]) > 0
        # plain decoding: one pass per generated token
        n_generated = int(plain["stats"][0][1])
        assert session(model_bin, sampler, ["generate", "300", ids_arg(ids)])["lookup"][0] == [
            str(n_generated), "0", "0"]
        for n, runs in stats.items():
            forward, drafted, accepted = runs[0]
            assert forward + accepted == n_generated  # every pass yields one sampled token plus its accepted drafts


def test_copy_heavy_prompt_accepts_drafts(models):
    """stories260K asked to go on with a story it has just read repeats long runs of it."""
    model_bin = models("stories")
    text = STORY + "\n" + STORY[:200]
    ids = tokenize(model_bin, text)
    _, stats = compare(model_bin, [], ["generate", "200", ids_arg(ids)], lookups=(4,))
    forward, drafted, accepted = stats[4][0]
    assert accepted > 0 and forward < 200, stats


@pytest.mark.parametrize("sampler", SAMPLERS[:3], ids=lambda s: " ".join(s) or "greedy")
def test_every_max_tokens(sampler, models):
    """max_tokens that end before, inside and after a verified batch."""
    model_bin = models("stories")
    ids = tokenize(model_bin, STORY + "\n" + STORY[:120])
    for n in list(range(0, 13)) + [29, 64]:
        compare(model_bin, sampler, ["generate", str(n), ids_arg(ids), "tokens", "generate", "5", "-", "tokens"],
                lookups=(2, 5))


@pytest.mark.parametrize("model", ["stories", "random"])
def test_context_full_mid_draft(model, models):
    """Contexts that fill up at every offset after the prompt: the same output, stop
    reason (context_full) and cache as plain decoding."""
    model_bin = models(model)
    ids = tokenize(model_bin, STORY)
    for extra in list(range(0, 10)) + [37]:
        for sampler in (SAMPLERS[0], SAMPLERS[3]):
            plain, _ = compare(model_bin, sampler + ["--ctx", str(len(ids) + extra)],
                               ["generate", "200", ids_arg(ids), "tokens"], lookups=(3, 16))
            assert plain["stop"][0] == ["context_full"]


def test_eos_inside_a_draft(models):
    """An eos the sampler picks, drafted or not, ends generation as in plain decoding
    (the eos joins the cache, the drafts after it do not)."""
    model_bin = models("stories-comma-eos")
    assert tokenize(model_bin, "Tim,")[-1] == COMMA
    ids = tokenize(model_bin, STORY + "\n" + STORY[:150])
    eos_seen = 0
    for sampler in SAMPLERS:
        for start in range(0, len(ids) - 8, 9):  # prompts ending at several places of the story
            plain, _ = compare(model_bin, sampler, ["generate", "100", ids_arg(ids[:len(ids) - start]), "tokens",
                                                    "generate", "5", "-", "tokens"], lookups=(2, 8))
            eos_seen += plain["stop"][0] == ["eos"]
    assert eos_seen > 10


@pytest.mark.parametrize("sampler", SAMPLERS[:3], ids=lambda s: " ".join(s) or "greedy")
def test_stop_strings_and_callback_stop(sampler, models):
    """Stop strings taken from the plain output (one inside a token, several at once),
    and a callback that stops at each of the first calls."""
    model_bin = models("stories")
    ids = tokenize(model_bin, STORY)
    plain = session(model_bin, sampler, ["generate", "120", ids_arg(ids)])
    text = bytes(int(b) for b in plain["text"][0]).decode("utf-8", "replace")
    assert len(text) > 200
    for stops in ([text[40:46]], [text[81:85]], [text[150:153], text[100:104]], [text[-5:]], ["zzzq"]):
        args = []
        for stop in stops:
            args += ["stop", stop]
        result, _ = compare(model_bin, sampler, args + ["generate", "120", ids_arg(ids), "tokens",
                                                        "generate", "5", "-", "tokens"], lookups=(2, 6))
        assert result["stop"][0] == (["max_tokens"] if stops == ["zzzq"] else ["stop_string"])
    for calls in (1, 2, 3, 4, 7, 30):
        result, _ = compare(model_bin, sampler, ["cbstop", str(calls), "generate", "120", ids_arg(ids), "tokens",
                                                 "cbstop", "0", "generate", "5", "-", "tokens"], lookups=(2, 6))
        assert result["stop"][0] == ["callback"]


def run(args):
    need_binary(RUN)
    proc = subprocess.run([RUN] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr.decode("utf-8", "replace")


@pytest.mark.parametrize("sampler", [["--temp", "0"], ["--temp", "0.9", "--seed", "4", "--top-k", "50"],
                                     ["--temp", "0", "--repeat-penalty", "1.3", "--stop", "dog"]],
                         ids=["greedy", "sampled", "penalty+stop"])
def test_run_lookup_prints_the_same_and_its_statistics(sampler, models):
    model_bin = models("stories")
    args = [model_bin, "-t", "1", "-p", STORY + "\n" + STORY[:100], "-n", "200"] + sampler
    plain, plain_err = run(args)
    spec, spec_err = run(args + ["--lookup", "4"])
    assert spec == plain
    assert "lookup:" not in plain_err
    m = re.search(r"lookup: (\d+) drafted, (\d+) accepted \(([\d.]+)%\) \| (\d+) forward passes, ([\d.]+) tokens per "
                  r"pass", spec_err)
    assert m, spec_err
    generated = int(re.search(r"generated: (\d+) tokens", spec_err).group(1))
    drafted, accepted, passes = int(m.group(1)), int(m.group(2)), int(m.group(4))
    assert passes + accepted == generated and accepted <= drafted
