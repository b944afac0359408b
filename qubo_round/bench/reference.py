"""Per-instance reference values: a lower bound on the energy (proven optimum when exact).

Computed once per instance with :func:`qubo_round.bounds.lower_bound` and cached as JSON in the
run directory (``bounds.json``), keyed by the instance's file spec.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from qubo_round.solvers import get_solver
from qubo_round.solvers.bnb import solver_incumbent

from .suites import Instance

log = logging.getLogger(__name__)

#: Bound kinds: ``exact`` (the bound is the optimum), ``sdp``, ``eig``; ``none`` when unavailable.
KINDS = ("exact", "sdp", "eig", "none")
#: Free variables per row up to which the fallback (no ``qubo_round.bounds``) enumerates.
FALLBACK_EXACT_LIMIT = 24


_warned: list[bool] = []


def _warn_fallback() -> None:
    if not _warned:
        _warned.append(True)
        log.warning("qubo_round.bounds is not available; using exact enumeration where small")


def _fallback_bound(problem) -> tuple[np.ndarray | None, str]:
    """Exact optimum per row by enumeration when small enough, else nothing."""
    if int(problem.num_free.max()) > FALLBACK_EXACT_LIMIT:
        return None, "none"
    return get_solver("exact", max_free=FALLBACK_EXACT_LIMIT).solve(problem).best_energies, "exact"


def its_incumbent(problem) -> np.ndarray:
    """The branch and bound's first incumbent as the solver ``bnb`` gives it to itself at seed 0
    (``its/fast``), so the league's bounds equal those of that solver."""
    return solver_incumbent(problem, "its/fast", np.random.default_rng(0))


def compute_reference(instance: Instance, method: str = "auto") -> dict[str, Any]:
    """Lower bound of ``instance`` (runs in a worker). Never raises: failures are recorded.

    Returns:
        ``{"spec", "bound" (float sum over rows, or None), "kind" (one of :data:`KINDS`),
        "rows" (per-row values), "seconds", "error"}``.
    """
    t0 = time.perf_counter()
    out: dict[str, Any] = {"spec": instance.spec, "bound": None, "kind": "none", "rows": None,
                           "seconds": None, "error": None}
    if method == "none":
        return out
    try:
        problem = instance.load()
        try:
            from qubo_round.bounds import lower_bound
        except ModuleNotFoundError as e:
            if e.name != "qubo_round.bounds":
                raise
            _warn_fallback()
            values, kind = _fallback_bound(problem)
        else:
            b = lower_bound(problem, method=method, incumbent=its_incumbent)
            values, kind = np.asarray(b.values, dtype=np.float64), str(b.method)
        if values is not None:
            total = float(np.sum(values))
            if math.isfinite(total):
                out.update(bound=total, kind=kind, rows=[float(v) for v in values])
            else:
                out["error"] = f"non-finite bound {total} ({kind})"
    except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
        log.warning("bound of %s failed: %s: %s", instance.key, type(e).__name__, e)
        out["error"] = f"{type(e).__name__}: {e}"
    out["seconds"] = time.perf_counter() - t0
    return out


class ReferenceCache:
    """``bounds.json`` in a run directory: spec -> reference (see :func:`compute_reference`)."""

    def __init__(self, path: str | Path, method: str = "auto") -> None:
        self.path = Path(path)
        self.method = method
        self.data: dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                log.warning("%s is unreadable; bounds will be recomputed", self.path)

    def get(self, instance: Instance) -> dict | None:
        ref = self.data.get(instance.spec)
        if ref is None or ref.get("method") != self.method:
            return None
        return ref

    def missing(self, instances: list[Instance]) -> list[Instance]:
        """Instances without a cached reference (each spec once)."""
        seen, out = set(), []
        for inst in instances:
            if inst.spec not in seen and self.get(inst) is None:
                seen.add(inst.spec)
                out.append(inst)
        return out

    def put(self, ref: dict) -> None:
        self.data[ref["spec"]] = {**ref, "method": self.method}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)
