"""Tool calls beside ReAct (mulligan.envs.tools, action_format="tools", mulligan.agents.tools)."""

from __future__ import annotations

import json
import time

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from mulligan.agents.tools import action_from_tool_calls, tool_conversation
from mulligan.envs.core import StepOutcome, TextSpace
from mulligan.envs.registration import env_tools
from mulligan.envs.tools import (
    SCIENCE_TOOLS,
    ToolCall,
    ToolCallError,
    ToolParameter,
    ToolSpec,
    format_tool_call,
    parse_tool_call,
    validate_tool_call,
)

#: The multi-step envs that run without a JVM (ScienceWorld's tools mode is in test_scienceworld.py).
TOOL_ENV_IDS = ["Mulligan/MathReAct-v0", "Mulligan/HotpotQA-v0", "Mulligan/StrategyQA-v0", "Mulligan/MiniScience-v0"]


# ------------------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    "text",
    [
        '{"name": "search", "arguments": {"query": "Paris"}}',
        '{"name": "search", "arguments": "{\\"query\\": \\"Paris\\"}"}',
        '{"name": "search", "parameters": {"query": "Paris"}}',
        '{"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{\\"query\\": \\"Paris\\"}"}}',
        '{"role": "assistant", "content": "hm", "tool_calls": [{"id": "c1", "type": "function", '
        '"function": {"name": "search", "arguments": "{\\"query\\": \\"Paris\\"}"}}]}',
        'I will search.\n<tool_call>\n{"name": "search", "arguments": {"query": "Paris"}}\n</tool_call>',
        '<tool_call>{"name": "search", "arguments": {"query": "Paris"}}',
        '```json\n{"name": "search", "arguments": {"query": "Paris"}}\n```',
        '[{"name": "search", "arguments": {"query": "Paris"}}]',
    ],
)
def test_every_accepted_form_reads_the_same_call(text):
    call = parse_tool_call(text)
    assert (call.name, call.arguments) == ("search", {"query": "Paris"})


def test_call_ids_content_and_extra_calls_are_kept():
    message = action_from_tool_calls(
        "thinking",
        [
            {"id": "call_a", "type": "function", "function": {"name": "search", "arguments": '{"query": "A"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "search", "arguments": '{"query": "B"}'}},
        ],
    )
    call = parse_tool_call(message)
    assert call == ToolCall("search", {"query": "A"}, "call_a", "thinking", 2)
    qwen = parse_tool_call('Let me look.<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{}')
    assert (qwen.content, qwen.num_calls, qwen.id) == ("Let me look.", 2, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("search[Paris]", "no tool call found"),
        ("", "no tool call found"),
        ("{not json", "not valid JSON"),
        ('{"arguments": {}}', '"name"'),
        ('{"name": "search", "arguments": [1]}', "JSON object"),
        ('{"name": "search", "arguments": "{bad"}', "not valid JSON"),
        ('{"tool_calls": []}', "no tool call"),
        ('{"tool_calls": 3}', "list"),
        ("[" * 100_000, "too deeply nested"),
        ('{"name": "a", "arguments": {"x": ' + "1" * 5000 + "}}", "number too long"),
        ("<tool_call>{oops}</tool_call>", "<tool_call> block"),
        ("[1]", "JSON object"),
    ],
)
def test_unreadable_actions_raise_tool_call_error_saying_why(text, message):
    with pytest.raises(ToolCallError, match=message):
        parse_tool_call(text)


def test_parsing_is_linear_in_the_length_of_the_text():
    for text in ["<tool_call>" * 200_000, "x" * 2_000_000, '{"name": "' + "a" * 2_000_000 + '"}']:
        start = time.perf_counter()
        with pytest.raises(ToolCallError):
            validate_tool_call(parse_tool_call(text), SCIENCE_TOOLS)
        assert time.perf_counter() - start < 1.0


SEARCH = ToolSpec("search", "Search.", (ToolParameter("query", "what"),))
SELECT = ToolSpec("select", "Pick.", (ToolParameter("number", "which", "integer"),), "{number}")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (ToolCall("jump", {}), "unknown tool 'jump'; the tools are: search, select"),
        (ToolCall("search", {}), "needs the argument 'query'"),
        (ToolCall("search", {"query": "x", "page": 2}), "unexpected: \\['page'\\]"),
        (ToolCall("search", {"query": 3}), "must be a string"),
        (ToolCall("search", {"query": "  "}), "must not be blank"),
        (ToolCall("search", {"query": "x" * 2001}), "more than 2000"),
        (ToolCall("select", {"number": True}), "must be an integer"),
        (ToolCall("select", {"number": "two"}), "must be an integer"),
    ],
)
def test_invalid_calls_are_refused_with_the_reason(call, message):
    with pytest.raises(ToolCallError, match=message):
        validate_tool_call(call, [SEARCH, SELECT])


def test_valid_calls_are_normalised():
    assert validate_tool_call(ToolCall("SEARCH", {"query": " Paris "}), [SEARCH]) == (SEARCH, {"query": "Paris"})
    spec, arguments = validate_tool_call(ToolCall("select", {"number": "2"}), [SELECT])
    assert arguments == {"number": 2} and spec.render_command(arguments) == "2"


def test_schemas_are_openai_function_tools():
    schema = SEARCH.schema()
    assert schema["type"] == "function"
    function = schema["function"]
    assert function["name"] == "search" and function["description"] == "Search."
    assert function["parameters"]["required"] == ["query"]
    assert function["parameters"]["properties"]["query"]["type"] == "string"
    assert function["parameters"]["additionalProperties"] is False
    with pytest.raises(ValueError, match="identifier"):
        ToolParameter("not a name", "x")
    with pytest.raises(ValueError, match="repeats"):
        ToolSpec("t", "x", (ToolParameter("a", "x"), ToolParameter("a", "y")))


def test_step_outcome_is_keyword_only():
    with pytest.raises(TypeError):
        StepOutcome("obs", 1.0, True)  # type: ignore[misc]
    assert StepOutcome(observation="obs", reward=1.0).reward == 1.0


# ------------------------------------------------------------------------------------------ envs
@pytest.mark.parametrize("env_id", TOOL_ENV_IDS)
def test_tools_mode_passes_check_env_and_lists_the_registered_tools(env_id):
    env = gymnasium.make(env_id, action_format="tools")
    check_env(env.unwrapped)
    assert env.unwrapped.tools == env_tools(env_id) != []
    _, info = env.reset(seed=0)
    assert info["tool_call_id"] == ""
    # React mode is unchanged: no tool_call_id in info, and the same tools are listed.
    react = gymnasium.make(env_id)
    assert "tool_call_id" not in react.reset(seed=0)[1]
    assert react.unwrapped.tools == env.unwrapped.tools


def test_envs_without_tools_refuse_tools_mode_and_unknown_formats():
    assert env_tools("Mulligan/Math-v0") == []
    with pytest.raises(ValueError, match="action_format must be one of"):
        gymnasium.make("Mulligan/HotpotQA-v0", action_format="json")
    with pytest.raises(ValueError, match="unknown env id"):
        env_tools("Mulligan/Nope-v0")


@pytest.mark.parametrize("env_id", TOOL_ENV_IDS)
@pytest.mark.parametrize(
    "action",
    [
        "",
        "search[Paris]",
        "Thought: x\nAction: finish[7]",
        '{"name": "no_such_tool", "arguments": {}}',
        '{"name": "finish", "arguments": {}}',
        '{"name": "finish", "arguments": {"answer": ["list"]}}',
        '{"name": "finish", "arguments": {"answer": "x", "extra": 1}}',
        "[" * 100_000,
        "<tool_call>" + "{" * 50_000,
        "é世界🙂\ud800" * 300,
        "x" * (2**21 + 1),
    ],
)
def test_invalid_tool_calls_cost_like_malformed_actions_and_never_raise(env_id, action):
    env = gymnasium.make(env_id, action_format="tools")
    react = gymnasium.make(env_id)
    env.reset(seed=3)
    react.reset(seed=3)
    observation, reward, terminated, truncated, info = env.step(action)
    # The react env's malformed action: what an invalid call is scored as.
    _, malformed_reward, malformed_terminated, _, _ = react.step("")
    assert (reward, terminated, truncated) == (malformed_reward, malformed_terminated, False)
    assert not info["success"]
    assert info["feedback"] and env.observation_space.contains(observation)
    assert observation == info["feedback"]
    if len(action) <= 2**21:
        assert "tool" in observation.lower()


def test_an_invalid_call_pays_the_format_reward():
    env = gymnasium.make("Mulligan/MathReAct-v0", action_format="tools", format_reward=-0.5)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step("The answer is 7")
    assert (reward, terminated) == (-0.5, False)
    assert info["action_type"] == "invalid" and "no tool call found" in info["feedback"]


def test_math_react_episode_with_tool_calls():
    env = gymnasium.make("Mulligan/MathReAct-v0", action_format="tools")
    observation, _ = env.reset(seed=0)
    assert "calculate(expression)" in observation and "Action:" not in observation
    observation, reward, terminated, _, info = env.step(format_tool_call("calculate", {"expression": "(3 + 4) * 12"}))
    assert (observation, reward, terminated) == ("84", 0.0, False)
    assert info["tool_call_id"] == "call_0" and info["action_type"] == "calculate"
    gold = env.unwrapped.task["final_answer"]
    call = {"id": "abc", "type": "function", "function": {"name": "finish", "arguments": json.dumps({"answer": gold})}}
    _, reward, terminated, _, info = env.step(action_from_tool_calls("", [call]))
    assert (reward, terminated, info["success"], info["tool_call_id"]) == (1.0, True, True, "abc")


@pytest.mark.parametrize("env_id", ["Mulligan/HotpotQA-v0", "Mulligan/StrategyQA-v0"])
def test_qa_episode_with_tool_calls_equals_the_react_episode(env_id):
    tools = gymnasium.make(env_id, action_format="tools")
    react = gymnasium.make(env_id)
    tools.reset(seed=5)
    react.reset(seed=5)
    task = tools.unwrapped.task
    title = task["context"][0][0]
    word = task["context"][0][1][0].split()[0]
    steps = [("search", "query", title), ("lookup", "keyword", word), ("finish", "answer", task["answer"])]
    for step, (verb, name, argument) in enumerate(steps):
        qwen_style = f"Thought.\n<tool_call>\n{format_tool_call(verb, {name: argument})}\n</tool_call>"
        t = tools.step(qwen_style)
        r = react.step(f"Thought: x\nAction: {verb}[{argument}]")
        assert t[:4] == r[:4]
        assert t[4]["action_type"] == verb and t[4]["tool_call_id"] == f"call_{step}"
    assert t[4]["success"] and t[2]


def test_strategyqa_tools_mode_asks_for_yes_or_no_in_tool_terms():
    env = gymnasium.make("Mulligan/StrategyQA-v0", action_format="tools")
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(format_tool_call("finish", {"answer": "maybe"}))
    assert (reward, terminated) == (0.0, False)
    assert "call finish with the answer Yes or No" in info["feedback"]


def test_miniscience_gold_path_as_tool_calls():
    env = gymnasium.make("Mulligan/MiniScience-v0", action_format="tools", task="boil")
    env.reset(seed=0)
    structured = env.step(format_tool_call("look_around", {}))
    assert structured[0].startswith("This room is called")
    total = 0.0
    for action in env.unwrapped.gold_actions():
        _, reward, terminated, truncated, info = env.step(format_tool_call("command", {"text": action}))
        total += reward
        if terminated or truncated:
            break
    assert info["success"] and total == pytest.approx(1.0)


def test_science_tools_render_scienceworld_commands():
    by_name = {spec.name: spec for spec in SCIENCE_TOOLS}
    assert by_name["move"].render_command({"object": "metal pot", "destination": "stove"}) == "move metal pot to stove"
    assert by_name["focus_on"].render_command({"object": "water"}) == "focus on water"
    assert by_name["look_around"].render_command({}) == "look around"
    env = gymnasium.make("Mulligan/MiniScience-v0", action_format="tools", task="boil")
    react = gymnasium.make("Mulligan/MiniScience-v0", task="boil")
    env.reset(seed=1)
    react.reset(seed=1)
    for call, command in [
        (("open", {"target": "door to kitchen"}), "open door to kitchen"),
        (("go_to", {"location": "kitchen"}), "go to kitchen"),
        (("inventory", {}), "inventory"),
    ]:
        assert env.step(format_tool_call(*call))[:4] == react.step(command)[:4]


def test_only_the_first_of_several_calls_runs():
    env = gymnasium.make("Mulligan/MathReAct-v0", action_format="tools")
    env.reset(seed=0)
    calls = [
        {"id": "a", "type": "function", "function": {"name": "calculate", "arguments": '{"expression": "1+1"}'}},
        {"id": "b", "type": "function", "function": {"name": "finish", "arguments": '{"answer": "2"}'}},
    ]
    observation, _, terminated, _, info = env.step(action_from_tool_calls("", calls))
    assert (observation, terminated, info["tool_call_id"]) == ("2", False, "a")
    assert "Only the first of 2 tool calls was run" in info["feedback"]


# ------------------------------------------------------------------------------------------ agents
def test_tool_conversation_pairs_calls_with_their_results():
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Question?"},
        {"role": "assistant", "content": 'Hm.<tool_call>{"name": "search", "arguments": {"query": "A"}}</tool_call>'},
        {"role": "user", "content": "Page A"},
        {"role": "assistant", "content": "I think it is B"},
        {"role": "user", "content": "Invalid tool call: no tool call found."},
        {"role": "assistant", "content": format_tool_call("finish", {"answer": "B"}, "xyz")},
    ]
    out = tool_conversation(messages)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "tool", "assistant", "user", "assistant"]
    assert out[2]["content"] == "Hm."
    assert out[2]["tool_calls"] == [
        {"id": "call_0", "type": "function", "function": {"name": "search", "arguments": '{"query": "A"}'}}
    ]
    assert out[3] == {"role": "tool", "tool_call_id": "call_0", "content": "Page A"}
    assert out[4] == messages[4] and out[5] == messages[5]
    assert out[6]["tool_calls"][0]["id"] == "xyz"
    assert tool_conversation(messages, arguments="dict")[2]["tool_calls"][0]["function"]["arguments"] == {"query": "A"}
    assert messages[2]["role"] == "assistant" and "tool_calls" not in messages[2]  # input untouched


def test_tool_call_ids_in_the_conversation_match_the_envs():
    env = gymnasium.make("Mulligan/HotpotQA-v0", action_format="tools")
    observation, _ = env.reset(seed=0)
    messages = [{"role": "user", "content": observation}]
    ids = []
    for action in ["no call", format_tool_call("search", {"query": "x"}), format_tool_call("lookup", {"keyword": "y"})]:
        observation, *_, info = env.step(action)
        messages += [{"role": "assistant", "content": action}, {"role": "user", "content": observation}]
        ids.append(info["tool_call_id"])
    tool_ids = [m["tool_call_id"] for m in tool_conversation(messages) if m["role"] == "tool"]
    assert ids == ["", *tool_ids] == ["", "call_1", "call_2"]


def test_text_space_accepts_tool_call_json():
    assert TextSpace().contains(format_tool_call("finish", {"answer": "é"}))


# ------------------------------------------------------------------------------------------ HF chat templates
@pytest.fixture(scope="module")
def qwen_tokenizer():
    """The tiny byte tokenizer with TRL's copy of the Qwen2.5 template (tool calls, tool messages)."""
    from trl.chat_template_utils import add_response_schema, qwen2_5_chat_template

    from mulligan.agents.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = qwen2_5_chat_template
    return add_response_schema(tokenizer)


def _tools_episode():
    env = gymnasium.make("Mulligan/MathReAct-v0", action_format="tools")
    observation, _ = env.reset(seed=0)
    call = 'Let me compute.\n<tool_call>\n{"name": "calculate", "arguments": {"expression": "1+1"}}\n</tool_call>'
    result, *_ = env.step(call)
    messages = [
        {"role": "user", "content": observation},
        {"role": "assistant", "content": call},
        {"role": "user", "content": result},
        {"role": "assistant", "content": format_tool_call("finish", {"answer": "2"})},
    ]
    return env.unwrapped.tools, messages


def test_chat_renders_tools_and_masks_tool_results_like_env_text(qwen_tokenizer):
    from mulligan.training.chat import is_append_only, render, tokenize_conversation, tokenize_turns

    tools, messages = _tools_episode()
    text = render(qwen_tokenizer, messages, tools=tools)
    assert '"name": "calculate"' in text.split("<|im_end|>")[0]  # the schemas are in the system turn
    assert "<tool_response>\n2\n</tool_response>" in text  # the result is a tool message
    assert is_append_only(qwen_tokenizer, messages, tools=tools)
    episode = tokenize_conversation(qwen_tokenizer, messages, tools=tools)
    learned = qwen_tokenizer.decode([t for t, m in zip(episode.input_ids, episode.assistant_mask, strict=True) if m])
    assert learned == (
        'Let me compute.\n<tool_call>\n{"name": "calculate", "arguments": {"expression": "1+1"}}\n</tool_call>'
        '<|im_end|><tool_call>\n{"name": "finish", "arguments": {"answer": "2"}}\n</tool_call><|im_end|>'
    )
    # Tool results, the tools' schemas and the question are context, never learned.
    context = qwen_tokenizer.decode(
        [t for t, m in zip(episode.input_ids, episode.assistant_mask, strict=True) if not m]
    )
    assert "<tool_response>\n2\n</tool_response>" in context and '"name": "finish"' in context
    # The per-turn samples use the same rendering.
    assert tokenize_turns(qwen_tokenizer, messages, tools=tools)[1].text == episode.text
    # Without tools the same messages render as text (no schemas, no tool_response).
    assert "<tool_response>" not in render(qwen_tokenizer, messages)


def test_hf_agent_renders_the_envs_tools_and_parses_its_calls(qwen_tokenizer):
    from mulligan.agents.base import AgentInput
    from mulligan.agents.hf import HFAgent
    from mulligan.agents.tiny import TinyModelConfig, build_tiny_model
    from mulligan.agents.tools import parsed_tool_action
    from mulligan.training.chat import render

    model, _ = build_tiny_model(TinyModelConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2))
    tools, messages = _tools_episode()
    agent = HFAgent(model, qwen_tokenizer, temperature=0.0, max_new_tokens=4)
    tools_input = AgentInput(messages=messages[:3], info={"tool_call_id": "call_0"}, env_id="Mulligan/MathReAct-v0")
    assert agent.render_prompt(tools_input) == render(
        qwen_tokenizer, messages[:3], add_generation_prompt=True, tools=tools
    )
    text_input = AgentInput(messages=messages[:1], info={}, env_id="Mulligan/MathReAct-v0")
    assert agent.render_prompt(text_input) == render(qwen_tokenizer, messages[:1], add_generation_prompt=True)
    assert HFAgent(model, qwen_tokenizer, tools=tools[:1]).tools_for(text_input) == tools[:1]
    # The response template turns a generated call into the assistant message the env reads.
    prompt = agent.render_prompt(tools_input)
    action = parsed_tool_action(qwen_tokenizer, messages[1]["content"], prompt)
    assert json.loads(action)["tool_calls"][0]["function"] == {
        "name": "calculate",
        "arguments": '{"expression": "1+1"}',
    }
    assert parse_tool_call(action) == parse_tool_call(messages[1]["content"])
    assert parsed_tool_action(qwen_tokenizer, "no call here", prompt) == "no call here"


def test_tools_for_trajectory_reads_the_mode_from_the_turns():
    from mulligan.agents.testing import ScriptedAgent
    from mulligan.agents.tools import tools_for_trajectory
    from mulligan.training.rollout import collect_episodes

    agent = ScriptedAgent([format_tool_call("finish", {"answer": "1"})])
    [tools_mode] = collect_episodes(
        "Mulligan/MathReAct-v0", agent, 1, env_kwargs={"action_format": "tools"}, progress=False, num_envs=1
    )
    [text_mode] = collect_episodes("Mulligan/MathReAct-v0", agent, 1, progress=False, num_envs=1)
    assert tools_for_trajectory(tools_mode) == env_tools("Mulligan/MathReAct-v0")
    assert tools_for_trajectory(text_mode) is None


def test_a_tool_calling_episode_with_hf_agent():
    # A tiny model trained to call finish(answer="Yes") plays StrategyQA in tools mode through
    # the Qwen-style template: task 0's answer is Yes, task 1's No.
    from tool_calling_model import ENV_ID, ENV_KWARGS, TARGET_CALL, TASK_INDICES, cached_tool_calling_model

    from mulligan.agents.hf import HFAgent
    from mulligan.training.rollout import collect_episodes

    agent = HFAgent(str(cached_tool_calling_model()), temperature=0.0, max_new_tokens=80)
    trajectories = collect_episodes(
        ENV_ID, agent, 2, env_kwargs=ENV_KWARGS, task_indices=list(TASK_INDICES), progress=False, num_envs=2
    )
    assert [t.success for t in trajectories] == [True, False]
    for trajectory in trajectories:
        [turn] = trajectory.turns
        message = json.loads(turn.action)  # parsed by the response template into tool_calls
        function = message["tool_calls"][0]["function"]
        assert (function["name"], json.loads(function["arguments"])) == (TARGET_CALL["name"], TARGET_CALL["arguments"])
        assert turn.info["tool_call_id"] == "call_0" and trajectory.terminated


@pytest.mark.parametrize(
    "env_id", [*TOOL_ENV_IDS, pytest.param("Mulligan/ScienceWorld-v0", marks=pytest.mark.scienceworld)]
)
def test_hf_agent_plays_every_multi_step_env_in_tools_mode(env_id, qwen_tokenizer):
    # An untrained model writes no valid call; the episode still runs with the env's tools in every
    # prompt, each reply scored as an invalid call (the trained model's episodes are above).
    from mulligan.agents.base import AgentInput
    from mulligan.agents.hf import HFAgent
    from mulligan.agents.tiny import TinyModelConfig, build_tiny_model
    from mulligan.training.rollout import collect_episodes

    # Byte tokens: MiniScience's 19 tool schemas alone are about 6,000 positions.
    config = TinyModelConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16384)
    model, _ = build_tiny_model(config)
    agent = HFAgent(model, qwen_tokenizer, temperature=1.0, max_new_tokens=6, seed=0)
    [trajectory] = collect_episodes(
        env_id, agent, 1, env_kwargs={"action_format": "tools"}, max_turns=2, progress=False, num_envs=1
    )
    assert len(trajectory.turns) == 2 and trajectory.truncated
    names = [tool["function"]["name"] for tool in env_tools(env_id)]
    prompt = agent.render_prompt(
        AgentInput(messages=trajectory.messages[:3], info=trajectory.turns[0].info, env_id=env_id)
    )
    assert all(f'"name": "{name}"' in prompt for name in names)
    assert all("tool_call_id" in turn.info and turn.info["feedback"] for turn in trajectory.turns)


def test_a_tools_mode_trajectory_trains_on_the_prompt_the_agent_sampled(qwen_tokenizer):
    """Trajectory.tokenize / sampled_tokens render the env's tools, as HFAgent did when it sampled."""
    from mulligan.agents.base import AgentInput
    from mulligan.agents.hf import HFAgent
    from mulligan.agents.tiny import TinyModelConfig, build_tiny_model
    from mulligan.training.rollout import collect_episodes

    config = TinyModelConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=8192)
    model, _ = build_tiny_model(config)
    agent = HFAgent(model, qwen_tokenizer, temperature=1.0, max_new_tokens=4, seed=0)
    [trajectory] = collect_episodes(
        "Mulligan/MathReAct-v0", agent, 1, env_kwargs={"action_format": "tools"}, max_turns=2, progress=False
    )
    sampled_prompt = agent.render_prompt(
        AgentInput(messages=trajectory.messages[:3], info=trajectory.turns[0].info, env_id="Mulligan/MathReAct-v0")
    )
    assert '"name": "calculate"' in sampled_prompt
    assert trajectory.sampled_tokens(qwen_tokenizer, 1).text.startswith(sampled_prompt)
    assert '"name": "calculate"' in trajectory.tokenize(qwen_tokenizer).text
