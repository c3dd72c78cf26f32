"""CORGI's other nine tasks, one critic each: rules (clustering), code runs (mbpp, program) or models.

CORGI (Bezalel et al. 2024, arXiv 2411.01483) has twelve tasks. Three are rule-checked in
:mod:`mulligan.envs.verifiers.constraints` (``corgi:num_planning``, ``corgi:cmg_hard``,
``corgi:panagram``). The other nine are checked here, each by a :class:`Critic` that reads the
answer as the official ``critiques.py`` reads it (its ``extract_text``), scores it as the official
critic scores it, and says what is wrong in the official critic's words. Every critic returns a
:class:`~mulligan.envs.verifiers.constraints.ConstraintResult`, so its messages are joined by
:func:`~mulligan.envs.verifiers.constraints.combine_critiques` like every other constraint's.

* ``corgi:clustering``: rules (group lines, wishes, everyone once), :class:`ClusteringCritic`, offline.
* ``corgi:mbpp``: the function run on its unit tests, :class:`MbppCritic`, in a sandboxed subprocess.
* ``corgi:program``: ``f`` run on the input/output pairs, :class:`ProgramCritic`, in a sandboxed subprocess.
* ``corgi:sentiment``: ``LiYuan/amazon-review-sentiment-analysis``, :class:`SentimentCritic`.
* ``corgi:style_transfer``: ``cffl/bert-base-styleclassification-subjective-neutral``, :class:`StyleTransferCritic`.
* ``corgi:story_generation``: SimCSE coherence and repeated words, :class:`StoryGenerationCritic`.
* ``corgi:rationale_generation``: ``google/flan-t5-large`` as a student, :class:`RationaleGenerationCritic`.
* ``corgi:paraphrase``: a paraphrase classifier and a CoreNLP parse, :class:`ParaphraseCritic` (needs a server).
* ``corgi:common_gen``: spaCy lemmas and POS and a ``gemma-1.1-7b-it`` judge, :class:`CommonGenCritic`.

The tool and rule critics work offline and are the defaults (:func:`default_critic`). A model
critic loads its hub model when it is built (:func:`paper_critic` builds the paper's); every model
id is an argument, so a local copy or a stand-in works the same way. Nothing is downloaded at
import time.

``primed`` has the meaning it has for every CORGI task: ``True`` reads the answer as the
continuation of CORGI's ``- Output:`` primer, exactly as the official critic does; ``False`` first
drops a leading ``- Output:`` and what the primer holds (the story's opening sentence,
``Background:``), which an unprimed chat model tends to repeat.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from mulligan.envs.verifiers.constraints import (
    OUTPUT_MARKER,
    ConstraintResult,
    _after_leading_words,
    words_of,
)

_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_code_worker.py")
# What CORGI's critics strip from a generation before checking it (Llama-2's and Llama-3's ends).
_SPECIAL_TOKENS = ("</s>", "<|eot_id|>", "<|end_of_text|>")


@dataclass(frozen=True)
class CriticTask:
    """One of CORGI's critic-checked tasks.

    Attributes:
        name: CORGI's task name (the ``task`` field of its released records).
        fields: The record fields the critic reads (CORGI's names, kept as the constraint's kwargs).
        model_based: Whether its critic needs a model (no offline default).
        paper_models: The models (or tool) the paper's critic uses, for messages and docs.
        primer_echo: What an unprimed answer may repeat after ``- Output:`` (see the module docstring).
    """

    name: str
    fields: tuple[str, ...]
    model_based: bool
    paper_models: str
    primer_echo: str = ""


CRITIC_TASKS: dict[str, CriticTask] = {
    "corgi:clustering": CriticTask("clustering", ("students", "constraints"), False, "rules"),
    "corgi:mbpp": CriticTask("mbpp", ("tests",), False, "a Python subprocess"),
    "corgi:program": CriticTask("program", ("input_list", "output_list"), False, "a Python subprocess"),
    "corgi:sentiment": CriticTask("sentiment", ("label",), True, "LiYuan/amazon-review-sentiment-analysis"),
    "corgi:style_transfer": CriticTask(
        "style_transfer", ("sentence",), True, "cffl/bert-base-styleclassification-subjective-neutral"
    ),
    "corgi:story_generation": CriticTask(
        "story_generation",
        ("prefix",),
        True,
        "princeton-nlp/sup-simcse-bert-base-uncased and the generator's tokenizer",
        primer_echo="prefix",
    ),
    "corgi:rationale_generation": CriticTask(
        "rationale_generation",
        ("student_model_query", "correct_answer"),
        True,
        "google/flan-t5-large",
        primer_echo="Background:",
    ),
    "corgi:paraphrase": CriticTask(
        "paraphrase",
        ("source", "exemplar"),
        True,
        "AMHR/adversarial-paraphrasing-detector and a Stanford CoreNLP server",
    ),
    "corgi:common_gen": CriticTask(
        "common_gen", ("words", "pos"), True, "spaCy en_core_web_lg and google/gemma-1.1-7b-it"
    ),
}
#: The constraint ids of CORGI's critic-checked tasks.
CRITIC_IDS: tuple[str, ...] = tuple(CRITIC_TASKS)
#: Those whose critic needs a model.
MODEL_CRITIC_IDS: tuple[str, ...] = tuple(cid for cid, task in CRITIC_TASKS.items() if task.model_based)


# --------------------------------------------------------------------------------------------------
# Arguments and primers
# --------------------------------------------------------------------------------------------------


def _string(cid: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{cid}: {name} must be a non-empty string, got {value!r}")
    return value


def _strings(cid: str, name: str, value: Any) -> list[str]:
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not value
        or not all(isinstance(v, str) and v.strip() for v in value)
    ):
        raise ValueError(f"{cid}: {name} must be a non-empty list of strings, got {value!r}")
    return list(value)


def _clustering_args(cid: str, kw: Mapping[str, Any]) -> dict[str, Any]:
    students = _strings(cid, "students", kw["students"])
    wishes = kw["constraints"]
    if isinstance(wishes, str) or not isinstance(wishes, Sequence):
        raise ValueError(f"{cid}: constraints must be a list of 'A_B_True'/'A_B_False' strings, got {wishes!r}")
    for wish in wishes:
        parts = wish.split("_") if isinstance(wish, str) else []
        if len(parts) != 3 or parts[2] not in ("True", "False"):
            raise ValueError(f"{cid}: each constraint is 'A_B_True' or 'A_B_False' (A's wish about B), got {wish!r}")
    return {"students": students, "constraints": list(wishes)}


def _program_args(cid: str, kw: Mapping[str, Any]) -> dict[str, Any]:
    inputs, outputs = _strings(cid, "input_list", kw["input_list"]), _strings(cid, "output_list", kw["output_list"])
    if len(inputs) != len(outputs):
        raise ValueError(
            f"{cid}: input_list and output_list must have the same length ({len(inputs)} != {len(outputs)})"
        )
    for value in inputs:
        try:
            float(value)
        except ValueError:
            raise ValueError(f"{cid}: every input must be a number (f gets float(input)), got {value!r}") from None
    return {"input_list": inputs, "output_list": outputs}


def _common_gen_args(cid: str, kw: Mapping[str, Any]) -> dict[str, Any]:
    words, pos = _strings(cid, "words", kw["words"]), _strings(cid, "pos", kw["pos"])
    if len(words) != len(pos):
        raise ValueError(f"{cid}: words and pos must have the same length ({len(words)} != {len(pos)})")
    return {"words": words, "pos": pos}


_NORMALIZERS: dict[str, Callable[[str, Mapping[str, Any]], dict[str, Any]]] = {
    "corgi:clustering": _clustering_args,
    "corgi:mbpp": lambda cid, kw: {"tests": _strings(cid, "tests", kw["tests"])},
    "corgi:program": _program_args,
    "corgi:sentiment": lambda cid, kw: {"label": _string(cid, "label", kw["label"])},
    "corgi:style_transfer": lambda cid, kw: {"sentence": _string(cid, "sentence", kw["sentence"])},
    "corgi:story_generation": lambda cid, kw: {"prefix": _string(cid, "prefix", kw["prefix"])},
    "corgi:rationale_generation": lambda cid, kw: {
        "student_model_query": _string(cid, "student_model_query", kw["student_model_query"]),
        "correct_answer": _string(cid, "correct_answer", kw["correct_answer"]),
    },
    "corgi:paraphrase": lambda cid, kw: {
        "source": _string(cid, "source", kw["source"]),
        "exemplar": _string(cid, "exemplar", kw["exemplar"]),
    },
    "corgi:common_gen": _common_gen_args,
}


def normalize_critic_kwargs(constraint_id: str, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a critic task's arguments (CORGI's record fields) and return them cleaned.

    Raises:
        ValueError: naming the task and the field that is missing, unknown or malformed.
    """
    task = CRITIC_TASKS[constraint_id]
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ValueError(f"{constraint_id}: kwargs must be a dict, got {kwargs!r}")
    kw = {k: v for k, v in dict(kwargs or {}).items() if v is not None}
    unknown = sorted(str(k) for k in kw if k not in task.fields)
    if unknown:
        raise ValueError(f"{constraint_id} takes the arguments {list(task.fields)}; unknown argument(s) {unknown}")
    missing = [name for name in task.fields if name not in kw]
    if missing:
        raise ValueError(f"{constraint_id} needs the argument {missing[0]!r}; got {sorted(kw)}")
    return _NORMALIZERS[constraint_id](constraint_id, kw)


def critic_primer(constraint_id: str, kwargs: Mapping[str, Any]) -> str:
    """The line that opens the answer in CORGI's prompt for the task (and after every feedback turn)."""
    echo = CRITIC_TASKS[constraint_id].primer_echo
    if echo == "prefix":
        return f"{OUTPUT_MARKER} {kwargs['prefix']}"
    return f"{OUTPUT_MARKER} {echo}" if echo else OUTPUT_MARKER


def _unprimed(constraint_id: str, response: str, kwargs: Mapping[str, Any]) -> str:
    """An unprimed answer as its primed continuation: ``- Output:`` and what the primer holds dropped."""
    text = response.lstrip()
    if text.startswith(OUTPUT_MARKER):
        text = text[len(OUTPUT_MARKER) :]
    echo = CRITIC_TASKS[constraint_id].primer_echo
    if echo == "prefix":
        end = _after_leading_words(text, words_of(kwargs["prefix"]))
        if end is not None:
            # The prefix's own closing punctuation is part of the repeat ("Kate wanted to be a model.").
            rest = text[end:]
            text = rest[1:] if rest[:1] in (".", "!", "?") else rest
    elif echo and text.lstrip().startswith(echo):
        text = text.lstrip()[len(echo) :]
    return text


# --------------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------------


class Critic(ABC):
    """A CORGI critic: reads an answer as the official critic reads it, scores it, says what is wrong.

    Subclasses set :attr:`constraint_id` and implement :meth:`extract` (the official
    ``extract_text``) and :meth:`judge` (the official ``batch_critique_impl`` for one answer).
    """

    #: The task's constraint id (``corgi:<task>``).
    constraint_id: ClassVar[str]

    def extract(self, text: str, kwargs: Mapping[str, Any]) -> str:
        """The part of a primed continuation that the official critic checks (its ``extract_text``)."""
        return text

    @abstractmethod
    def judge(self, text: str, kwargs: Mapping[str, Any]) -> ConstraintResult:
        """Score extracted text against the task's arguments, with the official messages."""

    def critique(self, kwargs: Mapping[str, Any], response: str, *, primed: bool = False) -> ConstraintResult:
        """The verdict on ``response`` (any string) for a task with arguments ``kwargs``."""
        kw = normalize_critic_kwargs(self.constraint_id, kwargs)
        text = response if primed else _unprimed(self.constraint_id, response, kw)
        return self.judge(self.extract(text, kw), kw)

    def _result(self, score: float, messages: Sequence[str]) -> ConstraintResult:
        score = float(min(1.0, max(0.0, score)))
        return ConstraintResult(self.constraint_id, score == 1.0, score, tuple(m for m in messages if m))


def _without_special_tokens(text: str) -> str:
    for special in _SPECIAL_TOKENS:
        text = text.replace(special, "")
    return text


def _through_first(text: str, mark: str) -> str:
    cut = text.find(mark)
    return text if cut == -1 else text[: cut + 1]


# --------------------------------------------------------------------------------------------------
# clustering (rules)
# --------------------------------------------------------------------------------------------------

# The official pattern: "Group <id>", any character, a space, the names, any final character. The
# dots match any character, so "Group 1: Ann, Bob." reads as id 1 and names "Ann, Bob".
_GROUP_LINE = re.compile(r"Group (?P<group_id>\d+). (?P<students>.+).")


#: The most mistakes a clustering critique lists (an answer naming a student 100,000 times is not
#: told so 100,000 times; CORGI's tasks have 4 to 20 students).
CLUSTERING_MISTAKES_SHOWN = 50


class ClusteringCritic(Critic):
    """CORGI's clustering: group students in teams of two or more, honouring every wish.

    As the official ``ClusteringCritique``: the answer's leading ``Group ...`` lines; each line is
    ``Group <id>: name, name.``; a one-student group, a name not on the list, a name grouped twice,
    an unmet wish and a student left out are each a mistake. Score: 1 minus the share of wrong
    placements. The critique is the mistakes joined by spaces (this critic does not use
    ``combine_messages``), as one message. Students never grouped are listed in the task's order
    (the official code walks a set, whose order changes from run to run). A critique lists at most
    :data:`CLUSTERING_MISTAKES_SHOWN` mistakes, then "...".
    """

    constraint_id = "corgi:clustering"

    def extract(self, text: str, kwargs: Mapping[str, Any]) -> str:
        """The leading lines that start with ``Group``; the whole text if there are none."""
        lines = []
        for line in text.split("\n"):
            if not line.startswith("Group"):
                break
            lines.append(line)
        return "\n".join(lines) or text

    def judge(self, text: str, kwargs: Mapping[str, Any]) -> ConstraintResult:
        """Count wrong placements and collect the official mistakes."""
        students = list(dict.fromkeys(kwargs["students"]))
        listed, reported = set(students), set()
        wishes = [wish.split("_") for wish in kwargs["constraints"]]
        group_of: dict[str, str] = {}
        mistakes: list[str] = []
        wrong = total = 0
        for index, raw_line in enumerate(text.strip().split("\n")):
            line = raw_line.strip()
            if not line:
                continue
            match = _GROUP_LINE.search(line)
            if match is None:
                if index == 0:
                    mistakes.append("The output format is incorrect.")
                    wrong, total = wrong + 1, total + 1
                break
            group_id = match["group_id"]
            names = [_without_special_tokens(part.strip().split(".")[0]) for part in match["students"].split(", ")]
            if len(names) == 1:
                mistakes.append(
                    f"Group {group_id} has only one student, but each group should consist of at least two students."
                )
                wrong, total = wrong + 1, total + 1
                group_of[names[0]] = group_id
                continue
            group = set(names)  # sets, not the official lists: a megabyte answer stays linear
            for name in names:
                total += 1
                if name not in listed:
                    mistakes.append(f"{name} in group {group_id} is not part of the students list.")
                    wrong += 1
                    continue
                wrong += self._misplaced(
                    name, group, wishes, seen=name in group_of, mistakes=mistakes, reported=reported
                )
                group_of[name] = group_id
        for student in students:
            if student not in group_of:
                mistakes.append(f"{student} was not grouped.")
                wrong, total = wrong + 1, total + 1
        if len(mistakes) > CLUSTERING_MISTAKES_SHOWN:
            mistakes = [*mistakes[:CLUSTERING_MISTAKES_SHOWN], "..."]
        return self._result(1 - wrong / total, [" ".join(mistakes)])

    @staticmethod
    def _misplaced(
        name: str, group: set[str], wishes: Sequence[Sequence[str]], *, seen: bool, mistakes: list, reported: set
    ) -> bool:
        """Whether a listed student is misplaced (grouped twice, or a wish of theirs unmet); adds the mistakes.

        A student grouped more than once is reported once (``reported`` holds who was).
        """
        misplaced = False
        if seen:
            if name not in reported:
                reported.add(name)
                mistakes.append(f"{name} was grouped multiple times.")
            misplaced = True
        for first, other, wants in wishes:
            if first != name:
                continue
            if wants == "True" and other not in group:
                mistakes.append(f"{name} wasn't grouped with {other} despite {name}'s request.")
                misplaced = True
            elif wants == "False" and other in group:
                mistakes.append(f"{name} was grouped with {other} despite {name}'s request.")
                misplaced = True
        return misplaced


# --------------------------------------------------------------------------------------------------
# mbpp and program (a sandboxed subprocess)
# --------------------------------------------------------------------------------------------------


class SandboxTimeout(Exception):
    """The program ran past its deadline (the official message: it "gets into an infinite loop")."""


def run_in_sandbox(job: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run one job of ``_code_worker.py`` in a fresh, isolated Python process; its JSON result.

    The process runs in a new session in an empty temporary directory with an empty environment,
    under address-space and file-size caps; at the deadline its whole process group is killed.

    Raises:
        SandboxTimeout: The job did not finish within ``timeout_s`` seconds.
        RuntimeError: The worker died without a result (e.g. the program killed its own process).
    """
    with tempfile.TemporaryDirectory(prefix="mulligan-code-") as workdir:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", _WORKER_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
            env={},
            start_new_session=True,
        )
        try:
            out, _ = process.communicate(json.dumps(dict(job)).encode(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise SandboxTimeout(f"the program ran past {timeout_s} s") from None
        finally:
            if process.poll() is None:  # pragma: no cover - only on an exception in communicate
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    try:
        return json.loads(out.decode())
    except (ValueError, UnicodeDecodeError):
        raise RuntimeError(f"the code worker died without a result (exit status {process.returncode})") from None


def _check_timeout(timeout_s: float) -> float:
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not 0 < timeout_s < math.inf:
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    return float(timeout_s)


class MbppCritic(Critic):
    """CORGI's mbpp: a Python function that passes the task's unit tests.

    As the official ``MbppCritique``: the answer from its first ``def`` to its first blank line
    (backticks and ``<|eot_id|>`` removed). The definition must run ("Your function has a syntax
    error."); then each unit test runs with the function in a fresh process, in order, up to the
    first that fails ("Your function fails on the following unit test:\\n\\n{test}") or runs past
    ``timeout_s`` ("Your function gets into an infinite loop."). Score: 0.5 for a definition that
    runs plus 0.5 times the share of tests passed before the first failure.

    With ``official_namespace=True`` (the default) the runs see what the official ones see: the
    definition check has no ``import`` (the official runs it with RestrictedPython's safe
    builtins), and each test runs as the official ``exec(code)`` inside a function does, with the
    modules its ``critiques.py`` imported (``re``, ``sys``, ``time``, ...) in scope and the
    program's top-level names in a separate dict, so that a function calling itself or another
    function of the answer fails. ``False`` runs each test as a plain module. The rest of
    RestrictedPython's compile-time policy (e.g. no names starting with ``_``) is not applied.
    All runs are plain Python in an isolated subprocess (:func:`run_in_sandbox`).

    Args:
        timeout_s: Seconds each run may take (the official 10).
        official_namespace: Run as the official code runs (see above).
    """

    constraint_id = "corgi:mbpp"
    #: The standard modules the official ``critiques.py`` imports, in scope of its ``exec``.
    OFFICIAL_MODULES = (
        "logging",
        "multiprocessing",
        "os",
        "queue",
        "re",
        "signal",
        "socket",
        "subprocess",
        "sys",
        "threading",
        "time",
    )

    def __init__(self, timeout_s: float = 10.0, official_namespace: bool = True):
        self.timeout_s = _check_timeout(timeout_s)
        if not isinstance(official_namespace, bool):
            raise ValueError(f"official_namespace must be True or False, got {official_namespace!r}")
        self.official_namespace = official_namespace

    def extract(self, text: str, kwargs: Mapping[str, Any]) -> str:
        """From the first ``def`` to the first blank line, without backticks or ``<|eot_id|>``."""
        text = text.strip().replace("<|eot_id|>", "").replace("`", "")
        if "def" in text:
            text = text[text.index("def") :]
        return text.split("\n\n", 1)[0]

    def judge(self, text: str, kwargs: Mapping[str, Any]) -> ConstraintResult:
        """Define the function, then run the tests in order up to the first failure."""
        tests = kwargs["tests"]
        official = self.official_namespace
        try:
            define = {"kind": "run", "code": text, "split_locals": official, "no_import": official}
            defined = run_in_sandbox(define, self.timeout_s)["ok"]
        except SandboxTimeout:
            defined = False
        if not defined:
            return self._result(0.0, ["Your function has a syntax error."])
        passed, messages = 0, []
        for test in tests:
            try:
                job = {
                    "kind": "run",
                    "code": f"{text}\n\n{test}",
                    "preload": self.OFFICIAL_MODULES if official else (),
                    "split_locals": official,
                }
                ok = run_in_sandbox(job, self.timeout_s)["ok"]
            except SandboxTimeout:
                messages.append("Your function gets into an infinite loop.")
                break
            if not ok:
                messages.append(f"Your function fails on the following unit test:\n\n{test}")
                break
            passed += 1
        return self._result(0.5 + 0.5 * passed / len(tests), messages)


#: ProgramCritic's score parts (the official ``ProgramCritique``): compiling, correctness, brevity.
PROGRAM_COMPILE_SCORE = 20
PROGRAM_CORRECTNESS_SCORE = 60
PROGRAM_LENGTH_SCORE = 25


def program_expected_value(output: str, *, literal: bool = False) -> Any:
    """The value ``f`` must return for a listed output, read as the official critic reads it.

    Officially: ``"True"``/``"False"`` become ``bool(output)`` (so both are ``True``), an output
    with a ``[`` becomes ``list(output)`` (its characters), anything else a float when it parses
    as one, else the string. Eight of the 72 official test tasks have such outputs, and no
    function can match them as listed. ``literal=True`` reads them as Python literals instead
    (``False``, ``[0, 1]``), numbers still as floats.
    """
    if literal:
        try:
            value = ast.literal_eval(output.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return output
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    if output in ("False", "True"):
        return bool(output)
    if "[" in output:
        return list(output)
    try:
        return float(output)
    except ValueError:
        return output


class ProgramCritic(Critic):
    """CORGI's program: a one-line ``f(x)`` that maps every listed input to its output, as short as possible.

    As the official ``ProgramCritique``: the answer's first line (a ``:`` followed by a line
    break joined first); it must define ``f`` ("Your function has a syntax error.", score 0).
    Then ``f(float(input))`` is compared with each expected value (:func:`program_expected_value`):
    "The output of {input} is {got}, but it should be {expected}." for a wrong value, "Your
    function has a syntax error." for a call that raises (which also voids the compile part), and
    "Your function is too long." when the line has 100 characters or more. Score:
    ``(compile + correct_share * (60 + length)) / 105`` with compile 20 (or 0) and length
    ``max(0, 25 - characters / 4)``; 1 when every output is right and the line is under 100
    characters.

    The official check compiles with RestrictedPython and runs ``f`` with its safe builtins (where
    attribute access, subscripts, loops and builtins such as ``max`` raise); here it is plain
    Python in an isolated subprocess (:func:`run_in_sandbox`). The official critic has no time
    limit; a run past ``timeout_s`` scores 0 with "Your function gets into an infinite loop." (the
    message of its MBPP critic).

    Args:
        timeout_s: Seconds the definition and all calls may take together.
        literal_outputs: Read the listed outputs as Python literals (see :func:`program_expected_value`).
    """

    constraint_id = "corgi:program"

    def __init__(self, timeout_s: float = 10.0, literal_outputs: bool = False):
        self.timeout_s = _check_timeout(timeout_s)
        if not isinstance(literal_outputs, bool):
            raise ValueError(f"literal_outputs must be True or False, got {literal_outputs!r}")
        self.literal_outputs = literal_outputs

    def extract(self, text: str, kwargs: Mapping[str, Any]) -> str:
        """The first line, after joining a ``:`` and the line break that follows it."""
        text = text.strip().replace(":\n", ":", 1).replace("<|eot_id|>", "")
        return text.split("\n", 1)[0]

    def judge(self, text: str, kwargs: Mapping[str, Any]) -> ConstraintResult:
        """Define ``f``, call it on every input, score correctness and length."""
        inputs = kwargs["input_list"]
        expected = [program_expected_value(o, literal=self.literal_outputs) for o in kwargs["output_list"]]
        job = {"kind": "program", "code": text, "inputs": inputs, "expected": expected}
        try:
            result = run_in_sandbox(job, self.timeout_s)
        except SandboxTimeout:
            return self._result(0.0, ["Your function gets into an infinite loop."])
        if not result["defined"]:
            return self._result(0.0, ["Your function has a syntax error."])
        messages = []
        compile_score = PROGRAM_COMPILE_SCORE
        length_score = max(0.0, PROGRAM_LENGTH_SCORE - len(text) / 4)
        if length_score == 0:
            messages.append("Your function is too long.")
        correct = 0
        for single_input, want, call in zip(inputs, expected, result["calls"], strict=True):
            if call["raised"]:
                compile_score = 0
                messages.append("Your function has a syntax error.")
            elif call["equal"]:
                correct += 1
            else:
                messages.append(f"The output of {single_input} is {call['shown']}, but it should be {want}.")
        if correct == len(inputs) and length_score > 0:
            return self._result(1.0, [])
        total = PROGRAM_COMPILE_SCORE + PROGRAM_CORRECTNESS_SCORE + PROGRAM_LENGTH_SCORE
        score = (compile_score + correct / len(inputs) * (PROGRAM_CORRECTNESS_SCORE + length_score)) / total
        return self._result(score, messages)


# --------------------------------------------------------------------------------------------------
# Model critics
# --------------------------------------------------------------------------------------------------


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - a core dependency
        raise ImportError("CORGI's model critics need transformers: pip install transformers torch") from err
    return transformers


def _device(device: str | None) -> str:
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_classifier(model: str, device: str | None) -> tuple[Any, Any]:
    transformers = _transformers()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    classifier = transformers.AutoModelForSequenceClassification.from_pretrained(model).to(_device(device))
    classifier.eval()
    return tokenizer, classifier


def _classify(tokenizer: Any, model: Any, text: str, max_length: int) -> str:
    """The label with the largest logit (what a text-classification pipeline's top label is)."""
    import torch

    limit = min(max_length, getattr(tokenizer, "model_max_length", max_length) or max_length)
    inputs = tokenizer([text], truncation=True, max_length=limit, return_tensors="pt").to(model.device)
    with torch.no_grad():
        logits = model(**inputs).logits
    return model.config.id2label[int(logits[0].argmax())]


class SentimentCritic(Critic):
    """CORGI's sentiment: an Amazon review whose star rating a classifier recognises.

    As the official ``SentimentCritique``: the answer up to its last ``.``; the classifier's
    top label (e.g. ``"3 stars"``) must equal the task's ``label``; score 1 or 0; "Your review
    classified as {predicted} review. Please write a new short {label} review. Do not mention the
    number of stars." Texts longer than the model's limit are truncated (the official code would
    fail on them).

    Args:
        model: A sequence classifier whose ``id2label`` are the task's labels (hub id or path).
        device: Where to run it (default: CUDA if available).
    """

    constraint_id = "corgi:sentiment"
    #: The paper's classifier.
    PAPER_MODEL = "LiYuan/amazon-review-sentiment-analysis"

    def __init__(self, model: str = PAPER_MODEL, device: str | None = None):
        self.model_name = model
        self.tokenizer, self.model = _load_classifier(model, device)

    def extract(self, text: str, kwargs: Mapping[str, Any]) -> str:
        """Up to the last ``.``."""
        text = text.strip()
        cut = text.rfind(".")
        return text if cut == -1 else text[: cut + 1]

    def judge(self, text: str, kwargs: Mapping[str, Any]) -> ConstraintResult:
        """Classify the review and compare with the wanted rating."""
        predicted, wanted = _classify(self.tokenizer, self.model, text, 4096), kwargs["label"]
        if predicted == wanted:
            return self._result(1.0, [])
        return self._result(
            0.0,
            [
                f"Your review classified as {predicted} review. Please write a new short {wanted} review. "
                "Do not mention the number of stars."
            ],
        )


class StyleTransferCritic(Critic):
    """CORGI's style_transfer: rewrite a sentence so that a classifier finds it neutral.

    As the official ``StyleTransferCritique``: the answer up to its first ``.``; the classifier's
    top label must be ``NEUTRAL`` (input truncated at 512 tokens); score 1 or 0; "Your rephrased
    sentence is subjective. Sentence: {sentence}" (the task's original sentence).

    Args:
        model: A sequence classifier with a ``NEUTRAL`` label (hub id or path).
        device: Where to run it (default: CUDA if available).
    """

    constraint_id = "corgi:style_transfer"
    #: The paper's classifier.
    PAPER_MODEL = "cffl/bert-base-styleclassification-subjective-neutral"

    def __init__(self, model: str = PAPER_MODEL, device: str | None = None):
        self.model_name = model
        self.tokenizer, self.model = _load_classifier(model, device)
        if "NEUTRAL" not in self.model.config.id2label.values():
            raise ValueError(f"{model}: a style critic needs a 'NEUTRAL' label, has {self.model.config.id2label}")

    def extract(self, text: str, kwargs: Mapping[str, Any]) -> str:
        """Up to the first ``.``."""
        return _through_first(text.strip(), ".")

    def judge(self, text: str, kwargs: Mapping[str, Any]) -> ConstraintResult:
        """Classify the rewrite."""
        if _classify(self.tokenizer, self.model, text, 512) == "NEUTRAL":
            return self._result(1.0, [])
        return self._result(0.0, [f"Your rephrased sentence is subjective. Sentence: {kwargs['sentence']}"])


_STOPWORDS_TEXT = (
    "a about above after again against all am an and any are as at be because been before being below between "
    "both but by can could did do does doing don down during each few for from further had has have having he "
    "her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor "
    "not now of off on once only or other our ours ourselves out over own same she should so some such t than "
    "that the their theirs them themselves then there these they this those through to too under until up very "
    "was we were what when where which while who whom why will with would you your yours yourself yourselves "
    "also s"
)
#: The stopwords CORGI's repetition check skips (the 130 words of the official ``metrics.STOPWORDS``).
REPETITION_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
#: The cosine similarity under which a story is incoherent.
COHERENCE_THRESHOLD = 0.3


def repeated_tokens(token_ids: Sequence[int], tokenizer: Any, n: int = 4) -> tuple[float, list[int]]:
    """CORGI's ``rep_n``: tokens that repeat one of the ``n`` tokens before them; (rate, token ids).

    Only SentencePiece word-start tokens (``▁word``) with a letter count, and not special tokens,
    two-character tokens or stopwords. Token ids are returned in the order they first repeat (the
    official code returns a set). A tokenizer without ``▁`` word starts (Llama-3's byte-level BPE
    writes ``Ġ``) counts nothing, as in the official code.
    """
    special = set(tokenizer.all_special_ids)
    repeats, counted, found = 0, 0, []
    for i in range(len(token_ids) - n):
        current = token_ids[i + n]
        token = tokenizer.convert_ids_to_tokens(current)
        if (
            token is None
            or current in special
            or not token.startswith("▁")
            or not any(ch.isalpha() for ch in token)
            or len(token) == 2
            or token.replace("▁", "") in REPETITION_STOPWORDS
        ):
            continue
        if current in token_ids[i : i + n]:
            repeats += 1
            if current not in found:
                found.append(current)
        counted += 1
    return repeats / (counted + 1e-8), found


class StoryGenerationCritic(Critic):
    """CORGI's story_generation: continue a story coherently, without repeating words.

    As the official ``StoryGenerationCritique``: the whole continuation; a repetition check with
    the *generator's* tokenizer (:func:`repeated_tokens`: "You repeated the words: {words}. Try to
    make less repeatitions.", the official spelling) and a coherence check, the cosine similarity
    of SimCSE's pooled embeddings of the story's opening and the continuation, at least 0.3 ("Your
    story is not coherent. Rewrite your story to make it more coherent."). Score: half for each.

    Args:
        similarity_model: SimCSE (or any encoder with a pooler) used for coherence.
        generator_tokenizer: The tokenizer of the model being trained (hub id, path or a loaded
            tokenizer). CORGI passes its policy's: with Llama-3's the repetition check never fires.
        device: Where to run the encoder (default: CUDA if available).
    """

    constraint_id = "corgi:story_generation"
    #: The paper's encoder.
    PAPER_MODEL = "princeton-nlp/sup-simcse-bert-base-uncased"
    #: The paper's policy (Sec. 5), whose tokenizer the repetition check uses.
    PAPER_GENERATOR = "meta-llama/Meta-Llama-3-8B-Instruct"

    def __init__(
        self, similarity_model: str = PAPER_MODEL, generator_tokenizer: Any = PAPER_GENERATOR, device: str | None = None
    ):
        transformers = _transformers()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(similarity_model)
        self.model = transformers.AutoModel.from_pretrained(similarity_model).to(_device(device))
        self.model.eval()
        self.generator_tokenizer = (
            transformers.AutoTokenizer.from_pretrained(generator_tokenizer)
            if isinstance(generator_tokenizer, str | os.PathLike)
            else generator_tokenizer
        )

    def coherence(self, prefix: str, story: str) -> float:
        """The cosine similarity of the encoder's pooled embeddings of ``prefix`` and ``story``."""
        import torch

        inputs = self.tokenizer([prefix, story], padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            pooled = self.model(**inputs.to(self.model.device), return_dict=True).pooler_output.float().cpu()
        return float(torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=0))

    def judge(self, text: str, kwargs: Mapping[str, Any]) -> ConstraintResult:
        """Check repetitions and coherence with the story's opening."""
        prefix = kwargs["prefix"]
        _, repeated = repeated_tokens(self.generator_tokenizer(text)["input_ids"], self.generator_tokenizer)
        coherence = self.coherence(prefix, text)
        messages = []
        if repeated:
            words = ", ".join(self.generator_tokenizer.convert_ids_to_tokens(t).replace("▁", "") for t in repeated)
            messages.append(f"You repeated the words: {words}. Try to make less repeatitions.")
        if coherence < COHERENCE_THRESHOLD:
            messages.append("Your story is not coherent. Rewrite your story to make it more coherent.")
        return self._result(0.5 * (not repeated) + 0.5 * (coherence >= COHERENCE_THRESHOLD), messages)


class RationaleGenerationCritic(Critic):
    """CORGI's rationale_generation: background that lets a small student model answer a question.

    As the official ``RationaleGenerationCritique``: the answer's first two ``.``-separated
    sentences; ``ADDED_EXP`` in the task's ``student_model_query`` is replaced by them and the
    student (FLAN-T5-large) answers greedily in at most 20 new tokens; score 1 when its answer is
    a substring of ``correct_answer`` (an empty answer is one, as in the official check), else 0
    with "Your background is insufficient - the student picked a wrong answer instead of the correct
    answer. Revise your background (up to two short sentences) - so the student will succeed.
    Reminder: Do not mention the correct answer explicitly." The official code calls an
    ``hf_generate`` helper that its repository does not define; greedy decoding is assumed.

    Args:
        student_model: A sequence-to-sequence model (hub id or path).
        device: Where to run it (default: CUDA if available).
        max_new_tokens: The student's answer length (the official 20).
    """

    constraint_id = "corgi:rationale_generation"
    #: The paper's student.
    PAPER_MODEL = "google/flan-t5-large"
    MESSAGE = (
        "Your background is insufficient - the student picked a wrong answer instead of the correct answer. "
        "Revise your background (up to two short sentences) - so the student will succeed. Reminder: Do not "
        "mention the correct answer explicitly."
    )

    def __init__(self, student_model: str = PAPER_MODEL, device: str | None = None, max_new_tokens: int = 20):
        transformers = _transformers()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(student_model)
        self.model = transformers.AutoModelForSeq2SeqLM.from_pretrained(student_model).to(_device(device))
        self.model.eval()
        self.max_new_tokens = max_new_tokens

    def extract(self, text: str, kwargs: Mapping[str, Any]) -> str:
        """The first two ``.``-separated sentences, with a final ``.``."""
        return ".".join(text.strip().split(".")[:2]) + "."

    def student_answer(self, query: str) -> str:
        """The student's greedy answer to ``query``."""
        import torch

        inputs = self.tokenizer([query], return_tensors="pt").to(self.model.device)
        with torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.tokenizer.decode(output[0], skip_special_tokens=True)

    def judge(self, text: str, kwargs: Mapping[str, Any]) -> ConstraintResult:
        """Let the student answer with the background; right when its answer is in the gold answer."""
        answer = self.student_answer(kwargs["student_model_query"].replace("ADDED_EXP", text))
        if answer in kwargs["correct_answer"]:
            return self._result(1.0, [])
        return self._result(0.0, [self.MESSAGE])


# --------------------------------------------------------------------------------------------------
# paraphrase: a classifier and a constituency parse's top three levels
# --------------------------------------------------------------------------------------------------


def _parse_brackets(text: str) -> tuple[str, list]:
    """A bracketed tree ``(LABEL child ...)`` as ``(label, children)``; words are plain strings."""
    tokens = re.findall(r"\(|\)|[^\s()]+", text)
    if not tokens or tokens[0] != "(":
        raise ValueError(f"not a bracketed tree: {text[:80]!r}")
    position = 0

    def node() -> tuple[str, list]:
        nonlocal position
        position += 1  # "("
        label = ""
        if position < len(tokens) and tokens[position] not in ("(", ")"):
            label = tokens[position]
            position += 1
        children: list = []
        while position < len(tokens) and tokens[position] != ")":
            if tokens[position] == "(":
                children.append(node())
            else:
                children.append(tokens[position])
                position += 1
        if position >= len(tokens):
            raise ValueError(f"unbalanced brackets in {text[:80]!r}")
        position += 1  # ")"
        return label, children

    tree = node()
    if position != len(tokens):
        raise ValueError(f"text after the tree in {text[:80]!r}")
    return tree


def _trimmed(tree: tuple[str, list], height: int) -> tuple[str, list]:
    label, children = tree
    kept = [_trimmed(c, height - 1) for c in children if isinstance(c, tuple)] if height > 1 else []
    return label, kept


def _format_tree(tree: tuple[str, list]) -> str:
    label, children = tree
    return f"({label} {' '.join(_format_tree(c) for c in children)})"


def trim_parse(parse: str, height: int = 3) -> str:
    """A constituency parse's top ``height`` levels of labels, words dropped, in CORGI's format.

    ``(ROOT (SBARQ (WHADVP (WRB why)) (SQ ...) (. ?)))`` becomes ``(ROOT (SBARQ (WHADVP ) (SQ ) (. )))``,
    the format of the ``exemplar`` field of CORGI's paraphrase records.
    """
    return _format_tree(_trimmed(_parse_brackets(parse), height))


def _without_s_nodes(tree: tuple[str, list]) -> list:
    """The tree CORGI's tree edit distance compares: ``S`` (and unlabelled) nodes replaced by their children."""
    label, children = tree
    flat = [grand for c in children if isinstance(c, tuple) for grand in _without_s_nodes(c)]
    return flat if label in ("S", "") else [(label, flat)]


def same_structure(trimmed_parse: str, exemplar: str) -> bool:
    """Whether CORGI's tree edit distance (``ted_e_3``) between the two trimmed parses is 0.

    The official metric (Zhang-Shasha distance with 0/1 label costs, after dropping ``S`` nodes)
    is 0 exactly when the two trees are equal once ``S`` nodes are replaced by their children.
    """
    return _without_s_nodes(_parse_brackets(trimmed_parse)) == _without_s_nodes(_parse_brackets(exemplar))


def corenlp_parse(text: str, url: str, timeout_s: float = 30.0) -> str:
    """The constituency parse of ``text``'s first sentence from a Stanford CoreNLP server.

    Start one with ``java -mx4g -cp "*" edu.stanford.nlp.pipeline.StanfordCoreNLPServer -port 9000``
    in the CoreNLP folder (CORGI used ``stanford-corenlp-full-2018-10-05``).

    Raises:
        ConnectionError: No server answers at ``url`` (the message says how to start one).
    """
    properties = {"annotators": "tokenize,ssplit,pos,parse", "outputFormat": "json", "ssplit.eolonly": "true"}
    query = urllib.parse.urlencode({"properties": json.dumps(properties)})
    request = urllib.request.Request(f"{url.rstrip('/')}/?{query}", data=text.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            annotation = json.loads(response.read().decode())
    except (urllib.error.URLError, OSError) as err:
        raise ConnectionError(
            f"no Stanford CoreNLP server answers at {url} ({err}); start one (java -mx4g -cp '*' "
            "edu.stanford.nlp.pipeline.StanfordCoreNLPServer -port 9000 in the CoreNLP folder) and pass its "
            "address as ParaphraseCritic(corenlp_url=...)"
        ) from err
    sentences = annotation.get("sentences") or []
    if not sentences:
        return "(ROOT )"
    return sentences[0]["parse"]


class ParaphraseCritic(Critic):
    """CORGI's paraphrase: paraphrase a question with a given syntactic structure.

    As the official ``ParaphraseGenerationCritique``: the answer up to its first ``?``; a
    classifier reads the source question and the answer concatenated with nothing between them
    (label ``LABEL_1`` is a paraphrase: else "Your question is not a paraphrase of the given
    question."); a constituency parser's top three levels (:func:`trim_parse`) must match the
    exemplar (:func:`same_structure`: else "The syntactic structure of your question is {parse}.
    Your question should have the following syntactic structure: {exemplar}."). Score: half for
    each.

    Args:
        classifier: The paraphrase classifier (hub id or path).
        corenlp_url: Address of a running Stanford CoreNLP server (:func:`corenlp_parse`).
        parser: Instead of the server, any function from a sentence to its bracketed constituency
            parse in Penn Treebank labels.
        device: Where to run the classifier (default: CUDA if available).
    """

    constraint_id = "corgi:paraphrase"
    #: The paper's classifier.
    PAPER_MODEL = "AMHR/adversarial-paraphrasing-detector"

    def __init__(
        self,
        classifier: str = PAPER_MODEL,
        corenlp_url: str = "http://localhost:9000",
        parser: Callable[[str], str] | None = None,
        device: str | None = None,
    ):
        self.tokenizer, self.model = _load_classifier(classifier, device)
        self.parser = parser if parser is not None else (lambda text: corenlp_parse(text, corenlp_url))

    def extract(self, text: str, kwargs: Mapping[str, Any]) -> str:
        """Up to the first ``?``."""
        return _through_first(text.strip(), "?")

    def judge(self, text: str, kwargs: Mapping[str, Any]) -> ConstraintResult:
        """Classify the pair, parse the answer, compare the structure with the exemplar."""
        is_paraphrase = _classify(self.tokenizer, self.model, f"{kwargs['source']}{text}", 512) == "LABEL_1"
        parse = trim_parse(self.parser(text))
        structure_ok = same_structure(parse, kwargs["exemplar"])
        messages = []
        if not is_paraphrase:
            messages.append("Your question is not a paraphrase of the given question.")
        if not structure_ok:
            messages.append(
                f"The syntactic structure of your question is {parse}. Your question should have the following "
                f"syntactic structure: {kwargs['exemplar']}."
            )
        return self._result(0.5 * is_paraphrase + 0.5 * structure_ok, messages)


# --------------------------------------------------------------------------------------------------
# common_gen: spaCy lemmas and parts of speech, and an LLM judge of common sense
# --------------------------------------------------------------------------------------------------

#: The official judge prompt (Gemma's chat turns without their special tokens, as in ``critiques.py``).
COMMON_SENSE_TEMPLATE = (
    'user\nDoes the following sentence describe a common sense scenario?\n\n"{}"\n\nAnswer: no / yes. Write an '
    "explanation with the format of Explanation: <Explanation>. Your explanation should be one sentence.\n"
    "model\nAnswer:"
)


def read_common_sense_verdict(output: str) -> tuple[bool, str]:
    """The judge's verdict from its decoded output (prompt included): (common sense, critique).

    The answer is what follows the last ``Answer:``; it is common sense when it starts with
    "yes". Otherwise the critique is "Your sentence doesn't describe a common sense scenario:
    {explanation}", the explanation after ``Explanation:`` or after a leading ``No.``, and empty
    when the judge gave neither (as in the official code).
    """
    answer = output[output.rfind("Answer:") + len("Answer:") :].strip()
    if answer.lower().startswith("yes"):
        return True, ""
    match = re.search(r".*Explanation: (?P<explanation>.*)", answer)
    if match:
        return False, f"Your sentence doesn't describe a common sense scenario: {match['explanation']}"
    if answer.startswith("No."):
        return False, f"Your sentence doesn't describe a common sense scenario: {answer[3:].strip()}"
    return False, ""


class CommonGenCritic(Critic):
    """CORGI's common_gen: one everyday sentence using every concept with its part of speech.

    As the official ``CommonGenCritique``: the answer up to its first ``.``; spaCy lemmas must
    cover the concepts ("You didn't use the following concepts: ..."), each with its part of
    speech ("You should correct the part of speech: dog as a noun, ..."), and a judge must call
    the sentence common sense (:data:`COMMON_SENSE_TEMPLATE`, 40 new tokens, greedy;
    :func:`read_common_sense_verdict`). Score: the mean of the covered share, the right-POS share
    and the judge's 0/1.

    The paper loads its judge in 4 bits; here it loads in the checkpoint's dtype.

    Args:
        judge_model: A causal LM (hub id or path); the paper's is 4-bit gemma-1.1-7b-it.
        spacy_model: A spaCy pipeline with a lemmatiser and tagger (``python -m spacy download en_core_web_lg``).
        device: Where to run the judge (default: CUDA if available).
    """

    constraint_id = "corgi:common_gen"
    #: The paper's judge.
    PAPER_MODEL = "google/gemma-1.1-7b-it"
    PAPER_SPACY_MODEL = "en_core_web_lg"

    def __init__(self, judge_model: str = PAPER_MODEL, spacy_model: str = PAPER_SPACY_MODEL, device: str | None = None):
        try:
            import spacy
        except ImportError as err:
            raise ImportError(
                "corgi:common_gen's critic needs spaCy and its English model: pip install spacy && "
                f"python -m spacy download {spacy_model}"
            ) from err
        self.nlp = spacy.load(spacy_model)
        transformers = _transformers()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(judge_model)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(judge_model, dtype="auto").to(_device(device))
        self.model.eval()

    def extract(self, text: str, kwargs: Mapping[str, Any]) -> str:
        """Up to the first ``.``."""
        return _through_first(text, ".")

    def judge_output(self, sentence: str) -> str:
        """The judge's greedy output for the sentence, prompt included."""
        import torch

        inputs = self.tokenizer([COMMON_SENSE_TEMPLATE.format(sentence)], return_tensors="pt").to(self.model.device)
        with torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=40, do_sample=False)
        return self.tokenizer.decode(output[0], skip_special_tokens=True)

    def judge(self, text: str, kwargs: Mapping[str, Any]) -> ConstraintResult:
        """Cover, tag and judge the sentence."""
        tagged = [(tok.lemma_, tok.pos_) for tok in self.nlp(text)]
        common_sense, critique = read_common_sense_verdict(self.judge_output(text))
        score, messages = score_common_gen(kwargs["words"], kwargs["pos"], tagged, common_sense, critique)
        return self._result(score, messages)


def score_common_gen(
    words: Sequence[str], pos: Sequence[str], tagged: Sequence[tuple[str, str]], common_sense: bool, critique: str
) -> tuple[float, list[str]]:
    """CommonGen's score and messages from a sentence's ``(lemma, POS)`` tags and the judge's verdict.

    A concept is used when a token's lemma is the concept, and used right when that token's
    universal POS tag (spaCy's ``NOUN``, ``VERB``, ...) contains the wanted one (``noun``,
    ``verb``), compared case-insensitively. Score: the mean of the used share, the used-right share
    and the verdict (capped at 1; officially a lemma tagged two ways that both contain the wanted
    tag counts twice).
    """
    wanted = dict(zip(words, pos, strict=True))
    found = {lemma for lemma, _ in tagged if lemma in wanted}
    found_pos = {f"{lemma}_{tag}" for lemma, tag in tagged if lemma in wanted and wanted[lemma].lower() in tag.lower()}
    messages = []
    if len(found) != len(wanted):
        missing = [w for w in wanted if w not in found]
        messages.append(f"You didn't use the following concepts: {', '.join(missing)}.")
    if len(found_pos) != len(wanted):
        wrong = [f"{w} as a {p.lower()}" for w, p in wanted.items() if f"{w}_{p.upper()}" not in found_pos]
        messages.append(f"You should correct the part of speech: {', '.join(wrong)}.")
    if not common_sense:
        messages.append(critique)
    return (len(found) / len(wanted) + len(found_pos) / len(wanted) + common_sense) / 3, messages


# --------------------------------------------------------------------------------------------------
# Building critics
# --------------------------------------------------------------------------------------------------

_PAPER_CRITICS: dict[str, Callable[..., Critic]] = {
    "corgi:sentiment": SentimentCritic,
    "corgi:style_transfer": StyleTransferCritic,
    "corgi:story_generation": StoryGenerationCritic,
    "corgi:rationale_generation": RationaleGenerationCritic,
    "corgi:paraphrase": ParaphraseCritic,
    "corgi:common_gen": CommonGenCritic,
}


def critic_id(name: str) -> str:
    """A critic task's constraint id from CORGI's task name or the id itself (``"sentiment"`` or ``"corgi:sentiment"``).

    Raises:
        ValueError: For a name that is not one of :data:`CRITIC_IDS`.
    """
    cid = name if name.startswith("corgi:") else f"corgi:{name}"
    if cid not in CRITIC_TASKS:
        raise ValueError(f"no CORGI critic task {name!r}; expected one of {[t.name for t in CRITIC_TASKS.values()]}")
    return cid


def default_critic(constraint_id: str) -> Critic | None:
    """The offline critic of a rule or tool task (clustering, mbpp, program); ``None`` for model tasks."""
    defaults: dict[str, Callable[[], Critic]] = {
        "corgi:clustering": ClusteringCritic,
        "corgi:mbpp": MbppCritic,
        "corgi:program": ProgramCritic,
    }
    factory = defaults.get(constraint_id)
    return factory() if factory is not None else None


def paper_critic(constraint_id: str, device: str | None = None) -> Critic:
    """The paper's critic for a task, its models loaded from the hub (or the local cache)."""
    factory = _PAPER_CRITICS.get(constraint_id)
    if factory is None:
        critic = default_critic(constraint_id)
        if critic is None:
            raise ValueError(f"no CORGI critic task {constraint_id!r}")
        return critic
    try:
        return factory(device=device)
    except OSError as err:
        task = CRITIC_TASKS[constraint_id]
        raise OSError(
            f"could not load the paper's critic for {task.name!r} ({task.paper_models}): {err}. Download the model "
            f"once with hub access, or pass critics={{{task.name!r}: {factory.__name__}(...)}} with a local path"
        ) from err


def missing_critic_error(constraint_id: str) -> ValueError:
    """The error for a model-critic task without a critic: it names the option that supplies one."""
    task = CRITIC_TASKS[constraint_id]
    factory = _PAPER_CRITICS[constraint_id].__name__
    return ValueError(
        f"CORGI task {task.name!r} is checked by a model critic ({task.paper_models}); pass critics='paper' to load "
        f"the paper's, or critics={{{task.name!r}: {factory}(...)}} to choose the model"
    )
