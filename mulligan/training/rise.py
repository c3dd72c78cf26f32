"""RISE: recursive introspection (Qu et al. 2024, arXiv 2407.18219).

RISE teaches a model to improve its own answer over turns. The env is a multi-turn MDP: a failed
attempt is answered with "The answer is incorrect. Please try again." (Sec. 4.1), which is
:class:`~mulligan.envs.wrappers.RetryWithFeedback`, i.e. ``gymnasium.make(env_id, max_attempts=k)``.

One iteration (Sec. 4.2, Algorithm 1):

1. Roll out the current model for up to ``max_attempts`` turns on each task
   (:func:`~mulligan.training.rollout.collect_episodes`).
2. For every turn ``t`` of every rollout, improve the response: draw ``best_of_n`` candidates,
   conditioned on the whole history up to ``t``, from the learner itself (self-distillation) or a
   teacher agent (distillation), score each on the task, keep the best.
3. Each turn becomes a sample: the history is the context (unweighted, unlearned), the improved
   response is the target, with reward ``r``. A filter (``all``, ``better``, ``best``,
   ``success``) keeps some samples.
4. Reward-weighted regression: the target's token loss is weighted by ``exp(r / tau)``
   (tau = 0.4 in the paper).

Iterating repeats 1-4 with the newly trained model. :func:`evaluate_rise` computes the paper's
metrics (Sec. 5): m1@t1, m5@t1, m1@t5 (majority over 5 turns, no oracle) and p1@t5 (success within
5 turns), with a sliding window of the last 2 attempts in the model's context.

Candidates are scored by stepping a fresh single-attempt env on the same task once: RISE's tasks
(GSM8K, MATH) answer in one step per attempt, and so does every mulligan env where an attempt is one
action (Math-v0, Echo-v0, Constraints-v0).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium

from mulligan.agents.base import Agent, AgentInput
from mulligan.envs.wrappers import RISE_FEEDBACK_TEMPLATE
from mulligan.training.rollout import collect_episodes
from mulligan.training.trajectory import Trajectory, TrajectoryStore

FILTERS = ("all", "better", "best", "success")


# --------------------------------------------------------------------------------------- scoring
def score_actions(env: gymnasium.Env, task: dict[str, Any], actions: Sequence[str]) -> list[tuple[float, bool]]:
    """``(reward, success)`` of each action as a single attempt on ``task`` (a fresh reset per action)."""
    results = []
    for action in actions:
        env.reset(options={"task": task})
        _, reward, _, _, info = env.step(action)
        results.append((float(reward), bool(info["success"])))
    return results


def load_agent(spec: str, **kwargs: Any) -> Agent:
    """An agent from ``"module:Class"`` (a scripted teacher, built with no arguments) or a model path.

    Anything without a ``:`` (or a model id such as ``org/name``) becomes an
    :class:`~mulligan.agents.hf.HFAgent` with ``kwargs``.
    """
    if ":" in spec and not os.path.exists(spec):
        module, _, name = spec.partition(":")
        return getattr(importlib.import_module(module), name)()
    from mulligan.agents.hf import HFAgent

    return HFAgent(spec, **kwargs)


# --------------------------------------------------------------------------------------- samples
def improve_rollouts(
    rollouts: Sequence[Trajectory],
    improver: Agent,
    env_id: str,
    *,
    best_of_n: int = 4,
    env_kwargs: dict | None = None,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Best-of-N improvement of every turn of every rollout (Sec. 4.2).

    For turn ``t`` the improver sees the rollout's history up to the observation of turn ``t``
    (the previous attempts and their feedback) and proposes ``best_of_n`` responses; the best by
    reward (ties broken by success, then by order) becomes the sample's target.

    Returns:
        One dict per turn: ``messages`` (history + improved response), ``reward`` and ``success``
        of the improved response, ``policy_reward`` (the rollout's own response at that turn),
        ``turn`` (1-based), ``rollout`` (index into ``rollouts``), ``task_id``.
    """
    if best_of_n < 1:
        raise ValueError(f"best_of_n must be >= 1, got {best_of_n}")
    env = gymnasium.make(env_id, **{k: v for k, v in (env_kwargs or {}).items() if k != "max_attempts"})
    pending = []  # (rollout index, turn index, history messages, task)
    for r, trajectory in enumerate(rollouts):
        assistant_positions = [i for i, m in enumerate(trajectory.messages) if m["role"] == "assistant"]
        for t, position in enumerate(assistant_positions):
            pending.append((r, t, trajectory.messages[:position], trajectory.task))
    samples = []
    try:
        for start in range(0, len(pending), batch_size):
            chunk = pending[start:start + batch_size]
            inputs = [AgentInput(messages=[dict(m) for m in history], task=task, env_id=env_id)
                      for _, _, history, task in chunk]
            candidates = improver.sample(inputs, best_of_n)
            for (r, t, history, task), options in zip(chunk, candidates, strict=True):
                texts = [a.text for a in options]
                scored = score_actions(env, task, texts)
                best = max(range(len(texts)), key=lambda i: (scored[i][0], scored[i][1], -i))
                turn_info = rollouts[r].turns[t].info
                samples.append({
                    "messages": [*map(dict, history), {"role": "assistant", "content": texts[best]}],
                    "reward": scored[best][0],
                    "success": scored[best][1],
                    # The raw return of the model's own attempt (RetryWithFeedback pays objective changes).
                    "policy_reward": float(turn_info.get("attempt_return", rollouts[r].turns[t].reward)),
                    "turn": t + 1,
                    "rollout": r,
                    "task_id": rollouts[r].task_id,
                })
    finally:
        env.close()
    return samples


def filter_samples(samples: Sequence[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Keep the samples the paper's data filter selects (Sec. 4.2; our reading of each below).

    * ``all``: every sample.
    * ``better``: samples whose improved response beats the model's own response at that turn.
    * ``best``: per rollout, the samples that reach the rollout's best improved reward.
    * ``success``: samples whose improved response solves the task.
    """
    if mode not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {mode!r}")
    if mode == "all":
        return list(samples)
    if mode == "better":
        return [s for s in samples if s["reward"] > s["policy_reward"]]
    if mode == "success":
        return [s for s in samples if s["success"]]
    best: dict[int, float] = {}
    for s in samples:
        best[s["rollout"]] = max(best.get(s["rollout"], -math.inf), s["reward"])
    return [s for s in samples if s["reward"] == best[s["rollout"]]]


def rwr_dataset(tokenizer, samples: Sequence[dict[str, Any]], tau: float, max_length: int | None = None):
    """Tokenized samples with reward-weighted-regression weights (Sec. 4.2, Eq. 4.3).

    Only the last assistant turn (the improved response) is learned, with per-token weight
    ``exp(reward / tau)``; the history's tokens (earlier attempts, feedback) are context: label
    -100, weight 0. Longer samples keep their *end* (the learned turn) when ``max_length`` is set.

    Returns:
        A ``datasets.Dataset`` with ``input_ids``, ``labels`` and ``loss_weights``.
    """
    from datasets import Dataset

    from mulligan.training.tokens import tokenize_conversation

    if tau <= 0:
        raise ValueError(f"tau must be > 0 (the paper uses 0.4), got {tau}")
    rows: dict[str, list] = {"input_ids": [], "labels": [], "loss_weights": []}
    for sample in samples:
        messages = sample["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        episode = tokenize_conversation(tokenizer, messages, learn_turns=[last])
        weight = math.exp(float(sample["reward"]) / tau)
        ids = episode.input_ids
        labels = [tok if m else -100 for tok, m in zip(ids, episode.assistant_mask, strict=True)]
        weights = [weight if m else 0.0 for m in episode.assistant_mask]
        if max_length is not None and len(ids) > max_length:
            ids, labels, weights = ids[-max_length:], labels[-max_length:], weights[-max_length:]
        rows["input_ids"].append(ids)
        rows["labels"].append(labels)
        rows["loss_weights"].append(weights)
    return Dataset.from_dict(rows)


class RWRCollator:
    """Right-pad ``input_ids`` (pad id), ``labels`` (-100) and ``loss_weights`` (0) into tensors."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Collate a batch."""
        import torch

        width = max(len(f["input_ids"]) for f in features)

        def pad(key, value, dtype):
            return torch.tensor([list(f[key]) + [value] * (width - len(f[key])) for f in features], dtype=dtype)

        input_ids = pad("input_ids", self.pad_token_id, torch.long)
        attention_mask = torch.tensor(
            [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features], dtype=torch.long
        )
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": pad("labels", -100, torch.long),
            "loss_weights": pad("loss_weights", 0.0, torch.float32),
        }


def _reward_weighted_trainer_class():
    from transformers import Trainer

    class RewardWeightedTrainer(Trainer):
        """A ``transformers.Trainer`` whose loss is RISE's reward-weighted regression (Sec. 4.2).

        loss = sum_i w_i * nll_i / #learned tokens, over the batch's learned tokens ``i``, where
        ``w_i = exp(r / tau)`` of the sample token ``i`` belongs to.
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch.nn.functional as F

            labels = inputs.pop("labels")
            weights = inputs.pop("loss_weights")
            outputs = model(**inputs)
            logits = outputs.logits[:, :-1, :].float()
            targets = labels[:, 1:]
            token_weights = weights[:, 1:]
            nll = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="none"
            ).view_as(targets)
            learned = (targets != -100).float()
            loss = (nll * token_weights * learned).sum() / learned.sum().clamp(min=1.0)
            return (loss, outputs) if return_outputs else loss

    return RewardWeightedTrainer


def __getattr__(name: str):
    # ``RewardWeightedTrainer`` is built on first access so that importing this module stays light.
    if name == "RewardWeightedTrainer":
        return _reward_weighted_trainer_class()
    raise AttributeError(name)


# --------------------------------------------------------------------------------------- evaluation
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def answer_key(text: str) -> str:
    """The answer a response commits to, for majority voting.

    The last ``\\boxed{}`` content, else the last number, else the whitespace-normalised text.
    """
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1].strip()
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1]
    return " ".join(text.split())


def _majority(keys: Sequence[str], correct: Sequence[bool]) -> bool:
    """Whether the most common answer (first seen wins ties) is a correct one."""
    counts = Counter(keys)
    top = max(counts.values())
    winner = next(k for k in keys if counts[k] == top)
    return any(c for k, c in zip(keys, correct, strict=True) if k == winner)


def evaluate_rise(
    agent: Agent,
    env_id: str,
    *,
    num_tasks: int = 50,
    seed: int = 1000,
    turns: int = 5,
    samples_at_turn_one: int = 5,
    env_kwargs: dict | None = None,
    feedback_template: str = RISE_FEEDBACK_TEMPLATE,
) -> dict[str, float]:
    """The paper's metrics (Sec. 5) on ``num_tasks`` tasks drawn with ``seed``.

    * ``m1@t1``: success of the first turn's answer.
    * ``m5@t1``: success of the majority answer of ``samples_at_turn_one`` samples at turn 1.
    * ``m1@t5``: success of the majority answer over ``turns`` turns, run *without an oracle*: the
      retry prompt follows every turn, right or wrong, so the model cannot know when it is right.
    * ``p1@t5``: success within ``turns`` turns (with an oracle the episode stops at the first
      success; its turns up to then are those of the oracle-free run).

    The agent's own context policy applies (RISE evaluates with a window of the last 2 attempts:
    ``HFAgent(..., context=LastAttempts(2))``).
    """
    from mulligan.training.rollout import reset_seed_for, task_index_for

    env = gymnasium.make(env_id, **{k: v for k, v in (env_kwargs or {}).items() if k != "max_attempts"})
    tasks, questions = [], []
    for k in range(num_tasks):
        options = {"task_index": task_index_for(env, seed, k)}
        observation, _ = env.reset(seed=reset_seed_for(seed, k, 0), options=options)
        tasks.append(env.unwrapped.task)
        questions.append(observation)
    agent.reset(seed)
    histories = [[{"role": "user", "content": q}] for q in questions]
    keys: list[list[str]] = [[] for _ in tasks]
    correct: list[list[bool]] = [[] for _ in tasks]
    first_samples = agent.sample(
        [AgentInput(list(h), task=t, env_id=env_id) for h, t in zip(histories, tasks, strict=True)],
        samples_at_turn_one,
    )
    m5 = []
    for task, options in zip(tasks, first_samples, strict=True):
        texts = [a.text for a in options]
        scores = score_actions(env, task, texts)
        m5.append(_majority([answer_key(x) for x in texts], [s for _, s in scores]))
    for _ in range(turns):
        actions = agent.act([AgentInput([dict(m) for m in h], task=t, env_id=env_id)
                             for h, t in zip(histories, tasks, strict=True)])
        for i, action in enumerate(actions):
            (_, success), = score_actions(env, tasks[i], [action.text])
            keys[i].append(answer_key(action.text))
            correct[i].append(success)
            histories[i].append({"role": "assistant", "content": action.text})
            histories[i].append({"role": "user", "content": feedback_template.format(
                question=questions[i], feedback="", attempt=len(keys[i]), max_attempts=turns)})
    env.close()
    n = max(len(tasks), 1)
    return {
        "m1@t1": sum(c[0] for c in correct) / n,
        f"m{samples_at_turn_one}@t1": sum(m5) / n,
        f"m1@t{turns}": sum(_majority(k, c) for k, c in zip(keys, correct, strict=True)) / n,
        f"p1@t{turns}": sum(any(c) for c in correct) / n,
    }


# --------------------------------------------------------------------------------------- trainer
@dataclass
class RISEConfig:
    """Configuration of ``mulligan train rise``.

    Attributes:
        env_id: A registered env whose attempts are one action each (``Mulligan/Math-v0``).
        env_kwargs: JSON keyword arguments for ``gymnasium.make`` (generator settings, ...).
        output_dir: Iteration folders ``iter-<i>/`` (rollouts, samples, checkpoints, model) go here.
        model: The learner: a Hugging Face id or path, or ``tiny``.
        improver: ``self`` (best-of-N from the learner: self-distillation) or a teacher, as
            ``module:Class`` of a scripted agent or a model id/path (distillation).
        iterations: Collect -> train rounds (Algorithm 1).
        num_tasks: Tasks rolled out per iteration.
        max_attempts: Turns per rollout (RetryWithFeedback attempts).
        best_of_n: Candidates per turn when improving.
        tau: RWR temperature: weights are exp(reward / tau) (the paper's 0.4).
        filter: Which samples to keep: all | better | best | success.
        temperature: Sampling temperature of rollouts and candidates.
        max_new_tokens: Tokens generated per action.
        num_envs: Envs run side by side while collecting.
        window: Attempts the model sees (sliding window, the paper's 2); 0 keeps everything.
        max_length: Longest training sequence (longer ones keep their end).
        num_train_epochs: Epochs per iteration (ignored when max_steps > 0).
        max_steps: Optimiser steps per iteration; -1 uses num_train_epochs.
        per_device_train_batch_size: Samples per device per step.
        gradient_accumulation_steps: Micro-batches per optimiser step.
        learning_rate: Peak learning rate.
        lr_scheduler_type: Learning-rate schedule.
        warmup_ratio: Fraction of steps for warm-up.
        logging_steps: Log every this many steps.
        save_steps: Checkpoint every this many steps.
        save_total_limit: Checkpoints kept per iteration.
        report_to: Metrics integrations (none, tensorboard, wandb, ...).
        resume_from_checkpoint: ``auto`` resumes finished iterations and the latest checkpoint.
        eval_tasks: Held-out tasks for the RISE metrics after the last iteration (0 skips).
        seed: Seed of task choice, sampling and training.
        disable_tqdm: Hide progress bars.
    """

    env_id: str = field(default="Mulligan/Math-v0", metadata={"help": "Env id (one action per attempt)."})
    env_kwargs: str = field(default="{}", metadata={"help": "JSON kwargs for gymnasium.make."})
    output_dir: str = field(default="runs/rise", metadata={"help": "Output folder."})
    model: str = field(default="tiny", metadata={"help": "Learner: HF id or path, or 'tiny'."})
    improver: str = field(default="self", metadata={"help": "'self' or a teacher ('module:Class' or model)."})
    iterations: int = field(default=1, metadata={"help": "Collect -> train rounds."})
    num_tasks: int = field(default=64, metadata={"help": "Tasks rolled out per iteration."})
    max_attempts: int = field(default=3, metadata={"help": "Turns per rollout."})
    best_of_n: int = field(default=4, metadata={"help": "Candidates per turn."})
    tau: float = field(default=0.4, metadata={"help": "RWR temperature (paper: 0.4)."})
    filter: str = field(default="all", metadata={"help": "all | better | best | success."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens per action."})
    num_envs: int = field(default=16, metadata={"help": "Envs in lockstep."})
    window: int = field(default=2, metadata={"help": "Attempts in context (0: all)."})
    max_length: int = field(default=1024, metadata={"help": "Longest training sequence."})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs per iteration."})
    max_steps: int = field(default=-1, metadata={"help": "Steps per iteration; -1 uses epochs."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Samples per step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per step."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate."})
    lr_scheduler_type: str = field(default="constant_with_warmup", metadata={"help": "LR schedule."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Warm-up fraction."})
    logging_steps: int = field(default=10, metadata={"help": "Log every N steps."})
    save_steps: int = field(default=500, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept."})
    report_to: str = field(default="none", metadata={"help": "none | tensorboard | wandb | ..."})
    resume_from_checkpoint: str = field(default="", metadata={"help": "'auto' to resume."})
    eval_tasks: int = field(default=0, metadata={"help": "Held-out tasks for RISE metrics (0: skip)."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})

    def __post_init__(self) -> None:
        if isinstance(self.env_kwargs, dict):
            self.env_kwargs = json.dumps(self.env_kwargs)
        try:
            kwargs = json.loads(self.env_kwargs)
        except json.JSONDecodeError as err:
            raise ValueError(f"env_kwargs must be a JSON object, e.g. '{{\"data_seed\": 1}}': {err}") from err
        if not isinstance(kwargs, dict):
            raise ValueError("env_kwargs must be a JSON object, e.g. '{\"data_seed\": 1}'")
        if "max_attempts" in kwargs:
            raise ValueError("set turns with --max_attempts, not inside env_kwargs")
        if self.filter not in FILTERS:
            raise ValueError(f"filter must be one of {FILTERS}, got {self.filter!r}")
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0 (the paper uses 0.4), got {self.tau}")
        for name in ("iterations", "num_tasks", "max_attempts", "best_of_n", "num_envs", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.window < 0:
            raise ValueError(f"window must be >= 0 (0 keeps every attempt), got {self.window}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be a positive int, or -1 to use num_train_epochs; got {self.max_steps}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")

    @property
    def env_kwargs_dict(self) -> dict[str, Any]:
        """``env_kwargs`` parsed."""
        return json.loads(self.env_kwargs)


def _learner(model_path: str, config: RISEConfig, model=None, tokenizer=None):
    from mulligan.agents.context import KeepAll, LastAttempts
    from mulligan.agents.hf import HFAgent

    context = LastAttempts(config.window) if config.window else KeepAll()
    if model is not None:
        return HFAgent(model, tokenizer, temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                       seed=config.seed, context=context)
    return HFAgent(model_path, temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                   seed=config.seed, context=context)


def train_rise(
    config: RISEConfig, env_kwargs: dict[str, Any] | None = None, improver: Agent | None = None
) -> dict[str, Any]:
    """Run ``config.iterations`` rounds of collect -> improve -> reward-weighted regression.

    Args:
        config: The run's configuration.
        env_kwargs: Keyword arguments for ``gymnasium.make`` that replace ``config.env_kwargs``
            (for Python objects JSON cannot carry, such as a generator config dataclass).
        improver: An agent object that replaces ``config.improver`` (a teacher built in Python).

    Returns:
        ``{"output_dir", "model_dir", "iterations": [per-iteration stats], "eval": metrics or None}``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments, set_seed

    from mulligan.agents.tiny import resolve_model
    from mulligan.training.nat import resolve_checkpoint

    # Seed.
    set_seed(config.seed)
    os.makedirs(config.output_dir, exist_ok=True)
    env_kwargs = dict(env_kwargs) if env_kwargs is not None else config.env_kwargs_dict
    model_path = resolve_model(config.model)
    history = []

    for iteration in range(config.iterations):
        iter_dir = os.path.join(config.output_dir, f"iter-{iteration}")
        done_marker = os.path.join(iter_dir, "model", "rise_iteration.json")
        if config.resume_from_checkpoint and os.path.exists(done_marker):
            with open(done_marker, encoding="utf-8") as handle:
                history.append(json.load(handle))
            model_path = os.path.join(iter_dir, "model")
            continue
        os.makedirs(iter_dir, exist_ok=True)

        # Model: the learner of this iteration (the previous iteration's output).
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path)
        learner = _learner(model_path, config, model, tokenizer)

        # Rollouts: the current model in the multi-turn MDP (Sec. 4.1); resumable through the store.
        rollouts = collect_episodes(
            config.env_id, learner, config.num_tasks, env_kwargs={**env_kwargs, "max_attempts": config.max_attempts},
            num_envs=config.num_envs, seed=config.seed + iteration, store=TrajectoryStore(
                os.path.join(iter_dir, "rollouts.jsonl")), progress=not config.disable_tqdm,
        )

        # Improvement: best-of-N from the learner (self-distillation) or a teacher (Sec. 4.2).
        if improver is not None:
            improving = improver
        elif config.improver == "self":
            improving = learner
        else:
            improving = load_agent(config.improver, temperature=config.temperature,
                                   max_new_tokens=config.max_new_tokens)
        samples = improve_rollouts(rollouts, improving, config.env_id, best_of_n=config.best_of_n,
                                   env_kwargs=env_kwargs, batch_size=config.num_envs)
        kept = filter_samples(samples, config.filter)
        with open(os.path.join(iter_dir, "samples.jsonl"), "w", encoding="utf-8") as handle:
            for sample in samples:
                handle.write(json.dumps({**sample, "kept": sample in kept}, ensure_ascii=False) + "\n")
        if not kept:
            raise ValueError(
                f"iteration {iteration}: filter {config.filter!r} kept no sample of {len(samples)}; use "
                "--filter all, more --best_of_n, or a teacher --improver"
            )

        # Update loop: reward-weighted regression on the improved turns (Sec. 4.2).
        dataset = rwr_dataset(tokenizer, kept, config.tau, config.max_length)
        args = TrainingArguments(
            output_dir=os.path.join(iter_dir, "checkpoints"),
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
            disable_tqdm=config.disable_tqdm,
            remove_unused_columns=False,
            dataloader_num_workers=0,
        )
        trainer = _reward_weighted_trainer_class()(
            model=model, args=args, train_dataset=dataset, data_collator=RWRCollator(tokenizer.pad_token_id),
            processing_class=tokenizer,
        )
        result = trainer.train(
            resume_from_checkpoint=resolve_checkpoint(config.resume_from_checkpoint, args.output_dir))

        # Logging and checkpoint: the iteration's model is the next iteration's learner.
        model_path = os.path.join(iter_dir, "model")
        trainer.save_model(model_path)
        tokenizer.save_pretrained(model_path)
        stats = {
            "iteration": iteration,
            "rollouts": len(rollouts),
            "rollout_success": sum(t.success for t in rollouts) / max(len(rollouts), 1),
            "turn1_success": sum(bool(t.turns[0].info.get("success")) for t in rollouts) / max(len(rollouts), 1),
            "samples": len(samples),
            "kept": len(kept),
            "improved_success": sum(s["success"] for s in samples) / max(len(samples), 1),
            "train_loss": float(result.training_loss),
        }
        with open(done_marker, "w", encoding="utf-8") as handle:
            json.dump(stats, handle, indent=2)
        history.append(stats)

    evaluation = None
    if config.eval_tasks:
        evaluation = evaluate_rise(
            _learner(model_path, config),
            config.env_id, num_tasks=config.eval_tasks, seed=config.seed + 10_000, turns=5,
            env_kwargs=env_kwargs,
        )
    summary = {"output_dir": config.output_dir, "model_dir": model_path, "iterations": history,
               "eval": evaluation, "config": asdict(config)}
    with open(os.path.join(config.output_dir, "rise_summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``mulligan train rise``: parse :class:`RISEConfig` flags and train."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(RISEConfig, prog="mulligan train rise", description=__doc__.split("\n")[0])
    (config,) = parser.parse_args_into_dataclasses(args=argv if argv is not None else sys.argv[1:])
    summary = train_rise(config)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0
