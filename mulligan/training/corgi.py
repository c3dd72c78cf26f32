"""CORGI: RL with a checker's corrective feedback (Bezalel et al. 2024, arXiv 2411.01483).

CORGI trains a model to use critiques. A session on ``Mulligan/Constraints-v0``: the model answers
the instruction; the rule-based checker's critique comes back as the next user turn
("- Feedback: {critique} Please try again.", Sec. 3); the model retries, up to ``retry_limit``
times; the session's reward is the best attempt's score (``RetryWithFeedback(reward="max")``).
The whole session is one PPO sample with every model token unmasked and every critique masked
(:mod:`mulligan.training.ppo` does the RL, with CORGI's KL coefficient 0.075 by default).

The paper's baseline is the same trainer with ``retry_limit=0`` (plain single-attempt RL), and
its test of generalisation trains on some constraint families and evaluates on held-out ones
(Sec. 4); :func:`train_corgi` evaluates on ``eval_families`` before and after training, with
both first-attempt success and session success.

Command line: ``mulligan train corgi --retry_limit 2 --train_families completion,concepts``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mulligan.training.ppo import PPOConfig, PPOTrainer

DEFAULT_TRAIN_FAMILIES = "completion,concepts,letters,words,keywords,language,length_constraints"
DEFAULT_EVAL_FAMILIES = "detectable_content,detectable_format,combination,startend,change_case,punctuation"


@dataclass
class CORGIConfig(PPOConfig):
    """Configuration of :func:`train_corgi` and ``mulligan train corgi``.

    Every :class:`PPOConfig` field, plus the following.

    Attributes:
        env_id: The constraints env (``Mulligan/Constraints-v0``).
        output_dir: Checkpoints, final model, ``corgi_eval.json``.
        retry_limit: Retries after the first attempt (0 is the paper's baseline, plain RL).
        train_families: Comma-separated constraint families to train on.
        eval_families: Comma-separated held-out families to evaluate on (disjoint from training).
        eval_tasks: Held-out tasks evaluated before and after training (0: no evaluation).
        eval_retry_limit: Retries allowed at evaluation (default: ``retry_limit``).
        eval_task_offset: First task index of the evaluation tasks.
        eval_before: Also evaluate the starting model.
    """

    env_id: str = field(default="Mulligan/Constraints-v0", metadata={"help": "The constraints env id."})
    output_dir: str = field(default="runs/corgi", metadata={"help": "Checkpoints, final model, corgi_eval.json."})
    retry_limit: int = field(default=2, metadata={"help": "Retries after the first attempt (0: baseline RL)."})
    train_families: str = field(default=DEFAULT_TRAIN_FAMILIES, metadata={"help": "Families to train on."})
    eval_families: str = field(default=DEFAULT_EVAL_FAMILIES, metadata={"help": "Held-out families to evaluate."})
    eval_tasks: int = field(default=64, metadata={"help": "Held-out tasks evaluated (0: none)."})
    eval_retry_limit: int | None = field(
        default=None, metadata={"help": "Retries at evaluation (default: retry_limit)."}
    )
    eval_task_offset: int = field(default=1_000_000, metadata={"help": "First task index of the evaluation tasks."})
    eval_before: bool = field(default=True, metadata={"help": "Also evaluate the starting model."})

    def __post_init__(self) -> None:
        from mulligan.envs.verifiers.constraints import FAMILIES

        if isinstance(self.retry_limit, bool) or not isinstance(self.retry_limit, int) or self.retry_limit < 0:
            raise ValueError(
                f"retry_limit must be an int >= 0 (0 is the single-attempt baseline), got {self.retry_limit!r}"
            )
        if self.eval_retry_limit is not None and self.eval_retry_limit < 0:
            raise ValueError(f"eval_retry_limit must be >= 0 or unset, got {self.eval_retry_limit}")
        if self.eval_tasks < 0 or self.eval_task_offset < 0:
            raise ValueError("eval_tasks and eval_task_offset must be >= 0")
        for name in ("train_families", "eval_families"):
            unknown = [f for f in self.families(name) if f not in FAMILIES]
            if unknown or not self.families(name):
                raise ValueError(
                    f"{name} must be a comma-separated subset of {', '.join(FAMILIES)}; got {unknown or '[]'}"
                )
        overlap = set(self.families("train_families")) & set(self.families("eval_families"))
        if overlap:
            raise ValueError(
                f"eval_families must be held out from train_families; both contain {sorted(overlap)}"
            )
        self.max_attempts = self.retry_limit + 1
        super().__post_init__()

    def families(self, name: str = "train_families") -> list[str]:
        """The families listed in ``name`` (``train_families`` or ``eval_families``)."""
        return [f.strip() for f in str(getattr(self, name)).split(",") if f.strip()]

    def env_options(self) -> dict[str, Any]:
        """Training env: the training families, CORGI's session when ``retry_limit > 0``."""
        options = super().env_options()
        options["families"] = self.families("train_families")
        return options

    def eval_env_options(self) -> dict[str, Any]:
        """Evaluation env: the held-out families and ``eval_retry_limit`` retries."""
        options = super().env_options()
        options.pop("max_attempts", None)
        retries = self.retry_limit if self.eval_retry_limit is None else self.eval_retry_limit
        if retries > 0:
            options["max_attempts"] = retries + 1
        options["families"] = self.families("eval_families")
        return options


def evaluate_sessions(model: Any, tokenizer: Any, config: CORGIConfig) -> dict[str, float]:
    """First-attempt and session success, and the mean best score, on the held-out families (greedy)."""
    from mulligan.agents.hf import HFAgent
    from mulligan.training.rollout import collect_episodes

    was_training = model.training
    agent = HFAgent(model, tokenizer, temperature=0.0, max_new_tokens=config.max_new_tokens, seed=config.seed,
                    batch_size=config.num_envs)
    indices = list(range(config.eval_task_offset, config.eval_task_offset + config.eval_tasks))
    try:
        trajectories = collect_episodes(
            config.env_id, agent, len(indices), env_kwargs=config.eval_env_options(), num_envs=config.num_envs,
            seed=config.seed, task_indices=indices, system_prompt=config.system_prompt, progress=False,
        )
    finally:
        model.train(was_training)
    return {
        "first_attempt_success": float(
            np.mean([bool(t.turns and t.turns[0].info.get("success")) for t in trajectories])
        ),
        "session_success": float(np.mean([t.success for t in trajectories])),
        "mean_best_score": float(np.mean([t.episode_return for t in trajectories])),
        "mean_attempts": float(np.mean([len(t.turns) for t in trajectories])),
        "episodes": float(len(trajectories)),
    }


def train_corgi(config: CORGIConfig, model: Any = None, tokenizer: Any = None) -> tuple[PPOTrainer, dict[str, Any]]:
    """Train with CORGI's sessions (PPO) and evaluate on the held-out families.

    Returns the trainer and the evaluation record written to ``output_dir/corgi_eval.json``.
    """
    trainer = PPOTrainer(config, model, tokenizer)
    results: dict[str, Any] = {"retry_limit": config.retry_limit, "train_families": config.families("train_families"),
                               "eval_families": config.families("eval_families")}
    if config.eval_tasks and config.eval_before and trainer.step == 0:
        results["before"] = evaluate_sessions(trainer.policy.model, trainer.tokenizer, config)
    trainer.train()
    if config.eval_tasks:
        results["after"] = evaluate_sessions(trainer.policy.model, trainer.tokenizer, config)
    trainer.output_dir.mkdir(parents=True, exist_ok=True)
    (trainer.output_dir / "corgi_eval.json").write_text(json.dumps(results, indent=2))
    return trainer, results


def main(argv: list[str] | None = None) -> int:
    """``mulligan train corgi``: parse :class:`CORGIConfig` flags, train, evaluate on held-out families."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(CORGIConfig)
    parser.prog = "mulligan train corgi"
    (config,) = parser.parse_args_into_dataclasses(args=list(sys.argv[1:] if argv is None else argv))
    _, results = train_corgi(config)
    print(json.dumps(results))
    return 0
