"""Rule-checked constraints with corrective critiques (CORGI, Bezalel et al. 2024, arXiv 2411.01483).

CORGI trains a model in sessions where a checker says which constraints were broken (Sec. 3). This
module is that checker. Every constraint returns a :class:`ConstraintResult`: whether it holds, a
score in [0, 1], and a natural-language critique of what was broken, e.g.
"You completed the sentence with 7 words. However you should complete the sentence with 5 words."

Constraint ids follow IFEval's ``family:name`` scheme, so that one task record format (IFEval's
``instruction_id_list`` and ``kwargs``) carries both kinds:

* CORGI's rule-checked tasks (:data:`CORGI_IDS`):

  - ``completion:word_count_ending``: complete ``prefix`` with exactly ``num_words`` words ending
    with ``last_word``; score 0.8 for the count plus 0.2 for the last word (CORGI, Sec. 4).
  - ``concepts:use_all``: use every concept in ``concepts``; inflected forms count (``rivers``,
    ``ran`` for ``run``); score is the fraction used.
  - ``letters:pangram``: use every letter of the English alphabet; score is the fraction used.
  - ``letters:lipogram``: never use ``letter``.
  - ``words:max_word_length``: no word longer than ``max_length`` letters.

* IFEval's 25 instructions (:mod:`mulligan.envs.verifiers.ifeval`), binary scores.

Entry points: :func:`check_constraint`, :func:`check_constraints`, :func:`describe_constraint`,
:func:`normalize_constraint`, :func:`word_forms` (the offline inflection matcher).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mulligan.envs.verifiers import ifeval

#: CORGI's rule-checked constraint ids.
CORGI_IDS: tuple[str, ...] = (
    "completion:word_count_ending",
    "concepts:use_all",
    "letters:pangram",
    "letters:lipogram",
    "words:max_word_length",
)
#: Every constraint id: CORGI's, then IFEval's.
CONSTRAINT_IDS: tuple[str, ...] = CORGI_IDS + ifeval.INSTRUCTION_IDS
#: Score weights of the completion task (CORGI Sec. 4): the word count matters most.
COMPLETION_COUNT_WEIGHT = 0.8
COMPLETION_LAST_WORD_WEIGHT = 0.2


def constraint_family(constraint_id: str) -> str:
    """The family of an id: the part before the colon (``"letters"``, ``"keywords"``, ...)."""
    return constraint_id.split(":", 1)[0]


#: Every family name, CORGI's first.
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(constraint_family(i) for i in CONSTRAINT_IDS))


@dataclass(frozen=True)
class ConstraintResult:
    """The verdict on one constraint.

    Attributes:
        constraint_id: The constraint's id.
        holds: Whether the response satisfies it.
        score: Graded credit in [0, 1] (1.0 exactly when it holds).
        critique: What was broken, as CORGI's checker would say it; empty when it holds.
    """

    constraint_id: str
    holds: bool
    score: float
    critique: str


# --------------------------------------------------------------------------------------------------
# Words and inflections
# --------------------------------------------------------------------------------------------------

# A word: letters or digits, with inner apostrophes or hyphens ("don't", "well-known").
_WORD_RE = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")


def words_of(text: str) -> list[str]:
    """The words of ``text``: letter/digit runs with inner apostrophes or hyphens, punctuation dropped."""
    return _WORD_RE.findall(text)


_IRREGULAR_VERBS: dict[str, tuple[str, ...]] = {
    "be": ("am", "is", "are", "was", "were", "been", "being"), "have": ("has", "had", "having"),
    "do": ("does", "did", "done", "doing"), "go": ("goes", "went", "gone", "going"),
    "say": ("said",), "make": ("made",), "get": ("got", "gotten"), "know": ("knew", "known"),
    "think": ("thought",), "take": ("took", "taken"), "see": ("saw", "seen"), "come": ("came",),
    "give": ("gave", "given"), "find": ("found",), "tell": ("told",), "become": ("became",),
    "leave": ("left",), "feel": ("felt",), "bring": ("brought",), "begin": ("began", "begun"),
    "keep": ("kept",), "hold": ("held",), "write": ("wrote", "written"), "stand": ("stood",),
    "hear": ("heard",), "let": (), "mean": ("meant",), "set": (), "meet": ("met",), "run": ("ran",),
    "pay": ("paid",), "sit": ("sat",), "speak": ("spoke", "spoken"), "lie": ("lay", "lain", "lying"),
    "lead": ("led",), "read": (), "grow": ("grew", "grown"), "lose": ("lost",), "fall": ("fell", "fallen"),
    "send": ("sent",), "build": ("built",), "understand": ("understood",), "draw": ("drew", "drawn"),
    "break": ("broke", "broken"), "spend": ("spent",), "cut": (), "rise": ("rose", "risen"),
    "drive": ("drove", "driven"), "buy": ("bought",), "wear": ("wore", "worn"), "choose": ("chose", "chosen"),
    "eat": ("ate", "eaten"), "drink": ("drank", "drunk"), "sing": ("sang", "sung"), "swim": ("swam", "swum"),
    "fly": ("flew", "flown", "flies"), "throw": ("threw", "thrown"), "catch": ("caught",), "teach": ("taught",),
    "fight": ("fought",), "sell": ("sold",), "sleep": ("slept",), "ride": ("rode", "ridden"),
    "shine": ("shone",), "shoot": ("shot",), "sink": ("sank", "sunk"), "steal": ("stole", "stolen"),
    "stick": ("stuck",), "strike": ("struck",), "swing": ("swung",), "wake": ("woke", "woken"),
    "win": ("won",), "dig": ("dug",), "feed": ("fed",), "hang": ("hung",), "hide": ("hid", "hidden"),
    "blow": ("blew", "blown"), "freeze": ("froze", "frozen"), "forget": ("forgot", "forgotten"),
    "shake": ("shook", "shaken"), "bite": ("bit", "bitten"), "light": ("lit",), "bend": ("bent",),
    "lend": ("lent",), "weave": ("wove", "woven"), "tear": ("tore", "torn"), "bear": ("bore", "borne"),
    "beat": ("beaten",), "bleed": ("bled",), "breed": ("bred",), "flee": ("fled",), "kneel": ("knelt",),
    "sweep": ("swept",), "spin": ("spun",), "dive": ("dove",), "seek": ("sought",)
}
_IRREGULAR_NOUNS: dict[str, tuple[str, ...]] = {
    "child": ("children",), "man": ("men",), "woman": ("women",), "person": ("people",),
    "mouse": ("mice",), "goose": ("geese",), "foot": ("feet",), "tooth": ("teeth",), "ox": ("oxen",),
    "sheep": (), "fish": (), "deer": (), "knife": ("knives",), "leaf": ("leaves",), "wolf": ("wolves",),
    "life": ("lives",), "wife": ("wives",), "half": ("halves",), "shelf": ("shelves",), "loaf": ("loaves",),
    "calf": ("calves",), "thief": ("thieves",), "cactus": ("cacti",), "potato": ("potatoes",),
    "tomato": ("tomatoes",), "hero": ("heroes",),
}
_VOWELS = set("aeiou")


def _doubles_final_consonant(word: str) -> bool:
    # Consonant-vowel-consonant endings double before -ed/-ing (stop -> stopped); over-generating
    # for two-syllable words (visit -> visitted) is harmless: nobody writes those by accident.
    return (
        len(word) >= 3 and word[-1] not in _VOWELS | set("wxy") and word[-2] in _VOWELS
        and word[-3] not in _VOWELS
    )


@lru_cache(maxsize=4096)
def word_forms(word: str) -> frozenset[str]:
    """The inflected forms of an English word, lower-cased, the word itself included.

    Regular plurals and third-person forms (``-s``, ``-es``, ``-ies``, ``-ves``), past forms
    (``-ed``, ``-d``, ``-ied``, doubled consonants) and present participles (``-ing``, ``-ying``),
    plus irregular verbs and nouns from a built-in table (``run``: ``ran``; ``child``:
    ``children``). Forms are generated, not looked up, so rare over-generated forms may match.
    """
    w = word.lower()
    forms = {w}
    if not w.isalpha():
        return frozenset(forms)
    # Plural / third person.
    if w.endswith(("s", "x", "z", "ch", "sh", "o")):
        forms.add(w + "es")
    if len(w) > 1 and w.endswith("y") and w[-2] not in _VOWELS:
        forms.add(w[:-1] + "ies")
    else:
        forms.add(w + "s")
    if w.endswith("fe"):
        forms.add(w[:-2] + "ves")
    elif w.endswith("f"):
        forms.add(w[:-1] + "ves")
    # Past.
    if w.endswith("e"):
        forms.add(w + "d")
    elif len(w) > 1 and w.endswith("y") and w[-2] not in _VOWELS:
        forms.add(w[:-1] + "ied")
    else:
        forms.add(w + "ed")
    # Present participle.
    if w.endswith("ie"):
        forms.add(w[:-2] + "ying")
    elif w.endswith("e") and not w.endswith(("ee", "ye", "oe")):
        forms.add(w[:-1] + "ing")
    else:
        forms.add(w + "ing")
    if _doubles_final_consonant(w):
        forms.update({w + w[-1] + "ed", w + w[-1] + "ing"})
    forms.update(_IRREGULAR_VERBS.get(w, ()))
    forms.update(_IRREGULAR_NOUNS.get(w, ()))
    return frozenset(forms)


def _normalized_words(text: str) -> list[str]:
    out = []
    for raw in words_of(text):
        word = raw.lower().replace("’", "'")
        # Possessives count as the word ("the river's bank" uses "river").
        out.append(word[:-2] if word.endswith("'s") else word)
    return out


def uses_concept(text_words: Sequence[str], concept: str) -> bool:
    """Whether a concept (a word or a phrase) appears in ``text_words`` in any inflected form.

    ``text_words`` are the response's lower-cased words (see :func:`words_of`). A phrase matches
    when its words appear consecutively, each in any inflected form.
    """
    parts = [p.lower() for p in words_of(concept)]
    if not parts:
        return False
    forms = [word_forms(p) for p in parts]
    n = len(parts)
    return any(
        all(text_words[i + j] in forms[j] for j in range(n)) for i in range(len(text_words) - n + 1)
    )


# --------------------------------------------------------------------------------------------------
# CORGI checkers
# --------------------------------------------------------------------------------------------------


def _strip_prefix(response: str, prefix: str) -> str:
    """The completion alone: a response that repeats the prefix is scored on what follows it."""
    response_words, prefix_words = words_of(response), words_of(prefix)
    lowered = [w.lower() for w in response_words[: len(prefix_words)]]
    if prefix_words and lowered == [w.lower() for w in prefix_words]:
        # Cut after the prefix's last word in the response text.
        position = 0
        for word in prefix_words:
            position = response.lower().index(word.lower(), position) + len(word)
        return response[position:]
    return response


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def check_completion(response: str, prefix: str, num_words: int, last_word: str) -> ConstraintResult:
    """CORGI's completion task: exactly ``num_words`` words after ``prefix``, the last one ``last_word``.

    Score: 0.8 when the word count is right plus 0.2 when the last word is right (CORGI Sec. 4). A
    response that starts by repeating the prefix is scored on the words after it.
    """
    completion_words = words_of(_strip_prefix(response, prefix))
    count = len(completion_words)
    count_ok = count == num_words
    last = completion_words[-1] if completion_words else ""
    last_ok = last.lower() == last_word.lower()
    score = COMPLETION_COUNT_WEIGHT * count_ok + COMPLETION_LAST_WORD_WEIGHT * last_ok
    critiques = []
    if not count_ok:
        critiques.append(
            f"You completed the sentence with {_plural(count, 'word')}. However you should complete the "
            f"sentence with {_plural(num_words, 'word')}."
        )
    if not last_ok:
        ending = f"with the word '{last}'" if last else "without any word"
        critiques.append(
            f"Your completion ends {ending}. However it should end with the word '{last_word}'."
        )
    return ConstraintResult("completion:word_count_ending", count_ok and last_ok, score, " ".join(critiques))


def check_concepts(response: str, concepts: Sequence[str]) -> ConstraintResult:
    """CORGI's concept task: use every concept (inflected forms count); score is the fraction used."""
    text_words = _normalized_words(response)
    missing = [c for c in concepts if not uses_concept(text_words, c)]
    score = 1.0 - len(missing) / len(concepts) if concepts else 1.0
    critique = f"You didn't use the following concepts: {', '.join(missing)}." if missing else ""
    return ConstraintResult("concepts:use_all", not missing, score, critique)


def check_pangram(response: str) -> ConstraintResult:
    """Use every letter a-z at least once (case-insensitive); score is the fraction of letters used."""
    present = set(response.lower()) & set(string.ascii_lowercase)
    missing = sorted(set(string.ascii_lowercase) - present)
    critique = (
        f"Your response is not a pangram: it is missing the letters {', '.join(missing)}." if missing else ""
    )
    return ConstraintResult("letters:pangram", not missing, len(present) / 26, critique)


def check_lipogram(response: str, letter: str) -> ConstraintResult:
    """Never use ``letter`` (case-insensitive)."""
    count = response.lower().count(letter.lower())
    critique = (
        f"You used the letter '{letter.lower()}' {count} time{'s' if count != 1 else ''}. However you should "
        "not use it at all."
    ) if count else ""
    return ConstraintResult("letters:lipogram", count == 0, float(count == 0), critique)


def check_max_word_length(response: str, max_length: int) -> ConstraintResult:
    """No word longer than ``max_length`` letters."""
    long_words = list(dict.fromkeys(w for w in words_of(response) if len(w) > max_length))
    shown = ", ".join(long_words[:10]) + (", ..." if len(long_words) > 10 else "")
    critique = (
        f"The following words are longer than {max_length} letters: {shown}. Use only words of at most "
        f"{max_length} letters."
    ) if long_words else ""
    return ConstraintResult("words:max_word_length", not long_words, float(not long_words), critique)


# --------------------------------------------------------------------------------------------------
# Arguments, dispatch, descriptions
# --------------------------------------------------------------------------------------------------


def _need(constraint_id: str, kwargs: Mapping[str, Any], name: str) -> Any:
    if name not in kwargs:
        raise ValueError(f"{constraint_id} needs the argument {name!r}; got {sorted(kwargs)}")
    return kwargs[name]


def _positive_int(constraint_id: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < 1:
        raise ValueError(f"{constraint_id}: {name} must be a positive int, got {value!r}")
    return int(value)


def normalize_constraint(constraint_id: str, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a constraint's arguments and return them cleaned (``None`` values dropped).

    Raises ``ValueError`` naming the id and what is missing or malformed.
    """
    if constraint_id in ifeval.INSTRUCTION_IDS:
        return ifeval.normalize_kwargs(constraint_id, kwargs)
    if constraint_id not in CORGI_IDS:
        raise ValueError(f"unknown constraint id {constraint_id!r}; expected one of {list(CONSTRAINT_IDS)}")
    kw = {k: v for k, v in dict(kwargs or {}).items() if v is not None}
    if constraint_id == "completion:word_count_ending":
        prefix, last_word = _need(constraint_id, kw, "prefix"), _need(constraint_id, kw, "last_word")
        if not isinstance(prefix, str) or not isinstance(last_word, str) or len(words_of(last_word)) != 1:
            raise ValueError(f"{constraint_id}: prefix must be a string and last_word a single word")
        return {"prefix": prefix, "num_words": _positive_int(constraint_id, "num_words",
                                                              _need(constraint_id, kw, "num_words")),
                "last_word": last_word}
    if constraint_id == "concepts:use_all":
        concepts = _need(constraint_id, kw, "concepts")
        if isinstance(concepts, str) or not isinstance(concepts, Sequence) or not concepts or not all(
            isinstance(c, str) and words_of(c) for c in concepts
        ):
            raise ValueError(f"{constraint_id}: concepts must be a non-empty list of words, got {concepts!r}")
        return {"concepts": list(concepts)}
    if constraint_id == "letters:pangram":
        return {}
    if constraint_id == "letters:lipogram":
        letter = _need(constraint_id, kw, "letter")
        if not isinstance(letter, str) or len(letter) != 1 or letter.lower() not in string.ascii_lowercase:
            raise ValueError(f"{constraint_id}: letter must be one letter a-z, got {letter!r}")
        return {"letter": letter.lower()}
    return {"max_length": _positive_int(constraint_id, "max_length", _need(constraint_id, kw, "max_length"))}


def check_constraint(
    constraint_id: str, response: str, kwargs: Mapping[str, Any] | None = None, mode: str = "strict"
) -> ConstraintResult:
    """Check one constraint (CORGI's or IFEval's) on ``response``.

    Args:
        constraint_id: One of :data:`CONSTRAINT_IDS`.
        response: The model's text; any string.
        kwargs: The constraint's arguments.
        mode: IFEval's ``"strict"`` or ``"loose"`` (CORGI's rules read the response as is in both).
    """
    if mode not in ("strict", "loose"):
        raise ValueError(f"mode must be 'strict' or 'loose', got {mode!r}")
    kw = normalize_constraint(constraint_id, kwargs)
    if constraint_id in ifeval.INSTRUCTION_IDS:
        result = ifeval.check_instruction(constraint_id, response, kw, mode)
        return ConstraintResult(constraint_id, result.holds, float(result.holds), result.critique)
    if constraint_id == "completion:word_count_ending":
        return check_completion(response, kw["prefix"], kw["num_words"], kw["last_word"])
    if constraint_id == "concepts:use_all":
        return check_concepts(response, kw["concepts"])
    if constraint_id == "letters:pangram":
        return check_pangram(response)
    if constraint_id == "letters:lipogram":
        return check_lipogram(response, kw["letter"])
    return check_max_word_length(response, kw["max_length"])


def check_constraints(
    constraint_ids: Sequence[str],
    kwargs_list: Sequence[Mapping[str, Any] | None],
    response: str,
    mode: str = "strict",
) -> list[ConstraintResult]:
    """Check every constraint of a task record (IFEval's ``instruction_id_list`` and ``kwargs``), in order."""
    if len(constraint_ids) != len(kwargs_list):
        raise ValueError(f"{len(constraint_ids)} constraint ids but {len(kwargs_list)} kwargs entries")
    return [check_constraint(c, response, k, mode) for c, k in zip(constraint_ids, kwargs_list, strict=True)]


def combine_critiques(results: Sequence[ConstraintResult]) -> str:
    """One critique for a response: the broken constraints' critiques, in task order, joined."""
    return " ".join(r.critique for r in results if not r.holds and r.critique)


def describe_constraint(constraint_id: str, kwargs: Mapping[str, Any] | None = None) -> str:
    """The constraint as a prompt states it."""
    kw = normalize_constraint(constraint_id, kwargs)
    if constraint_id in ifeval.INSTRUCTION_IDS:
        return ifeval.describe_instruction(constraint_id, kw)
    if constraint_id == "completion:word_count_ending":
        return (
            f"Complete the following sentence with exactly {_plural(kw['num_words'], 'word')}, the last of "
            f"which must be '{kw['last_word']}'. Sentence: {kw['prefix']}"
        )
    if constraint_id == "concepts:use_all":
        return f"Use all of the following concepts: {', '.join(kw['concepts'])}."
    if constraint_id == "letters:pangram":
        return "Your response must be a pangram: use every letter of the English alphabet at least once."
    if constraint_id == "letters:lipogram":
        return f"Do not use the letter '{kw['letter']}' anywhere in your response."
    return f"Use only words of at most {kw['max_length']} letters."
