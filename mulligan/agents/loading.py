"""Build an agent from a command-line spec: a scripted agent class or a model."""

from __future__ import annotations

import importlib
import os
from typing import Any

from mulligan.agents.base import Agent


def _looks_like_path(spec: str) -> bool:
    """Whether ``spec`` can only be a filesystem path (a hub id is ``name`` or ``org/name``)."""
    return spec.startswith(("/", "./", "../", "~")) or "\\" in spec or spec.count("/") > 1


def load_agent(spec: str, **kwargs: Any) -> Agent:
    """An agent from ``"module:Class"`` (a scripted agent built with no arguments) or a model.

    Anything else is a model for :class:`~mulligan.agents.hf.HFAgent` (built with ``kwargs``):
    ``"tiny"`` (the offline tiny model), a local checkpoint folder, or a hub id.

    Raises:
        ValueError: If the class cannot be imported or is not an agent, or the model cannot be
            loaded (with the fix in the message).
        FileNotFoundError: If ``spec`` is a path that does not exist.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError("the agent spec is empty; pass 'module:Class' of a scripted agent, 'tiny', or a model")
    if ":" in spec and not os.path.exists(spec):
        return _load_class(spec)
    if spec != "tiny" and not os.path.exists(os.path.expanduser(spec)) and _looks_like_path(spec):
        raise FileNotFoundError(
            f"no model at {spec}: the path does not exist; pass an existing checkpoint folder, 'tiny', "
            "or a hub id such as 'Qwen/Qwen2.5-0.5B-Instruct'"
        )
    from mulligan.agents.hf import HFAgent

    try:
        return HFAgent(os.path.expanduser(spec), **kwargs)
    except OSError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"cannot load model {spec!r} ({reason}); pass a local checkpoint folder, 'tiny', or a hub id "
            "that is cached or reachable"
        ) from err


def _load_class(spec: str) -> Agent:
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"cannot import {module_name!r} for agent {spec!r} ({err}); pass 'module:Class' of an importable "
            "agent, e.g. mulligan.agents.teachers.math:MathOracle"
        ) from err
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"{module_name} has no {class_name!r}; pass 'module:Class' naming an agent class")
    try:
        agent = cls()
    except TypeError as err:
        raise ValueError(
            f"{spec} cannot be built with no arguments ({err}); pass a class whose arguments all have defaults, "
            "or build the agent in Python"
        ) from err
    if not isinstance(agent, Agent):
        raise ValueError(f"{spec} is not a mulligan Agent (got {type(agent).__name__}); pass an Agent subclass")
    return agent
