"""Trajectory records and the crash-safe JSONL store."""

import json

import numpy as np
import pytest

from mulligan.training.trajectory import Trajectory, TrajectoryStore, Turn


def make_trajectory(task_id="t-0", sample=0, success=True):
    turns = [
        Turn("Repeat exactly: apple", "apple", 1.0, {"success": True, "score": np.float64(1.0), "n": np.int64(3)},
             prompt_ids=[1, 2], completion_ids=[3, 4], logprobs=[-0.1, -0.2]),
    ]
    return Trajectory(
        env_id="Mulligan/Echo-v0", task_id=task_id, task={"target": "apple", "tags": ("a", "b")},
        messages=[{"role": "user", "content": "Repeat exactly: apple"}, {"role": "assistant", "content": "apple"}],
        turns=turns, success=success, score=1.0, episode_return=1.0, terminated=True, truncated=False,
        agent="oracle", seed=7, metadata={"sample_index": sample}, final_observation="Episode over.",
    )


def test_round_trip_through_dict_and_json():
    trajectory = make_trajectory()
    row = json.loads(json.dumps(trajectory.to_dict()))
    back = Trajectory.from_dict(row)
    assert back.task == {"target": "apple", "tags": ["a", "b"]}
    assert back.turns[0].info == {"success": True, "score": 1.0, "n": 3}
    assert back.turns[0].completion_ids == [3, 4]
    assert back.rewards == [1.0]
    assert back.key == ("Mulligan/Echo-v0", "t-0", 0)
    assert back.to_dict() == trajectory.to_dict()


def test_store_appends_and_reads_back(tmp_path):
    store = TrajectoryStore(tmp_path / "sub" / "data.jsonl")
    assert store.load() == [] and store.keys() == set()
    store.append(make_trajectory("t-0"))
    store.append(make_trajectory("t-1", success=False))
    loaded = TrajectoryStore(store.path).load()
    assert [t.task_id for t in loaded] == ["t-0", "t-1"]
    assert [t.success for t in loaded] == [True, False]
    assert store.keys() == {("Mulligan/Echo-v0", "t-0", 0), ("Mulligan/Echo-v0", "t-1", 0)}


def test_partial_last_line_is_ignored_then_cut_on_append(tmp_path):
    path = tmp_path / "data.jsonl"
    store = TrajectoryStore(path)
    store.append(make_trajectory("t-0"))
    whole = path.read_bytes()
    # A crash in the middle of writing the second line.
    line = json.dumps(make_trajectory("t-1").to_dict()).encode()
    path.write_bytes(whole + line[: len(line) // 2])
    reopened = TrajectoryStore(path)
    assert [t.task_id for t in reopened] == ["t-0"]
    reopened.append(make_trajectory("t-2"))
    assert [t.task_id for t in TrajectoryStore(path)] == ["t-0", "t-2"]
    assert path.read_bytes().count(b"\n") == 2


def test_datasets_reads_the_store(tmp_path):
    datasets = pytest.importorskip("datasets")
    store = TrajectoryStore(tmp_path / "data.jsonl")
    store.append(make_trajectory("t-0"))
    other = make_trajectory("t-1")
    other.task = {"question": "2+2?", "answer": 4}  # a different task schema in the same file
    other.turns[0].info = {"feedback": "wrong", "valid": [1, 2]}
    other.turns[0].prompt_ids = None
    store.append(other)
    dataset = datasets.load_dataset("json", data_files=str(store.path), split="train")
    assert dataset.num_rows == 2
    assert Trajectory.from_dict(dataset[1]).task == {"question": "2+2?", "answer": 4}
    assert dataset[0]["turns"][0]["completion_ids"] == [3, 4]
