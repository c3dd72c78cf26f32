"""Build an agent from a command-line spec: a scripted agent class, a local model, or a served model.

One grammar for every command (``mulligan collect``, ``mulligan eval``, RISE's ``--improver``):

* ``openai:MODEL``: a model behind an OpenAI-compatible chat endpoint
  (:class:`~mulligan.agents.openai_chat.OpenAIChatAgent`): vLLM, ``transformers serve``, llama.cpp,
  a hosted provider. ``MODEL`` is the served name, sent as the request's ``model`` (it may hold
  ``/`` and ``:``). The endpoint comes from ``base_url`` (else the ``OPENAI_BASE_URL`` environment
  variable); the key is read from the environment variable named by ``api_key_env``, never passed
  as a value, so it appears in no command line, log or results file.
* ``module:Class``: a scripted agent built with no arguments.
* anything else: a model for :class:`~mulligan.agents.hf.HFAgent`: ``tiny`` (the offline tiny
  model), a local checkpoint folder, or a hub id.

:class:`ServedModelArgs` holds the served-model flags; commands compose it into their config.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from mulligan.agents.base import Agent

#: The spec prefix of a served model.
OPENAI_PREFIX = "openai:"
#: Environment variable read for the endpoint when ``base_url`` is empty (as the OpenAI SDK does).
BASE_URL_ENV = "OPENAI_BASE_URL"
#: What an environment variable's name looks like (an API key does not).
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Sampling keywords of HFAgent that OpenAIChatAgent spells differently or not at all.
_HF_TO_OPENAI = {"max_new_tokens": "max_tokens"}
_HF_ONLY = ("device", "dtype", "batch_size", "trust_remote_code")


@dataclass
class ServedModelArgs:
    """The flags of a served model (``--agent openai:MODEL``), composed into a command's config.

    Attributes:
        base_url: The OpenAI-compatible API root including its version, e.g.
            ``http://127.0.0.1:8000/v1`` (empty: the ``OPENAI_BASE_URL`` environment variable).
        api_key_env: The NAME of the environment variable that holds the API key (its value is
            read at each request and never printed; unset: no key is sent, as local servers need).
        concurrency: Requests in flight at once.
        backend: ``stdlib`` (the standard-library client, no dependency, the default) or
            ``openai`` (the ``openai`` SDK: pooled connections; see :mod:`mulligan.agents.openai_chat`).
        request_timeout: Seconds one request attempt may take in all.
        max_retries: Retries of a failed request (HTTP 429/5xx, timeouts, dropped connections).
    """

    base_url: str = field(default="", metadata={"help": "API root for --agent openai:MODEL, e.g. .../v1."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "NAME of the env variable with the key."})
    concurrency: int = field(default=8, metadata={"help": "Requests in flight at once (served models)."})
    backend: str = field(default="stdlib", metadata={"help": "stdlib | openai (the SDK, where installed)."})
    request_timeout: float = field(default=120.0, metadata={"help": "Seconds per request attempt, in all."})
    max_retries: int = field(default=5, metadata={"help": "Retries of a failed request."})

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        check_api_key_env(self.api_key_env)
        if self.backend not in ("stdlib", "openai"):
            raise ValueError(f"--backend must be stdlib or openai, got {self.backend!r}")
        if isinstance(self.concurrency, bool) or self.concurrency < 1:
            raise ValueError(f"--concurrency must be an int >= 1, got {self.concurrency!r}")
        if not self.request_timeout > 0:
            raise ValueError(f"--request_timeout must be > 0 seconds, got {self.request_timeout}")
        if self.max_retries < 0:
            raise ValueError(f"--max_retries must be >= 0, got {self.max_retries}")

    def served_kwargs(self) -> dict[str, Any]:
        """The keyword arguments :func:`load_agent` takes for a served model."""
        return {
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "concurrency": self.concurrency,
            "backend": self.backend,
            "timeout": self.request_timeout,
            "max_retries": self.max_retries,
        }


def check_api_key_env(name: str | None) -> None:
    """Refuse an ``api_key_env`` that is not a variable name (most likely a key pasted by mistake).

    Raises:
        ValueError: Without repeating the value, which may be a secret.
    """
    if name is not None and name != "" and not _ENV_NAME.fullmatch(name):
        raise ValueError(
            "--api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not the key itself; "
            "export the key (export MY_KEY=...) and pass --api_key_env MY_KEY"
        )


def is_served(spec: str) -> bool:
    """Whether ``spec`` names a served model (``openai:MODEL``)."""
    return isinstance(spec, str) and spec.startswith(OPENAI_PREFIX)


def _looks_like_path(spec: str) -> bool:
    """Whether ``spec`` can only be a filesystem path (a hub id is ``name`` or ``org/name``)."""
    return spec.startswith(("/", "./", "../", "~")) or "\\" in spec or spec.count("/") > 1


def load_agent(
    spec: str,
    *,
    base_url: str = "",
    api_key_env: str | None = "OPENAI_API_KEY",
    concurrency: int = 8,
    backend: str = "stdlib",
    timeout: float = 120.0,
    max_retries: int = 5,
    **kwargs: Any,
) -> Agent:
    """An agent from a spec (see the module docstring for the grammar).

    Args:
        spec: ``openai:MODEL``, ``module:Class``, ``tiny``, a checkpoint folder or a hub id.
        base_url: A served model's API root (empty: ``$OPENAI_BASE_URL``); only with ``openai:``.
        api_key_env: Name of the environment variable with a served model's key.
        concurrency: Requests in flight at once (served models).
        backend: ``stdlib`` or ``openai`` (served models).
        timeout: Seconds per request attempt (served models).
        max_retries: Retries of a failed request (served models).
        **kwargs: Sampling and context options of the model agent (``temperature``, ``top_p``,
            ``max_new_tokens``, ``seed``, ``system_prompt``, ``context``, ...); a served model
            takes ``max_new_tokens`` as its ``max_tokens``. Ignored by scripted agents.

    Raises:
        ValueError: If the class cannot be imported or is not an agent, the model cannot be
            loaded, a served model has no endpoint, or served-model options are given for a
            local agent (with the fix in the message).
        FileNotFoundError: If ``spec`` is a path that does not exist.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(
            "the agent spec is empty; pass 'openai:MODEL', 'module:Class' of a scripted agent, 'tiny', or a model"
        )
    if is_served(spec):
        return _load_served(
            spec, base_url, api_key_env, concurrency=concurrency, backend=backend, timeout=timeout,
            max_retries=max_retries, **kwargs,
        )  # fmt: skip
    if base_url:
        raise ValueError(f"--base_url applies to served models; pass --agent openai:MODEL (got {spec!r})")
    if backend != "stdlib":
        raise ValueError(f"--backend applies to served models; pass --agent openai:MODEL (got {spec!r})")
    if ":" in spec and not os.path.exists(spec):
        return _load_class(spec)
    if spec != "tiny" and not os.path.exists(os.path.expanduser(spec)) and _looks_like_path(spec):
        raise FileNotFoundError(
            f"no model at {spec}: the path does not exist; pass an existing checkpoint folder, 'tiny', "
            "or a hub id such as 'Qwen/Qwen2.5-0.5B-Instruct'"
        )
    from mulligan.agents.hf import HFAgent

    try:
        return HFAgent(os.path.expanduser(spec), **kwargs)
    except OSError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"cannot load model {spec!r} ({reason}); pass a local checkpoint folder, 'tiny', or a hub id "
            "that is cached or reachable"
        ) from err


def _load_served(spec: str, base_url: str, api_key_env: str | None, **kwargs: Any) -> Agent:
    from mulligan.agents.openai_chat import OpenAIChatAgent

    model = spec[len(OPENAI_PREFIX) :]
    if not model.strip():
        raise ValueError("--agent openai: needs the served model's name, e.g. --agent openai:Qwen/Qwen2.5-7B-Instruct")
    base_url = base_url or os.environ.get(BASE_URL_ENV, "")
    if not base_url:
        raise ValueError(
            f"--agent {spec} needs the server's address: pass --base_url http://HOST:PORT/v1 (or set ${BASE_URL_ENV})"
        )
    check_api_key_env(api_key_env)
    options = {_HF_TO_OPENAI.get(k, k): v for k, v in kwargs.items() if k not in _HF_ONLY}
    return OpenAIChatAgent(base_url, model, api_key_env=api_key_env or None, **options)


def _load_class(spec: str) -> Agent:
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"cannot import {module_name!r} for agent {spec!r} ({err}); pass 'module:Class' of an importable "
            "agent, e.g. mulligan.agents.teachers.math:MathOracle, or openai:MODEL for a served model"
        ) from err
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"{module_name} has no {class_name!r}; pass 'module:Class' naming an agent class")
    try:
        agent = cls()
    except TypeError as err:
        raise ValueError(
            f"{spec} cannot be built with no arguments ({err}); pass a class whose arguments all have defaults, "
            "or build the agent in Python"
        ) from err
    if not isinstance(agent, Agent):
        raise ValueError(f"{spec} is not a mulligan Agent (got {type(agent).__name__}); pass an Agent subclass")
    return agent
