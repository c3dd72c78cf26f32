"""Adapters that expose mulligan's envs to other training stacks (TRL's ``environment_factory``)."""
