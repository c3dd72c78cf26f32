"""PPO over multi-turn episodes: a policy with a value head, token-level GAE, a KL penalty.

TRL no longer ships a stable PPO trainer, so mulligan has its own, written to read top to bottom
in the style of cleanrl. One PPO iteration is:

1. **Rollout.** Play ``episodes_per_step`` episodes of the env with the current policy
   (:func:`mulligan.training.rollout.collect_episodes` on an :class:`~mulligan.training.rollout.EnvPool`
   built once, every turn batched across envs).
2. **Tokenize.** Each episode becomes one token sequence with a mask of the model's own tokens
   (:func:`mulligan.training.trajectory.trajectory_sample`, shared with GRPO): every turn's tokens
   are the ids the agent sampled, never a re-tokenisation of its text; env turns, feedback, chat
   headers and a prefilled primer are context, never actions. The env's reward goes on model tokens
   as ``reward_placement`` says (each attempt's reward on its last token, or the whole episode
   return on the session's last token as CORGI does).
3. **Score.** One no-grad pass gives the old log-probabilities and values; the frozen reference
   model gives reference log-probabilities. Per-token rewards are ``-kl_coef * (logp - ref_logp)``
   on every model token (the KL penalty of RLHF's PPO, Ziegler et al. 2019, arXiv 1909.08593;
   0.075 in CORGI, arXiv 2411.01483 App. B), plus the env reward of step 2. ``kl_coef`` is fixed
   or adapted towards ``kl_target`` (``kl_controller``).
4. **Advantages.** GAE (Schulman et al. 2015, arXiv 1506.02438), by default over the model's
   tokens only (``gae_mode="model_tokens"``), or over every position with env tokens zeroed as
   legacy TRL and CORGI do (``"all_tokens"``).
5. **Update.** ``ppo_epochs`` passes over shuffled minibatches of episodes, each minibatch split
   into ``gradient_accumulation_steps`` micro-batches; the clipped surrogate, the clipped value
   loss and an optional entropy bonus.

Metrics, named as TRL's PPO trainer names them and logged every ``logging_steps`` iterations to
``output_dir/metrics.jsonl`` and the ``report_to`` integrations: ``objective/kl`` (summed per
episode), ``objective/kl_coef``, ``objective/scores``, ``objective/non_score_reward``,
``objective/rlhf_reward``, ``policy/approxkl_avg`` (the k3 estimator), ``policy/clipfrac_avg``,
``policy/entropy_avg``, ``loss/policy_avg``, ``loss/value_avg``, ``val/explained_variance``,
``env/success_rate``, ``env/mean_score``, ``env/mean_return``, ``episode``.

Generation with vLLM (``--use_vllm``): the rollouts are sampled by a vLLM engine in the trainer's
process (colocate mode, :func:`mulligan.agents.vllm.colocated_engine`: one engine per process, on a
GPU or with vLLM's CPU build), loaded with the starting weights and given the policy's weights
after every update (:meth:`PPOTrainer.sync_engine`, LoRA merged in). The turns' recorded token ids
are learned as always, and the engine's recorded log-probabilities (the model's own, before
temperature) are the old log-probabilities of the ratio, so the ratio also covers the difference
between the engine's numerics and the trainer's; ``policy/sampler_logprob_gap`` logs that
difference. The KL penalty compares the trainer's own log-probabilities with the reference's.

Data parallel: under ``accelerate launch`` with N processes every process plays its share of each
iteration's episodes and gradients are averaged before every optimizer step (:class:`ProcessGroup`);
the main process alone writes metrics and checkpoints. See ``docs/scaling.md``.

Presets: ``--preset tiny`` (the default; CPU-sized) or ``--preset paper`` (CORGI's legacy-TRL
settings for an 8B model with LoRA; see :data:`PAPER_PRESET` and ``docs/rl.md``).

Command line: ``mulligan train ppo --env_id Mulligan/Echo-v0 --model tiny --total_steps 20``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mulligan.training.args import EnvArgs, LoggingArgs, ModelArgs, SamplingArgs
from mulligan.training.progress import progress_bar

#: The ``report_to`` integrations PPO logs to (besides ``output_dir/metrics.jsonl``, always written):
#: TensorBoard under ``output_dir/runs``; Weights & Biases (``WANDB_PROJECT``, default ``mulligan``;
#: ``WANDB_MODE=offline`` needs no network); trackio (``TRACKIO_PROJECT``, default ``mulligan``; local).
SUPPORTED_REPORT_TO = ("tensorboard", "wandb", "trackio")
STATE_FILE = "ppo_state.pt"
REWARD_PLACEMENTS = ("per_attempt", "last_token")
GAE_MODES = ("model_tokens", "all_tokens")
KL_CONTROLLERS = ("fixed", "adaptive")


def parse_report_to(report_to: str | Sequence[str]) -> list[str]:
    """TRL's ``report_to`` convention: ``"none"``, ``"all"`` or a comma-separated list of integrations.

    Raises:
        ValueError: For an integration PPO cannot log to, naming the supported ones.
    """
    items = [s.strip() for s in report_to.split(",")] if isinstance(report_to, str) else [str(s) for s in report_to]
    items = [s for s in items if s]
    if items in ([], ["none"]):
        return []
    if items == ["all"]:
        # TRL's "all": every supported integration that is installed.
        import importlib.util

        return [s for s in SUPPORTED_REPORT_TO if s == "tensorboard" or importlib.util.find_spec(s) is not None]
    unknown = [s for s in items if s not in SUPPORTED_REPORT_TO]
    if unknown:
        raise ValueError(
            f"report_to {unknown} is not supported by PPO; use 'none', 'all' or a comma list of "
            f"{', '.join(SUPPORTED_REPORT_TO)}"
        )
    return items


# ----------------------------------------------------------------------------------- configuration
#: CORGI's PPO settings (arXiv 2411.01483, App. B; the official ``run_trainer.sh`` and the legacy TRL
#: ``PPOConfig`` defaults it relies on) for an 8B model with LoRA. Legacy TRL's ``mini_batch_size``
#: default changed across versions (1, later 128, more than the batch of 32, i.e. one minibatch);
#: here the whole batch is one minibatch, split into micro-batches only to fit memory. Legacy TRL
#: does not clip gradients (0 here). The official run loads the weights in fp32; ``bf16`` autocast and
#: gradient checkpointing are memory choices that keep fp32 master weights.
PAPER_PRESET: dict[str, Any] = {
    "bf16": True,
    "gradient_checkpointing": True,
    "use_lora": True,
    "lora_r": 16,
    "lora_alpha": 16,
    "lora_target_modules": "q_proj,v_proj",  # peft's default for Llama, which CORGI's LoraConfig gets
    "learning_rate": 1.41e-5,
    "episodes_per_step": 32,
    "mini_batch_size": 32,
    "gradient_accumulation_steps": 8,
    "ppo_epochs": 4,
    "value_coef": 0.1,
    "kl_controller": "adaptive",
    "max_grad_norm": 0.0,
    "max_new_tokens": 150,
    "reward_placement": "last_token",
    "gae_mode": "all_tokens",
}
#: The CPU-sized defaults (``--preset tiny``).
TINY_PRESET: dict[str, Any] = {
    "use_lora": False,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_target_modules": "all-linear",
    "learning_rate": 1e-5,
    "episodes_per_step": 16,
    "mini_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "ppo_epochs": 2,
    "value_coef": 0.5,
    "kl_controller": "fixed",
    "max_grad_norm": 1.0,
    "max_new_tokens": 64,
    "reward_placement": "per_attempt",
    "gae_mode": "model_tokens",
}


@dataclass
class PPOArgs(ModelArgs, EnvArgs, SamplingArgs, LoggingArgs):
    """Configuration of :func:`train_ppo` and ``mulligan train ppo``.

    The model, env, sampling and logging fields are the shared pieces of
    :mod:`mulligan.training.args`; the fields below are PPO's own. A field whose default is
    ``None`` takes its value from ``--preset`` (:data:`TINY_PRESET` or :data:`PAPER_PRESET`); a
    value you pass yourself wins.

    Attributes:
        preset: ``tiny`` (CPU-sized defaults) or ``paper`` (CORGI's settings for an 8B model).
        total_steps: PPO iterations (each: one rollout batch, then the update epochs).
        episodes_per_step: Episodes collected per iteration (tiny 16, paper 32).
        samples_per_task: Episodes per task within a rollout batch.
        ppo_epochs: Passes over each rollout batch (tiny 2, paper 4).
        mini_batch_size: Episodes per optimizer step; must divide ``episodes_per_step``.
        gradient_accumulation_steps: Micro-batches per minibatch (a memory split); must divide
            ``mini_batch_size``.
        learning_rate: AdamW learning rate of the policy and the value head (tiny 1e-5, paper 1.41e-5).
        weight_decay: AdamW weight decay.
        gamma: Discount per token.
        lam: GAE lambda.
        gae_mode: ``model_tokens`` (GAE over the model's tokens only: a turn's last token
            bootstraps from the next turn's first token) or ``all_tokens`` (legacy TRL and CORGI:
            every position, env tokens' values and rewards zeroed, so no bootstrap across env text).
        reward_placement: ``per_attempt`` (each turn's env reward on that turn's last model token;
            under ``RetryWithFeedback(reward="max")`` these are the increments of the running best)
            or ``last_token`` (the whole episode return on the episode's last model token, CORGI's
            placement).
        clip_range: PPO ratio clip epsilon.
        clip_range_value: Value clip range around the old values (0 disables value clipping).
        value_coef: Weight of the value loss (tiny 0.5, paper 0.1).
        entropy_coef: Weight of the entropy bonus.
        kl_coef: (Initial) weight of the per-token KL penalty to the reference model (CORGI: 0.075).
        kl_controller: ``fixed`` or ``adaptive`` (Ziegler et al. 2019; legacy TRL's default, CORGI's).
        kl_target: Adaptive controller: target summed KL per episode (legacy TRL: 6).
        kl_horizon: Adaptive controller: horizon in episodes (legacy TRL: 10000).
        max_grad_norm: Gradient clipping norm (0: no clipping, as legacy TRL).
        whiten_advantages: Normalise advantages over the batch's model tokens.
        device: ``cpu``, ``cuda``, ... (default: CUDA when available); under ``accelerate launch``
            with several processes each process uses the device accelerate gives it.
        use_vllm: Play the rollouts with an in-process vLLM engine (colocate mode; see "Generation
            with vLLM" in the module docstring).
        vllm_gpu_memory_utilization: Share of GPU memory the engine may take (on a CPU,
            ``VLLM_CPU_KVCACHE_SPACE`` sets its KV cache in GiB).
        vllm_max_model_length: The engine's longest sequence (0: the model's).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": TINY_PRESET, "paper": PAPER_PRESET}

    use_lora: bool | None = field(
        default=None, metadata={"help": "Train LoRA adapters (preset: tiny false, paper true)."}
    )
    lora_r: int | None = field(default=None, metadata={"help": "LoRA rank (preset: tiny 8, paper 16)."})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha (preset: tiny 16, paper 16)."})
    lora_target_modules: str | None = field(
        default=None,
        metadata={
            "help": "LoRA modules, comma-separated or all-linear (preset: tiny all-linear, paper q_proj,v_proj)."
        },
    )
    output_dir: str = field(default="runs/ppo", metadata={"help": "Checkpoints, final model and logs."})

    preset: str = field(default="tiny", metadata={"help": "tiny (CPU defaults) or paper (CORGI's settings)."})
    total_steps: int = field(default=20, metadata={"help": "PPO iterations."})
    episodes_per_step: int | None = field(
        default=None, metadata={"help": "Episodes per iteration (tiny 16, paper 32)."}
    )
    samples_per_task: int = field(default=1, metadata={"help": "Episodes per task within a rollout batch."})
    ppo_epochs: int | None = field(default=None, metadata={"help": "Passes over each batch (tiny 2, paper 4)."})
    mini_batch_size: int | None = field(
        default=None, metadata={"help": "Episodes per optimizer step (tiny 8, paper 32)."}
    )
    gradient_accumulation_steps: int | None = field(
        default=None, metadata={"help": "Micro-batches per minibatch (tiny 1, paper 8)."}
    )
    learning_rate: float | None = field(
        default=None, metadata={"help": "AdamW learning rate (tiny 1e-5, paper 1.41e-5)."}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    gamma: float = field(default=1.0, metadata={"help": "Discount per token."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    gae_mode: str | None = field(
        default=None, metadata={"help": "model_tokens or all_tokens (preset: tiny model_tokens, paper all_tokens)."}
    )
    reward_placement: str | None = field(
        default=None, metadata={"help": "per_attempt or last_token (preset: tiny per_attempt, paper last_token)."}
    )
    clip_range: float = field(default=0.2, metadata={"help": "PPO ratio clip epsilon."})
    clip_range_value: float = field(default=0.2, metadata={"help": "Value clip range (0: no value clipping)."})
    value_coef: float | None = field(default=None, metadata={"help": "Value loss weight (tiny 0.5, paper 0.1)."})
    entropy_coef: float = field(default=0.0, metadata={"help": "Weight of the entropy bonus."})
    kl_coef: float = field(default=0.075, metadata={"help": "(Initial) per-token KL penalty (CORGI: 0.075)."})
    kl_controller: str | None = field(
        default=None, metadata={"help": "fixed or adaptive (preset: tiny fixed, paper adaptive)."}
    )
    kl_target: float = field(default=6.0, metadata={"help": "Adaptive KL: target summed KL per episode."})
    kl_horizon: int = field(default=10_000, metadata={"help": "Adaptive KL: horizon in episodes."})
    max_grad_norm: float | None = field(
        default=None, metadata={"help": "Gradient clipping norm, 0: none (tiny 1, paper 0)."}
    )
    whiten_advantages: bool = field(default=True, metadata={"help": "Normalise advantages over the batch."})
    device: str = field(default="", metadata={"help": "cpu, cuda, ... ('' = CUDA when available)."})
    use_vllm: bool = field(
        default=False, metadata={"help": "Generate rollouts with an in-process vLLM engine, synced after each update."}
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.3, metadata={"help": "GPU memory share of the vLLM engine (CPU: VLLM_CPU_KVCACHE_SPACE GiB)."}
    )
    vllm_max_model_length: int = field(default=0, metadata={"help": "The vLLM engine's longest sequence (0: model's)."})

    def __post_init__(self) -> None:
        super().__post_init__()  # fills the preset's fields, then validates the shared pieces
        positive = (
            "total_steps",
            "episodes_per_step",
            "samples_per_task",
            "ppo_epochs",
            "mini_batch_size",
            "gradient_accumulation_steps",
            "kl_horizon",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.episodes_per_step % self.samples_per_task:
            raise ValueError(
                f"episodes_per_step ({self.episodes_per_step}) must be a multiple of samples_per_task "
                f"({self.samples_per_task})"
            )
        if self.episodes_per_step % self.mini_batch_size:
            raise ValueError(
                f"mini_batch_size ({self.mini_batch_size}) must divide episodes_per_step ({self.episodes_per_step})"
            )
        if self.mini_batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) must divide mini_batch_size "
                f"({self.mini_batch_size})"
            )
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={self.gamma}, lam={self.lam}")
        for name in ("clip_range", "learning_rate", "kl_target"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("clip_range_value", "value_coef", "entropy_coef", "kl_coef", "weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name, allowed in (
            ("gae_mode", GAE_MODES),
            ("reward_placement", REWARD_PLACEMENTS),
            ("kl_controller", KL_CONTROLLERS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        self._check_generation()
        parse_report_to(self.report_to)

    def _check_generation(self) -> None:
        """Rollouts are samples: temperature > 0, no beam search; the vLLM engine's sizes."""
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 for PPO rollouts (sampling), got {self.temperature}")
        if self.num_beams != 1:
            raise ValueError("num_beams must be 1 for PPO: beam search is deterministic, PPO samples its rollouts")
        if not 0 < self.vllm_gpu_memory_utilization <= 1 or self.vllm_max_model_length < 0:
            raise ValueError("vllm_gpu_memory_utilization must lie in (0, 1] and vllm_max_model_length be >= 0")

    def training_env_kwargs(self) -> dict[str, Any]:
        """``gymnasium.make`` keyword arguments of the training envs (``env_kwargs`` and ``max_attempts``)."""
        return self.make_kwargs()


# ----------------------------------------------------------------------------------- the math
def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise ``values`` to zero mean and unit variance over the masked positions."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(var + eps) * mask.to(values.dtype)


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
    *,
    mode: str = "model_tokens",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2015, arXiv 1506.02438) over each row.

    ``mode="model_tokens"``: positions where ``mask`` is 0 (env tokens, headers, padding) are
    skipped: the next state of a model token is the next *model* token of the row, whatever env
    text lies between them, and the last model token of the row is terminal (bootstrap value 0).

    ``mode="all_tokens"`` (legacy TRL ``PPOTrainer.compute_advantages``, which CORGI uses): the
    recursion runs over every position with values and rewards multiplied by the mask, so a model
    token followed by env text bootstraps from a zero value, and the advantage of the next turn
    reaches it only through ``(gamma * lam)`` decay over the env tokens.

    Args:
        rewards: ``[B, T]`` per-token rewards (0 where masked).
        values: ``[B, T]`` value estimates.
        mask: ``[B, T]`` 1 for model tokens.
        gamma: Discount per token.
        lam: GAE lambda.
        mode: ``"model_tokens"`` or ``"all_tokens"``.

    Returns:
        ``(advantages, returns)``, both ``[B, T]`` and 0 where masked; ``returns = advantages + values``.
    """
    if mode not in GAE_MODES:
        raise ValueError(f"mode must be one of {GAE_MODES}, got {mode!r}")
    mask = mask.to(values.dtype)
    batch, length = rewards.shape
    advantages = torch.zeros_like(values)
    next_value = torch.zeros(batch, dtype=values.dtype, device=values.device)  # [B]
    running = torch.zeros_like(next_value)  # [B] the GAE recursion state
    if mode == "all_tokens":
        values, rewards = values * mask, rewards * mask
        for t in reversed(range(length)):
            delta = rewards[:, t] + gamma * next_value - values[:, t]
            running = delta + gamma * lam * running
            next_value = values[:, t]
            advantages[:, t] = running
        advantages = advantages * mask
        return advantages, (advantages + values) * mask
    for t in reversed(range(length)):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        candidate = delta + gamma * lam * running
        # At env tokens the recursion state passes through unchanged.
        running = torch.where(m > 0, candidate, running)
        next_value = torch.where(m > 0, values[:, t], next_value)
        advantages[:, t] = candidate * m
    returns = (advantages + values) * mask
    return advantages, returns


class KLController:
    """The KL coefficient: fixed, or adaptive as in Ziegler et al. 2019 (arXiv 1909.08593, Sec. 2.2).

    The adaptive rule (legacy TRL's ``AdaptiveKLController``, CORGI's default) multiplies the
    coefficient after every batch by ``1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon``, where
    ``kl`` is the batch's mean summed KL per episode and ``n`` its number of episodes.

    Args:
        init_kl_coef: The starting coefficient.
        adaptive: Adapt the coefficient; else it stays ``init_kl_coef``.
        target: Target summed KL per episode.
        horizon: Horizon in episodes.
    """

    def __init__(self, init_kl_coef: float, adaptive: bool = False, target: float = 6.0, horizon: int = 10_000):
        self.value = float(init_kl_coef)
        self.adaptive = adaptive
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, kl: float, num_episodes: int) -> None:
        """Move the coefficient after a batch with mean summed KL ``kl`` over ``num_episodes`` episodes."""
        if not self.adaptive:
            return
        proportional_error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + proportional_error * num_episodes / self.horizon


@dataclass
class PPOLoss:
    """The terms of the PPO objective for one micro-batch (see :func:`ppo_loss`).

    Attributes:
        loss: What is minimised: ``policy_loss + value_coef * value_loss - entropy_coef * entropy``.
        policy_loss: Clipped surrogate, negated.
        value_loss: Clipped squared error, halved.
        entropy: Mean per-token entropy of the policy.
        approx_kl: k3 estimate of KL(old || new): ``mean((r - 1) - log r)``.
        clip_fraction: Fraction of tokens whose ratio left ``[1 - eps, 1 + eps]``.
    """

    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor


def ppo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    *,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
    clip_range_value: float = 0.2,
    value_coef: float = 0.5,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> PPOLoss:
    """The clipped PPO objective averaged over the masked tokens.

    ``policy_loss = mean(max(-A r, -A clip(r, 1 - eps, 1 + eps)))`` with ``r = exp(logp - old_logp)``;
    ``value_loss = 0.5 mean(max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2))`` (no clipping
    when ``clip_range_value`` is 0).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    surrogate = -advantages * ratio
    surrogate_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    policy_loss = masked_mean(torch.maximum(surrogate, surrogate_clipped), mask)

    value_error = (values - returns) ** 2
    if clip_range_value > 0:
        clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
        value_error = torch.maximum(value_error, (clipped - returns) ** 2)
    value_loss = 0.5 * masked_mean(value_error, mask)

    mean_entropy = masked_mean(entropy, mask) if entropy is not None else torch.zeros((), device=logprobs.device)
    loss = policy_loss + value_coef * value_loss - entropy_coef * mean_entropy
    with torch.no_grad():
        # k3 estimator of KL(old || new), unbiased and always >= 0: http://joschu.net/blog/kl-approx.html
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
        clip_fraction = masked_mean(((ratio - 1.0).abs() > clip_range).to(logprobs.dtype), mask)
    return PPOLoss(loss, policy_loss, value_loss, mean_entropy, approx_kl, clip_fraction)


def explained_variance(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var(target - predicted) / Var(target)`` over the masked positions (nan when Var(target)=0)."""
    mask = mask.bool()
    y, p = target[mask].double(), predicted[mask].double()
    var_y = y.var(unbiased=False) if y.numel() else torch.tensor(0.0)
    if y.numel() == 0 or var_y == 0:
        return float("nan")
    return float(1.0 - (y - p).var(unbiased=False) / var_y)


# ----------------------------------------------------------------------------------- the policy
class PolicyWithValueHead(nn.Module):
    """A causal LM with a scalar value head on its last hidden state.

    ``forward`` returns per-position logits and values; the value at position ``t`` estimates the
    return from the state "prefix up to and including token t", i.e. before token ``t + 1``.

    Args:
        model: A causal LM (optionally a peft model).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        hidden = model.config.hidden_size if hasattr(model, "config") else model.get_base_model().config.hidden_size
        self.value_head = nn.Linear(hidden, 1)
        # Start from V = 0: the first advantages are the raw (KL-shaped) returns.
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.value_head.to(next(model.parameters()).device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits [B, T, V], values [B, T])``."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return out.logits, values


def token_logprobs_and_entropy(
    logits: torch.Tensor, input_ids: torch.Tensor, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probability of each token given its prefix, aligned with ``input_ids`` (position 0 is 0).

    Logits at position ``t - 1`` predict token ``t``, so the result at ``t`` is
    ``log p(input_ids[t] | input_ids[:t])``.
    """
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = log_probs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    zeros = torch.zeros_like(picked[:, :1])
    entropy = None
    if with_entropy:
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        entropy = torch.cat([zeros, entropy], dim=1)
    return torch.cat([zeros, picked], dim=1), entropy


def state_values(values: torch.Tensor) -> torch.Tensor:
    """Shift values so that position ``t`` holds V(prefix before token t), aligned with token ``t``."""
    return torch.cat([torch.zeros_like(values[:, :1]), values[:, :-1]], dim=1)


# ----------------------------------------------------------------------------------- episodes as tensors
@dataclass
class EpisodeBatch:
    """Episodes padded into tensors (right padding).

    Attributes:
        input_ids: ``[B, T]`` token ids of each episode (the tokens sampled, env tokens between turns).
        attention_mask: ``[B, T]`` 1 for real tokens.
        action_mask: ``[B, T]`` 1 for the model's own tokens (what PPO learns).
        env_rewards: ``[B, T]`` env rewards on model tokens, placed as ``reward_placement`` says.
        sampled_logprobs: ``[B, T]`` the sampler's recorded log-probability of each model token
            (``NaN`` where none was recorded and on every other token).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    action_mask: torch.Tensor
    env_rewards: torch.Tensor
    sampled_logprobs: torch.Tensor

    def select(self, rows: Sequence[int]) -> EpisodeBatch:
        """The sub-batch of ``rows``, trimmed to its longest sequence."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        width = int(self.attention_mask[index].sum(1).max())
        tensors = (self.input_ids, self.attention_mask, self.action_mask, self.env_rewards, self.sampled_logprobs)
        return EpisodeBatch(*(t[index, :width] for t in tensors))


def _place_rewards(trajectory: Any, sample: Any, placement: str) -> list[float]:
    """Per-token env rewards of one episode sample (see :func:`episodes_to_batch`)."""
    offset = len(sample.prompt_ids)
    rewards = [0.0] * (offset + len(sample.completion_ids))
    if placement == "last_token":
        learned = [t for t, m in enumerate(sample.env_mask) if m]
        if learned:
            rewards[offset + learned[-1]] = float(trajectory.episode_return)
        return rewards
    for end, turn in zip(sample.turn_ends, trajectory.turns, strict=False):
        rewards[offset + end] += float(turn.reward)
    return rewards


def episodes_to_batch(
    trajectories: Sequence[Any],
    tokenizer,
    pad_token_id: int | None = None,
    reward_placement: str = "per_attempt",
) -> EpisodeBatch:
    """Turn trajectories into token sequences (model tokens masked in, env tokens out) and pad them.

    Each episode is :func:`mulligan.training.trajectory.trajectory_sample`: when a model agent
    played it, every turn's tokens are the ids it sampled (:attr:`~mulligan.training.trajectory.Turn.completion_ids`,
    not a re-tokenisation of the text, which can differ) with their recorded log-probabilities, and
    the env's tokens (observations, feedback, chat headers, a prefilled primer) between them are
    context. A scripted teacher's episode is tokenized from its text.

    Args:
        trajectories: Played episodes (:class:`~mulligan.training.trajectory.Trajectory`).
        tokenizer: The policy's tokenizer (rendering through :mod:`mulligan.training.chat`).
        pad_token_id: Padding id (default: the tokenizer's).
        reward_placement: ``"per_attempt"``: each turn's env reward on the last model token of that
            turn. ``"last_token"``: the episode return (the sum of the turn rewards; the best
            attempt's score under ``RetryWithFeedback(reward="max")``) on the episode's last model
            token, as CORGI's trainer adds its score (arXiv 2411.01483, Sec. 3).

    Raises:
        ValueError: If an episode's agent did not see the whole history, or a multi-turn episode's
            chat template is not append-only.
    """
    from mulligan.training.trajectory import trajectory_sample

    if reward_placement not in REWARD_PLACEMENTS:
        raise ValueError(f"reward_placement must be one of {REWARD_PLACEMENTS}, got {reward_placement!r}")
    rows = []
    for trajectory in trajectories:
        sample = trajectory_sample(tokenizer, trajectory)
        logprobs = sample.logprobs or [None] * len(sample.completion_ids)
        rows.append(
            (
                sample.prompt_ids + sample.completion_ids,
                [0] * len(sample.prompt_ids) + sample.env_mask,
                _place_rewards(trajectory, sample, reward_placement),
                [math.nan] * len(sample.prompt_ids)
                + [x if m and x is not None else math.nan for x, m in zip(logprobs, sample.env_mask, strict=True)],
            )
        )
    pad = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
    width = max(len(r[0]) for r in rows)
    input_ids = torch.full((len(rows), width), pad if pad is not None else 0, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    action = torch.zeros((len(rows), width), dtype=torch.long)
    env_rewards = torch.zeros((len(rows), width), dtype=torch.float32)
    sampled = torch.full((len(rows), width), math.nan, dtype=torch.float32)
    for i, (ids, mask, rewards, lps) in enumerate(rows):
        n = len(ids)
        input_ids[i, :n] = torch.tensor(ids)
        attention[i, :n] = 1
        action[i, :n] = torch.tensor(mask)
        env_rewards[i, :n] = torch.tensor(rewards)
        sampled[i, :n] = torch.tensor(lps, dtype=torch.float32)
    return EpisodeBatch(input_ids, attention, action, env_rewards, sampled)


# ----------------------------------------------------------------------------------- data parallel
class ProcessGroup:
    """The processes of an ``accelerate launch`` run, as PPO uses them (one process: nothing to do).

    PPO is data-parallel as TRL's trainers are: every process holds the whole policy, plays its
    share of each iteration's episodes, and the gradients of every minibatch are averaged over the
    processes before the optimizer step, so the weights stay identical everywhere. The process
    group is the one ``accelerate launch`` sets up (gloo on CPUs, NCCL on GPUs), through
    ``accelerate.PartialState``.

    Args:
        cpu: Form the group of CPU processes (gloo) even where a GPU is visible.
    """

    def __init__(self, cpu: bool = False) -> None:
        import os

        from accelerate import PartialState

        # As transformers' Trainer: on CPUs (``ACCELERATE_USE_CPU=1``, or no GPU) accelerate forms
        # the group only when asked for CPU processes.
        cpu = cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        state = PartialState(cpu=cpu or not torch.cuda.is_available())
        self.size = int(state.num_processes)
        self.rank = int(state.process_index)
        self.is_main = bool(state.is_main_process)
        self.device = state.device

    def _dist(self):
        import torch.distributed as dist

        return dist

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the processes, in place."""
        if self.size > 1:
            self._dist().all_reduce(tensor)
        return tensor

    def mean(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        """Each value averaged over the processes (every process holds the same number of episodes)."""
        if self.size == 1:
            return values
        names = sorted(values)
        stacked = torch.tensor([values[n] for n in names], dtype=torch.float64, device=device)
        self.all_reduce_sum_(stacked)
        return {n: float(v) / self.size for n, v in zip(names, stacked.tolist(), strict=True)}

    def average_gradients(self, parameters: Sequence[nn.Parameter]) -> None:
        """Replace every gradient by its mean over the processes."""
        if self.size == 1:
            return
        for parameter in parameters:
            if parameter.grad is not None:
                self._dist().all_reduce(parameter.grad)
                parameter.grad.div_(self.size)

    def broadcast_parameters(self, module: nn.Module) -> None:
        """Copy the main process's weights to every process (identical starting points)."""
        if self.size == 1:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                self._dist().broadcast(tensor.data, src=0)

    def gather(self, items: Sequence[Any]) -> list[Any]:
        """Every process's ``items``, concatenated in process order (on every process)."""
        if self.size == 1:
            return list(items)
        gathered: list[Any] = [None] * self.size
        self._dist().all_gather_object(gathered, list(items))
        return [item for part in gathered for item in part]

    def barrier(self) -> None:
        """Wait for every process."""
        if self.size > 1:
            self._dist().barrier()


# ----------------------------------------------------------------------------------- the trainer
class PPOTrainer:
    """PPO on a mulligan env; see the module docstring for one iteration, step by step.

    The training envs are built once (an :class:`~mulligan.training.rollout.EnvPool` of
    ``num_envs`` envs) and reused by every iteration; :meth:`close` (or ``with PPOTrainer(...)``)
    releases them.

    Under ``accelerate launch`` with N processes (:class:`ProcessGroup`) each process plays
    ``episodes_per_step / N`` of every iteration's tasks and updates on minibatches of
    ``mini_batch_size / N`` of its episodes; gradients are averaged over the processes before each
    optimizer step, advantages are whitened and the KL coefficient adapted with statistics of all
    processes, and only the main process writes metrics, checkpoints and the model.

    Args:
        args: The run's :class:`PPOArgs`.
        model: A loaded causal LM to train instead of ``args.model``.
        tokenizer: Its tokenizer (required with ``model``).
        env: An :class:`~mulligan.training.rollout.EnvPool` to train on instead of one built from
            ``args`` (the caller keeps ownership and closes it).
    """

    def __init__(self, args: PPOArgs, model: Any = None, tokenizer: Any = None, env: Any = None):
        from mulligan.training.rollout import EnvPool
        from mulligan.training.sft import load_model, load_tokenizer

        self.args = args
        _seed_everything(args.seed)
        self.processes = ProcessGroup(cpu=args.device == "cpu")
        self._check_split(args, self.processes.size)
        if self.processes.size > 1:
            self.device = torch.device(self.processes.device)  # each process its own device
        else:
            self.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if model is None:
            model, tokenizer = load_model(args), tokenizer or load_tokenizer(args)
        elif tokenizer is None:
            raise ValueError("pass the tokenizer with a loaded model: PPOTrainer(args, model, tokenizer)")
        elif args.use_lora:
            from peft import get_peft_model

            model = get_peft_model(model, args.lora_config())
        self.tokenizer = tokenizer
        model.to(self.device)
        self.processes.broadcast_parameters(model)
        if args.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            if args.use_lora:
                model.enable_input_require_grads()  # checkpointed LoRA layers need a grad-carrying input

        # The reference is frozen at the starting weights: with LoRA, the base model with the
        # adapters switched off (no second copy); otherwise a frozen copy.
        self.reference = None if args.use_lora else copy.deepcopy(model).eval().requires_grad_(False)
        self.policy = PolicyWithValueHead(model)
        self.engine = self._start_engine() if args.use_vllm else None
        self.optimizer = torch.optim.AdamW(
            [p for p in self.policy.parameters() if p.requires_grad],
            lr=args.learning_rate,
            weight_decay=args.weight_decay,
        )
        self.kl_controller = KLController(
            args.kl_coef, args.kl_controller == "adaptive", args.kl_target, args.kl_horizon
        )
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.output_dir = Path(args.output_dir)
        self.report_to = parse_report_to(args.report_to)
        self._writer = None
        self._runs: dict[str, Any] = {}  # wandb / trackio runs, started at the first log
        # Built once: a ScienceWorld JVM or a HotpotQA index is not rebuilt every iteration.
        self._owns_env = env is None
        self.env = env if env is not None else EnvPool(args.env_id, args.num_envs, args.training_env_kwargs())
        if args.resume_from_checkpoint:
            self.load_checkpoint(args.resume_from_checkpoint)

    @staticmethod
    def _check_split(args: PPOArgs, processes: int) -> None:
        """Refuse batch sizes that do not split evenly over ``processes`` (each must do equal work)."""
        if processes == 1:
            return
        tasks = args.episodes_per_step // args.samples_per_task
        if tasks % processes or args.mini_batch_size % processes:
            raise ValueError(
                f"with {processes} processes, episodes_per_step / samples_per_task ({tasks}) and mini_batch_size "
                f"({args.mini_batch_size}) must be multiples of {processes}"
            )
        if (args.mini_batch_size // processes) % args.gradient_accumulation_steps:
            raise ValueError(
                f"gradient_accumulation_steps ({args.gradient_accumulation_steps}) must divide each process's "
                f"minibatch (mini_batch_size / processes = {args.mini_batch_size // processes})"
            )

    def close(self) -> None:
        """Close the training envs (when this trainer built them), the TensorBoard writer and the vLLM engine.

        After it, :meth:`agent` generates with transformers.
        """
        if self.engine is not None:
            import gc

            self.engine = None
            gc.collect()
        if self._owns_env:
            self.env.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for run in self._runs.values():
            run.finish()
        self._runs = {}

    def __enter__(self) -> PPOTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def autocast(self):
        """bf16 autocast for forward passes when ``args.bf16`` (fp32 master weights stay), else a no-op."""
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=bool(self.args.bf16))

    # ------------------------------------------------------------------ generation with vLLM
    def _start_engine(self) -> Any:
        """The colocated vLLM engine, loaded with the policy's starting weights (through a temporary copy on disk)."""
        from mulligan.agents.vllm import colocated_engine

        language_model = self.policy.model
        if hasattr(language_model, "get_base_model"):  # LoRA: at the start the adapters add nothing
            language_model = language_model.get_base_model()
        import shutil

        # The engine reads the starting weights once, at load; the copy is removed after it.
        directory = Path(self.args.output_dir) / f"vllm_start_rank{self.processes.rank}"
        language_model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        dtype = str(next(language_model.parameters()).dtype).removeprefix("torch.")
        try:
            return colocated_engine(
                str(directory),
                seed=self.processes.rank,
                dtype=dtype,
                gpu_memory_utilization=self.args.vllm_gpu_memory_utilization,
                max_model_len=self.args.vllm_max_model_length or None,
            )
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def engine_weights(self):
        """The policy's weights under transformers' names, LoRA merged in (what the engine loads)."""
        model = self.policy.model
        if not hasattr(model, "merge_adapter"):
            yield from model.named_parameters()
            return
        model.merge_adapter()
        try:
            for name, tensor in model.named_parameters():
                if "lora_" in name or "original_module" in name:
                    continue
                yield name.removeprefix("base_model.model.").replace(".base_layer", ""), tensor
        finally:
            model.unmerge_adapter()

    @torch.no_grad()
    def sync_engine(self) -> None:
        """Load the policy's current weights into the vLLM engine (after every update); no-op without one."""
        if self.engine is None:
            return
        from mulligan.agents.vllm import sync_engine_weights

        sync_engine_weights(self.engine, self.engine_weights())

    # ------------------------------------------------------------------ 1. rollout
    def agent(self, temperature: float | None = None, seed: int = 0) -> Any:
        """An agent on the current policy (``temperature`` 0: greedy).

        :class:`~mulligan.agents.hf.HFAgent`, or with ``use_vllm`` a
        :class:`~mulligan.agents.vllm.VLLMAgent` on the colocated engine (synced to the policy).
        """
        from mulligan.agents.hf import HFAgent

        args = self.args
        if self.engine is not None:
            from mulligan.agents.vllm import VLLMAgent

            return VLLMAgent(
                self.engine,
                temperature=args.temperature if temperature is None else temperature,
                top_p=args.top_p,
                max_new_tokens=args.max_new_tokens,
                seed=seed,
                system_prompt=args.system_prompt or None,
                tokenizer=self.tokenizer,
                prefill_response=bool(args.prefill_response),
            )
        return HFAgent(
            self.policy.model,
            self.tokenizer,
            temperature=args.temperature if temperature is None else temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            seed=seed,
            batch_size=args.num_envs,
            system_prompt=args.system_prompt or None,
            prefill_response=bool(args.prefill_response),
        )

    def collect(self, step: int) -> list[Any]:
        """Play one iteration's episodes with the current policy (sampling)."""
        from mulligan.training.rollout import collect_episodes

        args = self.args
        num_tasks = args.episodes_per_step // args.samples_per_task
        first = args.task_offset + step * num_tasks
        size = self.env.num_tasks
        indices = [i % size if size else i for i in range(first, first + num_tasks)]  # finite datasets wrap
        rank, processes = self.processes.rank, self.processes.size
        indices = indices[rank::processes]  # this process's share of the iteration's tasks
        try:
            return collect_episodes(
                self.env,
                self.agent(seed=args.seed * 100_003 + step),
                len(indices) * args.samples_per_task,
                seed=(args.seed + step) * processes + rank,  # one process: the run seed + step
                task_indices=indices,
                samples_per_task=args.samples_per_task,
                progress=False,
            )
        finally:
            self.policy.train()

    # ------------------------------------------------------------------ 2-4. score and advantages
    @torch.no_grad()
    def score(self, batch: EpisodeBatch) -> dict[str, torch.Tensor]:
        """Old log-probs and values, reference log-probs, KL-shaped rewards, GAE advantages and returns."""
        args = self.args
        ids, attention = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        mask = batch.action_mask.to(self.device).float()
        with self.autocast():
            logits, values = self.policy(ids, attention)
        policy_logprobs, _ = token_logprobs_and_entropy(logits, ids)
        old_logprobs = policy_logprobs
        if self.engine is not None:
            # The behaviour policy is the engine that sampled: its recorded log-probs are the ratio's
            # denominator (where it recorded one), so the ratio also corrects the engine's numerics.
            sampled = batch.sampled_logprobs.to(self.device)
            old_logprobs = torch.where(torch.isfinite(sampled) & mask.bool(), sampled, policy_logprobs)
        old_values = state_values(values) * mask
        ref_logprobs = self._reference_logprobs(ids, attention)
        kl = (policy_logprobs - ref_logprobs) * mask  # k1 per token, as legacy TRL's kl_penalty="kl"
        non_score = -self.kl_controller.value * kl
        rewards = non_score + batch.env_rewards.to(self.device) * mask
        advantages, returns = compute_gae(rewards, old_values, mask, args.gamma, args.lam, mode=args.gae_mode)
        if args.whiten_advantages:
            advantages = self._whiten(advantages, mask)
        return {
            "old_logprobs": old_logprobs * mask,
            "policy_logprobs": policy_logprobs * mask,
            "old_values": old_values,
            "advantages": advantages,
            "returns": returns,
            "kl": kl,
            "non_score_reward": non_score,
        }

    def _whiten(self, values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """:func:`masked_whiten` with the mean and variance of every process's model tokens."""
        if self.processes.size == 1:
            return masked_whiten(values, mask, eps)
        weights = mask.to(values.dtype)
        totals = self.processes.all_reduce_sum_(torch.stack([(values * weights).sum(), weights.sum()]))
        mean = totals[0] / totals[1].clamp(min=1.0)
        squares = self.processes.all_reduce_sum_(((values - mean) ** 2 * weights).sum())
        var = squares / totals[1].clamp(min=1.0)
        return (values - mean) * torch.rsqrt(var + eps) * weights

    def _reference_logprobs(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            if self.reference is not None:
                logits = self.reference(input_ids=ids, attention_mask=attention).logits
            else:
                with self.policy.model.disable_adapter():
                    logits = self.policy.model(input_ids=ids, attention_mask=attention).logits
        return token_logprobs_and_entropy(logits, ids)[0]

    # ------------------------------------------------------------------ 5. update
    def update(self, batch: EpisodeBatch, scored: dict[str, torch.Tensor]) -> dict[str, float]:
        """``ppo_epochs`` passes of clipped-objective minibatch updates; returns averaged diagnostics."""
        args = self.args
        generator = torch.Generator().manual_seed(args.seed * 7919 + self.step)
        size = batch.input_ids.shape[0]
        mini_batch_size = args.mini_batch_size // self.processes.size  # this process's share
        micro = mini_batch_size // args.gradient_accumulation_steps
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        sums: dict[str, float] = {}
        count = 0
        self.policy.train()
        for _ in range(args.ppo_epochs):
            order = torch.randperm(size, generator=generator).tolist()
            for start in range(0, size, mini_batch_size):
                minibatch = order[start : start + mini_batch_size]
                self.optimizer.zero_grad(set_to_none=True)
                for m in range(0, len(minibatch), micro):
                    rows = minibatch[m : m + micro]
                    terms = self._micro_batch_loss(batch, scored, rows)
                    (terms.loss / args.gradient_accumulation_steps).backward()
                    for name in ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
                        sums[name] = sums.get(name, 0.0) + float(getattr(terms, name).detach())
                    count += 1
                self.processes.average_gradients(trainable)  # data parallel: every process steps alike
                if args.max_grad_norm > 0:
                    nn.utils.clip_grad_norm_(self.policy.parameters(), args.max_grad_norm)
                self.optimizer.step()
        return {name: total / max(count, 1) for name, total in sums.items()}

    def _micro_batch_loss(self, batch: EpisodeBatch, scored: dict[str, torch.Tensor], rows: list[int]) -> PPOLoss:
        sub = batch.select(rows)
        width = sub.input_ids.shape[1]
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        ids, attention = sub.input_ids.to(self.device), sub.attention_mask.to(self.device)
        mask = sub.action_mask.to(self.device).float()
        with self.autocast():
            logits, values = self.policy(ids, attention)
        logprobs, entropy = token_logprobs_and_entropy(logits, ids, with_entropy=True)
        return ppo_loss(
            logprobs,
            scored["old_logprobs"][index, :width],
            scored["advantages"][index, :width],
            values=state_values(values),
            old_values=scored["old_values"][index, :width],
            returns=scored["returns"][index, :width],
            mask=mask,
            clip_range=self.args.clip_range,
            clip_range_value=self.args.clip_range_value,
            value_coef=self.args.value_coef,
            entropy=entropy,
            entropy_coef=self.args.entropy_coef,
        )

    # ------------------------------------------------------------------ the loop
    def train(self) -> list[dict[str, float]]:
        """Run the remaining iterations, checkpoint and save the model; returns one metrics dict per iteration."""
        args = self.args
        # A tqdm bar in a terminal, a whole line every 10% or 30 s in a log (mulligan.training.progress).
        bar = progress_bar(
            args.total_steps, "ppo", "it", enabled=not args.disable_tqdm and self.processes.is_main, initial=self.step
        )
        try:
            while self.step < args.total_steps:
                metrics = self.train_step()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(success=f"{metrics['env/success_rate']:.2f}", kl=f"{metrics['objective/kl']:.3f}")
                if args.save_steps and self.step % args.save_steps == 0 and self.step < args.total_steps:
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        self.save_checkpoint()
        self.save_model(self.output_dir)
        return self.history

    def train_step(self) -> dict[str, float]:
        """One PPO iteration: rollout, tokenize, score, advantages, update, log."""
        args = self.args
        started = time.perf_counter()
        trajectories = self.collect(self.step)
        rollout_seconds = time.perf_counter() - started
        batch = episodes_to_batch(trajectories, self.tokenizer, reward_placement=args.reward_placement)
        scored = self.score(batch)
        stats = self.update(batch, scored)
        self.sync_engine()  # the next rollout samples from the updated weights
        mask = batch.action_mask.to(self.device).bool()
        episodes = len(trajectories)
        scores = float(np.mean([t.episode_return for t in trajectories]))
        non_score = float(scored["non_score_reward"][mask].sum()) / episodes
        # This process's means per episode; every process holds as many episodes, so their mean
        # over the processes is the iteration's mean.
        local = {
            "objective/kl": float(scored["kl"][mask].sum()) / episodes,
            "objective/scores": scores,
            "objective/non_score_reward": non_score,
            "objective/rlhf_reward": scores + non_score,
            "policy/approxkl_avg": stats["approx_kl"],
            "policy/clipfrac_avg": stats["clip_fraction"],
            "policy/entropy_avg": stats["entropy"],
            "loss/policy_avg": stats["policy_loss"],
            "loss/value_avg": stats["value_loss"],
            "loss/total_avg": stats["loss"],
            "val/explained_variance": explained_variance(scored["old_values"], scored["returns"], mask),
            "env/success_rate": float(np.mean([t.success for t in trajectories])),
            "env/mean_score": float(np.mean([t.score for t in trajectories])),
            "env/mean_return": scores,
            "tokens/model_per_episode": float(mask.sum()) / episodes,
            "time/rollout_s": rollout_seconds,
            **self._sampler_gap(batch, scored, mask),
            "time/step_s": time.perf_counter() - started,
        }
        metrics = {
            "step": float(self.step + 1),
            "episode": float((self.step + 1) * args.episodes_per_step),
            "objective/kl_coef": self.kl_controller.value,
            **self.processes.mean(local, self.device),
        }
        # After the metrics: the coefficient logged is the one this batch was scored with.
        self.kl_controller.update(metrics["objective/kl"], args.episodes_per_step)
        self.step += 1
        self.history.append(metrics)
        if self.step % args.logging_steps == 0:
            self.log(metrics)
        return metrics

    def _sampler_gap(self, batch: EpisodeBatch, scored: dict[str, torch.Tensor], mask: torch.Tensor) -> dict:
        """With vLLM, ``policy/sampler_logprob_gap``: mean |engine log-prob - policy log-prob| per model token."""
        if self.engine is None:
            return {}
        known = torch.isfinite(batch.sampled_logprobs.to(self.device)) & mask
        gap = (scored["old_logprobs"] - scored["policy_logprobs"]).abs()[known]
        return {"policy/sampler_logprob_gap": float(gap.mean()) if gap.numel() else 0.0}

    # ------------------------------------------------------------------ logging and checkpoints
    def log(self, metrics: dict[str, float]) -> None:
        """Append metrics to ``output_dir/metrics.jsonl`` and to the ``report_to`` integrations (main process)."""
        if not self.processes.is_main:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(metrics) + "\n")
        if "tensorboard" in self.report_to:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.output_dir / "runs"))
            for name, value in metrics.items():
                if name != "step" and not math.isnan(value):
                    self._writer.add_scalar(name, value, self.step)
            self._writer.flush()
        scalars = {k: v for k, v in metrics.items() if k != "step" and not math.isnan(v)}
        for name in ("wandb", "trackio"):
            if name in self.report_to:
                self._run(name).log(scalars, step=self.step)

    def _run(self, name: str) -> Any:
        """The ``wandb`` or ``trackio`` run of this training, started on first use (as TRL's callbacks do)."""
        if name not in self._runs:
            import importlib

            try:
                module = importlib.import_module(name)
            except ImportError as err:
                raise ImportError(f"report_to {name!r} needs the {name} package: pip install {name}") from err
            project = os.environ.get(f"{name.upper()}_PROJECT", "mulligan")
            config = {k: v for k, v in asdict(self.args).items() if isinstance(v, str | int | float | bool)}
            if name == "wandb":
                self._runs[name] = module.init(project=project, dir=str(self.output_dir), config=config)
            else:
                self._runs[name] = module.init(project=project, config=config, embed=False)
        return self._runs[name]

    def save_model(self, directory: str | Path) -> None:
        """Save the policy (or its LoRA adapter), the tokenizer and the value head with ``save_pretrained``.

        Only the main process writes (the weights are the same on every process); the others wait for it.
        """
        if self.processes.is_main:
            self._write_model(directory)
        self.processes.barrier()

    def _write_model(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.policy.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        torch.save(self.policy.value_head.state_dict(), directory / "value_head.pt")

    def save_checkpoint(self) -> Path:
        """Write ``output_dir/checkpoint-<step>``: model, trainable weights, optimizer, KL coefficient, RNGs.

        The main process writes (its RNG states are the ones saved); every process waits for it.
        """
        directory = self.output_dir / f"checkpoint-{self.step}"
        if self.processes.is_main:
            self._write_checkpoint(directory)
        self.processes.barrier()  # a checkpoint is complete before any process goes on (or resumes)
        return directory

    def _write_checkpoint(self, directory: Path) -> None:
        self._write_model(directory)
        trainable = {n: p.detach().cpu() for n, p in self.policy.named_parameters() if p.requires_grad}
        torch.save(
            {
                "step": self.step,
                "trainable": trainable,
                "optimizer": self.optimizer.state_dict(),
                "kl_coef": self.kl_controller.value,
                "history": self.history,
                "args": asdict(self.args),
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            },
            directory / STATE_FILE,
        )
        self._prune_checkpoints()

    def _prune_checkpoints(self) -> None:
        """Keep only the ``save_total_limit`` newest checkpoints."""
        import shutil

        found = sorted(
            (p for p in self.output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
            key=lambda p: int(p.name.split("-")[-1]),
        )
        for old in found[: max(len(found) - self.args.save_total_limit, 0)]:
            shutil.rmtree(old)

    def load_checkpoint(self, checkpoint: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` (``"auto"``: the newest in ``output_dir``)."""
        if str(checkpoint) == "auto":
            found = latest_checkpoint(self.output_dir)
            if found is None:
                return  # nothing to resume: a fresh run
            checkpoint = found
        path = Path(checkpoint) / STATE_FILE
        if not path.exists():
            raise ValueError(f"{checkpoint} is not a PPO checkpoint (no {STATE_FILE}); pass a checkpoint-<step> dir")
        state = torch.load(path, map_location=self.device, weights_only=False)
        current = dict(self.policy.named_parameters())
        with torch.no_grad():
            for name, value in state["trainable"].items():
                current[name].copy_(value.to(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_controller.value = float(state["kl_coef"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        self.sync_engine()  # the engine started from the initial weights


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The ``checkpoint-<step>`` directory with the highest step in ``output_dir``, or ``None``."""
    candidates = [p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(candidates, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_ppo(args: PPOArgs, model: Any = None, tokenizer: Any = None) -> PPOTrainer:
    """Build a :class:`PPOTrainer` from ``args``, train it, close its envs, and return it."""
    with PPOTrainer(args, model, tokenizer) as trainer:
        trainer.train()
    return trainer


def main(argv: list[str] | None = None) -> int:
    """``mulligan train ppo``: parse :class:`PPOArgs` flags and train."""
    from mulligan.training.args import parse_args

    args = parse_args(PPOArgs, list(sys.argv[1:] if argv is None else argv), prog="mulligan train ppo")
    trainer = train_ppo(args)
    last = trainer.history[-1] if trainer.history else {}
    summary = {k: last[k] for k in ("step", "env/success_rate", "objective/scores", "objective/kl") if k in last}
    print(json.dumps({"output_dir": str(trainer.output_dir), **summary}))
    return 0
