"""Optional dependencies behind extras (qubo_round.extras): a missing one is named, with its
extra, before any work; the core install carries none of them."""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from qubo_round.extras import MissingExtraError, require

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = {"minilm": ["transformers"], "onnx": ["onnx", "onnxruntime"], "cvxpy": ["cvxpy"],
          "dask": ["distributed"], "plots": ["matplotlib"]}


def _hide(monkeypatch, *modules):
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)  # import raises ImportError


def test_require_names_the_extra(monkeypatch):
    assert require("math", "x", "y").sqrt(4.0) == 2.0
    _hide(monkeypatch, "cvxpy")
    with pytest.raises(MissingExtraError, match=r"pip install 'qubo-round\[cvxpy\]'.*missing module: cvxpy"):
        require("cvxpy", "cvxpy", "the thing")


def test_core_dependencies_are_lean_and_test_installs_every_extra():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(meta["dependencies"])
    for heavy in ("cvxpy", "dask", "matplotlib", "onnx", "transformers"):
        assert heavy not in core
    extras = meta["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    assert "qubo-round[all]" in extras["test"]
    assert all(name in extras["all"][0] for name in EXTRAS)


def test_sdp_cvxpy_backend_named_before_solving(monkeypatch):
    from qubo_round.problem import DenseQUBO
    from qubo_round.solvers import get_solver
    Q = np.random.default_rng(0).normal(size=(12, 12))
    p = DenseQUBO(Q=(Q + Q.T) / 2, offset=np.array([0.0]))
    _hide(monkeypatch, "cvxpy")
    with pytest.raises(MissingExtraError, match=r"qubo-round\[cvxpy\]"):
        get_solver("sdp", backend="scs").solve(p, seed=0)
    assert np.isfinite(get_solver("sdp", hyperplanes=50).solve(p, seed=0).lower_bound).all()  # ipm: no extra


def test_dask_executor_names_the_extra(monkeypatch):
    from qubo_round.executors import DaskExecutor
    _hide(monkeypatch, "distributed")
    with pytest.raises(MissingExtraError, match=r"qubo-round\[dask\]"):
        DaskExecutor("local", workers=1)


def test_onnx_export_names_the_extra(monkeypatch, tmp_path):
    from qubo_round.cli import main
    _hide(monkeypatch, "onnx", "onnxruntime")
    assert main(["quantize", "--model", "digits", "--solver", "nearest", "--export-onnx",
                 str(tmp_path / "m.onnx"), "--no-progress"]) == 2
    assert not (tmp_path / "m.onnx").exists()


def test_study_names_the_plots_extra_before_work(monkeypatch, tmp_path):
    from qubo_round.studies import available_studies
    from qubo_round.studies.common import run_study
    _hide(monkeypatch, "matplotlib")
    with pytest.raises(MissingExtraError, match=r"qubo-round\[plots\]"):
        run_study(available_studies()[0], quick=True, out=tmp_path / "s", cache=None, progress=False)
    assert not list((tmp_path).rglob("*.md"))


def test_minilm_names_its_extra(monkeypatch, capsys):
    from qubo_round.cli import main
    _hide(monkeypatch, "transformers")
    assert main(["quantize", "--model", "minilm", "--no-progress"]) == 2
    assert "qubo-round[minilm]" in capsys.readouterr().err
