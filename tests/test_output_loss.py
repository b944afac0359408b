"""The Kronecker Gauss-Newton output loss (qubo_round.kronecker, qubo_round.gauss_newton,
``QuantConfig.output_loss``): the loss is ``tr(G dW H dW^T)`` of the written weights, with ``G = I``
the layer-wise QUBO's energy; the descent never raises it and ends at a single-flip minimum; the
factors are the model's Jacobian products; the pipeline reports and resumes it; bad input is
refused before any work."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qubo_round.builders import asymmetric_problem, covariance_problem
from qubo_round.gauss_newton import _offdiag2, _shrinkage, kronecker_factors
from qubo_round.grid import Grid, RoundingSpace, rounding_space
from qubo_round.kronecker import KroneckerLoss, asymmetric_target, kronecker_descent
from qubo_round.pipeline import QuantConfig, quantize_model


def _psd(rng, n: int) -> np.ndarray:
    A = rng.standard_normal((n, n + 2))
    return A @ A.T / n


def _case(seed: int, rows: int, cols: int, bits: int, group: int | None):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((rows, cols))
    space = rounding_space(W, Grid(bits=bits, group_size=group))
    V = np.where(space.fixed_mask, space.fixed_value, rng.integers(0, 2, W.shape)).astype(np.uint8)
    return rng, space, V


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), rows=st.integers(1, 6), cols=st.integers(1, 9), bits=st.integers(2, 4),
       group=st.sampled_from([None, 2, 4]))
def test_identity_G_is_the_layerwise_qubo(seed, rows, cols, bits, group):
    """With G = I, (K) of any rounding is the covariance QUBO's total energy (eq. 20)."""
    rng, space, V = _case(seed, rows, cols, bits, group)
    H = _psd(rng, cols)
    p = covariance_problem(space.W, H, space=space, damping=None)
    got = KroneckerLoss(np.eye(rows), H).value(space, V)
    want = float(p.energies(p.from_rounding(V)).sum())
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), rows=st.integers(1, 6), cols=st.integers(1, 9), bits=st.integers(2, 4),
       group=st.sampled_from([None, 3]), max_batch=st.sampled_from([1, 4, 1024]))
def test_descent_lowers_the_loss_to_a_one_flip_minimum(seed, rows, cols, bits, group, max_batch):
    rng, space, V0 = _case(seed, rows, cols, bits, group)
    loss = KroneckerLoss(_psd(rng, rows), _psd(rng, cols))
    V, info = kronecker_descent(loss, space, V0, max_batch=max_batch)
    start = loss.value(space, V0)
    end = loss.value(space, V)
    assert info["loss_start"] == pytest.approx(start, rel=1e-9, abs=1e-12)
    assert info["loss"] == pytest.approx(end, rel=1e-9, abs=1e-12)
    assert end <= start + 1e-12 * abs(start)
    assert np.array_equal(V[space.fixed_mask], space.fixed_value[space.fixed_mask])  # fixed entries kept
    assert info["status"] == "local_minimum"
    for i, j in np.argwhere(~space.fixed_mask):  # no single flip lowers it further
        W1 = V.copy()
        W1[i, j] ^= 1
        assert loss.value(space, W1) >= end - 1e-9 * max(abs(end), 1e-12)


def test_descent_uses_the_row_coupling():
    """A coupled G moves roundings the row QUBOs consider optimal: the descent lowers (K) below
    every row's own optimum, which G = I cannot see."""
    rng = np.random.default_rng(3)
    space = rounding_space(rng.standard_normal((8, 12)), Grid(bits=3))
    H = _psd(rng, 12)
    p = covariance_problem(space.W, H, space=space, damping=None)
    from qubo_round.solvers import get_solver
    V_rows = p.to_rounding(get_solver("exact").solve(p).best)  # each row's optimum of its own QUBO
    u = rng.standard_normal(8)
    G = np.eye(8) + 5 * np.outer(u, u)  # outputs mixed downstream
    loss = KroneckerLoss(G, H)
    V, info = kronecker_descent(loss, space, V_rows)
    assert info["flips"] > 0 and loss.value(space, V) < 0.95 * loss.value(space, V_rows)
    V_id, info_id = kronecker_descent(KroneckerLoss(np.eye(8), H), space, V_rows)
    assert info_id["flips"] == 0 and np.array_equal(V_id, V_rows)  # G = I: already a minimum


def test_bad_input_refused():
    rng, space, V = _case(0, 3, 4, 3, None)
    with pytest.raises(ValueError, match="square"):
        KroneckerLoss(np.ones((3, 2)), np.eye(4))
    with pytest.raises(ValueError, match="do not fit"):
        kronecker_descent(KroneckerLoss(np.eye(4), np.eye(4)), space, V)
    with pytest.raises(ValueError, match="rtol"):
        kronecker_descent(KroneckerLoss(np.eye(3), np.eye(4)), space, V, rtol=-1.0)
    with pytest.raises(ValueError, match="max_batch"):
        kronecker_descent(KroneckerLoss(np.eye(3), np.eye(4)), space, V, max_batch=0)
    with pytest.raises(ValueError, match="binary"):
        kronecker_descent(KroneckerLoss(np.eye(3), np.eye(4)), space, V + 2)


def test_stacked_spaces_are_the_rows_of_the_weight():
    W = np.random.default_rng(1).standard_normal((6, 5))
    grid = Grid(bits=3, group_size=2)
    whole = rounding_space(W, grid)
    parts = [whole.select_rows(np.arange(0, 2)), whole.select_rows(np.arange(2, 6))]
    back = RoundingSpace.stack(parts)
    for f in ("W", "s", "z", "L", "fixed_mask", "fixed_value"):
        assert np.array_equal(getattr(back, f), getattr(whole, f)), f
    with pytest.raises(ValueError, match="differ"):
        RoundingSpace.stack([whole, rounding_space(W[:, :4], grid)])


class _TwoLinear(torch.nn.Module):
    """``f = B tanh(A x)`` per token: the Jacobian at A's output is ``B diag(tanh')``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(5, 4, dtype=torch.float64)
        self.b = torch.nn.Linear(4, 3, dtype=torch.float64)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def test_factors_are_jacobian_products():
    """``H = E[x x^T]`` exactly; ``G`` converges to ``E[J^T J]`` (probe average: within a few
    standard errors of 400 probes x 60 tokens)."""
    model = _TwoLinear()
    x = torch.randn(60, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    req = [p.requires_grad for p in model.parameters()]
    f = kronecker_factors(model, ["a", "b"], [x[:30], x[30:]], probes=400, seed=0, shrink=False)
    assert [p.requires_grad for p in model.parameters()] == req
    assert all(p.grad is None for p in model.parameters())
    np.testing.assert_allclose(f["a"].H, (x.T @ x / 60).numpy(), rtol=1e-12)
    with torch.no_grad():
        t = 1 - torch.tanh(model.a(x)) ** 2  # (60, 4)
        B = model.b.weight  # (3, 4)
        want_a = sum((B * t[i]).T @ (B * t[i]) for i in range(60)) / 60
    np.testing.assert_allclose(f["a"].G, want_a.numpy(), atol=0.15 * float(want_a.abs().max()))
    np.testing.assert_allclose(f["b"].G, np.eye(3), atol=0.15)  # J = I at the output layer
    with pytest.raises(ValueError, match="not nn.Linear"):
        kronecker_factors(torch.nn.Sequential(torch.nn.Conv1d(1, 1, 1)), ["0"], [torch.randn(2, 1, 3)])
    with pytest.raises(ValueError, match="probes"):
        kronecker_factors(model, ["a"], [x], probes=0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(2, 7), tokens=st.integers(1, 4), out=st.integers(1, 5),
       flat=st.booleans())
def test_shrinkage_is_the_off_diagonal_variance_over_the_mass(seed, n, tokens, out, flat):
    """``alpha`` from the token Grams equals the Schafer-Strimmer weight computed from the samples
    ``M_s = g_s^T g_s`` themselves: the summed sample variance of the mean's off-diagonal entries
    over their squared sum (clipped to [0, 1])."""
    g = torch.randn(n, tokens, out, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    if flat:  # a 2-D output: every row is its own sample
        g = g[:, 0]
    o2, m = _offdiag2(g)
    M = np.stack([gs.T @ gs for gs in (g.numpy()[:, None] if flat else g.numpy())])
    assert m == n
    off = ~np.eye(out, dtype=bool)
    assert o2 == pytest.approx(float((M[:, off] ** 2).sum()), rel=1e-9, abs=1e-12)
    A = M.mean(0)
    var = M[:, off].var(0, ddof=1).sum() / n
    mass = (A[off] ** 2).sum()
    want = 0.0 if out == 1 else float(np.clip(var / mass, 0, 1))
    assert _shrinkage(torch.from_numpy(M.sum(0)), m, o2) == pytest.approx(want, rel=1e-7, abs=1e-12)


class _Rank1(torch.nn.Module):
    """``f = B tanh(A x)`` with a rank-one ``B``: the first layer's ``G`` is strongly coupled."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(5, 16).double()
        self.b = torch.nn.Linear(16, 16, bias=False).double()
        with torch.no_grad():
            self.b.weight.copy_(torch.outer(torch.ones(16), torch.linspace(1, 2, 16)))

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def test_shrinkage_removes_noise_and_keeps_coupling():
    """At the output layer (``G = I``: its off-diagonal estimate is noise) the weight is near 1; where
    the true ``G`` is rank one (all entries large) it is near 0; the shrunk ``G`` keeps the raw
    diagonal and scales the off-diagonal entries by ``1 - alpha``."""
    model = _Rank1()
    x = torch.randn(64, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    raw = kronecker_factors(model, ["a", "b"], [x[:32], x[32:]], probes=4, seed=1, shrink=False)
    shr = kronecker_factors(model, ["a", "b"], [x[:32], x[32:]], probes=4, seed=1)
    # (over probe seeds 0-5 here: 0.81-1.0 at the output, 0.008-0.013 at the rank-one layer)
    assert raw["b"].shrinkage == 0 and shr["b"].shrinkage > 0.7 and shr["a"].shrinkage < 0.1
    off = ~np.eye(16, dtype=bool)
    for n in ("a", "b"):
        np.testing.assert_allclose(np.diag(shr[n].G), np.diag(raw[n].G), rtol=1e-12)
        np.testing.assert_allclose(shr[n].G[off], (1 - shr[n].shrinkage) * raw[n].G[off], rtol=1e-9, atol=1e-15)
        np.testing.assert_array_equal(shr[n].H, raw[n].H)
    with pytest.raises(ValueError, match="shrinkage"):
        KroneckerLoss(np.eye(2), np.eye(2), shrinkage=1.5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), bits=st.integers(2, 4), rows=st.integers(1, 5), cols=st.integers(2, 7))
def test_asymmetric_target_gives_the_asymmetric_reconstruction_loss(seed, bits, rows, cols):
    """With G = I the Kronecker loss about W* with H_hat is the asymmetric reconstruction QUBO's
    total energy, less what no rounding removes: tr(W H W^T) - tr(W* H_hat W*^T), for every rounding."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(rows, cols))
    X = rng.normal(size=(4 * cols + 8, cols))
    Xh = X + 0.3 * rng.normal(size=X.shape)  # the quantized network's inputs
    n = len(X)
    H, H_hat, C = X.T @ X / n, Xh.T @ Xh / n, Xh.T @ X / n
    p = asymmetric_problem(W, H, H_hat, C, Grid(bits=bits))
    Ws = asymmetric_target(W, H_hat, C)
    np.testing.assert_allclose(Ws @ H_hat, W @ C.T, rtol=1e-7, atol=1e-9)
    loss = KroneckerLoss(np.eye(rows), H_hat, target=Ws)
    const = float(np.einsum("rc,rc->", W @ H, W) - np.einsum("rc,rc->", Ws @ H_hat, Ws))
    for _ in range(3):
        X01 = rng.integers(0, 2, size=p.shape).astype(np.uint8)
        X01 = p.apply_fixed(X01)
        V = p.to_rounding(X01)
        total = float(p.energies(X01).sum())
        assert loss.value(p.space, V) + const == pytest.approx(total, rel=1e-7, abs=1e-9 * (1 + abs(total)))
    with pytest.raises(ValueError, match="target"):
        KroneckerLoss(np.eye(rows), H_hat, target=np.zeros((rows + 1, cols)))


def _tanh_net():
    """A three-layer tanh network with unit-variance weights and its 96 calibration inputs."""
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 3))
    torch.manual_seed(0)
    for m in model:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight)
    data = torch.randn(96, 6, generator=torch.Generator().manual_seed(2))
    return model, data


def test_pipeline_asymmetric_output_loss_descends_on_the_quantized_inputs():
    """Asymmetric reconstruction with the output loss: each layer descends on
    tr(G (W_hat - W*) H_hat (W_hat - W*)^T) (never up), its own model, not the layer-wise one's."""
    model, data = _tanh_net()
    kw = dict(bits=2, solver="gptq/in-order", output_loss="gauss-newton", output_probes=8)
    qa, rep = quantize_model(model, data, QuantConfig(reconstruction="asymmetric", **kw), progress=False)
    ql, rep_l = quantize_model(model, data, QuantConfig(reconstruction="layerwise", **kw), progress=False)
    qa0, _ = quantize_model(model, data, QuantConfig(bits=2, solver="gptq/in-order", reconstruction="asymmetric"),
                            progress=False)
    for r in rep.layers:
        assert r.output_loss is not None and r.output_loss <= r.output_loss_start * (1 + 1e-12) + 1e-15
    assert sum(r.output_flips for r in rep.layers) > 0
    assert "output loss about W*" in rep.to_markdown()
    differs = lambda a, b: any(not torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())  # noqa: E731
    assert differs(qa, ql) and differs(qa, qa0)
    # the first layer sees float inputs (nothing before it is quantized): W* = W there, the
    # layer-wise descent's loss
    assert rep.layers[0].output_loss_start == pytest.approx(rep_l.layers[0].output_loss_start, rel=1e-6)


class _Dict(torch.nn.Module):
    def forward(self, x):
        return {"y": x}


def test_pipeline_descends_reports_and_resumes(tmp_path, monkeypatch):
    model, data = _tanh_net()
    cfg = QuantConfig(bits=2, solver="gptq/in-order", reconstruction="layerwise", output_loss="gauss-newton",
                      output_probes=8)
    q, rep = quantize_model(model, data, cfg, progress=False, run_dir=tmp_path)
    factors = kronecker_factors(model, ["0", "2", "4"], torch.split(data, 64), probes=8, seed=0)
    for r in rep.layers:
        assert r.output_loss is not None and r.output_loss <= r.output_loss_start * (1 + 1e-12)
        assert r.output_shrinkage == factors[r.name].shrinkage
        dW = (rep.qstate[r.name].weight(torch.float64) - dict(model.named_modules())[r.name].weight.detach().double()).numpy()
        k = factors[r.name]
        assert float(np.einsum("rc,rc->", k.G @ dW @ k.H, dW)) == pytest.approx(r.output_loss, rel=1e-6)
    assert sum(r.output_flips for r in rep.layers) > 0 and "about W*" not in rep.to_markdown()
    base, _ = quantize_model(model, data, QuantConfig(bits=2, solver="gptq/in-order", reconstruction="layerwise"),
                             progress=False)
    assert any(not torch.equal(q.state_dict()[k], v) for k, v in base.state_dict().items())
    q2, rep2 = quantize_model(model, data, cfg, progress=False, run_dir=tmp_path)  # resumed
    assert all(r.resumed for r in rep2.layers)
    assert all(torch.equal(q.state_dict()[k], v) for k, v in q2.state_dict().items())
    assert rep2.layers[0].output_loss == rep.layers[0].output_loss
    # a run that resumes with the last layer still to do computes the factors of that layer only,
    # and they are the ones of the full set: the same model bit for bit
    for suffix in (".json", ".safetensors"):
        next((tmp_path / "layers").glob(f"002_*{suffix}")).unlink()
    import qubo_round.pipeline.run as run_mod
    asked = []
    real = run_mod.kronecker_factors
    monkeypatch.setattr(run_mod, "kronecker_factors", lambda m, names, *a, **k: asked.append(names) or real(m, names, *a, **k))
    q4, rep4 = quantize_model(model, data, cfg, progress=False, run_dir=tmp_path)
    assert asked == [["4"]] and [r.resumed for r in rep4.layers] == [True, True, False]
    assert all(torch.equal(q.state_dict()[k], v) for k, v in q4.state_dict().items())
    assert rep4.layers[2].output_loss == rep.layers[2].output_loss
    quantize_model(model, data, cfg, progress=False, run_dir=tmp_path)  # all resumed: no factors at all
    assert asked == [["4"]]
    raw = dataclasses.replace(cfg, output_loss="gauss-newton-raw")
    _, rep3 = quantize_model(model, data, raw, progress=False)
    assert all(r.output_shrinkage == 0 for r in rep3.layers) and any(r.output_shrinkage > 0 for r in rep.layers)
    # a run directory made before G was shrunk (its config has no output_G) is refused, not resumed
    # as if shrunk; its rows' missing shrinkage still renders
    cfg_path = tmp_path / "config.json"
    old_cfg = json.loads(cfg_path.read_text())
    del old_cfg["config"]["output_G"]
    cfg_path.write_text(json.dumps(old_cfg))
    with pytest.raises(ValueError, match="output_G: None \\(run directory\\)"):
        quantize_model(model, data, cfg, progress=False, run_dir=tmp_path)
    rep2.layers[0].output_shrinkage = None
    r0 = rep2.layers[0]  # its row of the output-loss table (the main table has '-' cells of its own)
    assert f"| {r0.name} | {r0.output_loss_start:.4g} | {r0.output_loss:.4g} | {r0.output_flips} | - | " in rep2.to_markdown()
    assert cfg.to_dict()["output_G"] != raw.to_dict()["output_G"]


def test_pipeline_settings_refused_before_work():
    with pytest.raises(ValueError, match="output_loss must be one of"):
        QuantConfig(output_loss="fisher")
    assert QuantConfig(output_loss="gauss-newton").reconstruction == "asymmetric"  # the library default
    with pytest.raises(ValueError, match="holdout=0"):
        QuantConfig(output_loss="gauss-newton", reconstruction="layerwise", holdout=0.25)
    with pytest.raises(ValueError, match="output_probes"):
        QuantConfig(output_probes=0)
    cfg = QuantConfig(output_loss="gauss-newton", reconstruction="layerwise")
    from qubo_round.pipeline.parallel import check_parallel_config
    with pytest.raises(ValueError, match="layer-parallel"):
        check_parallel_config(cfg)
    with pytest.raises(ValueError, match="float tensor"):
        quantize_model(torch.nn.Sequential(torch.nn.Linear(3, 3), _Dict()), torch.randn(8, 3), cfg, progress=False)
    assert "output_loss" not in QuantConfig().to_dict() and cfg.to_dict()["output_loss"] == "gauss-newton"
