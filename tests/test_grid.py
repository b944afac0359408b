"""Grid: integer limits, scale choice (minmax / mse / output-mse), the floor/ceil rounding space,
fixed variables, all-zero channels and input validation (qubo_round/grid.py, method.md section 1)."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qubo_round.grid import (ZERO_CHANNEL_SCALE, Grid, RoundingSpace, choose_qparams, nearest_dequant,
                             rounding_space)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------------------ helpers

# magnitudes below 1e-100 are flushed to 0 so that scales (max / 2^b) stay far from subnormals
_entries = st.one_of(st.just(0.0), st.floats(-50.0, 50.0, allow_nan=False), st.floats(-1e-3, 1e-3)
                     ).map(lambda x: 0.0 if abs(x) < 1e-100 else x)


@st.composite
def weights(draw, min_rows=1, max_rows=5, max_cols=8, zero_rows=True):
    rows = draw(st.integers(min_rows, max_rows))
    cols = draw(st.integers(1, max_cols))
    W = draw(hnp.arrays(np.float64, (rows, cols), elements=_entries))
    if zero_rows and rows > 1 and draw(st.booleans()):
        W[draw(st.integers(0, rows - 1))] = 0.0
    return W


@st.composite
def grids(draw, scale_methods=("minmax", "mse", "output-mse")):
    scheme = draw(st.sampled_from(["symmetric", "asymmetric"]))
    narrow = draw(st.booleans()) if scheme == "symmetric" else False
    return Grid(bits=draw(st.integers(2, 8)), granularity=draw(st.sampled_from(["channel", "tensor"])),
                scheme=scheme, narrow=narrow, scale_method=draw(st.sampled_from(scale_methods)),
                search_points=draw(st.sampled_from([2, 7, 30])))


def _psd(cols: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(cols, 3 * cols + 2))
    return X @ X.T / X.shape[1]


def _with(grid: Grid, **kw) -> Grid:
    fields = dict(bits=grid.bits, granularity=grid.granularity, scheme=grid.scheme, narrow=grid.narrow,
                  scale_method=grid.scale_method, search_points=grid.search_points)
    fields.update(kw)
    return Grid(**fields)


def _nearest_W_hat(W, grid, H=None) -> np.ndarray:
    sp = rounding_space(W, grid, H=H)
    return sp.dequantize(sp.nearest())


def _exact_round_half_up(x: np.ndarray) -> np.ndarray:
    """Round to nearest, ties up, without the double rounding of ``floor(x + 0.5)``."""
    fl = np.floor(x)
    return np.where(x - fl == 0.5, fl + 1.0, np.round(x))  # x - floor(x) is exact for |x| < 2^52


def _random_V(sp: RoundingSpace, rng) -> np.ndarray:
    V = rng.integers(0, 2, size=sp.shape).astype(np.uint8)
    return np.where(sp.fixed_mask, sp.fixed_value, V).astype(np.uint8)


# ------------------------------------------------------------------------------------------ limits

@pytest.mark.parametrize("bits", range(2, 9))
def test_integer_limits(bits):
    assert Grid(bits=bits, scheme="symmetric").limits == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    assert Grid(bits=bits, scheme="symmetric", narrow=True).limits == (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
    assert Grid(bits=bits, scheme="asymmetric").limits == (0, 2**bits - 1)
    n, p = Grid(bits=bits).limits
    assert p - n + 1 == 2**bits  # full range uses all 2^b codes
    n, p = Grid(bits=bits, narrow=True).limits
    assert p - n + 1 == 2**bits - 1 and n == -p
    assert all(isinstance(v, int) for v in Grid(bits=np.int64(bits)).limits)


def test_known_values():
    assert Grid(bits=4).limits == (-8, 7)
    assert Grid(bits=4, narrow=True).limits == (-7, 7)
    assert Grid(bits=4, scheme="asymmetric").limits == (0, 15)
    assert Grid(bits=8).limits == (-128, 127)
    assert Grid(bits=2, narrow=True).limits == (-1, 1)


# ------------------------------------------------------------------------------------------ scales

@SETTINGS
@given(W=weights(), grid=grids(), seed=st.integers(0, 1000))
def test_channel_and_tensor_scale_shapes(W, grid, seed):
    H = _psd(W.shape[1], seed)
    s, z = choose_qparams(W, grid, H)
    assert s.shape == z.shape == (W.shape[0],)
    assert s.dtype == z.dtype == np.float64
    assert np.isfinite(s).all() and (s > 0).all()
    n, p = grid.limits
    assert (z == np.round(z)).all() and (z >= n).all() and (z <= p).all()
    if grid.scheme == "symmetric":
        assert (z == 0).all()
    if grid.granularity == "tensor":
        assert (s == s[0]).all() and (z == z[0]).all()


def test_per_channel_scales_differ_per_row():
    W = np.array([[1.0, -0.5, 0.25], [10.0, 3.0, -2.0], [0.01, 0.02, -0.03]])
    s, _ = choose_qparams(W, Grid(bits=4, scale_method="minmax"))
    np.testing.assert_allclose(s, np.array([1.0, 10.0, 0.03]) / 7, rtol=1e-15)
    s_t, _ = choose_qparams(W, Grid(bits=4, scale_method="minmax", granularity="tensor"))
    np.testing.assert_allclose(s_t, np.full(3, 10.0 / 7), rtol=1e-15)


@SETTINGS
@given(W=weights(zero_rows=False), bits=st.integers(2, 8), narrow=st.booleans(),
       granularity=st.sampled_from(["channel", "tensor"]))
def test_minmax_symmetric_covers_range_exactly(W, bits, narrow, granularity):
    grid = Grid(bits=bits, narrow=narrow, granularity=granularity, scale_method="minmax")
    amax = np.abs(W).max(axis=1) if granularity == "channel" else np.full(W.shape[0], np.abs(W).max())
    assume((amax > 0).all())
    sp = rounding_space(W, grid)
    n, p = grid.limits
    np.testing.assert_allclose(sp.s * p, amax, rtol=4e-16)
    # only weights at the exact top (W = +max-abs; with a narrow grid also W = -max-abs, whose
    # floor can fall one below n = -p by float rounding) can be fixed: every other weight has a
    # real choice. (All-zero rows of a per-tensor grid are fixed at 0 by design.)
    live = np.any(W != 0, axis=1)[:, None]
    top = (np.abs(W) if narrow else W) >= amax[:, None] * (1 - 4e-16)
    assert not (sp.fixed_mask & ~top & live).any()
    inside = (np.abs(W) <= amax[:, None] * (1 - 1e-9)) & live
    assert not sp.fixed_mask[inside].any()
    # the whole range is representable: nearest rounding is within half a step everywhere
    err = np.abs(sp.dequantize(sp.nearest()) - W)
    assert (err <= sp.s[:, None] * (0.5 + 1e-9)).all()


def test_minmax_symmetric_top_is_the_only_fixed_entry():
    W = np.array([[0.7, -0.3, 0.1, -0.69], [-2.0, 1.0, 0.5, 2.0]])
    for narrow in (False, True):
        sp = rounding_space(W, Grid(bits=3, narrow=narrow, scale_method="minmax"))
        np.testing.assert_allclose(sp.s * 3, [0.7, 2.0], rtol=1e-15)
        # -2.0 sits at -p, which is representable by both full and narrow grids with a choice
        assert not sp.fixed_mask[1, 0]
        assert sp.fixed_mask.sum() <= 2
        assert not sp.fixed_mask[:, 1:3].any()
        np.testing.assert_allclose(sp.dequantize(sp.nearest())[:, [0, 3]][[0, 1], [0, 1]], [0.7, 2.0],
                                   rtol=1e-15)


@SETTINGS
@given(W=weights(zero_rows=False), bits=st.integers(2, 8), granularity=st.sampled_from(["channel", "tensor"]))
def test_minmax_asymmetric_covers_range_exactly(W, bits, granularity):
    grid = Grid(bits=bits, scheme="asymmetric", granularity=granularity, scale_method="minmax")
    if granularity == "channel":
        lo, hi = W.min(axis=1), W.max(axis=1)
    else:
        lo, hi = np.full(W.shape[0], W.min()), np.full(W.shape[0], W.max())
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    assume((hi > lo).all())
    s, z = choose_qparams(W, grid)
    n, p = grid.limits
    np.testing.assert_allclose(s * (p - n), hi - lo, rtol=4e-16)
    # the zero point is rounded, so each end of the range is within half a step of the grid ends
    assert (s * (n - z) <= lo + s * (0.5 + 1e-9)).all()
    assert (s * (p - z) >= hi - s * (0.5 + 1e-9)).all()
    err = np.abs(_nearest_W_hat(W, grid) - W)
    assert (err <= s[:, None] * (1 + 1e-9)).all()


@SETTINGS
@given(W=weights(), grid=grids(scale_methods=("mse",)))
def test_mse_scale_is_no_worse_than_minmax(W, grid):
    e_mse = (_nearest_W_hat(W, grid) - W) ** 2
    e_mm = (_nearest_W_hat(W, _with(grid, scale_method="minmax")) - W) ** 2
    if grid.granularity == "channel":
        a, b = e_mse.sum(axis=1), e_mm.sum(axis=1)
    else:
        a, b = np.array([e_mse.sum()]), np.array([e_mm.sum()])
    assert (a <= b * (1 + 1e-12) + 1e-300).all(), (a, b)


def test_mse_scale_beats_minmax_on_an_outlier():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(4, 64))
    W[:, 0] = 6.0  # a moderate outlier per row: clipping it pays off at 3 bits
    e_mse = ((_nearest_W_hat(W, Grid(bits=3, scale_method="mse")) - W) ** 2).sum(1)
    e_mm = ((_nearest_W_hat(W, Grid(bits=3, scale_method="minmax")) - W) ** 2).sum(1)
    assert (e_mse < 0.7 * e_mm).all()
    s_mse, _ = choose_qparams(W, Grid(bits=3, scale_method="mse"))
    assert (s_mse < 6.0 / 3).all()  # the range was shrunk below the max-abs


@SETTINGS
@given(W=weights(), grid=grids(scale_methods=("output-mse",)), seed=st.integers(0, 1000))
def test_output_mse_scale_is_no_worse_than_minmax(W, grid, seed):
    H = _psd(W.shape[1], seed)

    def out_err(g):
        dW = _nearest_W_hat(W, g, H) - W
        return np.einsum("rc,cd,rd->r", dW, H, dW)

    a, b = out_err(grid), out_err(_with(grid, scale_method="minmax"))
    if grid.granularity == "tensor":
        a, b = np.array([a.sum()]), np.array([b.sum()])
    assert (a <= b * (1 + 1e-10) + 1e-300).all(), (a, b)


def _reference_search(W, grid, H):
    """The scale search written plainly: every candidate range on the whole matrix at once."""
    lo, hi = W.min(1), W.max(1)
    n, p = grid.limits
    best = (np.full(W.shape[0], np.inf), None, None)
    for a in np.linspace(1.0, 1.0 / grid.search_points, grid.search_points):
        if grid.scheme == "symmetric":
            s, z = np.maximum(np.abs(lo * a), np.abs(hi * a)) / p, np.zeros(W.shape[0])
        else:
            lo_a, hi_a = np.minimum(lo * a, 0.0), np.maximum(hi * a, 0.0)
            s = hi_a / (p - n) - lo_a / (p - n)
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.where(s > 0, np.clip(np.round(n - lo_a / np.where(s > 0, s, 1.0)), n, p), 0.0)
        dW = nearest_dequant(W, np.where(s > 0, s, 1.0)[:, None], z[:, None], grid) - W
        err = (dW**2).sum(1) if H is None else np.einsum("rc,cd,rd->r", dW, H, dW)
        better = (err < best[0]) & (s > 0)
        best = (np.where(better, err, best[0]), np.where(better, s, s if best[1] is None else best[1]),
                np.where(better, z, z if best[2] is None else best[2]))
    return best[1], best[2]


@SETTINGS
@given(W=weights(max_rows=9, max_cols=20, zero_rows=False), grid=grids(scale_methods=("mse", "output-mse")),
       seed=st.integers(0, 1000), block=st.sampled_from([1, 7, 40, 1 << 15]))
def test_blocked_scale_search_equals_the_plain_search(W, grid, seed, block):
    """The per-channel search runs blocks of rows in reused buffers (any block size): it picks
    exactly the scales and zero points of the plain whole-matrix search."""
    import qubo_round.grid as grid_mod
    assume(grid.granularity == "channel" and (np.abs(W).max(1) > 0).all())
    H = _psd(W.shape[1], seed) if grid.scale_method == "output-mse" else None
    old, grid_mod.SEARCH_BLOCK = grid_mod.SEARCH_BLOCK, block
    try:
        s, z = choose_qparams(W, grid, H)
    finally:
        grid_mod.SEARCH_BLOCK = old
    s_ref, z_ref = _reference_search(W, grid, H)
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_array_equal(z, z_ref)


def test_output_mse_without_H_raises_clear_error():
    W = np.random.default_rng(0).normal(size=(3, 5))
    with pytest.raises(ValueError, match="output-mse.*H"):
        choose_qparams(W, Grid(scale_method="output-mse"))
    with pytest.raises(ValueError, match="H"):
        rounding_space(W, Grid(scale_method="output-mse"))


# ------------------------------------------------------------------------------------------ rounding space

@SETTINGS
@given(W=weights(), grid=grids())
def test_nearest_is_round_half_up_on_free_entries(W, grid):
    sp = rounding_space(W, grid, H=_psd(W.shape[1], 0))
    V = sp.nearest()
    assert V.dtype == np.uint8
    assert (V[sp.fixed_mask] == sp.fixed_value[sp.fixed_mask]).all()
    q_ref = np.clip(_exact_round_half_up(W / sp.s[:, None]) + sp.z[:, None], sp.qmin, sp.qmax)
    free = ~sp.fixed_mask
    np.testing.assert_array_equal(sp.integers(V)[free], q_ref[free])
    # and nearest is the better of the two candidates (ties up)
    lo = sp.dequantize(np.zeros_like(V))
    up = sp.s[:, None] * (sp.L + 1 - sp.z[:, None])
    d_lo, d_up = np.abs(W - lo), np.abs(W - up)
    assert (d_lo[free & (V == 0)] <= d_up[free & (V == 0)] * (1 + 1e-12) + 1e-300).all()
    assert (d_up[free & (V == 1)] <= d_lo[free & (V == 1)] * (1 + 1e-12) + 1e-300).all()


def test_nearest_ties_go_up():
    W = np.array([[0.5, 1.5, -0.5, -1.5, 2.25, -2.75]])
    sp = rounding_space(W, Grid(bits=4), s=np.array([1.0]))
    assert sp.integers(sp.nearest()).tolist() == [[1, 2, 0, -1, 2, -3]]


def test_nearest_dequant_agrees_with_rounding_space_nearest():
    x = np.nextafter(0.5, 0.0)
    W = np.array([[x, 1.0 + x, 3.0]])
    grid = Grid(bits=4)
    s = np.array([1.0])
    sp = rounding_space(W, grid, s=s)
    np.testing.assert_array_equal(nearest_dequant(W, s[:, None], 0.0, grid), sp.dequantize(sp.nearest()))


@SETTINGS
@given(W=weights(), grid=grids(), seed=st.integers(0, 2**32 - 1))
def test_dequantize_is_on_the_grid_for_every_assignment(W, grid, seed):
    sp = rounding_space(W, grid, H=_psd(W.shape[1], 1))
    rng = np.random.default_rng(seed)
    n, p = grid.limits
    assert (sp.qmin, sp.qmax) == (n, p)
    F = np.floor(W / sp.s[:, None]) + sp.z[:, None]
    for _ in range(4):
        V = _random_V(sp, rng)
        q = sp.integers(V)
        assert q.dtype == np.int64
        assert (q >= n).all() and (q <= p).all()
        W_hat = sp.dequantize(V)
        np.testing.assert_array_equal(W_hat, sp.s[:, None] * (q - sp.z[:, None]))
        # q is one of the two clipped candidates of each weight
        assert ((q == np.clip(F, n, p)) | (q == np.clip(F + 1, n, p)) | sp.fixed_mask).all()
    # the floor candidate b of the docs
    np.testing.assert_array_equal(sp.b, sp.dequantize(np.zeros(sp.shape, np.uint8)))


@SETTINGS
@given(W=weights(), grid=grids())
def test_fixed_entries_are_exactly_the_coinciding_candidates(W, grid):
    sp = rounding_space(W, grid, H=_psd(W.shape[1], 2))
    n, p = grid.limits
    F = np.floor(W / sp.s[:, None]) + sp.z[:, None]
    same = np.clip(F, n, p) == np.clip(F + 1, n, p)
    zero_rows = ~np.any(W != 0, axis=1)
    expected = same | zero_rows[:, None]
    np.testing.assert_array_equal(sp.fixed_mask, expected)
    assert (sp.fixed_value == 0).all() and sp.fixed_value.dtype == np.uint8
    # fixed entries keep the already clipped level
    q = sp.integers(sp.nearest())
    np.testing.assert_array_equal(q[same & ~zero_rows[:, None]], np.clip(F, n, p)[same & ~zero_rows[:, None]])
    # frac gives the fixed value on fixed entries and a fraction elsewhere (it can be exactly 1.0
    # for a tiny negative W/s such as -1e-148, where W/s - floor(W/s) rounds to 1)
    f = sp.frac
    assert ((f >= 0) & (f <= 1)).all()
    assert (f[sp.fixed_mask] == 0).all()


def test_clipped_weights_are_fixed():
    W = np.array([[0.1, -0.2, 5.0, -5.0, 0.3]])
    sp = rounding_space(W, Grid(bits=3), s=np.array([0.1]))  # limits [-4, 3]
    assert sp.fixed_mask.tolist() == [[False, False, True, True, False]]
    assert sp.integers(sp.nearest()).tolist()[0][2:4] == [3, -4]


@SETTINGS
@given(W=weights(), bits=st.integers(2, 8), granularity=st.sampled_from(["channel", "tensor"]),
       method=st.sampled_from(["minmax", "mse", "output-mse"]))
def test_asymmetric_zero_point_represents_zero_exactly(W, bits, granularity, method):
    W = W.copy()
    W[:, 0] = 0.0
    grid = Grid(bits=bits, scheme="asymmetric", granularity=granularity, scale_method=method)
    sp = rounding_space(W, grid, H=_psd(W.shape[1], 3))
    assert (sp.z == np.round(sp.z)).all() and (sp.z >= sp.qmin).all() and (sp.z <= sp.qmax).all()
    assert (sp.dequantize(sp.nearest())[:, 0] == 0.0).all()
    # the level q = z is on the grid and dequantizes to 0
    assert (sp.s * (sp.z - sp.z) == 0).all()


def test_asymmetric_positive_row_zero_point():
    W = np.array([[0.0, 1.0, 2.0, 3.0]])
    s, z = choose_qparams(W, Grid(bits=2, scheme="asymmetric", scale_method="minmax"))
    assert s.tolist() == [1.0] and z.tolist() == [0.0]
    s, z = choose_qparams(-W, Grid(bits=2, scheme="asymmetric", scale_method="minmax"))
    assert s.tolist() == [1.0] and z.tolist() == [3.0]


def test_given_scales_are_used_and_validated():
    W = np.array([[0.3, -0.7], [1.0, 2.0]])
    sp = rounding_space(W, Grid(), s=0.1)
    assert sp.s.tolist() == [0.1, 0.1] and sp.z.tolist() == [0.0, 0.0]
    for bad in (0.0, -1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="finite and > 0"):
            rounding_space(W, Grid(), s=np.array([0.1, bad]))


# ------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("bits", [1, 9, 0, -3])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match="2..8"):
        Grid(bits=bits)


@pytest.mark.parametrize("bits", [2.5, True, False, "4", 4.0])
def test_bits_wrong_type(bits):
    with pytest.raises(TypeError, match="integer"):
        Grid(bits=bits)


@pytest.mark.parametrize("kw, match", [
    (dict(granularity="row"), "granularity"),
    (dict(granularity="group"), "granularity"),
    (dict(scheme="affine"), "scheme"),
    (dict(scale_method="percentile"), "scale_method"),
    (dict(scheme="asymmetric", narrow=True), "narrow"),
    (dict(search_points=1), "search_points"),
])
def test_bad_grid_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        Grid(**kw)


def test_grid_is_frozen():
    g = Grid()
    with pytest.raises(Exception):
        g.bits = 3  # type: ignore[misc]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_name_the_position(bad):
    W = np.ones((3, 4))
    W[2, 1] = bad
    for call in (lambda: choose_qparams(W, Grid()), lambda: rounding_space(W, Grid())):
        with pytest.raises(ValueError, match=r"non-finite.*row 2, col 1"):
            call()


@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (0, 0)])
def test_empty_weights(shape):
    with pytest.raises(ValueError, match="empty"):
        rounding_space(np.zeros(shape), Grid())


@pytest.mark.parametrize("W", [np.zeros(4), np.zeros((2, 2, 2))])
def test_weights_must_be_2d(W):
    with pytest.raises(ValueError, match="2-D"):
        choose_qparams(W, Grid())


def test_huge_finite_weights_do_not_give_infinite_scales():
    W = np.array([[1e308, -1e308, 0.5]])
    try:
        s, _ = choose_qparams(W, Grid(scheme="asymmetric", scale_method="minmax"))
    except ValueError:
        return  # a clear error would be acceptable too
    assert np.isfinite(s).all()


# ------------------------------------------------------------------------------------------ all-zero channels

_ZERO_GRIDS = [Grid(bits=b, granularity=gr, scheme=sc, narrow=nw, scale_method=m, search_points=10)
               for b in (2, 4) for gr in ("channel", "tensor") for sc, nw in
               (("symmetric", False), ("symmetric", True), ("asymmetric", False))
               for m in ("minmax", "mse", "output-mse")]


@pytest.mark.parametrize("grid", _ZERO_GRIDS, ids=lambda g: f"{g.bits}-{g.granularity}-{g.scheme}-"
                         f"{'n' if g.narrow else 'f'}-{g.scale_method}")
@pytest.mark.parametrize("all_zero", [False, True], ids=["zero-row", "zero-tensor"])
def test_all_zero_channels(grid, all_zero, caplog):
    rng = np.random.default_rng(0)
    W = rng.normal(size=(4, 6))
    zero_rows = [0, 1, 2, 3] if all_zero else [1, 3]
    W[zero_rows] = 0.0
    H = _psd(6, 4)
    caplog.set_level(logging.WARNING, logger="qubo_round.grid")
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        s, z = choose_qparams(W, grid, H)
        sp = rounding_space(W, grid, H=H)
        f = sp.frac
        V0 = sp.nearest()
        Vs = [_random_V(sp, rng) for _ in range(5)] + [V0]
        W_hats = [sp.dequantize(V) for V in Vs]
    assert np.isfinite(sp.s).all() and (sp.s > 0).all()
    assert np.isfinite(s).all() and (s > 0).all()
    assert np.isfinite(f).all()
    assert sp.fixed_mask[zero_rows].all()
    for W_hat in W_hats:
        assert (W_hat[zero_rows] == 0.0).all()
        assert np.isfinite(W_hat).all()
    # every binary V respecting the fixes, not just random ones: the zero rows only admit V = 0
    assert (sp.fixed_value[zero_rows] == 0).all()
    if all_zero or grid.granularity == "channel":
        assert any("all-zero" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
        assert (sp.s[zero_rows] == ZERO_CHANNEL_SCALE).all()
    if not all_zero:
        other = [0, 2]
        assert not sp.fixed_mask[other].all()
        assert np.abs(sp.dequantize(V0)[other] - W[other]).max() <= sp.s[other].max()


def test_zero_row_energies_do_not_break_check_assignment():
    W = np.zeros((2, 3))
    sp = rounding_space(W, Grid(bits=3))
    with pytest.raises(ValueError, match="fixed"):
        sp.check_assignment(np.ones((2, 3), np.uint8))


# ------------------------------------------------------------------------------------------ check_assignment

def test_check_assignment_errors():
    W = np.array([[0.1, -0.2, 5.0], [0.4, 0.25, -0.3]])
    sp = rounding_space(W, Grid(bits=3), s=np.array([0.1, 0.1]))
    assert sp.fixed_mask[0, 2]
    ok = np.zeros((2, 3), np.uint8)
    assert sp.check_assignment(ok) is not None
    with pytest.raises(ValueError, match=r"shape \(3, 2\), expected \(2, 3\)"):
        sp.check_assignment(np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        sp.dequantize(np.zeros(6, np.uint8))
    bad = ok.astype(np.int64)
    bad[1, 1] = 2
    with pytest.raises(ValueError, match="binary"):
        sp.check_assignment(bad)
    with pytest.raises(ValueError, match="binary"):
        sp.integers(np.full((2, 3), 0.5))
    viol = ok.copy()
    viol[0, 2] = 1
    with pytest.raises(ValueError, match=r"violates fixed variable \(0, 2\)"):
        sp.dequantize(viol)
