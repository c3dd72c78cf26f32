"""``OpenAIChatAgent``: a served model behind any OpenAI-compatible chat endpoint, as a teacher.

NAT (arXiv 2402.11651) and RISE (arXiv 2407.18219) collect teacher trajectories from GPT-3.5; this
agent does the same with any server that speaks ``POST {base_url}/chat/completions``: OpenAI, a
local vLLM or llama.cpp server, a hosted provider. It uses only the standard library
(``http.client`` and a thread pool), so it adds no dependency.

* ``base_url`` is what the OpenAI client calls it, including the version prefix, e.g.
  ``http://127.0.0.1:8000/v1``.
* The key is read from the environment variable ``api_key_env`` at each request and sent as
  ``Authorization: Bearer ...``; when the variable is unset no header is sent (local servers need
  none). The key never appears in errors.
* ``concurrency`` requests run at once. A request that fails with HTTP 429 or 5xx, a missed
  deadline or a dropped connection is retried up to ``max_retries`` times, waiting
  ``backoff * 2**k`` seconds (at most ``max_backoff``). A ``Retry-After`` header (seconds or an HTTP
  date) is honoured up to ``max_retry_after`` seconds; a server that asks for a longer wait fails
  the request at once, saying so. Other HTTP errors (400, 401, 404, ...) fail at once. Failures
  raise :class:`OpenAIChatError` naming the URL, the status and the server's message.

Hostile or broken servers. The server is not trusted any more than the model's text is:

* ``timeout`` is an overall deadline for one attempt (connecting, sending, waiting, reading the
  whole reply), not per socket read: a server that drips one byte a second is cut off when it
  passes. One request therefore takes at most about ``(max_retries + 1) * timeout`` plus the waits.
* A reply larger than ``max_response_bytes`` is refused (as soon as its ``Content-Length`` says so,
  else when the running total passes the cap), so an endless body cannot exhaust memory.
* The ``http_proxy``/``https_proxy``/``no_proxy`` environment variables are honoured (HTTP proxies).
* Redirects are followed only within the origin of ``base_url`` (same scheme, host and port), by
  POSTing the same body and headers again (at most :data:`MAX_REDIRECTS` times). A redirect to
  another origin is an error: the request, and the key with it, is never sent elsewhere, and a
  POST never becomes a GET.
* A reply that is not a chat completion (``{"choices": [1]}``, a numeric ``content``, a missing
  ``message``) is an :class:`OpenAIChatError` that names the offending field, never an
  ``AttributeError`` or a silently empty action.

What the model sees is decided by :meth:`~mulligan.agents.base.Agent.prepare_context` (the system
prompt and the context policy, applied in one place for every agent; tokens are estimated as 4
characters). Actions carry the text (cut at the first stop string, which servers usually do
already), ``context`` (which input messages were sent), ``metadata["messages"]`` (exactly what was
sent), the finish reason and token usage, and with ``logprobs=True`` the per-token
log-probabilities the server reports. Token ids are unknown (``None``): the server owns the
tokenizer and the chat template.

Tool calls. For an env in ``action_format="tools"`` (:mod:`mulligan.envs.tools`) the request
carries ``tools`` and the conversation is sent as tool messages
(:func:`mulligan.agents.tools.tool_conversation`: each call an assistant message with
``tool_calls``, each observation of a call a ``tool`` message). The tools are the agent's
``tools=`` argument when given; otherwise, for an input whose ``info`` comes from an env in tools
mode (it has ``tool_call_id``), those of its registered env (``mulligan.envs.registration.env_tools``),
so ``mulligan eval --agent openai:... --env_kwargs '{"action_format": "tools"}'`` needs nothing
else. A reply with ``tool_calls`` becomes the action text
``{"role": "assistant", "content": ..., "tool_calls": [...]}`` (JSON), which the env reads (it
runs the first call); a reply without calls is its text, which the env scores as an invalid call.

Prefilled answers. With ``prefill_response=True``, an input whose env offers
``info["response_prefix"]`` (CORGI's primer) is sent with the prefix as a final assistant message
and vLLM's ``"continue_final_message": true, "add_generation_prompt": false``, so the server's model
continues the prefix as :class:`~mulligan.agents.hf.HFAgent` does; the action's ``text`` is the
continuation and ``prefill`` the prefix. ``vllm serve`` supports this; OpenAI's API and ``transformers
serve`` refuse the fields (HTTP 400/422), which raises an :class:`OpenAIChatError` that says so
rather than silently answering unprimed.

Backends. ``backend="stdlib"`` (the default, no dependency) opens one connection per request
attempt. ``backend="openai"`` sends the same requests through the ``openai`` SDK where it is
installed (``pip install openai``): one ``AsyncOpenAI`` client per agent, driven on a private event
loop, so connections are pooled and reused across requests and calls. Retries, backoff and the
``Retry-After`` cap stay mulligan's (the SDK's own retries are off), and replies are parsed by the
same code, so malformed replies fail the same way. What differs, by design of the SDK's HTTP layer:

* Deadline: the same overall deadline per attempt, enforced by cancelling the request
  (``asyncio.wait_for``) instead of shutting a socket down.
* Reply cap: a success reply is read in chunks and refused past ``max_response_bytes`` as above;
  the body of an HTTP *error* reply is read whole by the SDK (only the deadline bounds it).
* Redirects: never followed. Any 3xx is an error naming the status (the stdlib client re-POSTs
  within the origin); so the request and the key never go elsewhere either.
* Proxies: the SDK's HTTP client honours the same proxy environment variables.
* The SDK adds its own ``User-Agent``/``X-Stainless-*`` headers; the key is still read from
  ``api_key_env`` at each request, and no ``Authorization`` header is sent when it is unset.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import email.utils
import http.client
import json
import math
import os
import random
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from mulligan.agents.base import Action, Agent, AgentInput, ContextRecord, Message, response_prefix
from mulligan.agents.tools import action_from_tool_calls, tool_conversation, tools_for_input

#: HTTP statuses worth retrying: rate limits and server-side failures.
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
#: Redirect statuses; followed only within the origin of ``base_url``.
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
#: Redirects followed within one attempt before giving up.
MAX_REDIRECTS = 5
#: The OpenAI API accepts at most this many stop strings; the rest are applied client-side.
MAX_SERVER_STOPS = 4
#: Bytes of an error reply read for its message; the rest is not read.
_ERROR_BODY_LIMIT = 64 * 1024
_READ_CHUNK = 64 * 1024
#: The HTTP clients an agent can send its requests with.
BACKENDS = ("stdlib", "openai")
#: Request fields the SDK's ``chat.completions.create`` takes by name; the rest go in ``extra_body``.
_SDK_FIELDS = frozenset({"model", "messages", "temperature", "top_p", "max_tokens", "n", "stop", "seed", "logprobs"})


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

    See the module docstring for the key, retries, deadlines and what a hostile server can do.

    Args:
        base_url: The API root including its version, e.g. ``"http://127.0.0.1:8000/v1"``.
        model: The served model's name.
        api_key_env: Environment variable holding the API key (unset: no ``Authorization`` header).
        concurrency: Requests in flight at once.
        max_retries: Retries after the first attempt of a request.
        backoff: First retry delay in seconds; it doubles on each retry.
        max_backoff: Longest computed retry delay in seconds.
        max_retry_after: Longest ``Retry-After`` wait honoured, in seconds; a longer one fails the request.
        timeout: Seconds one attempt may take in all (connect, send, wait, read the whole reply).
        max_response_bytes: Largest reply accepted, in bytes.
        temperature: Sampling temperature sent to the server.
        top_p: Nucleus mass sent to the server.
        max_tokens: Completion length cap sent to the server.
        stop: Stop strings for every env, merged with each input's own.
        system_prompt: A system message placed first when the conversation has none.
        context: A context policy from :mod:`mulligan.agents.context` (tokens estimated as 4 characters).
        seed: Sent as the request's ``seed`` (servers that support it sample reproducibly) when the
            input carries no seed of its own (:attr:`~mulligan.agents.base.AgentInput.seed`).
        logprobs: Ask for the completion tokens' log-probabilities.
        supports_n: Whether the server honours ``n`` (several choices per request); when ``False``,
            :meth:`sample` sends one request per sample.
        extra_body: Extra JSON fields for every request (e.g. vLLM's ``top_k``).
        backend: ``"stdlib"`` (standard library, the default) or ``"openai"`` (the ``openai`` SDK,
            pooled connections; see the module docstring for what differs).
        tools: Tool schemas (OpenAI format, e.g. ``env.unwrapped.tools``) sent with every request;
            ``None`` (default): an input's env's own tools when that env is in tools mode (see the
            module docstring), none otherwise.
        prefill_response: Start each answer with the env's ``info["response_prefix"]`` where it
            offers one (CORGI's primer): see "Prefilled answers" in the module docstring.
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
        max_retry_after: float = 60.0,
        timeout: float = 120.0,
        max_response_bytes: int = 64 * 2**20,
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
        backend: str = "stdlib",
        tools: Sequence[Mapping[str, Any]] | None = None,
        prefill_response: bool = False,
    ):
        if not isinstance(prefill_response, bool):
            raise ValueError(f"prefill_response must be True or False, got {prefill_response!r}")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if not (backoff >= 0 and max_backoff >= 0 and max_retry_after >= 0):
            raise ValueError("backoff, max_backoff and max_retry_after must be >= 0 seconds")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout}")
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be >= 1, got {max_response_bytes}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if isinstance(stop, str):
            raise ValueError("stop must be a sequence of strings, not a str")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "openai":
            try:
                import openai  # noqa: F401
            except ImportError as err:
                raise ValueError("backend='openai' needs the openai package: pip install openai") from err
        self.backend = backend
        self.base_url = base_url.rstrip("/")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.stop = tuple(stop)
        self.system_prompt = system_prompt
        self.context = context
        self.seed = seed
        self.logprobs = logprobs
        self.supports_n = supports_n
        self.extra_body = dict(extra_body or {})
        if tools is not None and (isinstance(tools, str | Mapping) or not all(isinstance(t, Mapping) for t in tools)):
            raise ValueError("tools must be a list of OpenAI tool schemas (dicts), e.g. env.unwrapped.tools")
        self.tools = None if tools is None else [dict(t) for t in tools]
        self.prefill_response = prefill_response
        self._jitter = random.Random()
        self._sdk_lock = threading.Lock()
        self._sdk_loop: asyncio.AbstractEventLoop | None = None
        self._sdk_client: Any = None

    # ------------------------------------------------------------------ public API
    def render_messages(self, agent_input: AgentInput) -> list[Message]:
        """The messages sent for ``agent_input``: :meth:`~mulligan.agents.base.Agent.prepare_messages`."""
        return self.prepare_messages(agent_input.messages)

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
        prepared = [self._prepare(x) for x in inputs]
        # The rollout's per-input seed (base.AgentInput.seed) makes a resumed run ask exactly what
        # an uninterrupted one asked; each further request for the same input shifts it by the
        # number of samples already asked, so that one-sample requests do not repeat each other.
        seeds = [x.seed if x.seed is not None else self.seed for x in inputs]
        per_request = num_samples if self.supports_n else 1
        jobs = []  # (input index, number of choices asked, samples asked before for that input)
        for i in range(len(inputs)):
            asked = 0
            while asked < num_samples:
                jobs.append((i, min(per_request, num_samples - asked), asked))
                asked += jobs[-1][1]

        def run(job: tuple[int, int, int]) -> list[Action]:
            i, n, asked = job
            return self._complete(*prepared[i], n=n, seed=None if seeds[i] is None else seeds[i] + asked)

        groups: list[list[Action]] = [[] for _ in inputs]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs))) as pool:
            answers = list(pool.map(run, jobs))
        for (i, _, _), actions in zip(jobs, answers, strict=True):
            groups[i].extend(actions)
        # Some servers return fewer choices than asked for; top up with further requests.
        for i, group in enumerate(groups):
            while len(group) < num_samples:
                more = run((i, num_samples - len(group), num_samples + len(group)))
                if not more:
                    raise OpenAIChatError(f"{self.url} returned no choices for input {i}")
                group.extend(more)
            del group[num_samples:]
        return groups

    # ------------------------------------------------------------------ requests
    def prefill_for(self, agent_input: AgentInput) -> str | None:
        """The text this agent starts its answer to ``agent_input`` with (``None``: no prefill)."""
        return response_prefix(agent_input) if self.prefill_response else None

    def _prepare(self, agent_input: AgentInput) -> tuple[Any, ...]:
        """``(messages, context record, stops, tools, prefill)`` of one input's request."""
        messages, record = self.prepare_context(agent_input.messages)
        tools = self.tools if self.tools is not None else tools_for_input(agent_input)
        prefill = self.prefill_for(agent_input)
        if tools:
            if prefill is not None:
                raise ValueError(
                    "prefill_response cannot prefill a tool call (the env is in tools mode); "
                    "pass prefill_response=False or use the env's text action format"
                )
            messages = tool_conversation(messages)
        return messages, record, self._stops_for(agent_input), tools or None, prefill

    def _stops_for(self, agent_input: AgentInput) -> tuple[str, ...]:
        if isinstance(agent_input.stop, str):
            raise ValueError("AgentInput.stop must be a sequence of strings, not a str")
        return tuple(dict.fromkeys(s for s in (*self.stop, *agent_input.stop) if s))

    def _complete(
        self,
        messages: list[Message],
        record: ContextRecord | None,
        stops: tuple[str, ...],
        tools: list[dict[str, Any]] | None,
        prefill: str | None,
        *,
        n: int,
        seed: int | None,
    ) -> list[Action]:
        sent = messages if prefill is None else [*messages, {"role": "assistant", "content": prefill}]
        body: dict[str, Any] = {
            "model": self.model,
            "messages": sent,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }
        if n != 1:
            body["n"] = n
        if stops:
            body["stop"] = list(stops[:MAX_SERVER_STOPS])
        if seed is not None:
            body["seed"] = seed
        if self.logprobs:
            body["logprobs"] = True
        if tools:
            body["tools"] = tools
        if prefill is not None:
            # vLLM's chat extension: render the last (assistant) message open, without a new
            # generation prompt, and continue it; the reply's content is the continuation only.
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        body.update(self.extra_body)
        try:
            response = self._post(body)
        except OpenAIChatError as err:
            if prefill is not None and err.status in (400, 422):
                raise OpenAIChatError(
                    f"{err} -- the server refused a prefilled answer: prefill_response=True needs a server "
                    "that continues a final assistant message (vLLM's continue_final_message, e.g. `vllm "
                    "serve`); OpenAI's API and `transformers serve` do not. Pass prefill_response=False, or "
                    "serve the model with vLLM",
                    err.status,
                ) from err
            raise
        actions = []
        for index, (content, logprobs, finish_reason, tool_calls) in enumerate(self._parse_choices(response)):
            if tool_calls:
                text = action_from_tool_calls(content, tool_calls)
            else:
                cut = [content.find(s) for s in stops if s in content]
                text = content[: min(cut)] if cut else content
            metadata = {
                "messages": sent,
                "finish_reason": finish_reason,
                "usage": response.get("usage"),
                "model": response.get("model", self.model),
                "choice": index,
            }
            actions.append(Action(text=text, logprobs=logprobs, metadata=metadata, context=record, prefill=prefill))
        return actions

    def _parse_choices(self, response: dict[str, Any]) -> list[tuple[str, list[float] | None, Any, list[dict]]]:
        """(text, logprobs, finish reason, tool calls) of each choice; a malformed reply names the bad field."""

        def malformed(what: str) -> OpenAIChatError:
            return OpenAIChatError(
                f"{self.url} returned a reply that is not a chat completion: {what}; reply: "
                + _excerpt(json.dumps(response))
            )

        choices = response.get("choices")
        if not isinstance(choices, list):
            raise malformed("there is no 'choices' list")
        parsed = []
        for k, choice in enumerate(choices):
            if not isinstance(choice, dict):
                raise malformed(f"choices[{k}] is not an object")
            message = choice.get("message")
            if not isinstance(message, dict):
                raise malformed(f"choices[{k}].message is missing or not an object")
            tool_calls = message.get("tool_calls") or []
            if not isinstance(tool_calls, list) or not all(
                isinstance(c, dict) and isinstance(c.get("function"), dict) for c in tool_calls
            ):
                raise malformed(f"choices[{k}].message.tool_calls is not a list of function calls")
            text = message.get("content")
            if text is None and tool_calls:
                text = ""  # A reply that only calls tools has no content.
            if not isinstance(text, str):
                found = "missing" if "content" not in message else f"a {type(text).__name__}"
                raise malformed(f"choices[{k}].message.content is {found}, not a string")
            logprobs = None
            if self.logprobs and choice.get("logprobs") is not None:
                tokens = choice["logprobs"].get("content") if isinstance(choice["logprobs"], dict) else None
                if tokens is not None:
                    if not isinstance(tokens, list):
                        raise malformed(f"choices[{k}].logprobs.content is not a list")
                    logprobs = []
                    for t, token in enumerate(tokens):
                        value = token.get("logprob") if isinstance(token, dict) else None
                        if isinstance(value, bool) or not isinstance(value, int | float):
                            raise malformed(f"choices[{k}].logprobs.content[{t}].logprob is not a number")
                        logprobs.append(float(value))
            parsed.append((text, logprobs, choice.get("finish_reason"), tool_calls))
        return parsed

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode("utf-8")
        last_error = ""
        for attempt in range(self.max_retries + 1):
            try:
                return self._sdk_attempt(body) if self.backend == "openai" else self._attempt(data)
            except _Retryable as err:
                last_error = str(err)
                if attempt == self.max_retries:
                    break
                delay = min(self.max_backoff, self.backoff * 2**attempt)
                if err.retry_after is not None:
                    if err.retry_after > self.max_retry_after:
                        raise OpenAIChatError(
                            f"POST {self.url} failed with HTTP {err.status} and Retry-After: {err.retry_after:.0f} s, "
                            f"longer than max_retry_after={self.max_retry_after} s (raise it to wait that long): "
                            f"{last_error}",
                            err.status,
                        ) from None
                    delay = max(delay, err.retry_after)
                time.sleep(delay + self._jitter.uniform(0, 0.1 * delay))
        attempts = f"{self.max_retries + 1} attempt" + ("s" if self.max_retries else "")
        raise OpenAIChatError(f"POST {self.url} failed after {attempts}; last error: {last_error}")

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _attempt(self, data: bytes) -> dict[str, Any]:
        """One attempt: POST, following same-origin redirects, all within one deadline."""
        deadline = time.monotonic() + self.timeout
        headers = self._headers()
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            status, reply_headers, raw = self._exchange(url, data, headers, deadline)
            if status in REDIRECT_STATUS:
                location = reply_headers.get("Location")
                target = urljoin(url, location) if location else ""
                if not target or _origin(target) != _origin(self.url):
                    raise OpenAIChatError(
                        f"POST {self.url} answered with a redirect (HTTP {status}) to "
                        f"{_excerpt(_without_credentials(target) or 'nowhere', 200)}, another origin; the request "
                        "and its key are not sent there (set base_url to the address that answers)",
                        status,
                    )
                url = target
                continue
            if 200 <= status < 300:
                return self._decode(raw)
            detail = _excerpt(raw.decode("utf-8", "replace"))
            if status in RETRYABLE_STATUS:
                raise _Retryable(f"HTTP {status}: {detail}", _retry_after(reply_headers.get("Retry-After")), status)
            raise OpenAIChatError(f"POST {url} failed with HTTP {status}{self._hint(status)}: {detail}", status)
        raise OpenAIChatError(f"POST {self.url} was redirected more than {MAX_REDIRECTS} times within its origin")

    def _exchange(
        self, url: str, data: bytes, headers: Mapping[str, str], deadline: float
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """Send one POST to ``url`` and read the reply, all before ``deadline``; no redirects followed."""
        parts = urlsplit(url)
        late = f"no complete reply within timeout={self.timeout} s (the deadline of one attempt)"
        connection, path, proxy_headers = _connection_for(parts, self.timeout)
        expired = threading.Event()
        watchdog = None
        try:
            connection.timeout = max(0.001, deadline - time.monotonic())
            connection.connect()  # one socket operation, bounded by the socket timeout
            # A per-read timeout does not bound a server that drips bytes: this watchdog shuts the
            # socket down when the deadline passes, which ends any blocked read at once.
            watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _abort, (connection.sock, expired))
            watchdog.daemon = True
            watchdog.start()
            connection.request("POST", path, body=data, headers={**headers, **proxy_headers})
            response = connection.getresponse()
            ok = 200 <= response.status < 300
            raw = self._read_body(response, url, self.max_response_bytes if ok else _ERROR_BODY_LIMIT, ok)
            if expired.is_set() or time.monotonic() > deadline:
                raise TimeoutError
            return response.status, response.headers, raw
        except OpenAIChatError:
            raise
        except (OSError, http.client.HTTPException) as err:  # TimeoutError is an OSError
            if expired.is_set() or time.monotonic() >= deadline or isinstance(err, TimeoutError):
                raise _Retryable(late) from err
            raise _Retryable(f"connection failed: {err!r}") from err
        finally:
            if watchdog is not None:
                watchdog.cancel()
            connection.close()

    @staticmethod
    def _read_body(response: http.client.HTTPResponse, url: str, limit: int, enforce: bool) -> bytes:
        """The reply body, at most ``limit`` bytes; past the cap an error when ``enforce`` (else cut)."""
        declared = response.getheader("Content-Length", "")
        if enforce and declared.strip().isdigit() and int(declared) > limit:
            raise OpenAIChatError(f"{url} announced a {int(declared)}-byte reply, more than max_response_bytes={limit}")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = response.read(min(_READ_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit and enforce:
            raise OpenAIChatError(f"{url} sent a reply of more than max_response_bytes={limit} bytes")
        return b"".join(chunks)[:limit]

    # ------------------------------------------------------------------ the openai SDK backend
    def _sdk(self) -> tuple[asyncio.AbstractEventLoop, Any]:
        """The agent's event loop (on a daemon thread) and ``AsyncOpenAI`` client, made on first use."""
        with self._sdk_lock:
            if self._sdk_loop is None:
                import openai

                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="openai-chat-loop", daemon=True).start()
                self._sdk_client = openai.AsyncOpenAI(
                    base_url=self.base_url,
                    # Never sent: every request carries its own Authorization header (the key read
                    # from api_key_env at that moment) or explicitly omits it.
                    api_key="unused",
                    max_retries=0,  # mulligan retries (same statuses, backoff and Retry-After cap)
                    timeout=self.timeout,
                    http_client=openai.DefaultAsyncHttpxClient(follow_redirects=False),
                )
                self._sdk_loop = loop
            return self._sdk_loop, self._sdk_client

    def close(self) -> None:
        """Close the SDK backend's connections and stop its event loop (a no-op for ``stdlib``)."""
        with self._sdk_lock:
            loop, client = self._sdk_loop, self._sdk_client
            self._sdk_loop = self._sdk_client = None
        if loop is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=5)
            loop.call_soon_threadsafe(loop.stop)

    def _sdk_attempt(self, body: dict[str, Any]) -> dict[str, Any]:
        """One attempt through the SDK, cancelled when it passes ``timeout`` (the overall deadline)."""
        loop, client = self._sdk()

        async def bounded() -> dict[str, Any]:
            try:
                return await asyncio.wait_for(self._sdk_exchange(client, body), self.timeout)
            except asyncio.TimeoutError:
                raise _Retryable(
                    f"no complete reply within timeout={self.timeout} s (the deadline of one attempt)"
                ) from None

        future = asyncio.run_coroutine_threadsafe(bounded(), loop)
        try:
            # The coroutine ends by the deadline; the margin only matters if close() stopped the loop.
            return future.result(timeout=self.timeout + 30)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise _Retryable("the SDK backend's event loop did not answer (was the agent closed?)") from None

    async def _sdk_exchange(self, client: Any, body: dict[str, Any]) -> dict[str, Any]:
        import openai

        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        # An explicit header (or its explicit omission) is what the SDK sends, whatever its own config.
        headers = {"Authorization": f"Bearer {key}" if key else openai.Omit()}
        named = {k: v for k, v in body.items() if k in _SDK_FIELDS}
        extra = {k: v for k, v in body.items() if k not in _SDK_FIELDS}
        create = client.chat.completions.with_streaming_response.create
        try:
            async with create(**named, extra_body=extra or None, extra_headers=headers) as response:
                declared = response.headers.get("content-length", "")
                limit = self.max_response_bytes
                if declared.strip().isdigit() and int(declared) > limit:
                    raise OpenAIChatError(
                        f"{self.url} announced a {int(declared)}-byte reply, more than max_response_bytes={limit}"
                    )
                chunks, size = [], 0
                async for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        raise OpenAIChatError(f"{self.url} sent a reply of more than max_response_bytes={limit} bytes")
                raw = b"".join(chunks)
        except openai.APIStatusError as err:
            status = err.status_code
            if status in REDIRECT_STATUS:
                raise OpenAIChatError(
                    f"POST {self.url} answered with a redirect (HTTP {status}); the openai backend follows no "
                    "redirect (set base_url to the address that answers, or use backend='stdlib')",
                    status,
                ) from None
            detail = _excerpt(err.response.text if err.response is not None else str(err))
            if status in RETRYABLE_STATUS:
                retry_after = _retry_after(
                    err.response.headers.get("retry-after") if err.response is not None else None
                )
                raise _Retryable(f"HTTP {status}: {detail}", retry_after, status) from None
            raise OpenAIChatError(
                f"POST {self.url} failed with HTTP {status}{self._hint(status)}: {detail}", status
            ) from None
        except openai.APITimeoutError as err:
            raise _Retryable(
                f"no complete reply within timeout={self.timeout} s (the deadline of one attempt)"
            ) from err
        except openai.APIConnectionError as err:
            raise _Retryable(f"connection failed: {err.__cause__ or err!r}") from err
        return self._decode(raw)

    def _hint(self, status: int) -> str:
        """A fix for common client errors, appended to their message."""
        return {
            401: " (check the key in $" + str(self.api_key_env) + ")",
            404: " (check that base_url ends with the API version, e.g. /v1, and the model name)",
        }.get(status, "")

    def _decode(self, raw: bytes) -> dict[str, Any]:
        try:
            parsed = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            text = _excerpt(raw.decode("utf-8", "replace"))
            raise OpenAIChatError(f"{self.url} returned a body that is not JSON: {text}") from err
        if not isinstance(parsed, dict):
            raise OpenAIChatError(f"{self.url} returned JSON that is not an object: {_excerpt(str(parsed))}")
        return parsed


def _abort(sock: socket.socket | None, expired: threading.Event) -> None:
    """Mark the attempt late and shut its socket down from another thread: a blocked read returns."""
    expired.set()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _connection_for(parts: SplitResult, timeout: float) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """An unconnected connection for ``parts``, the request target, and headers for a proxy.

    The ``http_proxy``/``https_proxy``/``no_proxy`` environment variables are honoured as ``urllib``
    honours them: plain HTTP goes to the proxy with the absolute URL, HTTPS through a CONNECT tunnel.
    """
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    proxy_url = urllib.request.getproxies().get(parts.scheme)
    if proxy_url and urllib.request.proxy_bypass(parts.hostname or ""):
        proxy_url = None
    proxy = urlsplit(proxy_url if "://" in proxy_url else "http://" + proxy_url) if proxy_url else None
    if proxy is not None and proxy.scheme != "http":
        raise OpenAIChatError(f"only http:// proxies are supported, got a {proxy.scheme}:// proxy for {parts.scheme}")
    proxy_headers: dict[str, str] = {}
    if proxy is not None and proxy.username is not None:
        credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
        proxy_headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
    if parts.scheme == "https":
        if proxy is None:
            return _https(parts.hostname, parts.port, timeout), path, {}
        connection = _https(proxy.hostname, proxy.port or 8080, timeout)
        connection.set_tunnel(parts.hostname, parts.port or 443, headers=proxy_headers)
        return connection, path, {}
    if proxy is None:
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout), path, {}
    absolute = f"http://{parts.netloc.rpartition('@')[2]}{path}"
    return http.client.HTTPConnection(proxy.hostname, proxy.port or 8080, timeout=timeout), absolute, proxy_headers


def _https(host: str | None, port: int | None, timeout: float) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a malformed port
        return ("", "", None)
    return (parts.scheme.lower(), (parts.hostname or "").lower(), port)


def _without_credentials(url: str) -> str:
    """``url`` without user:password and query (they may hold secrets), for error messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    with contextlib.suppress(ValueError):
        if parts.port:
            host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else ""


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (seconds or an HTTP date), or ``None``."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)  # an infinite wait stays infinite: more than any max_retry_after


def _excerpt(text: str, limit: int = 500) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
