"""The annealer's ``sparse`` backend (CSR Metropolis chains, numba): conformance, exact optima,
incremental fields and energies against the dense definitions, determinism, time limits."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qubo_round.solvers.anneal as anneal_mod
from qubo_round.instances import toroidal_grid
from qubo_round.solvers import get_solver
from qubo_round.solvers.anneal_sparse import anneal_sparse_chunk, exact_fields, seeds_for, sparse_form
from qubo_round.solvers.conformance import canned_problems, check_solver

from test_anneal import exact, family_of, layer_family

SPARSE = {"backend": "sparse", "num_reads": 8, "num_sweeps": 300}


def test_conformance_sparse():
    check_solver(get_solver("anneal", **SPARSE))


@pytest.mark.parametrize("kind", ["shared", "per-row", "zero-scale", "dense"])
def test_sparse_reaches_exact_optimum(kind):
    p = family_of(kind)
    r = get_solver("anneal", polish=False, **SPARSE).solve(p, seed=0)
    assert r.samples.shape == (8, *p.shape)
    assert not (p.fixed_mask & (r.samples != p.fixed_value)).any()
    np.testing.assert_allclose(r.best_energies, exact(p).best_energies, rtol=1e-9, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), per_row=st.booleans())
def test_incremental_fields_and_energies_stay_exact(seed, per_row):
    """After annealing sweeps the kernel's fields equal a fresh computation, its energies equal
    ``problem.energies`` of its states, and the kept best states have the kept best energies."""
    p = layer_family(seed % 1000, rows=3, n=12, per_row=per_row)
    rng = np.random.default_rng(seed)
    R = 2
    form = anneal_mod._form(p)
    sf = sparse_form(form.M, form.s2, form.h)
    X = np.ascontiguousarray(p.apply_fixed(rng.random((R, *p.shape)) < 0.5).reshape(R * p.rows, -1), np.uint8)
    row_of = np.tile(np.arange(p.rows), R)
    F = np.empty(X.shape)
    exact_fields(sf.start, sf.indices, sf.data, sf.diag, sf.s2, sf.group, row_of, X, F)
    E = (p.energies(X.reshape(R, p.rows, -1)) - p.offset).reshape(-1)
    bX, bE = X.copy(), E.copy()
    betas = anneal_mod.beta_schedule(np.tile([0.2, 3.0], (p.rows, 1)), 25, "geometric")
    anneal_sparse_chunk(sf.start, sf.indices, sf.data, sf.s2, sf.group, row_of, ~p.fixed_mask, betas, 0, 25,
                        X, F, E, bX, bE, seeds_for(rng, len(X)))
    F2 = np.empty(X.shape)
    exact_fields(sf.start, sf.indices, sf.data, sf.diag, sf.s2, sf.group, row_of, X, F2)
    np.testing.assert_allclose(F, F2, atol=1e-9)
    np.testing.assert_allclose(E, (p.energies(X.reshape(R, p.rows, -1)) - p.offset).reshape(-1), atol=1e-9)
    np.testing.assert_allclose(bE, (p.energies(bX.reshape(R, p.rows, -1)) - p.offset).reshape(-1), atol=1e-9)
    assert (bE <= E + 1e-12).all()
    assert not (p.fixed_mask[row_of] & (X != p.fixed_value[row_of])).any()


def test_sparse_deterministic_for_a_seed():
    p = toroidal_grid(6, 8, weights="pm1", seed=3)
    a = get_solver("anneal", **SPARSE).solve(p, seed=5)
    b = get_solver("anneal", **SPARSE).solve(p, seed=5)
    assert np.array_equal(a.samples, b.samples)


def test_sparse_unit_torus_reaches_the_all_edges_cut():
    """Unit weights on an even torus: bipartite, so the best cut takes every edge (known optimum)."""
    p = toroidal_grid(10, 12, weights="unit", seed=0)
    r = get_solver("anneal/sparse").solve(p, seed=0)
    np.testing.assert_allclose(-r.best_energies, [p.meta["optimum"]], rtol=1e-12)


def test_sparse_time_limit_cuts_the_run():
    p = toroidal_grid(30, 30, weights="pm1", seed=0)
    r = get_solver("anneal", backend="sparse", num_reads=4, num_sweeps=10**7).solve(p, seed=0, time_limit=0.5)
    assert r.status == "time_limit" and r.info["sweeps_done"] < 10**7
    assert r.samples.shape == (4, 1, 900)


def test_sparse_warm_start_at_optimum_stays_there():
    p = canned_problems(0)["layer-covariance"]
    best = exact(p)
    cold = get_solver("anneal", backend="sparse", num_reads=3, num_sweeps=20, beta_range=(1e9, 1e10), polish=False)
    r = cold.solve(p, seed=0, start=best.best)
    np.testing.assert_allclose(r.energies, np.broadcast_to(best.best_energies, r.energies.shape),
                               rtol=1e-12, atol=1e-12)
