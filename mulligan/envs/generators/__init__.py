"""Procedural task generators: pure functions of ``(config, seed, index)``.

Each module holds a validating config dataclass and a function that returns the task record at
``index`` of the dataset seeded ``seed``, the same in every run and independent of the other
indices (:func:`mulligan.envs.core.seeded_rng`):

* :mod:`~mulligan.envs.generators.math`: GSM8K-style word problems with worked solutions.
* :mod:`~mulligan.envs.generators.world`: an invented multi-hop world with HotpotQA and StrategyQA questions.
* :mod:`~mulligan.envs.generators.constraints`: constraint-following tasks (CORGI's rules, IFEval's instructions).

Simulators with state (MiniScience) live in their own packages, not here.
"""
