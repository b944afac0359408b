"""Bad input at the model level gets a clear error that names the problem."""
import numpy as np
import pytest
import torch
from torch import nn

from qubo_round.extract import layer_problems
from qubo_round.grid import Grid


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))


def test_nan_or_inf_weights():
    m = _model()
    with torch.no_grad():
        m[3].weight[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite values \(first at row 1, col 2"):
        layer_problems(m, "3", torch.randn(8, 1, 4, 4), Grid(bits=4))
    with torch.no_grad():
        m[3].weight[1, 2] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        layer_problems(m, "3", torch.randn(8, 1, 4, 4), Grid(bits=4))


def test_nan_activations_name_the_layer():
    x = torch.randn(8, 1, 4, 4)
    x[3, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"layer '3': non-finite input activations"):
        layer_problems(_model(), "3", x, Grid(bits=4))


def test_empty_calibration_data():
    with pytest.raises(ValueError, match="calibration data is empty"):
        layer_problems(_model(), "0", torch.empty(0, 1, 4, 4), Grid(bits=4))
    with pytest.raises(ValueError, match="calibration data is empty"):
        layer_problems(_model(), "0", [], Grid(bits=4))


def test_unknown_layer_lists_the_supported_ones():
    with pytest.raises(KeyError, match=r"no layer named 'conv9'.*supported layers: 0, 3"):
        layer_problems(_model(), "conv9", torch.randn(4, 1, 4, 4), Grid(bits=4))


def test_unsupported_layer_type():
    m = nn.Sequential(nn.ConvTranspose2d(1, 2, 3))
    with pytest.raises(TypeError, match="ConvTranspose2d is not supported"):
        layer_problems(m, "0", torch.randn(2, 1, 4, 4), Grid(bits=4))


@pytest.mark.parametrize("bits", [1, 9, 0, 16])
def test_bits_outside_2_to_8(bits):
    with pytest.raises(ValueError, match=f"bits={bits} is outside the supported range 2..8"):
        Grid(bits=bits)


def test_all_zero_channel_through_a_model(caplog):
    m = _model()
    with torch.no_grad():
        m[3].weight[0] = 0.0
    with np.errstate(all="raise"):
        p = layer_problems(m, "3", torch.randn(16, 1, 4, 4), Grid(bits=3))[0]
    assert "all-zero channel" in caplog.text
    assert p.fixed_mask[0].all() and np.isfinite(p.offset).all()
    V = p.apply_fixed(np.ones(p.shape, np.uint8))
    assert (p.space.dequantize(V)[0] == 0).all()


def test_asymmetric_form_needs_the_quantized_model():
    with pytest.raises(ValueError, match="needs model_hat"):
        layer_problems(_model(), "0", torch.randn(4, 1, 4, 4), Grid(bits=4), form="asymmetric")


def test_unknown_form():
    with pytest.raises(ValueError, match="unknown form 'hessian'"):
        layer_problems(_model(), "0", torch.randn(4, 1, 4, 4), Grid(bits=4), form="hessian")
