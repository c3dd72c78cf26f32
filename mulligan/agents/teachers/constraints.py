"""Scripted writers for ``Mulligan/Constraints-v0``: a careful one, and a noisy one that heeds feedback.

:class:`ConstraintWriter` reads the task record (``AgentInput.task``) and composes a response that
satisfies every constraint it can: CORGI's tasks (num_planning's continuation, cmg_hard's one
sentence, a panagram word from the generator's nouns or the word list, written as an unprimed chat
answer), word and sentence counts, concepts, keywords, letters, casing, paragraphs, sections,
bullets, highlights, titles, placeholders, postscripts, JSON, quotation, repeated prompts, two
responses, end phrases, and the response language for a handful of languages. Counts are met by a
repair loop that re-checks its draft with the env's own checkers.

:class:`NoisyConstraintWriter` breaks a configurable share of the constraints on its first attempt.
When the conversation holds feedback (CORGI's "- Feedback: ... Please Try again."), it fixes the
constraints whose critic messages the feedback quotes (joined ones start lower-cased),
``fixes_per_turn`` at a time, so that a session's score rises attempt by attempt: the positive and
negative trajectories, and the test double, of CORGI's feedback loop.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mulligan.agents.base import Action, Agent, AgentInput
from mulligan.envs.generators.constraints import PANAGRAM_WORDS
from mulligan.envs.verifiers.constraints import check_constraint, english_word_list, is_english_word, words_of
from mulligan.envs.verifiers.text import count_sentences, count_words

FILLER_SENTENCES: tuple[str, ...] = (
    "The morning air was calm and the road was quiet.",
    "A small boat rested on the sand near the pier.",
    "Fresh bread from the oven filled the room with warmth.",
    "Most people in town walk to the market on Sunday.",
    "Old maps show paths that no one uses today.",
    "The garden needs water after a long dry week.",
    "Our neighbor paints the fence a pale shade of blue.",
    "Birds gather on the roof when the sun goes down.",
    "The library opens early and closes late in winter.",
    "Clear plans help a team finish work on time.",
    "She kept notes in a thin brown notebook.",
    "The path along the hill offers a wide view.",
    "Children laugh as they chase the ball across the lawn.",
    "A cup of tea can make a cold day feel shorter.",
    "The train arrives at noon and leaves an hour later.",
    "Simple tools often last longer than fancy ones.",
    "Rain tapped on the glass for most of the night.",
    "The museum shows art from many parts of the world.",
    "He fixed the old clock with patience and care.",
    "Long walks give the mind time to rest.",
    "The lake turns gold when the light is low.",
    "Each step of the recipe is easy to follow.",
    "Students read aloud to practice their new words.",
    "The shop on the corner sells fruit and flowers.",
)
# Short words for sentences that must avoid letters or long words.
WORD_POOL: tuple[str, ...] = (
    "the",
    "a",
    "sun",
    "is",
    "on",
    "old",
    "road",
    "and",
    "cat",
    "sat",
    "at",
    "home",
    "rain",
    "fell",
    "in",
    "town",
    "we",
    "ate",
    "hot",
    "soup",
    "men",
    "ran",
    "to",
    "sea",
    "it",
    "was",
    "dim",
    "still",
    "red",
    "hat",
    "pond",
    "tree",
    "art",
    "fun",
    "not",
    "long",
    "as",
    "its",
    "toil",
    "mild",
    "hill",
    "colt",
    "mud",
    "dusk",
    "lad",
    "oil",
    "lamp",
    "salt",
    "tide",
    "pot",
    "tin",
    "door",
    "calm",
    "dog",
    "day",
    "way",
    "new",
    "few",
    "big",
    "box",
    "jam",
    "sky",
    "low",
    "why",
    "who",
    "now",
    "quiet",
)
PANGRAM_SENTENCE = "Pack my box with five dozen liquor jugs."
CAPITAL_WORDS: tuple[str, ...] = (
    "NOTE",
    "FOCUS",
    "GO",
    "TOP",
    "GOAL",
    "PLAN",
    "STEP",
    "TIP",
    "CLEAR",
    "TRUE",
    "FAST",
    "REAL",
    "SOLID",
    "CALM",
    "HOPE",
    "IDEA",
)
LONG_WORD = "extraordinarily"
# Short paragraphs in the languages the generator asks for (langdetect identifies each reliably).
LANGUAGE_TEXT: dict[str, tuple[str, ...]] = {
    "en": (
        "The weather was pleasant and the streets were full of people walking to work.",
        "Everyone agreed that the new park is the best place in the city to relax.",
    ),
    "fr": (
        "Le temps était agréable et les rues étaient pleines de gens qui allaient au travail.",
        "Tout le monde pense que le nouveau parc est le meilleur endroit de la ville pour se reposer.",
    ),
    "de": (
        "Das Wetter war angenehm und die Straßen waren voller Menschen auf dem Weg zur Arbeit.",
        "Alle waren sich einig, dass der neue Park der schönste Ort der Stadt zum Entspannen ist.",
    ),
    "es": (
        "El tiempo era agradable y las calles estaban llenas de gente que iba a trabajar.",
        "Todos estaban de acuerdo en que el nuevo parque es el mejor lugar de la ciudad para descansar.",
    ),
    "it": (
        "Il tempo era piacevole e le strade erano piene di persone che andavano al lavoro.",
        "Tutti erano d'accordo che il nuovo parco è il posto migliore della città per rilassarsi.",
    ),
    "pt": (
        "O tempo estava agradável e as ruas estavam cheias de pessoas que iam para o trabalho.",
        "Todos concordaram que o novo parque é o melhor lugar da cidade para descansar.",
    ),
}

_MAX_REPAIRS = 60


class _Plan:
    """Which constraints a draft satisfies, and their arguments."""

    def __init__(self, task: Mapping[str, Any], broken: frozenset[int]):
        self.kwargs: dict[str, dict[str, Any]] = {}
        self.satisfy: dict[str, bool] = {}
        for index, (cid, kw) in enumerate(zip(task["instruction_id_list"], task["kwargs"], strict=True)):
            self.kwargs[cid] = dict(kw or {})
            self.satisfy[cid] = self.satisfy.get(cid, True) and index not in broken

    def want(self, cid: str) -> bool:
        return cid in self.kwargs and self.satisfy[cid]

    def breaks(self, cid: str) -> bool:
        return cid in self.kwargs and not self.satisfy[cid]

    def has(self, cid: str) -> bool:
        return cid in self.kwargs

    def kw(self, cid: str) -> dict[str, Any]:
        return self.kwargs[cid]


def _word_filter(plan: _Plan):
    banned_letters: set[str] = set()
    max_length = 10**9
    avoid: set[str] = set()
    if plan.want("letters:lipogram"):
        banned_letters.add(plan.kw("letters:lipogram")["letter"].lower())
    if plan.has("keywords:letter_frequency"):
        kw = plan.kw("keywords:letter_frequency")
        # Filler avoids the letter; the draft adds exactly as many as it needs.
        banned_letters.add(kw["letter"].lower())
    if plan.want("words:max_word_length"):
        max_length = plan.kw("words:max_word_length")["max_length"]
    if plan.has("keywords:forbidden_words"):
        avoid |= {w.lower() for w in plan.kw("keywords:forbidden_words")["forbidden_words"]}
    if plan.has("keywords:frequency"):
        avoid.add(plan.kw("keywords:frequency")["keyword"].lower())

    def ok(word: str) -> bool:
        w = word.lower()
        return len(w) <= max_length and w not in avoid and not (set(w) & banned_letters)

    return ok


def _filler(plan: _Plan) -> list[str]:
    ok = _word_filter(plan)
    good = [s for s in FILLER_SENTENCES if all(ok(w) for w in words_of(s))]
    if len(good) >= 8:
        return good
    pool = [w for w in WORD_POOL if ok(w)] or ["ha"]
    synthetic = []
    for i in range(12):
        words = [pool[(i * 5 + j * 3) % len(pool)] for j in range(7)]
        synthetic.append(" ".join(words).capitalize() + ".")
    return good + synthetic


def _join(words: Sequence[str]) -> str:
    return " and ".join(words)


def _content_sentences(plan: _Plan) -> list[str]:
    """Sentences that carry keywords, concepts, letters, placeholders and the like."""
    return _keyword_sentences(plan) + _format_sentences(plan)


def _keyword_sentences(plan: _Plan) -> list[str]:
    """Sentences that carry concepts, keywords and letters."""
    out = []
    if plan.has("concepts:use_all"):
        concepts = list(plan.kw("concepts:use_all")["concepts"])
        if plan.breaks("concepts:use_all"):
            concepts = concepts[1:]
        if concepts:
            out.append(f"This scene has {_join(['the ' + c for c in concepts])} in it.")
    if plan.want("keywords:existence"):
        out.append(f"It touches on {_join(plan.kw('keywords:existence')['keywords'])}.")
    if plan.has("keywords:frequency"):
        kw = plan.kw("keywords:frequency")
        at_least = kw["relation"] == "at least"
        times = kw["frequency"] if at_least == plan.want("keywords:frequency") else max(kw["frequency"] - 1, 0)
        if not at_least and plan.breaks("keywords:frequency"):
            times = kw["frequency"]
        if times:
            out.append(f"We think of {_join([kw['keyword']] * times)} again.")
    if plan.breaks("keywords:forbidden_words"):
        out.append(f"The word {plan.kw('keywords:forbidden_words')['forbidden_words'][0]} slips in here.")
    if plan.has("keywords:letter_frequency"):
        kw = plan.kw("keywords:letter_frequency")
        at_least = kw["let_relation"] == "at least"
        times = kw["let_frequency"] if at_least == plan.want("keywords:letter_frequency") else 0
        if not at_least and plan.breaks("keywords:letter_frequency"):
            times = kw["let_frequency"]
        if times:
            out.append(f"Count: {' '.join([kw['letter']] * times)}.")
    return out


def _format_sentences(plan: _Plan) -> list[str]:
    """Sentences that carry pangrams, lipogram breaks, placeholders, highlights and capitals."""
    out = []
    if plan.want("letters:pangram"):
        out.append(PANGRAM_SENTENCE)
    if plan.breaks("letters:lipogram"):
        out.append(f"Here is the letter {plan.kw('letters:lipogram')['letter']}.")
    if plan.breaks("words:max_word_length"):
        out.append(f"It was {LONG_WORD} calm.")
    if plan.want("detectable_content:number_placeholders"):
        n = plan.kw("detectable_content:number_placeholders")["num_placeholders"]
        out.append(f"Fill in {_join([f'[field {i + 1}]' for i in range(n)])} at the start.")
    if plan.want("detectable_format:number_highlighted_sections"):
        n = plan.kw("detectable_format:number_highlighted_sections")["num_highlights"]
        out.append(f"Mind these parts: {_join([f'*part {i + 1}*' for i in range(n)])}.")
    if plan.has("change_case:capital_word_frequency"):
        kw = plan.kw("change_case:capital_word_frequency")
        at_least = kw["capital_relation"] == "at least"
        times = kw["capital_frequency"] if at_least == plan.want("change_case:capital_word_frequency") else 0
        if not at_least and plan.breaks("change_case:capital_word_frequency"):
            times = kw["capital_frequency"]
        if times:
            caps = [CAPITAL_WORDS[i % len(CAPITAL_WORDS)] for i in range(times)]
            out.append(f"Note these: {' '.join(caps)}.")
    if plan.breaks("punctuation:no_comma"):
        out.append("Well, that is how it went.")
    return out


def _num_paragraphs(plan: _Plan) -> int:
    if plan.has("length_constraints:number_paragraphs"):
        n = plan.kw("length_constraints:number_paragraphs")["num_paragraphs"]
        return n if plan.want("length_constraints:number_paragraphs") else (n - 1 if n > 1 else n + 1)
    if plan.has("length_constraints:nth_paragraph_first_word"):
        return plan.kw("length_constraints:nth_paragraph_first_word")["num_paragraphs"]
    if plan.has("detectable_format:multiple_sections"):
        n = plan.kw("detectable_format:multiple_sections")["num_sections"]
        return n if plan.want("detectable_format:multiple_sections") else max(n - 1, 0) or 1
    return 1


def _body(plan: _Plan, num_filler: int, offset: int) -> str:
    """One response body with ``num_filler`` filler sentences (before case, JSON and quote wrapping)."""
    count = _num_paragraphs(plan)
    language = plan.kw("language:response_language")["language"] if plan.has("language:response_language") else "en"
    if plan.breaks("language:response_language"):
        language = "fr" if language == "en" else "en"
    paragraphs: list[list[str]] = [[] for _ in range(count)]
    if language != "en" and language in LANGUAGE_TEXT:
        for i in range(count):
            # Two responses must differ: the second tells the sentences in the other order.
            paragraphs[i].extend(LANGUAGE_TEXT[language][:: -1 if offset else 1])
    else:
        filler = _filler(plan)
        for i in range(max(num_filler, count)):
            paragraphs[i % count].append(filler[(i + offset) % len(filler)])
        for i, sentence in enumerate(_content_sentences(plan)):
            paragraphs[i % count].insert(1, sentence)
    if plan.has("length_constraints:nth_paragraph_first_word"):
        kw = plan.kw("length_constraints:nth_paragraph_first_word")
        target = paragraphs[min(kw["nth_paragraph"], count) - 1]
        if plan.want("length_constraints:nth_paragraph_first_word"):
            target[0] = kw["first_word"].capitalize() + " " + target[0][0].lower() + target[0][1:]
    texts = [" ".join(p) for p in paragraphs]
    if plan.has("detectable_format:multiple_sections"):
        splitter = plan.kw("detectable_format:multiple_sections")["section_spliter"]
        texts = [f"{splitter} {i + 1}\n{t}" for i, t in enumerate(texts)]
    if plan.has("detectable_format:number_bullet_lists"):
        n = plan.kw("detectable_format:number_bullet_lists")["num_bullets"]
        n = n if plan.want("detectable_format:number_bullet_lists") else n + 1
        texts[-1] += "\n" + "\n".join(f"* Point {i + 1} of the list" for i in range(n))
    if plan.want("detectable_content:postscript"):
        marker = plan.kw("detectable_content:postscript")["postscript_marker"]
        texts[-1] += f"\n{marker} That is all."
    separator = "\n\n***\n\n" if plan.has("length_constraints:number_paragraphs") else "\n\n"
    text = separator.join(texts)
    if plan.want("detectable_format:title"):
        text = "<<Our Note>>\n\n" + text
    return text


def _named_in(feedback: str, messages: Sequence[str]) -> bool:
    """Whether ``feedback`` quotes these critic messages (joined ones start lower-cased: "In addition, you ...")."""
    return bool(messages) and all(m[1:] in feedback for m in messages)


def _panagram_word(letters: Sequence[str]) -> str | None:
    """An English word made of exactly ``letters``: from the generator's nouns, else the word list."""
    wanted = set(letters)
    for word in (*PANAGRAM_WORDS, *sorted(english_word_list())):
        if set(word) == wanted and is_english_word(word):
            return word
    return None


def _single_answer(plan: _Plan) -> str | None:
    """The whole answer for tasks that stand alone (CORGI's, completion, constrained response), else ``None``."""
    for cid in ("corgi:num_planning", "completion:word_count_ending"):
        if plan.has(cid):
            kw = plan.kw(cid)
            n = kw["num_words"] + (2 if plan.breaks(cid) else 0)
            pool = words_of(" ".join(FILLER_SENTENCES).lower())
            words = [pool[i % len(pool)] for i in range(n - 1)] + [kw["last_word"]]
            return " ".join(words) + "."
    if plan.has("corgi:cmg_hard"):
        concepts = list(plan.kw("corgi:cmg_hard")["concepts"])
        if plan.breaks("corgi:cmg_hard"):
            concepts = concepts[1:]
        return f"There was {_join(['the ' + c for c in concepts]) or 'nothing'} in the picture."
    if plan.has("corgi:panagram"):
        letters = plan.kw("corgi:panagram")["letters"]
        if plan.breaks("corgi:panagram"):
            # A letter that is not on the list breaks the task whatever the word.
            return f"Word: {''.join(letters)}{next(c for c in 'qzxjv' + string.ascii_lowercase if c not in letters)}."
        return f"Word: {_panagram_word(letters) or ''.join(letters)}."
    if plan.has("detectable_format:constrained_response"):
        return "My answer is yes." if plan.want("detectable_format:constrained_response") else "I am not sure."
    return None


def compose_response(task: Mapping[str, Any], broken: frozenset[int] = frozenset()) -> str:
    """A response to ``task`` that satisfies every constraint it can, except those indexed in ``broken``.

    Args:
        task: An IFEval-format task record (``instruction_id_list`` and ``kwargs``).
        broken: Indices (in ``instruction_id_list``) of constraints to break on purpose.
    """
    plan = _Plan(task, broken)
    single = _single_answer(plan)
    if single is not None:
        return single

    def draft(num_filler: int) -> str:
        text = _body(plan, num_filler, 0)
        if plan.want("combination:two_responses"):
            text += "\n\n******\n\n" + _body(plan, num_filler, 7)
        if plan.want("combination:repeat_prompt"):
            text = plan.kw("combination:repeat_prompt")["prompt_to_repeat"] + "\n\n" + text
        if plan.want("startend:end_checker"):
            text += " " + plan.kw("startend:end_checker")["end_phrase"]
        if plan.want("punctuation:no_comma"):
            text = text.replace(",", "")
        if plan.want("detectable_format:json_format"):
            text = json.dumps({"note": text}, ensure_ascii=False)
        if plan.want("change_case:english_lowercase"):
            text = text.lower()
        if plan.want("change_case:english_capital"):
            text = text.upper()
        if plan.want("startend:quotation"):
            text = f'"{text}"'
        return text

    # langdetect needs a few sentences to be sure of English under forced case.
    forced_case = plan.want("change_case:english_lowercase") or plan.want("change_case:english_capital")
    return _repair_counts(plan, draft, (4 if forced_case else 2) * _num_paragraphs(plan))


def _repair_counts(plan: _Plan, draft: Callable[[int], str], num_filler: int) -> str:
    """Grow or shrink the filler until the sentence and word counts are right; the final draft."""
    text = draft(num_filler)
    for _ in range(_MAX_REPAIRS):
        step = 0
        for cid, counter, per_sentence in (
            ("length_constraints:number_sentences", count_sentences, 1),
            ("length_constraints:number_words", count_words, 9),
        ):
            if not plan.has(cid):
                continue
            kw = plan.kw(cid)
            target = kw["num_sentences"] if cid.endswith("sentences") else kw["num_words"]
            at_least = kw["relation"] == "at least"
            if plan.breaks(cid):
                # "less than N" is the negation of "at least N".
                at_least = not at_least
            have = counter(text)
            if at_least and have < target:
                step = max(step, 1, (target - have) // per_sentence)
            elif not at_least and have >= target:
                step = min(step, -max(1, (have - target + 1) // per_sentence))
        if step == 0 or (num_filler <= 1 and step < 0):
            break
        num_filler = max(1, num_filler + step)
        text = draft(num_filler)
    return text


def _task_digest(task: Mapping[str, Any]) -> int:
    blob = json.dumps(task, sort_keys=True, default=str, ensure_ascii=False)
    return int(hashlib.sha1(blob.encode("utf-8", "surrogatepass")).hexdigest()[:8], 16)


class ConstraintWriter(Agent):
    """A scripted writer that satisfies every constraint it can, and fixes what feedback names.

    It reads the task record from ``AgentInput.task`` (the env's ``unwrapped.task``) and answers with
    :func:`compose_response`. It holds no state: in a CORGI session it reconstructs from the
    conversation which constraints it has already been told about (see
    :class:`NoisyConstraintWriter`, of which this is the noise-free case).
    """

    def _initial_broken(self, task: Mapping[str, Any]) -> list[int]:
        return []

    fixes_per_turn: int | None = None

    def respond(self, agent_input: AgentInput) -> str:
        """The response for one env: first-attempt breaks, minus what feedback in the conversation named."""
        task = agent_input.task
        if task is None:
            raise ValueError("ConstraintWriter reads the task record: pass AgentInput(task=env.unwrapped.task)")
        broken = list(self._initial_broken(task))
        messages = agent_input.messages
        for i, message in enumerate(messages[:-1]):
            if message["role"] != "assistant" or not broken:
                continue
            feedback = messages[i + 1]["content"] if messages[i + 1]["role"] == "user" else ""
            named = [
                b
                for b in broken
                if _named_in(
                    feedback,
                    check_constraint(task["instruction_id_list"][b], message["content"], task["kwargs"][b]).messages,
                )
            ]
            for b in named[: self.fixes_per_turn] if self.fixes_per_turn else named:
                broken.remove(b)
        return compose_response(task, frozenset(broken))

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """One composed response per input."""
        return [Action(text=self.respond(agent_input)) for agent_input in inputs]


class NoisyConstraintWriter(ConstraintWriter):
    """A writer that breaks a share of the constraints on its first attempt, then heeds feedback.

    Which constraints break is drawn once per task (from ``seed`` and the task's content, so a
    session is reproducible and the writer needs no memory). On each later attempt it fixes the
    broken constraints whose critiques the previous feedback quoted, at most ``fixes_per_turn`` at
    a time (all of them when ``None``), so that the score rises attempt by attempt.

    Args:
        break_rate: Probability that each constraint is broken on the first attempt, in [0, 1].
        fixes_per_turn: How many named constraints each retry fixes (``None``: all of them).
        seed: Seed of the break draws; :meth:`reset` changes it.
        min_broken: Break at least this many constraints (capped by the task's size), so that a
            negative trajectory is guaranteed when wanted.
    """

    def __init__(self, break_rate: float = 0.5, fixes_per_turn: int | None = None, seed: int = 0, min_broken: int = 0):
        if not 0.0 <= float(break_rate) <= 1.0:
            raise ValueError(f"break_rate must lie in [0, 1], got {break_rate!r}")
        if fixes_per_turn is not None and (not isinstance(fixes_per_turn, int) or fixes_per_turn < 1):
            raise ValueError(f"fixes_per_turn must be None or an int >= 1, got {fixes_per_turn!r}")
        if not isinstance(min_broken, int) or min_broken < 0:
            raise ValueError(f"min_broken must be an int >= 0, got {min_broken!r}")
        self.break_rate = float(break_rate)
        self.fixes_per_turn = fixes_per_turn
        self.seed = seed
        self.min_broken = min_broken

    def reset(self, seed: int | None = None) -> None:
        """Reseed the break draws."""
        if seed is not None:
            self.seed = seed

    def _initial_broken(self, task: Mapping[str, Any]) -> list[int]:
        rng = np.random.default_rng([self.seed, _task_digest(task)])
        n = len(task["instruction_id_list"])
        broken = [i for i in range(n) if rng.random() < self.break_rate]
        if len(broken) < min(self.min_broken, n):
            rest = [i for i in rng.permutation(n).tolist() if i not in broken]
            broken = sorted(broken + rest[: min(self.min_broken, n) - len(broken)])
        return broken
