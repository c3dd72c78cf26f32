"""Policies: Hugging Face causal LMs, the offline tiny model, served models, scripted teachers.

Everything here imports without torch. The agents are exported lazily: ``from mulligan.agents import
HFAgent`` imports :mod:`mulligan.agents.hf` (and torch) only when asked, and the wrappers
(``FlatAgent``, ``HierarchicalAgent``, ``NATPromptAgent``, ``OneShotAgent``, ``BestOfNAfterFirst``) load their module on
first use, so ``import mulligan.agents`` stays cheap. Scripted teachers live in
:mod:`mulligan.agents.teachers`, scripted test agents in :mod:`mulligan.agents.testing`.
"""

from __future__ import annotations

import importlib
from typing import Any

from mulligan.agents.base import Action, Agent, AgentInput, ContextRecord, Message, input_rng
from mulligan.agents.context import CharBudget, KeepAll, LastAttempts, TokenBudget
from mulligan.agents.loading import load_agent

#: Exports resolved on first access (name -> module), so that ``import mulligan.agents`` imports
#: neither torch nor the wrapper modules.
_LAZY = {
    "BestOfNAfterFirst": "mulligan.agents.best_of_n",
    "FlatAgent": "mulligan.agents.flat",
    "HFAgent": "mulligan.agents.hf",
    "HierarchicalAgent": "mulligan.agents.hierarchical",
    "NATPromptAgent": "mulligan.agents.nat_prompt",
    "OneShotAgent": "mulligan.agents.one_shot",
    "OpenAIChatAgent": "mulligan.agents.openai_chat",
    "Seq2SeqAgent": "mulligan.agents.seq2seq",
    "TrainerVLLMAgent": "mulligan.agents.vllm",
    "VLLMAgent": "mulligan.agents.vllm",
}

__all__ = [
    "Action",
    "Agent",
    "AgentInput",
    "BestOfNAfterFirst",
    "CharBudget",
    "ContextRecord",
    "FlatAgent",
    "HFAgent",
    "HierarchicalAgent",
    "KeepAll",
    "LastAttempts",
    "Message",
    "NATPromptAgent",
    "OneShotAgent",
    "OpenAIChatAgent",
    "Seq2SeqAgent",
    "TokenBudget",
    "TrainerVLLMAgent",
    "VLLMAgent",
    "input_rng",
    "load_agent",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
