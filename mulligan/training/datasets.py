"""Trajectories as Hugging Face datasets, and the one loader trainers read trajectory data through.

Export (``mulligan export``, :func:`to_dataset`, :func:`export_dataset`)
------------------------------------------------------------------------
:func:`to_dataset` turns trajectories into a ``datasets.Dataset`` with one row per episode and
columns a trainer can use without mulligan (:data:`COLUMNS` lists them):

* ``messages``: the conversation in chat format (``role``/``content``), the agent's system prompt
  first when it had one: what the model saw at its last turn when ``sees_full_history``;
* ``assistant_mask``: per message of ``messages``, whether it is an agent turn (learn it);
* ``context``: per turn, what the model saw before acting: ``null`` when it saw every message
  before its action, else half-open ``[start, stop)`` spans into ``messages`` (the system prompt's
  span ``[0, 1]`` included) whose concatenation is the prompt; ``sees_full_history`` says whether
  every turn is ``null`` (then ``messages`` + ``assistant_mask`` is the whole training sample);
* ``rewards`` (per turn), ``success``, ``score``, ``episode_return``, ``terminated``, ``truncated``;
* ``env_id``, ``task_id``, ``task`` (the task record as a JSON string, so rows from different envs
  share one schema), ``metadata`` (JSON string), ``agent``, ``seed``, ``final_observation``,
  ``agent_system_prompt``;
* ``turns``: per turn, the observation, the action, the env's ``info`` (JSON string) and, for model
  agents, the sampled ``completion_ids`` and their behaviour ``logprobs``, and
  ``context_rewritten`` (JSON string or ``null``): messages a wrapper agent (NAT's prompt, the
  sub-goal agents) showed in place of a kept message, by index into ``messages`` *without* the
  system prompt (see :attr:`mulligan.training.trajectory.Turn.context_rewritten`).

:func:`from_dataset` inverts it exactly: ``from_dataset(to_dataset(ts)) == ts`` for trajectories
read from a store. :func:`export_dataset` writes a dataset to a target spec:
``dir:PATH`` (``save_to_disk``) or ``hub:ORG/NAME`` (``push_to_hub``; needs a network and a token
with write access, from ``hf auth login`` or ``HF_TOKEN``).

Reading back (:func:`load_trajectory_source`)
---------------------------------------------
Trainers read trajectory data through :func:`load_trajectory_source`, whose spec is one of:

* a JSONL file written by :class:`~mulligan.training.trajectory.TrajectoryStore` (``mulligan collect``);
* a folder written by ``save_to_disk`` (``mulligan export --to dir:PATH``), with or without the
  ``dir:`` prefix;
* ``hf:NAME[:CONFIG][:SPLIT]``: a hub dataset, the grammar of :mod:`mulligan.envs.data` (the
  default split is ``train``), e.g. one pushed by ``mulligan export --to hub:ORG/NAME``;
* the released NATInstruct data (``hf:reasonwang/NATInstruct::gsm8k_positive`` or the official
  ``data/dataset/*/*_gpt-3.5_*.json`` files), converted by :func:`natinstruct_to_trajectory`.

A hub dataset made by ``datasets.load_dataset("json", data_files=store)`` on a store (rows in the
store's own form) is read too.

NATInstruct (NAT, arXiv 2402.11651)
-----------------------------------
The released trajectories (GPT-3.5 on GSM8K, HotpotQA and StrategyQA; the official repository's
``data/dataset/<task>/<task>_gpt-3.5_{positive,negative}.json`` and the hub splits
``{gsm8k,hotpotqa,strategyqa}_{positive,negative}``) are records
``{"id", "source", "info": {"reward", "gt", "pred", ...}, "conversations": [{"role", "content",
"loss"}, ...]}``: the conversation starts with the model's first ``Thought/Action``, alternates with
``Observation:`` user messages and ends with the observation after ``finish[...]``. The question is
not in the record: the official trainer joins it by ``id`` from the task's question file
(``data/dataset/gsm8k/train.json``, ``hotpotqa/train_random_8000.json``,
``strategyqa/train.jsonl``), which :func:`load_natinstruct` takes as ``questions``. A record that
carries a ``question`` field needs no question file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mulligan.envs.data import is_hub_spec, parse_hf_spec, read_json_records
from mulligan.training.trajectory import Trajectory, TrajectoryStore, Turn, to_jsonable

#: Prefix of a local dataset folder written by ``save_to_disk``.
DIR_PREFIX = "dir:"
#: Prefix of a Hugging Face hub export target.
HUB_PREFIX = "hub:"
#: The split of an ``hf:`` spec that names none.
DEFAULT_SPLIT = "train"
#: The columns of an exported trajectory dataset, in order.
COLUMNS = (
    "env_id",
    "task_id",
    "task",
    "messages",
    "assistant_mask",
    "context",
    "sees_full_history",
    "rewards",
    "success",
    "score",
    "episode_return",
    "terminated",
    "truncated",
    "agent",
    "seed",
    "metadata",
    "final_observation",
    "agent_system_prompt",
    "turns",
)
_SOURCE_GRAMMAR = (
    "a trajectory JSONL file, a dataset folder written by save_to_disk ('dir:PATH' or PATH), or "
    "'hf:NAME[:CONFIG][:SPLIT]'"
)
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def _import_datasets():
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - depends on the installed extras
        raise ImportError("trajectory datasets need the 'datasets' package: pip install 'mulligan[train]'") from err
    return datasets


def features():
    """The ``datasets.Features`` of an exported trajectory dataset (one schema for every env)."""
    datasets = _import_datasets()
    string, integer, real, boolean = (datasets.Value(t) for t in ("string", "int64", "float64", "bool"))
    # Python list literals mean "list of" in every datasets version (``Sequence`` of a dict does not).
    return datasets.Features(
        {
            "env_id": string,
            "task_id": string,
            "task": string,
            "messages": [{"role": string, "content": string}],
            "assistant_mask": [boolean],
            "context": [[[integer]]],
            "sees_full_history": boolean,
            "rewards": [real],
            "success": boolean,
            "score": real,
            "episode_return": real,
            "terminated": boolean,
            "truncated": boolean,
            "agent": string,
            "seed": integer,
            "metadata": string,
            "final_observation": string,
            "agent_system_prompt": string,
            "turns": [
                {
                    "observation": string,
                    "action": string,
                    "info": string,
                    "completion_ids": [integer],
                    "logprobs": [real],
                    "context_rewritten": string,
                }
            ],
        }
    )


# ------------------------------------------------------------------------------ row conversion
def trajectory_to_row(trajectory: Trajectory) -> dict[str, Any]:
    """One trajectory as a row of the exported dataset (see the module docstring for the columns)."""
    stored = trajectory.to_dict()
    system = (
        [] if trajectory.agent_system_prompt is None else [{"role": "system", "content": stored["agent_system_prompt"]}]
    )
    offset = len(system)
    messages = system + stored["messages"]
    context = []
    for turn in stored["turns"]:
        spans = turn["context"]
        context.append(None if spans is None else [[0, 1]] * offset + [[a + offset, b + offset] for a, b in spans])
    return {
        "env_id": stored["env_id"],
        "task_id": stored["task_id"],
        "task": stored["task"],
        "messages": messages,
        "assistant_mask": [False] * offset + [m["role"] == "assistant" for m in stored["messages"]],
        "context": context,
        "sees_full_history": trajectory.sees_full_history,
        "rewards": [turn["reward"] for turn in stored["turns"]],
        "success": stored["success"],
        "score": stored["score"],
        "episode_return": stored["episode_return"],
        "terminated": stored["terminated"],
        "truncated": stored["truncated"],
        "agent": stored["agent"],
        "seed": stored["seed"],
        "metadata": stored["metadata"],
        "final_observation": stored["final_observation"],
        "agent_system_prompt": stored["agent_system_prompt"],
        "turns": [
            {
                k: turn.get(k)
                for k in ("observation", "action", "info", "completion_ids", "logprobs", "context_rewritten")
            }
            for turn in stored["turns"]
        ],
    }


def row_to_trajectory(row: Mapping[str, Any]) -> Trajectory:
    """Inverse of :func:`trajectory_to_row`; a row in the store's own form is read too.

    Raises:
        ValueError: If the row is neither form, or its per-turn columns disagree in length.
    """
    if "rewards" not in row:
        if "turns" in row and "messages" in row:
            return Trajectory.from_dict(dict(row))  # a store row (datasets.load_dataset("json", ...))
        raise ValueError(f"not a trajectory row: expected the columns {list(COLUMNS)}, got {sorted(row)}")
    missing = [c for c in COLUMNS if c not in row and c != "sees_full_history"]
    if missing:
        raise ValueError(f"not a trajectory row: missing columns {missing}")
    turns, rewards, context = list(row["turns"]), list(row["rewards"]), list(row["context"])
    if not len(turns) == len(rewards) == len(context):
        raise ValueError(
            f"turns ({len(turns)}), rewards ({len(rewards)}) and context ({len(context)}) must have one entry per turn"
        )
    messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    system_prompt = row["agent_system_prompt"]
    offset = 0
    if system_prompt is not None:
        if not messages or messages[0] != {"role": "system", "content": system_prompt}:
            raise ValueError("the row has an agent_system_prompt but messages does not start with it")
        messages, offset = messages[1:], 1
    stored_turns = []
    for turn, reward, spans in zip(turns, rewards, context, strict=True):
        stored_turns.append({**turn, "reward": reward, "context": _unshift(spans, offset)})
    return Trajectory.from_dict(
        {
            **{k: row[k] for k in COLUMNS if k in row and k not in ("messages", "turns", "rewards", "context")},
            "messages": messages,
            "turns": stored_turns,
        }
    )


def _unshift(spans: Sequence[Sequence[int]] | None, offset: int) -> list[list[int]] | None:
    if spans is None:
        return None
    spans = [[int(a), int(b)] for a, b in spans]
    if offset:
        if not spans or spans[0] != [0, 1]:
            raise ValueError(f"a turn's context {spans} does not start with the system prompt's span [0, 1]")
        spans = [[a - offset, b - offset] for a, b in spans[1:]]
    return spans


def to_dataset(trajectories: Iterable[Trajectory]):
    """The trajectories as a ``datasets.Dataset`` with :func:`features` (one row per episode).

    Raises:
        ValueError: If there is no trajectory.
    """
    datasets = _import_datasets()
    rows = [trajectory_to_row(t) for t in trajectories]
    if not rows:
        raise ValueError("no trajectories to export")
    return datasets.Dataset.from_list(rows, features=features())


def from_dataset(dataset: Iterable[Mapping[str, Any]], *, where: str = "dataset") -> list[Trajectory]:
    """The trajectories of a dataset made by :func:`to_dataset` (or of store-form rows).

    Raises:
        ValueError: Naming ``where`` and the row that is not a trajectory.
    """
    trajectories = []
    for index, row in enumerate(dataset):
        try:
            trajectories.append(row_to_trajectory(row))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{where} row {index}: {err}") from None
    return trajectories


# ---------------------------------------------------------------------------------------- export
@dataclass(frozen=True)
class ExportTarget:
    """A parsed export target: ``dir:PATH`` or ``hub:ORG/NAME``.

    Attributes:
        kind: ``"dir"`` or ``"hub"``.
        location: The folder path, or the hub repository id.
    """

    kind: str
    location: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}"


def parse_export_target(spec: str) -> ExportTarget:
    """Parse ``dir:PATH`` or ``hub:ORG/NAME``.

    Raises:
        ValueError: For any other spec, with the grammar and an example.
    """
    grammar = "expected 'dir:PATH' (save_to_disk) or 'hub:ORG/NAME' (push_to_hub), e.g. --to dir:runs/teacher-ds"
    if spec.startswith(DIR_PREFIX):
        path = spec[len(DIR_PREFIX) :]
        if not path.strip():
            raise ValueError(f"bad export target {spec!r}: the folder is empty; {grammar}")
        return ExportTarget("dir", path)
    if spec.startswith(HUB_PREFIX):
        repo_id = spec[len(HUB_PREFIX) :]
        if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id:
            raise ValueError(
                f"bad export target {spec!r}: the hub repository must be 'ORG/NAME' (letters, digits, '.', '_', '-')"
            )
        return ExportTarget("hub", repo_id)
    raise ValueError(f"bad export target {spec!r}: {grammar}")


def _is_dataset_folder(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def check_export_target(target: ExportTarget, *, overwrite: bool = False) -> None:
    """Refuse a target that cannot be written, before any data is read.

    A ``dir`` target must not be a file, nor an existing non-empty folder unless ``overwrite``;
    with ``overwrite`` only a folder that ``save_to_disk`` wrote is replaced (nothing else is ever
    deleted). A ``hub`` target needs a Hugging Face token and the hub not set offline.

    Raises:
        FileExistsError: The folder exists and is not empty (pass ``overwrite``), or is not a
            dataset folder and ``overwrite`` would delete it.
        NotADirectoryError: The path is a file.
        ValueError: No token for the hub, or ``HF_HUB_OFFLINE`` is set.
    """
    if target.kind == "dir":
        path = Path(target.location)
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{target}: {path} is a file; choose a folder path")
        if path.is_dir() and any(path.iterdir()):
            if not overwrite:
                raise FileExistsError(
                    f"{target}: {path} exists and is not empty; pass --overwrite to replace it, or choose "
                    "another folder"
                )
            if not _is_dataset_folder(path):
                raise FileExistsError(
                    f"{target}: {path} is not a dataset folder written by save_to_disk; --overwrite only "
                    "replaces those, so remove it yourself or choose another folder"
                )
        return
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise ValueError(f"{target}: HF_HUB_OFFLINE is set; unset it to push to the hub")
    if get_token() is None:
        raise ValueError(
            f"{target}: no Hugging Face token; run `hf auth login` or set HF_TOKEN to a token with write access"
        )


def export_dataset(
    dataset,
    target: str | ExportTarget,
    *,
    overwrite: bool = False,
    private: bool = False,
    split: str = DEFAULT_SPLIT,
    progress: bool = True,
) -> str:
    """Write ``dataset`` to ``target`` (``dir:PATH``: ``save_to_disk``; ``hub:ORG/NAME``: ``push_to_hub``).

    A folder is written next to its final place and moved there once complete, so an interrupted
    export never leaves a half-written dataset behind (nor, with ``overwrite``, destroys the old one
    before the new one is whole). A hub push uploads ``split`` of the repository's default config
    (the repository is created, ``private`` if asked, when it does not exist).

    Args:
        dataset: A ``datasets.Dataset`` (e.g. from :func:`to_dataset`).
        target: The target spec, or a parsed :class:`ExportTarget`.
        overwrite: Replace an existing dataset folder.
        private: Create the hub repository as private.
        split: The hub split to write.
        progress: Show the ``datasets`` progress bars (off: nothing on stderr, for logs).

    Returns:
        Where the dataset went: the folder path, or the hub URL.

    Raises:
        See :func:`parse_export_target` and :func:`check_export_target`.
    """
    target = parse_export_target(target) if isinstance(target, str) else target
    check_export_target(target, overwrite=overwrite)
    bars = _import_datasets().utils
    shown = not bars.are_progress_bars_disabled()
    if shown and not progress:
        bars.disable_progress_bars()
    try:
        return _write(dataset, target, overwrite=overwrite, private=private, split=split)
    finally:
        if shown and not progress:
            bars.enable_progress_bars()


def _write(dataset, target: ExportTarget, *, overwrite: bool, private: bool, split: str) -> str:
    if target.kind == "hub":
        dataset.push_to_hub(
            target.location,
            split=split,
            private=True if private else None,  # None: the account's default visibility for a new repository
            commit_message="Trajectories exported by mulligan export",
        )
        return f"https://huggingface.co/datasets/{target.location}"
    path = Path(target.location)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    dataset.save_to_disk(str(staging))
    if path.exists():
        shutil.rmtree(path)  # an empty folder, or a dataset folder with overwrite (checked above)
    os.replace(staging, path)
    return str(path)


# ---------------------------------------------------------------------------------- reading back
def load_trajectory_source(
    spec: str | os.PathLike,
    *,
    skip_corrupt: bool = False,
    questions: str | os.PathLike | Mapping[str, str] | None = None,
    domain: str | None = None,
) -> list[Trajectory]:
    """Read trajectories from a JSONL store, a ``save_to_disk`` folder or a hub dataset.

    The spec grammar is in the module docstring. NATInstruct records (local JSON/JSONL or hub) are
    converted with :func:`natinstruct_to_trajectory`.

    Args:
        spec: Where the trajectories are.
        skip_corrupt: Skip malformed lines of a JSONL store (with a warning) instead of raising.
        questions: NATInstruct only: the question file (a ``.json``/``.jsonl`` path or ``hf:`` spec
            of records with ``id`` and ``question``), or a mapping id -> question.
        domain: NATInstruct only: ``gsm8k``, ``hotpotqa`` or ``strategyqa`` (default: read from
            the spec, e.g. ``gsm8k_positive``).

    Returns:
        The trajectories, in source order.

    Raises:
        FileNotFoundError: If a local spec names nothing.
        ValueError: If the source holds something other than trajectories (the message names the
            row or line), or a NATInstruct record's question cannot be found.
    """
    text = os.fspath(spec)
    if isinstance(text, str) and text.startswith(HUB_PREFIX):
        raise ValueError(f"{text!r} is an export target; read a pushed dataset back as 'hf:{text[len(HUB_PREFIX) :]}'")
    if isinstance(text, str) and is_hub_spec(text):
        hub = parse_hf_spec(text, default_split=DEFAULT_SPLIT)
        datasets = _import_datasets()
        dataset = datasets.load_dataset(hub.name, hub.config, split=hub.split)
        return _from_rows(dataset, str(hub), text, skip_corrupt=skip_corrupt, questions=questions, domain=domain)
    path = Path(text[len(DIR_PREFIX) :] if text.startswith(DIR_PREFIX) else text)
    if path.is_dir():
        return _from_rows(
            _load_folder(path), str(path), text, skip_corrupt=skip_corrupt, questions=questions, domain=domain
        )
    if not path.is_file():
        raise FileNotFoundError(f"no trajectory source at {path}; pass {_SOURCE_GRAMMAR}")
    if _looks_like_store(path):
        return TrajectoryStore(path, skip_corrupt=skip_corrupt).load()
    rows = [record for _, record in read_json_records(path)]
    return _from_rows(rows, str(path), text, skip_corrupt=skip_corrupt, questions=questions, domain=domain)


def _looks_like_store(path: Path) -> bool:
    """Whether a local file is a trajectory store (its first non-blank line is a trajectory or unreadable).

    A file that starts with ``[`` is one JSON list (NATInstruct's official files), never a store.
    """
    with open(path, "rb") as handle:
        for raw in handle:
            if raw.lstrip().startswith(b"["):
                return False
            if raw.strip():
                try:
                    first = json.loads(raw.decode("utf-8", "surrogatepass"))
                except ValueError:
                    return True  # let the store report the line
                return isinstance(first, dict) and "turns" in first and "messages" in first
    return True  # empty: the store says so


def _load_folder(path: Path):
    if not _is_dataset_folder(path):
        raise ValueError(f"{path} is a folder but not a dataset written by save_to_disk; pass {_SOURCE_GRAMMAR}")
    datasets = _import_datasets()
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if DEFAULT_SPLIT in loaded:
            return loaded[DEFAULT_SPLIT]
        if len(loaded) == 1:
            return next(iter(loaded.values()))
        raise ValueError(f"{path} holds the splits {sorted(loaded)}; save the one to read on its own")
    return loaded


def _from_rows(rows, where: str, spec: str, *, skip_corrupt: bool, questions, domain) -> list[Trajectory]:
    if hasattr(rows, "column_names"):
        columns = set(rows.column_names)
    else:
        bad = next((k for k, row in enumerate(rows) if not isinstance(row, Mapping)), None)
        if bad is not None:
            raise ValueError(f"{where}: record {bad} is a {type(rows[bad]).__name__}, not a JSON object")
        columns = set(rows[0]) if rows else set()
    if not rows or not columns:
        raise ValueError(f"{where}: no trajectories")
    if is_natinstruct_record(columns):
        return load_natinstruct(rows, questions=questions, domain=domain or infer_domain(spec), where=where)
    if "turns" not in columns or "messages" not in columns:
        raise ValueError(
            f"{where}: not trajectories (columns {sorted(columns)}); expected an export of mulligan "
            "(mulligan export), a trajectory store, or NATInstruct records"
        )
    if not skip_corrupt:
        return from_dataset(rows, where=where)
    trajectories = []
    for index, row in enumerate(rows):
        try:
            trajectories.append(row_to_trajectory(row))
        except (ValueError, KeyError, TypeError) as err:
            warnings.warn(f"{where} row {index}: not a trajectory ({err}); skipped", stacklevel=3)
    return trajectories


# ------------------------------------------------------------------------------------- NATInstruct
#: NATInstruct's tasks and the mulligan env each one corresponds to.
NATINSTRUCT_ENVS = {
    "gsm8k": "Mulligan/MathReAct-v0",
    "hotpotqa": "Mulligan/HotpotQA-v0",
    "strategyqa": "Mulligan/StrategyQA-v0",
}
#: The hub dataset of the released NAT trajectories.
NATINSTRUCT_HUB = "reasonwang/NATInstruct"
_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "ai": "assistant"}


def is_natinstruct_record(columns: Iterable[str]) -> bool:
    """Whether records with these fields are NATInstruct's (``conversations`` and ``info``)."""
    columns = set(columns)
    return {"conversations", "info"} <= columns and "turns" not in columns


def infer_domain(spec: str) -> str | None:
    """The NATInstruct task a spec names (``gsm8k``, ``hotpotqa``, ``strategyqa``), or ``None``."""
    lowered = spec.lower()
    found = [name for name in NATINSTRUCT_ENVS if name in lowered]
    return found[0] if len(found) == 1 else None


def natinstruct_to_trajectory(
    record: Mapping[str, Any], *, domain: str, question: str | None = None, task: Mapping[str, Any] | None = None
) -> Trajectory:
    """One NATInstruct record as a :class:`Trajectory` that ``mulligan train nat`` trains on.

    The conversation is opened by a user message ``"Question: {question}"`` (the official plain
    question prompt; NAT's trainer replaces this first user message with its own opening, so the
    positive or negative instruction is chosen at training time, as the official trainer does).
    Each assistant message is one turn, observed after the message before it; the observation
    after the last action is ``final_observation``. The record's outcome ``info["reward"]`` is
    ``success`` and the last turn's reward (1 or 0; the data has no per-step rewards); ``score`` is
    HotpotQA's F1 where the record has one (NAT's fine-grained variants read it), else the reward.
    ``terminated`` is whether the agent answered (the official ``'pred' in info``). The record's
    ``info`` is the last turn's ``info``; ``id`` and ``source`` go to ``metadata``. A record with
    an empty conversation (a few negatives: the model never produced a valid action) has no turns.

    Args:
        record: ``{"id", "info", "conversations", ...}``; messages as ``role``/``content`` or the
            official loader's alternative ``from``/``value``.
        domain: ``gsm8k``, ``hotpotqa`` or ``strategyqa``.
        question: The question (default: the record's ``question`` field).
        task: The question file's record, kept as the trajectory's task (default: ``{"question"}``).

    Raises:
        ValueError: On an unknown domain, a record without question, conversation or outcome, or a
            message whose ``loss`` flag is not its role's (only the model's messages are learned).
    """
    if domain not in NATINSTRUCT_ENVS:
        raise ValueError(f"NATInstruct domain must be one of {sorted(NATINSTRUCT_ENVS)}, got {domain!r}")
    info = record.get("info")
    if not isinstance(info, Mapping) or info.get("reward") is None:
        raise ValueError("a NATInstruct record needs 'info' with the outcome 'reward'")
    conversation = record.get("conversations")
    if not isinstance(conversation, list):
        raise ValueError("a NATInstruct record needs a 'conversations' list")
    question = question if question is not None else record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(
            f"NATInstruct record {record.get('id')!r} has no question: pass the task's question file "
            "(the official data/dataset/<task>/train.json(l)) as questions"
        )
    question = question.strip()
    messages = [{"role": "user", "content": f"Question: {question}"}]
    for message in conversation:
        role_key, content_key = ("role", "content") if "role" in message else ("from", "value")
        role = _ROLES.get(str(message.get(role_key)).lower())
        content = message.get(content_key)
        if role is None or not isinstance(content, str):
            raise ValueError(f"a NATInstruct message needs a user/assistant role and string content, got {message!r}")
        if "loss" in message and bool(message["loss"]) != (role == "assistant"):
            raise ValueError(
                f"a NATInstruct {role} message has loss={message['loss']}: only the model's messages can be "
                "learned here"
            )
        messages.append({"role": role, "content": content})
    final_observation = ""
    if messages[-1]["role"] == "user" and len(messages) > 1:
        final_observation = messages.pop()["content"]
    # A hub (parquet) row has every key any record has, None where a record lacks it: drop those.
    official = {k: v for k, v in to_jsonable(dict(info)).items() if v is not None}
    success = bool(official["reward"])
    f1 = official.get("f1")
    score = float(f1) if isinstance(f1, int | float) and not isinstance(f1, bool) else float(success)
    answered = "pred" in official
    turns = []
    positions = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
    for number, position in enumerate(positions):
        before = messages[position - 1]
        last = number == len(positions) - 1
        turns.append(
            Turn(
                observation=before["content"] if before["role"] == "user" else "",
                action=messages[position]["content"],
                reward=float(success) if last else 0.0,
                info={**official, "success": success, "score": score} if last else {},
            )
        )
    record_id = record.get("id")
    return Trajectory(
        env_id=NATINSTRUCT_ENVS[domain],
        task_id=f"natinstruct-{domain}-{record_id}",
        task=dict(task) if task is not None else {"question": question},
        messages=messages,
        turns=turns,
        success=success,
        score=score,
        episode_return=float(success) if turns else 0.0,
        terminated=answered,
        truncated=not answered,
        agent="gpt-3.5 (NATInstruct)",
        metadata={"natinstruct_id": record_id, "natinstruct_source": record.get("source")},
        final_observation=final_observation,
    )


def load_questions(spec: str | os.PathLike | Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The question records of a question file, by ``str(id)``.

    Args:
        spec: A ``.json``/``.jsonl`` path or ``hf:`` spec of records with ``id`` and ``question``
            (the official ``data/dataset/gsm8k/train.json`` ...), or a mapping id -> question.

    Raises:
        ValueError: If a record lacks ``id`` or ``question``.
    """
    if isinstance(spec, Mapping):
        return {str(k): {"question": v} for k, v in spec.items()}
    from mulligan.envs.data import load_records

    def check(record: Mapping[str, Any]) -> dict[str, Any]:
        if "id" not in record or not isinstance(record.get("question"), str):
            raise ValueError(f"a question record needs 'id' and a string 'question', got fields {sorted(record)}")
        return dict(record)

    return {str(r["id"]): r for r in load_records(spec, default_split=DEFAULT_SPLIT, normalize=check)}


def load_natinstruct(
    records: str | os.PathLike | Iterable[Mapping[str, Any]],
    *,
    questions: str | os.PathLike | Mapping[str, str] | None = None,
    domain: str | None = None,
    where: str | None = None,
) -> list[Trajectory]:
    """NATInstruct records (a spec, or records already read) as trajectories for ``mulligan train nat``.

    Args:
        records: ``hf:reasonwang/NATInstruct::gsm8k_positive``, an official JSON file, or records.
        questions: The question file joined by ``id`` (see :func:`load_questions`); not needed
            when every record carries ``question``.
        domain: ``gsm8k``, ``hotpotqa`` or ``strategyqa`` (default: read from the spec).
        where: A name for the source in error messages.

    Raises:
        ValueError: Naming the record (by position and ``id``) that cannot be converted.
    """
    if isinstance(records, str | os.PathLike):
        spec = os.fspath(records)
        where = where or spec
        domain = domain or infer_domain(spec)
        if is_hub_spec(spec):
            hub = parse_hf_spec(spec, default_split=DEFAULT_SPLIT)
            records = _import_datasets().load_dataset(hub.name, hub.config, split=hub.split)
        else:
            if not os.path.isfile(spec):
                raise FileNotFoundError(f"no NATInstruct file at {spec}")
            records = [record for _, record in read_json_records(spec)]
    where = where or "NATInstruct records"
    if domain is None:
        raise ValueError(f"{where}: say which NATInstruct task this is (domain gsm8k, hotpotqa or strategyqa)")
    by_id = load_questions(questions) if questions is not None else {}
    trajectories = []
    for index, record in enumerate(records):
        found = by_id.get(str(record.get("id")))
        try:
            trajectories.append(
                natinstruct_to_trajectory(
                    record, domain=domain, question=found["question"] if found else None, task=found
                )
            )
        except ValueError as err:
            raise ValueError(f"{where} record {index} (id {record.get('id')!r}): {err}") from None
    return trajectories


__all__ = [
    "COLUMNS",
    "NATINSTRUCT_ENVS",
    "NATINSTRUCT_HUB",
    "ExportTarget",
    "check_export_target",
    "export_dataset",
    "features",
    "from_dataset",
    "infer_domain",
    "is_natinstruct_record",
    "load_natinstruct",
    "load_questions",
    "load_trajectory_source",
    "natinstruct_to_trajectory",
    "parse_export_target",
    "row_to_trajectory",
    "to_dataset",
    "trajectory_to_row",
]
