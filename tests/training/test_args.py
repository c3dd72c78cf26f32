"""Config pieces: composition through HfArgumentParser, presets, one convention per option."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import pytest
from transformers import HfArgumentParser

from mulligan.training.args import (
    EnvArgs,
    LoggingArgs,
    ModelArgs,
    SamplingArgs,
    SFTArgs,
    parser_for,
    preset_names,
    preset_values,
)
from mulligan.training.sft import resolve_checkpoint


@dataclass
class ComposedArgs(SFTArgs, EnvArgs, SamplingArgs):
    """A trainer config as NAT and RISE build theirs."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"learning_rate": 3e-3},
        "paper": {"learning_rate": 1e-5, "bf16": True, "max_new_tokens": 1000},
    }
    output_dir: str = field(default="runs/composed", metadata={"help": "Output folder."})
    tau: float = field(default=0.4, metadata={"help": "A method field."})


def parse(argv, parser=None):
    (config,) = (parser or HfArgumentParser(ComposedArgs)).parse_args_into_dataclasses(argv)
    return config


def test_hf_parser_flattens_inherited_fields_and_help_lists_them():
    config = parse(
        [
            "--model",
            "org/m",
            "--env_id",
            "Mulligan/Math-v0",
            "--temperature",
            "0.5",
            "--tau",
            "0.2",
            "--logging_steps",
            "3",
            "--deepspeed",
            "z3.json",
        ]
    )
    assert (config.model, config.env_id, config.temperature, config.tau) == ("org/m", "Mulligan/Math-v0", 0.5, 0.2)
    assert (config.logging_steps, config.deepspeed, config.output_dir) == (3, "z3.json", "runs/composed")
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        HfArgumentParser(ComposedArgs).parse_args_into_dataclasses(["--help"])
    for flag in (
        "--model",
        "--bf16",
        "--lora_r",
        "--output_dir",
        "--report_to",
        "--resume_from_checkpoint",
        "--disable_tqdm",
        "--learning_rate",
        "--fsdp",
        "--env_kwargs",
        "--max_attempts",
        "--top_p",
        "--preset",
        "--tau",
    ):
        assert flag in out.getvalue(), flag


def test_presets_fill_only_the_fields_left_unset():
    tiny = parse([])
    assert tiny.learning_rate == 3e-3  # the subclass's tiny value
    assert (tiny.bf16, tiny.max_new_tokens, tiny.lr_scheduler_type) == (False, 64, "constant_with_warmup")
    paper = parse(["--preset", "paper"])
    assert (paper.learning_rate, paper.bf16, paper.max_new_tokens) == (1e-5, True, 1000)
    assert paper.max_length == 1024  # not in the paper preset: the tiny value
    # A value passed explicitly wins, even when it equals the tiny one.
    explicit = parse(["--preset", "paper", "--learning_rate", "3e-3", "--bf16", "false"])
    assert (explicit.learning_rate, explicit.bf16) == (3e-3, False)
    assert preset_names(ComposedArgs) == ["tiny", "paper"]
    assert preset_values(ComposedArgs, "paper")["learning_rate"] == 1e-5
    with pytest.raises(ValueError, match="preset must be one of"):
        ComposedArgs(preset="huge")
    # Python construction resolves the same way, and replace() keeps resolved values.
    assert ComposedArgs(preset="paper", learning_rate=2e-5).learning_rate == 2e-5
    assert replace(paper, seed=3).learning_rate == 1e-5


def test_bare_boolean_flag_works_with_parser_for():
    config = parse(["--bf16", "--gradient_checkpointing"], parser_for(ComposedArgs))
    assert config.bf16 is True and config.gradient_checkpointing is True
    assert parse(["--disable_tqdm"], parser_for(ComposedArgs)).disable_tqdm is True


def test_env_kwargs_parsed_once_and_attempts_have_one_flag():
    config = parse(["--env_kwargs", '{"data_seed": 3}', "--max_attempts", "3"])
    assert config.env_kwargs_dict == {"data_seed": 3}
    assert config.make_kwargs() == {"data_seed": 3, "max_attempts": 3}
    assert EnvArgs(env_kwargs={"generator_config": object}).env_kwargs_dict == {"generator_config": object}
    assert EnvArgs().make_kwargs(split="test") == {"split": "test"}
    with pytest.raises(ValueError, match="--max_attempts"):
        EnvArgs(env_kwargs='{"max_attempts": 3}')
    with pytest.raises(ValueError, match="JSON object"):
        EnvArgs(env_kwargs="[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        EnvArgs(env_kwargs="{oops")


def test_training_arguments_carry_warmup_as_a_ratio_and_report_to_as_a_list(tmp_path):
    config = ComposedArgs(warmup_ratio=0.1, report_to="tensorboard", max_steps=40, bf16=False)
    args = config.to_training_arguments(str(tmp_path))
    assert args.get_warmup_steps(40) == 4  # 10% of the steps, whichever transformers field carries it
    assert args.report_to == ["tensorboard"]
    assert ComposedArgs().to_training_arguments(str(tmp_path)).report_to in ([], ["none"], "none")
    sft = config.to_sft_config(str(tmp_path), max_length=77)
    assert sft.max_length == 77 and sft.learning_rate == 3e-3
    assert config.report_to_list == ["tensorboard"]
    assert LoggingArgs(report_to="tensorboard, wandb").report_to_list == ["tensorboard", "wandb"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"max_steps": 0}, "max_steps"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"deepspeed": "z3.json", "fsdp": "full_shard"}, "not both"),
        ({"dtype": "fp8"}, "dtype"),
        ({"report_to": " , "}, "report_to"),
        ({"top_p": 0.0}, "top_p"),
        ({"temperature": -1.0}, "temperature"),
        ({"num_envs": 0}, "num_envs"),
    ],
)
def test_bad_values_are_rejected_with_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ComposedArgs(**kwargs)


def test_lora_config_only_when_asked():
    assert ModelArgs().lora_config() is None
    lora = ModelArgs(use_lora=True, lora_r=4, lora_target_modules="q_proj, v_proj").lora_config()
    assert lora.r == 4 and set(lora.target_modules) == {"q_proj", "v_proj"}


def test_resolve_checkpoint_has_one_meaning(tmp_path):
    assert resolve_checkpoint("", str(tmp_path)) is None
    assert resolve_checkpoint("auto", str(tmp_path / "missing")) is None
    assert resolve_checkpoint("auto", str(tmp_path)) is None  # no checkpoint yet: start fresh
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-10").mkdir()
    assert resolve_checkpoint("auto", str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert resolve_checkpoint(str(tmp_path / "checkpoint-2"), "elsewhere") == str(tmp_path / "checkpoint-2")
    with pytest.raises(FileNotFoundError, match="'auto'"):
        resolve_checkpoint(str(tmp_path / "nope"), str(tmp_path))


@pytest.mark.parametrize("trainer", ["nat", "rise"])
def test_trainer_configs_parse_inherited_flags_and_list_them_in_help(trainer, capsys):
    from mulligan.training.nat import NATArgs
    from mulligan.training.rise import RISEArgs

    config_class = {"nat": NATArgs, "rise": RISEArgs}[trainer]
    (config,) = HfArgumentParser(config_class).parse_args_into_dataclasses(
        ["--learning_rate", "0.01", "--report_to", "tensorboard", "--resume_from_checkpoint", "auto", "--bf16", "true"]
    )
    assert (config.learning_rate, config.report_to_list, config.resume_from_checkpoint, config.bf16) == (
        0.01, ["tensorboard"], "auto", True,
    )  # fmt: skip
    module = __import__(f"mulligan.training.{trainer}", fromlist=["main"])
    with pytest.raises(SystemExit):
        module.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--preset", "--use_lora", "--deepspeed", "--fsdp", "--gradient_checkpointing", "--disable_tqdm"):
        assert flag in text, flag


def test_decoding_options_reach_the_agent_collect_and_eval_build():
    from mulligan.agents.loading import load_agent
    from mulligan.commands.evaluate import EvalArgs, load_eval_model
    from mulligan.training.args import parse_args

    args = parse_args(
        EvalArgs,
        ["--agent", "tiny", "--env_id", "Mulligan/Echo-v0", "--prefill_response", "--num_beams", "3"],
        prog="mulligan eval",
    )
    assert args.decoding_kwargs() == {"prefill_response": True, "num_beams": 3}
    agent = load_eval_model(args)
    assert agent.prefill_response is True and agent.num_beams == 3
    plain = parse_args(EvalArgs, ["--agent", "tiny", "--env_id", "Mulligan/Echo-v0"], prog="mulligan eval")
    assert plain.decoding_kwargs() == {}  # scripted agents load without options they do not take
    with pytest.raises(ValueError, match="num_beams"):
        SamplingArgs(max_new_tokens=8, num_beams=0)
    with pytest.raises(ValueError, match="num_beams"):
        load_agent("openai:m", base_url="http://127.0.0.1:9/v1", num_beams=4)


def test_adam_epsilon_reaches_the_trainer_and_the_sub_goal_paper_preset_sets_the_official_one():
    from mulligan.training.nat import NATArgs
    from mulligan.training.subgoal import SubgoalArgs

    assert NATArgs().training_kwargs()["adam_epsilon"] == 1e-8
    assert SubgoalArgs(preset="paper").adam_epsilon == 1e-6
    assert NATArgs(adam_epsilon=1e-6).to_sft_config().adam_epsilon == 1e-6
    with pytest.raises(ValueError, match="adam_epsilon must be > 0"):
        NATArgs(adam_epsilon=0.0)
