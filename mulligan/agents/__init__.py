"""Policies: Hugging Face causal LMs, the offline tiny model, served models, scripted teachers.

Heavy agents (torch, transformers) are imported lazily from their own modules, e.g.
``from mulligan.agents.hf import HFAgent``; this package imports without torch.
"""

from mulligan.agents.base import Action, Agent, AgentInput, Message

__all__ = ["Action", "Agent", "AgentInput", "Message"]
