"""SFT plumbing shared by NAT, RISE and sub-goal distillation (mulligan.training.sft)."""

from __future__ import annotations

import pytest

from mulligan.agents.testing import ScriptedAgent
from mulligan.agents.tools import tools_for_trajectory
from mulligan.envs.registration import env_tools
from mulligan.envs.tools import format_tool_call
from mulligan.training.chat import render
from mulligan.training.rollout import collect_episodes
from mulligan.training.sft import conversations_to_dataset


@pytest.fixture(scope="module")
def qwen_tokenizer():
    from trl.chat_template_utils import qwen2_5_chat_template

    from mulligan.agents.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = qwen2_5_chat_template
    return tokenizer


def _learned_text(tokenizer, row) -> str:
    return tokenizer.decode([t for t, m in zip(row["input_ids"], row["assistant_masks"], strict=True) if m])


def test_a_tools_mode_episode_is_trained_on_the_text_the_agent_saw(qwen_tokenizer):
    # A tools-mode episode (the agent called `calculate`, then `finish`) trained with its env's tools:
    # the training text is the agent's rendering (tool preamble with the schemas, calls as tool
    # calls, observations as tool results), and the loss falls on the two calls only.
    calls = [format_tool_call("calculate", {"expression": "1 + 1"}), format_tool_call("finish", {"answer": "2"})]
    [episode] = collect_episodes(
        "Mulligan/MathReAct-v0", ScriptedAgent(calls), 1, env_kwargs={"action_format": "tools"}, progress=False
    )
    tools = tools_for_trajectory(episode)
    assert tools == env_tools("Mulligan/MathReAct-v0")
    messages = episode.conversation()
    with_tools = conversations_to_dataset(qwen_tokenizer, [messages], None, tools=[tools])[0]
    text = qwen_tokenizer.decode(with_tools["input_ids"])
    assert text == render(qwen_tokenizer, messages, tools=tools)
    assert "<tools>" in text and '"name": "calculate"' in text and "<tool_response>" in text
    learned = _learned_text(qwen_tokenizer, with_tools)
    assert learned.count("<tool_call>") == 2 and '"name": "finish"' in learned and "<tools>" not in learned

    # Without tools (the old behaviour) the schemas are absent: a different, wrong training text.
    without = qwen_tokenizer.decode(conversations_to_dataset(qwen_tokenizer, [messages], None)[0]["input_ids"])
    assert "<tools>" not in without


def test_tools_must_match_the_conversations(qwen_tokenizer):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    with pytest.raises(ValueError, match="tools has 2 entries for 1 conversations"):
        conversations_to_dataset(qwen_tokenizer, [messages], None, tools=[None, None])
