"""Group-wise grids: one scale (and zero point) per row and group of input columns."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qubo_round.builders import asymmetric_problem, covariance_problem, full_hessian_problem, row_hessian_problem
from qubo_round.errors import CapabilityError
from qubo_round.grid import Grid, choose_qparams, rounding_space
from qubo_round.io import load_problem, save_problem
from qubo_round.problem import stack_rows
from qubo_round.solvers import get_solver
from qubo_round.split import quadratic_split


def _data(seed, rows=5, cols=13, m=60):
    rng = np.random.default_rng(seed)
    W = rng.standard_t(3, size=(rows, cols))
    X = rng.normal(size=(cols, m))
    Xh = X + 0.2 * np.sin(3 * X)
    return rng, W, X @ X.T / m, Xh @ Xh.T / m, Xh @ X.T / m


@pytest.mark.parametrize("kw, match", [
    (dict(group_size=0), "group_size"), (dict(group_size=-4), "group_size"), (dict(group_size=True), "group_size"),
    (dict(group_size=32, granularity="tensor"), "granularity='channel'"),
    (dict(group_size=32, scale_method="output-mse"), "output-mse"),
])
def test_bad_group_size_is_refused_by_name(kw, match):
    with pytest.raises(ValueError, match=match):
        Grid(**kw)


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
@pytest.mark.parametrize("method", ["minmax", "mse"])
def test_group_scales_are_the_per_channel_search_of_each_group(scheme, method):
    _, W, *_ = _data(1, rows=4, cols=11)
    g = 4
    s, z = choose_qparams(W, Grid(bits=3, scheme=scheme, scale_method=method, group_size=g))
    assert s.shape == z.shape == (4, 3)
    for j in range(3):
        sj, zj = choose_qparams(W[:, j * g:(j + 1) * g], Grid(bits=3, scheme=scheme, scale_method=method))
        np.testing.assert_array_equal(s[:, j], sj)
        np.testing.assert_array_equal(z[:, j], zj)
    # a group as wide as the row is the per-channel grid
    s1, _ = choose_qparams(W, Grid(bits=3, scheme=scheme, scale_method=method, group_size=11))
    np.testing.assert_array_equal(s1[:, 0], choose_qparams(W, Grid(bits=3, scheme=scheme, scale_method=method))[0])


def test_zero_group_is_exact_and_fixed():
    _, W, *_ = _data(2, rows=3, cols=8)
    W[1, 4:] = 0.0
    sp = rounding_space(W, Grid(bits=2, group_size=4))
    assert sp.fixed_mask[1, 4:].all()
    np.testing.assert_array_equal(sp.dequantize(sp.nearest())[1, 4:], 0.0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), g=st.sampled_from([1, 2, 4, 5, 13, 20]), bits=st.integers(2, 5),
       scheme=st.sampled_from(["symmetric", "asymmetric"]), method=st.sampled_from(["minmax", "mse"]))
def test_every_form_is_the_reconstruction_loss(seed, g, bits, scheme, method):
    rng, W, H, Hh, C = _data(seed)
    grid = Grid(bits=bits, scheme=scheme, scale_method=method, group_size=g, search_points=10)
    space = rounding_space(W, grid)
    V = space.nearest() ^ (rng.integers(0, 2, W.shape).astype(np.uint8) & ~space.fixed_mask)
    dW = space.dequantize(V) - W
    tol = dict(rtol=1e-9, atol=1e-12)
    cov = covariance_problem(W, H, space=space, damping=None)
    np.testing.assert_allclose(cov.energies(V), np.einsum("rc,cd,rd->r", dW, H, dW), **tol)
    Wh = space.dequantize(V)
    asym = asymmetric_problem(W, H, Hh, C, space=space, damping=None)
    direct = (np.einsum("rc,cd,rd->r", Wh, Hh, Wh) - 2 * np.einsum("rc,cd,rd->r", Wh, C, W)
              + np.einsum("rc,cd,rd->r", W, H, W))
    np.testing.assert_allclose(asym.energies(V), direct, rtol=1e-9, atol=1e-9 * np.abs(direct).max())
    Hr = H[None] * (1.0 + np.arange(W.shape[0]))[:, None, None]
    rowh = row_hessian_problem(W, Hr, space=space, damping=None)
    np.testing.assert_allclose(rowh.energies(V), np.einsum("rc,rcd,rd->r", dW, Hr, dW), **tol)
    Hf = np.kron(np.eye(W.shape[0]), H)
    full = full_hessian_problem(W, Hf, space=space, damping=None)
    np.testing.assert_allclose(full.energies(V.reshape(1, -1)), [dW.reshape(-1) @ Hf @ dW.reshape(-1)], **tol)
    # the column-scaled family agrees with its explicit matrices everywhere
    X = V.astype(np.float64)
    for p in (cov, rowh):
        assert p.column_scaled
        Q = np.stack([p.matrix(k) for k in range(p.rows)])
        np.testing.assert_allclose(p.matvec(X), np.einsum("rij,rj->ri", Q, X), rtol=1e-12, atol=1e-12 * np.abs(Q).max())
        np.testing.assert_allclose(p.diagonal, np.einsum("rii->ri", Q), rtol=1e-12, atol=0)
        r, i = np.arange(p.rows), rng.integers(0, p.n, p.rows)
        np.testing.assert_array_equal(p.row_columns(r, i), Q[r, :, i])
        np.testing.assert_allclose(p.with_row_matrices().energies(V), p.energies(V), **tol)
        # the relaxations' continuous form is exact on binary points
        sp = quadratic_split(p)
        Ph = sp.col * np.einsum("ij,rj->ri" if sp.shared else "rij,rj->ri", sp.P, sp.col * X)
        np.testing.assert_allclose(sp.a * (X * Ph).sum(1) + (sp.lin * X).sum(1) + sp.offset, p.energies(V), **tol)


def test_gptq_on_group_scales_is_gptq_on_the_row_matrices():
    """Shared ``A`` with per-column steps (the GPTQ loop in weight units) rounds exactly as GPTQ
    on each row's own matrix ``T A T`` (no damping, to compare the same factorisations)."""
    for seed in range(4):
        _, W, H, *_ = _data(10 + seed, rows=6, cols=24)
        p = covariance_problem(W, H, Grid(bits=3, group_size=8), damping=None)
        a = get_solver("gptq", percdamp=0.0).solve(p).best
        b = get_solver("gptq", percdamp=0.0).solve(p.with_row_matrices()).best
        np.testing.assert_array_equal(a, b)
        inorder = get_solver("gptq/in-order").solve(p)
        assert inorder.energy <= get_solver("nearest").solve(p).energy * 1.05


def test_solvers_without_column_scales_get_row_matrices_and_a_memory_limit():
    _, W, H, *_ = _data(3, rows=4, cols=10)
    p = covariance_problem(W, H, Grid(bits=3, group_size=4))
    anneal = get_solver("anneal")
    assert not anneal.column_scales and get_solver("adaround").column_scales
    exact = get_solver("exact").solve(p).best_energies
    np.testing.assert_allclose(anneal.solve(p, seed=0).best_energies, exact, rtol=1e-9)
    with pytest.raises(CapabilityError, match="per row for group-wise scales.*column scales"):
        p.with_row_matrices(max_bytes=1000, who="solver 'anneal'")


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_its_searches_column_scaled_rows_natively(backend):
    """The kernel's column-scaled moves keep the local fields exact: on rows up to 20 free
    variables it reaches the proven optimum, as on the same rows with explicit matrices."""
    _, W, H, *_ = _data(6, rows=6, cols=20)
    p = covariance_problem(W, H, Grid(bits=2, group_size=6))
    its = get_solver("its", backend=backend, sweeps=200)
    assert its.column_scales
    exact = get_solver("exact").solve(p).best_energies
    r = its.solve(p, seed=1)
    np.testing.assert_allclose(r.best_energies, exact, rtol=1e-9)
    np.testing.assert_allclose(its.solve(p.with_row_matrices(), seed=1).best_energies, exact, rtol=1e-9)


def test_group_space_round_trips_files_and_row_operations(tmp_path):
    _, W, H, *_ = _data(4, rows=5, cols=12)
    p = covariance_problem(W, H, Grid(bits=4, scheme="asymmetric", group_size=5))
    q = load_problem(save_problem(p, tmp_path / "g.npz"))
    assert q.space.group_size == 5 and q.column_scaled
    V = p.space.nearest()
    np.testing.assert_array_equal(q.energies(V), p.energies(V))
    np.testing.assert_array_equal(q.space.dequantize(V), p.space.dequantize(V))
    sub = p.select_rows(np.array([3, 1]))
    np.testing.assert_array_equal(sub.energies(V[[3, 1]]), p.energies(V)[[3, 1]])
    both = stack_rows([p, sub])
    np.testing.assert_allclose(both.energies(np.concatenate([V, V[[3, 1]]])),
                               np.concatenate([p.energies(V), p.energies(V)[[3, 1]]]), rtol=1e-12)
    per_row = covariance_problem(W, H, Grid(bits=4))
    with pytest.raises(ValueError, match="group sizes|column-scaled"):
        stack_rows([p, per_row])


def test_a_space_with_the_wrong_scale_shape_is_refused(tmp_path):
    _, W, H, *_ = _data(5, rows=3, cols=9)
    sp = rounding_space(W, Grid(bits=3, group_size=4))
    with pytest.raises(ValueError, match=r"must both be \(3, 3\)"):
        type(sp)(**{**sp.__dict__, "s": sp.s[:, :2], "z": sp.z[:, :2]})


def test_box_bound_certifies_column_scaled_rows():
    """The shared-diagonal box bound on group-wise rows: below the proven optimum of every row
    and far from trivial; lower_bound uses it for rows beyond the SDP's limit."""
    from qubo_round.bounds import lower_bound
    from qubo_round.box_bound import box_bound
    _, W, H, *_ = _data(7, rows=8, cols=18)
    p = covariance_problem(W, H, Grid(bits=2, group_size=5))
    opt = get_solver("exact").solve(p).best_energies
    b = box_bound(p)
    assert (b.values <= opt + 1e-9 * (1 + np.abs(opt))).all()
    assert b.values.sum() > 0.5 * opt.sum()  # a useful bound, not -inf or 0
    lb = lower_bound(p, "auto", exact_max_free=0, bnb_seconds=None, sdp_max_free=0)
    assert lb.method == "box" and (lb.values <= opt + 1e-9 * (1 + np.abs(opt))).all()
    np.testing.assert_array_less(b.values - 1e-9, lb.values + 1e-9 * np.abs(lb.values))
