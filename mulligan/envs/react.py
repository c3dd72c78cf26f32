"""The ReAct action grammar, parsed once for every ReAct env (MathReAct, HotpotQA, StrategyQA).

ReAct agents (Yao et al. 2023) write a thought and then one action, ``verb[argument]``. Each env
names its verbs (``calculate``/``finish`` for math, ``search``/``lookup``/``finish`` for QA); the
grammar around them is the same everywhere, so ``finish[...]`` means one thing in every env::

    step    := action-at-start | anything "Action" [ws number] ws ":" ws action [anything]
    action  := ws verb ws "[" argument "]"

Rules, in the order they apply:

* **Marker.** ``Action:`` (a word in any case, ReAct's numbered ``Action 2:`` too) is optional. The action
  is the first one in the text: an action at the very start of the text (after whitespace), or
  else the first ``Action:`` marker that is directly followed by a known verb and ``[``. So
  ``finish[7]`` and ``Thought: ...\\nAction: finish[7]`` both parse, while a verb inside a
  thought (``Thought: I should search[X]``) does not, and ``my next action: think`` in a thought
  does not hide a later ``Action: search[X]``.
* **Argument.** Everything up to the ``]`` that balances the opening ``[`` (brackets inside must
  balance), and it may span lines (a multi-line ``finish`` answer such as a matrix). Text after
  the closing bracket is ignored (a hallucinated ``Observation:``). The argument is stripped and
  must not be blank. When the brackets never balance, ``finish`` takes everything up to the last
  ``]`` on the action's line, so that an interval answer such as ``finish[[1, 2)]`` parses;
  other verbs are then malformed.
* **Bounds.** Only the first ``max_argument_chars`` characters after ``[`` are scanned, so a
  megabyte of unclosed brackets costs no more than a short one; an argument longer than that is
  malformed. Every step is one left-to-right pass (no regex backtracking over whitespace), so
  parsing is linear in the length of the text.

Version history: until this module, MathReAct required the ``Action:`` marker and accepted
multi-line arguments, while HotpotQA/StrategyQA accepted a bare ``finish[7]`` and refused
multi-line arguments; both now follow the rules above.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

#: Longest argument scanned (and accepted), in characters: twice the math verifier's answer cap
#: (:data:`mulligan.envs.verifiers.math.MAX_ANSWER_CHARS`), far above any search query.
DEFAULT_MAX_ARGUMENT_CHARS = 2000


class ReactAction(NamedTuple):
    """A parsed ReAct action; a tuple ``(verb, argument)``.

    Attributes:
        verb: The verb, lower-cased (one of the env's verbs).
        argument: The stripped text between the brackets (never blank).
    """

    verb: str
    argument: str


_LEADING_SPACE = re.compile(r"\s*")


@lru_cache(maxsize=32)
def _patterns(verbs: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """``(action at a given position, first marker followed by an action)`` for these verbs."""
    alternatives = "|".join(re.escape(verb) for verb in verbs)
    # Every run of whitespace is matched atomically, as `(?=(\s*))\N`: a lookahead captures the
    # whole run and the backreference consumes it, so a failed match never gives whitespace back
    # and retries (possessive `\s*+` needs Python 3.11). The old QA marker `action\s*\d*\s*:` did
    # retry, quadratically: 100k spaces after "action" took 14-27 s (issue 15).
    at_position = re.compile(rf"({alternatives})(?=(\s*))\2\[", re.IGNORECASE)
    after_marker = re.compile(
        rf"action(?=(\s*))\1(?:\d+(?=(\s*))\2)?:(?=(\s*))\3({alternatives})(?=(\s*))\5\[", re.IGNORECASE
    )
    return at_position, after_marker


def _first_marker(after_marker: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The first marker match that starts a word ("Transaction:" holds no marker).

    Checked after the search rather than with a leading ``\\b``, which would cost the search its
    fast literal-prefix scan (about 4x slower on long text).
    """
    position = 0
    while (match := after_marker.search(text, position)) is not None:
        if match.start() == 0 or not (text[match.start() - 1].isalnum() or text[match.start() - 1] == "_"):
            return match
        position = match.start() + 1
    return None


def parse_react_action(
    text: str,
    verbs: Sequence[str],
    *,
    max_argument_chars: int = DEFAULT_MAX_ARGUMENT_CHARS,
) -> ReactAction | None:
    """Parse the first ReAct action of ``text``; see the module docstring for the grammar.

    Args:
        text: The model's step (thought and action).
        verbs: The env's verbs, e.g. ``("search", "lookup", "finish")`` (matched case-insensitively).
        max_argument_chars: Longest argument scanned and accepted.

    Returns:
        ``ReactAction(verb, argument)``, or ``None`` when the text holds no well-formed action (no
        known verb with ``[``, an unclosed bracket, a blank or over-long argument).

    Raises:
        ValueError: if ``verbs`` is empty or holds a blank or non-word verb (a programming error).
    """
    if isinstance(verbs, str) or not verbs or not all(isinstance(v, str) and re.fullmatch(r"\w+", v) for v in verbs):
        raise ValueError(f"verbs must be a non-empty sequence of words, got {verbs!r}")
    verbs = tuple(v.lower() for v in verbs)
    at_position, after_marker = _patterns(verbs)
    # An action at the start wins; the leading whitespace is skipped by one greedy scan, so that a
    # run of it is not rescanned (no backtracking).
    match = at_position.match(text, _LEADING_SPACE.match(text).end())
    verb_group = 1
    if match is None:
        match, verb_group = _first_marker(after_marker, text), 4
    if match is None:
        return None
    verb = match.group(verb_group).lower()
    start = match.end()
    window = text[start : start + max_argument_chars + 1]
    depth = 1
    # Only brackets matter: find them with a C-speed regex scan instead of a per-character loop.
    for bracket in re.finditer(r"[\[\]]", window):
        depth += 1 if bracket.group() == "[" else -1
        if depth == 0:
            argument = window[: bracket.start()].strip()
            return ReactAction(verb, argument) if argument else None
    if verb != "finish":
        return None
    # Unbalanced brackets, e.g. the interval answer finish[[1, 2)]: the line's last "]" closes it.
    line_end = window.find("\n")
    line = window if line_end < 0 else window[:line_end]
    end = line.rfind("]")
    argument = line[:end].strip() if end > 0 else ""
    return ReactAction(verb, argument) if argument else None
