"""Shared by the study smoke tests (tests/test_study_*.py): one quick run per study, CSV rows."""
from __future__ import annotations

import csv

from qubo_round.studies.common import run_study


def run_quick(name: str, tmp_path_factory):
    """Run study ``name`` in quick mode into a fresh folder; ``(folder, report path)``."""
    out = tmp_path_factory.mktemp(name.replace("-", "_"))
    return out, run_study(name, quick=True, out=out, cache=out / "cache", progress=False)


def read_rows(path) -> list[dict[str, str]]:
    """Every row of a CSV the study wrote (a missing file raises, unlike the bench store's reader)."""
    with open(path) as f:
        return list(csv.DictReader(f))
