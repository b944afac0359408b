"""The data form of AdaRound's relaxation: mini-batches of cached layer inputs (eq. 25).

    minimise  (1/m) || f_a(W X_b + c) - f_a(W_tilde(h(V)) X_hat_b + c) ||_F^2 + lambda * f_reg(V)

over batches ``b`` of ``batch_size`` calibration samples (``m`` columns: samples times positions),
with ``W_tilde = s (L + h(V) - z)`` (fixed entries keep their level). Each row's squared error is
averaged over columns and divided by the row's unit ``u_k`` (:func:`qubo_round.split.row_units`,
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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from qubo_round.layers import LayerAdapter
from qubo_round.relaxations.active import ActiveSet
from qubo_round.relaxations.adaround import FREEZE_CHECK, AdaRoundParams, check_kernel, inverse_rectified_sigmoid
from qubo_round.relaxations.objective import DTYPES, cpu_settings, steps
from qubo_round.relaxations.schedule import AdaRoundSchedule
from qubo_round.split import row_units
from qubo_round.stats import _call

from .state import LayerStep, RunState

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
    from qubo_round.solvers import get_solver, solver_class
    if not solver_class(solver).has_data_form:
        raise ValueError(f"solver {solver!r} has no data form (only solvers with has_data_form, AdaRound's "
                         "relaxation, do); use form='covariance' for other solvers")
    params = {k: v for k, v in solver_params.items() if k != "device"}
    resolved = get_solver(solver, **params).params
    check_kernel(resolved)
    if not resolved.rectified:
        raise ValueError("the data form implements the rectified sigmoid only (rectified=False is "
                         "supported by the covariance form); use form='covariance'")
    return resolved


def solve_data_form(run: RunState, step: LayerStep):
    """Run the data form for every group of the layer ``step``; returns (roundings V, statuses,
    info): ``info`` has the optimiser's (:func:`_optimise`) keys and ``capture_seconds``, the time
    spent caching the layer's input columns."""
    name, problems, lcfg, config, device = step.name, step.problems, step.lcfg, run.config, run.device
    fmodel, qmodel, batches, seed = run.fmodel, run.model_hat, run.batches, step.seed
    try:
        params = data_form_params(lcfg.solver, dict(lcfg.solver_params))
    except ValueError as e:
        raise ValueError(f"layer {name!r}: {e}") from e
    t0 = time.perf_counter()
    X, Xh, positions = capture_columns(fmodel, qmodel, name, batches)
    capture_seconds = time.perf_counter() - t0
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
    rows_g = [p.space.shape[0] for p in problems]
    units = torch.as_tensor(np.concatenate([row_units(p) for p in problems]), device=device)
    with cpu_settings(params.threads, params.flush_subnormals):
        # all groups of a grouped conv in one batched optimisation, fed by the same mini-batches
        cols_in = LayerColumns([p.space for p in problems], X.to(device), Xh.to(device),
                               None if bias is None else bias.to(device), units, step.activation, positions,
                               config.batch_size)
        V, info = _optimise(cols_in, params, gen, device=device, progress=run.progress, label=name)
    log.debug("layer %s: data form %s", name, info)
    return np.split(V, np.cumsum(rows_g)[:-1]), ["feasible"] * len(problems), {**info, "capture_seconds": capture_seconds}


def data_form_grad(h, xb, tb, sbase, s, inv, c, relu: bool) -> torch.Tensor:
    """Gradient in ``h`` (rows, cols) of one mini-batch's loss ``sum_k sum_j inv_k / 2 *
    (f(out_jk) - tb_jk)^2``, with ``out = xb W_tilde^T (+ c)``, ``W_tilde = sbase + s h``, ``f``
    the ReLU or the identity; ``h`` (rows, cols) every entry's current value (fixed ones at their
    level), ``xb`` (m, cols), ``tb`` (m, rows) the batch's inputs and targets ``f(W x + c)``,
    ``inv`` (rows,) ``2 / (m u_k)``. Groups of a grouped conv are batched: ``xb`` (G, m, cols),
    ``tb`` (G, m, rows_g), ``sbase`` (G, rows_g, cols), ``s`` (G, rows_g, 1) (or (G, rows_g,
    cols): group-wise grids), ``inv`` and ``c``
    (G, 1, rows_g), ``h`` (G rows_g, cols); the result has the shape of ``h``. The regulariser and
    the chain rule through the rectified sigmoid are added by :meth:`ActiveSet.step`, as in the
    covariance form."""
    out = xb @ torch.addcmul(sbase, s, h.view(sbase.shape)).transpose(-1, -2)  # (m, rows): W_tilde x_hat
    if relu:
        if c is not None:
            out += c
        err = out.relu().sub_(tb).mul_(out > 0)
    else:
        err = out.sub_(tb)
    return (err.mul_(inv).transpose(-1, -2) @ xb).mul_(s).view(h.shape)


@dataclass
class LayerColumns:
    """A layer's data for the data form.

    Attributes:
        space: a RoundingSpace (one group, ``X, Xh`` (cols, M)) or a list of G spaces (all
            groups of a layer at once, ``X, Xh`` (G, cols, M)).
        X, Xh: float and quantized-network inputs (M = samples * positions, sample-major).
        bias: (rows,) or None; ``units``: (rows,) row units (rows: all groups' rows in order).
        activation: ``none`` or ``relu``; ``positions``: columns per sample; ``batch_size``:
            samples per mini-batch.
    """

    space: Any
    X: torch.Tensor
    Xh: torch.Tensor
    bias: torch.Tensor | None
    units: torch.Tensor
    activation: str = "none"
    positions: int = 1
    batch_size: int = 32


def _optimise(cols_in: LayerColumns, params: AdaRoundParams, gen: torch.Generator, *, device: str = "cpu",
              progress: bool = False, label: str = "") -> tuple[np.ndarray, dict]:
    """AdaRound on mini-batches of ``cols_in`` (:class:`LayerColumns`), seeded by ``gen``.
    Returns the rounding (rows, cols) uint8 and an info dict."""
    t0 = time.perf_counter()
    space, X, Xh, bias, units = cols_in.space, cols_in.X, cols_in.Xh, cols_in.bias, cols_in.units
    activation, positions, batch_size = cols_in.activation, cols_in.positions, cols_in.batch_size
    relu = activation == "relu"
    dt = DTYPES[params.dtype]
    sched = AdaRoundSchedule.of(params)
    spaces = list(space) if isinstance(space, (list, tuple)) else [space]
    G = len(spaces)
    if X.dim() == 2:
        X, Xh = X[None], Xh[None]
    t = dict(dtype=dt, device=device)
    stack = lambda f: torch.as_tensor(np.stack([f(sp) for sp in spaces]), **t)  # noqa: E731  (G, rows_g, ...)
    W = stack(lambda sp: sp.W)
    rg, cols = W.shape[1:]
    samples = X.shape[-1] // positions
    # float target f(W x + c), once; inputs sample-major (samples, positions, cols): a batch is a
    # gather of contiguous rows. Without the ReLU the bias cancels and is left out. One group:
    # plain matrices (the leading group axis dropped); several: batched products.
    with torch.no_grad():
        T = torch.stack([X[g].to(dt).T @ W[g].T for g in range(G)])  # (G, M, rows_g)
        if relu:
            if bias is not None:
                T += bias.to(dt).view(G, 1, rg)
            T.relu_()
        T = T.reshape(G, samples, positions, rg)
        Xs = Xh.to(dt).transpose(-1, -2).contiguous().reshape(G, samples, positions, cols)
    c = None if (bias is None or not relu) else bias.to(dt).view(G, 1, rg)
    s = stack(lambda sp: sp.S)  # (G, rows_g, 1), or (G, rows_g, cols) on group-wise grids
    sbase = s * stack(lambda sp: sp.L - sp.Z)  # s (L - z)
    bs = min(batch_size, samples)
    m = bs * positions
    inv = ((2.0 / m) / units.to(dt)).view(G, 1, rg)  # d/d out of sum_k mean_cols (err^2) / u_k, without the err
    if G == 1:
        T, Xs, s, sbase, inv = T[0], Xs[0], s[0], sbase[0], inv[0]
        c = None if c is None else c[0]
    free = torch.as_tensor(np.concatenate([~sp.fixed_mask for sp in spaces]), device=device)
    fixed_h = torch.as_tensor(np.concatenate([sp.fixed_value for sp in spaces]), **t)
    frac = torch.as_tensor(np.concatenate([sp.frac for sp in spaces]), **t)
    theta = inverse_rectified_sigmoid(frac.clamp(0.0, 1.0))
    aset = ActiveSet(theta, free, fixed_h, params.lr, min_entries=params.compact_min_entries, kernel=params.kernel)  # compacted as entries freeze (relaxations.active)
    lead = (G,) if G > 1 else ()
    draws = torch.randint(samples, (params.iterations, bs), generator=gen).to(device)
    done, frozen = 0, None
    for it in steps(params.iterations, progress, f"data form {label}"):
        n = draws[it]
        sig, h, inside = aset.step_h()
        g = data_form_grad(aset.h, Xs.index_select(-3, n).view(*lead, m, cols),
                           T.index_select(-3, n).view(*lead, m, rg), sbase, s, inv, c, relu)
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
