"""The example programs (examples/*.c), built by make, run on the trained stories260K
model and checked against references.

- examples/embed streams a greedy completion (stories260K's generation_config asks
  for greedy decoding): its stdout must be transformers' generate() output decoded by
  the reference tokenizer, and its statistics must count the tokens.
- examples/two_sessions runs two sampling sessions side by side (on two threads with
  OpenMP) and checks itself against solo runs; its texts must also be what test/session
  samples with the same settings, decoded by the reference tokenizer.
"""

import os
import re
import subprocess

import pytest

from conftest import (REPO, STORIES_UNTIED, TEST_DIR, load_hf_model, need_binary, need_dir, need_torch,
                      read_header)

EMBED = os.path.join(REPO, "examples", "embed")
TWO_SESSIONS = os.path.join(REPO, "examples", "two_sessions")
SESSION = os.path.join(TEST_DIR, "session")


def run(args):
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def hf_model():
    return load_hf_model(need_dir(STORIES_UNTIED))


@pytest.mark.parametrize("prompt,n_new", [("Once upon a time", 40), ("Tom had a red ball", 25)])
def test_embed_streams_the_greedy_completion(prompt, n_new, stories_bin, stories_tokenizer, hf_model):
    tokenizer = stories_tokenizer
    need_binary(EMBED)
    torch, _ = need_torch()
    ids = tokenizer.encode(prompt).ids
    model = hf_model
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n_new, do_sample=False, pad_token_id=model.generation_config.eos_token_id)
    new = out[0, len(ids):].tolist()
    expected = tokenizer.decode(ids + new, skip_special_tokens=True)
    code, stdout, stderr = run([EMBED, stories_bin, prompt, str(n_new)])
    assert code == 0, stderr
    print(stdout)
    print(stderr.strip())
    assert stdout == expected
    stats = re.search(r"prompt (\d+) tokens .* generated (\d+) tokens", stderr)
    assert stats, "no statistics line in %r" % stderr
    assert (int(stats.group(1)), int(stats.group(2))) == (len(ids), len(new))


def test_embed_bad_model_file(tmp_path):
    need_binary(EMBED)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a model")
    code, stdout, stderr = run([EMBED, str(bad)])
    assert code == 1 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1


def sampled_text(model_bin, tokenizer, prompt, seed, n_new, header):
    """What test/session samples with two_sessions' settings, decoded by the reference."""
    need_binary(SESSION)
    ids = tokenizer.encode(prompt).ids
    options = ["--ctx", "512", "--threads", "1", "--temp", "0.8", "--top-p", "0.95", "--seed", str(seed),
               "--top-k", str(header["top_k"]), "--penalty", repr(header["repetition_penalty"])]
    proc = subprocess.run([SESSION, model_bin] + options + ["eval", ",".join(map(str, ids)), "sample", str(n_new)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0, proc.stderr
    new = [int(x) for x in proc.stdout.split(":", 1)[1].split()]
    eos = set(header["eos_ids"][:header["n_eos"]])
    if new and new[-1] in eos:
        new = new[:-1]
    return tokenizer.decode(ids + new, skip_special_tokens=True), len(ids), len(new)


def test_two_sessions(stories_bin, stories_tokenizer):
    need_binary(TWO_SESSIONS)
    with open(stories_bin, "rb") as f:
        header = read_header(f.read(256))
    prompts = ["Once upon a time", "The little dog"]
    n_new = 48
    code, stdout, stderr = run([TWO_SESSIONS, stories_bin, str(n_new)] + prompts)
    print(stdout)
    assert code == 0, stderr
    assert stdout.rstrip().endswith("same text as each session alone: yes")
    for k, prompt in enumerate(prompts):
        text, n_prompt, n_generated = sampled_text(stories_bin, stories_tokenizer, prompt, k + 1, n_new, header)
        block = "session %d (%d prompt + %d new tokens):\n%s\n\n" % (k + 1, n_prompt, n_generated, text)
        assert block in stdout


def test_two_sessions_usage():
    need_binary(TWO_SESSIONS)
    code, stdout, stderr = run([TWO_SESSIONS])
    assert code == 2 and stdout == "" and "usage" in stderr
