"""SDP relaxation + Goemans-Williamson hyperplane rounding + greedy polish, with a proven bound.

Per row ``k`` (fixed variables folded in, ``m`` free variables), :func:`qubo_round.bounds.sdp_bound`
solves ``min <M, X>`` s.t. ``X`` PSD, ``diag X = 1`` over the homogenised spins
``t = (s_0, s) in {-1,1}^(m+1)`` (``E = const + t^T M t``, ``x = (1 + s)/2``) and returns
``X = V V^T`` with unit rows ``v_i`` (m+1, r) and a rigorous lower bound.

Rounding: ``H`` random Gaussian directions ``g`` (r,) plus ``g = v_0`` give spins
``t_i = sign(<v_i, g>)`` (ties -> +1); multiplying by ``t_0`` fixes ``s_0 = +1`` (``t`` and ``-t``
have the same energy), so ``x_i = [t_0 t_i > 0]``. Row energies of all H candidates are one
(H, m) x (m, m) product. The ``candidates`` best distinct roundings of every row (and ``start``
when given) are polished by steepest descent (:func:`~qubo_round.solvers.greedy.steepest_descent`).

Result: samples (candidates [+1], rows, n); ``lower_bound`` (rows,) the certified SDP bound;
``info['sdp_value']`` (rows,) the relaxation value reached.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from qubo_round.bounds import BACKENDS, CLARABEL_MAX_FREE, eig_bound, one_blas_thread, sdp_bound
from qubo_round.extras import require
from qubo_round.problem import QUBOFamily

from .base import Solver
from .greedy import steepest_descent
from .registry import register

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SDPParams:
    backend: str = "ipm"  # 'ipm' (interior point, default), 'bm' (Burer-Monteiro), 'scs' or 'clarabel' (cvxpy)
    hyperplanes: int = 1000
    candidates: int = 8  # best distinct roundings per row that are polished
    polish: bool = True
    max_variables: int | None = None  # free variables per row accepted (None: any)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("hyperplanes", "candidates", "max_variables"):
            v = getattr(self, name)
            if v is None and name == "max_variables":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")


def hyperplane_round(V: np.ndarray, Q: np.ndarray, c: float, hyperplanes: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """All roundings of one row, sorted by energy, duplicates removed.

    Args:
        V: (m+1, r) unit rows (row 0 the homogenising spin); Q (m, m), c: the reduced row.
    Returns:
        ``(X, E)``: X (h, m) uint8 distinct assignments, E (h,) their energies ascending.
    """
    G = np.concatenate([V[:1].T, rng.normal(size=(V.shape[1], hyperplanes))], axis=1)  # (r, H+1)
    T = (V @ G) >= 0  # (m+1, H+1) spins as booleans (True = +1)
    X = (T[1:] == T[:1]).T.astype(np.uint8)  # x_i = [t_0 t_i > 0], (H+1, m)
    X = np.unique(X, axis=0)
    Xf = X.astype(np.float64)
    E = np.einsum("hi,hi->h", Xf @ Q, Xf) + c
    order = np.argsort(E, kind="stable")
    return X[order], E[order]


@register("sdp", presets={"fast": {"hyperplanes": 200, "candidates": 4},
                          "scs": {"backend": "scs"}})
class SDP(Solver):
    """SDP relaxation per row with Goemans-Williamson rounding and greedy polish; reports the
    certified SDP lower bound."""
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    Params = SDPParams  # no required module: only the scs / clarabel backends need cvxpy (check)

    def check(self, problem: QUBOFamily) -> None:
        super().check(problem)
        if self.params.backend in ("scs", "clarabel"):  # named before the first row, not at it
            require("cvxpy", "cvxpy", f"the sdp solver's backend {self.params.backend!r}")

    def max_free(self) -> int | None:
        limit = self.params.max_variables
        if self.params.backend == "clarabel":
            return CLARABEL_MAX_FREE if limit is None else min(limit, CLARABEL_MAX_FREE)
        return limit

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        with one_blas_thread():
            return self._sample(problem, rng, start, time_limit)

    def _sample(self, problem: QUBOFamily, rng, start, time_limit):
        t0 = time.perf_counter()
        deadline = None if time_limit is None else t0 + time_limit
        p = self.params
        C = p.candidates
        base = problem.apply_fixed(np.zeros(problem.shape, np.uint8) if start is None else start)
        X = np.broadcast_to(base, (C, *problem.shape)).copy()
        lb = np.full(problem.rows, np.nan)
        value = np.full(problem.rows, np.nan)
        status = "feasible"
        seeds = rng.integers(0, 2**31 - 1, size=problem.rows)
        for k in range(problem.rows):
            if deadline is not None and time.perf_counter() > deadline:
                status = "time_limit"
                break
            if problem.num_free[k] == 0:
                lb[k] = value[k] = problem.reduced(k)[1]
                continue
            row = sdp_bound(problem, k, backend=p.backend, seed=int(seeds[k]))
            lb[k], value[k] = row.bound, row.value
            Qf, c, free = problem.reduced(k)
            Xr, _ = hyperplane_round(row.V, Qf, c, p.hyperplanes, rng)
            Xr = Xr[np.minimum(np.arange(C), len(Xr) - 1)]  # repeat the best if fewer distinct
            X[:, k, free] = Xr
        if status == "time_limit":
            left = np.isnan(lb)
            lb[left] = eig_bound(problem, rows=np.flatnonzero(left))  # cheap bounds, rows not reached
        if start is not None:
            X = np.concatenate([X, base[None]], axis=0)
        if p.polish:
            X, converged = steepest_descent(problem, X, deadline=deadline)
            if not converged and deadline is not None and time.perf_counter() > deadline:
                status = "time_limit"
        log.info("sdp: %d rows, bound %.6g, %.2f s", problem.rows, np.nansum(lb), time.perf_counter() - t0)
        return X, {"status": status, "lower_bound": lb, "sdp_value": value}
