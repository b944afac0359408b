"""AdaRound's continuous relaxation (eq. 21-24) on any QUBO family, batched over rows.

The rounding variables ``V in {0,1}`` are relaxed to the rectified sigmoid of a real matrix
(also written ``V`` in the paper; ``theta`` here, shape (rows, n))::

    h(theta) = clip(sigmoid(theta) (zeta - gamma) + gamma, 0, 1),      zeta = 1.1, gamma = -0.1

and the solver minimises, with Adam on ``theta``::

    F(theta) = sum_k E_k(h_k) / u_k  +  lambda * sum_{k, i free} (1 - |2 h_ki - 1|^beta)

``E_k(h)`` is the row's continuous form (:mod:`qubo_round.relaxations.objective`; in the covariance
form the reconstruction loss ``tr(dW H dW^T)`` of ``W_tilde = s (floor + h)``, computed from the
matrix ``H`` instead of data batches) and ``u_k`` the row unit, the loss of one free weight moved
by one grid step. So ``lambda`` is measured in "one-step rounding errors per weight": independent
of the weight and activation scales of the layer (the paper's ``lambda = 0.01`` multiplies an MSE
averaged over output elements instead, whose magnitude depends on the layer). The default
``lambda = 0.1`` was chosen on the digits model's layers at 3 bits (see
``benchmarks/relaxations_digits.py``).

Schedule: the first ``warmup`` fraction of the iterations runs without the regulariser; then
``beta`` decays from ``beta_start`` to ``beta_end`` (linear or cosine). Start: ``h(theta) = prior``
(``frac(W/s)``; 0.5 on a plain QUBO). End: ``theta >= 0`` rounds up. Fixed variables are held at
their values throughout. The method is deterministic (no sampling: full-batch covariance form).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from qubo_round.problem import QUBOFamily
from qubo_round.solvers.registry import register

from .objective import GAMMA, ZETA, Adam, TorchSolver, check_device_dtype, initial_h

log = logging.getLogger(__name__)


def rectified_sigmoid(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(h, dh/dtheta, raw)`` of eq. 23 for theta (rows, n); the derivative is zero where the clip
    is active (as autograd's clamp gives), ``raw`` is the unclipped value."""
    sig = torch.sigmoid(theta)
    raw = sig * (ZETA - GAMMA) + GAMMA
    inside = (raw >= 0) & (raw <= 1)
    dh = (ZETA - GAMMA) * sig * (1 - sig) * inside
    return raw.clamp(0.0, 1.0), dh, raw


def inverse_rectified_sigmoid(h: torch.Tensor) -> torch.Tensor:
    """``theta`` with ``h(theta) = h`` for h in [0, 1] (finite everywhere)."""
    sig = (h - GAMMA) / (ZETA - GAMMA)
    return torch.log(sig) - torch.log1p(-sig)


def beta_schedule(it: int, iterations: int, warmup: float, start: float, end: float,
                  decay: str) -> float | None:
    """``beta`` at iteration ``it`` (0-based), or None during the warm-up (no regulariser)."""
    warm = int(round(warmup * iterations))
    if it < warm:
        return None
    r = (it - warm) / max(1, iterations - warm)
    if decay == "cosine":
        return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * r))
    return end + (start - end) * (1.0 - r)


def regulariser_grad(h: torch.Tensor, beta: float) -> torch.Tensor:
    """Gradient in h of ``1 - |2h - 1|^beta``: ``-2 beta |2h - 1|^(beta - 1) sign(2h - 1)``."""
    u = 2.0 * h - 1.0
    return (-2.0 * beta) * u.abs().pow(beta - 1.0) * torch.sign(u)


@dataclass(frozen=True)
class AdaRoundParams:
    iterations: int = 10000
    lr: float = 1e-2
    lam: float = 0.1
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2
    decay: str = "linear"  # or "cosine"
    device: str = "cpu"  # "cpu" | "cuda" | "auto"
    dtype: str = "float32"
    threads: int | None = 1

    def __post_init__(self) -> None:
        if not isinstance(self.iterations, (int, np.integer)) or self.iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {self.iterations!r}")
        if not self.lr > 0 or not self.lam >= 0:
            raise ValueError(f"lr must be > 0 and lam >= 0, got lr={self.lr}, lam={self.lam}")
        if not self.beta_start >= self.beta_end >= 1:
            raise ValueError(f"need beta_start >= beta_end >= 1, got {self.beta_start}, {self.beta_end}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the iterations in [0, 1), got {self.warmup}")
        if self.decay not in ("linear", "cosine"):
            raise ValueError(f"decay must be 'linear' or 'cosine', got {self.decay!r}")
        check_device_dtype(self.device, self.dtype, self.threads)


@register("adaround", presets={"fast": {"iterations": 2000}, "paper": {"iterations": 20000},
                               "cosine": {"decay": "cosine"}, "gpu": {"device": "cuda"}})
class AdaRound(TorchSolver):
    """AdaRound: rectified-sigmoid relaxation with the annealed regulariser (eq. 21-24), on the
    QUBO's continuous form (no data batches); ``theta >= 0`` rounds up."""

    Params = AdaRoundParams

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        t0 = time.perf_counter()
        p = self.params
        obj = self.setup(problem)
        theta = inverse_rectified_sigmoid(obj.tensor(initial_h(problem, start)))
        opt = Adam(theta, p.lr)
        free = obj.free
        status, done = "feasible", 0
        for it in range(p.iterations):
            if time_limit is not None and time.perf_counter() - t0 > time_limit:
                status = "time_limit"
                break
            h, dh, _ = rectified_sigmoid(theta)
            h = obj.hold_fixed(h)
            _, g = obj.value_and_grad(h)
            beta = beta_schedule(it, p.iterations, p.warmup, p.beta_start, p.beta_end, p.decay)
            if beta is not None and p.lam > 0:
                g = g + (p.lam * regulariser_grad(h, beta)) * free
            opt.step(g * dh)
            done = it + 1
        h, _, _ = rectified_sigmoid(theta)
        h = obj.hold_fixed(h)
        X = problem.apply_fixed((theta >= 0).cpu().numpy())
        soft = ((h > 0.01) & (h < 0.99) & free).sum().item() / max(1, int(free.sum().item()))
        log.debug("adaround: %d iterations, %.1f%% of free h not yet at 0/1", done, 100 * soft)
        return X, {"status": status, "iterations_done": done, "device": str(obj.device),
                   "relaxed_energy": float(obj.energies(h).sum()), "soft_fraction": soft}
