"""Quantization grids: integer limits, scale choice, and the floor/ceil rounding space.

A grid maps a weight matrix ``W[rows, cols]`` to integers ``q`` in ``[n, p]`` with a scale ``s``
(per tensor, per output row, or per row and group of ``group_size`` consecutive input columns,
as GPTQ, AWQ and torchao quantize transformers) and a zero point ``z``::

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
from dataclasses import dataclass, replace
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
        group_size: None (one scale per row or tensor), or ``g``: per-channel grids with one scale
            and zero point per row and group of ``g`` consecutive input columns (the last group
            of a row may be shorter); the MSE search then runs per group. The columns of a
            convolution are its flattened ``(in, kh, kw)`` inputs.
    """

    bits: int = 4
    granularity: Granularity = "channel"
    scheme: Scheme = "symmetric"
    narrow: bool = False
    scale_method: ScaleMethod = "mse"
    search_points: int = 100
    group_size: int | None = None

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
        g = self.group_size
        if g is not None:
            if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1:
                raise ValueError(f"group_size must be a positive integer (e.g. 128) or None, got {g!r}")
            if self.granularity != "channel":
                raise ValueError("group_size needs granularity='channel' (groups split each row); "
                                 "drop group_size or use per-channel scales")
            if self.scale_method == "output-mse":
                raise ValueError("scale_method='output-mse' couples the groups of a row through H and is "
                                 "not searched per group; use scale_method='mse' or 'minmax' with group_size")

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


def scale_shape(rows: int, cols: int, group_size: int | None) -> tuple[int, ...]:
    """Shape of the scales and zero points of a (rows, cols) weight: ``(rows,)`` per row
    (``group_size`` 0 or None), ``(rows, ceil(cols / group_size))`` per group."""
    return (rows,) if not group_size else (rows, -(-cols // int(group_size)))


def expand_groups(a: np.ndarray, cols: int, group_size: int) -> np.ndarray:
    """(rows, G) per-group values -> (rows, cols): column ``j`` takes group ``j // group_size``."""
    return np.repeat(a, group_size, axis=1)[:, :cols]


def _per_entry(a: np.ndarray, cols: int, group_size: int) -> np.ndarray:
    """Per-row (rows,) or per-group (rows, G) values as (rows, 1) or (rows, cols)."""
    return expand_groups(a, cols, int(group_size)) if group_size else a[:, None]


def _group_blocks(W: np.ndarray, g: int) -> np.ndarray:
    """(rows * G, g) the groups of ``W`` (rows, cols) as rows, the last one padded with zeros
    (a zero weight is represented exactly by every candidate scale, so the padding changes no
    range and no error)."""
    rows, cols = W.shape
    G = scale_shape(rows, cols, g)[1]
    Wp = np.zeros((rows, G * g))
    Wp[:, :cols] = W
    return Wp.reshape(rows * G, g)


def choose_qparams(W: np.ndarray, grid: Grid, H: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Choose the scale ``s`` and zero point ``z`` of each row (or each row's column groups).

    Args:
        W: (rows, cols) float weights.
        grid: the grid.
        H: (cols, cols) activation second moment ``E[x x^T]``, needed for ``output-mse``.

    Returns:
        ``s`` (rows,) float64 > 0 and ``z`` (rows,) float64 integers (the same value in every row
        for per-tensor grids); with ``grid.group_size = g`` both are (rows, ceil(cols / g)).
        All-zero rows (groups) get ``ZERO_CHANNEL_SCALE`` and a warning.
    """
    W = _check_weight(W)
    what = "channel"
    if grid.group_size is not None:
        rows, g = W.shape[0], int(grid.group_size)
        s, z = _qparams(_group_blocks(W, g), replace(grid, group_size=None), None)
        s, z, what = s.reshape(rows, -1), z.reshape(rows, -1), "group"
    else:
        s, z = _qparams(W, grid, H)
    zero = ~(s > 0)
    if zero.any():
        which = np.argwhere(zero)[:, 0] if s.ndim == 2 else np.flatnonzero(zero)
        log.warning("%d all-zero %s(s) (rows %s%s): they are kept exactly at 0 with all variables "
                    "fixed; their scale is set to the placeholder %s", int(zero.sum()), what,
                    which[:8].tolist(), "..." if len(which) > 8 else "", ZERO_CHANNEL_SCALE)
        s[zero] = ZERO_CHANNEL_SCALE
        z[zero] = np.clip(0.0, *grid.limits)
    return s, z


def _qparams(W: np.ndarray, grid: Grid, H: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(rows,) scales (0 for all-zero rows) and zero points of ``W`` on a grid without groups."""
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

    ``W_hat = S * (L + V - Z)`` with ``V`` in {0,1}, ``S`` and ``Z`` the scale and zero point of
    each entry (:attr:`S`, :attr:`Z`); fixed entries keep ``V = fixed_value`` (0 for clipped
    weights and all-zero rows or groups).

    Attributes:
        W: (rows, cols) float64 weights.
        s: (rows,) float64 scales, or (rows, G) per group of ``group_size`` columns.
        z: the zero points, float64 integers, shaped as ``s``.
        L: (rows, cols) int64 lower levels (already clipped to [n, p]).
        fixed_mask: (rows, cols) bool, True where the rounding has no choice.
        fixed_value: (rows, cols) uint8, the value of fixed variables (0 here).
        qmin, qmax: integer limits n, p.
        group_size: 0 (one scale per row) or ``g`` (column ``j`` in group ``j // g``).
    """

    W: np.ndarray
    s: np.ndarray
    z: np.ndarray
    L: np.ndarray
    fixed_mask: np.ndarray
    fixed_value: np.ndarray
    qmin: int
    qmax: int
    group_size: int = 0

    def __post_init__(self) -> None:
        rows, cols = np.shape(self.W)
        g = self.group_size
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 0:
            raise ValueError(f"group_size must be 0 (per row) or a positive integer, got {g!r}")
        want = scale_shape(rows, cols, g)
        if np.shape(self.s) != want or np.shape(self.z) != want:
            raise ValueError(f"rounding space: scales {np.shape(self.s)} and zero points {np.shape(self.z)} "
                             f"must both be {want} for W {(rows, cols)} and group_size {g}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.W.shape

    def per_entry(self, a: np.ndarray) -> np.ndarray:
        """A per-row (rows,) or per-group (rows, G) array as (rows, 1) or (rows, cols), to
        broadcast against the weights."""
        return _per_entry(a, self.shape[1], self.group_size)

    @property
    def S(self) -> np.ndarray:
        """The scale of every entry, (rows, 1) per row or (rows, cols) per group."""
        return self.per_entry(self.s)

    @property
    def Z(self) -> np.ndarray:
        """The zero point of every entry, shaped as :attr:`S`."""
        return self.per_entry(self.z)

    @property
    def column_scale(self) -> np.ndarray:
        """The QUBO's scale: ``s`` (rows,) per row, the full (rows, cols) ``S`` per group."""
        return self.S if self.group_size else self.s

    @property
    def b(self) -> np.ndarray:
        """(rows, cols) the floor candidate ``S * (L - Z)`` (``b`` of method.md section 2)."""
        return self.S * (self.L - self.Z)

    @property
    def frac(self) -> np.ndarray:
        """(rows, cols) fractional part of ``W/s`` in [0, 1) for free entries; fixed entries give
        their fixed value. The probability of rounding up in stochastic rounding."""
        S = self.S
        f = self.W / S - np.floor(self.W / S)
        return np.where(self.fixed_mask, self.fixed_value.astype(np.float64), f)

    def nearest(self) -> np.ndarray:
        """(rows, cols) uint8 ``V`` of round-to-nearest (ties up), fixed entries respected."""
        return np.where(self.fixed_mask, self.fixed_value, self.frac >= 0.5).astype(np.uint8)

    def integers(self, V: np.ndarray) -> np.ndarray:
        """(rows, cols) int64 grid integers ``q = L + V`` (in [qmin, qmax])."""
        V = self.check_assignment(V)
        return self.L + V.astype(np.int64)

    def dequantize(self, V: np.ndarray) -> np.ndarray:
        """(rows, cols) float64 ``W_hat = S * (L + V - Z)``."""
        return self.S * (self.integers(V) - self.Z)

    def select_rows(self, rows: np.ndarray) -> "RoundingSpace":
        """The space of the given rows only."""
        return RoundingSpace(W=self.W[rows], s=self.s[rows], z=self.z[rows], L=self.L[rows],
                             fixed_mask=self.fixed_mask[rows], fixed_value=self.fixed_value[rows],
                             qmin=self.qmin, qmax=self.qmax, group_size=self.group_size)

    @classmethod
    def stack(cls, spaces: list["RoundingSpace"]) -> "RoundingSpace":
        """The spaces of consecutive row blocks of one weight (e.g. attention heads) as one."""
        first = spaces[0]
        if any((s.qmin, s.qmax, s.group_size, s.shape[1]) != (first.qmin, first.qmax, first.group_size, first.shape[1])
               for s in spaces):
            raise ValueError("RoundingSpace.stack: the blocks differ in grid limits, group size or columns")
        cat = lambda a: np.concatenate([getattr(s, a) for s in spaces])  # noqa: E731
        return cls(W=cat("W"), s=cat("s"), z=cat("z"), L=cat("L"), fixed_mask=cat("fixed_mask"),
                   fixed_value=cat("fixed_value"), qmin=first.qmin, qmax=first.qmax, group_size=first.group_size)

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

    The scale is chosen by ``grid.scale_method`` unless ``s`` (rows,) (and ``z``) are given;
    with ``grid.group_size = g`` they are (rows, ceil(cols / g)).
    """
    W = _check_weight(W)
    rows, cols = W.shape
    g = int(grid.group_size or 0)
    if s is None:
        s, z = choose_qparams(W, grid, H)
    else:
        want = scale_shape(rows, cols, g)
        s = np.broadcast_to(np.asarray(s, np.float64), want).copy()
        z = np.zeros_like(s) if z is None else np.broadcast_to(np.asarray(z, np.float64), want).copy()
        if not (np.isfinite(s).all() and (s > 0).all()):
            raise ValueError("every scale must be finite and > 0")
    n, p = grid.limits
    if g:
        zero = expand_groups(~np.any(_group_blocks(W, g) != 0, axis=1).reshape(rows, -1), cols, g)
    else:
        zero = np.broadcast_to(~np.any(W != 0, axis=1)[:, None], W.shape)
    S, Z = _per_entry(s, cols, g), _per_entry(z, cols, g)
    F = np.floor(W / S) + Z
    free = (F >= n) & (F <= p - 1) & ~zero
    L = np.where(zero, np.broadcast_to(Z, W.shape), np.clip(F, n, p))  # zero rows, groups: exact 0
    return RoundingSpace(W=W, s=s, z=z, L=L.astype(np.int64), fixed_mask=~free,
                         fixed_value=np.zeros(W.shape, np.uint8), qmin=n, qmax=p, group_size=g)
