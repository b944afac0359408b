"""Quantized state of one layer: integers, scales and zero points, and the one function that turns
them into weights (used by the in-memory write-back, resumption and the exported-model loader, so
all three give bit-identical weights)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..grid import RoundingSpace, scale_shape


@dataclass(frozen=True)
class LayerQState:
    """``W_hat = scale[:, None] * (q - zero_point[:, None])`` over the output channels, or per
    output channel and group of ``group_size`` consecutive entries of the flattened input
    ``(in, kh, kw)`` (group-wise grids).

    Attributes:
        q: int16 tensor of the weight's shape (out, ...), integers in [qmin, qmax].
        scale: (out,) float64, or (out, G) with ``G = ceil(cols / group_size)``.
        zero_point: float64 integers, shaped as ``scale``.
        qmin, qmax: grid limits.
        group_size: 0 (per channel) or the columns per group.
    """

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    group_size: int = 0

    @classmethod
    def from_spaces(cls, spaces: list[RoundingSpace], Vs: list[np.ndarray], weight_shape) -> "LayerQState":
        q = np.concatenate([sp.integers(V) for sp, V in zip(spaces, Vs)], axis=0)
        s = np.concatenate([sp.s for sp in spaces])
        z = np.concatenate([sp.z for sp in spaces])
        return cls(q=torch.as_tensor(q.reshape(tuple(weight_shape)), dtype=torch.int16),
                   scale=torch.as_tensor(s, dtype=torch.float64),
                   zero_point=torch.as_tensor(z, dtype=torch.float64),
                   qmin=spaces[0].qmin, qmax=spaces[0].qmax, group_size=int(spaces[0].group_size))

    def per_entry(self, a: torch.Tensor) -> torch.Tensor:
        """``scale`` or ``zero_point`` broadcastable against ``q``: (out, 1, ...) per channel, the
        weight's shape per group (column ``j`` of the flattened input takes group ``j // g``)."""
        if not self.group_size:
            return a.reshape((-1,) + (1,) * (self.q.dim() - 1))
        cols = self.q[0].numel() if self.q.dim() else 0
        return a.repeat_interleave(int(self.group_size), dim=1)[:, :cols].reshape(self.q.shape)

    def weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dequantized weight tensor (computed in float64, then cast once)."""
        w = self.per_entry(self.scale) * (self.q.to(torch.float64) - self.per_entry(self.zero_point))
        return w.to(dtype)

    def apply(self, module: nn.Module) -> None:
        """Write the dequantized weight into ``module.weight`` (its dtype and device kept)."""
        w = module.weight
        if tuple(w.shape) != tuple(self.q.shape):
            raise ValueError(f"quantized state has shape {tuple(self.q.shape)}, the module's weight "
                             f"{tuple(w.shape)}")
        with torch.no_grad():
            w.copy_(self.weight(w.dtype).to(w.device))

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}.q": self.q.contiguous(), f"{prefix}.scale": self.scale.contiguous(),
               f"{prefix}.zero_point": self.zero_point.contiguous(),
               f"{prefix}.limits": torch.tensor([self.qmin, self.qmax], dtype=torch.int64)}
        if self.group_size:  # absent: per channel (the files of per-channel runs are unchanged)
            out[f"{prefix}.group_size"] = torch.tensor([int(self.group_size)], dtype=torch.int64)
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], prefix: str) -> "LayerQState":
        """Read back :meth:`tensors`, validated (a checkpoint or an export is never trusted):
        integer ``q`` within ``[qmin, qmax]``, finite positive scales, integer zero points within
        the limits, one scale and zero point per output channel (or per channel and group, with
        a ``group_size`` tensor: one positive integer)."""
        keys = [f"{prefix}.{k}" for k in ("q", "scale", "zero_point", "limits")]
        missing = [k for k in keys if k not in t]
        if missing:
            raise ValueError(f"{prefix}: missing tensor(s) {missing}")
        q, s, z, lim = (t[k] for k in keys)
        if q.dtype not in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
            raise ValueError(f"{prefix}.q must hold integers, got dtype {q.dtype}")
        if lim.numel() != 2 or lim.dtype.is_floating_point:
            raise ValueError(f"{prefix}.limits must be two integers (qmin, qmax), got {lim.tolist()}")
        qmin, qmax = (int(v) for v in lim.tolist())
        if not -(2**15) <= qmin < qmax <= 2**15 - 1:
            raise ValueError(f"{prefix}.limits ({qmin}, {qmax}) are not a valid grid (qmin < qmax, int16 range)")
        if q.numel() and (int(q.min()) < qmin or int(q.max()) > qmax):
            raise ValueError(f"{prefix}.q has values in [{int(q.min())}, {int(q.max())}] outside its limits "
                             f"[{qmin}, {qmax}]")
        out = q.shape[0] if q.dim() else 0
        g = 0
        if f"{prefix}.group_size" in t:
            gt = t[f"{prefix}.group_size"]
            if gt.numel() != 1 or gt.dtype.is_floating_point or int(gt.reshape(-1)[0]) < 1:
                raise ValueError(f"{prefix}.group_size must be one positive integer, got {gt.tolist()}")
            g = int(gt.reshape(-1)[0])
        cols = q[0].numel() if out else 0
        want = scale_shape(out, cols, g)
        if tuple(s.shape) != want or tuple(z.shape) != want:
            raise ValueError(f"{prefix}: scale {tuple(s.shape)} and zero_point {tuple(z.shape)} must both be "
                             f"{want}, one per output channel" + (f" and group of {g} columns" if g else ""))
        s64, z64 = s.to(torch.float64), z.to(torch.float64)
        if not (torch.isfinite(s64).all() and (s64 > 0).all()):
            raise ValueError(f"{prefix}.scale must be finite and > 0 in every channel")
        if not (torch.isfinite(z64).all() and (z64 == z64.round()).all()
                and (z64 >= qmin).all() and (z64 <= qmax).all()):
            raise ValueError(f"{prefix}.zero_point must be integers within [{qmin}, {qmax}]")
        return cls(q=q.to(torch.int16), scale=s64, zero_point=z64, qmin=qmin, qmax=qmax, group_size=g)
