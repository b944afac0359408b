"""The data form of AdaRound's relaxation: mini-batches of cached layer inputs (eq. 25).

    minimise  (1/m) || f_a(W X_b + c) - f_a(W_tilde(h(V)) X_hat_b + c) ||_F^2 + lambda * f_reg(V)

over batches ``b`` of ``batch_size`` calibration samples (``m`` columns: samples times positions),
with ``W_tilde = s (L + h(V) - z)`` (fixed entries keep their level). Each row's squared error is
averaged over columns and divided by the row's unit ``u_k`` (``relaxations.objective.row_units``,
the loss of moving one weight by one grid step), exactly as the covariance form of ``adaround``
does, so ``lambda`` means the same in both forms. Cost per step about ``4 rows cols m``; needed
when ``f_a`` is a ReLU.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from qubo_round.layers import LayerAdapter
from qubo_round.stats import _call

from .objective import row_units
from .schedule import AdaRoundSchedule, rectified_sigmoid, rectified_sigmoid_inverse, regulariser

log = logging.getLogger(__name__)


def capture_columns(fmodel, qmodel, name: str, batches) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Unfolded inputs of layer ``name`` from the float and the partly quantized model:
    ``X, X_hat`` (groups, cols, M) float32 (M = samples * positions, sample-major), and positions."""
    fl, qm = LayerAdapter(fmodel.get_submodule(name), name), LayerAdapter(qmodel.get_submodule(name), name)
    xs, xhs = [], []
    h1 = fl.module.register_forward_hook(lambda _m, i, _o: xs.append(fl.unfold_input(i[0]).float()))
    h2 = qm.module.register_forward_hook(lambda _m, i, _o: xhs.append(qm.unfold_input(i[0]).float()))
    n = 0
    try:
        with torch.no_grad():
            for b in batches:
                _call(fmodel, b)
                _call(qmodel, b)
                n += int(next(v for v in b.values() if isinstance(v, torch.Tensor)).shape[0]) \
                    if isinstance(b, dict) else int(b.shape[0])
    finally:
        h1.remove()
        h2.remove()
    X, Xh = torch.cat(xs, -1), torch.cat(xhs, -1)
    if not (torch.isfinite(X).all() and torch.isfinite(Xh).all()):
        raise ValueError(f"layer {name!r}: non-finite input activations in the calibration data")
    return X, Xh, X.shape[-1] // n


def solve_data_form(name, fmodel, qmodel, batches, problems, lcfg, config, activation, seed, device, progress):
    """Run the data form for every group of layer ``name``; returns (roundings V, statuses)."""
    if lcfg.solver.split("/")[0] != "adaround":
        raise ValueError(f"layer {name!r}: the data form is AdaRound's relaxation, solver {lcfg.solver!r} "
                         "cannot use it; use form='covariance' for other solvers")
    sched = AdaRoundSchedule.from_params(lcfg.solver_params)
    X, Xh, positions = capture_columns(fmodel, qmodel, name, batches)
    nbytes = 2 * X.numel() * 4
    samples = X.shape[-1] // positions
    keep = samples
    if nbytes > config.ram_budget_mb * 2**20:
        keep = max(1, int(samples * config.ram_budget_mb * 2**20 / nbytes))
        log.warning("layer %s: cached activations need %.0f MB > ram_budget_mb=%g; using %d of %d "
                    "calibration samples for the data form", name, nbytes / 2**20, config.ram_budget_mb,
                    keep, samples)
    gen = torch.Generator().manual_seed(seed)
    if keep < samples:
        idx = torch.randperm(samples, generator=gen)[:keep]
        cols = (idx[:, None] * positions + torch.arange(positions)).reshape(-1)
        X, Xh = X[..., cols], Xh[..., cols]
    module = fmodel.get_submodule(name)
    bias = module.bias.detach().float() if module.bias is not None else None
    Vs = []
    for g, p in enumerate(problems):
        b = None if bias is None else bias[g * p.space.shape[0]:(g + 1) * p.space.shape[0]].to(device)
        units = torch.as_tensor(row_units(p), dtype=torch.float32, device=device)
        Vs.append(_optimise(p.space, X[g].to(device), Xh[g].to(device), b, units, activation, sched,
                            config.batch_size, positions, gen, device, progress, f"{name}[{g}]"))
    return Vs, ["feasible"] * len(problems)


def _optimise(space, X, Xh, bias, units, activation, sched: AdaRoundSchedule, batch_size, positions, gen,
              device, progress, label) -> np.ndarray:
    f = torch.relu if activation == "relu" else (lambda t: t)
    dt = torch.float32
    W = torch.as_tensor(space.W, dtype=dt, device=device)
    s = torch.as_tensor(space.s, dtype=dt, device=device)[:, None]
    base = torch.as_tensor(space.L - space.z[:, None], dtype=dt, device=device)
    free = torch.as_tensor(~space.fixed_mask, device=device)
    fixed_h = torch.as_tensor(space.fixed_value, dtype=dt, device=device)
    V = rectified_sigmoid_inverse(torch.as_tensor(space.frac, dtype=dt, device=device)).requires_grad_(True)
    opt = torch.optim.Adam([V], lr=sched.lr)
    samples = X.shape[-1] // positions
    bs = min(batch_size, samples)
    offs = torch.arange(positions, device=device)
    for t in tqdm(range(sched.iterations), desc=f"data form {label}", disable=not progress, leave=False):
        n = torch.randint(samples, (bs,), generator=gen).to(device)
        cols = (n[:, None] * positions + offs).reshape(-1)
        xb, xhb = X[:, cols], Xh[:, cols]
        target = W @ xb
        h = torch.where(free, rectified_sigmoid(V), fixed_h)
        out = (s * (base + h)) @ xhb
        if bias is not None:
            target, out = target + bias[:, None], out + bias[:, None]
        rec = (((f(target) - f(out)) ** 2).sum(1) / units).sum() / cols.numel()
        beta = sched.beta(t)
        loss = rec if beta is None else rec + sched.lam * regulariser(h[free], beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    V_hard = torch.where(free, (V.detach() >= 0).to(dt), fixed_h)
    return V_hard.cpu().numpy().astype(np.uint8)
