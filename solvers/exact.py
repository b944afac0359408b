"""Exact enumeration of each row: the solver around :mod:`qubo_round.enumeration`."""
from __future__ import annotations

from dataclasses import dataclass

from qubo_round.enumeration import ABSOLUTE_MAX, all_states, enumerate_rows, minimise_dense
from qubo_round.problem import QUBOFamily

from .base import Solver
from .registry import register

__all__ = ["Exact", "ExactParams", "ABSOLUTE_MAX", "all_states", "minimise_dense"]


@dataclass(frozen=True)
class ExactParams:
    max_free: int = 24

    def __post_init__(self) -> None:
        if not 0 <= self.max_free <= ABSOLUTE_MAX:
            raise ValueError(f"max_free must be in 0..{ABSOLUTE_MAX}, got {self.max_free}")


@register("exact")
class Exact(Solver):
    """Exact enumeration of each row (up to ``max_free`` free variables, default 24)."""
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    exact = True
    max_variables = 24
    Params = ExactParams

    def max_free(self) -> int:
        return self.params.max_free

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        # rows left unsolved at the time limit keep v = 0 and no bound
        X, lb, status = enumerate_rows(problem, max_free=self.params.max_free, time_limit=time_limit)
        return X, {"status": status, "lower_bound": lb}
