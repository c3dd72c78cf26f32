"""NAT: negative-aware fine-tuning (Wang et al. 2024, arXiv 2402.11651).

NAT fine-tunes an agent on both successful and failed trajectories and tells the model which is
which through the prompt (Sec. 3.2): a positive trajectory's question is followed by an
instruction to solve it *correctly*, a negative's by an instruction to solve it *incorrectly*. At
inference the "correctly" prompt is used
(:class:`~mulligan.agents.nat_prompt.NATPromptAgent`), so the model has learned what success looks
like by contrast with failure.

What is here:

* :func:`build_nat_examples`: the SFT conversations for NAT and the paper's baselines, each opened
  as the official code opens it (instruction, ``"I've understood your instruction, start
  please."``, question prompt; :mod:`mulligan.agents.nat_prompt` holds the exact strings):

  - ``nat``: binary signal (suffix prompts, or ``--position prefix --tags NAME``: the signal
    ablations of Sec. 4.4, tag pairs, meaningless tags and random sentences; ``--inverse``: each
    label trained with the other's prompt);
  - ``fine_grained``: four QA quality tags by F1 (Sec. 3.3; ``fine_grained_3``: the three-class
    variant; ``soft``: binary with F1 > 0.2 counting as positive);
  - ``nut``: negatives mixed in without the signal (``"Question: {question}"``);
  - ``positives_only``: the usual agent-tuning recipe.

  Data amounts as the official ``pos_num``/``neg_num``: the first ``pos_num`` positives, and
  ``neg_num`` negatives sampled with the seed (or ``negative_ratio`` per positive, 1:2 by default).
* :func:`train_nat` and ``main``: ``mulligan train nat`` on a trajectory JSONL, with two budgets:
  ``epochs`` (the paper's: ``num_train_epochs`` over the whole dataset, so extra negatives cost
  extra steps) and ``matched_steps`` (the steps positives-only would take, for a compute-matched
  comparison). ``--max_steps`` overrides both.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from mulligan.agents.nat_prompt import (
    DOMAINS,
    POSITIONS,
    TAGS,
    THREE_CLASS_LABELS,
    canonical_domain,
    nat_messages,
    question_of,
    with_nat_opening,
)
from mulligan.agents.tools import tools_for_trajectory
from mulligan.envs.verifiers.qa import CORRECT, fine_grained_label
from mulligan.training.args import SFTArgs, parse_args
from mulligan.training.datasets import load_trajectory_source
from mulligan.training.progress import adapt_trainer_progress, quiet_library_bars
from mulligan.training.sft import (
    conversations_to_dataset,
    load_model,
    load_tokenizer,
    resolve_checkpoint,
    save_trained,
)
from mulligan.training.trajectory import Trajectory

METHODS = ("nat", "positives_only", "nut", "fine_grained", "fine_grained_3", "soft")
BUDGETS = ("epochs", "matched_steps")
BASELINE_PROMPTS = ("official", "env")
#: The ``soft`` template's cut: a QA trajectory with F1 above it counts as positive.
SOFT_F1_THRESHOLD = 0.2


def three_class_label(f1: float) -> str:
    """The official three-class tag: ``[Incorrect]`` at F1 0, ``[Correct]`` at 1, else partial."""
    if f1 <= 0.0:
        return THREE_CLASS_LABELS[0]
    return THREE_CLASS_LABELS[2] if f1 >= 1.0 else THREE_CLASS_LABELS[1]


def _labelled(trajectories: Sequence[Trajectory], method: str) -> tuple[list[tuple], list[tuple]]:
    """``(positives, negatives)`` as ``(trajectory, label)`` pairs, in trajectory order."""
    if method in ("fine_grained", "fine_grained_3", "soft"):
        scored = [(t, min(1.0, max(0.0, float(t.score)))) for t in trajectories]
        if method == "soft":
            labelled = [(t, "positive" if f1 > SOFT_F1_THRESHOLD else "negative") for t, f1 in scored]
        elif method == "fine_grained":
            labelled = [(t, fine_grained_label(f1)) for t, f1 in scored]
        else:
            labelled = [(t, three_class_label(f1)) for t, f1 in scored]
        best = {"positive", CORRECT}
        return [p for p in labelled if p[1] in best], [p for p in labelled if p[1] not in best]
    return [(t, "positive") for t in trajectories if t.success], [
        (t, "negative") for t in trajectories if not t.success
    ]


def build_nat_examples(
    trajectories: Sequence[Trajectory],
    *,
    method: str = "nat",
    domain: str = "math",
    position: str = "suffix",
    tags: str = "correct",
    inverse: bool = False,
    negative_ratio: float = 2.0,
    pos_num: int = -1,
    neg_num: int = -1,
    seed: int = 0,
    baseline_prompt: str = "official",
) -> list[dict[str, Any]]:
    """SFT conversations for NAT or one of its baselines (see the module docstring).

    Positives are the first ``pos_num`` (all when -1), in the given order, as the official
    ``pos_trajs[:pos_num]``. Negatives are ``neg_num`` of them (or ``round(negative_ratio *
    positives)`` when ``neg_num`` is -1) sampled without replacement with ``seed``, or all of them
    when fewer exist.

    Each conversation opens with :func:`~mulligan.agents.nat_prompt.nat_messages` built from the
    task's ``question`` (the env's own first observation is replaced, so ``Question:`` never
    appears twice), then the trajectory's turns. With ``baseline_prompt="env"`` the ``nut`` and
    ``positives_only`` conversations keep the env's own prompt instead of the official plain one
    (``"Question: {question}"`` after the instruction), so the model is prompted as the env and
    other trainers (RISE) prompt it.

    Returns:
        Dicts with ``messages``, ``learn_turns`` (indices of the agent's messages: the opening's
        acknowledgement is not learned), ``label`` (``"positive"``, ``"negative"`` or a
        fine-grained tag), ``task_id``, ``score`` and ``tools`` (the tool schemas a tools-mode
        episode's model saw, else ``None``), positives first.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if negative_ratio < 0:
        raise ValueError(f"negative_ratio must be >= 0, got {negative_ratio}")
    if pos_num < -1 or neg_num < -1:
        raise ValueError(f"pos_num and neg_num must be >= 0, or -1 for all / the ratio; got {pos_num}, {neg_num}")
    if baseline_prompt not in BASELINE_PROMPTS:
        raise ValueError(f"baseline_prompt must be one of {BASELINE_PROMPTS}, got {baseline_prompt!r}")
    positives, negatives = _labelled(trajectories, method)
    if pos_num >= 0:
        positives = positives[:pos_num]
    if method == "positives_only":
        negatives = []
    wanted = neg_num if neg_num >= 0 else round(negative_ratio * len(positives))
    if len(negatives) > wanted:
        negatives = random.Random(seed).sample(negatives, wanted)

    signal = method not in ("nut", "positives_only")
    examples = []
    for trajectory, label in positives + negatives:
        if not signal and baseline_prompt == "env":
            messages = [dict(m) for m in trajectory.messages]
            learn = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
            examples.append(
                {"messages": messages, "learn_turns": learn, "label": label, "task_id": trajectory.task_id,
                 "score": float(trajectory.score), "tools": tools_for_trajectory(trajectory)}
            )  # fmt: skip
            continue
        opening = nat_messages(
            question_of(trajectory.task, trajectory.messages),
            label if signal else None,
            domain=domain,
            position=position,
            tags=tags,
            inverse=inverse and signal,
        )
        messages = with_nat_opening(trajectory.messages, opening)
        examples.append(
            {
                "messages": messages,
                # The agent's turns; the acknowledgement in the opening has no loss (official code).
                "learn_turns": [k for k, m in enumerate(messages) if m["role"] == "assistant" and k >= len(opening)],
                "label": label,
                "task_id": trajectory.task_id,
                "score": float(trajectory.score),
                "tools": tools_for_trajectory(trajectory),  # a tools-mode episode trains with its tools
            }
        )
    return examples


@dataclass
class NATArgs(SFTArgs):
    """Configuration of ``mulligan train nat`` (fields left at ``None`` come from ``--preset``).

    Presets: ``tiny`` (offline CPU: lr 1e-3, constant with warm-up, 3 epochs, batch 8, 1,024
    tokens) and ``paper`` (the official ``scripts/train.sh`` for Llama-2-7B-chat: lr 5e-5, cosine,
    warm-up 0.03, 2 epochs, 2 per device x 8 accumulation (x 4 GPUs = 64), 4,096 tokens, bf16,
    weight decay 0; the official run adds ``--deepspeed`` ZeRO-3).

    Attributes:
        trajectories: Trajectory sources (positives and negatives), comma-separated: JSONL stores
            (``mulligan collect``), dataset folders (``dir:PATH``, ``mulligan export``),
            ``hf:NAME[:CONFIG][:SPLIT]``, or NATInstruct records (see
            :func:`~mulligan.training.datasets.load_trajectory_source`).
        questions: For NATInstruct sources, the question file whose records are joined by ``id``
            (NATInstruct records start at the model's first action; empty: none).
        method: ``nat`` (the paper's), ``positives_only`` or ``nut`` (its baselines),
            ``fine_grained`` (four QA tags by F1), ``fine_grained_3`` (three tags) or ``soft``
            (binary, F1 > 0.2 is positive).
        domain: Prompt wording: ``math`` (ReAct), ``math_cot``, ``hotpotqa`` (``qa``) or
            ``strategyqa``.
        position: ``suffix`` (the paper's prompts) or ``prefix`` (the Sec. 4.4 ablations, ``tags``).
        tags: The ablation template for ``position=prefix``
            (:data:`~mulligan.agents.nat_prompt.TAG_PROMPTS`): ``correct``, ``good``, ``AB``,
            ``meaningless``, ``laptop`` (a tag before the question), ``good_suffix`` (after it),
            ``random_sentence`` (an unrelated sentence after it).
        inverse: The inverse ablation: positives get the negative prompt and negatives the
            positive one (the official ``*-inverse`` templates; evaluate with
            ``NATPromptAgent(inverse=True)``). ``nat`` and ``soft`` only.
        negative_ratio: Negatives per positive when ``neg_num`` is -1 (the paper's 1:2 is 2.0).
        pos_num: Positives kept, the first ones (-1: all); the official ``pos_num``.
        neg_num: Negatives sampled (-1: ``negative_ratio`` per positive); the official ``neg_num``.
        budget: ``epochs`` (the paper's: ``num_train_epochs`` over all the data) or
            ``matched_steps`` (the steps positives-only takes for ``num_train_epochs``).
        baseline_prompt: ``official`` (``nut``/``positives_only`` get the official plain prompt)
            or ``env`` (they keep the env's own prompt).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            "learning_rate": 1e-3,
            "lr_scheduler_type": "constant_with_warmup",
            "warmup_ratio": 0.05,
            "num_train_epochs": 3.0,
            "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 1,
            "max_length": 1024,
        },
        "paper": {
            "learning_rate": 5e-5,
            "lr_scheduler_type": "cosine",
            "warmup_ratio": 0.03,
            "num_train_epochs": 2.0,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 8,
            "max_length": 4096,
            "weight_decay": 0.0,
            "bf16": True,
            "gradient_checkpointing": False,
        },
    }

    trajectories: str = field(
        default="",
        metadata={
            "help": "Trajectory sources, comma-separated: JSONL stores, dataset folders (dir:PATH), "
            "hf:NAME[:CONFIG][:SPLIT], NATInstruct."
        },
    )
    questions: str = field(default="", metadata={"help": "NATInstruct sources: the question file joined by id."})
    output_dir: str = field(default="runs/nat", metadata={"help": "Checkpoints and final model go here."})
    method: str = field(default="nat", metadata={"help": "nat | positives_only | nut | fine_grained | ..."})
    domain: str = field(default="math", metadata={"help": "Prompts: math | math_cot | hotpotqa | strategyqa."})
    position: str = field(default="suffix", metadata={"help": "Signal position: suffix | prefix."})
    tags: str = field(
        default="correct",
        metadata={"help": "With --position prefix: correct | good | AB | meaningless | laptop | good_suffix | ..."},
    )
    inverse: bool = field(default=False, metadata={"help": "Inverse ablation: each label gets the other's prompt."})
    negative_ratio: float = field(default=2.0, metadata={"help": "Negatives per positive (paper: 2.0)."})
    pos_num: int = field(default=-1, metadata={"help": "First N positives (-1: all)."})
    neg_num: int = field(default=-1, metadata={"help": "Negatives sampled (-1: negative_ratio per positive)."})
    budget: str = field(default="epochs", metadata={"help": "epochs (paper) | matched_steps."})
    baseline_prompt: str = field(default="official", metadata={"help": "Baselines' prompt: official | env."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {self.domain!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if self.tags not in TAGS:
            raise ValueError(f"tags must be one of {TAGS}, got {self.tags!r}")
        if self.inverse and self.method not in ("nat", "soft"):
            raise ValueError(f"inverse swaps NAT's binary signal; use --method nat or soft, not {self.method!r}")
        if self.negative_ratio < 0:
            raise ValueError(f"negative_ratio must be >= 0 (2.0 is the paper's 1:2), got {self.negative_ratio}")
        if self.pos_num < -1 or self.neg_num < -1:
            raise ValueError("pos_num and neg_num must be >= 0, or -1 (all positives / negative_ratio)")
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}, got {self.budget!r}")
        if self.baseline_prompt not in BASELINE_PROMPTS:
            raise ValueError(f"baseline_prompt must be one of {BASELINE_PROMPTS}, got {self.baseline_prompt!r}")


def matched_steps(num_positives: int, config: SFTArgs) -> int:
    """Optimiser steps positives-only takes for ``num_train_epochs`` (the ``matched_steps`` budget).

    One epoch is ``ceil(positives / (per-device batch x processes))`` micro-steps, grouped by
    ``gradient_accumulation_steps``; ``WORLD_SIZE`` counts the processes under a launcher.
    """
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    micro_steps = math.ceil(num_positives / (config.per_device_train_batch_size * processes))
    return max(1, math.ceil(config.num_train_epochs * micro_steps / config.gradient_accumulation_steps))


def train_nat(config: NATArgs, trajectories: Sequence[Trajectory] | None = None) -> dict[str, Any]:
    """Build the NAT dataset, fine-tune with TRL's SFTTrainer, save the model to ``output_dir``.

    Args:
        config: The run's configuration.
        trajectories: Trajectories to train on; read from ``config.trajectories`` when ``None``.

    Returns:
        ``{"output_dir", "examples", "positives", "negatives", "train_loss", "global_step", ...}``.
    """
    quiet_library_bars(force=config.disable_tqdm)  # no carriage-return bars in a log
    from transformers import set_seed
    from trl import SFTTrainer

    # Seed.
    set_seed(config.seed)

    # Data: the official conversations (Sec. 3.2), with the configured amounts (Sec. 4.1).
    if trajectories is None:
        if not config.trajectories:
            raise ValueError("no trajectories: pass --trajectories path.jsonl (from `mulligan collect`)")
        trajectories = [
            t
            for spec in config.trajectories.split(",")
            if spec
            for t in load_trajectory_source(spec, questions=config.questions or None)
        ]
    examples = build_nat_examples(
        trajectories,
        method=config.method,
        domain=config.domain,
        position=config.position,
        tags=config.tags,
        inverse=config.inverse,
        negative_ratio=config.negative_ratio,
        pos_num=config.pos_num,
        neg_num=config.neg_num,
        seed=config.seed,
        baseline_prompt=config.baseline_prompt,
    )
    if not examples:
        raise ValueError(f"method {config.method!r} found nothing to train on among {len(trajectories)} trajectories")
    os.makedirs(config.output_dir, exist_ok=True)
    # Under `accelerate launch` every process builds the same examples; one of them writes the files.
    main_process = int(os.environ.get("RANK", "0")) == 0
    if main_process:
        with open(os.path.join(config.output_dir, "nat_dataset.jsonl"), "w", encoding="utf-8") as handle:
            for example in examples:
                handle.write(json.dumps(example, ensure_ascii=False) + "\n")
    positives = sum(e["label"] in ("positive", CORRECT) for e in examples)

    # Model.
    tokenizer = load_tokenizer(config)
    model = load_model(config)
    dataset = conversations_to_dataset(
        tokenizer,
        [e["messages"] for e in examples],
        config.max_length,
        [e["learn_turns"] for e in examples],
        tools=[e["tools"] for e in examples],
    )

    # Update loop: TRL's SFTTrainer; the assistant mask keeps the loss on the agent's turns. The
    # budget: the paper trains epochs over all the data; matched_steps caps NAT at positives-only's steps.
    extra = {}
    if config.max_steps < 0 and config.budget == "matched_steps":
        extra["max_steps"] = matched_steps(positives, config)
    trainer = SFTTrainer(
        model=model, args=config.to_sft_config(**extra), train_dataset=dataset, processing_class=tokenizer
    )
    adapt_trainer_progress(trainer)
    result = trainer.train(resume_from_checkpoint=resolve_checkpoint(config.resume_from_checkpoint, config.output_dir))

    # Checkpoint: the final model loads with from_pretrained(output_dir).
    save_trained(trainer, tokenizer, config.output_dir)
    summary = {
        "output_dir": config.output_dir,
        "method": config.method,
        "examples": len(examples),
        "positives": positives,
        "negatives": len(examples) - positives,
        "train_loss": float(result.training_loss),
        "global_step": int(result.global_step),
        "config": asdict(config),
    }
    if trainer.is_world_process_zero():
        with open(os.path.join(config.output_dir, "nat_summary.json"), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``mulligan train nat``: parse :class:`NATArgs` flags and train."""
    config = parse_args(NATArgs, argv, prog="mulligan train nat", description=__doc__.split("\n")[0])
    summary = train_nat(config)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0


__all__ = [
    "BASELINE_PROMPTS",
    "BUDGETS",
    "METHODS",
    "NATArgs",
    "build_nat_examples",
    "canonical_domain",
    "matched_steps",
    "three_class_label",
    "train_nat",
]
