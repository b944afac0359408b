"""GPTQ / LDLQ on the rounding QUBO: nearest rounding with error feedback through the factor of A.

For a row ``E_k(v) = a_k v^T A v + l_k . v + c_k`` (a layer: ``a_k = s_k^2``, ``A = H``) with ``A``
positive definite, ``E_k(v) = a_k (v - u)^T A (v - u) + const`` where ``u = -A^{-1} l_k / (2 a_k)``
is the continuous optimum (``u = frac(W/s)`` in the covariance form). GPTQ visits the variables in
a fixed order, rounds each to the nearest of {0, 1} (floor or ceil: the clip keeps it in the
QUBO's space) and moves the not-yet-rounded targets to their optimal values given that choice::

    U = upper Cholesky factor of (A + delta I)^{-1}          ((A + delta I)^{-1} = U^T U)
    for j in order:  q_j = clip(round(u_j), 0, 1);  u_{j+1:} -= (u_j - q_j) / U_jj * U_{j, j+1:}

This is GPTQ's column loop (and LDLQ of QuIP, the same algorithm written with the LDL factor of
A) in units of grid steps. ``delta = percdamp * mean(diag A)`` is GPTQ's damping (always applied,
as GPTQ does; escalated tenfold, with a warning, while the factorisation fails).

Fixed variables: rows are grouped by their fixed pattern; within a group the fixed variables are
substituted, the targets are the conditional optimum of the free variables given the fixed
values (``u_F = u0 + (A_FF + delta I)^{-1} (r - A_FF u0)`` with ``r`` the right-hand side and
``u0`` the prior ``frac(W/s)``, which makes ``u_F`` the optimum nearest the prior when ``A_FF`` is
singular), and every row of the group shares one factor of ``A_FF``: one factorisation per
distinct pattern (shared ``A``), per row (per-row ``A``). A dense QUBO uses the split of
:func:`qubo_round.split.quadratic_split`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg.lapack

from qubo_round.problem import QUBOFamily
from qubo_round.split import quadratic_split
from qubo_round.threads import limit_threads

from .base import Solver
from .registry import register

log = logging.getLogger(__name__)

#: Columns per lazy batch update of ``gptq/in-order`` (as the reference GPTQ).
LAZY_BLOCK = 128
#: Tenfold damping escalations tried before giving up on a factorisation.
MAX_ESCALATIONS = 12


def inverse_factor(A: np.ndarray, percdamp: float) -> tuple[np.ndarray, np.ndarray, float]:
    """``(U, A_d, delta)``: ``A_d = A + delta I`` and U (m, m) upper with ``A_d^{-1} = U^T U``.

    ``delta = percdamp * mean(diag A)`` (1 in place of a non-positive mean), raised to make a
    non-positive-definite ``A`` factorisable and then multiplied by 10 while the factorisation
    fails; every escalation is logged.
    """
    m = A.shape[0]
    base = float(np.mean(np.diag(A))) if m else 1.0
    base = base if base > 0 else 1.0
    delta = percdamp * base
    eye = np.eye(m)
    for attempt in range(MAX_ESCALATIONS + 1):
        Ad = A + delta * eye
        try:
            # (A_d)^{-1} = U^T U with U upper  <=>  A_d = R R^T with R = U^{-1} upper, i.e. the
            # Cholesky factor of A_d in reversed order: one factorisation and one triangular
            # inverse instead of an inverse and a second factorisation.
            Lrev = np.linalg.cholesky(Ad[::-1, ::-1])
            R = np.ascontiguousarray(Lrev[::-1, ::-1])
            U, info = scipy.linalg.lapack.dtrtri(R, lower=0)
            if info != 0 or not np.isfinite(U).all():
                raise np.linalg.LinAlgError("singular triangular factor")
            if attempt:
                log.warning("gptq: A needed damping delta = %.3g (%.3g x mean diag) to factorise",
                            delta, delta / base)
            return U, Ad, delta
        except np.linalg.LinAlgError:
            if attempt == 0:
                lmin = float(np.linalg.eigvalsh(A)[0])
                delta = max(delta, -lmin + max(percdamp, 1e-8) * base)
            else:
                delta *= 10.0
    raise np.linalg.LinAlgError(f"gptq: could not factorise A even with damping {delta:.3g}")


def error_feedback_round(U: np.ndarray, targets: np.ndarray, clip: bool = True, *,
                         forced: np.ndarray | None = None, values: np.ndarray | None = None,
                         block: int | None = None, steps: np.ndarray | None = None) -> np.ndarray:
    """GPTQ's column loop: round ``targets`` (R, m) in index order with error feedback through
    ``U`` (m, m) (upper factor of the damped inverse). Ties round up (as nearest rounding does).
    Returns (R, m) float64 integers, in {0, 1} when ``clip``.

    ``forced`` (R, m) marks variables that take ``values`` (R, m) instead of their rounded
    target; their error feeds forward like any other (the clip of the grid in GPTQ's loop: one
    factor ``U`` serves rows with different fixed variables). ``block``: GPTQ's lazy batch
    updates, the columns beyond the current block updated once per block by one matrix product
    (the same result up to floating-point rounding); None updates every column at every step.
    ``steps`` (R, m) > 0: the targets are in units of the weights, variable ``j`` of row ``r``
    moving by ``steps[r, j]`` (group-wise grids: each weight's group scale); it rounds
    ``targets / steps`` and feeds back ``targets - steps * q``."""
    u = np.array(targets, dtype=np.float64, copy=True)
    q = np.empty_like(u)
    m = u.shape[1]
    block = max(1, m if block is None else block)
    for b0 in range(0, m, block):
        b1 = min(b0 + block, m)
        err = np.empty((u.shape[0], b1 - b0))
        for j in range(b0, b1):
            qj = np.floor((u[:, j] if steps is None else u[:, j] / steps[:, j]) + 0.5)
            if clip:
                qj = np.minimum(np.maximum(qj, 0.0), 1.0)
            if forced is not None:
                qj = np.where(forced[:, j], values[:, j], qj)
            q[:, j] = qj
            e = (u[:, j] - (qj if steps is None else steps[:, j] * qj)) / U[j, j]
            err[:, j - b0] = e
            u[:, j + 1:b1] -= e[:, None] * U[j, j + 1:b1]
        if b1 < m:
            u[:, b1:] -= err @ U[b0:b1, b1:]
    return q


def gptq_round(A: np.ndarray, targets: np.ndarray, *, percdamp: float = 0.01, act_order: bool = False,
               clip: bool = True) -> tuple[np.ndarray, float]:
    """Round ``targets`` (R, m) against one matrix ``A`` (m, m); returns ``(q (R, m), delta)``.

    ``act_order`` visits the variables by descending ``diag(A)`` (GPTQ's activation order).
    """
    m = A.shape[0]
    order = np.argsort(-np.diag(A), kind="stable") if act_order else np.arange(m)
    U, _, delta = inverse_factor(A[np.ix_(order, order)], percdamp)
    q = np.empty_like(np.asarray(targets, np.float64))
    q[:, order] = error_feedback_round(U, np.asarray(targets)[:, order], clip=clip)
    return q, delta


@dataclass(frozen=True)
class GPTQParams:
    percdamp: float = 0.01
    act_order: bool = False
    threads: int | None = 1  # BLAS threads during the solve (None: leave the library's setting)
    fixed: str = "condition"  # or "in-order" (see GPTQ's docstring)

    def __post_init__(self) -> None:
        if self.fixed not in ("condition", "in-order"):
            raise ValueError(f"fixed must be 'condition' or 'in-order', got {self.fixed!r}")
        if not self.percdamp >= 0:
            raise ValueError(f"percdamp must be >= 0, got {self.percdamp}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, (int, np.integer))
                                         or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")


@register("gptq", presets={"act-order": {"act_order": True}, "in-order": {"fixed": "in-order"},
                           # the reference GPTQ with act-order (desc_act): one factorisation per layer
                           "reference": {"act_order": True, "fixed": "in-order"}})
class GPTQ(Solver):
    """GPTQ / LDLQ: nearest rounding with error feedback through the inverse-Cholesky factor of
    the row matrix, each variable restricted to floor or ceil.

    ``fixed="condition"`` (default) treats each distinct pattern of fixed (clipped) variables
    exactly: one factorisation per pattern (module docstring). When every row clips differently,
    as with MSE scales on a transformer's wide layers, that is one factorisation per row.
    ``fixed="in-order"`` (preset ``gptq/in-order``) is the reference GPTQ's behaviour instead:
    one factorisation of the whole shared ``A`` per layer; a fixed variable takes its value
    when the column loop reaches it and its error feeds the later columns only (earlier columns
    did not see it coming). Rows with per-row ``A`` use ``condition``, except stacked row groups
    (:func:`~qubo_round.problem.stack_rows`), which run the in-order loop group by group.
    """
    column_scales = True  # takes group-wise (column-scaled) layer problems as they are

    Params = GPTQParams

    def solve(self, problem: QUBOFamily, **kw):
        # The factorisations are a few hundred columns wide: one BLAS thread is about as fast
        # as several on an idle machine and far faster on a busy one.
        if self.params.threads is None:
            return super().solve(problem, **kw)
        with limit_threads(int(self.params.threads), torch=False):
            return super().solve(problem, **kw)

    def _group(self, A, a, lin, prior, fm_row, fv_rows, col=None):
        """Round the rows of one group (same A and fixed pattern ``fm_row`` (n,)); a (R,),
        lin, prior, fv_rows, col (R, n) or None. Returns the free-variable values (R, m), delta."""
        free, fx = np.flatnonzero(~fm_row), np.flatnonzero(fm_row)
        if col is None:
            lin_f = lin[:, free] + 2.0 * a[:, None] * (fv_rows[:, fx] @ A[np.ix_(fx, free)])
        else:
            lin_f = lin[:, free] + 2.0 * col[:, free] * ((col[:, fx] * fv_rows[:, fx]) @ A[np.ix_(fx, free)])
        q, delta, _ = self._round_rows(A[np.ix_(free, free)], a, lin_f, prior[:, free],
                                       col=None if col is None else col[:, free])
        return q, delta

    def _round_rows(self, A, a, lin, prior, forced=None, values=None, block=None, col=None):
        """GPTQ on rows sharing ``A`` (m, m): start at the continuous optimum of ``(A + delta I)``
        from ``prior``, then round with error feedback (``forced``/``values``/``block``: see
        :func:`error_feedback_round`). a (R,), lin, prior (R, m). Rows without a quadratic part
        take the sign rule. Returns (R, m) float values, delta, and whether A was factorised.

        ``col`` (R, m): column scales (group-wise grids, ``E = (t*v)^T A (t*v) + lin . v`` with
        ``a = 1``): the loop runs on ``y = t * v``, the weights' offsets, against the one shared
        ``A``, each variable rounded on its own step ``t`` (GPTQ with static groups: the group
        scales are fixed before the loop)."""
        quad = (a > 0) & bool(np.any(A))
        q = (lin < 0).astype(np.float64)  # rows without a quadratic part: the sign rule
        delta = 0.0
        if quad.any():
            order = np.argsort(-np.diag(A), kind="stable") if self.params.act_order else np.arange(A.shape[0])
            Ao = A[np.ix_(order, order)]
            U, _, delta = inverse_factor(Ao, self.params.percdamp)
            r = -lin[quad][:, order] / (2.0 * a[quad, None])  # A u = r at the optimum
            u0 = prior[quad][:, order]
            kw = {} if forced is None else dict(forced=forced[quad][:, order], values=values[quad][:, order])
            if col is not None:  # in weight units y = t * v: A y = -lin / (2 t)
                t = col[quad][:, order]
                r, u0 = r / t, u0 * t
                kw["steps"] = t
            u = u0 + ((r - u0 @ Ao) @ U.T) @ U  # (A + delta I)^{-1} = U^T U
            qo = np.empty_like(u)
            qo[:, order] = error_feedback_round(U, u, block=block, **kw)
            q[quad] = qo
        return q, delta, bool(quad.any())

    def sample(self, problem: QUBOFamily, *, rng, start, time_limit):
        t0 = time.perf_counter()
        sp = quadratic_split(problem)
        prior, fm, fv = problem.prior, problem.fixed_mask, problem.fixed_value.astype(np.float64)
        X = problem.apply_fixed((prior >= 0.5).astype(np.uint8))  # nearest: kept where time runs out
        blocks = None if sp.shared else problem.meta.get("row_groups")  # stacked groups, one matrix each
        if self.params.fixed == "in-order" and (sp.shared or (blocks and sum(blocks) == problem.rows)):
            return self._in_order(problem, sp, prior, fm, fv, blocks)
        if sp.shared:
            patterns, inverse = np.unique(fm, axis=0, return_inverse=True)
            groups = [(patterns[g], np.flatnonzero(inverse.reshape(-1) == g)) for g in range(len(patterns))]
        else:
            groups = [(fm[k], np.array([k])) for k in range(problem.rows)]
        status, deltas, done = "feasible", [], 0
        for pattern, rows in groups:
            if time_limit is not None and time.perf_counter() - t0 > time_limit:
                status = "time_limit"
                break
            if pattern.all():
                continue
            done += 1
            A = sp.P if sp.shared else sp.P[rows[0]]
            q, delta = self._group(A, sp.a[rows], sp.lin[rows], prior[rows], pattern, fv[rows],
                                   col=None if sp.col is None else sp.col[rows])
            sub = X[rows]
            sub[:, ~pattern] = q.astype(np.uint8)
            X[rows] = sub
            deltas.append(delta / max(float(np.mean(np.diag(A)[~pattern])), 1e-300))
        log.debug("gptq: %d factorisations, relative damping up to %.3g", done, max(deltas, default=0.0))
        return problem.apply_fixed(X), {"status": status, "factorisations": done,
                                        "damping_rel_max": float(max(deltas, default=0.0))}

    def _in_order(self, problem: QUBOFamily, sp, prior, fm, fv, blocks=None):
        """The in-order loop, fixed variables forced in it: one factor of the shared ``A`` for all
        rows, or, for stacked row groups (``blocks``, their sizes: :func:`~qubo_round.problem.stack_rows`'
        ``meta["row_groups"]``, the rows of each sharing one matrix), one factor per group, as if
        each group were solved alone."""
        a = np.broadcast_to(sp.a, (problem.rows,))
        q = np.empty(problem.shape)
        deltas, done, start = [], 0, 0
        for size in blocks or [problem.rows]:
            r = slice(start, start + size)
            start += size
            A = sp.P if sp.shared else sp.P[r.start]
            q[r], delta, factored = self._round_rows(A, a[r], sp.lin[r], prior[r], forced=fm[r], values=fv[r],
                                                     block=LAZY_BLOCK, col=None if sp.col is None else sp.col[r])
            done += int(factored)
            if factored:
                deltas.append(delta / max(float(np.mean(np.diag(A))), 1e-300))
        return problem.apply_fixed(q.astype(np.uint8)), {"status": "feasible", "factorisations": done,
                                                         "damping_rel_max": float(max(deltas, default=0.0))}
