"""The data form of AdaRound's relaxation: mini-batches of cached layer inputs (eq. 25).

    minimise  (1/m) || f_a(W X_b + c) - f_a(W_tilde(h(V)) X_hat_b + c) ||_F^2 + lambda * f_reg(V)

over batches ``b`` of ``batch_size`` calibration samples (``m`` columns: samples times positions),
with ``W_tilde = s (L + h(V) - z)`` (fixed entries keep their level). Each row's squared error is
averaged over columns and divided by the row's unit ``u_k`` (``relaxations.objective.row_units``,
the loss of moving one weight by one grid step), exactly as the covariance form of ``adaround``
does, so ``lambda`` means the same in both forms. Needed when ``f_a`` is a ReLU.

The solver settings are those of the ``adaround`` solver spec of the layer (presets included:
``adaround/fast`` runs 2k iterations at lr 0.1 here too), and the loop is written like the
covariance form's (:mod:`qubo_round.relaxations.adaround`): analytic gradients, the same fused
Adam, the same schedule, the same CPU thread setting and the same early stop once every ``h`` is
clipped and cannot move again. The float target ``f_a(W X + c)`` does not depend on ``V`` and is
computed once; the cached inputs are stored sample-major so that a batch is one gather of
contiguous rows, and the batches are drawn up front. One step costs about ``4 rows cols m`` flops
(forward product and its gradient) plus the ``rows x cols`` element-wise work both forms share.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch
from tqdm.auto import tqdm

import qubo_round.solvers  # noqa: F401  (import order: registers adaround; avoids the objective <-> solvers cycle)
from qubo_round.layers import LayerAdapter
from qubo_round.stats import _call

from .active import ActiveSet
from .adaround import FREEZE_CHECK, AdaRoundParams, inverse_rectified_sigmoid
from .objective import DTYPES, cpu_settings, row_units
from .schedule import AdaRoundSchedule

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


def data_form_params(solver: str, solver_params: dict) -> AdaRoundParams:
    """The resolved :class:`AdaRoundParams` of a layer's solver spec (``adaround`` or
    ``adaround/PRESET``) and parameters: the data form runs with exactly the settings the
    covariance form would (unknown or invalid parameters raise as they would there)."""
    from qubo_round.solvers import get_solver
    if solver.split("/")[0] != "adaround":
        raise ValueError(f"the data form is AdaRound's relaxation, solver {solver!r} cannot use it; "
                         "use form='covariance' for other solvers")
    params = {k: v for k, v in solver_params.items() if k != "device"}
    resolved = get_solver(solver, **params).params
    if not resolved.rectified:
        raise ValueError("the data form implements the rectified sigmoid only (rectified=False is "
                         "supported by the covariance form); use form='covariance'")
    return resolved


def solve_data_form(name, fmodel, qmodel, batches, problems, lcfg, config, activation, seed, device, progress):
    """Run the data form for every group of layer ``name``; returns (roundings V, statuses)."""
    try:
        params = data_form_params(lcfg.solver, dict(lcfg.solver_params))
    except ValueError as e:
        raise ValueError(f"layer {name!r}: {e}") from e
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
    with cpu_settings(params.threads):
        Vs, infos = [], []
        for g, p in enumerate(problems):
            b = None if bias is None else bias[g * p.space.shape[0]:(g + 1) * p.space.shape[0]].to(device)
            units = torch.as_tensor(row_units(p), device=device)
            V, info = _optimise(p.space, X[g].to(device), Xh[g].to(device), b, units, activation, params,
                                config.batch_size, positions, gen, device, progress, f"{name}[{g}]")
            Vs.append(V)
            infos.append(info)
    log.debug("layer %s: data form %s", name, infos)
    return Vs, ["feasible"] * len(problems)


def data_form_grad(h, xb, tb, sbase, s, inv, c, relu: bool) -> torch.Tensor:
    """Gradient in ``h`` (rows, cols) of one mini-batch's loss ``sum_k sum_j inv_k / 2 *
    (f(out_jk) - tb_jk)^2``, with ``out = xb W_tilde^T (+ c)``, ``W_tilde = sbase + s h``, ``f``
    the ReLU or the identity; ``h`` (rows, cols) every entry's current value (fixed ones at their
    level), ``xb`` (m, cols), ``tb`` (m, rows) the batch's inputs and targets ``f(W x + c)``,
    ``inv`` (rows,) ``2 / (m u_k)``. The regulariser and the chain rule through the rectified
    sigmoid are added by :meth:`ActiveSet.step`, as in the covariance form."""
    out = xb @ torch.addcmul(sbase, s, h).T  # (m, rows): W_tilde x_hat
    if relu:
        if c is not None:
            out += c
        err = out.relu().sub_(tb).mul_(out > 0)
    else:
        err = out.sub_(tb)
    return (err.mul_(inv).T @ xb).mul_(s)


def _optimise(space, X, Xh, bias, units, activation, params: AdaRoundParams, batch_size, positions, gen,
              device, progress, label) -> tuple[np.ndarray, dict]:
    """AdaRound on mini-batches for one group: ``X, Xh`` (cols, M) float and quantized-network
    inputs (M = samples * positions, sample-major), ``units`` (rows,) row units. Returns the
    rounding (rows, cols) uint8 and an info dict."""
    t0 = time.perf_counter()
    relu = activation == "relu"
    dt = DTYPES[params.dtype]
    sched = AdaRoundSchedule(iterations=params.iterations, lr=params.lr, lam=params.lam,
                             beta_start=params.beta_start, beta_end=params.beta_end, warmup=params.warmup,
                             decay=params.decay)
    W = torch.as_tensor(space.W, dtype=dt, device=device)
    rows, cols = W.shape
    samples = X.shape[-1] // positions
    # float target f(W x + c), once; inputs sample-major (samples, positions, cols): a batch is a
    # gather of contiguous rows. Without the ReLU the bias cancels and is left out.
    with torch.no_grad():
        T = X.to(dt).T @ W.T  # (M, rows)
        if relu:
            if bias is not None:
                T += bias.to(dt)
            T.relu_()
        T = T.reshape(samples, positions, rows)
        Xs = Xh.to(dt).T.contiguous().reshape(samples, positions, cols)
    c = None if (bias is None or not relu) else bias.to(dt)
    s = torch.as_tensor(space.s, dtype=dt, device=device)[:, None]
    sbase = s * torch.as_tensor(space.L - space.z[:, None], dtype=dt, device=device)  # s (L - z)
    free = torch.as_tensor(~space.fixed_mask, device=device)
    fixed_h = torch.as_tensor(space.fixed_value, dtype=dt, device=device)
    theta = inverse_rectified_sigmoid(torch.as_tensor(space.frac, dtype=dt, device=device).clamp(0.0, 1.0))
    aset = ActiveSet(theta, free, fixed_h, params.lr)  # compacted as entries freeze (relaxations.active)
    bs = min(batch_size, samples)
    m = bs * positions
    inv = (2.0 / m) / units.to(dt)  # d/d out of sum_k mean_cols (err^2) / u_k, without the err
    draws = torch.randint(samples, (params.iterations, bs), generator=gen).to(device)
    done, frozen = 0, None
    for it in tqdm(range(params.iterations), desc=f"data form {label}", disable=not progress, leave=False):
        n = draws[it]
        sig, h, inside = aset.step_h()
        g = data_form_grad(aset.h, Xs.index_select(0, n).view(m, cols), T.index_select(0, n).view(m, rows), sbase,
                           s, inv, c, relu)
        aset.step(aset.gather(g), h, sig, inside, sched.beta(it), params.lam)
        done = it + 1
        if done % FREEZE_CHECK == 0 and aset.check():
            frozen = done
            break
    theta = aset.full_theta()
    V_hard = torch.where(free, (theta >= 0).to(dt), fixed_h)
    info = {"iterations_done": done, "frozen_at": frozen, "compactions": aset.version,
            "seconds": time.perf_counter() - t0}
    return V_hard.cpu().numpy().astype(np.uint8), info
