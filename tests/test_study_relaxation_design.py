"""Study ``relaxation-design`` (paper Tables 3-6) in quick mode: files, rows, and real properties."""

import pytest

from qubo_round.studies.relaxation_design import variants

from study_helpers import assert_files, quick_study, read_rows as _rows, rerun


study = quick_study("relaxation-design")


def test_files_and_rows(study):
    out, path = study
    assert_files(out, ("relaxation-design.md", "runs.csv", "summary.csv", "iteration_check.csv", "variants.png"))
    runs = {r["variant"]: r for r in _rows(out / "runs.csv")}
    assert set(runs) == {v.key for v in variants(40)}
    md = path.read_text()
    for title in ("Table 3", "Table 4", "Table 5", "Table 6", "Iteration check"):
        assert title in md
    assert "±" in md
    for r in runs.values():
        assert 0 <= float(r["accuracy"]) <= 1 and float(r["loss"]) >= 0


def test_properties(study):
    out, _ = study
    runs = {r["variant"]: r for r in _rows(out / "runs.csv")}
    f = lambda k, c: float(runs[k][c])  # noqa: E731
    # nearest's loss is the nearest loss; the relaxation improves on it
    assert f("nearest", "loss") == pytest.approx(f("nearest", "nearest_loss"))
    for k in ("adaround", "plain-sigmoid", "sigmoid-anneal", "ste", "gptq"):
        assert f(k, "loss") < f("nearest", "loss"), k
    # the first layer sees the same inputs in layer-wise and asymmetric reconstruction
    assert f("layerwise", "loss_conv1") == pytest.approx(f("adaround", "loss_conv1"), rel=1e-9)
    assert f("layerwise", "loss_fc1") != pytest.approx(f("adaround", "loss_fc1"), rel=1e-6)
    # Table 6: the min-max grid is far worse than the MSE grid for nearest rounding at 2 bits
    assert f("nearest-minmax", "accuracy") < f("nearest", "accuracy") - 0.2
    assert f("nearest-minmax", "nearest_loss") > f("nearest", "nearest_loss")


def test_cache_reuse_gives_identical_csv(study, tmp_path):
    out, _ = study
    before = (out / "runs.csv").read_text()
    again = rerun("relaxation-design", out, tmp_path)
    assert "0 cells computed" in again.read_text()
    assert (tmp_path / "runs.csv").read_text() == before
