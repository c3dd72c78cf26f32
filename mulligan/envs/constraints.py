"""Constraint following with a checker's critique: CORGI's rule-checked tasks, mulligan's, and IFEval's instructions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mulligan.envs.core import MulliganEnv, StepOutcome, stable_task_id
from mulligan.envs.data import check_data_seed, dataset_name, load_records
from mulligan.envs.generators.constraints import ConstraintTaskConfig, generate_constraint_task
from mulligan.envs.verifiers.constraints import (
    FAMILIES,
    check_constraints,
    combine_critiques,
    corgi_primer,
    normalize_constraint,
)
from mulligan.envs.verifiers.critics import (
    CRITIC_TASKS,
    MODEL_CRITIC_IDS,
    Critic,
    critic_id,
    critic_primer,
    default_critic,
    missing_critic_error,
    paper_critic,
)

#: The split a hub dataset spec without one reads (IFEval's only split).
DEFAULT_SPLIT = "train"
#: CORGI's task names (the ``task`` field of its released data) and their constraint ids: the three
#: rule-checked tasks, then the nine that tool or model critics check (:mod:`~mulligan.envs.verifiers.critics`).
CORGI_TASK_IDS: dict[str, str] = {
    "num_planning": "corgi:num_planning",
    "num_planning_scores": "corgi:num_planning",  # the name CORGI's data generator writes
    "cmg_hard": "corgi:cmg_hard",
    "panagram": "corgi:panagram",
    **{task.name: cid for cid, task in CRITIC_TASKS.items()},
}
# The record fields each rule-checked task reads, as (our argument name: CORGI's field name).
_RULE_FIELDS: dict[str, dict[str, str]] = {
    "corgi:num_planning": {"prefix": "prefix", "num_words": "N", "last_word": "last_word"},
    "corgi:cmg_hard": {"concepts": "concepts"},
    "corgi:panagram": {"letters": "letters_list"},
}
# CORGI's chat markers: Llama-3's header tokens and Llama-2's [INST] tags around the user turn.
_LLAMA3_USER = "<|start_header_id|>user<|end_header_id|>"
_LLAMA3_ASSISTANT = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"


def _split_corgi_query(query: str) -> tuple[str, str]:
    """CORGI's ``query`` (a rendered Llama-3 or Llama-2 prompt) as (user turn, primer)."""
    if _LLAMA3_USER in query and _LLAMA3_ASSISTANT in query:
        user, _, primer = query.partition(_LLAMA3_USER)[2].partition(_LLAMA3_ASSISTANT)
        return user.strip(), primer.strip()
    if "[/INST]" in query:
        user, _, primer = query.partition("[/INST]")
        return user.replace("[INST]", "", 1).strip(), primer.strip()
    return query.strip(), ""


def _corgi_task_name(record: Mapping[str, Any]) -> Any:
    """The record's ``task``; CORGI's common_gen test file has none, so its fields name it."""
    if "task" in record:
        return record["task"]
    if "words" in record and "pos" in record:
        return "common_gen"
    return None


def normalize_corgi_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record of CORGI's released data (``data_llama_3/{train,validation,test}/<task>.json``) as a task.

    CORGI's records have ``query`` (the rendered prompt, ending with the ``- Output:`` primer),
    ``task`` (absent from common_gen's test file, recognised by its ``words`` and ``pos``), usually
    ``id``, and the task's fields: ``prefix``, ``N`` and ``last_word`` (num_planning),
    ``letters_list`` (panagram), ``concepts`` (cmg_hard), and for the critic-checked tasks the
    fields of :data:`~mulligan.envs.verifiers.critics.CRITIC_TASKS` (``students`` and
    ``constraints``, ``tests``, ``input_list`` and ``output_list``, ``label``, ``sentence``,
    ``prefix``, ``student_model_query`` and ``correct_answer``, ``source`` and ``exemplar``,
    ``words`` and ``pos``), kept under CORGI's names. The task's ``prompt`` is the query's user turn
    and its ``primer`` the assistant's opening, so the model sees CORGI's own prompt.
    """
    task_name = _corgi_task_name(record)
    if task_name not in CORGI_TASK_IDS:
        raise ValueError(f"unknown CORGI task {task_name!r}; expected one of {sorted(CORGI_TASK_IDS)}")
    query = record.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ValueError("a CORGI record needs a non-empty string 'query'")
    constraint_id = CORGI_TASK_IDS[task_name]
    if constraint_id in _RULE_FIELDS:
        fields = _RULE_FIELDS[constraint_id]
    else:
        fields = {name: name for name in CRITIC_TASKS[constraint_id].fields}
    missing = [theirs for theirs in fields.values() if theirs not in record]
    if missing:
        raise ValueError(f"a CORGI {task_name} record needs the field(s) {missing}")
    kwargs = normalize_constraint(constraint_id, {ours: record[theirs] for ours, theirs in fields.items()})
    prompt, primer = _split_corgi_query(query)
    if not primer:
        primer = (
            corgi_primer(constraint_id, kwargs)
            if constraint_id in _RULE_FIELDS
            else critic_primer(constraint_id, kwargs)
        )
    task: dict[str, Any] = {
        "prompt": prompt,
        "instruction_id_list": [constraint_id],
        "kwargs": [kwargs],
        "primer": primer,
    }
    if "id" in record:
        task["key"] = record["id"]
    return task


def normalize_task(record: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a task record and return it cleaned.

    Two formats are read. IFEval's: ``prompt`` (str), ``instruction_id_list`` (constraint ids) and
    ``kwargs`` (one dict per id; ``None`` values are dropped, as Hugging Face copies of IFEval fill
    every argument name), with ``key`` and ``primer`` (the text that opens a CORGI answer) kept when
    present. CORGI's released records (a ``query`` and a ``task``): see :func:`normalize_corgi_record`.

    Raises:
        ValueError: saying what is wrong.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"a task record is a JSON object, got {type(record).__name__}")
    if "instruction_id_list" not in record and "query" in record and _corgi_task_name(record) is not None:
        return normalize_corgi_record(record)
    prompt = record.get("prompt")
    ids = record.get("instruction_id_list")
    kwargs = record.get("kwargs")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("a constraint task needs a non-empty string 'prompt'")
    if isinstance(ids, str) or not isinstance(ids, Sequence) or not ids:
        raise ValueError("a constraint task needs 'instruction_id_list', a non-empty list of constraint ids")
    if kwargs is None:
        kwargs = [{} for _ in ids]
    if isinstance(kwargs, str | Mapping) or not isinstance(kwargs, Sequence) or len(kwargs) != len(ids):
        raise ValueError(f"'kwargs' must be a list with one dict per instruction id ({len(ids)}), got {kwargs!r}")
    clean_kwargs = []
    for constraint_id, kw in zip(ids, kwargs, strict=True):
        if kw is not None and not isinstance(kw, Mapping):
            raise ValueError(f"kwargs of {constraint_id!r} must be a dict, got {kw!r}")
        clean_kwargs.append(normalize_constraint(str(constraint_id), kw))
    task: dict[str, Any] = {"prompt": prompt, "instruction_id_list": [str(i) for i in ids], "kwargs": clean_kwargs}
    if "key" in record:
        task["key"] = record["key"]
    primer = record.get("primer")
    if primer is not None:
        if not isinstance(primer, str):
            raise ValueError(f"'primer' must be a string, got {primer!r}")
        task["primer"] = primer
    return task


def load_constraint_dataset(dataset: str) -> list[dict[str, Any]]:
    """Load tasks from a local file or the hub, in IFEval's or CORGI's format (:func:`normalize_task`).

    ``dataset`` has the grammar of every env's data (:func:`mulligan.envs.data.load_records`): a
    ``.jsonl`` file (IFEval's ``input_data.jsonl``), a ``.json`` list (CORGI's
    ``data_llama_3/test/panagram.json``), or ``hf:NAME[:CONFIG][:SPLIT]`` (``hf:google/IFEval``).
    A bad record raises ``ValueError`` naming the file and line.
    """
    return load_records(dataset, default_split=DEFAULT_SPLIT, normalize=normalize_task)


class ConstraintsEnv(MulliganEnv):
    """Write text that satisfies verifiable constraints; a checker scores it and critiques what broke.

    ## Description
    The environment of CORGI (Bezalel et al. 2024, arXiv 2411.01483): an instruction with
    constraints that a rule-based checker verifies. Constraints come from these sources:
    CORGI's rule-checked tasks under CORGI's names (``corgi:num_planning``, ``corgi:cmg_hard``,
    ``corgi:panagram``), each with CORGI's own prompt (two worked examples) and checked as CORGI's
    critics check them, and CORGI's nine other tasks (loaded from CORGI's released records),
    checked by CORGI's tool or model critics (:mod:`~mulligan.envs.verifiers.critics`, the
    ``critics`` argument); mulligan's own rules, which CORGI does not have (a chat-friendly completion
    variant, graded concept coverage, pangram, lipogram, maximum word length); and IFEval's 25
    instructions (Zhou et al. 2023), checked in IFEval's strict or loose mode. The critic's
    messages for every broken constraint, joined as CORGI's critic joins them ("In addition, ...",
    "Moreover, ..."), are ``info["feedback"]``; ``gymnasium.make("Mulligan/Constraints-v0",
    max_attempts=3)`` turns that into CORGI's session, where each retry is prompted with the
    feedback and the episode's reward is the best attempt's score.

    ## Observation and Action Space
    Both are :class:`~mulligan.envs.core.TextSpace`. The observation is the instruction (the task's
    ``prompt``); the action is the response text, any string. A CORGI task's record also has a
    ``primer``, the ``- Output: ...`` line that opens the answer in CORGI's prompts; an agent that
    can prefill its answer starts it with the primer and sends the continuation (``primed=True``).

    ## Reward
    The constraint score: the mean over the task's constraints of each one's score in [0, 1]. IFEval
    instructions, cmg_hard and most rules score 0 or 1; num_planning (and the completion variant)
    scores 0.8 for the word count plus 0.2 for the last word (CORGI Sec. 4); panagram scores the
    mean of its three checks (a word, no letter missing, none extra); concepts and pangrams score
    the fraction covered. An empty or malformed response simply breaks constraints (score 0 for
    each, with a critique); an action over the size limit is refused unread with score 0.

    ## Episode End
    Single turn: the episode terminates after one action. Multi-turn sessions come from the
    ``max_attempts`` argument of ``gymnasium.make``.

    ## Information
    ``task_id``, ``success`` (every constraint holds), ``score``, ``feedback`` (the critiques of the
    broken constraints, joined; empty on success), ``instruction_id_list`` (the task's constraint
    ids), ``constraint_results`` (one bool per constraint, in the task's order; empty before the first
    step) and ``constraint_scores`` (one float per constraint). A task with a CORGI primer adds
    ``response_prefix`` (the primer, on reset and every step, retry turns included: the prefill
    contract); tasks without one do not set the key.

    ## Arguments
    * ``dataset`` (str, list of str, or None): ``None`` for the procedural generator; a local file or
      ``"hf:NAME[:CONFIG][:SPLIT]"`` (the grammar of :func:`mulligan.envs.data.load_records`), or a
      list of them whose tasks are concatenated (CORGI's five source tasks' files, for its
      meta-learning training: task ids stay ``<file stem>-<index in that file>``), with
      records in IFEval's format (``prompt``, ``instruction_id_list``, ``kwargs``) or CORGI's
      released format (``data_llama_3/<split>/<task>.json``: ``query``, ``task``, ``prefix``,
      ``N``, ``last_word``, ``letters_list``, ``concepts``).
    * ``mode`` (``"strict"`` or ``"loose"``): IFEval's checking mode.
    * ``primed`` (bool, False): actions are continuations of CORGI's primer, scored exactly as
      CORGI's critics score them. By default a leading ``- Output:`` and a repeated prefix (or
      ``Word:``) are dropped first, as an unprimed chat model tends to repeat them.
    * ``families`` (tuple of str or None): families or single constraint ids the generator draws
      from (default: all of :data:`~mulligan.envs.verifiers.constraints.FAMILIES`). Generator only.
    * ``min_constraints``, ``max_constraints`` (int, 1 and 3): constraints per generated task.
    * ``data_seed`` (int, 0): seed of the procedural task source.
    * ``critics`` (None, ``"paper"`` or dict): the critics of CORGI's critic-checked tasks
      (:mod:`~mulligan.envs.verifiers.critics`). ``None``: the offline rule and tool critics
      (clustering, mbpp, program); a dataset with a model-critic task (sentiment, style_transfer,
      story_generation, rationale_generation, paraphrase, common_gen) is then refused with an
      error naming this option. ``"paper"``: the paper's critics, their hub models loaded for the
      tasks the dataset holds. A dict maps task names to :class:`~mulligan.envs.verifiers.critics.Critic`
      objects (e.g. ``{"sentiment": SentimentCritic(model="my/classifier")}``); tasks it leaves out
      get the defaults.
    * ``critic_device`` (str or None): where ``critics="paper"`` runs its models (default: CUDA if available).

    ## Version History
    * v0: CORGI's tasks under CORGI's names (``corgi:*``); critiques joined as CORGI's critic joins them;
      CORGI's nine critic-checked tasks through ``critics``.
    """

    def __init__(
        self,
        dataset: str | Sequence[str] | None = None,
        *,
        mode: str = "strict",
        primed: bool = False,
        families: Sequence[str] | None = None,
        min_constraints: int = 1,
        max_constraints: int = 3,
        data_seed: int = 0,
        critics: str | Mapping[str, Critic] | None = None,
        critic_device: str | None = None,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if mode not in ("strict", "loose"):
            raise ValueError(f"mode must be 'strict' or 'loose', got {mode!r}")
        if not isinstance(primed, bool):
            raise ValueError(f"primed must be True or False, got {primed!r}")
        self.mode = mode
        self.primed = primed
        self.data_seed = check_data_seed(data_seed)
        self.config = ConstraintTaskConfig(
            families=FAMILIES if families is None else families if isinstance(families, str) else tuple(families),
            min_constraints=min_constraints,
            max_constraints=max_constraints,
        )
        if dataset is not None and families is not None:
            raise ValueError("families selects what the generator draws; it cannot filter a dataset")
        self.dataset_name = dataset
        self.tasks: list[dict[str, Any]] | None = None
        self._task_ids: list[str] = []
        if dataset is not None:
            specs = [dataset] if isinstance(dataset, str) else dataset
            if (
                not isinstance(specs, Sequence)
                or not specs
                or not all(isinstance(spec, str) and spec for spec in specs)
            ):
                raise ValueError(f"dataset must be a path, an 'hf:' name, a list of them, or None; got {dataset!r}")
            self.tasks = []
            for spec in specs:
                loaded = load_constraint_dataset(spec)
                name = dataset_name(spec, default_split=DEFAULT_SPLIT)
                self.tasks += loaded
                self._task_ids += [f"{name}-{i}" for i in range(len(loaded))]
            self.num_tasks = len(self.tasks)
        self.critics = self._build_critics(critics, critic_device)

    def _build_critics(self, critics: str | Mapping[str, Critic] | None, device: str | None) -> dict[str, Critic]:
        """The critic of every critic task the dataset holds (see the ``critics`` argument)."""
        if critics is not None and critics != "paper" and not isinstance(critics, Mapping):
            raise ValueError(f"critics must be None, 'paper' or a dict of task name to Critic, got {critics!r}")
        chosen: dict[str, Critic] = {}
        if isinstance(critics, Mapping):
            for name, critic in critics.items():
                cid = critic_id(str(name))
                if not isinstance(critic, Critic) or critic.constraint_id != cid:
                    raise ValueError(f"critics[{name!r}] must be a Critic for {cid}, got {critic!r}")
                chosen[cid] = critic
        needed = {cid for task in self.tasks or () for cid in task["instruction_id_list"] if cid in CRITIC_TASKS}
        for cid in sorted(needed - set(chosen)):
            if critics == "paper":
                chosen[cid] = paper_critic(cid, device=device)
            elif cid in MODEL_CRITIC_IDS:
                raise missing_critic_error(cid)
            else:
                chosen[cid] = default_critic(cid)
        return chosen

    def get_task(self, index: int) -> dict[str, Any]:
        """The task at ``index``: a dataset record, or the generator's task."""
        if self.tasks is not None:
            return self.tasks[index]
        return generate_constraint_task(self.config, self.data_seed, index)

    def task_from_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """An explicit record in IFEval's or CORGI's format (see :func:`normalize_task`).

        A critic task gets its offline default critic; a model-critic task without one configured
        is refused here, with the error naming the ``critics`` option.
        """
        task = normalize_task(record)
        for cid in task["instruction_id_list"]:
            if cid in CRITIC_TASKS and cid not in self.critics:
                critic = default_critic(cid)
                if critic is None:
                    raise missing_critic_error(cid)
                self.critics[cid] = critic
        return task

    def task_id(self, task: Mapping[str, Any], index: int | None) -> str:
        """``constraints-<seed>-<index>`` (generated), ``<file stem>-<index in that file>`` (datasets), else a hash."""
        if index is None:
            return stable_task_id("constraints", task)
        if self.tasks is None:
            return f"constraints-{self.data_seed}-{index}"
        return self._task_ids[index]

    def default_info(self) -> dict[str, Any]:
        """Constraint ids, per-constraint results and scores (empty before a step), and the primer if any.

        A task with a CORGI primer puts it in ``response_prefix`` on reset and on every step, so that
        a retry turn of :class:`~mulligan.envs.wrappers.RetryWithFeedback` (whose info is the failed
        step's) tells the agent what to open its next answer with: CORGI primes every retry with the
        same ``- Output:{suffix}`` as the first answer (``combine_messages``' suffix).
        """
        ids = list(self.task["instruction_id_list"]) if self.task else []
        info: dict[str, Any] = {"instruction_id_list": ids, "constraint_results": [], "constraint_scores": []}
        primer = self.task.get("primer") if self.task else None
        if primer:
            info["response_prefix"] = primer
        return info

    def _start(self, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return task["prompt"], {}

    def _step(self, action: str) -> StepOutcome:
        task = self.task
        results = check_constraints(
            task["instruction_id_list"], task["kwargs"], action, self.mode, primed=self.primed, critics=self.critics
        )
        scores = [r.score for r in results]
        score = sum(scores) / len(scores)
        success = all(r.holds for r in results)
        feedback = "" if success else combine_critiques(results)
        return StepOutcome(
            observation="Episode over.",
            reward=score,
            terminated=True,
            success=success,
            score=score,
            feedback=feedback,
            info={"constraint_results": [r.holds for r in results], "constraint_scores": scores},
        )
