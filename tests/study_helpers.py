"""Shared by the study smoke tests (tests/test_study_*.py): one quick run per study, CSV rows."""
from __future__ import annotations

import csv

import pytest

from qubo_round.studies.common import run_study


def run_quick(name: str, tmp_path_factory):
    """Run study ``name`` in quick mode into a fresh folder; ``(folder, report path)``."""
    out = tmp_path_factory.mktemp(name.replace("-", "_"))
    return out, run_study(name, quick=True, out=out, cache=out / "cache", progress=False)


def quick_study(name: str, fixture: str = "study"):
    """A module-scoped fixture named ``fixture``: :func:`run_quick` of study ``name``, once per
    test file."""
    @pytest.fixture(scope="module", name=fixture)
    def _study(tmp_path_factory):
        return run_quick(name, tmp_path_factory)
    return _study


def rerun(name: str, first, out):
    """Study ``name`` in quick mode again into ``out``, from the cache of the run in ``first``;
    the report path."""
    return run_study(name, quick=True, out=out, cache=first / "cache", progress=False)


def assert_files(folder, names) -> None:
    """Every file in ``names`` was written into ``folder``."""
    missing = [n for n in names if not (folder / n).is_file()]
    assert not missing, f"missing in {folder}: {missing}"


def read_rows(path) -> list[dict[str, str]]:
    """Every row of a CSV the study wrote (a missing file raises, unlike the bench store's reader)."""
    with open(path) as f:
        return list(csv.DictReader(f))
