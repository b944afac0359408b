"""The pipeline's polish: single-flip descent on each layer's QUBO after the solver."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qubo_round.builders import asymmetric_problem
from qubo_round.grid import Grid
from qubo_round.pipeline import LayerOverride, QuantConfig, quantize_model
from qubo_round.pipeline.run import polish_roundings
from qubo_round.problem import DenseQUBO, stack_rows
from qubo_round.zoo import load_model


@pytest.fixture(scope="module")
def digits():
    b = load_model("digits")
    return b, b.calibration(128, 0)


def _problem(rng, rows, cols, bits):
    W = rng.normal(size=(rows, cols))
    X = rng.normal(size=(cols, 4 * cols))
    X_hat = X + 0.1 * rng.normal(size=X.shape)
    n = X.shape[1]
    return asymmetric_problem(W, X @ X.T / n, X_hat @ X_hat.T / n, X_hat @ X.T / n, Grid(bits=bits))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 6), cols=st.integers(1, 12), bits=st.integers(2, 4))
def test_polish_never_raises_the_energy_and_stops_at_a_one_flip_minimum(seed, rows, cols, bits):
    rng = np.random.default_rng(seed)
    p = _problem(rng, rows, cols, bits)
    V0 = p.to_rounding(p.apply_fixed(rng.integers(0, 2, size=p.shape)))
    (V,), flips = polish_roundings([p], [V0])
    X0, X = p.from_rounding(V0), p.from_rounding(V)
    assert flips == int((X != X0).sum())
    assert np.sum(p.energy(X)) <= np.sum(p.energy(X0)) + 1e-9 * (1 + abs(np.sum(p.energy(X0))))
    assert (X[p.fixed_mask] == p.fixed_value[p.fixed_mask]).all()
    deltas = p.flip_deltas(X)  # +inf on fixed variables
    assert (deltas >= -1e-9 * (1 + np.abs(p.matvec(X.astype(float))))).all()


def test_polish_in_the_pipeline_lowers_each_layer_loss(digits):
    b, x = digits
    kw = dict(bits=3, solver_params={"iterations": 200})
    _, on = quantize_model(b.model, x, QuantConfig(**kw), progress=False)
    _, off = quantize_model(b.model, x, QuantConfig(polish=False, **kw), progress=False)
    assert all(r.solver_loss is None and r.polish_flips == 0 for r in off.layers)
    assert all(r.loss <= r.solver_loss + 1e-12 for r in on.layers)
    assert sum(r.polish_flips for r in on.layers) > 0 and on.loss < off.loss
    # the first layer sees the same inputs in both runs: the same solver rounding, then the polish
    assert on.layers[0].solver_loss == pytest.approx(off.layers[0].loss, rel=1e-12)
    assert "flips" in on.to_markdown()


def test_nearest_and_the_activation_aware_loss_are_not_polished(digits):
    b, x = digits
    _, r = quantize_model(b.model, x[:64], QuantConfig(bits=3, solver="nearest"), progress=False)
    assert all(row.solver_loss is None and row.loss == row.nearest_loss for row in r.layers)
    _, r = quantize_model(b.model, x[:64], QuantConfig(bits=3, form="data", activation="relu",
                                                       solver_params={"iterations": 50}), progress=False)
    assert [row.solver_loss is None for row in r.layers] == [True] * 4 + [False]  # fc2: no ReLU after it


def test_polish_override_per_layer(digits):
    b, x = digits
    cfg = QuantConfig(bits=3, solver="greedy", polish=False, overrides={"fc2": LayerOverride(polish=True)})
    _, r = quantize_model(b.model, x[:64], cfg, progress=False)
    assert [row.solver_loss is not None for row in r.layers] == [False] * 4 + [True]
    assert r.layers[-1].polish_flips == 0  # greedy's rounding is already a 1-flip minimum


def test_bad_polish_values_are_refused():
    with pytest.raises(TypeError, match="polish must be True or False"):
        QuantConfig(polish="yes")
    with pytest.raises(TypeError, match="override polish for 'fc1'"):
        QuantConfig(overrides={"fc1": LayerOverride(polish=1)})


def test_run_directory_with_another_polish_setting_is_refused(digits, tmp_path):
    b, x = digits
    cfg = QuantConfig(bits=4, solver="greedy")
    quantize_model(b.model, x[:32], cfg, run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="polish: True .* != False"):
        quantize_model(b.model, x[:32], QuantConfig(bits=4, solver="greedy", polish=False), run_dir=tmp_path,
                       progress=False)


def test_cli_no_polish(capsys):
    from qubo_round.cli import main
    assert main(["quantize", "--model", "digits", "--bits", "3", "--solver", "adaround", "--param",
                 "iterations=100", "--calib-samples", "64", "--no-progress", "--json", "--no-polish"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert all(row["solver_loss"] is None for row in out["layers"])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 5), cols=st.integers(1, 9))
def test_row_columns_equal_the_rows_of_columns(seed, rows, cols):
    """The polish's per-row primitive gives columns of each row's explicit ``Q_k`` (``matrix``), on
    every kind of family: shared H, per-row H (stacked groups), a dense QUBO; ``columns`` (all
    rows) agrees."""
    rng = np.random.default_rng(seed)
    a, b = _problem(rng, rows, cols, 3), _problem(rng, rows, cols, 3)
    Q = rng.normal(size=(cols, cols))
    for p in (a, stack_rows([a, b]), DenseQUBO(Q=Q + Q.T)):
        idx = rng.integers(0, p.n, size=p.rows)
        r = rng.permutation(p.rows)[: max(1, p.rows // 2)]
        expect = np.stack([p.matrix(k)[:, i] for k, i in zip(r, idx[r])])
        np.testing.assert_allclose(p.row_columns(r, idx[r]), expect, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(p.columns(idx)[r], p.row_columns(r, idx[r]))
