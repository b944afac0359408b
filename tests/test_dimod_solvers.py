"""neal, tabu and the dimod adapter family: conformance, optima, warm starts, time limits, errors."""
import time

import numpy as np
import pytest

import qubo_round.solvers.dimod_adapter  # noqa: F401  (registers the "dimod:" family)
import qubo_round.solvers.neal  # noqa: F401  (registers "neal")
import qubo_round.solvers.tabu  # noqa: F401  (registers "tabu")
from qubo_round.problem import DenseQUBO, LayerQUBO
from qubo_round.solvers import CapabilityError, ParameterError, UnknownSolverError, get_solver
from qubo_round.solvers.conformance import canned_problems, check_solver


def small_layer(seed=0, rows=4, n=12):
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(n, n))
    fm = rng.random((rows, n)) < 0.2
    fm[2] = True  # a row with every variable fixed
    return LayerQUBO(A=B @ B.T / n, scale=rng.uniform(0.5, 2.0, rows), linear=rng.normal(size=(rows, n)),
                     offset=np.zeros(rows), fixed_mask=fm, fixed_value=np.ones((rows, n), np.uint8))


@pytest.mark.parametrize("name", ["neal", "tabu", "dimod:SteepestDescentSolver", "dimod:TabuSampler",
                                  "dimod:RandomSampler", "dimod:ExactSolver"])
def test_conformance(name):
    check_solver(name)


def test_conformance_dimod_reference_annealer():
    # dimod's own SimulatedAnnealingSampler is pure Python: check it with few sweeps (it takes no
    # seed; the adapter seeds the global random state per row, so it is still reproducible).
    s = get_solver("dimod:SimulatedAnnealingSampler", num_reads=2, num_sweeps=100)
    assert s.name == "dimod:SimulatedAnnealingSampler"
    check_solver(s)


@pytest.mark.parametrize("spec", ["neal", "neal/reads10", "tabu", "dimod:TabuSampler",
                                  "dimod:dwave.samplers.SimulatedAnnealingSampler"])
def test_reach_exact_optimum(spec):
    p = small_layer(1)
    opt = get_solver("exact").solve(p).best_energies
    r = get_solver(spec).solve(p, seed=3)
    np.testing.assert_allclose(r.best_energies, opt, rtol=1e-9, atol=1e-9)


def test_neal_returns_every_read_sorted():
    p = small_layer(2)
    r = get_solver("neal", num_reads=5, num_sweeps=50).solve(p, seed=0)
    assert r.samples.shape == (5, *p.shape)
    assert (np.diff(r.energies, axis=0) >= -1e-12).all()  # each row's reads sorted by energy


def test_neal_auto_beta_and_linear_schedule():
    p = small_layer(3)
    opt = get_solver("exact").solve(p).best_energies
    r = get_solver("neal", beta_range="auto", beta_schedule_type="linear", num_reads=4).solve(p, seed=0)
    np.testing.assert_allclose(r.best_energies, opt, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("spec", ["neal", "tabu", "dimod:SteepestDescentSolver"])
def test_warm_start_at_optimum(spec):
    p = small_layer(4)
    best = get_solver("exact").solve(p)
    kw = {"beta_range": (1e9, 1e10), "num_sweeps": 10} if spec == "neal" else {}
    r = get_solver(spec, **kw).solve(p, seed=0, start=best.best)
    np.testing.assert_allclose(r.best_energies, best.best_energies, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver, params, match", [
    ("neal", {"num_reads": 0}, "num_reads"),
    ("neal", {"num_sweeps": 1.5}, "num_sweeps"),
    ("neal", {"beta_range": (3.0, 1.0)}, "beta_range"),
    ("neal", {"beta_range": "cold"}, "beta_range"),
    ("neal", {"beta_schedule_type": "custom"}, "beta_schedule_type"),
    ("tabu", {"timeout_ms": 0}, "timeout_ms"),
    ("tabu", {"num_reads": -1}, "num_reads"),
    ("tabu", {"tenure": 0}, "tenure"),
])
def test_bad_parameters(solver, params, match):
    with pytest.raises(ValueError, match=match):
        get_solver(solver, **params)


def test_tabu_time_limit():
    rng = np.random.default_rng(0)
    Q = rng.normal(size=(8, 60, 60))
    p = LayerQUBO(A=Q @ np.swapaxes(Q, 1, 2), scale=np.ones(8), linear=rng.normal(size=(8, 60)),
                  offset=np.zeros(8), fixed_mask=np.zeros((8, 60), bool),
                  fixed_value=np.zeros((8, 60), np.uint8))
    t0 = time.perf_counter()
    r = get_solver("tabu", timeout_ms=1000).solve(p, seed=0, time_limit=0.4)
    assert r.status == "time_limit"
    assert time.perf_counter() - t0 < 4.0  # 8 rows x 1 s without the limit
    assert r.samples.shape == (1, 8, 60)


def test_neal_time_limit_leaves_valid_samples():
    rng = np.random.default_rng(1)
    Q = rng.normal(size=(200, 200))
    p = DenseQUBO(Q=Q + Q.T)
    t0 = time.perf_counter()
    r = get_solver("neal", num_reads=2000, num_sweeps=1000).solve(p, seed=0, time_limit=0.3)
    assert r.status == "time_limit"  # neal's interrupt_function stopped it between reads
    assert time.perf_counter() - t0 < 5.0
    assert 1 <= r.samples.shape[0] < 2000


def test_dimod_family_names_and_dotted_paths():
    s = get_solver("dimod:TabuSampler", num_reads=2, timeout=5)
    assert s.name == "dimod:TabuSampler"
    assert dict(s.params.kwargs) == {"num_reads": 2, "timeout": 5}
    d = get_solver("dimod:dwave.samplers.SteepestDescentSolver")
    assert d.name == "dimod:dwave.samplers.SteepestDescentSolver"
    p = canned_problems(0)["dense-random"]
    assert d.solve(p, seed=0).energies.shape[1:] == (1,)


def test_dimod_exact_solver_matches_exact():
    p = small_layer(5)
    np.testing.assert_allclose(get_solver("dimod:ExactSolver").solve(p).best_energies,
                               get_solver("exact").solve(p).best_energies, rtol=1e-9, atol=1e-9)
    with pytest.raises(CapabilityError, match="at most 24"):
        get_solver("dimod:ExactSolver").solve(DenseQUBO(Q=np.eye(30)))


def test_unknown_sampler_lists_where_it_looked():
    with pytest.raises(UnknownSolverError, match=r"dimod\.NoSuchSampler.*dwave\.samplers\.NoSuchSampler"):
        get_solver("dimod:NoSuchSampler")
    with pytest.raises(UnknownSolverError, match="not importable"):
        get_solver("dimod:no_such_pkg:Sampler")
    with pytest.raises(UnknownSolverError, match="not importable"):
        get_solver("dimod:dwave.no_such_module.Sampler")
    with pytest.raises(UnknownSolverError, match="not a sampler"):
        get_solver("dimod:numpy:ndarray")
    with pytest.raises(UnknownSolverError):
        get_solver("dimod:")


def test_unknown_sampler_kwarg_raises():
    with pytest.raises(ParameterError, match=r"no parameter\(s\) \['tenur'\]"):
        get_solver("dimod:TabuSampler", tenur=5)
    with pytest.raises(ParameterError, match="num_reads"):
        get_solver("dimod:ExactSolver", num_reads=3)
    with pytest.raises(ParameterError, match="set by the adapter"):
        get_solver("dimod:SteepestDescentSolver", seed=1)


def test_tabu_restarts_preset_is_reproducible():
    # the preset stops on a restart count, not on the clock: same seed, same samples, whatever
    # the load; a different seed may search differently
    p = small_layer(5)
    a = get_solver("tabu/restarts").solve(p, seed=3)
    b = get_solver("tabu/restarts").solve(p, seed=3)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert get_solver("tabu/restarts").params.num_restarts == 10


def test_dotted_specs_import_only_trusted_packages():
    import sys

    from qubo_round.solvers import UnknownSolverError
    from qubo_round.solvers.dimod_adapter import resolve_sampler
    sys.modules.pop("this", None)
    with pytest.raises(UnknownSolverError, match="not in the dimod / D-Wave packages.*dimod:this:Foo"):
        get_solver("dimod:this.Foo")
    assert "this" not in sys.modules  # nothing was imported
    assert resolve_sampler("dimod.reference.samplers.ExactSolver").__name__ == "ExactSolver"
    # an explicit module:Class is the user's request: imported, then checked for a sampler
    assert resolve_sampler("dimod:ExactSolver").__name__ == "ExactSolver"
    with pytest.raises(UnknownSolverError, match="not a sampler class"):
        resolve_sampler("json:JSONDecoder")
    assert get_solver("dimod:dimod:ExactSolver").name == "dimod:dimod:ExactSolver"
