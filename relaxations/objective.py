"""The relaxation solvers' common parts: devices, the relaxed objective in torch, the solver base.

The continuous form of a QUBO family (``E_k(h) = a_k h^T P_k h + l_k . h + c_k``, exact on
binary ``h``) and the row units that scale ``lambda`` live in the core,
:mod:`qubo_round.split` (GPTQ uses them too); they are re-exported here.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np
import torch
from tqdm.auto import tqdm

from qubo_round.problem import QUBOFamily
from qubo_round.solvers.base import CapabilityError, Solver
from qubo_round.split import QuadraticSplit, quadratic_split, row_units  # noqa: F401  (re-exported)

from .adam import Adam  # noqa: F401  (re-exported: the relaxation solvers' optimiser)

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEVICES = ("cpu", "cuda", "auto")


def resolve_device(device: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` / ``"cuda:N"`` (raises :class:`CapabilityError` without CUDA) or
    ``"auto"`` (CUDA when available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CapabilityError(f"device={device!r} was requested but CUDA is not available; "
                              "use device='cpu' or device='auto'")
    return torch.device(device)


def steps(iterations: int, progress: bool, label: str):
    """``range(iterations)``, wrapped in a tqdm bar when ``progress`` (the pipeline turns it on
    for the layer being solved; the bar closes when the loop ends or breaks early)."""
    if not progress:
        return range(iterations)
    return tqdm(range(iterations), desc=label, leave=False, unit="it", mininterval=0.5)


def check_device_dtype(device: str, dtype: str, threads: int | None = 1) -> None:
    """Validate the ``device``, ``dtype`` and ``threads`` parameters (ValueError)."""
    if threads is not None and (not isinstance(threads, (int, np.integer)) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    cuda_n = isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit()
    if device not in DEVICES and not cuda_n:
        raise ValueError(f"device must be one of {DEVICES} or 'cuda:N', got {device!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")


class RelaxedObjective:
    """The normalised continuous objective of a family on one torch device, batched over rows.

    ``F(h) = sum_k E_k(h_k) / u_k`` with ``u_k`` the row units (module docstring); fixed entries of
    ``h`` are held at their values. All tensors are (rows, n) unless stated.
    """

    def __init__(self, problem: QUBOFamily, device: torch.device, dtype: torch.dtype) -> None:
        sp = quadratic_split(problem)
        self.units = sp.units(problem.fixed_mask)  # (rows,) float64, numpy
        t = dict(device=device, dtype=dtype)
        self.shared = sp.shared
        # stacked groups (problem.stack_rows) of equal size: one matrix per group, not per row
        groups = None if sp.shared else problem.meta.get("row_groups")
        self.groups = None
        P = sp.P
        if groups and len(set(groups)) == 1 and sum(groups) == problem.rows:
            self.groups = (len(groups), groups[0])
            P = np.ascontiguousarray(P[::groups[0]])  # (G, n, n), row-major for the batched product
        self.P = torch.as_tensor(P, **t)  # only the matrices used are converted (and moved)
        self.a = torch.as_tensor(sp.a / self.units, **t)[:, None]  # (rows, 1)
        self.a2 = 2.0 * self.a
        self.lin = torch.as_tensor(sp.lin / self.units[:, None], **t)
        self.c = torch.as_tensor(sp.offset / self.units, **t)
        # group-wise grids: P_k = T_k A T_k applied as t * (A (t * h)), never formed
        self.col = None if sp.col is None else torch.as_tensor(sp.col, **t)
        self.free = torch.as_tensor(~problem.fixed_mask, device=device)
        self.fixed_value = torch.as_tensor(problem.fixed_value, **t)
        self.device, self.dtype = device, dtype

    def tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), device=self.device, dtype=self.dtype)

    def hold_fixed(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` with fixed entries replaced by their values."""
        return torch.where(self.free, h, self.fixed_value)

    def matvec(self, h: torch.Tensor) -> torch.Tensor:
        """(rows, n) ``P_k h_k`` (``t_k * (A_k (t_k * h_k))`` with column scales)."""
        if self.col is not None:
            return self.col * self._matvec(self.col * h)
        return self._matvec(h)

    def _matvec(self, h: torch.Tensor) -> torch.Tensor:
        if self.shared:
            return h @ self.P
        if self.groups is not None:  # (G, rows_g, n) @ (G, n, n): each group as its own h @ P
            G, rg = self.groups
            return torch.bmm(h.view(G, rg, -1), self.P).view(h.shape)
        return torch.bmm(self.P, h.unsqueeze(-1)).squeeze(-1)

    def grad(self, h: torch.Tensor) -> torch.Tensor:
        """Gradient in ``h`` (rows, n) of the normalised energies, not masked: the entries of
        fixed variables are meaningless (their ``h`` never moves). ``h`` holds the fixed values."""
        return torch.addcmul(self.lin, self.a2, self.matvec(h))

    def value_and_grad(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised row energies (rows,) and their gradient in ``h`` (rows, n), zero on fixed
        entries. ``h`` must already hold the fixed values."""
        Ph = self.matvec(h)
        value = (self.a * (h * Ph)).sum(-1) + (self.lin * h).sum(-1) + self.c
        grad = (2.0 * self.a) * Ph + self.lin
        return value, grad * self.free

    def energies(self, h: torch.Tensor) -> np.ndarray:
        """(rows,) float64 energies in the problem's own units (un-normalised)."""
        v, _ = self.value_and_grad(h)
        return v.double().cpu().numpy() * self.units


def initial_h(problem: QUBOFamily, start: np.ndarray | None) -> np.ndarray:
    """(rows, n) starting point of a relaxation: the prior ``frac(W/s)`` (0.5 on a plain QUBO),
    or halfway between the prior and ``start`` when a start assignment is given."""
    p = problem.prior
    if start is not None:
        p = 0.5 * (p + np.asarray(start, np.float64))
    return p


def deadline_of(time_limit: float | None, t0: float) -> float | None:
    return None if time_limit is None else t0 + time_limit


@contextmanager
def cpu_settings(threads: int | None, flush_subnormals: bool = True):
    """While the block runs: torch on ``threads`` CPU threads (None: unchanged) and subnormal
    floats flushed to zero (``flush_subnormals=False`` only to measure what the flush gives,
    ``benchmarks/relaxation_step.py``).

    The flush matters: once an ``h`` is clipped its gradient is exactly zero, so Adam's moments
    decay geometrically and turn subnormal after some 800 steps, and every element-wise pass over
    subnormals runs several times slower (``benchmarks/relaxation_step.py``: digits fc1, same
    rounding). Values below 1.2e-38 (float32) have no effect on the result. Afterwards the thread
    count is restored and the flush turned off (torch's default; torch has no getter for it)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    torch.set_flush_denormal(bool(flush_subnormals))
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(before)


class TorchSolver(Solver):
    """Base of the torch-based solvers (``batches_groups``: all rows are one batched tensor).

    Parameters every subclass has: ``device`` (checked before any work: ``"cuda"`` without CUDA
    raises :class:`CapabilityError`), ``dtype``, and ``threads``: the CPU threads torch may use
    during the solve (default 1; the per-step tensors are small, and on a busy machine torch's
    intra-op threads cost more than they give; None keeps torch's global setting). The setting
    is restored after the solve (process-global while it runs), and subnormal floats are flushed
    to zero meanwhile (:func:`cpu_settings`).
    """
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    batches_groups = True
    threaded = True

    def check(self, problem: QUBOFamily) -> None:
        super().check(problem)
        resolve_device(self.params.device)

    def flush_subnormals(self) -> bool:
        """Whether subnormal floats are flushed during the solve (:func:`cpu_settings`)."""
        return True

    def solve(self, problem: QUBOFamily, **kw):
        with cpu_settings(self.params.threads, self.flush_subnormals()):
            return super().solve(problem, **kw)

    def setup(self, problem: QUBOFamily) -> RelaxedObjective:
        """The problem's normalised objective on the solver's device and dtype."""
        device = resolve_device(self.params.device)
        obj = RelaxedObjective(problem, device, DTYPES[self.params.dtype])
        log.debug("%s on %s (%s): %s rows x %s, row units %.3g..%.3g", self.name, device,
                  self.params.dtype, problem.rows, problem.n, obj.units.min(), obj.units.max())
        return obj
