"""AdaRound's building blocks (method.md section 3): the rectified sigmoid, its inverse, the
rounding regulariser and the annealed beta schedule."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(V: torch.Tensor) -> torch.Tensor:
    """``h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)`` (eq. 23)."""
    return torch.clamp(torch.sigmoid(V) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def rectified_sigmoid_inverse(h: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``V`` with ``h(V) = h`` for h in [0, 1] (h clamped to [eps, 1 - eps] first)."""
    p = (h.clamp(eps, 1 - eps) - GAMMA) / (ZETA - GAMMA)
    return torch.log(p / (1 - p))


def regulariser(h: torch.Tensor, beta: float) -> torch.Tensor:
    """``f_reg = sum (1 - |2 h - 1|^beta)`` (eq. 24): 0 at h in {0, 1}, pushes h there."""
    return (1 - (2 * h - 1).abs().pow(beta)).sum()


@dataclass(frozen=True)
class AdaRoundSchedule:
    """Hyper-parameters: ``iterations`` (the paper's 10k), Adam ``lr``, regulariser weight
    ``lam`` (1.0, per unit of row loss: see ``relaxations.objective.row_units``), ``beta`` annealed from ``beta_start`` (20) to ``beta_end`` (2) after a warm-up
    of ``warmup`` (20%) of the iterations without the regulariser, ``decay`` linear or cosine."""

    iterations: int = 10000
    lr: float = 1e-2
    lam: float = 1.0
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2
    decay: str = "linear"

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")
        if self.decay not in ("linear", "cosine"):
            raise ValueError(f"decay must be 'linear' or 'cosine', got {self.decay!r}")
        if self.lr <= 0 or self.lam < 0:
            raise ValueError("lr must be > 0 and lam >= 0")

    @classmethod
    def from_params(cls, params: dict) -> "AdaRoundSchedule":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def beta(self, t: int) -> float | None:
        """beta at iteration t, or None during the warm-up (no regulariser)."""
        start = int(self.warmup * self.iterations)
        if t < start:
            return None
        frac = (t - start) / max(1, self.iterations - start)
        if self.decay == "cosine":
            frac = 0.5 * (1 - math.cos(math.pi * frac))
        return self.beta_start + (self.beta_end - self.beta_start) * frac
