"""The shared-diagonal box bound (qubo_round.box_bound): validity, tightness, errors, use in lower_bound."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qubo_round.bounds import lower_bound, sdp_rows
from qubo_round.box_bound import box_bound, shared_diagonal
from qubo_round.builders import covariance_problem
from qubo_round.grid import Grid
from qubo_round.problem import DenseQUBO, LayerQUBO
from qubo_round.solvers import get_solver


def _optimum(p):
    return get_solver("exact").solve(p).best_energies


def _covariance_layer(seed, rows, cols, samples, bits=2):
    """A layer problem as the pipeline builds it: nearly singular H (samples < cols), clipping."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(samples, cols)) @ rng.normal(size=(cols, cols)) / np.sqrt(cols)
    W = rng.normal(size=(rows, cols)) * 0.5
    return covariance_problem(W, X.T @ X / samples, Grid(bits=bits), damping=0.0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 4), n=st.integers(1, 12),
       nfix=st.integers(0, 4), rank=st.integers(1, 24), spread=st.sampled_from([1e-3, 1.0, 1e3]))
def test_box_bound_below_optimum(seed, rows, n, nfix, rank, spread):
    """Valid for every row: any PSD or indefinite shared A, any linear term, fixed variables."""
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(n, rank))
    A = B @ B.T / rank - rng.uniform(0, 0.5) * np.eye(n)  # may be indefinite
    fm = np.zeros((rows, n), bool)
    for k in range(rows):
        fm[k, rng.choice(n, size=min(nfix, n), replace=False)] = True
    p = LayerQUBO(A=A, scale=rng.uniform(0.2, 2.0, rows) * spread, linear=rng.normal(size=(rows, n)) * spread**2,
                  offset=rng.normal(size=rows), fixed_mask=fm, fixed_value=rng.integers(0, 2, size=(rows, n)))
    opt = _optimum(p)
    b = box_bound(p, max_iter=300, check_every=50)
    assert np.all(b.values <= opt + 1e-9 * (1 + np.abs(opt)))
    # A - Diag(d) is PSD and sum(d) is at least the uniform shift's n lambda_min(A)
    S = A - np.diag(b.d)
    assert np.linalg.eigvalsh(S)[0] >= -1e-12 * max(1.0, np.abs(A).max())
    assert b.d.sum() >= n * np.linalg.eigvalsh(A)[0] - 1e-6 * (1 + np.abs(A).sum())


def test_exact_on_a_diagonal_matrix():
    """A diagonal: the convexified rows are linear, the box minimum is a vertex, the bound exact."""
    rng = np.random.default_rng(0)
    n, rows = 10, 3
    p = LayerQUBO(A=np.diag(rng.uniform(0.1, 2.0, n)), scale=rng.uniform(0.5, 1.5, rows),
                  linear=rng.normal(size=(rows, n)), offset=rng.normal(size=rows),
                  fixed_mask=np.zeros((rows, n), bool), fixed_value=np.zeros((rows, n), np.uint8))
    np.testing.assert_allclose(box_bound(p).values, _optimum(p), rtol=1e-6, atol=1e-7)


def test_layer_bound_close_to_the_row_sdp_and_far_above_eig():
    """On covariance rows with a singular H (the case it is built for) the shared-diagonal bound
    is positive, at most the optimum, and within a factor of the per-row SDP bounds."""
    p = _covariance_layer(1, rows=8, cols=18, samples=10)
    opt = _optimum(p)
    box = box_bound(p).values
    sdp = np.array([r.bound for r in sdp_rows(p, np.arange(p.rows))])
    eig = lower_bound(p, "eig").values
    assert np.all(box <= opt + 1e-9 * (1 + opt))
    assert box.sum() > 0.5 * sdp.sum() > 0 > eig.sum()


def test_lower_bound_uses_it_beyond_sdp_max_free():
    p = _covariance_layer(2, rows=5, cols=28, samples=12)
    b = lower_bound(p, bnb_seconds=None, sdp_max_free=5)
    assert b.method == "box" and set(b.info["row_methods"]) <= {"box", "eig"} and "box" in b.info["row_methods"]
    assert np.all(b.values >= lower_bound(p, "eig").values)
    np.testing.assert_allclose(lower_bound(p, "box").values, box_bound(p).values)
    best = get_solver("bnb").solve(p).best_energies
    assert np.all(b.values <= best + 1e-9 * (1 + best))


def test_stops_on_rtol_and_time_limit_and_keeps_the_best():
    p = _covariance_layer(3, rows=6, cols=24, samples=10)
    d = shared_diagonal(p.A)
    assert box_bound(p, d=d, rtol=0.0, max_iter=150, check_every=100).iterations == 150
    long = box_bound(p, d=d, rtol=0.0, max_iter=2000, check_every=100)  # stops when nothing improves
    assert long.iterations <= 2000
    totals = [t for _, t in long.info["history"]]
    assert all(b >= a for a, b in zip(totals, totals[1:]))  # best-so-far per row, so monotone
    short = box_bound(p, d=d, rtol=0.0, max_iter=2000, check_every=100, time_limit=1e-9)
    assert short.iterations == 100
    assert box_bound(p, d=d, rtol=1e9, check_every=10).iterations == 20  # two slow checks in a row
    rows = box_bound(p, d=d, rows=np.array([4, 1]), rtol=0.0, max_iter=2000, check_every=100)
    np.testing.assert_allclose(rows.values, long.values[[4, 1]], rtol=1e-6)


def test_bad_input_is_refused():
    p = _covariance_layer(4, rows=2, cols=6, samples=3)
    rng = np.random.default_rng(0)
    dense = DenseQUBO(Q=np.eye(4), offset=np.zeros(1))
    with pytest.raises(ValueError, match="LayerQUBO"):
        box_bound(dense)
    per_row = LayerQUBO(A=np.stack([np.eye(3)] * 2), scale=np.ones(2), linear=rng.normal(size=(2, 3)),
                        offset=np.zeros(2), fixed_mask=np.zeros((2, 3), bool), fixed_value=np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="per-row A"):
        box_bound(per_row)
    with pytest.raises(ValueError, match="not certifiably PSD"):
        box_bound(p, d=np.full(6, 1e6))
    with pytest.raises(ValueError, match=r"\(6,\)"):
        box_bound(p, d=np.zeros(5))
    for kw, msg in (({"max_iter": 0}, "max_iter"), ({"max_iter": True}, "max_iter"), ({"check_every": 2.5}, "check_every"),
                    ({"rtol": -1.0}, "rtol"), ({"rtol": float("nan")}, "rtol"), ({"time_limit": 0}, "time_limit")):
        with pytest.raises(ValueError, match=msg):
            box_bound(p, **kw)
    with pytest.raises(IndexError, match="rows"):
        box_bound(p, rows=np.array([2]))
    with pytest.raises(ValueError, match="LayerQUBO"):
        lower_bound(dense, "box")
