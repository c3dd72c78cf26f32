"""PPO over multi-turn episodes: a policy with a value head, token-level GAE, a KL penalty.

TRL no longer ships a stable PPO trainer, so mulligan has its own, written to read top to bottom
in the style of cleanrl. One PPO iteration is:

1. **Rollout.** Play ``episodes_per_step`` episodes of the env with the current policy
   (:func:`mulligan.training.rollout.collect_episodes`, every turn batched across envs).
2. **Tokenize.** Each episode's conversation becomes one token sequence with a mask of the
   model's own tokens (:func:`mulligan.training.tokens.tokenize_conversation`): env turns,
   feedback and chat headers are context, never actions.
3. **Score.** One no-grad pass gives the old log-probabilities and values; the frozen reference
   model gives reference log-probabilities. Per-token rewards are ``-kl_coef * (logp - ref_logp)``
   on every model token (the KL penalty of RLHF's PPO, 0.075 in CORGI, arXiv 2411.01483 App. B),
   plus each env reward on the last token of the turn that earned it.
4. **Advantages.** GAE (Schulman et al. 2016) over the model's tokens only: env tokens are
   skipped, so the value of a turn's last token bootstraps from the first token of the next turn.
5. **Update.** ``ppo_epochs`` passes over shuffled minibatches of episodes, each minibatch split
   into ``gradient_accumulation_steps`` micro-batches; the clipped surrogate, the clipped value
   loss and an optional entropy bonus.

Diagnostics logged every iteration: ``approx_kl`` (the k3 estimator), ``clip_fraction``,
``explained_variance``, ``value_loss``, ``policy_loss``, ``entropy``, ``kl_to_reference``, plus
``success_rate``, ``mean_score`` and ``mean_return`` of the rollouts.

Command line: ``mulligan train ppo --env_id Mulligan/Echo-v0 --model tiny --total_steps 20``.
"""

from __future__ import annotations

import copy
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

REPORT_TO = ("none", "tensorboard")
STATE_FILE = "ppo_state.pt"


# ----------------------------------------------------------------------------------- configuration
@dataclass
class PPOConfig:
    """Configuration of :func:`train_ppo` and ``mulligan train ppo``.

    Attributes:
        model: Model id or local path; ``"tiny"`` is the offline tiny model.
        env_id: A registered env id.
        env_kwargs: JSON object of keyword arguments for ``gymnasium.make`` (e.g. ``{"partial_credit": true}``).
        max_attempts: Attempts per episode; above 1 the env runs under ``RetryWithFeedback``.
        system_prompt: A system message placed first in every conversation.
        output_dir: Where checkpoints, the final model and logs go.
        total_steps: PPO iterations (each: one rollout batch, then the update epochs).
        episodes_per_step: Episodes collected per iteration.
        samples_per_task: Episodes per task within a rollout batch.
        num_envs: Envs run side by side during rollouts (the generation batch).
        task_offset: First task index used for training (procedural envs: tasks
            ``task_offset + k``; finite datasets wrap around).
        ppo_epochs: Passes over each rollout batch.
        mini_batch_size: Episodes per optimizer step; must divide ``episodes_per_step``.
        gradient_accumulation_steps: Micro-batches per minibatch; must divide ``mini_batch_size``.
        learning_rate: AdamW learning rate of the policy (and value head).
        weight_decay: AdamW weight decay.
        gamma: Discount per model token.
        lam: GAE lambda.
        clip_range: PPO ratio clip epsilon.
        clip_range_value: Value clip range around the old values (0 disables value clipping).
        value_coef: Weight of the value loss.
        entropy_coef: Weight of the entropy bonus.
        kl_coef: Weight of the per-token KL penalty to the reference model (CORGI: 0.075).
        max_grad_norm: Gradient clipping norm.
        whiten_advantages: Normalise advantages over the batch's model tokens.
        temperature: Sampling temperature of rollouts.
        top_p: Nucleus sampling mass of rollouts.
        max_new_tokens: Tokens generated per turn at most.
        use_lora: Train LoRA adapters (peft) instead of all weights; the reference is the base model.
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        lora_target_modules: Comma-separated module names, or ``all-linear``.
        seed: Seed of initialisation, task choice, sampling and minibatch order.
        device: ``cpu``, ``cuda``, ... (default: CUDA when available).
        save_steps: Checkpoint every this many iterations (0: only at the end).
        resume_from_checkpoint: A checkpoint directory, or ``auto`` for the newest in ``output_dir``.
        report_to: ``none`` or ``tensorboard``.
        logging_steps: Log every this many iterations.
        progress: Show a progress bar.
    """

    model: str = field(default="tiny", metadata={"help": "Model id or local path; 'tiny' is the offline tiny model."})
    env_id: str = field(default="Mulligan/Echo-v0", metadata={"help": "A registered env id."})
    env_kwargs: str = field(default="{}", metadata={"help": "JSON object of keyword arguments for gymnasium.make."})
    max_attempts: int = field(default=1, metadata={"help": "Attempts per episode (>1: RetryWithFeedback)."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message placed first."})
    output_dir: str = field(default="runs/ppo", metadata={"help": "Checkpoints, final model and logs."})
    total_steps: int = field(default=20, metadata={"help": "PPO iterations."})
    episodes_per_step: int = field(default=16, metadata={"help": "Episodes collected per iteration."})
    samples_per_task: int = field(default=1, metadata={"help": "Episodes per task within a rollout batch."})
    num_envs: int = field(default=16, metadata={"help": "Envs run side by side during rollouts."})
    task_offset: int = field(default=0, metadata={"help": "First task index used for training."})
    ppo_epochs: int = field(default=2, metadata={"help": "Passes over each rollout batch."})
    mini_batch_size: int = field(default=8, metadata={"help": "Episodes per optimizer step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per minibatch."})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    gamma: float = field(default=1.0, metadata={"help": "Discount per model token."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    clip_range: float = field(default=0.2, metadata={"help": "PPO ratio clip epsilon."})
    clip_range_value: float = field(default=0.2, metadata={"help": "Value clip range (0: no value clipping)."})
    value_coef: float = field(default=0.5, metadata={"help": "Weight of the value loss."})
    entropy_coef: float = field(default=0.0, metadata={"help": "Weight of the entropy bonus."})
    kl_coef: float = field(default=0.075, metadata={"help": "Per-token KL penalty to the reference (CORGI: 0.075)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Normalise advantages over the batch."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of rollouts."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass of rollouts."})
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens generated per turn at most."})
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft) instead of all weights."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "Comma-separated modules or all-linear."})
    seed: int = field(default=0, metadata={"help": "Seed of everything random."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ... (default: CUDA when available)."})
    save_steps: int = field(default=0, metadata={"help": "Checkpoint every N iterations (0: only at the end)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint directory, or 'auto' for the latest in output_dir."}
    )
    report_to: str = field(default="none", metadata={"help": "'none' or 'tensorboard'."})
    logging_steps: int = field(default=1, metadata={"help": "Log every N iterations."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})

    def __post_init__(self) -> None:
        positive = ("total_steps", "episodes_per_step", "samples_per_task", "num_envs", "ppo_epochs",
                    "mini_batch_size", "gradient_accumulation_steps", "max_new_tokens", "max_attempts",
                    "lora_r", "logging_steps")
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
        for name in ("clip_range", "learning_rate", "max_grad_norm"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("clip_range_value", "value_coef", "entropy_coef", "kl_coef", "weight_decay", "lora_dropout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 for PPO rollouts (sampling), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {REPORT_TO}, got {self.report_to!r}")
        if self.save_steps < 0 or self.task_offset < 0:
            raise ValueError("save_steps and task_offset must be >= 0")
        self.env_options()  # validates the JSON

    def env_options(self) -> dict[str, Any]:
        """``gymnasium.make`` keyword arguments: ``env_kwargs`` plus ``max_attempts`` when above 1."""
        try:
            options = json.loads(self.env_kwargs) if isinstance(self.env_kwargs, str) else dict(self.env_kwargs)
        except json.JSONDecodeError as err:
            raise ValueError(f"env_kwargs must be a JSON object such as '{{\"partial_credit\": true}}': {err}") from err
        if not isinstance(options, dict):
            raise ValueError(f"env_kwargs must be a JSON object, got {self.env_kwargs!r}")
        if self.max_attempts > 1:
            options["max_attempts"] = self.max_attempts
        return options


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
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the masked (model) tokens of each row.

    Positions where ``mask`` is 0 (env tokens, headers, padding) are skipped: the next state of a
    model token is the next *model* token of the row, whatever env text lies between them, and the
    last model token of the row is terminal (bootstrap value 0).

    Args:
        rewards: ``[B, T]`` per-token rewards (0 where masked).
        values: ``[B, T]`` value estimates.
        mask: ``[B, T]`` 1 for model tokens.
        gamma: Discount per model token.
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``, both ``[B, T]`` and 0 where masked; ``returns = advantages + values``.
    """
    mask = mask.to(values.dtype)
    batch, length = rewards.shape
    advantages = torch.zeros_like(values)
    next_value = torch.zeros(batch, dtype=values.dtype, device=values.device)
    running = torch.zeros_like(next_value)
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
        input_ids: ``[B, T]`` token ids of each conversation.
        attention_mask: ``[B, T]`` 1 for real tokens.
        action_mask: ``[B, T]`` 1 for the model's own tokens (what PPO learns).
        env_rewards: ``[B, T]`` each env reward on the last model token of the turn that earned it.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    action_mask: torch.Tensor
    env_rewards: torch.Tensor

    def select(self, rows: Sequence[int]) -> EpisodeBatch:
        """The sub-batch of ``rows``, trimmed to its longest sequence."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        width = int(self.attention_mask[index].sum(1).max())
        return EpisodeBatch(*(t[index, :width] for t in (self.input_ids, self.attention_mask,
                                                          self.action_mask, self.env_rewards)))


def episodes_to_batch(trajectories: Sequence[Any], tokenizer, pad_token_id: int | None = None) -> EpisodeBatch:
    """Tokenize trajectories (model tokens masked in, env tokens out) and pad them into a batch.

    Each turn's env reward is placed on the last model token of that turn's assistant message.
    """
    from mulligan.training.tokens import tokenize_conversation

    rows = []
    for trajectory in trajectories:
        episode = tokenize_conversation(tokenizer, trajectory.messages)
        mask = episode.assistant_mask
        assistant_messages = [k for k, m in enumerate(trajectory.messages) if m["role"] == "assistant"]
        rewards = [0.0] * len(episode.input_ids)
        for message_index, turn in zip(assistant_messages, trajectory.turns, strict=False):
            positions = [t for t, (k, m) in enumerate(zip(episode.turn_index, mask, strict=True))
                         if k == message_index and m]
            if positions:
                rewards[positions[-1]] += float(turn.reward)
        rows.append((episode.input_ids, mask, rewards))
    pad = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
    width = max(len(r[0]) for r in rows)
    input_ids = torch.full((len(rows), width), pad if pad is not None else 0, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    action = torch.zeros((len(rows), width), dtype=torch.long)
    env_rewards = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, (ids, mask, rewards) in enumerate(rows):
        n = len(ids)
        input_ids[i, :n] = torch.tensor(ids)
        attention[i, :n] = 1
        action[i, :n] = torch.tensor(mask)
        env_rewards[i, :n] = torch.tensor(rewards)
    return EpisodeBatch(input_ids, attention, action, env_rewards)


# ----------------------------------------------------------------------------------- the trainer
class PPOTrainer:
    """PPO on a mulligan env; see the module docstring for one iteration, step by step.

    Args:
        config: The run's :class:`PPOConfig`.
        model: A loaded causal LM to train instead of ``config.model``.
        tokenizer: Its tokenizer (required with ``model``).
    """

    def __init__(self, config: PPOConfig, model: Any = None, tokenizer: Any = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from mulligan.agents.tiny import resolve_model

        self.config = config
        _seed_everything(config.seed)
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if model is None:
            path = resolve_model(config.model)
            model = AutoModelForCausalLM.from_pretrained(path)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        elif tokenizer is None:
            raise ValueError("pass the tokenizer with a loaded model: PPOTrainer(config, model, tokenizer)")
        self.tokenizer = tokenizer
        model.to(self.device)

        # The reference is frozen at the starting weights: with LoRA, the base model with the
        # adapters switched off (no second copy); otherwise a frozen copy.
        if config.use_lora:
            from peft import LoraConfig, get_peft_model

            targets = config.lora_target_modules
            lora = LoraConfig(
                r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)
            self.reference = None
        else:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.policy = PolicyWithValueHead(model)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.policy.parameters() if p.requires_grad],
            lr=config.learning_rate, weight_decay=config.weight_decay,
        )
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.output_dir = Path(config.output_dir)
        self._writer = None
        if config.resume_from_checkpoint:
            self.load_checkpoint(config.resume_from_checkpoint)

    # ------------------------------------------------------------------ 1. rollout
    def collect(self, step: int) -> list[Any]:
        """Play one iteration's episodes with the current policy (sampling)."""
        from mulligan.agents.hf import HFAgent
        from mulligan.training.rollout import collect_episodes

        config = self.config
        num_tasks = config.episodes_per_step // config.samples_per_task
        agent = HFAgent(
            self.policy.model, self.tokenizer, temperature=config.temperature, top_p=config.top_p,
            max_new_tokens=config.max_new_tokens, seed=config.seed * 100_003 + step,
            batch_size=config.num_envs * config.samples_per_task,
        )
        first = config.task_offset + step * num_tasks
        indices = _wrap_indices(config.env_id, config.env_options(), range(first, first + num_tasks))
        try:
            return collect_episodes(
                config.env_id, agent, config.episodes_per_step, env_kwargs=config.env_options(),
                num_envs=config.num_envs, seed=config.seed + step, task_indices=indices,
                samples_per_task=config.samples_per_task, system_prompt=config.system_prompt, progress=False,
            )
        finally:
            self.policy.train()

    # ------------------------------------------------------------------ 2-4. score and advantages
    @torch.no_grad()
    def score(self, batch: EpisodeBatch) -> dict[str, torch.Tensor]:
        """Old log-probs and values, reference log-probs, KL-shaped rewards, GAE advantages and returns."""
        config = self.config
        ids, attention = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        mask = batch.action_mask.to(self.device).float()
        logits, values = self.policy(ids, attention)
        old_logprobs, _ = token_logprobs_and_entropy(logits, ids)
        old_values = state_values(values) * mask
        ref_logprobs = self._reference_logprobs(ids, attention)
        kl = (old_logprobs - ref_logprobs) * mask
        rewards = -config.kl_coef * kl + batch.env_rewards.to(self.device) * mask
        advantages, returns = compute_gae(rewards, old_values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        return {"old_logprobs": old_logprobs * mask, "old_values": old_values, "advantages": advantages,
                "returns": returns, "kl": kl}

    def _reference_logprobs(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        if self.reference is not None:
            logits = self.reference(input_ids=ids, attention_mask=attention).logits
        else:
            with self.policy.model.disable_adapter():
                logits = self.policy.model(input_ids=ids, attention_mask=attention).logits
        return token_logprobs_and_entropy(logits, ids)[0]

    # ------------------------------------------------------------------ 5. update
    def update(self, batch: EpisodeBatch, scored: dict[str, torch.Tensor]) -> dict[str, float]:
        """``ppo_epochs`` passes of clipped-objective minibatch updates; returns averaged diagnostics."""
        config = self.config
        generator = torch.Generator().manual_seed(config.seed * 7919 + self.step)
        size = batch.input_ids.shape[0]
        micro = config.mini_batch_size // config.gradient_accumulation_steps
        sums: dict[str, float] = {}
        count = 0
        self.policy.train()
        for _ in range(config.ppo_epochs):
            order = torch.randperm(size, generator=generator).tolist()
            for start in range(0, size, config.mini_batch_size):
                minibatch = order[start:start + config.mini_batch_size]
                self.optimizer.zero_grad(set_to_none=True)
                for m in range(0, len(minibatch), micro):
                    rows = minibatch[m:m + micro]
                    terms = self._micro_batch_loss(batch, scored, rows)
                    (terms.loss / config.gradient_accumulation_steps).backward()
                    for name in ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
                        sums[name] = sums.get(name, 0.0) + float(getattr(terms, name).detach())
                    count += 1
                nn.utils.clip_grad_norm_(self.policy.parameters(), config.max_grad_norm)
                self.optimizer.step()
        return {name: total / max(count, 1) for name, total in sums.items()}

    def _micro_batch_loss(self, batch: EpisodeBatch, scored: dict[str, torch.Tensor], rows: list[int]) -> PPOLoss:
        sub = batch.select(rows)
        width = sub.input_ids.shape[1]
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        ids, attention = sub.input_ids.to(self.device), sub.attention_mask.to(self.device)
        mask = sub.action_mask.to(self.device).float()
        logits, values = self.policy(ids, attention)
        logprobs, entropy = token_logprobs_and_entropy(logits, ids, with_entropy=True)
        return ppo_loss(
            logprobs, scored["old_logprobs"][index, :width], scored["advantages"][index, :width],
            values=state_values(values), old_values=scored["old_values"][index, :width],
            returns=scored["returns"][index, :width], mask=mask,
            clip_range=self.config.clip_range, clip_range_value=self.config.clip_range_value,
            value_coef=self.config.value_coef, entropy=entropy, entropy_coef=self.config.entropy_coef,
        )

    # ------------------------------------------------------------------ the loop
    def train(self) -> list[dict[str, float]]:
        """Run the remaining iterations; returns one metrics dict per iteration."""
        config = self.config
        bar = None
        if config.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=config.total_steps, initial=self.step, desc="ppo", unit="it", dynamic_ncols=True)
        try:
            while self.step < config.total_steps:
                metrics = self.train_step()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(success=f"{metrics['success_rate']:.2f}", kl=f"{metrics['approx_kl']:.3f}")
                if config.save_steps and self.step % config.save_steps == 0 and self.step < config.total_steps:
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        self.save_checkpoint()
        self.save_model(self.output_dir)
        if self._writer is not None:
            self._writer.close()
        return self.history

    def train_step(self) -> dict[str, float]:
        """One PPO iteration: rollout, tokenize, score, advantages, update, log."""
        started = time.perf_counter()
        trajectories = self.collect(self.step)
        rollout_seconds = time.perf_counter() - started
        batch = episodes_to_batch(trajectories, self.tokenizer)
        scored = self.score(batch)
        stats = self.update(batch, scored)
        mask = batch.action_mask.to(self.device).bool()
        metrics = {
            "step": float(self.step + 1),
            "success_rate": float(np.mean([t.success for t in trajectories])),
            "mean_score": float(np.mean([t.score for t in trajectories])),
            "mean_return": float(np.mean([t.episode_return for t in trajectories])),
            "kl_to_reference": float(scored["kl"][mask].sum() / len(trajectories)),
            "explained_variance": explained_variance(scored["old_values"], scored["returns"], mask),
            "model_tokens_per_episode": float(mask.sum()) / len(trajectories),
            "rollout_seconds": rollout_seconds,
            "step_seconds": time.perf_counter() - started,
            **stats,
        }
        self.step += 1
        self.history.append(metrics)
        if self.step % self.config.logging_steps == 0:
            self.log(metrics)
        return metrics

    # ------------------------------------------------------------------ logging and checkpoints
    def log(self, metrics: dict[str, float]) -> None:
        """Append metrics to ``output_dir/metrics.jsonl`` and to TensorBoard when asked."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(metrics) + "\n")
        if self.config.report_to == "tensorboard":
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.output_dir / "runs"))
            for name, value in metrics.items():
                if name != "step" and not math.isnan(value):
                    self._writer.add_scalar(f"ppo/{name}", value, self.step)

    def save_model(self, directory: str | Path) -> None:
        """Save the policy (or its LoRA adapter), the tokenizer and the value head with ``save_pretrained``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.policy.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        torch.save(self.policy.value_head.state_dict(), directory / "value_head.pt")

    def save_checkpoint(self) -> Path:
        """Write ``output_dir/checkpoint-<step>``: the model, trainable weights, optimizer, step and RNG states."""
        directory = self.output_dir / f"checkpoint-{self.step}"
        self.save_model(directory)
        trainable = {n: p.detach().cpu() for n, p in self.policy.named_parameters() if p.requires_grad}
        torch.save({
            "step": self.step,
            "trainable": trainable,
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "config": asdict(self.config),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }, directory / STATE_FILE)
        return directory

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
        self.step = int(state["step"])
        self.history = list(state["history"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The ``checkpoint-<step>`` directory with the highest step in ``output_dir``, or ``None``."""
    candidates = [p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(candidates, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _wrap_indices(env_id: str, env_kwargs: dict[str, Any], indices: Sequence[int]) -> list[int]:
    """Task indices, wrapped around a finite dataset's size."""
    import gymnasium

    import mulligan  # noqa: F401 - registers the ids

    env = gymnasium.make(env_id, **env_kwargs)
    num_tasks = env.unwrapped.num_tasks
    env.close()
    return [i % num_tasks if num_tasks else i for i in indices]


def evaluate_policy(
    model: Any,
    tokenizer: Any,
    env_id: str,
    task_indices: Sequence[int],
    *,
    env_kwargs: dict[str, Any] | None = None,
    system_prompt: str | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
    num_envs: int = 32,
) -> dict[str, float]:
    """Success rate, mean score and mean return of ``model`` on the given tasks (greedy by default)."""
    from mulligan.agents.hf import HFAgent
    from mulligan.training.rollout import collect_episodes

    was_training = model.training
    agent = HFAgent(model, tokenizer, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed,
                    batch_size=num_envs)
    try:
        trajectories = collect_episodes(
            env_id, agent, len(task_indices), env_kwargs=env_kwargs, num_envs=num_envs, seed=seed,
            task_indices=list(task_indices), system_prompt=system_prompt, progress=False,
        )
    finally:
        model.train(was_training)
    return {
        "success_rate": float(np.mean([t.success for t in trajectories])),
        "mean_score": float(np.mean([t.score for t in trajectories])),
        "mean_return": float(np.mean([t.episode_return for t in trajectories])),
        "episodes": float(len(trajectories)),
    }


def train_ppo(config: PPOConfig, model: Any = None, tokenizer: Any = None) -> PPOTrainer:
    """Build a :class:`PPOTrainer` from ``config``, train it, and return it."""
    trainer = PPOTrainer(config, model, tokenizer)
    trainer.train()
    return trainer


def main(argv: list[str] | None = None) -> int:
    """``mulligan train ppo``: parse :class:`PPOConfig` flags and train."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(PPOConfig)
    parser.prog = "mulligan train ppo"
    (config,) = parser.parse_args_into_dataclasses(args=list(sys.argv[1:] if argv is None else argv))
    trainer = train_ppo(config)
    last = trainer.history[-1] if trainer.history else {}
    print(json.dumps({"output_dir": str(trainer.output_dir), **{k: last[k] for k in
                      ("step", "success_rate", "mean_score", "approx_kl") if k in last}}))
    return 0
