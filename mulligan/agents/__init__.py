"""Policies: Hugging Face causal LMs, the offline tiny model, served models, scripted teachers.

``HFAgent`` needs torch and is imported from its own module (``from mulligan.agents.hf import
HFAgent``); everything exported here imports without torch.
"""

from mulligan.agents.base import Action, Agent, AgentInput, Message
from mulligan.agents.context import CharBudget, KeepAll, LastAttempts, TokenBudget
from mulligan.agents.hierarchical import HierarchicalAgent
from mulligan.agents.openai_chat import OpenAIChatAgent

__all__ = [
    "Action",
    "Agent",
    "AgentInput",
    "CharBudget",
    "HierarchicalAgent",
    "KeepAll",
    "LastAttempts",
    "Message",
    "OpenAIChatAgent",
    "TokenBudget",
]
