"""Gymnasium text environments; see :mod:`mulligan.envs.core` for the contract."""

from mulligan.envs.core import MulliganEnv, StepOutcome, TextSpace
from mulligan.envs.wrappers import ChatHistory, RetryWithFeedback

__all__ = ["ChatHistory", "MulliganEnv", "RetryWithFeedback", "StepOutcome", "TextSpace"]
