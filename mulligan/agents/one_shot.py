"""RISE's one-shot opening (Qu et al. 2024, arXiv 2407.18219) and the agent that prompts with it.

The official RISE code opens every conversation, in generation, training data and evaluation
alike, with one worked example before the task (``utils/template.py``, ``workflow_convert.py``,
``FastChat/fastchat/train/train.py: preprocess``):

1. the demo's question (the instruction and a word problem) as the **system message** (the
   training side puts it in the Zephyr system slot),
2. the demo's answer as an assistant turn that is **not learned**,
3. the task as a user turn framed as the next question: ``"Great job! You've successfully
   answered the question. Now, let's move on to the next one.\\n{query}"`` (the framing sentence is
   the official environment's text, kept exactly; ``query`` is the dataset's question).

The rest of the episode (attempts, "The answer is incorrect. Please try again. ..." feedback)
follows unchanged. The official generation code renders the demo's question as a *user* turn
while its trainer puts it in the system slot; mulligan uses the trainer's form everywhere, so a
model is prompted as it was trained.

The opening needs a chat template that accepts an assistant turn right after the system message
(Zephyr's, ChatML's such as Qwen's and the tiny model's do; templates that insist on alternating
from a user turn, such as Llama-2-chat's, raise when rendering it).

The demo is data, not code: a JSON file ``{"question": ..., "answer": ...}``
(:func:`load_one_shot_demo`), or ``builtin``, a demo written for mulligan in the same form (an
instruction asking for a ``\\boxed{}`` answer, a word problem, a stepwise answer that ends in
``\\boxed{}``); the authors' drama-club text is not shipped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mulligan.agents.base import Agent, AgentInput, Message, OpeningAgent
from mulligan.agents.nat_prompt import question_of

#: The official environment's framing of the task after the demo (RISE ``environments/gsm8k.py``).
NEXT_QUESTION = "Great job! You've successfully answered the question. Now, let's move on to the next one.\n{query}"
#: ``--one_shot builtin``.
BUILTIN = "builtin"


@dataclass(frozen=True)
class OneShotDemo:
    """One worked example shown before every task.

    Attributes:
        question: The demo's question with its instruction (shown as the system message).
        answer: The demo's answer (an assistant turn with no loss).
    """

    question: str
    answer: str

    def __post_init__(self) -> None:
        for name in ("question", "answer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"a one-shot demo needs a non-empty string {name!r}, got {value!r}")


#: A demo written for mulligan in the form of RISE's (not the authors' text): the instruction and a
#: word problem, then a stepwise answer whose final answer is boxed.
BUILTIN_DEMO = OneShotDemo(
    question=(
        "You will be given math word problems. Work through each problem one step at a time, explaining every "
        "step, and write your final answer as \\boxed{Your Answer}.\n\n"
        "Here is the problem:\n\n"
        "A library had 145 books on a shelf. On Monday 38 books were borrowed and 12 were returned. How many "
        "books are on the shelf now?"
    ),
    answer=(
        "Step 1: The shelf starts with 145 books. Step 2: 38 books were borrowed, which leaves $145 - 38 = 107$ "
        "books. Step 3: 12 books came back, which makes $107 + 12 = 119$ books. Answer: \\boxed{119}"
    ),
)


def load_one_shot_demo(spec: str) -> OneShotDemo:
    """The demo named by ``spec``: ``builtin`` (:data:`BUILTIN_DEMO`) or a JSON file's path.

    The file holds one object ``{"question": str, "answer": str}``.

    Raises:
        ValueError: If the file is not such an object.
        FileNotFoundError: If the path does not exist.
    """
    if spec == BUILTIN:
        return BUILTIN_DEMO
    with open(spec, encoding="utf-8") as handle:
        try:
            record = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{spec}: not JSON ({error}); write {{'question': ..., 'answer': ...}}") from error
    if not isinstance(record, dict) or set(record) != {"question", "answer"}:
        raise ValueError(f"{spec}: a one-shot demo is a JSON object with exactly 'question' and 'answer'")
    return OneShotDemo(record["question"], record["answer"])


def one_shot_messages(demo: OneShotDemo, query: str) -> list[Message]:
    """The opening of a one-shot conversation: demo question (system), demo answer, the framed task."""
    return [
        {"role": "system", "content": demo.question.strip()},  # stripped, as the official trainer does
        {"role": "assistant", "content": demo.answer},
        {"role": "user", "content": NEXT_QUESTION.format(query=query)},
    ]


def with_one_shot(messages: Sequence[Message], demo: OneShotDemo, task: Any = None) -> list[Message]:
    """``messages`` (an env conversation) with its first user message replaced by the one-shot opening.

    The query is the task record's ``question`` when it has one, else the first user message
    (:func:`~mulligan.agents.nat_prompt.question_of`).

    Raises:
        ValueError: If ``messages`` already has a system message (the demo takes that slot).
    """
    if any(m["role"] == "system" for m in messages):
        raise ValueError("the one-shot demo is the system message; the conversation already has one")
    first = next((k for k, m in enumerate(messages) if m["role"] == "user"), None)
    if first is None:
        return [dict(m) for m in messages]
    opening = one_shot_messages(demo, question_of(task, messages))
    return [*(dict(m) for m in messages[:first]), *opening, *(dict(m) for m in messages[first + 1 :])]


class OneShotAgent(OpeningAgent):
    """Wrap an agent so that its model sees RISE's one-shot opening before the task.

    The env's first user message is replaced by :func:`one_shot_messages` (the demo question as
    the system message, the demo answer, then the framed task); everything after it is kept. As
    with :class:`~mulligan.agents.nat_prompt.NATPromptAgent`, a context policy (RISE's
    ``LastAttempts(1)``) belongs to this wrapper and is applied to the env's conversation before
    the rewrite: an inner policy would take the demo answer for an attempt and drop the task.

    Each action records, through :func:`~mulligan.agents.base.rewritten_context`, that the first
    user message was shown as the opening, so ``Trajectory.training_messages`` rebuilds exactly
    what the model saw, with the demo answer as context (only the turn's own action is learned).

    Args:
        agent: The agent to wrap; it must add no system prompt and have no context policy.
        demo: The worked example (:func:`load_one_shot_demo`).
        context: A context policy applied to the env's conversation first; ``None`` keeps all.

    Raises:
        ValueError: If the inner agent has a system prompt or a context policy of its own.
    """

    def __init__(self, agent: Agent, demo: OneShotDemo, *, context: Any = None):
        if getattr(agent, "system_prompt", None):
            raise ValueError("the one-shot demo is the system message; build the inner agent without system_prompt")
        self.check_inner_policy(agent, "OneShotAgent", "the demo answer")
        self.agent = agent
        self.demo = demo
        self.context = context
        self.name = f"one_shot({getattr(agent, 'name', None) or type(agent).__name__})"

    def opening(self, item: AgentInput, messages: Sequence[Message] = ()) -> list[Message]:
        """RISE's one-shot opening (demo question as the system message, its answer, the framed task).

        Raises:
            ValueError: If the kept conversation already has a system message (the demo takes that slot).
        """
        if any(m["role"] == "system" for m in messages):
            raise ValueError("the one-shot demo is the system message; the conversation already has one")
        return one_shot_messages(self.demo, question_of(item.task, list(messages) or item.messages))


__all__ = [
    "BUILTIN",
    "BUILTIN_DEMO",
    "NEXT_QUESTION",
    "OneShotAgent",
    "OneShotDemo",
    "load_one_shot_demo",
    "one_shot_messages",
    "with_one_shot",
]
