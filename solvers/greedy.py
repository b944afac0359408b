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
from .registry import register


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
    S, R, n = X.shape
    # the active (sample, row) pairs, with compact copies of their X, local fields Qx and
    # diag(Q) (+inf on fixed variables: never the best flip); finished pairs are written back
    s_a, r_a = (a.ravel() for a in np.meshgrid(np.arange(S), np.arange(R), indexing="ij"))
    Xa, QXa = X.reshape(S * R, n).copy(), problem.matvec(X).reshape(S * R, n)
    diag_fixed = np.where(problem.fixed_mask, np.inf, np.broadcast_to(problem.diagonal, (R, n)))
    Da = diag_fixed[r_a]
    D = np.empty_like(Xa)
    steps = max_steps if max_steps is not None else 10 * n + 10
    converged = False
    for _ in range(steps):
        m = np.arange(len(r_a))
        D = flip_energy_deltas(Xa, QXa, Da, out=D[:len(r_a)])  # in place; +inf on fixed (in Da)
        i = np.argmin(D, axis=-1)
        move = D[m, i] < -tol * (1.0 + np.abs(QXa[m, i]))
        if not move.all():
            X[s_a[~move], r_a[~move]] = Xa[~move]
            if not move.any():
                converged = True
                break
            s_a, r_a, i, Xa, QXa, Da = s_a[move], r_a[move], i[move], Xa[move], QXa[move], Da[move]
        k = np.arange(len(r_a))
        dm = 1.0 - 2.0 * Xa[k, i]
        Xa[k, i] += dm
        QXa += dm[:, None] * problem.row_columns(r_a, i)
        if deadline is not None and time.perf_counter() > deadline:
            break
    if not converged:
        X[s_a, r_a] = Xa
    return X.astype(np.uint8), converged


#: Where greedy starts when no ``start`` assignment is given.
STARTS = ("nearest", "floor", "random")


@dataclass(frozen=True)
class GreedyParams:
    start: str = "nearest"  # one of STARTS (another solver's output: the composite ``polish``)
    restarts: int = 1
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {self.start!r}; to polish another solver's "
                             f"output use the composite: get_solver('polish', solver={self.start!r}) "
                             f"or the chain '{self.start}>greedy'")
        if self.restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {self.restarts}")


@register("greedy", presets={"random8": {"start": "random", "restarts": 8}})
class Greedy(Solver):
    """Steepest-descent single flips from nearest rounding (or floor, random, or a given ``start``
    assignment; another solver's output is polished by the composite ``polish`` or a chain
    ``"<solver>>greedy"``, :mod:`qubo_round.solvers.composite`)."""
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

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
        return (rng.random((self.params.restarts, *problem.shape)) < problem.prior).astype(np.uint8)  # random

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
