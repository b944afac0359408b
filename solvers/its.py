"""Iterated tabu search (ITS) of our own: one-flip tabu search with an elite pool and
perturbations, every row of a family searched in parallel by a compiled kernel.

The algorithm is in :mod:`qubo_round.solvers.its_kernel`; this module turns any
:class:`~qubo_round.problem.QUBOFamily` into the kernel's arrays (a covariance layer passes its one
shared ``A`` with ``s_k^2`` and ``h_k`` per row, never ``rows`` copies of ``Q_k``), drives the
search in chunks of moves with the time checks between them, and returns each row's best.

Stopping: every row makes ``sweeps x m_k`` moves (``m_k`` its free variables). With ``sweeps``
None the budget is 200 per free variable, or, under a ``time_limit``, the whole time limit (the
search uses the time it is given). A run that stops on its move budget is deterministic for a given
seed on a given machine; a run cut by the clock depends on the machine's speed.

Rows never influence each other (numba backend): row ``k``'s generator is seeded from the solve's
seed and row ``k``'s own data (:func:`row_seeds`), and its parameters come from its own free count
(:func:`row_parameters`), so a row gets the same result alone, beside others or at another
position (under a move budget).
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np

from qubo_round.problem import DenseQUBO, LayerQUBO, QUBOFamily

from .base import CapabilityError, Solver
from .registry import register

log = logging.getLogger(__name__)

__all__ = ["ITS", "ITSParams", "kernel_arrays"]

INITS = ("nearest", "zeros", "random")
BACKENDS = ("numba", "torch")
DEVICES = ("cpu", "cuda")
#: Element updates (moves x variables x rows) between two time checks: a few ms of work.
CHUNK_WORK = 2_000_000
#: Default moves per free variable when neither ``sweeps`` nor a time limit is given.
DEFAULT_SWEEPS = 200.0


def _positive(name: str, v, integer: bool, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    ok = isinstance(v, (int, np.integer)) if integer else isinstance(v, (int, float, np.integer, np.floating))
    if isinstance(v, bool) or not ok or not v > 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name} must be {kind}{' or None' if allow_none else ''}, got {v!r}")


@dataclass(frozen=True)
class ITSParams:
    """Parameters of :class:`ITS`.

    Attributes:
        sweeps: moves per row as a multiple of its free variables; None: 200, or the whole
            ``time_limit`` when one is given.
        tenure: fixed part of the tabu tenure (None: ``max(1, m / 40)``, ``m`` the row's free
            variables); a flipped variable is tabu for ``tenure + U{0..tenure_rand-1}``
            moves.
        tenure_rand: width of the random part of the tenure (None: ``max(10, m / 10)``). The
            defaults were chosen in ad-hoc trials (not a command of the repo) on fc1 rows
            (m ~ 450, warm and cold starts) and Gset G1 (m = 800) with the move budget fixed: ``m/100 + U{0..9}`` (the D2TS rule) stalls on both, a
            tenure near m/10 suits the max-cut graphs and one near m/25 the layer rows; the wide
            random part serves both.
        stall: moves without lowering the phase's best that end a tabu phase (None:
            ``max(1000, 10 m)``).
        perturb: ``(lo, hi)`` fractions of the free variables flipped at random to start a
            phase from an elite solution.
        pool: elite solutions kept per row.
        init: start when none is given: ``nearest`` (``problem.prior >= 0.5``: nearest rounding for
            a layer, all zeros for a plain QUBO), ``zeros`` or ``random`` (Bernoulli(prior)).
        target: stop a row as soon as its energy (offset included) is at or below this value
            (time-to-target runs on public instances, whose best-known energies are published).
        backend: ``numba`` (the compiled kernel, one CPU thread per row) or ``torch`` (every row
            one move per step as batched tensor operations, :mod:`~qubo_round.solvers.its_torch`:
            for a GPU; no elite pool, and a row's random draws depend on the rows beside it).
        device: ``cpu`` or ``cuda`` (``torch`` backend only).
    """

    sweeps: float | None = None
    tenure: int | None = None
    tenure_rand: int | None = None
    stall: int | None = None
    perturb: tuple[float, float] = (0.02, 0.1)
    pool: int = 10
    init: str = "nearest"
    target: float | None = None
    backend: str = "numba"
    device: str = "cpu"

    def __post_init__(self) -> None:
        _positive("sweeps", self.sweeps, integer=False, allow_none=True)
        _positive("tenure", self.tenure, integer=True, allow_none=True)
        _positive("tenure_rand", self.tenure_rand, integer=True, allow_none=True)
        _positive("stall", self.stall, integer=True, allow_none=True)
        _positive("pool", self.pool, integer=True)
        if self.target is not None and (isinstance(self.target, bool) or not isinstance(self.target, (int, float))
                                        or not np.isfinite(self.target)):
            raise ValueError(f"target must be a finite energy or None, got {self.target!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.device not in DEVICES or (self.device == "cuda" and self.backend != "torch"):
            raise ValueError(f"device must be one of {DEVICES} ('cuda' with backend='torch'), got {self.device!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        pert = tuple(self.perturb) if isinstance(self.perturb, (tuple, list)) else None
        if pert is None or len(pert) != 2 or not all(isinstance(f, (int, float)) and not isinstance(f, bool)
                                                     for f in pert) or not 0 <= pert[0] <= pert[1] <= 1:
            raise ValueError(f"perturb must be (lo, hi) fractions with 0 <= lo <= hi <= 1, got {self.perturb!r}")
        object.__setattr__(self, "perturb", (float(pert[0]), float(pert[1])))


@dataclass
class KernelArrays:
    """A family in the kernel's form: ``Q_k = s2_k A[gidx_k] + diag(h_k)``, or with column scales
    ``Q_k = T_k A[gidx_k] T_k + diag(h_k)``.

    Attributes:
        A: (G, n, n) float64 C-contiguous symmetric; gidx (rows,) int64; s2 (rows,); h (rows, n);
        t: (rows, n) column scales (group-wise grids; ``s2`` is then 1) or None.
    """

    A: np.ndarray
    gidx: np.ndarray
    s2: np.ndarray
    h: np.ndarray
    t: np.ndarray | None = None

    @property
    def diagonal(self) -> np.ndarray:
        """(rows, n) ``diag Q_k``."""
        dA = np.diagonal(self.A, axis1=1, axis2=2)[self.gidx]
        if self.t is not None:
            return self.t**2 * dA + self.h
        return self.s2[:, None] * dA + self.h

    def kernel_scales(self) -> tuple[np.ndarray, bool]:
        """``(t, col)`` as the compiled kernel takes them (a placeholder ``t`` without column scales)."""
        if self.t is None:
            return np.ones((1, 1)), False
        return self.t, True


def kernel_arrays(problem: QUBOFamily) -> KernelArrays:
    """The matrices of ``problem`` without copying a shared matrix per row."""
    rows, n = problem.shape
    if isinstance(problem, LayerQUBO):
        A = np.ascontiguousarray(problem.A if not problem.shared else problem.A[None])
        gidx = np.zeros(rows, np.int64) if problem.shared else np.arange(rows, dtype=np.int64)
        if problem.column_scaled:
            return KernelArrays(A, gidx, np.ones(rows), np.ascontiguousarray(problem.linear),
                                t=np.ascontiguousarray(problem.scale))
        return KernelArrays(A, gidx, np.ascontiguousarray(problem.scale**2), np.ascontiguousarray(problem.linear))
    if isinstance(problem, DenseQUBO):
        return KernelArrays(np.ascontiguousarray(problem.Q[None]), np.zeros(1, np.int64), np.ones(1),
                            np.zeros((1, n)))
    A = np.stack([problem.matrix(k) for k in range(rows)])
    return KernelArrays(np.ascontiguousarray(A), np.arange(rows, dtype=np.int64), np.ones(rows), np.zeros((rows, n)))


def row_seeds(seed_rng: np.random.Generator, problem: QUBOFamily) -> np.ndarray:
    """(rows,) int64 seeds: row k's depends on the solve's seed and on row k's own data (its
    scale, linear terms and fixed variables) only, so a row draws the same random numbers alone,
    beside other rows, or at another position (``select_rows``)."""
    base = int(seed_rng.integers(0, 2**62)).to_bytes(8, "little")
    rows = problem.rows
    scale = getattr(problem, "scale", np.ones(rows))
    linear = getattr(problem, "linear", np.zeros(problem.shape))
    out = np.empty(rows, np.int64)
    for k in range(rows):
        h = hashlib.blake2b(base, digest_size=8)
        for a in (scale[k:k + 1], linear[k], problem.fixed_mask[k], problem.fixed_value[k]):
            h.update(np.ascontiguousarray(a).tobytes())
        out[k] = int.from_bytes(h.digest(), "little") >> 2
    return out


def row_parameters(p: ITSParams, nfree: np.ndarray) -> np.ndarray:
    """(rows, N_PAR) int64 kernel parameters of every row, from its own free count ``m``."""
    from . import its_kernel as kern

    par = np.zeros((len(nfree), kern.N_PAR), np.int64)
    m = nfree.astype(np.int64)
    par[:, kern.P_TENURE_BASE] = p.tenure if p.tenure is not None else np.maximum(1, m // 40)
    par[:, kern.P_TENURE_RAND] = p.tenure_rand if p.tenure_rand is not None else np.maximum(10, m // 10)
    par[:, kern.P_STALL] = p.stall if p.stall is not None else np.maximum(1000, 10 * m)
    hi = np.maximum(1, np.ceil(p.perturb[1] * m)).astype(np.int64)
    par[:, kern.P_PERT_MAX] = hi
    par[:, kern.P_PERT_MIN] = np.minimum(np.floor(p.perturb[0] * m).astype(np.int64), hi)
    return par


@register("its", presets={
    "fast": {"sweeps": 20},
    "long": {"sweeps": 5000},
    "gpu": {"backend": "torch", "device": "cuda"},
})
class ITS(Solver):
    """Iterated tabu search (one-flip moves, elite pool, perturbations), all rows in parallel in
    compiled code; warm starts from ``start``."""

    required_modules = ("numba",)
    column_scales = True  # group-wise layers in the kernel (and the torch backend) as they are
    Params = ITSParams

    def check(self, problem: QUBOFamily) -> None:
        super().check(problem)
        if self.params.device == "cuda":
            import torch
            if not torch.cuda.is_available():
                raise CapabilityError("solver 'its' with device='cuda' needs a CUDA GPU and none is available; "
                                      "use device='cpu'")

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        from . import its_kernel as kern

        t0 = time.perf_counter()
        deadline = None if time_limit is None else t0 + time_limit
        p = self.params
        rows, n = problem.shape
        ka = kernel_arrays(problem)
        free = ~problem.fixed_mask & ~problem.inert  # dead inputs never move
        nfree = free.sum(axis=1).astype(np.int64)
        seeds = row_seeds(rng, problem)
        if start is not None:
            X = start.astype(np.uint8).copy()
        elif p.init == "random":
            X = (rng.random(problem.shape) < problem.prior).astype(np.uint8)
        elif p.init == "zeros":
            X = np.zeros(problem.shape, np.uint8)
        else:
            X = (problem.prior >= 0.5).astype(np.uint8) if problem.space is not None else np.zeros(problem.shape, np.uint8)
        X = np.ascontiguousarray(problem.apply_fixed(X))
        # exact fields and energies of the start
        Xf = X.astype(np.float64)
        qx = np.ascontiguousarray(problem.matvec(Xf))
        e0 = np.einsum("rn,rn->r", Xf, qx)
        qd = np.where(free, ka.diagonal, 0.0)
        # an improvement must beat float64 rounding of the incremental energy
        tol = 1e-13 * (np.abs(qd).sum(axis=1) + np.abs(e0)) + 1e-300
        sweeps = p.sweeps if p.sweeps is not None else (None if deadline is not None else DEFAULT_SWEEPS)
        budget = np.full(rows, np.iinfo(np.int64).max // 4, np.int64) if sweeps is None else \
            np.maximum(1, np.ceil(sweeps * nfree)).astype(np.int64)
        par = row_parameters(p, nfree)
        if p.target is not None:
            budget[e0 + problem.offset <= p.target] = 0  # already there
        target = np.full(rows, -np.inf) if p.target is None else p.target - problem.offset
        if p.backend == "torch":
            from .its_torch import search
            best, moves, cut = search(ka, qd, free, X, par, budget, tol, target, seed=int(seeds[0]),
                                      device=p.device, deadline=deadline)
            status = "time_limit" if cut and sweeps is not None else "feasible"
            return best[None], {"status": status, "moves": moves}
        free_idx = np.argsort(~free, axis=1, kind="stable")  # each row's free variables first
        ctr = np.zeros((rows, kern.N_CTR), np.int64)
        ctr[:, kern.C_BUDGET] = budget
        flt = np.zeros((rows, kern.N_FLT))
        flt[:, kern.F_E] = flt[:, kern.F_BEST] = flt[:, kern.F_PHASE_BEST] = e0
        flt[:, kern.F_TOL] = tol
        flt[:, kern.F_TARGET] = target
        tabu, best_x, phase_x = np.zeros((rows, n), np.int64), X.copy(), X.copy()
        pool_x, pool_e = np.zeros((rows, p.pool, n), np.uint8), np.zeros((rows, p.pool))
        rng_state = kern.seed_states(seeds)
        status = "feasible"
        chunk = max(16, CHUNK_WORK // max(1, rows * n))
        t_col, col = ka.kernel_scales()
        while True:
            tc = time.perf_counter()
            kern.run_chunk(ka.A, ka.gidx, ka.s2, t_col, col, ka.h, qd, free, free_idx, nfree, X, qx, tabu, best_x, phase_x,
                           pool_x, pool_e, ctr, flt, par, rng_state, chunk)
            if ctr[:, kern.C_DONE].all():
                break
            now = time.perf_counter()
            # stop before a chunk that would end past the deadline (a chunk takes ~ms)
            if deadline is not None and now + (now - tc) >= deadline:
                status = "time_limit" if sweeps is not None else "feasible"
                break
        seconds = time.perf_counter() - t0
        moves = ctr[:, kern.C_IT].copy()
        log.info("its: %d rows, %d moves in %.2f s (%.3g moves/s)", rows, int(moves.sum()), seconds,
                 moves.sum() / max(seconds, 1e-9))
        return best_x[None], {"status": status, "moves": moves, "phases": ctr[:, kern.C_PHASES].copy()}
