"""Straight-through estimator on the rounding (the paper's Table 5 alternative to the relaxation),
batched over rows.

A continuous ``u`` in [0, 1] (rows, n), in grid steps above the floor, starts at the prior
``frac(W/s)``. The forward pass uses the hard assignment ``x = [u >= 0.5]`` and the row energies
``E_k(x)``; the backward pass hands the gradient of the continuous form at ``x`` straight through
to ``u`` (``dE/du := dE/dx``, normalised per row as in :mod:`qubo_round.relaxations.objective`);
Adam updates ``u``, which is clipped back to [0, 1]. Every hard assignment visited is an actual
rounding, so the best one of each row is kept (a valid ``start`` counts as visited). Deterministic.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from qubo_round.problem import QUBOFamily
from qubo_round.solvers.registry import register

from .schedule import check_steps
from .objective import Adam, TorchSolver, check_device_dtype, initial_h, steps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class STEParams:
    iterations: int = 2000
    lr: float = 1e-2
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = 1
    progress: bool = False  # a tqdm bar over the iterations (display only)

    def __post_init__(self) -> None:
        check_steps(self.iterations, self.lr)
        check_device_dtype(self.device, self.dtype, self.threads)


@register("ste", presets={"long": {"iterations": 10000}})
class STE(TorchSolver):
    """Straight-through estimator: Adam on continuous u in [0, 1], forward with round(u), gradient
    passed straight through; keeps the best hard assignment seen per row."""

    Params = STEParams

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        t0 = time.perf_counter()
        p = self.params
        obj = self.setup(problem)
        u = obj.tensor(initial_h(problem, start))
        opt = Adam(u, p.lr)
        best_x = obj.hold_fixed((u >= 0.5).to(obj.dtype))
        best_v, _ = obj.value_and_grad(best_x)
        if start is not None:
            xs = obj.tensor(start)
            vs, _ = obj.value_and_grad(xs)
            better = vs < best_v
            best_x = torch.where(better[:, None], xs, best_x)
            best_v = torch.minimum(vs, best_v)
        status, done = "feasible", 0
        for it in steps(p.iterations, p.progress, self.name):
            if time_limit is not None and time.perf_counter() - t0 > time_limit:
                status = "time_limit"
                break
            x = obj.hold_fixed((u >= 0.5).to(obj.dtype))
            v, g = obj.value_and_grad(x)
            better = v < best_v
            best_x = torch.where(better[:, None], x, best_x)
            best_v = torch.where(better, v, best_v)
            opt.step(g)
            u.clamp_(0.0, 1.0)
            done = it + 1
        X = problem.apply_fixed(best_x.round().to(torch.uint8).cpu().numpy())
        log.debug("ste: %d iterations", done)
        return X, {"status": status, "iterations_done": done, "device": str(obj.device)}
