#!/usr/bin/env python3
"""bench_tokenizer.py - how fast lucie.c tokenizes 1 MiB of French prose.

    python3 test/bench_tokenizer.py [MODEL.bin]

Without MODEL.bin, a tiny random checkpoint carrying Lucie-7B's tokenizer (from
test/data/lucie/base) is exported to a temporary directory. The text is 1 MiB of French sentences in a
seeded random order. `./run MODEL.bin --tokenize - --no-bos` is timed (best of 3,
minus the time the same command takes on empty input, i.e. process start and
model load; wall-clock and CPU time, the latter meaningful on a busy machine),
and Hugging Face `tokenizers` on the same text for comparison, when
installed; the two id lists are compared. Nothing is asserted: this prints figures.
"""

import os
import random
import subprocess
import sys
import tempfile
import time

TEST_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TEST_DIR)
sys.path.insert(0, TEST_DIR)
sys.path.insert(0, REPO)

SENTENCES = [
    "Le chat dort sur le canapé depuis ce matin.",
    "Après la réunion, nous sommes allés boire un café près de la gare.",
    "« Qu'est-ce que tu fais ? » demanda-t-elle, l'air inquiet.",
    "L'été dernier, j'ai lu trois romans et une dizaine de bandes dessinées.",
    "Les élèves doivent rendre leur devoir avant vendredi à midi.",
    "Il faut environ 45 minutes pour aller de Paris à Versailles en train.",
    "Ça n'a pas d'importance : on recommencera demain, voilà tout.",
    "Où as-tu rangé les clés ? Je les cherche partout depuis une heure !",
    "La cuisine française est réputée pour ses sauces, ses fromages et ses vins.",
    "Je m’appelle Lucie et j’habite à Lyon — enfin, pour l’instant.",
    "Ils se sont rencontrés en 1998, à l’université de Bordeaux.",
    "Noël approche ; les vitrines s’illuminent et les enfants s’impatientent.",
    "Le conseil municipal a voté (à l'unanimité) la rénovation de la bibliothèque.",
    "Cette année, la récolte des pommes a été exceptionnelle dans toute la Normandie.",
]


def french_prose(size=1 << 20, seed=3):
    rng = random.Random(seed)
    parts, n = [], 0
    while n < size:
        paragraph = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(3, 8))) + "\n\n"
        parts.append(paragraph)
        n += len(paragraph.encode("utf-8"))
    return "".join(parts).encode("utf-8")[:size].decode("utf-8", "ignore")


def build_model(work):
    import make_checkpoint
    tok_dir = os.path.join(REPO, "test", "data", "lucie", "base")
    ckpt = make_checkpoint.make_checkpoint(os.path.join(work, "hf"), tokenizer_dir=tok_dir, hidden=16, ffn=32,
                                           layers=1, heads=2, kv_heads=1, tied=True, max_position=64)
    out = os.path.join(work, "model.bin")
    subprocess.run([sys.executable, os.path.join(REPO, "export.py"), ckpt, out, "--quiet"], check=True)
    return out, tok_dir


def child_cpu_seconds():
    try:
        import resource
    except ImportError:  # not Unix: wall-clock time only
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def best_time(cmd, data, repeat=3):
    """(best wall-clock seconds, best CPU seconds or None, stdout) of running cmd."""
    best_wall = best_cpu = out = None
    for _ in range(repeat):
        cpu0, t0 = child_cpu_seconds(), time.perf_counter()
        proc = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
        wall, cpu1 = time.perf_counter() - t0, child_cpu_seconds()
        cpu = cpu1 - cpu0 if cpu0 is not None else None
        best_wall = wall if best_wall is None else min(best_wall, wall)
        best_cpu = cpu if best_cpu is None or cpu is None else min(best_cpu, cpu)
        out = proc.stdout
    return best_wall, best_cpu, out


def main():
    run = os.path.join(REPO, "run")
    if not os.access(run, os.X_OK):
        sys.exit("bench_tokenizer: build ./run first (make)")
    with tempfile.TemporaryDirectory() as work:
        if len(sys.argv) > 1:
            model, tok_dir = sys.argv[1], None
        else:
            model, tok_dir = build_model(work)
        text = french_prose()
        data = text.encode("utf-8")
        cmd = [run, model, "--tokenize", "-", "--no-bos"]
        base_wall, base_cpu, _ = best_time(cmd, b"")
        wall, cpu, out = best_time(cmd, data)
        ids = [int(x) for x in out.split()]
        mb = len(data) / 1e6
        seconds = max(wall - base_wall, 1e-9)
        print("lucie.c: %.2f MB of French prose -> %d tokens: %.3f s wall (%.1f MB/s)"
              % (mb, len(ids), seconds, mb / seconds), end="")
        if cpu is not None:
            cpu_seconds = max(cpu - base_cpu, 1e-9)
            print(", %.3f s CPU (%.1f MB/s)" % (cpu_seconds, mb / cpu_seconds), end="")
        print("; process start + model load %.3f s not counted" % base_wall)
        if tok_dir:
            try:
                import tokenizers
            except ImportError:
                return
            ref = tokenizers.Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
            t0, c0 = time.perf_counter(), time.process_time()
            want = ref.encode(text, add_special_tokens=False).ids
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            print("HF tokenizers %s: %.3f s wall (%.1f MB/s), %.3f s CPU; ids %s"
                  % (tokenizers.__version__, dt, mb / dt, dc, "identical" if want == ids else "DIFFER"))


if __name__ == "__main__":
    main()
