"""save_problem / load_problem: single pickle-free .npz files that reload to problems with the
same energies, rounding space and meta (qubo_round/io.py)."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

from qubo_round.builders import covariance_problem, full_hessian_problem, row_hessian_problem
from qubo_round.grid import Grid, rounding_space
from qubo_round.io import load_problem, save_problem
from qubo_round.problem import DenseQUBO, LayerQUBO


def _psd(n, seed):
    X = np.random.default_rng(seed).normal(size=(n, 3 * n))
    return X @ X.T / X.shape[1]


def _samples(p, rng, k=8):
    X = rng.integers(0, 2, size=(k, *p.shape)).astype(np.uint8)
    return p.apply_fixed(X)


def _assert_same_problem(a, b, rng):
    assert type(a) is type(b)
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.fixed_mask, b.fixed_mask)
    np.testing.assert_array_equal(a.fixed_value, b.fixed_value)
    assert b.fixed_mask.dtype == bool and b.fixed_value.dtype == np.uint8
    np.testing.assert_array_equal(a.offset, b.offset)
    for k in range(a.rows):
        np.testing.assert_array_equal(a.matrix(k), b.matrix(k))
    X = _samples(a, rng)
    np.testing.assert_array_equal(a.energies(X), b.energies(X))  # identical, not just close
    assert a.meta == b.meta


def _layer_problem(shared: bool, seed=0, **meta):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(4, 6))
    W[0, 0] = 30.0  # clipped -> fixed variable
    grid = Grid(bits=3, granularity="tensor", scale_method="minmax" if shared else "mse")
    if shared:
        return covariance_problem(W, _psd(6, seed), grid, **meta)
    H_rows = np.stack([_psd(6, seed + k) for k in range(4)])
    return row_hessian_problem(W, H_rows, grid, **meta)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-A", "per-row-A"])
def test_layer_qubo_round_trip(tmp_path, shared):
    p = _layer_problem(shared, layer="features.3", group=1)
    assert p.shared == shared
    assert p.fixed_mask.any()
    path = save_problem(p, tmp_path / "layer.npz")
    q = load_problem(path)
    assert isinstance(q, LayerQUBO) and q.shared == shared
    np.testing.assert_array_equal(q.A, p.A)
    np.testing.assert_array_equal(q.scale, p.scale)
    np.testing.assert_array_equal(q.linear, p.linear)
    _assert_same_problem(p, q, np.random.default_rng(1))
    assert q.meta["layer"] == "features.3"


def test_dense_qubo_with_fixed_variables_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    Q = rng.normal(size=(7, 7))
    fm = np.zeros((1, 7), bool)
    fm[0, [1, 4]] = True
    fv = np.zeros((1, 7), np.uint8)
    fv[0, 4] = 1
    p = DenseQUBO(Q=Q, offset=np.array([-3.5]), fixed_mask=fm, fixed_value=fv,
                  meta={"name": "toy", "sense": "max"})
    q = load_problem(save_problem(p, tmp_path / "dense.npz"))
    assert isinstance(q, DenseQUBO) and q.space is None
    np.testing.assert_array_equal(q.Q, p.Q)
    _assert_same_problem(p, q, rng)
    assert q.objective(2.0) == -2.0  # the sense survived
    X = _samples(q, rng)
    assert (X[..., 4] == 1).all() and (X[..., 1] == 0).all()


def test_full_hessian_problem_with_space_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    W = rng.normal(size=(2, 3))
    p = full_hessian_problem(W, _psd(6, 3), Grid(bits=2))
    q = load_problem(save_problem(p, tmp_path / "full"))
    _assert_same_problem(p, q, rng)
    V = q.to_rounding(_samples(q, rng, 1)[0])
    np.testing.assert_array_equal(q.space.dequantize(V), p.space.dequantize(V))


def test_rounding_space_and_meta_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    W = rng.normal(size=(3, 5))
    W[1] = 0.0  # all-zero row: fixed variables and the placeholder scale
    grid = Grid(bits=4, scheme="asymmetric")
    H = np.zeros((5, 5))
    H[:3, :3] = _psd(3, 4)  # singular -> meta["condition"] = inf
    meta = dict(np_int=np.int64(7), np_float=np.float32(0.25), np_bool=np.bool_(True),
                np_f64=np.float64(1.5), arr=np.arange(3), nested={"a": [1, 2.5, None]}, text="x")
    p = covariance_problem(W, H, grid, **meta)
    assert p.meta["condition"] == float("inf")
    path = save_problem(p, tmp_path / "sub" / "dir" / "prob.npz")  # parent folders are created
    q = load_problem(path)
    sp, sq = p.space, q.space
    assert sq is not None
    for f in ("W", "s", "z", "L", "fixed_mask", "fixed_value"):
        np.testing.assert_array_equal(getattr(sq, f), getattr(sp, f))
        assert getattr(sq, f).dtype == getattr(sp, f).dtype
    assert (sq.qmin, sq.qmax) == (sp.qmin, sp.qmax) == grid.limits
    for _ in range(5):
        V = sp.nearest() if _ == 0 else q.to_rounding(_samples(q, rng, 1)[0])
        np.testing.assert_array_equal(sq.dequantize(V), sp.dequantize(V))
        np.testing.assert_array_equal(sq.integers(V), sp.integers(V))
    np.testing.assert_array_equal(q.prior, p.prior)
    X = _samples(p, rng)
    np.testing.assert_array_equal(q.energies(X), p.energies(X))
    m = q.meta
    assert m["condition"] == float("inf") and isinstance(m["condition"], float)
    assert m["damping"] == 0 and m["h_status"] == "singular"
    assert m["np_int"] == 7 and isinstance(m["np_int"], int)
    assert m["np_float"] == 0.25 and m["np_bool"] is True and m["np_f64"] == 1.5
    assert m["arr"] == [0, 1, 2] and m["nested"] == {"a": [1, 2.5, None]} and m["text"] == "x"
    assert m["bits"] == 4 and m["scheme"] == "asymmetric"


def test_file_is_a_single_pickle_free_npz(tmp_path):
    p = _layer_problem(True)
    path = save_problem(p, tmp_path / "one.npz")
    assert path == tmp_path / "one.npz"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["one.npz"]
    assert zipfile.is_zipfile(path)
    with np.load(path, allow_pickle=False) as z:
        for k in z.files:
            assert z[k].dtype != object
        assert "header" in z.files


@pytest.mark.parametrize("name, expected", [("prob", "prob.npz"), ("prob.v1", "prob.v1.npz"),
                                            ("prob.npz", "prob.npz")])
def test_npz_suffix_is_appended(tmp_path, name, expected):
    path = save_problem(_layer_problem(True), tmp_path / name)
    assert path.name == expected and path.is_file()
    assert sorted(x.name for x in tmp_path.iterdir()) == [expected]
    assert load_problem(path).shape == (4, 6)
    assert load_problem(str(path)).shape == (4, 6)


def test_non_problem_npz_and_missing_file(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, a=np.arange(3))
    with pytest.raises(ValueError, match="not a qubo-round problem file"):
        load_problem(other)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, header=np.array('{"format": "something-else", "version": 1}'))
    with pytest.raises(ValueError, match="unsupported problem format 'something-else'"):
        load_problem(wrong)
    newer = tmp_path / "newer.npz"
    np.savez(newer, header=np.array('{"format": "qubo-round-problem", "version": 99}'))
    with pytest.raises(ValueError, match="version 99"):
        load_problem(newer)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_problem(tmp_path / "missing.npz")


def test_unsaveable_meta(tmp_path):
    p = _layer_problem(True, weird=object())
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        save_problem(p, tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()


def test_save_non_problem_raises_type_error(tmp_path):
    with pytest.raises(TypeError, match="cannot save"):
        save_problem("not a problem", tmp_path / "bad2.npz")  # type: ignore[arg-type]


def test_selected_rows_round_trip(tmp_path):
    p = _layer_problem(False).select_rows(np.array([2, 0]))
    q = load_problem(save_problem(p, tmp_path / "sel"))
    assert q.space is not None and q.space.shape == (2, p.n)
    _assert_same_problem(p, q, np.random.default_rng(5))


def test_space_with_given_scales_round_trip(tmp_path):
    W = np.array([[0.1, -0.26, 5.0], [0.4, 0.25, -0.3]])
    sp = rounding_space(W, Grid(bits=3), s=np.array([0.1, 0.2]))
    p = covariance_problem(W, _psd(3, 6), space=sp)
    q = load_problem(save_problem(p, tmp_path / "given"))
    np.testing.assert_array_equal(q.space.s, [0.1, 0.2])
    np.testing.assert_array_equal(q.fixed_mask, sp.fixed_mask)
    _assert_same_problem(p, q, np.random.default_rng(6))
