"""The shared-diagonal box bound: certified lower bounds for all rows of a layer at once.

Per-row SDP bounds (:func:`qubo_round.bounds.sdp_rows`) cost a few O(m^3) factorisations per
row and per iteration: on MiniLM's FFN output layer (384 rows, ~1521 free variables each) about
25 s per row on 2 cores, hours per layer. This bound uses what the rows of a layer share.

Row ``k`` of a :class:`~qubo_round.problem.LayerQUBO` with one shared matrix is::

    E_k(v) = s_k^2 v^T A v + h_k . v + c_k,      v in {0,1}^n, fixed entries v_F = value_F.

For any ``d`` with ``S = A - Diag(d)`` PSD, ``v_i^2 = v_i`` on binary points gives::

    E_k(v) = f_k(v) := s_k^2 v^T S v + (h_k + s_k^2 d) . v + c_k          (binary v)

and ``f_k`` is convex, so over the box ``B_k`` (``[0,1]`` for free entries, ``lo = hi`` =
the value for fixed ones), for *any* ``u`` in ``B_k``::

    min_binary E_k >= min_{B_k} f_k >= f_k(u) + min_{x in B_k} grad f_k(u) . (x - u)    (*)

(a convex function lies above its tangent plane; the last minimum is separable). ``(*)`` is
the certificate: valid for every ``u``, tight at the box minimiser of ``f_k``.

Group-wise grids (column scales ``t_k``, ``E_k(v) = (t_k v)^T A (t_k v) + h_k . v + c_k``) take
the same ``d``: ``f_k(v) = (t_k v)^T S (t_k v) + (h_k + t_k^2 d) . v + c_k``, convex, and the
Jacobi-scaled curvature ``Diag(S)^{-1/2} S Diag(S)^{-1/2}`` of every row is the same as without
groups (so is the step rule).

* ``d`` is one SDP per layer, not per row: ``max 1^T d  s.t.  A - Diag(d) PSD``, the dual of
  ``min <A, X>, diag X = 1, X PSD`` (:func:`shared_diagonal`, solved by
  :func:`qubo_round.sdp_ipm.solve_maxcut_sdp`), then lowered by the smallest eigenvalue of
  ``A - Diag(d)`` and a rounding margin so that ``S`` is PSD in exact arithmetic. It absorbs as
  much of the objective as possible into the linear term ``d . v``, which binary points do not
  see. (Re-weighting that SDP by the rows' fractional parts, Frank-Wolfe style, was tried on
  digits fc1 and MiniLM FFN in and gained too little to keep; no command of the repo runs it.)
* ``u`` comes from Jacobi-preconditioned projected gradient with Nesterov momentum and
  adaptive restart (FISTA; O'Donoghue and Candes 2015), all rows in one matrix product per
  iteration over the shared ``S``, in float32 (the certificate ``(*)`` is evaluated in float64
  with an explicit bound on its rounding error, so the working precision only decides how
  close ``u`` gets). It starts from the problem's prior (``frac(W/s)``, the minimiser of the
  unmodified ``E_k`` over the box when nothing is clipped).

Against the per-row SDP: with the row's own optimal diagonal, ``(*)`` at its minimiser is at
least the SDP bound (the unconstrained minimum of the convexified row is the SDP value,
Billionnet-Elloumi); with the shared ``d`` it is weaker, at a small fraction of the time
(``python benchmarks/sdp_bounds.py`` and its MiniLM command, ``benchmarks/results/sdp_bounds*.md``,
2 cores): digits W2 layers 0.90-0.96 of the per-row SDP total (fc1: 3.2 s against 43 s);
MiniLM FFN out (384 rows, 1521 free) 0.83 on the rows compared, all rows in 54 s (12 s of it the
SDP) against about 25 s per row; FFN in (1536 rows, 378 free) 0.65, all rows in 5.5 s. Most of
the FFN-out time is the box QP's slow tail (``BoxBound.info["history"]`` holds the certified
total at each check).
(ADMM with the shared eigendecomposition was tried as a warm start: it saved too little for the
tuned penalty it needs, and is not used.)
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .problem import LayerQUBO
from .sdp_ipm import solve_maxcut_sdp

log = logging.getLogger(__name__)

__all__ = ["BoxBound", "shared_diagonal", "box_bound"]

_EPS = float(np.finfo(np.float64).eps)
#: Relative duality gap of the interior point that finds the shared diagonal.
DIAGONAL_TOL = 1e-6


@dataclass
class BoxBound:
    """Certified bounds of the requested rows.

    Attributes:
        values: (len(rows),) float64 valid lower bounds of ``min E_k`` (offsets included).
        rows: (len(rows),) int64 row indices.
        d: (n,) the shared diagonal (``A - Diag(d)`` PSD).
        iterations: projected-gradient iterations run; ``seconds``: wall time (SDP included).
        info: ``sdp_seconds``, ``history`` (iteration, certified total) at each check.
    """

    values: np.ndarray
    rows: np.ndarray
    d: np.ndarray
    iterations: int
    seconds: float
    info: dict = field(default_factory=dict)


def _check_layer(problem) -> None:
    if not isinstance(problem, LayerQUBO) or not problem.shared:
        raise ValueError("the box bound needs a LayerQUBO whose rows share one matrix A "
                         f"(got {type(problem).__name__}{'' if not isinstance(problem, LayerQUBO) else ' with per-row A'}); "
                         "use lower_bound(problem, 'sdp') or 'eig' for this problem")


def _psd_margin(S: np.ndarray) -> tuple[float, float]:
    """(lambda_min - rounding error, lambda_max) of symmetric ``S`` (error: 8 n eps ||S||_F)."""
    lam = np.linalg.eigvalsh(S)
    return float(lam[0] - 8.0 * len(S) * _EPS * np.linalg.norm(S)), float(lam[-1])


def shared_diagonal(A: np.ndarray, *, tol: float = DIAGONAL_TOL) -> np.ndarray:
    """``d`` (n,) with ``A - Diag(d)`` PSD in exact arithmetic, ``1^T d`` near its maximum.

    Args:
        A: (n, n) symmetric, the layer's shared matrix.
        tol: relative duality gap of the interior point (a looser ``d`` stays valid, only weaker).
    """
    return _certified_diagonal(np.asarray(A, dtype=np.float64), tol)[0]


def _certified_diagonal(A: np.ndarray, tol: float) -> tuple[np.ndarray, float]:
    """:func:`shared_diagonal` and ``lambda_max(A - Diag(d))`` from the same eigendecomposition."""
    n = A.shape[0]
    scale = float(np.abs(A).sum(axis=1).max()) if n else 0.0
    if scale == 0.0:  # A = 0: d = 0 is optimal and S = 0
        return np.zeros(n), 0.0
    _, y, _ = solve_maxcut_sdp(A / scale, tol=tol)
    d = y * scale
    for _ in range(8):
        lam, lam_max = _psd_margin(A - np.diag(d))
        if lam >= 0.0:
            return d, lam_max
        d = d - (2.0 * -lam + 4.0 * _EPS * np.abs(d).max())
    raise RuntimeError("could not make A - Diag(d) certifiably PSD (A has non-finite or huge entries?)")


def box_bound(problem: LayerQUBO, *, rows: np.ndarray | None = None, d: np.ndarray | None = None,
              max_iter: int = 4000, rtol: float = 1e-3, time_limit: float | None = None,
              check_every: int = 250) -> BoxBound:
    """Certified bound ``(*)`` of the module docstring for ``rows`` (default: all).

    Args:
        problem: a :class:`LayerQUBO` with a shared ``A``.
        rows: row indices; ``d``: a shared diagonal from :func:`shared_diagonal` (computed and
            certified when None; a given one is checked).
        max_iter: cap on projected-gradient iterations; ``rtol``: stop when the certified total
            rose by less than ``rtol`` times its magnitude at two checks in a row (every
            ``check_every`` iterations); ``time_limit``: seconds, checked at the same points.
    Returns:
        :class:`BoxBound`; each row keeps its best certificate over the checks.
    """
    _check_layer(problem)
    for name, v in (("max_iter", max_iter), ("check_every", check_every)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if not (np.isfinite(rtol) and rtol >= 0):
        raise ValueError(f"rtol must be a finite number >= 0, got {rtol!r}")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be > 0 seconds or None, got {time_limit!r}")
    idx = np.arange(problem.rows) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(idx) and (idx.min() < 0 or idx.max() >= problem.rows):
        raise IndexError(f"rows must lie in 0..{problem.rows - 1}")
    t0 = time.perf_counter()
    A = problem.A
    if d is None:
        d, lam_max = _certified_diagonal(A, DIAGONAL_TOL)  # certified there: no second eigendecomposition
    else:
        d = np.asarray(d, dtype=np.float64)
        if d.shape != (problem.n,) or not np.isfinite(d).all():
            raise ValueError(f"d must be a finite ({problem.n},) vector, got shape {d.shape}")
        lam_min, lam_max = _psd_margin(A - np.diag(d))
        if lam_min < 0.0:
            raise ValueError(f"A - Diag(d) is not certifiably PSD (lambda_min {lam_min:.3g}); "
                             "use shared_diagonal(problem.A)")
    S = A - np.diag(d)
    sdp_seconds = time.perf_counter() - t0
    row = _Rows(problem, idx, S, d)
    values, its, history = row.solve(lam_max, max_iter, rtol, check_every,
                                     None if time_limit is None else t0 + time_limit)
    seconds = time.perf_counter() - t0
    log.info("box bound of %d rows: total %.6g after %d iterations, %.2f s (SDP %.2f s)",
             len(idx), values.sum(), its, seconds, sdp_seconds)
    return BoxBound(values=values, rows=idx, d=d, iterations=its, seconds=seconds,
                    info={"sdp_seconds": sdp_seconds, "history": history})


class _Rows:
    """The convexified rows ``f_k`` of the chosen rows (the module docstring's notation)."""

    def __init__(self, problem: LayerQUBO, idx: np.ndarray, S: np.ndarray, d: np.ndarray):
        self.S, self.absS = S, np.abs(S)
        # column scales t (rows, n) of group-wise grids, else the row scales s^2 (rows,)
        self.t = problem.scale[idx] if problem.column_scaled else None
        self.s2 = np.ones(len(idx)) if self.t is not None else problem.scale[idx] ** 2
        w2 = self.s2[:, None] if self.t is None else self.t**2  # the weight of d in each entry
        fixed = problem.fixed_mask[idx]
        value = problem.fixed_value[idx].astype(np.float64)
        self.lo = np.where(fixed, value, 0.0)
        self.hi = np.where(fixed, value, 1.0)
        h = problem.linear[idx]
        self.g0 = h + w2 * d[None, :]
        self.g0_err = _EPS * (np.abs(h) + w2 * np.abs(d)[None, :]).sum(axis=1)
        self.c = problem.offset[idx]
        self.start = np.clip(problem.prior[idx], self.lo, self.hi)
        self.gamma = 4.0 * (problem.n + 4) * _EPS

    def certificate(self, U: np.ndarray) -> np.ndarray:
        """``(*)`` at ``U`` (rows, n) in the box, minus a bound on its float64 rounding error."""
        U = np.clip(U.astype(np.float64), self.lo, self.hi)
        if self.t is not None:  # the quadratic part in y = t * u, its gradient t * 2 S y
            Y = self.t * U
            SY = Y @ self.S
            g = 2.0 * self.t * SY + self.g0
            quad = np.einsum("rc,rc->r", SY, Y)
            aY = np.abs(Y)
            aSY = aY @ self.absS
            quad_err, grad_err = np.einsum("rc,rc->r", aSY, aY), 2.0 * self.t * aSY
        else:
            SU = U @ self.S
            g = 2.0 * self.s2[:, None] * SU + self.g0
            quad = self.s2 * np.einsum("rc,rc->r", SU, U)
            aU = np.abs(U)
            aSU = aU @ self.absS
            quad_err, grad_err = self.s2 * np.einsum("rc,rc->r", aSU, aU), 2.0 * self.s2[:, None] * aSU
        f = quad + np.einsum("rc,rc->r", self.g0, U) + self.c
        step = np.where(g > 0, self.lo - U, self.hi - U)
        lin = np.einsum("rc,rc->r", g, step)
        err = self.gamma * (quad_err + np.einsum("rc,rc->r", np.abs(self.g0), np.abs(U))
                            + np.abs(self.c) + (grad_err + np.abs(self.g0)).sum(axis=1)
                            + np.abs(g * step).sum(axis=1)) + self.g0_err
        return f + lin - err

    def solve(self, lam_max: float, max_iter: int, rtol: float, check_every: int,
              deadline: float | None) -> tuple[np.ndarray, int, list]:
        T = np.float32
        dS = np.maximum(np.diag(self.S), 1e-12 * max(lam_max, _EPS))
        p = np.sqrt(dS)
        L = float(np.linalg.eigvalsh(self.S / p[:, None] / p[None, :])[-1])  # of the Jacobi-scaled S
        S32 = self.S.astype(T)
        if self.t is None:
            step = ((1.0 / (2.0 * self.s2 * max(L, _EPS)))[:, None] / dS[None, :]).astype(T)
        else:  # Jacobi step of the column-scaled curvature 2 T S T
            step = ((1.0 / (2.0 * max(L, _EPS))) / (self.t**2 * dS[None, :])).astype(T)
        coef = (2.0 * self.s2[:, None]).astype(T)
        t32 = None if self.t is None else self.t.astype(T)
        g0, lo, hi = self.g0.astype(T), self.lo.astype(T), self.hi.astype(T)
        V = self.start.astype(T)
        Y, t = V.copy(), 1.0
        best = self.certificate(V)
        history = [(0, float(best.sum()))]
        it, slow = 0, 0
        for it in range(1, max_iter + 1):
            grad = coef * (Y @ S32) + g0 if t32 is None else 2 * t32 * ((t32 * Y) @ S32) + g0
            Vn = np.clip(Y - step * grad, lo, hi)
            tn = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
            keep = (np.einsum("rc,rc->r", Y - Vn, Vn - V) <= 0)[:, None]  # restart where momentum hurts
            Y = Vn + T((t - 1.0) / tn) * (Vn - V) * keep
            V, t = Vn, tn
            if it % check_every == 0 or it == max_iter:
                prev = float(best.sum())
                best = np.maximum(best, self.certificate(V))
                total = float(best.sum())
                history.append((it, total))
                slow = slow + 1 if total - prev <= rtol * abs(total) else 0
                if slow == 2 or (deadline is not None and time.perf_counter() > deadline):
                    break
        return best, it, history
