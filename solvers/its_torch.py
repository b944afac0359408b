"""The iterated tabu search as batched tensor operations (torch, CPU or CUDA).

The same moves as the compiled kernel (:mod:`qubo_round.solvers.its_kernel`), written for a GPU:
every step, all rows make one move at once. With ``D`` the (rows, n) flip deltas
``2 delta_i (Q_k x)_i + (Q_k)_ii``, each row takes the best flip that is not tabu or that reaches
a new best energy (aspiration); the fields change by ``delta s2_k A[g_k, j_k]`` (one gathered row of
the shared matrix per row). A row whose phase has not improved for ``stall`` moves restarts from
its best solution with each free variable flipped with probability ``U[lo, hi]`` (its own), and
its fields are recomputed exactly. Ties take the index ``torch.min`` returns and there is no elite pool (the
kernel's pool insertion is sequential work a GPU does badly); random numbers come from one
``torch.Generator`` per solve, so results are deterministic for a seed on a given device, but a
row's draws depend on the rows beside it.
"""
from __future__ import annotations

import time

import numpy as np

#: Steps between two time checks (a check synchronises the device).
CHECK_EVERY = 256


def search(ka, qd: np.ndarray, free: np.ndarray, X0: np.ndarray, par: np.ndarray, budget: np.ndarray,
           tol: np.ndarray, target: np.ndarray, *, seed: int, device: str,
           deadline: float | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Run the search; returns ``(best X (rows, n) uint8, moves (rows,), cut by the deadline)``.

    ``ka``: the family's kernel arrays (``A`` (G, n, n), ``gidx``, ``s2``, ``h``); ``qd`` (rows, n)
    ``diag Q_k``; ``free`` (rows, n) the searched variables; ``par`` the kernel's (rows, N_PAR)
    parameters; ``budget`` (rows,) moves; ``tol``, ``target`` (rows,) (offset left out).
    """
    import torch

    from . import its_kernel as kern

    dev = torch.device(device)
    f64 = dict(dtype=torch.float64, device=dev)
    A = torch.as_tensor(ka.A, **f64)
    g = torch.as_tensor(ka.gidx, dtype=torch.long, device=dev)
    s2 = torch.as_tensor(ka.s2, **f64)
    h = torch.as_tensor(ka.h, **f64)
    t = None if ka.t is None else torch.as_tensor(ka.t, **f64)  # column scales (group-wise grids)
    freet = torch.as_tensor(free, device=dev)
    qdt = torch.where(freet, torch.as_tensor(qd, **f64), torch.full_like(h, float("inf")))
    tolt, targett = torch.as_tensor(tol, **f64), torch.as_tensor(target, **f64)
    R, n = X0.shape
    r = torch.arange(R, device=dev)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    P = {name: torch.as_tensor(par[:, idx], dtype=torch.long, device=dev) for name, idx in
         (("base", kern.P_TENURE_BASE), ("rand", kern.P_TENURE_RAND), ("stall", kern.P_STALL))}
    m = torch.clamp(freet.sum(1), min=1).to(torch.float64)
    p_lo = torch.as_tensor(par[:, kern.P_PERT_MIN], **f64) / m
    p_hi = torch.as_tensor(par[:, kern.P_PERT_MAX], **f64) / m

    def fields(x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if t is not None:
            qx = t[rows] * torch.einsum("rij,rj->ri", A[g[rows]], t[rows] * x) + h[rows] * x
            return qx, (x * qx).sum(1)
        ax = torch.einsum("rij,rj->ri", A[g[rows]], x)
        qx = s2[rows, None] * ax + h[rows] * x
        return qx, (x * qx).sum(1)

    x = torch.as_tensor(X0, **f64)
    qx, e = fields(x, r)
    best_x, best_e = x.clone(), e.clone()
    phase_best, phase_last = e.clone(), torch.zeros(R, dtype=torch.long, device=dev)
    tabu = torch.zeros(R, n, dtype=torch.long, device=dev)
    moves = torch.zeros(R, dtype=torch.long, device=dev)
    budget_t = torch.as_tensor(budget, dtype=torch.long, device=dev)
    active = (moves < budget_t) & freet.any(1) & (best_e > targett)
    inf = torch.tensor(float("inf"), **f64)
    cut, step = False, 0
    while bool(active.any()):
        D = (2.0 - 4.0 * x) * qx + qdt
        allowed = (tabu <= step) | (e[:, None] + D < (best_e - tolt)[:, None])
        Dm = torch.where(allowed, D, inf)
        d, j = Dm.min(1)
        stuck = active & ~torch.isfinite(d)  # every free variable tabu, none aspirates
        tabu[stuck] = 0
        ok = active & torch.isfinite(d)
        delta = torch.where(ok, 1.0 - 2.0 * x[r, j], torch.zeros_like(d))
        x[r, j] += delta
        if t is not None:
            qx += (delta * t[r, j])[:, None] * t * A[g, j]
        else:
            qx += (delta * s2)[:, None] * A[g, j]
        qx[r, j] += delta * h[r, j]
        e = e + torch.where(ok, d, torch.zeros_like(d))
        ten = P["base"] + torch.randint(0, 2**62, (R,), generator=gen, device=dev) % P["rand"]
        tabu[r, j] = torch.where(ok, step + 1 + ten, tabu[r, j])
        moves += ok.long()
        better = ok & (e < best_e - tolt)
        best_e = torch.where(better, e, best_e)
        best_x[better] = x[better]
        lower = ok & (e < phase_best - tolt)
        phase_best = torch.where(lower, e, phase_best)
        phase_last = torch.where(lower, moves, phase_last)
        active = active & (moves < budget_t) & (best_e > targett)
        stalled = active & (moves - phase_last >= P["stall"])
        if bool(stalled.any()):
            rows = stalled.nonzero().squeeze(1)
            prob = p_lo[rows] + (p_hi[rows] - p_lo[rows]) * torch.rand(len(rows), generator=gen, **f64)
            flip = (torch.rand(len(rows), n, generator=gen, **f64) < prob[:, None]) & freet[rows]
            xs = torch.where(flip, 1.0 - best_x[rows], best_x[rows])
            x[rows] = xs
            qx[rows], e[rows] = fields(xs, rows)
            tabu[rows] = 0
            phase_best[rows], phase_last[rows] = e[rows], moves[rows]
        step += 1
        if deadline is not None and step % CHECK_EVERY == 0 and time.perf_counter() >= deadline:
            cut = True
            break
    return best_x.round().to(torch.uint8).cpu().numpy(), moves.cpu().numpy(), cut
