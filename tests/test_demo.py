"""The main job end to end, at a size that runs in well under a minute."""

import json

import pytest
import torch

from mulligan.commands.demo import DemoConfig, main
from mulligan.training.trajectory import TrajectoryStore


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_demo_runs_end_to_end_and_writes_table_plot_and_jsonl(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(
        [
            "--output_dir",
            str(out),
            "--teacher_episodes",
            "16",
            "--train_steps",
            "2",
            "--batch_size",
            "4",
            "--rise_tasks",
            "4",
            "--eval_tasks",
            "4",
            "--rise_eval_tasks",
            "2",
            "--max_new_tokens",
            "8",
            "--torch_threads",
            "1",
            "--disable_tqdm",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["model"] for r in rows] == ["untrained", "positives_only", "nat", "rise"]
    for row in rows:
        assert row["episodes"] == 4 and 0.0 <= row["success"] <= 1.0
        assert row["success_low"] <= row["success"] <= row["success_high"]
        assert {"m1@t1", "m5@t1", "m1@t5", "p1@t5"} <= set(row)
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    teacher = TrajectoryStore(out / "teacher.jsonl").load()
    assert len(teacher) == 16 and any(t.success for t in teacher) and not all(t.success for t in teacher)
    assert len(TrajectoryStore(out / "eval-nat.jsonl").load()) == 4
    printed = capsys.readouterr().out
    assert "positives_only" in printed and "95% CI" in printed


def test_demo_config_rejects_bad_values():
    with pytest.raises(ValueError, match="positives and negatives"):
        DemoConfig(teacher_error_rate=0.0)
    with pytest.raises(ValueError, match="max_number"):
        DemoConfig(max_number=3)


def test_mulligan_demo_dispatches_to_the_commands_package(capsys):
    from mulligan.cli import main as cli_main

    with pytest.raises(SystemExit) as exit_info:
        cli_main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "mulligan demo" in out and "--rise_attempts" in out
