"""AdaRound's constants and annealed beta schedule (method.md section 3). The rectified sigmoid,
the regulariser's gradient and the Adam step live in :mod:`qubo_round.relaxations.active`, its
inverse in :mod:`qubo_round.relaxations.adaround`."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

ZETA, GAMMA = 1.1, -0.1


def check_steps(iterations, lr) -> None:
    """The optimiser settings every relaxation has: a positive integer ``iterations`` and ``lr > 0``."""
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")


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
        check_steps(self.iterations, self.lr)
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if not self.beta_start >= self.beta_end >= 2:
            raise ValueError(f"need beta_start >= beta_end >= 2, got {self.beta_start}, {self.beta_end}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the iterations in [0, 1), got {self.warmup}")
        if self.decay not in ("linear", "cosine"):
            raise ValueError(f"decay must be 'linear' or 'cosine', got {self.decay!r}")

    @classmethod
    def of(cls, params) -> "AdaRoundSchedule":
        """The schedule of a solver's parameters (any object with these fields as attributes,
        e.g. :class:`~qubo_round.relaxations.adaround.AdaRoundParams`)."""
        return cls(**{f.name: getattr(params, f.name) for f in fields(cls)})

    def beta(self, t: int) -> float | None:
        """beta at iteration t, or None during the warm-up (no regulariser)."""
        start = int(self.warmup * self.iterations)
        if t < start:
            return None
        frac = (t - start) / max(1, self.iterations - start)
        if self.decay == "cosine":
            frac = 0.5 * (1 - math.cos(math.pi * frac))
        return self.beta_start + (self.beta_end - self.beta_start) * frac
