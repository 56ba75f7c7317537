#!/usr/bin/env python3
"""setup_env.py - the Python that runs the test suite, with its references installed.

    python3 test/setup_env.py            prints the path of a Python that has every module of
                                         test/requirements.txt (messages go to stderr)
    python3 test/setup_env.py --missing  prints the modules this Python cannot import

`make test` runs pytest with the printed Python. It is this Python when it can import every
reference (torch, transformers, tokenizers, numpy, safetensors, jinja2, pytest); otherwise a
virtual environment in .venv/ at the top of the repository, created from the pinned
test/requirements.txt on first use and reused afterwards (re-created when the requirements
file or this Python's version changes). LUCIE_TEST_VENV=1 uses the virtual environment even
when this Python has everything. Standard library only: it must run on a bare python3.
"""

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys

TEST_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TEST_DIR)
REQUIREMENTS = os.path.join(TEST_DIR, "requirements.txt")
VENV = os.path.join(REPO, ".venv")
STAMP = os.path.join(VENV, "lucie-requirements.sha256")


def say(msg):
    print("setup_env: " + msg, file=sys.stderr, flush=True)


def required_modules():
    """Import names of the pinned distributions (they match here, lower-cased)."""
    names = []
    with open(REQUIREMENTS, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                names.append(line.split("==", 1)[0].strip().lower())
    return names


def missing_modules():
    return [m for m in required_modules() if importlib.util.find_spec(m) is None]


def venv_python():
    if os.name == "nt":
        return os.path.join(VENV, "Scripts", "python.exe")
    return os.path.join(VENV, "bin", "python")


def fingerprint():
    """What the environment was built from: the requirements and the creating Python."""
    with open(REQUIREMENTS, "rb") as f:
        text = f.read()
    return hashlib.sha256(text + sys.version.encode()).hexdigest()


def venv_is_current():
    if not os.path.exists(venv_python()) or not os.path.exists(STAMP):
        return False
    with open(STAMP, encoding="ascii") as f:
        return f.read().strip() == fingerprint()


def create_venv():
    """Creates .venv and installs test/requirements.txt into it; exits with a one-line
    message saying what to install when this Python cannot make one."""
    try:
        import ensurepip  # noqa: F401 (Debian splits it, with venv, into python3-venv)
        import venv  # noqa: F401
    except ImportError:
        raise SystemExit("setup_env: %s cannot create a virtual environment (no ensurepip): install Debian's "
                         "python3-venv (apt-get install python3-venv), or pip install -r test/requirements.txt "
                         "yourself" % sys.executable)
    if os.path.exists(VENV):
        say("test/requirements.txt or Python changed: re-creating .venv")
        shutil.rmtree(VENV)
    say("creating .venv and installing test/requirements.txt into it (once; about 6 GB with the CUDA "
        "libraries of PyPI's torch wheel, allow several minutes)")
    if subprocess.call([sys.executable, "-m", "venv", VENV], stdout=sys.stderr) != 0:
        shutil.rmtree(VENV, ignore_errors=True)
        raise SystemExit("setup_env: `%s -m venv .venv` failed (Debian: apt-get install python3-venv)"
                         % sys.executable)
    # pip's output goes to stderr: stdout carries only the Python's path
    if subprocess.call([venv_python(), "-m", "pip", "install", "--disable-pip-version-check",
                        "-r", REQUIREMENTS], stdout=sys.stderr) != 0:
        raise SystemExit("setup_env: pip could not install test/requirements.txt into .venv (offline? see pip's "
                         "message above); the next `make test` tries again")
    with open(STAMP, "w", encoding="ascii") as f:
        f.write(fingerprint() + "\n")


def main(argv):
    if argv[1:] == ["--missing"]:
        print(" ".join(missing_modules()))
        return 0
    if len(argv) != 1:
        raise SystemExit(__doc__)
    missing = missing_modules()
    if not missing and os.environ.get("LUCIE_TEST_VENV") != "1":
        print(sys.executable)
        return 0
    if missing:
        say("%s cannot import %s: the tests run in .venv" % (sys.executable, ", ".join(missing)))
    if not venv_is_current():
        create_venv()
    print(venv_python())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
