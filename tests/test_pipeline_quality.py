"""Quality of the whole-network pipeline and correctness of AdaRound's data form.

The end-to-end test quantizes the digits CNN at 3 bits with 256 calibration images and the short
``adaround/fast`` preset (2k iterations per layer; ~15 s on one busy CPU core). Reference numbers
on that setting (CPU, torch 2.13): float 99.07%, nearest 95.00%, adaround/fast 99.07% with total
reconstruction loss 1.74 against 25.5 for nearest rounding of the same layers (7%); GPTQ 3.62.
"""
import numpy as np
import pytest
import torch

from qubo_round.grid import Grid, rounding_space
from qubo_round.pipeline import QuantConfig, quantize_model
from qubo_round.pipeline.config import LayerOverride
from qubo_round.pipeline.nearest import nearest_model
from qubo_round.pipeline.run import choose_form
from qubo_round.relaxations.active import ActiveSet
from qubo_round.pipeline.data_form import (LayerColumns, _optimise, capture_columns, data_form_grad,
                                           data_form_params)
from qubo_round.relaxations.objective import row_units
from qubo_round.solvers import ParameterError, get_solver
from qubo_round.zoo import load_model


@pytest.fixture(scope="module")
def digits():
    b = load_model("digits")
    return b, b.calibration(256, 0)


@pytest.fixture(autouse=True)
def one_thread():
    """The tensors of the digits layers are small: one torch thread is faster on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_pipeline_quality_digits_3bit(digits):
    b, x = digits
    q, rep = quantize_model(b.model, x, QuantConfig(bits=3, solver="adaround/fast"), progress=False)
    assert [r.form for r in rep.layers] == ["covariance"] * 5  # auto: the exact objective on digits
    for r in rep.layers:  # every layer well below nearest rounding of the same layer (conv1: 0.45)
        assert r.loss < 0.6 * r.nearest_loss, r
    total, near = sum(r.loss for r in rep.layers), sum(r.nearest_loss for r in rep.layers)
    assert total < 0.15 * near, (total, near)  # 0.07 on the reference machine
    acc = b.evaluate(q)["accuracy"]
    acc_float = b.evaluate(b.model)["accuracy"]
    acc_near = b.evaluate(nearest_model(b.model, x[:1], QuantConfig(bits=3)))["accuracy"]
    assert acc >= acc_float - 0.015, (acc, acc_float)
    assert acc >= acc_near + 0.02, (acc, acc_near)


def _reference_grad(theta, xb, tb, space, free, fixed_h, units, c, relu, beta, lam):
    """Autograd gradient of the data form's mini-batch objective (module docstring of data_form)."""
    theta = theta.clone().requires_grad_(True)
    s = torch.as_tensor(space.s)[:, None]
    h = torch.clamp(torch.sigmoid(theta) * 1.2 - 0.1, 0.0, 1.0)
    h = torch.where(free, h, fixed_h)
    Wt = s * (torch.as_tensor(space.L - space.z[:, None], dtype=torch.float64) + h)
    out = xb @ Wt.T
    if c is not None:
        out = out + c
    f = torch.relu if relu else (lambda t: t)
    loss = (((f(out) - tb) ** 2).sum(0) / units).sum() / xb.shape[0]
    if beta is not None:
        loss = loss + lam * (1 - (2 * h[free] - 1).abs() ** beta).sum()
    loss.backward()
    return theta.grad


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("beta", [None, 2.0, 11.5])
def test_data_form_gradient_matches_autograd(relu, beta):
    rng = np.random.default_rng(3)
    W = rng.normal(size=(5, 7))
    space = rounding_space(W, Grid(bits=3), s=np.full(5, 0.3))  # small scale: some entries clipped (fixed)
    assert space.fixed_mask.any() and (~space.fixed_mask).any()
    m = 12
    xb = torch.as_tensor(rng.normal(size=(m, 7)))
    c = torch.as_tensor(rng.normal(size=5)) if relu else None
    tb = xb @ torch.as_tensor(W).T
    if relu:
        tb = torch.relu(tb + c)
    theta = torch.as_tensor(rng.uniform(-3, 3, size=(5, 7)))  # |theta| > ln 11 is clipped
    free = torch.as_tensor(~space.fixed_mask)
    fixed_h = torch.as_tensor(space.fixed_value, dtype=torch.float64)
    units = torch.as_tensor(rng.uniform(0.5, 2.0, size=5))
    s = torch.as_tensor(space.s)[:, None]
    sbase = s * torch.as_tensor(space.L - space.z[:, None], dtype=torch.float64)
    aset = ActiveSet(theta.clone(), free, fixed_h, lr=0.1)
    sig, h, inside = aset.step_h()
    g_h = data_form_grad(aset.h, xb, tb, sbase, s, (2.0 / m) / units, c, relu)
    g = aset.scatter(aset.theta_grad(aset.gather(g_h), h, sig, inside, beta, 0.7))
    ref = _reference_grad(theta, xb, tb, space, free, fixed_h, units, c, relu, beta, 0.7)
    torch.testing.assert_close(g[free], ref[free], rtol=1e-10, atol=1e-12)
    assert (g[free] != 0).any()


def test_data_form_uses_the_solver_spec():
    assert data_form_params("adaround/fast", {}).iterations == 2000
    assert data_form_params("adaround/fast", {}).lr == 0.1
    assert data_form_params("adaround", {"iterations": 7, "device": "cuda"}).iterations == 7
    with pytest.raises(ParameterError, match="iteration"):
        data_form_params("adaround", {"iteration": 7})
    with pytest.raises(ValueError, match="data form"):
        data_form_params("gptq", {})


def test_data_form_matches_covariance_form_on_a_layer(digits):
    """Same objective (x_hat = x), same settings: the mini-batch form ends close to the exact one."""
    b, x = digits
    from qubo_round.extract import layer_problems
    (p,) = layer_problems(b.model, "fc2", x, Grid(bits=3))
    X, Xh, positions = capture_columns(b.model, b.model, "fc2", torch.split(x, 64))
    cov = get_solver("adaround/fast").solve(p, seed=0).energy
    V, info = _optimise(LayerColumns(p.space, X[0], Xh[0], None, torch.as_tensor(row_units(p)), "none", positions),
                        data_form_params("adaround/fast", {}), torch.Generator().manual_seed(0), label="fc2")
    data = p.energy(p.from_rounding(V))
    near = p.energy(p.from_rounding(p.space.nearest()))
    assert info["iterations_done"] <= 2000
    assert cov < 0.3 * near and data < 0.3 * near, (cov, data, near)
    assert data < 1.3 * cov, (cov, data)


def test_auto_form_prefers_the_exact_objective():
    # digits layers (rows, cols, batch columns = 32 samples x positions): all covariance
    for rows, cols, bc in [(16, 9, 2048), (32, 144, 2048), (8, 72, 512), (64, 512, 32), (10, 64, 32)]:
        assert choose_form("auto", rows, cols, bc, "none", "adaround") == "covariance"
    assert choose_form("auto", 4096, 25088, 32, "none", "adaround") == "data"  # VGG-sized fc: data
    assert choose_form("auto", 64, 512, 32, "relu", "adaround") == "data"  # not a QUBO
    assert choose_form("auto", 4096, 25088, 32, "none", "gptq") == "covariance"  # no data form
    assert choose_form("data", 16, 9, 2048, "none", "adaround") == "data"


def test_grouped_conv_groups_are_solved_as_one_problem(digits, monkeypatch):
    """A relaxation solver gets the 4 groups of conv3 as one stacked problem (one solve); its
    rounding agrees with solving the groups one by one. Other solvers keep one solve per group."""
    import qubo_round.pipeline.run as run_mod
    b, x = digits
    calls: list = []
    orig = run_mod._solver_for

    def solver_for(*a, **kw):
        s = orig(*a, **kw)
        solve = s.solve

        def counted(p, **kw2):
            r = solve(p, **kw2)
            calls.append((p.meta.get("layer"), p.shape, r))
            return r

        s.solve = counted
        return s

    monkeypatch.setattr(run_mod, "_solver_for", solver_for)
    over = {n: LayerOverride(skip=True) for n in ("conv1", "conv2", "fc1", "fc2")}
    cfg = QuantConfig(bits=3, solver="adaround/fast", overrides=over, reconstruction="layerwise")
    q, rep = quantize_model(b.model, x, cfg, device="cpu", progress=False)
    (layer, shape, r), = calls
    assert layer == "conv3" and shape == (32, 72)
    from qubo_round.extract import layer_problems
    groups = layer_problems(b.model, "conv3", x, cfg.grid(3))
    assert len(groups) == 4
    one_by_one = np.concatenate([get_solver("adaround/fast").solve(p, seed=cfg.seed + 2).best for p in groups])
    np.testing.assert_array_equal(one_by_one, r.best)  # one matrix per group: the same products
    calls.clear()
    quantize_model(b.model, x, QuantConfig(bits=3, solver="gptq", overrides=over), device="cpu", progress=False)
    assert [c[1] for c in calls] == [(8, 72)] * 4


def test_iteration_progress_bar_reaches_the_relaxation(digits, monkeypatch, capsys):
    """With progress on, the layer's relaxation gets ``progress=True`` and draws a bar over its
    iterations (on stderr); with progress off, neither."""
    import qubo_round.pipeline.run as run_mod
    b, x = digits
    seen = []
    orig = run_mod._solver_for
    monkeypatch.setattr(run_mod, "_solver_for", lambda *a, **k: seen.append(orig(*a, **k)) or seen[-1])
    over = {n: LayerOverride(skip=True) for n in ("conv2", "conv3", "fc1", "fc2")}
    cfg = QuantConfig(bits=3, solver="adaround", solver_params={"iterations": 300}, overrides=over)
    quantize_model(b.model, x, cfg, device="cpu", progress=True)
    assert seen[-1].params.progress is True
    assert "adaround:" in capsys.readouterr().err
    quantize_model(b.model, x, cfg, device="cpu", progress=False)
    assert seen[-1].params.progress is False
    assert "adaround:" not in capsys.readouterr().err


def test_capability_flags_decide_form_and_group_batching():
    """The pipeline asks the solver class (has_data_form, batches_groups), never its name."""
    from qubo_round.relaxations.objective import TorchSolver
    from qubo_round.solvers import available_solvers, solver_class
    with_data = [n for n in available_solvers() if solver_class(n).has_data_form]
    assert with_data == ["adaround"]
    for name in available_solvers():
        cls = solver_class(name)
        assert cls.batches_groups == issubclass(cls, TorchSolver)
    assert choose_form("auto", 4096, 25088, 32, "none", "adaround/fast") == "data"  # a preset too
    assert choose_form("auto", 4096, 25088, 32, "none", "gptq") == "covariance"
    assert choose_form("auto", 8, 8, 32, "relu", "its") == "covariance"
