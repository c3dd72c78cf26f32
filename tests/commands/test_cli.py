"""Usage mistakes in any command print one line that names the problem and the fix, and exit 2."""

import io
import json

import pytest

from mulligan.cli import USAGE_ERROR, main, usage_error_message

SCRIPTED = "mulligan.agents.testing:EchoOracle"


def run(capsys, *argv):
    """``main(argv)``: its status and its stderr, which must be a single line for an error."""
    status = main(list(argv))
    err = capsys.readouterr().err.strip()
    return status, err


def assert_one_line_error(capsys, *argv, mentions):
    status, err = run(capsys, *argv)
    assert status == USAGE_ERROR, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("mulligan ") and "error:" in err
    for text in mentions:
        assert text in err, err


@pytest.mark.parametrize("command", [["collect"], ["eval", "--num_episodes", "2"]])
def test_collect_and_eval_usage_mistakes(command, capsys, tmp_path):
    base = [*command, "--agent", SCRIPTED, "--disable_tqdm", "--output", str(tmp_path / "out.jsonl")]
    assert_one_line_error(capsys, *base, "--env_id", "Mulligan/Nope-v0", mentions=["Nope", "mulligan envs"])
    assert_one_line_error(capsys, *base, "--env_kwargs", "{bad json", mentions=["env_kwargs", "JSON object"])
    assert_one_line_error(capsys, *base, "--env_kwargs", "[1, 2]", mentions=["env_kwargs", "JSON object"])
    assert_one_line_error(
        capsys, *base, "--env_kwargs", '{"no_such_argument": 1}', mentions=["no_such_argument", "--env_kwargs"]
    )
    assert_one_line_error(capsys, *base, "--num_envs", "0", mentions=["num_envs", ">= 1"])
    assert_one_line_error(capsys, *base, "--samples_per_task", "-1", mentions=["samples_per_task"])
    assert_one_line_error(
        capsys,
        *[a if a != SCRIPTED else "/no/such/checkpoint" for a in base],
        mentions=["/no/such/checkpoint", "does not exist", "'tiny'"],
    )
    assert_one_line_error(
        capsys,
        *[a if a != SCRIPTED else "no.such.module:Agent" for a in base],
        mentions=["no.such.module", "module:Class"],
    )
    assert_one_line_error(
        capsys,
        *[a if a != SCRIPTED else "mulligan.agents.testing:ScriptedAgent" for a in base],
        mentions=["ScriptedAgent", "no arguments"],
    )
    assert_one_line_error(
        capsys, *[a if a != SCRIPTED else "mulligan.training.stats:Summary" for a in base], mentions=["Summary"]
    )
    assert_one_line_error(capsys, *base[:-1], str(tmp_path), mentions=["is a directory", "file path"])
    (tmp_path / "plain_file").write_text("x")
    assert_one_line_error(
        capsys, *base[:-1], str(tmp_path / "plain_file" / "out.jsonl"), mentions=["is a file", "another path"]
    )


def test_collect_num_episodes_zero(capsys):
    assert_one_line_error(capsys, "collect", "--agent", SCRIPTED, "--num_episodes", "0", mentions=["--num_episodes"])


def test_play_usage_mistakes(capsys, monkeypatch):
    assert_one_line_error(capsys, "play", "Mulligan/Nope-v0", mentions=["Nope", "mulligan envs"])
    assert_one_line_error(capsys, "play", "Mulligan/Echo-v0", "--env_kwargs", "{x", mentions=["--env_kwargs", "JSON"])
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    assert main(["play", "Mulligan/Echo-v0", "--env_kwargs", '{"max_attempts": 1}', "--seed", "1"]) == 0
    assert "episode over" in capsys.readouterr().out


def test_a_second_writer_of_one_file_is_refused(capsys, tmp_path):
    from mulligan.training.trajectory import TrajectoryStore

    output = tmp_path / "out.jsonl"
    holder = TrajectoryStore(output)
    holder.lock()
    assert_one_line_error(
        capsys,
        "collect",
        "--agent",
        SCRIPTED,
        "--num_episodes",
        "2",
        "--output",
        str(output),
        mentions=["another writer", "another file"],
    )
    holder.close()


TRAINERS = ["nat", "rise", "subgoal", "grpo", "ppo", "corgi"]


@pytest.mark.parametrize("method", [m for m in TRAINERS if m != "nat"])
def test_train_commands_reject_bad_env_settings(method, capsys, tmp_path):
    out = ["--output_dir", str(tmp_path / "run")]
    assert_one_line_error(capsys, "train", method, *out, "--env_kwargs", "{bad", mentions=["env_kwargs"])
    assert_one_line_error(capsys, "train", method, *out, "--num_envs", "0", mentions=["num_envs"])
    assert_one_line_error(capsys, "train", method, *out, "--env_id", "Mulligan/Nope-v0", mentions=["Nope"])


def test_train_nat_missing_trajectories_and_model(capsys, tmp_path):
    assert_one_line_error(
        capsys,
        "train",
        "nat",
        "--trajectories",
        str(tmp_path / "missing.jsonl"),
        "--output_dir",
        str(tmp_path / "run"),
        mentions=["missing.jsonl"],
    )
    data = tmp_path / "data.jsonl"
    assert main(["collect", "--agent", SCRIPTED, "--num_episodes", "2", "--output", str(data), "--disable_tqdm"]) == 0
    capsys.readouterr()
    assert_one_line_error(
        capsys,
        "train",
        "nat",
        "--trajectories",
        str(data),
        "--model",
        "/no/such/model",
        "--output_dir",
        str(tmp_path / "run"),
        mentions=["/no/such/model"],
    )
    (tmp_path / "a_file").write_text("x")
    assert_one_line_error(
        capsys,
        "train",
        "nat",
        "--trajectories",
        str(data),
        "--output_dir",
        str(tmp_path / "a_file"),
        mentions=["a_file"],
    )


def test_demo_usage_mistakes(capsys, tmp_path):
    (tmp_path / "a_file").write_text("x")
    assert_one_line_error(capsys, "demo", "--output_dir", str(tmp_path / "a_file"), mentions=["a_file"])


def test_bugs_are_not_disguised_as_usage_errors():
    assert usage_error_message(KeyError("x")) is None
    assert usage_error_message(TypeError("unsupported operand")) is None
    assert usage_error_message(ValueError("bad --x; pass 1")) == "bad --x; pass 1"
    assert json.loads("{}") == {}


def test_every_command_is_listed_in_the_help(capsys):
    from mulligan.cli import COMMANDS

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert {"export", "report", "reproduce"} <= set(COMMANDS)
    for name in COMMANDS:
        assert name in out


def test_a_command_that_cannot_be_imported_is_a_one_line_error(capsys, monkeypatch, tmp_path):
    from mulligan import cli

    # A command whose module is absent from this version.
    monkeypatch.setitem(cli.COMMANDS, "later", ("mulligan.commands.no_such_command", "Not written yet."))
    assert_one_line_error(capsys, "later", "--x", "1", mentions=["mulligan.commands.no_such_command", "--help"])
    # A command whose module needs a package that is not installed.
    source = "import no_such_package_for_mulligan\n\n\ndef main(argv):\n    return 0\n"
    (tmp_path / "needs_a_package.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "needy", ("needs_a_package", "Needs a package."))
    assert_one_line_error(capsys, "needy", mentions=["no_such_package_for_mulligan", "pip install"])
    # A broken import inside mulligan is a bug: it is raised, not disguised as a usage error.
    (tmp_path / "broken_command.py").write_text("import mulligan.no_such_module\n")
    monkeypatch.setitem(cli.COMMANDS, "broken", ("broken_command", "Broken."))
    with pytest.raises(ModuleNotFoundError, match=r"mulligan\.no_such_module"):
        main(["broken"])


def test_a_vllm_agent_without_vllm_or_without_a_model_is_one_line(capsys):
    """``--agent vllm:MODEL`` says how to get vLLM when it is missing, and names the missing model."""
    import importlib.util

    assert main(["eval", "--env_id", "Mulligan/Echo-v0", "--agent", "vllm:", "--disable_tqdm"]) == USAGE_ERROR
    assert "names no model" in capsys.readouterr().err
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here: tests/training/test_vllm.py builds a vllm: agent")
    assert main(["eval", "--env_id", "Mulligan/Echo-v0", "--agent", "vllm:tiny", "--disable_tqdm"]) == USAGE_ERROR
    err = capsys.readouterr().err
    assert "scripts/install.sh vllm" in err and len(err.strip().splitlines()) == 1
