"""Lower bounds on the row optima of a QUBO family: exact, SDP (Goemans-Williamson) and eigenvalue.

Every bound here is a *valid* lower bound of ``min E_k(x)`` over binary ``x`` that respects the
fixed variables of row ``k``; solver tolerances never make it too high (see :func:`certify`).

Homogenised spin form
---------------------
Row ``k`` with the fixed variables folded in (:meth:`QUBOFamily.reduced`) is
``E(x) = x^T Q x + c`` over ``x in {0,1}^m``, ``Q`` (m, m) symmetric. With ``x = (1 + s)/2``,
``s in {-1,+1}^m`` and ``s_i^2 = 1``::

    x^T Q x = (1^T Q 1 + tr Q)/4 + (Q 1 / 2)^T s + s^T A s,    A = offdiag(Q) / 4

and with the extra spin ``t = (s_0, s)``, ``s_0 = 1`` (a global sign flip ``t -> -t`` leaves
``t^T M t`` unchanged, so any ``t`` maps back after fixing ``s_0 = +1``)::

    E = const + t^T M t,   M = [[0, b^T/2], [b/2, A]] (m+1, m+1),  b = Q 1 / 2,
    const = (1^T Q 1 + tr Q)/4 + c.                                         (:func:`homogenise`)

``M`` has a zero diagonal (diagonal terms of ``Q`` are constants on spins).

The certificate (why every bound is valid)
------------------------------------------
For *any* ``y`` in R^(m+1) and any ``t in {-1,1}^(m+1)`` (so ``||t||^2 = m+1``)::

    t^T M t = t^T (M - diag y) t + sum(y) >= sum(y) + (m+1) lambda_min(M - diag y).

Hence ``f(y) = const + sum(y) + (m+1) lambda_min(M - diag y)`` is a lower bound of ``min E``
for every ``y``. ``y = 0`` gives the minimum-eigenvalue bound (:func:`eig_bound`); because
``f(y + a 1) = f(y)``, ``y = 0`` is already the best *uniform* diagonal shift (the zero-trace,
"trace-adjusted" choice); :func:`eig_bound` also tries a one-parameter family of non-uniform
shifts that is exact for the linear part. The maximum of ``f`` over ``y`` equals the SDP relaxation value
(Poljak-Rendl): ``max sum(y) s.t. M - diag y PSD`` is the dual of
``min <M, X> s.t. X PSD, diag X = 1`` (:func:`sdp_bound`). Whatever ``y`` a numerical SDP solver
returns, :func:`certify` evaluates ``f(y)`` with an explicit eigenvalue computation, so a
solver stopping early only loosens the bound, never invalidates it. Floating-point error of the
eigenvalue and of the sums is subtracted with a conservative margin (backward-stable symmetric
eigensolvers satisfy ``|lambda_hat - lambda| <= p(n) eps ||S||_2``; we take ``p(n) = 8 n`` and
``||S||_2 <= ||S||_F``).

SDP backends (measured here with :func:`sdp_bound`, one BLAS thread, on 2 CPU cores shared with
other jobs, so times vary ~3x between runs; OR-Library bqp100-1 (m = 100) and bqp250-1 (m = 250);
"bound" is the certified bound of :func:`certify`; the SDP optima are about -8721.105 and
-48732.37 in energy units):

========== ========================= ========================= ===============================
backend    bqp100-1: time, bound     bqp250-1: time, bound     notes
========== ========================= ========================= ===============================
ipm        0.05 s, -8721.10529       0.42 s, -48732.3688       interior point (ours, default)
bm         0.04 s, -8721.10536       0.14 s, -48732.3698       Burer-Monteiro + L-BFGS (ours)
scs        1.2-4.1 s, -8721.224      69-157 s, -48734.708      cvxpy, primal form, eps 1e-5
clarabel   7.2-9.4 s, -8721.1053     > 400 s and > 22 GB       cvxpy, dual form (primal: 73 s
                                     (killed)                  at m = 100, OOM at m = 250)
========== ========================= ========================= ===============================

(the ipm and bm rows: ``python benchmarks/sdp_bounds.py --instances bqp100-1 bqp250-1 --bm-rows 1
--out benchmarks/results/sdp_bounds_bqp``, 2026-12-07; the cvxpy rows earlier.) Among the cvxpy backends
SCS is the fastest (Clarabel's interior point is dense in the (m+1)(m+2)/2 matrix entries: memory
~ m^4, unusable beyond ~150 variables). The default backend is ``ipm``
(:mod:`qubo_round.sdp_ipm`): a primal-dual interior-point method specialised to this SDP, a few
O(m^3) dense factorisations per iteration, run to a duality gap of 1e-10 (the iteration count is
logged at DEBUG level). On well-conditioned instances like bqp, ``bm`` is ~3x faster; on layer
rows, whose covariance is nearly singular, ``bm`` crawls: digits fc1 W2 row 0 (443 free) takes
25.8 s for a certified 0.0114008 with ``bm`` and 0.8 s for 0.0114079 with ``ipm`` (one BLAS
thread; ``python benchmarks/sdp_bounds.py --layers fc1 --rows 1 --bm-rows 1``; the script's
default run has the layer-level numbers). ``bm`` is the low-rank factorisation ``X = V V^T``,
``V`` (m+1, r) with unit rows and
``r(r+1)/2 >= m+1`` (so an optimal solution of that rank exists, Barvinok-Pataki), minimised by
L-BFGS over an unnormalised ``U`` (``V = rownormalise(U)``), with rank escalation along the most
negative eigenvector of ``M - diag y`` if a non-global stationary point is met. Its dual
``y_i = <(M V)_i, v_i>`` goes through the same certificate.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.optimize import minimize

from .box_bound import box_bound
from .enumeration import ABSOLUTE_MAX, enumerate_rows
from .extras import require
from .lattice import branch_and_bound, first_incumbents
from .problem import LayerQUBO, QUBOFamily
from .sdp_ipm import solve_maxcut_sdp
from .threads import limit_threads

log = logging.getLogger(__name__)

__all__ = ["Bound", "RowSDP", "homogenise", "certify", "eig_bound", "sdp_bound", "sdp_rows", "lower_bound",
           "gap", "relative_gap", "one_blas_thread", "BACKENDS", "CLARABEL_MAX_FREE"]

#: SDP backends accepted by :func:`sdp_bound`.
BACKENDS = ("ipm", "bm", "scs", "clarabel")
#: Clarabel's memory grows like m^4; refuse larger rows with a clear message.
CLARABEL_MAX_FREE = 150
_EPS = np.finfo(np.float64).eps
#: Smallest denominator of :func:`relative_gap`.
TINY = 1e-12


def one_blas_thread():
    """One BLAS thread while the block runs (:func:`qubo_round.threads.limit_threads`). The SDP
    work is many small dense products and L-BFGS updates: with several BLAS threads on a shared
    machine the synchronisation costs more than the arithmetic (measured: conformance problems
    7.9 s -> 0.5 s on 2 busy cores)."""
    return limit_threads(1, torch=False)


@dataclass
class Bound:
    """Lower bounds of every row.

    Attributes:
        values: (rows,) float64 lower bound of ``min E_k`` (offsets included).
        method: ``"exact"``, ``"sdp"`` or ``"eig"`` (the method used for all rows).
        seconds: wall-clock time of the computation.
        info: method-specific details (e.g. the SDP backend, the per-row SDP values).
    """

    values: np.ndarray
    method: str
    seconds: float
    info: dict = field(default_factory=dict)

    @property
    def total(self) -> float:
        """Lower bound of the family's total energy (sum over rows)."""
        return float(self.values.sum())


@dataclass
class RowSDP:
    """The SDP relaxation of one row.

    Attributes:
        bound: rigorous lower bound of ``min E_k`` (:func:`certify` of ``y``).
        value: the relaxation objective the solver reached, ``<M, X> + const`` (not rigorous).
        X: (m+1, m+1) primal solution, PSD with unit diagonal; index 0 is the homogenising spin.
        V: (m+1, r) factor with unit rows, ``X = V V^T`` (for hyperplane rounding).
        y: (m+1,) dual diagonal (certificate).
        M: (m+1, m+1) and ``const``: the homogenised row (:func:`homogenise`).
        free: (m,) indices of the free variables (the spins ``1..m``).
        backend, seconds: how it was computed.
    """

    bound: float
    value: float
    X: np.ndarray
    V: np.ndarray
    y: np.ndarray
    M: np.ndarray
    const: float
    free: np.ndarray
    backend: str
    seconds: float


# ------------------------------------------------------------------------------------------------
# The spin form and the certificate
# ------------------------------------------------------------------------------------------------

def homogenise(Q: np.ndarray, c: float = 0.0) -> tuple[np.ndarray, float]:
    """``(M, const)`` with ``x^T Q x + c = const + t^T M t`` for ``t = (1, 2x - 1)``.

    Args:
        Q: (m, m) symmetric.
    Returns:
        M (m+1, m+1) symmetric with zero diagonal, const float (see the module docstring).
    """
    Q = np.asarray(Q, dtype=np.float64)
    m = Q.shape[0]
    M = np.zeros((m + 1, m + 1))
    half_b = Q.sum(axis=1) / 4.0  # b / 2 with b = Q 1 / 2
    M[0, 1:] = half_b
    M[1:, 0] = half_b
    M[1:, 1:] = Q / 4.0
    M[np.diag_indices(m + 1)] = 0.0
    const = float((Q.sum() + np.trace(Q)) / 4.0 + c)
    return M, const


def certify(M: np.ndarray, y: np.ndarray, const: float = 0.0) -> float:
    """Rigorous lower bound ``const + sum(y) + n lambda_min(M - diag y) - margin`` (any ``y``).

    Args:
        M: (n, n) symmetric; y: (n,).
    Returns:
        A lower bound of ``const + min_{t in {-1,1}^n} t^T M t``; the margin covers the rounding
        error of the eigenvalue (``8 n eps ||S||_F``, times n) and of the sums.
    """
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if n == 0:
        return float(const)
    S = M - np.diag(y)
    lam = float(np.linalg.eigvalsh(S)[0])
    eig_err = 8.0 * n * _EPS * float(np.linalg.norm(S))
    sum_err = 4.0 * n * _EPS * (abs(const) + float(np.abs(y).sum()))
    return float(const + y.sum() + n * (lam - eig_err) - sum_err)


# ------------------------------------------------------------------------------------------------
# Eigenvalue bound
# ------------------------------------------------------------------------------------------------

def eig_bound(problem: QUBOFamily, *, line_evals: int = 8, steps: int = 0,
              rows: np.ndarray | None = None) -> np.ndarray:
    """Eigenvalue bound of every row: ``max_y f(y)`` over a few cheap ``y`` (module docstring).

    ``f(y) = const + sum(y) + (m+1) lambda_min(M - diag y)`` is valid for every ``y``:

    * ``y = 0``: the plain minimum-eigenvalue bound (always evaluated);
    * ``y = theta y_a`` with ``y_a = -(sum_i |b_i|/2, |b_1|/2, ..., |b_m|/2)``: ``y_a`` is the exact
      dual certificate of the linear part alone (with ``L = [[0, b^T/2], [b/2, 0]]`` the arrow
      matrix ``L - diag y_a`` is PSD, its Schur complement being 0, and ``sum y_a = -sum |b_i|``,
      the exact minimum of ``b^T s``; tight for a diagonal ``Q``). ``f`` is concave, so ``theta`` in
      [0, 2] is found by golden-section search with ``line_evals`` eigenvalue computations
      (``theta = 1`` is always tried too). On OR-Library bqp100-1 this lifts the bound from
      -42837 (y = 0) to -10461 (SDP: -8721); on layer problems it is often the difference between
      a useless and a useful bound;
    * ``steps > 0`` more supergradient-ascent steps from the best point (supergradient
      ``1 - (m+1) u*u``, ``u`` the unit eigenvector of ``lambda_min``); ``f`` tends to the SDP value.

    Cost per row: ``2 + line_evals`` eigenvalue computations plus ``steps`` eigendecompositions
    of size m+1 (use ``line_evals=0`` for the bare bound on very large rows).

    Args:
        rows: optional subset of row indices (default: all rows).
    Returns:
        (len(rows),) float64 valid lower bounds (offsets included), (rows,) by default.
    """
    if steps < 0 or line_evals < 0:
        raise ValueError(f"steps and line_evals must be >= 0, got {steps} and {line_evals}")
    idx = np.arange(problem.rows) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    out = np.empty(len(idx))
    for i, k in enumerate(idx):
        Qf, c, _ = problem.reduced(int(k))
        M, const = homogenise(Qf, c)
        y, best = _eig_line(M, const, line_evals)
        out[i] = _eig_ascent(M, const, y, best, steps)
    return out


def _eig_line(M: np.ndarray, const: float, evals: int) -> tuple[np.ndarray, float]:
    """Golden-section search of ``theta -> f(theta y_a)`` on [0, 2]; returns (best y, best f)."""
    zero = np.zeros(M.shape[0])
    best_y, best = zero, certify(M, zero, const)
    if evals == 0 or M.shape[0] == 1:
        return best_y, best
    half_b = np.abs(M[0, 1:])
    ya = -np.concatenate([[half_b.sum()], half_b])
    g = (np.sqrt(5.0) - 1.0) / 2.0
    lo, hi = 0.0, 2.0
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = certify(M, a * ya, const), certify(M, b * ya, const)
    for _ in range(evals - 2):
        if fa >= fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = certify(M, a * ya, const)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = certify(M, b * ya, const)
    f1 = certify(M, ya, const)  # theta = 1: exact when Q is diagonal
    for th, f in ((a, fa), (b, fb), (1.0, f1)):
        if f > best:
            best_y, best = th * ya, f
    return best_y, best


def _eig_ascent(M: np.ndarray, const: float, y: np.ndarray, best: float, steps: int) -> float:
    n = M.shape[0]
    if steps == 0 or n == 1:
        return best
    step0 = float(np.abs(M).sum(axis=1).max()) / n + TINY  # scale of a useful move in y
    for it in range(steps):
        _, U = np.linalg.eigh(M - np.diag(y))
        g = 1.0 - n * U[:, 0] ** 2
        gn = float(np.linalg.norm(g))
        if gn < 1e-12:
            break  # the supergradient vanishes: y is optimal
        y = y + step0 / np.sqrt(it + 1.0) * g / gn * np.sqrt(n)
        best = max(best, certify(M, y, const))
    return best


# ------------------------------------------------------------------------------------------------
# SDP bound
# ------------------------------------------------------------------------------------------------

def sdp_bound(problem: QUBOFamily, k: int, *, backend: str = "ipm", seed: int = 0,
              max_free: int | None = None) -> RowSDP:
    """SDP relaxation of row ``k``: ``min <M, X>`` s.t. ``X`` PSD, ``diag X = 1``.

    Args:
        problem: the family; ``k`` the row (0 <= k < rows).
        backend: one of :data:`BACKENDS` (``ipm`` default, ``bm``; ``scs`` and ``clarabel`` need cvxpy).
        seed: seeds the random initial factor of ``bm``.
        max_free: refuse rows with more free variables (None: no limit).

    Returns:
        :class:`RowSDP` with the rigorous bound (:func:`certify` of the dual ``y``), the primal
        ``X`` (m+1, m+1) and a unit-row factor ``V``.
    """
    _check_rows(problem, backend, [k])
    with one_blas_thread():
        return _sdp_row(problem, k, backend, seed, max_free)


def _check_rows(problem: QUBOFamily, backend: str, rows: list[int]) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown SDP backend {backend!r}; choose one of {BACKENDS}")
    for k in rows:
        if not 0 <= k < problem.rows:
            raise IndexError(f"row {k} out of range 0..{problem.rows - 1}")


def sdp_rows(problem: QUBOFamily, rows: np.ndarray, *, backend: str = "ipm", seed: int = 0,
             threads: int | None = None) -> list[RowSDP]:
    """:func:`sdp_bound` of several rows, ``threads`` rows at a time (None: the CPU count), each
    with one BLAS thread (LAPACK releases the GIL; one thread per row beats threaded BLAS on
    these sizes). Row ``k`` gets seed ``seed`` whatever else is solved beside it.

    Returns:
        one :class:`RowSDP` per entry of ``rows``, in that order.
    """
    rows = [int(k) for k in np.asarray(rows, dtype=np.int64).reshape(-1)]
    _check_rows(problem, backend, rows)
    workers = min(threads or os.cpu_count() or 1, max(1, len(rows)))
    with one_blas_thread():
        if workers == 1 or backend in ("scs", "clarabel"):  # cvxpy is not thread-safe
            return [_sdp_row(problem, k, backend, seed, None) for k in rows]
        with ThreadPoolExecutor(max_workers=workers) as ex:
            return list(ex.map(lambda k: _sdp_row(problem, k, backend, seed, None), rows))


def _sdp_row(problem: QUBOFamily, k: int, backend: str, seed: int, max_free: int | None) -> RowSDP:
    t0 = time.perf_counter()
    Qf, c, free = problem.reduced(k)
    m = len(free)
    if max_free is not None and m > max_free:
        raise ValueError(f"row {k} has {m} free variables; the SDP is limited to {max_free} here")
    if backend == "clarabel" and m > CLARABEL_MAX_FREE:
        raise ValueError(f"row {k} has {m} free variables; Clarabel needs memory ~ m^4 and is limited "
                         f"to {CLARABEL_MAX_FREE}: use backend='ipm', 'bm' or 'scs'")
    M, const = homogenise(Qf, c)
    if backend == "ipm":
        X, y = _solve_ipm(M)
        V = _factor(X)
    elif backend == "bm":
        V, y = _solve_bm(M, np.random.default_rng(seed))
        X = V @ V.T
    else:
        X, y = _solve_cvxpy(M, backend)
        V = _factor(X)
    bound = certify(M, y, const)
    value = float(np.sum(M * X) + const)
    log.debug("row %d: m=%d SDP %s value %.6g bound %.6g", k, m, backend, value, bound)
    return RowSDP(bound=bound, value=value, X=X, V=V, y=y, M=M, const=const, free=free,
                  backend=backend, seconds=time.perf_counter() - t0)


def _solve_ipm(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interior point (:mod:`qubo_round.sdp_ipm`) on ``M`` scaled by its largest absolute row sum."""
    scale = float(np.abs(M).sum(axis=1).max())
    n = M.shape[0]
    if n == 1 or scale == 0.0:
        return np.ones((n, n)), np.zeros(n)
    X, y, _ = solve_maxcut_sdp(M / scale)
    return X, y * scale


def _factor(X: np.ndarray) -> np.ndarray:
    """(n, r) ``V`` with unit rows and ``V V^T ~ X``: eigendecomposition, negatives clipped."""
    lam, U = np.linalg.eigh((X + X.T) / 2.0)
    keep = lam > max(lam[-1], 0.0) * 1e-9
    if not keep.any():
        keep[-1] = True
    V = U[:, keep] * np.sqrt(np.clip(lam[keep], 0.0, None))
    nrm = np.linalg.norm(V, axis=1, keepdims=True)
    return np.where(nrm > 0, V / np.where(nrm > 0, nrm, 1.0), 1.0 / np.sqrt(V.shape[1]))


def _bm_objective(Ms: np.ndarray, n: int, r: int):
    def f(u: np.ndarray) -> tuple[float, np.ndarray]:
        U = u.reshape(n, r)
        nrm = np.linalg.norm(U, axis=1, keepdims=True)
        V = U / nrm
        G = 2.0 * (Ms @ V)  # d <M, V V^T> / dV
        val = 0.5 * float(np.sum(G * V))
        G -= np.sum(G * V, axis=1, keepdims=True) * V  # tangent part (row norms are fixed)
        return val, (G / nrm).ravel()
    return f


def _solve_bm(M: np.ndarray, rng: np.random.Generator, *, gtol: float = 1e-10,
              max_iter: int = 20000, escalations: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Burer-Monteiro: minimise ``<M, V V^T>`` over unit-row ``V`` (n, r); returns ``(V, y)``."""
    n = M.shape[0]
    scale = float(np.abs(M).sum(axis=1).max())
    if n == 1 or scale == 0.0:
        return np.ones((n, 1)), np.zeros(n)
    Ms = M / scale
    r = min(n, int(np.ceil(np.sqrt(2.0 * n))) + 1)
    U = rng.normal(size=(n, r))
    for attempt in range(escalations + 1):
        res = minimize(_bm_objective(Ms, n, U.shape[1]), U.ravel(), jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "gtol": gtol, "ftol": 1e-15, "maxcor": 20})
        U = res.x.reshape(n, -1)
        V = U / np.linalg.norm(U, axis=1, keepdims=True)
        y = np.sum((M @ V) * V, axis=1)
        lam, vec = np.linalg.eigh(Ms - np.diag(y / scale))
        if lam[0] > -1e-7 or U.shape[1] >= n or attempt == escalations:
            break
        # A saddle / non-global stationary point: step out along the negative direction.
        log.debug("bm: lambda_min %.3g < 0 at rank %d; escalating", lam[0], U.shape[1])
        U = np.hstack([V, 0.3 * vec[:, :1]])
    return V, y


def _solve_cvxpy(M: np.ndarray, backend: str) -> tuple[np.ndarray, np.ndarray]:
    """Solve with cvxpy (SCS: primal form; Clarabel: dual form, 10x faster for it)."""
    cp = require("cvxpy", "cvxpy", f"the SDP backend {backend!r}")
    n = M.shape[0]
    if backend == "scs":
        X = cp.Variable((n, n), PSD=True)
        con = cp.diag(X) == 1
        prob = cp.Problem(cp.Minimize(cp.trace(M @ X)), [con])
        prob.solve(solver=cp.SCS)
        Xv, yv = X.value, con.dual_value
    else:
        yvar = cp.Variable(n)
        con = (M - cp.diag(yvar)) >> 0
        prob = cp.Problem(cp.Maximize(cp.sum(yvar)), [con])
        prob.solve(solver=cp.CLARABEL)
        Xv, yv = con.dual_value, yvar.value
    if Xv is None or yv is None or prob.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"SDP backend {backend} failed (status {prob.status}); try backend='ipm'")
    y = np.asarray(yv, dtype=np.float64).reshape(n)
    if backend == "scs":
        # cvxpy's sign convention for equality duals: keep the better certificate of +-y (both
        # are valid bounds; only the right sign is tight; measured: -dual_value with SCS).
        y = y if certify(M, y) >= certify(M, -y) else -y
    Xv = (np.asarray(Xv, dtype=np.float64) + np.asarray(Xv, dtype=np.float64).T) / 2.0
    return Xv, y


# ------------------------------------------------------------------------------------------------
# The family-level entry point and gaps
# ------------------------------------------------------------------------------------------------

METHODS = ("auto", "exact", "bnb", "sdp", "box", "eig")


def lower_bound(problem: QUBOFamily, method: str = "auto", *, exact_max_free: int = 24,
                bnb_seconds: float | None = 2.0, sdp_max_free: int | None = None, backend: str = "ipm",
                eig_line_evals: int = 8, eig_steps: int = 0, seed: int = 0,
                incumbent: np.ndarray | Callable[[QUBOFamily], np.ndarray] | None = None) -> Bound:
    """Lower bound of every row of ``problem``.

    ``method="auto"``: the exact optimum (enumeration) if every row has at most
    ``exact_max_free`` (24) free variables; otherwise the branch and bound (solver ``bnb``) gets
    ``bnb_seconds`` per row (None or 0: skipped) and proves what it can; each row it leaves open
    gets the best of its open-node bound, the SDP bound (rows up to ``sdp_max_free`` free
    variables; None: every row), on the rows beyond ``sdp_max_free`` of a layer with one shared
    matrix the shared-diagonal box bound (:mod:`qubo_round.box_bound`: one SDP for the whole
    layer, all rows in one batched computation), and the eigenvalue bound. ``method`` is then
    ``"exact"`` when every row was proven, else ``"sdp"``, ``"box"`` or ``"eig"`` (the strongest
    method any row used; ``info["row_methods"]`` has each row's). ``"exact"``, ``"bnb"`` (no
    time limit: proves every row), ``"sdp"``, ``"box"`` (shared-matrix layers only) and
    ``"eig"`` force a method.

    ``incumbent``: a (rows, n) 0/1 rounding, or a function of the problem that returns one (called
    only when the branch and bound runs), that gives the branch and bound its first incumbent
    beside the nearest rounding: the better it is, the more rows a time limit leaves proven (for
    example any solver's best: ``lambda p: get_solver("its/fast").solve(p).best``). Without it the
    nearest rounding (or zeros) starts the search. The bound stays valid for any incumbent.

    Returns:
        :class:`Bound` with ``values`` (rows,).
    """
    if method not in METHODS:
        raise ValueError(f"unknown bound method {method!r}; choose one of {METHODS}")
    t0 = time.perf_counter()
    m_max = int(problem.num_free.max()) if problem.rows else 0
    if method == "auto" and m_max <= exact_max_free:
        method = "exact"
    info: dict = {"max_free": m_max}
    if method == "exact":
        values = enumerate_rows(problem, max_free=min(max(exact_max_free, m_max), ABSOLUTE_MAX))[1]
        info["row_methods"] = ["exact"] * problem.rows
    elif method == "bnb":
        values = _branch_and_bound(problem, incumbent, None)[0]
        method = "exact"
        info["row_methods"] = ["exact"] * problem.rows
    elif method == "sdp":
        rows = sdp_rows(problem, np.arange(problem.rows), backend=backend, seed=seed)
        values = np.array([r.bound for r in rows])
        info.update(backend=backend, sdp_values=np.array([r.value for r in rows]),
                    row_methods=["sdp"] * problem.rows)
    elif method == "box":
        bb = box_bound(problem)
        values = bb.values
        info.update(iterations=bb.iterations, sdp_seconds=bb.info["sdp_seconds"], row_methods=["box"] * problem.rows)
    elif method == "eig":
        values = eig_bound(problem, line_evals=eig_line_evals, steps=eig_steps)
        info.update(line_evals=eig_line_evals, steps=eig_steps, row_methods=["eig"] * problem.rows)
    else:
        values, method = _combined_bound(problem, info, bnb_seconds, sdp_max_free, backend,
                                         eig_line_evals, eig_steps, seed, incumbent)
    seconds = time.perf_counter() - t0
    log.info("lower bound (%s) of %d rows: total %.6g in %.2f s", method, problem.rows, values.sum(), seconds)
    return Bound(values=values, method=method, seconds=seconds, info=info)


def _branch_and_bound(problem: QUBOFamily, incumbent, seconds: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(lower bounds, proven) of the branch and bound from zeros, ``incumbent`` and the nearest rounding."""
    given = []
    if incumbent is not None:
        x = incumbent(problem) if callable(incumbent) else incumbent
        if np.shape(x) != problem.shape:
            raise ValueError(f"incumbent must be one rounding of shape {problem.shape}, got {np.shape(x)}")
        given.append(problem.check_samples(np.asarray(x), fixed=False).astype(np.uint8))
    _, lb, proven, _ = branch_and_bound(problem, first_incumbents(problem, None, *given), time_per_row=seconds)
    return np.asarray(lb, dtype=np.float64), proven


def _combined_bound(problem: QUBOFamily, info: dict, bnb_seconds: float | None, sdp_max_free: int | None,
                    backend: str, eig_line_evals: int, eig_steps: int, seed: int,
                    incumbent) -> tuple[np.ndarray, str]:
    """``auto`` beyond enumeration: branch and bound first, then SDP / eigenvalue bounds on the
    rows it left open; every value is a valid bound, so each row keeps the largest."""
    rows = problem.rows
    values = np.full(rows, -np.inf)
    proven = np.zeros(rows, bool)
    how = ["eig"] * rows
    if bnb_seconds:
        values, proven = _branch_and_bound(problem, incumbent, float(bnb_seconds))
        info["bnb_seconds_per_row"] = float(bnb_seconds)
    todo = [int(k) for k in np.flatnonzero(~proven)
            if sdp_max_free is None or problem.num_free[k] <= sdp_max_free]
    for k, row in zip(todo, sdp_rows(problem, np.array(todo, dtype=np.int64), backend=backend, seed=seed)):
        if row.bound > values[k]:
            values[k], how[k] = row.bound, "sdp"
    wide = np.setdiff1d(np.flatnonzero(~proven), todo)
    if len(wide) and isinstance(problem, LayerQUBO) and problem.shared:
        for k, b in zip(wide, box_bound(problem, rows=wide).values):
            if b > values[k]:
                values[k], how[k] = b, "box"
    left = np.flatnonzero(~proven)
    if len(left):
        e = eig_bound(problem, line_evals=eig_line_evals, steps=eig_steps, rows=left)
        for k, b in zip(left, e):
            if b > values[k]:
                values[k], how[k] = b, "eig"
    for k in np.flatnonzero(proven):
        how[k] = "exact"
    info.update(backend=backend, row_methods=how, proven=proven)
    method = "exact" if proven.all() else next(m for m in ("sdp", "box", "eig") if m in how)
    return values, method


def gap(energy, bound):
    """Absolute gap ``E - LB`` (>= 0 up to rounding when LB is valid); arrays broadcast."""
    return np.asarray(energy, dtype=np.float64) - np.asarray(bound, dtype=np.float64)


def relative_gap(energy, bound, tiny: float = TINY):
    """Relative gap ``(E - LB) / max(|LB|, tiny)``: 0 means proven optimal; the denominator is
    the bound's magnitude (``tiny`` guards LB = 0, where the relative gap is not meaningful)."""
    lb = np.asarray(bound, dtype=np.float64)
    return gap(energy, lb) / np.maximum(np.abs(lb), tiny)
