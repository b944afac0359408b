"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

#: Public QUBO / Max-Cut benchmark data, kept beside the repository (``../shared/data/qubo``).
QUBO_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qubo"


@pytest.fixture(scope="session")
def qubo_data() -> Path:
    """Directory of the public QUBO instances (see its README.md); fails loudly when absent."""
    if not (QUBO_DATA_DIR / "best_known.csv").is_file():
        pytest.fail(f"public QUBO data not found at {QUBO_DATA_DIR}: the tests expect the shared "
                    "data folder beside the repository (../shared/data/qubo)")
    return QUBO_DATA_DIR
