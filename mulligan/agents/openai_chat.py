"""``OpenAIChatAgent``: a served model behind any OpenAI-compatible chat endpoint, as a teacher.

NAT (arXiv 2402.11651) and RISE (arXiv 2407.18219) collect teacher trajectories from GPT-3.5; this
agent does the same with any server that speaks ``POST {base_url}/chat/completions``: OpenAI, a
local vLLM or llama.cpp server, a hosted provider. It uses only the standard library
(``urllib`` and a thread pool), so it adds no dependency.

* ``base_url`` is what the OpenAI client calls it, including the version prefix, e.g.
  ``http://127.0.0.1:8000/v1``.
* The key is read from the environment variable ``api_key_env`` at each request and sent as
  ``Authorization: Bearer ...``; when the variable is unset no header is sent (local servers need
  none). The key never appears in errors.
* ``concurrency`` requests run at once. A request that fails with HTTP 429 or 5xx, a timeout or a
  dropped connection is retried up to ``max_retries`` times, waiting ``backoff * 2**k`` seconds
  (at most ``max_backoff``; a ``Retry-After`` header is honoured within that cap). Other HTTP errors
  (400, 401, 404, ...) fail at once. Failures raise :class:`OpenAIChatError` naming the URL, the
  status and the server's message.
* ``timeout`` bounds each socket operation (connecting, and every read of the response), as
  ``urllib`` does; a server that sends nothing for ``timeout`` seconds fails the attempt.

Actions carry the text (cut at the first stop string, which servers usually do already),
``metadata["messages"]`` (exactly what was sent), the finish reason and token usage, and with
``logprobs=True`` the per-token log-probabilities the server reports. Token ids are unknown
(``None``): the server owns the tokenizer and the chat template.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPException
from typing import Any

from mulligan.agents.base import Action, Agent, AgentInput, Message
from mulligan.agents.context import KeepAll

#: HTTP statuses worth retrying: rate limits and server-side failures.
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
#: The OpenAI API accepts at most this many stop strings; the rest are applied client-side.
MAX_SERVER_STOPS = 4


class OpenAIChatError(RuntimeError):
    """A chat-completions request failed; ``status`` is the HTTP status (``None`` for network errors)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    """An attempt failed in a way that another attempt may fix."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class OpenAIChatAgent(Agent):
    """Any OpenAI-compatible chat-completions endpoint as an :class:`~mulligan.agents.base.Agent`.

    See the module docstring for the key, retries and timeouts.

    Args:
        base_url: The API root including its version, e.g. ``"http://127.0.0.1:8000/v1"``.
        model: The served model's name.
        api_key_env: Environment variable holding the API key (unset: no ``Authorization`` header).
        concurrency: Requests in flight at once.
        max_retries: Retries after the first attempt of a request.
        backoff: First retry delay in seconds; it doubles on each retry.
        max_backoff: Longest single delay in seconds.
        timeout: Seconds each socket operation may take.
        temperature: Sampling temperature sent to the server.
        top_p: Nucleus mass sent to the server.
        max_tokens: Completion length cap sent to the server.
        stop: Stop strings for every env, merged with each input's own.
        system_prompt: A system message placed first when the conversation has none.
        context: A context policy from :mod:`mulligan.agents.context` (tokens estimated as 4 characters).
        seed: Sent as the request's ``seed`` (servers that support it sample reproducibly).
        logprobs: Ask for the completion tokens' log-probabilities.
        supports_n: Whether the server honours ``n`` (several choices per request); when ``False``,
            :meth:`sample` sends one request per sample.
        extra_body: Extra JSON fields for every request (e.g. vLLM's ``top_k``).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 8,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float = 120.0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int = 512,
        stop: Sequence[str] = (),
        system_prompt: str | None = None,
        context: Any = None,
        seed: int | None = None,
        logprobs: bool = False,
        supports_n: bool = True,
        extra_body: Mapping[str, Any] | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if backoff < 0 or max_backoff < 0:
            raise ValueError("backoff and max_backoff must be >= 0")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if isinstance(stop, str):
            raise ValueError("stop must be a sequence of strings, not a str")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.stop = tuple(stop)
        self.system_prompt = system_prompt
        self.context = context if context is not None else KeepAll()
        self.seed = seed
        self.logprobs = logprobs
        self.supports_n = supports_n
        self.extra_body = dict(extra_body or {})
        self._jitter = random.Random()

    # ------------------------------------------------------------------ public API
    def render_messages(self, agent_input: AgentInput) -> list[Message]:
        """The messages sent for ``agent_input``: system prompt added, context policy applied."""
        messages = [{"role": m["role"], "content": m["content"]} for m in agent_input.messages]
        if not messages:
            raise ValueError("AgentInput.messages is empty; an agent needs at least the first observation")
        if self.system_prompt is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return list(self.context(messages, None))

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """One action per input; requests run ``concurrency`` at a time."""
        return [group[0] for group in self.sample(inputs, 1)]

    def sample(self, inputs: Sequence[AgentInput], num_samples: int) -> list[list[Action]]:
        """``num_samples`` actions per input, using the API's ``n`` when the server supports it."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        inputs = list(inputs)
        if not inputs:
            return []
        prepared = [(self.render_messages(x), self._stops_for(x)) for x in inputs]
        per_request = num_samples if self.supports_n else 1
        jobs = []  # (input index, number of choices asked)
        for i in range(len(inputs)):
            left = num_samples
            while left:
                jobs.append((i, min(per_request, left)))
                left -= jobs[-1][1]
        groups: list[list[Action]] = [[] for _ in inputs]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs))) as pool:
            answers = list(pool.map(lambda job: self._complete(*prepared[job[0]], job[1]), jobs))
        for (i, _), actions in zip(jobs, answers, strict=True):
            groups[i].extend(actions)
        # Some servers return fewer choices than asked for; top up with further requests.
        for i, group in enumerate(groups):
            while len(group) < num_samples:
                more = self._complete(*prepared[i], num_samples - len(group))
                if not more:
                    raise OpenAIChatError(f"{self.url} returned no choices for input {i}")
                group.extend(more)
            del group[num_samples:]
        return groups

    # ------------------------------------------------------------------ requests
    def _stops_for(self, agent_input: AgentInput) -> tuple[str, ...]:
        if isinstance(agent_input.stop, str):
            raise ValueError("AgentInput.stop must be a sequence of strings, not a str")
        return tuple(dict.fromkeys(s for s in (*self.stop, *agent_input.stop) if s))

    def _complete(self, messages: list[Message], stops: tuple[str, ...], n: int) -> list[Action]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }
        if n != 1:
            body["n"] = n
        if stops:
            body["stop"] = list(stops[:MAX_SERVER_STOPS])
        if self.seed is not None:
            body["seed"] = self.seed
        if self.logprobs:
            body["logprobs"] = True
        body.update(self.extra_body)
        response = self._post(body)
        choices = response.get("choices")
        if not isinstance(choices, list):
            raise OpenAIChatError(f"{self.url} answered without a 'choices' list: {_excerpt(json.dumps(response))}")
        actions = []
        for choice in choices:
            message = choice.get("message") or {}
            text = message.get("content") or ""
            cut = [text.find(s) for s in stops if s in text]
            if cut:
                text = text[:min(cut)]
            logprobs = None
            content = (choice.get("logprobs") or {}).get("content") if self.logprobs else None
            if content:
                logprobs = [float(token["logprob"]) for token in content]
            actions.append(Action(
                text=text,
                logprobs=logprobs,
                metadata={
                    "messages": messages,
                    "finish_reason": choice.get("finish_reason"),
                    "usage": response.get("usage"),
                    "model": response.get("model", self.model),
                },
            ))
        return actions

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode("utf-8")
        last_error = ""
        for attempt in range(self.max_retries + 1):
            try:
                return self._attempt(data)
            except _Retryable as err:
                last_error = str(err)
                if attempt == self.max_retries:
                    break
                delay = min(self.max_backoff, self.backoff * 2**attempt)
                if err.retry_after is not None:
                    delay = min(self.max_backoff, max(delay, err.retry_after))
                time.sleep(delay + self._jitter.uniform(0, 0.1 * delay))
        raise OpenAIChatError(
            f"POST {self.url} failed after {self.max_retries + 1} attempts; last error: {last_error}"
        )

    def _attempt(self, data: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            detail = _excerpt(err.read().decode("utf-8", "replace"))
            if err.code in RETRYABLE_STATUS:
                raise _Retryable(f"HTTP {err.code}: {detail}", _retry_after(err.headers), err.code) from err
            hint = {401: " (check the key in $" + str(self.api_key_env) + ")",
                    404: " (check that base_url ends with the API version, e.g. /v1, and the model name)"}
            raise OpenAIChatError(
                f"POST {self.url} failed with HTTP {err.code}{hint.get(err.code, '')}: {detail}", err.code
            ) from err
        except TimeoutError as err:
            raise _Retryable(f"no response within the {self.timeout} s timeout") from err
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError | socket.timeout):
                raise _Retryable(f"no response within the {self.timeout} s timeout") from err
            raise _Retryable(f"connection failed: {err.reason}") from err
        except (ConnectionError, HTTPException) as err:
            raise _Retryable(f"connection failed: {err!r}") from err
        try:
            parsed = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            text = _excerpt(raw.decode("utf-8", "replace"))
            raise OpenAIChatError(f"{self.url} returned a body that is not JSON: {text}") from err
        if not isinstance(parsed, dict):
            raise OpenAIChatError(f"{self.url} returned JSON that is not an object: {_excerpt(str(parsed))}")
        return parsed


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _excerpt(text: str, limit: int = 500) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
