"""``TrainerVLLMAgent``: play env turns with the colocated vLLM engine of a TRL ``GRPOTrainer``.

GRPO's episode rollouts (:class:`mulligan.training.grpo.EpisodeRollout`) play whole multi-turn
episodes with the weights being trained. With ``use_vllm=True`` TRL keeps a vLLM engine whose
weights it syncs before each generation step; this agent sends every turn of the batch to that
engine in one call. What the model sees is decided as for every agent
(:meth:`~mulligan.agents.base.Agent.prepare_context`: system prompt, then the context policy) and
rendered by :func:`mulligan.training.chat.render`, so the episode is trained on the text it was
sampled from.

Sampling settings (temperature, top-p, tokens per turn) are the trainer's. Only
``vllm_mode="colocate"`` works: in server mode every process would have to generate in lockstep,
which episodes of different lengths do not do. TRL coupling: this agent calls
``trainer.vllm_generation.generate(prompts=..., images=None, num_generations=1)``, an internal API
of TRL's ``GRPOTrainer`` (TRL 1.16).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mulligan.agents.base import Action, Agent, AgentInput


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string (the whole text when none occurs)."""
    positions = [text.find(stop) for stop in stops if stop and stop in text]
    return text[: min(positions)] if positions else text


class TrainerVLLMAgent(Agent):
    """An agent that generates each turn with the colocated vLLM engine of a GRPO trainer.

    Args:
        trainer: A ``trl.GRPOTrainer`` built with ``use_vllm=True`` and ``vllm_mode="colocate"``.
        system_prompt: A system message put first in what the model sees (``None``: none).
        context: A context policy (:mod:`mulligan.agents.context`); ``None`` keeps everything.
        stop: Stop strings applied to every input (besides each input's own); vLLM generates to
            EOS or the token limit and the text is cut at the first stop string.

    Raises:
        ValueError: If the trainer does not generate with colocated vLLM.
    """

    def __init__(self, trainer: Any, system_prompt: str | None = None, context: Any = None, stop: Sequence[str] = ()):
        if not getattr(trainer, "use_vllm", False):
            raise ValueError("TrainerVLLMAgent needs a GRPOTrainer built with use_vllm=True")
        if getattr(trainer.args, "vllm_mode", "colocate") != "colocate":
            raise ValueError("multi-turn episodes with vLLM need --vllm_mode colocate")
        self.trainer = trainer
        self.tokenizer = trainer.processing_class
        self.system_prompt = system_prompt
        self.context = context
        self.stop = tuple(stop)
        self.name = "vllm"

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` under the trainer's tokenizer (for token-budget context policies)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """One action per input, generated in one vLLM call."""
        from mulligan.training.chat import PLAIN_FORMAT_STOP, encode, has_chat_template, render

        inputs = list(inputs)
        if not inputs:
            return []
        prepared = [self.prepare_context(x.messages) for x in inputs]
        prompts = [render(self.tokenizer, messages, add_generation_prompt=True) for messages, _ in prepared]
        prompt_ids = [encode(self.tokenizer, p) for p in prompts]
        _, completion_ids, logprobs, _ = self.trainer.vllm_generation.generate(
            prompts=prompt_ids, images=None, num_generations=1
        )
        extra = () if has_chat_template(self.tokenizer) else (PLAIN_FORMAT_STOP,)
        actions = []
        for k, x in enumerate(inputs):
            text = cut_at_stop(
                self.tokenizer.decode(completion_ids[k], skip_special_tokens=True), (*self.stop, *x.stop, *extra)
            )
            lps = logprobs[k] if logprobs else None
            actions.append(
                Action(
                    text=text.strip() if extra else text,  # the plain format strips whitespace, as HFAgent
                    prompt=prompts[k],
                    prompt_ids=prompt_ids[k],
                    completion_ids=list(completion_ids[k]),
                    logprobs=[lp[0] for lp in lps] if lps else None,
                    context=prepared[k][1],
                )
            )
        return actions
