"""Layer adapters: Linear / Conv1d / Conv2d as per-group ``W[rows, cols]`` whose unfolded input
columns reproduce the module output (qubo_round/layers.py, method.md section 1, appendix B)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from qubo_round.layers import LayerAdapter, get_layer, is_supported, supported_layers

# torch's own note about padding='same' with even kernels (it copies the input); not ours to test
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


def _double(m: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    m = m.double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    return m


LINEAR_CASES = {
    "linear": (lambda: nn.Linear(7, 5), (4, 7)),
    "linear-nobias": (lambda: nn.Linear(6, 3, bias=False), (5, 6)),
    "linear-3d-input": (lambda: nn.Linear(4, 2), (3, 5, 4)),
}

CONV1D_CASES = {
    "conv1d-pad1": (lambda: nn.Conv1d(3, 4, 3, padding=1), (2, 3, 9)),
    "conv1d-pad0-nobias": (lambda: nn.Conv1d(3, 4, 3, bias=False), (2, 3, 9)),
    "conv1d-pad2-stride2": (lambda: nn.Conv1d(3, 5, 3, padding=2, stride=2), (2, 3, 10)),
    "conv1d-dilation2": (lambda: nn.Conv1d(2, 3, 3, padding=1, dilation=2), (3, 2, 11)),
    "conv1d-same": (lambda: nn.Conv1d(3, 4, 5, padding="same"), (2, 3, 8)),
    "conv1d-same-even-kernel": (lambda: nn.Conv1d(3, 4, 4, padding="same"), (2, 3, 8)),
    "conv1d-same-dilation": (lambda: nn.Conv1d(2, 2, 4, padding="same", dilation=2), (2, 2, 12)),
    "conv1d-valid": (lambda: nn.Conv1d(3, 4, 3, padding="valid"), (2, 3, 8)),
    "conv1d-reflect": (lambda: nn.Conv1d(3, 4, 3, padding=2, padding_mode="reflect"), (2, 3, 9)),
    "conv1d-circular": (lambda: nn.Conv1d(3, 4, 3, padding=1, padding_mode="circular"), (2, 3, 9)),
    "conv1d-circular-stride": (lambda: nn.Conv1d(2, 4, 5, padding=2, stride=3, padding_mode="circular"),
                               (2, 2, 13)),
    "conv1d-same-reflect": (lambda: nn.Conv1d(3, 4, 4, padding="same", padding_mode="reflect"), (2, 3, 9)),
    "conv1d-groups2": (lambda: nn.Conv1d(4, 6, 3, padding=1, groups=2), (2, 4, 7)),
    "conv1d-depthwise": (lambda: nn.Conv1d(4, 8, 3, padding=1, groups=4, padding_mode="reflect"), (2, 4, 7)),
}

CONV2D_CASES = {
    "conv2d": (lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 6, 5)),
    "conv2d-nobias": (lambda: nn.Conv2d(3, 4, (2, 3), bias=False), (2, 3, 6, 5)),
    "conv2d-groups2": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), (2, 4, 5, 5)),
    "conv2d-depthwise": (lambda: nn.Conv2d(3, 3, 3, padding=1, groups=3), (2, 3, 5, 6)),
    "conv2d-depthwise-mult2": (lambda: nn.Conv2d(3, 6, 3, padding=1, groups=3), (2, 3, 5, 6)),
    "conv2d-stride2": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 7, 8)),
    "conv2d-stride-tuple": (lambda: nn.Conv2d(2, 3, 3, stride=(2, 1), padding=(1, 0)), (2, 2, 7, 6)),
    "conv2d-dilation2": (lambda: nn.Conv2d(3, 4, 3, dilation=2, padding=2), (2, 3, 8, 7)),
    "conv2d-same": (lambda: nn.Conv2d(3, 4, 3, padding="same"), (2, 3, 5, 6)),
    "conv2d-same-even": (lambda: nn.Conv2d(2, 3, (2, 4), padding="same", dilation=(1, 2)), (2, 2, 6, 7)),
    "conv2d-valid": (lambda: nn.Conv2d(3, 4, 3, padding="valid"), (2, 3, 5, 6)),
    "conv2d-reflect": (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (2, 3, 5, 6)),
    "conv2d-reflect-asym-pad": (lambda: nn.Conv2d(2, 4, 3, padding=(1, 2), padding_mode="reflect",
                                                  groups=2), (2, 2, 5, 6)),
    "conv2d-circular": (lambda: nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular"), (1, 2, 4, 5)),
    "conv2d-replicate": (lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="replicate"), (2, 2, 4, 5)),
    "conv2d-all": (lambda: nn.Conv2d(4, 4, 3, stride=2, dilation=2, padding=2, groups=2,
                                     padding_mode="reflect"), (2, 4, 9, 9)),
}

ALL_CASES = {**LINEAR_CASES, **CONV1D_CASES, **CONV2D_CASES}


@pytest.mark.parametrize("case", list(ALL_CASES))
def test_unfolded_columns_reproduce_module_output(case):
    make, in_shape = ALL_CASES[case]
    m = _double(make(), seed=len(case))
    ad = LayerAdapter(m, case)
    x = torch.randn(*in_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = m(x)
        cols = ad.unfold_input(x)
    G = ad.groups
    assert G == getattr(m, "groups", 1)
    Ws = ad.weights()
    assert len(Ws) == G
    assert cols.shape[0] == G and cols.shape[1] == ad.cols
    assert cols.dtype == torch.float64
    if isinstance(m, nn.Linear):
        out_rows = out.reshape(-1, out.shape[-1]).T  # (out, N*...)
    else:
        out_rows = out.transpose(0, 1).reshape(out.shape[1], -1)  # (C_out, N*P)
    assert cols.shape[2] == out_rows.shape[1]
    bias = m.bias.detach().numpy() if m.bias is not None else np.zeros(out_rows.shape[0])
    for g in range(G):
        sl = slice(g * ad.rows, (g + 1) * ad.rows)
        assert Ws[g].shape == (ad.rows, ad.cols) and Ws[g].dtype == np.float64
        pred = Ws[g] @ cols[g].numpy() + bias[sl, None]
        np.testing.assert_allclose(pred, out_rows[sl].numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("case", ["linear", "conv1d-groups2", "conv2d-depthwise-mult2", "conv2d-all"])
def test_rows_cols_groups(case):
    m = ALL_CASES[case][0]()
    ad = LayerAdapter(m)
    w = m.weight
    G = getattr(m, "groups", 1)
    assert ad.groups == G
    assert ad.rows == w.shape[0] // G
    assert ad.cols == int(np.prod(w.shape[1:]))
    assert ad.is_conv == (not isinstance(m, nn.Linear))


def test_flattened_kernel_order_is_channel_kh_kw():
    m = nn.Conv2d(2, 1, (2, 3), bias=False).double()
    with torch.no_grad():
        m.weight.copy_(torch.arange(12, dtype=torch.float64).reshape(1, 2, 2, 3))
    np.testing.assert_array_equal(LayerAdapter(m).weights()[0], np.arange(12.0)[None, :])


@pytest.mark.parametrize("case", ["linear", "conv1d-depthwise", "conv2d-groups2", "conv2d-all"])
def test_weights_write_back_round_trip(case):
    m = _double(ALL_CASES[case][0](), seed=1)
    ad = LayerAdapter(m, case)
    before = m.weight.detach().clone()
    param = m.weight
    ad.write_back(ad.weights())
    assert torch.equal(m.weight, before)
    rng = np.random.default_rng(0)
    new = [rng.normal(size=(ad.rows, ad.cols)) for _ in range(ad.groups)]
    ad.write_back(new)
    assert m.weight is param  # written in place, the parameter object is kept
    for a, b in zip(ad.weights(), new):
        np.testing.assert_array_equal(a, b)
    # group g occupies output channels [g*rows, (g+1)*rows)
    np.testing.assert_array_equal(m.weight.detach()[:ad.rows].reshape(ad.rows, -1).numpy(), new[0])


def test_weights_are_copies():
    m = nn.Linear(3, 2).double()
    ad = LayerAdapter(m)
    W = ad.weights()[0]
    W[:] = 123.0
    assert not (m.weight.detach() == 123.0).any()


@pytest.mark.parametrize("make", [lambda: nn.Linear(5, 3), lambda: nn.Conv2d(4, 6, 3, groups=2)])
def test_write_back_keeps_float32(make):
    m = make()
    assert m.weight.dtype == torch.float32
    ad = LayerAdapter(m)
    W = ad.weights()
    assert all(w.dtype == np.float64 for w in W)
    new = [w * 0.5 + 1e-9 for w in W]  # float64 values, not float32-representable
    ad.write_back(new)
    assert m.weight.dtype == torch.float32
    assert m.weight.requires_grad
    for a, b in zip(ad.weights(), new):
        np.testing.assert_array_equal(a, b.astype(np.float32).astype(np.float64))


def test_write_back_rejects_wrong_shapes_and_group_counts():
    m = nn.Conv2d(4, 6, 3, groups=2)
    ad = LayerAdapter(m, "conv")
    before = m.weight.detach().clone()
    good = ad.weights()
    with pytest.raises(ValueError, match=r"conv: expected 2 group matrices, got 1"):
        ad.write_back(good[:1])
    with pytest.raises(ValueError, match=r"expected 2 group matrices, got 3"):
        ad.write_back(good + good[:1])
    with pytest.raises(ValueError, match=r"group 1 has shape \(3, 17\), expected \(3, 18\)"):
        ad.write_back([good[0], np.zeros((3, 17))])
    with pytest.raises(ValueError, match=r"group 0 has shape \(18, 3\)"):
        ad.write_back([good[0].T, good[1]])
    with pytest.raises(ValueError, match="shape"):
        ad.write_back([good[0].reshape(-1), good[1]])
    assert torch.equal(m.weight.detach(), before)  # nothing written on error
    lin = LayerAdapter(nn.Linear(3, 2), "fc")
    with pytest.raises(ValueError, match="expected 1 group matrices, got 2"):
        lin.write_back([np.zeros((2, 3))] * 2)


@pytest.mark.parametrize("module, type_name", [
    (nn.ConvTranspose2d(2, 2, 3), "ConvTranspose2d"),
    (nn.LSTM(3, 4), "LSTM"),
    (nn.Conv3d(1, 1, 1), "Conv3d"),
    (nn.Embedding(5, 3), "Embedding"),
])
def test_unsupported_modules_raise_type_error(module, type_name):
    assert not is_supported(module)
    with pytest.raises(TypeError, match=type_name) as ei:
        LayerAdapter(module, "bad")
    assert "Linear" in str(ei.value) and "Conv2d" in str(ei.value)  # it lists what is supported
    model = nn.Sequential(nn.Linear(3, 3), module)
    with pytest.raises(TypeError, match=type_name):
        get_layer(model, "1")


def test_get_layer_and_supported_layers():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(),
                          nn.Sequential(nn.Linear(8, 4), nn.Conv1d(1, 1, 1)))
    names = supported_layers(model)
    assert list(names) == ["0", "3.0", "3.1"]
    ad = get_layer(model, "3.0")
    assert isinstance(ad, LayerAdapter) and ad.module is model[3][0] and ad.name == "3.0"
    with pytest.raises(KeyError) as ei:
        get_layer(model, "fc9")
    msg = str(ei.value)
    assert "fc9" in msg and "0, 3.0, 3.1" in msg
    with pytest.raises(TypeError, match="ReLU"):
        get_layer(model, "1")


def test_get_layer_unknown_name_without_supported_layers():
    with pytest.raises(KeyError, match=r"\(none\)"):
        get_layer(nn.Sequential(nn.ReLU()), "x")
