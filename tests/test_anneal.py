"""The batched annealer: conformance, exact optima on small families, backends, warm starts,
time limits, parameter errors, and the kernel's internal invariants."""
import time

import numpy as np
import pytest

import qubo_round.solvers.anneal as anneal_mod  # noqa: F401  (registers "anneal")
from qubo_round.problem import DenseQUBO, LayerQUBO
from qubo_round.solvers import CapabilityError, ParameterError, get_solver
from qubo_round.solvers.conformance import canned_problems, check_solver

QUICK = {"num_reads": 4, "num_sweeps": 150}


def layer_family(seed: int, rows: int = 5, n: int = 14, per_row: bool = False, zero_scale: bool = False):
    """Random LayerQUBO: A PSD (shared or per row), some fixed variables, optionally a row with s = 0."""
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(rows, n, n) if per_row else (n, n))
    A = B @ np.swapaxes(B, -1, -2) / n
    scale = rng.uniform(0.2, 2.0, size=rows)
    if zero_scale:
        scale[1] = 0.0
    fm = rng.random((rows, n)) < 0.15
    fv = (rng.random((rows, n)) < 0.5).astype(np.uint8)
    return LayerQUBO(A=A, scale=scale, linear=rng.normal(size=(rows, n)), offset=rng.normal(size=rows),
                     fixed_mask=fm, fixed_value=fv)


def exact(p):
    return get_solver("exact").solve(p)


def test_conformance_numpy():
    check_solver("anneal")


def test_conformance_torch():
    check_solver(get_solver("anneal", backend="torch", **QUICK))


def family_of(kind: str):
    """The small families of the exact-optimum tests: a layer (shared, per-row or with a zero
    scale row) or a dense integer QUBO."""
    if kind == "dense":
        rng = np.random.default_rng(3)
        Q = rng.integers(-9, 10, size=(18, 18)).astype(float)
        return DenseQUBO(Q=Q + Q.T)
    return layer_family(1, per_row=kind == "per-row", zero_scale=kind == "zero-scale")


@pytest.mark.parametrize("kind", ["shared", "per-row", "zero-scale", "dense"])
def test_reaches_exact_optimum(kind):
    p = family_of(kind)
    opt = exact(p).best_energies
    r = get_solver("anneal", num_reads=8, num_sweeps=300).solve(p, seed=0)
    assert r.samples.shape == (8, *p.shape)
    np.testing.assert_allclose(r.best_energies, opt, rtol=1e-9, atol=1e-9)


def test_reaches_optimum_without_polish():
    p = layer_family(2, rows=6)
    opt = exact(p).best_energies
    r = get_solver("anneal", num_reads=8, num_sweeps=400, polish=False).solve(p, seed=1)
    np.testing.assert_allclose(r.best_energies, opt, rtol=1e-9, atol=1e-9)


def test_torch_backend_equal_quality():
    p = layer_family(4, rows=6, per_row=False)
    opt = exact(p).best_energies
    res = {b: get_solver("anneal", backend=b, num_reads=8, num_sweeps=300, polish=False).solve(p, seed=2)
           for b in ("numpy", "torch")}
    for b, r in res.items():
        np.testing.assert_allclose(r.best_energies, opt, rtol=1e-9, atol=1e-9, err_msg=b)
    assert abs(res["numpy"].energies.mean() - res["torch"].energies.mean()) < 0.05 * abs(opt).mean() + 1e-9


@pytest.mark.parametrize("name", ["dense-fixed", "layer-covariance", "layer-per-row"])
def test_warm_start_at_optimum_stays_there(name):
    p = canned_problems(0)[name]
    best = exact(p)
    cold = get_solver("anneal", num_reads=3, num_sweeps=20, beta_range=(1e9, 1e10), polish=False)
    r = cold.solve(p, seed=0, start=best.best)
    np.testing.assert_allclose(r.energies, np.broadcast_to(best.best_energies, r.energies.shape),
                               rtol=1e-12, atol=1e-12)


def test_time_limit_cuts_the_run():
    rng = np.random.default_rng(0)
    Q = rng.normal(size=(300, 300))
    p = DenseQUBO(Q=Q + Q.T)
    t0 = time.perf_counter()
    r = get_solver("anneal", num_reads=8, num_sweeps=10**6).solve(p, seed=0, time_limit=0.5)
    assert r.status == "time_limit"
    assert time.perf_counter() - t0 < 5.0  # generous: the machine may be busy
    assert r.info["sweeps_done"] < 10**6
    assert r.samples.shape == (8, 1, 300)


def test_all_reads_returned_and_chunking():
    p = layer_family(5, rows=4)
    r = get_solver("anneal", num_reads=6, num_sweeps=50, max_batch=8).solve(p, seed=0)
    assert r.samples.shape == (6, *p.shape)
    assert not (p.fixed_mask & (r.samples != p.fixed_value)).any()


@pytest.mark.parametrize("params, match", [
    ({"num_reads": 0}, "num_reads"),
    ({"num_sweeps": -5}, "num_sweeps"),
    ({"num_sweeps": 2.5}, "num_sweeps"),
    ({"beta_range": (2.0, 1.0)}, "beta_range"),
    ({"beta_range": (0.0, 1.0)}, "beta_range"),
    ({"beta_range": "hot"}, "beta_range"),
    ({"beta_schedule": "cubic"}, "beta_schedule"),
    ({"init": "nearest"}, "init"),
    ({"backend": "jax"}, "backend"),
    ({"device": "tpu"}, "device"),
    ({"device": "cuda"}, "cuda"),  # needs backend='torch'
    ({"dtype": "float16"}, "dtype"),
    ({"block": 0}, "block"),
    ({"update": "parallel"}, "update"),
    ({"threads": 0}, "threads"),
])
def test_bad_parameters_raise(params, match):
    with pytest.raises(ValueError, match=match):
        get_solver("anneal", **params)


def test_unknown_parameter_raises():
    with pytest.raises(ParameterError, match="no parameter"):
        get_solver("anneal", sweeps=10)


def test_cuda_without_cuda_is_a_capability_error():
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    s = get_solver("anneal", backend="torch", device="cuda")
    with pytest.raises(CapabilityError, match="CUDA"):
        s.solve(canned_problems(0)["dense-random"], seed=0)


def test_presets():
    for preset in ("fast", "thorough", "torch"):
        assert get_solver(f"anneal/{preset}").params.num_sweeps >= 1


def _kernel_pair(p, update_a, update_b, seed=0, sweeps=30, block=5, check_every=1):
    X0 = p.apply_fixed(np.random.default_rng(seed).random((3, *p.shape)) < 0.5)
    betas = anneal_mod.beta_schedule(anneal_mod.auto_beta_range(p, X0[:1]), sweeps, "linear")
    out = []
    for update in (update_a, update_b):
        ops = anneal_mod._NumpyOps("float64", np.random.default_rng(seed + 1))
        ops.check_every = check_every  # the GPU path tests convergence every few rounds
        X, done = anneal_mod.anneal_batch(anneal_mod._form(p), X0, p.fixed_mask, p.fixed_value, betas, ops,
                                          block=block, update=update)
        assert done == sweeps
        out.append(X)
    return out


@pytest.mark.parametrize("check_every", [1, 3])
@pytest.mark.parametrize("name", ["dense-fixed", "layer-covariance", "layer-per-row"])
def test_jacobi_blocks_equal_sequential_sweeps(name, check_every):
    a, b = _kernel_pair(canned_problems(1)[name], "jacobi", "sequential", check_every=check_every)
    assert np.array_equal(a, b)


def test_incremental_fields_stay_exact():
    cases = (layer_family(6, zero_scale=True), layer_family(7, per_row=True),
             canned_problems(0)["dense-fixed"])
    for p in cases:
        X0 = p.apply_fixed(np.random.default_rng(0).random((2, *p.shape)) < 0.5)
        betas = anneal_mod.beta_schedule(np.tile([0.5, 5.0], (p.rows, 1)), 20, "geometric")
        ops = anneal_mod._NumpyOps("float64", np.random.default_rng(1))
        a = anneal_mod._Annealer(anneal_mod._form(p), X0, p.fixed_mask, p.fixed_value, betas, ops,
                                 block=4, update="jacobi")
        for s in range(20):
            a.sweep(s)
        np.testing.assert_allclose(a.F, a.exact(), atol=1e-9)
        X = a.states()
        assert not (p.fixed_mask & (X != p.fixed_value)).any()


def test_beta_schedules():
    br = np.array([[0.1, 10.0], [1.0, 4.0]])
    g = anneal_mod.beta_schedule(br, 5, "geometric")
    lin = anneal_mod.beta_schedule(br, 5, "linear")
    np.testing.assert_allclose(g[[0, -1]], br.T)
    np.testing.assert_allclose(lin[[0, -1]], br.T)
    np.testing.assert_allclose(g[2], np.sqrt(br[:, 0] * br[:, 1]))
    np.testing.assert_allclose(lin[2], br.mean(1))
