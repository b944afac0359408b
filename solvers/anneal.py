"""Batched simulated annealing of a whole QUBO family: all rows and all restarts at once.

Every row of a :class:`~qubo_round.problem.LayerQUBO` is ``E_k(x) = s_k^2 x^T A x + h_k . x + c_k``
with one matrix ``A`` shared by all rows. Flipping variable ``j`` (``d = 1 - 2 x_j``) changes the
energy by::

    dE = d u_j + s_k^2 A_jj,        u = 2 s_k^2 A x + h_k      (the local field)

and, when accepted, changes the field of every variable by ``2 s_k^2 A[:, j] d``. The annealer
visits the variables in sweep order ``j = 0..n-1`` and, in each step, lets **every** (restart, row)
pair propose the flip of the same ``j``: the Metropolis test is one vectorised comparison over the
batch and the field update is a rank-1 update with the single column ``A[:, j]``.

Field updates are deferred over blocks of ``block`` variables: inside a block the field of
variable ``j`` is its stored value plus the flips made earlier in the same block (one small
matrix-vector product), and after the block all fields are brought up to date with one matrix
product ``A[:, block] @ flips`` (BLAS). A sweep then costs ``n`` vectorised steps plus ``n / block``
matrix products, whatever the batch size. Fields are kept in ``float32`` by default and
recomputed exactly (float64 ``A X``) every ``recompute_every`` sweeps, so rounding never drifts.

Layout: the batch is ``(G, n, C)``: ``G = 1`` group when the matrix is shared (``C`` = restarts x
rows, element ``c = r * rows + k``), or ``G = rows`` groups with their own matrix (per-row ``A``,
generic families; ``C`` = restarts). A :class:`~qubo_round.problem.DenseQUBO` is one group with
``s^2 = 1``, ``h = 0``, ``A = Q``.

Temperatures: each row gets its own ``beta`` schedule, because row energies differ in scale
(``s_k^2``). With ``beta_range=None`` the range is derived from the row's coefficients and flip
costs (:func:`auto_beta_range`); a given ``beta_range`` applies to every row. Schedules are
geometric or linear in ``beta`` over ``num_sweeps`` sweeps.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from qubo_round.problem import DenseQUBO, LayerQUBO, QUBOFamily

from .base import CapabilityError, Solver
from .greedy import steepest_descent
from .registry import register

log = logging.getLogger(__name__)

__all__ = ["AnnealParams", "Anneal", "auto_beta_range", "beta_schedule"]

SCHEDULES = ("geometric", "linear")
INITS = ("prior", "random", "zeros")
BACKENDS = ("numpy", "torch")
DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "float64")


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
        backend, device: ``numpy`` (cpu) or ``torch`` (cpu or cuda); same algorithm.
        dtype: precision of the fields between exact recomputations.
        block: variables per deferred field update (one matrix product per block).
        recompute_every: sweeps between exact float64 recomputations of the fields.
        max_batch: most (restart, row) pairs annealed at once (memory bound); None: all.
        threads: BLAS/torch threads while annealing (None: leave as is). One by default: the
            matrix products are small, and extra BLAS threads on a busy machine cost more than
            they gain.
    """

    num_reads: int = 8
    num_sweeps: int = 200
    beta_range: tuple[float, float] | None = None
    beta_schedule: str = "geometric"
    init: str = "prior"
    polish: bool = True
    backend: str = "numpy"
    device: str = "cpu"
    dtype: str = "float32"
    block: int = 32
    recompute_every: int = 16
    max_batch: int | None = None
    threads: int | None = 1

    def __post_init__(self) -> None:
        for name in ("num_reads", "num_sweeps", "block", "recompute_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.max_batch is not None and (not isinstance(self.max_batch, (int, np.integer)) or self.max_batch < 1):
            raise ValueError(f"max_batch must be a positive integer or None, got {self.max_batch!r}")
        if self.threads is not None and (not isinstance(self.threads, (int, np.integer)) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        if self.beta_range is not None:
            try:
                hot, cold = (float(b) for b in self.beta_range)
            except (TypeError, ValueError):
                raise ValueError(f"beta_range must be a pair (beta_hot, beta_cold), got {self.beta_range!r}") from None
            if not (np.isfinite(hot) and np.isfinite(cold) and 0 < hot <= cold):
                raise ValueError(f"beta_range must satisfy 0 < beta_hot <= beta_cold (finite), got {self.beta_range!r}")
            object.__setattr__(self, "beta_range", (hot, cold))
        for name, allowed in (("beta_schedule", SCHEDULES), ("init", INITS), ("backend", BACKENDS),
                              ("device", DEVICES), ("dtype", DTYPES)):
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
        s2: (rows,) float64 nonnegative-or-any row scale.
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
                    cold_quantile: float = 0.05) -> np.ndarray:
    """Per-row ``(beta_hot, beta_cold)`` from the flip costs of the row (rows, 2).

    * hot: at random states (``X`` (S, rows, n)), the ``hot_quantile`` of the absolute flip costs
      ``|dE|`` is accepted uphill with probability ``hot_accept``: ``beta = -ln(hot_accept) / q``;
    * cold: at 1-flip local minima reached by steepest descent from ``X``, the ``cold_quantile``
      of the (positive) flip costs is accepted with probability ``cold_accept``.

    Rows without free variables or without any nonzero cost get ``(1, 1)``.
    """
    X = np.asarray(X)
    free = ~problem.fixed_mask  # (rows, n)
    out = np.ones((problem.rows, 2))
    D0 = np.abs(problem.flip_deltas(X.astype(np.float64)))  # (S, rows, n), inf on fixed
    Xl, _ = steepest_descent(problem, X, max_steps=2 * problem.n + 10)
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
        cold = max(-np.log(cold_accept) / gap, hot)
        out[k] = hot, cold
    return out


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
        self.f64 = np.float64
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

    def threads(self, n):
        if n is None:
            return contextlib.nullcontext()
        from threadpoolctl import threadpool_limits
        return threadpool_limits(limits=int(n), user_api="blas")


class _TorchOps:
    """torch tensors (cpu or cuda); same calls as :class:`_NumpyOps`."""

    name = "torch"

    def __init__(self, dtype: str, rng: np.random.Generator, device: str) -> None:
        import torch
        self.torch = torch
        self.dtype = getattr(torch, dtype)
        self.f64 = torch.float64
        self.device = torch.device(device)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(int(rng.integers(0, 2**62)))
        self.matmul, self.less, self.add, self.sub, self.mul = (torch.matmul, torch.lt, torch.add,
                                                                 torch.sub, torch.mul)

    def asarray(self, a, dtype=None):
        t = self.torch.as_tensor(np.ascontiguousarray(a))
        return t.to(device=self.device, dtype=self.dtype if dtype is None else dtype).contiguous()

    def empty(self, shape, dtype=None):
        dtype = self.dtype if dtype is None else (self.torch.bool if dtype is bool else dtype)
        return self.torch.empty(shape, dtype=dtype, device=self.device)

    def to_numpy(self, a) -> np.ndarray:
        return a.detach().cpu().numpy()

    def exponential_(self, out) -> None:
        out.exponential_(generator=self.gen)

    def where_(self, out, mask, values) -> None:
        out.copy_(self.torch.where(mask, values, out))

    def cast(self, a, dtype):
        return a.to(dtype)

    def threads(self, n):
        torch = self.torch

        @contextlib.contextmanager
        def limit():
            old = torch.get_num_threads()
            if n is not None:
                torch.set_num_threads(int(n))
            try:
                yield
            finally:
                torch.set_num_threads(old)
        return limit()


# ------------------------------------------------------------------------------------------
# The kernel
# ------------------------------------------------------------------------------------------

def anneal_batch(form: _Form, X0: np.ndarray, fixed_mask: np.ndarray, fixed_value: np.ndarray,
                 betas: np.ndarray, ops, *, block: int = 32, recompute_every: int = 16,
                 deadline: float | None = None) -> tuple[np.ndarray, int]:
    """Metropolis-anneal the states ``X0`` (R, rows, n) of ``Q_k = s2_k M + diag(h_k)``.

    With ``sigma_k = s2_k`` (1 where ``s2_k = 0``, and then no coupling: ``w_k = 0``) the energy
    change of setting ``x_j`` from 0 to 1 is ``2 sigma_k phi_j``, with the field::

        phi_j = w_k (sum_{i != j} M_ji x_i + M_jj / 2) + h_kj / (2 sigma_k)

    so Metropolis (``x_j`` visited with ``d_j = 1 - 2 x_j``, exponential noise ``e``) sets
    ``x_j <- [phi_j < d_j e / (2 sigma_k beta_k)]``: one comparison per step. The noise of a
    (restart, variable) is shared by all rows of that restart: rows are independent problems,
    so every row's chain is still exact Metropolis.

    Args:
        form: the family.
        X0: (R, rows, n) start states, fixed variables at their values.
        fixed_mask, fixed_value: (rows, n); fixed variables keep their value.
        betas: (num_sweeps, rows) inverse temperature of every sweep and row.
        ops: array backend (:class:`_NumpyOps` or :class:`_TorchOps`).
        block: variables per deferred field update (one matrix product per block).
        recompute_every: sweeps between exact float64 recomputations of the fields.
        deadline: ``time.perf_counter()`` value after which no new sweep starts.

    Returns:
        ``(X, sweeps_done)`` with X (R, rows, n) uint8.
    """
    R, rows, n = X0.shape
    G = form.M.shape[0]
    C = R * rows if G == 1 else R
    sigma = np.where(form.s2 > 0, form.s2, 1.0)
    w = (form.s2 > 0).astype(np.float64)

    def lay(a: np.ndarray) -> np.ndarray:
        """(R, rows, n) -> batch layout (n, C) when G = 1, else (rows, n, R)."""
        a = np.broadcast_to(a, (R, rows, n))
        if G == 1:
            return np.ascontiguousarray(a.transpose(2, 0, 1).reshape(n, C))
        return np.ascontiguousarray(a.transpose(1, 2, 0))

    def unlay(a: np.ndarray) -> np.ndarray:
        return a.reshape(n, R, rows).transpose(1, 2, 0) if G == 1 else a.transpose(2, 0, 1)

    def col(v: np.ndarray) -> np.ndarray:
        """(rows,) per-row values -> broadcastable per-column (C,) or (rows, 1, R)."""
        return np.tile(v, R) if G == 1 else np.repeat(v[:, None, None], R, axis=2)

    Mz = form.M.copy()
    diag = np.diagonal(form.M, axis1=1, axis2=2).copy()          # (G, n)
    Mz[:, np.arange(n), np.arange(n)] = 0.0                        # coupling without self-terms
    if G == 1:
        Mz, diag = Mz[0], diag[0]
        base = w[None, :] * diag[:, None] / 2.0 + form.h.T / (2.0 * sigma[None, :])   # (n, rows)
        base = np.tile(base, (1, R))                               # (n, C)
    else:
        base = w[:, None] * diag / 2.0 + form.h / (2.0 * sigma[:, None])               # (rows, n)
        base = np.repeat(base[:, :, None], R, axis=2)             # (rows, n, R)
    wcol = col(w)
    coupled = bool(w.all())
    f64 = ops.f64
    Mz_t, Mz64 = ops.asarray(Mz), ops.asarray(Mz, dtype=f64)
    base64, wcol64, wcol_t = ops.asarray(base, dtype=f64), ops.asarray(wcol, dtype=f64), ops.asarray(wcol)
    fmask = ops.asarray(lay(fixed_mask[None]), dtype=bool if ops.name == "numpy" else ops.torch.bool)
    finf = ops.asarray(np.where(lay(fixed_value[None]) > 0, np.inf, -np.inf))
    inv2sb = 1.0 / (2.0 * sigma[None, :] * betas)                  # (sweeps, rows)

    NX = ops.asarray(-lay(X0.astype(np.float64)))                 # minus the states
    def exact(negX):
        prod = ops.matmul(Mz64, -ops.cast(negX, f64))
        return ops.cast(prod * wcol64 + base64, ops.dtype)
    F = exact(NX)                                                  # fields phi
    N = ops.empty(NX.shape)                                        # thresholds of this sweep
    E = ops.empty((n, R) if G == 1 else (1, n, R))                 # noise shared by the rows
    Z = ops.empty((2 * block, C) if G == 1 else (G, 2 * block, C))  # [P reversed; new states]

    if G == 1:
        row = lambda a, i: a[i:i + 1]                              # noqa: E731
        rows_of = lambda a, i0, i1: a[i0:i1]                       # noqa: E731
    else:
        row = lambda a, i: a[:, i:i + 1, :]                        # noqa: E731
        rows_of = lambda a, i0, i1: a[:, i0:i1, :]                 # noqa: E731
    starts = list(range(0, n, block))
    # Step m of a block (variable j = b0 + m) needs u_j = F_j + sum_{i<m} M_ji (x_new_i - x_old_i)
    #   = P_m + sum_{i<m} M_ji x_new_i,   P = F_block - L x_old_block  (L: strict lower triangle),
    # one product of [1, 0 x m, M_j,b0:b0+m] with Z rows [block-1-m, block+m).
    coefs, zrows, colblk, lower = [], [], [], []
    for b0 in starts:
        bl = min(block, n - b0)
        cs, zs = [], []
        for m in range(bl):
            c = np.zeros((G, 2 * m + 1))
            c[:, 0] = 1.0
            c[:, m + 1:] = form.M[:, b0 + m, b0:b0 + m]
            cs.append(ops.asarray(c if G == 1 else c[:, None, :]))
            zs.append(rows_of(Z, block - 1 - m, block + m))
        coefs.append(cs)
        zrows.append(zs)
        colblk.append(Mz_t[:, b0:b0 + bl] if G == 1 else Mz_t[:, :, b0:b0 + bl])
        L = np.tril(form.M[:, b0:b0 + bl, b0:b0 + bl], k=-1)
        lower.append(ops.asarray(L[0] if G == 1 else L))
    U = ops.empty((1, C) if G == 1 else (G, 1, C))
    Nj = [row(N, j) for j in range(n)]
    Zx = [row(Z, block + m) for m in range(block)]
    flips = ops.empty((block, C) if G == 1 else (G, block, C))

    done = 0
    for sweep in range(len(betas)):
        if deadline is not None and time.perf_counter() > deadline:
            break
        # thresholds N = d e / (2 sigma beta), d = 1 - 2 x = 1 + 2 NX; fixed: +-inf
        ops.exponential_(E)
        scale = ops.asarray(col(inv2sb[sweep]))
        if G == 1:
            ops.mul(E[:, :, None], scale.reshape(1, R, rows), out=N.reshape(n, R, rows))
        else:
            ops.mul(E, scale, out=N)
        N *= 1.0 + 2.0 * NX
        ops.where_(N, fmask, finf)
        for bi, b0 in enumerate(starts):
            bl = min(block, n - b0)
            nx = rows_of(NX, b0, b0 + bl)                          # minus the old states
            P = rows_of(F, b0, b0 + bl) + ops.matmul(lower[bi], nx)
            rows_of(Z, block - bl, block)[...] = P.flip(-2) if ops.name == "torch" else P[..., ::-1, :]
            cs, zs = coefs[bi], zrows[bi]
            ops.less(row(P, 0), Nj[b0], out=Zx[0])
            for m in range(1, bl):
                ops.matmul(cs[m], zs[m], out=U)
                ops.less(U, Nj[b0 + m], out=Zx[m])
            xnew = rows_of(Z, block, block + bl)
            fl = rows_of(flips, 0, bl)
            ops.add(xnew, nx, out=fl)                               # x_new - x_old
            upd = ops.matmul(colblk[bi], fl)
            if not coupled:
                upd *= wcol_t
            F += upd
            ops.sub(nx, fl, out=nx)
        done += 1
        if done % recompute_every == 0 and done < len(betas):
            F[...] = exact(NX)
    X = -unlay(ops.to_numpy(NX).astype(np.float64))
    return np.rint(X).astype(np.uint8), done


# ------------------------------------------------------------------------------------------
# The solver
# ------------------------------------------------------------------------------------------

@register("anneal", presets={
    "fast": {"num_reads": 4, "num_sweeps": 100},
    "thorough": {"num_reads": 64, "num_sweeps": 1000},
    "torch": {"backend": "torch"},
    "cuda": {"backend": "torch", "device": "cuda"},
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
        t0 = time.perf_counter()
        deadline = None if time_limit is None else t0 + time_limit
        X0 = self._starts(problem, rng, start)
        form = _form(problem)
        rows = problem.rows
        if p.beta_range is None:
            probe = X0[:1] if start is None else self._starts_random(problem, rng)
            br = auto_beta_range(problem, probe)
        else:
            br = np.tile(np.asarray(p.beta_range, dtype=np.float64), (rows, 1))
        betas = beta_schedule(br, p.num_sweeps, p.beta_schedule)
        ops = _TorchOps(p.dtype, rng, p.device) if p.backend == "torch" else _NumpyOps(p.dtype, rng)
        per_read = rows if form.shared else 1
        chunk = p.num_reads if p.max_batch is None else max(1, p.max_batch // per_read)
        out, sweeps = [], []
        with ops.threads(p.threads):
            for r0 in range(0, p.num_reads, chunk):
                X, done = anneal_batch(form, X0[r0:r0 + chunk], problem.fixed_mask, problem.fixed_value, betas, ops,
                                       block=p.block, recompute_every=p.recompute_every, deadline=deadline)
                out.append(X)
                sweeps.append(done)
        X = np.concatenate(out)
        cut = min(sweeps) < p.num_sweeps
        t1 = time.perf_counter()
        converged = None
        if p.polish and not (deadline is not None and t1 > deadline):
            X, converged = steepest_descent(problem, X, deadline=deadline)
            cut = cut or not converged
        extra: dict[str, Any] = {
            "status": "time_limit" if cut else "feasible",
            "sweeps_done": int(min(sweeps)), "beta_range": br.tolist() if rows <= 8 else
            [float(br[:, 0].min()), float(br[:, 1].max())],
            "anneal_seconds": t1 - t0, "polish_converged": converged,
        }
        return problem.apply_fixed(X), extra

    def _starts_random(self, problem: QUBOFamily, rng) -> np.ndarray:
        return problem.apply_fixed(rng.random((1, *problem.shape)) < problem.prior)
