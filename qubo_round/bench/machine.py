"""What a results file says about the machine that produced it: one description for the studies
and the benchmark scripts (the bench's trial rows carry their own fixed columns,
:func:`qubo_round.bench.trial.machine_info`)."""
from __future__ import annotations

import os
import platform
from typing import Any

import torch

__all__ = ["machine", "machine_line"]


def machine() -> dict[str, Any]:
    """This process's machine: architecture, CPU cores, the CPU capability torch dispatches to
    (``AVX2``, ``AVX512``: floating-point results can differ between them), versions, torch's threads."""
    return {"machine": platform.machine(), "cpus": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def machine_line() -> str:
    """:func:`machine` as one line for a Markdown report."""
    m = machine()
    return (f"{m['machine']}, {m['cpus']} CPU cores ({m['cpu_capability']}), Python {m['python']}, "
            f"torch {m['torch']} ({m['threads']} threads)")
