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

#: Public QUBO / Max-Cut benchmark data, the project's copy beside the repository
#: (``../shared/data/qubo``), when the checkout has one.
QUBO_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qubo"


@pytest.fixture(scope="session")
def qubo_data() -> Path:
    """Directory of the public QUBO instances (see its README.md): the shared copy beside the
    repository, else the copy shipped in the package (``qubo_round/data/qubo``, checked
    byte-identical to the shared one by ``tests/test_shipped_instances.py`` wherever both exist);
    fails loudly when neither is there."""
    from qubo_round.instances import PACKAGE_DATA
    for root in (QUBO_DATA_DIR, PACKAGE_DATA):
        if (root / "best_known.csv").is_file():
            return root
    pytest.fail(f"public QUBO data found neither at {QUBO_DATA_DIR} nor in the package ({PACKAGE_DATA})")
