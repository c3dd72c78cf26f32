"""Scripted agents for tests and examples: known behaviour, no model, no randomness but seeded.

As Stable-Baselines3 ships ``IdentityEnv`` for testing its algorithms, mulligan ships agents whose
every action is known in advance, so a test of the rollout, a trainer or a command can assert exact
results. They are real :class:`~mulligan.agents.base.Agent` subclasses (not mocks): the rollout,
evaluation and trainers treat them like any other agent.

* :class:`ScriptedAgent`: answers turn ``t`` of every episode with ``answers[t]``.
* :class:`EchoOracle`: solves ``Mulligan/Echo-v0`` (optionally wrong on every n-th call) and records
  the batch sizes it was called with.
* :class:`FunctionAgent`: answers each input with ``respond(agent_input)``.
* :class:`RandomEchoAgent`: a *sampling* agent for ``Mulligan/Echo-v0``: right with probability
  ``p_correct``, drawing from :func:`~mulligan.agents.base.input_rng`, so its actions depend only on
  the rollout's per-input seeds (the reproducibility and resume tests use it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mulligan.agents.base import Action, Agent, AgentInput, input_rng

ECHO_PREFIX = "Repeat exactly: "


def echo_target(agent_input: AgentInput) -> str:
    """The target of an Echo task: from the task record when given, else parsed from the prompt."""
    if agent_input.task and "target" in agent_input.task:
        return str(agent_input.task["target"])
    first_user = next((m["content"] for m in agent_input.messages if m["role"] == "user"), "")
    return first_user.removeprefix(ECHO_PREFIX)


def turn_number(agent_input: AgentInput) -> int:
    """How many actions the agent already took in this episode (0 at the first turn)."""
    return sum(m["role"] == "assistant" for m in agent_input.messages)


class ScriptedAgent(Agent):
    """Answers turn ``t`` of every episode with ``answers[t]`` (the last answer once they run out).

    Args:
        answers: One answer per turn.
        name: The agent's name in trajectories.
    """

    def __init__(self, answers: Sequence[str], name: str = "scripted"):
        if not answers:
            raise ValueError("answers is empty; pass at least one answer")
        self.answers = list(answers)
        self.name = name

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """The scripted answer of each input's turn."""
        return [Action(self.answers[min(turn_number(x), len(self.answers) - 1)]) for x in inputs]


class FunctionAgent(Agent):
    """Answers each input with ``respond(agent_input)`` and records every batch it was given.

    Args:
        respond: The policy, a function of one :class:`~mulligan.agents.base.AgentInput`.
        name: The agent's name in trajectories.
    """

    def __init__(self, respond: Callable[[AgentInput], str], name: str = "function"):
        self.respond = respond
        self.name = name
        self.batches: list[list[AgentInput]] = []

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """``respond`` of each input."""
        self.batches.append(list(inputs))
        return [Action(self.respond(x)) for x in inputs]


class EchoOracle(Agent):
    """Solves ``Mulligan/Echo-v0``; with ``wrong_every=n`` answers ``"nope"`` on every n-th input.

    Attributes:
        batch_sizes: The size of every batch :meth:`act` was called with.
        calls: Inputs answered so far.
    """

    name = "echo-oracle"

    def __init__(self, wrong_every: int = 0):
        if wrong_every < 0:
            raise ValueError(f"wrong_every must be >= 0 (0: never wrong), got {wrong_every}")
        self.wrong_every = wrong_every
        self.batch_sizes: list[int] = []
        self.calls = 0

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """The target of each input (or ``"nope"`` on every ``wrong_every``-th)."""
        self.batch_sizes.append(len(inputs))
        actions = []
        for item in inputs:
            self.calls += 1
            wrong = self.wrong_every and self.calls % self.wrong_every == 0
            actions.append(Action("nope" if wrong else echo_target(item)))
        return actions


class RandomEchoAgent(Agent):
    """A sampling agent for ``Mulligan/Echo-v0``: right with probability ``p_correct``.

    Each action is drawn from the input's own generator (:func:`~mulligan.agents.base.input_rng`),
    falling back to the agent's generator (reseeded by :meth:`reset`) when the input has no seed.
    A wrong answer is a random number, so majority votes over samples are meaningful.

    Args:
        p_correct: Probability of answering the target.
        seed: Seed of the fallback generator.
    """

    name = "random-echo"

    def __init__(self, p_correct: float = 0.5, seed: int = 0):
        if not 0.0 <= p_correct <= 1.0:
            raise ValueError(f"p_correct must be in [0, 1], got {p_correct}")
        self.p_correct = p_correct
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        """Reseed the fallback generator."""
        self.rng = np.random.default_rng(self.seed if seed is None else seed)

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """The target with probability ``p_correct``, else a random number."""
        actions = []
        for item in inputs:
            rng = input_rng(item, self.rng)
            right = rng.random() < self.p_correct
            actions.append(Action(echo_target(item) if right else str(int(rng.integers(1000)))))
        return actions
