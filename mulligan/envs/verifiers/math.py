"""Math answer verification: extract a final answer from model text, decide equivalence safely.

One implementation of math correctness, shared by ``Mulligan/Math-v0``, ``Mulligan/MathReAct-v0``
and the benchmarks; TRL trainers reach it through those envs (:mod:`mulligan.training.rewards`).

* :func:`extract_answer` finds the final answer in a response: the last ``\\boxed{...}`` (balanced
  braces), else the last ``#### N`` line (GSM8K), else "the answer is ...", else the last
  ``finish[...]`` (ReAct), else the last number. It is pure string scanning, linear in the text.
* :func:`verify` decides whether an answer equals the gold answer with math-verify (thousands
  separators, units, percent and currency signs, fractions against decimals, LaTeX against plain
  text, ``x = 3`` against ``3``, sets, intervals, equations).

Reward hacking. An answer is judged as one value. Words after it are dropped only when they are a
unit from the closed list :data:`UNIT_WORDS` (``72 dollars`` is 72; ``72 or more``, ``72 minus one``
and ``72 is not the answer`` are not), and math-verify's own unit list, which holds words such as
"more" and "less" and drops any trailing ``\\text{...}``, is switched off in the sandbox. An answer
that states two things is wrong unless the gold answer is written the same way: arrows,
definitions, ellipses and LaTeX commands that math-verify would drop (``73 \\to 72``,
``73 := 72``, ``71, 72, \\ldots``, ``{99 \\atop 72}``; see :func:`refused_statement`), and an
equation with a constant side that is not the gold answer (``99 = 72``; ``x = 72`` and
``48 + 24 = 72`` are fine).

Safety. Model text is untrusted: parsing it with sympy can hang for minutes (``9^{9^{9^9}}``) or
exhaust memory, and math-verify's own timeouts use ``signal.alarm``, which only works on the main
thread of the main process. So every symbolic check runs in a separate worker process under a hard
wall-clock deadline; a worker that overruns is killed and replaced. That makes :func:`verify` safe
off the main thread, in many threads at once and inside data-loader workers. Nothing derived from
model text reaches ``eval``, ``exec``, ``sympify`` or ``parse_expr`` in the calling process: the
calling process only scans strings and compares plain numbers exactly with :class:`fractions.Fraction`
(the fast path, which also makes the common case cheap).

The worker pool is shared by the whole process, started lazily, reused across calls, thread-safe,
and shut down at exit (:func:`shutdown_verifier_pool`); a forked child starts its own pool. Workers
also die with their parent. The pool size defaults to ``min(4, cpu_count)`` and can be set with the
``MULLIGAN_MATH_VERIFY_WORKERS`` environment variable. POSIX only (it waits on pipes with ``select``).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import Any

#: Default hard deadline of one equivalence check, in seconds.
DEFAULT_TIMEOUT = 5.0
#: Answers longer than this are not final answers; they are rejected without parsing.
MAX_ANSWER_CHARS = 1000
#: How long a fresh worker may take to import sympy and math-verify on a loaded machine.
WORKER_STARTUP_TIMEOUT = 120.0
#: Only the last this-many ``\boxed`` occurrences are tried (each scan is bounded by MAX_ANSWER_CHARS).
_MAX_BOXED_CANDIDATES = 64
_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_math_worker.py")
# Run the worker file without putting its folder (which holds this module, "math.py") or the
# current directory on sys.path, where they would shadow the standard library.
_WORKER_BOOTSTRAP = (
    "import runpy, sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)

# --------------------------------------------------------------------------------------- extraction

_BOX_COMMANDS = ("\\boxed", "\\fbox")
# A number as people write final answers: sign, digits with optional thousands commas, decimals,
# or a plain fraction. No nested quantifiers, so matching is linear in the text.
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def _braced_content(text: str, open_brace: int, opener: str = "{", closer: str = "}") -> str | None:
    """Content between ``text[open_brace]`` and its matching closer, or None if not closed soon."""
    depth = 0
    limit = min(len(text), open_brace + MAX_ANSWER_CHARS + 2)
    for position in range(open_brace, limit):
        char = text[position]
        if char == opener:
            depth += 1
        elif char == closer:
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : position]
    return None


def _extract_boxed(text: str) -> str | None:
    candidates: list[tuple[int, str]] = []
    for command in _BOX_COMMANDS:
        end = len(text)
        for _ in range(_MAX_BOXED_CANDIDATES):
            start = text.rfind(command, 0, end)
            if start < 0:
                break
            candidates.append((start, command))
            end = start
    # Latest first; a box that never closes (truncated output) or is empty falls back to an earlier one.
    for start, command in sorted(candidates, reverse=True)[:_MAX_BOXED_CANDIDATES]:
        position = start + len(command)
        if position < len(text) and text[position].isalpha():
            continue  # \boxedfoo is another command
        while position < len(text) and text[position] in " \t":
            position += 1
        if position < len(text) and text[position] == "{":
            content = _braced_content(text, position)
        else:  # "\boxed 5": the answer runs to the next space or dollar sign
            match = re.match(r"[^\s$]+", text[position : position + MAX_ANSWER_CHARS])
            content = match.group(0) if match and position > start + len(command) else None
        if content is not None and content.strip():
            return content.strip()
    return None


def _extract_gsm8k(text: str) -> str | None:
    start = text.rfind("####")
    if start < 0:
        return None
    line = text[start + 4 :].split("\n", 1)[0].strip()
    line = line.rstrip(".").strip()
    return line if line and len(line) <= MAX_ANSWER_CHARS else None


def _extract_answer_is(text: str) -> str | None:
    lowered = text.lower()
    start = lowered.rfind("answer is")
    if start < 0:
        return None
    rest = text[start + len("answer is") :].split("\n", 1)[0][: MAX_ANSWER_CHARS + 1]
    rest = rest.lstrip(" \t:").strip()
    # A sentence ends at a period followed by a space (a decimal point is followed by a digit).
    sentence_end = re.search(r"\.(\s|$)", rest)
    if sentence_end:
        rest = rest[: sentence_end.start()]
    rest = rest.strip()
    return rest if rest and len(rest) <= MAX_ANSWER_CHARS else None


def _extract_finish(text: str) -> str | None:
    start = text.lower().rfind("finish[")
    if start < 0:
        return None
    bracket = start + len("finish")
    content = _braced_content(text, bracket, "[", "]")
    if content is None:  # an interval such as [1, 2) unbalances the brackets: take the line's last ']'
        line = text[bracket + 1 :].split("\n", 1)[0][: MAX_ANSWER_CHARS + 1]
        close = line.rfind("]")
        content = line[:close] if close >= 0 else None
    if content is None or not content.strip() or len(content) > MAX_ANSWER_CHARS:
        return None
    return content.strip()


def _extract_last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER_RE.finditer(text):  # noqa: B007 - we want the last match
        pass
    if last is None:
        return None
    number = last.group(0).rstrip(",")
    return number if len(number) <= MAX_ANSWER_CHARS else None


def extract_answer(text: str) -> str | None:
    """The final answer stated in a response, or ``None`` if there is none.

    Rules, first that applies: the last ``\\boxed{...}`` (or ``\\fbox{...}``) whose braces balance
    within :data:`MAX_ANSWER_CHARS` characters; the rest of the line after the last ``####``
    (GSM8K); the rest of the sentence after the last "answer is"; the content of the last
    ``finish[...]`` (ReAct); the last number in the text. Runs in time linear in ``len(text)``.

    Args:
        text: A model response (any string).

    Returns:
        The answer as written (stripped), or ``None``.
    """
    if not isinstance(text, str) or not text:
        return None
    for rule in (_extract_boxed, _extract_gsm8k, _extract_answer_is, _extract_finish, _extract_last_number):
        answer = rule(text)
        if answer is not None:
            return answer
    return None


def last_boxed_integer(text: str) -> int | None:
    """RISE's GSM8K answer: the integer in the *last* ``\\boxed{...}`` of ``text``, else ``None``.

    The rule of RISE's GSM8K reward (Qu et al. 2024, arXiv 2407.18219, official code): only the
    last box counts (an unclosed or non-integer last box is no answer, with no fall-back to an
    earlier box or to another format), its thousands commas are removed and the rest must parse
    with ``int()``.
    """
    if not isinstance(text, str):
        return None
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    opening = text.find("{", start)
    if opening < 0 or text[start + len("\\boxed") : opening].strip():
        return None
    content = _braced_content(text, opening)
    if content is None:
        return None
    try:
        return int(content.replace(",", "").strip())
    except ValueError:
        return None


def gsm8k_final_answer(solution: str) -> str:
    """The final answer of a GSM8K worked solution (the text after ``####``, commas removed).

    Raises:
        ValueError: if the solution has no ``#### N`` line.
    """
    answer = _extract_gsm8k(solution)
    if answer is None:
        raise ValueError("a GSM8K solution must end with a line '#### <answer>'")
    return answer.replace(",", "")


def boxed_final_answer(solution: str) -> str:
    """The content of the last ``\\boxed{...}`` of a worked solution (MATH format).

    Raises:
        ValueError: if the solution has no balanced ``\\boxed{...}``.
    """
    answer = _extract_boxed(solution)
    if answer is None:
        raise ValueError("a MATH solution must contain a \\boxed{...} answer with balanced braces")
    return answer


# --------------------------------------------------------------------------------------- normalisation

#: Words and symbols that are stripped after an answer's value as its unit, and nothing else: a
#: closed list, so that a trailing "minus one", "or more" or "is not the answer" is never mistaken
#: for a unit (it stays in the answer, which then does not equal the gold answer). Matching is
#: case-insensitive. One-letter symbols (m, g, s, h, l) are variables as often as units, so they
#: count only inside a compound such as ``km/h`` or ``m/s``, or when the gold answer itself writes
#: them as text (``5\text{ m}``). Count nouns ("apples", "students") are not units.
UNIT_WORDS: frozenset[str] = frozenset(
    " ".join(
        (
            # money
            "dollar dollars usd cent cents euro euros pound pounds yen",
            "yuan rupee rupees rs",
            # time
            "second seconds sec secs minute minutes min mins hour hours",
            "hr hrs day days week weeks month months year years yr yrs",
            "decade decades century centuries",
            # length
            "mm cm km millimeter millimeters millimetre millimetres centimeter",
            "centimeters centimetre centimetres meter meters metre metres",
            "kilometer kilometers kilometre kilometres inch inches foot feet ft",
            "yard yards yd yds mile miles mi",
            # mass
            "mg kg gram grams milligram milligrams kilogram kilograms lb lbs",
            "ounce ounces oz ton tons tonne tonnes",
            # volume
            "ml liter liters litre litres milliliter milliliters millilitre",
            "millilitres gallon gallons gal quart quarts pint pints cup cups",
            "teaspoon teaspoons tsp tablespoon tablespoons tbsp cc",
            # speed, angle, temperature, area and volume words, generic
            "mph kph kmh degree degrees deg radian radians rad celsius",
            "fahrenheit unit units square sq cubic cu per",
        )
    ).split()
)
#: Unit words that only qualify a following unit ("square feet", "miles per hour"): never last.
_UNIT_QUALIFIERS = frozenset({"square", "sq", "cubic", "cu", "per"})
#: One-letter unit symbols accepted next to a ``/`` of a compound unit (``km/h``, ``m/s``).
_COMPOUND_UNIT_LETTERS = frozenset({"s", "h", "m", "g", "l"})

_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PLAIN_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_PLAIN_FRACTION_RE = re.compile(r"([-+]?\d+)\s*/\s*(\d+)")
_LATEX_FRACTION_RE = re.compile(r"(-?)\\frac\{\s*(-?\d+)\s*\}\{\s*(\d+)\s*\}")
_ASSIGNMENT_RE = re.compile(r"[A-Za-z]\s*=\s*(.+)")
_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|textsf|mathrm|mbox)\s*\{([^{}]*)\}")
# A thin space between digit groups is a thousands separator ("72\,000"); anywhere else it is a space.
_THIN_SPACE_THOUSANDS_RE = re.compile(r"(?<=\d)\\[,;:!](?=\d{3}(?!\d))")
_THIN_SPACE_RE = re.compile(r"(?<!\\)\\[,;:!]")
_WIDE_SPACE_RE = re.compile(
    r"(?<!\\)\\(?:(?:qquad|quad|enspace|thinspace|medspace|thickspace)(?![A-Za-z])| |hspace\*?\{[^{}]*\})"
)
_DEGREE_RE = re.compile(r"\^\s*(?:\{\s*\\circ\s*\}|\\circ(?![A-Za-z]))")
_UNIT_EXPONENT_RE = re.compile(r"(?<=[A-Za-z])\s*\^\s*(?:\{\s*([23])\s*\}|([23])(?!\d))")
_UNIT_TOKEN_RE = re.compile(r"[A-Za-z]+|\s+|.", re.DOTALL)


def _strip_unit(text: str, units: frozenset[str]) -> str:
    """``text`` without a trailing unit from ``units``, if what precedes it is a value; else ``text``."""
    if len(text) > MAX_ANSWER_CHARS:
        return text
    candidate = _UNIT_EXPONENT_RE.sub(lambda m: "²" if "2" in m.group(0) else "³", _DEGREE_RE.sub("°", text))
    tokens = _UNIT_TOKEN_RE.findall(candidate)
    start = len(tokens)
    words: list[str] = []  # the unit's words and symbols, last first
    while start > 0:
        token = tokens[start - 1]
        previous = tokens[start - 2] if start >= 2 else ""
        following = words[-1] if words else ""
        if token.isspace() or token in "²³°/":
            pass
        elif not (token.isascii() and token.isalpha()) or previous == "\\":
            break  # a digit, a brace, a LaTeX command: the value ends here
        elif token.lower() not in units and not (
            token.lower() in _COMPOUND_UNIT_LETTERS and "/" in (previous, following)
        ):
            break
        if not token.isspace():
            words.append(token.lower() if token.isalpha() else token)
        start -= 1
    value = "".join(tokens[:start]).rstrip()
    if not words or not value or value[-1] not in "0123456789})%":
        return text
    real = [w for w in words if w not in _UNIT_QUALIFIERS and w not in "/²³"]
    if not real or words[0] in _UNIT_QUALIFIERS or words[0] == "/" or words[-1] in "/²³":
        return text  # "72 per", "72 square", "72 /": not a unit
    return value


def _text_words(gold: str) -> frozenset[str]:
    """Words a gold answer writes as text (``4\\text{ ways}``): that task's own unit words."""
    return frozenset(
        word.lower() for match in _TEXT_WRAPPER_RE.finditer(gold) for word in re.findall(r"[A-Za-z]+", match.group(1))
    )


def normalize_answer(answer: str, units: Iterable[str] = UNIT_WORDS) -> str:
    """Light, safe normalisation of a final answer before comparison (pure string operations).

    Strips math delimiters, a box around the whole answer, currency signs, a trailing period,
    ``\\text{}`` wrappers, thousands separators (``1,234``, ``72\\,000``) and a trailing unit from
    the closed list ``units`` (``"18 dollars"`` and ``"5\\text{ cm}^2"`` become ``"18"`` and
    ``"5"``; ``"72 or more"`` stays as it is), writes other LaTeX spacing as spaces and
    ``\\dfrac``/``\\tfrac`` as ``\\frac``. Percent signs are kept: whether ``25%`` means 25 or
    0.25 is math-verify's call.

    Args:
        answer: An extracted final answer.
        units: Words accepted as a unit after the value (default :data:`UNIT_WORDS`).
    """
    text = answer.strip()
    changed = True
    while changed and text:
        changed = False
        for left, right in _DELIMITERS:
            if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
                text = text[len(left) : len(text) - len(right)].strip()
                changed = True
        if text.endswith(".") and not text.endswith(".."):  # a sentence's period, not an ellipsis
            text = text[:-1].strip()
            changed = True
        for command in _BOX_COMMANDS:  # a box around the whole answer, left in by the model
            if text.startswith(command + "{") and _braced_content(text, len(command)) == text[len(command) + 1 : -1]:
                text = text[len(command) + 1 : -1].strip()
                changed = True
    text = text.replace("\\$", "").replace("$", "").replace("\\%", "%")
    text = _THIN_SPACE_THOUSANDS_RE.sub("", text)
    text = _THIN_SPACE_RE.sub(" ", text)
    text = _WIDE_SPACE_RE.sub(" ", text).replace("~", " ")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _TEXT_WRAPPER_RE.sub(lambda m: " " + m.group(1) + " ", text).strip()
    text = _strip_unit(text, units if isinstance(units, frozenset) else frozenset(u.lower() for u in units))
    if _THOUSANDS_RE.fullmatch(text):
        text = text.replace(",", "")
    return " ".join(text.split())


# ------------------------------------------------------------------------------ refused statements

#: LaTeX commands an answer may use freely: values, operators, functions, sets, intervals, matrices,
#: Greek letters, fonts. Any other command is accepted only if the gold answer uses it too, because
#: math-verify drops commands it does not know or keeps one side of them (``73 \to 72``,
#: ``{99 \atop 72}`` and ``99 \therefore 72`` all parse as 72): arrows, definitions and
#: approximations (``\coloneqq``, ``\approx``, ``\equiv``), logic, ellipses (``71, 72, \ldots`` is
#: a sequence), ``\setminus``, TeX's ``\atop``/``\over``, kerning and phantoms, cancellations.
ALLOWED_COMMANDS: frozenset[str] = frozenset(
    " ".join(
        (
            # numbers and arithmetic
            "frac dfrac tfrac cfrac sqrt cdot times div pm mp ast circ",
            "infty pi imath prime overline binom dbinom tbinom",
            # comparisons and sets (an answer such as "x \le 3" or "(-\infty, 2] \cup [3, \infty)")
            "le leq leqslant ge geq geqslant lt gt ne neq in cup cap",
            "emptyset varnothing mathbb",
            # functions
            "sin cos tan sec csc cot arcsin arccos arctan sinh cosh tanh",
            "log ln lg exp max min gcd lcm det deg mod bmod pmod",
            "lfloor rfloor lceil rceil operatorname",
            # delimiters, matrices, layout
            "left right big Big bigg Bigg langle rangle vert lvert rvert",
            "begin end displaystyle",
            # fonts and accents
            "mathbf mathit mathcal boldsymbol vec hat bar tilde dot",
            # Greek letters
            "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta",
            "iota kappa lambda mu nu xi rho varrho sigma tau upsilon phi",
            "varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma",
            "Upsilon Phi Psi Omega",
        )
    ).split()
)
#: Statements written in plain text or Unicode (arrows, definitions, approximations, ellipses), plus
#: LaTeX's line break and column separator (a ``cases`` or ``aligned`` block keeps only its last line).
REFUSED_SYMBOLS: tuple[str, ...] = (
    "->",
    "=>",
    ":=",
    "=:",
    "==",
    "...",
    "\\\\",
    "&",
    "→",
    "⇒",
    "↦",
    "←",
    "⇐",
    "↔",
    "⇔",
    "≈",
    "∼",
    "≃",
    "≅",
    "≡",
    "∝",
    "∣",
    "∨",
    "∧",
    "¬",
    "…",
    "⋯",
    "≔",
)
_COMMAND_RE = re.compile(r"\\([A-Za-z]+)")
_BAR_COMMAND_RE = re.compile(r"\\[lr]?vert(?![A-Za-z])")
# Two numbers side by side ("71 1", "71 \quad 1"): math-verify adds them, reading a mixed number.
_JUXTAPOSED_RE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s+([-+]?\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?")


def _statement_marks(text: str) -> set[str]:
    marks = {f"\\{name}" for name in _COMMAND_RE.findall(text) if name not in ALLOWED_COMMANDS}
    marks.update(symbol for symbol in REFUSED_SYMBOLS if symbol in text)
    # An unpaired bar is "divides" or "such that", not an absolute value or a norm.
    if text.count("\\|") % 2:
        marks.add("\\|")
    if (text.replace("\\|", "").count("|") + len(_BAR_COMMAND_RE.findall(text))) % 2:
        marks.add("|")
    for match in _JUXTAPOSED_RE.finditer(text):
        whole, numerator, denominator = match.group(1), match.group(2), match.group(3)
        mixed_number = (
            denominator is not None and "." not in whole + numerator and 0 < int(numerator) < int(denominator)
        )
        if not mixed_number:
            marks.add("juxtaposed numbers")
    return marks


def refused_statement(gold: str, answer: str) -> str | None:
    """Why ``answer`` cannot equal ``gold`` whatever its value, or ``None``.

    Both arguments are normalised (:func:`normalize_answer`). An answer is refused when it uses a
    mark that the gold answer does not use: a LaTeX command outside :data:`ALLOWED_COMMANDS`, one
    of :data:`REFUSED_SYMBOLS`, an unpaired ``|``, or two numbers side by side other than a mixed
    number ``1 3/4``. Such an answer says two things, or says something math-verify would read as
    a different value. (``99 = 72`` is refused by the sandbox, which requires every constant side
    of an equation to equal a gold value.)

    Args:
        gold: The normalised gold answer.
        answer: The normalised answer.

    Returns:
        A reason naming the marks, or ``None`` when the answer may be compared.
    """
    extra = _statement_marks(answer) - _statement_marks(gold)
    return f"the answer uses {', '.join(sorted(extra))}, which the gold answer does not" if extra else None


def parse_plain_number(text: str) -> Fraction | None:
    """``text`` as an exact number if it is a plain integer, decimal or simple fraction, else ``None``.

    Accepted: ``42``, ``-3.5``, ``.5``, ``7/4``, ``\\frac{7}{4}``, ``-\\frac{7}{4}``, with an optional
    ``x =`` in front. Anything else (expressions, sets, LaTeX beyond a plain fraction) is ``None``.
    """
    text = text.strip()
    if len(text) > 100:  # int() refuses > 4300 digits anyway; plain answers are short
        return None
    assignment = _ASSIGNMENT_RE.fullmatch(text)
    if assignment:
        text = assignment.group(1).strip()
    if _PLAIN_NUMBER_RE.fullmatch(text):
        return Fraction(text)
    fraction = _PLAIN_FRACTION_RE.fullmatch(text)
    if fraction:
        numerator, denominator = int(fraction.group(1)), int(fraction.group(2))
        return Fraction(numerator, denominator) if denominator else None
    latex = _LATEX_FRACTION_RE.fullmatch(text)
    if latex:
        numerator, denominator = int(latex.group(2)), int(latex.group(3))
        if not denominator:
            return None
        value = Fraction(numerator, denominator)
        return -value if latex.group(1) else value
    return None


_HOW_MANY_RE = re.compile(r"\bhow\s+many\s+([A-Za-z]+(?:\s+[A-Za-z]+){0,2})", re.IGNORECASE)
# Words between "how many" and the counted noun; never a unit themselves.
_COUNT_QUALIFIERS = frozenset({"more", "fewer", "less", "additional", "extra", "total", "different", "of", "the"})


def question_units(question: str) -> frozenset[str]:
    """The noun a question counts ("How many rolls ...?" counts rolls), as extra unit words.

    GSM8K answers are often written with that noun ("The answer is 3750 rolls."); pass the result
    as ``units`` to :func:`verify` so that it is stripped like a unit. Only the first word after
    "how many" (skipping "more", "fewer", "total", ...) counts, with its singular form, so the
    question cannot lend words such as "or", "minus" or "more" to an answer.

    Args:
        question: The task's question text.

    Returns:
        Lower-case unit words, possibly empty.
    """
    words: set[str] = set()
    for match in _HOW_MANY_RE.finditer(question[:100_000]):
        for word in match.group(1).lower().split():
            if word not in _COUNT_QUALIFIERS:
                words.add(word)
                if word.endswith("s") and len(word) > 3:
                    words.add(word[:-2] if word.endswith(("ches", "shes", "sses", "xes")) else word[:-1])
                break
    return frozenset(words)


def _normalize_pair(gold: str, answer: str, units: Iterable[str] = ()) -> tuple[str, str]:
    # Words the gold answer writes as text (4\text{ ways}) are that task's units, for both sides.
    units = UNIT_WORDS | _text_words(gold) | {str(unit).lower() for unit in units}
    return normalize_answer(gold, units), normalize_answer(answer, units)


def _fast_verdict(gold: str, answer: str) -> bool | None:
    """Decide in-process when it is safe and certain; ``None`` sends the pair to a worker."""
    if not answer:
        return False
    if gold == answer:
        return True
    if refused_statement(gold, answer) is not None:
        return False
    gold_number, answer_number = parse_plain_number(gold), parse_plain_number(answer)
    if gold_number is None or answer_number is None:
        return None
    if gold_number == answer_number:
        return True
    # Clearly different numbers are decided here; near misses (1/3 against 0.333333) go to
    # math-verify, whose rounding rules decide them.
    if abs(gold_number - answer_number) > Fraction(1, 10_000) * max(1, abs(gold_number)):
        return False
    return None


# --------------------------------------------------------------------------------------- worker pool


class _WorkerDied(Exception):
    """A worker overran its deadline (``overran``) or had exited; it has been killed."""

    def __init__(self, overran: bool):
        super().__init__("the worker overran its deadline" if overran else "the worker had exited")
        self.overran = overran


class _Worker:
    """One sandbox process and the line protocol to it; used by one thread at a time."""

    def __init__(self, process: subprocess.Popen, stderr_file: Any):
        self.process = process
        self.stderr_file = stderr_file
        self.ready = False
        self._buffer = b""
        self._ids = itertools.count()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_line(self, deadline: float) -> bytes:
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                raise TimeoutError
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def wait_ready(self, timeout: float) -> None:
        if self.ready:
            return
        try:
            line = self._read_line(time.monotonic() + timeout)
            if json.loads(line).get("ready") is not True:
                raise EOFError
        except (TimeoutError, EOFError, ValueError) as err:
            details = self._stderr_tail()
            self.kill()
            raise RuntimeError(
                "the math verifier worker failed to start (is math-verify installed?): " + details
            ) from err
        self.ready = True

    def check(self, gold: str, answer: str, timeout: float) -> bool:
        request_id = next(self._ids)
        inner_timeout = max(1, int(timeout / 3))
        payload = json.dumps({"id": request_id, "gold": gold, "answer": answer, "inner_timeout": inner_timeout})
        deadline = time.monotonic() + timeout
        try:
            self.process.stdin.write(payload.encode("utf-8", "surrogatepass") + b"\n")
            self.process.stdin.flush()
            while True:
                reply = json.loads(self._read_line(deadline))
                if reply.get("id") == request_id:
                    return bool(reply.get("equal"))
        except TimeoutError as err:
            self.kill()
            raise _WorkerDied(overran=True) from err
        except (EOFError, OSError, ValueError) as err:
            self.kill()
            raise _WorkerDied(overran=False) from err

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def _stderr_tail(self) -> str:
        try:
            self.stderr_file.seek(0)
            return self.stderr_file.read().decode("utf-8", "replace")[-2000:] or "(no output)"
        except (OSError, ValueError):
            return "(stderr unavailable)"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):  # a SIGKILLed process exits at once
            self.process.wait(timeout=10)
        self.close_files()

    def close_files(self) -> None:
        for stream in (self.process.stdin, self.process.stdout, self.stderr_file):
            with contextlib.suppress(OSError, ValueError):
                stream.close()


class VerifierPool:
    """A thread-safe pool of sandbox processes that run math-verify under a hard deadline.

    Use the shared pool through :func:`verify`; build one directly only to control its size.

    Args:
        size: Number of worker processes (started lazily, at most this many alive).
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"the verifier pool needs at least one worker, got size={size}")
        self.size = size
        self._condition = threading.Condition()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._closed = False
        self._owner_pid = os.getpid()
        # Workers are spawned from one long-lived thread: PR_SET_PDEATHSIG fires when the *thread*
        # that forked a child exits, so spawning from a short-lived caller thread would kill workers.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mulligan-verify-spawn")

    def _spawn(self) -> _Worker:
        # The worker's stderr goes to a file (never read while it runs, so a pipe could fill up and
        # block it); the file is closed when the worker is killed.
        stderr_file = tempfile.TemporaryFile()  # noqa: SIM115

        def start() -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, "-u", "-c", _WORKER_BOOTSTRAP, _WORKER_SCRIPT, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                start_new_session=True,  # a terminal Ctrl-C goes to the parent, which cleans up
                env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONHASHSEED": "0"},
            )

        process = self._spawner.submit(start).result()
        return _Worker(process, stderr_file)

    def _acquire(self) -> _Worker:
        with self._condition:
            while True:
                if self._closed:
                    raise RuntimeError("the math verifier pool is shut down")
                while self._idle:
                    worker = self._idle.pop()
                    if worker.is_alive():
                        return worker
                    # Died while idle (killed by the OOM killer or a user): forget it, start another.
                    self._all.discard(worker)
                    worker.kill()
                if len(self._all) < self.size:
                    worker = self._spawn()
                    self._all.add(worker)
                    return worker
                self._condition.wait()

    def _release(self, worker: _Worker, alive: bool) -> None:
        with self._condition:
            if alive and not self._closed:
                self._idle.append(worker)
            else:
                self._all.discard(worker)
                if not self._closed:
                    # Replace the killed worker now, so its import time overlaps the caller's work.
                    replacement = self._spawn()
                    self._all.add(replacement)
                    self._idle.append(replacement)
            self._condition.notify()

    def check(self, gold: str, answer: str, timeout: float) -> bool:
        """Run one equivalence check in a worker; ``False`` if it overruns ``timeout`` seconds.

        A worker found dead (it died while idle, or exits before answering) is replaced and the
        check retried once on a fresh worker, so that a correct answer is not marked wrong for it.
        """
        for attempt in range(2):
            worker = self._acquire()
            alive = True
            try:
                worker.wait_ready(WORKER_STARTUP_TIMEOUT)
                return worker.check(gold, answer, timeout)
            except _WorkerDied as died:
                alive = False
                if died.overran or attempt == 1:
                    return False
            except BaseException:
                alive = False
                worker.kill()
                raise
            finally:
                self._release(worker, alive)
        return False  # not reached: the second attempt returns

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring and tests)."""
        with self._condition:
            return sorted(worker.pid for worker in self._all)

    def shutdown(self) -> None:
        """Kill every worker and refuse further checks. Idempotent."""
        with self._condition:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
            self._condition.notify_all()
        for worker in workers:
            worker.kill()
        self._spawner.shutdown(wait=False)

    def _abandon_in_forked_child(self) -> None:
        # The child must not kill its parent's workers; it only drops its copies of their pipes.
        for worker in self._all:
            worker.close_files()


class _SharedPool:
    """The process-wide pool and the lock that guards its creation."""

    def __init__(self) -> None:
        self.pool: VerifierPool | None = None
        self.lock = threading.Lock()


_SHARED = _SharedPool()


def default_pool_size() -> int:
    """Workers of the shared pool: ``MULLIGAN_MATH_VERIFY_WORKERS``, else ``min(4, cpu_count)``."""
    configured = os.environ.get("MULLIGAN_MATH_VERIFY_WORKERS")
    if configured:
        try:
            size = int(configured)
        except ValueError:
            size = 0
        if size < 1:
            raise ValueError(f"MULLIGAN_MATH_VERIFY_WORKERS must be a positive integer, got {configured!r}")
        return size
    return max(1, min(4, os.cpu_count() or 1))


def get_verifier_pool() -> VerifierPool:
    """The process-wide shared pool, created on first use (and again after a shutdown)."""
    with _SHARED.lock:
        pool = _SHARED.pool
        if pool is None or pool._closed or pool._owner_pid != os.getpid():
            pool = _SHARED.pool = VerifierPool(default_pool_size())
        return pool


def shutdown_verifier_pool() -> None:
    """Kill the shared pool's workers (also runs at interpreter exit). A later check starts a new pool."""
    with _SHARED.lock:
        pool, _SHARED.pool = _SHARED.pool, None
    if pool is not None and pool._owner_pid == os.getpid():
        pool.shutdown()


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time would stay locked forever in the child: replace it.
    _SHARED.lock = threading.Lock()
    if _SHARED.pool is not None:
        _SHARED.pool._abandon_in_forked_child()
    _SHARED.pool = None


atexit.register(shutdown_verifier_pool)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

# --------------------------------------------------------------------------------------- public checks


def verify(gold: str, answer: str | None, timeout: float = DEFAULT_TIMEOUT, *, units: Iterable[str] = ()) -> bool:
    """Whether ``answer`` is mathematically equivalent to ``gold``.

    Plain numbers are compared exactly in-process; everything else is decided by math-verify in a
    sandbox process killed after ``timeout`` seconds (an overrun is ``False``). Safe from any
    thread; never raises on model text.

    Args:
        gold: The reference answer (trusted), e.g. ``"72"``, ``"\\frac{7}{4}"``, ``"[1, 2)"``.
        answer: The extracted answer (untrusted), or ``None`` when none was found (``False``).
        timeout: Hard wall-clock deadline of the symbolic check, in seconds.
        units: Unit words of this task, accepted after the answer's value besides
            :data:`UNIT_WORDS`, e.g. :func:`question_units` of the question.

    Returns:
        ``True`` if the answer matches the gold answer.

    Raises:
        ValueError: if ``gold`` is not a non-empty string or ``timeout`` is not positive.
        RuntimeError: if the sandbox cannot start (math-verify missing).
    """
    if not isinstance(gold, str) or not gold.strip():
        raise ValueError(f"gold must be a non-empty string, got {gold!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    if not isinstance(answer, str) or not answer.strip() or len(answer) > MAX_ANSWER_CHARS:
        return False
    gold_normal, answer_normal = _normalize_pair(gold, answer, units)
    verdict = _fast_verdict(gold_normal, answer_normal)
    if verdict is not None:
        return verdict
    return get_verifier_pool().check(gold_normal, answer_normal, timeout)


def verify_batch(
    golds: Sequence[str],
    answers: Sequence[str | None],
    timeout: float = DEFAULT_TIMEOUT,
    *,
    units: Sequence[Iterable[str]] | None = None,
) -> list[bool]:
    """:func:`verify` over pairs, using every worker of the pool at once.

    Args:
        golds: Reference answers.
        answers: Extracted answers, one per gold answer.
        timeout: Hard wall-clock deadline of each symbolic check, in seconds.
        units: Extra unit words per pair (see :func:`verify`), or ``None``.

    Raises:
        ValueError: if the sequences differ in length (and as :func:`verify`).
    """
    if len(golds) != len(answers) or (units is not None and len(units) != len(golds)):
        lengths = [len(golds), len(answers)] + ([] if units is None else [len(units)])
        raise ValueError(f"golds, answers and units differ in length: {lengths}")
    task_units: list[Iterable[str]] = [()] * len(golds) if units is None else list(units)
    results: list[bool | None] = [None] * len(golds)
    pending: list[int] = []
    for i, (gold, answer) in enumerate(zip(golds, answers, strict=True)):
        if not isinstance(gold, str) or not gold.strip():
            raise ValueError(f"gold must be a non-empty string, got {gold!r} at position {i}")
        if not isinstance(answer, str) or not answer.strip() or len(answer) > MAX_ANSWER_CHARS:
            results[i] = False
            continue
        verdict = _fast_verdict(*_normalize_pair(gold, answer, task_units[i]))
        if verdict is None:
            pending.append(i)
        else:
            results[i] = verdict
    if pending:
        pool = get_verifier_pool()
        if len(pending) == 1 or pool.size == 1:
            for i in pending:
                results[i] = verify(golds[i], answers[i], timeout, units=task_units[i])
        else:
            with ThreadPoolExecutor(max_workers=min(pool.size, len(pending))) as executor:
                for i, verdict in zip(
                    pending,
                    executor.map(lambda j: verify(golds[j], answers[j], timeout, units=task_units[j]), pending),
                    strict=True,
                ):
                    results[i] = verdict
    return [bool(r) for r in results]


def math_reward(
    response: str,
    gold: str,
    format_reward: float = 0.0,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    units: Iterable[str] = (),
) -> float:
    """Reward of one response: 1.0 correct, 0.0 wrong, ``format_reward`` when no answer is found.

    RISE (Qu et al. 2024, Sec. 5) used ``format_reward=-1.0`` to discourage answer-less responses.
    ``units`` are the task's extra unit words (see :func:`verify`).
    """
    answer = extract_answer(response)
    if answer is None:
        return float(format_reward)
    return 1.0 if verify(gold, answer, timeout, units=units) else 0.0
