"""``mulligan export``: a trajectory store to a dataset folder (the hub path up to the push), and its errors."""

from pathlib import Path

import datasets
import pytest

from mulligan.agents.testing import EchoOracle
from mulligan.cli import COMMANDS, usage_error_message
from mulligan.commands.export import main, run_export
from mulligan.training.datasets import load_trajectory_source
from mulligan.training.rollout import collect_episodes
from mulligan.training.trajectory import TrajectoryStore, load_trajectories

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stores")
    paths = []
    for k, wrong_every in enumerate((2, 0)):
        path = folder / f"run{k}.jsonl"
        with TrajectoryStore(path) as store:
            collect_episodes("Mulligan/Echo-v0", EchoOracle(wrong_every=wrong_every), 4, seed=k, store=store,
                             progress=False)  # fmt: skip
        paths.append(path)
    return paths


def test_export_to_a_folder_round_trips_and_concatenates_inputs(stores, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main([str(stores[0]), str(stores[1]), "--to", f"dir:{out}"]) == 0
    assert capsys.readouterr().out.strip() == f"8 trajectories exported to {out}"
    expected = load_trajectories(stores[0]) + load_trajectories(stores[1])
    assert load_trajectory_source(f"dir:{out}") == expected
    dataset = datasets.load_from_disk(str(out))
    assert dataset["success"] == [t.success for t in expected]
    assert not list(tmp_path.glob(".ds.partial-*"))  # the staging folder is gone


def test_an_existing_folder_needs_overwrite_and_only_a_dataset_folder_is_replaced(stores, tmp_path):
    out = tmp_path / "ds"
    run_export([str(stores[0])], f"dir:{out}")
    with pytest.raises(FileExistsError, match="exists and is not empty; pass --overwrite"):
        run_export([str(stores[1])], f"dir:{out}")
    assert run_export([str(stores[1])], f"dir:{out}", overwrite=True) == (str(out), 4)
    assert load_trajectory_source(out) == load_trajectories(stores[1])
    # --overwrite never deletes a folder that save_to_disk did not write.
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a dataset folder written by save_to_disk"):
        run_export([str(stores[0])], f"dir:{notes}", overwrite=True)
    assert (notes / "keep.txt").read_text() == "mine"
    # An empty folder is fine without --overwrite.
    (tmp_path / "empty").mkdir()
    assert run_export([str(stores[0])], f"dir:{tmp_path / 'empty'}")[1] == 4


def test_natinstruct_input_exports_with_its_question_file(tmp_path):
    where, rows = run_export(
        [str(FIXTURES / "natinstruct_gsm8k_sample.json")],
        f"dir:{tmp_path / 'nat'}",
        questions=str(FIXTURES / "natinstruct_gsm8k_questions.json"),
    )
    assert rows == 3
    assert [t.success for t in load_trajectory_source(where)] == [True, False, False]


@pytest.mark.parametrize(
    ("argv", "error", "message"),
    [
        (["{missing}", "--to", "dir:{out}"], FileNotFoundError, "no trajectory source at"),
        (["{store}", "--to", "{out}"], ValueError, "bad export target .*expected 'dir:PATH'"),
        (["{store}", "--to", "hub:no-org"], ValueError, "the hub repository must be 'ORG/NAME'"),
        (["{store}", "--to", "dir:{store}"], NotADirectoryError, "is a file; choose a folder path"),
    ],
)
def test_usage_errors_are_one_line_with_the_fix(stores, tmp_path, argv, error, message):
    values = {"missing": tmp_path / "missing.jsonl", "store": stores[0], "out": tmp_path / "out"}
    argv = [a.format(**values) for a in argv]
    with pytest.raises(error, match=message) as caught:
        main(argv)
    line = usage_error_message(caught.value)
    assert line is not None and "\n" not in line
    assert not (tmp_path / "out").exists()


def test_a_bad_target_fails_before_any_input_is_read(tmp_path):
    """The target is checked first: a missing input is not reported when the target is wrong."""
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(FileExistsError):
        run_export([str(tmp_path / "missing.jsonl")], f"dir:{tmp_path / 'taken'}")


def test_missing_to_is_an_argparse_usage_error(stores, capsys):
    with pytest.raises(SystemExit) as caught:
        main([str(stores[0])])
    assert caught.value.code == 2 and "--to" in capsys.readouterr().err


@pytest.mark.skipif("export" not in COMMANDS, reason="`mulligan export` is registered in mulligan/cli.py by its owner")
def test_the_cli_dispatches_export_and_prints_one_line_errors(stores, tmp_path, capsys):
    from mulligan.cli import main as cli_main

    out = f"dir:{tmp_path / 'ds'}"
    assert cli_main(["export", str(stores[0]), "--to", out, "--disable_tqdm"]) == 0
    assert capsys.readouterr().err == ""  # no progress bar in a log
    assert cli_main(["export", str(stores[0]), "--to", out, "--disable_tqdm"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("mulligan export: error:") and "--overwrite" in error and "\n" not in error
