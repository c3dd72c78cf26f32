"""``mulligan collect`` and ``mulligan eval`` run end to end through the CLI with scripted agents."""

import json

import pytest

from mulligan.cli import main
from mulligan.training.trajectory import TrajectoryStore

ORACLE = "mulligan.agents.testing:EchoOracle"
SAMPLER = "mulligan.agents.testing:RandomEchoAgent"
MATH_ORACLE = "mulligan.agents.teachers.math:MathOracle"


def write_math_records(path, n):
    path.write_text(
        "".join(json.dumps({"question": f"What is {k}+{k}?", "answer": f"#### {2 * k}"}) + "\n" for k in range(n))
    )
    return str(path)


def test_collect_writes_the_trajectories_and_resumes(tmp_path, capsys):
    output = tmp_path / "echo.jsonl"
    argv = [
        "collect",
        "--env_id",
        "Mulligan/Echo-v0",
        "--agent",
        SAMPLER,
        "--num_episodes",
        "12",
        "--samples_per_task",
        "2",
        "--max_attempts",
        "2",
        "--output",
        str(output),
        "--disable_tqdm",
    ]
    assert main(argv) == 0
    assert "Mulligan/Echo-v0" in capsys.readouterr().out
    first = TrajectoryStore(output).load()
    assert len(first) == 12 and {t.sample_index for t in first} == {0, 1}
    assert all(len(t.turns) <= 2 for t in first)
    # Drop the last 5 lines (a crash), resume: the file is whole again and identical to the first run.
    lines = output.read_text().splitlines(keepends=True)
    output.write_text("".join(lines[:7]))
    assert main(argv) == 0
    resumed = TrajectoryStore(output).load()
    assert sorted(json.dumps(t.to_dict(), sort_keys=True) for t in resumed) == sorted(
        json.dumps(t.to_dict(), sort_keys=True) for t in first
    )


def test_collect_refuses_a_corrupt_file_unless_told_to_skip(tmp_path, capsys):
    output = tmp_path / "echo.jsonl"
    base = ["collect", "--agent", ORACLE, "--num_episodes", "3", "--output", str(output), "--disable_tqdm"]
    assert main(base) == 0
    lines = output.read_text().splitlines(keepends=True)
    output.write_text(lines[0] + "{not json\n" + "".join(lines[1:]))
    capsys.readouterr()
    assert main(base) == 2
    error = capsys.readouterr().err
    assert "echo.jsonl, line 2" in error and "--skip_corrupt_lines" in error and len(error.strip().splitlines()) == 1
    with pytest.warns(UserWarning, match="line 2"):
        assert main([*base, "--skip_corrupt_lines"]) == 0


def test_collect_and_eval_step_envs_in_worker_processes_with_the_same_results(tmp_path, capsys):
    base = ["--env_id", "Mulligan/Echo-v0", "--agent", SAMPLER, "--max_attempts", "2", "--num_envs", "4",
            "--disable_tqdm"]  # fmt: skip
    for workers in ("0", "2"):
        argv = ["collect", *base, "--num_episodes", "6", "--output", str(tmp_path / f"w{workers}.jsonl")]
        assert main([*argv, "--env_workers", workers]) == 0
    assert (tmp_path / "w0.jsonl").read_text() == (tmp_path / "w2.jsonl").read_text()
    scored = []
    for workers in ("0", "2"):
        results = tmp_path / f"eval{workers}.json"
        argv = ["eval", *base, "--num_episodes", "6", "--results", str(results), "--env_workers", workers]
        assert main(argv) == 0
        scored.append(json.loads(results.read_text())["tasks"])
    assert scored[0] == scored[1]
    capsys.readouterr()
    assert main(["collect", *base, "--num_episodes", "2", "--output", str(tmp_path / "x.jsonl"),
                 "--env_workers_backend", "dask"]) == 2  # fmt: skip
    assert "--env_workers_backend must be process or ray" in capsys.readouterr().err


def test_eval_over_an_n_record_file_scores_each_record_exactly_once(tmp_path):
    data = write_math_records(tmp_path / "test.jsonl", 9)
    output = tmp_path / "eval.jsonl"
    results = tmp_path / "results.json"
    argv = [
        "eval",
        "--env_id",
        "Mulligan/Math-v0",
        "--env_kwargs",
        json.dumps({"dataset": data}),
        "--agent",
        MATH_ORACLE,
        "--num_episodes",
        "9",
        "--output",
        str(output),
        "--results",
        str(results),
        "--disable_tqdm",
    ]
    assert main(argv) == 0
    trajectories = TrajectoryStore(output).load()
    assert sorted(t.task["question"] for t in trajectories) == sorted(f"What is {k}+{k}?" for k in range(9))
    record = json.loads(results.read_text())
    summary = record["summary"]
    assert summary["episodes"] == 9 and summary["success_rate"] == 1.0
    assert record["task_indices"] == list(range(9)) and record["env_kwargs"] == {"dataset": data}
    assert [len(task["success"]) for task in record["tasks"]] == [1] * 9 and record["seed"] == 1000
    # The default is the whole split, each record once; a count takes the first N distinct indices.
    assert main([*argv[:7], "--output", str(tmp_path / "all.jsonl"), "--disable_tqdm"]) == 0
    assert len({t.task_id for t in TrajectoryStore(tmp_path / "all.jsonl").load()}) == 9
    assert (
        main(
            [
                *argv[:7],
                "--num_episodes",
                "4",
                "--task_offset",
                "2",
                "--output",
                str(tmp_path / "four.jsonl"),
                "--disable_tqdm",
            ]
        )
        == 0
    )
    four = TrajectoryStore(tmp_path / "four.jsonl").load()
    assert sorted(t.metadata["task_index"] for t in four) == [2, 3, 4, 5]


def test_eval_more_episodes_than_records_is_refused(tmp_path, capsys):
    data = write_math_records(tmp_path / "test.jsonl", 3)
    assert (
        main(
            [
                "eval",
                "--env_id",
                "Mulligan/Math-v0",
                "--env_kwargs",
                json.dumps({"dataset": data}),
                "--agent",
                MATH_ORACLE,
                "--num_episodes",
                "5",
                "--disable_tqdm",
            ]
        )
        == 2
    )
    assert "outside the split [0, 3)" in capsys.readouterr().err


def test_eval_rise_metrics_go_through_the_one_evaluation(tmp_path, capsys):
    results = tmp_path / "results.json"
    assert (
        main(
            [
                "eval",
                "--agent",
                SAMPLER,
                "--num_episodes",
                "40",
                "--rise_metrics",
                "--results",
                str(results),
                "--disable_tqdm",
            ]
        )
        == 0
    )
    metrics = json.loads(results.read_text())["metrics"]
    assert set(metrics) == {"m1@t1", "m5@t1", "m5@t1_ties", "m1@t5", "m1@t5_ties", "p1@t5"}
    # RandomEchoAgent is right with p = 0.5 per attempt: m1@t1 (over 5 x 40 samples) near 0.5, and
    # at least one of 5 no-oracle attempts right in 1 - 0.5**5 = 97% of the tasks.
    assert 0.35 <= metrics["m1@t1"] <= 0.65
    assert metrics["p1@t5"] >= 0.85 and metrics["p1@t5"] >= metrics["m1@t5"]
    assert "m5@t1" in capsys.readouterr().out


def test_eval_compare_is_the_report(tmp_path, capsys):
    first, second = tmp_path / "oracle.json", tmp_path / "sampler.json"
    for agent, path in ((ORACLE, first), (SAMPLER, second)):
        assert main(["eval", "--agent", agent, "--num_episodes", "30", "--results", str(path), "--disable_tqdm"]) == 0
    capsys.readouterr()
    assert main(["eval", "--compare", str(first), str(second), "--plot", str(tmp_path / "cmp.png")]) == 0
    out = capsys.readouterr().out
    assert "1.000 [0.886, 1.000] n=30" in out  # the oracle: 30 of 30, Wilson 95%
    assert "paired differences" in out and (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_max_turns_caps_each_episode(tmp_path):
    output = tmp_path / "capped.jsonl"
    argv = ["eval", "--agent", SAMPLER, "--max_attempts", "5", "--num_episodes", "20", "--max_turns", "2"]
    assert main([*argv, "--output", str(output), "--disable_tqdm"]) == 0
    turns = [len(t.turns) for t in TrajectoryStore(output).load()]
    assert max(turns) == 2 and len(turns) == 20  # RandomEchoAgent fails both turns in about 1 task of 4


def test_eval_nat_prompt_with_a_window_keeps_the_question(tmp_path):
    """--window under --nat_prompt cuts the env's conversation, never NAT's opening (the question)."""
    output = tmp_path / "nat.jsonl"
    argv = ["eval", "--env_id", "Mulligan/Echo-v0", "--max_attempts", "3",
            "--agent", "tiny", "--max_new_tokens", "3", "--temperature", "1.0", "--num_episodes", "2",
            "--nat_prompt", "math", "--window", "1", "--output", str(output), "--disable_tqdm"]  # fmt: skip
    assert main(argv) == 0
    for trajectory in TrajectoryStore(output).load():
        question = trajectory.messages[0]["content"]
        for t in range(len(trajectory.turns)):
            shown = trajectory.prompt_messages(t)
            assert any(question in m["content"] for m in shown), shown
            # the window keeps at most the most recent attempt: NAT's opening plus <= 1 earlier action
            assert sum(m["role"] == "assistant" for m in shown) <= 2
