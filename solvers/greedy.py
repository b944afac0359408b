"""Steepest-descent single-bit flips, batched over samples and rows; also a polishing wrapper.

Each step flips, in every (sample, row), the free variable whose flip lowers the energy most,
until no flip improves by more than ``tol``: a 1-flip local minimum.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from qubo_round.problem import QUBOFamily, flip_energy_deltas

from .base import Solver
from .registry import get_solver, register


def steepest_descent(problem: QUBOFamily, X: np.ndarray, *, tol: float = 1e-12,
                     max_steps: int | None = None, deadline: float | None = None) -> tuple[np.ndarray, bool]:
    """Descend from ``X`` (S, rows, n) 0/1 (fixed variables respected) to 1-flip local minima.

    Rows are independent QUBOs, so a (sample, row) with no improving flip is final: each step
    works on the rows that moved in the step before only (on wide layers most rows settle after a
    few flips while some take hundreds).

    Returns ``(X, converged)``; ``converged`` is False when ``max_steps`` or the ``deadline``
    (a ``time.perf_counter()`` value) stopped it first.
    """
    X = problem.apply_fixed(X).astype(np.float64)
    QX = problem.matvec(X)
    S, R, n = X.shape
    diag = np.broadcast_to(problem.diagonal, (R, n))
    fixed = np.broadcast_to(problem.fixed_mask, (R, n))
    steps = max_steps if max_steps is not None else 10 * n + 10
    s_a, r_a = (a.ravel() for a in np.meshgrid(np.arange(S), np.arange(R), indexing="ij"))  # active rows
    for _ in range(steps):
        m = np.arange(len(s_a))
        Xa, QXa = X[s_a, r_a], QX[s_a, r_a]  # (m, n)
        D = flip_energy_deltas(Xa, QXa, diag[r_a], fixed[r_a])
        i = np.argmin(D, axis=-1)
        move = D[m, i] < -tol * (1.0 + np.abs(QXa[m, i]))
        if not move.any():
            return X.astype(np.uint8), True
        s_a, r_a, i = s_a[move], r_a[move], i[move]
        dm = 1.0 - 2.0 * X[s_a, r_a, i]
        X[s_a, r_a, i] += dm
        QX[s_a, r_a] += dm[:, None] * problem.row_columns(r_a, i)
        if deadline is not None and time.perf_counter() > deadline:
            return X.astype(np.uint8), False
    return X.astype(np.uint8), False


@dataclass(frozen=True)
class GreedyParams:
    start: str = "nearest"  # 'nearest', 'floor', 'random', or a registry name to polish
    restarts: int = 1
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {self.restarts}")


@register("greedy", presets={"random8": {"start": "random", "restarts": 8}})
class Greedy(Solver):
    """Steepest-descent single flips from nearest rounding (or a given start / another solver's
    best sample: ``start="<solver name>"`` polishes that solver's output)."""

    Params = GreedyParams

    def _starts(self, problem: QUBOFamily, rng, start) -> np.ndarray:
        if start is not None:
            return np.broadcast_to(start, (self.params.restarts, *problem.shape)).copy()
        how = self.params.start
        if how == "nearest":
            x0 = (problem.prior >= 0.5) if problem.space is not None else np.zeros(problem.shape)
            return np.broadcast_to(x0, (self.params.restarts, *problem.shape)).astype(np.uint8)
        if how == "floor":
            return np.zeros((self.params.restarts, *problem.shape), np.uint8)
        if how == "random":
            return (rng.random((self.params.restarts, *problem.shape)) < problem.prior).astype(np.uint8)
        inner = get_solver(how)
        seeds = rng.integers(0, 2**31 - 1, size=self.params.restarts)
        return np.stack([inner.solve(problem, seed=int(s)).best for s in seeds])

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        deadline = None if time_limit is None else time.perf_counter() + time_limit
        X0 = problem.apply_fixed(self._starts(problem, rng, start))
        X, converged = steepest_descent(problem, X0, max_steps=self.params.max_steps, deadline=deadline)
        status = "feasible" if converged or deadline is None or time.perf_counter() <= deadline else "time_limit"
        return X, {"status": status, "converged": converged}


def polish(problem: QUBOFamily, X: np.ndarray, deadline: float | None = None) -> np.ndarray:
    """Steepest-descent polish of samples X (S, rows, n) or (rows, n); same shape returned."""
    X = np.asarray(X)
    single = X.ndim == 2
    out, _ = steepest_descent(problem, X[None] if single else X, deadline=deadline)
    return out[0] if single else out
