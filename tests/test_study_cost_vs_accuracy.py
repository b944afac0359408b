"""Study ``cost-vs-accuracy`` (paper Fig. 1) in quick mode: files, rows, properties, caching."""

import numpy as np
import pytest

from qubo_round.studies.cost_vs_accuracy import ENERGIES, TARGETS, correlations

from study_helpers import assert_files, quick_study, read_rows as _rows, rerun


study = quick_study("cost-vs-accuracy")


def test_files_and_rows(study):
    out, path = study
    assert_files(out, ("cost-vs-accuracy.md", "roundings.csv", "correlations.csv", "scatter_conv1.png"))
    rows = _rows(out / "roundings.csv")
    stoch = [r for r in rows if r["kind"] == "stochastic"]
    assert len(stoch) == 20
    kinds = {r["kind"] for r in rows}
    assert {"nearest", "eq. 20 optimum", "eq. 17-18 optimum", "eq. 16 best found", "AdaRound"} <= kinds
    corr = _rows(out / "correlations.csv")
    assert len(corr) == len(ENERGIES) * len(TARGETS)
    for r in corr:
        assert -1 <= float(r["pearson"]) <= 1 and -1 <= float(r["spearman"]) <= 1
    assert "Pearson" in path.read_text() or "pearson" in path.read_text()


def test_properties(study):
    out, _ = study
    rows = _rows(out / "roundings.csv")
    by = {r["kind"]: r for r in rows if r["kind"] != "stochastic"}
    stoch = [r for r in rows if r["kind"] == "stochastic"]
    for r in rows:
        assert 0 <= float(r["accuracy"]) <= 1
        for k in ENERGIES:
            assert float(r[k]) >= 0  # every energy is a PSD quadratic form of the weight change
    # the exact optima are optimal: no stochastic rounding (or nearest) lies below them
    for k, name in (("E20", "eq. 20 optimum"), ("E17", "eq. 17-18 optimum")):
        assert all(float(r[k]) >= float(by[name][k]) * (1 - 1e-9) for r in stoch + [by["nearest"]])
    # the eq. 16 solution predicts a smaller calibration-loss increase than nearest rounding
    assert float(by["eq. 16 best found"]["E13"]) < float(by["nearest"]["E13"])
    # higher predicted loss goes with higher actual loss over the stochastic roundings
    corr = {(r["energy"], r["target"]): r for r in _rows(out / "correlations.csv")}
    key = (ENERGIES["E13"][1], TARGETS["dce_calib"])
    assert float(corr[key]["spearman"]) > 0


def test_correlations_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.random(30)
    samples = [{"E20": v, "E17": v, "E13": v, "dce_calib": 2 * v + 1, "dce_test": -v, "accuracy": v ** 3}
               for v in x]
    rows = {(r["energy"], r["target"]): r for r in correlations(samples, seed=0, boot=50)}
    e = ENERGIES["E20"][1]
    assert rows[(e, TARGETS["dce_calib"])]["pearson"] == pytest.approx(1.0)
    assert rows[(e, TARGETS["dce_test"])]["spearman"] == pytest.approx(-1.0)
    assert rows[(e, TARGETS["accuracy"])]["spearman"] == pytest.approx(1.0)
    assert rows[(e, TARGETS["accuracy"])]["pearson"] == pytest.approx(np.corrcoef(x, x ** 3)[0, 1])


def test_cache_reuse_gives_identical_csv(study, tmp_path):
    out, _ = study
    again = tmp_path / "again"
    rerun("cost-vs-accuracy", out, again)
    assert "0 cells computed" in (again / "cost-vs-accuracy.md").read_text()
    for name in ("roundings.csv", "correlations.csv"):
        assert (again / name).read_text() == (out / name).read_text(), name
