"""Helpers of the RL trainer tests (GRPO, PPO, CORGI): a smaller tiny model, a warm start, a scripted agent."""

from __future__ import annotations

import random

import torch

from mulligan.agents.base import Action, Agent
from mulligan.agents.tiny import TinyModelConfig, build_tiny_model
from mulligan.training.ppo import masked_mean
from mulligan.training.tokens import tokenize_conversation

#: A smaller tiny model (about 0.1M parameters), so that RL tests take seconds.
SMALL = TinyModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                        max_position_embeddings=512)
#: Echo whose only target is "a", with partial credit: the policy must learn to answer "a" and stop.
ECHO_KWARGS = {"vocabulary": ["a"], "partial_credit": True}


def warm_start(answers=("a", "b", "c", "d"), steps: int = 40, seed: int = 0):
    """A small tiny model taught to answer Echo with a random word of ``answers`` (ignoring the target).

    It starts RL from a policy that succeeds about 1/len(answers) of the time, so that a learning
    test measures RL, not the search for a first reward.
    """
    model, tokenizer = build_tiny_model(TinyModelConfig(**{**SMALL.__dict__, "seed": seed}))
    tokenizer.padding_side = "left"
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        rows = [tokenize_conversation(tokenizer, [
            {"role": "user", "content": f"Repeat exactly: {rng.choice(answers)}"},
            {"role": "assistant", "content": rng.choice(answers)},
        ]) for _ in range(16)]
        ids = torch.tensor([r.input_ids for r in rows])
        mask = torch.tensor([r.assistant_mask for r in rows])
        logprobs = torch.log_softmax(model(input_ids=ids).logits[:, :-1], -1).gather(-1, ids[:, 1:, None])
        loss = -masked_mean(logprobs.squeeze(-1), mask[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, tokenizer


class ScriptedAgent(Agent):
    """Answers each turn from a fixed list (a real Agent, for mask and session tests)."""

    def __init__(self, answers):
        self.answers = list(answers)

    def act(self, inputs):
        """The next scripted answer for every input, by turn number."""
        return [Action(text=self.answers[sum(m["role"] == "assistant" for m in x.messages)]) for x in inputs]
