"""A sweep: suites x solvers x seeds, run on an executor, appended to ``results.csv``.

Run directory layout::

    results.csv     one row per trial (see trial.COLUMNS), appended as trials finish
    bounds.json     per-instance lower bounds (computed once per instance)
    sweep.json      the suite options that fix instance contents (checked on resume)
    problems/       generated problems (.npz), unless another cache_dir is given

Rerunning the same command resumes: trials whose key (suite, instance, solver spec, params,
seed) is already in ``results.csv`` are skipped.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from ..executors import make_executor
from .reference import ReferenceCache, compute_reference
from .store import ResultStore
from .suites import Instance, SuiteOptions, get_suite, suite_instances
from .trial import Trial, run_trial, solver_params

log = logging.getLogger(__name__)

SolverSpec = str | tuple[str, dict[str, Any]]


@dataclass
class SweepSummary:
    """What a sweep did."""

    out: Path
    planned: int
    skipped: int
    ran: int
    failed: int

    def __str__(self) -> str:
        return (f"{self.ran} trial(s) run ({self.failed} failed), {self.skipped} already done "
                f"of {self.planned}; results in {self.out / 'results.csv'}")


def _solver_specs(solvers: Sequence[SolverSpec]) -> list[tuple[str, dict, str]]:
    """(spec, overrides, params JSON) per solver; raises on unknown solvers/parameters."""
    from qubo_round.solvers import solver_class

    out = []
    for s in solvers:
        spec, overrides = (s, {}) if isinstance(s, str) else (s[0], dict(s[1]))
        params_json = solver_params(spec, overrides)
        if ":" not in spec.partition("/")[0]:
            cls = solver_class(spec)
            if cls.missing_modules():
                log.warning("solver %s is not available here (missing %s); its trials will record "
                            "the error", spec, cls.missing_modules())
        out.append((spec, overrides, params_json))
    if len({(s, p) for s, _, p in out}) != len(out):
        raise ValueError("the same solver (spec and parameters) is listed twice")
    return out


def _check_run_dir(out: Path, options: SuiteOptions) -> None:
    """Refuse to mix instance contents in one run directory (``sweep.json``)."""
    path = out / "sweep.json"
    if path.is_file():
        have = json.loads(path.read_text()).get("instance_options")
        if have is not None and have != options.content_key():
            raise ValueError(f"{out} holds results for instance options {have}, but this sweep uses "
                             f"{options.content_key()}; use another --out directory")


def plan(suites: Sequence[str], solvers: Sequence[SolverSpec], seeds: Sequence[int],
         options: SuiteOptions) -> tuple[list[Instance], list[tuple[str, dict, str]]]:
    """Validate the inputs and list the instances (builds generated problems if needed)."""
    if not suites or not solvers or not seeds:
        raise ValueError("a sweep needs at least one suite, one solver and one seed")
    for name in suites:
        get_suite(name)  # unknown names fail before any work
    specs = _solver_specs(solvers)
    instances = [inst for name in dict.fromkeys(suites) for inst in suite_instances(name, options)]
    return instances, specs


def run_sweep(suites: Sequence[str], solvers: Sequence[SolverSpec], seeds: Sequence[int], out: str | Path, *,
              options: SuiteOptions | None = None, workers: int | None = None, scheduler: Any = None,
              time_limit: float | None = None, bound_method: str = "auto", retry_errors: bool = False,
              progress: bool = True) -> SweepSummary:
    """Run (or resume) a sweep and append its rows to ``out/results.csv``.

    Args:
        suites: suite names (:func:`~.suites.available_suites`).
        solvers: solver specs (``greedy``, ``stochastic/best100``) or ``(spec, params)`` pairs.
        seeds: solver seeds; every (instance, solver) runs once per seed.
        out: run directory.
        options: suite options; ``cache_dir`` defaults to ``out/problems``.
        workers: local processes (default ``os.cpu_count()``; <= 1 runs in this process).
        scheduler: Dask scheduler address, ``"local"`` or a ``distributed.Client``.
        time_limit: seconds passed to every solver.
        bound_method: method of :func:`qubo_round.bounds.lower_bound` (``"none"``: skip bounds).
        retry_errors: run failed trials again (their old rows stay; reports keep the last row).
        progress: show tqdm progress bars.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    options = options or SuiteOptions(cache_dir=out / "problems")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be > 0 seconds, got {time_limit}")
    seeds = [int(s) for s in seeds]
    _check_run_dir(out, options)
    instances, specs = plan(suites, solvers, seeds, options)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"instance_options": options.content_key()}, indent=1))

    store = ResultStore(out / "results.csv")
    done = store.done_keys(retry_errors)
    refs = ReferenceCache(out / "bounds.json", bound_method)
    trials = [Trial(instance=inst, solver=spec, params=ov, params_json=pj, seed=seed, time_limit=time_limit)
              for inst in instances for spec, ov, pj in specs for seed in seeds]
    todo = [t for t in trials if t.key not in done]
    summary = SweepSummary(out=out, planned=len(trials), skipped=len(trials) - len(todo), ran=0, failed=0)
    log.info("sweep: %d trials planned, %d already done", len(trials), summary.skipped)
    if not todo:
        return summary

    executor = make_executor(workers, scheduler)
    log.info("running on %s", executor.description)
    aborted = True
    try:
        missing = refs.missing([t.instance for t in todo])
        if missing:
            bar = tqdm(total=len(missing), desc="bounds", unit="inst", disable=not progress)
            for inst, ref in executor.map_unordered(_reference_task, [(i, bound_method) for i in missing]):
                refs.put(ref)
                bar.update()
            bar.close()
        todo = [replace(t, reference=refs.get(t.instance)) for t in todo]
        with store, tqdm(total=len(todo), desc="trials", unit="trial", disable=not progress) as bar:
            for _, row in executor.map_unordered(run_trial, todo):
                store.append(row)
                summary.ran += 1
                summary.failed += bool(row["error"])
                bar.update()
        aborted = False
    finally:
        executor.close(abort=aborted)
    return summary


def _reference_task(args: tuple[Instance, str]) -> dict:
    """Picklable wrapper of :func:`compute_reference` for executors."""
    inst, method = args
    return compute_reference(inst, method)
