"""Test doubles shipped with the package: an echo env whose optimal policy is known."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mulligan.envs.core import MulliganEnv, StepOutcome, seeded_rng, truncate_for_feedback
from mulligan.envs.data import check_data_seed

DEFAULT_ECHO_WORDS: tuple[str, ...] = (
    "apple",
    "river",
    "stone",
    "cloud",
    "lemon",
    "tiger",
    "piano",
    "ocean",
)


@dataclass(frozen=True)
class EchoConfig:
    """Configuration of the echo task generator.

    Attributes:
        vocabulary: Words a target is drawn from.
        num_words: Words per target string.
    """

    vocabulary: tuple[str, ...] = DEFAULT_ECHO_WORDS
    num_words: int = 1

    def __post_init__(self) -> None:
        if not self.vocabulary or not all(isinstance(w, str) and w.strip() for w in self.vocabulary):
            raise ValueError("vocabulary must be a non-empty sequence of non-blank words")
        if not isinstance(self.num_words, int) or self.num_words < 1:
            raise ValueError(f"num_words must be an int >= 1, got {self.num_words!r}")


def generate_echo_task(config: EchoConfig, seed: int, index: int) -> dict[str, Any]:
    """The echo task at ``index`` of the dataset seeded ``seed``: ``{"target": "..."}``."""
    rng = seeded_rng(seed, index)
    words = [config.vocabulary[int(i)] for i in rng.integers(len(config.vocabulary), size=config.num_words)]
    return {"target": " ".join(words)}


def echo_score(response: str, target: str) -> float:
    """Fraction of ``target`` reproduced as a prefix of the stripped response, in [0, 1]."""
    response = response.strip()
    matched = 0
    for a, b in zip(response, target, strict=False):
        if a != b:
            break
        matched += 1
    score = matched / max(len(target), len(response), 1)
    return 1.0 if response == target else min(score, 0.99)


class EchoEnv(MulliganEnv):
    """Repeat a target string: a test double with a known optimal policy.

    ## Description
    The observation asks the agent to repeat a short target string; the optimal policy echoes it.
    It is small enough for a tiny model to learn in seconds, which is what trainer tests need.

    ## Observation and Action Space
    Both are :class:`~mulligan.envs.core.TextSpace`. The observation is
    ``"Repeat exactly: <target>"``; the action is the response.

    ## Reward
    1.0 when the stripped response equals the target, else 0.0; with ``partial_credit=True`` the
    reward is the score below, a dense signal for RL tests.

    ## Episode End
    Single turn: the episode terminates after one action.

    ## Information
    ``task_id``, ``success``, ``score`` (fraction of the target reproduced as a prefix of the
    response, 1.0 only for an exact echo), ``feedback``, ``target``.

    ## Arguments
    * ``vocabulary`` (tuple of str): words a target is drawn from.
    * ``num_words`` (int, 1): words per target.
    * ``data_seed`` (int, 0): seed of the procedural task source.
    * ``partial_credit`` (bool, False): pay the score instead of 0/1.

    ## Version History
    * v0: actions longer than the action space's ``max_length`` are refused (reward 0, the episode ends).
    """

    num_tasks = None

    def __init__(
        self,
        vocabulary: tuple[str, ...] = DEFAULT_ECHO_WORDS,
        num_words: int = 1,
        data_seed: int = 0,
        partial_credit: bool = False,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        self.config = EchoConfig(tuple(vocabulary), num_words)
        self.data_seed = check_data_seed(data_seed)
        self.partial_credit = partial_credit

    def get_task(self, index: int) -> dict[str, Any]:
        """The procedural task at ``index``."""
        return generate_echo_task(self.config, self.data_seed, index)

    def task_from_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """An explicit task: ``{"target": str}``."""
        target = record.get("target")
        if not isinstance(target, str) or not target:
            raise ValueError("an Echo task record needs a non-empty string 'target'")
        return {"target": target}

    def task_id(self, task: Mapping[str, Any], index: int | None) -> str:
        """``echo-<seed>-<index>`` for generated tasks, a content hash for explicit ones."""
        return f"echo-{self.data_seed}-{index}" if index is not None else super().task_id(task, index)

    def default_info(self) -> dict[str, Any]:
        """Echo adds the target to ``info``."""
        return {"target": self.task["target"] if self.task else ""}

    def _start(self, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return f"Repeat exactly: {task['target']}", {}

    def _step(self, action: str) -> StepOutcome:
        target = self.task["target"]
        score = echo_score(action, target)
        success = score == 1.0
        feedback = "" if success else (f"Expected exactly {target!r}, got {truncate_for_feedback(action.strip())!r}.")
        reward = score if self.partial_credit else float(success)
        return StepOutcome(
            observation="Episode over.", reward=reward, terminated=True, success=success, score=score, feedback=feedback
        )
