"""Smoke test of the solver-league study in quick mode, with properties that could fail."""
from __future__ import annotations

import math

import pytest

from study_helpers import assert_files, quick_study, read_rows as _rows, rerun

TOL = 1e-9


league = quick_study("solver-league", "league")


def _f(v):
    return float(v) if v not in ("", None) else math.nan


def test_files_and_tables(league):
    tmp, md = league
    assert_files(tmp, ("solver-league.md", "rows.csv", "summary.csv", "network.csv", "pareto.png"))
    text = md.read_text()
    assert "### League" in text and "dimod:*" in text  # the skipped wrappers are named
    summary = {r["solver"]: r for r in _rows(tmp / "summary.csv")}
    assert {"nearest", "exact", "gptq", "greedy"} <= set(summary)
    assert summary["exact"]["optimal_rows"].split("/")[0] == summary["exact"]["optimal_rows"].split("/")[1]


def test_exact_is_optimal_and_bounds_hold(league):
    tmp, _ = league
    rows = _rows(tmp / "rows.csv")
    by_row = {}
    for r in rows:
        by_row.setdefault((r["bits"], r["instance"], r["row"]), []).append(r)
    exact_rows = 0
    for recs in by_row.values():
        ref, kind = _f(recs[0]["reference"]), recs[0]["reference_kind"]
        best = _f(recs[0]["best_found"])
        energies = {r["solver"]: _f(r["energy"]) for r in recs}
        assert best <= min(energies.values()) + TOL
        if kind == "exact":
            exact_rows += 1
            assert energies["exact"] == pytest.approx(ref, rel=1e-12)
            for s, e in energies.items():  # nothing beats the optimum
                assert e >= ref - TOL * max(1.0, abs(ref)), s
        if kind in ("exact", "sdp"):
            for r in recs:  # gaps to an optimum or a valid lower bound are never negative
                assert _f(r["gap_ref"]) >= -1e-9, r
        for r in recs:
            assert _f(r["gap_best"]) >= -1e-12
    assert exact_rows >= 4  # conv1's rows have <= 24 free variables
    assert any(r["reference_kind"] == "sdp" for r in rows)  # fc2: certified SDP bound


def test_sdp_bound_below_optimum(league):
    """The SDP solver's certified bound is also reported on conv1, where the optimum is known."""
    tmp, _ = league
    rows = [r for r in _rows(tmp / "rows.csv") if r["solver"] == "sdp/fast" and r["reference_kind"] == "exact"]
    assert rows
    for r in rows:  # a valid bound; the SDP's own rounding is feasible: never below the optimum
        assert _f(r["sdp_bound"]) <= _f(r["reference"]) + TOL
        assert _f(r["energy"]) >= _f(r["reference"]) - TOL


def test_network_accuracy(league):
    tmp, _ = league
    net = {r["solver"]: r for r in _rows(tmp / "network.csv")}
    assert {"nearest", "greedy"} <= set(net)
    acc = {s: _f(r["accuracy"]) for s, r in net.items()}
    assert all(0.0 <= a <= 1.0 for a in acc.values())
    # greedy descends from nearest on every layer's QUBO: its total loss is lower
    assert _f(net["greedy"]["loss"]) < _f(net["nearest"]["loss"])


def test_cached_rerun_is_identical(league):
    tmp, md = league
    before = {n: (tmp / n).read_text() for n in ("rows.csv", "summary.csv", "network.csv")}
    out2 = tmp / "again"
    md2 = rerun("solver-league", tmp, out2)
    assert "0 cells computed" in md2.read_text()
    for n, text in before.items():
        assert (out2 / n).read_text() == text, n
