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
  episodes with the model being trained (every turn batched across the envs by
  :func:`mulligan.training.rollout.collect_episodes`) and returns each episode as ONE completion:
  the conversation after the first prompt, with ``env_mask`` 1 on the model's own tokens and 0 on
  env observations, feedback and chat headers (from
  :func:`mulligan.training.tokens.tokenize_conversation`), so TRL learns only what the model wrote.
  The episode's return from the env is the reward (:class:`mulligan.training.rewards.EpisodeReturnReward`).

Scaling: the same script runs under ``accelerate launch`` on several GPUs, and TRL's vLLM
generation is ``--use_vllm`` (``--vllm_mode colocate`` for multi-turn episodes); see ``docs/rl.md``.

Command line: ``mulligan train grpo --env_id Mulligan/Math-v0 --model tiny --max_steps 10``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium

ROLLOUTS = ("auto", "single_turn", "episode")
REWARD_FIELDS = ("reward", "score", "success")


@dataclass
class GRPOConfig:
    """Configuration of :func:`train_grpo` and ``mulligan train grpo`` (mapped onto TRL's ``GRPOConfig``).

    Attributes:
        model: Model id or local path; ``"tiny"`` is the offline tiny model.
        env_id: A registered env id.
        env_kwargs: JSON object of keyword arguments for ``gymnasium.make``.
        max_attempts: Attempts per episode; above 1 the env runs under ``RetryWithFeedback`` (multi-turn).
        system_prompt: A system message placed first in every prompt.
        output_dir: Checkpoints, final model and logs.
        num_train_tasks: Prompts in the training dataset (tasks ``task_offset .. task_offset + n - 1``;
            finite datasets wrap around).
        task_offset: First task index.
        rollout: ``auto`` (by the env), ``single_turn`` (reward functions) or ``episode`` (``rollout_func``).
        reward_field: For single-turn envs, what the reward is: the env's ``reward``, ``score`` or ``success``.
        max_steps: Optimizer steps.
        num_generations: Completions per task (the GRPO group size).
        per_device_train_batch_size: Completions per device per micro-step (a multiple of ``num_generations``
            is simplest; TRL requires the global generation batch to divide into groups).
        gradient_accumulation_steps: Micro-steps per optimizer step.
        learning_rate: AdamW learning rate.
        beta: KL coefficient to the reference model (TRL's ``beta``; 0 loads no reference).
        epsilon: Ratio clip epsilon.
        loss_type: TRL's loss aggregation (``dapo``, ``grpo``, ``dr_grpo``, ``bnpo``, ...).
        scale_rewards: TRL's advantage scaling: ``group``, ``batch`` or ``none``.
        num_iterations: Updates per generation batch (TRL's mu).
        temperature: Sampling temperature.
        top_p: Nucleus sampling mass.
        max_completion_length: Tokens per completion; for episodes, per turn.
        num_envs: Envs run side by side in an episode rollout.
        use_vllm: Generate with vLLM (TRL's option; needs the vllm package and a GPU).
        vllm_mode: ``colocate`` or ``server`` (episodes need ``colocate``).
        use_lora: Train LoRA adapters (peft).
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha.
        lora_target_modules: Comma-separated module names, or ``all-linear``.
        bf16: Train in bfloat16 (GPUs).
        gradient_checkpointing: Trade compute for memory.
        seed: Seed of everything random.
        logging_steps: Log every N steps.
        save_steps: Checkpoint every N steps (0: no intermediate checkpoints).
        report_to: ``none``, ``tensorboard``, ``wandb``, ... (any ``transformers`` integration).
        resume_from_checkpoint: A checkpoint directory, or ``auto`` for the newest in ``output_dir``.
        progress: Show a progress bar.
        trl_args: JSON object of further ``trl.GRPOConfig`` fields (they override the above).
    """

    model: str = field(default="tiny", metadata={"help": "Model id or local path; 'tiny' is the offline tiny model."})
    env_id: str = field(default="Mulligan/Echo-v0", metadata={"help": "A registered env id."})
    env_kwargs: str = field(default="{}", metadata={"help": "JSON object of keyword arguments for gymnasium.make."})
    max_attempts: int = field(default=1, metadata={"help": "Attempts per episode (>1: RetryWithFeedback)."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message placed first."})
    output_dir: str = field(default="runs/grpo", metadata={"help": "Checkpoints, final model and logs."})
    num_train_tasks: int = field(default=256, metadata={"help": "Prompts (tasks) in the training dataset."})
    task_offset: int = field(default=0, metadata={"help": "First task index."})
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
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    max_completion_length: int = field(default=64, metadata={"help": "Tokens per completion (per turn in episodes)."})
    num_envs: int = field(default=16, metadata={"help": "Envs run side by side in an episode rollout."})
    use_vllm: bool = field(default=False, metadata={"help": "Generate with vLLM (GPU)."})
    vllm_mode: str = field(default="colocate", metadata={"help": "colocate or server (episodes: colocate)."})
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "Comma-separated modules or all-linear."})
    bf16: bool = field(default=False, metadata={"help": "Train in bfloat16 (GPUs)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})
    seed: int = field(default=0, metadata={"help": "Seed of everything random."})
    logging_steps: int = field(default=1, metadata={"help": "Log every N steps."})
    save_steps: int = field(default=0, metadata={"help": "Checkpoint every N steps (0: none until the end)."})
    report_to: str = field(default="none", metadata={"help": "none, tensorboard, wandb, ..."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint directory, or 'auto' for the latest in output_dir."}
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    trl_args: str = field(default="{}", metadata={"help": "JSON object of further trl.GRPOConfig fields."})

    def __post_init__(self) -> None:
        for name in ("max_attempts", "num_train_tasks", "max_steps", "per_device_train_batch_size",
                     "gradient_accumulation_steps", "max_completion_length", "num_envs", "num_iterations",
                     "lora_r", "logging_steps"):
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
        if self.learning_rate <= 0 or self.beta < 0 or self.epsilon <= 0:
            raise ValueError("learning_rate and epsilon must be > 0 and beta >= 0")
        if self.save_steps < 0 or self.task_offset < 0:
            raise ValueError("save_steps and task_offset must be >= 0")
        self.env_options()
        self.extra_trl_args()

    def env_options(self) -> dict[str, Any]:
        """``gymnasium.make`` keyword arguments: ``env_kwargs`` plus ``max_attempts`` when above 1."""
        options = _json_object("env_kwargs", self.env_kwargs)
        if self.max_attempts > 1:
            options["max_attempts"] = self.max_attempts
        return options

    def extra_trl_args(self) -> dict[str, Any]:
        """The parsed ``trl_args``."""
        return _json_object("trl_args", self.trl_args)


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
def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> gymnasium.Env:
    """``gymnasium.make`` after registering the ``Mulligan/*`` ids."""
    import mulligan  # noqa: F401 - registers the ids

    return gymnasium.make(env_id, **dict(env_kwargs or {}))


def is_multi_turn(env: gymnasium.Env) -> bool:
    """Whether an episode of ``env`` can take more than one action (turn cap or retry wrapper)."""
    from mulligan.envs.wrappers import RetryWithFeedback

    if env.spec is not None and env.spec.max_episode_steps not in (None, 1):
        return True
    layer = env
    while isinstance(layer, gymnasium.Wrapper):
        if isinstance(layer, RetryWithFeedback) and layer.max_attempts > 1:
            return True
        layer = layer.env
    return False


def task_indices(env: gymnasium.Env, num_tasks: int, offset: int = 0) -> list[int]:
    """``num_tasks`` consecutive task indices from ``offset``, wrapped around a finite dataset."""
    size = env.unwrapped.num_tasks
    return [(offset + k) % size if size else offset + k for k in range(num_tasks)]


def prompt_messages(observation: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """The conversational prompt of a task: an optional system message, then the first observation."""
    messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    return [*messages, {"role": "user", "content": observation}]


def prompt_key(prompt: Any) -> str:
    """A hashable key of a prompt (messages or text), to find its task again in a rollout."""
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def build_prompt_dataset(
    env_id: str,
    indices: Sequence[int],
    *,
    env_kwargs: dict[str, Any] | None = None,
    system_prompt: str | None = None,
):
    """A ``datasets.Dataset`` of GRPO prompts, one row per task: ``prompt``, ``task_index``, ``task_id``.

    Each prompt is the env's first observation after ``reset(options={"task_index": i})``.
    """
    from datasets import Dataset

    env = make_env(env_id, env_kwargs)
    rows = []
    for index in indices:
        observation, info = env.reset(seed=int(index), options={"task_index": int(index)})
        rows.append({"prompt": prompt_messages(observation, system_prompt), "task_index": int(index),
                     "task_id": str(info["task_id"])})
    env.close()
    return Dataset.from_list(rows)


# ----------------------------------------------------------------------------------- episodes
@dataclass
class EpisodeSample:
    """One episode as a GRPO sample.

    Attributes:
        prompt_ids: Tokens up to and including the first assistant header.
        completion_ids: The rest of the conversation up to the model's last token.
        env_mask: 1 on the model's own tokens of ``completion_ids``, 0 on env/feedback/header tokens.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]


def episode_sample(tokenizer, messages: Sequence[dict[str, str]]) -> EpisodeSample:
    """Split a tokenized episode into a prompt and one completion with its ``env_mask``.

    The prompt is everything before the model's first token; the completion stops after the
    model's last token (its end-of-turn token when it ended its turn), and ``env_mask`` is the
    episode's assistant mask over that span.
    """
    from mulligan.training.tokens import tokenize_conversation

    episode = tokenize_conversation(tokenizer, messages)
    mask = episode.assistant_mask
    learned = [t for t, m in enumerate(mask) if m]
    if not learned:
        raise ValueError("the episode has no model tokens: it needs at least one assistant message")
    start, end = learned[0], learned[-1] + 1
    return EpisodeSample(episode.input_ids[:start], episode.input_ids[start:end], mask[start:end])


class EpisodeRollout:
    """TRL ``rollout_func`` that plays whole multi-turn episodes with the model being trained.

    TRL calls it with the batch's prompts (each task's prompt repeated ``num_generations`` times in
    a row) and the trainer. Each prompt is mapped back to its task index, every episode is played
    in the env with the trainer's current weights, and each comes back as one completion with
    ``env_mask``; ``episode_return`` and ``episode_success`` ride along for the reward function
    and logs.

    Args:
        env_id: A registered env id.
        env_kwargs: ``gymnasium.make`` keyword arguments (``max_attempts`` for retries).
        prompt_tasks: Prompt key (:func:`prompt_key`) -> task index, from the training dataset.
        system_prompt: The system message the prompts carry (``None`` for none).
        max_new_tokens: Tokens per turn.
        temperature: Sampling temperature.
        top_p: Nucleus sampling mass.
        num_envs: Envs run side by side.
        seed: Base seed; call ``k`` of the run uses ``seed + k``.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any] | None,
        prompt_tasks: dict[str, int],
        *,
        system_prompt: str | None = None,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        num_envs: int = 16,
        seed: int = 0,
    ):
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.prompt_tasks = dict(prompt_tasks)
        self.system_prompt = system_prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.num_envs = num_envs
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
            return TrainerVLLMAgent(trainer, self.system_prompt)
        from mulligan.agents.hf import HFAgent

        return HFAgent(model, trainer.processing_class, temperature=self.temperature, top_p=self.top_p,
                       max_new_tokens=self.max_new_tokens, seed=self.seed + self.calls,
                       batch_size=self.num_envs)

    def play(self, prompts: Sequence[Any], agent: Any) -> list[Any]:
        """Play one episode per prompt with ``agent``; returns the trajectories in prompt order."""
        from mulligan.training.rollout import collect_episodes

        indices = [self.task_index(p) for p in prompts]
        return collect_episodes(
            self.env_id, agent, len(indices), env_kwargs=self.env_kwargs, num_envs=self.num_envs,
            seed=self.seed + self.calls, task_indices=indices, system_prompt=self.system_prompt, progress=False,
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
        samples = [episode_sample(tokenizer, t.messages) for t in trajectories]
        return {
            "prompt_ids": [s.prompt_ids for s in samples],
            "completion_ids": [s.completion_ids for s in samples],
            "logprobs": None,
            "env_mask": [s.env_mask for s in samples],
            "episode_return": [float(t.episode_return) for t in trajectories],
            "episode_success": [float(t.success) for t in trajectories],
        }


class TrainerVLLMAgent:
    """An agent that generates each turn with the colocated vLLM engine of a GRPO trainer.

    Sampling settings are the trainer's (``temperature``, ``top_p``, ``max_completion_length``).
    Only ``vllm_mode="colocate"`` is supported: in server mode every process would have to
    generate in lockstep, which episodes of different lengths do not do.

    Args:
        trainer: A ``GRPOTrainer`` built with ``use_vllm=True``.
        system_prompt: Unused here (the messages already hold it); kept for symmetry with ``HFAgent``.
    """

    def __init__(self, trainer: Any, system_prompt: str | None = None):
        if getattr(trainer.args, "vllm_mode", "colocate") != "colocate":
            raise ValueError("multi-turn episodes with vLLM need --vllm_mode colocate")
        self.trainer = trainer
        self.tokenizer = trainer.processing_class

    def reset(self, seed: int | None = None) -> None:
        """Nothing to reset: the vLLM engine owns its sampling seed."""

    def act(self, inputs: Sequence[Any]) -> list[Any]:
        """One action per input, generated in one vLLM call."""
        from mulligan.agents.base import Action
        from mulligan.training.tokens import render_conversation

        prompts = [render_conversation(self.tokenizer, x.messages, add_generation_prompt=True) for x in inputs]
        prompt_ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        _, completion_ids, logprobs, _ = self.trainer.vllm_generation.generate(
            prompts=prompt_ids, images=None, num_generations=1
        )
        texts = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        return [
            Action(text=text, prompt=prompt, prompt_ids=ids, completion_ids=list(completion),
                   logprobs=[lp[0] for lp in lps] if lps else None)
            for text, prompt, ids, completion, lps in zip(
                texts, prompts, prompt_ids, completion_ids, logprobs or [None] * len(texts), strict=True)
        ]


# ----------------------------------------------------------------------------------- the trainer
def load_model_and_tokenizer(name_or_path: str):
    """Load a causal LM and its tokenizer (``"tiny"``: the offline tiny model), padding on the left for TRL."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mulligan.agents.tiny import resolve_model

    path = resolve_model(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(path), tokenizer


def trl_config(config: GRPOConfig, multi_turn: bool):
    """TRL's ``GRPOConfig`` for a mulligan :class:`GRPOConfig`."""
    import trl

    kwargs: dict[str, Any] = dict(
        output_dir=config.output_dir,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_generations=config.num_generations,
        learning_rate=config.learning_rate,
        beta=config.beta,
        epsilon=config.epsilon,
        loss_type=config.loss_type,
        scale_rewards=config.scale_rewards,
        num_iterations=config.num_iterations,
        temperature=config.temperature,
        top_p=config.top_p,
        max_completion_length=config.max_completion_length,
        use_vllm=config.use_vllm,
        vllm_mode=config.vllm_mode,
        bf16=config.bf16,
        gradient_checkpointing=config.gradient_checkpointing,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        report_to=[] if config.report_to == "none" else [config.report_to],
        disable_tqdm=not config.progress,
        remove_unused_columns=False,
    )
    kwargs.update(config.extra_trl_args())
    return trl.GRPOConfig(**kwargs)


def build_grpo_trainer(config: GRPOConfig, model: Any = None, tokenizer: Any = None):
    """A ``trl.GRPOTrainer`` driven by the env of ``config`` (see the module docstring).

    Args:
        config: The run's :class:`GRPOConfig`.
        model: A loaded causal LM to train instead of ``config.model``.
        tokenizer: Its tokenizer (required with ``model``).
    """
    import trl

    from mulligan.training.rewards import EnvReward, EpisodeReturnReward

    if model is None:
        model, tokenizer = load_model_and_tokenizer(config.model)
    elif tokenizer is None:
        raise ValueError("pass the tokenizer with a loaded model: build_grpo_trainer(config, model, tokenizer)")
    env_kwargs = config.env_options()
    env = make_env(config.env_id, env_kwargs)
    multi_turn = is_multi_turn(env) if config.rollout == "auto" else config.rollout == "episode"
    indices = task_indices(env, config.num_train_tasks, config.task_offset)
    env.close()
    dataset = build_prompt_dataset(config.env_id, indices, env_kwargs=env_kwargs, system_prompt=config.system_prompt)

    peft_config = None
    if config.use_lora:
        from peft import LoraConfig

        targets = config.lora_target_modules
        peft_config = LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, task_type="CAUSAL_LM",
            target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
        )
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    if multi_turn:
        if config.use_vllm and config.vllm_mode != "colocate":
            raise ValueError("multi-turn episodes with vLLM need --vllm_mode colocate")
        rollout = EpisodeRollout(
            config.env_id, env_kwargs, {prompt_key(p): i for p, i in zip(dataset["prompt"], dataset["task_index"],
                                                                       strict=True)},
            system_prompt=config.system_prompt, max_new_tokens=config.max_completion_length,
            temperature=config.temperature, top_p=config.top_p, num_envs=config.num_envs, seed=config.seed,
        )
        reward_funcs: list[Any] = [EpisodeReturnReward()]
    else:
        rollout = None
        reward_funcs = [EnvReward(config.env_id, env_kwargs, field=config.reward_field)]
    return trl.GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=trl_config(config, multi_turn),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        rollout_func=rollout,
    )


def train_grpo(config: GRPOConfig, model: Any = None, tokenizer: Any = None):
    """Build the GRPO trainer, train (resuming when asked), save the final model; returns the trainer."""
    trainer = build_grpo_trainer(config, model, tokenizer)
    from mulligan.training.nat import resolve_checkpoint

    trainer.train(resume_from_checkpoint=resolve_checkpoint(config.resume_from_checkpoint or "", config.output_dir))
    trainer.save_model(config.output_dir)
    return trainer


def main(argv: list[str] | None = None) -> int:
    """``mulligan train grpo``: parse :class:`GRPOConfig` flags and train."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(GRPOConfig)
    parser.prog = "mulligan train grpo"
    (config,) = parser.parse_args_into_dataclasses(args=list(sys.argv[1:] if argv is None else argv))
    trainer = train_grpo(config)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    print(json.dumps({
        "output_dir": config.output_dir, "steps": trainer.state.global_step,
        "first_reward": rewards[0] if rewards else None, "last_reward": rewards[-1] if rewards else None,
    }))
    return 0
