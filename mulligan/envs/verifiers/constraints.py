"""Rule-checked constraints with corrective critiques: CORGI's tasks, mulligan's own, IFEval's.

CORGI (Bezalel et al. 2024, arXiv 2411.01483) trains a model in sessions where a checker says what
was broken (Sec. 3). This module is that checker. Every constraint returns a
:class:`ConstraintResult`: whether it holds, a score in [0, 1], and the critic's messages, e.g.
"You completed the sentence with 7 words. However you should complete the sentence with 5 words."

Constraint ids follow IFEval's ``family:name`` scheme, so that one task record format (IFEval's
``instruction_id_list`` and ``kwargs``) carries every kind:

* CORGI's rule-checked tasks, under CORGI's names (:data:`CORGI_IDS`), checked as the official
  critics in ``critiques.py`` check them (the offline substitutes are named where they are used):

  - ``corgi:num_planning``: complete ``prefix`` with exactly ``num_words`` words, the last one
    ``last_word``; score 0.8 for the count plus 0.2 for the last word (CORGI, Sec. 4).
  - ``corgi:cmg_hard``: one sentence that uses every concept in ``concepts``; score 1 or 0.
  - ``corgi:panagram``: one English word made of exactly the letters in ``letters`` (each at
    least once, no other); score is the mean of three checks (a word, no letter missing, no letter
    extra).

* mulligan's own rule-checked constraints, which CORGI does not have (:data:`EXTRA_IDS`):

  - ``completion:word_count_ending``: a chat-friendly variant of ``corgi:num_planning`` (the whole
    response counts, punctuation-insensitive, case-insensitive last word).
  - ``concepts:use_all``: use every concept; score is the fraction used.
  - ``letters:pangram`` (all 26 letters; score is the fraction used), ``letters:lipogram`` (never
    use ``letter``) and ``words:max_word_length`` (no word longer than ``max_length``).

* IFEval's 25 instructions (:mod:`mulligan.envs.verifiers.ifeval`), binary scores.

* CORGI's nine other tasks (clustering, mbpp, program, sentiment, style_transfer, story_generation,
  rationale_generation, paraphrase, common_gen) are checked by tool or model critics:
  :mod:`mulligan.envs.verifiers.critics`. :func:`check_constraint` dispatches them to the
  ``critics`` it is given (the tool ones have offline defaults).

CORGI's prompts end with an ``- Output:`` line that opens the model's answer (the *primer*:
``- Output: {prefix}`` for num_planning, ``- Output: Word:`` for panagram). A model that was primed
answers with the continuation only; pass ``primed=True`` to score it exactly as the official critic
does. A chat model that was not primed tends to repeat the primer, so by default a leading
``- Output:`` and a repeated prefix (or ``Word:``) are dropped first: the same verdict whenever the
model was primed, unless its continuation happens to repeat the prefix.

Entry points: :func:`check_constraint`, :func:`check_constraints`, :func:`combine_critiques`,
:func:`describe_constraint`, :func:`normalize_constraint`, :func:`corgi_prompt`,
:func:`is_english_word` and :func:`word_forms` (the offline inflection matcher).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mulligan.envs.verifiers import ifeval

#: CORGI's rule-checked tasks, by CORGI's task names.
CORGI_IDS: tuple[str, ...] = ("corgi:num_planning", "corgi:cmg_hard", "corgi:panagram")
#: mulligan's own rule-checked constraints (not CORGI's).
EXTRA_IDS: tuple[str, ...] = (
    "completion:word_count_ending",
    "concepts:use_all",
    "letters:pangram",
    "letters:lipogram",
    "words:max_word_length",
)
#: Every constraint id: CORGI's, mulligan's, then IFEval's.
CONSTRAINT_IDS: tuple[str, ...] = CORGI_IDS + EXTRA_IDS + ifeval.INSTRUCTION_IDS
#: Score weights of num_planning (CORGI Sec. 4): the word count matters most.
COMPLETION_COUNT_WEIGHT = 0.8
COMPLETION_LAST_WORD_WEIGHT = 0.2


def constraint_family(constraint_id: str) -> str:
    """The family of an id: the part before the colon (``"corgi"``, ``"letters"``, ``"keywords"``, ...)."""
    return constraint_id.split(":", 1)[0]


#: Every family name, CORGI's first.
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(constraint_family(i) for i in CONSTRAINT_IDS))


def join_critiques(messages: Iterable[str]) -> str:
    """The critic's messages as one critique, joined as CORGI's critic joins them.

    The first message as it is, the second after "In addition,", every later one after
    "Moreover,", each of those with its first letter lower-cased (``combine_messages`` in CORGI's
    ``critiques.py``). Empty messages are skipped.
    """
    joined = ""
    count = 0
    for message in messages:
        if not message:
            continue
        if not joined:
            joined = message
            continue
        count += 1
        joiner = "In addition" if count == 1 else "Moreover"
        joined = f"{joined} {joiner}, {message[0].lower()}{message[1:]}"
    return joined


@dataclass(frozen=True)
class ConstraintResult:
    """The verdict on one constraint.

    Attributes:
        constraint_id: The constraint's id.
        holds: Whether the response satisfies it.
        score: Graded credit in [0, 1] (1.0 exactly when it holds).
        messages: The critic's messages, one per broken check; empty when it holds.
    """

    constraint_id: str
    holds: bool
    score: float
    messages: tuple[str, ...] = ()

    @property
    def critique(self) -> str:
        """The messages joined as CORGI's critic joins them (:func:`join_critiques`)."""
        return join_critiques(self.messages)


# --------------------------------------------------------------------------------------------------
# Words and inflections
# --------------------------------------------------------------------------------------------------

# A word: letters or digits, with inner apostrophes or hyphens ("don't", "well-known").
_WORD_RE = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")


def words_of(text: str) -> list[str]:
    """The words of ``text``: letter/digit runs with inner apostrophes or hyphens, punctuation dropped."""
    return _WORD_RE.findall(text)


_IRREGULAR_VERBS: dict[str, tuple[str, ...]] = {
    "be": ("am", "is", "are", "was", "were", "been", "being"),
    "have": ("has", "had", "having"),
    "do": ("does", "did", "done", "doing"),
    "go": ("goes", "went", "gone", "going"),
    "say": ("said",),
    "make": ("made",),
    "get": ("got", "gotten"),
    "know": ("knew", "known"),
    "think": ("thought",),
    "take": ("took", "taken"),
    "see": ("saw", "seen"),
    "come": ("came",),
    "give": ("gave", "given"),
    "find": ("found",),
    "tell": ("told",),
    "become": ("became",),
    "leave": ("left",),
    "feel": ("felt",),
    "bring": ("brought",),
    "begin": ("began", "begun"),
    "keep": ("kept",),
    "hold": ("held",),
    "write": ("wrote", "written"),
    "stand": ("stood",),
    "hear": ("heard",),
    "let": (),
    "mean": ("meant",),
    "set": (),
    "meet": ("met",),
    "run": ("ran",),
    "pay": ("paid",),
    "sit": ("sat",),
    "speak": ("spoke", "spoken"),
    "lie": ("lay", "lain", "lying"),
    "lead": ("led",),
    "read": (),
    "grow": ("grew", "grown"),
    "lose": ("lost",),
    "fall": ("fell", "fallen"),
    "send": ("sent",),
    "build": ("built",),
    "understand": ("understood",),
    "draw": ("drew", "drawn"),
    "break": ("broke", "broken"),
    "spend": ("spent",),
    "cut": (),
    "rise": ("rose", "risen"),
    "drive": ("drove", "driven"),
    "buy": ("bought",),
    "wear": ("wore", "worn"),
    "choose": ("chose", "chosen"),
    "eat": ("ate", "eaten"),
    "drink": ("drank", "drunk"),
    "sing": ("sang", "sung"),
    "swim": ("swam", "swum"),
    "fly": ("flew", "flown", "flies"),
    "throw": ("threw", "thrown"),
    "catch": ("caught",),
    "teach": ("taught",),
    "fight": ("fought",),
    "sell": ("sold",),
    "sleep": ("slept",),
    "ride": ("rode", "ridden"),
    "shine": ("shone",),
    "shoot": ("shot",),
    "sink": ("sank", "sunk"),
    "steal": ("stole", "stolen"),
    "stick": ("stuck",),
    "strike": ("struck",),
    "swing": ("swung",),
    "wake": ("woke", "woken"),
    "win": ("won",),
    "dig": ("dug",),
    "feed": ("fed",),
    "hang": ("hung",),
    "hide": ("hid", "hidden"),
    "blow": ("blew", "blown"),
    "freeze": ("froze", "frozen"),
    "forget": ("forgot", "forgotten"),
    "shake": ("shook", "shaken"),
    "bite": ("bit", "bitten"),
    "light": ("lit",),
    "bend": ("bent",),
    "lend": ("lent",),
    "weave": ("wove", "woven"),
    "tear": ("tore", "torn"),
    "bear": ("bore", "borne"),
    "beat": ("beaten",),
    "bleed": ("bled",),
    "breed": ("bred",),
    "flee": ("fled",),
    "kneel": ("knelt",),
    "sweep": ("swept",),
    "spin": ("spun",),
    "dive": ("dove",),
    "seek": ("sought",),
}
_IRREGULAR_NOUNS: dict[str, tuple[str, ...]] = {
    "child": ("children",),
    "man": ("men",),
    "woman": ("women",),
    "person": ("people",),
    "mouse": ("mice",),
    "goose": ("geese",),
    "foot": ("feet",),
    "tooth": ("teeth",),
    "ox": ("oxen",),
    "sheep": (),
    "fish": (),
    "deer": (),
    "knife": ("knives",),
    "leaf": ("leaves",),
    "wolf": ("wolves",),
    "life": ("lives",),
    "wife": ("wives",),
    "half": ("halves",),
    "shelf": ("shelves",),
    "loaf": ("loaves",),
    "calf": ("calves",),
    "thief": ("thieves",),
    "cactus": ("cacti",),
    "potato": ("potatoes",),
    "tomato": ("tomatoes",),
    "hero": ("heroes",),
}
_VOWELS = set("aeiou")


def _doubles_final_consonant(word: str) -> bool:
    # Consonant-vowel-consonant endings double before -ed/-ing (stop -> stopped); over-generating
    # for two-syllable words (visit -> visitted) is harmless: nobody writes those by accident.
    return len(word) >= 3 and word[-1] not in _VOWELS | set("wxy") and word[-2] in _VOWELS and word[-3] not in _VOWELS


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


def _positions(text_words: Sequence[str]) -> dict[str, list[int]]:
    index: dict[str, list[int]] = {}
    for position, word in enumerate(text_words):
        index.setdefault(word, []).append(position)
    return index


def _uses(text_words: Sequence[str], index: Mapping[str, list[int]], concept: str) -> bool:
    parts = [p.lower() for p in words_of(concept)]
    if not parts:
        return False
    forms = [word_forms(p) for p in parts]
    # Only the positions where the concept's first word appears are tried: linear in the text.
    starts = sorted(position for form in forms[0] for position in index.get(form, ()))
    return any(
        i + len(parts) <= len(text_words) and all(text_words[i + j] in forms[j] for j in range(1, len(parts)))
        for i in starts
    )


def uses_concept(text_words: Sequence[str], concept: str) -> bool:
    """Whether a concept (a word or a phrase) appears in ``text_words`` in any inflected form.

    ``text_words`` are the response's lower-cased words (see :func:`words_of`). A phrase matches
    when its words appear consecutively, each in any inflected form.
    """
    return _uses(text_words, _positions(text_words), concept)


def _missing_concepts(text: str, concepts: Sequence[str]) -> list[str]:
    text_words = _normalized_words(text)
    index = _positions(text_words)
    return [c for c in concepts if not _uses(text_words, index, c)]


# --------------------------------------------------------------------------------------------------
# CORGI's prompts (instruction_templates/*.txt of the official repository, MIT licence)
# --------------------------------------------------------------------------------------------------

# The user turn of each template: the instruction, two worked examples and the task's input line.
_CORGI_TEMPLATES: dict[str, str] = {
    "corgi:num_planning": (
        "# Instruction\n\nYou are given a number N, a prefix and a last word. Complete the prefix using exactly N "
        "words (including the last word). \nPlease ensure that you meet the following criteria:\n1. You are using "
        "exactly N words.\n2. Your sentence end with the specified last word.\n\n# Examples\n\n## Example 1\n"
        '- Input: "N = 3 ; Last word = Vinci ; Prefix = Where"\n- Output: Where is Da Vinci?\n\n## Example 2\n'
        '- Input: "N = 5 ; Last word = town ; Prefix = This is a story about a young girl’s"\n'
        "- Output: This is a story about a young girl’s redemption in a small town.\n\n# Your Task \n\n"
        '- Input: "N = {num_words} ; Last word = {last_word} ; Prefix = {prefix}"'
    ),
    "corgi:cmg_hard": (
        "# Instruction\n\nGiven several concepts, write a sentence that contains *all* the required words.\n"
        "Please ensure that you meet the following criteria:\n1. Your sentence includes every given concept.\n\n"
        '# Examples\n\n## Example 1\n- Input: "chair, couch, hang, room, wall"\n'
        "- Output: A room with a couch, chairs and art hanging on the wall.\n\n## Example 2\n"
        '- Input: "boat, building, harbour, moor, quay"\n'
        "- Output: The harbour and port with fishing boats moored and old buildings on the quay.\n\n"
        '# Your Task \n\n- Input: "{concepts}"'
    ),
    "corgi:panagram": (
        "# Instruction\n\nYou are given a list of letters. Create a word that has ALL the letters in the list. "
        "Namely, you should create a Panagram.\nPlease ensure that you meet the following criteria:\n1. The word "
        "must be a valid English word.\n2. You must use all the letters in the collection.\n3. You don't use any "
        "letters that aren't in the list.\n\n# Examples\n\n## Example 1\n"
        '- Input: "Letters: [y, e, j, l]"\n- Output: Word: jelly.\n\n## Example 2\n'
        '- Input: "Letters: [o, c, l]"\n- Output: Word: cool.\n\n# Your Task \n\n'
        '- Input: "Letters: {letters}"'
    ),
}
#: The line that opens the model's answer in CORGI's prompts (and after every feedback turn).
OUTPUT_MARKER = "- Output:"
# What CORGI's critic strips from a generation before checking it.
_SPECIAL_TOKENS = ("</s>", "<|eot_id|>", "<|end_of_text|>")


def corgi_prompt(constraint_id: str, kwargs: Mapping[str, Any]) -> str:
    """The user turn of CORGI's prompt for a task: instruction, two worked examples, the task's input."""
    kw = normalize_constraint(constraint_id, kwargs)
    template = _CORGI_TEMPLATES[constraint_id]
    if constraint_id == "corgi:num_planning":
        return template.format(**kw)
    if constraint_id == "corgi:cmg_hard":
        return template.format(concepts=", ".join(kw["concepts"]))
    return template.format(letters=f"[{', '.join(kw['letters'])}]")


def corgi_primer(constraint_id: str, kwargs: Mapping[str, Any]) -> str:
    """The text that opens the model's answer, as CORGI's prompts prime it ("- Output: {prefix}", ...)."""
    kw = normalize_constraint(constraint_id, kwargs)
    if constraint_id == "corgi:num_planning":
        return f"{OUTPUT_MARKER} {kw['prefix']}"
    if constraint_id == "corgi:panagram":
        return f"{OUTPUT_MARKER} Word:"
    return OUTPUT_MARKER


def _after_leading_words(text: str, words: Sequence[str]) -> int | None:
    """Where ``text`` continues after starting with ``words`` (compared case-folded), else ``None``.

    Positions come from the original text: lower-casing a whole string can change its length
    ("İ") or its letters ("Σ" at a word's end), so offsets found in a lower-cased copy do not
    point into the original.
    """
    if not words:
        return 0
    matches = _WORD_RE.finditer(text)
    end = 0
    for want in words:
        found = next(matches, None)
        if found is None or found.group(0).casefold() != want.casefold():
            return None
        end = found.end()
    return end


def _unprimed(response: str, echoed: Sequence[str]) -> str:
    """An unprimed chat answer as its primed continuation: a leading ``- Output:`` and ``echoed`` words dropped."""
    text = response.lstrip()
    if text.startswith(OUTPUT_MARKER):
        text = text[len(OUTPUT_MARKER) :]
    end = _after_leading_words(text, echoed)
    return text if end is None else text[end:]


def _without_special_tokens(text: str) -> str:
    for special in _SPECIAL_TOKENS:
        text = text.replace(special, "")
    return text


def _up_to_first_period(text: str) -> str:
    # CORGI's critics check the first sentence only: everything after the first "." is dropped.
    cut = text.find(".")
    return text if cut == -1 else text[: cut + 1]


def check_num_planning(
    response: str, prefix: str, num_words: int, last_word: str, *, primed: bool = False
) -> ConstraintResult:
    """CORGI's num_planning: exactly ``num_words`` words after ``prefix``, the last one ``last_word``.

    As CORGI's ``NumPlanningCritique``: the continuation up to its first ``.``; words are the
    space-separated tokens with a letter or digit; the last word loses its non-word characters and
    must equal ``last_word`` exactly (case-sensitive). Score 0.8 for the count plus 0.2 for the last
    word (CORGI Sec. 4). Unless ``primed``, a leading ``- Output:`` and a repeated prefix are dropped.
    """
    text = response if primed else _unprimed(response, words_of(prefix))
    if text and text[0] != " ":
        text = " " + text
    words = []
    for raw in _up_to_first_period(text).strip().split(" "):
        token = _without_special_tokens(raw)
        if any(ch.isalnum() for ch in token):
            words.append(token)
    last = re.sub(r"\W+", "", words[-1]) if words else ""
    count_ok, last_ok = len(words) == num_words, last == last_word
    messages = []
    if not count_ok:
        messages.append(
            f"You completed the sentence with {len(words)} words. However you should complete the sentence with "
            f"{num_words} words."
        )
    if not last_ok:
        messages.append(f'The last word should be "{last_word}" and not "{_shown(last)}".')
    score = COMPLETION_COUNT_WEIGHT * count_ok + COMPLETION_LAST_WORD_WEIGHT * last_ok
    return ConstraintResult("corgi:num_planning", count_ok and last_ok, score, tuple(messages))


def check_cmg_hard(response: str, concepts: Sequence[str], *, primed: bool = False) -> ConstraintResult:
    """CORGI's cmg_hard: the first sentence uses every concept; score 1 or 0.

    As CORGI's ``CmgHardCritique`` (text up to the first ``.``; all concepts or nothing; "You are
    missing the following concepts: ..."), except that concepts match through :func:`word_forms`'
    inflections instead of spaCy ``en_core_web_lg`` lemmas, which need a model download.
    """
    text = response if primed else _unprimed(response, ())
    missing = _missing_concepts(_up_to_first_period(text), concepts)
    messages = (f"You are missing the following concepts: {', '.join(missing)}.",) if missing else ()
    return ConstraintResult("corgi:cmg_hard", not missing, float(not missing), messages)


@lru_cache(maxsize=1)
def english_word_list() -> frozenset[str]:
    """The offline English word list :func:`is_english_word` checks against (lower-cased, letters only)."""
    try:
        from english_words import get_english_words_set
    except ImportError as err:  # pragma: no cover - a core dependency
        raise ImportError("corgi:panagram needs an English word list: pip install english-words") from err
    # web2 (Webster's 2nd, public domain) and GCIDE: 300,000 lower-cased words, shipped in the package.
    return frozenset(get_english_words_set(["web2", "gcide"], alpha=True, lower=True))


_IRREGULAR_BASES: dict[str, str] = {}


def _irregular_bases() -> dict[str, str]:
    if not _IRREGULAR_BASES:
        for table in (_IRREGULAR_VERBS, _IRREGULAR_NOUNS):
            for base, forms in table.items():
                _IRREGULAR_BASES.update(dict.fromkeys(forms, base))
    return _IRREGULAR_BASES


def is_english_word(word: str) -> bool:
    """Whether ``word`` is an English word: in the word list, or a regular or irregular inflection of one.

    The list is ``english-words``' web2 and GCIDE lists (offline, no plurals or verb forms), so an
    inflected form counts when :func:`word_forms` of a listed base generates it ("cats", "baked").
    CORGI checks words with the ``enchant`` en_US dictionary, which needs a system library.
    """
    lowered = word.lower()
    if not lowered.isalpha() or not lowered.isascii():
        return False
    words = english_word_list()
    if lowered in words:
        return True
    bases = {lowered[:-k] for k in (1, 2, 3, 4) if len(lowered) > k}
    bases |= {lowered[:-3] + end for end in ("y", "e", "f", "fe") if len(lowered) > 3}
    bases |= {lowered[:-4] + "ie"} if lowered.endswith("ying") else set()
    bases.add(_irregular_bases().get(lowered, ""))
    return any(base in words and lowered in word_forms(base) for base in bases if base)


def check_panagram(response: str, letters: Sequence[str], *, primed: bool = False) -> ConstraintResult:
    """CORGI's panagram: one English word made of exactly ``letters`` (each at least once, no other letter).

    As CORGI's ``PanagramCritique``: the answer's first space-separated token before any ``.`` or
    line break is the word; it must be an English word (:func:`is_english_word`), use every listed
    letter and no other character (case-sensitive, as the official check). Score: the mean of the
    three checks. Unless ``primed``, a leading ``- Output:`` and ``Word:`` are dropped first.
    """
    text = (response if primed else _unprimed(response, ("Word",)).removeprefix(":")).strip()
    text = _up_to_first_period(text).removesuffix(".").strip()
    text = _without_special_tokens(text.split("\n", 1)[0].strip().split(" ")[0])
    if not text:
        message = "The output format is incorrect. Please output only the panagram word."
        return ConstraintResult("corgi:panagram", False, 0.0, (message,))
    shown = _shown(text)
    messages = []
    valid = is_english_word(text)
    if not valid:
        messages.append(f'"{shown}" is not a valid word in English.')
    used, wanted = set(text), set(letters)
    # Sorted so that a critique is the same on every run (the official critic lists a set).
    unused, extra = sorted(wanted - used), sorted(used - wanted)
    if len(unused) == 1:
        messages.append(f'"{shown}" doesn\'t have the letter {unused[0]}.')
    elif unused:
        messages.append(f'"{shown}" doesn\'t have the letters {", ".join(unused)}.')
    if len(extra) == 1:
        messages.append(f'"{shown}" has the letter {extra[0]} which is not on the list.')
    elif extra:
        messages.append(f'"{shown}" has the letters: {", ".join(extra[:26])} which are not on the list.')
    score = (valid + (not unused) + (not extra)) / 3
    return ConstraintResult("corgi:panagram", score == 1.0, score, tuple(messages))


def _shown(text: str, limit: int = 60) -> str:
    # A critique quotes the model's word; a megabyte "word" is quoted by its start.
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------
# mulligan's own constraints (not CORGI's)
# --------------------------------------------------------------------------------------------------


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def check_completion(response: str, prefix: str, num_words: int, last_word: str) -> ConstraintResult:
    """A chat-friendly variant of CORGI's num_planning (not CORGI's checker).

    The whole response counts (words are :func:`words_of`'s, punctuation dropped), a response that
    starts by repeating the prefix is scored on the words after it, and the last word is compared
    case-insensitively. Score: 0.8 for the count plus 0.2 for the last word.
    """
    end = _after_leading_words(response, words_of(prefix))
    completion_words = words_of(response if end is None else response[end:])
    count = len(completion_words)
    count_ok = count == num_words
    last = completion_words[-1] if completion_words else ""
    last_ok = last.casefold() == last_word.casefold()
    score = COMPLETION_COUNT_WEIGHT * count_ok + COMPLETION_LAST_WORD_WEIGHT * last_ok
    messages = []
    if not count_ok:
        messages.append(
            f"You completed the sentence with {_plural(count, 'word')}. However you should complete the "
            f"sentence with {_plural(num_words, 'word')}."
        )
    if not last_ok:
        ending = f"with the word '{_shown(last)}'" if last else "without any word"
        messages.append(f"Your completion ends {ending}. However it should end with the word '{last_word}'.")
    return ConstraintResult("completion:word_count_ending", count_ok and last_ok, score, tuple(messages))


def check_concepts(response: str, concepts: Sequence[str]) -> ConstraintResult:
    """Use every concept (inflected forms count); score is the fraction used (not CORGI's cmg_hard)."""
    missing = _missing_concepts(response, concepts)
    score = 1.0 - len(missing) / len(concepts) if concepts else 1.0
    messages = (f"You didn't use the following concepts: {', '.join(missing)}.",) if missing else ()
    return ConstraintResult("concepts:use_all", not missing, score, messages)


def check_pangram(response: str) -> ConstraintResult:
    """Use every letter a-z at least once (case-insensitive); score is the fraction of letters used."""
    present = set(response.lower()) & set(string.ascii_lowercase)
    missing = sorted(set(string.ascii_lowercase) - present)
    messages = (f"Your response is not a pangram: it is missing the letters {', '.join(missing)}.",) if missing else ()
    return ConstraintResult("letters:pangram", not missing, len(present) / 26, messages)


def check_lipogram(response: str, letter: str) -> ConstraintResult:
    """Never use ``letter`` (case-insensitive)."""
    count = response.lower().count(letter.lower())
    messages = (
        (
            f"You used the letter '{letter.lower()}' {count} time{'s' if count != 1 else ''}. However you should "
            "not use it at all.",
        )
        if count
        else ()
    )
    return ConstraintResult("letters:lipogram", count == 0, float(count == 0), messages)


def check_max_word_length(response: str, max_length: int) -> ConstraintResult:
    """No word longer than ``max_length`` letters."""
    long_words = list(dict.fromkeys(_shown(w) for w in words_of(response) if len(w) > max_length))
    shown = ", ".join(long_words[:10]) + (", ..." if len(long_words) > 10 else "")
    messages = (
        (
            f"The following words are longer than {max_length} letters: {shown}. Use only words of at most "
            f"{max_length} letters.",
        )
        if long_words
        else ()
    )
    return ConstraintResult("words:max_word_length", not long_words, float(not long_words), messages)


# --------------------------------------------------------------------------------------------------
# Arguments, dispatch, descriptions
# --------------------------------------------------------------------------------------------------


def _positive_int(constraint_id: str, name: str, value: Any) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or int(value) != value
        or value < 1
    ):
        raise ValueError(f"{constraint_id}: {name} must be a positive int, got {value!r}")
    return int(value)


def _word_list(constraint_id: str, name: str, value: Any) -> list[str]:
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not value
        or not all(isinstance(c, str) and words_of(c) for c in value)
    ):
        raise ValueError(f"{constraint_id}: {name} must be a non-empty list of words, got {value!r}")
    return list(value)


def _completion_args(constraint_id: str, kw: Mapping[str, Any]) -> dict[str, Any]:
    prefix, last_word = kw["prefix"], kw["last_word"]
    if not isinstance(prefix, str) or not words_of(prefix):
        raise ValueError(f"{constraint_id}: prefix must be a string with at least one word, got {prefix!r}")
    if not isinstance(last_word, str) or len(words_of(last_word)) != 1 or last_word != last_word.strip():
        raise ValueError(f"{constraint_id}: last_word must be a single word, got {last_word!r}")
    return {
        "prefix": prefix,
        "num_words": _positive_int(constraint_id, "num_words", kw["num_words"]),
        "last_word": last_word,
    }


def _letters_args(constraint_id: str, kw: Mapping[str, Any]) -> dict[str, Any]:
    letters = kw["letters"]
    if (
        isinstance(letters, str)
        or not isinstance(letters, Sequence)
        or not letters
        or not all(isinstance(x, str) and len(x) == 1 and not x.isspace() for x in letters)
    ):
        # Characters, not only letters: CORGI's data lists the characters of its nouns ("e-book").
        raise ValueError(f"{constraint_id}: letters must be a non-empty list of single characters, got {letters!r}")
    return {"letters": list(letters)}


def _lipogram_args(constraint_id: str, kw: Mapping[str, Any]) -> dict[str, Any]:
    letter = kw["letter"]
    if not isinstance(letter, str) or len(letter) != 1 or letter.lower() not in string.ascii_lowercase:
        raise ValueError(f"{constraint_id}: letter must be one letter a-z, got {letter!r}")
    return {"letter": letter.lower()}


@dataclass(frozen=True)
class _Rule:
    """One rule-checked constraint: its arguments, their validation, its checker and its prompt text."""

    args: tuple[str, ...]
    normalize: Callable[[str, Mapping[str, Any]], dict[str, Any]]
    check: Callable[[str, dict[str, Any], bool], ConstraintResult]
    describe: Callable[[dict[str, Any]], str]


_RULES: dict[str, _Rule] = {
    "corgi:num_planning": _Rule(
        ("prefix", "num_words", "last_word"),
        _completion_args,
        lambda text, kw, primed: check_num_planning(text, **kw, primed=primed),
        lambda kw: corgi_prompt("corgi:num_planning", kw),
    ),
    "corgi:cmg_hard": _Rule(
        ("concepts",),
        lambda cid, kw: {"concepts": _word_list(cid, "concepts", kw["concepts"])},
        lambda text, kw, primed: check_cmg_hard(text, kw["concepts"], primed=primed),
        lambda kw: corgi_prompt("corgi:cmg_hard", kw),
    ),
    "corgi:panagram": _Rule(
        ("letters",),
        _letters_args,
        lambda text, kw, primed: check_panagram(text, kw["letters"], primed=primed),
        lambda kw: corgi_prompt("corgi:panagram", kw),
    ),
    "completion:word_count_ending": _Rule(
        ("prefix", "num_words", "last_word"),
        _completion_args,
        lambda text, kw, primed: check_completion(text, **kw),
        lambda kw: (
            f"Complete the following sentence with exactly {_plural(kw['num_words'], 'word')}, the last "
            f"of which must be '{kw['last_word']}'. Sentence: {kw['prefix']}"
        ),
    ),
    "concepts:use_all": _Rule(
        ("concepts",),
        lambda cid, kw: {"concepts": _word_list(cid, "concepts", kw["concepts"])},
        lambda text, kw, primed: check_concepts(text, kw["concepts"]),
        lambda kw: f"Use all of the following concepts: {', '.join(kw['concepts'])}.",
    ),
    "letters:pangram": _Rule(
        (),
        lambda cid, kw: {},
        lambda text, kw, primed: check_pangram(text),
        lambda kw: "Your response must be a pangram: use every letter of the English alphabet at least once.",
    ),
    "letters:lipogram": _Rule(
        ("letter",),
        _lipogram_args,
        lambda text, kw, primed: check_lipogram(text, kw["letter"]),
        lambda kw: f"Do not use the letter '{kw['letter']}' anywhere in your response.",
    ),
    "words:max_word_length": _Rule(
        ("max_length",),
        lambda cid, kw: {"max_length": _positive_int(cid, "max_length", kw["max_length"])},
        lambda text, kw, primed: check_max_word_length(text, kw["max_length"]),
        lambda kw: f"Use only words of at most {kw['max_length']} letters.",
    ),
}
assert tuple(_RULES) == CORGI_IDS + EXTRA_IDS


def normalize_constraint(constraint_id: str, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a constraint's arguments and return them cleaned (``None`` values dropped).

    Raises:
        ValueError: naming the id and the argument that is missing, unknown or malformed.
    """
    if constraint_id in ifeval.INSTRUCTION_IDS:
        return ifeval.normalize_kwargs(constraint_id, kwargs)
    from mulligan.envs.verifiers import critics  # lazy: critics imports this module

    if constraint_id in critics.CRITIC_TASKS:
        return critics.normalize_critic_kwargs(constraint_id, kwargs)
    if constraint_id not in _RULES:
        raise ValueError(
            f"unknown constraint id {constraint_id!r}; expected one of {[*CONSTRAINT_IDS, *critics.CRITIC_IDS]}"
        )
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ValueError(f"{constraint_id}: kwargs must be a dict, got {kwargs!r}")
    rule = _RULES[constraint_id]
    kw = {k: v for k, v in dict(kwargs or {}).items() if v is not None}
    unknown = sorted(str(k) for k in kw if k not in rule.args)
    if unknown:
        raise ValueError(f"{constraint_id} takes the arguments {list(rule.args)}; unknown argument(s) {unknown}")
    missing = [name for name in rule.args if name not in kw]
    if missing:
        raise ValueError(f"{constraint_id} needs the argument {missing[0]!r}; got {sorted(kw)}")
    return rule.normalize(constraint_id, kw)


def check_constraint(
    constraint_id: str,
    response: str,
    kwargs: Mapping[str, Any] | None = None,
    mode: str = "strict",
    *,
    primed: bool = False,
    critics: Mapping[str, Any] | None = None,
) -> ConstraintResult:
    """Check one constraint (CORGI's, mulligan's or IFEval's) on ``response``.

    Args:
        constraint_id: One of :data:`CONSTRAINT_IDS`, or a CORGI critic task
            (:data:`~mulligan.envs.verifiers.critics.CRITIC_IDS`).
        response: The model's text; any string.
        kwargs: The constraint's arguments.
        mode: IFEval's ``"strict"`` or ``"loose"`` (the rule-checked constraints read the response as
            is in both).
        primed: CORGI's tasks only: the response is the continuation of CORGI's ``- Output:`` primer,
            scored exactly as the official critic scores it (see the module docstring).
        critics: The :class:`~mulligan.envs.verifiers.critics.Critic` of each critic task, by
            constraint id; the rule and tool tasks (clustering, mbpp, program) have offline defaults.

    Raises:
        ValueError: For a model-critic task without a critic (the message names the option).
    """
    if mode not in ("strict", "loose"):
        raise ValueError(f"mode must be 'strict' or 'loose', got {mode!r}")
    from mulligan.envs.verifiers import critics as critic_module  # lazy: critics imports this module

    if constraint_id in critic_module.CRITIC_TASKS:
        critic = (critics or {}).get(constraint_id) or critic_module.default_critic(constraint_id)
        if critic is None:
            raise critic_module.missing_critic_error(constraint_id)
        return critic.critique(kwargs or {}, response, primed=primed)
    kw = normalize_constraint(constraint_id, kwargs)
    if constraint_id in ifeval.INSTRUCTION_IDS:
        result = ifeval.check_instruction(constraint_id, response, kw, mode)
        messages = (result.critique,) if result.critique else ()
        return ConstraintResult(constraint_id, result.holds, float(result.holds), messages)
    return _RULES[constraint_id].check(response, kw, primed)


def check_constraints(
    constraint_ids: Sequence[str],
    kwargs_list: Sequence[Mapping[str, Any] | None],
    response: str,
    mode: str = "strict",
    *,
    primed: bool = False,
    critics: Mapping[str, Any] | None = None,
) -> list[ConstraintResult]:
    """Check every constraint of a task record (IFEval's ``instruction_id_list`` and ``kwargs``), in order.

    ``primed`` and ``critics`` are :func:`check_constraint`'s.
    """
    if len(constraint_ids) != len(kwargs_list):
        raise ValueError(f"{len(constraint_ids)} constraint ids but {len(kwargs_list)} kwargs entries")
    return [
        check_constraint(c, response, k, mode, primed=primed, critics=critics)
        for c, k in zip(constraint_ids, kwargs_list, strict=True)
    ]


def combine_critiques(results: Sequence[ConstraintResult]) -> str:
    """One critique for a response: every broken constraint's messages, in task order, joined as CORGI joins them."""
    return join_critiques(message for r in results if not r.holds for message in r.messages)


def describe_constraint(constraint_id: str, kwargs: Mapping[str, Any] | None = None) -> str:
    """The constraint as a prompt states it (for CORGI's tasks, CORGI's whole prompt: :func:`corgi_prompt`)."""
    kw = normalize_constraint(constraint_id, kwargs)
    if constraint_id in ifeval.INSTRUCTION_IDS:
        return ifeval.describe_instruction(constraint_id, kw)
    if constraint_id not in _RULES:
        raise ValueError(
            f"{constraint_id} has no generated prompt: its tasks come from CORGI's released records, prompt included"
        )
    return _RULES[constraint_id].describe(kw)
