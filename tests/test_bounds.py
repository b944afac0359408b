"""Lower bounds (qubo_round.bounds): validity against the exact optimum, tightness, method choice."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qubo_round.bounds import (certify, eig_bound, gap, homogenise, lower_bound, relative_gap,
                               sdp_bound)
from qubo_round.problem import DenseQUBO, LayerQUBO
from qubo_round.solvers import get_solver


def _optimum(p):
    return get_solver("exact").solve(p).best_energies


def _tol(opt):
    return 1e-9 * (1.0 + np.abs(opt))


def _dense(seed, n, nfix=0, scale=1.0):
    rng = np.random.default_rng(seed)
    Q = rng.normal(size=(n, n)) * scale
    fm = np.zeros((1, n), bool)
    fm[0, rng.choice(n, size=min(nfix, n), replace=False)] = True
    fv = rng.integers(0, 2, size=(1, n)).astype(np.uint8)
    return DenseQUBO(Q=(Q + Q.T) / 2, offset=np.array([rng.normal()]), fixed_mask=fm, fixed_value=fv)


def _layer(seed, rows, n, nfix=0, shared=True):
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(n, 2 * n)) if shared else rng.normal(size=(rows, n, 2 * n))
    A = B @ np.swapaxes(B, -1, -2) / (2 * n)
    fm = np.zeros((rows, n), bool)
    for k in range(rows):
        fm[k, rng.choice(n, size=min(nfix, n), replace=False)] = True
    return LayerQUBO(A=A, scale=rng.uniform(0.2, 2.0, rows), linear=rng.normal(size=(rows, n)),
                     offset=rng.normal(size=rows), fixed_mask=fm,
                     fixed_value=rng.integers(0, 2, size=(rows, n)))


def test_homogenise_identity():
    rng = np.random.default_rng(0)
    Q = rng.normal(size=(9, 9))
    Q = (Q + Q.T) / 2
    M, const = homogenise(Q, 1.25)
    assert np.allclose(M, M.T) and np.all(np.diag(M) == 0)
    X = rng.integers(0, 2, size=(50, 9)).astype(float)
    T = np.hstack([np.ones((50, 1)), 2 * X - 1])
    np.testing.assert_allclose(np.einsum("si,ij,sj->s", X, Q, X) + 1.25,
                               np.einsum("si,ij,sj->s", T, M, T) + const, atol=1e-12)
    # the global flip t -> -t leaves the energy unchanged (why s_0 = +1 can be imposed)
    np.testing.assert_allclose(np.einsum("si,ij,sj->s", T, M, T), np.einsum("si,ij,sj->s", -T, M, -T))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 9))
def test_certify_is_valid_for_any_y(seed, n):
    rng = np.random.default_rng(seed)
    M, const = homogenise(_dense(seed, n).matrix(0), 0.5)
    y = rng.normal(size=n + 1) * rng.choice([0.01, 1.0, 100.0])
    T = np.array(np.meshgrid(*[[-1.0, 1.0]] * (n + 1))).reshape(n + 1, -1).T
    brute = const + np.einsum("si,ij,sj->s", T, M, T).min()
    assert certify(M, y, const) <= brute + 1e-9 * (1 + abs(brute))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 11), nfix=st.integers(0, 3),
       scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_bounds_below_optimum_dense(seed, n, nfix, scale):
    p = _dense(seed, n, nfix, scale)
    opt = _optimum(p)
    assert (eig_bound(p, line_evals=0) <= opt + _tol(opt)).all()
    assert (eig_bound(p, steps=5) <= opt + _tol(opt)).all()
    assert sdp_bound(p, 0, seed=seed).bound <= opt[0] + _tol(opt[0])
    np.testing.assert_allclose(lower_bound(p).values, opt, rtol=1e-12, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 3), n=st.integers(1, 9),
       nfix=st.integers(0, 4), shared=st.booleans())
def test_bounds_below_optimum_layer(seed, rows, n, nfix, shared):
    p = _layer(seed, rows, n, nfix, shared)
    opt = _optimum(p)
    eig = eig_bound(p)
    sdp = lower_bound(p, "sdp", seed=seed).values
    assert (eig <= opt + _tol(opt)).all()
    assert (sdp <= opt + _tol(opt)).all()
    assert (sdp >= eig - 1e-6 * (1 + np.abs(eig))).all()  # SDP = max over y; eig = a few y


@pytest.mark.parametrize("backend", ["scs", "clarabel"])
def test_cvxpy_backends_valid_and_close_to_bm(backend):
    pytest.importorskip("cvxpy")
    p = _dense(3, 14, nfix=2)
    opt = _optimum(p)[0]
    ref = sdp_bound(p, 0)
    row = sdp_bound(p, 0, backend=backend)
    assert row.bound <= opt + _tol(opt)
    assert row.bound == pytest.approx(ref.bound, rel=1e-3, abs=1e-3)
    assert row.X.shape == (14 - 2 + 1,) * 2 and np.allclose(np.diag(row.X), 1, atol=1e-3)
    assert np.allclose(np.linalg.norm(row.V, axis=1), 1)


@pytest.mark.parametrize("seed", range(5))
def test_sdp_beats_eig_bound(seed):
    p = _dense(seed, 20)
    eig0 = eig_bound(p, line_evals=0)[0]
    eig = eig_bound(p)[0]
    row = sdp_bound(p, 0, seed=seed)
    assert eig >= eig0 - 1e-9
    assert row.bound > eig + 1e-3 * abs(eig)
    # the certificate loses almost nothing on the BM solution (dual nearly feasible)
    assert row.bound == pytest.approx(row.value, rel=1e-6, abs=1e-6)
    assert row.bound <= _optimum(p)[0] + 1e-9


def test_sdp_tight_on_diagonal_q():
    rng = np.random.default_rng(7)
    d = rng.normal(size=12)
    fm = np.zeros((1, 12), bool)
    fm[0, :2] = True
    p = DenseQUBO(Q=np.diag(d), offset=np.array([0.3]), fixed_mask=fm, fixed_value=np.ones((1, 12), np.uint8))
    opt = d[:2].sum() + np.minimum(d[2:], 0).sum() + 0.3
    assert _optimum(p)[0] == pytest.approx(opt)
    assert sdp_bound(p, 0).bound == pytest.approx(opt, rel=1e-6, abs=1e-6)
    assert sdp_bound(p, 0).bound <= opt + 1e-12
    assert eig_bound(p)[0] == pytest.approx(opt, rel=1e-6, abs=1e-6)  # y_a is the exact certificate here


def test_all_fixed_and_empty_rows():
    p = DenseQUBO(Q=np.array([[2.0, 1.0], [1.0, -3.0]]), offset=np.array([1.0]),
                  fixed_mask=np.ones((1, 2), bool), fixed_value=np.array([[1, 1]], np.uint8))
    e = p.energies(np.array([[1, 1]], np.uint8))[0]
    for method in ("exact", "sdp", "eig"):
        assert lower_bound(p, method).values[0] == pytest.approx(e)


def test_lower_bound_auto_method_choice():
    small = _dense(1, 20)
    b = lower_bound(small)
    assert b.method == "exact" and b.seconds >= 0
    np.testing.assert_allclose(b.values, _optimum(small))
    mid = _dense(2, 30)
    b = lower_bound(mid)  # beyond enumeration: the branch and bound proves it
    assert b.method == "exact" and b.info["row_methods"] == ["exact"]
    np.testing.assert_allclose(b.values, get_solver("bnb").solve(mid).best_energies, rtol=1e-9)
    b = lower_bound(mid, bnb_seconds=None)
    assert b.method == "sdp" and b.info["backend"] == "ipm"
    assert b.values[0] == pytest.approx(sdp_bound(mid, 0).bound, rel=1e-6)
    b = lower_bound(mid, bnb_seconds=None, sdp_max_free=25)
    assert b.method == "eig"
    np.testing.assert_allclose(b.values, eig_bound(mid))
    # the choice uses the largest row: fixing variables brings it back to exact
    fixed = _layer(3, 2, 30, nfix=8)
    assert lower_bound(fixed).method == "exact"
    assert lower_bound(fixed, exact_max_free=21, bnb_seconds=None).method == "sdp"
    assert b.total == pytest.approx(b.values.sum())


def test_lower_bound_incumbent_is_used_only_by_the_branch_and_bound():
    """A given incumbent (a rounding or a function of the problem) starts the branch and bound:
    the proven optimum is the same from any start; the function is not called where enumeration
    proves every row; a rounding of the wrong shape is refused by name."""
    mid = _layer(4, 3, 22)
    calls = []

    def inc(q):
        calls.append(q)
        return get_solver("its/fast").solve(q, seed=0).best
    plain = lower_bound(mid, "bnb")
    given_fn = lower_bound(mid, "bnb", incumbent=inc)
    given_x = lower_bound(mid, "bnb", incumbent=np.ones(mid.shape, np.uint8))
    assert len(calls) == 1 and calls[0] is mid
    for b in (given_fn, given_x):
        assert b.method == "exact"
        np.testing.assert_allclose(b.values, plain.values, rtol=1e-9, atol=1e-12)
    lower_bound(mid, incumbent=inc)  # auto: enumeration proves every row, no incumbent needed
    assert len(calls) == 1
    with pytest.raises(ValueError, match="incumbent"):
        lower_bound(mid, "bnb", incumbent=np.ones((2, 22), np.uint8))


def test_league_incumbent_gives_the_bounds_of_the_solver_bnb():
    """The league's reference bounds (lower_bound with its_incumbent) are those the solver bnb
    proves for itself at seed 0, bit for bit: the same first incumbent, the same search."""
    from qubo_round.bench.reference import its_incumbent
    p = _layer(7, 4, 30)
    np.testing.assert_array_equal(lower_bound(p, "bnb", incumbent=its_incumbent).values,
                                  get_solver("bnb").solve(p, seed=0).lower_bound)


def test_gap_helpers():
    assert gap(10.0, 8.0) == pytest.approx(2.0)
    assert relative_gap(10.0, 8.0) == pytest.approx(0.25)
    assert relative_gap(-8.0, -10.0) == pytest.approx(0.2)
    assert relative_gap(1.0, 0.0) == pytest.approx(1e12)
    np.testing.assert_allclose(relative_gap(np.array([2.0, 3.0]), np.array([1.0, 3.0])), [1.0, 0.0])


def test_bad_input_raises():
    p = _dense(0, 8)
    with pytest.raises(ValueError, match="method"):
        lower_bound(p, "magic")
    with pytest.raises(ValueError, match="backend"):
        sdp_bound(p, 0, backend="mosek")
    with pytest.raises(IndexError):
        sdp_bound(p, 1)
    with pytest.raises(ValueError, match="free variables"):
        sdp_bound(p, 0, max_free=5)
    with pytest.raises(ValueError, match="steps"):
        eig_bound(p, steps=-1)
    big = DenseQUBO(Q=np.eye(160))
    with pytest.raises(ValueError, match="Clarabel"):
        sdp_bound(big, 0, backend="clarabel")
