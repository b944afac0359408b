"""The iterated tabu search, the branch and bound, and the chain composite."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qubo_round.builders import covariance_problem
from qubo_round.grid import Grid
from qubo_round.instances import best_known, load_instance
from qubo_round.problem import DenseQUBO
from qubo_round.solvers import ParameterError, get_solver
from qubo_round import lattice
from qubo_round.lattice import row_lattice
from qubo_round.solvers.composite import Chain
from qubo_round.solvers.greedy import steepest_descent


def layer(seed: int, rows: int, cols: int, bits: int = 2, dead: int = 0, collinear: bool = False):
    """A covariance layer problem; ``dead`` input features are always zero (zero rows and columns
    of H), ``collinear`` makes H nearly singular (a feature repeated with tiny noise)."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(rows, cols))
    X = rng.normal(size=(cols, 4 * cols)) * rng.uniform(0.2, 2.0, size=(cols, 1))
    if collinear and cols > 2:
        X[1] = X[0] + 1e-3 * rng.normal(size=X.shape[1])
    X[cols - dead:] = 0.0
    return covariance_problem(W, X @ X.T / X.shape[1], Grid(bits=bits))


# --------------------------------------------------------------------------- branch and bound

@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), cols=st.integers(1, 18), bits=st.integers(2, 4),
       dead=st.integers(0, 2), collinear=st.booleans())
def test_bnb_equals_exact_on_layer_rows(seed, cols, bits, dead, collinear):
    p = layer(seed, 3, cols, bits, dead=min(dead, cols - 1), collinear=collinear)
    r = get_solver("bnb", incumbent=None).solve(p, seed=0)
    e = get_solver("exact").solve(p)
    tol = 1e-9 * (1 + np.abs(e.best_energies))
    assert r.status == "optimal"
    np.testing.assert_allclose(r.best_energies, e.best_energies, rtol=1e-9, atol=1e-9)
    assert (r.lower_bound <= e.best_energies + tol).all()
    assert (r.lower_bound >= e.best_energies - tol).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 14))
def test_bnb_equals_exact_on_general_qubos(seed, n):
    rng = np.random.default_rng(seed)
    Q = rng.integers(-20, 21, size=(n, n)).astype(float)
    fm = rng.random((1, n)) < 0.2
    p = DenseQUBO(Q=Q, offset=np.array([rng.normal()]), fixed_mask=fm,
                  fixed_value=rng.integers(0, 2, size=(1, n)).astype(np.uint8))
    r = get_solver("bnb").solve(p, seed=1)
    np.testing.assert_allclose(r.best_energies, get_solver("exact").solve(p).best_energies, rtol=1e-9, atol=1e-9)


def test_bnb_lattice_form_equals_the_energy():
    p = layer(3, 2, 12, dead=2)
    rng = np.random.default_rng(0)
    for k in range(p.rows):
        lat = row_lattice(p, k)
        for _ in range(5):
            y = rng.integers(0, 2, size=len(lat.u))
            x = p.apply_fixed(np.zeros(p.shape, np.uint8))[k]
            x[lat.decided >= 0] = lat.decided[lat.decided >= 0]
            x[lat.free] = y
            X = p.apply_fixed(np.zeros(p.shape, np.uint8))
            X[k] = x
            r = lat.R @ (y - lat.u)
            assert r @ r + lat.beta == pytest.approx(p.energies(X)[k], rel=1e-9, abs=1e-9)


def test_bnb_stopped_by_its_time_limit_reports_a_valid_gap(monkeypatch):
    p = layer(5, 2, 60, collinear=True)
    full = get_solver("bnb", incumbent=None).solve(p, seed=0)
    assert full.status == "optimal"
    monkeypatch.setattr(lattice, "CHUNK_VISITS", 50)  # time checks every 50 nodes: the cut comes early
    cut = get_solver("bnb", incumbent=None, time_per_row=1e-4).solve(p, seed=0)
    assert cut.status == "time_limit"
    tol = 1e-9 * (1 + np.abs(full.best_energies))
    assert (cut.lower_bound <= full.best_energies + tol).all()
    assert (cut.best_energies >= full.best_energies - tol).all()
    assert (cut.lower_bound <= cut.best_energies).all()


def test_lower_bound_combines_bnb_proofs_with_sdp_and_eig_where_it_stops(monkeypatch):
    from qubo_round.bounds import eig_bound, lower_bound
    p = layer(8, 3, 22, collinear=True)
    opt = get_solver("exact").solve(p).best_energies
    tol = 1e-9 * (1 + np.abs(opt))
    b = lower_bound(p, exact_max_free=10)
    assert b.method == "exact" and b.info["proven"].all()
    np.testing.assert_allclose(b.values, opt, rtol=1e-9, atol=1e-9)
    monkeypatch.setattr(lattice, "CHUNK_VISITS", 1)
    cut = lower_bound(p, exact_max_free=10, bnb_seconds=1e-6)
    assert not cut.info["proven"].any() and set(cut.info["row_methods"]) <= {"sdp", "eig"}
    assert (cut.values <= opt + tol).all()
    assert (cut.values >= eig_bound(p) - tol).all()


# --------------------------------------------------------------------------- iterated tabu search

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), cols=st.integers(2, 40), dead=st.integers(0, 3))
def test_its_is_never_worse_than_steepest_descent_from_its_start(seed, cols, dead):
    p = layer(seed, 4, cols, dead=min(dead, cols - 1))
    x0 = p.apply_fixed((p.prior >= 0.5).astype(np.uint8))
    down, _ = steepest_descent(p, x0[None])
    r = get_solver("its", sweeps=5).solve(p, seed=0, start=x0)
    opt_floor = get_solver("bnb", incumbent=None).solve(p).best_energies
    tol = 1e-9 * (1 + np.abs(opt_floor))
    assert (r.best_energies <= p.energies(down[0]) + tol).all()
    assert (r.best_energies >= opt_floor - tol).all()


def test_its_never_moves_dead_inputs_and_rows_do_not_influence_each_other():
    p = layer(11, 6, 30, dead=4)
    inert = p.inert
    assert inert[:, -4:].all() and not inert[:, :-4].any()
    start = p.apply_fixed(np.ones(p.shape, np.uint8))
    r = get_solver("its", sweeps=50).solve(p, seed=7, start=start)
    moved = r.best != start
    assert not (moved & inert).any()
    assert moved.any()
    for k in (0, 3, 5):
        alone = get_solver("its", sweeps=50).solve(p.select_rows(np.array([k])), seed=7, start=start[k:k + 1])
        assert np.array_equal(alone.best[0], r.best[k])


def test_inert_variables_are_the_zero_columns_and_fixing_them_keeps_every_energy():
    from qubo_round.problem import QUBOFamily
    p = layer(12, 3, 10, dead=3)
    generic = QUBOFamily.inert.fget(p)  # from the dense Q_k of every row
    assert np.array_equal(p.inert, generic) and generic[:, -3:].all()
    X = np.random.default_rng(0).integers(0, 2, size=(5, *p.shape)).astype(np.uint8)
    q = p.with_inert_fixed(X[0])
    Y = q.apply_fixed(X)
    np.testing.assert_allclose(q.energies(Y), p.energies(Y), rtol=1e-12, atol=1e-12)
    r = get_solver("tabu", timeout_ms=5).solve(p, seed=0, start=p.apply_fixed(X[0]))
    moved = r.samples != p.apply_fixed(X[0])[None]
    assert not (moved & p.inert[None]).any()


def test_its_is_deterministic_and_makes_its_whole_move_budget(qubo_data):
    p = load_instance("orlib/bqp100.txt#1", data_dir=qubo_data)
    a = get_solver("its", sweeps=3).solve(p, seed=1)
    b = get_solver("its", sweeps=3).solve(p, seed=1)
    assert np.array_equal(a.samples, b.samples)
    assert a.info["moves"][0] == 300


def test_its_reaches_best_known_on_all_of_bqp50(qubo_data):
    # integer coefficients: every energy is exact in float64, so the search is the same on any CPU
    bk = best_known(qubo_data)
    for k in range(1, 11):
        p = load_instance(f"orlib/bqp50.txt#{k}", data_dir=qubo_data)
        r = get_solver("its", sweeps=200).solve(p, seed=0)
        assert p.objective(r.energy) == bk[p.meta["name"]], p.meta["name"]


def test_its_honours_and_uses_its_time_limit():
    p = layer(2, 8, 120)
    r = get_solver("its").solve(p, seed=0, time_limit=0.5)
    assert r.status == "feasible"
    assert 0.4 <= r.info["solve_seconds"] <= 2.0
    r2 = get_solver("its", sweeps=1e6).solve(p, seed=0, time_limit=0.3)
    assert r2.status == "time_limit"


@pytest.mark.parametrize("bad", [{"sweeps": 0}, {"tenure": 0}, {"perturb": (0.5, 0.1)}, {"init": "best"},
                                 {"pool": True}])
def test_its_rejects_bad_parameters(bad):
    with pytest.raises(ValueError):
        get_solver("its", **bad)


# --------------------------------------------------------------------------- chain composite

def test_chain_is_no_worse_than_its_stages_and_keeps_their_bounds():
    p = layer(4, 5, 20)
    c = get_solver("greedy>bnb")
    assert isinstance(c, Chain) and c.params.solvers == ("greedy", "bnb")
    r = c.solve(p, seed=0)
    g = get_solver("greedy").solve(p, seed=0)
    assert (r.best_energies <= g.best_energies + 1e-12).all()
    assert r.status == "optimal" and r.lower_bound is not None
    assert [s["solver"] for s in r.info["stages"]] == ["greedy", "bnb"]
    with pytest.raises(ParameterError, match="chain"):
        get_solver("greedy>its", sweeps=3)
    with pytest.raises(ParameterError, match="chain"):
        get_solver("chain", solvers=("chain", "its"))


# --------------------------------------------------------------------------- its, torch backend

def test_its_torch_backend_passes_the_conformance_kit_and_reaches_bqp50(qubo_data):
    from qubo_round.solvers.conformance import check_solver
    check_solver(get_solver("its", backend="torch", sweeps=20))
    bk = best_known(qubo_data)
    for k in (1, 4, 9):  # the three bqp50 instances the numba kernel needed the most moves for
        p = load_instance(f"orlib/bqp50.txt#{k}", data_dir=qubo_data)
        r = get_solver("its", backend="torch", sweeps=200).solve(p, seed=0)
        assert p.objective(r.energy) == bk[p.meta["name"]], p.meta["name"]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), cols=st.integers(2, 30), dead=st.integers(0, 2))
def test_its_torch_backend_is_never_worse_than_descent_and_keeps_dead_inputs(seed, cols, dead):
    p = layer(seed, 3, cols, dead=min(dead, cols - 1))
    x0 = p.apply_fixed((p.prior >= 0.5).astype(np.uint8))
    down, _ = steepest_descent(p, x0[None])
    r = get_solver("its", backend="torch", sweeps=5).solve(p, seed=1, start=x0)
    tol = 1e-9 * (1 + np.abs(p.energies(down[0])))
    assert (r.best_energies <= p.energies(down[0]) + tol).all()
    assert not ((r.best != x0) & p.inert).any()


def test_its_device_is_checked_before_any_work():
    import torch
    with pytest.raises(ValueError, match="device"):
        get_solver("its", device="cuda")  # the numba kernel runs on the CPU only
    if not torch.cuda.is_available():
        from qubo_round.solvers import CapabilityError
        with pytest.raises(CapabilityError, match="CUDA"):
            get_solver("its/gpu").solve(layer(0, 2, 5))


def test_toroidal_grid_generator_and_its_on_the_bipartite_torus():
    from qubo_round.instances import cut_value, toroidal_grid
    p = toroidal_grid(6, 8)
    assert p.n == 48 and len(p.meta["edges"]) == 96 and p.meta["optimum"] == 96.0
    x = (np.add.outer(np.arange(6), np.arange(8)) % 2).ravel().astype(np.uint8)  # the checkerboard
    assert p.objective(p.energy(x[None])) == cut_value(p.meta["edges"], x) == 96.0
    r = get_solver("its", sweeps=200).solve(p, seed=0)
    assert p.objective(r.energy) == 96.0
    q = toroidal_grid(5, 7, weights="pm1", seed=3)
    assert "optimum" not in q.meta and set(q.meta["edges"][:, 2]) == {-1.0, 1.0}
    y = np.random.default_rng(0).integers(0, 2, size=q.n).astype(np.uint8)
    assert q.objective(q.energy(y[None])) == cut_value(q.meta["edges"], y)
    with pytest.raises(ValueError, match="rows and cols"):
        toroidal_grid(2, 5)
