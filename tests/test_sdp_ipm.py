"""The interior-point SDP backend (qubo_round.sdp_ipm) and the row-parallel sdp_rows."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qubo_round.bounds import certify, homogenise, sdp_bound, sdp_rows
from qubo_round.problem import DenseQUBO, LayerQUBO
from qubo_round.sdp_ipm import solve_maxcut_sdp
from qubo_round.solvers import get_solver


def _dense(seed, n):
    rng = np.random.default_rng(seed)
    Q = rng.normal(size=(n, n))
    return DenseQUBO(Q=(Q + Q.T) / 2, offset=np.array([rng.normal()]))


def _ill_layer(seed, rows, n, rank):
    """Rows of a covariance family whose H has rank ``rank`` < n plus a tiny ridge: the badly
    conditioned kind real layers give (collinear inputs)."""
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(n, rank))
    A = B @ B.T / rank + 1e-6 * np.eye(n)
    u = rng.uniform(size=(rows, n))  # fractional positions: E_k(v) = s^2 (v - u)^T A (v - u)
    s = rng.uniform(0.5, 2.0, rows)
    lin = -2.0 * s[:, None] ** 2 * (u @ A)
    off = s ** 2 * np.einsum("ri,ij,rj->r", u, A, u)
    return LayerQUBO(A=A, scale=s, linear=lin, offset=off, fixed_mask=np.zeros((rows, n), bool),
                     fixed_value=np.zeros((rows, n), np.uint8))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 30))
def test_ipm_primal_feasible_and_gap_closed(seed, n):
    M, _ = homogenise(_dense(seed, n).matrix(0))
    C = M / np.abs(M).sum(axis=1).max()
    X, y, info = solve_maxcut_sdp(C)
    assert info["status"] == "optimal"
    np.testing.assert_allclose(np.diag(X), 1.0, atol=1e-12)
    lam_x = float(np.linalg.eigvalsh(X)[0])
    assert lam_x > -1e-9
    # weak duality with a certified y: <C, X> >= certified bound, and the two meet at the optimum.
    # X is PSD only up to rounding: a negative eigenvalue lam_x lets <C, X> undershoot the SDP
    # optimum by up to n |lam_x| ||C||_2 (seed 4684, n 4: 1.4e-11)
    lb = certify(C, y)
    val = float(np.sum(C * X))
    assert lb <= val + n * max(0.0, -lam_x) * np.linalg.norm(C, 2) + 1e-12
    assert val - lb <= 1e-7 * (1 + abs(val))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 16))
def test_ipm_bound_valid_and_equal_to_bm(seed, n):
    p = _dense(seed, n)
    opt = get_solver("exact").solve(p).best_energies[0]
    ipm = sdp_bound(p, 0, backend="ipm")
    bm = sdp_bound(p, 0, backend="bm")
    assert ipm.bound <= opt + 1e-9 * (1 + abs(opt))
    # the same SDP: the certified values agree to the solvers' accuracy
    assert ipm.bound == pytest.approx(bm.bound, rel=1e-6, abs=1e-6)


def test_ipm_certifies_more_than_bm_on_badly_conditioned_rows():
    """Where L-BFGS on the factor crawls, the interior point reaches the SDP optimum: its
    certified bound is at least Burer-Monteiro's (both valid: below the exact optimum)."""
    p = _ill_layer(0, 3, 20, rank=5)
    opt = get_solver("exact").solve(p).best_energies
    ipm = [r.bound for r in sdp_rows(p, np.arange(3), backend="ipm")]
    bm = [r.bound for r in sdp_rows(p, np.arange(3), backend="bm")]
    assert np.all(np.array(ipm) <= opt + 1e-9 * (1 + np.abs(opt)))
    assert np.all(np.array(ipm) >= np.array(bm) - 1e-9 * (1 + np.abs(opt)))
    assert np.all(np.array(ipm) > -np.inf)


def test_sdp_rows_independent_of_company_and_threads():
    p = _ill_layer(1, 5, 25, rank=8)
    alone = sdp_rows(p, np.array([3]), threads=1)[0].bound
    together = sdp_rows(p, np.array([0, 3, 4]), threads=2)
    assert together[1].bound == pytest.approx(alone, rel=1e-12, abs=1e-15)
    assert [r.free.size for r in together] == [25, 25, 25]


def test_sdp_rows_rejects_bad_rows_and_backend():
    p = _dense(0, 5)
    with pytest.raises(IndexError, match="row 1 out of range"):
        sdp_rows(p, np.array([1]))
    with pytest.raises(ValueError, match="unknown SDP backend"):
        sdp_rows(p, np.array([0]), backend="mosek")


def test_lanczos_steps_reach_the_dense_steps_optimum():
    """From n = 400 on the step lengths come from Lanczos: the same SDP value as the dense path
    (both to the requested gap 1e-8), a primal feasible X and a dual y that certifies."""
    p = _ill_layer(3, 1, 420, 60)
    M, _ = homogenise(p.matrix(0))
    C = M / np.abs(M).sum(axis=1).max()
    runs = [solve_maxcut_sdp(C, tol=1e-8, lanczos_from=k) for k in (0, 10**9)]
    vals = []
    for X, y, info in runs:
        assert info["status"] == "optimal"
        np.testing.assert_allclose(np.diag(X), 1.0, atol=1e-12)
        assert np.linalg.eigvalsh(X)[0] > -1e-9
        vals.append(certify(C, y))
    assert abs(vals[0] - vals[1]) <= 2e-8 * (1 + abs(vals[1]))
