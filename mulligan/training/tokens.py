"""Deprecated location of :mod:`mulligan.training.chat`; import from there."""

from mulligan.training.chat import TokenizedEpisode, render, render_plain, tokenize_conversation  # noqa: F401
