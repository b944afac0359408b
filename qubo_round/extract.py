"""From a model, a layer name and calibration data to the layer's QUBO problems (one per group)."""
from __future__ import annotations

import logging

import torch
from torch import nn

from . import builders, hessian
from .grid import Grid
from .layers import get_layer
from .problem import QUBOFamily
from .stats import capture_stats

log = logging.getLogger(__name__)

FORMS = ("covariance", "asymmetric", "row-hessian", "full-hessian", "autograd-hessian")


def layer_problems(model: nn.Module, layer: str, data, grid: Grid, *, form: str = "covariance",
                   model_hat: nn.Module | None = None, curvature: str = "gauss-newton",
                   labels: torch.Tensor | None = None, damping="auto") -> list[QUBOFamily]:
    """Build the rounding problems of ``layer`` (one per conv group).

    Args:
        model: float network (left unchanged).
        layer: a Linear/Conv1d/Conv2d name from ``model.named_modules()``.
        data: calibration inputs (tensor, DataLoader or iterable of batches).
        grid: the quantization grid.
        form: ``covariance`` (eq. 20), ``asymmetric`` (needs ``model_hat``), ``row-hessian``
            (eq. 17-18), ``full-hessian`` (eq. 16, Gauss-Newton) or ``autograd-hessian`` (eq. 16,
            exact autograd Hessian; ``data`` must be one tensor).
        model_hat: copy of the network with earlier layers quantized (asymmetric form).
        curvature: ``gauss-newton`` or ``grad2`` for the Hessian forms.
        labels: optional labels for ``grad2`` / ``autograd-hessian``.
        damping: see :mod:`qubo_round.hessian`.
    """
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose one of {', '.join(FORMS)}")
    if isinstance(data, torch.Tensor) and data.shape[0] == 0:
        raise ValueError("calibration data is empty (0 samples); pass at least one input")
    ad = get_layer(model, layer)
    Ws = ad.weights()
    if form == "asymmetric" and model_hat is None:
        raise ValueError("the asymmetric form needs model_hat (the partly quantized network)")
    st = capture_stats(model, [layer], data, model_hat=model_hat if form == "asymmetric" else None)[layer]
    out: list[QUBOFamily] = []
    extra_H = None
    if form == "row-hessian":
        extra_H = hessian.row_hessians(model, layer, data, curvature, labels)
    elif form == "full-hessian":
        extra_H = hessian.full_hessians(model, layer, data, curvature, labels)
    elif form == "autograd-hessian":
        if not isinstance(data, torch.Tensor):
            raise ValueError("the autograd-hessian form needs the calibration data as one tensor")
        extra_H = hessian.autograd_hessian(model, layer, data, labels)
    for g, (W, acc) in enumerate(zip(Ws, st.groups)):
        name = layer if ad.groups == 1 else f"{layer}[group {g}]"
        meta = dict(layer=layer, group=g, groups=ad.groups, form=form, samples=acc.count)
        if form == "covariance":
            p = builders.covariance_problem(W, acc.H, grid, damping=damping, **meta)
        elif form == "asymmetric":
            p = builders.asymmetric_problem(W, acc.H, acc.H_hat, acc.C, grid, damping=damping, **meta)
        else:
            from .grid import rounding_space
            space = rounding_space(W, grid, H=acc.H)
            if form == "row-hessian":
                p = builders.row_hessian_problem(W, extra_H[g], space=space, damping=damping, **meta)
            else:
                p = builders.full_hessian_problem(W, extra_H[g], space=space, damping=damping, **meta)
            p.meta.update(bits=grid.bits, granularity=grid.granularity, scheme=grid.scheme)
        log.debug("built %s problem of %s: %s", form, name, p.shape)
        out.append(p)
    return out
