"""The continuous form of a QUBO family, shared by the relaxation solvers and GPTQ (numpy, core).

Every row of a family is written as a quadratic in a real vector ``h`` (method.md sections 2-3)::

    E_k(h) = a_k h^T P_k h + l_k . h + c_k,        h in [0, 1]^n

which equals the row's QUBO energy on every binary ``h`` (``h_i^2 = h_i``):

* :class:`~qubo_round.problem.LayerQUBO`: ``P_k = A_k`` (``H``), ``a_k = s_k^2``, ``l_k = h_k``
  (the problem's linear terms). In the covariance form this is the layer's reconstruction loss
  ``tr(dW H dW^T)`` of the relaxed weights ``W_tilde = s (floor + h)``: one step costs about
  ``2 rows cols^2`` flops, independent of the amount of calibration data.
* group-wise grids (column scales ``t_k``): ``P_k`` stands for ``T_k A_k T_k`` (``T_k = diag(t_k)``,
  kept as ``A`` and ``col = t``, never formed), ``a_k = 1``.
* :class:`~qubo_round.problem.DenseQUBO`: the split of ``Q`` into quadratic and linear parts is
  not recorded, so the diagonal is moved to the linear term and the smallest uniform shift that
  makes the quadratic part positive semidefinite is added back:
  ``P = Q - diag(Q) + mu I``, ``l = diag(Q) - mu``, ``mu = max(0, -lambda_min(Q - diag(Q)))``,
  ``a = 1``: a convex relaxation, exact on binary points.

Scaling (how ``lambda`` of the relaxation solvers relates to the loss): each row is divided by its
*unit* ``u_k = a_k * mean_{i free} P_k[i, i]``, the loss of moving one free weight of that row by
one grid step (``s_k^2 E[x_i^2]`` averaged over the free inputs of the row). The normalised loss
``E_k(h) / u_k`` is dimensionless: a regulariser weight ``lambda`` per variable means "lambda
units of a one-step rounding error", whatever the layer's weight and activation scales.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .errors import CapabilityError
from .problem import DenseQUBO, LayerQUBO, QUBOFamily

log = logging.getLogger(__name__)

__all__ = ["QuadraticSplit", "quadratic_split", "row_units"]


@dataclass(frozen=True)
class QuadraticSplit:
    """``E_k(h) = a_k h^T P_k h + lin_k . h + offset_k`` for every row k (numpy, float64).

    Attributes:
        P: (n, n) shared by all rows, or (rows, n, n) per row; symmetric.
        a: (rows,) scale of the quadratic part (``s_k^2`` for layers, 1 for dense QUBOs).
        lin: (rows, n) linear terms.
        offset: (rows,) constants.
        shift: the diagonal shift ``mu`` added for a dense QUBO (0 for layers).
        col: None, or (rows, n) column scales ``t``: the quadratic part is then
            ``a_k (t_k * h)^T P_k (t_k * h)`` (group-wise grids).
    """

    P: np.ndarray
    a: np.ndarray
    lin: np.ndarray
    offset: np.ndarray
    shift: float = 0.0
    col: np.ndarray | None = None

    @property
    def shared(self) -> bool:
        return self.P.ndim == 2

    def row_P(self, k: int) -> np.ndarray:
        return self.P if self.shared else self.P[k]

    def units(self, fixed_mask: np.ndarray) -> np.ndarray:
        """(rows,) loss of one free variable moved by one step: ``a_k mean_{i free} P_k[i, i]``;
        falls back to the mean over all variables, then to 1 where that is not positive."""
        d = np.diagonal(self.P, axis1=-2, axis2=-1)
        d = np.broadcast_to(d, fixed_mask.shape)
        if self.col is not None:
            d = d * self.col**2
        free = ~fixed_mask
        nfree = free.sum(1)
        mean_free = np.where(nfree > 0, (d * free).sum(1) / np.maximum(nfree, 1), d.mean(1))
        u = self.a * mean_free
        bad = ~(np.isfinite(u) & (u > 0))
        if bad.any():
            alt = self.a * np.abs(d).mean(1)
            u = np.where(bad, alt, u)
            u = np.where(np.isfinite(u) & (u > 0), u, 1.0)
        return u


def quadratic_split(problem: QUBOFamily) -> QuadraticSplit:
    """The continuous form of ``problem`` (see the module docstring)."""
    if isinstance(problem, LayerQUBO):
        if problem.column_scaled:
            return QuadraticSplit(P=problem.A, a=np.ones(problem.rows), lin=problem.linear,
                                  offset=problem.offset, col=problem.scale)
        return QuadraticSplit(P=problem.A, a=problem.scale**2, lin=problem.linear, offset=problem.offset)
    if isinstance(problem, DenseQUBO):
        Q = problem.Q
        dq = np.diag(Q).copy()
        P = Q - np.diag(dq)
        mu = max(0.0, -float(np.linalg.eigvalsh(P)[0])) if P.shape[0] else 0.0
        P[np.diag_indices_from(P)] += mu
        log.debug("dense QUBO split: diagonal shift mu = %.4g makes the quadratic part PSD", mu)
        return QuadraticSplit(P=P, a=np.ones(1), lin=(dq - mu)[None, :], offset=problem.offset, shift=mu)
    raise CapabilityError(f"no continuous form for a {type(problem).__name__}; "
                          "expected a LayerQUBO or a DenseQUBO")


def row_units(problem: QUBOFamily) -> np.ndarray:
    """(rows,) the unit of each row's loss (module docstring): divide a row's loss by it to make
    a regulariser weight ``lambda`` mean the same in every layer and every form."""
    return quadratic_split(problem).units(problem.fixed_mask)
