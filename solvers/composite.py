"""Composite solvers: solvers made of solvers (in the spirit of dimod's composites).

``chain`` runs registered solvers one after the other, each warm-started from the best sample of
the one before (``start=``): a continuous relaxation followed by a local search is
``get_solver("adaround/fast>its")`` or ``get_solver("chain", solvers=("adaround/fast", "its"))``.
The chain returns the last solver's samples together with the best sample of every earlier
stage, so it is never worse than any of its stages, and the strongest lower bound any stage
proved. Under a ``time_limit`` each stage gets the time the stages before it left.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from qubo_round.problem import QUBOFamily

from .base import CapabilityError, ParameterError, Solver
from .registry import get_solver, register

__all__ = ["Chain", "ChainParams", "SEPARATOR"]

#: ``"a>b>c"`` names the chain of the registry specs a, b and c.
SEPARATOR = ">"


@dataclass(frozen=True)
class ChainParams:
    """Parameters of :class:`Chain`.

    Attributes:
        solvers: registry specs (``name`` or ``name/preset``), run in this order (default:
            GPTQ's rounding, then the iterated tabu search from it).
    """

    solvers: tuple[str, ...] = ("gptq", "its")

    def __post_init__(self) -> None:
        specs = (self.solvers,) if isinstance(self.solvers, str) else tuple(self.solvers)
        if len(specs) < 1 or not all(isinstance(s, str) and s for s in specs):
            raise ValueError(f"solvers must name at least one registered solver, got {self.solvers!r}")
        object.__setattr__(self, "solvers", specs)


@register("chain", presets={
    "adaround-its": {"solvers": ("adaround/fast", "its")},
})
class Chain(Solver):
    """Registered solvers in sequence, each warm-started from the previous one's best."""

    Params = ChainParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.stages = [get_solver(s) for s in self.params.solvers]
        if any(type(s) is type(self) for s in self.stages):
            raise ParameterError("a chain stage may not itself be a chain; list its solvers instead")
        self.needs_space = any(s.needs_space for s in self.stages)

    def check(self, problem: QUBOFamily) -> None:
        for s in self.stages:  # every stage's own check (its first refuses anything but a QUBOFamily)
            try:
                s.check(problem)
            except CapabilityError as e:
                raise CapabilityError(f"chain stage {s.name!r}: {e}") from e

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        t0 = time.perf_counter()
        kept: list[np.ndarray] = []
        bound = None
        stages = []
        status = "feasible"
        for i, s in enumerate(self.stages):
            left = None if time_limit is None else time_limit - (time.perf_counter() - t0)
            if left is not None and left <= 0:
                status = "time_limit"
                break
            r = s.solve(problem, seed=int(rng.integers(0, 2**31 - 1)), start=start, time_limit=left)
            if r.lower_bound is not None:
                lb = np.nan_to_num(np.asarray(r.lower_bound, dtype=np.float64), nan=-np.inf)
                bound = lb if bound is None else np.maximum(bound, lb)
            stages.append({"solver": self.params.solvers[i], "energy": r.energy, "status": r.status,
                           "seconds": r.seconds})
            if r.status == "time_limit":
                status = "time_limit"
            start = r.best
            last = r.samples
            if i < len(self.stages) - 1:
                kept.append(r.best[None])
        if not stages:
            last = problem.apply_fixed(np.zeros(problem.shape, np.uint8) if start is None else start)[None]
        samples = np.concatenate([last, *kept], axis=0) if kept else last
        extra: dict[str, Any] = {"status": status, "stages": stages}
        if bound is not None:
            extra["lower_bound"] = np.where(np.isfinite(bound), bound, np.nan)
            best = problem.energies(samples).min(axis=0)
            if status != "time_limit" and np.all(best <= bound + 1e-9 * (1 + np.abs(bound))):
                extra["status"] = "optimal"
        return samples, extra
