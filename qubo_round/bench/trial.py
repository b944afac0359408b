"""One trial = (instance, solver spec and parameters, seed) -> one flat result row.

Gaps are relative excesses of the trial's energy ``E`` over a reference energy ``R``::

    gap = (E - R) / max(|R|, 1e-12)

with ``R`` the proven optimum (``gap_to_optimum``), the best-known value expressed as an
energy (``gap_to_best_known``; ``-best_known`` for maximisation instances) or the lower bound
(``gap_to_bound``, >= 0 up to rounding). For the public (maximisation) sets
``gap_to_best_known = (best_known - objective) / |best_known|``; negative means a new record.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from qubo_round.bounds import relative_gap as bounds_relative_gap

from .suites import DESCRIPTOR_FIELDS, Instance

#: Floor of the gap denominator.
GAP_FLOOR = 1e-12

#: Columns of a result row, in CSV order.
COLUMNS = (("timestamp", "suite", "instance") + DESCRIPTOR_FIELDS
           + ("solver", "solver_name", "preset", "params", "seed", "time_limit", "status", "energy",
              "objective", "optimum", "bound", "bound_kind", "gap_to_optimum", "gap_to_best_known",
              "gap_to_bound", "wall_seconds", "load_seconds", "error", "hostname", "cpu_count",
              "python", "numpy", "torch"))
#: Columns identifying a trial (the resume key).
KEY_COLUMNS = ("suite", "instance", "solver", "params", "seed")


def relative_gap(energy: float | None, reference: float | None) -> float | None:
    """:func:`qubo_round.bounds.relative_gap` (``(energy - reference) / max(|reference|,
    GAP_FLOOR)``) as a float, or None if either is missing or not finite."""
    if energy is None or reference is None or not math.isfinite(energy) or not math.isfinite(reference):
        return None
    return float(bounds_relative_gap(energy, reference, GAP_FLOOR))


def solver_params(spec: str, overrides: dict[str, Any] | None = None) -> str:
    """Validate ``spec`` (``name``, ``name/preset``, ``family:arg``) and return the effective
    parameters as canonical JSON. Raises on unknown solvers, presets or parameters."""
    from qubo_round.solvers import get_solver

    solver = get_solver(spec, **(overrides or {}))
    params = dataclasses.asdict(solver.params) if dataclasses.is_dataclass(solver.params) else {}
    return json.dumps(params, sort_keys=True, default=str)


@functools.lru_cache(maxsize=1)
def machine_info() -> dict[str, Any]:
    """Host name, CPU count and library versions of this process's machine."""
    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None
    return {"hostname": socket.gethostname(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "numpy": version("numpy"), "torch": version("torch")}


@dataclass(frozen=True)
class Trial:
    """Everything a worker needs to run one trial and fill its row.

    Attributes:
        instance: the problem.
        solver: spec as given (``greedy``, ``stochastic/best100``).
        params: explicit parameter overrides (on top of the preset).
        params_json: the effective parameters (see :func:`solver_params`).
        seed: solver seed.
        time_limit: seconds passed to the solver, or None.
        reference: the instance's bound record (:func:`reference.compute_reference`).
    """

    instance: Instance
    solver: str
    params_json: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    time_limit: float | None = None
    reference: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, ...]:
        """The resume key, as strings (matching the CSV's :data:`KEY_COLUMNS`)."""
        return (self.instance.suite, self.instance.name, self.solver, self.params_json, str(self.seed))


def _split_spec(spec: str) -> tuple[str, str]:
    name, _, preset = spec.partition("/")
    return name, preset


def run_trial(trial: Trial) -> dict[str, Any]:
    """Run one trial; never raises for solver or loading failures (they fill ``error``)."""
    from qubo_round.solvers import get_solver

    inst = trial.instance
    name, preset = _split_spec(trial.solver)
    ref = trial.reference or {}
    bound, kind = ref.get("bound"), ref.get("kind") or "none"
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(inst.descriptors)
    row.update(suite=inst.suite, instance=inst.name, solver=trial.solver, solver_name=name,
               preset=preset, params=trial.params_json, seed=trial.seed, time_limit=trial.time_limit,
               bound=bound, bound_kind=kind, optimum=bound if kind == "exact" else None,
               **machine_info())
    t0 = time.perf_counter()
    try:
        problem = inst.load()
        t1 = time.perf_counter()
        row["load_seconds"] = t1 - t0
        solver = get_solver(trial.solver, **trial.params)
        t1 = time.perf_counter()
        res = solver.solve(problem, seed=trial.seed, time_limit=trial.time_limit)
        row["wall_seconds"] = time.perf_counter() - t1
        energy = res.energy
        row.update(status=res.status, energy=energy, objective=problem.objective(energy))
        best = inst.descriptors.get("best_known")
        if best is not None:
            best_energy = -best if inst.descriptors.get("sense") == "max" else best
            row["gap_to_best_known"] = relative_gap(energy, best_energy)
        row["gap_to_optimum"] = relative_gap(energy, row["optimum"])
        row["gap_to_bound"] = relative_gap(energy, bound)
    except Exception as e:  # noqa: BLE001 - a failing trial is a result, the sweep goes on
        message = " ".join(str(e).split())  # one line: keeps the CSV line-oriented
        row.update(status="error", error=f"{type(e).__name__}: {message}")
        if row["wall_seconds"] is None:
            row["wall_seconds"] = time.perf_counter() - t0
    row["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return row
