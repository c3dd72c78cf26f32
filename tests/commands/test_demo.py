"""The main job end to end at a tiny size: NAT vs positives-only, two seeds, a computed verdict."""

import json

import pytest
import torch

from mulligan.commands.demo import DemoConfig, main
from mulligan.training.stats import VERDICTS


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


TINY = ["--seeds", "2", "--test_tasks", "6", "--teacher_episodes", "12", "--pos_num", "3", "--epochs", "1",
        "--batch_size", "4", "--hidden_size", "16", "--num_layers", "1", "--max_new_tokens", "8",
        "--torch_threads", "1", "--disable_tqdm"]  # fmt: skip


def test_demo_trains_two_arms_over_two_seeds_and_prints_a_computed_verdict(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--output_dir", str(out), *TINY]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    cells = [r for r in rows if r["kind"] == "cell"]
    tasks = [r for r in rows if r["kind"] == "task"]
    assert sorted((c["arm"], c["seed"]) for c in cells) == [("nat", 0), ("nat", 1), ("positives_only", 0),
                                                            ("positives_only", 1)]  # fmt: skip
    # Every model solves the same six held-out problems, each once.
    for arm in ("nat", "positives_only"):
        for seed in (0, 1):
            assert [r["task_index"] for r in tasks if (r["arm"], r["seed"]) == (arm, seed)] == list(range(6))
    assert all(c["extra"]["split"] == "test" for c in cells)
    nat_cells = [c for c in cells if c["arm"] == "nat"]
    assert all("signal_drop" in c["mechanism"] for c in nat_cells)
    # NAT's data holds its negatives; positives-only's holds none.
    assert all(c["extra"]["negatives"] > 0 for c in nat_cells)
    assert all(c["extra"]["negatives"] == 0 for c in cells if c["arm"] == "positives_only")
    printed = capsys.readouterr().out
    verdict_line = next(line for line in printed.splitlines() if line.startswith("Verdict"))
    assert any(verdict_line.endswith(f"{v}.") for v in VERDICTS)
    assert "NAT - positives-only, per problem" in printed and "95% interval" in printed
    assert "Mechanism: NAT asked to solve 'incorrectly'" in printed
    assert (out / "success.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Verdict (computed" in (out / "report.md").read_text()


def test_demo_validation_split_never_uses_test_tasks(tmp_path):
    out = tmp_path / "demo"
    assert main(["--output_dir", str(out), "--eval_split", "validation", *TINY]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(r["extra"]["split"] == "train" for r in rows if r["kind"] == "cell")
    assert all(r["task_index"] >= 10_000_000 for r in rows if r["kind"] == "task")


def test_demo_refuses_to_resume_with_other_flags(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--output_dir", str(out), *TINY]) == 0
    assert main(["--output_dir", str(out), *TINY, "--pos_num", "2"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["--output_dir", str(out), *TINY, "--pos_num", "2", "--overwrite"]) == 0


def test_demo_config_rejects_bad_values():
    with pytest.raises(ValueError, match="seeds must be >= 2"):
        DemoConfig(seeds=1)
    with pytest.raises(ValueError, match="eval_split"):
        DemoConfig(eval_split="train")
    with pytest.raises(ValueError, match="budget"):
        DemoConfig(budget="forever")


def test_mulligan_demo_dispatches_to_the_commands_package(capsys):
    from mulligan.cli import main as cli_main

    with pytest.raises(SystemExit) as exit_info:
        cli_main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "mulligan demo" in out and "--pos_num" in out
