"""The solver ``bnb``: branch and bound per row (:mod:`qubo_round.lattice`), its first incumbent
the best of ``start``, an ``its/fast`` run and the nearest rounding."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from qubo_round.lattice import RowLattice, branch_and_bound, first_incumbents, row_lattice
from qubo_round.problem import QUBOFamily

from .base import Solver
from .registry import get_solver, register

log = logging.getLogger(__name__)

__all__ = ["BranchAndBound", "BnBParams", "RowLattice", "row_lattice", "solver_incumbent"]


def solver_incumbent(problem: QUBOFamily, spec: str, rng: np.random.Generator,
                     start: np.ndarray | None = None) -> np.ndarray:
    """The rounding the solver ``spec`` gives the branch and bound, seeded from ``rng`` as the
    solver ``bnb`` seeds it (``rng = np.random.default_rng(seed)``: the incumbent of ``bnb`` at
    that seed; :func:`qubo_round.bounds.lower_bound` takes it as ``incumbent``)."""
    return get_solver(spec).solve(problem, seed=int(rng.integers(2**31 - 1)), start=start).best


@dataclass(frozen=True)
class BnBParams:
    """Parameters of :class:`BranchAndBound`.

    Attributes:
        time_per_row: seconds each row may search (None: until proven, or the solve's
            ``time_limit``).
        incumbent: registry spec of the solver that gives each row's first incumbent (None: only
            ``start`` or nearest/zeros).
        threads: rows searched at once (None: the machine's CPU count).
    """

    time_per_row: float | None = None
    incumbent: str | None = "its/fast"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.time_per_row is not None and (isinstance(self.time_per_row, bool) or not self.time_per_row > 0):
            raise ValueError(f"time_per_row must be > 0 seconds or None, got {self.time_per_row!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")


@register("bnb", presets={"5s": {"time_per_row": 5.0}, "60s": {"time_per_row": 60.0}})
class BranchAndBound(Solver):
    """Branch and bound per row (box-constrained integer least squares, Schnorr-Euchner order,
    sorted variables, warm incumbent): proven optima or a certified gap at the time limit."""
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    exact = True
    required_modules = ("numba",)
    Params = BnBParams

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        t0 = time.perf_counter()
        p = self.params
        deadline = None if time_limit is None else t0 + time_limit
        given = [] if p.incumbent is None else [solver_incumbent(problem, p.incumbent, rng, start)]
        X, lb, proven, nodes = branch_and_bound(problem, first_incumbents(problem, start, *given),
                                                time_per_row=p.time_per_row, deadline=deadline, threads=p.threads)
        status = "optimal" if proven.all() else "time_limit"
        log.info("bnb: %d/%d rows proven, %d nodes, %.2f s", proven.sum(), problem.rows, nodes.sum(),
                 time.perf_counter() - t0)
        return X, {"status": status, "lower_bound": lb, "proven": proven, "nodes": nodes}
