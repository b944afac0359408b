"""GPTQ / LDLQ restricted to floor/ceil: reference behaviour, fixed variables, digits layers."""
import functools
import logging

import numpy as np
import pytest

import qubo_round.solvers.gptq  # noqa: F401  (registers "gptq")
from qubo_round.builders import covariance_problem
from qubo_round.grid import Grid
from qubo_round.problem import LayerQUBO
from qubo_round.solvers import get_solver
from qubo_round.solvers.conformance import check_solver
from qubo_round.solvers.gptq import gptq_round, inverse_factor


def reference_gptq(W, H, s, percdamp=0.01, act_order=False):
    """Textbook GPTQ column loop on the weights (unbounded grid, step s per row); returns the
    integer levels (rows, cols)."""
    W = W.copy()
    cols = W.shape[1]
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(cols)
    W, H = W[:, perm], H[np.ix_(perm, perm)]
    H = H + percdamp * np.mean(np.diag(H)) * np.eye(cols)
    Hinv = np.linalg.cholesky(np.linalg.inv(H)).T  # upper, inv(H) = Hinv^T Hinv
    Q = np.zeros_like(W)
    for i in range(cols):
        w = W[:, i]
        q = s * np.floor(w / s + 0.5)
        Q[:, i] = q
        err = (w - q) / Hinv[i, i]
        W[:, i:] -= np.outer(err, Hinv[i, i:])
    out = np.empty_like(Q)
    out[:, perm] = Q
    return np.round(out / s[:, None]).astype(np.int64)


def random_layer(rng, rows=6, cols=12, samples=200, corr=0.8):
    W = rng.normal(size=(rows, cols))
    X = rng.normal(size=(cols, samples))
    X = X + corr * np.roll(X, 1, axis=0) + corr * rng.normal(size=(1, samples))  # correlated inputs
    return W, X @ X.T / samples


@functools.lru_cache(maxsize=1)
def digits_conv1():
    import qubo_round.zoo
    from qubo_round.extract import layer_problems
    bundle = qubo_round.zoo.load_model("digits")
    return layer_problems(bundle.model, "conv1", bundle.calibration(256, 0), Grid(bits=3))[0]


@pytest.mark.parametrize("spec", ["gptq", "gptq/act-order", "gptq/in-order"])
def test_conformance(spec):
    check_solver(get_solver(spec))


@pytest.mark.parametrize("act_order", [False, True])
def test_unclipped_core_equals_reference_gptq(act_order):
    rng = np.random.default_rng(1)
    W, H = random_layer(rng)
    s = np.abs(W).max(1) / 3
    floor = np.floor(W / s[:, None])
    q, _ = gptq_round(H, W / s[:, None] - floor, percdamp=0.01, act_order=act_order, clip=False)
    ref = reference_gptq(W, H, s, 0.01, act_order)
    np.testing.assert_array_equal(floor.astype(np.int64) + q.astype(np.int64), ref)
    assert (q < 0).any() or (q > 1).any()  # the unclipped loop does leave floor/ceil here


def test_inverse_factor():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 10))
    A = X @ X.T  # rank 10: singular, needs the damping
    U, Ad, delta = inverse_factor(A, 0.01)
    assert delta == pytest.approx(0.01 * np.mean(np.diag(A)))
    np.testing.assert_allclose(U.T @ U, np.linalg.inv(Ad), rtol=1e-6, atol=1e-9)
    assert np.allclose(U, np.triu(U))


def test_non_psd_matrix_is_damped_with_a_warning(caplog):
    rng = np.random.default_rng(0)
    B = rng.normal(size=(8, 8))
    A = (B + B.T) / 2  # indefinite
    with caplog.at_level(logging.WARNING, logger="qubo_round.solvers.gptq"):
        U, Ad, delta = inverse_factor(A, 0.01)
    assert np.linalg.eigvalsh(Ad)[0] > 0 and "damping" in caplog.text
    p = LayerQUBO(A=A, scale=np.ones(3), linear=rng.normal(size=(3, 8)), offset=np.zeros(3),
                  fixed_mask=np.zeros((3, 8), bool), fixed_value=np.zeros((3, 8), np.uint8))
    assert get_solver("gptq").solve(p).samples.shape == (1, 3, 8)


def test_identity_H_equals_nearest():
    rng = np.random.default_rng(2)
    W = rng.normal(size=(10, 16))
    W[0, 0] = 8.0  # clipped by the MSE grid: fixed variables in some rows
    p = covariance_problem(W, np.eye(16), Grid(bits=3))
    assert p.fixed_mask.any()
    for spec in ("gptq", "gptq/act-order"):
        np.testing.assert_array_equal(get_solver(spec).solve(p).best, get_solver("nearest").solve(p).best)


def test_never_worse_than_nearest_on_average():
    rng = np.random.default_rng(3)
    near, gptq, wins = [], [], 0
    for _ in range(40):
        W, H = random_layer(rng, rows=4, cols=10, samples=60)
        p = covariance_problem(W, H, Grid(bits=3))
        e_n, e_g = get_solver("nearest").solve(p).energy, get_solver("gptq").solve(p).energy
        near.append(e_n)
        gptq.append(e_g)
        wins += e_g <= e_n + 1e-12
    assert np.mean(gptq) < 0.8 * np.mean(near)
    assert wins >= 32


def test_groups_equal_per_row_factorisation():
    """Rows grouped by fixed pattern (shared A) give what one factorisation per row gives."""
    rng = np.random.default_rng(4)
    W, H = random_layer(rng, rows=8, cols=10)
    W[[1, 5], 3] = 9.0  # two rows with the same clipped column, others without
    W[2, 7] = -9.0
    p = covariance_problem(W, H, Grid(bits=3))
    per_row = LayerQUBO(A=np.broadcast_to(p.A, (8, 10, 10)).copy(), scale=p.scale, linear=p.linear,
                        offset=p.offset, fixed_mask=p.fixed_mask, fixed_value=p.fixed_value, space=p.space)
    a, b = get_solver("gptq").solve(p), get_solver("gptq").solve(per_row)
    assert a.info["factorisations"] < b.info["factorisations"] == 8
    np.testing.assert_array_equal(a.best, b.best)


def test_time_limit_reports_status():
    rng = np.random.default_rng(5)
    B = rng.normal(size=(50, 12, 12))
    A = np.einsum("kij,klj->kil", B, B)
    p = LayerQUBO(A=A, scale=np.ones(50), linear=rng.normal(size=(50, 12)), offset=np.zeros(50),
                  fixed_mask=np.zeros((50, 12), bool), fixed_value=np.zeros((50, 12), np.uint8))
    r = get_solver("gptq").solve(p, time_limit=1e-9)
    assert r.status == "time_limit" and r.samples.shape == (1, 50, 12)


def test_digits_conv1_beats_nearest():
    p = digits_conv1()
    near = get_solver("nearest").solve(p).energy
    opt = get_solver("exact").solve(p).energy
    for spec in ("gptq", "gptq/act-order"):
        e = get_solver(spec).solve(p).energy
        assert opt <= e < 0.6 * near, spec


@pytest.mark.parametrize("act_order", [False, True])
def test_in_order_equals_condition_without_fixed_variables(act_order):
    rng = np.random.default_rng(3)
    W, H = random_layer(rng, rows=8, cols=16)
    p = covariance_problem(W, H, Grid(bits=8, granularity="tensor", scale_method="minmax"))
    p = p.select_rows(np.flatnonzero(~p.fixed_mask.any(1)))  # minmax: only the extreme weight sits on p
    assert p.rows >= 6 and not p.fixed_mask.any()
    kw = {"act_order": act_order}
    a = get_solver("gptq", **kw).solve(p).samples[0]
    b = get_solver("gptq", fixed="in-order", **kw).solve(p)
    np.testing.assert_array_equal(a, b.samples[0])
    assert b.info["factorisations"] == 1


def test_in_order_one_factorisation_with_clipped_rows():
    # MSE scales at 2 bits clip weights in most rows: "condition" factorises once per pattern,
    # "in-order" once per layer; both keep the fixed values and beat nearest rounding here
    rng = np.random.default_rng(4)
    W, H = random_layer(rng, rows=24, cols=20)
    W[rng.random(W.shape) < 0.1] *= 4  # outliers that the MSE scale clips
    p = covariance_problem(W, H, Grid(bits=2, scale_method="mse"))
    patterns = len(np.unique(p.fixed_mask, axis=0))
    assert patterns > 5
    cond, inord = get_solver("gptq").solve(p), get_solver("gptq/in-order").solve(p)
    assert cond.info["factorisations"] == patterns - int(p.fixed_mask.all(1).any())
    assert inord.info["factorisations"] == 1
    near = p.energies(p.apply_fixed((p.prior >= 0.5).astype(np.uint8))).sum()
    for r in (cond, inord):
        x = r.samples[0]
        assert np.array_equal(x[p.fixed_mask], p.fixed_value[p.fixed_mask])
        assert p.energies(x).sum() < near


def test_in_order_rejects_unknown_mode():
    with pytest.raises(ValueError, match="fixed must be"):
        get_solver("gptq", fixed="later")


def test_blocked_forced_loop_equals_unblocked():
    from qubo_round.solvers.gptq import error_feedback_round
    rng = np.random.default_rng(5)
    W, H = random_layer(rng, rows=30, cols=40)
    U, _, _ = inverse_factor(H, 0.01)
    u = rng.uniform(-0.3, 1.3, size=(30, 40))
    forced = rng.random(u.shape) < 0.1
    values = (rng.random(u.shape) < 0.5).astype(float)
    one = error_feedback_round(U, u, forced=forced, values=values, block=40)
    for block in (1, 7, 16):
        np.testing.assert_array_equal(error_feedback_round(U, u, forced=forced, values=values, block=block), one)
    assert np.array_equal(one[forced], values[forced])


@pytest.mark.parametrize("group", [None, 8])
def test_in_order_on_stacked_row_groups_equals_each_group_alone(group):
    """stack_rows' row groups (the heads of a value projection): one factor per group, the
    rounding each group gets when solved alone, bit for bit."""
    from qubo_round.problem import stack_rows
    rng = np.random.default_rng(3)
    parts = []
    for k, rows in enumerate((5, 7, 4)):
        X = rng.normal(size=(24, 200)) * rng.uniform(0.2, 2.0, size=(24, 1))
        parts.append(covariance_problem(rng.normal(size=(rows, 24)), X @ X.T / 200,
                                        Grid(bits=3, group_size=group), layer="l", head=k))
    solver = get_solver("gptq/in-order")
    stacked = solver.solve(stack_rows(parts), seed=0)
    alone = np.concatenate([solver.solve(p, seed=0).best for p in parts])
    np.testing.assert_array_equal(stacked.best, alone)
    assert stacked.info["factorisations"] == 3
