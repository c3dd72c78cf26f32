"""TRL reward functions that score completions with mulligan envs.

Correctness has one implementation in mulligan: the env (which calls its verifier module). A TRL
reward function therefore does not re-implement any check: :class:`EnvReward` re-creates the task
the prompt was built from (``options={"task_index": i}`` or ``options={"task": record}``), steps the
completion as the action and returns what the env pays. Multi-turn episodes are scored by the env
while they are played (see :mod:`mulligan.training.grpo`); :class:`EpisodeReturnReward` hands that
return to TRL.

TRL calls a reward function as ``func(prompts=..., completions=..., completion_ids=..., **columns)``
where ``columns`` are the dataset's other columns (here ``task_index`` or ``task``) and whatever a
``rollout_func`` returned besides the token ids. Each function returns one float per completion.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium

#: What an :class:`EnvReward` returns for a completion: the env's reward, its score, or 1.0/0.0 success.
REWARD_FIELDS = ("reward", "score", "success")


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a plain string, or the content of conversational messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return str(completion.get("content", ""))
    if isinstance(completion, Sequence):
        return "".join(completion_text(message) for message in completion if _is_assistant(message))
    raise TypeError(f"a completion is a str or a list of chat messages, got {type(completion).__name__}")


def _is_assistant(message: Any) -> bool:
    return not isinstance(message, Mapping) or message.get("role", "assistant") == "assistant"


def task_options(task_index: Any = None, task: Any = None) -> dict[str, Any]:
    """Reset options that re-create a dataset row's task (``task`` may be a dict or its JSON string)."""
    if task is not None:
        record = json.loads(task) if isinstance(task, str) else task
        if not isinstance(record, Mapping):
            raise ValueError(f"a 'task' column must hold dict records (or their JSON), got {type(record).__name__}")
        return {"task": dict(record)}
    if task_index is None:
        raise ValueError(
            "the dataset has neither a 'task_index' nor a 'task' column; build it with "
            "mulligan.training.grpo.build_prompt_dataset so that the reward can re-create each task"
        )
    return {"task_index": int(task_index)}


class EnvReward:
    """A TRL reward function that steps the env once with each completion (single-turn envs).

    The env is made once with ``gymnasium.make(env_id, **env_kwargs)`` and reset onto each row's
    task; the completion is the action. For a multi-turn env only the first action is scored,
    which is rarely what you want: train multi-turn envs through GRPO's episode rollout instead.

    Args:
        env_id: A registered id, e.g. ``"Mulligan/Math-v0"``.
        env_kwargs: Keyword arguments for ``gymnasium.make``.
        field: What to return: the env's ``"reward"`` (default), ``info["score"]``, or
            ``"success"`` as 1.0/0.0.
        name: The name TRL logs the reward under (``rewards/<name>/mean``).
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: Mapping[str, Any] | None = None,
        field: str = "reward",
        name: str | None = None,
    ):
        if field not in REWARD_FIELDS:
            raise ValueError(f"field must be one of {REWARD_FIELDS}, got {field!r}")
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.field = field
        self.__name__ = name or f"env_{field}"
        self._env: gymnasium.Env | None = None

    @property
    def env(self) -> gymnasium.Env:
        """The env used for scoring, made on first use."""
        if self._env is None:
            import mulligan  # noqa: F401 - registers the Mulligan/* ids

            self._env = gymnasium.make(self.env_id, **self.env_kwargs)
        return self._env

    def score(self, completion: str, options: Mapping[str, Any]) -> tuple[float, bool]:
        """Score one completion on the task that ``options`` selects: ``(reward, success)``."""
        self.env.reset(options=dict(options))
        _, reward, _, _, info = self.env.step(completion)
        success = bool(info["success"])
        if self.field == "reward":
            return float(reward), success
        if self.field == "score":
            return float(info["score"]), success
        return float(success), success

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] = (),
        task_index: Sequence[Any] | None = None,
        task: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        """Score each completion against its row's task; see the class docstring."""
        rewards, successes = [], []
        for i, completion in enumerate(completions):
            options = task_options(
                task_index[i] if task_index is not None else None, task[i] if task is not None else None
            )
            reward, success = self.score(completion_text(completion), options)
            rewards.append(reward)
            successes.append(success)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None and successes:
            log_metric("env/success_rate", sum(successes) / len(successes))
        return rewards


class EpisodeReturnReward:
    """A TRL reward function that returns what a multi-turn rollout recorded as each episode's return.

    The GRPO episode rollout plays each episode in the env and returns ``episode_return`` next to
    the token ids; TRL forwards that column here.

    Args:
        column: The rollout column that holds the returns.
    """

    __name__ = "episode_return"

    def __init__(self, column: str = "episode_return"):
        self.column = column
        self.__name__ = column

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any):
        """Return the rollout's per-episode returns."""
        if self.column not in kwargs:
            raise ValueError(
                f"no {self.column!r} column reached the reward function: it is produced by the GRPO episode "
                "rollout (mulligan.training.grpo.EpisodeRollout); pass that as rollout_func"
            )
        log_metric = kwargs.get("log_metric")
        if log_metric is not None and kwargs.get("episode_success"):
            successes = kwargs["episode_success"]
            log_metric("env/success_rate", sum(successes) / len(successes))
        return [float(r) for r in kwargs[self.column]]
