"""Our solvers as dimod samplers (solvers/as_sampler.py): the dimod sampler API, energies from the
model itself, both vartypes and any labels, optimal where the solver is exact, warm starts."""
import numpy as np
import pytest

from qubo_round.solvers import available_solvers
from hypothesis import given, settings
from hypothesis import strategies as st

import dimod
from dimod.testing import assert_sampler_api

from qubo_round.solvers.as_sampler import SolverSampler


def _bqm(seed, n, vartype):
    rng = np.random.default_rng(seed)
    labels = [f"v{i}" for i in range(n)]  # string labels, not 0..n-1
    lin = {v: float(rng.integers(-5, 6)) for v in labels}
    quad = {(labels[i], labels[j]): float(rng.integers(-5, 6)) for i in range(n) for j in range(i + 1, n)
            if rng.random() < 0.5}
    return dimod.BinaryQuadraticModel(lin, quad, float(rng.normal()), vartype)


@pytest.mark.parametrize("spec", available_solvers())
def test_sampler_api(spec):
    """Every registered solver, composites included, behind dimod's Sampler API."""
    assert_sampler_api(SolverSampler(spec))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 10), spin=st.booleans())
def test_exact_solver_finds_dimods_ground_state_in_the_models_vartype(seed, n, spin):
    bqm = _bqm(seed, n, dimod.SPIN if spin else dimod.BINARY)
    ss = SolverSampler("exact").sample(bqm, seed=0)
    assert ss.vartype is bqm.vartype and set(ss.variables) == set(bqm.variables)
    assert ss.record.sample.dtype == np.int8
    allowed = {-1, 1} if spin else {0, 1}
    assert set(np.unique(ss.record.sample)) <= allowed
    # energies are the model's own
    np.testing.assert_allclose(ss.record.energy, bqm.energies(ss), atol=1e-9)
    ground = dimod.ExactSolver().sample(bqm).first.energy
    assert ss.first.energy == pytest.approx(ground, abs=1e-9)


def test_warm_start_and_bad_initial_states():
    bqm = _bqm(3, 8, dimod.SPIN)
    best = dimod.ExactSolver().sample(bqm).first.sample
    ss = SolverSampler("greedy").sample(bqm, initial_states=best)
    assert ss.first.energy == pytest.approx(bqm.energy(best))
    two = dimod.SampleSet.from_samples_bqm([best, best], bqm)
    with pytest.raises(ValueError, match="one state"):
        SolverSampler("greedy").sample(bqm, initial_states=two)


def test_bad_solver_or_parameters_refused_at_construction():
    from qubo_round.solvers import UnknownSolverError
    with pytest.raises(UnknownSolverError):
        SolverSampler("no-such-solver")
    with pytest.raises(ValueError):
        SolverSampler("its", sweeps=0)


def test_empty_model():
    ss = SolverSampler("its").sample(dimod.BinaryQuadraticModel({}, {}, 1.5, dimod.BINARY))
    assert len(ss.variables) == 0 and ss.first.energy == 1.5
