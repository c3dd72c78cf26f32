"""Sub-goal distillation (Hashemzadeh et al. 2024, arXiv 2405.02749): a planner and an executor.

The paper distils an LLM's knowledge into two small models (Sec. 3): a *planner* that writes the
next sub-goal as a function call (``navigate_to(kitchen)``) and an *executor* that turns the
current sub-goal into elementary actions, saying ``END_SG()`` when it is done. Both are
imitation-trained on gold trajectories split into sub-goals.

Here:

1. Gold paths of ``Mulligan/MiniScience-v0`` (default) or ``Mulligan/ScienceWorld-v0`` are played
   and annotated with :func:`mulligan.envs.subgoals.annotate_gold_trajectory` (rule-based
   sub-goals), then cut into planner and executor records by
   :func:`mulligan.envs.subgoals.build_training_views`.
2. Prompts are rendered with :func:`mulligan.agents.hierarchical.prompt_for_record` (the planner's
   and executor's formats of :class:`~mulligan.agents.hierarchical.HierarchicalAgent`, so training
   and inference see the same text). Planner and executor are two models, or one model with the
   two prompt formats (``--shared_model``; the prompts end in ``Next sub-goal:`` or ``Next action:``).
3. The baseline is a *flat* policy imitation-trained on the same gold paths, with the same context
   (task, last ``history_len`` steps, latest observation) but no sub-goals (:func:`flat_prompt`).
4. Evaluation: ``HierarchicalAgent`` against the flat policy on held-out tasks (MiniScience's test
   variations by default), success and score with intervals.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium

from mulligan.agents.base import Action, Agent, AgentInput
from mulligan.agents.context import split_head


def flat_prompt(task: str, history: Sequence[Mapping[str, str]], observation: str) -> str:
    """The flat baseline's input: the hierarchical context without sub-goals, ending ``Next action:``."""
    lines = [f"Task: {task}"]
    if history:
        lines.append("History:")
        for turn in history:
            lines += [f"> {turn['action']}", turn["observation"]]
    lines += [f"Observation: {observation}", "Next action:"]
    return "\n".join(lines)


def _steps(messages: Sequence[Mapping[str, str]]) -> tuple[str, list[dict[str, str]], str]:
    """``(first observation, steps as {"action", "observation"}, latest observation)`` of a conversation."""
    head, rest = split_head(messages)
    first = head[-1]["content"] if head and head[-1]["role"] == "user" else ""
    steps = []
    for k, message in enumerate(rest):
        if message["role"] == "assistant":
            following = rest[k + 1]["content"] if k + 1 < len(rest) and rest[k + 1]["role"] == "user" else ""
            steps.append({"action": message["content"], "observation": following})
    latest = messages[-1]["content"] if messages and messages[-1]["role"] == "user" else first
    return first, steps, latest


class FlatAgent(Agent):
    """The flat baseline at inference: renders :func:`flat_prompt` from the conversation, one line out.

    An action not among the env's ``info["valid_actions"]`` (when the env lists them) is mapped to the
    most similar valid one, as :class:`~mulligan.agents.hierarchical.HierarchicalAgent` does.

    Args:
        policy: The imitation-trained model's agent (an ``HFAgent``).
        history_len: Steps of history shown, as in training.
        stop: Stop strings (an action is one line).
    """

    def __init__(self, policy: Agent, history_len: int = 4, stop: Sequence[str] = ("\n",)):
        from mulligan.agents.hierarchical import most_similar_action, task_description

        self.most_similar_action = most_similar_action
        self.policy = policy
        self.history_len = history_len
        self.stop = tuple(stop)
        self.task_description = task_description
        self.name = "flat"

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """One action per input: the first line of the policy's answer."""
        prompts = []
        for item in inputs:
            first, steps, latest = _steps(item.messages)
            history = steps[max(0, len(steps) - self.history_len):] if self.history_len else []
            prompt = flat_prompt(self.task_description(first), history, latest)
            prompts.append(AgentInput([{"role": "user", "content": prompt}], item.task, item.info, item.env_id,
                                      self.stop))
        actions = self.policy.act(prompts)
        chosen = []
        for item, action in zip(inputs, actions, strict=True):
            text = (action.text.strip().split("\n") or [""])[0].strip()
            # Like HierarchicalAgent, map an invalid action to the most similar valid one when the
            # env lists them, so the baseline is compared on equal terms (paper Sec. 4).
            valid = (item.info or {}).get("valid_actions") or []
            if valid and text not in valid:
                text = self.most_similar_action(text, valid)
            chosen.append(Action(text, action.prompt, action.prompt_ids, action.completion_ids, action.logprobs,
                                 action.metadata))
        return chosen

    def reset(self, seed: int | None = None) -> None:
        """Reseed the policy."""
        self.policy.reset(seed)


def collect_gold(env_id: str, env_kwargs: Mapping[str, Any], num_tasks: int, seed: int) -> list:
    """Play and annotate the gold paths of ``num_tasks`` tasks chosen with ``seed``."""
    from mulligan.envs.subgoals import annotate_gold_trajectory
    from mulligan.training.rollout import reset_seed_for, task_index_for

    env = gymnasium.make(env_id, **env_kwargs)
    annotated = []
    try:
        for k in range(num_tasks):
            annotated.append(annotate_gold_trajectory(
                env, seed=reset_seed_for(seed, k, 0), options={"task_index": task_index_for(env, seed, k)}))
    finally:
        env.close()
    return annotated


def distillation_conversations(annotated: Sequence, history_len: int = 4) -> dict[str, list[list[dict[str, str]]]]:
    """Planner, executor and flat SFT conversations from annotated gold paths.

    Returns:
        ``{"planner": [...], "executor": [...], "flat": [...]}``, each a list of two-message
        conversations (the prompt as ``user``, the target as ``assistant``).
    """
    from mulligan.agents.hierarchical import prompt_for_record
    from mulligan.envs.subgoals import build_training_views

    out: dict[str, list] = {"planner": [], "executor": [], "flat": []}
    for trajectory in annotated:
        for record in build_training_views(trajectory, history_len=history_len):
            role = "executor" if record["view"] == "executor" else "planner"
            out[role].append([{"role": "user", "content": prompt_for_record(record)},
                              {"role": "assistant", "content": record["completion"]}])
        turns = [{"action": a, "observation": o} for a, o in
                 zip(trajectory.actions, trajectory.observations, strict=True)]
        for step, action in enumerate(trajectory.actions):
            observation = trajectory.initial_observation if step == 0 else trajectory.observations[step - 1]
            history = turns[max(0, step - history_len):step] if history_len else []
            out["flat"].append([{"role": "user", "content": flat_prompt(trajectory.task, history, observation)},
                                {"role": "assistant", "content": action}])
    return out


@dataclass
class SubgoalConfig:
    """Configuration of ``mulligan train subgoal``.

    Attributes:
        env_id: ``Mulligan/MiniScience-v0`` (default) or ``Mulligan/ScienceWorld-v0``.
        env_kwargs: JSON kwargs for the training env (gold paths).
        eval_env_kwargs: JSON kwargs for the held-out env; empty means the training env's kwargs on
            the test variations with the valid actions offered (``{..., "variation": "test",
            "include_valid_actions": true}``), so that both agents map an invalid action to the
            nearest valid one, as the paper's agent does (Sec. 4).
        output_dir: ``planner/``, ``executor/`` (or ``shared/``), ``flat/`` and results go here.
        model: Starting model for every policy: a Hugging Face id or path, or ``tiny``.
        shared_model: Train one model for both roles (two prompt formats) instead of two.
        train_flat: Also train the flat baseline on the same gold paths.
        num_gold: Gold paths (training tasks).
        history_len: Steps of history in every prompt.
        max_length: Longest training sequence (tokens).
        num_train_epochs: Epochs per model (ignored when max_steps > 0).
        max_steps: Optimiser steps per model; -1 uses num_train_epochs.
        per_device_train_batch_size: Sequences per device per step.
        gradient_accumulation_steps: Micro-batches per optimiser step.
        learning_rate: Peak learning rate.
        lr_scheduler_type: Learning-rate schedule.
        warmup_ratio: Fraction of steps for warm-up.
        logging_steps: Log every this many steps.
        save_steps: Checkpoint every this many steps.
        save_total_limit: Checkpoints kept per model.
        report_to: Metrics integrations (none, tensorboard, wandb, ...).
        resume_from_checkpoint: ``auto`` skips finished models and resumes the latest checkpoint.
        eval_episodes: Held-out episodes per agent (0 skips evaluation).
        eval_max_turns: Turn cap per evaluation episode.
        max_new_tokens: Tokens per sub-goal or action.
        seed: Seed of task choice and training.
        disable_tqdm: Hide progress bars.
    """

    env_id: str = field(default="Mulligan/MiniScience-v0", metadata={"help": "Science env id."})
    env_kwargs: str = field(default="{}", metadata={"help": "JSON kwargs of the training env."})
    eval_env_kwargs: str = field(
        default="", metadata={"help": "JSON kwargs of the eval env ('': the training kwargs on test variations)."}
    )
    output_dir: str = field(default="runs/subgoal", metadata={"help": "Output folder."})
    model: str = field(default="tiny", metadata={"help": "HF id or path, or 'tiny'."})
    shared_model: bool = field(default=False, metadata={"help": "One model for planner and executor."})
    train_flat: bool = field(default=True, metadata={"help": "Train the flat baseline too."})
    num_gold: int = field(default=64, metadata={"help": "Gold paths to train on."})
    history_len: int = field(default=4, metadata={"help": "Steps of history in prompts."})
    max_length: int = field(default=2048, metadata={"help": "Longest training sequence."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs per model."})
    max_steps: int = field(default=-1, metadata={"help": "Steps per model; -1 uses epochs."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Sequences per step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    lr_scheduler_type: str = field(default="constant_with_warmup", metadata={"help": "LR schedule."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Warm-up fraction."})
    logging_steps: int = field(default=10, metadata={"help": "Log every N steps."})
    save_steps: int = field(default=500, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept."})
    report_to: str = field(default="none", metadata={"help": "none | tensorboard | wandb | ..."})
    resume_from_checkpoint: str = field(default="", metadata={"help": "'auto' to resume."})
    eval_episodes: int = field(default=0, metadata={"help": "Held-out episodes per agent (0: skip)."})
    eval_max_turns: int = field(default=40, metadata={"help": "Turn cap per eval episode."})
    max_new_tokens: int = field(default=32, metadata={"help": "Tokens per sub-goal or action."})
    seed: int = field(default=0, metadata={"help": "Seed."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})

    def __post_init__(self) -> None:
        for name in ("env_kwargs", "eval_env_kwargs"):
            if name == "eval_env_kwargs" and not self.eval_env_kwargs:
                continue
            try:
                value = json.loads(getattr(self, name))
            except json.JSONDecodeError as err:
                raise ValueError(f"{name} must be a JSON object, e.g. '{{\"variation\": \"test\"}}': {err}") from err
            if not isinstance(value, dict):
                raise ValueError(f"{name} must be a JSON object, e.g. '{{\"variation\": \"test\"}}'")
        for name in ("num_gold", "max_new_tokens", "eval_max_turns", "per_device_train_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.history_len < 0 or self.eval_episodes < 0:
            raise ValueError("history_len and eval_episodes must be >= 0")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be a positive int, or -1 to use num_train_epochs; got {self.max_steps}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


def eval_env_options(config: SubgoalConfig) -> dict[str, Any]:
    """The held-out env's kwargs: ``eval_env_kwargs``, or the training kwargs on test variations."""
    if config.eval_env_kwargs:
        return json.loads(config.eval_env_kwargs)
    return {**json.loads(config.env_kwargs), "variation": "test", "include_valid_actions": True}


def _train_one(config: SubgoalConfig, conversations: Sequence, output_dir: str) -> dict[str, Any]:
    """Imitation-train one policy on ``conversations`` with TRL's SFTTrainer (loss on the target only)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from mulligan.agents.tiny import resolve_model
    from mulligan.training.nat import conversations_to_dataset, resolve_checkpoint, sft_arguments

    marker = os.path.join(output_dir, "subgoal_model.json")
    if config.resume_from_checkpoint and os.path.exists(marker):
        with open(marker, encoding="utf-8") as handle:
            return json.load(handle)
    path = resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    dataset = conversations_to_dataset(tokenizer, [list(c) for c in conversations], config.max_length)
    trainer = SFTTrainer(model=model, args=sft_arguments(config, output_dir, max_length=config.max_length),
                         train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train(resume_from_checkpoint=resolve_checkpoint(config.resume_from_checkpoint, output_dir))
    trainer.save_model(output_dir)
    tokenizer.save_pretrained(output_dir)
    stats = {"examples": len(dataset), "train_loss": float(result.training_loss),
             "global_step": int(result.global_step)}
    with open(marker, "w", encoding="utf-8") as handle:
        json.dump(stats, handle)
    return stats


def evaluate_subgoal_agents(config: SubgoalConfig, models: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Held-out success of ``HierarchicalAgent`` (planner + executor) and of the flat policy."""
    from mulligan.agents.hf import HFAgent
    from mulligan.agents.hierarchical import HierarchicalAgent
    from mulligan.training.rollout import collect_episodes
    from mulligan.training.stats import summarize
    from mulligan.training.trajectory import TrajectoryStore

    def policy(path: str) -> HFAgent:
        return HFAgent(path, temperature=0.0, max_new_tokens=config.max_new_tokens, seed=config.seed)

    agents: dict[str, Agent] = {
        "hierarchical": HierarchicalAgent(policy(models["planner"]), policy(models["executor"]),
                                          history_len=config.history_len)
    }
    if "flat" in models:
        agents["flat"] = FlatAgent(policy(models["flat"]), history_len=config.history_len)
    results = {}
    for name, agent in agents.items():
        trajectories = collect_episodes(
            config.env_id, agent, config.eval_episodes, env_kwargs=eval_env_options(config),
            seed=config.seed + 1, num_envs=min(16, config.eval_episodes), max_turns=config.eval_max_turns,
            store=TrajectoryStore(os.path.join(config.output_dir, f"eval-{name}.jsonl")),
            progress=not config.disable_tqdm,
        )
        results[name] = summarize(trajectories, name).to_dict()
    return results


def train_subgoal(config: SubgoalConfig) -> dict[str, Any]:
    """Annotate gold paths, train planner + executor (and the flat baseline), optionally evaluate."""
    from transformers import set_seed

    # Seed.
    set_seed(config.seed)
    os.makedirs(config.output_dir, exist_ok=True)

    # Envs: gold paths, annotated with sub-goals (Sec. 3.1), cut into planner/executor records.
    annotated = collect_gold(config.env_id, json.loads(config.env_kwargs), config.num_gold, config.seed)
    with open(os.path.join(config.output_dir, "gold_annotated.jsonl"), "w", encoding="utf-8") as handle:
        for trajectory in annotated:
            handle.write(json.dumps(trajectory.to_dict(), ensure_ascii=False) + "\n")
    data = distillation_conversations(annotated, config.history_len)

    # Models and update loops: planner and executor (Sec. 3.2), one shared model or two.
    models: dict[str, str] = {}
    stats: dict[str, Any] = {}
    if config.shared_model:
        shared = os.path.join(config.output_dir, "shared")
        stats["shared"] = _train_one(config, data["planner"] + data["executor"], shared)
        models["planner"] = models["executor"] = shared
    else:
        for role in ("planner", "executor"):
            models[role] = os.path.join(config.output_dir, role)
            stats[role] = _train_one(config, data[role], models[role])
    if config.train_flat:
        models["flat"] = os.path.join(config.output_dir, "flat")
        stats["flat"] = _train_one(config, data["flat"], models["flat"])

    # Evaluation and logging.
    evaluation = evaluate_subgoal_agents(config, models) if config.eval_episodes else None
    summary = {"output_dir": config.output_dir, "models": models, "training": stats, "eval": evaluation,
               "gold_paths": len(annotated), "records": {k: len(v) for k, v in data.items()},
               "config": asdict(config)}
    with open(os.path.join(config.output_dir, "subgoal_summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``mulligan train subgoal``: parse :class:`SubgoalConfig` flags and train."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(SubgoalConfig, prog="mulligan train subgoal", description=__doc__.split("\n")[0])
    (config,) = parser.parse_args_into_dataclasses(args=argv if argv is not None else sys.argv[1:])
    summary = train_subgoal(config)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0
