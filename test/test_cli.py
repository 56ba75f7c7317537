"""./run, the command-line program: options, modes and errors.

- --help lists every option run.c parses, and the default of every numeric one.
- Unknown or malformed options: one line on stderr, nothing on stdout, exit code 2;
  unusable files: one line, exit code 1.
- -f FILE gives what -p with the file's text gives; --stop cuts the greedy text where
  the stop string starts; -n 0 generates nothing; the context filling up is reported.
- --ppl prints 'perplexity P tokens N windows W' with P computed by transformers on
  the same windows of the same tokens (stories260K).
- --chat on piped stdin, with --system and /reset, on a tiny random model with
  Lucie-7B-Instruct's tokenizer and chat template: every greedy reply equals
  transformers' generate() continuing the conversation's token sequence
  (apply_chat_template renderings, replies kept in the cache, each turn closed by
  <|eot_id|>), decoded by the reference tokenizer.
"""

import json
import math
import os
import re
import subprocess

import pytest

from conftest import (LUCIE_INSTRUCT, RUN, STORIES_UNTIED, export_model, load_hf_model, need_binary, need_dir,
                      need_torch, require)

RUN_C = os.path.join(os.path.dirname(RUN), "run.c")

STORY = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park with "
         "her big red ball. One day, she saw a big dog near the tree. The dog was sad because it could not "
         "find its home. Lily wanted to help the dog. She looked around the park and asked everyone.\n"
         "\"Is this your dog?\" she asked a man with a hat. \"No,\" he said, \"but I saw him near the pond.\"\n")


def run(args, stdin=None):
    need_binary(RUN)
    proc = subprocess.run([RUN] + args, input=stdin.encode("utf-8") if stdin is not None else None,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8", "replace")


# ---- --help -------------------------------------------------------------------

def parsed_options():
    """{option: takes a number} for every option run.c's parser compares against."""
    with open(RUN_C, "r", encoding="utf-8") as f:
        source = f.read()
    start = source.index("static int parse_args(")
    body = source[start:source.index("\n}\n", start)]
    branches = re.split(r'(?=strcmp\(a, "-)', body)[1:]
    options = {}
    for branch in branches:
        names = re.findall(r'strcmp\(a, "(-[^"]*)"\)', branch.split("{", 1)[0])
        numeric = bool(re.search(r"parse_int|parse_float|strtoull", branch.split("} else if", 1)[0]))
        for name in names:
            options[name] = numeric
    assert len(options) > 20, "cannot find run.c's options (parser rewritten?)"
    return options


def help_entries(text):
    """{option: its help paragraph} from the help text."""
    entries, current = {}, None
    for line in text.splitlines():
        m = re.match(r"  (-[^ ,]+)(?:, (--[^ ]+))?", line)
        if m:
            current = [m.group(1)] + ([m.group(2)] if m.group(2) else [])
            for name in current:
                entries[name] = line
        elif current and line.startswith("    "):
            for name in current:
                entries[name] += "\n" + line
        else:
            current = None
    return entries


def test_help_lists_every_option():
    code, stdout, stderr = run(["--help"])
    assert code == 0 and stderr == ""
    entries = help_entries(stdout)
    options = parsed_options()
    missing = sorted(set(options) - set(entries))
    assert not missing, "options parsed by run.c but not in --help: %s" % missing
    no_default = sorted(o for o, numeric in options.items() if numeric and "default" not in entries[o])
    assert not no_default, "numeric options whose default --help does not give: %s" % no_default
    assert run(["-h"])[1] == stdout


# ---- usage errors ---------------------------------------------------------------

BAD_USAGE = [
    ["--bogus"], ["-x"], ["--temp"], ["-n"], ["-p"], ["-f"], ["-n", "abc"], ["-n", "-1"], ["-n", "1e3"],
    ["-n", "99999999999999999999"], ["--temp", "x"], ["--temp", "-0.5"], ["--temp", "nan"], ["--temp", "inf"],
    ["--top-k", "-1"], ["--top-k", "2.5"], ["--top-p", "0"], ["--top-p", "1.5"], ["--min-p", "-0.1"],
    ["--min-p", "2"], ["--repeat-penalty", "0"], ["--repeat-penalty", "x"], ["--repeat-window", "-3"],
    ["--seed", "-1"], ["--seed", "x"], ["--seed", "1x"], ["-c", "0"], ["-c", "abc"], ["-t", "0"], ["-t", ""],
    ["--stop", ""], ["--bench-prompt", "0"], ["extra-argument"], ["--stop", "a"] * 17, ["--kv"], ["--kv", "q4"],
    ["--kv", "F16"], ["--bench-ttft", "0"], ["--bench-batch", "0"], ["--bench-batch", "x"],
]


@pytest.mark.parametrize("args", BAD_USAGE, ids=[" ".join(a)[:40] or "empty" for a in BAD_USAGE])
def test_bad_usage_is_one_line_and_exit_2(args, stories_bin):
    code, stdout, stderr = run([stories_bin] + args)
    assert code == 2, "exit code %d for %s" % (code, args)
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_missing_model_argument():
    code, stdout, stderr = run([])
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [None, b"", b"LUCIEBIN" + b"\0" * 100, b"garbage" * 1000])
def test_unusable_model_file_is_one_line_and_exit_1(content, tmp_path):
    path = str(tmp_path / "model.bin")
    if content is not None:
        with open(path, "wb") as f:
            f.write(content)
    code, stdout, stderr = run([path, "-p", "hi", "-n", "3"])
    assert code == 1 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1, stderr


# ---- generation options -----------------------------------------------------

def greedy(model_bin, args):
    code, stdout, stderr = run([model_bin, "--temp", "0", "-t", "1"] + args)
    assert code == 0, stderr
    return stdout, stderr


def test_prompt_file_equals_prompt(stories_bin, tmp_path):
    text = "Lily and Tom went to the park.\nThey saw a big dog. \"Hello!\" said Tom."
    path = tmp_path / "prompt.txt"
    path.write_bytes(text.encode("utf-8"))
    from_file, _ = greedy(stories_bin, ["-f", str(path), "-n", "30"])
    from_arg, _ = greedy(stories_bin, ["-p", text, "-n", "30"])
    assert from_file == from_arg and len(from_file) > 20


def test_prompt_file_missing(stories_bin, tmp_path):
    code, stdout, stderr = run([stories_bin, "-f", str(tmp_path / "nope.txt")])
    assert code == 1 and stdout == "" and len(stderr.strip().splitlines()) == 1


def test_stop_strings(stories_bin):
    full, _ = greedy(stories_bin, ["-p", "Once upon a time", "-n", "80"])
    assert len(full) > 100
    # A stop string from the middle of the text, one that starts inside a token (the
    # streamed text must be held back until the match is decided), and two at once.
    for stop in (full[40:46], full[61:63] + full[63:70]):
        first = full.index(stop)
        out, _ = greedy(stories_bin, ["-p", "Once upon a time", "-n", "80", "--stop", stop])
        assert out == full[:first], "--stop %r" % stop
    a, b = full[70:75], full[50:54]
    out, _ = greedy(stories_bin, ["-p", "Once upon a time", "-n", "80", "--stop", a, "--stop", b])
    assert out == full[:min(full.index(a), full.index(b))]
    # Never generated: the whole text.
    out, _ = greedy(stories_bin, ["-p", "Once upon a time", "-n", "80", "--stop", "zzzq"])
    assert out == full


def test_zero_tokens(stories_bin):
    out, stderr = greedy(stories_bin, ["-p", "Once upon a time", "-n", "0"])
    assert out == ""
    assert re.search(r"generated: 0 tokens", stderr), stderr


def test_context_full_is_reported(stories_bin):
    """-c smaller than prompt + -n: generation stops at the context's end, says so,
    and (run.c: "1 runtime error (bad model file, context full...)") exits with 1."""
    code, stdout, stderr = run([stories_bin, "--temp", "0", "-t", "1", "-p", "Once upon a time", "-n", "50",
                                "-c", "12"])
    full, _ = greedy(stories_bin, ["-p", "Once upon a time", "-n", "7"])
    assert stdout == full  # 5 prompt tokens + 7 generated fill the 12 positions
    assert "context" in stderr
    assert code == 1
    # A prompt that does not fit at all.
    code, stdout, stderr = run([stories_bin, "-p", STORY, "-n", "5", "-c", "16"])
    assert code == 1 and stdout == "" and "context" in stderr


def test_bench_prints_one_json_line(stories_bin):
    code, stdout, stderr = run([stories_bin, "--bench", "-n", "4", "--bench-prompt", "8", "-t", "1"])
    assert code == 0, stderr
    lines = stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["prompt_tokens"] == 8 and result["gen_tokens"] == 4
    assert result["prefill_tok_s"] > 0 and result["decode_tok_s"] > 0
    assert result["depth"] == 0 and result["batch"] == 1 and result["kv"] in ("f32", "f16", "q8")


def test_bench_decodes_sequences_together(stories_bin):
    code, stdout, stderr = run([stories_bin, "--bench", "-n", "3", "--bench-prompt", "4", "--bench-batch", "3",
                                "-t", "1"])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["batch"] == 3 and result["gen_tokens"] == 3 and result["decode_tok_s"] > 0


def test_bench_times_the_first_token_inside_a_longer_prompt(stories_bin):
    code, stdout, stderr = run([stories_bin, "--bench", "-n", "2", "--bench-prompt", "12", "--bench-ttft", "8",
                                "-t", "1"])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["prompt_tokens"] == 12 and result["ttft_tokens"] == 8 and result["ttft_s"] > 0
    code, stdout, stderr = run([stories_bin, "--bench", "--bench-prompt", "8", "--bench-ttft", "8"])
    assert code == 2 and stdout == "" and "--bench-ttft" in stderr


def test_bench_decodes_from_a_saved_session(stories_bin, tmp_path):
    cache = str(tmp_path / "cache")
    code, _, stderr = run([stories_bin, "-p", "Once upon a time", "-n", "1", "--temp", "0", "--kv", "f16",
                           "--prompt-cache", cache])
    assert code == 0, stderr
    code, stdout, stderr = run([stories_bin, "--bench", "--prompt-cache", cache, "--kv", "f16", "-c", "64",
                                "--bench-prompt", "1", "-n", "3", "-t", "1"])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["depth"] >= 5 and result["kv"] == "f16" and result["gen_tokens"] == 3
    # -c is needed: the saved depth is only known once the file is read
    code, stdout, stderr = run([stories_bin, "--bench", "--prompt-cache", cache, "--kv", "f16"])
    assert code == 2 and stdout == "" and "-c" in stderr
    # a cache of another type is refused, not converted
    code, stdout, stderr = run([stories_bin, "--bench", "--prompt-cache", cache, "--kv", "q8", "-c", "64",
                                "--bench-prompt", "1", "-n", "3"])
    assert code == 1 and stdout == "" and "f16" in stderr


# ---- --ppl ----------------------------------------------------------------------

def hf_perplexity(model, ids, window):
    """Perplexity the way --help defines it: windows of `window` tokens, each
    evaluated from an empty cache, each predicting its own tokens 2..n."""
    torch, _ = need_torch()
    nll, count, windows, max_logit = 0.0, 0, 0, 0.0
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start:start + window]
        if len(chunk) < 2:
            break
        with torch.no_grad():
            logits = model(torch.tensor([chunk])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        nll -= float(logp[torch.arange(len(chunk) - 1), torch.tensor(chunk[1:])].sum())
        count += len(chunk) - 1
        windows += 1
        max_logit = max(max_logit, float(logits.abs().max()))
    return math.exp(nll / count), count, windows, max_logit


@pytest.fixture(scope="module")
def stories_hf():
    return load_hf_model(need_dir(STORIES_UNTIED))


@pytest.mark.parametrize("window", [None, 32, 7])
def test_perplexity_matches_transformers(window, stories_bin, stories_tokenizer, stories_hf, tmp_path):
    path = tmp_path / "story.txt"
    path.write_bytes(STORY.encode("utf-8"))
    ids = stories_tokenizer.encode(STORY).ids  # BOS added, as --ppl does
    args = [stories_bin, "--ppl", str(path), "-t", "1"] + (["-c", str(window)] if window else [])
    code, stdout, stderr = run(args)
    assert code == 0, stderr
    m = re.match(r"^perplexity (\d+\.\d+) tokens (\d+) windows (\d+)\n$", stdout)
    assert m, "unexpected --ppl output %r" % stdout
    ppl, count, windows, max_logit = hf_perplexity(stories_hf, ids, window or 512)
    print("window %s: lucie %s, transformers %.6f over %d tokens" % (window, m.group(1), ppl, count))
    assert (int(m.group(2)), int(m.group(3))) == (count, windows)
    # The logits agree within 1e-4 of the largest |logit| (test_forward.py); a mean
    # log-likelihood moves by at most twice the largest logit error, and the printed
    # value has 6 decimals.
    assert abs(math.log(float(m.group(1))) - math.log(ppl)) <= 2e-4 * max_logit + 1e-6 / ppl


def test_perplexity_of_too_short_text(stories_bin, tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    code, stdout, stderr = run([stories_bin, "--ppl", str(path)])
    assert code == 1 and stdout == "" and len(stderr.strip().splitlines()) == 1


def test_perplexity_windows_of_one_token_are_refused(stories_bin, tmp_path):
    """-c 1 leaves nothing to predict: bad usage naming the range, never 'perplexity -nan'."""
    path = tmp_path / "story.txt"
    path.write_text(STORY, encoding="utf-8")
    code, stdout, stderr = run([stories_bin, "--ppl", str(path), "-c", "1"])
    assert code == 2 and stdout == "" and "2..512" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    code, stdout, stderr = run([stories_bin, "--ppl", str(path), "-c", "2", "-t", "1"])
    assert code == 0 and re.match(r"^perplexity \d+\.\d{6} tokens \d+ windows \d+$", stdout.strip()), stdout


# ---- --chat ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def instruct(tmp_path_factory):
    """(HF checkpoint dir, exported .bin) of a tiny random model with Lucie-7B-Instruct's
    tokenizer and chat template. Weights N(0, 0.1^2) so greedy choices are clear-cut."""
    need_dir(LUCIE_INSTRUCT)
    import make_checkpoint
    hf_dir = make_checkpoint.make_checkpoint(
        str(tmp_path_factory.mktemp("instruct")), config=os.path.join(LUCIE_INSTRUCT, "config.json"),
        tokenizer_dir=LUCIE_INSTRUCT, hidden=64, ffn=128, layers=2, heads=4, kv_heads=2, std=0.1, seed=11)
    out = str(tmp_path_factory.mktemp("bin") / "instruct.bin")
    export_model(hf_dir, out, "f32")
    return hf_dir, out


def hf_reply(model, ids, n_new, eot):
    torch, _ = need_torch()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n_new, do_sample=False, eos_token_id=eot, pad_token_id=eot,
                             output_scores=True, return_dict_in_generate=True)
    reply = out.sequences[0, len(ids):].tolist()
    margins = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores]
    # The model is fixed (seeded), so a near tie would be a property of the test data:
    # change the seed rather than compare a coin toss.
    assert min(margins) >= 1e-3, "reference generation has a near tie (margin %.2g)" % min(margins)
    return reply


def test_chat_turns_and_reset(instruct):
    """Turn 1 (system + user), turn 2 (appended to the cache, with a typed
    "<|eot_id|>" that must stay text), /reset, then turn 1 again."""
    hf_dir, model_bin = instruct
    transformers = require("transformers")
    from test_chat import hf_ids_typed_text_stays_text  # transformers' rendering, typed text kept text
    # The tokenizer exactly as tokenizer.json defines it (see test_chat.py).
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(LUCIE_INSTRUCT)
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    model = load_hf_model(hf_dir)
    n_new = 6
    system = "Tu es Lucie, une assistante serviable."
    user1, user2 = "Bonjour, qui es-tu ?", "  Et que sais-tu faire ? <|eot_id|> "

    first = hf_ids_typed_text_stays_text(tok, [("system", system), ("user", user1)], True)
    reply1 = hf_reply(model, first, n_new, eot)
    # The cache after turn 1 holds the reply, closed by <|eot_id|> if it did not end
    # on it; turn 2 is the rendering of the new message alone, without BOS.
    history = first + reply1 + ([] if reply1[-1] == eot else [eot])
    second = hf_ids_typed_text_stays_text(tok, [("user", user2)], True)
    assert second[0] == tok.bos_token_id
    reply2 = hf_reply(model, history + second[1:], n_new, eot)

    def text(reply):
        return tok.decode([t for t in reply if t != eot], skip_special_tokens=True)

    code, stdout, stderr = run([model_bin, "--chat", "--system", system, "--temp", "0", "-n", str(n_new), "-t", "1"],
                               stdin="%s\n%s\n/reset\n%s\n" % (user1, user2, user1))
    assert code == 0, stderr
    print(repr(stdout))
    assert stdout == text(reply1) + "\n" + text(reply2) + "\n" + text(reply1) + "\n"
    assert "(conversation reset)" in stderr
    assert len(re.findall(r"\[\d+ tokens, [0-9.]+ tok/s", stderr)) == 3


def test_chat_context_full_then_reset(instruct):
    """A message that does not fit: a clear message, the program goes on, /reset works."""
    _, model_bin = instruct
    long_message = " ".join(["mot"] * 80)
    code, stdout, stderr = run([model_bin, "--chat", "--temp", "0", "-n", "4", "-c", "48", "-t", "1"],
                               stdin="%s\n/reset\nSalut\n/quit\n" % long_message)
    assert code == 0, stderr
    assert "no longer fits" in stderr
    assert "(conversation reset)" in stderr
    assert len(re.findall(r"\[\d+ tokens, [0-9.]+ tok/s", stderr)) == 1


def test_chat_needs_a_template(stories_bin):
    code, stdout, stderr = run([stories_bin, "--chat"], stdin="hello\n")
    assert code == 1 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and "chat template" in stderr


def test_chat_ctrl_c_stops_the_answer_not_the_program(instruct):
    """SIGINT during an answer ends that answer; the chat goes on (here: to /quit,
    exit code 0). The signal is sent once the answer has started streaming, and the
    answer could run for thousands of tokens, so the interruption is certain."""
    import signal
    _, model_bin = instruct
    need_binary(RUN)
    args = [RUN, model_bin, "--chat", "--temp", "0", "-t", "1", "-c", "4096"]
    # Checked first: this greedy answer does not end by itself within 300 tokens.
    code, _, stderr = run(args[1:] + ["-n", "300"], stdin="Raconte une longue histoire.\n")
    assert code == 0 and "[300 tokens" in stderr, "test design: the answer ends early: %s" % stderr
    proc = subprocess.Popen(args + ["-n", "4000"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b"Raconte une longue histoire.\n")
        proc.stdin.flush()
        assert proc.stdout.read(1)  # the answer is streaming
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(b"/quit\n", timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, stderr
    assert "(stopped)" in stderr
    n = int(re.search(r"\[(\d+) tokens, ", stderr).group(1))
    assert 0 < n < 4000


# ---- options of another mode, ranges, seed, --version, --info --------------------

MISPLACED = [
    (["-p", "hi", "--system", "be nice"], "--system", "generation"),
    (["-p", "hi", "--no-bos"], "--no-bos", "generation"),
    (["-p", "hi", "--skip-special"], "--skip-special", "generation"),
    (["--tokenize", "hi", "--skip-special"], "--skip-special", "--tokenize"),
    (["--detokenize", "1 2", "--no-bos"], "--no-bos", "--detokenize"),
    (["--tokenize", "hi", "-t", "2"], "-t", "--tokenize"),
    (["--detokenize", "1 2", "--no-pin"], "--no-pin", "--detokenize"),
    (["--chat", "-p", "hi"], "-p", "--chat"),
    (["--chat", "--prompt-cache", "x"], "--prompt-cache", "--chat"),
    (["--bench", "--temp", "0.5"], "--temp", "--bench"),
    (["--bench", "--stop", "x"], "--stop", "--bench"),
    (["--bench", "--lookup", "4"], "--lookup", "--bench"),
    (["--ppl", "x.txt", "-n", "5"], "-n", "--ppl"),
    (["--info", "-c", "16"], "-c", "--info"),
    (["--bench-prompt", "8"], "--bench-prompt", "generation"),
    (["--bench-ttft", "8"], "--bench-ttft", "generation"),
    (["--bench-batch", "2"], "--bench-batch", "generation"),
    # the option before the mode that excludes it
    (["--system", "be nice", "--tokenize", "hi"], "--system", "--tokenize"),
    (["--top-k", "5", "--ppl", "x.txt"], "--top-k", "--ppl"),
]


@pytest.mark.parametrize("args,flag,mode", MISPLACED, ids=[" ".join(m[0]) for m in MISPLACED])
def test_option_of_another_mode_is_refused(args, flag, mode, stories_bin):
    """An option that does not apply to the chosen mode: one line naming the option and
    the mode, exit code 2, whichever comes first."""
    code, stdout, stderr = run([stories_bin] + args)
    assert code == 2 and stdout == "", (code, stderr)
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "%s does not apply to %s mode" % (flag, mode) in stderr, stderr


def test_two_modes_are_refused(stories_bin):
    code, stdout, stderr = run([stories_bin, "--chat", "--bench"])
    assert code == 2 and stdout == "" and "--chat" in stderr and "--bench" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_quantize_refuses_options(stories_bin, tmp_path):
    code, stdout, stderr = run(["quantize", stories_bin, str(tmp_path / "q.bin"), "q8", "-t", "2"])
    assert code == 2 and stdout == "" and "-t does not apply to quantize mode" in stderr
    assert not os.path.exists(str(tmp_path / "q.bin"))


@pytest.mark.parametrize("value", ["99999999", "0", "513", "-5", "99999999999999999999"])
def test_context_out_of_range_gives_the_range(value, stories_bin):
    """stories260K's maximum context is 512 (config.json's max_position_embeddings)."""
    with open(os.path.join(need_dir(STORIES_UNTIED), "config.json")) as f:
        maximum = json.load(f)["max_position_embeddings"]
    code, stdout, stderr = run([stories_bin, "-p", "hi", "-c", value])
    assert code == 2 and stdout == ""
    assert stderr.strip() == "run: -c '%s' is out of range: this model's context is 1..%d tokens" % (value, maximum)
    code, stdout, stderr = run([stories_bin, "-p", "hi", "-n", "2", "-c", str(maximum), "--temp", "0"])
    assert code == 0, stderr


def test_clock_seed_is_printed_and_reproduces(stories_bin):
    """Sampling without --seed prints the seed it drew on stderr; passing it back with
    --seed gives the same text. Greedy decoding, or a given seed, prints no seed."""
    args = [stories_bin, "-p", "Once upon a time", "-n", "40", "--temp", "1.0", "-t", "1"]
    code, first, stderr = run(args)
    assert code == 0, stderr
    m = re.search(r"^seed: (\d+) \(use --seed (\d+) to repeat\)$", stderr, re.M)
    assert m and m.group(1) == m.group(2), stderr
    code, again, stderr = run(args + ["--seed", m.group(1)])
    assert code == 0 and again == first and "seed:" not in stderr
    assert len(first) > 40
    code, _, stderr = run([stories_bin, "-p", "Once", "-n", "3", "--temp", "0"])
    assert code == 0 and "seed:" not in stderr


def test_version():
    with open(os.path.join(os.path.dirname(RUN), "lucie.h")) as f:
        version = re.search(r'#define LUCIE_VERSION "([^"]+)"', f.read()).group(1)
    code, stdout, stderr = run(["--version"])
    assert code == 0 and stderr == ""
    assert re.match(r"^lucie %s; float kernels: (avx512|avx2|neon|portable); quantized kernels: "
                    r"(avx512-vnni|avx2|neon-dotprod|portable); fma: (fused|multiply then add); "
                    r"threads: (POSIX threads|Windows threads|none \(LUCIE_NO_THREADS: one thread\))\n$" % re.escape(version), stdout), stdout


def test_info_matches_the_checkpoint(stories_bin):
    """--info against the Hugging Face config and weights it was exported from."""
    torch, _ = need_torch()
    from safetensors.torch import load_file
    hf_dir = need_dir(STORIES_UNTIED)
    with open(os.path.join(hf_dir, "config.json")) as f:
        config = json.load(f)
    weights = load_file(os.path.join(hf_dir, "model.safetensors"))
    code, stdout, stderr = run([stories_bin, "--info"])
    assert code == 0, stderr
    info = dict(line.split(": ", 1) for line in stdout.strip().splitlines())
    assert info["file"].startswith("%s (" % stories_bin) and "%d bytes" % os.path.getsize(stories_bin) in info["file"]
    assert info["weights"] == "f32"
    assert int(info["parameters"].split()[0]) == sum(t.numel() for t in weights.values())
    assert info["layers"].split(",")[0] == str(config["num_hidden_layers"])
    assert "dim: %d, hidden_dim: %d, heads: %d, kv_heads: %d" % (
        config["hidden_size"], config["intermediate_size"], config["num_attention_heads"],
        config["num_key_value_heads"]) in stdout
    assert info["context"].startswith("%d tokens" % config["max_position_embeddings"])
    assert info["vocabulary"].startswith("%d tokens" % config["vocab_size"])
    assert info["chat template"] == "no"


def test_chat_reply_length_default(instruct):
    """--help states -n's default for --chat (the whole reply: until it ends or the
    context is full), and --chat does that: this reply runs past 256 tokens."""
    entries = help_entries(run(["--help"])[1])
    assert "default 256" in entries["-n"] and "--chat: until the reply ends or the" in entries["-n"], entries["-n"]
    _, model_bin = instruct
    code, _, stderr = run([model_bin, "--chat", "--temp", "0", "-t", "1", "-c", "320"],
                          stdin="Raconte une longue histoire.\n")
    assert code == 0, stderr
    n = int(re.search(r"\[(\d+) tokens, ", stderr).group(1))
    assert n > 256, stderr


# ---- --prompt-cache ---------------------------------------------------------------

def test_prompt_cache(stories_bin, tmp_path):
    """The second run of a prompt evaluates one token (the rest comes from the cache) and
    prints the greedy text of a run without cache; a longer prompt reuses the shared
    prefix; a prompt that diverges rewinds the cache to the common part; a session of
    another model is reported, not used, and replaced; a file that is not a session file
    is left alone."""
    cache = str(tmp_path / "prompt.cache")
    base = [stories_bin, "--temp", "0", "-t", "1", "-n", "30"]

    def with_cache(prompt):
        code, stdout, stderr = run(base + ["-p", prompt, "--prompt-cache", cache])
        assert code == 0, stderr
        m = re.search(r"^prompt cache: (\d+) of (\d+) prompt tokens reused$", stderr, re.M)
        assert m, stderr
        evaluated = int(re.search(r"prompt: (\d+) tokens", stderr).group(1))
        assert evaluated == int(m.group(2)) - int(m.group(1))
        return stdout, int(m.group(1)), int(m.group(2)), stderr

    def without_cache(prompt):
        code, stdout, stderr = run(base + ["-p", prompt])
        assert code == 0, stderr
        return stdout

    tokenize = lambda text: run([stories_bin, "--tokenize", text])[1].split()
    first = "Once upon a time, there was a little dog"
    out, reused, total, _ = with_cache(first)
    assert reused == 0 and total == len(tokenize(first)) and out == without_cache(first)
    out, reused, total, _ = with_cache(first)
    assert reused == total - 1 and out == without_cache(first)
    longer = first + " named Max. He liked to run"
    out, reused, total, _ = with_cache(longer)
    assert reused == len(tokenize(first)) and out == without_cache(longer)
    other = "Once upon a time, there was a big cat"
    common = 0
    for a, b in zip(tokenize(longer), tokenize(other)):
        if a != b:
            break
        common += 1
    out, reused, total, _ = with_cache(other)
    assert 0 < reused == common < total and out == without_cache(other)
    # a session of another model: reported, not used, replaced
    other_model = str(tmp_path / "other.bin")
    with open(stories_bin, "rb") as f:
        data = bytearray(f.read())
    data[-1] ^= 1  # other weights: the session's model fingerprint differs
    with open(other_model, "wb") as f:
        f.write(data)
    code, _, stderr = run([other_model, "--temp", "0", "-n", "2", "-p", first, "--prompt-cache", cache])
    assert code == 0 and "prompt cache not used" in stderr and "another model" in stderr, stderr
    out, reused, _, stderr = with_cache(first)
    assert reused == 0 and "prompt cache not used" in stderr and out == without_cache(first)
    out, reused, total, _ = with_cache(first)
    assert reused == total - 1
    # a file that is not a session file (a mistyped name): left alone, exit 1
    not_a_session = str(tmp_path / "notes.txt")
    with open(not_a_session, "wb") as f:
        f.write(b"my notes")
    code, stdout, stderr = run(base + ["-p", first, "--prompt-cache", not_a_session])
    assert code == 1 and stdout == "" and len(stderr.strip().splitlines()) == 1 and "not a session" in stderr
    with open(not_a_session, "rb") as f:
        assert f.read() == b"my notes"


def test_kv_option_selects_the_cache_type(stories_bin, tmp_path):
    """--kv f32 is the default cache; f16 and q8 round the cache, which shows in the
    perplexity (bench/kv_types.md measures how much)."""
    path = tmp_path / "story.txt"
    path.write_bytes(STORY.encode("utf-8"))
    ppl = {}
    for kv in (None, "f32", "f16", "q8"):
        code, stdout, stderr = run([stories_bin, "--ppl", str(path), "-t", "1"] + (["--kv", kv] if kv else []))
        assert code == 0, stderr
        ppl[kv] = stdout
    assert ppl[None] == ppl["f32"]
    assert ppl["f16"] != ppl["f32"] and ppl["q8"] != ppl["f32"] and ppl["q8"] != ppl["f16"]
