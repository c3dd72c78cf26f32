"""Config pieces that every trainer and command composes (training infrastructure tier).

TRL shares one base config across its trainers; mulligan does the same with small dataclasses that
a command's config inherits from. ``HfArgumentParser`` flattens the inheritance, so
``mulligan train nat --help`` lists every inherited field, and an option means the same thing in
every command:

* :class:`ModelArgs`: the model, its load dtype, mixed precision (``bf16``), gradient
  checkpointing, the attention kernel and LoRA.
* :class:`LoggingArgs`: ``output_dir``, logging and checkpoint cadence, ``report_to`` (TRL's comma
  list: ``none``, ``all``, ``tensorboard,wandb``, ...), ``resume_from_checkpoint`` (``""`` none,
  ``auto`` the latest in ``output_dir``, or a path), ``seed`` and ``disable_tqdm``.
* :class:`SFTArgs` (= ModelArgs + LoggingArgs + the optimisation fields): the supervised
  fine-tuning recipe, with DeepSpeed/FSDP passthrough and :meth:`SFTArgs.to_training_arguments`.
* :class:`EnvArgs`: the env id, its keyword arguments (JSON parsed *once*, into
  ``env_kwargs_dict``), attempts, system prompt, parallel envs, first task index.
* :class:`SamplingArgs`: ``temperature``, ``top_p``, ``max_new_tokens``.

**Presets.** A field whose default is ``None`` takes its value from the config's preset
(``--preset tiny``, the default, or ``--preset paper``); a value you pass yourself always wins.
``tiny`` holds the offline CPU defaults; ``paper`` holds a paper's hyperparameters for 7-8B models
on GPUs, defined by each trainer's config (``NATArgs``, ``RISEArgs``, ...). A config lists its
presets in the class attribute ``PRESETS``; values are merged along the class hierarchy, so a
trainer only states what differs. ``preset_values(cls, name)`` shows the merged table.

Example::

    @dataclass
    class MyArgs(SFTArgs, EnvArgs, SamplingArgs):
        PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": {"learning_rate": 1e-5}}
        output_dir: str = field(default="runs/mine", metadata={"help": "Output folder."})

    (args,) = parser_for(MyArgs).parse_args_into_dataclasses(["--preset", "paper", "--bf16"])
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

#: Values that a ``None`` field takes under ``--preset tiny`` unless a subclass states otherwise.
BASE_TINY_PRESET: dict[str, Any] = {
    "bf16": False,
    "gradient_checkpointing": False,
    "max_length": 1024,
    "num_train_epochs": 3.0,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "learning_rate": 1e-3,
    "lr_scheduler_type": "constant_with_warmup",
    "warmup_ratio": 0.05,
    "weight_decay": 0.0,
    "adam_epsilon": 1e-8,
    "max_new_tokens": 64,
}


def preset_names(cls: type) -> list[str]:
    """Every preset name a config class (or one of its bases) defines, ``tiny`` first."""
    names = {"tiny"}
    for klass in cls.__mro__:
        names.update(klass.__dict__.get("PRESETS", {}))
    return ["tiny", *sorted(names - {"tiny"})]


def preset_values(cls: type, name: str) -> dict[str, Any]:
    """The values preset ``name`` gives the ``None`` fields of ``cls``, merged along its bases.

    ``tiny`` is the base of every preset: a preset only lists what differs from it.

    Raises:
        ValueError: If no class in the hierarchy defines ``name``.
    """
    if name not in preset_names(cls):
        raise ValueError(f"preset must be one of {preset_names(cls)}, got {name!r}")
    values = dict(BASE_TINY_PRESET)
    for wanted in ("tiny", name) if name != "tiny" else ("tiny",):
        for klass in reversed(cls.__mro__):
            values.update(klass.__dict__.get("PRESETS", {}).get(wanted, {}))
    return values


def parse_json_object(name: str, value: Any) -> dict[str, Any]:
    """``value`` as a dict: a mapping as is, or a JSON object string (empty: ``{}``).

    Raises:
        ValueError: Naming the option ``name`` and showing the expected form.
    """
    if isinstance(value, Mapping):
        return dict(value)
    try:
        parsed = json.loads(value or "{}")
    except (TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{name} must be a JSON object, e.g. '{{\"data_seed\": 1}}': {err}") from err
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a JSON object, e.g. '{{\"data_seed\": 1}}', got {value!r}")
    return parsed


@dataclass
class ArgsBase:
    """Root of every config piece: fills ``None`` fields from the preset, then validates.

    Every piece's ``__post_init__`` calls ``super().__post_init__()`` first, so presets are
    resolved before any piece validates, whatever the order of the bases.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        values = preset_values(type(self), getattr(self, "preset", "tiny"))
        for f in dataclasses.fields(self):
            if getattr(self, f.name) is None and f.name in values:
                setattr(self, f.name, values[f.name])


@dataclass
class ModelArgs(ArgsBase):
    """The model and how it is loaded and trained.

    Attributes:
        model: A Hugging Face id or local path, or ``tiny`` for the offline tiny model.
        dtype: Dtype the weights are loaded in: ``float32`` (keeps fp32 master weights; with
            ``bf16`` the forward runs in bf16 autocast, as the papers' DeepSpeed setups did),
            ``bfloat16``, ``float16`` or ``auto`` (the checkpoint's own). ``bfloat16`` weights
            without fp32 master copies can lose small updates; use it with LoRA.
        bf16: Mixed precision in bfloat16 (GPUs). Preset: tiny False, paper True.
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
        attn_implementation: Attention kernel (``sdpa``, ``flash_attention_2``, ...); empty: the
            library's default.
        use_lora: Train LoRA adapters (peft) instead of every weight.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: Dropout on the LoRA branch.
        lora_target_modules: Modules that get adapters, comma-separated, or ``all-linear``.
    """

    model: str = field(default="tiny", metadata={"help": "HF id or local path, or 'tiny'."})
    dtype: str = field(default="float32", metadata={"help": "Load dtype: float32 | bfloat16 | float16 | auto."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision (preset: tiny false, paper true)."})
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Gradient checkpointing (preset: tiny false, paper true)."}
    )
    attn_implementation: str = field(
        default="", metadata={"help": "Attention kernel (sdpa, flash_attention_2, ...); '' = default."}
    )
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default="all-linear", metadata={"help": "LoRA target modules, comma-separated, or all-linear."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ValueError(f"dtype must be float32, bfloat16, float16 or auto; got {self.dtype!r}")
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise ValueError(f"lora_r and lora_alpha must be >= 1, got {self.lora_r} and {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must lie in [0, 1), got {self.lora_dropout}")

    def lora_config(self):
        """A ``peft.LoraConfig`` for a causal LM when ``use_lora``, else ``None``."""
        if not self.use_lora:
            return None
        from peft import LoraConfig

        modules = self.lora_target_modules
        targets = modules if modules == "all-linear" else [m.strip() for m in modules.split(",") if m.strip()]
        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=targets,
            task_type="CAUSAL_LM",
        )


@dataclass
class LoggingArgs(ArgsBase):
    """Where a run writes, how often it logs and checkpoints, and how it resumes.

    Attributes:
        output_dir: Checkpoints, the final model and the run's summary go here.
        logging_steps: Log every this many optimiser steps.
        save_steps: Checkpoint every this many optimiser steps (0: only the final model).
        save_total_limit: Checkpoints kept on disk.
        report_to: Metrics integrations as TRL takes them: ``none``, ``all``, or a comma list
            (``tensorboard,wandb``).
        resume_from_checkpoint: ``""`` starts fresh, ``auto`` resumes from the latest checkpoint in
            ``output_dir`` (if any), anything else is a checkpoint folder.
        seed: Seed of everything random in the run.
        disable_tqdm: Hide progress bars.
    """

    output_dir: str = field(default="runs/run", metadata={"help": "Output folder."})
    logging_steps: int = field(default=10, metadata={"help": "Log every N steps."})
    save_steps: int = field(default=500, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept."})
    report_to: str = field(default="none", metadata={"help": "none | all | comma list (tensorboard,wandb,...)."})
    resume_from_checkpoint: str = field(
        default="", metadata={"help": "'' fresh, 'auto' the latest in output_dir, or a checkpoint path."}
    )
    seed: int = field(default=0, metadata={"help": "Random seed."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resume_from_checkpoint is None:  # the old convention; "" is the one now
            self.resume_from_checkpoint = ""
        if self.logging_steps < 1:
            raise ValueError(f"logging_steps must be >= 1, got {self.logging_steps}")
        if self.save_steps < 0 or self.save_total_limit < 1:
            raise ValueError("save_steps must be >= 0 and save_total_limit >= 1")
        if not self.report_to_list:
            raise ValueError("report_to must name an integration, or 'none'")

    @property
    def report_to_list(self) -> list[str]:
        """``report_to`` split on commas (``["none"]`` for none), as TRL and transformers take it."""
        return [name.strip() for name in self.report_to.split(",") if name.strip()]


@dataclass
class SFTArgs(ModelArgs, LoggingArgs):
    """Supervised fine-tuning: the optimisation recipe shared by NAT, RISE and sub-goal distillation.

    Fields left at ``None`` come from ``--preset`` (see the module docstring).

    Attributes:
        preset: ``tiny`` (offline CPU defaults) or ``paper`` (the paper's 7-8B hyperparameters).
        max_length: Longest training sequence in tokens.
        num_train_epochs: Passes over the dataset (ignored when ``max_steps`` > 0).
        max_steps: Optimiser steps; -1 uses ``num_train_epochs``.
        per_device_train_batch_size: Sequences per device per micro-step.
        gradient_accumulation_steps: Micro-steps per optimiser step.
        learning_rate: Peak learning rate.
        lr_scheduler_type: Learning-rate schedule (any transformers scheduler name).
        warmup_ratio: Fraction of the steps spent in linear warm-up, in [0, 1).
        weight_decay: AdamW weight decay.
        adam_epsilon: AdamW's epsilon (transformers' 1e-8; the sub-goal paper's 1e-6).
        deepspeed: A DeepSpeed JSON config path (e.g. ZeRO-3), passed to the Trainer.
        fsdp: FSDP options as transformers takes them (``"full_shard auto_wrap"``); empty: off.
        fsdp_config: An FSDP JSON config path; empty: none.
    """

    preset: str = field(default="tiny", metadata={"help": "tiny (CPU defaults) | paper (7-8B, GPUs)."})
    max_length: int | None = field(default=None, metadata={"help": "Longest training sequence (tokens)."})
    num_train_epochs: float | None = field(default=None, metadata={"help": "Epochs (when max_steps is -1)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimiser steps; -1 uses num_train_epochs."})
    per_device_train_batch_size: int | None = field(default=None, metadata={"help": "Sequences per device."})
    gradient_accumulation_steps: int | None = field(default=None, metadata={"help": "Micro-steps per step."})
    learning_rate: float | None = field(default=None, metadata={"help": "Peak learning rate."})
    lr_scheduler_type: str | None = field(default=None, metadata={"help": "LR schedule (cosine, ...)."})
    warmup_ratio: float | None = field(default=None, metadata={"help": "Warm-up fraction of the steps."})
    weight_decay: float | None = field(default=None, metadata={"help": "AdamW weight decay."})
    adam_epsilon: float | None = field(default=None, metadata={"help": "AdamW epsilon (default 1e-8)."})
    deepspeed: str = field(default="", metadata={"help": "DeepSpeed JSON config path ('' = off)."})
    fsdp: str = field(default="", metadata={"help": "FSDP options, e.g. 'full_shard auto_wrap' ('' = off)."})
    fsdp_config: str = field(default="", metadata={"help": "FSDP JSON config path ('' = none)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8 tokens, got {self.max_length}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be a positive int, or -1 to use num_train_epochs; got {self.max_steps}")
        if self.num_train_epochs <= 0:
            raise ValueError(f"num_train_epochs must be > 0, got {self.num_train_epochs}")
        if self.per_device_train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("per_device_train_batch_size and gradient_accumulation_steps must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must lie in [0, 1) (a fraction of the steps), got {self.warmup_ratio}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not self.adam_epsilon > 0:
            raise ValueError(f"adam_epsilon must be > 0, got {self.adam_epsilon}")
        if self.deepspeed and self.fsdp:
            raise ValueError("pass --deepspeed or --fsdp, not both")

    def training_kwargs(self) -> dict[str, Any]:
        """The ``transformers.TrainingArguments`` keyword arguments these fields set."""
        import torch
        from transformers import TrainingArguments

        kwargs: dict[str, Any] = {
            "num_train_epochs": self.num_train_epochs,
            "max_steps": self.max_steps,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "learning_rate": self.learning_rate,
            "lr_scheduler_type": self.lr_scheduler_type,
            "weight_decay": self.weight_decay,
            "adam_epsilon": self.adam_epsilon,
            "logging_steps": self.logging_steps,
            # save_steps 0: no intermediate checkpoint (the trainer saves the final model itself).
            "save_strategy": "steps" if self.save_steps > 0 else "no",
            "save_steps": self.save_steps or 500,
            "save_total_limit": self.save_total_limit,
            "report_to": self.report_to_list,
            "seed": self.seed,
            "disable_tqdm": self.disable_tqdm,
            "bf16": self.bf16,
            "dataloader_num_workers": 0,
            "use_cpu": not torch.cuda.is_available(),
        }
        names = {f.name for f in dataclasses.fields(TrainingArguments)}
        # transformers 5 dropped ``warmup_ratio`` and reads a float ``warmup_steps`` < 1 as a
        # ratio; 4.x has ``warmup_ratio`` and an integer ``warmup_steps``. Pass whichever exists.
        if "warmup_ratio" in names:
            kwargs["warmup_ratio"] = self.warmup_ratio
        else:
            kwargs["warmup_steps"] = self.warmup_ratio
        # transformers 5.x renames gradient_checkpointing to activation_checkpointing.
        checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
        kwargs[checkpointing] = self.gradient_checkpointing
        if self.deepspeed:
            kwargs["deepspeed"] = self.deepspeed
        if self.fsdp:
            kwargs["fsdp"] = self.fsdp
            if self.fsdp_config:
                kwargs["fsdp_config"] = self.fsdp_config
        return kwargs

    def to_training_arguments(self, output_dir: str | None = None, **extra: Any):
        """``transformers.TrainingArguments`` for a custom ``Trainer`` (RISE's reward-weighted one).

        Args:
            output_dir: Where the Trainer checkpoints (``self.output_dir`` when ``None``).
            **extra: Further ``TrainingArguments`` fields, overriding these.
        """
        from transformers import TrainingArguments

        return TrainingArguments(output_dir=output_dir or self.output_dir, **{**self.training_kwargs(), **extra})

    def to_sft_config(self, output_dir: str | None = None, **extra: Any):
        """TRL's ``SFTConfig`` (``TrainingArguments`` + ``max_length``) for ``SFTTrainer``.

        Args:
            output_dir: Where the Trainer checkpoints (``self.output_dir`` when ``None``).
            **extra: Further ``SFTConfig`` fields, overriding these.
        """
        from trl import SFTConfig

        kwargs = {**self.training_kwargs(), "max_length": self.max_length, **extra}
        return SFTConfig(output_dir=output_dir or self.output_dir, **kwargs)


@dataclass
class EnvArgs(ArgsBase):
    """The env a command runs.

    Attributes:
        env_id: A registered ``Mulligan/*`` id.
        env_kwargs: Keyword arguments for ``gymnasium.make``: a JSON object on the command line, or
            a dict in Python (it may then hold objects JSON cannot carry). Parsed once, into
            ``env_kwargs_dict``. Attempts are set with ``max_attempts``, never in here.
        max_attempts: Attempts per episode; above 1 the env is wrapped in
            :class:`~mulligan.envs.wrappers.RetryWithFeedback`.
        system_prompt: A system message placed first; empty: none.
        num_envs: Envs run side by side.
        task_offset: First task index.
    """

    env_id: str = field(default="Mulligan/Echo-v0", metadata={"help": "A registered env id."})
    env_kwargs: str = field(default="{}", metadata={"help": "JSON object of gymnasium.make kwargs."})
    max_attempts: int = field(default=1, metadata={"help": "Attempts per episode (>1: RetryWithFeedback)."})
    system_prompt: str = field(default="", metadata={"help": "System message placed first ('' = none)."})
    num_envs: int = field(default=8, metadata={"help": "Envs run side by side."})
    task_offset: int = field(default=0, metadata={"help": "First task index."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.env_kwargs_dict: dict[str, Any] = parse_json_object("env_kwargs", self.env_kwargs)
        if "max_attempts" in self.env_kwargs_dict:
            raise ValueError("set attempts with --max_attempts, not inside env_kwargs")
        if self.system_prompt is None:
            self.system_prompt = ""
        for name in ("max_attempts", "num_envs"):
            if isinstance(getattr(self, name), bool) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if self.task_offset < 0:
            raise ValueError(f"task_offset must be >= 0, got {self.task_offset}")

    def make_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """``gymnasium.make`` keyword arguments: ``env_kwargs``, ``max_attempts`` when > 1, overrides."""
        kwargs = dict(self.env_kwargs_dict)
        if self.max_attempts > 1:
            kwargs["max_attempts"] = self.max_attempts
        kwargs.update(overrides)
        return kwargs


@dataclass
class EnvWorkerArgs(ArgsBase):
    """Where the envs step: in this process, or in worker processes (slow envs such as ScienceWorld).

    Attributes:
        env_workers: Worker processes the envs step in (0: this process); env ``i`` lives in
            worker ``i % env_workers`` (:mod:`mulligan.training.env_workers`).
        env_workers_backend: ``process`` (local spawned processes) or ``ray`` (Ray actors, for
            several machines; needs ``pip install ray``).
    """

    env_workers: int = field(default=0, metadata={"help": "Env worker processes (0: envs in this process)."})
    env_workers_backend: str = field(default="process", metadata={"help": "process | ray."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.env_workers < 0:
            raise ValueError(f"--env_workers must be >= 0 (0: envs in this process), got {self.env_workers}")
        if self.env_workers_backend not in ("process", "ray"):
            raise ValueError(f"--env_workers_backend must be process or ray, got {self.env_workers_backend!r}")

    def worker_kwargs(self) -> dict[str, Any]:
        """``EnvPool``/``evaluate`` keyword arguments for the workers."""
        return {"env_workers": self.env_workers, "env_workers_backend": self.env_workers_backend}


@dataclass
class SamplingArgs(ArgsBase):
    """How a model samples its actions.

    Attributes:
        temperature: Sampling temperature (0: greedy).
        top_p: Nucleus sampling mass.
        max_new_tokens: Tokens generated per action at most (preset: tiny 64).
        prefill_response: Start each answer with the env's ``info["response_prefix"]`` (CORGI's
            ``- Output:`` primer) and send the continuation; pair it with an env built
            ``primed=True`` (:func:`mulligan.agents.base.response_prefix`).
        num_beams: Beam search with this many beams (1: sample as ``temperature`` says);
            deterministic, no log-probabilities, so for collection and evaluation only.
    """

    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (0: greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Tokens per action (preset)."})
    prefill_response: bool = field(
        default=False,
        metadata={"help": "Start answers with the env's info['response_prefix'] (CORGI's primer); env primed=True."},
    )
    num_beams: int = field(default=1, metadata={"help": "Beam search beams (1: none); collection and eval only."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if isinstance(self.num_beams, bool) or not isinstance(self.num_beams, int) or self.num_beams < 1:
            raise ValueError(f"num_beams must be a positive int (1: no beam search), got {self.num_beams!r}")

    def decoding_kwargs(self) -> dict[str, Any]:
        """The model agent's keyword arguments for ``prefill_response`` and ``num_beams``, where set.

        Only options that differ from the agents' defaults are given, so agents without them
        (scripted teachers) load as before.
        """
        kwargs: dict[str, Any] = {}
        if self.prefill_response:
            kwargs["prefill_response"] = True
        if self.num_beams != 1:
            kwargs["num_beams"] = self.num_beams
        return kwargs


def parser_for(*config_classes: type, **kwargs: Any):
    """An ``HfArgumentParser`` for ``config_classes`` where ``--bf16`` alone means true.

    ``HfArgumentParser`` wants a value after an optional boolean (``--bf16 true``); this parser
    also accepts the bare flag, as for plain booleans.
    """
    from transformers import HfArgumentParser
    from transformers.hf_argparser import string_to_bool

    parser = HfArgumentParser(config_classes, **kwargs)
    for action in parser._actions:
        if action.type is string_to_bool and action.nargs is None:
            action.nargs, action.const = "?", True
    return parser


def parse_args(config_class: type, argv: list[str] | None, *, prog: str, description: str = ""):
    """Parse ``argv`` (``sys.argv[1:]`` when ``None``) into one ``config_class``."""
    import sys

    parser = parser_for(config_class, prog=prog, description=description)
    (config,) = parser.parse_args_into_dataclasses(args=argv if argv is not None else sys.argv[1:])
    return config
