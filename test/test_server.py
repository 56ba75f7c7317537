"""examples/server: the OpenAI-compatible HTTP server, driven by the official openai client,
by curl and by raw sockets.

References: greedy completions must be what ./run prints for the same prompt (the
library's own CLI); sampled choices (n > 1, seed S) must be what test/session samples
with seed S + i, decoded by the HF tokenizer; chat prompts must have the token count of
transformers' apply_chat_template and the reply must be test/session's greedy
continuation of those ids. Concurrent clients must each get their own right answer,
batched (one lucie_eval_batch per step) and with --sequential alike, and a client's stream
must go on while another client's long prompt is prefilled chunk by chunk. Hostile requests
must be answered with the right status and an OpenAI-style error object, and the server
must go on serving. Every server runs on a free port, every network call has a timeout,
and every server process is killed at the end of its fixture.
"""

import json
import os
import select
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import LUCIE_INSTRUCT, REPO, RUN, TEST_DIR, need_binary, need_dir, read_header, require

SERVER = os.path.join(REPO, "examples", "server")
SESSION = os.path.join(TEST_DIR, "session")
TIMEOUT = 60


class Server:
    """examples/server on a free port; stop() kills it."""

    def __init__(self, model, *options):
        need_binary(SERVER)
        self.proc = subprocess.Popen([SERVER, model, "--port", "0", "--threads", "1"] + list(options),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        line = b""
        deadline = time.time() + TIMEOUT
        while b"listening on" not in line:
            ready, _, _ = select.select([self.proc.stderr], [], [], max(0.0, deadline - time.time()))
            if not ready or self.proc.poll() is not None:
                self.stop()
                raise AssertionError("the server did not start: %r" % line)
            line = self.proc.stderr.readline()
        self.port = int(line.rsplit(b":", 1)[1])
        self.url = "http://127.0.0.1:%d" % self.port

    def stop(self):
        """SIGTERM: the server exits 0 (under SANITIZE=1, after the leak check); kill after a timeout.
        Returns what it printed on stderr since it started listening."""
        err = b""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                err = self.proc.communicate(timeout=TIMEOUT)[1]
            except subprocess.TimeoutExpired:
                self.proc.kill()
                err = self.proc.communicate()[1]
        self.proc.stderr.close()
        return err.decode("utf-8", "replace")

    def stop_cleanly(self):
        """stop(), asserting that the server was alive, exits 0 and reported nothing."""
        assert self.alive(), "the server died"
        err = self.stop()
        assert self.proc.returncode == 0 and err == "server: stopped\n", (self.proc.returncode, err[-4000:])

    def alive(self):
        return self.proc.poll() is None

    def client(self, api_key="none"):
        openai = require("openai")
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, timeout=TIMEOUT, max_retries=0)

    def raw(self, data, read=True):
        """Sends raw bytes, returns (status, headers text, body bytes)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as s:
            s.sendall(data)
            if not read:
                return None
            return parse_http(recv_all(s))

    def request(self, method, path, body=None, headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        head = "%s %s HTTP/1.1\r\nHost: x\r\n" % (method, path)
        for k, v in (headers or {}).items():
            head += "%s: %s\r\n" % (k, v)
        if body is not None:
            head += "Content-Length: %d\r\n" % len(body)
        return self.raw(head.encode() + b"\r\n" + (body or b""))


def recv_all(s):
    chunks = []
    while True:
        b = s.recv(65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def read_until(s, marker):
    data = b""
    while marker not in data:
        b = s.recv(4096)
        assert b, "connection closed before %r: %r" % (marker, data)
        data += b
    return data


def parse_http(data):
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.decode("latin-1"), body


def assert_error(status, body, expected_status, param=None, code=None):
    assert status == expected_status, body
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.fixture(scope="module", params=["batched", "sequential"])
def stories_server(request, stories_bin):
    # prompts of a few tokens take several steps of --prefill-chunk 3: every answer below checks
    # chunked prefill (and the n choices fork after the prompt's last chunk)
    server = Server(stories_bin, "--slots", "4", "--ctx", "256", "--queue", "16", "--timeout", "2",
                    "--max-body", "65536", "--prefill-chunk", "3",
                    *(["--sequential"] if request.param == "sequential" else []))
    yield server
    server.stop_cleanly()


@pytest.fixture(scope="module")
def stories_header(stories_bin):
    with open(stories_bin, "rb") as f:
        return read_header(f.read(256))


def run_greedy(model, prompt, n):
    """./run's greedy continuation of prompt (it prints only the new text)."""
    need_binary(RUN)
    proc = subprocess.run([RUN, model, "-p", prompt, "-n", str(n), "--temp", "0", "-t", "1"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode("utf-8")


def session_sample(model, ids, n_new, options):
    """test/session's sampled ids after evaluating ids (the eos, if any, dropped) and whether it ended on eos."""
    need_binary(SESSION)
    proc = subprocess.run([SESSION, model, "--ctx", "256", "--threads", "1"] + options +
                          ["eval", ",".join(map(str, ids)), "sample", str(n_new)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return [int(x) for x in proc.stdout.split(":", 1)[1].split()]


PROMPTS = ["Once upon a time", "Tom had a red ball", "The cat", "Lily wanted to"]


# ---- the openai client ---------------------------------------------------------------

def test_models(stories_server):
    models = stories_server.client().models.list()
    assert [m.id for m in models.data] == ["stories.bin"]
    assert models.data[0].object == "model"


@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_greedy_completion_equals_run(stories_server, stories_bin, stories_tokenizer, prompt):
    expected = run_greedy(stories_bin, prompt, 30)
    out = stories_server.client().completions.create(model="stories.bin", prompt=prompt, max_tokens=30,
                                                     temperature=0)
    assert out.object == "text_completion" and out.id.startswith("cmpl-")
    assert len(out.choices) == 1 and out.choices[0].index == 0
    assert out.choices[0].text == expected
    n_prompt = len(stories_tokenizer.encode(prompt).ids)
    assert out.usage.prompt_tokens == n_prompt
    assert out.usage.total_tokens == n_prompt + out.usage.completion_tokens
    assert out.choices[0].finish_reason == ("length" if out.usage.completion_tokens == 30 else "stop")


def test_streamed_completion_equals_run(stories_server, stories_bin):
    prompt = PROMPTS[0]
    expected = run_greedy(stories_bin, prompt, 40)
    stream = stories_server.client().completions.create(model="x", prompt=prompt, max_tokens=40, temperature=0,
                                                        stream=True, stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        assert chunk.object == "text_completion"
        if chunk.usage:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        assert finish is None, "text after the finish reason"
        pieces.append(chunk.choices[0].text)
        finish = chunk.choices[0].finish_reason
    assert "".join(pieces) == expected
    assert finish == "length" and usage.completion_tokens == 40
    assert len(pieces) > 5, "the text was not streamed"


def test_stop_strings(stories_server, stories_bin):
    prompt = PROMPTS[0]
    full = run_greedy(stories_bin, prompt, 60)
    for stop in ["Lily", ["zzz", "play"], "."]:
        first = min(full.find(s) for s in ([stop] if isinstance(stop, str) else stop) if s in full)
        client = stories_server.client()
        out = client.completions.create(model="x", prompt=prompt, max_tokens=60, temperature=0, stop=stop)
        assert out.choices[0].text == full[:first] and out.choices[0].finish_reason == "stop"
        streamed = "".join(c.choices[0].text for c in client.completions.create(
            model="x", prompt=prompt, max_tokens=60, temperature=0, stop=stop, stream=True))
        assert streamed == full[:first]


def test_sampled_choices_are_the_library_samples(stories_server, stories_bin, stories_tokenizer, stories_header):
    """n = 3 choices of one prompt (forked sessions), seed 11: choice i is test/session's sample with seed 11 + i."""
    check_sampled_choices(stories_server, stories_bin, stories_tokenizer, stories_header)


def test_more_choices_than_slots(stories_bin, stories_tokenizer, stories_header):
    """One slot for three choices: they run in turn, each still the sample of its own seed."""
    server = Server(stories_bin, "--slots", "1", "--ctx", "256")
    try:
        check_sampled_choices(server, stories_bin, stories_tokenizer, stories_header)
        server.stop_cleanly()
    finally:
        server.stop()


def check_sampled_choices(server, stories_bin, stories_tokenizer, stories_header):
    prompt, n_new = PROMPTS[1], 25
    out = server.client().completions.create(model="x", prompt=prompt, max_tokens=n_new, temperature=0.8,
                                                     top_p=0.95, seed=11, n=3, extra_body={"top_k": 40})
    ids = stories_tokenizer.encode(prompt).ids
    eos = set(stories_header["eos_ids"][:stories_header["n_eos"]])
    assert [c.index for c in out.choices] == [0, 1, 2]
    completion_tokens = 0
    for i, choice in enumerate(out.choices):
        new = session_sample(stories_bin, ids, n_new, ["--temp", "0.8", "--top-p", "0.95", "--top-k", "40",
                                                       "--penalty", repr(stories_header["repetition_penalty"]),
                                                       "--seed", str(11 + i)])
        completion_tokens += len(new)
        ended = bool(new) and new[-1] in eos
        text_ids = new[:-1] if ended else new
        assert prompt + choice.text == stories_tokenizer.decode(ids + text_ids, skip_special_tokens=True)
        assert choice.finish_reason == ("stop" if ended else "length")
    assert len({c.text for c in out.choices}) > 1, "the choices did not get their own seeds"
    assert out.usage.completion_tokens == completion_tokens


def test_concurrent_clients_get_their_own_answers(stories_server, stories_bin):
    expected = {p: run_greedy(stories_bin, p, 50) for p in PROMPTS}
    results, errors = {}, []

    def client_thread(k, prompt, stream):
        try:
            client = stories_server.client()
            if stream:
                text = "".join(c.choices[0].text for c in client.completions.create(
                    model="x", prompt=prompt, max_tokens=50, temperature=0, stream=True))
            else:
                text = client.completions.create(model="x", prompt=prompt, max_tokens=50, temperature=0).choices[0].text
            results[k] = text
        except Exception as e:  # reported below, with the thread's key
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=client_thread, args=((i, p), p, i % 2 == 0))
               for i in range(2) for p in PROMPTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors, errors
    assert len(results) == len(threads)
    for (i, prompt), text in results.items():
        assert text == expected[prompt], (i, prompt)


# ---- curl ----------------------------------------------------------------------------

def curl(server, path, body, *extra):
    proc = subprocess.run(["curl", "-sS", "--max-time", str(TIMEOUT), "-w", "\n%{http_code}", "-H",
                           "Content-Type: application/json", "-d", json.dumps(body)] + list(extra) +
                          [server.url + path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT + 5)
    assert proc.returncode == 0, proc.stderr
    body, _, code = proc.stdout.decode("utf-8").rpartition("\n")
    return int(code), body


def test_curl(stories_server, stories_bin):
    prompt = PROMPTS[2]
    expected = run_greedy(stories_bin, prompt, 20)
    code, body = curl(stories_server, "/v1/completions", {"prompt": prompt, "max_tokens": 20, "temperature": 0})
    assert code == 200
    assert json.loads(body)["choices"][0]["text"] == expected
    code, body = curl(stories_server, "/v1/completions", {"prompt": prompt, "max_tokens": 20, "temperature": 0,
                                                          "stream": True}, "-N")
    assert code == 200
    events = [e for e in body.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    text = "".join(json.loads(e[6:])["choices"][0]["text"] for e in events[:-1])
    assert text == expected
    # a body over curl's 1 KB Expect: 100-continue threshold
    code, body = curl(stories_server, "/v1/completions", {"prompt": prompt, "max_tokens": 20, "temperature": 0,
                                                          "padding": "x" * 5000})
    assert code == 200 and json.loads(body)["choices"][0]["text"] == expected


# ---- chat: Lucie-7B-Instruct's tokenizer and template on a tiny random model ---------

@pytest.fixture(scope="module")
def chat_server(instruct_bin):
    server = Server(instruct_bin, "--slots", "2", "--ctx", "256")
    yield server
    server.stop_cleanly()


CHAT = [
    {"role": "system", "content": "Tu es Lucie, une assistante serviable."},
    {"role": "user", "content": "Quelle est la capitale de la France ? Réponds « vite » 🙂"},
]


def test_chat_matches_apply_chat_template_and_the_library(chat_server, instruct_bin):
    need_dir(LUCIE_INSTRUCT)
    transformers = require("transformers")
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(LUCIE_INSTRUCT)
    ids = tok.apply_chat_template(CHAT, tokenize=True, add_generation_prompt=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    ids = list(ids)
    with open(instruct_bin, "rb") as f:
        header = read_header(f.read(256))
    eos = set(header["eos_ids"][:header["n_eos"]])
    new = session_sample(instruct_bin, ids, 24, ["--penalty", repr(header["repetition_penalty"])])
    ended = bool(new) and new[-1] in eos
    expected = tok.decode(new[:-1] if ended else new, skip_special_tokens=True)

    client = chat_server.client()
    out = client.chat.completions.create(model="x", messages=CHAT, max_tokens=24, temperature=0)
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
    assert out.usage.prompt_tokens == len(ids)
    assert out.usage.completion_tokens == len(new)
    msg = out.choices[0].message
    assert msg.role == "assistant" and msg.content == expected
    assert out.choices[0].finish_reason == ("stop" if ended else "length")

    chunks = list(client.chat.completions.create(model="x", messages=CHAT, max_tokens=24, temperature=0, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == out.choices[0].finish_reason
    # content given as text parts is the same message
    parts = [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in CHAT]
    assert client.chat.completions.create(model="x", messages=parts, max_tokens=24,
                                          temperature=0).choices[0].message.content == expected


# ---- hostile clients -----------------------------------------------------------------

def still_serves(server):
    out = server.client().completions.create(model="x", prompt="The", max_tokens=3, temperature=0)
    assert out.choices[0].text


BAD_BODIES = [
    (b"{", None),
    (b"not json", None),
    (b'{"prompt": "a",}', None),
    (b'{"prompt": "\\ud800"}', None),  # lone surrogate
    (b'{"prompt": "\xff\xfe"}', None),  # invalid UTF-8
    (b'{"prompt": "a\\u0000b"}', "prompt"),
    (b"[" * 100000 + b"]" * 100000, None),  # nesting far beyond the depth limit (and over --max-body)
    (b"[" * 200 + b"]" * 200, None),
    (b'{"prompt": 12}', "prompt"),
    (b'{"prompt": "a", "n": 0}', "n"),
    (b'{"prompt": "a", "n": 1.5}', "n"),
    (b'{"prompt": "a", "max_tokens": -1}', "max_tokens"),
    (b'{"prompt": "a", "temperature": "hot"}', "temperature"),
    (b'{"prompt": "a", "top_p": 0}', "top_p"),
    (b'{"prompt": "a", "stop": [1]}', "stop"),
    (b'{"prompt": "a", "stream": "yes"}', "stream"),
]


def test_malformed_requests(stories_server):
    for body, param in BAD_BODIES:
        status, _, reply = stories_server.request("POST", "/v1/completions", body)
        expected = 413 if len(body) > 65536 else 400
        error = assert_error(status, reply, expected)
        if param:
            assert error["param"] == param, (body[:40], error)
    for body in [b'{"messages": []}', b'{"messages": [{"content": "hi"}]}', b'{"messages": "hi"}',
                 b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}']:
        status, _, reply = stories_server.request("POST", "/v1/chat/completions", body)
        assert_error(status, reply, 400, param="messages")
    still_serves(stories_server)


def test_unknown_fields_are_ignored(stories_server, stories_bin):
    body = {"prompt": PROMPTS[0], "max_tokens": 10, "temperature": 0, "logprobs": None, "user": "me",
            "frequency_penalty": 0, "something": {"nested": [1, 2, {"x": None}]}, "seed": None}
    status, _, reply = stories_server.request("POST", "/v1/completions", body)
    assert status == 200, reply
    assert json.loads(reply)["choices"][0]["text"] == run_greedy(stories_bin, PROMPTS[0], 10)


def test_paths_methods_and_sizes(stories_server):
    status, _, reply = stories_server.request("GET", "/v2/nothing")
    assert_error(status, reply, 404)
    status, _, reply = stories_server.request("GET", "/v1/engines")
    assert_error(status, reply, 404)
    status, head, reply = stories_server.request("GET", "/v1/completions")
    assert_error(status, reply, 405)
    status, _, reply = stories_server.request("DELETE", "/v1/models")
    assert_error(status, reply, 405)
    status, _, reply = stories_server.raw(b"POST /v1/completions HTTP/1.1\r\n\r\n")
    assert_error(status, reply, 411)
    status, _, reply = stories_server.raw(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n{")
    assert_error(status, reply, 413)
    status, _, reply = stories_server.raw(b"GET /v1/models HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
    assert_error(status, reply, 431)
    status, _, reply = stories_server.raw(b"garbage\r\n\r\n")
    assert_error(status, reply, 400)
    status, _, reply = stories_server.raw(b"GET /v1/models HTTP/1.1\r\nContent-Length: 1x\r\n\r\n")
    assert_error(status, reply, 400)
    still_serves(stories_server)


def test_too_long_prompt(stories_server):
    client = stories_server.client()
    openai = require("openai")
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="x", prompt="Once upon a time " * 100, max_tokens=5)
    assert info.value.status_code == 400
    error = info.value.body if "message" in info.value.body else info.value.body["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
    still_serves(stories_server)


def test_slow_clients_time_out_without_blocking_others(stories_server):
    """A client that sends half a head (and one that sends half a body) is cut off after --timeout
    (2 s); meanwhile the others are served."""
    slow = [socket.create_connection(("127.0.0.1", stories_server.port), timeout=TIMEOUT) for _ in range(2)]
    slow[0].sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Le")
    slow[1].sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"prompt\"")
    t0 = time.time()
    still_serves(stories_server)
    assert time.time() - t0 < 2
    for s in slow:
        status, _, reply = parse_http(recv_all(s))
        assert_error(status, reply, 408)
        s.close()
    assert time.time() - t0 < 10


def test_client_disconnecting_mid_stream_frees_its_slot(stories_bin):
    """One slot, no queue: a streaming client that vanishes must give its slot back."""
    server = Server(stories_bin, "--slots", "1", "--queue", "1", "--ctx", "256")
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
            body = json.dumps({"prompt": "Once", "max_tokens": 250, "stream": True, "temperature": 0}).encode()
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            read_until(s, b"data: ")
            s.close()
        t0 = time.time()
        still_serves(server)
        assert time.time() - t0 < 30
        assert server.alive()
        server.stop_cleanly()
    finally:
        server.stop()


def test_full_queue_is_503(stories_bin):
    server = Server(stories_bin, "--slots", "1", "--queue", "0", "--ctx", "256")
    try:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        body = json.dumps({"prompt": "Once", "max_tokens": 250, "stream": True, "temperature": 0}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        read_until(s, b"data: ")
        # the slot is busy and the queue holds nothing: refused at once
        status, _, reply = server.request("POST", "/v1/completions", {"prompt": "a", "max_tokens": 2})
        assert_error(status, reply, 503, code="server_overloaded")
        s.close()
        deadline = time.time() + TIMEOUT
        while True:  # the slot comes back once the server notices the client left
            status, _, reply = server.request("POST", "/v1/completions", {"prompt": "a", "max_tokens": 2})
            if status == 200 or time.time() > deadline:
                break
            time.sleep(0.2)
        assert status == 200, reply
        server.stop_cleanly()
    finally:
        server.stop()


def test_api_key(stories_bin):
    server = Server(stories_bin, "--api-key", "s3cret", "--ctx", "128")
    openai = require("openai")
    try:
        for key in ["wrong", "s3cre", "s3cret2"]:
            with pytest.raises(openai.AuthenticationError):
                server.client(api_key=key).models.list()
        status, head, reply = server.request("GET", "/v1/models")
        assert_error(status, reply, 401)
        assert "WWW-Authenticate: Bearer" in head
        assert [m.id for m in server.client(api_key="s3cret").models.list().data] == ["stories.bin"]
        server.stop_cleanly()
    finally:
        server.stop()


# ---- a long prompt is prefilled in chunks beside the other streams --------------------

LONG_PROMPT = open(os.path.join(TEST_DIR, "data", "story.txt")).read().strip()


def sse_stream(server, body):
    """A raw socket with a streamed completion request sent on it."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    data = json.dumps(dict(body, stream=True)).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    return s


class SseReader:
    """Splits what a streamed response's socket receives into its head and its token events."""

    def __init__(self, sock):
        self.sock, self.data, self.head, self.done = sock, b"", None, False

    def read(self):
        """Receives what is there; returns 'head' when the head ended, then each event's text."""
        b = self.sock.recv(65536)
        assert b or self.done, "connection closed before [DONE]: %r" % self.data[-200:]
        self.data += b
        out = []
        if self.head is None and b"\r\n\r\n" in self.data:
            self.head, _, self.data = self.data.partition(b"\r\n\r\n")
            assert self.head.startswith(b"HTTP/1.1 200"), self.head
            out.append("head")
        while self.head is not None and b"\n\n" in self.data:
            event, _, self.data = self.data.partition(b"\n\n")
            assert event.startswith(b"data: "), event
            if event == b"data: [DONE]":
                self.done = True
            else:
                out.append(json.loads(event[6:])["choices"][0]["text"])
        return out


@pytest.mark.parametrize("mode", ["batched", "sequential"])
def test_long_prompt_does_not_stall_other_streams(stories_bin, stories_tokenizer, mode):
    """Client A streams a long generation; client B sends a prompt of many chunks (--prefill-chunk 2).
    Each step evaluates A's token and a chunk of B's prompt together, so A's stream goes on during B's
    prefill: in the order the test receives them, one A token per chunk arrives between B's response
    head (B is queued) and B's first token. The test asks for half of them (A's connection thread may
    lag B's by a few events); a scheduler that prefills B's whole prompt at once lets through only the
    tokens already under way (1 or 2 here). Both answers are ./run's."""
    chunk, a_prompt, a_new, b_new = 2, PROMPTS[0], 400, 8
    n_long = len(stories_tokenizer.encode(LONG_PROMPT).ids)
    n_chunks = -(-n_long // chunk)
    assert n_chunks >= 40
    expected_a, expected_b = run_greedy(stories_bin, a_prompt, a_new), run_greedy(stories_bin, LONG_PROMPT, b_new)
    server = Server(stories_bin, "--slots", "2", "--ctx", "512", "--prefill-chunk", str(chunk),
                    *(["--sequential"] if mode == "sequential" else []))
    try:
        a = SseReader(sse_stream(server, {"prompt": a_prompt, "max_tokens": a_new, "temperature": 0}))
        events = []  # ("a" | "b", "head" or a token's text), in the order received
        while len([e for e in events if e[0] == "a"]) < 2:  # A's head and first token: A is decoding
            events += [("a", x) for x in a.read()]
        b = SseReader(sse_stream(server, {"prompt": LONG_PROMPT, "max_tokens": b_new, "temperature": 0}))
        readers = {a.sock: ("a", a), b.sock: ("b", b)}
        while not (a.done and b.done):
            ready, _, _ = select.select([r.sock for _, r in readers.values() if not r.done], [], [], TIMEOUT)
            assert ready, "no event for %d s" % TIMEOUT
            # B first: an A token that arrived together with B's first token does not count
            for sock in sorted(ready, key=lambda s: readers[s][0] != "b"):
                name, reader = readers[sock]
                events += [(name, x) for x in reader.read()]
        a.sock.close()
        b.sock.close()
        text = {name: "".join(x for n, x in events if n == name and x != "head") for name in "ab"}
        assert text["a"] == expected_a and text["b"] == expected_b
        b_head = events.index(("b", "head"))
        b_first = next(i for i, e in enumerate(events) if e[0] == "b" and e[1] != "head")
        during_prefill = [e for e in events[b_head:b_first] if e[0] == "a"]
        assert len(during_prefill) >= n_chunks // 2, (n_chunks, len(during_prefill))
        server.stop_cleanly()
    finally:
        server.stop()
