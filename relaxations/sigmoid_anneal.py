"""Sigmoid relaxation with temperature annealing (the Hopfield / mean-field style variant of the
paper's Table 3), batched over rows.

``h = sigmoid(theta / T)`` with Adam on ``theta`` (rows, n), minimising the normalised continuous
form ``sum_k E_k(h_k) / u_k`` of :mod:`qubo_round.relaxations.objective` with no regulariser;
the temperature ``T`` falls from ``t_start`` to ``t_end`` (geometric or linear), which sharpens
``h`` towards 0/1. Start: ``sigmoid(theta / t_start) = prior`` (clipped to [1e-3, 1 - 1e-3]).
End: ``h >= 0.5`` (``theta >= 0``) rounds up. Deterministic. Defaults (2k iterations, ``lr = 0.1``,
``T`` from 1 to 1e-3, geometric) were chosen on the digits model's layers at 3 bits: 10k iterations
(preset ``long``) were no better on average there, and smaller learning rates (1e-2) commit early
and gave up to 3x higher energies.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from qubo_round.problem import QUBOFamily
from qubo_round.solvers.registry import register

from .schedule import check_steps
from .objective import Adam, TorchSolver, check_device_dtype, initial_h, steps

log = logging.getLogger(__name__)


def temperature(it: int, iterations: int, t_start: float, t_end: float, schedule: str) -> float:
    """Temperature at iteration ``it`` (0-based): ``t_start`` first, ``t_end`` last."""
    r = it / max(1, iterations - 1)
    if schedule == "linear":
        return t_start + (t_end - t_start) * r
    return t_start * (t_end / t_start) ** r


@dataclass(frozen=True)
class SigmoidAnnealParams:
    iterations: int = 2000
    lr: float = 0.1
    t_start: float = 1.0
    t_end: float = 1e-3
    schedule: str = "geometric"  # or "linear"
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = 1
    progress: bool = False  # a tqdm bar over the iterations (display only)

    def __post_init__(self) -> None:
        check_steps(self.iterations, self.lr)
        if not self.t_start >= self.t_end > 0:
            raise ValueError(f"need t_start >= t_end > 0, got {self.t_start}, {self.t_end}")
        if self.schedule not in ("geometric", "linear"):
            raise ValueError(f"schedule must be 'geometric' or 'linear', got {self.schedule!r}")
        check_device_dtype(self.device, self.dtype, self.threads)


@register("sigmoid-anneal", presets={"long": {"iterations": 10000}})
class SigmoidAnneal(TorchSolver):
    """Sigmoid relaxation ``h = sigmoid(theta / T)`` with the temperature annealed from high to
    low, no regulariser (Table 3's mean-field variant); ``h >= 0.5`` rounds up."""

    Params = SigmoidAnnealParams

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        t0 = time.perf_counter()
        p = self.params
        obj = self.setup(problem)
        h0 = obj.tensor(np.clip(initial_h(problem, start), 1e-3, 1 - 1e-3))
        theta = p.t_start * (torch.log(h0) - torch.log1p(-h0))
        opt = Adam(theta, p.lr)
        status, done = "feasible", 0
        for it in steps(p.iterations, p.progress, self.name):
            if time_limit is not None and time.perf_counter() - t0 > time_limit:
                status = "time_limit"
                break
            T = temperature(it, p.iterations, p.t_start, p.t_end, p.schedule)
            sig = torch.sigmoid(theta / T)
            _, g = obj.value_and_grad(obj.hold_fixed(sig))
            opt.step(g * sig * (1 - sig) / T)
            done = it + 1
        X = problem.apply_fixed((theta >= 0).cpu().numpy())
        log.debug("sigmoid-anneal: %d iterations, final T %.3g", done, T if done else p.t_start)
        return X, {"status": status, "iterations_done": done, "device": str(obj.device)}
