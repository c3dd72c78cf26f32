"""Where dataset records come from, for every env: one spec grammar, one loader, errors that point.

Every env that reads data (``Mulligan/Math-v0``, ``MathReAct-v0``, ``HotpotQA-v0``,
``StrategyQA-v0``, ``Constraints-v0``) takes a ``dataset`` spec with the same grammar:

* a local file, ``path/to/file.jsonl`` or ``.json``: JSON Lines (one object a line), or one JSON
  list of objects (the official HotpotQA files). The format is read from the content (a file that
  starts with ``[`` is a list), not from the extension. A file is its own split.
* ``hf:NAME[:CONFIG][:SPLIT]``: a Hugging Face hub dataset (needs ``datasets`` and a network).
  The optional parts are positional: ``hf:NAME:CONFIG`` names a config (split: the env's default),
  ``hf:NAME:CONFIG:SPLIT`` both, and ``hf:NAME::SPLIT`` a split without a config. So
  ``hf:openai/gsm8k:main:test`` and ``hf:hotpotqa/hotpot_qa:distractor:validation`` mean what they
  say in every env, and ``hf:google/IFEval`` takes the env's default split. Because a config named
  like a split is almost always a typo for ``hf:NAME::SPLIT``, ``hf:NAME:test`` is refused with that fix.

Each env states its default split (``Math-v0``: ``train``; ``HotpotQA-v0``/``StrategyQA-v0``:
``validation``, as HotpotQA's test split has no answers; ``Constraints-v0``: ``train``, IFEval's
only split) and only normalises records: :func:`load_records` takes the env's ``normalize``
function and reports a bad record by file and line (or hub row), at load time.

Files are read as UTF-8 (a UTF-8 byte-order mark is allowed). UTF-16 files, binary files and
invalid UTF-8 are refused with the file, the line and the fix.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: Prefix of a Hugging Face hub dataset spec.
HF_PREFIX = "hf:"
#: Names that are splits, not configs, in ``hf:NAME:X`` (see the module docstring).
_SPLIT_NAMES = frozenset({"train", "test", "validation", "valid", "dev", "eval"})
_JSON_SPACE = re.compile(r"[ \t\r\n]*")
_GRAMMAR = "a .json/.jsonl path or 'hf:NAME[:CONFIG][:SPLIT]'"

Normalizer = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class HubSpec:
    """A parsed ``hf:NAME[:CONFIG][:SPLIT]`` spec.

    Attributes:
        name: The dataset's hub name, e.g. ``"openai/gsm8k"``.
        config: The config (subset), or ``None``.
        split: The split (the env's default when the spec names none).
    """

    name: str
    config: str | None
    split: str

    def __str__(self) -> str:
        return f"{HF_PREFIX}{self.name}:{self.config or ''}:{self.split}"


def is_hub_spec(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` names a hub dataset (``hf:...``) rather than a local file."""
    return isinstance(spec, str) and spec.startswith(HF_PREFIX)


def parse_hf_spec(spec: str, *, default_split: str) -> HubSpec:
    """Parse ``hf:NAME[:CONFIG][:SPLIT]``; see the module docstring.

    Args:
        spec: The spec.
        default_split: The split when the spec names none.

    Raises:
        ValueError: if the spec has no name, more than three parts, or names a split where the
            config goes (``hf:NAME:test``; write ``hf:NAME::test``).
    """
    if not is_hub_spec(spec):
        raise ValueError(f"a hub dataset spec starts with 'hf:', got {spec!r}")
    parts = spec[len(HF_PREFIX) :].split(":")
    if not parts[0] or len(parts) > 3 or (len(parts) == 3 and not parts[2]):
        raise ValueError(
            f"bad hub dataset spec {spec!r}: expected 'hf:NAME[:CONFIG][:SPLIT]', e.g. 'hf:openai/gsm8k:main:test'"
        )
    name = parts[0]
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) == 3 else default_split
    if len(parts) == 2 and config is not None and config.lower() in _SPLIT_NAMES:
        raise ValueError(
            f"{spec!r} names {config!r} as the dataset's config; for the {config!r} split write "
            f"'hf:{name}::{config}' (the grammar is 'hf:NAME[:CONFIG][:SPLIT]')"
        )
    return HubSpec(name, config, split)


#: Share of all procedural problem signatures held out for the test splits (see :func:`split_of_signature`).
HELD_OUT_FRACTION = 0.2


def split_of_signature(signature: str, *, test_fraction: float = HELD_OUT_FRACTION) -> str:
    """The procedural split a problem's content belongs to: ``"test"`` or ``"train"``.

    A share ``test_fraction`` of all signatures, chosen by a hash of the signature alone (not the
    seed, not the index), belongs to the test split. So procedural train and test splits never
    share a problem, whatever the seeds and indices, even when the generator's content space is small.

    Args:
        signature: The problem's content without its wording, e.g.
            :func:`mulligan.envs.generators.math.math_task_signature`.
        test_fraction: The share of signatures in the test split.
    """
    digest = hashlib.sha1(signature.encode("utf-8", "surrogatepass")).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 10_000 < test_fraction * 10_000 else "train"


def check_data_seed(data_seed: Any) -> int:
    """Validate a procedural source's ``data_seed`` (a non-negative int; bools are refused).

    Raises:
        ValueError: saying what was given.
    """
    if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
        raise ValueError(f"data_seed must be a non-negative int, got {data_seed!r}")
    return int(data_seed)


def dataset_name(spec: str | os.PathLike, *, default_split: str) -> str:
    """A short, stable name for a dataset spec (for task ids): the file's stem, or the hub spec."""
    if is_hub_spec(spec):
        return str(parse_hf_spec(str(spec), default_split=default_split))[len(HF_PREFIX) :]
    return os.path.splitext(os.path.basename(os.fspath(spec)))[0]


def load_records(
    spec: str | os.PathLike,
    *,
    default_split: str,
    normalize: Normalizer | None = None,
) -> list[dict[str, Any]]:
    """Load a dataset's records from a local file or the hub, normalised by the env's function.

    Args:
        spec: A .json/.jsonl path or ``hf:NAME[:CONFIG][:SPLIT]`` (see the module docstring).
        default_split: The split of a hub spec that names none.
        normalize: The env's record normaliser; it raises ``ValueError`` saying what is wrong,
            and the message is prefixed with where the record is (``path:line:`` or the hub row).

    Returns:
        The records, in file order.

    Raises:
        ValueError: for a missing file, an unreadable or empty one, a line that is not a JSON
            object, or a record the normaliser refuses; the message names the file and line.
    """
    normalize = normalize or dict
    if is_hub_spec(spec):
        hub = parse_hf_spec(str(spec), default_split=default_split)
        located: list[tuple[str, Any]] = [(f"{hub} row {i}", row) for i, row in enumerate(_load_hub_rows(hub))]
        where = str(hub)
    else:
        path = os.fspath(spec)
        if not os.path.isfile(path):
            raise ValueError(f"dataset {path!r} is not a file (it does not exist or is a folder); pass {_GRAMMAR}")
        located = [(f"{path}:{line}", record) for line, record in read_json_records(path)]
        where = path
    records = []
    for location, record in located:
        if not isinstance(record, Mapping):
            raise ValueError(f"{location}: expected a JSON object (one record), got {type(record).__name__}")
        try:
            records.append(normalize(record))
        except ValueError as err:
            raise ValueError(f"{location}: {err}") from None
    if not records:
        raise ValueError(f"{where}: no records")
    return records


class _NonStandardConstantError(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity`` in a data file: not JSON (RFC 8259), and never a valid setting."""


def _refuse_constant(name: str) -> Any:
    raise _NonStandardConstantError(name)


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_refuse_constant)


def read_json_records(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """Read a JSON list or a JSON Lines file as ``(line number, value)`` pairs.

    A file whose first non-blank character is ``[`` is one JSON list (each element is reported at
    the line where it starts); otherwise each non-blank line is one JSON value. ``NaN`` and
    ``Infinity``, which Python's ``json`` accepts but JSON does not, are refused.

    Raises:
        ValueError: naming the file and line of the first problem (not UTF-8, UTF-16, binary,
            invalid JSON).
    """
    text = read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        return _json_list(text, path)
    values = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            values.append((number, _loads(line)))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON object ({err.msg}, column {err.colno})") from None
        except _NonStandardConstantError as err:
            raise ValueError(f"{path}:{number}: {err} is not a JSON value; write a number or a string") from None
    return values


def read_text(path: str | os.PathLike) -> str:
    """A data file's text, decoded as UTF-8, or a ``ValueError`` that says why it is not UTF-8 text.

    UTF-16 (with or without a byte-order mark) and binary files (NUL bytes) are named as such; an
    invalid UTF-8 byte is reported with its line. A UTF-8 byte-order mark is dropped.
    """
    with open(path, "rb") as handle:
        raw = handle.read()
    head = raw[:4096]
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or _looks_utf16(head):
        raise ValueError(
            f"{path}:1: the file is UTF-16 text; save it as UTF-8 (e.g. 'iconv -f UTF-16 -t UTF-8 in > out')"
        )
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise ValueError(f"{path}:{line}: binary data (a NUL byte at offset {nul}); expected UTF-8 JSON or JSONL text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "re-encode the file as UTF-8"
        ) from None


def _looks_utf16(head: bytes) -> bool:
    # ASCII text in UTF-16 without a byte-order mark has a NUL in every other byte.
    if len(head) < 4:
        return False
    even, odd = head[0::2], head[1::2]
    return odd.count(0) > 0.9 * len(odd) or even.count(0) > 0.9 * len(even)


def _json_list(text: str, path: str | os.PathLike) -> list[tuple[int, Any]]:
    """Parse a JSON list element by element, keeping the line where each element starts."""
    decoder = json.JSONDecoder(parse_constant=_refuse_constant)
    position = text.index("[") + 1
    values: list[tuple[int, Any]] = []
    line, counted = 1, 0

    def line_at(offset: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, offset)
        counted = offset
        return line

    def skip_space(offset: int) -> int:
        return _JSON_SPACE.match(text, offset).end()

    position = skip_space(position)
    if position < len(text) and text[position] == "]":
        return _expect_end(text, position + 1, path, line_at, values)
    while True:
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None
        except _NonStandardConstantError as err:
            raise ValueError(
                f"{path}:{line_at(position)}: {err} is not a JSON value (in the record starting on this line); "
                "write a number or a string"
            ) from None
        values.append((line_at(position), value))
        position = skip_space(end)
        if position < len(text) and text[position] == ",":
            position = skip_space(position + 1)
            continue
        if position < len(text) and text[position] == "]":
            return _expect_end(text, position + 1, path, line_at, values)
        raise ValueError(f"{path}:{line_at(min(position, len(text)))}: expected ',' or ']' in the JSON list")


def _expect_end(
    text: str, position: int, path: str | os.PathLike, line_at: Callable[[int], int], values: list
) -> list[tuple[int, Any]]:
    if text[position:].strip():
        offset = position + len(text[position:]) - len(text[position:].lstrip())
        raise ValueError(f"{path}:{line_at(offset)}: unexpected text after the JSON list")
    return values


def _load_hub_rows(hub: HubSpec) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - depends on the installed extras
        raise ImportError("hf: datasets need the 'datasets' package: pip install 'mulligan[train]'") from err
    rows = datasets.load_dataset(hub.name, hub.config, split=hub.split)
    return [dict(row) for row in rows]
