"""Active-set compaction of AdaRound (relaxations.active): dropping frozen entries changes nothing.

Both forms are run twice, compacting early and often (``compact_min_entries=0``, ``SHRINK = 0.99``)
and never (``compact_min_entries`` huge): the roundings, iteration counts and relaxed energies must be
identical, since a frozen entry's gradient is exactly zero and the active ones go through the same
arithmetic (up to the last bit of an element-wise function, whose vectorised and scalar code may
round differently for an entry that moved position).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import qubo_round.relaxations.active as active
from qubo_round.builders import covariance_problem
from qubo_round.grid import Grid
from qubo_round.relaxations.active import THETA_CLIP, ActiveSet
from qubo_round.pipeline.data_form import LayerColumns, _optimise, data_form_params
from qubo_round.relaxations.objective import row_units
from qubo_round.solvers import get_solver


def layer(seed=0, rows=12, cols=40, samples=200):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(rows, cols))
    W[0, :3] = 9.0  # clipped by the grid: fixed variables, held at their level
    X = np.maximum(rng.normal(size=(cols, samples)), 0)  # post-ReLU inputs, some columns dead
    X[5] = 0.0
    return W, X, covariance_problem(W, X @ X.T / samples, Grid(bits=3))


@pytest.fixture
def compaction(monkeypatch):
    """``compaction(True)``: the parameters that compact at every chance; ``(False)``: never."""
    monkeypatch.setattr(active, "SHRINK", 0.99)
    return lambda on: {"compact_min_entries": 0 if on else 10**12}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("seed", [0, 1])
def test_covariance_form_compaction_is_exact(compaction, dtype, seed):
    _, _, p = layer(seed)
    on = get_solver("adaround", iterations=1500, lr=0.05, dtype=dtype, **compaction(True)).solve(p, seed=0)
    off = get_solver("adaround", iterations=1500, lr=0.05, dtype=dtype, **compaction(False)).solve(p, seed=0)
    assert on.info["compactions"] >= 2 and off.info["compactions"] == 0
    np.testing.assert_array_equal(on.samples, off.samples)
    assert on.info["relaxed_energy"] == off.info["relaxed_energy"]
    assert on.info["iterations_done"] == off.info["iterations_done"]
    assert (on.best != p.space.nearest()).any()  # the relaxation did move away from nearest


def test_data_form_compaction_is_exact(compaction):
    W, X, p = layer(2)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    runs = []
    for on in (True, False):
        params = data_form_params("adaround", {"iterations": 1200, "lr": 0.05, **compaction(on)})
        V, info = _optimise(LayerColumns(p.space, Xt, Xt, None, torch.as_tensor(row_units(p))), params,
                            torch.Generator().manual_seed(0))
        runs.append((V, info))
    (v_on, i_on), (v_off, i_off) = runs
    assert i_on["compactions"] >= 2 and i_off["compactions"] == 0
    np.testing.assert_array_equal(v_on, v_off)
    assert i_on["iterations_done"] == i_off["iterations_done"]


def test_flush_setting_keeps_the_rounding():
    """``flush_subnormals`` is a speed setting: the same rounding either way (subnormals only
    arise in Adam moments of entries whose gradient is exactly zero)."""
    _, _, p = layer(3)
    runs = [get_solver("adaround", iterations=1500, lr=0.05, flush_subnormals=f).solve(p, seed=0) for f in (True, False)]
    np.testing.assert_array_equal(runs[0].samples, runs[1].samples)
    with pytest.raises(ValueError, match="flush_subnormals must be True or False"):
        get_solver("adaround", flush_subnormals=1)
    with pytest.raises(ValueError, match="compact_min_entries must be an integer >= 0"):
        get_solver("adaround", compact_min_entries=-1)


def test_compaction_keeps_frozen_values_and_moments():
    """After a compaction the compact tensors hold exactly the still-active entries' theta and
    Adam moments, and the full theta keeps every frozen entry's value."""
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(6, 10, generator=g, dtype=torch.float64) * 4
    free = torch.ones(6, 10, dtype=torch.bool)
    free[1, 2] = False
    aset = ActiveSet(theta.clone(), free, torch.zeros(6, 10, dtype=torch.float64), lr=0.1)
    aset.opt.m.copy_(torch.randn(6, 10, generator=g, dtype=torch.float64))
    aset.opt.v.copy_(torch.rand(6, 10, generator=g, dtype=torch.float64))
    still = free & (theta.abs() < THETA_CLIP)
    m_before, v_before = aset.opt.m.clone(), aset.opt.v.clone()
    aset._compact(still)
    assert not aset.full and aset.amax == int(still.sum(1).max())
    for k in range(6):
        cols = aset.idx[k][aset.valid[k]]
        assert cols.tolist() == still[k].nonzero().squeeze(1).tolist()
        torch.testing.assert_close(aset.theta[k][aset.valid[k]], theta[k, cols], rtol=0, atol=0)
        torch.testing.assert_close(aset.opt.m[k][aset.valid[k]], m_before[k, cols], rtol=0, atol=0)
        torch.testing.assert_close(aset.opt.v[k][aset.valid[k]], v_before[k, cols], rtol=0, atol=0)
    assert (aset.theta[~aset.valid].abs() > THETA_CLIP).all()  # padding sits in the clipped range
    torch.testing.assert_close(aset.full_theta(), theta, rtol=0, atol=0)
    # a second compaction from the compact layout, then one step: h stays in sync everywhere
    aset._compact(aset.valid & (torch.arange(aset.amax)[None, :] % 2 == 0))
    sig, h, inside = aset.step_h()
    # (an entry's h may differ in the last bit: vectorised and scalar sigmoid code round differently)
    torch.testing.assert_close(aset.h, torch.where(free, aset.forward(aset.full_theta())[1], 0.0),
                               rtol=0, atol=1e-15)


def test_data_form_batches_the_groups():
    """The groups of a grouped conv in one batched data-form optimisation give the roundings of
    one optimisation per group fed by the same mini-batches."""
    probs, Xs = [], []
    for seed in range(3):
        W, X, p = layer(seed, rows=6, cols=20)
        probs.append(p)
        Xs.append(torch.as_tensor(X, dtype=torch.float32))
    X = torch.stack(Xs)
    params = data_form_params("adaround", {"iterations": 600, "lr": 0.05})
    units = [torch.as_tensor(row_units(p)) for p in probs]
    bias = torch.linspace(-0.5, 0.5, 18)
    for activation in ("none", "relu"):
        V, info = _optimise(LayerColumns([p.space for p in probs], X, X, bias, torch.cat(units), activation), params,
                            torch.Generator().manual_seed(0))
        one_by_one = np.concatenate([
            _optimise(LayerColumns(p.space, X[g], X[g], bias[6 * g:6 * (g + 1)], units[g], activation), params,
                      torch.Generator().manual_seed(0))[0] for g, p in enumerate(probs)])
        assert V.shape == (18, 20)
        assert (V == one_by_one).mean() > 0.99, activation
