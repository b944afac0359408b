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
eigenvalue of ``L^-1 dA L^-T``: Lanczos from ``n = 400`` on, a dense eigendecomposition below;
each accepted step is checked by the Cholesky factorisation the next iteration needs, and
shortened where it fails). On large rows this removes the four dense eigendecompositions that
dominated an iteration (``benchmarks/sdp_bounds.py`` times the bounds).

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
import scipy.sparse.linalg as spla
from scipy.linalg import lapack

log = logging.getLogger(__name__)

__all__ = ["solve_maxcut_sdp"]


def _chol(A: np.ndarray, ridge: float = 0.0) -> np.ndarray | None:
    """Lower Cholesky factor of ``A + ridge I``, or None when that is not numerically positive definite."""
    if ridge:
        A = A + ridge * np.eye(len(A))
    L, info = lapack.dpotrf(A, lower=1, clean=1)
    return L if info == 0 else None


#: From this size on, step lengths come from Lanczos (a few O(n^2) products) instead of a dense
#: O(n^3) eigendecomposition; below it the dense one is faster.
LANCZOS_MIN_N = 400


def _min_eig(matvec, dense, n: int, lanczos_from: int) -> float:
    """Smallest eigenvalue of the symmetric operator ``matvec`` (``dense()`` builds it as a matrix).

    Lanczos (ARPACK) from a fixed start vector, so deterministic; the dense eigendecomposition
    below ``lanczos_from`` or when Lanczos does not converge.
    """
    if n >= max(lanczos_from, 3):  # ARPACK needs k = 1 < n - 1
        op = spla.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
        try:
            return float(spla.eigsh(op, k=1, which="SA", tol=1e-6, v0=np.ones(n),
                                    maxiter=20 * n, return_eigenvectors=False)[0])
        except spla.ArpackNoConvergence:
            log.debug("ipm: Lanczos did not converge at n=%d, dense eigendecomposition", n)
    W = dense()
    return float(np.linalg.eigvalsh((W + W.T) / 2.0)[0])


def _max_step(L: np.ndarray, dA, tau: float, lanczos_from: int) -> float:
    """``min(1, tau a*)``, ``a*`` the largest step with ``L L^T + a dA`` PSD.

    ``dA`` is a symmetric (n, n) matrix or, for a diagonal direction, its (n,) diagonal.
    ``a* = -1 / lambda_min(L^-1 dA L^-T)`` when that eigenvalue is negative.
    """
    n = len(L)
    diag = np.ndim(dA) == 1

    def matvec(v):
        w = sl.solve_triangular(L, np.ravel(v), lower=True, trans="T", check_finite=False)
        return sl.solve_triangular(L, dA * w if diag else dA @ w, lower=True, check_finite=False)

    def dense():
        W = sl.solve_triangular(L, np.diag(dA) if diag else dA, lower=True)
        return sl.solve_triangular(L, W.T, lower=True)

    lam = _min_eig(matvec, dense, n, lanczos_from)
    return 1.0 if lam >= 0.0 else min(1.0, -tau / lam)


def _step_inside(make, a: float, tau: float, tries: int = 8):
    """``(a, point, factor)`` for the longest of ``a, tau a, ..., tau^(tries-1) a`` where
    ``make(a)`` factorises (``make`` returns ``(point, Cholesky factor or None)``); when none
    does, ``a`` itself with factor None (the next iteration stops unless the gap is closed).

    The Lanczos estimate of the smallest eigenvalue lies above the true one, so its step can be
    a little long; the factorisation keeps every iterate strictly inside the cone, and is the
    one the next iteration needs anyway.
    """
    first = None
    for k in range(tries):
        point, L = make(a * tau ** k)
        if L is not None:
            return a * tau ** k, point, L
        if first is None:
            first = point
    return a, first, None


def solve_maxcut_sdp(C: np.ndarray, *, tol: float = 1e-10, max_iter: int = 100, tau: float = 0.95,
                     lanczos_from: int = LANCZOS_MIN_N) -> tuple[np.ndarray, np.ndarray, dict]:
    """Interior-point solution of ``min <C, X>, diag X = 1, X PSD`` (module docstring).

    Args:
        C: (n, n) symmetric (scale it to O(1) entries; the row sums are a good unit).
        tol: stop when ``<C, X> - 1^T y <= tol (1 + |1^T y|)``.
        max_iter: iteration cap; ``tau``: fraction of the step to the cone's boundary.
        lanczos_from: from this ``n`` on, step lengths by Lanczos instead of a dense
            eigendecomposition (same iterates up to the eigenvalue's accuracy).
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
    Z = C - np.diag(y)
    LX, LZ = _chol(X), _chol(Z)
    status, it, gap = "max_iter", 0, np.inf

    # X and Z turn singular at the optimum (rank r and n - r): factorise them with a ridge at
    # the level of their rounding errors, else the last steps fail though the iterates are PSD
    ridge = 4.0 * n * np.finfo(np.float64).eps

    def new_X(a):
        Xn = X + a * dX
        Xn[np.diag_indices(n)] = 1.0  # diag(dX) = 1 - diag(X) = 0 up to rounding
        return Xn, _chol(Xn, ridge)

    def new_Z(a):
        Zn = C - np.diag(y + a * dy)
        return Zn, _chol(Zn, ridge * float(np.abs(Zn).max()))

    for it in range(max_iter):
        dobj = float(y.sum())
        gap = float(np.sum(C * X)) - dobj
        if gap <= tol * (1.0 + abs(dobj)):
            status = "optimal"
            break
        if LX is None or LZ is None:  # C not finite, or an iterate too close to singular
            status = "numerical"
            break
        Zi, info = lapack.dpotri(LZ, lower=1)
        if info != 0:
            status = "numerical"
            break
        Zi = np.tril(Zi) + np.tril(Zi, -1).T
        mu = float(np.sum(Z * X)) / n
        try:
            schur = sl.cho_factor(Zi * X, lower=True)
        except np.linalg.LinAlgError:
            status = "numerical"
            break
        dZi = np.diag(Zi)
        # predictor (sigma = 0): its step lengths only choose sigma
        dya = sl.cho_solve(schur, ones)
        dXa = (Zi * dya[None, :]) @ X - X
        dXa = (dXa + dXa.T) / 2.0
        ap, ad = _max_step(LX, dXa, tau, lanczos_from), _max_step(LZ, -dya, tau, lanczos_from)
        g_aff = float(np.sum((X + ap * dXa) * (Z - ad * np.diag(dya))))
        sigma = min(1.0, (g_aff / (mu * n)) ** 3)
        # corrector
        R = -(Zi * dya[None, :]) @ dXa
        dy = sl.cho_solve(schur, ones - sigma * mu * dZi + np.diag(R))
        dX = sigma * mu * Zi - R - X + (Zi * dy[None, :]) @ X
        dX = (dX + dX.T) / 2.0
        _, X, LX = _step_inside(new_X, _max_step(LX, dX, tau, lanczos_from), tau)
        ad, Z, LZ = _step_inside(new_Z, _max_step(LZ, -dy, tau, lanczos_from), tau)
        y = y + ad * dy
    log.debug("ipm: n=%d %s after %d iterations, gap %.3g", n, status, it, gap)
    return X, y, {"iterations": it, "gap": gap, "status": status}
