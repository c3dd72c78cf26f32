"""NAT: negative-aware fine-tuning (Wang et al. 2024, arXiv 2402.11651).

NAT fine-tunes an agent on both successful and failed trajectories and tells the model which is
which through the prompt (Sec. 3.2): a positive trajectory's question is followed by an
instruction to solve it *correctly*, a negative's by an instruction to solve it *incorrectly*. At
inference the "correctly" prompt is used (:class:`NATPromptAgent`), so the model has learned what
success looks like by contrast with failure.

What is here:

* :func:`nat_prompt`: the paper's exact prompts, math and QA wordings, as a suffix (the paper's
  main setting) or a prefix (the ablation of Sec. 4.4), and the four fine-grained quality labels
  by F1 for QA (Sec. 3.3, labels from :mod:`mulligan.envs.verifiers.qa`).
* :func:`build_nat_examples`: the SFT conversations for NAT and the paper's baselines,
  ``positives_only`` (the usual agent-tuning recipe) and ``nut`` (negatives mixed in without the
  prompt signal), with the positive:negative ratio as a parameter (1:2 by default, Sec. 4.1).
* :func:`conversations_to_dataset`: pre-tokenized ``input_ids`` + ``assistant_masks`` from
  :func:`mulligan.training.tokens.tokenize_conversation`, so TRL's SFTTrainer computes the loss on
  the agent's turns only.
* :func:`train_nat` and ``main``: ``mulligan train nat`` on a trajectory JSONL.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mulligan.agents.base import Action, Agent, AgentInput
from mulligan.envs.verifiers.qa import CORRECT, fine_grained_label
from mulligan.training.trajectory import Trajectory, load_trajectories

#: NAT's prompts (arXiv 2402.11651, Sec. 3.2). ``{question}`` is the task as the agent first saw it.
NAT_INSTRUCTIONS: dict[str, dict[str, str]] = {
    "math": {
        "positive": "Generate a sequence of Thought and Action steps to solve the problem correctly.",
        "negative": "Generate a sequence of Thought and Action steps. But incorrectly solve the problem.",
    },
    # The QA wording speaks of the question and marks the signal word (Sec. 3.2, QA tasks).
    "qa": {
        "positive": "Generate a sequence of Thought and Action steps to answer the question **correctly**.",
        "negative": "Generate a sequence of Thought and Action steps. But answer the question **incorrectly**.",
    },
}
#: The fine-grained QA instruction (Sec. 3.3): the label names the quality of the trajectory.
FINE_GRAINED_INSTRUCTION = "Generate a sequence of Thought and Action steps whose answer is {label}."
METHODS = ("nat", "positives_only", "nut", "fine_grained")
POSITIONS = ("suffix", "prefix")


def nat_prompt(question: str, label: str | bool, *, domain: str = "math", position: str = "suffix") -> str:
    """The NAT prompt for ``question``.

    Args:
        question: The task text.
        label: ``True``/``"positive"`` for the "correctly" prompt, ``False``/``"negative"`` for the
            "incorrectly" prompt, or one of the four fine-grained QA labels (``"[Correct]"``, ...).
        domain: ``"math"`` or ``"qa"`` (selects the wording).
        position: ``"suffix"`` (``"Question: {question}. <instruction>"``, the paper's main
            setting) or ``"prefix"`` (the instruction first, the ablation).

    Raises:
        ValueError: On an unknown domain, position or label.
    """
    if domain not in NAT_INSTRUCTIONS:
        raise ValueError(f"domain must be one of {sorted(NAT_INSTRUCTIONS)}, got {domain!r}")
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
    if label is True or label == "positive":
        instruction = NAT_INSTRUCTIONS[domain]["positive"]
    elif label is False or label == "negative":
        instruction = NAT_INSTRUCTIONS[domain]["negative"]
    elif isinstance(label, str) and label.startswith("[") and label.endswith("]"):
        instruction = FINE_GRAINED_INSTRUCTION.format(label=label)
    else:
        raise ValueError(f"label must be True/False, 'positive'/'negative' or a fine-grained label, got {label!r}")
    if position == "suffix":
        return f"Question: {question}. {instruction}"
    return f"{instruction} Question: {question}."


def with_first_user_message(messages: Sequence[dict[str, str]], content: str) -> list[dict[str, str]]:
    """A copy of ``messages`` whose first user message is replaced by ``content``."""
    out = [dict(m) for m in messages]
    for message in out:
        if message["role"] == "user":
            message["content"] = content
            break
    return out


def build_nat_examples(
    trajectories: Sequence[Trajectory],
    *,
    method: str = "nat",
    domain: str = "math",
    position: str = "suffix",
    negative_ratio: float = 2.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """SFT conversations for NAT or one of its baselines.

    Every positive (successful) trajectory is kept. Negatives are subsampled (without replacement,
    seeded) to ``round(negative_ratio * positives)``, or all of them when fewer exist: the paper's
    positive:negative ratio is 1:2 (Sec. 4.1).

    * ``nat``: positives get the "correctly" prompt, negatives the "incorrectly" prompt.
    * ``fine_grained``: every trajectory gets the label of its score (QA F1, Sec. 3.3); the
      ``[Correct]`` ones count as positives for the ratio.
    * ``nut``: positives and negatives with the env's own prompt (no signal), the paper's NUT.
    * ``positives_only``: positives with the env's own prompt (the usual recipe).

    Returns:
        Dicts with ``messages`` (the conversation to learn), ``label`` (``"positive"``,
        ``"negative"`` or a fine-grained label), ``task_id`` and ``score``, positives first.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if negative_ratio < 0:
        raise ValueError(f"negative_ratio must be >= 0, got {negative_ratio}")
    if method == "fine_grained":
        labelled = [(t, fine_grained_label(min(1.0, max(0.0, float(t.score))))) for t in trajectories]
        positives = [(t, label) for t, label in labelled if label == CORRECT]
        negatives = [(t, label) for t, label in labelled if label != CORRECT]
    else:
        positives = [(t, "positive") for t in trajectories if t.success]
        negatives = [(t, "negative") for t in trajectories if not t.success]
    if method == "positives_only":
        negatives = []
    wanted = round(negative_ratio * len(positives))
    if len(negatives) > wanted:
        negatives = random.Random(seed).sample(negatives, wanted)

    examples = []
    for trajectory, label in positives + negatives:
        messages = trajectory.messages
        if method in ("nat", "fine_grained"):
            messages = with_first_user_message(
                messages, nat_prompt(trajectory.question, label, domain=domain, position=position)
            )
        examples.append(
            {"messages": [dict(m) for m in messages], "label": label, "task_id": trajectory.task_id,
             "score": float(trajectory.score)}
        )
    return examples


def conversations_to_dataset(tokenizer, conversations: Sequence[Sequence[dict[str, str]]], max_length: int | None):
    """A pre-tokenized ``datasets.Dataset`` (``input_ids``, ``assistant_masks``) for TRL's SFTTrainer.

    The mask comes from :func:`~mulligan.training.tokens.tokenize_conversation`: SFTTrainer turns
    it into labels (-100 off the agent's tokens), so the loss falls on the agent's turns only.
    Conversations longer than ``max_length`` keep their start (SFTTrainer truncates the same way).
    """
    from datasets import Dataset

    from mulligan.training.tokens import tokenize_conversation

    rows: dict[str, list] = {"input_ids": [], "assistant_masks": []}
    for messages in conversations:
        episode = tokenize_conversation(tokenizer, messages)
        ids, mask = episode.input_ids, episode.assistant_mask
        if max_length is not None:
            ids, mask = ids[:max_length], mask[:max_length]
        if not any(mask):
            continue  # nothing of the agent's left to learn
        rows["input_ids"].append(ids)
        rows["assistant_masks"].append(mask)
    if not rows["input_ids"]:
        raise ValueError(
            f"no conversation has an agent turn left to learn after truncation to max_length={max_length}; "
            "raise --max_length"
        )
    return Dataset.from_dict(rows)


class NATPromptAgent(Agent):
    """Wrap an agent so that it sees NAT's inference prompt: the "correctly" instruction (Sec. 3.2).

    The first user message (the task) is rewritten with :func:`nat_prompt` (label positive, or
    ``[Correct]`` for fine-grained models) before the inner agent acts; the env is untouched.

    Args:
        agent: The agent to wrap (typically an :class:`~mulligan.agents.hf.HFAgent`).
        domain: ``"math"`` or ``"qa"``.
        position: ``"suffix"`` or ``"prefix"``, as in training.
        fine_grained: Use the ``[Correct]`` label prompt instead.
    """

    def __init__(self, agent: Agent, *, domain: str = "math", position: str = "suffix", fine_grained: bool = False):
        nat_prompt("", True, domain=domain, position=position)  # validate early
        self.agent = agent
        self.domain = domain
        self.position = position
        self.label = CORRECT if fine_grained else True
        self.name = f"nat({getattr(agent, 'name', None) or type(agent).__name__})"

    def _rewrite(self, item: AgentInput) -> AgentInput:
        question = next((m["content"] for m in item.messages if m["role"] == "user"), "")
        messages = with_first_user_message(
            item.messages, nat_prompt(question, self.label, domain=self.domain, position=self.position)
        )
        return AgentInput(messages, item.task, item.info, item.env_id, item.stop)

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """Act with the rewritten prompts."""
        return self.agent.act([self._rewrite(x) for x in inputs])

    def sample(self, inputs: Sequence[AgentInput], num_samples: int) -> list[list[Action]]:
        """Sample with the rewritten prompts."""
        return self.agent.sample([self._rewrite(x) for x in inputs], num_samples)

    def reset(self, seed: int | None = None) -> None:
        """Reseed the inner agent."""
        self.agent.reset(seed)


@dataclass
class NATConfig:
    """Configuration of ``mulligan train nat``.

    Attributes:
        trajectories: JSONL file(s) of trajectories (positives and negatives), comma-separated.
        output_dir: Where checkpoints, the final model and ``nat_dataset.jsonl`` go.
        method: ``nat`` (the paper's method), ``positives_only`` or ``nut`` (its baselines), or
            ``fine_grained`` (four QA labels by F1).
        domain: Prompt wording, ``math`` or ``qa``.
        position: Where the instruction goes: ``suffix`` (paper default) or ``prefix`` (ablation).
        negative_ratio: Negatives per positive (the paper's 1:2 is 2.0).
        model: A Hugging Face id or local path, or ``tiny`` for the offline tiny model.
        max_length: Longest training sequence in tokens (longer ones keep their start).
        num_train_epochs: Passes over the dataset (ignored when ``max_steps`` > 0).
        max_steps: Optimiser steps; -1 uses ``num_train_epochs``.
        per_device_train_batch_size: Sequences per device per step.
        gradient_accumulation_steps: Micro-batches per optimiser step.
        learning_rate: Peak learning rate.
        lr_scheduler_type: Learning-rate schedule (any transformers scheduler name).
        warmup_ratio: Fraction of steps for linear warm-up.
        logging_steps: Log every this many steps.
        save_steps: Checkpoint every this many steps.
        save_total_limit: Checkpoints kept on disk.
        report_to: Metrics integrations (``none``, ``tensorboard``, ``wandb``, ... comma-separated).
        resume_from_checkpoint: A checkpoint folder, or ``auto`` for the latest in ``output_dir``.
        seed: Seed of subsampling, initialisation order and data shuffling.
        disable_tqdm: Hide progress bars.
    """

    trajectories: str = field(default="", metadata={"help": "Trajectory JSONL file(s), comma-separated."})
    output_dir: str = field(default="runs/nat", metadata={"help": "Checkpoints and final model go here."})
    method: str = field(default="nat", metadata={"help": "nat | positives_only | nut | fine_grained."})
    domain: str = field(default="math", metadata={"help": "Prompt wording: math | qa."})
    position: str = field(default="suffix", metadata={"help": "Instruction position: suffix | prefix."})
    negative_ratio: float = field(default=2.0, metadata={"help": "Negatives per positive (paper: 2.0)."})
    model: str = field(default="tiny", metadata={"help": "HF id or path, or 'tiny'."})
    max_length: int = field(default=1024, metadata={"help": "Longest training sequence (tokens)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs (when max_steps is -1)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimiser steps; -1 uses num_train_epochs."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Sequences per device per step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    lr_scheduler_type: str = field(default="constant_with_warmup", metadata={"help": "LR schedule."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Warm-up fraction."})
    logging_steps: int = field(default=10, metadata={"help": "Log every N steps."})
    save_steps: int = field(default=500, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept."})
    report_to: str = field(default="none", metadata={"help": "none | tensorboard | wandb | ... (comma-separated)."})
    resume_from_checkpoint: str = field(default="", metadata={"help": "Checkpoint dir, or 'auto' for the latest."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.domain not in NAT_INSTRUCTIONS:
            raise ValueError(f"domain must be one of {sorted(NAT_INSTRUCTIONS)}, got {self.domain!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if self.negative_ratio < 0:
            raise ValueError(f"negative_ratio must be >= 0 (2.0 is the paper's 1:2), got {self.negative_ratio}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8 tokens, got {self.max_length}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be a positive int, or -1 to use num_train_epochs; got {self.max_steps}")
        if self.per_device_train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("per_device_train_batch_size and gradient_accumulation_steps must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


def sft_arguments(config, output_dir: str, *, max_length: int | None):
    """TRL ``SFTConfig`` from the shared training fields of a mulligan config (NAT, sub-goal)."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=output_dir,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=[r for r in config.report_to.split(",") if r] or "none",
        seed=config.seed,
        max_length=max_length,
        disable_tqdm=config.disable_tqdm,
        dataloader_num_workers=0,
        use_cpu=not _cuda_available(),
    )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_checkpoint(value: str, output_dir: str) -> str | bool | None:
    """``resume_from_checkpoint`` for ``Trainer.train``: ``auto`` means the latest in ``output_dir``."""
    if not value:
        return None
    if value == "auto":
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    return value


def train_nat(config: NATConfig, trajectories: Sequence[Trajectory] | None = None) -> dict[str, Any]:
    """Build the NAT dataset, fine-tune with TRL's SFTTrainer, save the model to ``output_dir``.

    Args:
        config: The run's configuration.
        trajectories: Trajectories to train on; read from ``config.trajectories`` when ``None``.

    Returns:
        ``{"output_dir", "examples", "positives", "negatives", "train_loss", ...}``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTTrainer

    from mulligan.agents.tiny import resolve_model

    # Seed.
    set_seed(config.seed)

    # Data: positives and negatives with NAT's prompts (Sec. 3.2), at the configured ratio (Sec. 4.1).
    if trajectories is None:
        if not config.trajectories:
            raise ValueError("no trajectories: pass --trajectories path.jsonl (from `mulligan collect`)")
        trajectories = [t for p in config.trajectories.split(",") if p for t in load_trajectories(p)]
    examples = build_nat_examples(
        trajectories, method=config.method, domain=config.domain, position=config.position,
        negative_ratio=config.negative_ratio, seed=config.seed,
    )
    if not examples:
        raise ValueError(f"method {config.method!r} found nothing to train on among {len(trajectories)} trajectories")
    os.makedirs(config.output_dir, exist_ok=True)
    with open(os.path.join(config.output_dir, "nat_dataset.jsonl"), "w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example, ensure_ascii=False) + "\n")

    # Model.
    path = resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    dataset = conversations_to_dataset(tokenizer, [e["messages"] for e in examples], config.max_length)

    # Update loop: TRL's SFTTrainer; the assistant mask keeps the loss on the agent's turns.
    trainer = SFTTrainer(
        model=model,
        args=sft_arguments(config, config.output_dir, max_length=config.max_length),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    result = trainer.train(resume_from_checkpoint=resolve_checkpoint(config.resume_from_checkpoint, config.output_dir))

    # Checkpoint: the final model loads with from_pretrained(output_dir).
    trainer.save_model(config.output_dir)
    tokenizer.save_pretrained(config.output_dir)
    summary = {
        "output_dir": config.output_dir,
        "method": config.method,
        "examples": len(examples),
        "positives": sum(e["label"] in ("positive", CORRECT) for e in examples),
        "negatives": sum(e["label"] not in ("positive", CORRECT) for e in examples),
        "train_loss": float(result.training_loss),
        "global_step": int(result.global_step),
        "config": asdict(config),
    }
    with open(os.path.join(config.output_dir, "nat_summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``mulligan train nat``: parse :class:`NATConfig` flags and train."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(NATConfig, prog="mulligan train nat", description=__doc__.split("\n")[0])
    (config,) = parser.parse_args_into_dataclasses(args=argv if argv is not None else sys.argv[1:])
    summary = train_nat(config)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0
