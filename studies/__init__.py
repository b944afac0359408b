"""Studies: the paper's research questions answered again on the models that run here.

Each study is one command, ``qubo-round study NAME [--quick] [--seed S]``, that writes a
Markdown report (``NAME.md``), its rows as CSV (pandas reads them) and PNG plots into
``studies/results/NAME/`` (``--quick``: ``runs/studies-quick/NAME/``). Studies are registered by
module path and imported only when run, so ``qubo-round study --list`` stays fast.

Writing a study: a module with ``run(ctx: StudyContext) -> None`` that adds tables, text and
figures to ``ctx`` (see :mod:`qubo_round.studies.common`), registered in ``STUDIES`` below.
"""
from __future__ import annotations

import importlib
from typing import Callable

from qubo_round.registry import Registry, UnknownNameError

__all__ = ["STUDIES", "available_studies", "get_study", "UnknownStudyError"]

# name -> (module, one-line question)
_TABLE: dict[str, tuple[str, str]] = {
    "rounding-choice": ("qubo_round.studies.rounding_choice",
                        "Which rounding of the weights is best: nearest, floor/ceil, stochastic, the QUBOs solved, or the relaxation? (paper Tables 1-2)"),
    "cost-vs-accuracy": ("qubo_round.studies.cost_vs_accuracy",
                         "Does the QUBO energy of a rounding predict its task loss and accuracy? (paper Fig. 1)"),
    "solver-league": ("qubo_round.studies.solver_league",
                      "How close does each solver get to the optimum or a certified bound, how fast, and what accuracy does that buy?"),
    "relaxation-design": ("qubo_round.studies.relaxation_design",
                          "What do the relaxation's design choices contribute? (paper Tables 3-6)"),
    "bits-granularity": ("qubo_round.studies.bits_granularity",
                         "How do bit width and per-tensor versus per-channel grids change the picture, on digits and MiniLM?"),
    "data": ("qubo_round.studies.data",
             "How much unlabelled calibration data is needed, and does its domain matter? (paper Fig. 4)"),
}


class UnknownStudyError(UnknownNameError):
    """No study of that name."""


#: name -> (module, one-line question); the module is imported only by :func:`get_study`.
STUDIES: Registry[tuple[str, str]] = Registry("study", error=UnknownStudyError, hint=" (`qubo-round study --list`)")
for _name, _entry in _TABLE.items():
    STUDIES.register(_name, _entry)


def available_studies() -> list[str]:
    return STUDIES.names()


def get_study(name: str) -> Callable:
    """The ``run(ctx)`` function of study ``name``."""
    return importlib.import_module(STUDIES.get(name)[0]).run
