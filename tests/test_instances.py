"""Readers of the public QUBO / Max-Cut instances (qubo_round.instances)."""
from __future__ import annotations

import csv
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from qubo_round.instances import (best_known, cut_value, gka_name, load_instance, read_bqp,
                                  read_gka, read_gset)
from qubo_round.problem import DenseQUBO


# --------------------------------------------------------------------------------------------
# Fixtures: every public instance parsed once per session
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def all_instances(qubo_data: Path) -> dict[str, DenseQUBO]:
    """{name: instance} for the 80 instances of best_known.csv."""
    out: dict[str, DenseQUBO] = {}
    for n in (50, 100, 250):
        for q in read_bqp(qubo_data / "orlib" / f"bqp{n}.txt"):
            out[q.meta["name"]] = q
    for f in sorted((qubo_data / "orlib" / "gka_qbsolv").glob("bqpgka_*.qubo")):
        q = read_gka(f)
        out[q.meta["name"]] = q
    for f in sorted((qubo_data / "gset").glob("G*.txt")):
        q = read_gset(f)
        out[q.meta["name"]] = q
    return out


@pytest.fixture(scope="session")
def table(qubo_data: Path) -> list[dict[str, str]]:
    with open(qubo_data / "best_known.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def solutions(qubo_data: Path) -> dict[str, np.ndarray]:
    """{name: (n,) uint8} from verified_solutions.csv."""
    with open(qubo_data / "verified_solutions.csv", newline="") as fh:
        return {r["instance"]: np.frombuffer(r["x"].encode(), np.uint8) - ord("0")
                for r in csv.DictReader(fh)}


def _objective(q: DenseQUBO, x: np.ndarray) -> float:
    return q.objective(q.energy(np.asarray(x, np.uint8)[None, :]))


# --------------------------------------------------------------------------------------------
# The shipped data
# --------------------------------------------------------------------------------------------

def test_best_known_table(qubo_data: Path, table: list[dict[str, str]]) -> None:
    bk = best_known(qubo_data)
    assert len(bk) == 80
    assert bk["bqp50-1"] == 2098.0 and bk["gka5f"] == 190507.0 and bk["G1"] == 11624.0
    assert bk == {r["instance"]: float(r["best_known"]) for r in table}


def test_every_instance_read_with_size_and_meta(all_instances: dict[str, DenseQUBO],
                                                 table: list[dict[str, str]]) -> None:
    assert set(all_instances) == {r["instance"] for r in table}
    for r in table:
        q = all_instances[r["instance"]]
        assert q.shape == (1, int(r["n"])), r["instance"]
        assert q.meta["set"] == r["set"]
        assert q.meta["sense"] == r["sense"] == "max"
        assert Path(q.meta["source_file"]).is_file()
        assert np.array_equal(q.Q, q.Q.T)
        assert np.all(q.Q == np.round(q.Q * 2) / 2)  # integral data, halves from gka couplers


def test_verified_solutions_reach_best_known_exactly(all_instances: dict[str, DenseQUBO],
                                                     solutions: dict[str, np.ndarray],
                                                     qubo_data: Path) -> None:
    bk = best_known(qubo_data)
    assert len(solutions) == 76
    wrong = {name: (_objective(all_instances[name], x), bk[name]) for name, x in solutions.items()
             if _objective(all_instances[name], x) != bk[name]}
    assert not wrong, f"objective != best_known: {wrong}"


def test_objective_is_negated_energy(all_instances: dict[str, DenseQUBO],
                                     solutions: dict[str, np.ndarray]) -> None:
    q, x = all_instances["gka1a"], solutions["gka1a"]
    e = q.energy(x[None])
    assert e == -3414.0 and q.objective(e) == 3414.0


def test_gset_cut_value_agrees(all_instances: dict[str, DenseQUBO],
                               solutions: dict[str, np.ndarray]) -> None:
    g1 = all_instances["G1"]
    assert g1.meta["edges"].shape == (19176, 3)
    assert cut_value(g1.meta["edges"], solutions["G1"]) == 11624.0
    rng = np.random.default_rng(0)
    for k in range(1, 6):
        g = all_instances[f"G{k}"]
        X = rng.integers(0, 2, size=(8, g.n), dtype=np.uint8)
        cuts = cut_value(g.meta["edges"], X)
        assert cuts.shape == (8,)
        np.testing.assert_array_equal(cuts, -g.energies(X[:, None, :])[:, 0])
    assert cut_value(g1.meta["edges"], np.zeros(g1.n)) == 0.0
    np.testing.assert_array_equal(cut_value(g1.meta["edges"], solutions["G1"][None]), [11624.0])


def test_bqp50_1_off_diagonals_count_twice(qubo_data: Path, solutions: dict[str, np.ndarray]) -> None:
    """Reading each off-diagonal line once would give about half the published value."""
    path = qubo_data / "orlib" / "bqp50.txt"
    q = read_bqp(path, 1)
    x = solutions["bqp50-1"]
    assert _objective(q, x) == 2098.0
    # the pitfall: pair coefficient q_ij (once) instead of 2 q_ij
    lines = path.read_text().split("\n")
    n, nnz = map(int, lines[1].split())
    entries = np.array([ln.split() for ln in lines[2:2 + nnz]], dtype=float)
    lin = {int(i) - 1: w for i, j, w in entries if i == j}
    quad = {(int(i) - 1, int(j) - 1): w for i, j, w in entries if i != j}
    once = DenseQUBO.from_linear_quadratic(n, lin, quad, meta={"sense": "max"})
    wrong = once.energy(x[None])  # positive form, maximised
    assert wrong == 1078.0 and abs(wrong - 1080) < 10 and wrong != 2098.0


def test_bqp50_6_unlisted_variable(qubo_data: Path) -> None:
    q = read_bqp(qubo_data / "orlib" / "bqp50.txt", 6)
    assert q.n == 50 and q.meta["name"] == "bqp50-6"
    assert not q.Q[49].any() and not q.Q[:, 49].any()


def test_read_bqp_all_and_one(qubo_data: Path) -> None:
    path = qubo_data / "orlib" / "bqp100.txt"
    items = read_bqp(path)
    assert [q.meta["name"] for q in items] == [f"bqp100-{k}" for k in range(1, 11)]
    one = read_bqp(path, 7)
    assert one.meta["name"] == "bqp100-7" and np.array_equal(one.Q, items[6].Q)
    with pytest.raises(ValueError, match=r"#11 out of range.*10 instances"):
        read_bqp(path, 11)
    with pytest.raises(ValueError, match="out of range"):
        read_bqp(path, 0)


def test_gka_names() -> None:
    expected = {1: "gka1a", 8: "gka8a", 9: "gka1b", 18: "gka10b", 19: "gka1c", 25: "gka7c",
                26: "gka1d", 35: "gka10d", 36: "gka1e", 40: "gka5e", 41: "gka1f", 45: "gka5f"}
    assert {k: gka_name(k) for k in expected} == expected
    assert gka_name(0) is None and gka_name(46) is None


def test_read_gka_min_sense_and_other_names(tmp_path: Path) -> None:
    f = tmp_path / "tiny.qubo"
    f.write_text("c a comment\np qubo 0 3 2 1\n0 0 1.5\nc inner comment\n2 2 -2\n0 2 4\n")
    q = read_gka(f, sense="min")
    assert q.meta["name"] == "tiny" and q.meta["set"] == "qbsolv" and q.meta["sense"] == "min"
    np.testing.assert_array_equal(q.Q, [[1.5, 0, 2], [0, 0, 0], [2, 0, -2]])
    assert q.energy(np.array([[1, 0, 1]])) == 1.5 - 2 + 4
    qmax = read_gka(f)
    np.testing.assert_array_equal(qmax.Q, -q.Q)


# --------------------------------------------------------------------------------------------
# load_instance: specs, search, errors
# --------------------------------------------------------------------------------------------

def test_load_instance_formats(qubo_data: Path) -> None:
    q = load_instance(str(qubo_data / "orlib" / "bqp50.txt") + "#3")
    assert q.meta["name"] == "bqp50-3"
    assert load_instance("bqp50.txt#3", qubo_data).meta["name"] == "bqp50-3"
    assert load_instance("orlib/bqp250.txt#10", qubo_data).meta["name"] == "bqp250-10"
    assert load_instance("bqpgka_9.qubo", data_dir=qubo_data).meta["name"] == "gka1b"
    assert load_instance("G3.txt", qubo_data).meta["name"] == "G3"
    assert load_instance(qubo_data / "gset" / "G3.txt").n == 800


def test_load_instance_env_var(qubo_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUBO_ROUND_DATA", str(qubo_data))
    assert load_instance("bqp100.txt#2").meta["name"] == "bqp100-2"


def test_load_instance_selector_errors(qubo_data: Path) -> None:
    with pytest.raises(ValueError, match=r"#11 out of range.*10 instances"):
        load_instance("bqp50.txt#11", qubo_data)
    with pytest.raises(ValueError, match=r"#0 out of range.*10 instances"):
        load_instance("bqp50.txt#0", qubo_data)
    with pytest.raises(ValueError, match="integer"):
        load_instance("bqp50.txt#three", qubo_data)
    with pytest.raises(ValueError, match=r"holds 10 instances; pick one"):
        load_instance("bqp50.txt", qubo_data)
    with pytest.raises(ValueError, match="single instance"):
        load_instance("bqpgka_1.qubo#1", qubo_data)
    with pytest.raises(ValueError, match="single instance"):
        load_instance("G1.txt#2", qubo_data)


def test_load_instance_missing_file(qubo_data: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUBO_ROUND_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match=re.escape(str(qubo_data))):
        load_instance("bqp999.txt#1", qubo_data)
    with pytest.raises(FileNotFoundError, match="QUBO_ROUND_DATA"):
        load_instance(tmp_path / "nope.qubo")


def test_load_instance_ambiguous(tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.qubo").write_text("p qubo 0 1 1 0\n0 0 1\n")
    with pytest.raises(FileNotFoundError, match="ambiguous"):
        load_instance("x.qubo", tmp_path)
    assert load_instance("a/x.qubo", tmp_path).n == 1


def test_load_instance_sniffs_content(tmp_path: Path) -> None:
    (tmp_path / "graph.dat").write_text("3 2\n1 2 1\n2 3 5\n")
    g = load_instance(tmp_path / "graph.dat")
    assert g.meta["set"] == "gset" and cut_value(g.meta["edges"], [0, 1, 0]) == 6.0
    (tmp_path / "beasley.dat").write_text("1\n2 2\n1 1 3\n1 2 -1\n")
    b = load_instance(tmp_path / "beasley.dat")
    assert b.objective(b.energy(np.array([[1, 1]]))) == 3 - 2
    (tmp_path / "mystery.dat").write_text("hello world again\n")
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_instance(tmp_path / "mystery.dat")


def test_load_instance_npz_delegates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = DenseQUBO(Q=np.eye(2))
    seen: list[Path] = []
    fake = types.ModuleType("qubo_round.io")
    fake.load_problem = lambda p: seen.append(Path(p)) or sentinel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "qubo_round.io", fake)
    f = tmp_path / "p.npz"
    f.write_bytes(b"")
    assert load_instance(f) is sentinel and seen == [f]
    with pytest.raises(ValueError, match="single instance"):
        load_instance(f"{f}#1")


# --------------------------------------------------------------------------------------------
# Invalid content: ValueError naming file and line
# --------------------------------------------------------------------------------------------

BQP = "2\n3 3\n1 1 5\n1 2 -2\n3 3 1\n2 1\n2 2 4\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_tiny_bqp_reads(tmp_path: Path) -> None:
    a, b = read_bqp(_write(tmp_path, "bqp3.txt", BQP))
    assert a.meta["name"] == "bqp3-1" and b.meta["name"] == "bqp3-2" and b.n == 2
    np.testing.assert_array_equal(-a.Q, [[5, -2, 0], [-2, 0, 0], [0, 0, 1]])


@pytest.mark.parametrize("text, line, pattern", [
    (BQP.replace("1 2 -2", "1 2 abc"), 4, "non-numeric token 'abc'"),
    (BQP.replace("1 2 -2", "1 4 -2"), 4, r"'4'.*\[1, 3\]"),
    (BQP.replace("1 2 -2", "1.5 2 -2"), 4, "not an integer"),
    (BQP.replace("3 3 1", "3 3 nan"), 5, "non-finite"),
    (BQP.replace("2 1\n", "2 x\n"), 6, "non-numeric token 'x'"),
    ("\n".join(BQP.splitlines()[:-1]) + "\n", 6, "file ends.*truncated"),
    ("\n".join(BQP.splitlines()[:4]) + "\n", 4, "file ends.*instance 1 of 2"),
    (BQP + "9 9 9\n", 8, "extra data"),
])
def test_bqp_invalid_content(tmp_path: Path, text: str, line: int, pattern: str) -> None:
    p = _write(tmp_path, "bqp3.txt", text)
    with pytest.raises(ValueError, match=rf"{re.escape(str(p))}, line {line}: .*{pattern}"):
        read_bqp(p)


def test_bqp_truncated_real_file(qubo_data: Path, tmp_path: Path) -> None:
    lines = (qubo_data / "orlib" / "bqp50.txt").read_text().splitlines()
    p = _write(tmp_path, "bqp50.txt", "\n".join(lines[:1000]) + "\n")
    assert read_bqp(p, 2).meta["name"] == "bqp50-2"  # instances before the cut still load
    with pytest.raises(ValueError, match=r"bqp50\.txt, line 1000: file ends"):
        read_bqp(p)
    with pytest.raises(ValueError, match="file ends"):
        load_instance(f"{p}#10")


QUBO = "c hdr\np qubo 0 3 2 1\nc nodes\n0 0 1\n2 2 -2\nc links\n0 2 4\n"


@pytest.mark.parametrize("text, line, pattern", [
    (QUBO.replace("0 2 4", "0 3 4"), 7, r"'3'.*\[0, 2\]"),
    (QUBO.replace("2 2 -2", "2 2 -2x"), 5, "non-numeric"),
    (QUBO.replace("0 2 4\n", ""), 5, "file ends"),
    (QUBO + "1 1 1\n", 8, "extra data"),
    (QUBO.replace("p qubo 0 3 2 1", "p qubo 0 three 2 1"), 2, "non-integer count"),
    (QUBO.replace("p qubo 0 3 2 1\n", ""), 3, "header"),
    ("c only comments\n", 1, "no 'p qubo' header"),
])
def test_qubo_invalid_content(tmp_path: Path, text: str, line: int, pattern: str) -> None:
    p = _write(tmp_path, "bad.qubo", text)
    with pytest.raises(ValueError, match=rf"{re.escape(str(p))}, line {line}: .*{pattern}"):
        read_gka(p)


GSET = "3 2\n1 2 1\n2 3 5\n"


@pytest.mark.parametrize("text, line, pattern", [
    (GSET.replace("2 3 5", "2 3 five"), 3, "non-numeric"),
    (GSET.replace("2 3 5", "2 4 5"), 3, r"\[1, 3\]"),
    ("3 3\n1 2 1\n2 3 5\n", 3, "file ends"),
    ("3\n", 1, "file ends.*'n m' header"),
    (GSET + "1 3 1\n", 4, "extra data"),
])
def test_gset_invalid_content(tmp_path: Path, text: str, line: int, pattern: str) -> None:
    p = _write(tmp_path, "G9.txt", text)
    with pytest.raises(ValueError, match=rf"{re.escape(str(p))}, line {line}: .*{pattern}"):
        read_gset(p)


def test_gset_self_loop_ignored(tmp_path: Path) -> None:
    g = read_gset(_write(tmp_path, "G9.txt", "2 2\n1 1 3\n1 2 2\n"))
    np.testing.assert_array_equal(-g.Q, [[2, -2], [-2, 2]])
    for x in ([0, 0], [0, 1], [1, 0], [1, 1]):
        assert g.objective(g.energy(np.array([x]))) == cut_value(g.meta["edges"], x)
