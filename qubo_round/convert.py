"""Conversions between QUBO families, dimod binary quadratic models and networkx graphs.

Conventions: a row of a :class:`~qubo_round.problem.QUBOFamily` is ``E(x) = x^T Q x + c`` with
``Q`` (n, n) symmetric and linear terms on the diagonal; dimod writes the same function as
``sum_i a_i x_i + sum_{i<j} b_ij x_i x_j + offset``, so ``a_i = Q_ii`` and the pair coefficient
is ``b_ij = 2 Q_ij`` (counted once). Both minimise.
"""
from __future__ import annotations

import logging
from collections.abc import Hashable

import dimod
import networkx as nx
import numpy as np

from .problem import DenseQUBO, QUBOFamily

log = logging.getLogger(__name__)

__all__ = ["to_bqm", "from_bqm", "interaction_graph"]


def _reduced_row(problem: QUBOFamily, row: int) -> tuple[np.ndarray, float, np.ndarray]:
    """``problem.reduced(row)`` made safe for a non-symmetric ``matrix(row)``.

    ``QUBOFamily.reduced`` assumes ``Q`` symmetric (it folds fixed variables in as
    ``2 Q[free, fixed] @ x_fixed``). A row whose matrix is not symmetric (e.g. a LayerQUBO built
    from a non-symmetric ``A``) is first symmetrised, ``(Q + Q^T) / 2``, which keeps every energy.
    """
    Q = problem.matrix(row)
    if np.array_equal(Q, Q.T):
        return problem.reduced(row)
    log.warning("row %d of %s has a non-symmetric matrix; symmetrising before substituting "
                "fixed variables", row, type(problem).__name__)
    sym = DenseQUBO(Q=Q, offset=problem.offset[row:row + 1],
                    fixed_mask=problem.fixed_mask[row:row + 1],
                    fixed_value=problem.fixed_value[row:row + 1])
    return sym.reduced(0)


def to_bqm(problem: QUBOFamily, row: int = 0) -> dimod.BinaryQuadraticModel:
    """Row ``row`` of ``problem`` as a BINARY dimod model over its free variables.

    Fixed variables are substituted (``problem.reduced(row)``) and do not appear; the free ones
    keep their original integer index ``i`` in ``0..n-1`` as label. Linear bias ``Qf_ii``, pair
    bias ``2 Qf_ij`` (i < j, zeros omitted), offset ``c`` (the row offset plus the fixed part),
    so ``bqm.energy(sample) == problem.energies(X)[row]`` for every ``X`` respecting the fixes.
    """
    if not 0 <= row < problem.rows:
        raise IndexError(f"row {row} out of range for a problem with {problem.rows} rows")
    Qf, c, free = _reduced_row(problem, row)
    iu, ju = np.nonzero(np.triu(Qf, k=1))
    pair = Qf[iu, ju] + Qf[ju, iu]  # = 2 Qf_ij for symmetric Qf
    return dimod.BinaryQuadraticModel.from_numpy_vectors(
        np.diag(Qf).copy(), (iu, ju, pair), c, dimod.BINARY,
        variable_order=[int(v) for v in free])


def _ordered_labels(bqm: dimod.BinaryQuadraticModel) -> list[Hashable]:
    """Sorted variable labels when they are mutually comparable, else insertion order."""
    labels = list(bqm.variables)
    try:
        return sorted(labels)
    except TypeError:
        return labels


def from_bqm(bqm: dimod.BinaryQuadraticModel) -> DenseQUBO:
    """A dimod model as a minimisation :class:`DenseQUBO` (1, n).

    SPIN models are converted to BINARY first (``s = 2x - 1``). Variable ``k`` of the result is
    ``meta['labels'][k]``: the sorted labels if they are comparable, else dimod's insertion
    order. ``Q_kk = a_k``, ``Q_kl = Q_lk = b_kl / 2``, offset kept.
    """
    if bqm.vartype is dimod.SPIN:
        bqm = bqm.change_vartype(dimod.BINARY, inplace=False)
    labels = _ordered_labels(bqm)
    n = len(labels)
    lin, (irow, icol, qdata), offset = bqm.to_numpy_vectors(variable_order=labels)
    Q = np.zeros((n, n))
    Q[np.diag_indices(n)] = lin
    half = np.asarray(qdata, dtype=np.float64) / 2.0
    np.add.at(Q, (irow, icol), half)
    np.add.at(Q, (icol, irow), half)
    return DenseQUBO(Q=Q, offset=np.array([float(offset)]), meta={"labels": labels, "sense": "min"})


def interaction_graph(problem: QUBOFamily, row: int = 0) -> nx.Graph:
    """Interaction graph of row ``row``: the full matrix, fixed variables included.

    Nodes ``0..n-1`` with attributes ``linear`` (``Q_ii``), ``fixed`` (bool) and
    ``fixed_value`` (0/1, meaningful only when fixed); an edge ``(i, j)`` for every
    ``Q_ij != 0`` (i < j) with attribute ``weight = 2 Q_ij`` (the dimod pair coefficient).
    For a non-symmetric matrix the weight is ``Q_ij + Q_ji``.
    """
    if not 0 <= row < problem.rows:
        raise IndexError(f"row {row} out of range for a problem with {problem.rows} rows")
    Q = problem.matrix(row)
    G = nx.Graph()
    diag = np.diag(Q)
    mask = problem.fixed_mask[row]
    vals = problem.fixed_value[row]
    G.add_nodes_from((i, {"linear": float(diag[i]), "fixed": bool(mask[i]),
                          "fixed_value": int(vals[i])}) for i in range(problem.n))
    pair = Q + Q.T
    iu, ju = np.nonzero(np.triu(pair, k=1))
    G.add_weighted_edges_from(zip(iu.tolist(), ju.tolist(), pair[iu, ju].tolist()))
    return G
