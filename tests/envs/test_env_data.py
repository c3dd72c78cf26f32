"""Dataset specs and loading shared by every env (mulligan.envs.data): one grammar, errors that point."""

from __future__ import annotations

import json

import gymnasium
import pytest

import mulligan  # noqa: F401  (registers the ids)
from mulligan.envs.data import (
    check_data_seed,
    dataset_name,
    load_records,
    parse_hf_spec,
    read_json_records,
)

GSM8K_RECORD = {"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}
QA_RECORD = {"question": "Q?", "answer": "A", "context": [["T", ["s"]]], "supporting_facts": [["T", 0]]}


def test_hub_specs_mean_the_same_in_every_env():
    spec = parse_hf_spec("hf:org/data:cfg:test", default_split="train")
    assert (spec.name, spec.config, spec.split) == ("org/data", "cfg", "test")
    spec = parse_hf_spec("hf:org/data:cfg", default_split="validation")
    assert (spec.name, spec.config, spec.split) == ("org/data", "cfg", "validation")
    spec = parse_hf_spec("hf:org/data::test", default_split="train")
    assert (spec.name, spec.config, spec.split) == ("org/data", None, "test")
    spec = parse_hf_spec("hf:org/data", default_split="train")
    assert (spec.name, spec.config, spec.split) == ("org/data", None, "train")
    assert str(parse_hf_spec("hf:org/data:cfg", default_split="train")) == "hf:org/data:cfg:train"
    assert dataset_name("hf:org/data::test", default_split="train") == "org/data::test"
    assert dataset_name("/some/where/gsm8k_test.jsonl", default_split="train") == "gsm8k_test"
    with pytest.raises(ValueError, match=r"hf:org/data::validation"):
        parse_hf_spec("hf:org/data:validation", default_split="train")
    for bad in ("org/data", "hf:", "hf::x", "hf:a:b:", "hf:a:b:c:d"):
        with pytest.raises(ValueError):
            parse_hf_spec(bad, default_split="train")


def test_json_lists_and_json_lines_give_records_with_their_lines(tmp_path):
    lines = tmp_path / "data.jsonl"
    lines.write_text(json.dumps({"a": 1}) + "\n\n" + json.dumps({"a": 2}) + "\n")
    assert read_json_records(lines) == [(1, {"a": 1}), (3, {"a": 2})]
    as_list = tmp_path / "data.json"
    as_list.write_text('[\n  {"a": 1},\n\n  {"a": 2,\n   "b": [1, 2]}\n]\n')
    assert read_json_records(as_list) == [(2, {"a": 1}), (4, {"a": 2, "b": [1, 2]})]
    (tmp_path / "empty_list.json").write_text("[]")
    assert read_json_records(tmp_path / "empty_list.json") == []
    with_bom = tmp_path / "bom.jsonl"
    with_bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"a": 1}).encode() + b"\n")
    assert load_records(with_bom, default_split="train") == [{"a": 1}]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"a": 1}\n{"a": 2\n', r"bad:2: not a JSON object"),
        (b'{"a": 1}\n[1, 2]\n', r"bad:2: expected a JSON object"),
        (b'[{"a": 1},\n {"a": 2}\n {"a": 3}]', r"bad:3: expected ',' or '\]'"),
        (b'[{"a": 1},\n {"a": }]', r"bad:2: not valid JSON"),
        (b'[{"a": 1}] trailing', r"bad:1: unexpected text after the JSON list"),
        (b'{"a": 1}\n{"kwargs": [{"n": Infinity}]}\n', r"bad:2: Infinity is not a JSON value"),
        (b'[{"a": 1},\n {"a": NaN}]', r"bad:2: NaN is not a JSON value"),
        (b"\n\n", r"bad: no records"),
        (b'{"a": "caf\xe9"}\n', r"bad:1: not UTF-8 text \(byte 0xe9"),
        (b'{"a": 1}\n{"a": "\xff"}\n', r"bad:2: not UTF-8 text"),
        ("\ufeff".encode("utf-16-le") + '{"a": 1}\n'.encode("utf-16-le"), r"bad:1: the file is UTF-16"),
        ('{"a": 1}\n'.encode("utf-16"), r"bad:1: the file is UTF-16"),
        ('{"a": 1}\n{"b": 2}\n'.encode("utf-16-be"), r"bad:1: the file is UTF-16"),  # no byte-order mark
        (b'{"a": 1}\n{"a": 2}\n\x00\x01\x02\x89PNG', r"bad:3: binary data"),
    ],
)
def test_unreadable_files_are_named_with_the_line(tmp_path, content, message):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_records(path, default_split="train")


def test_normalisers_errors_are_located(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"x": 1}\n{"y": 2}\n')

    def normalize(record):
        if "x" not in record:
            raise ValueError("needs 'x'")
        return dict(record)

    with pytest.raises(ValueError, match=r"records\.jsonl:2: needs 'x'"):
        load_records(path, default_split="train", normalize=normalize)
    with pytest.raises(ValueError, match="not a file"):
        load_records(tmp_path / "missing.jsonl", default_split="train")
    with pytest.raises(ValueError, match="not a file"):
        load_records(tmp_path, default_split="train")


@pytest.mark.parametrize(
    ("env_id", "record"),
    [("Mulligan/Math-v0", GSM8K_RECORD), ("Mulligan/MathReAct-v0", GSM8K_RECORD), ("Mulligan/HotpotQA-v0", QA_RECORD)],
)
def test_envs_load_json_lists_and_name_bad_encodings(tmp_path, env_id, record):
    as_list = tmp_path / "tasks.json"
    as_list.write_text(json.dumps([record, record], indent=1))
    assert gymnasium.make(env_id, dataset=str(as_list)).unwrapped.num_tasks == 2
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_text(json.dumps(record) + "\n", encoding="utf-16")
    with pytest.raises(ValueError, match=r"utf16\.jsonl:1: the file is UTF-16"):
        gymnasium.make(env_id, dataset=str(utf16))
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(
        json.dumps(record).encode()
        + b"\n"
        + json.dumps({**record, "question": "Caf\u00e9?"}, ensure_ascii=False).encode("latin-1")
        + b"\n"
    )
    with pytest.raises(ValueError, match=r"latin1\.jsonl:2: not UTF-8"):
        gymnasium.make(env_id, dataset=str(latin1))


@pytest.mark.parametrize(
    ("final_answer", "message"),
    [("1}", "unbalanced braces"), ("{1", "unbalanced braces"), ("9" * 1001, "more than the verifier reads")],
)
def test_math_answers_that_can_never_be_matched_are_refused_at_load(tmp_path, final_answer, message):
    path = tmp_path / "math.jsonl"
    path.write_text(json.dumps(GSM8K_RECORD) + "\n" + json.dumps({**GSM8K_RECORD, "final_answer": final_answer}) + "\n")
    with pytest.raises(ValueError, match=rf"math\.jsonl:2: .*{message}"):
        gymnasium.make("Mulligan/Math-v0", dataset=str(path))


def test_data_seed_is_checked_once_for_every_env():
    assert check_data_seed(3) == 3
    for bad in (-1, True, 1.5, "0"):
        with pytest.raises(ValueError, match="data_seed"):
            check_data_seed(bad)
    for env_id in ("Mulligan/Math-v0", "Mulligan/HotpotQA-v0", "Mulligan/Echo-v0"):
        with pytest.raises(ValueError, match="data_seed must be a non-negative int"):
            gymnasium.make(env_id, data_seed=-1)
