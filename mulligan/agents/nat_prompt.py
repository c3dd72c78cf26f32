"""NAT's prompts (Wang et al. 2024, arXiv 2402.11651) and the agent that prompts a model with them.

NAT tells a model, in the prompt, whether the trajectory that follows succeeded (Sec. 3.2). The
strings here are those of the official prompt files (Reason-Wang/NAT, ``prompts/*/*.json``); the
tests pin them character for character. A NAT conversation is:

1. a user message with the task instruction (the tools, and for the QA target-aware templates a
   note that the steps may be correct or incorrect),
2. the assistant's fixed reply ``"I've understood your instruction, start please."`` (no loss),
3. the question prompt, which carries the signal: a suffix instruction
   (``"Question: {question}. Generate a sequence of Thought and Action steps to solve the
   problem correctly."`` or its ``incorrectly`` twin), one of the signal ablations of Sec. 4.4
   (a prefix tag ``"[Correct] Question: {question}."``, meaningless tags, random sentences, or the
   inverse: each label given the other's prompt), or a fine-grained quality tag for QA
   (``"[Mostly Correct] Question: ..."``),
4. the trajectory itself (the agent's turns are learned, the env's are not).

At inference the model is prompted with the positive signal (:class:`NATPromptAgent`).

Domains (the official prompt files): ``math`` (GSM8K-style ReAct with ``calculate``/``finish``,
``Mulligan/MathReAct-v0``), ``math_cot`` (the official chain-of-thought variant: no preamble,
``Please solve the problem correctly.``; for single-step ``Mulligan/Math-v0``), ``hotpotqa``
(``search``/``finish``; ``qa`` is an alias) and ``strategyqa`` (adds ``Remember you should answer
Yes or No.``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mulligan.agents.base import Agent, AgentInput, Message, OpeningAgent
from mulligan.envs.verifiers.qa import CORRECT, FINE_GRAINED_LABELS

#: The assistant's reply to the instruction, with no loss (every official NAT template).
ACKNOWLEDGEMENT = "I've understood your instruction, start please."

_MATH_TOOLS = (
    "Solve a math problem with interleaving Thought, Action, Observation steps. Thought can reason about the "
    "current situation, and Action can be two types:\n"
    "(1) calculate[expression], which calculates the expression and returns the answer.\n"
    "(2) finish[answer], which returns the answer and finishes the task."
)
# The space before the first newline is in the official QA prompts.
_QA_TOOLS = (
    "Solve a question answering task with interleaving Thought, Action, Observation steps. Thought can reason "
    "about the current situation, and Action can be two types: \n"
    "(1) search[query], which searches a query on google and returns a short snippet containing the answer. "
    "Note that sometimes the snippet does not contain the answer, and some alternative search might be needed.\n"
    "(2) finish[answer], which returns the answer and finishes the task."
)
#: Added to the QA instruction by the binary target-aware templates (not by the fine-grained ones).
_QA_TARGET_AWARE_NOTE = (
    " You need to generate a sequence of Thought and Action steps to solve the question. Note that the steps "
    "could be correct or incorrect. You need to follow the instruction strictly."
)
_YES_NO = " Remember you should answer Yes or No."

#: The first user message per domain and template kind: ``plain`` (no signal: the official
#: ``zero-shot`` template, used by NUT and positives-only), ``target_aware`` (NAT's binary signal),
#: ``graded`` (the fine-grained QA templates). ``None``: no preamble (the CoT variant).
INSTRUCTIONS: dict[str, dict[str, str | None]] = {
    "math": {"plain": _MATH_TOOLS, "target_aware": _MATH_TOOLS, "graded": _MATH_TOOLS},
    "math_cot": {"plain": None, "target_aware": None, "graded": None},
    "hotpotqa": {"plain": _QA_TOOLS, "target_aware": _QA_TOOLS + _QA_TARGET_AWARE_NOTE, "graded": _QA_TOOLS},
    "strategyqa": {
        "plain": _QA_TOOLS + _YES_NO,
        "target_aware": _QA_TOOLS + _QA_TARGET_AWARE_NOTE + _YES_NO,
        "graded": _QA_TOOLS + _YES_NO,
    },
}
DOMAIN_ALIASES = {"qa": "hotpotqa"}
DOMAINS = (*INSTRUCTIONS, *DOMAIN_ALIASES)

_QA_SIGNAL = {
    True: "Question: {question}. Generate a sequence of Thought and Action steps to solve the question **correctly**.",
    False: "Question: {question}. Generate a sequence of Thought and Action steps. But **incorrectly** solve the "
    "question.",
}
#: NAT's suffix prompts (the ``zero-shot-target-aware`` templates; the QA asterisks are literal).
SUFFIX_PROMPTS: dict[str, dict[bool, str]] = {
    "math": {
        True: "Question: {question}. Generate a sequence of Thought and Action steps to solve the problem correctly.",
        False: "Question: {question}. Generate a sequence of Thought and Action steps. But incorrectly solve the "
        "problem.",
    },
    "math_cot": {
        True: "Question: {question}. Please solve the problem correctly.",
        False: "Question: {question}. Generate steps that incorrectly solve the problem.",
    },
    "hotpotqa": _QA_SIGNAL,
    "strategyqa": _QA_SIGNAL,
}
#: The prefix-tag ablation (Sec. 4.4; ``zero-shot-target-aware-prefix-*``): (positive, negative) tags.
PREFIX_TAGS: dict[str, tuple[str, str]] = {
    "correct": ("[Correct]", "[Incorrect]"),
    "good": ("[Good]", "[Bad]"),
    "AB": ("[A]", "[B]"),
    "meaningless": ("[1]", "[2]"),
    "laptop": ("[Laptop]", "[Screen]"),
}
#: Every signal ablation of Sec. 4.4 selected by ``tags`` with ``position="prefix"``: (positive,
#: negative) question prompts, as the official math templates write them. The tag pairs above go
#: before the question (``"[Correct] Question: {question}."``); ``good_suffix``
#: (``zero-shot-target-aware-good``) puts the tag after it, and ``random_sentence``
#: (``zero-shot-target-aware-random-sentence``) follows the question with one of two unrelated
#: sentences, so the signal carries no meaning the model could already know.
TAG_PROMPTS: dict[str, tuple[str, str]] = {
    **{name: (f"{p} Question: {{question}}.", f"{n} Question: {{question}}.") for name, (p, n) in PREFIX_TAGS.items()},
    "good_suffix": ("Question: {question}. [Good]", "Question: {question}. [Bad]"),
    "random_sentence": (
        "Question: {question}. 15th-century Italy saw the formation of the two main variants that are known today.",
        "Question: {question}. An apple is a round, edible fruit produced by an apple tree.",
    ),
}
TAGS = tuple(TAG_PROMPTS)
#: The prompt without a signal (the official ``zero-shot`` template: NUT and positives-only).
PLAIN_PROMPT = "Question: {question}"
#: The three-class fine-grained tags (``zero-shot-target-aware-three-class``), worst to best.
THREE_CLASS_LABELS = ("[Incorrect]", "[Partially Correct]", "[Correct]")
POSITIONS = ("suffix", "prefix")


def canonical_domain(domain: str) -> str:
    """The domain's name in :data:`INSTRUCTIONS` (``qa`` is ``hotpotqa``).

    Raises:
        ValueError: On an unknown domain.
    """
    domain = DOMAIN_ALIASES.get(domain, domain)
    if domain not in INSTRUCTIONS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    return domain


def graded_label_prompt(question: str, label: str) -> str:
    """``"{label} Question: {question}."`` for a fine-grained (three- or four-class) label."""
    if label not in FINE_GRAINED_LABELS and label not in THREE_CLASS_LABELS:
        raise ValueError(f"label must be one of {FINE_GRAINED_LABELS + THREE_CLASS_LABELS}, got {label!r}")
    return f"{label} Question: {question}."


def nat_prompt(
    question: str,
    label: bool | str | None,
    *,
    domain: str = "math",
    position: str = "suffix",
    tags: str = "correct",
    inverse: bool = False,
) -> str:
    """The question prompt of a NAT conversation (step 3 in the module docstring).

    Args:
        question: The question as the dataset states it (no env instruction around it).
        label: ``True``/``"positive"`` or ``False``/``"negative"`` for NAT's binary signal, a
            fine-grained tag (``"[Mostly Correct]"``, ``"[Partially Correct]"``, ...), or ``None``
            for no signal (``"Question: {question}"``, NUT and positives-only).
        domain: See the module docstring.
        position: ``suffix`` (the paper's main setting) or ``prefix`` (one of the signal
            ablations of Sec. 4.4, chosen by ``tags``).
        tags: Which ablation template (:data:`TAG_PROMPTS`) when ``position="prefix"``.
        inverse: The inverse ablation (the official ``*-inverse`` templates): a positive gets the
            negative's prompt and a negative the positive's, so with ``--position prefix --tags
            correct`` positives read ``[Incorrect]``. Binary labels only.

    Raises:
        ValueError: On an unknown domain, position, tag pair or label, or ``inverse`` with a
            fine-grained label.
    """
    domain = canonical_domain(domain)
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
    if tags not in TAG_PROMPTS:
        raise ValueError(f"tags must be one of {TAGS}, got {tags!r}")
    if label is None:
        return PLAIN_PROMPT.format(question=question)
    if label in (True, "positive"):
        positive = True
    elif label in (False, "negative"):
        positive = False
    elif isinstance(label, str):
        if inverse:
            raise ValueError("inverse swaps the binary signal; it has no meaning for a fine-grained label")
        return graded_label_prompt(question, label)
    else:
        raise ValueError(f"label must be True/False, 'positive'/'negative', a fine-grained tag or None; got {label!r}")
    if inverse:
        positive = not positive
    if position == "prefix":
        return TAG_PROMPTS[tags][0 if positive else 1].format(question=question)
    return SUFFIX_PROMPTS[domain][positive].format(question=question)


def instruction_kind(label: bool | str | None) -> str:
    """Which instruction a label's conversation opens with: ``plain``, ``target_aware`` or ``graded``."""
    if label is None:
        return "plain"
    if label in (True, False, "positive", "negative"):
        return "target_aware"
    return "graded"


def nat_messages(
    question: str,
    label: bool | str | None,
    *,
    domain: str = "math",
    position: str = "suffix",
    tags: str = "correct",
    inverse: bool = False,
) -> list[Message]:
    """The messages that open a NAT conversation: instruction, acknowledgement, question prompt.

    The instruction and the acknowledgement are omitted in the ``math_cot`` domain (the official
    CoT templates have none). See :func:`nat_prompt` for the arguments.
    """
    prompt = nat_prompt(question, label, domain=domain, position=position, tags=tags, inverse=inverse)
    instruction = INSTRUCTIONS[canonical_domain(domain)][instruction_kind(label)]
    if instruction is None:
        return [{"role": "user", "content": prompt}]
    return [
        {"role": "user", "content": instruction},
        {"role": "assistant", "content": ACKNOWLEDGEMENT},
        {"role": "user", "content": prompt},
    ]


def question_of(task: Mapping[str, Any] | None, messages: Sequence[Message]) -> str:
    """The question NAT's prompts wrap: the task record's ``question`` field (the dataset's text).

    Envs put their own instruction around the question in the first observation; NAT replaces it
    with its own (and would otherwise print ``Question:`` twice). Records without a ``question``
    (``Mulligan/Echo-v0``) fall back to the first user message.
    """
    if task is not None and isinstance(task.get("question"), str) and task["question"].strip():
        return task["question"].strip()
    return next((m["content"] for m in messages if m["role"] == "user"), "")


def with_nat_opening(messages: Sequence[Message], opening: Sequence[Message]) -> list[Message]:
    """``messages`` with its first user message replaced by ``opening`` (a copy; system kept)."""
    out: list[Message] = []
    replaced = False
    for message in messages:
        if not replaced and message["role"] == "user":
            out.extend(dict(m) for m in opening)
            replaced = True
        else:
            out.append(dict(message))
    return out


class NATPromptAgent(OpeningAgent):
    """Wrap an agent so that it sees NAT's inference prompt: the positive signal (Sec. 3.2).

    The first user message (the env's task text) is replaced by :func:`nat_messages` with the
    positive label (``[Correct]`` for fine-grained models, the ``prefix`` tag for the prefix
    ablation), built from the task record's ``question`` (only the question text is read from the
    record, never its answer). The env is untouched.

    A context policy (a RISE-style window, a token budget) belongs to this wrapper, not to the
    inner agent: it is applied to the env's conversation, whose head is the task message, and the
    kept head is then rewritten, so NAT's opening is always shown whole. An inner policy would see
    the opening's acknowledgement as an attempt and drop the question itself; such an inner agent
    is refused.

    Each action's :class:`~mulligan.agents.base.ContextRecord` describes what the inner model saw
    in terms of the env's conversation: the first user message rewritten as NAT's opening (a
    constant few messages per turn), the other messages kept or dropped by the policy
    (:func:`~mulligan.agents.base.rewritten_context`), so that a trainer rebuilds exactly the
    rewritten conversation from the trajectory.

    Args:
        agent: The agent to wrap (typically an :class:`~mulligan.agents.hf.HFAgent`).
        domain: See the module docstring.
        position: ``suffix`` or ``prefix``, as in training.
        tags: The ablation template with ``position="prefix"``, as in training.
        inverse: The model was trained with the inverse ablation; it is prompted, as the official
            code does, with the prompt its positives were trained with (the negative wording).
        fine_grained: Prompt with the best fine-grained tag (``[Correct]``), as the official
            four- and three-class templates do at inference.
        signal: ``True`` (NAT: the positive signal) or ``False`` for the official plain format
            (``"Question: {question}"`` after the same instruction), with which models trained by
            the ``nut`` and ``positives_only`` baselines are prompted.
        negative_signal: Prompt with the signal NAT's *negatives* were trained with (the
            ``incorrectly`` prompt, the negative tag; ``[Totally Incorrect]`` with
            ``fine_grained``) instead of the positive one. Not an inference mode: the mechanism
            check of a NAT model, whose success should fall under it if it learned the signal.
        context: A context policy (:mod:`mulligan.agents.context`) applied to the env's
            conversation before the rewrite, e.g. ``LastAttempts(1)``; ``None`` keeps everything.

    Raises:
        ValueError: If the inner agent has a context policy of its own (pass it here instead), or
            ``negative_signal`` is asked without a signal.
    """

    def __init__(
        self,
        agent: Agent,
        *,
        domain: str = "math",
        position: str = "suffix",
        tags: str = "correct",
        inverse: bool = False,
        fine_grained: bool = False,
        signal: bool = True,
        negative_signal: bool = False,
        context: Any = None,
    ):
        nat_prompt("", True, domain=domain, position=position, tags=tags, inverse=inverse)  # validate early
        if negative_signal and not signal:
            raise ValueError("negative_signal prompts with the negatives' signal; it needs signal=True")
        self.check_inner_policy(agent, "NATPromptAgent", "NAT's acknowledgement")
        self.agent = agent
        self.context = context
        self.domain = canonical_domain(domain)
        self.position = position
        self.tags = tags
        self.inverse = inverse
        if not signal:
            self.label: bool | str | None = None
        elif fine_grained:
            self.label = FINE_GRAINED_LABELS[0] if negative_signal else CORRECT
        else:
            self.label = not negative_signal
        kind = "nat_negative" if negative_signal else ("nat" if signal else "nat_plain")
        self.name = f"{kind}({getattr(agent, 'name', None) or type(agent).__name__})"

    def opening(self, item: AgentInput, messages: Sequence[Message] = ()) -> list[Message]:
        """NAT's opening messages for ``item`` (instruction, acknowledgement, question prompt)."""
        question = question_of(item.task, item.messages)
        return nat_messages(
            question, self.label, domain=self.domain, position=self.position, tags=self.tags, inverse=self.inverse
        )


__all__ = [
    "ACKNOWLEDGEMENT",
    "DOMAINS",
    "INSTRUCTIONS",
    "PLAIN_PROMPT",
    "PREFIX_TAGS",
    "SUFFIX_PROMPTS",
    "TAGS",
    "TAG_PROMPTS",
    "THREE_CLASS_LABELS",
    "NATPromptAgent",
    "nat_messages",
    "nat_prompt",
    "question_of",
    "with_nat_opening",
]
