"""Composite solvers: solvers made of solvers (in the spirit of dimod's composites).

``chain`` runs registered solvers one after the other, each warm-started from the best sample of
the one before (``start=``): a continuous relaxation followed by a local search is
``get_solver("adaround/fast>its")`` or ``get_solver("chain", solvers=("adaround/fast", "its"))``.
The chain returns the last solver's samples together with the best sample of every earlier
stage, so it is never worse than any of its stages, and the strongest lower bound any stage
proved. Under a ``time_limit`` each stage gets the time the stages before it left.

``polish`` finishes any solver's samples by steepest single-flip descent (the pipeline's polish
uses the same function); ``portfolio`` runs several solvers and keeps, per row, the best any of
them found.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from qubo_round.problem import QUBOFamily

from .base import CapabilityError, ParameterError, Solver
from .registry import get_solver, register, solver_class

__all__ = ["Chain", "ChainParams", "Polish", "PolishParams", "Portfolio", "PortfolioParams", "SEPARATOR"]

#: ``"a>b>c"`` names the chain of the registry specs a, b and c.
SEPARATOR = ">"


def _specs(solvers) -> tuple[str, ...]:
    """``solvers`` (one spec or several) as a tuple of non-empty strings, or ValueError."""
    specs = (solvers,) if isinstance(solvers, str) else tuple(solvers)
    if len(specs) < 1 or not all(isinstance(s, str) and s for s in specs):
        raise ValueError(f"solvers must name at least one registered solver, got {solvers!r}")
    return specs


def _fields(spec: str) -> set[str]:
    return {f.name for f in dataclasses.fields(solver_class(spec).Params)}


def _check_all(solvers, problem: QUBOFamily, what: str) -> None:
    """Every part's own check; a refusal names the part (``what`` ``'name'``)."""
    for s in solvers:
        try:
            s.check(problem)
        except CapabilityError as e:
            raise CapabilityError(f"{what} {s.name!r}: {e}") from e


def _stronger(bound: np.ndarray | None, lower_bound) -> np.ndarray | None:
    """The row-wise larger of ``bound`` and a part's ``lower_bound`` (NaN: no bound, -inf here)."""
    if lower_bound is None:
        return bound
    lb = np.nan_to_num(np.asarray(lower_bound, dtype=np.float64), nan=-np.inf)
    return lb if bound is None else np.maximum(bound, lb)


def _add_bound(extra: dict, bound: np.ndarray | None, best: np.ndarray) -> None:
    """Report the parts' strongest ``bound`` (NaN where none) and ``optimal`` when the best
    energies ``best`` (rows,) meet it (unless a part ran out of time)."""
    if bound is None:
        return
    extra["lower_bound"] = np.where(np.isfinite(bound), bound, np.nan)
    if extra["status"] != "time_limit" and np.all(best <= bound + 1e-9 * (1 + np.abs(bound))):
        extra["status"] = "optimal"


@dataclass(frozen=True)
class ChainParams:
    """Parameters of :class:`Chain`.

    Attributes:
        solvers: registry specs (``name`` or ``name/preset``), run in this order (default:
            GPTQ's rounding, then the iterated tabu search from it).
        device, threads: where the stages compute, given to the stages that have these
            parameters (None: each stage's own default).
        keep: also return the best sample of every earlier stage, so the chain's best is never
            worse than any stage's (default). False: the last stage's samples only, a pure warm
            start (a descent that follows, such as the pipeline's polish, then starts from the
            last stage's rounding, which can be the better basin even where its energy is not).
    """

    solvers: tuple[str, ...] = ("gptq", "its")
    device: str | None = None
    threads: int | None = None
    keep: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "solvers", _specs(self.solvers))
        if not isinstance(self.keep, bool):
            raise ValueError(f"keep must be True or False, got {self.keep!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")


@register("chain", presets={
    "adaround-its": {"solvers": ("adaround/fast", "its")},
    # GPTQ's rounding refined by 50 steps of the relaxation (``adaround/warm``), then (in the
    # pipeline) the polish from the relaxation's rounding; from act-order GPTQ
    # (``reference-adaround``): MiniLM's default (benchmarks/results/minilm_default.md)
    "gptq-adaround": {"solvers": ("gptq/in-order", "adaround/warm"), "keep": False},
    "reference-adaround": {"solvers": ("gptq/reference", "adaround/warm"), "keep": False},
})
class Chain(Solver):
    """Registered solvers in sequence, each warm-started from the previous one's best."""
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    Params = ChainParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.stages = [get_solver(s, **self._forwarded(s)) for s in self.params.solvers]
        # the pipeline stacks a layer's row groups into one problem when a stage works on them
        # batched, and gives the chain its threads when a stage uses them
        self.batches_groups = any(s.batches_groups for s in self.stages)
        self.threaded = any(s.threaded for s in self.stages)
        if any(type(s) is type(self) for s in self.stages):
            raise ParameterError("a chain stage may not itself be a chain; list its solvers instead")
        self.needs_space = any(s.needs_space for s in self.stages)

    def _forwarded(self, spec: str) -> dict[str, Any]:
        """The chain's ``device`` (to every stage that has the parameter) and ``threads`` (to the
        ``threaded`` stages), where given."""
        cls, fields = solver_class(spec), _fields(spec)
        out = {}
        if self.params.device is not None and "device" in fields:
            out["device"] = self.params.device
        if self.params.threads is not None and "threads" in fields and cls.threaded:
            out["threads"] = self.params.threads
        return out

    def check(self, problem: QUBOFamily) -> None:
        _check_all(self.stages, problem, "chain stage")  # (the first refuses anything but a QUBOFamily)

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
            bound = _stronger(bound, r.lower_bound)
            stages.append({"solver": self.params.solvers[i], "energy": r.energy, "status": r.status,
                           "seconds": r.seconds})
            if r.status == "time_limit":
                status = "time_limit"
            start = r.best
            last = r.samples
            if i < len(self.stages) - 1 and self.params.keep:
                kept.append(r.best[None])
        if not stages:
            last = problem.apply_fixed(np.zeros(problem.shape, np.uint8) if start is None else start)[None]
        samples = np.concatenate([last, *kept], axis=0) if kept else last
        extra: dict[str, Any] = {"status": status, "stages": stages}
        if bound is not None:
            _add_bound(extra, bound, problem.energies(samples).min(axis=0))
        return samples, extra


@dataclass(frozen=True)
class PolishParams:
    """Parameters of :class:`Polish`.

    Attributes:
        solver: the registry spec whose samples are polished (``name``, ``name/preset`` or a chain).
    """

    solver: str = "nearest"

    def __post_init__(self) -> None:
        if not isinstance(self.solver, str) or not self.solver:
            raise ValueError(f"solver must name a registered solver, got {self.solver!r}")


@register("polish")
class Polish(Solver):
    """Any solver's samples, each finished by steepest single-flip descent to a 1-flip local
    minimum (:func:`qubo_round.solvers.greedy.polish`, the one polish the pipeline uses too):
    never worse than the solver, with its lower bound and status (``time_limit`` when the descent
    runs out of time)."""
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    Params = PolishParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.inner = get_solver(self.params.solver)
        self.needs_space = self.inner.needs_space

    def check(self, problem: QUBOFamily) -> None:
        self.inner.check(problem)

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        from .greedy import polish

        t0 = time.perf_counter()
        r = self.inner.solve(problem, seed=int(rng.integers(0, 2**31 - 1)), start=start, time_limit=time_limit)
        deadline = None if time_limit is None else t0 + time_limit
        X = polish(problem, r.samples, deadline=deadline)
        late = deadline is not None and time.perf_counter() > deadline
        extra: dict[str, Any] = {"status": "time_limit" if late else r.status, "solver_energy": r.energy,
                                 "solver_status": r.status}
        if r.lower_bound is not None:
            extra["lower_bound"] = r.lower_bound
        return X, extra


@dataclass(frozen=True)
class PortfolioParams:
    """Parameters of :class:`Portfolio`.

    Attributes:
        solvers: registry specs, each run on the whole problem with the portfolio's seed.
        params: one parameter dict per solver (empty: none have parameters beyond their spec).
    """

    solvers: tuple[str, ...] = ("gptq", "its")
    params: tuple[dict, ...] = ()

    def __post_init__(self) -> None:
        specs = _specs(self.solvers)
        params = tuple(dict(p) for p in self.params)
        if params and len(params) != len(specs):
            raise ValueError(f"params must give one dict per solver ({len(specs)}), got {len(params)}")
        object.__setattr__(self, "solvers", specs)
        object.__setattr__(self, "params", params or tuple({} for _ in specs))


@register("portfolio")
class Portfolio(Solver):
    """Several solvers on the same problem; per row the lowest energy any of them found (rows
    are independent; ties go to the earlier solver). Every member gets the portfolio's own
    ``seed``, so a member gives what it would alone; the strongest member bound is kept."""
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    Params = PortfolioParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.members = [get_solver(s, **p) for s, p in zip(self.params.solvers, self.params.params)]
        self.needs_space = any(m.needs_space for m in self.members)

    def check(self, problem: QUBOFamily) -> None:
        _check_all(self.members, problem, "portfolio member")

    def solve(self, problem: QUBOFamily, *, seed: int | None = None, **kw):
        self._seed = seed  # the members' seed (sample() sees only the generator made from it)
        return super().solve(problem, seed=seed, **kw)

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        t0 = time.perf_counter()
        best_X, best_e, bound, members = None, None, None, []
        for spec, m in zip(self.params.solvers, self.members):
            left = None if time_limit is None else time_limit - (time.perf_counter() - t0)
            r = m.solve(problem, seed=getattr(self, "_seed", None), start=start, time_limit=left)
            members.append({"solver": spec, "energy": r.energy, "status": r.status, "seconds": r.seconds})
            if best_X is None:
                best_X, best_e = r.best.copy(), r.best_energies.copy()
            else:
                take = r.best_energies < best_e
                best_X[take], best_e[take] = r.best[take], r.best_energies[take]
            bound = _stronger(bound, r.lower_bound)
        extra: dict[str, Any] = {"members": members,
                                 "status": "time_limit" if any(x["status"] == "time_limit" for x in members) else "feasible"}
        _add_bound(extra, bound, best_e)
        return best_X[None], extra
