"""The compiled core of the iterated tabu search (:mod:`qubo_round.solvers.its`).

One row ``k`` is the QUBO ``E_k(x) = x^T Q_k x`` (offset left out) with ``Q_k = s2_k A_g + diag(h_k)``,
``A_g`` one of the ``G`` matrices (``g = gidx[k]``: one shared matrix for a covariance layer, one
per row for per-row Hessians, ``s2 = 1, h = 0`` for a plain dense QUBO), or with column scales
(group-wise grids, ``col`` true) ``Q_k = T_k A_g T_k + diag(h_k)``, ``T_k = diag(t_k)``: the same
moves with ``Q_ji = t_kj t_ki A_g[j, i]``, the branch taken once per move, outside the loops. A single flip of ``x_i``
(``delta_i = 1 - 2 x_i``) changes the energy by::

    d_i = 2 delta_i (Q x)_i + Q_ii

and the local fields ``(Q x)_j`` by ``delta_i Q_ji``, so one move costs one pass over row ``i``
of ``A_g`` (contiguous: ``A`` is symmetric) to update the fields and one pass over the row's
deltas to choose the next move. The two passes stay apart: the branch-free update vectorises,
and a version that fused the scan into it (same trajectory) was slower here. Rows are independent: :func:`run_chunk` advances every active row by up to ``moves``
moves in parallel (``prange``); its whole state lives in the arrays it is given, so a search cut
into chunks (for the time checks made between them) follows the same trajectory as one long call.

The search of a row (Glover's tabu search, iterated as in Palubeckis' ITS):

* **tabu phase**: take the best non-tabu flip (ties broken uniformly at random), or a tabu flip
  that reaches a new best energy (aspiration); a flipped variable stays tabu for
  ``tenure_base + U{0..tenure_rand-1}`` moves. The phase ends after ``stall`` moves without
  lowering the phase's best energy.
* **elite pool**: each phase's best enters a pool of the ``pool`` best distinct solutions.
* **perturbation**: the next phase starts from a pool member (the best with probability 1/2,
  else a uniform one), with ``U{pert_min..pert_max}`` random free variables flipped; the local
  fields are then recomputed exactly (float64), so rounding never accumulates across phases.

Random numbers come from one xorshift64* generator per row (state in ``rng``), seeded by the
caller: the same seed gives the same trajectory on a given machine.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# Counters per row, columns of ``ctr`` (int64).
C_IT = 0          # moves made
C_PHASE_LAST = 1  # move at which the phase's best was last lowered
C_PHASES = 2      # phases completed
C_DONE = 3        # 1 when the row has used its move budget
C_BUDGET = 4      # the row's move budget
C_POOL = 5        # elite solutions held
N_CTR = 6
# Floats per row, columns of ``flt`` (float64).
F_E = 0           # current energy (offset left out)
F_BEST = 1        # best energy found
F_PHASE_BEST = 2  # best energy of the current phase
F_TOL = 3         # an improvement must exceed this
F_TARGET = 4      # the row is done once its best energy is at or below this (-inf: never)
N_FLT = 5
# Parameters, entries of ``par`` (int64).
P_TENURE_BASE = 0
P_TENURE_RAND = 1
P_STALL = 2
P_PERT_MIN = 3
P_PERT_MAX = 4
N_PAR = 5


@njit(inline="always")
def _rand(rng, k):
    """Next 53-bit value of row ``k``'s xorshift64* generator (as int64)."""
    x = rng[k]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    rng[k] = x
    return np.int64((x * np.uint64(2685821657736338717)) >> np.uint64(11))


@njit(cache=True)
def seed_states(seeds):
    """(R,) uint64 non-zero generator states from (R,) int64 seeds (splitmix64)."""
    out = np.empty(len(seeds), np.uint64)
    for k in range(len(seeds)):
        z = np.uint64(seeds[k]) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        out[k] = z if z != np.uint64(0) else np.uint64(1)
    return out


@njit(inline="always")
def _fields(A, g, s2, t, col, h, x, qx, k):
    """Exact ``qx = Q_k x`` and ``x^T Q_k x`` of row ``k``."""
    n = x.shape[1]
    e = 0.0
    for j in range(n):
        acc = 0.0
        if col:
            for i in range(n):
                if x[k, i]:
                    acc += A[g, j, i] * t[k, i]
            qx[k, j] = t[k, j] * acc + h[k, j] * x[k, j]
        else:
            for i in range(n):
                if x[k, i]:
                    acc += A[g, j, i]
            qx[k, j] = s2[k] * acc + h[k, j] * x[k, j]
        if x[k, j]:
            e += qx[k, j]
    return e


@njit(inline="always")
def _pool_insert(k, x, e, pool_x, pool_e, ctr, tol):
    """Put solution ``x[k]`` of energy ``e`` into row k's elite pool if it is new and good enough."""
    P = pool_x.shape[1]
    n = x.shape[1]
    held = ctr[k, C_POOL]
    worst = 0
    for p in range(held):
        if abs(pool_e[k, p] - e) <= tol:
            same = True
            for j in range(n):
                if pool_x[k, p, j] != x[k, j]:
                    same = False
                    break
            if same:
                return
        if pool_e[k, p] > pool_e[k, worst]:
            worst = p
    if held < P:
        slot = held
        ctr[k, C_POOL] = held + 1
    elif e < pool_e[k, worst]:
        slot = worst
    else:
        return
    for j in range(n):
        pool_x[k, slot, j] = x[k, j]
    pool_e[k, slot] = e


@njit(inline="always")
def _perturb(k, A, g, s2, t, col, h, free_idx, nfree, x, qx, tabu, phase_x, pool_x, pool_e, ctr, flt, par, rng):
    """Start the next phase: a pool member with random flips; exact fields; tabu list cleared."""
    n = x.shape[1]
    held = ctr[k, C_POOL]
    src = 0
    if _rand(rng, k) % 2 == 0:
        for p in range(held):
            if pool_e[k, p] < pool_e[k, src]:
                src = p
    else:
        src = _rand(rng, k) % held
    for j in range(n):
        x[k, j] = pool_x[k, src, j]
        tabu[k, j] = 0
    m = nfree[k]
    lo = min(par[k, P_PERT_MIN], m)
    hi = min(par[k, P_PERT_MAX], m)
    flips = lo + _rand(rng, k) % (hi - lo + 1)
    # draws with replacement: a repeated variable flips back, which only lowers the count a little
    for _ in range(flips):
        j = free_idx[k, _rand(rng, k) % m]
        x[k, j] ^= 1
    e = _fields(A, g, s2, t, col, h, x, qx, k)
    flt[k, F_E] = e
    flt[k, F_PHASE_BEST] = e
    ctr[k, C_PHASE_LAST] = ctr[k, C_IT]
    for j in range(n):
        phase_x[k, j] = x[k, j]


@njit(parallel=True, cache=True)
def run_chunk(A, gidx, s2, t, col, h, qd, free, free_idx, nfree, x, qx, tabu, best_x, phase_x, pool_x, pool_e,
              ctr, flt, par, rng, moves):
    """Advance every row that is not done by up to ``moves`` moves (see the module docstring).

    Shapes: A (G, n, n) float64; gidx (R,) int64; s2 (R,) float64; t (R, n) float64 column scales,
    used when ``col`` (else any float64 2-D array); h, qd (R, n) float64 (``qd = diag Q_k``); free (R, n)
    bool; free_idx (R, n) int64 (the free variables first); nfree (R,) int64; x, best_x, phase_x
    (R, n) uint8 (current, best, the phase's best); qx (R, n) float64 (``Q_k x``); tabu (R, n) int64 (move until which a variable is
    tabu); pool_x (R, P, n) uint8; pool_e (R, P); ctr (R, N_CTR) int64; flt (R, N_FLT); par
    (R, N_PAR) int64 (each row's own parameters); rng (R,) uint64.
    """
    R, n = x.shape
    for k in prange(R):
        if ctr[k, C_DONE] or nfree[k] == 0:
            ctr[k, C_DONE] = 1
            continue
        g = gidx[k]
        s2k = s2[k]
        tol = flt[k, F_TOL]
        stop = min(ctr[k, C_IT] + moves, ctr[k, C_BUDGET])
        while ctr[k, C_IT] < stop:
            it = ctr[k, C_IT]
            e = flt[k, F_E]
            best = flt[k, F_BEST]
            # choose the move: best admissible delta, uniform among exact ties
            bj = -1
            bd = np.inf
            ties = 0
            for j in range(n):
                if not free[k, j]:
                    continue
                d = (2.0 - 4.0 * x[k, j]) * qx[k, j] + qd[k, j]
                if tabu[k, j] > it and not (e + d < best - tol):
                    continue
                if d < bd:
                    bd = d
                    bj = j
                    ties = 1
                elif d == bd:
                    ties += 1
                    if _rand(rng, k) % ties == 0:
                        bj = j
            if bj < 0:  # every free variable is tabu and none aspirates: clear the list
                for j in range(n):
                    tabu[k, j] = 0
                continue
            delta = 1.0 - 2.0 * x[k, bj]
            x[k, bj] ^= 1
            if col:
                f = delta * t[k, bj]
                for j in range(n):
                    qx[k, j] += f * t[k, j] * A[g, bj, j]
            else:
                f = delta * s2k
                for j in range(n):
                    qx[k, j] += f * A[g, bj, j]
            qx[k, bj] += delta * h[k, bj]
            tabu[k, bj] = it + 1 + par[k, P_TENURE_BASE] + _rand(rng, k) % par[k, P_TENURE_RAND]
            e += bd
            flt[k, F_E] = e
            ctr[k, C_IT] = it + 1
            if e < flt[k, F_PHASE_BEST] - tol:
                flt[k, F_PHASE_BEST] = e
                ctr[k, C_PHASE_LAST] = it + 1
                for j in range(n):
                    phase_x[k, j] = x[k, j]
            if e < best - tol:
                flt[k, F_BEST] = e
                for j in range(n):
                    best_x[k, j] = x[k, j]
                if e <= flt[k, F_TARGET]:
                    ctr[k, C_BUDGET] = it + 1  # the target is reached: the row is done
                    break
            if it + 1 - ctr[k, C_PHASE_LAST] >= par[k, P_STALL]:
                # the phase is over: its best joins the elite pool, the next phase starts
                ctr[k, C_PHASES] += 1
                _pool_insert(k, phase_x, flt[k, F_PHASE_BEST], pool_x, pool_e, ctr, tol)
                _perturb(k, A, g, s2, t, col, h, free_idx, nfree, x, qx, tabu, phase_x, pool_x, pool_e, ctr, flt, par, rng)
        if ctr[k, C_IT] >= ctr[k, C_BUDGET]:
            ctr[k, C_DONE] = 1
