"""dwave-samplers' multistart tabu search (``TabuSampler``), row by row.

Each row ``k`` is searched as the binary model ``to_bqm(problem, k)`` of its free variables;
all reads are returned as ``(num_reads, rows, n)``. The search of one read runs for
``timeout_ms`` milliseconds (or until ``num_restarts`` restarts); under a ``time_limit`` the
per-read timeout shrinks to the time left divided by the reads still to run, and the status is
``time_limit`` when that cut a read short. Results can depend on the machine's speed, since the
search stops on a clock; pass a small ``num_restarts`` for runs that end before the timeout.

Why it trails our ``its`` on layer rows (fc1 at 2 bits, 1024 images, one read;
``benchmarks/tabu_layer_rows.py``, ``benchmarks/results/tabu_layer_rows.md``): (1) dead inputs:
variables with a zero column of ``Q_k`` are zero-cost moves, and the search cycles through them
(row 0 at 1 s: 0.134 with them free, 0.102 fixed; they are fixed here now); (2) its default
tenure ``min(20, n/4)`` is short for these ill-conditioned rows (row 0, dead inputs fixed, 1 s:
tenure 5 -> 0.128, 20 -> 0.102, 45 -> 0.088, 100 -> 0.075); (3) no warm start from a relaxation:
``gptq>its`` reaches 0.028 on the same row in 1 s (``benchmarks/layer_solvers.py --part rows``).
Coefficient scale and the offset do not matter (the row without its offset and scaled by 1e4 gives
the same energy).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qubo_round.problem import QUBOFamily

from .base import Solver
from .dimod_adapter import sample_rows
from .registry import register

__all__ = ["Tabu", "TabuParams"]


def _positive_int(name: str, v, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {v!r}")


@dataclass(frozen=True)
class TabuParams:
    """Parameters of :class:`Tabu` (those of ``dwave.samplers.TabuSampler.sample``).

    Attributes:
        num_reads: independent searches per row.
        timeout_ms: milliseconds per read.
        tenure: tabu tenure (None: the sampler's default, ``min(20, n / 4)``).
        num_restarts: restarts per read before stopping (None: the sampler's default).
    """

    num_reads: int = 1
    timeout_ms: int = 20
    tenure: int | None = None
    num_restarts: int | None = None

    def __post_init__(self) -> None:
        _positive_int("num_reads", self.num_reads)
        _positive_int("timeout_ms", self.timeout_ms)
        _positive_int("tenure", self.tenure, allow_none=True)
        _positive_int("num_restarts", self.num_restarts, allow_none=True)


@register("tabu", presets={
    "fast": {"timeout_ms": 5},
    "long": {"num_reads": 2, "timeout_ms": 500},
    # stops after 10 restarts per read (the 60 s timeout is a backstop): the same result for the
    # same seed on any machine and under any load
    "restarts": {"num_restarts": 10, "timeout_ms": 60000},
})
class Tabu(Solver):
    """dwave-samplers TabuSampler on the reduced model of every row."""
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    required_modules = ("dwave.samplers",)
    Params = TabuParams

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        from dwave.samplers import TabuSampler

        p = self.params
        sampler = TabuSampler()
        cut = []

        def per_row(k, left, rows_left):
            timeout = p.timeout_ms
            if left is not None:
                budget = int(1000.0 * left / (rows_left * p.num_reads))
                if budget < timeout:
                    cut.append(k)
                    timeout = max(1, budget)
            kw = {"timeout": timeout}
            if p.tenure is not None:
                kw["tenure"] = p.tenure
            if p.num_restarts is not None:
                kw["num_restarts"] = p.num_restarts
            return kw

        def call(bqm, **kw):
            if start is not None:
                kw["initial_states_generator"] = "tile"
            return sampler.sample(bqm, num_reads=p.num_reads, **kw)

        # dead inputs (zero columns of Q_k) stay at their start: left free they are zero-cost moves
        # the tabu search cycles through (fc1 at 2 bits, 48 of ~450 free variables per row: row 0
        # at 1 s reached 0.134 with them, 0.102 without)
        base = problem.apply_fixed(np.zeros(problem.shape, np.uint8) if start is None else start)
        X, extra = sample_rows(problem.with_inert_fixed(base), call, rng=rng, start=start,
                               time_limit=time_limit, per_row=per_row)
        if cut:
            extra["status"] = "time_limit"
        return X, extra
