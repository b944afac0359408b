"""The cross-entropy method (CEM), the solver of the paper's QUBO results (method.md, Table 2).

A product of Bernoulli distributions ``P(x_ki = 1) = p_ki`` (rows, n), initialised from the
problem's prior (``frac(W/s)``, the stochastic-rounding probabilities, for layers; 0.5 for plain
QUBOs). Every iteration, for all rows at once:

1. draw ``population`` samples X (population, rows, n) with ``X = [U < p]``, fixed variables set;
2. row energies E (population, rows); the elite of row k are its ``ceil(elite * population)``
   lowest-energy samples;
3. ``p <- (1 - alpha) p + alpha * mean(elite)``, clipped to ``[eps, 1 - eps]``.

Stops after ``iterations``, at ``time_limit``, when every free probability is within ``2 eps`` of
0 or 1 (converged), or when no row improved its best energy for ``patience`` iterations. The
best sample seen per row (nearest rounding, or ``start``, is the initial best, so CEM never
returns worse than it) is returned, greedy-polished when ``polish``. A ``start`` assignment
moves the initial probabilities: ``p <- (1 - start_weight) p + start_weight * start``, and is
itself a candidate for the best.

Memory: samples are drawn as uint8 and energies are computed in population chunks of at most
``2^23`` float entries.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from qubo_round.problem import QUBOFamily

from .base import Solver
from .greedy import polish as greedy_polish
from .registry import register

log = logging.getLogger(__name__)

_CHUNK_ENTRIES = 1 << 23


@dataclass(frozen=True)
class CEMParams:
    population: int = 200
    elite: float = 0.1  # fraction of the population kept per row
    alpha: float = 0.3  # smoothing: weight of the elite mean (0.5-0.7 collapses too early)
    iterations: int = 200
    eps: float = 1e-3  # probabilities are kept in [eps, 1 - eps]
    patience: int = 50  # stop when no row improved for this many iterations (0: never)
    start_weight: float = 0.8
    polish: bool = True

    def __post_init__(self) -> None:
        for name in ("population", "iterations"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        pat = self.patience
        if isinstance(pat, bool) or not isinstance(pat, (int, np.integer)) or pat < 0:
            raise ValueError(f"patience must be a non-negative integer, got {self.patience!r}")
        if not 0.0 < self.elite <= 1.0:
            raise ValueError(f"elite must be a fraction in (0, 1], got {self.elite}")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if not 0.0 <= self.eps < 0.5:
            raise ValueError(f"eps must be in [0, 0.5), got {self.eps}")
        if not 0.0 <= self.start_weight <= 1.0:
            raise ValueError(f"start_weight must be in [0, 1], got {self.start_weight}")


def _energies(problem: QUBOFamily, X: np.ndarray) -> np.ndarray:
    """(S, rows) energies of X (S, rows, n) uint8, in chunks of the population."""
    S = X.shape[0]
    chunk = max(1, _CHUNK_ENTRIES // max(1, X.shape[1] * X.shape[2]))
    return np.concatenate([problem.energies(X[i:i + chunk]) for i in range(0, S, chunk)], axis=0)


def _draw(problem: QUBOFamily, p: np.ndarray, S: int, rng: np.random.Generator) -> np.ndarray:
    """(S, rows, n) uint8 samples ``[U < p]`` with fixed variables set, drawn in chunks."""
    X = np.empty((S, *p.shape), np.uint8)
    chunk = max(1, _CHUNK_ENTRIES // max(1, p.size))
    for i in range(0, S, chunk):
        j = min(S, i + chunk)
        X[i:j] = rng.random((j - i, *p.shape)) < p
    return problem.apply_fixed(X)


@register("cem", presets={"paper": {}, "quick": {"population": 64, "iterations": 50}})
class CEM(Solver):
    """Cross-entropy method over independent Bernoulli probabilities (initialised from the
    stochastic-rounding probabilities), all rows batched; best sample greedy-polished."""
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    Params = CEMParams

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        t0 = time.perf_counter()
        deadline = None if time_limit is None else t0 + time_limit
        prm = self.params
        R, n = problem.shape
        rows = np.arange(R)
        free = ~problem.fixed_mask
        p = problem.prior.astype(np.float64)
        if start is not None:
            p = (1.0 - prm.start_weight) * p + prm.start_weight * start
        p = np.clip(p, prm.eps, 1.0 - prm.eps)
        n_elite = max(1, math.ceil(prm.elite * prm.population))

        best_X = problem.apply_fixed((problem.prior >= 0.5) if start is None else start)
        best_E = problem.energies(best_X)
        status, stop, it, stale = "feasible", "iterations", 0, 0
        for it in range(1, prm.iterations + 1):
            X = _draw(problem, p, prm.population, rng)
            E = _energies(problem, X)  # (population, rows)
            i_min = E.argmin(axis=0)
            e_min = E[i_min, rows]
            better = e_min < best_E
            if better.any():
                best_E = np.where(better, e_min, best_E)
                best_X[better] = X[i_min[better], rows[better]]
                stale = 0
            else:
                stale += 1
            idx = np.argpartition(E, n_elite - 1, axis=0)[:n_elite] if n_elite < prm.population \
                else np.broadcast_to(np.arange(prm.population)[:, None], (prm.population, R))
            mean = X[idx, rows].mean(axis=0, dtype=np.float64)  # (rows, n)
            p = np.clip((1.0 - prm.alpha) * p + prm.alpha * mean, prm.eps, 1.0 - prm.eps)
            if not (np.minimum(p, 1.0 - p)[free] > 2.0 * prm.eps + 1e-12).any():
                stop = "converged"
                break
            if prm.patience and stale >= prm.patience:
                stop = "patience"
                break
            if deadline is not None and time.perf_counter() > deadline:
                status, stop = "time_limit", "time_limit"
                break
        out = best_X
        if prm.polish:
            out = greedy_polish(problem, best_X, deadline=deadline)
        log.info("cem: %d iterations (%s), energy %.6g before polish, %.2f s", it, stop,
                 float(best_E.sum()), time.perf_counter() - t0)
        return out, {"status": status, "iterations": it, "stop": stop, "cem_energy": float(best_E.sum())}
