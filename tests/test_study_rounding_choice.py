"""Study ``rounding-choice`` (paper Tables 1-2) in quick mode: files, rows, optimality properties,
caching."""

import pytest

from qubo_round.studies.rounding_choice import LAYERS, METHODS1, METHODS2

from study_helpers import assert_files, quick_study, read_rows as _rows, rerun

TOL = 1e-9


study = quick_study("rounding-choice")


def test_files_and_rows(study):
    out, path = study
    assert_files(out, ("rounding-choice.md", "first_layer.csv", "all_layers.csv", "gaps_all_layers.csv",
                       "accuracy.png"))
    first = _rows(out / "first_layer.csv")
    assert [r["method"] for r in first] == [m.key for m in METHODS1]  # one seed in quick mode
    every = _rows(out / "all_layers.csv")
    assert [r["method"] for r in every] == [m.key for m in METHODS2]
    text = path.read_text()
    for m in METHODS1 + METHODS2:
        assert m.label in text
    assert "±" in text and "accuracy.png" in text


def test_first_layer_optimality(study):
    out, _ = study
    first = {r["method"]: r for r in _rows(out / "first_layer.csv")}
    for r in first.values():
        assert 0.0 <= float(r["accuracy"]) <= 1.0
        for k in ("eq20", "eq17", "eq16"):
            # optimum / certified bound below every rounding's energy
            assert float(r[f"ref_{k}"]) <= float(r[f"E_{k}"]) * (1 + TOL) + TOL
    # the exact solvers reach the optimum of their own objective
    assert first["mse"]["ref_eq20_method"] == "exact"
    assert float(first["mse"]["E_eq20"]) == pytest.approx(float(first["mse"]["ref_eq20"]), rel=1e-9)
    assert float(first["hessian-row"]["E_eq17"]) == pytest.approx(float(first["hessian-row"]["ref_eq17"]), rel=1e-9)
    # ... and no method beats them there
    for r in first.values():
        assert float(r["E_eq20"]) >= float(first["mse"]["E_eq20"]) * (1 - TOL)
        assert float(r["E_eq17"]) >= float(first["hessian-row"]["E_eq17"]) * (1 - TOL)
    # solving a QUBO beats nearest rounding on it
    for k, m in (("eq20", "mse"), ("eq17", "hessian-row"), ("eq16", "hessian-full")):
        assert float(first[m][f"E_{k}"]) < float(first["nearest"][f"E_{k}"])


def test_all_layers_consistency(study):
    out, _ = study
    every = {r["method"]: r for r in _rows(out / "all_layers.csv")}
    for L in LAYERS:
        # floor and ceil are far worse than nearest on the local MSE, layer by layer
        assert float(every["floor"][f"E_eq20_{L}"]) > float(every["nearest"][f"E_eq20_{L}"])
        # the QUBO solution never loses to nearest on its own objective
        assert float(every["mse"][f"E_eq20_{L}"]) <= float(every["nearest"][f"E_eq20_{L}"]) * (1 + TOL)
    # conv1's inputs are the network's inputs: the sequential pipeline solves the same problem exactly
    assert float(every["pipe-qubo"]["E_eq20_conv1"]) == pytest.approx(float(every["mse"]["E_eq20_conv1"]), rel=1e-6)
    gaps = _rows(out / "gaps_all_layers.csv")
    assert {r["layer"] for r in gaps} >= {"conv1"}
    for g in gaps:
        bound = float(g["bound"])
        for k, v in g.items():
            if k.startswith("E_"):
                assert bound <= float(v) * (1 + TOL) + TOL, (g["layer"], g["objective"], k)
        if g["bound_method"] == "exact":
            assert min(float(v) for k, v in g.items() if k.startswith("E_")) == pytest.approx(bound, rel=1e-9)


def test_cache_reuse_gives_identical_csv(study, tmp_path):
    out, _ = study
    again = tmp_path / "again"
    rerun("rounding-choice", out, again)
    text = (again / "rounding-choice.md").read_text()
    assert "0 cells computed" in text
    for name in ("first_layer.csv", "all_layers.csv", "gaps_all_layers.csv"):
        assert (again / name).read_text() == (out / name).read_text(), name
