"""Procedural constraint-following prompts: CORGI's rule-checked tasks, mulligan's, and IFEval's instructions.

:func:`generate_constraint_task` is a pure function of ``(config, seed, index)``. A task is a record
in IFEval's own format (``prompt``, ``instruction_id_list``, ``kwargs``), so generated tasks, IFEval
files and RLVR-style instruction sets all run through the same env and checker.

A CORGI task (``corgi:num_planning``, ``corgi:cmg_hard``, ``corgi:panagram``) stands alone, with
CORGI's own prompt (two worked examples) and its ``primer``, the ``- Output:`` line that opens the
answer. Its arguments are drawn like CORGI's data (``generate_data.py``): num_planning asks for 2 to
10 words, panagram gives the distinct letters of a noun of at most 6 letters, shuffled. Prefixes
and nouns come from small built-in lists rather than CORGI's story corpus; CORGI's released
prompts load with ``Mulligan/Constraints-v0``'s ``dataset`` argument.

``ConstraintTaskConfig.families`` selects what is drawn from, family names or single constraint
ids, so that a trainer can train on some tasks and evaluate on held-out ones, as CORGI does for its
meta-learning experiments (Sec. 5): e.g. train on ``("corgi:num_planning",)`` and test on
``("corgi:panagram", "corgi:cmg_hard")``, or train on IFEval families and test on others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mulligan.envs.core import seeded_rng
from mulligan.envs.verifiers.constraints import (
    CONSTRAINT_IDS,
    CORGI_IDS,
    FAMILIES,
    constraint_family,
    corgi_primer,
    describe_constraint,
)
from mulligan.envs.verifiers.ifeval import LANGUAGE_NAMES

TOPICS: tuple[str, ...] = (
    "a short story about a lighthouse keeper",
    "a letter to a friend about a trip to the mountains",
    "a product description for a solar-powered lamp",
    "an essay on why cities should plant more trees",
    "a blog post about learning to cook at home",
    "a review of a small neighborhood bakery",
    "a speech for a school science fair",
    "a guide to keeping a vegetable garden",
    "a poem about the sea at night",
    "an email asking a colleague to review a report",
    "a summary of how bees make honey",
    "a pitch for a board game about trains",
    "advice for someone starting to run",
    "a description of a rainy morning in a village",
    "a note explaining how to care for a cat",
)
PREFIXES: tuple[str, ...] = (
    "The old man walked slowly toward",
    "After the storm had passed, the children",
    "She opened the letter and",
    "Every morning the baker",
    "When the lights went out, we",
    "The little boat drifted",
    "On the last day of summer, my friends and I",
    "The teacher smiled because",
    "Deep in the forest, a fox",
    "Before the train left the station, he",
)
LAST_WORDS: tuple[str, ...] = (
    "river",
    "home",
    "light",
    "garden",
    "tonight",
    "window",
    "bread",
    "forest",
    "friends",
    "sky",
    "door",
    "music",
)
CONCEPTS: tuple[str, ...] = (
    "river",
    "lantern",
    "dog",
    "run",
    "bread",
    "bake",
    "child",
    "garden",
    "plant",
    "boat",
    "sail",
    "mountain",
    "climb",
    "book",
    "read",
    "rain",
    "umbrella",
    "music",
    "dance",
    "train",
    "ticket",
    "teacher",
    "write",
    "bridge",
    "cross",
    "fish",
    "swim",
    "kite",
    "fly",
    "candle",
    "light",
    "market",
    "buy",
    "song",
    "sing",
)
# Nouns of at most 6 letters for panagrams (CORGI draws random nouns of at most 6 letters).
PANAGRAM_WORDS: tuple[str, ...] = (
    "baker",
    "jelly",
    "garden",
    "window",
    "river",
    "bread",
    "forest",
    "candle",
    "market",
    "ticket",
    "bridge",
    "planet",
    "rabbit",
    "pencil",
    "orange",
    "silver",
    "kettle",
    "ladder",
    "mirror",
    "basket",
    "tomato",
    "banana",
    "castle",
    "dragon",
    "island",
    "pepper",
    "rocket",
    "butter",
    "cookie",
    "parrot",
    "turtle",
    "carpet",
    "jacket",
    "button",
    "helmet",
    "lemon",
    "piano",
    "tiger",
    "zebra",
    "cloud",
    "honey",
    "wagon",
    "beach",
    "stone",
    "clock",
)
KEYWORDS: tuple[str, ...] = (
    "sunlight",
    "history",
    "journey",
    "balance",
    "harvest",
    "pattern",
    "signal",
    "comfort",
    "window",
    "silver",
    "promise",
    "island",
    "engine",
    "memory",
    "season",
    "village",
)
END_PHRASES: tuple[str, ...] = (
    "Is there anything else I can help with?",
    "Let me know if you have additional questions.",
    "Hope you agree with me.",
    "That is all you need!",
    "Peace!",
    "Any other questions?",
)
FIRST_WORDS: tuple[str, ...] = ("today", "however", "finally", "summary", "meanwhile", "first")
SECTION_SPLITTERS: tuple[str, ...] = ("Section", "SECTION", "Part", "Chapter")
GENERATED_LANGUAGES: tuple[str, ...] = ("en", "fr", "de", "es", "it", "pt")

# Pairs of ids that are not drawn together: the prompt would contradict itself or become unreadable
# (IFEval keeps a similar conflict table).
_EXCLUSIVE = {"completion:word_count_ending", "detectable_format:constrained_response", *CORGI_IDS}
_CONFLICTS: dict[str, set[str]] = {
    "change_case:english_capital": {
        "change_case:english_lowercase",
        "change_case:capital_word_frequency",
        "language:response_language",
        "letters:lipogram",
        "detectable_format:multiple_sections",
    },
    "change_case:english_lowercase": {
        "change_case:capital_word_frequency",
        "language:response_language",
        "detectable_format:multiple_sections",
    },
    "change_case:capital_word_frequency": {
        "language:response_language",
        "detectable_format:multiple_sections",
        "detectable_content:postscript",
    },
    "detectable_format:json_format": {
        i for i in CONSTRAINT_IDS if constraint_family(i) in ("detectable_format", "startend", "combination")
    }
    | {
        "length_constraints:number_paragraphs",
        "length_constraints:nth_paragraph_first_word",
        "detectable_content:postscript",
        "length_constraints:number_sentences",
    },
    "combination:two_responses": {
        "combination:repeat_prompt",
        "length_constraints:number_paragraphs",
        "length_constraints:nth_paragraph_first_word",
        "startend:quotation",
        "detectable_format:number_bullet_lists",
        "detectable_format:multiple_sections",
        "length_constraints:number_sentences",
        "length_constraints:number_words",
        "keywords:frequency",
        "change_case:capital_word_frequency",
        "keywords:letter_frequency",
    },
    "combination:repeat_prompt": {
        "startend:quotation",
        "length_constraints:nth_paragraph_first_word",
        "punctuation:no_comma",
        "keywords:forbidden_words",
        "letters:lipogram",
        "words:max_word_length",
        "keywords:letter_frequency",
        "length_constraints:number_words",
        "length_constraints:number_sentences",
        "language:response_language",
        "keywords:frequency",
        "change_case:capital_word_frequency",
        "change_case:english_lowercase",
        "change_case:english_capital",
    },
    "length_constraints:number_sentences": {"length_constraints:number_words"},
    "length_constraints:number_paragraphs": {
        "length_constraints:nth_paragraph_first_word",
        "detectable_format:multiple_sections",
    },
    "length_constraints:nth_paragraph_first_word": {
        "detectable_format:multiple_sections",
        "detectable_format:title",
        "language:response_language",
    },
    "language:response_language": {
        i for i in CONSTRAINT_IDS if constraint_family(i) in ("concepts", "letters", "words", "keywords")
    }
    | {
        "detectable_content:number_placeholders",
        "startend:end_checker",
        "detectable_content:postscript",
        "length_constraints:number_words",
        "length_constraints:number_sentences",
        "detectable_format:number_highlighted_sections",
        "detectable_format:number_bullet_lists",
        "detectable_format:multiple_sections",
    },
    "letters:lipogram": {
        "letters:pangram",
        "keywords:existence",
        "keywords:frequency",
        "concepts:use_all",
        "startend:end_checker",
        "keywords:letter_frequency",
        "detectable_format:multiple_sections",
        "detectable_content:postscript",
        "length_constraints:nth_paragraph_first_word",
    },
    "letters:pangram": {"words:max_word_length", "keywords:letter_frequency"},
    "words:max_word_length": {
        "keywords:existence",
        "keywords:frequency",
        "concepts:use_all",
        "startend:end_checker",
        "length_constraints:nth_paragraph_first_word",
        "detectable_format:multiple_sections",
    },
    "keywords:letter_frequency": {
        "concepts:use_all",
        "keywords:existence",
        "startend:end_checker",
        "keywords:frequency",
        "length_constraints:number_words",
        "detectable_format:multiple_sections",
        "detectable_content:postscript",
        "length_constraints:nth_paragraph_first_word",
    },
    "keywords:forbidden_words": {"keywords:existence", "keywords:frequency", "concepts:use_all"},
}


def _conflicting(a: str, b: str) -> bool:
    return b in _CONFLICTS.get(a, set()) or a in _CONFLICTS.get(b, set())


@dataclass(frozen=True)
class ConstraintTaskConfig:
    """Configuration of the constraint-task generator.

    Attributes:
        families: What to draw from: family names (see
            :data:`mulligan.envs.verifiers.constraints.FAMILIES`: CORGI's ``corgi``; mulligan's
            ``completion``, ``concepts``, ``letters``, ``words``; IFEval's ``keywords``, ``language``,
            ``length_constraints``, ``detectable_content``, ``detectable_format``, ``combination``,
            ``startend``, ``change_case``, ``punctuation``) or single constraint ids such as
            ``"corgi:panagram"``.
        min_constraints: Fewest constraints per task (a completion task always has exactly one).
        max_constraints: Most constraints per task.
        languages: Language codes ``language:response_language`` draws from.
        max_concepts: Most concepts in a ``concepts:use_all`` constraint (at least 2 are drawn).
    """

    families: tuple[str, ...] = FAMILIES
    min_constraints: int = 1
    max_constraints: int = 3
    languages: tuple[str, ...] = GENERATED_LANGUAGES
    max_concepts: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.families, str):
            raise ValueError(f"families must be a tuple of family names, not the string {self.families!r}")
        object.__setattr__(self, "families", tuple(self.families))
        object.__setattr__(self, "languages", tuple(self.languages))
        if not self.families:
            raise ValueError(f"families must name at least one of {FAMILIES}")
        unknown = [f for f in self.families if f not in FAMILIES and f not in CONSTRAINT_IDS]
        if unknown:
            raise ValueError(
                f"unknown constraint families {unknown}; choose families from {FAMILIES} or single constraint ids"
            )
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"families must not repeat a family, got {self.families}")
        if not isinstance(self.min_constraints, int) or self.min_constraints < 1:
            raise ValueError(f"min_constraints must be an int >= 1, got {self.min_constraints!r}")
        if not isinstance(self.max_constraints, int) or self.max_constraints < self.min_constraints:
            raise ValueError(
                f"max_constraints must be an int >= min_constraints ({self.min_constraints}), "
                f"got {self.max_constraints!r}"
            )
        bad = [code for code in self.languages if code not in LANGUAGE_NAMES]
        if not self.languages or bad:
            raise ValueError(
                f"languages must be a non-empty tuple of codes from {sorted(LANGUAGE_NAMES)}, got {self.languages}"
            )
        if not isinstance(self.max_concepts, int) or self.max_concepts < 2:
            raise ValueError(f"max_concepts must be an int >= 2, got {self.max_concepts!r}")


def _pick(rng: np.random.Generator, items: tuple[Any, ...] | list[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _sample_kwargs(constraint_id: str, rng: np.random.Generator, config: ConstraintTaskConfig) -> dict[str, Any]:
    """Arguments for one constraint, drawn from ranges a careful writer can satisfy."""
    relation = _pick(rng, ("less than", "at least"))
    samplers = {
        "corgi:num_planning": lambda: {
            "prefix": _pick(rng, PREFIXES),
            "num_words": int(rng.integers(2, 11)),
            "last_word": _pick(rng, LAST_WORDS),
        },
        "corgi:cmg_hard": lambda: {
            "concepts": [
                str(c) for c in rng.choice(CONCEPTS, size=int(rng.integers(2, config.max_concepts + 1)), replace=False)
            ]
        },
        "corgi:panagram": lambda: {
            "letters": [str(x) for x in rng.permutation(sorted(set(_pick(rng, PANAGRAM_WORDS))))]
        },
        "completion:word_count_ending": lambda: {
            "prefix": _pick(rng, PREFIXES),
            "num_words": int(rng.integers(3, 13)),
            "last_word": _pick(rng, LAST_WORDS),
        },
        "concepts:use_all": lambda: {
            "concepts": [
                str(c) for c in rng.choice(CONCEPTS, size=int(rng.integers(2, config.max_concepts + 1)), replace=False)
            ]
        },
        "letters:pangram": dict,
        "letters:lipogram": lambda: {"letter": _pick(rng, tuple("zqxjkvbwy"))},
        "words:max_word_length": lambda: {"max_length": int(rng.integers(5, 9))},
        "keywords:existence": lambda: {
            "keywords": [str(k) for k in rng.choice(KEYWORDS, size=int(rng.integers(1, 4)), replace=False)]
        },
        "keywords:frequency": lambda: {
            "keyword": _pick(rng, KEYWORDS),
            "frequency": int(rng.integers(2, 6)),
            "relation": relation,
        },
        "keywords:forbidden_words": lambda: {
            "forbidden_words": [
                str(k)
                for k in rng.choice(
                    ("very", "really", "good", "nice", "thing", "stuff", "great"),
                    size=int(rng.integers(1, 4)),
                    replace=False,
                )
            ]
        },
        "keywords:letter_frequency": lambda: {
            "letter": _pick(rng, tuple("zqxjkvbwy")),
            "let_frequency": int(rng.integers(2, 8)),
            "let_relation": relation,
        },
        "language:response_language": lambda: {"language": _pick(rng, config.languages)},
        # "less than" thresholds leave room for the sentences other constraints add.
        "length_constraints:number_sentences": lambda: {
            "num_sentences": int(rng.integers(6, 12) if relation == "less than" else rng.integers(2, 9)),
            "relation": relation,
        },
        "length_constraints:number_paragraphs": lambda: {"num_paragraphs": int(rng.integers(2, 6))},
        "length_constraints:number_words": lambda: {
            "num_words": int(rng.integers(10, 21) if relation == "less than" else rng.integers(4, 21)) * 10,
            "relation": relation,
        },
        "length_constraints:nth_paragraph_first_word": lambda: _nth_paragraph_kwargs(rng),
        "detectable_content:number_placeholders": lambda: {"num_placeholders": int(rng.integers(1, 6))},
        "detectable_content:postscript": lambda: {"postscript_marker": _pick(rng, ("P.S.", "P.P.S"))},
        "detectable_format:number_bullet_lists": lambda: {"num_bullets": int(rng.integers(1, 7))},
        "detectable_format:constrained_response": dict,
        "detectable_format:number_highlighted_sections": lambda: {"num_highlights": int(rng.integers(1, 5))},
        "detectable_format:multiple_sections": lambda: {
            "section_spliter": _pick(rng, SECTION_SPLITTERS),
            "num_sections": int(rng.integers(2, 6)),
        },
        "detectable_format:json_format": dict,
        "detectable_format:title": dict,
        "combination:two_responses": dict,
        "combination:repeat_prompt": lambda: {"prompt_to_repeat": f"Write {_pick(rng, TOPICS)}."},
        "startend:end_checker": lambda: {"end_phrase": _pick(rng, END_PHRASES)},
        "change_case:capital_word_frequency": lambda: {
            "capital_frequency": int(rng.integers(2, 11)),
            "capital_relation": relation,
        },
        "change_case:english_capital": dict,
        "change_case:english_lowercase": dict,
        "punctuation:no_comma": dict,
        "startend:quotation": dict,
    }
    return samplers[constraint_id]()


def _nth_paragraph_kwargs(rng: np.random.Generator) -> dict[str, Any]:
    num_paragraphs = int(rng.integers(2, 6))
    return {
        "num_paragraphs": num_paragraphs,
        "nth_paragraph": int(rng.integers(1, num_paragraphs + 1)),
        "first_word": _pick(rng, FIRST_WORDS),
    }


def generate_constraint_task(config: ConstraintTaskConfig, seed: int, index: int) -> dict[str, Any]:
    """The task at ``index`` of the dataset seeded ``seed``, as an IFEval-format record.

    Returns ``{"key", "prompt", "instruction_id_list", "kwargs"}``, plus ``"primer"`` for CORGI's
    tasks. A CORGI task or a completion task stands alone; other tasks are a writing topic (or a
    concept list) followed by 1 to ``max_constraints`` non-conflicting constraints drawn from
    ``config.families``.
    """
    rng = seeded_rng(seed, index)
    family = _pick(rng, config.families)
    pool = [i for i in CONSTRAINT_IDS if constraint_family(i) in config.families or i in config.families]
    first = family if family in CONSTRAINT_IDS else _pick(rng, [i for i in pool if constraint_family(i) == family])
    chosen = [first]
    if first not in _EXCLUSIVE:
        target = int(rng.integers(config.min_constraints, config.max_constraints + 1))
        candidates = [i for i in pool if i not in _EXCLUSIVE and i != first]
        order = rng.permutation(len(candidates))
        for k in order:
            if len(chosen) >= target:
                break
            candidate = candidates[int(k)]
            if not any(_conflicting(candidate, c) for c in chosen):
                chosen.append(candidate)
    kwargs = [_sample_kwargs(c, rng, config) for c in chosen]
    if chosen[0] in CORGI_IDS:
        return {
            "key": index,
            "prompt": describe_constraint(chosen[0], kwargs[0]),
            "instruction_id_list": chosen,
            "kwargs": kwargs,
            "primer": corgi_primer(chosen[0], kwargs[0]),
        }
    if chosen[0] == "completion:word_count_ending":
        prompt = describe_constraint(chosen[0], kwargs[0])
    else:
        if "concepts:use_all" in chosen:
            head = "Write a short piece of text."
        elif chosen[0] == "detectable_format:constrained_response":
            head = f"Is it a good idea to write {_pick(rng, TOPICS)} this week?"
        else:
            head = f"Write {_pick(rng, TOPICS)}."
        repeat = [k for c, k in zip(chosen, kwargs, strict=True) if c == "combination:repeat_prompt"]
        if repeat:
            head = repeat[0]["prompt_to_repeat"]
        lines = [
            describe_constraint(c, k) for c, k in zip(chosen, kwargs, strict=True) if c != "combination:repeat_prompt"
        ]
        if repeat:
            lines.append(describe_constraint("combination:repeat_prompt", repeat[0]).split(" Request: ")[0])
        prompt = head + " " + " ".join(lines)
    return {"key": index, "prompt": prompt, "instruction_id_list": chosen, "kwargs": kwargs}
