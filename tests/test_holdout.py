"""Held-out acceptance (QuantConfig.holdout): a row takes the solver's or the polish's change only
where its held-out loss falls and its fitted loss does not rise."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qubo_round.builders import asymmetric_problem
from qubo_round.grid import Grid
from qubo_round.pipeline import QuantConfig, quantize_model
from qubo_round.pipeline.run import accept_on_holdout, split_holdout
from qubo_round.zoo import load_model


def _pair(rng, rows, cols, bits):
    """A fitted problem and the same layer's problem on other data (the same rounding space)."""
    W = rng.normal(size=(rows, cols))
    X1, X2 = rng.normal(size=(cols, 3 * cols)), rng.normal(size=(cols, 3 * cols))
    H1, H2 = X1 @ X1.T / X1.shape[1], X2 @ X2.T / X2.shape[1]
    fit = asymmetric_problem(W, H1, H1, H1, Grid(bits=bits))
    return fit, asymmetric_problem(W, H2, H2, H2, space=fit.space)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 6), cols=st.integers(1, 10),
       stages=st.integers(2, 4))
def test_choice_never_raises_either_loss_and_comes_from_a_stage(seed, rows, cols, stages):
    rng = np.random.default_rng(seed)
    fit, held = _pair(rng, rows, cols, 3)
    cands = [[fit.space.nearest()]] + [[fit.to_rounding(fit.apply_fixed(rng.integers(0, 2, size=fit.shape)))]
                                       for _ in range(stages - 1)]
    (V,), refused = accept_on_holdout([fit], [held], cands)
    e = {n: p.energies(p.from_rounding(v)) for n, p, v in (("f", fit, V), ("h", held, V))}
    e0 = {n: p.energies(p.from_rounding(cands[0][0])) for n, p in (("f", fit), ("h", held))}
    assert (e["f"] <= e0["f"] + 1e-12).all() and (e["h"] <= e0["h"] + 1e-12).all()
    for k in range(rows):  # every row is one of the candidates' rows
        assert any(np.array_equal(V[k], c[0][k]) for c in cands)
    # a refusal is a (row, stage) whose row differs from the row chosen so far: at most one per
    # row and later stage, and none when no stage differs from the first (seed 2349: a stage may
    # differ from the current row while equal to the first stage's)
    moved = sum(int(np.any(c[0] != cands[0][0], axis=1).sum()) for c in cands[1:])
    assert 0 <= refused <= rows * (stages - 1)
    assert moved or refused == 0


def test_same_data_accepts_every_improving_row():
    rng = np.random.default_rng(1)
    fit, _ = _pair(rng, 8, 12, 2)
    near = fit.space.nearest()
    other = fit.to_rounding(fit.apply_fixed(rng.integers(0, 2, size=fit.shape)))
    (V,), refused = accept_on_holdout([fit], [fit], [[near], [other]])
    better = fit.energies(fit.from_rounding(other)) < fit.energies(fit.from_rounding(near))
    assert np.array_equal(V[better], other[better]) and np.array_equal(V[~better], near[~better])
    assert refused == int((np.any(other != near, axis=1) & ~better).sum())


def test_split_holdout():
    b = list(range(16))
    assert split_holdout(b, 0.0) == (b, [])
    assert split_holdout(b, 0.25) == (b[:12], b[12:])
    assert split_holdout(b, 0.01) == (b[:15], b[15:])  # at least one batch
    with pytest.raises(ValueError, match="leaves none to fit on"):
        split_holdout([0], 0.5)


@pytest.mark.parametrize("bad", [1.0, -0.1, True, "0.2"])
def test_bad_holdout_is_refused(bad):
    with pytest.raises(ValueError, match="holdout"):
        QuantConfig(holdout=bad)


def test_default_fingerprint_unchanged():
    assert "holdout" not in QuantConfig().to_dict()
    assert QuantConfig(holdout=0.25).to_dict()["holdout"] == 0.25


def test_pipeline_reports_holdout_losses_never_above_nearest():
    bundle = load_model("digits")
    x = bundle.calibration(256, 0)  # 4 batches of 64: 3 fitted, 1 held out
    _, rep = quantize_model(bundle.model, x, QuantConfig(bits=2, holdout=0.25, solver_params={"iterations": 200}),
                            progress=False)
    for r in rep.layers:
        assert r.holdout_loss is not None and r.rows_refused is not None and r.rows_refused >= 0
        assert r.holdout_loss <= r.holdout_nearest_loss * (1 + 1e-9) + 1e-12
    assert "held-out loss, nearest" in rep.to_markdown()
    _, plain = quantize_model(bundle.model, x, QuantConfig(bits=2, solver_params={"iterations": 200}), progress=False)
    assert all(r.holdout_loss is None for r in plain.layers)
    assert "held-out" not in plain.to_markdown()


def test_cli_bad_holdout_is_a_one_line_error(capsys):
    from qubo_round.cli import main
    assert main(["quantize", "--model", "digits", "--bits", "2", "--holdout", "1.5", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holdout must be a fraction in [0, 1)" in err and len(err.splitlines()) == 1
