"""The attention-mixed loss of value projections (qubo_round.attention, ``value_loss='attention'``):
the per-head QUBO energy of any rounding equals the error it causes in the attention module's
output, in the pipeline as in the core, with layer-wise and asymmetric statistics; bad input is
refused before any work."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers", reason="the attention tests build a tiny BERT with transformers (extra 'minilm')")

from attention_helpers import HEADS, TinyEncoder, batches, contexts  # noqa: E402
from qubo_round.attention import attention_sites, capture_mixed_stats  # noqa: E402
from qubo_round.builders import covariance_problem  # noqa: E402
from qubo_round.grid import Grid, rounding_space  # noqa: E402
from qubo_round.pipeline import LayerOverride, QuantConfig, quantize_model  # noqa: E402

SITE = "bert.encoder.layer.1.attention.self"
VALUE = SITE + ".value"


@pytest.fixture(scope="module")
def tiny():
    return TinyEncoder(), batches(0)


def _context_error(model, value: str, W_hat: np.ndarray, data, site: str = SITE) -> float:
    """Mean over all query positions of the squared error of the attention output when the value
    projection's weight is ``W_hat`` (float attention: it does not depend on the values)."""
    ref = contexts(model, site, data)
    q = copy.deepcopy(model)
    mod = dict(q.named_modules())[value]
    with torch.no_grad():
        mod.weight.copy_(torch.as_tensor(W_hat, dtype=mod.weight.dtype))
    got = contexts(q, site, data)
    total = sum(float(((a - b) ** 2).sum()) for a, b in zip(got, ref))
    return total / sum(a.shape[0] * a.shape[1] for a in ref)


def test_sites_found_by_structure(tiny):
    model, _ = tiny
    sites = attention_sites(model)
    assert list(sites) == [f"bert.encoder.layer.{i}.attention.self.value" for i in range(2)]
    assert sites[VALUE].attention == SITE
    assert attention_sites(torch.nn.Sequential(torch.nn.Linear(3, 3))) == {}


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.integers(2, 4), group=st.sampled_from([None, 8, 16]),
       padded=st.booleans())
def test_head_energies_equal_the_attention_output_error(seed, bits, group, padded):
    """For any rounding V: sum over heads of the head QUBOs' energies = mean squared error of the
    attention module's output (float64 model: equal to rtol 1e-8)."""
    model = TinyEncoder(seed=seed % 7).double()
    data = batches(seed, n=3, padded=padded)
    st_ = capture_mixed_stats(model, [attention_sites(model)[VALUE]], data)[VALUE]
    assert st_.row_blocks == HEADS and len(st_.groups) == HEADS
    W = dict(model.named_modules())[VALUE].weight.detach().numpy().astype(np.float64)
    space = rounding_space(W, Grid(bits=bits, group_size=group))
    rng = np.random.default_rng(seed)
    V = np.where(space.fixed_mask, space.fixed_value, rng.integers(0, 2, size=W.shape)).astype(np.uint8)
    dh = W.shape[0] // HEADS
    energy = 0.0
    for h, acc in enumerate(st_.groups):
        rows = np.arange(h * dh, (h + 1) * dh)
        p = covariance_problem(W[rows], acc.H, space=space.select_rows(rows))
        energy += p.energy(p.from_rounding(V[rows]))
    want = _context_error(model, VALUE, space.dequantize(V), data)
    assert energy == pytest.approx(want, rel=1e-8)


def test_asymmetric_statistics_use_the_float_attention(tiny):
    """With ``model_hat`` (other weights perturbed): H_hat_h, C_h are the moments of P_h X_hat
    against P_h X, with the float network's P_h, recomputed here from hooked tensors."""
    model, data = tiny
    hat = copy.deepcopy(model)
    with torch.no_grad():
        hat.bert.encoder.layer[0].output.dense.weight.mul_(1.3)
    got = capture_mixed_stats(model, [attention_sites(model)[VALUE]], data, model_hat=hat)[VALUE]
    caps = {"x": [], "p": [], "xh": []}
    hs = [dict(model.named_modules())[VALUE].register_forward_hook(lambda m, i, o: caps["x"].append(i[0].double())),
          dict(model.named_modules())[SITE].register_forward_hook(lambda m, i, o: caps["p"].append(o[1].double())),
          dict(hat.named_modules())[VALUE].register_forward_hook(lambda m, i, o: caps["xh"].append(i[0].double()))]
    with torch.no_grad():
        for b in data:
            model(**b)
            hat(**b)
    for h in hs:
        h.remove()
    S = torch.zeros(HEADS, 32, 32, dtype=torch.float64)
    Sh, C, n = S.clone(), S.clone(), 0
    for x, p, xh in zip(caps["x"], caps["p"], caps["xh"]):
        M, Mh = p @ x[:, None], p @ xh[:, None]  # (B, heads, T, cols)
        S += torch.einsum("bhti,bhtj->hij", M, M)
        Sh += torch.einsum("bhti,bhtj->hij", Mh, Mh)
        C += torch.einsum("bhti,bhtj->hij", Mh, M)
        n += x.shape[0] * x.shape[1]
    for h, acc in enumerate(got.groups):
        np.testing.assert_allclose(acc.H, (S[h] / n).numpy(), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(acc.H_hat, (Sh[h] / n).numpy(), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(acc.C, (C[h] / n).numpy(), rtol=1e-6, atol=1e-9)
    assert not np.allclose(got.groups[0].H_hat, got.groups[0].H)  # the perturbation reached the values


@pytest.mark.parametrize("reconstruction", ["layerwise", "asymmetric"])
def test_pipeline_value_layers_solve_the_mixed_loss(tiny, reconstruction):
    """The report's loss of each value projection is the attention-output error its written
    weights cause (layer-wise: against the float network's inputs); other layers are untouched
    by the option (layer-wise: their roundings are the token run's, bit for bit)."""
    model, data = tiny
    model = copy.deepcopy(model).double()
    cfg = dict(bits=3, solver="gptq/in-order", reconstruction=reconstruction)
    qa, ra = quantize_model(model, data, QuantConfig(value_loss="attention", **cfg), progress=False)
    qt, rt = quantize_model(model, data, QuantConfig(**cfg), progress=False)
    assert set(ra.qstate) == set(rt.qstate)
    rows = {r.name: r for r in ra.layers}
    if reconstruction == "layerwise":
        for i in range(2):
            site = f"bert.encoder.layer.{i}.attention.self"
            W_hat = ra.qstate[site + ".value"].weight(torch.float64).numpy()
            assert rows[site + ".value"].loss == pytest.approx(_context_error(model, site + ".value", W_hat, data, site),
                                                               rel=1e-8)
        for name in ra.qstate:
            if not name.endswith(".value"):
                assert torch.equal(ra.qstate[name].q, rt.qstate[name].q), name
    changed = [n for n in ra.qstate if not torch.equal(ra.qstate[n].q, rt.qstate[n].q)]
    assert any(n.endswith(".value") for n in changed)
    assert rt.config.get("value_loss") is None and ra.config["value_loss"] == "attention"


def test_pipeline_holdout_and_resume(tiny, tmp_path):
    model, data = tiny
    cfg = QuantConfig(bits=3, solver="gptq/in-order", reconstruction="layerwise", value_loss="attention", holdout=0.25)
    q1, r1 = quantize_model(model, data, cfg, progress=False, run_dir=tmp_path)
    assert all(r.holdout_loss is not None for r in r1.layers)
    q2, r2 = quantize_model(model, data, cfg, progress=False, run_dir=tmp_path)
    assert all(torch.equal(q1.state_dict()[k], v) for k, v in q2.state_dict().items())
    with pytest.raises(ValueError, match="value_loss"):  # another loss: the run directory is refused
        quantize_model(model, data, QuantConfig(bits=3, solver="gptq/in-order", reconstruction="layerwise",
                                                holdout=0.25), progress=False, run_dir=tmp_path)


def test_bad_settings_refused_before_work(tiny):
    model, data = tiny
    with pytest.raises(ValueError, match="value_loss must be one of"):
        QuantConfig(value_loss="mixed")
    with pytest.raises(ValueError, match="form='data'"):
        QuantConfig(value_loss="attention", form="data")
    digits = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(ValueError, match="no quantized self-attention"):
        quantize_model(digits, torch.randn(8, 4), QuantConfig(value_loss="attention"), progress=False)
    skip = {f"bert.encoder.layer.{i}.attention.self.value": LayerOverride(skip=True) for i in range(2)}
    with pytest.raises(ValueError, match="no quantized self-attention"):
        quantize_model(model, data, QuantConfig(value_loss="attention", overrides=skip), progress=False)
    with pytest.raises(ValueError, match="form='data'"):
        quantize_model(model, data, QuantConfig(value_loss="attention", overrides={VALUE: LayerOverride(form="data")}),
                       progress=False)
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        quantize_model(TinyEncoder("sdpa"), data, QuantConfig(solver="gptq", value_loss="attention"), progress=False)
