"""Policies: Hugging Face causal LMs, the offline tiny model, served models, scripted teachers.

Everything here imports without torch. ``HFAgent`` (which needs torch) is exported lazily:
``from mulligan.agents import HFAgent`` imports :mod:`mulligan.agents.hf` only when asked.
"""

from __future__ import annotations

from typing import Any

from mulligan.agents.base import Action, Agent, AgentInput, ContextRecord, Message, input_rng
from mulligan.agents.context import CharBudget, KeepAll, LastAttempts, TokenBudget
from mulligan.agents.hierarchical import HierarchicalAgent
from mulligan.agents.loading import load_agent
from mulligan.agents.openai_chat import OpenAIChatAgent

#: Exports resolved on first access, so that ``import mulligan.agents`` does not import torch.
_LAZY = {"HFAgent": "mulligan.agents.hf"}

__all__ = [
    "Action",
    "Agent",
    "AgentInput",
    "CharBudget",
    "ContextRecord",
    "HFAgent",
    "HierarchicalAgent",
    "KeepAll",
    "LastAttempts",
    "Message",
    "OpenAIChatAgent",
    "TokenBudget",
    "input_rng",
    "load_agent",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
