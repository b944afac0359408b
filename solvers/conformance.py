"""Conformance kit: canned problems and the checks every solver must pass.

A solver author calls ``check_solver("mysolver")`` (or passes an instance) from a test. The kit
uses the exact solver as the oracle of what "optimal" means on these small problems.
"""
from __future__ import annotations

import numpy as np

from qubo_round.builders import covariance_problem
from qubo_round.grid import Grid
from qubo_round.problem import DenseQUBO, LayerQUBO, QUBOFamily

from .base import STATUSES, TIMING_KEYS, Solver
from .registry import get_solver


def canned_problems(seed: int = 0) -> dict[str, QUBOFamily]:
    """Small problems (at most 12 free variables per row) covering the cases solvers get wrong."""
    rng = np.random.default_rng(seed)
    out: dict[str, QUBOFamily] = {}
    Q = rng.normal(size=(10, 10))
    out["dense-random"] = DenseQUBO(Q=(Q + Q.T) / 2, offset=np.array([3.0]), meta={"sense": "min"})
    fm = np.zeros((1, 10), bool)
    fm[0, [1, 4]] = True
    fv = np.zeros((1, 10), np.uint8)
    fv[0, 4] = 1
    out["dense-fixed"] = DenseQUBO(Q=(Q + Q.T) / 2, fixed_mask=fm, fixed_value=fv)
    out["dense-zero"] = DenseQUBO(Q=np.zeros((6, 6)))
    out["dense-one-var"] = DenseQUBO(Q=np.array([[-1.0]]))
    # A real layer problem: 3-bit per-channel MSE grid with clipped (fixed) weights and a zero row.
    W = rng.normal(size=(5, 12))
    W[2] = 0.0
    W[0, 0] = 6.0  # an outlier that the MSE grid clips
    X = rng.normal(size=(12, 200))
    out["layer-covariance"] = covariance_problem(W, X @ X.T / 200, Grid(bits=3, scale_method="mse"))
    A = rng.normal(size=(3, 8, 8))
    A = np.einsum("kij,klj->kil", A, A)
    fm = np.zeros((3, 8), bool)
    fm[:, -1] = True
    fm[1] = True  # a row with every variable fixed
    out["layer-per-row"] = LayerQUBO(A=A, scale=np.array([0.5, 1.0, 2.0]), linear=rng.normal(size=(3, 8)),
                                     offset=np.array([1.0, 2.0, 3.0]), fixed_mask=fm,
                                     fixed_value=np.ones((3, 8), np.uint8))
    # A layer on a group-wise grid (groups of 5 columns, the last one shorter, one all zero):
    # column-scaled row QUBOs, Q_k = T_k H T_k + diag(h_k).
    Wg = rng.normal(size=(4, 12))
    Wg[1, 5:10] = 0.0
    Wg[3, 2] = 5.0
    out["layer-groups"] = covariance_problem(Wg, X @ X.T / 200, Grid(bits=3, scale_method="mse", group_size=5))
    return out


def _optimum(problem: QUBOFamily) -> np.ndarray:
    return get_solver("exact").solve(problem).best_energies


def check_solver(solver: str | Solver, seed: int = 0, problems: dict[str, QUBOFamily] | None = None,
                 time_limit: float | None = None) -> None:
    """Assert the conformance properties of ``solver`` on the canned problems.

    * samples (num_samples, rows, n) uint8 binary, fixed variables respected;
    * energies equal the problem's own recomputation;
    * no row below the exact optimum; exact solvers reach it and report it as the lower bound;
    * status in STATUSES; info has the timing keys; same seed -> same samples;
    * a valid ``start`` is accepted.
    """
    s = get_solver(solver) if isinstance(solver, str) else solver
    for name, p in (problems or canned_problems(seed)).items():
        if s.needs_space and p.space is None:
            continue
        where = f"{s.name} on {name}"
        r = s.solve(p, seed=seed, time_limit=time_limit)
        assert r.samples.dtype == np.uint8 and r.samples.ndim == 3, where
        assert r.samples.shape[1:] == p.shape, where
        assert ((r.samples == 0) | (r.samples == 1)).all(), where
        assert not (p.fixed_mask & (r.samples != p.fixed_value)).any(), f"{where}: fixed variable violated"
        np.testing.assert_allclose(r.energies, p.energies(r.samples), rtol=1e-12, atol=1e-12, err_msg=where)
        assert r.status in STATUSES, where
        for key in TIMING_KEYS:
            assert isinstance(r.info[key], float) and r.info[key] >= 0, f"{where}: timing key {key}"
        opt = _optimum(p)
        tol = 1e-9 * (1 + np.abs(opt))
        assert (r.best_energies >= opt - tol).all(), f"{where}: energy below the exact optimum"
        if s.exact:
            np.testing.assert_allclose(r.best_energies, opt, rtol=1e-9, atol=1e-9, err_msg=where)
            np.testing.assert_allclose(r.lower_bound, opt, rtol=1e-9, atol=1e-9, err_msg=where)
        if r.lower_bound is not None:
            assert (np.nan_to_num(r.lower_bound, nan=-np.inf) <= opt + tol).all(), f"{where}: invalid bound"
        r2 = s.solve(p, seed=seed, time_limit=time_limit)
        assert np.array_equal(r.samples, r2.samples), f"{where}: not deterministic for a fixed seed"
        start = p.apply_fixed(np.ones(p.shape, np.uint8))
        r3 = s.solve(p, seed=seed, start=start, time_limit=time_limit)
        assert r3.samples.shape[1:] == p.shape, where
