"""Property tests: the QUBO energy (offset included) equals the reconstruction loss computed
directly from the dequantized weights on the data (method.md sections 1-2)."""
import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from qubo_round.extract import layer_problems
from qubo_round.grid import Grid
from qubo_round.layers import LayerAdapter



class Perturb(nn.Module):
    """A deterministic stand-in for 'earlier layers are quantized': x_hat = f(x) != x."""

    def forward(self, x):
        return x + 0.3 * torch.sin(3 * x) + 0.05


def _layer(kind: str, rng: np.random.Generator, groups: int) -> nn.Module:
    if kind == "linear":
        m = nn.Linear(int(rng.integers(2, 12)), int(rng.integers(1, 6)))
    elif kind == "conv1d":
        m = nn.Conv1d(2 * groups, 2 * groups, 3, padding=1, groups=groups, padding_mode="reflect")
    else:
        m = nn.Conv2d(2 * groups, 3 * groups, 3, stride=2, padding=1, groups=groups)
    with torch.no_grad():
        w = torch.as_tensor(rng.standard_t(3, size=tuple(m.weight.shape)))  # heavy tails -> clipping
        m.weight.copy_(w)
    return m.double()


def _input(kind: str, m: nn.Module, rng, n: int) -> torch.Tensor:
    if kind == "linear":
        return torch.as_tensor(rng.normal(size=(n, m.in_features)))
    if kind == "conv1d":
        return torch.as_tensor(rng.normal(size=(n, m.in_channels, 7)))
    return torch.as_tensor(rng.normal(size=(n, m.in_channels, 5, 6)))


def _random_assignment(problems, rng):
    return [p.apply_fixed(rng.integers(0, 2, size=p.shape).astype(np.uint8)) for p in problems]


def _loss(out_float: torch.Tensor, out_hat: torch.Tensor) -> float:
    """sum over output channels of E over (samples, positions) of the squared output error."""
    d = (out_float - out_hat).transpose(0, 1).reshape(out_float.shape[1], -1)
    return float((d.detach()**2).sum() / d.shape[1])


grids = st.builds(Grid, bits=st.integers(2, 8), granularity=st.sampled_from(["channel", "tensor"]),
                  scheme=st.sampled_from(["symmetric", "asymmetric"]),
                  scale_method=st.sampled_from(["minmax", "mse", "output-mse"])
                  ).filter(lambda g: True)


@st.composite
def grid_strategy(draw):
    scheme = draw(st.sampled_from(["symmetric", "asymmetric"]))
    narrow = draw(st.booleans()) if scheme == "symmetric" else False
    granularity = draw(st.sampled_from(["channel", "tensor"]))
    method = draw(st.sampled_from(["minmax", "mse", "output-mse"]))
    # group-wise grids (per row and group of input columns; the last group may be shorter)
    group = draw(st.sampled_from([None, 2, 3, 5])) if granularity == "channel" and method != "output-mse" else None
    return Grid(bits=draw(st.integers(2, 8)), granularity=granularity, scheme=scheme, narrow=narrow,
                scale_method=method, search_points=20, group_size=group)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["linear", "conv1d", "conv2d"]), groups=st.sampled_from([1, 2]),
       grid=grid_strategy(), seed=st.integers(0, 2**31 - 1), asym=st.booleans())
def test_energy_equals_reconstruction_loss(kind, groups, grid, seed, asym):
    rng = np.random.default_rng(seed)
    layer = _layer(kind, rng, groups)
    x = _input(kind, layer, rng, 20)
    model = nn.Sequential(nn.Identity(), layer)
    model_hat = nn.Sequential(Perturb(), copy.deepcopy(layer))
    problems = layer_problems(model, "1", x, grid, form="asymmetric" if asym else "covariance",
                              model_hat=model_hat, damping=None)
    V = _random_assignment(problems, rng)
    energy = sum(p.energy(v) for p, v in zip(problems, V))
    q = copy.deepcopy(layer)
    LayerAdapter(q).write_back([p.space.dequantize(v) for p, v in zip(problems, V)])
    x_hat = Perturb()(x) if asym else x
    direct = _loss(layer(x), q(x_hat))
    assert energy == pytest.approx(direct, rel=1e-9, abs=1e-12)


def test_clipped_weights_are_fixed_and_keep_identity():
    rng = np.random.default_rng(1)
    layer = _layer("conv2d", rng, 2)
    with torch.no_grad():
        layer.weight[0, 0, 0, 0] = 40.0  # far outside the MSE grid
    x = _input("conv2d", layer, rng, 16)
    grid = Grid(bits=3, scale_method="mse", granularity="tensor")
    problems = layer_problems(nn.Sequential(layer), "0", x, grid)
    assert problems[0].fixed_mask.sum() > 0
    sp = problems[0].space
    assert sp.fixed_mask[0, 0]
    assert sp.integers(sp.nearest())[0, 0] == sp.qmax  # clipped to the top level
    V = _random_assignment(problems, rng)
    q = copy.deepcopy(layer)
    LayerAdapter(q).write_back([p.space.dequantize(v) for p, v in zip(problems, V)])
    energy = sum(p.energy(v) for p, v in zip(problems, V))
    assert energy == pytest.approx(_loss(layer(x), q(x)), rel=1e-9)


def test_batched_energies_match_single():
    rng = np.random.default_rng(2)
    layer = _layer("linear", rng, 1)
    x = _input("linear", layer, rng, 30)
    p = layer_problems(nn.Sequential(layer), "0", x, Grid(bits=3))[0]
    X = np.stack(_random_assignment([p] * 7, rng))
    E = p.energies(X)
    assert E.shape == (7, p.rows)
    for i in range(7):
        np.testing.assert_allclose(E[i], [X[i, k] @ p.matrix(k) @ X[i, k] + p.offset[k]
                                          for k in range(p.rows)], rtol=1e-12)
