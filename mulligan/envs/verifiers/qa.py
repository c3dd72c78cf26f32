"""Answer scoring for extractive and multi-hop QA: HotpotQA's official metrics and NAT's labels.

Everything here is a pure function of strings, shared by the QA envs, TRL reward functions, the
NAT data builder and the benchmarks, so that "correct" means one thing across the library.

* :func:`normalize_answer`: HotpotQA's (and SQuAD's) answer normalisation: lowercase, drop ASCII
  punctuation, drop the articles "a", "an", "the", collapse whitespace.
* :func:`exact_match` and :func:`f1_score`: the official metrics, with the official special case
  that the answers "yes", "no" and "noanswer" only score when prediction and gold are equal (so
  "yes" earns no partial credit against "yes it is").
* :func:`fine_grained_label`: NAT's (Wang et al. 2024, arXiv 2402.11651, Sec. 3.3) fine-grained
  quality labels as a function of F1, used to condition the model on how good a trajectory was.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
#: Answers that the official metric treats as classes, not token bags.
SPECIAL_ANSWERS: frozenset[str] = frozenset({"yes", "no", "noanswer"})

#: NAT's fine-grained labels, from worst to best (Sec. 3.3).
TOTALLY_INCORRECT = "[Totally Incorrect]"
MOSTLY_INCORRECT = "[Mostly Incorrect]"
MOSTLY_CORRECT = "[Mostly Correct]"
CORRECT = "[Correct]"
FINE_GRAINED_LABELS: tuple[str, ...] = (TOTALLY_INCORRECT, MOSTLY_INCORRECT, MOSTLY_CORRECT, CORRECT)
#: F1 below this (and above 0) is "mostly incorrect"; from here to below 1 is "mostly correct".
MOSTLY_CORRECT_THRESHOLD = 0.4


@dataclass(frozen=True)
class QAScore:
    """Token-level agreement between a predicted and a gold answer.

    Attributes:
        em: 1.0 when the normalised answers are equal, else 0.0.
        f1: Harmonic mean of token precision and recall (official special cases applied).
        precision: Shared tokens over predicted tokens.
        recall: Shared tokens over gold tokens.
    """

    em: float
    f1: float
    precision: float
    recall: float


def normalize_answer(text: str) -> str:
    """HotpotQA's answer normalisation: lowercase, strip punctuation and articles, collapse spaces.

    The order matters and follows the official script: lowercase first (so "The" is an article),
    then punctuation (so "the," loses its comma and becomes an article), then articles, then
    whitespace.
    """
    text = text.lower().translate(_PUNCTUATION_TABLE)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> bool:
    """Whether the two answers are equal after :func:`normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(gold)


def qa_score(prediction: str, gold: str) -> QAScore:
    """Exact match, F1, precision and recall of ``prediction`` against ``gold``.

    Follows the official HotpotQA evaluation: if either normalised answer is "yes", "no" or
    "noanswer" and the two differ, every metric is 0; otherwise F1 is computed over the bags of
    normalised tokens. Two answers with no tokens in common score 0 (so do two empty answers on F1,
    as in the official script, although their exact match is 1).
    """
    normalized_prediction = normalize_answer(prediction)
    normalized_gold = normalize_answer(gold)
    em = float(normalized_prediction == normalized_gold)
    zero = QAScore(em=em, f1=0.0, precision=0.0, recall=0.0)
    if normalized_prediction != normalized_gold and (
        normalized_prediction in SPECIAL_ANSWERS or normalized_gold in SPECIAL_ANSWERS
    ):
        return zero
    prediction_tokens = normalized_prediction.split()
    gold_tokens = normalized_gold.split()
    shared = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if shared == 0:
        return zero
    precision = shared / len(prediction_tokens)
    recall = shared / len(gold_tokens)
    f1 = 2 * precision * recall / (precision + recall)
    return QAScore(em=em, f1=f1, precision=precision, recall=recall)


def f1_score(prediction: str, gold: str) -> float:
    """Official HotpotQA token F1 of ``prediction`` against ``gold`` (see :func:`qa_score`)."""
    return qa_score(prediction, gold).f1


def fine_grained_label(f1: float) -> str:
    """NAT's label for an answer of token F1 ``f1`` (Sec. 3.3 of arXiv 2402.11651).

    ``[Totally Incorrect]`` at 0, ``[Mostly Incorrect]`` below 0.4, ``[Mostly Correct]`` below 1,
    ``[Correct]`` at 1.

    Raises:
        ValueError: If ``f1`` is not a number in [0, 1].
    """
    if isinstance(f1, bool) or not isinstance(f1, int | float) or not 0.0 <= f1 <= 1.0:
        raise ValueError(f"f1 must be a number in [0, 1], got {f1!r}")
    if f1 == 0.0:
        return TOTALLY_INCORRECT
    if f1 < MOSTLY_CORRECT_THRESHOLD:
        return MOSTLY_INCORRECT
    if f1 < 1.0:
        return MOSTLY_CORRECT
    return CORRECT


def normalize_yes_no(text: str) -> str | None:
    """``"Yes"`` or ``"No"`` when ``text`` says one of them (any case or punctuation), else None.

    StrategyQA's answers are booleans; this is the one place that decides what counts as saying one.
    """
    normalized = normalize_answer(text)
    if normalized == "yes":
        return "Yes"
    if normalized == "no":
        return "No"
    return None
