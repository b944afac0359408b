"""The ``sparse`` backend of :class:`~qubo_round.solvers.anneal.Anneal`: single-flip Metropolis
annealing over the nonzero couplings only, compiled with numba.

For sparse problems (max-cut graphs, spin glasses: degree 4 on a torus) the dense backends pay
O(n) per proposal; here a proposal costs O(1) and an accepted flip O(degree). Row ``k`` is
``Q_k = s2_k M_g + diag(h_k)`` (the annealer's form); ``M_g`` off its diagonal is stored once
per distinct matrix in CSR. The local field of variable ``i``::

    f_i = Q_ii + 2 sum_{j != i} Q_ij x_j,    flipping x_i changes E_k by (1 - 2 x_i) f_i,

is kept up to date incrementally (float64; recomputed exactly at every chunk boundary). Every
(read, row) chain is independent: its own xorshift64* generator (seeded from the solve's
generator, so the result does not depend on the thread count), sweeps in variable order, a
geometric or linear schedule of its row's ``beta``. The best state of each chain seen at the end
of a sweep is kept (annealing chains can climb out of their best state while warm).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

__all__ = ["SparseForm", "sparse_form", "anneal_sparse_chunk", "exact_fields", "seeds_for"]

class SparseForm(NamedTuple):
    """``M_g`` off the diagonal in stacked CSR: group ``g``'s row ``i`` has its couplings at
    ``indices/data[start[g, i]:start[g, i + 1]]``; ``diag`` (rows, n) is ``Q_k``'s diagonal,
    ``s2`` (rows,) the rows' scales, ``group`` (rows,) each row's matrix."""

    start: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    diag: np.ndarray
    s2: np.ndarray
    group: np.ndarray


def sparse_form(M: np.ndarray, s2: np.ndarray, h: np.ndarray) -> SparseForm:
    """From the annealer's dense form (M (G, n, n), s2 (rows,), h (rows, n))."""
    G, n, _ = M.shape
    starts, idx, val = [], [], []
    offset = 0
    for g in range(G):
        off = M[g].copy()
        np.fill_diagonal(off, 0.0)
        r, c = np.nonzero(off)
        counts = np.bincount(r, minlength=n)
        starts.append(offset + np.concatenate([[0], np.cumsum(counts)]))
        idx.append(c.astype(np.int64))
        val.append(off[r, c].astype(np.float64))
        offset += len(c)
    rows = len(s2)
    group = np.zeros(rows, np.int64) if G == 1 else np.arange(rows, dtype=np.int64)
    dM = np.diagonal(M, axis1=1, axis2=2)[group]  # (rows, n)
    diag = s2[:, None] * dM + h
    return SparseForm(np.stack(starts).astype(np.int64), np.concatenate(idx), np.concatenate(val),
                      np.ascontiguousarray(diag, np.float64), np.ascontiguousarray(s2, np.float64), group)


@njit(cache=True)
def _next(state: np.ndarray, j: int) -> float:
    """xorshift64* step of chain ``j``; a uniform double in [0, 1)."""
    x = state[j]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    state[j] = x
    return float((x * np.uint64(2685821657736338717)) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, parallel=True)
def exact_fields(start, indices, data, diag, s2, group, row_of, X, F):
    """``F[j] = f(X[j])`` for every chain ``j`` (row ``row_of[j]``)."""
    J, n = X.shape
    for j in prange(J):
        k = row_of[j]
        g = group[k]
        for i in range(n):
            acc = 0.0
            for p in range(start[g, i], start[g, i + 1]):
                if X[j, indices[p]]:
                    acc += data[p]
            F[j, i] = diag[k, i] + 2.0 * s2[k] * acc


@njit(cache=True, parallel=True)
def anneal_sparse_chunk(start, indices, data, s2, group, row_of, free, betas, s0, s1,
                        X, F, E, best_X, best_E, rng_state):
    """Sweeps ``s0 .. s1-1`` of every chain; updates ``X, F, E`` (current) and ``best_X, best_E``.

    Args:
        betas: (sweeps, rows) inverse temperatures; free: (rows, n) bool.
        X: (J, n) uint8; F: (J, n) fields; E: (J,) energies (offset excluded).
    """
    J, n = X.shape
    for j in prange(J):
        k = row_of[j]
        g = group[k]
        sk = 2.0 * s2[k]
        for s in range(s0, s1):
            beta = betas[s, k]
            for i in range(n):
                if not free[k, i]:
                    continue
                d = F[j, i] if X[j, i] == 0 else -F[j, i]
                if d > 0.0:
                    if beta * d > 40.0 or _next(rng_state, j) >= np.exp(-beta * d):
                        continue
                X[j, i] = 1 - X[j, i]
                E[j] += d
                step = sk if X[j, i] == 1 else -sk
                for p in range(start[g, i], start[g, i + 1]):
                    F[j, indices[p]] += step * data[p]
            if E[j] < best_E[j]:
                best_E[j] = E[j]
                for i in range(n):
                    best_X[j, i] = X[j, i]


def seeds_for(rng: np.random.Generator, J: int) -> np.ndarray:
    """(J,) nonzero uint64 xorshift states drawn from ``rng``."""
    s = rng.integers(1, np.iinfo(np.int64).max, size=J, dtype=np.int64).astype(np.uint64)
    return s | np.uint64(1)
