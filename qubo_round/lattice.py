"""Branch and bound for the row QUBOs (the core of the solver ``bnb`` and of the proofs of
:func:`qubo_round.bounds.lower_bound`) beyond enumeration: box-constrained integer least squares.

A row with its fixed variables folded in is ``E(x) = x^T Q x + c`` over ``m`` free binaries. Since
``x_i^2 = x_i`` the diagonal can be moved between the quadratic and the linear part at will, so
``Q = P + diag(q)`` with ``P`` positive definite (for a layer row ``P = s_k^2 H_FF``, the
covariance of the free inputs, plus a tiny ``delta I`` when ``H_FF`` is singular; for other
QUBOs the off-diagonal part shifted by its smallest eigenvalue) gives::

    E(x) = (x - u)^T P (x - u) + beta,     u = -P^{-1} q / 2,     beta = c - u^T P u,

the closest-vector problem of the lattice ``R Z^m`` (``P = R^T R``) restricted to the box
``{0,1}^m``. :mod:`~qubo_round.lattice_kernel` searches it depth first with Schnorr-Euchner
child order and box pruning, with partial costs as node lower bounds.

Before the search:

* variables with no coupling at all (a zero off-diagonal row of ``Q``, e.g. a dead input) are set
  to their best value ``[Q_ii < 0]`` and removed;
* the variables are ordered so that the top of the tree prunes hardest: the last position of
  ``R`` is given, greedily, to the variable with the largest conditional precision
  ``1 / (P_S^{-1})_jj`` among those left (``R_kk^2`` of that position), as sorted QR does for
  sphere decoders;
* the incumbent is the best, per row, of the candidate roundings given (the solver ``bnb``,
  :mod:`qubo_round.solvers.bnb`, gives ``start`` and an ``its/fast`` run; :func:`qubo_round.bounds.lower_bound`
  any solver's rounding its caller has, and the nearest rounding).

Every row is proven optimal (status ``optimal``, ``lower_bound`` = the energy less a rounding
allowance of ``1e-11`` relative) unless the time limit stops it: then the lower bound is the least
partial cost of the nodes not yet explored, a certified gap. Rows are searched in parallel threads
(the compiled search releases the GIL).
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .problem import LayerQUBO, QUBOFamily

log = logging.getLogger(__name__)

__all__ = ["RowLattice", "row_lattice", "search_row", "branch_and_bound", "first_incumbents"]

#: Node visits between two time checks.
CHUNK_VISITS = 200_000
#: Largest condition number of the convex part (the diagonal shift that ensures it).
MAX_COND = 1e8
#: Relative rounding allowance of the pruning test and of the proven bound.
REL_MARGIN = 1e-11


@dataclass
class RowLattice:
    """One row as ``E(x) = ||R (y - u)||^2 + beta`` with ``y = x[free][order]``.

    Attributes:
        R: (m, m) upper triangular; u: (m,); beta: float.
        free: (m,) the row's variables searched, in search order (``order`` applied).
        decided: (n,) int8: -1 for searched variables, else the value set before the search
            (fixed by the problem, or uncoupled and set to its best value).
        delta: the diagonal shift added to the convex part (and taken off the linear part).
    """

    R: np.ndarray
    u: np.ndarray
    beta: float
    free: np.ndarray
    decided: np.ndarray
    delta: float


def _convex_part(problem: QUBOFamily, k: int, free: np.ndarray, Qf: np.ndarray) -> np.ndarray:
    """A positive semi-definite matrix with the off-diagonal of ``Qf``."""
    if isinstance(problem, LayerQUBO):
        A = problem.row_A(k)[np.ix_(free, free)]
        if problem.column_scaled:  # T A T is PSD when A is
            t = problem.scale[k, free]
            return t[:, None] * A * t[None, :]
        return problem.scale[k] ** 2 * A
    off = Qf - np.diag(np.diag(Qf))
    lam = np.linalg.eigvalsh(off)
    # shifted to positive definite with a margin of 1% of the spectrum's width: the split of a
    # general QUBO is a free choice, and a well-conditioned one keeps beta small (precision)
    return off + (max(0.0, -lam[0]) + 0.01 * (lam[-1] - lam[0])) * np.eye(len(off))


def _order(P: np.ndarray) -> np.ndarray:
    """Search order: position m-1 (searched first) gets the variable of largest conditional
    precision, then greedily among the rest (sorted Cholesky of the inverse)."""
    m = len(P)
    Pi = np.linalg.inv(P)
    left = list(range(m))
    pos = np.empty(m, np.int64)
    for slot in range(m - 1, -1, -1):
        d = np.diag(Pi)
        j = int(np.argmin(d))
        pos[slot] = left[j]
        keep = np.arange(len(left)) != j
        Pi = Pi[np.ix_(keep, keep)] - np.outer(Pi[keep, j], Pi[j, keep]) / Pi[j, j]
        del left[j]
    return pos


def row_lattice(problem: QUBOFamily, k: int,
                reduced: tuple[np.ndarray, float, np.ndarray] | None = None) -> RowLattice:
    """Row ``k`` of ``problem`` in lattice form; ``reduced``: the row's :meth:`QUBOFamily.reduced`
    when the caller has it already."""
    Qf, c, free = problem.reduced(k) if reduced is None else reduced
    decided = np.where(problem.fixed_mask[k], problem.fixed_value[k], -1).astype(np.int8)
    off = Qf - np.diag(np.diag(Qf))
    lone = ~np.any(off != 0, axis=1)
    if lone.any():  # uncoupled: set to its best value, the constant takes its energy
        val = (np.diag(Qf)[lone] < 0).astype(np.int8)
        decided[free[lone]] = val
        c += float(np.diag(Qf)[lone] @ val)
        keep = ~lone
        Qf, free = Qf[np.ix_(keep, keep)], free[keep]
    m = len(free)
    if m == 0:
        return RowLattice(np.zeros((0, 0)), np.zeros(0), c, free, decided, 0.0)
    P = _convex_part(problem, k, free, Qf)
    # a diagonal shift delta keeps P's condition number at most MAX_COND (exact: the linear part
    # takes -delta), so that u = -P^{-1} q / 2 and beta stay of moderate size and the partial
    # costs keep their precision; it costs little pruning (delta is tiny beside P's top)
    lam = np.linalg.eigvalsh(P)
    delta = max(0.0, lam[-1] / MAX_COND - lam[0]) if lam[-1] > 0 else 1.0
    while True:
        Pd = P + delta * np.eye(m)
        order = _order(Pd)
        Po = Pd[np.ix_(order, order)]
        try:
            R = scipy.linalg.cholesky(Po, lower=False)
            if np.all(np.isfinite(R)) and np.min(np.abs(np.diag(R))) > 0:
                break
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
            pass
        delta = 2.0 * delta + 1e-12 * max(abs(lam[-1]), 1.0)
    q = (np.diag(Qf) - np.diag(Pd))[order]
    u = -np.linalg.solve(Po, q) / 2.0
    beta = float(c - u @ Po @ u)
    return RowLattice(R, u, beta, free[order], decided, delta)


def search_row(lat: RowLattice, x0: np.ndarray, energy0: float, deadline: float | None):
    """Search one row from incumbent ``x0`` (its (m,) values in search order) of energy
    ``energy0``. Returns (x (m,), proven, lower bound of E, nodes)."""
    from . import lattice_kernel as kern  # numba: optional, the solver bnb declares it

    m = len(lat.u)
    if m == 0:
        return x0, True, energy0, 0
    radius = np.array([energy0 - lat.beta])
    margin = REL_MARGIN * (abs(energy0) + abs(lat.beta))
    v = np.zeros(m, np.int64)
    best = x0.astype(np.int64).copy()
    tried = np.zeros(m, np.int64)
    cen = np.zeros(m)
    dist = np.zeros(m + 1)
    st = np.zeros(kern.N_ST, np.int64)
    kern.init_state(m, lat.u, st, tried, cen)
    R = np.ascontiguousarray(lat.R)
    done = False
    while not done:
        done = kern.search(R, lat.u, radius, margin, v, best, tried, cen, dist, st, CHUNK_VISITS)
        if not done and deadline is not None and time.perf_counter() >= deadline:
            break
    if done:
        lb = radius[0] - 2.0 * margin
    else:
        lb = kern.open_bound(R, v, tried, cen, dist, st, radius) - 2.0 * margin
    return best.astype(np.uint8), done, lat.beta + lb, int(st[kern.S_NODES])


def first_incumbents(problem: QUBOFamily, start: np.ndarray | None = None, *given: np.ndarray) -> list[np.ndarray]:
    """The candidates of :func:`branch_and_bound`'s first incumbent, fixed entries applied, in the
    order that breaks ties: ``start`` (else zeros), the ``given`` roundings (a solver's), and, when
    no ``start`` was given, the nearest rounding of a layer problem."""
    cands = [problem.apply_fixed(np.zeros(problem.shape, np.uint8) if start is None else start)]
    cands += [problem.apply_fixed(x) for x in given]
    if problem.space is not None and start is None:
        cands.append(problem.apply_fixed((problem.prior >= 0.5).astype(np.uint8)))
    return cands


def branch_and_bound(problem: QUBOFamily, candidates: list[np.ndarray], *, time_per_row: float | None = None,
                     deadline: float | None = None, threads: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Search every row from the best of ``candidates`` in that row.

    Args:
        problem: the QUBO family.
        candidates: (rows, n) 0/1 roundings with the fixed entries applied; per row the one of
            least energy is the first incumbent (the first of equal ones).
        time_per_row: seconds each row may search (None: until proven or ``deadline``).
        deadline: a ``time.perf_counter()`` value no row searches past (None: none).
        threads: rows searched at once (None: the machine's CPU count).
    Returns:
        ``(X, lower_bound, proven, nodes)``: X (rows, n) uint8 the best found; lower_bound
        (rows,) certified (at most the energy of X); proven (rows,) bool; nodes (rows,) visits.
    """
    E = np.stack([problem.energies(x) for x in candidates])
    X = np.stack(candidates)[np.argmin(E, axis=0), np.arange(problem.rows)]
    lb = np.full(problem.rows, np.nan)
    proven = np.zeros(problem.rows, bool)
    nodes = np.zeros(problem.rows, np.int64)

    def one(k: int):
        Qr, cr, fr = problem.reduced(k)
        lat = row_lattice(problem, k, (Qr, cr, fr))
        row_deadline = deadline
        if time_per_row is not None:
            mine = time.perf_counter() + time_per_row
            row_deadline = mine if row_deadline is None else min(row_deadline, mine)
        x_dec = lat.decided
        x = X[k].copy()
        x[x_dec >= 0] = x_dec[x_dec >= 0]
        xr = x[fr].astype(np.float64)
        e0 = float(xr @ Qr @ xr + cr)  # the incumbent with the uncoupled variables at their best
        y, done, bound, cnt = search_row(lat, x[lat.free], e0, row_deadline)
        x[lat.free] = y
        return k, x, done, bound, cnt

    with ThreadPoolExecutor(max_workers=min(threads or os.cpu_count() or 1, max(1, problem.rows))) as ex:
        for k, x, done, bound, cnt in ex.map(one, range(problem.rows)):
            X[k], proven[k], lb[k], nodes[k] = x, done, bound, cnt
    lb = np.minimum(lb, problem.energies(X))
    log.info("branch and bound: %d/%d rows proven, %d nodes", proven.sum(), problem.rows, nodes.sum())
    return X, lb, proven, nodes
