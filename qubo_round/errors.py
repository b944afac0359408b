"""Errors the core raises that the solvers share (re-exported by :mod:`qubo_round.solvers.base`)."""

__all__ = ["CapabilityError"]


class CapabilityError(ValueError):
    """The problem or environment is beyond what the solver can do."""
