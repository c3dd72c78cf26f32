"""``mulligan report``: known answers on hand-made results files, paired differences, a valid PNG."""

from __future__ import annotations

import json

import pytest

from mulligan.cli import main as cli_main
from mulligan.commands import report
from mulligan.commands.evaluate import RESULTS_SCHEMA


def write_results(path, agent, env_id, outcomes):
    """A results file as ``mulligan eval --results`` writes it; ``outcomes``: task id -> sample successes."""
    tasks = [{"index": k, "task_id": task_id, "success": list(s), "score": [float(x) for x in s]}
             for k, (task_id, s) in enumerate(outcomes.items())]  # fmt: skip
    record = {"schema": RESULTS_SCHEMA, "agent": agent, "env_id": env_id, "env_kwargs": {}, "seed": 0,
              "task_indices": [t["index"] for t in tasks], "tasks": tasks, "summary": {}, "metrics": {}}  # fmt: skip
    path.write_text(json.dumps(record))
    return str(path)


def tasks(prefix, successes):
    return {f"{prefix}{k}": [s] for k, s in enumerate(successes)}


@pytest.fixture
def files(tmp_path):
    half = write_results(tmp_path / "a.json", "base", "Mulligan/Echo-v0", tasks("t", [True] * 5 + [False] * 5))
    full = write_results(tmp_path / "b.json", "tuned", "Mulligan/Echo-v0", tasks("t", [True] * 10))
    math = write_results(tmp_path / "c.json", "base", "Mulligan/Math-v0", tasks("m", [False] * 4))
    return half, full, math


def test_the_table_has_models_by_envs_with_wilson_intervals(files, capsys):
    runs = [report.load_run(path) for path in files]
    rows = {row["model"]: row for row in report.comparison_rows(runs)}
    assert set(rows) == {"base", "tuned"}
    # Wilson 95% intervals: 5/10 -> [0.237, 0.763]; 10/10 -> [0.722, 1]; 0/4 -> [0, 0.490].
    assert rows["base"]["Mulligan/Echo-v0"] == "0.500 [0.237, 0.763] n=10"
    assert rows["tuned"]["Mulligan/Echo-v0"] == "1.000 [0.722, 1.000] n=10"
    assert rows["base"]["Mulligan/Math-v0"] == "0.000 [0.000, 0.490] n=4"
    assert rows["tuned"]["Mulligan/Math-v0"] == ""  # not evaluated there


def test_paired_difference_on_shared_tasks_with_a_bootstrap_interval(files):
    runs = [report.load_run(path) for path in files]
    (pair,) = report.paired_rows(runs)  # Math has one run only: nothing to pair
    assert (pair["env"], pair["A"], pair["B"], pair["tasks"]) == ("Mulligan/Echo-v0", "base", "tuned", 10)
    # Per-task differences: five 0s and five 1s. Their mean is 0.5; the resampled means are
    # Binomial(10, 0.5) / 10, whose 2.5% and 97.5% quantiles are 0.2 and 0.8.
    assert pair["B - A"] == 0.5 and (pair["low"], pair["high"]) == (0.2, 0.8)


def test_paired_differences_known_answers(tmp_path):
    def pair(first, second):
        a = report.load_run(write_results(tmp_path / "a.json", "a", "Mulligan/Echo-v0", tasks("t", first)))
        b = report.load_run(write_results(tmp_path / "b.json", "b", "Mulligan/Echo-v0", tasks("t", second)))
        (row,) = report.paired_rows([a, b], seed=3)
        return row["B - A"], row["low"], row["high"]

    assert pair([False] * 3, [True] * 3) == (1.0, 1.0, 1.0)
    # Differences 0, 0, +1, -1: a resampled sum is <= -3 with probability 1/4**4 + 4 * 1/4**3 * 1/2
    # = 3.5% and -4 with 0.4%, so the 2.5% quantile of the mean is -0.75 (and 0.75 by symmetry).
    assert pair([True, False, False, True], [True, False, True, False]) == (0.0, -0.75, 0.75)


def test_only_shared_tasks_are_paired_and_samples_are_averaged(tmp_path):
    first = write_results(tmp_path / "x.json", "x", "Mulligan/Echo-v0",
                          {"t0": [True, False], "t1": [True, True], "t2": [False, False]})  # fmt: skip
    second = write_results(tmp_path / "y.json", "y", "Mulligan/Echo-v0",
                           {"t1": [False, False], "t2": [True, True], "t9": [True, True]})  # fmt: skip
    runs = [report.load_run(first), report.load_run(second)]
    assert runs[0].task_success == {"t0": 0.5, "t1": 1.0, "t2": 0.0}
    (pair,) = report.paired_rows(runs)
    assert pair["tasks"] == 2 and pair["B - A"] == 0.0  # t1: -1, t2: +1
    other_env = write_results(tmp_path / "z.json", "z", "Mulligan/Math-v0", {"t1": [True]})
    assert report.paired_rows([runs[0], report.load_run(other_env)]) == []  # a task id means nothing across envs


def test_the_same_spec_twice_on_one_env_is_labelled_by_file(tmp_path, capsys):
    first = write_results(tmp_path / "run1.json", "tiny", "Mulligan/Echo-v0", tasks("t", [True, False]))
    second = write_results(tmp_path / "run2.json", "tiny", "Mulligan/Echo-v0", tasks("t", [True, True]))
    assert report.main([first, second]) == 0
    out = capsys.readouterr().out
    assert "tiny (run1.json)" in out and "tiny (run2.json)" in out


def test_the_plot_is_a_valid_png(files, tmp_path, capsys):
    from matplotlib.image import imread

    path = tmp_path / "plots" / "compare.png"
    summary = tmp_path / "report.json"
    assert report.main([*files, "--plot", str(path), "--json", str(summary)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = imread(str(path)).shape
    assert height > 100 and width > 100
    written = json.loads(summary.read_text())
    assert len(written["table"]) == 2 and written["paired"][0]["B - A"] == 0.5


def test_bad_files_are_one_line_usage_errors(tmp_path, capsys):
    not_results = tmp_path / "other.json"
    not_results.write_text(json.dumps({"summary": {}}))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for path, complaint in ((tmp_path / "missing.json", "no results file"), (not_results, "not a mulligan eval"),
                            (broken, "is not JSON")):  # fmt: skip
        assert cli_main(["eval", "--compare", str(path)]) == 2
        error = capsys.readouterr().err
        assert complaint in error and str(path.name) in error and len(error.strip().splitlines()) == 1


def test_mulligan_report_is_a_command(files, capsys):
    assert cli_main(["report", *files]) == 0
    out = capsys.readouterr().out
    assert "0.500 [0.237, 0.763] n=10" in out and "paired differences" in out
