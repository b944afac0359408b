"""Streaming calibration statistics: chunked accumulation equals the one-shot second moments,
memory stays O(cols^2), and capture_stats accepts tensors, DataLoaders, generators and dict
batches (qubo_round/stats.py)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from qubo_round.layers import get_layer
from qubo_round.stats import CovarianceAccumulator, capture_stats

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def chunked_data(draw):
    cols = draw(st.integers(1, 6))
    m = draw(st.integers(1, 60))
    cuts = sorted(set(draw(st.lists(st.integers(1, m - 1), max_size=10)))) if m > 1 else []
    seed = draw(st.integers(0, 2**32 - 1))
    return cols, m, [0, *cuts, m], seed


@SETTINGS
@given(data=chunked_data(), asym=st.booleans())
def test_streaming_equals_one_shot(data, asym):
    cols, m, bounds, seed = data
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(cols, m)) * rng.uniform(0.1, 10, size=(cols, 1))
    Xh = X + 0.3 * rng.normal(size=(cols, m))
    acc = CovarianceAccumulator(cols, asymmetric=asym)
    for a, b in zip(bounds[:-1], bounds[1:]):
        acc.add_batch(torch.as_tensor(X[:, a:b]), torch.as_tensor(Xh[:, a:b]) if asym else None)
    assert acc.count == m
    np.testing.assert_allclose(acc.H, X @ X.T / m, rtol=1e-12, atol=1e-12)
    assert acc.H.dtype == np.float64 and acc.H.shape == (cols, cols)
    np.testing.assert_array_equal(acc.H, acc.H.T)
    if asym:
        np.testing.assert_allclose(acc.H_hat, Xh @ Xh.T / m, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(acc.C, Xh @ X.T / m, rtol=1e-12, atol=1e-12)
    else:
        with pytest.raises(ValueError, match="asymmetric=True"):
            acc.H_hat
        with pytest.raises(ValueError, match="asymmetric=True"):
            acc.C


def test_float32_batches_are_accumulated_in_float64():
    X = torch.randn(3, 50, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    acc = CovarianceAccumulator(3)
    acc.add_batch(X[:, :20])
    acc.add_batch(X[:, 20:])
    X64 = X.double().numpy()
    np.testing.assert_allclose(acc.H, X64 @ X64.T / 50, rtol=1e-13)


@pytest.mark.parametrize("asym", [False, True])
def test_memory_is_cols_squared(asym):
    cols = 5
    acc = CovarianceAccumulator(cols, asymmetric=asym)
    for m in (1, 1000, 20000):
        x = torch.randn(cols, m)
        acc.add_batch(x, x * 2 if asym else None)
        tensors = [v for v in vars(acc).values() if isinstance(v, (torch.Tensor, np.ndarray))]
        assert len(tensors) == (3 if asym else 1)
        assert all(tuple(t.shape) == (cols, cols) for t in tensors)
        containers = [v for v in vars(acc).values() if isinstance(v, (list, tuple, dict))]
        assert not containers  # no growing buffers of batches
    assert acc.count == 21001


def test_accumulator_errors():
    acc = CovarianceAccumulator(3, asymmetric=True)
    with pytest.raises(ValueError, match="needs? x_hat|x_hat"):
        acc.add_batch(torch.ones(3, 4), where="layer 'fc'")
    with pytest.raises(ValueError, match="x_hat has shape"):
        acc.add_batch(torch.ones(3, 4), torch.ones(3, 5))
    with pytest.raises(ValueError, match="quantized network"):
        acc.add_batch(torch.ones(3, 4), torch.full((3, 4), float("nan")))
    with pytest.raises(ValueError, match="features, expected 3"):
        CovarianceAccumulator(3).add_batch(torch.ones(4, 2))
    with pytest.raises(ValueError, match="non-finite"):
        CovarianceAccumulator(3).add_batch(torch.tensor([[1.0], [float("inf")], [0.0]]), where="here")
    with pytest.raises(ValueError, match="empty"):
        CovarianceAccumulator(3).H


def test_rejected_batch_leaves_accumulator_unchanged():
    acc = CovarianceAccumulator(2, asymmetric=True)
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    acc.add_batch(x, x)
    H = acc.H.copy()
    with pytest.raises(ValueError):
        acc.add_batch(10 * x)  # no x_hat
    with pytest.raises(ValueError):
        acc.add_batch(10 * x, torch.full((2, 2), float("nan")))
    np.testing.assert_array_equal(acc.H, H)


# ---------------------------------------------------------------------------------- capture_stats

def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, groups=2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 3)).double()


def _inputs(n=70) -> torch.Tensor:
    return torch.randn(n, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def test_capture_stats_matches_direct_unfold():
    model, x = _model(), _inputs()
    stats = capture_stats(model, ["0", "3"], x)
    assert set(stats) == {"0", "3"}
    conv = get_layer(model, "0")
    cols = conv.unfold_input(x).numpy()
    assert len(stats["0"].groups) == 2
    for g in range(2):
        np.testing.assert_allclose(stats["0"].groups[g].H, cols[g] @ cols[g].T / cols.shape[2], rtol=1e-12)
    with torch.no_grad():
        h = model[2](model[1](model[0](x))).numpy()
    np.testing.assert_allclose(stats["3"].groups[0].H, h.T @ h / len(h), rtol=1e-12, atol=1e-14)
    assert stats["0"].count == 70 * 25 and stats["3"].count == 70


def test_capture_stats_same_H_for_tensor_loader_and_generator():
    model, x = _model(), _inputs()
    y = torch.arange(len(x)) % 3
    from_tensor = capture_stats(model, ["0", "3"], x)
    from_loader = capture_stats(model, ["0", "3"], DataLoader(TensorDataset(x, y), batch_size=16))

    def gen():
        for a in range(0, len(x), 23):
            yield x[a:a + 23]

    from_gen = capture_stats(model, ["0", "3"], gen())
    from_list_of_pairs = capture_stats(model, ["0", "3"], [(x[:40], y[:40]), (x[40:], y[40:])])
    for other in (from_loader, from_gen, from_list_of_pairs):
        for name in ("0", "3"):
            assert other[name].count == from_tensor[name].count
            for a, b in zip(from_tensor[name].groups, other[name].groups):
                np.testing.assert_allclose(a.H, b.H, rtol=1e-12, atol=1e-15)
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed


class _TokenModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, input_ids, attention_mask=None):
        h = self.emb(input_ids)
        if attention_mask is not None:
            h = h * attention_mask[..., None]
        return self.fc(h)


def test_dict_batches_are_keyword_arguments():
    torch.manual_seed(0)
    model = _TokenModel().double()
    ids = torch.randint(0, 11, (6, 5), generator=torch.Generator().manual_seed(2))
    mask = (torch.rand(6, 5, generator=torch.Generator().manual_seed(3)) > 0.3).double()
    batches = [{"input_ids": ids[:4], "attention_mask": mask[:4]},
               {"input_ids": ids[4:], "attention_mask": mask[4:]}]
    stats = capture_stats(model, ["fc"], batches)
    with torch.no_grad():
        h = (model.emb(ids) * mask[..., None]).reshape(-1, 4).numpy()
    assert stats["fc"].count == 30
    np.testing.assert_allclose(stats["fc"].groups[0].H, h.T @ h / 30, rtol=1e-12)
    # without the mask keyword the statistics differ: the dict really reached forward as kwargs
    plain = capture_stats(model, ["fc"], [{"input_ids": ids}])
    assert not np.allclose(plain["fc"].groups[0].H, stats["fc"].groups[0].H)


def test_capture_stats_asymmetric_with_model_hat():
    model, x = _model(), _inputs(20)
    model_hat = copy.deepcopy(model)
    with torch.no_grad():
        model_hat[0].weight.mul_(1.1)
    stats = capture_stats(model, ["3"], x, model_hat=model_hat)
    acc = stats["3"].groups[0]
    with torch.no_grad():
        h = model[2](model[1](model[0](x))).numpy()
        hh = model_hat[2](model_hat[1](model_hat[0](x))).numpy()
    np.testing.assert_allclose(acc.H, h.T @ h / 20, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(acc.H_hat, hh.T @ hh / 20, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(acc.C, hh.T @ h / 20, rtol=1e-12, atol=1e-15)


def test_capture_stats_errors():
    model = _model()
    with pytest.raises(ValueError, match="empty"):
        capture_stats(model, ["0"], torch.zeros(0, 2, 5, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="empty"):
        capture_stats(model, ["0"], [])
    with pytest.raises(ValueError, match="empty"):
        capture_stats(model, ["0"], iter(()))
    with pytest.raises(KeyError, match="nope"):
        capture_stats(model, ["nope"], _inputs(4))
    with pytest.raises(ValueError, match="no layer names"):
        capture_stats(model, [], _inputs(4))
    assert not any(m._forward_hooks for m in model.modules())


def test_nan_activation_names_the_layer():
    model = _model()
    x = _inputs(8)
    with torch.no_grad():
        model[0].bias[1] = float("nan")  # NaN reaches the linear layer "3", not conv "0"
    with pytest.raises(ValueError, match=r"layer '3'.*non-finite") as ei:
        capture_stats(model, ["0", "3"], x)
    assert "'0'" not in str(ei.value)
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed on error
    x = x.clone()
    x[3, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match=r"layer '0'.*non-finite"):
        capture_stats(_model(), ["0"], x)


class _Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Linear(3, 3)
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        return self.used(x)


def test_layer_never_executed():
    with pytest.raises(ValueError, match=r"'unused' was never executed"):
        capture_stats(_Skip(), ["used", "unused"], torch.randn(5, 3))
