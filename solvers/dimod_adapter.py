"""Any dimod sampler as a solver, row by row: ``get_solver("dimod:TabuSampler", num_reads=4)``.

Every row ``k`` of the family becomes the binary model ``to_bqm(problem, k)`` over its free
variables (fixed variables folded into the linear terms and the offset, so no sample can violate
them); the sampler's samples are written back into ``(num_samples, rows, n)``. Also the helper
:func:`sample_rows` used by the ``neal`` and ``tabu`` solvers.

Sampler names resolve in ``dimod`` first, then ``dwave.samplers``; a dotted path
``package.module.Class`` names any other class. Keyword parameters are the sampler's own and are
checked against its ``parameters`` property (an unknown one raises :class:`ParameterError`).
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from qubo_round.convert import to_bqm
from qubo_round.problem import QUBOFamily

from .base import CapabilityError, ParameterError, Solver
from .registry import UnknownSolverError, register_family

log = logging.getLogger(__name__)

__all__ = ["sample_rows", "resolve_sampler", "DimodSolver", "DimodParams", "SEARCH_MODULES"]

#: Where a bare sampler class name is looked up, in order.
SEARCH_MODULES = ("dimod", "dwave.samplers")
#: Parameters the adapter sets itself (from ``solve(seed=..., start=...)``).
RESERVED = ("seed", "initial_states")
#: Samplers that enumerate every state: refused above this many free variables per row.
ENUMERATING = {"ExactSolver": 24}


def _row_seeds(rng: np.random.Generator, rows: int) -> np.ndarray:
    """(rows,) independent 31-bit seeds, one per row (samplers take 32-bit seeds)."""
    return rng.integers(0, 2**31 - 1, size=rows)


def sample_rows(problem: QUBOFamily, call: Callable[..., Any], *, rng: np.random.Generator,
                start: np.ndarray | None = None, time_limit: float | None = None,
                warm: bool = True,
                per_row: Callable[[int, float | None, int], dict] | None = None) -> tuple[np.ndarray, dict]:
    """Run ``call(bqm, **kw)`` (a dimod ``sample`` method) on every row of ``problem``.

    Args:
        problem: the family; row ``k`` is sampled as ``to_bqm(problem, k)``.
        call: ``call(bqm, seed=..., **kw)`` returning a dimod ``SampleSet`` (a sampler's
            ``sample``, which gets a per-row ``seed``).
        rng: source of the per-row seeds.
        start: optional (rows, n) warm start, passed as ``initial_states`` when ``warm``.
        time_limit: seconds for all rows; rows not reached keep their start (or 0) and the
            status is ``time_limit``.
        warm: pass ``initial_states`` from ``start``.
        per_row: ``per_row(k, seconds_left or None, rows_left) -> extra kwargs`` for row ``k``
            (time budgets, per-row temperatures).

    Returns:
        ``(samples, extra)``: samples (S, rows, n) uint8 with ``S`` the largest sample count of
        any row, each row's samples sorted by energy (index 0 is the row's best) and padded
        with its best; ``extra`` has ``status`` and ``samples_per_row``.
    """
    t0 = time.perf_counter()
    deadline = None if time_limit is None else t0 + time_limit
    rows, n = problem.shape
    seeds = _row_seeds(rng, rows)
    base = problem.apply_fixed(start if start is not None else np.zeros(problem.shape, np.uint8))
    per: list[np.ndarray] = []
    status = "feasible"
    counts = []
    for k in range(rows):
        left = None if deadline is None else deadline - time.perf_counter()
        if left is not None and left <= 0:
            status = "time_limit"
            per.append(base[k][None])
            counts.append(0)
            continue
        bqm = to_bqm(problem, k)
        labels = np.fromiter(bqm.variables, dtype=np.int64, count=bqm.num_variables)
        if bqm.num_variables == 0:
            per.append(base[k][None])
            counts.append(1)
            continue
        kw: dict[str, Any] = {"seed": int(seeds[k])}
        if warm and start is not None:
            kw["initial_states"] = (start[k, labels][None].astype(np.int8), labels.tolist())
        if per_row is not None:
            kw.update(per_row(k, left, rows - k))
        ss = call(bqm, **kw)
        rec = ss.record
        order = np.argsort(rec.energy, kind="stable")
        got = np.asarray(rec.sample)[order]
        cols = np.fromiter(ss.variables, dtype=np.int64, count=len(ss.variables))
        X = np.repeat(base[k][None], len(got), axis=0)
        X[:, cols] = got
        per.append(X)
        counts.append(len(got))
    S = max(len(x) for x in per)
    out = np.empty((S, rows, n), np.uint8)
    for k, X in enumerate(per):
        out[:len(X), k] = X
        out[len(X):, k] = X[0]
    if deadline is not None and time.perf_counter() > deadline:
        status = "time_limit"
    return problem.apply_fixed(out), {"status": status, "samples_per_row": counts}


@contextlib.contextmanager
def _global_seed(seed: int):
    """Seed Python's ``random`` and numpy's legacy global state for one call, then restore them
    (makes samplers without a ``seed`` parameter reproducible)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


#: Top-level packages whose modules a dotted spec (``dimod:pkg.mod.Name``) may import; any other
#: module must be asked for explicitly as ``dimod:module:Class`` (a name must not import code
#: the user did not ask for).
TRUSTED_PACKAGES = ("dimod", "dwave", "neal", "greedy", "tabu", "hybrid")


def resolve_sampler(spec: str) -> type:
    """The sampler class named ``spec``: ``Name`` in :data:`SEARCH_MODULES`, ``pkg.mod.Name`` in
    one of :data:`TRUSTED_PACKAGES`, or ``module:Class`` for any other importable module."""
    if not spec:
        raise UnknownSolverError("dimod: needs a sampler class name, e.g. 'dimod:TabuSampler'")
    looked: list[str] = []
    if ":" in spec:
        mod_name, _, cls_name = spec.rpartition(":")
        if not mod_name or not cls_name:
            raise UnknownSolverError(f"dimod sampler {spec!r}: write it as module:Class")
        candidates = [(mod_name, cls_name)]
    elif "." in spec:
        mod_name, _, cls_name = spec.rpartition(".")
        if mod_name.split(".")[0] not in TRUSTED_PACKAGES:
            raise UnknownSolverError(f"dimod sampler {spec!r}: {mod_name} is not in the dimod / D-Wave packages "
                                     f"{TRUSTED_PACKAGES}; to import it anyway, ask for it explicitly as "
                                     f"'dimod:{mod_name}:{cls_name}'")
        candidates = [(mod_name, cls_name)]
    else:
        candidates = [(m, spec) for m in SEARCH_MODULES]
    for mod_name, cls_name in candidates:
        looked.append(f"{mod_name}.{cls_name}")
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            looked[-1] += " (module not importable)"
            continue
        obj = getattr(mod, cls_name, None)
        if inspect.isclass(obj) and callable(getattr(obj, "sample", None)):
            return obj
        if obj is not None:
            looked[-1] += " (not a sampler class)"
    raise UnknownSolverError(f"unknown dimod sampler {spec!r}; looked for " + ", ".join(looked))


def sampler_parameters(sampler: Any) -> set[str] | None:
    """Keywords the sampler accepts: its ``parameters`` property plus the keywords named in its
    ``sample`` signature; None when it has neither a ``parameters`` dict nor a closed signature."""
    sig = inspect.signature(sampler.sample)
    named = {p.name for p in sig.parameters.values()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self", "bqm"}
    params = getattr(sampler, "parameters", None)
    if isinstance(params, dict):
        return set(params) | named
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return named


@dataclass(frozen=True)
class DimodParams:
    """``sampler``: the class spec; ``kwargs``: sorted ``(name, value)`` pairs for ``sample``."""

    sampler: str
    kwargs: tuple[tuple[str, Any], ...] = ()


class DimodSolver(Solver):
    """A dimod sampler run on the reduced model of every row; all its samples are returned."""
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    required_modules = ("dimod",)
    Params = DimodParams

    def __init__(self, spec: str, **kwargs: Any) -> None:  # noqa: D107  (no super(): dynamic params)
        self.cls = resolve_sampler(spec)
        self.name = f"dimod:{spec}"
        try:
            self.sampler = self.cls()
        except TypeError as e:
            raise CapabilityError(f"{self.name}: cannot construct {self.cls.__name__}() without "
                                  f"arguments ({e}); composed samplers are not supported") from None
        accepted = sampler_parameters(self.sampler)
        reserved = sorted(set(kwargs) & set(RESERVED))
        if reserved:
            raise ParameterError(f"{self.name}: {reserved} are set by the adapter (from "
                                 "solve(seed=..., start=...)); do not pass them")
        if accepted is not None:
            unknown = sorted(set(kwargs) - accepted)
            if unknown:
                raise ParameterError(f"{self.name} has no parameter(s) {unknown}; valid parameters: "
                                     f"{sorted(accepted - set(RESERVED)) or 'none'}")
        self.accepted = accepted
        self.params = DimodParams(sampler=spec, kwargs=tuple(sorted(kwargs.items())))

    def max_free(self) -> int | None:
        return ENUMERATING.get(self.cls.__name__)

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        accepted = self.accepted or set()
        kwargs = dict(self.params.kwargs)
        if "seed" in accepted:
            call = lambda bqm, **kw: self.sampler.sample(bqm, **kw, **kwargs)  # noqa: E731
        else:  # e.g. dimod's reference samplers draw from the global `random` state
            def call(bqm, seed, **kw):
                with _global_seed(seed):
                    return self.sampler.sample(bqm, **kw, **kwargs)
        return sample_rows(problem, call, rng=rng, start=start, time_limit=time_limit,
                           warm="initial_states" in accepted)


def _factory(arg: str, **params: Any) -> Solver:
    return DimodSolver(arg, **params)


register_family("dimod", _factory)
