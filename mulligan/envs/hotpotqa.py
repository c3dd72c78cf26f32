"""``Mulligan/HotpotQA-v0``: multi-hop question answering with ReAct's search, lookup and finish actions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mulligan.envs.core import MulliganEnv, StepOutcome, stable_task_id, truncate_for_feedback
from mulligan.envs.data import check_data_seed, load_records, read_json_records, split_of_signature
from mulligan.envs.generators.world import WorldConfig, generate_hotpotqa_task
from mulligan.envs.react import parse_react_action
from mulligan.envs.retrieval import Document, DocumentStore, LookupState
from mulligan.envs.tools import ToolParameter, ToolSpec
from mulligan.envs.verifiers.qa import fine_grained_label, qa_score
from mulligan.envs.web_search import build_web_search

#: What a malformed action is told (observation and feedback).
ACTION_GRAMMAR = (
    "Invalid action. Write an optional 'Thought: ...' and then 'Action: ' followed by one of "
    "search[entity], lookup[keyword] or finish[answer]."
)
#: The verbs of a QA step; the grammar around them is :mod:`mulligan.envs.react`'s.
ACTION_VERBS = ("search", "lookup", "finish")
#: The QA actions as tools (``action_format="tools"``): one per ReAct verb, the verb's argument as a string.
QA_TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "search",
        "Find the document about an entity and show its opening sentences (or similar titles if none matches).",
        (ToolParameter("query", "the entity to search for, e.g. a person's or a film's name"),),
    ),
    ToolSpec(
        "lookup",
        "Show the next sentence containing a keyword in the last document found.",
        (ToolParameter("keyword", "the keyword to look for"),),
    ),
    ToolSpec(
        "finish",
        "Give the answer (a short span, e.g. a name or a date) and end the episode.",
        (ToolParameter("answer", "the answer"),),
    ),
)
#: Where ``search[...]`` looks: the task's documents, or the web as NAT's official QA tool.
SEARCH_BACKENDS = ("local", "web")
#: Longest argument echoed back in an observation.
_ECHO_LIMIT = 80
#: The split of a hub spec that names none: HotpotQA's test split has no answers.
DEFAULT_HUB_SPLIT = "validation"


#: Procedural splits: disjoint by content (see :func:`qa_task_signature`).
PROCEDURAL_SPLITS = ("train", "test")
#: Tasks of the procedural test split (finite, so that an evaluation can score each once).
PROCEDURAL_TEST_SIZE = 1000
#: World indices of the test split start here (the train split uses those below, as before splits existed).
PROCEDURAL_TEST_OFFSET = 2**31
_MAX_REDRAWS = 1000


def qa_task_signature(task: Mapping[str, Any]) -> str:
    """A QA problem's content: its question and answer (the invented entities are in both).

    Two worlds that ask the same question with the same answer are the same problem to a learner
    that memorises, so they share a signature and a split.
    """
    return f"{task['question']}|{task['answer']}"


class AnswerFormatError(ValueError):
    """A ``finish[...]`` answer in a form the env does not grade (StrategyQA: not Yes or No)."""


def load_paragraphs(path: str | Path) -> list[Document]:
    """Read a fullwiki corpus: JSONL, one paragraph a line, ``{"title": str, "sentences": [str, ...]}``.

    ``"text"`` may replace ``"sentences"``: a list of sentences (the format of HotpotQA's processed
    Wikipedia abstracts) or one string, which then counts as a single sentence. A JSON list of
    such objects, or of ``[title, [sentences]]`` pairs (a HotpotQA ``context``), is read too.

    Raises:
        ValueError: Naming the file and line of the first paragraph without a title or text, or
            of the first line that is not UTF-8 JSON.
    """
    documents = []
    for number, raw in read_json_records(path):
        item = {"title": raw[0], "sentences": raw[1]} if isinstance(raw, list | tuple) and len(raw) == 2 else raw
        sentences = item.get("sentences", item.get("text")) if isinstance(item, dict) else None
        if isinstance(sentences, str):
            sentences = [sentences]
        title = item.get("title") if isinstance(item, dict) else None
        if (
            not isinstance(title, str)
            or not isinstance(sentences, list)
            or not all(isinstance(s, str) for s in sentences)
        ):
            raise ValueError(
                f"{path}:{number}: a paragraph needs a string 'title' and 'sentences' (list of str) or 'text'"
            )
        documents.append(Document(title, tuple(sentences)))
    if not documents:
        raise ValueError(f"{path}: no paragraphs")
    return documents


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
      Task ``i`` is deterministic in ``(data_seed, split, i)``. ``split="train"`` (default) is
      endless; ``split="test"`` has ``PROCEDURAL_TEST_SIZE`` (1000) tasks. The two are disjoint by
      content: a fixed hash of the question and answer decides the split of a problem, so no test
      question (with its answer) is ever a training task, whatever the seeds.
    * a path to an official HotpotQA file (JSON list or JSONL of records with ``question``,
      ``answer``, ``context``, ``supporting_facts``). Without ``corpus``, the distractor setting:
      each question searches its own ``context`` paragraphs. With ``corpus``, the fullwiki setting:
      every question searches the paragraphs of that file (see :func:`load_paragraphs`: JSONL,
      one ``{"title": ..., "sentences": [...]}`` a line).
    * ``"hf:NAME[:CONFIG][:SPLIT]"``, e.g. ``"hf:hotpotqa/hotpot_qa:distractor:validation"``:
      the same from the Hugging Face hub (needs ``datasets`` and a network connection); the split
      defaults to ``validation`` (HotpotQA's test split has no answers). See :mod:`mulligan.envs.data`.

    Every record of a file is validated when the env is built; a record with a missing or
    malformed field is reported with its file and line.

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

    The grammar (optional ``Action:`` marker, balanced brackets, multi-line arguments) is that of
    every ReAct env: :func:`mulligan.envs.react.parse_react_action`. A malformed action gets an
    observation that names the three actions, and counts as a step; so does an action longer than
    the action space's ``max_length`` (2**21 characters), which is refused unread.

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
    * ``split`` (str | None): ``"train"`` (default) or ``"test"`` for the procedural world; ``None``
      for a dataset (a file is its own split; a hub spec names its split).
    * ``num_tasks`` (int | None): cap on the number of tasks (``None``: endless for the procedural
      train split, 1000 for its test split, the whole dataset otherwise).
    * ``action_format`` (str, ``"react"``): ``"react"`` reads ReAct text steps; ``"tools"`` reads
      each action as a tool call (:mod:`mulligan.envs.tools`) of the tools ``search(query)``,
      ``lookup(keyword)`` and ``finish(answer)`` (``env.unwrapped.tools``). The first observation
      then asks for tool calls; a call's observation is the text its ReAct action would get, and
      ``info["tool_call_id"]`` names the call. An invalid call is a malformed step (0.0).
    * ``search_backend`` (str, ``"local"``): ``"local"`` searches the task's documents (offline);
      ``"web"`` answers ``search[query]`` as NAT's official QA agents do, with Google snippets
      through the Serper API, retrieved and reranked, shown as `` #1: ... #2: ... #3: ...``
      (:mod:`mulligan.envs.web_search`; needs the network and ``SERPER_API_KEY``); ``lookup`` then
      reads the snippets of the last search.
    * ``web_search`` (dict | None): options of the web search (endpoint, key variable, models,
      cache file; :data:`~mulligan.envs.web_search.WEB_SEARCH_OPTIONS`); only with ``"web"``.

    ## Version History
    * v0: the action grammar is the shared one of :mod:`mulligan.envs.react` (before: arguments
      could not span lines, and parsing was quadratic in a long run of whitespace); over-long
      actions are refused; file records are validated at load (before: at the task's reset);
      ``hf:`` specs follow :mod:`mulligan.envs.data`; the procedural world has content-disjoint
      ``train``/``test`` splits (before: one stream; about 20% of train tasks are now redrawn);
      ``action_format="tools"`` (tool calls; ReAct text stays the default).
    """

    num_tasks: int | None = None
    #: Sentence of the first observation that says how to answer.
    answer_instruction = "finish[answer]: give the answer (a short span, e.g. a name or a date) and end the episode."
    task_prefix = "hotpotqa"
    tool_specs = QA_TOOLS

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
        split: str | None = None,
        num_tasks: int | None = None,
        action_format: str = "react",
        search_backend: str = "local",
        web_search: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode, action_format=action_format)
        if search_backend not in SEARCH_BACKENDS:
            raise ValueError(f"search_backend must be one of {SEARCH_BACKENDS}, got {search_backend!r}")
        if web_search is not None and search_backend != "web":
            raise ValueError("web_search= configures search_backend='web'; pass both, or neither")
        self.search_backend = search_backend
        # NAT's QA agents search the web (Serper), not the question's paragraphs (docs/fidelity.md N13).
        self.web = build_web_search(web_search) if search_backend == "web" else None
        if num_tasks is not None and (isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1):
            raise ValueError(f"num_tasks must be a positive int or None, got {num_tasks!r}")
        if dataset is not None and split is not None:
            raise ValueError(
                f"split={split!r} is only for the procedural world: a file is its own split, and a hub "
                "spec names its split ('hf:NAME[:CONFIG][:SPLIT]')"
            )
        self.split = "train" if split is None and dataset is None else split
        if dataset is None and self.split not in PROCEDURAL_SPLITS:
            raise ValueError(f"the procedural world has splits {PROCEDURAL_SPLITS}, got split={split!r}")
        if reward not in ("em", "f1"):
            raise ValueError(f"reward must be 'em' or 'f1', got {reward!r}")
        if isinstance(search_sentences, bool) or not isinstance(search_sentences, int) or search_sentences < 1:
            raise ValueError(f"search_sentences must be an int >= 1, got {search_sentences!r}")
        check_data_seed(data_seed)
        if corpus is not None and dataset is None:
            raise ValueError("corpus= is the fullwiki setting of a dataset file: pass dataset= too")
        self.reward_mode = reward
        self.data_seed = data_seed
        self.search_sentences = search_sentences
        self.world_config = WorldConfig(num_distractors=num_distractors, comparison_fraction=comparison_fraction)
        self.fullwiki_store = DocumentStore(load_paragraphs(corpus)) if corpus is not None else None
        self._records: list[dict[str, Any]] | None = None
        if dataset is not None:
            self._records = load_records(
                dataset,
                default_split=DEFAULT_HUB_SPLIT,
                normalize=lambda row: self.task_from_record(record_from_hf(row)),
            )
            self._records = self._records[:num_tasks] if num_tasks is not None else self._records
            self.num_tasks = len(self._records)
        elif self.split == "test":
            self.num_tasks = min(num_tasks or PROCEDURAL_TEST_SIZE, PROCEDURAL_TEST_SIZE)
        else:
            self.num_tasks = num_tasks
        self._store: DocumentStore | None = None
        self._document: Document | None = None
        self._lookup = LookupState()

    # ------------------------------------------------------------------ tasks
    def get_task(self, index: int) -> dict[str, Any]:
        """The task at ``index``: a procedural record, or the dataset's record (validated at load)."""
        if self._records is None:
            return self.procedural_task(index)
        return dict(self._records[index])

    def procedural_task(self, index: int) -> dict[str, Any]:
        """Task ``index`` of the procedural split: train and test never share a question.

        The world's task ``index`` (train) or ``PROCEDURAL_TEST_OFFSET + index`` (test) is used when
        its content (:func:`qa_task_signature`) belongs to the split
        (:func:`~mulligan.envs.data.split_of_signature`); otherwise it is redrawn at indices
        ``2**32 * k + ...`` (k = 1, 2, ...), so a task stays a pure function of ``(data_seed, index)``.
        """
        base = index if self.split == "train" else PROCEDURAL_TEST_OFFSET + index
        for attempt in range(_MAX_REDRAWS):
            task = self.generate_task(base + attempt * 2**32)
            if split_of_signature(qa_task_signature(task)) == self.split:
                # Ids name the split and index, not the world index a redraw used.
                split_tag = "" if self.split == "train" else "test-"
                task["_id"] = f"world-{self.task_prefix}-{self.data_seed}-{split_tag}{index}"
                return task
        raise RuntimeError(f"no {self.split}-split task in {_MAX_REDRAWS} draws")  # pragma: no cover - p = 0.8**1000

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
        if (
            not isinstance(context, Sequence)
            or isinstance(context, str)
            or (not context and self.fullwiki_store is None)
        ):
            raise ValueError(
                "a record needs 'context': [[title, [sentences]], ...] (or pass corpus= for the fullwiki setting)"
            )
        normalized_context = []
        for item in context:
            if (
                not isinstance(item, Sequence)
                or isinstance(item, str)
                or len(item) != 2
                or not isinstance(item[0], str)
                or isinstance(item[1], str)
                or not all(isinstance(s, str) for s in item[1])
            ):
                raise ValueError("each 'context' item must be [title, [sentence, ...]]")
            normalized_context.append([item[0], list(item[1])])
        task["context"] = normalized_context
        facts = record.get("supporting_facts", [])
        if (
            not isinstance(facts, Sequence)
            or isinstance(facts, str)
            or not all(
                isinstance(f, Sequence)
                and len(f) == 2
                and isinstance(f[0], str)
                and isinstance(f[1], int)
                and not isinstance(f[1], bool)
                for f in facts
            )
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
        if self.action_format == "tools":
            finish = next(spec for spec in self.tool_specs if spec.name == "finish")
            return (
                "Answer the question by calling one tool per turn:\n"
                "(1) search(query): find the document about an entity and show its opening sentences "
                "(or similar titles if none matches).\n"
                "(2) lookup(keyword): show the next sentence containing keyword in the last document found.\n"
                f"(3) finish(answer): {finish.description[0].lower()}{finish.description[1:]}\n"
            )
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
        parsed = parse_react_action(action, ACTION_VERBS)
        if parsed is None:
            return self._invalid(ACTION_GRAMMAR)
        return self._act(*parsed)

    def _step_tool(self, spec: ToolSpec, arguments: dict[str, Any]) -> StepOutcome:
        # The tool's one argument is the ReAct verb's bracketed argument.
        return self._act(spec.name, next(iter(arguments.values())))

    def _act(self, verb: str, argument: str) -> StepOutcome:
        if verb == "search":
            return StepOutcome(observation=self._search(argument), info={"action_type": "search"})
        if verb == "lookup":
            return StepOutcome(observation=self._lookup_keyword(argument), info={"action_type": "lookup"})
        return self._finish(argument)

    def _invalid(self, message: str) -> StepOutcome:
        return StepOutcome(observation=message, feedback=message, info={"action_type": "invalid"})

    def _opening(self, document: Document) -> str:
        return " ".join(s.strip() for s in document.sentences[: self.search_sentences])

    def _search(self, query: str) -> str:
        if self.web is not None:
            # The snippets shown become the document that lookup[...] reads.
            snippets = self.web.snippets(query)
            self._lookup = LookupState()
            self._document = Document(query, tuple(snippets))
            if not snippets:
                return f'No web results for "{truncate_for_feedback(query, _ECHO_LIMIT)}".'
            return self.web(query)
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

    def grade(self, answer: str) -> tuple[float, float]:
        """``(em, f1)`` of ``answer`` against the task's gold answer.

        Raises:
            AnswerFormatError: if the answer is in a form the env does not grade (a subclass's
                rule; HotpotQA grades any answer). The episode then goes on, as after a malformed action.
        """
        score = qa_score(answer, self.task["answer"])
        return score.em, score.f1

    def _finish(self, answer: str) -> StepOutcome:
        try:
            em, f1 = self.grade(answer)
        except AnswerFormatError as err:
            return self._invalid(str(err))
        label = fine_grained_label(f1)
        success = em == 1.0
        reward = em if self.reward_mode == "em" else f1
        feedback = "" if success else f'The answer "{truncate_for_feedback(answer)}" is incorrect {label}.'
        observation = f"Episode finished: the answer is {label[1:-1].lower()} (EM {em:.0f}, F1 {f1:.2f})."
        return StepOutcome(
            observation=observation,
            reward=reward,
            terminated=True,
            success=success,
            score=f1,
            feedback=feedback,
            info={"em": em, "f1": f1, "fine_grained_label": label, "action_type": "finish"},
        )
