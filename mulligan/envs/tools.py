"""Tool calls as actions: the tool schemas of multi-step envs and the parsing of a model's tool call.

Chat models trained for function calling (OpenAI's API, Qwen, Llama, Mistral templates) act by
calling tools rather than by writing a text grammar. Every multi-step env (MathReAct, HotpotQA,
StrategyQA, ScienceWorld, MiniScience) takes ``action_format="tools"``: it then lists its actions
as tools (``env.unwrapped.tools``, OpenAI's function-tool format with JSON Schema parameters) and
reads each action as one tool call. The default, ``action_format="react"``, is the env's text
grammar, unchanged.

An action in tools mode is a ``str`` (the action space stays text) holding one tool call in any of
the forms a model or a client produces (:func:`parse_tool_call`):

* a call as JSON: ``{"name": "search", "arguments": {"query": "Paris"}}`` (``arguments`` may be
  an object or a JSON string; ``"parameters"`` is read as ``"arguments"``, as Llama 3 writes it;
  an optional ``"id"`` names the call);
* an OpenAI tool call, ``{"id": "call_1", "type": "function", "function": {"name": ..., "arguments": "..."}}``;
* an assistant message, ``{"role": "assistant", "content": ..., "tool_calls": [<call>, ...]}``,
  which is what :class:`~mulligan.agents.openai_chat.OpenAIChatAgent` sends;
* text with a ``<tool_call>{...}</tool_call>`` block, as Qwen-style chat templates emit (text
  before it is the model's thought; a missing closing tag at the end of the text is tolerated).

Only the first call of an action runs (an env step is one action); ``feedback`` says when others
were ignored. The observation of a call is its tool result: the ``str`` observation is the result
text, and ``info["tool_call_id"]`` names the call it answers (the call's own ``id``, or
``"call_<step>"`` when it had none, ``<step>`` counting the episode's steps from 0; ``""`` after
reset and after an action that held no tool call). A tools-mode conversation of user/assistant
text messages becomes OpenAI tool messages with :func:`mulligan.agents.tools.tool_conversation`.

A call that names no tool of the env, misses an argument, or has one of the wrong type is
invalid: it is scored as the env scores a malformed action, its observation and ``feedback`` say
what was wrong, and it never raises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

#: The values of every multi-step env's ``action_format`` argument.
ACTION_FORMATS = ("react", "tools")
#: Longest string argument accepted, in characters (the ReAct grammar's argument cap).
DEFAULT_MAX_ARGUMENT_CHARS = 2000

_TOOL_CALL_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_CODE_FENCE = re.compile(r"\A```(?:json)?\s*(.*?)\s*```\Z", re.DOTALL)
_PARAMETER_TYPES = {"string": str, "integer": int}


def check_action_format(action_format: Any) -> str:
    """Validate an env's ``action_format`` argument (``"react"`` or ``"tools"``)."""
    if action_format not in ACTION_FORMATS:
        raise ValueError(f"action_format must be one of {ACTION_FORMATS}, got {action_format!r}")
    return action_format


@dataclass(frozen=True)
class ToolParameter:
    """One (required) parameter of a tool.

    Attributes:
        name: The argument's name in the call.
        description: What the model should put there.
        type: ``"string"`` or ``"integer"`` (a JSON Schema type).
        max_length: Longest string accepted (strings only).
    """

    name: str
    description: str
    type: str = "string"
    max_length: int = DEFAULT_MAX_ARGUMENT_CHARS

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_]\w*", self.name):
            raise ValueError(f"a parameter name must be an identifier, got {self.name!r}")
        if self.type not in _PARAMETER_TYPES:
            raise ValueError(f"parameter type must be one of {sorted(_PARAMETER_TYPES)}, got {self.type!r}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be positive, got {self.max_length}")


@dataclass(frozen=True)
class ToolSpec:
    """One tool of an env: its schema, and (for command envs) the text action it stands for.

    Attributes:
        name: The tool's name (the ReAct verb for ReAct envs).
        description: What the tool does, shown to the model.
        parameters: The tool's parameters, all required.
        command: For envs whose native actions are text commands (ScienceWorld, MiniScience): the
            command template, filled with the arguments (``"go to {location}"``). ``None`` for envs
            that dispatch tool calls themselves.
    """

    name: str
    description: str
    parameters: tuple[ToolParameter, ...] = ()
    command: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_][\w-]*", self.name):
            raise ValueError(f"a tool name must be a word, got {self.name!r}")
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError(f"tool {self.name!r} repeats a parameter name")

    def schema(self) -> dict[str, Any]:
        """The tool in OpenAI's function-tool format (what ``tools=`` of a chat API takes)."""
        properties = {}
        for parameter in self.parameters:
            prop: dict[str, Any] = {"type": parameter.type, "description": parameter.description}
            if parameter.type == "string":
                prop["maxLength"] = parameter.max_length
            properties[parameter.name] = prop
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": properties,
                    "required": [p.name for p in self.parameters],
                    "additionalProperties": False,
                },
            },
        }

    def render_command(self, arguments: Mapping[str, Any]) -> str:
        """The text action of a validated call (command envs only)."""
        if self.command is None:
            raise ValueError(f"tool {self.name!r} has no command template")
        return self.command.format(**{k: str(v) for k, v in arguments.items()})


class ToolCall(NamedTuple):
    """A parsed tool call.

    Attributes:
        name: The tool's name as the model wrote it.
        arguments: The arguments (a JSON object).
        id: The call's id, when the call carried one.
        content: Text that came with the call (a thought before a ``<tool_call>`` block, or an
            assistant message's ``content``); empty when none.
        num_calls: How many calls the action held (only the first is run).
    """

    name: str
    arguments: dict[str, Any]
    id: str | None = None
    content: str = ""
    num_calls: int = 1


class ToolCallError(ValueError):
    """An action that holds no readable tool call; the message says what was expected."""


def _call_from_object(obj: Any) -> ToolCall:
    """A :class:`ToolCall` from one call object (plain JSON or OpenAI's ``function`` form)."""
    if not isinstance(obj, Mapping):
        raise ToolCallError(f"a tool call must be a JSON object, got {type(obj).__name__}")
    call_id = obj.get("id")
    body = obj.get("function") if isinstance(obj.get("function"), Mapping) else obj
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ToolCallError('a tool call needs a "name" (a string)')
    arguments = body.get("arguments", body.get("parameters", {}))
    if isinstance(arguments, str):
        what = f'the "arguments" of tool call {name.strip()[:40]!r}'
        arguments = _decode_json(arguments, what) if arguments.strip() else {}
    if not isinstance(arguments, Mapping):
        raise ToolCallError(f'the "arguments" of tool call {name.strip()[:40]!r} must be a JSON object')
    return ToolCall(name.strip(), dict(arguments), call_id if isinstance(call_id, str) and call_id else None)


def _calls_from_json(value: Any) -> tuple[list[Any], str]:
    """The call objects of a decoded JSON action, and the message content that came with them."""
    if isinstance(value, list):
        return value, ""
    if isinstance(value, Mapping) and "tool_calls" in value:
        calls = value["tool_calls"]
        content = value.get("content")
        if not isinstance(calls, list):
            raise ToolCallError('"tool_calls" must be a list of tool calls')
        return calls, content if isinstance(content, str) else ""
    return [value], ""


def _decode_json(text: str, what: str) -> Any:
    """``json.loads`` whose every failure is a :class:`ToolCallError`.

    Besides malformed JSON: nesting deeper than the interpreter's recursion limit
    (``RecursionError``) and integers longer than Python's digit limit (``ValueError``), which a
    model's text can hold as easily as any other string.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ToolCallError(f"{what} is not valid JSON: {err.msg}") from None
    except (ValueError, RecursionError):
        raise ToolCallError(f"{what} is not JSON this env reads (too deeply nested, or a number too long)") from None


def parse_tool_call(text: str) -> ToolCall:
    """Read the first tool call of an action; see the module docstring for the accepted forms.

    Parsing is linear in the length of the text (a regex without backtracking over nested
    quantifiers, then ``json.loads``).

    Args:
        text: The action.

    Returns:
        The first call, with ``num_calls`` the number of calls the action held.

    Raises:
        ToolCallError: if the text holds no tool call in any accepted form, saying what was expected.
    """
    blocks = _TOOL_CALL_BLOCK.findall(text) if "<tool_call>" in text else []
    if blocks:
        content = text[: text.index("<tool_call>")].strip()
        first = _decode_json(blocks[0], "the <tool_call> block")
        call = _call_from_object(first)
        return call._replace(content=content, num_calls=len(blocks))
    stripped = text.strip()
    fenced = _CODE_FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    if not stripped.startswith(("{", "[")):
        raise ToolCallError(
            "no tool call found: answer with a tool call, as JSON "
            '{"name": <tool>, "arguments": {...}} or in a <tool_call>...</tool_call> block'
        )
    value = _decode_json(stripped, "the tool call")
    calls, content = _calls_from_json(value)
    if not calls:
        raise ToolCallError("the message holds no tool call")
    call = _call_from_object(calls[0])
    return call._replace(content=content, num_calls=len(calls))


def validate_tool_call(call: ToolCall, specs: Sequence[ToolSpec]) -> tuple[ToolSpec, dict[str, Any]]:
    """Check a call against an env's tools; return the tool and its normalised arguments.

    Tool names match case-insensitively. Strings are stripped and must not be blank; an
    ``integer`` parameter also takes a string of digits (``"1"``), as models often write it.

    Raises:
        ToolCallError: naming the unknown tool (and listing the env's), or the missing,
            unexpected or mistyped argument.
    """
    by_name = {spec.name.lower(): spec for spec in specs}
    spec = by_name.get(call.name.lower())
    if spec is None:
        names = ", ".join(s.name for s in specs)
        shown = call.name if len(call.name) <= 40 else call.name[:37] + "..."
        raise ToolCallError(f"unknown tool {shown!r}; the tools are: {names}")
    expected = {p.name: p for p in spec.parameters}
    unexpected = sorted(set(call.arguments) - set(expected))
    if unexpected:
        raise ToolCallError(
            f"tool {spec.name!r} takes {sorted(expected) or 'no arguments'}; unexpected: {unexpected[:5]}"
        )
    arguments: dict[str, Any] = {}
    for name, parameter in expected.items():
        if name not in call.arguments:
            raise ToolCallError(f"tool {spec.name!r} needs the argument {name!r} ({parameter.description})")
        value = call.arguments[name]
        if parameter.type == "integer":
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value.strip())
            if isinstance(value, bool) or not isinstance(value, int):
                raise ToolCallError(f"argument {name!r} of tool {spec.name!r} must be an integer")
        else:
            if not isinstance(value, str):
                raise ToolCallError(f"argument {name!r} of tool {spec.name!r} must be a string")
            value = value.strip()
            if not value:
                raise ToolCallError(f"argument {name!r} of tool {spec.name!r} must not be blank")
            if len(value) > parameter.max_length:
                raise ToolCallError(
                    f"argument {name!r} of tool {spec.name!r} has {len(value)} characters, "
                    f"more than {parameter.max_length}"
                )
        arguments[name] = value
    return spec, arguments


def default_call_id(step: int) -> str:
    """The id of a call that carried none: ``"call_<step>"``, ``step`` counting from 0."""
    return f"call_{step}"


def format_tool_call(name: str, arguments: Mapping[str, Any], call_id: str | None = None) -> str:
    """The canonical JSON text of a call, ``{"name": ..., "arguments": {...}[, "id": ...]}``.

    What scripted agents send an env in tools mode, and what :func:`parse_tool_call` reads back.
    """
    payload: dict[str, Any] = {"name": name, "arguments": dict(arguments)}
    if call_id is not None:
        payload["id"] = call_id
    return json.dumps(payload, ensure_ascii=False)


# ------------------------------------------------------------------------------ ScienceWorld's tools
def _object(name: str = "object", description: str = "an object, named as in the room description") -> ToolParameter:
    return ToolParameter(name, description, max_length=200)


#: The tools of ScienceWorld and MiniScience: ScienceWorld's command templates, one tool each, and
#: ``command`` for any other command of the grammar (and ``select`` for an ambiguity's numbered
#: readings). Each renders to the text command the simulator parses.
SCIENCE_TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("look_around", "Describe the current room (costs no time).", command="look around"),
    ToolSpec("inventory", "List what you carry (costs no time).", command="inventory"),
    ToolSpec(
        "go_to", "Move to an adjacent location.", (_object("location", "a room next to you"),), "go to {location}"
    ),
    ToolSpec("open", "Open a door or container.", (_object("target", "e.g. 'door to kitchen'"),), "open {target}"),
    ToolSpec("close", "Close a door or container.", (_object("target", "e.g. 'door to kitchen'"),), "close {target}"),
    ToolSpec("pick_up", "Move an object to your inventory.", (_object(),), "pick up {object}"),
    ToolSpec("put_down", "Drop an object from your inventory.", (_object(),), "put down {object}"),
    ToolSpec(
        "move",
        "Move an object into a container or onto a device.",
        (_object(), _object("destination", "where to put it")),
        "move {object} to {destination}",
    ),
    ToolSpec(
        "pour",
        "Pour a substance or a container's contents into another container.",
        (_object(), _object("destination", "the container to pour into")),
        "pour {object} into {destination}",
    ),
    ToolSpec("activate", "Turn a device on.", (_object("device", "e.g. 'stove'"),), "activate {device}"),
    ToolSpec("deactivate", "Turn a device off.", (_object("device", "e.g. 'stove'"),), "deactivate {device}"),
    ToolSpec(
        "focus_on",
        "Declare the object the task is about (focusing on the wrong object fails the task).",
        (_object(),),
        "focus on {object}",
    ),
    ToolSpec(
        "use",
        "Use a tool on an object (e.g. a thermometer on a substance).",
        (_object("tool", "the tool you hold"), _object("target", "what to use it on")),
        "use {tool} on {target}",
    ),
    ToolSpec("examine", "Describe an object closely.", (_object(),), "examine {object}"),
    ToolSpec("look_at", "Describe an object or container and its contents.", (_object(),), "look at {object}"),
    ToolSpec("wait", "Let 10 time steps pass.", command="wait"),
    ToolSpec("wait1", "Let 1 time step pass.", command="wait1"),
    ToolSpec(
        "select",
        "Choose a numbered reading after an 'Ambiguous request' answer.",
        (ToolParameter("number", "the reading's number", "integer"),),
        "{number}",
    ),
    ToolSpec(
        "command",
        "Any other command of the simulator's grammar, as text (e.g. 'connect battery to wire').",
        (ToolParameter("text", "the command", max_length=1000),),
        "{text}",
    ),
)
