"""QUBO families: the problem objects every solver receives.

A *QUBO family* is ``rows`` independent minimisation problems over ``n`` binary variables each::

    E_k(x) = x^T Q_k x + c_k,     x in {0,1}^n,  Q_k (n, n) symmetric,  k = 0..rows-1

with linear terms on the diagonal of ``Q_k`` (``x_i^2 = x_i``). Some variables can be *fixed*
(``fixed_mask``); solvers must return them at ``fixed_value``. Two concrete families:

* :class:`LayerQUBO`: the rows of one layer, ``Q_k = s_k^2 A_k + diag(h_k)``, where ``A`` is one
  (cols, cols) matrix shared by all rows (activation covariance, eq. 20; asymmetric form) or
  one matrix per row (per-row output-Hessian weighting, eq. 17-18). With group-wise grids each
  variable has its own step: ``Q_k = T_k A_k T_k + diag(h_k)``, ``T_k = diag(t_k)`` (column
  scales ``t_k`` (cols,), the scale of each weight's group).
* :class:`DenseQUBO`: one general dense QUBO (public instances; the coupled Hessian of eq. 16).

Either may carry a :class:`~qubo_round.grid.RoundingSpace` (``space``): then a solution maps back
to a rounding ``V`` of a weight matrix and the energy is the layer's reconstruction loss.
"""
from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import CapabilityError
from .grid import RoundingSpace


def _finite(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf; a QUBO must have finite coefficients "
                         "(check the weights and calibration activations it was built from)")
    return a


def _check_fixed(mask, value, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    mask, value = np.asarray(mask), np.asarray(value)
    if mask.size != shape[0] * shape[1] or value.size != shape[0] * shape[1]:
        raise ValueError(f"fixed_mask and fixed_value must have {shape} entries, got shapes "
                         f"{mask.shape} and {value.shape}")
    if not np.isin(value, (0, 1)).all():
        raise ValueError("fixed_value must be 0 or 1 in every entry")
    return mask.astype(bool).reshape(shape), value.astype(np.uint8).reshape(shape)


def flip_energy_deltas(X: np.ndarray, QX: np.ndarray, diag: np.ndarray, fixed: np.ndarray | None = None,
                       out: np.ndarray | None = None) -> np.ndarray:
    """Energy change of flipping each single variable of ``X`` (..., n) 0/1 float64, from its
    local fields ``QX = Q x`` and ``diag = diag(Q)`` (broadcast to ``X``):
    ``delta_i (2 (Q x)_i + delta_i Q_ii) = 2 delta_i (Q x)_i + Q_ii`` (``delta_i = 1 - 2 x_i =
    +-1``); +inf where ``fixed`` (None: ``diag`` already holds +inf there). ``out``: a buffer of
    ``X``'s shape to write into."""
    D = np.multiply(X, -4.0, out=out)
    D += 2.0  # 2 delta
    D *= QX
    D += diag
    if fixed is not None:
        D[np.broadcast_to(fixed, D.shape)] = np.inf
    return D


class QUBOFamily(abc.ABC):
    """Base class of all problems. Subclasses define the matrices; energies are computed here."""

    fixed_mask: np.ndarray  # (rows, n) bool
    fixed_value: np.ndarray  # (rows, n) uint8
    offset: np.ndarray  # (rows,) float64
    space: RoundingSpace | None
    meta: dict

    @property
    @abc.abstractmethod
    def shape(self) -> tuple[int, int]:
        """``(rows, n)``."""

    @abc.abstractmethod
    def matrix(self, k: int) -> np.ndarray:
        """(n, n) float64 symmetric ``Q_k`` with linear terms on the diagonal."""

    @abc.abstractmethod
    def _quadratic(self, X: np.ndarray) -> np.ndarray:
        """(..., rows) ``x_k^T Q_k x_k`` for X (..., rows, n) float64."""

    @property
    @abc.abstractmethod
    def diagonal(self) -> np.ndarray:
        """(rows, n) float64 ``diag(Q_k)`` of every row."""

    @abc.abstractmethod
    def matvec(self, X: np.ndarray) -> np.ndarray:
        """(..., rows, n) ``Q_k x_k`` for X (..., rows, n) float64 (the local fields / 2)."""

    @abc.abstractmethod
    def row_columns(self, r: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """(m, n) column ``Q_{r_j}[:, idx_j]`` for row indices r (m,) and variable indices idx (m,):
        the primitive of incremental single-flip solvers (greedy), which update the local fields
        of the rows that flipped."""

    def columns(self, idx: np.ndarray) -> np.ndarray:
        """(..., rows, n) column ``Q_k[:, idx_k]`` of every row for idx (..., rows) int."""
        idx = np.asarray(idx)
        r = np.broadcast_to(np.arange(self.rows), idx.shape)
        return self.row_columns(r.ravel(), idx.ravel()).reshape(*idx.shape, self.n)

    def flip_deltas(self, X: np.ndarray, QX: np.ndarray | None = None) -> np.ndarray:
        """(..., rows, n) energy change of flipping each single variable of X (..., rows, n)
        (:func:`flip_energy_deltas`); +inf on fixed variables."""
        Xf = np.asarray(X, dtype=np.float64)
        QX = self.matvec(Xf) if QX is None else QX
        return flip_energy_deltas(Xf, QX, self.diagonal, self.fixed_mask)

    @property
    def inert(self) -> np.ndarray:
        """(rows, n) bool: variables whose column of ``Q_k`` is zero (a dead input feature of a
        layer: zero row and column of the covariance and zero linear term). Flipping one never
        changes the energy, so a local search should not move them: each is a free sideways step,
        and a tabu search spends its moves cycling through them instead of searching."""
        out = np.zeros(self.shape, bool)
        for k in range(self.rows):
            out[k] = ~np.any(self.matrix(k) != 0, axis=0)
        return out

    def with_inert_fixed(self, X: np.ndarray) -> "QUBOFamily":
        """The same family with its free inert variables fixed at their values in ``X`` (rows, n):
        the same energy for every assignment that agrees with ``X`` there."""
        inert = self.inert & ~self.fixed_mask
        if not inert.any():
            return self
        return replace(self, fixed_mask=self.fixed_mask | inert,
                                   fixed_value=np.where(inert, np.asarray(X, np.uint8), self.fixed_value))

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def n(self) -> int:
        return self.shape[1]

    @property
    def num_free(self) -> np.ndarray:
        """(rows,) number of free variables per row."""
        return (~self.fixed_mask).sum(axis=1)

    def energies(self, X: np.ndarray) -> np.ndarray:
        """Energies of samples ``X`` (..., rows, n) binary -> (..., rows), offsets included."""
        X = self.check_samples(X)
        return self._quadratic(X.astype(np.float64)) + self.offset

    def energy(self, X: np.ndarray) -> float:
        """Total energy of one assignment (rows, n): the sum of the row energies."""
        return float(self.energies(X).sum())

    def check_samples(self, X: np.ndarray, *, fixed: bool = True) -> np.ndarray:
        """Validate shape, binarity and (if ``fixed``) fixed variables of ``X`` (..., rows, n)."""
        X = np.asarray(X)
        if X.shape[-2:] != self.shape:
            raise ValueError(f"samples have trailing shape {X.shape[-2:]}, expected (rows, n) = {self.shape}")
        if X.dtype != np.uint8 and not np.isin(X, (0, 1)).all():
            raise ValueError("samples must be binary (0/1)")
        if X.dtype == np.uint8 and (X > 1).any():
            raise ValueError("samples must be binary (0/1)")
        if fixed and (self.fixed_mask & (X != self.fixed_value)).any():
            raise ValueError("a sample violates a fixed variable")
        return X

    def apply_fixed(self, X: np.ndarray) -> np.ndarray:
        """Return ``X`` (..., rows, n) uint8 with fixed variables set to their values."""
        return np.where(self.fixed_mask, self.fixed_value, X).astype(np.uint8)

    def reduced(self, k: int) -> tuple[np.ndarray, float, np.ndarray]:
        """Row ``k`` with the fixed variables substituted.

        Returns ``(Qf, c, free)``: ``Qf`` (m, m) over the m free variables ``free`` (indices), and
        constant ``c`` so that ``E_k(x) = x_f^T Qf x_f + c`` for every x respecting the fixes.
        """
        Q = self.matrix(k)
        free = np.flatnonzero(~self.fixed_mask[k])
        fx = np.flatnonzero(self.fixed_mask[k])
        xv = self.fixed_value[k, fx].astype(np.float64)
        Qf = Q[np.ix_(free, free)].copy()
        cross = 2.0 * Q[np.ix_(free, fx)] @ xv  # linear terms on the free variables
        Qf[np.diag_indices_from(Qf)] += cross
        c = float(xv @ Q[np.ix_(fx, fx)] @ xv + self.offset[k])
        return Qf, c, free

    def to_rounding(self, X: np.ndarray) -> np.ndarray:
        """Map one assignment (rows, n) to the layer rounding ``V`` (layer rows, cols)."""
        if self.space is None:
            raise ValueError("this problem has no rounding space (it is a plain QUBO, not a layer)")
        return np.asarray(X, dtype=np.uint8).reshape(self.space.shape)

    def from_rounding(self, V: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_rounding`."""
        if self.space is None:
            raise ValueError("this problem has no rounding space (it is a plain QUBO, not a layer)")
        return np.asarray(V, dtype=np.uint8).reshape(self.shape)

    @property
    def prior(self) -> np.ndarray:
        """(rows, n) probability of a 1 suggested by the problem: ``frac(W/s)`` for layers,
        0.5 for plain QUBOs; fixed entries give their value."""
        if self.space is not None:
            p = self.from_rounding_float(self.space.frac)
        else:
            p = np.full(self.shape, 0.5)
        return np.where(self.fixed_mask, self.fixed_value, p)

    def from_rounding_float(self, A: np.ndarray) -> np.ndarray:
        return np.asarray(A, dtype=np.float64).reshape(self.shape)

    def objective(self, energy: float) -> float:
        """The objective in the problem's own sense (see ``meta['sense']``): for maximisation
        instances ``-energy``, otherwise the energy."""
        return -energy if self.meta.get("sense") == "max" else energy


@dataclass(eq=False)
class LayerQUBO(QUBOFamily):
    """One layer's row QUBOs ``E_k(v) = s_k^2 v^T A_k v + h_k . v + c_k``, or with column scales
    ``E_k(v) = (t_k * v)^T A_k (t_k * v) + h_k . v + c_k``.

    Attributes:
        A: (cols, cols) shared, or (rows, cols, cols) per row; symmetric float64.
        scale: (rows,) float64 ``s``, or (rows, cols) column scales ``t`` (group-wise grids:
            :attr:`column_scaled`).
        linear: (rows, cols) float64 ``h`` (linear terms, kept off the matrix).
        offset: (rows,) float64 ``c``.
        fixed_mask, fixed_value: (rows, cols).
        space: the rounding space (write-back), or None.
        meta: free-form descriptors (layer name, hessian kind, bits, damping...).
    """

    A: np.ndarray
    scale: np.ndarray
    linear: np.ndarray
    offset: np.ndarray
    fixed_mask: np.ndarray
    fixed_value: np.ndarray
    space: RoundingSpace | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.A = _finite("A", self.A)
        self.scale = _finite("scale", self.scale)
        self.linear = _finite("linear", self.linear)
        self.offset = _finite("offset", self.offset)
        rows, n = self.linear.shape
        if self.A.shape not in ((n, n), (rows, n, n)):
            raise ValueError(f"A has shape {self.A.shape}; expected ({n}, {n}) or ({rows}, {n}, {n})")
        if self.scale.shape not in ((rows,), (rows, n)) or self.offset.shape != (rows,):
            raise ValueError(f"scale must have shape (rows,) or (rows, n) = ({rows}, {n}) and offset (rows,); "
                             f"got {self.scale.shape} and {self.offset.shape}")
        if not np.array_equal(self.A, np.swapaxes(self.A, -1, -2)):
            self.A = (self.A + np.swapaxes(self.A, -1, -2)) / 2.0  # same energies, symmetric Q_k
        self.fixed_mask, self.fixed_value = _check_fixed(self.fixed_mask, self.fixed_value, (rows, n))

    @property
    def shared(self) -> bool:
        """True when all rows share one matrix ``A``."""
        return self.A.ndim == 2

    @property
    def column_scaled(self) -> bool:
        """True when every variable has its own scale (``scale`` (rows, n), group-wise grids)."""
        return self.scale.ndim == 2

    @property
    def shape(self) -> tuple[int, int]:
        return self.linear.shape

    def row_A(self, k: int) -> np.ndarray:
        return self.A if self.shared else self.A[k]

    def matrix(self, k: int) -> np.ndarray:
        if self.column_scaled:
            t = self.scale[k]
            Q = self.row_A(k) * np.outer(t, t)  # both symmetric: Q exactly symmetric
        else:
            Q = self.scale[k] ** 2 * self.row_A(k)
        Q = Q + np.diag(self.linear[k])
        return Q

    @property
    def diagonal(self) -> np.ndarray:
        dA = np.diagonal(self.A, axis1=-2, axis2=-1)
        s = self.scale if self.column_scaled else self.scale[:, None]
        return s ** 2 * dA + self.linear

    def _A_times(self, X: np.ndarray) -> np.ndarray:
        if self.shared:
            return X @ self.A
        return np.einsum("rcd,...rd->...rc", self.A, X)

    def matvec(self, X: np.ndarray) -> np.ndarray:
        if self.column_scaled:
            return self.scale * self._A_times(self.scale * X) + self.linear * X
        return self.scale[:, None] ** 2 * self._A_times(X) + self.linear * X

    def with_row_matrices(self, max_bytes: int | None = None, who: str = "this solver") -> "LayerQUBO":
        """The same family with the column scales folded into one matrix per row,
        ``A_k' = T_k A_k T_k`` and ``scale = 1``: the form of solvers that only know row scales
        (the same energies up to rounding). ``max_bytes`` refuses, before allocating, a result
        larger than that (``rows * n^2 * 8`` bytes); unchanged when not column-scaled."""
        if not self.column_scaled:
            return self
        need = self.rows * self.n * self.n * 8
        if max_bytes is not None and need > max_bytes:
            raise CapabilityError(
                f"{who} needs one {self.n}x{self.n} matrix per row for group-wise scales: {need / 2**30:.1f} GiB "
                f"for {self.rows} rows, above the {max_bytes / 2**30:.1f} GiB limit; use a solver that takes "
                "column scales as they are ('qubo-round solvers', column 'group-wise rows') or fewer rows (select_rows)")
        t = self.scale
        A = self.A * (t[:, :, None] * t[:, None, :])  # exactly symmetric, as matrix()
        return replace(self, A=A, scale=np.ones(self.rows),
                       meta={k: v for k, v in self.meta.items() if k != "row_groups"})

    @property
    def inert(self) -> np.ndarray:
        zero = ~np.any(self.A != 0, axis=-2)  # (n,) or (rows, n): A is symmetric
        return np.broadcast_to(zero, self.shape) & (self.linear == 0)

    def row_columns(self, r: np.ndarray, idx: np.ndarray) -> np.ndarray:
        r, idx = np.asarray(r), np.asarray(idx)
        # A is symmetric (made so on construction): rows A[idx] are its columns, read contiguously
        Ai = self.A[idx] if self.shared else self.A[r, idx]  # (m, n)
        if self.column_scaled:
            col = Ai * (self.scale[r] * self.scale[r, idx][:, None])  # the entries of matrix()
        else:
            col = self.scale[r, None] ** 2 * Ai
        col[np.arange(len(idx)), idx] += self.linear[r, idx]
        return col

    def _quadratic(self, X: np.ndarray) -> np.ndarray:
        if self.column_scaled:
            Y = self.scale * X
            return np.einsum("...rc,...rc->...r", self._A_times(Y), Y) + (X * self.linear).sum(-1)
        if self.shared:
            quad = np.einsum("...rc,...rc->...r", X @ self.A, X)
        else:
            quad = np.einsum("...rc,rcd,...rd->...r", X, self.A, X)
        return self.scale**2 * quad + (X * self.linear).sum(-1)

    def select_rows(self, rows: np.ndarray) -> "LayerQUBO":
        """A sub-family of the given rows (for benchmarks on subsampled layers); the rounding
        space is restricted to the same rows."""
        rows = np.asarray(rows)
        sp = self.space
        space = None if sp is None else sp.select_rows(rows)
        return LayerQUBO(A=self.A if self.shared else self.A[rows], scale=self.scale[rows],
                         linear=self.linear[rows], offset=self.offset[rows],
                         fixed_mask=self.fixed_mask[rows], fixed_value=self.fixed_value[rows],
                         space=space, meta={**{k: v for k, v in self.meta.items() if k != "row_groups"},
                                            "rows_selected": rows.tolist()})


def stack_rows(problems: Sequence[LayerQUBO]) -> LayerQUBO:
    """The row families ``problems`` (same ``n``) as one family with per-row ``A`` (rows of the
    first, then of the second, ...): the groups of a grouped convolution solved as one batched
    problem. Energies are the same row by row; split a solution with ``np.split`` at the
    cumulative row counts. The rounding spaces are stacked too (same integer limits needed).
    ``meta["row_groups"]`` records the rows of each input problem: the relaxations then multiply
    each group by its own matrix in one batched product instead of one matrix per row."""
    if not problems:
        raise ValueError("stack_rows needs at least one problem")
    n = problems[0].n
    if any(not isinstance(p, LayerQUBO) or p.n != n for p in problems):
        raise ValueError(f"stack_rows needs LayerQUBOs with the same number of columns ({n})")
    A = np.ascontiguousarray(np.concatenate([np.broadcast_to(p.A, (p.rows, n, n)) if p.shared else p.A
                                             for p in problems]))
    cat = lambda name: np.concatenate([getattr(p, name) for p in problems])  # noqa: E731
    space = None
    if all(p.space is not None for p in problems):
        sps = [p.space for p in problems]
        if len({(sp.qmin, sp.qmax, sp.group_size) for sp in sps}) != 1:
            raise ValueError("stack_rows: the rounding spaces have different integer limits or group sizes")
        space = RoundingSpace(**{k: np.concatenate([getattr(sp, k) for sp in sps])
                                 for k in ("W", "s", "z", "L", "fixed_mask", "fixed_value")},
                              qmin=sps[0].qmin, qmax=sps[0].qmax, group_size=sps[0].group_size)
    if len({p.column_scaled for p in problems}) != 1:
        raise ValueError("stack_rows: mix of row-scaled and column-scaled (group-wise) problems")
    return LayerQUBO(A=A, scale=cat("scale"), linear=cat("linear"), offset=cat("offset"),
                     fixed_mask=cat("fixed_mask"), fixed_value=cat("fixed_value"), space=space,
                     meta={**problems[0].meta, "stacked": len(problems), "row_groups": [p.rows for p in problems]})


@dataclass(eq=False)
class DenseQUBO(QUBOFamily):
    """A single dense QUBO ``E(x) = x^T Q x + c`` (rows = 1).

    Attributes:
        Q: (n, n) symmetric float64 (linear terms on the diagonal). A non-symmetric input is
            symmetrised as ``(Q + Q^T) / 2``, which leaves every energy unchanged.
        offset: (1,) float64.
        fixed_mask, fixed_value: (1, n).
        space: rounding space for the coupled layer form (``n = rows * cols``, row-major).
        meta: descriptors: ``name``, ``sense`` ('min' or 'max' for the instance's own objective).
    """

    Q: np.ndarray
    offset: np.ndarray = field(default_factory=lambda: np.zeros(1))
    fixed_mask: np.ndarray | None = None
    fixed_value: np.ndarray | None = None
    space: RoundingSpace | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Q = _finite("Q", self.Q)
        if Q.ndim != 2 or Q.shape[0] != Q.shape[1]:
            raise ValueError(f"Q must be square (n, n), got shape {Q.shape}")
        self.Q = (Q + Q.T) / 2.0 if not np.array_equal(Q, Q.T) else Q
        self.offset = _finite("offset", np.atleast_1d(self.offset)).reshape(1)
        n = Q.shape[0]
        fm = np.zeros((1, n), bool) if self.fixed_mask is None else self.fixed_mask
        fv = np.zeros((1, n), np.uint8) if self.fixed_value is None else self.fixed_value
        self.fixed_mask, self.fixed_value = _check_fixed(fm, fv, (1, n))

    @property
    def shape(self) -> tuple[int, int]:
        return (1, self.Q.shape[0])

    def matrix(self, k: int = 0) -> np.ndarray:
        if k != 0:
            raise IndexError("a DenseQUBO has a single row (k = 0)")
        return self.Q

    def _quadratic(self, X: np.ndarray) -> np.ndarray:
        return np.einsum("...rc,...rc->...r", X @ self.Q, X)

    @property
    def diagonal(self) -> np.ndarray:
        return np.diag(self.Q)[None, :]

    def matvec(self, X: np.ndarray) -> np.ndarray:
        return X @ self.Q

    def row_columns(self, r: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return self.Q[np.asarray(idx)]  # one row: r is all zeros; Q symmetric: rows are its columns

    @classmethod
    def from_linear_quadratic(cls, n: int, linear: dict[int, float], quadratic: dict[tuple[int, int], float],
                              offset: float = 0.0, **kw) -> "DenseQUBO":
        """Build from ``E = sum_i a_i x_i + sum_{i<j} b_ij x_i x_j + offset`` (pair coefficients
        counted once, as dimod does)."""
        Q = np.zeros((n, n))
        for i, a in linear.items():
            Q[i, i] += a
        for (i, j), b in quadratic.items():
            if i == j:
                Q[i, i] += b
            else:
                Q[i, j] += b / 2.0
                Q[j, i] += b / 2.0
        return cls(Q=Q, offset=np.array([offset]), **kw)
