"""The study framework: registry, CLI, cached (resumable) cells, report writing. Each study's own
quick-mode smoke test lives in tests/test_study_<name>.py."""
from __future__ import annotations

import csv
import importlib.util
import json

import pytest

from qubo_round.cli import main
from qubo_round.studies import STUDIES, UnknownStudyError, available_studies, get_study
from qubo_round.studies.common import StudyContext, markdown_table, mean_std, pm


def test_six_studies_registered_with_importable_modules():
    assert len(available_studies()) == 6
    for name, (module, question) in STUDIES.items():
        assert question.endswith(")") or question.endswith("?")
        assert importlib.util.find_spec(module) is not None, f"{name}: module {module} missing"


def test_unknown_study_is_a_clear_error(capsys):
    with pytest.raises(UnknownStudyError, match="rounding-choice"):
        get_study("rounding")
    assert main(["study", "rounding"]) == 2
    assert "unknown study 'rounding'" in capsys.readouterr().err
    assert main(["study"]) == 2  # no name, no --list


def test_cli_lists_studies(capsys):
    assert main(["study", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in STUDIES)


def test_cells_are_cached_and_resume(tmp_path):
    calls = []

    def work(x):
        calls.append(x)
        return {"x": x, "sq": x * x}

    ctx = StudyContext(name="t", out=tmp_path, cache=tmp_path / "cache", progress=False)
    first = [ctx.cell({"x": x}, lambda x=x: work(x)) for x in range(3)]
    # a "resumed" run: a new context on the same cache recomputes nothing
    ctx2 = StudyContext(name="t", out=tmp_path, cache=tmp_path / "cache", progress=False)
    second = [ctx2.cell({"x": x}, lambda x=x: work(x)) for x in range(3)]
    assert first == second and calls == [0, 1, 2]
    assert (ctx.computed, ctx2.computed, ctx2.reused) == (3, 0, 3)
    # a different key is a different cell
    ctx2.cell({"x": 0, "other": 1}, lambda: work(9))
    assert calls[-1] == 9
    # no half-written cells are left behind
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_report_files(tmp_path):
    ctx = StudyContext(name="t", out=tmp_path, cache=None, progress=False, command="qubo-round study t")
    rows = [{"method": "a", "acc": 0.5}, {"method": "b", "acc": 0.25, "extra": [1, 2]}]
    ctx.table(rows, title="T")
    path = ctx.csv("rows", rows)
    with ctx.figure("plot", "a plot") as (fig, ax):
        ax.plot([0, 1], [1, 0])
    md = ctx.markdown("Why?", 1.0)
    assert "| method | acc | extra |" in md and "![a plot](plot.png)" in md and "qubo-round study t" in md
    assert (tmp_path / "plot.png").stat().st_size > 1000
    with open(path) as f:
        got = list(csv.DictReader(f))
    assert got[1]["extra"] == json.dumps([1, 2]) and float(got[0]["acc"]) == 0.5


def test_formatting_helpers():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))
    assert mean_std([2.0]) == (2.0, 0.0)
    assert pm([0.5, 0.7], scale=100) == "60.00 ± 14.14"
    assert markdown_table([]) == "(no rows)"


def test_full_study_runs_never_write_into_an_installed_package(tmp_path):
    from pathlib import Path

    from qubo_round.studies.common import REPO_RESULTS, results_root
    checkout = tmp_path / "repo"
    (checkout / "studies").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("")
    assert results_root(checkout / "studies") == (checkout / "studies" / "results").resolve()
    installed = tmp_path / "lib" / "site-packages" / "qubo_round" / "studies"
    installed.mkdir(parents=True)
    (installed.parent / "pyproject.toml").write_text("")  # even with a stray pyproject beside it
    assert results_root(installed) == Path("studies-results")
    assert results_root(tmp_path / "elsewhere") == Path("studies-results")
    assert REPO_RESULTS.name == "results"  # this checkout
