"""``mulligan eval`` and ``mulligan collect`` with a served model (``--agent openai:MODEL``).

Servers run on 127.0.0.1 only: a small scripted chat-completions server that plays Echo-v0, and the
real ``transformers serve`` (OpenAI-compatible) serving the offline tiny model.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mulligan.agents.testing import ECHO_PREFIX
from mulligan.cli import main
from mulligan.training.trajectory import TrajectoryStore

try:
    import openai  # noqa: F401

    HAVE_OPENAI = True
except ImportError:
    HAVE_OPENAI = False

BACKENDS = ["stdlib", pytest.param("openai", marks=pytest.mark.skipif(not HAVE_OPENAI, reason="openai not installed"))]


class _EchoHandler(BaseHTTPRequestHandler):
    """Plays Echo-v0: the target when sampling greedily (temperature 0), a wrong answer otherwise."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        with server.lock:
            server.requests.append(body)
            server.authorizations.append(self.headers.get("Authorization"))
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            time.sleep(0.02)  # long enough for concurrent requests to overlap
            first_user = next(m["content"] for m in body["messages"] if m["role"] == "user")
            target = first_user.splitlines()[0].removeprefix(ECHO_PREFIX)
            content = target if body.get("temperature") == 0 else "wrong"
            choices = [{"index": i, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                       for i in range(body.get("n", 1))]  # fmt: skip
            data = json.dumps({"model": body["model"], "choices": choices}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            with server.lock:
                server.in_flight -= 1


@pytest.fixture
def echo_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    httpd.daemon_threads = True
    httpd.lock = threading.Lock()
    httpd.requests, httpd.authorizations = [], []
    httpd.in_flight = httpd.max_in_flight = 0
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_a_served_model_with_one_command(echo_server, tmp_path, monkeypatch, backend):
    monkeypatch.setenv("ECHO_SERVER_KEY", "sk-never-written")
    results = tmp_path / "served.json"
    assert main(["eval", "--agent", "openai:echo-model", "--base_url", echo_server.base_url,
                 "--api_key_env", "ECHO_SERVER_KEY", "--concurrency", "3", "--num_envs", "6", "--backend", backend,
                 "--num_episodes", "12", "--results", str(results), "--disable_tqdm"]) == 0  # fmt: skip
    record = json.loads(results.read_text())
    assert record["summary"]["episodes"] == 12 and record["summary"]["success_rate"] == 1.0
    assert record["agent"] == "openai:echo-model" and record["base_url"] == echo_server.base_url
    assert record["task_indices"] == list(range(12))
    assert len(echo_server.requests) == 12 and {r["model"] for r in echo_server.requests} == {"echo-model"}
    assert all(r["temperature"] == 0 for r in echo_server.requests)
    assert set(echo_server.authorizations) == {"Bearer sk-never-written"}
    assert "sk-never-written" not in results.read_text()  # only the variable's name is recorded
    assert 2 <= echo_server.max_in_flight <= 3  # --concurrency bounds the requests in flight


def test_collect_from_a_served_teacher_and_resume(echo_server, tmp_path, capsys):
    output = tmp_path / "teacher.jsonl"
    argv = ["collect", "--agent", "openai:teacher", "--base_url", echo_server.base_url, "--temperature", "0",
            "--num_episodes", "6", "--output", str(output), "--disable_tqdm"]  # fmt: skip
    assert main(argv) == 0
    first = TrajectoryStore(output).load()
    assert len(first) == 6 and all(t.success for t in first)
    assert all(t.turns[0].action == t.task["target"] for t in first)
    assert len(echo_server.requests) == 6
    assert main(argv) == 0  # resumed: nothing left to ask
    assert len(echo_server.requests) == 6


def test_rise_metrics_sample_at_the_rise_temperature_with_the_last_attempt_in_context(echo_server, tmp_path):
    # The server answers right only at temperature 0: the main run (greedy) solves every task, the
    # RISE runs (the paper's T = 1.0) solve none, so each metric shows which temperature it used.
    results = tmp_path / "rise.json"
    argv = [
        "eval",
        "--agent",
        "openai:m",
        "--base_url",
        echo_server.base_url,
        "--num_episodes",
        "4",
        "--rise_metrics",
        "--rise_turns",
        "3",
        "--rise_samples",
        "2",
        "--results",
        str(results),
        "--disable_tqdm",
    ]
    assert main(argv) == 0  # fmt: skip
    record = json.loads(results.read_text())
    assert record["summary"]["success_rate"] == 1.0
    assert record["metrics"] == {"m1@t1": 0.0, "m2@t1": 0.0, "m2@t1_ties": 0.0, "m1@t3": 0.0, "m1@t3_ties": 0.0,
                                 "p1@t3": 0.0}  # fmt: skip
    sampled = [r for r in echo_server.requests if r["temperature"] == 1.0]
    assert len(sampled) == 4 * (3 + 2)  # per task: 3 sequential attempts and 2 parallel single-attempt episodes
    # LastAttempts(1): the first prompt, the last attempt and its feedback, never more.
    assert max(len(r["messages"]) for r in sampled) == 3
    echo_server.requests.clear()
    assert main([*argv[:-3], "--window", "0", "--disable_tqdm"]) == 0
    assert max(len(r["messages"]) for r in echo_server.requests) == 5  # all attempts kept


@pytest.mark.parametrize(
    ("flags", "messages", "prompt"),
    [
        (["--nat_prompt", "math_cot"], 1, r"Question: Repeat exactly: \S+\. Please solve the problem correctly\."),
        (["--nat_prompt", "strategyqa", "--nat_signal", "plain"], 3, r"Question: Repeat exactly: \S+"),
        (["--nat_prompt", "qa", "--nat_signal", "fine_grained"], 3, r"\[Correct\] Question: Repeat exactly: \S+\."),
        (
            ["--nat_prompt", "math", "--nat_position", "prefix", "--nat_tags", "good"],
            3,
            r"\[Good\] Question: Repeat exactly: \S+\.",
        ),
        # The mechanism check: the negatives' signal; a model trained inverted gets the same words as positive.
        (
            ["--nat_prompt", "math_cot", "--nat_signal", "negative"],
            1,
            r"Question: Repeat exactly: \S+\. Generate steps that incorrectly solve the problem\.",
        ),
        (
            ["--nat_prompt", "math_cot", "--nat_inverse"],
            1,
            r"Question: Repeat exactly: \S+\. Generate steps that incorrectly solve the problem\.",
        ),
        # RISE's one-shot opening: demo question (system), demo answer, then the framed task.
        (
            ["--one_shot", "builtin"],
            3,
            r"Great job! You've successfully answered the question\. Now, let's move on to the next one\.\n"
            r"Repeat exactly: \S+",
        ),
    ],
)
def test_nat_prompts_reach_the_served_model(echo_server, flags, messages, prompt):
    import re

    from mulligan.agents.nat_prompt import ACKNOWLEDGEMENT, INSTRUCTIONS

    assert main(["eval", "--agent", "openai:m", "--base_url", echo_server.base_url, "--num_episodes", "1",
                 *flags, "--disable_tqdm"]) == 0  # fmt: skip
    sent = echo_server.requests[0]["messages"]
    assert len(sent) == messages and re.fullmatch(prompt, sent[-1]["content"]), sent[-1]["content"]
    if "--one_shot" in flags:
        from mulligan.agents.one_shot import BUILTIN_DEMO

        assert sent[:2] == [
            {"role": "system", "content": BUILTIN_DEMO.question.strip()},
            {"role": "assistant", "content": BUILTIN_DEMO.answer},
        ]
    elif messages == 3:
        assert sent[1]["content"] == ACKNOWLEDGEMENT
    if "strategyqa" in flags:  # the plain (no-signal) instruction of StrategyQA
        assert sent[0]["content"] == INSTRUCTIONS["strategyqa"]["plain"]


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--agent", "openai:m"], "needs the server's address: pass --base_url"),
        (["--agent", "openai:", "--base_url", "http://127.0.0.1:9/v1"], "needs the served model's name"),
        (
            ["--agent", "openai:m", "--base_url", "http://127.0.0.1:9/v1", "--api_key_env", "sk-proj-abc123-secret"],
            "NAME of an environment variable",
        ),
        (
            ["--agent", "mulligan.agents.testing:EchoOracle", "--base_url", "http://127.0.0.1:9/v1"],
            "applies to served models",
        ),
        (["--agent", "openai:m", "--base_url", "http://127.0.0.1:9/v1", "--backend", "requests"], "stdlib or openai"),
        (["--nat_prompt", "gsm8k"], "--nat_prompt must be one of none, math, math_cot, hotpotqa, qa, strategyqa"),
        (["--one_shot", "builtin", "--nat_prompt", "math"], "--one_shot and --nat_prompt both rewrite"),
        (["--one_shot", "builtin", "--system_prompt", "Be brief."], "drop --system_prompt"),
        (["--one_shot", "/nonexistent/demo.json"], "No such file"),
    ],
)
def test_served_model_usage_errors_are_one_line(monkeypatch, capsys, argv, complaint):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert main(["eval", *argv, "--num_episodes", "1", "--disable_tqdm"]) == 2
    error = capsys.readouterr().err
    assert complaint in error and len(error.strip().splitlines()) == 1
    assert "abc123-secret" not in error  # a key passed by mistake is not echoed


# --------------------------------------------------------------------------- the real transformers serve


@pytest.fixture(scope="module")
def transformers_server(tmp_path_factory):
    """``transformers serve`` on 127.0.0.1 with the tiny model preloaded (skipped without its extras)."""
    from transformers_server import require_serving, serve

    from mulligan.agents.tiny import save_tiny_model

    executable = require_serving()
    model = str(save_tiny_model(tmp_path_factory.mktemp("tiny-served") / "tiny"))
    with serve(executable, model, tmp_path_factory.mktemp("serve-log")) as base_url:
        yield model, base_url


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_against_transformers_serve_end_to_end(transformers_server, tmp_path, backend):
    model, base_url = transformers_server
    results, output = tmp_path / "served.json", tmp_path / "served.jsonl"
    assert main(["eval", "--env_id", "Mulligan/Echo-v0", "--agent", f"openai:{model}", "--base_url", base_url,
                 "--backend", backend, "--concurrency", "2", "--num_episodes", "3", "--max_attempts", "2",
                 "--max_new_tokens", "8", "--output", str(output), "--results", str(results),
                 "--disable_tqdm"]) == 0  # fmt: skip
    record = json.loads(results.read_text())
    assert record["summary"]["episodes"] == 3 and record["task_indices"] == [0, 1, 2]
    trajectories = TrajectoryStore(output).load()
    assert len(trajectories) == 3
    for trajectory in trajectories:
        for turn in trajectory.turns:  # the real server's replies, as the agent recorded them
            assert isinstance(turn.action, str)
            assert turn.info is not None
        assert 1 <= len(trajectory.turns) <= 2


def test_transformers_serve_renders_and_decodes_as_the_local_model(transformers_server):
    # The server applies the model's own chat template (same prompt length in tokens) and, greedy,
    # returns what HFAgent returns for the same conversation.
    from transformers import AutoTokenizer

    from mulligan.agents.base import AgentInput
    from mulligan.agents.hf import HFAgent
    from mulligan.agents.openai_chat import OpenAIChatAgent

    model, base_url = transformers_server
    conversations = [
        [{"role": "user", "content": "Repeat exactly: piano"}],
        [{"role": "user", "content": "Repeat exactly: ocean"}, {"role": "assistant", "content": "sea"},
         {"role": "user", "content": "Wrong. Try again."}],
    ]  # fmt: skip
    inputs = [AgentInput(messages=c) for c in conversations]
    served = OpenAIChatAgent(base_url, model, temperature=0.0, max_tokens=8).act(inputs)
    local = HFAgent(model, temperature=0.0, max_new_tokens=8).act(inputs)
    tokenizer = AutoTokenizer.from_pretrained(model)
    for conversation, remote, mine in zip(conversations, served, local, strict=True):
        prompt = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
        prompt_ids = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
        assert remote.metadata["usage"]["prompt_tokens"] == len(prompt_ids)
        assert remote.metadata["usage"]["completion_tokens"] <= 8
        assert remote.text == mine.text


@pytest.mark.parametrize("backend", BACKENDS)
def test_transformers_serve_refuses_a_prefilled_answer_with_a_clear_error(transformers_server, backend):
    # transformers serve always opens a new assistant turn: it cannot continue CORGI's primer, so a
    # prefilled request fails and says which servers can, instead of answering unprimed.
    from mulligan.agents.base import AgentInput
    from mulligan.agents.openai_chat import OpenAIChatAgent, OpenAIChatError

    model, base_url = transformers_server
    agent = OpenAIChatAgent(base_url, model, temperature=0.0, max_tokens=4, prefill_response=True, backend=backend)
    primed = AgentInput(messages=[{"role": "user", "content": "Go on."}], info={"response_prefix": "- Output: The"})
    with pytest.raises(OpenAIChatError, match="continue_final_message") as refused:
        agent.act([primed])
    assert refused.value.status in (400, 422) and "vllm serve" in str(refused.value)
    # Without a primer in the info the same agent answers as usual.
    assert isinstance(agent.act([AgentInput(messages=primed.messages)])[0].text, str)
