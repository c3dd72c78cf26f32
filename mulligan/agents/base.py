"""The agent interface: act on many envs at once.

An agent receives, for each env in a batch, the conversation so far (:class:`AgentInput`) and
returns each env's next action (:class:`Action`). Model agents fill in what trainers need (the
exact prompt text, token ids, per-token log-probabilities, and which messages they showed the
model); scripted teachers fill in only the text. Nothing here imports torch.

What a model sees is decided in ONE place, :meth:`Agent.prepare_context`: the agent's system prompt
is put first (unless the conversation already starts with a system message) and its context policy
(:mod:`mulligan.agents.context`) keeps some of the messages. The result is reported on the action as
a compact :class:`ContextRecord` (spans of kept message indices and the system prompt), which the
rollout stores per turn so that trainers rebuild exactly that context
(:meth:`mulligan.training.trajectory.Trajectory.training_messages`). Wrapper agents that rewrite the
conversation for their inner model (NAT's prompt, the sub-goal agents) translate the inner record
with :func:`rewritten_context`; :meth:`ContextRecord.shown` rebuilds what the model saw.

Conversations are lists of chat messages ``{"role": "system"|"user"|"assistant", "content": str}``:
env observations are ``user`` turns and the agent's actions are ``assistant`` turns, so that any
chat template applies and a user can print exactly what a model saw.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

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
        seed: A seed for this input's randomness, derived by the rollout from the run seed, the
            episode (task ``k``, sample ``s``) and the turn, so that an episode's actions do not
            depend on which other episodes share its batch (a resumed run then equals an
            uninterrupted one). Sampling agents should draw from :func:`input_rng`.
    """

    messages: list[Message]
    task: Mapping[str, Any] | None = None
    info: Mapping[str, Any] | None = None
    env_id: str | None = None
    stop: Sequence[str] = ()
    seed: int | None = None

    @property
    def observation(self) -> str:
        """The latest observation (the last user message)."""
        for message in reversed(self.messages):
            if message["role"] == "user":
                return message["content"]
        return ""


@dataclass(frozen=True)
class ContextRecord:
    """Which messages a model was shown, compactly (a few integers, plus what an agent rewrote).

    What the model saw, rebuilt by :meth:`shown`: the system prompt (if any), then for each kept
    input message in order either the message itself or, when the agent rewrote it, the messages
    the model saw in its place. Rewrites describe agents that compose their own prompt around
    the conversation: :class:`~mulligan.agents.nat_prompt.NATPromptAgent` shows the first user
    message as NAT's three-message opening; :class:`~mulligan.agents.flat.FlatAgent` and
    :class:`~mulligan.agents.hierarchical.HierarchicalAgent` show the latest observation as a
    prompt rendered from the whole episode (and nothing else). A rewrite's size does not grow
    with the episode, so a trajectory storing one per turn grows linearly.

    Attributes:
        spans: Half-open ``(start, stop)`` index ranges of the kept input messages, in order.
        system_prompt: The system message the agent put first, or ``None`` when it added none.
        rewritten: ``(index, messages)`` pairs, by increasing index: kept input message ``index``
            was shown as ``messages`` (in order) instead of itself.
    """

    spans: tuple[tuple[int, int], ...]
    system_prompt: str | None = None
    rewritten: tuple[tuple[int, tuple[Message, ...]], ...] = ()

    def covers(self, num_messages: int) -> bool:
        """Whether every one of ``num_messages`` input messages was kept unchanged."""
        if self.rewritten:
            return False
        return self.spans == ((0, num_messages),) or (num_messages == 0 and not self.spans)

    def kept_indices(self) -> list[int]:
        """The indices of the kept input messages, in order."""
        return [i for start, stop in self.spans for i in range(start, stop)]

    def shown(self, messages: Sequence[Message]) -> list[Message]:
        """Exactly what the model saw, rebuilt from the input ``messages`` it was recorded for.

        Raises:
            IndexError: If a span reaches past ``messages`` (the record belongs to another input).
        """
        if self.spans and self.spans[-1][1] > len(messages):
            raise IndexError(f"the record keeps message {self.spans[-1][1] - 1} of a {len(messages)}-message input")
        rewrites = dict(self.rewritten)
        out = [] if self.system_prompt is None else [{"role": "system", "content": self.system_prompt}]
        for index in self.kept_indices():
            out.extend(dict(m) for m in rewrites.get(index, (messages[index],)))
        return out


def rewritten_context(
    messages: Sequence[Message],
    given: Sequence[Message],
    origin: Sequence[int],
    inner: ContextRecord | None,
) -> ContextRecord:
    """The record of a wrapper agent that gave its inner agent rewritten messages.

    A wrapper (NAT's prompt, the flat and hierarchical sub-goal agents) turns the input
    ``messages`` into ``given``, which its inner agent then prepares as usual and records as
    ``inner``; this translates ``inner`` into a record of ``messages``, so that
    :meth:`ContextRecord.shown` of ``messages`` is exactly what the inner model saw.

    Args:
        messages: The wrapper's input messages (the conversation the rollout records).
        given: The messages the wrapper gave its inner agent.
        origin: For each message of ``given``, the index of the input message it stands for
            (non-decreasing: a rewrite keeps the conversation's order).
        inner: The inner action's record (``None``: the inner model saw ``given`` unchanged).

    Raises:
        ValueError: If ``origin`` does not pair with ``given`` or runs backwards.
    """
    if len(origin) != len(given) or any(b < a for a, b in pairwise(origin)):
        raise ValueError("origin must give, for each given message, a non-decreasing index into the input messages")
    if inner is None:
        inner = ContextRecord(((0, len(given)),) if given else ())
    inner_rewrites = dict(inner.rewritten)
    groups: dict[int, list[Message]] = {}
    for k in inner.kept_indices():
        groups.setdefault(origin[k], []).extend(inner_rewrites.get(k, (given[k],)))
    spans: list[tuple[int, int]] = []
    rewritten: list[tuple[int, tuple[Message, ...]]] = []
    for index, shown in groups.items():
        if spans and spans[-1][1] == index:
            spans[-1] = (spans[-1][0], index + 1)
        else:
            spans.append((index, index + 1))
        if shown != [messages[index]]:
            rewritten.append((index, tuple(dict(m) for m in shown)))
    return ContextRecord(tuple(spans), inner.system_prompt, tuple(rewritten))


def context_record(messages: Sequence[Message], kept: Sequence[Message], system_prompt: str | None) -> ContextRecord:
    """The :class:`ContextRecord` of ``kept``, a subsequence of ``messages`` chosen by a context policy.

    Kept messages are matched to the input by identity first (policies return the same dicts), then
    by equality, in order.

    Raises:
        ValueError: If ``kept`` is not a subsequence of ``messages`` (a policy that rewrites
            messages cannot be recorded as indices).
    """
    indices: list[int] = []
    cursor = 0
    for message in kept:
        found = next((j for j in range(cursor, len(messages)) if messages[j] is message), None)
        if found is None:
            found = next((j for j in range(cursor, len(messages)) if messages[j] == message), None)
        if found is None:
            raise ValueError(
                "a context policy must return a subsequence of the messages it is given (it dropped or "
                f"reordered nothing else), but it returned {message!r}; rewrite content in the env or prompt instead"
            )
        indices.append(found)
        cursor = found + 1
    spans: list[tuple[int, int]] = []
    for index in indices:
        if spans and spans[-1][1] == index:
            spans[-1] = (spans[-1][0], index + 1)
        else:
            spans.append((index, index + 1))
    return ContextRecord(tuple(spans), system_prompt)


def input_rng(agent_input: AgentInput, fallback: np.random.Generator | None = None) -> np.random.Generator:
    """The random generator of one input: seeded by ``agent_input.seed`` when the rollout set it.

    Args:
        agent_input: The input an action is drawn for.
        fallback: The generator to use when the input carries no seed (an agent's own).
    """
    if agent_input.seed is not None:
        return np.random.default_rng(agent_input.seed)
    return fallback if fallback is not None else np.random.default_rng()


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
        context: Which input messages the model saw, and the system prompt the agent added
            (:meth:`Agent.prepare_context`); ``None`` when it saw the input messages unchanged.
        prefill: The text the model's answer was started with before it generated (CORGI's
            ``- Output: ...`` primer, from ``info["response_prefix"]``; see :func:`response_prefix`),
            ``None`` when the answer was not prefilled. ``text`` is then the continuation only, and
            ``prompt``/``prompt_ids`` end with the prefix.
    """

    text: str
    prompt: str | None = None
    prompt_ids: list[int] | None = None
    completion_ids: list[int] | None = None
    logprobs: list[float] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    context: ContextRecord | None = None
    prefill: str | None = None


#: The ``info`` key under which an env offers the text an answer starts with (CORGI's primer).
RESPONSE_PREFIX_KEY = "response_prefix"


def response_prefix(agent_input: AgentInput) -> str | None:
    """The text a prefilling agent starts its answer with: ``info["response_prefix"]``, or ``None``.

    Envs whose tasks have a primer (CORGI's ``- Output: ...`` line, arXiv 2411.01483 App. A) put it
    in the ``info`` of reset and of every step, so a retry turn sees it too. An agent built with
    ``prefill_response=True`` conditions its model on the rendered prompt followed by this text and
    sends only the continuation (the env scores it as one, with ``primed=True``).

    Raises:
        ValueError: If the env put something other than a string there.
    """
    info = agent_input.info or {}
    prefix = info.get(RESPONSE_PREFIX_KEY)
    if prefix is None or prefix == "":
        return None
    if not isinstance(prefix, str):
        raise ValueError(f'info["{RESPONSE_PREFIX_KEY}"] must be a string, got {type(prefix).__name__}')
    return prefix


class Agent(abc.ABC):
    """Base class of every policy: model agents, served models, scripted teachers.

    Subclasses implement :meth:`act`. An agent keeps no hidden state between episodes beyond what
    its docstring says (a scripted noisy teacher, for instance, owns a random generator that
    :meth:`reset` reseeds).

    Attributes:
        system_prompt: A system message put first in what the model sees (``None``: none).
        context: A context policy (:mod:`mulligan.agents.context`); ``None`` keeps everything.
    """

    system_prompt: str | None = None
    context: Any = None

    def count_tokens(self, text: str) -> int:
        """Size of ``text`` for token-budget policies; agents with a tokenizer count real tokens."""
        from mulligan.agents.context import approximate_token_count

        return approximate_token_count(text)

    def prepare_context(self, messages: Sequence[Message]) -> tuple[list[Message], ContextRecord | None]:
        """What the model sees for ``messages``, and its record (``None`` when nothing changed).

        The one place where the system prompt and the context policy are applied: the system
        prompt goes first unless the conversation already starts with a system message, then the
        policy keeps the messages it keeps.

        Raises:
            ValueError: If ``messages`` is empty.
        """
        messages = list(messages)
        if not messages:
            raise ValueError("AgentInput.messages is empty; an agent needs at least the first observation")
        system = None
        if self.system_prompt is not None and messages[0]["role"] != "system":
            system = {"role": "system", "content": self.system_prompt}
        shown = [system, *messages] if system is not None else messages
        if self.context is not None:
            shown = list(self.context(shown, self.count_tokens))
        added = system is not None and any(m is system for m in shown)
        kept = [m for m in shown if m is not system]
        record = context_record(messages, kept, self.system_prompt if added else None)
        if record.system_prompt is None and record.covers(len(messages)):
            return [dict(m) for m in shown], None
        return [dict(m) for m in shown], record

    def prepare_messages(self, messages: Sequence[Message]) -> list[Message]:
        """The messages the model sees for ``messages`` (see :meth:`prepare_context`)."""
        return self.prepare_context(messages)[0]

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


class OpeningAgent(Agent):
    """Base of wrappers that show their inner model an opening in place of the task's first message.

    :class:`~mulligan.agents.nat_prompt.NATPromptAgent` (NAT's instruction, acknowledgement and
    question) and :class:`~mulligan.agents.one_shot.OneShotAgent` (RISE's one-shot demo) differ only
    in :meth:`opening`. The wrapper's context policy (``self.context``) is applied to the env's
    conversation first, then the first user message of what is kept is replaced by the opening;
    every action records, through :func:`rewritten_context`, what the inner model saw, so
    ``Trajectory.training_messages`` rebuilds it exactly.

    Subclasses set ``self.agent`` (the inner agent) and ``self.context`` (a policy or ``None``),
    and implement :meth:`opening`.
    """

    agent: Agent
    context: Any = None

    @staticmethod
    def check_inner_policy(agent: Agent, wrapper: str, what: str) -> None:
        """Refuse an inner agent with a context policy of its own (it would cut the opening).

        Args:
            agent: The inner agent.
            wrapper: The wrapper's class name, for the message.
            what: What the inner policy would mistake for an attempt (e.g. "NAT's acknowledgement").

        Raises:
            ValueError: Naming the fix: move the policy to the wrapper.
        """
        from mulligan.agents.context import KeepAll

        inner_policy = getattr(agent, "context", None)
        if inner_policy is not None and not isinstance(inner_policy, KeepAll):
            raise ValueError(
                f"the inner agent's context policy {inner_policy!r} would take {what} for an attempt and drop "
                f"the task; build the inner agent without one and pass {wrapper}(..., context={inner_policy!r})"
            )

    @abc.abstractmethod
    def opening(self, item: AgentInput, messages: Sequence[Message]) -> list[Message]:
        """The messages shown in place of the first user message of ``messages`` (what the policy kept)."""

    def count_tokens(self, text: str) -> int:
        """Token counts of the inner agent (for a token-budget policy)."""
        return self.agent.count_tokens(text)

    def rewrite(self, item: AgentInput) -> AgentInput:
        """``item`` as the inner agent sees it (the policy applied, then the opening)."""
        return self._rewrite(item)[0]

    def _rewrite(self, item: AgentInput) -> tuple[AgentInput, list[int]]:
        """The rewritten input and, for each of its messages, the index of the input message it stands for."""
        from dataclasses import replace

        kept = list(range(len(item.messages)))
        if self.context is not None:
            if not item.messages:
                raise ValueError("AgentInput.messages is empty; an agent needs at least the first observation")
            record = context_record(item.messages, self.context(item.messages, self.count_tokens), None)
            kept = [i for start, stop in record.spans for i in range(start, stop)]
        messages = [item.messages[i] for i in kept]
        first = next((k for k, m in enumerate(messages) if m["role"] == "user"), None)
        if first is None:  # no task message: nothing to rewrite
            return replace(item, messages=[dict(m) for m in messages]), kept
        opening = self.opening(item, messages)
        given = [*messages[:first], *opening, *messages[first + 1 :]]
        origin = [*kept[:first], *[kept[first]] * len(opening), *kept[first + 1 :]]
        return replace(item, messages=[dict(m) for m in given]), origin

    def _recorded(self, item: AgentInput, given: AgentInput, origin: list[int], action: Action) -> Action:
        """``action`` with its context recorded against ``item``'s messages."""
        from dataclasses import replace

        return replace(action, context=rewritten_context(item.messages, given.messages, origin, action.context))

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """Act with the rewritten prompts."""
        rewritten = [self._rewrite(x) for x in inputs]
        actions = self.agent.act([given for given, _ in rewritten])
        return [self._recorded(x, g, o, a) for x, (g, o), a in zip(inputs, rewritten, actions, strict=True)]

    def sample(self, inputs: Sequence[AgentInput], num_samples: int) -> list[list[Action]]:
        """Sample with the rewritten prompts."""
        rewritten = [self._rewrite(x) for x in inputs]
        samples = self.agent.sample([given for given, _ in rewritten], num_samples)
        return [
            [self._recorded(x, g, o, a) for a in actions]
            for x, (g, o), actions in zip(inputs, rewritten, samples, strict=True)
        ]

    def reset(self, seed: int | None = None) -> None:
        """Reseed the inner agent."""
        self.agent.reset(seed)
