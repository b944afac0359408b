"""The Kronecker (K-FAC) Gauss-Newton loss of one layer's rounding, and a descent on it.

A rounding ``W_hat = S * (L - Z + V)`` of a layer ``y = W x`` changes the model's output ``f``
by ``J_x dW x`` to first order (``dW = W_hat - W``; ``J_x`` the Jacobian of ``f`` with respect to
the layer's output at input ``x``), so the Gauss-Newton loss of the output error is
``E[||J_x dW x||^2]``. Its Kronecker factorisation (K-FAC: Martens and Grosse 2015; Ritter et al.
2018), with the output-side factor ``G = E[J^T J]`` (rows, rows) and the input-side
``H = E[x x^T]`` (cols, cols) taken apart::

    E(V) = tr(G dW H dW^T)                                           (K)

``G = I`` gives the layer-wise QUBO of eq. 20 (rows independent). Any other ``G`` couples the
rows: flipping entry ``(i, j)`` by ``delta = +-S_ij`` changes ``(K)`` by::

    2 delta R_ij + delta^2 G_ii H_jj,          R = G dW H

and adds ``delta G[:, i] H[j, :]`` to ``R``. :func:`kronecker_descent` takes, per round, the
entries whose single flip lowers ``(K)`` (the best of them: ``max_batch`` in the first round, then
four times as many as the last round kept) and flips them as one
batch after a sequential filter: in order of their own change, a flip is kept when its change
given the flips kept before it (its own plus ``2 delta_a delta_b G_{i_a i_b} H_{j_a j_b}`` for
each kept ``a``) is negative. So every kept flip lowers ``(K)`` given the ones before it, each
round lowers ``(K)``, and the descent stops at a local minimum of single flips (within the
layer's fixed entries).

Asymmetric reconstruction (the quantized network's inputs ``x_hat`` at this layer, the float
layer's output ``W x`` as the target) gives, with the same factorisation,
``E[||J (W_hat x_hat - W x)||^2] = tr(G (W_hat - W*) H_hat (W_hat - W*)^T) + const`` where
``H_hat = E[x_hat x_hat^T]``, ``C = E[x_hat x^T]`` and ``W* H_hat = W C^T``: the same form ``(K)``
with ``H_hat`` for ``H`` and the target ``W*`` for ``W`` (:func:`asymmetric_target`; ``const``,
what no rounding can remove, is left out of the values reported).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from numba import njit

from .grid import RoundingSpace

log = logging.getLogger(__name__)

__all__ = ["KroneckerLoss", "kronecker_descent", "asymmetric_target"]

#: Rounds between recomputations of ``R = G dW H`` from scratch (bounds the drift of the
#: rank-``|batch|`` updates; each recomputation costs two products).
REFRESH_EVERY = 64
#: Most flips tried as one batch (the pairwise terms cost (flips kept) x b for a batch of b).
MAX_BATCH = 1024
#: Fewest candidates per round (after the first: four times the flips the last round kept).
MIN_BATCH = 64
#: Rounds over which ``rtol`` measures the decrease.
PATIENCE = 20


@dataclass(frozen=True)
class KroneckerLoss:
    """``(K)`` of the module docstring for one layer.

    Attributes:
        G: (rows, rows) symmetric PSD output-side factor ``E[J^T J]``.
        H: (cols, cols) symmetric PSD input-side factor ``E[x x^T]``.
        shrinkage: where ``G`` is an estimate shrunk toward its diagonal, the weight of the
            diagonal (:func:`~qubo_round.gauss_newton.kronecker_factors`); 0: as estimated.
        target: (rows, cols) the weight ``dW`` is measured from (None: the layer's own ``W``;
            asymmetric reconstruction: ``W*`` of :func:`asymmetric_target`, with ``H_hat`` as ``H``).
    """

    G: np.ndarray
    H: np.ndarray
    shrinkage: float = 0.0
    target: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("G", "H"):
            a = np.asarray(getattr(self, name), dtype=np.float64)
            if a.ndim != 2 or a.shape[0] != a.shape[1] or not np.isfinite(a).all():
                raise ValueError(f"KroneckerLoss: {name} must be a finite square matrix, got shape {a.shape}")
            object.__setattr__(self, name, (a + a.T) / 2.0)
        if not 0.0 <= self.shrinkage <= 1.0:
            raise ValueError(f"KroneckerLoss: shrinkage must be in [0, 1], got {self.shrinkage!r}")
        if self.target is not None:
            t = np.asarray(self.target, dtype=np.float64)
            if t.shape != (self.G.shape[0], self.H.shape[0]) or not np.isfinite(t).all():
                raise ValueError(f"KroneckerLoss: target must be a finite ({self.G.shape[0]}, {self.H.shape[0]}) "
                                 f"matrix, got shape {t.shape}")
            object.__setattr__(self, "target", t)

    def check(self, space: RoundingSpace) -> None:
        rows, cols = space.shape
        if self.G.shape != (rows, rows) or self.H.shape != (cols, cols):
            raise ValueError(f"KroneckerLoss: G {self.G.shape} and H {self.H.shape} do not fit a weight of "
                             f"shape {space.shape}; need G ({rows}, {rows}) and H ({cols}, {cols})")

    def reference(self, space: RoundingSpace) -> np.ndarray:
        """The weight ``dW`` is measured from: :attr:`target`, else the layer's ``W``."""
        return space.W if self.target is None else self.target

    def value(self, space: RoundingSpace, V: np.ndarray) -> float:
        """``(K)`` of the rounding ``V`` (rows, cols)."""
        self.check(space)
        dW = space.dequantize(V) - self.reference(space)
        return float(np.einsum("rc,rc->", self.G @ dW @ self.H, dW))


def asymmetric_target(W: np.ndarray, H_hat: np.ndarray, C: np.ndarray) -> np.ndarray:
    """``W*`` (rows, cols) with ``W* H_hat = W C^T`` (module docstring; ``C = E[x_hat x^T]``): the
    weight that reproduces the float layer's output best from the quantized inputs. A singular
    ``H_hat`` (dead inputs) is damped by ``1e-10`` of its mean diagonal: the loss does not see
    ``W*`` along its null space."""
    H_hat = np.asarray(H_hat, dtype=np.float64)
    lam = 1e-10 * max(float(np.trace(H_hat)) / max(len(H_hat), 1), np.finfo(np.float64).tiny)
    rhs = (np.asarray(W, dtype=np.float64) @ np.asarray(C, dtype=np.float64).T).T  # H_hat W*^T = C W^T
    return scipy.linalg.solve(H_hat + lam * np.eye(len(H_hat)), rhs, assume_a="pos").T


def kronecker_descent(loss: KroneckerLoss, space: RoundingSpace, V: np.ndarray, *,
                      rtol: float = 0.0, max_batch: int = MAX_BATCH, time_limit: float | None = None) -> tuple[np.ndarray, dict]:
    """Descend ``(K)`` from the rounding ``V`` (rows, cols) by flips of free entries.

    Returns:
        ``(V, info)``: the rounding (uint8, never of higher ``(K)`` than the start, up to
        rounding) and ``info`` with ``loss_start``, ``loss``, ``flips``, ``rounds``, ``seconds``,
        ``history`` (the loss after each round, as tracked), ``status`` (``local_minimum``,
        ``converged`` (``rtol``: 20 rounds lowered it by less than ``rtol`` of its value),
        ``time_limit``, or ``no_descent`` when the start is returned).
    """
    loss.check(space)
    if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
        raise ValueError(f"max_batch must be an integer >= 1, got {max_batch!r}")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be > 0 seconds or None, got {time_limit!r}")
    if not (np.isfinite(rtol) and rtol >= 0):
        raise ValueError(f"rtol must be a finite number >= 0, got {rtol!r}")
    t0 = time.perf_counter()
    V0 = V
    V = space.check_assignment(V).astype(np.float64)
    G, H = loss.G, loss.H
    S = np.broadcast_to(space.S, space.shape)
    free = ~space.fixed_mask
    base = space.S * (space.L - space.Z) - loss.reference(space)  # dW = base + S V
    dG, dH = np.diag(G), np.diag(H)
    curv = np.where(free, S * S * dG[:, None] * dH[None, :], np.inf)  # inf: fixed entries never flip
    delta = np.where(V > 0.5, -S, S)  # the step a flip makes, kept up to date
    cols = space.shape[1]

    def residual() -> np.ndarray:
        return G @ (base + S * V) @ H

    G32, H32 = G.astype(np.float32), H.astype(np.float32)
    R = residual()
    start = float(np.einsum("rc,rc->", R, base + S * V))
    tol = 1e-13 * max(abs(start), np.finfo(np.float64).tiny)
    flips = rounds = 0
    status = "local_minimum"
    history = [start]
    batch = max_batch
    fresh = True
    idx, val = np.empty(R.size, np.int64), np.empty(R.size)  # the candidate scan's buffers, reused
    while True:
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            status = "time_limit"
            break
        n = _improving(R, delta, curv, tol, idx, val)  # one pass: the flips that lower (K) alone
        flat, gain = idx[:n], val[:n]  # views: consumed (copied by the indexing below) before the next scan
        if not n:
            if fresh:
                break
            R, fresh = residual(), True  # a minimum is only declared on R recomputed in float64
            continue
        if len(flat) > batch:
            part = np.argpartition(gain, batch - 1)[:batch]
            flat, gain = flat[part], gain[part]
        order = np.argsort(gain)
        cand, gain = flat[order], gain[order]
        I, J = np.divmod(cand, cols)
        d = delta[I, J]
        take, change = _sequential(gain, I, J, d, G, H, tol)
        I, J, d = I[take], J[take], d[take]
        batch = int(min(max_batch, max(MIN_BATCH, 4 * len(I))))  # candidates: a few times what was kept
        V[I, J] = 1.0 - V[I, J]
        delta[I, J] = -d
        # rank-|I| update in float32 (G symmetric: rows gathered, not columns); R is recomputed in
        # float64 every REFRESH_EVERY rounds, and the result is checked in float64 at the end
        R += (G32[I] * d[:, None].astype(np.float32)).T @ H32[J]
        fresh = False
        flips += len(I)
        rounds += 1
        history.append(history[-1] + change)
        if rounds % REFRESH_EVERY == 0:
            R, fresh = residual(), True
        if rtol and rounds >= PATIENCE and history[-PATIENCE] - history[-1] < rtol * abs(history[-1]):
            status = "converged"
            break
    end = float(np.einsum("rc,rc->", residual(), base + S * V))
    if end > start:  # rounding in the float32 updates let a net-zero descent drift up: keep the start
        V, end, status = space.check_assignment(V0).astype(np.float64), start, "no_descent"
    info = {"loss_start": start, "loss": end, "flips": flips, "rounds": rounds, "history": history,
            "seconds": time.perf_counter() - t0, "status": status}
    log.debug("kronecker descent: %.6g -> %.6g, %d flips in %d rounds, %.2f s", start, end, flips, rounds,
              info["seconds"])
    return V.astype(np.uint8), info


@njit(cache=True, nogil=True)
def _improving(R, delta, curv, tol, idx, val):
    """Writes the flat indices and changes ``2 delta R + curv`` of the single flips that lower ``(K)``
    by more than ``tol`` to the front of ``idx`` and ``val`` (one pass over the weight); returns their number."""
    r, c = R.shape
    n = 0
    for i in range(r):
        for j in range(c):
            g = 2.0 * delta[i, j] * R[i, j] + curv[i, j]
            if g < -tol:
                idx[n] = i * c + j
                val[n] = g
                n += 1
    return n


@njit(cache=True, nogil=True)
def _sequential(gain, I, J, d, G, H, tol):
    """Mask of the flips kept and their joint change, in order: flip ``b`` is kept when ``gain[b]`` plus
    ``2 d_a d_b G[I_a, I_b] H[J_a, J_b]`` over the kept ``a < b`` is below ``-tol`` (the first, the
    best, always is). The pairwise terms are formed for the kept flips only."""
    n = gain.shape[0]
    marginal = gain.copy()
    take = np.zeros(n, np.bool_)
    change = 0.0
    for b in range(n):
        if marginal[b] < -tol:
            take[b] = True
            change += marginal[b]
            ib, jb, db = I[b], J[b], 2.0 * d[b]
            for c in range(b + 1, n):
                marginal[c] += db * d[c] * G[ib, I[c]] * H[jb, J[c]]
    return take, change
