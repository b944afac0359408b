"""instances.planar_graph: a planar, seeded, Gset-like sparse max-cut generator."""
import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qubo_round.instances import cut_value, planar_graph


@settings(max_examples=20, deadline=None)
@given(n=st.integers(4, 120), seed=st.integers(0, 2**31 - 1), weights=st.sampled_from(["unit", "pm1"]))
def test_planar_simple_and_energy_is_minus_the_cut(n, seed, weights):
    p = planar_graph(n, weights=weights, seed=seed)
    e = p.meta["edges"]
    i, j, w = e[:, 0].astype(int), e[:, 1].astype(int), e[:, 2]
    assert p.n == n and (i < j).all() and len({(a, b) for a, b in zip(i, j)}) == len(e)
    assert set(np.unique(w)) <= ({1.0} if weights == "unit" else {-1.0, 1.0})
    g = nx.Graph(list(zip(i.tolist(), j.tolist())))
    assert nx.check_planarity(g)[0]
    assert len(e) <= 3 * n - 6  # Euler's bound for simple planar graphs
    X = np.random.default_rng(seed).integers(0, 2, size=(5, 1, n)).astype(np.uint8)
    np.testing.assert_allclose(-p.energies(X)[:, 0], [cut_value(e, x[0]) for x in X], atol=1e-9)


def test_planar_deterministic_and_gset_like_degree():
    a, b = planar_graph(800, seed=3), planar_graph(800, seed=3)
    assert np.array_equal(a.meta["edges"], b.meta["edges"])
    assert not np.array_equal(a.meta["edges"], planar_graph(800, seed=4).meta["edges"])
    assert 5.8 < 2 * len(a.meta["edges"]) / 800 < 6.0  # near Euler's 3n - 6


@pytest.mark.parametrize("kw, match", [({"n": 3}, "n >= 4"), ({"n": 10, "weights": "gauss"}, "weights"),
                                       ({"n": True}, "integer")])
def test_planar_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        planar_graph(**kw)
