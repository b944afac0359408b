"""The polish and portfolio composites (solvers/composite.py)."""
import numpy as np
import pytest

from qubo_round.builders import covariance_problem
from qubo_round.grid import Grid
from qubo_round.solvers import CapabilityError, get_solver
from qubo_round.solvers.conformance import check_solver
from qubo_round.solvers.greedy import polish


def _layer(seed=0, rows=6, cols=16, samples=40):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(samples, cols))
    return covariance_problem(rng.normal(size=(rows, cols)), X.T @ X / samples, Grid(bits=2))


@pytest.mark.parametrize("spec", [get_solver("polish", solver="stochastic/single"),
                                  get_solver("portfolio", solvers=("greedy", "stochastic"), params=({}, {"k": 4})),
                                  get_solver("portfolio", solvers=("exact", "greedy"))])
def test_conformance(spec):
    check_solver(spec)


def test_polish_is_the_descent_of_the_inner_samples():
    p = _layer()
    r = get_solver("polish", solver="stochastic/best100").solve(p, seed=3)
    assert r.samples.shape[0] == 100 and r.info["solver_energy"] >= r.energy
    # the same as running the inner solver with the composite's derived seed, then the polish
    rs = np.random.default_rng(3)
    inner = get_solver("stochastic/best100").solve(p, seed=int(rs.integers(0, 2**31 - 1)))
    np.testing.assert_array_equal(r.samples, polish(p, inner.samples))
    assert np.all(r.energies <= inner.energies + 1e-12)


def test_one_way_to_polish_another_solver():
    """greedy polishes from nearest, floor, random or a given start; another solver's output goes
    through the composite (or a chain), and greedy's start names a solver no more."""
    p = _layer(4)
    with pytest.raises(ValueError, match="composite: get_solver\\('polish', solver='stochastic'\\)"):
        get_solver("greedy", start="stochastic")
    inner = get_solver("stochastic").solve(p, seed=0)
    chained = get_solver("greedy").solve(p, start=inner.best)  # what the chain 'stochastic>greedy' runs
    np.testing.assert_array_equal(chained.best, polish(p, inner.best))


def test_polish_keeps_an_exact_inner_result_and_its_bound():
    p = _layer(1, cols=10)
    r = get_solver("polish", solver="exact").solve(p)
    assert r.status == "optimal"
    np.testing.assert_allclose(r.lower_bound, get_solver("exact").solve(p).best_energies)


def test_portfolio_takes_each_rows_best_member_with_the_portfolio_seed():
    p = _layer(2)
    specs = ("greedy/random8", "stochastic/best100", "anneal")
    r = get_solver("portfolio", solvers=specs).solve(p, seed=5)
    alone = [get_solver(s).solve(p, seed=5) for s in specs]
    want = np.min([a.best_energies for a in alone], axis=0)
    np.testing.assert_allclose(r.best_energies, want)
    assert [m["solver"] for m in r.info["members"]] == list(specs)
    np.testing.assert_allclose([m["energy"] for m in r.info["members"]], [a.energy for a in alone])
    # ties go to the earlier member
    first = np.argmin([a.best_energies for a in alone], axis=0)
    for k in range(p.rows):
        np.testing.assert_array_equal(r.best[k], alone[first[k]].best[k])


def test_portfolio_with_an_exact_member_is_optimal_and_checks_its_members():
    p = _layer(3, cols=10)
    r = get_solver("portfolio", solvers=("greedy", "exact")).solve(p)
    assert r.status == "optimal"
    with pytest.raises(ValueError, match="one dict per solver"):
        get_solver("portfolio", solvers=("greedy", "exact"), params=({},))
    with pytest.raises(ValueError, match="at least one"):
        get_solver("portfolio", solvers=())
    from qubo_round.instances import load_instance
    with pytest.raises(CapabilityError, match="portfolio member 'nearest'"):
        get_solver("portfolio", solvers=("greedy", "nearest")).solve(load_instance("bqp50-1"))


def test_chain_forwards_device_and_threads_to_the_stages_that_have_them():
    c = get_solver("chain/gptq-adaround", threads=2, device="cpu")
    gptq, ada = c.stages
    # threads to the threaded stage only: GPTQ keeps its single BLAS thread
    assert (gptq.params.threads, ada.params.threads, ada.params.device) == (1, 2, "cpu")
    assert ada.params.iterations == get_solver("adaround/warm").params.iterations  # the stage's preset kept
    assert c.batches_groups  # a relaxation stage: the pipeline stacks row groups for it
    assert not get_solver("chain", solvers=("gptq", "its")).batches_groups
    assert c.threaded and not get_solver("chain", solvers=("gptq", "its")).threaded
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        get_solver("chain", threads=0)


def test_chain_gptq_adaround_starts_from_gptq_and_never_ends_above_it():
    p = _layer(seed=4, rows=8, cols=24)
    r = get_solver("chain/gptq-adaround").solve(p, seed=0)
    g = get_solver("gptq/in-order").solve(p, seed=0)
    assert [s["solver"] for s in r.info["stages"]] == ["gptq/in-order", "adaround/warm"]
    assert r.info["stages"][0]["energy"] == pytest.approx(g.energy)
    # keep=False (a warm start): the last stage's samples only, not GPTQ's kept beside them
    assert r.samples.shape[0] == 1 and r.info["stages"][1]["energy"] == pytest.approx(r.energy)
    kept = get_solver("chain", solvers=("gptq/in-order", "adaround/warm")).solve(p, seed=0)
    assert kept.energy <= min(g.energy, r.energy) + 1e-12  # keep=True: never worse than a stage


def test_the_pipeline_gives_its_threads_to_threaded_solvers_and_chains_only():
    from qubo_round.pipeline.run import _solver_for
    chain = _solver_for("chain/reference-adaround", {}, "cpu", threads=2)
    assert chain.params.threads == 2 and chain.stages[1].params.threads == 2
    assert chain.stages[0].params.threads == 1  # GPTQ keeps its single BLAS thread
    assert _solver_for("adaround", {}, "cpu", threads=2).params.threads == 2
    assert _solver_for("adaround", {"threads": 1}, "cpu", threads=2).params.threads == 1  # the layer's setting wins
    assert _solver_for("gptq/in-order", {}, "cpu", threads=2).params.threads == 1
