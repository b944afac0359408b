"""check_hessian and its damping rule (qubo_round/hessian.py module docstring)::

    H_damped = H + lambda I,   lambda = max(0, -lambda_min(H)) + rel * mean(diag(H))

and how the builders record it in ``problem.meta``."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qubo_round.builders import covariance_problem
from qubo_round.grid import Grid
from qubo_round.hessian import AUTO_REL_DAMP, check_hessian

LOGGER = "qubo_round.hessian"


def _pd(n=5, seed=0) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(n, 4 * n))
    return X @ X.T / X.shape[1]


def _singular(n=6, rank=3, seed=0) -> np.ndarray:
    B = np.random.default_rng(seed).normal(size=(n, rank))
    H = B @ B.T
    return (H + H.T) / 2


def _non_psd(n=5, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Qm, _ = np.linalg.qr(rng.normal(size=(n, n)))
    eig = np.array([-0.5, 0.2, 1.0, 2.0, 3.0])[:n]
    H = (Qm * eig) @ Qm.T
    return (H + H.T) / 2


def test_pd_matrix_unchanged(caplog):
    H = _pd()
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    H2, chk = check_hessian(H)
    np.testing.assert_array_equal(H2, H)
    eig = np.linalg.eigvalsh(H)
    assert chk.status == "pd"
    assert chk.damping == 0.0
    assert chk.lambda_min == pytest.approx(eig[0], rel=1e-12)
    assert chk.lambda_max == pytest.approx(eig[-1], rel=1e-12)
    assert np.isfinite(chk.condition)
    assert chk.condition == pytest.approx(eig[-1] / eig[0], rel=1e-10)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_pd_condition_is_eigenvalue_ratio(n, seed):
    H = _pd(n, seed)
    H2, chk = check_hessian(H, damping="auto")
    eig = np.linalg.eigvalsh(H)
    np.testing.assert_array_equal(H2, H)
    assert chk.status == "pd"
    assert chk.condition == pytest.approx(eig[-1] / eig[0], rel=1e-9)
    assert chk.condition >= 1.0


def test_singular_psd_matrix_is_kept_exactly(caplog):
    H = _singular()
    caplog.set_level(logging.INFO, logger=LOGGER)
    H2, chk = check_hessian(H, damping="auto", name="layer1")
    np.testing.assert_array_equal(H2, H)
    assert chk.status == "singular"
    assert chk.damping == 0.0
    assert chk.condition == float("inf")
    info = [r for r in caplog.records if r.levelno == logging.INFO]
    assert any("singular" in r.getMessage() and "layer1" in r.getMessage() for r in info)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_zero_matrix_is_singular_not_damped():
    H2, chk = check_hessian(np.zeros((3, 3)))
    assert chk.status == "singular" and chk.damping == 0.0 and chk.condition == float("inf")
    assert (H2 == 0).all()


def test_non_psd_auto_damping_follows_the_rule(caplog):
    H = _non_psd()
    caplog.set_level(logging.INFO, logger=LOGGER)
    H2, chk = check_hessian(H, damping="auto", name="Hx")
    lmin = np.linalg.eigvalsh(H)[0]
    assert lmin < 0
    expected = -lmin + AUTO_REL_DAMP * np.mean(np.diag(H))
    assert AUTO_REL_DAMP == 0.01
    assert chk.status == "non-psd"
    assert chk.damping == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(H2, H + chk.damping * np.eye(len(H)), rtol=0, atol=0)
    assert chk.lambda_min == pytest.approx(lmin + chk.damping, rel=1e-9)
    eig2 = np.linalg.eigvalsh(H2)
    assert eig2[0] > 0  # PSD (PD in fact: 0.01 * mean diag above 0)
    assert eig2[0] == pytest.approx(0.01 * np.mean(np.diag(H)), rel=1e-8)
    assert np.isfinite(chk.condition) and chk.condition == pytest.approx(eig2[-1] / eig2[0], rel=1e-8)
    warns = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warns) == 1
    assert "Hx" in warns[0] and "non-psd" in warns[0]
    assert "lambda = max(0, -lambda_min) + 0.01 * mean(diag(H))" in warns[0]


def test_damping_none_with_non_psd_raises():
    with pytest.raises(ValueError, match="positive semi-definite") as ei:
        check_hessian(_non_psd(), damping=None, name="H_layer")
    msg = str(ei.value)
    assert "H_layer" in msg and "damping='auto'" in msg and "float" in msg


def test_damping_none_keeps_pd_and_singular():
    for H in (_pd(), _singular()):
        H2, chk = check_hessian(H, damping=None)
        np.testing.assert_array_equal(H2, H)
        assert chk.damping == 0.0


@pytest.mark.parametrize("rel", [0.1, 1e-4, 2])
@pytest.mark.parametrize("kind", ["pd", "singular", "non-psd"])
def test_float_damping_always_applies(rel, kind, caplog):
    H = {"pd": _pd, "singular": _singular, "non-psd": _non_psd}[kind]()
    caplog.set_level(logging.INFO, logger=LOGGER)
    H2, chk = check_hessian(H, damping=rel)
    lmin = np.linalg.eigvalsh(H)[0]
    expected = max(0.0, -lmin) + rel * np.mean(np.diag(H))
    assert chk.status == kind
    assert chk.damping == pytest.approx(expected, rel=1e-12, abs=1e-300)
    if kind != "non-psd":
        assert chk.damping == pytest.approx(rel * np.mean(np.diag(H)), rel=1e-13)  # lambda_min >= 0
    np.testing.assert_array_equal(H2, H + chk.damping * np.eye(len(H)))
    assert np.linalg.eigvalsh(H2)[0] > 0 and np.isfinite(chk.condition)
    assert any(r.levelno == logging.WARNING and "rule" in r.getMessage() for r in caplog.records)


def test_float_damping_zero_is_no_damping_for_psd():
    H2, chk = check_hessian(_pd(), damping=0.0)
    np.testing.assert_array_equal(H2, _pd())
    assert chk.damping == 0.0


@pytest.mark.parametrize("bad", [-0.1, "always", [0.1]])
def test_bad_damping_values(bad):
    with pytest.raises(ValueError, match="damping must be"):
        check_hessian(_pd(), damping=bad)


def test_non_symmetric_and_non_finite_raise():
    H = _pd()
    H[0, 1] += 1.0
    with pytest.raises(ValueError, match="not symmetric"):
        check_hessian(H, name="Hs")
    for bad in (np.nan, np.inf):
        H = _pd()
        H[2, 2] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            check_hessian(H)
    with pytest.raises(ValueError, match="square"):
        check_hessian(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="square"):
        check_hessian(np.zeros(3))


def test_tiny_asymmetry_is_symmetrised():
    H = _pd()
    H[0, 1] += 1e-15
    H2, _ = check_hessian(H)
    np.testing.assert_array_equal(H2, H2.T)


# ---------------------------------------------------------------------------------- through the builders

def _energy_identity(problem, W, H, rng):
    sp = problem.space
    for _ in range(5):
        V = rng.integers(0, 2, size=sp.shape).astype(np.uint8)
        V = np.where(sp.fixed_mask, sp.fixed_value, V).astype(np.uint8)
        dW = sp.dequantize(V) - W
        direct = np.einsum("rc,cd,rd->r", dW, H, dW)
        np.testing.assert_allclose(problem.energies(problem.from_rounding(V)), direct, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("grid", [Grid(bits=3), Grid(bits=4, scheme="asymmetric", granularity="tensor"),
                                  Grid(bits=2, scale_method="output-mse")])
def test_covariance_problem_with_singular_H_keeps_energy_identity(grid, caplog):
    rng = np.random.default_rng(0)
    W = rng.normal(size=(4, 6))
    H = _singular(6, 2, seed=1)
    caplog.set_level(logging.INFO, logger=LOGGER)
    prob = covariance_problem(W, H, grid)
    assert prob.meta["condition"] == float("inf")
    assert prob.meta["damping"] == 0
    assert prob.meta["h_status"] == "singular"
    np.testing.assert_array_equal(prob.A, H)
    _energy_identity(prob, W, H, rng)
    assert any("singular" in r.getMessage() for r in caplog.records)


def test_covariance_problem_with_non_psd_H_records_damping(caplog):
    rng = np.random.default_rng(1)
    W = rng.normal(size=(3, 5))
    H = _non_psd()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    prob = covariance_problem(W, H, Grid(bits=3), layer="conv7")
    assert prob.meta["damping"] > 0
    assert prob.meta["h_status"] == "non-psd"
    assert prob.meta["layer"] == "conv7"
    lmin = np.linalg.eigvalsh(H)[0]
    assert prob.meta["damping"] == pytest.approx(-lmin + 0.01 * np.mean(np.diag(H)), rel=1e-12)
    H_damped = H + prob.meta["damping"] * np.eye(5)
    np.testing.assert_allclose(prob.A, H_damped, rtol=0, atol=1e-15)
    _energy_identity(prob, W, H_damped, rng)  # the energy is the loss under the damped H
    assert any("conv7" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    with pytest.raises(ValueError, match="positive semi-definite"):
        covariance_problem(W, H, Grid(bits=3), damping=None)
