"""The compiled depth-first search of the branch and bound (:mod:`qubo_round.lattice`).

The row is a box-constrained integer least-squares problem over ``v in {0,1}^m``::

    f(v) = (v - u)^T P (v - u) + beta = || R (v - u) ||^2 + beta,     P = R^T R, R upper triangular

and the search fixes ``v_{m-1}, v_{m-2}, ..., v_0`` in that order (the last column of ``R`` first,
as a sphere decoder does). With ``v_{k+1..m-1}`` fixed, the terms of levels ``i >= k`` are final::

    d_k = d_{k+1} + R_kk^2 (v_k - c_k)^2,     c_k = u_k - sum_{l > k} R_kl (v_l - u_l) / R_kk

so ``d_k`` is a lower bound of ``f - beta`` over the whole subtree (the remaining terms are squares).
Children are tried nearest to the centre ``c_k`` first (Schnorr-Euchner), so once the nearer child
is pruned the farther one is too. A node is pruned when ``d_k >= radius - margin``: every
solution lower than the incumbent by more than ``2 margin`` (the rounding allowance) is found.

The search state lives in the arrays it is given, so a search cut into chunks of node visits
(for the time checks between them) is the same search as one long call; ``open_bound`` gives the
lower bound of everything not yet explored when a time limit stops it.
"""
from __future__ import annotations

from numba import njit

# entries of the int64 state vector ``st``
S_LEVEL = 0   # current level k (m: the search is over)
S_NODES = 1   # node visits so far
S_LEAVES = 2  # improving leaves found
N_ST = 3


@njit(cache=True, nogil=True)
def init_state(m, u, st, tried, cen):
    """Start a search at the root: level m-1 with centre u_{m-1}."""
    st[S_LEVEL] = m - 1
    st[S_NODES] = 0
    st[S_LEAVES] = 0
    for i in range(m):
        tried[i] = 0
    if m > 0:
        cen[m - 1] = u[m - 1]


@njit(cache=True, nogil=True)
def search(R, u, radius, margin, v, best, tried, cen, dist, st, max_visits):
    """Advance the depth-first search by up to ``max_visits`` node visits.

    Args:
        R: (m, m) upper triangular, positive diagonal; u: (m,) the continuous minimiser.
        radius: (1,) float64, the incumbent's ``f - beta`` (lowered when a better leaf is found).
        margin: pruning allowance.
        v: (m,) int64 current values of the fixed levels; best: (m,) int64 the incumbent.
        tried: (m,) int64 children tried per level (0, 1, 2); cen: (m,) centres; dist: (m+1,)
            partial costs (``dist[m] = 0``); st: (N_ST,) int64 state.
    Returns:
        True when the search is complete (``st[S_LEVEL] == m``).
    """
    m = R.shape[0]
    k = st[S_LEVEL]
    visits = 0
    while k < m and visits < max_visits:
        t = tried[k]
        if t == 0:
            v[k] = 1 if cen[k] >= 0.5 else 0
            tried[k] = 1
        elif t == 1:
            v[k] = 1 - v[k]
            tried[k] = 2
        else:
            k += 1
            continue
        visits += 1
        diff = R[k, k] * (v[k] - cen[k])
        d = dist[k + 1] + diff * diff
        if d >= radius[0] - margin:
            tried[k] = 2  # the other child is farther from the centre: pruned as well
            continue
        if k == 0:
            radius[0] = d
            for i in range(m):
                best[i] = v[i]
            st[S_LEAVES] += 1
            continue
        dist[k] = d
        k -= 1
        acc = 0.0
        for l in range(k + 1, m):
            acc += R[k, l] * (v[l] - u[l])
        cen[k] = u[k] - acc / R[k, k]
        tried[k] = 0
    st[S_LEVEL] = k
    st[S_NODES] += visits
    return k >= m


@njit(cache=True, nogil=True)
def open_bound(R, v, tried, cen, dist, st, radius):
    """Lower bound of ``f - beta`` over the solutions not yet ruled out: the incumbent, and for
    every level on the current path whose second child is still untried, that child's cost."""
    m = R.shape[0]
    lb = radius[0]
    k0 = st[S_LEVEL]
    for k in range(k0, m):
        if k == k0 and tried[k] == 0:
            lb = min(lb, dist[k + 1])  # the level just entered: nothing of it is explored yet
            continue
        if tried[k] == 1:
            other = 1 - v[k]
            diff = R[k, k] * (other - cen[k])
            lb = min(lb, dist[k + 1] + diff * diff)
    return lb
