"""The public instances ship inside the package: identical to the project's shared copy, found by
their published names without any data directory, and covered by the wheel's package data."""
import fnmatch
import hashlib
import tomllib
from pathlib import Path

import pytest

from qubo_round.instances import PACKAGE_DATA, best_known, load_instance

ROOT = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_shipped_copy_equals_the_shared_data():
    from conftest import QUBO_DATA_DIR
    if not QUBO_DATA_DIR.is_dir():
        pytest.skip(f"no shared copy at {QUBO_DATA_DIR} to compare the shipped one with (a checkout without ../shared)")
    assert _files(PACKAGE_DATA) == _files(QUBO_DATA_DIR)
    assert len(_files(PACKAGE_DATA)) > 20


def test_published_names_resolve_without_a_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("QUBO_ROUND_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    known = best_known()
    assert len(known) == 80
    for name in ("bqp50-1", "bqp250-10", "gka1b", "G1"):
        p = load_instance(name)
        assert p.meta["name"] == name
        assert name in known
    from qubo_round.solvers import get_solver
    p = load_instance("bqp50-1")  # the published optimum, reached: the shipped file is the real one
    r = get_solver("its", target=-known["bqp50-1"]).solve(p, seed=0, time_limit=10)
    assert r.best_energies[0] == -known["bqp50-1"] == -2098


def test_unknown_name_still_a_clear_error(monkeypatch):
    monkeypatch.delenv("QUBO_ROUND_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match=r"bqp51.txt.*pass data_dir or set \$QUBO_ROUND_DATA"):
        load_instance("bqp51-1")


def test_package_data_patterns_cover_every_shipped_file():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = cfg["tool"]["setuptools"]["package-data"]["qubo_round"]
    for rel in _files(PACKAGE_DATA):
        path = f"data/qubo/{rel}"
        assert any(fnmatch.fnmatch(path, pat) and path.count("/") == pat.count("/") for pat in patterns), path
