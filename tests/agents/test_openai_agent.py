"""OpenAIChatAgent against a small chat-completions server on 127.0.0.1 (never any other address)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from mulligan.agents.base import AgentInput
from mulligan.agents.context import LastAttempts
from mulligan.agents.openai_chat import OpenAIChatAgent, OpenAIChatError

try:
    import openai  # noqa: F401

    HAVE_OPENAI = True
except ImportError:
    HAVE_OPENAI = False

#: Both HTTP clients, where the SDK is installed; the hardening guarantees hold for each.
BACKENDS = ["stdlib", pytest.param("openai", marks=pytest.mark.skipif(not HAVE_OPENAI, reason="openai not installed"))]
with_each_backend = pytest.mark.parametrize("backend", BACKENDS)


class _ChatHandler(BaseHTTPRequestHandler):
    """Serves one request as its :class:`FakeServer` (``self.server.fake``) scripts."""

    @property
    def fake(self):
        return self.server.fake

    def log_message(self, *args):
        pass

    def do_GET(self):
        # A POST must never arrive as a GET; answer like a host that would accept it.
        with self.fake.lock:
            self.fake.log.append(("GET", self.path, self.headers))
        payload = {"choices": [{"message": {"role": "assistant", "content": "from a GET"}}]}
        self.send(200, json.dumps(payload).encode())

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.fake.lock:
            self.fake.peers.append(self.client_address)
            self.fake.log.append(("POST", self.path, self.headers))  # an HTTPMessage: names case-insensitive
            self.fake.requests.append(body)
            self.fake.headers.append(self.headers)
            step = self.fake.script.pop(0) if self.fake.script else None
        self.answer(body, step)

    def answer(self, body, step):
        if step and step[0] == "redirect":  # ("redirect", status, absolute or relative location)
            return self.send(step[1], b"", {"Location": step[2]})
        # A forward proxy receives the absolute URL; the fake serves it as the origin would.
        if urlsplit(self.path).path not in ("/v1/chat/completions", "/moved/chat/completions"):
            return self.send(404, b'{"error": "no such route"}')
        if step and step[0] == "retry_after":
            return self.send(429, b'{"error": "slow down"}', {"Retry-After": step[1]})
        if step and step[0] in ("drip_headers", "drip_body", "endless"):
            return self.stream(step)
        if step and step[0] == "hang":
            self.fake.release.wait(step[1])
            return self.send(200, b"{}")
        if step and step[0] == "status":
            extra = {"Retry-After": "0"} if step[1] == 429 else {}
            return self.send(step[1], json.dumps({"error": f"scripted {step[1]}"}).encode(), extra)
        if step and step[0] == "raw":
            return self.send(200, step[1])
        # Requests counted while they are being worked on (not while the answer is written: the client
        # may read it and send its next request before this thread leaves do_POST).
        with self.fake.lock:
            self.fake.working += 1
            self.fake.max_working = max(self.fake.max_working, self.fake.working)
        time.sleep(self.fake.delay)
        with self.fake.lock:
            self.fake.working -= 1
        last = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        content = f"echo: {last} STOP tail" if body.get("stop") else f"echo: {last}"
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": {"content": [{"token": "e", "logprob": -0.5 - i}]},
            }
            for i in range(body.get("n", 1))
        ]
        payload = {"model": body["model"], "choices": choices, "usage": {"completion_tokens": 3}}
        self.send(200, json.dumps(payload).encode())

    def stream(self, step):
        # Bounded on the server side too: it stops after a while, or when the client hangs up.
        stop_at = time.monotonic() + 8.0
        try:
            if step[0] == "drip_headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                while time.monotonic() < stop_at and not self.fake.release.is_set():
                    self.wfile.write(b"X")  # one byte of a header line that never ends
                    self.wfile.flush()
                    time.sleep(0.1)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            if step[0] == "drip_body":
                self.wfile.write(b'{"choices": [')
                while time.monotonic() < stop_at and not self.fake.release.is_set():
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.1)
                return
            chunk = b"x" * 65536  # "endless": up to 256 MiB, far beyond any sane reply
            for _ in range(4096):
                if time.monotonic() > stop_at or self.fake.release.is_set():
                    return
                self.wfile.write(chunk)
                with self.fake.lock:
                    self.fake.streamed += len(chunk)
        except OSError:  # the client hung up, as it should
            return
        finally:
            self.close_connection = True

    def send(self, code, data, extra=None):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


class _KeepAliveChatHandler(_ChatHandler):
    """The same server speaking HTTP/1.1, so that a client may reuse its connection."""

    protocol_version = "HTTP/1.1"


class FakeServer:
    """A loopback chat-completions server whose behaviour each test scripts.

    ``script`` is a list of responses used in order (``("status", code)``, ``("hang", seconds)``,
    ``("raw", bytes)``); once it is exhausted every request succeeds. A successful answer echoes
    the last user message as ``"echo: ..."``, ``n`` times, with fake log-probabilities.
    """

    def __init__(self, script=(), delay=0.0, keep_alive=False):
        self.script = list(script)
        self.delay = delay
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.log: list[tuple[str, str, dict]] = []  # (method, path, headers) of every request, any method
        self.lock = threading.Lock()
        self.working = 0
        self.max_working = 0
        self.release = threading.Event()
        self.streamed = 0
        self.peers: list[tuple[str, int]] = []  # the client address of every POST (one port per connection)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveChatHandler if keep_alive else _ChatHandler)
        self.httpd.fake = self
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(script=(), delay=0.0, keep_alive=False):
        servers.append(FakeServer(script, delay, keep_alive))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def ask(text, **kwargs):
    return AgentInput(messages=[{"role": "user", "content": text}], **kwargs)


@with_each_backend
def test_answers_each_input_in_order_with_what_was_sent(serve, monkeypatch, backend):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = serve()
    agent = OpenAIChatAgent(
        server.base_url,
        "teacher",
        backend=backend,
        system_prompt="Be brief.",
        temperature=0.3,
        max_tokens=7,
        logprobs=True,
        seed=11,
    )
    actions = agent.act([ask(f"q{i}") for i in range(5)])
    assert [a.text for a in actions] == [f"echo: q{i}" for i in range(5)]
    assert actions[0].metadata["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "q0"},
    ]
    assert actions[0].metadata["finish_reason"] == "stop" and actions[0].logprobs == [-0.5]
    assert actions[0].completion_ids is None
    request = server.requests[0]
    assert request["model"] == "teacher" and request["temperature"] == 0.3 and request["max_tokens"] == 7
    assert request["seed"] == 11 and request["logprobs"] is True and "n" not in request
    assert all("Authorization" not in h for h in server.headers)


@with_each_backend
def test_api_key_comes_from_the_named_environment_variable(serve, monkeypatch, backend):
    monkeypatch.setenv("MY_TEACHER_KEY", "sk-secret")
    server = serve(script=[("status", 401)])
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, api_key_env="MY_TEACHER_KEY")
    with pytest.raises(OpenAIChatError, match=r"HTTP 401.*MY_TEACHER_KEY") as caught:
        agent.act([ask("hi")])
    assert "sk-secret" not in str(caught.value)
    assert caught.value.status == 401
    assert server.headers[0]["Authorization"] == "Bearer sk-secret"
    assert len(server.requests) == 1  # a client error is not retried


@with_each_backend
def test_stop_strings_are_sent_and_applied(serve, backend):
    server = serve()
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, stop=[" STOP"])
    action = agent.act([ask("x", stop=["\nObservation:"])])[0]
    assert action.text == "echo: x"
    assert server.requests[0]["stop"] == [" STOP", "\nObservation:"]


@with_each_backend
def test_sample_uses_n_and_tops_up(serve, backend):
    server = serve()
    groups = OpenAIChatAgent(server.base_url, "m", backend=backend).sample([ask("a"), ask("b")], 3)
    assert [len(g) for g in groups] == [3, 3]
    assert [r["n"] for r in server.requests] == [3, 3]
    assert groups[1][2].text == "echo: b" and groups[0][2].logprobs is None
    one_by_one = serve()
    OpenAIChatAgent(one_by_one.base_url, "m", backend=backend, supports_n=False).sample([ask("a")], 3)
    assert len(one_by_one.requests) == 3 and all("n" not in r for r in one_by_one.requests)


@with_each_backend
def test_server_failing_twice_then_succeeding_is_retried(serve, backend):
    server = serve(script=[("status", 503), ("status", 429)])
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, max_retries=3, backoff=0.01)
    assert agent.act([ask("hello")])[0].text == "echo: hello"
    assert len(server.requests) == 3


@with_each_backend
def test_persistent_server_errors_give_up_with_a_clear_error(serve, backend):
    server = serve(script=[("status", 500)] * 10)
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, max_retries=2, backoff=0.01)
    with pytest.raises(OpenAIChatError, match=r"failed after 3 attempts.*HTTP 500.*scripted 500"):
        agent.act([ask("hello")])
    assert len(server.requests) == 3


@with_each_backend
def test_a_hanging_server_times_out_and_is_retried(serve, backend):
    server = serve(script=[("hang", 5.0)])
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, timeout=0.3, max_retries=1, backoff=0.01)
    start = time.monotonic()
    assert agent.act([ask("late")])[0].text == "echo: late"
    assert time.monotonic() - start < 4.0
    hung = serve(script=[("hang", 5.0)] * 2)
    agent = OpenAIChatAgent(hung.base_url, "m", backend=backend, timeout=0.3, max_retries=1, backoff=0.01)
    with pytest.raises(OpenAIChatError, match="timeout"):
        agent.act([ask("late")])


@with_each_backend
def test_concurrency_is_bounded_and_used(serve, backend):
    # Each request takes 0.5 s, long enough for the 3 threads' requests to overlap on a loaded machine.
    server = serve(delay=0.5)
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, concurrency=3)
    actions = agent.act([ask(str(i)) for i in range(9)])
    assert [a.text for a in actions] == [f"echo: {i}" for i in range(9)]
    assert 2 <= server.max_working <= 3


@with_each_backend
def test_bad_routes_bodies_and_refused_connections_fail_clearly(serve, backend):
    server = serve(script=[("raw", b"<html>gateway</html>")])
    with pytest.raises(OpenAIChatError, match="not JSON"):
        OpenAIChatAgent(server.base_url, "m", backend=backend).act([ask("x")])
    with pytest.raises(OpenAIChatError, match=r"HTTP 404.*/v1"):
        OpenAIChatAgent(server.base_url.removesuffix("/v1"), "m", backend=backend).act([ask("x")])
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OpenAIChatError, match="connection failed"):
        OpenAIChatAgent(f"http://127.0.0.1:{port}/v1", "m", backend=backend, max_retries=1, backoff=0.01).act(
            [ask("x")]
        )


@with_each_backend
def test_context_policy_shapes_what_is_sent(serve, backend):
    server = serve()
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, context=LastAttempts(1))
    messages = [
        {"role": "user", "content": "task"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "f1"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "f2"},
    ]
    agent.act([AgentInput(messages=messages)])
    assert [m["content"] for m in server.requests[0]["messages"]] == ["task", "a2", "f2"]


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="http"):
        OpenAIChatAgent("127.0.0.1:8000/v1", "m")
    with pytest.raises(ValueError, match="concurrency"):
        OpenAIChatAgent("http://127.0.0.1:1/v1", "m", concurrency=0)
    with pytest.raises(ValueError, match="sequence of strings"):
        OpenAIChatAgent("http://127.0.0.1:1/v1", "m", stop="\n")
    with pytest.raises(ValueError, match="num_samples"):
        OpenAIChatAgent("http://127.0.0.1:1/v1", "m").sample([ask("x")], 0)


# --------------------------------------------------------------------------- hardening (issue 15)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("elsewhere", ["another port", "another host"])
def test_a_redirect_to_another_origin_is_refused_and_no_credentials_leave(serve, monkeypatch, status, elsewhere):
    monkeypatch.setenv("TEACHER_KEY", "sk-secret")
    other = serve()
    host = "127.0.0.1" if elsewhere == "another port" else "localhost"
    server = serve(script=[("redirect", status, f"http://{host}:{other.port}/v1/chat/completions")])
    agent = OpenAIChatAgent(server.base_url, "m", api_key_env="TEACHER_KEY", max_retries=2, backoff=0.01)
    with pytest.raises(OpenAIChatError, match=r"redirect.*another origin") as caught:
        agent.act([ask("hi")])
    assert "sk-secret" not in str(caught.value)
    assert other.log == []  # nothing reached the other origin, so neither did the key
    assert [method for method, _, _ in server.log] == ["POST"]  # and a refusal is not retried


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_within_the_origin_is_posted_again_with_the_same_body(serve, monkeypatch, status):
    monkeypatch.setenv("TEACHER_KEY", "sk-secret")
    server = serve(script=[("redirect", status, "/moved/chat/completions")])
    agent = OpenAIChatAgent(server.base_url, "m", api_key_env="TEACHER_KEY", temperature=0.25)
    assert agent.act([ask("hello")])[0].text == "echo: hello"
    assert [(method, path) for method, path, _ in server.log] == [
        ("POST", "/v1/chat/completions"),
        ("POST", "/moved/chat/completions"),
    ]
    assert server.requests[0] == server.requests[1] and server.requests[1]["temperature"] == 0.25
    assert server.log[1][2]["Authorization"] == "Bearer sk-secret"


def test_endless_redirects_within_the_origin_stop(serve):
    server = serve(script=[("redirect", 307, "/v1/chat/completions")] * 50)
    with pytest.raises(OpenAIChatError, match="redirect"):
        OpenAIChatAgent(server.base_url, "m", max_retries=0).act([ask("x")])
    assert len(server.log) <= 11


def _act_within(agent, seconds):
    """Run ``agent.act`` in a thread; return (finished, error, elapsed) after at most ``seconds``."""
    outcome = {}

    def run():
        try:
            outcome["actions"] = agent.act([ask("x")])
        except Exception as err:  # surfaced to the test
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), outcome.get("error"), time.monotonic() - start


@pytest.mark.parametrize("step", ["drip_headers", "drip_body"])
@with_each_backend
def test_a_dripping_server_cannot_hold_a_request_past_its_deadline(serve, step, backend):
    # One byte every 0.1 s never trips a per-read timeout of 0.5 s; the whole request must end at 1 s.
    server = serve(script=[(step,)] * 3)
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, timeout=1.0, max_retries=1, backoff=0.01)
    finished, error, elapsed = _act_within(agent, 6.0)
    assert finished and elapsed < 5.0, f"act() still running after {elapsed:.1f} s"
    assert isinstance(error, OpenAIChatError) and "deadline" in str(error)
    assert len(server.log) == 2  # the first attempt and one retry


@with_each_backend
def test_an_endless_body_stops_at_the_size_cap_with_bounded_memory(serve, backend):
    import tracemalloc

    server = serve(script=[("endless",)])
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, max_response_bytes=2**20, max_retries=0)
    tracemalloc.start()
    try:
        finished, error, _ = _act_within(agent, 6.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert finished
    assert isinstance(error, OpenAIChatError) and "max_response_bytes" in str(error)
    assert peak < 16 * 2**20, f"peak memory {peak / 2**20:.0f} MiB for a 1 MiB cap"


@with_each_backend
def test_a_declared_oversized_body_is_refused_before_reading(serve, backend):
    server = serve(script=[("raw", b"{}" + b" " * (2**20))])
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, max_response_bytes=1000, max_retries=0)
    with pytest.raises(OpenAIChatError, match=r"max_response_bytes"):
        agent.act([ask("x")])


@with_each_backend
def test_retry_after_beyond_the_cap_fails_at_once_and_within_it_is_honoured(serve, backend):
    server = serve(script=[("retry_after", "3600")])
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, max_retry_after=1.0, max_retries=3, backoff=0.01)
    finished, error, elapsed = _act_within(agent, 6.0)
    assert finished and elapsed < 5.0
    assert isinstance(error, OpenAIChatError) and "Retry-After" in str(error) and "max_retry_after" in str(error)
    assert len(server.log) == 1
    patient = serve(script=[("retry_after", "0.3")])
    agent = OpenAIChatAgent(patient.base_url, "m", backend=backend, max_retry_after=1.0, max_retries=3, backoff=0.01)
    start = time.monotonic()
    assert agent.act([ask("later")])[0].text == "echo: later"
    assert 0.3 <= time.monotonic() - start < 4.0 and len(patient.log) == 2


@pytest.mark.parametrize(
    ("reply", "complaint"),
    [
        (b'{"choices": [1]}', r"choices\[0\] is not an object"),
        (b'{"choices": [{"message": {"role": "assistant", "content": 5}}]}', r"choices\[0\]\.message\.content"),
        (b'{"choices": [{"finish_reason": "stop"}]}', r"choices\[0\]\.message"),
        (b'{"choices": [{"message": {"role": "assistant"}}]}', r"choices\[0\]\.message\.content"),
        (b'{"choices": [{"message": "hi"}]}', r"choices\[0\]\.message"),
        (b'{"choices": "all of them"}', r"'choices' list"),
        (b'{"id": "x"}', r"'choices' list"),
        (b"[1, 2]", r"not an object"),
        (b"not json at all", r"not JSON"),
        (b'{"choices": [{"message": {"content": "a"}, "logprobs": {"content": [{"token": "a"}]}}]}', r"logprob"),
    ],
)
@with_each_backend
def test_malformed_replies_name_what_is_wrong(serve, reply, complaint, backend):
    server = serve(script=[("raw", reply)])
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, logprobs=True, max_retries=0)
    with pytest.raises(OpenAIChatError, match=complaint):
        agent.act([ask("x")])


@with_each_backend
def test_the_context_the_model_saw_is_recorded(serve, backend):
    # System prompt and context policy come from Agent.prepare_context, as for every agent.
    server = serve()
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, system_prompt="Be brief.", context=LastAttempts(1))
    messages = [
        {"role": "user", "content": "task"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "f1"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "f2"},
    ]
    action = agent.act([AgentInput(messages=messages)])[0]
    sent = server.requests[0]["messages"]
    assert [m["content"] for m in sent] == ["Be brief.", "task", "a2", "f2"]
    assert action.metadata["messages"] == sent
    assert action.context is not None and action.context.system_prompt == "Be brief."
    assert action.context.spans == ((0, 1), (3, 5))


@with_each_backend
def test_an_http_proxy_from_the_environment_is_used(serve, monkeypatch, backend):
    # The standard library client honoured http_proxy before; it still does (a loopback "proxy").
    proxy = serve()
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", f"http://user:pass@127.0.0.1:{proxy.port}")
    action = OpenAIChatAgent("http://teacher.invalid:9/v1", "m", max_retries=0, backend=backend).act(
        [ask("via proxy")]
    )[0]
    assert action.text == "echo: via proxy"
    method, path, headers = proxy.log[0]
    assert (method, path) == ("POST", "http://teacher.invalid:9/v1/chat/completions")
    assert headers["Proxy-Authorization"] == "Basic dXNlcjpwYXNz"


@with_each_backend
def test_each_input_is_sampled_with_its_own_seed(serve, backend):
    # Per-input seeds from the rollout make a resumed run send what an uninterrupted one sent.
    server = serve()
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, seed=11, supports_n=False, concurrency=1)
    agent.sample([ask("a", seed=500), ask("b")], 2)
    assert sorted(r["seed"] for r in server.requests) == [11, 12, 500, 501]


# --------------------------------------------------------------------------- the openai SDK backend

needs_openai = pytest.mark.skipif(not HAVE_OPENAI, reason="openai not installed")


@needs_openai
@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("target", ["/moved/chat/completions", "another origin"])
def test_the_sdk_backend_follows_no_redirect(serve, monkeypatch, status, target):
    monkeypatch.setenv("TEACHER_KEY", "sk-secret")
    other = serve()
    location = target if target.startswith("/") else f"http://localhost:{other.port}/v1/chat/completions"
    server = serve(script=[("redirect", status, location)])
    agent = OpenAIChatAgent(server.base_url, "m", api_key_env="TEACHER_KEY", backend="openai", max_retries=2)
    with pytest.raises(OpenAIChatError, match=rf"redirect \(HTTP {status}\).*follows no redirect") as caught:
        agent.act([ask("hi")])
    assert "sk-secret" not in str(caught.value)
    assert other.log == [] and [m for m, _, _ in server.log] == ["POST"]  # never re-sent, never a GET


@needs_openai
def test_the_sdk_backend_reuses_its_connections(serve):
    server = serve(keep_alive=True)
    agent = OpenAIChatAgent(server.base_url, "m", backend="openai", concurrency=2)
    for _ in range(3):
        agent.act([ask(str(i)) for i in range(4)])
    ports = {peer for peer in server.peers}
    assert len(server.peers) == 12 and len(ports) <= 4, f"{len(ports)} connections for 12 requests"
    stdlib = serve(keep_alive=True)
    OpenAIChatAgent(stdlib.base_url, "m", concurrency=2).act([ask(str(i)) for i in range(4)])
    assert len(set(stdlib.peers)) == 4  # the standard-library client: one connection per request
    agent.close()
    with pytest.raises(OpenAIChatError):  # after close, a fresh client is made on the next call
        OpenAIChatAgent("http://127.0.0.1:1/v1", "m", backend="openai", max_retries=0).act([ask("x")])
    assert agent.act([ask("again")])[0].text == "echo: again"


def test_the_sdk_backend_is_checked_when_chosen(monkeypatch):
    with pytest.raises(ValueError, match="backend must be one of"):
        OpenAIChatAgent("http://127.0.0.1:1/v1", "m", backend="requests")
    monkeypatch.setitem(__import__("sys").modules, "openai", None)  # as if not installed
    with pytest.raises(ValueError, match="pip install openai"):
        OpenAIChatAgent("http://127.0.0.1:1/v1", "m", backend="openai")


# ------------------------------------------------------------------------------------------ tool calls
def _tool_reply(name, arguments, call_id, content=None):
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
    message = {"role": "assistant", "content": content, "tool_calls": [call]}
    return ("raw", json.dumps({"choices": [{"message": message, "finish_reason": "tool_calls"}]}).encode())


@with_each_backend
def test_a_tool_calling_episode_sends_the_envs_tools_and_tool_messages(serve, backend):
    import gymnasium

    from mulligan.training.rollout import collect_episodes

    env_kwargs = {"action_format": "tools", "split": "test"}
    probe = gymnasium.make("Mulligan/HotpotQA-v0", **env_kwargs)
    probe.reset(options={"task_index": 0})
    task = probe.unwrapped.task
    title = task["context"][0][0]
    server = serve(
        script=[
            _tool_reply("search", {"query": title}, "call_s", content="I should search."),
            _tool_reply("finish", {"answer": task["answer"]}, "call_f"),
        ]
    )
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, max_retries=0)
    [trajectory] = collect_episodes(
        "Mulligan/HotpotQA-v0", agent, 1, env_kwargs=env_kwargs, task_indices=[0], num_envs=1, progress=False
    )
    assert trajectory.success and trajectory.score == 1.0
    # Both requests carry the env's tools (found from the env id, since info says tools mode).
    assert all(request["tools"] == probe.unwrapped.tools for request in server.requests)
    second = server.requests[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "tool"]
    assert second[1]["content"] == "I should search."
    assert second[1]["tool_calls"][0]["id"] == "call_s"
    assert json.loads(second[1]["tool_calls"][0]["function"]["arguments"]) == {"query": title}
    assert second[2]["tool_call_id"] == "call_s" and second[2]["content"].startswith(f'Page "{title}"')
    assert [t.info["tool_call_id"] for t in trajectory.turns] == ["call_s", "call_f"]


@with_each_backend
def test_tools_are_sent_only_when_given_or_when_the_env_reads_tool_calls(serve, backend):
    server = serve()
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    OpenAIChatAgent(server.base_url, "m", backend=backend).act([ask("plain", info={"success": False})])
    OpenAIChatAgent(server.base_url, "m", backend=backend, tools=tools).act([ask("explicit")])
    assert "tools" not in server.requests[0] and server.requests[1]["tools"] == tools
    with pytest.raises(ValueError, match="gave no env_id"):
        OpenAIChatAgent(server.base_url, "m", backend=backend).act([ask("x", info={"tool_call_id": ""})])
    with pytest.raises(ValueError, match="list of OpenAI tool schemas"):
        OpenAIChatAgent(server.base_url, "m", tools={"type": "function"})


@with_each_backend
def test_a_reply_without_tool_calls_is_its_text_and_malformed_calls_are_named(serve, backend):
    bad = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [{"id": "x"}]}}]}
    server = serve(script=[("raw", json.dumps(bad).encode())])
    agent = OpenAIChatAgent(server.base_url, "m", backend=backend, max_retries=0, tools=[])
    with pytest.raises(OpenAIChatError, match="tool_calls is not a list of function calls"):
        agent.act([ask("x")])
    assert agent.act([ask("hello")])[0].text == "echo: hello"


# ------------------------------------------------------------------------------------------ the real server, tool calls
@pytest.fixture(scope="module")
def tool_calling_server(tmp_path_factory):
    """``transformers serve`` on 127.0.0.1 with a tiny model trained to call a tool (skipped without its extras)."""
    from tool_calling_model import cached_tool_calling_model
    from transformers_server import require_serving, serve

    executable = require_serving()
    model = str(cached_tool_calling_model())
    with serve(executable, model, tmp_path_factory.mktemp("serve-log")) as base_url:
        yield model, base_url


@with_each_backend
def test_a_tool_calling_episode_against_transformers_serve(tool_calling_server, backend):
    # The server renders the env's tools through the model's Qwen-style template, the model calls
    # finish(answer="Yes"), and the server returns it as tool_calls: StrategyQA task 0's answer is
    # Yes, task 1's No.
    from tool_calling_model import ENV_ID, ENV_KWARGS, TARGET_CALL, TASK_INDICES

    from mulligan.training.rollout import collect_episodes

    model, base_url = tool_calling_server
    agent = OpenAIChatAgent(base_url, model, backend=backend, temperature=0.0, max_tokens=80, max_retries=0)
    trajectories = collect_episodes(
        ENV_ID, agent, 2, env_kwargs=ENV_KWARGS, task_indices=list(TASK_INDICES), progress=False, num_envs=2
    )
    assert [t.success for t in trajectories] == [True, False]
    for trajectory in trajectories:
        [turn] = trajectory.turns
        message = json.loads(turn.action)
        [call] = message["tool_calls"]
        assert call["function"]["name"] == TARGET_CALL["name"]
        assert json.loads(call["function"]["arguments"]) == TARGET_CALL["arguments"]
        assert turn.info["tool_call_id"] == call["id"]  # the server's id reaches the env


def test_mulligan_eval_plays_tools_mode_against_transformers_serve(tool_calling_server, tmp_path):
    # The CLI needs nothing beyond --env_kwargs: the agent reads the env's tools from its id.
    from tool_calling_model import ENV_ID, ENV_KWARGS

    from mulligan.cli import main
    from mulligan.training.trajectory import TrajectoryStore

    model, base_url = tool_calling_server
    results, output = tmp_path / "results.json", tmp_path / "episodes.jsonl"
    argv = ["eval", "--env_id", ENV_ID, "--env_kwargs", json.dumps(ENV_KWARGS), "--agent", f"openai:{model}",
            "--base_url", base_url, "--temperature", "0", "--num_episodes", "2", "--max_new_tokens", "80",
            "--output", str(output), "--results", str(results), "--disable_tqdm"]  # fmt: skip
    assert main(argv) == 0
    trajectories = sorted(TrajectoryStore(output).load(), key=lambda t: t.metadata["task_index"])
    assert [t.success for t in trajectories] == [True, False]  # task 0's answer is Yes, task 1's No
    assert all(json.loads(t.turns[0].action)["tool_calls"] for t in trajectories)
    assert json.loads(results.read_text())["summary"]["episodes"] == 2


@pytest.mark.parametrize(
    "env_id",
    [
        "Mulligan/MathReAct-v0",
        "Mulligan/HotpotQA-v0",
        "Mulligan/StrategyQA-v0",
        "Mulligan/MiniScience-v0",
        pytest.param("Mulligan/ScienceWorld-v0", marks=pytest.mark.scienceworld),
    ],
)
def test_every_multi_step_env_runs_a_tools_mode_episode_against_transformers_serve(tool_calling_server, env_id):
    # The server renders each env's tools (up to MiniScience's 19) through the template and the
    # episode runs through the real API. The model was trained on StrategyQA's prompts only; on
    # other prompts it may write a malformed <tool_call> block, which transformers serve 5.24
    # answers with HTTP 500 (its response parser raises), so replies are cut at 8 tokens, before
    # "<tool_call>" can close: the env scores each as an invalid call.
    from mulligan.training.rollout import collect_episodes

    model, base_url = tool_calling_server
    agent = OpenAIChatAgent(base_url, model, temperature=0.0, max_tokens=8, max_retries=0)
    [trajectory] = collect_episodes(
        env_id, agent, 1, env_kwargs={"action_format": "tools"}, max_turns=2, progress=False, num_envs=1
    )
    assert len(trajectory.turns) == 2 and trajectory.truncated
    for turn in trajectory.turns:
        assert turn.info["tool_call_id"] == "" and turn.info["feedback"].startswith("Invalid tool call")
    # The reply is in the conversation as the server returned it.
    assert trajectory.messages[1] == {"role": "assistant", "content": trajectory.turns[0].action}


# --------------------------------------------------------------------------- prefilled answers
@with_each_backend
def test_a_prefilled_answer_is_sent_as_a_final_assistant_message_to_continue(serve, backend):
    server = serve()
    agent = OpenAIChatAgent(server.base_url, "m", api_key_env=None, prefill_response=True, backend=backend)
    item = ask("Write 5 words.", info={"response_prefix": "- Output: The cat"})
    action = agent.act([item])[0]
    body = server.requests[-1]
    assert body["messages"] == [
        {"role": "user", "content": "Write 5 words."},
        {"role": "assistant", "content": "- Output: The cat"},
    ]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert action.prefill == "- Output: The cat" and action.metadata["messages"] == body["messages"]
    plain = agent.act([ask("Write 5 words.")])[0]
    assert plain.prefill is None and "continue_final_message" not in server.requests[-1]


@with_each_backend
def test_a_server_that_refuses_to_continue_a_prefilled_answer_says_so(serve, backend):
    server = serve(script=[("status", 400)])
    agent = OpenAIChatAgent(
        server.base_url, "m", api_key_env=None, prefill_response=True, backend=backend, max_retries=0
    )
    with pytest.raises(OpenAIChatError, match="continue_final_message") as refused:
        agent.act([ask("x", info={"response_prefix": "- Output:"})])
    assert refused.value.status == 400
    with pytest.raises(ValueError, match="prefill_response"):
        OpenAIChatAgent(server.base_url, "m", prefill_response="yes")
