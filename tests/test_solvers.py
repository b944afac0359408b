"""Solver interface, registry, exact oracle, and the conformance kit on every registered solver."""
import time

import dimod
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qubo_round.convert import to_bqm
from qubo_round.builders import covariance_problem
from qubo_round.grid import Grid
from qubo_round.problem import DenseQUBO, LayerQUBO, stack_rows
from qubo_round.solvers import (TIMING_KEYS, CapabilityError, ParameterError, UnknownSolverError,
                                available_solvers, describe, get_solver)
from qubo_round.solvers.conformance import canned_problems, check_solver


#: Iteration-based solvers are checked with short runs; their own tests cover quality.
_SHORT = {"adaround": {"iterations": 200}, "sigmoid-anneal": {"iterations": 200}, "ste": {"iterations": 200}}


@pytest.mark.parametrize("name", available_solvers())
def test_conformance(name):
    check_solver(get_solver(name, **_SHORT.get(name, {})))


def test_builtin_solvers_registered():
    assert {"nearest", "floor", "ceil", "stochastic", "exact"} <= set(available_solvers())


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 16), seed=st.integers(0, 2**31 - 1), nfix=st.integers(0, 3))
def test_exact_equals_dimod_exact_solver(n, seed, nfix):
    rng = np.random.default_rng(seed)
    Q = rng.integers(-9, 10, size=(n, n)).astype(float)
    fm = np.zeros((1, n), bool)
    fm[0, rng.choice(n, size=min(nfix, n), replace=False)] = True
    fv = rng.integers(0, 2, size=(1, n)).astype(np.uint8)
    p = DenseQUBO(Q=Q, offset=np.array([rng.normal()]), fixed_mask=fm, fixed_value=fv)
    ours = get_solver("exact").solve(p)
    bqm = to_bqm(p)
    ref = dimod.ExactSolver().sample(bqm).first.energy if bqm.num_variables else bqm.offset
    assert ours.energy == pytest.approx(ref, rel=1e-12, abs=1e-9)
    assert ours.status == "optimal"
    assert ours.lower_bound[0] == pytest.approx(ours.energy)


def test_exact_never_worse_than_any_solver_on_layer_problems():
    p = canned_problems(5)["layer-covariance"]
    opt = get_solver("exact").solve(p).energy
    for name in available_solvers():
        r = get_solver(name, **_SHORT.get(name, {})).solve(p, seed=1)
        assert r.energy >= opt - 1e-12 * abs(opt), name


def test_exact_refuses_too_many_variables_quickly():
    p = DenseQUBO(Q=np.eye(200))
    t0 = time.perf_counter()
    with pytest.raises(CapabilityError, match=r"at most 24 free variables per row.*has 200"):
        get_solver("exact").solve(p)
    assert time.perf_counter() - t0 < 1.0  # refused up front, no enumeration started
    with pytest.raises(ValueError, match="max_free"):
        get_solver("exact", max_free=40)


def test_exact_handles_24_free_variables():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(24, 24))
    p = DenseQUBO(Q=A + A.T)
    r = get_solver("exact").solve(p)
    # local optimality certificate: no single flip improves the optimum
    x = r.best[0].astype(float)
    Q = p.Q
    for i in range(24):
        y = x.copy()
        y[i] = 1 - y[i]
        assert y @ Q @ y >= x @ Q @ x - 1e-9


def test_exact_time_limit_reports_status():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(40, 18, 18))
    p = LayerQUBO(A=A + A.transpose(0, 2, 1), scale=np.ones(40), linear=np.zeros((40, 18)),
                  offset=np.zeros(40), fixed_mask=np.zeros((40, 18), bool),
                  fixed_value=np.zeros((40, 18), np.uint8))
    r = get_solver("exact").solve(p, time_limit=1e-6)
    assert r.status == "time_limit"
    assert np.isnan(r.lower_bound).any()


def test_unknown_solver_and_parameters_raise():
    with pytest.raises(UnknownSolverError, match="unknown solver 'anneel'.*exact"):
        get_solver("anneel")
    with pytest.raises(ParameterError, match=r"no parameter\(s\) \['kk'\].*valid parameters: \['k'\]"):
        get_solver("stochastic", kk=3)
    with pytest.raises(UnknownSolverError, match="no preset 'best7'"):
        get_solver("stochastic/best7")
    with pytest.raises(ValueError, match="positive integer"):
        get_solver("stochastic", k=0)


def test_presets_and_overrides():
    assert get_solver("stochastic/best1000").params.k == 1000
    assert get_solver("stochastic/best1000", k=3).params.k == 3
    info = describe("exact")
    assert info["exact"] and info["max_variables"] == 24 and info["available"]
    assert describe("nearest")["baseline"] and not info["baseline"]


def test_result_info_and_best_per_row():
    p = canned_problems(0)["layer-covariance"]
    r = get_solver("stochastic", k=50).solve(p, seed=3)
    assert r.samples.shape == (50, *p.shape)
    assert set(TIMING_KEYS) <= set(r.info) and r.info["seed"] == 3 and r.info["params"] == {"k": 50}
    np.testing.assert_allclose(p.energies(r.best), r.energies.min(0))
    assert r.energy == pytest.approx(r.energies.min(0).sum())


def test_nearest_needs_a_layer_problem():
    with pytest.raises(CapabilityError, match="needs a layer rounding problem"):
        get_solver("nearest").solve(DenseQUBO(Q=np.eye(3)))


def test_start_is_validated():
    p = canned_problems(0)["dense-random"]
    with pytest.raises(ValueError, match="trailing shape"):
        get_solver("floor").solve(p, start=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="time_limit"):
        get_solver("floor").solve(p, time_limit=0)


def test_nan_problem_is_refused():
    with pytest.raises(ValueError, match="NaN or inf"):
        DenseQUBO(Q=np.array([[np.nan]]))


def test_solver_returning_bad_sample_is_caught():
    from qubo_round.solvers import Solver, SolverError

    class Broken(Solver):
        name = "broken"

        def sample(self, problem, *, rng, start, time_limit):
            return 1 - problem.fixed_value, {}

    with pytest.raises(SolverError, match="violates a fixed variable"):
        Broken().solve(canned_problems(0)["dense-fixed"])


def test_select_rows_keeps_the_rounding_space():
    p = canned_problems(0)["layer-covariance"]
    q = p.select_rows(np.array([0, 3]))
    assert q.space is not None and q.space.shape == (2, p.n)
    sub, full = get_solver("nearest").solve(q), get_solver("nearest").solve(p)
    np.testing.assert_allclose(sub.energies[0], full.energies[0][[0, 3]])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), sizes=st.lists(st.integers(1, 4), min_size=1, max_size=4))
def test_stack_rows_keeps_every_row_energy(seed, sizes):
    """Stacking row families (the groups of a grouped conv) keeps each row's energy for every
    assignment, and the rounding spaces line up row by row."""
    rng = np.random.default_rng(seed)
    n = 5
    problems = []
    for r in sizes:
        W = rng.normal(size=(r, n))
        X = rng.normal(size=(n, 30))
        problems.append(covariance_problem(W, X @ X.T / 30, Grid(bits=2)))
    stacked = stack_rows(problems)
    assert stacked.shape == (sum(sizes), n) and not stacked.shared and stacked.A.flags["C_CONTIGUOUS"]
    X = stacked.apply_fixed(rng.integers(0, 2, size=(3, *stacked.shape)).astype(np.uint8))
    parts = np.split(X, np.cumsum(sizes)[:-1], axis=1)
    expected = np.concatenate([p.energies(x) for p, x in zip(problems, parts)], axis=-1)
    np.testing.assert_allclose(stacked.energies(X), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(stacked.space.W, np.concatenate([p.space.W for p in problems]))


def test_stack_rows_refuses_mismatched_columns():
    rng = np.random.default_rng(0)
    a = covariance_problem(rng.normal(size=(2, 3)), np.eye(3), Grid(bits=2))
    b = covariance_problem(rng.normal(size=(2, 4)), np.eye(4), Grid(bits=2))
    with pytest.raises(ValueError, match="same number of columns"):
        stack_rows([a, b])
    with pytest.raises(ValueError, match="at least one"):
        stack_rows([])


def test_stacked_groups_use_one_matrix_per_group():
    """A stack of equal-sized groups is multiplied group by group (one (n, n) matrix each); the
    product equals the per-row one. Unequal groups, or rows selected from a stack, fall back to
    one matrix per row."""
    import torch

    from qubo_round.relaxations.objective import RelaxedObjective
    rng = np.random.default_rng(1)
    def group(r, n=6):
        X = rng.normal(size=(n, 40))
        return covariance_problem(rng.normal(size=(r, n)), X @ X.T / 40, Grid(bits=3))
    equal = stack_rows([group(3) for _ in range(4)])
    assert equal.meta["row_groups"] == [3, 3, 3, 3]
    obj = RelaxedObjective(equal, torch.device("cpu"), torch.float64)
    assert obj.groups == (4, 3) and obj.P.shape == (4, 6, 6)
    h = torch.rand(12, 6, dtype=torch.float64)
    per_row = torch.einsum("rc,rcd->rd", h, torch.as_tensor(equal.A))
    torch.testing.assert_close(obj.matvec(h), per_row)
    assert RelaxedObjective(stack_rows([group(2), group(3)]), torch.device("cpu"), torch.float64).groups is None
    sub = equal.select_rows(np.arange(12)[::-1])
    assert "row_groups" not in sub.meta
    assert RelaxedObjective(sub, torch.device("cpu"), torch.float64).groups is None
