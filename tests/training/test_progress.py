"""Progress in a log: whole lines, rarely; in a terminal: a tqdm bar (issue 16, one logging story)."""

import io

import pytest

from mulligan.agents.testing import EchoOracle
from mulligan.training.progress import LineProgress, is_interactive, progress_bar
from mulligan.training.rollout import collect_episodes


class FakeClock:
    """Seconds that advance by ``step`` at each reading."""

    def __init__(self, step):
        self.now, self.step = 0.0, step

    def __call__(self):
        self.now += self.step
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def written_lines(stream):
    text = stream.getvalue()
    assert "\r" not in text, "a log must not receive carriage-return updates"
    return text.splitlines()


def test_a_fast_thousand_step_loop_writes_one_line_per_ten_percent():
    log = io.StringIO()
    bar = LineProgress(1000, "work", "it", file=log, clock=FakeClock(0.001))
    for _ in range(1000):
        bar.update()
    bar.close()
    lines = written_lines(log)
    assert len(lines) == 10 == bar.lines_written  # 10%, 20%, ..., 100%; close adds nothing new
    assert lines[0].startswith("work: 100/1000 it (10%)") and lines[-1].startswith("work: 1000/1000 it (100%)")


def test_a_slow_loop_writes_a_line_every_thirty_seconds_at_most():
    log = io.StringIO()
    bar = LineProgress(1000, "slow", file=log, clock=FakeClock(1.0))  # 1 s per step: 1000 s in all
    for _ in range(1000):
        bar.update()
    bar.close()
    lines = written_lines(log)
    # At most one line per 10% (10) plus one per 30 s (1000 / 30), plus the final one.
    assert 1000 // 31 <= len(lines) <= 10 + 1000 // 30 + 1


def test_unknown_totals_postfix_and_resumed_runs():
    log = io.StringIO()
    bar = LineProgress(None, "open-ended", "ep", file=log, clock=FakeClock(10.0))
    bar.set_postfix(success="0.50")
    for _ in range(6):
        bar.update()
    bar.close()
    lines = written_lines(log)
    assert 1 <= len(lines) <= 3 and lines[-1].startswith("open-ended: 6 ep") and "success=0.50" in lines[-1]
    resumed = LineProgress(100, "resumed", initial=95, file=io.StringIO(), clock=FakeClock(0.001))
    resumed.update(5)
    assert resumed.lines_written == 1  # 100% reached
    with pytest.raises(ValueError, match="every_percent"):
        LineProgress(10, every_percent=0)


def test_the_display_follows_the_stream():
    assert progress_bar(10, enabled=False) is None
    assert not is_interactive(io.StringIO()) and is_interactive(Terminal())
    assert isinstance(progress_bar(10, "x", file=io.StringIO()), LineProgress)
    terminal = progress_bar(10, "x", file=Terminal())
    assert not isinstance(terminal, LineProgress) and hasattr(terminal, "update")
    terminal.close()


def test_a_collection_in_a_log_writes_a_bounded_number_of_lines(capsys):
    collect_episodes("Mulligan/Echo-v0", EchoOracle(), 400, num_envs=4, progress=True)
    err = capsys.readouterr().err  # pytest's captured stderr is not a terminal
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("collect Mulligan/Echo-v0")]
    assert 1 <= len(lines) <= 12, lines
    assert "400/400 ep (100%)" in lines[-1] and "success=1.00" in lines[-1]


def test_a_trainer_in_a_log_prints_log_lines_and_rare_progress_lines(tmp_path, capsys, one_torch_thread):
    from mulligan.training.nat import NATArgs, train_nat

    data = collect_episodes("Mulligan/Echo-v0", EchoOracle(wrong_every=3), 12, progress=False)
    config = NATArgs(output_dir=str(tmp_path / "nat"), domain="math_cot", per_device_train_batch_size=1,
                     max_steps=40, logging_steps=20, save_steps=0, disable_tqdm=False)  # fmt: skip
    assert train_nat(config, data)["global_step"] == 40
    captured = capsys.readouterr()
    assert "\r" not in captured.err, captured.err[-2000:]
    steps = [line for line in captured.err.splitlines() if line.startswith("train: ")]
    assert 1 <= len(steps) <= 11 and "40/40 step (100%)" in steps[-1], steps
    # The Trainer's own log lines (its PrinterCallback): one per logging_steps, the names report_to gets.
    logs = [line for line in captured.out.splitlines() if "'loss'" in line]
    assert len(logs) == 2, captured.out


def _tensorboard_tags(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for path in folder.rglob("events.out.tfevents*"):
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def test_nat_rise_and_subgoal_report_the_same_names_to_tensorboard(tmp_path, one_torch_thread):
    """``--report_to tensorboard`` writes event files; the same thing has the same name in each trainer."""
    pytest.importorskip("tensorboard")
    from mulligan.training.nat import NATArgs, train_nat
    from mulligan.training.rise import RISEArgs, train_rise
    from mulligan.training.subgoal import SubgoalArgs, train_subgoal

    common = {"report_to": "tensorboard", "logging_steps": 1, "save_steps": 0, "disable_tqdm": True,
              "per_device_train_batch_size": 4}  # fmt: skip
    data = collect_episodes("Mulligan/Echo-v0", EchoOracle(wrong_every=3), 8, progress=False)
    train_nat(NATArgs(output_dir=str(tmp_path / "nat"), domain="math_cot", max_steps=2, **common), data)
    train_rise(RISEArgs(env_id="Mulligan/Echo-v0", output_dir=str(tmp_path / "rise"), num_tasks=4, max_attempts=2,
                        best_of_n=2, max_steps=2, max_new_tokens=4, num_envs=4, eval_tasks=0, **common),
               improver=EchoOracle())  # fmt: skip
    train_subgoal(SubgoalArgs(output_dir=str(tmp_path / "sg"), num_gold=1, max_steps=2, max_length=1024,
                              shared_model=True, train_flat=False, history_len=2, **common))  # fmt: skip
    tags = {name: _tensorboard_tags(tmp_path / name) for name in ("nat", "rise", "sg")}
    for name, found in tags.items():
        assert {"train/loss", "train/learning_rate", "train/grad_norm"} <= found, (name, found)
    assert {"train/env/success_rate", "train/env/turn1_success_rate", "train/examples"} <= tags["rise"]
