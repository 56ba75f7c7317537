"""Aggregate decoding speed of examples/server with 1 and 4 concurrent clients, batched
(one lucie_eval_batch per step) and --sequential (the slots evaluated one by one).

    python3 bench/server_clients.py MODEL.bin [TOKENS] [server options, e.g. --threads 2]

Each client asks for TOKENS (default 100) sampled tokens of its own prompt; prints the
completion tokens of all clients over the wall time. A measurement, not a test.
"""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

SERVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "server")


def start(model, options):
    proc = subprocess.Popen([SERVER, model, "--port", "0", "--slots", "4", "--ctx", "512"] + options,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    line = proc.stderr.readline()
    if b"listening on" not in line:
        proc.kill()
        sys.exit("the server did not start: %r" % line)
    return proc, int(line.rsplit(b":", 1)[1])


def complete(port, prompt, n, counts):
    body = json.dumps({"prompt": prompt, "max_tokens": n, "temperature": 0.8, "seed": 1}).encode()
    request = urllib.request.Request("http://127.0.0.1:%d/v1/completions" % port, body)
    counts.append(json.loads(urllib.request.urlopen(request, timeout=600).read())["usage"]["completion_tokens"])


def measure(port, clients, n):
    counts = []
    threads = [threading.Thread(target=complete, args=(port, "Once upon a time %d" % i, n, counts))
               for i in range(clients)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.time() - t0


def main():
    model = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    for mode in (["--sequential"], []):
        proc, port = start(model, mode + sys.argv[3:])
        try:
            measure(port, 1, 8)  # warm-up
            for clients in (1, 4):
                tokens, seconds = measure(port, clients, n)
                print("%-12s %d client(s): %d tokens in %.2f s = %.1f tokens/s"
                      % (mode[0] if mode else "batched", clients, tokens, seconds, tokens / seconds))
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
