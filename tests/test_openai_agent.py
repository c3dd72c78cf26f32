"""OpenAIChatAgent against a small chat-completions server on 127.0.0.1 (never any other address)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mulligan.agents.base import AgentInput
from mulligan.agents.context import LastAttempts
from mulligan.agents.openai_chat import OpenAIChatAgent, OpenAIChatError


class FakeServer:
    """A loopback chat-completions server whose behaviour each test scripts.

    ``script`` is a list of responses used in order (``("status", code)``, ``("hang", seconds)``,
    ``("raw", bytes)``); once it is exhausted every request succeeds. A successful answer echoes
    the last user message as ``"echo: ..."``, ``n`` times, with fake log-probabilities.
    """

    def __init__(self, script=(), delay=0.0):
        self.script = list(script)
        self.delay = delay
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    step = server.script.pop(0) if server.script else None
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self.answer(body, step)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def answer(self, body, step):
                if self.path != "/v1/chat/completions":
                    return self.send(404, b'{"error": "no such route"}')
                if step and step[0] == "hang":
                    server.release.wait(step[1])
                    return self.send(200, b"{}")
                if step and step[0] == "status":
                    extra = {"Retry-After": "0"} if step[1] == 429 else {}
                    return self.send(step[1], json.dumps({"error": f"scripted {step[1]}"}).encode(), extra)
                if step and step[0] == "raw":
                    return self.send(200, step[1])
                time.sleep(server.delay)
                last = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
                content = f"echo: {last} STOP tail" if body.get("stop") else f"echo: {last}"
                choices = [{"index": i, "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                            "logprobs": {"content": [{"token": "e", "logprob": -0.5 - i}]}}
                           for i in range(body.get("n", 1))]
                payload = {"model": body["model"], "choices": choices, "usage": {"completion_tokens": 3}}
                self.send(200, json.dumps(payload).encode())

            def send(self, code, data, extra=None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(script=(), delay=0.0):
        servers.append(FakeServer(script, delay))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def ask(text, **kwargs):
    return AgentInput(messages=[{"role": "user", "content": text}], **kwargs)


def test_answers_each_input_in_order_with_what_was_sent(serve, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = serve()
    agent = OpenAIChatAgent(server.base_url, "teacher", system_prompt="Be brief.", temperature=0.3, max_tokens=7,
                            logprobs=True, seed=11)
    actions = agent.act([ask(f"q{i}") for i in range(5)])
    assert [a.text for a in actions] == [f"echo: q{i}" for i in range(5)]
    assert actions[0].metadata["messages"] == [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "q0"}]
    assert actions[0].metadata["finish_reason"] == "stop" and actions[0].logprobs == [-0.5]
    assert actions[0].completion_ids is None
    request = server.requests[0]
    assert request["model"] == "teacher" and request["temperature"] == 0.3 and request["max_tokens"] == 7
    assert request["seed"] == 11 and request["logprobs"] is True and "n" not in request
    assert all("Authorization" not in h for h in server.headers)


def test_api_key_comes_from_the_named_environment_variable(serve, monkeypatch):
    monkeypatch.setenv("MY_TEACHER_KEY", "sk-secret")
    server = serve(script=[("status", 401)])
    agent = OpenAIChatAgent(server.base_url, "m", api_key_env="MY_TEACHER_KEY")
    with pytest.raises(OpenAIChatError, match=r"HTTP 401.*MY_TEACHER_KEY") as caught:
        agent.act([ask("hi")])
    assert "sk-secret" not in str(caught.value)
    assert caught.value.status == 401
    assert server.headers[0]["Authorization"] == "Bearer sk-secret"
    assert len(server.requests) == 1  # a client error is not retried


def test_stop_strings_are_sent_and_applied(serve):
    server = serve()
    agent = OpenAIChatAgent(server.base_url, "m", stop=[" STOP"])
    action = agent.act([ask("x", stop=["\nObservation:"])])[0]
    assert action.text == "echo: x"
    assert server.requests[0]["stop"] == [" STOP", "\nObservation:"]


def test_sample_uses_n_and_tops_up(serve):
    server = serve()
    groups = OpenAIChatAgent(server.base_url, "m").sample([ask("a"), ask("b")], 3)
    assert [len(g) for g in groups] == [3, 3]
    assert [r["n"] for r in server.requests] == [3, 3]
    assert groups[1][2].text == "echo: b" and groups[0][2].logprobs is None
    one_by_one = serve()
    OpenAIChatAgent(one_by_one.base_url, "m", supports_n=False).sample([ask("a")], 3)
    assert len(one_by_one.requests) == 3 and all("n" not in r for r in one_by_one.requests)


def test_server_failing_twice_then_succeeding_is_retried(serve):
    server = serve(script=[("status", 503), ("status", 429)])
    agent = OpenAIChatAgent(server.base_url, "m", max_retries=3, backoff=0.01)
    assert agent.act([ask("hello")])[0].text == "echo: hello"
    assert len(server.requests) == 3


def test_persistent_server_errors_give_up_with_a_clear_error(serve):
    server = serve(script=[("status", 500)] * 10)
    agent = OpenAIChatAgent(server.base_url, "m", max_retries=2, backoff=0.01)
    with pytest.raises(OpenAIChatError, match=r"failed after 3 attempts.*HTTP 500.*scripted 500"):
        agent.act([ask("hello")])
    assert len(server.requests) == 3


def test_a_hanging_server_times_out_and_is_retried(serve):
    server = serve(script=[("hang", 5.0)])
    agent = OpenAIChatAgent(server.base_url, "m", timeout=0.3, max_retries=1, backoff=0.01)
    start = time.monotonic()
    assert agent.act([ask("late")])[0].text == "echo: late"
    assert time.monotonic() - start < 4.0
    hung = serve(script=[("hang", 5.0)] * 2)
    agent = OpenAIChatAgent(hung.base_url, "m", timeout=0.3, max_retries=1, backoff=0.01)
    with pytest.raises(OpenAIChatError, match="timeout"):
        agent.act([ask("late")])


def test_concurrency_is_bounded_and_used(serve):
    server = serve(delay=0.2)
    agent = OpenAIChatAgent(server.base_url, "m", concurrency=3)
    actions = agent.act([ask(str(i)) for i in range(9)])
    assert [a.text for a in actions] == [f"echo: {i}" for i in range(9)]
    assert 2 <= server.max_in_flight <= 3


def test_bad_routes_bodies_and_refused_connections_fail_clearly(serve):
    server = serve(script=[("raw", b"<html>gateway</html>")])
    with pytest.raises(OpenAIChatError, match="not JSON"):
        OpenAIChatAgent(server.base_url, "m").act([ask("x")])
    with pytest.raises(OpenAIChatError, match=r"HTTP 404.*/v1"):
        OpenAIChatAgent(server.base_url.removesuffix("/v1"), "m").act([ask("x")])
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OpenAIChatError, match="connection failed"):
        OpenAIChatAgent(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff=0.01).act([ask("x")])


def test_context_policy_shapes_what_is_sent(serve):
    server = serve()
    agent = OpenAIChatAgent(server.base_url, "m", context=LastAttempts(1))
    messages = [{"role": "user", "content": "task"}, {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "f1"}, {"role": "assistant", "content": "a2"},
                {"role": "user", "content": "f2"}]
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
