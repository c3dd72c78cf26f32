"""``mulligan reproduce``: protocols, the resumable grid, statistics, verdicts and reports at tiny size."""

import importlib.util
import json

import pytest
import torch

from mulligan.commands.reproduce import PAPERS, main, paper_settings
from mulligan.reproduce import nat
from mulligan.reproduce.analysis import analyse
from mulligan.reproduce.grid import read_results
from mulligan.reproduce.protocol import Arm, Comparison, PhaseTimer, Protocol
from mulligan.training.stats import VERDICTS


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _nat_argv(out, *extra):
    return ["nat", "--preset", "tiny", "--output_dir", str(out), "--arms", "positives_only,nat",
            "--torch_threads", "1", "--disable_tqdm", *extra]  # fmt: skip


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_nat_grid_writes_every_arm_seed_task_a_report_and_plots_and_resumes(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(_nat_argv(out)) == 0
    results = out / "nat" / "results.jsonl"
    rows = _rows(results)
    cells = [r for r in rows if r["kind"] == "cell"]
    tasks = [r for r in rows if r["kind"] == "task"]
    settings = nat.PRESETS["tiny"]
    # 2 arms x 2 seeds x 2 budgets, each scoring the same test tasks once.
    assert len(cells) == 8
    assert len(tasks) == 8 * settings["test_tasks"]
    per_cell = {}
    for row in tasks:
        per_cell.setdefault((row["arm"], row["seed"], row["budget"]), []).append(row["task_index"])
    assert set(per_cell.values().__iter__().__next__()) == set(range(settings["test_tasks"]))
    assert all(v == list(range(settings["test_tasks"])) for v in per_cell.values())
    assert all(r["success"] in (0.0, 1.0) for r in tasks)
    nat_cells = [c for c in cells if c["arm"] == "nat"]
    assert all({"signal_drop", "success_incorrect_prompt"} <= set(c["mechanism"]) for c in nat_cells)
    assert all(set(c["seconds"]) == {"generation", "env", "optimisation", "other"} for c in cells)
    assert all(c["seconds"]["optimisation"] > 0 or c["arm"] == "positives_only" for c in cells)
    report = (out / "nat" / "report.md").read_text()
    assert any(f"Verdict (computed from the primary comparison's paired interval): {v}." in report for v in VERDICTS)
    assert "mulligan reproduce nat --preset tiny" in report and "Cells ran at: commit" in report
    assert "signal_drop" in report and "Where the time went (all cells)" in report
    assert (out / "nat" / "success.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Interrupt: drop the last cell's closing row and tear one of its task rows, then resume.
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:10])
    capsys.readouterr()
    assert main(_nat_argv(out)) == 0
    log = capsys.readouterr().out
    assert log.count(" on 6 tasks") == 1  # only the interrupted cell ran again
    task_rows, cell_rows = read_results(str(results))
    assert len(cell_rows) == 8 and len(task_rows) == 8 * settings["test_tasks"]
    assert _rows_equal_ignoring_order(task_rows, tasks)


def _rows_equal_ignoring_order(a, b):
    key = lambda r: (r["arm"], r["seed"], r["budget"], r["task_index"])  # noqa: E731
    return sorted(map(key, a)) == sorted(map(key, b)) and {key(r): r["success"] for r in a} == {
        key(r): r["success"] for r in b
    }


def test_cells_of_different_seeds_run_in_worker_processes_with_the_same_rows(tmp_path):
    argv = ["--arms", "positives_only", "--seeds", "2", "--torch_threads", "1"]
    assert main([*_nat_argv(tmp_path / "one"), *argv]) == 0
    assert main([*_nat_argv(tmp_path / "two"), *argv, "--workers", "2"]) == 0
    one, two = (read_results(str(tmp_path / name / "nat" / "results.jsonl")) for name in ("one", "two"))
    assert len(two[1]) == 4 and _rows_equal_ignoring_order(one[0], two[0])
    # A seed's cells ran in order (its second budget reused the first's model): the grid order per seed.
    for seed in (0, 1):
        assert [c["budget"] for c in two[1] if c["seed"] == seed] == list(nat.PROTOCOL.budgets)


def test_resuming_with_other_settings_is_refused(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(_nat_argv(out, "--seeds", "1", "--arms", "positives_only")) == 0
    assert main(_nat_argv(out, "--seeds", "1", "--arms", "positives_only", "--set", "pos_num=2")) == 2
    assert "other settings" in capsys.readouterr().err


def test_unknown_setting_and_bad_preset_are_refused():
    with pytest.raises(ValueError, match="unknown setting"):
        paper_settings(nat, "tiny", {"learning_rat": 1.0})
    with pytest.raises(ValueError, match="preset"):
        paper_settings(nat, "huge", {})


def test_generation_engine_is_a_setting_chosen_per_preset():
    from mulligan.agents.hf import HFAgent
    from mulligan.agents.tiny import resolve_model
    from mulligan.reproduce.protocol import model_agent

    assert paper_settings(nat, "tiny", {})["generation"] == "hf"
    assert paper_settings(nat, "gpu", {})["generation"] == "auto"
    assert paper_settings(nat, "tiny", {"generation": "vllm"})["generation"] == "vllm"
    agent = model_agent(resolve_model("tiny"), {"generation": "hf"}, temperature=0.0, max_new_tokens=4)
    assert isinstance(agent, HFAgent)
    with pytest.raises(ValueError, match="generation must be one of"):
        model_agent("tiny", {"generation": "tgi"})
    if importlib.util.find_spec("vllm") is None:
        # Without vLLM, auto falls back to transformers and an explicit vllm says how to install it.
        assert isinstance(model_agent(resolve_model("tiny"), {"generation": "auto"}, max_new_tokens=4), HFAgent)
        with pytest.raises(ValueError, match=r"install\.sh vllm"):
            model_agent(resolve_model("tiny"), {"generation": "vllm"}, max_new_tokens=4)


def _toy_protocol():
    return Protocol(
        paper="toy",
        title="toy",
        claim="a beats b",
        env_id="Mulligan/Echo-v0",
        primary_metric="success",
        metric_description="solved",
        reference_arm="b",
        arms=(Arm("a", "a", "plain", "method"), Arm("b", "b", "plain", "baseline")),
        comparisons=(Comparison("a", "b", 1, "a beats b", primary=True),),
        budgets=("default",),
        mechanism="none",
        decoding="greedy",
        curve_metric="within_",
    )


def _toy_rows(rate_a, rate_b, seeds=3, tasks=200):
    rows = []
    for seed in range(seeds):
        for arm, rate in (("a", rate_a), ("b", rate_b)):
            for task in range(tasks):
                solved = float((task * 7 + seed) % 100 < rate * 100)
                rows.append({"kind": "task", "arm": arm, "seed": seed, "budget": "default", "task_index": task,
                             "success": solved, "within_1": solved * 0.5, "within_2": solved})  # fmt: skip
    return rows


def test_verdict_is_computed_from_the_paired_interval():
    protocol = _toy_protocol()
    better = analyse(protocol, _toy_rows(0.6, 0.4), [], resamples=300)
    assert better["verdict"] == "reproduced in direction"
    assert better["primary"]["mean"] == pytest.approx(0.2) and better["primary"]["low"] > 0
    assert better["regime"] == {"arm": "b", "mean": pytest.approx(0.4), "in_regime": True}
    worse = analyse(protocol, _toy_rows(0.3, 0.5), [], resamples=300)
    assert worse["verdict"] == "contradicted"
    same = analyse(protocol, _toy_rows(0.5, 0.5), [], resamples=300)
    assert same["verdict"] == "inconclusive"
    floor = analyse(protocol, _toy_rows(0.1, 0.05), [], resamples=300)
    assert floor["regime"]["in_regime"] is False
    curve = better["curves"][("a", "default")]
    assert [round(p[0], 3) for p in curve] == [0.3, 0.6]


def test_protocol_rejects_inconsistent_declarations():
    arms = (Arm("a", "a", "plain", "x"), Arm("b", "b", "plain", "y"))
    common = dict(paper="p", title="t", claim="c", env_id="e", primary_metric="success", metric_description="m",
                  reference_arm="a", arms=arms, budgets=("default",), mechanism="m", decoding="d")  # fmt: skip
    with pytest.raises(ValueError, match="unknown arm"):
        Protocol(**common, comparisons=(Comparison("a", "zzz", 1, "c", primary=True),))
    with pytest.raises(ValueError, match="exactly one"):
        Protocol(**common, comparisons=(Comparison("a", "b", 1, "c"),))
    with pytest.raises(ValueError, match="reference_arm"):
        Protocol(**{**common, "reference_arm": "q"}, comparisons=(Comparison("a", "b", 1, "c", primary=True),))


def test_phase_timer_moves_model_time_out_of_env_steps():
    import time

    timer = PhaseTimer()
    with timer.phase("env"):
        time.sleep(0.02)
        timer.add_generation(0.5)  # as a TimedAgent would after a 0.5 s model call
    assert timer.seconds["generation"] == pytest.approx(0.5)
    assert timer.seconds["env"] == 0.0  # 0.02 s wall < 0.5 s charged: env gets no negative time
    with pytest.raises(ValueError, match="phase"), timer.phase("thinking"):
        pass


@pytest.mark.parametrize("paper", sorted(PAPERS))
def test_every_paper_declares_a_protocol_with_three_presets(paper):
    import importlib

    module = importlib.import_module(PAPERS[paper])
    assert module.PROTOCOL.paper == paper
    assert {"cpu", "gpu", "tiny"} <= set(module.PRESETS)
    assert module.PRESETS["cpu"]["seeds"] >= 5 and module.PRESETS["gpu"]["seeds"] >= 5
    assert module.PRESETS["cpu"]["test_tasks"] >= 500 or paper == "subgoal"
    assert module.PRESETS["gpu"]["model"] != "tiny"
    assert callable(module.run_cell)


def test_mulligan_reproduce_dispatches(capsys):
    from mulligan.cli import main as cli_main

    with pytest.raises(SystemExit) as exit_info:
        cli_main(["reproduce", "--help"])
    assert exit_info.value.code == 0
    assert "--preset" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("paper", "mechanism", "curve"),
    [
        ("rise", "repeat_rate", True),
        ("corgi", "retry_gain", True),
        ("subgoal", "planner_exact_match", False),
    ],
)
def test_each_paper_runs_its_grid_at_tiny_size(tmp_path, paper, mechanism, curve):
    import importlib

    module = importlib.import_module(PAPERS[paper])
    out = tmp_path / "rep"
    argv = [paper, "--preset", "tiny", "--seeds", "1", "--output_dir", str(out), "--torch_threads", "1",
            "--disable_tqdm"]  # fmt: skip
    assert main(argv) == 0
    task_rows, cell_rows = read_results(str(out / paper / "results.jsonl"))
    arms = [a.name for a in module.PROTOCOL.arms]
    assert sorted(c["arm"] for c in cell_rows) == sorted(arms)
    assert len(task_rows) == len(arms) * module.PRESETS["tiny"]["test_tasks"]
    assert all(module.PROTOCOL.primary_metric in r for r in task_rows)
    assert any(mechanism in c["mechanism"] for c in cell_rows)
    report = (out / paper / "report.md").read_text()
    assert "computed from the primary comparison" in report and module.PROTOCOL.primary.arm in report
    assert (out / paper / "curve.png").exists() == curve


def test_a_comparison_with_an_arm_that_was_not_run_says_so():
    from mulligan.reproduce.report import render_report

    rows = [r for r in _toy_rows(0.6, 0.4) if r["arm"] == "b"]  # only the baseline ran (--arms b)
    analysis = analyse(_toy_protocol(), rows, [])
    report = render_report(
        _toy_protocol(), analysis, command="x", preset="tiny", settings={}, seconds={}, plots=[], cells=0
    )
    comparison = next(line for line in report.splitlines() if line.startswith("| a vs b"))
    assert "n/a (not run)" in comparison and "one seed" not in comparison
