"""Tool calls on the agent side: the tools an input's env offers, and its conversation as tool messages.

An env in ``action_format="tools"`` (:mod:`mulligan.envs.tools`) keeps Gymnasium's text spaces:
the rollout records each action as an assistant message whose content is the tool call's text and
each observation as a user message. A model that was trained for function calling expects
another shape: an assistant message with ``tool_calls`` and a ``tool`` message with the result.
:func:`tool_conversation` rewrites the one into the other, deterministically, so agents (what a
model is shown) and trainers (what a model learns from) see the same messages:

* an assistant message whose content holds a tool call (any form
  :func:`~mulligan.envs.tools.parse_tool_call` reads) becomes
  ``{"role": "assistant", "content": <thought or "">, "tool_calls": [<the first call>]}``, the
  call with its own id or ``"call_<k>"`` (``k``: assistant messages before it, the env's step);
* the user message after it (the env's observation of the call) becomes
  ``{"role": "tool", "tool_call_id": <that id>, "content": <observation>}``;
* everything else is unchanged (an assistant message without a tool call, the env's answer to it,
  system and first user messages).

Which tools an input's env offers: :func:`tools_for_input` reads them from the env's registration
when the input's ``info`` comes from an env in tools mode (its ``info`` has ``tool_call_id``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mulligan.envs.tools import ToolCallError, default_call_id, parse_tool_call

Message = dict[str, Any]


def is_tools_input(info: Mapping[str, Any] | None) -> bool:
    """Whether an env ``info`` comes from an env in ``action_format="tools"`` (it has ``tool_call_id``)."""
    return info is not None and "tool_call_id" in info


def tools_for_input(agent_input: Any) -> list[dict[str, Any]] | None:
    """The tool schemas of an input's env when that env reads tool calls, else ``None``.

    Args:
        agent_input: An :class:`~mulligan.agents.base.AgentInput` (its ``info`` and ``env_id``).

    Raises:
        ValueError: if the env is in tools mode but ``env_id`` is not a registered ``Mulligan/*``
            id (the agent then needs ``tools=`` explicitly).
    """
    if not is_tools_input(agent_input.info):
        return None
    from mulligan.envs.registration import env_tools

    if agent_input.env_id is None:
        raise ValueError("an env in tools mode gave no env_id: pass the agent tools= (env.unwrapped.tools)")
    return env_tools(agent_input.env_id)


def tool_conversation(messages: Sequence[Mapping[str, Any]], *, arguments: str = "json") -> list[Message]:
    """A tools-mode conversation of text messages as OpenAI tool messages (see the module docstring).

    Args:
        messages: The conversation (``system``/``user``/``assistant`` messages with ``str`` content).
        arguments: ``"json"``: a call's ``arguments`` as a JSON string (OpenAI's API);
            ``"dict"``: as an object (what Hugging Face chat templates expect).

    Returns:
        New message dicts; the input is not modified.
    """
    if arguments not in ("json", "dict"):
        raise ValueError(f"arguments must be 'json' or 'dict', got {arguments!r}")
    out: list[Message] = []
    pending: str | None = None
    step = 0
    for message in messages:
        role = message.get("role")
        if role == "assistant":
            pending = None
            try:
                call = parse_tool_call(message.get("content") or "")
            except ToolCallError:
                out.append(dict(message))
                step += 1
                continue
            call_id = call.id or default_call_id(step)
            step += 1
            out.append(
                {
                    "role": "assistant",
                    "content": call.content,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {
                                "name": call.name,
                                "arguments": json.dumps(call.arguments, ensure_ascii=False)
                                if arguments == "json"
                                else dict(call.arguments),
                            },
                        }
                    ],
                }
            )
            pending = call_id
        elif role == "user" and pending is not None:
            out.append({"role": "tool", "tool_call_id": pending, "content": message.get("content", "")})
            pending = None
        else:
            out.append(dict(message))
            pending = None
    return out


def action_from_tool_calls(content: str | None, tool_calls: Sequence[Mapping[str, Any]]) -> str:
    """The action text of a chat reply with ``tool_calls``: the assistant message as JSON.

    The env reads it back with :func:`~mulligan.envs.tools.parse_tool_call` (and runs the first
    call); :func:`tool_conversation` turns it into the same assistant message again.
    """
    message = {"role": "assistant", "content": content or "", "tool_calls": [dict(call) for call in tool_calls]}
    return json.dumps(message, ensure_ascii=False)


def tools_for_trajectory(trajectory: Any) -> list[dict[str, Any]] | None:
    """The tool schemas a trajectory's model was shown: its env's, when the env was in tools mode.

    What trainers pass as ``tools=`` to :mod:`mulligan.training.chat` so that a tools-mode episode is
    rendered for training exactly as the agent rendered it (``None`` for text-mode episodes).

    Args:
        trajectory: A :class:`~mulligan.training.trajectory.Trajectory` (its ``env_id`` and turns' ``info``).
    """
    if not any(is_tools_input(turn.info) for turn in trajectory.turns):
        return None
    from mulligan.envs.registration import env_tools

    return env_tools(trajectory.env_id)


def parsed_tool_action(tokenizer: Any, text: str, prompt: str = "") -> str:
    """A model's reply as an env action: its tool calls, parsed by the tokenizer's response template.

    Args:
        tokenizer: The model's tokenizer.
        text: The generated reply (without the end-of-turn token).
        prompt: The rendered prompt it was generated from (``parse_response``'s ``prefix``: a
            template may open the assistant turn itself).

    Templates that define a tool-call format and have a response template
    (``tokenizer.parse_response``, transformers >= 5.13; TRL's ``add_response_schema`` sets one for
    known templates) are parsed into calls, which become the assistant message as JSON
    (:func:`action_from_tool_calls`), whatever the template's own syntax. Otherwise, or when the
    reply holds no call or does not parse, the text is returned unchanged: the env reads the
    common forms itself (:func:`~mulligan.envs.tools.parse_tool_call`) and scores anything else as
    an invalid call.
    """
    parse = getattr(tokenizer, "parse_response", None)
    if parse is None or (
        getattr(tokenizer, "response_template", None) is None and getattr(tokenizer, "response_schema", None) is None
    ):
        return text
    try:
        message = parse(text, prefix=prompt)
    except Exception:  # a reply the template's parser cannot read is the model's text, not an error
        return text
    calls = message.get("tool_calls") if isinstance(message, Mapping) else None
    if not calls or not isinstance(calls, list):
        return text
    normalized = []
    for call in calls:
        function = call.get("function", call) if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            return text
        arguments = function.get("arguments", {})
        normalized.append(
            {
                "type": "function",
                "function": {
                    "name": function["name"],
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False),
                },
            }
        )
    content = message.get("content")
    return action_from_tool_calls(content if isinstance(content, str) else "", normalized)
