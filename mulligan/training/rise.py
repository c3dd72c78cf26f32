"""RISE: recursive introspection (Qu et al. 2024, arXiv 2407.18219).

RISE teaches a model to improve its own answer over turns. The env is a multi-turn MDP: a failed
attempt is answered with "The answer is incorrect. Please try again." (Sec. 4.1), which is
:class:`~mulligan.envs.wrappers.RetryWithFeedback`, i.e. ``gymnasium.make(env_id, max_attempts=k)``.

One iteration (Sec. 4.2, Algorithm 1), as the official code runs it:

1. **Collect** (``workflow_gen.py``): in the retry MDP with ``max_attempts`` turns (2 in the
   paper), the first attempt is the learner's own on-policy sample (N = 1); every later attempt is
   the best of ``best_of_n`` candidates from the improver (the learner: self-distillation; or a
   teacher: distillation), conditioned on the attempts so far; the episode stops at the first
   success (:class:`~mulligan.agents.best_of_n.BestOfNAfterFirst`). Degenerate candidates (a word
   repeated more than 150 times) are set aside.
2. **Convert** (``workflow_convert.py``, :func:`rise_samples`): every attempt becomes a sample whose
   context is the history before it (learned: nothing) and whose target is the attempt, with reward
   ``r``. Repeated and empty attempts are dropped first (``--remove_duplication``). The filter
   keeps samples: ``all``; ``better`` (turn 1, and a turn whose reward beats the previous turn's);
   ``best`` (turn 1, and a turn whose reward is at least every earlier one); ``success``.
3. **Reward-weighted regression** (``CustomTrainer``): each sample's loss is weighted by
   ``exp(r / tau)`` (tau = 0.4); the official loss is the mean over samples of each sample's mean
   token loss (``loss_normalization="sample"``), ``"token"`` weighs every learned token equally.

Two options change what the model sees. ``one_shot``: RISE's one-shot opening (a worked example
as the system message, its answer unlearned, then ``"Great job! ... Now, let's move on to the next
one.\n{question}"``; :mod:`mulligan.agents.one_shot`) in rollouts, samples and evaluation alike.
``without_history``: the history-removed control, every attempt trained on the first prompt alone.

Iterating repeats 1-3 with the newly trained model. :func:`evaluate_rise` computes the paper's
metrics (Sec. 5) on a fixed list of tasks, each scored once: m1@t1 and m5@t1 from parallel
samples, m1@t5 (majority over 5 turns with no oracle: ``RetryWithFeedback(stop_on_success=False)``)
and p1@t5 (success within 5 turns), at temperature 1.0, with the model seeing the first prompt and
its most recent attempt (the paper's ``context_window 2`` = ``LastAttempts(1)``).

Attempts must be one action each (RISE's GSM8K and MATH; ``Mulligan/Math-v0``, ``Echo-v0``,
``Constraints-v0``); :func:`train_rise` checks it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from mulligan.agents.base import Agent
from mulligan.agents.best_of_n import BestOfNAfterFirst, is_degenerate
from mulligan.agents.context import KeepAll, LastAttempts, keep_last_attempts
from mulligan.agents.one_shot import OneShotAgent, OneShotDemo, load_one_shot_demo, with_one_shot
from mulligan.agents.tools import tools_for_trajectory
from mulligan.envs.verifiers.math import extract_answer
from mulligan.training.args import EnvArgs, SamplingArgs, SFTArgs, parse_args, parse_json_object
from mulligan.training.datasets import load_trajectory_source
from mulligan.training.evaluation import by_task, majority_metric, majority_votes_over_turns
from mulligan.training.progress import adapt_trainer_progress, quiet_library_bars
from mulligan.training.rollout import EnvPool, collect_episodes
from mulligan.training.sft import load_model, load_tokenizer, resolve_checkpoint, save_trained
from mulligan.training.trajectory import Trajectory, TrajectoryStore

FILTERS = ("all", "better", "best", "success")
LOSS_NORMALIZATIONS = ("sample", "token")


# --------------------------------------------------------------------------------------- samples
def _attempts(trajectory: Trajectory) -> list[tuple[str, float, bool, str | None]]:
    """``(action, reward, success, next observation)`` of each attempt of a rollout."""
    messages = trajectory.messages
    positions = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    attempts = []
    for turn, position in zip(trajectory.turns, positions, strict=True):
        reward = float(turn.info.get("attempt_return", turn.reward))
        following = messages[position + 1]["content"] if position + 1 < len(messages) else None
        attempts.append((messages[position]["content"], reward, bool(turn.info.get("success")), following))
    return attempts


def _keep(criteria: str, index: int, rewards: Sequence[float], success: bool) -> bool:
    """The official ``workflow_convert.py`` criteria for the attempt at ``index`` (0-based)."""
    if criteria == "success":
        return success
    if index == 0 or criteria == "all":
        return True  # every other criterion always keeps the first attempt
    if criteria == "better":
        return rewards[index] > rewards[index - 1]
    return all(rewards[index] >= earlier for earlier in rewards[:index])  # best


def rise_samples(
    rollouts: Sequence[Trajectory],
    *,
    criteria: str = "all",
    remove_duplicates: bool = True,
    max_repeats: int = 150,
    window: int = 1,
    system_prompt: str | None = None,
    one_shot: OneShotDemo | None = None,
    history: bool = True,
) -> list[dict[str, Any]]:
    """Training samples from RISE rollouts, as the official converter builds them.

    For each rollout the attempts are taken in order; with ``remove_duplicates`` an attempt whose
    stripped text is empty or repeats an earlier attempt is dropped together with the feedback
    after it, and attempts that :func:`~mulligan.agents.best_of_n.is_degenerate` flags are dropped
    the same way. Then attempt ``i`` becomes a sample when ``criteria`` keeps it (see the module
    docstring); the conversation ends at the first success.

    A sample's context is what the learner sees at that turn with a window of ``window`` previous
    attempts (:func:`~mulligan.agents.context.keep_last_attempts`; 0 keeps all), after the
    ``system_prompt`` if any. With ``one_shot`` the first prompt is RISE's one-shot opening
    (:func:`~mulligan.agents.one_shot.with_one_shot`: the demo question as the system message, the
    demo answer unlearned, then the framed task), as :class:`~mulligan.agents.one_shot.OneShotAgent`
    showed it. ``history=False`` is the history-removed control: every attempt is a single-turn
    sample of the first prompt alone (earlier attempts and their feedback dropped), with the same
    attempts, filter and weights.

    Raises:
        ValueError: On an unknown filter, or both ``one_shot`` and ``system_prompt`` (the demo is
            the system message).

    Returns:
        Dicts with ``messages`` (context + the attempt), ``reward``, ``success``, ``turn``
        (1-based among the kept attempts), ``rollout`` (index into ``rollouts``) and ``task_id``.
    """
    if criteria not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {criteria!r}")
    if one_shot is not None and system_prompt:
        raise ValueError("the one-shot demo is the system message; pass one_shot or system_prompt, not both")
    samples = []
    for r, rollout in enumerate(rollouts):
        kept, seen = [], set()
        for action, reward, success, following in _attempts(rollout):
            text = action.strip()
            if remove_duplicates and (not text or text in seen):
                continue
            if is_degenerate(action, max_repeats):
                continue
            seen.add(text)
            kept.append((action, reward, success, following))
        rewards = [reward for _, reward, _, _ in kept]
        shown = [dict(next(m for m in rollout.messages if m["role"] == "user"))]
        for i, (action, reward, success, following) in enumerate(kept):
            if _keep(criteria, i, rewards, success):
                if not history:
                    context = list(shown[:1])  # the first prompt alone
                else:
                    context = keep_last_attempts(shown, window) if window else list(shown)
                if one_shot is not None:
                    context = with_one_shot(context, one_shot, rollout.task)
                system = [{"role": "system", "content": system_prompt}] if system_prompt else []
                samples.append(
                    {
                        "messages": [*system, *context, {"role": "assistant", "content": action}],
                        "reward": reward,
                        "success": success,
                        "turn": i + 1,
                        "rollout": r,
                        "task_id": rollout.task_id,
                        # A tools-mode episode's model saw the env's tools: its sample trains with them.
                        "tools": tools_for_trajectory(rollout),
                    }
                )
            if success or following is None:
                break
            shown += [{"role": "assistant", "content": action}, {"role": "user", "content": following}]
    return samples


def rwr_dataset(tokenizer, samples: Sequence[dict[str, Any]], tau: float, max_length: int | None = None):
    """Tokenized samples with reward-weighted-regression weights (Sec. 4.2, Eq. 4.3).

    Only the last assistant turn is learned, with weight ``exp(reward / tau)``; the history's tokens
    (earlier attempts, feedback) are context: label -100. Samples longer than ``max_length`` keep
    their *end* (the learned turn).

    Returns:
        A ``datasets.Dataset`` with ``input_ids``, ``labels`` and ``weight`` (one per sample).
    """
    from datasets import Dataset

    from mulligan.training.chat import tokenize_conversation

    if tau <= 0:
        raise ValueError(f"tau must be > 0 (the paper uses 0.4), got {tau}")
    rows: dict[str, list] = {"input_ids": [], "labels": [], "weight": []}
    for sample in samples:
        messages = sample["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        episode = tokenize_conversation(tokenizer, messages, learn_turns=[last], tools=sample.get("tools"))
        ids = episode.input_ids
        labels = [tok if m else -100 for tok, m in zip(ids, episode.assistant_mask, strict=True)]
        if max_length is not None and len(ids) > max_length:
            ids, labels = ids[-max_length:], labels[-max_length:]
        rows["input_ids"].append(ids)
        rows["labels"].append(labels)
        rows["weight"].append(math.exp(float(sample["reward"]) / tau))
    return Dataset.from_dict(rows)


class RWRCollator:
    """Right-pad ``input_ids`` (pad id) and ``labels`` (-100) into tensors; stack ``weight``."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Collate a batch."""
        import torch

        width = max(len(f["input_ids"]) for f in features)

        def pad(key, value):
            return torch.tensor([list(f[key]) + [value] * (width - len(f[key])) for f in features], dtype=torch.long)

        attention_mask = torch.tensor(
            [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features], dtype=torch.long
        )
        return {
            "input_ids": pad("input_ids", self.pad_token_id),
            "attention_mask": attention_mask,
            "labels": pad("labels", -100),
            "weight": torch.tensor([float(f["weight"]) for f in features], dtype=torch.float32),
        }


def rwr_loss(logits, labels, weight, normalization: str = "sample"):
    """RISE's reward-weighted regression loss over a batch (Sec. 4.2).

    Args:
        logits: ``[B, T, V]`` model outputs.
        labels: ``[B, T]`` token ids, -100 off the learned turn.
        weight: ``[B]`` per-sample weights ``exp(r / tau)``.
        normalization: ``sample``: mean over samples of ``weight x`` the sample's mean token NLL
            (the official ``CustomTrainer``); ``token``: ``sum(weight x NLL) / learned tokens``
            over the batch (longer responses weigh more).
    """
    import torch.nn.functional as F

    logits, targets = logits[:, :-1, :].float(), labels[:, 1:]
    nll = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="none"
    ).view_as(targets)  # [B, T-1]
    learned = (targets != -100).float()
    if normalization == "sample":
        per_sample = (nll * learned).sum(dim=1) / learned.sum(dim=1).clamp(min=1.0)  # [B]
        return (weight * per_sample).mean()
    return (nll * learned * weight[:, None]).sum() / learned.sum().clamp(min=1.0)


def reward_weighted_trainer(model, args, dataset, tokenizer, normalization: str):
    """A ``transformers.Trainer`` whose loss is :func:`rwr_loss`."""
    from transformers import Trainer

    class RewardWeightedTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels, weight = inputs.pop("labels"), inputs.pop("weight")
            outputs = model(**inputs)
            loss = rwr_loss(outputs.logits, labels, weight, normalization)
            return (loss, outputs) if return_outputs else loss

    trainer = RewardWeightedTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=RWRCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
    )
    # The loss is a per-batch mean that ignores num_items_in_batch: let the Trainer divide it by
    # the accumulation steps (it skips that for models that take loss kwargs).
    trainer.model_accepts_loss_kwargs = False
    return trainer


# --------------------------------------------------------------------------------------- evaluation
def answer_key(text: str) -> str:
    """The answer a response commits to, for majority votes.

    The math verifier's extraction (:func:`~mulligan.envs.verifiers.math.extract_answer`), so
    ``\\boxed{\\frac{1}{2}}`` votes as ``\\frac{1}{2}``; else the whitespace-normalised text.
    """
    answer = extract_answer(text)
    return answer if answer is not None else " ".join(text.split())


def parallel_metrics(
    trajectories: Sequence[Trajectory], *, seed: int = 0, key: Callable[[str], str] = answer_key
) -> dict[str, float]:
    """m1@t1 and m{k}@t1 from ``k`` single-attempt samples per task (Sec. 5).

    m1@t1 is the mean success of all samples (the single-sample accuracy, estimated from every
    sample); m{k}@t1 the success of each task's majority answer; ``m{k}@t1_ties`` the share of tasks
    whose vote was tied (the one tie rule: :func:`mulligan.training.evaluation.majority_vote`).
    """
    k = min(len(samples) for samples in by_task(trajectories))
    return {
        "m1@t1": float(np.mean([t.success for t in trajectories])),
        **majority_metric(key, f"m{k}@t1", seed=seed)(list(trajectories)),
    }


def sequential_metrics(
    trajectories: Sequence[Trajectory], *, seed: int = 0, key: Callable[[str], str] = answer_key
) -> dict[str, float]:
    """m1@t{n} and p1@t{n} from ``n``-attempt episodes run without an oracle (Sec. 5).

    m1@t{n}: the success of the majority answer over the ``n`` attempts (ties drawn at random per
    task, see :func:`mulligan.training.evaluation.majority_vote`; ``m1@t{n}_ties`` their share).
    p1@t{n}: success at some attempt, which equals the oracle-stopped run's success since the
    attempts before the first success coincide.
    """
    n = min(len(t.turns) for t in trajectories)
    votes = majority_votes_over_turns(trajectories, key, seed=seed)
    return {
        f"m1@t{n}": float(np.mean([correct for correct, _ in votes])),
        f"m1@t{n}_ties": float(np.mean([tied for _, tied in votes])),
        f"p1@t{n}": float(np.mean([any(bool(turn.info.get("success")) for turn in t.turns) for t in trajectories])),
    }


def evaluate_rise(
    agent: Agent,
    env_id: str,
    task_indices: Sequence[int] | None,
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    turns: int = 5,
    parallel_samples: int = 5,
    seed: int = 0,
    num_envs: int = 8,
    progress: bool = False,
) -> dict[str, float]:
    """The paper's metrics (Sec. 5) on ``task_indices``, each task scored once per sample.

    ``task_indices=None`` is the whole split. Both runs go through
    :func:`~mulligan.training.evaluation.evaluate`:

    * m1@t1, m{k}@t1: ``parallel_samples`` single-attempt samples per task (``--max_turns 1
      --num_of_samples 5`` in the official ``workflow_eval.py``).
    * m1@t{turns}, p1@t{turns}: one ``turns``-attempt episode per task in
      ``RetryWithFeedback(stop_on_success=False)``: the feedback follows every attempt, right or
      wrong, so the model cannot know when it is right.

    The agent's own context policy applies: RISE evaluates with the first prompt and the most
    recent attempt (``LastAttempts(1)``) at temperature 1.0; build the agent that way.
    """
    from mulligan.envs.wrappers import set_stop_on_success
    from mulligan.training.evaluation import evaluate

    kwargs = {k: v for k, v in dict(env_kwargs or {}).items() if k != "max_attempts"}
    parallel = evaluate(
        agent, env_id, task_indices, env_kwargs=kwargs, samples_per_task=parallel_samples, seed=seed,
        num_envs=num_envs, progress=progress, metrics=[lambda t: parallel_metrics(t, seed=seed)],
    )  # fmt: skip
    with EnvPool(env_id, num_envs, {**kwargs, "max_attempts": turns}) as pool:
        pool.call(set_stop_on_success, False)  # no oracle; in the env's worker when it has one
        sequential = evaluate(
            agent, pool, task_indices, seed=seed + 1, progress=progress,
            metrics=[lambda t: sequential_metrics(t, seed=seed)],
        )  # fmt: skip
    return {**parallel.metrics, **sequential.metrics}


# --------------------------------------------------------------------------------------- trainer
@dataclass
class RISEArgs(SFTArgs, EnvArgs, SamplingArgs):
    """Configuration of ``mulligan train rise`` (fields left at ``None`` come from ``--preset``).

    Presets: ``tiny`` (offline CPU: lr 5e-4, constant with warm-up, 2 epochs, batch 8, 1,024
    tokens, 64 new tokens, best-of-4) and ``paper`` (the official ``finetune_deepspeed.sh`` and
    README: lr 1e-5, cosine, warm-up 0.04, 1 x 16 accumulation, 2,048 tokens, bf16, gradient
    checkpointing, weight decay 0; 1,000 new tokens; best-of-16 self-distillation; the official run
    adds ``--deepspeed`` ZeRO-3; epochs are not stated, 1 here).

    Attributes:
        improver: ``self`` (best-of-N from the learner: self-distillation) or a teacher, as
            ``module:Class`` of a scripted agent or a model id/path (distillation).
        iterations: Collect -> train rounds (Algorithm 1).
        num_tasks: Tasks rolled out per iteration (indices from ``task_offset``).
        best_of_n: Candidates per improved attempt (the paper: 16 for self-distillation).
        tau: RWR temperature: weights are exp(reward / tau) (the paper's 0.4).
        filter: Which samples to keep: all | better | best | success (official meanings).
        remove_duplicates: Drop repeated and empty attempts (the official ``--remove_duplication``).
        max_repeats: Degenerate text: a word repeated more often than this (0: keep all).
        loss_normalization: ``sample`` (official: mean over samples of the mean token loss) or
            ``token`` (every learned token weighs the same).
        rollouts: Iteration 0's rollouts from a trajectory source (a store, ``dir:PATH`` or
            ``hf:NAME[:CONFIG][:SPLIT]``: :func:`~mulligan.training.datasets.load_trajectory_source`)
            instead of collecting them; later iterations collect on-policy as usual. Empty: collect.
        window: Previous attempts the model sees (the paper's ``context_window 2`` = 1); 0: all.
        one_shot: RISE's one-shot opening (:mod:`mulligan.agents.one_shot`): ``builtin`` (a demo
            written for mulligan) or a JSON file ``{"question", "answer"}``; the demo question is
            the system message, its answer an unlearned assistant turn, and the task follows as
            ``"Great job! ... Now, let's move on to the next one.\n{question}"``, in rollouts,
            improver samples, training samples and evaluation alike. Empty: none. Not with
            ``system_prompt``. A teacher given to :func:`train_rise` as an object is used as is.
        without_history: The history-removed control (issue 13): every attempt is trained as a
            single-turn sample of the first prompt alone (same attempts, filter and weights), so
            only the multi-turn conditioning differs from RISE. Collection and evaluation are
            unchanged.
        format_reward: Reward of an attempt with no extractable answer, passed to the env as
            ``format_reward`` (RISE's GSM8K env pays -1); empty: the env's default.
        eval_tasks: Held-out tasks for the RISE metrics after the last iteration (0 skips; -1: the
            whole evaluation split).
        eval_env_kwargs: JSON merged over ``env_kwargs`` for evaluation (the test split).
        eval_turns: Sequential turns of the metrics (m1@t5, p1@t5).
        eval_samples: Parallel samples of the metrics (m5@t1).
        eval_temperature: Sampling temperature of every metric (the paper's 1.0).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            "learning_rate": 5e-4,
            "lr_scheduler_type": "constant_with_warmup",
            "warmup_ratio": 0.05,
            "num_train_epochs": 2.0,
            "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 1,
            "max_length": 1024,
            "max_new_tokens": 64,
            "best_of_n": 4,
        },
        "paper": {
            "learning_rate": 1e-5,
            "lr_scheduler_type": "cosine",
            "warmup_ratio": 0.04,
            "num_train_epochs": 1.0,
            "per_device_train_batch_size": 1,
            "gradient_accumulation_steps": 16,
            "max_length": 2048,
            "weight_decay": 0.0,
            "bf16": True,
            "gradient_checkpointing": True,
            "max_new_tokens": 1000,
            "best_of_n": 16,
        },
    }

    env_id: str = field(default="Mulligan/Math-v0", metadata={"help": "Env id (one action per attempt)."})
    max_attempts: int = field(default=2, metadata={"help": "Attempts per rollout (the paper's 2)."})
    num_envs: int = field(default=16, metadata={"help": "Envs run side by side."})
    output_dir: str = field(default="runs/rise", metadata={"help": "Output folder."})
    improver: str = field(default="self", metadata={"help": "'self' or a teacher ('module:Class' or model)."})
    iterations: int = field(default=1, metadata={"help": "Collect -> train rounds."})
    num_tasks: int = field(default=64, metadata={"help": "Tasks rolled out per iteration."})
    best_of_n: int | None = field(default=None, metadata={"help": "Candidates per improved attempt (preset)."})
    tau: float = field(default=0.4, metadata={"help": "RWR temperature (paper: 0.4)."})
    filter: str = field(default="all", metadata={"help": "all | better | best | success."})
    remove_duplicates: bool = field(default=True, metadata={"help": "Drop repeated and empty attempts."})
    max_repeats: int = field(default=150, metadata={"help": "Degenerate: a word repeated more (0: off)."})
    loss_normalization: str = field(default="sample", metadata={"help": "sample (official) | token."})
    rollouts: str = field(default="", metadata={"help": "Iteration 0's rollouts from a source (empty: collect)."})
    window: int = field(default=1, metadata={"help": "Previous attempts in context (paper: 1); 0: all."})
    one_shot: str = field(default="", metadata={"help": "One-shot demo: builtin | a JSON {question, answer} file."})
    without_history: bool = field(default=False, metadata={"help": "Control: train attempts without history."})
    format_reward: float | None = field(default=None, metadata={"help": "Reward with no answer (RISE: -1)."})
    eval_tasks: int = field(default=0, metadata={"help": "Held-out tasks for RISE metrics (0: skip, -1: all)."})
    eval_env_kwargs: str = field(default='{"split": "test"}', metadata={"help": "JSON over env_kwargs for eval."})
    eval_turns: int = field(default=5, metadata={"help": "Sequential turns (m1@t5, p1@t5)."})
    eval_samples: int = field(default=5, metadata={"help": "Parallel samples (m5@t1)."})
    eval_temperature: float = field(default=1.0, metadata={"help": "Temperature of the metrics (paper: 1.0)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.filter not in FILTERS:
            raise ValueError(f"filter must be one of {FILTERS}, got {self.filter!r}")
        if self.loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(
                f"loss_normalization must be one of {LOSS_NORMALIZATIONS}, got {self.loss_normalization!r}"
            )
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0 (the paper uses 0.4), got {self.tau}")
        for name in ("iterations", "num_tasks", "best_of_n", "eval_turns", "eval_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.window < 0 or self.max_repeats < 0:
            raise ValueError("window and max_repeats must be >= 0 (0: keep every attempt / no check)")
        if self.eval_tasks < -1:
            raise ValueError(f"eval_tasks must be >= 0, or -1 for the whole split; got {self.eval_tasks}")
        if self.eval_temperature < 0:
            raise ValueError(
                f"eval_temperature must be >= 0 (the paper's metrics use 1.0), got {self.eval_temperature}"
            )
        self.eval_env_kwargs_dict = {
            **self.env_kwargs_dict,
            **parse_json_object("eval_env_kwargs", self.eval_env_kwargs),
        }
        if "max_attempts" in self.eval_env_kwargs_dict:
            raise ValueError("set evaluation turns with --eval_turns, not inside eval_env_kwargs")
        if self.format_reward is not None:
            self.env_kwargs_dict["format_reward"] = self.format_reward
            self.eval_env_kwargs_dict["format_reward"] = self.format_reward
        if self.one_shot and self.system_prompt:
            raise ValueError("--one_shot puts the demo question in the system message; drop --system_prompt")
        # Shared sampling flags that RISE's sampled rollouts and improvers have no use for: refused,
        # not silently ignored.
        if self.prefill_response or self.num_beams != 1:
            raise ValueError(
                "--prefill_response and --num_beams do not apply to RISE (its attempts are sampled at "
                "--temperature); evaluate a trained model with them through `mulligan eval`"
            )
        self.one_shot_demo = load_one_shot_demo(self.one_shot) if self.one_shot else None

    def context(self):
        """The context policy of every RISE agent: the last ``window`` attempts (0: all)."""
        return LastAttempts(self.window) if self.window else KeepAll()


def _agent(config: RISEArgs, model, tokenizer=None, *, temperature: float):
    from mulligan.agents.hf import HFAgent

    if config.one_shot_demo is not None:
        # The wrapper owns the window: it cuts the env's conversation, then puts the demo in front.
        inner = HFAgent(
            model, tokenizer, temperature=temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
            seed=config.seed,
        )  # fmt: skip
        return OneShotAgent(inner, config.one_shot_demo, context=config.context())
    return HFAgent(
        model, tokenizer, temperature=temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
        seed=config.seed, context=config.context(), system_prompt=config.system_prompt or None,
    )  # fmt: skip


def _check_single_action_attempts(rollouts: Sequence[Trajectory]) -> None:
    for rollout in rollouts:
        attempts = [turn.info.get("attempt") for turn in rollout.turns]
        if len(set(attempts)) != len(attempts):
            raise ValueError(
                f"{rollout.env_id}: an attempt took several actions; RISE needs one action per attempt "
                "(Math-v0, Echo-v0, Constraints-v0), not a ReAct env"
            )


def eval_task_indices(config: RISEArgs, num_tasks: int | None) -> list[int]:
    """The held-out tasks: the first ``eval_tasks`` of the evaluation split (all with -1)."""
    if config.eval_tasks == -1:
        if num_tasks is None:
            raise ValueError("eval_tasks=-1 needs a finite evaluation split; pass a number of tasks")
        return list(range(num_tasks))
    if num_tasks is not None and config.eval_tasks > num_tasks:
        raise ValueError(f"eval_tasks={config.eval_tasks} exceeds the {num_tasks} tasks of the evaluation split")
    return list(range(config.eval_tasks))


def _collect_and_convert(
    config: RISEArgs, pool: EnvPool, agents: tuple[Agent, Agent], iter_dir: str, seed: int, *, iteration: int = 0
):
    from mulligan.training.rewards import EnvReward

    scorer = EnvReward(config.env_id, {k: v for k, v in config.env_kwargs_dict.items()})
    learner, improver = agents
    data_agent = BestOfNAfterFirst(
        learner, improver, config.best_of_n, lambda text, task: scorer.score(text, {"task": dict(task)}),
        max_repeats=config.max_repeats,
    )  # fmt: skip
    if config.rollouts and iteration == 0:
        rollouts = load_trajectory_source(config.rollouts)  # e.g. an exported collection
    else:
        rollouts = collect_episodes(
            pool, data_agent, config.num_tasks, seed=seed,
            task_indices=range(config.task_offset, config.task_offset + config.num_tasks),
            store=TrajectoryStore(os.path.join(iter_dir, "rollouts.jsonl")), progress=not config.disable_tqdm,
        )  # fmt: skip
    _check_single_action_attempts(rollouts)
    samples = rise_samples(
        rollouts, criteria=config.filter, remove_duplicates=config.remove_duplicates,
        max_repeats=config.max_repeats, window=config.window, system_prompt=config.system_prompt or None,
        one_shot=config.one_shot_demo, history=not config.without_history,
    )  # fmt: skip
    with open(os.path.join(iter_dir, "samples.jsonl"), "w", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return rollouts, samples


def train_rise(config: RISEArgs, improver: Agent | None = None) -> dict[str, Any]:
    """Run ``config.iterations`` rounds of collect -> convert -> reward-weighted regression.

    Args:
        config: The run's configuration (``env_kwargs`` may be a dict holding objects JSON cannot
            carry, such as a generator config dataclass).
        improver: An agent object that replaces ``config.improver`` (a teacher built in Python).

    Returns:
        ``{"output_dir", "model_dir", "iterations": [per-iteration stats], "eval": metrics or None}``.
    """
    quiet_library_bars(force=config.disable_tqdm)  # no carriage-return bars in a log
    from transformers import set_seed

    from mulligan.agents.loading import load_agent

    # Seed.
    set_seed(config.seed)
    os.makedirs(config.output_dir, exist_ok=True)
    model_path = config.model
    history = []
    eval_indices: list[int] = []
    if config.eval_tasks:
        # Check the evaluation env and its tasks before training, not after.
        with EnvPool(config.env_id, 1, config.eval_env_kwargs_dict) as probe:
            eval_indices = eval_task_indices(config, probe.num_tasks)
    pool = EnvPool(config.env_id, config.num_envs, {**config.env_kwargs_dict, "max_attempts": config.max_attempts})
    try:
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
            tokenizer = load_tokenizer(config, model_path)
            model = load_model(config, model_path)
            learner = _agent(config, model, tokenizer, temperature=config.temperature)

            # Data: turn 1 on-policy, later turns best-of-N from the improver (Sec. 4.2), converted.
            if improver is not None:
                improving = improver
            elif config.improver == "self":
                improving = learner
            else:
                improving = load_agent(
                    config.improver, temperature=config.temperature, max_new_tokens=config.max_new_tokens
                )
                if config.one_shot_demo is not None:  # the teacher sees the learner's prompt (official)
                    improving = OneShotAgent(improving, config.one_shot_demo, context=config.context())
            rollouts, samples = _collect_and_convert(
                config, pool, (learner, improving), iter_dir, config.seed + iteration, iteration=iteration
            )
            if not samples:
                raise ValueError(
                    f"iteration {iteration}: filter {config.filter!r} kept no sample of {len(rollouts)} rollouts; "
                    "use --filter all, more --best_of_n, or a teacher --improver"
                )

            # Update loop: reward-weighted regression on the kept samples (Sec. 4.2).
            dataset = rwr_dataset(tokenizer, samples, config.tau, config.max_length)
            args = config.to_training_arguments(os.path.join(iter_dir, "checkpoints"), remove_unused_columns=False)
            trainer = reward_weighted_trainer(model, args, dataset, tokenizer, config.loss_normalization)
            adapt_trainer_progress(trainer)
            data_stats = {
                "env/success_rate": sum(t.success for t in rollouts) / max(len(rollouts), 1),
                "env/turn1_success_rate": (
                    sum(bool(t.turns[0].info.get("success")) for t in rollouts) / max(len(rollouts), 1)
                ),
                "examples": len(samples),
                "data/success_rate": sum(s["success"] for s in samples) / len(samples),
            }
            result = trainer.train(
                resume_from_checkpoint=resolve_checkpoint(config.resume_from_checkpoint, args.output_dir)
            )
            # The data's numbers go to report_to too, under the names docs/training.md lists (after
            # train(): the integrations open their run in on_train_begin).
            trainer.log(dict(data_stats))

            # Logging and checkpoint: the iteration's model is the next iteration's learner.
            model_path = os.path.join(iter_dir, "model")
            save_trained(trainer, tokenizer, model_path)
            stats = {
                "iteration": iteration,
                "rollouts": len(rollouts),
                **data_stats,
                "train_loss": float(result.training_loss),
                "global_step": int(result.global_step),
            }
            with open(done_marker, "w", encoding="utf-8") as handle:
                json.dump(stats, handle, indent=2)
            history.append(stats)
    finally:
        pool.close()

    evaluation = None
    if eval_indices:
        evaluation = evaluate_rise(
            _agent(config, model_path, temperature=config.eval_temperature), config.env_id, eval_indices,
            env_kwargs=config.eval_env_kwargs_dict, turns=config.eval_turns, parallel_samples=config.eval_samples,
            seed=config.seed + 10_000, num_envs=config.num_envs, progress=not config.disable_tqdm,
        )  # fmt: skip
    summary = {
        "output_dir": config.output_dir,
        "model_dir": model_path,
        "iterations": history,
        "eval": evaluation,
        "config": asdict(config),
    }
    with open(os.path.join(config.output_dir, "rise_summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2, default=str)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``mulligan train rise``: parse :class:`RISEArgs` flags and train."""
    config = parse_args(RISEArgs, argv, prog="mulligan train rise", description=__doc__.split("\n")[0])
    summary = train_rise(config)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0
