"""Exact enumeration of every row, vectorised by splitting the variables in two blocks.

For a row with ``m`` free variables split into a high block (h) and a low block (l)::

    E(x_h, x_l) = E_h(x_h) + E_l(x_l) + 2 x_h^T Q_hl x_l

so all ``2^m`` energies of a chunk of high states are one matrix product
``(X_h Q_hl) @ X_l^T`` plus two broadcast vectors. ``m <= 24`` takes well under a second.
The solver ``exact`` (:mod:`qubo_round.solvers.exact`) and :func:`qubo_round.bounds.lower_bound`
both use it.
"""
from __future__ import annotations

import time

import numpy as np

from .problem import QUBOFamily

__all__ = ["ABSOLUTE_MAX", "all_states", "minimise_dense", "enumerate_rows"]

#: Hard ceiling of the enumeration (2^30 states per row).
ABSOLUTE_MAX = 30
_CHUNK_ENTRIES = 1 << 22


def all_states(m: int) -> np.ndarray:
    """(2^m, m) float64 all binary vectors, bit j of state i = (i >> j) & 1."""
    idx = np.arange(2**m, dtype=np.int64)[:, None]
    return ((idx >> np.arange(m)) & 1).astype(np.float64)


def minimise_dense(Q: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact minimum of ``x^T Q x`` over x in {0,1}^m; returns (x uint8 (m,), energy)."""
    m = Q.shape[0]
    if m == 0:
        return np.zeros(0, np.uint8), 0.0
    l = min(m, 12)
    h = m - l
    Xl = all_states(l)
    Ql, Qh, Qhl = Q[h:, h:], Q[:h, :h], Q[:h, h:]
    El = np.einsum("ij,jk,ik->i", Xl, Ql, Xl)
    if h == 0:
        i = int(np.argmin(El))
        return Xl[i].astype(np.uint8), float(El[i])
    best_e, best_x = np.inf, None
    nh = 2**h
    chunk = max(1, _CHUNK_ENTRIES // len(Xl))
    for start in range(0, nh, chunk):
        idx = np.arange(start, min(nh, start + chunk), dtype=np.int64)[:, None]
        Xh = ((idx >> np.arange(h)) & 1).astype(np.float64)
        Eh = np.einsum("ij,jk,ik->i", Xh, Qh, Xh)
        tot = Eh[:, None] + El[None, :] + 2.0 * (Xh @ Qhl) @ Xl.T
        j = int(np.argmin(tot))
        e = float(tot.flat[j])
        if e < best_e:
            a, b = divmod(j, len(Xl))
            best_e, best_x = e, np.concatenate([Xh[a], Xl[b]]).astype(np.uint8)
    return best_x, best_e


def enumerate_rows(problem: QUBOFamily, *, max_free: int = ABSOLUTE_MAX,
                   time_limit: float | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """The optimum of every row by enumeration.

    Args:
        problem: any QUBO family whose rows have at most ``max_free`` free variables.
        max_free: the largest row enumerated (at most :data:`ABSOLUTE_MAX`).
        time_limit: seconds; rows not reached keep ``v = 0`` (fixed entries applied) and a NaN bound.
    Returns:
        ``(X, lower_bound, status)``: X (rows, n) uint8, the optimum of each row; lower_bound
        (rows,) its energy (offset included); status ``"optimal"`` or ``"time_limit"``.
    """
    if not 0 <= max_free <= ABSOLUTE_MAX:
        raise ValueError(f"max_free must be in 0..{ABSOLUTE_MAX}, got {max_free}")
    worst = int(problem.num_free.max()) if problem.rows else 0
    if worst > max_free:
        raise ValueError(f"enumeration takes at most {max_free} free variables per row, but row "
                         f"{int(problem.num_free.argmax())} has {worst}; use the branch and bound or a bound")
    t0 = time.perf_counter()
    X = problem.apply_fixed(np.zeros(problem.shape, np.uint8))
    lb = np.full(problem.rows, np.nan)
    status = "optimal"
    for k in range(problem.rows):
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            status = "time_limit"
            break
        Qf, c, free = problem.reduced(k)
        x, e = minimise_dense(Qf)
        X[k, free] = x
        lb[k] = e + c
    return X, lb, status
