"""dwave-neal's simulated annealing (the reference implementation), row by row.

Each row ``k`` is annealed as the binary model ``to_bqm(problem, k)`` of its free variables
(fixed variables folded in, so they are never violated); all reads of every row are returned as
``(num_reads, rows, n)``, each row's reads sorted by energy. Seeds are drawn per row from the
solve's ``seed``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from qubo_round.problem import QUBOFamily

from .base import Solver
from .dimod_adapter import sample_rows
from .registry import register

__all__ = ["Neal", "NealParams"]


@dataclass(frozen=True)
class NealParams:
    """Parameters of :class:`Neal` (those of ``neal.SimulatedAnnealingSampler.sample``).

    Attributes:
        num_reads: annealing runs per row.
        num_sweeps: sweeps per run.
        beta_range: ``(beta_hot, beta_cold)``; None: neal's own default from the row's biases;
            ``"auto"``: the per-row range of the ``anneal`` solver
            (:func:`qubo_round.solvers.anneal.auto_beta_range`), for like-for-like comparisons.
        beta_schedule_type: ``geometric`` or ``linear``.
    """

    num_reads: int = 1
    num_sweeps: int = 1000
    beta_range: tuple[float, float] | str | None = None
    beta_schedule_type: str = "geometric"

    def __post_init__(self) -> None:
        for name in ("num_reads", "num_sweeps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.beta_schedule_type not in ("geometric", "linear"):
            raise ValueError("beta_schedule_type must be 'geometric' or 'linear', "
                             f"got {self.beta_schedule_type!r}")
        br = self.beta_range
        if br is not None and br != "auto":
            try:
                hot, cold = (float(b) for b in br)
            except (TypeError, ValueError):
                raise ValueError(f"beta_range must be None, 'auto' or a pair (beta_hot, beta_cold), "
                                 f"got {br!r}") from None
            if not (np.isfinite(hot) and np.isfinite(cold) and 0 < hot <= cold):
                raise ValueError(f"beta_range must satisfy 0 < beta_hot <= beta_cold, got {br!r}")
            object.__setattr__(self, "beta_range", (hot, cold))


@register("neal", presets={
    "fast": {"num_sweeps": 100},
    "reads10": {"num_reads": 10},
    "thorough": {"num_reads": 100, "num_sweeps": 1000},
})
class Neal(Solver):
    """dwave-neal SimulatedAnnealingSampler on the reduced model of every row."""
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    required_modules = ("neal",)
    Params = NealParams

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        import neal

        p = self.params
        sampler = neal.SimulatedAnnealingSampler()
        t0 = time.perf_counter()
        deadline = None if time_limit is None else t0 + time_limit
        ranges = None
        if p.beta_range == "auto":
            from .anneal import auto_beta_range
            probe = problem.apply_fixed(rng.random((1, *problem.shape)) < problem.prior)
            ranges = auto_beta_range(problem, probe)

        def per_row(k, left, rows_left):
            kw = {}
            if ranges is not None:
                kw["beta_range"] = tuple(ranges[k])
            elif p.beta_range is not None:
                kw["beta_range"] = p.beta_range
            if deadline is not None:
                kw["interrupt_function"] = lambda: time.perf_counter() > deadline
            return kw

        def call(bqm, **kw):
            if start is not None:
                kw["initial_states_generator"] = "tile"
            return sampler.sample(bqm, num_reads=p.num_reads, num_sweeps=p.num_sweeps,
                                  beta_schedule_type=p.beta_schedule_type, **kw)

        return sample_rows(problem, call, rng=rng, start=start, time_limit=time_limit, per_row=per_row)

