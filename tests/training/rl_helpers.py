"""Helpers of the RL trainer tests (GRPO, PPO, CORGI): a smaller tiny model and a warm start.

A plain module (no fixtures, no conftest): the test files import it by name, as pytest puts the
tests folder on ``sys.path``. Scripted agents come from :mod:`mulligan.agents.testing`.
"""

from __future__ import annotations

import random

import torch

from mulligan.agents.tiny import TinyModelConfig, build_tiny_model
from mulligan.training.chat import tokenize_conversation
from mulligan.training.ppo import masked_mean

#: A smaller tiny model (about 0.1M parameters), so that RL tests take seconds.
SMALL = TinyModelConfig(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=512
)
#: Echo whose only target is "a", with partial credit: the policy must learn to answer "a" and stop.
ECHO_KWARGS = {"vocabulary": ["a"], "partial_credit": True}
#: Held-out Echo tasks of the learning tests.
HELD_OUT = list(range(10_000, 10_064))


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
        rows = [
            tokenize_conversation(
                tokenizer,
                [
                    {"role": "user", "content": f"Repeat exactly: {rng.choice(answers)}"},
                    {"role": "assistant", "content": rng.choice(answers)},
                ],
            )
            for _ in range(16)
        ]
        ids = torch.tensor([r.input_ids for r in rows])
        mask = torch.tensor([r.assistant_mask for r in rows])
        logprobs = torch.log_softmax(model(input_ids=ids).logits[:, :-1], -1).gather(-1, ids[:, 1:, None])
        loss = -masked_mean(logprobs.squeeze(-1), mask[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, tokenizer


def echo_success(model, tokenizer, seed: int = 123) -> float:
    """Success rate of ``model`` on :data:`HELD_OUT` Echo tasks (sampling at temperature 1, 4 tokens)."""
    from mulligan.agents.hf import HFAgent
    from mulligan.training.evaluation import evaluate

    was_training = model.training
    agent = HFAgent(model, tokenizer, temperature=1.0, max_new_tokens=4, seed=seed, batch_size=32)
    try:
        result = evaluate(
            agent, "Mulligan/Echo-v0", HELD_OUT, env_kwargs=ECHO_KWARGS, seed=seed, num_envs=32, progress=False
        )
    finally:
        model.train(was_training)
    return result.summary.success_rate


#: A reasoning-style ChatML template that drops the ``<think>`` part of earlier assistant turns, so
#: it does not render append-only (as Qwen3's).
DROPS_PAST_THINKING = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' and not loop.last %}{{ m['content'].split('</think>')[-1] }}"
    "{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
