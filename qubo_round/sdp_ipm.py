"""A primal-dual interior-point method for the max-cut form SDP of one row.

Solves the pair (``C`` (n, n) symmetric, here the homogenised row ``M`` of
:func:`qubo_round.bounds.homogenise`)::

    primal:  min <C, X>   s.t.  diag X = 1,  X PSD
    dual:    max 1^T y    s.t.  Z = C - Diag(y) PSD

along the central path ``Z X = mu I`` with the HKM (XZ) search direction and Mehrotra's
predictor-corrector, the method of Helmberg, Rendl, Vanderbei and Wolkowicz (SIAM J. Optim.
6(2), 1996) for this very SDP. Linearising ``Z X = sigma mu I`` with ``dZ = -Diag(dy)`` gives

    dX = sigma mu Z^-1 - X + Z^-1 Diag(dy) X - R,        R = Z^-1 dZ_a dX_a (corrector; 0 in
                                                          the predictor),
    (Z^-1 o X) dy = 1 - sigma mu diag(Z^-1) + diag(R)    (from diag(X + dX) = 1),

so each iteration costs a few dense O(n^3) factorisations and products and one n x n Schur
system ``Z^-1 o X`` (Hadamard product, positive definite). Step lengths keep ``X`` and ``Z``
strictly inside the cone (fraction ``tau`` of the way to the boundary, from the smallest
eigenvalue of ``L^-1 dA L^-T``).

Why not only Burer-Monteiro: the layer rows are badly conditioned (nearly collinear inputs), so
first-order methods on the factor crawl: on digits fc1 W2 row 0 (443 free variables) L-BFGS
Burer-Monteiro takes about 16x this method's time for a slightly weaker certified bound
(numbers in :mod:`qubo_round.bounds`, from ``benchmarks/sdp_bounds.py``).

The returned ``y`` is only a candidate: the caller certifies it (:func:`qubo_round.bounds.certify`).
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.linalg as sl
from scipy.linalg import lapack

log = logging.getLogger(__name__)

__all__ = ["solve_maxcut_sdp"]


def _chol(A: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor of ``A``, or None when ``A`` is not numerically positive definite."""
    L, info = lapack.dpotrf(A, lower=1, clean=1)
    return L if info == 0 else None


def _step(L: np.ndarray, dA: np.ndarray, tau: float) -> float:
    """``min(1, tau a*)``, ``a*`` the largest step with ``L L^T + a dA`` PSD."""
    W = sl.solve_triangular(L, dA, lower=True)
    W = sl.solve_triangular(L, W.T, lower=True)
    lam = float(np.linalg.eigvalsh((W + W.T) / 2.0)[0])
    return 1.0 if lam >= 0.0 else min(1.0, -tau / lam)


def _diag_step(Li: np.ndarray, d: np.ndarray, tau: float) -> float:
    """The same for ``Z - a Diag(d)`` given ``Li = L_Z^-1``."""
    W = (Li * (-d)[None, :]) @ Li.T
    lam = float(np.linalg.eigvalsh((W + W.T) / 2.0)[0])
    return 1.0 if lam >= 0.0 else min(1.0, -tau / lam)


def solve_maxcut_sdp(C: np.ndarray, *, tol: float = 1e-10, max_iter: int = 100,
                     tau: float = 0.95) -> tuple[np.ndarray, np.ndarray, dict]:
    """Interior-point solution of ``min <C, X>, diag X = 1, X PSD`` (module docstring).

    Args:
        C: (n, n) symmetric (scale it to O(1) entries; the row sums are a good unit).
        tol: stop when ``<C, X> - 1^T y <= tol (1 + |1^T y|)``.
        max_iter: iteration cap; ``tau``: fraction of the step to the cone's boundary.
    Returns:
        ``(X, y, info)``: X (n, n) primal feasible (unit diagonal, PSD), y (n,) the dual
        candidate, info with ``iterations``, ``gap`` (duality gap) and ``status``
        ('optimal', 'max_iter' or 'numerical': a factorisation failed and the last interior
        point is returned).
    """
    C = np.asarray(C, dtype=np.float64)
    n = C.shape[0]
    X = np.eye(n)
    y = -np.abs(C).sum(axis=1) - 1.0  # Z = C - Diag(y) strictly diagonally dominant
    ones = np.ones(n)
    status, it, gap = "max_iter", 0, np.inf
    for it in range(max_iter):
        Z = C - np.diag(y)
        dobj = float(y.sum())
        gap = float(np.sum(C * X)) - dobj
        if gap <= tol * (1.0 + abs(dobj)):
            status = "optimal"
            break
        LX, LZ = _chol(X), _chol(Z)
        if LX is None or LZ is None:
            status = "numerical"
            break
        Li = sl.solve_triangular(LZ, np.eye(n), lower=True)
        Zi = Li.T @ Li
        mu = float(np.sum(Z * X)) / n
        try:
            schur = sl.cho_factor(Zi * X, lower=True)
        except np.linalg.LinAlgError:
            status = "numerical"
            break
        dZi = np.diag(Zi)
        # predictor (sigma = 0)
        dya = sl.cho_solve(schur, ones)
        dXa = (Zi * dya[None, :]) @ X - X
        dXa = (dXa + dXa.T) / 2.0
        ap, ad = _step(LX, dXa, tau), _diag_step(Li, dya, tau)
        g_aff = float(np.sum((X + ap * dXa) * (Z - ad * np.diag(dya))))
        sigma = min(1.0, (g_aff / (mu * n)) ** 3)
        # corrector
        R = -(Zi * dya[None, :]) @ dXa
        dy = sl.cho_solve(schur, ones - sigma * mu * dZi + np.diag(R))
        dX = sigma * mu * Zi - R - X + (Zi * dy[None, :]) @ X
        dX = (dX + dX.T) / 2.0
        ap, ad = _step(LX, dX, tau), _diag_step(Li, dy, tau)
        X = X + ap * dX
        X[np.diag_indices(n)] = 1.0  # diag(dX) = 1 - diag(X) = 0 up to rounding
        y = y + ad * dy
    log.debug("ipm: n=%d %s after %d iterations, gap %.3g", n, status, it, gap)
    return X, y, {"iterations": it, "gap": gap, "status": status}
