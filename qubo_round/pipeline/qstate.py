"""Quantized state of one layer: integers, scales and zero points, and the one function that turns
them into weights (used by the in-memory write-back, resumption and the exported-model loader, so
all three give bit-identical weights)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..grid import RoundingSpace


@dataclass(frozen=True)
class LayerQState:
    """``W_hat = scale[:, None] * (q - zero_point[:, None])`` over the output channels.

    Attributes:
        q: int16 tensor of the weight's shape (out, ...), integers in [qmin, qmax].
        scale: (out,) float64.  zero_point: (out,) float64 (integers).
        qmin, qmax: grid limits.
    """

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int

    @classmethod
    def from_spaces(cls, spaces: list[RoundingSpace], Vs: list[np.ndarray], weight_shape) -> "LayerQState":
        q = np.concatenate([sp.integers(V) for sp, V in zip(spaces, Vs)], axis=0)
        s = np.concatenate([sp.s for sp in spaces])
        z = np.concatenate([sp.z for sp in spaces])
        return cls(q=torch.as_tensor(q.reshape(tuple(weight_shape)), dtype=torch.int16),
                   scale=torch.as_tensor(s, dtype=torch.float64),
                   zero_point=torch.as_tensor(z, dtype=torch.float64),
                   qmin=spaces[0].qmin, qmax=spaces[0].qmax)

    def weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dequantized weight tensor (computed in float64, then cast once)."""
        shape = (-1,) + (1,) * (self.q.dim() - 1)
        w = self.scale.reshape(shape) * (self.q.to(torch.float64) - self.zero_point.reshape(shape))
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
        return {f"{prefix}.q": self.q.contiguous(), f"{prefix}.scale": self.scale.contiguous(),
                f"{prefix}.zero_point": self.zero_point.contiguous(),
                f"{prefix}.limits": torch.tensor([self.qmin, self.qmax], dtype=torch.int64)}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], prefix: str) -> "LayerQState":
        """Read back :meth:`tensors`, validated (a checkpoint or an export is never trusted):
        integer ``q`` within ``[qmin, qmax]``, finite positive scales, integer zero points within
        the limits, one scale and zero point per output channel."""
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
        if s.shape != (out,) or z.shape != (out,):
            raise ValueError(f"{prefix}: scale {tuple(s.shape)} and zero_point {tuple(z.shape)} must both be "
                             f"({out},), one per output channel")
        s64, z64 = s.to(torch.float64), z.to(torch.float64)
        if not (torch.isfinite(s64).all() and (s64 > 0).all()):
            raise ValueError(f"{prefix}.scale must be finite and > 0 in every channel")
        if not (torch.isfinite(z64).all() and (z64 == z64.round()).all()
                and (z64 >= qmin).all() and (z64 <= qmax).all()):
            raise ValueError(f"{prefix}.zero_point must be integers within [{qmin}, {qmax}]")
        return cls(q=q.to(torch.int16), scale=s64, zero_point=z64, qmin=qmin, qmax=qmax)
