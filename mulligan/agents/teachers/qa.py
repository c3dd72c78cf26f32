"""Scripted ReAct teachers for ``Mulligan/HotpotQA-v0`` and ``Mulligan/StrategyQA-v0``.

* :class:`QAOracle` solves a task through the env's own actions: it searches the gold
  supporting documents in order, looks up the supporting sentences a search did not show, and
  finishes with the gold answer, writing a ``Thought:`` before each ``Action:`` that reports what
  the last observation established (and, for StrategyQA, which sub-question of the gold
  decomposition it is answering).
* :class:`NoisyQATeacher` follows the oracle but, in a fraction ``error_rate`` of episodes, fails
  the way ReAct agents fail on HotpotQA (Yao et al. 2023, Sec. 3.3 error analysis): it searches a
  distractor, stops after the first hop, picks the wrong entity for the second hop, or answers
  without evidence.

Together they stand in for NAT's GPT teacher (Wang et al. 2024, arXiv 2402.11651, Sec. 3.1):
the oracle's trajectories are the positive examples, the noisy teacher's failures the negative
ones. Both read the gold solution from ``AgentInput.task`` and their progress from
``AgentInput.messages``, so they keep no state between calls and can drive any number of envs at
once. A new attempt starts after the last message that states the question or after the last
``finish`` the env accepted (so :class:`~mulligan.envs.wrappers.RetryWithFeedback` sessions work;
a ``finish`` answered by an observation starting with "Invalid" did not end the attempt).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mulligan.agents.base import Action, Agent, AgentInput
from mulligan.envs.hotpotqa import ACTION_VERBS
from mulligan.envs.react import parse_react_action
from mulligan.envs.retrieval import normalize_title
from mulligan.envs.verifiers.qa import exact_match, normalize_yes_no

_WORD = re.compile(r"\w+")
#: The teachers give up and answer after this many actions in one attempt (the env allows 10).
MAX_TEACHER_STEPS = 9

ERROR_MODES: tuple[str, ...] = ("no_evidence", "distractor", "stop_early", "wrong_entity")


@dataclass
class _Episode:
    """The current attempt as read from the conversation: parsed actions and what each returned."""

    actions: list[tuple[str, str]]
    observations: list[str]

    @property
    def seen(self) -> str:
        return "\n".join(self.observations)

    def searched(self) -> list[str]:
        return [argument for verb, argument in self.actions if verb == "search"]

    def lookups_since_search(self, keyword: str) -> int:
        count = 0
        for verb, argument in reversed(self.actions):
            if verb == "search":
                break
            if verb == "lookup" and argument.lower() == keyword.lower():
                count += 1
        return count


def _read_episode(inp: AgentInput) -> _Episode:
    question = str((inp.task or {}).get("question", ""))
    messages = inp.messages
    start = 0
    for i, message in enumerate(messages):
        if message["role"] == "user" and question and question in message["content"]:
            start = i + 1
        elif message["role"] == "assistant":
            parsed = parse_react_action(message["content"], ACTION_VERBS)
            following = messages[i + 1]["content"] if i + 1 < len(messages) else ""
            # A finish the env accepted ends an attempt; one it refused ("Invalid answer...") does not.
            if parsed is not None and parsed[0] == "finish" and not following.startswith("Invalid"):
                start = i + 1
    actions, observations = [], []
    for i in range(start, len(messages)):
        if messages[i]["role"] != "assistant":
            continue
        parsed = parse_react_action(messages[i]["content"], ACTION_VERBS)
        actions.append(parsed if parsed is not None else ("invalid", ""))
        following = messages[i + 1] if i + 1 < len(messages) else None
        observations.append(following["content"] if following and following["role"] == "user" else "")
    return _Episode(actions, observations)


def _step(thought: str, verb: str, argument: str) -> str:
    return f"Thought: {thought}\nAction: {verb}[{argument}]"


def lookup_keyword(sentences: Sequence[str], index: int) -> tuple[str, int]:
    """The keyword whose ``lookup`` reaches sentence ``index`` soonest, and how many lookups that takes.

    Lookup returns matching sentences in order (case-insensitive substring match), so a word of
    the target sentence that fewer earlier sentences contain needs fewer lookups; among equals the
    longest word wins, being the most specific.
    """
    target = sentences[index]
    best: tuple[int, int, str] | None = None
    for word in _WORD.findall(target):
        if len(word) < 3:
            continue
        needle = word.lower()
        rank = 1 + sum(needle in s.lower() for s in sentences[:index])
        candidate = (rank, -len(word), word)
        if best is None or candidate < best:
            best = candidate
    if best is None:
        return target.strip()[:40] or "a", 1 + index
    return best[2], best[0]


class QAOracle(Agent):
    """A scripted ReAct policy that solves QA tasks through search, lookup and finish.

    For each gold supporting document in the order of ``supporting_facts``: ``search`` its title,
    then ``lookup`` each supporting sentence the search did not show (with the keyword that reaches
    it in the fewest lookups), then ``finish`` with the gold answer. StrategyQA tasks (with a
    ``decomposition``) get thoughts that name the sub-question each step answers. On every one of
    the env's own tasks this reaches the answer in at most 7 steps.

    The policy is a function of ``(task, conversation)``: it keeps no state, so one instance can
    act for many envs and episodes.
    """

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """One ReAct step per input."""
        return [self._act_one(inp) for inp in inputs]

    def _draw(self, inp: AgentInput, point: int) -> float:
        """A uniform draw for divergence point ``point``.

        From the input's own seed when the rollout gives one (so a resumed collection draws what an
        uninterrupted one did), else from the teacher's generator.
        """
        if inp.seed is None:
            return float(self.rng.random())
        return float(np.random.default_rng([inp.seed, point]).random())

    def _act_one(self, inp: AgentInput) -> Action:
        if inp.task is None:
            raise ValueError("QA teachers read the gold solution from AgentInput.task; pass env.unwrapped.task")
        return Action(self.oracle_step(inp.task, _read_episode(inp)))

    # ------------------------------------------------------------------ the gold path
    @staticmethod
    def _plan(task: Mapping[str, Any]) -> list[tuple[str, list[int]]]:
        titles: dict[str, list[int]] = {}
        for title, index in task.get("supporting_facts", []):
            titles.setdefault(title, []).append(int(index))
        return list(titles.items())

    @staticmethod
    def _sentences(task: Mapping[str, Any], title: str) -> list[str] | None:
        for context_title, sentences in task.get("context", []):
            if context_title == title:
                return list(sentences)
        return None

    def _sub_question(self, task: Mapping[str, Any], title: str) -> str | None:
        decomposition, evidence = task.get("decomposition"), task.get("evidence")
        if not decomposition or not evidence:
            return None
        for sub_question, item in zip(decomposition, evidence, strict=False):
            if isinstance(item, list | tuple) and item and item[0] == title:
                return str(sub_question)
        return None

    def _new_evidence(self, task: Mapping[str, Any], episode: _Episode) -> str:
        """A sentence quoting the gold facts the last observation showed, for the next thought."""
        if not episode.observations:
            return ""
        last = episode.observations[-1]
        quoted = []
        for title, indices in self._plan(task):
            sentences = self._sentences(task, title) or []
            for index in indices:
                if index < len(sentences) and sentences[index].strip() and sentences[index].strip() in last:
                    quoted.append(sentences[index].strip())
        if not quoted:
            return ""
        return "It says: " + " ".join(quoted) + " "

    def oracle_step(self, task: Mapping[str, Any], episode: _Episode) -> str:
        """The oracle's next action text given the attempt so far."""
        evidence = self._new_evidence(task, episode)
        seen = episode.seen
        searched = [normalize_title(t) for t in episode.searched()]
        current = searched[-1] if searched else None
        if len(episode.actions) < MAX_TEACHER_STEPS:
            for title, indices in self._plan(task):
                key = normalize_title(title)
                sub_question = self._sub_question(task, title)
                if key not in searched:
                    intent = (
                        f"Next I need to know: {sub_question}" if sub_question else (f"I need to read about {title}.")
                    )
                    return _step(f"{evidence}{intent} I will search {title}.", "search", title)
                sentences = self._sentences(task, title)
                if sentences is None:
                    continue
                for index in indices:
                    if index >= len(sentences) or sentences[index].strip() in seen:
                        continue
                    keyword, needed = lookup_keyword(sentences, index)
                    if current != key:
                        return _step(f"{evidence}I need more from {title}.", "search", title)
                    if episode.lookups_since_search(keyword) < needed:
                        return _step(
                            f'{evidence}The opening of {title} does not say it; I will look up "{keyword}".',
                            "lookup",
                            keyword,
                        )
        return self._finish_step(task, evidence)

    def _finish_step(self, task: Mapping[str, Any], evidence: str) -> str:
        answer = str(task["answer"])
        decomposition = task.get("decomposition")
        if decomposition:
            reasoning = f"{decomposition[-1]} {answer}."
            return _step(f"{evidence}{reasoning} So the answer is {answer}.", "finish", answer)
        return _step(f"{evidence}So the answer is {answer}.", "finish", answer)


class NoisyQATeacher(QAOracle):
    """The oracle with realistic failures in a fraction ``error_rate`` of episodes.

    The failure modes, each drawn with equal probability among those a task allows:

    * ``no_evidence``: answers at once with a plausible wrong answer, before any search.
    * ``distractor``: first searches a distractor document (the one sharing most words with the
      first gold title) and answers from it.
    * ``stop_early``: after the first gold document, answers with what it found there (the bridge
      entity or the first compared entity) instead of taking the second hop.
    * ``wrong_entity``: for the second hop, searches an entity that shares a name with the right
      one and answers from that document.

    Wrong answers come from the task's ``distractor_answers`` (procedural tasks name same-type
    confusions), else the opposite of a yes/no answer, else distractor titles; they never match the
    gold answer, so an episode fails exactly when a failure mode was drawn. Decisions are drawn
    when the trajectory reaches the point where the mode would diverge from the oracle, with
    probabilities chosen so that each mode has probability ``error_rate / (allowed modes)`` per
    episode; what happened earlier is read back from the conversation, so the teacher stays
    stateless apart from its random generator. The mode is reported in ``Action.metadata["error_mode"]``.

    Args:
        error_rate: Probability that an episode fails, in [0, 1].
        seed: Seed of the teacher's random generator (:meth:`reset` reseeds it).
        modes: The failure modes to use (default: all of :data:`ERROR_MODES`).
    """

    def __init__(self, error_rate: float = 0.3, seed: int | None = 0, modes: Sequence[str] = ERROR_MODES):
        if isinstance(error_rate, bool) or not isinstance(error_rate, int | float) or not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be a number in [0, 1], got {error_rate!r}")
        unknown = [m for m in modes if m not in ERROR_MODES]
        if unknown or not modes:
            raise ValueError(f"modes must be a non-empty subset of {ERROR_MODES}, got {list(modes)!r}")
        self.error_rate = float(error_rate)
        self.modes = tuple(modes)
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        """Reseed the random generator."""
        self.rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ wrong paths
    @staticmethod
    def _gold_titles(task: Mapping[str, Any]) -> list[str]:
        return [title for title, _ in QAOracle._plan(task)]

    def _confusable(self, task: Mapping[str, Any], title: str, exclude: Sequence[str] = ()) -> str | None:
        """The non-gold context title sharing most words with ``title`` (first in context on ties)."""
        gold = {normalize_title(t) for t in self._gold_titles(task)} | {normalize_title(t) for t in exclude}
        words = set(_WORD.findall(title.lower()))
        best, best_overlap = None, -1
        for candidate, _ in task.get("context", []):
            if normalize_title(candidate) in gold:
                continue
            overlap = len(words & set(_WORD.findall(candidate.lower())))
            if overlap > best_overlap:
                best, best_overlap = candidate, overlap
        return best

    def wrong_answers(self, task: Mapping[str, Any]) -> list[str]:
        """Plausible answers that do not match the gold one, best first."""
        gold = str(task["answer"])
        yes_no = normalize_yes_no(gold)
        if yes_no is not None:
            # A yes/no question's only plausible wrong answer is the other one.
            flipped = "No" if yes_no == "Yes" else "Yes"
            return [flipped if gold[:1].isupper() else flipped.lower()]
        candidates = [str(a) for a in task.get("distractor_answers", [])]
        candidates += [title for title, _ in task.get("context", []) if title not in self._gold_titles(task)]
        candidates.append("unknown")
        return [c for c in candidates if c.strip() and not exact_match(c, gold)]

    def _allowed(self, task: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """Failure modes that diverge at the first step, and at the second hop, for this task."""
        has_distractor = self._confusable(task, self._gold_titles(task)[0] if self._gold_titles(task) else "")
        first = [m for m in ("no_evidence", "distractor") if m in self.modes]
        if "distractor" in first and not has_distractor:
            first.remove("distractor")
        second: list[str] = []
        if len(self._gold_titles(task)) >= 2:
            second = [m for m in ("stop_early", "wrong_entity") if m in self.modes]
            if "wrong_entity" in second and not self._confusable(task, self._gold_titles(task)[1]):
                second.remove("wrong_entity")
        return first, second

    def _act_one(self, inp: AgentInput) -> Action:
        if inp.task is None:
            raise ValueError("QA teachers read the gold solution from AgentInput.task; pass env.unwrapped.task")
        task, episode = inp.task, _read_episode(inp)
        gold_keys = {normalize_title(t) for t in self._gold_titles(task)}
        wrong = self.wrong_answers(task)
        searched = episode.searched()
        # Already off the gold path (a distractor or wrong entity was searched): answer from it.
        off_path = [t for t in searched if normalize_title(t) not in gold_keys]
        if off_path:
            page = self._sentences(task, off_path[-1]) or []
            text = " ".join(page)
            answer = next((w for w in wrong if w in text), wrong[0])
            thought = f"{off_path[-1]} must be what the question means. So the answer is {answer}."
            mode = "distractor" if normalize_title(searched[0]) not in gold_keys else "wrong_entity"
            return Action(_step(thought, "finish", answer), metadata={"error_mode": mode})
        first, second = self._allowed(task)
        num_modes = len(first) + len(second)
        share = self.error_rate / num_modes if num_modes else 0.0
        gold_titles = self._gold_titles(task)
        if not episode.actions and first:
            # Divergence point 1: each first-step mode with probability `share`.
            draw = self._draw(inp, 1)
            for i, mode in enumerate(first):
                if draw < share * (i + 1):
                    return self._fail(task, mode, wrong)
        oracle = self.oracle_step(task, episode)
        parsed = parse_react_action(oracle, ACTION_VERBS)
        distinct = {normalize_title(t) for t in searched}
        at_second_hop = (
            parsed is not None
            and parsed[0] == "search"
            and len(distinct) == 1
            and normalize_title(parsed[1]) not in distinct
            and len(gold_titles) >= 2
        )
        if at_second_hop and second:
            # Divergence point 2: conditional on having come this far, so each mode's overall
            # probability is still `share`.
            remaining = 1.0 - share * len(first)
            draw = self._draw(inp, 2) * remaining if remaining > 0 else 0.0
            for i, mode in enumerate(second):
                if draw < share * (i + 1):
                    return self._fail(task, mode, wrong, episode)
        return Action(oracle, metadata={"error_mode": ""})

    def _fail(self, task: Mapping[str, Any], mode: str, wrong: list[str], episode: _Episode | None = None) -> Action:
        gold_titles = self._gold_titles(task)
        if mode == "no_evidence":
            thought = f"I think I remember this one. The answer is {wrong[0]}."
            return Action(_step(thought, "finish", wrong[0]), metadata={"error_mode": mode})
        if mode == "distractor":
            title = self._confusable(task, gold_titles[0]) or gold_titles[0]
            return Action(_step(f"I need to read about {title}.", "search", title), metadata={"error_mode": mode})
        if mode == "stop_early":
            options = [gold_titles[1], gold_titles[0], *wrong]
            answer = next(o for o in options if not exact_match(o, str(task["answer"])))
            if normalize_yes_no(str(task["answer"])) is not None:
                answer = wrong[0]
            thought = f"That should be enough. The answer is {answer}."
            return Action(_step(thought, "finish", answer), metadata={"error_mode": mode})
        title = self._confusable(task, gold_titles[1]) or gold_titles[1]
        thought = f"Next I need to read about {title}."
        return Action(_step(thought, "search", title), metadata={"error_mode": mode})


#: The former name of :class:`QAOracle` (teachers are named ``<Family>Oracle`` and ``Noisy<Family>Teacher``).
QAOracleTeacher = QAOracle
