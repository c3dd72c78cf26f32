"""Procedural task generators: pure functions of ``(config, seed, index)``."""
