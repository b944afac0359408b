"""Builders: a layer's rounding problem as an explicit QUBO (method.md sections 1-2).

With ``w`` a float row, ``b = s (L - z)`` its floor candidate, ``d = b - w`` and ``W_hat = b + s v``:

* covariance (eq. 20):  ``E(v) = (d + s v)^T H (d + s v)``
  -> ``Q = s^2 H + diag(2 s H d)``, ``c = d^T H d``  (the local MSE ``E[((w_hat - w)^T x)^2]``)
* asymmetric:  ``E[(w^T x - w_hat^T x_hat)^2]``
  -> ``Q = s^2 H_hat + diag(2 s (H_hat b - C w))``, ``c = b^T H_hat b - 2 b^T C w + w^T H w``
* row Hessian (eq. 17-18): the covariance form with ``H_k`` per row
* full Hessian (eq. 16): one QUBO over ``vec(V)`` (row-major), ``dw = vec(d) + S vec(v)``,
  ``Q = S H S + diag(2 S H vec(d))``, ``c = vec(d)^T H vec(d)``.

On a group-wise grid ``s`` is the vector ``t`` of each weight's group scale: ``s^2 H`` becomes
``T H T`` (``T = diag(t)``) and ``2 s H d`` becomes ``2 t * (H d)``; the row problems then carry
column scales (:attr:`~qubo_round.problem.LayerQUBO.column_scaled`).

The energy of every form is the reconstruction loss (or the second-order loss change times 2)
of the dequantized weights, exactly; the property tests check this against direct computation.
"""
from __future__ import annotations

import numpy as np

from .grid import Grid, RoundingSpace, rounding_space
from .hessian import check_hessian
from .problem import DenseQUBO, LayerQUBO


def _meta(space: RoundingSpace, grid: Grid | None, kind: str, check, **extra) -> dict:
    meta = {"hessian": kind, "rows": space.shape[0], "cols": space.shape[1],
            "free": int((~space.fixed_mask).sum()), "fixed": int(space.fixed_mask.sum())}
    if grid is not None:
        meta.update(bits=grid.bits, granularity=grid.granularity, scheme=grid.scheme,
                    narrow=grid.narrow, scale_method=grid.scale_method)
        if grid.group_size is not None:
            meta.update(group_size=int(grid.group_size))
    if check is not None:
        meta.update(condition=check.condition, damping=check.damping, h_status=check.status,
                    lambda_min=check.lambda_min, lambda_max=check.lambda_max)
    meta.update(extra)
    return meta


def _space(W, grid, space, H=None) -> RoundingSpace:
    if space is not None:
        return space
    if grid is None:
        raise ValueError("pass either a grid or a ready rounding space")
    return rounding_space(W, grid, H=H)


def covariance_problem(W: np.ndarray, H: np.ndarray, grid: Grid | None = None, *,
                       space: RoundingSpace | None = None, damping="auto", **meta) -> LayerQUBO:
    """Local-MSE QUBO (eq. 20) of ``W`` (rows, cols) with ``H = E[x x^T]`` (cols, cols)."""
    H, check = check_hessian(H, damping, name=meta.get("layer", "H"))
    space = _space(W, grid, space, H)
    if H.shape[0] != space.shape[1]:
        raise ValueError(f"H is {H.shape} but W has {space.shape[1]} columns")
    d = space.b - space.W
    Hd = d @ H  # (rows, cols)
    return LayerQUBO(A=H, scale=space.column_scale, linear=2 * space.S * Hd, offset=(Hd * d).sum(1),
                     fixed_mask=space.fixed_mask, fixed_value=space.fixed_value, space=space,
                     meta=_meta(space, grid, "covariance", check, **meta))


def asymmetric_problem(W: np.ndarray, H: np.ndarray, H_hat: np.ndarray, C: np.ndarray,
                       grid: Grid | None = None, *, space: RoundingSpace | None = None,
                       damping="auto", **meta) -> LayerQUBO:
    """Asymmetric reconstruction QUBO (method.md section 2): target from the float inputs
    ``x`` (``H = E[x x^T]``), prediction from the quantized network's inputs ``x_hat``
    (``H_hat = E[x_hat x_hat^T]``, ``C = E[x_hat x^T]``), all (cols, cols)."""
    H_hat, check = check_hessian(H_hat, damping, name=meta.get("layer", "H_hat"))
    C = np.asarray(C, np.float64)
    H = np.asarray(H, np.float64)
    if not (np.isfinite(C).all() and np.isfinite(H).all()):
        raise ValueError("H or C contains NaN or inf; check the calibration data")
    space = _space(W, grid, space, H)
    w, b = space.W, space.b
    g = b @ H_hat - w @ C.T  # rows of (H_hat b - C w)
    offset = (b @ H_hat * b).sum(1) - 2 * (b @ C * w).sum(1) + (w @ H * w).sum(1)
    return LayerQUBO(A=H_hat, scale=space.column_scale, linear=2 * space.S * g, offset=offset,
                     fixed_mask=space.fixed_mask, fixed_value=space.fixed_value, space=space,
                     meta=_meta(space, grid, "asymmetric", check, **meta))


def row_hessian_problem(W: np.ndarray, H_rows: np.ndarray, grid: Grid | None = None, *,
                        space: RoundingSpace | None = None, damping="auto", **meta) -> LayerQUBO:
    """Per-row output-Hessian QUBO (eq. 17-18): ``H_rows`` (rows, cols, cols), row k weighted by
    its own ``H_k = E[(d^2 L/d z_k^2) x x^T]``."""
    H_rows = np.asarray(H_rows, np.float64)
    if H_rows.ndim != 3 or H_rows.shape[1] != H_rows.shape[2]:
        raise ValueError(f"H_rows must be (rows, cols, cols), got {H_rows.shape}")
    checked = [check_hessian(Hk, damping, name=f"{meta.get('layer', 'H')}[row {k}]")
               for k, Hk in enumerate(H_rows)]
    H_rows = np.stack([h for h, _ in checked])
    space = _space(W, grid, space)
    if H_rows.shape[:2] != (space.shape[0], space.shape[1]):
        raise ValueError(f"H_rows is {H_rows.shape} but W is {space.shape}")
    d = space.b - space.W
    Hd = np.einsum("kij,kj->ki", H_rows, d)
    worst = max((c for _, c in checked), key=lambda c: c.condition)
    return LayerQUBO(A=H_rows, scale=space.column_scale, linear=2 * space.S * Hd, offset=(Hd * d).sum(1),
                     fixed_mask=space.fixed_mask, fixed_value=space.fixed_value, space=space,
                     meta=_meta(space, grid, "row-hessian", worst,
                                damping_rows=[c.damping for _, c in checked], **meta))


def full_hessian_problem(W: np.ndarray, H_full: np.ndarray, grid: Grid | None = None, *,
                         space: RoundingSpace | None = None, damping="auto", **meta) -> DenseQUBO:
    """Coupled QUBO (eq. 16) over ``vec(V)`` (row-major) with ``H_full`` (rows*cols, rows*cols)."""
    H_full, check = check_hessian(H_full, damping, name=meta.get("layer", "H_full"))
    space = _space(W, grid, space)
    rows, cols = space.shape
    if H_full.shape[0] != rows * cols:
        raise ValueError(f"H_full is {H_full.shape} but W has {rows}*{cols} = {rows * cols} weights")
    S = np.broadcast_to(space.S, (rows, cols)).reshape(-1)
    d = (space.b - space.W).reshape(-1)
    Hd = H_full @ d
    Q = S[:, None] * H_full * S[None, :]
    Q[np.diag_indices_from(Q)] += 2 * S * Hd
    return DenseQUBO(Q=Q, offset=np.array([d @ Hd]), fixed_mask=space.fixed_mask.reshape(1, -1),
                     fixed_value=space.fixed_value.reshape(1, -1), space=space,
                     meta=_meta(space, grid, "full-hessian", check, sense="min", **meta))
