"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI (CI=true): the property tests draw the same examples on every run, so that a submission's CI
# result is reproducible; locally every run explores new examples (failures are kept in
# .hypothesis and replayed first).
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")

#: Public QUBO / Max-Cut benchmark data, kept beside the repository (``../shared/data/qubo``).
QUBO_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qubo"


@pytest.fixture(scope="session")
def qubo_data() -> Path:
    """Directory of the public QUBO instances (see its README.md); fails loudly when absent."""
    if not (QUBO_DATA_DIR / "best_known.csv").is_file():
        pytest.fail(f"public QUBO data not found at {QUBO_DATA_DIR}: the tests expect the shared "
                    "data folder beside the repository (../shared/data/qubo)")
    return QUBO_DATA_DIR
