"""Scripted teachers: oracles that solve tasks through the env's own actions, and noisy versions.

The noisy teachers fail in realistic ways. Their trajectories are the positive and negative examples
NAT and RISE train on when no teacher model is at hand.

One module per env family: ``math``, ``qa``, ``science``, ``constraints``.
"""

from mulligan.agents.teachers.constraints import ConstraintWriter, NoisyConstraintWriter
from mulligan.agents.teachers.math import MathOracle, NoisyMathTeacher
from mulligan.agents.teachers.qa import NoisyQATeacher, QAOracle, QAOracleTeacher
from mulligan.agents.teachers.science import NoisyScienceTeacher, ScienceOracle

__all__ = [
    "ConstraintWriter",
    "MathOracle",
    "NoisyConstraintWriter",
    "NoisyMathTeacher",
    "NoisyQATeacher",
    "NoisyScienceTeacher",
    "QAOracle",
    "QAOracleTeacher",
    "ScienceOracle",
]
