"""CORGI: RL with a checker's corrective feedback (Bezalel et al. 2024, arXiv 2411.01483).

CORGI trains a model to use critiques. A session on ``Mulligan/Constraints-v0``: the model answers
the instruction; the rule-based checker's critique comes back as the next user turn (Sec. 3); the
model retries, up to ``retry_limit`` times (3 in the paper: 4 attempts); the session's return is the
best attempt's score (``RetryWithFeedback(reward="max")``). The whole session is one PPO sample
with every model token learned and every critique masked. Where the reward sits on the tokens is
:class:`~mulligan.training.ppo.PPOArgs`'s ``reward_placement``: ``last_token`` is the paper's (the
whole best-of-session score on the session's last model token); ``per_attempt`` pays each attempt
the increment of the running best on its own last token (same return, finer credit).

The paper's baseline is the same trainer with ``retry_limit=0`` (plain single-attempt RL). Both
are evaluated the same way (Sec. 4, official ``validate_with_critique.py``): greedy sessions with
``eval_retry_limit`` retries (4 by default, as the official evaluation) on held-out constraint
families, reported as the success-after-attempt-``i`` curve: the fraction of sessions whose best
score is 1 within their first ``i`` attempts (:func:`success_curve`).

Tier note: this is the one method module that imports another (:mod:`mulligan.training.ppo`),
because CORGI *is* PPO with retries; everything else comes from the infrastructure tier.

Command line: ``mulligan train corgi --retry_limit 3 --train_families completion,concepts``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mulligan.training.ppo import PPOArgs, PPOTrainer

DEFAULT_TRAIN_FAMILIES = "completion,concepts,letters,words,keywords,language,length_constraints"
DEFAULT_EVAL_FAMILIES = "detectable_content,detectable_format,combination,startend,change_case,punctuation"
#: CORGI's rule-checked tasks under their own names: its one rule-checked source task for training,
#: two of its held-out tasks for evaluation (the others need model-based critics).
PAPER_TRAIN_FAMILIES = "corgi:num_planning"
PAPER_EVAL_FAMILIES = "corgi:cmg_hard,corgi:panagram"


@dataclass
class CORGIArgs(PPOArgs):
    """Configuration of :func:`train_corgi` and ``mulligan train corgi``.

    Every :class:`~mulligan.training.ppo.PPOArgs` field (``--preset paper`` gives CORGI's PPO
    settings) except ``max_attempts``, which is ``retry_limit + 1``; plus the following.

    Attributes:
        env_id: The constraints env (``Mulligan/Constraints-v0``).
        output_dir: Checkpoints, final model, ``corgi_eval.json``.
        retry_limit: Retries after the first attempt during training (the paper's 3; 0 is the
            paper's baseline, plain RL).
        eval_retry_limit: Retries at evaluation, the same for CORGI and the baseline (the official
            evaluation's 4; 19 for its ``program`` task).
        train_families: Comma-separated constraint families (or single constraint ids) to train on
            (preset: tiny mulligan's families; paper ``corgi:num_planning``, CORGI's rule-checked
            source task).
        eval_families: Comma-separated held-out families or constraint ids to evaluate on, with no
            constraint id in common with training (preset: tiny IFEval families; paper
            ``corgi:cmg_hard,corgi:panagram``, two of CORGI's held-out tasks).
        eval_tasks: Held-out tasks evaluated before and after training, per run (0: no evaluation;
            preset: tiny 64, paper 1000; CORGI's panagram and num_planning test sets hold 1000
            prompts each, cmg_hard 200).
        eval_task_offset: First task index of the evaluation tasks (``None``: 1,000,000 for the
            generator, 0 for ``eval_data``).
        train_data: CORGI's released files to train on instead of generated ``train_families``
            tasks, comma-separated (e.g. the five source tasks' ``data_llama_3/train/*.json``, mixed
            as the paper's meta-learning run; any :mod:`mulligan.envs.data` spec).
        eval_data: CORGI's released held-out files to evaluate on instead of ``eval_families``
            (e.g. ``data_llama_3/test/panagram.json``); ``eval_tasks`` is capped at their size.
        critics: ``paper`` loads the model critics of CORGI's model-checked tasks (sentiment,
            style transfer, SimCSE, FLAN-T5, ...; :mod:`mulligan.envs.verifiers.critics`), needed
            when the data holds those tasks; empty: rule-checked tasks only.
        eval_before: Also evaluate the starting model.
        prefill_response: Answer as CORGI's model does (App. A, the official ``chat_ppo_trainer.py``):
            every attempt, retries included, starts with the task's ``- Output: ...`` primer
            (``info["response_prefix"]``), the model writes the continuation, and the env scores
            it as one (``primed=True``, training and evaluation envs). Trainers learn the
            continuation with the primer as context. Preset: tiny false, paper true.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            "train_families": DEFAULT_TRAIN_FAMILIES,
            "eval_families": DEFAULT_EVAL_FAMILIES,
            "eval_tasks": 64,
            "prefill_response": False,
        },
        "paper": {
            "train_families": PAPER_TRAIN_FAMILIES,
            "eval_families": PAPER_EVAL_FAMILIES,
            "eval_tasks": 1000,
            "prefill_response": True,
        },
    }

    env_id: str = field(default="Mulligan/Constraints-v0", metadata={"help": "The constraints env id."})
    output_dir: str = field(default="runs/corgi", metadata={"help": "Checkpoints, final model, corgi_eval.json."})
    # Derived from retry_limit in __post_init__, so it is not a command-line flag.
    max_attempts: int = field(default=1, init=False, metadata={"help": "retry_limit + 1 (derived)."})
    retry_limit: int = field(default=3, metadata={"help": "Training retries after the first attempt (0: baseline)."})
    eval_retry_limit: int = field(
        default=4, metadata={"help": "Evaluation retries, the same for CORGI and the baseline (paper: 4)."}
    )
    train_families: str | None = field(
        default=None,
        metadata={
            "help": "Families or constraint ids to train on (preset: tiny mulligan's, paper corgi:num_planning)."
        },
    )
    eval_families: str | None = field(
        default=None,
        metadata={
            "help": "Held-out families or ids (preset: tiny IFEval families, paper corgi:cmg_hard,corgi:panagram)."
        },
    )
    eval_tasks: int | None = field(
        default=None, metadata={"help": "Held-out tasks evaluated, 0: none (preset: tiny 64, paper 1000)."}
    )
    eval_task_offset: int | None = field(
        default=None, metadata={"help": "First evaluation task index (default: 1000000, 0 with --eval_data)."}
    )
    train_data: str = field(default="", metadata={"help": "CORGI's files to train on (replaces train_families)."})
    eval_data: str = field(default="", metadata={"help": "CORGI's held-out files (replaces eval_families)."})
    critics: str = field(default="", metadata={"help": "'paper': CORGI's model critics for model-checked tasks."})
    eval_before: bool = field(default=True, metadata={"help": "Also evaluate the starting model."})
    prefill_response: bool | None = field(
        default=None,
        metadata={"help": "Start attempts with CORGI's primer; envs primed=True (preset: tiny false, paper true)."},
    )

    def __post_init__(self) -> None:
        from mulligan.envs.verifiers.constraints import CONSTRAINT_IDS, FAMILIES

        super().__post_init__()
        for name in ("retry_limit", "eval_retry_limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0 (0: a single attempt), got {value!r}")
        if self.eval_task_offset is None:
            self.eval_task_offset = 0 if self.eval_data else 1_000_000
        if self.eval_tasks < 0 or self.eval_task_offset < 0:
            raise ValueError("eval_tasks and eval_task_offset must be >= 0")
        if self.critics not in ("", "paper"):
            raise ValueError(f"critics must be '' (rule-checked tasks only) or 'paper', got {self.critics!r}")
        shared = set(self.data_files("train_data")) & set(self.data_files("eval_data"))
        if shared:
            raise ValueError(f"eval_data must be held out from train_data; both list {sorted(shared)}")
        for name in ("train_families", "eval_families"):
            unknown = [f for f in self.families(name) if f not in FAMILIES and f not in CONSTRAINT_IDS]
            if unknown or not self.families(name):
                raise ValueError(
                    f"{name} must be a comma-separated list of families ({', '.join(FAMILIES)}) or constraint "
                    f"ids; got {unknown or '[]'}"
                )
        overlap = self.constraint_ids("train_families") & self.constraint_ids("eval_families")
        if overlap and not (self.train_data or self.eval_data):
            raise ValueError(f"eval_families must be held out from train_families; both contain {sorted(overlap)}")
        self.max_attempts = self.retry_limit + 1

    def constraint_ids(self, name: str) -> set[str]:
        """Every constraint id that ``name`` (``train_families`` or ``eval_families``) draws from."""
        from mulligan.envs.verifiers.constraints import CONSTRAINT_IDS, constraint_family

        listed = set(self.families(name))
        return {i for i in CONSTRAINT_IDS if i in listed or constraint_family(i) in listed}

    def families(self, name: str = "train_families") -> list[str]:
        """The families listed in ``name`` (``train_families`` or ``eval_families``)."""
        return [f.strip() for f in str(getattr(self, name)).split(",") if f.strip()]

    def data_files(self, name: str) -> list[str]:
        """The files listed in ``name`` (``train_data`` or ``eval_data``)."""
        return [f.strip() for f in str(getattr(self, name)).split(",") if f.strip()]

    def _primed(self) -> dict[str, Any]:
        """``primed=True`` when answers are prefilled; CORGI's critics when asked for."""
        extra: dict[str, Any] = {"primed": True} if self.prefill_response else {}
        if self.critics:
            extra["critics"] = self.critics
        return extra

    def _tasks(self, data: str, families: str) -> dict[str, Any]:
        """Released files (``dataset``) when given, else the generator's families."""
        files = self.data_files(data)
        return {"dataset": files if len(files) > 1 else files[0]} if files else {"families": self.families(families)}

    def training_env_kwargs(self) -> dict[str, Any]:
        """Training envs: the training data or families, CORGI's session when ``retry_limit > 0``."""
        return self.make_kwargs(**self._tasks("train_data", "train_families"), **self._primed())

    def eval_env_kwargs(self) -> dict[str, Any]:
        """Evaluation envs: the held-out data or families, ``eval_retry_limit`` retries (whatever ``retry_limit``)."""
        kwargs = dict(self.env_kwargs_dict)
        kwargs.update(self._primed())
        kwargs.update(self._tasks("eval_data", "eval_families"))
        if self.eval_retry_limit > 0:
            kwargs["max_attempts"] = self.eval_retry_limit + 1
        return kwargs


def attempts_to_success(trajectory: Any) -> int | None:
    """The 1-based attempt at which a session first succeeded, or ``None`` if it never did.

    Attempts are numbered by the env (``info["attempt"]`` from ``RetryWithFeedback``; a session
    without retries has one attempt).
    """
    for turn in trajectory.turns:
        if turn.info.get("success"):
            return int(turn.info.get("attempt", 1))
    return None


def success_curve(max_attempts: int) -> Callable[[Sequence[Any]], dict[str, float]]:
    """An evaluation metric: the success-after-attempt-``i`` curve of CORGI's evaluation.

    ``success_after_attempt_i`` (``i = 1 .. max_attempts``) is the fraction of sessions whose best
    score is 1 within their first ``i`` attempts. A session that succeeded earlier keeps counting
    (its best score stays 1), as the official ``validate_with_critique.py`` carries the best score
    forward. On ``Constraints-v0`` success is exactly "every constraint holds", i.e. score 1.

    Args:
        max_attempts: Attempts allowed at evaluation (``eval_retry_limit + 1``).
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")

    def metric(trajectories: Sequence[Any]) -> dict[str, float]:
        firsts = [attempts_to_success(t) for t in trajectories]
        total = max(len(firsts), 1)
        curve = {
            f"success_after_attempt_{i}": sum(a is not None and a <= i for a in firsts) / total
            for i in range(1, max_attempts + 1)
        }
        attempts = [max((int(turn.info.get("attempt", 1)) for turn in t.turns), default=0) for t in trajectories]
        curve["mean_attempts"] = sum(attempts) / total
        curve["mean_best_score"] = sum(float(t.episode_return) for t in trajectories) / total
        return curve

    return metric


def evaluate_corgi(trainer: PPOTrainer, args: CORGIArgs, env: Any) -> dict[str, Any]:
    """Greedy sessions of the trainer's current policy on the held-out tasks; the success curve.

    Under ``accelerate launch`` each process plays every N-th task and the curve is computed over
    the sessions of all processes (on each of them).

    Args:
        trainer: The trainer whose policy is evaluated.
        args: The run's :class:`CORGIArgs` (``eval_tasks``, ``eval_task_offset``, ``eval_retry_limit``).
        env: An :class:`~mulligan.training.rollout.EnvPool` built with :meth:`CORGIArgs.eval_env_kwargs`.

    Returns:
        ``success_after_attempt_1 .. success_after_attempt_{eval_retry_limit + 1}``, ``mean_attempts``,
        ``mean_best_score``, ``episodes`` and the session summary (success rate with its Wilson
        interval, :func:`mulligan.training.stats.summarize`).
    """
    from mulligan.training.evaluation import evaluate
    from mulligan.training.stats import summarize

    stop = args.eval_task_offset + args.eval_tasks
    if env.num_tasks is not None:  # released files: each of their tasks once, at most
        stop = min(stop, env.num_tasks)
    indices = list(range(args.eval_task_offset, stop))
    processes = trainer.processes  # data parallel: each process plays its share, the curve is over all
    share = indices[processes.rank :: processes.size]
    was_training = trainer.policy.training
    local = []
    try:
        if share:
            local = evaluate(
                trainer.agent(temperature=0.0, seed=args.seed),
                env,
                share,
                seed=args.seed,
                num_envs=len(env),
                progress=False,
            ).trajectories
    finally:
        trainer.policy.train(was_training)
    trajectories = processes.gather(local)
    curve = success_curve(args.eval_retry_limit + 1)(trajectories)
    summary = summarize(trajectories, args.env_id)
    return {**curve, "episodes": float(len(trajectories)), "summary": summary.to_dict()}


def train_corgi(args: CORGIArgs, model: Any = None, tokenizer: Any = None) -> tuple[PPOTrainer, dict[str, Any]]:
    """Train with CORGI's sessions (PPO) and evaluate on the held-out families before and after.

    Returns the trainer and the evaluation record written to ``output_dir/corgi_eval.json``.
    """
    from mulligan.training.rollout import EnvPool

    results: dict[str, Any] = {
        "retry_limit": args.retry_limit,
        "eval_retry_limit": args.eval_retry_limit,
        "train_families": [] if args.train_data else args.families("train_families"),
        "eval_families": [] if args.eval_data else args.families("eval_families"),
        "train_data": args.data_files("train_data"),
        "eval_data": args.data_files("eval_data"),
    }
    with (
        PPOTrainer(args, model, tokenizer) as trainer,
        EnvPool(args.env_id, args.num_envs, args.eval_env_kwargs()) as eval_env,
    ):
        if args.eval_tasks and args.eval_before and trainer.step == 0:
            results["before"] = evaluate_corgi(trainer, args, eval_env)
        trainer.train()
        if args.eval_tasks:
            results["after"] = evaluate_corgi(trainer, args, eval_env)
    if trainer.processes.is_main:  # every process holds the same results; one writes them
        trainer.output_dir.mkdir(parents=True, exist_ok=True)
        (trainer.output_dir / "corgi_eval.json").write_text(json.dumps(results, indent=2))
    return trainer, results


def main(argv: list[str] | None = None) -> int:
    """``mulligan train corgi``: parse :class:`CORGIArgs` flags, train, evaluate on held-out families."""
    from mulligan.training.args import parse_args

    args = parse_args(CORGIArgs, list(sys.argv[1:] if argv is None else argv), prog="mulligan train corgi")
    _, results = train_corgi(args)
    print(json.dumps(results))
    return 0
