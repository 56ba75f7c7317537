"""The README does what it says: every code block of README.md is checked.

  ```c        compiled with the build command the README documents (lucie.c and lucie.h copied
              beside it, as a user would); a program is run on the bundled stories260K model and
              must print what ./run prints for the same prompt, greedy
  ```console  a shell session: each `$ command` runs (python3 = this Python) in a directory
              where run, export.py and test/ are the repository's, and its output must be what
              the README shows below it (stdout exactly; the lines after stdout are stderr lines,
              in order; `...` stands for any text, e.g. timings)
  ```sh       each command runs offline and must exit 0, with the output COMMAND_OUTPUT names
              (`make test` is the suite itself: not run from inside it)

A block that cannot run offline says so in an HTML comment on the line before it:
`<!-- test_readme: not run (REASON) -->`; `<!-- test_readme: synopsis (...) -->` marks a usage
summary with placeholder files, whose options must all appear in `./run --help`. Any other
block fails: the README has no unchecked code.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, RUN, need_binary

README = os.path.join(REPO, "README.md")
MARKER = re.compile(r"^<!-- test_readme: (not run|synopsis) \((.+)\) -->$")

# What each offline sh command must print (a substring of its stdout) for it to mean something.
COMMAND_OUTPUT = {
    "make demo": "All steps worked",
}


def readme_blocks():
    """[(first line number, info string, marker or None, [lines])] of the fenced blocks."""
    with open(README, encoding="utf-8") as f:
        lines = f.read().split("\n")
    blocks = []
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, info = i, m.group(1)
        end = start + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        assert end < len(lines), "README.md:%d: unterminated code block" % (start + 1)
        prev = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.match(prev)
        blocks.append((start + 1, info, marker.group(1) if marker else None, lines[start + 1:end]))
        i = end + 1
    return blocks


BLOCKS = readme_blocks()


def blocks_of(kind):
    return [pytest.param(b, id="README.md:%d" % b[0]) for b in BLOCKS if kind(b)]


def test_every_block_is_checked():
    assert any(info == "c" for _, info, _, _ in BLOCKS), "the README has lost its C example"
    assert any(info == "console" for _, info, _, _ in BLOCKS), "the README has lost its CLI example"
    for line, info, marker, _ in BLOCKS:
        assert marker or info in ("c", "console", "sh"), (
            "README.md:%d: a ```%s block this test does not run: make it c, console or sh, or mark it "
            "<!-- test_readme: not run (REASON) --> on the line before" % (line, info))


def build_command():
    """The README's build command for a program using the library."""
    with open(README, encoding="utf-8") as f:
        m = re.search(r"`(cc [^`]*\bapp\.c\b[^`]*)`", f.read())
    assert m, "README.md no longer documents how to compile app.c against lucie.c"
    return m.group(1)


def run_cli(args):
    return subprocess.run([need_binary(RUN)] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)


@pytest.mark.parametrize("block", blocks_of(lambda b: b[1] == "c" and not b[2]))
def test_c_block(block, stories_bin, tmp_path):
    line, _, _, code = block
    source = "\n".join(code) + "\n"
    for name in ("lucie.c", "lucie.h"):
        shutil.copy(os.path.join(REPO, name), str(tmp_path / name))
    (tmp_path / "app.c").write_text(source, encoding="utf-8")
    is_program = re.search(r"\bint\s+main\s*\(", source) is not None
    cmd = shlex.split(build_command())
    if not is_program:
        cmd = [a for a in cmd if a not in ("lucie.c", "-lm")] + ["-c"]
    proc = subprocess.run(cmd, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    assert proc.returncode == 0, "README.md:%d does not compile with `%s`:\n%s" % (line, " ".join(cmd), proc.stdout)
    if not is_program:
        return
    # The program opens lucie.bin and generates from a prompt: the same as ./run, greedy
    # (stories260K's generation defaults are greedy, which the program keeps).
    call = re.search(r'lucie_generate\(\s*\w+\s*,\s*"((?:[^"\\]|\\.)*)"\s*,\s*(\d+)\s*,', source)
    assert call, "README.md:%d: a program without lucie_generate(session, \"PROMPT\", N, ...): teach this " \
                 "test what its output must be" % line
    prompt, n = call.group(1), call.group(2)
    os.symlink(stories_bin, str(tmp_path / "lucie.bin"))
    exe = str(tmp_path / ("a.exe" if os.name == "nt" else "a.out"))
    got = subprocess.run([exe], cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert got.returncode == 0, got.stderr.decode("utf-8", "replace")
    want = run_cli([stories_bin, "-p", prompt, "-n", n, "--temp", "0"])
    assert want.returncode == 0, want.stderr
    text = got.stdout.decode("utf-8")
    print(repr(text))
    assert text.strip(), "the README's program printed nothing"
    assert text == want.stdout


def console_session(lines):
    """[(command, [shown output lines])] of a ```console block."""
    steps = []
    for text in lines:
        if text.startswith("$ "):
            steps.append((text[2:], []))
        else:
            assert steps, "a console block must start with a $ command: %r" % text
            steps[-1][1].append(text)
    return steps


def line_pattern(shown):
    """A shown line as a regex: `...` stands for any text."""
    return re.compile("^" + ".*?".join(re.escape(part) for part in shown.split("...")) + "$")


def check_output(command, shown, stdout, stderr):
    """stdout, line by line, must be the first shown lines; the rest are lines of stderr, in order."""
    out_lines = stdout.split("\n")
    if out_lines[-1] == "":
        out_lines.pop()
    assert len(shown) >= len(out_lines), "`%s` printed more than the README shows:\n%s" % (command, stdout)
    for want, got in zip(shown, out_lines):
        assert line_pattern(want).match(got), "`%s`: the README shows\n  %s\nbut stdout has\n  %s" % (
            command, want, got)
    err_lines = [l for l in stderr.split("\n") if l]
    k = 0
    for want in shown[len(out_lines):]:
        pattern = line_pattern(want)
        while k < len(err_lines) and not pattern.match(err_lines[k]):
            k += 1
        assert k < len(err_lines), "`%s`: the README shows\n  %s\nwhich is on neither stdout nor stderr:\n%s%s" % (
            command, want, stdout, stderr)
        k += 1


@pytest.mark.parametrize("block", blocks_of(lambda b: b[1] == "console" and not b[2]))
def test_console_block(block, tmp_path):
    need_binary(RUN)
    for name in ("run", "export.py", "test"):
        os.symlink(os.path.join(REPO, name), str(tmp_path / name))
    for command, shown in console_session(block[3]):
        shell = re.sub(r"^python3(?= )", lambda _: shlex.quote(sys.executable), command)
        proc = subprocess.run(shell, shell=True, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True)
        print("$ %s\n%s%s" % (command, proc.stdout, proc.stderr))
        assert proc.returncode == 0, "README.md:%d: `%s` failed:\n%s" % (block[0], command, proc.stderr)
        check_output(command, shown, proc.stdout, proc.stderr)


def sh_commands():
    """The commands of the ```sh blocks, but the test suite itself."""
    params = []
    for line, info, marker, lines in BLOCKS:
        if info != "sh" or marker:
            continue
        for k, text in enumerate(lines):
            command = text.split("#", 1)[0].strip()
            if command and not re.match(r"^make test( |$)", command):
                params.append(pytest.param(command, id="README.md:%d %s" % (line + 1 + k, command)))
    return params


@pytest.mark.parametrize("command", sh_commands())
def test_sh_command(command, tmp_path):
    assert command in COMMAND_OUTPUT, "README: `%s` is run offline by nobody: say in COMMAND_OUTPUT what it must " \
                                      "print, or mark its block <!-- test_readme: not run (REASON) -->" % command
    env = dict(os.environ, TMPDIR=str(tmp_path))  # where make demo leaves its files
    proc = subprocess.run(command, shell=True, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=env)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0, "`%s` failed:\n%s" % (command, proc.stderr[-3000:])
    assert COMMAND_OUTPUT[command] in proc.stdout


@pytest.mark.parametrize("block", blocks_of(lambda b: b[2] == "synopsis"))
def test_synopsis_options_exist(block):
    proc = run_cli(["--help"])
    assert proc.returncode == 0, proc.stderr
    usage = proc.stdout + proc.stderr
    options = set()
    for text in block[3]:
        command = text.split("#", 1)[0]
        options.update(re.findall(r"(?<!\S)(--?[a-z][\w-]*)", command))
        sub = re.match(r"^\./run ([a-z]+)\s", command)  # a subcommand (run quantize ...)
        if sub:
            options.add(sub.group(1))
    assert options
    missing = sorted(o for o in options if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(o), usage))
    assert not missing, "README options not in ./run --help: %s" % missing
