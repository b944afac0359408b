"""Batched simulated annealing of a whole QUBO family: all rows and all restarts at once.

Every row of a :class:`~qubo_round.problem.LayerQUBO` is ``E_k(x) = s_k^2 x^T A x + h_k . x + c_k``
with one matrix ``A`` shared by all rows. Setting ``x_j`` from 0 to 1 changes the energy by
``2 s_k^2 phi_j`` with the local field (``A_0``: ``A`` without its diagonal)::

    phi_j = (A_0 x)_j + A_jj / 2 + h_kj / (2 s_k^2)

The annealer visits the variables in sweep order ``j = 0..n-1`` and lets **every** (restart, row)
pair take its Metropolis step on the same ``j`` at once: the test is one vectorised comparison
``x_j <- [phi_j < N_j]`` over the batch (``N_j`` holds the exponential noise, the temperature and
the current value), and an accepted flip changes the fields by the single column ``A[:, j]``
(rank-1, identical for all rows up to ``s_k^2``).

Steps are grouped in blocks of ``block`` variables. A block's new states solve the triangular
system ``x = [P + L x < N]`` (``L``: strict lower triangle of ``A`` on the block, ``P``: fields at
the block's start minus ``L x_old``), which the exact sweep solves by forward substitution;
``update="jacobi"`` (default) iterates the whole block to the same fixed point in a few matrix
products (few rounds when cold), ``update="sequential"`` takes one step per variable. Then the
fields of all variables are brought up to date with one product ``A[:, block] @ flips`` (BLAS;
in numpy restricted to the variables that flipped somewhere). Fields are ``float32`` by default
and recomputed exactly (float64) every ``recompute_every`` sweeps, so rounding never drifts.

Layout: (n, C) with ``C`` = restarts x rows (column ``c = r * rows + k``) when the matrix is
shared; per-row matrices (per-row ``A``, other families) use (rows, n, restarts) and batched
products. A :class:`~qubo_round.problem.DenseQUBO` is one shared matrix (``s^2 = 1``, ``h = 0``),
batched over restarts.

Temperatures: each row gets its own ``beta`` schedule, because row energies differ in scale
(``s_k^2``). With ``beta_range=None`` the range comes from the row's own flip costs
(:func:`auto_beta_range`); a given ``beta_range`` applies to every row. Schedules are linear
(default) or geometric in ``beta``. The noise of a (restart, variable) is shared by the rows of
that restart: rows are independent problems, so each row's chain is still exact Metropolis.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from qubo_round.problem import DenseQUBO, LayerQUBO, QUBOFamily
from qubo_round.threads import limit_threads

from .base import CapabilityError, Solver
from .greedy import steepest_descent
from .registry import register

log = logging.getLogger(__name__)

__all__ = ["AnnealParams", "Anneal", "auto_beta_range", "beta_schedule"]

SCHEDULES = ("geometric", "linear")
INITS = ("prior", "random", "zeros")
BACKENDS = ("numpy", "torch", "sparse")
DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "float64")
UPDATES = ("jacobi", "sequential")


@dataclass(frozen=True)
class AnnealParams:
    """Parameters of :class:`Anneal`.

    Attributes:
        num_reads: restarts (independent annealing runs) per row; all are returned.
        num_sweeps: sweeps over all variables (one Metropolis proposal per variable each).
        beta_range: ``(beta_hot, beta_cold)`` for every row, or None: derived per row.
        beta_schedule: ``geometric`` or ``linear`` interpolation of beta over the sweeps.
        init: start when no ``start`` is given: ``prior`` (Bernoulli of ``problem.prior``, i.e.
            the fractional parts for a layer, 0.5 for a plain QUBO), ``random`` (0.5) or ``zeros``.
        polish: finish every read with steepest descent to a 1-flip local minimum.
        backend, device: ``numpy`` (cpu) or ``torch`` (cpu or cuda): the batched dense kernel;
            ``sparse`` (cpu): one Metropolis chain per (read, row) over the nonzero couplings
            only (:mod:`~qubo_round.solvers.anneal_sparse`, numba; O(degree) per accepted flip,
            for sparse graphs), each chain's best state returned.
        dtype: precision of the fields between exact recomputations.
        block: variables per deferred field update (one matrix product per block).
        update: how a block's new states are found: ``jacobi`` (fixed-point rounds, few when
            cold) or ``sequential`` (one step per variable); both give the same chain.
        recompute_every: sweeps between exact float64 recomputations of the fields.
        max_batch: most (restart, row) pairs annealed at once (memory bound); None: all.
        threads: BLAS/torch threads while annealing (None: leave as is). One by default: the
            matrix products are small, and extra BLAS threads on a busy machine cost more than
            they gain.
    """

    num_reads: int = 4
    num_sweeps: int = 400
    beta_range: tuple[float, float] | None = None
    beta_schedule: str = "linear"
    init: str = "prior"
    polish: bool = True
    backend: str = "numpy"
    device: str = "cpu"
    dtype: str = "float32"
    block: int = 32
    update: str = "jacobi"
    recompute_every: int = 16
    max_batch: int | None = None
    threads: int | None = 1

    def __post_init__(self) -> None:
        for name in ("num_reads", "num_sweeps", "block", "recompute_every", "max_batch", "threads"):
            v = getattr(self, name)
            if v is None and name in ("max_batch", "threads"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.beta_range is not None:
            try:
                hot, cold = (float(b) for b in self.beta_range)
            except (TypeError, ValueError):
                raise ValueError(f"beta_range must be a pair (beta_hot, beta_cold), "
                                 f"got {self.beta_range!r}") from None
            if not (np.isfinite(hot) and np.isfinite(cold) and 0 < hot <= cold):
                raise ValueError(f"beta_range must satisfy 0 < beta_hot <= beta_cold (finite), "
                                 f"got {self.beta_range!r}")
            object.__setattr__(self, "beta_range", (hot, cold))
        for name, allowed in (("beta_schedule", SCHEDULES), ("init", INITS), ("backend", BACKENDS),
                              ("device", DEVICES), ("dtype", DTYPES),
                              ("update", UPDATES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.device == "cuda" and self.backend != "torch":
            raise ValueError("device='cuda' needs backend='torch'")


# ------------------------------------------------------------------------------------------
# Problem form: Q_k = s2_k * M_g(k) + diag(h_k)
# ------------------------------------------------------------------------------------------

@dataclass
class _Form:
    """A family written as ``Q_k = s2_k M_g + diag(h_k)``.

    Attributes:
        M: (G, n, n) float64 symmetric; G = 1 (shared by all rows) or G = rows.
        s2: (rows,) float64 row scale ``s_k^2`` (0 allowed: the row is then ``diag(h_k)``).
        h: (rows, n) float64 linear terms kept off ``M``.
    """

    M: np.ndarray
    s2: np.ndarray
    h: np.ndarray

    @property
    def shared(self) -> bool:
        return self.M.shape[0] == 1


def _form(problem: QUBOFamily) -> _Form:
    rows, n = problem.shape
    if isinstance(problem, LayerQUBO):
        M = problem.A[None] if problem.shared else problem.A
        return _Form(M=M, s2=problem.scale ** 2, h=problem.linear)
    if isinstance(problem, DenseQUBO):
        return _Form(M=problem.Q[None], s2=np.ones(1), h=np.zeros((1, n)))
    M = np.stack([problem.matrix(k) for k in range(rows)])
    M = (M + np.swapaxes(M, -1, -2)) / 2.0
    return _Form(M=M, s2=np.ones(rows), h=np.zeros((rows, n)))


# ------------------------------------------------------------------------------------------
# Temperatures
# ------------------------------------------------------------------------------------------

def auto_beta_range(problem: QUBOFamily, X: np.ndarray, *, hot_accept: float = 0.5,
                    cold_accept: float = 0.01, hot_quantile: float = 0.9,
                    cold_quantile: float = 0.05, descent_steps: int | None = 64,
                    cold_excitations: float | None = None) -> np.ndarray:
    """Per-row ``(beta_hot, beta_cold)`` from the flip costs of the row (rows, 2).

    * hot: at random states (``X`` (S, rows, n)), the ``hot_quantile`` of the absolute flip costs
      ``|dE|`` is accepted uphill with probability ``hot_accept``: ``beta = -ln(hot_accept) / q``;
    * cold: after (at most ``descent_steps``; None: to convergence) steepest-descent steps from
      ``X``, towards a 1-flip local minimum, the ``cold_quantile`` of the positive flip costs is
      accepted with probability ``cold_accept``; or, with ``cold_excitations`` given, ``beta``
      solves ``sum_i exp(-beta dE_i) = cold_excitations`` over the positive costs ``dE_i`` of a
      sample (their mean over samples): the expected number of uphill flips in one sweep at the
      end, whatever the number of variables (the rule of dwave-samplers' default range, here with
      the actual costs at a local minimum instead of the smallest coupling).

    Rows without free variables or without any nonzero cost get ``(1, 1)``.
    """
    X = np.asarray(X)
    free = ~problem.fixed_mask  # (rows, n)
    out = np.ones((problem.rows, 2))
    D0 = np.abs(problem.flip_deltas(X.astype(np.float64)))  # (S, rows, n), inf on fixed
    Xl, _ = steepest_descent(problem, X, max_steps=descent_steps)
    D1 = problem.flip_deltas(Xl.astype(np.float64))
    for k in range(problem.rows):
        f = free[k]
        d0 = D0[:, k, f].ravel()
        d0 = d0[d0 > 0]
        if d0.size == 0:
            continue
        hot = -np.log(hot_accept) / np.quantile(d0, hot_quantile)
        d1 = D1[:, k, f].ravel()
        d1 = d1[(d1 > 0) & np.isfinite(d1)]
        gap = np.quantile(d1, cold_quantile) if d1.size else np.min(d0)
        gap = max(gap, 1e-12 * np.max(d0))
        cold = -np.log(cold_accept) / gap
        if cold_excitations is not None and d1.size:
            cold = _excitation_beta(d1, len(X), cold_excitations, cold)
        out[k] = hot, max(cold, hot)
    return out


def _excitation_beta(costs: np.ndarray, samples: int, rate: float, start: float) -> float:
    """``beta`` with ``sum(exp(-beta costs)) / samples = rate`` (decreasing in beta; bisection on
    log beta from ``start``)."""
    def excess(b: float) -> float:
        return float(np.exp(-b * costs).sum()) / samples - rate
    lo = hi = start
    while excess(lo) < 0 and lo > 1e-300:
        lo /= 2.0
    while excess(hi) > 0 and hi < 1e300:
        hi *= 2.0
    for _ in range(60):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return hi


def beta_schedule(beta_range: np.ndarray, num_sweeps: int, kind: str = "geometric") -> np.ndarray:
    """(num_sweeps, rows) inverse temperatures from (rows, 2) ``(hot, cold)`` ranges."""
    br = np.atleast_2d(np.asarray(beta_range, dtype=np.float64))
    t = np.linspace(0.0, 1.0, num_sweeps)[:, None] if num_sweeps > 1 else np.ones((1, 1))
    hot, cold = br[:, 0][None], br[:, 1][None]
    if kind == "geometric":
        return hot * (cold / hot) ** t
    return hot + (cold - hot) * t


# ------------------------------------------------------------------------------------------
# Array backends: the kernel below is written once against this small interface
# ------------------------------------------------------------------------------------------

class _NumpyOps:
    """numpy arrays; every per-step call writes into a preallocated buffer."""

    name = "numpy"

    def __init__(self, dtype: str, rng: np.random.Generator) -> None:
        self.dtype = np.dtype(dtype)
        self.f64, self.bool = np.float64, np.bool_
        self.check_every = 1
        self.rng = rng
        self.matmul, self.less, self.add, self.sub, self.mul = (np.matmul, np.less, np.add,
                                                                 np.subtract, np.multiply)

    def asarray(self, a, dtype=None):
        return np.ascontiguousarray(a, dtype=self.dtype if dtype is None else dtype)

    def empty(self, shape, dtype=None):
        return np.empty(shape, self.dtype if dtype is None else dtype)

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a)

    def exponential_(self, out) -> None:
        self.rng.standard_exponential(out=out, dtype=self.dtype)

    def where_(self, out, mask, values) -> None:
        np.copyto(out, values, where=mask)

    def cast(self, a, dtype):
        return a.astype(dtype)

    def copy_(self, dst, src) -> None:
        np.copyto(dst, src)

    def differ(self, a, b, scratch) -> bool:
        return np.count_nonzero(np.not_equal(a, b, out=scratch)) > 0

    def flip_rows(self, a):
        return a[..., ::-1, :]



class _TorchOps:
    """torch tensors (cpu or cuda); same calls as :class:`_NumpyOps`."""

    name = "torch"

    def __init__(self, dtype: str, rng: np.random.Generator, device: str) -> None:
        import torch
        self.torch = torch
        self.dtype = getattr(torch, dtype)
        self.f64, self.bool = torch.float64, torch.bool
        self.device = torch.device(device)
        self.gen = torch.Generator(device=self.device)
        # convergence tests of the Jacobi rounds synchronise with the device: fewer on a GPU
        self.check_every = 4 if self.device.type == "cuda" else 1
        self.gen.manual_seed(int(rng.integers(0, 2**62)))
        self.matmul, self.less, self.add, self.sub, self.mul = (torch.matmul, torch.lt, torch.add,
                                                                 torch.sub, torch.mul)

    def asarray(self, a, dtype=None):
        t = self.torch.tensor(np.asarray(a))  # a copy: inputs may be read-only views
        return t.to(device=self.device, dtype=self.dtype if dtype is None else dtype).contiguous()

    def empty(self, shape, dtype=None):
        return self.torch.empty(shape, dtype=self.dtype if dtype is None else dtype, device=self.device)

    def to_numpy(self, a) -> np.ndarray:
        return a.detach().cpu().numpy()

    def exponential_(self, out) -> None:
        out.exponential_(generator=self.gen)

    def where_(self, out, mask, values) -> None:
        out.copy_(self.torch.where(mask, values, out))

    def cast(self, a, dtype):
        return a.to(dtype)

    def copy_(self, dst, src) -> None:
        dst.copy_(src)

    def differ(self, a, b, scratch) -> bool:
        return not self.torch.equal(a, b)

    def flip_rows(self, a):
        return a.flip(-2)


def _thread_limit(n: int | None, torch_too: bool):
    """At most ``n`` BLAS threads (and torch's, for the torch backend); None: no change."""
    return limit_threads(n, torch=torch_too)


# ------------------------------------------------------------------------------------------
# The kernel
# ------------------------------------------------------------------------------------------

class _Annealer:
    """Metropolis annealing of the states ``X0`` (R, rows, n) of ``Q_k = s2_k M + diag(h_k)``.

    With ``sigma_k = s2_k`` (1 where ``s2_k = 0``, and then no coupling: ``w_k = 0``) the energy
    change of setting ``x_j`` from 0 to 1 is ``2 sigma_k phi_j``, with the field::

        phi_j = w_k (sum_{i != j} M_ji x_i + M_jj / 2) + h_kj / (2 sigma_k)

    so Metropolis (``x_j`` visited with ``d_j = 1 - 2 x_j``, exponential noise ``e``) sets
    ``x_j <- [phi_j < N_j]``, ``N_j = d_j e / (2 sigma_k beta_k)``: one comparison. The noise of a
    (restart, variable) is shared by all rows of that restart: rows are independent problems,
    so every row's chain is still exact Metropolis.

    Inside a block of ``bl`` variables (``L``: strict lower triangle of ``M`` on the block,
    ``P = phi_block - L x_old``), the sweep's new states solve ``x = [P + L x < N]`` by forward
    substitution. ``update="sequential"`` does exactly that, one vectorised step per variable;
    ``update="jacobi"`` iterates ``x <- [P + L x < N]`` on the whole block from ``x_old`` until
    it stops changing: the same fixed point (at most ``bl + 1`` rounds, a few when cold), in one
    matrix product per round instead of ``bl`` steps.

    Layout: (n, C) when the matrix is shared (``G = 1``, column ``c = r * rows + k``), else
    (rows, n, R) with batched products.
    """

    def __init__(self, form: _Form, X0: np.ndarray, fixed_mask: np.ndarray, fixed_value: np.ndarray,
                 betas: np.ndarray, ops, *, block: int, update: str) -> None:
        R, rows, n = X0.shape
        G = form.M.shape[0]
        self.R, self.rows, self.n, self.G = R, rows, n, G
        self.C = C = R * rows if G == 1 else R
        self.ops, self.update, self.block = ops, update, block
        sigma = np.where(form.s2 > 0, form.s2, 1.0)
        w = (form.s2 > 0).astype(np.float64)
        Mz = form.M.copy()
        diag = np.diagonal(form.M, axis1=1, axis2=2).copy()           # (G, n)
        Mz[:, np.arange(n), np.arange(n)] = 0.0                       # coupling without self-terms
        if G == 1:
            Mz, diag = Mz[0], diag[0]
            base = w[None, :] * diag[:, None] / 2.0 + form.h.T / (2.0 * sigma[None, :])  # (n, rows)
            base = np.tile(base, (1, R))
            wcol = np.tile(w, R)
        else:
            base = w[:, None] * diag / 2.0 + form.h / (2.0 * sigma[:, None])             # (rows, n)
            base = np.repeat(base[:, :, None], R, axis=2)
            wcol = np.repeat(w[:, None, None], R, axis=2)
        self.coupled = bool(w.all())
        f64 = ops.f64
        self.Mz, self.Mz64 = ops.asarray(Mz), ops.asarray(Mz, dtype=f64)
        self.base64, self.wcol64, self.wcol = (ops.asarray(base, dtype=f64), ops.asarray(wcol, dtype=f64),
                                               ops.asarray(wcol))
        self.fmask = ops.asarray(self.lay(fixed_mask[None]), dtype=ops.bool)
        self.finf = ops.asarray(np.where(self.lay(fixed_value[None]) > 0, np.inf, -np.inf))
        inv2sb = 1.0 / (2.0 * sigma[None, :] * betas)                 # (sweeps, rows)
        self.scales = ops.asarray(np.tile(inv2sb, (1, R))[:, None, :] if G == 1 else
                                  np.repeat(inv2sb[:, :, None, None], R, axis=3))
        self.NX = ops.asarray(-self.lay(X0.astype(np.float64)))        # minus the states
        self.F = self.exact()                                          # fields phi
        self.N = ops.empty(self.NX.shape)                              # thresholds of a sweep
        self.E = ops.empty((n, R) if G == 1 else (1, n, R))            # noise shared by the rows
        self.starts = list(range(0, n, block))
        self.cols, self.lower = [], []
        for b0 in self.starts:
            bl = min(block, n - b0)
            self.cols.append(self.span(self.Mz, b0, b0 + bl, last=True))
            L = np.tril(form.M[:, b0:b0 + bl, b0:b0 + bl], k=-1)
            self.lower.append(ops.asarray(L[0] if G == 1 else L))
        shape = (block, C) if G == 1 else (G, block, C)
        self.flips, self.U, self.XF = ops.empty(shape), ops.empty(shape), ops.empty(shape)
        self.XB, self.XB2, self.NE = (ops.empty(shape, dtype=ops.bool) for _ in range(3))
        if update == "sequential":
            self._setup_sequential(form)

    # -- layout helpers ----------------------------------------------------------------------
    def lay(self, a: np.ndarray) -> np.ndarray:
        """(R, rows, n) -> (n, C) when G = 1, else (rows, n, R)."""
        R, rows, n = self.R, self.rows, self.n
        a = np.broadcast_to(a, (R, rows, n))
        if self.G == 1:
            return np.ascontiguousarray(a.transpose(2, 0, 1).reshape(n, self.C))
        return np.ascontiguousarray(a.transpose(1, 2, 0))

    def unlay(self, a: np.ndarray) -> np.ndarray:
        if self.G == 1:
            return a.reshape(self.n, self.R, self.rows).transpose(1, 2, 0)
        return a.transpose(2, 0, 1)

    def span(self, a, i0: int, i1: int, last: bool = False):
        """Variables ``i0:i1`` of a batch array (rows of (n, C); axis 1 of (G, n, C)); with
        ``last`` the columns of a matrix instead."""
        if last:
            return a[..., i0:i1]
        return a[i0:i1] if self.G == 1 else a[:, i0:i1]

    def exact(self):
        """Fields recomputed from the states in float64."""
        ops = self.ops
        prod = ops.matmul(self.Mz64, -ops.cast(self.NX, ops.f64))
        return ops.cast(prod * self.wcol64 + self.base64, ops.dtype)

    # -- one sweep ---------------------------------------------------------------------------
    def thresholds(self, sweep: int) -> None:
        """``N = d e / (2 sigma beta)`` with ``d = 1 - 2 x = 1 + 2 NX``; fixed variables +-inf."""
        ops, N = self.ops, self.N
        ops.exponential_(self.E)
        if self.G == 1:
            ops.mul(self.E[:, :, None], self.scales[sweep].reshape(1, self.R, self.rows),
                    out=N.reshape(self.n, self.R, self.rows))
        else:
            ops.mul(self.E, self.scales[sweep], out=N)
        N *= 1.0 + 2.0 * self.NX
        ops.where_(N, self.fmask, self.finf)

    def sweep(self, sweep: int) -> None:
        self.thresholds(sweep)
        ops = self.ops
        solve = self._block_jacobi if self.update == "jacobi" else self._block_sequential
        for bi, b0 in enumerate(self.starts):
            bl = min(self.block, self.n - b0)
            nx = self.span(self.NX, b0, b0 + bl)                      # minus the old states
            xnew = solve(bi, b0, bl, nx)
            fl = self.span(self.flips, 0, bl)
            ops.add(xnew, nx, out=fl)                                 # x_new - x_old
            self._propagate(bi, b0, bl, fl)
            ops.sub(nx, fl, out=nx)

    def _propagate(self, bi: int, b0: int, bl: int, fl) -> None:
        """``F += M[:, block] @ flips``; in numpy only over the block's variables that flipped
        somewhere (rows of the symmetric ``M``), which is most of the saving when cold."""
        ops = self.ops
        if ops.name == "numpy":
            active = np.flatnonzero(np.count_nonzero(fl, axis=-1).reshape(-1, bl).sum(0) if self.G > 1
                                    else np.count_nonzero(fl, axis=-1))
            if active.size == 0:
                return
            if active.size < 0.75 * bl:
                rows = np.take(self.Mz, b0 + active, axis=-2)         # (..., a, n)
                upd = np.matmul(np.swapaxes(rows, -1, -2), np.take(fl, active, axis=-2))
                if not self.coupled:
                    upd *= self.wcol
                self.F += upd
                return
        upd = ops.matmul(self.cols[bi], fl)
        if not self.coupled:
            upd *= self.wcol
        self.F += upd

    def _block_jacobi(self, bi: int, b0: int, bl: int, nx):
        ops, sp = self.ops, self.span
        L, Nb, Fb = self.lower[bi], sp(self.N, b0, b0 + bl), sp(self.F, b0, b0 + bl)
        P = Fb + ops.matmul(L, nx)                                    # phi_block - L x_old
        xb, xb2, xf, u, ne = (sp(a, 0, bl) for a in (self.XB, self.XB2, self.XF, self.U, self.NE))
        ops.less(Fb, Nb, out=xb)                                      # round 1 (x = x_old)
        k = ops.check_every                                           # extra rounds are harmless
        for it in range(bl):
            ops.copy_(xf, xb)
            ops.matmul(L, xf, out=u)
            u += P
            ops.less(u, Nb, out=xb2)
            if ((it + 1) % k == 0 or it == bl - 1) and not ops.differ(xb2, xb, ne):
                break
            xb, xb2 = xb2, xb
        else:
            ops.copy_(xf, xb)
        return xf

    def _setup_sequential(self, form: _Form) -> None:
        """Per step m of a block, the coefficients ``[1, 0 x m, M_j,b0:b0+m]`` against the rows
        ``[block-1-m, block+m)`` of ``Z = [P reversed; new states]``: ``u_j`` in one product."""
        ops, G, block, C = self.ops, self.G, self.block, self.C
        self.Z = ops.empty((2 * block, C) if G == 1 else (G, 2 * block, C))
        self.coefs, self.zrows = [], []
        for b0 in self.starts:
            bl = min(block, self.n - b0)
            cs, zs = [], []
            for m in range(bl):
                c = np.zeros((G, 2 * m + 1))
                c[:, 0] = 1.0
                c[:, m + 1:] = form.M[:, b0 + m, b0:b0 + m]
                cs.append(ops.asarray(c if G == 1 else c[:, None, :]))
                zs.append(self.span(self.Z, block - 1 - m, block + m))
            self.coefs.append(cs)
            self.zrows.append(zs)
        self.u1 = ops.empty((1, C) if G == 1 else (G, 1, C))
        self.Nj = [self.span(self.N, j, j + 1) for j in range(self.n)]
        self.Zx = [self.span(self.Z, block + m, block + m + 1) for m in range(block)]

    def _block_sequential(self, bi: int, b0: int, bl: int, nx):
        ops, sp, block = self.ops, self.span, self.block
        P = sp(self.F, b0, b0 + bl) + ops.matmul(self.lower[bi], nx)
        sp(self.Z, block - bl, block)[...] = ops.flip_rows(P)
        cs, zs, Nj, Zx, u = self.coefs[bi], self.zrows[bi], self.Nj, self.Zx, self.u1
        ops.less(sp(P, 0, 1), Nj[b0], out=Zx[0])
        for m in range(1, bl):
            ops.matmul(cs[m], zs[m], out=u)
            ops.less(u, Nj[b0 + m], out=Zx[m])
        return sp(self.Z, block, block + bl)

    def states(self) -> np.ndarray:
        """(R, rows, n) uint8 current states."""
        X = -self.unlay(self.ops.to_numpy(self.NX).astype(np.float64))
        return np.rint(X).astype(np.uint8)


def anneal_batch(form: _Form, X0: np.ndarray, fixed_mask: np.ndarray, fixed_value: np.ndarray,
                 betas: np.ndarray, ops, *, block: int = 32, update: str = "jacobi",
                 recompute_every: int = 16, deadline: float | None = None) -> tuple[np.ndarray, int]:
    """Anneal ``X0`` (R, rows, n) through the schedule ``betas`` (num_sweeps, rows).

    See :class:`_Annealer`. Fields are recomputed exactly every ``recompute_every`` sweeps; no
    sweep starts after ``deadline`` (a ``time.perf_counter()`` value).

    Returns:
        ``(X, sweeps_done)`` with X (R, rows, n) uint8.
    """
    a = _Annealer(form, X0, fixed_mask, fixed_value, betas, ops, block=block, update=update)
    done = 0
    for sweep in range(len(betas)):
        if deadline is not None and time.perf_counter() > deadline:
            break
        a.sweep(sweep)
        done += 1
        if done % recompute_every == 0 and done < len(betas):
            a.F[...] = a.exact()
    return a.states(), done


#: Field updates between two time checks of the sparse backend (a few ms of work).
SPARSE_CHUNK_WORK = 20_000_000


def _anneal_sparse(problem: QUBOFamily, form: _Form, X0: np.ndarray, betas: np.ndarray,
                   rng: np.random.Generator, deadline: float | None) -> tuple[np.ndarray, int]:
    """All (read, row) chains on the CSR kernel (:mod:`~qubo_round.solvers.anneal_sparse`);
    returns each chain's best state (R, rows, n) and the sweeps done."""
    from .anneal_sparse import anneal_sparse_chunk, exact_fields, seeds_for, sparse_form

    R, rows, n = X0.shape
    sf = sparse_form(form.M, form.s2, form.h)
    X = np.ascontiguousarray(X0.reshape(R * rows, n), dtype=np.uint8)
    row_of = np.tile(np.arange(rows, dtype=np.int64), R)
    F = np.empty((R * rows, n))
    exact_fields(*sf, row_of, X, F)
    E = np.einsum("jn,jn->j", X, (F + sf.diag[row_of]) / 2.0)  # x^T Q x = sum_i x_i (f_i + Q_ii) / 2
    best_X, best_E = X.copy(), E.copy()
    state = seeds_for(rng, R * rows)
    free = np.ascontiguousarray(~problem.fixed_mask)
    betas = np.ascontiguousarray(betas, dtype=np.float64)
    per_sweep = max(1, R * rows * (n + len(sf.data) // max(1, sf.start.shape[0])))
    step = max(1, SPARSE_CHUNK_WORK // per_sweep)
    done = 0
    while done < len(betas):
        if deadline is not None and time.perf_counter() > deadline:
            break
        s1 = min(len(betas), done + step)
        anneal_sparse_chunk(sf.start, sf.indices, sf.data, sf.s2, sf.group, row_of, free, betas, done, s1,
                            X, F, E, best_X, best_E, state)
        done = s1
        if done < len(betas):  # the fields exact again for the next chunk (none after the last)
            exact_fields(*sf, row_of, X, F)
    return best_X.reshape(R, rows, n), done


# ------------------------------------------------------------------------------------------
# The solver
# ------------------------------------------------------------------------------------------

@register("anneal", presets={
    "fast": {"num_reads": 1, "num_sweeps": 100},
    "thorough": {"num_reads": 64, "num_sweeps": 1000},
    "torch": {"backend": "torch"},
    "cuda": {"backend": "torch", "device": "cuda"},
    "sparse": {"backend": "sparse", "num_reads": 8, "num_sweeps": 20000, "beta_schedule": "linear"},
    "sparse-long": {"backend": "sparse", "num_reads": 32, "num_sweeps": 20000, "beta_schedule": "linear"},
})
class Anneal(Solver):
    """Batched simulated annealing of all rows and restarts at once (numpy or torch)."""

    Params = AnnealParams

    def check(self, problem: QUBOFamily) -> None:
        super().check(problem)
        p = self.params
        if p.backend == "torch":
            try:
                import torch
            except ImportError:
                raise CapabilityError("anneal backend='torch' needs the torch module; install it "
                                      "or use backend='numpy'") from None
            if p.device == "cuda" and not torch.cuda.is_available():
                raise CapabilityError("anneal device='cuda' needs a CUDA GPU and torch reports none "
                                      "available; use device='cpu'")

    def _starts(self, problem: QUBOFamily, rng: np.random.Generator, start: np.ndarray | None) -> np.ndarray:
        R = self.params.num_reads
        shape = (R, *problem.shape)
        if start is not None:
            X = np.broadcast_to(start, shape)
        elif self.params.init == "zeros":
            X = np.zeros(shape, np.uint8)
        else:
            p = problem.prior if self.params.init == "prior" else 0.5
            X = rng.random(shape) < p
        return problem.apply_fixed(X)

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        p = self.params
        with _thread_limit(p.threads, torch_too=p.backend == "torch"):
            return self._sample(problem, rng, start, time_limit)

    def _sample(self, problem: QUBOFamily, rng, start, time_limit):
        p = self.params
        t0 = time.perf_counter()
        deadline = None if time_limit is None else t0 + time_limit
        X0 = self._starts(problem, rng, start)
        form = _form(problem)
        rows = problem.rows
        if p.beta_range is None:
            probe = X0[:1] if start is None else self._starts_random(problem, rng)
            br = (auto_beta_range(problem, probe, hot_quantile=1.0, descent_steps=None, cold_excitations=0.01)
                  if p.backend == "sparse" else auto_beta_range(problem, probe))
        else:
            br = np.tile(np.asarray(p.beta_range, dtype=np.float64), (rows, 1))
        betas = beta_schedule(br, p.num_sweeps, p.beta_schedule)
        if p.backend == "sparse":
            X, done = _anneal_sparse(problem, form, X0, betas, rng, deadline)
            sweeps = [done]
        else:
            ops = _TorchOps(p.dtype, rng, p.device) if p.backend == "torch" else _NumpyOps(p.dtype, rng)
            per_read = rows if form.shared else 1
            chunk = p.num_reads if p.max_batch is None else max(1, p.max_batch // per_read)
            out, sweeps = [], []
            for r0 in range(0, p.num_reads, chunk):
                X, done = anneal_batch(form, X0[r0:r0 + chunk], problem.fixed_mask, problem.fixed_value, betas,
                                       ops, block=p.block, update=p.update, recompute_every=p.recompute_every,
                                       deadline=deadline)
                out.append(X)
                sweeps.append(done)
            X = np.concatenate(out)
        cut = min(sweeps) < p.num_sweeps
        t1 = time.perf_counter()
        converged = None
        if p.polish and not cut:
            X, converged = steepest_descent(problem, X, deadline=deadline)
            cut = not converged and deadline is not None and time.perf_counter() > deadline
        log.debug("anneal: %d reads x %d sweeps (%d done) in %.3f s", p.num_reads, p.num_sweeps,
                  min(sweeps), t1 - t0)
        extra: dict[str, Any] = {
            "status": "time_limit" if cut else "feasible",
            "sweeps_done": int(min(sweeps)),
            "beta_range": br.tolist() if rows <= 8 else [float(br[:, 0].min()), float(br[:, 1].max())],
            "anneal_seconds": t1 - t0, "polish_converged": converged,
        }
        return problem.apply_fixed(X), extra

    def _starts_random(self, problem: QUBOFamily, rng) -> np.ndarray:
        return problem.apply_fixed(rng.random((1, *problem.shape)) < problem.prior)
