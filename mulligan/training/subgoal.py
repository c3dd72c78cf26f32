"""Sub-goal distillation (Hashemzadeh et al. 2024, arXiv 2405.02749): a planner and an executor.

The paper distils an LLM's knowledge into two small models (Sec. 3): a *planner* (the controller)
that writes the current sub-goal as a function call (``navigate_to(kitchen)``) and an *executor*
that turns it into elementary actions, saying ``END_SG()`` when it is done. Both are
imitation-trained on gold trajectories split into sub-goals.

Here:

1. Gold paths of ``Mulligan/MiniScience-v0`` (default) or ``Mulligan/ScienceWorld-v0`` are played by
   :class:`~mulligan.agents.teachers.science.ScienceOracle` through the shared rollout, annotated
   with rule-based sub-goals and cut into planner, executor and flat records
   (:mod:`mulligan.training.subgoal_data`).
2. The prompts are rendered by :mod:`mulligan.agents.hierarchical`, the functions the agents use at
   inference: the official executor context (task, time, score, the last 10 steps with rewards,
   room, inventory, visited rooms). The planner is trained at every step, as the official
   controller is (``--planner_every_step``). Planner and executor are two models, or one
   (``--shared_model``); optionally a third for the first sub-goal (``--first_subgoal_model``),
   as the paper's three models. Causal LMs are trained with TRL's ``SFTTrainer`` (loss on the
   target); encoder-decoders (FLAN-T5, the paper's; ``--model tiny-seq2seq`` offline) with
   transformers' ``Seq2SeqTrainer`` (the prompt is the encoder's input, the target the labels),
   chosen by ``--model_type`` or from the checkpoint's config. Decoding is greedy, or beam search
   with ``--num_beams`` (the paper's 5 under ``--preset paper``).
3. The baseline is a *flat* policy trained on the same gold paths with the same context and no
   sub-goals (:class:`~mulligan.agents.flat.FlatAgent`).
4. Evaluation through :func:`mulligan.training.evaluation.evaluate` on held-out variations, with the
   paper's stopping rules (200 agent turns, 50 actions without a score change, a negative score
   counts 0) and scores macro-averaged per task as the paper reports them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from mulligan.agents.base import Agent
from mulligan.training.args import EnvArgs, SamplingArgs, SFTArgs, parse_json_object, parser_for
from mulligan.training.progress import adapt_trainer_progress, quiet_library_bars

#: The paper's evaluation (official ``evaluation/agent.py``): at most 2 x envStepLimit = 200 agent
#: turns, stop after 50 steps without a score change, at most the first 10 test variations per task.
PAPER_EVAL_MAX_TURNS = 200
PAPER_STALL_LIMIT = 50
PAPER_VARIATIONS_PER_TASK = 10
#: Model architectures the trainer handles (``auto`` reads the model's config).
MODEL_TYPES = ("auto", "causal", "seq2seq")


@dataclass
class SubgoalArgs(SFTArgs, EnvArgs, SamplingArgs):
    """Configuration of ``mulligan train subgoal`` (fields left at ``None`` come from ``--preset``).

    Presets: ``tiny`` (offline CPU: lr 1e-3 for every model, 3 epochs, batch 8, 2,048 tokens,
    greedy) and ``paper`` (the official ``train/ds_train*.sh`` for FLAN-T5-large: executor and flat
    lr 1e-4 for 30 epochs, planner lr 4e-4 for 20 epochs, 8 per device x 4 accumulation, bf16,
    1,024 source + 30 target tokens, 5-beam decoding, AdamW epsilon 1e-6; the official run adds
    ``--deepspeed`` ZeRO-2). For a seq2seq model ``max_length`` bounds source plus target as for a
    causal one: the target is cut to ``max_new_tokens`` (EOS included) and the encoder input to
    ``max_length - max_new_tokens`` (longer prompts keep their end), so the paper preset's 1,054
    is the official 1,024 + 30.

    Attributes:
        shared_model: Train one model for both roles (two prompt formats) instead of two.
        train_flat: Also train the flat baseline on the same gold paths.
        num_gold: Gold paths (training tasks).
        gold: Gold trajectories from a source (a store, ``dir:PATH`` or ``hf:NAME[:CONFIG][:SPLIT]``:
            :func:`~mulligan.training.datasets.load_trajectory_source`) instead of playing
            ``num_gold`` paths with the oracle; empty: play them.
        history_len: Steps of history in every prompt (the official 10).
        planner_every_step: Train and query the planner at every step (the official controller);
            false: only at the start and after ``END_SG()``.
        planner_learning_rate: The planner's peak learning rate (``None``: the preset's).
        planner_num_train_epochs: The planner's epochs (``None``: the preset's).
        eval_env_kwargs: JSON kwargs of the held-out env; empty means the training kwargs on the
            test variations with the valid actions offered and the paper's stall rule.
        eval_episodes: 0 skips evaluation. MiniScience plays this many test variations (its test
            split is endless), spread evenly over the tasks; ScienceWorld plays the first
            ``eval_variations_per_task`` test variations of every task instead (the paper's set).
        eval_variations_per_task: ScienceWorld test variations per task (the paper's 10; 0: all).
        eval_max_turns: Agent turns per evaluation episode (the paper's 2 x 100 = 200).
        random_subgoals: The official ``rand`` ablation: also evaluate the hierarchical agent with
            a random training sub-goal every 10 steps.
        semi_random_subgoals: The official ``semi-rand`` ablation: also evaluate the hierarchical
            agent with the planner's sub-goal's arguments replaced by random rooms or objects of
            the training annotations every 10 steps.
        model_type: ``causal``, ``seq2seq`` (an encoder-decoder such as ``google/flan-t5-large``)
            or ``auto`` (read ``is_encoder_decoder`` from the model's config).
        num_beams: Beam width at evaluation (``None``: the preset's: tiny 1, paper 5).
        use_all_beams: With beam search, the agents consider every beam as the official agent does
            (``END_SG()`` in any beam ends the sub-goal; an invalid best action is replaced by the
            first valid beam); false: the best beam only.
        annotator: Who splits gold paths into sub-goals: ``rules`` (the offline
            :class:`~mulligan.training.subgoal_data.RuleBasedAnnotator`) or an agent spec for
            :func:`~mulligan.agents.loading.load_agent` (``openai:gpt-4o``, a checkpoint, a
            ``module:Class``), queried at temperature 0 through
            :class:`~mulligan.training.subgoal_data.LLMAnnotator`: the paper's GPT-4 annotation.
        annotator_max_new_tokens: Longest annotator reply in tokens.
        drop_filler_steps: Remove ``look around`` and ``close door ...`` steps from the gold paths
            before annotating and training, as the paper does.
        exact_match_paths: Gold paths of test variations on which each model's exact match is
            measured (planner: the official sub-goal exact match; executor: under the gold
            sub-goals); 0 skips.
        first_subgoal_model: Train a separate model for the first sub-goal (the paper's third,
            first-sub-goal generator) on the step-0 planner records; false: the planner answers
            at step 0 too (its data then includes those records).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            "learning_rate": 1e-3,
            "planner_learning_rate": 1e-3,
            "num_train_epochs": 3.0,
            "planner_num_train_epochs": 3.0,
            "per_device_train_batch_size": 8,
            "max_length": 2048,
            "max_new_tokens": 32,
            "num_beams": 1,
        },
        "paper": {
            "learning_rate": 1e-4,
            "planner_learning_rate": 4e-4,
            "num_train_epochs": 30.0,
            "planner_num_train_epochs": 20.0,
            "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 4,
            "lr_scheduler_type": "linear",
            "warmup_ratio": 0.0,
            "bf16": True,
            "max_length": 1054,
            "max_new_tokens": 30,
            "num_beams": 5,
            "adam_epsilon": 1e-6,  # the official ds_train.py
        },
    }

    env_id: str = field(default="Mulligan/MiniScience-v0", metadata={"help": "Science env id."})
    output_dir: str = field(default="runs/subgoal", metadata={"help": "Output folder."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature at evaluation (0: greedy)."})
    shared_model: bool = field(default=False, metadata={"help": "One model for planner and executor."})
    train_flat: bool = field(default=True, metadata={"help": "Train the flat baseline too."})
    num_gold: int = field(default=64, metadata={"help": "Gold paths to train on."})
    gold: str = field(default="", metadata={"help": "Gold trajectories from a source (empty: play them)."})
    history_len: int = field(default=10, metadata={"help": "Steps of history in prompts (paper: 10)."})
    planner_every_step: bool = field(default=True, metadata={"help": "Planner at every step (paper) or at ends."})
    planner_learning_rate: float | None = field(default=None, metadata={"help": "Planner's lr (preset)."})
    planner_num_train_epochs: float | None = field(default=None, metadata={"help": "Planner's epochs (preset)."})
    eval_env_kwargs: str = field(default="", metadata={"help": "JSON kwargs of the eval env ('': see docs)."})
    eval_episodes: int = field(default=0, metadata={"help": "Eval episodes per agent (0: skip; see docs)."})
    eval_variations_per_task: int = field(default=10, metadata={"help": "ScienceWorld test variations per task."})
    eval_max_turns: int = field(default=PAPER_EVAL_MAX_TURNS, metadata={"help": "Turn cap per eval episode."})
    random_subgoals: bool = field(default=False, metadata={"help": "Also evaluate the random sub-goal ablation."})
    semi_random_subgoals: bool = field(
        default=False, metadata={"help": "Also evaluate the semi-random sub-goal ablation."}
    )
    model_type: str = field(default="auto", metadata={"help": "causal | seq2seq | auto (from the model config)."})
    num_beams: int | None = field(default=None, metadata={"help": "Beam width at evaluation (preset: 1, paper 5)."})
    use_all_beams: bool = field(default=True, metadata={"help": "Agents consider every beam (paper)."})
    first_subgoal_model: bool = field(default=False, metadata={"help": "A separate first-sub-goal model (paper)."})
    annotator: str = field(default="rules", metadata={"help": "rules | an agent spec (openai:MODEL, ...)."})
    annotator_max_new_tokens: int = field(default=1024, metadata={"help": "Longest annotator reply (tokens)."})
    drop_filler_steps: bool = field(default=False, metadata={"help": "Drop look around / close door (paper)."})
    exact_match_paths: int = field(default=0, metadata={"help": "Held-out gold paths for exact match (0: skip)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.eval_env_kwargs_dict = parse_json_object("eval_env_kwargs", self.eval_env_kwargs)
        for name in ("num_gold", "eval_max_turns", "annotator_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("history_len", "eval_episodes", "eval_variations_per_task", "exact_match_paths"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.planner_learning_rate <= 0 or self.planner_num_train_epochs <= 0:
            raise ValueError("planner_learning_rate and planner_num_train_epochs must be > 0")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1 (1: no beam search), got {self.num_beams}")
        if self.prefill_response:
            raise ValueError("--prefill_response applies to envs with a response prefix (CORGI's), not to ScienceWorld")
        if self.num_beams > 1 and self.temperature > 0:
            raise ValueError("beam search is deterministic: pass --temperature 0 with --num_beams > 1")
        if self.first_subgoal_model and self.shared_model:
            raise ValueError("--first_subgoal_model trains a third model; it cannot be combined with --shared_model")

    @property
    def seq2seq(self) -> bool:
        """Whether the models are encoder-decoders (``model_type``, or the model's config under ``auto``)."""
        if self.model_type == "auto":
            from mulligan.agents.seq2seq import is_seq2seq

            return is_seq2seq(self.model)
        return self.model_type == "seq2seq"


#: Kept so that existing scripts that import the old name still work.
SubgoalConfig = SubgoalArgs


def eval_env_options(config: SubgoalArgs) -> dict[str, Any]:
    """The held-out env's kwargs.

    ``eval_env_kwargs`` when given; otherwise the training kwargs on the test variations, with the
    valid actions offered (both agents map an invalid action to the nearest valid one, Sec. 4),
    the paper's 50-step stall rule, and a turn cap of ``eval_max_turns``.
    """
    if config.eval_env_kwargs_dict:
        return dict(config.eval_env_kwargs_dict)
    return {
        **config.env_kwargs_dict,
        "variation": "test",
        "include_valid_actions": True,
        "stall_limit": PAPER_STALL_LIMIT,
        "max_episode_steps": config.eval_max_turns,
    }


def task_name_of(trajectory: Any) -> str:
    """The group of a trajectory in the macro average: its task name."""
    return str((trajectory.task or {}).get("task_name", ""))


def paper_test_indices(task_pairs: Sequence[tuple[str, int]], per_task: int) -> list[int]:
    """Indices of the first ``per_task`` variations of each task in ``task_pairs`` (0: all).

    The official evaluation plays the first 10 test variations of each task (``variations_intest[:10]``).
    """
    seen: dict[str, int] = {}
    indices = []
    for index, (name, _) in enumerate(task_pairs):
        if per_task == 0 or seen.get(name, 0) < per_task:
            seen[name] = seen.get(name, 0) + 1
            indices.append(index)
    return indices


def seq2seq_limits(config: SubgoalArgs) -> tuple[int, int]:
    """``(source, target)`` token limits of seq2seq training: ``max_length`` shared as for a causal model.

    The paper preset's ``max_length`` 1,054 and ``max_new_tokens`` 30 give the official
    ``max_source_length`` 1,024 and ``max_target_length`` 30.
    """
    return max(8, config.max_length - config.max_new_tokens), config.max_new_tokens


def train_policy(
    config: SubgoalArgs, conversations: Sequence, output_dir: str, *, learning_rate: float, epochs: float
) -> dict[str, Any]:
    """Imitation-train one policy on ``conversations`` (loss on the target only).

    A causal LM trains with TRL's ``SFTTrainer`` on the rendered conversation; an encoder-decoder
    with transformers' ``Seq2SeqTrainer`` (the official ``ds_train.py``): the prompt is the
    encoder's input, the target the decoder's labels (:func:`mulligan.training.sft.seq2seq_dataset`).
    """
    from mulligan.training.sft import (
        conversations_to_dataset,
        load_model,
        load_tokenizer,
        resolve_checkpoint,
        save_trained,
        seq2seq_dataset,
    )

    marker = os.path.join(output_dir, "subgoal_model.json")
    if config.resume_from_checkpoint and os.path.exists(marker):
        with open(marker, encoding="utf-8") as handle:
            return json.load(handle)
    seq2seq = config.seq2seq
    tokenizer = load_tokenizer(config)
    model = load_model(config, seq2seq=seq2seq)
    conversations = [list(c) for c in conversations]
    if seq2seq:
        from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

        dataset = seq2seq_dataset(tokenizer, conversations, *seq2seq_limits(config))
        kwargs = {**config.training_kwargs(), "learning_rate": learning_rate, "num_train_epochs": epochs}
        trainer = Seq2SeqTrainer(
            model=model,
            args=Seq2SeqTrainingArguments(output_dir=output_dir, **kwargs),
            train_dataset=dataset,
            data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
            processing_class=tokenizer,
        )
    else:
        from trl import SFTTrainer

        dataset = conversations_to_dataset(tokenizer, conversations, config.max_length)
        args = config.to_sft_config(output_dir, learning_rate=learning_rate, num_train_epochs=epochs)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    adapt_trainer_progress(trainer)
    result = trainer.train(resume_from_checkpoint=resolve_checkpoint(config.resume_from_checkpoint, output_dir))
    save_trained(trainer, tokenizer, output_dir)
    stats = {
        "examples": len(dataset),
        "train_loss": float(result.training_loss),
        "global_step": int(result.global_step),
        "model_type": "seq2seq" if seq2seq else "causal",
    }
    with open(marker, "w", encoding="utf-8") as handle:
        json.dump(stats, handle)
    return stats


def evaluate_subgoal_agents(config: SubgoalArgs, agents: Mapping[str, Agent]) -> dict[str, dict[str, Any]]:
    """Held-out results of each agent, macro-averaged per task (paper Sec. 4) beside the micro summary.

    Every agent plays the same task indices: for ScienceWorld the first
    ``eval_variations_per_task`` test variations of each task, for MiniScience ``eval_episodes``
    test variations spread evenly over the tasks.
    """
    from mulligan.training.evaluation import evaluate
    from mulligan.training.rollout import EnvPool
    from mulligan.training.trajectory import TrajectoryStore

    results = {}
    with EnvPool(config.env_id, num_envs=config.num_envs, env_kwargs=eval_env_options(config)) as pool:
        pairs = getattr(pool.envs[0].unwrapped, "task_pairs", None)
        if pairs is not None:
            indices = paper_test_indices(pairs, config.eval_variations_per_task)
        else:
            indices = list(range(config.eval_episodes))
        for name, agent in agents.items():
            result = evaluate(
                agent,
                pool,
                indices,
                seed=config.seed + 1,
                max_turns=config.eval_max_turns,
                store=TrajectoryStore(os.path.join(config.output_dir, f"eval-{name}.jsonl")),
                progress=not config.disable_tqdm,
                group_by=task_name_of,
            )
            results[name] = result.to_dict()
    return results


def policy_options(config: SubgoalArgs) -> dict[str, Any]:
    """The decoding options of every evaluated policy (``num_beams`` only when beam search is on)."""
    options: dict[str, Any] = {
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_new_tokens": config.max_new_tokens,
        "seed": config.seed,
    }
    if config.num_beams > 1:  # the paper's 5-beam search (official get_model_output)
        options["num_beams"] = config.num_beams
    return options


def _policy(config: SubgoalArgs, path: str) -> Agent:
    from mulligan.agents.seq2seq import model_agent

    return model_agent(path, **policy_options(config))


def evaluation_agents(
    config: SubgoalArgs,
    models: Mapping[str, str],
    vocabulary: Sequence[str] = (),
    pools: Any = None,
    *,
    policy: Callable[[str], Agent] | None = None,
) -> dict[str, Agent]:
    """The agents compared: hierarchical, flat (when trained), and the ``rand`` / ``semi-rand`` ablations.

    Args:
        config: The run's configuration (history, planner protocol, decoding).
        models: Checkpoint paths by role (``planner``, ``executor``, optionally ``first_step``, ``flat``).
        vocabulary: Every training sub-goal text (the ``rand`` ablation's pool; empty: no ``rand`` agent).
        pools: :class:`~mulligan.agents.hierarchical.SemiRandomSubgoals` of the training
            annotations (``None``: no ``semi-rand`` agent).
        policy: Builds the agent of a checkpoint path (default: :func:`policy_options` decoding,
            ``Seq2SeqAgent`` or ``HFAgent`` by architecture).
    """
    from mulligan.agents.flat import FlatAgent
    from mulligan.agents.hierarchical import HierarchicalAgent

    build = policy or (lambda path: _policy(config, path))
    candidates = config.num_beams if config.use_all_beams else 1

    def hierarchical(**extra: Any) -> HierarchicalAgent:
        return HierarchicalAgent(
            build(models["planner"]),
            build(models["executor"]),
            history_len=config.history_len,
            planner_every_step=config.planner_every_step,
            first_planner=build(models["first_step"]) if "first_step" in models else None,
            beam_candidates=candidates,
            seed=config.seed,
            **extra,
        )

    agents: dict[str, Agent] = {"hierarchical": hierarchical()}
    if "flat" in models:
        agents["flat"] = FlatAgent(build(models["flat"]), history_len=config.history_len, beam_candidates=candidates)
    if config.random_subgoals and vocabulary:
        agents["random_subgoals"] = hierarchical(random_subgoals=list(vocabulary))
    if config.semi_random_subgoals and pools is not None:
        agents["semi_random_subgoals"] = hierarchical(semi_random=pools)
    return agents


def exact_match(agent: Agent, conversations: Sequence[Sequence[Mapping[str, str]]]) -> list[bool]:
    """Per conversation, whether the agent's answer to its prompt equals the target (first lines, stripped).

    The official sub-goal exact match (``eval_test_sg``): the controller's prediction against the
    annotation's sub-goal on each held-out record.
    """
    from mulligan.agents.base import AgentInput
    from mulligan.agents.hierarchical import first_line

    if not conversations:
        return []
    actions = agent.act([AgentInput(messages=[dict(c[0])], stop=("\n",)) for c in conversations])
    return [
        first_line(a.text).strip() == first_line(c[-1]["content"]).strip()
        for a, c in zip(actions, conversations, strict=True)
    ]


def subgoal_exact_match(
    agents: Mapping[str, Agent], annotated: Sequence[Any], history_len: int, *, planner_every_step: bool = True
) -> dict[str, dict[str, Any]]:
    """Exact match of each role's model on the records of held-out annotated gold paths.

    Args:
        agents: Policies by role: ``planner`` (sub-goal exact match, the official metric; the
            ``first_step`` records go to a ``first_step`` agent when given) and ``executor`` (the
            gold action given the gold sub-goal: the executor under oracle sub-goals, one step at
            a time).
        annotated: Annotated gold paths of held-out variations.
        history_len: Steps of history in the prompts.
        planner_every_step: Planner records at every step.

    Returns:
        Per role ``{"exact_match": micro mean, "macro": mean over tasks, "per_task": {...},
        "records": n}``.
    """
    from mulligan.training.subgoal_data import build_training_views, render_record

    results: dict[str, dict[str, Any]] = {}
    for role, agent in agents.items():
        if role == "first_step":
            continue
        views = {"planner": ("planner", "first_step"), "executor": ("executor",), "flat": ("flat",)}[role]
        records = [
            r
            for a in annotated
            for r in build_training_views(a, history_len, planner_every_step=planner_every_step)
            if r["view"] in views
        ]
        hits: list[bool] = [False] * len(records)
        for view in views:
            chosen = [k for k, r in enumerate(records) if r["view"] == view]
            policy = agents.get("first_step", agent) if view == "first_step" else agent
            conversations = [
                [
                    {"role": "user", "content": render_record(records[k], history_len)},
                    {"role": "assistant", "content": records[k]["completion"]},
                ]
                for k in chosen
            ]
            for k, hit in zip(chosen, exact_match(policy, conversations), strict=True):
                hits[k] = hit
        per_task: dict[str, list[bool]] = {}
        for record, hit in zip(records, hits, strict=True):
            per_task.setdefault(record["task_name"], []).append(hit)
        means = {name: sum(v) / len(v) for name, v in per_task.items()}
        results[role] = {
            "exact_match": sum(hits) / len(hits) if hits else float("nan"),
            "macro": sum(means.values()) / len(means) if means else float("nan"),
            "per_task": means,
            "records": len(records),
        }
    return results


def build_annotator(config: SubgoalArgs) -> Any:
    """The annotator ``config.annotator`` names: rule-based, or an agent at temperature 0 in an LLMAnnotator."""
    from mulligan.training.subgoal_data import LLMAnnotator, RuleBasedAnnotator

    if config.annotator == "rules":
        return RuleBasedAnnotator()
    from mulligan.agents.loading import load_agent

    agent = load_agent(config.annotator, temperature=0.0, max_new_tokens=config.annotator_max_new_tokens)
    return LLMAnnotator(agent)


def held_out_exact_match(config: SubgoalArgs, models: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """:func:`subgoal_exact_match` of the trained models on ``exact_match_paths`` gold paths of test variations."""
    from mulligan.training.subgoal_data import collect_gold

    gold = collect_gold(
        config.env_id,
        config.exact_match_paths,
        env_kwargs=eval_env_options(config),
        seed=config.seed + 7,
        num_envs=config.num_envs,
        drop_filler=config.drop_filler_steps,
    )
    roles = {role: _policy(config, models[role]) for role in ("planner", "executor", "first_step") if role in models}
    if "flat" in models:
        roles["flat"] = _policy(config, models["flat"])
    return subgoal_exact_match(roles, gold, config.history_len, planner_every_step=config.planner_every_step)


def train_subgoal(config: SubgoalArgs) -> dict[str, Any]:
    """Collect and annotate gold paths, train planner + executor (and the flat baseline), evaluate."""
    quiet_library_bars(force=config.disable_tqdm)  # no carriage-return bars in a log
    from transformers import set_seed

    from mulligan.training.datasets import load_trajectory_source
    from mulligan.training.subgoal_data import (
        annotate_all,
        collect_gold,
        distillation_conversations,
        gold_prefix,
        semi_random_pools,
        subgoal_vocabulary,
    )

    # Seed.
    set_seed(config.seed)
    os.makedirs(config.output_dir, exist_ok=True)

    # Data: gold paths played by the oracle, annotated with sub-goals (Sec. 3.1), cut into records.
    annotator = build_annotator(config)
    if config.gold:  # gold paths recorded elsewhere (an exported collection, a hub dataset)
        gold = [gold_prefix(t) for t in load_trajectory_source(config.gold) if t.turns]
        annotated = annotate_all(gold, annotator, drop_filler=config.drop_filler_steps)
    else:
        annotated = collect_gold(
            config.env_id,
            config.num_gold,
            env_kwargs=config.env_kwargs_dict,
            seed=config.seed,
            annotator=annotator,
            num_envs=config.num_envs,
            progress=not config.disable_tqdm,
            drop_filler=config.drop_filler_steps,
        )
    with open(os.path.join(config.output_dir, "gold_annotated.jsonl"), "w", encoding="utf-8") as handle:
        for trajectory in annotated:
            handle.write(json.dumps(trajectory.to_dict(), ensure_ascii=False) + "\n")
    data = distillation_conversations(
        annotated,
        config.history_len,
        planner_every_step=config.planner_every_step,
        separate_first_step=config.first_subgoal_model,
    )

    # Models and update loops: planner and executor (Sec. 3.2), one shared model or two.
    executor_budget = {"learning_rate": config.learning_rate, "epochs": config.num_train_epochs}
    planner_budget = {"learning_rate": config.planner_learning_rate, "epochs": config.planner_num_train_epochs}
    models: dict[str, str] = {}
    stats: dict[str, Any] = {}
    if config.shared_model:
        shared = os.path.join(config.output_dir, "shared")
        stats["shared"] = train_policy(config, data["planner"] + data["executor"], shared, **executor_budget)
        models["planner"] = models["executor"] = shared
    else:
        roles = [("planner", planner_budget), ("executor", executor_budget)]
        if config.first_subgoal_model:  # the paper's third model; trained like the controller
            roles.append(("first_step", planner_budget))
        for role, budget in roles:
            models[role] = os.path.join(config.output_dir, role)
            stats[role] = train_policy(config, data[role], models[role], **budget)
    if config.train_flat:
        models["flat"] = os.path.join(config.output_dir, "flat")
        stats["flat"] = train_policy(config, data["flat"], models["flat"], **executor_budget)

    # Evaluation and logging.
    evaluation = None
    if config.eval_episodes:
        pools = semi_random_pools(annotated) if config.semi_random_subgoals else None
        agents = evaluation_agents(config, models, subgoal_vocabulary(annotated), pools)
        evaluation = evaluate_subgoal_agents(config, agents)
    matches = None
    if config.exact_match_paths:
        matches = held_out_exact_match(config, models)
    summary = {
        "output_dir": config.output_dir,
        "models": models,
        "training": stats,
        "eval": evaluation,
        "exact_match": matches,
        "gold_paths": len(annotated),
        "records": {k: len(v) for k, v in data.items()},
        "config": asdict(config),
    }
    with open(os.path.join(config.output_dir, "subgoal_summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2, default=str)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``mulligan train subgoal``: parse :class:`SubgoalArgs` flags and train."""
    parser = parser_for(SubgoalArgs, prog="mulligan train subgoal", description=__doc__.split("\n")[0])
    (config,) = parser.parse_args_into_dataclasses(args=argv if argv is not None else sys.argv[1:])
    summary = train_subgoal(config)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2, default=str))
    return 0
