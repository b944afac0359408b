"""dimod / networkx conversions (qubo_round.convert)."""
from __future__ import annotations

import itertools

import dimod
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qubo_round.convert import from_bqm, interaction_graph, to_bqm
from qubo_round.problem import DenseQUBO, LayerQUBO, QUBOFamily

SETTINGS = settings(max_examples=40, deadline=None)
coef = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=64)


def _all_assignments(problem: QUBOFamily) -> np.ndarray:
    """(2^n, rows, n) uint8: every x in {0,1}^n in every row, fixed variables applied."""
    rows, n = problem.shape
    X = np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.uint8).reshape(-1, n)
    return problem.apply_fixed(np.broadcast_to(X[:, None, :], (X.shape[0], rows, n)))


def _assert_bqm_matches(problem: QUBOFamily) -> None:
    """to_bqm energies == problem.energies for every assignment, every row; same via from_bqm."""
    X = _all_assignments(problem)
    E = problem.energies(X)  # (2^n, rows)
    scale = 1.0 + np.abs(E).max()
    for r in range(problem.rows):
        bqm = to_bqm(problem, r)
        free = np.flatnonzero(~problem.fixed_mask[r])
        assert bqm.vartype is dimod.BINARY
        assert sorted(bqm.variables) == free.tolist()
        got = bqm.energies((X[:, r, free], free.tolist()))
        np.testing.assert_allclose(got, E[:, r], rtol=1e-9, atol=1e-9 * scale)
        # extra (fixed) variables in a sample are ignored by dimod
        full = bqm.energies((X[:, r, :], list(range(problem.n))))
        np.testing.assert_allclose(full, E[:, r], rtol=1e-9, atol=1e-9 * scale)
        back = from_bqm(bqm)
        assert back.meta["labels"] == free.tolist()
        np.testing.assert_allclose(back.energies(X[:, None, r, free])[:, 0], E[:, r],
                                   rtol=1e-9, atol=1e-9 * scale)


@st.composite
def dense_qubos(draw) -> DenseQUBO:
    n = draw(st.integers(1, 8))
    Q = np.array(draw(st.lists(coef, min_size=n * n, max_size=n * n))).reshape(n, n)
    mask = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    vals = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    return DenseQUBO(Q=Q, offset=np.array([draw(coef)]), fixed_mask=np.array([mask]),
                     fixed_value=np.array([vals]) * np.array([mask]))


@st.composite
def layer_qubos(draw) -> LayerQUBO:
    rows, n = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    shared = draw(st.booleans())
    shape = (n, n) if shared else (rows, n, n)
    A = np.array(draw(st.lists(coef, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))))
    A = A.reshape(shape)
    A = (A + np.swapaxes(A, -1, -2)) / 2
    vec = lambda k, s=coef: np.array(draw(st.lists(s, min_size=k, max_size=k)))  # noqa: E731
    mask = vec(rows * n, st.booleans()).reshape(rows, n)
    vals = vec(rows * n, st.integers(0, 1)).reshape(rows, n) * mask
    return LayerQUBO(A=A, scale=vec(rows), linear=vec(rows * n).reshape(rows, n), offset=vec(rows),
                     fixed_mask=mask, fixed_value=vals)


@SETTINGS
@given(dense_qubos())
def test_dense_roundtrip(q: DenseQUBO) -> None:
    _assert_bqm_matches(q)


@SETTINGS
@given(layer_qubos())
def test_layer_roundtrip(q: LayerQUBO) -> None:
    _assert_bqm_matches(q)


def test_bqm_coefficients_and_labels() -> None:
    Q = np.array([[1.0, 2.0, 0.0], [2.0, -3.0, 0.5], [0.0, 0.5, 4.0]])
    q = DenseQUBO(Q=Q, offset=np.array([0.25]), fixed_mask=np.array([[False, False, True]]),
                  fixed_value=np.array([[0, 0, 1]]))
    bqm = to_bqm(q)
    assert bqm.linear == {0: 1.0, 1: -3.0 + 2 * 0.5}
    assert bqm.quadratic == {(0, 1): 4.0}  # 2 * Q_01
    assert bqm.offset == 0.25 + 4.0
    plain = to_bqm(DenseQUBO(Q=Q))
    assert plain.num_variables == 3 and plain.num_interactions == 2 and plain.offset == 0.0


def test_to_bqm_all_fixed_and_bad_row() -> None:
    q = DenseQUBO(Q=np.eye(2), fixed_mask=np.ones((1, 2), bool), fixed_value=np.ones((1, 2)))
    bqm = to_bqm(q)
    assert bqm.num_variables == 0 and bqm.energy({}) == 2.0
    with pytest.raises(IndexError):
        to_bqm(q, 1)


def test_to_bqm_nonsymmetric_layer_matrix() -> None:
    """A LayerQUBO accepts a non-symmetric A; to_bqm must still reproduce its energies."""
    rng = np.random.default_rng(1)
    n = 5
    q = LayerQUBO(A=rng.normal(size=(n, n)), scale=np.array([1.3, 0.7]), linear=rng.normal(size=(2, n)),
                  offset=np.array([0.5, -1.0]), fixed_mask=np.array([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0]]),
                  fixed_value=np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]]))
    _assert_bqm_matches(q)


def test_from_bqm_spin() -> None:
    bqm = dimod.BinaryQuadraticModel({"a": 1.0, "b": -2.0, "c": 0.5},
                                     {("a", "b"): 0.75, ("b", "c"): -1.5}, 0.3, dimod.SPIN)
    q = from_bqm(bqm)
    assert q.meta["labels"] == ["a", "b", "c"] and q.meta["sense"] == "min"
    for s in itertools.product((-1, 1), repeat=3):
        x = (np.array(s) + 1) // 2
        assert np.isclose(q.energy(x[None]), bqm.energy(dict(zip("abc", s))))


def test_from_bqm_unsortable_labels_keep_insertion_order() -> None:
    bqm = dimod.BinaryQuadraticModel({"z": 1.0, 3: 2.0, ("t", 1): -1.0}, {("z", 3): 2.0},
                                     0.0, dimod.BINARY)
    q = from_bqm(bqm)
    assert q.meta["labels"] == ["z", 3, ("t", 1)]
    np.testing.assert_array_equal(q.Q, [[1.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, -1.0]])


def test_from_bqm_sorted_labels() -> None:
    bqm = dimod.BinaryQuadraticModel({5: 1.0, 2: -1.0}, {(5, 2): 3.0}, 1.0, dimod.BINARY)
    q = from_bqm(bqm)
    assert q.meta["labels"] == [2, 5]
    np.testing.assert_array_equal(q.Q, [[-1.0, 1.5], [1.5, 1.0]])
    assert q.offset[0] == 1.0


def test_interaction_graph() -> None:
    Q = np.array([[1.0, 2.0, 0.0, -0.5],
                  [2.0, -3.0, 0.0, 0.0],
                  [0.0, 0.0, 4.0, 1.0],
                  [-0.5, 0.0, 1.0, 0.0]])
    q = DenseQUBO(Q=Q, fixed_mask=np.array([[False, True, False, False]]),
                  fixed_value=np.array([[0, 1, 0, 0]]))
    G = interaction_graph(q)
    assert sorted(G.nodes) == [0, 1, 2, 3]
    assert {i: G.nodes[i]["linear"] for i in G} == {0: 1.0, 1: -3.0, 2: 4.0, 3: 0.0}
    assert {i: G.nodes[i]["fixed"] for i in G} == {0: False, 1: True, 2: False, 3: False}
    assert G.nodes[1]["fixed_value"] == 1
    edges = {tuple(sorted(e)): w for *e, w in G.edges(data="weight")}
    assert edges == {(0, 1): 4.0, (0, 3): -1.0, (2, 3): 2.0}
    # the weights are the dimod pair coefficients of the unfixed problem
    assert edges == {tuple(sorted(k)): v for k, v in to_bqm(DenseQUBO(Q=Q)).quadratic.items()}


def test_interaction_graph_layer_rows() -> None:
    A = np.array([[1.0, 0.5], [0.5, 2.0]])
    q = LayerQUBO(A=A, scale=np.array([1.0, 2.0]), linear=np.array([[0.0, 1.0], [3.0, 0.0]]),
                  offset=np.zeros(2), fixed_mask=np.zeros((2, 2), bool), fixed_value=np.zeros((2, 2)))
    G1 = interaction_graph(q, 1)
    assert G1.nodes[0]["linear"] == 4.0 * 1.0 + 3.0
    assert G1.edges[0, 1]["weight"] == 2 * 4.0 * 0.5
