"""mulligan: Gymnasium text environments with verifiable rewards, and trainers that learn from failure.

Importing the package registers every ``Mulligan/*`` env id with gymnasium (string entry points,
so nothing heavy is imported)::

    import gymnasium, mulligan
    env = gymnasium.make("Mulligan/Math-v0")
"""

from mulligan.envs.registration import env_ids, register_all

__version__ = "0.1.0"
__all__ = ["__version__", "env_ids"]

register_all()
