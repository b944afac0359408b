"""Quantization grids: integer limits, scale choice, and the floor/ceil rounding space.

A grid maps a weight matrix ``W[rows, cols]`` to integers ``q`` in ``[n, p]`` with a scale ``s``
(per tensor or per output row) and a zero point ``z``::

    W_hat = s * (q - z),        q = clip(floor(W / s) + z + V, n, p),   V in {0, 1}      (eq. 10, 22)

=====================  ===================  ==========================
scheme                 limits [n, p]        zero point z
=====================  ===================  ==========================
symmetric, full        [-2^(b-1), 2^(b-1)-1]  0
symmetric, narrow      [-(2^(b-1)-1), 2^(b-1)-1]  0
asymmetric             [0, 2^b - 1]         round(-min / s), in [n, p]
=====================  ===================  ==========================

A weight whose two candidates ``clip(F, n, p)`` and ``clip(F + 1, n, p)`` coincide (``F`` the
shifted floor) has no choice: its variable is *fixed* (at 0, with the level already clipped).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

Granularity = Literal["channel", "tensor"]
Scheme = Literal["symmetric", "asymmetric"]
ScaleMethod = Literal["minmax", "mse", "output-mse"]

#: Scale used for an all-zero channel. Its weights are represented exactly (all variables fixed
#: at the zero level), so the value is only a placeholder that keeps every division finite.
ZERO_CHANNEL_SCALE = 1.0


@dataclass(frozen=True)
class Grid:
    """A weight quantization grid.

    Attributes:
        bits: 2..8.
        granularity: ``"channel"`` (one scale per output row) or ``"tensor"``.
        scheme: ``"symmetric"`` (z = 0) or ``"asymmetric"`` (zero point).
        narrow: symmetric only: use ``[-(2^(b-1)-1), 2^(b-1)-1]`` instead of the full range.
        scale_method: ``"minmax"`` (max-abs when symmetric), ``"mse"`` (minimise
            ``||W - W_nearest||_F^2``, the paper's choice) or ``"output-mse"`` (minimise
            ``tr(dW H dW^T)``, the output MSE on calibration data; needs ``H``).
        search_points: candidate scales tried by the MSE searches.
    """

    bits: int = 4
    granularity: Granularity = "channel"
    scheme: Scheme = "symmetric"
    narrow: bool = False
    scale_method: ScaleMethod = "mse"
    search_points: int = 100

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)):
            raise TypeError(f"bits must be an integer in 2..8, got {self.bits!r}")
        if not 2 <= int(self.bits) <= 8:
            raise ValueError(f"bits={self.bits} is outside the supported range 2..8; choose 2 to 8 bits")
        if self.granularity not in ("channel", "tensor"):
            raise ValueError(f"granularity must be 'channel' or 'tensor', got {self.granularity!r}")
        if self.scheme not in ("symmetric", "asymmetric"):
            raise ValueError(f"scheme must be 'symmetric' or 'asymmetric', got {self.scheme!r}")
        if self.narrow and self.scheme != "symmetric":
            raise ValueError("narrow=True only applies to the symmetric scheme; drop it for asymmetric grids")
        if self.scale_method not in ("minmax", "mse", "output-mse"):
            raise ValueError(
                f"scale_method must be 'minmax', 'mse' or 'output-mse', got {self.scale_method!r}")
        if self.search_points < 2:
            raise ValueError(f"search_points must be >= 2, got {self.search_points}")

    @property
    def limits(self) -> tuple[int, int]:
        """Integer limits ``(n, p)`` of the grid."""
        b = int(self.bits)
        if self.scheme == "asymmetric":
            return 0, 2**b - 1
        if self.narrow:
            return -(2 ** (b - 1) - 1), 2 ** (b - 1) - 1
        return -(2 ** (b - 1)), 2 ** (b - 1) - 1


def _check_weight(W: np.ndarray) -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"W must be a 2-D matrix [rows, cols], got shape {W.shape}")
    if W.size == 0:
        raise ValueError(f"W is empty (shape {W.shape}); there is nothing to quantize")
    if not np.isfinite(W).all():
        bad = np.argwhere(~np.isfinite(W))[0]
        raise ValueError(
            f"W contains non-finite values (first at row {bad[0]}, col {bad[1]}: {W[tuple(bad)]}); "
            "fix or remove the NaN/inf weights before quantizing")
    return W


def _minmax_qparams(lo: np.ndarray, hi: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point covering ``[lo, hi]`` (arrays of the same shape)."""
    n, p = grid.limits
    if grid.scheme == "symmetric":
        amax = np.maximum(np.abs(lo), np.abs(hi))
        s = amax / p
        z = np.zeros_like(s)
    else:
        lo = np.minimum(lo, 0.0)
        hi = np.maximum(hi, 0.0)
        s = hi / (p - n) - lo / (p - n)  # no overflow of hi - lo for huge finite weights
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(s > 0, np.clip(np.round(n - lo / np.where(s > 0, s, 1.0)), n, p), 0.0)
    return s, z


def nearest_dequant(W: np.ndarray, s: np.ndarray, z: np.ndarray, grid: Grid) -> np.ndarray:
    """Round-to-nearest on the grid: ``s * (clip(round(W/s) + z, n, p) - z)``; s, z broadcast."""
    n, p = grid.limits
    r = W / s
    f = np.floor(r)
    q = np.clip(f + (r - f >= 0.5) + z, n, p)  # the same rounding as RoundingSpace.nearest
    return s * (q - z)


def choose_qparams(W: np.ndarray, grid: Grid, H: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Choose the scale ``s`` and zero point ``z`` of each row.

    Args:
        W: (rows, cols) float weights.
        grid: the grid.
        H: (cols, cols) activation second moment ``E[x x^T]``, needed for ``output-mse``.

    Returns:
        ``s`` (rows,) float64 > 0 and ``z`` (rows,) float64 integers (the same value in every row
        for per-tensor grids). All-zero rows get ``ZERO_CHANNEL_SCALE`` and a warning.
    """
    W = _check_weight(W)
    rows = W.shape[0]
    axis = 1 if grid.granularity == "channel" else None
    lo = np.min(W, axis=axis, keepdims=True).reshape(-1)
    hi = np.max(W, axis=axis, keepdims=True).reshape(-1)
    s0, z0 = _minmax_qparams(lo, hi, grid)
    if grid.scale_method != "minmax":
        if grid.scale_method == "output-mse" and H is None:
            raise ValueError("scale_method='output-mse' needs H = E[x x^T] (cols, cols); "
                             "pass H or use scale_method='mse'")
        s0, z0 = _search_qparams(W, lo, hi, s0, z0, grid, H if grid.scale_method == "output-mse" else None)
    if not np.isfinite(s0).all():
        raise ValueError("the weight range is too large for a finite float64 scale; rescale the weights")
    s = np.broadcast_to(s0, (rows,)).astype(np.float64).copy()
    z = np.broadcast_to(z0, (rows,)).astype(np.float64).copy()
    zero = ~(s > 0)
    if zero.any():
        which = np.flatnonzero(zero)
        log.warning("%d all-zero channel(s) (rows %s%s): they are kept exactly at 0 with all variables "
                    "fixed; their scale is set to the placeholder %s", len(which), which[:8].tolist(),
                    "..." if len(which) > 8 else "", ZERO_CHANNEL_SCALE)
        s[zero] = ZERO_CHANNEL_SCALE
        z[zero] = np.clip(0.0, *grid.limits)
    return s, z


def _search_qparams(W, lo, hi, s0, z0, grid: Grid, H):
    """Shrink the min-max range by factors in (0, 1]; keep the factor with the lowest error."""
    alphas = np.linspace(1.0, 1.0 / grid.search_points, grid.search_points)
    per_row = grid.granularity == "channel"
    cands = [_minmax_qparams(lo * a, hi * a, grid) for a in alphas]
    safe = [np.where(s > 0, s, 1.0) for s, _ in cands]  # the scales rounded with (s = 0: no candidate)
    if per_row:
        errs = _row_errors(W, [(sf, z) for sf, (_, z) in zip(safe, cands)], grid, H)
    else:
        errs = []
        for sf, (_, z) in zip(safe, cands):
            dW = nearest_dequant(W, sf[0], z[0], grid) - W
            errs.append(np.array([(dW**2).sum() if H is None else np.einsum("rc,cd,rd->r", dW, H, dW).sum()]))
    best_err = np.full(s0.shape, np.inf)
    best_s, best_z = s0.copy(), z0.copy()
    for (s, z), err in zip(cands, errs):
        better = (err < best_err) & (s > 0)
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, s, best_s)
        best_z = np.where(better, z, best_z)
    return best_s, best_z


#: Elements per block of rows in the per-channel scale search (its temporaries stay in cache).
SEARCH_BLOCK = 1 << 15


def _row_errors(W, cands, grid: Grid, H) -> np.ndarray:
    """(candidates, rows) error of each row under each candidate ``(s, z)`` (per-row arrays, s > 0):
    ``|dW_k|^2``, or ``dW_k^T H dW_k`` with ``H``, where ``dW = nearest_dequant(W, s, z) - W``.
    Blocks of rows with every candidate in turn, in preallocated buffers: the arithmetic of
    :func:`nearest_dequant` element by element (the same values), without its full-size
    temporaries (about 2x faster on MiniLM's layers: ``benchmarks/construction_speed.py``)."""
    n, p = grid.limits
    rows, cols = W.shape
    out = np.empty((len(cands), rows))
    step = max(1, SEARCH_BLOCK // max(cols, 1))
    r_buf, f_buf, up_buf = np.empty((step, cols)), np.empty((step, cols)), np.empty((step, cols), dtype=bool)
    shifted = [bool(z.any()) for _, z in cands]  # symmetric grids: no zero point to add and remove
    for r0 in range(0, rows, step):
        w = W[r0:r0 + step]
        m = w.shape[0]
        r, f, up = r_buf[:m], f_buf[:m], up_buf[:m]
        for i, (s, z) in enumerate(cands):
            sb, zb = s[r0:r0 + m, None], z[r0:r0 + m, None]
            np.divide(w, sb, out=r)  # r = W / s
            np.floor(r, out=f)
            np.subtract(r, f, out=r)
            np.greater_equal(r, 0.5, out=up)
            np.add(f, up, out=f)  # round half up
            if shifted[i]:
                np.add(f, zb, out=f)
            np.clip(f, n, p, out=f)
            if shifted[i]:
                np.subtract(f, zb, out=f)
            np.multiply(sb, f, out=f)
            np.subtract(f, w, out=f)  # dW
            if H is None:
                np.multiply(f, f, out=f)
                out[i, r0:r0 + m] = f.sum(axis=1)
            else:
                out[i, r0:r0 + m] = np.einsum("rc,cd,rd->r", f, H, f)
    return out


@dataclass(frozen=True)
class RoundingSpace:
    """The binary choices of one weight matrix on a fixed grid.

    ``W_hat = s[:, None] * (L + V - z[:, None])`` with ``V`` in {0,1}; fixed entries keep
    ``V = fixed_value`` (0 for clipped weights and all-zero rows).

    Attributes:
        W: (rows, cols) float64 weights.
        s: (rows,) float64 scales.  z: (rows,) float64 integer zero points.
        L: (rows, cols) int64 lower levels (already clipped to [n, p]).
        fixed_mask: (rows, cols) bool, True where the rounding has no choice.
        fixed_value: (rows, cols) uint8, the value of fixed variables (0 here).
        qmin, qmax: integer limits n, p.
    """

    W: np.ndarray
    s: np.ndarray
    z: np.ndarray
    L: np.ndarray
    fixed_mask: np.ndarray
    fixed_value: np.ndarray
    qmin: int
    qmax: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.W.shape

    @property
    def b(self) -> np.ndarray:
        """(rows, cols) the floor candidate ``s * (L - z)`` (``b`` of method.md section 2)."""
        return self.s[:, None] * (self.L - self.z[:, None])

    @property
    def frac(self) -> np.ndarray:
        """(rows, cols) fractional part of ``W/s`` in [0, 1) for free entries; fixed entries give
        their fixed value. The probability of rounding up in stochastic rounding."""
        f = self.W / self.s[:, None] - np.floor(self.W / self.s[:, None])
        return np.where(self.fixed_mask, self.fixed_value.astype(np.float64), f)

    def nearest(self) -> np.ndarray:
        """(rows, cols) uint8 ``V`` of round-to-nearest (ties up), fixed entries respected."""
        return np.where(self.fixed_mask, self.fixed_value, self.frac >= 0.5).astype(np.uint8)

    def integers(self, V: np.ndarray) -> np.ndarray:
        """(rows, cols) int64 grid integers ``q = L + V`` (in [qmin, qmax])."""
        V = self.check_assignment(V)
        return self.L + V.astype(np.int64)

    def dequantize(self, V: np.ndarray) -> np.ndarray:
        """(rows, cols) float64 ``W_hat = s * (L + V - z)``."""
        return self.s[:, None] * (self.integers(V) - self.z[:, None])

    def check_assignment(self, V: np.ndarray) -> np.ndarray:
        V = np.asarray(V)
        if V.shape != self.shape:
            raise ValueError(f"assignment has shape {V.shape}, expected {self.shape}")
        if not np.isin(V, (0, 1)).all():
            raise ValueError("assignment must be binary (0 or 1 in every entry)")
        bad = self.fixed_mask & (V != self.fixed_value)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"assignment violates fixed variable ({r}, {c}) = {self.fixed_value[r, c]}")
        return V


def rounding_space(W: np.ndarray, grid: Grid, H: np.ndarray | None = None,
                   s: np.ndarray | None = None, z: np.ndarray | None = None) -> RoundingSpace:
    """Build the rounding space of ``W`` (rows, cols) on ``grid``.

    The scale is chosen by ``grid.scale_method`` unless ``s`` (rows,) (and ``z``) are given.
    """
    W = _check_weight(W)
    if s is None:
        s, z = choose_qparams(W, grid, H)
    else:
        s = np.broadcast_to(np.asarray(s, np.float64), (W.shape[0],)).copy()
        z = np.zeros_like(s) if z is None else np.broadcast_to(np.asarray(z, np.float64), s.shape).copy()
        if not (np.isfinite(s).all() and (s > 0).all()):
            raise ValueError("every scale must be finite and > 0")
    n, p = grid.limits
    zero_rows = ~np.any(W != 0, axis=1)
    F = np.floor(W / s[:, None]) + z[:, None]
    free = (F >= n) & (F <= p - 1) & ~zero_rows[:, None]
    L = np.clip(F, n, p)
    L[zero_rows] = z[zero_rows, None]  # exact zero
    return RoundingSpace(W=W, s=s, z=z, L=L.astype(np.int64), fixed_mask=~free,
                         fixed_value=np.zeros(W.shape, np.uint8), qmin=n, qmax=p)
