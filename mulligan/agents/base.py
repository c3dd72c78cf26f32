"""The agent interface: act on many envs at once.

An agent receives, for each env in a batch, the conversation so far (:class:`AgentInput`) and
returns each env's next action (:class:`Action`). Model agents fill in what trainers need (the
exact prompt text, token ids, per-token log-probabilities); scripted teachers fill in only the
text. Nothing here imports torch.

Conversations are lists of chat messages ``{"role": "system"|"user"|"assistant", "content": str}``:
env observations are ``user`` turns and the agent's actions are ``assistant`` turns, so that any
chat template applies and a user can print exactly what a model saw.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]


@dataclass
class AgentInput:
    """One env's state as an agent sees it.

    Attributes:
        messages: The conversation so far; the last message is the env's latest observation.
        task: The env's current task record (``env.unwrapped.task``). Scripted teachers read the
            gold solution from it; model agents must ignore it.
        info: The env's latest ``info`` (for example ``valid_actions`` in ScienceWorld).
        env_id: The registered id of the env, when known.
        stop: Strings at which generation stops for this env (ReAct agents stop at
            ``"\\nObservation:"``); the stop string itself is not part of the action.
    """

    messages: list[Message]
    task: Mapping[str, Any] | None = None
    info: Mapping[str, Any] | None = None
    env_id: str | None = None
    stop: Sequence[str] = ()

    @property
    def observation(self) -> str:
        """The latest observation (the last user message)."""
        for message in reversed(self.messages):
            if message["role"] == "user":
                return message["content"]
        return ""


@dataclass
class Action:
    """An agent's action for one env, with what trainers need from model agents.

    Attributes:
        text: The action sent to the env.
        prompt: The exact text the model was conditioned on (after templating and context
            management); ``None`` for scripted agents.
        prompt_ids: Token ids of ``prompt``.
        completion_ids: Token ids of the generated completion (including a stop string or EOS
            token if one was generated; ``text`` excludes them).
        logprobs: Per-token log-probabilities of ``completion_ids`` under the sampling policy
            (before temperature and top-p, i.e. of the model itself).
        metadata: Anything else an agent reports (e.g. the planner's sub-goal).
    """

    text: str
    prompt: str | None = None
    prompt_ids: list[int] | None = None
    completion_ids: list[int] | None = None
    logprobs: list[float] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class Agent(abc.ABC):
    """Base class of every policy: model agents, served models, scripted teachers.

    Subclasses implement :meth:`act`. An agent keeps no hidden state between episodes beyond what
    its docstring says (a scripted noisy teacher, for instance, owns a random generator that
    :meth:`reset` reseeds).
    """

    @abc.abstractmethod
    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """Return one action per input, in order."""

    def sample(self, inputs: Sequence[AgentInput], num_samples: int) -> list[list[Action]]:
        """Return ``num_samples`` actions per input (best-of-N, GRPO groups, majority voting).

        The default calls :meth:`act` ``num_samples`` times; model agents override it to batch.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        rounds = [self.act(inputs) for _ in range(num_samples)]
        return [[rounds[k][i] for k in range(num_samples)] for i in range(len(inputs))]

    def reset(self, seed: int | None = None) -> None:  # noqa: B027 - optional hook, no-op by default
        """Reseed whatever randomness the agent owns; stateless agents do nothing."""
