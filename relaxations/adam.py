"""Adam on one tensor, written out for the relaxation loops (no autograd)."""
from __future__ import annotations

import math

import torch


class Adam:
    """Adam (default betas) on one tensor, in place; the gradient is supplied by the caller.
    Written out in few fused tensor ops, since the per-step tensors of a layer are small."""

    def __init__(self, x: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.x, self.lr, self.b1, self.b2, self.eps = x, lr, betas[0], betas[1], eps
        self.m = torch.zeros_like(x)
        self.v = torch.zeros_like(x)
        self.t = 0
        # 0-dim tensors of x's dtype: a Python scalar operand costs an extra conversion op per call
        self._b2 = torch.tensor(self.b2, dtype=x.dtype, device=x.device)
        self._eps = torch.tensor(0.0, dtype=x.dtype, device=x.device)

    def step(self, grad: torch.Tensor) -> None:
        self.t += 1
        bc1, bc2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        self.m.lerp_(grad, 1 - self.b1)
        self.v.mul_(self._b2).addcmul_(grad, grad, value=1 - self.b2)
        denom = self.v.sqrt().add_(self._eps.fill_(self.eps * math.sqrt(bc2)))
        self.x.addcdiv_(self.m, denom, value=-self.lr * math.sqrt(bc2) / bc1)

    def reach(self) -> torch.Tensor:
        """Upper bound on how far each entry of ``x`` can still move if every future gradient
        is zero (momentum alone): ``lr / bc1 * |m| / sqrt(v) / (1 - b1 / sqrt(b2))``."""
        bc1 = 1 - self.b1 ** max(self.t, 1)
        ratio = self.m.abs() / (self.v.sqrt() + 1e-30)
        return ratio * (self.lr / bc1 / (1 - self.b1 / math.sqrt(self.b2)))
