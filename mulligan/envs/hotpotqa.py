"""``Mulligan/HotpotQA-v0``: multi-hop question answering with ReAct's search, lookup and finish actions."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mulligan.envs.core import MulliganEnv, StepOutcome, stable_task_id, truncate_for_feedback
from mulligan.envs.generators.world import WorldConfig, generate_hotpotqa_task
from mulligan.envs.retrieval import Document, DocumentStore, LookupState
from mulligan.envs.verifiers.qa import fine_grained_label, qa_score

#: What a malformed action is told (observation and feedback).
ACTION_GRAMMAR = (
    "Invalid action. Write an optional 'Thought: ...' and then 'Action: ' followed by one of "
    "search[entity], lookup[keyword] or finish[answer]."
)
_ACTION_MARKER = re.compile(r"action\s*\d*\s*:", re.IGNORECASE)
_VERB = re.compile(r"\s*(search|lookup|finish)\s*\[", re.IGNORECASE)
#: Longest argument echoed back in an observation.
_ECHO_LIMIT = 80


def parse_react_action(text: str) -> tuple[str, str] | None:
    """Parse a ReAct step into ``(verb, argument)``, or ``None`` if it is malformed.

    The grammar (case-insensitive keywords)::

        step     := [anything, e.g. "Thought: ..."] "Action" [number] ":" action | action
        action   := ("search" | "lookup" | "finish") "[" argument "]"

    The action is read after the first ``Action:`` marker (ReAct's numbered ``Action 2:`` too);
    without a marker the whole text must start with the action. The argument is everything up to
    the matching ``]`` on the same line (brackets inside it must balance) and must not be blank;
    anything after the closing bracket is ignored, such as a hallucinated ``Observation:``.
    """
    marker = _ACTION_MARKER.search(text)
    body = text[marker.end() :] if marker else text
    verb = _VERB.match(body)
    if verb is None:
        return None
    depth, start = 1, verb.end()
    for position in range(start, len(body)):
        char = body[position]
        if char == "\n":
            return None
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                argument = body[start:position].strip()
                return (verb.group(1).lower(), argument) if argument else None
    return None


# --------------------------------------------------------------------------- data
def load_qa_records(path: str | Path) -> list[dict[str, Any]]:
    """Read HotpotQA-format records from a JSON list or a JSONL file (one record a line).

    Raises:
        ValueError: If the file is neither, or holds something other than JSON objects.
    """
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        records = json.loads(stripped)
    else:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not a JSON object per line ({err})") from err
    if not all(isinstance(record, dict) for record in records):
        raise ValueError(f"{path}: expected JSON objects (HotpotQA records), found other values")
    return records


def load_paragraphs(path: str | Path) -> list[Document]:
    """Read a fullwiki corpus: JSONL, one paragraph a line, ``{"title": str, "sentences": [str, ...]}``.

    ``"text"`` may replace ``"sentences"``: a list of sentences (the format of HotpotQA's processed
    Wikipedia abstracts) or one string, which then counts as a single sentence. A JSON list of
    such objects, or of ``[title, [sentences]]`` pairs (a HotpotQA ``context``), is read too.

    Raises:
        ValueError: Naming the line of the first paragraph without a title or text.
    """
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        items = list(enumerate(json.loads(text), 1))
    else:
        items = [(number, json.loads(line)) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    documents = []
    for number, raw in items:
        item = {"title": raw[0], "sentences": raw[1]} if isinstance(raw, list | tuple) and len(raw) == 2 else raw
        sentences = item.get("sentences", item.get("text")) if isinstance(item, dict) else None
        if isinstance(sentences, str):
            sentences = [sentences]
        title = item.get("title") if isinstance(item, dict) else None
        if not isinstance(title, str) or not isinstance(sentences, list) or not all(
            isinstance(s, str) for s in sentences
        ):
            raise ValueError(
                f"{path}: paragraph {number} needs a string 'title' and 'sentences' (list of str) or 'text'"
            )
        documents.append(Document(title, tuple(sentences)))
    return documents


def parse_hf_name(spec: str) -> tuple[str, str | None, str]:
    """Split ``"hf:NAME[:CONFIG][:SPLIT]"`` into ``(name, config, split)``; the split defaults to validation.

    Example: ``"hf:hotpotqa/hotpot_qa:distractor:validation"``.

    Raises:
        ValueError: If ``spec`` does not start with ``hf:`` or has no dataset name.
    """
    if not spec.startswith("hf:"):
        raise ValueError(f"Hugging Face dataset names start with 'hf:', got {spec!r}")
    parts = spec[3:].split(":")
    if not parts[0] or len(parts) > 3 or not all(parts):
        raise ValueError(f"expected 'hf:NAME[:CONFIG][:SPLIT]', got {spec!r}")
    name = parts[0]
    config = parts[1] if len(parts) > 1 else None
    split = parts[2] if len(parts) > 2 else "validation"
    return name, config, split


def record_from_hf(row: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a Hugging Face ``hotpot_qa`` row (columnar ``context``/``supporting_facts``) to the official format."""
    record = dict(row)
    context = row.get("context")
    if isinstance(context, Mapping):
        record["context"] = [[t, list(s)] for t, s in zip(context["title"], context["sentences"], strict=True)]
    facts = row.get("supporting_facts")
    if isinstance(facts, Mapping):
        record["supporting_facts"] = [[t, int(i)] for t, i in zip(facts["title"], facts["sent_id"], strict=True)]
    if "id" in record and "_id" not in record:
        record["_id"] = record.pop("id")
    return record


def _load_hf(spec: str) -> list[dict[str, Any]]:
    name, config, split = parse_hf_name(spec)
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - depends on the installed extras
        raise ImportError("hf: datasets need the 'datasets' package: pip install mulligan[train]") from err
    rows = datasets.load_dataset(name, config, split=split)
    return [record_from_hf(row) for row in rows]


class HotpotQAEnv(MulliganEnv):
    """Answer a multi-hop question by searching and reading documents (ReAct, Yao et al. 2023).

    ## Description
    The agent sees a question whose answer needs facts from two or more documents. It searches
    documents by name, reads sentences in them, and answers. This is the setting of NAT's QA agents
    (Wang et al. 2024, arXiv 2402.11651, Sec. 4.1) and of ReAct's HotpotQA experiments.

    Data, by ``dataset``:

    * ``None`` (default): the offline procedural world of :mod:`mulligan.envs.generators.world`
      (invented people, films, books, bands, cities, companies and universities; bridge and
      comparison questions; 2 gold and ``num_distractors`` distractor paragraphs per question).
      Endless; task ``i`` is deterministic in ``(data_seed, i)``.
    * a path to an official HotpotQA file (JSON list or JSONL of records with ``question``,
      ``answer``, ``context``, ``supporting_facts``). Without ``corpus``, the distractor setting:
      each question searches its own ``context`` paragraphs. With ``corpus``, the fullwiki setting:
      every question searches the paragraphs of that file (see :func:`load_paragraphs`: JSONL,
      one ``{"title": ..., "sentences": [...]}`` a line).
    * ``"hf:NAME[:CONFIG][:SPLIT]"``, e.g. ``"hf:hotpotqa/hotpot_qa:distractor:validation"``:
      the same from the Hugging Face hub (needs ``datasets`` and a network connection).

    ## Observation and Action Space
    Both are :class:`~mulligan.envs.core.TextSpace`. The first observation states the action
    grammar and ends with ``Question: <question>``. An action is a ReAct step: optional text such
    as ``Thought: ...``, then ``Action: `` and one of

    * ``search[entity]``: the document titled ``entity`` (case and spacing ignored), else the best
      BM25 match over titles and text. Observation: ``Page "<title>": <opening sentences>``, with
      ``No page titled "<entity>"; best match.`` and the next matches' titles before and after it
      when the title was not exact. When no document shares a word with the query:
      ``Could not find "<entity>". Similar titles: "A", "B", ...``.
    * ``lookup[keyword]``: the next sentence containing ``keyword`` (case-insensitive) in the last
      document found: ``(Result i / n) <sentence>``, then ``No more results for "<keyword>".``.
    * ``finish[answer]``: answer and end the episode.

    See :func:`parse_react_action` for the exact grammar. A malformed action gets an observation
    that names the three actions, and counts as a step.

    ## Reward
    ``reward="em"`` (default): 1.0 for an answer that equals the gold one after HotpotQA's
    normalisation, else 0.0. ``reward="f1"``: the answer's token F1. Paid on ``finish``; every
    other step, malformed ones included, pays 0.0 and uses up one of the ``max_episode_steps``.

    ## Episode End
    Terminates on ``finish[...]``. ``gymnasium.make`` caps episodes at 10 steps (truncation).

    ## Information
    ``task_id``, ``success`` (exact match), ``score`` (F1), ``feedback`` (what format was expected,
    or the answer's grade), ``em`` and ``f1`` (0.0 before the answer), ``fine_grained_label``
    (NAT's label of the answer's F1, Sec. 3.3; empty before the answer), ``action_type``
    (``"search"``, ``"lookup"``, ``"finish"`` or ``"invalid"``; empty after reset).

    ## Arguments
    * ``dataset`` (str | None): see Description.
    * ``corpus`` (str | None): fullwiki paragraphs file; only with a ``dataset`` file.
    * ``reward`` (str, ``"em"``): ``"em"`` or ``"f1"``.
    * ``data_seed`` (int, 0): seed of the procedural world.
    * ``num_distractors`` (int, 8) and ``comparison_fraction`` (float, 0.3): procedural world settings.
    * ``search_sentences`` (int, 3): opening sentences a search shows.
    """

    num_tasks: int | None = None
    #: Sentence of the first observation that says how to answer.
    answer_instruction = "finish[answer]: give the answer (a short span, e.g. a name or a date) and end the episode."
    task_prefix = "hotpotqa"

    def __init__(
        self,
        dataset: str | None = None,
        *,
        corpus: str | None = None,
        reward: str = "em",
        data_seed: int = 0,
        num_distractors: int = 8,
        comparison_fraction: float = 0.3,
        search_sentences: int = 3,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if reward not in ("em", "f1"):
            raise ValueError(f"reward must be 'em' or 'f1', got {reward!r}")
        if isinstance(search_sentences, bool) or not isinstance(search_sentences, int) or search_sentences < 1:
            raise ValueError(f"search_sentences must be an int >= 1, got {search_sentences!r}")
        if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
            raise ValueError(f"data_seed must be a non-negative int, got {data_seed!r}")
        if corpus is not None and dataset is None:
            raise ValueError("corpus= is the fullwiki setting of a dataset file: pass dataset= too")
        self.reward_mode = reward
        self.data_seed = data_seed
        self.search_sentences = search_sentences
        self.world_config = WorldConfig(num_distractors=num_distractors, comparison_fraction=comparison_fraction)
        self._records: list[dict[str, Any]] | None = None
        if dataset is not None:
            raw = _load_hf(dataset) if dataset.startswith("hf:") else load_qa_records(dataset)
            self._records = raw
            self.num_tasks = len(raw)
            if not raw:
                raise ValueError(f"dataset {dataset!r} holds no records")
        self.fullwiki_store = DocumentStore(load_paragraphs(corpus)) if corpus is not None else None
        self._store: DocumentStore | None = None
        self._document: Document | None = None
        self._lookup = LookupState()

    # ------------------------------------------------------------------ tasks
    def get_task(self, index: int) -> dict[str, Any]:
        """The task at ``index``: a procedural record, or the dataset's record (validated)."""
        if self._records is None:
            return self.generate_task(index)
        return self.task_from_record(self._records[index])

    def generate_task(self, index: int) -> dict[str, Any]:
        """The procedural task at ``index`` (HotpotQA format)."""
        return generate_hotpotqa_task(self.world_config, self.data_seed, index)

    def normalize_answer_field(self, answer: Any) -> str:
        """The record's gold answer as a non-empty string (raises ValueError otherwise)."""
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError("a HotpotQA record needs a non-empty string 'answer'")
        return answer

    def task_from_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Validate an official-format record; returns a JSON-ready copy.

        Raises:
            ValueError: Saying which field is missing or malformed.
        """
        question = record.get("question")
        if not isinstance(question, str) or not question.strip():
            raise ValueError("a HotpotQA record needs a non-empty string 'question'")
        task = dict(record)
        task["answer"] = self.normalize_answer_field(record.get("answer"))
        context = record.get("context", [] if self.fullwiki_store is not None else None)
        if not isinstance(context, Sequence) or isinstance(context, str) or (
            not context and self.fullwiki_store is None
        ):
            raise ValueError(
                "a record needs 'context': [[title, [sentences]], ...] (or pass corpus= for the fullwiki setting)"
            )
        normalized_context = []
        for item in context:
            if (
                not isinstance(item, Sequence) or isinstance(item, str) or len(item) != 2
                or not isinstance(item[0], str) or isinstance(item[1], str)
                or not all(isinstance(s, str) for s in item[1])
            ):
                raise ValueError("each 'context' item must be [title, [sentence, ...]]")
            normalized_context.append([item[0], list(item[1])])
        task["context"] = normalized_context
        facts = record.get("supporting_facts", [])
        if not isinstance(facts, Sequence) or isinstance(facts, str) or not all(
            isinstance(f, Sequence) and len(f) == 2 and isinstance(f[0], str)
            and isinstance(f[1], int) and not isinstance(f[1], bool) for f in facts
        ):
            raise ValueError("'supporting_facts' must be a list of [title, sentence index] pairs")
        task["supporting_facts"] = [[title, index] for title, index in facts]
        return task

    def task_id(self, task: Mapping[str, Any], index: int | None) -> str:
        """The record's ``_id`` when it has one, else a content hash."""
        record_id = task.get("_id")
        if isinstance(record_id, str) and record_id:
            return record_id
        return stable_task_id(self.task_prefix, task)

    def default_info(self) -> dict[str, Any]:
        """QA adds ``em``, ``f1``, ``fine_grained_label`` and ``action_type``."""
        return {"em": 0.0, "f1": 0.0, "fine_grained_label": "", "action_type": ""}

    # ------------------------------------------------------------------ episode
    def instructions(self) -> str:
        """The text before the question in the first observation."""
        return (
            "Answer the question by interleaving Thought and Action steps. Each step is an optional "
            "'Thought: ...' followed by 'Action: ' and one of:\n"
            "(1) search[entity]: find the document about entity and show its opening sentences "
            "(or similar titles if none matches).\n"
            "(2) lookup[keyword]: show the next sentence containing keyword in the last document found.\n"
            f"(3) {self.answer_instruction}\n"
        )

    def _start(self, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if self.fullwiki_store is not None:
            self._store = self.fullwiki_store
        else:
            self._store = DocumentStore(Document(title, tuple(sentences)) for title, sentences in task["context"])
        self._document, self._lookup = None, LookupState()
        return f"{self.instructions()}Question: {task['question']}", {}

    def _step(self, action: str) -> StepOutcome:
        parsed = parse_react_action(action)
        if parsed is None:
            return self._invalid(ACTION_GRAMMAR)
        verb, argument = parsed
        if verb == "search":
            return StepOutcome(self._search(argument), info={"action_type": "search"})
        if verb == "lookup":
            return StepOutcome(self._lookup_keyword(argument), info={"action_type": "lookup"})
        return self._finish(argument)

    def _invalid(self, message: str) -> StepOutcome:
        return StepOutcome(message, feedback=message, info={"action_type": "invalid"})

    def _opening(self, document: Document) -> str:
        return " ".join(s.strip() for s in document.sentences[: self.search_sentences])

    def _search(self, query: str) -> str:
        assert self._store is not None
        result = self._store.search(query)
        echoed = truncate_for_feedback(query, _ECHO_LIMIT)
        self._lookup = LookupState()
        self._document = result.document
        if result.document is None:
            if not result.similar:
                return f'Could not find "{echoed}" and no title is similar.'
            return f'Could not find "{echoed}". Similar titles: ' + ", ".join(f'"{t}"' for t in result.similar) + "."
        page = f'Page "{result.document.title}": {self._opening(result.document)}'
        if result.exact:
            return page
        others = ", ".join(f'"{t}"' for t in result.similar)
        return f'No page titled "{echoed}"; best match. {page}' + (f" Other matches: {others}." if others else "")

    def _lookup_keyword(self, keyword: str) -> str:
        if self._document is None:
            return "There is no document to look in: search[entity] first."
        sentence, rank, total = self._lookup.next(self._document.sentences, keyword)
        if sentence is None:
            return f'No more results for "{truncate_for_feedback(keyword, _ECHO_LIMIT)}".'
        return f"(Result {rank} / {total}) {sentence}"

    def grade(self, answer: str) -> tuple[float, float] | str:
        """``(em, f1)`` of ``answer`` against the task's gold answer, or a format error message."""
        score = qa_score(answer, self.task["answer"])
        return score.em, score.f1

    def _finish(self, answer: str) -> StepOutcome:
        graded = self.grade(answer)
        if isinstance(graded, str):
            return self._invalid(graded)
        em, f1 = graded
        label = fine_grained_label(f1)
        success = em == 1.0
        reward = em if self.reward_mode == "em" else f1
        feedback = "" if success else f'The answer "{truncate_for_feedback(answer)}" is incorrect {label}.'
        observation = f"Episode finished: the answer is {label[1:-1].lower()} (EM {em:.0f}, F1 {f1:.2f})."
        return StepOutcome(
            observation, reward=reward, terminated=True, success=success, score=f1, feedback=feedback,
            info={"em": em, "f1": f1, "fine_grained_label": label, "action_type": "finish"},
        )
