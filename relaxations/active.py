"""Active-set compaction of AdaRound's relaxation, shared by its covariance and data forms.

An entry ``(k, i)`` of the relaxation is *frozen* once its ``h`` is clipped (``|theta| >
THETA_CLIP``: ``h`` is exactly 0 or 1) and Adam's momentum alone cannot bring ``theta`` back
inside (its margin exceeds :meth:`Adam.reach`). Where the clip is active the gradient in
``theta`` is exactly zero (eq. 23), whatever the other entries do, so a frozen entry keeps its
``h`` and its rounding (``theta >= 0``) to the end of the run. Under the annealed regulariser most
entries freeze long before the last iteration (on the digits layers at 3 bits: about half right
after the warm-up, 85-95% by 60% of the iterations).

:class:`ActiveSet` gathers the entries that can still move into ``(rows, amax)`` tensors
(``amax``: the most active entries of any row; shorter rows are padded with a clipped dummy whose
gradient is zero) and runs the element-wise work of a step (rectified sigmoid, regulariser, Adam)
on them only. Frozen entries keep their last ``h`` in the full ``(rows, n)`` matrix :attr:`h`,
which the loss gradients read (both forms still form their matrix products in full).

Nothing is approximated or reordered: every active entry goes through the arithmetic of the full
loop, and a frozen entry's ``h`` is the value it would have kept. (The one difference: an entry
that moves to another position may meet the scalar instead of the vectorised code of an element-
wise function, which can round its last bit differently.) The roundings, iteration counts and
relaxed energies came out identical with and without compaction in the tests, on every layer
of the digits model and in a MiniLM run (36 layers).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from .adam import Adam
from .fused import kernels
from .schedule import GAMMA, ZETA

if TYPE_CHECKING:
    from .objective import RelaxedObjective

#: |theta| beyond which h(theta) is clipped to 0 or 1: logit((1 - gamma) / (zeta - gamma)) = ln 11.
THETA_CLIP = math.log((1 - GAMMA) / (ZETA - GAMMA) / (1 - (1 - GAMMA) / (ZETA - GAMMA)))
#: Implementations of the element-wise step: ``eager`` torch operations (the default) or
#: ``compiled``, fused by torch.compile (:mod:`relaxations.fused`).
KERNELS = ("eager", "compiled")
#: theta of the padding entries: far inside the clipped range, so their gradient is exactly zero.
PAD_THETA = 100.0
#: Re-compact only when the widest row has shrunk to this fraction of the current width ...
SHRINK = 0.9
#: ... and only problems of at least this many entries: below it, a step's cost is the fixed cost
#: of its ~25 tensor operations, which the gathers of a compact layout would only add to
#: (``benchmarks/relaxation_step.py`` compares never / by this rule / always on the digits layers).
MIN_ENTRIES = 8192


class ActiveSet:
    """The free entries of a ``(rows, n)`` relaxation that can still move, and their Adam state.

    It starts *full*: :attr:`theta` is the whole ``(rows, n)`` matrix, fixed entries included
    (their ``h`` is held at its value, their ``theta`` is never read), exactly the full loop. The
    first compaction happens once the widest row's active entries fit in ``SHRINK`` of its
    width (problems of ``MIN_ENTRIES`` entries or more).

    Attributes:
        theta: ``(rows, amax)`` theta of the active entries (the tensor Adam updates).
        opt: the :class:`Adam` optimiser on :attr:`theta`.
        h: ``(rows, n)`` current ``h`` of every entry (fixed entries at their values).
        full: True while uncompacted (``theta`` is the full matrix, no gathers).
        idx: ``(rows, amax)`` column of each active entry, ``n`` on padding (compact only).
        valid: ``(rows, amax)`` the entries that were active at the last compaction (False on
            padding); while full, the free entries.
        version: number of compactions so far.
    """

    def __init__(self, theta: torch.Tensor, free: torch.Tensor, fixed_value: torch.Tensor, lr: float,
                 zeta: float = ZETA, gamma: float = GAMMA, *, min_entries: int = MIN_ENTRIES,
                 kernel: str = "eager") -> None:
        rows, n = theta.shape
        self.rows, self.n, self.min_entries = rows, n, min_entries
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self._fused = kernels() if kernel == "compiled" else None  # relaxations.fused
        self._next = None  # compiled kernel: (theta, sigmoid(theta), h(theta)) for the next step
        t = dict(device=theta.device, dtype=theta.dtype)
        # constants as 0-dim tensors of the working dtype: a Python scalar costs a conversion
        # (an extra tensor op) on every call, the same arithmetic
        self._k = {k: torch.tensor(v, **t) for k, v in
                   dict(zg=zeta - gamma, gamma=gamma, one=1.0, two=2.0, zero=0.0).items()}
        self.free, self.fixed_value = free, fixed_value
        self._hold = not bool(free.all())
        self.opt = Adam(theta.clone(), lr)
        self.theta, self.full, self.version = self.opt.x, True, 0
        self.valid, self.amax = free, n
        self.h = self._held(self.forward(self.theta)[1])

    # -- per step ------------------------------------------------------------------------------
    def forward(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(sig, h, inside)``: the sigmoid, the rectified sigmoid (eq. 23) and where its clip is
        inactive (elsewhere the gradient is zero)."""
        sig = torch.sigmoid(theta)
        raw = sig.mul(self._k["zg"]).add_(self._k["gamma"])
        h = raw.clamp(0.0, 1.0)
        return sig, h, h == raw

    def _held(self, h: torch.Tensor) -> torch.Tensor:
        return torch.where(self.free, h, self.fixed_value) if self._hold else h

    def step_h(self) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """``(sig, h_active, inside)`` of the active entries; writes them into :attr:`h` (the
        compiled kernel returns ``inside`` None: its step derives it from ``sig``, and takes
        ``sig`` and ``h`` from the previous step's kernel)."""
        if self._fused is not None:
            if self._next is None or self._next[0] is not self.theta:  # first step, or compacted since
                self._next = (self.theta, *self._fused[0](self.theta, self._k["zg"], self._k["gamma"]))
            _, sig, h = self._next
            inside = None
        else:
            sig, h, inside = self.forward(self.theta)
        if self.full:
            h = self.h = self._held(h)
        else:
            self.h.view(-1).index_copy_(0, self._dst, h.view(-1).index_select(0, self._src))
        return sig, h, inside

    def gather(self, full: torch.Tensor) -> torch.Tensor:
        """``(rows, amax)`` entries of a ``(rows, n)`` matrix at the active positions (padding:
        any value; its gradient is zeroed by the clip)."""
        return full if self.full else full.gather(1, self._idx_c)

    def theta_grad(self, g_h: torch.Tensor, h: torch.Tensor, sig: torch.Tensor, inside: torch.Tensor,
                   beta: float | None, lam: float) -> torch.Tensor:
        """Gradient in ``theta`` (rows, amax) from ``g_h``, the loss gradient in ``h`` at the
        active entries (overwritten): adds the regulariser's ``lam * sum (1 - |2 h - 1|^beta)``
        (``beta`` None: warm-up, none) and applies the chain rule of eq. 23 (zero where clipped)."""
        k = self._k
        if beta is not None and lam > 0:
            u = h.mul(k["two"]).sub_(k["one"])  # d/dh (1 - |u|^beta) = -2 beta |u|^(beta-2) u
            g_h.add_(u.abs().pow_(beta - 2.0).mul_(u), alpha=-2.0 * beta * lam)
        g = torch.ops.aten.sigmoid_backward(g_h, sig)
        return torch.where(inside, g, k["zero"]).mul_(k["zg"])

    def step(self, g_h: torch.Tensor, h: torch.Tensor, sig: torch.Tensor, inside: torch.Tensor,
             beta: float | None, lam: float) -> None:
        """One Adam step on the active entries from the loss gradient ``g_h`` (see
        :meth:`theta_grad`)."""
        if self._fused is None:
            return self.opt.step(self.theta_grad(g_h, h, sig, inside, beta, lam))
        o, k = self.opt, self._k
        o.t += 1
        bc1, bc2 = 1 - o.b1**o.t, 1 - o.b2**o.t
        reg = -2.0 * beta * lam if beta is not None and lam > 0 else 0.0
        t = lambda v: torch.tensor(v, dtype=g_h.dtype, device=g_h.device)  # noqa: E731  (0-dim: no recompiles)
        o.x, o.m, o.v, sig2, h2 = self._fused[1](self.theta, o.m, o.v, g_h, sig, k["zg"], k["gamma"],
                                                 t(2.0 if beta is None else beta), t(reg), t(o.b1), t(o.b2),
                                                 t(o.lr * math.sqrt(bc2) / bc1), t(o.eps * math.sqrt(bc2)))
        self.theta = o.x
        self._next = (o.x, sig2, h2)

    def scatter(self, part: torch.Tensor) -> torch.Tensor:
        """``(rows, n)`` matrix holding ``part`` (rows, amax) at the active positions, 0 elsewhere
        (while full: ``part`` itself, fixed entries included)."""
        return self._ext(part)[:, :self.n]

    # -- compaction ----------------------------------------------------------------------------
    def check(self) -> bool:
        """True when every entry is frozen (nothing can change any more). Otherwise drops the
        entries that froze since the last check, when that narrows the widest row to ``SHRINK``
        of its width or less in a problem of ``min_entries`` entries or more (:attr:`version`
        counts these compactions)."""
        margin = self.theta.abs() - THETA_CLIP
        still = self.valid & ~(margin > self.opt.reach())
        width = int(still.sum(1).max()) if still.numel() else 0
        if width == 0:
            return True
        if self.rows * self.n >= self.min_entries and width <= SHRINK * self.amax:
            self._compact(still)
        return False

    def full_theta(self) -> torch.Tensor:
        """``(rows, n)`` theta of every entry (frozen ones as they froze; fixed ones meaningless)."""
        if self.full:
            return self.theta
        return self._ext(self.theta, self._theta_ext.clone(), PAD_THETA)[:, :self.n]

    def _ext(self, part: torch.Tensor, out: torch.Tensor | None = None, pad: float = 0.0) -> torch.Tensor:
        """``part`` written into a ``(rows, n + 1)`` matrix (``out``, or a new one filled with
        ``pad``) at its columns; the last column is the padding's and is reset to ``pad``."""
        if out is None:
            out = torch.full((self.rows, self.n + 1), pad, dtype=part.dtype, device=part.device)
        if self.full:
            out[:, :self.n] = part
        else:
            out.scatter_(1, self.idx, part)
            out[:, self.n] = pad
        return out

    def _compact(self, still: torch.Tensor) -> None:
        """Gather the entries marked in ``still`` (same layout as :attr:`theta`) into new compact
        tensors, with their Adam moments."""
        n, dev = self.n, self.theta.device
        if self.full:  # theta of every entry, kept for the frozen ones' final value
            self._theta_ext = self._ext(self.theta, pad=PAD_THETA)
        else:
            self._ext(self.theta, self._theta_ext, PAD_THETA)
        theta, m, v = self._theta_ext, self._ext(self.opt.m), self._ext(self.opt.v)
        if self.full:
            active = still
        else:
            active = torch.zeros((self.rows, n + 1), dtype=torch.bool, device=dev)
            active.scatter_(1, self.idx, still)
            active = active[:, :n]
        counts = active.sum(1)
        self.amax = int(counts.max())
        # active columns first, in column order: unique int64 keys (no stable sort needed on any device)
        key = (~active).to(torch.int64) * n + torch.arange(n, device=dev)
        order = torch.argsort(key, dim=1)[:, :self.amax]
        self.valid = torch.arange(self.amax, device=dev)[None, :] < counts[:, None]
        self.idx = torch.where(self.valid, order, n)
        self._idx_c = self.idx.clamp(max=n - 1)
        rows_off = torch.arange(self.rows, device=dev)[:, None] * n
        self._src = self.valid.reshape(-1).nonzero().squeeze(1)
        self._dst = (rows_off + self._idx_c).reshape(-1).index_select(0, self._src)
        self.theta = theta.gather(1, self.idx)
        self.opt.x, self.opt.m, self.opt.v = self.theta, m.gather(1, self.idx), v.gather(1, self.idx)
        self.full = False
        self.version += 1


class CovarianceGrad:
    """Gradient in ``h`` of the covariance form's normalised loss, ``lin + 2 a P h`` (the rows of
    a :class:`RelaxedObjective`), at the active entries of an :class:`ActiveSet`.

    The product ``h P`` is formed in full: with ``P`` shared by the rows it is one matrix product
    that keeps ``P`` in cache, while per-row blocks ``P[active_k, active_k]`` (fewer flops) would
    stream ``rows`` different blocks from memory every step, which measured slower."""

    def __init__(self, obj: "RelaxedObjective", aset: ActiveSet) -> None:
        self.obj, self.aset = obj, aset
        self.version = -1

    def __call__(self) -> torch.Tensor:
        """``(rows, amax)`` gradient in ``h`` at the active entries (a fresh tensor)."""
        if self.version != self.aset.version:  # the layout changed: re-gather the linear terms
            self.lin, self.version = self.aset.gather(self.obj.lin), self.aset.version
        return torch.addcmul(self.lin, self.obj.a2, self.aset.gather(self.obj.matvec(self.aset.h)))
