"""Scripted teachers: oracle policies that solve tasks through the env's own actions, and noisy
versions that fail in realistic ways. Their trajectories are the positive and negative examples
NAT and RISE train on when no teacher model is at hand.

One module per env family: ``math``, ``qa``, ``science``, ``constraints``.
"""
