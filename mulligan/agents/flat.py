"""``FlatAgent``: sub-goal distillation's baseline, one policy from context to elementary action.

The paper's baseline (arXiv 2405.02749, Sec. 4) is "standard imitation learning on elementary
actions": the same model and the same input as the executor, without sub-goals (the official
``compose_instance_v4``). :class:`FlatAgent` renders :func:`~mulligan.agents.hierarchical.flat_prompt`
from exactly the :class:`~mulligan.agents.hierarchical.StepContext` that
:class:`~mulligan.agents.hierarchical.HierarchicalAgent` shows its executor (task, time, score, the
last 10 steps with rewards, room, inventory, visited rooms), and maps invalid actions to valid ones
the same way, so that the two are compared on equal terms. Its actions record that context: the
latest observation shown as the rendered prompt (:func:`~mulligan.agents.hierarchical.prompt_context`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mulligan.agents.base import Action, Agent, AgentInput
from mulligan.agents.hierarchical import (
    HISTORY_LEN,
    ConversationMemory,
    EmbedFunction,
    beam_texts,
    context_of,
    first_line,
    flat_prompt,
    map_to_valid,
    policy_answers,
    prompt_context,
    prompt_input,
    task_description,
)

__all__ = ["FlatAgent"]


class FlatAgent(Agent):
    """The flat baseline at inference: renders :func:`flat_prompt` from the conversation, one line out.

    Args:
        policy: The imitation-trained model's agent (an ``HFAgent``).
        history_len: Steps of history shown, as in training (the official 10).
        embed: Optional embedding function for mapping invalid actions (default: ``difflib``).
        task_extractor: Maps the first observation to the task description.
        stop: Stop strings (an action is one line).
        max_states: Conversations whose scores are remembered at most (for the rewards shown).
        beam_candidates: Answers considered per step (the policy's top beams, through ``sample``):
            an invalid best action is replaced by the first valid one of them before the most
            similar valid action, as the official agent does with its 5 beams. 1: the best only.
    """

    def __init__(
        self,
        policy: Agent,
        history_len: int = HISTORY_LEN,
        *,
        embed: EmbedFunction | None = None,
        task_extractor: Callable[[str], str] = task_description,
        stop: Sequence[str] = ("\n",),
        max_states: int = 100_000,
        beam_candidates: int = 1,
    ):
        if history_len < 0:
            raise ValueError(f"history_len must be >= 0, got {history_len}")
        if beam_candidates < 1:
            raise ValueError(f"beam_candidates must be >= 1, got {beam_candidates}")
        self.beam_candidates = beam_candidates
        self.policy = policy
        self.history_len = history_len
        self.embed = embed
        self.task_extractor = task_extractor
        self.stop = tuple(stop)
        self.memory: ConversationMemory[list[float]] = ConversationMemory(max_states)
        self.name = "flat"

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """One action per input: the first line of the policy's answer, mapped to a valid action."""
        prompts, scores = [], []
        for item in inputs:
            context, known = context_of(item, self.memory.get(item.messages) or [], self.task_extractor)
            scores.append(known)
            prompt = flat_prompt(context, self.history_len)
            prompts.append(prompt_input(item, prompt, self.stop))
        answers = policy_answers(self.policy, prompts, self.beam_candidates)
        chosen = []
        for item, given, beams, known in zip(inputs, prompts, answers, scores, strict=True):
            action = beams[0]
            # Like HierarchicalAgent, map an invalid action to a valid one (paper Sec. 4).
            text = map_to_valid(first_line(action.text), item.info, self.embed, beam_texts(beams[1:]))
            self.memory.put(item.messages, text, known)
            chosen.append(
                Action(
                    text,
                    action.prompt,
                    action.prompt_ids,
                    action.completion_ids,
                    action.logprobs,
                    action.metadata,
                    context=prompt_context(item, given, action),
                )
            )
        return chosen

    def reset(self, seed: int | None = None) -> None:
        """Forget the remembered scores and reseed the policy."""
        self.memory.clear()
        self.policy.reset(seed)
