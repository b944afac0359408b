"""Checks on curvature matrices, the damping rule, and task-loss curvature capture.

Damping rule (applied only where stated, always logged and recorded in ``problem.meta``)::

    H_damped = H + lambda I,   lambda = max(0, -lambda_min(H)) + rel * mean(diag(H))

* ``damping="auto"`` (default): a non-PSD ``H`` (``lambda_min < -1e-9 * lambda_max``) is damped
  with ``rel = 0.01``; a singular PSD ``H`` is kept exactly (the QUBO stays equal to the
  reconstruction loss), with an info message and an infinite condition number.
* ``damping=r`` (a float >= 0): always damp with ``rel = r``.
* ``damping=None``: never damp; a non-PSD ``H`` raises ``ValueError``.

When ``mean(diag(H)) <= 0`` (possible only for a non-PSD ``H``), ``mean(|diag(H)|)`` takes its place
so that the damped matrix is positive definite.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .layers import get_layer
from .stats import iterate_batches

log = logging.getLogger(__name__)

PSD_TOL = 1e-9
AUTO_REL_DAMP = 0.01


@dataclass(frozen=True)
class HessianCheck:
    lambda_min: float
    lambda_max: float
    condition: float  # inf when singular
    damping: float  # lambda added to the diagonal (0 when none)
    status: str  # 'pd', 'singular', 'non-psd'


def check_hessian(H: np.ndarray, damping: str | float | None = "auto", name: str = "H"
                  ) -> tuple[np.ndarray, HessianCheck]:
    """Validate a symmetric curvature matrix (n, n) and apply the damping rule of this module."""
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"{name} must be square, got shape {H.shape}")
    if not np.isfinite(H).all():
        raise ValueError(f"{name} contains NaN or inf; check the calibration data")
    if not np.allclose(H, H.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(H).max())):
        raise ValueError(f"{name} is not symmetric; a curvature matrix must satisfy H == H.T")
    H = (H + H.T) / 2
    eig = _eigvalsh(H)
    lmin, lmax = float(eig[0]), float(eig[-1])
    scale = max(abs(lmax), abs(lmin), 1e-300)
    if lmin < -PSD_TOL * scale:
        status = "non-psd"
    elif lmin <= PSD_TOL * scale:
        status = "singular"
    else:
        status = "pd"
    if damping is not None and damping != "auto":
        if isinstance(damping, bool) or not isinstance(damping, (int, float)) or damping < 0:
            raise ValueError(f"damping must be 'auto', None or a float >= 0, got {damping!r}")
        rel = float(damping)
    elif status == "non-psd":
        if damping is None:
            raise ValueError(f"{name} is not positive semi-definite (min eigenvalue {lmin:.3e}, max "
                             f"{lmax:.3e}); pass damping='auto' or a float to add "
                             "lambda = max(0, -lambda_min) + rel * mean(diag(H)) to its diagonal")
        rel = AUTO_REL_DAMP
    else:
        rel = 0.0
    lam = 0.0
    if rel > 0 or status == "non-psd":
        md = float(np.mean(np.diag(H)))
        lam = max(0.0, -lmin) + rel * (md if md > 0 else float(np.mean(np.abs(np.diag(H)))))
        if lam == 0.0:  # all-zero H: use an absolute damping so the result is PD
            lam = rel if rel > 0 else 1e-12
        H = H + lam * np.eye(H.shape[0])
        log.warning("%s is %s (lambda_min=%.3e, lambda_max=%.3e): damped by adding lambda=%.3e to "
                    "the diagonal (rule: lambda = max(0, -lambda_min) + %.3g * mean(diag(H)))",
                    name, status, lmin, lmax, lam, rel)
        lmin, lmax = lmin + lam, lmax + lam
    elif status == "singular":
        log.info("%s is singular (lambda_min=%.3e, lambda_max=%.3e): kept exact, no damping; "
                 "solvers that factor H apply their own damping", name, lmin, lmax)
    cond = lmax / lmin if lmin > PSD_TOL * scale else float("inf")
    return H, HessianCheck(lmin, lmax, cond, lam, status)


def _eigvalsh(H: np.ndarray) -> np.ndarray:
    """Eigenvalues, ascending; large matrices go to the GPU when one is present."""
    if H.shape[0] >= 512 and torch.cuda.is_available():
        return torch.linalg.eigvalsh(torch.from_numpy(H).cuda()).cpu().numpy()
    return np.linalg.eigvalsh(H)


def _class_sqrt_factors(logits: torch.Tensor) -> torch.Tensor:
    """Rows ``r_c = sqrt(p_c) (e_c - p)`` with ``sum_c r_c r_c^T = diag(p) - p p^T`` (the
    cross-entropy Hessian w.r.t. the logits). logits (N, K) -> (K, N, K)."""
    p = torch.softmax(logits.detach(), dim=-1)
    eye = torch.eye(p.shape[-1], dtype=p.dtype)
    return torch.sqrt(p).T[:, :, None] * (eye[:, None, :] - p[None, :, :])


def _logits(model: nn.Module, batch) -> torch.Tensor:
    out = model(**batch) if isinstance(batch, dict) else model(batch)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ValueError("task-loss curvature needs a classifier returning logits (N, classes); "
                         f"the model returned {type(out).__name__} "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}")
    return out


def output_gradients(model: nn.Module, layer_name: str, data, method: str = "gauss-newton",
                     labels: torch.Tensor | None = None):
    """Yield per-batch ``(x_cols, Gz)`` for a layer of a classifier.

    ``x_cols``: (groups, cols, N*P) unfolded inputs; ``Gz``: (F, N, out, P) output gradients of
    ``F`` scalar functions whose outer products sum to the curvature of the cross-entropy loss:

    * ``"gauss-newton"``: F = classes, gradients of ``r_c . logits`` (exact Gauss-Newton).
    * ``"grad2"``: F = 1, gradient of the summed cross-entropy with ``labels`` (or the float
      model's own predictions when no labels are given): squared output gradients.
    """
    if method not in ("gauss-newton", "grad2"):
        raise ValueError(f"curvature method must be 'gauss-newton' or 'grad2', got {method!r}")
    ad = get_layer(model, layer_name)
    store: dict[str, torch.Tensor] = {}

    def hook(_m, inputs, out):
        store["x"] = inputs[0].detach()
        store["z"] = out
    handle = ad.module.register_forward_hook(hook)
    offset = 0
    try:
        for batch in iterate_batches(data):
            with torch.enable_grad():
                logits = _logits(model, batch)
                z = store["z"]
                if method == "grad2":
                    if labels is not None:
                        y = labels[offset: offset + logits.shape[0]]
                    else:
                        y = logits.argmax(-1)
                    offset += logits.shape[0]
                    funcs = [F.cross_entropy(logits, y, reduction="sum")]
                else:
                    R = _class_sqrt_factors(logits)
                    funcs = [(R[c] * logits).sum() for c in range(R.shape[0])]
                grads = [torch.autograd.grad(f, z, retain_graph=True)[0] for f in funcs]
            Gz = torch.stack(grads).detach().to(torch.float64)
            Gz = Gz.reshape(Gz.shape[0], Gz.shape[1], Gz.shape[2], -1)  # (F, N, out, P)
            x_cols = ad.unfold_input(store["x"]).to(torch.float64)
            if not (torch.isfinite(Gz).all() and torch.isfinite(x_cols).all()):
                raise ValueError(f"layer {layer_name!r}: non-finite activations or gradients in the "
                                 "calibration batch")
            yield x_cols, Gz
    finally:
        handle.remove()


def row_hessians(model: nn.Module, layer_name: str, data, method: str = "gauss-newton",
                 labels: torch.Tensor | None = None) -> list[np.ndarray]:
    """Per-row Hessians ``H_k = E[(d^2 L / d z_k^2) x x^T]`` (eq. 17-18), one array
    (rows, cols, cols) float64 per group; the expectation is over samples and positions."""
    ad = get_layer(model, layer_name)
    acc = [torch.zeros(ad.rows, ad.cols, ad.cols, dtype=torch.float64) for _ in range(ad.groups)]
    count = 0
    for x_cols, Gz in output_gradients(model, layer_name, data, method, labels):
        c = (Gz**2).sum(0)  # (N, out, P): diagonal curvature per output element
        c = c.permute(1, 0, 2).reshape(ad.groups, ad.rows, -1)  # (groups, rows, N*P)
        for g in range(ad.groups):
            for k in range(ad.rows):
                acc[g][k] += (x_cols[g] * c[g, k]) @ x_cols[g].T
        count += x_cols.shape[-1]
    if count == 0:
        raise ValueError("calibration data is empty")
    return [(a / count).numpy() for a in acc]


def full_hessians(model: nn.Module, layer_name: str, data, method: str = "gauss-newton",
                  labels: torch.Tensor | None = None, max_variables: int = 4096) -> list[np.ndarray]:
    """Coupled Gauss-Newton Hessian of the task loss w.r.t. ``vec(W)`` (row-major) per group
    (eq. 16 without the diagonal assumption): ``E_n[sum_f g_nf g_nf^T]``, g the per-sample
    weight gradient of function f. Arrays (rows*cols, rows*cols) float64."""
    ad = get_layer(model, layer_name)
    nv = ad.rows * ad.cols
    if nv > max_variables:
        raise ValueError(f"layer {layer_name!r} has {nv} weights per group; the full Hessian is "
                         f"limited to {max_variables} (use the row-hessian or covariance form)")
    acc = [torch.zeros(nv, nv, dtype=torch.float64) for _ in range(ad.groups)]
    count = 0
    for x_cols, Gz in output_gradients(model, layer_name, data, method, labels):
        Fn, N, out, P = Gz.shape
        x = x_cols.reshape(ad.groups, ad.cols, N, P)
        Gg = Gz.reshape(Fn, N, ad.groups, ad.rows, P)
        for g in range(ad.groups):
            gw = torch.einsum("fnkp,inp->fnki", Gg[:, :, g], x[g]).reshape(Fn * N, nv)
            acc[g] += gw.T @ gw
        count += N
    if count == 0:
        raise ValueError("calibration data is empty")
    return [(a / count).numpy() for a in acc]


def autograd_hessian(model: nn.Module, layer_name: str, inputs: torch.Tensor,
                     labels: torch.Tensor | None = None) -> list[np.ndarray]:
    """Exact Hessian of the mean cross-entropy w.r.t. the layer weight, by autograd
    (``torch.autograd.functional.hessian``), split per group like :func:`full_hessians`.
    Labels default to the float model's predictions. Tiny layers only."""
    ad = get_layer(model, layer_name)
    weight = ad.module.weight
    orig = weight.detach().clone()
    with torch.no_grad():
        y = labels if labels is not None else model(inputs).argmax(-1)

    def loss_of(w: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(torch.func.functional_call(model, {f"{layer_name}.weight": w}, (inputs,)), y)

    Hfull = torch.autograd.functional.hessian(loss_of, orig.to(torch.float64).to(orig.dtype))
    nw = orig.numel()
    Hfull = Hfull.reshape(nw, nw).to(torch.float64).numpy()
    per = ad.rows * ad.cols
    return [Hfull[g * per:(g + 1) * per, g * per:(g + 1) * per] for g in range(ad.groups)]
