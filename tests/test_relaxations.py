"""The continuous relaxations (AdaRound, sigmoid annealing, STE) and their shared objective."""
import functools
import time

import numpy as np
import pytest
import torch

import qubo_round.relaxations.adaround as adaround
import qubo_round.relaxations.sigmoid_anneal  # noqa: F401  (registers "sigmoid-anneal")
import qubo_round.relaxations.ste  # noqa: F401  (registers "ste")
from qubo_round.builders import covariance_problem
from qubo_round.grid import Grid
from qubo_round.relaxations.objective import Adam, RelaxedObjective, quadratic_split
from qubo_round.solvers import CapabilityError, get_solver
from qubo_round.solvers.conformance import canned_problems, check_solver

TORCH_SOLVERS = ("adaround", "sigmoid-anneal", "ste")


@functools.lru_cache(maxsize=1)
def digits_conv1():
    import qubo_round.zoo
    from qubo_round.extract import layer_problems
    bundle = qubo_round.zoo.load_model("digits")
    return layer_problems(bundle.model, "conv1", bundle.calibration(256, 0), Grid(bits=3))[0]


def small_layer(seed=0, rows=5, cols=12):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(rows, cols))
    W[0, 0] = 6.0  # clipped: a fixed variable
    X = rng.normal(size=(cols, 100))
    return W, X @ X.T / 100, covariance_problem(W, X @ X.T / 100, Grid(bits=3))


@pytest.mark.parametrize("name", TORCH_SOLVERS)
def test_conformance(name):
    check_solver(get_solver(name, iterations=200))


def test_relaxed_objective_is_the_reconstruction_loss():
    """The covariance form's continuous objective is tr(dW H dW^T) of W_tilde = b + s h."""
    W, H, p = small_layer()
    obj = RelaxedObjective(p, torch.device("cpu"), torch.float64)
    h = np.where(p.fixed_mask, p.fixed_value, np.random.default_rng(1).random(p.shape))
    dW = p.space.b + p.space.s[:, None] * h - W
    np.testing.assert_allclose(obj.energies(obj.tensor(h)), np.einsum("rc,cd,rd->r", dW, H, dW), rtol=1e-10)
    X = p.apply_fixed(np.random.default_rng(2).integers(0, 2, p.shape))
    np.testing.assert_allclose(obj.energies(obj.tensor(X)), p.energies(X), rtol=1e-10)


def test_gradient_matches_autograd():
    for p in canned_problems().values():
        obj = RelaxedObjective(p, torch.device("cpu"), torch.float64)
        h = obj.hold_fixed(obj.tensor(np.random.default_rng(0).random(p.shape))).requires_grad_(True)
        v, g = obj.value_and_grad(h)
        (auto,) = torch.autograd.grad(v.sum(), h)
        np.testing.assert_allclose(g.detach().numpy(), (auto * obj.free).numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose((obj.grad(h) * obj.free).detach().numpy(), g.detach().numpy(), rtol=1e-12)


def test_dense_split_is_convex_and_exact_on_binary_points():
    p = canned_problems()["dense-random"]
    sp = quadratic_split(p)
    assert np.linalg.eigvalsh(sp.P)[0] > -1e-9 and sp.shift > 0
    X = np.random.default_rng(0).integers(0, 2, (20, 1, p.n)).astype(float)
    E = np.einsum("src,cd,srd->sr", X, sp.P, X) + (X * sp.lin).sum(-1) + sp.offset
    np.testing.assert_allclose(E, p.energies(X.astype(np.uint8)), rtol=1e-10, atol=1e-10)


def test_adam_matches_torch_adam():
    x0 = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = torch.linspace(-1, 1, 24, dtype=torch.float64).reshape(4, 6)
    ours, ref = x0.clone(), x0.clone().requires_grad_(True)
    opt, topt = Adam(ours, 0.05), torch.optim.Adam([ref], lr=0.05)
    for _ in range(50):
        opt.step(2 * (ours - target) ** 3)
        topt.zero_grad()
        ((ref - target) ** 4 / 2).sum().backward()
        topt.step()
    np.testing.assert_allclose(ours.numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_rectified_sigmoid():
    h = torch.tensor([0.0, 0.1, 0.5, 0.999, 1.0], dtype=torch.float64)
    back, _, _ = adaround.rectified_sigmoid(adaround.inverse_rectified_sigmoid(h))
    np.testing.assert_allclose(back.numpy(), h.numpy(), atol=1e-12)
    _, dh, raw = adaround.rectified_sigmoid(torch.tensor([-3.0, 0.0, 3.0], dtype=torch.float64))
    assert dh[0] == 0 and dh[2] == 0 and dh[1] == pytest.approx(1.2 * 0.25)  # zero where clipped


def test_freeze_check_changes_nothing(monkeypatch):
    """Stopping once every h is clipped and momentum cannot unclip gives the full run's result."""
    _, _, p = small_layer(3)
    s = get_solver("adaround", iterations=1500, lr=0.1)
    early = s.solve(p)
    assert early.info["frozen_at"] is not None
    monkeypatch.setattr(adaround, "FREEZE_CHECK", 10**9)
    full = s.solve(p)
    assert full.info["frozen_at"] is None and full.info["iterations_done"] == 1500
    np.testing.assert_array_equal(early.samples, full.samples)


@pytest.mark.parametrize("name", TORCH_SOLVERS)
def test_cuda_device(name):
    _, _, p = small_layer()
    if torch.cuda.is_available():
        assert get_solver(name, device="cuda", iterations=50).solve(p).info["device"].startswith("cuda")
    else:
        for device in ("cuda", "cuda:0"):
            with pytest.raises(CapabilityError, match="CUDA"):
                get_solver(name, device=device).solve(p)
    assert get_solver(name, device="auto", iterations=5).solve(p).samples.shape == (1, *p.shape)
    with pytest.raises(ValueError, match="device"):
        get_solver(name, device="tpu")


@pytest.mark.parametrize("name", TORCH_SOLVERS)
def test_time_limit(name):
    _, _, p = small_layer()
    t0 = time.perf_counter()
    r = get_solver(name, iterations=10**7).solve(p, time_limit=0.3)
    assert time.perf_counter() - t0 < 2.0
    assert r.status == "time_limit" and 0 < r.info["iterations_done"] < 10**7


def test_threads_setting_is_restored():
    _, _, p = small_layer()
    before = torch.get_num_threads()
    get_solver("ste", iterations=5, threads=1).solve(p)
    assert torch.get_num_threads() == before


def test_digits_conv1_adaround_near_optimal():
    p = digits_conv1()
    near = get_solver("nearest").solve(p).energy
    opt = get_solver("exact").solve(p).energy
    ada = get_solver("adaround/fast").solve(p, seed=0)
    assert ada.energy < 0.6 * near
    assert ada.energy <= 1.05 * opt
    assert ada.info["soft_fraction"] == 0.0  # the regulariser decided every variable


def test_digits_conv1_other_relaxations_beat_nearest():
    p = digits_conv1()
    near = get_solver("nearest").solve(p).energy
    assert get_solver("ste").solve(p).energy <= get_solver("nearest").solve(p).energy  # starts there
    assert get_solver("ste").solve(p).energy < 0.6 * near
    assert get_solver("sigmoid-anneal").solve(p).energy < 0.6 * near


def test_plain_sigmoid_variant():
    """``rectified=False`` (Table 3's plain sigmoid): a valid, deterministic rounding that improves
    on nearest; the default stays the rectified sigmoid; the data form refuses it clearly."""
    p = digits_conv1()
    assert get_solver("adaround").params.rectified is True
    plain = get_solver("adaround/plain-sigmoid", iterations=1500, lr=0.1)
    assert plain.params.rectified is False
    r = plain.solve(p, seed=0)
    assert r.info["frozen_at"] is None  # the plain sigmoid never clips: no early stop
    assert r.energy < 0.8 * get_solver("nearest").solve(p).energy
    np.testing.assert_array_equal(r.samples, plain.solve(p, seed=1).samples)
    with pytest.raises(ValueError, match="rectified"):
        get_solver("adaround", rectified="no")
    from qubo_round.pipeline.data_form import data_form_params
    with pytest.raises(ValueError, match="rectified sigmoid only"):
        data_form_params("adaround", {"rectified": False})
