"""Baseline roundings: nearest, floor, ceil, and stochastic rounding (best of k)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qubo_round.problem import QUBOFamily

from .base import Solver
from .registry import register


@register("nearest")
class Nearest(Solver):
    """Round to nearest: ``v = [frac(W/s) >= 0.5]`` (ties up)."""
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    needs_space = True
    baseline = True

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        return problem.apply_fixed(problem.prior >= 0.5), {}


@register("floor")
class Floor(Solver):
    """Round every free variable down (``v = 0``; on a plain QUBO: the all-zeros assignment)."""
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        return problem.apply_fixed(np.zeros(problem.shape, np.uint8)), {}


@register("ceil")
class Ceil(Solver):
    """Round every free variable up (``v = 1``; on a plain QUBO: the all-ones assignment)."""
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        return problem.apply_fixed(np.ones(problem.shape, np.uint8)), {}


@dataclass(frozen=True)
class StochasticParams:
    k: int = 100

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")


@register("stochastic", presets={"single": {"k": 1}, "best100": {"k": 100}, "best1000": {"k": 1000}})
class Stochastic(Solver):
    """Stochastic rounding: ``k`` samples with ``P(v = 1) = frac(W/s)`` (0.5 on a plain QUBO);
    the result keeps all samples, its ``best`` takes the lowest-energy sample of each row."""
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    Params = StochasticParams

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        p = problem.prior
        X = (rng.random((self.params.k, *problem.shape)) < p).astype(np.uint8)
        return problem.apply_fixed(X), {}
