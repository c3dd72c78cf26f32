"""An agent that answers the first attempt on-policy and improves later attempts by best-of-N.

This is how RISE (Qu et al. 2024, arXiv 2407.18219, Sec. 4.2; the official ``workflow_gen.py``)
collects its data inside the retry MDP (:class:`~mulligan.envs.wrappers.RetryWithFeedback`): the
first attempt is the learner's own sample (N = 1), and every later attempt, conditioned on the
attempts so far and their feedback, is the best of ``n`` candidates from an improver (the learner
itself for self-distillation, or a teacher), scored on the task. The chosen attempt continues the
history.

The agent reads the task record to score candidates (it is a data-collection oracle, like the
env's reward), so it is not a policy to evaluate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mulligan.agents.base import Action, Agent, AgentInput

#: ``(text, task) -> (reward, success)`` of one candidate as a single attempt on ``task``.
Scorer = Callable[[str, Mapping[str, Any]], tuple[float, bool]]


def is_degenerate(text: str, max_repeats: int = 150, max_word_length: int = 300) -> bool:
    """Whether a response is degenerate, as the official generation filter decides.

    Degenerate: one word repeated more than ``max_repeats`` times (case folded), or a "word"
    longer than ``max_word_length`` characters. ``max_repeats=0`` disables the check.
    """
    if max_repeats <= 0:
        return False
    counts: dict[str, int] = {}
    for word in text.lower().split():
        if len(word) > max_word_length:
            return True
        counts[word] = counts.get(word, 0) + 1
        if counts[word] > max_repeats:
            return True
    return False


class BestOfNAfterFirst(Agent):
    """First attempt from ``first`` (one sample); later attempts: best of ``n`` from ``improver``.

    An attempt's number is read from the conversation: the first attempt is the one with no
    assistant turn yet (single-action attempts, as in RISE's tasks).

    Candidates flagged by :func:`is_degenerate` are set aside unless all are; among the rest the
    highest reward wins, then success, then the earliest (the official ``index(max(rewards))``).
    Each improved action's ``metadata`` records ``candidate_rewards`` and the ``source``.

    Args:
        first: The learner: acts on the first attempt.
        improver: Proposes ``n`` candidates for every later attempt (may be ``first``).
        n: Candidates per improved attempt (>= 1).
        scorer: Scores one candidate on the task (e.g.
            :meth:`mulligan.training.rewards.EnvReward.score` with ``{"task": task}``).
        max_repeats: The degenerate-text threshold (0 disables it).
    """

    def __init__(self, first: Agent, improver: Agent, n: int, scorer: Scorer, *, max_repeats: int = 150):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        self.first = first
        self.improver = improver
        self.n = n
        self.scorer = scorer
        self.max_repeats = max_repeats
        self.name = getattr(first, "name", None) or type(first).__name__

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """The learner's action at the first attempt, the best candidate at later ones."""
        actions: list[Action | None] = [None] * len(inputs)
        opening = [i for i, x in enumerate(inputs) if not any(m["role"] == "assistant" for m in x.messages)]
        later = sorted(set(range(len(inputs))) - set(opening))
        if opening:
            for i, action in zip(opening, self.first.act([inputs[i] for i in opening]), strict=True):
                action.metadata = {**action.metadata, "source": "first"}
                actions[i] = action
        if later:
            candidates = self.improver.sample([inputs[i] for i in later], self.n)
            for i, options in zip(later, candidates, strict=True):
                actions[i] = self._best(options, inputs[i].task or {})
        return [a for a in actions if a is not None]

    def _best(self, options: Sequence[Action], task: Mapping[str, Any]) -> Action:
        scores = [self.scorer(a.text, task) for a in options]
        sound = [k for k, a in enumerate(options) if not is_degenerate(a.text, self.max_repeats)]
        pool = sound or list(range(len(options)))
        best = max(pool, key=lambda k: (scores[k][0], scores[k][1], -k))
        chosen = options[best]
        chosen.metadata = {
            **chosen.metadata,
            "source": "improver",
            "candidate_rewards": [float(r) for r, _ in scores],
            "degenerate_candidates": len(options) - len(sound),
        }
        return chosen

    def reset(self, seed: int | None = None) -> None:
        """Reseed both agents."""
        self.first.reset(seed)
        if self.improver is not self.first:
            self.improver.reset(seed)
