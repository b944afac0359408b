"""The fused step kernel (relaxations.fused, adaround kernel="compiled").

The formulas are checked uncompiled against the eager step (float32 rounding apart), then the
compiled kernel end to end against the eager one: same iterations and compactions, roundings
equal but for near-ties, energies within 1e-3 relative (fused code may round the last bit of a
transcendental or a multiply-add differently; over 1500 annealed steps that moves a few
near-tie entries)."""
from __future__ import annotations

import pytest
import torch

from qubo_round.pipeline.data_form import LayerColumns, _optimise, data_form_params
from qubo_round.relaxations import fused
from qubo_round.relaxations.active import ActiveSet
from qubo_round.relaxations.objective import row_units
from qubo_round.solvers import get_solver

from test_active_set import layer


@pytest.mark.parametrize("beta, lam", [(None, 1.0), (12.0, 0.5), (2.0, 1.0)])
def test_formulas_equal_the_eager_step(beta, lam):
    g = torch.Generator().manual_seed(0)
    rows, n = 6, 40
    theta = torch.randn(rows, n, generator=g, dtype=torch.float64) * 3
    free = torch.ones(rows, n, dtype=torch.bool)
    eager = ActiveSet(theta.clone(), free, torch.zeros(rows, n, dtype=torch.float64), 0.05)
    ref = ActiveSet(theta.clone(), free, torch.zeros(rows, n, dtype=torch.float64), 0.05)
    ref._fused = (fused.rectified_h, fused.adam_update)  # the same code path, uncompiled
    ref._next = None
    for _ in range(5):
        g_h = torch.randn(rows, n, generator=g, dtype=torch.float64)
        sig, h, inside = eager.step_h()
        eager.step(g_h.clone(), h, sig, inside, beta, lam)
        s2, h2, i2 = ref.step_h()
        torch.testing.assert_close(h2, h, rtol=0, atol=1e-12)
        ref.step(g_h.clone(), h2, s2, i2, beta, lam)
        torch.testing.assert_close(ref.theta, eager.theta, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ref.opt.v, eager.opt.v, rtol=1e-12, atol=1e-15)


def test_compiled_kernel_matches_eager_covariance_form():
    _, _, p = layer(0, rows=32, cols=120)
    runs = {k: get_solver("adaround", iterations=1500, lr=0.05, kernel=k, compact_min_entries=0).solve(p, seed=0)
            for k in ("eager", "compiled")}
    e, c = runs["eager"], runs["compiled"]
    assert e.info["iterations_done"] == c.info["iterations_done"]
    assert c.info["compactions"] >= 1
    assert (e.best != c.best).mean() <= 0.01
    E = {k: float(p.energies(r.best).sum()) for k, r in runs.items()}
    assert abs(E["compiled"] - E["eager"]) <= 1e-3 * E["eager"]
    assert (c.best != p.space.nearest()).any()


def test_compiled_kernel_in_the_data_form():
    W, X, p = layer(2)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    out = {}
    for k in ("eager", "compiled"):
        params = data_form_params("adaround", {"iterations": 800, "lr": 0.05, "kernel": k})
        out[k] = _optimise(LayerColumns(p.space, Xt, Xt, None, torch.as_tensor(row_units(p))), params,
                           torch.Generator().manual_seed(0))[0]
    assert (out["eager"] != out["compiled"]).mean() <= 0.01


def test_bad_kernel_and_uncompilable_machine_named(monkeypatch):
    with pytest.raises(ValueError, match="kernel must be one of"):
        get_solver("adaround", kernel="fast")
    _, _, p = layer(0)

    def broken():
        def fail(*a, **k):
            raise OSError("no C++ compiler found")
        return fail, fail
    monkeypatch.setattr(fused, "kernels", broken)
    with pytest.raises(RuntimeError, match=r"cannot compile on this machine \(OSError: no C\+\+ compiler found\); "
                                           r"use kernel='eager'"):
        get_solver("adaround", iterations=10, kernel="compiled").solve(p, seed=0)
