"""Any ``Mulligan/*`` env as a TRL environment: ``GRPOTrainer(environment_factory=...)``.

TRL's multi-turn GRPO (trl >= 1.x, ``environment_factory``) runs one environment object per
rollout. Its protocol, as read in ``trl/trainer/grpo_trainer.py`` of trl 1.16:

* the factory is a zero-argument callable returning an environment instance;
* the instance's public methods (defined on its class; not ``reset``/``get_reward``, not
  ``_private``) are the tools: TRL builds their JSON schemas from the type hints and Google-style
  docstrings (``transformers.utils.get_json_schema``), renders them through the chat template, and
  calls ``method(**arguments)`` for each tool call the model makes; the returned string is the
  tool message; an exception becomes an ``{"error": ...}`` result;
* ``reset(**row)`` is called with the dataset row before each rollout; a returned string is
  appended to the last user message of the prompt;
* ``get_reward()`` (no arguments) scores the finished rollout.

:func:`environment_factory` builds such a class for an env id: one method per tool of the env in
``action_format="tools"`` (:mod:`mulligan.envs.tools`), each stepping the env with that call. The
first observation is what ``reset`` returns (so the prompt needs no task text of its own), and the
reward is the episode's return (the sum of the env's step rewards, which is the final score for
the science envs and the answer's reward for the QA and math envs). ``reset`` reads
``task_index`` (an int) or ``task`` (a record) and ``seed`` from the row when present; otherwise a
task is drawn from the env's own random generator (seeded once by ``seed=`` of the factory).

After the episode ends (the answer was given, the task was completed or failed, or the turn cap
of the env's registration passed), every further call returns a note saying so and changes
nothing. A call with missing, unexpected or mistyped arguments reaches the env, which scores it as
an invalid call (a malformed step); a call of an unknown tool fails inside TRL (``{"error": ...}``)
and never reaches the env, so it does not count against the env's turn cap.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium

from mulligan.envs.tools import ToolSpec, format_tool_call

#: What a call after the end of the episode returns.
EPISODE_OVER = "The episode is over; no further actions are taken."
_PYTHON_TYPES = {"string": str, "integer": int}


class MulliganTRLEnvironment:
    """Base of the classes :func:`environment_factory` builds (the tool methods are added per env).

    Attributes:
        env: The Gymnasium env (made with ``action_format="tools"``).
        episode_return: The sum of the episode's rewards so far.
        done: Whether the episode has ended.
        last_info: The env's latest ``info``.
    """

    env_id: str = ""
    env_kwargs: Mapping[str, Any] = {}

    def __init__(self, seed: int | None = None):
        kwargs = {**self.env_kwargs, "action_format": "tools"}
        self.env = gymnasium.make(self.env_id, **kwargs)
        self._seed = seed
        self._seeded = False
        self.episode_return = 0.0
        self.done = True
        self.last_info: dict[str, Any] = {}

    def reset(self, **row: Any) -> str:
        """Start an episode for a dataset row; returns the first observation (appended to the prompt)."""
        options: dict[str, Any] = {}
        if row.get("task_index") is not None:
            options["task_index"] = int(row["task_index"])
        elif isinstance(row.get("task"), Mapping):
            options["task"] = dict(row["task"])
        seed = row.get("seed")
        if seed is None and not self._seeded:
            seed, self._seeded = self._seed, True
        observation, info = self.env.reset(seed=None if seed is None else int(seed), options=options or None)
        self.episode_return, self.done, self.last_info = 0.0, False, dict(info)
        return observation

    def get_reward(self) -> float:
        """The episode's return (0.0 when the model never acted)."""
        return float(self.episode_return)

    def _call(self, name: str, arguments: dict[str, Any]) -> str:
        """Step the env with one tool call; the observation is the tool's result."""
        if self.done:
            return EPISODE_OVER
        observation, reward, terminated, truncated, info = self.env.step(format_tool_call(name, arguments))
        self.episode_return += float(reward)
        self.done = bool(terminated or truncated)
        self.last_info = dict(info)
        if truncated and not terminated:
            observation = f"{observation}\n{EPISODE_OVER}"
        return observation

    def _close(self) -> None:
        """Close the env (ScienceWorld's JVM); private, so that TRL does not take it for a tool."""
        self.env.close()


def _tool_method(spec: ToolSpec) -> Callable[..., str]:
    """A method named after ``spec`` whose signature and docstring give TRL the tool's schema."""

    def method(self: MulliganTRLEnvironment, **arguments: Any) -> str:
        return self._call(spec.name, arguments)

    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {}
    for parameter in spec.parameters:
        kind = _PYTHON_TYPES[parameter.type]
        parameters.append(inspect.Parameter(parameter.name, inspect.Parameter.KEYWORD_ONLY, annotation=kind))
        annotations[parameter.name] = kind
    annotations["return"] = str
    method.__signature__ = inspect.Signature(parameters, return_annotation=str)
    method.__annotations__ = annotations
    method.__name__ = method.__qualname__ = spec.name
    doc = spec.description
    if spec.parameters:
        doc += "\n\nArgs:\n" + "\n".join(f"    {p.name}: {p.description}" for p in spec.parameters)
    method.__doc__ = doc + "\n\nReturns:\n    The env's observation of the call.\n"
    return method


def environment_class(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> type[MulliganTRLEnvironment]:
    """A :class:`MulliganTRLEnvironment` subclass whose tool methods are ``env_id``'s tools.

    Raises:
        ValueError: if the env has no tools (single-step envs such as Math-v0) or the id is unknown.
    """
    from mulligan.envs.registration import env_entry

    entry = env_entry(env_id)
    env_class = getattr(importlib.import_module(entry.module), entry.class_name)
    specs = env_class.tool_specs
    if not specs:
        raise ValueError(f"{env_id} has no tools (a single-step env); TRL's environment_factory needs a multi-step env")
    # TRL's protocol methods and this class's attributes cannot be tool names (MiniScience's
    # ``close`` tool is why the env's own close is ``_close``).
    reserved = {"reset", "get_reward", "env", "episode_return", "done", "last_info", "env_id", "env_kwargs"}
    namespace: dict[str, Any] = {"env_id": env_id, "env_kwargs": dict(env_kwargs or {})}
    for spec in specs:
        if spec.name in reserved:
            raise ValueError(f"{env_id}'s tool {spec.name!r} clashes with TRL's environment protocol")
        namespace[spec.name] = _tool_method(spec)
    name = "Mulligan" + entry.class_name.removesuffix("Env")
    namespace["__doc__"] = f"{env_id} as a TRL environment (tools: {', '.join(s.name for s in specs)})."
    return type(name, (MulliganTRLEnvironment,), namespace)


class EnvironmentFactory:
    """A zero-argument, picklable factory of :class:`MulliganTRLEnvironment` instances for one env.

    Picklable (TRL's async GRPO trainer sends its factories to rollout workers): only the id, the
    kwargs and the seed travel; the env's generated class is rebuilt on first use in each process.

    Args:
        env_id: A multi-step ``Mulligan/*`` id.
        env_kwargs: Keyword arguments of the env (``action_format`` is set to ``"tools"``).
        seed: Seeds each instance's first reset (instance ``k`` of this factory gets ``seed + k``).

    Raises:
        ValueError: if the env has no tools or the id is unknown (checked at construction).
    """

    def __init__(self, env_id: str, env_kwargs: Mapping[str, Any] | None = None, *, seed: int | None = None):
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.seed = seed
        self._made = 0
        self._cls: type[MulliganTRLEnvironment] | None = environment_class(env_id, self.env_kwargs)

    def __call__(self) -> MulliganTRLEnvironment:
        """A new environment instance (each with its own env)."""
        if self._cls is None:
            self._cls = environment_class(self.env_id, self.env_kwargs)
        index, self._made = self._made, self._made + 1
        return self._cls(seed=None if self.seed is None else self.seed + index)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cls": None}

    def __repr__(self) -> str:
        return f"EnvironmentFactory({self.env_id!r}, {self.env_kwargs!r}, seed={self.seed!r})"


def environment_factory(
    env_id: str, env_kwargs: Mapping[str, Any] | None = None, *, seed: int | None = None
) -> EnvironmentFactory:
    """A zero-argument (picklable) factory for ``GRPOTrainer(environment_factory=...)``.

    Args:
        env_id: A multi-step ``Mulligan/*`` id (MathReAct, HotpotQA, StrategyQA, ScienceWorld, MiniScience).
        env_kwargs: Keyword arguments of the env (``action_format`` is set to ``"tools"``).
        seed: Seeds each instance's first reset (instance ``k`` gets ``seed + k``) for rows without
            ``seed``/``task_index``; ``None``: unseeded draws.

    Example::

        from trl import GRPOConfig, GRPOTrainer
        from mulligan.integrations.trl import environment_factory

        trainer = GRPOTrainer(model, args=GRPOConfig(max_steps=100, ...),
                              environment_factory=environment_factory("Mulligan/HotpotQA-v0"),
                              train_dataset=Dataset.from_dict({"prompt": [[{"role": "user", "content": ""}]] * 64,
                                                               "task_index": list(range(64))}))
    """
    return EnvironmentFactory(env_id, env_kwargs, seed=seed)
