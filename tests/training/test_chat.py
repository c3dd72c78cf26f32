"""The one renderer: exact masks on known conversations, one plain format, non-append-only templates,
and the proof that the agent samples from exactly the prompt the trainer rebuilds."""

from __future__ import annotations

import pytest

from mulligan.agents.base import Agent
from mulligan.agents.context import LastAttempts
from mulligan.agents.hf import HFAgent
from mulligan.agents.tiny import TinyModelConfig, build_tiny_model, build_tiny_tokenizer
from mulligan.training import chat
from mulligan.training.chat import render, tokenize_conversation, tokenize_turns
from mulligan.training.rollout import collect_episodes

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": "The answer is incorrect. Please try again."},
    {"role": "assistant", "content": "4 🙂"},
]

#: A reasoning-model template: earlier assistant turns lose their <think> part, the last keeps it.
STRIPPING_TEMPLATE = (
    "{% for m in messages %}"
    "{% set content = m['content'] %}"
    "{% if m['role'] == 'assistant' and not loop.last %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + content + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def learned_text(tokenizer, episode) -> str:
    return tokenizer.decode([t for t, m in zip(episode.input_ids, episode.assistant_mask, strict=True) if m])


def test_mask_covers_exactly_the_assistant_contents_and_eos(tokenizer):
    episode = tokenize_conversation(tokenizer, CONVERSATION)
    assert learned_text(tokenizer, episode) == "5<|im_end|>4 🙂<|im_end|>"
    # The ids are those of the whole rendering: masking never changes what the model is fed.
    assert episode.input_ids == tokenizer(episode.text, add_special_tokens=False)["input_ids"]
    assert episode.text == render(tokenizer, CONVERSATION)
    assert len(episode.input_ids) == len(episode.assistant_mask) == len(episode.turn_index)


def test_env_and_header_tokens_are_never_learned(tokenizer):
    episode = tokenize_conversation(tokenizer, CONVERSATION)
    env_text = tokenizer.decode([t for t, m in zip(episode.input_ids, episode.assistant_mask, strict=True) if not m])
    assert "What is 2+2?" in env_text and "Please try again." in env_text
    assert env_text.count("<|im_start|>assistant\n") == 2
    for token, turn, mask in zip(episode.input_ids, episode.turn_index, episode.assistant_mask, strict=True):
        if CONVERSATION[turn]["role"] != "assistant":
            assert mask == 0, tokenizer.decode([token])


def test_learn_turns_selects_the_last_turn_only(tokenizer):
    # RISE learns the last turn of each sample; earlier turns are context (Sec. 4.2).
    episode = tokenize_conversation(tokenizer, CONVERSATION, learn_turns=[4])
    assert learned_text(tokenizer, episode) == "4 🙂<|im_end|>"


def test_one_plain_format_for_tokenizers_without_a_chat_template():
    plain = build_tiny_tokenizer(chat_template=False)
    assert not chat.has_chat_template(plain)
    assert render(plain, CONVERSATION[1:3], add_generation_prompt=False) == (
        "User: What is 2+2?\nAssistant: 5<|im_end|>\n"
    )
    assert render(plain, CONVERSATION[1:2], add_generation_prompt=True) == "User: What is 2+2?\nAssistant: "
    episode = tokenize_conversation(plain, CONVERSATION)
    assert episode.text == render(plain, CONVERSATION)
    # The assistant block ends with EOS, as a template's turn does: the model learns to stop there.
    assert learned_text(plain, episode) == "5<|im_end|>4 🙂<|im_end|>"


def test_a_template_that_strips_earlier_reasoning_does_not_raise():
    reasoning = build_tiny_tokenizer()
    reasoning.chat_template = STRIPPING_TEMPLATE
    messages = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "<think>hmm</think>5"},
        {"role": "user", "content": "Try again."},
        {"role": "assistant", "content": "<think>again</think>4"},
    ]
    assert not chat.is_append_only(reasoning, messages)
    # Fallback: each turn is its own sample, the prompt it was sampled from plus its completion.
    first, second = tokenize_turns(reasoning, messages)
    assert first.text == render(reasoning, messages[:1], add_generation_prompt=True) + "<think>hmm</think>5<|im_end|>\n"
    assert learned_text(reasoning, first) == "<think>hmm</think>5<|im_end|>"
    assert second.text.startswith(render(reasoning, messages[:3], add_generation_prompt=True))
    assert "<think>hmm" not in second.text  # the earlier turn as the template shows it
    assert learned_text(reasoning, second) == "<think>again</think>4<|im_end|>"
    with pytest.warns(UserWarning, match="tokenize_turns"):
        episode = tokenize_conversation(reasoning, messages)
    assert episode.input_ids == second.input_ids and episode.assistant_mask == second.assistant_mask
    with pytest.raises(ValueError, match="empty"):
        tokenize_conversation(reasoning, [])
    with pytest.raises(ValueError, match="assistant"):
        chat.tokenize_turn(reasoning, messages, 0)
    with pytest.raises(ValueError, match="not sampled by a model"):
        chat.tokenize_sampled_turn(reasoning, messages[:1], [])


class RecordingHFAgent(HFAgent):
    """HFAgent that keeps every prompt it sampled from, in call order per env."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prompts = {}

    def act(self, inputs):
        actions = super().act(inputs)
        for item, action in zip(inputs, actions, strict=True):
            self.prompts.setdefault(item.messages[0]["content"], []).append(action.prompt)
        return actions


@pytest.mark.parametrize("chat_template", [True, False], ids=["chat-template", "plain"])
def test_the_agent_samples_from_exactly_what_the_trainer_renders(chat_template, one_torch_thread):
    small = TinyModelConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    model, tokenizer = build_tiny_model(small, chat_template=chat_template)
    agent = RecordingHFAgent(
        model, tokenizer, temperature=1.0, max_new_tokens=6, seed=0, system_prompt="Be exact.", context=LastAttempts(1)
    )
    trajectories = collect_episodes("Mulligan/Echo-v0", agent, 2, env_kwargs={"max_attempts": 4}, progress=False)
    for trajectory in trajectories:
        prompts = agent.prompts[trajectory.messages[0]["content"]]
        assert len(prompts) == len(trajectory.turns) == 4
        assert not trajectory.sees_full_history  # the window dropped attempts
        for t, turn in enumerate(trajectory.turns):
            rebuilt = render(tokenizer, trajectory.prompt_messages(t), add_generation_prompt=True)
            assert rebuilt == prompts[t]
            messages = trajectory.training_messages(t)
            sample = chat.tokenize_turn(tokenizer, messages, len(messages) - 1)
            prompt_ids = chat.encode(tokenizer, prompts[t])
            assert sample.input_ids[: len(prompt_ids)] == prompt_ids
            assert sum(sample.assistant_mask) > 0 and not any(sample.assistant_mask[: len(prompt_ids)])
            assert turn.completion_ids and len(turn.logprobs) == len(turn.completion_ids)
            # Exact tokens: the sampled prompt's ids, then the recorded completion, learned one to one.
            exact = trajectory.sampled_tokens(tokenizer, t)
            assert exact.input_ids == prompt_ids + turn.completion_ids
            assert sum(exact.assistant_mask) == len(turn.logprobs)
    assert isinstance(agent, Agent)


# ----------------------------------------------------------------------------------- prefilled answers
def test_a_prefilled_answer_is_rendered_whole_and_only_its_continuation_is_learned():
    tokenizer = build_tiny_tokenizer()
    messages = [
        {"role": "user", "content": "Write 5 words."},
        {"role": "assistant", "content": "- Output: The cat sat on it.", "prefill": "- Output: The cat"},
    ]
    episode = tokenize_conversation(tokenizer, messages)
    assert (
        episode.text
        == "<|im_start|>user\nWrite 5 words.<|im_end|>\n<|im_start|>assistant\n- Output: The cat sat on it.<|im_end|>\n"
    )
    learned = [t for t, m in zip(episode.input_ids, episode.assistant_mask, strict=True) if m]
    assert tokenizer.decode(learned) == " sat on it.<|im_end|>"  # the primer is context
    (turn,) = tokenize_turns(tokenizer, messages)
    assert (
        turn.input_ids == episode.input_ids[: len(turn.input_ids)]
        and turn.assistant_mask == episode.assistant_mask[: len(turn.input_ids)]
    )
    without = tokenize_conversation(tokenizer, [messages[0], {"role": "assistant", "content": messages[1]["content"]}])
    assert sum(without.assistant_mask) == sum(episode.assistant_mask) + len("- Output: The cat")  # byte tokens


def test_a_prefilled_turn_trains_on_exactly_the_prompt_the_agent_sampled_from():
    from mulligan.agents.base import AgentInput
    from mulligan.training.trajectory import Trajectory, Turn

    model, tokenizer = build_tiny_model(TinyModelConfig(hidden_size=32, num_hidden_layers=1, intermediate_size=64))
    agent = HFAgent(model, tokenizer, temperature=1.0, seed=0, max_new_tokens=6, prefill_response=True)
    messages = [{"role": "user", "content": "Finish: The cat"}]
    action = agent.act([AgentInput(messages=messages, info={"response_prefix": "- Output: The cat"})])[0]
    # The turn as the rollout records it (the action's prefill on the Turn).
    trajectory = Trajectory(
        env_id="Mulligan/Constraints-v0",
        task_id="c",
        task={},
        messages=[*messages, {"role": "assistant", "content": action.text}],
        turns=[
            Turn(
                "Finish: The cat", action.text, 0.0, {}, action.completion_ids, action.logprobs, prefill=action.prefill
            )
        ],
        success=False,
        score=0.0,
        episode_return=0.0,
        terminated=True,
        truncated=False,
    )
    sampled = trajectory.sampled_tokens(tokenizer, 0)
    assert sampled.input_ids == action.prompt_ids + action.completion_ids
    assert sampled.assistant_mask == [0] * len(action.prompt_ids) + [1] * len(action.completion_ids)
    (sample,) = trajectory.training_samples()
    assert sample[-1]["content"] == "- Output: The cat" + action.text and sample[-1]["prefill"] == "- Output: The cat"
