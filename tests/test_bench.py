"""Benchmark harness: suites, sweep rows and gaps, failures, resume after SIGKILL, Dask, report."""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qubo_round.bench import (COLUMNS, SuiteOptions, UnknownSuiteError, available_suites, register_suite,
                              relative_gap, run_sweep, suite_instances)
from qubo_round.bench.report import write_report
from qubo_round.bench.store import read_rows, row_key

SOLVERS = ["greedy", "stochastic", "exact"]
SEEDS = [0, 1]
SUITES = ["digits-small", "public-bqp50"]


@pytest.fixture(scope="module")
def options(tmp_path_factory, qubo_data) -> SuiteOptions:
    """digits-small at 2 bits only, 2 bqp50 instances, one shared problem cache."""
    return SuiteOptions(data_dir=qubo_data, cache_dir=tmp_path_factory.mktemp("cache"), bits=(2,), limit=2)


@pytest.fixture(scope="module")
def run(tmp_path_factory, options):
    """One serial sweep: (run dir, summary, rows)."""
    out = tmp_path_factory.mktemp("run")
    summary = run_sweep(SUITES, SOLVERS, SEEDS, out, options=options, workers=1, progress=False)
    return out, summary, read_rows(out / "results.csv")


def _f(v: str) -> float:
    return float(v) if v != "" else math.nan


def test_registry_and_suites(options):
    assert {"digits-layers", "digits-small", "public-bqp50", "public-bqp100", "public-bqp250",
            "public-gka", "public-gset"} <= set(available_suites())
    with pytest.raises(ValueError, match="already registered"):
        register_suite("digits-small")(lambda opts: [])
    small = suite_instances("digits-small", options)
    assert [i.name for i in small] == ["conv1-b2"]
    assert all(i.descriptors["max_free"] <= 24 for i in small)
    bqp = suite_instances("public-bqp50", options)
    assert [i.name for i in bqp] == ["bqp50-1", "bqp50-2"]
    assert bqp[0].descriptors["best_known"] == 2098 and bqp[0].descriptors["sense"] == "max"
    assert bqp[0].load().n == 50


def test_sweep_rows(run):
    out, summary, rows = run
    assert (summary.planned, summary.ran, summary.skipped) == (18, 18, 0)
    with open(out / "results.csv", newline="") as fh:
        assert tuple(next(csv.reader(fh))) == COLUMNS
    keys = {row_key(r) for r in rows}
    assert len(keys) == len(rows) == 18
    assert {(r["suite"], r["instance"]) for r in rows} == {
        ("digits-small", "conv1-b2"), ("public-bqp50", "bqp50-1"), ("public-bqp50", "bqp50-2")}
    for r in rows:
        assert r["solver"] in SOLVERS and r["seed"] in ("0", "1")
        assert isinstance(json.loads(r["params"]), dict)
        assert r["hostname"] and int(r["cpu_count"]) >= 1 and r["python"] and r["timestamp"]
        assert r["n"] and r["rows"] and r["free"]
    layer = next(r for r in rows if r["suite"] == "digits-small")
    assert (layer["layer"], layer["bits"], layer["hessian"]) == ("conv1", "2", "covariance")


def test_gaps(run):
    _, _, rows = run
    ok = [r for r in rows if not r["error"]]
    assert len(ok) == 14
    for r in ok:
        if r["bound"]:
            assert _f(r["gap_to_bound"]) >= -1e-9, r
    small = [r for r in ok if r["suite"] == "digits-small"]
    assert all(r["bound_kind"] == "exact" and r["optimum"] for r in small)
    for r in small:
        assert _f(r["gap_to_optimum"]) >= -1e-9
        if r["solver"] == "exact":
            assert abs(_f(r["gap_to_optimum"])) < 1e-9 and r["status"] == "optimal"
    for r in ok:
        if r["suite"] == "public-bqp50":
            obj, best = _f(r["objective"]), _f(r["best_known"])
            assert obj == -_f(r["energy"]) and obj <= best
            assert _f(r["gap_to_best_known"]) == pytest.approx((best - obj) / abs(best))


def test_failing_trial_is_recorded(run):
    _, _, rows = run
    failed = [r for r in rows if r["error"]]
    assert {(r["suite"], r["solver"]) for r in failed} == {("public-bqp50", "exact")}
    assert all(r["status"] == "error" and r["error"].startswith("CapabilityError") for r in failed)
    assert all(r["energy"] == "" for r in failed)


def test_rerun_skips_finished_trials(run, options):
    out, _, rows = run
    before = (out / "results.csv").read_bytes()
    summary = run_sweep(SUITES, SOLVERS, SEEDS, out, options=options, workers=1, progress=False)
    assert (summary.ran, summary.skipped) == (0, 18)
    assert (out / "results.csv").read_bytes() == before


def test_reference_uses_the_bounds_module(monkeypatch, options):
    """The per-instance bound comes from qubo_round.bounds.lower_bound (stubbed here)."""
    import types
    from dataclasses import dataclass

    import numpy as np

    from qubo_round.bench.reference import compute_reference, its_incumbent

    @dataclass
    class Bound:
        values: np.ndarray
        method: str
        seconds: float

    calls = []
    stub = types.ModuleType("qubo_round.bounds")
    stub.lower_bound = lambda problem, method="auto", incumbent=None: calls.append((method, incumbent)) or Bound(
        np.full(problem.rows, -5000.0), "sdp", 0.0)
    monkeypatch.setitem(sys.modules, "qubo_round.bounds", stub)
    inst = suite_instances("public-bqp50", options)[0]
    ref = compute_reference(inst, "auto")
    # the league's bounds start the branch and bound where the solver bnb does (its/fast)
    assert calls == [("auto", its_incumbent)] and ref["kind"] == "sdp" and ref["bound"] == -5000.0 and ref["error"] is None
    stub.lower_bound = lambda problem, method="auto", incumbent=None: 1 / 0
    ref = compute_reference(inst, "auto")
    assert ref["kind"] == "none" and ref["bound"] is None and ref["error"].startswith("ZeroDivisionError")


def test_run_dir_refuses_other_instance_options(run, options):
    from dataclasses import replace

    with pytest.raises(ValueError, match="another --out"):
        run_sweep(SUITES, SOLVERS, SEEDS, run[0], options=replace(options, max_rows=8), workers=1, progress=False)


def test_relative_gap():
    assert relative_gap(11.0, 10.0) == pytest.approx(0.1)
    assert relative_gap(-90.0, -100.0) == pytest.approx(0.1)
    assert relative_gap(1.0, None) is None
    assert relative_gap(0.0, 0.0) == 0.0


def test_bad_input_fails_before_starting(tmp_path, options):
    from qubo_round.cli import main
    from qubo_round.solvers import UnknownSolverError

    with pytest.raises(UnknownSuiteError, match="available"):
        run_sweep(["nope"], ["greedy"], [0], tmp_path / "a", options=options)
    with pytest.raises(UnknownSolverError):
        run_sweep(["public-bqp50"], ["no-such-solver"], [0], tmp_path / "b", options=options)
    assert main(["bench", "--suite", "nope", "--solver", "greedy", "--out", str(tmp_path / "c")]) == 2
    assert not any((tmp_path / d).exists() for d in "abc")


_KILL_SCRIPT = """
import json, sys, time
import numpy as np
from qubo_round.solvers import Solver, register
from qubo_round.bench import SuiteOptions, run_sweep

@register("bench-test-sleep")
class Sleep(Solver):
    '''Random assignment after a nap (a slow solver for the interruption test).'''
    def sample(self, problem, *, rng, start, time_limit):
        time.sleep(0.25)
        return problem.apply_fixed(rng.integers(0, 2, problem.shape).astype(np.uint8)), {}

out, data = sys.argv[1], sys.argv[2]
s = run_sweep(["public-bqp50"], ["bench-test-sleep", "stochastic/single"], [0, 1, 2], out, workers=1,
              options=SuiteOptions(data_dir=data, cache_dir=out + "/problems", limit=2),
              bound_method="none", progress=False)
print(json.dumps({"ran": s.ran, "skipped": s.skipped, "planned": s.planned}))
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def test_resume_after_sigkill(tmp_path, qubo_data):
    out = tmp_path / "killed"
    results = out / "results.csv"
    cmd = [sys.executable, "-c", _KILL_SCRIPT, str(out), str(qubo_data)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(_lines(results)) < 1 + 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    kept = [r for r in read_rows(results)]
    assert 4 <= len(kept) < 12, "the sweep was not interrupted mid-way"
    with open(results, "a") as fh:  # an interrupted write: a partial last line
        fh.write("2099-01-01,public-bqp50,bqp50-1,orlib")

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == {"ran": 12 - len(kept), "skipped": len(kept), "planned": 12}
    rows = read_rows(results)
    keys = [row_key(r) for r in rows]
    assert len(rows) == 12 and len(set(keys)) == 12
    assert rows[:len(kept)] == kept  # finished trials untouched, never rerun
    assert not any(r["timestamp"].startswith("2099") for r in rows)


def test_dask_gives_the_same_rows_as_the_pool(run, tmp_path, options):
    distributed = pytest.importorskip("distributed")
    solvers, seeds = ["greedy", "stochastic"], [0]
    pool = run_sweep(SUITES, solvers, seeds, tmp_path / "pool", options=options, workers=2, progress=False)
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        dask = run_sweep(SUITES, solvers, seeds, tmp_path / "dask", options=options, scheduler=client,
                         progress=False)
    assert pool.ran == dask.ran == 6

    def energies(path):
        return {row_key(r): (r["energy"], r["bound"], r["gap_to_bound"]) for r in read_rows(path / "results.csv")}

    a, b = energies(tmp_path / "pool"), energies(tmp_path / "dask")
    assert a == b and len(a) == 6
    serial = energies(run[0])
    assert all(serial[k] == v for k, v in a.items())


def test_report(run, tmp_path):
    out, _, _ = run
    md_path = write_report(out, tmp_path / "report")
    md = md_path.read_text()
    assert "## League" in md and "## Suite digits-small" in md and "## Suite public-bqp50" in md
    assert "CapabilityError" in md
    for s in SOLVERS:
        assert f"| {s} |" in md
    for png in ("gap_vs_time.png", "league.png"):
        data = (tmp_path / "report" / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000
        assert all(s.encode() in data for s in SOLVERS)  # names in the plot's metadata
        assert f"({png})" in md


def test_report_without_the_plots_extra(run, tmp_path, monkeypatch, caplog):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the 'plots' extra were not installed
    out, _, _ = run
    md = write_report(out, tmp_path / "r").read_text()
    assert "## League" in md and "pip install 'qubo-round[plots]'" in md
    assert not list((tmp_path / "r").glob("*.png"))
    assert "qubo-round[plots]" in caplog.text


def test_results_are_pandas_readable(run):
    pd = pytest.importorskip("pandas")
    df = pd.read_csv(run[0] / "results.csv")
    assert list(df.columns) == list(COLUMNS) and len(df) == 18
    assert df["energy"].notna().sum() == 14


def test_cli_bench_and_report(tmp_path, options, capsys):
    from qubo_round.cli import main

    out = tmp_path / "cli"
    args = ["bench", "--suite", "public-bqp50", "--solver", "greedy", "--solver", "stochastic/best100",
            "--seeds", "0", "1", "--out", str(out), "--workers", "1", "--limit", "1",
            "--data-dir", str(options.data_dir), "--bound-method", "none", "--no-progress"]
    assert main(args) == 0
    assert "4 trial(s) run" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 trial(s) run" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stochastic/best100" in text and (out / "report" / "league.png").is_file()


def test_machine_line_names_what_changes_the_numbers():
    """Results files name the CPU capability torch dispatches to (floating point differs between
    AVX2 and AVX512), the cores, the versions and torch's threads, from one function."""
    import json as _json
    import os as _os

    import torch as _torch

    from qubo_round.bench.machine import machine, machine_line

    m = machine()
    assert m["cpus"] == _os.cpu_count() and m["threads"] == _torch.get_num_threads()
    assert m["cpu_capability"] == _torch.backends.cpu.get_cpu_capability() and m["torch"] == _torch.__version__
    _json.dumps(m)  # JSON-serialisable as it is
    line = machine_line()
    assert f"{m['cpus']} CPU cores ({m['cpu_capability']})" in line and f"torch {m['torch']}" in line
    assert f"({m['threads']} threads)" in line
