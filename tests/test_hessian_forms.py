"""Task-loss Hessian forms (eq. 16-18) against direct per-sample computations."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qubo_round.extract import layer_problems
from qubo_round.grid import Grid


def _model(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 5)).double()
    x = torch.randn(6, 2, 4, 4, dtype=torch.float64)
    return m, x


def _per_sample_gn(m, x):
    """Per sample: z_n (3,4,4) and the Gauss-Newton matrix G_n = J^T (diag p - p p^T) J (48, 48)."""
    head = m[1:]
    out = []
    for n in range(x.shape[0]):
        z = m[0](x[n:n + 1]).detach()
        J = torch.autograd.functional.jacobian(lambda zz: head(zz)[0], z).reshape(5, -1)
        p = torch.softmax(head(z)[0], -1).detach()
        out.append(J.T @ (torch.diag(p) - torch.outer(p, p)) @ J)
    return out


def _dz(m, x, dW):
    return F.conv2d(x, torch.as_tensor(dW).reshape(m[0].weight.shape), padding=1)  # (N, 3, 4, 4)


def _assignment(p, rng):
    return p.apply_fixed(rng.integers(0, 2, size=p.shape).astype(np.uint8))


def test_row_hessian_energy_is_diagonal_gauss_newton_loss():
    m, x = _model()
    p = layer_problems(m, "0", x, Grid(bits=3), form="row-hessian", damping=None)[0]
    assert not p.shared and p.A.shape == (3, 18, 18)
    rng = np.random.default_rng(0)
    G = _per_sample_gn(m, x)
    for _ in range(3):
        V = _assignment(p, rng)
        dz = _dz(m, x, p.space.dequantize(p.to_rounding(V)) - p.space.W).reshape(6, -1)
        direct = sum(float((torch.diagonal(G[n]) * dz[n] ** 2).sum()) for n in range(6)) / (6 * 16)
        assert p.energy(V) == pytest.approx(direct, rel=1e-9)


def test_full_hessian_energy_is_gauss_newton_quadratic_form():
    m, x = _model(1)
    p = layer_problems(m, "0", x, Grid(bits=2), form="full-hessian", damping=None)[0]
    assert p.shape == (1, 3 * 18)
    rng = np.random.default_rng(1)
    G = _per_sample_gn(m, x)
    for _ in range(3):
        X = _assignment(p, rng)
        dz = _dz(m, x, p.space.dequantize(p.to_rounding(X)) - p.space.W).reshape(6, -1)
        direct = sum(float(dz[n] @ G[n] @ dz[n]) for n in range(6)) / 6
        assert p.energy(X) == pytest.approx(direct, rel=1e-9)


def test_gauss_newton_equals_exact_autograd_hessian_for_piecewise_linear_net():
    m, x = _model(2)
    gn = layer_problems(m, "0", x, Grid(bits=4), form="full-hessian", damping=None)[0]
    ex = layer_problems(m, "0", x, Grid(bits=4), form="autograd-hessian", damping=None)[0]
    np.testing.assert_allclose(gn.Q, ex.Q, rtol=1e-8, atol=1e-10)


def test_grad2_row_weights_are_squared_output_gradients():
    m, x = _model(3)
    p = layer_problems(m, "0", x, Grid(bits=3), form="row-hessian", curvature="grad2", damping=None)[0]
    z = m[0](x).detach().requires_grad_(True)
    logits = m[1:](z)
    g = torch.autograd.grad(F.cross_entropy(logits, logits.argmax(-1), reduction="sum"), z)[0]
    V = _assignment(p, np.random.default_rng(3))
    dz = _dz(m, x, p.space.dequantize(V) - p.space.W)
    direct = float((g**2 * dz**2).sum()) / (6 * 16)
    assert p.energy(V) == pytest.approx(direct, rel=1e-9)


def test_unknown_curvature_method_is_refused():
    m, x = _model()
    with pytest.raises(ValueError, match="curvature method"):
        layer_problems(m, "0", x, Grid(bits=3), form="row-hessian", curvature="fisher")


def test_full_hessian_refuses_large_layers():
    m = nn.Sequential(nn.Linear(100, 64), nn.Linear(64, 3)).double()
    with pytest.raises(ValueError, match="full Hessian is limited"):
        layer_problems(m, "0", torch.randn(4, 100, dtype=torch.float64), Grid(bits=3), form="full-hessian")
