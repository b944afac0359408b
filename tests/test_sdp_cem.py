"""The `sdp` (SDP + Goemans-Williamson rounding) and `cem` (cross-entropy method) solvers."""
import numpy as np
import pytest

import qubo_round.solvers.cem  # noqa: F401  (registration)
import qubo_round.solvers.sdp  # noqa: F401  (registration)
from qubo_round.builders import covariance_problem
from qubo_round.grid import Grid
from qubo_round.problem import DenseQUBO, LayerQUBO
from qubo_round.solvers import CapabilityError, ParameterError, describe, get_solver
from qubo_round.solvers.conformance import check_solver
from qubo_round.solvers.sdp import hyperplane_round


def _optimum(p):
    return get_solver("exact").solve(p).best_energies


def _dense(seed, n):
    rng = np.random.default_rng(seed)
    Q = rng.normal(size=(n, n))
    return DenseQUBO(Q=(Q + Q.T) / 2)


def _small_layer(seed, rows=6, cols=12, bits=3):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(rows, cols))
    X = rng.normal(size=(cols, 300))
    X[: cols // 3] *= 3.0  # some correlated, uneven inputs
    X[1] += X[0]
    return covariance_problem(W, X @ X.T / 300, Grid(bits=bits, scale_method="mse"))


@pytest.mark.parametrize("name", ["sdp", "cem", "sdp/fast", "cem/quick"])
def test_conformance(name):
    check_solver(name)


def test_registered_and_described():
    d = describe("sdp")
    assert d["required_modules"] == [] and d["max_variables"] is None  # only its scs/clarabel backends need cvxpy (extra)
    assert "cem" in describe("cem")["name"]


def test_sdp_reaches_optimum_on_most_small_problems():
    hits = 0
    for seed in range(10):
        p = _dense(seed, 16)
        r = get_solver("sdp").solve(p, seed=seed)
        opt = _optimum(p)
        assert (r.lower_bound <= opt + 1e-9 * (1 + np.abs(opt))).all()
        assert (r.lower_bound <= r.best_energies + 1e-9).all()
        hits += bool(np.allclose(r.best_energies, opt, rtol=1e-9, atol=1e-9))
    assert hits >= 8


def test_sdp_layer_bound_and_optimum():
    p = _small_layer(0)
    opt = _optimum(p)
    r = get_solver("sdp").solve(p, seed=0)
    assert r.lower_bound.shape == (p.rows,) and r.info["sdp_value"].shape == (p.rows,)
    assert (r.lower_bound <= opt + 1e-9 * (1 + np.abs(opt))).all()
    np.testing.assert_allclose(r.best_energies, opt, rtol=1e-9, atol=1e-12)


def test_sdp_tight_relaxation_rounds_to_optimum_without_polish():
    d = np.random.default_rng(4).normal(size=10)
    p = DenseQUBO(Q=np.diag(d))
    r = get_solver("sdp", polish=False, hyperplanes=1).solve(p, seed=0)
    assert r.energy == pytest.approx(np.minimum(d, 0).sum())
    assert r.lower_bound[0] == pytest.approx(r.energy, rel=1e-6, abs=1e-6)


def test_hyperplane_round_fixes_the_homogenising_sign():
    # V with one column: v_0 = -1 and v_i = -1 for "x_i = 1": every hyperplane gives the same x.
    V = np.array([[-1.0], [-1.0], [1.0], [-1.0]])
    X, E = hyperplane_round(V, np.zeros((3, 3)), 0.0, 20, np.random.default_rng(0))
    assert X.tolist() == [[1, 0, 1]] and E.tolist() == [0.0]


def test_cem_reaches_optimum_on_small_layers():
    for seed in range(3):
        p = _small_layer(seed)
        r = get_solver("cem").solve(p, seed=seed)
        np.testing.assert_allclose(r.best_energies, _optimum(p), rtol=1e-9, atol=1e-12)


def test_cem_without_polish_and_start():
    p = _small_layer(5)
    opt = _optimum(p)
    r = get_solver("cem", polish=False).solve(p, seed=1)
    assert r.info["iterations"] >= 1 and r.info["stop"] in ("converged", "patience", "iterations")
    assert r.info["cem_energy"] == pytest.approx(r.energy)
    best = get_solver("exact").solve(p).best
    r2 = get_solver("cem", polish=False, start_weight=1.0, iterations=3).solve(p, seed=1, start=best)
    np.testing.assert_allclose(r2.best_energies, opt, rtol=1e-9, atol=1e-12)  # never worse than start


def test_sdp_start_is_a_candidate():
    p = _dense(11, 14)
    best = get_solver("exact").solve(p).best
    r = get_solver("sdp", hyperplanes=1, candidates=1, polish=False).solve(p, seed=0, start=best)
    assert r.samples.shape[0] == 2
    assert r.energy == pytest.approx(_optimum(p)[0])


def test_time_limits():
    rng = np.random.default_rng(0)
    B = rng.normal(size=(60, 60))
    p = LayerQUBO(A=B @ B.T / 60, scale=np.ones(40), linear=rng.normal(size=(40, 60)), offset=np.zeros(40),
                  fixed_mask=np.zeros((40, 60), bool), fixed_value=np.zeros((40, 60), np.uint8))
    r = get_solver("sdp").solve(p, seed=0, time_limit=0.05)
    assert r.status == "time_limit"
    assert np.isfinite(r.lower_bound).all()  # rows not reached carry the eigenvalue bound
    # one CEM iteration cannot converge from p = 0.5 (alpha = 0.3), so the deadline stops it
    r = get_solver("cem", iterations=10**6, patience=0).solve(p, seed=0, time_limit=1e-6)
    assert r.status == "time_limit" and r.info["iterations"] == 1


def test_too_many_variables_and_bad_params():
    p = DenseQUBO(Q=np.eye(40))
    with pytest.raises(CapabilityError, match="at most 30 free variables"):
        get_solver("sdp", max_variables=30).solve(p)
    with pytest.raises(CapabilityError, match="at most 150"):
        get_solver("sdp", backend="clarabel").solve(DenseQUBO(Q=np.eye(151)))
    for kw in ({"hyperplanes": 0}, {"backend": "mosek"}, {"candidates": 0}, {"max_variables": 2.5}):
        with pytest.raises(ValueError):
            get_solver("sdp", **kw)
    for kw in ({"population": 0}, {"elite": 0.0}, {"elite": 1.5}, {"alpha": 0.0}, {"alpha": 2.0},
               {"eps": 0.5}, {"iterations": -1}, {"patience": -2}, {"start_weight": 1.2}):
        with pytest.raises(ValueError):
            get_solver("cem", **kw)
    with pytest.raises(ParameterError):
        get_solver("cem", temperature=1.0)
