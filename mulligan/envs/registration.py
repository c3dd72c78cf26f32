"""The table of every ``Mulligan/*`` env id and the factories that ``gymnasium.make`` calls.

Importing this module is cheap: the env classes are imported only when an env is made. Every
factory accepts ``max_attempts``, ``feedback_template`` and ``retry_reward``; with
``max_attempts > 1`` it returns the env wrapped in
:class:`~mulligan.envs.wrappers.RetryWithFeedback`, so that
``gymnasium.make("Mulligan/Math-v0", max_attempts=5)`` is RISE's multi-turn MDP.

The factories are generated from the table as module attributes named ``make_<class name>``
(``make_MathEnv``, ``make_HotpotQAEnv``, ...), because gymnasium's entry points are
``"module:attribute"`` strings, which keep ``import mulligan`` cheap and the specs picklable.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium

from mulligan.envs.wrappers import CORGI_FEEDBACK_TEMPLATE, RISE_FEEDBACK_TEMPLATE, RetryWithFeedback

NAMESPACE = "Mulligan"


@dataclass(frozen=True)
class EnvEntry:
    """One registered env.

    Attributes:
        name: The id without namespace, e.g. ``"Math-v0"``.
        module: The module that holds the env class.
        class_name: The env class.
        description: One line for ``mulligan envs``.
        max_episode_steps: Turn cap applied by ``gymnasium.make`` (``None`` for single-turn envs).
        feedback_template: Default retry template (``None``: RISE's).
        retry_reward: Default retry objective, ``"last"`` or ``"max"``.
        nondeterministic: Whether the same seed can give different observations. Only the real
            ScienceWorld simulator sets it: its Java world lists a room's objects in hash order, so
            the text of a reset varies even though the task and its state do not.
    """

    name: str
    module: str
    class_name: str
    description: str
    max_episode_steps: int | None = None
    feedback_template: str | None = None
    retry_reward: str = "last"
    nondeterministic: bool = False

    @property
    def id(self) -> str:
        """The full id, ``Mulligan/<name>``."""
        return f"{NAMESPACE}/{self.name}"


ENVS: tuple[EnvEntry, ...] = (
    EnvEntry(
        "Echo-v0",
        "mulligan.envs.testing",
        "EchoEnv",
        "Test double: repeat a target string (known optimum, for trainer tests).",
    ),
    EnvEntry(
        "Math-v0",
        "mulligan.envs.math",
        "MathEnv",
        "Single-turn math word problems; answer in \\boxed{} (procedural GSM8K-style, or GSM8K/MATH files).",
    ),
    EnvEntry(
        "MathReAct-v0",
        "mulligan.envs.math_react",
        "MathReActEnv",
        "NAT's math agent: Thought/Action steps with calculate[...] and finish[...].",
        max_episode_steps=12,
    ),
    EnvEntry(
        "HotpotQA-v0",
        "mulligan.envs.hotpotqa",
        "HotpotQAEnv",
        "Multi-hop QA with ReAct search[...]/lookup[...]/finish[...] (procedural world or HotpotQA files).",
        max_episode_steps=10,
    ),
    EnvEntry(
        "StrategyQA-v0",
        "mulligan.envs.strategyqa",
        "StrategyQAEnv",
        "Yes/no questions that need an implicit multi-step strategy, with search/lookup/finish.",
        max_episode_steps=10,
    ),
    EnvEntry(
        "ScienceWorld-v0",
        "mulligan.envs.scienceworld",
        "ScienceWorldEnv",
        "The real ScienceWorld simulator (30 tasks; needs the scienceworld extra and a JRE).",
        max_episode_steps=100,
        nondeterministic=True,
    ),
    EnvEntry(
        "MiniScience-v0",
        "mulligan.envs.miniscience",
        "MiniScienceEnv",
        "A fast pure-Python science world with ScienceWorld's action grammar.",
        max_episode_steps=100,
    ),
    EnvEntry(
        "Constraints-v0",
        "mulligan.envs.constraints",
        "ConstraintsEnv",
        "Constraint following (CORGI rules and IFEval's 25 instructions) with a checker's critique.",
        feedback_template=CORGI_FEEDBACK_TEMPLATE,
        retry_reward="max",
    ),
)


def _factory(entry: EnvEntry) -> Callable[..., gymnasium.Env]:
    def make(
        max_attempts: int = 1,
        feedback_template: str | None = None,
        retry_reward: str | None = None,
        **kwargs: Any,
    ) -> gymnasium.Env:
        env_class = getattr(importlib.import_module(entry.module), entry.class_name)
        env = env_class(**kwargs)
        if max_attempts == 1 and feedback_template is None and retry_reward is None:
            return env
        return RetryWithFeedback(
            env,
            max_attempts=max_attempts,
            feedback_template=feedback_template or entry.feedback_template or RISE_FEEDBACK_TEMPLATE,
            reward=retry_reward or entry.retry_reward,
        )

    make.__name__ = make.__qualname__ = "make_" + entry.class_name
    make.__doc__ = f"Build {entry.id}: {entry.description}"
    return make


# gymnasium's entry points are "module:attribute" strings; one factory per env lives here.
for _entry in ENVS:
    globals()["make_" + _entry.class_name] = _factory(_entry)


def register_all() -> None:
    """Register every ``Mulligan/*`` id with gymnasium (idempotent)."""
    for entry in ENVS:
        if entry.id in gymnasium.registry:
            continue
        gymnasium.register(
            id=entry.id,
            entry_point=f"{__name__}:make_{entry.class_name}",
            max_episode_steps=entry.max_episode_steps,
            nondeterministic=entry.nondeterministic,
            disable_env_checker=False,
        )


def env_ids() -> list[str]:
    """Every registered ``Mulligan/*`` id, in table order."""
    return [entry.id for entry in ENVS]


def env_entry(env_id: str) -> EnvEntry:
    """The table entry of a ``Mulligan/*`` id.

    Raises:
        ValueError: naming the known ids when ``env_id`` is not one.
    """
    for entry in ENVS:
        if entry.id == env_id:
            return entry
    raise ValueError(f"unknown env id {env_id!r}; known: {env_ids()}")


def env_tools(env_id: str) -> list[dict]:
    """The tools of a ``Mulligan/*`` env (OpenAI format), read from its class without building it.

    The same list as ``env.unwrapped.tools`` (an env's tools do not depend on its arguments), so
    that an agent learns them without starting the env (ScienceWorld's JVM). Empty for envs
    without tools.
    """
    entry = env_entry(env_id)
    env_class = getattr(importlib.import_module(entry.module), entry.class_name)
    return [spec.schema() for spec in env_class.tool_specs]
