"""The one registry helper (qubo_round.registry) under solvers, suites, studies and models."""
import sys

import pytest

from qubo_round.registry import Registry, UnknownNameError


class UnknownThingError(UnknownNameError):
    pass


def test_register_get_names_and_errors():
    r = Registry("thing", error=UnknownThingError, hint=" (try --list)")
    r.register("b", 2)
    r.register("a", 1)
    assert r.names() == ["b", "a"] and list(r) == ["b", "a"] and len(r) == 2 and "a" in r
    assert r.get("a") == 1 and r["b"] == 2 and r.items() == [("b", 2), ("a", 1)]
    with pytest.raises(UnknownThingError) as e:
        r.get("c")
    assert str(e.value) == "unknown thing 'c'; available: b, a (try --list)"  # not quoted like a KeyError
    assert isinstance(e.value, KeyError)
    with pytest.raises(ValueError, match="already registered"):
        r.register("a", 3)
    with pytest.raises(ValueError, match="non-empty string"):
        r.register("", 3)
    c = r.copy()
    c.register("c", 3)
    assert "c" not in r and c.names() == ["b", "a", "c"]


def test_lazy_entries_import_their_module_on_first_use(tmp_path, monkeypatch):
    r = Registry("thing", lazy={"x": "qr_lazy_demo", "y": "json"})
    (tmp_path / "qr_lazy_demo.py").write_text("import test_registry_target as t\nt.REG.register('x', 42)\n")
    target = type(sys)("test_registry_target")
    target.REG = r
    monkeypatch.setitem(sys.modules, "test_registry_target", target)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert r.names() == ["x", "y"] and "qr_lazy_demo" not in sys.modules  # listing imports nothing
    assert r.get("x") == 42 and "qr_lazy_demo" in sys.modules
    with pytest.raises(RuntimeError, match="json did not register the thing 'y'"):
        r.get("y")
    monkeypatch.delitem(sys.modules, "qr_lazy_demo")


def test_the_four_registries_share_it():
    from qubo_round.bench.suites import SUITES, UnknownSuiteError, get_suite
    from qubo_round.solvers import UnknownSolverError, get_solver
    from qubo_round.studies import STUDIES, UnknownStudyError, get_study
    from qubo_round.zoo import UnknownModelError, load_model
    assert isinstance(SUITES, Registry) and isinstance(STUDIES, Registry)
    for call, err, kind in ((lambda: get_solver("nope"), UnknownSolverError, "solver"),
                            (lambda: get_suite("nope"), UnknownSuiteError, "benchmark suite"),
                            (lambda: get_study("nope"), UnknownStudyError, "study"),
                            (lambda: load_model("nope"), UnknownModelError, "model")):
        with pytest.raises(err) as e:
            call()
        assert isinstance(e.value, UnknownNameError) and str(e.value).startswith(f"unknown {kind} 'nope'; available: ")
