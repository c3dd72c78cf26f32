"""Trajectory records and the crash-safe JSONL store."""

import json
import multiprocessing
import os

import numpy as np
import pytest

from mulligan.training.trajectory import (
    StoreLockedError,
    Trajectory,
    TrajectoryFileError,
    TrajectoryStore,
    Turn,
    load_trajectories,
)


def make_trajectory(task_id="t-0", sample=0, success=True):
    turns = [
        Turn(
            "Repeat exactly: apple",
            "apple",
            1.0,
            {"success": True, "score": np.float64(1.0), "n": np.int64(3)},
            completion_ids=[3, 4],
            logprobs=[-0.1, -0.2],
        ),
    ]
    return Trajectory(
        env_id="Mulligan/Echo-v0",
        task_id=task_id,
        task={"target": "apple", "tags": ("a", "b")},
        messages=[{"role": "user", "content": "Repeat exactly: apple"}, {"role": "assistant", "content": "apple"}],
        turns=turns,
        success=success,
        score=1.0,
        episode_return=1.0,
        terminated=True,
        truncated=False,
        agent="oracle",
        seed=7,
        metadata={"sample_index": sample},
        final_observation="Episode over.",
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
    with TrajectoryStore(path) as store:
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
    other.turns[0].completion_ids = None
    other.turns[0].context = [[0, 1]]
    store.append(other)
    dataset = datasets.load_dataset("json", data_files=str(store.path), split="train")
    assert dataset.num_rows == 2
    assert Trajectory.from_dict(dataset[1]).task == {"question": "2+2?", "answer": 4}
    assert dataset[0]["turns"][0]["completion_ids"] == [3, 4]


def test_rows_of_older_files_with_prompt_ids_still_load():
    row = make_trajectory().to_dict()
    row["turns"][0]["prompt_ids"] = [1, 2]
    del row["turns"][0]["context"]
    back = Trajectory.from_dict(row)
    assert back.turns[0].completion_ids == [3, 4] and back.turns[0].context is None


def test_a_last_line_cut_inside_a_multibyte_character_is_a_torn_tail(tmp_path):
    # Issue 15: the reader decoded the whole file as text, so a crash in the middle of "🙂" made
    # the file unreadable and resume exited 1.
    path = tmp_path / "data.jsonl"
    with TrajectoryStore(path) as store:
        store.append(make_trajectory("t-0"))
    torn = make_trajectory("t-1")
    torn.final_observation = "done 🙂 " * 3
    line = json.dumps(torn.to_dict(), ensure_ascii=False).encode()
    cut = line.index("🙂".encode()) + 2  # two of the emoji's four bytes
    path.write_bytes(path.read_bytes() + line[:cut])
    assert [t.task_id for t in TrajectoryStore(path)] == ["t-0"]
    with TrajectoryStore(path) as store:
        store.append(make_trajectory("t-2"))
    assert [t.task_id for t in load_trajectories(path)] == ["t-0", "t-2"]


def test_a_corrupt_middle_line_names_file_and_line_and_is_skipped_only_on_request(tmp_path):
    path = tmp_path / "data.jsonl"
    with TrajectoryStore(path) as store:
        store.append(make_trajectory("t-0"))
    with open(path, "ab") as handle:
        handle.write(b'{"env_id": "half a row"\n')
        handle.write(b"\xff\xfe not utf-8\n")
    with TrajectoryStore(path) as store:
        store.append(make_trajectory("t-3"))
    with pytest.raises(TrajectoryFileError, match=r"data\.jsonl, line 2: .*skip_corrupt"):
        TrajectoryStore(path).load()
    with pytest.warns(UserWarning, match="line 3"):
        kept = TrajectoryStore(path, skip_corrupt=True).load()
    assert [t.task_id for t in kept] == ["t-0", "t-3"]


def _append_in_child(path, queue):
    try:
        TrajectoryStore(path).append(make_trajectory("child"))
        queue.put("appended")
    except StoreLockedError as err:
        queue.put(f"refused: {err}")


def test_a_second_writer_is_refused_with_a_clear_message(tmp_path):
    # Issue 15: two writers on one file silently duplicated data.
    path = tmp_path / "data.jsonl"
    first = TrajectoryStore(path)
    first.append(make_trajectory("t-0"))
    with pytest.raises(StoreLockedError, match=r"another writer.*another file"):
        TrajectoryStore(path).append(make_trajectory("t-1"))
    queue = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_append_in_child, args=(str(path), queue))
    child.start()
    child.join(30)
    assert queue.get(timeout=5).startswith("refused")
    first.append(make_trajectory("t-2"))
    first.close()
    TrajectoryStore(path).append(make_trajectory("t-3"))  # free again once the first writer is done
    assert [t.task_id for t in load_trajectories(path)] == ["t-0", "t-2", "t-3"]


def test_bad_paths_are_rejected_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        TrajectoryStore(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        TrajectoryStore(tmp_path / "file" / "data.jsonl")
    with pytest.raises(FileNotFoundError, match="mulligan collect"):
        load_trajectories(tmp_path / "missing.jsonl")
    assert os.path.exists(tmp_path / "file")


# ----------------------------------------------------------------------------------- prefilled answers
def primed_trajectory(store_prefix: bool) -> Trajectory:
    """Two CORGI-style attempts whose answers were prefilled with the primer; the stored messages
    hold either the whole answers (``store_prefix``) or the continuations only."""
    prefix = "- Output: The cat"
    answers = [" sat.", " sat on the mat."]
    stored = [prefix + a if store_prefix else a for a in answers]
    return Trajectory(
        env_id="Mulligan/Constraints-v0",
        task_id="c-0",
        task={},
        messages=[
            {"role": "user", "content": "Complete the sentence in 5 words."},
            {"role": "assistant", "content": stored[0]},
            {"role": "user", "content": "- Feedback: Too short. Please Try again."},
            {"role": "assistant", "content": stored[1]},
        ],
        turns=[Turn("q", answers[0], 0.0, {}, prefill=prefix), Turn("f", answers[1], 1.0, {}, prefill=prefix)],
        success=True,
        score=1.0,
        episode_return=1.0,
        terminated=True,
        truncated=False,
    )


def test_a_prefilled_turn_round_trips_and_old_rows_without_it_still_load(tmp_path):
    trajectory = primed_trajectory(store_prefix=True)
    store = TrajectoryStore(tmp_path / "t.jsonl")
    store.append(trajectory)
    store.close()
    (loaded,) = load_trajectories(tmp_path / "t.jsonl")
    assert [t.prefill for t in loaded.turns] == ["- Output: The cat"] * 2 and loaded == trajectory
    old = trajectory.to_dict()
    for turn in old["turns"]:
        del turn["prefill"]  # a file written before turns recorded their prefill
    assert all(t.prefill is None for t in Trajectory.from_dict(old).turns)


@pytest.mark.parametrize("store_prefix", [True, False])
def test_training_messages_give_a_prefilled_answer_whole_with_its_prefix_marked(store_prefix):
    trajectory = primed_trajectory(store_prefix)
    last = trajectory.training_messages(1)[-1]
    assert last == {"role": "assistant", "content": "- Output: The cat sat on the mat.", "prefill": "- Output: The cat"}
    assert trajectory.training_messages(0)[-1]["content"] == "- Output: The cat sat."
    # Stored whole, every later turn saw each answer as written: one sequence. Stored as the
    # continuation only, the retry saw the first answer without its primer: per-turn samples.
    assert trajectory.sees_full_history is store_prefix
    if store_prefix:
        marks = [m.get("prefill") for m in trajectory.conversation()]
        assert marks == [None, "- Output: The cat", None, "- Output: The cat"]
    else:
        assert trajectory.training_samples()[0][1]["content"] == "- Output: The cat sat."
